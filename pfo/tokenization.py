"""The one tokenisation function every stage uses.

A conversation is rendered with the tokenizer's chat template piece by piece: the text before
each assistant turn (template + user turns + generation prompt) is masked, the assistant turn
(content + end-of-turn marker, e.g. ``<|im_end|>``) is trained on. Each piece's text is a
prefix-extension of the previous one, so token ids are built by concatenation and the prompt
ids are a prefix of prompt+completion ids by construction. Special tokens come only from the
template (``add_special_tokens=False``), so BOS is never duplicated. The loss mask is built from
positions, never from token identity, so EOS is trained on even when pad == eos.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

Message = dict  # {"role": str, "content": str}


class TokenizationError(ValueError):
    """This example does not fit (counted as a skip by the callers)."""


class TemplateError(ValueError):
    """The tokenizer or its chat template cannot be masked exactly (a hard error, never a skip)."""


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    loss_mask: list[int]       # 1 where the token is a training target (assistant text)
    prompt_length: int         # tokens before the first trained token
    truncated: bool

    @property
    def num_target_tokens(self) -> int:
        return sum(self.loss_mask)

    def token_hash(self) -> str:
        """Hash of ids and mask: identifies exactly what a log-prob was computed on."""
        h = hashlib.sha1()
        h.update(",".join(map(str, self.input_ids)).encode())
        h.update(b"|")
        h.update("".join(map(str, self.loss_mask)).encode())
        return h.hexdigest()


def _render(tokenizer, messages: Sequence[Message], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def tokenize_conversation(tokenizer, messages: Sequence[Message], max_length: int,
                          train_on: str = "all_assistant") -> Tokenized:
    """Tokenise a chat; assistant turns are targets.

    train_on: "all_assistant" (SFT) or "last_assistant" (alignment: only the final completion).
    Sequences longer than max_length are cut at the right (completion tokens are dropped);
    a prompt that alone reaches max_length raises TokenizationError, which callers count as a skip.
    """
    if not messages or messages[-1].get("role") != "assistant":
        raise TokenizationError("conversation must end with an assistant turn")
    assistant_idx = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if train_on == "last_assistant":
        assistant_idx = assistant_idx[-1:]
    ids: list[int] = []
    mask: list[int] = []
    done_text = ""
    boundaries = []  # (text, is_target)
    for i in assistant_idx:
        before = _render(tokenizer, messages[:i], add_generation_prompt=True)
        through = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not before.startswith(done_text) or not through.startswith(before):
            raise TemplateError(
                "chat template is not prefix-stable: the rendering of the first k turns is not a "
                "prefix of the rendering of k+1 turns, so prompt tokens cannot be masked exactly")
        boundaries.append((before[len(done_text):], 0))
        boundaries.append((through[len(before):], 1))
        done_text = through
    for text, target in boundaries:
        if not text:
            continue
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        mask.extend([target] * len(piece))
    if tokenizer(done_text, add_special_tokens=False)["input_ids"] != ids:
        # e.g. SentencePiece tokenizers that add a dummy-prefix space at every piece boundary
        raise TemplateError("tokenising the chat template's pieces separately gives other ids than "
                            "tokenising the whole conversation; this tokenizer is not supported yet")
    prompt_length = mask.index(1) if 1 in mask else len(mask)
    if prompt_length >= max_length:
        raise TokenizationError(f"prompt has {prompt_length} tokens, max_length is {max_length}")
    truncated = len(ids) > max_length
    return Tokenized(ids[:max_length], mask[:max_length], prompt_length, truncated)


def tokenize_example(tokenizer, prompt: Sequence[Message], completion: str, max_length: int) -> Tokenized:
    """Prompt messages + one assistant completion; only the completion is a target."""
    messages = list(prompt) + [{"role": "assistant", "content": completion}]
    return tokenize_conversation(tokenizer, messages, max_length, train_on="last_assistant")


def tokenizer_fingerprint(tokenizer) -> str:
    """Vocabulary + special tokens + chat template: what changes the ids we train on."""
    h = hashlib.sha256()
    vocab = sorted(tokenizer.get_vocab().items())
    h.update(repr(vocab).encode())
    h.update(repr(sorted(map(str, tokenizer.all_special_tokens))).encode())
    h.update((tokenizer.chat_template or "").encode())
    return h.hexdigest()[:16]
