"""End to end: the `test` preset through every stage over two classes, rerun skipping, kill -9 and resume, README
examples."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import run as run_cli
from test_hs_family import HS_TEST  # the hyperschedule family at test size
from hybrid_jax import config as config_lib
from hybrid_jax import io, stats
from hybrid_jax.routing import ceiling
from hybrid_jax.study import pipeline
from hybrid_jax.study.stages import seeds as seeds_stage
from hybrid_jax.study.stages import train as train_stage

REPO = Path(__file__).resolve().parents[1]
STAGE_NAMES = pipeline.stage_names(config_lib.get_preset("test"))
OUTPUTS = {  # stage -> files it must leave behind
    "data": ["images.npz"],
    "model_a": ["params/config.json", "losses.npz"],
    "model_b": ["params/config.json", "losses.npz"],
    "corrector": ["params/config.json", "losses.npz"],
    "distill": ["results.json"],
    "seeds": ["seeds.npz", "png/seed_000000_A.png", "png/seed_000000_B.png"],
    "features": ["features.csv", "features.npz"],
    "labels": ["auto.csv", "scores.npz"],
    "curves": ["curves.json"],
    "router": ["router.json", "router_trees.npz", "results.json", "oof.npz", "continuations.npz"],
    "routed": ["cost.json", "decisions.npz"],
    "allocate": ["results.json", "policy/policy.json", "policy/policy_trees.npz"],
    "report": ["report.md", "premise.json", "learning_curves.png", "cost_quality.png", "allocation_pareto.png", "training_curves.png", "samples_a_vs_b.png", "threshold_sweep.png"],
}
# what a run killed in the seeds stage and resumed is compared on: the seeds stage's outputs and those of the stages
# that read them first (the later ones are checked elsewhere: the routed stage re-run in a fresh process against the
# finished run's outputs in tests/_routed_mesh_check.py; the router's cross-fit resumed after a kill ending where an
# uninterrupted one does in tests/test_crossfit.py, a saved router reloaded in a fresh process in tests/test_router.py)
COMPARED = [("seeds", "seeds.npz"), ("features", "features.npz"), ("labels", "scores.npz")]


TWO = ("dog", "cat")  # the finished run's classes


def _cli(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments.run", "--preset", "test", "--workdir", str(workdir), *extra]


def _flags(workdir: Path) -> list[str]:
    """The data flags of the run in `workdir` (a copy of the finished run, or the run itself), read off its config."""
    d = pipeline.load_run(workdir).cfg.data
    return ["--data", d.path, "--class", d.class_name]


def _main(workdir: Path, *extra: str) -> int:
    """The command line, in this process, on a copy of the finished run (its preset and data flags)."""
    return run_cli.main(["--preset", "test", "--workdir", str(workdir), *_flags(workdir), *extra])


def _two_class_folder(root: Path, images: np.ndarray) -> Path:
    """64 `images` as a tiny official-format CIFAR-10 folder: 24 of each of the two classes to train on, 6 of each
    held out (test_batch), and in each file one image of each of two classes the run does not ask for."""
    from _cifar import to_pixels, write_batch

    from hybrid_jax import data

    pixels, start = to_pixels(images), 0
    root.mkdir(parents=True)
    for name, per_class in (("data_batch_1", 24), ("test_batch", 6)):
        labels = [data.CIFAR10_CLASSES.index(c) for c in TWO for _ in range(per_class)] + [0, 9]
        write_batch(root / name, pixels[start:start + len(labels)], labels)
        start += len(labels)
    return root


@pytest.fixture(scope="module")
def finished(tmp_path_factory, stand_in_images) -> Path:
    """The test preset through every stage over two classes of a tiny CIFAR-10 folder (class-conditional networks,
    every option and learning curve, the per-class figures): one run that the tests below read, copy, re-run,
    resume and sample from."""
    root = _two_class_folder(tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py", stand_in_images)
    workdir = tmp_path_factory.mktemp("e2e") / "run"
    assert run_cli.main(["--preset", "test", "--workdir", str(workdir), "--data", str(root),
                         "--class", ",".join(TWO)]) == 0
    return workdir


def test_every_stage_leaves_its_outputs(finished):
    for stage, files in OUTPUTS.items():
        assert (finished / stage / "done.json").exists(), stage
        for f in files:
            assert (finished / stage / f).exists(), f"{stage}/{f}"
    header = (finished / "features" / "features.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "seed" and header[-2:] == [f"class={c}" for c in TWO]
    assert len(header) == 1 + 18 + config_lib.get_preset("test").model_b.decoder.num_layers + len(TWO)


def test_two_classes_end_to_end(finished):
    """The data of the two classes only, a class per seed, class-conditional training, and the per-class rows and
    figures of the routed, allocate and report stages."""
    images = io.read_npz(finished / "data" / "images.npz")
    np.testing.assert_array_equal(images["train_labels"], np.repeat([0, 1], 24))
    np.testing.assert_array_equal(images["holdout_labels"], np.repeat([0, 1], 6))
    seeds = io.read_npz(finished / "seeds" / "seeds.npz")
    np.testing.assert_array_equal(seeds["labels"], seeds["seeds"] % 2)
    feats = io.read_npz(finished / "features" / "features.npz")  # the probe features end in the class
    assert [str(n) for n in feats["names"][-2:]] == [f"class={c}" for c in TWO]
    np.testing.assert_array_equal(feats["features"][:, -2:], np.eye(2)[seeds["labels"]])
    run = pipeline.load_run(finished)
    assert run.cfg.data.num_classes == 2
    for name in train_stage.MODELS:  # trained class-conditional: each network has its class embedding
        params = jax.tree_util.tree_flatten_with_path(pipeline.restore_params(run, name))[0]
        assert any("class" in jax.tree_util.keystr(path).lower() for path, _ in params), name
    text = (finished / "report" / "report.md").read_text()
    section = text[text.index("## Per class"):]
    for name in (*TWO, "all"):
        assert f"| {name} |" in section, name
    assert (finished / "report" / "allocation_by_class.png").exists()
    assert (finished / "report" / "cost_quality_by_class.png").exists()
    by_class = io.read_json(finished / "routed" / "cost.json")["curves"]["by_class"]
    assert set(by_class) == set(TWO) and all({"router", "random", "oracle"} <= {p["strategy"] for p in pts}
                                               for pts in by_class.values())
    allocation_rows = section[section.index("Allocation per class"):]
    for name in TWO:
        assert f"| {name} |" in allocation_rows, name
    points = io.read_json(finished / "allocate" / "results.json")["points"]
    assert all(set(p["per_class"]) == set(TWO) for p in points)


def test_the_early_exit_is_judged_out_of_sample_beside_its_baselines(finished):
    """The routed stage's early-exit figures: every seed decided, the exited ones by the rule of a fold that did not
    contain them (one rule per cross-fit fold), costs that count the steps each seed ran."""
    e = io.read_json(finished / "routed" / "cost.json")["early_exit"]
    oof = np.load(finished / "router" / "oof.npz")
    assert e["n"] == len(oof["y"]) and len(e["rules"]) == len(np.unique(oof["fold"]))
    assert set(e["points"]) == {"early exit", "router (k = 12)", "entropy rule", "random (same share)"}
    units = io.read_json(finished / "routed" / "cost.json")["units"]
    added = e["units"]
    assert added["probe_early"]["passes"] == e["k_early"]
    assert added["probe_early"]["passes"] + added["B_finish_early"]["passes"] == units["B"]["passes"]
    assert all(v["seconds"] > 0 for v in added.values())
    flops = [p["flops_per_image"] for p in e["points"].values()]
    assert all(np.isfinite(flops)) and max(flops) <= units["A"]["flops"] + units["probe"]["flops"] + 1e-6


def test_the_probes_ceiling_finishes_every_seeds_prefix_again_beside_its_own_image(finished):
    """The router stage's ceiling: row 0 is the labels stage's score of B's own image, the fresh finishes differ
    from it, and its AUCs are those of `routing.ceiling` on the stored scores and out-of-fold decisions."""
    cfg = pipeline.load_run(finished).cfg
    kept = np.load(finished / "router" / "continuations.npz")
    scores, oof = kept["scores"], np.load(finished / "router" / "oof.npz")
    assert scores.shape == (1 + cfg.router.continuations, cfg.seeds.num_seeds)
    np.testing.assert_array_equal(scores[0], np.load(finished / "labels" / "scores.npz")["score_b"])
    assert np.isfinite(scores).all() and 0 <= scores.min() <= scores.max() <= 1  # (the test preset's tiny scorer
    # rates every image alike: that the finishes redraw B's image is tests/test_ceiling.py's)
    c = io.read_json(finished / "router" / "results.json")["ceiling"]
    assert c["draws"] == cfg.router.continuations and c["n"] == len(oof["y"])
    for name, score in (("router", oof["p_cheap"]), ("prefix_oracle", scores[1:].mean(0)), ("image_oracle", scores[0])):
        assert c[name]["auc"] == pytest.approx(float(stats.auc(oof["y"], score)))
        assert c[name]["ci"][0] <= c[name]["auc"] <= c[name]["ci"][1] or np.isnan(c[name]["ci"]).all()
    assert c["icc"]["value"] == pytest.approx(float(ceiling.icc(scores)), nan_ok=True)
    assert set(c["learned"]) == set(ceiling.LEARNED_TARGETS) and all(0 <= v["auc"] <= 1 for v in c["learned"].values())
    assert c["learned"]["label"]["minus_label"] == 0


def test_a_denoised_router_learns_the_finishes_mean_quality_and_is_judged_on_the_labels(finished, tmp_path):
    """The router stage with `router.denoise` on a copy: the same seeds, folds and labels, the fits learn
    `crossfit.denoised_targets` of the finishes' mean quality, and the report says so."""
    import shutil

    from hybrid_jax.routing import crossfit
    from hybrid_jax.study.stages import router as router_stage
    from hybrid_jax.study.stages import report_md

    workdir = tmp_path / "denoised"
    shutil.copytree(finished, workdir)
    run = pipeline.Run(config_lib.apply_overrides(pipeline.load_run(finished).cfg, ["router.denoise=true"]), workdir)
    router_stage.run_stage(run)
    before, after = (io.read_json(w / "router" / "results.json") for w in (finished, workdir))
    assert after["denoised"] and not before["denoised"]
    assert after["oof"]["fold"] == before["oof"]["fold"] and after["n_cheap_ok"] == before["n_cheap_ok"]
    oof = np.load(workdir / "router" / "oof.npz")
    np.testing.assert_array_equal(oof["y"], np.load(finished / "router" / "oof.npz")["y"])
    quality = np.load(workdir / "router" / "continuations.npz")["scores"].mean(0)
    _, X, names = router_stage.features_stage.load(run)
    cfg = dataclasses.replace(run.cfg.router, n_jobs=1)
    again, _ = crossfit.run_study(X, oof["y"], names, cfg, cache_dir=None, quality=quality)
    assert again["oof"]["p_cheap"] == after["oof"]["p_cheap"]
    assert "Every fit learned the mean quality" in "\n".join(report_md._router_section(after, tmp_path))


