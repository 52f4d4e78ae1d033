"""``SpikingDQN``: the compiled gradient step gives SB3 ``DQN``'s update bit for bit, and falls back where it must."""

import warnings

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN

from spiking_dqn import SpikingDQN, SpikingDQNPolicy, fused
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.grid import Grid

HYPER = dict(
    device="cpu",
    learning_starts=100,
    batch_size=32,
    train_freq=4,
    gradient_steps=2,
    target_update_interval=50,
    exploration_fraction=0.3,
    learning_rate=1e-3,
)
SMALL = dict(net_arch=[16, 12], ticks=6)


def trained(algo: type[DQN], policy_kwargs: dict, steps: int = 400, seed: int = 3, **hyper) -> DQN:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = algo(SpikingDQNPolicy, "CartPole-v1", policy_kwargs=policy_kwargs, seed=seed, **{**HYPER, **hyper})
        model.learn(steps)
    return model


def assert_same_policy(a: DQN, b: DQN) -> None:
    sa, sb = a.policy.state_dict(), b.policy.state_dict()
    assert sa.keys() == sb.keys()
    for key, value in sa.items():
        if isinstance(value, th.Tensor):
            assert th.equal(value, sb[key]), key
    for pa, pb in zip(a.policy.optimizer.state.values(), b.policy.optimizer.state.values()):
        for name in ("exp_avg", "exp_avg_sq"):
            assert th.equal(pa[name], pb[name]), name


CASES = {
    "default": {},
    "reset to zero, no delay": dict(reset="zero", synaptic_delay=0),
    "fast_sigmoid": dict(surrogate="fast_sigmoid"),
    "triangular": dict(surrogate="triangular"),
    "straight_through": dict(surrogate="straight_through"),
    "threshold noise": dict(threshold_noise=(1.0, 2.0), threshold_noise_seed=7),
    "threshold noise levels": dict(threshold_noise={"levels": [1.0, 1.5]}, threshold_noise_seed=7),
    "poisson encoding": dict(encoding="poisson", encoding_seed=11),
    "hybrid encoding": dict(encoding="hybrid", encoding_alpha=0.5),
    "one layer, three ticks beyond the delay": dict(net_arch=[24], ticks=3),
}


@pytest.mark.parametrize("options", CASES.values(), ids=CASES.keys())
def test_the_compiled_gradient_step_gives_dqns_weights_bit_for_bit(options):
    # 400 env steps: 150 gradient steps, two target updates, the same replay samples.
    kwargs = {**SMALL, **options}
    reference, compiled = trained(DQN, kwargs), trained(SpikingDQN, kwargs)
    assert compiled._n_updates == reference._n_updates == 150
    assert_same_policy(reference, compiled)
    # The weights moved: the test compares trained networks, not two initialisations.
    fresh = trained(DQN, kwargs, steps=1)
    assert not th.equal(fresh.policy.q_net.q_net.readout.weight, compiled.policy.q_net.q_net.readout.weight)
    assert reference.logger.name_to_value["train/loss"] == compiled.logger.name_to_value["train/loss"]


def test_clipped_gradients_and_the_multi_tensor_adam_give_dqns_weights_bit_for_bit(monkeypatch):
    # The compiled step's Adam steps all tensors in one call where DQN's loops over them.
    reference, compiled = trained(DQN, SMALL, steps=1), trained(SpikingDQN, SMALL, steps=1)
    assert [g["foreach"] for g in compiled.policy.optimizer.param_groups] == [True]
    assert [g["foreach"] for g in reference.policy.optimizer.param_groups] == [None]
    # A small max_grad_norm clips every step (the factor < 1 branch); the default rarely does.
    factors = []
    original = th._foreach_mul_
    monkeypatch.setattr(th, "_foreach_mul_", lambda grads, f: factors.append(float(f)) or original(grads, f))
    reference, compiled = trained(DQN, SMALL, max_grad_norm=0.05), trained(SpikingDQN, SMALL, max_grad_norm=0.05)
    assert len(factors) >= 2 * 150 and max(factors) < 1.0  # both models clipped every one of their steps
    assert_same_policy(reference, compiled)
    # The user's foreach is kept.
    model = trained(SpikingDQN, {**SMALL, "optimizer_kwargs": dict(foreach=False)}, steps=1)
    assert [g["foreach"] for g in model.policy.optimizer.param_groups] == [False]


