#!/usr/bin/env bash
# A second, short GPU-machine call: the CUDA tests again, then one graph (200k nodes, 1M edges,
# P=1, the default model) trained for 2 epochs on the GPU at three batch sizes and on the CPU
# with 2 and 16 threads, to see whether the GPU path is bound by per-batch overhead and how
# the CPU path scales with threads. Epoch lines land in $OUT/sweep.log.
set -u
OUT=${OUT:-/tmp/bigembed-gpu-sweep}
mkdir -p "$OUT"
. "$(dirname "$0")/gpu_env.sh"
BE="python3 -m bigembed.cli.main"
W=${WORK:-/tmp/bigembed-gpu-sweep-work}
timeout "${LIMIT_TESTS:-90}" python3 -m pytest tests/trainer/test_cuda.py -q -p no:cacheprovider 2>&1 | tail -n 3
mkdir -p "$W" && python3 -c "
from pathlib import Path
from bigembed.generator import GraphSpec, write_graph
p = write_graph(GraphSpec(nodes=${NODES:-200000}, edges=${EDGES:-1000000}, relations=3, communities=5000, seed=0),
                Path('$W/g'), splits=(0.005, 0.005))
print({k: str(v) for k, v in p.items()})
"
$BE import "$W"/g/train.* -o "$W/data" -p 1 --overwrite --no-progress 2>&1 | tail -n 1
run() {  # run TAG ARGS...: 2 epochs, the epoch lines
    echo "--- $1"
    timeout "${LIMIT_RUN:-60}" $BE train "$W/data" -o "$W/run-$1" --epochs 2 --no-progress --override "${@:2}" 2>&1 \
        | grep -E "^epoch|error|worker|training on"
}
{
run gpu-b1000 --device cuda --batch-size 1000
run gpu-b10000 --device cuda --batch-size 10000
run gpu-b50000 --device cuda --batch-size 50000
run cpu16-b1000 --workers 16 --batch-size 1000 --epochs 1
run cpu2-b1000 --workers 2 --batch-size 1000 --epochs 1
run cpu16-b10000 --workers 16 --batch-size 10000 --epochs 1
} 2>&1 | tee "$OUT/sweep.log"
echo "=== done in $SECONDS s"
