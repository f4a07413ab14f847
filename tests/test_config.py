"""Every shipped preset parses for every stage; overrides and errors behave."""
import glob
import os

import pytest

from pfo.config import PRESET_DIR, STAGES, ConfigError, load_stage_config, stage_overrides

PRESETS = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(PRESET_DIR, "*.yaml")))


def test_presets_exist():
    assert {"smoke", "cpu-demo", "paper"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_preset_parses(preset, stage):
    cfg = load_stage_config(stage, ["--config", preset])
    assert cfg.output_dir


def test_feedback_section_shared_by_precompute_align_evaluate():
    a = load_stage_config("align", ["--config", "cpu-demo"])
    p = load_stage_config("precompute", ["--config", "cpu-demo"])
    e = load_stage_config("evaluate", ["--config", "cpu-demo"])
    assert (a.dataset, a.max_examples, a.history_len) == (p.dataset, p.max_examples, p.history_len) \
        == (e.dataset, e.max_examples, e.history_len)
    assert a.policy_init == p.ref_model == os.path.join(a.output_dir, "sft", "final")


def test_paper_preset_matches_appendix_b():
    a = load_stage_config("align", ["--config", "paper"])
    assert (a.batch_size, a.lr, a.warmup_ratio, a.lambda_w, a.lambda_l) == (128, 1e-6, 0.1, 1.0, 1.0)
    assert a.beta in (0.01, 0.05, 0.1)


def test_cli_overrides_and_types():
    cfg = load_stage_config("align", ["--config", "smoke", "--loss", "kto", "--beta", "0.05", "--max-steps", "2"])
    assert (cfg.loss, cfg.beta, cfg.max_steps) == ("kto", 0.05, 2)


@pytest.mark.parametrize("argv, message", [
    (["--config", "smoke", "--loss", "dpo"], "loss must be one of"),
    (["--config", "smoke", "--beta", "abc"], "beta: expected float"),
    (["--config", "smoke", "--batch_size", "7"], "batch_size must be even"),
    (["--config", "nope"], "neither a file nor a preset"),
])
def test_bad_values_are_named(argv, message):
    with pytest.raises(ConfigError, match=message):
        load_stage_config("align", argv)


def test_unknown_yaml_key_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("align:\n  betta: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown AlignConfig option\(s\): \['betta'\]"):
        load_stage_config("align", ["--config", str(p)])


def test_run_all_overrides_route_to_stages():
    toks = ["loss=kto", "sft.lr=1e-5", "seed=3"]
    assert stage_overrides("align", toks) == ["--loss", "kto", "--seed", "3"]
    assert stage_overrides("sft", toks) == ["--lr", "1e-5", "--seed", "3"]
    with pytest.raises(ConfigError, match="no stage has an option"):
        stage_overrides("sft", ["bogus=1"])
