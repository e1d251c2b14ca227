"""The measured work, device-agnostic: one training step and a greedy generation loop.

The fake backend runs these under FakeTensorMode with its Tracker; the CUDA backend runs the very
same functions on real tensors with torch.cuda.max_memory_allocated around them. Each function
calls `hooks` at its phase boundaries so a backend can mark phases and take snapshots; the
functions themselves measure nothing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Hooks:
    """Callbacks at phase boundaries; each is optional."""

    mark: Callable[[str], None] | None = None  # phase name -> called when the phase starts
    after_forward: Callable[[torch.Tensor], None] | None = None  # the loss, at the forward/backward boundary
    after_backward: Callable[[], None] | None = None  # grads complete, optimizer not run yet
    after_step: Callable[[], None] | None = None  # optimizer stepped, grads still held (the steady state)
    after_prefill: Callable[[object], None] | None = None  # the cache, after the prompt
    after_token: Callable[[object], None] | None = None  # the cache, after each decode step

    def phase(self, name: str) -> None:
        if self.mark:
            self.mark(name)


def make_optimizer(name: str, params, foreach: bool = True):
    """The optimizer a training run uses over the parameters that require grad, with its library's
    defaults except lr = 1e-4 and `foreach`; None for "none".

    foreach=True is what torch picks by default for CUDA tensors; it is passed explicitly so that
    the fake backend (whose tensors torch would otherwise step one by one) allocates the same
    foreach temporaries as a real GPU run. The others:
      adamw-fused   torch.optim.AdamW(fused=True): one fused kernel per device and dtype
                    (torch._fused_adamw_), no foreach temporaries; its step counters live on the device
      adamw-8bit    bitsandbytes.optim.AdamW8bit: uint8 moments with an fp32 absmax per 256 elements
                    for tensors of 4096 elements or more, fp32 moments below (min_8bit_size)
      adafactor     torch.optim.Adafactor: factored second moment (a row and a column vector per
                    matrix, the full vector for 1-D tensors), no first moment
      sgd-momentum  torch.optim.SGD(momentum=0.9): one momentum buffer per parameter
    """
    if name == "none":
        return None
    params = [p for p in params if p.requires_grad]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-4, foreach=foreach)
    if name == "adamw-fused":
        return torch.optim.AdamW(params, lr=1e-4, fused=True)
    if name == "adamw-8bit":
        from verify.measure.quant import bitsandbytes
        from verify.torchapi import outside_fake_mode

        with outside_fake_mode():  # it builds its two 256-entry quantization maps with .tolist()
            return bitsandbytes().optim.AdamW8bit(params, lr=1e-4)
    if name == "adafactor":
        return torch.optim.Adafactor(params, lr=1e-4, foreach=foreach)
    if name == "adam":
        return torch.optim.Adam(params, lr=1e-4, foreach=foreach)
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-4, foreach=foreach)
    if name == "sgd-momentum":
        return torch.optim.SGD(params, lr=1e-4, momentum=0.9, foreach=foreach)
    raise ValueError(f"unknown optimizer {name!r}; choose adamw, adamw-fused, adamw-8bit, adafactor, adam, sgd, "
                     "sgd-momentum or none")


def prepare_training(model, optimizer: str, checkpointing: bool, context_fn=None):
    """Train mode, activation checkpointing of every decoder layer if asked (non-reentrant, as
    torch recommends; `context_fn` gives the forward and the recompute the same context), and
    the optimizer over the trainable parameters."""
    model.train()
    if checkpointing:
        if not model.supports_gradient_checkpointing:
            raise ValueError(f"{type(model).__name__} does not support activation checkpointing")
        kwargs = {"use_reentrant": False, **({"context_fn": context_fn} if context_fn else {})}
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    return make_optimizer(optimizer, model.parameters())


def autocast_context(precision: str, dtype: torch.dtype, device_type: str):
    """Mixed precision: autocast to `dtype` on `device_type`; pure precision: nothing."""
    if precision == "mixed":
        return torch.autocast(device_type=device_type, dtype=dtype)
    return contextlib.nullcontext()


def train_step(model, optimizer, input_ids: torch.Tensor, autocast, hooks: Hooks | None = None, loss: str = "ce") -> None:
    """Forward and loss, backward, optimizer step, zero_grad(set_to_none=True). loss "ce": the
    model's own cross-entropy (labels = inputs); "sum": the sum of the logits. The logits are
    dropped as soon as the loss exists, as in a training loop that keeps only the loss. With no
    optimizer (None) the gradients are dropped after backward, as zero_grad would."""
    hooks = hooks or Hooks()
    hooks.phase("forward")
    with autocast:
        if loss == "ce":
            value = model(input_ids=input_ids, labels=input_ids, use_cache=False).loss
        else:
            value = model(input_ids=input_ids, use_cache=False).logits.sum()
    if hooks.after_forward:
        hooks.after_forward(value)
    hooks.phase("backward")
    value.backward()
    del value
    if hooks.after_backward:
        hooks.after_backward()
    if optimizer is not None:
        hooks.phase("optimizer")
        optimizer.step()
    if hooks.after_step:
        hooks.after_step()
    hooks.phase("zero_grad")
    (optimizer or model).zero_grad(set_to_none=True)
    hooks.phase("idle")


def forward_step(model, input_ids: torch.Tensor, hooks: Hooks | None = None) -> torch.Tensor:
    """One forward under torch.no_grad() without a cache: every position's logits, as a benchmark
    that calls model(input_ids) measures it. Returns the logits."""
    hooks = hooks or Hooks()
    with torch.no_grad():
        hooks.phase("forward")
        logits = model(input_ids=input_ids, use_cache=False).logits
    hooks.phase("idle")
    return logits


def generate_greedy(model, input_ids: torch.Tensor, new_tokens: int, hooks: Hooks | None = None):
    """What `generate(do_sample=False, max_new_tokens=new_tokens)` does, written out so that it runs
    on fake tensors: a DynamicCache, a prefill that keeps only the last position's logits, then
    new_tokens - 1 decode steps of one token each. Returns the cache."""
    from transformers import DynamicCache

    hooks = hooks or Hooks()
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        hooks.phase("prefill")
        out = model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
        del out
        if hooks.after_prefill:
            hooks.after_prefill(cache)
        hooks.phase("decode")
        for _ in range(new_tokens - 1):
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            del out
            if hooks.after_token:
                hooks.after_token(cache)
    hooks.phase("idle")
    return cache


def cache_tensors(cache) -> list[torch.Tensor]:
    """The key and value tensors a transformers cache holds."""
    out = []
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                out.append(t)
    return out
