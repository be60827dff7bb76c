"""The lab: one panel of widgets that every lesson reuses.

    import labkit
    panel = labkit.lab()   # an ipywidgets VBox; end a cell with it to show it
    panel.run()            # the same as pressing Run (tests and notebooks drive it this way)

Controls: gradient checkpointing, precision (only the formats this device runs natively; the others are named with
the reason), micro-batch, gradient accumulation, GPUs (arithmetic only), sequence length, LoRA rank, and on a CPU a
memory budget that turns an over-budget run into a simulated OOM. A live readout shows the effective batch
(micro × accum × GPUs = N).

Run executes real optimizer steps in this kernel (`labkit.experiment.run`), then shows the memory chart (theory
beside measured), a theory-vs-measured table with the seed's simple rule, step time measured vs predicted, the
delta against the previous run, and a history table that exports to CSV. Everything stays inside the panel:
errors and OOMs become messages, the button comes back, the kernel stays usable.

Only core ipywidgets and static PNG charts inside an `Output` are used, so the panel works in JupyterLab and in
Colab (ipywidgets 7 or 8) without a custom widget manager.

Reference results: `labkit/reference/*.jsonl` hold records measured on some other machine. Choosing a set under
"results from" (`use_reference(name)`) switches the model and every control to the values the set recorded; Replay
(`replay()`) then shows the record for the chosen combination (or names the runs one setting away when the set has
none), every figure labelled "reference · measured on <device>, <date>". "live runs in this kernel" (`use_live()`)
brings the live controls back.
"""
from __future__ import annotations

import base64
import copy
import html
import io
from collections.abc import Mapping

import ipywidgets as W

from labkit.config import RunConfig, native_bf16, resolve_precision
from labkit.report import charts
from labkit.report.html import history_table_html, result_table_html
from labkit.report.reference import (MATCHED_FIELDS, as_reference, closest_record, load_reference,  # noqa: F401
                                     matches, missing_combination_text, provenance, recorded_precisions,
                                     recorded_values, reference_sets)
from labkit.report.text import (CSV_COLUMNS, LABEL_NOTES, config_label, delta_text, history_csv,  # noqa: F401
                                history_row, labels_text, lookup)
from labkit.units import fmt_bytes  # noqa: F401  (labkit.course.lessons re-exports it from here for the notebooks)

LIVE = "live runs in this kernel"     # the "results from" choice that runs in this kernel instead of replaying
LEFT_CONTROLS = ("gradient_checkpointing", "precision", "micro_batch", "grad_accum", "num_gpus")

# ---- small helpers ---------------------------------------------------------------------------------------------
def _esc(text) -> str:
    return html.escape(str(text))


def _style() -> dict:
    return {"description_width": "150px"}


def _wide() -> W.Layout:
    return W.Layout(width="340px")