def test_report_has_every_section(finished):
    text = (finished / "report" / "report.md").read_text()
    for section in ("### Learning curves", "## Training", "## Samples", "## Labels", "## Router", "## Cost",
                    "## Cost and quality", "### Early exit", "### What a probe of B's prefix can know", "## Config"):
        assert section in text
    assert text.index("## Premise") < text.index("## Cost and quality")  # the premise first
    for figure in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (finished / "report" / figure).exists(), figure
    assert "STAND-IN" in text.upper() or "CIFAR-10" in text


def test_premise_json_has_every_option_both_spaces_and_the_verdict_of_its_rule(finished):
    from hybrid_jax.study import premise

    p = io.read_json(finished / "report" / "premise.json")
    names = io.read_json(finished / "allocate" / "results.json")["options"]
    assert set(p["options"]) == set(names) and p["reference"] == names[0] and p["spaces"] == ["labeler", "pixel PCA"]
    for o in p["options"].values():
        assert o["n"] == config_lib.get_preset("test").seeds.num_seeds
        for s in p["spaces"]:
            e = o["spaces"][s]
            assert e["fd_ci"][0] <= e["fd_ci"][1] and e["kid_ci"][0] <= e["kid_ci"][1] and e["fd"] >= 0
        for m in o["memorisation"].values():
            assert 0 <= m["share"] <= 1 and m["median_distance"] > 0 and len(m["closest"]) == 8
    assert 0 <= p["a_needed_calibrated"] <= 1
    ref, cand = p["options"][p["reference"]], p["options"][p["candidate"]]
    assert {k: p[k] for k in ("verdict", "failed")} == premise.verdict(ref, cand, p["a_needed_calibrated"])
    assert io.read_json(finished / "report" / "done.json")["summary"]["premise"] == p["verdict"]


