from fractions import Fraction

import numpy as np
import pytest
import torch as th

from spiking_dqn import SignedRateEncoder
from spiking_dqn.encoding import deterministic_spikes_torch
from spiking_dqn.semantics.encoding import deterministic_spikes_numpy, encode_deterministic, hybrid_rates, signed_rates_numpy


def accumulator_reference(rate: Fraction, ticks: int) -> list[int]:
    """The accumulate-and-subtract rule of DESIGN.md, in exact rational arithmetic."""
    acc, out = Fraction(0), []
    for _ in range(ticks):
        acc += rate
        if acc >= 1:
            out.append(1)
            acc -= 1
        else:
            out.append(0)
    return out


def test_signed_two_neuron_rates():
    enc = SignedRateEncoder([2.0, 4.0], ticks=5)
    obs = th.tensor([[1.0, -2.0], [-3.0, 8.0]])
    rates = enc.rates(obs)
    expected = th.tensor([[0.5, 0.0, 0.0, 0.5], [0.0, 1.0, 1.0, 0.0]], dtype=th.float64)
    assert th.equal(rates, expected)
    assert enc.n_inputs == 4


@pytest.mark.parametrize("ticks", [1, 7, 10, 20])
def test_deterministic_counts_are_floor_of_rate_times_ticks(ticks):
    # Rates that are exact multiples of 1/ticks are the edge cases of the floor.
    values = np.concatenate([np.arange(ticks + 1) / ticks, np.linspace(0, 1, 37)])
    obs = th.tensor(np.stack([values, -values], axis=1), dtype=th.float32)
    enc = SignedRateEncoder([1.0, 1.0], ticks=ticks)
    spikes = enc(obs)
    assert spikes.shape == (ticks, len(values), 4)
    counts = spikes.sum(0).numpy()
    rates = enc.rates(obs).numpy()
    assert np.array_equal(counts, np.floor(rates * ticks + 1e-9))
    # Positive observations drive the first d neurons, negative ones the last d.
    assert np.array_equal(counts[:, 0], counts[:, 3]) and np.all(counts[:, 1] == 0) and np.all(counts[:, 2] == 0)


def test_deterministic_trains_follow_the_accumulator_rule():
    ticks = 10
    rates = [Fraction(k, 20) for k in range(21)] + [Fraction(1, 3), Fraction(7, 10), Fraction(2, 7)]
    obs = th.tensor([[float(r)] for r in rates], dtype=th.float32)
    spikes = SignedRateEncoder([1.0], ticks=ticks)(obs)[:, :, 0].T.numpy()
    for rate, train in zip(rates, spikes):
        # float32 observations carry the rate approximately; compare with the float's exact value
        exact = Fraction(float(np.float32(float(rate))))
        assert train.tolist() == accumulator_reference(min(exact, Fraction(1)), ticks), rate


def test_torch_and_numpy_encoders_agree():
    # The numpy reference, the torch version (accelerators) and the compiled kernel (CPU).
    rng = np.random.default_rng(0)
    obs = rng.uniform(-3, 3, size=(500, 4)).astype(np.float32)
    bound = np.array([2.4, 1.5, 0.2095, 2.0], dtype=np.float32)
    enc = SignedRateEncoder(bound, ticks=10)
    torch_spikes = deterministic_spikes_torch(enc.rates(th.as_tensor(obs)), 10).numpy()
    numpy_spikes = deterministic_spikes_numpy(signed_rates_numpy(obs, bound), 10)
    assert np.array_equal(torch_spikes, numpy_spikes)
    # On CPU the encoder runs the compiled kernel: the same trains again.
    assert np.array_equal(enc(th.as_tensor(obs)).numpy(), numpy_spikes)
    assert np.array_equal(enc(th.as_tensor(obs, dtype=th.float64)).numpy(), numpy_spikes)


def test_poisson_is_seeded_and_has_the_right_rate():
    obs = th.full((2000, 1), 0.3)
    a = SignedRateEncoder([1.0], ticks=10, mode="poisson", seed=3)(obs)
    b = SignedRateEncoder([1.0], ticks=10, mode="poisson", seed=3)(obs)
    assert th.equal(a, b)
    assert abs(a[:, :, 0].mean().item() - 0.3) < 0.01
    assert a[:, :, 1].sum() == 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_observation_names_the_dimension(bad):
    enc = SignedRateEncoder([1.0, 1.0, 1.0], ticks=4)
    obs = th.zeros(3, 3)
    obs[1, 2] = bad
    with pytest.raises(ValueError, match=r"dimension\(s\) \[2\]"):
        enc(obs)


def test_wrong_shape_is_a_clear_error():
    enc = SignedRateEncoder([1.0, 1.0, 1.0], ticks=4)
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        enc(th.zeros(2, 4))


@pytest.mark.parametrize(
    "kwargs",
    [dict(ticks=0), dict(ticks=2.5), dict(ticks=4, mode="burst"), dict(ticks=4, bound=[1.0, 0.0]), dict(ticks=4, bound=[np.inf])],
)
def test_invalid_encoder_arguments(kwargs):
    bound = kwargs.pop("bound", [1.0, 1.0])
    with pytest.raises(ValueError):
        SignedRateEncoder(bound, **kwargs)


@pytest.mark.parametrize("alpha", [0.5, 0.3, 0.9, 1 / 3])
def test_the_hybrid_rate_has_one_home_and_the_formula_s_bits(alpha):
    # hybrid_rates (the accelerator path's numpy home) and the compiled encoder give the
    # float64 bits of min(1, r / (1 - alpha * r)) computed elementwise.
    rates = np.concatenate([np.random.default_rng(0).uniform(0, 1, 5000), [0.0, 1.0, 0.5, 1 / 3, 0.7]])
    formula = th.clamp(th.from_numpy(rates) / (1.0 - alpha * th.from_numpy(rates)), max=1.0).numpy()
    np.testing.assert_array_equal(hybrid_rates(rates, alpha), formula)
    obs = rates[:, None]  # bound 1: the rate is the observation itself
    spikes, finite = encode_deterministic(obs, np.ones(1), 20, alpha)
    assert finite
    np.testing.assert_array_equal(spikes[:, :, :1], deterministic_spikes_numpy(formula[:, None], 20))

