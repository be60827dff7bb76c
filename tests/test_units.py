"""The unit rule for figures shown side by side: one unit per row, GiB from 1 GiB up, MiB below; budgets in GiB."""
import math

from labkit.units import GiB, KiB, MiB, fmt_budget, fmt_in, fmt_row, row_unit


def test_a_row_takes_the_unit_of_its_largest_figure():
    assert row_unit(900 * MiB, 2 * GiB) == ("GiB", GiB)
    assert row_unit(GiB - 1, None) == ("MiB", MiB)              # just under 1 GiB: MiB
    assert row_unit(300 * KiB) == ("MiB", MiB)                  # never KiB
    assert row_unit(None, "n/a", math.nan) == ("MiB", MiB)      # nothing to size by
    assert row_unit(-3 * GiB) == ("GiB", GiB)                   # a drop of 3 GiB is GiB-sized


def test_figures_in_one_unit_keep_three_significant_figures():
    assert fmt_row(900 * MiB, 1100 * MiB) == ["0.879 GiB", "1.07 GiB"]
    assert fmt_row(3 * MiB, None) == ["3 MiB", "—"]
    assert fmt_in(300 * KiB, "MiB") == "0.293 MiB"
    assert fmt_in(1000 * MiB, "MiB") == "1000 MiB" and fmt_in(163.4 * MiB, "MiB") == "163 MiB"
    assert fmt_in(0, "GiB") == "0 GiB" and fmt_in(None, "MiB") == "—" and fmt_in(True, "MiB") == "—"


def test_budgets_are_always_gib():
    assert fmt_budget(0.02) == "0.02 GiB" and fmt_budget(14.75) == "14.75 GiB"
    assert fmt_budget(None) == "none"
