"""``pfo eval``: an interrupted recommendation run resumes without regenerating finished users
and ends with exactly what an uninterrupted run produces; other settings are refused."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _eval(task, out, *extra, fault=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PFO_FAULT", None)
    if fault:
        env["PFO_FAULT"] = fault
    cmd = [sys.executable, "-m", "pfo.cli", "eval", task, "--config", "smoke", "--model", "tiny-random-llama",
           "--output", out, "--rec_users", "6", "--rec_num", "3", "--rec_max_new_tokens", "6",
           "--gen_batch_size", "2", "--rec_decoding", "sample", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)


def _recs(out):
    with open(os.path.join(out, "recommendations.jsonl")) as f:
        return {r["user"]: r for r in map(json.loads, f)}


def test_rec_eval_resumes_after_a_kill_and_matches_a_clean_run(tmp_path):
    clean, broken = str(tmp_path / "clean"), str(tmp_path / "broken")
    res = _eval("rec", clean)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "HitRate@5" in res.stdout and "DivRatio" in res.stdout
    assert "recommendations (sample, 3/user)" in res.stderr  # a progress bar

    res = _eval("rec", broken, fault="generate_batch:2")       # SIGKILL after the 2nd batch
    assert res.returncode != 0
    assert len(_recs(broken)) == 4 and not os.path.exists(os.path.join(broken, "rec_metrics.json"))
    res = _eval("rec", broken)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.load(open(os.path.join(broken, "rec_metrics.json")))
    assert metrics["resumed_users"] == 4 and metrics["num_users"] == 6
    a, b = _recs(clean), _recs(broken)
    assert {u: r["generations"] for u, r in a.items()} == {u: r["generations"] for u, r in b.items()}
    assert metrics["hit_rate@10"] == json.load(open(os.path.join(clean, "rec_metrics.json")))["hit_rate@10"]

    # other decoding settings on top of these results are refused, naming what differs
    res = _eval("rec", broken, "--seed", "1")
    assert res.returncode == 2 and "other settings" in res.stderr and "decoding" in res.stderr
    # ... and so is another precision: half the users in fp32 and half in bf16 is no result
    res = _eval("rec", broken, "--dtype", "bfloat16")
    assert res.returncode == 2 and "other settings (dtype: file 'float32' vs now 'bfloat16')" in res.stderr
    assert _recs(broken) == b  # nothing lost


def test_mtbench_without_judge_generates_and_says_scoring_was_skipped(tmp_path):
    out = str(tmp_path / "mt")
    res = _eval("mtbench", out, "--mtbench_questions", "2", "--max_new_tokens", "4")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "scoring SKIPPED: no judge configured" in res.stdout
    with open(os.path.join(out, "mtbench", "model_answer", "tiny-random-llama.jsonl")) as f:
        answers = [json.loads(line) for line in f]
    assert [a["question_id"] for a in answers] == [81, 91]  # writing, roleplay: round robin by category
    assert json.load(open(os.path.join(out, "mtbench_scores.json")))["judge"] is None

    # judged later (a local judge), then run again without one: the judged summary is kept
    res = _eval("mtbench", out, "--mtbench_questions", "2", "--max_new_tokens", "4", "--judge", "hf",
                "--judge_model", "tiny-random-llama", "--judge_max_new_tokens", "4", "--judge_retries", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    judged = json.load(open(os.path.join(out, "mtbench_scores.json")))
    assert judged["judge"] == "hf:tiny-random-llama" and judged["scored"] + judged["unscored"] == 4
    # an evaluation folder that was moved still finds its judgments; temperature does not act on
    # FastChat-mode answers, so changing it (for another task) does not block them
    moved = str(tmp_path / "moved")
    os.rename(out, moved)
    res = _eval("mtbench", moved, "--mtbench_questions", "2", "--max_new_tokens", "4", "--temperature", "0.5")
    assert res.returncode == 0 and "kept the earlier scores of hf:tiny-random-llama" in res.stdout, res.stderr[-3000:]
    kept = json.load(open(os.path.join(moved, "mtbench_scores.json")))
    assert {k: kept[k] for k in judged if k not in ("answers", "judgments")} == \
        {k: v for k, v in judged.items() if k not in ("answers", "judgments")}
    assert kept["judgments"].startswith(moved) and os.path.exists(kept["judgments"])
    # judgments made with another judge length are not mixed with new ones
    res = _eval("mtbench", moved, "--mtbench_questions", "2", "--max_new_tokens", "4", "--judge", "hf",
                "--judge_model", "tiny-random-llama", "--judge_max_new_tokens", "8", "--judge_retries", "1")
    assert res.returncode == 2 and "judge_max_new_tokens: file 4 vs now 8" in res.stderr


def test_answer_file_is_named_once_per_evaluation_folder(tmp_path):
    """FastChat reads model_answer/*.jsonl: a hub-style id gets no sub-folder, and the name an
    evaluation folder started with is kept, so a moved or renamed model resumes its answers."""
    out = str(tmp_path / "mt")
    res = _eval("mtbench", out, "--mtbench_questions", "1", "--max_new_tokens", "2", "--model_id", "org/my-model")
    assert res.returncode == 0, res.stderr[-3000:]
    res = _eval("mtbench", out, "--mtbench_questions", "1", "--max_new_tokens", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert os.listdir(os.path.join(out, "mtbench", "model_answer")) == ["org_my-model.jsonl"]
    assert json.load(open(os.path.join(out, "evaluated_model.json")))["model_id"] == "org_my-model"


def test_bad_eval_requests_are_clear(tmp_path):
    res = _eval("alpaca", str(tmp_path / "a"))
    assert res.returncode == 2 and "error: task alpaca needs alpaca_file" in res.stderr and "Traceback" not in res.stderr
    res = _eval("rec", str(tmp_path / "b"), "--dataset", str(tmp_path / "missing.jsonl"))
    assert res.returncode == 2 and "needs an interaction log" in res.stderr


def test_alpaca_outputs_in_alpaca_eval_format(tmp_path):
    prompts = tmp_path / "alpaca_eval.json"
    prompts.write_text(json.dumps([{"instruction": "Name a colour.", "dataset": "helpful_base", "output": "x",
                                    "generator": "gpt4"}, {"instruction": "Say hi."}]))
    out = str(tmp_path / "al")
    res = _eval("alpaca", out, "--alpaca_file", str(prompts), "--max_new_tokens", "4")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.load(open(os.path.join(out, "alpaca", "model_outputs.json")))
    assert [r["instruction"] for r in rows] == ["Name a colour.", "Say hi."]
    assert [r["dataset"] for r in rows] == ["helpful_base", ""]
    assert all(r["generator"] == "tiny-random-llama" and isinstance(r["output"], str) for r in rows)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok"}\n{"prompt": "no instruction"}\n')
    res = _eval("alpaca", str(tmp_path / "al2"), "--alpaca_file", str(bad))
    assert res.returncode == 2 and "row 1: needs a non-empty string field 'instruction'" in res.stderr


def test_an_evaluation_folder_belongs_to_one_model(tmp_path):
    out = tmp_path / "ev"
    out.mkdir()
    (out / "evaluated_model.json").write_text(json.dumps({"model": "/runs/other", "model_fingerprint": "abc"}))
    res = _eval("mtbench", str(out), "--mtbench_questions", "1", "--max_new_tokens", "2")
    assert res.returncode == 2 and "holds results of another model (/runs/other)" in res.stderr
    assert not (out / "mtbench").exists()
    res = _eval("rec", str(out), "--tasks", "margin")
    assert res.returncode == 2 and "runs one task" in res.stderr


def test_delta_margin_hand_computed():
    """desirable before -10, -12 (mean -11), after -9, -11 (mean -10); undesirable before -20
    (mean -20), after -24: margin before 9, after 14, Δ +5; Δ log p desirable +1, undesirable -4."""
    import pytest

    from pfo.evaluation import delta_margin

    r = delta_margin([-10, -12, -20], [-9, -11, -24], [1, 1, 0])
    assert r == {"num_desirable": 2, "num_undesirable": 1, "margin_before": 9.0, "margin_after": 14.0,
                 "delta_margin": 5.0, "logp_desirable_before": -11.0, "logp_desirable_after": -10.0,
                 "delta_logp_desirable": 1.0, "logp_undesirable_before": -20.0, "logp_undesirable_after": -24.0,
                 "delta_logp_undesirable": -4.0}
    with pytest.raises(ValueError, match="both classes"):
        delta_margin([-1, -2], [-1, -2], [1, 1])
