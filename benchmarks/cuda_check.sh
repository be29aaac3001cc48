#!/usr/bin/env bash
# The GPU check in one go (benchmarks/README.md, "On a GPU"): the CUDA tests, then `bench` on d20 and d32
# against transformers on the same weights. Usage: benchmarks/cuda_check.sh OUT_DIR
# Expects a Python with torch (CUDA), transformers and the project's dependencies; runs from the checkout.
set -uo pipefail
out=${1:?usage: benchmarks/cuda_check.sh OUT_DIR}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee -a "$out/gpu.txt"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_cuda_graphs.py 2>&1 \
  | tee "$out/cuda_tests.log" | tail -25
for shape in d20 d32; do
  timeout 150 python3 -m nanochat_py.cli bench --device cuda --shape "$shape" --dtype fp32,bf16 --batch 1,8,64 \
    --prompt 2048 --json > "$out/bench_cuda_$shape.json" 2> "$out/bench_cuda_$shape.err"
  echo "bench $shape: rc $?"; tail -3 "$out/bench_cuda_$shape.err"
  python3 -c "import json,sys; from nanochat_py import bench; print(bench.table(json.load(open(sys.argv[1]))))" \
    "$out/bench_cuda_$shape.json" 2>&1 | tail -8
done
