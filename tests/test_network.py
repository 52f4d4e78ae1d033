import numpy as np
import pytest
import torch as th
from snntorch import surrogate as snn_surrogate

from spiking_dqn import SpikingQNetwork
from spiking_dqn.config import SpikingConfig
from spiking_dqn.layers import _layer_forward, _layer_forward_torch, spiking_layer
from spiking_dqn.neuron import ChipLeaky


def test_q_values_shape_and_activity(small_net):
    obs = th.randn(32, 4)
    q, counts = small_net(obs, return_activity=True)
    assert q.shape == (32, 2)
    assert [c.shape for c in counts] == [(32, 8), (32, 16), (32, 8)]
    assert counts[1].sum() > 0, "hidden layer 1 should spike"
    assert th.equal(q, small_net(obs))


def test_no_state_leaks_between_forwards(small_net):
    obs = th.randn(8, 4)
    first = small_net(obs)
    small_net(th.randn(64, 4) * 5)  # a different batch size and very different inputs
    small_net(obs[:3])
    assert th.equal(small_net(obs), first)
    assert th.equal(small_net(obs[:3]), first[:3])


def test_online_and_target_networks_share_no_state():
    from stable_baselines3 import DQN

    from spiking_dqn import SpikingDQNPolicy

    model = DQN(SpikingDQNPolicy, "CartPole-v1", policy_kwargs=dict(net_arch=[16], ticks=6), learning_starts=0)
    q_net, target = model.policy.q_net, model.policy.q_net_target
    assert q_net.q_net is not target.q_net
    assert not {id(p) for p in q_net.parameters()} & {id(p) for p in target.parameters()}
    obs = th.randn(5, 4)
    before = target(obs)
    q_net(th.randn(50, 4))
    assert th.equal(target(obs), before)


