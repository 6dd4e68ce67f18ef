"""Stage `report`: `report/premise.json` (is A clearly better than B, and not by copying?) and `report/report.md`
with its figures, from what the other stages recorded."""

from __future__ import annotations

import numpy as np

from hybrid_jax import generators, io, labeling, stats
from hybrid_jax.study import premise
from hybrid_jax.study.rundir import Run, Stage
from hybrid_jax.study.stages import curves as curves_stage
from hybrid_jax.study.stages import data as data_stage
from hybrid_jax.study.stages import distill as distill_stage
from hybrid_jax.study.stages import labels as labels_stage

PREMISE_RESAMPLES = 200  # bootstrap resamples of each FD / KID / median interval of the premise


def premise_figures(run: Run) -> dict:
    """Per allocation option (every one the allocate stage generated, the brief's pair among them): FD and KID to
    held-out real images in every premise space (`labels.premise_spaces`: the labeler's, a pixel PCA, the
    independent judge's; each with its 95 % interval), median quality, memorisation; the calibrated (never forced) label rule's A_needed
    share; `premise.verdict` on the brief's pair; and each distillation's rounds judged on every seed
    (`stages.distill.judged`)."""
    data = data_stage.load(run)
    train_px, real_px = data["train"], data["holdout"]
    spaces, judge = labels_stage.premise_spaces(run)
    rng = np.random.default_rng(run.cfg.router.seed)
    per, options = {}, labeling.load_options(run.workdir).images
    for name, images in options.items():
        per[name] = premise.option_figures(images, *judge(images), spaces, train_px, real_px, rng, PREMISE_RESAMPLES)
    scores = labels_stage.load_scores(run)
    share = float(np.mean(scores["score_a"] - scores["score_b"] > labels_stage.tau(run)))
    a, b = (g.name for g in generators.binary(run.cfg))
    return {"reference": a, "candidate": b, "a_needed_calibrated": share, "spaces": [s.name for s in spaces],
            "copy_quantile": premise.COPY_QUANTILE, "a_needed_range": list(premise.A_NEEDED_RANGE),
            "n_train": len(train_px), "n_real": len(real_px), "options": per,
            "curves": curves_stage.load(run)["points"],
            "distillations": distill_stage.judged(run, options, rng, stats.BootstrapConfig(PREMISE_RESAMPLES)),
            **premise.verdict(per[a], per[b], share)}


def run_stage(run: Run) -> dict:
    from hybrid_jax.study.stages import report_md as report  # matplotlib only when a report is written
    figures = premise_figures(run)
    io.write_json(run.path("report", "premise.json"), figures)
    return {"report": str(report.write_report(run)), "premise": figures["verdict"]}


# version 1: report/premise.json and the report's Premise section; 2: its learning curves (stage `curves`); 3: FD/KID
# intervals corrected for the resamples' bias; 4: the distilled corrector's section; 5: its teacher's FD; 6: a section
# per distillation (A per block beside the corrector); 7: the distillations judged here, on every seed
STAGE = Stage("report", run_stage,
              after=("data", "model_a", "model_b", "corrector", "distill", "labels", "curves", "router", "routed",
                     "allocate"),
              version=7)
