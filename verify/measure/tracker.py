"""The one allocation tracker: every tensor storage created under it, its size, its category, and
the running total, on fake tensors, real CPU/CUDA tensors and sharded (DTensor) ones alike.

A TorchDispatchMode sees each op's outputs; an output whose storage it has not seen is a new
allocation (bytes = `untyped_storage().nbytes()`; a DTensor counts its local shard), and a weak
reference to that storage reports its free. Tensors that exist before tracking starts (weights,
inputs) are registered with `add`. Categories come from identity (weights, buffers, grads,
optimizer state, KV cache: `relabel`) and otherwise from the phase a storage was allocated in:
storages made during a forward phase are ACTIVATIONS, during any other phase TRANSIENT. With
`follow_resizes`, storage resizes (FSDP2 frees and re-gathers parameters that way) change the
count too. The tracker keeps, per category, the bytes live now; the peak of the total with its
per-category breakdown; per-phase peaks and seconds; and, with `timeline`, the total after every
increase by op count, which `segments` cuts into stretches.

With `model_gpu(ops)` it also keeps what the same step would book on a CUDA device
(verify/formulas/cuda.py): every storage at the caching allocator's rounded size, extras tied to
a storage's life (`attach`), terms from a moment on (`add_term`), host-resident storages
(`host`, booked at 0), and buffers that live only inside one op (`spike`); `ops` maps an aten
op to a function called after it with (tracker, args, kwargs, out). The peak of that modelled
total is kept apart (`gpu_peak`, with the categories and terms at that moment).

No module hooks and no per-op walk over live tensors: the cost per op is one dict lookup per
output (and, modelling a GPU, one more per op and a few integer adds per allocation), which is
what keeps a 7B training step traceable in seconds.
"""

from __future__ import annotations

import time
import weakref
from collections import defaultdict
from contextlib import ExitStack

import torch

from verify.formulas.cuda import K_SMALL_SIZE, round_size
from verify.measure.memory import Category
from verify.torchapi import TorchDispatchMode, follow_storage_resizes, storage_key, storages, tree_leaves


HOST = "host-resident on a GPU run"  # the term under which host storages are taken off the modelled total


def _cat(category: Category | str) -> str:
    return category.value if isinstance(category, Category) else category


