"""`report.md` and its PNG figures, from the JSON/NPZ outputs the stages left in the work dir."""

from __future__ import annotations

import io as _io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hybrid_jax import io  # noqa: E402

BRIEF = {  # the brief's numbers (T4 GPU, human labels, 600 seeds)
    "cv": {"accuracy": (0.653, 0.038), "precision": (0.444, 0.113), "recall": (0.281, 0.082)},
    "best": {"accuracy": 0.658, "precision": 0.579, "recall": 0.250},
    "cost": {"always A": (0.493, 1.0, None), "always B": (0.009, 0.0, 0.982),
             "oracle (labels)": (0.334, 0.67, 0.323), "learned router": (0.378, 0.76, 0.232)},
    "probe_s": 0.0023, "a_needed_share": 0.672, "kept": 18, "candidates": 24,
}


def _savefig(fig, path: Path) -> str:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    io.write_bytes(path, buf.getvalue())
    return path.name


def _table(header: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("–" if v is None else str(v))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f} %"


def _grid(images: np.ndarray) -> np.ndarray:
    return np.concatenate(list((np.clip(images, -1, 1) + 1) / 2), axis=1)


def fig_curves(workdir: Path, out: Path) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3))
    for ax, name in zip(axes, ("model_a", "model_b", "corrector")):
        losses = io.read_npz(workdir / name / "losses.npz")["losses"]
        ax.plot(losses, lw=0.6, alpha=0.5)
        w = max(len(losses) // 50, 1)
        ax.plot(np.arange(w - 1, len(losses)), np.convolve(losses, np.ones(w) / w, "valid"), lw=1.5)
        ax.set(title=name, xlabel="step", ylabel="loss", yscale="log")
    return _savefig(fig, out / "training_curves.png")


def fig_samples(workdir: Path, out: Path, n: int = 10) -> str:
    seeds = io.read_npz(workdir / "seeds" / "seeds.npz")
    fig, ax = plt.subplots(figsize=(n * 0.9, 2.0))
    ax.imshow(np.concatenate([_grid(seeds["images_a"][:n]), _grid(seeds["images_b"][:n])], axis=0),
              interpolation="nearest")
    ax.set_yticks([16, 48], ["A", "B"])
    ax.set_xticks(np.arange(n) * 32 + 16, [str(s) for s in seeds["seeds"][:n]])
    ax.set_xlabel("seed")
    return _savefig(fig, out / "samples_a_vs_b.png")


def fig_sweep(sweep: list[dict], out: Path) -> str:
    fig, ax = plt.subplots(figsize=(5, 3))
    th = [r["threshold"] for r in sweep]
    for key in ("precision", "recall", "accuracy", "share_to_A"):
        ax.plot(th, [r[key] for r in sweep], marker="o", label=key)
    ax.set(xlabel="threshold on P(cheap_ok)", title="threshold sweep (best split, test)")
    ax.legend(fontsize=8)
    return _savefig(fig, out / "threshold_sweep.png")


def fig_ablation(abl: dict, out: Path) -> str:
    names = list(abl["delta"])
    delta = [abl["delta"][n] for n in names]
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(names) + 1))
    ax.barh(names, delta, color=["tab:red" if n in abl["dropped"] else "tab:blue" for n in names])
    ax.axvline(0, color="k", lw=0.5)
    ax.set(xlabel="precision change when the feature is removed (red: dropped)")
    return _savefig(fig, out / "ablation.png")


def fig_cost(rows: dict, out: Path) -> str:
    names = [n for n in rows if n != "probe"]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(names, [rows[n]["seconds_per_image"] for n in names])
    for i, n in enumerate(names):
        ax.text(i, rows[n]["seconds_per_image"], _pct(rows[n]["savings_vs_a"]), ha="center", va="bottom", fontsize=8)
    ax.set(ylabel="seconds / image", title="cost per image (label: savings vs always A)")
    ax.tick_params(axis="x", labelsize=8)
    return _savefig(fig, out / "cost.png")


