"""GPU memory sizes as the driver reports them, and what of it a training step or a generation can use.

A card sold as "80 GB" is neither 80·10^9 nor 80·2^30 bytes: an H100 80GB HBM3 shows 81,559 MiB
in nvidia-smi (85.52 GB, 79.65 GiB). Each card below carries the total nvidia-smi printed in a
published output (MiB × 2^20 bytes), where it was published, and the driver it was printed by;
where a published CUDA figure exists too (deviceQuery's "Total amount of global memory", the
total CUDA itself hands out), it is kept beside it, because recent drivers count in nvidia-smi's
total a reserve that CUDA never hands out (A100-SXM4-40GB: 40,960 MiB in nvidia-smi, 40,339 MiB
in deviceQuery; older drivers, like the 418 and 440 of the V100 figures, printed the smaller one).

usable = total − CUDA context − allocator margin, where total is CUDA's figure where one was
published and nvidia-smi's otherwise (then an upper bound by the driver's reserve). Cards whose
figure was not found in a published output are left out rather than guessed: NOT_FOUND.

Pure: no torch, nothing measured here.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from verify.units import UNITS, GiB

MiB = UNITS["MiB"]

# The CUDA context: the driver's per-process state and the kernels loaded into it, held outside
# PyTorch's allocator. Published figures with lazy module loading (CUDA >= 11.7, PyTorch's default
# since 1.13, pytorch/pytorch#86509): 287,047,680 bytes for torch 1.13 (#86509, eager loading:
# 666,632,192), "~300MB" (ptrblck, pytorch/pytorch#107667, 2023), "around 400MB" (ptrblck,
# pytorch/pytorch#109888, 2023). No published figure per GPU generation was found. A training
# step loads more kernels (cuBLAS, SDPA, the optimizer's foreach kernels) than the bare
# initialisation those figures measure, so the largest is rounded up to 512 MiB.
CUDA_CONTEXT_BYTES = 512 * MiB

# The caching allocator's margin, as a fraction of the card: the peak measured here is bytes
# allocated (torch.cuda.max_memory_allocated), but the allocator serves them from cached
# segments (large requests rounded to 2 MiB, 1-10 MiB requests packed in 20 MiB blocks), and a
# request fails when no free segment piece is large enough even though the free bytes add up
# (fragmentation; pytorch/pytorch#44742 describes 13 GB held in split free blocks on a 32 GB
# card before oversize blocks stopped being split). PyTorch frees its cache and retries before
# it raises, so the margin is for fragmentation alone. No published measure of it per model was
# found: 2 % of the card is a stated choice, not a measurement.
ALLOCATOR_MARGIN_FRACTION = 0.02

MODAL_TABLE = ("modal-labs/modal-client#2797 (nvidia-smi totals of Modal's GPUs, 2025-01) and "
               "thundergolfer.com/blog/nvidia-gpu-memory-capacity")
LENT_MACHINE = "nvidia-smi on a machine lent to this project (2026-11)"


@dataclass(frozen=True)
class Gpu:
    """One card's memory as published."""

    name: str  # what `--gpu` takes (case and separators do not matter)
    aliases: tuple[str, ...]  # other spellings `--gpu` accepts
    product: str  # the name nvidia-smi prints
    nvidia_smi_bytes: int  # nvidia-smi's "Memory-Usage" total, MiB × 2^20
    nvidia_smi_source: str  # where that total was published (and by which driver)
    cuda_bytes: int | None = None  # CUDA's own total (deviceQuery totalGlobalMem) where published; None: not found
    cuda_source: str | None = None  # where CUDA's total was published
    arch: str = "sm90"  # compute capability, as verify.formulas.cuda.ARCHS names it: the CUDA terms a run on it models

    @property
    def total_bytes(self) -> int:
        """What CUDA can hand out at most: its own published total, else nvidia-smi's."""
        return self.cuda_bytes if self.cuda_bytes is not None else self.nvidia_smi_bytes

    def budget(self) -> Budget:
        margin = int(ALLOCATOR_MARGIN_FRACTION * self.total_bytes)
        return Budget(name=self.name, total_bytes=self.total_bytes, context_bytes=CUDA_CONTEXT_BYTES,
                      margin_bytes=margin, source=self.cuda_source or self.nvidia_smi_source,
                      total_is=("CUDA's total, deviceQuery" if self.cuda_bytes is not None else
                                "nvidia-smi's total; CUDA's own, lower by the driver's reserve, not published for this card"))


@dataclass(frozen=True)
class Budget:
    """The bytes a run may allocate on one GPU, term by term."""

    name: str  # the card, or "custom" for --gpu-gib
    total_bytes: int  # the card's total
    context_bytes: int  # the CUDA context (CUDA_CONTEXT_BYTES; 0 for a custom size)
    margin_bytes: int  # the allocator margin (ALLOCATOR_MARGIN_FRACTION of the total; 0 for a custom size)
    source: str  # where the total comes from
    total_is: str  # which total it is

    @property
    def usable_bytes(self) -> int:
        return self.total_bytes - self.context_bytes - self.margin_bytes

    def as_dict(self) -> dict:
        return {"gpu": self.name, "total_bytes": self.total_bytes, "cuda_context_bytes": self.context_bytes,
                "allocator_margin_bytes": self.margin_bytes, "usable_bytes": self.usable_bytes,
                "total_is": self.total_is, "source": self.source}


