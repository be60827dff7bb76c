"""Words and plain-text tables made from run records: config labels, the delta line between two runs, the command
line's record / sweep / search tables, and the lab's history as flat rows (its CSV).

Every number goes through `labkit.units` (bytes, changes, ratios); this module only chooses which numbers to show
and in what words. Records may be `RunRecord`s or their JSON dicts: each is read by attribute through
`labkit.record.typed`, so a missing part reads None instead of raising.
"""
from __future__ import annotations

import csv
import io

from labkit.config import RunConfig, rule_warnings
from labkit.record import typed
from labkit.report.timing import REGIME_WORDS, predicted_step_s, regime_of, time_note
from labkit.units import MISSING, change, fmt_bytes, fmt_change, fmt_ratio, fmt_seconds

# the memory components, in the order tables and charts show them
COMPONENTS = ["weights", "lora", "gradients", "optimizer", "saved activations", "logits"]
# the quantities the delta line compares, named as the lab's result table names its rows
SAVED, PEAK, STEP_TIME = "saved activations", "peak allocated", "step time"   # saved: layers + logits, the total

# ---- reading a record ------------------------------------------------------------------------------------------------
def _sum_or_none(*values):
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def theory_saved(record):
    """What the theory says autograd keeps for backward: layer activations + logits."""
    theory = typed(record).theory
    return _sum_or_none(theory.activations, theory.logits)


def component_values(record) -> dict:
    """{component: (theory bytes, measured bytes)} in COMPONENTS order; measured None where the run did not
    measure it (logits are measured only inside the saved activations)."""
    rec = typed(record)
    th, res = rec.theory, rec.measured.resident
    if res is None:                                      # not measured (an OOM, a record from a stand-in)
        from labkit.record import Resident
        res = Resident()
    return {
        "weights": (th.weights, _sum_or_none(res.quantized_weights, res.unquantized_weights)),
        "lora": (th.lora, res.lora),
        "gradients": (th.gradients, res.gradients),
        "optimizer": (th.optimizer, res.optimizer),
        "saved activations": (theory_saved(rec), rec.measured.saved_activation_bytes),
        "logits": (th.logits, None),
    }


def status_of(record) -> str:
    return typed(record).status or "ok"


def resolved_precision(record) -> str | None:
    """What the precision became on the record's device ("auto" → fp16 on a T4), else what was asked."""
    rec = typed(record)
    return (rec.resolved or {}).get("precision") or rec.config.get("precision")


def lab_of(record) -> dict:
    """What the lab adds to each entry of its history: {"run": its number, "source": "run" or "reference",
    "provenance": where a replayed record was measured, or None}; {} for a record outside a lab's history."""
    return typed(record).extra.get("lab") or {}


def labels_text(record) -> str:
    labels = typed(record).labels
    return "labels: " + (", ".join(labels) if labels else "none (measured on this GPU)")


# ---- compact config labels ("gc on · mb 2 · fp32") -------------------------------------------------------------------
_SHORT = {"micro_batch": "mb", "grad_accum": "ga", "seq_len": "seq", "lora_r": "r", "lora_alpha": "α",
          "num_gpus": "gpus", "eval_micro_batch": "eval mb", "lora_dropout": "drop", "learning_rate": "lr"}


def _short(field: str, record) -> str:
    value = typed(record).config.get(field)
    if field == "gradient_checkpointing":
        return f"gc {'on' if value else 'off'}"
    if field == "precision":
        return resolved_precision(record) or "?"
    if field in _SHORT:
        return f"{_SHORT[field]} {value}"
    if field == "lora_targets":
        return "+".join(t.split("_")[0] for t in value or [])
    if field == "optim":
        return {"paged_adamw_8bit": "adam 8-bit", "adamw": "adamw"}.get(value, str(value))
    if field == "quant":
        return "nf4" if value == "nf4" else "no quant"
    if isinstance(value, bool):
        return f"{field} {'on' if value else 'off'}"
    return f"{field} {value}"


def config_label(record, fields=("gradient_checkpointing", "micro_batch", "precision")) -> str:
    return " · ".join(_short(f, record) for f in fields)


def _differing_fields(records) -> list[str]:
    configs = [typed(r).config for r in records]
    keys = sorted({k for c in configs for k in c}, key=lambda k: list(configs[0]).index(k) if k in configs[0] else 99)
    return [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]


def sweep_labels(records) -> list[str]:
    """One compact label per record: checkpointing, micro-batch and precision always, plus any other field that
    differs across the sweep."""
    base = ["gradient_checkpointing", "micro_batch", "precision"]
    fields = base + [f for f in _differing_fields(records) if f not in base]
    return [config_label(r, fields) for r in records]


