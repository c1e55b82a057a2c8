#!/usr/bin/env bash
# The CUDA check: what a CPU-only CI cannot run. On a machine with a CUDA GPU (compute capability >= 8.0) and
# a CUDA build of torch already installed, from the repository root:
#     OUT=/tmp/cuda_check scripts/cuda_check.sh
# 1. the GPU tests and the tests with CUDA branches; 2. benchmarks/semistructured_cuda.py (2:4 against fp16 at
# equal precision, and both against fp32 eager); 3. a --quick run of the small encoder with --device cuda on
# eager and semi-structured. Everything it prints and writes lands in $OUT. Each step runs even if one before
# it failed; the exit status is the first failure's.
set -u
OUT=${OUT:-/tmp/cuda_check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=$(command -v "${PYTHON:-python3}")
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")  # absolute: step 2 runs from benchmarks/
status=0
step() { echo "== $1"; shift; "$@" || { rc=$?; echo "== failed (exit $rc)"; [ $status -ne 0 ] || status=$rc; }; }

{ nvidia-smi -L; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
  torch.cuda.get_device_name(), torch.cuda.get_device_capability())"; lscpu | grep 'Model name'; } \
  2>&1 | tee "$OUT/env.txt"
step "GPU tests" bash -c "$PY -m pytest -q -p no:cacheprovider -rs tests/test_backends_gpu.py \
  tests/test_bench_timing.py tests/test_pruning_engine.py tests/test_bench_memory_env.py tests/test_bench_sweep.py \
  tests/test_backends.py tests/test_backends_cells.py 2>&1 | tee $OUT/pytest.log; exit \${PIPESTATUS[0]}"
step "2:4 benchmark" bash -c "cd benchmarks && $PY semistructured_cuda.py --out $OUT/semistructured_cuda.json \
  2>&1 | tee $OUT/semistructured_cuda.log; exit \${PIPESTATUS[0]}"
step "run --device cuda" bash -c "timeout 240 $PY -m prunebench run --model small --quick --device cuda \
  --methods nm,structured --backends eager,semi-structured --batch-sizes 1,32 --out /tmp/cuda_run \
  2>&1 | tee $OUT/run.log; rc=\${PIPESTATUS[0]}; cp /tmp/cuda_run/summary.md /tmp/cuda_run/results.json $OUT/ \
  2>/dev/null; exit \$rc"
echo "== exit $status"
exit $status
