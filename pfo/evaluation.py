"""Evaluation tasks of the paper's §4, each writing its results into the evaluation folder.

- ``margin``: likelihood analysis (Fig. 5): Δ-margin and per-class log-prob changes on N sampled
  training examples, before (cached reference log-probs, or any model) vs. after alignment.
- ``rec``: recommendation (§4.2, Table 2): 10 recommendations per held-out user, HitRate@5/@10,
  DivRatio.
- ``mtbench``: MT-Bench answers (FastChat format) and, with a judge, single-answer scores.
- ``alpaca``: AlpacaEval model outputs from a local prompt file.

Generation tasks are resumable (finished users / questions are kept and skipped) and refuse to
mix results made by another model or other settings.
"""
from __future__ import annotations

import hashlib
import json
import os
import random

import numpy as np
from tqdm.auto import tqdm

from .fileio import read_json, write_json


def delta_margin(before: np.ndarray, after: np.ndarray, desirable: np.ndarray) -> dict:
    """margin = mean log p(desirable) - mean log p(undesirable); delta = after - before.

    before: reference (pre-alignment) sequence log-probs; after: aligned policy's, same examples.
    """
    before, after, desirable = map(np.asarray, (before, after, desirable))
    desirable = desirable.astype(bool)
    if not desirable.any() or desirable.all():
        raise ValueError("the Δ-margin needs examples of both classes")

    def stats(x):
        return float(x[desirable].mean()), float(x[~desirable].mean())

    b_pos, b_neg = stats(before)
    a_pos, a_neg = stats(after)
    return {
        "num_desirable": int(desirable.sum()), "num_undesirable": int((~desirable).sum()),
        "margin_before": b_pos - b_neg, "margin_after": a_pos - a_neg,
        "delta_margin": (a_pos - a_neg) - (b_pos - b_neg),
        "logp_desirable_before": b_pos, "logp_desirable_after": a_pos, "delta_logp_desirable": a_pos - b_pos,
        "logp_undesirable_before": b_neg, "logp_undesirable_after": a_neg, "delta_logp_undesirable": a_neg - b_neg,
    }


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._") or "model"


