#!/usr/bin/env bash
# The whole pipeline on one machine: SFT -> reference precompute -> alignment -> quick evaluation.
#
#   ./run_all.sh                                  # cpu-demo preset: real SmolLM2-135M, real data
#   ./run_all.sh --preset smoke --num-ranks 2     # tiny random model, seconds per stage
#   ./run_all.sh --preset cpu-demo --output-dir runs/x -- loss=kto beta=0.05 sft.lr=1e-5
#
# Overrides after "--": key=value goes to every stage that has that option, stage.key=value
# (stage: sft, precompute, align, evaluate) to one stage. Installs into .venv on first use.
# Every stage resumes: rerunning after an interruption continues where it stopped.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
preset=cpu-demo
ranks=1
outdir=""
install=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) preset="$2"; shift 2 ;;
    --num-ranks) ranks="$2"; shift 2 ;;
    --output-dir) outdir="$2"; shift 2 ;;
    --no-install) install=0; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "run_all.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$install" = 1 ] && "$ROOT/scripts/install.sh"
source "$ROOT/scripts/env.sh"
source "$ROOT/scripts/launch.sh"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(pfo_threads_per_rank "$ranks")}"
cd "$ROOT"
args=(--config "$preset")
[ -n "$outdir" ] && args+=(--output_dir "$outdir")
declare -A stage_args
for s in sft precompute align evaluate; do
  stage_args[$s]="$("$PFO_PYTHON" -m pfo.config "$s" "${extra[@]}")"
done
outdir="${outdir:-$("$PFO_PYTHON" -c "import sys; from pfo.config import load_stage_config as l; print(l('align', sys.argv[1:]).output_dir)" "${args[@]}")}"
mkdir -p "$outdir"
timings="$outdir/timings.tsv"
: > "$timings"
run_stage() {
  local stage="$1" cfg="$2" t0 t1
  local -a over=()
  [ -n "${stage_args[$cfg]}" ] && mapfile -t over <<< "${stage_args[$cfg]}"
  echo "=== [$stage] $(date +%T)"
  t0=$(date +%s)
  pfo_launch "$stage" "$ranks" "${args[@]}" "${over[@]}"
  t1=$(date +%s)
  printf '%s\t%s\n' "$stage" "$((t1 - t0))" >> "$timings"
}
t_start=$(date +%s)
run_stage sft sft
run_stage precompute_ref precompute
run_stage align align
run_stage evaluate evaluate
total=$(( $(date +%s) - t_start ))
printf 'total\t%s\n' "$total" >> "$timings"

echo
echo "=== done in ${total}s (preset $preset, $ranks rank(s)); seconds per stage:"
sed 's/^/    /' "$timings"
echo "    SFT model:        $outdir/sft/final"
echo "    reference cache:  $outdir/ref_cache"
echo "    aligned model:    $outdir/align/final"
echo "    training log:     $outdir/align/log.jsonl"
echo "    Δ-margin:         $outdir/eval/delta_margin.json"
"$PFO_PYTHON" - "$outdir/eval/delta_margin.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"    Δ-margin before -> after: {r['margin_before']:.3f} -> {r['margin_after']:.3f} (Δ {r['delta_margin']:+.3f})")
PY
