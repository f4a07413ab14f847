"""Sequence log-probs: sum over completion tokens of log pi(y_t | x, y_<t).

``SequenceLogProbs`` wraps a causal LM so that the whole computation (backbone, LM head,
log-softmax) runs inside one module forward. Under DeepSpeed ZeRO-3 that matters: the engine's
forward is what gathers partitioned parameters and registers the gradient-reduction hooks, so
the wrapper (not the bare LM) is what we hand to deepspeed.initialize. The head is applied only
at target positions: log-probs are needed only where the loss reads them.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .tokenization import Tokenized


def plain_sequence_logprobs(hidden: Tensor, lm_head: nn.Module, input_ids: Tensor, loss_mask: Tensor) -> Tensor:
    """Reference implementation: full log-softmax over the vocabulary at every target position.

    hidden[:, t] predicts input_ids[:, t + 1]; a token is a target where loss_mask is 1.
    Returns [B] float32 sums (0 for a sequence without targets).
    """
    target_mask = loss_mask[:, 1:].bool()
    rows, cols = target_mask.nonzero(as_tuple=True)
    h = hidden[:, :-1][rows, cols]                        # [N, H], N = number of targets
    logits = lm_head(h).float()                           # [N, V]
    targets = input_ids[:, 1:][rows, cols]
    token_logps = logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
    out = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=hidden.device)
    return out.index_add(0, rows, token_logps)


class SequenceLogProbs(nn.Module):
    """forward(input_ids, attention_mask, loss_mask) -> [B] sequence log-probs (float32)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor) -> Tensor:
        backbone = self.model.get_decoder()
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return plain_sequence_logprobs(hidden, self.model.get_output_embeddings(), input_ids, loss_mask)


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
