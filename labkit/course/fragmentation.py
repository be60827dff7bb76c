"""Fragmentation, measured: how much the CUDA caching allocator holds that no tensor uses, step after step.

After each optimizer step the runner records `allocated_after_step` (bytes in live tensors) and
`reserved_after_step` (bytes the caching allocator holds from the driver). The difference

    gap = reserved − allocated        (both read right after the step: bytes held in free, cached blocks)

is memory that is cached, not used. Part of it is the working space the next step will reuse (activations freed
after backward stay cached on purpose). When every batch has the same shape the same blocks serve every step and
the gap stays flat. When shapes change, a request may fit none of the cached blocks; the allocator then reserves
a new segment and keeps the old ones, so the gap climbs: fragmentation (Axolotl rule 3). With
`expandable_segments:True` the allocator grows one segment instead of adding new ones (rule 7).

Three runs of the same config, each in a fresh process (the allocator reads `PYTORCH_CUDA_ALLOC_CONF` once, when
CUDA starts):

    changing lengths           --pad off                   default allocator
    padded to seq_len          --pad on                    default allocator
    changing lengths, expandable  --pad off                PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True

Without padding, `labkit.engine.data.batches` pads each batch only to its longest row, so the width changes from batch to
batch. A CPU has no caching allocator (freed memory goes back to the system allocator): there is no gap to show.
"""
from __future__ import annotations

from labkit import fresh
from labkit.config import RunConfig
from labkit.record import typed
from labkit.units import GiB, MiB

EXPANDABLE = "expandable_segments:True"

# (name, pad every batch to seq_len?, allocator setting in the child's environment)
SCENES = (
    ("changing lengths", False, None),
    ("padded to seq_len", True, None),
    ("changing lengths, expandable_segments", False, EXPANDABLE),
)


def scenes(cfg: RunConfig) -> list[dict]:
    """The three runs for `cfg`: name, config (padding set) and allocator setting."""
    return [{"name": name, "config": cfg.replace(pad_to_seq_len=pad), "alloc_conf": conf}
            for name, pad, conf in SCENES]


def commands(cfg: RunConfig, steps: int, weights: str = "auto") -> list[tuple[str, str]]:
    """(name, the command line with its environment) for each scene, as one would type it."""
    return [(s["name"], fresh.shell_line(fresh.run_command(s["config"], steps, weights=weights), s["alloc_conf"]))
            for s in scenes(cfg)]


def compare(cfg: RunConfig, steps: int = 30, weights: str = "auto", runner=fresh.run) -> dict[str, dict]:
    """Run the three scenes, each in a fresh process; {name: record}. `runner` is `fresh.run` (replaceable for
    tests)."""
    return {s["name"]: runner(s["config"], steps=steps, weights=weights, alloc_conf=s["alloc_conf"])
            for s in scenes(cfg)}


def gap_per_step(record) -> list[int]:
    """reserved − allocated after each optimizer step, in bytes. ValueError when the record has no CUDA figures
    (a CPU run, or a run that failed before its first step)."""
    record = typed(record)
    reserved, allocated = record.measured.reserved_after_step, record.measured.allocated_after_step
    if not reserved or not allocated:
        device = (record.resolved or {}).get("device")
        why = record.error or f"status {record.status}, device {device}"
        raise ValueError(f"no per-step CUDA memory in this record ({why})")
    return [r - a for r, a in zip(reserved, allocated)]


def summary_rows(records: dict[str, dict]) -> list[tuple]:
    """One row per scene: gap after the first and the last step, largest gap, peak reserved, peak allocated."""
    rows = []
    for name, rec in records.items():
        rec = typed(rec)
        if rec.status != "ok":
            rows.append((name, rec.status, "", "", "", ""))
            continue
        gaps, m = gap_per_step(rec), rec.measured
        rows.append((name, _mib(gaps[0]), _mib(gaps[-1]), _mib(max(gaps)), _mib(m.peak_reserved_bytes),
                     _mib(m.peak_allocated_bytes)))
    return rows


SUMMARY_HEADER = ("run", "gap, step 1", "gap, last step", "largest gap", "peak reserved", "peak allocated")


def _mib(n) -> str:
    return "—" if n is None else f"{n / MiB:,.0f} MiB"


def stand_in_note(records: dict[str, dict]) -> str:
    """Where the figures come from, for a chart title: the GPU, and "T4-profile" when a bigger GPU stood in."""
    rec = typed(next(iter(records.values())))
    name = (rec.device or {}).get("name") or "?"
    labels = {lab for r in records.values() for lab in typed(r).labels}
    note = f"measured on {name}"
    if "t4-profile" in labels:
        note += " in T4-profile (capped at 14.75 GiB; not a T4)"
    if "shape-only" in labels:
        note += ", shape-only weights"
    return note


def chart(records: dict[str, dict], path: str | None = None):
    """The gap (MiB) after each optimizer step, one line per scene. Returns the matplotlib Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    for name, rec in records.items():
        if typed(rec).status != "ok":
            continue
        gaps = gap_per_step(rec)
        ax.plot(range(1, len(gaps) + 1), [g / MiB for g in gaps], marker=".", label=name)
    cfg = typed(next(iter(records.values()))).config
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reserved − allocated after the step (MiB)")
    ax.set_title(f"Cached but unused: {cfg['model']}, seq ≤ {cfg['seq_len']}, micro-batch {cfg['micro_batch']}\n"
                 f"{stand_in_note(records)}", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(alpha=0.3)
    if path:
        fig.savefig(path, dpi=120)
    return fig
