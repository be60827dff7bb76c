"""Time: compute, memory bandwidth and overhead — which one binds, and what a knob costs in each.

The model (Horace He, "Making Deep Learning Go Brrrr From First Principles"): an op takes the longer of its FLOPs
at the device's compute rate and its bytes at the device's bandwidth, and every op dispatched also costs a fixed
overhead (Python, the dispatcher, a kernel launch):

    compute_s  = Σ over compute-bound ops  FLOPs / F          F: matmul FLOP/s (per precision)
    memory_s   = Σ over memory-bound ops   bytes / B          B: bytes/s
    overhead_s = Σ over phases  ops(phase) × o(phase)         o: seconds per dispatched op
    an op's time = max(FLOPs / F, bytes / B): it counts under compute or memory by whichever is larger

How the three add up depends on who waits for whom:
- CPU (synchronous): the thread that dispatches an op also runs it, so the parts add:
      total = compute_s + memory_s + overhead_s
- CUDA (asynchronous): kernel launches return at once and the host runs ahead while the GPU works, until the
  loss is read back (`loss.item()`, once per micro-batch). The host's overhead and the GPU's work overlap:
      total = max(compute_s + memory_s, overhead_s)
  This is why more tokens per op cost almost nothing on a GPU until its work catches up with the host (the knee),
  while on a CPU every extra FLOP shows at once. The max is the ideal overlap: when the two sides are close, the
  truth lies between the max and the sum.

The regime is what binds: **overhead** when dispatching takes at least as long as the work (compute + memory) — on
a GPU the work then hides behind it, on a CPU it is at least half the time — else the larger of compute and
memory. The knee (`overhead_knee`) is the micro-batch where the regime stops being overhead.

One micro-step = forward (loss included) + checkpoint recompute + backward; the optimizer step (gradient
clipping, the update, zero_grad) comes once per optimizer step, after `grad_accum` micro-steps, and is reported on
its own:

    step_s = grad_accum micro-steps (the first stores .grad, the others add into it) + optimizer_s

Where each term comes from:
- FLOPs and bytes (`micro_step_work`): read op by op from transformers' Llama code (RMSNorm, rotary, SDPA, SwiGLU),
  peft's LoRA Linear (dropout → A → B → scale → add) and bitsandbytes' 4-bit matmul (dequantise the weight, then
  a dense matmul). Backward with a frozen 4-bit base: input gradients only (the weight is dequantised again, one
  matmul per Linear; none for the first layer's q/k/v when its input needs no gradient); LoRA gets both its input
  and its weight gradients (4 small matmuls per adapter). Attention's backward recomputes the scores
  (FlashAttention: 5 matmuls of the s×s size against 2 in forward, 2.5× the forward FLOPs). An elementwise op's
  backward reads the upstream gradient and its saved input and writes a gradient: 2× the forward's bytes.
- op counts: `labkit.theory.ops.predict_aten_ops`, working ops and views alike (each costs a dispatch).
- F, B, o (`labkit.theory.device_constants`): inputs, like a data sheet. Calibrated on the machine (`labkit
  calibrate`): then F and B are read at each op's own size (small matmuls and small copies do not reach the
  peak), attention, NF4 dequantise and dropout's random numbers have their own measured rates, and o one value
  per dispatch path (forward, recompute, backward, optimizer). Or from the vendors' data sheets (GPUs): the peaks,
  and an overhead fitted to recorded runs, which says so. The theory never sees a measurement of the run it
  predicts.
"""
from __future__ import annotations

from dataclasses import dataclass

from labkit.config import DTYPE_BYTES, RunConfig
from labkit.record import PHASES
from labkit.shapes import ModelShape
from labkit.theory.device_constants import DeviceConstants, interpolate, device_constants

OVERHEAD_PHASES = PHASES + ("optimizer",)


# ---- FLOPs and bytes, op by op ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Work:
    """One op, or `count` like ops: what they compute and what they move, in all. A rate that depends on the size
    (a calibrated device: small matmuls run below the peak, small copies stay in the caches) is read at the size
    of one op: flops / count, bytes / count."""
    what: str
    flops: float = 0.0
    bytes: float = 0.0
    count: int = 1
    kind: str = "tensor"          # "tensor" (FLOPs and bytes), "attention", "dequantize", "random" (see _price)
    pass_: str = "forward"        # "forward" or "backward" (attention's backward has its own calibrated rate)
    elements: float = 0.0         # for "dequantize" and "random": elements produced


