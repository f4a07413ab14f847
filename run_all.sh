#!/usr/bin/env bash
# The whole pipeline on one machine: SFT -> reference precompute -> alignment -> quick evaluation.
#
#   ./run_all.sh                                  # cpu-demo preset: real SmolLM2-135M, real data
#   ./run_all.sh --preset smoke --num-ranks 2     # tiny random model, seconds per stage
#   ./run_all.sh --preset cpu-demo --output-dir runs/x -- loss=kto beta=0.05 sft.lr=1e-5
#   ./run_all.sh --compare                        # PFO, PFO+, KTO, KLDO from one SFT model and cache,
#                                                 # evaluated and compared in <output_dir>/compare/report.md
#   ./run_all.sh --compare --methods pfo,kto -- evaluate.tasks=margin,rec,mtbench
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
compare=0
methods=pfo,pfo_plus,kto,kldo
extra=()
cmdline="./run_all.sh $*"
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) preset="$2"; shift 2 ;;
    --num-ranks) ranks="$2"; shift 2 ;;
    --output-dir) outdir="$2"; shift 2 ;;
    --no-install) install=0; shift ;;
    --compare) compare=1; shift ;;
    --methods) methods="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
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
run_stage() {  # run_stage STAGE_SCRIPT CONFIG_SECTION LABEL [extra flags, after the overrides]
  local stage="$1" cfg="$2" label="$3" t0 t1
  shift 3
  local -a over=()
  [ -n "${stage_args[$cfg]}" ] && mapfile -t over <<< "${stage_args[$cfg]}"
  echo "=== [$label] $(date +%T)"
  t0=$(date +%s)
  pfo_launch "$stage" "$ranks" "${args[@]}" "${over[@]}" "$@"
  t1=$(date +%s)
  printf '%s\t%s\n' "$label" "$((t1 - t0))" >> "$timings"
}
t_start=$(date +%s)
run_stage sft sft sft
run_stage precompute_ref precompute precompute_ref
if [ "$compare" = 1 ]; then
  # Every method starts from the same SFT model and reads the same reference cache; the last
  # flags win over preset and overrides, so only loss and output folders differ between runs.
  cmp="$outdir/compare"
  # The SFT model is the baseline row; its Δ-margin against the cache (scored by the same
  # model) must come out ~0, a check that scoring here matches the cached reference.
  run_stage evaluate evaluate "evaluate[sft]" --model "$outdir/sft/final" --output "$cmp/sft/eval"
  runs=(sft="$cmp/sft")
  for m in ${methods//,/ }; do
    run_stage align align "align[$m]" --loss "$m" --output "$cmp/$m/align"
    run_stage evaluate evaluate "evaluate[$m]" --model "$cmp/$m/align/final" --output "$cmp/$m/eval"
    runs+=("$m=$cmp/$m")
  done
else
  run_stage align align align
  run_stage evaluate evaluate evaluate
fi
total=$(( $(date +%s) - t_start ))
printf 'total\t%s\n' "$total" >> "$timings"

echo
echo "=== done in ${total}s (preset $preset, $ranks rank(s)); seconds per stage:"
sed 's/^/    /' "$timings"
echo "    SFT model:        $outdir/sft/final"
echo "    reference cache:  $outdir/ref_cache"
if [ "$compare" = 1 ]; then
  {
    echo "Produced by \`$cmdline\` (preset \`$preset\`, $ranks rank(s), $(nproc) CPU cores) in ${total} s;"
    echo "every method aligned from the same SFT model and reference cache. Seconds per stage:"
    echo
    awk -F'\t' '{printf "- %s: %s s\n", $1, $2}' "$timings"
  } > "$cmp/preamble.md"
  "$PFO_PYTHON" -m pfo.cli report "${runs[@]}" --out "$cmp" --title "Method comparison ($preset)" \
    --preamble "$cmp/preamble.md"
  echo "    report:           $cmp/report.md (+ training_dynamics.png, delta_margin.png)"
  exit 0
fi
echo "    aligned model:    $outdir/align/final"
echo "    training log:     $outdir/align/log.jsonl"
echo "    evaluation:       $outdir/eval/"
"$PFO_PYTHON" - "$outdir/eval" <<'PY'
import json, os, sys
def load(name):
    try:
        return json.load(open(os.path.join(sys.argv[1], name)))
    except OSError:
        return None
r = load("delta_margin.json")
if r:
    print(f"    Δ-margin before -> after: {r['margin_before']:.3f} -> {r['margin_after']:.3f} (Δ {r['delta_margin']:+.3f})")
r = load("rec_metrics.json")
if r:
    print(f"    recommendation ({r['num_users']} users): HitRate@5/@10 {r['hit_rate@5']:.4f}/{r['hit_rate@10']:.4f}, "
          f"DivRatio {r['div_ratio']:.4f}")
PY
