"""The lab panel's widgets: layout, buttons, the live-or-reference switch of the controls, and rendering what the
controller decided (messages, the delta line, the result table, the memory chart, the history).

`LabView` is the VBox half of `labkit.course.lab.Lab`; `LabController` is the other half. The view owns the widgets,
`model`/`base` (what the controls start from) and the chosen reference set (`reference_name`, `reference_pool`).
From the controller it reads `busy`, `history`, `messages`, `last_delta`, `last_compared_with` and `steps`, and
calls `run()`, `replay()`, `to_csv()`, `_say()` and `_fresh_messages()` (its buttons, and problems worth a message).

Only core ipywidgets, and no `Output` widget (front ends differ most in how they capture output; classic Notebook 6
showed an empty panel): text is `HTML`, the chart is PNG bytes in an `Image`. So the panel shows the same in
JupyterLab, Notebook 7 and 6, VS Code and Colab, with ipywidgets 7 or 8. Where widgets do not show at all, the
displayed panel falls back to its text view (`labkit.course.lab_text`), which says how to enable them.

Layout: every row wraps (flex-wrap) and no width is fixed wider than a ~520 px column, so at 1024 px with
JupyterLab's side bar open nothing scrolls sideways. CSS classes name the parts for browser tests: labkit-lab,
labkit-controls, labkit-run, labkit-checkpointing, labkit-replay, labkit-chart, labkit-table, labkit-delta,
labkit-messages, labkit-history.
"""
from __future__ import annotations

import ipywidgets as W
from traitlets import TraitError

from labkit.config import RunConfig
from labkit.engine.hardware import precision_device
from labkit.course.lab_controls import (BUDGET, LIVE, budget_value, checked_values, config_from, live_controls,
                                        precision_choices, reference_controls)
from labkit.course.lab_text import text_view
from labkit.report import charts
from labkit.report.html import LABEL_NOTES, esc, history_table_html, lab_of, result_table_html
from labkit.report.reference import load_reference, reference_sets
from labkit.units import fmt_row

MESSAGE_COLORS = {"info": "#333", "advice": "#8a6d3b", "error": "#b2182b", "oom": "#b2182b"}
BLOCK = "line-height:1.4"        # widgets' HTML inherits a 28 px line height: each block sets its own


def row(children, cls: str | None = None, **layout) -> W.HBox:
    """A row that wraps onto a second line rather than scrolling sideways."""
    box = W.HBox(children, layout=W.Layout(flex_flow="row wrap", align_items="center", **layout))   # width: the
    # column's, less the widgets' 2 px margins (a width of 100% would add them and scroll sideways by 4 px)
    if cls:
        box.add_class(cls)
    return box


