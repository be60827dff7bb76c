"""The lab panel, driven the way a learner drives it: set controls, press buttons, read history and messages.

Most tests use a stand-in runner (the theory's numbers dressed as a measurement) so they are fast and exact; the
tests marked "real engine" run real QLoRA steps of the tiny model on the CPU through the very same button.
"""
import csv
import io
import itertools
import json
import re
import struct
from pathlib import Path

import ipywidgets as W
import pytest
import torch
from IPython.core.formatters import DisplayFormatter

from labkit import experiment, units
from labkit.course import lessons
from labkit.config import RunConfig
from labkit.course import lab as lab_module
from labkit.course import lab_view
from labkit.course.lab import Lab
from labkit.course.lab_controls import precision_choices
from labkit.report import reference
from labkit.report.html import result_table_html
from labkit.report.text import CSV_COLUMNS

pytestmark = pytest.mark.long      # half a minute or more: started early (tests/conftest.py)

CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU layout of the lab")


class FakeRunner:
    """Acts like experiment.run: calls on_step, returns a record whose 'measured' equals the theory.
    Records what the lab looked like while it ran."""

    def __init__(self, lab_getter=None, status="ok", labels=("cpu", "stand-in")):
        self.lab_getter = lab_getter
        self.status = status
        self.labels = list(labels)
        self.calls = []
        self.seen_busy = []

    def __call__(self, cfg, steps, warmup, device, weights, on_step):
        lab = self.lab_getter() if self.lab_getter else None
        if lab is not None:
            self.seen_busy.append((lab.run_button.disabled, lab.run_button.description,
                                   all(w.disabled for w in lab.controls.values()), lab.progress.description))
        for i in range(steps):
            on_step(i, steps)
        self.calls.append(cfg)
        rec = experiment.estimate(cfg, device="cpu")
        th = rec["theory"]
        rec["labels"] = list(self.labels)
        rec["status"] = self.status
        if self.status == "ok":
            rec["measured"] = {
                "saved_activation_bytes": th["activations"] + th["logits"], "peak_allocated_bytes": None,
                "peak_reserved_bytes": None, "step_time_s": th["step_flops"] / 1e10, "tokens_per_s": 1000.0,
                "loss": [6.0] * steps,
                "resident": {"quantized_weights": th["quantized_weights"], "unquantized_weights":
                             th["unquantized_weights"], "lora": th["lora"], "gradients": th["gradients"],
                             "optimizer": th["optimizer"]}}
        else:
            rec["error"] = "simulated OOM: resident + saved activations = 0.053 GiB measured > budget 0.02 GiB"
            rec["labels"].append("simulated-oom")
        return rec


def make_lab(**kw):
    holder = {}
    runner = kw.pop("runner", None) or FakeRunner(lambda: holder["lab"])
    lab = Lab(model="tiny", device="cpu", steps=3, runner=runner, **kw)
    holder["lab"] = lab
    return lab, runner


# ---- layout and controls -----------------------------------------------------------------------------------------
def test_lab_is_a_vbox_with_every_control():
    lab, _ = make_lab()
    assert isinstance(lab, W.VBox)
    for name in ("gradient_checkpointing", "precision", "micro_batch", "grad_accum", "seq_len", "lora_r", "num_gpus"):
        assert name in lab.controls
    assert isinstance(lab.run_button, W.Button) and lab.run_button.description == "Run"
    assert lab.history == [] and "no runs yet" in lab.history_html.value


def test_effective_batch_readout_follows_the_sliders():
    lab, _ = make_lab()
    assert "2 micro × 4 accum × 1 GPU = 8" in lab.readout.value
    lab.controls["micro_batch"].value = 4
    assert "4 micro × 4 accum × 1 GPU = 16" in lab.readout.value
    lab.set(grad_accum=8, num_gpus=2)
    assert "4 micro × 8 accum × 2 GPUs = 64" in lab.readout.value


def test_precision_offers_only_native_formats_and_says_why():
    t4, t4_notes = precision_choices("cuda", (7, 5))
    assert [v for _, v in t4] == ["auto", "fp16", "fp32"]
    assert ("auto (fp16)", "auto") in t4
    assert any("7.5 < 8.0" in n and "is_bf16_supported" in n for n in t4_notes)
    a100, a100_notes = precision_choices("cuda", (8, 0))
    assert "bf16" in [v for _, v in a100] and a100_notes == []
    cpu, cpu_notes = precision_choices("cpu", None)
    assert [v for _, v in cpu] == ["auto", "fp32", "bf16"]
    assert any("fp16 is not offered" in n for n in cpu_notes)


@CPU_ONLY
def test_values_not_offered_are_refused_in_words():
    lab, runner = make_lab()
    with pytest.raises(ValueError, match="not offered"):
        lab.set(precision="fp16")
    with pytest.raises(ValueError, match="no control"):
        lab.set(batch_size=32)
    assert lab.run(precision="fp16") is None
    assert "settings rejected" in lab.messages[-1]
    assert runner.calls == [] and lab.history == []


