"""A lean allocation tracker: every tensor storage created under it, its size, its category, and
the running total, on fake tensors and on real CPU/CUDA tensors alike.

A TorchDispatchMode sees each op's outputs; an output whose storage it has not seen is a new
allocation (bytes = `untyped_storage().nbytes()`), and a weak reference to that storage reports
its free. Tensors that exist before tracking starts (weights, inputs) are registered with `add`.
Categories come from identity (weights, buffers, grads, optimizer state, KV cache: `relabel`)
and otherwise from the phase a storage was allocated in: storages made during the forward
phase are ACTIVATIONS, during any other phase TRANSIENT. The tracker keeps, per category, the
bytes live now; the peak of the total with its per-category breakdown; and per-phase peaks.

No module hooks and no per-op walk over live tensors: the cost per op is one dict lookup per
output, which is what keeps a 7B training step traceable in seconds.
"""

from __future__ import annotations

import weakref
from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from verify.measure.memory import Category

BUFFERS = "buffers"  # module buffers (RoPE inv_freq, masks): not parameters, still memory


class Tracker(TorchDispatchMode):
    """Count bytes of live storages by category; use as a context manager around the work."""

    def __init__(self, forward_phases: tuple[str, ...] = ("forward", "prefill", "decode")):
        super().__init__()
        self.forward_phases = set(forward_phases)  # phases whose new storages are ACTIVATIONS
        self.phase = "setup"  # current phase name, set with `mark`
        self.live: dict[int, list] = {}  # storage key -> [nbytes, category, weakref]
        self.by_cat: dict[str, int] = defaultdict(int)  # category -> live bytes now
        self.total = 0  # live bytes now
        self.peak = 0  # highest total since the last `reset_peak`
        self.at_peak: dict[str, int] = {}  # category -> bytes at that peak
        self.peak_phase = ""  # phase in which that peak happened
        self.phase_peaks: dict[str, int] = {}  # phase -> highest total seen in it
        self.snapshots: dict[str, dict[str, int]] = {}  # name -> category bytes, taken by `snapshot`

    # --- bookkeeping -----------------------------------------------------------------------

    def _new(self, st, category: str) -> None:
        key = st._cdata
        if key in self.live:
            return
        n = st.nbytes()
        ref = weakref.ref(st, lambda _r, k=key: self._free(k))
        self.live[key] = [n, category, ref]
        self.by_cat[category] += n
        self.total += n
        if self.total > self.peak:
            self.peak = self.total
            self.at_peak = dict(self.by_cat)
            self.peak_phase = self.phase
        if self.total > self.phase_peaks.get(self.phase, 0):
            self.phase_peaks[self.phase] = self.total

    def _free(self, key: int) -> None:
        entry = self.live.pop(key, None)
        if entry is not None:
            self.by_cat[entry[1]] -= entry[0]
            self.total -= entry[0]

    def _default_category(self) -> str:
        return (Category.ACTIVATIONS if self.phase in self.forward_phases else Category.TRANSIENT).value

    # --- public API --------------------------------------------------------------------------

    def add(self, tensors, category: Category | str) -> None:
        """Register tensors that exist already (weights, inputs) under `category`; a storage seen
        before is moved to `category`."""
        self.relabel(tensors, category)

    def relabel(self, tensors, category: Category | str) -> None:
        """Put the storages of `tensors` (a tensor or any pytree of them) in `category`."""
        cat = category.value if isinstance(category, Category) else category
        for t in tree_leaves(tensors):
            if not isinstance(t, torch.Tensor):
                continue
            st = t.untyped_storage()
            entry = self.live.get(st._cdata)
            if entry is None:
                self._new(st, cat)
            elif entry[1] != cat:
                self.by_cat[entry[1]] -= entry[0]
                self.by_cat[cat] += entry[0]
                entry[1] = cat

    def mark(self, phase: str) -> None:
        """Enter `phase`: later allocations are labelled by it and its peak is kept apart."""
        self.phase = phase
        self.phase_peaks[phase] = max(self.phase_peaks.get(phase, 0), self.total)

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

    def bytes(self, category: Category | str) -> int:
        cat = category.value if isinstance(category, Category) else category
        return self.by_cat.get(cat, 0)

    # --- the mode ----------------------------------------------------------------------------

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        cat = None
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                if st._cdata not in self.live:
                    self._new(st, cat or (cat := self._default_category()))
        return out
