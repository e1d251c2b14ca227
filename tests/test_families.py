"""The registry of architecture families (verify/families): every bundled config has a family,
each family's closed form and buffers equal the meta-device module, the family-specific parts
(GPT-J's head bias, OPT's projections and +2 positions, Falcon's and BigCode's multi-query
attention) are counted exactly, config variants stay exact, a model_type outside the registry is
counted by introspection with a note, and the predictor's exact categories hold for the new
families on the fake backend, its training terms on every family's tiny config at widths,
depths, batches and lengths the derivation did not use."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
import sys
from functools import lru_cache

import pytest

from verify.build import build
from verify.cli import main, params_report
from verify.configs import bundled_names, from_dict, load_config, resolve, shape
from verify.families import FAMILIES, family_of
from verify.formulas import params as F
from verify.formulas.params import total
from verify.measure.memory import MemorySpec
from verify.measure.params import count
from verify.measure.sweeps import config_with, measure
from verify.predict.memory import covered, options_of, predict

NEW_TINY = ("tiny-gptj", "tiny-opt", "tiny-neox", "tiny-falcon", "tiny-falcon-new", "tiny-bigcode", "tiny-mistral",
            "tiny-phi", "tiny-gemma")


@lru_cache(maxsize=None)
def _built(name: str):
    """(Shape, ParamCount, buffer bytes) of a bundled model built on the meta device (fp32)."""
    config = load_config(name)
    model = build(config, device="meta")
    return shape(config), count(model), sum(b.numel() * b.element_size() for b in model.buffers())


def _variant(name: str, **fields):
    """(Shape, ParamCount) of a bundled config with `fields` replaced, on the meta device."""
    config = from_dict({**json.loads(resolve(name).read_text()), **fields}, name)
    return shape(config), count(build(config, device="meta"))


@pytest.mark.parametrize("name", bundled_names())
def test_every_bundled_model_belongs_to_a_registry_family(name):
    """Each bundled config's model_type is covered by a family, and its Shape names it."""
    s, _, _ = _built(name)
    assert family_of(s.model_type) is not None and s.family == family_of(s.model_type).name


def test_no_model_type_is_claimed_by_two_families():
    """The registry maps each model_type to one family, and each has a causal-LM class in transformers."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    types = [t for f in FAMILIES for t in f.model_types]
    assert len(types) == len(set(types))
    assert all(t in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES for t in types)


@pytest.mark.parametrize("name", bundled_names())
def test_family_buffers_equal_the_modules_buffers(name):
    """RoPE tables, GPT-J's per-layer sin/cos, BigCode's mask, Gemma's scale: the family's buffer bytes equal the module's (fp32 build)."""
    s, _, buffer_bytes = _built(name)
    assert total(family_of(s.model_type).buffers(s, 4)) == buffer_bytes


def test_gptj_head_bias_single_norm_and_bias_free_attention():
    """GPT-J: q, k, v, out_proj without biases (4h²), one LayerNorm per layer plus ln_f, an lm_head of V·h + V."""
    s, pc, _ = _built("gpt-j-6b")
    h, L, V = s.h, s.L, s.V
    assert pc.by_component["attention"] == L * 4 * h * h
    assert pc.by_component["norms"] == (L + 1) * 2 * h
    assert pc.by_component["output_head"] == V * h + V
    assert pc.by_component["mlp"] == L * (2 * h * s.ffn + s.ffn + h)


def test_gptj_model_card_total_counts_the_eight_mesh_transformer_shards():
    """The card's 6,053,381,344 is the JAX checkpoint summed over its 8 model-parallel shards: the
    module's count plus 7 more copies of every LayerNorm and fc_out bias and 8 embedding biases."""
    s, pc, _ = _built("gpt-j-6b")
    h, L, shards = s.h, s.L, 8
    replicated = (shards - 1) * ((L + 1) * 2 * h + L * h)  # LayerNorms, fc_out bias: one per shard in the checkpoint
    embedding_bias = shards * h  # the JAX embedding is a biased Linear per shard; the conversion folds it into wte
    assert pc.total + replicated + embedding_bias == 6_053_381_344


