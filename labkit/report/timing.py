"""The time theory in words: a record's predicted step time, its split into compute · memory · overhead, and the
regime that binds — what the lab, the command line and the lessons print beside a measured time.

    time_split_text(rec)   'compute 1.1 ms · memory 0.62 ms · overhead 14.2 ms a micro-step → overhead-bound'
    step_time_text(rec)    '8 micro-steps × 16 ms + optimizer 3.1 ms = 0.131 s an optimizer step'
    constants_text(rec)    'constants: calibrated on x86_64, 2026-12-01'

The numbers are record.theory.time (labkit.theory.time.predict_time); this module only chooses words. A record
without them (an older record, or a CPU never calibrated) reads None / says why.
"""
from __future__ import annotations

from labkit.record import TimeTheory, typed
from labkit.units import change, fmt_seconds

REGIME_WORDS = {"compute": "compute-bound", "memory": "memory-bound", "overhead": "overhead-bound"}


def time_theory(record) -> TimeTheory | None:
    """record.theory.time when it holds figures, else None."""
    t = typed(record).theory.time
    return t if t is not None and t.total_s is not None else None


def predicted_step_s(record) -> float | None:
    """The theory's seconds for one optimizer step (all micro-steps + the optimizer step, and for N ranks the
    gradient all-reduce: theory.data_parallel.step_s): what measured.step_time_s is compared with."""
    t = time_theory(record)
    if t is None:
        return None
    return (typed(record).theory.data_parallel or {}).get("step_s") or t.step_s


def regime_of(record) -> str | None:
    """'overhead' when one micro-step's dispatching takes at least as long as its work (compute + memory), else
    the larger of compute and memory (`labkit.theory.time`); None without a time theory."""
    t = time_theory(record)
    return None if t is None else t.regime


def time_split_text(record) -> str:
    """One micro-step's predicted time in its three parts and the regime, or "none (why)": callers put it after a
    label that says "theory"."""
    t = time_theory(record)
    if t is None:
        note = (typed(record).theory.time or TimeTheory()).note
        return f"none ({note})" if note else "none in this record"      # read after a "time theory:" label
    parts = " · ".join(f"{name} {fmt_seconds(seconds)}" for name, seconds in
                       (("compute", t.compute_s), ("memory", t.memory_s), ("overhead", t.overhead_s)))
    return f"{parts} a micro-step → {REGIME_WORDS.get(t.regime, t.regime)}"


def step_time_text(record) -> str:
    """How the micro-steps and the optimizer step add up to the predicted optimizer step."""
    t = time_theory(record)
    if t is None:
        return ""
    accum = typed(record).config.get("grad_accum") or 1
    micro = f"{accum} micro-steps × {fmt_seconds(t.total_s)}" if accum > 1 else f"1 micro-step {fmt_seconds(t.total_s)}"
    return f"{micro} + optimizer {fmt_seconds(t.optimizer_s)} = {fmt_seconds(t.step_s)} an optimizer step"


def constants_text(record) -> str:
    """Where the device constants came from, short: the first clause of their source."""
    source = ((typed(record).theory.time or TimeTheory()).constants or {}).get("source")
    if not source:
        return ""
    return "constants: " + source.split(" (F, B); ")[0].split("; ")[0]


def time_note(record) -> str:
    """The lab's and the command line's line about the time theory: split, regime, sum, constants."""
    if time_theory(record) is None:
        return time_split_text(record)
    return "; ".join(x for x in (time_split_text(record), step_time_text(record), constants_text(record)) if x)


def step_time_change(prev, cur) -> tuple[float | None, float | None, str | None]:
    """(measured change, theory change, regime of `cur`) of the optimizer-step time between two records."""
    measured = change(typed(cur).measured.step_time_s, typed(prev).measured.step_time_s)
    return measured, change(predicted_step_s(cur), predicted_step_s(prev)), regime_of(cur)


def micro_batch_rows(timed: list) -> list[tuple]:
    """One table row per timed run that finished: (micro-batch, measured step, theory step, measured tokens/s, theory
    tokens/s, regime), "—" where a run has no time theory (a GPU without a data sheet whose calibration failed).
    A run that ran out of memory has no times, so it has no row."""
    rows = []
    for r in map(typed, timed):
        if r.status != "ok":
            continue
        mb, seq, p = r.config["micro_batch"], r.config["seq_len"], predicted_step_s(r)
        rows.append((mb, fmt_seconds(r.measured.step_time_s), fmt_seconds(p) if p else "—",
                     f"{r.measured.tokens_per_s:,.0f}", f"{mb * seq / p:,.0f}" if p else "—",
                     REGIME_WORDS.get(regime_of(r), "—")))
    return rows


def micro_batch_gain(timed: list) -> tuple[int, float | None, float | None] | None:
    """From the smallest to the largest micro-batch that finished: (largest micro-batch, tokens/s gain measured,
    gain in theory or None without a time theory). None when fewer than two runs finished."""
    done = [r for r in map(typed, timed) if r.status == "ok"]
    if len(done) < 2:
        return None
    first, last = done[0], done[-1]
    measured = last.measured.tokens_per_s / first.measured.tokens_per_s
    p_first, p_last = predicted_step_s(first), predicted_step_s(last)
    theory = (last.config["micro_batch"] / p_last) / (first.config["micro_batch"] / p_first) \
        if p_first and p_last else None
    return last.config["micro_batch"], measured, theory