MAD_TEST = config_lib.MADFormerOptions(  # MADFormer at test size (FAMILIES.md's test row)
    network=config_lib.MADNetworkConfig(
        model=config_lib.MADFormerConfig(num_layers=2, diffusion_layers=1, width=32, num_heads=2, mlp_ratio=2),
        patch_size=8, num_timesteps=20, train=config_lib.TrainConfig(epochs=1, batch_size=16, ckpt_every=100,
                                                                     log_every=2)),
    steps=(3, 0), probe_steps=2)


def test_a_family_added_as_a_value_and_the_distilled_samplers_are_trained_judged_and_offered(finished, tmp_path):
    """A family defined in tests/ (`_toy_family`: one U-Net, DDIM at two budgets) added through `Preset.families`
    alone, the library's MADFormer and hyperschedule families switched on (`Preset.madformer` with its probe,
    `Preset.hyperschedule`, test size), and one round of each family's
    distillation (B's corrector, A per block), in a copy of the finished run (one allocation serves all): each
    added family's network is trained as its own stage, its options' images of every seed are kept and are its
    samplers' own, and it is allocated, costed, plotted and offered on the options labeling page; the work-dir
    guard pins the toy's network config (not its budgets). Each distillation round is
    trained (its loss recorded), offered to the allocation beside its teacher, judged by the report per seed against
    naive DDIM at its steps and reported; the distill stage run again reads the finished rounds back.
    (Rounds after the first, whose teacher predicts v: `test_distill.py`.)"""
    import shutil

    import _toy_family as toy

    from hybrid_jax import generators, labeling
    from hybrid_jax.study.stages import distill as distill_stage

    workdir = tmp_path / "added"
    shutil.copytree(finished, workdir)
    family = toy.family()
    cfg = dataclasses.replace(config_lib.apply_overrides(pipeline.load_run(finished).cfg, [
        "ar_corrector.halvings=1", "blockwise.halvings=1"]), families=(family,), madformer=MAD_TEST,
        hyperschedule=HS_TEST)
    run = pipeline.open_run(cfg, workdir)
    assert pipeline.pending(run) == ["madformer", "hyperschedule", "toy", "distill", "curves", "allocate", "report"]
    pipeline.run_stages(run)
    assert pipeline.pending(run) == []

    # the families: own training stages, images of every seed, in the allocation, costed and on the labeling page
    assert pipeline.stage_names(cfg)[:7] == ("data", "model_a", "model_b", "corrector", "madformer", "hyperschedule",
                                             "toy")
    names = io.read_json(workdir / "allocate" / "results.json")["options"]
    hs_names = [g.name for g in generators.families(cfg)[3].options(cfg)]
    added = [n for n in names if n.startswith(("MAD/", "HS/", "toy/"))]  # after the brief's families' options,
    assert added == ["MAD/3 steps", "MAD/0 steps", *hs_names, "toy/4 steps", "toy/2 steps",  # family by family, most
                     "MAD/3 steps after probe", "MAD/0 steps after probe",  # expensive first; then each family
                     "HS/blocks tau 3, k 1 after probe", "HS/blocks tau 3, k 0 after probe"]  # probe's options
    assert names.index(added[0]) > max(i for i, n in enumerate(names) if n.startswith("B/"))
    assert names.index(added[-2]) > max(i for i, n in enumerate(names) if n.startswith("A/") and "after" in n)
    seeds = seeds_stage.load_seed_ids(run)
    shown = labeling.load_options(workdir, cfg.data.classes)
    assert set(added) <= set(shown.candidates)
    points = {p["policy"]: p for p in io.read_json(workdir / "allocate" / "results.json")["points"]}
    curves = io.read_json(workdir / "curves" / "curves.json")["points"]  # each family's brief option, per snapshot
    hs_brief = generators.families(cfg)[3].brief(cfg).name  # its first schedule, plain (no ACS)
    assert hs_brief == "HS/flat tau 4, k 0" and hs_brief in hs_names
    assert [(p["option"], p["snapshot"]) for p in curves][-3:] == [("MAD/3 steps", 0), (hs_brief, 0),
                                                                    ("toy/4 steps", 0)]
    for fam in generators.families(cfg)[2:]:
        assert io.read_json(workdir / fam.name / "done.json")["summary"]["steps"] > 0
        params = pipeline.restore_params(run, fam.networks[0].name)
        first = seeds[:cfg.cost.batch_size]  # the allocation's batch: its compiled programs
        for g in fam.options(cfg):  # the images kept and shown are the family's samplers' own, seed by seed
            own = g.sample_keys(params, generators.stream_keys(first, cfg.seeds.base_seed, g.stream),
                                generators.seed_labels(first, cfg.data.num_classes))
            np.testing.assert_allclose([shown.image(int(s), g.name) for s in first], own, atol=1e-4,
                                       err_msg=g.name)  # another batch: XLA's rounding (ancestral steps carry it)
        fixed = [points[f"fixed: {g.name}"] for g in fam.options(cfg)]  # most passes first
        assert all(0 < p["flops_savings"] < 1 for p in fixed), fixed  # fewer FLOPs than A's full budget
        by_flops = sorted(fixed, key=lambda p: -p["flops_per_image"])  # more saved with fewer FLOPs (an HS pass's
        assert [p["flops_savings"] for p in by_flops] == sorted(p["flops_savings"] for p in fixed)  # FLOPs: its window)
    # MADFormer's and the hyperschedules' own probes: run once per seed, continued by their "after probe" options
    # (the images kept are theirs), each probe's allocation and the cascade through it among the policies
    assert [p.name for _, p in generators.probes(cfg)] == ["A", "MAD", "HS"]
    for fam, probe in generators.probes(cfg)[1:]:
        params = pipeline.restore_params(run, fam.networks[0].name)
        for g in probe.options:
            own = g.sample_keys(params, generators.stream_keys(first, cfg.seeds.base_seed, g.stream),
                                generators.seed_labels(first, cfg.data.num_classes))
            np.testing.assert_allclose([shown.image(int(s), g.name) for s in first], own, atol=1e-4, err_msg=g.name)
    policies = {p["policy"] for p in io.read_json(workdir / "allocate" / "results.json")["points"]}
    assert {"MAD probe allocation", "cascade via MAD", "random (cascade via MAD's mix)", "cascade",
            "HS probe allocation", "cascade via HS"} <= policies
    report = (workdir / "report" / "report.md").read_text()
    for name in added:  # the allocation's table and the premise's
        assert f"| fixed: {name} |" in report and f"| {name} |" in report
    assert (workdir / "report" / "allocation_pareto.png").stat().st_size > 0

    # the guard: the family's network config is pinned, its budgets are not; reopening needs the family again
    retrained = toy.family(dataclasses.replace(toy.ToyConfig(), network=dataclasses.replace(
        toy.ToyNetwork(), num_timesteps=30)))
    with pytest.raises(pipeline.RunDirError, match=r"toy\.num_timesteps: 20 != 30"):
        pipeline.open_run(dataclasses.replace(cfg, families=(retrained,)), workdir)
    rebudgeted = dataclasses.replace(cfg, families=(toy.family(toy.ToyConfig(budgets=(3,))),))
    assert pipeline.pending(pipeline.Run(rebudgeted, workdir)) == ["curves", "allocate", "report"]  # another brief
    with pytest.raises(pipeline.RunDirError, match="added generator families"):
        pipeline.load_run(workdir)
    run = pipeline.load_run(workdir, families=(family,))

    # the distillations
    results = io.read_json(workdir / "report" / "premise.json")["distillations"]
    assert [(d["network"], [r["student_steps"] for r in d["rounds"]]) for d in results] == [("model_a", [2]),
                                                                                              ("corrector", [2])]
    assert [d["rounds"] for d in results] == [d["rounds"] for d in io.read_json(workdir / "distill" / "results.json")
                                              ["distillations"]]
    for d in results:  # judged on every seed, from the images the allocation made
        (j,) = d["judged"]
        assert j["n"] == run.cfg.seeds.num_seeds and j["student"]["ci"][0] <= j["student"]["mean"] <= j["student"]["ci"][1]
        assert j["student - naive"]["mean"] == pytest.approx(j["student"]["mean"] - j["naive DDIM"]["mean"])
    assert {"B/corrector distilled 2", "B/corrector DDIM 2", "B/corrector DDIM 3", "A/distilled 2 steps",
            "A/DDIM 2 steps", "A/DDIM 4 steps"} <= set(names)
    assert "### Distilled corrector" in report and "### Distilled model_a" in report
    saved = jax.tree.leaves(distill_stage.trained_params(run))
    (workdir / "distill" / "done.json").unlink()
    pipeline.run_stages(run, only=("distill",))  # the stage again: every round read back, not trained
    again = io.read_json(workdir / "distill" / "results.json")["distillations"]
    assert [r["resumed_from"] for d in again for r in d["rounds"]] == [r["steps"] for d in results for r in d["rounds"]]
    for a, b in zip(jax.tree.leaves(distill_stage.trained_params(run)), saved):
        np.testing.assert_array_equal(a, b)