class LabView(W.VBox):
    """The widgets of the lab. See `labkit.course.lab.Lab` for the attributes tests and notebooks use."""

    _ipython_display_ = None     # ipywidgets 7 displays through this; both 7 and 8 then use _repr_mimebundle_

    def __init__(self, facts: dict, model: str | None = None, base: RunConfig | None = None):
        super().__init__(layout=W.Layout(width="100%", max_width="980px"))
        self.add_class("labkit-lab")
        self.facts = facts
        on_gpu = facts["type"] == "cuda"
        # GPUs a run can really use (labkit.run starts one DDP process per GPU); below 2 the GPU control is arithmetic
        self.gpus_visible = facts.get("gpu_count", 1) if on_gpu else 0
        self.model = model or (base.model if base else ("llama-3.2-1b" if on_gpu else "tiny"))
        self.base = (base or RunConfig(seq_len=512 if on_gpu else 128, micro_batch=2, grad_accum=4)
                     ).replace(model=self.model)
        self._live_model, self._live_base = self.model, self.base
        self.last_figure = None
        self.reference_name: str | None = None
        self.reference_pool: list[dict] = []
        self._build(on_gpu)

    # -- what a notebook shows -----------------------------------------------------------------------------------------
    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        """The widget for front ends that render widgets; for the others, `text/plain` is the lab's text view
        (settings, latest results, messages) with a line saying how to make the widgets show."""
        bundle = {}
        parent = getattr(super(), "_repr_mimebundle_", None)          # ipywidgets 8
        if parent is not None:
            bundle = dict(parent(**kwargs) or {})
        elif self._view_name is not None:                               # ipywidgets 7: the same view bundle
            bundle["application/vnd.jupyter.widget-view+json"] = {"version_major": 2, "version_minor": 0,
                                                                  "model_id": self._model_id}
        try:
            bundle["text/plain"] = self.text_view()
        except Exception as e:  # noqa: BLE001 — the fallback must never be why nothing shows
            bundle["text/plain"] = f"QLoRA Memory Lab (its text view failed: {type(e).__name__}: {e})"
        return bundle

    def text_view(self) -> str:
        """The lab as plain text: what a front end without widgets shows, and `print(panel.text_view())`."""
        return text_view(self)

    # -- layout --------------------------------------------------------------------------------------------------------
    def _build(self, on_gpu: bool):
        options, self._live_precision_notes = precision_choices(*precision_device(self.facts))
        self.precision_notes = self._live_precision_notes
        self.readout = W.HTML()
        self._live_controls = live_controls(self.base, on_gpu, options, self.gpus_visible)
        self._watch_readout(self._live_controls)
        if BUDGET in self._live_controls:
            self._live_controls[BUDGET].observe(self._on_budget_typed, names="value")
        self.controls = self._live_controls

        self.run_button = W.Button(description="Run", button_style="primary", icon="play",
                                   tooltip="run real optimizer steps with these settings")
        self.run_button.add_class("labkit-run")
        self.run_button.on_click(lambda _: self.run())
        self.progress = W.IntProgress(value=0, min=0, max=self.steps, description="idle",
                                      style={"description_width": "110px"},
                                      layout=W.Layout(width="auto", flex="1 1 220px", max_width="380px"))
        self.reference_dropdown = W.Dropdown(options=[LIVE] + reference_sets(), value=LIVE,
                                             description="results from", style={"description_width": "90px"},
                                             layout=W.Layout(width="auto", flex="1 1 380px", min_width="240px",
                                                             max_width="100%"))
        self.reference_dropdown.add_class("labkit-source")
        self.reference_dropdown.observe(self._on_source_chosen, names="value")
        self.replay_button = W.Button(description="Replay reference", icon="history",
                                      tooltip="show the recorded result for these settings")
        self.replay_button.add_class("labkit-replay")
        self.replay_button.on_click(lambda _: self.replay())
        self.export_path = W.Text(value="lab_history.csv", description="CSV file", style={"description_width": "70px"},
                                  layout=W.Layout(width="auto", flex="1 1 240px", max_width="420px"))
        self.export_button = W.Button(description="Export CSV", icon="download")
        self.export_button.on_click(lambda _: self._export_clicked())

        self.banner = W.HTML(self._banner_html())
        self.notes_html = W.HTML(self._notes_html())
        self.messages_html = W.HTML()
        self.messages_html.add_class("labkit-messages")
        self.delta_html = W.HTML()
        self.delta_html.add_class("labkit-delta")
        self.result_html = W.HTML()
        self.result_html.add_class("labkit-table")
        # 960 × 660 px drawn, shown at the column's width up to 760 px: ≥ 412 px tall in a 600 px column
        self.chart = W.Image(format="png", layout=W.Layout(width="100%", max_width="760px", height="auto",
                                                          margin="2px 0", display="none"))   # no side margins:
        # 100% + 2 × 2 px would scroll sideways
        self.chart.add_class("labkit-chart")
        self.history_html = W.HTML(history_table_html(self.history))
        self.history_html.add_class("labkit-history")

        self._controls_row = row([], "labkit-controls-row")
        self.controls_box = W.VBox([self._controls_row, self.readout, self.notes_html])
        self.controls_box.add_class("labkit-controls")
        self._place_controls()
        self._sync_buttons()
        self.children = (self.banner, self.controls_box, row([self.run_button, self.progress]),
                         row([self.reference_dropdown, self.replay_button]), self.messages_html, self.delta_html,
                         self.chart, self.result_html, self.history_html,
                         row([self.export_path, self.export_button]))

    def _watch_readout(self, controls: dict):
        for name in ("micro_batch", "grad_accum", "num_gpus"):
            controls[name].observe(self._update_readout, names="value")

    def _place_controls(self):
        self._controls_row.children = list(self.controls.values())
        self._update_readout()

    def _on_budget_typed(self, change):
        """A budget typed into the box: one message when it is not one (Run would refuse it too)."""
        try:
            budget_value(change["new"], self.base)
        except ValueError as e:
            self._fresh_messages()
            self._say("error", f"settings rejected: {e}")

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
            where = (f"GPU: <b>{esc(f['name'])}</b> (compute capability {cc}, {fmt_row(f['total_memory'])[0]}) · "
                     f"model <b>{esc(self.model)}</b>")
        else:
            where = (f"<b>No GPU</b>: the lab runs on the CPU with the <b>{esc(self.model)}</b> model, a stand-in "
                     "with random weights. Memory figures are real measurements of that stand-in; step times are "
                     "CPU times. To see a GPU, replay a reference set recorded on one.")
        return f"<div style='{BLOCK}'><h4 style='margin:4px 0'>QLoRA Memory Lab</h4><div>{where}</div></div>"

    def _notes_html(self) -> str:
        if self.reference_name is None:
            notes = self.precision_notes
        else:
            pool = self.reference_pool
            ooms = sum(r.get("status") == "oom" for r in pool)
            labels = dict.fromkeys(x for r in pool for x in r.get("labels") or [] if x in LABEL_NOTES)
            notes = ([f"the set recorded {len(pool)} runs, {ooms} of them out of memory"]
                     + [f"{x}: {LABEL_NOTES[x]}" for x in labels])
        if BUDGET in self.controls:
            notes = list(notes) + ["budget (GiB), CPU only: a run whose resident memory + saved activations exceed "
                                   "it becomes a simulated OOM; empty means no budget"]
        return "".join(f"<div style='color:#555;font-size:90%;{BLOCK}'>· {esc(n)}</div>" for n in notes)

    def _update_readout(self, *_):
        c = self.controls
        try:
            cfg = RunConfig(micro_batch=c["micro_batch"].value, grad_accum=c["grad_accum"].value,
                            num_gpus=c["num_gpus"].value)
            text = f"effective batch: <b>{esc(cfg.effective_batch_text)}</b> sequences per optimizer step"
        except ValueError as e:
            text = f"effective batch: {esc(e)}"
        self.readout.value = f"<div style='{BLOCK}'>{text}</div>"

    # -- the controls: live runs or a reference set --------------------------------------------------------------------
    def use_reference(self, name: str) -> None:
        """Replay the reference set `name`: the model and the controls switch to what it recorded, Run gives way
        to Replay. The same as choosing it under "results from". ValueError for a set that is not recorded.
        Returns nothing, so the cell that calls it shows no second panel."""
        names = reference_sets()
        if name not in names:
            raise ValueError(f"unknown reference set {name!r}; recorded sets: {', '.join(names) or 'none'}")
        self.reference_dropdown.value = name

    def use_live(self) -> None:
        """Back to runs in this kernel, with the live controls as they were. Returns nothing, so the cell that
        calls it shows no second panel."""
        self.reference_dropdown.value = LIVE

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
        Every value is checked before any is applied, so a bad one leaves the lab as it was: ValueError, in words
        (never the widgets' TraitError). memory_budget_gb=None means no budget; 0, negative, nan or inf are
        refused."""
        checked = checked_values(self.controls, values, self.reference_name, self.precision_notes)
        before = [(widget, widget.value) for widget, _ in checked]
        try:
            for widget, value in checked:
                widget.value = value
        except TraitError as e:                     # a value its widget refuses after all: undo, then say so
            for widget, old in before:
                widget.value = old
            raise ValueError(f"a control refused the value: {str(e).splitlines()[0]}") from None
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
        """The messages of the latest action (run, replay, entry), last 8: older ones stay in `messages`."""
        items = list(zip(self._levels, self.messages))[self._shown_from:][-8:]
        self.messages_html.value = "".join(
            f"<div style='color:{MESSAGE_COLORS.get(lv, '#333')};{BLOCK}'>{esc(msg)}</div>" for lv, msg in items)

    def _render_record(self, record):
        """The delta line, the result table, the memory chart and the history, for the newest entry."""
        tags = " · ".join(record.labels)
        self.delta_html.value = (f"<div style='margin:4px 0;{BLOCK}'><b>Δ run {lab_of(record)['run']} vs "
                                 f"{esc(self.last_compared_with)}:</b> {esc(self.last_delta)}"
                                 + (f" <span style='color:#777'>[{esc(tags)}]</span>" if tags else "") + "</div>")
        self.result_html.value = result_table_html(record)
        self._draw(record)
        self.history_html.value = history_table_html(self.history)

    def _draw(self, record):
        """The memory chart of the entry, as PNG bytes in the Image (nothing depends on output capture)."""
        title = lab_of(record)["provenance"]
        try:
            fig, png = charts.memory_chart_png(record, title=f"Where the memory goes — {title}" if title else None)
        except Exception as e:  # noqa: BLE001 — a chart that cannot be drawn is a message, not a crash
            self.chart.layout.display = "none"
            self._say("error", f"chart not drawn: {type(e).__name__}: {e}")
            return
        self.last_figure = fig
        self.chart.value = png
        self.chart.layout.display = None

    def _export_clicked(self):
        path = self.export_path.value.strip() or "lab_history.csv"
        try:
            self.to_csv(path)
        except OSError as e:
            self._say("error", f"could not write {path}: {e.strerror or e}")
            return
        self._say("info", f"saved {len(self.history)} run(s) to {path}")
