"""One alignment optimizer step on the real SmolLM2-135M: cached reference log-probs (our design)
vs computing the reference forward in-process every step (a second, frozen model in memory).

    python benchmarks/align_step.py [--batch 8] [--steps 3] [--repeats 2]

Both variants: fp32, 2 threads, the fused log-prob path, PFO loss, torch AdamW, real MovieLens
examples (cpu-demo data settings), no DeepSpeed (measures the step itself). Ends with
`ratio <name> <value>` lines.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _measure import peak_rss_mb, run_variants  # noqa: E402


def child(variant: str, batch: int, steps: int) -> None:
    import torch

    from pfo.config import load_stage_config
    from pfo.data import prepare_feedback
    from pfo.logprobs import SequenceLogProbs, collate
    from pfo.losses import pfo_loss
    from pfo.models import load_model, load_tokenizer

    torch.manual_seed(0)
    cfg = load_stage_config("align", ["--config", "cpu-demo"])
    tok = load_tokenizer("smollm2-135m-instruct")
    fset = prepare_feedback(cfg, tok, kl_pairs=False)
    policy = SequenceLogProbs(load_model("smollm2-135m-instruct"))
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    reference = None
    if variant == "inprocess":
        reference = SequenceLogProbs(load_model("smollm2-135m-instruct")).eval().requires_grad_(False)
    batches = [fset.train[i * batch:(i + 1) * batch] for i in range(steps + 1)]
    # what the cache would hold: the reference scores, precomputed outside the timed loop
    cached = {}
    if variant == "cached":
        with torch.no_grad():
            for k, b in enumerate(batches):
                cached[k] = policy(**collate([t for _, t in b], tok.pad_token_id))
    tokens = 0
    t_start = None
    for k, b in enumerate(batches):
        if k == 1:  # step 0 is warm-up
            t_start, tokens = time.perf_counter(), 0
        inputs = collate([t for _, t in b], tok.pad_token_id)
        if reference is not None:
            with torch.no_grad():
                ref = reference(**inputs)
        else:
            ref = cached[k]
        desirable = torch.tensor([ex.desirable for ex, _ in b])
        loss = pfo_loss(policy(**inputs), ref, desirable, beta=0.1).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(inputs["attention_mask"].sum())
    dt = time.perf_counter() - t_start
    print(json.dumps({"tokens_per_s": tokens / dt, "step_s": dt / steps, "peak_rss_mb": peak_rss_mb()}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--variant")
    p.add_argument("--child", action="store_true")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    if a.child:
        return child(a.variant, a.batch, a.steps)
    res = run_variants(__file__, ["cached", "inprocess"], a.repeats, ["--batch", str(a.batch), "--steps", str(a.steps)])
    for v, r in res.items():
        print(f"{v:9s}: {r['tokens_per_s']:.1f} tokens/s, {r['step_s']:.2f} s/step, peak RSS {r['peak_rss_mb']:.0f} MiB")
    print(f"ratio cached_over_inprocess_tokens_per_s {res['cached']['tokens_per_s'] / res['inprocess']['tokens_per_s']:.3f}")
    print(f"ratio cached_over_inprocess_peak_rss {res['cached']['peak_rss_mb'] / res['inprocess']['peak_rss_mb']:.3f}")


if __name__ == "__main__":
    main()