def _linear_work(name: str, d_in: int, d_out: int, T: int, c: int, quant: bool, backward: bool) -> list[Work]:
    """A frozen base Linear: dequantise the 4-bit weight (read ½ byte, write c bytes per element), then one matmul
    (forward: y = x·Wᵀ; backward: the input gradient dx = dy·W, the same size). T = tokens."""
    out = []
    if quant:
        out.append(Work(f"{name} dequantise", bytes=d_in * d_out * (0.5 + c), kind="dequantize",
                        elements=d_in * d_out))
    out.append(Work(f"{name} {'input-grad ' if backward else ''}matmul", flops=2 * T * d_in * d_out,
                    bytes=(T * d_in + d_in * d_out + T * d_out) * c))
    return out


def _lora_work(name: str, d_in: int, d_out: int, r: int, T: int, c: int, dropout: bool,
               backward: bool) -> list[Work]:
    """peft's LoRA: dropout(x) → A (r×d_in) → B (d_out×r) → × alpha/r → added to the base output.
    Forward: dropout = bernoulli_ + div_ + mul (≈ 6 passes over T·d_in), 2 small matmuls, scale + add (5 passes
    over T·d_out). Backward: both weight gradients and both input gradients (4 matmuls), elementwise 2× forward."""
    elementwise = (5 * T * d_in if dropout else 0) + 5 * T * d_out     # div_ and × mask; scale and add
    ops = (2 if dropout else 0) + 2
    mask = [Work(f"{name} dropout mask", bytes=T * d_in * c, kind="random", elements=T * d_in)] if dropout else []
    mm = [Work(f"{name} lora A", flops=2 * T * d_in * r, bytes=(T * d_in + d_in * r + T * r) * c),
          Work(f"{name} lora B", flops=2 * T * r * d_out, bytes=(T * r + r * d_out + T * d_out) * c)]
    if backward:
        return mm * 2 + [Work(f"{name} lora elementwise backward", bytes=2 * elementwise * c, count=2 * ops)]
    return mask + mm + [Work(f"{name} lora elementwise", bytes=elementwise * c, count=ops)]


def _norm_bytes(T: int, h: int, c: int) -> float:
    """RMSNorm, computed in fp32: cast up, pow, mean, + eps, rsqrt, × (6 fp32 passes over T·h), cast down and
    × weight (5 passes in the compute dtype)."""
    return T * h * (6 * 4 + 5 * c)