# ---- the delta line --------------------------------------------------------------------------------------------------
_NAMES = {"micro_batch": "micro-batch", "grad_accum": "accumulation", "lora_r": "LoRA r", "lora_alpha": "LoRA alpha",
          "lora_targets": "LoRA targets", "lora_dropout": "LoRA dropout", "optim": "optimizer",
          "eval_micro_batch": "eval micro-batch", "num_gpus": "GPUs", "learning_rate": "learning rate",
          "memory_budget_gb": "memory budget (GiB)"}
_SWITCHES = {"gradient_checkpointing": "checkpointing", "pad_to_seq_len": "padding to seq_len",
             "prepare_kbit": "prepare_kbit"}


# what an unset field means, in the words the lab's controls use (a learner read "budget 0.02 → None")
_UNSET = {"memory_budget_gb": "none", "eval_micro_batch": "the micro-batch"}


def _shown(field, value, record):
    if value is None and field in _UNSET:
        return _UNSET[field]
    if field == "lora_targets":
        return ",".join(value or [])
    if field == "precision" and value == "auto":
        return f"auto ({resolved_precision(record) or '?'})"
    return str(value)


def describe_changes(prev, cur) -> str:
    """'checkpointing on, micro-batch 2 → 4' — every config field that differs, plus the device if it does."""
    prev, cur = typed(prev), typed(cur)
    a, b = prev.config, cur.config
    parts = []
    for field in list(b) + [k for k in a if k not in b]:
        if a.get(field) == b.get(field):
            continue
        if field in _SWITCHES and isinstance(b.get(field), bool):
            parts.append(f"{_SWITCHES[field]} {'on' if b[field] else 'off'}")
        else:
            name = _NAMES.get(field, field)
            parts.append(f"{name} {_shown(field, a.get(field), prev)} → {_shown(field, b.get(field), cur)}")
    da, db = (prev.resolved or {}).get("device"), (cur.resolved or {}).get("device")
    if da and db and da != db:
        parts.append(f"device {da} → {db}")
    return ", ".join(parts) or "same config"


def _step_time_theory(prev, cur):
    """(getter, three_regime): what the delta line's step-time theory reads — the three-regime seconds of an
    optimizer step (theory.time.step_s) when both records have them, else the FLOPs (records from before the time
    theory, a CPU never calibrated), which the line then calls "FLOPs", not "theory"."""
    if predicted_step_s(prev) is not None and predicted_step_s(cur) is not None:
        return predicted_step_s, True
    return (lambda r: typed(r).theory.step_flops), False


def _regime_words(record) -> str:
    regime = regime_of(record)
    return f", {REGIME_WORDS[regime]}" if regime in REGIME_WORDS else ""


def delta_text(prev, cur, names=("this run", "previous run")) -> str:
    """The lab's delta line between two runs: what changed, then measured change with the theory's beside it.
    `names` say which run is which where one of them failed (the lab passes ("run 3", "run 1")).

    e.g. 'checkpointing on: saved activations −81% (theory −83%), step time +46% (theory +50%, overhead-bound)'
    """
    if cur is None:
        return "no run yet"
    if prev is None:
        return "first run: nothing to compare with yet"
    prev, cur = typed(prev), typed(cur)
    both_ok = status_of(prev) == "ok" and status_of(cur) == "ok"
    step_theory, three_regime = _step_time_theory(prev, cur)
    metrics = [  # (name, measured key, theory value getter, show only when both measured)
        (SAVED, "saved_activation_bytes", theory_saved, False),
        (PEAK, "peak_allocated_bytes", lambda r: r.theory.peak, True),
        (STEP_TIME, "step_time_s", step_theory, False),
    ]
    parts = []
    for name, key, theory_of, needs_both in metrics:
        measured = change(getattr(cur.measured, key), getattr(prev.measured, key)) if both_ok else None
        theory = change(theory_of(cur), theory_of(prev))
        if measured is None and (needs_both or theory is None):
            continue
        regime = _regime_words(cur) if name == STEP_TIME and three_regime and theory is not None else ""
        said = "FLOPs" if name == STEP_TIME and not three_regime else "theory"   # a FLOPs ratio is not a time theory
        if measured is None:
            parts.append(f"{name} not measured ({said} {fmt_change(theory)}{regime})")
        elif theory is None:
            parts.append(f"{name} {fmt_change(measured)}")
        else:
            parts.append(f"{name} {fmt_change(measured)} ({said} {fmt_change(theory)}{regime})")
    line = f"{describe_changes(prev, cur)}: " + (", ".join(parts) if parts else "nothing to compare")
    for who, rec in zip(names, (cur, prev)):
        if status_of(rec) != "ok":
            line += f" [{who}: {status_of(rec).upper()}, no measurement]"
    return line


# ---- the command line's tables ---------------------------------------------------------------------------------------
def _err(measured, theory) -> str:
    """Measured against the theory ('+4%', '−12%'); '' where either is missing."""
    c = change(measured, theory)
    return "" if c is None else fmt_change(c)


