"""fit_to_chip's guarantee: never worse than plain post-training quantization; the gap on the same episodes."""

from __future__ import annotations

import copy
import dataclasses
import warnings

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN

from agents.common import trained_model_path
from spiking_dqn.grid import Grid
from spiking_dqn.pipeline import QATSettings, fit_to_chip
from spiking_dqn.pipeline import steps as pipeline_steps
from spiking_dqn.pipeline.result import paired_gap
from spiking_dqn.recipes.recipe import TRAINED_NAME
from spiking_dqn.rollouts import backend_reward, float_reward
from spiking_dqn.semantics.thresholds import scale_thresholds

ENV = "CartPole-v0"
EPISODES = 20


def state_of(model: DQN) -> dict:
    return copy.deepcopy(model.policy.state_dict())


def assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name, value in a.items():
        if isinstance(value, th.Tensor):
            assert th.equal(value, b[name]), name


def test_a_fine_tuning_that_destroys_the_policy_is_not_returned_and_its_weights_are_put_back(
    cartpole_shipped, monkeypatch, tmp_path
):
    real = pipeline_steps.quantization_aware_finetune

    def sabotaged(model, *args, **kwargs):
        report = real(model, *args, **kwargs)
        with th.no_grad():
            for layer in model.policy.q_net.q_net.linear_layers():
                layer.weight.mul_(-1.0)  # the greedy action turns around: the pole falls
        return report

    monkeypatch.setattr(pipeline_steps, "quantization_aware_finetune", sabotaged)
    model = copy.deepcopy(cartpole_shipped)
    before = state_of(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit_to_chip(model, ENV, qat=QATSettings(20, mode="distill", check_episodes=0), method="none",
                             eval_episodes=EPISODES, out=tmp_path, save_model=True)
    rewards = {name: candidate.reward for name, candidate in result.candidates.items()}
    assert set(rewards) == {"naive", "ptq_naive", "ptq"}
    assert rewards["naive"] < rewards["ptq"]  # the sabotage worked
    assert result.chosen in ("ptq", "ptq_naive") and result.reward_chip == max(rewards.values())
    assert result.reward_chip >= rewards["ptq"]
    assert_same_state(model.policy.state_dict(), before)  # the float twin of the program it returns
    assert result.qat is not None and not result.qat.kept
    assert not (tmp_path / "model_qat.zip").exists()
    program = backend_reward(result.program, ENV, EPISODES, seed=result.seeds.evaluation)
    assert program.rewards == result.best.evaluation.rewards


@pytest.mark.parametrize("mode", ["distill", "online"])
def test_the_returned_program_is_never_worse_than_ptq_on_the_held_out_episodes(cartpole_as_trained, mode):
    model = copy.deepcopy(cartpole_as_trained)
    before = state_of(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit_to_chip(model, ENV, qat=QATSettings(100, mode=mode, check_episodes=2), method="none",
                             eval_episodes=EPISODES)
    assert result.reward_chip >= result.candidates["ptq"].reward
    assert result.reward_chip >= result.candidates["ptq_naive"].reward
    assert result.qat.mode == mode
    if result.chosen in ("ptq", "ptq_naive"):
        assert_same_state(model.policy.state_dict(), before)


def test_the_gap_is_float_minus_chip_on_the_same_episodes(cartpole_as_trained):
    model = copy.deepcopy(cartpole_as_trained)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit_to_chip(model, ENV, qat=QATSettings(), method="none", eval_episodes=EPISODES)
    seed = result.seeds.evaluation
    floated = float_reward(copy.deepcopy(cartpole_as_trained), ENV, EPISODES, seed=seed).rewards
    chip = backend_reward(result.program, ENV, EPISODES, seed=seed).rewards
    assert result.float_evaluation.rewards == floated and result.best.evaluation.rewards == chip
    diff = np.asarray(floated) - np.asarray(chip)
    assert result.gap == pytest.approx(diff.mean())
    assert result.gap_noise == pytest.approx(2 * diff.std(ddof=1) / np.sqrt(EPISODES))
    assert (result.reward_float, result.reward_chip) == (pytest.approx(np.mean(floated)), pytest.approx(np.mean(chip)))
    summary = result.summary()
    assert summary["gap"] == result.gap and summary["gap_noise"] == result.gap_noise
    assert summary["reward_chip"] == result.reward_chip and summary["gap_exceeds_noise"] is True
    line = result.gap_line()
    assert f"gap {result.gap:.2f} +- {result.gap_noise:.2f}" in line and f"{EPISODES} held-out episodes" in line


def test_the_fit_warns_in_one_line_when_the_gap_exceeds_the_noise_and_not_otherwise(cartpole_shipped, cartpole_as_trained):
    with pytest.warns(UserWarning, match="the chip loses more than the episodes' noise") as caught:
        bad = fit_to_chip(copy.deepcopy(cartpole_as_trained), ENV, qat=QATSettings(), method="none", eval_episodes=EPISODES)
    assert bad.gap_exceeds_noise and bad.gap > bad.gap_noise
    assert [str(w.message) for w in caught if "episodes' noise" in str(w.message)] == [bad.gap_line()]
    assert "\n" not in bad.gap_line()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        good = fit_to_chip(copy.deepcopy(cartpole_shipped), ENV, method="none", eval_episodes=EPISODES)
    assert not good.gap_exceeds_noise and good.gap <= good.gap_noise
    assert not [w for w in caught if "episodes' noise" in str(w.message)]
    assert "noise" not in good.gap_line().split(";")[-1] or ";" not in good.gap_line()


def test_paired_gap_is_the_mean_difference_and_two_standard_errors():
    gap, noise = paired_gap([200.0, 200.0, 200.0, 200.0], [200.0, 180.0, 200.0, 200.0])
    assert gap == pytest.approx(5.0)
    assert noise == pytest.approx(2 * np.std([0, 20, 0, 0], ddof=1) / 2)
    assert paired_gap([1.0], [0.0]) == (1.0, 0.0)
    with pytest.raises(ValueError, match="paired rewards"):
        paired_gap([1.0, 2.0], [1.0])


def test_the_recipes_fit_prints_and_records_the_gap_and_saves_the_programs_twin(cartpole_as_trained, tmp_path, capsys):
    from spiking_dqn.quantization import quantize_network
    from spiking_dqn.recipes.recipe import EVAL_SEED, TrainOptions, fit_for_chip

    options = TrainOptions(timesteps=1, out=tmp_path, qat_steps=50, eval_episodes=EPISODES, progress=False)
    assert options.qat_mode == "distill"  # the default of spiking-dqn train and the recipes
    model = copy.deepcopy(cartpole_as_trained)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record = fit_for_chip(model, ENV, options, "test")
    fit = record["fit"]
    assert record["mode"] == "distill" and record["steps"] == 50
    assert fit["eval_seed"] == EVAL_SEED and fit["eval_episodes"] == EPISODES
    assert fit["reward_chip"] == max(fit["candidates"].values()) >= fit["candidates"]["ptq"]
    assert fit["gap"] == pytest.approx(fit["reward_float"] - fit["reward_chip"])
    printed = capsys.readouterr().out
    assert f"gap {fit['gap']:.2f} +- {fit['gap_noise']:.2f}" in printed
    saved = DQN.load(tmp_path / "model.zip", device="cpu")
    assert_same_state(saved.policy.state_dict(), model.policy.state_dict())
    # model.zip carries the chosen program's grid, whichever program won: deploying it rebuilds that program
    assert saved.policy.q_net.q_net.grid is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program, _ = quantize_network(saved.policy.q_net.q_net, None)
    chip = backend_reward(program, ENV, EPISODES, seed=EVAL_SEED).mean_reward
    assert chip == pytest.approx(fit["reward_chip"])


def test_model_zip_deploys_to_the_calibrated_ptq_program_when_the_recipes_fit_chooses_it(
    cartpole_as_trained, tmp_path, monkeypatch, capsys
):
    from spiking_dqn.cli import main
    from spiking_dqn.hardware import ChipProgram
    from spiking_dqn.recipes import recipe

    real_take, real_fit, real_calibrate, seen = (pipeline_steps.Guard.take.__func__, recipe.fit_to_chip,
                                                 pipeline_steps.calibrate, {})

    def calibrate(run, program, calibration):  # per-layer thresholds that differ from the naive ones
        assert calibration.granularity == "layer"  # the recipes' guard: thresholds the float neurons hold
        result = real_calibrate(run, program, calibration)
        return dataclasses.replace(result, program=program.with_thresholds(
            scale_thresholds(program.thresholds, [1.3, 0.8])))

    def take(cls, *args, **kwargs):
        guard = real_take(cls, *args, **kwargs)
        seen["ptq"] = guard.candidates["ptq"]
        return guard

    def fit(*args, **kwargs):
        seen["fit"] = real_fit(*args, **kwargs)
        return seen["fit"]

    monkeypatch.setattr(pipeline_steps, "calibrate", calibrate)
    monkeypatch.setattr(pipeline_steps.Guard, "take", classmethod(take))
    monkeypatch.setattr(pipeline_steps, "rank", lambda c: (0.0 if c is seen.get("ptq") else 1.0, 0.0))  # "ptq" wins
    monkeypatch.setattr(recipe, "fit_to_chip", fit)
    options = recipe.TrainOptions(timesteps=1, out=tmp_path, qat_steps=20, eval_episodes=3, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recipe.fit_for_chip(copy.deepcopy(cartpole_as_trained), ENV, options, "test")
    chosen = seen["fit"]
    assert chosen.chosen == "ptq" and not chosen.qat.kept
    naive = chosen.naive_before_qat.program
    for t, t_naive, factor in zip(chosen.program.thresholds, naive.thresholds, [1.3, 0.8]):
        np.testing.assert_allclose(t, t_naive * factor, rtol=1e-6)  # the calibrated thresholds (to the last bit)
    program = tmp_path / "deployed.npz"
    assert main(["deploy", str(tmp_path / "model.zip"), "--env", ENV, "--final-episodes", "2", "--no-progress",
                 "--out", str(program)]) == 0
    assert "QAT:" not in capsys.readouterr().out  # model.zip carries its grid: fit already, no fine-tuning
    assert ChipProgram.load(program) == chosen.program


def test_deploy_prints_the_gap_line_once_and_says_when_the_gap_exceeds_the_noise(tmp_path, capsys):
    from spiking_dqn.cli import main

    as_trained_path = trained_model_path(ENV).with_name(TRAINED_NAME)
    assert main(["deploy", str(as_trained_path), "--env", ENV, "--final-episodes", "5", "--no-progress", "--qat-steps",
                 "0", "--out", str(tmp_path / "plain.npz")]) == 0
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert printed.count("the chip loses more than the episodes' noise") == 1
    assert "on the same 5 held-out episodes" in printed
    assert main(["deploy", str(as_trained_path), "--env", ENV, "--final-episodes", "5", "--no-progress", "--qat-steps",
                 "20", "--qat-mode", "online", "--out", str(tmp_path / "online.npz")]) == 0
    printed = capsys.readouterr().out
    assert "ptq_naive" in printed and "ptq" in printed and "gap" in printed


def test_the_guarantee_holds_at_4_bit_weights(cartpole_as_trained):
    model = copy.deepcopy(cartpole_as_trained)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit_to_chip(model, ENV, weight_bits=4, lam="mse", qat=QATSettings(100, check_episodes=2),
                             method="none", eval_episodes=EPISODES)
    assert list(result.grid.weight_bits) == [4, 4, 4] and result.qat.weight_bits == [4, 4, 4]
    assert all(list(Grid.of_program(c.program).weight_bits) == [4, 4, 4] for c in result.candidates.values())
    assert result.reward_chip >= max(result.candidates["ptq"].reward, result.candidates["ptq_naive"].reward)
