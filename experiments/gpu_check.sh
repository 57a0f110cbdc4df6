#!/usr/bin/env bash
# The GPU run, in one command, from the repository root of a machine with a CUDA GPU:
#
#   bash experiments/gpu_check.sh              # about 6 minutes on one H200
#   bash experiments/gpu_check.sh --dry-run    # any machine: every stage in miniature on the CPU
#
# 1. versions of the driver, Python and the libraries;
# 2. jax must see the GPU: if it does not, jax's CUDA build is installed with pip (needs a package index);
# 3. the tests that need an accelerator (`pytest -m accelerator`: ports, engine, saliency and detection
#    on the GPU against the CPU and torchvision, the bfloat16 path, sharding over several GPUs);
# 4. the benchmark table (experiments/bench.py) on the GPU against PyTorch on the same GPU: VGG16 as a
#    64-point sweep in float32 and in bfloat16, and SSD300 with the MultiBox objective;
# 5. with several GPUs, a 64-point VGG16 sweep sharded over all of them against one GPU.
#
# Environment: PYTHON (default .venv/bin/python when it exists, else python3), OUT (folder for the
# logs and the benchmark's JSON lines; default runs/gpu_check), STEPS and REPS of the benchmark
# (default 10 and 5). Every stage runs even if an earlier one failed; the exit status is the number of
# failed stages. The benchmark table is printed last.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3; fi
OUT_DIR=${OUT:-runs/gpu_check}
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # jax and PyTorch share the GPU
FAILED=0
stage() { echo; echo "=== $* ==="; }
fail() { echo "FAILED: $*"; FAILED=$((FAILED + 1)); }

stage "versions"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" - <<'EOF' | tee "$OUT_DIR/versions.txt"
import importlib, platform
print("python", platform.python_version())
for name in ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "torchvision"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as e:  # a missing library is reported by the stage that needs it
        print(name, "missing:", type(e).__name__)
EOF

stage "jax sees a GPU"
has_gpu() { "$PY" -c "import jax, sys; sys.exit(0 if jax.default_backend() == 'gpu' else 1)" 2>/dev/null; }
if [[ $DRY == 1 ]]; then
  echo "dry run: the GPU is not required; every stage runs on the CPU in miniature"
  export JAX_PLATFORMS=cpu
elif ! has_gpu; then
  cuda=$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9]*' | grep -o '[0-9]*$' || true)
  extra="cuda${cuda:-12}"; [[ "${cuda:-12}" -ge 13 ]] && extra=cuda13
  echo "jax does not see a GPU: installing jax[$extra]"
  "$PY" -m pip install --quiet -U "jax[$extra]" || fail "pip install jax[$extra]"
  has_gpu || { fail "jax still sees no GPU: check the NVIDIA driver (nvidia-smi) and jax's CUDA build"; exit "$FAILED"; }
fi
"$PY" -c "import jax; print(jax.default_backend(), jax.devices())" || fail "jax devices"
N_DEVICES=$("$PY" -c "import jax; print(len(jax.devices()))" 2>/dev/null || echo 1)

stage "tests that need an accelerator"
timeout 600 "$PY" -m pytest -q -m accelerator tests/test_accelerator.py -p no:cacheprovider 2>&1 \
  | tee "$OUT_DIR/tests.log" || fail "accelerator tests"

stage "benchmark against PyTorch on the same device"
rm -f "$OUT_DIR/bench.jsonl"
if [[ $DRY == 1 ]]; then
  bench_args=(--tiny --reps 1 --steps 1 --points 8 --device cpu)
  runs=("--workloads vgg16 --dtypes float32,bfloat16")
else
  bench_args=(--reps "${REPS:-5}" --steps "${STEPS:-10}" --points 64 --device gpu)
  runs=("--workloads vgg16 --dtypes float32,bfloat16" "--workloads ssd300 --dtypes float32")
fi
for run in "${runs[@]}"; do
  # shellcheck disable=SC2086  # $run holds several flags
  "$PY" -m experiments.bench "${bench_args[@]}" $run --nofirst_step --json_out "$OUT_DIR/bench.jsonl" \
    > "$OUT_DIR/bench_$(echo $run | tr -c 'a-z0-9' _).log" 2>&1 || fail "bench $run"
done

stage "sharded sweep over every device"
if [[ $DRY == 0 && "$N_DEVICES" -lt 2 ]]; then
  echo "one device: nothing to shard (the sharded test above was skipped too)"
else
  devices=$N_DEVICES; size=224; points=64
  if [[ $DRY == 1 ]]; then devices=2; size=64; points=8
    export XLA_FLAGS="--xla_force_host_platform_device_count=2 ${XLA_FLAGS:-}"; fi
  "$PY" - "$size" "$points" <<'EOF' 2>&1 | tee "$OUT_DIR/sharded.log" || fail "sharded sweep"
import sys, time
import jax, numpy as np
from experiments.bench_explain import random_model
from jaxvis import engine, models, objectives

size, points = int(sys.argv[1]), int(sys.argv[2])
# XLA's convolutions on both sides (on GPUs they are the only ones), so that the two runs do the same
# arithmetic and only the partitioning differs.
model = random_model(models.arch_spec("vgg16").replace(input_size=(size, size))).with_conv_backend("xla")
sweep = engine.Sweep(targets=list(range(points // 2)), lrs=[0.5, 1.0], losses=[objectives.score() + objectives.sq()])
out = {}
for n in (1, len(jax.devices())):
    eng = engine.Engine(model, sweep, steps=5, devices=jax.devices()[:n])
    eng.run(sweep, chunk_size=points, progress=False)  # compile
    times = []
    for _ in range(3):
        t = time.perf_counter()
        out[n] = eng.run(sweep, chunk_size=points, progress=False)
        times.append(time.perf_counter() - t)
    print(f"{n} device(s): {points * 5 / np.median(times):.1f} image-steps/s")
n = len(jax.devices())
diff = np.abs(out[1].images - out[n].images).max() / np.abs(out[1].images).max()
print(f"sharded over {n} vs one device: max relative difference of the images {diff:.2e}")
EOF
fi

stage "benchmark table"
if [[ -s "$OUT_DIR/bench.jsonl" ]]; then
  "$PY" - "$OUT_DIR/bench.jsonl" <<'EOF'
import json, sys
from experiments.bench import table
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print(table([r for r in rows if "A/B" in r]))
for r in rows:
    if "A/B" in r:
        print(f"{r['workload']} {r['dtype']}: device {r['device']}, matmul peak {r['matmul_peak_gflops']:.0f} GFLOP/s, "
              f"A device peak {r.get('A_device_peak_gb') or 0:.1f} GB")
EOF
else
  fail "no benchmark rows"
  tail -n 30 "$OUT_DIR"/bench_*.log 2>/dev/null
fi
echo
if [[ $DRY == 1 ]]; then echo "dry run finished: $FAILED failed stage(s)"; else echo "GPU check finished: $FAILED failed stage(s)"; fi
exit "$FAILED"
