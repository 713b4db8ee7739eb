#!/usr/bin/env bash
# Every chapter's quick variant on every Keras backend, on an NVIDIA GPU.
#
#   bash benchmarks/gpu_check.sh                 # install the CUDA builds, run, write the table
#   GPU_CHECK_INSTALL=0 bash benchmarks/gpu_check.sh   # use the backends already installed
#
# 1. Checks that there is an NVIDIA GPU (nvidia-smi lists one); if not, says so in one line
#    and exits 3.
# 2. Installs the CUDA builds of the three backends (pip "jax[cuda12]", PyTorch from its
#    cu126 wheel index, "tensorflow[and-cuda]"), unless GPU_CHECK_INSTALL=0. An install that
#    fails (no network) is reported and the check goes on with what is installed.
# 3. Runs benchmarks/backends.py --quick on every backend and writes the table (chapter,
#    backend, device seen by the backend, s/epoch, metric) to outputs/gpu_check.md, or to
#    $OUT/gpu_check.md when OUT is set. Everything stops after GPU_CHECK_SECONDS (540: the
#    whole check, installs included, stays under 10 minutes).
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
budget=${GPU_CHECK_SECONDS:-540}
started=$(date +%s)

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q "^GPU "; then
    echo "gpu_check: no NVIDIA GPU found (nvidia-smi is missing or lists no GPU); nothing to measure" >&2
    exit 3
fi
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)
echo "gpu_check: $gpu"

if [ "${GPU_CHECK_INSTALL:-1}" != 0 ]; then
    pip_install() {  # quietly; one line saying whether it worked
        if timeout 240 "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@" >/tmp/gpu_check_pip.log 2>&1; then
            echo "gpu_check: installed $*"
        else
            echo "gpu_check: could not install $* ($(tail -1 /tmp/gpu_check_pip.log)); using what is installed"
        fi
    }
    pip_install --upgrade "jax[cuda12]"
    # pip keeps an installed CPU build of torch ("+cpu" satisfies "torch"): remove it first.
    if "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.version.cuda is None else 1)" 2>/dev/null; then
        "$PYTHON" -m pip uninstall --quiet -y torch >/dev/null 2>&1
    fi
    pip_install torch --index-url https://download.pytorch.org/whl/cu126 --extra-index-url https://pypi.org/simple
    "$PYTHON" -c "import torch" 2>/dev/null || pip_install torch  # never leave torch missing
    pip_install --upgrade "tensorflow[and-cuda]"
fi

# What each backend sees, before any chapter runs.
"$PYTHON" - <<'PY'
import importlib.util
def seen(name, probe):
    if importlib.util.find_spec(name) is None:
        return "not installed"
    try:
        return probe() or "cpu only"
    except Exception as err:  # a broken CUDA install: say what it is and go on
        return f"error: {type(err).__name__}: {err}"[:120]
def tf():
    import tensorflow as t
    return ", ".join(d.name for d in t.config.list_physical_devices("GPU"))
def jx():
    import jax
    return ", ".join(str(d) for d in jax.devices() if d.platform != "cpu")
def th():
    import torch
    return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
for name, probe in (("tensorflow", tf), ("jax", jx), ("torch", th)):
    print(f"gpu_check: {name} sees {seen(name, probe)}")
PY

out_dir=${OUT:-outputs}
mkdir -p "$out_dir"
left=$(( budget - ($(date +%s) - started) ))
if [ "$left" -lt 30 ]; then
    echo "gpu_check: the installs used the time budget ($budget s); nothing was run" >&2
    exit 1
fi
# jax would otherwise take 75% of the GPU's memory at start-up, TensorFlow all of it.
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_FORCE_GPU_ALLOW_GROWTH=true MPLBACKEND=Agg
"$PYTHON" benchmarks/backends.py --quick --devices --deadline "$((left - 20))" --timeout 180 \
    --json "$out_dir/gpu_check.json" | tee "$out_dir/gpu_check.log"
status=${PIPESTATUS[0]}
{
    echo "GPU: $gpu"
    echo
    sed -n '/^| chapter/,$p' "$out_dir/gpu_check.log"
} > "$out_dir/gpu_check.md"
echo "gpu_check: table in $out_dir/gpu_check.md ($(( $(date +%s) - started )) s in all)"
exit "$status"
