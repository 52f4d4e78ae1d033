"""The chip's LIF neuron in torch: :class:`ChipLeaky`, its tick update, and the surrogate spike functions.

Timing follows the SpiNNaker2 ``lif_no_delay`` semantics: per tick
``v = beta * v + (W s + b)``, spike when ``v > threshold``, then reset at once (by
subtraction or to zero). :func:`lif_tick_torch` is the one torch home of that update
(:class:`ChipLeaky`, the accelerator scan of :mod:`spiking_dqn.layers` and the tick-gain
forward call it); the compiled CPU twin is :mod:`spiking_dqn.semantics.lif`.
"""

from __future__ import annotations

from collections.abc import Callable

import snntorch as snn
import torch as th
from snntorch import surrogate
from snntorch._neurons.neurons import SpikingNeuron

from spiking_dqn.semantics import lif
from spiking_dqn.semantics.lif import ResetMode

SpikeFunction = Callable[[th.Tensor], th.Tensor]
"""A spike function with a surrogate gradient: ``H(x)`` forward, as snnTorch's surrogates."""

# snnTorch's ``sigmoid`` surrogate is left out: its backward computes exp(-slope * x) and
# overflows to NaN for membranes a few units below threshold, which happens in training.
SURROGATES: dict[str, Callable[[], SpikeFunction]] = {
    "atan": surrogate.atan,
    "fast_sigmoid": surrogate.fast_sigmoid,
    "triangular": surrogate.triangular,
    "straight_through": surrogate.straight_through_estimator,
}


def make_surrogate(spec: str | SpikeFunction) -> SpikeFunction:
    """snnTorch surrogate spike function from a name (see ``SURROGATES``) or a callable.

    :param spec: a name from ``SURROGATES`` (built with its default parameter) or a spike function
    """
    if callable(spec):
        return spec
    if spec not in SURROGATES:
        raise ValueError(f"unknown surrogate {spec!r}; choose one of {sorted(SURROGATES)} or pass a callable")
    return SURROGATES[spec]()


def surrogate_code(spec: str | SpikeFunction) -> tuple[int, float] | None:
    """``(code, parameter)`` of a named surrogate among the closed-form derivatives of
    :mod:`spiking_dqn.semantics.lif`, or ``None`` for a callable (autograd evaluates it).

    :param spec: a name from ``SURROGATES`` or a spike function
    """
    if isinstance(spec, str):
        return lif.SURROGATE_CODES[spec], lif.SURROGATE_DEFAULTS[spec]
    return None


class ChipLeaky(snn.Leaky):
    """First-order leaky integrate-and-fire neuron with the chip's same-tick reset and no hidden state.

    An snnTorch ``Leaky`` whose reset acts in the tick of the spike, as on SpiNNaker2
    (snnTorch's own ``Leaky`` applies it in the next tick's update, scaled by ``beta`` there).
    The membrane after the input of tick :math:`t` is

    .. math::

            M[t] = βU[t-1] + I_{\\rm in}[t]

    the spike is :math:`S[t] = H(M[t] - U_{\\rm thr})` (strictly above the threshold; the
    surrogate ``spike_grad`` in the backward), and the membrane carried to the next tick is

    .. math::

            U[t] = M[t] - S[t] U_{\\rm thr} \\quad \\text{(subtract)}, \\qquad
            U[t] = (1 - S[t]) M[t] \\quad \\text{(zero)}

    with :math:`U[-1] = 0`. As in snnTorch, the reset term is detached from the graph.

    * :math:`I_{\\rm in}` - input current (``W s + b`` of the arriving spikes)
    * :math:`U` - membrane potential
    * :math:`U_{\\rm thr}` - threshold
    * :math:`β` - membrane decay (the chip's ``alpha_decay``)

    The membrane is passed in and returned, never stored on the module, so a network keeps
    no state between calls. A network runs whole layers with :func:`spiking_layer`, which
    computes this update for all ticks at once.

    Example::

        import torch as th
        from snntorch import surrogate
        from spiking_dqn.neuron import ChipLeaky

        lif = ChipLeaky(beta=0.5, threshold=1.0, spike_grad=surrogate.atan(), reset_mechanism="subtract")
        mem = th.zeros(1, 1)
        for current in [1.5, 0.2, 2.6]:
            spk, mem = lif(th.tensor([[current]]), mem)
        # spikes 1, 0, 1; membranes after reset 0.5, 0.45, 1.825

    :param beta: membrane decay, in [0, 1]
    :param threshold: firing threshold (> 0)
    :param spike_grad: surrogate spike function (see :func:`make_surrogate`)
    :param reset_mechanism: ``"subtract"`` (the threshold) or ``"zero"``
    :param surrogate_code: ``(code, parameter)`` of ``spike_grad`` among the closed-form
        surrogate derivatives of :mod:`spiking_dqn.semantics.lif`, when it is one of them (the
        compiled backward then evaluates it, see :func:`surrogate_code`); ``None`` for any
        other surrogate (autograd evaluates it)
    """

    def __init__(
        self,
        beta: float,
        threshold: float,
        spike_grad: SpikeFunction,
        reset_mechanism: ResetMode,
        surrogate_code: tuple[int, float] | None = None,
    ) -> None:
        super().__init__(beta=beta, threshold=threshold, spike_grad=spike_grad, reset_mechanism=reset_mechanism)
        self.surrogate_code = surrogate_code or (lif.SURROGATE_NONE, 0.0)
        # snnTorch keeps every neuron ever built in a class-level list (for its global
        # reset helpers, which this package does not use); drop ours so it can be freed.
        SpikingNeuron.instances.remove(self)

    def forward(self, input_: th.Tensor, mem: th.Tensor) -> tuple[th.Tensor, th.Tensor]:  # type: ignore[override]
        """One tick: spikes and the membrane after reset.

        :param input_: input current of this tick ``(batch, n)``
        :param mem: membrane after the previous tick ``(batch, n)`` (zeros before the first)
        """
        subtract = bool(self.reset_mechanism_val == 0)
        _, spk, mem = lif_tick_torch(mem, input_, self.beta, self.threshold, subtract, self.fire)
        return spk, mem


def lif_tick_torch(
    mem: th.Tensor,
    current: th.Tensor,
    beta: float | th.Tensor,
    threshold: float | th.Tensor,
    subtract: bool,
    fire: Callable[[th.Tensor], th.Tensor],
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """One tick of a layer of LIF neurons in torch, the one torch home of the update.

    ``m = beta * mem + current`` (two ops, no fused multiply-add: the compiled kernels'
    float32 result); ``spike = fire(m)``; the kept membrane is ``m - spike * threshold``
    (``subtract``) or ``m * (1 - spike)``, the spike detached in the reset as in snnTorch.
    The compiled CPU twin is :func:`spiking_dqn.semantics.lif.lif_forward`'s loop body.

    :param mem: the membrane after the previous tick
    :param current: this tick's synaptic current (bias included)
    :param beta: membrane decay
    :param threshold: firing threshold
    :param subtract: reset by subtracting the threshold (else to zero)
    :param fire: the spike function of the pre-reset membrane (a surrogate's
        ``spike_grad(m - threshold)``, or a hard ``m > threshold``)
    :return: the pre-reset membrane, the spikes and the kept membrane
    """
    pre = beta * mem + current
    spike = fire(pre)
    kept = pre - spike.detach() * threshold if subtract else pre * (1.0 - spike.detach())
    return pre, spike, kept
