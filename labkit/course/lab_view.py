"""The lab panel's widgets: layout, buttons, the live-or-reference switch of the controls, and rendering what the
controller decided (messages, the delta line, the result table, the memory chart, the history).

`LabView` is the VBox half of `labkit.course.lab.Lab`; `LabController` is the other half. The view owns the widgets,
`model`/`base` (what the controls start from) and the chosen reference set (`reference_name`, `reference_pool`).
From the controller it reads `busy`, `history`, `messages`, `last_delta`, `last_compared_with` and `steps`, and
calls `run()`, `replay()`, `to_csv()` and `_say()` (its buttons, and problems worth a message).

Only core ipywidgets and static PNG charts inside an `Output` are used, so the panel works in JupyterLab and in
Colab (ipywidgets 7 or 8) without a custom widget manager.
"""
from __future__ import annotations

import base64
import io

import ipywidgets as W

from labkit.config import RunConfig
from labkit.course.lab_controls import (LEFT_CONTROLS, LIVE, checked_values, config_from, live_controls,
                                        precision_choices, reference_controls, style, wide)
from labkit.report import charts
from labkit.report.html import LABEL_NOTES, esc, history_table_html, result_table_html
from labkit.report.reference import load_reference, reference_sets
from labkit.report.text import config_label
from labkit.units import fmt_bytes

MESSAGE_COLORS = {"info": "#333", "advice": "#8a6d3b", "error": "#b2182b", "oom": "#b2182b"}


