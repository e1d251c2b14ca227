"""The bytes live during a training step's backward, tensor by tensor, and the pieces of backward
several families share.

A `Tape` holds the tensors live at each point (name -> bytes). The family modules write, for their
blocks, the order in which autograd allocates and frees tensors in backward, as the fake
backend's trace shows it (verify/measure/fake.py: the first use of a saved tensor frees nothing,
the node that uses it last frees it; a gradient reaching a tensor that already has one is added
out of place); the predictor (verify/predict/memory.py) plays them from the forward/backward
boundary to the optimizer step and keeps the highest total of each stretch: the candidate
moments of the peak. Pure arithmetic; nothing here imports torch.

Symbols: n = B·S tokens, h hidden, p bytes of the compute dtype, u = 4·n·h (an fp32 copy of the
residual stream).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from verify.units import FP32, dtype_bytes


class Tape:
    """Tensors live now (name -> bytes), their total, and the highest total of each stretch."""

    def __init__(self, live: dict[str, int] | None = None, stretch: str = "start"):
        self.live: dict[str, int] = {}  # name -> bytes of each tensor live now
        self.total = 0  # bytes live now
        self.stretch = stretch  # the stretch being played (a candidate moment of the peak)
        self.highest: dict[str, int] = {}  # stretch -> highest total seen in it
        self.events: list[tuple[str, str, int, int]] = []  # (+ or -, name, bytes, total after), in order
        for name, nbytes in (live or {}).items():
            self.alloc(name, nbytes)

    def enter(self, stretch: str) -> None:
        """Start the stretch `stretch`: later highs count for it."""
        self.stretch = stretch
        self._note()

    def alloc(self, name: str, nbytes: int) -> None:
        """A new tensor of `nbytes` named `name` (unique among the live ones)."""
        if name in self.live:
            raise ValueError(f"tape: {name!r} is live already")
        self.live[name] = nbytes
        self.total += nbytes
        self.events.append(("+", name, nbytes, self.total))
        self._note()

    def free(self, *names: str) -> None:
        """The tensors `names` are freed."""
        for name in names:
            nbytes = self.live.pop(name)
            self.total -= nbytes
            self.events.append(("-", name, nbytes, self.total))

    def rename(self, old: str, new: str) -> None:
        """The tensor `old` takes a new role (the incoming gradient of the next block); no bytes move."""
        if new in self.live:
            raise ValueError(f"tape: {new!r} is live already")
        self.live[new] = self.live.pop(old)

    def bytes(self, prefix: str) -> int:
        """Bytes of the live tensors whose names start with `prefix`."""
        return sum(v for k, v in self.live.items() if k.startswith(prefix))

    def scope(self, prefix: str) -> "Scope":
        """A view whose names are prefixed by `prefix` (one decoder layer's tensors)."""
        return Scope(self, prefix)

    def _note(self) -> None:
        if self.total > self.highest.get(self.stretch, -1):
            self.highest[self.stretch] = self.total


class Scope:
    """Tape operations with every name prefixed (one layer's tensors: "layer 3: gate")."""

    def __init__(self, tape: Tape, prefix: str):
        self.tape, self.prefix = tape, prefix

    def name(self, name: str) -> str:
        """The tape's name of `name`: prefixed, after GRAD for a parameter's gradient; a name that
        starts with "/" is the tape's own (the gradient flowing between blocks, shared tensors)."""
        if name.startswith("/"):
            return name[1:]
        if name.startswith(GRAD):
            return GRAD + self.prefix + name[len(GRAD):]
        return self.prefix + name

    def alloc(self, name: str, nbytes: int) -> None:
        self.tape.alloc(self.name(name), nbytes)

    def free(self, *names: str) -> None:
        self.tape.free(*(self.name(n) for n in names))

    def rename(self, old: str, new: str) -> None:
        self.tape.rename(self.name(old), self.name(new))


GRAD = "grad "  # prefix of the parameters' gradients on a tape (they stay live after backward)


def dims(s, spec) -> tuple:
    """(p, B, S, n, mixed, stream) of a training run: p bytes of the compute dtype, B batch, S
    sequence, n = B·S tokens, mixed (autocast), stream bytes of the residual stream (4 under
    autocast, else p)."""
    p = dtype_bytes(spec.dtype)
    mixed = spec.precision == "mixed"
    return p, spec.batch, spec.seq, spec.batch * spec.seq, mixed, FP32 if mixed else p


def add_into(t, total: str, incoming: str, nbytes: int) -> None:
    """A gradient `incoming` reaches a tensor whose gradient `total` exists: autograd adds them out
    of place (nbytes), then frees both; the sum keeps the name `total`."""
    t.alloc(total + " + " + incoming, nbytes)
    t.free(total, incoming)
    t.rename(total + " + " + incoming, total)


def token_embedding_backward(t, g: str, tied: bool, nbytes: int) -> None:
    """The token embedding's weight gradient (nbytes = V·width·p_w) from its output's gradient
    `g` (freed after); a tied embedding has the head's gradient already, and the two are added out
    of place (nbytes more for a moment)."""
    if tied:
        t.alloc("embedding grad", nbytes)
        t.free(g)
        add_into(t, GRAD + "embedding", "embedding grad", nbytes)
    else:
        t.alloc(GRAD + "embedding", nbytes)
        t.free(g)


def embedding_backward(t, s, spec) -> None:
    """Below the first layer of a family with nothing between embedding and layer 0: the token
    embedding's gradient (V·h·p_w) from the first layer's input gradient ("dy")."""
    stream = dims(s, spec)[5]
    token_embedding_backward(t, "dy", s.tied, stream * s.V * s.h)


def softmax_forward(lt, p: int, sq: int, mixed: bool, stream: int, fp32: str = "softmax fp32", cast: str = "softmax",
                    late_cast: bool = False) -> None:
    """Eager attention from the scores q·kᵀ ("scores", p·sq, made by the caller) to the
    probabilities: the scaling (p·sq), the mask added ("masked", the stream's dtype), the softmax
    in fp32 (`fp32`, 4·sq, kept; an fp32 copy of its input first in half precision) and its cast
    to p (`cast`, p·sq, kept), made before the masked scores go; `late_cast`: under autocast the
    cast comes after they go (q is fp32 after RoPE there: the cast is the matmul's with v)."""
    lt.alloc("scores scaled", p * sq)
    lt.free("scores")
    lt.alloc("masked", stream * sq)
    lt.free("scores scaled")
    if p != FP32 and not mixed:
        lt.alloc("masked fp32", FP32 * sq)
        lt.alloc(fp32, FP32 * sq)
        lt.free("masked fp32")
    else:
        lt.alloc(fp32, FP32 * sq)
    late = late_cast and mixed
    if late:
        lt.free("masked")
    if p != FP32:
        lt.alloc(cast, p * sq)
    if not late:
        lt.free("masked")


def softmax_backward(lt, p: int, sq: int, cast: str) -> None:
    """Eager attention's softmax (run in fp32 on p-byte scores) backward, from the probabilities'
    gradient ("d probs", p·sq) to the scores' ("d softmax", p·sq): up to fp32 (freeing the kept
    p-byte "softmax"), the softmax's backward against "softmax fp32" (4·sq), and down to p again
    through a temporary named `cast`."""
    if p != FP32:
        lt.free("softmax")
        lt.alloc("d probs fp32", FP32 * sq)
        lt.free("d probs")
        lt.rename("d probs fp32", "d probs")
    lt.alloc("d softmax", FP32 * sq)
    lt.free("d probs", "softmax fp32")
    if p != FP32:
        lt.alloc(cast, p * sq)
        lt.free("d softmax")
        lt.rename(cast, "d softmax")


def linear_backward(t, weight: str, w: int, dx: str, x: int, p: int, mixed: bool, frees: tuple[str, ...] = (),
                    cast_input: bool = False, into: str | None = None, bias: int = 0, saved: tuple[str, ...] = (),
                    recomputed: bool = False, conv1d: bool = False) -> None:
    """nn.Linear (or GPT-2's Conv1D, `conv1d`) of w weight elements (and `bias` elements of bias,
    0 without) on x input elements: the gradients of the weight (p_w·w), of the input (p·x) and
    of the bias (p_w·bias) are allocated (the input's first where there is a bias: addmm's
    backward), then `frees` (the incoming gradient) and `saved` (kept tensors whose last user
    this is) are freed; a `recomputed` kept tensor (checkpointing) is held only while the node
    computes, and goes before the bias's sum over tokens. Under autocast (`mixed`) the gradient
    reaches each fp32 parameter through the cast of its cached copy (p per element, then 4, the
    p copy freed) and, with `cast_input`, the fp32 input through the cast of the input (4·x);
    the casts run in the reverse order of the forward's (nn.Linear casts bias, weight, input;
    Conv1D weight, input, bias). The input's gradient is added into `into` where that tensor
    has one already, else it keeps the name `dx`."""
    own = (lambda k: k + " (compute dtype)") if mixed else (lambda k: GRAD + k)
    allocs = [(own(weight), w), (dx, None)]
    if bias:
        allocs = [(dx, None), (own(weight), w), (own(weight + " bias"), bias)]
    for name, elems in allocs:
        if recomputed and name == own(weight + " bias"):
            t.free(*saved)
        t.alloc(name, p * (x if elems is None else elems))
    t.free(*frees)
    if not (recomputed and bias):
        t.free(*saved)
    order = ("bias", "input", "weight") if conv1d else ("input", "weight", "bias")
    for part in order if mixed else ("input",):
        if part == "input":
            if mixed and cast_input:
                t.alloc(dx + " fp32", FP32 * x)
                t.free(dx)
                t.rename(dx + " fp32", dx)
            if into is not None:
                add_into(t, into, dx, (FP32 if mixed and cast_input else p) * x)
            continue
        k, elems = (weight, w) if part == "weight" else (weight + " bias", bias)
        if elems:
            t.alloc(GRAD + k, FP32 * elems)
            t.free(own(k))


def linear_forward(t, weight: str, out: str | None, w: int, y: int, x: int, p: int, mixed: bool, cast_input: bool = False,
                   bias: int = 0, conv1d: bool = False) -> None:
    """nn.Linear (or Conv1D) forward: its output `out` (p·y; None: not made, where a checkpointed
    recompute stops because the inputs this projection keeps were its last kept tensors). Under
    autocast first the compute-dtype copy of the weight (`weight weight copy`, p·w, cached and
    kept), the cast of an fp32 input (`weight input cast`, p·x, kept) and the copy of the bias
    (`weight bias copy`, p·bias, cached: not kept, held until autocast exits), in the order the
    module casts them."""
    if mixed:
        parts = ("weight", "input", "bias") if conv1d else ("bias", "weight", "input")
        for part in parts:
            if part == "weight":
                t.alloc(weight + " weight copy", p * w)
            elif part == "input" and cast_input:
                t.alloc(weight + " input cast", p * x)
            elif part == "bias" and bias:
                t.alloc(weight + " bias copy", p * bias)
    if out is not None:
        t.alloc(out, p * y)


def layernorm_forward(t, ln: str, inp: str, n: int, h: int, p: int) -> None:
    """nn.LayerNorm on the residual stream tensor `inp` (n·h, p bytes: fp32 under autocast): it
    keeps its input (`ln: input`, the stream tensor itself), the mean and 1/std per token (p·n
    each: this backend keeps them in the input's dtype) and makes its output (`ln: out`, p·nh;
    kept by the projection after it in pure precision, cast by it under autocast)."""
    t.rename(inp, ln + ": input")
    t.alloc(ln + ": out", p * n * h)
    t.alloc(ln + ": mean", p * n)
    t.alloc(ln + ": rstd", p * n)


def layernorm_backward(t, ln: str, gy: str, n: int, h: int, p: int, pw: int, into: str | None, affine: bool = True,
                       frame: tuple[str, ...] = (), frees_input: bool = True) -> str:
    """nn.LayerNorm's backward from the gradient of its output `gy`: the input's gradient (p·nh)
    and the weight's and bias's (p_w·h each, with an affine norm), then `gy` and what it kept
    are freed; the input's gradient is added into `into` (the residual stream's) where there is
    one; `frame`: tensors freed with what it kept (a checkpoint's inputs); `frees_input` false: its
    input is kept by another norm still. Returns the name of the input's gradient."""
    t.alloc(ln + ": dx", p * n * h)
    if affine:
        t.alloc(GRAD + ln, pw * h)
        t.alloc(GRAD + ln + " bias", pw * h)
    t.free(gy, *((ln + ": input",) if frees_input else ()), ln + ": mean", ln + ": rstd", *frame)
    return grad_cast(t, ln + ": dx", into, p * n * h, ln + ": dx")


def dropout_forward(t, name: str, src: str, e: int, p: int) -> None:
    """Dropout as CUDA runs it (native_dropout): its output (`name`, p·e) and a 1-byte mask per
    element (`name mask`, kept); `src` is freed where nothing else holds it (caller's choice)."""
    t.alloc(name, p * e)
    t.alloc(name + " mask", e)


def dropout_backward(t, name: str, gy: str, e: int, p: int, frees: tuple[str, ...] = ()) -> str:
    """native_dropout's backward: the input's gradient (p·e), then the mask and `frees` go."""
    t.alloc("d " + name, p * e)
    t.free(name + " mask", *frees)
    return "d " + name


def rope_backward(t, g: str, e: int, p: int, mixed: bool, last: bool = False) -> None:
    """RoPE's backward on the gradient `g` of q or k (e elements): g·sin goes back through
    rotate_half (its negated half, two slice_backward, their sum), g·cos straight, and the two
    are summed into the gradient of the projection's output (p·e), which keeps the name g. Under
    autocast the rotated tensor was fp32 (an fp32 cos and sin times the p-byte projection): each
    product is computed in fp32 (4e) and cast back (p·e). `last`: this is the last use of the
    shared cos and sin tables (the first layer's q), freed as soon as each product is made."""
    pe = p * e

    def product(name: str, table: str) -> None:
        if mixed:
            t.alloc(name + " fp32", FP32 * e)
            t.alloc(name, pe)
            t.free(name + " fp32")
        else:
            t.alloc(name, pe)
        if last and table == "/sin":
            t.free(table)

    product(g + "·sin", "/sin")
    t.alloc(g + " neg half", pe // 2)
    t.alloc(g + " slice 1", pe)
    t.free(g + " neg half")
    t.alloc(g + " slice 2", pe)
    t.free(g + "·sin")
    t.alloc(g + " rotate_half", pe)
    t.free(g + " slice 1", g + " slice 2")
    product(g + "·cos", "/cos")
    t.free(g)
    if last:
        t.free("/cos")
    t.alloc(g + " sum", pe)
    t.free(g + " rotate_half", g + "·cos")
    t.rename(g + " sum", g)


def rmsnorm_backward(t, norm: str, gy: str, n: int, h: int, p_out: int, pw: int, stream: bool, into: str | None,
                     recomputed: bool = False, frame: tuple[str, ...] = ()) -> str:
    """An RMSNorm computed in fp32 (transformers' LlamaRMSNorm: x.to(fp32), x·rsqrt(mean(x²) + eps),
    cast to the input dtype, times the weight) from the gradient of its output `gy` (p_out·nh):
    the weight's gradient (p_w·h), fp32 temporaries of u = 4nh (at most five beside its saved
    fp32 input, in the mean's backward) and of 4n per token. `stream`: its input is the residual
    stream itself (fp32 training, autocast), so each of its two gradients is added into `into`
    (the stream's gradient) as it comes; otherwise (half precision) they are summed in fp32,
    cast to p_out and added into `into` then. `recomputed`: its saved tensors come from a
    checkpointed recompute; `frame`: tensors freed with its fp32 input (a checkpoint's inputs go
    with the last tensor its recompute made). Returns the name of the input's gradient."""
    u, x, r = FP32 * n * h, p_out * n * h, FP32 * n

    def grad(path: str) -> str:  # the input's gradient receives `path`
        if into is not None:
            add_into(t, into, path, u)
            return into
        t.rename(path, norm + ": dx")
        return norm + ": dx"

    t.alloc(norm + ": gy·w", x)
    t.alloc(norm + ": gy·normalized", x)
    if recomputed:  # a recomputed tensor is held only while its node runs: freed before the broadcast weight's sum
        t.free(norm + ": normalized")
    t.alloc(GRAD + norm, pw * h)
    t.free(norm + ": gy·normalized", gy, *(() if recomputed else (norm + ": normalized",)))
    d = norm + ": gy·w"
    if not stream:  # the cast to the input dtype goes back to fp32
        t.alloc(norm + ": d normalized", u)
        t.free(d)
        d = norm + ": d normalized"
    t.alloc(norm + ": path 1", u)
    t.alloc(norm + ": d·x", u)
    t.alloc(norm + ": Σ d·x", r)
    t.free(norm + ": d·x", d)
    first = grad(norm + ": path 1") if stream else norm + ": path 1"
    for k in ("pow", "mul", "d rms"):
        t.alloc(f"{norm}: {k} 4n", r)
    t.free(norm + ": mul 4n", norm + ": pow 4n", norm + ": Σ d·x", norm + ": 1/rms")
    t.alloc(norm + ": d mean", u)
    t.free(norm + ": d rms 4n")
    for k in ("pow", "mul", "path 2"):
        t.alloc(f"{norm}: {k}", u)
    t.free(norm + ": mul", norm + ": pow", norm + ": d mean", norm + ": fp32 input", *frame)
    if stream:
        add_into(t, first, norm + ": path 2", u)
        return first
    add_into(t, first, norm + ": path 2", u)
    t.alloc(norm + ": dx cast", x)
    t.free(first)
    return grad_cast(t, norm + ": dx cast", into, x, norm + ": dx")


def grad_cast(t, g: str, into: str | None, nbytes: int, name: str) -> str:
    """The gradient `g` reaches a tensor: added into `into` if it has one, else it is named `name`."""
    if into is not None:
        add_into(t, into, g, nbytes)
        return into
    if g != name:
        t.rename(g, name)
    return name


@dataclass(frozen=True)
class Options:
    """What a model's config says that its Shape does not, and that the training terms read."""

    dropout: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (embedding, attention, residual) dropout probabilities, as the modules apply them
    activation: str = ""  # the MLP's activation (transformers' ACT2FN name) where the family lets the config choose
    variant: str = ""  # a block layout the Shape does not tell apart, where a family has several (Falcon: "new", "multi-query", "fused")


@dataclass(frozen=True)
class Training:
    """How a family's training step holds memory, as the fake backend's trace shows it: what the
    forward keeps for backward, and its backward on a `Tape`, block by block. The predictor
    (verify/predict/memory.py) composes these into the boundary's activations and the moments of
    the peak; the loss (cross-entropy or a sum of the logits), the checkpointed recompute and the
    optimizer step are the same for every family and live there."""

    layer_forward: Callable  # (Tape, i, Shape, MemorySpec, Options) -> plays layer i's forward from "layer input" to its last kept tensor: what stays live is what it keeps
    outside_saved: Callable  # (Shape, MemorySpec, Options) -> the other tensors live at the forward/backward boundary (final norm, tables, ids), name -> bytes
    head_backward: Callable  # (Tape, Shape, MemorySpec) -> plays "grad logits" back to the last layer's output gradient "dy"
    layer_backward: Callable  # (Tape, i, Shape, MemorySpec, Options) -> plays layer i's backward, "dy" of its output to "dy" of its input (with checkpointing, its recompute first: layer_forward again)
    embedding_backward: Callable  # (Tape, Shape, MemorySpec) -> plays the backward below the first layer (embedding, positions), "dy" consumed
    forward_end: Callable | None = None  # (Shape, MemorySpec) -> tensors the forward's end still holds beside the logits though backward does not keep them, name -> bytes
    gaps: Callable | None = None  # (Shape, MemorySpec, Options) -> why these terms do not reach a run (one line), or None
    options: Callable | None = None  # config -> Options (what the config says beyond the Shape); None: no dropout, the default activation


def rmsnorm_forward(t, norm: str, inp: str, n: int, h: int, p: int, mixed: bool) -> None:
    """An RMSNorm computed in fp32 (LlamaRMSNorm) on the tensor `inp` (n·h). It keeps its fp32 input
    (`norm: fp32 input`, 4nh: a copy in half precision, the residual stream tensor itself in fp32
    training and under autocast), 1/rms per token (4n) and the normalized tensor (cast to the
    compute dtype, p·nh; fp32 under autocast); in pure precision its product with the weight
    (`norm: × weight`, p·nh) is kept by the projections after it; under autocast the fp32 product
    (`norm: out`, 4nh) is not kept (each projection keeps its own cast of it) and lives until
    the block using it returns. Transients: x² (4nh), the mean and mean + eps (4n each), x·rsqrt
    (4nh, the normalized tensor itself in fp32)."""
    u, r = FP32 * n * h, FP32 * n
    if mixed or p == FP32:
        t.rename(inp, norm + ": fp32 input")
    else:
        t.alloc(norm + ": fp32 input", u)
    t.alloc(norm + ": x²", u)
    t.alloc(norm + ": mean", r)
    t.free(norm + ": x²")
    t.alloc(norm + ": + eps", r)
    t.alloc(norm + ": 1/rms", r)
    t.free(norm + ": + eps")
    if mixed or p == FP32:
        t.alloc(norm + ": normalized", u)
        t.alloc(norm + (": out" if mixed else ": × weight"), u)
    else:
        t.alloc(norm + ": x·rsqrt", u)
        t.alloc(norm + ": normalized", p * n * h)
        t.alloc(norm + ": × weight", p * n * h)
        t.free(norm + ": x·rsqrt")
    t.free(norm + ": mean")


def rope_forward(t, x: str, e: int, p: int, mixed: bool) -> None:
    """RoPE on the projection `x proj` (e elements): x·cos, rotate_half (a negated half and a cat)
    times sin, summed into `x roped` (p·e; fp32 under autocast, where cos and sin are fp32)."""
    pr = FP32 if mixed else p
    t.alloc(x + "·cos", pr * e)
    t.alloc(x + " neg half", p * e // 2)
    t.alloc(x + " rotate_half", p * e)
    t.free(x + " neg half")
    t.alloc(x + " rotate_half·sin", pr * e)
    t.free(x + " rotate_half")
    t.alloc(x + " roped", pr * e)
    t.free(x + " rotate_half·sin", x + "·cos")


def gelu_tanh_forward(t, x: str, out: str, e: int, p: int) -> None:
    """transformers' NewGELUActivation (gelu_new), written out: 0.5·x·(1 + tanh(√(2/π)·(x +
    0.044715·x³))) on `x` (e elements, kept): it keeps 0.5·x, the tanh and 1 + tanh, and makes
    the product `out` (p·e each); x³, 0.044715·x³, their sum and its scaling are transients."""
    pe = p * e
    t.alloc(out + ": 0.5x", pe)
    t.alloc(out + ": x³", pe)
    t.alloc(out + ": 0.044715x³", pe)
    t.free(out + ": x³")
    t.alloc(out + ": x + 0.044715x³", pe)
    t.free(out + ": 0.044715x³")
    t.alloc(out + ": ·√(2/π)", pe)
    t.free(out + ": x + 0.044715x³")
    t.alloc(out + ": tanh", pe)
    t.free(out + ": ·√(2/π)")
    t.alloc(out + ": 1 + tanh", pe)
    t.alloc(out, pe)


def gelu_tanh_backward(t, x: str, out: str, gy: str, e: int, p: int) -> str:
    """The backward of `gelu_tanh_forward` from the gradient of its output `gy` to the gradient of
    x (p·e; returned as the name `d x`): the two factors' gradients, tanh's, the scaling, the
    cube's (x², 3x², the product) and two sums into x's gradient; what the activation kept and
    x are freed as their last users finish."""
    pe = p * e
    t.alloc(out + ": d 0.5x", pe)
    t.alloc(out + ": d 1 + tanh", pe)
    t.free(gy, out + ": 1 + tanh", out + ": 0.5x")
    t.alloc(out + ": d tanh in", pe)
    t.free(out + ": d 1 + tanh", out + ": tanh")
    t.alloc("d " + x, pe)  # through the scaling; the sum hands it to x unchanged
    t.free(out + ": d tanh in")
    t.alloc(out + ": d 0.044715x³", pe)
    t.alloc(out + ": x²", pe)
    t.alloc(out + ": 3x²", pe)
    t.alloc(out + ": d x (cube)", pe)
    t.free(out + ": 3x²", out + ": x²", out + ": d 0.044715x³", x)
    add_into(t, "d " + x, out + ": d x (cube)", pe)
    t.alloc(out + ": d x (0.5x)", pe)
    t.free(out + ": d 0.5x")
    add_into(t, "d " + x, out + ": d x (0.5x)", pe)
    return "d " + x


def gelu_fast_forward(t, x: str, out: str, e: int, p: int) -> None:
    """transformers' FastGELUActivation (gelu_fast), written out: 0.5·x·(1 + tanh(x·0.7978845608·
    (1 + 0.044715·x·x))) on `x` (e elements, kept): it keeps 0.5·x, x·0.79788, 0.044715·x,
    1 + 0.044715·x², the tanh and 1 + tanh, and makes the product `out` (p·e each)."""
    pe = p * e
    for k in ("0.5x", "x·c", "0.044715x", "0.044715x²"):
        t.alloc(f"{out}: {k}", pe)
    t.alloc(out + ": 1 + 0.044715x²", pe)
    t.free(out + ": 0.044715x²")
    t.alloc(out + ": tanh in", pe)
    t.alloc(out + ": tanh", pe)
    t.free(out + ": tanh in")
    t.alloc(out + ": 1 + tanh", pe)
    t.alloc(out, pe)


def gelu_fast_backward(t, x: str, out: str, gy: str, e: int, p: int) -> str:
    """The backward of `gelu_fast_forward` from the gradient of its output `gy` to the gradient of
    x (p·e; returned as the name `d x`): each product's two gradients, tanh's, and four sums into
    x's gradient; what the activation kept and x go as their last users finish."""
    pe = p * e
    o = out + ": "
    t.alloc(o + "d 0.5x", pe)
    t.alloc(o + "d 1 + tanh", pe)
    t.free(gy, o + "1 + tanh", o + "0.5x")
    t.alloc(o + "d tanh in", pe)
    t.free(o + "d 1 + tanh", o + "tanh")
    t.alloc(o + "d x·c", pe)
    t.alloc(o + "d 1 + 0.044715x²", pe)
    t.free(o + "d tanh in", o + "1 + 0.044715x²", o + "x·c")
    t.alloc(o + "d 0.044715x", pe)
    t.alloc("d " + x, pe)  # the first of its four gradients: through 0.044715x·x
    t.free(o + "d 1 + 0.044715x²", x, o + "0.044715x")
    for k, c in (("d 0.044715x", "0.044715"), ("d x·c", "c"), ("d 0.5x", "0.5")):
        t.alloc(o + f"d x ({c})", pe)
        t.free(o + k)
        add_into(t, "d " + x, o + f"d x ({c})", pe)
    return "d " + x


def partial_rope_forward(t, rot: int, e: int, p: int, mixed: bool, cat: bool) -> None:
    """RoPE on the first `rot` elements of q and k (e elements each, views of the projections):
    each rotated part as `rope_forward` makes it (x·cos, rotate_half·sin, their sum), then, with
    `cat`, concatenated with the unrotated rest into "q" and "k" (p·e each, kept). Under autocast
    the rotated part is fp32 (fp32 cos and sin): the rest is cast to fp32 for the cat, which is
    fp32 ("q cat", "k cat", 4e each, not kept: attention keeps its own casts)."""
    for x in ("q", "k"):
        rope_forward(t, x, rot, p, mixed)
    if cat:
        for x in ("q", "k"):
            if mixed:
                t.alloc(x + " pass fp32", FP32 * (e - rot))
                t.alloc(x + " cat", FP32 * e)
                t.free(x + " pass fp32", x + " roped")
            else:
                t.alloc(x, p * e)
                t.free(x + " roped")


def partial_rope_backward(t, rot: int, e: int, p: int, mixed: bool = False, last: bool = False) -> None:
    """The backward of `partial_rope_forward` from "dq" and "dk" (e elements each): each rotated
    part back through RoPE (as `rope_backward`), then the gradients of the rotated and the
    unrotated part each scattered back to full size (slice_backward, p·e) and summed into "dq"
    and "dk". Under autocast the gradients come back through attention's casts to fp32 (4e)
    and the unrotated part's is cast back to p first. `last`: the last use of cos and sin."""
    if mixed:
        for x in ("dq", "dk"):
            t.alloc(x + " fp32", FP32 * e)
            t.free(x)
        for x in ("dq", "dk"):
            t.alloc(x + " pass", p * (e - rot))

    def product(name: str, table: str, x: str) -> None:
        if mixed:
            t.alloc(name + " fp32", FP32 * rot)
            t.alloc(name, p * rot)
            t.free(name + " fp32")
        else:
            t.alloc(name, p * rot)
        if last and x == "dk":
            t.free(table)

    for x in ("dq", "dk"):
        pe = p * rot
        product(x + "·sin", "/sin", x)
        t.alloc(x + " neg half", pe // 2)
        t.alloc(x + " slice 1", pe)
        t.free(x + " neg half")
        t.alloc(x + " slice 2", pe)
        t.free(x + "·sin")
        t.alloc(x + " rotate_half", pe)
        t.free(x + " slice 1", x + " slice 2")
        product(x + "·cos", "/cos", x)
        if mixed:
            t.free(x + " fp32")
        t.alloc(x + " rot", pe)
        t.free(x + " rotate_half", x + "·cos")
    for x in ("dq", "dk"):
        t.alloc(x + " pass full", p * e)
        t.free(x + " pass" if mixed else x)
        t.alloc(x + " rot full", p * e)
        t.free(x + " rot")
        t.alloc(x + " sum", p * e)
        t.free(x + " pass full", x + " rot full")
        t.rename(x + " sum", x)


def layernorm_head_saved(s, spec) -> dict[str, int]:
    """A final LayerNorm ("ln_f") and the head after it at the forward/backward boundary: ln_f's
    input, mean and 1/std (the stream's dtype) and, kept by the head, ln_f's output (pure
    precision) or, under autocast, the head's cast of it and its weight copy (V·h·p)."""
    p, B, S, n, mixed, stream = dims(s, spec)
    out = {"ln_f: input": stream * n * s.h, "ln_f: mean": stream * n, "ln_f: rstd": stream * n}
    if mixed:
        out.update({"head input cast": p * n * s.h, "head weight copy": p * s.V * s.h})
    else:
        out["ln_f: out"] = p * n * s.h
    return out


def layernorm_head_backward(t, s, spec, bias: int = 0) -> None:
    """From the logits' gradient to the last layer's output's ("dy"): the head's backward (its
    weight's gradient V·h·p_w, the embedding's first one when tied; `bias` elements of bias) and
    ln_f's."""
    p, B, S, n, mixed, stream = dims(s, spec)
    saved = ("head weight copy", "head input cast") if mixed else ("ln_f: out",)
    linear_backward(t, "embedding" if s.tied else "head", s.V * s.h, "ln_f: gy", n * s.h, p, mixed, ("grad logits",),
                    cast_input=mixed, saved=saved, bias=bias)
    t.rename(layernorm_backward(t, "ln_f", "ln_f: gy", n, s.h, stream, stream, None), "dy")


def layernorm_stats(t, ln: str, n: int, h: int, p: int) -> None:
    """A LayerNorm on a tensor another norm keeps already (parallel attention and MLP reading the
    same input): only its output (p·nh) and its mean and 1/std (p·n each) are new."""
    t.alloc(ln + ": out", p * n * h)
    t.alloc(ln + ": mean", p * n)
    t.alloc(ln + ": rstd", p * n)
