"""Quantization-aware fine-tuning: the fake-quantized forward, and QAT moving weights toward the int8 grid."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN

from agents.common import trained_model_path
from spiking_dqn.recipes.recipe import TRAINED_NAME
from envs import make_vec
from spiking_dqn import SpikingDQNPolicy
from spiking_dqn.hardware import EmulatorBackend
from spiking_dqn.qat import quantization_aware_finetune
from spiking_dqn.quantization.snap import snap_model_to_grid
from spiking_dqn.grid import Grid
from spiking_dqn.quantization import fake_quantize_network, float_weights, quantize_network
from spiking_dqn.rollouts import backend_reward


def grid_distance(net, grid: Grid) -> list[float]:
    return grid.distance(float_weights(net))


def test_fake_quantized_forward_is_the_chip_and_passes_gradients_straight_through(small_net):
    obs = th.randn(64, 4)
    lambdas = [3.0, 5.0, 7.0]
    expected = fake_quantize_network(small_net, lambdas)(obs)  # the chip's centered readout
    small_net.set_fake_quantization(Grid(lambdas))
    q = small_net(obs)  # the same, plus the part common to all actions (kept in float for TD)
    centered = (q - q.mean(1, keepdim=True)).detach()
    assert th.allclose(centered, expected - expected.mean(1, keepdim=True), atol=1e-5)
    program, _ = quantize_network(small_net, lambdas)
    result = EmulatorBackend().run(program, obs.numpy())
    np.testing.assert_allclose(result.q_values(program), centered.numpy(), rtol=1e-5, atol=1e-4)
    assert (result.actions == q.argmax(1).numpy()).all()
    q.sum().backward()  # straight-through: the float weights get gradients
    assert all(layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
               for layer in small_net.linear_layers())
    small_net.set_fake_quantization(None)
    assert not th.equal(small_net(obs), q)


@pytest.mark.parametrize("bad", [[1.0, 0.0, 1.0], [1.0, float("nan"), 1.0], [-1.0, 1.0, 1.0], []])
def test_grid_rejects_bad_lambdas(bad):
    with pytest.raises(ValueError, match="lambda"):
        Grid(bad)


def test_fake_quantization_and_the_network_grid_need_one_lambda_per_projection(small_net):
    with pytest.raises(ValueError, match="2 lambdas for 3 projections"):
        small_net.set_fake_quantization(Grid([1.0, 2.0]))
    with pytest.raises(ValueError, match="2 lambdas for 3 projections"):
        small_net.grid = Grid([1.0, 2.0])


@pytest.fixture
def tiny_model(trained_tiny_model):
    """A copy of the session's tiny trained model (with its replay buffer) that a test may change."""
    return copy.deepcopy(trained_tiny_model)


def test_qat_moves_the_float_weights_toward_the_int8_grid(tiny_model):
    net = tiny_model.policy.q_net.q_net
    grid = Grid([4.0, 4.0, 4.0])
    before = grid_distance(net, grid)
    weights = [layer.weight.detach().clone() for layer in net.linear_layers()]
    report = quantization_aware_finetune(tiny_model, grid, 60, mode="replay", learning_rate=1e-3, grid_pull=0.02)
    after = grid_distance(net, grid)
    assert report.grid_distance_before == pytest.approx(before)
    assert report.grid_distance_after == pytest.approx(after)
    assert all(a < 0.5 * b for a, b in zip(after, before))  # every projection much nearer its grid
    assert all(not th.equal(w, layer.weight) for w, layer in zip(weights, net.linear_layers()))
    assert net.fake_quantization is None and tiny_model.policy.q_net_target.q_net.fake_quantization is None
    assert report.steps == 60 and report.kept and report.grid == grid


def test_plain_straight_through_qat_changes_int8_weights(tiny_model):
    net = tiny_model.policy.q_net.q_net
    program_before, _ = quantize_network(net, 4.0)
    report = quantization_aware_finetune(tiny_model, 4.0, 40, mode="replay", learning_rate=3e-3, grid_pull=0.0)
    program_after, _ = quantize_network(net, 4.0)
    assert max(report.int8_weights_changed) > 0
    assert any(not np.array_equal(a, b) for a, b in zip(program_before.weights, program_after.weights))


def test_online_qat_acts_with_the_int8_network_and_keeps_the_best_weights(tiny_model):
    net = tiny_model.policy.q_net.q_net
    steps_before = tiny_model.num_timesteps
    program_before, _ = quantize_network(net, 4.0)
    first_check = backend_reward(program_before, "CartPole-v1", 3, seed=50_000)
    report = quantization_aware_finetune(tiny_model, 4.0, 200, env_id="CartPole-v1", check_episodes=3,
                                         check_freq=100, grid_pull=0.05)
    assert report.mode == "online" and tiny_model.num_timesteps >= steps_before + 200  # whole rollouts
    assert report.reward_before == first_check.mean_reward  # the check before QAT plays the int8 network
    assert report.reward_after >= report.reward_before
    program, _ = quantize_network(net, report.lambdas)
    last_check = backend_reward(program, "CartPole-v1", 3, seed=50_000)
    assert last_check.mean_reward == report.reward_after
    # Every check is counted: at least the first and the last one (one more ran at step 100).
    assert report.check_inferences >= first_check.cost.inferences + last_check.cost.inferences
    assert net.fake_quantization is None