def _layer_work(shape: ModelShape, cfg: RunConfig, c: int, backward: bool, first_layer: bool,
                padding_mask: bool) -> list[Work]:
    """One decoder layer's forward (or its backward)."""
    b, s = cfg.micro_batch, cfg.seq_len
    T, h, i, hd = b * s, shape.hidden, shape.intermediate, shape.hd
    q_width, kv_width = shape.heads * hd, shape.kv_heads * hd
    quant, r, dropout = cfg.quant == "nf4", cfg.lora_r, cfg.lora_dropout > 0
    grad = 2 if backward else 1                    # elementwise backward: 2× the forward's bytes
    work = []
    # the first layer's input (the embedding) needs no gradient, unless checkpointing (transformers 5 then makes
    # the embedding output require one) or prepare_kbit asks for it
    input_needs_grad = cfg.gradient_checkpointing or cfg.prepare_kbit
    skip_input_grad = backward and first_layer and not input_needs_grad
    if not skip_input_grad:
        work.append(Work("input norm", bytes=grad * _norm_bytes(T, h, c), count=8 * grad))
    for name, (d_in, d_out) in shape.linear_dims().items():
        if name == "gate_proj":                    # the MLP block starts: its norm and the attention's residual
            work.append(Work("attention residual add", bytes=grad * 3 * T * h * c, count=grad))
            work.append(Work("post-attention norm", bytes=grad * _norm_bytes(T, h, c), count=8 * grad))
        if not (skip_input_grad and name in ("q_proj", "k_proj", "v_proj")):
            work += _linear_work(name, d_in, d_out, T, c, quant, backward)
        if name in cfg.lora_targets:
            work += _lora_work(name, d_in, d_out, r, T, c, dropout, backward)
        if name == "v_proj":                       # q, k, v done: rotary, attention, back to tokens × width
            # rotary on q and k: × cos, rotate_half (neg + cat), × sin, + : ≈ 12 passes over each
            work.append(Work("rotary", bytes=grad * 12 * T * (q_width + kv_width) * c, count=10 * grad))
            # SDPA: Q·Kᵀ and P·V per head and sequence, 2·s²·hd FLOPs each; backward recomputes the scores:
            # 5 matmuls of that size against 2, so 2.5× the forward FLOPs
            per_head = 5 if backward else 2
            attn_bytes = (T * (2 * q_width + 2 * kv_width) * c + (b * s * s if padding_mask else 0)) * grad
            work.append(Work("attention", flops=2 * s * s * hd * per_head * b * shape.heads, bytes=attn_bytes,
                             count=per_head * b * shape.heads, kind="attention",
                             pass_="backward" if backward else "forward"))
            if padding_mask and not backward:      # the 4-D mask (b × 1 × s × s) is built for every layer call
                work.append(Work("attention mask", bytes=b * s * s * (1 + 2 * c), count=2))
            work.append(Work("attention output to tokens", bytes=grad * 2 * T * q_width * c, count=grad))
        if name == "up_proj":                      # SwiGLU: silu(gate) × up
            work.append(Work("silu × up", bytes=grad * 5 * T * i * c, count=2 * grad))
    work.append(Work("mlp residual add", bytes=grad * 3 * T * h * c, count=grad))
    return work


def _head_work(shape: ModelShape, cfg: RunConfig, c: int, backward: bool) -> list[Work]:
    """Embedding lookup, final norm, lm_head and the loss. The loss upcasts the logits to fp32 and takes a
    log-softmax (≈ 5 fp32 passes over T·V); the head is frozen, so backward has only its input gradient."""
    T, h, V = cfg.micro_batch * cfg.seq_len, shape.hidden, shape.vocab
    grad = 2 if backward else 1
    head = Work("lm_head input-grad matmul" if backward else "lm_head matmul", flops=2 * T * h * V,
                bytes=(T * h + h * V + T * V) * c)
    loss = Work("loss (fp32 log-softmax)", bytes=grad * T * V * (c + 5 * 4), count=3 * grad)
    norm = Work("final norm", bytes=grad * _norm_bytes(T, h, c), count=8 * grad)
    return [head, loss, norm] if backward else [Work("embedding", bytes=T * h * c), norm, head, loss]


def micro_step_work(shape: ModelShape, cfg: RunConfig, precision: str, padding_mask: bool = True) -> dict:
    """FLOPs and bytes of one micro-step, op group by op group, per phase: {forward, recompute, backward}."""
    c = DTYPE_BYTES[precision]
    layers_fwd = [w for layer in range(shape.layers)
                  for w in _layer_work(shape, cfg, c, False, layer == 0, padding_mask)]
    layers_bwd = [w for layer in range(shape.layers)
                  for w in _layer_work(shape, cfg, c, True, layer == 0, padding_mask)]
    return {"forward": layers_fwd + _head_work(shape, cfg, c, False),
            "recompute": layers_fwd if cfg.gradient_checkpointing else [],
            "backward": _head_work(shape, cfg, c, True) + layers_bwd}


def optimizer_work(shape: ModelShape, cfg: RunConfig) -> tuple[list[Work], int]:
    """(work, trainable tensors) of gradient clipping + one optimizer step. Per trainable fp32 element:
    8-bit Adam reads param, grad and two 1-byte states and writes param and states (≈ 16 B); torch AdamW with fp32
    states ≈ 28 B; clipping reads every gradient for the norm and rescales it (≈ 12 B)."""
    from labkit.theory.resident import trainable_params
    n = trainable_params(shape, cfg)
    tensors = 2 * len(cfg.lora_targets) * shape.layers          # A and B of every adapter
    per_element = 16 if cfg.optim == "paged_adamw_8bit" else 28
    return [Work("clip grad norm", flops=3 * n, bytes=12 * n, count=2 * tensors),
            Work("optimizer update", flops=10 * n, bytes=per_element * n, count=tensors)], tensors


