"""Stage `labels`: a validated quality score for every seed's A and B image, the automated labels from it,
and the comparison with human labels when they are imported or written by the labeling page.

A label means what the brief's people meant: A_needed iff B's image is clearly worse than A's.
The score (`hybrid_jax.quality.score`, docs/labeler.md) is trained here: a small CIFAR-10
classifier (resumable, orbax checkpoints under `labels/classifier/`) where the data source has
the ten classes, then a degradation discriminator on natural-image statistics and the
classifier's features. Before anything is trusted it is validated on held-out real images
against every degradation family at every strength, leave-one-family-out (`labels/validation.json`).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np
import scipy.stats
from sklearn.metrics import confusion_matrix

from hybrid_jax import config as config_lib
from hybrid_jax import data as data_lib
from hybrid_jax import io, sharding, stats
from hybrid_jax.checkpoint import Checkpointer
from hybrid_jax.quality import labels as labels_lib
from hybrid_jax.quality import build, degradations, rule, validation
from hybrid_jax.quality import classifier as clf_lib
from hybrid_jax.quality import score as score_lib
from hybrid_jax.study import premise
from hybrid_jax.study.rundir import Run, Stage, done_record, file_hash, fingerprint
from hybrid_jax.study.stages import data as data_stage
from hybrid_jax.study.stages import seeds as seeds_stage

log = logging.getLogger("hybrid_jax.stages.labels")

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def human_labels_path(run: Run) -> Path:
    return run.path("labels", "human.csv")


# ----------------------------------------------------------------------------- inputs

def _cifar10_source(run: Run) -> tuple[str | None, str]:
    """(the data stage's CIFAR-10 source, "") or (None, why the classifier is off)."""
    d = run.cfg.data
    done = done_record(run, "data")["summary"]
    if done["stand_in"]:
        return None, "stand-in data has no classes"
    path = data_lib.resolve_source(d.path, offline=d.offline, class_name=d.class_name)
    tfds_name = path[len(data_lib.TFDS_PREFIX):].split("/")[0].split(":")[0]
    if path.startswith(data_lib.TFDS_PREFIX) and tfds_name != "cifar10":
        return None, f"the data source {path} is not CIFAR-10"
    if d.num_classes > 1:
        return None, f"the content classifier scores one class, and the run has {d.num_classes} ({d.class_name})"
    if d.class_name not in data_lib.CIFAR10_CLASSES:
        return None, f"{d.class_name!r} is not a CIFAR-10 class"
    return path, ""


def _classifier_dir(run: Run) -> Path:
    """labels/classifier/<config>/: another classifier config trains in another folder, this one resumes."""
    guard = build.classifier_guard(run.cfg.labeler, done_record(run, "data")["fingerprint"])
    return run.path("labels", "classifier", fingerprint(guard))


# ----------------------------------------------------------------------------- the stage

def run_stage(run: Run) -> dict:
    cfg, lc = run.cfg, run.cfg.labeler
    t0 = time.perf_counter()
    data, seeds = data_stage.load(run), seeds_stage.load(run)
    reference, held_out = data["train"], data["holdout"]
    if len(held_out) < 2:
        raise config_lib.ConfigError(f"the labeler needs at least 2 held-out real images, got {len(held_out)}; "
                                     "raise data.holdout")
    source, why_not = _cifar10_source(run)
    out: dict = {}
    content = others = wrong_held = None
    if source is not None:
        others = build.load_other_classes(cfg.data.class_name, source, lc, cfg.geometry.image_size)
        content = build.train_content_classifier(reference, others.train, cfg.data.class_name, lc,
                                                 _classifier_dir(run) / "ckpt", done_record(run, "data")["fingerprint"])
        _save_network(run, "classifier", _model_guard(run), content)
        out["classifier"] = content.summary | {"accuracy_held_out": build.held_out_accuracy(
            content, held_out, others.held)}
        wrong_held = build.wrong_class_images(cfg.data.class_name, others.held, lc.seed)
        if cfg.judge.widths:
            out["judge"] = _train_judge(run, reference, held_out, others)
    else:
        log.warning("labeler: %s, so the score's classifier (content) part is off and it sees natural-image "
                    "statistics only; the wrong-class check is left out", why_not)
    t_classifier = time.perf_counter()
    fitted = build.fit_quality(reference, lc, content, others.train if others else None, cfg.data.class_name,
                               cfg.geometry)
    model, featurize = fitted.model, fitted.featurize
    t_fit = time.perf_counter()

    reference_raw = featurize(reference)
    images_a, images_b = seeds_stage.brief_images(seeds)
    raw = {"a": featurize(images_a), "b": featurize(images_b), "real": featurize(held_out)}
    s = {k: model.score(v) for k, v in raw.items()}
    s_ref = fitted.reference_scores
    feats = {k: model.space.fd_features(v) for k, v in raw.items()}
    feats_ref = model.space.fd_features(reference_raw)
    tau, rule_text = rule.label_rule(lc, s["real"])
    per_class = {}
    if cfg.data.num_classes > 1:  # the rule within each class, against its own held-out real images
        rule_text += "; applied within each class (each class's tau from its own held-out real images)"
        if lc.a_needed_share <= 0:
            taus = rule.class_taus(s["real"], data["holdout_labels"], cfg.data.num_classes, lc.margin_quantile)
            per_class["tau_by_class"] = dict(zip(cfg.data.classes, taus.tolist()))
    auto = dict(zip(map(int, seeds["seeds"]), rule.label_by_class(s["a"], s["b"], s["real"], lc, seeds["labels"],
                                                                  data["holdout_labels"])))
    labels_lib.write_labels(run.path("labels", "auto.csv"), auto)
    io.write_npz(run.path("labels", "scores.npz"), seeds=seeds["seeds"], score_a=s["a"], score_b=s["b"],
                 score_real=s["real"], score_reference=s_ref, feats_a=feats["a"], feats_b=feats["b"],
                 feats_real=feats["real"], feats_reference=feats_ref)
    io.write_npz(run.path("labels", "model", "quality.npz"), **score_lib.to_arrays(model))
    io.write_json(run.path("labels", "model", "meta.json"),
                  {"content": content is not None, "inception": bool(lc.inception_weights),
                   "inputs": model.space.input_names()})

    # validation on held-out real images (never trained on), leave-one-family-out; the previous score as baseline
    suite = build.validate(fitted, held_out, wrong_held)
    suite_families = degradations.families(cfg.geometry)
    base = build.validate_baseline(reference, held_out, lc.k, fitted.families, wrong_held, geometry=cfg.geometry)
    io.write_json(run.path("labels", "validation.json"), {
        "suite": suite, "baseline": base, "pass_rule": validation.PASS_TEXT, "leave_one_family_out": True,
        "levels": {f: list(validation.level_names(f)) for f in fitted.families},
        "strengths": {f: [str(v) for v in suite_families[f].strengths] for f in fitted.families},
        "units": {f: suite_families[f].unit for f in fitted.families}})
    t_val = time.perf_counter()

    out.update({
        "rule": rule_text, "tau": tau, **per_class, "forced_share": lc.a_needed_share > 0,
        "auto_cheap_ok": sum(v == "cheap_ok" for v in auto.values()), "n": len(auto),
        "score": ("discriminator + classifier" if content is not None else "discriminator on statistics only")
                 + (" + Inception" if lc.inception_weights else ""),
        "content": {"used": content is not None, "why_not": why_not},
        "validation_auc": suite["auc"],
        "validation": {k: suite[k] for k in ("mean", "min", "strongest", "passed", "problems", "omitted")}
                      | {"rule": validation.PASS_TEXT, "n_real": suite["n_real"], "leave_one_family_out": True},
        "baseline_auc": {"mean": base["mean"], "min": base["min"], "auc": base["auc"]},
        "mean_score": {"A": float(s["a"].mean()), "B": float(s["b"].mean()), "real": float(s["real"].mean())},
        "score_quantiles": {name: _quantiles(v) for name, v in
                            (("A", s["a"]), ("B", s["b"]), ("real", s["real"]), ("reference", s_ref))},
        "sanity": _sanity(s, s_ref, feats, feats_ref),
        "seconds": {"classifier": t_classifier - t0, "fit": t_fit - t_classifier, "validation": t_val - t_fit},
    })
    for w in out["sanity"]["warnings"]:
        log.warning("labeler: %s", w)
    if not suite["passed"]:
        log.warning("labeler validation failed its pass rule (%s): %s", validation.PASS_TEXT,
                    "; ".join(suite["problems"][:5]))
    human = _import_human_labels(run, seeds["seeds"])
    if human:
        out["human_cheap_ok"] = sum(v == "cheap_ok" for v in human.values())
        out["human_n"] = len(human)
        out["agreement"] = agreement(human, auto, np.random.default_rng(cfg.router.seed),
                                     stats.BootstrapConfig(n_resamples=cfg.cost.bootstrap))
    return out


def _model_guard(run: Run) -> dict:
    return build.classifier_guard(run.cfg.labeler, done_record(run, "data")["fingerprint"])


def _save_network(run: Run, name: str, guard: dict, net: build.Content) -> None:
    """A trained network as this run's output, labels/model/<name>/ (rewritten: the folder is cleared first)."""
    if sharding.is_writer():
        shutil.rmtree(run.path("labels", "model", name), ignore_errors=True)
    sharding.sync(f"labels/model/{name} cleared")
    Checkpointer(run.path("labels", "model", name), guard).save(net.summary["steps"], net.params)


def _judge_guard(run: Run) -> dict:
    return build.judge_guard(run.cfg.judge, done_record(run, "data")["fingerprint"])


def _train_judge(run: Run, reference: np.ndarray, held_out: np.ndarray, others: build.OtherClasses) -> dict:
    """The premise's second judge (`config.JudgeConfig`), trained on the labeler's images in its own folder
    (labels/judge/<config>/) and saved to labels/model/judge; its summary and ten-way held-out accuracy."""
    guard = _judge_guard(run)
    judge = build.train_judge(reference, others.train, run.cfg.data.class_name, run.cfg.judge,
                              run.path("labels", "judge", fingerprint(guard), "ckpt"), guard["data"])
    _save_network(run, "judge", guard, judge)
    return judge.summary | {"accuracy_held_out": build.held_out_accuracy(judge, held_out, others.held)}


def _quantiles(v: np.ndarray) -> dict:
    v = np.asarray(v, np.float64)
    return {"mean": float(v.mean()), **{f"q{int(q * 100):02d}": float(np.quantile(v, q)) for q in QUANTILES}}


def _sanity(s: dict, s_ref: np.ndarray, feats: dict, feats_ref: np.ndarray) -> dict:
    """Held-out real images against the reference; generated images against held-out real (score vs FD)."""
    lo, hi = np.quantile(s_ref, [0.05, 0.95])
    inside = float(np.mean((s["real"] >= lo) & (s["real"] <= hi)))
    ks = scipy.stats.ks_2samp(s["real"], s_ref)
    fd = {name: rule.frechet_distance(feats[k], feats_ref) for name, k in (("A", "a"), ("B", "b"), ("real", "real"))}
    problems = []
    same_range = inside >= 0.8 and abs(np.median(s["real"]) - np.median(s_ref)) <= 0.5 * (
        np.quantile(s_ref, 0.75) - np.quantile(s_ref, 0.25) + 1e-9)
    if not same_range:
        problems.append(f"held-out real images score outside the reference range (median {np.median(s['real']):.3f} "
                        f"vs {np.median(s_ref):.3f}; {inside:.0%} inside the reference's 5-95 % range)")
    for name, k in (("A", "a"), ("B", "b")):
        if s[k].mean() > s["real"].mean() and fd[name] > fd["real"]:
            problems.append(f"{name}'s images outscore held-out real images (mean quality {s[k].mean():.3f} vs "
                            f"{s['real'].mean():.3f}) while their Frechet distance to the reference images is "
                            f"larger ({fd[name]:.3g} vs {fd['real']:.3g}): the score may reward something real "
                            "images do not have")
    return {"real_inside_reference_5_95": inside, "ks_real_vs_reference": float(ks.statistic),
            "ks_p": float(ks.pvalue), "same_range": bool(same_range), "frechet_to_reference": fd,
            "warnings": problems}


def agreement(human: dict[int, str], auto: dict[int, str], rng: np.random.Generator,
              boot: stats.BootstrapConfig = stats.BootstrapConfig()) -> dict:
    """Automated vs human labels on their common seeds: accuracy with its 95 % interval over seeds and the
    chance accuracy at both cheap_ok shares (`stats.rater_agreement`), Cohen's kappa (sklearn), the
    confusion table (rows human, columns automated), the seeds where they disagree, and the counts of seeds
    labeled by one side only."""
    out = labels_lib.agreement(human, auto)
    common = sorted(set(human) & set(auto))
    yh, ya = [human[s] for s in common], [auto[s] for s in common]
    yes = lambda y: np.array([v == labels_lib.POSITIVE for v in y], bool).reshape(-1, 1)
    ag = stats.rater_agreement(yes(yh), yes(ya), np.ones((len(common), 1), bool), rng, boot)
    out.update({k: ag[k] for k in ("accuracy_ci", "chance_accuracy", "cohen_kappa") if k in ag})
    cm = confusion_matrix(yh, ya, labels=list(labels_lib.LABELS)) if common else np.zeros((2, 2), int)
    out["confusion"] = {"labels": list(labels_lib.LABELS), "rows": "human", "columns": "automated",
                        "matrix": cm.tolist()}
    out["disagree"] = [{"seed": int(s), "human": human[s], "automated": auto[s]} for s in common if human[s] != auto[s]]
    return out


def _import_human_labels(run: Run, seeds: np.ndarray) -> dict[int, str]:
    path = human_labels_path(run)
    if run.labels_csv:
        labels_lib.write_labels(path, *labels_lib.read_labels_table(run.labels_csv, known_seeds=seeds.tolist()))
    return labels_lib.read_labels(path, known_seeds=seeds.tolist()) if path.exists() else {}


# ----------------------------------------------------------------------------- readers

def router_labels(run: Run) -> tuple[dict[int, str], str]:
    """Human labels where the run has a complete set, else the automated ones; and which."""
    seeds = seeds_stage.load_seed_ids(run).tolist()
    path = human_labels_path(run)
    if path.exists():
        human = labels_lib.read_labels(path, known_seeds=seeds)
        if len(human) == len(seeds):
            return human, "human"
        log.warning("human labels cover %d of %d seeds; the router uses the automated labels", len(human), len(seeds))
    return labels_lib.read_labels(run.path("labels", "auto.csv"), known_seeds=seeds), "automated"


def load_scores(run: Run) -> dict[str, np.ndarray]:
    """Per-seed quality of A's and B's image and of held-out real images, and their labeler features."""
    return io.read_npz(run.path("labels", "scores.npz"))


def load_validation(run: Run) -> dict:
    """The validation suite's results (`labels/validation.json`)."""
    return io.read_json(run.path("labels", "validation.json"))


def _inputs(run: Run) -> tuple:
    w = run.cfg.labeler.inception_weights
    return (file_hash(human_labels_path(run)), file_hash(run.labels_csv) if run.labels_csv else None,
            file_hash(w) if w else None)


def check(run: Run) -> None:
    """The human labels CSV (--labels) against the run's seeds, and the Inception weights file, before any work;
    the CSV is read again when the stage imports it (it may change between runs)."""
    if run.labels_csv:
        labels_lib.read_labels_table(run.labels_csv, known_seeds=seeds_stage.seed_ids(run.cfg).tolist())
    w = run.cfg.labeler.inception_weights
    if w and not Path(w).is_file():
        raise FileNotFoundError(f"labeler.inception_weights={w!r} is not a file; give the path of the weights "
                                "(docs/labeler.md) or leave it empty")


# version 1: the learned score (discriminator + classifier); work dirs of the statistics score re-run.
# With several classes the rule applies within each class (a fingerprint change for those runs only).
STAGE = Stage("labels", run_stage, config=lambda cfg: (cfg.labeler, cfg.judge)
              + (("rule within each class",) if cfg.data.num_classes > 1 else ()),
              after=("data", "seeds"), inputs=_inputs, version=1, check=check)


def _restore_content(run: Run) -> build.Content:
    lc = run.cfg.labeler
    net = clf_lib.make_net(lc.classifier_widths, lc.embed_dim)
    template = jax.eval_shape(lambda: clf_lib.init_params(net, lc.train.seed))
    params, step = Checkpointer(run.path("labels", "model", "classifier"), _model_guard(run)).restore(template)
    if params is None:
        raise FileNotFoundError(f"no labeler classifier in {run.workdir}; run the labels stage first")
    return build.Content(net, params, data_lib.CIFAR10_CLASSES.index(run.cfg.data.class_name), {"steps": step})


def load_model(run: Run) -> tuple[score_lib.QualityModel, score_lib.Featurize]:
    """The labels stage's fitted score and its featurizer, read back from `labels/model/`."""
    meta = io.read_json(run.path("labels", "model", "meta.json"))
    model = score_lib.from_arrays(io.read_npz(run.path("labels", "model", "quality.npz")))
    return model, build.featurizer(_restore_content(run) if meta["content"] else None, run.cfg.labeler,
                                   run.cfg.geometry)


_MODELS: dict[tuple, tuple] = {}


def score_images(run: Run, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(quality [n] in [0, 1], labeler features [n, D]) of any images, by the labels stage's scorer."""
    key = (str(run.workdir.resolve()), done_record(run, "labels")["fingerprint"])
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_model(run)
    model, featurize = _MODELS[key]
    raw = featurize(np.asarray(images, np.float32))
    return model.score(raw), model.space.fd_features(raw)


def tau(run: Run) -> np.ndarray:
    """[n seeds] each seed's 'about the same' margin on the quality score, calibrated on held-out real images
    (of the seed's class, with several classes: `rule.class_taus`)."""
    taus = rule.class_taus(load_scores(run)["score_real"], data_stage.load(run)["holdout_labels"],
                           run.cfg.data.num_classes, run.cfg.labeler.margin_quantile)
    return taus[seeds_stage.load(run)["labels"]]


def _restore_judge(run: Run) -> Callable[[np.ndarray], np.ndarray] | None:
    """images -> the premise judge's embedding [n, E], or None where the labels stage trained none."""
    jc, path = run.cfg.judge, run.path("labels", "model", "judge")
    if not (jc.widths and path.exists()):
        return None
    net = clf_lib.make_net(jc.widths, jc.embed_dim, jc.norm_groups)
    template = jax.eval_shape(lambda: clf_lib.init_params(net, jc.train.seed))
    params, _ = Checkpointer(path, _judge_guard(run)).restore(template)
    features = clf_lib.make_featurizer(net)
    return lambda images: features(params, score_lib.to_8bit(np.asarray(images, np.float32)))[0]


def premise_spaces(run: Run) -> tuple[tuple[premise.Space, ...], Callable]:
    """The premise's feature spaces: the labeler's, a pixel PCA fitted on the training images alone and, where the
    labels stage trained it (CIFAR-10 data), the independent judge's (`config.JudgeConfig`); and
    `judge(images) -> (quality [n], {space name: features [n, D]})` that places any images in them."""
    data = data_stage.load(run)
    train_px, real_px = data["train"], data["holdout"]
    pca, project = premise.pca_space(train_px, real_px)
    embed = {"labeler": lambda x: score_images(run, x)[1], pca.name: project}
    independent = _restore_judge(run)
    if independent is not None:
        embed[premise.JUDGE_SPACE] = independent
    spaces = tuple(premise.Space(name, f(train_px), f(real_px)) for name, f in embed.items())

    def judge(images: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        quality, feats = score_images(run, images)
        return quality, {"labeler": feats} | {name: f(images) for name, f in embed.items() if name != "labeler"}

    return spaces, judge
