"""The training-throughput benchmark's tables and console summary (``benchmarks/train_throughput.py`` measures).

``markdown`` gives the tables that ``train_throughput.py --update-docs`` writes into
``docs/benchmarks.md`` between ``<!-- train-throughput:begin/end -->`` (and always into
``train_throughput.md`` beside the JSON report).
"""

from __future__ import annotations

#: The configuration the recipes train with.
RECIPE = "SpikingDQNPolicy (SpikingDQN)"
PART_LABELS = {
    "acting": "acting (the Q-network in `predict`)", "online_forward": "online forward", "backward": "backward",
    "target_forward": "target forward", "optimizer": "optimizer (clipping, Adam)",
    "sb3_and_env": "SB3 and the environment",
}
RECIPE_LABELS = {
    "CartPole-v0": "CartPole-v0: 64-64, batch 64, 128 gradient steps every 256 env steps",
    "Acrobot-v1": "Acrobot-v1: 128-128, batch 128, one gradient step per env step",
    "LunarLander-v3": "LunarLander-v3: 256-256, batch 128, one gradient step per env step",
}


def markdown(report: dict, before: dict | None) -> str:
    """The tables of ``docs/benchmarks.md``: throughput and ratios per recipe, batch-1 predict, the breakdown, the bounds."""
    recipes = report["recipes"]
    old = (before or {}).get("recipes", {})
    lines = [
        "| recipe | MlpPolicy | MlpPolicy, foreach Adam | spiking, `DQN` | spiking, `SpikingDQN` "
        "| `SpikingDQN` / MLP, median of the per-round ratios | target | `SpikingDQN` / MLP with foreach Adam "
        "| `DQN` / MLP | before |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- | --- | --- | --- |",
    ]
    for env_id, e in recipes.items():
        pol = e["policies"]
        rounds = e["ratio_spiking_over_mlp_rounds"]
        target = e.get("target_ratio")
        met = "none set" if target is None else (
            f">= {target}: " + ("met" if e["ratio_spiking_over_mlp_median"] >= target else "**not met**"))
        prior = old.get(env_id, {}).get("ratio_spiking_over_mlp_median")
        lines.append(
            f"| {RECIPE_LABELS.get(env_id, env_id)} | {pol['MlpPolicy']['steps_per_s']:,.0f} env-steps/s "
            f"| {pol['MlpPolicy (foreach Adam)']['steps_per_s']:,.0f} | {pol['SpikingDQNPolicy (DQN)']['steps_per_s']:,.0f} "
            f"| {pol[RECIPE]['steps_per_s']:,.0f} | **{e['ratio_spiking_over_mlp_median']:.3f}** "
            f"(rounds {min(rounds):.2f}-{max(rounds):.2f}) | {met} "
            f"| {e['ratio_spiking_over_mlp_foreach_adam_median']:.2f} | {e['ratio_spiking_dqn_over_mlp_median']:.2f} "
            f"| {'' if prior is None else f'{prior:.2f}'} |"
        )
    predict = {name: " / ".join(f"{recipes[env]['policies'][name]['predict_batch1_us']:.0f}" for env in recipes)
               for name in dict.fromkeys(n for env in recipes for n in recipes[env]["policies"])}
    prior = " / ".join(f"{old[env]['policies']['SpikingDQNPolicy']['predict_batch1_us']:.0f}" for env in recipes
                       if env in old)
    faster = all(recipes[env]["policies"][RECIPE]["predict_batch1_us"]
                 <= old[env]["policies"]["SpikingDQNPolicy"]["predict_batch1_us"] for env in recipes if env in old)
    lines.append(
        f"| batch-1 `model.predict`, {' / '.join(recipes)} network | {predict['MlpPolicy']} us "
        f"| {predict['MlpPolicy (foreach Adam)']} us | {predict['SpikingDQNPolicy (DQN)']} us | {predict[RECIPE]} us "
        f"| | no slower than before: {'met' if faster else '**not met**'} | | | {prior + ' us' if prior else ''} |"
    )
    lines += [
        "",
        "Where the time goes, milliseconds per env step (one instrumented round per model):",
        "",
        "| part | " + " | ".join(f"{env} MLP | {env} spiking (`SpikingDQN`)" for env in recipes) + " |",
        "| --- |" + " ---: |" * (2 * len(recipes)),
    ]
    for part, label in PART_LABELS.items():
        cells = [f"{recipes[env]['policies'][name]['breakdown']['ms_per_env_step'][part]:.3f}"
                 for env in recipes for name in ("MlpPolicy", RECIPE)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Dense-arithmetic bound of a training step (its FLOPs as dense products over all `T x batch` rows, "
              "divided by the single-thread float32 matrix-product rate measured in the same run):", ""]
    for env_id, e in recipes.items():
        b = e["dense_bound"]
        prior = old.get(env_id, {}).get("dense_bound", {}).get("measured_over_bound")
        target = b.get("target_over_bound")
        met = "" if target is None else (
            f"; target at most {target}x: " + ("met" if b["measured_over_bound"] <= target else "**not met**"))
        lines.append(
            f"- {env_id}: {b['flops_per_training_step'] / 1e6:.1f} MFLOP at {b['matmul_gflops_single_thread']:.1f} "
            f"GFLOP/s = {b['bound_ms_per_training_step']:.2f} ms against {b['measured_ms_per_training_step']:.2f} ms "
            f"measured for the network's part of a step ({b['measured_over_bound']:.2f}x the bound"
            + (f"; {prior:.2f}x before" if prior else "") + met + ")")
    return "\n".join(lines) + "\n"


def print_summary(report: dict) -> None:
    """The run's figures on the console: per recipe and model, the ratios, the dense bound, the layer kernels."""
    for env_id, entry in report["recipes"].items():
        print(f"\n{env_id} ({entry['steps_per_round']} env steps per round, {report['rounds']} rounds)")
        for policy, result in entry["policies"].items():
            parts = result["breakdown"]["ms_per_env_step"]
            print(
                f"  {policy:17s} {result['steps_per_s']:8.1f} env-steps/s, batch-1 predict "
                f"{result['predict_batch1_us']:.0f} us; ms per env step: "
                + ", ".join(f"{k} {v:.3f}" for k, v in parts.items())
            )
        rounds = ", ".join(f"{r:.2f}" for r in entry["ratio_spiking_over_mlp_rounds"])
        print(
            f"  spiking / MLP: {entry['ratio_spiking_over_mlp_median']:.2f} (median of rounds {rounds}; "
            f"target >= {entry.get('target_ratio')}); against the MLP with foreach Adam: "
            f"{entry['ratio_spiking_over_mlp_foreach_adam_median']:.2f}"
        )
        bound = entry["dense_bound"]
        print(
            f"  dense bound: {bound['flops_per_training_step'] / 1e6:.1f} MFLOP per training step at "
            f"{bound['matmul_gflops_single_thread']:.1f} GFLOP/s = {bound['bound_ms_per_training_step']:.3f} ms; "
            f"measured {bound['measured_ms_per_training_step']:.3f} ms ({bound['measured_over_bound']:.2f}x the bound)"
        )
        for row in entry["layer_kernels"]:
            print(
                f"  layer {row['layer']} {row['shape']} density {row['input_density']:.3f}: "
                f"forward: event-driven {row['event_forward_us']} us vs dense product + tick loop "
                f"{row['dense_forward_us']} us; "
                f"weight grad event {row['event_backward_us'] - row['lif_backward_us']:.1f} us vs dense "
                f"{row['dense_weight_grad_us']} us"
            )
