#!/usr/bin/env bash
# Submit the whole pipeline as four SLURM jobs chained with afterok dependencies.
#   PFO_PRESET=paper slurm/submit.sh [--nodes N]      (run from the repository root)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
nodes=1
[ "${1:-}" = "--nodes" ] && nodes="$2"
export PFO_ROOT="$(pwd)" PFO_PRESET="${PFO_PRESET:-paper}"
sub() { sbatch --parsable --export=ALL "$@"; }
sft=$(sub --nodes "$nodes" slurm/sft.sbatch)
ref=$(sub --nodes "$nodes" --dependency=afterok:"$sft" slurm/precompute_ref.sbatch)
aln=$(sub --nodes "$nodes" --dependency=afterok:"$ref" slurm/align.sbatch)
evl=$(sub --dependency=afterok:"$aln" slurm/evaluate.sbatch)
echo "submitted: sft=$sft precompute_ref=$ref align=$aln evaluate=$evl (preset $PFO_PRESET, $nodes node(s))"
