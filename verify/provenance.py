"""Where a result comes from: the machine (hardware), the code (a hash of the tracked files under
verify/ and models/, the git commit) and the library versions. A stored result is reused or shown
as current only when its fingerprint equals the one of the code and machine running now."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository (or source tree) holding verify/ and models/
CODE_DIRS = ("verify", "models")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def code_files() -> list[Path]:
    """The files whose bytes define the code: those git tracks under verify/ and models/ (every file
    there but caches when this is not a git checkout)."""
    listed = _git("ls-files", "-z", "--", *CODE_DIRS)
    if listed is not None:
        return sorted(ROOT / p for p in listed.split("\0") if p and (ROOT / p).is_file())
    return sorted(p for d in CODE_DIRS for p in (ROOT / d).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def code_hash() -> str:
    """sha256 over the paths and bytes (as they are in the working tree) of `code_files()`."""
    h = hashlib.sha256()
    for p in code_files():
        h.update(p.relative_to(ROOT).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def git_commit() -> str:
    """The short commit of HEAD, with "+uncommitted" when verify/ or models/ differ from it."""
    head = _git("rev-parse", "--short", "HEAD")
    if head is None:
        return "unknown"
    dirty = _git("status", "--porcelain", "--", *CODE_DIRS)
    return head.strip() + ("+uncommitted" if dirty and dirty.strip() else "")


def hardware() -> dict:
    """What runs the measurements: GPU (if any), CPU, memory, library versions."""
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        mem = None
    hw = {"gpu": None, "cpu": cpu, "cpu_cores": os.cpu_count(), "host_memory_bytes": mem,
          "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
          "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        hw.update(gpu=props.name, gpu_memory_bytes=props.total_memory, cuda_driver=_nvidia_driver())
    return hw


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def hardware_slug(hw: dict) -> str:
    """The report folder's name: the GPU's name, or "cpu"."""
    if hw.get("gpu"):
        return re.sub(r"[^a-z0-9]+", "-", hw["gpu"].lower()).strip("-")
    return "cpu"


def fingerprint(hw: dict) -> str:
    """One id for the code (its hash), the torch and transformers versions and the hardware (CPU and
    GPU names) that produce a result; the backend is recorded beside it."""
    key = {"code": code_hash(), "torch": hw["torch"], "transformers": hw["transformers"], "cpu": hw["cpu"], "gpu": hw.get("gpu")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def utc_now() -> str:
    """The current time, UTC, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
