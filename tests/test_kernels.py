"""The compiled CPU kernels of ``spiking_dqn.semantics`` (lif, network_kernels, encoding) against plain references."""

import numpy as np
import pytest
import torch as th

from spiking_dqn.semantics import encoding as semantic_encoding
from spiking_dqn.semantics import lif
from spiking_dqn.layers import _lif_scan_torch, _reverse_scan
from spiking_dqn.neuron import SURROGATES


def reference_lif(current, alpha, offset, threshold, subtract, v_reset):
    """The LIF tick loop in float32 numpy, one tick at a time."""
    v = np.zeros(current.shape[1:], dtype=np.float32)
    pre, spikes = np.empty_like(current), np.empty_like(current)
    for t in range(current.shape[0]):
        m = alpha * v + offset + current[t]
        fired = m > threshold
        pre[t], spikes[t] = m, fired
        v = np.where(fired, m - threshold if subtract else v_reset, m).astype(np.float32)
    return pre, spikes, v


@pytest.mark.parametrize("subtract", [True, False])
def test_lif_forward_equals_the_tick_loop_with_per_neuron_parameters(subtract):
    rng = np.random.default_rng(0)
    current = rng.normal(0.0, 0.8, size=(10, 7, 5)).astype(np.float32)
    alpha = rng.uniform(0.5, 1.0, 5).astype(np.float32)
    offset = rng.normal(0.0, 0.2, 5).astype(np.float32)
    threshold = rng.uniform(0.3, 1.2, 5).astype(np.float32)
    v_reset = np.float32(-0.25)
    pre, spikes, v = lif.lif_forward(current, alpha, offset, threshold, subtract, v_reset, True, lif.NO_LEVELS)
    ref_pre, ref_spikes, ref_v = reference_lif(current, alpha, offset, threshold, subtract, v_reset)
    assert 0 < spikes.sum() < spikes.size
    np.testing.assert_array_equal(spikes, ref_spikes)
    np.testing.assert_allclose(pre, ref_pre, atol=1e-6)
    np.testing.assert_allclose(v, ref_v, atol=1e-6)
    pre_skipped, spikes_again, _ = lif.lif_forward(current, alpha, offset, threshold, subtract, v_reset, False, lif.NO_LEVELS)
    assert pre_skipped.size == 0
    np.testing.assert_array_equal(spikes_again, spikes)


@pytest.mark.parametrize("subtract", [True, False])
def test_accelerator_scan_equals_the_cpu_kernels(subtract):
    # On CUDA the layers run _lif_scan_torch and _reverse_scan; on CPU the compiled kernels.
    th.manual_seed(0)
    current = th.randn(12, 32, 16) * 0.8
    n = current.shape[-1]
    full = lambda value: np.full(n, value, dtype=np.float32)  # noqa: E731
    pre_k, spikes_k, _ = lif.lif_forward(current.numpy(), full(0.8), full(0.0), full(0.5), subtract, np.float32(0), True, lif.NO_LEVELS)
    pre_t, spikes_t = _lif_scan_torch(current, 0.8, 0.5, subtract)
    assert 0 < spikes_k.sum() < spikes_k.size
    assert np.array_equal(spikes_k, spikes_t.numpy())
    assert np.allclose(pre_k, pre_t.numpy(), atol=1e-6)
    carry = 0.8 if subtract else 0.8 * (1.0 - spikes_t)
    direct = th.randn_like(current)
    grad_k = np.empty_like(pre_k)
    lif.lif_backward(
        direct.numpy(), pre_k, spikes_k, np.float32(0.8), np.float32(0.5), subtract, lif.SURROGATE_NONE, 0.0, grad_k
    )
    assert np.allclose(grad_k, _reverse_scan(direct, carry).numpy(), atol=1e-5)


