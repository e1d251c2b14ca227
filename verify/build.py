"""The one place that builds modules: a transformers config -> nn.Module on a device.

device:
  "meta"  shapes and dtypes only, no storage: parameter counts of any size.
  "cpu"   real tensors, randomly initialised (tiny models in tests).
  "cuda"  real tensors on the GPU.
  "fake"  built on meta, then materialized with `to_empty` under the FakeTensorMode given as
          `fake_mode`: every tensor is a FakeTensor on the CPU device, nothing real is allocated.
"""

from __future__ import annotations

import torch

ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash")


def build(config, device: str = "meta", dtype: torch.dtype = torch.float32, attn: str | None = None, fake_mode=None):
    """Build the causal-LM module transformers maps `config` to (random init, no download).

    attn: "eager", "sdpa" or "flash"; None lets transformers pick its default for the architecture.
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
    if device == "fake":
        with fake_mode:
            model = model.to_empty(device="cpu")
            model.tie_weights()  # to_empty gives each module its own copy of a shared weight
    return model
