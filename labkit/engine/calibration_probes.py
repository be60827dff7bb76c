"""The probes of a calibration: what `labkit.engine.calibrate` times on this machine, each a function.

The time theory (`labkit.theory.time`) splits a step's time as Horace He's "Making Deep Learning Go Brrrr From
First Principles" does — compute, memory bandwidth, overhead — and prices each with constants measured here:

    F  flops_per_s_by_size[precision]   square matmuls n×n @ n×n (2·n³ FLOPs), n = 64, 128, … (CPU up to 1024,
                                        GPU 256 … 8192), per precision: small matmuls run below the peak, so each
                                        op is priced at the rate of its own size. flops_per_s = the best of them.
       attention_flops_per_s            a fused scaled-dot-product attention call (8 heads × 32, 512 tokens, a
                                        mask), forward and backward: its softmax and masking make it slower than a
                                        matmul of equal FLOPs
    B  bytes_per_s_by_size              copies into a new tensor (`clone`: n read + n written, memory allocated as
                                        an op's output is) of 64 KiB … 32 MiB (CPU) / 1 MiB … 1 GiB (GPU): small
                                        ones stay in the caches. bytes_per_s = the best of them.
       elementwise_bytes_per_s_by_size  per precision, `a * b` at the same sizes: what an elementwise op reaches
                                        (a CPU computes 16-bit elements in fp32, converting each one)
       dequantize_elements_per_s_by_size, random_elements_per_s
                                        two ops a CPU runs far below their bytes' pace, measured as they are:
                                        bitsandbytes' NF4 dequantise (256², 1024² weights) and dropout's bernoulli_
       (o, seconds per dispatched op, is `labkit.engine.overhead_probe`.)

Every figure is the best of several repeats (the device undisturbed, as a data sheet states it), timed by wall
clock (what a learner waits for). On a CPU shared with other work, wall time stretches with the others' load:
`calibrate(clock=time.process_time)` times the CPU this process got instead (not cached), to compare with steps
timed the same way.
"""
from __future__ import annotations

import contextlib
import time

import torch

MATMUL_MIN_N = {"cpu": 64, "cuda": 256}
MATMUL_MAX_N = {"cpu": 1024, "cuda": 8192}
MATMUL_STOP_S = 0.1                           # stop growing the matmul once one takes this long
DEQUANTIZE_SIDES = {"cpu": [256, 1024], "cuda": [1024, 4096]}
COPY_SIZES = {"cpu": [2 ** 16, 2 ** 19, 2 ** 22, 2 ** 25], "cuda": [2 ** 20, 2 ** 24, 2 ** 28, 2 ** 30]}


# ---- the clock, and timing a call -----------------------------------------------------------------------------------
_clock = time.perf_counter                     # wall time; `timed_by(time.process_time)` for CPU time


@contextlib.contextmanager
def timed_by(clock):
    """Every probe inside times by `clock` (e.g. `time.process_time`) instead of the wall clock."""
    global _clock
    previous, _clock = _clock, clock
    try:
        yield
    finally:
        _clock = previous


def clock_name() -> str:
    """'wall', or the name of the clock `timed_by` set."""
    return "wall" if _clock is time.perf_counter else getattr(_clock, "__name__", "custom")


def now() -> float:
    return _clock()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn, device, repeats: int, inner: int = 1) -> float:
    """Fewest seconds of one call of `fn` over `repeats` timings of `inner` calls each (short calls are timed in
    batches): the device undisturbed, as a data sheet states it."""
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = _clock()
        for _ in range(inner):
            fn()
        sync(device)
        times.append((_clock() - t0) / inner)
    return min(times)


def _inner(seconds_per_call: float, target: float = 0.01) -> int:
    """How many calls to time together so that one timing lasts about `target` seconds."""
    return max(1, min(1000, int(target / max(seconds_per_call, 1e-7))))


