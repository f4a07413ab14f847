"""Tokenisation invariants on the real SmolLM2 tokenizer (ChatML template, pad == eos)."""
import pytest

from pfo.logprobs import collate
from pfo.tokenization import TokenizationError, tokenize_conversation, tokenize_example, tokenizer_fingerprint

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def test_tokenizer_is_the_real_one(smol_tokenizer):
    assert len(smol_tokenizer) == 49152
    assert smol_tokenizer.pad_token_id == smol_tokenizer.eos_token_id  # the trap we must survive
    assert smol_tokenizer.eos_token == "<|im_end|>"


def test_prompt_ids_are_prefix_and_only_completion_is_target(smol_tokenizer):
    tok = tokenize_example(smol_tokenizer, PROMPT, "Paris.", max_length=256)
    prompt_ids = smol_tokenizer.apply_chat_template(PROMPT, tokenize=True, add_generation_prompt=True)
    prompt_ids = list(prompt_ids["input_ids"]) if hasattr(prompt_ids, "keys") else list(prompt_ids)
    assert tok.input_ids[:len(prompt_ids)] == prompt_ids
    assert tok.prompt_length == len(prompt_ids)
    assert tok.loss_mask == [0] * len(prompt_ids) + [1] * (len(tok.input_ids) - len(prompt_ids))
    completion = smol_tokenizer.decode([i for i, m in zip(tok.input_ids, tok.loss_mask) if m])
    assert completion.startswith("Paris.")


def test_eos_is_a_target_although_pad_equals_eos(smol_tokenizer):
    tok = tokenize_example(smol_tokenizer, PROMPT, "Paris.", max_length=256)
    eos = smol_tokenizer.eos_token_id
    targets = [i for i, m in zip(tok.input_ids, tok.loss_mask) if m]
    assert eos in targets
    # padding with the same id is masked out by length, the real EOS stays a target
    short = tokenize_example(smol_tokenizer, PROMPT, "Paris", max_length=256)
    batch = collate([tok, short], pad_id=smol_tokenizer.pad_token_id)
    row = batch["loss_mask"][1]
    n = len(short.input_ids)
    assert row[:n].tolist() == short.loss_mask and row[n:].sum() == 0
    assert batch["input_ids"][1, n - 2].item() == eos and batch["loss_mask"][1, n - 2].item() == 1


def test_bos_not_duplicated(smol_tokenizer):
    tok = tokenize_example(smol_tokenizer, PROMPT, "Paris.", max_length=256)
    rendered = smol_tokenizer.apply_chat_template(PROMPT + [{"role": "assistant", "content": "Paris."}], tokenize=False)
    assert smol_tokenizer.decode(tok.input_ids) == rendered  # nothing added around the template
    first = tok.input_ids[0]
    assert tok.input_ids[1] != first or first not in smol_tokenizer.all_special_ids


def test_multi_turn_masks_every_assistant_turn(smol_tokenizer):
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]
    tok = tokenize_conversation(smol_tokenizer, msgs, max_length=512)
    targets = smol_tokenizer.decode([i for i, m in zip(tok.input_ids, tok.loss_mask) if m])
    assert "Hello!" in targets and "Blue." in targets
    assert "Hi" not in targets and "colour" not in targets
    last_only = tokenize_conversation(smol_tokenizer, msgs, max_length=512, train_on="last_assistant")
    assert last_only.input_ids == tok.input_ids
    assert "Hello!" not in smol_tokenizer.decode([i for i, m in zip(last_only.input_ids, last_only.loss_mask) if m])


def test_truncation_and_too_long_prompt(smol_tokenizer):
    full = tokenize_example(smol_tokenizer, PROMPT, "Paris is the capital of France. " * 20, max_length=1024)
    cut = tokenize_example(smol_tokenizer, PROMPT, "Paris is the capital of France. " * 20, max_length=full.prompt_length + 5)
    assert cut.truncated and len(cut.input_ids) == full.prompt_length + 5
    assert cut.input_ids == full.input_ids[:len(cut.input_ids)] and cut.num_target_tokens == 5
    with pytest.raises(TokenizationError, match="prompt"):
        tokenize_example(smol_tokenizer, PROMPT, "Paris.", max_length=full.prompt_length)


def test_token_hash_and_fingerprint_change_with_content(smol_tokenizer):
    a = tokenize_example(smol_tokenizer, PROMPT, "Paris.", 256)
    b = tokenize_example(smol_tokenizer, PROMPT, "Lyon.", 256)
    assert a.token_hash() == tokenize_example(smol_tokenizer, PROMPT, "Paris.", 256).token_hash()
    assert a.token_hash() != b.token_hash()
    fp = tokenizer_fingerprint(smol_tokenizer)
    original = smol_tokenizer.chat_template
    try:
        smol_tokenizer.chat_template = original.replace("assistant", "bot")
        assert tokenizer_fingerprint(smol_tokenizer) != fp
    finally:
        smol_tokenizer.chat_template = original


def test_template_that_is_not_prefix_stable_is_a_hard_error(smol_tokenizer):
    from pfo.tokenization import TemplateError

    original = smol_tokenizer.chat_template
    try:  # a footer after the last message breaks "rendering of k turns is a prefix of k+1 turns"
        smol_tokenizer.chat_template = original + "{{ '<footer>' }}"
        with pytest.raises(TemplateError, match="prefix-stable"):
            tokenize_example(smol_tokenizer, PROMPT, "Paris.", max_length=256)
    finally:
        smol_tokenizer.chat_template = original
