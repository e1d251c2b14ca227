"""Parameter counts by introspection: bundled totals, per-component closed forms, tied weights,
the seed formulas on the seeds' own worked examples, and bad input."""

import json
from functools import lru_cache
from pathlib import Path

import pytest

from verify.build import build
from verify.configs import ConfigError, bundled_names, load_config, shape
from verify.formulas import params as F
from verify.measure.params import count

MODELS = Path(__file__).resolve().parent.parent / "models"

# Published totals of the real models (model cards / papers); a cross-check of the meta count.
PUBLISHED_EXACT = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "llama-7b": 6_738_415_616,
    "llama-13b": 13_015_864_320,
    "llama-33b": 32_528_943_616,
    "llama-65b": 65_285_660_672,
    "llama2-7b": 6_738_415_616,
    "llama2-70b": 68_976_648_192,
    "llama3-8b": 8_030_261_248,
    "tinyllama-1.1b": 1_100_048_384,
    "qwen2-0.5b": 494_032_768,
    "mixtral-8x7b": 46_702_792_704,
    "bloom-7b1": 7_069_016_064,
    "llama3-70b": 70_553_706_496,
    "llama3-405b": 405_853_388_800,
    "mistral-7b": 7_241_732_096,
    "opt-1.3b": 1_315_758_080,
    "opt-350m": 331_196_416,
    "gpt-neox-20b": 20_554_567_680,
    "falcon-7b": 6_921_720_704,  # the model card says 7B; the exact figure's source: models/README.md
    "starcoderbase-1b": 1_137_207_296,  # the model card says 1B; the exact figure's source: models/README.md
}
# Shaped configs whose totals are published only rounded: (rounded total, relative tolerance).
PUBLISHED_ROUNDED = {"gpt3-175b": (175e9, 0.005), "grok-1": (314e9, 0.01)}


@lru_cache(maxsize=None)
def _count(name):
    """(Shape, ParamCount) of a bundled model on the meta device, built once per test session."""
    config = load_config(name)
    return shape(config), count(build(config, device="meta"))


@pytest.mark.parametrize("name", sorted(PUBLISHED_EXACT))
def test_bundled_model_count_equals_its_published_total(name):
    """The meta-device count of each bundled real architecture equals its published total exactly."""
    _, pc = _count(name)
    assert pc.total == PUBLISHED_EXACT[name]


@pytest.mark.parametrize("name", sorted(PUBLISHED_ROUNDED))
def test_shaped_configs_land_on_their_rounded_published_totals(name):
    """GPT-3-175B- and Grok-1-shaped configs count within rounding of 175B and 314B."""
    total, tol = PUBLISHED_ROUNDED[name]
    _, pc = _count(name)
    assert abs(pc.total - total) / total <= tol


# the closed form's terms -> the introspected components they count
TERM_COMPONENTS = {
    "embedding Vh": ("embedding",),
    "positions Nh": ("positions",),
    "embedding projections": ("embedding_projections",),
    "attention": ("attention",),
    "mlp": ("mlp", "experts"),
    "router": ("router",),
    "norms": ("norms",),
    "output head": ("output_head",),
}


@pytest.mark.parametrize("name", bundled_names())
def test_exact_closed_form_equals_introspection_for_every_bundled_model(name):
    """The family's closed form sums to the counted total, each term equals its components' count, and no parameter is left in "other"."""
    s, pc = _count(name)
    terms = F.exact(s)
    assert F.total(terms) == pc.total
    comp = pc.by_component
    for term, value in terms.items():
        assert value == sum(comp.get(c, 0) for c in TERM_COMPONENTS[term]), term
    assert comp.get("other", 0) == 0


@pytest.mark.parametrize("name", bundled_names())
def test_p7_corrections_bridge_the_seed_formula_to_the_count(name):
    """L(12h²+4h)+Vh+2h plus the named missed terms equals the measured total, term by term."""
    s, pc = _count(name)
    assert F.total(F.total_full(s.L, s.h, s.V)) + sum(F.p7_corrections(s).values()) == pc.total


def test_gpt2_attention_with_biases_is_4h2_plus_4h_per_layer():
    """GPT-2's attention block holds c_attn (h×3h + 3h) and c_proj (h×h + h): 4h² + 4h."""
    s, pc = _count("gpt2")
    assert pc.by_component["attention"] == s.L * (4 * s.h * s.h + 4 * s.h)


def test_llama_swiglu_mlp_is_three_h_by_ffn_matrices():
    """LLaMA's MLP is gate, up (h×d_ff) and down (d_ff×h), no biases: 3·h·d_ff per layer."""
    s, pc = _count("llama-7b")
    assert pc.by_component["mlp"] == s.L * 3 * s.h * s.ffn


def test_gqa_key_value_projections_shrink_with_kv_heads():
    """Llama-2-70B's k and v projections are h × (n_kv·d_head) each: attention = 2h² + 2h·n_kv·d_head."""
    s, pc = _count("llama2-70b")
    assert s.kv_heads == 8
    assert pc.by_component["attention"] == s.L * (2 * s.h * s.h + 2 * s.h * s.kv_heads * s.head_dim)


