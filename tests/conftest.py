"""Shared fixtures. Tests run on the CPU with one torch thread (small tensors are fastest so)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch as th

th.set_num_threads(1)

CARTPOLE_BOUND = [2.4, 1.5, 0.2095, 2.0]


@pytest.fixture
def small_net():
    """A small random spiking Q-network whose hidden neurons do spike."""
    from spiking_dqn import SpikingQNetwork

    th.manual_seed(0)
    return SpikingQNetwork(CARTPOLE_BOUND, 2, net_arch=[16, 8], ticks=10, threshold=0.5)
