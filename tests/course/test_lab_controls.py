"""The lab's controls without a panel: what each offers, and values refused in words before anything changes."""
import re

import ipywidgets as W
import pytest

from labkit.config import RunConfig
from labkit.course.lab_controls import budget_value, checked_values, config_from, live_controls, reference_controls
from labkit.report.reference import load_reference

GPU_SET = "h100-t4-profile-llama-3.2-1b-2026-11-22"
CPU_PRECISIONS = [("auto (fp32)", "auto"), ("fp32", "fp32"), ("bf16", "bf16")]


def test_live_controls_offer_what_the_device_runs():
    base = RunConfig(model="tiny", seq_len=96, micro_batch=20, lora_r=12)
    cpu = live_controls(base, on_gpu=False, precision_options=CPU_PRECISIONS)
    assert list(cpu["seq_len"].options) == [64, 96, 128, 256, 512, 1024]          # the base's own value added
    assert list(cpu["lora_r"].options) == [4, 8, 12, 16, 32, 64]
    assert cpu["micro_batch"].max == 20 and cpu["precision"].value == "auto"      # fp16 is not offered on a CPU
    assert "memory_budget_gb" in cpu
    gpu = live_controls(base, on_gpu=True, precision_options=[("auto (fp16)", "auto"), ("fp16", "fp16")])
    assert 4096 in gpu["seq_len"].options and "memory_budget_gb" not in gpu


def test_config_from_reads_every_control_and_an_empty_budget_as_none():
    controls = live_controls(RunConfig(model="tiny"), on_gpu=False, precision_options=CPU_PRECISIONS)
    controls["micro_batch"].value, controls["memory_budget_gb"].value = 5, ""
    cfg = config_from(controls, RunConfig(model="tiny", seed=7))
    assert (cfg.micro_batch, cfg.memory_budget_gb, cfg.seed, cfg.model) == (5, None, 7, "tiny")
    controls["memory_budget_gb"].value = " 0.25 "
    assert config_from(controls, RunConfig(model="tiny")).memory_budget_gb == 0.25


@pytest.mark.parametrize("typed, said", [("0", "memory_budget_gb must be > 0, got 0.0 (None means no budget)"),
                                         ("-1", "memory_budget_gb must be > 0, got -1.0"),
                                         ("nan", "must be a finite number of GiB, or None for no budget; got nan"),
                                         ("inf", "must be a finite number of GiB"),
                                         ("20 MiB", "memory budget '20 MiB' is not a number of GiB (e.g. 0.02)")])
def test_a_budget_that_is_not_one_is_refused_never_read_as_none(typed, said):
    controls = live_controls(RunConfig(model="tiny"), on_gpu=False, precision_options=CPU_PRECISIONS)
    controls["memory_budget_gb"].value = typed
    with pytest.raises(ValueError, match=re.escape(said)):
        config_from(controls, RunConfig(model="tiny"))
    assert budget_value("", None) is None and budget_value("none") is None and budget_value("0.02") == 0.02


def test_checked_values_refuse_in_words_and_change_nothing():
    controls = live_controls(RunConfig(model="tiny"), on_gpu=False, precision_options=CPU_PRECISIONS)
    before = {k: w.value for k, w in controls.items()}
    with pytest.raises(ValueError, match=r"precision='fp16' is not offered here; choices: \['auto', 'fp32', "
                                         r"'bf16'\] \(fp16 needs a GPU\)"):
        checked_values(controls, {"micro_batch": 3, "precision": "fp16"}, precision_notes=["fp16 needs a GPU"])
    with pytest.raises(ValueError, match="micro_batch must be an integer, got True"):
        checked_values(controls, {"micro_batch": True})
    with pytest.raises(ValueError, match=r"micro_batch=99 is outside 1\.\.16"):
        checked_values(controls, {"micro_batch": 99})
    with pytest.raises(ValueError, match="the lab has no control 'batch_size'; controls: gradient_checkpointing"):
        checked_values(controls, {"batch_size": 32})
    assert {k: w.value for k, w in controls.items()} == before
    (widget, value), = checked_values(controls, {"memory_budget_gb": None})
    assert widget is controls["memory_budget_gb"] and value == ""                   # None: no budget, an empty box
    assert checked_values(controls, {"memory_budget_gb": 0.02})[0][1] == "0.02"
    for bad in (-1, 0, 0.0, float("nan"), float("inf"), "0.5", True):
        with pytest.raises(ValueError, match="memory_budget_gb"):
            checked_values(controls, {"memory_budget_gb": bad})
    with pytest.raises(ValueError, match="gradient_checkpointing must be True or False, got 1"):
        checked_values(controls, {"gradient_checkpointing": 1})                   # 1 is not a switch
    assert {k: w.value for k, w in controls.items()} == before


def test_reference_controls_offer_what_the_set_recorded_from_the_closest_run():
    pool = load_reference(GPU_SET)
    live = live_controls(RunConfig(model="tiny", seq_len=2048, micro_batch=4), on_gpu=True,
                         precision_options=[("auto (fp16)", "auto"), ("fp16", "fp16"), ("fp32", "fp32")])
    controls = reference_controls(pool, live)
    assert list(controls["seq_len"].options) == [512, 2048] and controls["seq_len"].value == 2048
    assert controls["micro_batch"].value == 4 and isinstance(controls["micro_batch"], W.SelectionSlider)
    with pytest.raises(ValueError, match=r"lora_r=8 was not recorded in reference set 'x'; it has \[16\]"):
        checked_values(controls, {"lora_r": 8}, reference_name="x")
    with pytest.raises(ValueError, match="no control 'memory_budget_gb' while replaying reference set 'x'"):
        checked_values(controls, {"memory_budget_gb": 1.0}, reference_name="x")


def test_controls_wrap_instead_of_fixing_a_width_wider_than_the_column():
    """Every control shares a wrapping row: it may shrink to 240 px, grows to fill the row, and is never set wider
    than the panel; labels are 130 px, enough for "grad accumulation" at the widgets' 13 px font."""
    live = live_controls(RunConfig(model="tiny"), on_gpu=False, precision_options=CPU_PRECISIONS)
    replay = reference_controls(load_reference(GPU_SET), live)
    for controls in (live, replay):
        for name, w in controls.items():
            assert (w.layout.width, w.layout.max_width, w.layout.min_width) == ("auto", "100%", "240px"), name
            assert w.style.description_width == "130px", name
            assert f"labkit-{name.replace('_', '-')}" in w._dom_classes
        assert "labkit-checkpointing" in controls["gradient_checkpointing"]._dom_classes


def test_lessons_let_a_returned_chart_show_as_a_picture():
    """A chart a cell returns is a matplotlib Figure drawn without pyplot: IPython shows it as text
    ('<Figure size … with 2 Axes>') unless a PNG formatter is registered, which lessons.environment() does."""
    from IPython.core.interactiveshell import InteractiveShell
    from matplotlib.figure import Figure

    from labkit.course import lessons

    assert lessons.show_figures() is False                          # no IPython here: nothing to do
    shell = InteractiveShell.instance()
    try:
        fig = Figure()
        fig.subplots().plot([1, 2])
        assert "image/png" not in shell.display_formatter.format(fig)[0]
        assert lessons.show_figures() is True
        png = shell.display_formatter.format(fig)[0]["image/png"]
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        InteractiveShell.clear_instance()
