"""What greedy generation and a no-grad forward hold beyond the weights, in the pieces every family
shares: generate()'s own tensors (verify/measure/steps.py `_Greedy` writes them out), the KV cache's
storages at each moment that matters, the masks transformers builds, and the logits. The family
modules (llama.py, gpt2.py, ...) add their layers' working sets and compose the moments; the
corrected predictor (verify/predict/memory.py) adds the weights and takes the largest moment.

Moments are named "prefill: ...", "decode: ..." (the last decode step, where the cache is longest,
or the first one where a sliding-window cache shrinks) and "forward: ...". A generation of N ≤ 1
tokens has no decode step.

Symbols: B batch, S prompt length, N new tokens, T = S + N − 1 cached positions at the end, W the
sliding window, h hidden, f MLP inner size, a heads, g key/value heads (as the cache holds them), d
head dim, V vocabulary, L layers, p bytes of the compute dtype; ids and positions are int64 (8
bytes), fp32 is 4 bytes whatever p is. Not counted: the special-token ids generate() keeps as
tensors (a few 8-byte scalars) and the temporaries of mask building (freed before any moment here).
"""

from __future__ import annotations

from dataclasses import dataclass

from verify.units import FP32, INDEX_BYTES, dtype_bytes

I = INDEX_BYTES


@dataclass(frozen=True)
class Run:
    """The sizes of one generation or forward run, as the moments read them."""

    B: int  # batch
    S: int  # prompt (generate) or sequence (forward) length
    N: int  # new tokens; 1 where the run decodes none (N ≤ 1 or forward)
    p: int  # bytes of the compute dtype
    attn: str  # "eager" or "sdpa"
    static: bool  # a StaticCache (preallocated, updated in place) instead of a DynamicCache
    W: int | None  # the sliding window every layer attends within, or None

    @property
    def T(self) -> int:
        """Positions cached at the end: the prompt and every new token but the last."""
        return self.S + self.N - 1

    @property
    def decodes(self) -> bool:
        """Whether the run has decode steps (N > 1)."""
        return self.N > 1


def run_of(s, spec) -> Run:
    """The Run of a MemorySpec on Shape s."""
    return Run(B=spec.batch, S=spec.seq, N=max(spec.new_tokens, 1) if spec.mode == "generate" else 1, p=dtype_bytes(spec.dtype),
               attn=spec.attn, static=spec.cache == "static", W=s.sliding_window)


def kv(s, r: Run, positions: int, layers: int = 1) -> int:
    """Bytes of `layers` layers' keys or values (one of the two) at `positions`: layers·B·g·positions·d·p."""
    return layers * r.B * s.kv_cache_heads * positions * s.head_dim * r.p


# --- the cache -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One forward's cache: the positions each layer's key (and value) storage holds before and
    after the layer's update, the key length attention reads, and how the update goes."""

    before: int  # positions a layer's storage holds before its update (0: not allocated yet)
    after: int  # after it
    keys: int  # key length attention reads (the returned states)
    update: str  # "cat" (DynamicCache: a new storage, the old k freed at once, the old v after the v copy),
    # "cat window" (DynamicSlidingWindowLayer: the old k and v freed only after both copies), "in place"
    # (StaticCache: index_copy_), "roll" (a full static window: rolled copies of k and v while the layer updates)
    returned_copies: bool = False  # the states returned are the layer's own inputs (a static window filled by
    # the prefill returns them), alive beside the cache while attention runs


def prefill_cache(r: Run) -> Step:
    """The prefill's update of each layer. Dynamic: a copy of the S positions (a window layer keeps a
    view of the last W − 1, the storage is all S). Static: zeros of T positions (min(W, T) for a
    window layer) allocated at the layer's first update, written in place; a window layer the prompt
    overfills gets the last min(W, T) positions and attention reads the S it was given."""
    if not r.static:
        return Step(0, r.S, r.S, "cat")
    size = min(r.W, r.T) if r.W else r.T
    overfilled = bool(r.W) and r.S > size
    return Step(0, size, r.S if overfilled else size, "in place", returned_copies=overfilled)


