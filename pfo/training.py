"""What the training stages share: DeepSpeed engine construction, the step loop with progress,
JSONL logging, checkpoint/resume, and saving a Hugging Face model folder."""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import time
from typing import Callable

import torch
from tqdm.auto import tqdm

from . import distributed as dist
from .fileio import atomic_write_text
from .logprobs import SequenceLogProbs
from .models import load_model
from .runtime import fault_point


def load_ds_config(path: str, micro_batch: int, dtype: str, grad_accum: int = 1) -> dict:
    """Read a ds_configs/*.json and fill in what the stage config decides (batch sizes, bf16).
    A relative path that does not exist from the working directory is taken from the repo root."""
    if not os.path.exists(path) and not os.path.isabs(path):
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), path)
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg["train_micro_batch_size_per_gpu"] = micro_batch
    cfg["gradient_accumulation_steps"] = grad_accum
    cfg["train_batch_size"] = micro_batch * grad_accum * dist.world_size()
    cfg["bf16"] = {"enabled": dtype == "bfloat16"}
    return cfg


@contextlib.contextmanager
def zero3_load_context(ds_config: dict):
    """While active, from_pretrained builds ZeRO-3 models already partitioned (deepspeed.zero.Init),
    so no rank ever holds the full model. A no-op for other ZeRO stages."""
    if ds_config.get("zero_optimization", {}).get("stage") != 3:
        yield
        return
    from transformers.integrations import HfDeepSpeedConfig

    keep_alive = HfDeepSpeedConfig(ds_config)  # transformers consults it through a weakref
    try:
        yield
    finally:
        del keep_alive


def build_engine(cfg, model_path: str, micro_batch: int, total_steps: int = 0, train: bool = True,
                 grad_accum: int = 1):
    """Load the model (already partitioned under ZeRO-3), wrap it in SequenceLogProbs and
    deepspeed.initialize it; for training with a client AdamW and a cosine schedule with linear
    warmup (paper B.1). A client torch AdamW avoids JIT-building DeepSpeed's fused optimizer ops
    (minutes on CPU). cfg is a stage config (ds_config, dtype, attn_implementation; lr,
    weight_decay and warmup_ratio when training)."""
    import deepspeed
    from transformers import get_cosine_schedule_with_warmup

    ds_config = load_ds_config(cfg.ds_config, micro_batch=micro_batch, dtype=cfg.dtype, grad_accum=grad_accum)
    with zero3_load_context(ds_config):
        model = load_model(model_path, cfg.dtype, cfg.attn_implementation)
    module = SequenceLogProbs(model, fused=cfg.logprobs == "fused", chunk_tokens=cfg.chunk_tokens or None)
    if not train:
        engine, *_ = deepspeed.initialize(model=module, config=ds_config)
        engine.eval()
        return engine
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    return engine


def save_hf_model(engine, tokenizer, dest: str) -> None:
    """Write a from_pretrained-loadable safetensors folder atomically (temp folder + rename).

    Under ZeRO-3 the full state dict is gathered onto rank 0 only (collective: all ranks call)."""
    if engine.zero_optimization_stage() == 3:
        state = engine._zero3_consolidated_16bit_state_dict()
    else:
        state = engine.module.state_dict() if dist.is_main() else None
    if dist.is_main():
        state = {k.removeprefix("model."): v for k, v in state.items()}  # strip the SequenceLogProbs wrapper
        tmp = dest.rstrip("/") + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        engine.module.model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    dist.barrier()


def _step_of(line: str):
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return None


class JsonlLog:
    """Per-step records, one JSON object per line (rank 0 writes)."""

    def __init__(self, path: str, resume_step: int):
        self.path = path
        if dist.is_main():
            # On resume, drop records past the checkpoint: those steps are about to be redone
            # (and so is a line torn by a kill mid-write).
            kept = []
            if resume_step and os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    kept = [line for line in f if (step := _step_of(line)) is not None and step <= resume_step]
            atomic_write_text(path, "".join(kept))

    def write(self, record: dict) -> None:
        if dist.is_main():
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


