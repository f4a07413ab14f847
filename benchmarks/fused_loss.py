"""Fused vs plain sequence log-probs + PFO loss, forward and backward, at SmolLM2 dimensions.

    python benchmarks/fused_loss.py [--T 512 2048] [--repeats 3]

plain: logits for every position [B, T, V], log-softmax, gather (what public trainers do).
fused: pfo.fused (chunked, recomputed in backward). Every position is a target (worst case for
the fused path). Peak memory is the child process's peak RSS above its RSS after setup.
Ends with one line per ratio: `ratio <name> <value>`.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _measure import current_rss_mb, peak_rss_mb, run_variants  # noqa: E402


def child(variant: str, B: int, T: int, H: int, V: int) -> None:
    import torch

    from pfo.fused import fused_token_logprobs
    from pfo.logprobs import reference_sequence_logprobs, select_targets
    from pfo.losses import pfo_loss

    torch.manual_seed(0)
    hidden = torch.randn(B, T, H, requires_grad=True)
    weight = (torch.randn(V, H) / H ** 0.5).requires_grad_()
    ids = torch.randint(0, V, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    desirable = torch.tensor([i % 2 == 0 for i in range(B)])
    ref = torch.full((B,), -float(T) * 10)

    def step():
        if variant == "plain":
            seq = reference_sequence_logprobs(hidden, weight, None, ids, mask)
        else:
            h, targets, rows = select_targets(hidden, ids, mask)
            seq = torch.zeros(B).index_add(0, rows, fused_token_logprobs(h, weight, targets))
        loss = pfo_loss(seq, ref, desirable, beta=0.1).loss
        loss.backward()
        hidden.grad = weight.grad = None

    step()  # warm-up (allocator, kernels)
    base = current_rss_mb()
    t0 = time.perf_counter()
    step()
    dt = time.perf_counter() - t0
    print(json.dumps({"time_s": dt, "peak_rss_mb": peak_rss_mb() - base}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--variant")
    p.add_argument("--child", action="store_true")
    p.add_argument("--B", type=int, default=4)
    p.add_argument("--T", type=int, nargs="+", default=[512, 2048])
    p.add_argument("--H", type=int, default=576)
    p.add_argument("--V", type=int, default=49152)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    if a.child:
        return child(a.variant, a.B, a.T[0], a.H, a.V)
    ratios = {}
    for T in a.T:
        res = run_variants(__file__, ["plain", "fused"], a.repeats,
                           ["--B", str(a.B), "--T", str(T), "--H", str(a.H), "--V", str(a.V)])
        for v, r in res.items():
            print(f"B={a.B} T={T} H={a.H} V={a.V} fp32 {v:5s}: {r['time_s']:.3f} s fwd+bwd, "
                  f"peak +{r['peak_rss_mb']:.0f} MiB")
        ratios[f"fused_over_plain_peak_mem_T{T}"] = res["fused"]["peak_rss_mb"] / res["plain"]["peak_rss_mb"]
        ratios[f"fused_over_plain_time_T{T}"] = res["fused"]["time_s"] / res["plain"]["time_s"]
    for k, v in ratios.items():
        print(f"ratio {k} {v:.3f}")


if __name__ == "__main__":
    main()