def optimizer_ops(tensors: int, precision: str) -> int:
    """Ops the optimizer step dispatches: one update and one `detach` per trainable tensor, ~12 for clipping
    (foreach norm, stack, norm, add, reciprocal, clamp, foreach mul, profiler marks), and with fp16 the
    GradScaler's unscale, inf check and update (~6)."""
    return 2 * tensors + 12 + (6 if precision == "fp16" else 0)


# ---- op counts --------------------------------------------------------------------------------------------------
def dispatched_ops(shape: ModelShape, cfg: RunConfig, precision: str, device_type: str = "cpu",
                   padding_mask: bool = True, accumulating: bool = False) -> dict:
    """Every op one timed micro-step dispatches, per phase, views included (each costs a dispatch):
    `theory.ops.predict_aten_ops`' working ops + its metadata ops, without the saved-bytes meter's hooks (a timed
    step runs without them)."""
    from labkit.theory.ops import predict_aten_ops
    ops = predict_aten_ops(shape, cfg, precision, device_type=device_type, padding_mask=padding_mask,
                           accumulating=accumulating, saved_tensor_hooks=False)
    return {p: ops[p] + ops["metadata"][p] for p in PHASES}


# ---- the prediction ---------------------------------------------------------------------------------------------
def _price(work: list[Work], constants: DeviceConstants, precision: str) -> tuple[float, float]:
    """(compute seconds, memory seconds): each op counted under whichever of FLOPs/F and bytes/B is larger, with
    F and B read at the size of one op."""
    compute = memory = 0.0
    for w in work:
        rate = None
        if w.kind == "dequantize" and constants.dequantize_by_size:
            rate = interpolate(constants.dequantize_by_size, w.elements / w.count)
        elif w.kind == "random":
            rate = constants.random_elements_per_s
        if rate:                                       # calibrated: the op's own pace, counted under memory
            memory += w.elements / rate
            continue
        F = (constants.attention_flops_per_s.get(precision) or {}).get(w.pass_) if w.kind == "attention" else None
        F = F or (constants.flops_rate(precision, w.flops / w.count) if w.flops else None)
        tc = w.flops / F if w.flops else 0.0
        tm = w.bytes / constants.bytes_rate(w.bytes / w.count, precision) if w.bytes else 0.0
        if tc >= tm:
            compute += tc
        else:
            memory += tm
    return compute, memory


def _combine(compute: float, memory: float, overhead: float, asynchronous: bool) -> float:
    return max(compute + memory, overhead) if asynchronous else compute + memory + overhead


def _regime(compute: float, memory: float, overhead: float) -> str:
    """'overhead' when dispatching takes at least as long as the work, else the larger of compute and memory."""
    if overhead >= compute + memory:
        return "overhead"
    return "compute" if compute >= memory else "memory"


