"""Fused token log-probs: log softmax(h W^T + b)[y] without materialising logits for all tokens.

Forward walks the N target positions in chunks, keeping only each token's logsumexp and target
logit (N floats). Backward recomputes each chunk's logits from the saved hidden states and weight,
so peak extra memory is one chunk of logits (chunk x V) instead of N x V, in both passes.

Gradients, with p = softmax(z) for a chunk and g the incoming gradient per token:
    dz = g * (onehot(y) - p),  dh = dz W,  dW = dz^T h,  db = sum(dz).
Accumulation happens in float32 for float32/bf16/fp16 inputs (float64 for float64).
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import Tensor

from . import triton_kernels

# Elements of one logits chunk: 2^23 (32 MiB in fp32), 170 tokens a chunk at V = 49,152. Smaller
# chunks did not make the CPU step faster or slower within noise (benchmarks/fused_loss.py).
DEFAULT_CHUNK_ELEMENTS = 1 << 23


def _chunks(n: int, vocab: int, chunk_tokens: Optional[int]):
    step = chunk_tokens or max(1, DEFAULT_CHUNK_ELEMENTS // vocab)
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


def _use_triton(t: Tensor) -> bool:
    """Triton kernels on CUDA (float32 accumulation only; float64 stays on the torch path).
    PFO_FUSED_BACKEND=torch|triton forces a choice (triton on CPU needs TRITON_INTERPRET=1)."""
    choice = os.environ.get("PFO_FUSED_BACKEND", "auto")
    if choice == "torch" or _acc(t) != torch.float32:
        return False
    if choice == "triton":
        return True
    return triton_kernels.available(t.device)


def _acc(t: Tensor) -> torch.dtype:
    """Accumulation dtype: float32, or float64 for float64 inputs."""
    return torch.promote_types(t.dtype, torch.float32)


def _logits(h: Tensor, w_acc: Tensor, bias: Optional[Tensor]) -> Tensor:
    """Chunk logits computed in the accumulation dtype: bf16 logits rounded before the float32
    logsumexp would be off by ~0.04 nats at |z| ~ 20. w_acc is the weight in that dtype (the same
    tensor for float32 weights; one float32 copy per call for bf16)."""
    acc = w_acc.dtype
    z = h.to(acc) @ w_acc.t()
    return z + bias.to(acc) if bias is not None else z


class _FusedTokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_tokens):
        n, vocab = hidden.shape[0], weight.shape[0]
        lse = torch.empty(n, dtype=_acc(hidden), device=hidden.device)
        out = torch.empty(n, dtype=_acc(hidden), device=hidden.device)
        kernels = _use_triton(hidden)
        w_acc = weight.to(_acc(hidden))
        for lo, hi in _chunks(n, vocab, chunk_tokens):
            z = _logits(hidden[lo:hi], w_acc, bias)
            if kernels:
                lse[lo:hi], target_logit = triton_kernels.lse_and_target(z, targets[lo:hi])
            else:
                target_logit = z.gather(-1, targets[lo:hi, None]).squeeze(-1)
                # logsumexp in place (torch.logsumexp would allocate a second chunk-sized buffer)
                m = z.amax(-1, keepdim=True)
                lse[lo:hi] = z.sub_(m).exp_().sum(-1).log_().add_(m.squeeze(-1))
            out[lo:hi] = target_logit - lse[lo:hi]
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk_tokens = chunk_tokens
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        n, vocab = hidden.shape[0], weight.shape[0]
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        acc = _acc(hidden)
        kernels = _use_triton(hidden)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        grad_b = torch.zeros(vocab, dtype=acc, device=weight.device) if (need_b and bias is not None) else None
        w_acc = weight.to(acc)
        for lo, hi in _chunks(n, vocab, ctx.chunk_tokens):
            g = grad_out[lo:hi].to(acc)
            z = _logits(hidden[lo:hi], w_acc, bias)
            # in place on the recomputed logits: one chunk-sized buffer in backward
            if kernels:
                dz = triton_kernels.softmax_grad_(z, targets[lo:hi], lse[lo:hi], g)
            else:
                dz = z.sub_(lse[lo:hi, None]).exp_().mul_(-g[:, None])       # -g * p
                dz.scatter_add_(-1, targets[lo:hi, None], g[:, None])        # + g * onehot(y)
            if need_h:
                grad_h[lo:hi] = (dz @ w_acc).to(hidden.dtype)
            if need_w:
                grad_w.addmm_(dz.t(), hidden[lo:hi].to(acc))
            if grad_b is not None:
                grad_b += dz.sum(0)
        return (grad_h,
                grad_w.to(weight.dtype) if grad_w is not None else None,
                grad_b.to(bias.dtype) if grad_b is not None else None,
                None, None)


def fused_token_logprobs(hidden: Tensor, weight: Tensor, targets: Tensor, bias: Optional[Tensor] = None,
                         chunk_tokens: Optional[int] = None) -> Tensor:
    """hidden [N, H], weight [V, H], targets [N], bias [V] or None -> log p(target) [N]
    (float32; float64 for float64 inputs)."""
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=_acc(hidden)) + 0 * weight.sum()
    return _FusedTokenLogprobs.apply(hidden.contiguous(), weight, bias, targets.contiguous(), chunk_tokens)
