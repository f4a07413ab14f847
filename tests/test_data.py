"""Loaders: the real offline packages, TRL/UltraChat schemas on small local files, bad rows."""
import json

import pytest

from pfo.data import (DataError, FeedbackExample, assign_kl_partners, feedback_from_rows, load_feedback,
                      load_sft_conversations, movielens_feedback, movielens_stats, sharegpt_to_messages,
                      tokenize_feedback)


@pytest.fixture(scope="module")
def movielens():
    return movielens_feedback(history_len=10, seed=0)


def test_sharegpt_real_package_recovered():
    convs, report = load_sft_conversations("sharegpt")
    # The shipped file is truncated: item-by-item decoding recovers 17,671 complete conversations.
    assert report.total == 17671
    assert report.kept == len(convs) > 17000
    assert sum(report.skipped.values()) == report.total - report.kept >= 126  # at least the empty ones
    for msgs in convs[:200]:
        assert msgs[0]["role"] == "user" and msgs[-1]["role"] == "assistant"
        assert all(m["role"] == ("user", "assistant")[i % 2] for i, m in enumerate(msgs))


def test_sharegpt_conversion_rules():
    item = {"conversations": [{"from": "gpt", "value": "hello"}, {"from": "human", "value": "q"},
                              {"from": "gpt", "value": "a"}, {"from": "human", "value": "dangling"}]}
    assert sharegpt_to_messages(item) == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert sharegpt_to_messages({"conversations": []}) is None
    assert sharegpt_to_messages({"conversations": [{"from": "human", "value": "a"},
                                                   {"from": "human", "value": "b"}]}) is None


def test_movielens_real_package_counts():
    assert movielens_stats() == {"ratings": 100000, "users": 943, "items": 1682, "rated_items": 1682}


def test_movielens_feedback_task(movielens):
    train, evals = movielens
    # one held-out (desirable, undesirable) pair per user; every other interaction (k >= 1) trains
    assert len(evals) == 2 * 943
    assert len(train) == 2 * (100000 - 943 - 943)
    for pos, neg in zip(train[::2], train[1::2]):
        assert pos.desirable and not neg.desirable and pos.prompt == neg.prompt
        assert pos.completion != neg.completion
    prompt = train[0].prompt[0]["content"]
    assert prompt.startswith("Instruction: Using the past movie choices")
    assert "(19" in prompt  # titles keep their year, e.g. "Toy Story (1995)"


def test_movielens_deterministic_and_seeded(movielens):
    again, _ = movielens_feedback(history_len=10, seed=0)
    assert [e.completion for e in again[1:2000:2]] == [e.completion for e in movielens[0][1:2000:2]]
    other, _ = movielens_feedback(history_len=10, seed=1)
    assert [e.completion for e in other[1:2000:2]] != [e.completion for e in movielens[0][1:2000:2]]


def test_load_feedback_selects_balanced_deterministic_subset():
    a_train, a_eval = load_feedback("movielens-100k", max_examples=64, max_eval_examples=16, seed=3)
    b_train, _ = load_feedback("movielens-100k", max_examples=64, max_eval_examples=16, seed=3)
    assert [e.id for e in a_train] == [e.id for e in b_train]
    assert len(a_train) == 64 and sum(e.desirable for e in a_train) == 32 and len(a_eval) == 16
    assert not {e.id for e in a_train} & {e.id for e in a_eval}


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_trl_unpaired_and_paired_files(tmp_path):
    unpaired = _write_jsonl(tmp_path / "u.jsonl", [
        {"prompt": "Hi", "completion": "Hello", "label": True},
        {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Go away"}],
         "label": False}])
    ex = feedback_from_rows(json.loads(line) for line in open(unpaired))
    assert [(e.completion, e.desirable) for e in ex] == [("Hello", True), ("Go away", False)]
    paired = _write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "Hi", "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
         "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Meh"}]}] * 3)
    train, evals = load_feedback(paired, eval_fraction=0.0)
    assert [(e.completion, e.desirable) for e in train] == [("Hello", True), ("Meh", False)] * 3
    assert len({e.id for e in train}) == 6  # duplicates keep distinct stable ids
    assert evals == []


def test_ultrachat_schema_file(tmp_path):
    path = _write_jsonl(tmp_path / "uc.jsonl", [
        {"prompt": "x", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                                      {"role": "user", "content": "dangling"}]},
        {"prompt": "y", "messages": [{"role": "user", "content": "only a question"}]}])
    convs, report = load_sft_conversations(path)
    assert convs == [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]
    assert report.skipped == {"conversations without an assistant turn": 1}


