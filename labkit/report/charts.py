"""Figures made from run records (matplotlib): where the memory goes, theory beside measured, and a sweep's
activation memory and step time. The words on them (config labels, which figure is which) come from
`labkit.report.text`; the axis units from `labkit.units`.

Figures are built on `matplotlib.figure.Figure` (no pyplot state, works on any backend, including Agg in CI) and
returned, so a notebook cell shows them by ending with the figure. Pass `save=`/`path=` to also write a PNG.

Records are read by attribute (`labkit.record.typed`, so their JSON form works too): record.theory.<component> and
record.measured.resident.<component> in bytes; record.measured.saved_activation_bytes is what autograd kept for
backward, which the theory calls activations + logits.
"""
from __future__ import annotations

import io
import textwrap

from matplotlib.figure import Figure

from labkit.record import typed
from labkit.report.text import COMPONENTS, component_values, config_label, status_of, sweep_labels, theory_saved
from labkit.report.timing import REGIME_WORDS, predicted_step_s, time_theory
from labkit.units import change, fmt_change, pick_unit, ratio, row_unit

THEORY_COLOR, MEASURED_COLOR, RULE_COLOR, BAD_COLOR = "#9ecae1", "#e6550d", "#bdbdbd", "#b2182b"
# font sizes of the memory chart, in points. The lab shows it 6.4 in wide, scaled to a ~600 px column: one point is
# then 600 / (6.4 × 72) = 1.3 px, so 8 pt bar labels are 10.4 px on screen and 9 pt ticks 11.7 px
TICK_PT, LABEL_PT, BAR_PT, TITLE_PT = 9, 9, 8, 10


def wrapped(text: str, width_in: float, fontsize: float) -> str:
    """`text` broken into lines that fit `width_in` inches at `fontsize` points (a character is ~0.55 em wide),
    so a long title wraps instead of running off the figure. Never breaks inside a word or at a hyphen."""
    per_line = max(20, int(width_in * 72 / (fontsize * 0.55)))
    return textwrap.fill(text, per_line, break_on_hyphens=False, break_long_words=False)


def _title_suffix(records) -> str:
    """Stand-in labels ("shape-only", "cpu", "simulated-oom", "t4-profile", "reference") go in the title."""
    labels = []
    for r in records:
        for label in typed(r).labels:
            if label not in labels:
                labels.append(label)
    return f"  [{' · '.join(labels)}]" if labels else ""


