"""The lab's HTML tables made from records: theory beside measured for one run, and a kernel's history."""
import re

from report_records import MiB, checkpointing_pair, make_record

from labkit.report.html import (held_before_text, held_before_warning_html, history_table_html, predicted_step_time,
                                result_table_html)
from labkit.report.text import PEAK, SAVED, STEP_TIME, delta_text


def _row(html, name, cell="th"):
    """The cells after the row name `name` (the result table names its rows in a <th>, the history in a <td>)."""
    row = html.split(f">{name}</{cell}>", 1)[1].split("</tr>", 1)[0]
    return [c.split(">", 1)[1] for c in row.split("</td>") if ">" in c]


def test_result_table_puts_theory_beside_measured_one_unit_per_row():
    off, on = checkpointing_pair()
    html = result_table_html(on)
    assert _row(html, "weights (4-bit + 16-bit)") == ["3 MiB", "3 MiB"]
    assert _row(html, "saved activations") == ["170 MiB", "190 MiB"]               # the total: layers + logits
    assert _row(html, "└ of it: layers") == ["70 MiB", "in the total"]
    assert _row(html, "└ of it: logits (fp32)") == ["100 MiB", "in the total"]
    assert _row(html, "source lesson&#x27;s rule b·s·h·L·2") == ["40 MiB", ""]
    assert _row(html, "peak allocated") == ["1.07 GiB", "n/a on CPU"]              # no CUDA peak on a CPU
    assert _row(html, "step time") == ["—", "1.46 s"]                              # nothing to scale from
    assert "shape-only: random weights" in html and "loss per optimizer step: 6.000, 5.900" in html
    on["measured"]["peak_allocated_bytes"] = 900 * MiB                             # 1100 MiB beside 900 MiB
    assert _row(result_table_html(on), "peak allocated") == ["1.07 GiB", "0.879 GiB"]   # one unit: GiB


def test_the_result_table_names_its_rows_as_the_delta_line_does():
    """Each quantity the delta line compares is a row of the table, under the very same words."""
    off, on = checkpointing_pair()
    for rec in (off, on):
        rec["measured"]["peak_allocated_bytes"] = 1000 * MiB          # so the delta line compares peaks too
    line = delta_text(off, on)
    html = result_table_html(on)
    for name in (SAVED, PEAK, STEP_TIME):
        assert f"{name} " in line and f"<th scope='row'" in html and f">{name}</th>" in html
    assert "saved for backward" not in html and "(layers)" not in html


def test_result_table_is_short_and_stays_on_one_line_per_row():
    off, on = checkpointing_pair()
    html = result_table_html(on)
    assert "<table class='labkit-table-el'" in html
    rows = html.split("<table", 1)[1].split("</table>", 1)[0].split("<tr>")[1:]
    assert all(r.count("<td") + r.count("<th") == 3 for r in rows)                # quantity, theory, measured
    cells = re.findall(r"<t[dh][^>]*>", html.split("</table>")[0])
    assert cells and all("white-space:nowrap" in c for c in cells)
    assert "line-height:1.4" in html                                               # not the widgets' 28 px


def test_step_time_theory_is_the_time_theory_or_a_dash_never_a_flops_ratio():
    """A record without a time theory (a CPU never calibrated) shows "—" and why, not the previous run scaled by
    a FLOPs ratio (that once read 2.62 s beside 0.445 s measured)."""
    off, on = checkpointing_pair()
    t, how = predicted_step_time(on)
    assert t is None and how.startswith("no time theory")
    assert _row(result_table_html(on), "step time") == ["—", "1.46 s"]
    on["theory"]["step_time_at_peak_s"] = 0.25
    assert predicted_step_time(on) == (0.25, "at the GPU's data-sheet peak (a floor: real runs reach "
                                           "a fraction of it)")


def test_an_oom_says_the_theory_column_is_what_it_needed():
    html = result_table_html(make_record(status="oom"))
    assert "out of memory: the theory column is what this run needed" in html
    assert _row(html, "saved activations") == ["1000 MiB", "—"]


def test_memory_held_before_the_run():
    rec = make_record()
    assert held_before_text(rec) == "" and held_before_warning_html(rec) == ""        # older records: nothing
    rec["measured"].update(allocated_before_bytes=None, allocated_before_source=None)
    assert held_before_text(rec) == ""                           # not measured: nothing to say
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
    assert _row(html, "2", "td") == ["gc on · mb 2 · fp32", "ok", "190 MiB", "170 MiB", "1.46 s"]
    assert "<table class='labkit-history-el'" in html
    assert html.endswith("<div style='font-size:85%;color:#555;line-height:1.35'>runs 2, 3: reference · measured on "
                         "x, 2026-01-01</div><div style='font-size:85%;color:#555;line-height:1.35'>runs 1, 2, 3: "
                         "labels shape-only, cpu</div></div>")


def test_history_names_the_settings_that_changed_in_few_short_columns():
    small = make_record(seq_len=256)
    small["lab"] = {"run": 1, "source": "run", "provenance": None}
    big = make_record(seq_len=512, lora_r=8)
    big["lab"] = {"run": 2, "source": "run", "provenance": None}
    big["theory"]["activations"] = 1200 * MiB                                      # 1.27 GiB in theory
    other = make_record(model="llama-3.2-1b", seq_len=256)
    other["lab"] = {"run": 3, "source": "run", "provenance": None}
    html = history_table_html([small, big, other])
    assert _row(html, "1", "td")[0] == "gc on · mb 2 · fp32 · seq 256 · r 16"     # seq and r differ: named
    assert "runs 1, 2: model tiny" in html and "run 3: model llama-3.2-1b" in html  # models in footnotes
    assert _row(html, "2", "td")[2:4] == ["0.977 GiB", "1.27 GiB"]                # one unit for the row
    assert html.count("<th ") == 6
