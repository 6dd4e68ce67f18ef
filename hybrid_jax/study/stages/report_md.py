"""`report.md`, from what the stages recorded (read through each stage's readers); its figures are drawn by
`hybrid_jax.study.figures`.

The report opens with what a reader must know before any number (stand-in data, forced labels,
in-sample figures), then the cost-quality curve. Every figure is out of sample unless its row
says "in-sample"; estimates carry 95 % bootstrap intervals; implausible values are flagged, not
printed as results (`sanity.fmt`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hybrid_jax import config as config_lib
from hybrid_jax import io, stats
from hybrid_jax.routing import evaluation
from hybrid_jax.study import premise, sanity
from hybrid_jax.study import figures
from hybrid_jax.study.rundir import Run, summary
from hybrid_jax.study.stages import allocate as allocate_stage
from hybrid_jax.study.stages import curves as curves_stage
from hybrid_jax.study.stages import routed as routed_stage
from hybrid_jax.study.stages import router as router_stage
from hybrid_jax.study.stages import seeds as seeds_stage
from hybrid_jax.study.stages import train

BRIEF = {  # the brief's numbers (T4 GPU, human labels, 600 seeds)
    "cv": {"accuracy": (0.653, 0.038), "precision": (0.444, 0.113), "recall": (0.281, 0.082)},
    "best": {"accuracy": 0.658, "precision": 0.579, "recall": 0.250},
    "fixed_seconds": (0.493, 0.009),  # always A, always B: by option index of the binary pair
    "seconds": {"oracle (labels)": 0.334, "learned router": 0.378, "probe": 0.0023},
    "savings": {"oracle (labels)": 0.323, "learned router": 0.232},
    "a_needed_share": 0.672, "kept": 18, "candidates": 24,
}


def _table(header: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("–" if v is None else str(v))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _pct(x, kind: str = "share") -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return sanity.fmt(kind, x, ".1%")


def _ci(value, ci, kind: str, spec: str = ".3f") -> str:
    """'0.412 [0.371, 0.455]' (or the implausible-value flag)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "– (undefined)"
    lo, hi = ci if ci else (float("nan"), float("nan"))
    band = f" [{lo:{spec}}, {hi:{spec}}]" if np.isfinite(lo) and np.isfinite(hi) else ""
    return sanity.fmt(kind, value, spec) + band


def fixed_strategies(cost: dict) -> list[str]:
    """"always <option>" for each option the router chooses among (work dirs from before name them A and B)."""
    return [f"always {name}" for name in cost.get("options", ("A", "B"))]


# ----------------------------------------------------------------------------- sections

def _tau_text(tau) -> str:
    return f"tau = {tau:.4f}" if isinstance(tau, float) else "its class's tau (labels section)"


def _allocation_section(result: dict, out: Path) -> list[str]:
    rows = [[p["policy"] + ("" if p["param"] is None else f" @ {p['param']:.2f}"), _pct(p["passes_savings"], "savings"),
             _pct(p["flops_savings"], "savings"), _pct(p["seconds_savings"], "savings"),
             _ci(p["quality"], p["quality_ci"], "quality"),
             "–" if p["fd"] is None else sanity.fmt("frechet", p["fd"], ".3g"),
             ", ".join(f"{k} {v:.0%}" for k, v in p["mix"].items() if v > 0)] for p in result["points"]]
    exact = ", ".join(f"{e['threshold']:.2f}: {e['exact']:.0%}" for e in result["learned_exact"])
    return ["## Per-seed compute allocation (out of sample)",
            f"Options: {', '.join(result['options'])}. An option is acceptable for a seed when its image's quality "
            f"is within {_tau_text(result['tau'])} of that seed's best option (the labels' 'about the same'); the "
            "oracle takes the cheapest acceptable option. The learned allocation predicts P(acceptable) per option "
            "from the probe features (gradient boosting, cross-fitted over the router's folds) and takes the "
            "cheapest option that reaches the threshold. Random (same mix) assigns the learned policy's option "
            "mix at random: equal mean compute. Policies reading the probe pay for it (B's options then resume "
            "from its prefix); seconds are measured per option and composed. Options 'after probe' run their "
            "family's own probe (A: its first steps of block 0; MADFormer: block 0) and continue from it with their "
            "budget's remaining steps; '<probe> probe allocation' picks that family's budget from its probe's "
            "features, and the cascade through it ('cascade' for A's) reads B's probe first (a B option, or that "
            "family) and the family's probe only for the seeds it sends there, paying each probe it ran.",
            f"![allocation]({figures.allocation_pareto(result, out)})",
            _table(["policy", "savings: passes", "FLOPs", "seconds", "mean quality [95 % CI]", "FD", "option mix"],
                   rows),
            "Share of seeds acceptable per option: "
            + ", ".join(f"{n} {v:.0%}" for n, v in zip(result["options"], result["acceptable_share"]))
            + f". Learned allocation equals the oracle's choice for: {exact} of seeds (by threshold).",
            _human_line(result), *_deployed_line(result)]


