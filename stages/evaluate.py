"""Quick evaluation after alignment: the Δ-margin (paper Fig. 5) on held-out examples.

    python stages/evaluate.py --config cpu-demo [--model DIR]

"Before" log-probs are the reference model's, read from the eval split of the stage-2 cache (the
reference is the starting policy); "after" log-probs are computed here with the aligned model,
single process. Writes <output>/delta_margin.json.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tqdm.auto import tqdm  # noqa: E402

from pfo.cache import CacheError, ReferenceCache, run_fields  # noqa: E402
from pfo.data import DataError, prepare_feedback  # noqa: E402
from pfo.evaluation import delta_margin  # noqa: E402
from pfo.logprobs import SequenceLogProbs, score  # noqa: E402
from pfo.models import load_model, load_tokenizer  # noqa: E402
from pfo.runtime import fail, say, start_stage  # noqa: E402
from pfo.tokenization import tokenizer_fingerprint  # noqa: E402
from pfo.training import atomic_write_text  # noqa: E402


def main(argv=None):
    cfg = start_stage("evaluate", argv, distributed=False)
    try:
        tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
        cache = ReferenceCache(cfg.cache_dir)
        fset = prepare_feedback(cfg, tokenizer, kl_pairs=False)
        expected = run_fields(cfg, tokenizer_fingerprint(tokenizer), fset)
        expected.pop("kl_pairs")
        cache.check(expected, rebuild_hint="rerun stages/precompute_ref.py with the same data settings")
        rows = cache.rows("eval", fset.ids("eval"), fset.token_hashes("eval"))
    except (DataError, CacheError, OSError, ValueError) as e:
        fail(str(e))
    model = load_model(cfg.model, cfg.dtype, cfg.attn_implementation).eval()
    items = [tok for _, tok in fset.eval]
    with tqdm(total=len(items), desc="Δ-margin (aligned model)", dynamic_ncols=True) as bar:
        after = score(SequenceLogProbs(model, cfg.logprobs == "fused", cfg.chunk_tokens or None), items, tokenizer.pad_token_id, cfg.batch_size, progress=bar)
    result = {"model": os.path.abspath(cfg.model), "cache": os.path.abspath(cfg.cache_dir),
              **delta_margin(rows.ref_logp, after, rows.desirable)}
    os.makedirs(cfg.output, exist_ok=True)
    path = os.path.join(cfg.output, "delta_margin.json")
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    say(f"Δ-margin on {len(items)} held-out examples: margin {result['margin_before']:.3f} -> "
        f"{result['margin_after']:.3f} (Δ {result['delta_margin']:+.3f}); "
        f"log p desirable {result['delta_logp_desirable']:+.3f}, undesirable {result['delta_logp_undesirable']:+.3f}")
    say(f"written: {path}")


if __name__ == "__main__":
    main()
