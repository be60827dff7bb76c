"""Units: bytes ↔ KiB/MiB/GiB, percent changes and ratios — the kit's only number formatters.

One display rule everywhere (CLI, lab, charts, lessons, checkers): binary units (1 GiB = 1024³ B, what
`torch.cuda` and `nvidia-smi` count in), three significant figures, the largest unit that keeps the number ≥ 1,
and a real minus sign (−) in changes.

Where figures sit side by side (a row of the lab's tables, a chart's axis) they share one unit, so they compare at a
glance: GiB when the largest of them is ≥ 1 GiB, MiB below (never KiB or bytes): `row_unit` picks it, `fmt_in`
writes each figure in it. Memory budgets are always GiB (`fmt_budget`), the unit `memory_budget_gb` is set in.

    fmt_bytes(1_707_012)        → '1.63 MiB'
    fmt_bytes(15_835_660_288)   → '14.7 GiB'
    fmt_change(change(0.19, 1)) → '−81%'
    fmt_ratio(3.98, 1)          → '3.98×'
"""
from __future__ import annotations

import math

KiB = 1024
MiB = 1024 ** 2
GiB = 1024 ** 3
MINUS = "\u2212"                    # '−', not the hyphen '-'
MISSING = "—"                       # a figure that was not measured or cannot be computed
_UNITS = (("GiB", GiB), ("MiB", MiB), ("KiB", KiB))


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def gib(n: float) -> float:
    """Bytes → GiB (15,835,660,288 B → 14.75)."""
    return n / GiB


def mib(n: float) -> float:
    """Bytes → MiB (1,048,576 B → 1.0)."""
    return n / MiB


def fmt_bytes(n) -> str:
    """1,707,012 → '1.63 MiB'; 512 → '512 B'; values ≥ 100 of a unit lose their decimals ('163 MiB');
    None or a non-number → '—'."""
    if not _number(n):
        return MISSING
    for unit, scale in _UNITS:
        if abs(n) >= scale:
            v = n / scale
            return f"{v:.0f} {unit}" if abs(v) >= 100 else f"{v:.3g} {unit}"
    return f"{n:.0f} B"


def fmt_bytes_exact(n) -> str:
    """Every byte, then GiB for scale: 1,707,012 → '1,707,012 B (0.002 GiB)'; below 1 MiB just the bytes.
    For checkers, where a learner compares their own arithmetic digit by digit."""
    if not _number(n):
        return repr(n)
    return f"{n:,.0f} B ({n / GiB:.3f} GiB)" if abs(n) >= MiB else f"{n:,.0f} B"


def pick_unit(largest_bytes) -> tuple[str, int]:
    """The axis unit that keeps the largest bar between 1 and 1024: ('GiB', 1024³), ('MiB', …) or ('KiB', …)."""
    largest = largest_bytes or 0
    for unit, scale in _UNITS:
        if largest >= scale:
            return unit, scale
    return "KiB", KiB


def row_unit(*values) -> tuple[str, int]:
    """The one unit for figures shown side by side: ('GiB', 1024³) when the largest is ≥ 1 GiB, else ('MiB', 1024²).
    None and non-numbers are skipped. row_unit(900 * MiB, 2 * GiB) → GiB; row_unit(300 * KiB, None) → MiB."""
    largest = max((abs(v) for v in values if _number(v)), default=0)
    return ("GiB", GiB) if largest >= GiB else ("MiB", MiB)


def fmt_in(n, unit: str) -> str:
    """Bytes in a given unit ('MiB' or 'GiB'), three significant figures, no decimals from 100 up:
    fmt_in(1_707_012, 'MiB') → '1.63 MiB'; fmt_in(307_200, 'MiB') → '0.293 MiB'; fmt_in(0, 'GiB') → '0 GiB';
    None → '—'."""
    if not _number(n):
        return MISSING
    v = n / {"GiB": GiB, "MiB": MiB, "KiB": KiB, "B": 1}[unit]
    return f"{v:.0f} {unit}" if abs(v) >= 100 or v == 0 else f"{v:.3g} {unit}"


def fmt_row(*values) -> list[str]:
    """Each value in the unit `row_unit` picks for all of them: fmt_row(900 * MiB, 2 * GiB) → ['0.879 GiB',
    '2 GiB']; fmt_row(3 * MiB, None) → ['3 MiB', '—']."""
    unit, _ = row_unit(*values)
    return [fmt_in(v, unit) for v in values]


def fmt_budget(gib_value) -> str:
    """A memory budget, always in GiB (the unit it is set in): 0.02 → '0.02 GiB'; None → 'none'."""
    if gib_value is None:
        return "none"
    return f"{gib_value:g} GiB" if _number(gib_value) else str(gib_value)


def change(new, old) -> float | None:
    """Fractional change new/old − 1 (0.19 vs 1.0 → −0.81); None if either is missing or old is 0."""
    if not _number(new) or not _number(old) or not old:
        return None
    return new / old - 1


def fmt_change(x, digits: int = 0) -> str:
    """−0.81 → '−81%', 0.46 → '+46%', 0 → '±0%'; None → 'n/a'."""
    if not _number(x):
        return "n/a"
    v = round(x * 100, digits)
    if v == 0:
        return "±0%"
    return ("+" if v > 0 else MINUS) + f"{abs(v):.{digits}f}%"


def ratio(new, old) -> float | None:
    """new / old, or None if either is missing or old is 0."""
    if not _number(new) or not _number(old) or not old:
        return None
    return new / old


def fmt_ratio(new, old) -> str:
    """new/old as '3.98×'; 'n/a' if either is missing."""
    r = ratio(new, old)
    return "n/a" if r is None else f"{r:.3g}×"


def fmt_seconds(s) -> str:
    """Seconds in the unit that reads best: 1.84 → '1.84 s', 0.0123 → '12.3 ms', 4.2e-5 → '42 µs'; None → '—'."""
    if not _number(s):
        return MISSING
    if abs(s) >= 1:
        return f"{s:.3g} s"
    if abs(s) >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"