# ---- chart 1: where the memory goes ----------------------------------------------------------------------------------
def _draw_components(ax, record):
    record = typed(record)
    values = component_values(record)
    rule = record.theory.simple_rule_activations
    unit, scale = row_unit(*[v for pair in values.values() for v in pair], rule)     # one axis: GiB or MiB
    width = 0.38                     # 0.35 in at the lab's 6.4 in: room for a "0.438" label at 8 pt (0.28 in)
    xs = range(len(COMPONENTS))
    legend_done = set()
    measured_any = any(m is not None for _, m in values.values())

    def not_measured(x):   # only worth saying per bar when the run measured something else
        if measured_any:
            ax.text(x, 0, "not\nmeasured", ha="center", va="bottom", fontsize=BAR_PT - 1, color="gray")

    def bar(x, value, label, **style):
        shown = label if label not in legend_done else None
        legend_done.add(label)
        rect = ax.bar(x, value / scale, width, label=shown, **style)
        ax.bar_label(rect, fmt="%.3g", fontsize=BAR_PT, padding=1)

    for x, name in zip(xs, COMPONENTS):
        theory, measured = values[name]
        if name == "saved activations":   # theory stacks layer activations under the logits; the simple rule beside
            acts, logits = record.theory.activations, record.theory.logits
            if acts is not None and logits is not None:
                ax.bar(x - width, acts / scale, width, color=THEORY_COLOR, edgecolor="black", linewidth=0.5,
                       label=None if "theory" in legend_done else "theory")
                legend_done.add("theory")
                rect = ax.bar(x - width, logits / scale, width, bottom=acts / scale, color=THEORY_COLOR,
                              edgecolor="black", linewidth=0.5, hatch="..",
                              label=None if "theory: logits part" in legend_done else "theory: logits part")
                legend_done.add("theory: logits part")
                ax.bar_label(rect, labels=[f"{(acts + logits) / scale:.3g}"], fontsize=BAR_PT, padding=1)
            elif theory is not None:
                bar(x - width, theory, "theory", color=THEORY_COLOR, edgecolor="black", linewidth=0.5)
            if measured is not None:
                bar(x, measured, "measured", color=MEASURED_COLOR)
            else:
                not_measured(x)
            if rule is not None:
                bar(x + width, rule, "simple rule b·s·h·L·2 (theory)", color=RULE_COLOR, edgecolor="black",
                    linewidth=0.5, hatch="//")
            continue
        offset = width / 2 if name != "logits" else 0
        if theory is not None:
            bar(x - offset, theory, "theory", color=THEORY_COLOR, edgecolor="black", linewidth=0.5)
        if name == "logits":   # autograd does not tell logits apart from the rest: they are measured inside "saved"
            continue
        if measured is not None:
            bar(x + offset, measured, "measured", color=MEASURED_COLOR)
        else:
            not_measured(x + offset)

    ticks = [c if c != "logits" else "logits\n(measured in saved)" for c in COMPONENTS]
    ax.set_xticks(list(xs), ticks, rotation=20, ha="right", rotation_mode="anchor", fontsize=TICK_PT)
    ax.tick_params(axis="y", labelsize=TICK_PT)
    ax.set_ylabel(unit, fontsize=LABEL_PT)
    ax.legend(fontsize=BAR_PT)
    ax.margins(y=0.12)                      # room above the tallest bar for its label
    status = status_of(record)
    head = config_label(record) + ("" if status == "ok" else f" —\u00a0{status.upper()}")
    if not measured_any:
        head += " — theory only, nothing measured"
    columns = ax.get_subplotspec().get_gridspec().ncols if ax.get_subplotspec() else 1
    ax.set_title(wrapped(head + _title_suffix([record]), ax.figure.get_figwidth() / columns, TITLE_PT),
                 fontsize=TITLE_PT)
    return ax


