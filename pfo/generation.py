"""Batched chat generation for evaluation (recommendations, MT-Bench, AlpacaEval).

Prompts are rendered with the model's chat template and left-padded. Decoding is deterministic
given a seed: each batch reseeds the generator from (seed, batch number), and batches are formed
over the full, fixed prompt list, so a resumed run regenerates exactly what an uninterrupted run
would have produced for the same batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .runtime import fault_point
from .tokenization import Message


@dataclass(frozen=True)
class Decoding:
    mode: str = "greedy"              # greedy | beam | sample
    num_return_sequences: int = 1
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def generate_kwargs(self) -> dict:
        n = self.num_return_sequences
        if self.mode == "greedy":
            if n != 1:
                raise ValueError("greedy decoding returns one sequence; use beam or sample for several")
            return {"do_sample": False, "num_beams": 1}
        if self.mode == "beam":
            return {"do_sample": False, "num_beams": max(n, 1), "num_return_sequences": n, "early_stopping": True}
        if self.mode == "sample":
            return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p,
                    "num_return_sequences": n}
        raise ValueError(f"decoding must be greedy, beam or sample, got {self.mode!r}")


def render_prompts(tokenizer, conversations: Sequence[Sequence[Message]]) -> list[str]:
    return [tokenizer.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True) for c in conversations]


def stop_token_ids(model, tokenizer) -> list[int]:
    """Tokens that end an answer: the tokenizer's and the generation config's EOS, and the token
    the chat template puts after an assistant turn (``<|im_end|>``, Llama-3's ``<|eot_id|>``...),
    found by rendering a probe turn, so models whose turns end with their own marker stop there."""
    ids = {tokenizer.eos_token_id}
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    probe = "PFO_END_OF_TURN_PROBE"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}, {"role": "assistant", "content": probe}],
                                         tokenize=False)
    tail = tokenizer(text.split(probe, 1)[-1], add_special_tokens=False)["input_ids"]
    if tail and tail[0] in set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder):
        ids.add(tail[0])
    return sorted(t for t in ids if isinstance(t, int) and t >= 0)


@torch.inference_mode()
def generate_batch(model, tokenizer, conversations: Sequence[Sequence[Message]], decoding: Decoding,
                   batch_index: int = 0) -> list[list[str]]:
    """One batch -> for each conversation, num_return_sequences decoded completions."""
    texts = render_prompts(tokenizer, conversations)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right edge of every row
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    enc = {k: v.to(model.device) for k, v in enc.items()}
    torch.manual_seed(decoding.seed * 1_000_003 + batch_index)
    out = model.generate(**enc, max_new_tokens=decoding.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=stop_token_ids(model, tokenizer) or None, **decoding.generate_kwargs())
    decoded = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    n = decoding.num_return_sequences
    return [[d.strip() for d in decoded[i * n:(i + 1) * n]] for i in range(len(conversations))]


def generate_resumable(model, tokenizer, keys: Sequence, conversations: Sequence[Sequence[Message]],
                       decoding: Decoding, batch_size: int, is_done: Callable[[object], bool],
                       on_batch: Callable[[list, list[list[str]]], None], progress=None) -> None:
    """Generate for every key not yet done, in fixed batches; on_batch(keys, outputs) persists
    each batch before the next starts."""
    for b, start in enumerate(range(0, len(keys), batch_size)):
        batch_keys = list(keys[start:start + batch_size])
        todo = [i for i, k in enumerate(batch_keys) if not is_done(k)]
        if todo:
            outputs = generate_batch(model, tokenizer, conversations[start:start + batch_size], decoding, b)
            on_batch([batch_keys[i] for i in todo], [outputs[i] for i in todo])
            fault_point("generate_batch", b + 1)
        if progress is not None:
            progress.update(len(batch_keys))