def _human_line(result: dict) -> str:
    """Whose verdicts the acceptability is, and how far people agree with the automated labels where they labeled."""
    h = result.get("human")
    if h is None:
        return ("Every acceptability above is the automated labeler's: nobody labeled a (seed, option) pair "
                "(`python -m experiments.label --compare options` shows each option beside the reference).")
    per = "; ".join(f"{name}: {r['n']} pairs, {_agree(r)}" for name, r in h["by_option"].items())
    return (f"People labeled {h['n']} (seed, option) pairs (`labels/human_options.csv`); there their verdict replaces "
            f"the automated one. They agree with the automated labels on {_agree(h)} of them (Cohen's kappa "
            f"{_num(h['cohen_kappa'], '.2f')}; acceptable: people {_num(h['human_yes'], '.0%')}, automated "
            f"{_num(h['automated_yes'], '.0%')}). Per option: {per}.")


def _agree(r: dict) -> str:
    """'83% [76%, 90%] (chance: 55%)': agreement with its interval over seeds, beside chance at the same shares."""
    lo, hi = r["accuracy_ci"]
    return (f"{_num(r['accuracy'], '.0%')} [{_num(lo, '.0%')}, {_num(hi, '.0%')}] "
            f"(chance: {_num(r['chance_accuracy'], '.0%')})")


def _num(v: float, fmt: str) -> str:
    return "–" if v is None or np.isnan(v) else format(v, fmt)


def _deployed_and_best_fixed(result: dict) -> tuple[dict, dict | None]:
    """The deployed policy's cross-fitted point and the best fixed option at no more FLOPs (None: none as cheap)."""
    d, pts = result["deployed"], result["points"]
    mine = next(p for p in pts if p["policy"] == d["policy"] and p["param"] == d["threshold"])
    fixed = [p for p in pts if p["policy"].startswith("fixed: ") and p["flops_per_image"] <= mine["flops_per_image"]]
    return mine, max(fixed, key=lambda p: p["quality"], default=None)


def _deployed_line(result: dict) -> list[str]:
    """The saved policy, its out-of-sample point and the best fixed option at no more FLOPs beside it."""
    d = result.get("deployed")
    if d is None:
        return []
    mine, best = _deployed_and_best_fixed(result)
    ci = lambda p: p["quality_ci"] or (float("nan"), float("nan"))
    verdict = ("no fixed option is as cheap" if best is None else
               f"the best fixed option at no more FLOPs, {best['policy'][7:]}, has "
               f"{_ci(best['quality'], best['quality_ci'], 'quality')}: the policy "
               + ("beats it (intervals apart)" if ci(mine)[0] > ci(best)[1] else
                  "is worse (intervals apart)" if ci(mine)[1] < ci(best)[0] else
                  "does not beat it (intervals overlap)"))
    return [f"Deployed policy (`allocate/policy/`, `pipeline.load_policy(run)` and `policy.choose`): the {d['policy']} "
            f"at threshold {d['threshold']:.2f}, refitted on every seed. Out of sample (its cross-fitted row above) it "
            f"keeps {_ci(mine['quality'], mine['quality_ci'], 'quality')} at {_pct(mine['flops_savings'], 'savings')} "
            f"FLOP savings; {verdict}."]


def _preamble(run: Run, cost: dict, router: dict) -> list[str]:
    data, labels = summary(run, "data"), summary(run, "labels")
    rv = cost["curves"]["router_vs_random"]
    lines = [f"# hybrid_jax report: preset `{run.cfg.name}`"]
    if data["stand_in"]:
        lines.append("> **Stand-in data, not CIFAR-10.** " + data["source"])
    if labels.get("forced_share") and router["label_source"] == "automated":
        lines.append(f"> **Forced labels.** The automated labels come from the {labels['rule']}. The label "
                     "balance is set by the config, not by the images: read every routing figure below as a "
                     "check of the machinery, not as a finding.")
    lines.append(
        f"Every routing, cost and quality figure below is **out of sample**: {router['cv']['n_folds']}-fold "
        "cross-fitting, the whole router recipe (feature ablation -> gradient boosting -> threshold) re-run on "
        "the other folds for each held-out fold. Rows marked *in-sample* are not. The tables evaluate the "
        "recipe; the saved router (`router/`, used by `pipeline.make_routed_sampler`) is the same recipe fit "
        f"on all {router['n']} seeds. Label source: **{router['label_source']}**.")
    lines.append(f"**Learned router vs random routing at the same share to A ({_pct(rv['share_to_a'])}): "
                 f"{rv['verdict']}** (quality gap {_ci(rv['quality_gap'], rv['quality_gap_ci'], 'savings', '+.4f')}; "
                 f"precision minus class prior {_ci(rv['precision_gap'], rv['precision_gap_ci'], 'savings', '+.3f')}, "
                 f"{rv['precision_verdict']})." + (f" Warning: {rv['warning']}." if rv.get("warning") else ""))
    if cost["curves"]["problems"]:
        lines.append("**Consistency problems:** " + "; ".join(cost["curves"]["problems"][:10]))
    return lines


_JUDGE_NOTE = (", the independent classifier is another architecture trained on the same ten classes with its "
               "own seed (`config.JudgeConfig`)")


