# Runtime environment shared by run_all.sh, scripts/test.sh and slurm/*.sbatch (sourced).
PFO_ROOT="${PFO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
export PFO_PYTHON="${PFO_PYTHON:-$PFO_ROOT/.venv/bin/python}"
# JIT-built DeepSpeed ops (the shm comm op on CPU) are compiled once and reused.
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$HOME/.cache/pfo/torch_extensions}"
if ! command -v nvidia-smi >/dev/null 2>&1; then
  export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
fi
export TOKENIZERS_PARALLELISM=false
pfo_threads_per_rank() {  # split the cores between ranks so they do not oversubscribe
  local n; n=$(nproc); echo $(( n / $1 > 0 ? n / $1 : 1 ))
}
