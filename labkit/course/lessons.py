"""Small helpers the lesson notebooks share, so that each notebook shows the code worth learning and no plumbing.

    from labkit.course import lessons
    env = lessons.environment()          # device, default model, one line saying which
    lessons.claim("activations left with checkpointing", measured=0.08, low=0.30, high=0.40, as_percent=True)
    lessons.table([("weights", "2.21 MiB")], header=("component", "bytes"))
    if lessons.gpu_only("CUDA memory statistics"): ...

Every comparison sentence is computed from the numbers passed in, so a lesson's text stays true whatever the
measurement turns out to be.
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass

from labkit.course.lab import fmt_bytes  # noqa: F401  (re-exported for the notebooks)

MINUS = "\u2212"

# the notices a lesson would otherwise print on every run; none of them says anything about the learner's code
_NOISE = [
    r".*bitsandbytes was compiled without GPU support.*",
    r".*Paged optimizers are not supported on CPU.*",
    r".*`gradient_checkpointing_enable` is deprecated.*",
    r".*`is_gradient_checkpointing` is deprecated.*",
    r".*Jupyter is migrating its paths.*",
    r".*torch.utils.checkpoint: the use_reentrant parameter.*",
]


def quiet() -> None:
    """Hide the known notices and the weight-loading progress bars (errors still show)."""
    for pattern in _NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 — quietness is a nicety, never a failure
        pass


@dataclass(frozen=True)
class Environment:
    device: str            # "cuda" or "cpu"
    on_gpu: bool
    model: str             # the preset lessons use by default here
    device_name: str
    capability: tuple | None
    in_colab: bool

    @property
    def stand_in(self) -> bool:
        """True when the numbers come from the tiny CPU stand-in rather than the real model on a GPU."""
        return not self.on_gpu

    def where(self) -> str:
        if self.on_gpu:
            return f"the {self.model} model on {self.device_name}"
        return "the tiny stand-in model on the CPU"


def environment(verbose: bool = True) -> Environment:
    """Which device the lessons run on and which model they use: 'llama-3.2-1b' on a GPU, 'tiny' on the CPU."""
    quiet()
    import torch
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        props = torch.cuda.get_device_properties(0)
        env = Environment("cuda", True, "llama-3.2-1b", props.name, (props.major, props.minor),
                          "google.colab" in sys.modules)
    else:
        env = Environment("cpu", False, "tiny", "CPU", None, "google.colab" in sys.modules)
    if verbose:
        if on_gpu:
            print(f"GPU: {env.device_name} (compute capability {'.'.join(map(str, env.capability))}) → lessons use "
                  f"the '{env.model}' model.")
        else:
            print("No GPU: lessons run on the CPU with the 'tiny' stand-in model (4 layers, random weights). Its "
                  "memory figures are real measurements of that stand-in, labelled 'cpu' and 'shape-only'.")
    return env


def gpu_only(what: str) -> bool:
    """True on a GPU. On a CPU, print one line saying what is skipped and return False."""
    import torch
    if torch.cuda.is_available():
        return True
    print(f"Skipped on this machine (no GPU): {what}.")
    return False


def change(new, old) -> float | None:
    """Fractional change new/old − 1 (0.19 vs 1.0 → −0.81); None if either is missing or old is 0."""
    if new is None or old is None or not old:
        return None
    return new / old - 1


def pct(x, digits: int = 0) -> str:
    """−0.81 → '−81%', 0.46 → '+46%' (a real minus sign); None → 'n/a'."""
    if x is None:
        return "n/a"
    v = round(x * 100, digits)
    if v == 0:
        return "±0%"
    body = f"{abs(v):.{digits}f}%"
    return ("+" if v > 0 else MINUS) + body


def ratio(new, old) -> str:
    """new/old as '3.98×'; 'n/a' if either is missing."""
    if new is None or old is None or not old:
        return "n/a"
    return f"{new / old:.3g}×"


def _number(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def verdict(what: str, measured, low=None, high=None, as_percent: bool = False, stand_in: bool | None = None,
            unit: str = "", source: str = "the seed's", basis: str = "measured") -> tuple[str, bool | None]:
    """One sentence comparing a measured (or computed) value with the seed's range [low, high] (either end may be
    None: "at least low" / "at most high").

    'checkpointing, activations left: measured 8% vs the seed's 30%–40%: the claim does not hold here
    (below the range) — on the tiny stand-in model on the CPU; ...'. Returns (sentence, holds); holds is None
    when nothing was measured. `basis` names where the value comes from: "measured" (the default), or "theory" /
    "counted" for values that are computed, so that no computed number is ever called measured.
    """
    holds = None
    if measured is None:
        text = f"{what}: not measured here, so the seed's claim cannot be checked on this machine."
    else:
        fmt = (lambda v: f"{v * 100:.0f}%".replace("-", MINUS)) if as_percent else (lambda v: f"{_number(v)}{unit}")
        lo = float("-inf") if low is None else low
        hi = float("inf") if high is None else high
        lo, hi = min(lo, hi), max(lo, hi)
        holds = lo <= measured <= hi
        word = "holds" if holds else "does not hold"
        side = "" if holds else (" (below the range)" if measured < lo else " (above the range)")
        if high is None:
            seed = f"≥ {fmt(lo)}"
        elif low is None:
            seed = f"≤ {fmt(hi)}"
        else:
            seed = fmt(lo) if lo == hi else f"{fmt(lo)}–{fmt(hi)}"
        noun = "claim" if "seed" in source else "prediction"
        text = f"{what}: {basis} {fmt(measured)} vs {source} {seed}: the {noun} {word} here{side}"
        if stand_in is None:
            stand_in = _on_cpu() if basis == "measured" else False
        if stand_in:
            text += " — on the tiny stand-in model on the CPU; a real model on a GPU can differ"
        text += "."
    return text, holds


def claim(what: str, measured, low=None, high=None, as_percent: bool = False, stand_in: bool | None = None,
          unit: str = "", source: str = "the seed's", basis: str = "measured") -> None:
    """Print the sentence of `verdict` (same arguments)."""
    print(verdict(what, measured, low, high, as_percent, stand_in, unit, source, basis)[0])


def _on_cpu() -> bool:
    import torch
    return not torch.cuda.is_available()


def table_text(rows, header=None) -> str:
    """A plain-text table (monospace) from a list of rows: first column left-aligned, the others right-aligned."""
    rows = [[str(c) for c in r] for r in rows]
    if header:
        rows = [[str(h) for h in header]] + rows
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if header and n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table(rows, header=None) -> None:
    """Print `table_text(rows, header)`."""
    print(table_text(rows, header))