def test_learning_curves_have_every_snapshot_and_end_at_the_trained_models(finished):
    """One point per snapshot of each option of the pair, training cost rising to the trained model; the last
    snapshot is the trained params bitwise, so reusing the seeds stage's images for it is exact."""
    from hybrid_jax import generators

    run = pipeline.load_run(finished)
    cfg = run.cfg
    curves = io.read_json(finished / "curves" / "curves.json")
    pair = generators.binary(cfg)
    assert [p["option"] for p in curves["points"]] == [g.name for g in pair for _ in range(cfg.model_a.snapshots)]
    for g in pair:
        pts = [p for p in curves["points"] if p["option"] == g.name]
        assert np.all(np.diff([p["train_flops"] for p in pts]) > 0) and pts[-1]["fraction"] == 1.0
        for p in pts:
            assert p["n"] == cfg.curves.num_seeds and set(p["spaces"]) == {"labeler", "pixel PCA"}
            assert p["median_quality_ci"][0] <= p["median_quality"] <= p["median_quality_ci"][1]
            assert all(e["fd_ci"][0] <= e["fd_ci"][1] for e in p["spaces"].values()) and p["train_seconds"] > 0
    for name in train_stage.MODELS:
        last = train_stage.snapshot_steps(run, name)[-1]
        assert last == io.read_json(finished / name / "done.json")["summary"]["steps"]
        for a, b in zip(jax.tree.leaves(pipeline.restore_params(run, name, last)),
                        jax.tree.leaves(pipeline.restore_params(run, name))):
            np.testing.assert_array_equal(a, b, err_msg=name)
    seeds = np.arange(cfg.curves.num_seeds)
    b = pair[1]
    again = generators.generate((b,), {b.model: train_stage.restore_option_params(run, b.model)}, seeds,
                                np.zeros(len(seeds), int), base_seed=cfg.seeds.base_seed,
                                batch_size=cfg.seeds.batch_size, num_classes=cfg.data.num_classes)
    np.testing.assert_allclose(again, seeds_stage.load(run)[b.name][: len(seeds)], atol=1e-5)


