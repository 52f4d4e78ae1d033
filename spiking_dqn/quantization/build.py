"""Building the chip program of a float spiking Q-network on its grid."""

from __future__ import annotations

import copy

import numpy as np
import torch as th

from spiking_dqn.grid import Grid
from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.quantization.digest import model_digest
from spiking_dqn.quantization.lambdas import (
    OUTPUT_THRESHOLD,
    LambdaSpec,
    WeightBitsSpec,
    center_readout,
    float_weights,
    resolve_grid,
)
from spiking_dqn.quantization.report import QuantizationReport, quantization_report


def quantize_network(
    net: SpikingQNetwork,
    lam: LambdaSpec | Grid = None,
    seed: int = 0,
    centered: bool = True,
    weight_bits: WeightBitsSpec = None,
) -> tuple[ChipProgram, QuantizationReport]:
    """Build the chip program of a float spiking Q-network.

    Projection ``k`` gets its weights on the grid, ``clip(rint(lambda_k * W_k), -L_k, L_k)``
    (:meth:`Grid.integers <spiking_dqn.grid.Grid.integers>`, ``L_k`` of its width),
    in its ``(n_post, n_pre)`` layout; the population it feeds gets ``i_offset = lambda_k * b_k`` (float32, not
    rounded) and, for a hidden layer, ``threshold = lambda_k * threshold`` and
    ``alpha_decay = beta`` of that layer. The output population integrates: threshold
    ``OUTPUT_THRESHOLD``, ``alpha_decay`` 1. Reset, ticks, delay, encoder bounds and
    encoding mode come from the network; so do its membrane state levels (times the
    population's lambda, the output's float32) and its tick gains. The program records
    the network's :func:`~spiking_dqn.quantization.digest.model_digest`.

    :param net: the float network
    :param lam: lambda specification (see :func:`resolve_grid`), or a :class:`Grid`
    :param seed: seed of the Poisson encoder on the chip
    :param centered: deploy the centred readout (:func:`center_readout`, default): the
        chip's output voltages are ``lambda * (Q - mean Q)``, same greedy action (the
        network's own grid or a given :class:`Grid` decides instead, when used)
    :param weight_bits: bits per weight, 2..8, one for every projection or one per projection
        (see :func:`resolve_grid`; ``None``: the network's own grid's, else 8); with a given
        :class:`Grid`, only a value equal to its widths is accepted
    :return: the chip program and the quantization report (a ``UserWarning`` is issued for
        every layer that clips more than ``CLIP_WARN_FRACTION`` of its weights, except with
        ``lam="mse"``, whose clipping is chosen)
    """
    grid = resolve_grid(net, lam, centered, weight_bits=weight_bits)
    grid.check_fits(len(net.linear_layers()))
    digest = model_digest(net)
    if grid.centered_readout:
        net = center_readout(net)
    as_deployed = Grid(grid.lambdas, centered_readout=False, weight_bits=grid.weight_bits)  # already centred
    # The "mse" rule clips on purpose (its lambdas minimise the error clipping included): no clipping warning.
    report = quantization_report(net, as_deployed, warn=not (isinstance(lam, str) and lam == "mse"))
    weights = as_deployed.integers(float_weights(net))
    thresholds, alphas, offsets = [], [], []
    for k, (layer, lam_k) in enumerate(zip(net.linear_layers(), grid.lambdas)):
        w = weights[k]
        bias = layer.bias.detach().cpu().numpy().astype(np.float64) if layer.bias is not None else np.zeros(w.shape[0])
        offsets.append((lam_k * bias).astype(np.float32))
        n = w.shape[0]
        if k < len(net.lif):
            neuron = net.lif[k]
            thresholds.append(np.full(n, lam_k * float(neuron.threshold), dtype=np.float32))
            alphas.append(np.full(n, float(th.as_tensor(neuron.beta).clamp(0, 1)), dtype=np.float32))
        else:
            thresholds.append(np.full(n, OUTPUT_THRESHOLD, dtype=np.float32))
            alphas.append(np.ones(n, dtype=np.float32))
    # Membrane levels (SQUAT) scale with the population's lambda, as its threshold does;
    # tick gains (TaWQ) multiply integer synaptic sums on the chip as float ones here.
    levels = net.state_levels
    state_levels = None
    if levels is not None:
        state_levels = [
            None if lv is None else (lam_k * lv.astype(np.float64)).astype(np.float32)
            for lv, lam_k in zip(levels, grid.lambdas)
        ] + [None]
    tick_gain = None if net.tick_gain is None else list(net.tick_gain.detach().cpu().numpy().astype(np.float32))
    program = ChipProgram(
        weights=weights,
        thresholds=thresholds,
        alpha_decay=alphas,
        i_offset=offsets,
        obs_bound=net.encoder.bound.detach().cpu().numpy().astype(np.float32),
        reset=net.reset,
        v_reset=0.0,
        ticks=net.ticks,
        delay=net.synaptic_delay,
        encoding=net.encoder.mode,
        encoding_alpha=net.encoder.alpha,
        seed=seed,
        lambdas=list(grid.lambdas),
        centered_readout=grid.centered_readout,
        weight_bits=list(grid.weight_bits),
        state_levels=state_levels,
        tick_gain=tick_gain,
        model_digest=digest,
    )
    return program, report


def fake_quantize_network(
    net: SpikingQNetwork, lam: LambdaSpec | Grid = None, centered: bool = True, weight_bits: WeightBitsSpec = None
) -> SpikingQNetwork:
    """A copy of the network whose weights are the chip's, back in float units.

    Every linear weight is replaced by ``w_q / lambda_k`` (in float64, then float32);
    biases, thresholds and decays are unchanged. This float model computes what the chip
    (emulator) computes, in units divided by lambda: its Q-values equal the emulator's
    output voltages over ``lambda_out``.

    :param net: the float network (left untouched)
    :param lam: lambda specification (see :func:`resolve_grid`), or a :class:`Grid`
    :param centered: start from the centred readout, as :func:`quantize_network` does
    :param weight_bits: bits per weight, as in :func:`quantize_network`
    """
    grid = resolve_grid(net, lam, centered, weight_bits=weight_bits)
    if grid.centered_readout:
        net = center_readout(net)
    fake = copy.deepcopy(net)
    integers = Grid(grid.lambdas, centered_readout=False, weight_bits=grid.weight_bits).integers(float_weights(net))
    with th.no_grad():
        for layer, w_q, lam_k in zip(fake.linear_layers(), integers, grid.lambdas):
            w_fq = (w_q.astype(np.float64) / lam_k).astype(np.float32)
            layer.weight.copy_(th.as_tensor(w_fq, device=layer.weight.device))
    return fake
