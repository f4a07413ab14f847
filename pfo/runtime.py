"""Start-up shared by every stage script: config, process group, seeds, a readable header."""
from __future__ import annotations

import json
import os
import random
import sys

import torch

from . import distributed as dist
from .config import ConfigError, load_stage_config, to_dict


def start_stage(stage: str, argv=None, distributed: bool = True):
    try:
        cfg = load_stage_config(stage, argv)
    except ConfigError as e:  # a bad option is the user's to fix: one line, no traceback
        fail(str(e))
    if distributed:
        dist.init()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if dist.is_main():
        print(f"[pfo] {stage}: world size {dist.world_size()}, config:\n"
              + json.dumps(to_dict(cfg), indent=1, sort_keys=True), flush=True)
    return cfg


def say(msg: str) -> None:
    if dist.is_main():
        print(f"[pfo] {msg}", flush=True)


def fail(msg: str, code: int = 2):
    """Exit with a clear message instead of a traceback (bad input is not a crash)."""
    if dist.is_main():
        print(f"[pfo] error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fault_point(name: str, count: int) -> None:
    """Fault injection for the resume tests: PFO_FAULT="<name>:<count>[:<signal>]" makes this
    process send itself the signal (default SIGKILL) when it reaches that point. A no-op otherwise."""
    spec = os.environ.get("PFO_FAULT")
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] == name and int(parts[1]) == count:
        import signal

        sig = getattr(signal, parts[2]) if len(parts) > 2 else signal.SIGKILL
        os.kill(os.getpid(), sig)