def test_gradients_reach_the_first_layer(small_net):
    obs = th.randn(64, 4)
    small_net(obs).pow(2).mean().backward()
    grad = small_net.hidden[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0


def reference_forward(net: SpikingQNetwork, obs: th.Tensor) -> th.Tensor:
    """The plain tick-by-tick loop over ChipLeaky neurons under autograd."""
    spikes = net.encoder(obs)
    mems = [th.zeros(obs.shape[0], n) for n in net.net_arch]
    # emitted[i][t]: spikes of population i (0 = input) at tick t
    emitted = [[spikes[t] for t in range(net.ticks)]] + [[] for _ in net.net_arch]
    q = th.zeros(obs.shape[0], net.n_actions)
    d = net.synaptic_delay

    def arriving(pop: int, t: int) -> th.Tensor:
        return emitted[pop][t - d] if t - d >= 0 else th.zeros_like(emitted[0][0] if pop == 0 else mems[pop - 1])

    for t in range(net.ticks):
        for i, (fc, lif) in enumerate(zip(net.hidden, net.lif)):
            spk, mems[i] = lif(fc(arriving(i, t)), mems[i])
            emitted[i + 1].append(spk)
        q = q + net.readout(arriving(len(net.net_arch), t))
    return q


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("delay", [0, 1])
@pytest.mark.parametrize("surrogate", ["atan", "fast_sigmoid", "triangular", "straight_through", "custom"])
def test_fused_layers_equal_the_tick_loop_in_value_and_gradient(reset, delay, surrogate):
    # The compiled backward evaluates the named surrogates in closed form; a custom one
    # ("custom": snnTorch's atan with another alpha) goes through autograd. Both must give
    # the gradient autograd gives through snnTorch's own surrogate in the tick loop.
    th.manual_seed(1)
    spec = surrogate if surrogate != "custom" else snn_surrogate.atan(alpha=3.0)
    net = SpikingQNetwork(
        [1.0] * 4, 3, net_arch=[24, 12], ticks=8, threshold=0.4, reset=reset, synaptic_delay=delay, surrogate=spec
    )
    obs = th.rand(40, 4) * 2 - 1
    fast = net(obs)
    fast.pow(2).sum().backward()
    fast_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    slow = reference_forward(net, obs)
    slow.pow(2).sum().backward()
    slow_grads = [p.grad.clone() for p in net.parameters()]
    assert th.allclose(fast, slow, atol=1e-5)
    for a, b in zip(fast_grads, slow_grads):
        assert th.allclose(a, b, atol=1e-4, rtol=1e-4)


def neuron_outputs(lif: ChipLeaky, currents: list[float]) -> tuple[list[float], list[float]]:
    """Spikes of one neuron driven by ``currents``: tick by tick through ``ChipLeaky.forward``, and
    through the layer path the network runs (an identity projection with no delay)."""
    current = th.tensor(currents).reshape(-1, 1, 1)  # (T, batch=1, n=1)
    mem = th.zeros(1, 1)
    per_tick = []
    for t in range(current.shape[0]):
        spk, mem = lif(current[t], mem)
        per_tick.append(float(spk))
    layer = spiking_layer(current, th.ones(1, 1), th.zeros(1), lif, 0)
    return per_tick, layer.flatten().tolist()


@pytest.mark.parametrize("reset, expected", [("subtract", [1.0, 0.0, 1.0]), ("zero", [1.0, 0.0, 0.0])])
def test_chip_leaky_resets_in_the_same_tick(reset, expected):
    lif = ChipLeaky(beta=0.5, threshold=1.0, spike_grad=lambda x: (x > 0).float(), reset_mechanism=reset)
    # subtract: tick 0: v=1.5 -> spike, v=0.5; tick 1: v=0.25+0.2=0.45; tick 2: v=0.225+0.8=1.025 -> spike
    # zero:     tick 0: v=1.5 -> spike, v=0;   tick 1: v=0.2;          tick 2: v=0.1+0.8=0.9 -> no spike
    per_tick, layer = neuron_outputs(lif, [1.5, 0.2, 0.8])
    assert per_tick == layer == expected


def test_threshold_is_strict():
    lif = ChipLeaky(beta=1.0, threshold=1.0, spike_grad=lambda x: (x > 0).float(), reset_mechanism="subtract")
    per_tick, layer = neuron_outputs(lif, [1.0, 0.5])
    assert per_tick == layer == [0.0, 1.0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ticks=0), "ticks"),
        (dict(ticks=-3), "ticks"),
        (dict(ticks=2), "too few"),
        (dict(beta=1.5), "beta"),
        (dict(beta=-0.1), "beta"),
        (dict(threshold=0.0), "threshold"),
        (dict(threshold=-1.0), "threshold"),
        (dict(reset="none"), "reset"),
        (dict(synaptic_delay=2), "synaptic_delay"),
        (dict(surrogate="magic"), "surrogate"),
        (dict(net_arch=[]), "net_arch"),
        (dict(net_arch=[8, 0]), "net_arch"),
        (dict(encoding="random"), "encoding"),
        (dict(n_actions=0), "n_actions"),
    ],
)
def test_invalid_construction(kwargs, match):
    options = {"obs_bound": [1.0, 1.0], "n_actions": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        SpikingQNetwork(**options)
    if "n_actions" not in kwargs:
        with pytest.raises(ValueError, match=match):
            SpikingConfig(**kwargs)


def test_spiking_config_holds_the_defaults_and_plain_values():
    net = SpikingQNetwork([1.0, 1.0], 2)
    assert net.config == SpikingConfig()
    assert (net.net_arch, net.ticks, net.synaptic_delay, net.reset) == ([64, 64], 10, 1, "subtract")
    assert float(net.lif[0].beta) == pytest.approx(0.9) and float(net.lif[0].threshold) == 1.0
    config = SpikingConfig(net_arch=[np.int64(8)], ticks=np.int64(5), beta=np.float32(0.5), threshold=1)
    assert config.net_arch == (8,) and type(config.ticks) is int and type(config.threshold) is float
    assert SpikingConfig(**config.to_kwargs()) == config
    assert config.to_kwargs()["net_arch"] == [8]
    with pytest.raises(TypeError):
        SpikingConfig(tics=5)


def test_a_config_and_keyword_options_build_the_same_network():
    config = SpikingConfig(net_arch=(12, 6), ticks=7, threshold=0.5, reset="zero", synaptic_delay=0)
    th.manual_seed(2)
    from_config = SpikingQNetwork([1.0] * 3, 2, config=config)
    th.manual_seed(2)
    from_keywords = SpikingQNetwork([1.0] * 3, 2, **config.to_kwargs())
    th.manual_seed(2)
    overridden = SpikingQNetwork([1.0] * 3, 2, config=SpikingConfig(ticks=99), **config.to_kwargs())
    assert from_config.config == from_keywords.config == overridden.config == config
    obs = th.rand(5, 3) * 2 - 1
    assert th.equal(from_config(obs), from_keywords(obs)) and th.equal(from_config(obs), overridden(obs))
    with pytest.raises(TypeError, match="SpikingConfig"):
        SpikingQNetwork([1.0] * 3, 2, [12, 6])


def test_surrogate_choices_train():
    for name in ["atan", "fast_sigmoid", "triangular", "straight_through"]:
        th.manual_seed(0)
        net = SpikingQNetwork([1.0, 1.0], 2, net_arch=[8], ticks=5, surrogate=name, threshold=0.3)
        net(th.rand(16, 2)).sum().backward()
        grad = net.hidden[0].weight.grad.numpy()
        assert np.isfinite(grad).all() and np.abs(grad).sum() > 0, name  # the surrogate passes a gradient


def test_inference_path_equals_the_autograd_path_and_sees_threshold_changes():
    # Without autograd on the CPU the network runs one event-driven kernel per layer with
    # cached neuron parameters: the same spikes and Q-values to float32 rounding, and a
    # threshold changed in place is seen at once.
    th.manual_seed(3)
    net = SpikingQNetwork([1.0] * 4, 3, net_arch=[32, 16], ticks=12, threshold=0.5)
    obs = th.rand(50, 4) * 2 - 1
    with th.no_grad():
        fast, fast_trains = net(obs, return_activity=True)
    slow, slow_trains = net(obs, return_activity=True)
    assert th.allclose(fast, slow.detach(), atol=1e-5)
    assert all(th.equal(a, b) for a, b in zip(fast_trains, slow_trains))
    with th.no_grad():
        net.lif[0].threshold.mul_(3.0)
        higher = net(obs, return_activity=True)[1]
    assert higher[1].sum() < fast_trains[1].sum()
    assert th.equal(higher[1], net(obs, return_activity=True)[1][1])


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("delay", [0, 1])
def test_accelerator_layer_path_equals_the_cpu_path(reset, delay):
    # The torch layer path that runs on CUDA, run here on CPU tensors, against the numpy
    # and kernel path the CPU takes: same spikes, same membranes to float32 rounding.
    th.manual_seed(4)
    net = SpikingQNetwork([1.0] * 3, 2, net_arch=[20], ticks=9, threshold=0.6, reset=reset, synaptic_delay=delay)
    spikes_in = net.encoder(th.rand(30, 3) * 2 - 1)
    args = (spikes_in, net.hidden[0].weight, net.hidden[0].bias, net.lif[0], delay, True)
    pre_cpu, spikes_cpu = _layer_forward(*args)
    pre_acc, spikes_acc = _layer_forward_torch(*args)
    assert th.equal(spikes_cpu, spikes_acc)
    assert th.allclose(pre_cpu, pre_acc, atol=1e-5)


def test_the_executor_is_chosen_when_the_device_or_an_option_changes_not_per_forward(monkeypatch):
    from dataclasses import replace

    from spiking_dqn.grid import Grid

    th.manual_seed(5)
    net = SpikingQNetwork([1.0] * 4, 2, net_arch=[16, 8], ticks=6, threshold=0.4)
    obs = th.rand(20, 4) * 2 - 1
    plan = net._plan
    assert plan.executor == "compiled" and plan.compiled_step and plan.neurons.scale == 1.0
    chosen = []
    original = SpikingQNetwork._choose_executor
    monkeypatch.setattr(SpikingQNetwork, "_choose_executor", lambda self: chosen.append(1) or original(self))
    with th.no_grad():
        expected, trains = net(obs, return_activity=True)
        net(obs)
    net(obs).sum().backward()
    net.compiled_forward(obs, keep_tape=True)
    assert chosen == [] and net._plan is plan
    # Each option change, and a move or conversion of the tensors, chooses again; the plan carries scale and levels.
    net.threshold_scale = 1.5
    assert net._plan.neurons.scale == 1.5 and net._plan.neurons.thresholds[0] == np.float32(0.4) * np.float32(1.5)
    net.set_state_levels([[-1.0, 0.0, 1.0], None])
    assert net._plan.neurons.layer_levels()[1] is None and net._plan.neurons.layer_levels()[0].tolist() == [-1, 0, 1]
    net.set_fake_quantization(Grid((20.0, 20.0, 40.0)))
    assert not net._plan.compiled_step and not net.supports_compiled_step and not net._plan.cached_views
    net.to("cpu")
    assert len(chosen) == 4
    # A neuron tensor changed in place makes a new plan at the next forward, once.
    net.set_fake_quantization(None)
    net.set_state_levels(None)
    net.threshold_scale = 1.0
    with th.no_grad():
        net.lif[0].threshold.mul_(1.0)
        count = len(chosen)
        assert th.equal(net(obs), expected) and len(chosen) == count + 1
        net(obs)
    assert len(chosen) == count + 1
    # The layer-by-layer executor (accelerators) gives the compiled pass's spikes.
    net.__dict__["_plan"] = replace(net._plan, executor="layers")
    with th.no_grad():
        layered, layered_trains = net(obs, return_activity=True)
    assert all(th.equal(a, b) for a, b in zip(layered_trains, trains))
    assert th.allclose(layered, expected, atol=1e-5)
