"""The time theory in words (labkit.report.timing) and where it shows: the lab's result table and notes, the delta
line, the command line's record table. Handmade records with known parts, so every figure is known in advance."""
import pytest
from report_records import checkpointing_pair, make_record, with_time

from labkit.report import timing
from labkit.report.html import REGIME_ROW, predicted_step_time, result_rows
from labkit.report.text import delta_text, format_record


def test_split_regime_and_sum_in_words():
    r = with_time(make_record(grad_accum=4), compute_s=0.0011, memory_s=0.00062, overhead_s=0.0142,
                  optimizer_s=0.0031)
    assert timing.time_split_text(r) == ("compute 1.1 ms · memory 620 µs · overhead 14.2 ms a micro-step "
                                         "→ overhead-bound")
    # 4 × (1.1 + 0.62 + 14.2 ms) + 3.1 ms = 66.78 ms
    assert timing.step_time_text(r) == "4 micro-steps × 15.9 ms + optimizer 3.1 ms = 66.8 ms an optimizer step"
    assert timing.predicted_step_s(r) == pytest.approx(0.06678)
    assert timing.regime_of(r) == "overhead"
    assert timing.constants_text(r) == "constants: calibrated on x86_64, 2026-12-01"


def test_gpu_constants_are_named_by_their_data_sheet_only():
    r = with_time(make_record(grad_accum=1), 0.5, 0.1, 0.2, asynchronous=True,
                  source="data sheet: NVIDIA T4 (F, B); overhead fitted to the H100 (T4-profile) records")
    assert timing.constants_text(r) == "constants: data sheet: NVIDIA T4"
    assert timing.predicted_step_s(r) == pytest.approx(0.6)        # max(0.5 + 0.1, 0.2): the GPU overlaps
    assert timing.regime_of(r) == "compute"


def test_a_record_without_time_theory_says_why():
    r = make_record()
    assert timing.time_theory(r) is None and timing.predicted_step_s(r) is None
    assert timing.time_split_text(r) == "none in this record"
    r["theory"]["time"] = {"total_s": None, "note": "no device constants: run `labkit calibrate` on this machine"}
    assert timing.time_note(r) == "none (no device constants: run `labkit calibrate` on this machine)"


def test_delta_line_compares_three_regime_step_times_and_names_the_regime():
    off, on = checkpointing_pair()           # step FLOPs +50 %, measured +46 %
    with_time(off, 0.1, 0.1, 0.8)            # 4 × 1.0 s = 4.0 s
    with_time(on, 0.15, 0.15, 1.2)           # 4 × 1.5 s = 6.0 s: +50 %
    on["theory"]["time"]["overhead_s"] = 1.0                      # 4 × 1.3 s = 5.2 s: +30 %
    on["theory"]["time"]["total_s"] = 1.3
    on["theory"]["time"]["step_s"] = 5.2
    assert delta_text(off, on) == ("checkpointing on: saved activations −81% (theory −83%), "
                                   "step time +46% (theory +30%, overhead-bound)")


def test_delta_line_falls_back_to_flops_when_a_record_has_no_time_theory():
    off, on = checkpointing_pair()
    with_time(on, 0.15, 0.15, 1.0)           # only one of the two: the FLOPs ratio, named as such
    assert delta_text(off, on).endswith("step time +46% (FLOPs +50%)")


def test_lab_table_shows_the_predicted_step_and_the_regime_and_the_notes_the_split():
    _, on = checkpointing_pair()
    with_time(on, 0.05, 0.05, 0.2, optimizer_s=0.06)         # 4 × 0.3 + 0.06 = 1.26 s
    rows, how = result_rows(on)
    assert ("step time", "1.26 s", "1.46 s") in rows
    assert rows[-1] == (REGIME_ROW, "overhead-bound", "")
    assert how == ("compute 50 ms · memory 50 ms · overhead 200 ms a micro-step → overhead-bound; "
                   "4 micro-steps × 300 ms + optimizer 60 ms = 1.26 s an optimizer step; "
                   "constants: calibrated on x86_64, 2026-12-01")
    assert predicted_step_time(on)[0] == pytest.approx(1.26)
    old_rows, _ = result_rows(checkpointing_pair()[1])
    assert REGIME_ROW not in [r[0] for r in old_rows]        # an older record: no regime row


def test_command_line_record_puts_the_predicted_step_beside_the_measured():
    _, on = checkpointing_pair()
    with_time(on, 0.05, 0.05, 0.2, optimizer_s=0.06)
    text = format_record(on)
    assert "step time                           1.26 s        1.46 s      +16%" in text   # 1.46 / 1.26 − 1
    assert "time theory: compute 50 ms · memory 50 ms · overhead 200 ms a micro-step → overhead-bound;" in text


def test_micro_batch_table_and_gain_survive_an_oom_and_a_missing_time_theory():
    """Lesson 03's table of step time against micro-batch: the largest micro-batch's timed run may run out of
    memory (no times), and a GPU without a data sheet whose calibration failed has no time theory."""
    runs = [with_time(make_record(micro_batch=mb, seq_len=128, grad_accum=1), 0.01 * mb, 0.0, 0.05)
            for mb in (1, 2, 4)]
    for r, tps in zip(runs, (1000.0, 1800.0, 3000.0)):
        r["measured"]["tokens_per_s"] = tps
    runs.append(make_record("oom", micro_batch=8, seq_len=128, grad_accum=1))
    rows = timing.micro_batch_rows(runs)
    assert [r[0] for r in rows] == [1, 2, 4]                         # the OOM has no row
    assert rows[0][2] == "60 ms" and rows[0][4] == f"{128 / 0.06:,.0f}" and rows[0][5] == "overhead-bound"
    mb, measured, theory = timing.micro_batch_gain(runs)
    assert mb == 4 and measured == pytest.approx(3.0)
    assert theory == pytest.approx((4 / 0.09) / (1 / 0.06))
    for r in runs:                                                   # no time theory anywhere
        r["theory"].pop("time", None)
    assert [row[2] for row in timing.micro_batch_rows(runs)] == ["—"] * 3
    assert timing.micro_batch_gain(runs)[2] is None
    assert timing.micro_batch_gain(runs[:1] + runs[3:]) is None     # one run finished: no gain to show