class LabView(W.VBox):
    """The widgets of the lab. See `labkit.course.lab.Lab` for the attributes tests and notebooks use."""

    def __init__(self, facts: dict, model: str | None = None, base: RunConfig | None = None):
        super().__init__()
        self.facts = facts
        on_gpu = facts["type"] == "cuda"
        self.model = model or (base.model if base else ("llama-3.2-1b" if on_gpu else "tiny"))
        self.base = (base or RunConfig(seq_len=512 if on_gpu else 128, micro_batch=2, grad_accum=4)
                     ).replace(model=self.model)
        self._live_model, self._live_base = self.model, self.base
        self.last_figure = None
        self.reference_name: str | None = None
        self.reference_pool: list[dict] = []
        self._build(on_gpu)

    # -- layout --------------------------------------------------------------------------------------------------------
    def _build(self, on_gpu: bool):
        options, self._live_precision_notes = precision_choices(self.facts["type"], self.facts["capability"])
        self.precision_notes = self._live_precision_notes
        self.readout = W.HTML()
        self._live_controls = live_controls(self.base, on_gpu, options)
        self._watch_readout(self._live_controls)
        self.controls = self._live_controls

        self.run_button = W.Button(description="Run", button_style="primary", icon="play",
                                   tooltip="run real optimizer steps with these settings")
        self.run_button.on_click(lambda _: self.run())
        self.progress = W.IntProgress(value=0, min=0, max=self.steps, description="idle",
                                      layout=W.Layout(width="340px"))
        self.reference_dropdown = W.Dropdown(options=[LIVE] + reference_sets(), value=LIVE,
                                             description="results from", style=style(), layout=wide())
        self.reference_dropdown.observe(self._on_source_chosen, names="value")
        self.replay_button = W.Button(description="Replay reference", icon="history",
                                      tooltip="show the recorded result for these settings")
        self.replay_button.on_click(lambda _: self.replay())
        self.export_path = W.Text(value="lab_history.csv", description="CSV file", style=style(), layout=wide())
        self.export_button = W.Button(description="Export CSV", icon="download")
        self.export_button.on_click(lambda _: self._export_clicked())

        self.banner = W.HTML(self._banner_html())
        self.notes_html = W.HTML(self._notes_html())
        self.messages_html = W.HTML()
        self.delta_html = W.HTML()
        self.result_html = W.HTML()
        self.chart_out = W.Output()
        self.history_html = W.HTML(history_table_html(self.history))

        self._left, self._right = W.VBox(), W.VBox()
        self._place_controls()
        self._sync_buttons()
        actions = W.HBox([self.run_button, self.progress])
        replay_row = W.HBox([self.reference_dropdown, self.replay_button])
        export_row = W.HBox([self.export_path, self.export_button])
        self.children = (self.banner, W.HBox([self._left, self._right]), actions, replay_row, self.messages_html,
                         self.delta_html, W.HBox([self.chart_out, self.result_html]), self.history_html, export_row)

    def _watch_readout(self, controls: dict):
        for name in ("micro_batch", "grad_accum", "num_gpus"):
            controls[name].observe(self._update_readout, names="value")

    def _place_controls(self):
        self._left.children = [self.controls[k] for k in LEFT_CONTROLS] + [self.readout]
        self._right.children = ([w for k, w in self.controls.items() if k not in LEFT_CONTROLS]
                                + [self.notes_html])
        self._update_readout()

    def _sync_buttons(self):
        replaying = self.reference_name is not None
        self.run_button.disabled = self.busy or replaying
        self.run_button.tooltip = ("nothing runs while a reference set is chosen: choose 'live runs in this "
                                   "kernel' under 'results from'" if replaying else
                                   "run real optimizer steps with these settings")
        self.replay_button.disabled = self.busy or not replaying
        self.reference_dropdown.disabled = self.busy

    def _banner_html(self) -> str:
        f = self.facts
        if self.reference_name is not None:
            where = ", ".join(dict.fromkeys(r["provenance"] for r in self.reference_pool))
            where = (f"<b>Replaying reference set</b> <code>{esc(self.reference_name)}</code> · model "
                     f"<b>{esc(self.model)}</b> · {esc(where)}. Nothing runs in this kernel: the controls offer "
                     f"what the set recorded. Choose “{esc(LIVE)}” under “results from” to run here.")
        elif f["type"] == "cuda":
            cc = ".".join(map(str, f["capability"] or []))
            where = (f"GPU: <b>{esc(f['name'])}</b> (compute capability {cc}, {fmt_bytes(f['total_memory'])}) · "
                     f"model <b>{esc(self.model)}</b>")
        else:
            where = (f"<b>No GPU</b>: the lab runs on the CPU with the <b>{esc(self.model)}</b> model, a stand-in "
                     "with random weights. Memory figures are real measurements of that stand-in; step times are "
                     "CPU times. To see a GPU, replay a reference set recorded on one.")
        return f"<h4 style='margin:4px 0'>QLoRA Memory Lab</h4><div>{where}</div>"

    def _notes_html(self) -> str:
        if self.reference_name is None:
            notes = self.precision_notes
        else:
            pool = self.reference_pool
            ooms = sum(r.get("status") == "oom" for r in pool)
            labels = dict.fromkeys(x for r in pool for x in r.get("labels") or [] if x in LABEL_NOTES)
            notes = ([f"the set recorded {len(pool)} runs, {ooms} of them out of memory"]
                     + [f"{x}: {LABEL_NOTES[x]}" for x in labels])
        return "".join(f"<div style='color:#555;font-size:90%'>· {esc(n)}</div>" for n in notes)

    def _update_readout(self, *_):
        c = self.controls
        try:
            cfg = RunConfig(micro_batch=c["micro_batch"].value, grad_accum=c["grad_accum"].value,
                            num_gpus=c["num_gpus"].value)
            text = f"effective batch: <b>{esc(cfg.effective_batch_text)}</b> sequences per optimizer step"
        except ValueError as e:
            text = f"effective batch: {esc(e)}"
        self.readout.value = text

    # -- the controls: live runs or a reference set --------------------------------------------------------------------
    def use_reference(self, name: str):
        """Replay the reference set `name`: the model and the controls switch to what it recorded, Run gives way
        to Replay. The same as choosing it under "results from". ValueError for a set that is not recorded."""
        names = reference_sets()
        if name not in names:
            raise ValueError(f"unknown reference set {name!r}; recorded sets: {', '.join(names) or 'none'}")
        self.reference_dropdown.value = name
        return self

    def use_live(self):
        """Back to runs in this kernel, with the live controls as they were."""
        self.reference_dropdown.value = LIVE
        return self

    def _on_source_chosen(self, change):
        choice = change["new"]
        try:
            self._switch_source(None if choice == LIVE else choice)
        except (ValueError, OSError) as e:          # an unreadable set: say so and stay with live runs
            self._say("error", f"cannot replay {choice!r}: {e}")
            self.reference_dropdown.value = LIVE

    def _switch_source(self, name: str | None):
        if name is None:
            self.reference_name, self.reference_pool = None, []
            self.controls, self.model, self.base = self._live_controls, self._live_model, self._live_base
            self.precision_notes = self._live_precision_notes
        else:
            pool = load_reference(name)
            if not pool:
                raise ValueError(f"reference set {name!r} holds no records")
            self.controls = reference_controls(pool, self._live_controls)
            self._watch_readout(self.controls)
            self.reference_name, self.reference_pool = name, pool
            self.base = RunConfig.from_dict(pool[0]["config"])
            self.model = self.base.model
            self.precision_notes = []
        self._place_controls()
        self.banner.value = self._banner_html()
        self.notes_html.value = self._notes_html()
        self._sync_buttons()

    def config(self) -> RunConfig:
        """The RunConfig the controls describe (ValueError if they describe a bad one)."""
        return config_from(self.controls, self.base)

    def set(self, **values):
        """Set controls by RunConfig field name: lab.set(gradient_checkpointing=False, micro_batch=4).
        Every value is checked before any is applied, so a bad one leaves the lab as it was."""
        for widget, value in checked_values(self.controls, values, self.reference_name, self.precision_notes):
            widget.value = value
        return self

    # -- showing what happened -----------------------------------------------------------------------------------------
    def _show_busy(self):
        """While a run is busy: every button and control disabled, Run says "Running…"."""
        self._sync_buttons()
        self.export_button.disabled = self.busy
        for w in self.controls.values():
            w.disabled = self.busy
        self.run_button.description = "Running…" if self.busy else "Run"

    def _show_loading(self):
        self.progress.bar_style = "info"
        self.progress.max, self.progress.value = self.steps, 0
        self.progress.description = "loading…"

    def _on_step(self, step: int, steps: int):
        self.progress.max = steps
        self.progress.value = step + 1
        self.progress.description = f"step {step + 1}/{steps}"

    def _show_outcome(self, status: str | None, replayed: bool = False):
        """The progress bar after a run (status None: nothing came back) or a replay."""
        if status is None:
            self.progress.bar_style, self.progress.description = "danger", "failed"
            return
        self.progress.bar_style = {"ok": "success"}.get(status, "danger")
        if replayed:
            self.progress.description = {"ok": "replayed", "oom": "OOM (replayed)"}.get(status, "replayed")
        else:
            self.progress.description = {"ok": "done", "oom": "OOM"}.get(status, "error")

    def _render_messages(self):
        items = list(zip(self._levels, self.messages))[-8:]
        self.messages_html.value = "".join(
            f"<div style='color:{MESSAGE_COLORS.get(lv, '#333')}'>{esc(msg)}</div>" for lv, msg in items)

    def _render_record(self, record, previous):
        """The delta line, the result table, the memory chart and the history, for the newest entry."""
        tags = " · ".join(record.get("labels") or [])
        self.delta_html.value = (f"<div style='margin:4px 0'><b>Δ vs {esc(self.last_compared_with)}:</b> "
                                 f"{esc(self.last_delta)}"
                                 + (f" <span style='color:#777'>[{esc(tags)}]</span>" if tags else "") + "</div>")
        self.result_html.value = result_table_html(record, previous)
        self._draw(record)
        self.history_html.value = history_table_html(self.history)

    def _draw(self, record):
        try:
            fig = charts.memory_components_chart(record)
        except Exception as e:  # noqa: BLE001 — a chart that cannot be drawn is a message, not a crash
            self._say("error", f"chart not drawn: {type(e).__name__}: {e}")
            return
        title = record["lab"]["provenance"]
        if title:
            fig.suptitle(f"Where the memory goes — {title}", fontsize=9)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        self.last_figure = fig
        png = base64.b64encode(buf.getvalue()).decode("ascii")
        self.chart_out.outputs = ({"output_type": "display_data",
                                   "data": {"image/png": png, "text/plain": "memory chart: " + config_label(record)},
                                   "metadata": {}},)

    def _export_clicked(self):
        path = self.export_path.value.strip() or "lab_history.csv"
        try:
            self.to_csv(path)
        except OSError as e:
            self._say("error", f"could not write {path}: {e.strerror or e}")
            return
        self._say("info", f"saved {len(self.history)} run(s) to {path}")
