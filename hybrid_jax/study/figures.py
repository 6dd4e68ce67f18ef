"""The report's PNG figures: each a function of what the stages recorded (dicts and arrays) that draws one
figure into `out` and returns its file name, for the report's markdown to link."""

from __future__ import annotations

import io as _io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hybrid_jax import io  # noqa: E402

CURVES = {"router": "tab:blue", "random": "tab:gray", "entropy": "tab:orange", "best feature": "tab:green"}
FIXED = (("tab:red", "s"), ("tab:purple", "s"))  # style of each option's fixed strategy, by index
ORACLE = ("k", "*")
SAVINGS = (("passes", "network passes"), ("flops", "FLOPs"), ("seconds", "measured seconds"))


def _savefig(fig, path: Path) -> str:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    io.write_bytes(path, buf.getvalue())
    return path.name


def _grid(images: np.ndarray) -> np.ndarray:
    return np.concatenate(list((np.clip(images, -1, 1) + 1) / 2), axis=1)


def _a_above_b(ax, images_a: np.ndarray, images_b: np.ndarray, xlabels: list[str], **tick_kw) -> None:
    """A strip of A's images above B's, one column per seed, ticks at the images' centres (any image size)."""
    ax.imshow(np.concatenate([_grid(images_a), _grid(images_b)], axis=0), interpolation="nearest")
    side = images_a.shape[1]
    ax.set_yticks([side / 2, 1.5 * side], ["A", "B"])
    ax.set_xticks(np.arange(len(xlabels)) * side + side / 2, xlabels, **tick_kw)


def cost_quality(curves: dict, out: Path, fixed: list[str]) -> str:
    """Quality (labeler score, FD) against compute saved (passes, FLOPs, seconds), every strategy."""
    fig, axes = plt.subplots(2, 3, figsize=(14, 7), sharey="row")
    pts = curves["points"]
    for col, (cost, label) in enumerate(SAVINGS):
        for row, (key, ylabel) in enumerate((("quality", "mean quality (labeler, higher = better)"),
                                             ("fd", "Frechet distance to held-out real (lower = better)"))):
            ax = axes[row, col]
            for name, color in CURVES.items():
                line = sorted((p for p in pts if p["strategy"] == name and p[key] is not None),
                              key=lambda p: p[f"{cost}_savings"])
                x = [p[f"{cost}_savings"] for p in line]
                ax.plot(x, [p[key] for p in line], color=color, lw=1.2, marker=".", label=name)
                if key == "quality":
                    ax.fill_between(x, [p["quality_ci"][0] for p in line], [p["quality_ci"][1] for p in line],
                                    color=color, alpha=0.12)
            for name, (color, marker) in zip(fixed + ["oracle"], FIXED[: len(fixed)] + (ORACLE,)):
                p = next(q for q in pts if q["strategy"] == name)
                if p[key] is not None:
                    ax.plot(p[f"{cost}_savings"], p[key], marker=marker, color=color, ms=9, ls="", label=name)
            op = curves["operating"]
            if op[key] is not None:
                ax.plot(op[f"{cost}_savings"], op[key], marker="o", mfc="none", mec="tab:blue", ms=14, ls="",
                        label=f"router at threshold {op['param']:.2f}")
            ax.set(xlabel=f"savings vs {fixed[0]} ({label})", ylabel=ylabel if col == 0 else None)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Cost-quality, out of sample (shaded: 95 % bootstrap interval over seeds)")
    return _savefig(fig, out / "cost_quality.png")