@pytest.mark.parametrize("row, message", [
    ({"completion": "a", "label": True}, "row 0: missing field 'prompt'"),
    ({"prompt": "p", "completion": "a"}, "row 0: missing field 'label'"),
    ({"prompt": "p", "completion": "a", "label": "yes"}, "row 0: field 'label' must be a bool"),
    ({"prompt": "p", "completion": "   ", "label": True}, "row 0: field 'completion' is empty"),
    ({"prompt": "p", "completion": 3, "label": True}, "row 0: field 'completion' must be a string"),
    ({"prompt": "p", "chosen": "a"}, "row 0: needs 'completion'"),
    ({"prompt": [{"role": "user"}], "completion": "a", "label": True}, r"row 0: field 'prompt'\[0\]"),
])
def test_bad_rows_name_row_and_field(row, message):
    with pytest.raises(DataError, match=message):
        feedback_from_rows([row])


def test_long_prompts_are_skipped_and_counted(smol_tokenizer):
    ex = [FeedbackExample("a", ({"role": "user", "content": "word " * 400},), "x", True),
          FeedbackExample("b", ({"role": "user", "content": "short"},), "x", False)]
    kept, report = tokenize_feedback(smol_tokenizer, ex, max_length=64)
    assert [e.id for e, _ in kept] == ["b"]
    assert report.total == 2 and report.kept == 1 and "1 prompts of 64+ tokens" in report.summary("x")


def test_kl_partners_deterministic_never_self_and_order_free():
    ex = [FeedbackExample(f"id{i}", ({"role": "user", "content": f"p{i}"},), f"c{i % 5}", i % 2 == 0)
          for i in range(40)]
    partners = assign_kl_partners(ex, seed=7)
    assert partners == assign_kl_partners(ex, seed=7)
    assert all(ex[j].completion != ex[i].completion for i, j in enumerate(partners))
    # the partner of an example depends on ids and seed, not on where it sits in the list
    shuffled = ex[::-1]
    by_id = {e.id: ex[j].id for e, j in zip(ex, partners)}
    assert {e.id: shuffled[j].id for e, j in zip(shuffled, assign_kl_partners(shuffled, seed=7))} == by_id
    assert assign_kl_partners(ex, seed=8) != partners


# ----------------------------------------------------------------------------- interaction logs

def _write_log(path, rows, header="userId,title,timestamp"):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return str(path)


def test_interaction_log_file_becomes_the_rec_task(tmp_path):
    """A Goodreads/MovieLens-25M-shaped CSV (column aliases accepted): per user, ordered by time,
    every item after the first trains, the last is held out; ties in time keep the file order."""
    from pfo.data import held_out_users, is_interaction_dataset

    rows = [(1, '"Dune (1965)"', 30), (1, "Emma", 10), (1, "Heat", 20), (1, "Alien", 40),
            (2, "Fargo", 5), (2, "Heat", 6), (2, "Up", 6), (3, "Big", 1), (3, "Jaws", 2)]
    log = _write_log(tmp_path / "log.csv", rows)
    assert is_interaction_dataset(log)
    train, evals = load_feedback(log, history_len=2, seed=0)
    pos = {e.id: e for e in train + evals if e.desirable}
    # user 1 in time order: Emma, Heat, Dune (1965), Alien -> k=1..3, k=3 held out
    assert pos["rec-u1-k2-pos"].completion == "Dune (1965)"
    assert pos["rec-u1-k2-pos"].prompt[0]["content"].endswith("\nEmma, Heat")
    assert pos["rec-u1-k3-pos"].prompt[0]["content"].endswith("\nHeat, Dune (1965)")  # history_len 2
    assert pos["rec-u2-k2-pos"].completion == "Up"                                       # tie: file order
    assert {e.id for e in evals if e.desirable} == {"rec-u1-k3-pos", "rec-u2-k2-pos", "rec-u3-k1-pos"}
    for e in train + evals:
        if not e.desirable:
            assert e.completion != pos[e.id[:-3] + "pos"].completion
    users = held_out_users(log, max_users=0, history_len=2)
    books = held_out_users(log, history_len=2, instruction="Using the past book choices, predict the next.")
    assert books[0].prompt[0]["content"].startswith("Instruction: Using the past book choices, predict the next.\n")
    assert {(u.user, u.truth) for u in users} == {("rec-u1-k3", "Alien"), ("rec-u2-k2", "Up"), ("rec-u3-k1", "Jaws")}


