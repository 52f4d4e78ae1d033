"""Distillation QAT (``mode="distill"``): the quantized network learns the float network's answers."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN

from spiking_dqn.distill import distillation_loss, distillation_set
from spiking_dqn.pipeline import QATSettings
from spiking_dqn.qat import quantization_aware_finetune
from spiking_dqn.quantization import float_weights, quantize_network, resolve_grid
from spiking_dqn.rollouts import backend_reward

ENV = "CartPole-v0"


def chip_reward(model: DQN, grid, episodes: int = 20) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program, _ = quantize_network(model.policy.q_net.q_net, grid)
    return backend_reward(program, ENV, episodes, seed=100_000).mean_reward


@pytest.mark.parametrize("bits", [8, 4])
def test_distillation_lowers_its_loss_and_plays_at_least_as_well_as_ptq(cartpole_as_trained, bits):
    model = copy.deepcopy(cartpole_as_trained)
    grid = resolve_grid(model.policy.q_net.q_net, "auto", True, weight_bits=bits)
    ptq = chip_reward(model, grid)
    report = quantization_aware_finetune(model, grid, 300, mode="distill", env_id=ENV, batch_size=128,
                                         learning_rate=3e-4, n_observations=1024)
    assert report.mode == "distill" and report.weight_bits == [bits] * 3 and report.steps == 300
    assert report.distill_states == 1024  # a loaded model has no replay buffer: the float policy's states
    assert report.distill_loss_after < report.distill_loss_before
    net = model.policy.q_net.q_net
    assert net.fake_quantization is None and model.policy.q_net_target.q_net.fake_quantization is None
    target = model.policy.q_net_target.q_net
    assert all(th.equal(a, b) for a, b in zip(net.state_dict().values(), target.state_dict().values())
               if isinstance(a, th.Tensor))  # the target network is synced to the distilled one
    assert chip_reward(model, grid) >= ptq


def test_distillation_keeps_the_best_checked_weights(cartpole_as_trained):
    model = copy.deepcopy(cartpole_as_trained)
    report = quantization_aware_finetune(model, "auto", 100, mode="distill", env_id=ENV, check_episodes=3,
                                         check_freq=50, n_observations=256, learning_rate=3e-4)
    assert report.reward_after >= report.reward_before and report.check_inferences > 0
    assert report.to_dict()["mode"] == "distill"


def test_distillation_learns_on_the_replay_buffer_too(trained_tiny_model):
    model = copy.deepcopy(trained_tiny_model)
    net = model.policy.q_net.q_net
    data = distillation_set(model, net, None)  # no env: the replay buffer's states only
    assert data.from_policy == 0 and data.from_replay == model.replay_buffer.size()
    with_env = distillation_set(model, net, "CartPole-v1", 64)
    assert (with_env.from_policy, with_env.from_replay) == (64, data.from_replay)
    before = float_weights(net)
    report = quantization_aware_finetune(model, "auto", 20, mode="distill", n_observations=0)
    assert report.distill_states == data.from_replay and report.collected_transitions == 0
    assert any(not np.array_equal(a, b) for a, b in zip(before, float_weights(net)))


def test_distillation_needs_states(cartpole_as_trained):
    with pytest.raises(ValueError, match="distillation needs states"):
        quantization_aware_finetune(copy.deepcopy(cartpole_as_trained), "auto", 10, mode="distill")


def test_the_loss_is_mse_in_the_teachers_q_scale_plus_cross_entropy_to_its_greedy_action():
    teacher = th.tensor([[1.0, 3.0], [2.0, 0.0]])
    assert float(distillation_loss(teacher * 10, teacher * 10, 10.0, 20.0)) == pytest.approx(
        float(th.nn.functional.cross_entropy(teacher / 2.0, th.tensor([1, 0]))))
    shifted = distillation_loss(teacher + 1.0, teacher, 2.0, 1e9)  # no margin: the cross-entropy is log 2
    assert float(shifted) == pytest.approx(0.25 + np.log(2.0), rel=1e-6)


def test_the_fit_settings_take_the_distill_mode():
    assert QATSettings(100, mode="distill").mode == "distill"
    with pytest.raises(ValueError, match="mode must be one of"):
        QATSettings(100, mode="offline")


def test_a_fit_distills_on_the_states_of_its_calibration_seeds(cartpole_as_trained, monkeypatch):
    from spiking_dqn import qat
    from spiking_dqn.pipeline import Seeds, fit_to_chip

    seen = []
    real = qat.distillation_set

    def recording(model, net, env_id, n_observations, seed):
        seen.append(seed)
        return real(model, net, env_id, 256, seed)

    monkeypatch.setattr(qat, "distillation_set", recording)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_to_chip(copy.deepcopy(cartpole_as_trained), ENV, qat=QATSettings(10, check_episodes=0), method="none",
                    seeds=Seeds.from_base(7), eval_episodes=2)
    assert seen == [Seeds.from_base(7).calibration]