def _premise_section(p: dict) -> list[str]:
    """The premise first: is the reference option (A) clearly better than the candidate (B), and not by copying?"""
    spaces = p["spaces"]
    rows = []
    for name, o in p["options"].items():
        fd = [_ci(o["spaces"][s]["fd"], o["spaces"][s]["fd_ci"], "frechet", ".1f") for s in spaces]
        kid = [_ci(o["spaces"][s]["kid"], o["spaces"][s]["kid_ci"], "kid", ".3f") for s in spaces]
        m = o["memorisation"]["pixels"]
        rows.append([name, *fd, *kid, _ci(o["median_quality"], o["median_quality_ci"], "quality"),
                     f"{m['median_distance']:.2f} ({m['median_distance_real']:.2f})",
                     f"{_pct(m['share'])} [{_pct(m['share_ci'][0])}, {_pct(m['share_ci'][1])}]"])
    head = ([f"FD, {s}" for s in spaces] + [f"KID, {s}" for s in spaces]
            + ["median quality", "nearest training image, pixels (held-out real)", "closer than real's 1st pct."])
    verdict = (f"**Premise {p['verdict']}**: {p['reference']} is clearly better than {p['candidate']} and copies no "
               "more than held-out real images do." if p["verdict"] == "holds" else
               f"**Premise fails**; every routing figure below tests the machinery, not the idea: "
               + "; ".join(p["failed"]) + ".")
    return ["## Premise", verdict,
            f"Rule (`hybrid_jax.study.premise.verdict`, `report/premise.json`): A's FD below B's with non-overlapping 95 % "
            f"intervals in every space ({', '.join(spaces)}: the pixel PCA is fitted on the {p['n_train']} training "
            f"images' pixels{_JUDGE_NOTE if premise.JUDGE_SPACE in spaces else ''}, each independently of the "
            f"labeler), A's median quality above B's, the calibrated (never "
            f"forced) label rule's A_needed share in [{_pct(p['a_needed_range'][0])}, {_pct(p['a_needed_range'][1])}] "
            f"(here {_pct(p['a_needed_calibrated'])}), and no option closer to a training image than the "
            f"{p['copy_quantile']:.0%} quantile of held-out real images more often than real images are (an interval "
            f"above {p['copy_quantile']:.0%}). FD and KID are to the {p['n_real']} held-out real images; intervals "
            "resample the generated images.",
            _table(["option", *head], rows)]


def _headline(cost: dict) -> list[str]:
    c = cost["curves"]
    op = c["operating"]
    same = lambda s: next((p for p in c["points"] if p["strategy"] == s and p["param"] is not None
                           and np.isclose(p["param"], c["operating_random"]["param"])), None)
    rows = [next(p for p in c["points"] if p["strategy"] == s) for s in fixed_strategies(cost) + ["oracle"]]
    rows += [op, c["operating_random"]] + [p for p in (same("entropy"), same("best feature")) if p]
    name = lambda p: p["strategy"] + ("" if p["param"] is None else
                                      f" @ {'threshold' if p['strategy'] == 'router' else 'share'} {p['param']:.2f}")
    table = _table(["strategy", "share to A", "savings: passes", "FLOPs", "seconds", "mean quality [95 % CI]",
                    "FD (± sd)", "precision [95 % CI]", "recall [95 % CI]", "accuracy [95 % CI]", "warning"],
                   [[name(p), _pct(p["share_to_a"]), _pct(p["passes_savings"], "savings"),
                     _pct(p["flops_savings"], "savings"), _pct(p["seconds_savings"], "savings"),
                     _ci(p["quality"], p["quality_ci"], "quality"),
                     "–" if p["fd"] is None else sanity.fmt("frechet", p["fd"], ".3g")
                     + (f" ± {p['fd_sd']:.2g}" if p.get("fd_sd") else ""),
                     _ci(p["precision"], p["precision_ci"], "precision"), _ci(p["recall"], p["recall_ci"], "recall"),
                     _ci(p["accuracy"], p["accuracy_ci"], "accuracy"), p["warning"] or ""] for p in rows])
    choices = ", ".join(sorted({ch["feature"] for ch in c["best_feature_choices"]}))
    return ["## Cost and quality, out of sample", "![cost-quality](cost_quality.png)",
            f"{c['n']} seeds; class prior (share cheap_ok) {_pct(c['class_prior'])}; out-of-sample ROC AUC of the "
            f"router {sanity.fmt('auc', c['router_auc'], '.3f') if np.isfinite(c['router_auc']) else '–'}. "
            "Savings in seconds are composed from the measured per-image seconds of each unit of work (see Cost); "
            "passes and FLOPs are exact counts. Random routing: exact expectation (FD: mean ± sd over random "
            "masks). Zero-training baseline: the prefix's attention entropy, highest to A. Best single feature: "
            f"chosen on the training folds only (chosen: {choices}).", table]