def format_record(record) -> str:
    """A record as a table: theory beside measured per component, then status, labels and warnings."""
    record = typed(record)
    cfg, theory, measured = record.config, record.theory, record.measured
    resolved = record.resolved or {}
    head = (f"{cfg['model']} · seq {cfg['seq_len']} · {cfg['micro_batch']} micro × {cfg['grad_accum']} accum × "
            f"{cfg['num_gpus']} GPU · {config_label(record, ('gradient_checkpointing', 'precision'))} · "
            f"{cfg['quant']} · r {cfg['lora_r']} · {cfg['optim']}")
    lines = [head, f"status: {record.status}" + (f" ({record.error})" if record.error else "")
             + f" · device: {resolved.get('device', '?')}"
             + (f" ({record.device.get('name')})" if record.device else ""),
             f"labels: {', '.join(record.labels) or 'none'}", ""]
    row = "{:<28}{:>14}{:>14}{:>10}"
    lines.append(row.format("component", "theory", "measured", "error"))
    for name, (t, m) in component_values(record).items():
        label = {"saved activations": "saved activations + logits", "logits": "  of which logits"}.get(name, name)
        shown_m = "(in saved)" if name == "logits" else fmt_bytes(m)
        lines.append(row.format(label, fmt_bytes(t), shown_m, _err(m, t)))
    lines.append(row.format("simple rule b·s·h·L·2", fmt_bytes(theory.simple_rule_activations), "", ""))
    lines.append(row.format("peak allocated", fmt_bytes(theory.peak), fmt_bytes(measured.peak_allocated_bytes),
                            _err(measured.peak_allocated_bytes, theory.peak)))
    lines.append(row.format("peak reserved", "", fmt_bytes(measured.peak_reserved_bytes), ""))
    if measured.allocated_before_bytes is not None:       # records from before 2026-11-30 lack it
        source = {"cuda-allocator": "CUDA allocated", "live-tensors": "live tensors"}.get(
            measured.allocated_before_source, measured.allocated_before_source or "")
        lines.append(row.format("held before the run", "", fmt_bytes(measured.allocated_before_bytes), "")
                     + f"  ({source}; included in the peak)")
    step, predicted = measured.step_time_s, predicted_step_s(record)
    lines.append(row.format("step time", fmt_seconds(predicted), fmt_seconds(step), _err(step, predicted)))
    if measured.tokens_per_s:
        lines.append(row.format("tokens/s", "", f"{measured.tokens_per_s:.1f}", ""))
    lines.append(f"time theory: {time_note(record)}")
    if theory.step_flops:
        lines.append(f"FLOPs per optimizer step: {theory.step_flops:.3g}")
    if measured.loss:
        lines.append("loss per optimizer step: " + ", ".join(f"{x:.4f}" for x in measured.loss))
    lines += rank_lines(record)
    try:
        warnings = record.warnings or rule_warnings(RunConfig.from_dict(cfg))
    except ValueError:
        warnings = []
    lines += [f"warning: {w}" for w in warnings]
    return "\n".join(lines)


def rank_lines(record) -> list[str]:
    """A data-parallel record's ranks, one line each (step time, gradient sync and its share, saved activations,
    CUDA peak), and the theory's sync time and the per-GPU copy of the base. Nothing for one process."""
    record = typed(record)
    ranks = record.ranks
    if not ranks:
        return []
    cpu = "cpu-processes" in record.labels
    what = "gloo processes on a CPU: a stand-in, not GPU figures" if cpu else "GPUs, DDP over NCCL"
    row = "{:<6}{:>12}{:>12}{:>8}{:>14}{:>16}"
    lines = [f"ranks: {len(ranks)} ({what}); loss and tokens/s above are the effective batch's",
             row.format("rank", "step time", "sync", "share", "saved acts", "peak allocated")]
    for r in ranks:
        step, sync = r.get("step_time_s"), r.get("sync_time_s")
        lines.append(row.format(r.get("rank", "?"), f"{step:.3g} s" if step else MISSING,
                                f"{sync * 1e3:.3g} ms" if sync is not None else MISSING,
                                f"{sync / step:.1%}" if sync is not None and step else MISSING,
                                fmt_bytes(r.get("saved_activation_bytes")), fmt_bytes(r.get("peak_allocated_bytes"))))
    dp = record.theory.get("data_parallel")
    if dp:
        lines.append(f"theory: all-reduce {fmt_bytes(dp['allreduce_bytes_per_rank'])} a rank in "
                     f"{dp['ddp_buckets']} bucket(s), {dp['sync_s'] * 1e3:.3g} ms over {dp['link']['name']}; every "
                     f"rank holds the whole base ({fmt_bytes(dp['memory_per_rank']['weights'])}): DDP copies, "
                     "it does not shard")
    return lines


