#!/usr/bin/env bash
# The checks one lent GPU machine (an H200 with 16 cores, 15 minutes of device time) runs in
# a single call: the CUDA tests, bigembed on the GPU against bigembed on all 16 cores on the
# same graph, and several ranks against one process on those cores. Each step has its own
# time limit so that a hang in one leaves the others' figures.
#
# benchmarks/gpu_env.sh sets up the machine's Python (PyTorch is there; the rest travels as
# wheels in .whl/), then
#     OUT=/some/dir bash benchmarks/gpu_session.sh
# Logs and JSON land in $OUT.
set -u
OUT=${OUT:-/tmp/bigembed-gpu-session}
mkdir -p "$OUT"
. "$(dirname "$0")/gpu_env.sh"
NODES=${NODES:-500000}
EDGES=${EDGES:-10000000}
WORK=${WORK:-/tmp/bigembed-gpu-work}

step() {  # step NAME SECONDS COMMAND...: run it with a limit, log to $OUT/NAME.log, say how it ended
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.log"
    echo "=== $name: rc=$rc in $((SECONDS - t0)) s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -2
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cores', torch.get_num_threads())"

step test_cuda "${LIMIT_TESTS:-150}" python3 -m pytest tests/trainer/test_cuda.py -q -p no:cacheprovider -rs
step throughput_cuda "${LIMIT_GPU:-140}" python3 benchmarks/throughput.py --skip-pbg --device cuda --workers 16 \
    --nodes "$NODES" --edges "$EDGES" --relations 3 --communities 5000 --partitions 1 4 --epochs 3 \
    --work "$WORK" --out "$OUT/throughput_cuda.json"
step throughput_cpu16 "${LIMIT_CPU:-110}" python3 benchmarks/throughput.py --skip-pbg --device cpu --workers 16 \
    --nodes "$NODES" --edges "$EDGES" --relations 3 --communities 5000 --partitions 1 4 --epochs 3 \
    --work "$WORK" --out "$OUT/throughput_cpu16.json"
step distributed "${LIMIT_DIST:-150}" python3 benchmarks/distributed.py --nodes "${DIST_NODES:-200000}" --edges "${DIST_EDGES:-8000000}" \
    --partitions 8 --ranks 4 --threads 16 --rounds 1 --epochs 3 --work "$WORK/dist" --json "$OUT/distributed.json"
echo "=== all steps done in $SECONDS s"