def _early_exit_section(e: dict) -> list[str]:
    """The early-exit policy beside the router at k = 12, the entropy rule and random routing at its share to A."""
    def gap(p):
        g = p.get("gap")
        return "–" if g is None else _ci(g["quality"], g["ci"], "quality_gap")
    rows = [[name, _pct(p["share_to_a"]), f"{p['flops_per_image'] / 1e9:.4g}",
             _pct(p["flops_savings"], "savings") if "flops_savings" in p else "–",
             _ci(p["quality"], p["quality_ci"], "quality"), gap(p)] for name, p in e["points"].items()]
    versus = {name: e["points"][name]["gap"] for name in ("router (k = 12)", "random (same share)")}
    verdict = lambda g: ("better" if g["ci"][0] > 0 else "worse" if g["ci"][1] < 0 else "no different (CI includes 0)")
    return ["### Early exit after the first AR steps (out of sample)",
            f"Decided after {e['k_early']} AR steps where the layer-1 attention entropy lies in a tail chosen on the "
            f"training folds (decisions right at least {_pct(e['min_accuracy'])} of the time there), else the router "
            f"at k = 12: "
            + (f"{_pct(e['exit_share'])} of seeds exit, their decisions right {_pct(e['exited_accuracy'])} of the "
               "time; " if e["exit_share"] > 0 else "no seed exits (in no fold did a tail reach that accuracy on the "
               "training folds), so the policy is the router; ")
            + f"the entropy's "
            f"single-feature ROC AUC (cheap_ok) {_ci(e['entropy_auc'], e.get('entropy_auc_ci'), 'auc')} (the raw "
            "entropy, nothing fitted or oriented, on every seed). Mean quality against the router: "
            f"{verdict(versus['router (k = 12)'])}; against random routing at the same share to A: "
            f"{verdict(versus['random (same share)'])}. Cost per image counts the steps each seed ran (an exited seed: "
            "the short probe and A or B finished from it; the others: the router's whole probe).",
            _table(["policy", "share to A", "GFLOPs / image", "FLOPs savings vs A", "mean quality [95 % CI]",
                    "early exit minus it [95 % CI]"], rows)]


def _distill_section(premise: dict) -> list[str]:
    """Each distillation's students against naive DDIM at their steps (per-seed MSE to the teacher's DDIM image),
    and their FD beside the teacher's (the trained network by DDIM on the teacher's grid: "lossless" only where the
    student's FD lies in the teacher's interval in every space)."""
    options, out = premise["options"], []
    fds = lambda name: options.get(name, {}).get("spaces", {})
    fd_of = lambda name: "; ".join(f"{sp} {f['fd']:.4g} [{f['fd_ci'][0]:.4g}, {f['fd_ci'][1]:.4g}]"
                                   for sp, f in fds(name).items()) or "–"
    for d in premise["distillations"]:
        ref, rows = fds(d["teacher"]), []
        for j, r in zip(d["judged"], d["rounds"]):
            fd = {sp: f["fd"] for sp, f in fds(j["student_option"]).items()}
            lossless = bool(fd) and bool(ref) and all(f["fd_ci"][0] <= fd.get(sp, np.inf) <= f["fd_ci"][1]
                                                      for sp, f in ref.items())
            rows.append([f"{r['teacher_steps']} -> {j['steps']}", r["steps"],
                         f"{r['first_loss']:.4g} -> {r['final_loss']:.4g}",
                         _ci(j["student"]["mean"], j["student"]["ci"], "mse", ".4g"),
                         _ci(j["naive DDIM"]["mean"], j["naive DDIM"]["ci"], "mse", ".4g"),
                         _ci(j["student - naive"]["mean"], j["student - naive"]["ci"], "mse_gap", ".4g"),
                         j["verdict"], fd_of(j["student_option"]), fd_of(j["naive_option"]),
                         "yes" if lossless else "no"])
        out += [f"### Distilled {d['network']} (progressive distillation, options `{d['name']}`)",
                f"Each round's student (v-prediction, started from its teacher's weights) against naive DDIM of the "
                f"trained {d['network']} on the same steps, per seed on every seed ({d['n_seeds']}; out of sample: no "
                f"seed's image trained it): mean MSE to the teacher's image ({d['teacher_grid']}) from the same "
                "start, with 95 % bootstrap intervals. FD per premise space [95 % CI] of the student's and of naive "
                f"DDIM's images of every seed; lossless means within the teacher's (`{d['teacher']}`: "
                f"{fd_of(d['teacher'])}) in every space.",
                _table(["round", "steps trained", "loss first -> last", "student MSE [95 % CI]",
                        "naive DDIM MSE [95 % CI]", "student - naive [95 % CI]", "verdict", "student FD [95 % CI]",
                        "naive DDIM FD [95 % CI]", "lossless"], rows)]
    return out


