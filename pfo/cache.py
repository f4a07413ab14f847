"""Reference log-prob cache: sharded Arrow IPC files plus a JSON manifest.

Layout of a cache folder::

    manifest.json            written last; its presence means the cache is complete
    pending.json             the manifest-to-be while shards are being computed (resume guard)
    train-00000.arrow ...    shard k holds examples [k*shard_size, (k+1)*shard_size) of the split
    eval-00000.arrow ...

Shards are defined by example index ranges, not by rank, so the content does not depend on how
many ranks computed it, and a rerun after a crash recomputes only missing shards. Every file is
written to a temporary name, fsynced and renamed. The manifest records a sha256 per shard.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from .fileio import atomic_write_bytes, read_json, write_json  # noqa: F401 (re-exported: C.write_json)
from .runtime import fault_point

FORMAT_VERSION = 1

SCHEMA = pa.schema([
    ("example_id", pa.string()),
    ("token_hash", pa.string()),
    ("desirable", pa.bool_()),
    ("ref_logp", pa.float32()),
    ("kl_partner_id", pa.string()),      # null when KL pairs are off or in the eval split
    ("kl_token_hash", pa.string()),
    ("ref_kl_logp", pa.float32()),
])

# Fields compared between the cache and the run that reads it. "model" is compared only when the
# reader knows the reference model (align never loads it, by design).
CHECKED_FIELDS = ("tokenizer", "data_train", "data_eval", "max_length", "truncation", "dtype", "kl_pairs", "seed")


class CacheError(RuntimeError):
    pass


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def data_fingerprint(ids: Iterable[str], token_hashes: Iterable[str]) -> str:
    """Order-independent hash of the exact rows (id + token hash)."""
    lines = sorted(f"{i}\t{t}" for i, t in zip(ids, token_hashes))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def shard_name(split: str, k: int) -> str:
    return f"{split}-{k:05d}.arrow"


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + shard_size, n)) for lo in range(0, n, shard_size)]


def write_shard(path: str, columns: dict) -> str:
    """Write a shard and its checksum sidecar (<shard>.sha256), each atomically; returns the sha256."""
    table = pa.table(columns, schema=SCHEMA)

    def write(f):
        with ipc.new_file(f, SCHEMA) as w:  # uncompressed IPC: memory-mappable, zero-copy reads
            w.write_table(table)
    atomic_write_bytes(path, write)
    _SHARDS_WRITTEN[0] += 1
    fault_point("before_sidecar", _SHARDS_WRITTEN[0])
    digest = sha256_file(path)
    atomic_write_bytes(path + ".sha256", lambda f: f.write(digest.encode()))
    fault_point("after_shard", _SHARDS_WRITTEN[0])
    return digest


_SHARDS_WRITTEN = [0]  # per process, for fault injection


def complete_shard(path: str) -> Optional[str]:
    """The sha256 of a finished shard whose content still matches its sidecar, else None (a shard
    without a sidecar was interrupted between the two renames; a mismatch means it was damaged)."""
    try:
        with open(path + ".sha256", encoding="utf-8") as f:
            digest = f.read().strip()
    except OSError:
        return None
    return digest if os.path.exists(path) and sha256_file(path) == digest else None


def mismatches(found: dict, expected: dict, fields: Sequence[str] = CHECKED_FIELDS) -> list[str]:
    return [f"{k}: cache has {found.get(k)!r}, this run has {expected.get(k)!r}"
            for k in fields if k in expected and found.get(k) != expected.get(k)]


@dataclass
class SplitRows:
    example_id: list
    token_hash: list
    desirable: np.ndarray
    ref_logp: np.ndarray
    kl_partner_id: list
    kl_token_hash: list
    ref_kl_logp: np.ndarray


class ReferenceCache:
    """Read side. Opening verifies every shard's checksum against the manifest; tables are
    memory-mapped, and lookup by example id goes through a dict index."""

    def __init__(self, cache_dir: str, verify: bool = True):
        self.dir = cache_dir
        self.manifest = read_json(os.path.join(cache_dir, "manifest.json"))
        if self.manifest is None:
            hint = " (a computation was started but not finished)" if os.path.exists(
                os.path.join(cache_dir, "pending.json")) else ""
            raise CacheError(f"no reference cache at {cache_dir}{hint}: run stages/precompute_ref.py first")
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise CacheError(f"{cache_dir}: cache format {self.manifest.get('format_version')} "
                             f"is not the supported {FORMAT_VERSION}; rebuild it")
        self.tables: dict[str, pa.Table] = {}
        for split, info in self.manifest["splits"].items():
            parts = []
            for shard in info["shards"]:
                path = os.path.join(cache_dir, shard["file"])
                if not os.path.exists(path):
                    raise CacheError(f"shard {shard['file']} listed in the manifest is missing from {cache_dir}")
                if verify and sha256_file(path) != shard["sha256"]:
                    raise CacheError(f"shard {shard['file']} in {cache_dir} is corrupted (checksum mismatch); "
                                     f"delete it and rerun stages/precompute_ref.py to recompute it")
                try:
                    parts.append(ipc.open_file(pa.memory_map(path)).read_all())
                except pa.ArrowInvalid as e:
                    raise CacheError(f"shard {shard['file']} in {cache_dir} is unreadable: {e}") from None
            self.tables[split] = pa.concat_tables(parts) if parts else SCHEMA.empty_table()
        self._index = {split: {eid: i for i, eid in enumerate(t.column("example_id").to_pylist())}
                       for split, t in self.tables.items()}

    def check(self, expected: dict, rebuild_hint: str) -> None:
        diffs = mismatches(self.manifest, expected)
        if diffs:
            raise CacheError("the reference cache at {} does not match this run:\n  {}\nRebuild it with:\n  {}".format(
                self.dir, "\n  ".join(diffs), rebuild_hint))

    def rows(self, split: str, example_ids: Sequence[str], token_hashes: Sequence[str]) -> SplitRows:
        """Rows for exactly these examples, in this order. A missing example, an extra cached
        example or a differing token hash is an error, never a skip."""
        index = self._index.get(split, {})
        missing = [e for e in example_ids if e not in index]
        if missing:
            raise CacheError(f"{len(missing)} {split} example(s) are not in the cache, e.g. {missing[:3]}")
        extra = len(index) - len(set(example_ids))
        if extra:
            raise CacheError(f"the cache holds {extra} {split} example(s) that this run does not use")
        rows = [index[e] for e in example_ids]
        t = self.tables[split].take(pa.array(rows, type=pa.int64()))
        cached_hash = t.column("token_hash").to_pylist()
        bad = [e for e, a, b in zip(example_ids, cached_hash, token_hashes) if a != b]
        if bad:
            raise CacheError(f"{len(bad)} {split} example(s) were tokenised differently when cached, e.g. {bad[:3]}")
        col = lambda name: t.column(name).to_numpy(zero_copy_only=False)  # noqa: E731
        return SplitRows(example_id=list(example_ids), token_hash=cached_hash,
                         desirable=col("desirable").astype(bool), ref_logp=col("ref_logp").astype(np.float64),
                         kl_partner_id=t.column("kl_partner_id").to_pylist(),
                         kl_token_hash=t.column("kl_token_hash").to_pylist(),
                         ref_kl_logp=np.asarray(t.column("ref_kl_logp").to_pylist(), dtype=np.float64))


def run_fields(cfg, tokenizer_fp: str, fset) -> dict:
    """The manifest fields that describe what a run trains on; stage 2 writes them, stage 3 and
    the evaluation recompute and compare them."""
    return {
        "tokenizer": tokenizer_fp,
        "data_train": data_fingerprint(fset.ids("train"), fset.token_hashes("train")),
        "data_eval": data_fingerprint(fset.ids("eval"), fset.token_hashes("eval")),
        "max_length": cfg.max_length,
        "truncation": "completion_right",
        "dtype": cfg.dtype,
        "kl_pairs": fset.kl is not None,
        "seed": cfg.seed,
    }