def test_mixtral_experts_are_fused_and_counted_per_expert():
    """Mixtral's fused expert tensors hold E·3·h·d_ff per layer and the router h·E."""
    s, pc = _count("mixtral-8x7b")
    assert pc.by_component["experts"] == s.L * s.experts * 3 * s.h * s.ffn
    assert pc.by_component["router"] == s.L * s.h * s.experts


@pytest.mark.parametrize("name", ["gpt2", "qwen2-0.5b", "bloom-7b1"])
def test_tied_output_head_is_counted_once(name):
    """A tied head is the embedding Parameter itself: it appears in `tied` and adds nothing to the total."""
    s, pc = _count(name)
    assert s.tied and pc.tied
    assert "output_head" not in pc.by_component
    model = build(load_config(name), device="meta")
    every_tensor = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert every_tensor - pc.total == s.V * s.h


def test_untied_head_adds_vh():
    """LLaMA's lm_head is its own V×h matrix."""
    s, pc = _count("llama-7b")
    assert not pc.tied
    assert pc.by_component["output_head"] == s.V * s.h


def test_rope_is_a_buffer_not_a_parameter():
    """LLaMA has no position parameters; RoPE's inv_freq lives in buffers."""
    _, pc = _count("llama-7b")
    assert "positions" not in pc.by_component
    assert pc.buffers > 0


def test_counts_by_kind_equal_the_config_sizes():
    """GPT-2 by kind, from the sizes in its config file: matrices V·h + N·h + 12·L·h² (wte, wpe,
    c_attn, c_proj, c_fc, mlp c_proj), biases 9·L·h, and (2L+1)·h LayerNorm scales and shifts."""
    cfg = json.loads((MODELS / "gpt2.json").read_text())
    h, L, V, N = cfg["n_embd"], cfg["n_layer"], cfg["vocab_size"], cfg["n_positions"]
    _, pc = _count("gpt2")
    assert pc.by_kind == {"matrix": V * h + N * h + 12 * L * h * h, "bias": 9 * L * h,
                          "norm_scale": (2 * L + 1) * h, "norm_shift": (2 * L + 1) * h}


def test_seed_004_llama_7b_arithmetic():
    """Seed 004's worked example: 12·32·4096² + 32000·4096 = 6,573,522,944 (it prints ≈ 6.55B)."""
    assert F.total(F.total_approx(32, 4096, 32000)) == 6_573_522_944


def test_seed_001_worked_example_terms():
    """Seed 001: attention 4·768² = 2,359,296; embedding 50,000·768 = 38,400,000; its FFN formula gives 4,722,432."""
    layer = F.seed001_layer(768, 3072)
    assert layer["attention 4d^2"] == 2_359_296
    assert layer["FFN 2*d*d_ff"] + layer["FFN biases d_ff + d"] == 4_722_432
    assert F.seed001_total(768, 3072, 12, 50_000)["embedding V*d"] == 38_400_000


def test_seed_004_term_formulas():
    """P1-P6 as pure functions: 4h², 8h², (2L+1)·2h, Vh, 0 or Vh, Nh or 0."""
    h, L, V, N = 10, 3, 7, 5
    assert F.total(F.attention_4h2(h)) == 400
    assert F.total(F.mlp_8h2(h)) == 800
    assert F.total(F.layernorm_2h(h, L)) == 140
    assert F.total(F.embedding_Vh(V, h)) == 70
    assert F.total(F.output_head(V, h, tied=True)) == 0 and F.total(F.output_head(V, h, tied=False)) == 70
    assert F.total(F.positions_Nh(N, h, "learned")) == 50 and F.total(F.positions_Nh(N, h, "rope")) == 0


def test_meta_build_allocates_no_weight_memory():
    """The 405B-sized count runs on meta tensors: no parameter has storage."""
    model = build(load_config("llama2-70b"), device="meta")
    assert all(p.is_meta for p in model.parameters())


# --- bad input ---


def test_unknown_model_name_lists_the_bundled_ones():
    with pytest.raises(ConfigError, match="bundled models: .*llama-7b"):
        load_config("llama-8000b")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(str(tmp_path / "nope.json"))


def test_malformed_json_is_reported_with_its_line(tmp_path):
    p = tmp_path / "config.json"
    p.write_text('{"model_type": "llama",\n "hidden_size": }')
    with pytest.raises(ConfigError, match="malformed JSON"):
        load_config(str(p))


@pytest.mark.parametrize("field,value", [("hidden_size", 0), ("num_hidden_layers", -2), ("vocab_size", None)])
def test_zero_negative_or_missing_sizes_are_rejected(tmp_path, field, value):
    data = json.loads((MODELS / "tiny-llama.json").read_text())
    if value is None:
        del data[field]
        data[field] = None
    else:
        data[field] = value
    p = tmp_path / "config.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="positive integer|rejected"):
        load_config(str(p))


def test_unknown_model_type_is_rejected_without_running_remote_code(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"model_type": "my_secret_arch", "auto_map": {"AutoConfig": "evil.Config"}}))
    with pytest.raises(ConfigError, match="not one transformers knows"):
        load_config(str(p))