def _cost_section(cost: dict) -> list[str]:
    t = cost["timing"]
    rows = t["rows"]
    check = cost["timing_check"]
    fixed = fixed_strategies(cost)
    share = {name: float(i == 0) for i, name in enumerate(fixed)}
    brief = dict(zip(fixed, BRIEF["fixed_seconds"]), **BRIEF["seconds"])
    table = _table(["work", "s / image (median)", "min – max over rounds", "share to A", f"savings vs {fixed[0]}",
                    "brief s / image"],
                   [[n, sanity.fmt("seconds", r["seconds_per_image"], ".4g"),
                     f"{r['min']:.4g} – {r['max']:.4g}" + (" (composed)" if r.get("composed") else ""),
                     _pct(t["share_to_a"].get(n, share.get(n))),
                     _pct(1 - r["seconds_per_image"] / rows[fixed[0]]["seconds_per_image"], "savings")
                     if n in (*fixed, "oracle (labels)", "learned router") else "–",
                     brief.get(n)] for n, r in rows.items()])
    units = _table(["unit of work", "passes / image", "GFLOPs / image", "s / image"],
                   [[u, v["passes"], v["flops"] / 1e9, v["seconds"]] for u, v in cost["units"].items()])
    return ["## Cost (measured)",
            f"Measured on `{cost['device']}` ({cost['platform']}) over the first {t['n_images']} seeds, every "
            f"strategy in batches of {t['batch_size']}, charged per real image (no strategy pays padding), median "
            f"of {t['repeats']} interleaved rounds after one compiling call of each program ("
            + ", ".join(f"{k} {v:.3g} s" for k, v in t.get("first_call", {}).items()) + " for its first batch). "
            "A strategy marked composed has no probe and is not timed again: charged per image, its seconds are "
            "exactly its share of the fixed rows. The learned router uses its "
            "out-of-sample decisions; its probe is measured whole (AR prefix + features + trees) and in parts.",
            table,
            f"Timing check: the routed pipeline measured {check['measured']:.4g} s/image; composed from its parts "
            f"(probe + {check['share_to_a']:.2f} x A + {1 - check['share_to_a']:.2f} x B finish) "
            f"{check['composed']:.4g} s/image; ratio {check['ratio']:.3f}"
            + ("" if abs(check["ratio"] - 1) <= 0.1 else " **(off by more than 10 %)**") + ".",
            units,
            f"Routed images (deployed router, first {cost['consistency']['n']} seeds) equal each model's own image: "
            f"max |diff| {cost['consistency']['max_abs_diff_a']:.2e} (A side), "
            f"{cost['consistency']['max_abs_diff_b']:.2e} (B side, resumed from the cached prefix)."]


def _router_section(router: dict, out: Path) -> list[str]:
    cv, best = router["cv"], router["best_split"]
    n_train = int(np.mean([f["n_train"] for f in cv["folds"]]))
    s = ["## Router (the brief's tables)",
         f"{router['n']} labeled seeds, {router['n_cheap_ok']} cheap_ok; class-prior precision "
         f"{_pct(router['prior']['precision'])}. The train column is **in-sample** (each fold's recipe on its own "
         f"~{n_train} training seeds). CV and best-split columns are out of sample, with the feature ablation "
         f"nested in each training set. Fits: {router['fits']['total']} "
         f"({router['fits']['cached']} reused from a previous run)."
         + (" Every fit learned the mean quality of each seed's prefix finishes (`router.denoise`; ours, not the "
            "brief's), cut at its training rows' cheap_ok share, instead of the labels; every figure is on the "
            "labels." if router.get("denoised") else ""),
         _table(["metric", f"train, in-sample (n ≈ {n_train})", f"{cv['n_folds']}-fold CV test (mean ± std)",
                 f"best of {len(best['splits'])} splits (test, n = {len(best['test_idx'])})", "brief CV",
                 "brief best"],
                [[m, sanity.fmt(m, cv["train_mean"][m]), f"{cv['test_mean'][m]:.3f} ± {cv['test_std'][m]:.3f}",
                  sanity.fmt(m, best["test"][m]), f"{BRIEF['cv'][m][0]:.3f} ± {BRIEF['cv'][m][1]:.3f}",
                  BRIEF["best"][m]] for m in ("accuracy", "precision", "recall")])]
    s.append("The best split is chosen by its own test precision, so its column is optimistic by construction "
             "(the brief's procedure, kept for comparison)." + (f" Warning: {best['warning']}." if best.get("warning")
                                                               else ""))
    s.append(f"![threshold sweep]({figures.threshold_sweep(router['sweep'], out)})")
    kept = {}
    for f in router["folds"]:
        for n in f["kept"]:
            kept[n] = kept.get(n, 0) + 1
    s.append(f"Features kept by the deployed recipe's ablation: {len(router['kept'])} "
             f"(brief: {BRIEF['kept']} of {BRIEF['candidates']}). Kept in how many of the {len(router['folds'])} "
             "cross-fit folds: " + ", ".join(f"{n} {c}" for n, c in sorted(kept.items(), key=lambda kv: -kv[1])) + ".")
    if router.get("ablation"):
        s.append(f"![ablation]({figures.ablation(router['ablation'], out)})")
    return s