@CPU_ONLY
def test_cpu_lab_says_it_is_on_the_cpu_and_offers_a_budget():
    lab, _ = make_lab()
    assert "No GPU" in lab.banner.value and "tiny" in lab.banner.value
    assert "memory_budget_gb" in lab.controls
    lab.set(memory_budget_gb=0.5)
    assert lab.config().memory_budget_gb == 0.5
    lab.set(memory_budget_gb=None)
    assert lab.config().memory_budget_gb is None


# ---- pressing Run ------------------------------------------------------------------------------------------------
def test_click_runs_shows_busy_state_then_results():
    lab, runner = make_lab()
    lab.run_button.click()
    assert runner.seen_busy == [(True, "Running…", True, "loading…")]     # disabled while running
    assert not lab.run_button.disabled and lab.run_button.description == "Run"
    assert not any(w.disabled for w in lab.controls.values())
    assert (lab.progress.value, lab.progress.max, lab.progress.description) == (3, 3, "done")
    assert len(lab.history) == 1 and lab.history[0]["lab"]["source"] == "run"
    assert lab.messages[-1].startswith("run 1 done")
    assert lab.last_delta.startswith("first run")
    png = lab.chart.value
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    html = lab.result_html.value
    assert "theory" in html and "measured" in html and "b·s·h·L·2" in html and "step time" in html


def test_the_run_uses_the_controls():
    lab, runner = make_lab()
    lab.set(gradient_checkpointing=False, micro_batch=3, grad_accum=2, seq_len=256, lora_r=8, precision="fp32")
    lab.run_button.click()
    cfg = runner.calls[-1]
    assert (cfg.gradient_checkpointing, cfg.micro_batch, cfg.grad_accum, cfg.seq_len, cfg.lora_r, cfg.precision) == \
        (False, 3, 2, 256, 8, "fp32")
    assert cfg.model == "tiny"


def test_delta_line_compares_with_the_previous_run():
    lab, _ = make_lab()
    lab.run()
    lab.run(gradient_checkpointing=False)
    assert lab.last_delta.startswith("checkpointing off: saved activations +")
    assert "(theory +" in lab.last_delta and "step time" in lab.last_delta
    assert lab.last_delta in lab.delta_html.value.replace("&#x27;", "'")
    lab.run(micro_batch=4)
    assert lab.last_delta.startswith("micro-batch 2 → 4")
    assert lab.history_html.value.count("<tr>") == 4                   # header + 3 runs


@pytest.mark.parametrize("exc, expected", [(RuntimeError("boom"), "failed outside the measured steps"),
                                           (ValueError("bf16 is not native"), "settings rejected"),
                                           (KeyboardInterrupt(), "interrupted")])
def test_errors_become_messages_and_the_button_comes_back(exc, expected):
    def broken(*args, **kwargs):
        raise exc

    lab, _ = make_lab(runner=broken)
    assert lab.run() is None                         # no exception escapes
    assert expected in lab.messages[-1]
    assert not lab.run_button.disabled and lab.progress.description == "failed"
    assert lab.history == []


def test_oom_is_a_message_and_the_next_run_works():
    holder = {}
    oom = FakeRunner(lambda: holder["lab"], status="oom")
    lab = Lab(model="tiny", device="cpu", steps=2, runner=oom)
    holder["lab"] = lab
    rec = lab.run(micro_batch=16)
    assert rec["status"] == "oom"
    assert "out of memory (simulated" in lab.messages[-1] and "micro-batch first" in lab.messages[-1]
    assert lab.progress.description == "OOM" and not lab.run_button.disabled
    lab._runner = FakeRunner(lambda: holder["lab"])
    assert lab.run(micro_batch=1)["status"] == "ok"
    assert [h["status"] for h in lab.history] == ["oom", "ok"]


def test_rule_warnings_are_shown_as_advice():
    lab, _ = make_lab(base=RunConfig(model="tiny", seq_len=128, eval_micro_batch=8))
    lab.run()
    assert any(m.startswith("advice:") and "Axolotl rule 2" in m for m in lab.messages)


def test_a_second_run_is_refused_while_busy():
    lab, runner = make_lab()
    lab.busy = True
    assert lab.run() is None and "already in progress" in lab.messages[-1]
    assert runner.calls == []


# ---- a panel that renders everywhere --------------------------------------------------------------------------------
def widget_tree(widget):
    """The widget and every widget inside it."""
    yield widget
    for child in getattr(widget, "children", ()):
        yield from widget_tree(child)


def with_class(lab, cls):
    found = [w for w in widget_tree(lab) if cls in getattr(w, "_dom_classes", ())]
    assert len(found) == 1, (cls, found)
    return found[0]


