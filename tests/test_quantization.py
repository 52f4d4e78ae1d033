"""Quantization of the float spiking Q-network into a chip program."""

import warnings

import numpy as np
import pytest
import torch as th

from spiking_dqn.hardware import ChipProgram
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.quantization import (
    LayerReport,
    QuantizationReport,
    fake_quantize_network,
    quantize_network,
    resolve_lambdas,
)
from spiking_dqn.semantics.weights import quantize_weights

# lam = 20: scaled values 200, -200 (clipped), 0.02, -0.02, 0.04 (round to 0), 10, 0, 20.
HAND_MADE = np.array([[10.0, -10.0, 0.001, -0.001], [0.5, 0.0, 0.002, 1.0]], dtype=np.float32)


def make_net(seed: int = 0, **kwargs) -> SpikingQNetwork:
    th.manual_seed(seed)
    options = dict(obs_bound=[1.0, 2.0], n_actions=2, net_arch=[2], ticks=5, threshold=0.5)
    options.update(kwargs)
    return SpikingQNetwork(**options)


def test_quantize_weights_rounds_and_clips_to_int8():
    w = np.array([0.01, 0.026, -0.024, 10.0, -10.0, 0.0, 0.3, -0.3], dtype=np.float32)
    q = quantize_weights(w, 20.0)
    assert q.dtype == np.int8
    np.testing.assert_array_equal(q, [0, 1, 0, 127, -127, 0, 6, -6])
    # Far below the range the weight is -127, never -128 (the chip's weights are symmetric).
    assert quantize_weights(np.array([-1e6, -128.0, -127.6, 1e6], np.float32), 1.0).tolist() == [-127, -127, -127, 127]


def test_layer_report_counts_clipped_and_zeroed_weights():
    report = LayerReport.from_weights("hidden.0", HAND_MADE, 20.0)
    assert report.name == "hidden.0" and report.lam == 20.0
    assert report.n_weights == 8
    assert report.clipped_frac == pytest.approx(2 / 8)
    assert report.zeroed_frac == pytest.approx(3 / 7)  # 7 nonzero float weights, 3 collapse to 0
    assert report.max_abs_error == pytest.approx(10.0 - 127 / 20, rel=1e-6)


def test_layer_report_of_exact_weights_has_no_error():
    w = np.array([[0.5, -0.25], [1.0, 0.0]], dtype=np.float32)  # exact multiples of 1/4
    report = LayerReport.from_weights("readout", w, 4.0)
    assert report.clipped_frac == 0.0 and report.zeroed_frac == 0.0 and report.max_abs_error == 0.0


def test_heavy_clipping_warns_with_layer_name_lambda_and_fractions():
    net = make_net()
    with th.no_grad():
        net.hidden[0].weight.copy_(th.as_tensor(HAND_MADE))
        net.readout.weight.fill_(0.1)
    with pytest.warns(UserWarning) as record:
        program, report = quantize_network(net, 20.0)
    messages = [str(w.message) for w in record]
    assert len(messages) == 1, messages  # the readout does not clip
    assert "hidden.0" in messages[0] and "lambda=20" in messages[0]
    assert "25.0%" in messages[0] and "42.9%" in messages[0]
    assert report.layers[0].clipped_frac == pytest.approx(0.25)
    assert report.layers[1].clipped_frac == 0.0
    np.testing.assert_array_equal(program.weights[0], quantize_weights(HAND_MADE, 20.0))


def test_no_warning_when_clipping_is_light():
    net = make_net()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantize_network(net, 3.0)


def test_the_mse_rule_clips_on_purpose_and_is_not_told_to_use_auto():
    """``quantize_network(net, "mse", weight_bits=2)``, the recommended low-width setting, warns of nothing."""
    net = make_net(net_arch=[32, 32])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, report = quantize_network(net, "mse", weight_bits=2)
    assert max(r.clipped_frac for r in report.layers) > 0.02  # it clips, by choice
    with pytest.warns(UserWarning, match=r"clips .* at 2 bits .*consider a smaller lambda or lam='mse'") as record:
        quantize_network(net, 20.0, weight_bits=2)
    assert not any("lam='auto'" in str(w.message) for w in record)


def test_resolve_lambdas_scalar_and_list():
    weights = [np.ones((3, 4)), np.ones((2, 3))]
    assert resolve_lambdas(3, weights) == [3.0, 3.0]
    assert resolve_lambdas(np.float32(2.5), weights) == [2.5, 2.5]
    assert resolve_lambdas([3, 32.0], weights) == [3.0, 32.0]
    assert resolve_lambdas(np.array([1.0, 2.0]), weights) == [1.0, 2.0]


