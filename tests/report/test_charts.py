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


def _mb_record(mb, measured_s, status="ok"):
    """A CPU run at micro-batch `mb`: work grows with the tokens (10 ms per sequence), overhead stays at 40 ms."""
    from report_records import with_time
    r = with_time(make_record(status=status, micro_batch=mb, grad_accum=1), 0.01 * mb, 0.0, 0.04)
    if status == "ok":
        r["measured"]["step_time_s"] = measured_s
    return r


def test_micro_batch_time_chart_draws_measured_theory_and_the_knee(tmp_path):
    runs = [_mb_record(1, 0.06), _mb_record(2, 0.07), _mb_record(4, 0.09), _mb_record(8, None, status="oom")]
    curve = [_mb_record(mb, None) for mb in range(1, 9)]
    fig = charts.micro_batch_time_chart(runs, curve, knee=4, path=tmp_path / "mb.png")
    assert _png_ok(tmp_path / "mb.png")
    ax_time, ax_rate = fig.axes
    lines = {line.get_label(): line for line in ax_time.get_lines()}
    assert list(lines["measured"].get_xdata()) == [1, 2, 4]                       # the OOM run has no point
    assert list(lines["theory: step time"].get_ydata()) == pytest.approx([0.01 * mb + 0.04 for mb in range(1, 9)])
    assert list(lines["theory: overhead (ops × s/op)"].get_ydata()) == pytest.approx([0.04] * 8)
    rate = {line.get_label(): line for line in ax_rate.get_lines()}
    assert list(rate["measured"].get_ydata()) == pytest.approx([256 / 0.06, 512 / 0.07, 1024 / 0.09])
    texts = [t.get_text().strip() for ax in fig.axes for t in ax.texts]
    assert texts.count("knee ≈ 4") == 2 and "OOM" in texts
    assert "overhead-bound" in ax_time.get_title()                              # 10 ms work < 40 ms overhead at 1
    assert [t.get_text() for t in ax_time.get_xticklabels()] == ["1", "2", "4", "8"]
    with pytest.raises(ValueError):
        charts.micro_batch_time_chart([])
