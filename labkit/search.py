"""Finding the largest micro-batch that fits: grow, hit the wall, bisect — and survive every OOM on the way.

    1  2  4  8  16 ✗          double until a try runs out of memory (or the ceiling is reached)
             8 12 ✗ 10 ✓ 11 ✗  then bisect between the last fit and the first miss → 10

Each try is one real forward + backward at that micro-batch on a model loaded once. An OOM is caught, the
memory freed (gradients dropped, `gc.collect()`, `torch.cuda.empty_cache()`), and the search goes on. On a CPU,
where a real OOM cannot be provoked safely, `cfg.memory_budget_gb` declares a try over budget from its measured
resident + saved bytes: a simulated OOM, labelled so.
"""
from __future__ import annotations

from labkit.engine import data, measure
from labkit.config import RunConfig
from labkit.engine.models import load_model, tokenizer_for
from labkit.engine.runner import (check_budget, forward_backward, free_memory, is_out_of_memory, label_tokens,
                                  release_failure)
from labkit.engine.device import budget_labels, run_setup
from labkit.shapes import warn_fit


def search_largest(fits, lo: int = 1, hi: int = 64) -> tuple[int | None, list[tuple[int, bool]]]:
    """Largest n in [lo, hi] with fits(n) True, assuming fits is monotone. Returns (best or None, tries)."""
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
        raise ValueError(f"need integers 1 ≤ lo ≤ hi, got lo={lo!r}, hi={hi!r}")
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


def largest_micro_batch(cfg: RunConfig, lo: int = 1, hi: int = 64, device: str | None = None,
                        weights: str = "auto") -> dict:
    """Search the largest micro-batch for this config. Returns {"best", "trail", "labels", "device"}; each trail
    entry: {"micro_batch", "status" ("ok"/"oom"), "peak_allocated_bytes", "saved_activation_bytes", "error"}."""
    warn_fit(cfg, stacklevel=2)                # seq_len beyond the positions, a rank above a layer's: advice
    device, dev, precision, labels = run_setup(cfg, device)
    labels += budget_labels(cfg, dev)
    model, src = load_model(cfg, precision, device, weights)
    labels += ["shape-only"] if src.kind == "shape-only" else []
    tokenizer = tokenizer_for(src)
    texts = data.course_texts()
    resident = sum(measure.resident_bytes(model).values())
    trail = []

    def fits(b: int) -> bool:
        entry = {"micro_batch": b, "status": "ok", "peak_allocated_bytes": None, "saved_activation_bytes": None,
                 "error": None}
        trail.append(entry)
        batch = {k: v.to(device) for k, v in next(data.batches(tokenizer, texts, cfg.seq_len, b,
                                                                cfg.pad_to_seq_len, cfg.seed)).items()}

        def over_budget(saved: int) -> None:
            entry["saved_activation_bytes"] = saved
            check_budget(cfg, resident + saved, "resident + saved activations")

        try:
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
    if any(e["status"] == "oom" for e in trail) and "budget-simulated" in labels:
        labels.append("simulated-oom")
    return {"best": best, "trail": trail, "labels": labels, "device": dev, "config": cfg.to_dict()}