def _ceiling_section(c: dict) -> list[str]:
    """The router's AUC beside what any probe of B's prefix, and any judge of B's image blind to A, could reach."""
    auc = lambda v: _ci(v["auc"], v["ci"], "auc")
    rows = [["router (cross-fit, out of sample)", auc(c["router"]), "–"],
            [f"prefix oracle: mean quality of {c['draws']} fresh finishes of the seed's prefix (nothing fitted)",
             auc(c["prefix_oracle"]), "–"],
            ["image oracle: quality of the seed's own B image (nothing fitted)", auc(c["image_oracle"]), "–"],
            *[[f"the router's learner (every feature) trained on the {name} (cross-fit, out of sample)", auc(v),
               _ci(v["minus_label"], v["minus_label_ci"], "auc_gap")] for name, v in c.get("learned", {}).items()],
            ["no skill", "0.500", "–"]]
    sd = c["quality_sd"]
    return ["### What a probe of B's prefix can know",
            f"Every seed's first k AR steps of B finished {c['draws']} more times with fresh keys (the remaining AR "
            "steps' and the corrector's noise drawn again) and scored by the labels' scorer. The prefix fixes "
            f"{_ci(c['icc']['value'], c['icc']['ci'], 'icc')} of the variance of B's final quality (intraclass "
            f"correlation; quality sd {sd['total']:.3f} in all, {sd['within_prefix']:.3f} between finishes of one "
            "prefix). ROC AUC for cheap_ok, 95 % bootstrap intervals over seeds; the prefix oracle estimates the "
            "ceiling of any router that reads the prefix (from finitely many finishes, so below it: a learner that "
            "pools seeds can come out above the estimate), the image oracle that of any judge of B's finished image "
            "that cannot see A:",
            _table(["rule", "ROC AUC (cheap_ok) [95 % CI]", "minus the same learner on the label [95 % CI]"], rows)]


def _labels_section(run: Run, router: dict) -> list[str]:
    from hybrid_jax.study.stages import labels as labels_stage

    labels = summary(run, "labels")
    n = labels["n"]
    s = ["## Labels",
         f"Label source for the router: **{router['label_source']}**. Automated: {labels['rule']}. Result: "
         f"{labels['auto_cheap_ok']} cheap_ok of {n}, A_needed {_pct(1 - labels['auto_cheap_ok'] / n)} (brief, "
         f"human: {_pct(BRIEF['a_needed_share'])})."
         + ("" if "tau_by_class" not in labels else " tau per class: "
            + ", ".join(f"{c} {t:.4f}" for c, t in labels["tau_by_class"].items()) + ".")]
    if "validation" not in labels:  # a work dir from before the validated score
        return s + ["Labeler validation (ROC AUC): " + ", ".join(
            f"{k} {v:.3f}" for k, v in labels["validation_auc"].items() if isinstance(v, float)) + "."]
    ag, scores = labels.get("agreement"), labels_stage.load_scores(run)
    seeds = seeds_stage.load(run)
    figs = figures.quality_scores(scores, seeds["seeds"], *seeds_stage.brief_images(seeds), ag, run.path("report"))
    return (s + _score_validation(labels) + _score_distribution(labels, scores, figs[0])
            + (_label_agreement(ag, figs[1:]) if ag else []))


def _score_validation(labels: dict) -> list[str]:
    """What the quality score is, and its validation against every degradation family at every strength."""
    from hybrid_jax.quality import degradations, validation

    auc, content, clf = labels["validation_auc"], labels.get("content", {}), labels.get("classifier")
    s = [f"Quality score ({labels.get('score', 'see docs/labeler.md')}; docs/labeler.md): a discriminator "
         "trained to tell real images of the class from degraded copies of them and from other classes, on "
         "natural-image statistics" + (" and the features of a CIFAR-10 classifier trained here (held-out "
                                       f"ten-way accuracy {_pct(clf['accuracy_held_out'])})" if clf else "")
         + ", mapped to [0, 1] on the scale of real images (0.5 at the 5 % quantile of cross-fitted reference "
         "images)." + ("" if content.get("used", True) else
                       f" **The classifier (content) part is off: {content.get('why_not')}**; the score sees "
                       "image statistics only and the wrong-class check is left out.")]
    v = labels["validation"]
    verdict = "**passed**" if v["passed"] else "**FAILED** (" + "; ".join(v["problems"][:6]) + ")"
    s.append(f"Validation on {v['n_real']} held-out real images (never trained on), each family scored by a "
             f"discriminator trained without that family (leave-one-family-out): ROC AUC of real above degraded. "
             f"Pass rule ({v['rule']}): {verdict}; mean AUC {v['mean']:.3f}, lowest cell {v['min']:.3f}. "
             "Previous score: the k-NN realism on eleven statistics it replaces.")
    base = labels.get("baseline_auc", {}).get("auc", {})
    rows = []
    for fam in [f for f in degradations.FAMILIES if f in auc] + [f for f in auc if f not in degradations.FAMILIES]:
        levels, f = auc[fam], degradations.FAMILIES.get(fam)
        pairs = validation.ordered(levels, fam) if f else list(levels.items())
        prev = dict(validation.ordered(base[fam], fam)) if fam in base else {}
        rows.append([fam, f.unit if f else "", " / ".join(str(x) for x in f.strengths) if f else ""]
                    + [sanity.fmt("auc", a) for _, a in pairs]
                    + [" / ".join(f"{prev[lvl]:.2f}" for lvl, _ in pairs if lvl in prev) or "–"])
    s.append(_table(["family", "strength parameter", "weak / medium / strong", "AUC weak", "AUC medium",
                     "AUC strong", "previous score (w / m / s)"], rows))
    if v.get("omitted"):
        s.append("Left out: " + "; ".join(f"{k} ({why})" for k, why in v["omitted"].items()) + ".")
    return s