def predict_time(shape: ModelShape, cfg: RunConfig, precision: str, constants: DeviceConstants | None,
                 device_type: str = "cpu", padding_mask: bool = True) -> dict | None:
    """Seconds of one micro-step and of one optimizer step, split into compute, memory and overhead, and the
    regime that binds: what a record keeps under theory.time. None without constants (a CPU not calibrated)."""
    if constants is None:
        return None
    F = constants.flops_per_s.get(precision)
    if not F:
        return None                                   # e.g. bf16 on a T4: no such unit, and runs refuse it
    o = constants.overhead_s_per_op
    accumulating = cfg.grad_accum > 1                 # later micro-steps add into .grad (what measured.aten_ops sees)

    def micro(accum: bool) -> dict:
        work = micro_step_work(shape, cfg, precision, padding_mask)
        ops = dispatched_ops(shape, cfg, precision, device_type, padding_mask, accum)
        phases = {}
        for p in PHASES:
            comp, mem = _price(work[p], constants, precision)
            phases[p] = {"compute_s": comp, "memory_s": mem, "overhead_s": ops[p] * o[p], "ops": ops[p],
                         "flops": sum(w.flops for w in work[p])}
        parts = {k: sum(ph[k] for ph in phases.values()) for k in ("compute_s", "memory_s", "overhead_s")}
        total = _combine(parts["compute_s"], parts["memory_s"], parts["overhead_s"], constants.asynchronous)
        return {**parts, "total_s": total, "phases": phases}

    first = micro(False)
    later = micro(True) if accumulating else first
    shown = later                                     # the micro-step a record's measured ops count

    opt_work, tensors = optimizer_work(shape, cfg)
    opt_compute, opt_memory = _price(opt_work, constants, precision)
    opt_overhead = optimizer_ops(tensors, precision) * o["optimizer"]
    optimizer_s = _combine(opt_compute, opt_memory, opt_overhead, constants.asynchronous)
    step_s = first["total_s"] + (cfg.grad_accum - 1) * later["total_s"] + optimizer_s
    return {
        "compute_s": shown["compute_s"], "memory_s": shown["memory_s"], "overhead_s": shown["overhead_s"],
        "total_s": shown["total_s"],
        "regime": _regime(shown["compute_s"], shown["memory_s"], shown["overhead_s"]),
        "phases": shown["phases"],
        "optimizer_s": optimizer_s,
        "optimizer": {"compute_s": opt_compute, "memory_s": opt_memory, "overhead_s": opt_overhead,
                      "ops": optimizer_ops(tensors, precision)},
        "step_s": step_s,
        "optimizer_share": optimizer_s / step_s,
        "combine": "max(compute + memory, overhead)" if constants.asynchronous else "compute + memory + overhead",
        "constants": constants.for_record(precision),
    }


def time_for_record(shape: ModelShape, cfg: RunConfig, precision: str, gpu_name: str | None = None,
                    device_type: str = "cpu", padding_mask: bool = True, calibration: dict | None = None) -> dict:
    """theory.time of a record: `predict_time` with calibrated constants when given, else the GPU's data sheet.
    Without either (a CPU never calibrated) every figure is None and `note` says how to get them."""
    constants = device_constants(gpu_name if device_type == "cuda" else None, calibration)
    out = predict_time(shape, cfg, precision, constants, device_type, padding_mask)
    if out is not None:
        return out
    note = ("no device constants: run `labkit calibrate` on this machine (a few seconds)" if constants is None
            else f"{constants.name} has no {precision} unit")
    return {"compute_s": None, "memory_s": None, "overhead_s": None, "total_s": None, "regime": None,
            "optimizer_s": None, "step_s": None,
            "constants": constants.for_record(precision) if constants else None, "note": note}


def overhead_knee(shape: ModelShape, cfg: RunConfig, precision: str, constants: DeviceConstants,
                  device_type: str = "cpu", padding_mask: bool = True, largest: int = 256) -> int | None:
    """The knee of the time-against-micro-batch curve: the smallest micro-batch at which the work of one
    micro-step (compute_s + memory_s) passes its overhead (overhead_s): where the regime stops being overhead. Below it,
    a bigger micro-batch adds tokens almost for free on a GPU (the host's dispatching hides the work); above it,
    time grows with the tokens. None when overhead still dominates at `largest` (or without constants for this
    precision). The op count does not depend on the micro-batch, the work does: one search over powers of two,
    then a bisection."""
    def work_reaches_overhead(mb: int) -> bool:
        t = predict_time(shape, cfg.replace(micro_batch=mb), precision, constants, device_type, padding_mask)
        return t is not None and _regime(t["compute_s"], t["memory_s"], t["overhead_s"]) != "overhead"

    if predict_time(shape, cfg, precision, constants, device_type, padding_mask) is None:
        return None
    hi = 1
    while not work_reaches_overhead(hi):          # 1, 2, 4, … until the work catches up
        if hi >= largest:
            return None
        hi = min(2 * hi, largest)
    lo = hi // 2                                  # overhead still dominated at lo (or lo = 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if work_reaches_overhead(mid) else (mid, hi)
    return hi
