"""Side-by-side measurement helpers for the benchmarks: each variant runs in its own fresh
subprocess so its peak RSS (ru_maxrss) is its own; variants alternate across repeats so machine
noise hits both alike."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys


def run_variants(script: str, variants: list[str], repeats: int, extra: list[str]) -> dict:
    """Run `python script --variant V --child [extra]` repeats times per variant (interleaved);
    each child prints one JSON line with at least {"time_s", "peak_rss_mb"}. Returns medians."""
    results: dict = {v: [] for v in variants}
    for r in range(repeats):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            out = subprocess.run([sys.executable, script, "--variant", v, "--child", *extra],
                                 capture_output=True, text=True, env=dict(os.environ))
            if out.returncode != 0:
                raise SystemExit(f"variant {v} failed:\n{out.stderr[-3000:]}")
            results[v].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {v: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for v, rs in results.items()}


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
