"""The lab as plain text: what a notebook shows where widgets do not render, and `print(panel.text_view())`.

A displayed lab offers two forms: the widget, and this text (`text/plain`). Front ends that render widgets show the
widget; the others (ipywidgets missing from the kernel, the widget extension missing from the front end, a notebook
viewed on GitHub) show this text, so the panel never shows as an empty cell. It is a snapshot of the moment the cell
ran: the settings, the latest result with its table, the delta line, the messages and the history, with the steps
that make the widgets show. Words and numbers come from the same functions as the widget's (`labkit.report`).
"""
from __future__ import annotations

import textwrap

from labkit.course.lab_controls import BUDGET, LIVE
from labkit.report.html import HISTORY_HEAD, history_cells, history_fields, lab_of, result_rows
from labkit.report.text import config_label
from labkit.units import fmt_budget, fmt_row

# 80 characters a line: what a narrow output shows whole (classic Notebook 6 at 1024 px wraps longer lines, mid-word)
WIDTH = 80
WIDGETS_MISSING = [       # one command a line, so none is broken by wrapping
    "widgets are not showing here, so this is the lab's text view. To see the panel:",
    "  · JupyterLab, Notebook 7: in this kernel's environment",
    "    pip install ipywidgets, then reload the page",
    "  · classic Notebook 6: pip install widgetsnbextension, then",
    "    jupyter nbextension enable --py --sys-prefix widgetsnbextension, then reload",
    "  · VS Code: install the Jupyter extension",
    "  · Colab: from google.colab import output",
    "    output.enable_custom_widget_manager()",
    "Until then drive it from code: panel.set(micro_batch=4), panel.run(),",
    "print(panel.text_view()).",
]
RESULT_FIELDS = ("gradient_checkpointing", "micro_batch", "grad_accum", "precision", "seq_len", "lora_r")


def _wrap(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_on_hyphens=False) or [indent]


def _columns(rows: list[list], right_from: int = 1) -> list[str]:
    """Rows as aligned text columns: the first `right_from` left-aligned, the others right-aligned."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) if i < right_from else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in rows]


def _where(lab) -> str:
    f = lab.facts
    if lab.reference_name is not None:
        return (f"replaying reference set '{lab.reference_name}' (model {lab.model}): nothing runs in this kernel; "
                f"panel.use_live() to run here")
    if f["type"] == "cuda":
        return f"GPU {f['name']} ({fmt_row(f['total_memory'])[0]}), model {lab.model}"
    return (f"no GPU: runs on the CPU with the '{lab.model}' model, a stand-in with random weights (memory figures "
            "are real measurements of it, step times are CPU times)")


def _settings(lab) -> str:
    c = lab.controls
    text = (f"gradient checkpointing {'on' if c['gradient_checkpointing'].value else 'off'} · precision "
            f"{c['precision'].value} · micro-batch {c['micro_batch'].value} × accumulation {c['grad_accum'].value} "
            f"× {c['num_gpus'].value} GPU · seq {c['seq_len'].value} · LoRA r {c['lora_r'].value}")
    if BUDGET in c:
        typed = c[BUDGET].value.strip()
        text += f" · budget {fmt_budget(_float_or_text(typed)) if typed else 'none'}"
    return text


def _float_or_text(text: str):
    try:
        return float(text)
    except ValueError:
        return repr(text)


def text_view(lab) -> str:
    """The lab as plain text, ≤ 100 characters a line."""
    lines = ["QLoRA Memory Lab (text view)"] + WIDGETS_MISSING + [""]
    lines += _wrap(_where(lab))
    lines += _wrap(f"results from: {lab.reference_name or LIVE}")
    lines += _wrap(f"settings: {_settings(lab)}")
    if lab.history:
        latest = lab.history[-1]
        entry = lab_of(latest)
        rows, how = result_rows(latest)
        lines += [""] + _wrap(f"latest: run {entry['run']} ({config_label(latest, RESULT_FIELDS)}), "
                              f"status {latest.status}" + (f", {entry['provenance']}" if entry["provenance"] else ""))
        lines += _columns([["", "theory", "measured"]] + [list(r) for r in rows])
        lines += _wrap(f"step time predicted: {how}", "  ")
        lines += _wrap(f"Δ run {entry['run']} vs {lab.last_compared_with}: {lab.last_delta}")
    else:
        lines += ["", "no runs yet: panel.run() runs the settings above"]
    shown = list(zip(lab._levels, lab.messages))[lab._shown_from:][-8:]
    if shown:
        lines += ["", "messages:"]
        for level, msg in shown:
            lines += _wrap(msg, "  ")
    if lab.history:
        lines += ["", f"history ({len(lab.history)} entries; panel.to_csv() has every column):"]
        fields = history_fields(lab.history)
        lines += _columns([HISTORY_HEAD] + [history_cells(r, fields) for r in lab.history[-10:]], right_from=3)
    return "\n".join(line.rstrip() for line in lines)
