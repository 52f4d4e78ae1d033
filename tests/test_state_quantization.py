"""SQUAT (membrane state levels) and TaWQ (tick gains) in the float network: compiled pass, torch paths, gradients."""

import warnings

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN

from spiking_dqn import SpikingDQN, SpikingDQNPolicy
from spiking_dqn.layers import _layer_forward_torch, nearest_level_torch, spiking_layer
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.semantics import lif
from spiking_dqn.tick_gain import with_tick_gains

LEVELS = [np.linspace(-1.0, 1.0, 8), np.linspace(-2.0, 1.5, 16)]


def nets(**options):
    th.manual_seed(0)
    plain = SpikingQNetwork([1.0] * 4, 2, net_arch=[16, 12], ticks=8, **options)
    gained = SpikingQNetwork([1.0] * 4, 2, net_arch=[16, 12], ticks=8, tick_gain=True, **options)
    gained.load_state_dict(plain.state_dict())
    return plain, gained


def test_nearest_level_is_the_nearest_with_ties_to_the_lower_level_in_the_kernel_and_in_torch():
    levels = np.array([-1.0, -0.25, 0.0, 0.5, 2.0], dtype=np.float32)
    values = np.array([-3.0, -1.0, -0.625, -0.6, -0.125, 0.25, 0.3, 1.25, 1.3, 2.0, 9.0], dtype=np.float32)
    #                  below  level  tie    ->up  tie    tie   ->up tie   ->up  level above
    expected = np.array([-1.0, -1.0, -1.0, -0.25, -0.25, 0.0, 0.5, 0.5, 2.0, 2.0, 2.0], dtype=np.float32)
    kernel = np.array([lif.nearest_level(levels, v) for v in values])
    np.testing.assert_array_equal(kernel, expected)
    np.testing.assert_array_equal(nearest_level_torch(th.from_numpy(values), th.from_numpy(levels)).numpy(), expected)
    rng = np.random.default_rng(0)
    many = rng.normal(size=2000).astype(np.float32)
    fine = np.sort(rng.normal(size=64)).astype(np.float32)
    np.testing.assert_array_equal(
        np.array([lif.nearest_level(fine, v) for v in many]),
        nearest_level_torch(th.from_numpy(many), th.from_numpy(fine)).numpy(),
    )


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_the_compiled_pass_the_per_layer_paths_and_the_tick_loop_give_the_same_quantized_spikes(reset):
    plain, gained = nets(reset=reset)
    obs = th.randn(64, 4)
    with th.no_grad():
        _, free = plain.forward_spikes(plain.encoder(obs), return_activity=True)
    for net in (plain, gained):
        net.set_state_levels(LEVELS)
    spikes = plain.encoder(obs)
    with th.no_grad():
        q, trains = plain.forward_spikes(spikes, return_activity=True)
        q_loop, trains_loop = gained.forward_spikes(spikes, return_activity=True)  # gains 1: the tick loop
        x_layer = x_torch = spikes
        for k, (fc, lif) in enumerate(zip(plain.hidden, plain.lif)):
            x_layer = spiking_layer(x_layer, fc.weight, fc.bias, lif, 1, 1.0, plain.state_levels[k])
            _, x_torch = _layer_forward_torch(x_torch, fc.weight, fc.bias, lif, 1, False, 1.0, plain.state_levels[k])
            assert th.equal(trains[k], x_layer) and th.equal(trains[k], x_torch) and th.equal(trains[k], trains_loop[k])
    assert any(not th.equal(a, b) for a, b in zip(free, trains))  # the levels change the spikes
    np.testing.assert_allclose(q.numpy(), q_loop.numpy(), rtol=1e-6, atol=1e-6)


def test_the_compiled_backward_is_the_straight_through_gradient_of_the_tick_loop():
    plain, gained = nets()
    for net in (plain, gained):
        net.set_state_levels(LEVELS)
    obs = th.randn(48, 4)
    weight = th.randn(48, 2)
    (plain(obs) * weight).sum().backward()
    (gained(obs) * weight).sum().backward()
    for (name, a), b in zip(plain.named_parameters(), [p for n, p in gained.named_parameters() if n != "tick_gain"]):
        assert a.grad.abs().max() > 0, name
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-5, atol=1e-6 * float(a.grad.abs().max()))
    assert gained.tick_gain.grad.abs().sum() > 0  # the gains learn


def test_tick_gains_scale_each_ticks_input_and_one_gain_of_zero_silences_a_tick():
    _, gained = nets()
    obs = th.randn(32, 4)
    with th.no_grad():
        gained.tick_gain[0, :] = 0.0  # nothing reaches the first hidden layer
        q, trains = gained.forward_spikes(gained.encoder(obs), return_activity=True)
    first_bias = gained.hidden[0].bias.detach()
    # Without input, the first layer's membranes only integrate the bias: the same for every observation.
    assert th.equal(trains[0], trains[0][:, :1].expand_as(trains[0]))
    assert first_bias.abs().sum() > 0


def test_state_levels_are_checked_saved_and_rebuild_the_neuron_plan():
    plain, _ = nets()
    with pytest.raises(ValueError, match="one entry per hidden layer"):
        plain.set_state_levels([LEVELS[0]])
    with pytest.raises(ValueError, match="strictly increasing"):
        plain.set_state_levels([[0.0, 0.0, 1.0], None])
    with pytest.raises(ValueError, match="at least two"):
        plain.set_state_levels([[0.5], None])
    with pytest.raises(ValueError, match="finite"):
        plain.set_state_levels([[0.0, np.inf], None])
    obs = th.randn(16, 4)
    with th.no_grad():
        before = plain(obs)
        plain.set_state_levels([LEVELS[0], None])
        assert plain.state_levels[1] is None
        quantized = plain(obs)
        assert not th.equal(before, quantized)
        copy = SpikingQNetwork([1.0] * 4, 2, net_arch=[16, 12], ticks=8)
        copy.load_state_dict(plain.state_dict())
        np.testing.assert_array_equal(copy.state_levels[0], LEVELS[0].astype(np.float32))
        assert th.equal(copy(obs), quantized)
        plain.set_state_levels(None)
        assert th.equal(plain(obs), before)


def test_tick_gain_option_is_checked_and_a_trained_model_gets_gains_of_one_with_the_same_actions():
    with pytest.raises(ValueError, match="tick_gain"):
        SpikingQNetwork([1.0] * 4, 2, tick_gain="yes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SpikingDQN(SpikingDQNPolicy, "CartPole-v1", policy_kwargs=dict(net_arch=[16], ticks=6), seed=0,
                           learning_starts=50, device="cpu")
        model.learn(100)
    obs = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    before = model.predict(obs, deterministic=True)[0]
    with_tick_gains(model)
    net = model.policy.q_net.q_net
    assert net.tick_gain is not None and th.equal(net.tick_gain, th.ones(2, 6))
    assert model.q_net is model.policy.q_net
    assert any(p is net.tick_gain for group in model.policy.optimizer.param_groups for p in group["params"])
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], before)
    assert model._compiled_network() is None  # the gains train through autograd
    model.learn(100, reset_num_timesteps=False)
    assert not th.equal(net.tick_gain, th.ones(2, 6))
    assert isinstance(model, DQN)
