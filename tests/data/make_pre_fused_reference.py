"""Write the reference outputs of a spiking_dqn implementation: spikes, Q-values, gradients, and retrained weights.

``tests/data/pre_fused_reference.npz`` was written by the implementation before the
whole-network CPU pass (commit 2a12d23: a BLAS product per layer and tick loop kernels),
so that ``tests/test_fused.py`` checks the current one against it:

    git worktree add /tmp/pre-fused 2a12d23
    OMP_NUM_THREADS=1 python tests/data/make_pre_fused_reference.py /tmp/pre-fused tests/data/pre_fused_reference.npz

The cases (network options, batch, seed) are in ``CASES``; the retrained agent is the
shipped CartPole recipe for ``RETRAIN_STEPS`` env steps with seed ``RETRAIN_SEED``.
"""

from __future__ import annotations

import sys
import warnings

CASES = [
    dict(name=f"{surrogate}-{reset}-d{delay}", net_arch=[24, 12], ticks=8, threshold=0.4, reset=reset,
         synaptic_delay=delay, surrogate=surrogate, obs_dim=4, n_actions=3, batch=40, seed=1)
    for surrogate in ["atan", "fast_sigmoid", "triangular", "straight_through", "custom"]
    for reset in ["subtract", "zero"]
    for delay in [0, 1]
] + [
    dict(name="cartpole-recipe", net_arch=[64, 64], ticks=10, threshold=1.0, reset="subtract", synaptic_delay=1,
         surrogate="atan", obs_dim=4, n_actions=2, batch=64, seed=2),
    dict(name="acrobot-recipe", net_arch=[128, 128], ticks=20, threshold=1.0, reset="subtract", synaptic_delay=1,
         surrogate="atan", obs_dim=6, n_actions=3, batch=32, seed=3),
]
RETRAIN_ENV, RETRAIN_STEPS, RETRAIN_SEED = "CartPole-v0", 1100, 3


def run_case(case: dict):
    """Inputs and outputs of one case: ``(obs, q, trains, grads, q_no_grad, trains_no_grad)``.

    Trains are the hidden layers' spike trains ``(T, batch, n)``; gradients are those of the
    parameters in ``net.parameters()`` order.
    """
    import torch as th
    from snntorch import surrogate as snn_surrogate

    from spiking_dqn.network import SpikingQNetwork

    options = {k: case[k] for k in ("net_arch", "ticks", "threshold", "reset", "synaptic_delay")}
    spec = snn_surrogate.atan(alpha=3.0) if case["surrogate"] == "custom" else case["surrogate"]
    th.manual_seed(case["seed"])
    net = SpikingQNetwork([1.0] * case["obs_dim"], case["n_actions"], surrogate=spec, **options)
    obs = th.rand(case["batch"], case["obs_dim"]) * 2 - 1
    q, trains = net.forward_spikes(net.encoder(obs), return_activity=True)
    # A loss on the Q-values only (as DQN's): the spike counts are not differentiated here.
    q.pow(2).sum().backward()
    grads = [p.grad.numpy().copy() for p in net.parameters()]
    with th.no_grad():
        q_ng, trains_ng = net.forward_spikes(net.encoder(obs), return_activity=True)
    return (
        obs.numpy(),
        q.detach().numpy(),
        [t.detach().numpy() for t in trains],
        grads,
        q_ng.numpy(),
        [t.numpy() for t in trains_ng],
    )


def retrain():
    """Weights of the CartPole recipe retrained briefly with a fixed seed, by parameter name."""
    import torch as th
    from stable_baselines3 import DQN

    from spiking_dqn import SpikingDQNPolicy
    from spiking_dqn.recipes.hyperparams import load_hyperparams

    hyper = load_hyperparams(RETRAIN_ENV)
    # The recipe as it was when the reference was written: 16 ticks (it runs 10 now).
    policy_kwargs = {**hyper.pop("policy_kwargs"), "ticks": 16}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = DQN(SpikingDQNPolicy, RETRAIN_ENV, policy_kwargs=policy_kwargs, seed=RETRAIN_SEED, device="cpu", **hyper)
    model.learn(RETRAIN_STEPS)
    return {k: v.numpy().copy() for k, v in model.policy.q_net.state_dict().items() if isinstance(v, th.Tensor)}


def main() -> None:
    root, out = sys.argv[1], sys.argv[2]
    sys.path.insert(0, root)
    import numpy as np
    import torch as th

    th.set_num_threads(1)
    arrays = {}
    for case in CASES:
        obs, q, trains, grads, q_ng, trains_ng = run_case(case)
        key = case["name"]
        arrays[f"{key}/obs"], arrays[f"{key}/q"], arrays[f"{key}/q_no_grad"] = obs, q, q_ng
        for i, (s, s_ng) in enumerate(zip(trains, trains_ng)):
            # 0/1 spikes, packed to bits (np.unpackbits(...)[: s.size] restores them).
            arrays[f"{key}/train{i}"] = np.packbits(s.astype(bool).ravel())
            arrays[f"{key}/train_no_grad{i}"] = np.packbits(s_ng.astype(bool).ravel())
        for i, g in enumerate(grads):
            arrays[f"{key}/grad{i}"] = g
    for name, value in retrain().items():
        arrays[f"retrain/{name}"] = value
    np.savez_compressed(out, **arrays)
    print(f"wrote {len(arrays)} arrays to {out}")


if __name__ == "__main__":
    main()
