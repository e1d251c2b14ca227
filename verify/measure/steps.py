"""The measured work, device-agnostic: one training step and a greedy generation loop.

The fake backend runs these under FakeTensorMode with its Tracker; the cpu and cuda backends run the
very same functions on real tensors with the allocator's own figures around them (generation: through
transformers' generate() itself, which generate_greedy reproduces on fake tensors). Each function
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
    skip: Callable[[], contextlib.AbstractContextManager] | None = None  # a context around the work that stands in
    # for decode steps not traced (generate_greedy): what it leaves live is real, its temporaries are no step's

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


# --- generation --------------------------------------------------------------------------------
#
# Both paths hold what transformers' generate() holds. On real tensors (cpu, cuda) generate() itself
# runs (`generate_hf`). On fake tensors it cannot (it asks the data whether every row has stopped),
# so `generate_greedy` runs GenerationMixin.generate and _sample (transformers 5.23, greedy, one
# unpadded prompt per row) written out: the same preparation, the model inputs made by the model's
# own prepare_inputs_for_generation, and the same tensors kept alive between forwards (the sequence
# grown by one token per step, the position ids generate() builds from the attention mask and
# extends, the fp32 copy of the next-token logits, the previous step's inputs). It calls the
# GenerationMixin helpers generate() calls (_prepare_special_tokens, _prepare_position_ids_for_generation,
# _get_logits_processor, _get_stopping_criteria, _update_model_kwargs_for_generation): a transformers
# release that changes them fails tests/test_generation.py, which holds the loop to generate()'s peak.

def greedy_config(model, new_tokens: int, cache: str = "dynamic"):
    """The GenerationConfig of a measured generation: the model's own, greedy, `new_tokens` tokens for
    every row, transformers' DynamicCache or a StaticCache ("static": preallocated by generate() to
    max_length - 1 = S + N - 1 positions), and no torch.compile (generate() compiles the forward of a
    static cache on a GPU). The model's EOS ids are replaced by as many ids past the vocabulary:
    generate() keeps its EOS bookkeeping (the same tensors) but never stops a row early, so every row
    decodes its N tokens, as a memory figure counts them (random weights emit anything)."""
    import copy

    from verify.measure.memory import CACHES

    if cache not in CACHES:
        raise ValueError(f"cache {cache!r}: choose {' or '.join(CACHES)}")
    config = copy.deepcopy(model.generation_config)
    eos = config.eos_token_id
    if eos is not None:
        vocab = model.config.get_text_config(decoder=True).vocab_size
        eos = [vocab + i for i in range(len(eos))] if isinstance(eos, (list, tuple)) else vocab
    config.update(do_sample=False, num_beams=1, max_new_tokens=new_tokens, eos_token_id=eos,
                  cache_implementation="static" if cache == "static" else None, disable_compile=True)
    return config


@contextlib.contextmanager
def _phase_marks(model, hooks: Hooks):
    """Hooks on the model's forward: "decode" marked at every forward after the first (the prefill,
    which the caller marks before generation starts), after_prefill / after_token called with the
    cache after each forward. Yields a dict that holds the cache once a forward has seen it."""
    seen = {"forwards": 0, "cache": None}

    def before(module, args, kwargs):
        if seen["forwards"]:
            hooks.phase("decode")

    def after(module, args, kwargs, output):
        seen["forwards"] += 1
        seen["cache"] = kwargs.get("past_key_values")
        call = hooks.after_prefill if seen["forwards"] == 1 else hooks.after_token
        if call:
            call(seen["cache"])

    handles = [model.register_forward_pre_hook(before, with_kwargs=True), model.register_forward_hook(after, with_kwargs=True)]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def generate_hf(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, new_tokens: int, hooks: Hooks | None = None,
                cache: str = "dynamic"):
    """transformers' own `model.generate()` (greedy_config: greedy, max_new_tokens, the model's
    generation config) on real tensors, its phases marked through `hooks`: "prefill" from the call to
    the second forward, "decode" from there. Returns the cache generate() used."""
    hooks = hooks or Hooks()
    config = greedy_config(model, new_tokens, cache)
    with _phase_marks(model, hooks) as seen:
        hooks.phase("prefill")
        model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    hooks.phase("idle")
    return seen["cache"]


class _Greedy:
    """generate() and _sample for greedy decoding of unpadded prompts, written out so that it runs on
    fake tensors; each attribute is a variable of _sample that lives from one forward to the next."""

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, config, cache: str):
        import inspect

        from transformers import DynamicCache, StaticCache
        from transformers.generation import LogitsProcessorList, StoppingCriteriaList

        batch, seq = input_ids.shape
        accepts = inspect.signature(model.forward).parameters
        eos, config.eos_token_id = config.eos_token_id, None  # its checks of the EOS ids ask the data (to warn only)
        model._prepare_special_tokens(config, True, device=input_ids.device, batch_size=batch)
        config.eos_token_id = eos
        if eos is not None:  # the tensors _prepare_special_tokens makes of the EOS ids, and of the pad id it takes from them
            eos = torch.tensor(eos, dtype=torch.long, device=input_ids.device)
            config._eos_token_tensor = eos.unsqueeze(0) if eos.ndim == 0 else eos
            if config._pad_token_tensor is None:
                config._pad_token_tensor = config._eos_token_tensor[0]
        config.max_length = seq + config.max_new_tokens
        kwargs = {"attention_mask": attention_mask}
        if "position_ids" in accepts:  # built from the mask, then grown by one position per step
            kwargs["position_ids"] = model._prepare_position_ids_for_generation(input_ids, kwargs)
        (attention_mask == 1).all()  # generate() asks whether the prompt is padded; unpadded, the mask is dropped
        kwargs["attention_mask"] = None
        config._mask_length = seq
        if "logits_to_keep" in accepts:
            kwargs["logits_to_keep"] = 1
        text = model.config.get_text_config(decoder=True)
        kwargs["past_key_values"] = (StaticCache(config=text, max_cache_len=config.max_length - 1) if cache == "static"
                                     else DynamicCache(config=text))
        # generate() also passes the prompt as encoder_input_ids, read (by a data check fake tensors cannot answer)
        # only for the encoder-repetition processors, which greedy_config does not ask for
        self.processors = model._get_logits_processor(generation_config=config, input_ids_seq_length=seq, encoder_input_ids=None,
                                                      logits_processor=LogitsProcessorList(), device=input_ids.device, model_kwargs=kwargs)
        self.criteria = model._get_stopping_criteria(generation_config=config, stopping_criteria=StoppingCriteriaList())
        kwargs["use_cache"] = True
        self.model, self.config, self.kwargs, self.prompt = model, config, kwargs, seq
        self.generate_kwargs = dict(kwargs)  # generate()'s own dict, unpacked into _sample: it keeps the prompt's position ids
        self.input_ids = input_ids  # the sequence: prompt and the tokens so far
        self.unfinished = torch.ones(batch, dtype=torch.long, device=input_ids.device)
        self.model_inputs = None  # the last decode step's inputs (the prefill's die with _prefill)
        self.logits = self.scores = self.tokens = None  # fp32 next-token logits, after the processors, argmax
        self.forwards = 0

    @property
    def cache(self):
        return self.kwargs["past_key_values"]

    def step(self) -> None:
        """One pass of _sample's loop: a forward (the prefill on the first call), the fp32 copy of the
        last position's logits, the processors, argmax, the sequence grown by the token, the stopping
        criteria."""
        m = self.model
        if self.forwards == 0:
            inputs = m.prepare_inputs_for_generation(self.input_ids, next_sequence_length=self.prompt, is_first_iteration=True, **self.kwargs)
            outputs = m(**inputs, return_dict=True)
            del inputs
        else:
            self.model_inputs = m.prepare_inputs_for_generation(self.input_ids, next_sequence_length=1, **self.kwargs)
            outputs = m(**self.model_inputs, return_dict=True)
        self.forwards += 1
        self.kwargs = m._update_model_kwargs_for_generation(outputs, self.kwargs, is_encoder_decoder=False)
        self.logits = outputs.logits[:, -1].to(copy=True, dtype=torch.float32, device=self.input_ids.device)
        self.scores = self.processors(self.input_ids, self.logits)
        self.tokens = torch.argmax(self.scores, dim=-1)
        if self.config._eos_token_tensor is not None:  # finished rows get the pad token
            self.tokens = self.tokens * self.unfinished + self.config._pad_token_tensor * (1 - self.unfinished)
        self.input_ids = torch.cat([self.input_ids, self.tokens[:, None]], dim=-1)
        self.unfinished = self.unfinished & ~self.criteria(self.input_ids, None)
        self.unfinished.max() == 0  # generate() reads this to stop early; here the length decides
        del outputs

    def grow(self, n: int) -> None:
        """Stand in for n decode steps without running them: n positions appended to every cache layer
        through the cache's own update (to a sliding-window layer n - 1 and then 1, so that it keeps
        the storage a one-token step leaves it), to the sequence and to the position ids; and the
        model inputs a decode step leaves behind (their sizes do not depend on the step)."""
        from transformers.modeling_outputs import CausalLMOutputWithPast

        cache, zeros = self.cache, {}

        def positions(t, count):  # `count` positions shaped as `t`'s, one tensor per shape (update copies them)
            shape = (*t.shape[:2], count, t.shape[-1])
            if (shape, t.dtype) not in zeros:
                zeros[shape, t.dtype] = t.new_zeros(shape)
            return zeros[shape, t.dtype]

        for i, layer in enumerate(cache.layers):
            if not getattr(layer, "is_initialized", False):
                continue
            for chunk in ((n - 1, 1) if n > 1 and getattr(layer, "is_sliding", False) else (n,)):
                cache.update(positions(layer.keys, chunk), positions(layer.values, chunk), i)
        zeros.clear()
        self.input_ids = torch.cat([self.input_ids, self.input_ids.new_zeros((self.input_ids.shape[0], n))], dim=-1)
        self.kwargs = self.model._update_model_kwargs_for_generation(CausalLMOutputWithPast(past_key_values=cache), self.kwargs,
                                                                     is_encoder_decoder=False, num_new_tokens=n)
        self.model_inputs = self.model.prepare_inputs_for_generation(self.input_ids, next_sequence_length=1, **self.kwargs)


def generate_greedy(model, input_ids: torch.Tensor, new_tokens: int, hooks: Hooks | None = None, attention_mask: torch.Tensor | None = None,
                    cache: str = "dynamic", every_step: bool = False):
    """What `generate_hf` holds, on any tensors (fake ones included): greedy generation of `new_tokens`
    tokens after the prompt (the prefill, then N - 1 decode steps), through transformers'
    DynamicCache or StaticCache (`cache`). `attention_mask`: the prompt's, as a tokenizer returns it
    (all ones if None).

    Unless `every_step`, only the decode steps whose memory can differ are traced, so the time does
    not depend on N: what decode step t holds is the cache of S + t positions (a sliding-window
    layer: W; a static cache: its S + N - 1 from the start) plus that step's work, so the last step
    (N - 1) holds the most; the first one too is traced where the cache has sliding-window layers,
    which hold the prefill's S positions until their first update. The steps between are stood in
    for by growing the cache, the sequence and the position ids to their length before the last
    step (`_Greedy.grow`, inside `hooks.skip`). Returns the cache."""
    hooks = hooks or Hooks()
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    config = greedy_config(model, new_tokens, cache)
    with torch.no_grad(), _phase_marks(model, hooks):
        hooks.phase("prefill")
        loop = _Greedy(model, input_ids, attention_mask, config, cache)
        loop.step()
        if every_step or new_tokens <= 2:
            for _ in range(new_tokens - 1):
                loop.step()
        else:
            if any(getattr(layer, "is_sliding", False) for layer in loop.cache.layers):
                loop.step()
            skipped = new_tokens - 1 - loop.forwards  # decode steps before the last one not run yet
            if skipped:
                hooks.phase("decode")  # the steps stood in for are decode steps
                with hooks.skip() if hooks.skip else contextlib.nullcontext():
                    loop.grow(skipped)
                if hooks.after_token:
                    hooks.after_token(loop.cache)
            loop.step()
    hooks.phase("idle")
    return loop.cache


def cache_tensors(cache) -> list[torch.Tensor]:
    """The key and value tensors a transformers cache holds."""
    out = []
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                out.append(t)
    return out