def test_opt_fc1_fc2_are_mlp_and_its_projections_and_positions_are_exact():
    """OPT-350M: fc1/fc2 under mlp, project_in/out 2·e·h, positions (N+2)·h, no final LayerNorm (post-LN), embedding V·e."""
    s, pc, _ = _built("opt-350m")
    h, L, e = s.h, s.L, s.embed_dim
    assert (e, s.final_norm, s.position_rows) == (512, False, s.max_positions + 2)
    assert pc.by_component["mlp"] == L * (2 * h * s.ffn + s.ffn + h)
    assert pc.by_component["embedding_projections"] == 2 * e * h
    assert pc.by_component["positions"] == (s.max_positions + 2) * h
    assert pc.by_component["embedding"] == s.V * e
    assert pc.by_component["norms"] == 2 * L * 2 * h


def test_opt_13b_has_a_final_norm_and_no_projections():
    """OPT-1.3B (pre-LN, e = h): 2L+1 LayerNorms and no project_in/out."""
    s, pc, _ = _built("opt-1.3b")
    assert s.final_norm and "embedding_projections" not in pc.by_component
    assert pc.by_component["norms"] == (2 * s.L + 1) * 2 * s.h


@pytest.mark.parametrize("name", ["falcon-7b", "tiny-falcon", "starcoderbase-1b", "tiny-bigcode"])
def test_multi_query_attention_keeps_one_key_value_head(name):
    """Falcon-7B and StarCoder's fused qkv is h × (h + 2·d_head): one key/value head."""
    s, pc, _ = _built(name)
    assert s.kv_heads == 1
    qkv_out = s.h + 2 * s.head_dim
    biases = qkv_out + s.h if s.attn_bias else 0
    assert pc.by_component["attention"] == s.L * (s.h * qkv_out + s.h * s.h + biases)


@pytest.mark.parametrize(
    "name,fields",
    [
        ("tiny-falcon", {"parallel_attn": False}),
        ("tiny-falcon", {"alibi": True, "bias": True}),
        ("tiny-falcon-new", {"num_ln_in_parallel_attn": 1}),
        ("tiny-opt", {"do_layer_norm_before": True, "word_embed_proj_dim": 64}),
        ("tiny-opt", {"layer_norm_elementwise_affine": False, "enable_bias": False, "tie_word_embeddings": False}),
        ("tiny-neox", {"attention_bias": False, "use_parallel_residual": False, "tie_word_embeddings": True}),
        ("tiny-bigcode", {"multi_query": False}),
        ("tiny-gptj", {"tie_word_embeddings": True}),
        ("tiny-phi", {"qk_layernorm": True}),
        ("tiny-gemma", {"attention_bias": True, "tie_word_embeddings": False}),
        ("tiny-llama", {"attention_bias": True, "mlp_bias": True}),
        ("tiny-gpt2", {"tie_word_embeddings": False, "n_inner": 100}),
    ],
    ids=lambda v: v if isinstance(v, str) else ",".join(f"{k}={x}" for k, x in v.items()),
)
def test_config_options_a_family_reads_stay_exact(name, fields):
    """Options that change what a block holds (norm count, biases, ALiBi, tying, widths) keep closed form, P7 bridge and count equal."""
    s, pc = _variant(name, **fields)
    assert F.total(F.exact(s)) == pc.total
    assert F.total(F.total_full(s.L, s.h, s.V)) + sum(F.p7_corrections(s).values()) == pc.total
    assert pc.by_component.get("other", 0) == 0


# --- a model_type the registry does not cover ---


OLMO = {"model_type": "olmo", "hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 256, "max_position_embeddings": 128, "bos_token_id": 0,
        "eos_token_id": 0, "pad_token_id": 0, "tie_word_embeddings": False}


def test_unknown_family_gets_the_generic_sizes_and_no_block_fields():
    """OLMo is not in the registry: its Shape has h, L, V, heads, ... from the config and None for what the blocks hold."""
    s = shape(from_dict(OLMO, "olmo"))
    assert s.family is None and family_of("olmo") is None
    assert (s.h, s.L, s.V, s.heads, s.kv_heads, s.head_dim, s.ffn) == (64, 2, 256, 4, 4, 16, 176)
    assert s.norm is None and s.gated_mlp is None and s.norms_per_layer is None
    with pytest.raises(ValueError, match="not in the registry"):
        F.exact(s)


