"""Signed two-neuron rate encoding of observations into spike trains, in torch.

:class:`SignedRateEncoder` is the network's input layer. The code itself (``x = clip(obs
/ bound, -1, 1)``, rates ``concat(max(x, 0), max(-x, 0))``, deterministic accumulator
trains ``floor((t + 1) * r)`` in float64, or seeded Bernoulli draws) and its numpy side
(observation checks, rates, reference trains, the compiled encoder) are the floor's
:mod:`spiking_dqn.semantics.encoding`, which the chip backends use too. On the CPU,
deterministic trains come from the compiled kernel; on an accelerator from
:func:`deterministic_spikes_torch`; both give the numpy reference's trains (tested).
"""

from __future__ import annotations

import numpy as np
import torch as th
from torch import nn

from spiking_dqn.semantics.checks import check_int
from spiking_dqn.semantics.encoding import (
    ENCODING_MODES,
    FLOOR_EPS,
    EncodingMode,
    check_observations,
    encode_deterministic,
    hybrid_rates,
)

__all__ = ["SignedRateEncoder", "deterministic_spikes_torch"]


def deterministic_spikes_torch(rates: th.Tensor, ticks: int) -> th.Tensor:
    """:func:`~spiking_dqn.semantics.encoding.deterministic_spikes_numpy` in torch, for rates on an accelerator.

    :param rates: rates in [0, 1], shape ``(batch, n)``
    :param ticks: number of ticks ``T``
    :return: spikes, shape ``(T, batch, n)``, float32 of 0/1
    """
    t = th.arange(ticks + 1, dtype=th.float64, device=rates.device)[:, None, None]
    counts = th.floor(t * rates.to(th.float64)[None] + FLOOR_EPS)
    return th.diff(counts, dim=0).to(th.float32)


class SignedRateEncoder(nn.Module):
    """Observation -> signed two-neuron rates -> spike trains over ``ticks``.

    :param bound: positive finite per-dimension bounds, shape ``(d,)``
    :param ticks: number of simulation ticks ``T`` (>= 1)
    :param mode: ``"deterministic"`` (default), ``"poisson"`` or ``"hybrid"`` (the deterministic
        code with thresholds ``1 - alpha * r``, see :func:`spiking_dqn.semantics.encoding.hybrid_rate`)
    :param seed: seed of the Poisson generator (ignored for deterministic trains)
    :param alpha: hybrid coding's threshold slope, in [0, 1) (used only by ``"hybrid"``)
    """

    def __init__(
        self,
        bound: np.ndarray | list[float],
        ticks: int,
        mode: EncodingMode = "deterministic",
        seed: int | None = None,
        alpha: float = 0.0,
    ) -> None:
        super().__init__()
        bound_arr = np.asarray(bound, dtype=np.float32)
        if bound_arr.ndim != 1 or bound_arr.size == 0:
            raise ValueError(f"bound must be a non-empty 1-D array, got shape {bound_arr.shape}")
        if not np.all(np.isfinite(bound_arr)) or np.any(bound_arr <= 0):
            raise ValueError(f"bound must be finite and positive in every dimension, got {bound_arr}")
        check_int(ticks, "ticks", minimum=1)
        if mode not in ENCODING_MODES:
            raise ValueError(f"encoding mode must be one of {ENCODING_MODES}, got {mode!r}")
        if isinstance(alpha, bool) or not np.isfinite(alpha) or not 0.0 <= float(alpha) < 1.0:
            raise ValueError(f"encoding_alpha (hybrid coding) must be in [0, 1), got {alpha!r}")
        #: Threshold slope of the trains: ``alpha`` for ``"hybrid"``, 0 otherwise.
        self.alpha = float(alpha) if mode == "hybrid" else 0.0
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
        """Signed rates of a batch, shape ``(batch, 2d)``, validated.

        :param obs: observations ``(batch, d)``
        """
        check_observations(obs, self.obs_dim, finite=th.isfinite(obs))
        x = th.clamp(obs.to(th.float64) / self.bound.to(th.float64), -1.0, 1.0)
        return th.cat([x.clamp(min=0.0), (-x).clamp(min=0.0)], dim=1)

    def forward(self, obs: th.Tensor) -> th.Tensor:
        """Encode observations into spikes ``(T, batch, 2d)`` float32.

        :param obs: observations ``(batch, d)``
        """
        deterministic = self.mode in ("deterministic", "hybrid")
        if deterministic and obs.device.type == "cpu":
            # One compiled pass (same trains as the numpy reference, tested).
            obs_np = obs.detach().numpy()
            if obs_np.ndim != 2 or obs_np.shape[1] != self.obs_dim:
                check_observations(obs_np, self.obs_dim)  # raises the shape error
            spikes, finite = encode_deterministic(obs_np, self._buffers["bound"].numpy(), self.ticks, self.alpha)
            if not finite:
                check_observations(obs_np, self.obs_dim)  # raises, naming the dimensions
            return th.from_numpy(spikes)
        rates = self.rates(obs)
        if self.alpha > 0.0:
            # Only on an accelerator (the CPU takes the compiled pass above): the rule's float64 numpy home.
            rates = th.from_numpy(hybrid_rates(rates.cpu().numpy(), self.alpha)).to(rates.device)
        if deterministic:
            return deterministic_spikes_torch(rates, self.ticks)
        if self._generator is None or self._generator.device != rates.device:
            self._generator = th.Generator(device=rates.device)
            if self.seed is not None:
                self._generator.manual_seed(int(self.seed))
            else:
                self._generator.seed()
        draws = th.rand((self.ticks, *rates.shape), generator=self._generator, device=rates.device)
        return (draws < rates[None].to(th.float32)).to(th.float32)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):  # type: ignore[no-untyped-def]
        # Files written before the bounds were saved lack them: keep the bounds resolved at
        # construction, as those files always did.
        key = prefix + "bound"
        saved = key in state_dict
        if saved and state_dict[key].shape != self.bound.shape:
            raise ValueError(
                f"saved encoder bounds have shape {tuple(state_dict[key].shape)}, this encoder {tuple(self.bound.shape)}"
            )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if not saved and key in missing_keys:
            missing_keys.remove(key)

    def extra_repr(self) -> str:
        return f"obs_dim={self.obs_dim}, ticks={self.ticks}, mode={self.mode!r}"