def test_routed_images_equal_each_models_own(finished):
    check = io.read_json(finished / "routed" / "cost.json")["consistency"]
    assert check["max_abs_diff_a"] <= 1e-5 and check["max_abs_diff_b"] <= 1e-5


def test_allocate_takes_the_brief_options_seconds_from_the_routed_stage(finished):
    """A/full and B/trained depth are timed once, by the routed stage, under the batching policy both stages use."""
    rows = io.read_json(finished / "routed" / "cost.json")["timing"]["rows"]
    points = {p["policy"]: p for p in io.read_json(finished / "allocate" / "results.json")["points"]}
    for name in io.read_json(finished / "routed" / "cost.json")["options"]:
        assert points[f"fixed: {name}"]["seconds_per_image"] == rows[f"always {name}"]["seconds_per_image"]


def test_rerun_recomputes_nothing(finished):
    before = {p: p.stat().st_mtime_ns for p in finished.rglob("*") if p.is_file() and p.name != "run.log"}
    assert _main(finished) == 0
    after = {p: p.stat().st_mtime_ns for p in finished.rglob("*") if p.is_file() and p.name != "run.log"}
    assert after == before
    assert "done already, skipped" in (finished / "run.log").read_text()


def test_workdir_of_another_config_is_refused(finished):
    with pytest.raises(pipeline.RunDirError, match="model_a.steps_per_block"):
        pipeline.open_run(config_lib.override(pipeline.load_run(finished).cfg, "model_a.steps_per_block", "5"),
                          finished)


def _stages_run(workdir: Path, log_before: str) -> list[str]:
    return re.findall(r"stage (\w+)\s+running", (workdir / "run.log").read_text()[len(log_before):])


RETUNES = {  # a changed field -> the stages it re-runs (no trained model among them)
    "router.threshold=0.6": ["router", "routed", "allocate", "report"],
    "labeler.k=3": ["labels", "curves", "router", "routed", "allocate", "report"],
    "cost.repeats=2": ["routed", "allocate", "report"],
    "blockwise.budgets=3": ["allocate", "report"],
    "seeds.num_seeds=44": ["seeds", "features", "labels", "curves", "router", "routed", "allocate", "report"],
    "curves.resamples=60": ["curves", "report"],
    "distill.train.lr=0.0002": ["distill", "allocate", "report"],  # (no rounds in the test preset) offered again
}


@pytest.mark.parametrize("change", RETUNES)
def test_retune_changes_only_the_dependent_stages_fingerprints(finished, change):
    """Which stages a changed field re-runs, read off the stage fingerprints (`pipeline.pending`, which
    `run_stages` follows; one real rerun below), with nothing written."""
    before = {p: p.stat().st_mtime_ns for p in finished.rglob("*") if p.is_file()}
    base = pipeline.load_run(finished).cfg
    cfg = config_lib.apply_overrides(base, [change])
    assert pipeline.pending(pipeline.Run(cfg, finished)) == RETUNES[change]
    assert pipeline.pending(pipeline.Run(base, finished)) == []
    assert {p: p.stat().st_mtime_ns for p in finished.rglob("*") if p.is_file()} == before


