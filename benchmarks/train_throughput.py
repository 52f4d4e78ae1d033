"""Training throughput: SB3's own MlpPolicy DQN vs SpikingDQNPolicy on the CartPole, Acrobot and LunarLander recipes.

Each recipe runs with the hyperparameters of its ``agents/`` recipe (``zoo_configs/dqn.yml``)
and the same ``net_arch`` for both policies; the spiking CartPole policy runs 10 ticks
(the reference configuration and the recipe's; ``--cartpole-ticks`` changes it).

* **Throughput.** The models (four per recipe, ``CONFIGS``) train in alternating rounds (``--rounds``; each round
  continues every model for its recipe's ``--*-steps`` env steps), so that a change in
  machine load affects all alike. Reported: env-steps per second (median over rounds)
  and the spiking / MLP ratio per round and its median.
* **Breakdown.** One more, instrumented round per model splits the wall time per env
  step into acting (the Q-network's forwards for ``predict``), online forward, backward,
  target forward, optimizer (gradient clipping and ``step``) and the rest (SB3 and the
  environment); then the time of one batch-1 ``model.predict``.
* **Dense-arithmetic bound.** The FLOPs of one training step of the spiking network
  (online forward and backward, target forward, all ``T x batch`` rows, as dense matrix
  products) divided by this machine's single-thread float32 matrix-product rate,
  measured in the same run on the recipe's largest layer shape. The spiking network's
  measured time per training step against it says how far it is from the dense bound
  (below the bound: sparsity pays). Issue 26 asks at most 1.5x the bound of the LunarLander
  recipe (``BOUND_TARGETS``), the largest network, whose training step decides the cost of a
  tuning trial.
* **Layer kernels.** For each hidden layer of each recipe, at the spike densities of the
  trained run: the event-driven forward kernel against the per-layer path it replaced
  (one dense BLAS product, then the compiled tick loop), and the event-driven weight
  gradient against its dense product.

    python benchmarks/train_throughput.py --rounds 9 --update-docs

writes ``benchmarks/results/train_throughput.json`` and its tables,
``train_throughput.md`` (``docs/benchmarks.md``'s, between ``<!-- train-throughput:begin/end -->``
with ``--update-docs``; the "before" column is ``train_throughput_before.json``, the
same script on the implementation before the fused CPU pass). Nothing here is a
pass/fail test.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, before numpy and torch load their BLAS

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import fields  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch as th  # noqa: E402
from stable_baselines3 import DQN  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from docs_pages import update_page  # noqa: E402
from train_throughput_tables import RECIPE, markdown, print_summary  # noqa: E402
from spiking_dqn import SpikingDQN, SpikingDQNPolicy, fused  # noqa: E402
from spiking_dqn.recipes.hyperparams import load_hyperparams  # noqa: E402
from spiking_dqn.recipes.versions import machine_line  # noqa: E402
from spiking_dqn.config import SpikingConfig  # noqa: E402
from spiking_dqn.semantics import lif, network_kernels  # noqa: E402

RECIPES = ("CartPole-v0", "Acrobot-v1", "LunarLander-v3")
#: The configurations timed per recipe: (name, algorithm, policy, extra policy_kwargs). The
#: spiking recipe's is ``SpikingDQN`` (the compiled gradient step); SB3's ``DQN`` with the same
#: policy (autograd through the fused network node) is timed alongside. The MLP runs as SB3
#: builds it (the reference of the target) and with the multi-tensor Adam that ``SpikingDQN``
#: uses (``foreach=True``), to show what that part of the speed-up is worth to the MLP too.
CONFIGS = (
    ("MlpPolicy", "DQN", "MlpPolicy", {}),
    ("MlpPolicy (foreach Adam)", "DQN", "MlpPolicy", {"optimizer_kwargs": {"foreach": True}}),
    ("SpikingDQNPolicy (DQN)", "DQN", "SpikingDQNPolicy", {}),
    ("SpikingDQNPolicy (SpikingDQN)", "SpikingDQN", "SpikingDQNPolicy", {}),
)
SPIKING_ONLY = {f.name for f in fields(SpikingConfig)} - {"net_arch"} | {"obs_bound"}
PARTS = ("acting", "online_forward", "backward", "target_forward", "optimizer", "sb3_and_env")
#: Targets of the spiking / MLP throughput ratio (at least) and of the network's time per training step over its
#: dense-arithmetic bound (at most), where an issue set one.
TARGETS = {"CartPole-v0": 0.8, "Acrobot-v1": 0.25}
BOUND_TARGETS = {"LunarLander-v3": 1.5}
RESULTS = ROOT / "benchmarks" / "results"


def recipe_kwargs(env_id: str, ticks: int | None) -> tuple[dict, dict, dict]:
    """``(hyperparameters, spiking policy_kwargs, MLP policy_kwargs)`` of a recipe."""
    hyper = load_hyperparams(env_id)
    spiking = dict(hyper.pop("policy_kwargs"))
    if ticks is not None:
        spiking["ticks"] = ticks
    mlp = {k: v for k, v in spiking.items() if k not in SPIKING_ONLY}
    return hyper, spiking, mlp


def make_model(env_id: str, algo: str, policy: str, hyper: dict, policy_kwargs: dict, seed: int) -> DQN:
    """A model of the recipe, warmed up past ``learning_starts`` (buffer filled, kernels compiled)."""
    policy_class = SpikingDQNPolicy if policy == "SpikingDQNPolicy" else policy
    algo_class = SpikingDQN if algo == "SpikingDQN" else DQN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CartPole-v0's deprecation notice
        model = algo_class(policy_class, env_id, policy_kwargs=policy_kwargs, seed=seed, device="cpu", **hyper)
    model.learn(hyper["learning_starts"] + 512)
    return model


def timed_round(model: DQN, steps: int) -> float:
    """Seconds to train ``model`` for ``steps`` more env steps."""
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return time.perf_counter() - start


class Breakdown:
    """Wall time of a DQN's training, split by part, with wrappers installed for one round."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self.grad_steps = 0

    def _timed(self, fn: Callable, part: Callable[[], str]) -> Callable:
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[part()] += time.perf_counter() - start

        return wrapper

    @contextlib.contextmanager
    def installed(self, model: DQN) -> Iterator[None]:
        """Wrap the model's online and target forwards, backward, clipping and optimizer step."""
        policy = model.policy
        online, target = policy.q_net, policy.q_net_target
        online_forward, target_forward = online.forward, target.forward
        step, clip, backward = policy.optimizer.step, th.nn.utils.clip_grad_norm_, th.Tensor.backward

        def counted_step(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.grad_steps += 1
            return step(*args, **kwargs)

        online.forward = self._timed(online_forward, lambda: "online_forward" if th.is_grad_enabled() else "acting")
        target.forward = self._timed(target_forward, lambda: "target_forward")
        policy.optimizer.step = self._timed(counted_step, lambda: "optimizer")
        th.nn.utils.clip_grad_norm_ = self._timed(clip, lambda: "optimizer")
        th.Tensor.backward = self._timed(backward, lambda: "backward")
        # SpikingDQN's compiled gradient step: its forwards and backward without autograd.
        compiled = isinstance(model, SpikingDQN)
        network_backward = fused.network_backward
        if compiled:
            online.q_net.compiled_forward = self._timed(online.q_net.compiled_forward, lambda: "online_forward")
            target.q_net.compiled_forward = self._timed(target.q_net.compiled_forward, lambda: "target_forward")
            fused.network_backward = self._timed(network_backward, lambda: "backward")
            model._clip_gradients = self._timed(model._clip_gradients, lambda: "optimizer")
        try:
            yield
        finally:
            del online.forward, target.forward, policy.optimizer.step
            th.nn.utils.clip_grad_norm_, th.Tensor.backward = clip, backward
            if compiled:
                del online.q_net.compiled_forward, target.q_net.compiled_forward, model._clip_gradients
                fused.network_backward = network_backward

    def measure(self, model: DQN, steps: int) -> dict:
        """One instrumented round: milliseconds per env step of each part."""
        with self.installed(model):
            wall = timed_round(model, steps)
        self.seconds["sb3_and_env"] = wall - sum(v for k, v in self.seconds.items() if k != "sb3_and_env")
        return {
            "ms_per_env_step": {k: round(1e3 * v / steps, 4) for k, v in self.seconds.items()},
            "gradient_steps_per_env_step": round(self.grad_steps / steps, 4),
            "instrumented_steps_per_s": round(steps / wall, 1),
        }


def predict_latency_us(model: DQN, repeats: int = 5, number: int = 500) -> float:
    """Microseconds per batch-1 ``model.predict`` (deterministic), the best of ``repeats`` timings."""
    obs = model.env.reset()
    model.predict(obs, deterministic=True)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            model.predict(obs, deterministic=True)
        best = min(best, (time.perf_counter() - start) / number)
    return 1e6 * best


def matmul_gflops(rows: int, n_in: int, n_out: int, repeats: int = 50) -> float:
    """This machine's single-thread float32 matrix-product rate on ``(rows, n_in) @ (n_in, n_out)``, GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.random((rows, n_in), dtype=np.float32)
    b = rng.random((n_in, n_out), dtype=np.float32)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2.0 * rows * n_in * n_out / statistics.median(times) / 1e9


def training_step_flops(obs_dim: int, net_arch: list[int], n_actions: int, ticks: int, batch: int) -> float:
    """FLOPs of one DQN training step of the spiking network as dense products.

    Online forward and target forward: every projection over ``ticks x batch`` rows (the
    readout on the ``batch`` rows of summed spikes); backward: the weight gradient of every
    projection and the input gradient of every one but the first.
    """
    rows = ticks * batch
    sizes = [2 * obs_dim, *net_arch]
    hidden = [2.0 * rows * n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    readout = 2.0 * batch * sizes[-1] * n_actions
    forward = sum(hidden) + readout
    backward = sum(hidden) + sum(hidden[1:]) + 2 * readout
    return 2 * forward + backward


def layer_kernels(model: DQN, env_id: str, repeats: int = 20) -> list[dict]:
    """Event-driven layer kernels against the dense BLAS products they replace, at the run's spike densities."""
    net = model.policy.q_net.q_net
    batch = model.batch_size
    obs = th.as_tensor(model.replay_buffer.sample(batch).observations, dtype=th.float32)
    with th.no_grad():
        _, trains = net.forward_spikes(net.encoder(obs), return_activity=True)
    inputs = [net.encoder(obs).numpy(), *(t.numpy() for t in trains[:-1])]
    rows = []
    for index, (x, layer) in enumerate(zip(inputs, net.hidden)):
        weight = layer.weight.detach().numpy()
        weight_t = np.ascontiguousarray(weight.T)
        bias = layer.bias.detach().numpy()
        beta, threshold = np.float32(net.config.beta), np.float32(net.config.threshold)
        d = net.synaptic_delay
        pre = np.empty((*x.shape[:2], weight.shape[0]), dtype=np.float32)
        spikes = np.empty_like(pre)
        grad = np.random.default_rng(0).normal(size=pre.shape).astype(np.float32)
        out = np.empty_like(grad)

        def sparse_forward() -> None:
            network_kernels.spiking_layer_into(x, weight_t, bias, beta, threshold, True, d, True, pre, spikes, lif.NO_LEVELS)

        alpha, zeros, thresholds = (np.full(weight.shape[0], v, dtype=np.float32) for v in (beta, 0.0, threshold))
        arrived = np.concatenate([np.zeros_like(x[:d]), x[: x.shape[0] - d]]) if d else x
        arrived_flat = arrived.reshape(-1, x.shape[-1])

        def dense_forward() -> None:
            # The per-layer path this kernel replaced: one BLAS product, then the tick loop.
            current = (arrived_flat @ weight_t).reshape(pre.shape)
            current += bias
            lif.lif_forward(current, alpha, zeros, thresholds, True, np.float32(0.0), True, lif.NO_LEVELS)

        def sparse_weight_grad() -> None:
            network_kernels.spiking_layer_backward(grad, pre, spikes, x, d, beta, threshold, True, 1, 2.0, out)

        def dense_weight_grad() -> None:
            out.reshape(-1, out.shape[-1]).T @ arrived_flat

        def lif_backward() -> None:
            lif.lif_backward(grad, pre, spikes, beta, threshold, True, 1, 2.0, out)

        timing = {}
        for name, fn in [
            ("event_forward_us", sparse_forward),
            ("dense_forward_us", dense_forward),
            ("event_backward_us", sparse_weight_grad),
            ("lif_backward_us", lif_backward),
            ("dense_weight_grad_us", dense_weight_grad),
        ]:
            fn()
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - start)
            timing[name] = round(1e6 * statistics.median(samples), 1)
        rows.append(
            {
                "env_id": env_id,
                "layer": index,
                "shape": [int(x.shape[0] * x.shape[1]), int(x.shape[-1]), int(weight.shape[0])],
                "input_density": round(float(x.mean()), 4),
                **timing,
            }
        )
    return rows


