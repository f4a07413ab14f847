"""Loss values against hand computation, gradients against finite differences, edge cases."""
import math

import pytest
import torch

from pfo.losses import LOSSES, get_loss, kldo_loss, kto_loss, masked_log_mean_exp, pfo_loss, pfo_plus_loss

LN3 = math.log(3.0)


def batch(r_pos, r_neg, dtype=torch.float64):
    """Policy log-probs equal to the desired rewards with beta=1 and reference log-probs 0."""
    policy = torch.tensor(list(r_pos) + list(r_neg), dtype=dtype)
    desirable = torch.tensor([True] * len(r_pos) + [False] * len(r_neg))
    return policy, torch.zeros_like(policy), desirable


def test_pfo_hand_computed():
    """r+ = [0, ln 3] -> s(r+) = [1/2, 3/4]; r- = [-ln 3] -> s(r-) = 1/4.
    PFO = -log((e^0.5 + e^0.75) / 2) + log(e^0.25) = -log(1.882860644) + 0.25 = -0.6327922 + 0.25."""
    out = pfo_loss(*batch([0.0, LN3], [-LN3]), beta=1.0)
    assert out.loss.item() == pytest.approx(-0.3827922, abs=1e-6)
    assert out.loss.item() == pytest.approx(-math.log((math.exp(0.5) + math.exp(0.75)) / 2) + 0.25, abs=1e-12)


def test_pfo_plus_hand_computed():
    """PFO+ = -(1/2 + 3/4)/2 + log(e^0.25) = -0.625 + 0.25 = -0.375; with lw=2, ll=0.5: -1.25 + 0.125."""
    args = batch([0.0, LN3], [-LN3])
    assert pfo_plus_loss(*args, beta=1.0).loss.item() == pytest.approx(-0.375, abs=1e-12)
    assert pfo_plus_loss(*args, beta=1.0, lambda_w=2.0, lambda_l=0.5).loss.item() == pytest.approx(-1.125, abs=1e-12)


def test_kldo_hand_computed():
    """KLDO = -(0 + ln 3)/2 + log(e^{-ln 3}) = -1.5 ln 3 = -1.6479184."""
    out = kldo_loss(*batch([0.0, LN3], [-LN3]), beta=1.0)
    assert out.loss.item() == pytest.approx(-1.6479184, abs=1e-6)


def test_kto_hand_computed():
    """z0 = beta * mean(policy_kl - ref_kl) = 0.5. r+ = [0.5, 0.5 + ln 3]: 1 - s(r - z0) = [1/2, 1/4],
    mean 3/8; r- = [0.5 - ln 3]: 1 - s(z0 - r) = 1 - s(ln 3) = 1/4. KTO = 0.375 + 0.25 = 0.625."""
    kl_policy = torch.tensor([1.0, 0.0], dtype=torch.float64)
    kl_ref = torch.tensor([0.0, 0.0], dtype=torch.float64)
    out = kto_loss(*batch([0.5, 0.5 + LN3], [0.5 - LN3]), beta=1.0, policy_kl_logps=kl_policy, ref_kl_logps=kl_ref)
    assert out.loss.item() == pytest.approx(0.625, abs=1e-12)


def test_kto_z0_clamped_at_zero_and_detached():
    """A negative KL estimate gives z0 = 0: r+ = [0] -> 1/2, r- = [0] -> 1/2, KTO = 1."""
    kl_policy = torch.tensor([-3.0, -1.0], dtype=torch.float64, requires_grad=True)
    out = kto_loss(*batch([0.0], [0.0]), beta=1.0, policy_kl_logps=kl_policy,
                   ref_kl_logps=torch.zeros(2, dtype=torch.float64))
    assert out.loss.item() == pytest.approx(1.0, abs=1e-12)
    assert not out.loss.requires_grad or kl_policy.grad is None


def test_kto_needs_kl_pairs():
    with pytest.raises(ValueError, match="mismatched"):
        kto_loss(*batch([0.0], [0.0]), beta=0.1)


def test_beta_scales_reward():
    policy, ref, des = batch([0.2, 0.4], [0.1])
    out = pfo_loss(policy, ref, des, beta=0.5)
    assert torch.allclose(out.rewards, 0.5 * policy)
    assert out.desirable_reward.item() == pytest.approx(0.15)
    assert out.undesirable_reward.item() == pytest.approx(0.05)


def _kl_kwargs(n, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return {"policy_kl_logps": torch.randn(n, generator=g, dtype=dtype),
            "ref_kl_logps": torch.randn(n, generator=g, dtype=dtype) - 0.5}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0])
def test_gradcheck_float64(name, beta):
    g = torch.Generator().manual_seed(0)
    policy = (torch.randn(7, generator=g, dtype=torch.float64) * 5).requires_grad_()
    ref = torch.randn(7, generator=g, dtype=torch.float64) * 5
    des = torch.tensor([True, False, True, True, False, False, True])
    fn = get_loss(name)
    kw = _kl_kwargs(7)
    assert torch.autograd.gradcheck(
        lambda p: fn(p, ref, des, beta=beta, lambda_w=1.3, lambda_l=0.7, **kw).loss, (policy,))


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("only", [True, False])
def test_one_class_batch_is_finite(name, only):
    policy = torch.randn(5, dtype=torch.float64, requires_grad=True)
    des = torch.full((5,), only)
    out = get_loss(name)(policy, torch.zeros(5, dtype=torch.float64), des, beta=0.1, **_kl_kwargs(5))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert torch.isfinite(policy.grad).all()
    # the missing class contributes nothing and its statistics are reported as missing, not 0
    missing = out.undesirable_reward if only else out.desirable_reward
    assert math.isnan(missing.item())


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_permutation_invariant(name):
    g = torch.Generator().manual_seed(3)
    policy, ref = torch.randn(9, generator=g, dtype=torch.float64), torch.randn(9, generator=g, dtype=torch.float64)
    des = torch.tensor([1, 0, 1, 0, 0, 1, 1, 0, 1], dtype=torch.bool)
    perm = torch.randperm(9, generator=g)
    kw = _kl_kwargs(9)
    fn = get_loss(name)
    a = fn(policy, ref, des, beta=0.3, **kw).loss
    b = fn(policy[perm], ref[perm], des[perm], beta=0.3, **kw).loss
    assert a.item() == pytest.approx(b.item(), abs=1e-12)


