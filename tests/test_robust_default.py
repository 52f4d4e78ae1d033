"""The robust fit is the default of fit_to_chip, the callback and spiking-dqn deploy (one rule: default_qat)."""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings

import numpy as np
import pytest
from stable_baselines3 import DQN

from agents.common import trained_model_path
from spiking_dqn.pipeline import ROBUST_QAT, QATSettings, default_qat, fit_to_chip
from spiking_dqn.pipeline import settings as pipeline_settings
from spiking_dqn.recipes.recipe import TRAINED_NAME, TrainOptions

ENV = "CartPole-v0"
#: A small stand-in for ROBUST_QAT (its mode, a few steps, no checks), so that the default path runs in seconds.
SMALL_ROBUST = dataclasses.replace(ROBUST_QAT, steps=20, check_episodes=0)


@pytest.fixture
def small_robust(monkeypatch):
    monkeypatch.setattr(pipeline_settings, "ROBUST_QAT", SMALL_ROBUST)
    return SMALL_ROBUST


def test_the_rule_fine_tunes_a_dqn_not_fit_yet_with_episodes_to_guard_it(cartpole_shipped, cartpole_as_trained):
    assert ROBUST_QAT == QATSettings(steps=2000, mode="distill")
    assert TrainOptions.__dataclass_fields__["qat_steps"].default == ROBUST_QAT.steps  # spiking-dqn train's
    assert default_qat(cartpole_as_trained, None, 100) == ROBUST_QAT
    assert default_qat(cartpole_shipped, None, 100) == QATSettings()  # carries its grid: fit already
    assert default_qat(cartpole_as_trained, None, 0) == QATSettings()  # nothing to guard the fine-tuning with
    assert default_qat(cartpole_as_trained.policy.q_net.q_net, None, 100) == QATSettings()  # a bare network cannot train
    program = fit_to_chip(copy.deepcopy(cartpole_as_trained), None, qat=QATSettings(), method="none", eval_episodes=0).program
    assert default_qat(cartpole_as_trained, program, 100) == QATSettings()


def test_fit_to_chip_runs_the_robust_fit_by_default_and_none_when_told(cartpole_as_trained, small_robust):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        robust = fit_to_chip(copy.deepcopy(cartpole_as_trained), ENV, method="none", eval_episodes=3)
        plain = fit_to_chip(copy.deepcopy(cartpole_as_trained), ENV, qat=QATSettings(), method="none", eval_episodes=3)
    assert (robust.qat.steps, robust.qat.mode) == (small_robust.steps, "distill")
    assert {"ptq", "ptq_naive"} <= set(robust.candidates)  # guarded
    assert plain.qat is None and set(plain.candidates) == {"naive"}


def test_the_callback_runs_the_robust_fit_by_default(tmp_path, small_robust):
    from envs import make_vec
    from spiking_dqn import HardwareAwareFineTuning, SpikingDQNPolicy

    model = DQN(SpikingDQNPolicy, make_vec("CartPole-v1", 1, seed=0), learning_starts=100, train_freq=16,
                gradient_steps=4, batch_size=32, buffer_size=5000, seed=0, policy_kwargs=dict(net_arch=[16, 8], ticks=6))
    callback = HardwareAwareFineTuning(method="none", eval_episodes=2, save_path=str(tmp_path / "hw"))
    assert callback.qat is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.learn(200, callback=callback)
    summary = json.loads((tmp_path / "hw" / "final" / "summary.json").read_text())
    assert summary["qat"]["steps"] == small_robust.steps and summary["qat"]["mode"] == "distill"


def test_deploy_fine_tunes_a_model_not_fit_yet_by_default_and_not_a_fit_one(tmp_path, capsys, small_robust):
    from spiking_dqn.cli import main

    as_trained_path = trained_model_path(ENV).with_name(TRAINED_NAME)
    common = ["--env", ENV, "--final-episodes", "3", "--no-progress"]
    assert main(["deploy", str(as_trained_path), *common, "--out", str(tmp_path / "a" / "p.npz")]) == 0
    assert "QAT: reward of the quantized network" in capsys.readouterr().out
    assert main(["deploy", str(as_trained_path), *common, "--qat-steps", "0", "--out", str(tmp_path / "b" / "p.npz")]) == 0
    assert "QAT:" not in capsys.readouterr().out
    assert main(["deploy", str(trained_model_path(ENV)), *common, "--out", str(tmp_path / "c" / "p.npz")]) == 0
    assert "QAT:" not in capsys.readouterr().out


def test_the_card_names_the_fine_tuning_mode_and_the_fit_gap(tmp_path):
    from spiking_dqn.recipes.card import write_model_card

    summary = json.loads((trained_model_path(ENV).parent / "eval.json").read_text())
    fit = {"chosen": "ptq", "eval_episodes": 100, "eval_seed": 12345, "reward_float": 199.5, "reward_chip": 198.25,
           "gap": 1.25, "gap_noise": 0.5, "gap_exceeds_noise": True, "candidates": {}}
    summary["qat"] = {**summary["qat"], "mode": "distill", "steps": 2000, "kept": False, "fit": fit}
    write_model_card(tmp_path / "README.md", ENV, {}, summary)
    card = (tmp_path / "README.md").read_text()
    assert "2000 gradient steps of distillation from the float agent" in card and "online steps" not in card
    assert "`ptq` did better on the held-out episodes" in card and "snapped" not in card
    assert ("same 100 held-out episodes (env seeds 12345..): float 199.50, chip 198.25 (`ptq`), gap 1.25 +- 0.50 "
            "(2 standard errors); larger than the episodes' noise") in card


# ---------------------------------------------------------------------- choosing among the candidates


def _candidate(rewards):
    from spiking_dqn.pipeline import Candidate
    from spiking_dqn.rollouts import EpisodeResult

    return Candidate(None, EpisodeResult(list(map(float, rewards)), [1] * len(rewards)), [1.0])


def test_significant_selection_keeps_the_networks_own_program_unless_another_wins_beyond_the_noise():
    """LunarLander seed 0's case: a searched program ahead by a hair on the fit's episodes is not taken."""
    from spiking_dqn.pipeline.steps import choose

    rng = np.random.default_rng(0)
    own = rng.normal(150.0, 100.0, 100)
    spread = rng.normal(0.0, 30.0, 100)
    spread -= spread.mean()  # paired differences of spread 30: noise 2 * 30 / sqrt(100) = 6
    lucky, better = own + 1.0 + spread, own + 30.0 + spread  # ahead by 1 and by 30
    ptq = own - 50.0
    assert choose({"naive": _candidate(own), "grid": _candidate(lucky), "ptq": _candidate(ptq)}, "best") == "grid"
    assert choose({"naive": _candidate(own), "grid": _candidate(lucky), "ptq": _candidate(ptq)}, "significant") == "naive"
    assert choose({"naive": _candidate(own), "grid": _candidate(better), "ptq": _candidate(ptq)}, "significant") == "grid"
    # the guarantee: the network's own program never stays when the plain post-training one does better
    behind = own - 1.0
    assert choose({"naive": _candidate(behind), "ptq": _candidate(own)}, "significant") == "ptq"


def test_an_unknown_selection_is_refused_before_any_episode(cartpole_shipped):
    with pytest.raises(ValueError, match="selection must be one of"):
        fit_to_chip(cartpole_shipped, ENV, selection="luck")