def matmul_flops_per_s(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> list[list[float]]:
    """F for one dtype at several sizes: [[n, FLOP/s], …] for n×n @ n×n (2·n³ FLOPs), n = 64, 128, … up to
    MATMUL_MAX_N, stopping once one matmul takes ≥ MATMUL_STOP_S (a slow dtype, e.g. fp16 on most CPUs, stops
    early; the theory then uses the largest size measured for larger ops)."""
    out, n = [], MATMUL_MIN_N[device.type]
    while n <= MATMUL_MAX_N[device.type]:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        t0 = _clock()
        a @ b                                          # first call: kernel choice, thread pool start
        sync(device)
        first = _clock() - t0
        t = best_time(lambda: a @ b, device, repeats, _inner(first))
        out.append([n, 2 * n ** 3 / t])
        if t >= MATMUL_STOP_S:
            break
        n *= 2
    return out


def copy_bytes_per_s(device: torch.device, repeats: int = 5) -> list[list[float]]:
    """B at several sizes: [[bytes moved, bytes/s], …]. A copy into a new tensor (`clone`, as an op makes its
    output) reads n bytes and writes n: 2·n bytes move, and the new tensor's memory is allocated as an op's would
    be. Small buffers stay in the caches (faster than memory), large ones go to memory: each op is priced at the
    rate of its own size."""
    out = []
    for n in COPY_SIZES[device.type]:
        if device.type == "cuda":
            n = min(n, torch.cuda.mem_get_info(device)[0] // 4)
        src = torch.empty(n, dtype=torch.uint8, device=device).fill_(1)
        t0 = _clock()
        src.clone()
        sync(device)
        t = best_time(src.clone, device, repeats, _inner(_clock() - t0))
        out.append([2 * n, 2 * n / t])
        del src
    return out


def elementwise_bytes_per_s(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> list[list[float]]:
    """B as an elementwise op in this dtype reaches it, at the copy sizes: [[bytes moved, bytes/s], …] for
    `a * b` into a new tensor (2 reads + 1 write). On a GPU it matches the copy; a CPU without native 16-bit
    arithmetic converts every bf16/fp16 element, so there a 16-bit op moves half the bytes yet takes longer."""
    out = []
    for n in COPY_SIZES[device.type]:
        elements = n // 4
        if device.type == "cuda":
            elements = min(elements, torch.cuda.mem_get_info(device)[0] // 16)
        a = torch.ones(elements, device=device, dtype=dtype)
        b = torch.ones(elements, device=device, dtype=dtype)
        t0 = _clock()
        a * b
        sync(device)
        t = best_time(lambda: a * b, device, repeats, _inner(_clock() - t0))
        moved = 3 * elements * a.element_size()
        out.append([moved, moved / t])
    return out


def dequantize_elements_per_s(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> list[list[float]]:
    """bitsandbytes' NF4 dequantise (double quant, as the course loads weights), [[elements, elements/s], …] for
    square weights of 256², 1024² (and on a GPU 4096²) elements. On a CPU it is far slower than a copy of the
    same bytes (a table lookup and two scales per element, in library code, with a fixed cost per call), so the
    theory prices it at this rate, read at the weight's size, rather than at B."""
    import bitsandbytes.functional as bnb_f
    out = []
    for side in DEQUANTIZE_SIDES[device.type]:
        weight = torch.randn(side, side, device=device).to(dtype)
        packed, state = bnb_f.quantize_4bit(weight, quant_type="nf4", compress_statistics=True)
        t0 = _clock()
        bnb_f.dequantize_4bit(packed, state)
        sync(device)
        t = best_time(lambda: bnb_f.dequantize_4bit(packed, state), device, repeats, _inner(_clock() - t0))
        out.append([weight.numel(), weight.numel() / t])
    return out


def attention_flops_per_s(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> dict:
    """Scaled-dot-product attention as a decoder layer calls it (8 heads of 32, 512 tokens, a boolean mask), forward
    and backward: {"forward": FLOP/s, "backward": FLOP/s}. Forward does 4·heads·s²·hd FLOPs (Q·Kᵀ and P·V); backward
    2.5× that (it recomputes the scores: 5 matmuls of that size). A fused attention kernel also does the softmax's
    exponentials and the masking on every s² score, so on a CPU it runs well below the matmul rate, and its
    backward in 16-bit slower still."""
    heads, s, hd = 8, 512, 32
    q, k, v = (torch.randn(1, heads, s, hd, device=device).to(dtype).requires_grad_() for _ in range(3))
    mask = torch.ones(1, 1, s, s, dtype=torch.bool, device=device).tril()
    attend = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # noqa: E731
    grad = torch.ones(1, heads, s, hd, device=device, dtype=dtype)
    both = lambda: attend().backward(grad)  # noqa: E731
    t0 = _clock()
    both()
    sync(device)
    first = _clock() - t0
    with torch.no_grad():
        forward = best_time(attend, device, repeats, _inner(first))
    total = best_time(both, device, repeats, _inner(first))
    flops = 4 * heads * s * s * hd
    return {"forward": flops / forward, "backward": 2.5 * flops / max(total - forward, 1e-9)}


def random_elements_per_s(device: torch.device, repeats: int = 5) -> float:
    """Dropout's mask as peft's dropout draws it: a new tensor of 2**17 elements (a 512-token × 256 input) filled
    by `bernoulli_(0.95)`, elements per second (on a CPU the random numbers, not the bytes, set its pace)."""
    like = torch.empty(2 ** 17, device=device)
    draw = lambda: torch.empty_like(like).bernoulli_(0.95)  # noqa: E731
    t0 = _clock()
    draw()
    sync(device)
    t = best_time(draw, device, repeats, _inner(_clock() - t0))
    return like.numel() / t
