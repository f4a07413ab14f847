"""Fused chunked log-probs against the naive full-logits reference: values and gradients for
hidden states, weight and bias, on odd shapes, with empty and full completions, every loss."""
import pytest
import torch

from pfo.fused import fused_token_logprobs
from pfo.logprobs import reference_sequence_logprobs, select_targets
from pfo.losses import LOSSES, get_loss

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-10, rtol=1e-10),
       torch.bfloat16: dict(atol=3e-2, rtol=3e-2)}


def problem(B=3, T=47, H=31, V=123, dtype=torch.float32, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=g).to(dtype)
    weight = (torch.randn(V, H, generator=g) / H ** 0.5).to(dtype)
    b = (torch.randn(V, generator=g) * 0.1).to(dtype) if bias else None
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = torch.zeros(B, T, dtype=torch.long)
    mask[0, 20:] = 1          # ordinary completion
    mask[1, :] = 1            # full: every position is a target
    if B > 2:
        mask[2, :] = 0        # empty completion: sequence log-prob 0, no gradient
    for i in range(3, B):
        mask[i, 5 + i:T - i] = 1
    return hidden, weight, b, ids, mask


def fused_sequence_logprobs(hidden, weight, bias, ids, mask, chunk_tokens=None):
    h, targets, rows = select_targets(hidden, ids, mask)
    tok = fused_token_logprobs(h, weight, targets, bias, chunk_tokens)
    return torch.zeros(ids.shape[0], dtype=tok.dtype).index_add(0, rows, tok)


def grads(fn, hidden, weight, bias, ids, mask, **kw):
    leaves = [t.detach().clone().requires_grad_() for t in (hidden, weight) + ((bias,) if bias is not None else ())]
    out = fn(leaves[0], leaves[1], leaves[2] if bias is not None else None, ids, mask, **kw)
    return out, leaves


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk", [None, 1, 7, 64])
def test_sequence_logprobs_and_grads_match_reference(dtype, bias, chunk):
    args = problem(dtype=dtype, bias=bias)
    # reference in float32 from the same (possibly bf16-rounded) inputs
    ref_in = [a.float() if a is not None and a.is_floating_point() else a for a in args]
    ref_out, ref_leaves = grads(reference_sequence_logprobs, *ref_in)
    out, leaves = grads(fused_sequence_logprobs, *args, chunk_tokens=chunk)
    upstream = torch.tensor([0.7, -1.3, 2.0])
    (ref_out * upstream).sum().backward()
    (out * upstream).sum().backward()
    tol = TOL[dtype]
    torch.testing.assert_close(out, ref_out, **tol)
    assert out[2].item() == 0.0  # empty completion
    for name, a, b in zip(("hidden", "weight", "bias"), leaves, ref_leaves):
        torch.testing.assert_close(a.grad.float(), b.grad, **tol, msg=name)
        assert a.grad.dtype == dtype


def test_chunk_size_does_not_change_results():
    args = problem(B=4, T=33, H=16, V=257, dtype=torch.float64)
    outs = []
    for chunk in (1, 3, 10, 1000):
        out, leaves = grads(fused_sequence_logprobs, *args, chunk_tokens=chunk)
        out.sum().backward()
        outs.append((out.detach(), [l.grad for l in leaves]))
    for out, g in outs[1:]:
        torch.testing.assert_close(out, outs[0][0], atol=1e-6, rtol=1e-6)
        for a, b in zip(g, outs[0][1]):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(11, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(11, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 11, (6,), generator=g)
    assert torch.autograd.gradcheck(lambda h, w, b: fused_token_logprobs(h, w, y, b, 4).double(), (h, w, b))


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("beta, lw, ll", [(0.1, 1.0, 1.0), (0.5, 1.5, 0.5), (0.01, 0.7, 2.0)])
def test_every_loss_through_fused_path(name, beta, lw, ll):
    B = 6
    hidden, weight, bias, ids, mask = problem(B=B, T=29, H=13, V=97, seed=2)
    desirable = torch.tensor([True, False, True, False, False, True])
    ref_logps = torch.randn(B, generator=torch.Generator().manual_seed(3)) - 40
    kl = {"policy_kl_logps": torch.randn(B) - 40, "ref_kl_logps": torch.randn(B) - 40}
    loss_fn = get_loss(name)
    results = []
    for fn in (reference_sequence_logprobs, fused_sequence_logprobs):
        out, leaves = grads(fn, hidden, weight, bias, ids, mask)
        loss = loss_fn(out, ref_logps, desirable, beta=beta, lambda_w=lw, lambda_l=ll, **kl).loss
        loss.backward()
        results.append((loss.detach(), [l.grad for l in leaves]))
    (l_ref, g_ref), (l_fused, g_fused) = results
    torch.testing.assert_close(l_fused, l_ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(g_fused, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_no_targets_at_all():
    w = torch.randn(7, 3, requires_grad=True)
    out = fused_token_logprobs(torch.zeros(0, 3), w, torch.zeros(0, dtype=torch.long))
    assert out.shape == (0,)
    out.sum().backward()
    assert torch.count_nonzero(w.grad) == 0
