"""Triton kernels for the fused log-prob path on CUDA (pfo.fused).

The GEMMs stay with cuBLAS (torch.matmul); Triton replaces the chunk's elementwise passes, which
on GPU are memory-bound and would otherwise read and write the [chunk, V] logits several times:
- forward: one pass per row computes an online logsumexp and picks the target logit;
- backward: one in-place pass turns the recomputed logits into dz = g * (onehot(y) - softmax).
On CPU they run only under the Triton interpreter (TRITON_INTERPRET=1), which the tests use.
"""
from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # triton is optional: CPU installs and the torch path do not need it
    triton = None


def available(device: torch.device) -> bool:
    """Use the kernels for CUDA tensors (or anywhere under the interpreter, for testing)."""
    if triton is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:

    @triton.jit
    def _lse_target_kernel(z_ptr, stride, targets_ptr, lse_ptr, tgt_ptr, V, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)  # row * stride can pass 2^31 for big chunks
        base = z_ptr + row * stride
        m = tl.full([BLOCK], float("-inf"), tl.float32)
        s = tl.zeros([BLOCK], tl.float32)
        for start in range(0, V, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            z = tl.load(base + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, z)
            # per-lane online logsumexp; lanes that have seen only -inf stay at 0
            s = tl.where(m_new == float("-inf"), 0.0, s * tl.exp(m - m_new) + tl.exp(z - m_new))
            m = m_new
        m_all = tl.max(m, 0)
        total = tl.sum(tl.where(m == float("-inf"), 0.0, s * tl.exp(m - m_all)), 0)
        tl.store(lse_ptr + row, tl.log(total) + m_all)
        t = tl.load(targets_ptr + row)
        tl.store(tgt_ptr + row, tl.load(base + t).to(tl.float32))

    @triton.jit
    def _softmax_grad_kernel(z_ptr, stride, targets_ptr, lse_ptr, g_ptr, V, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)  # row * stride can pass 2^31 for big chunks
        base = z_ptr + row * stride
        lse = tl.load(lse_ptr + row)
        g = tl.load(g_ptr + row)
        t = tl.load(targets_ptr + row)
        for start in range(0, V, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            z = tl.load(base + cols, mask=cols < V, other=0.0).to(tl.float32)
            dz = -g * tl.exp(z - lse) + tl.where(cols == t, g, 0.0)
            tl.store(base + cols, dz, mask=cols < V)


def _block(vocab: int) -> int:
    return min(4096, triton.next_power_of_2(vocab))


def lse_and_target(z: torch.Tensor, targets: torch.Tensor):
    """z [n, V] float32 contiguous -> (logsumexp [n], z[i, targets[i]] [n])."""
    n, vocab = z.shape
    lse = torch.empty(n, dtype=torch.float32, device=z.device)
    tgt = torch.empty(n, dtype=torch.float32, device=z.device)
    _lse_target_kernel[(n,)](z, z.stride(0), targets, lse, tgt, vocab, BLOCK=_block(vocab))
    return lse, tgt


def softmax_grad_(z: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """In place: z <- g * (onehot(targets) - exp(z - lse)); returns z."""
    n, vocab = z.shape
    _softmax_grad_kernel[(n,)](z, z.stride(0), targets, lse, g.float().contiguous(), vocab, BLOCK=_block(vocab))
    return z
