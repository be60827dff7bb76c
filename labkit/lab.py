"""The lab: one panel of widgets that every lesson reuses.

    from labkit import lab
    panel = lab()          # an ipywidgets VBox; end a cell with it to show it
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

Reference results: `labkit/reference/*.jsonl` hold records written by `labkit sweep` on some machine. `replay`
adds them to the history, every figure labelled "reference · measured on <device>, <date>".
"""
from __future__ import annotations

import base64
import copy
import csv
import html
import io
import json
import os
from importlib import resources

import ipywidgets as W

from labkit import charts
from labkit.charts import lookup
from labkit.config import RunConfig, native_bf16, resolve_precision

MiB = 1024 ** 2
GiB = 1024 ** 3

LABEL_NOTES = {
    "cpu": "measured on the CPU (no GPU here): real bytes of the stand-in run, CPU times",
    "shape-only": "random weights in the model's shape: memory and time are real, the loss means nothing",
    "simulated-oom": "over the memory budget you declared: a simulated OOM, not a real one",
    "budget-simulated": "a memory budget was declared for this CPU run",
    "reference": "replayed from a recorded file, not run in this kernel",
    "theory-only": "no run: theory alone",
    "t4-profile": "a bigger GPU capped at a T4's memory: T4-profile, not a T4",
    "paging-off-on-cpu": "bitsandbytes pages optimizer state only on a GPU; on the CPU it stays resident",
}

CSV_COLUMNS = ["run", "source", "provenance", "model", "device", "precision", "gradient_checkpointing",
               "micro_batch", "grad_accum", "num_gpus", "effective_batch", "seq_len", "lora_r", "status",
               "saved_activations_measured_bytes", "saved_activations_theory_bytes", "simple_rule_bytes",
               "peak_allocated_bytes", "peak_reserved_bytes", "peak_theory_bytes", "step_time_s", "step_flops",
               "tokens_per_s", "labels", "error", "time"]


# ---- small helpers ---------------------------------------------------------------------------------------------
def fmt_bytes(n) -> str:
    """1,707,012 → '1.63 MiB'; None → '—'."""
    if n is None:
        return "—"
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if abs(n) >= scale:
            v = n / scale
            return f"{v:.0f} {unit}" if abs(v) >= 100 else f"{v:.3g} {unit}"
    return f"{n} B"


def _esc(text) -> str:
    return html.escape(str(text))


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


def provenance(record: dict) -> str:
    """'reference · measured on Tesla T4, 2025-03-01' for a replayed record; '' otherwise."""
    if "reference" not in (record.get("labels") or []):
        return ""
    dev = record.get("device") or {}
    name = dev.get("name") or "an unknown device"
    where = f"CPU ({name})" if dev.get("type") == "cpu" else name
    date = (record.get("time") or "unknown date")[:10]
    return f"reference · measured on {where}, {date}"


# ---- reference results -----------------------------------------------------------------------------------------
def _reference_dir():
    return resources.files("labkit").joinpath("reference")


def reference_sets() -> list[str]:
    """Names of the recorded reference sets (labkit/reference/<name>.jsonl), sorted."""
    folder = _reference_dir()
    try:
        entries = list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError, OSError):
        return []
    return sorted(e.name[:-len(".jsonl")] for e in entries if e.name.endswith(".jsonl"))


def load_reference(name: str) -> list[dict]:
    """The records of one reference set, each labelled "reference" with its provenance. ValueError if unknown."""
    names = reference_sets()
    if name not in names:
        raise ValueError(f"unknown reference set {name!r}; recorded sets: {', '.join(names) or 'none'}")
    text = _reference_dir().joinpath(f"{name}.jsonl").read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        if line.strip():
            out.append(as_reference(json.loads(line), name))
    return out


def as_reference(record: dict, source: str | None = None) -> dict:
    """A copy of `record` labelled as a reference (replayed, not run here)."""
    rec = copy.deepcopy(record)
    labels = list(rec.get("labels") or [])
    if "reference" not in labels:
        labels.append("reference")
    rec["labels"] = labels
    rec["provenance"] = provenance(rec)
    if source:
        rec["reference_set"] = source
    return rec