def test_retune_reruns_the_stages_its_fingerprints_name_and_no_model(finished, tmp_path):
    import shutil

    change = "blockwise.budgets=3"
    workdir = tmp_path / "retune"
    shutil.copytree(finished, workdir)
    log_before = (workdir / "run.log").read_text()
    models = {p: p.stat().st_mtime_ns for m in ("model_a", "model_b", "corrector") for p in (workdir / m).rglob("*")}
    cfg = config_lib.apply_overrides(pipeline.load_run(workdir).cfg, [change])
    predicted = pipeline.pending(pipeline.Run(cfg, workdir))
    assert _main(workdir, "--set", change) == 0
    assert _stages_run(workdir, log_before) == predicted == RETUNES[change]
    assert {p: p.stat().st_mtime_ns for p in models} == models  # no trained model touched
    assert pipeline.load_run(workdir).cfg == cfg
    assert pipeline.pending(pipeline.Run(cfg, workdir)) == []


def _copy_before(finished: Path, workdir: Path, stage: str) -> None:
    """`workdir` as `finished` was before `stage` ran: its config and the stages before `stage`, no log."""
    import shutil

    workdir.mkdir(parents=True)
    shutil.copy(finished / "run.json", workdir / "run.json")
    for name in STAGE_NAMES[: STAGE_NAMES.index(stage)]:
        shutil.copytree(finished / name, workdir / name)


def _same_trained_models(ours: Path, ref: Path, names=("model_a", "model_b", "corrector")) -> None:
    """The trained models' losses and params (and snapshots), bitwise."""
    import jax

    for name in names:
        np.testing.assert_array_equal(io.read_npz(ours / name / "losses.npz")["losses"],
                                      io.read_npz(ref / name / "losses.npz")["losses"], err_msg=name)
        for a, b in zip(*(jax.tree.leaves(pipeline.restore_params(pipeline.load_run(d), name)) for d in (ours, ref))):
            np.testing.assert_array_equal(a, b, err_msg=name)
        run = pipeline.load_run(ref)
        for step in train_stage.snapshot_steps(run, name):  # the learning curve's snapshots too
            for a, b in zip(*(jax.tree.leaves(pipeline.restore_params(pipeline.load_run(d), name, step))
                              for d in (ours, ref))):
                np.testing.assert_array_equal(a, b, err_msg=f"{name} snapshot {step}")


def _same_seed_outputs(ours: Path, ref: Path) -> None:
    for stage, name in COMPARED:
        got, want = io.read_npz(ours / stage / name), io.read_npz(ref / stage / name)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{stage}/{name}:{key}")


KILL_POINTS = {  # name -> (first stage run, the stages run, files whose appearance triggers the kill, what the
    # restarted run must log, what it must equal the uninterrupted run in)
    # training: one network's stage (every network trains through the same `train.train`; model_b is the cheapest)
    "training": ("model_b", "model_b", ["model_b/ckpt/4"], r"resumed from checkpoint step [1-9]",
                 lambda ours, ref: _same_trained_models(ours, ref, ("model_b",))),
    "seeds": ("seeds", ",".join(STAGE_NAMES[: STAGE_NAMES.index(COMPARED[-1][0]) + 1]),
              ["seeds/parts/*/part_000000.npz"],
              r"stage corrector done already, skipped", _same_seed_outputs),
}


