"""What reading the reference cache adds to an alignment step (cpu-demo preset).

    ./run_all.sh                          # once: the cpu-demo reference cache
    python benchmarks/cache_read.py [--cache runs/cpu-demo/ref_cache] [--repeats 5]

Measured in one process, side by side: (a) the whole cache read as stage 3 does it at start
(manifest, sha256 of every shard, memory-map, id index, lookup of every training row with token
hash checks), (b) one alignment optimizer step on SmolLM2 (fp32, fused log-probs, PFO, AdamW, batch 8,
median of 3 after a warm-up). The ratio charges the *whole* read to a single step (conservative:
stage 3 reads once per run, not once per step). Ends with `ratio cache_read_over_step <value>`.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cache", default="runs/cpu-demo/ref_cache")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()

    import torch

    from pfo.cache import ReferenceCache
    from pfo.config import load_stage_config
    from pfo.data import prepare_feedback
    from pfo.logprobs import SequenceLogProbs, collate
    from pfo.losses import pfo_loss
    from pfo.models import load_model, load_tokenizer

    cfg = load_stage_config("align", ["--config", "cpu-demo", "--cache_dir", a.cache])
    tok = load_tokenizer(cfg.policy_init)
    fset = prepare_feedback(cfg, tok, kl_pairs=True)
    ids, hashes = fset.ids("train"), fset.token_hashes("train")

    reads = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        rows = ReferenceCache(cfg.cache_dir).rows("train", ids, hashes)
        ref = torch.tensor(rows.ref_logp, dtype=torch.float32)
        reads.append(time.perf_counter() - t0)

    model = SequenceLogProbs(load_model(cfg.policy_init))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    steps = []
    for k in range(4):
        idx = list(range(k * 8, (k + 1) * 8))
        t0 = time.perf_counter()
        batch = collate([fset.train[i][1] for i in idx], tok.pad_token_id)
        loss = pfo_loss(model(**batch), ref[idx], torch.tensor(rows.desirable[idx]), beta=0.1).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps.append(time.perf_counter() - t0)
    read, step = statistics.median(reads), statistics.median(steps[1:])
    print(f"cache read (open + verify {len(rows.ref_logp)} train rows): median {read * 1e3:.1f} ms over {a.repeats}")
    print(f"alignment step (batch 8): median {step:.2f} s over 3")
    print(f"ratio cache_read_over_step {read / step:.5f}")


if __name__ == "__main__":
    main()
