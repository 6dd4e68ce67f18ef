"""The work dir's stage folders (`study.rundir.begin`): a `fresh` stage (a training stage) that runs under a new
fingerprint starts from an empty folder, so no checkpoint of another config is resumed; an interrupted run of the
same fingerprint keeps what it wrote (it resumes); the other stages keep their folders (inputs such as the labels
page's CSVs, caches keyed by their own fingerprints)."""

from __future__ import annotations

from hybrid_jax.config import PRESETS
from hybrid_jax.study import pipeline, rundir


def _left(run, stage):
    return sorted(p.name for p in run.path(stage).iterdir())


def test_a_stage_under_a_new_fingerprint_starts_empty_and_an_interrupted_one_resumes(tmp_path):
    run = rundir.Run(PRESETS["test"], tmp_path)
    ckpt = run.path("model_a", "ckpt")
    ckpt.mkdir(parents=True)
    (ckpt / "7").write_text("step 7")
    rundir.begin(run, "model_a", "fp1")  # a folder with no record (an older work dir, interrupted): resumed
    assert _left(run, "model_a") == ["ckpt", "started.json"]
    rundir.begin(run, "model_a", "fp1")  # interrupted again under the same fingerprint: resumed
    assert (ckpt / "7").read_text() == "step 7"
    rundir.begin(run, "model_a", "fp2")  # interrupted under another config: nothing of it kept
    assert _left(run, "model_a") == ["started.json"]
    assert rundir.io.read_json(run.path("model_a", "started.json")) == {"fingerprint": "fp2"}
    ckpt.mkdir()
    rundir.mark_done(run, "model_a", "fp2", {})
    run.path("model_a", "started.json").unlink()  # a finished stage of an older work dir: done.json alone
    rundir.begin(run, "model_a", "fp3")  # its inputs changed since it finished
    assert _left(run, "model_a") == ["started.json"] and not rundir.is_done(run, "model_a", "fp2")
    assert not list(tmp_path.glob(".model_a.stale*"))
    fresh = {s.name for s in pipeline.stages(run.cfg) if s.fresh}
    assert fresh == {"model_a", "model_b", "corrector"}  # the training stages only


def test_retraining_one_family_leaves_the_stages_that_do_not_read_it(tmp_path):
    """A stage's fingerprint follows the stages it reads: a new config of the hyperschedule network changes its
    training stage and those reading every family's options, not the distillations of A and B or the seeds."""
    import dataclasses

    from test_hs_family import HS_TEST

    cfg = dataclasses.replace(PRESETS["test"], hyperschedule=HS_TEST)
    other = dataclasses.replace(cfg, hyperschedule=dataclasses.replace(HS_TEST, network=dataclasses.replace(
        HS_TEST.network, context_level=2)))
    before, after = (pipeline.fingerprints(rundir.Run(c, tmp_path)) for c in (cfg, other))
    changed = {s for s in before if before[s] != after[s]}
    assert {"hyperschedule", "allocate"} <= changed
    assert not changed & {"data", "model_a", "model_b", "corrector", "distill", "seeds", "labels", "router"}, changed