def format_sweep(records) -> str:
    """One line per record: status, saved activations measured vs theory, step time and its ratio to the first."""
    labels = sweep_labels(records)
    width = max(len(s) for s in labels) + 2
    row = "{:<%d}{:>7}{:>14}{:>14}{:>8}{:>11}{:>9}" % width
    lines = [row.format("config", "status", "saved meas.", "saved theory", "error", "step time", "vs first")]
    records = [typed(r) for r in records]
    times = [r.measured.step_time_s for r in records]
    base = next((t for t in times if t), None)
    for label, r, t in zip(labels, records, times):
        m, th = r.measured.saved_activation_bytes, theory_saved(r)
        lines.append(row.format(label, r.status, fmt_bytes(m), fmt_bytes(th), _err(m, th),
                                f"{t:.3g} s" if t else MISSING, fmt_ratio(t, base) if t and base else MISSING))
    stand_ins = sorted({lab for r in records for lab in r.labels})
    if stand_ins:
        lines.append(f"labels: {', '.join(stand_ins)}")
    return "\n".join(lines)


def format_search(found: dict) -> str:
    """`labkit search`'s answer: the largest micro-batch that fits, then each try."""
    trail, best = found["trail"], found["best"]
    if best is None:
        answer = ("none: even micro-batch " + str(trail[0]["micro_batch"]) + " does not fit"
                  + (" the memory budget" if "budget-simulated" in found["labels"] else "") + " (try a shorter "
                  "--seq-len, checkpointing on, or a larger budget)") if trail else "none (nothing was tried)"
    elif trail and trail[-1]["status"] == "ok" and best == max(e["micro_batch"] for e in trail) \
            and not any(e["status"] == "oom" for e in trail):
        answer = f"{best} (the ceiling: nothing ran out of memory up to it; raise --max to look further)"
    else:
        answer = str(best)
    lines = [f"largest micro-batch that fits: {answer}   [{', '.join(found['labels']) or 'measured'}]"]
    for e in trail:
        lines.append(f"  micro-batch {e['micro_batch']:4d}  {e['status']:3s}  saved activations "
                     f"{fmt_bytes(e['saved_activation_bytes']):>10s}  peak allocated "
                     f"{fmt_bytes(e['peak_allocated_bytes']):>10s}")
    return "\n".join(lines)


# ---- the lab's history as flat rows ----------------------------------------------------------------------------------
CSV_COLUMNS = ["run", "source", "provenance", "model", "device", "precision", "gradient_checkpointing",
               "micro_batch", "grad_accum", "num_gpus", "effective_batch", "seq_len", "lora_r", "status",
               "saved_activations_measured_bytes", "saved_activations_theory_bytes", "simple_rule_bytes",
               "peak_allocated_bytes", "peak_reserved_bytes", "peak_theory_bytes", "allocated_before_bytes",
               "step_time_s", "step_flops", "tokens_per_s", "labels", "error", "time"]


def history_row(rec) -> dict:
    """One lab history entry as a flat dict with the CSV_COLUMNS."""
    rec = typed(rec)
    c, th, m = rec.config, rec.theory, rec.measured
    lab_info = lab_of(rec)
    micro, accum, gpus = c.get("micro_batch"), c.get("grad_accum"), c.get("num_gpus", 1)
    return {
        "run": lab_info.get("run"), "source": lab_info.get("source", "run"),
        "provenance": lab_info.get("provenance") or rec.extra.get("provenance") or "",
        "model": c.get("model"), "device": (rec.device or {}).get("name"), "precision": resolved_precision(rec),
        "gradient_checkpointing": c.get("gradient_checkpointing"), "micro_batch": micro, "grad_accum": accum,
        "num_gpus": gpus, "effective_batch": (micro * accum * gpus) if None not in (micro, accum, gpus) else None,
        "seq_len": c.get("seq_len"), "lora_r": c.get("lora_r"), "status": rec.status,
        "saved_activations_measured_bytes": m.saved_activation_bytes,
        "saved_activations_theory_bytes": theory_saved(rec),
        "simple_rule_bytes": th.simple_rule_activations,
        "peak_allocated_bytes": m.peak_allocated_bytes, "peak_reserved_bytes": m.peak_reserved_bytes,
        "peak_theory_bytes": th.peak, "allocated_before_bytes": m.allocated_before_bytes,
        "step_time_s": m.step_time_s, "step_flops": th.step_flops,
        "tokens_per_s": m.tokens_per_s, "labels": " ".join(rec.labels),
        "error": rec.error or "", "time": rec.time,
    }


def history_csv(records) -> str:
    """The history as CSV text: a header of CSV_COLUMNS, then one row per entry."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for rec in records:
        writer.writerow(history_row(rec))
    return buf.getvalue()
