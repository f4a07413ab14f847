"""MT-Bench: question and prompt loading, rating parsing, answer generation that resumes, and
judges: an OpenAI-compatible server on loopback (backed by a local model, or scripted to
misbehave) and a local Hugging Face model."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pfo import mtbench as mt
from pfo.generation import Decoding
from pfo.judge import JudgeError, LocalJudge, OpenAIJudge
from pfo.records import KeyedRecords


@pytest.fixture(scope="module")
def local_judge():
    # the real SmolLM2-135M-Instruct (the tiny random model only ever writes newlines)
    return LocalJudge("smollm2-135m-instruct", max_new_tokens=24)


class ChatServer:
    """A chat-completions endpoint on 127.0.0.1. mode "model": replies come from a local model;
    otherwise replies are taken from ``script``: ("text", s) | ("status", code) | ("raw", bytes)."""

    def __init__(self, backend=None):
        self.backend, self.script, self.requests = backend, [], []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                kind, value = server.script.pop(0) if server.script else ("model", None)
                if kind == "sleep":  # longer than the client's timeout
                    time.sleep(value)
                    return
                if kind == "status":
                    self.send_response(value)
                    if value == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(b'{"error": "overloaded"}')
                    return
                if kind == "raw":
                    payload = value
                else:
                    text = value if kind == "text" else server.backend(body["messages"])
                    payload = json.dumps({"object": "chat.completion", "model": body["model"], "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(local_judge):
    s = ChatServer(local_judge)
    yield s
    s.close()


def _answers(tmp_path, questions):
    store = KeyedRecords(str(tmp_path / "model_answer.jsonl"), key=lambda r: r["question_id"])
    store.add([{"question_id": q["question_id"], "model_id": "m", "answer_id": "x",
                "choices": [{"index": 0, "turns": [f"answer one to {q['question_id']}", "answer two"]}]}
               for q in questions])
    return store


def test_questions_prompts_and_references():
    qs = mt.load_questions()
    assert len(qs) == 80 and all(len(q["turns"]) == 2 for q in qs)
    cats = {q["category"] for q in qs}
    assert len(cats) == 8
    few = mt.load_questions(16)
    assert sorted(q["category"] for q in few) == sorted(list(cats) * 2)  # round robin: 2 per category
    prompts, refs = mt.load_judge_prompts(), mt.load_reference_answers()
    math_q = next(q for q in qs if q["category"] == "math")
    name, msgs = mt.judge_messages(math_q, ["A1", "A2"], 1, prompts, refs)
    assert name == "single-math-v1" and refs[math_q["question_id"]][0] in msgs[1]["content"]
    assert msgs[0]["role"] == "system" and "A1" in msgs[1]["content"] and "[[rating]]" in msgs[1]["content"]
    writing = next(q for q in qs if q["category"] == "writing")
    name, msgs = mt.judge_messages(writing, ["FIRST", "SECOND"], 2, prompts, refs)
    assert name == "single-v1-multi-turn"
    assert all(s in msgs[1]["content"] for s in ("FIRST", "SECOND", writing["turns"][0], writing["turns"][1]))
    assert "second user question" in msgs[0]["content"]


@pytest.mark.parametrize("reply,score", [
    ("Good answer. Rating: [[7]]", 7.0), ("[[8.5]]", 8.5), ("I give it [6].", 6.0), ("Rating: 4", 4.0),
    ("no rating at all", None), ("[[11]]", None), ("[[0]]", None),
    ("Rating: 7.5", 7.5), ("rating: 9", 9.0),
    ("Per step [3] it is fine. Rating: 8", 8.0),       # a citation is not the rating
    ("As noted in [12], good. Rating: 8", 8.0),        # out of range: skipped, not the end of the search
    ("[[0]] no, I mean [[6]]", 6.0)])
def test_parse_rating(reply, score):
    assert mt.parse_rating(reply) == score


def test_http_judge_speaks_chat_completions_backed_by_a_local_model(server, local_judge, monkeypatch):
    monkeypatch.setenv("PFO_TEST_KEY", "sk-test")
    judge = OpenAIJudge(server.url, "local-tiny", api_key_env="PFO_TEST_KEY", timeout=30)
    msgs = [{"role": "system", "content": "You are a judge."}, {"role": "user", "content": "Rate: 2+2=4"}]
    reply = judge(msgs)
    assert reply == local_judge(msgs) and reply  # exactly the local model's greedy output
    req = server.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    assert req["model"] == "local-tiny" and req["messages"] == msgs and req["temperature"] == 0.0


def test_malformed_replies_are_retried_then_unscored_and_resumed(server, tmp_path):
    qs = mt.load_questions(2)
    answers = _answers(tmp_path, qs)
    server.script = [("text", "looks fine"), ("text", "Rating: [[7]]"),                     # q1 turn 1: retried
                     ("status", 500), ("text", "[[5]]"),                                     # q1 turn 2: HTTP error
                     ("text", "meh"), ("text", "[[42]]"), ("text", "no idea"),               # q2 turn 1: 3 bad
                     ("raw", b"<html>gateway</html>"), ("text", "Rating: [[9]]")]            # q2 turn 2: bad JSON
    judge = OpenAIJudge(server.url, "scripted", timeout=30)
    path = str(tmp_path / "model_judgment.jsonl")
    store = KeyedRecords(path, key=lambda r: (r["question_id"], r["turn"]))
    logged = []
    mt.run_judgments(judge, qs, answers, store, retries=3, backoff=0, log=logged.append)
    q1, q2 = (q["question_id"] for q in qs)
    # a reply without a rating is followed by sampling (a greedy judge would repeat it); an HTTP
    # error is followed by the same greedy request, so scores do not depend on network hiccups
    assert [r["temperature"] for r in server.requests[:4]] == [0.0, 0.7, 0.0, 0.0]
    got = {k: (r["score"], r["attempts"]) for k, r in store.records.items()}
    assert got == {(q1, 1): (7.0, 2), (q1, 2): (5.0, 2), (q2, 1): (-1, 3), (q2, 2): (9.0, 2)}
    assert len(logged) == 1 and f"question {q2} turn 1: unscored after 3" in logged[0]
    s = mt.summarize(qs, store)
    assert (s["scored"], s["unscored"], s["expected"]) == (3, 1, 4)
    assert s["average"] == pytest.approx(7.0) and s["turn_2"] == pytest.approx(7.0) and s["turn_1"] == 7.0
    assert s["per_category"] == {qs[0]["category"]: 6.0, qs[1]["category"]: 9.0}
    # a rerun keeps the finished scores (read back from disk) and retries only the unscored one
    n = len(server.requests)
    server.script = [("text", "[[3]]")]
    again = KeyedRecords(path, key=lambda r: (r["question_id"], r["turn"]))
    mt.run_judgments(judge, qs, answers, again, retries=3, backoff=0, log=logged.append)
    assert len(server.requests) == n + 1
    assert mt.summarize(qs, again)["scored"] == 4 and again.get((q2, 1))["score"] == 3.0
    # an answer that changed since it was judged is judged again (both turns); the stale
    # judgments do not count meanwhile
    answers.add([{**answers.get(q1), "answer_id": "regenerated"}])
    assert mt.summarize(qs, again, answers)["scored"] == 2
    server.script = [("text", "[[2]]"), ("text", "[[2]]")]
    mt.run_judgments(judge, qs, answers, again, retries=3, backoff=0, log=logged.append)
    assert len(server.requests) == n + 3
    s = mt.summarize(qs, again, answers)
    assert s["scored"] == 4 and s["per_category"][qs[0]["category"]] == 2.0


def test_timeouts_and_rate_limits_are_retried_fatal_errors_stop(server, tmp_path):
    qs = mt.load_questions(1)
    answers = _answers(tmp_path, qs)
    store = KeyedRecords(str(tmp_path / "j.jsonl"), key=lambda r: (r["question_id"], r["turn"]))
    server.script = [("sleep", 1.5), ("text", "[[4]]"), ("status", 429), ("text", "[[6]]")]
    mt.run_judgments(OpenAIJudge(server.url, "m", timeout=0.5), qs, answers, store, retries=2, backoff=0.01)
    recs = [store.get((qs[0]["question_id"], t)) for t in (1, 2)]
    assert [(r["score"], r["attempts"]) for r in recs] == [(4.0, 2), (6.0, 2)]
    assert "timed out" in recs[0]["errors"][0] and "HTTP 429" in recs[1]["errors"][0]
    assert {r["temperature"] for r in server.requests} == {0.0}
    # a bad key is not retried and not recorded as unscored: the run stops, saying why
    server.script = [("status", 401)]
    fresh = KeyedRecords(str(tmp_path / "j2.jsonl"), key=lambda r: (r["question_id"], r["turn"]))
    with pytest.raises(JudgeError, match=r"HTTP 401 .*check the key in \$OPENAI_API_KEY"):
        mt.run_judgments(OpenAIJudge(server.url, "m", timeout=5), qs, answers, fresh, retries=3, backoff=0)
    assert len(fresh) == 0


def test_a_broken_server_is_unscored_once_and_stops_the_run_when_it_stays_broken(server, tmp_path):
    """HTTP 500 and non-JSON replies are transport failures: one judgment whose every attempt fails
    is unscored and the run goes on; three such judgments in a row stop it, naming the error."""
    qs = mt.load_questions(3)
    answers = _answers(tmp_path, qs)
    store = KeyedRecords(str(tmp_path / "j.jsonl"), key=lambda r: (r["question_id"], r["turn"]))
    server.script = [("status", 500), ("raw", b"<html>oops</html>"), ("text", "[[6]]")] + [("status", 500)] * 6
    with pytest.raises(JudgeError, match=r"failed 3 judgments in a row without a usable reply \(HTTP 500"):
        mt.run_judgments(OpenAIJudge(server.url, "m", timeout=5), qs, answers, store, retries=2, backoff=0,
                         log=lambda m: None)
    assert [r["score"] for r in store.values()] == [-1, 6.0, -1, -1, -1] and not server.script
    assert "malformed chat-completions reply" in list(store.values())[0]["errors"][1]


def test_a_request_the_judge_rejects_is_unscored_at_once_and_the_run_goes_on(server, tmp_path):
    """HTTP 400 (e.g. vLLM's "maximum context length") fails the same way on every retry: no
    retries, no waiting, and rejections in a row from a judge that answers are not mistaken for an
    unreachable judge."""
    qs = mt.load_questions(3)
    store = KeyedRecords(str(tmp_path / "j.jsonl"), key=lambda r: (r["question_id"], r["turn"]))
    server.script = [("text", "[[8]]")] + [("status", 400)] * 4 + [("text", "[[5]]")]
    t0 = time.time()
    mt.run_judgments(OpenAIJudge(server.url, "m", timeout=5), qs, _answers(tmp_path, qs), store, retries=3,
                     backoff=5, log=lambda m: None)
    assert time.time() - t0 < 5 and len(server.requests) == 6
    got = [(r["score"], r["attempts"]) for r in store.values()]
    assert got == [(8.0, 1), (-1, 1), (-1, 1), (-1, 1), (-1, 1), (5.0, 1)]
    assert "HTTP 400" in list(store.values())[1]["errors"][0]


def test_a_judge_that_rejects_every_request_stops_the_run(server, tmp_path):
    """A server that never takes the request (e.g. a model that wants max_completion_tokens)
    would mark all 160 judgments unscored at once: after 3 rejections and no reply it stops, with
    the judgments so far saved, and a rerun against a working judge continues."""
    qs = mt.load_questions(3)
    store = KeyedRecords(str(tmp_path / "j.jsonl"), key=lambda r: (r["question_id"], r["turn"]))
    server.script = [("status", 400)] * 3
    answers = _answers(tmp_path, qs)
    with pytest.raises(JudgeError, match="rejected the first 3 requests and has never answered"):
        mt.run_judgments(OpenAIJudge(server.url, "m", timeout=5), qs, answers, store, retries=3, backoff=0,
                         log=lambda m: None)
    assert len(store) == 3 and len(server.requests) == 3
    server.script = [("text", "[[7]]")] * 6
    mt.run_judgments(OpenAIJudge(server.url, "m", timeout=5), qs, answers, store, retries=3, backoff=0,
                     log=lambda m: None)
    assert [r["score"] for r in store.values()] == [7.0] * 6


def test_math_second_turn_prompt_has_both_reference_answers():
    qs = mt.load_questions()
    prompts, refs = mt.load_judge_prompts(), mt.load_reference_answers()
    q = next(q for q in qs if q["category"] == "coding")
    name, msgs = mt.judge_messages(q, ["A1", "A2"], 2, prompts, refs)
    r1, r2 = refs[q["question_id"]]
    assert name == "single-math-v1-multi-turn"
    assert r1 in msgs[1]["content"] and r2 in msgs[1]["content"] and "A2" in msgs[1]["content"]


def test_unreachable_endpoint_is_a_judge_error(tmp_path):
    judge = OpenAIJudge("http://127.0.0.1:9/v1", "x", timeout=2)
    with pytest.raises(JudgeError, match="cannot reach"):
        judge([{"role": "user", "content": "hi"}])
    # a judge that never answers stops the run after 3 judgments instead of failing all of them
    qs = mt.load_questions(3)
    store = KeyedRecords(str(tmp_path / "j.jsonl"), key=lambda r: (r["question_id"], r["turn"]))
    with pytest.raises(JudgeError, match="failed 3 judgments in a row without a usable reply"):
        mt.run_judgments(judge, qs, _answers(tmp_path, qs), store, retries=2, backoff=0, log=lambda m: None)
    assert len(store) == 3 and all(r["score"] == -1 for r in store.values())


def test_local_model_judge(local_judge, tmp_path):
    qs = mt.load_questions(1)
    store = KeyedRecords(str(tmp_path / "j.jsonl"), key=lambda r: (r["question_id"], r["turn"]))
    mt.run_judgments(local_judge, qs, _answers(tmp_path, qs), store, retries=2, backoff=0, log=lambda m: None)
    prompts, refs = mt.load_judge_prompts(), mt.load_reference_answers()
    for turn in (1, 2):
        rec = store.get((qs[0]["question_id"], turn))
        _, msgs = mt.judge_messages(qs[0], ["answer one to 81", "answer two"], turn, prompts, refs)
        # what the local model said in its last attempt (greedy, then seeded sampling), verbatim
        assert rec["judgment"] == local_judge(msgs, rec["attempts"] - 1)
        # a random tiny model rarely writes a rating: whatever it wrote is parsed the same way
        assert rec["score"] == (mt.parse_rating(rec["judgment"]) or -1)
        assert rec["attempts"] == (1 if rec["score"] > 0 else 2) and rec["judgment"]


def test_local_judge_scoring_path(local_judge, tmp_path, monkeypatch):
    """The local judge's reply goes through decoding and rating parsing like a remote one: here
    the model is made to answer "Rating: [[6]]" (SmolLM2-135M rarely writes a rating itself)."""
    import torch

    tok = local_judge.tokenizer
    reply = tok("Fine answer. Rating: [[6]]", add_special_tokens=False, return_tensors="pt")["input_ids"]

    def scripted(input_ids, **kw):
        return torch.cat([input_ids, reply.repeat(input_ids.shape[0], 1)], dim=1)

    monkeypatch.setattr(local_judge.model, "generate", scripted)
    qs = mt.load_questions(1)
    store = KeyedRecords(str(tmp_path / "j.jsonl"), key=lambda r: (r["question_id"], r["turn"]))
    mt.run_judgments(local_judge, qs, _answers(tmp_path, qs), store, retries=2, backoff=0)
    assert [store.get((qs[0]["question_id"], t))["score"] for t in (1, 2)] == [6.0, 6.0]
    assert mt.summarize(qs, store)["average"] == 6.0


def test_local_judge_errors_are_contained(local_judge, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(local_judge.model, "generate", boom)
    qs = mt.load_questions(1)
    store = KeyedRecords(str(tmp_path / "j.jsonl"), key=lambda r: (r["question_id"], r["turn"]))
    mt.run_judgments(local_judge, qs, _answers(tmp_path, qs), store, retries=2, backoff=0, log=lambda m: None)
    rec = store.get((qs[0]["question_id"], 1))
    assert rec["score"] == -1 and "local judge failed: RuntimeError: out of memory" in rec["errors"][0]
    assert rec["attempts"] == 1  # a local model fails the same way again: not retried


def test_answers_are_fastchat_records_and_not_regenerated(tmp_path):
    from pfo.models import load_model, load_tokenizer

    model, tok = load_model("tiny-random-llama").eval(), load_tokenizer("tiny-random-llama")
    calls = []
    real = model.generate

    def counting(*a, **k):
        calls.append(k["input_ids"].shape[0])
        return real(*a, **k)

    model.generate = counting
    try:
        writing = [q for q in mt.load_questions() if q["category"] == "writing"][:3]
        qs = writing + mt.load_questions(2)[1:]  # 3 writing questions and 1 roleplay question
        dec = Decoding("greedy", 1, 6, seed=5)
        path = str(tmp_path / "model_answer.jsonl")
        store = KeyedRecords(path, key=lambda r: r["question_id"])
        mt.generate_answers(model, tok, qs, store, "tiny", dec, batch_size=2, mode="sample")
        assert calls == [2, 2, 1, 1, 1, 1]  # batches within a category: [w1 w2] [w3] [r1], two turns each
        recs = {r["question_id"]: r for r in map(json.loads, open(path))}
        assert set(recs) == {q["question_id"] for q in qs}
        r = recs[qs[0]["question_id"]]
        assert r["model_id"] == "tiny" and len(r["choices"][0]["turns"]) == 2 and r["answer_id"]
        assert r["decoding"] == {"mode": "sample", "temperature": 1.0}
        # lose the answer of a question whose batch-mate is finished: a rerun generates that batch
        # again (its outputs depend on the batch), keeps the finished one, and gets the same text
        lost = qs[1]["question_id"]
        del store.records[lost]
        store.add([])
        calls.clear()
        again = KeyedRecords(path, key=lambda r: r["question_id"])
        mt.generate_answers(model, tok, qs, again, "tiny", dec, batch_size=2, mode="sample")
        assert calls == [2, 2]
        assert again.get(lost)["choices"] == recs[lost]["choices"]
        assert again.get(qs[0]["question_id"]) == recs[qs[0]["question_id"]]  # untouched
        assert any(t.strip() for r in recs.values() for t in r["choices"][0]["turns"])  # sampled text, not empty
    finally:
        model.generate = real


def test_fastchat_temperatures_per_category():
    base = Decoding("greedy", 1, 64, seed=3)
    assert mt.category_decoding(base, "fastchat", "writing").generate_kwargs()["temperature"] == 0.7
    assert mt.category_decoding(base, "fastchat", "math").mode == "greedy"
    assert mt.category_decoding(base, "fastchat", "stem").temperature == 0.1
    assert mt.category_decoding(base, "greedy", "writing").mode == "greedy"
