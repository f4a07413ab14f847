"""Figures: training dynamics (paper Fig. 2) from stage-3 JSONL logs, and the Δ-margin bars
(Fig. 5) from evaluation results. PNG files via matplotlib's non-interactive Agg backend."""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np


class PlotError(ValueError):
    pass


def read_log(path: str) -> dict[str, np.ndarray]:
    """Step, desirable and undesirable log-probs from an align log.jsonl (batch means per step).
    A torn last line (a run killed while writing it) is left out; any other bad line is an error."""
    steps, pos, neg, rpos, rneg = [], [], [], [], []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise PlotError(f"cannot read {path}: {e}") from None
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError:
            if n - 1 == last:
                continue
            raise PlotError(f"{path}:{n}: not an align log record (not JSON)") from None
        try:
            row = (r["step"], float(r["logp_desirable"]), float(r["logp_undesirable"]),
                   r.get("reward_desirable"), r.get("reward_undesirable"))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise PlotError(f"{path}:{n}: not an align log record ({type(e).__name__}: {e})") from None
        for out, v in zip((steps, pos, neg, rpos, rneg), row):
            out.append(v)
    if not steps:
        raise PlotError(f"{path}: no steps logged")
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    rpos = np.asarray([np.nan if v is None else v for v in rpos], float)  # None: class absent that step
    rneg = np.asarray([np.nan if v is None else v for v in rneg], float)
    return {"step": np.asarray(steps), "logp_desirable": pos, "logp_undesirable": neg, "margin": pos - neg,
            "reward_desirable": rpos, "reward_undesirable": rneg, "reward_margin": rpos - rneg}


def smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average ignoring NaN (batches differ step to step, so raw curves are noisy)."""
    if window <= 1 or len(x) < 2:
        return x
    out = np.full_like(x, np.nan)
    for i in range(len(x)):
        w = x[max(0, i + 1 - window):i + 1]
        w = w[~np.isnan(w)]
        if w.size:
            out[i] = w.mean()
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_dynamics(runs: Sequence[tuple[str, str]], out_path: str, window: int = 4) -> str:
    """runs: (label, log.jsonl path). Top row: log p(desirable), log p(undesirable) and their
    margin; bottom row: the same for the implicit reward beta * log(pi/pi_ref), which removes the
    per-example spread of the batches. One line per run (moving average over ``window`` steps,
    raw values faint)."""
    plt = _pyplot()
    logs = [(label, read_log(path)) for label, path in runs]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    panels = [("logp_desirable", "log p(desirable)"), ("logp_undesirable", "log p(undesirable)"),
              ("margin", "margin: log p(desirable) - log p(undesirable)"),
              ("reward_desirable", "reward(desirable) = β log(π/π_ref)"),
              ("reward_undesirable", "reward(undesirable)"), ("reward_margin", "reward margin")]
    for ax, (key, title) in zip(axes.flat, panels):
        for i, (label, log) in enumerate(logs):
            color = f"C{i}"
            ax.plot(log["step"], log[key], color=color, alpha=0.25, linewidth=1)
            # methods often coincide for the first steps: a dash pattern and marker per run keep
            # a line that lies under another visible
            ax.plot(log["step"], smooth(log[key], window), color=color, linewidth=2, label=label,
                    linestyle=("-", "--", "-.", ":")[i % 4], marker="os^vDx"[i % 6], markersize=3.5, markevery=2)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("sequence log-prob (batch mean)")
    axes[1, 0].set_ylabel("implicit reward (batch mean)")
    axes[0, -1].legend()
    fig.suptitle(f"Training dynamics (moving average over {window} steps; raw values faint)")
    fig.tight_layout()
    return _save(fig, plt, out_path)


def plot_delta_margin(results: Sequence[tuple[str, dict]], out_path: str) -> str:
    """results: (label, delta_margin.json contents). Bars of the per-class log-prob changes and
    of the Δ-margin per method."""
    plt = _pyplot()
    labels = [label for label, _ in results]
    x = np.arange(len(labels))
    w = 0.27
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels) + 2), 4.2))
    series = [("delta_logp_desirable", "Δ log p(desirable)"), ("delta_logp_undesirable", "Δ log p(undesirable)"),
              ("delta_margin", "Δ-margin")]
    for k, (key, name) in enumerate(series):
        ax.bar(x + (k - 1) * w, [r[key] for _, r in results], w, label=name, color=f"C{k}")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, labels)
    ax.set_ylabel("change in sequence log-prob (after - before)")
    ax.set_title("Likelihood analysis")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, plt, out_path)


def _save(fig, plt, out_path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = f"{out_path}.tmp.{os.getpid()}.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out_path)
    return out_path
