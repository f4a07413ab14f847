# The one place that knows how to launch a stage. Sourced by run_all.sh and slurm/*.sbatch.
#   pfo_launch STAGE NUM_RANKS [stage args...]
# Multi-node (SLURM): set PFO_HOSTFILE to a DeepSpeed hostfile ("host slots=N" lines) and
# PFO_MASTER_ADDR; NUM_RANKS is then the ranks per node.
PFO_ROOT="${PFO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
PFO_PYTHON="${PFO_PYTHON:-python}"

# A stage killed while DeepSpeed JIT-builds an op leaves the build's lock file behind and every
# later run waits on it forever; a build takes ~2 min, so a lock older than 15 min is stale.
pfo_clear_stale_build_locks() {
  find "${TORCH_EXTENSIONS_DIR:-$HOME/.cache/torch_extensions}" -name lock -mmin +15 -print -delete 2>/dev/null \
    | sed 's/^/[pfo] removed stale build lock: /' || true
}

pfo_launch() {
  local stage="$1" nranks="$2"; shift 2
  local script="$PFO_ROOT/stages/$stage.py"
  [ -f "$script" ] || { echo "pfo_launch: no stage $stage" >&2; return 2; }
  if [ "$stage" = evaluate ]; then  # single process by design
    "$PFO_PYTHON" "$script" "$@"
    return
  fi
  pfo_clear_stale_build_locks
  local port="${PFO_MASTER_PORT:-$((29500 + RANDOM % 1000))}"
  local -a ds=(-m deepspeed.launcher.runner --master_port "$port")
  if [ -n "${PFO_HOSTFILE:-}" ]; then
    ds+=(--hostfile "$PFO_HOSTFILE" --num_gpus "$nranks")
    [ -n "${PFO_MASTER_ADDR:-}" ] && ds+=(--master_addr "$PFO_MASTER_ADDR")
  else
    ds+=(--num_gpus "$nranks")
  fi
  local rc=0
  "$PFO_PYTHON" "${ds[@]}" "$script" "$@" || rc=$?
  # DeepSpeed's CPU backend leaves its shared-memory allreduce buffers (~66 MiB per rank, in RAM)
  # in /dev/shm, also after a crash or SIGKILL; the names carry this launch's port.
  rm -f /dev/shm/deepspeed_allreduce_buffer_*_"$port"_* 2>/dev/null || true
  return $rc
}
