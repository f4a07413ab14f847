"""Figures and the comparison report, from result files written the way the stages write them."""
import json
import os

import pytest

from pfo.plots import PlotError, read_log, smooth
from pfo.report import Run, write_report


def _log(path, rows):
    with open(path, "w") as f:
        for i, (p, n, rp, rn) in enumerate(rows, 1):
            f.write(json.dumps({"step": i, "logp_desirable": p, "logp_undesirable": n,
                                "reward_desirable": rp, "reward_undesirable": rn, "loss": 0.0}) + "\n")
    return str(path)


def _run(tmp_path, label, hr5, dm, log_rows=None, users=32):
    d = tmp_path / label
    (d / "eval").mkdir(parents=True)
    (d / "eval" / "rec_metrics.json").write_text(json.dumps({
        "dataset": "movielens-100k", "num_users": users, "hit_rate@5": hr5, "hit_rate@10": hr5 * 2, "div_ratio": 0.25,
        "num_recommendations": 300,
        "decoding": {"mode": "beam", "num_return_sequences": 10, "seed": 0}}))
    (d / "eval" / "delta_margin.json").write_text(json.dumps({
        "split": "train", "before": "reference cache /x", "num_desirable": 64, "num_undesirable": 64,
        "margin_before": -1.0, "margin_after": -1.0 + dm, "delta_margin": dm,
        "delta_logp_desirable": -0.5, "delta_logp_undesirable": -0.5 - dm}))
    log = _log(d / "log.jsonl", log_rows) if log_rows else None
    return Run(label, str(d / "eval"), log)


def test_report_tables_and_figures(tmp_path):
    runs = [_run(tmp_path, "pfo", 0.0625, 1.25, [(-20, -30, 0.0, 0.0), (-21, -33, -0.1, -0.3)]),
            _run(tmp_path, "kto", 0.03125, 0.5, [(-20, -30, 0.0, 0.0), (-22, -31, None, -0.1)])]
    path = write_report(runs, str(tmp_path / "report"), title="T", preamble="Made by `cmd` in 12 s.")
    text = open(path).read()
    assert "Made by `cmd` in 12 s." in text
    assert "| pfo | 0.0625/0.1250 | 0.2500 | 32 | 300/320 |" in text
    assert "| kto | 0.0312/0.0625 | 0.2500 | 32 | 300/320 |" in text and "Not comparable" not in text
    assert "| pfo | -1.000 | 0.250 | +1.250 | -0.500 | -1.750 | 128 |" in text
    assert "MT-Bench" not in text  # no MT-Bench results, no section
    for png in ("training_dynamics.png", "delta_margin.png"):
        with open(tmp_path / "report" / png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in text


def test_mtbench_section_and_missing_results(tmp_path):
    run = _run(tmp_path, "pfo", 0.1, 1.0)
    os.remove(os.path.join(run.eval_dir, "delta_margin.json"))
    with open(os.path.join(run.eval_dir, "mtbench_scores.json"), "w") as f:
        json.dump({"judge": "openai:gpt-4", "average": 6.5, "turn_1": 7.0, "turn_2": 6.0, "scored": 159,
                   "expected": 160, "per_category": {"math": 3.25, "writing": 8.0}}, f)
    text = open(write_report([Run("pfo", run.eval_dir, run.eval_dir + "/../log.jsonl")], str(tmp_path / "r"))).read()
    assert "| pfo | 6.50 | 7.00 | 6.00 | 3.25 | 8.00 | 159/160 |" in text
    assert "- pfo: delta_margin.json" in text


def test_log_reading_and_smoothing(tmp_path):
    log = read_log(_log(tmp_path / "l.jsonl", [(-1, -2, 0.1, None), (-3, -2, 0.3, -0.2)]))
    assert log["margin"].tolist() == [1.0, -1.0]
    assert smooth(log["reward_undesirable"], 2).tolist()[1] == pytest.approx(-0.2)  # NaN (class absent) skipped
    assert smooth(log["logp_desirable"], 2).tolist() == [-1.0, -2.0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1}\n')
    with pytest.raises(PlotError, match=r"bad.jsonl:1: not an align log record"):
        read_log(str(bad))
    for text in ("null\n", "[1, 2]\n", '{"step": 1, "logp_desirable": null, "logp_undesirable": 1}\n'):
        bad.write_text(text)
        with pytest.raises(PlotError, match="not an align log record"):
            read_log(str(bad))


def test_a_torn_last_log_line_is_left_out_and_a_bad_log_costs_only_its_curve(tmp_path):
    """A run killed while writing its log leaves half a line: the curve stops before it. A log
    broken in the middle is an error for `pfo plot`, and in a report it is listed as missing while
    the tables and the other runs' curves are still written."""
    path = _log(tmp_path / "l.jsonl", [(-1, -2, 0.1, -0.1), (-3, -2, 0.3, -0.2)])
    with open(path, "a") as f:
        f.write('{"step": 3, "logp_desir')
    assert read_log(path)["step"].tolist() == [1, 2]
    broken = tmp_path / "broken.jsonl"
    broken.write_text(open(path).read().replace('"step": 1,', '"step": 1', 1) + "\n{}\n")
    with pytest.raises(PlotError, match="broken.jsonl:1: not an align log record"):
        read_log(str(broken))
    good, bad = _run(tmp_path, "pfo", 0.1, 1.0, log_rows=[(-1, -2, 0.1, -0.1)] * 3), _run(tmp_path, "kto", 0.1, 1.0)
    text = open(write_report([good, Run("kto", bad.eval_dir, str(broken))], str(tmp_path / "r"))).read()
    assert "| kto | 0.1000/0.2000 |" in text and "![training dynamics](training_dynamics.png)" in text
    assert "- kto: training dynamics (" in text and "broken.jsonl:1" in text


def test_no_results_is_an_error_not_an_empty_report(tmp_path):
    from pfo.report import ReportError

    with pytest.raises(ReportError, match="no evaluation results"):
        write_report([Run("x", str(tmp_path / "nothing"))], str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()
    # one run with results and one without: the empty one is listed as missing
    run = _run(tmp_path, "pfo", 0.1, 1.0)
    text = open(write_report([run, Run("ghost", str(tmp_path / "nothing"))], str(tmp_path / "r"))).read()
    assert "- ghost: no results at all in" in text and "| ghost | - | - | - | - |" in text


def test_runs_evaluated_differently_are_flagged(tmp_path):
    a, b = _run(tmp_path, "pfo", 0.1, 1.0), _run(tmp_path, "kto", 0.1, 1.0, users=16)
    for run, judge in ((a, "openai:gpt-4"), (b, None)):
        with open(os.path.join(run.eval_dir, "mtbench_scores.json"), "w") as f:
            json.dump({"judge": judge, "average": 5.0, "turn_1": 5.0, "turn_2": 5.0, "scored": 2, "expected": 2,
                       "num_questions": 1, "per_category": {"math": 5.0}}, f)
    text = open(write_report([a, b], str(tmp_path / "r"))).read()
    assert "**Not comparable: the runs differ in** `users`: pfo 32, kto 16." in text
    assert "- kto: MT-Bench answers not judged" in text and "| kto | 5.00" not in text
