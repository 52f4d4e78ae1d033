"""The package picks torch's thread count once, without any environment setting, and keeps the user's.

Each case runs in a fresh interpreter with the thread variables removed from its
environment, because the decision is once per process and the test session itself sets
``OMP_NUM_THREADS``.
"""

from __future__ import annotations

import os
import subprocess
import sys


from spiking_dqn.threads import THREAD_VARIABLES, physical_cores

BUILD_POLICY = """
import torch as th
{before}
from stable_baselines3 import DQN
from spiking_dqn import SpikingDQNPolicy
from spiking_dqn.threads import torch_threads_choice
model = DQN(SpikingDQNPolicy, "CartPole-v1", policy_kwargs=dict(net_arch=[8], ticks=4), learning_starts=0)
{after}
print(th.get_num_threads())
print(torch_threads_choice())
"""


def _run(before: str = "", after: str = "", env: dict[str, str] | None = None) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    clean.update(env or {})
    out = subprocess.run(
        [sys.executable, "-c", BUILD_POLICY.format(before=before, after=after)],
        capture_output=True, text=True, env=clean, timeout=300, check=True,
    )
    lines = out.stdout.strip().splitlines()
    return int(lines[-2]), lines[-1]


def test_one_thread_without_any_setting():
    threads, choice = _run()
    assert threads == 1
    assert "chosen by spiking-dqn" in choice


def test_the_environment_variable_is_kept():
    # torch caps the variable at the cores it sees, so ask for all of them (not the package's 1).
    wanted = physical_cores()
    threads, choice = _run(env={"OMP_NUM_THREADS": str(wanted)})
    assert threads == wanted
    assert f"OMP_NUM_THREADS={wanted}" in choice


def test_a_count_the_user_set_before_is_kept():
    wanted = physical_cores() + 1
    threads, choice = _run(before=f"th.set_num_threads({wanted})")
    assert threads == wanted
    assert "set by the user" in choice


def test_a_count_the_user_sets_after_the_first_model_is_kept():
    threads, _ = _run(after="th.set_num_threads(3)\nDQN(SpikingDQNPolicy, 'CartPole-v1', policy_kwargs=dict(net_arch=[8], ticks=4))")
    assert threads == 3


def test_physical_cores_is_torchs_default():
    # torch's own default in a fresh interpreter with no variable set is one thread per physical core.
    clean = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         capture_output=True, text=True, env=clean, timeout=120, check=True)
    assert int(out.stdout) == physical_cores()