def _sections(workdir: Path, out: Path) -> list[str]:
    run = io.read_json(workdir / "run.json")
    done = lambda s: io.read_json(workdir / s / "done.json")["summary"]
    data, labels = done("data"), done("labels")
    router = io.read_json(workdir / "router" / "results.json")
    cost = io.read_json(workdir / "routed" / "cost.json")
    stand_in = "**Stand-in data, not CIFAR-10.** " if data["stand_in"] else ""
    s = [f"# hybrid_jax report: preset `{run['preset']}`",
         f"{stand_in}Data: {data['source']} ({data['n_train']} training images; {data['n_holdout']} held out from "
         f"{data['holdout_from']}). Device: `{cost['device']}` ({cost['platform']}).",
         "## Training", "![training curves](training_curves.png)",
         _table(["model", "steps", "first loss", "final loss (mean of last 10)", "seconds", "resumed from"],
                [[m, done(m)["steps"], done(m)["first_loss"], done(m)["final_loss"], done(m)["seconds"],
                  done(m)["resumed_from"]] for m in ("model_a", "model_b", "corrector")]),
         "## Samples: A (top) vs B (bottom), same seeds", "![samples](samples_a_vs_b.png)"]
    auc = labels["validation_auc"]
    s += ["## Labels",
          f"Label source for the router: **{router['label_source']}**. Automated labels: "
          f"{labels['auto_cheap_ok']} cheap_ok of {labels['n']} ({_pct(labels['auto_cheap_ok'] / labels['n'])}); "
          f"A_needed {_pct(1 - labels['auto_cheap_ok'] / labels['n'])} (brief, human: {_pct(BRIEF['a_needed_share'])}). "
          f"Automated labels: k-NN realism in a space of natural-image statistics; {labels['rule']}.",
          "Labeler validation (held-out real images must outrank degraded copies; ROC AUC):",
          _table(["degradation", "AUC"], [[k, v] for k, v in auc.items()]),
          f"Mean realism score: A {labels['mean_score']['A']:.3f}, B {labels['mean_score']['B']:.3f}, "
          f"held-out real {labels['mean_score']['real']:.3f}."]
    if "agreement" in labels:
        ag = labels["agreement"]
        s.append(f"Human vs automated labels on {ag['n']} seeds: accuracy {_pct(ag['accuracy'])}, "
                 f"Cohen's kappa {ag['cohen_kappa']:.3f}.")
    cv, best = router["cv"], router["best_split"]
    s += ["## Router",
          f"{router['n']} labeled seeds, {router['n_cheap_ok']} cheap_ok. Class-prior baseline precision: "
          f"{_pct(router['prior']['precision'])}. Features kept: {len(router['kept'])} "
          f"(brief: {BRIEF['kept']} of {BRIEF['candidates']}).",
          _table(["metric", "train (CV mean)", "CV test (mean ± std)", "best split (test)", "brief CV", "brief best"],
                 [[m, cv["train_mean"][m], f"{cv['test_mean'][m]:.3f} ± {cv['test_std'][m]:.3f}", best["test"][m],
                   f"{BRIEF['cv'][m][0]:.3f} ± {BRIEF['cv'][m][1]:.3f}", BRIEF["best"][m]]
                  for m in ("accuracy", "precision", "recall")]),
          f"![threshold sweep]({fig_sweep(router['sweep'], out)})"]
    if router.get("ablation"):
        abl = router["ablation"]
        s += [f"Leave-one-out ablation: precision {abl['precision_all']:.3f} with all features, "
              f"{abl['precision_kept']:.3f} with the kept ones. Dropped: {', '.join(abl['dropped']) or 'none'}.",
              f"![ablation]({fig_ablation(abl, out)})"]
    rows = cost["cost"]["rows"]
    s += ["## Cost", f"Measured on `{cost['device']}` over {cost['cost']['n_images']} seeds, median of "
          f"{cost['cost']['repeats']} runs after compilation. FLOPs: passes x XLA cost of one pass.",
          _table(["strategy", "s / image", "compile s", "passes / image", "GFLOPs / image", "share to A",
                  "savings vs A", "brief s / image", "brief savings"],
                 [[n, r["seconds_per_image"], r["compile_seconds"], r["passes_per_image"], r["flops_per_image"] / 1e9,
                   _pct(r["share_to_a"]), _pct(r["savings_vs_a"]) if n != "probe" else "–",
                   (BRIEF["cost"].get(n) or (BRIEF["probe_s"],))[0], _pct((BRIEF["cost"].get(n) or (0, 0, None))[2])]
                  for n, r in rows.items()]),
          f"![cost]({fig_cost(rows, out)})",
          f"Routed images equal each model's own image for that seed: max |diff| {cost['consistency']['max_abs_diff_a']:.2e}"
          f" (A side), {cost['consistency']['max_abs_diff_b']:.2e} (B side, resumed from the cached prefix).",
          "## Quality of each strategy (all seeds, labeler feature space)",
          _table(["strategy", "mean realism", "Frechet distance to held-out real"],
                 [[n, q["mean_realism"], q["frechet_distance"]] for n, q in cost["quality"].items()]),
          "## Config", "```json\n" + json.dumps(run["config"], indent=1) + "\n```"]
    return s


def write_report(run) -> Path:
    workdir = Path(run.workdir)
    out = workdir / "report"
    fig_curves(workdir, out)
    fig_samples(workdir, out)
    body = _sections(workdir, out)
    return io.write_text(out / "report.md", "\n\n".join(body) + "\n")
