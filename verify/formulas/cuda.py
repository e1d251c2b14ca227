"""What `torch.cuda.max_memory_allocated()` counts that a training step traced on the CPU device does
not see, or sees at another size: each a pure function of ints returning named terms in bytes.
Nothing here imports torch.

Sources (each function names its own). PyTorch C++/CUDA files were read as stored copies of
pytorch/pytorch in the code index; where the index named the commit it is given, where it only
gave a copy's index id, that id is given. The installed torch is 2.13.0 (git cf30153c4c13); its own
headers (include/c10/core/AllocatorConfig.h, include/ATen/cuda/CUDAContextLight.h), its Python
(torch/_meta_registrations.py, torch/optim/adam.py) and the PyPI metadata of the torch 2.13.0
Linux wheel (CUDA 13.0.3, nvidia-cudnn-cu13 9.20.0.48) were read directly and pin the facts the
stored C++ copies are checked against. flash-attn is Dao-AILab/flash-attention at commit
0251105a2fb1 (flash_attn 2.8.4).

Every worked example is a LLaMA-7B bf16 AdamW training step, B=1, S=2048 (h=4096, L=32, 32
heads of 128, V=32000, 291 parameter tensors) on an H100 SXM (sm90, 132 SMs) with that wheel.

Counted by max_memory_allocated, deterministic given the traced tensors, modelled:
  allocator_rounding, blas_workspaces, cublas_operand_copies, layernorm_stats, sdpa_flash_forward,
  flash_backward_temporaries, efficient_lse_padding, embedding_backward_temporaries.
Not counted (host memory) but traced: host_optimizer_scalars (a negative term).
Counted, not deterministic from the trace, not added: whole_block_extra (bounded by
whole_block_bound), the cuDNN SDPA workspace (cuDNN sizes it at run time), cub's sort scratch.
"""

from __future__ import annotations

from dataclasses import dataclass

from verify.units import FP32, INDEX_BYTES

# c10/core/AllocatorConfig.h of torch 2.13.0 (installed header), the same values as
# c10/cuda/CUDACachingAllocator.cpp at commit 001074d25084 (stored copy):
K_MIN_BLOCK_SIZE = 512  # "all sizes are rounded to at least 512 bytes"
K_SMALL_SIZE = 1_048_576  # "largest 'small' allocation is 1 MiB"
K_SMALL_BUFFER = 2_097_152  # "'small' allocations are packed in 2 MiB blocks"
K_MIN_LARGE_ALLOC = 10_485_760  # "allocations between 1 and 10 MiB may use kLargeBuffer"
K_LARGE_BUFFER = 20_971_520  # "'large' allocations may be packed in 20 MiB blocks" (CUDACachingAllocator.cpp)
K_ROUND_LARGE = 2_097_152  # "round up large allocations to 2 MiB"


@dataclass(frozen=True)
class Gpu:
    """The GPU and software a modelled run targets: what the kernel choices and sizes depend on."""

    name: str  # shown in reports
    sm: tuple[int, int]  # compute capability (major, minor)
    sms: int  # streaming multiprocessors (the embedding-backward heuristic reads it)
    cudnn: int  # cuDNN version as torch reports it (9.20.0 -> 92000)
    cuda_major: int  # CUDA runtime major version the wheel was built with