def training_curves(losses_of: dict[str, np.ndarray], out: Path) -> str:
    """Each trained network's loss per step (log scale) with its moving average."""
    fig, axes = plt.subplots(1, len(losses_of), figsize=(13, 3), squeeze=False)
    for ax, (name, losses) in zip(axes[0], losses_of.items()):
        ax.plot(losses, lw=0.6, alpha=0.5)
        w = max(len(losses) // 50, 1)
        ax.plot(np.arange(w - 1, len(losses)), np.convolve(losses, np.ones(w) / w, "valid"), lw=1.5)
        ax.set(title=name, xlabel="step", ylabel="loss", yscale="log")
    return _savefig(fig, out / "training_curves.png")


def learning_curves(curves: dict, out: Path) -> str:
    """FD in each space and median quality against training FLOPs, one line per option, 95 % intervals as bars."""
    panels = [(f"FD, {s}", lambda p, s=s: (p["spaces"][s]["fd"], p["spaces"][s]["fd_ci"])) for s in curves["spaces"]]
    panels.append(("median quality", lambda p: (p["median_quality"], p["median_quality_ci"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    options = list(dict.fromkeys(p["option"] for p in curves["points"]))
    for ax, (title, read) in zip(axes[0], panels):
        for option in options:
            pts = [p for p in curves["points"] if p["option"] == option]
            x = np.array([p["train_flops"] for p in pts])
            y, ci = zip(*(read(p) for p in pts))
            err = np.abs(np.array(ci).T - np.array(y))
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=option)
        ax.set(title=title, xlabel="training FLOPs", xscale="log")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Learning curves (bars: 95 % bootstrap interval over the images)")
    return _savefig(fig, out / "learning_curves.png")


def samples(seeds: np.ndarray, images_a: np.ndarray, images_b: np.ndarray, out: Path, n: int = 10) -> str:
    """The first n seeds' A image above their B image."""
    fig, ax = plt.subplots(figsize=(n * 0.9, 2.0))
    _a_above_b(ax, images_a[:n], images_b[:n], [str(s) for s in seeds[:n]])
    ax.set_xlabel("seed")
    return _savefig(fig, out / "samples_a_vs_b.png")


def threshold_sweep(sweep: list[dict], out: Path) -> str:
    fig, ax = plt.subplots(figsize=(5, 3))
    th = [r["threshold"] for r in sweep]
    for key in ("precision", "recall", "accuracy", "share_to_A"):
        ax.plot(th, [r[key] for r in sweep], marker="o", label=key)
    ax.set(xlabel="threshold on P(cheap_ok)", title="threshold sweep (best split, test)")
    ax.legend(fontsize=8)
    return _savefig(fig, out / "threshold_sweep.png")


def ablation(abl: dict, out: Path) -> str:
    names = list(abl["delta"])
    delta = [abl["delta"][n] for n in names]
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(names) + 1))
    ax.barh(names, delta, color=["tab:red" if n in abl["dropped"] else "tab:blue" for n in names])
    ax.axvline(0, color="k", lw=0.5)
    ax.set(xlabel="precision change when the feature is removed (red: dropped)")
    return _savefig(fig, out / "ablation.png")


PARETO_STYLES = {"learned allocation": ("tab:blue", "o-"), "random (same mix)": ("tab:gray", "o--"),
                 "cascade": ("tab:green", "^-"), "A probe allocation": ("tab:olive", "v-"),
                 "random (cascade's mix)": ("tab:green", "^:"), "binary router": ("tab:orange", "D"),
                 "oracle": ("k", "*"), "oracle (all options)": ("tab:brown", "*")}


def _pareto_axis(ax, pts: list[dict], x, y, ci=None) -> None:
    """Fixed options (annotated) and each policy's sweep on one axis: x(p), y(p) of a point; ci(p): y's band."""
    fixed = [p for p in pts if p["policy"].startswith("fixed")]
    ax.plot([x(p) for p in fixed], [y(p) for p in fixed], "s", color="tab:red", label="fixed options")
    for p in fixed:
        ax.annotate(p["policy"][7:], (x(p), y(p)), fontsize=6)
    for name in dict.fromkeys(p["policy"] for p in pts if not p["policy"].startswith("fixed")):
        color, style = PARETO_STYLES.get(name, (None, "x-."))  # a further family probe's policies: the next colour
        line = sorted((p for p in pts if p["policy"] == name), key=x)
        (drawn,) = ax.plot([x(p) for p in line], [y(p) for p in line], style, color=color, label=name)
        if ci is not None and len(line) > 1:
            ax.fill_between([x(p) for p in line], [ci(p)[0] for p in line], [ci(p)[1] for p in line],
                            color=drawn.get_color(), alpha=0.12)
    ax.grid(alpha=0.3)


def allocation_pareto(result: dict, out: Path) -> str:
    """Per-seed allocation: quality (labeler score, FD) against compute saved, every policy."""
    fig, axes = plt.subplots(2, 3, figsize=(14, 7), sharey="row")
    for col, (cost, label) in enumerate(SAVINGS):
        for row, (key, ylabel) in enumerate((("quality", "mean quality (higher = better)"),
                                             ("fd", "Frechet distance (lower = better)"))):
            ax = axes[row, col]
            _pareto_axis(ax, result["points"], lambda p, c=cost: p[f"{c}_savings"], lambda p, k=key: p[k],
                         (lambda p: p["quality_ci"]) if key == "quality" else None)
            ax.set(xlabel=f"savings vs {result['options'][0]} ({label})", ylabel=ylabel if col == 0 else None)
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Per-seed compute allocation, out of sample (shaded: 95 % bootstrap interval)")
    return _savefig(fig, out / "allocation_pareto.png")


def _class_panels(names: list[str]):
    """(figure, one axis per class name) on a grid of up to 5 columns, sharing the quality axis."""
    cols = min(len(names), 5)
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3 * rows), sharey=True, squeeze=False)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("mean quality")
    return fig, list(axes.flat)[: len(names)]


