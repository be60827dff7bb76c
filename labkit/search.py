"""Finding the largest micro-batch that fits: grow, hit the wall, bisect — and survive every OOM on the way.

    1  2  4  8  16 ✗          double until a try runs out of memory (or the ceiling is reached)
             8 12 ✗ 10 ✓ 11 ✗  then bisect between the last fit and the first miss → 10

Each try is one real forward + backward at that micro-batch on a model loaded once. An OOM is caught, the
memory freed (gradients dropped, `gc.collect()`, `torch.cuda.empty_cache()`), and the search goes on. On a CPU,
where a real OOM cannot be provoked safely, `cfg.memory_budget_gb` declares a try over budget from its measured
resident + saved bytes: a simulated OOM, labelled so.

A failure that is not an OOM (a driver error, a bug) ends the search: it is not an answer about memory. By default
the exception propagates, with a note naming the tries so far; with on_error="return" the result says
status "error", the error's first line and the trail up to it (what `labkit search` prints as one line, exit 1):

    search stopped at micro-batch 8: RuntimeError: CUDA error: … (tried 1 ok, 2 ok, 4 ok, 8 error)
"""
from __future__ import annotations

from labkit.engine import data, measure
from labkit.config import RunConfig, check_config, check_device
from labkit.engine.models import load_model, tokenizer_for
from labkit.engine.runner import (check_budget, forward_backward, free_memory, is_out_of_memory, label_tokens,
                                  release_failure)
from labkit.engine.device import budget_labels, run_setup
from labkit.shapes import warn_fit


def _check_bounds(lo, hi) -> None:
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
        raise ValueError(f"need integers 1 ≤ lo ≤ hi, got lo={lo!r}, hi={hi!r}")


def search_largest(fits, lo: int = 1, hi: int = 64) -> tuple[int | None, list[tuple[int, bool]]]:
    """Largest n in [lo, hi] with fits(n) True, assuming fits is monotone. Returns (best or None, tries)."""
    _check_bounds(lo, hi)
    tries: list[tuple[int, bool]] = []

    def attempt(n):
        ok = bool(fits(n))
        tries.append((n, ok))
        return ok

    n, good, bad = lo, None, None
    while True:                                   # grow ×2
        if attempt(n):
            good = n
            if n == hi:
                return good, tries
            n = min(2 * n, hi)
        else:
            bad = n
            break
    if good is None:
        return None, tries
    while bad - good > 1:                         # bisect (good fits, bad does not)
        mid = (good + bad) // 2
        if attempt(mid):
            good = mid
        else:
            bad = mid
    return good, tries


def tries_text(trail: list[dict]) -> str:
    """The trail in a few words: "1 ok, 2 ok, 4 ok, 8 error"."""
    return ", ".join(f"{e['micro_batch']} {e['status']}" for e in trail) or "none"


def stopped_text(found: dict) -> str:
    """One line for a search that a failure (not an OOM) ended: where, what, and the tries so far."""
    where = f"at micro-batch {found['stopped_at']}" if found.get("stopped_at") is not None else "before its first try"
    return f"search stopped {where}: {found['error']} (tried {tries_text(found['trail'])})"


def _error_line(e: BaseException) -> str:
    first = (str(e).splitlines() or [""])[0]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def largest_micro_batch(cfg: RunConfig, lo: int = 1, hi: int = 64, device: str | None = None,
                        weights: str = "auto", on_error: str = "raise") -> dict:
    """Search the largest micro-batch for this config. Returns {"best", "trail", "labels", "device", "config",
    "status", "error"}; each trail entry: {"micro_batch", "status" ("ok"/"oom"/"error"), "peak_allocated_bytes",
    "saved_activation_bytes", "error"}.

    A failure that is not an OOM ends the search. on_error="raise" (the default): the exception propagates, with a
    note naming the tries so far. on_error="return": the result has status "error", "error" ("RuntimeError: …"),
    "stopped_at" (the micro-batch that failed, None when the model failed to load) and "best" None."""
    if on_error not in ("raise", "return"):
        raise ValueError(f"on_error must be 'raise' or 'return', got {on_error!r}")
    check_config(cfg, "largest_micro_batch expects")
    check_device(device)
    _check_bounds(lo, hi)
    warn_fit(cfg, stacklevel=2)                # seq_len beyond the positions, a rank above a layer's: advice
    device, dev, precision, labels = run_setup(cfg, device)
    labels += budget_labels(cfg, dev)
    trail = []
    found = {"best": None, "trail": trail, "labels": labels, "device": dev, "config": cfg.to_dict(),
             "status": "ok", "error": None}
    try:
        found["best"] = _search(cfg, lo, hi, device, precision, weights, labels, trail)
    except Exception as e:  # noqa: BLE001 — OOMs were answers inside _search; anything else stops the search
        release_failure(e)
        failed = trail[-1] if trail and trail[-1]["status"] == "error" else None
        if failed is None and isinstance(e, (ValueError, OSError)):
            raise                                  # the model could not be loaded as asked: bad input, as before
        found.update(status="error", error=_error_line(e), stopped_at=failed["micro_batch"] if failed else None)
        if on_error == "raise":
            if hasattr(e, "add_note"):                 # Python ≥ 3.11: shown under the traceback
                e.add_note(f"labkit: {stopped_text(found)}")
            raise
    if any(e["status"] == "oom" for e in trail) and "budget-simulated" in labels:
        labels.append("simulated-oom")
    return found


def _search(cfg, lo, hi, device, precision, weights, labels, trail) -> int | None:
    """Load the model once, then grow and bisect; each try appends its entry to `trail`."""
    model, src = load_model(cfg, precision, device, weights)
    labels += ["shape-only"] if src.kind == "shape-only" else []
    tokenizer = tokenizer_for(src)
    texts = data.course_texts()
    resident = sum(measure.resident_bytes(model).values())

    def fits(b: int) -> bool:
        entry = {"micro_batch": b, "status": "ok", "peak_allocated_bytes": None, "saved_activation_bytes": None,
                 "error": None}
        trail.append(entry)

        def over_budget(saved: int) -> None:
            entry["saved_activation_bytes"] = saved
            check_budget(cfg, resident + saved, "resident + saved activations")

        batch = None
        try:
            batch = {k: v.to(device) for k, v in next(data.batches(tokenizer, texts, cfg.seq_len, b,
                                                                    cfg.pad_to_seq_len, cfg.seed)).items()}
            measure.reset_cuda_peak(device)
            forward_backward(model, batch, label_tokens(batch), device, precision, meter=True,
                             budget_check=over_budget)
            entry["peak_allocated_bytes"] = measure.cuda_peaks(device)["peak_allocated_bytes"]
            return True
        except BaseException as e:
            release_failure(e)                     # the failed probe's activations and graph go with its frames
            if is_out_of_memory(e):
                entry["status"], entry["error"] = "oom", str(e).splitlines()[0]
                return False
            if isinstance(e, Exception):
                entry["status"], entry["error"] = "error", _error_line(e)
            raise                                  # not a memory failure: the search ends, holding nothing
        finally:
            del batch
            model.zero_grad(set_to_none=True)      # drop gradients of a half-done step
            free_memory()

    try:
        best, _ = search_largest(fits, lo, hi)
    finally:
        del model
        free_memory()
    return best