def _score_distribution(labels: dict, scores: dict, figure: str) -> list[str]:
    """The scores of A, B, held-out real and reference images, and their sanity checks."""
    q, ms, san = labels["score_quantiles"], labels["mean_score"], labels["sanity"]
    fd = san["frechet_to_reference"]
    return [f"![quality scores]({figure})",
            _table(["images", "n", "mean", "10 %", "median", "90 %"],
                   [[name, len(scores[key]) if key in scores else "–", q[name]["mean"], q[name]["q10"],
                     q[name]["q50"], q[name]["q90"]]
                    for name, key in (("A", "score_a"), ("B", "score_b"), ("real", "score_real"),
                                      ("reference", "score_reference")) if name in q]),
            f"Mean quality: A {sanity.fmt('quality', ms['A'])}, B {sanity.fmt('quality', ms['B'])}, held-out "
            f"real {sanity.fmt('quality', ms['real'])}. Held-out real vs reference images: "
            f"{_pct(san['real_inside_reference_5_95'])} inside the reference's 5-95 % range "
            f"(KS {san['ks_real_vs_reference']:.3f}, p = {san['ks_p']:.2g}): "
            + ("same range." if san["same_range"] else "**not the same range**.")
            + f" Frechet distance to the reference: A {fd['A']:.3g}, B {fd['B']:.3g}, held-out real {fd['real']:.3g}."
            + "".join(f" **Warning: {w}.**" for w in san["warnings"])]


def _label_agreement(ag: dict, strip: list[str]) -> list[str]:
    """People's binary labels against the automated ones, with the strip of seeds where they disagree."""
    kappa = ag.get("cohen_kappa")
    cm = ag["confusion"]
    acc = _agree(ag) if "accuracy_ci" in ag else _pct(ag["accuracy"])  # no interval in older work dirs
    s = [f"Human vs automated labels on {ag['n']} seeds: accuracy {acc}, Cohen's kappa "
         + ("–" if kappa is None or not np.isfinite(kappa) else f"{kappa:.3f}")
         + f"; {len(ag['disagree'])} seeds disagree.",
         _table(["human \\ automated"] + cm["labels"],
                [[lab] + row for lab, row in zip(cm["labels"], cm["matrix"])])]
    if strip:
        s.append(f"Seeds where they disagree (first {min(12, len(ag['disagree']))}; A above B): "
                 f"![disagreements]({strip[0]})")
    return s


def _training_section(run: Run, out: Path) -> list[str]:
    done = {m: summary(run, m) for m in train.models(run.cfg)}
    data, seeds = summary(run, "data"), seeds_stage.load(run)
    return ["## Training",
            f"Data: {data['source']} ({data['n_train']} training images; {data['n_holdout']} held out from "
            f"{data['holdout_from']}).",
            f"![training curves]({figures.training_curves({m: train.load_losses(run, m) for m in done}, out)})",
            _table(["model", "steps", "first loss", "final loss (mean of last 10)", "seconds", "resumed from"],
                   [[m, d["steps"], d["first_loss"], d["final_loss"], d["seconds"], d["resumed_from"]]
                    for m, d in done.items()]),
            "## Samples: A (top) vs B (bottom), same seeds",
            f"![samples]({figures.samples(seeds['seeds'], *seeds_stage.brief_images(seeds), out)})"]


def _class_section(run: Run) -> list[str]:
    """Per-class rows of the main quality and routing numbers and of the allocation (out of sample), then all seeds."""
    from hybrid_jax.study.stages import labels as labels_stage

    decisions, scores = io.read_npz(run.path("routed", "decisions.npz")), labels_stage.load_scores(run)
    rows = evaluation.per_class(run.cfg.data.classes, seeds_stage.load(run)["labels"], decisions["to_a"],
                                decisions["oracle_to_a"], scores["score_a"], scores["score_b"],
                                seed=run.cfg.router.seed,
                                boot=stats.BootstrapConfig(n_resamples=run.cfg.cost.bootstrap))
    cost, out, classes = routed_stage.load(run), run.path("report"), run.cfg.data.classes
    by_class = cost["curves"].get("by_class")
    figure = [] if by_class is None else [
        f"![routing per class]({figures.cost_quality_by_class(by_class, out, fixed_strategies(cost), classes)})"]
    return ["## Per class (out of sample)",
            "Each seed's class is seed mod the number of classes (`generators.seed_labels`). Quality: the "
            "labeler's score; routed: A's image where the router sent the seed to A, else B's; random: routing "
            "at the class's share to A (exact expectation), and the gap routed - random; precision: share of the "
            "seeds routed to B that the labels call cheap_ok, beside its baseline the class prior. 95 % bootstrap "
            "intervals over the class's seeds.",
            _table(["class", "seeds", "A_needed", "quality A", "quality B", "quality routed [95 % CI]",
                    "quality random", "routed - random [95 % CI]", "to A", "router accuracy",
                    "precision (cheap_ok) [95 % CI]", "class prior"],
                   [[r["class"], r["seeds"], _pct(r["a_needed"]), f"{r['quality_a']:.3f}", f"{r['quality_b']:.3f}",
                     _ci(r["quality_routed"], r["quality_routed_ci"], "quality"), f"{r['quality_random']:.3f}",
                     _ci(r["gap_vs_random"], r["gap_vs_random_ci"], "quality", "+.3f"), _pct(r["share_to_a"]),
                     _pct(r["accuracy"]), _ci(r["precision"], r["precision_ci"], "share"), _pct(r["prior"])]
                    for r in rows]), *figure] + _class_allocation(allocate_stage.load(run), out, classes)


