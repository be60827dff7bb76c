"""The lab's HTML tables made from records: theory beside measured for one run, and a kernel's history."""
from report_records import MiB, checkpointing_pair, make_record

from labkit.report.html import (held_before_text, held_before_warning_html, history_table_html, predicted_step_time,
                                result_table_html)


def _row(html, name):
    """The cells of the table row that starts with `name`."""
    row = html.split(f">{name}</td>", 1)[1].split("</tr>", 1)[0]
    return [cell.split(">", 1)[1] for cell in row.split("</td>") if ">" in cell]


def test_result_table_puts_theory_rule_and_measured_side_by_side():
    off, on = checkpointing_pair()
    html = result_table_html(on)
    assert _row(html, "weights (4-bit + 16-bit parts)") == ["3 MiB", "", "3 MiB"]
    assert _row(html, "saved activations (layers)") == ["70 MiB", "40 MiB", "inside the total"]
    assert _row(html, "saved for backward, total") == ["170 MiB", "", "190 MiB"]
    assert _row(html, "peak allocated") == ["1.07 GiB", "", "n/a on CPU"]          # no CUDA peak on a CPU
    assert _row(html, "step time") == ["—", "", "1.46 s"]                           # nothing to scale from
    assert "shape-only: random weights" in html and "loss per optimizer step: 6.000, 5.900" in html


def test_step_time_is_predicted_from_the_previous_run_on_the_same_device():
    off, on = checkpointing_pair()
    assert predicted_step_time(on, off) == (1.5, "previous run × the theory's FLOPs ratio")     # 1 s × 1.5
    assert _row(result_table_html(on, off), "step time") == ["1.5 s", "", "1.46 s"]
    elsewhere = make_record()
    elsewhere["device"] = {"type": "cuda", "name": "Tesla T4"}
    assert predicted_step_time(on, elsewhere)[0] is None
    on["theory"]["step_time_at_peak_s"] = 0.25
    assert predicted_step_time(on, elsewhere) == (0.25, "at the GPU's data-sheet peak (a floor: real runs reach "
                                                        "a fraction of it)")


def test_an_oom_says_the_theory_column_is_what_it_needed():
    html = result_table_html(make_record(status="oom"))
    assert "out of memory: the theory column is what this run needed" in html
    assert _row(html, "saved for backward, total") == ["1000 MiB", "", "—"]


def test_memory_held_before_the_run():
    rec = make_record()
    assert held_before_text(rec) == "" and held_before_warning_html(rec) == ""        # older records: nothing
    rec["measured"].update(allocated_before_bytes=None, allocated_before_source=None)
    assert held_before_text(rec) == "already in memory when the run started: not measured"
    rec["measured"].update(allocated_before_bytes=300 * MiB, allocated_before_source="live-tensors")
    assert held_before_text(rec) == ("already in memory when the run started: 300 MiB "
                                     "(live tensors found in this process)")
    rec["labels"].append("memory-held-before")
    assert "memory held before the run: more than 256 MiB was already in memory" in held_before_warning_html(rec)
    rec["warnings"] = ["300 MiB were already in memory when this run started"]
    assert "memory held before the run: 300 MiB were already in memory" in result_table_html(rec)


def test_history_table_with_provenance_footnotes():
    assert "no runs yet" in history_table_html([])
    off, on = checkpointing_pair()
    off["lab"] = {"run": 1, "source": "run", "provenance": None}
    on["lab"] = {"run": 2, "source": "reference", "provenance": "reference · measured on x, 2026-01-01"}
    again = dict(on, lab={"run": 3, "source": "reference", "provenance": "reference · measured on x, 2026-01-01"})
    html = history_table_html([off, on, again])
    assert html.count("<tr>") == 4                                                    # header + 3 entries
    assert _row(html, "2") == ["reference", "on", "fp32", "2 × 4 × 1 = 8", "256", "16", "ok", "190 MiB", "170 MiB",
                               "40 MiB", "1.46 s", "shape-only cpu"]
    assert html.endswith("<div style='font-size:85%;color:#555'>runs 2, 3: reference · measured on x, "
                         "2026-01-01</div>")
