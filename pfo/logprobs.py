"""Sequence log-probs: sum over completion tokens of log pi(y_t | x, y_<t).

``SequenceLogProbs`` wraps a causal LM so that the whole computation (backbone, LM head,
log-softmax) runs inside one module forward. Under DeepSpeed ZeRO-3 that matters: the engine's
forward is what gathers partitioned parameters and registers the gradient-reduction hooks, so
the wrapper (not the bare LM) is what we hand to deepspeed.initialize.

Two head paths, same result:
- ``plain``: the LM head applied at the target positions, full log-softmax ([N, V] logits, N = targets).
- ``fused`` (default): pfo.fused, chunked with recomputation in backward; never more than one chunk
  of logits. The head is still *called as a module* (FusedLMHead), so ZeRO-3's module hooks gather
  its partitioned weight (tied embeddings included) for forward and again for backward.
``reference_sequence_logprobs`` is the naive full-[B, T, V] implementation that tests compare against.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .fused import fused_token_logprobs
from .tokenization import Tokenized


def select_targets(hidden: Tensor, input_ids: Tensor, loss_mask: Tensor):
    """hidden[:, t] predicts input_ids[:, t + 1]; keep positions whose target has loss_mask 1.
    Returns (hidden [N, H], targets [N], batch row of each target [N])."""
    target_mask = loss_mask[:, 1:].bool()
    rows, cols = target_mask.nonzero(as_tuple=True)
    return hidden[:, :-1][rows, cols], input_ids[:, 1:][rows, cols], rows


def reference_sequence_logprobs(hidden: Tensor, weight: Tensor, bias: Optional[Tensor], input_ids: Tensor,
                                loss_mask: Tensor) -> Tensor:
    """Naive reference: logits for every position [B, T, V], log-softmax, gather, masked sum."""
    logits = hidden.float() @ weight.float().t()
    if bias is not None:
        logits = logits + bias.float()
    logps = logits[:, :-1].log_softmax(-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return (logps * loss_mask[:, 1:].float()).sum(-1)


class FusedLMHead(nn.Linear):
    """nn.Linear that, called with ``targets=``, returns log p(target) per row via the fused kernel.
    Without targets it is a plain Linear (generation keeps working)."""
    chunk_tokens: Optional[int] = None

    def forward(self, input: Tensor, targets: Optional[Tensor] = None) -> Tensor:
        if targets is None:
            return super().forward(input)
        return fused_token_logprobs(input, self.weight, targets, self.bias, self.chunk_tokens)


def fuse_lm_head(model: nn.Module, chunk_tokens: Optional[int] = None) -> None:
    head = model.get_output_embeddings()
    if type(head) is not nn.Linear and not isinstance(head, FusedLMHead):
        raise TypeError(f"fused log-probs need an nn.Linear LM head, got {type(head).__name__}; use logprobs=plain")
    head.__class__ = FusedLMHead  # same parameters and hooks, extra call mode
    head.chunk_tokens = chunk_tokens


class SequenceLogProbs(nn.Module):
    """forward(input_ids, attention_mask, loss_mask) -> [B] sequence log-probs (float32)."""

    def __init__(self, model: nn.Module, fused: bool = True, chunk_tokens: Optional[int] = None):
        super().__init__()
        for attr in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
            if getattr(model.config, attr, None) not in (None, 1, 1.0):
                # the head paths here compute plain softmax(h W^T + b); these models transform logits
                raise NotImplementedError(f"{type(model).__name__} uses {attr}={getattr(model.config, attr)}, "
                                          "which the log-prob paths do not implement yet")
        self.model = model
        self.fused = fused
        if fused:
            fuse_lm_head(model, chunk_tokens)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor) -> Tensor:
        backbone = self.model.get_decoder()
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        h, targets, rows = select_targets(hidden, input_ids, loss_mask)
        head = self.model.get_output_embeddings()
        if self.fused:
            token_logps = head(h, targets=targets)
        else:
            token_logps = head(h).float().log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
        out = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=hidden.device)
        return out.index_add(0, rows, token_logps)


def collate(items: Sequence[Tokenized], pad_id: int, device="cpu") -> dict[str, Tensor]:
    """Right-pad to the longest sequence; masks come from lengths, never from the pad id."""
    width = max(len(t.input_ids) for t in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(items), width), dtype=torch.long)
    loss = torch.zeros((len(items), width), dtype=torch.long)
    for i, t in enumerate(items):
        n = len(t.input_ids)
        ids[i, :n] = torch.tensor(t.input_ids)
        attn[i, :n] = 1
        loss[i, :n] = torch.tensor(t.loss_mask)
    return {"input_ids": ids.to(device), "attention_mask": attn.to(device), "loss_mask": loss.to(device)}


@torch.inference_mode()
def score(module: nn.Module, items: Sequence[Tokenized], pad_id: int, batch_size: int, device="cpu",
          progress=None) -> list[float]:
    """Sequence log-probs of items, batch by batch, in order."""
    out: list[float] = []
    for start in range(0, len(items), batch_size):
        batch = collate(items[start:start + batch_size], pad_id, device)
        out.extend(module(**batch).tolist())
        if progress is not None:
            progress.update(len(items[start:start + batch_size]))
    return out