def cost_quality_by_class(by_class: dict, out: Path, fixed: list[str], classes: tuple[str, ...]) -> str:
    """Each class's router curve and random routing at its shares: quality against FLOPs saved (in `classes` order)."""
    names = [c for c in classes if c in by_class]
    fig, axes = _class_panels(names)
    for ax, name in zip(axes, names):
        pts = by_class[name]
        for strategy in ("router", "random"):
            line = sorted((p for p in pts if p["strategy"] == strategy), key=lambda p: p["flops_savings"])
            x = [p["flops_savings"] for p in line]
            ax.plot(x, [p["quality"] for p in line], color=CURVES[strategy], marker=".", lw=1.2, label=strategy)
            ax.fill_between(x, [p["quality_ci"][0] for p in line], [p["quality_ci"][1] for p in line],
                            color=CURVES[strategy], alpha=0.12)
        for (color, marker), strategy in zip(FIXED, fixed):
            p = next(p for p in pts if p["strategy"] == strategy)
            ax.plot(p["flops_savings"], p["quality"], marker, color=color, label=strategy)
        p = next(p for p in pts if p["strategy"] == "oracle")
        ax.plot(p["flops_savings"], p["quality"], ORACLE[1], color=ORACLE[0], label="oracle (labels)")
        ax.set(title=f"{name} ({pts[0]['n']} seeds)", xlabel="FLOPs savings")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, loc="lower left")
    fig.suptitle("Routing per class, out of sample: router over thresholds vs random at its shares "
                 "(shaded: 95 % bootstrap interval)", y=1.03)
    return _savefig(fig, out / "cost_quality_by_class.png")


def allocation_by_class(result: dict, out: Path, classes: tuple[str, ...]) -> str:
    """The allocation's quality against FLOPs saved within each class (several classes)."""
    pts = result["points"]
    names = [c for c in classes if c in pts[0]["per_class"]]
    fig, axes = _class_panels(names)
    for ax, name in zip(axes, names):
        row = lambda p: p["per_class"][name]
        _pareto_axis(ax, pts, lambda p: row(p)["flops_savings"], lambda p: row(p)["quality"],
                     lambda p: row(p)["quality_ci"])
        ax.set(title=f"{name} ({row(pts[0])['seeds']} seeds)", xlabel=f"FLOPs savings vs {result['options'][0]}")
    axes[0].legend(fontsize=6, loc="lower left")
    fig.suptitle("Per-seed compute allocation per class, out of sample (shaded: 95 % bootstrap interval)", y=1.03)
    return _savefig(fig, out / "allocation_by_class.png")


def quality_scores(scores: dict, seeds: np.ndarray, images_a: np.ndarray, images_b: np.ndarray,
                   agreement: dict | None, out: Path, n_strip: int = 12) -> list[str]:
    """Histogram of the quality score of A, B, held-out real and reference images; and, when human labels
    disagree with the automated ones, a strip of those seeds (A's `images_a` above B's), each titled human /
    automated."""
    fig, ax = plt.subplots(figsize=(7, 3))
    bins = np.linspace(0, 1, 41)
    for key, name, color in (("score_reference", "reference (cross-fitted)", "tab:gray"),
                             ("score_real", "held-out real", "k"), ("score_a", "A", "tab:red"),
                             ("score_b", "B", "tab:purple")):
        if key in scores and len(scores[key]):
            ax.hist(scores[key], bins=bins, density=True, histtype="step", lw=1.6, color=color,
                    label=f"{name} (n = {len(scores[key])}, median {np.median(scores[key]):.2f})")
    ax.set(xlabel="quality score (0.5 = the reference's 5 % quantile)", ylabel="density")
    ax.legend(fontsize=7, loc="upper left")
    names = [_savefig(fig, out / "quality_scores.png")]
    if agreement and agreement.get("disagree"):
        index = {int(x): i for i, x in enumerate(seeds)}
        shown = [d for d in agreement["disagree"] if int(d["seed"]) in index][:n_strip]
        idx = [index[int(d["seed"])] for d in shown]
        fig, ax = plt.subplots(figsize=(max(len(idx), 2) * 0.9, 2.4))
        short = {"A_needed": "A", "cheap_ok": "ok"}
        _a_above_b(ax, images_a[idx], images_b[idx],
                   [f"{d['seed']}\n{short[d['human']]} / {short[d['automated']]}" for d in shown], fontsize=7)
        ax.set_xlabel("seed; human / automated label (A = A_needed, ok = cheap_ok)")
        names.append(_savefig(fig, out / "label_disagreements.png"))
    return names
