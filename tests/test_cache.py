"""Arrow cache: round trip, refusal of mismatched manifests, corrupted shards, missing rows."""
import json
import os

import numpy as np
import pytest

from pfo import cache as C


def make_cache(d, n=10, shard_size=4, fields=None):
    ids = [f"ex{i}" for i in range(n)]
    hashes = [f"h{i}" for i in range(n)]
    fields = fields or {"tokenizer": "tok1", "data_train": C.data_fingerprint(ids, hashes), "data_eval": "e",
                        "max_length": 128, "truncation": "completion_right", "dtype": "float32",
                        "kl_pairs": True, "seed": 0}
    shards = []
    for k, (lo, hi) in enumerate(C.shard_ranges(n, shard_size)):
        path = os.path.join(d, C.shard_name("train", k))
        C.write_shard(path, {
            "example_id": ids[lo:hi], "token_hash": hashes[lo:hi], "desirable": [i % 2 == 0 for i in range(lo, hi)],
            "ref_logp": [-float(i) - 0.25 for i in range(lo, hi)], "kl_partner_id": [f"ex{(i + 1) % n}" for i in range(lo, hi)],
            "kl_token_hash": [f"k{i}" for i in range(lo, hi)], "ref_kl_logp": [-2.0 * i for i in range(lo, hi)]})
        shards.append({"file": C.shard_name("train", k), "rows": hi - lo, "sha256": C.sha256_file(path)})
    C.write_json(os.path.join(d, "manifest.json"), {**fields, "format_version": C.FORMAT_VERSION,
                                                     "splits": {"train": {"num_rows": n, "shards": shards}}})
    return ids, hashes, fields


def test_round_trip_any_order(tmp_path):
    ids, hashes, fields = make_cache(str(tmp_path))
    cache = C.ReferenceCache(str(tmp_path))
    cache.check(fields, "rebuild")
    order = [7, 0, 3, 9, 1, 2, 4, 5, 6, 8]
    rows = cache.rows("train", [ids[i] for i in order], [hashes[i] for i in order])
    np.testing.assert_array_equal(rows.ref_logp, [-i - 0.25 for i in order])
    np.testing.assert_array_equal(rows.ref_kl_logp, [-2.0 * i for i in order])
    assert rows.kl_partner_id == [f"ex{(i + 1) % 10}" for i in order]
    assert rows.desirable.tolist() == [i % 2 == 0 for i in order]


@pytest.mark.parametrize("field, value", [("tokenizer", "tok2"), ("max_length", 256), ("data_train", "other")])
def test_mismatched_manifest_refused_naming_field(tmp_path, field, value):
    _, _, fields = make_cache(str(tmp_path))
    cache = C.ReferenceCache(str(tmp_path))
    with pytest.raises(C.CacheError, match=rf"(?s){field}: cache has .* this run has .*Rebuild it with:\n  do-this"):
        cache.check({**fields, field: value}, "do-this")


def test_corrupted_shard_refused_naming_shard(tmp_path):
    make_cache(str(tmp_path))
    path = os.path.join(str(tmp_path), "train-00001.arrow")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(C.CacheError, match="shard train-00001.arrow .* corrupted"):
        C.ReferenceCache(str(tmp_path))


def test_missing_extra_and_retokenised_examples_are_errors(tmp_path):
    ids, hashes, _ = make_cache(str(tmp_path))
    cache = C.ReferenceCache(str(tmp_path))
    with pytest.raises(C.CacheError, match="not in the cache"):
        cache.rows("train", ids + ["new"], hashes + ["hnew"])
    with pytest.raises(C.CacheError, match="does not use"):
        cache.rows("train", ids[:-1], hashes[:-1])
    with pytest.raises(C.CacheError, match="tokenised differently"):
        cache.rows("train", ids, hashes[:-1] + ["changed"])


def test_unfinished_cache_is_not_read(tmp_path):
    C.write_json(os.path.join(str(tmp_path), "pending.json"), {"tokenizer": "x"})
    with pytest.raises(C.CacheError, match="not finished"):
        C.ReferenceCache(str(tmp_path))


def test_atomic_writes_leave_no_temp_files(tmp_path):
    make_cache(str(tmp_path))
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]
    assert json.load(open(tmp_path / "manifest.json"))["splits"]["train"]["num_rows"] == 10
