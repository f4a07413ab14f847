# Sourced by every slurm/*.sbatch: environment, the shared launcher, and a DeepSpeed hostfile
# built from the SLURM allocation (one line per node, slots = GPUs per node).
# Multi-node runs use the DeepSpeed launcher, which reaches the other nodes over ssh (pdsh).
set -euo pipefail
PFO_ROOT="${PFO_ROOT:-${SLURM_SUBMIT_DIR:-$(pwd)}}"
source "$PFO_ROOT/scripts/env.sh"
source "$PFO_ROOT/scripts/launch.sh"
cd "$PFO_ROOT"
GPUS_PER_NODE="${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}"
PFO_PRESET="${PFO_PRESET:-paper}"
if [ "${SLURM_JOB_NUM_NODES:-1}" -gt 1 ]; then
  export PFO_HOSTFILE="${PFO_RUN_DIR:-$PFO_ROOT/runs}/hostfile.$SLURM_JOB_ID"
  mkdir -p "$(dirname "$PFO_HOSTFILE")"
  scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/\$/ slots=$GPUS_PER_NODE/" > "$PFO_HOSTFILE"
  export PFO_MASTER_ADDR="$(head -n1 "$PFO_HOSTFILE" | cut -d' ' -f1)"
fi
export PFO_MASTER_PORT="${PFO_MASTER_PORT:-$((29500 + SLURM_JOB_ID % 1000))}"