def custom(gib: float) -> Budget:
    """A size the user gives (`--gpu-gib`): all of it usable, nothing subtracted."""
    n = int(gib * GiB)
    return Budget(name=f"custom {gib:g} GiB", total_bytes=n, context_bytes=0, margin_bytes=0,
                  source="--gpu-gib", total_is="--gpu-gib, all of it usable")


GPUS = (
    Gpu("H100-SXM", ("H100", "H100-80GB", "H100-SXM5", "H100 80GB HBM3"), "NVIDIA H100 80GB HBM3", 81559 * MiB,
        "NVIDIA/nccl#1264 (driver 550.54.15); " + LENT_MACHINE + " (driver 580.159.04); " + MODAL_TABLE, arch="sm90"),
    Gpu("H200", ("H200-141GB", "H200-SXM"), "NVIDIA H200", 143771 * MiB,
        LENT_MACHINE + " (driver 580.159.03); " + MODAL_TABLE, arch="sm90"),
    Gpu("A100-80GB", ("A100-SXM4-80GB", "A100 80GB"), "NVIDIA A100-SXM4-80GB", 81920 * MiB,
        MODAL_TABLE + "; 81920MiB also for the A800-SXM4-80GB in dexmal/dexbotic#41 (driver 535.86.10)", arch="sm80"),
    Gpu("A100-40GB", ("A100-SXM4-40GB", "A100 40GB"), "NVIDIA A100-SXM4-40GB", 40960 * MiB, MODAL_TABLE,
        cuda_bytes=42_298_834_944,
        cuda_source="deviceQuery on NVIDIA A100-SXM4-40GB, bottlerocket-os/bottlerocket#3873 (CUDA driver 12.2): "
                    "40339 MBytes (42298834944 bytes)", arch="sm80"),
    Gpu("L40S", (), "NVIDIA L40S", 46068 * MiB, MODAL_TABLE, arch="sm89"),
    Gpu("L4", (), "NVIDIA L4", 23034 * MiB, MODAL_TABLE, arch="sm89"),
    Gpu("A10G", (), "NVIDIA A10G", 23028 * MiB,
        "NVIDIA/TensorRT-LLM#7818 (driver 570.172.08); NVIDIA/DCGM#232 (driver 535.247.01)", arch="sm86"),
    Gpu("A10", (), "NVIDIA A10", 23028 * MiB,
        MODAL_TABLE + "; NVML total 24146608128 bytes in mayooot/detect-gpu#3 (driver 535.129.03)", arch="sm86"),
    Gpu("RTX-4090", ("4090", "GeForce RTX 4090"), "NVIDIA GeForce RTX 4090", 24564 * MiB, "RLinf/RLinf#255 (driver 550.163.01)", arch="sm89"),
    Gpu("RTX-3090", ("3090", "GeForce RTX 3090"), "NVIDIA GeForce RTX 3090", 24576 * MiB,
        "noonghunna/club-3090#1128 (driver 595.84); driver 455.23.04 printed 24268MiB (pytorch/pytorch#54564)", arch="sm86"),
    Gpu("V100-32GB", ("V100-SXM2-32GB",), "Tesla V100-SXM2-32GB", 32480 * MiB, "godweiyang/GrabGPU#5 (driver 418.116.00)", arch="sm70"),
    Gpu("V100-16GB", ("V100-SXM2-16GB",), "Tesla V100-SXM2-16GB", 16160 * MiB,
        "4paradigm/k8s-vgpu-scheduler#7 (driver 440.64.00)", arch="sm70"),
    Gpu("T4", (), "Tesla T4", 15360 * MiB, MODAL_TABLE, cuda_bytes=15_843_721_216,
        cuda_source="deviceQuery on Tesla T4, chiemon.github.io/2024/12/25 (CUDA 11.0 driver): 15110 MBytes (15843721216 bytes)", arch="sm75"),
)

# asked for but no published figure found that names the card and its total together
NOT_FOUND = {
    "H100-PCIe": "nvidia-smi outputs with 81559MiB were found only in files the code index does not name, and one "
                 "test fixture shows 81920MiB: no citable figure",
}


def _key(s: str) -> str:
    return "".join(ch for ch in s.lower() if ch.isalnum())


def names() -> list[str]:
    return [g.name for g in GPUS]


def lookup(name: str) -> Gpu:
    """The card `name` names (any alias; case, spaces and dashes ignored). ValueError, one line
    listing the names and the nearest ones, if none does."""
    key = _key(name)
    for g in GPUS:
        if key in {_key(n) for n in (g.name, g.product, *g.aliases)}:
            return g
    spellings = {_key(n): g.name for g in GPUS for n in (g.name, *g.aliases)}
    near = list(dict.fromkeys(spellings[k] for k in difflib.get_close_matches(key, spellings, n=3, cutoff=0.5)))
    missing = next((f" ({k}: {why})" for k, why in NOT_FOUND.items() if _key(k) == key), "")
    hint = f"did you mean {' or '.join(near)}? " if near else ""
    raise ValueError(f"unknown GPU {name!r}{missing}; {hint}known: {', '.join(names())}; or give --gpu-gib G")