def test_qat_bad_input():
    model = DQN(SpikingDQNPolicy, make_vec("CartPole-v1", 1, seed=0), policy_kwargs=dict(net_arch=[8], ticks=6))
    with pytest.raises(ValueError, match="env_id"):
        quantization_aware_finetune(model, 4.0, 5, mode="replay")
    with pytest.raises(ValueError, match="grid_pull"):
        quantization_aware_finetune(model, 4.0, 5, grid_pull=2.0, env_id="CartPole-v1")
    with pytest.raises(ValueError, match="mode"):
        quantization_aware_finetune(model, 4.0, 5, mode="offline")
    with pytest.raises(ValueError, match="check_episodes"):
        quantization_aware_finetune(model, 4.0, 5, check_episodes=2)


@pytest.mark.slow  # fine-tunes a shipped agent and plays 10-20 emulator episodes per check
@pytest.mark.parametrize("env_id, mode, steps", [("CartPole-v0", "online", 1500), ("Acrobot-v1", "replay", 300)])
def test_qat_does_not_lower_the_emulator_reward_of_a_shipped_agent(env_id, mode, steps):
    path = trained_model_path(env_id).parent / TRAINED_NAME  # the agent as trained, before the recipe's QAT
    if not path.exists():
        pytest.skip(f"shipped agent {path} is missing")
    model = DQN.load(path, device="cpu")
    net = model.policy.q_net.q_net
    program, _ = quantize_network(net, "auto")
    episodes = 20 if env_id == "CartPole-v0" else 10
    before = backend_reward(program, env_id, episodes, seed=7).mean_reward
    weights = [w.detach().clone() for w in net.parameters()]
    report = quantization_aware_finetune(model, "auto", steps, mode=mode, env_id=env_id, collect_steps=2000,
                                         grid_pull=0.01, check_episodes=episodes, check_seed=7)
    after_program, _ = quantize_network(net, report.grid)
    after = backend_reward(after_program, env_id, episodes, seed=7).mean_reward
    assert report.reward_before == before and report.reward_after == after
    assert after >= before
    if report.kept:  # the QAT weights were kept: they moved, and toward the int8 grid
        assert any(not th.equal(a, b) for a, b in zip(weights, net.parameters()))
        assert np.mean(report.grid_distance_after) < np.mean(report.grid_distance_before)
    else:  # QAT never did better on the emulator: the weights before it are back
        assert all(th.equal(a, b) for a, b in zip(weights, net.parameters()))


def test_snapped_network_is_deployed_with_its_grid(tmp_path, tiny_model):
    """snap_model_to_grid records the grid (target network too); it survives save/load and lam=None uses it."""
    net = tiny_model.policy.q_net.q_net
    assert net.grid is None
    grid = Grid([37.5, 51.25, 80.0])
    snap_model_to_grid(tiny_model, grid)
    assert net.grid == grid and tiny_model.policy.q_net_target.q_net.grid == grid
    assert grid_distance(net, grid) == pytest.approx([0.0, 0.0, 0.0], abs=1e-4)
    tiny_model.save(tmp_path / "m.zip")
    loaded = DQN.load(tmp_path / "m.zip", device="cpu")
    loaded_net = loaded.policy.q_net.q_net
    assert loaded_net.grid == grid
    program, _ = quantize_network(loaded_net)
    assert list(program.lambdas) == list(grid.lambdas)
    # The float twin and the chip program take the same greedy actions.
    obs = np.random.default_rng(0).uniform(-1, 1, size=(256, loaded_net.obs_dim)).astype(np.float32)
    with th.no_grad():
        q = loaded_net(th.as_tensor(obs)).numpy()
    assert np.array_equal(EmulatorBackend().run(program, obs).actions, q.argmax(axis=1))
    # An explicit lambda still wins, "auto" is the percentile rule, and forgetting the grid brings it back.
    assert list(quantize_network(loaded_net, 5.0)[0].lambdas) == [5.0, 5.0, 5.0]
    auto = list(quantize_network(loaded_net, "auto")[0].lambdas)
    assert auto != pytest.approx(list(grid.lambdas))
    loaded_net.grid = None
    assert list(quantize_network(loaded_net)[0].lambdas) == auto


def test_models_saved_with_the_old_grid_buffer_load_their_grid(tiny_model):
    """Files written before the Grid value kept the lambdas in a float32 ``grid_lambdas`` buffer (zeros: none)."""
    policy = tiny_model.policy  # a copy of the shared model
    state = {k: v for k, v in policy.state_dict().items() if not k.endswith("_extra_state")}
    for prefix in ("q_net.q_net.", "q_net_target.q_net."):
        state[prefix + "grid_lambdas"] = th.tensor([4.0, 8.0, 16.0])
    policy.load_state_dict(state)  # strict, as DQN.load does
    assert policy.q_net.q_net.grid == Grid([4.0, 8.0, 16.0])
    for prefix in ("q_net.q_net.", "q_net_target.q_net."):
        state[prefix + "grid_lambdas"] = th.zeros(3)
    policy.load_state_dict(state)
    assert policy.q_net.q_net.grid is None