def test_the_panel_needs_no_output_capture_and_names_its_parts():
    lab, _ = make_lab()
    lab.run()
    assert not any(isinstance(w, W.Output) for w in widget_tree(lab))
    assert with_class(lab, "labkit-lab") is lab
    assert with_class(lab, "labkit-run") is lab.run_button
    assert with_class(lab, "labkit-checkpointing") is lab.controls["gradient_checkpointing"]
    assert with_class(lab, "labkit-replay") is lab.replay_button
    assert with_class(lab, "labkit-delta") is lab.delta_html and with_class(lab, "labkit-messages") is lab.messages_html
    controls = with_class(lab, "labkit-controls")
    assert all(any(w is c for c in widget_tree(controls)) for w in lab.controls.values())
    chart = with_class(lab, "labkit-chart")
    assert isinstance(chart, W.Image) and chart.format == "png" and chart.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert (chart.layout.width, chart.layout.height, chart.layout.display) == ("100%", "auto", None)
    table = with_class(lab, "labkit-table")
    assert table is lab.result_html and "<table class='labkit-table-el'" in table.value


def png_size(png: bytes) -> tuple[int, int]:
    return struct.unpack(">II", png[16:24])          # the IHDR chunk: width, height


def test_the_chart_is_tall_and_its_text_legible_in_a_600_px_column():
    lab, _ = make_lab()
    lab.run()
    width, height = png_size(lab.chart.value)
    column = 600                                          # JupyterLab at 1024 px with its side bar open
    assert height * column / width >= 300                 # shown at the column's width: 660 × 600 / 960 = 412 px
    fig = lab.last_figure
    px_per_pt = column / (fig.get_figwidth() * 72)        # 600 / (6.4 × 72) = 1.30 px on screen per point
    ax = fig.axes[0]
    axis_text = ax.get_xticklabels() + ax.get_yticklabels() + [ax.yaxis.label] + ax.get_legend().get_texts()
    assert axis_text and min(t.get_fontsize() for t in axis_text) * px_per_pt >= 10
    assert min(t.get_fontsize() for t in ax.texts + [ax.title]) * px_per_pt >= 9   # bar labels, title
    assert lab.chart.layout.max_width == "760px"          # never blown up past 760 px wide (522 px tall)


def test_no_width_is_fixed_wider_than_a_narrow_column_and_rows_wrap():
    lab, _ = make_lab()
    lab.run()
    lab.use_reference(GPU_SET)                           # the reference controls too
    lab.use_live()
    widgets = list(widget_tree(lab)) + list(lab._live_controls.values())
    for w in widgets:
        layout = getattr(w, "layout", None)
        for key in ("width", "min_width", "flex"):
            for px in re.findall(r"(\d+)px", str(getattr(layout, key, None) or "")):
                assert int(px) <= 400, (w, key, px)    # two controls share a 600 px column, one a 400 px one
    rows = [w for w in widgets if isinstance(w, W.HBox)]
    assert rows and all(r.layout.flex_flow == "row wrap" for r in rows)
    assert lab.reference_dropdown.layout.max_width == "100%"


def _units(cells: str) -> set:
    return set(re.findall(r"\d (GiB|MiB|KiB|B)\b", cells))


def test_one_unit_per_row_in_both_tables():
    lab, _ = make_lab(reference=GPU_SET)
    lab.replay(seq_len=2048, micro_batch=4, gradient_checkpointing=True)    # GiB-sized activations
    lab.use_live()
    lab.run()                                                               # MiB-sized
    for html in (lab.result_html.value, lab.history_html.value):
        rows = html.split("</table>")[0].split("<tr>")[1:]
        assert len(rows) > 2
        for row in rows:
            assert len(_units(row)) <= 1 and "KiB" not in row, row
    assert "GiB" in lab.history_html.value and "MiB" in lab.history_html.value


def test_messages_start_afresh_with_each_run():
    holder = {}
    lab = Lab(model="tiny", device="cpu", steps=2, runner=FakeRunner(lambda: holder["lab"], status="oom"))
    holder["lab"] = lab
    lab.run(micro_batch=16)
    assert "out of memory (simulated" in lab.messages_html.value
    lab._runner = FakeRunner(lambda: holder["lab"])
    lab.run(micro_batch=1)
    assert "out of memory" not in lab.messages_html.value and "run 2 done" in lab.messages_html.value
    assert len(lab.messages) >= 2 and "out of memory (simulated" in lab.messages[0]     # the log keeps it
    assert lab.last_delta.endswith("[run 1: OOM, no measurement]")                      # named, not "previous run"


def test_the_delta_names_its_run_and_settings_after_a_replay():
    lab, _ = make_lab()
    lab.run()                                                              # run 1: live, checkpointing on
    lab.use_reference(GPU_SET)
    lab.replay(seq_len=512, micro_batch=1, gradient_checkpointing=True)    # run 2: replayed
    lab.use_live()
    lab.run(gradient_checkpointing=False)                                  # run 3: compared with run 1, not 2
    assert lab.last_compared_with == "run 1 (gc on · mb 2 · ga 4 · fp32 · seq 128, the previous live run)"
    assert lab.last_delta.startswith("checkpointing off: saved activations +")
    assert "Δ run 3 vs run 1 (gc on · mb 2 · ga 4 · fp32 · seq 128" in lab.delta_html.value
    text = lab.delta_html.value
    for name in ("saved activations", "step time"):                        # the delta's words are the table's rows
        assert f"{name} " in text and f">{name}</th>" in lab.result_html.value