# torch 2.13.0's Linux wheel on PyPI requires cuda-toolkit 13.0.3 and nvidia-cudnn-cu13 9.20.0.48
H100 = Gpu(name="H100 SXM (sm90), torch 2.13.0 wheel: CUDA 13.0, cuDNN 9.20", sm=(9, 0), sms=132, cudnn=92000, cuda_major=13)
A100 = Gpu(name="A100 (sm80), torch 2.13.0 wheel: CUDA 13.0, cuDNN 9.20", sm=(8, 0), sms=108, cudnn=92000, cuda_major=13)
# The architectures a modelled run can target (MemorySpec.gpu_arch), each with the torch 2.13.0 wheel's
# software; the SM count (read only by the embedding-backward heuristic) is that of the card named.
ARCHS = {
    "sm90": H100,
    "sm80": A100,
    "sm89": Gpu(name="L40S (sm89), torch 2.13.0 wheel: CUDA 13.0, cuDNN 9.20", sm=(8, 9), sms=142, cudnn=92000, cuda_major=13),
    "sm86": Gpu(name="RTX A6000 (sm86), torch 2.13.0 wheel: CUDA 13.0, cuDNN 9.20", sm=(8, 6), sms=84, cudnn=92000, cuda_major=13),
    "sm75": Gpu(name="T4 (sm75), torch 2.13.0 wheel: CUDA 13.0, cuDNN 9.20", sm=(7, 5), sms=40, cudnn=92000, cuda_major=13),
    "sm70": Gpu(name="V100 (sm70), torch 2.13.0 wheel: CUDA 13.0, cuDNN 9.20", sm=(7, 0), sms=80, cudnn=92000, cuda_major=13),
}
DEFAULT_ARCH = "sm90"  # what the fake backend and the predictor model unless a run names a GPU (spec.gpu_arch)
DEFAULT_GPU = ARCHS[DEFAULT_ARCH]


