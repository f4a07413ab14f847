"""Stage 2: score every alignment example (and its KTO mismatched pair) with the frozen reference
model, data-parallel across ranks, into a sharded Arrow cache (see pfo/cache.py).

    deepspeed --num_gpus N stages/precompute_ref.py --config cpu-demo [--key value ...]

Rerunning after a crash reuses every complete shard and recomputes the rest.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import pfo  # noqa: E402
from pfo import cache as C, distributed as dist  # noqa: E402
from pfo.data import DataError, prepare_feedback  # noqa: E402
from pfo.logprobs import collate  # noqa: E402
from pfo.models import load_tokenizer, model_fingerprint  # noqa: E402
from pfo.runtime import fail, say, start_stage  # noqa: E402
from pfo.tokenization import tokenizer_fingerprint  # noqa: E402
from pfo.training import build_engine  # noqa: E402


def plan(cfg, fset):
    """All shards of both splits: (split, k, lo, hi)."""
    out = []
    for split in ("train", "eval"):
        n = len(getattr(fset, split))
        out += [(split, k, lo, hi) for k, (lo, hi) in enumerate(C.shard_ranges(n, cfg.shard_size))]
    return out


def shard_columns(fset, split, lo, hi, logps, kl_logps):
    items = getattr(fset, split)[lo:hi]
    kl = fset.kl[lo:hi] if (split == "train" and fset.kl is not None) else None
    return {
        "example_id": [ex.id for ex, _ in items],
        "token_hash": [tok.token_hash() for _, tok in items],
        "desirable": [ex.desirable for ex, _ in items],
        "ref_logp": logps,
        "kl_partner_id": [p for p, _ in kl] if kl else [None] * len(items),
        "kl_token_hash": [t.token_hash() for _, t in kl] if kl else [None] * len(items),
        "ref_kl_logp": kl_logps if kl else [None] * len(items),
    }


def main(argv=None):
    cfg = start_stage("precompute", argv)
    try:
        tokenizer = load_tokenizer(cfg.tokenizer or cfg.ref_model)
        fset = prepare_feedback(cfg, tokenizer, kl_pairs=cfg.kl_pairs)
    except (DataError, OSError, ValueError) as e:
        fail(str(e))
    say(fset.report.summary("alignment data"))
    os.makedirs(cfg.cache_dir, exist_ok=True)
    fields = C.run_fields(cfg, tokenizer_fingerprint(tokenizer), fset)
    fields.update(model=model_fingerprint(cfg.ref_model), model_path=os.path.abspath(cfg.ref_model),
                  format_version=C.FORMAT_VERSION, pfo_version=pfo.__version__,
                  batch_size=cfg.batch_size, shard_size=cfg.shard_size,
                  logprob_tolerance="float32 sums; batch composition changes values by ~1e-5 relative")
    manifest_path = os.path.join(cfg.cache_dir, "manifest.json")
    pending_path = os.path.join(cfg.cache_dir, "pending.json")
    for path, what in ((manifest_path, "finished"), (pending_path, "unfinished")):
        found = C.read_json(path)
        if found is not None:
            diffs = C.mismatches(found, fields, C.CHECKED_FIELDS + ("model", "shard_size"))
            if diffs:
                fail(f"{cfg.cache_dir} holds a {what} cache for other settings:\n  " + "\n  ".join(diffs)
                     + "\nUse another --cache_dir or delete that folder.")
    if os.path.exists(manifest_path):
        say(f"reference cache is complete and up to date: {cfg.cache_dir}")
        return
    dist.barrier()
    if dist.is_main():
        C.write_json(pending_path, fields)

    # Complete shards from an interrupted run are kept (atomic rename + verified checksum sidecar).
    todo = [s for s in plan(cfg, fset) if C.complete_shard(os.path.join(cfg.cache_dir, C.shard_name(s[0], s[1]))) is None]
    mine = todo[dist.rank()::dist.world_size()]
    say(f"{len(todo)} shard(s) to compute ({len(plan(cfg, fset)) - len(todo)} reused)")

    engine = build_engine(cfg, cfg.ref_model, cfg.batch_size, train=False)

    # Work list of batches; under ZeRO-3 every forward is collective, so all ranks run the same
    # number of forwards (ranks out of work repeat a dummy batch and discard it).
    batches = []
    for split, k, lo, hi in mine:
        items = [tok for _, tok in getattr(fset, split)[lo:hi]]
        if split == "train" and fset.kl is not None:
            items += [tok for _, tok in fset.kl[lo:hi]]
        for b in range(0, len(items), cfg.batch_size):
            batches.append(((split, k, lo, hi), items[b:b + cfg.batch_size], b + cfg.batch_size >= len(items)))
    n_steps = dist.all_reduce_max(len(batches))
    dummy = [getattr(fset, "train")[0][1]]
    bar = tqdm(total=n_steps, desc=f"reference log-probs (rank 0 of {dist.world_size()})",
               disable=not dist.is_main(), dynamic_ncols=True)
    results = []
    with torch.inference_mode():
        for i in range(n_steps):
            shard, items, last = batches[i] if i < len(batches) else (None, dummy, False)
            logps = engine(**collate(items, tokenizer.pad_token_id, dist.device())).float().tolist()
            bar.update(1)
            if shard is None:
                continue
            results.extend(logps)
            if last:
                split, k, lo, hi = shard
                n = hi - lo
                kl_logps = results[n:] if split == "train" and fset.kl is not None else None
                C.write_shard(os.path.join(cfg.cache_dir, C.shard_name(split, k)),
                              shard_columns(fset, split, lo, hi, results[:n], kl_logps))
                results = []
    bar.close()
    dist.barrier()
    if dist.is_main():
        splits = {}
        for split in ("train", "eval"):
            shards = [{"file": C.shard_name(split, k), "rows": hi - lo,
                       "sha256": C.complete_shard(os.path.join(cfg.cache_dir, C.shard_name(split, k)))}
                      for k, (lo, hi) in enumerate(C.shard_ranges(len(getattr(fset, split)), cfg.shard_size))]
            missing = [s["file"] for s in shards if s["sha256"] is None]
            if missing:
                fail(f"shards missing or damaged after computing: {missing}; rerun to recompute them")
            splits[split] = {"num_rows": len(getattr(fset, split)), "shards": shards}
        C.write_json(manifest_path, {**fields, "splits": splits})
        os.remove(pending_path)
        say(f"reference cache written: {cfg.cache_dir} "
            f"({len(fset.train)} train, {len(fset.eval)} eval rows, KL pairs {'on' if fset.kl else 'off'})")
    dist.barrier()


if __name__ == "__main__":
    main()