def test_bad_values_raise_value_error_and_change_nothing(monkeypatch):
    lab, runner = make_lab()
    lab.set(memory_budget_gb=0.5)
    before = {k: w.value for k, w in lab.controls.items()}
    for bad in (-1, 0, float("nan"), float("inf"), "big"):
        with pytest.raises(ValueError, match="memory_budget_gb"):
            lab.set(memory_budget_gb=bad)
    with pytest.raises(ValueError, match="gradient_checkpointing must be True or False"):
        lab.set(gradient_checkpointing="yes")
    assert {k: w.value for k, w in lab.controls.items()} == before
    assert lab.config().memory_budget_gb == 0.5                            # -1 did not become "no budget"
    # a value a widget refuses after the lab's own checks: the widget's TraitError becomes a ValueError, undone
    monkeypatch.setattr(lab_view, "checked_values", lambda controls, values, *a: [
        (controls["micro_batch"], 3), (controls["seq_len"], "long")])
    with pytest.raises(ValueError, match="a control refused the value"):
        lab.set(micro_batch=3, seq_len="long")
    assert lab.controls["micro_batch"].value == before["micro_batch"]
    assert lab.run(memory_budget_gb=-1) is None and runner.calls == []


def test_a_bad_budget_typed_in_the_panel_shows_one_message():
    lab, runner = make_lab()
    lab.run()
    lab.controls["memory_budget_gb"].value = "-1"                          # what a learner types
    assert lab.messages_html.value.count("<div") == 1
    assert "settings rejected: memory_budget_gb must be &gt; 0, got -1.0" in lab.messages_html.value
    lab.run_button.click()                                                 # Run refuses it too, once
    assert lab.messages_html.value.count("<div") == 1 and "settings rejected" in lab.messages_html.value
    assert len(runner.calls) == 1 and len(lab.history) == 1
    lab.controls["memory_budget_gb"].value = ""                            # empty: no budget
    lab.run_button.click()
    assert runner.calls[-1].memory_budget_gb is None and len(lab.history) == 2


def test_settings_rejected_by_the_config_are_a_message_in_the_panel(monkeypatch):
    lab, runner = make_lab()

    def refuse(**changes):
        raise ValueError("micro_batch × grad_accum is too large (from RunConfig)")

    monkeypatch.setattr(lab, "config", lambda: refuse())
    assert lab.run() is None and runner.calls == []
    assert lab.messages_html.value.count("<div") == 1
    assert "settings rejected: micro_batch × grad_accum is too large (from RunConfig)" in lab.messages_html.value


def test_without_widgets_the_panel_is_readable_text():
    lab, _ = make_lab()
    data, _ = DisplayFormatter().format(lab)
    assert "application/vnd.jupyter.widget-view+json" in data              # front ends with widgets: the widget
    text = data["text/plain"]                                               # … the others: this
    assert text.startswith("QLoRA Memory Lab (text view)")
    assert "widgets are not showing" in text and "pip install ipywidgets" in text
    assert "jupyter nbextension enable --py --sys-prefix widgetsnbextension" in text and "panel.run()" in text
    assert "pip install widgetsnbextension" in text
    assert "settings: gradient checkpointing on · precision auto · micro-batch 2 × accumulation 4" in " ".join(
        text.split())                                                       # wrapped at WIDTH
    assert "no runs yet" in text
    lab.run()
    lab.run(gradient_checkpointing=False)
    text = DisplayFormatter().format(lab)[0]["text/plain"]
    from labkit.course.lab_text import WIDTH
    too_long = [line for line in text.splitlines() if len(line) > WIDTH]
    assert WIDTH <= 80 and not too_long, too_long    # a narrow output (Notebook 6 at 1024 px) breaks none mid-word
    assert "latest: run 2 (gc off · mb 2 · ga 4 · fp32 · seq 128 · r 16), status ok" in text
    saved = next(line for line in text.splitlines() if line.strip().startswith("saved activations"))
    assert len(_units(saved)) == 1
    assert "Δ run 2 vs run 1 (gc on" in text and "run 2 done" in text and "history (2 entries" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert not callable(getattr(lab, "_ipython_display_", None))           # ipywidgets 7 takes this path too


# ---- history export -----------------------------------------------------------------------------------------------
def test_history_exports_to_csv(tmp_path):
    lab, _ = make_lab()
    lab.run()
    lab.run(gradient_checkpointing=False)
    path = tmp_path / "history.csv"
    text = lab.to_csv(path)
    assert path.read_text() == text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == CSV_COLUMNS
    assert [r["gradient_checkpointing"] for r in rows] == ["True", "False"]
    assert rows[0]["effective_batch"] == "8" and rows[0]["status"] == "ok"
    assert int(rows[1]["saved_activations_measured_bytes"]) > int(rows[0]["saved_activations_measured_bytes"])


