"""Signed two-neuron rate encoding of observations into spike trains.

An observation ``obs`` of dimension ``d`` is normalised to ``x = clip(obs / bound, -1, 1)``
and split into ``2d`` non-negative rates ``r = concat(max(x, 0), max(-x, 0))``. Each rate
then drives one input neuron for ``ticks`` simulation ticks:

* ``"deterministic"``: the neuron adds its rate to an accumulator every tick and spikes
  when the accumulator reaches 1, then subtracts 1. After ``t + 1`` ticks it has emitted
  exactly ``floor((t + 1) * r)`` spikes, which is how the train is computed here (in
  float64, so the numpy reference, the torch encoder (accelerators) and the compiled
  kernel used on the CPU by the network and the chip emulator
  produce the same trains).
* ``"poisson"``: an independent Bernoulli(r) draw per neuron and tick, from a seeded
  generator.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch as th
from torch import nn

from spiking_dqn.kernels import encode_deterministic

EncodingMode = Literal["deterministic", "poisson"]
ENCODING_MODES: tuple[str, ...] = ("deterministic", "poisson")

# Guards the floor against float64 representation error of values such as 0.7 * 10.
_FLOOR_EPS = 1e-9


def check_observations(obs: np.ndarray | th.Tensor, obs_dim: int) -> None:
    """Raise a clear error for a batch of observations the encoder cannot take.

    :param obs: observations, shape ``(batch, obs_dim)``
    :param obs_dim: the expected observation dimension
    :raises ValueError: wrong shape, or a NaN / infinite entry (the dimension is named)
    """
    if obs.ndim != 2 or obs.shape[1] != obs_dim:
        raise ValueError(
            f"expected observations of shape (batch, {obs_dim}), got {tuple(obs.shape)}"
        )
    finite = th.isfinite(obs) if isinstance(obs, th.Tensor) else np.isfinite(obs)
    if not bool(finite.all()):
        bad = ~finite
        dims = bad.any(0).nonzero()
        dims = [int(i) for i in (dims[0] if isinstance(dims, tuple) else dims.flatten())]
        raise ValueError(
            f"observation contains NaN or infinite values in dimension(s) {dims}; "
            "the spike encoder needs finite observations"
        )


def signed_rates_numpy(obs: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """Signed two-neuron rates of a batch of observations (numpy reference).

    :param obs: observations, shape ``(batch, d)``
    :param bound: positive per-dimension bounds, shape ``(d,)``
    :return: rates in [0, 1], shape ``(batch, 2d)``, float64
    """
    x = np.clip(np.asarray(obs, dtype=np.float64) / np.asarray(bound, dtype=np.float64), -1.0, 1.0)
    return np.concatenate([np.maximum(x, 0.0), np.maximum(-x, 0.0)], axis=1)


def deterministic_spikes_numpy(rates: np.ndarray, ticks: int) -> np.ndarray:
    """Deterministic accumulator spike trains (numpy reference).

    :param rates: rates in [0, 1], shape ``(batch, n)``
    :param ticks: number of ticks ``T``
    :return: spikes, shape ``(T, batch, n)``, float32 of 0/1
    """
    t = np.arange(ticks + 1, dtype=np.float64)[:, None, None]
    counts = np.floor(t * rates[None] + _FLOOR_EPS)
    return np.diff(counts, axis=0).astype(np.float32)


def deterministic_spikes_torch(rates: th.Tensor, ticks: int) -> th.Tensor:
    """:func:`deterministic_spikes_numpy` in torch, for rates on an accelerator."""
    t = th.arange(ticks + 1, dtype=th.float64, device=rates.device)[:, None, None]
    counts = th.floor(t * rates.to(th.float64)[None] + _FLOOR_EPS)
    return th.diff(counts, dim=0).to(th.float32)


class SignedRateEncoder(nn.Module):
    """Observation -> signed two-neuron rates -> spike trains over ``ticks``.

    :param bound: positive finite per-dimension bounds, shape ``(d,)``
    :param ticks: number of simulation ticks ``T`` (>= 1)
    :param mode: ``"deterministic"`` (default) or ``"poisson"``
    :param seed: seed of the Poisson generator (ignored for deterministic trains)
    """

    def __init__(
        self,
        bound: np.ndarray | list[float],
        ticks: int,
        mode: EncodingMode = "deterministic",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        bound_arr = np.asarray(bound, dtype=np.float32)
        if bound_arr.ndim != 1 or bound_arr.size == 0:
            raise ValueError(f"bound must be a non-empty 1-D array, got shape {bound_arr.shape}")
        if not np.all(np.isfinite(bound_arr)) or np.any(bound_arr <= 0):
            raise ValueError(f"bound must be finite and positive in every dimension, got {bound_arr}")
        if not isinstance(ticks, (int, np.integer)) or isinstance(ticks, bool) or ticks < 1:
            raise ValueError(f"ticks must be a positive integer, got {ticks!r}")
        if mode not in ENCODING_MODES:
            raise ValueError(f"encoding mode must be one of {ENCODING_MODES}, got {mode!r}")
        self.ticks = int(ticks)
        self.mode: EncodingMode = mode
        self.seed = seed
        self.obs_dim = int(bound_arr.size)
        # Persistent, so a saved model keeps the bounds it was trained with even if the
        # bounds registry that resolved them changes later.
        self.register_buffer("bound", th.as_tensor(bound_arr))
        self._generator: th.Generator | None = None

    @property
    def n_inputs(self) -> int:
        """Number of input neurons (``2d``)."""
        return 2 * self.obs_dim

    def rates(self, obs: th.Tensor) -> th.Tensor:
        """Signed rates of a batch, shape ``(batch, 2d)``, validated."""
        check_observations(obs, self.obs_dim)
        x = th.clamp(obs.to(th.float64) / self.bound.to(th.float64), -1.0, 1.0)
        return th.cat([x.clamp(min=0.0), (-x).clamp(min=0.0)], dim=1)

    def forward(self, obs: th.Tensor) -> th.Tensor:
        """Encode observations of shape ``(batch, d)`` into spikes ``(T, batch, 2d)`` float32."""
        if self.mode == "deterministic" and obs.device.type == "cpu":
            # One compiled pass (same trains as the numpy reference, tested).
            obs_np = obs.detach().numpy()
            check_observations(obs_np, self.obs_dim)
            return th.from_numpy(encode_deterministic(obs_np, self.bound.numpy(), self.ticks))
        rates = self.rates(obs)
        if self.mode == "deterministic":
            return deterministic_spikes_torch(rates, self.ticks)
        if self._generator is None or self._generator.device != rates.device:
            self._generator = th.Generator(device=rates.device)
            if self.seed is not None:
                self._generator.manual_seed(int(self.seed))
            else:
                self._generator.seed()
        draws = th.rand((self.ticks, *rates.shape), generator=self._generator, device=rates.device)
        return (draws < rates[None].to(th.float32)).to(th.float32)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):  # type: ignore[no-untyped-def]
        # Files written before the bounds were saved lack them: keep the bounds resolved at
        # construction, as those files always did.
        key = prefix + "bound"
        saved = key in state_dict
        if saved and state_dict[key].shape != self.bound.shape:
            raise ValueError(
                f"saved encoder bounds have shape {tuple(state_dict[key].shape)}, this encoder {tuple(self.bound.shape)}"
            )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        if not saved and key in missing_keys:
            missing_keys.remove(key)

    def extra_repr(self) -> str:
        return f"obs_dim={self.obs_dim}, ticks={self.ticks}, mode={self.mode!r}"