def _class_allocation(result: dict, out: Path, classes: tuple[str, ...]) -> list[str]:
    """Per class: the deployed policy's cross-fitted point beside random at its mix, the best fixed option
    at no more FLOPs (overall) and the oracle (present with several classes)."""
    d, pts = result.get("deployed"), result["points"]
    if d is None or "per_class" not in pts[0]:
        return []
    mine, best = _deployed_and_best_fixed(result)
    cascade = d["policy"] != "learned allocation"
    rand = next(p for p in pts if p["param"] == d["threshold"]
                and p["policy"] == (f"random ({d['policy']}'s mix)" if cascade else "random (same mix)"))
    oracle = next(p for p in pts if p["policy"] == ("oracle (all options)" if cascade else "oracle"))
    shown = [(f"{d['policy']} @ {d['threshold']:.2f}", mine), (rand["policy"], rand)]
    shown += ([(best["policy"], best)] if best else []) + [(oracle["policy"], oracle)]
    q = lambda c: _ci(c["quality"], c["quality_ci"], "quality")
    return [f"![allocation per class]({figures.allocation_by_class(result, out, classes)})",
            "Allocation per class (cross-fitted, the deployed policy's threshold; quality [95 % CI] and FLOPs "
            "savings per image in each class; the fixed option is the best one at no more FLOPs overall):",
            _table(["class", "seeds"] + [name for name, _ in shown],
                   [[c, mine["per_class"][c]["seeds"]]
                    + [f"{q(p['per_class'][c])}, {_pct(p['per_class'][c]['flops_savings'], 'savings')}"
                       for _, p in shown] for c in classes if c in mine["per_class"]])]


def _curves_section(curves: dict, out: Path) -> list[str]:
    """Each option of the pair along its training: FD / KID / median quality with intervals against training cost."""
    spaces = curves["spaces"]
    rows = [[p["option"], ", ".join(f"{n} {s}" for n, s in p["steps"].items()), _pct(p["fraction"]),
             f"{p['train_flops'] / 1e12:.3g}", f"{p['train_seconds']:.0f}",
             *[_ci(p["spaces"][s]["fd"], p["spaces"][s]["fd_ci"], "frechet", ".1f") for s in spaces],
             *[_ci(p["spaces"][s]["kid"], p["spaces"][s]["kid_ci"], "kid", ".3f") for s in spaces],
             _ci(p["median_quality"], p["median_quality_ci"], "quality")] for p in curves["points"]]
    return ["### Learning curves", f"![learning curves]({figures.learning_curves(curves, out)})",
            f"Each option of the pair sampled with its real sampler at every training snapshot on the first "
            f"{curves['num_seeds']} seeds (`curves` stage; the last row of each option is the trained model). "
            "Training TFLOPs: XLA's cost of one training step x steps; seconds: the stage's measured seconds per "
            "step x steps (B: decoder and corrector together). A curve still falling at its last point has not "
            "converged; no point is extrapolated.",
            _table(["option", "snapshot steps", "of training", "training TFLOPs", "training s",
                    *[f"FD, {s}" for s in spaces], *[f"KID, {s}" for s in spaces], "median quality"], rows)]


def write_report(run: Run) -> Path:
    out = run.path("report")
    cost, router = routed_stage.load(run), router_stage.load_results(run)
    figures.cost_quality(cost["curves"], out, fixed_strategies(cost))
    premise = io.read_json(out / "premise.json")
    body = (_preamble(run, cost, router)[:1] + _premise_section(premise) + _curves_section(curves_stage.load(run), out)
            + _preamble(run, cost, router)[1:]
            + _headline(cost) + (_early_exit_section(cost["early_exit"]) if "early_exit" in cost else [])
            + _distill_section(premise)
            + _cost_section(cost) + _router_section(router, out)
            + (_ceiling_section(router["ceiling"]) if "ceiling" in router else [])
            + _allocation_section(allocate_stage.load(run), out)
            + _class_section(run) + _labels_section(run, router) + _training_section(run, out)
            + ["## Config", "```json\n" + json.dumps(config_lib.to_dict(run.cfg), indent=1) + "\n```"])
    return io.write_text(out / "report.md", "\n\n".join(body) + "\n")
