#!/usr/bin/env bash
# Everything that needs the GPU machine, in one call of at most ~9 minutes (the device tool runs it
# from the repo root: `bash benchmarks/gpu_check.sh`, timeout_s 600). Results land in $OUT
# (default benchmarks/results/gpu): device.txt, gpu_check.log (build + tests),
# bench_activation_gpu.{json,png,log}, bench_train_gpu.{json,log} — 7 files.
# That machine has its own torch (2.11) in the system python3: no venv, nothing downloaded.
# Each step gets what is left of a fixed budget, so a slow step cannot starve the benchmark.
set -u
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/alphakern_ext}
PY=${PY:-python3}
LOG=$OUT/gpu_check.log
END=$(( $(date +%s) + ${BUDGET_S:-540} ))
step() { echo "=== $* ($(date +%T), $(( END - $(date +%s) ))s left)" | tee -a "$LOG"; }
# seconds for a step: at most $1, and never into the $2 seconds reserved for the steps after it
slot() { local left=$(( END - $(date +%s) - $2 )); [ "$left" -gt "$1" ] && left=$1; [ "$left" -lt 10 ] && left=10; echo "$left"; }

step device
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv
  $PY -c "import torch, triton; p = torch.cuda.get_device_properties(0); print('torch', torch.__version__,
  'triton', triton.__version__, 'cuda', torch.version.cuda, '|', p.name, p.multi_processor_count, 'SMs')"
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt" >> "$LOG"

step "build-cuda (sm_90)"
( time timeout "$(slot 150 390)" $PY -m alphakern build-cuda ) >> "$LOG" 2>&1

step bench_activation
timeout "$(slot 270 120)" $PY benchmarks/bench_activation.py --json "$OUT/bench_activation_gpu.json" \
  --plot "$OUT/bench_activation_gpu.png" > "$OUT/bench_activation.log" 2>&1
echo "bench_activation exit $?" >> "$LOG"

step "gpu tests"
timeout "$(slot 120 60)" $PY -m pytest -q -rs -p no:cacheprovider tests/test_parity.py tests/test_gpu.py \
  tests/test_autograd.py tests/test_errors.py tests/test_module.py >> "$LOG" 2>&1
echo "pytest exit $?" >> "$LOG"

step bench_train
timeout "$(slot 150 0)" $PY benchmarks/bench_train.py --synthetic --rounds 3 --steps 200 \
  --json "$OUT/bench_train_gpu.json" > "$OUT/bench_train.log" 2>&1
echo "bench_train exit $?" >> "$LOG"
step done
