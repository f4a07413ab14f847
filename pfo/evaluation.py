"""Likelihood analysis (paper Fig. 5): how alignment moved the log-probs of each class."""
from __future__ import annotations

import numpy as np


def delta_margin(before: np.ndarray, after: np.ndarray, desirable: np.ndarray) -> dict:
    """margin = mean log p(desirable) - mean log p(undesirable); delta = after - before.

    before: reference (pre-alignment) sequence log-probs; after: aligned policy's, same examples.
    """
    before, after, desirable = map(np.asarray, (before, after, desirable))
    desirable = desirable.astype(bool)
    if not desirable.any() or desirable.all():
        raise ValueError("the Δ-margin needs examples of both classes")

    def stats(x):
        return float(x[desirable].mean()), float(x[~desirable].mean())

    b_pos, b_neg = stats(before)
    a_pos, a_neg = stats(after)
    return {
        "num_desirable": int(desirable.sum()), "num_undesirable": int((~desirable).sum()),
        "margin_before": b_pos - b_neg, "margin_after": a_pos - a_neg,
        "delta_margin": (a_pos - a_neg) - (b_pos - b_neg),
        "logp_desirable_before": b_pos, "logp_desirable_after": a_pos, "delta_logp_desirable": a_pos - b_pos,
        "logp_undesirable_before": b_neg, "logp_undesirable_after": a_neg, "delta_logp_undesirable": a_neg - b_neg,
    }
