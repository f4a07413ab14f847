"""Stage 1: supervised fine-tuning with prompt-masked cross-entropy under DeepSpeed ZeRO-3.

    deepspeed --num_gpus N stages/sft.py --config cpu-demo [--key value ...]

Writes <output>/final (a from_pretrained-loadable safetensors folder), <output>/log.jsonl and
DeepSpeed checkpoints; rerunning the same command resumes from the latest checkpoint.
"""
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pfo import distributed as dist  # noqa: E402
from pfo.data import DataError, load_sft_conversations, tokenize_conversations  # noqa: E402
from pfo.logprobs import collate  # noqa: E402
from pfo.models import load_tokenizer  # noqa: E402
from pfo.runtime import fail, say, start_stage  # noqa: E402
from pfo.training import build_engine, run_loop, save_hf_model  # noqa: E402


def main(argv=None):
    cfg = start_stage("sft", argv)
    try:
        tokenizer = load_tokenizer(cfg.tokenizer or cfg.base_model)
        convs, report = load_sft_conversations(cfg.dataset, cfg.dataset_split)
        say(report.summary(f"SFT data {cfg.dataset}"))
        items, tok_report = tokenize_conversations(tokenizer, convs, cfg.max_length, cfg.max_examples, cfg.seed)
        say(tok_report.summary("SFT tokenisation (rows scanned until max_examples were kept)"))
    except (DataError, OSError, ValueError) as e:
        fail(str(e))
    world = dist.world_size()
    if cfg.batch_size % world:
        fail(f"batch_size {cfg.batch_size} is not divisible by {world} ranks")
    steps_per_epoch = len(items) // cfg.batch_size
    if steps_per_epoch == 0:
        fail(f"only {len(items)} SFT examples for a batch of {cfg.batch_size}")
    total = steps_per_epoch * cfg.epochs
    micro = cfg.batch_size // world

    engine = build_engine(cfg, cfg.base_model, micro, total_steps=total)

    def step_fn(step, micro_step):
        epoch, k = divmod(step, steps_per_epoch)
        order = list(range(len(items)))
        random.Random(f"{cfg.seed}:{epoch}").shuffle(order)
        batch_idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size][dist.rank() * micro:(dist.rank() + 1) * micro]
        batch = [items[i] for i in batch_idx]
        targets = sum(t.num_target_tokens for t in batch)
        logps = engine(**collate(batch, tokenizer.pad_token_id, engine.device))
        loss = -logps.sum() / max(targets, 1)   # mean token NLL over this rank's targets
        micro_step(loss)
        return {"loss": loss.item(),
                      "tokens": sum(len(t.input_ids) for t in batch) * world}

    os.makedirs(cfg.output, exist_ok=True)
    say(f"SFT: {len(items)} conversations, {total} steps of {cfg.batch_size} on {world} rank(s)")
    run_loop(engine, total, step_fn, out_dir=cfg.output, save_every=cfg.save_every, desc="sft")
    save_hf_model(engine, tokenizer, os.path.join(cfg.output, "final"))
    say(f"SFT model saved: {os.path.join(cfg.output, 'final')}")


if __name__ == "__main__":
    main()