def memory_components_chart(record_or_records, ax=None, save=None):
    """Bars per memory component, theory beside measured. One record → one panel (drawn into `ax` if given);
    a list → one panel per record, side by side. Returns the figure."""
    records = record_or_records if isinstance(record_or_records, (list, tuple)) else [record_or_records]
    if not records:
        raise ValueError("memory_components_chart needs at least one record")
    if ax is not None:
        if len(records) != 1:
            raise ValueError("pass ax only with a single record")
        _draw_components(ax, records[0])
        fig = ax.figure
    else:
        fig = Figure(figsize=(7.5 * len(records), 4.5), layout="constrained")
        axes = fig.subplots(1, len(records), squeeze=False)[0]
        for a, r in zip(axes, records):
            _draw_components(a, r)
        fig.suptitle("Where the memory goes: theory vs measured", fontsize=10)
    if save:
        fig.savefig(save, dpi=110)
    return fig


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """A figure as PNG bytes: what a notebook shows for a chart a cell returns (`lessons.show_figures`)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def memory_chart_png(record, title: str | None = None, width_in: float = 6.4, height_in: float = 4.4,
                     dpi: int = 150) -> tuple[Figure, bytes]:
    """The lab's memory chart of one record: (figure, PNG bytes). Drawn 6.4 × 4.4 in at 150 dpi (960 × 660 px), so
    shown at the full width of a 600 px column it is 600 × 4.4 / 6.4 = 412 px tall with its text ≥ 10 px (see
    TICK_PT); `title` goes above it, wrapped to the width."""
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    _draw_components(fig.subplots(), record)
    if title:
        fig.suptitle(wrapped(title, width_in, TITLE_PT), fontsize=TITLE_PT)
    return fig, figure_png(fig, dpi)


# ---- chart 2: a sweep ------------------------------------------------------------------------------------------------
def sweep_chart(records, path=None):
    """(a) measured saved activations beside the theory, per config; (b) step time relative to the first
    measured config, beside the theory's (the three-regime step time; the FLOPs ratio for older records). Failed runs stay on the chart, marked OOM / error."""
    records = [typed(r) for r in records]
    if not records:
        raise ValueError("sweep_chart needs at least one record")
    labels = sweep_labels(records)
    xs = list(range(len(records)))
    width = 0.4
    fig = Figure(figsize=(max(7.0, 1.25 * len(records) + 3), 7.5), layout="constrained")
    ax_mem, ax_time = fig.subplots(2, 1)

    # (a) saved activations: theory | measured (+ the error in % above the measured bar)
    theory = [theory_saved(r) for r in records]
    measured = [r.measured.saved_activation_bytes if status_of(r) == "ok" else None for r in records]
    unit, scale = pick_unit(max([v for v in theory + measured if v is not None] + [0]))
    for x, r, t, m in zip(xs, records, theory, measured):
        if t is not None:
            ax_mem.bar(x - width / 2, t / scale, width, color=THEORY_COLOR, edgecolor="black", linewidth=0.5,
                       label="theory (activations + logits)" if x == next(i for i, v in enumerate(theory)
                                                                       if v is not None) else None)
        if status_of(r) != "ok":
            ax_mem.text(x + width / 2, 0, status_of(r).upper(), ha="center", va="bottom", color=BAD_COLOR,
                        fontweight="bold", fontsize=9, rotation=90)
        elif m is not None:
            first = next(i for i, v in enumerate(measured) if v is not None)
            rect = ax_mem.bar(x + width / 2, m / scale, width, color=MEASURED_COLOR,
                              label="measured" if x == first else None)
            note = f"{fmt_change(change(m, t))} vs theory" if t else ""
            ax_mem.bar_label(rect, labels=[note], fontsize=7, padding=1)
        else:
            ax_mem.text(x + width / 2, 0, "not measured", ha="center", va="bottom", fontsize=7, color="gray",
                        rotation=90)
    ax_mem.set_ylabel(f"saved for backward ({unit})")
    ax_mem.set_title("(a) activation memory per config: measured vs theory" + _title_suffix(records), fontsize=9)

    # (b) step time relative to the baseline = the first run with a measured step time
    times = [r.measured.step_time_s if status_of(r) == "ok" else None for r in records]
    base_i = next((i for i, t in enumerate(times) if t), None)
    # the theory: the three-regime seconds of a step where every record has them, else the FLOPs (older records)
    three_regime = all(predicted_step_s(r) is not None for r in records)
    flops = [predicted_step_s(r) if three_regime else r.theory.step_flops for r in records]
    if base_i is not None:
        base_flops = flops[base_i]
        ax_time.axhline(1.0, color="black", linewidth=0.6)
        for x, r, t, f in zip(xs, records, times, flops):
            tr = ratio(f, base_flops)
            if tr is not None:
                ax_time.bar(x - width / 2, tr, width, color=THEORY_COLOR, edgecolor="black", linewidth=0.5,
                            label=("theory (compute · memory · overhead)" if three_regime
                                   else "theory (step FLOPs ratio)") if x == base_i else None)
            if status_of(r) != "ok":
                ax_time.text(x + width / 2, 0, status_of(r).upper(), ha="center", va="bottom", color=BAD_COLOR,
                             fontweight="bold", fontsize=9, rotation=90)
            elif t:
                rect = ax_time.bar(x + width / 2, t / times[base_i], width, color=MEASURED_COLOR,
                                   label="measured" if x == base_i else None)
                ax_time.bar_label(rect, fmt="%.2f×", fontsize=7, padding=1)
        ax_time.set_title(f"(b) step time relative to '{labels[base_i]}' "
                          f"({times[base_i]:.3g} s measured)", fontsize=9)
    else:
        ax_time.text(0.5, 0.5, "no run measured a step time", ha="center", va="center", transform=ax_time.transAxes)
        ax_time.set_title("(b) step time relative to the baseline", fontsize=9)
    ax_time.set_ylabel("× baseline")

    for a in (ax_mem, ax_time):
        a.set_xticks(xs, labels, rotation=25, ha="right", fontsize=8)
        a.set_xlim(-0.7, len(records) - 0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    if path:
        fig.savefig(path, dpi=110)
    return fig


# ---- chart 3: time against micro-batch, and the knee -----------------------------------------------------------------
def micro_batch_time_chart(records, theory_records=None, knee: int | None = None, path=None):
    """(a) seconds per optimizer step against the micro-batch: measured points, the theory's total, and its two
    sides — the work (compute + memory) and the overhead (ops × seconds per op); (b) tokens per second, measured
    and theory. `theory_records` (e.g. `labkit.estimate` at more micro-batches) draw the theory's curves; by default
    the runs' own theory. `knee`: the micro-batch where the work reaches the overhead (`theory.overhead_knee`),
    marked on both panels. Records are runs of one config that differ only in the micro-batch."""
    records = [r for r in map(typed, records) if r.config.get("micro_batch")]
    if not records:
        raise ValueError("micro_batch_time_chart needs at least one record")
    curve = sorted((r for r in map(typed, theory_records or records) if time_theory(r)),
                   key=lambda r: r.config["micro_batch"])
    fig = Figure(figsize=(9.0, 4.0), layout="constrained")
    ax_time, ax_rate = fig.subplots(1, 2)

    def tokens(r):       # tokens of one optimizer step: micro-batch × sequence × accumulation (padding included)
        c = r.config
        return c["micro_batch"] * c["seq_len"] * c["grad_accum"]

    if curve:
        mbs = [r.config["micro_batch"] for r in curve]
        t = [time_theory(r) for r in curve]
        accum = [r.config["grad_accum"] for r in curve]
        ax_time.plot(mbs, [x.step_s for x in t], color="#3182bd", linewidth=2, label="theory: step time")
        ax_time.plot(mbs, [(x.compute_s + x.memory_s) * a for x, a in zip(t, accum)], color="#3182bd",
                     linestyle="--", linewidth=1, label="theory: work (compute + memory)")
        ax_time.plot(mbs, [x.overhead_s * a for x, a in zip(t, accum)], color="#756bb1", linestyle=":",
                     linewidth=1.5, label="theory: overhead (ops × s/op)")
        ax_rate.plot(mbs, [tokens(r) / x.step_s for r, x in zip(curve, t)], color="#3182bd", linewidth=2,
                     label="theory")
    ok = [r for r in records if status_of(r) == "ok" and r.measured.step_time_s]
    if ok:
        mbs = [r.config["micro_batch"] for r in ok]
        times = [r.measured.step_time_s for r in ok]
        ax_time.plot(mbs, times, "o", color=MEASURED_COLOR, label="measured")
        ax_rate.plot(mbs, [tokens(r) / s for r, s in zip(ok, times)], "o-", color=MEASURED_COLOR,
                     label="measured")
    for r in records:
        if status_of(r) != "ok":
            for ax in (ax_time, ax_rate):
                ax.axvline(r.config["micro_batch"], color=BAD_COLOR, linewidth=0.8)
                ax.text(r.config["micro_batch"], 0.02, f" {status_of(r).upper()}", color=BAD_COLOR,
                        transform=ax.get_xaxis_transform(), fontsize=LABEL_PT - 1)
    if knee and knee > min(r.config["micro_batch"] for r in records + curve):   # a knee at the left edge is none
        for ax in (ax_time, ax_rate):
            ax.axvline(knee, color="gray", linestyle="-.", linewidth=1)
            ax.text(knee, 0.97, f" knee ≈ {knee}", color="gray", va="top", transform=ax.get_xaxis_transform(),
                    fontsize=LABEL_PT - 1)
    first = next((time_theory(r) for r in curve), None)
    regime = f" (theory at {curve[0].config['micro_batch']}: {REGIME_WORDS.get(first.regime, '')})" \
        if first else ""
    ax_time.set_title("(a) seconds per optimizer step" + regime, fontsize=TITLE_PT)
    if _title_suffix(records):
        fig.suptitle(_title_suffix(records).strip(), fontsize=TITLE_PT - 1, color="gray")
    ax_rate.set_title("(b) tokens per second (padding included)", fontsize=TITLE_PT)
    ax_time.set_ylabel("seconds", fontsize=LABEL_PT)
    ax_rate.set_ylabel("tokens / s", fontsize=LABEL_PT)
    for ax in (ax_time, ax_rate):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("micro-batch", fontsize=LABEL_PT)
        top = max(r.config["micro_batch"] for r in records + curve)
        ticks = sorted({r.config["micro_batch"] for r in records} | {2 ** k for k in range(top.bit_length())
                                                                         if 2 ** k <= top})
        ax.set_xticks(ticks, [str(x) for x in ticks])
        ax.tick_params(labelsize=TICK_PT)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=BAR_PT)
    if path:
        fig.savefig(path, dpi=110)
    return fig
