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


def test_with_dtype_sets_every_network():
    cfg = throughput.with_dtype(get_preset("test"), "bfloat16")
    assert (cfg.model_a.unet.dtype, cfg.corrector.unet.dtype, cfg.model_b.decoder.dtype) == ("bfloat16",) * 3


def test_measure_fills_a_row_per_model_and_dtype():
    table = throughput.new_table(batch=2)
    throughput.measure(get_preset("test"), batch=2, repeats=1, table=table)
    assert [(r[1], r[2]) for r in table.rows] == [("A", "float32"), ("B", "float32"), ("A", "bfloat16"), ("B", "bfloat16")]
    cols = table.columns
    for row in table.rows:
        assert float(row[cols.index("ms/img")]) > 0 and float(row[cols.index("GFLOP/img")]) > 0
        if jax.default_backend() == "cpu":
            assert row[cols.index("MFU")] == "n/a"


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="on an accelerator this would run the paper benchmark")
def test_run_measures_nothing_on_a_cpu():
    assert throughput.run(["paper"], repeats=1) == []