@pytest.mark.parametrize(
    "lam", [0, -1.0, float("nan"), float("inf"), "fast", [1.0], [1.0, 2.0, 3.0], [1.0, 0.0], True, None, [1.0, "a"]]
)
def test_resolve_lambdas_rejects_invalid(lam):
    with pytest.raises(ValueError):
        resolve_lambdas(lam, [np.ones((3, 4)), np.ones((2, 3))])


def test_auto_lambda_rule_maps_the_999th_percentile_to_127():
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.05, size=(64, 8)), rng.normal(0, 2.0, size=(256, 64)), rng.laplace(0, 0.01, (2, 64))]
    lambdas = resolve_lambdas("auto", weights)
    for w, lam in zip(weights, lambdas):
        assert lam == pytest.approx(127.0 / np.percentile(np.abs(w), 99.9))
        report = LayerReport.from_weights("x", w.astype(np.float32), lam)
        # About 0.1% of the weights clip (in a small layer, at most the largest one).
        assert report.clipped_frac * w.size <= max(1.0, 0.001 * w.size)
        # Far less collapse than a fixed lambda of 1 would give.
        assert report.zeroed_frac < LayerReport.from_weights("x", w.astype(np.float32), 1.0).zeroed_frac
    assert resolve_lambdas("auto", [np.zeros((2, 2))]) == [1.0]


def test_quantize_network_fills_program_from_the_network():
    net = make_net(beta=0.8, threshold=0.7, reset="zero", synaptic_delay=0, ticks=7)
    program, report = quantize_network(net, [10.0, 40.0], seed=5, centered=False)
    assert not program.centered_readout
    assert isinstance(program, ChipProgram) and isinstance(report, QuantizationReport)
    assert program.lambdas == [10.0, 40.0] and report.lambdas == [10.0, 40.0]
    for k, (layer, lam) in enumerate(zip(net.linear_layers(), [10.0, 40.0])):
        w = layer.weight.detach().numpy()
        np.testing.assert_array_equal(program.weights[k], quantize_weights(w, lam))
        assert program.weights[k].shape == w.shape
        expected_offset = (lam * layer.bias.detach().numpy().astype(np.float64)).astype(np.float32)
        np.testing.assert_array_equal(program.i_offset[k], expected_offset)
    # i_offset is scaled, not rounded
    assert np.any(program.i_offset[0] != np.rint(program.i_offset[0]))
    np.testing.assert_allclose(program.thresholds[0], 10.0 * 0.7, rtol=1e-6)
    np.testing.assert_allclose(program.alpha_decay[0], 0.8, rtol=1e-6)
    np.testing.assert_array_equal(program.thresholds[1], [5000.0, 5000.0])
    np.testing.assert_array_equal(program.alpha_decay[1], [1.0, 1.0])
    assert program.reset == "zero" and program.v_reset == 0.0
    assert program.ticks == 7 and program.delay == 0 and program.seed == 5
    assert program.encoding == "deterministic"
    np.testing.assert_array_equal(program.obs_bound, np.array([1.0, 2.0], dtype=np.float32))
    assert program.obs_bound.dtype == np.float32


def test_fake_quantize_network_replaces_only_the_weights():
    net = make_net(net_arch=[4, 3])
    original = [layer.weight.detach().clone() for layer in net.linear_layers()]
    fake = fake_quantize_network(net, [20.0, 10.0, 5.0], centered=False)
    for layer, fake_layer, w0, lam in zip(net.linear_layers(), fake.linear_layers(), original, [20.0, 10.0, 5.0]):
        assert th.equal(layer.weight, w0)  # the original is untouched
        expected = quantize_weights(w0.numpy(), lam).astype(np.float64) / lam
        np.testing.assert_allclose(fake_layer.weight.detach().numpy(), expected, rtol=1e-7)
        assert th.equal(fake_layer.bias, layer.bias)
    for lif, fake_lif in zip(net.lif, fake.lif):
        assert float(fake_lif.threshold) == float(lif.threshold) and float(fake_lif.beta) == float(lif.beta)


def test_report_to_dict_and_table():
    report = QuantizationReport([LayerReport.from_weights("hidden.0", HAND_MADE, 20.0)])
    data = report.to_dict()
    assert data["layers"][0]["name"] == "hidden.0"
    assert data["layers"][0]["clipped_frac"] == pytest.approx(0.25)
    table = str(report)
    assert "hidden.0" in table and "clipped" in table and "25.00%" in table


