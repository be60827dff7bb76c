"""HTML tables made from run records, for the lab panel: the theory-vs-measured result table of one record (with
its step-time prediction and notes, among them what each stand-in label means) and the history table of a kernel's
runs (with where replayed rows came from).

Plain strings of HTML, no widgets: the lab puts them into `ipywidgets.HTML`. Bytes are written by `labkit.units`.
"""
from __future__ import annotations

import html

from labkit.record import typed
from labkit.report.text import (PEAK, SAVED, STEP_TIME, component_values, config_label, history_row, lab_of,
                                labels_text, theory_saved)
from labkit.report.timing import REGIME_WORDS, predicted_step_s, regime_of, time_note
from labkit.units import MISSING, fmt_budget, fmt_row

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
    "cpu-processes": "N processes on one CPU under DDP (gloo): real processes and a real all-reduce, CPU figures",
    "gpus-arithmetic": "the GPU count is arithmetic here: one process was measured; the effective batch counts "
                       "the GPUs the settings name",
}
HELD_BEFORE_SOURCES = {"cuda-allocator": "the CUDA allocator's count: every tensor on this GPU, yours included",
                       "live-tensors": "live tensors found in this process"}
# the rows of the result table that are not one of the delta line's quantities
LAYERS_PART, LOGITS_PART = "└ of it: layers", "└ of it: logits (fp32)"
SIMPLE_RULE = "source lesson's rule b·s·h·L·2"
REGIME_ROW = "└ regime (theory)"       # compute-, memory- or overhead-bound: labkit.report.timing
IN_TOTAL = "in the total"
RESULT_FIELDS = ("gradient_checkpointing", "micro_batch", "grad_accum", "precision", "seq_len", "lora_r")

# Widgets' HTML content inherits a 28 px line height and lives in a column as narrow as ~600 px: every block sets
# its own line height, every table cell stays on one line (so the tables are kept to few, short columns), and the
# notes under a table wrap.
_BLOCK = "line-height:1.4;max-width:100%"
_TABLE = "font-size:90%;border-collapse:collapse"
_CELL = "<td style='padding:1px 6px;white-space:nowrap'>{}</td>"
_NUMBER = "<td style='padding:1px 6px;white-space:nowrap;text-align:right'>{}</td>"
_ROW_NAME = "<th scope='row' style='padding:1px 6px;white-space:nowrap;text-align:left;font-weight:normal'>{}</th>"
_HEAD = "style='padding:1px 6px;white-space:nowrap;text-align:left'"
_NOTE = "<div style='font-size:85%;color:#555;line-height:1.35'>{}</div>"


def esc(text) -> str:
    return html.escape(str(text))


def _seconds(t) -> str:
    return MISSING if t is None else f"{t:.3g} s"


# ---- one record: theory beside measured ------------------------------------------------------------------------------
def predicted_step_time(record) -> tuple[float | None, str]:
    """(seconds, how) — the three-regime time theory of an optimizer step (theory.time, `labkit.report.timing`)
    with its split and regime; for a record without it, the data-sheet peak (a floor no real run reaches), else
    (None, why there is none and how to get it). Never a guess scaled from another run."""
    predicted = predicted_step_s(record)
    if predicted is not None:
        return predicted, time_note(record)
    theory = typed(record).theory
    if theory.step_time_at_peak_s:
        return theory.step_time_at_peak_s, "at the GPU's data-sheet peak (a floor: real runs reach a fraction of it)"
    note = (theory.time or {}).get("note")
    return None, f"no time theory: {note}" if note else "no time theory in this record"


def _memory_rows(record) -> list[tuple[str, object, object]]:
    """(quantity, theory bytes, measured bytes) per memory row of the result table. "saved activations" is the total
    autograd kept (layers + logits), the quantity the delta line compares; its parts follow, measured only inside
    it, then the source lesson's simple rule for the layers part."""
    record = typed(record)
    th, m = record.theory, record.measured
    weights, lora, gradients, optimizer = (component_values(record)[k][1]
                                           for k in ("weights", "lora", "gradients", "optimizer"))
    return [
        ("weights (4-bit + 16-bit)", th.weights, weights),
        ("LoRA adapters (fp32)", th.lora, lora),
        ("LoRA gradients", th.gradients, gradients),
        ("optimizer state", th.optimizer, optimizer),
        (SAVED, theory_saved(record), m.saved_activation_bytes),
        (LAYERS_PART, th.activations, IN_TOTAL),
        (LOGITS_PART, th.logits, IN_TOTAL),
        (SIMPLE_RULE, th.simple_rule_activations, None),
        (PEAK, th.peak, m.peak_allocated_bytes),
    ]