def decode_cache(r: Run, t: int) -> Step:
    """Decode step t (1 … N − 1) of each layer. Dynamic: S + t − 1 positions become S + t; a window
    layer keeps W − 1 of them and adds one, so its storage goes from S (t = 1) or min(S + t − 1, W)
    to min(S + t, W). Static: T positions (min(W, T) for a window layer) throughout; a full window is
    rolled."""
    if not r.static:
        if not r.W:
            return Step(r.S + t - 1, r.S + t, r.S + t, "cat")
        before = r.S if t == 1 else min(r.S + t - 1, r.W)
        after = min(r.S + t, r.W)
        return Step(before, after, after, "cat window")
    if not r.W:
        return Step(r.T, r.T, r.T, "in place")
    size = min(r.W, r.T)
    full = r.S + t - 1 >= size
    return Step(size, size, size, "roll" if full else "in place")


def final_cache_positions(r: Run) -> int:
    """Positions each layer's storage holds when generation ends."""
    if r.decodes:
        return decode_cache(r, r.N - 1).after
    return prefill_cache(r).after


def counters(s, r: Run) -> dict[str, int]:
    """A static cache's layers each keep their length as an int64 tensor (StaticLayer.cumulative_length)."""
    return {"static cache's position counters 8L": I * s.L} if r.static else {}


def cache_before_update(s, r: Run, step: Step, layer: int) -> dict[str, int]:
    """The cache while layer `layer` (0-based) runs up to its update: the layers before it updated."""
    return {f"KV cache, {layer} layers updated, 2·B·g·d·p per position": 2 * kv(s, r, step.after, layer)
            + 2 * kv(s, r, step.before, s.L - layer), **counters(s, r)}


def cache_at_update(s, r: Run, step: Step, layer: int) -> dict[str, int]:
    """The cache at the highest point of layer `layer`'s update: the layers before it updated, the
    ones after it not; the layer itself holds its new k and v and, by kind, its old v (cat), its old
    k and v (cat window) or rolled copies of both (roll, with the int64 index of the last position)."""
    out = {f"KV cache, {layer + 1} layers updated, 2·B·g·d·p per position": 2 * kv(s, r, step.after, layer + 1)
           + 2 * kv(s, r, step.before, s.L - layer - 1)}
    if step.update == "cat":
        out["old v of the updating layer"] = kv(s, r, step.before)
    elif step.update == "cat window":
        out["old k and v of the updating layer"] = 2 * kv(s, r, step.before)
    elif step.update == "roll":
        out.update({"rolled k and v of the updating layer": 2 * kv(s, r, step.after), "index of the last position 8": I})
    return {**out, **counters(s, r)}


def cache_after(s, r: Run, step: Step) -> dict[str, int]:
    """Every layer updated."""
    return {"KV cache, 2·L·B·g·d·p per position": 2 * kv(s, r, step.after, s.L), **counters(s, r)}


# --- generate()'s own tensors --------------------------------------------------------------


def generate_state(r: Run) -> dict[str, int]:
    """What lives from the first forward to the last: the prompt's ids and attention mask (the
    caller's), the position ids generate() builds from the mask and keeps for the prompt (every
    family here takes position ids), and the unfinished-row flags."""
    return {"input ids 8BS": I * r.B * r.S, "attention mask 8BS": I * r.B * r.S, "prompt position ids 8BS": I * r.B * r.S,
            "unfinished rows 8B": I * r.B}


def sdpa_needs_mask(r: Run, q: int, keys: int) -> bool:
    """Whether transformers hands SDPA a mask (masking_utils._ignore_causal_mask_sdpa): only where the
    keys reach the window; otherwise a single query, as many keys as queries or an empty cache (the
    prefill) let SDPA run causal without one."""
    return r.W is not None and keys >= r.W


def static_mask(r: Run, q: int, keys: int) -> int:
    """The 4-D mask prepare_inputs_for_generation builds for a static cache, made contiguous (B rows):
    eager a float mask (p per element); sdpa a boolean one (1 byte) at every decode step (masking_utils
    does not let a compileable cache skip the mask of a single query) and in the prefill where the
    keys reach the window."""
    if r.attn == "eager":
        return r.p * r.B * q * keys
    return r.B * q * keys if q == 1 or sdpa_needs_mask(r, q, keys) else 0


