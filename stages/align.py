"""Stage 3: binary-feedback alignment (PFO, PFO+, KTO, KLDO) under DeepSpeed ZeRO-3.

    deepspeed --num_gpus N stages/align.py --config cpu-demo --loss pfo [--key value ...]

Reference log-probs come only from the stage-2 cache: no reference model is ever constructed
here. The batch-coupled losses see the whole global batch: every rank gathers the per-example
policy log-probs of all ranks (its own slice keeps the graph) before calling the pure loss.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from pfo import distributed as dist  # noqa: E402
from pfo.cache import CacheError, ReferenceCache, run_fields  # noqa: E402
from pfo.data import DataError, prepare_feedback  # noqa: E402
from pfo.logprobs import collate  # noqa: E402
from pfo.losses import NEEDS_KL_PAIRS, get_loss  # noqa: E402
from pfo.models import load_tokenizer  # noqa: E402
from pfo.runtime import fail, say, start_stage  # noqa: E402
from pfo.sampler import BalancedBatches  # noqa: E402
from pfo.tokenization import tokenizer_fingerprint  # noqa: E402
from pfo.training import build_engine, run_loop, save_hf_model  # noqa: E402


def _nan_to_none(v: float):
    return None if v != v else v


def main(argv=None):
    cfg = start_stage("align", argv)
    needs_kl = cfg.loss in NEEDS_KL_PAIRS
    try:
        tokenizer = load_tokenizer(cfg.tokenizer or cfg.policy_init)
        cache = ReferenceCache(cfg.cache_dir)
        cached_kl = bool(cache.manifest.get("kl_pairs"))
        if needs_kl and not cached_kl:
            raise CacheError(f"--loss {cfg.loss} needs KTO mismatched pairs but the cache was built with "
                             f"kl_pairs=false; rebuild it with stages/precompute_ref.py --kl_pairs true")
        fset = prepare_feedback(cfg, tokenizer, kl_pairs=cached_kl)
        say(fset.report.summary("alignment data"))
        cache.check(run_fields(cfg, tokenizer_fingerprint(tokenizer), fset),
                    rebuild_hint=f"deepspeed stages/precompute_ref.py --config <same config> "
                                 f"--cache_dir {cfg.cache_dir}  (after deleting the old folder)")
        rows = cache.rows("train", fset.ids("train"), fset.token_hashes("train"))
        if needs_kl and rows.kl_token_hash != [t.token_hash() for _, t in fset.kl]:
            raise CacheError("cached KTO mismatched pairs differ from this run's pairs; rebuild the cache")
        sampler = BalancedBatches(rows.desirable.tolist(), cfg.batch_size, cfg.seed)
    except (DataError, CacheError, OSError, ValueError) as e:
        fail(str(e))

    world, rank = dist.world_size(), dist.rank()
    if cfg.batch_size % world:
        fail(f"batch_size {cfg.batch_size} is not divisible by {world} ranks")
    micro = cfg.batch_size // world
    total = cfg.max_steps or sampler.steps_per_epoch * cfg.epochs
    ref_logp = torch.tensor(rows.ref_logp, dtype=torch.float32)
    ref_kl_logp = torch.tensor(rows.ref_kl_logp, dtype=torch.float32)
    desirable = torch.tensor(rows.desirable)
    loss_fn = get_loss(cfg.loss)

    engine = build_engine(cfg, cfg.policy_init, micro, total_steps=total)

    def step_fn(step):
        global_idx = sampler.batch(step)             # same on every rank
        local_idx = BalancedBatches.rank_slice(global_idx, rank, world)
        batch = [fset.train[i][1] for i in local_idx]
        local = engine(**collate(batch, tokenizer.pad_token_id, engine.device))
        # Rank order of the gathered tensor = order of the rank slices = order of global_idx.
        policy = dist.gather_with_grad(local)
        extra = {}
        if needs_kl:
            with torch.no_grad():
                kl_local = engine(**collate([fset.kl[i][1] for i in local_idx], tokenizer.pad_token_id,
                                            engine.device))
            extra = {"policy_kl_logps": dist.gather_with_grad(kl_local), "ref_kl_logps": ref_kl_logp[global_idx]}
        out = loss_fn(policy, ref_logp[global_idx], desirable[global_idx], beta=cfg.beta,
                      lambda_w=cfg.lambda_w, lambda_l=cfg.lambda_l, **extra)
        metrics = {
            "loss": out.loss.item(),
            "reward_desirable": _nan_to_none(out.desirable_reward.item()),
            "reward_undesirable": _nan_to_none(out.undesirable_reward.item()),
            "margin": _nan_to_none((out.desirable_reward - out.undesirable_reward).item()),
            "logp_desirable": _nan_to_none(out.desirable_logp.item()),
            "logp_undesirable": _nan_to_none(out.undesirable_logp.item()),
            "tokens": sum(len(fset.train[i][1].input_ids) for i in global_idx),
        }
        # Each rank back-propagates through its own slice only; DeepSpeed averages gradients over
        # ranks, so scaling by world size makes the update the gradient of the global-batch loss.
        return out.loss * world, metrics

    os.makedirs(cfg.output, exist_ok=True)
    say(f"align ({cfg.loss}, beta={cfg.beta}): {len(fset.train)} examples, {total} steps of {cfg.batch_size} "
        f"on {world} rank(s), reference log-probs from {cfg.cache_dir}")
    run_loop(engine, total, step_fn, out_dir=cfg.output, save_every=cfg.save_every, desc=f"align[{cfg.loss}]",
             show=("loss", "margin"))
    save_hf_model(engine, tokenizer, os.path.join(cfg.output, "final"))
    say(f"aligned model saved: {os.path.join(cfg.output, 'final')}; per-step log: {os.path.join(cfg.output, 'log.jsonl')}")


if __name__ == "__main__":
    main()