@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_then_resume_gives_the_same_results(finished, tmp_path, point):
    """Killed (SIGKILL) during training or the seeds stage, then rerun: the same trained models (losses and
    params, bitwise), or the same outputs of the seeds, features and labels stages, as the uninterrupted run. The
    run starts from a copy of the finished one before the stage it is killed in (the stages after training are
    pure functions of the trained models, which the seeds case checks on the stages that read the seeds first)."""
    first, through, triggers, resumed, same = KILL_POINTS[point]
    workdir = tmp_path / "killed"
    _copy_before(finished, workdir, first)
    cli = _cli(workdir, *_flags(workdir), "--stages", through)
    proc = subprocess.Popen(cli, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if any(any(workdir.glob(t)) for t in triggers):
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed during {point}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cli, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(resumed, (workdir / "run.log").read_text())
    same(workdir, finished)


@pytest.mark.parametrize("block, printed", [(0, "(4, 32, 32, 3)"), (1, "(8, 32, 32, 3)")])
def test_readme_examples_run(finished, tmp_path, block, printed):
    """The README's python blocks: restore and sample; probe -> allocate -> sample."""
    readme = (REPO / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", readme, re.S)[block].replace('"runs/quick"', repr(str(finished)))
    script = tmp_path / "example.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert printed in out.stdout


@pytest.fixture(scope="module")
def busy_mesh_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One run of `data,model_b` in a fresh process on 2 host devices (`--devices 2`) with the work dir's own
    compilation cache (cold: `HYBRID_JAX_COMPILE_CACHE=1`), and a second run on the same work dir started while the
    first holds it: (work dir, the second's result); the first must exit 0. One training serves the three tests
    below."""
    workdir = tmp_path_factory.mktemp("busy") / "run"
    env = dict(os.environ, HYBRID_JAX_COMPILE_CACHE="1")
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    log = workdir.parent / "first.stderr"  # a file, not a pipe: a pipe nobody reads would block the run when full
    with open(log, "w") as err:
        first = subprocess.Popen(_cli(workdir, "--devices", "2", "--stages", "data,model_b"), cwd=REPO, env=env,
                                 stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 120
    while not (workdir / "run.lock").exists() and time.time() < deadline:
        time.sleep(0.02)
    second = subprocess.run(_cli(workdir, "--stages", "data,model_b"), cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert first.wait(timeout=600) == 0, log.read_text()[-2000:]
    return workdir, second


def test_devices_flag_trains_data_parallel_on_a_mesh(busy_mesh_run):
    workdir, _ = busy_mesh_run
    losses = io.read_npz(workdir / "model_b" / "losses.npz")["losses"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_a_second_run_on_the_same_workdir_is_refused_while_the_first_runs(busy_mesh_run):
    workdir, second = busy_mesh_run
    assert second.returncode == 2 and "in use by another run" in second.stderr and "pid" in second.stderr
    assert not (workdir / "run.lock").exists()  # released at the end


def test_compiled_programs_are_cached_in_the_workdir(busy_mesh_run):
    workdir, _ = busy_mesh_run
    assert any((workdir / "cache" / "jax").iterdir())


def test_routed_and_cost_stages_on_a_mesh_match_one_device(finished, tmp_path):
    """In a fresh process with 8 host devices: see _routed_mesh_check.py (the work dir is a copy)."""
    import shutil

    workdir = tmp_path / "mesh"
    shutil.copytree(finished, workdir)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    out = subprocess.run([sys.executable, str(REPO / "tests" / "_routed_mesh_check.py"), str(workdir), "8"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")


def test_seeds_stage_in_two_processes_matches_one(finished, tmp_path):
    """The seeds stage re-run by two processes (`--distributed`, a 2-device mesh across them, gloo) on the
    one-process run's trained models: process 0 alone writes, and A's and B's images and the probe
    features equal the one-process stage's (tolerances of tests/_routed_mesh_check.py)."""
    import shutil

    from _processes import start_two, two_process_flags
    from _routed_mesh_check import TOL_A, TOL_B

    workdir = tmp_path / "two"
    shutil.copytree(finished, workdir)
    shutil.rmtree(workdir / "seeds")
    procs = start_two(lambda address, i: ["-m", "experiments.run", "--preset", "test", "--workdir", str(workdir),
                                          *_flags(workdir), "--stages", "seeds", "--devices", "2",
                                          *two_process_flags(address, i)])
    for i, p in enumerate(procs):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"process {i}:\n{err[-3000:]}"
        assert f"[process {i}] INFO hybrid_jax.pipeline: stage seeds     finished" in err
    two, one = (io.read_npz(d / "seeds" / "seeds.npz") for d in (workdir, finished))
    np.testing.assert_array_equal(two["seeds"], one["seeds"])
    (a, b), (a1, b1) = (seeds_stage.brief_images(z) for z in (two, one))
    np.testing.assert_allclose(a, a1, atol=TOL_A)
    np.testing.assert_allclose(b, b1, atol=TOL_B)
    feats = [io.read_npz(d / "seeds" / "features.npz")["features"] for d in (workdir, finished)]
    np.testing.assert_allclose(*feats, atol=TOL_B)
    log = (workdir / "run.log").read_text()
    assert "[process 0]" in log and "[process 1]" not in log  # one writer
    assert not (workdir / "run.lock").exists()


def test_human_labels_are_imported_used_by_the_router_and_compared(finished, tmp_path):
    import shutil

    from hybrid_jax.quality import labels as labels_lib

    workdir = tmp_path / "human"
    shutil.copytree(finished, workdir)
    seeds = io.read_npz(workdir / "seeds" / "seeds.npz")["seeds"].tolist()
    auto = labels_lib.read_labels(workdir / "labels" / "auto.csv")
    human = {s: ("cheap_ok" if s % 3 else "A_needed") for s in seeds}
    answers = {s: {"answer": "same" if s % 3 else "left", "left": "A"} for s in seeds}
    labels_lib.write_labels(tmp_path / "human.csv", human, answers)
    assert _main(workdir, "--labels", str(tmp_path / "human.csv"), "--stages", "labels,router") == 0
    # the imported file keeps the labeling page's columns (answer, left) next to the labels
    assert labels_lib.read_labels_table(workdir / "labels" / "human.csv") == (human, answers)
    summary = io.read_json(workdir / "labels" / "done.json")["summary"]
    expected = labels_lib.agreement(human, auto)
    assert summary["agreement"]["accuracy"] == pytest.approx(expected["accuracy"])
    results = io.read_json(workdir / "router" / "results.json")
    assert results["label_source"] == "human" and results["n_cheap_ok"] == sum(v == "cheap_ok" for v in human.values())


def test_models_restored_in_a_fresh_process_reproduce_the_stored_images(finished, tmp_path):
    n = config_lib.get_preset("test").seeds.batch_size  # the seeds stage's batch shape
    out = tmp_path / "out.npz"
    script = (
        "import numpy as np\n"
        "from hybrid_jax import generators, routing\n"
        "from hybrid_jax.study import pipeline\n"
        f"run = pipeline.load_run({str(finished)!r})\n"
        "sa, sb = pipeline.samplers(run.cfg)\n"
        f"ka, kb = routing.seed_keys(range({n}), run.cfg.seeds.base_seed)\n"
        f"labels = generators.seed_labels(range({n}), run.cfg.data.num_classes)\n"
        "a = sa.sample_keys(pipeline.restore_params(run, 'model_a'), ka, labels)\n"
        "b = sb.sample_keys(pipeline.restore_model_b(run), kb, labels)\n"
        f"np.savez({str(out)!r}, a=np.asarray(a), b=np.asarray(b))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    fresh, stored = np.load(out), io.read_npz(finished / "seeds" / "seeds.npz")
    a, b = seeds_stage.brief_images(stored)
    np.testing.assert_array_equal(fresh["a"], a[:n])
    np.testing.assert_array_equal(fresh["b"], b[:n])


def test_a_dead_runs_lock_is_taken_over(tmp_path):
    import json
    import socket

    from hybrid_jax.study import rundir

    workdir = tmp_path / "stale"
    workdir.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (workdir / "run.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout),
                                                  "started": "then"}))
    with rundir.lock(workdir):
        assert json.loads((workdir / "run.lock").read_text())["pid"] == os.getpid()
    assert not (workdir / "run.lock").exists()


def test_a_stage_version_bump_reruns_it_and_version_0_keeps_old_fingerprints():
    import types

    from hybrid_jax.study import rundir

    run = types.SimpleNamespace(cfg=config_lib.get_preset("test"))
    old = rundir.Stage("labels", lambda r: {}, after=("seeds",))
    upstream = {"seeds": "abc"}
    assert old.fingerprint(run, upstream) == rundir.fingerprint("labels", [], ["abc"], ())
    bumped = rundir.Stage("labels", lambda r: {}, after=("seeds",), version=1)
    assert bumped.fingerprint(run, upstream) != old.fingerprint(run, upstream)


def test_people_s_option_labels_reach_the_allocate_stage(finished, tmp_path):
    """The options labeling page over a finished run shows the allocate stage's images; the labels it writes,
    keyed by (seed, option), re-run the allocate stage (and the report) only, which then follows them."""
    import shutil

    from hybrid_jax import labeling
    from hybrid_jax.quality import labels as labels_lib

    workdir = tmp_path / "labeled"
    shutil.copytree(finished, workdir)
    svc = labeling.LabelingService(workdir, source=labeling.OPTIONS)
    seeds = svc.seeds()
    names = io.read_json(workdir / "allocate" / "results.json")["options"]
    assert seeds.reference == names[0] and set(seeds.candidates) == set(names[1:])
    first = svc.state()["next"]
    pair = (seeds.reference, first["option"])
    shown = labeling.side_model("right", first["left"], pair)
    stored = seeds.images[shown][seeds.index[first["seed"]]]
    assert svc.image_png(first["seed"], "right", first["option"]) == labeling.to_png(stored)
    stored = io.read_npz(workdir / "seeds" / "seeds.npz")
    assert stored["options"][0] == seeds.reference and stored["options"][1] in seeds.candidates  # the brief pair
    np.testing.assert_array_equal(seeds.images[seeds.reference], stored[seeds.reference])
    # a person finds every cheaper option of every seed worse than the reference
    svc.label({"seed": first["seed"], "option": first["option"], "answer": "left" if first["left"] == pair[0]
               else "right"})
    rows = {(int(s), o): "A_needed" for s in seeds.seeds for o in seeds.candidates}
    labels_lib.write_keyed_labels(workdir / labeling.OPTIONS_FILE, rows, key=labels_lib.OPTION_KEY)
    log_before = (workdir / "run.log").read_text()
    assert _main(workdir) == 0
    assert _stages_run(workdir, log_before) == ["allocate", "report"]
    out = io.read_json(workdir / "allocate" / "results.json")
    assert out["human"]["n"] == len(rows) and out["acceptable_share"][1:] == [0.0] * (len(names) - 1)
    points = {p["policy"]: p for p in out["points"]}
    assert points["oracle"]["flops_per_image"] == points[f"fixed: {names[0]}"]["flops_per_image"]
    assert f"People labeled {len(rows)} (seed, option) pairs" in (workdir / "report" / "report.md").read_text()


def test_an_options_kept_images_are_keyed_by_the_stages_that_trained_its_params(finished, tmp_path):
    """The allocation keeps each option's images per fingerprint of the seeds stage and of the stages that trained
    the option's params: a retrained A (its done record's fingerprint changed) gets new files for A's options and a
    distilled A's, B's stay where they were."""
    import shutil

    from hybrid_jax import generators
    from hybrid_jax.study.stages import allocate as allocate_stage

    workdir = tmp_path / "run"
    for done in [finished / "run.json", *finished.glob("*/done.json")]:  # the records are all the keys read
        (workdir / done.relative_to(finished)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(done, workdir / done.relative_to(finished))
    cfg = config_lib.apply_overrides(pipeline.load_run(workdir).cfg, ["blockwise.halvings=1"])  # A's students too
    run = pipeline.Run(cfg, workdir)
    made = allocate_stage._made_by_seeds_stage(run)
    opts = [g for g in generators.allocation_options(cfg) if g.name not in made]
    where = lambda: {g.name: allocate_stage._image_file(run, g, made)[0] for g in opts}
    before = where()
    record = io.read_json(workdir / "model_a" / "done.json")
    io.write_json(workdir / "model_a" / "done.json", {**record, "fingerprint": "retrained"})
    after = where()
    for g in opts:
        moved = before[g.name] != after[g.name]
        assert moved == (g.model != "model_b"), g.name  # A's options, its probe's and its students' (A's params)
    assert {g.model for g in opts} >= {"model_a", "model_b", "model_a/distilled"}
