"""The step runner: real QLoRA optimizer steps, measured.

One optimizer step = `grad_accum` micro-batches of forward + backward, then one optimizer step:

    for step in range(steps):                       # 2 micro × 16 accum × 1 GPU = 32 sequences a step
        for micro in range(grad_accum):
            loss = model(**batch, num_items_in_batch=N).loss   # sum over tokens / N, N = label tokens of the step
            scaler.scale(loss).backward()                      # gradients add up across micro-batches
        scaler.unscale_(opt); clip; scaler.step(opt); scaler.update(); sched.step(); opt.zero_grad()

The loss is normalised over every label token of the whole accumulation cycle (as HF Trainer does since
transformers PR #34191), so the accumulated gradient equals the big batch's. fp16 runs under autocast with a
GradScaler; bf16 under autocast without one; fp32 plain.

Measured per run: saved activations of the first micro-batch (hooks on that forward only), the aten ops that same
micro-batch dispatches in forward, recompute and backward (`op_count.OpCounter`), resident tensor sizes,
CUDA peaks per step, median step time after the warm-up steps (hooks are off then), tokens/s, loss per optimizer
step. An OOM (`torch.OutOfMemoryError`, a CPU allocation failure, or a CPU run over its declared budget) ends the
run with status "oom"; memory is freed and the process carries on.

A failed run leaves nothing behind. Python keeps a failed call's frames alive through the exception's traceback
(and IPython keeps the last traceback for good), and those frames hold the model, the batch and the half-built
autograd graph. So every failure path clears the frames below the runner (`release_failure`) before the memory is
given back, and the record says how much was already held when the run began (`allocated_before_bytes`): a
learner who keeps a model in a notebook variable sees why the peak is higher.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import time
import traceback
import types
import warnings

import torch

from labkit.engine import data, measure, notices, op_count, rank_context
from labkit.config import RunConfig, check_steps
from labkit.record import Measured
from labkit.units import GiB, MiB
from labkit.engine.device import budget_labels, run_setup
from labkit.engine.measure import free_memory
from labkit.engine.models import TORCH_DTYPES, load_model, tokenizer_for

HELD_BEFORE_WARN_BYTES = 256 * MiB     # above this, a record warns that memory was already held when it began


class SimulatedOOM(RuntimeError):
    """Raised on CPU when measured bytes pass the run's declared memory budget (a simulated OOM, labelled so)."""