def test_a_custom_surrogate_goes_through_autograd_for_its_direct_terms_and_still_matches():
    import snntorch.surrogate as surrogate

    kwargs = {**SMALL, "surrogate": surrogate.sigmoid(slope=10)}
    assert_same_policy(trained(DQN, kwargs, steps=250), trained(SpikingDQN, kwargs, steps=250))


def test_the_compiled_step_runs_no_autograd_backward(monkeypatch):
    def no_backward(*args, **kwargs):
        raise AssertionError("autograd backward called")

    monkeypatch.setattr(th.Tensor, "backward", no_backward)
    model = trained(SpikingDQN, SMALL, steps=150)
    assert model._n_updates > 0


@pytest.mark.parametrize("setup", ["activity penalty", "fake quantization"])
def test_what_needs_autograd_falls_back_to_dqns_step_with_the_same_result(setup, monkeypatch):
    kwargs = {**SMALL, "activity_penalty": 1e-3} if setup == "activity penalty" else SMALL

    def build(algo):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = algo(SpikingDQNPolicy, "CartPole-v1", policy_kwargs=kwargs, seed=3, **HYPER)
        if setup == "fake quantization":
            for net in (model.policy.q_net.q_net, model.policy.q_net_target.q_net):
                net.set_fake_quantization(Grid((20.0, 20.0, 40.0)))
        return model

    reference = build(DQN)
    reference.learn(300)
    calls = []
    original = SpikingQNetwork.compiled_forward
    monkeypatch.setattr(SpikingQNetwork, "compiled_forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    compiled = build(SpikingDQN)
    assert compiled._compiled_network() is None
    compiled.learn(300)
    assert calls == []  # DQN.train's step, not the compiled one
    assert_same_policy(reference, compiled)


def test_a_spiking_dqn_saves_and_loads_as_an_sb3_model(tmp_path):
    model = trained(SpikingDQN, SMALL, steps=150)
    model.save(tmp_path / "model.zip")
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    expected = model.predict(obs, deterministic=True)[0]
    for algo in (SpikingDQN, DQN):
        loaded = algo.load(tmp_path / "model.zip", device="cpu")
        np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], expected)
    # A loaded SpikingDQN continues training with the compiled step.
    loaded = SpikingDQN.load(tmp_path / "model.zip", env=model.get_env(), device="cpu")
    assert loaded._compiled_network() is not None
    loaded.learn(100, reset_num_timesteps=False)


def test_compiled_forward_is_the_forward_and_refuses_what_it_cannot_run():
    th.manual_seed(0)
    net = SpikingQNetwork([1.0] * 4, 2, **SMALL)
    obs = th.randn(9, 4)
    with th.no_grad():
        expected = net(obs)
    q, tape, weights, plan = net.compiled_forward(obs, keep_tape=True)
    np.testing.assert_array_equal(q, expected.numpy())
    assert tape is not None and len(tape.pres) == 2 and len(weights) == 3
    q_plain, no_tape, _, _ = net.compiled_forward(obs)
    np.testing.assert_array_equal(q_plain, q)
    assert no_tape is None
    # Its gradients are autograd's.
    grad_q = np.random.default_rng(1).normal(size=q.shape).astype(np.float32)
    _, grads = fused.network_backward(tape, weights, plan, grad_q)
    net.zero_grad()
    (net(obs) * th.from_numpy(grad_q)).sum().backward()
    autograd = [p.grad for layer in net.linear_layers() for p in (layer.weight, layer.bias)]
    for mine, theirs in zip(grads, autograd):
        np.testing.assert_array_equal(mine, theirs.numpy())
    net.set_fake_quantization(Grid((20.0, 20.0, 40.0)))
    with pytest.raises(RuntimeError, match="fake quantization"):
        net.compiled_forward(obs)