def model_mask(r: Run, q: int, keys: int) -> dict[str, int]:
    """The mask the model's forward builds for a dynamic cache (a static cache's comes with the
    inputs): eager a float B × q × keys mask (p per element); sdpa a boolean q × keys one shared by
    the batch (an expanded view), where it needs one."""
    if r.static:
        return {}
    if r.attn == "eager":
        return {"causal mask p·B·q·keys": r.p * r.B * q * keys}
    return {"window mask q·keys": q * keys} if sdpa_needs_mask(r, q, keys) else {}


def prefill_inputs(r: Run) -> dict[str, int]:
    """The prefill's model inputs: a copy of the prompt's ids (prepare_inputs_for_generation clones
    them) and, with a static cache, its 4-D mask."""
    out = {"prompt ids copy 8BS": I * r.B * r.S}
    if r.static:
        out["static-cache mask"] = static_mask(r, r.S, prefill_cache(r).keys)
    return out


def decode_inputs(r: Run, t: int, V: int) -> dict[str, int]:
    """What decode step t adds to generate_state while its forward runs: the sequence so far
    (S + t tokens: prompt and those generated), the position ids grown with it, the previous step's
    fp32 next-token logits (argmax and the processors keep no copy for greedy), the next tokens,
    and the step's inputs (copies of the last token and position; a static cache's 4-D mask)."""
    out = {"sequence 8B(S+t)": I * r.B * (r.S + t), "position ids 8B(S+t)": I * r.B * (r.S + t),
           "previous fp32 logits 4BV": FP32 * r.B * V, "next tokens 8B": I * r.B,
           "step inputs (last token, position) 2·8B": 2 * I * r.B}
    if r.static:
        out["static-cache mask"] = static_mask(r, 1, decode_cache(r, t).keys)
    return out


def logits_moments(r: Run, V: int, t: int) -> dict[str, dict[str, int]]:
    """After forward t (0: the prefill) returns, _sample keeps its last position's logits (p·BV) until
    the step ends; the position ids have grown by one (S + t + 1); the prefill's inputs are gone, a
    decode step's are kept. Two moments: the fp32 copy of the logits (4BV), made while the previous
    step's copy still lives; and the end of the step, when the sequence grows by the next tokens
    (8B(S + t + 1), beside the old one a decode step drops after; the prefill's old one is the
    caller's prompt) and, after the prefill, the unfinished flags are updated (B bools, 8B)."""
    grown = {"position ids 8B(S+t+1)": I * r.B * (r.S + t + 1)}
    kept = {k: v for k, v in decode_inputs(r, t, V).items() if not k.startswith("position ids")} if t else {}
    logits = {"logits of the last position p·BV": r.p * r.B * V}
    copy = {**grown, **kept, **logits, "fp32 copy 4BV": FP32 * r.B * V}
    end = {**grown, **{k: v for k, v in kept.items() if not k.startswith("previous fp32")}, **logits,
           "fp32 logits 4BV": FP32 * r.B * V, "grown sequence 8B(S+t+1)": I * r.B * (r.S + t + 1)}
    if not t:
        end.update({"next tokens 8B": I * r.B, "stopping flags B + 8B": r.B + I * r.B})
    return {"logits copy": copy, "end of the step": end}


# tensors of the MLP's inner size alive at once while its activation runs, its input included: one
# op (input and output), or GPT-2's gelu_new, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) written
# out in torch ops (transformers/activations.py NewGELUActivation): x, 0.5·x and two temporaries
ACTIVATION_TENSORS = {"silu": 2, "swish": 2, "gelu": 2, "gelu_pytorch_tanh": 2, "relu": 2, "gelu_new": 4}


def activation_gap(s) -> str | None:
    """Why the MLP's activation is not derived for generation and the forward, or None."""
    if s.activation in ACTIVATION_TENSORS:
        return None
    return f"activation {s.activation!r}: the working set is derived for {', '.join(ACTIVATION_TENSORS)}"


def largest(candidates: dict[str, dict[str, int]]) -> dict[str, int]:
    """The terms of the candidate (name -> named terms) with the most bytes."""
    return candidates[max(candidates, key=lambda k: sum(candidates[k].values()))]