def _resolved_precision(record) -> str | None:
    return lookup(record, "resolved", "precision") or lookup(record, "config", "precision")


def matches(record: dict, cfg: RunConfig) -> bool:
    """Does a (reference) record have the lab's controlled settings? The model may differ: a GPU reference of the
    real model answers 'what would this config do there'. "auto" precision is resolved on the record's device."""
    c = record.get("config") or {}
    for field in ("gradient_checkpointing", "micro_batch", "grad_accum", "seq_len", "lora_r"):
        if c.get(field) != getattr(cfg, field):
            return False
    dev = record.get("device") or {}
    cap = tuple(dev["capability"]) if dev.get("capability") else None
    try:
        wanted = resolve_precision(cfg.precision, dev.get("type") or "cpu", cap)
    except ValueError:
        return False
    return _resolved_precision(record) == wanted


# ---- the lab -----------------------------------------------------------------------------------------------------
class Lab(W.VBox):
    """The lab panel (an ipywidgets VBox) and its Python handle.

    Attributes tests and notebooks use: `controls` (dict: RunConfig field → widget), `run_button`, `progress`,
    `readout` (effective batch), `history` (records of this kernel, oldest first), `messages` (strings, oldest
    first), `last_delta`, `last_figure`, `chart_out`, `result_html`, `delta_html`, `history_html`.
    Methods: `config()`, `set(**values)`, `run(**values)`, `replay(records=None, name=None)`, `to_csv(path=None)`,
    `history_rows()`.
    """

    def __init__(self, model: str | None = None, device: str | None = None, steps: int = 3, warmup: int = 1,
                 base: RunConfig | None = None, weights: str = "auto", runner=None, reference: str | None = None):
        super().__init__()
        from labkit.runner import device_summary, pick_device

        self.device = pick_device(device)
        self.facts = device_summary(self.device)
        on_gpu = self.facts["type"] == "cuda"
        self.model = model or (base.model if base else ("llama-3.2-1b" if on_gpu else "tiny"))
        self.base = (base or RunConfig(seq_len=512 if on_gpu else 128, micro_batch=2, grad_accum=4)
                     ).replace(model=self.model)
        self.steps, self.warmup, self.weights = steps, warmup, weights
        self._runner = runner
        self.history: list[dict] = []
        self.messages: list[str] = []
        self._levels: list[str] = []
        self.last_delta = "no run yet"
        self.last_figure = None
        self.busy = False
        self._build(on_gpu, reference)

    # -- layout ------------------------------------------------------------------------------------------------
    def _build(self, on_gpu: bool, reference: str | None):
        b = self.base
        style = {"description_width": "150px"}
        wide = W.Layout(width="340px")
        options, self.precision_notes = precision_choices(self.facts["type"], self.facts["capability"])
        values = [v for _, v in options]
        seq_options = sorted({64, 128, 256, 512, 1024} | ({2048, 4096} if on_gpu else set()) | {b.seq_len})
        r_options = sorted({4, 8, 16, 32, 64} | {b.lora_r})
        self.controls = {
            "gradient_checkpointing": W.Checkbox(value=b.gradient_checkpointing, description="gradient checkpointing",
                                                 style=style, layout=wide, indent=False),
            "precision": W.Dropdown(options=options, value=b.precision if b.precision in values else "auto",
                                    description="precision", style=style, layout=wide),
            "micro_batch": W.IntSlider(value=b.micro_batch, min=1, max=max(16, b.micro_batch),
                                       description="micro-batch", style=style, layout=wide),
            "grad_accum": W.IntSlider(value=b.grad_accum, min=1, max=max(32, b.grad_accum),
                                      description="grad accumulation", style=style, layout=wide),
            "num_gpus": W.Dropdown(options=sorted({1, 2, 4, 8, b.num_gpus}), value=b.num_gpus,
                                   description="GPUs (arithmetic)", style=style, layout=wide),
            "seq_len": W.Dropdown(options=seq_options, value=b.seq_len, description="sequence length", style=style,
                                  layout=wide),
            "lora_r": W.Dropdown(options=r_options, value=b.lora_r, description="LoRA rank r", style=style,
                                 layout=wide),
        }
        if not on_gpu:
            self.controls["memory_budget_gb"] = W.BoundedFloatText(
                value=b.memory_budget_gb or 0.0, min=0.0, max=1e6, step=0.01, description="budget GiB (0 = none)",
                style=style, layout=wide)
        self.readout = W.HTML()
        for name in ("micro_batch", "grad_accum", "num_gpus"):
            self.controls[name].observe(self._update_readout, names="value")
        self._update_readout()

        self.run_button = W.Button(description="Run", button_style="primary", icon="play",
                                   tooltip="run real optimizer steps with these settings")
        self.run_button.on_click(lambda _: self.run())
        self.progress = W.IntProgress(value=0, min=0, max=self.steps, description="idle",
                                      layout=W.Layout(width="340px"))
        sets = reference_sets()
        self.reference_dropdown = W.Dropdown(options=sets or ["(none recorded)"],
                                             value=(reference if reference in sets else (sets[0] if sets else
                                                                                         "(none recorded)")),
                                             description="reference set", style=style, layout=wide)
        self.replay_button = W.Button(description="Replay reference", icon="history",
                                      tooltip="show the recorded result for these settings", disabled=not sets)
        self.replay_button.on_click(lambda _: self.replay())
        self.export_path = W.Text(value="lab_history.csv", description="CSV file", style=style, layout=wide)
        self.export_button = W.Button(description="Export CSV", icon="download")
        self.export_button.on_click(lambda _: self._export_clicked())

        self.banner = W.HTML(self._banner_html())
        self.notes_html = W.HTML("".join(f"<div style='color:#555;font-size:90%'>· {_esc(n)}</div>"
                                         for n in self.precision_notes))
        self.messages_html = W.HTML()
        self.delta_html = W.HTML()
        self.result_html = W.HTML()
        self.chart_out = W.Output()
        self.history_html = W.HTML()
        self._render_history()

        left = W.VBox([self.controls[k] for k in ("gradient_checkpointing", "precision", "micro_batch", "grad_accum",
                                                   "num_gpus")] + [self.readout])
        right = W.VBox([self.controls[k] for k in self.controls if k not in
                        ("gradient_checkpointing", "precision", "micro_batch", "grad_accum", "num_gpus")]
                       + [self.notes_html])
        actions = W.HBox([self.run_button, self.progress])
        replay_row = W.HBox([self.reference_dropdown, self.replay_button])
        export_row = W.HBox([self.export_path, self.export_button])
        self.children = (self.banner, W.HBox([left, right]), actions, replay_row, self.messages_html,
                         self.delta_html, W.HBox([self.chart_out, self.result_html]), self.history_html, export_row)

    def _banner_html(self) -> str:
        f = self.facts
        if f["type"] == "cuda":
            cc = ".".join(map(str, f["capability"] or []))
            mem = fmt_bytes(f["total_memory"])
            where = (f"GPU: <b>{_esc(f['name'])}</b> (compute capability {cc}, {mem}) · model "
                     f"<b>{_esc(self.model)}</b>")
        else:
            where = (f"<b>No GPU</b>: the lab runs on the CPU with the <b>{_esc(self.model)}</b> model, a stand-in "
                     "with random weights. Memory figures are real measurements of that stand-in; step times are "
                     "CPU times. To see a GPU, replay a reference set recorded on one.")
        return f"<h4 style='margin:4px 0'>QLoRA Memory Lab</h4><div>{where}</div>"

    def _update_readout(self, *_):
        c = self.controls
        try:
            cfg = RunConfig(micro_batch=c["micro_batch"].value, grad_accum=c["grad_accum"].value,
                            num_gpus=c["num_gpus"].value)
            text = f"effective batch: <b>{_esc(cfg.effective_batch_text)}</b> sequences per optimizer step"
        except ValueError as e:
            text = f"effective batch: {_esc(e)}"
        self.readout.value = text

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
                raise ValueError(f"the lab has no control {name!r}; controls: {', '.join(self.controls)}")
            if name == "memory_budget_gb" and value is None:
                value = 0.0
            widget = self.controls[name]
            allowed = getattr(widget, "options", None)
            if allowed is not None:
                values_ok = [o[1] if isinstance(o, tuple) else o for o in allowed]
                if value not in values_ok:
                    raise ValueError(f"{name}={value!r} is not offered here; choices: {values_ok}"
                                     + (f" ({'; '.join(self.precision_notes)})" if name == "precision" else ""))
            elif isinstance(widget, W.IntSlider):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{name} must be an integer, got {value!r}")
                if not widget.min <= value <= widget.max:
                    raise ValueError(f"{name}={value!r} is outside {widget.min}..{widget.max}")
            checked.append((widget, value))
        for widget, value in checked:
            widget.value = value
        return self

    def _set_busy(self, busy: bool):
        self.busy = busy
        self.run_button.disabled = busy
        self.replay_button.disabled = busy or not reference_sets()
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
                from labkit.runner import free_memory
                free_memory()
                self.progress.bar_style, self.progress.description = "danger", "failed"
        if record is None:
            return None
        self.progress.bar_style = {"ok": "success"}.get(record.get("status"), "danger")
        self.progress.description = {"ok": "done", "oom": "OOM"}.get(record.get("status"), "error")
        self._add(record, source="run")
        return record

    def replay(self, records=None, name: str | None = None) -> list[dict]:
        """Replay reference results. With `records` (a record or a list): add them all, labelled "reference".
        Without: the record of the chosen set (`name`, else the dropdown's) that matches the controls."""
        if records is None:
            name = name or self.reference_dropdown.value
            try:
                pool = load_reference(name)
                cfg = self.config()
            except ValueError as e:
                self._say("error", f"cannot replay: {e}")
                return []
            found = [r for r in pool if matches(r, cfg)]
            if not found:
                self._say("info", f"no run in reference set '{name}' has these settings; it recorded "
                                  + _recorded_values(pool))
                return []
            chosen = [found[-1]]
        else:
            chosen = [as_reference(r) for r in ([records] if isinstance(records, dict) else list(records))]
        for rec in chosen:
            self._add(rec, source="reference")
        return chosen

    # -- results -------------------------------------------------------------------------------------------------
    def _previous(self, source: str) -> dict | None:
        for entry in reversed(self.history[:-1]):
            if entry["lab"]["source"] == source:
                return entry
        return None

    def _add(self, record: dict, source: str):
        record = dict(record)
        record["lab"] = {"run": len(self.history) + 1, "source": source, "provenance": provenance(record) or None}
        self.history.append(record)
        try:
            self._show(record, source)
        except Exception as e:  # noqa: BLE001 — a record the panel cannot display is a message, not a traceback
            self._say("error", f"run {record['lab']['run']} is in the history but could not be shown: "
                               f"{type(e).__name__}: {e}")

    def _show(self, record: dict, source: str):
        prev = self._previous(source)
        self.last_delta = charts.delta_text(prev, record)
        status = record.get("status")
        where = f" ({record['lab']['provenance']})" if record["lab"]["provenance"] else ""
        if status == "ok":
            self._say("info", f"run {record['lab']['run']} done{where}: "
                              + charts.config_label(record) + f" · {_labels_text(record)}")
        elif status == "oom":
            simulated = "simulated-oom" in (record.get("labels") or [])
            error = str(record.get("error") or "").removeprefix("simulated OOM: ")
            self._say("oom", f"out of memory{' (simulated: over the declared budget)' if simulated else ''}: "
                             f"{error}. The kernel is fine, memory was freed. Change the micro-batch "
                             "first (keep the effective batch with more accumulation), then the sequence length, "
                             "then the LoRA rank.")
        else:
            self._say("error", f"run failed: {record.get('error')}")
        for w in record.get("warnings") or []:
            self._say("advice", f"advice: {w}")
        tags = " · ".join(record.get("labels") or [])
        self.delta_html.value = (f"<div style='margin:4px 0'><b>Δ vs previous {_esc(source)}:</b> "
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
                                            charts.config_label(record)},
                                   "metadata": {}},)

    def history_rows(self) -> list[dict]:
        """One flat dict per history entry (the CSV columns)."""
        return [history_row(r) for r in self.history]

    def _render_history(self):
        if not self.history:
            self.history_html.value = "<div style='color:#777'>history: no runs yet</div>"
            return
        head = ["#", "source", "gc", "precision", "micro × accum × GPUs", "seq", "r", "status",
                "saved measured", "saved theory", "simple rule", "step time", "labels"]
        rows = []
        for rec in self.history:
            row = history_row(rec)
            rows.append([row["run"], row["source"], "on" if row["gradient_checkpointing"] else "off",
                         row["precision"], f"{row['micro_batch']} × {row['grad_accum']} × {row['num_gpus']} = "
                                           f"{row['effective_batch']}",
                         row["seq_len"], row["lora_r"], row["status"],
                         fmt_bytes(row["saved_activations_measured_bytes"]),
                         fmt_bytes(row["saved_activations_theory_bytes"]), fmt_bytes(row["simple_rule_bytes"]),
                         "—" if row["step_time_s"] is None else f"{row['step_time_s']:.3g} s", row["labels"]])
        cell = "<td style='padding:1px 6px'>{}</td>"
        body = "".join("<tr>" + "".join(cell.format(_esc(v)) for v in r) + "</tr>" for r in rows)
        th = "".join(f"<th style='padding:1px 6px'>{_esc(h)}</th>" for h in head)
        self.history_html.value = (f"<div><b>History of this kernel</b></div><table style='font-size:85%'>"
                                   f"<tr>{th}</tr>{body}</table>")

    def to_csv(self, path=None) -> str:
        """The history as CSV text; also written to `path` when given. Returns the text."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.history_rows():
            writer.writerow(row)
        text = buf.getvalue()
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


def _labels_text(record) -> str:
    labels = record.get("labels") or []
    return "labels: " + (", ".join(labels) if labels else "none (measured on this GPU)")


def _recorded_values(pool) -> str:
    def values(field):
        return sorted({str((r.get("config") or {}).get(field)) for r in pool})
    prec = sorted({str(_resolved_precision(r)) for r in pool})
    return ("checkpointing " + "/".join("on" if v == "True" else "off" for v in values("gradient_checkpointing"))
            + f", precision {'/'.join(prec)}, micro-batch {'/'.join(values('micro_batch'))}, "
            f"accumulation {'/'.join(values('grad_accum'))}, seq {'/'.join(values('seq_len'))}, "
            f"r {'/'.join(values('lora_r'))}")


def history_row(rec: dict) -> dict:
    c = rec.get("config") or {}
    th = rec.get("theory") or {}
    m = rec.get("measured") or {}
    lab_info = rec.get("lab") or {}
    micro, accum, gpus = c.get("micro_batch"), c.get("grad_accum"), c.get("num_gpus", 1)
    return {
        "run": lab_info.get("run"), "source": lab_info.get("source", "run"),
        "provenance": lab_info.get("provenance") or rec.get("provenance") or "",
        "model": c.get("model"), "device": lookup(rec, "device", "name"), "precision": _resolved_precision(rec),
        "gradient_checkpointing": c.get("gradient_checkpointing"), "micro_batch": micro, "grad_accum": accum,
        "num_gpus": gpus, "effective_batch": (micro * accum * gpus) if None not in (micro, accum, gpus) else None,
        "seq_len": c.get("seq_len"), "lora_r": c.get("lora_r"), "status": rec.get("status"),
        "saved_activations_measured_bytes": m.get("saved_activation_bytes"),
        "saved_activations_theory_bytes": charts.theory_saved(rec),
        "simple_rule_bytes": th.get("simple_rule_activations"),
        "peak_allocated_bytes": m.get("peak_allocated_bytes"), "peak_reserved_bytes": m.get("peak_reserved_bytes"),
        "peak_theory_bytes": th.get("peak"), "step_time_s": m.get("step_time_s"), "step_flops": th.get("step_flops"),
        "tokens_per_s": m.get("tokens_per_s"), "labels": " ".join(rec.get("labels") or []),
        "error": rec.get("error") or "", "time": rec.get("time"),
    }


def predicted_step_time(record: dict, previous: dict | None = None) -> tuple[float | None, str]:
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


def result_table_html(record: dict, previous: dict | None = None) -> str:
    """Theory (detailed, and the seed's simple rule) beside measured, for one record."""
    th = record.get("theory") or {}
    m = record.get("measured") or {}
    res = m.get("resident") or {}
    on_cpu = lookup(record, "device", "type") == "cpu"

    def resident(*keys):
        vals = [res.get(k) for k in keys]
        return None if all(v is None for v in vals) else sum(v or 0 for v in vals)

    peak_measured = m.get("peak_allocated_bytes")
    rows = [
        ("weights (4-bit + 16-bit parts)", th.get("weights"), "", resident("quantized_weights", "unquantized_weights")),
        ("LoRA adapters (fp32)", th.get("lora"), "", res.get("lora")),
        ("LoRA gradients", th.get("gradients"), "", res.get("gradients")),
        ("optimizer state", th.get("optimizer"), "", res.get("optimizer")),
        ("saved activations (layers)", th.get("activations"), fmt_bytes(th.get("simple_rule_activations")), None),
        ("logits for the loss (fp32)", th.get("logits"), "", None),
        ("saved for backward, total", charts.theory_saved(record), "", m.get("saved_activation_bytes")),
        ("peak allocated", th.get("peak"), "", peak_measured),
    ]
    cell = "<td style='padding:1px 6px;text-align:right'>{}</td>"
    body = []
    for name, theory, rule, measured in rows:
        shown = fmt_bytes(measured)
        if measured is None and name == "peak allocated" and on_cpu:
            shown = "n/a on CPU"
        elif measured is None and name.startswith(("saved activations", "logits")):
            shown = "inside the total"
        body.append(f"<tr><td style='padding:1px 6px'>{_esc(name)}</td>" + cell.format(_esc(fmt_bytes(theory)))
                    + cell.format(_esc(rule)) + cell.format(_esc(shown)) + "</tr>")
    t_pred, how = predicted_step_time(record, previous)
    t_meas = m.get("step_time_s")
    body.append(f"<tr><td style='padding:1px 6px'>step time</td>"
                + cell.format(_esc("—" if t_pred is None else f"{t_pred:.3g} s")) + cell.format("")
                + cell.format(_esc("—" if t_meas is None else f"{t_meas:.3g} s")) + "</tr>")
    head = ("<tr><th></th><th style='padding:1px 6px'>theory</th><th style='padding:1px 6px'>seed's rule "
            "b·s·h·L·2</th><th style='padding:1px 6px'>measured</th></tr>")
    notes = [f"step time predicted: {how}", _labels_text(record)]
    for label in record.get("labels") or []:
        if label in LABEL_NOTES:
            notes.append(f"{label}: {LABEL_NOTES[label]}")
    if record.get("provenance"):
        notes.insert(0, record["provenance"])
    loss = m.get("loss")
    if loss:
        notes.append("loss per optimizer step: " + ", ".join(f"{x:.3f}" for x in loss))
    return (f"<table style='font-size:85%'>{head}{''.join(body)}</table>"
            + "".join(f"<div style='font-size:85%;color:#555'>{_esc(n)}</div>" for n in notes))


def lab(model: str | None = None, **kwargs) -> Lab:
    """Build the lab panel. On a GPU the default model is 'llama-3.2-1b'; without one, 'tiny' on the CPU."""
    return Lab(model=model, **kwargs)


# `from labkit import lab; lab()` and `import labkit.lab; labkit.lab()` both work: the module itself is callable
# (it forwards to the function above), so the module/function name clash cannot bite a learner.
class _CallableModule(type(json)):
    def __call__(self, model: str | None = None, **kwargs) -> Lab:
        return lab(model, **kwargs)


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _CallableModule