def test_interaction_log_errors_name_the_problem(tmp_path):
    from pfo.data import held_out_users

    bad = _write_log(tmp_path / "bad.csv", [(1, "A"), (2, "B")], header="user,item")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['timestamp'\]"):
        load_feedback(bad)
    empty = _write_log(tmp_path / "empty.csv", [(1, "A", 1), (2, "", 2)], header="user,item,timestamp")
    with pytest.raises(DataError, match="row 1: empty user, item or timestamp"):
        load_feedback(empty)
    trl = tmp_path / "trl.jsonl"
    trl.write_text(json.dumps({"prompt": "p", "completion": "c", "label": True}) + "\n")
    with pytest.raises(DataError, match="needs an interaction log"):
        held_out_users(str(trl))


def test_interaction_log_with_text_dates_sorts_by_time(tmp_path):
    """Goodreads-style dates: by text, "Mon" < "Tue" < "Wed" would put the 2017 read last."""
    from pfo.data import held_out_users

    p = tmp_path / "goodreads.jsonl"
    rows = [{"user_id": "a", "title": "Emma", "date_added": "Wed Jan 04 10:00:00 -0800 2017"},
            {"user_id": "a", "title": "Dune", "date_added": "Mon Mar 06 10:00:00 -0800 2017"},
            {"user_id": "a", "title": "Heat", "date_added": "Tue Jan 03 10:00:00 -0800 2017"},
            {"user_id": "b", "title": "Up", "date_added": "Tue Jan 03 10:00:00 -0800 2017"},
            {"user_id": "b", "title": "Big", "date_added": "Fri Jan 06 10:00:00 -0800 2017"}]
    p.write_text("".join(json.dumps({**r, "timestamp": r.pop("date_added")}) + "\n" for r in rows))
    users = {u.user: u for u in held_out_users(str(p))}
    assert users["rec-ua-k2"].truth == "Dune"
    assert users["rec-ua-k2"].prompt[0]["content"].endswith("\nHeat, Emma")
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,timestamp\n1,A,yesterday\n2,B,soon\n")
    with pytest.raises(DataError, match="row 0: timestamp .yesterday. is neither a number nor a date"):
        load_feedback(str(bad))


def _text_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_timestamp_column_has_one_reading(tmp_path):
    """Numbers stay numbers (the text row is the one named); dates share one format: 13/11 proves a
    day-first column; a column both readings accept differently is refused, never silently sorted."""
    from pfo.data import held_out_users, read_interaction_log

    mixed = _text_file(tmp_path, "mixed.csv", "user,title,timestamp\na,Emma,1420070400\na,Dune,1422748800\n"
                                              "b,Dune,yesterday\nb,Emma,1425168000\n")
    with pytest.raises(DataError, match=r"row 2: timestamp 'yesterday' is not a number"):
        read_interaction_log(mixed)
    dayfirst = _text_file(tmp_path, "dayfirst.csv", "user,title,timestamp\na,Emma,03/12/2015\na,Dune,13/11/2015\n"
                                                    "a,Beloved,04/11/2015\nb,Up,01/02/2015\nb,Big,02/01/2015\n")
    times = read_interaction_log(dayfirst)["timestamp"].dt.strftime("%Y-%m-%d").tolist()
    assert times == ["2015-12-03", "2015-11-13", "2015-11-04", "2015-02-01", "2015-01-02"]
    assert {u.user: u.truth for u in held_out_users(dayfirst, history_len=2)} == {"rec-ua-k2": "Emma",
                                                                                  "rec-ub-k1": "Up"}
    ambiguous = _text_file(tmp_path, "ambiguous.csv",
                           "user,title,timestamp\na,Emma,12/01/2015\na,Dune,11/01/2015\n")
    with pytest.raises(DataError, match=r"row 0: timestamp '12/01/2015' reads as two different dates"):
        read_interaction_log(ambiguous)
    iso = _text_file(tmp_path, "iso.tsv", "user\titem\ttime\na\tEmma\t2015-01-13\na\tDune\t2015-01-02T10:00:00\n")
    assert read_interaction_log(iso)["timestamp"].dt.day.tolist() == [13, 2]


def test_unreadable_or_foreign_csv_is_named(tmp_path):
    from pfo.data import read_interaction_log

    comma = _text_file(tmp_path, "comma.csv",
                       "user,title,timestamp\na,Emma,1\na,American in Paris, An (1951),2\n")
    with pytest.raises(DataError, match=r"comma.csv: not a readable CSV file: .*line 3.*quote fields"):
        read_interaction_log(comma)
    foreign = _text_file(tmp_path, "foreign.csv", "uid,book,when\na,Emma,1\n")
    with pytest.raises(DataError, match=r"no interaction-log columns; found \['uid', 'book', 'when'\]"):
        load_feedback(foreign)
