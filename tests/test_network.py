import numpy as np
import pytest
import torch as th
from snntorch import surrogate as snn_surrogate

from spiking_dqn import SpikingQNetwork
from spiking_dqn.network import ChipLeaky, lif_sequence


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


def test_chip_leaky_resets_in_the_same_tick():
    lif = ChipLeaky(beta=0.5, threshold=1.0, spike_grad=lambda x: (x > 0).float(), reset_mechanism="subtract")
    current = th.tensor([[1.5], [0.2], [2.6]]).unsqueeze(-1)  # (T=3, batch=1, n=1)
    spikes = lif_sequence(current, lif)
    # tick 0: v=1.5 -> spike, v=0.5; tick 1: v=0.25+0.2=0.45; tick 2: v=0.225+2.6=2.825 -> spike, v=1.825
    assert spikes.flatten().tolist() == [1.0, 0.0, 1.0]


def test_threshold_is_strict():
    lif = ChipLeaky(beta=1.0, threshold=1.0, spike_grad=lambda x: (x > 0).float(), reset_mechanism="subtract")
    spikes = lif_sequence(th.tensor([[[1.0]], [[0.5]]]), lif)
    assert spikes.flatten().tolist() == [0.0, 1.0]


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
    ],
)
def test_invalid_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpikingQNetwork([1.0, 1.0], 2, **kwargs)


def test_surrogate_choices_train():
    for name in ["atan", "fast_sigmoid", "triangular", "straight_through"]:
        th.manual_seed(0)
        net = SpikingQNetwork([1.0, 1.0], 2, net_arch=[8], ticks=5, surrogate=name, threshold=0.3)
        net(th.rand(16, 2)).sum().backward()
        assert np.isfinite(net.hidden[0].weight.grad.numpy()).all()


@pytest.mark.parametrize("subtract", [True, False])
def test_accelerator_scan_equals_the_cpu_kernels(subtract):
    # On CUDA the layers run _lif_scan_torch and _reverse_scan; on CPU the compiled kernels.
    from spiking_dqn import kernels
    from spiking_dqn.network import _lif_scan_torch, _reverse_scan

    current = th.randn(12, 32, 16) * 0.8
    n = current.shape[-1]
    full = lambda value: np.full(n, value, dtype=np.float32)  # noqa: E731
    pre_k, spikes_k, _ = kernels.lif_forward(current.numpy(), full(0.8), full(0.0), full(0.5), subtract, np.float32(0))
    pre_t, spikes_t = _lif_scan_torch(current, 0.8, 0.5, subtract)
    assert np.array_equal(spikes_k, spikes_t.numpy())
    assert np.allclose(pre_k, pre_t.numpy(), atol=1e-6)
    carry = 0.8 if subtract else 0.8 * (1.0 - spikes_t)
    direct = th.randn_like(current)
    grad_k = kernels.lif_backward(
        direct.numpy(), pre_k, spikes_k, np.float32(0.8), np.float32(0.5), subtract, kernels.SURROGATE_NONE, 0.0
    )
    assert np.allclose(grad_k, _reverse_scan(direct, carry).numpy(), atol=1e-5)


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
    from spiking_dqn.network import _layer_forward, _layer_forward_torch

    th.manual_seed(4)
    net = SpikingQNetwork([1.0] * 3, 2, net_arch=[20], ticks=9, threshold=0.6, reset=reset, synaptic_delay=delay)
    spikes_in = net.encoder(th.rand(30, 3) * 2 - 1)
    args = (spikes_in, net.hidden[0].weight, net.hidden[0].bias, net.lif[0], delay, True)
    pre_cpu, spikes_cpu = _layer_forward(*args)
    pre_acc, spikes_acc = _layer_forward_torch(*args)
    assert th.equal(spikes_cpu, spikes_acc)
    assert th.allclose(pre_cpu, pre_acc, atol=1e-5)