def test_log_mean_exp_no_overflow():
    """exp(1000) overflows float64; logsumexp does not."""
    t = torch.tensor([1000.0, 1000.0, -5.0], dtype=torch.float64)
    m = torch.tensor([True, True, False])
    assert masked_log_mean_exp(t, m).item() == pytest.approx(1000.0)
    policy, ref, des = batch([0.0], [1000.0, 999.0])
    out = kldo_loss(policy.requires_grad_(), ref, des, beta=1.0)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(policy.grad).all()


def test_pfo_gradient_weights_are_batch_softmax():
    """d PFO / d r_i for an undesirable i is softmax_j(s(r_j))_i * s'(r_i): the batch coupling."""
    r = torch.tensor([0.3, -1.0, 2.0, 0.7], dtype=torch.float64, requires_grad=True)
    des = torch.tensor([True, False, False, False])
    pfo_loss(r, torch.zeros(4, dtype=torch.float64), des, beta=1.0).loss.backward()
    s = torch.sigmoid(r.detach()[1:])
    expected = torch.softmax(s, 0) * s * (1 - s)
    assert torch.allclose(r.grad[1:], expected, atol=1e-12)


def test_global_batch_from_rank_slices():
    """The training step's cross-rank trick, without a process group: each 'rank' keeps the graph
    only on its slice of the gathered batch; the per-rank gradients sum to the full-batch gradient."""
    g = torch.Generator().manual_seed(5)
    policy = torch.randn(8, generator=g, dtype=torch.float64)
    ref = torch.randn(8, generator=g, dtype=torch.float64)
    des = torch.tensor([1, 0] * 4, dtype=torch.bool)
    for name in sorted(LOSSES):
        fn, kw = get_loss(name), _kl_kwargs(8)
        full = policy.clone().requires_grad_()
        fn(full, ref, des, beta=0.5, **kw).loss.backward()
        summed = torch.zeros(8, dtype=torch.float64)
        for rank in range(2):
            local = policy[rank * 4:(rank + 1) * 4].clone().requires_grad_()
            parts = [policy[:4], policy[4:]]
            parts[rank] = local
            fn(torch.cat(parts), ref, des, beta=0.5, **kw).loss.backward()
            summed[rank * 4:(rank + 1) * 4] = local.grad
        assert torch.allclose(summed, full.grad, atol=1e-12), name


def test_log_denominator_equal_to_batch_value_gives_exact_gradient():
    """MINE-style estimate: when the running log D equals this batch's log E[exp(t)], value and
    gradient equal the exact normaliser's."""
    g = torch.Generator().manual_seed(11)
    policy = torch.randn(8, generator=g, dtype=torch.float64)
    ref = torch.randn(8, generator=g, dtype=torch.float64)
    des = torch.tensor([1, 0] * 4, dtype=torch.bool)
    for fn in (pfo_loss, pfo_plus_loss, kldo_loss):
        exact_in = policy.clone().requires_grad_()
        exact = fn(exact_in, ref, des, beta=0.7)
        exact.loss.backward()
        denoms = (exact.desirable_log_mean_exp, exact.undesirable_log_mean_exp)
        denoms = tuple(None if math.isnan(d.item()) else d for d in denoms)
        est_in = policy.clone().requires_grad_()
        est = fn(est_in, ref, des, beta=0.7, log_denominators=denoms)
        est.loss.backward()
        assert est.loss.item() == pytest.approx(exact.loss.item(), abs=1e-12)
        assert torch.allclose(est_in.grad, exact_in.grad, atol=1e-12)


def test_log_denominator_scales_gradient_weights():
    """With log D = log E_batch[exp t] + log 2 the log E[exp] gradient halves."""
    t = torch.tensor([0.1, 0.5, -0.2], dtype=torch.float64, requires_grad=True)
    m = torch.tensor([True, True, True])
    exact = masked_log_mean_exp(t, m)
    (g_exact,) = torch.autograd.grad(exact, t)
    (g_half,) = torch.autograd.grad(masked_log_mean_exp(t, m, exact.detach() + math.log(2)), t)
    assert torch.allclose(g_half, g_exact / 2, atol=1e-12)


def test_ema_denominator_bias_corrected_and_resumable():
    from pfo.normalizer import EmaLogDenominator

    ema = EmaLogDenominator(decay=0.9)
    assert ema.update(float("nan")) is None          # nothing seen yet
    assert ema.update(2.0).item() == pytest.approx(2.0)  # bias correction: first value exact
    assert ema.update(2.0).item() == pytest.approx(2.0)  # constant stream stays exact
    v = ema.update(math.log(10.0)).item()             # D = (0.9*0.1*e^2 + 0.1*10 ... ) / (1 - 0.9^3)
    d = (0.9 * 0.9 * 0.1 * math.exp(2) + 0.9 * 0.1 * math.exp(2) + 0.1 * 10.0) / (1 - 0.9 ** 3)
    assert v == pytest.approx(math.log(d), abs=1e-9)
    clone = EmaLogDenominator()
    clone.load_state_dict(ema.state_dict())
    assert clone.update(1.0).item() == pytest.approx(ema.update(1.0).item())