def test_auto_lambda_keeps_the_readout_below_its_threshold():
    """Q-values of ~100 (CartPole with gamma 0.99) must not drive the integrator to 5000."""
    from spiking_dqn.hardware import EmulatorBackend
    from spiking_dqn.quantization import AUTO_OUTPUT_HEADROOM, OUTPUT_THRESHOLD, readout_peak, resolve_grid

    th.manual_seed(0)
    net = SpikingQNetwork([1.0] * 4, 2, net_arch=[16, 8], ticks=10, threshold=0.5)
    with th.no_grad():
        net.readout.bias.fill_(10.0)  # ~100 after 10 ticks, whatever the (small) weights add
    peak = readout_peak(net)
    assert peak > 90
    weight_only = resolve_lambdas("auto", [layer.weight.detach().numpy() for layer in net.linear_layers()])
    lambdas = list(resolve_grid(net, "auto", centered=False).lambdas)
    assert lambdas[:-1] == weight_only[:-1]
    assert lambdas[-1] == pytest.approx(AUTO_OUTPUT_HEADROOM * OUTPUT_THRESHOLD / peak)
    assert lambdas[-1] < weight_only[-1]
    program, _ = quantize_network(net, "auto", centered=False)
    obs = np.random.default_rng(1).uniform(-1, 1, size=(256, 4)).astype(np.float32)
    result = EmulatorBackend().run(program, obs)
    assert not result.output_saturated.any()
    assert np.allclose(result.q_values(program), net(th.as_tensor(obs)).detach().numpy(), atol=0.5)


def test_centered_readout_keeps_the_greedy_action_and_removes_the_shared_part():
    from spiking_dqn.quantization import center_readout

    th.manual_seed(0)
    net = SpikingQNetwork([1.0] * 4, 3, net_arch=[16, 8], ticks=10, threshold=0.5)
    with th.no_grad():
        net.readout.bias.add_(9.0)  # a large part shared by all actions, as in CartPole
    obs = th.rand(300, 4) * 2 - 1
    q = net(obs).detach()
    centered = center_readout(net)(obs).detach()
    assert th.allclose(centered, q - q.mean(1, keepdim=True), atol=1e-4)
    assert th.equal(centered.argmax(1), q.argmax(1))
    program, _ = quantize_network(net, "auto")
    assert program.centered_readout
    # without the shared part the readout lambda is not limited by the 5000 threshold
    assert program.lambdas[-1] > quantize_network(net, "auto", centered=False)[0].lambdas[-1]
    with pytest.raises(ValueError, match="two actions"):
        center_readout(SpikingQNetwork([1.0], 1, net_arch=[4], ticks=5))


def test_grid_distance_snapping_and_changed_weights_agree_with_quantize():
    """``Grid.distance``, ``Grid.changed``, ``Grid.fake_quantize`` (snapping) and the chip program all use ``quantize``."""
    from spiking_dqn.quantization.snap import snap_to_grid
    from spiking_dqn.grid import Grid, center, quantize
    from spiking_dqn.quantization import float_weights

    net = make_net(net_arch=[6], n_actions=2)  # a two-action centred readout snaps exactly
    grid = Grid([7.0, 11.0])
    weights = float_weights(net)
    deployed = [weights[0], center(weights[1])]
    expected = [float(np.mean(np.abs(lam * w.astype(np.float64) - quantize(w.astype(np.float64), lam))))
                for w, lam in zip(deployed, grid.lambdas)]
    assert grid.distance(weights) == expected and min(expected) > 0
    assert grid.changed(weights, weights) == [0.0, 0.0]
    moved = [weights[0] + 1.0 / 7.0, weights[1]]  # one grid step on every hidden weight
    assert grid.changed(weights, moved)[0] > 0.9 and grid.changed(weights, moved)[1] == 0.0
    program, _ = quantize_network(net, grid)
    for k, (w, lam) in enumerate(zip(deployed, grid.lambdas)):
        np.testing.assert_array_equal(program.weights[k], quantize(w, lam).astype(np.int8))
    snap_to_grid(net, grid)
    assert net.grid == grid
    assert grid.distance(float_weights(net)) == pytest.approx([0.0, 0.0], abs=1e-5)
    snapped, _ = quantize_network(net)  # lam=None: the grid the network records
    assert all(np.array_equal(a, b) for a, b in zip(snapped.weights, program.weights))
