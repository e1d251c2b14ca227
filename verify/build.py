"""The one place that builds modules: a transformers config -> nn.Module on a device.

device:
  "meta"  shapes and dtypes only, no storage: parameter counts of any size.
  "cpu"   real tensors, randomly initialised (tiny models in tests).
  "cuda"  real tensors on the GPU.
  "fake"  built on meta, then materialized with `to_empty` under the FakeTensorMode given as
          `fake_mode`: every tensor is a FakeTensor on the CPU device, nothing real is allocated.

With `lora`, the model is wrapped by peft's LoRA (get_peft_model: adapters on the layers peft
targets, everything else frozen), its base optionally quantized by bitsandbytes first, as
transformers loads it with a BitsAndBytesConfig (verify/measure/quant.py). With `quant` alone (no
LoRA) the model's weights are quantized the same way, for inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash")


@dataclass(frozen=True)
class LoraSettings:
    """A LoRA fine-tune's model: peft's LoraConfig defaults except what is named here."""

    rank: int = 8  # r of every adapter (peft's default)
    targets: str = ""  # "": peft's default target modules for the model type; "all-linear"; or comma-separated module names
    quant: str = "none"  # the frozen base: none (in the build dtype) | int8 | nf4 | nf4-nodq | fp4 (bitsandbytes; quant.BNB_QUANTS)

    def lora_config(self):
        """peft's LoraConfig for these settings."""
        from verify.measure.quant import bitsandbytes

        bitsandbytes()  # peft imports it: quietly
        from peft import LoraConfig

        targets = None if not self.targets else self.targets if self.targets == "all-linear" else \
            [t.strip() for t in self.targets.split(",") if t.strip()]
        return LoraConfig(r=self.rank, target_modules=targets)


def build(config, device: str = "meta", dtype: torch.dtype = torch.float32, attn: str | None = None, fake_mode=None,
          lora: LoraSettings | None = None, quant: str = "none"):
    """Build the causal-LM module transformers maps `config` to (random init, no download).

    attn: "eager", "sdpa" or "flash"; None lets transformers pick its default for the architecture.
    lora: wrap in peft's LoRA (a PeftModel); the frozen base stays in `dtype` or is quantized
    (lora.quant), the adapters are in the dtype peft gives them (fp32: autocast_adapter_dtype).
    quant: without lora, the weights quantized by bitsandbytes (quant.BNB_QUANTS) as transformers
    loads them with a BitsAndBytesConfig; embeddings, norms and the output head stay in `dtype`.
    """
    from transformers import AutoModelForCausalLM

    if attn is not None and attn not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {attn!r}; choose one of {', '.join(ATTN_IMPLEMENTATIONS)}")
    if device == "fake" and fake_mode is None:
        raise ValueError("device='fake' needs the FakeTensorMode to materialize under (fake_mode=...)")
    on = {"meta": "meta", "fake": "meta", "cpu": "cpu", "cuda": "cuda"}.get(device)
    if on is None:
        raise ValueError(f"unknown device {device!r}; choose meta, fake, cpu or cuda")
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"{config.name_or_path}: transformers has no causal-LM class for model_type "
                         f"{config.model_type!r} (this tool builds decoder language models: llama, gpt2, mixtral, ...)")
    if attn == "flash":  # flash-attn 2, emulated and registered with transformers by the fake backend
        from verify.measure.fake import register_flash

        attn = register_flash()
    with torch.device(on):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    if lora is not None:
        return _bnb_base(model, device, dtype, fake_mode, lora.quant, wrap=lambda m: _peft(m, lora))
    if quant != "none":
        return _bnb_base(model, device, dtype, fake_mode, quant, wrap=lambda m: m)
    if device == "fake":
        with fake_mode:
            model = model.to_empty(device="cpu")
            model.tie_weights()  # to_empty gives each module its own copy of a shared weight
    return model


def _bnb_base(model, device: str, dtype: torch.dtype, fake_mode, quant: str, wrap):
    """`model` (on meta for "fake", else on `device`) quantized as `quant` says and wrapped by
    `wrap` (peft's LoRA, or nothing). Real tensors: bitsandbytes quantizes the weights, then `wrap`,
    as in a QLoRA script. Fake tensors: `wrap` on the meta model (adapters stay on meta), `to_empty`
    materializes everything, then the weights are quantized; the modules and dtypes are the same."""
    quantized = quant != "none"
    if quantized:
        from verify.measure.quant import params4bit_settings, prepare_bnb, quantize_bnb, quantize_bnb_fake

        quantizer, sources = prepare_bnb(model, quant, dtype)
    if device != "fake":
        if quantized and device != "meta":  # on meta the bnb layers keep unquantized placeholders: counts only
            quantize_bnb(model, quantizer, sources, dtype, device)
        return wrap(model)
    with torch.device("meta"):
        model = wrap(model)
    settings = params4bit_settings(model) if quantized else {}
    with fake_mode:
        model = model.to_empty(device="cpu")
        (model.get_base_model() if hasattr(model, "get_base_model") else model).tie_weights()  # to_empty unties
    if quantized:
        quantize_bnb_fake(model, dtype, settings, fake_mode)
    return model


def _peft(model, lora: LoraSettings):
    """peft's LoRA on `model`; peft's refusal (no default targets for the model type, a target
    name the model lacks) as one line saying what would work."""
    from verify.measure.lora import peft_lora

    try:
        return peft_lora(model, lora.lora_config())
    except ValueError as e:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                        if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")})
        raise ValueError(f"{model.config.name_or_path}: peft's LoRA refuses targets {lora.targets or '(its default)'!r} "
                         f"({str(e).splitlines()[0][:120]}); name modules with --lora-targets, e.g. "
                         f"{','.join(names[:4])}, or all-linear") from None
