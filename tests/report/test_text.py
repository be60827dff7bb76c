"""Words and text tables from records: the delta line, config labels, the command line's tables, the history CSV.
Bytes, changes and ratios are written the way labkit.units writes them everywhere (3 significant figures, −)."""
import copy
import csv
import io

from report_records import MiB, checkpointing_pair, make_record

from labkit.report.text import (CSV_COLUMNS, config_label, delta_text, describe_changes, format_record, format_search,
                                format_sweep, history_csv, history_row, sweep_labels)


def test_delta_text_checkpointing():
    off, on = checkpointing_pair()
    assert delta_text(off, on) == ("checkpointing on: saved activations −81% (theory −83%), "
                                   "step time +46% (FLOPs +50%)")


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
                                "peak allocated +50% (theory +50%), step time +90% (FLOPs +100%)")


def test_delta_text_oom_and_missing():
    a = make_record(micro_batch=4)
    b = make_record(status="oom", micro_batch=8)
    b["theory"]["activations"] = 1900 * MiB
    b["theory"]["step_flops"] = 2e12
    assert delta_text(a, b) == ("micro-batch 4 → 8: saved activations not measured (theory +100%), "
                                "step time not measured (FLOPs +100%) [this run: OOM, no measurement]")
    assert delta_text(None, a) == "first run: nothing to compare with yet"
    assert delta_text(a, None) == "no run yet"
    assert describe_changes(a, copy.deepcopy(a)) == "same config"


def test_config_and_sweep_labels():
    off, on = checkpointing_pair()
    assert config_label(on) == "gc on · mb 2 · fp32"
    assert sweep_labels([off, make_record(gradient_checkpointing=False, lora_r=8)]) == [
        "gc off · mb 2 · fp32 · r 16", "gc off · mb 2 · fp32 · r 8"]


def test_delta_text_says_no_change_as_plus_minus_zero():
    a = make_record(micro_batch=2)
    b = make_record(micro_batch=2, lora_r=8)
    assert delta_text(a, b) == "LoRA r 16 → 8: saved activations ±0% (theory ±0%), step time ±0% (FLOPs ±0%)"


def test_describe_changes_shows_what_auto_became_and_the_device():
    a = make_record(precision="auto")
    b = make_record(precision="fp32")
    b["resolved"]["device"] = "cuda"
    assert describe_changes(a, b) == "precision auto (fp32) → fp32, device cpu → cuda"


def test_describe_changes_says_what_an_unset_budget_or_eval_batch_means():
    a, b = make_record(), make_record()
    a["config"].update(memory_budget_gb=0.02, eval_micro_batch=4)
    b["config"].update(memory_budget_gb=None, eval_micro_batch=None)
    assert describe_changes(a, b) == "eval micro-batch 4 → the micro-batch, memory budget (GiB) 0.02 → none"
    assert describe_changes(b, a) == "eval micro-batch the micro-batch → 4, memory budget (GiB) none → 0.02"


def _measured_on_record():
    off, on = checkpointing_pair()
    on["measured"]["peak_allocated_bytes"] = 1200 * MiB
    on["measured"].update(allocated_before_bytes=300 * MiB, allocated_before_source="live-tensors")
    return off, on


def test_format_record_puts_theory_beside_measured():
    _, on = _measured_on_record()
    lines = format_record(on).splitlines()
    assert lines[0] == "tiny · seq 256 · 2 micro × 4 accum × 1 GPU · gc on · fp32 · nf4 · r 16 · paged_adamw_8bit"
    assert lines[1:3] == ["status: ok · device: cpu (x86_64)", "labels: shape-only, cpu"]
    assert lines[4:] == [
        "component                           theory      measured     error",
        "weights                              3 MiB         3 MiB       ±0%",
        "lora                               512 KiB       512 KiB       ±0%",
        "gradients                          512 KiB       512 KiB       ±0%",
        "optimizer                          256 KiB       256 KiB       ±0%",
        "saved activations + logits         170 MiB       190 MiB      +12%",
        "  of which logits                  100 MiB    (in saved)          ",
        "simple rule b·s·h·L·2               40 MiB                        ",
        "peak allocated                    1.07 GiB      1.17 GiB       +9%",
        "peak reserved                                          —          ",
        "held before the run                              300 MiB            (live tensors; included in the peak)",
        "step time                                —        1.46 s          ",
        "tokens/s                                          2048.0          ",
        "time theory: none in this record",
        "FLOPs per optimizer step: 1.5e+12",
        "loss per optimizer step: 6.0000, 5.9000"]


def test_format_record_of_a_failed_run_names_the_error():
    oom = make_record(status="oom", micro_batch=8)
    oom["warnings"] = ["handmade advice"]
    text = format_record(oom)
    assert "status: oom (CUDA out of memory (handmade)) · device: cpu (x86_64)" in text
    assert "saved activations + logits        1000 MiB             —          " in text
    assert text.endswith("warning: handmade advice")


def test_format_sweep_keeps_failed_runs_and_compares_times_with_the_first():
    off, on = _measured_on_record()
    oom = make_record(status="oom", gradient_checkpointing=False, micro_batch=8, labels=("simulated-oom", "cpu"))
    assert format_sweep([off, on, oom]).splitlines() == [
        "config                 status   saved meas.  saved theory   error  step time vs first",
        "gc off · mb 2 · fp32       ok      1000 MiB      1000 MiB     ±0%        1 s       1×",
        "gc on · mb 2 · fp32        ok       190 MiB       170 MiB    +12%     1.46 s    1.46×",
        "gc off · mb 8 · fp32      oom             —      1000 MiB                  —        —",
        "labels: cpu, shape-only, simulated-oom"]
    on["measured"]["saved_activation_bytes"] = 150 * MiB
    assert "150 MiB       170 MiB    \u221212%" in format_sweep([off, on])


def test_format_search_lists_every_try():
    found = {"best": 4, "labels": ["cpu", "simulated-oom"], "trail": [
        {"micro_batch": 1, "status": "ok", "saved_activation_bytes": 5 * MiB, "peak_allocated_bytes": None},
        {"micro_batch": 8, "status": "oom", "saved_activation_bytes": None, "peak_allocated_bytes": None}]}
    assert format_search(found).splitlines() == [
        "largest micro-batch that fits: 4   [cpu, simulated-oom]",
        "  micro-batch    1  ok   saved activations      5 MiB  peak allocated          —",
        "  micro-batch    8  oom  saved activations          —  peak allocated          —"]
    assert format_search({"best": 2, "labels": [], "trail": []}) == "largest micro-batch that fits: 2   [measured]"


def test_history_rows_and_csv():
    off, on = checkpointing_pair()
    on["lab"] = {"run": 2, "source": "reference", "provenance": "reference · measured on x, 2026-01-01"}
    row = history_row(on)
    assert list(row) == CSV_COLUMNS
    assert (row["run"], row["source"], row["provenance"], row["effective_batch"], row["precision"]) == \
        (2, "reference", "reference · measured on x, 2026-01-01", 8, "fp32")
    assert row["saved_activations_theory_bytes"] == 170 * MiB and row["labels"] == "shape-only cpu"
    assert history_row(off)["source"] == "run" and history_row(off)["provenance"] == ""
    rows = list(csv.DictReader(io.StringIO(history_csv([off, on]))))
    assert list(rows[0]) == CSV_COLUMNS and [r["gradient_checkpointing"] for r in rows] == ["False", "True"]
    assert rows[1]["saved_activations_measured_bytes"] == str(190 * MiB)
    assert history_csv([]) == ",".join(CSV_COLUMNS) + "\n"
