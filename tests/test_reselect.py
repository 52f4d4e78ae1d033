"""``--reselect``: the models of the best periodic evaluations, played again on the same fresh episodes."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
from stable_baselines3 import DQN

from spiking_dqn import SpikingDQNPolicy
from spiking_dqn.cli import main
from spiking_dqn.quantization.digest import model_digest
from spiking_dqn.recipes.recipe import TrainOptions
from spiking_dqn.recipes.run_folder import RecipeEvalCallback
from spiking_dqn.recipes.selection import RESELECT_SEED, Candidate, TopModels, model_bytes, reselect
from spiking_dqn.rollouts import float_reward

TINY = ["train", "CartPole-v1", "--timesteps", "1200", "--eval-freq", "100", "--select-episodes", "1",
        "--eval-episodes", "3", "--qat-steps", "0", "--net-arch", "8", "--ticks", "4", "--no-progress"]


def _model(seed: int) -> DQN:
    return DQN(SpikingDQNPolicy, "CartPole-v1", policy_kwargs=dict(net_arch=[8], ticks=4), seed=seed, device="cpu")


def _evaluate(keeper: TopModels, model: DQN, step: int, reward: float) -> None:
    """What ``EvalCallback`` does after an evaluation: its mean reward, then its ``callback_after_eval``."""
    keeper.parent = SimpleNamespace(last_mean_reward=reward)
    keeper.init_callback(model)
    model.num_timesteps = step
    keeper.on_step()


def test_top_models_keeps_the_best_evaluations_first_and_the_earlier_on_ties():
    model = _model(0)
    keeper, single = TopModels(keep=3), TopModels(keep=1)
    for step, reward in [(100, 10.0), (200, 30.0), (300, 20.0), (400, 30.0), (500, 5.0), (600, 25.0)]:
        _evaluate(keeper, model, step, reward)
        _evaluate(single, model, step, reward)
    assert [(c.timesteps, c.evaluation) for c in keeper.candidates] == [(200, 30.0), (400, 30.0), (600, 25.0)]
    # keep=1 is SB3's EvalCallback: the first evaluation with the highest mean reward
    assert [c.timesteps for c in single.candidates] == [200]
    assert keeper.best == keeper.candidates[0].model
    with pytest.raises(ValueError, match="keep"):
        TopModels(keep=0)


def test_reselect_keeps_the_best_on_the_replayed_episodes_and_the_better_evaluation_on_ties():
    models = [_model(seed) for seed in (0, 1, 2)]
    candidates = [Candidate(100 * (i + 1), 50.0 - i, model_bytes(m)) for i, m in enumerate(models)]
    rewards = [float_reward(m, "CartPole-v1", 4, seed=RESELECT_SEED).mean_reward for m in models]
    chosen, record = reselect(candidates, "CartPole-v1", 4)
    best = max(range(3), key=lambda i: (rewards[i], -i))
    assert chosen is candidates[best] and record["kept_timesteps"] == 100 * (best + 1)
    assert [c["reward"] for c in record["candidates"]] == rewards
    assert (record["episodes"], record["seed"]) == (4, RESELECT_SEED)
    # the same model twice: a tie, the better periodic evaluation (first) wins
    twins = [Candidate(100, 40.0, candidates[0].model), Candidate(200, 30.0, candidates[0].model)]
    assert reselect(twins, "CartPole-v1", 2)[0] is twins[0]
    with pytest.raises(ValueError, match="candidate"):
        reselect([], "CartPole-v1", 2)
    with pytest.raises(ValueError, match="episodes"):
        reselect(candidates, "CartPole-v1", 0)


def test_train_with_reselect_keeps_the_replayed_best_and_records_the_choice(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--reselect", "3", "--out", str(out)]) == 0
    record = json.loads((out / "training.json").read_text())["reselection"]
    assert len(record["candidates"]) == 3 and record["episodes"] == 3
    steps = [c["timesteps"] for c in record["candidates"]]
    assert len(set(steps)) == 3 and all(s % 100 == 0 for s in steps)
    replayed = {c["timesteps"]: c["reward"] for c in record["candidates"]}
    assert replayed[record["kept_timesteps"]] == max(replayed.values())
    kept = DQN.load(out / "model_trained.zip", device="cpu")  # the kept model, replayed again: its figure
    assert float_reward(kept, "CartPole-v1", 3, seed=RESELECT_SEED).mean_reward == replayed[record["kept_timesteps"]]
    assert json.loads((out / "eval.json").read_text())["reselection"] == record

    # --reselect 1 (the default) keeps the best periodic evaluation's model, as SB3's EvalCallback does
    plain = tmp_path / "plain"
    assert main([*TINY, "--out", str(plain)]) == 0
    assert "reselection" not in json.loads((plain / "training.json").read_text())
    with pytest.raises(SystemExit):
        main([*TINY, "--reselect", "0", "--out", str(tmp_path / "bad")])
    assert "--reselect: must be a positive integer, got 0" in capsys.readouterr().err


def test_a_checkpoint_from_before_top_models_restores_its_one_best_model():
    model = _model(0)
    callback = RecipeEvalCallback(model.get_env(), "unused", keep=3)
    saved = model_bytes(model)
    callback.restore({"best": saved, "best_mean_reward": 12.5, "last_mean_reward": 10.0})
    assert [(c.evaluation, c.model) for c in callback.candidates] == [(12.5, saved)]
    assert model_digest(DQN.load(io.BytesIO(callback.best))) == model_digest(model)


@pytest.mark.parametrize(("override", "message"), [
    ({"reselect": 0}, "reselect must be positive, got 0"),
    ({"eval_episodes": -1}, "eval_episodes must be positive, got -1"),
    ({"checkpoint_freq": -5}, "checkpoint_freq must be 0 or positive, got -5"),
    ({"net_arch": [8, 0]}, r"net_arch must be positive, got \[8, 0\]"),
    ({"qat_learning_rate": float("nan")}, "qat_learning_rate must be positive, got nan"),
])
def test_train_options_refuse_out_of_range_values_through_the_python_api(tmp_path, override, message):
    """The ranges the command line checks hold for ``train_and_evaluate``'s callers too, before any training."""
    options = TrainOptions(timesteps=1, out=tmp_path, progress=False, **override)
    with pytest.raises(ValueError, match=message):
        options.check()
    TrainOptions(timesteps=1, out=tmp_path, progress=False, checkpoint_freq=0, qat_steps=0).check()
