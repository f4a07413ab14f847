"""Resumable result files: reload, atomic rewrite, refusal of results made under other settings."""
import json

import pytest

from pfo.records import KeyedRecords, RecordsError


def test_records_persist_and_resume(tmp_path):
    path = str(tmp_path / "sub" / "answers.jsonl")
    store = KeyedRecords(path, key=lambda r: r["id"], settings={"model": "m1"})
    store.add([{"id": 1, "x": "a"}, {"id": 2, "x": "b"}])
    store.add([{"id": 2, "x": "B"}])  # replaced, not duplicated
    again = KeyedRecords(path, key=lambda r: r["id"], settings={"model": "m1"})
    assert len(again) == 2 and 1 in again and again.get(2)["x"] == "B"
    assert not list(tmp_path.glob("sub/*.tmp*"))  # the temp file was renamed into place
    lines = open(path).read().splitlines()
    assert [json.loads(line)["pfo_settings"] for line in lines] == [{"model": "m1"}] * 2


def test_other_settings_are_refused_with_the_difference_named(tmp_path):
    path = str(tmp_path / "recs.jsonl")
    KeyedRecords(path, key=lambda r: r["id"], settings={"model": "m1", "seed": 0}).add([{"id": 1}])
    with pytest.raises(RecordsError, match=r"model: file 'm1' vs now 'm2'") as e:
        KeyedRecords(path, key=lambda r: r["id"], settings={"model": "m2", "seed": 0})
    assert "seed" not in str(e.value)


def test_a_foreign_file_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": 1}\nnot json\n')
    with pytest.raises(RecordsError, match=r"x.jsonl:2"):
        KeyedRecords(str(path), key=lambda r: r["id"])


def test_training_log_on_resume_keeps_steps_up_to_the_checkpoint_and_drops_a_torn_line(tmp_path):
    """A stage killed mid-write leaves half a line; resuming from checkpoint step 2 keeps steps 1-2
    (those after it are redone) and must not crash on the torn line."""
    from pfo.training import JsonlLog

    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "lo')
    log = JsonlLog(str(path), resume_step=2)
    log.write({"step": 3, "loss": 0.33})
    assert [json.loads(line) for line in path.read_text().splitlines()] == \
        [{"step": 1, "loss": 0.1}, {"step": 2, "loss": 0.2}, {"step": 3, "loss": 0.33}]