def cpu_bf16_instructions() -> bool | None:
    """Does this CPU have bf16 instructions (avx512_bf16 / amx_bf16)? None where /proc/cpuinfo is unreadable."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def precision_choices(device_type: str, capability=None) -> tuple[list[tuple[str, str]], list[str]]:
    """The precision dropdown for a device: ([(label, value), ...], [why each missing format is missing]).

    CUDA ≥ 8.0 (Ampere and later): bf16, fp16, fp32. Older CUDA (a T4 is 7.5): fp16 and fp32; bf16 is left out
    because it has no bf16 tensor cores, even if `torch.cuda.is_bf16_supported()` says True (emulation).
    CPU: fp32 and bf16 (to see the memory effect); fp16 is left out, its loss-scaled path is a GPU habit.
    """
    cap = tuple(capability) if capability else None
    auto = resolve_precision("auto", device_type, cap)
    if device_type == "cuda":
        cc = ".".join(map(str, cap)) if cap else "?"
        if native_bf16(cap):
            return [(f"auto ({auto})", "auto"), ("bf16", "bf16"), ("fp16", "fp16"), ("fp32", "fp32")], []
        return ([(f"auto ({auto})", "auto"), ("fp16", "fp16"), ("fp32", "fp32")],
                [f"bf16 is not offered: compute capability {cc} < 8.0 has no bf16 tensor cores "
                 "(torch.cuda.is_bf16_supported() may still answer True: that is slow emulation); train in fp16 "
                 "with loss scaling"])
    has = cpu_bf16_instructions()
    bf16_note = ("bf16 on this CPU: it has bf16 instructions, but the 4-bit path is not faster than fp32 here"
                 if has else "bf16 on this CPU: no bf16 instructions, so it is emulated and slower than fp32; "
                 "choose it to see the memory effect, not the speed")
    return ([(f"auto ({auto})", "auto"), ("fp32", "fp32"), ("bf16", "bf16")],
            [bf16_note, "fp16 is not offered on the CPU: fp16 with loss scaling is a GPU recipe (lesson 04 "
                        "shows the scaling by hand)"])


# ---- the lab -----------------------------------------------------------------------------------------------------
class Lab(W.VBox):
    """The lab panel (an ipywidgets VBox) and its Python handle.

    Attributes tests and notebooks use: `controls` (dict: RunConfig field → widget), `run_button`, `progress`,
    `readout` (effective batch), `reference_dropdown` ("results from": live runs or a reference set),
    `reference_name` (the chosen set, None for live runs), `history` (records of this kernel, oldest first),
    `messages` (strings, oldest first), `last_delta`, `last_compared_with`, `last_figure`, `chart_out`,
    `result_html`, `delta_html`, `history_html`.
    Methods: `config()`, `set(**values)`, `run(**values)`, `use_reference(name)`, `use_live()`,
    `replay(records=None, name=None, **values)`, `to_csv(path=None)`, `history_rows()`.
    """

    def __init__(self, model: str | None = None, device: str | None = None, steps: int = 3, warmup: int = 1,
                 base: RunConfig | None = None, weights: str = "auto", runner=None, reference: str | None = None):
        super().__init__()
        from labkit.engine.runner import device_summary, pick_device

        self.device = pick_device(device)
        self.facts = device_summary(self.device)
        on_gpu = self.facts["type"] == "cuda"
        self.model = model or (base.model if base else ("llama-3.2-1b" if on_gpu else "tiny"))
        self.base = (base or RunConfig(seq_len=512 if on_gpu else 128, micro_batch=2, grad_accum=4)
                     ).replace(model=self.model)
        self._live_model, self._live_base = self.model, self.base
        self.steps, self.warmup, self.weights = steps, warmup, weights
        self._runner = runner
        self.history: list[dict] = []
        self.messages: list[str] = []
        self._levels: list[str] = []
        self.last_delta = "no run yet"
        self.last_compared_with = None
        self.last_figure = None
        self.busy = False
        self.reference_name: str | None = None
        self.reference_pool: list[dict] = []
        self._build(on_gpu)
        if reference is not None:
            try:
                self.use_reference(reference)
            except ValueError as e:
                self._say("error", f"cannot replay: {e}")

    # -- layout ------------------------------------------------------------------------------------------------
    def _build(self, on_gpu: bool):
        options, self._live_precision_notes = precision_choices(self.facts["type"], self.facts["capability"])
        self.precision_notes = self._live_precision_notes
        self.readout = W.HTML()
        self._live_controls = self._make_live_controls(on_gpu, options)
        self.controls = self._live_controls

        self.run_button = W.Button(description="Run", button_style="primary", icon="play",
                                   tooltip="run real optimizer steps with these settings")
        self.run_button.on_click(lambda _: self.run())
        self.progress = W.IntProgress(value=0, min=0, max=self.steps, description="idle",
                                      layout=W.Layout(width="340px"))
        self.reference_dropdown = W.Dropdown(options=[LIVE] + reference_sets(), value=LIVE,
                                             description="results from", style=_style(), layout=_wide())
        self.reference_dropdown.observe(self._on_source_chosen, names="value")
        self.replay_button = W.Button(description="Replay reference", icon="history",
                                      tooltip="show the recorded result for these settings")
        self.replay_button.on_click(lambda _: self.replay())
        self.export_path = W.Text(value="lab_history.csv", description="CSV file", style=_style(), layout=_wide())
        self.export_button = W.Button(description="Export CSV", icon="download")
        self.export_button.on_click(lambda _: self._export_clicked())

        self.banner = W.HTML(self._banner_html())
        self.notes_html = W.HTML(self._notes_html())
        self.messages_html = W.HTML()
        self.delta_html = W.HTML()
        self.result_html = W.HTML()
        self.chart_out = W.Output()
        self.history_html = W.HTML()
        self._render_history()

        self._left, self._right = W.VBox(), W.VBox()
        self._place_controls()
        self._sync_buttons()
        actions = W.HBox([self.run_button, self.progress])
        replay_row = W.HBox([self.reference_dropdown, self.replay_button])
        export_row = W.HBox([self.export_path, self.export_button])
        self.children = (self.banner, W.HBox([self._left, self._right]), actions, replay_row, self.messages_html,
                         self.delta_html, W.HBox([self.chart_out, self.result_html]), self.history_html, export_row)

    def _make_live_controls(self, on_gpu: bool, precision_options) -> dict:
        """The controls for runs in this kernel: every value this device can run."""
        b, style, wide = self.base, _style(), _wide
        values = [v for _, v in precision_options]
        seq_options = sorted({64, 128, 256, 512, 1024} | ({2048, 4096} if on_gpu else set()) | {b.seq_len})
        r_options = sorted({4, 8, 16, 32, 64} | {b.lora_r})
        controls = {
            "gradient_checkpointing": W.Checkbox(value=b.gradient_checkpointing, description="gradient checkpointing",
                                                 style=style, layout=wide(), indent=False),
            "precision": W.Dropdown(options=precision_options, value=b.precision if b.precision in values else "auto",
                                    description="precision", style=style, layout=wide()),
            "micro_batch": W.IntSlider(value=b.micro_batch, min=1, max=max(16, b.micro_batch),
                                       description="micro-batch", style=style, layout=wide()),
            "grad_accum": W.IntSlider(value=b.grad_accum, min=1, max=max(32, b.grad_accum),
                                      description="grad accumulation", style=style, layout=wide()),
            "num_gpus": W.Dropdown(options=sorted({1, 2, 4, 8, b.num_gpus}), value=b.num_gpus,
                                   description="GPUs (arithmetic)", style=style, layout=wide()),
            "seq_len": W.Dropdown(options=seq_options, value=b.seq_len, description="sequence length", style=style,
                                  layout=wide()),
            "lora_r": W.Dropdown(options=r_options, value=b.lora_r, description="LoRA rank r", style=style,
                                 layout=wide()),
        }
        if not on_gpu:
            controls["memory_budget_gb"] = W.BoundedFloatText(
                value=b.memory_budget_gb or 0.0, min=0.0, max=1e6, step=0.01, description="budget GiB (0 = none)",
                style=style, layout=wide())
        self._watch_readout(controls)
        return controls

    def _make_reference_controls(self, pool: list[dict]) -> dict:
        """The controls for replaying a set: each offers only the values the set recorded, starting from the
        recorded run closest to the live settings."""
        style, wide = _style(), _wide
        live = {f: self._live_controls[f].value for f in MATCHED_FIELDS + ("num_gpus",)}
        start = closest_record(pool, live)["config"]
        gc_values = recorded_values(pool, "gradient_checkpointing")
        if gc_values == [False, True]:
            gc = W.Checkbox(value=start["gradient_checkpointing"], description="gradient checkpointing",
                            style=style, layout=wide(), indent=False)
        else:
            gc = W.Dropdown(options=[("on" if v else "off", v) for v in gc_values],
                            value=start["gradient_checkpointing"],
                            description="gradient checkpointing", style=style, layout=wide())
        controls = {
            "gradient_checkpointing": gc,
            "precision": W.Dropdown(options=recorded_precisions(pool), value=start["precision"],
                                    description="precision", style=style, layout=wide()),
            "micro_batch": W.SelectionSlider(options=recorded_values(pool, "micro_batch"),
                                             value=start["micro_batch"], description="micro-batch", style=style,
                                             layout=wide()),
            "grad_accum": W.SelectionSlider(options=recorded_values(pool, "grad_accum"), value=start["grad_accum"],
                                            description="grad accumulation", style=style, layout=wide()),
            "num_gpus": W.Dropdown(options=recorded_values(pool, "num_gpus"), value=start["num_gpus"],
                                   description="GPUs (arithmetic)", style=style, layout=wide()),
            "seq_len": W.Dropdown(options=recorded_values(pool, "seq_len"), value=start["seq_len"],
                                  description="sequence length", style=style, layout=wide()),
            "lora_r": W.Dropdown(options=recorded_values(pool, "lora_r"), value=start["lora_r"],
                                 description="LoRA rank r", style=style, layout=wide()),
        }
        self._watch_readout(controls)
        return controls

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
            where = (f"<b>Replaying reference set</b> <code>{_esc(self.reference_name)}</code> · model "
                     f"<b>{_esc(self.model)}</b> · {_esc(where)}. Nothing runs in this kernel: the controls offer "
                     f"what the set recorded. Choose “{_esc(LIVE)}” under “results from” to run here.")
        elif f["type"] == "cuda":
            cc = ".".join(map(str, f["capability"] or []))
            mem = fmt_bytes(f["total_memory"])
            where = (f"GPU: <b>{_esc(f['name'])}</b> (compute capability {cc}, {mem}) · model "
                     f"<b>{_esc(self.model)}</b>")
        else:
            where = (f"<b>No GPU</b>: the lab runs on the CPU with the <b>{_esc(self.model)}</b> model, a stand-in "
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
        return "".join(f"<div style='color:#555;font-size:90%'>· {_esc(n)}</div>" for n in notes)

    def _update_readout(self, *_):
        c = self.controls
        try:
            cfg = RunConfig(micro_batch=c["micro_batch"].value, grad_accum=c["grad_accum"].value,
                            num_gpus=c["num_gpus"].value)
            text = f"effective batch: <b>{_esc(cfg.effective_batch_text)}</b> sequences per optimizer step"
        except ValueError as e:
            text = f"effective batch: {_esc(e)}"
        self.readout.value = text

    # -- live runs or a reference set ----------------------------------------------------------------------------
    def use_reference(self, name: str) -> "Lab":
        """Replay the reference set `name`: the model and the controls switch to what it recorded, Run gives way
        to Replay. The same as choosing it under "results from". ValueError for a set that is not recorded."""
        names = reference_sets()
        if name not in names:
            raise ValueError(f"unknown reference set {name!r}; recorded sets: {', '.join(names) or 'none'}")
        self.reference_dropdown.value = name
        return self

    def use_live(self) -> "Lab":
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
            self.controls = self._make_reference_controls(pool)
            self.reference_name, self.reference_pool = name, pool
            self.base = RunConfig.from_dict(pool[0]["config"])
            self.model = self.base.model
            self.precision_notes = []
        self._place_controls()
        self.banner.value = self._banner_html()
        self.notes_html.value = self._notes_html()
        self._sync_buttons()

    # -- state -----------------------------------------------------------------------------------------------------
    def config(self) -> RunConfig:
        """The RunConfig the controls describe (ValueError if they describe a bad one)."""
        changes = {name: w.value for name, w in self.controls.items()}
        budget = changes.pop("memory_budget_gb", None)
        changes["memory_budget_gb"] = float(budget) if budget else None
        return self.base.replace(**changes)

    def set(self, **values) -> "Lab":
        """Set controls by RunConfig field name: lab.set(gradient_checkpointing=False, micro_batch=4).
        Every value is checked before any is applied, so a bad one leaves the lab as it was."""
        checked = []
        for name, value in values.items():
            if name not in self.controls:
                raise ValueError(f"the lab has no control {name!r}" + self._while_replaying()
                                 + f"; controls: {', '.join(self.controls)}")
            if name == "memory_budget_gb" and value is None:
                value = 0.0
            widget = self.controls[name]
            allowed = getattr(widget, "options", None)
            if allowed is not None:
                values_ok = [o[1] if isinstance(o, tuple) else o for o in allowed]
                if not any(value == v and type(value) is type(v) for v in values_ok):   # True is not 1
                    raise ValueError(self._not_offered(name, value, values_ok))
            elif isinstance(widget, W.IntSlider):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{name} must be an integer, got {value!r}")
                if not widget.min <= value <= widget.max:
                    raise ValueError(f"{name}={value!r} is outside {widget.min}..{widget.max}")
            checked.append((widget, value))
        for widget, value in checked:
            widget.value = value
        return self

    def _while_replaying(self) -> str:
        return f" while replaying reference set '{self.reference_name}'" if self.reference_name else ""

    def _not_offered(self, name: str, value, values_ok: list) -> str:
        if self.reference_name is not None:
            return (f"{name}={value!r} was not recorded in reference set '{self.reference_name}'; it has "
                    f"{values_ok}")
        return (f"{name}={value!r} is not offered here; choices: {values_ok}"
                + (f" ({'; '.join(self.precision_notes)})" if name == "precision" else ""))

    def _set_busy(self, busy: bool):
        self.busy = busy
        self._sync_buttons()
        self.export_button.disabled = busy
        for w in self.controls.values():
            w.disabled = busy
        self.run_button.description = "Running…" if busy else "Run"

    def _say(self, level: str, text: str):
        self.messages.append(text)
        self._levels.append(level)
        colors = {"info": "#333", "advice": "#8a6d3b", "error": "#b2182b", "oom": "#b2182b"}
        items = list(zip(self._levels, self.messages))[-8:]
        self.messages_html.value = "".join(
            f"<div style='color:{colors.get(lv, '#333')}'>{_esc(msg)}</div>" for lv, msg in items)

    def _on_step(self, step: int, steps: int):
        self.progress.max = steps
        self.progress.value = step + 1
        self.progress.description = f"step {step + 1}/{steps}"

    # -- running -----------------------------------------------------------------------------------------------------
    def run(self, **values) -> dict | None:
        """Press Run: set any given controls, run real steps, show the results. Returns the record, or None when
        nothing ran (bad settings, an error outside the run). Never raises for a failed run."""
        if self.busy:
            self._say("info", "a run is already in progress: wait for it to finish")
            return None
        if self.reference_name is not None:
            self._say("info", f"nothing runs while reference set '{self.reference_name}' is chosen: press Replay "
                              f"to see its record, or choose '{LIVE}' under 'results from' (panel.use_live()) "
                              "to run here")
            return None
        try:
            self.set(**values)
            cfg = self.config()
        except ValueError as e:
            self._say("error", f"settings rejected: {e}")
            return None
        runner = self._runner
        if runner is None:
            from labkit import experiment
            runner = experiment.run
        self._set_busy(True)
        self.progress.bar_style = "info"
        self.progress.max, self.progress.value = self.steps, 0
        self.progress.description = "loading…"
        record = None
        try:
            record = runner(cfg, steps=self.steps, warmup=self.warmup, device=self.device, weights=self.weights,
                            on_step=self._on_step)
        except ValueError as e:
            self._say("error", f"settings rejected: {e}")
        except KeyboardInterrupt:
            self._say("error", "run interrupted: nothing recorded")
        except Exception as e:  # noqa: BLE001 — anything else is a message, never a traceback wall
            self._say("error", f"the run failed outside the measured steps: {type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}")
        finally:
            self._set_busy(False)
            if record is None:
                from labkit.engine.runner import free_memory
                free_memory()
                self.progress.bar_style, self.progress.description = "danger", "failed"
        if record is None:
            return None
        self.progress.bar_style = {"ok": "success"}.get(record.get("status"), "danger")
        self.progress.description = {"ok": "done", "oom": "OOM"}.get(record.get("status"), "error")
        self._add(record, source="run")
        return record

    def replay(self, records=None, name: str | None = None, **values) -> list[dict]:
        """Replay reference results; returns what was added to the history.
        Without `records`: switch to the set `name` (if given), set any given controls, and show the set's record
        for these settings. With `records` (a record or a list): add them all, labelled "reference"."""
        if records is not None:
            chosen = [as_reference(r) for r in ([records] if isinstance(records, Mapping) else list(records))]
        else:
            found = self._find_in_set(name, values)
            chosen = [copy.deepcopy(found)] if found else []
        for rec in chosen:
            self._add(rec, source="reference")
        if chosen:
            status = chosen[-1].get("status")
            self.progress.bar_style = {"ok": "success"}.get(status, "danger")
            self.progress.description = {"ok": "replayed", "oom": "OOM (replayed)"}.get(status, "replayed")
        return chosen

    def _find_in_set(self, name: str | None, values: dict) -> dict | None:
        """The chosen set's record for the controls (after `values`), or None with a message saying why not."""
        try:
            if name is not None and name != self.reference_name:
                self.use_reference(name)
        except ValueError as e:
            self._say("error", f"cannot replay: {e}")
            return None
        if self.reference_name is None:
            self._say("info", "choose a reference set first, under 'results from' (or panel.use_reference(name)); "
                              f"recorded sets: {', '.join(reference_sets()) or 'none'}")
            return None
        try:
            self.set(**values)
            cfg = self.config()
        except ValueError as e:
            self._say("error", f"settings rejected: {e}")
            return None
        found = [r for r in self.reference_pool if matches(r, cfg)]
        if not found:
            self._say("info", missing_combination_text(self.reference_name, self.reference_pool, cfg))
            return None
        return found[-1]

    # -- results -------------------------------------------------------------------------------------------------
    def _previous(self, record: dict) -> dict | None:
        """The entry a new one is compared with: the previous live run, or the previous replay of the same set."""
        key = (record["lab"]["source"], record.get("reference_set"))
        for entry in reversed(self.history[:-1]):
            if (entry["lab"]["source"], entry.get("reference_set")) == key:
                return entry
        return None

    def _add(self, record: dict, source: str):
        record = dict(record)
        record["lab"] = {"run": len(self.history) + 1, "source": source, "provenance": provenance(record) or None}
        self.history.append(record)
        try:
            self._show(record)
        except Exception as e:  # noqa: BLE001 — a record the panel cannot display is a message, not a traceback
            self._say("error", f"run {record['lab']['run']} is in the history but could not be shown: "
                               f"{type(e).__name__}: {e}")

    def _show(self, record: dict):
        prev = self._previous(record)
        self.last_delta = delta_text(prev, record)
        self.last_compared_with = _compared_with(prev, record)
        status = record.get("status")
        where = f" ({record['lab']['provenance']})" if record["lab"]["provenance"] else ""
        if status == "ok":
            self._say("info", f"run {record['lab']['run']} done{where}: "
                              + config_label(record) + f" · {labels_text(record)}")
        elif status == "oom":
            self._say("oom", _oom_text(record))
        else:
            self._say("error", f"run failed{where}: {record.get('error')}")
        for w in record.get("warnings") or []:
            self._say("advice", f"advice: {w}")
        tags = " · ".join(record.get("labels") or [])
        self.delta_html.value = (f"<div style='margin:4px 0'><b>Δ vs {_esc(self.last_compared_with)}:</b> "
                                 f"{_esc(self.last_delta)}"
                                 + (f" <span style='color:#777'>[{_esc(tags)}]</span>" if tags else "") + "</div>")
        self.result_html.value = result_table_html(record, prev)
        self._draw(record)
        self._render_history()

    def _draw(self, record: dict):
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
                                   "data": {"image/png": png, "text/plain": "memory chart: " +
                                            config_label(record)},
                                   "metadata": {}},)

    def history_rows(self) -> list[dict]:
        """One flat dict per history entry (the CSV columns)."""
        return [history_row(r) for r in self.history]

    def _render_history(self):
        self.history_html.value = history_table_html(self.history)

    def to_csv(self, path=None) -> str:
        """The history as CSV text; also written to `path` when given. Returns the text."""
        text = history_csv(self.history)
        if path is not None:
            with open(path, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
        return text

    def _export_clicked(self):
        path = self.export_path.value.strip() or "lab_history.csv"
        try:
            self.to_csv(path)
        except OSError as e:
            self._say("error", f"could not write {path}: {e.strerror or e}")
            return
        self._say("info", f"saved {len(self.history)} run(s) to {path}")


def _compared_with(previous: dict | None, record: dict) -> str:
    """Which entry the delta line compares against: 'run 3 (the previous replay of set 'x')'."""
    ref_set = record.get("reference_set")
    if record["lab"]["source"] == "run":
        kind = "the previous live run"
    elif ref_set:
        kind = f"the previous replay of set '{ref_set}'"
    else:
        kind = "the previous replayed record"
    return f"run {previous['lab']['run']} ({kind})" if previous else f"nothing yet (no {kind[4:]})"


def _oom_text(record: dict) -> str:
    """The message for an out-of-memory record: simulated here, real here, or recorded elsewhere."""
    error = str(record.get("error") or "").removeprefix("simulated OOM: ")
    advice = ("Change the micro-batch first (keep the effective batch with more accumulation), then the sequence "
              "length, then the LoRA rank.")
    if record["lab"]["source"] == "reference":
        short = ". ".join(error.split(". ")[:2]).rstrip(".")
        return (f"run {record['lab']['run']} ({record['lab']['provenance']}): out of memory when it was recorded: "
                f"{short}. Theory's peak for it: {fmt_bytes(lookup(record, 'theory', 'peak'))}. {advice}")
    simulated = "simulated-oom" in (record.get("labels") or [])
    return (f"out of memory{' (simulated: over the declared budget)' if simulated else ''}: {error}. The kernel is "
            f"fine, memory was freed. {advice}")


def lab(model: str | None = None, **kwargs) -> Lab:
    """Build the lab panel. On a GPU the default model is 'llama-3.2-1b'; without one, 'tiny' on the CPU."""
    return Lab(model=model, **kwargs)