def result_rows(record) -> tuple[list[tuple[str, str, str]], str]:
    """([(quantity, theory, measured)] as display text, how the step time was predicted). One unit per row
    (`labkit.units.fmt_row`), so theory and measured compare at a glance. The HTML table and the lab's text view
    both show these rows."""
    record = typed(record)
    on_cpu = (record.device or {}).get("type") == "cpu"
    rows = []
    for name, theory, measured in _memory_rows(record):
        if measured == IN_TOTAL:
            rows.append((name, fmt_row(theory)[0], IN_TOTAL))
            continue
        theory_text, measured_text = fmt_row(theory, measured)
        if measured is None and name == PEAK and on_cpu:
            measured_text = "n/a on CPU"
        elif measured is None and name == SIMPLE_RULE:
            measured_text = ""
        rows.append((name, theory_text, measured_text))
    t_pred, how = predicted_step_time(record)
    rows.append((STEP_TIME, _seconds(t_pred), _seconds(record.measured.step_time_s)))
    if regime_of(record):                                   # which part binds; the split is in the notes
        rows.append((REGIME_ROW, REGIME_WORDS[regime_of(record)], ""))
    return rows, how


def _notes(record, how: str) -> list[str]:
    """The lines under the result table: provenance, OOM, memory held before, step-time basis, labels, loss."""
    record = typed(record)
    notes = [f"step time predicted: {how}", labels_text(record)]
    held_line = held_before_text(record)
    if held_line:
        notes.insert(0, held_line)
    if record.status == "oom":
        notes.insert(0, "out of memory: the theory column is what this run needed; the measured column holds only "
                        "what was counted before it failed")
    for label in record.labels:
        if label in LABEL_NOTES and label != "memory-held-before":
            notes.append(f"{label}: {LABEL_NOTES[label]}")
    budget = record.config.get("memory_budget_gb")
    if budget is not None:
        notes.insert(0, f"memory budget declared: {fmt_budget(budget)} (resident + saved activations over it count as "
                        "a simulated OOM)")
    if record.extra.get("provenance"):                 # a replayed reference record says where it was measured
        notes.insert(0, record.extra["provenance"])
    if record.measured.loss:
        notes.append("loss per optimizer step: " + ", ".join(f"{x:.3f}" for x in record.measured.loss))
    return notes


def result_table_html(record) -> str:
    """Theory beside measured for one record: a short table (one line per quantity, named as the delta line names
    it) with the notes under it."""
    record = typed(record)
    rows, how = result_rows(record)
    body = "".join(f"<tr>{_ROW_NAME.format(esc(name))}{_NUMBER.format(esc(t))}{_NUMBER.format(esc(m))}</tr>"
                   for name, t, m in rows)
    run = lab_of(record).get("run")
    caption = (f"run {run} · " if run else "") + config_label(record, RESULT_FIELDS)
    head = f"<tr><th {_HEAD}>{esc(caption)}</th><th {_HEAD}>theory</th><th {_HEAD}>measured</th></tr>"
    return (f"<div style='{_BLOCK}'><table class='labkit-table-el' style='{_TABLE}'>{head}{body}</table>"
            + held_before_warning_html(record) + "".join(_NOTE.format(esc(n)) for n in _notes(record, how))
            + "</div>")


def held_before_text(record) -> str:
    """'already in memory when the run started: 1.2 GiB (...)' for records that measured it; '' for the others
    (older records, reference sets) so they show nothing extra."""
    record = typed(record)
    held, source = record.measured.allocated_before_bytes, record.measured.allocated_before_source
    if held is None:             # not in the record: schema 1 (before 2026-11-30), or a run that failed before it
        return ""
    how = HELD_BEFORE_SOURCES.get(source, source)
    return f"already in memory when the run started: {fmt_row(held)[0]}" + (f" ({how})" if how else "")


def held_before_warning_html(record) -> str:
    """A calm box for the "memory-held-before" label: the run's own warning, or the label's note."""
    record = typed(record)
    if "memory-held-before" not in record.labels:
        return ""
    said = [w for w in record.warnings if "already in memory" in w]
    text = "; ".join(said) or LABEL_NOTES["memory-held-before"]
    return ("<div style='font-size:85%;margin:4px 0;padding:3px 8px;background:#fdf6e3;color:#5c4b00;"
            f"border-left:3px solid #d4a017'>memory held before the run: {esc(text)}</div>")


