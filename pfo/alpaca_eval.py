"""AlpacaEval 2 outputs from a local prompt file (the prompts are not available offline).

Input: AlpacaEval's evaluation set as JSON (a list) or JSONL, each row with ``instruction`` and
optionally ``dataset`` (other fields are ignored), e.g. the ``alpaca_eval.json`` of the
``tatsu-lab/alpaca_eval`` dataset. Output: ``model_outputs.json``, a list of
``{"instruction", "output", "generator", "dataset"}`` that ``alpaca_eval --model_outputs`` reads.
"""
from __future__ import annotations

import json
from typing import Sequence

from .data import DataError


def load_alpaca_prompts(path: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise DataError(f"cannot read AlpacaEval file {path}: {e}") from None
    try:
        rows = json.loads(text) if text.lstrip().startswith("[") else \
            [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as e:
        raise DataError(f"{path}: not JSON or JSONL ({e})") from None
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("instruction"), str) or not row["instruction"].strip():
            raise DataError(f"{path}: row {i}: needs a non-empty string field 'instruction'")
        out.append({"instruction": row["instruction"], "dataset": row.get("dataset", "")})
    if not out:
        raise DataError(f"{path}: no prompts")
    return out


def model_outputs(prompts: Sequence[dict], outputs: dict, generator: str) -> list[dict]:
    """AlpacaEval's model_outputs list, in prompt order (outputs keyed by prompt index)."""
    return [{"instruction": p["instruction"], "output": outputs[i], "generator": generator, "dataset": p["dataset"]}
            for i, p in enumerate(prompts)]
