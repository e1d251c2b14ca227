"""LoRA with peft (L1-L3) and padding masks (A1) on real CPU tensors."""

import pytest
import torch

from verify.measure import lora as LO
from verify.measure.masks import MaskSpec, padded_vs_alone


def test_lora_on_the_seeds_layer_trains_only_a_and_b_and_merging_keeps_outputs():
    """1024×2048, r = 32: 98,304 trainable (A, B), W frozen through a step; merged outputs equal unmerged
    within 1e-5 relative; the output is x@W + (α/r)·x@A@B."""
    m = LO.seed_layer(LO.SeedLoraSpec())
    assert m["trainable"] == 1024 * 32 + 32 * 2048 and m["frozen"] == 1024 * 2048
    assert m["W unchanged by the step"] and m["A changed"] and m["B changed"]
    assert m["max |merged - unmerged output|"] <= 1e-5 * m["max |unmerged output|"]
    assert m["max |y - (xW + s·xAB)|"] <= 1e-5 * m["max |unmerged output|"]
    assert m["max |W' - (W + s·A@B)|"] < 1e-6


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gpt2"])
def test_peft_never_wraps_lm_head_by_default_or_with_all_linear(model):
    """Default selection (q/v or c_attn) and 'all-linear': only Linear/Conv1D layers, never lm_head."""
    for target in (None, "all-linear"):
        r = LO.wrapped_modules(model, target)
        assert r["wrapped"] > 0 and not r["lm_head_wrapped"] and not r["embedding_wrapped"]
        assert set(r["base_classes"]) <= {"Linear", "Conv1D"}


def test_peft_wraps_lm_head_and_the_embedding_when_asked():
    """The lm_head exclusion is a default: named explicitly, both are wrapped."""
    r = LO.wrapped_modules("tiny-llama", ["lm_head", "embed_tokens"])
    assert r["lm_head_wrapped"] and r["embedding_wrapped"]


def test_lora_and_full_steps_hold_exactly_the_gradient_and_adamw_bytes_of_their_trainable_parameters():
    """fp32: grads 4 bytes per trainable parameter, AdamW 8 (exp_avg, exp_avg_sq) plus a 4-byte step
    per trainable tensor; the tensors and parameters are counted on a meta build of the same model:
    every parameter for full fine-tuning, A and B of each linear layer but lm_head for LoRA."""
    from verify.build import build
    from verify.configs import load_config

    spec = LO.StepSpec(overrides=(), batch=1, seq=8, warmup=0, steps=1)
    r = LO.lora_vs_full(spec)
    model = build(load_config(spec.model), device="meta")
    linears = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")]
    expected = {"full": (sum(p.numel() for p in model.parameters()), len(list(model.parameters()))),
                "lora": (sum(spec.r * (m.in_features + m.out_features) for m in linears), 2 * len(linears))}
    for mode, (params, tensors) in expected.items():
        x = r[mode]
        assert (x["trainable"], x["trainable_tensors"]) == (params, tensors)
        assert x["grad_bytes"] == 4 * params
        assert x["optimizer_bytes"] == 8 * params + 4 * tensors
    assert r["state bytes full/lora"] > 1
    assert 1 < r["FLOPs full/lora"] <= 1.5  # forward and activation gradients remain; weight gradients go


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-bloom"])
def test_a_padded_batch_with_its_mask_gives_the_unpadded_logits(model):
    """Left and right padding with attention_mask: real-token logits equal the single runs within 1e-5;
    left padding without the mask differs by far more."""
    r = padded_vs_alone(MaskSpec(model))
    assert r["right padding, with mask"] <= 1e-5 and r["left padding, with mask"] <= 1e-5
    assert r["left padding, no mask"] > 1e-3


def test_gpt2_left_padding_needs_positions_as_well_as_the_mask():
    """Learned positions shift under left padding: the mask alone is off, mask + position_ids is exact."""
    r = padded_vs_alone(MaskSpec("tiny-gpt2"))
    assert r["left padding, with mask"] > 1e-3
    assert r["left padding, with mask and positions"] <= 1e-5