# ---- a kernel's history ----------------------------------------------------------------------------------------------
HISTORY_HEAD = ["#", "settings", "status", SAVED, "theory", STEP_TIME]
# the settings column: checkpointing, micro-batch and precision always, the others only once they differ (the model
# goes in a footnote: "llama-3.2-1b" would widen every row past a 600 px column)
HISTORY_FIELDS = ("gradient_checkpointing", "micro_batch", "precision")
HISTORY_IF_CHANGED = ("grad_accum", "num_gpus", "seq_len", "lora_r")
_HISTORY_HEAD = "style='padding:1px 6px;text-align:left;vertical-align:bottom'"     # headers may wrap, rows not


def history_fields(history: list) -> tuple[str, ...]:
    """The settings the history's rows name: HISTORY_FIELDS, plus each of HISTORY_IF_CHANGED that differs."""
    changed = [f for f in HISTORY_IF_CHANGED if len({repr(typed(r).config.get(f)) for r in history}) > 1]
    return HISTORY_FIELDS + tuple(changed)


def history_cells(rec, fields=HISTORY_FIELDS) -> list:
    """#, settings, status, saved activations measured and theory (one unit for both), step time."""
    row = history_row(rec)
    measured, theory = fmt_row(row["saved_activations_measured_bytes"], row["saved_activations_theory_bytes"])
    return [row["run"], config_label(rec, fields), row["status"], measured, theory, _seconds(row["step_time_s"])]


def history_table_html(history: list) -> str:
    """The lab's history table, oldest first: six short columns (the CSV export has them all; the settings column
    names only what changed beyond checkpointing, micro-batch and precision), then footnotes saying which runs were
    replayed and from where, and each run's labels."""
    if not history:
        return "<div style='color:#777'>history: no runs yet</div>"
    fields = history_fields(history)
    body = "".join("<tr>" + "".join(_CELL.format(esc(v)) for v in history_cells(r, fields)) + "</tr>"
                   for r in history)
    th = "".join(f"<th {_HISTORY_HEAD}>{esc(h)}</th>" for h in HISTORY_HEAD)
    return (f"<div style='{_BLOCK}'><div><b>History of this kernel</b> (Export CSV for every column)</div>"
            f"<table class='labkit-history-el' style='{_TABLE}'><tr>{th}</tr>{body}</table>"
            + model_footnotes(history) + provenance_footnotes(history) + label_footnotes(history) + "</div>")


def _runs_text(runs: list[str]) -> str:
    return f"run{'s' if len(runs) > 1 else ''} {', '.join(runs)}"


def model_footnotes(history: list) -> str:
    """Under the history table, once it holds more than one model: which runs used which ('runs 3, 4: model
    llama-3.2-1b')."""
    runs_by_model: dict[str, list[str]] = {}
    for rec in map(typed, history):
        runs_by_model.setdefault(str(rec.config.get("model")), []).append(str(lab_of(rec).get("run", "?")))
    if len(runs_by_model) < 2:
        return ""
    return "".join(_NOTE.format(f"{_runs_text(runs)}: model {esc(model)}") for model, runs in runs_by_model.items())


def provenance_footnotes(history: list) -> str:
    """Under the history table: which rows were replayed, and where and when each was measured."""
    runs_by_origin: dict[str, list[str]] = {}
    for rec in map(typed, history):
        origin = lab_of(rec).get("provenance")
        if origin:
            runs_by_origin.setdefault(origin, []).append(str(lab_of(rec)["run"]))
    return "".join(_NOTE.format(f"{_runs_text(runs)}: {esc(origin)}") for origin, runs in runs_by_origin.items())


def label_footnotes(history: list) -> str:
    """Under the history table: the labels of each run ('runs 1, 2: labels cpu, shape-only'), so a stand-in says
    so without a wide column."""
    runs_by_labels: dict[str, list[str]] = {}
    for rec in map(typed, history):
        labels = ", ".join(x for x in rec.labels if x != "reference")
        if labels:
            runs_by_labels.setdefault(labels, []).append(str(lab_of(rec).get("run", "?")))
    return "".join(_NOTE.format(f"{_runs_text(runs)}: labels {esc(labels)}")
                   for labels, runs in runs_by_labels.items())
