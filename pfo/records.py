"""Keyed JSONL result files that evaluation can resume from.

Each record is one JSON object per line with a key field (e.g. ``question_id``). The file is
rewritten atomically (temp + rename) after every batch, so a crash loses at most the batch in
flight and never leaves a half-written line; a rerun reads the file and skips finished keys.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Hashable, Iterable, Optional

from .fileio import atomic_write_text


class RecordsError(ValueError):
    pass


class KeyedRecords:
    def __init__(self, path: str, key: Callable[[dict], Hashable], settings: Optional[dict] = None):
        """settings: what the records depend on (model fingerprint, decoding...). Stored in every
        record; records made under other settings are refused, never silently reused."""
        self.path = path
        self.key = key
        self.settings = settings
        self.records: dict = {}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                        k = key(rec)
                    except (ValueError, KeyError, TypeError) as e:
                        raise RecordsError(f"{path}:{n}: not a result record ({e}); "
                                           "move the file away to start this evaluation afresh") from None
                    self._check(rec, n)
                    self.records[k] = rec

    def _check(self, rec: dict, line: int) -> None:
        if self.settings is None:
            return
        theirs = rec.get("pfo_settings", {})
        differ = sorted(k for k in set(self.settings) | set(theirs) if self.settings.get(k) != theirs.get(k))
        if differ:
            detail = "; ".join(f"{k}: file {theirs.get(k)!r} vs now {self.settings.get(k)!r}" for k in differ)
            raise RecordsError(f"{self.path}:{line} was made with other settings ({detail}); "
                               "use another output folder or move this file away")

    def __contains__(self, k) -> bool:
        return k in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, k, default=None):
        return self.records.get(k, default)

    def add(self, records: Iterable[dict]) -> None:
        """Add (or replace) records and persist atomically."""
        for rec in records:
            if self.settings is not None:
                rec = {**rec, "pfo_settings": self.settings}
            self.records[self.key(rec)] = rec
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records.values()))

    def values(self) -> list[dict]:
        return list(self.records.values())
