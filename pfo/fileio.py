"""Atomic file writes (temp file in the same folder, fsync, rename): a reader or a crash never
sees a half-written file. Used for caches, logs, checkpoints' side files and evaluation results."""
from __future__ import annotations

import json
import os
from typing import Callable, Optional


def atomic_write_bytes(path: str, write: Callable) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def write_json(path: str, obj) -> None:
    """Atomic JSON write; creates the parent folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str) -> Optional[dict]:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
