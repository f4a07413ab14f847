"""``pfo`` command line: inspect and verify reference caches.

    pfo cache inspect DIR     manifest, coverage, shard sizes, reference log-prob statistics
    pfo cache verify DIR      checksums of every shard against the manifest, then a full read
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from . import cache as C


def _stats(values: np.ndarray) -> str:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return "none"
    q = np.percentile(values, [5, 50, 95])
    return (f"n={values.size} mean={values.mean():.3f} std={values.std():.3f} min={values.min():.3f} "
            f"p5={q[0]:.3f} median={q[1]:.3f} p95={q[2]:.3f} max={values.max():.3f}")


def inspect(cache_dir: str) -> int:
    cache = C.ReferenceCache(cache_dir, verify=False)
    m = cache.manifest
    print(f"reference cache {os.path.abspath(cache_dir)}")
    print("manifest:")
    for key in sorted(k for k in m if k != "splits"):
        print(f"  {key}: {m[key]}")
    for split, info in m["splits"].items():
        table = cache.tables[split]
        size = sum(os.path.getsize(os.path.join(cache_dir, s["file"])) for s in info["shards"])
        print(f"split {split}: {info['num_rows']} rows in {len(info['shards'])} shard(s), {size / 2**20:.2f} MiB "
              f"(rows present: {table.num_rows}/{info['num_rows']})")
        for s in info["shards"]:
            print(f"  {s['file']}: {s['rows']} rows, {os.path.getsize(os.path.join(cache_dir, s['file']))} bytes")
        desirable = table.column("desirable").to_numpy(zero_copy_only=False).astype(bool)
        logp = table.column("ref_logp").to_numpy(zero_copy_only=False).astype(float)
        print(f"  desirable {int(desirable.sum())}, undesirable {int((~desirable).sum())}")
        print(f"  ref_logp desirable:   {_stats(logp[desirable])}")
        print(f"  ref_logp undesirable: {_stats(logp[~desirable])}")
        kl = np.asarray(table.column("ref_kl_logp").to_pylist(), dtype=float)
        if not np.isnan(kl).all():
            print(f"  ref_kl_logp (KTO mismatched pairs): {_stats(kl)}")
    return 0


def verify(cache_dir: str) -> int:
    manifest = C.read_json(os.path.join(cache_dir, "manifest.json"))
    if manifest is None:
        print(f"FAIL {cache_dir}: no manifest.json (cache unfinished or absent)")
        return 1
    bad = 0
    for split, info in manifest["splits"].items():
        for s in info["shards"]:
            path = os.path.join(cache_dir, s["file"])
            if not os.path.exists(path):
                print(f"FAIL {s['file']}: missing")
                bad += 1
                continue
            digest = C.sha256_file(path)
            if digest != s["sha256"]:
                print(f"FAIL {s['file']}: checksum {digest[:12]}… differs from manifest {s['sha256'][:12]}…")
                bad += 1
            else:
                print(f"ok   {s['file']}: {s['rows']} rows, sha256 {digest[:12]}…")
    if not bad:
        try:
            C.ReferenceCache(cache_dir)  # also reads every table and its ids
        except C.CacheError as e:
            print(f"FAIL {e}")
            bad += 1
    print("verified: all shards intact" if not bad else f"{bad} problem(s) found")
    return 1 if bad else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="pfo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="group", required=True)
    cache = sub.add_parser("cache", help="reference cache tools")
    csub = cache.add_subparsers(dest="action", required=True)
    for name in ("inspect", "verify"):
        c = csub.add_parser(name)
        c.add_argument("cache_dir")
    a = p.parse_args(argv)
    try:
        return {"inspect": inspect, "verify": verify}[a.action](a.cache_dir)
    except C.CacheError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