def release_failure(exc: BaseException | None) -> None:
    """Drop the local variables of every finished frame in `exc`'s traceback (and in the exceptions chained to
    it): the forward's activations, the half-built graph, the batch. Frames still running are left alone
    (`traceback.clear_frames` skips them). After this, holding the exception holds no tensors."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA OOM, a CPU run over its declared budget (simulated), or a CPU allocation failure (torch raises that
    as a RuntimeError from its default CPU allocator, not as OutOfMemoryError)."""
    return isinstance(exc, (torch.OutOfMemoryError, SimulatedOOM)) or \
        (isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def record_failure(result: dict, exc: Exception) -> None:
    """A failed run as a result: status "oom" (labelled "simulated-oom" when a CPU budget declared it) or "error"
    with its first line, and for an error the traceback's last frames. Call it inside the `except` block."""
    result["failed_at"] = time.time()          # when: in a data-parallel run the first rank to fail is the cause
    if is_out_of_memory(exc):
        result["status"], result["error"] = "oom", str(exc).splitlines()[0]
        if isinstance(exc, SimulatedOOM):
            result["labels"].append("simulated-oom")
    else:
        result["status"], result["error"] = "error", f"{type(exc).__name__}: {exc}".splitlines()[0]
        result["traceback"] = traceback.format_exc(limit=4)


def held_before(device: str) -> dict:
    """The `allocated_before_*` fields of a record, and a warning when the figure is large."""
    held, source = measure.allocated_before(device)
    out = {"allocated_before_bytes": held, "allocated_before_source": source, "warnings": [], "labels": []}
    if held > HELD_BEFORE_WARN_BYTES:
        out["labels"] = ["memory-held-before"]
        out["warnings"] = [f"{held / MiB:,.0f} MiB were already in memory when this run started, and its peak "
                           "includes them: restart the runtime, or free your own tensors (del model; "
                           "gc.collect()) before measuring"]
    return out


def autocast(device: str, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=TORCH_DTYPES[precision])


def make_optimizer(model, cfg: RunConfig):
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optim == "adamw":
        return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    import bitsandbytes as bnb

    return bnb.optim.PagedAdamW8bit(params, lr=cfg.learning_rate, weight_decay=0.0)


def optimizer_step(optimizer, params, scaler=None, scheduler=None, before_clip=None):
    """What ends each optimizer step, as Trainer does it: unscale the gradients (fp16's GradScaler), clip their norm
    to 1.0 (Trainer's max_grad_norm), step (the scaler skips a step whose gradients hold inf/nan), update the scale,
    advance the schedule only when the optimizer stepped (as Trainer does), zero the gradients.
    `before_clip()`, when given, runs between unscaling and clipping; its answer is returned."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    seen = before_clip() if before_clip is not None else None
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    if scaler is not None:
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        stepped = scaler.get_scale() >= scale          # a skipped step lowers the scale
    else:
        optimizer.step()
        stepped = True
    if scheduler is not None and stepped:              # else torch warns: scheduler.step() before optimizer.step()
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return seen


def make_scheduler(optimizer, steps: int):
    """Linear warm-up over 3% of the optimizer steps (at least one), then linear decay: advances once per
    optimizer step, never per micro-batch."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, max(1, math.ceil(0.03 * steps)), max(steps, 2))


def label_tokens(batch: dict) -> int:
    """Tokens that carry a loss: labels shifted by one, ignoring -100."""
    return int((batch["labels"][:, 1:] != -100).sum())


def check_budget(cfg: RunConfig, bytes_in_use: int, what: str) -> None:
    if cfg.memory_budget_gb is not None and bytes_in_use > cfg.memory_budget_gb * GiB:
        raise SimulatedOOM(f"simulated OOM: {what} = {bytes_in_use / GiB:.3f} GiB measured > budget "
                           f"{cfg.memory_budget_gb:g} GiB")


def forward_backward(model, batch: dict, n_items: int, device: str, precision: str, scaler=None,
                     meter: bool = False, budget_check=None, ops: op_count.OpCounter | None = None,
                     loss_scale: int = 1) -> tuple[float, int | None]:
    """One micro-batch: forward under autocast (fp16/bf16), loss = token-summed loss / n_items, backward.

    n_items = label tokens of the whole accumulation cycle, so the gradients summed over the cycle equal the
    gradient of one big batch (transformers #34191). With `meter`, the forward runs under a SavedTensorMeter and
    `budget_check(saved_bytes)` may raise SimulatedOOM before backward. `loss_scale`: N under DDP over N ranks
    (DDP averages gradients, so each rank's loss × N makes their mean the sum over ranks; rank_context). With `ops` (an OpCounter), the forward and
    the backward are counted, each in its phase; the loss scaling between them and `loss.item()` are not.
    Returns (loss value, saved bytes or None).
    """
    saved = None
    with (ops or contextlib.nullcontext()), autocast(device, precision):
        if meter:                  # a `with`, not a lambda: a closure would keep the model alive in a traceback
            with measure.SavedTensorMeter(model) as counted:
                out = model(**batch, num_items_in_batch=n_items)
            saved = counted.bytes
            if budget_check is not None:
                budget_check(saved)
        else:
            out = model(**batch, num_items_in_batch=n_items)
    loss = out.loss
    scaled = loss * loss_scale if loss_scale != 1 else loss
    scaled = scaler.scale(scaled) if scaler is not None else scaled
    if ops is not None:
        ops.phase = "backward"
    with (ops or contextlib.nullcontext()):
        scaled.backward()
    return loss.item(), saved


def empty_measured(held: dict | None = None) -> Measured:
    """The measured part of a record before anything is measured: every field None (but what was already held when
    the run started, if `held` says)."""
    held = held or {}
    return Measured(allocated_before_bytes=held.get("allocated_before_bytes"),
                    allocated_before_source=held.get("allocated_before_source"))


def measure_run(cfg: RunConfig, steps: int = 3, warmup: int = 1, device: str | None = None,
                weights: str = "auto", progress: bool = False, on_step=None,
                ranks: rank_context.SingleProcess | rank_context.DataParallelRank = rank_context.SINGLE,
                adapters_path: str | None = None) -> dict:
    """Run `steps` real optimizer steps and measure them. Returns the measured half of a record.

    ValueError for a bad request (steps < 1, bf16 on a GPU without it, unknown model). Any failure during the
    run itself is a result: status "oom" or "error" with the message; memory is freed either way. An interrupt
    (KeyboardInterrupt) frees the memory too, then goes on up. With warmup 0 the median includes the first step's
    one-off costs, and the record is labelled "time-includes-warmup".
    `on_step(step_index, steps)` is called after each optimizer step (progress bars hook in here).
    `ranks`: this process's place in a data-parallel run (`rank_context.DataParallelRank`, set up by
    `engine.data_parallel`); the default is one process. A rank measures itself; its loss is the effective batch's.
    `adapters_path`: (rank 0) torch.save there {"lora": adapter weights after the last step, "first_step_grads":
    their gradients in the first step, all-reduced, before clipping}: to compare runs weight by weight.
    """
    check_steps(steps, warmup)
    device, dev, precision, labels = run_setup(cfg, device)
    labels += budget_labels(cfg, dev)
    held = held_before(device)
    labels += held["labels"] + (["time-includes-warmup"] if warmup == 0 else [])
    result = {
        "resolved": {"precision": precision, "device": device},
        "device": dev, "labels": labels, "warnings": held["warnings"],
        "model_source": None, "status": "ok", "error": None,
        "measured": empty_measured(held),
    }
    scope = types.SimpleNamespace()          # everything the run allocates hangs here, so one line drops it all
    try:
        with warnings.catch_warnings():
            # e.g. bitsandbytes warns once per process that paging is off on a CPU; the record says so instead
            # (label "paging-off-on-cpu"), so scripts, the command line and data-parallel ranks stay calm
            notices.silence_warnings()
            _steps(cfg, steps, warmup, device, dev, precision, weights, progress, on_step, result, scope, ranks,
                   adapters_path)
        if adapters_path is not None and ranks.rank == 0 and result["status"] == "ok":
            torch.save({"lora": _adapters(scope.model, "data"), "first_step_grads": scope.first_grads},
                       adapters_path)
    except BaseException as e:               # a failed run is a result, not a dead kernel
        release_failure(e)
        if not isinstance(e, Exception):      # KeyboardInterrupt: free what the run held (below), then stop as asked
            raise
        record_failure(result, e)
    finally:
        bar = getattr(scope, "bar", None)
        if bar is not None:
            bar.close()
        scope.__dict__.clear()               # model, optimizer, scaler, batches, trainable params and their .grad
        free_memory()
    return result


def _adapters(model, what: str) -> dict:
    """Copies of the trainable tensors' data (or .grad), by name, on the CPU."""
    return {n: getattr(p, what).detach().float().cpu().clone() for n, p in model.named_parameters()
            if p.requires_grad and getattr(p, what) is not None}


def _steps(cfg: RunConfig, steps: int, warmup: int, device: str, dev: dict, precision: str, weights: str,
           progress: bool, on_step, result: dict, scope: types.SimpleNamespace,
           ranks=rank_context.SINGLE, adapters_path: str | None = None) -> None:
    """The measured loop of `measure_run`. Every tensor-holding object is kept on `scope`, never only in a local,
    so the caller can drop them all whatever happens here."""
    m = result["measured"]
    scope.model, src = load_model(cfg, precision, device, weights)
    model = scope.model
    result["model_source"] = src.kind
    if src.kind == "shape-only":
        result["labels"].append("shape-only")
    if cfg.optim == "paged_adamw_8bit" and dev["type"] == "cpu":
        result["labels"].append("paging-off-on-cpu")       # bitsandbytes falls back to non-paged on a CPU
    tokenizer = tokenizer_for(src)
    # N ranks draw the batches of one process with micro-batch mb × N and keep their rows: 2 ranks × mb 2 ← 4 rows
    scope.stream = ranks.my_rows(data.batches(tokenizer, data.course_texts(), cfg.seq_len,
                                              cfg.micro_batch * ranks.world_size, cfg.pad_to_seq_len, seed=cfg.seed))
    scope.optimizer = optimizer = make_optimizer(model, cfg)
    scope.scheduler = scheduler = make_scheduler(optimizer, steps)
    scope.scaler = scaler = torch.amp.GradScaler(torch.device(device).type) if precision == "fp16" else None
    scope.trainable = trainable = [p for p in model.parameters() if p.requires_grad]
    scope.trained = trained = ranks.wrap(model)             # the model itself, or DDP around it
    measure.reset_cuda_peak(device)
    m["cuda_context_bytes"] = measure.cuda_context_bytes(device)
    resident = measure.resident_bytes(model)
    check_budget(cfg, resident["quantized_weights"] + resident["unquantized_weights"] + resident["lora"],
                 "weights + adapters")

    if progress:
        from tqdm.auto import tqdm
        scope.bar = tqdm(total=steps, desc="QLoRA steps", unit="step", leave=False)
    losses, times, peaks, after, syncs, tokens = [], [], [], [], [], []
    for step in range(steps):
        scope.micro_batches = [{k: v.to(device) for k, v in next(scope.stream).items()} for _ in range(cfg.grad_accum)]
        tokens.append(sum(label_tokens(b) for b in scope.micro_batches))    # this rank's, the whole cycle
        n_items = ranks.total(tokens[-1])                                 # … summed over the ranks
        measure.reset_cuda_peak(device)
        step_loss = 0.0
        with measure.timed(device, times):
            for micro, batch in enumerate(scope.micro_batches):
                first = step == 0 and micro == 0               # hooks on this one forward only
                if first:
                    m["batch_has_padding"] = bool((batch["attention_mask"] == 0).any())
                # ops are counted on one micro-batch of the first step: the second when there is one, a plain
                # micro-batch (the first one's saved-tensor hooks change how many `detach` views autograd
                # dispatches, not the ops that do work); it adds its gradients into .grad ("accumulating")
                counted = step == 0 and micro == min(1, cfg.grad_accum - 1)
                ops = op_count.OpCounter() if counted else None
                with ranks.no_sync(trained, last=micro == cfg.grad_accum - 1):   # one all-reduce a step
                    loss, saved = forward_backward(
                        trained, batch, n_items, device, precision, scaler, meter=first,
                        budget_check=lambda b: check_budget(cfg, sum(resident.values()) + b,
                                                            "resident + saved activations"),
                        ops=ops, loss_scale=ranks.loss_scale)
                if first:
                    m["saved_activation_bytes"] = saved
                if counted:
                    m["aten_ops"] = {**ops.summary(), "micro_batch": micro, "accumulating": micro > 0,
                                     "saved_tensor_hooks": first}
                step_loss += loss
            before_clip = None
            if step == 0:
                def before_clip():                                   # all-reduced, unscaled, not yet clipped
                    if adapters_path:
                        scope.first_grads = _adapters(model, "grad")
                    return measure.resident_bytes(model)["gradients"]
            seen = optimizer_step(optimizer, trainable, scaler, scheduler, before_clip)
            if step == 0:
                grads = seen
        losses.append(ranks.total(step_loss))                     # Σ over ranks: the effective batch's loss
        syncs.append(ranks.take_sync_seconds())
        peaks.append(measure.cuda_peaks(device))                  # this step's peaks (reset per step)
        after.append(measure.cuda_memory_now(device))             # what stays between steps
        if step == 0:
            resident = measure.resident_bytes(model, optimizer)
            resident["gradients"] = grads
            m["resident"] = resident
            check_budget(cfg, sum(resident.values()) + (m["saved_activation_bytes"] or 0),
                         "resident + gradients + optimizer + saved activations")
        bar = getattr(scope, "bar", None)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}")
        if on_step is not None:
            on_step(step, steps)
    m["step_times_s"] = times
    m["step_time_s"] = statistics.median(times[warmup:])
    m["tokens_per_s"] = cfg.micro_batch * cfg.seq_len * cfg.grad_accum / m["step_time_s"]   # padding included
    m["loss"] = losses
    if ranks.world_size > 1:                                     # only N-process records carry these keys
        m["sync_times_s"] = syncs
        m["sync_time_s"] = statistics.median(syncs[warmup:])
        m["rank"], m["world_size"], m["label_tokens"] = ranks.rank, ranks.world_size, tokens
    if dev["type"] == "cuda":
        m["peak_allocated_per_step"] = [p["peak_allocated_bytes"] for p in peaks]
        m["peak_reserved_per_step"] = [p["peak_reserved_bytes"] for p in peaks]
        m["peak_allocated_bytes"] = max(m["peak_allocated_per_step"])
        m["peak_reserved_bytes"] = max(m["peak_reserved_per_step"])
        m["allocated_after_step"] = [a["allocated_bytes"] for a in after]
        m["reserved_after_step"] = [a["reserved_bytes"] for a in after]