class Tracker(TorchDispatchMode):
    """Count bytes of live storages by category; use as a context manager around the work."""

    def __init__(self, forward_phases: tuple[str, ...] = ("forward", "prefill", "decode"), timeline: bool = False,
                 follow_resizes: bool = False):
        super().__init__()
        self.forward_phases = set(forward_phases)  # phases whose new storages are ACTIVATIONS
        self.keep_timeline = timeline  # keep (op count, total) after every increase, for `segments`
        self.follow_resizes = follow_resizes  # count UntypedStorage.resize_ (FSDP2's frees and re-gathers)
        self.phase = "setup"  # current phase name, set with `mark`
        self.live: dict[int, list] = {}  # storage key -> [nbytes, category, weakref, op count at allocation]
        self.by_cat: dict[str, int] = defaultdict(int)  # category -> live bytes now
        self.total = 0  # live bytes now
        self.peak = 0  # highest total since the last `reset_peak`
        self.at_peak: dict[str, int] = {}  # category -> bytes at that peak
        self.peak_phase = ""  # phase in which that peak happened
        self.phase_peaks: dict[str, int] = {}  # phase -> highest total seen in it
        self.phase_seconds: dict[str, float] = {}  # phase -> wall seconds spent in it
        self.snapshots: dict[str, dict[str, int]] = {}  # name -> category bytes, taken by `snapshot`
        self.ops = 0  # ops seen so far
        self.phase_starts: list[tuple[int, str]] = []  # (op count, phase) at each `mark`
        self.timeline: list[tuple[int, int]] = []  # (op count, total) after every increase (timeline=True)
        self._since = (time.perf_counter(), "setup")
        self._exits: ExitStack | None = None
        # the modelled GPU (model_gpu); None: trace only
        self.gpu_ops: dict | None = None  # aten op -> handler(tracker, args, kwargs, out), called after the op
        self.gpu_delta = 0  # modelled GPU bytes now minus the traced total now (sum of the terms below)
        self.rounding = 0  # Σ(round512(n) − n) over live device storages now
        self.gpu_terms_now: dict[str, int] = {}  # other modelled term -> bytes now (attach, add_term, host)
        self.gpu_peak = 0  # highest modelled total since the last reset_peak
        self.gpu_peak_at: dict = {}  # at that peak: "trace" (traced total), "categories", "terms", "phase"
        self.record_live_at_gpu_peak = False  # keep the sizes of the live storages at each new gpu peak (tests)
        self.gpu_live_at_peak: list[tuple[int, bool]] = []  # (nbytes, host-resident) per live storage at the gpu peak
        self.large_now = 0  # live storages above 1 MiB (the large pool: whole-block bound)

    # --- bookkeeping -----------------------------------------------------------------------

    def _new(self, st, category: str) -> None:
        key = storage_key(st)
        if key in self.live:
            return
        n = st.nbytes()
        entry = [n, category, weakref.ref(st, lambda _r, k=key: self._free(k)), self.ops]
        self.live[key] = entry
        self.by_cat[category] += n
        self.total += n
        if self.gpu_ops is not None:
            self._book_on_gpu(entry)
        self._update()

    def _book_on_gpu(self, entry: list) -> None:
        """Extend a live storage's entry for the modelled GPU: its rounding and no attached extras yet;
        count it in the large pool if it is above 1 MiB."""
        n = entry[0]
        r = round_size(n) - n
        entry += [r, None]  # rounding, attached (term, bytes) extras
        self.rounding += r
        self.gpu_delta += r
        self.large_now += n > K_SMALL_SIZE

    def _update(self) -> None:
        if self.total > self.peak:
            self.peak = self.total
            self.at_peak = dict(self.by_cat)
            self.peak_phase = self.phase
        if self.gpu_ops is not None and self.total + self.gpu_delta > self.gpu_peak:
            self._gpu_peak_now()
        if self.total > self.phase_peaks.get(self.phase, 0):
            self.phase_peaks[self.phase] = self.total
        if self.keep_timeline:
            self.timeline.append((self.ops, self.total))

    def _free(self, key: int) -> None:
        entry = self.live.pop(key, None)
        if entry is not None:
            self.by_cat[entry[1]] -= entry[0]
            self.total -= entry[0]
            if len(entry) > 4:
                self.rounding -= entry[4]
                self.gpu_delta -= entry[4]
                if entry[0] > K_SMALL_SIZE:
                    self.large_now -= 1
                for term, b in entry[5] or ():
                    self._term(term, -b)

    def _resized(self, st) -> None:
        entry = self.live.get(storage_key(st))
        if entry is None:
            return
        n = st.nbytes()
        self.by_cat[entry[1]] += n - entry[0]
        self.total += n - entry[0]
        if len(entry) > 4:  # the large pool counts the storage at its size now, as _free uncounts it
            self.large_now += (n > K_SMALL_SIZE) - (entry[0] > K_SMALL_SIZE)
        entry[0] = n
        if len(entry) > 4 and entry[5] is None:
            r = round_size(n) - n
            self.rounding += r - entry[4]
            self.gpu_delta += r - entry[4]
            entry[4] = r
        self._update()

    def _term(self, term: str, b: int) -> None:
        self.gpu_terms_now[term] = self.gpu_terms_now.get(term, 0) + b
        self.gpu_delta += b

    def _gpu_peak_now(self, spike: dict[str, int] | None = None) -> None:
        self.gpu_peak = self.total + self.gpu_delta + (sum(spike.values()) if spike else 0)
        terms = {"allocator rounding": self.rounding, **self.gpu_terms_now, **(spike or {})}
        self.gpu_peak_at = {"trace": self.total, "categories": dict(self.by_cat), "terms": terms, "phase": self.phase,
                            "large_storages": self.large_now}
        if self.record_live_at_gpu_peak:
            self.gpu_live_at_peak = [(e[0], e[5] is not None and any(t == HOST for t, _ in e[5])) for e in self.live.values()]

    # --- public API --------------------------------------------------------------------------

    def default_category(self) -> str:
        """The category of a storage allocated now: ACTIVATIONS in a forward phase, else TRANSIENT."""
        return (Category.ACTIVATIONS if self.phase in self.forward_phases else Category.TRANSIENT).value

    def add(self, tensors, category: Category | str) -> None:
        """Register tensors that exist already (weights, inputs) under `category`; a storage seen
        before is moved to `category`."""
        self.relabel(tensors, category)

    def relabel(self, tensors, category: Category | str) -> None:
        """Put the storages of `tensors` (a tensor or any pytree of them) in `category`."""
        cat = _cat(category)
        for t in tree_leaves(tensors):
            if not isinstance(t, torch.Tensor):
                continue
            for st in storages(t):
                entry = self.live.get(storage_key(st))
                if entry is None:
                    self._new(st, cat)
                elif entry[1] != cat:
                    self.by_cat[entry[1]] -= entry[0]
                    self.by_cat[cat] += entry[0]
                    entry[1] = cat

    def model_gpu(self, ops: dict) -> None:
        """From now on also keep the modelled CUDA total; `ops` maps aten ops to handlers. Storages
        already live are booked at their rounded size."""
        self.gpu_ops = ops
        for entry in self.live.values():
            if len(entry) == 4:
                self._book_on_gpu(entry)
        self._gpu_peak_now()

    def attach(self, t, term: str, nbytes: int) -> None:
        """Book `nbytes` more under `term` for as long as the storage behind tensor `t` lives (a
        GPU kernel keeps a bigger or an extra buffer beside it)."""
        entry = self.live.get(storage_key(storages(t)[0])) if self.gpu_ops is not None else None
        if entry is None or not nbytes:
            return
        entry[5] = (*(entry[5] or ()), (term, nbytes))
        self._term(term, nbytes)
        self._update()

    def host(self, tensors) -> None:
        """The storages of `tensors` live in host memory on a GPU run: booked at 0 (their rounding
        dropped, their bytes taken off under the HOST term)."""
        if self.gpu_ops is None:
            return
        for t in tree_leaves(tensors):
            if not isinstance(t, torch.Tensor):
                continue
            for st in storages(t):
                entry = self.live.get(storage_key(st))
                if entry is None or (entry[5] and any(term == HOST for term, _ in entry[5])):
                    continue
                self.rounding -= entry[4]
                self.gpu_delta -= entry[4]
                entry[4] = 0
                entry[5] = (*(entry[5] or ()), (HOST, -entry[0]))
                self._term(HOST, -entry[0])

    def add_term(self, term: str, nbytes: int) -> None:
        """Book `nbytes` under `term` from now on (a workspace allocated once and kept)."""
        if self.gpu_ops is not None and nbytes:
            self._term(term, nbytes)
            self._update()

    def spike(self, terms: dict[str, int]) -> None:
        """Buffers a GPU kernel holds only while the current op runs: a peak candidate now."""
        extra = sum(terms.values())
        if self.gpu_ops is not None and extra > 0 and self.total + self.gpu_delta + extra > self.gpu_peak:
            self._gpu_peak_now({k: v for k, v in terms.items() if v})

    def mark(self, phase: str) -> None:
        """Enter `phase`: later allocations are labelled by it and its peak is kept apart."""
        now = time.perf_counter()
        last = self._since[1]
        self.phase_seconds[last] = round(self.phase_seconds.get(last, 0.0) + now - self._since[0], 3)
        self._since = (now, phase)
        self.phase = phase
        self.phase_starts.append((self.ops, phase))
        self.phase_peaks[phase] = max(self.phase_peaks.get(phase, 0), self.total)
        if self.keep_timeline:
            self.timeline.append((self.ops, self.total))

    def snapshot(self, name: str) -> dict[str, int]:
        """Keep (and return) the live bytes per category now under `name`."""
        snap = {k: v for k, v in self.by_cat.items() if v}
        snap["total"] = self.total
        self.snapshots[name] = snap
        return snap

    def reset_peak(self) -> None:
        """Forget peaks so far (the measured step starts here); live bytes stay."""
        self.peak = self.total
        self.at_peak = dict(self.by_cat)
        self.peak_phase = self.phase
        self.phase_peaks = {}
        if self.gpu_ops is not None:
            self._gpu_peak_now()

    def bytes(self, category: Category | str) -> int:
        return self.by_cat.get(_cat(category), 0)

    def allocated_at(self, t) -> int | None:
        """Op count at which the storage behind tensor `t` (a DTensor: its shard) was registered, or
        None if it is not tracked."""
        entry = self.live.get(storage_key(storages(t)[0]))
        return entry[3] if entry else None

    def segments(self, events: list[int]) -> list[dict]:
        """The peak of the total in each stretch of the run between phase changes and the op counts in
        `events` (sorted): [{"phase", "events_before" (how many events came before the stretch),
        "peak"}]. Needs timeline=True."""
        out: dict[tuple[str, int], int] = {}
        starts, p, k, phase = self.phase_starts, 0, 0, "setup"
        for op, live in self.timeline:
            while p < len(starts) and starts[p][0] <= op:
                phase = starts[p][1]
                p += 1
            while k < len(events) and events[k] <= op:
                k += 1
            key = (phase, k)
            if live > out.get(key, -1):
                out[key] = live
        return [{"phase": ph, "events_before": n, "peak": v} for (ph, n), v in out.items()]

    # --- the mode ----------------------------------------------------------------------------

    def __enter__(self):
        self._exits = ExitStack()
        if self.follow_resizes:
            self._exits.enter_context(follow_storage_resizes(self._resized))
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._exits.close()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        cat = None
        for t in ((out,) if isinstance(out, torch.Tensor) else tree_leaves(out)):
            if isinstance(t, torch.Tensor):
                for st in storages(t):
                    if storage_key(st) not in self.live:
                        self._new(st, cat or (cat := self.default_category()))
        if self.gpu_ops is not None:
            handler = self.gpu_ops.get(func)
            if handler is not None:
                handler(self, args, kwargs or {}, out)
        return out
