"""The GPU throughput benchmark runs anywhere at small scale; its MFU lookup is data."""

import jax
import pytest

from benchmarks import throughput
from hybrid_jax.config import get_preset


@pytest.mark.parametrize("kind, dtype, peak", [("NVIDIA H100 80GB HBM3", "bfloat16", 989.4e12),
                                               ("NVIDIA H100 PCIe", "float32", 378e12),
                                               ("NVIDIA H200", "bfloat16", 989.4e12),
                                               ("Tesla T4", "bfloat16", None), ("cpu", "float32", None)])
def test_peak_flops_lookup(kind, dtype, peak):
    assert throughput.peak_flops(kind, dtype) == peak


def test_with_dtype_sets_every_network_and_nothing_else():
    base = get_preset("test")
    for dtype in throughput.DTYPES:
        cfg = throughput.with_dtype(base, dtype)
        assert (cfg.model_a.unet.dtype, cfg.corrector.unet.dtype, cfg.model_b.decoder.dtype) == (dtype,) * 3
        assert throughput.with_dtype(cfg, base.model_a.unet.dtype) == base


def test_measure_fills_a_row_per_model_and_dtype():
    """One dtype here (each compiles both samplers again); the others are the same loop over `with_dtype`, below."""
    table = throughput.new_table(batch=2)
    throughput.measure(get_preset("test"), batch=2, repeats=1, table=table, dtypes=("bfloat16",))
    assert [(r[1], r[2]) for r in table.rows] == [("A", "bfloat16"), ("B", "bfloat16")]
    cols = table.columns
    for row in table.rows:
        assert float(row[cols.index("ms/img")]) > 0 and float(row[cols.index("GFLOP/img")]) > 0
        if jax.default_backend() == "cpu":
            assert row[cols.index("MFU")] == "n/a"


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="on an accelerator this would run the paper benchmark")
def test_run_measures_nothing_on_a_cpu():
    assert throughput.run(["paper"], repeats=1) == []


def test_flops_of_a_convolution_match_the_formula():
    """timing.flops counts on the CPU program, where a convolution's multiply-adds are counted."""
    from hybrid_jax import timing

    x, w = jax.numpy.ones((2, 8, 8, 3)), jax.numpy.ones((3, 3, 3, 5))
    conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert timing.flops(conv, x, w) == pytest.approx(2 * 2 * 6 * 6 * 5 * 3 * 3 * 3, rel=0.02)  # VALID: 6 x 6 outputs


def test_train_step_measure_fills_a_row_per_network():
    from benchmarks import train_step

    table = train_step.new_table()
    train_step.measure(get_preset("test"), repeats=1, table=table)
    cols = table.columns
    assert [r[cols.index("network")] for r in table.rows] == ["model_a", "model_b", "corrector"]
    for row in table.rows:
        assert int(row[cols.index("batch")]) == 16
        assert float(row[cols.index("ms/step")]) > 0 and float(row[cols.index("TFLOP/step")]) > 0


def test_paper_shapes_table_reads_each_stage_and_marks_the_rest(tmp_path):
    from benchmarks import paper_shapes
    from hybrid_jax import io
    from hybrid_jax.config import get_preset
    from hybrid_jax.study.pipeline import stage_names

    for name, seconds, rss in (("data", 1.5, 300.0), ("model_a", 10.0, 900.0)):
        io.write_json(tmp_path / name / "done.json", {"summary": {"stage_seconds": seconds, "peak_rss_mib": rss}})
    table = paper_shapes.stage_table(tmp_path, "t")
    assert [r[0] for r in table.rows] == [*stage_names(get_preset(paper_shapes.PRESET)), "all stages"]
    assert table.rows[0][1:3] == ["1.500", "300.0"] and table.rows[1][1:3] == ["10.0", "900.0"]
    assert all(r[1] == "not run" for r in table.rows[2:-1])
    assert table.rows[-1][1] == "11.5"


def test_evaluation_cost_splits_training_from_evaluation_and_marks_reused_stages(tmp_path):
    import os

    from benchmarks import evaluation_cost
    from hybrid_jax import io

    seconds = {"data": 1.0, "model_a": 10.0, "model_b": 5.0, "corrector": 5.0, "seeds": 4.0, "routed": 6.0}
    for name, s in seconds.items():
        io.write_json(tmp_path / name / "done.json", {"summary": {"stage_seconds": s}})
    os.utime(tmp_path / "routed" / "done.json", (2e9, 2e9))  # made by this run; the rest before it
    got = evaluation_cost._stage_seconds(tmp_path, since=1.9e9, preset="test")
    assert got["routed"] == (6.0, True) and got["seeds"] == (4.0, False) and "labels" not in got
    assert evaluation_cost._totals(got, evaluation_cost._training("test")) == (20.0, 10.0)  # data is neither


def test_the_hyperschedule_benchmark_times_windowed_beside_dense_with_the_same_images(monkeypatch):
    """A row per trained schedule (the family at test size): the windowed and dense samplers' images agree, the
    windowed FLOPs are below the dense ones where the window is smaller than the image and equal where it is all
    of it (the flat schedule samples dense)."""
    import dataclasses

    from test_hs_family import HS_TEST

    from benchmarks import hyperschedule as bench
    from hybrid_jax.config import get_preset

    cfg = dataclasses.replace(get_preset("test"), hyperschedule=HS_TEST)
    monkeypatch.setattr(bench, "get_preset", lambda name: cfg)
    (table,) = bench.run(["test"], repeats=1, batch=2)
    rows = {r[1]: r for r in table.rows}
    assert list(rows) == ["HS/flat tau 4, k 0", "HS/blocks tau 3, k 0", "HS/AR tau 1, k 0"]
    cols = {c: i for i, c in enumerate(table.columns)}
    value = lambda row, col: float(rows[row][cols[col]])
    assert all(value(r, "max |image diff|") <= 1e-4 for r in rows)
    assert rows["HS/flat tau 4, k 0"][cols["window (units)"]] == "all (dense)"
    assert value("HS/flat tau 4, k 0", "windowed MFLOP/img") == value("HS/flat tau 4, k 0", "dense MFLOP/img")
    for r, size in (("HS/blocks tau 3, k 0", "8"), ("HS/AR tau 1, k 0", "2")):
        assert rows[r][cols["window (units)"]] == size
        assert value(r, "windowed MFLOP/img") < 0.6 * value(r, "dense MFLOP/img")
