"""LLM judges: any OpenAI-compatible chat-completions endpoint, or a local Hugging Face model.

A judge turns a list of chat messages into the judge's reply text: at temperature 0, or at
RETRY_TEMPERATURE when asked to resample after replies without a rating (a greedy judge would only
repeat them). Failures raise JudgeError, which says whether retrying can help; callers retry
those that can and, after the last attempt, record the judgment as unscored.
"""
from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from typing import Optional, Sequence

from .tokenization import Message


RETRY_TEMPERATURE = 0.7


class JudgeError(RuntimeError):
    """retry_after: seconds the server asked to wait (HTTP 429/503). fatal: no judgment can succeed
    (bad key, unknown model or URL), so the run stops instead of marking everything unscored.
    retryable=False: this judgment fails the same way every time (prompt longer than the judge's
    context, a request the server rejects), so it is unscored at once, without waiting."""

    def __init__(self, msg: str, retry_after: Optional[float] = None, fatal: bool = False,
                 retryable: bool = True):
        super().__init__(msg)
        self.retry_after = retry_after
        self.fatal = fatal
        self.retryable = retryable and not fatal


class OpenAIJudge:
    """POST {url}/chat/completions with temperature 0 (vLLM, TGI, llama.cpp server, OpenAI...)."""

    def __init__(self, url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 120.0,
                 max_tokens: int = 1024):
        self.endpoint = url.rstrip("/") + ("" if url.rstrip("/").endswith("/chat/completions") else "/chat/completions")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.name = model

    def __call__(self, messages: Sequence[Message], resample: int = 0) -> str:
        body = json.dumps({"model": self.model, "messages": list(messages),
                           "temperature": 0.0 if resample == 0 else RETRY_TEMPERATURE,
                           "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as e:
            try:
                detail = e.read()[:200].decode(errors="replace")
            except (OSError, http.client.HTTPException):
                detail = ""
            try:
                retry_after = float(e.headers.get("Retry-After", ""))
            except (TypeError, ValueError):
                retry_after = None
            hint = {401: " (check the key in $" + self.api_key_env + ")", 403: " (key not allowed)",
                    404: " (check judge_url and judge_model)"}.get(e.code, "")
            # 400/413/422: this request is rejected (e.g. longer than the judge's context)
            raise JudgeError(f"HTTP {e.code} from {self.endpoint}{hint}: {detail}", retry_after,
                             fatal=e.code in (401, 403, 404), retryable=e.code not in (400, 413, 422)) from None
        except (OSError, http.client.HTTPException) as e:  # refused, reset, timeout, TLS, cut-off body
            raise JudgeError(f"cannot reach {self.endpoint}: {type(e).__name__}: {e}") from None
        try:
            content = json.loads(payload)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(f"malformed chat-completions reply from {self.endpoint}: {payload[:200]!r}") from None
        if not isinstance(content, str):
            raise JudgeError(f"reply content is {type(content).__name__}, not text")
        return content


class LocalJudge:
    """A local causal LM as judge: its chat template; greedy, then seeded sampling on retries."""

    def __init__(self, model_name_or_path: str, max_new_tokens: int = 1024, dtype: str = "float32"):
        from .models import load_model, load_tokenizer

        self.tokenizer = load_tokenizer(model_name_or_path)
        self.model = load_model(model_name_or_path, dtype).eval()
        self.max_new_tokens = max_new_tokens
        self.name = os.path.basename(os.path.normpath(model_name_or_path))

    def __call__(self, messages: Sequence[Message], resample: int = 0) -> str:
        from .generation import Decoding, generate_batch, render_prompts

        limit = getattr(self.model.config, "max_position_embeddings", None)
        try:
            n = len(self.tokenizer(render_prompts(self.tokenizer, [list(messages)])[0], add_special_tokens=False)["input_ids"])
            if limit and n + self.max_new_tokens > limit:
                raise JudgeError(f"judge prompt of {n} tokens + {self.max_new_tokens} new exceeds the judge's "
                                 f"context of {limit}", retryable=False)
            decoding = (Decoding("greedy", 1, self.max_new_tokens) if resample == 0 else
                        Decoding("sample", 1, self.max_new_tokens, temperature=RETRY_TEMPERATURE, seed=resample))
            return generate_batch(self.model, self.tokenizer, [list(messages)], decoding)[0][0]
        except JudgeError:
            raise
        except Exception as e:  # a template that rejects a role, out of memory...: this judgment only,
            # and a local model fails the same way again
            raise JudgeError(f"local judge failed: {type(e).__name__}: {e}", retryable=False) from e


def make_judge(cfg):
    """The judge a stage config asks for, or None (scoring skipped)."""
    if cfg.judge == "openai":
        return OpenAIJudge(cfg.judge_url, cfg.judge_model, cfg.judge_api_key_env, cfg.judge_timeout,
                           cfg.judge_max_new_tokens)
    if cfg.judge == "hf":
        return LocalJudge(cfg.judge_model, cfg.judge_max_new_tokens, cfg.dtype)
    return None
