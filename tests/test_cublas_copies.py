"""cuBLAS's copies of operands it cannot pass as they are (verify/formulas/cuda.py
cublas_operand_copies): the stride-0 gradient of `logits.sum()` in the output head's backward."""

from __future__ import annotations

import torch

from verify.formulas import cuda as C
from verify.formulas.params import total
from verify.measure.fake import cuda_ops
from verify.measure.tracker import Tracker

COPY = "cuBLAS contiguous copy of a strided operand"


def test_dense_and_transposed_operands_are_passed_as_they_are_and_a_broadcast_one_is_copied():
    """prepare_matrix_for_cublas: contiguous, transposed and row-sliced operands go as they are; an
    expanded (stride 0) operand is cloned contiguous, booked at the allocator's rounding."""
    a = torch.empty(128, 64)
    assert total(C.cublas_operand_copies([((128, 64), a.stride(), 4), ((64, 128), a.t().stride(), 4)])) == 0
    sliced = torch.empty(128, 100)[:, :64]
    assert total(C.cublas_operand_copies([((128, 64), sliced.stride(), 4)])) == 0
    broadcast = torch.ones(()).expand(128, 300)
    assert broadcast.stride() == (0, 0)
    assert total(C.cublas_operand_copies([((128, 300), broadcast.stride(), 2)])) == C.round_size(128 * 300 * 2)


def test_the_output_heads_backward_of_a_logits_sum_books_one_copy_of_the_logits_inside_the_op():
    """A linear output head under loss = logits.sum(): each of its backward's two mm copies the (N, V)
    gradient; the copy is a peak candidate inside the op and is gone after it."""
    N, h, V = 64, 16, 2000
    tracker = Tracker()
    tracker.model_gpu(cuda_ops(C.A100, {}))
    with tracker:
        x = torch.randn(N, h, requires_grad=True)
        w = torch.randn(V, h, requires_grad=True)
        loss = torch.nn.functional.linear(x, w).sum()
        tracker.reset_peak()
        tracker.mark("backward")
        loss.backward()
    assert tracker.gpu_peak_at["terms"][COPY] == C.round_size(N * V * 4)
    assert tracker.gpu_terms_now.get(COPY, 0) == 0


def test_a_cross_entropy_gradient_needs_no_copy():
    """The gradient of cross-entropy is dense: the output head's backward copies nothing."""
    N, h, V = 64, 16, 2000
    tracker = Tracker()
    tracker.model_gpu(cuda_ops(C.A100, {}))
    with tracker:
        x = torch.randn(N, h, requires_grad=True)
        w = torch.randn(V, h, requires_grad=True)
        loss = torch.nn.functional.cross_entropy(torch.nn.functional.linear(x, w), torch.randint(0, V, (N,)))
        tracker.reset_peak()
        tracker.mark("backward")
        loss.backward()
    assert COPY not in tracker.gpu_peak_at["terms"]


def test_the_cpu_kernel_copies_the_broadcast_gradient_too_below_dispatch():
    """torch's CPU mm clones the stride-0 gradient as cuBLAS's path does (the profiler sees an
    aten::clone of N·V·4 bytes inside MmBackward0), which no dispatch-level trace sees."""
    N, h, V = 64, 16, 2000
    x = torch.randn(N, h, requires_grad=True)
    w = torch.randn(V, h, requires_grad=True)
    loss = torch.nn.functional.linear(x, w).sum()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        loss.backward()
    clones = [e.cpu_memory_usage for e in prof.events() if e.name == "aten::clone"]
    assert clones.count(N * V * 4) == 2