def _sha1(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


def sample_indices(n_available: int, n_wanted: int, seed: int) -> list[int]:
    """Seeded sample of row indices in ascending order (all rows when n_wanted is 0 or too large)."""
    if not n_wanted or n_wanted >= n_available:
        return list(range(n_available))
    return sorted(random.Random(seed).sample(range(n_available), n_wanted))


class Evaluator:
    """Runs the configured tasks for one model. cfg: pfo.config.EvalConfig."""

    def __init__(self, cfg, say=print):
        from .models import load_model, load_tokenizer, model_fingerprint

        self.cfg = cfg
        self.say = say
        self.tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
        self.model = load_model(cfg.model, cfg.dtype, cfg.attn_implementation).eval()
        self.model_fp = model_fingerprint(cfg.model)
        # FastChat's model_id (also the answer file's name): e.g. "cpu-demo_align_final" for
        # runs/cpu-demo/align/final, "Qwen_Qwen2.5-7B" for a hub id; claim_output keeps the id an
        # evaluation folder was started with, so a moved model folder resumes instead of restarting.
        name = ("_".join(os.path.normpath(os.path.abspath(cfg.model)).split(os.sep)[-3:])
                if os.path.isdir(cfg.model) else cfg.model)
        self.model_id = _file_safe(cfg.model_id or name)

    def out(self, *parts: str) -> str:
        return os.path.join(self.cfg.output, *parts)

    def decoding(self, mode: str, n: int, max_new_tokens: int):
        from .generation import Decoding

        if mode == "sample":
            return Decoding(mode, n, max_new_tokens, self.cfg.temperature, self.cfg.top_p, self.cfg.seed)
        # temperature and top_p do nothing here: left at their defaults, so that changing them for
        # another task does not stop this one from resuming
        return Decoding(mode, n, max_new_tokens, seed=self.cfg.seed)

    def settings(self, decoding, prompts) -> dict:
        """What generated results depend on: weights, precision and attention kernel, the
        generation config (stop tokens, implicit top_k...), tokenizer (and its chat template),
        decoding, batching (each batch is seeded by its number) and the exact prompt list."""
        from .tokenization import tokenizer_fingerprint

        gen = getattr(self.model, "generation_config", None)
        gen = {k: v for k, v in (gen.to_diff_dict() if gen is not None else {}).items() if k != "transformers_version"}
        return {"model_fingerprint": self.model_fp, "dtype": self.cfg.dtype,
                "attn_implementation": self.cfg.attn_implementation, "generation_config": _sha1(gen),
                "tokenizer": tokenizer_fingerprint(self.tokenizer),
                "decoding": decoding.__dict__.copy(), "gen_batch_size": self.cfg.gen_batch_size,
                "prompts_sha1": _sha1(prompts)}

    # ------------------------------------------------------------------ likelihood analysis
    def margin(self) -> dict:
        from .cache import CacheError, ReferenceCache, run_fields
        from .data import prepare_feedback
        from .logprobs import SequenceLogProbs, score
        from .models import load_model
        from .tokenization import tokenizer_fingerprint

        cfg = self.cfg
        fset = prepare_feedback(cfg, self.tokenizer, kl_pairs=False)
        try:
            cache = ReferenceCache(cfg.cache_dir)
        except CacheError as e:  # the examples and their 'before' log-probs come from the stage-2 cache
            raise CacheError(f"{e} (or pass --cache_dir with the cache of the run being evaluated)") from None
        expected = run_fields(cfg, tokenizer_fingerprint(self.tokenizer), fset)
        expected.pop("kl_pairs")
        cache.check(expected, rebuild_hint="rerun stages/precompute_ref.py with the same data settings")
        split = cfg.margin_split
        rows = cache.rows(split, fset.ids(split), fset.token_hashes(split))
        items = getattr(fset, split)
        idx = sample_indices(len(items), cfg.margin_examples, cfg.seed)
        chosen = [items[i][1] for i in idx]
        pad = self.tokenizer.pad_token_id

        def logps(model, what):
            with tqdm(total=len(chosen), desc=f"Δ-margin: {what}", dynamic_ncols=True) as bar:
                return np.asarray(score(SequenceLogProbs(model, cfg.logprobs == "fused", cfg.chunk_tokens or None),
                                        chosen, pad, cfg.batch_size, progress=bar))

        if cfg.margin_before:
            before = logps(load_model(cfg.margin_before, cfg.dtype, cfg.attn_implementation).eval(), "before model")
            before_src = os.path.abspath(cfg.margin_before)
        else:
            before, before_src = rows.ref_logp[idx], f"reference cache {os.path.abspath(cfg.cache_dir)}"
        after = logps(self.model, "aligned model")
        desirable = rows.desirable[idx]
        result = {"model": os.path.abspath(cfg.model), "before": before_src, "split": split,
                  "num_examples": len(idx), **delta_margin(before, after, desirable)}
        write_json(self.out("delta_margin.json"), result)
        write_json(self.out("margin_logps.json"), {"ids": [items[i][0].id for i in idx],
                                                   "desirable": desirable.astype(bool).tolist(),
                                                   "before": np.asarray(before).tolist(), "after": after.tolist()})
        self.say(f"Δ-margin on {len(idx)} {split} examples: margin {result['margin_before']:.3f} -> "
                 f"{result['margin_after']:.3f} (Δ {result['delta_margin']:+.3f}); log p desirable "
                 f"{result['delta_logp_desirable']:+.3f}, undesirable {result['delta_logp_undesirable']:+.3f}")
        return result

    # ------------------------------------------------------------------ recommendation
    def rec(self) -> dict:
        from .data import held_out_users
        from .generation import generate_resumable
        from .recommend import rec_metrics, recommendation_lists
        from .records import KeyedRecords

        cfg = self.cfg
        users = held_out_users(cfg.dataset, cfg.rec_users, cfg.history_len, cfg.seed, cfg.rec_instruction)
        decoding = self.decoding(cfg.rec_decoding, cfg.rec_num, cfg.rec_max_new_tokens)
        settings = self.settings(decoding, [[u.user, u.prompt] for u in users])
        store = KeyedRecords(self.out("recommendations.jsonl"), key=lambda r: r["user"], settings=settings)

        by_key = {u.user: u for u in users}

        def save(keys, outputs):
            store.add([{"user": k, "truth": by_key[k].truth, "generations": o,
                        "recommendations": recommendation_lists([o])[0]} for k, o in zip(keys, outputs)])

        done_before = len(store)
        with tqdm(total=len(users), desc=f"recommendations ({decoding.mode}, {decoding.num_return_sequences}/user)",
                  dynamic_ncols=True) as bar:
            generate_resumable(self.model, self.tokenizer, [u.user for u in users], [u.prompt for u in users],
                               decoding, cfg.gen_batch_size, lambda k: k in store, save, progress=bar)
        recs = recommendation_lists([store.get(u.user)["generations"] for u in users])
        result = {"model": os.path.abspath(cfg.model), "dataset": cfg.dataset, "decoding": decoding.__dict__,
                  "resumed_users": done_before, **rec_metrics(recs, [u.truth for u in users])}
        write_json(self.out("rec_metrics.json"), result)
        self.say(f"recommendation on {result['num_users']} held-out users: HitRate@5 {result['hit_rate@5']:.4f}, "
                 f"HitRate@10 {result['hit_rate@10']:.4f}, DivRatio {result['div_ratio']:.4f}")
        return result

    # ------------------------------------------------------------------ MT-Bench
    def mtbench(self) -> dict:
        from . import mtbench as mt
        from .judge import make_judge
        from .records import KeyedRecords

        cfg = self.cfg
        questions = mt.load_questions(cfg.mtbench_questions)
        decoding = self.decoding("greedy" if cfg.mtbench_decoding == "fastchat" else cfg.mtbench_decoding, 1,
                                 cfg.max_new_tokens)
        # FastChat's layout: the file name is the model name its scripts report
        answers = KeyedRecords(self.out("mtbench", "model_answer", f"{self.model_id}.jsonl"),
                               key=lambda r: r["question_id"],
                               settings={**self.settings(decoding, [[q["question_id"], q["turns"]] for q in questions]),
                                         "mtbench_decoding": cfg.mtbench_decoding})
        with tqdm(total=len(questions), desc=f"MT-Bench answers ({cfg.mtbench_decoding})", dynamic_ncols=True) as bar:
            mt.generate_answers(self.model, self.tokenizer, questions, answers, self.model_id, decoding,
                                cfg.gen_batch_size, mode=cfg.mtbench_decoding, progress=bar)
        judge = make_judge(cfg)
        if judge is None:
            earlier = read_json(self.out("mtbench_scores.json")) or {}
            # the judgments file of this folder (the stored absolute path is stale after a move)
            judged = self.out("mtbench", "model_judgment", os.path.basename(earlier.get("judgments") or "none"))
            if earlier.get("judge") and os.path.exists(judged):
                # keep what an earlier judged run found, re-counted against the current answers
                judgments = KeyedRecords(judged, key=lambda r: (r["question_id"], r["turn"]))
                result = {**earlier, "answers": answers.path, "judgments": judged,
                          **mt.summarize(questions, judgments, answers)}
                write_json(self.out("mtbench_scores.json"), result)
                self.say(f"MT-Bench: {len(questions)} answers in {answers.path}; no judge configured this time, "
                         f"kept the earlier scores of {earlier['judge']}: {result['scored']}/{result['expected']} "
                         "judgments current")
                return result
            result = {"model": os.path.abspath(cfg.model), "num_questions": len(questions), "judge": None,
                      "skipped": "no judge configured (--judge openai|hf)"}
            write_json(self.out("mtbench_scores.json"), result)
            self.say(f"MT-Bench: {len(questions)} answers in {answers.path}; scoring SKIPPED: no judge configured "
                     "(set --judge openai --judge_url URL --judge_model NAME, or --judge hf --judge_model DIR)")
            return result
        judge_file = _file_safe(judge.name)
        judgments = KeyedRecords(self.out("mtbench", "model_judgment", f"{judge_file}_single.jsonl"),
                                 key=lambda r: (r["question_id"], r["turn"]),
                                 # the URL is transport: a judge moved to another host is the same judge
                                 settings=mt.judge_settings(cfg))
        with tqdm(total=2 * len(questions), desc=f"MT-Bench judging ({judge.name})", dynamic_ncols=True) as bar:
            mt.run_judgments(judge, questions, answers, judgments, cfg.judge_retries, cfg.judge_backoff,
                             progress=bar, log=self.say)
        result = {"model": os.path.abspath(cfg.model), "judge": f"{cfg.judge}:{cfg.judge_model}",
                  "mtbench_decoding": cfg.mtbench_decoding, "max_new_tokens": cfg.max_new_tokens,
                  "answers": answers.path, "judgments": judgments.path, **mt.summarize(questions, judgments, answers)}
        write_json(self.out("mtbench_scores.json"), result)
        avg = "n/a" if result["average"] is None else f"{result['average']:.2f}"
        self.say(f"MT-Bench: average {avg} over {result['scored']}/{result['expected']} judgments "
                 f"({result['unscored']} unscored); per category: "
                 + ", ".join(f"{c} {v:.2f}" for c, v in result["per_category"].items()))
        return result

    # ------------------------------------------------------------------ AlpacaEval
    def alpaca(self) -> dict:
        from .alpaca_eval import load_alpaca_prompts, model_outputs
        from .generation import generate_resumable
        from .records import KeyedRecords

        cfg = self.cfg
        prompts = load_alpaca_prompts(cfg.alpaca_file)
        decoding = self.decoding(cfg.alpaca_decoding, 1, cfg.max_new_tokens)
        store = KeyedRecords(self.out("alpaca", "outputs.jsonl"), key=lambda r: r["index"],
                             settings=self.settings(decoding, [p["instruction"] for p in prompts]))
        with tqdm(total=len(prompts), desc="AlpacaEval outputs", dynamic_ncols=True) as bar:
            generate_resumable(self.model, self.tokenizer, list(range(len(prompts))),
                               [[{"role": "user", "content": p["instruction"]}] for p in prompts], decoding,
                               cfg.gen_batch_size, lambda k: k in store,
                               lambda keys, outs: store.add([{"index": k, "output": o[0]} for k, o in zip(keys, outs)]),
                               progress=bar)
        outputs = model_outputs(prompts, {r["index"]: r["output"] for r in store.values()}, self.model_id)
        path = self.out("alpaca", "model_outputs.json")
        write_json(path, outputs)
        self.say(f"AlpacaEval: {len(outputs)} outputs in {path} (score them with: alpaca_eval --model_outputs {path})")
        return {"num_outputs": len(outputs), "model_outputs": path}

    def claim_output(self) -> None:
        """One evaluation folder holds one model's results: a folder with another model's results
        is refused before anything in it is overwritten."""
        path = self.out("evaluated_model.json")
        theirs = read_json(path)
        if theirs and theirs.get("model_fingerprint") != self.model_fp:
            raise ValueError(f"{self.cfg.output} holds results of another model ({theirs.get('model')}); "
                             "pass another --output for this model")
        if theirs and theirs.get("model_id") and not self.cfg.model_id:
            self.model_id = theirs["model_id"]
        write_json(path, {"model": os.path.abspath(self.cfg.model), "model_fingerprint": self.model_fp,
                          "model_id": self.model_id})

    def run(self) -> dict:
        self.claim_output()
        return {task: getattr(self, task)() for task in dict.fromkeys(self.cfg.task_list())}


def main(argv=None) -> None:
    """stages/evaluate.py and ``pfo eval TASK``: one process, the configured tasks."""
    from .cache import CacheError
    from .data import DataError
    from .judge import JudgeError
    from .records import RecordsError
    from .runtime import fail, say, start_stage

    cfg = start_stage("evaluate", argv, distributed=False)
    if os.sep in cfg.model and not os.path.exists(cfg.model):
        fail(f"no model at {cfg.model} (run stages/align.py first, or pass --model DIR)")
    try:
        Evaluator(cfg, say=say).run()
    except (DataError, CacheError, RecordsError, JudgeError, OSError, ValueError, KeyError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted; finished results are saved, rerun the same command to resume", code=130)
    say(f"results in {cfg.output}")
