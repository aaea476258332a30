#!/usr/bin/env bash
# Everything that needs the GPU machine, in one call (the device tool runs it from the repo root):
#   device info, the CUDA build (sm_90 only), the GPU test suite, the full activation benchmark
#   and the training-throughput benchmark. Results land in $OUT (default benchmarks/results/gpu).
# That machine has its own torch (2.11) in the system python3: no venv, nothing downloaded.
#   device run: bash benchmarks/gpu_check.sh        (timeout_s ~540)
set -u
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/alphakern_ext}
PY=${PY:-python3}
LOG=$OUT/gpu_check.log
step() { echo "=== $* ($(date +%T))" | tee -a "$LOG"; }

step device
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__,
  'cuda', torch.version.cuda, torch.cuda.get_device_name(),
  torch.cuda.get_device_properties(0).multi_processor_count, 'SMs')"; } > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt" >> "$LOG"

step build-cuda
( time timeout 300 $PY -m alphakern build-cuda ) >> "$LOG" 2>&1

step gpu tests
timeout 240 $PY -m pytest -q -rs -p no:cacheprovider tests/test_parity.py tests/test_gpu.py \
  tests/test_autograd.py tests/test_errors.py tests/test_module.py >> "$LOG" 2>&1
echo "pytest exit $?" >> "$LOG"

step bench_activation
timeout 330 $PY benchmarks/bench_activation.py --json "$OUT/bench_activation_gpu.json" \
  --plot "$OUT/bench_activation_gpu.png" > "$OUT/bench_activation.log" 2>&1
echo "bench_activation exit $?" >> "$LOG"

step bench_train
timeout 150 $PY benchmarks/bench_train.py --synthetic --rounds 3 --json "$OUT/bench_train_gpu.json" \
  > "$OUT/bench_train.log" 2>&1
echo "bench_train exit $?" >> "$LOG"
step done
