"""One threshold scaling: deploy, compare, the search and the float model give the same thresholds bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from spiking_dqn import HardwarePolicy
from spiking_dqn.fused import NeuronPlan
from spiking_dqn.hardware import ChipProgram
from spiking_dqn.layers import neuron_params
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.pipeline.steps import scale_hidden_thresholds
from spiking_dqn.search.grid import apply_multipliers
from spiking_dqn.semantics.thresholds import scale_threshold, scale_thresholds

SCALES = [1.1, 1 / 3, 1.7, 0.7000001]
THRESHOLDS = [0.3, 5.1, 0.1 + 0.2]


def program_with(hidden_threshold: float) -> ChipProgram:
    """A small program whose hidden populations have ``hidden_threshold`` (and neighbours of it)."""
    rng = np.random.default_rng(0)
    sizes = [4, 8, 6, 3]
    weights = [rng.integers(-20, 21, (n, m)).astype(np.int8) for m, n in zip(sizes[:-1], sizes[1:])]
    spread = np.float32(hidden_threshold) * np.float32([1.0, 1.3, 0.77, 2.9, 1.0, 3.3, 1.0, 0.51])
    return ChipProgram(
        weights=weights,
        thresholds=[spread, spread[:6].copy(), np.full(3, 4097.3, np.float32)],
        alpha_decay=[np.ones(n, np.float32) for n in sizes[1:]],
        i_offset=[np.zeros(n, np.float32) for n in sizes[1:]],
        obs_bound=np.ones(2, np.float32),
    )


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("scale", SCALES)
def test_every_route_scales_the_hidden_thresholds_alike(threshold, scale):
    program = program_with(threshold)
    expected = [np.float32(t) * np.float32(scale) for t in program.thresholds[:-1]]
    routes = {
        "floor": scale_thresholds(program.thresholds, scale),
        "deploy (fit_to_chip threshold_scale)": scale_hidden_thresholds(program, scale)[0].thresholds,
        "deploy, one per hidden layer": scale_hidden_thresholds(program, [scale, scale])[0].thresholds,
        "compare / HardwarePolicy": HardwarePolicy(program, threshold_scale=scale).running_program.thresholds,
        "search multipliers": apply_multipliers(program, program, [scale, scale]).thresholds,
    }
    for route, thresholds in routes.items():
        assert len(thresholds) == len(program.thresholds), route
        for got, want in zip(thresholds[:-1], expected):
            assert got.dtype == np.float32, route
            np.testing.assert_array_equal(got, want, err_msg=route)
        # the output integrator's threshold is never scaled
        np.testing.assert_array_equal(thresholds[-1], program.thresholds[-1], err_msg=route)


@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("scale", SCALES)
def test_the_float_model_scales_as_the_chip(threshold, scale):
    th.manual_seed(0)
    net = SpikingQNetwork(obs_bound=[1.0, 1.0], n_actions=3, net_arch=[8, 6], ticks=4, threshold=threshold)
    net.threshold_scale = scale
    chip = HardwarePolicy(program_with(threshold), threshold_scale=scale).running_program.thresholds
    plan = NeuronPlan.of(list(net.lif), net.synaptic_delay, net.threshold_scale)
    for k, neuron in enumerate(net.lif):
        want = np.float32(threshold) * np.float32(scale)
        assert np.float32(neuron_params(neuron, net.threshold_scale)[1]) == want
        assert plan.thresholds[k] == want
        assert chip[k][0] == want == scale_threshold(threshold, scale)


def test_a_wrong_number_of_layer_factors_is_refused():
    program = program_with(0.3)
    with pytest.raises(ValueError, match="hidden"):
        scale_thresholds(program.thresholds, [1.1, 1.2, 1.3])
