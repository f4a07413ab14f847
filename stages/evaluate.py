"""Evaluation of an aligned model: the paper's §4 measurements (see pfo/evaluation.py).

    python stages/evaluate.py --config cpu-demo [--model DIR] [--tasks margin,rec,mtbench,alpaca]
    pfo eval rec --model DIR                      # the same, one task

Single process. Results go to <output> (default <output_dir>/eval): delta_margin.json,
rec_metrics.json (+ recommendations.jsonl), mtbench_scores.json (+ mtbench/*.jsonl in FastChat's
formats), alpaca/model_outputs.json. Rerunning resumes generation where it stopped.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pfo.evaluation import main  # noqa: E402

if __name__ == "__main__":
    main()