def test_unknown_family_is_counted_by_introspection_with_a_note(tmp_path, capsys):
    """`verify params` on an OLMo config: the exact introspected count, "family": null, a note, no formulas; the text says it too."""
    (tmp_path / "config.json").write_text(json.dumps(OLMO))
    r = params_report(str(tmp_path))
    config = load_config(str(tmp_path))
    assert r["family"] is None and r["formulas"] is None
    assert r["note"].startswith("family olmo is not in the registry: counts are by introspection alone")
    assert r["total"] == count(build(config, device="meta")).total
    assert main(["params", str(tmp_path)]) == 0
    assert "family olmo is not in the registry" in capsys.readouterr().out
    assert "not in the registry" in covered(shape(config), MemorySpec(model=str(tmp_path)))


def test_families_and_formulas_import_no_torch():
    """verify/families and verify/formulas are pure: importing them loads neither torch nor transformers."""
    code = ("import sys, verify.families, verify.formulas.params, verify.formulas.memory, verify.predict; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 0, r.stderr


# --- the predictor's exact categories on the new families (fake backend) ---


@pytest.mark.parametrize("name", NEW_TINY)
@pytest.mark.parametrize("mode", ["train", "generate"])
def test_predictor_exact_categories_hold_for_every_family(name, mode):
    """Params, buffers, grads, optimizer state (train) and KV cache (generate) equal the fake run's, whatever the family."""
    config = config_with(name)
    s = shape(config)
    spec = MemorySpec(model=name, mode=mode, dtype="bf16", batch=2, seq=24, new_tokens=3, attn="eager")
    pr = predict(s, spec, len(list(build(config, device="meta").parameters())))
    r = measure(spec)
    measured = {"params": r.params_bytes, "buffers": r.buffers_bytes, "grads": r.grads_bytes,
                "optimizer": r.optimizer_bytes, "kv_cache": r.kv_cache_bytes}
    for category in ("params", "buffers", "grads", "optimizer", "kv_cache"):
        if category in pr.terms:
            assert pr.total(category) == measured[category], category


def test_falcon_new_architecture_caches_every_head():
    """Falcon's new decoder architecture broadcasts k and v to all a heads before caching: the cache is a/n_kv times the GQA figure."""
    s = shape(config_with("tiny-falcon-new"))
    assert s.kv_cache_heads == s.heads == 4 * s.kv_heads


@pytest.mark.parametrize("seq,new_tokens", [(10, 3), (15, 3), (20, 5), (20, 1)])
def test_sliding_window_cache_keeps_the_last_window_once_decoding(seq, new_tokens):
    """Mistral's cache (window 16) holds min(S + new - 1, W) positions after a decoding step; the prefill alone keeps all S."""
    config = config_with("tiny-mistral")
    spec = MemorySpec(model="tiny-mistral", mode="generate", dtype="bf16", batch=1, seq=seq, new_tokens=new_tokens, attn="sdpa")
    assert predict(shape(config), spec, T=1).total("kv_cache") == measure(spec).kv_cache_bytes


def test_sliding_window_activations_are_exact_with_and_without_the_explicit_mask():
    """Mistral with S ≥ window: eager attention, and SDPA given transformers' explicit mask (k and v
    repeated to a heads, the mask made additive and kept), equal the trace to the byte; below the
    window SDPA runs causal without a mask."""
    config = config_with("tiny-mistral")
    s = shape(config)
    T = len(list(build(config, device="meta").parameters()))
    for spec in (MemorySpec(model="tiny-mistral", dtype="bf16", batch=2, seq=32, attn="eager"),
                 MemorySpec(model="tiny-mistral", dtype="bf16", batch=2, seq=16, attn="sdpa"),
                 MemorySpec(model="tiny-mistral", dtype="bf16", batch=2, seq=15, attn="sdpa")):
        assert covered(s, spec) is None
        assert predict(s, spec, T).total("activations") == measure(spec).activations_bytes


# --- the training terms on each family's tiny config, at widths the derivation did not use ---

OTHER_WIDTHS = {  # each family's tiny config with other widths, depth and vocabulary than its derivation's
    "tiny-llama-gqa": {"hidden_size": 80, "num_attention_heads": 10, "num_key_value_heads": 2, "intermediate_size": 136,
                       "vocab_size": 170, "num_hidden_layers": 3},
    "tiny-qwen2": {"hidden_size": 56, "num_attention_heads": 7, "num_key_value_heads": 1, "intermediate_size": 96,
                   "vocab_size": 150},
    "tiny-gpt2": {"n_embd": 40, "n_head": 5, "n_inner": 72, "vocab_size": 150, "n_layer": 3, "n_positions": 40},
    "tiny-opt": {"hidden_size": 40, "num_attention_heads": 5, "ffn_dim": 72, "vocab_size": 150, "num_hidden_layers": 3},
    "tiny-bloom": {"hidden_size": 40, "n_head": 5, "vocab_size": 150, "n_layer": 3},
    "tiny-neox": {"hidden_size": 40, "num_attention_heads": 5, "intermediate_size": 72, "vocab_size": 150,
                  "num_hidden_layers": 3},
    "tiny-falcon": {"hidden_size": 40, "num_attention_heads": 5, "ffn_hidden_size": 72, "vocab_size": 150, "num_hidden_layers": 3},
    "tiny-falcon-new": {"hidden_size": 64, "num_attention_heads": 8, "num_kv_heads": 2, "ffn_hidden_size": 100,
                        "vocab_size": 130, "num_hidden_layers": 3},
    "tiny-bigcode": {"n_embd": 40, "n_head": 5, "n_inner": 72, "vocab_size": 150, "n_layer": 3, "n_positions": 20},
    "tiny-gptj": {"n_embd": 40, "n_head": 5, "rotary_dim": 4, "n_inner": 72, "vocab_size": 150, "n_layer": 3, "n_positions": 20},
    "tiny-mixtral": {"hidden_size": 48, "num_attention_heads": 6, "num_key_value_heads": 2, "intermediate_size": 40,
                     "vocab_size": 150, "num_hidden_layers": 3},
}
STEPS = {  # (dtype, precision, batch, seq, attn, checkpointing, optimizer, loss)
    "bf16-sdpa-b1": ("bf16", "pure", 1, 9, "sdpa", False, "adamw", "ce"),
    "fp32-eager": ("fp32", "pure", 2, 6, "eager", False, "adamw", "ce"),
    "fp16-eager-sum": ("fp16", "pure", 2, 6, "eager", False, "adamw", "sum"),
    "bf16-eager-ckpt-sgd": ("bf16", "pure", 3, 5, "eager", True, "sgd", "ce"),
    "autocast-sdpa-ckpt": ("bf16", "mixed", 2, 6, "sdpa", True, "adamw", "ce"),
    "autocast-eager-b1-none": ("fp16", "mixed", 1, 7, "eager", False, "none", "ce"),
}


def _steps_for(name: str):
    for step, (dtype, precision, B, S, attn, ck, opt, loss) in STEPS.items():
        if name == "tiny-mixtral" and (dtype, precision) != ("bf16", "pure"):
            continue  # the fake backend's grouped_mm takes bf16 only
        if name in ("tiny-gptj", "tiny-bloom") and attn == "sdpa":
            attn = "eager"  # transformers has no SDPA path for GPT-J and BLOOM
        yield pytest.param(name, MemorySpec(model=name, dtype=dtype, precision=precision, batch=B, seq=S, attn=attn,
                                            checkpointing=ck, optimizer=opt, loss=loss), id=f"{name}-{step}")


@pytest.mark.parametrize("name,spec", [p for name in OTHER_WIDTHS for p in _steps_for(name)])
def test_training_terms_hold_at_other_widths(name, spec):
    """Every family's activations equal the trace to the byte and its peak is exact, in pure
    precision and under autocast, eager and SDPA, with and without checkpointing, B = 1 and B > 1,
    over optimizers and losses."""
    config = config_with(name, **OTHER_WIDTHS[name])
    s, opts = shape(config), options_of(config)
    assert covered(s, spec, opts) is None
    pr = predict(s, spec, len(list(build(config, device="meta").parameters())), opts)
    r = measure(spec, **OTHER_WIDTHS[name])
    assert pr.total("activations") == r.activations_bytes
    assert pr.traced_peak_bytes == r.traced_peak_bytes, (pr.peak_moment, pr.moments, r.peak_phase)
