#!/usr/bin/env bash
# One prepared run on a lent GPU machine (see README "GPU figures"): carries .whl (dask, distributed,
# plotly, zarr, dask-cuda ... absent from that image) and .zoo-cache (the trained zoo). Each step has its
# own time limit and writes as it goes, so a slow step still leaves the others' results in $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD LANDSCAPE_NB_CACHE=$PWD/.zoo-cache PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
timeout ${TESTS_S:-150} python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
timeout ${BENCH_S:-380} python3 benchmarks/bench_surface.py --gpu --no-cpu --digits-gpu --profile 2>&1 | tee "$OUT/bench_gpu.txt"
