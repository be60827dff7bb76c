"""Charts render from handmade records (schema as in the contract), and the delta line says the right numbers."""
import copy

import pytest
from matplotlib.figure import Figure

from labkit.report.charts import (config_label, delta_text, describe_changes, memory_components_chart,
                                  sweep_chart, sweep_labels)
from labkit.units import pick_unit
from labkit.config import RunConfig

MiB = 2 ** 20


def make_record(status="ok", labels=("shape-only", "cpu"), **config):
    cfg = RunConfig(**{"precision": "fp32", **config})
    r = {
        "config": cfg.to_dict(), "resolved": {"precision": "fp32", "device": "cpu"}, "model_source": "shape-only",
        "labels": list(labels),
        "theory": {"weights": 3 * MiB, "lora": MiB // 2, "gradients": MiB // 2, "optimizer": MiB // 4,
                   "activations": 900 * MiB, "logits": 100 * MiB, "peak": 1100 * MiB,
                   "simple_rule_activations": 40 * MiB, "step_flops": 1e12},
        "measured": {"saved_activation_bytes": 1000 * MiB, "peak_allocated_bytes": None, "peak_reserved_bytes": None,
                     "step_time_s": 1.0, "tokens_per_s": 2048.0, "loss": [6.0, 5.9],
                     "resident": {"quantized_weights": 2 * MiB, "unquantized_weights": MiB, "lora": MiB // 2,
                                  "gradients": MiB // 2, "optimizer": MiB // 4}},
        "status": status, "error": None,
        "device": {"type": "cpu", "name": "x86_64", "capability": None, "total_memory": 16 * 2 ** 30},
    }
    if status != "ok":
        r["measured"] = {k: None for k in r["measured"]}
        r["error"] = "CUDA out of memory (handmade)"
    return r


def checkpointing_pair():
    off = make_record(gradient_checkpointing=False)
    on = make_record(gradient_checkpointing=True)
    on["theory"]["activations"] = 70 * MiB       # theory saved: 1000 → 170 MiB = −83%
    on["theory"]["step_flops"] = 1.5e12          # one extra forward: +50%
    on["measured"]["saved_activation_bytes"] = 190 * MiB   # −81%
    on["measured"]["step_time_s"] = 1.46                   # +46%
    return off, on


def test_delta_text_checkpointing():
    off, on = checkpointing_pair()
    assert delta_text(off, on) == ("checkpointing on: saved activations −81% (theory −83%), "
                                   "step time +46% (theory +50%)")


def test_delta_text_names_every_change_and_peak_when_measured():
    a = make_record(micro_batch=2, seq_len=256)
    b = make_record(micro_batch=4, seq_len=512, lora_targets=("q_proj", "v_proj"))
    for r, peak, theory_peak in ((a, 300, 320), (b, 450, 480)):
        r["measured"]["peak_allocated_bytes"] = peak * MiB
        r["theory"]["peak"] = theory_peak * MiB
    b["measured"]["saved_activation_bytes"] = 2000 * MiB   # +100%
    b["theory"]["activations"] = 1900 * MiB                 # (1900 + 100) / 1000 → +100%
    b["measured"]["step_time_s"] = 1.9
    b["theory"]["step_flops"] = 2e12
    assert delta_text(a, b) == ("seq_len 256 → 512, micro-batch 2 → 4, LoRA targets q_proj,k_proj,v_proj,o_proj → "
                                "q_proj,v_proj: saved activations +100% (theory +100%), "
                                "peak allocated +50% (theory +50%), step time +90% (theory +100%)")


def test_delta_text_oom_and_missing():
    a = make_record(micro_batch=4)
    b = make_record(status="oom", micro_batch=8)
    b["theory"]["activations"] = 1900 * MiB
    b["theory"]["step_flops"] = 2e12
    assert delta_text(a, b) == ("micro-batch 4 → 8: saved activations not measured (theory +100%), "
                                "step time not measured (theory +100%) [this run: OOM, no measurement]")
    assert delta_text(None, a) == "first run: nothing to compare with yet"
    assert delta_text(a, None) == "no run yet"
    assert describe_changes(a, copy.deepcopy(a)) == "same config"


def test_labels_and_units():
    off, on = checkpointing_pair()
    assert config_label(on) == "gc on · mb 2 · fp32"
    assert sweep_labels([off, make_record(gradient_checkpointing=False, lora_r=8)]) == [
        "gc off · mb 2 · fp32 · r 16", "gc off · mb 2 · fp32 · r 8"]
    assert pick_unit(3 * 2 ** 30) == ("GiB", 2 ** 30) and pick_unit(5 * MiB) == ("MiB", MiB)
    assert pick_unit(None) == ("KiB", 1024)


def _png_ok(path):
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_memory_components_chart_png(tmp_path):
    off, on = checkpointing_pair()
    fig = memory_components_chart(on, save=tmp_path / "one.png")
    assert isinstance(fig, Figure) and _png_ok(tmp_path / "one.png")
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"theory", "measured", "simple rule b·s·h·L·2 (theory)"} <= set(legend)
    assert "shape-only" in ax.get_title() and "cpu" in ax.get_title()
    assert ax.get_ylabel() == "MiB"
    # several records side by side, including a theory-only (estimate) record
    estimate = make_record(labels=("shape-only",))
    estimate["measured"] = {k: None for k in estimate["measured"]}
    fig = memory_components_chart([off, on, estimate], save=tmp_path / "three.png")
    assert len(fig.axes) == 3 and _png_ok(tmp_path / "three.png")


def test_sweep_chart_keeps_failed_runs(tmp_path):
    off, on = checkpointing_pair()
    oom = make_record(status="oom", gradient_checkpointing=False, micro_batch=8, labels=("simulated-oom", "cpu"))
    fig = sweep_chart([off, on, oom], path=tmp_path / "sweep.png")
    assert _png_ok(tmp_path / "sweep.png")
    ax_mem, ax_time = fig.axes
    texts = [t.get_text() for t in ax_mem.texts]
    assert "OOM" in texts                                         # the failed run is marked, not dropped
    ticks = [t.get_text() for t in ax_mem.get_xticklabels()]
    assert ticks == ["gc off · mb 2 · fp32", "gc on · mb 2 · fp32", "gc off · mb 8 · fp32"]
    assert "simulated-oom" in ax_mem.get_title()
    # measured time ratio of the checkpointed run is 1.46×, theory 1.5×
    heights = sorted(round(p.get_height(), 2) for p in ax_time.patches)
    assert 1.46 in heights and 1.5 in heights


def test_sweep_chart_rejects_empty():
    with pytest.raises(ValueError):
        sweep_chart([])