@pytest.mark.parametrize("name", sorted(SURROGATES))
@pytest.mark.parametrize("subtract", [True, False])
def test_closed_form_surrogates_equal_snntorch_autograd(name, subtract):
    # The kernel's closed-form derivative of each named surrogate (at its default
    # parameter) against autograd through snnTorch's own surrogate.
    assert set(lif.SURROGATE_CODES) == set(SURROGATES) == set(lif.SURROGATE_DEFAULTS)
    th.manual_seed(1)
    threshold = 0.5
    current = th.randn(9, 6, 11) * 0.8
    n = current.shape[-1]
    full = lambda value: np.full(n, value, dtype=np.float32)  # noqa: E731
    pre, spikes, _ = lif.lif_forward(
        current.numpy(), full(0.8), full(0.0), full(threshold), subtract, np.float32(0), True, lif.NO_LEVELS
    )
    grad_spikes = th.randn_like(current)
    shifted = (th.from_numpy(pre) - threshold).requires_grad_(True)
    (direct,) = th.autograd.grad(SURROGATES[name]()(shifted), shifted, grad_outputs=grad_spikes)
    args = (pre, spikes, np.float32(0.8), np.float32(threshold), subtract)
    closed, via_autograd = np.empty_like(pre), np.empty_like(pre)
    lif.lif_backward(
        grad_spikes.numpy(), *args, lif.SURROGATE_CODES[name], lif.SURROGATE_DEFAULTS[name], closed
    )
    lif.lif_backward(direct.numpy(), *args, lif.SURROGATE_NONE, 0.0, via_autograd)
    assert np.abs(via_autograd).max() > 0
    np.testing.assert_allclose(closed, via_autograd, rtol=1e-5, atol=1e-6)


def test_deterministic_encoding_counts_floor_of_rate_times_ticks():
    obs = np.array([[0.7, -0.3, 2.0], [0.0, -1.0, 0.25]])
    bound = np.array([1.0, 1.0, 1.0])
    ticks = 10
    spikes, finite = semantic_encoding.encode_deterministic(obs, bound, ticks)
    assert finite
    assert spikes.shape == (ticks, 2, 6) and spikes.dtype == np.float32
    rates = np.clip(obs / bound, -1.0, 1.0)
    positive, negative = np.maximum(rates, 0.0), np.maximum(-rates, 0.0)
    expected = np.floor(np.arange(1, ticks + 1)[:, None, None] * np.concatenate([positive, negative], 1) + 1e-9)
    np.testing.assert_array_equal(np.cumsum(spikes, axis=0), expected)


def test_nearest_level_is_the_nearest_with_ties_to_the_lower_on_any_level_set():
    """Against numpy's searchsorted, on uniform, exponential and random level sets of 1 to 2^16 levels."""
    from spiking_dqn.quantization.levels import threshold_centered_levels, uniform_levels

    rng = np.random.default_rng(0)
    sets = [np.array([0.5], np.float32), uniform_levels(-1.0, 3.0, 1), uniform_levels(-2.0, 5.0, 16),
            threshold_centered_levels(-3.0, 4.0, 1.0, 8), threshold_centered_levels(-3.0, 4.0, 1.0, 16),
            np.unique(rng.normal(0, 2, 300).astype(np.float32))]
    for levels in sets:
        mids = (levels[:-1] + (levels[1:] - levels[:-1]) / 2).astype(np.float32)  # ties, where representable
        values = np.concatenate([levels, mids, rng.uniform(levels[0] - 1, levels[-1] + 1, 5000).astype(np.float32),
                                 np.array([np.nan, np.inf, -np.inf], np.float32)]).astype(np.float32)
        got = lif.nearest_levels(levels, values)
        idx = np.clip(np.searchsorted(levels, values, side="left"), 1, max(levels.size - 1, 1))
        lower, upper = levels[idx - 1], levels[min(idx.max(), levels.size - 1)] if levels.size == 1 else levels[idx]
        with np.errstate(invalid="ignore"):
            expected = np.where(values - lower <= upper - values, lower, upper)
            expected = np.where(values >= levels[-1], levels[-1], expected)
            expected = np.where(~(values > levels[0]), levels[0], expected)
        np.testing.assert_array_equal(got, expected.astype(np.float32))