def test_export_button_writes_the_file(tmp_path):
    lab, _ = make_lab()
    lab.run()
    lab.export_path.value = str(tmp_path / "out.csv")
    lab.export_button.click()
    assert (tmp_path / "out.csv").exists()
    assert lab.messages[-1].startswith("saved 1 run(s)")
    lab.export_path.value = str(tmp_path / "no" / "such" / "dir.csv")
    lab.export_button.click()
    assert lab.messages[-1].startswith("could not write")


# ---- reference results (the sets themselves: tests/report/test_reference.py) ----------------------------------------
@CPU_ONLY
def test_replay_picks_the_matching_reference_and_labels_it():
    lab, runner = make_lab(reference="cpu-tiny")
    got = lab.replay()
    assert len(got) == 1 and runner.calls == []                      # nothing ran
    entry = lab.history[-1]
    assert entry["lab"]["source"] == "reference" and "reference" in entry["labels"]
    assert entry["config"]["micro_batch"] == 2 and entry["config"]["gradient_checkpointing"] is True
    assert "reference · measured on CPU" in lab.messages[-1]
    assert "reference · measured on CPU" in lab.result_html.value
    assert lab.history_rows()[-1]["provenance"].startswith("reference · measured on CPU")
    lab.set(gradient_checkpointing=False)
    lab.replay()
    assert lab.last_delta.startswith("checkpointing off")              # compared with the previous replay


@CPU_ONLY
def test_replaying_a_set_refuses_values_it_did_not_record():
    lab, _ = make_lab(reference="cpu-tiny")
    with pytest.raises(ValueError, match=r"lora_r=64 was not recorded in reference set 'cpu-tiny'; it has \[16\]"):
        lab.set(lora_r=64)
    assert lab.replay(lora_r=64) == []
    assert "settings rejected" in lab.messages[-1] and "it has [16]" in lab.messages[-1]
    with pytest.raises(ValueError, match="not recorded"):
        lab.set(micro_batch=True)                                    # True == 1, but it is not a micro-batch


