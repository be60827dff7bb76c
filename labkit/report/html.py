"""HTML tables made from run records, for the lab panel: the theory-vs-measured result table of one record (with
its step-time prediction and notes, among them what each stand-in label means) and the history table of a kernel's
runs (with where replayed rows came from).

Plain strings of HTML, no widgets: the lab puts them into `ipywidgets.HTML`. Bytes are written by `labkit.units`.
"""
from __future__ import annotations

import html

from labkit.report.text import history_row, labels_text, lookup, theory_saved
from labkit.units import MISSING, fmt_bytes

# what each stand-in label means: the notes under the result table and the reference set's controls
LABEL_NOTES = {
    "cpu": "measured on the CPU (no GPU here): real bytes of the stand-in run, CPU times",
    "shape-only": "random weights in the model's shape: memory and time are real, the loss means nothing",
    "simulated-oom": "over the memory budget you declared: a simulated OOM, not a real one",
    "budget-simulated": "a memory budget was declared for this CPU run",
    "reference": "replayed from a recorded file, not run in this kernel",
    "theory-only": "no run: theory alone",
    "t4-profile": "a bigger GPU capped at a T4's memory: T4-profile, not a T4",
    "paging-off-on-cpu": "bitsandbytes pages optimizer state only on a GPU; on the CPU it stays resident",
    "memory-held-before": "more than 256 MiB was already in memory when the run started, and the peak includes it",
}
HELD_BEFORE_SOURCES = {"cuda-allocator": "the CUDA allocator's count: every tensor on this GPU, yours included",
                       "live-tensors": "live tensors found in this process"}
_CELL = "<td style='padding:1px 6px'>{}</td>"
_NUMBER = "<td style='padding:1px 6px;text-align:right'>{}</td>"
_NOTE = "<div style='font-size:85%;color:#555'>{}</div>"


def esc(text) -> str:
    return html.escape(str(text))


def _seconds(t) -> str:
    return MISSING if t is None else f"{t:.3g} s"


# ---- one record: theory beside measured ------------------------------------------------------------------------------
def predicted_step_time(record, previous=None) -> tuple[float | None, str]:
    """(seconds, how) — from the previous run on the same device scaled by the FLOPs ratio, else the data-sheet
    peak (a floor no real run reaches), else (None, why not)."""
    flops = lookup(record, "theory", "step_flops")
    prev_t = lookup(previous, "measured", "step_time_s") if previous else None
    prev_f = lookup(previous, "theory", "step_flops") if previous else None
    same_device = previous is not None and lookup(previous, "device", "name") == lookup(record, "device", "name")
    if flops and prev_t and prev_f and same_device and (previous or {}).get("status") == "ok":
        return prev_t * flops / prev_f, "previous run × the theory's FLOPs ratio"
    at_peak = lookup(record, "theory", "step_time_at_peak_s")
    if at_peak:
        return at_peak, "at the GPU's data-sheet peak (a floor: real runs reach a fraction of it)"
    return None, "no previous run on this device to scale from, and no data-sheet peak for it"


def _memory_rows(record) -> list[tuple[str, object, str, object]]:
    """(component, theory bytes, the seed's rule as text, measured bytes) per table row."""
    th = record.get("theory") or {}
    m = record.get("measured") or {}
    res = m.get("resident") or {}

    def resident(*keys):
        vals = [res.get(k) for k in keys]
        return None if all(v is None for v in vals) else sum(v or 0 for v in vals)

    return [
        ("weights (4-bit + 16-bit parts)", th.get("weights"), "", resident("quantized_weights", "unquantized_weights")),
        ("LoRA adapters (fp32)", th.get("lora"), "", res.get("lora")),
        ("LoRA gradients", th.get("gradients"), "", res.get("gradients")),
        ("optimizer state", th.get("optimizer"), "", res.get("optimizer")),
        ("saved activations (layers)", th.get("activations"), fmt_bytes(th.get("simple_rule_activations")), None),
        ("logits for the loss (fp32)", th.get("logits"), "", None),
        ("saved for backward, total", theory_saved(record), "", m.get("saved_activation_bytes")),
        ("peak allocated", th.get("peak"), "", m.get("peak_allocated_bytes")),
    ]


def _notes(record, how: str) -> list[str]:
    """The lines under the result table: provenance, OOM, memory held before, step-time basis, labels, loss."""
    notes = [f"step time predicted: {how}", labels_text(record)]
    held_line = held_before_text(record)
    if held_line:
        notes.insert(0, held_line)
    if record.get("status") == "oom":
        notes.insert(0, "out of memory: the theory column is what this run needed; the measured column holds only "
                        "what was counted before it failed")
    for label in record.get("labels") or []:
        if label in LABEL_NOTES and label != "memory-held-before":
            notes.append(f"{label}: {LABEL_NOTES[label]}")
    if record.get("provenance"):
        notes.insert(0, record["provenance"])
    loss = lookup(record, "measured", "loss")
    if loss:
        notes.append("loss per optimizer step: " + ", ".join(f"{x:.3f}" for x in loss))
    return notes


