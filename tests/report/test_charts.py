"""Charts render from handmade records (schema as in the contract), each bar saying whether it is theory or measured."""
import pytest
from matplotlib.figure import Figure
from report_records import MiB, checkpointing_pair, make_record

from labkit.report import charts
from labkit.report.charts import memory_components_chart, sweep_chart
from labkit.units import pick_unit


def test_axis_units_keep_the_largest_bar_between_1_and_1024():
    assert pick_unit(3 * 2 ** 30) == ("GiB", 2 ** 30) and pick_unit(5 * MiB) == ("MiB", MiB)
    assert pick_unit(None) == ("KiB", 1024)


def test_charts_draw_figures_and_leave_words_to_report_text():
    assert not hasattr(charts, "delta_text") and not hasattr(charts, "format_record")


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
    assert {"±0% vs theory", "+12% vs theory"} <= set(texts)      # measured 190 MiB vs theory 170 MiB
    ticks = [t.get_text() for t in ax_mem.get_xticklabels()]
    assert ticks == ["gc off · mb 2 · fp32", "gc on · mb 2 · fp32", "gc off · mb 8 · fp32"]
    assert "simulated-oom" in ax_mem.get_title()
    # measured time ratio of the checkpointed run is 1.46×, theory 1.5×
    heights = sorted(round(p.get_height(), 2) for p in ax_time.patches)
    assert 1.46 in heights and 1.5 in heights


def test_sweep_chart_rejects_empty():
    with pytest.raises(ValueError):
        sweep_chart([])
