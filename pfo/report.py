"""Comparison report: a Markdown file with the recommendation table (paper Table 2), the
likelihood table (Fig. 5), MT-Bench scores when judged, and the figures, for several runs.

A run is a label, its align log (or none, e.g. for the SFT baseline) and its evaluation folder.
Only results found on disk are reported; a missing one is shown as "-" and listed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence

from .fileio import atomic_write_text
from .plots import PlotError, plot_delta_margin, plot_training_dynamics, read_log


class ReportError(ValueError):
    pass


@dataclass(frozen=True)
class Run:
    label: str
    eval_dir: str
    log_path: Optional[str] = None


def _load(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _fmt(v, digits=3) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _differences(results: dict, fields: dict) -> str:
    """A warning naming the settings in which the runs' results differ (so the table is not read
    as a like-for-like comparison); "" when they agree. fields: name -> function of a result."""
    lines = []
    for name, get in fields.items():
        values = {label: get(m) for label, m in results.items() if m}
        if len(set(map(str, values.values()))) > 1:
            lines.append(f"`{name}`: " + ", ".join(f"{label} {v}" for label, v in values.items()))
    return ("\n\n**Not comparable: the runs differ in** " + "; ".join(lines) + ".") if lines else ""


def write_report(runs: Sequence[Run], out_dir: str, title: str = "PFO comparison", preamble: str = "",
                 window: int = 4) -> str:
    rec = {r.label: _load(os.path.join(r.eval_dir, "rec_metrics.json")) for r in runs}
    margin = {r.label: _load(os.path.join(r.eval_dir, "delta_margin.json")) for r in runs}
    mt = {r.label: _load(os.path.join(r.eval_dir, "mtbench_scores.json")) for r in runs}
    found = {r.label for r in runs if rec[r.label] or margin[r.label] or mt[r.label]}
    if not found:
        raise ReportError("no evaluation results (rec_metrics.json, delta_margin.json, mtbench_scores.json) in "
                          + ", ".join(f"{r.label}: {r.eval_dir}" for r in runs))
    os.makedirs(out_dir, exist_ok=True)
    parts = [f"# {title}", preamble.strip()] if preamble.strip() else [f"# {title}"]
    missing = [f"{r.label}: no results at all in {r.eval_dir}" for r in runs if r.label not in found]

    if any(rec.values()):
        any_rec = next(v for v in rec.values() if v)
        rows = []
        for r in runs:
            m = rec[r.label]
            if m is None and r.label in found:
                missing.append(f"{r.label}: rec_metrics.json")
            rows.append([r.label] + ([f"{m['hit_rate@5']:.4f}/{m['hit_rate@10']:.4f}", f"{m['div_ratio']:.4f}",
                                      str(m["num_users"]),
                                      f"{m['num_recommendations']}/{m['num_users'] * m['decoding']['num_return_sequences']}"]
                                     if m else ["-"] * 4))
        d = any_rec["decoding"]
        differ = _differences(rec, {"dataset": lambda m: m["dataset"], "users": lambda m: m["num_users"],
                                    "decoding": lambda m: m["decoding"]})
        few = (f" With {d['num_return_sequences']} recommendations per user, HitRate@K for K above that counts "
               f"all {d['num_return_sequences']}." if d["num_return_sequences"] < 10 else "")
        parts.append(f"## Recommendation (paper §4.2, Table 2)\n\nDataset `{any_rec['dataset']}`, each held-out "
                     f"user's last item; {d['num_return_sequences']} recommendations per user by {d['mode']} "
                     f"decoding (seed {d['seed']}); titles compared without bracketed parts. DivRatio = unique "
                     f"titles / all generations; *titles* = generations that named a title.{few}{differ}\n\n"
                     + _table(["method", "HitRate (@5/@10)", "DivRatio", "users", "titles"], rows))

    margin_runs = [(r.label, margin[r.label]) for r in runs if margin[r.label]]
    if margin_runs:
        rows = [[label, _fmt(m["margin_before"]), _fmt(m["margin_after"]), f"{m['delta_margin']:+.3f}",
                 f"{m['delta_logp_desirable']:+.3f}", f"{m['delta_logp_undesirable']:+.3f}", str(m["num_desirable"] + m["num_undesirable"])]
                for label, m in margin_runs]
        first = margin_runs[0][1]
        differ = _differences(dict(margin_runs), {"split": lambda m: m.get("split"),
                                                  "examples": lambda m: m["num_desirable"] + m["num_undesirable"],
                                                  "before": lambda m: m.get("before", "").split(" /")[0]})
        plot_delta_margin(margin_runs, os.path.join(out_dir, "delta_margin.png"))
        parts.append(f"## Likelihood analysis (paper Fig. 5)\n\nSequence log-probs on "
                     f"{first['num_desirable'] + first['num_undesirable']} sampled {first.get('split', 'eval')} examples, "
                     f"before = {first.get('before', 'reference cache').split(' /')[0]}, after = the aligned model. margin = mean log p(desirable) - mean log p(undesirable).{differ}\n\n"
                     + _table(["method", "margin before", "margin after", "Δ-margin", "Δ log p(desirable)",
                               "Δ log p(undesirable)", "examples"], rows)
                     + "\n\n![Δ-margin](delta_margin.png)")
    missing += [f"{r.label}: delta_margin.json" for r in runs if r.label in found and not margin[r.label]]

    judged = [(r.label, mt[r.label]) for r in runs if mt[r.label] and mt[r.label].get("judge")]
    if judged:
        cats = sorted({c for _, m in judged for c in m["per_category"]})
        rows = [[label, _fmt(m["average"], 2), _fmt(m["turn_1"], 2), _fmt(m["turn_2"], 2)]
                + [_fmt(m["per_category"].get(c), 2) for c in cats] + [f"{m['scored']}/{m['expected']}"]
                for label, m in judged]
        differ = _differences(dict(judged), {"judge": lambda m: m["judge"], "questions": lambda m: m.get("num_questions"),
                                             "answer decoding": lambda m: m.get("mtbench_decoding"),
                                             "answer max_new_tokens": lambda m: m.get("max_new_tokens")})
        parts.append(f"## MT-Bench\n\nJudge `{judged[0][1]['judge']}`, single-answer grading (1-10).{differ}\n\n"
                     + _table(["method", "average", "turn 1", "turn 2", *cats, "scored"], rows))
        missing += [f"{r.label}: MT-Bench answers not judged" for r in runs
                    if mt[r.label] and not mt[r.label].get("judge")]
    elif any(mt.values()):
        parts.append("## MT-Bench\n\nAnswers were generated; scoring was skipped (no judge configured).")
    if judged or any(mt.values()):
        missing += [f"{r.label}: mtbench_scores.json" for r in runs if r.label in found and not mt[r.label]]

    logged = []
    for r in runs:
        if r.log_path and os.path.exists(r.log_path):
            try:  # one unreadable log costs its curve, not the report
                read_log(r.log_path)
                logged.append((r.label, r.log_path))
            except PlotError as e:
                missing.append(f"{r.label}: training dynamics ({e})")
    if logged:
        plot_training_dynamics(logged, os.path.join(out_dir, "training_dynamics.png"), window)
        parts.append("## Training dynamics (paper Fig. 2)\n\nBatch-mean sequence log-probs per step from each "
                     "run's `align/log.jsonl`.\n\n![training dynamics](training_dynamics.png)")
    if missing:
        parts.append("## Missing results\n\n" + "\n".join(f"- {m}" for m in missing))
    path = os.path.join(out_dir, "report.md")
    atomic_write_text(path, "\n\n".join(parts) + "\n")
    return path