def result_table_html(record, previous=None) -> str:
    """Theory (detailed, and the seed's simple rule) beside measured, for one record."""
    on_cpu = lookup(record, "device", "type") == "cpu"
    body = []
    for name, theory, rule, measured in _memory_rows(record):
        shown = fmt_bytes(measured)
        if measured is None and name == "peak allocated" and on_cpu:
            shown = "n/a on CPU"
        elif measured is None and name.startswith(("saved activations", "logits")):
            shown = "inside the total"
        body.append("<tr>" + _CELL.format(esc(name)) + _NUMBER.format(esc(fmt_bytes(theory)))
                    + _NUMBER.format(esc(rule)) + _NUMBER.format(esc(shown)) + "</tr>")
    t_pred, how = predicted_step_time(record, previous)
    body.append("<tr>" + _CELL.format("step time") + _NUMBER.format(esc(_seconds(t_pred))) + _NUMBER.format("")
                + _NUMBER.format(esc(_seconds(lookup(record, "measured", "step_time_s")))) + "</tr>")
    head = ("<tr><th></th><th style='padding:1px 6px'>theory</th><th style='padding:1px 6px'>seed's rule "
            "b·s·h·L·2</th><th style='padding:1px 6px'>measured</th></tr>")
    return (f"<table style='font-size:85%'>{head}{''.join(body)}</table>" + held_before_warning_html(record)
            + "".join(_NOTE.format(esc(n)) for n in _notes(record, how)))


def held_before_text(record) -> str:
    """'already in memory when the run started: 1.2 GiB (...)' for records that measured it; '' for the others
    (older records, reference sets) so they show nothing extra."""
    m = record.get("measured") or {}
    if "allocated_before_bytes" not in m:
        return ""
    held, source = m.get("allocated_before_bytes"), m.get("allocated_before_source")
    if held is None:
        return "already in memory when the run started: not measured"
    how = HELD_BEFORE_SOURCES.get(source, source)
    return f"already in memory when the run started: {fmt_bytes(held)}" + (f" ({how})" if how else "")


def held_before_warning_html(record) -> str:
    """A calm box for the "memory-held-before" label: the run's own warning, or the label's note."""
    if "memory-held-before" not in (record.get("labels") or []):
        return ""
    said = [w for w in record.get("warnings") or [] if "already in memory" in w]
    text = "; ".join(said) or LABEL_NOTES["memory-held-before"]
    return ("<div style='font-size:85%;margin:4px 0;padding:3px 8px;background:#fdf6e3;color:#5c4b00;"
            f"border-left:3px solid #d4a017'>memory held before the run: {esc(text)}</div>")


# ---- a kernel's history ----------------------------------------------------------------------------------------------
HISTORY_HEAD = ["#", "source", "gc", "precision", "micro × accum × GPUs", "seq", "r", "status",
                "saved measured", "saved theory", "simple rule", "step time", "labels"]


def _history_cells(rec) -> list:
    row = history_row(rec)
    return [row["run"], row["source"], "on" if row["gradient_checkpointing"] else "off", row["precision"],
            f"{row['micro_batch']} × {row['grad_accum']} × {row['num_gpus']} = {row['effective_batch']}",
            row["seq_len"], row["lora_r"], row["status"], fmt_bytes(row["saved_activations_measured_bytes"]),
            fmt_bytes(row["saved_activations_theory_bytes"]), fmt_bytes(row["simple_rule_bytes"]),
            _seconds(row["step_time_s"]), row["labels"]]


def history_table_html(history: list) -> str:
    """The lab's history table, oldest first, with a footnote per place the replayed rows were measured."""
    if not history:
        return "<div style='color:#777'>history: no runs yet</div>"
    body = "".join("<tr>" + "".join(_CELL.format(esc(v)) for v in _history_cells(r)) + "</tr>"
                   for r in history)
    th = "".join(f"<th style='padding:1px 6px'>{esc(h)}</th>" for h in HISTORY_HEAD)
    return (f"<div><b>History of this kernel</b></div><table style='font-size:85%'><tr>{th}</tr>{body}</table>"
            + provenance_footnotes(history))


def provenance_footnotes(history: list) -> str:
    """Under the history table: which rows were replayed, and where and when each was measured."""
    runs_by_origin: dict[str, list[str]] = {}
    for rec in history:
        origin = (rec.get("lab") or {}).get("provenance")
        if origin:
            runs_by_origin.setdefault(origin, []).append(str(rec["lab"]["run"]))
    return "".join(_NOTE.format(f"run{'s' if len(runs) > 1 else ''} {', '.join(runs)}: {esc(origin)}")
                   for origin, runs in runs_by_origin.items())