def partitioning(engine) -> dict:
    """How ZeRO-3 split the parameters: under stage 3 each rank holds ds_tensor, a 1/world slice."""
    params = list(engine.module.parameters())
    split = [p for p in params if hasattr(p, "ds_tensor") and p.ds_tensor.numel() < p.ds_numel]
    return {"world_size": dist.world_size(), "zero_stage": engine.zero_optimization_stage(),
            "num_params": len(params), "num_partitioned": len(split),
            "numel_total": sum(getattr(p, "ds_numel", p.numel()) for p in params),
            "numel_this_rank": sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params)}


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else v


def run_loop(engine, total_steps: int, step_fn: Callable, *, out_dir: str,
             save_every: int = 0, desc: str = "train", show: tuple = ("loss",), extra_state=None) -> None:
    """Optimizer steps [resume_step, total_steps).

    step_fn(step, micro_step) -> metrics runs one optimizer step: it calls micro_step(loss) once
    per micro-batch (engine.backward + engine.step; DeepSpeed applies the optimizer at the
    gradient-accumulation boundary, after dividing each loss by the number of micro-batches).

    metrics may hold "tokens" (tokens processed this step, all ranks) for a tokens/s figure.
    Checkpoints go to out_dir/checkpoints every save_every steps and at the end; rerunning the
    same command resumes from the latest one (the batch for a step is a function of the step
    index, so the data order is restored with it). extra_state: {name: object with
    state_dict/load_state_dict} saved in and restored from the checkpoints.
    """
    extra_state = extra_state or {}
    # SLURM sends SIGTERM before the time limit: finish the step, checkpoint, exit non-zero so the
    # job is marked for requeue; rerunning the command resumes. Ranks agree through an all-reduce.
    stop = {"asked": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("asked", True))
    ckpt_dir = os.path.join(out_dir, "checkpoints")
    start = 0
    if os.path.exists(os.path.join(ckpt_dir, "latest")):
        path, client = engine.load_checkpoint(ckpt_dir)
        if path is not None:
            start = int(client["step"])
            for name, obj in extra_state.items():
                obj.load_state_dict(client[name])
            torch.set_rng_state(client["rng"]["torch"])
            random.setstate(client["rng"]["python"])
            if dist.is_main():
                print(f"[pfo] resumed {desc} from {path} at step {start}/{total_steps}", flush=True)
    log = JsonlLog(os.path.join(out_dir, "log.jsonl"), start)
    if dist.is_main():
        atomic_write_text(os.path.join(out_dir, "run_info.json"), json.dumps(partitioning(engine), indent=1))
    bar = tqdm(total=total_steps, initial=start, desc=desc, disable=not dist.is_main(), dynamic_ncols=True)
    t_begin = time.time()
    for step in range(start, total_steps):
        t0 = time.time()
        fault_point("step", step + 1)
        lr = engine.get_lr()[0]  # the rate this step uses (the scheduler advances in engine.step)

        def micro_step(loss):
            engine.backward(loss)
            engine.step()
        metrics = step_fn(step, micro_step)
        dt = time.time() - t0
        grad_norm = engine.get_global_grad_norm()  # before clipping
        if grad_norm is not None:
            metrics["grad_norm"] = float(grad_norm)
        tokens = metrics.pop("tokens", None)
        record = {"step": step + 1, **metrics, "lr": lr, "step_time_s": round(dt, 4),
                  "elapsed_s": round(time.time() - t_begin, 2)}
        if tokens is not None:
            record["tokens_per_s"] = tokens / dt
        log.write(record)
        bar.set_postfix({k: _fmt(record[k]) for k in show if k in record})
        bar.update(1)
        stopping = dist.all_reduce_max(int(stop["asked"])) > 0
        if (save_every and (step + 1) % save_every == 0) or step + 1 == total_steps or stopping:
            client = {"step": step + 1, **{name: obj.state_dict() for name, obj in extra_state.items()},
                      "rng": {"torch": torch.get_rng_state(), "python": random.getstate()}}
            engine.save_checkpoint(ckpt_dir, tag=f"step{step + 1}", client_state=client)
            fault_point("after_checkpoint", step + 1)
        if stopping and step + 1 < total_steps:
            bar.close()
            if dist.is_main():
                print(f"[pfo] SIGTERM: checkpointed {desc} at step {step + 1}/{total_steps}; "
                      f"rerun the same command to resume", flush=True)
            raise SystemExit(143)
    bar.close()
    signal.signal(signal.SIGTERM, previous)
