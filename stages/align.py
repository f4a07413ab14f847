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
from pfo.normalizer import EmaLogDenominator  # noqa: E402
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

    world, rank, accum = dist.world_size(), dist.rank(), cfg.grad_accum
    if cfg.batch_size % (world * accum):
        fail(f"batch_size {cfg.batch_size} is not divisible by {world} ranks x {accum} micro-batches")
    local_n = cfg.batch_size // world
    micro = local_n // accum
    if cfg.normalizer != "global" and micro % 2:
        # per-micro-batch means only average to the global ones when every micro-batch holds the
        # same number of each class (the sampler interleaves classes, so an even size suffices)
        fail(f"normalizer={cfg.normalizer} needs an even micro-batch, got {micro} "
             f"(batch_size {cfg.batch_size} / {world} ranks / {accum} micro-batches)")
    total = cfg.max_steps or sampler.steps_per_epoch * cfg.epochs
    loss_fn = get_loss(cfg.loss)
    engine = build_engine(cfg, cfg.policy_init, micro, total_steps=total, grad_accum=accum)
    ref_logp = torch.tensor(rows.ref_logp, dtype=torch.float32, device=engine.device)
    ref_kl_logp = torch.tensor(rows.ref_kl_logp, dtype=torch.float32, device=engine.device)
    desirable = torch.tensor(rows.desirable, device=engine.device)

    def logps(idx, items):
        return engine(**collate([items[i][1] for i in idx], tokenizer.pad_token_id, engine.device))

    ema = {c: EmaLogDenominator(cfg.ema_decay) for c in ("desirable", "undesirable")}

    def loss_on(policy, idx, kl_policy, log_denominators=None):
        kl = {"policy_kl_logps": kl_policy, "ref_kl_logps": ref_kl_logp[idx]} if needs_kl else {}
        return loss_fn(policy, ref_logp[idx], desirable[idx], beta=cfg.beta, lambda_w=cfg.lambda_w,
                       lambda_l=cfg.lambda_l, log_denominators=log_denominators, **kl)

    def step_fn(step, micro_step):
        global_idx = sampler.batch(step)                      # same on every rank
        local_idx = BalancedBatches.rank_slice(global_idx, rank, world)
        micro_idx = [local_idx[k * micro:(k + 1) * micro] for k in range(accum)]
        # Rank-major gathering of contiguous rank slices restores global_idx order.
        kl_global = None
        if needs_kl:  # KTO's z0 from mismatched pairs: no gradient by definition
            with torch.no_grad():
                kl_local = torch.cat([logps(m, fset.kl) for m in micro_idx])
            kl_global = dist.gather(kl_local)

        if cfg.normalizer == "ema":
            # Per micro-batch, with the batch means inside log E[exp(t)] replaced by running
            # estimates (updated with all ranks' values of this micro-batch, so every rank holds
            # the same state). Mean terms average correctly through DeepSpeed's reduction.
            losses, seen = [], []
            for k, m in enumerate(micro_idx):
                kl_m = kl_local[k * micro:(k + 1) * micro] if needs_kl else None
                policy = logps(m, fset.train)
                all_m = [i for r in range(world)
                         for i in BalancedBatches.rank_slice(global_idx, r, world)[k * micro:(k + 1) * micro]]
                batch = loss_on(dist.gather(policy), all_m, dist.gather(kl_m) if needs_kl else None)
                denoms = (ema["desirable"].update(batch.desirable_log_mean_exp.item()),
                          ema["undesirable"].update(batch.undesirable_log_mean_exp.item()))
                loss = loss_on(policy, m, kl_m, log_denominators=denoms).loss
                micro_step(loss)
                losses.append(loss.detach())
                seen.append(policy.detach())
            out = loss_on(torch.cat(seen), local_idx, kl_local if needs_kl else None)
            out = out._replace(loss=torch.stack(losses).mean())
        elif cfg.normalizer == "micro":
            # Each micro-batch normalised on its own (what public trainers do); DeepSpeed averages.
            losses, seen = [], []
            for k, m in enumerate(micro_idx):
                kl_m = kl_local[k * micro:(k + 1) * micro] if needs_kl else None
                policy = logps(m, fset.train)
                loss = loss_on(policy, m, kl_m).loss
                micro_step(loss)
                losses.append(loss.detach())
                seen.append(policy.detach())
            # log this rank's class statistics and the mean of the losses actually optimised
            out = loss_on(torch.cat(seen), local_idx, kl_local if needs_kl else None)
            out = out._replace(loss=torch.stack(losses).mean())
        elif accum == 1:
            # Exact global batch: gather all ranks' log-probs, this rank's slice keeps its graph.
            # Each rank back-propagates through its own slice only and DeepSpeed averages over
            # ranks, so scaling by world size makes the update the gradient of the global loss.
            out = loss_on(dist.gather_with_grad(logps(local_idx, fset.train)), global_idx, kl_global)
            micro_step(out.loss * world)
        else:
            # Exact global batch across micro-batches: score the step's micro-batches without
            # gradient, take g = dL/dlogp of the global loss at those values, then back-propagate
            # sum_i g_i * logp_i(theta) per micro-batch. By the chain rule the accumulated gradient
            # is exactly that of the global loss; the price is one extra forward per micro-batch.
            with torch.no_grad():
                frozen = dist.gather(torch.cat([logps(m, fset.train) for m in micro_idx]))
            frozen.requires_grad_()
            out = loss_on(frozen, global_idx, kl_global)
            (g,) = torch.autograd.grad(out.loss, frozen)
            for k, m in enumerate(micro_idx):
                lo = rank * local_n + k * micro
                micro_step((g[lo:lo + micro] * logps(m, fset.train)).sum() * world * accum)
        return {
            "loss": out.loss.item(),
            "reward_desirable": _nan_to_none(out.desirable_reward.item()),
            "reward_undesirable": _nan_to_none(out.undesirable_reward.item()),
            "margin": _nan_to_none((out.desirable_reward - out.undesirable_reward).item()),
            "logp_desirable": _nan_to_none(out.desirable_logp.item()),
            "logp_undesirable": _nan_to_none(out.undesirable_logp.item()),
            "tokens": sum(len(fset.train[i][1].input_ids) for i in global_idx),
        }

    os.makedirs(cfg.output, exist_ok=True)
    say(f"align ({cfg.loss}, beta={cfg.beta}): {len(fset.train)} examples, {total} steps of {cfg.batch_size} "
        f"on {world} rank(s), reference log-probs from {cfg.cache_dir}")
    run_loop(engine, total, step_fn, out_dir=cfg.output, save_every=cfg.save_every, desc=f"align[{cfg.loss}]",
             show=("loss", "margin"), extra_state={f"ema_{c}": e for c, e in ema.items()})
    save_hf_model(engine, tokenizer, os.path.join(cfg.output, "final"))
    say(f"aligned model saved: {os.path.join(cfg.output, 'final')}; per-step log: {os.path.join(cfg.output, 'log.jsonl')}")


if __name__ == "__main__":
    main()