@pytest.fixture
def partial_gpu_set(tmp_path, monkeypatch):
    """A reference folder holding the GPU set without its seq-2048 runs at micro-batch 2 and 4 (a set whose grid
    has holes), beside the real sets."""
    folder = Path(lab_module.__file__).parent.parent / "reference"
    for f in folder.glob("*.jsonl"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    lines = (folder / f"{GPU_SET}.jsonl").read_text().splitlines()
    kept = [ln for ln in lines if not (json.loads(ln)["config"]["seq_len"] == 2048
                                       and json.loads(ln)["config"]["micro_batch"] > 1)]
    (tmp_path / "gpu-with-holes.jsonl").write_text("\n".join(kept) + "\n")
    monkeypatch.setattr(reference, "_reference_dir", lambda: tmp_path)
    return "gpu-with-holes"


@CPU_ONLY
def test_replay_without_a_match_says_what_was_recorded(partial_gpu_set):
    lab, _ = make_lab(reference=partial_gpu_set)
    assert lab.replay(seq_len=2048, micro_batch=4) == []
    said = lab.messages[-1]
    assert said.startswith(f"no run in reference set '{partial_gpu_set}' has these settings (checkpointing on, "
                           "precision auto, micro-batch 4, accumulation 4, seq 2048, r 16)")
    assert "micro-batch 1/2/4" in said and "seq 512/2048" in said and "r 16" in said
    assert said.endswith("one setting away it has: seq 512, micro-batch 1")
    assert len(lab.history) == 0


# ---- the GPU reference set ------------------------------------------------------------------------------------------
GPU_SET = "h100-t4-profile-llama-3.2-1b-2026-11-22"
GPU_PROVENANCE = "reference · measured on NVIDIA H100 80GB HBM3 (T4 profile), 2026-11-22"


def test_choosing_the_gpu_set_switches_the_model_and_every_control():
    lab, runner = make_lab()
    assert lab.reference_name is None and lab.controls["seq_len"].value == 128
    lab.reference_dropdown.value = GPU_SET                                # what a learner picks in the panel
    assert lab.reference_name == GPU_SET and lab.model == "llama-3.2-1b"
    assert "Replaying reference set" in lab.banner.value and "llama-3.2-1b" in lab.banner.value
    assert GPU_PROVENANCE in lab.banner.value
    c = lab.controls
    assert list(c["seq_len"].options) == [512, 2048] and c["seq_len"].value == 512
    assert list(c["micro_batch"].options) == [1, 2, 4] and c["micro_batch"].value == 2   # kept: it was recorded
    assert list(c["grad_accum"].options) == [4] and list(c["lora_r"].options) == [16]
    assert list(c["precision"].options) == [("auto (fp16)", "auto")]
    assert isinstance(c["gradient_checkpointing"], W.Checkbox) and "memory_budget_gb" not in c
    shown = lab._controls_row.children
    assert all(w in shown for w in c.values())                        # the panel shows the switched controls
    assert lab.config().model == "llama-3.2-1b"
    assert lab.run_button.disabled and not lab.replay_button.disabled
    assert lab.run() is None and runner.calls == [] and "nothing runs while reference set" in lab.messages[-1]


def test_every_combination_the_gpu_set_offers_has_its_record():
    lab, _ = make_lab(reference=GPU_SET)
    c = lab.controls
    combos = list(itertools.product(c["seq_len"].options, c["micro_batch"].options, [True, False]))
    for seq, micro, gc in combos:
        (rec,) = lab.replay(seq_len=seq, micro_batch=micro, gradient_checkpointing=gc)
        assert (rec["config"]["seq_len"], rec["config"]["micro_batch"],
                rec["config"]["gradient_checkpointing"]) == (seq, micro, gc)
    assert len(lab.history) == len(combos) == 12
    assert [h["status"] for h in lab.history].count("oom") == 3


def test_a_replayed_gpu_record_says_where_and_when_everywhere():
    lab, _ = make_lab()
    lab.use_reference(GPU_SET)
    (rec,) = lab.replay(seq_len=2048, micro_batch=1, gradient_checkpointing=True)
    assert rec.status == "ok" and rec.measured.peak_allocated_bytes == 4964403712
    entry = lab.history[-1]
    assert entry["provenance"] == entry["lab"]["provenance"] == GPU_PROVENANCE
    assert lab.messages[-1].startswith(f"run 1 done ({GPU_PROVENANCE}): gc on · mb 1 · fp16")
    assert GPU_PROVENANCE in lab.result_html.value and "shape-only: random weights" in lab.result_html.value
    assert lab.last_figure._suptitle.get_text().replace("\n", " ") == f"Where the memory goes — {GPU_PROVENANCE}"
    assert f"run 1: {GPU_PROVENANCE}" in lab.history_html.value
    assert lab.history_rows()[-1]["provenance"] == GPU_PROVENANCE
    assert "already in memory" not in lab.result_html.value            # not recorded in this set: nothing extra
    assert lab.progress.description == "replayed"


def test_a_replayed_gpu_oom_shows_as_an_oom_with_its_theory():
    lab, _ = make_lab(reference=GPU_SET)
    (rec,) = lab.replay(seq_len=2048, micro_batch=4, gradient_checkpointing=False)
    assert rec["status"] == "oom"
    said = lab.messages[-1]
    assert said.startswith(f"run 1 ({GPU_PROVENANCE}): out of memory when it was recorded: CUDA out of memory. "
                           "Tried to allocate 32.00 MiB. Theory's peak for it: 28.2 GiB.")
    assert "The kernel is fine" not in said and "micro-batch first" in said
    html = lab.result_html.value
    assert "out of memory: the theory column is what this run needed" in html and "28.2 GiB" in html
    assert "—\u00a0OOM" in lab.last_figure.axes[0].get_title()
    assert lab.history_rows()[-1]["status"] == "oom" and lab.progress.description == "OOM (replayed)"


def test_replay_deltas_compare_with_the_previous_record_of_the_same_set():
    lab, _ = make_lab()
    lab.run()                                                          # run 1: live
    lab.use_reference(GPU_SET)
    lab.replay(seq_len=512, micro_batch=1, gradient_checkpointing=True)          # run 2
    assert lab.last_delta.startswith("first run")                     # not compared with the live tiny run
    assert lab.last_compared_with == f"nothing yet (no previous replay of set '{GPU_SET}')"
    lab.replay(micro_batch=2)                                          # run 3
    run_2 = "run 2 (gc on · mb 1 · ga 4 · fp16 · seq 512, the previous replay of set "
    assert lab.last_compared_with == f"{run_2}'{GPU_SET}')"
    assert lab.last_delta.startswith("micro-batch 1 → 2: saved activations +")
    assert f"Δ run 3 vs {run_2}&#x27;{GPU_SET}&#x27;):" in lab.delta_html.value
    lab.use_reference("cpu-tiny")
    lab.replay()                                                       # run 4: another set starts afresh
    assert lab.last_compared_with == "nothing yet (no previous replay of set 'cpu-tiny')"
    lab.use_live()
    lab.run()                                                          # run 5: compared with the live run 1
    assert lab.last_compared_with == "run 1 (gc on · mb 2 · ga 4 · fp32 · seq 128, the previous live run)"


def test_switching_back_to_live_runs_restores_the_live_controls():
    lab, runner = make_lab()
    lab.set(micro_batch=3, seq_len=256, memory_budget_gb=0.5)
    live_controls = dict(lab.controls)
    lab.use_reference(GPU_SET)                                         # 3 and 256 were not recorded
    assert lab.controls["seq_len"].value == 512 and lab.controls["micro_batch"].value == 1
    lab.use_reference("cpu-tiny")                                      # another set: its own controls
    assert lab.model == "tiny" and list(lab.controls["seq_len"].options) == [128]
    assert list(lab.controls["precision"].options) == [("fp32", "fp32"), ("bf16", "bf16")]
    lab.reference_dropdown.value = "live runs in this kernel"          # what a learner picks in the panel
    assert lab.reference_name is None and lab.controls == live_controls
    assert (lab.controls["micro_batch"].value, lab.controls["seq_len"].value) == (3, 256)
    assert lab.config().memory_budget_gb == 0.5 and "No GPU" in lab.banner.value
    assert not lab.run_button.disabled and lab.replay_button.disabled
    lab.run_button.click()
    assert runner.calls[-1].model == "tiny" and runner.calls[-1].seq_len == 256


def test_replay_asks_for_a_set_when_none_is_chosen():
    lab, _ = make_lab()
    assert lab.reference_dropdown.value == "live runs in this kernel"
    assert lab.replay() == [] and lab.messages[-1].startswith("choose a reference set first")
    with pytest.raises(ValueError, match="unknown reference set 'nope'"):
        lab.use_reference("nope")
    assert lab.replay(name="nope") == [] and "cannot replay" in lab.messages[-1]


# ---- memory already held when a run started --------------------------------------------------------------------------
class HeldBeforeRunner(FakeRunner):
    """A FakeRunner whose records say how much was in memory when the run started (the newer record fields)."""

    def __init__(self, held, lab_getter=None):
        super().__init__(lab_getter)
        self.held = held

    def __call__(self, *args, **kwargs):
        rec = super().__call__(*args, **kwargs)
        rec["measured"].update(allocated_before_bytes=self.held, allocated_before_source="cuda-allocator")
        if self.held is not None and self.held > 256 * 1024 ** 2:
            rec["labels"].append("memory-held-before")
            rec["warnings"] = [f"{self.held / 1024 ** 2:,.0f} MiB were already in memory when this run started, "
                               "and its peak includes them: restart the runtime"]
        return rec


def test_memory_held_before_the_run_is_shown_and_warned_calmly():
    lab, _ = make_lab(runner=HeldBeforeRunner(3 * 1024 ** 3))
    lab.run()
    html = lab.result_html.value
    assert "already in memory when the run started: 3 GiB (the CUDA allocator&#x27;s count" in html
    assert "memory held before the run: 3,072 MiB were already in memory when this run started" in html
    assert "background:#fdf6e3" in html and "#b2182b" not in html     # visible, not alarm red
    assert lab.history_rows()[-1]["allocated_before_bytes"] == 3 * 1024 ** 3


@pytest.mark.parametrize("held, line", [(5 * 1024 ** 2, "already in memory when the run started: 5 MiB"),
                                        (None, None)])       # not measured: nothing said
def test_memory_held_before_below_the_threshold_is_one_line(held, line):
    lab, _ = make_lab(runner=HeldBeforeRunner(held))
    lab.run()
    assert "memory held before the run" not in lab.result_html.value
    if line:
        assert line in lab.result_html.value
    else:
        assert "already in memory" not in lab.result_html.value


def test_records_without_memory_held_before_show_nothing_extra(tmp_path):
    lab, _ = make_lab(reference="cpu-tiny")
    lab.replay()
    lab.use_live()
    lab.run()                                                          # FakeRunner: the older record fields
    for entry in lab.history:
        assert entry.measured.allocated_before_bytes is None
        html = result_table_html(entry)
        assert "already in memory" not in html and "memory held before" not in html
    assert [m for m in lab.messages if "could not be shown" in m] == []
    rows = list(csv.DictReader(io.StringIO(lab.to_csv())))
    assert [r["allocated_before_bytes"] for r in rows] == ["", ""]


def test_replay_of_given_records_labels_them():
    lab, _ = make_lab()
    rec = experiment.estimate(RunConfig(model="tiny"), device="cpu")
    rec["device"] = {"type": "cuda", "name": "Tesla T4", "capability": [7, 5], "total_memory": 15_835_660_288}
    rec["time"] = "2025-01-02T03:04:05+00:00"
    lab.replay([rec])
    assert lab.history[-1]["provenance"] == "reference · measured on Tesla T4, 2025-01-02"
    assert "reference" not in rec.get("labels", [])                   # the caller's record is left alone


# ---- the stable entry point --------------------------------------------------------------------------------------
def test_labkit_lab_builds_a_panel_and_the_module_is_a_plain_module():
    import labkit
    from labkit import lab

    assert lab is labkit.lab is lab_module.lab                # `from labkit import lab; lab()` as the lessons do
    assert isinstance(labkit.lab(model="tiny", device="cpu"), Lab)
    assert not callable(lab_module)                          # no callable-module trick behind it
    assert not hasattr(lab_module, "fmt_bytes")              # numbers are formatted by labkit.units alone


# ---- the real engine ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_lab():
    return Lab(model="tiny", device="cpu", steps=2, warmup=1, base=RunConfig(model="tiny", seq_len=64, micro_batch=2,
                                                                             grad_accum=1))


def test_real_engine_checkpointing_toggle(real_lab):
    lab = real_lab
    lab.set(seq_len=64, gradient_checkpointing=True)
    lab.run_button.click()
    lab.set(gradient_checkpointing=False)
    lab.run_button.click()
    on, off = lab.history[-2:]
    assert on.status == off.status == "ok", lab.messages
    assert "cpu" in off.labels and "shape-only" in off.labels
    assert off.measured.saved_activation_bytes > 3 * on.measured.saved_activation_bytes
    assert lab.last_delta.startswith("checkpointing off: saved activations +")
    assert "(theory +" in lab.last_delta
    assert lab.chart.value[:4] == b"\x89PNG" and not lab.run_button.disabled


def test_real_engine_simulated_oom_then_recovery(real_lab):
    lab = real_lab
    lab.set(gradient_checkpointing=True, memory_budget_gb=0.001)
    rec = lab.run()
    assert rec["status"] == "oom" and "simulated-oom" in rec["labels"]
    assert "out of memory (simulated" in lab.messages[-1]
    assert not lab.run_button.disabled
    assert "out of memory (simulated" in lab.messages_html.value
    ok = lab.run(memory_budget_gb=None)
    assert ok["status"] == "ok"
    assert "out of memory" not in lab.messages_html.value                # the OOM's message went with its run
    assert f"run {lab.history[-1]['lab']['run']} done" in lab.messages_html.value
    assert any("out of memory (simulated" in m for m in lab.messages)   # … and stays in the log


# ---- lesson helpers -----------------------------------------------------------------------------------------------
def test_lessons_judge_nothing_and_format_nothing():
    """A lesson writes its comparisons out in the notebook: the helpers module has no verdict to hide one in, and
    no formatter of its own (numbers are formatted by labkit.units, which the lessons import directly)."""
    for name in ("claim", "verdict", "fmt_bytes", "ratio", "pct", "change"):
        assert not hasattr(lessons, name), name


def test_percent_and_ratio_helpers():
    assert units.fmt_change(-0.81) == "\u221281%" and units.fmt_change(0.456) == "+46%"
    assert units.fmt_change(0) == "±0%" and units.fmt_change(None) == "n/a"
    assert units.change(19, 100) == pytest.approx(-0.81) and units.change(1, 0) is None
    assert units.change(None, 1) is None
    assert units.ratio(8, 2) == 4 and units.ratio(8, 0) is None
    assert units.fmt_ratio(8, 2) == "4×" and units.fmt_ratio(None, 2) == "n/a"


def test_lesson_table_aligns_columns():
    text = lessons.table_text([("weights", "2.21 MiB"), ("logits", "1002 MiB")], header=("component", "bytes"))
    assert text.splitlines() == ["component     bytes",
                                 "---------  --------",
                                 "weights    2.21 MiB",
                                 "logits     1002 MiB"]


@CPU_ONLY
def test_gpu_only_cells_skip_with_one_line(capsys):
    assert lessons.gpu_only("CUDA memory statistics") is False
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no GPU" in out and "CUDA memory statistics" in out
    env = lessons.environment(verbose=False)
    assert env.model == "tiny" and env.stand_in and env.device == "cpu"


def test_a_record_that_cannot_be_shown_is_a_message_not_a_traceback(monkeypatch):
    def boom(*args, **kwargs):
        raise KeyError("theory")

    monkeypatch.setattr(lab_view, "result_table_html", boom)
    lab, _ = make_lab()
    lab.run()
    assert len(lab.history) == 1
    assert "run 1 is in the history but could not be shown: KeyError" in lab.messages[-1]
    assert not lab.run_button.disabled


def test_set_checks_every_value_before_applying_any():
    from labkit.course.lab import lab
    the_lab = lab()
    before = {k: w.value for k, w in the_lab.controls.items()}
    with pytest.raises(ValueError, match="must be an integer"):
        the_lab.set(gradient_checkpointing=not before["gradient_checkpointing"], micro_batch="4")
    assert {k: w.value for k, w in the_lab.controls.items()} == before


@CPU_ONLY
def test_gpu_control_is_arithmetic_without_gpus_and_says_so():
    lab, runner = make_lab()
    assert lab.controls["num_gpus"].description == "GPUs (arithmetic)"
    rec = lab.run(num_gpus=2, micro_batch=2, grad_accum=4)
    assert runner.calls[-1].num_gpus == 1                       # one process measured, not two
    assert rec["config"]["num_gpus"] == 2 and "gpus-arithmetic" in rec["labels"]   # the settings' N, labelled
    said = next(m for m in lab.messages if m.startswith("GPUs is arithmetic"))
    assert "(no GPU)" in said and "2 micro × 4 accum × 2 GPUs = 16" in said


def test_gpu_control_is_real_with_two_gpus_visible():
    from labkit.course.lab_controls import live_controls, precision_choices
    options, _ = precision_choices("cuda", [8, 0])
    real = live_controls(RunConfig(num_gpus=1), True, options, gpus_visible=2)["num_gpus"]
    one = live_controls(RunConfig(num_gpus=1), True, options, gpus_visible=1)["num_gpus"]
    assert (real.description, list(real.options)) == ("GPUs (DDP)", [1, 2])
    assert (one.description, list(one.options)) == ("GPUs (arithmetic)", [1, 2, 4, 8])


def test_switching_the_source_returns_nothing_so_a_cell_shows_one_panel():
    lab, _ = make_lab()
    assert lab.use_reference(GPU_SET) is None and lab.use_live() is None
