"""Temperature, top-k, top-p (S1-S4) on real logits of a tiny model: transformers' processors, the
order generate() applies them, edge cases, and sampled frequencies."""

import math

import pytest
import torch

from verify.formulas import other as F
from verify.measure import sampling as S


@pytest.fixture(scope="module")
def setup():
    spec = S.SamplingSpec()
    model, prompt = S.model_and_prompt(spec)
    return spec, model, prompt, S.next_token_logits(model, prompt)


def test_temperature_divides_the_logits_and_entropy_rises_with_it(setup):
    """TemperatureLogitsWarper(T) = logits / T exactly; entropy strictly increases in T, T = 0.8 below T = 1."""
    spec, _, _, logits = setup
    assert S.temperature_divides(logits, 0.8)
    H = S.entropy_vs_temperature(logits, (0.5, 0.8, 1.0, 2.0))
    assert H[0.5] < H[0.8] < H[1.0] < H[2.0] < math.log(logits.shape[-1])


def test_top_k_keeps_the_k_largest_and_ties_at_the_cut_keep_more(setup):
    """K = 36 keeps the 36 largest logits; a tie at the 36th keeps 37; K > V keeps all V; K = 0 is rejected."""
    _, _, _, logits = setup
    e = S.top_k_edges(logits, 36)
    assert e["kept"] == 36 and e["kept are the K largest"]
    assert e["tie at the K-th value, kept"] == 37
    assert e[f"K={e['V'] + 100} > V, kept"] == e["V"]
    assert e["K=0"].startswith("ValueError")


def test_top_p_zero_is_greedy_and_one_keeps_everything(setup):
    """P = 0 keeps only the argmax, P = 1 all tokens, P = 1.5 is rejected; ties at the cut keep only as many
    tied tokens as the mass needs."""
    _, _, _, logits = setup
    e = S.top_p_edges(logits)
    assert e["P=0 kept"] == 1 and e["P=0 keeps argmax"]
    assert e["P=1 kept"] == e["V"]
    assert e["P=1.5"].startswith("ValueError")
    assert len(e["ties: 4 tokens at p=0.25 each, P=0.3, kept"]) == 2


def test_the_seeds_procedure_on_handmade_logits():
    """T = 1, K = 3 of 5, P = 0.5: the top-3 renormalized are ~(0.665, 0.245, 0.090); 0.665 ≥ 0.5 keeps one."""
    kept = F.seed_sampling([3.0, 2.0, 1.0, 0.0, -1.0], 1.0, 3, 0.5)
    assert list(kept) == [0] and kept[0] == pytest.approx(1.0)
    kept = F.seed_sampling([3.0, 2.0, 1.0, 0.0, -1.0], 1.0, 3, 0.7)
    assert sorted(kept) == [0, 1] and sum(kept.values()) == pytest.approx(1.0)


def test_generate_applies_temperature_then_top_k_then_top_p(setup):
    """generate() builds the three warpers in the seed's order, and applying them in that order to its raw
    logits reproduces its processed scores exactly."""
    spec, model, prompt, _ = setup
    g = S.generate_order(model, prompt, spec)
    assert g["generate_processors"] == ["TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper"]
    assert ["temperature", "top_k", "top_p"] in g["orders_reproducing_generate"]
    assert ["top_p", "top_k", "temperature"] not in g["orders_reproducing_generate"]


def test_the_seeds_procedure_keeps_the_set_and_probabilities_generate_uses(setup):
    """T = 0.8, K = 36, P = 0.7: the same kept tokens and the same renormalized probabilities (1e-6)."""
    spec, model, prompt, _ = setup
    raw, processed = S.generate_scores(model, prompt, spec)
    seed = F.seed_sampling(raw[0].tolist(), spec.temperature, spec.top_k, spec.top_p)
    assert sorted(seed) == S.kept(processed)
    probs = torch.softmax(processed[0].double(), -1)
    assert max(abs(float(probs[i]) - p) for i, p in seed.items()) < 1e-6


def test_top_p_before_top_k_keeps_a_different_set(setup):
    """Order matters: top-p over the full distribution then top-k keeps K tokens; the seed's order fewer."""
    spec, _, _, logits = setup
    o = S.order_effect(logits, spec)
    assert o["top_p > top_k > temperature"] == spec.top_k
    assert o["temperature > top_k > top_p"] < spec.top_k


def test_sampled_frequencies_fit_the_renormalized_distribution(setup):
    """4000 first tokens from generate() (seed 0): none outside the kept set, chi-square p-value ≥ 0.001."""
    spec, model, prompt, _ = setup
    f = S.sample_frequencies(model, prompt, spec)
    assert f["outside kept set"] == 0
    assert f["p_value"] >= 1e-3
    assert f["max |freq - p|"] < 0.02
