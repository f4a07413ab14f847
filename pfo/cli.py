"""``pfo`` command line.

    pfo cache inspect DIR     manifest, coverage, shard sizes, reference log-prob statistics
    pfo cache verify DIR      checksums of every shard against the manifest, then a full read
    pfo eval TASK [--config P] [--model DIR] [--option value ...]
                              one evaluation task: margin | rec | mtbench | alpaca (options of
                              stages/evaluate.py; see docs/evaluation.md)
    pfo plot LABEL=LOG.jsonl [...] --out FILE.png
                              training dynamics (paper Fig. 2) of one or more align runs
    pfo report LABEL=RUN_DIR [...] --out DIR
                              report.md + figures comparing runs (RUN_DIR holds eval/ and
                              align/log.jsonl, or is an evaluation folder itself)
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


def _labelled(specs: list[str]) -> list[tuple[str, str]]:
    out = []
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep:  # no label: name it after the folder
            label, path = os.path.basename(os.path.normpath(os.path.dirname(spec) if spec.endswith(".jsonl") else spec)), spec
        out.append((label, path))
    return out


def plot(args) -> int:
    from .plots import plot_training_dynamics

    print(f"written: {plot_training_dynamics(_labelled(args.logs), args.out, args.window)}")
    return 0


def report(args) -> int:
    from .report import Run, ReportError, write_report

    runs = []
    for label, d in _labelled(args.runs):
        # RUN_DIR (holding eval/ and align/log.jsonl) or an evaluation folder itself (--output)
        eval_dir = d if not os.path.isdir(os.path.join(d, "eval")) else os.path.join(d, "eval")
        log = os.path.join(d, "align", "log.jsonl")
        runs.append(Run(label, eval_dir, log if os.path.exists(log) else None))
    preamble = open(args.preamble).read() if args.preamble else ""
    try:
        print(f"written: {write_report(runs, args.out, args.title, preamble, args.window)}")
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["eval"]:  # every evaluate-stage option passes through
        from .evaluation import main as evaluate

        if "--tasks" in argv[2:]:
            print("pfo eval TASK runs one task; for several use stages/evaluate.py --tasks a,b", file=sys.stderr)
            return 2
        if len(argv) < 2 or argv[1].startswith("-"):
            print("usage: pfo eval {margin,rec,mtbench,alpaca} [--config P] [--model DIR] [--option value ...]",
                  file=sys.stderr)
            return 2
        evaluate(argv[2:] + ["--tasks", argv[1]])
        return 0
    p = argparse.ArgumentParser(prog="pfo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="group", required=True)
    cache = sub.add_parser("cache", help="reference cache tools")
    csub = cache.add_subparsers(dest="action", required=True)
    for name in ("inspect", "verify"):
        c = csub.add_parser(name)
        c.add_argument("cache_dir")
    sub.add_parser("eval", help="one evaluation task (pfo eval TASK --help)")
    pl = sub.add_parser("plot", help="training dynamics plot from align logs")
    pl.add_argument("logs", nargs="+", metavar="LABEL=LOG.jsonl")
    pl.add_argument("--out", required=True)
    pl.add_argument("--window", type=int, default=4, help="moving-average window in steps")
    rp = sub.add_parser("report", help="comparison report from run folders")
    rp.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    rp.add_argument("--out", required=True)
    rp.add_argument("--title", default="PFO comparison")
    rp.add_argument("--preamble", default="", help="Markdown file put under the title")
    rp.add_argument("--window", type=int, default=4)
    a = p.parse_args(argv)
    from .plots import PlotError

    try:
        if a.group == "plot":
            return plot(a)
        if a.group == "report":
            return report(a)
        return {"inspect": inspect, "verify": verify}[a.action](a.cache_dir)
    except (C.CacheError, PlotError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
