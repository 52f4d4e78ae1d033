"""The whole-network CPU pass (``spiking_dqn.fused``) against the implementation before it and the per-layer path."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch as th

from spiking_dqn import fused
from spiking_dqn.layers import spiking_layer
from spiking_dqn.network import SpikingQNetwork

DATA = Path(__file__).parent / "data"
_spec = importlib.util.spec_from_file_location("make_pre_fused_reference", DATA / "make_pre_fused_reference.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)


@pytest.fixture(scope="module")
def before():
    """Outputs of the implementation before the fused pass (see tests/data/make_pre_fused_reference.py)."""
    with np.load(DATA / "pre_fused_reference.npz") as data:
        return dict(data)


def unpacked(bits: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.unpackbits(bits)[: like.size].reshape(like.shape).astype(np.float32)


@pytest.mark.parametrize("case", reference.CASES, ids=[c["name"] for c in reference.CASES])
def test_same_spikes_and_float32_close_values_and_gradients_as_before(case, before):
    # Every surrogate (four closed forms and a custom one through autograd), both resets,
    # both delays, and the two recipes' shapes: the spikes are bit for bit those of the
    # previous implementation, with and without autograd; Q-values and gradients agree to
    # float32 rounding (the readout and the weight gradients sum in another order).
    key = case["name"]
    obs, q, trains, grads, q_ng, trains_ng = reference.run_case(case)
    np.testing.assert_array_equal(obs, before[f"{key}/obs"])
    assert len(trains) == len(case["net_arch"])
    for i, (s, s_ng) in enumerate(zip(trains, trains_ng)):
        np.testing.assert_array_equal(s, unpacked(before[f"{key}/train{i}"], s))
        np.testing.assert_array_equal(s_ng, unpacked(before[f"{key}/train_no_grad{i}"], s_ng))
    assert 0 < sum(s.sum() for s in trains) < sum(s.size for s in trains)
    scale = np.abs(before[f"{key}/q"]).max()
    np.testing.assert_allclose(q, before[f"{key}/q"], rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(q_ng, before[f"{key}/q_no_grad"], rtol=1e-5, atol=1e-6 * scale)
    for i, g in enumerate(grads):
        expected = before[f"{key}/grad{i}"]
        assert np.abs(expected).max() > 0
        np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_recipe_retrained_with_a_fixed_seed_gives_the_weights_of_before(before):
    # The shipped CartPole recipe, 1,100 env steps (128 gradient steps at step 1,024) with
    # seed 3. Further on, any float32 rounding difference grows: the previous
    # implementation itself, its weights scaled by 1 + 1e-7, ends 0.027 away at 2,100 steps.
    weights = reference.retrain()
    names = [k for k in before if k.startswith("retrain/")]
    assert {f"retrain/{k}" for k in weights} == set(names)
    for name in names:
        np.testing.assert_allclose(weights[name.removeprefix("retrain/")], before[name], rtol=0, atol=1e-5)


def per_layer_forward(net: SpikingQNetwork, obs: th.Tensor) -> tuple[th.Tensor, list[th.Tensor]]:
    """The network through the per-layer path (one ``_SpikingLayer`` node per layer), as accelerators run it."""
    x = net.encoder(obs)
    trains = []
    for fc, lif in zip(net.hidden, net.lif):
        x = spiking_layer(x, fc.weight, fc.bias, lif, net.synaptic_delay)
        trains.append(x)
    arrived = trains[-1][: net.ticks - net.synaptic_delay].sum(0)
    return th.nn.functional.linear(arrived, net.readout.weight) + net.ticks * net.readout.bias, trains


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("delay", [0, 1])
def test_a_loss_on_spike_counts_backpropagates_as_through_the_per_layer_path(reset, delay):
    th.manual_seed(5)
    net = SpikingQNetwork([1.0] * 3, 2, net_arch=[16, 8], ticks=9, threshold=0.5, reset=reset, synaptic_delay=delay)
    obs = th.rand(24, 3) * 2 - 1

    def loss(q: th.Tensor, trains: list[th.Tensor]) -> th.Tensor:
        return q.pow(2).sum() + 0.3 * trains[0].sum() + 0.7 * trains[1].sum()

    q, trains = net.forward_spikes(net.encoder(obs), return_activity=True)
    loss(q, trains).backward()
    fused_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    q_ref, trains_ref = per_layer_forward(net, obs)
    loss(q_ref, trains_ref).backward()
    assert all(th.equal(a, b) for a, b in zip(trains, trains_ref))
    assert th.allclose(q, q_ref, atol=1e-5)
    for a, b in zip(fused_grads, (p.grad for p in net.parameters())):
        assert th.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_weights_written_through_data_are_seen_by_the_next_forward():
    # SB3 copies the online weights into the target network through ``param.data``,
    # which does not bump version counters: the forward must not serve older weights.
    th.manual_seed(6)
    net = SpikingQNetwork([1.0] * 4, 2, net_arch=[32, 32], ticks=10, threshold=0.5)
    other = SpikingQNetwork([1.0] * 4, 2, net_arch=[32, 32], ticks=10, threshold=0.5)
    obs = th.rand(16, 4) * 2 - 1
    with th.no_grad():
        before = net(obs)
        for target, source in zip(net.parameters(), other.parameters()):
            target.data.copy_(source.data)
        after = net(obs)
        assert not th.equal(before, after)
        assert th.equal(after, other(obs))


def test_workspace_hands_out_an_array_only_once_nothing_else_holds_it():
    workspace = fused.Workspace(per_shape=2, shapes=2)
    first = workspace.empty((3, 4))
    second = workspace.empty((3, 4))
    assert first is not second
    held = th.from_numpy(second)  # a tensor made from it keeps it in use
    del first
    third = workspace.empty((3, 4))
    assert third is not second and third.shape == (3, 4) and third.dtype == np.float32
    del third, held, second
    again = workspace.empty((3, 4))
    assert sum(again is a for a in workspace._pool[(3, 4)]) == 1
    assert not workspace.zeros((3, 4)).any()
    workspace.empty((5,))
    workspace.empty((6,))  # a third shape drops the least recently used one
    assert list(workspace._pool) == [(5,), (6,)]


def test_a_weight_changed_in_place_before_the_backward_raises_autograds_error():
    th.manual_seed(7)
    net = SpikingQNetwork([1.0] * 2, 2, net_arch=[8], ticks=5, threshold=0.5)
    q = net(th.rand(4, 2))
    with th.no_grad():
        net.hidden[0].weight.add_(0.1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        q.sum().backward()


def test_parameter_views_follow_in_place_updates_and_replaced_tensors():
    th.manual_seed(0)
    net = SpikingQNetwork([1.0] * 4, 2, net_arch=[16], ticks=5)
    obs = th.randn(7, 4)

    def fresh_q() -> np.ndarray:  # the same weights in a network that never cached a view
        other = SpikingQNetwork([1.0] * 4, 2, net_arch=[16], ticks=5)
        state = net.state_dict()
        other.load_state_dict({k: v.contiguous() if isinstance(v, th.Tensor) else v for k, v in state.items()})
        return other.compiled_forward(obs)[0]

    views = net._parameter_views
    first = views(net._parameter_tensors())
    assert views(net._parameter_tensors()) is first  # kept between calls
    with th.no_grad():
        net.readout.weight.mul_(-2.0)  # in place, as an optimizer steps
    assert views(net._parameter_tensors()) is first
    np.testing.assert_array_equal(net.compiled_forward(obs)[0], fresh_q())
    with th.no_grad():
        np.testing.assert_array_equal(net(obs).numpy(), fresh_q())
    # A replaced tensor (.data = ...) gets a new view, and the forward reads the new values.
    net.readout.weight.data = th.randn(2, 16)
    np.testing.assert_array_equal(net.compiled_forward(obs)[0], fresh_q())
    assert views(net._parameter_tensors()) is not first
    # A non-contiguous weight is copied at every call (a kept copy would miss in-place updates).
    net.readout.weight.data = th.randn(16, 2).t()
    a = views(net._parameter_tensors())
    assert views(net._parameter_tensors()) is not a
    with th.no_grad():
        net.readout.weight.mul_(3.0)
        np.testing.assert_array_equal(net(obs).numpy(), fresh_q())
    np.testing.assert_array_equal(net.compiled_forward(obs)[0], fresh_q())
