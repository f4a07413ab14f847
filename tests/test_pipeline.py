"""End to end: run_all.sh --preset smoke --num-ranks 2 (real ZeRO-3 over gloo, 2 processes),
then check what it produced against independent computations."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(**extra):
    env = dict(os.environ, PFO_PYTHON=sys.executable, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", **extra)
    env.setdefault("TORCH_EXTENSIONS_DIR", os.path.expanduser("~/.cache/pfo/torch_extensions"))
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_status(stage, ranks, *args, fault=None):
    """Run one stage through scripts/launch.sh (the runners' launcher); PFO_FAULT injects a fault."""
    env = _env(**({"PFO_FAULT": fault} if fault else {}))
    cmd = f'source scripts/env.sh; source scripts/launch.sh; pfo_launch {stage} {ranks} "$@"'
    return subprocess.run(["bash", "-c", cmd, "launch", *args], cwd=ROOT, env=env, capture_output=True, text=True)


def _launch(stage, ranks, *args):
    res = _launch_status(stage, ranks, *args)
    assert res.returncode == 0, f"{stage} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"


def _log(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("smoke"))
    subprocess.run(["bash", "run_all.sh", "--no-install", "--preset", "smoke", "--num-ranks", "2",
                    "--output-dir", out], cwd=ROOT, env=_env(), check=True)
    return out


def test_pipeline_outputs(run):
    from transformers import AutoModelForCausalLM

    for stage in ("sft", "align"):
        model = AutoModelForCausalLM.from_pretrained(os.path.join(run, stage, "final"))
        assert sum(p.numel() for p in model.parameters()) > 3_000_000
        info = json.load(open(os.path.join(run, stage, "run_info.json")))
        # ZeRO-3 really partitioned every parameter across the 2 ranks
        assert info["world_size"] == 2 and info["zero_stage"] == 3
        assert info["num_partitioned"] == info["num_params"]
        assert info["numel_this_rank"] <= info["numel_total"] / 2 + 2 * info["num_params"]
    log = _log(os.path.join(run, "align", "log.jsonl"))
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert log[0]["loss"] == pytest.approx(0.0, abs=1e-4)  # policy == reference at step 1: r = 0
    for key in ("reward_desirable", "reward_undesirable", "margin", "logp_desirable", "logp_undesirable",
                "lr", "tokens_per_s"):
        assert all(np.isfinite(r[key]) for r in log), key
    dm = json.load(open(os.path.join(run, "eval", "delta_margin.json")))
    assert dm["split"] == "train" and dm["num_desirable"] == dm["num_undesirable"] == 16  # all 32 cached
    assert dm["delta_margin"] == pytest.approx(dm["margin_after"] - dm["margin_before"])
    rec = json.load(open(os.path.join(run, "eval", "rec_metrics.json")))
    assert rec["num_users"] == 4 and rec["decoding"]["num_return_sequences"] == 3
    assert 0 <= rec["hit_rate@5"] <= rec["hit_rate@10"] <= 1 and 0 < rec["div_ratio"] <= 1
    manifest = json.load(open(os.path.join(run, "ref_cache", "manifest.json")))
    assert manifest["splits"]["train"]["num_rows"] == 32 and len(manifest["splits"]["train"]["shards"]) == 2


def test_cached_reference_equals_on_the_fly(run):
    from pfo.cache import ReferenceCache
    from pfo.config import load_stage_config
    from pfo.data import prepare_feedback
    from pfo.logprobs import SequenceLogProbs, score
    from pfo.models import load_model, load_tokenizer

    cfg = load_stage_config("precompute", ["--config", "smoke", "--output_dir", run])
    tok = load_tokenizer(cfg.ref_model)
    fset = prepare_feedback(cfg, tok, kl_pairs=True)
    rows = ReferenceCache(cfg.cache_dir).rows("train", fset.ids("train"), fset.token_hashes("train"))
    # the plain head path, no DeepSpeed, a different batch size: the cache was written by the
    # fused path under ZeRO-3 inference, so this cross-checks both
    model = SequenceLogProbs(load_model(cfg.ref_model).eval(), fused=False)
    fresh = score(model, [t for _, t in fset.train], tok.pad_token_id, batch_size=5)
    fresh_kl = score(model, [t for _, t in fset.kl], tok.pad_token_id, batch_size=3)
    np.testing.assert_allclose(rows.ref_logp, fresh, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(rows.ref_kl_logp, fresh_kl, rtol=1e-5, atol=1e-4)
    assert rows.kl_partner_id == [p for p, _ in fset.kl]


def test_margin_before_from_a_model_equals_the_cached_reference(run, tmp_path):
    """Scoring the SFT model here (the "before" of --margin_before) reproduces the log-probs the
    reference cache holds for the same sampled examples, so both ways give the same Δ-margin."""
    out = str(tmp_path / "m")
    res = subprocess.run([sys.executable, "-m", "pfo.cli", "eval", "margin", "--config", "smoke", "--output_dir", run,
                          "--margin_before", os.path.join(run, "sft", "final"), "--margin_examples", "20",
                          "--output", out], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    cached = json.load(open(os.path.join(run, "eval", "margin_logps.json")))
    scored = json.load(open(os.path.join(out, "margin_logps.json")))
    assert len(scored["ids"]) == 20 and set(scored["ids"]) < set(cached["ids"])
    ref = dict(zip(cached["ids"], cached["before"]))
    after = dict(zip(cached["ids"], cached["after"]))
    np.testing.assert_allclose(scored["before"], [ref[i] for i in scored["ids"]], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(scored["after"], [after[i] for i in scored["ids"]], rtol=1e-5, atol=1e-4)


def test_compare_report(run):
    """run_all.sh --compare on the finished smoke run: SFT and precompute resume (nothing redone),
    two methods are aligned from them and the report tabulates what the evaluations wrote."""
    res = subprocess.run(["bash", "run_all.sh", "--no-install", "--preset", "smoke", "--num-ranks", "2",
                          "--output-dir", run, "--compare", "--methods", "pfo,kto"],
                         cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    cmp = os.path.join(run, "compare")
    text = open(os.path.join(cmp, "report.md")).read()
    for label in ("sft", "pfo", "kto"):
        rec = json.load(open(os.path.join(cmp, label, "eval", "rec_metrics.json")))
        dm = json.load(open(os.path.join(cmp, label, "eval", "delta_margin.json")))
        assert (f"| {label} | {rec['hit_rate@5']:.4f}/{rec['hit_rate@10']:.4f} | {rec['div_ratio']:.4f} | 4 "
                f"| {rec['num_recommendations']}/12 |") in text
        assert f"| {label} | {dm['margin_before']:.3f} | {dm['margin_after']:.3f} | {dm['delta_margin']:+.3f} |" in text
    # the SFT model is the reference: scored here, it reproduces the cached log-probs
    assert json.load(open(os.path.join(cmp, "sft", "eval", "delta_margin.json")))["delta_margin"] == \
        pytest.approx(0.0, abs=1e-3)
    kto = _log(os.path.join(cmp, "kto", "align", "log.jsonl"))
    assert len(kto) == 4 and kto != _log(os.path.join(cmp, "pfo", "align", "log.jsonl"))
    assert "--compare" in text and "training_dynamics.png" in text
    assert os.path.getsize(os.path.join(cmp, "training_dynamics.png")) > 10_000


KEYS = ("loss", "margin", "logp_desirable", "logp_undesirable", "grad_norm")


def _same_run(a, b):
    """Per-step logs agree. grad_norm is the norm of the full reduced gradient: a missing
    world-size factor or a per-rank normaliser changes it, even where Adam's update hides it."""
    assert len(a) == len(b) == 4
    return all(ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-6) for ra, rb in zip(a, b) for k in KEYS)


@pytest.fixture(scope="module")
def one_rank_plain(run):
    """Reference: 1 rank, the plain (unfused) log-prob path, the whole global batch at once."""
    out = os.path.join(run, "align-1rank-plain")
    _launch("align", 1, "--config", "smoke", "--output_dir", run, "--output", out, "--logprobs", "plain")
    return out


def test_two_ranks_fused_match_one_rank_plain(run, one_rank_plain):
    """Same SFT model, cache and global batches: the 2-rank ZeRO-3 fused run's losses, gradient norms
    and final parameters equal the 1-rank plain run's."""
    from transformers import AutoModelForCausalLM

    a, b = _log(os.path.join(run, "align", "log.jsonl")), _log(os.path.join(one_rank_plain, "log.jsonl"))
    assert _same_run(a, b), (a, b)
    m2 = AutoModelForCausalLM.from_pretrained(os.path.join(run, "align", "final")).state_dict()
    m1 = AutoModelForCausalLM.from_pretrained(os.path.join(one_rank_plain, "final")).state_dict()
    sft = AutoModelForCausalLM.from_pretrained(os.path.join(run, "sft", "final")).state_dict()
    for k in m1:
        update, diff = (m1[k] - sft[k]).abs(), (m2[k] - m1[k]).abs()
        assert update.mean() > 1e-4, k  # training really moved every tensor ...
        # ... and the same way on 1 and 2 ranks. Adam divides by sqrt(v), so float noise in
        # near-zero gradient entries can move single elements by up to ~lr; bound those
        # relative to the update, and the mean difference tightly.
        assert diff.max() <= 0.05 * update.max(), k
        assert diff.mean() <= 1e-4 * update.mean(), k


def test_global_normalizer_with_accumulation_matches_one_rank(run, one_rank_plain):
    """normalizer=global, 2 ranks x 2 accumulation micro-batches == 1 rank on the whole batch;
    normalizer=micro (per micro-batch, as public trainers do) measurably differs."""
    ref = _log(os.path.join(one_rank_plain, "log.jsonl"))
    glob = os.path.join(run, "align-2x2-global")
    _launch("align", 2, "--config", "smoke", "--output_dir", run, "--output", glob, "--grad_accum", "2")
    assert _same_run(_log(os.path.join(glob, "log.jsonl")), ref)
    micro = os.path.join(run, "align-2x2-micro")
    _launch("align", 2, "--config", "smoke", "--output_dir", run, "--output", micro, "--grad_accum", "2",
            "--normalizer", "micro")
    assert not _same_run(_log(os.path.join(micro, "log.jsonl")), ref)


def test_ema_normalizer_runs_and_starts_exact(run):
    """normalizer=ema on 2 ranks: the first step's bias-corrected estimate is the exact global
    batch value, so step 1 equals the global run; afterwards it is a running estimate."""
    ema = os.path.join(run, "align-ema")
    _launch("align", 2, "--config", "smoke", "--output_dir", run, "--output", ema, "--normalizer", "ema")
    a, b = _log(os.path.join(ema, "log.jsonl")), _log(os.path.join(run, "align", "log.jsonl"))
    assert len(a) == 4 and all(np.isfinite(r["loss"]) and np.isfinite(r["grad_norm"]) for r in a)
    assert a[0]["grad_norm"] == pytest.approx(b[0]["grad_norm"], rel=1e-4)


def test_align_never_constructs_a_reference_model(run, tmp_path):
    report = str(tmp_path / "models.json")
    env = _env(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "helpers", "align_counting_models.py"), report,
                    "--config", "smoke", "--output_dir", run, "--output", str(tmp_path / "align"), "--max_steps", "1",
                    "--loss", "kto"],  # KTO: the loss that also needs mismatched-pair reference log-probs
                   cwd=ROOT, env=env, check=True)
    import glob
    for leftover in glob.glob(f"/dev/shm/deepspeed_allreduce_buffer_*_{env['MASTER_PORT']}_*"):
        os.remove(leftover)  # launched without scripts/launch.sh, so clean DeepSpeed's shm buffer here
    seen = json.load(open(report))
    # one causal LM (the policy; its LlamaModel backbone is a PreTrainedModel too), nothing else
    assert sorted(seen["constructed"]) == ["LlamaForCausalLM", "LlamaModel"]
    assert seen["loaded"] == [os.path.abspath(os.path.join(run, "sft", "final"))]


# ----------------------------------------------------------------------------- faults and resume

def _shards(cache_dir):
    manifest = json.load(open(os.path.join(cache_dir, "manifest.json")))
    return {split: [(s["file"], s["rows"], s["sha256"]) for s in info["shards"]]
            for split, info in manifest["splits"].items()}


@pytest.fixture(scope="module")
def small_shard_cache(run):
    """An uninterrupted 1-rank precompute with 4-row shards (12 shards)."""
    out = os.path.join(run, "cache-1rank")
    _launch("precompute_ref", 1, "--config", "smoke", "--output_dir", run, "--cache_dir", out, "--shard_size", "4")
    return out


def test_precompute_killed_at_several_points_resumes_to_identical_cache(run, small_shard_cache):
    cache = os.path.join(run, "cache-killed")
    args = ("--config", "smoke", "--output_dir", run, "--cache_dir", cache, "--shard_size", "4")
    # SIGKILL right after the 2nd shard, then between a shard's rename and its checksum sidecar
    # (a torn state), then after 3 more shards; each rerun reuses what is complete.
    for fault in ("after_shard:2", "before_sidecar:2", "after_shard:3"):
        res = _launch_status("precompute_ref", 1, *args, fault=fault)
        assert res.returncode != 0 and not os.path.exists(os.path.join(cache, "manifest.json"))
    with pytest.raises(Exception, match="not finished"):
        from pfo.cache import ReferenceCache
        ReferenceCache(cache)
    res = _launch_status("precompute_ref", 1, *args)
    assert res.returncode == 0, res.stderr[-2000:]
    # kept: 2 (first run) + 1 (second run; its 2nd shard was torn and is recomputed) + 3 (third run)
    assert "6 shard(s) to compute (6 reused)" in res.stdout
    assert _shards(cache) == _shards(small_shard_cache)  # byte-identical shards


def test_one_and_two_rank_caches_identical(run, small_shard_cache):
    two = os.path.join(run, "cache-2rank")
    _launch("precompute_ref", 2, "--config", "smoke", "--output_dir", run, "--cache_dir", two, "--shard_size", "4")
    assert _shards(two) == _shards(small_shard_cache)


def test_align_sigterm_and_sigkill_resume_to_identical_losses(run, one_rank_plain):
    out = os.path.join(run, "align-faults")
    args = ("--config", "smoke", "--output_dir", run, "--output", out, "--logprobs", "plain", "--save_every", "1")
    res = _launch_status("align", 1, *args, fault="step:2:SIGTERM")  # SLURM's pre-timeout signal
    assert res.returncode != 0 and "SIGTERM: checkpointed" in res.stdout, res.stdout[-2000:]
    res = _launch_status("align", 1, *args, fault="after_checkpoint:3")  # SIGKILL after step 3
    assert res.returncode != 0 and "resumed align[pfo]" in res.stdout
    res = _launch_status("align", 1, *args)
    assert res.returncode == 0, res.stderr[-2000:]
    got, ref = _log(os.path.join(out, "log.jsonl")), _log(os.path.join(one_rank_plain, "log.jsonl"))
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for a, b in zip(got, ref):
        for key in KEYS + ("lr",):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (a["step"], key)


def test_cache_refused_when_settings_change(run, tmp_path):
    base = ("--config", "smoke", "--output_dir", run, "--output", str(tmp_path / "a"), "--max_steps", "1")
    res = _launch_status("align", 1, *base, "--max_length", "100")
    assert res.returncode != 0
    assert "max_length: cache has 128, this run has 100" in res.stderr and "Rebuild it with" in res.stderr
    # a tokenizer whose chat template differs
    tok_dir = tmp_path / "tok"
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(os.path.join(run, "sft", "final"))
    tok.chat_template = tok.chat_template.replace("<|im_start|>", "<|im_start|> ")
    tok.save_pretrained(tok_dir)
    res = _launch_status("align", 1, *base, "--tokenizer", str(tok_dir))
    assert res.returncode != 0 and "tokenizer: cache has" in res.stderr


def test_cache_refused_when_one_data_row_changes(run, tmp_path):
    rows = [{"prompt": f"Question {i}?", "completion": f"Answer {i}.", "label": i % 2 == 0} for i in range(24)]
    data = tmp_path / "fb.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache = str(tmp_path / "cache")
    common = ("--config", "smoke", "--output_dir", run, "--dataset", str(data), "--eval_fraction", "0.2",
              "--cache_dir", cache)
    _launch("precompute_ref", 1, *common)
    rows[5]["completion"] = "A different answer."
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = _launch_status("align", 1, *common, "--output", str(tmp_path / "a"), "--max_steps", "1")
    assert res.returncode != 0 and "data_" in res.stderr and "cache has" in res.stderr, res.stderr[-1500:]


def test_cache_cli_inspect_and_verify(run, small_shard_cache, tmp_path):
    import shutil

    cli = [sys.executable, "-m", "pfo.cli", "cache"]
    out = subprocess.run(cli + ["inspect", small_shard_cache], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "split train: 32 rows in 8 shard(s)" in out.stdout and "ref_logp desirable" in out.stdout
    ok = subprocess.run(cli + ["verify", small_shard_cache], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and "all shards intact" in ok.stdout
    broken = str(tmp_path / "broken")
    shutil.copytree(small_shard_cache, broken)
    path = os.path.join(broken, "train-00003.arrow")
    data = bytearray(open(path, "rb").read())
    data[100] ^= 1
    open(path, "wb").write(bytes(data))
    bad = subprocess.run(cli + ["verify", broken], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1 and "FAIL train-00003.arrow" in bad.stdout


@pytest.mark.parametrize("ds_config", ["zero2", "zero3_offload"])
def test_other_shipped_ds_configs_train_the_same(run, ds_config):
    """ZeRO-2 and ZeRO-3 with CPU offload (2 ranks) give the same per-step losses and gradient
    norms as the default ZeRO-3 run."""
    out = os.path.join(run, f"align-{ds_config}")
    _launch("align", 2, "--config", "smoke", "--output_dir", run, "--output", out,
            "--ds_config", f"ds_configs/{ds_config}.json")
    assert _same_run(_log(os.path.join(out, "log.jsonl")), _log(os.path.join(run, "align", "log.jsonl")))
