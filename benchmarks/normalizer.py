"""Cost per optimizer step of the batch normaliser modes, through the real alignment stage.

    ./run_all.sh                      # once: the cpu-demo SFT model and reference cache
    python benchmarks/normalizer.py [--steps 4] [--grad-accum 2] [--repeats 2]

Runs stages/align.py (1 rank, cpu-demo) with normalizer=global, ema and micro and the same
gradient accumulation, each into a scratch folder, and compares the median step time (first step
excluded). With accumulation, global scores the step's micro-batches once more without gradient.
Ends with `ratio <name> <value>` lines.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(mode: str, steps: int, accum: int, scratch: str) -> float:
    out = os.path.join(scratch, mode)
    cmd = ('source scripts/env.sh; source scripts/launch.sh; '
           f'OMP_NUM_THREADS=2 pfo_launch align 1 --config cpu-demo --output {out} --max_steps {steps} '
           f'--grad_accum {accum} --normalizer {mode}')
    env = dict(os.environ, PFO_PYTHON=sys.executable)
    subprocess.run(["bash", "-c", cmd], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    with open(os.path.join(out, "log.jsonl")) as f:
        times = [json.loads(line)["step_time_s"] for line in f][1:]
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    modes = ["micro", "global", "ema"]
    runs: dict = {m: [] for m in modes}
    for r in range(a.repeats):  # alternate the order so machine noise hits every mode alike
        for m in (modes if r % 2 == 0 else modes[::-1]):
            with tempfile.TemporaryDirectory() as scratch:
                runs[m].append(run(m, a.steps, a.grad_accum, scratch))
    t = {m: statistics.median(v) for m, v in runs.items()}
    for m, v in t.items():
        print(f"normalizer={m:6s} grad_accum={a.grad_accum}: median {v:.2f} s/step")
    print(f"ratio global_over_micro_step_time {t['global'] / t['micro']:.3f}")
    print(f"ratio ema_over_micro_step_time {t['ema'] / t['micro']:.3f}")


if __name__ == "__main__":
    main()