def round_up(x: int, m: int) -> int:
    """x rounded up to a multiple of m."""
    return -(-x // m) * m


# --- the caching allocator --------------------------------------------------------------------


def round_size(n: int) -> int:
    """Bytes the caching allocator books for a request of n bytes: `round_size` in
    c10/cuda/CUDACachingAllocator.cpp (commit 001074d25084; the AcceleratorAllocatorConfig version
    of the same function is identical without roundup_power2_divisions, whose default in torch
    2.13.0's AllocatorConfig.h is empty): max(512, ⌈n/512⌉·512). A zero-byte storage books
    nothing (no block is requested for it)."""
    if n <= 0:
        return 0
    return max(K_MIN_BLOCK_SIZE, round_up(n, K_MIN_BLOCK_SIZE))


def allocator_rounding(sizes) -> dict[str, int]:
    """Σ(round_size(n) − n) over device storages of n bytes: what `allocated_bytes` (so
    max_memory_allocated) counts beyond the tensors' own bytes. `malloc` rounds first
    (`size = round_size(orig_size)`) and `alloc_found_block` adds `block->size` to
    stats.allocated_bytes (CUDACachingAllocator.cpp, commit 001074d25084). Counted: yes.
    Deterministic: yes, given every device storage's size.

    LLaMA-7B bf16, B=1, S=2048: every weight, gradient and Adam moment is a multiple of 512 bytes;
    the traced run (fake backend, cuda_terms["allocator rounding"]) finds 512 bytes at the modelled
    peak, in the optimizer step."""
    return {"Σ(round512(n) − n)": sum(round_size(n) - n for n in sizes)}


def whole_block_extra(n: int) -> int:
    """Bytes beyond round_size(n) that allocated_bytes counts when a request of n bytes gets a *new*
    segment from cudaMalloc and the remainder is not split off: `get_allocation_size` asks for
    2 MiB (≤ 1 MiB requests), 20 MiB (< 10 MiB) or ⌈size/2 MiB⌉·2 MiB; `should_split` keeps the
    block whole in the large pool when `remaining <= kSmallSize` (1 MiB), and `alloc_found_block`
    then counts the whole `block->size` (CUDACachingAllocator.cpp, commit 001074d25084; defaults of
    torch 2.13.0's AllocatorConfig.h: expandable_segments false, max_split_size unlimited).
    Counted: yes. Deterministic: only for a fresh segment; a request served from a cached block
    (every request of a second training step) gets up to 1 MiB more, depending on which blocks
    the run's history left free: not modelled, bounded by whole_block_bound."""
    size = round_size(n)
    if size <= K_SMALL_SIZE or size < K_MIN_LARGE_ALLOC:
        return 0  # small pool splits at >= 512 left; a 20 MiB buffer always leaves > 1 MiB
    remaining = round_up(size, K_ROUND_LARGE) - size
    return remaining if remaining <= K_SMALL_SIZE else 0


def whole_block_bound(large_storages: int) -> dict[str, int]:
    """Upper bound of what the large pool's unsplit blocks add: at most kSmallSize (1 MiB) per live
    storage above 1 MiB (`should_split`: a remainder of more than 1 MiB is always split off;
    CUDACachingAllocator.cpp, commit 001074d25084). Counted: yes. Deterministic: no (a bound)."""
    return {"≤ 1 MiB per large block": large_storages * K_SMALL_SIZE}


# --- cuBLAS / cuBLASLt workspaces ---------------------------------------------------------------


def cublas_workspace(sm_major: int, config: str | None = None) -> int:
    """Bytes of one cuBLAS workspace: `parseChosenWorkspaceSize` in aten/src/ATen/cuda/
    CublasHandlePool.cpp (stored copies, index ids 52172996605 and 57751821606): with no
    CUBLAS_WORKSPACE_CONFIG, ":4096:8" = 32 MiB on Hopper and Blackwell (major 9, 10, 12; the
    newer copy adds 11), else ":4096:2:16:8" = 8 MiB + 128 KiB; a set config ":SIZE:COUNT..." is
    Σ SIZE KiB × COUNT."""
    if config:
        pairs = [p for p in config.split(":") if p]
        return sum(int(pairs[i]) * 1024 * int(pairs[i + 1]) for i in range(0, len(pairs) - 1, 2))
    return 4096 * 8 * 1024 if sm_major in (9, 10, 11, 12) else 4096 * 1024 * 2 + 16 * 1024 * 8


def cublaslt_workspace(sm_major: int, unified: bool = True, lt_kib: int | None = None) -> int:
    """Bytes a cuBLASLt call (addmm with bias, `gemm_and_bias`) allocates beyond the cuBLAS
    workspace: `getCUDABlasLtWorkspace` in CublasHandlePool.cpp (same stored copies) returns the
    cuBLAS workspace of the same (handle, stream) when TORCH_CUBLASLT_UNIFIED_WORKSPACE is unset
    or true (the default outside fbcode): 0 more. Otherwise its own CUBLASLT_WORKSPACE_SIZE KiB
    (default 1024) per (handle, stream)."""
    if unified:
        return 0
    return (1024 if lt_kib is None else lt_kib) * 1024


def blas_workspaces(sm_major: int, threads: int) -> dict[str, int]:
    """cuBLAS workspaces live in a training step: one per (handle, stream), allocated through
    `c10::cuda::CUDACachingAllocator::get()->allocate` by `getNewWorkspace` / `setWorkspaceForHandle`
    at the first matmul of a handle and kept (never freed until `clearCublasWorkspaces`;
    torch.cuda.empty_cache does not free them). Handles come from a thread-local PoolWindow
    (`getCurrentCUDABlasHandle`), so the main thread (forward, optimizer) and the autograd engine's
    CUDA device thread (backward) hold one each: threads = 2 in training, 1 in generation.
    Counted: yes, when the first matmul comes after the baseline (a fresh process; the cuda
    backend's baseline is taken before the model exists, so its first run includes them and a
    later run in the same process does not). Deterministic: yes, given the device and the
    environment variables.

    LLaMA-7B bf16 training on an H100: 2 × 33,554,432 = 67,108,864 bytes (on an A100:
    2 × 8,519,680 = 17,039,360)."""
    one = cublas_workspace(sm_major) + cublaslt_workspace(sm_major)
    return {f"cuBLAS workspace × {threads} threads": threads * one}


def _non_overlapping_and_dense(sizes: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """c10's is_non_overlapping_and_dense: some order of the dimensions (size-1 ones ignored) is
    contiguous."""
    expected = 1
    for size, stride in sorted((z for z in zip(sizes, strides) if z[0] != 1), key=lambda z: z[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def cublas_operand_copies(operands) -> dict[str, int]:
    """Copies cuBLAS's mm / addmm make of operands it cannot pass as they are: `prepare_matrix_for_cublas`
    in aten/src/ATen/native/cuda/Blas.cpp (stored copies at commits 960a68465f61 and 002253ce92a1,
    the same function) passes a 2-D operand of sizes (m, n) and strides (s0, s1) as it is when it is
    non-overlapping and dense, or when s0 == 1 and s1 >= max(1, m), or s1 == 1 and s0 >= max(1, n);
    otherwise it makes `tensor.clone(at::MemoryFormat::Contiguous)`, which lives until the call
    returns (`cublasCommonArgs` holds both operands' copies at once). `operands`: (sizes, strides,
    itemsize) of mat1 and mat2. The case that matters: the gradient of `logits.sum()` is the scalar
    1 expanded to (B, S, V) with strides 0, and the output head's backward runs two mm over it
    (grad input, grad weight), each copying B·S·V·p bytes. The CPU kernel copies it too (torch
    2.13.0's profiler shows two aten::clone of that size inside MmBackward0), but below dispatch:
    neither a fake nor a real trace sees it. Counted: yes (transient, inside the op). Deterministic:
    yes, given the operands' strides. LLaMA-7B, cross-entropy loss: 0 (every operand is dense);
    `logits.sum()` at B=1, S=2048, V=32000 bf16: 131,072,000 bytes during each of the two mm."""
    copied = 0
    for sizes, strides, itemsize in operands:
        (m, n), (s0, s1) = sizes, strides
        if _non_overlapping_and_dense(sizes, strides) or (s0 == 1 and s1 >= max(1, m)) or (s1 == 1 and s0 >= max(1, n)):
            continue
        copied += round_size(m * n * itemsize)
    return {"cuBLAS contiguous copy of a strided operand": copied}


# --- normalisation ------------------------------------------------------------------------------


def layernorm_stats(rows: int, p: int, norms: int) -> dict[str, int]:
    """LayerNorm's saved mean and 1/std: CUDA's `layer_norm_cuda` allocates both as
    `at::empty({M}, X->options().dtype(acc_type))` with acc_type = toAccumulateType(input, is_cuda)
    = fp32 for fp16/bf16 input (aten/src/ATen/native/cuda/layer_norm_kernel.cu, stored copy index
    id 77974488); torch 2.13.0's CPU kernel keeps them in the input dtype (observed: native_layer_norm
    on bf16 CPU tensors returns bf16 mean/rstd, real and fake). So per LayerNorm of `rows` rows in
    half precision (p = 2), CUDA keeps 2·rows·(4 − p) bytes more, for as long as autograd keeps
    them. Counted: yes. Deterministic: yes.

    LLaMA-7B: 0 (RMSNorm, which transformers writes in Python with an fp32 upcast, the same ops on
    both devices). GPT-2 bf16 B=8 S=1024: 25 LayerNorms × 2·8192·2 = 819,200 bytes."""
    if p >= FP32:
        return {"2·rows·(4 − p) per LayerNorm": 0}
    return {"2·rows·(4 − p) per LayerNorm": norms * 2 * rows * (FP32 - p)}


# --- scaled dot-product attention ------------------------------------------------------------------


def sdpa_backend(p: int, head_dim: int, has_mask: bool, dropout: float, gpu: Gpu = H100) -> str:
    """The kernel CUDA's SDPA picks for the tensors transformers passes: `select_sdp_backend` in
    aten/src/ATen/native/transformers/cuda/sdp_utils.cpp (stored copy, commit 001f694aef6f).
    Priority cudnn > flash > efficient > math when `check_prefer_cudnn_attention` holds (cuDNN >
    9.15.0 on sm 9.x/10.x, any minor with CUDA >= 13, else minor 0 or 3), else flash > efficient >
    math. cuDNN: fp16/bf16, head_dim <= 128 (256 on sm90/10x with cuDNN > 9.22), multiple of 8,
    dropout a multiple of 1/16, masks allowed. Flash: sm80-sm121, fp16/bf16, head_dim <= 256, no
    attn_mask. Efficient: fp32 too, head_dim a multiple of 8 (half) or 4 (fp32) on sm80+, masks
    allowed. Torch 2.13.0's wheel ships cuDNN 9.20, so on an H100 a bf16 LLaMA step runs cuDNN
    attention, on an A100 flash."""
    major, minor = gpu.sm
    half = p == 2
    prefer_cudnn = gpu.cudnn > 91500 and major in (9, 10) and (gpu.cuda_major >= 13 or minor in (0, 3))
    cudnn_d = 256 if (major == 9 and minor == 0 or major == 10) and gpu.cudnn > 92200 else 128
    cudnn_ok = half and major >= 8 and head_dim <= cudnn_d and head_dim % 8 == 0 and dropout * 16 == int(dropout * 16)
    flash_ok = half and (8, 0) <= gpu.sm <= (12, 1) and head_dim <= 256 and not has_mask
    efficient_ok = head_dim % (8 if half else 4) == 0
    order = ("cudnn", "flash", "efficient") if prefer_cudnn else ("flash", "efficient")
    ok = {"cudnn": cudnn_ok, "flash": flash_ok, "efficient": efficient_ok}
    return next((k for k in order if ok[k]), "math")


def sdpa_flash_forward(calls: int) -> dict[str, int]:
    """What PyTorch's flash forward (`mha_fwd`, aten/src/ATen/native/transformers/cuda/flash_attn/
    flash_api.cpp, stored commit 03b7c19dbe22) allocates beyond what the CPU flash kernel returns:
    `rng_state = at::empty({2}, kUInt64, kCUDA)` and `_unused = at::empty({}, kUInt64, kCUDA)`,
    returned as philox seed and offset and saved for backward (torch 2.13.0's meta registration of
    _scaled_dot_product_flash_attention returns the same (2,) and () uint64). Output and the
    (B, H, S) fp32 logsumexp are the CPU kernel's bytes exactly. 16 and 8 bytes, booked as 512
    each. Counted: yes. Deterministic: yes. LLaMA-7B on an A100: 32 × 1,024 = 32,768 bytes; on an
    H100 the cuDNN kernel runs instead (0 modelled)."""
    return {"rng_state + offset 2·512 per call": calls * 2 * K_MIN_BLOCK_SIZE}


def flash_backward_temporaries(B: int, H: int, H_kv: int, S_q: int, S_k: int, d: int, p: int) -> dict[str, int]:
    """Buffers flash-attention 2's backward (`mha_bwd`) allocates through the caching allocator for
    the duration of one call, beyond dq, dk, dv: softmax_d (B, H, ⌈S_q/128⌉·128) fp32;
    dq_accum (B, ⌈S_q/128⌉·128, H, d_r) fp32 with d_r = ⌈d/32⌉·32 (d <= 128) or ⌈d/64⌉·64
    (non-deterministic mode); for GQA/MQA dk_expanded and dv_expanded (B, S_k, H, d) in the input
    dtype. Identical in PyTorch's copy (flash_api.cpp, stored commit 03b7c19dbe22) and in
    Dao-AILab/flash-attention csrc/flash_attn/flash_api.cpp (commit 0251105a2fb1). Counted: yes
    (transient, inside each attention backward). Deterministic: yes.

    LLaMA-7B (MHA), B=1, S=2048, d=128: softmax_d 262,144 + dq_accum 33,554,432 = 33,816,576 bytes
    during each layer's attention backward."""
    d8 = round_up(d, 8)
    d_r = round_up(d8, 32 if d8 <= 128 else 64)
    s_r = round_up(S_q, 128)
    out = {"softmax_d B·H·⌈S/128⌉·128·4": B * H * s_r * FP32, "dq_accum B·⌈S/128⌉·128·H·d_r·4": B * s_r * H * d_r * FP32}
    if H_kv != H:
        out["dk, dv expanded 2·B·S·H·d·p"] = 2 * B * S_k * H * d8 * p
    return out


def efficient_lse_padding(B: int, H: int, S: int) -> dict[str, int]:
    """The memory-efficient kernel's logsumexp is (B, H, ⌈S/32⌉·32) fp32 (torch 2.13.0's meta
    registration of _scaled_dot_product_efficient_attention, which mirrors
    `_efficient_attention_forward`), where the CPU flash kernel's is (B, H, S): 4·B·H·(⌈S/32⌉·32 − S)
    more per call, saved for backward. Counted: yes. Deterministic: yes. Its backward's workspace
    (`Kernel::workspace_size`) is not modelled. LLaMA-7B: 0 (S a multiple of 32, and the kernel is
    not picked for bf16 without a mask)."""
    return {"4·B·H·(⌈S/32⌉·32 − S)": FP32 * B * H * (round_up(S, 32) - S)}


# --- embedding backward -----------------------------------------------------------------------------


def embedding_backward_temporaries(N: int, V: int, h: int, p: int, gpu: Gpu = H100) -> dict[str, int]:
    """Scratch of CUDA's `embedding_dense_backward_cuda` (aten/src/ATen/native/cuda/Embedding.cu,
    stored copy index id 45737010) for N indices, vocabulary V, width h, gradient dtype p bytes,
    beyond grad_weight (V·h·p, which the trace counts): none when N <= 3072 (one atomic kernel);
    else sorted and original indices (2·8N), then in `embedding_backward_cuda_kernel`
    (EmbeddingBackwardKernel.cu, stored copy index id 935292765) segment_offsets (8N), two
    per-segment index arrays (2·8·min(N, V)), partial_segment_offset (8·P) with
    P = N/10 + min(N, V) (NROWS_PER_THREAD = 10), two 0-dim counters, and the fp32 partial sums
    grad_weight_per_segment (P·h·4); when the grid of its sum-and-scatter pass would be below
    4 blocks per SM the fused path replaces the partial sums by an fp32 (V, h) accumulator (half
    precision) and a partial-to-segment map (8·P). Each buffer is booked at round_size. Counted:
    yes (transient, inside the op). Deterministic: yes, but for cub's radix-sort scratch, which cub
    sizes (not modelled). LLaMA-7B B=1 S=2048: N = 2048 <= 3072: 0."""
    if N <= 3072:
        return {"embedding backward scratch": 0}
    segs = min(N, V)
    P = N // 10 + segs
    warped = round_up(h, 32)
    block = min(warped, 1024)  # MAX_BLOCK_SIZE
    sum_scatter_grid = -(-segs * warped // block)
    fused = sum_scatter_grid < gpu.sms * 4 and P > sum_scatter_grid * 4
    idx = [N * INDEX_BYTES] * 3 + [segs * INDEX_BYTES] * 2 + [P * INDEX_BYTES, 8, 8]
    if fused:
        big = [P * INDEX_BYTES] + ([V * h * FP32] if p < FP32 else [])
    else:
        big = [P * h * FP32]
    return {"embedding backward scratch": sum(round_size(n) for n in idx + big)}


# --- host-resident tensors -------------------------------------------------------------------------


def host_optimizer_scalars(tensors: int, nbytes: int = FP32) -> dict[str, int]:
    """Tensors a CPU trace counts that a GPU run keeps in host memory: Adam/AdamW put each
    parameter's `step` on the CPU unless capturable or fused (torch/optim/adam.py of torch 2.13.0,
    `_init_group`: "Deliberately host `step` on CPU if both capturable and fused are off"), and
    `_multi_tensor_adam` adds a CPU `torch.tensor(1.0)` to them. Not counted by
    max_memory_allocated: a negative term. Deterministic: yes. LLaMA-7B: −4 × 291 = −1,164 bytes."""
    return {"host-resident optimizer scalars": -tensors * nbytes}
