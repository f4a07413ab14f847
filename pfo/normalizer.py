"""Running estimate of the batch normaliser E[exp(t)] for the log E[exp(.)] terms ("ema").

The exact normaliser needs every example of the optimizer step; for batches too large to score
at once, MINE (Belghazi et al., 2018) replaces the batch mean in the gradient's denominator by an
exponential moving average. Ours is bias-corrected like Adam's moments, kept per class in log
space, and identical on every rank (it is updated with the all-rank statistics).
"""
from __future__ import annotations

import math
from typing import Optional

import torch


class EmaLogDenominator:
    def __init__(self, decay: float = 0.9):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.log_avg: Optional[float] = None  # log of the (uncorrected) running average
        self.count = 0

    def update(self, batch_log_mean_exp: float) -> Optional[torch.Tensor]:
        """Fold in this batch's log E[exp(t)] and return the bias-corrected log D (None if the
        batch has no examples of this class and nothing was seen yet)."""
        if not math.isnan(batch_log_mean_exp):
            x = math.log1p(-self.decay) + batch_log_mean_exp
            if self.log_avg is None or self.decay == 0:
                self.log_avg = x
            else:  # log(decay * avg + (1 - decay) * batch), in log space: no overflow
                y = math.log(self.decay) + self.log_avg
                hi = max(x, y)
                self.log_avg = hi + math.log(math.exp(x - hi) + math.exp(y - hi))
            self.count += 1
        if self.log_avg is None:
            return None
        return torch.tensor(self.log_avg - math.log1p(-self.decay ** self.count), dtype=torch.float64)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "log_avg": self.log_avg, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.log_avg, self.count = state["decay"], state["log_avg"], state["count"]
