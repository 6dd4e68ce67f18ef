#!/usr/bin/env bash
# Every GPU figure of BENCHMARKS_GPU.md in one command, on a machine with a GPU:
#
#     bash benchmarks/gpu.sh [OUT_DIR]          (default OUT_DIR: the current directory)
#
# Writes OUT_DIR/BENCHMARKS_GPU.md: paper A and B samplers at batch 256 in f32 and bf16, the train
# steps at the paper batch size, the router probe, then the `paper-shapes` preset end to end with
# seconds and peak memory per stage; and OUT_DIR/paper_shapes.log, OUT_DIR/gpu_tests.log. Each part
# has its own time limit (seconds, environment variables below); a part that runs out keeps what it
# measured (the benchmark file is rewritten after every benchmark) and the next part still runs.
set -u
out=$(mkdir -p "${1:-.}" && cd "${1:-.}" && pwd)
python=${PYTHON:-python}
bench_s=${GPU_BENCH_S:-1800}      # throughput, train steps, router probe
shapes_s=${GPU_SHAPES_S:-1800}    # paper-shapes end to end
tests_s=${GPU_TESTS_S:-600}       # pytest -m gpu (0: skip)
work=$(mktemp -d)/paper-shapes
cd "$(dirname "$0")/.."

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
$python -c 'import jax, flax, optax; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, jax.devices())'

timeout "$bench_s" $python -m benchmarks.run --preset paper --only throughput,train_step,router --repeats 2 \
    --out "$out/BENCHMARKS_GPU.md"
echo "benchmarks exit code $?"

start=$(date +%s)
timeout "$shapes_s" $python -m experiments.run --preset paper-shapes --offline --workdir "$work" \
    >"$out/paper_shapes.log" 2>&1
code=$?
tail -n 5 "$out/paper_shapes.log"
{
    echo
    $python -m benchmarks.paper_shapes "$work" --title "Preset paper-shapes end to end on the GPU: seconds and peak memory per stage"
    echo "- \`python -m experiments.run --preset paper-shapes --offline\`: exit code $code" \
         "(124: stopped at the ${shapes_s} s limit of this script), $(( $(date +%s) - start )) s wall."
} | tee -a "$out/BENCHMARKS_GPU.md"

if [ "$tests_s" -gt 0 ]; then
    timeout "$tests_s" $python -m pytest -m gpu -p no:cacheprovider tests/test_slow.py 2>&1 | tee "$out/gpu_tests.log"
fi