def dense_bound(model: DQN, breakdown: dict) -> dict:
    """The spiking network's training step against its dense-arithmetic bound (FLOPs at this machine's
    single-thread matrix-product rate), from the instrumented round's ``breakdown``."""
    net = model.policy.q_net.q_net
    batch, arch = model.batch_size, net.net_arch
    flops = training_step_flops(net.obs_dim, arch, net.n_actions, net.ticks, batch)
    rate = matmul_gflops(net.ticks * batch, arch[-1], arch[-1])
    bound_ms = flops / (rate * 1e9) * 1e3
    per_step = breakdown["gradient_steps_per_env_step"]
    network_ms = sum(breakdown["ms_per_env_step"][k] for k in ("online_forward", "backward", "target_forward"))
    measured_ms = network_ms / per_step if per_step else float("nan")
    return {
        "flops_per_training_step": flops,
        "matmul_gflops_single_thread": round(rate, 1),
        "matmul_shape": [net.ticks * batch, arch[-1], arch[-1]],
        "bound_ms_per_training_step": round(bound_ms, 4),
        "measured_ms_per_training_step": round(measured_ms, 4),
        "measured_over_bound": round(measured_ms / bound_ms, 3),
    }


def recipe_entry(env_id: str, setup: tuple[dict, dict, dict], steps: int, walls: dict, models: dict) -> dict:
    """One recipe's part of the report: per model throughput, breakdown and predict latency; the ratios;
    the dense bound and the layer kernels (``walls``: the timed rounds' wall times per model)."""
    hyper, spiking, mlp = setup
    entry: dict = {"steps_per_round": steps, "hyperparameters": hyper, "policies": {}}
    for name, algo, policy, extra in CONFIGS:
        wall = walls[env_id, name]
        entry["policies"][name] = {
            "algorithm": algo,
            "policy_kwargs": {**(mlp if policy == "MlpPolicy" else spiking), **extra},
            "steps_per_s": round(steps / statistics.median(wall), 1),
            "steps_per_s_rounds": [round(steps / w, 1) for w in wall],
            "breakdown": Breakdown().measure(models[env_id, name], steps),
            "predict_batch1_us": round(predict_latency_us(models[env_id, name]), 1),
        }
    for name, mlp_name, key in (
        (RECIPE, "MlpPolicy", "ratio_spiking_over_mlp"),
        ("SpikingDQNPolicy (DQN)", "MlpPolicy", "ratio_spiking_dqn_over_mlp"),
        (RECIPE, "MlpPolicy (foreach Adam)", "ratio_spiking_over_mlp_foreach_adam"),
    ):
        per_round = [m / s for m, s in zip(walls[env_id, mlp_name], walls[env_id, name])]
        entry[f"{key}_rounds"] = [round(r, 3) for r in per_round]
        entry[f"{key}_median"] = round(statistics.median(per_round), 3)
    entry["target_ratio"] = TARGETS.get(env_id)

    model = models[env_id, RECIPE]
    entry["dense_bound"] = dense_bound(model, entry["policies"][RECIPE]["breakdown"])
    entry["dense_bound"]["target_over_bound"] = BOUND_TARGETS.get(env_id)
    entry["layer_kernels"] = layer_kernels(model, env_id)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="alternating timed rounds per model")
    parser.add_argument("--cartpole-steps", type=int, default=4_000, help="env steps per CartPole round")
    parser.add_argument("--acrobot-steps", type=int, default=1_000, help="env steps per Acrobot round")
    parser.add_argument("--lunarlander-steps", type=int, default=500, help="env steps per LunarLander round")
    parser.add_argument("--cartpole-ticks", type=int, default=10, help="ticks of the spiking CartPole policy")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "train_throughput.json")
    parser.add_argument("--update-docs", action="store_true",
                        help="write the tables into docs/benchmarks.md between <!-- train-throughput:begin/end -->")
    args = parser.parse_args()
    th.set_num_threads(1)
    steps = {"CartPole-v0": args.cartpole_steps, "Acrobot-v1": args.acrobot_steps,
             "LunarLander-v3": args.lunarlander_steps}
    ticks = {"CartPole-v0": args.cartpole_ticks, "Acrobot-v1": None, "LunarLander-v3": None}

    setups = {env_id: recipe_kwargs(env_id, ticks[env_id]) for env_id in args.recipes}
    models: dict[tuple[str, str], DQN] = {}
    for env_id, (hyper, spiking, mlp) in setups.items():
        for name, algo, policy, extra in CONFIGS:
            print(f"warming up {env_id} {name}", flush=True)
            kwargs = {**(mlp if policy == "MlpPolicy" else spiking), **extra}
            models[env_id, name] = make_model(env_id, algo, policy, hyper, kwargs, args.seed)

    walls: dict[tuple[str, str], list[float]] = {key: [] for key in models}
    for round_ in range(args.rounds):
        for key, model in models.items():
            walls[key].append(timed_round(model, steps[key[0]]))
        print(
            f"round {round_ + 1}/{args.rounds}: "
            + ", ".join(f"{e} {p} {steps[e] / walls[e, p][-1]:.0f}/s" for (e, p) in models),
            flush=True,
        )

    report: dict = {
        "timing": "alternating rounds, medians; all figures measured in this run",
        "rounds": args.rounds,
        "torch": th.__version__,
        "numpy": np.__version__,
        "machine": machine_line(),
        "load_average_1min": os.getloadavg()[0],
        "recipes": {},
    }
    for env_id, setup in setups.items():
        report["recipes"][env_id] = recipe_entry(env_id, setup, steps[env_id], walls, models)

    print_summary(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    before_path = RESULTS / "train_throughput_before.json"
    tables = markdown(report, json.loads(before_path.read_text()) if before_path.exists() else None)
    args.out.with_suffix(".md").write_text(tables)
    print(f"\nwritten to {args.out} and {args.out.with_suffix('.md')}")
    if args.update_docs:
        print(f"{update_page('benchmarks.md', 'train-throughput', tables)} updated")


if __name__ == "__main__":
    main()
