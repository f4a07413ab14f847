"""Binary-feedback alignment losses (paper eqs. 2, 3, 4, 9).

Pure functions: sequence log-probs in, a LossOutput out. No process groups here; to make the
batch expectations cover all ranks, the training step gathers the per-example statistics first
(see pfo.distributed.gather_with_grad) and calls these on the global batch.

r = beta * (log pi_theta(y|x) - log pi_ref(y|x)) with sequence-level (summed) log-probs.
E+ / E- are means over desirable / undesirable examples. log E[exp(t)] is computed with
logsumexp. A class with no examples contributes 0 (finite loss, finite gradients).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor


class LossOutput(NamedTuple):
    loss: Tensor                 # scalar, carries the graph
    rewards: Tensor              # [B] r = beta * (policy - ref), detached
    desirable_reward: Tensor     # mean r over desirable examples (nan if none), detached
    undesirable_reward: Tensor
    desirable_logp: Tensor       # mean policy sequence log-prob per class (nan if none)
    undesirable_logp: Tensor
    # this batch's log E[exp(t)] per class (detached; nan where the loss has no such term):
    # what an EMA normaliser (pfo.normalizer) tracks across steps
    desirable_log_mean_exp: Tensor = torch.tensor(math.nan)
    undesirable_log_mean_exp: Tensor = torch.tensor(math.nan)


def masked_mean(t: Tensor, mask: Tensor) -> Tensor:
    """Mean of t over mask; 0 (with a zero gradient) when the mask is empty."""
    return (t * mask).sum() / mask.sum().clamp(min=1)


def masked_log_mean_exp(t: Tensor, mask: Tensor, log_denominator: Optional[Tensor] = None) -> Tensor:
    """log( mean_{mask} exp(t) ) via logsumexp; 0 (zero gradient) when the mask is empty.

    Masked entries are replaced by -inf *before* exp, so they get an exact zero weight; the
    empty case is handled separately because logsumexp over all -inf has a NaN gradient.

    With log_denominator = log D (a detached running estimate of E[exp(t)], MINE-style), the
    value is log D and the gradient is mean_{mask} exp(t_i - log D) * grad t_i: the batch mean in
    the denominator is replaced by the estimate, so huge batches need not be seen at once.
    """
    n = mask.sum()
    if int(n) == 0:
        return t.sum() * 0.0
    if log_denominator is not None:
        log_denominator = log_denominator.to(t.dtype)
        # Unbounded t (KLDO's r) can run ahead of a lagging estimate; cap the weight at e^60
        # instead of overflowing to inf/NaN. PFO/PFO+ use t = sigmoid(r) in (0, 1): never capped.
        w = (torch.exp((t - log_denominator).clamp(max=60.0)) * mask).sum() / n
        return log_denominator + (w - w.detach())
    filled = t.masked_fill(~mask, float("-inf"))
    return torch.logsumexp(filled, dim=0) - torch.log(n.to(t.dtype))


def _batch_lme(t: Tensor, mask: Tensor) -> Tensor:
    return masked_log_mean_exp(t.detach(), mask) if bool(mask.any()) else torch.tensor(math.nan)


def _class_mean(t: Tensor, mask: Tensor) -> Tensor:
    t = t.detach()
    return t[mask].mean() if bool(mask.any()) else torch.full((), math.nan, dtype=t.dtype)


def _output(loss, rewards, policy_logps, desirable, lme_pos=None, lme_neg=None) -> LossOutput:
    undesirable = ~desirable
    nan = torch.tensor(math.nan)
    return LossOutput(
        loss=loss,
        rewards=rewards.detach(),
        desirable_reward=_class_mean(rewards, desirable),
        undesirable_reward=_class_mean(rewards, undesirable),
        desirable_logp=_class_mean(policy_logps, desirable),
        undesirable_logp=_class_mean(policy_logps, undesirable),
        desirable_log_mean_exp=_batch_lme(lme_pos, desirable) if lme_pos is not None else nan,
        undesirable_log_mean_exp=_batch_lme(lme_neg, undesirable) if lme_neg is not None else nan,
    )


def _denominators(log_denominators):
    """(log D+, log D-) from an optional pair; None entries mean 'exact batch normaliser'."""
    return log_denominators if log_denominators is not None else (None, None)


def _rewards(policy_logps: Tensor, ref_logps: Tensor, beta: float) -> Tensor:
    return beta * (policy_logps - ref_logps.to(policy_logps.dtype))


# log_denominators: optional (log D+, log D-) running estimates of E[exp(t)] per class, which
# replace the batch means inside log E[exp(t)] (normalizer "ema"); None = exact batch normaliser.

def pfo_loss(policy_logps, ref_logps, desirable, *, beta, lambda_w=1.0, lambda_l=1.0,
             log_denominators=None, **_) -> LossOutput:
    """Eq. 4: -lw * log E+[exp(s(r))] + ll * log E-[exp(s(r))]."""
    d_pos, d_neg = _denominators(log_denominators)
    r = _rewards(policy_logps, ref_logps, beta)
    t = torch.sigmoid(r)
    loss = (-lambda_w * masked_log_mean_exp(t, desirable, d_pos)
            + lambda_l * masked_log_mean_exp(t, ~desirable, d_neg))
    return _output(loss, r, policy_logps, desirable, lme_pos=t, lme_neg=t)


def pfo_plus_loss(policy_logps, ref_logps, desirable, *, beta, lambda_w=1.0, lambda_l=1.0,
                  log_denominators=None, **_) -> LossOutput:
    """Eq. 9: -lw * E+[s(r)] + ll * log E-[exp(s(r))]."""
    _, d_neg = _denominators(log_denominators)
    r = _rewards(policy_logps, ref_logps, beta)
    t = torch.sigmoid(r)
    loss = -lambda_w * masked_mean(t, desirable) + lambda_l * masked_log_mean_exp(t, ~desirable, d_neg)
    return _output(loss, r, policy_logps, desirable, lme_neg=t)


def kldo_loss(policy_logps, ref_logps, desirable, *, beta, lambda_w=1.0, lambda_l=1.0,
              log_denominators=None, **_) -> LossOutput:
    """Eq. 3: -lw * E+[r] + ll * log E-[exp(r)]."""
    _, d_neg = _denominators(log_denominators)
    r = _rewards(policy_logps, ref_logps, beta)
    loss = -lambda_w * masked_mean(r, desirable) + lambda_l * masked_log_mean_exp(r, ~desirable, d_neg)
    return _output(loss, r, policy_logps, desirable, lme_neg=r)


def kto_z0(policy_kl_logps: Tensor, ref_kl_logps: Tensor, beta: float) -> Tensor:
    """KTO reference point: beta * mean KL estimate on mismatched pairs, clamped at 0, detached."""
    kl = (policy_kl_logps.detach() - ref_kl_logps.to(policy_kl_logps.dtype)).mean()
    return (beta * kl).clamp(min=0)


def kto_loss(policy_logps, ref_logps, desirable, *, beta, lambda_w=1.0, lambda_l=1.0,
             policy_kl_logps: Optional[Tensor] = None, ref_kl_logps: Optional[Tensor] = None,
             **_) -> LossOutput:
    """Eq. 2: lw * E+[1 - s(r - z0)] + ll * E-[1 - s(z0 - r)], z0 from mismatched pairs."""
    if policy_kl_logps is None or ref_kl_logps is None:
        raise ValueError("kto_loss needs policy_kl_logps and ref_kl_logps (mismatched-pair log-probs)")
    r = _rewards(policy_logps, ref_logps, beta)
    z0 = kto_z0(policy_kl_logps, ref_kl_logps, beta)
    loss = (lambda_w * masked_mean(1 - torch.sigmoid(r - z0), desirable)
            + lambda_l * masked_mean(1 - torch.sigmoid(z0 - r), ~desirable))
    return _output(loss, r, policy_logps, desirable)


LOSSES: dict[str, Callable[..., LossOutput]] = {
    "pfo": pfo_loss,
    "pfo_plus": pfo_plus_loss,
    "kldo": kldo_loss,
    "kto": kto_loss,
}
NEEDS_KL_PAIRS = {"kto"}


def get_loss(name: str) -> Callable[..., LossOutput]:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}") from None
