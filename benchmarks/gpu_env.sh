# Sourced by benchmarks/gpu_session.sh and gpu_sweep.sh: the GPU machine's Python set up for
# bigembed. Its image has PyTorch but not zarr, numcodecs, donfig, google-crc32c, mmap-ninja
# or DuckDB: carried as Python 3.12 wheels in .whl/ (see the device tool's notes), they are
# installed into /tmp/site; without .whl/ the image's own packages are used.
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
