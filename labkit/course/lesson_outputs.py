"""What a lesson printed, read for what a learner must never see: a number that is not one ("nan"), Python's
`None` where a figure or a word belongs, error text (a traceback, `SomethingError:`), and anything on stderr (red
in a notebook). Used on executed lessons: the tests' T4 rehearsal on the CPU and `benchmarks/gpu_check.py` on a GPU.

    problems(nbformat.read("executed/04_mixed_precision.ipynb", 4))
    → ['cell 12: None — "peak: None MiB"']              (nothing: [])

Lines a lesson prints on purpose are allowed by name in INTENDED, each with why.
"""
from __future__ import annotations

import re

# (pattern, what it is); "nan" in any case as a word, "None" as Python writes it (a learner's "none" is a word)
SUSPECT = [                                             # the first that matches names a line
    (re.compile(r"Traceback \(most recent call last\)"), "traceback"),
    (re.compile(r"\b[A-Z]\w*(Error|Exception)\b: "), "error text"),
    (re.compile(r"\bnan\b", re.IGNORECASE), "nan"),
    (re.compile(r"\bNone\b"), "None"),
]

# Lines the lessons print on purpose that a pattern above would flag, each a regular expression over one line
INTENDED = [
    # lesson 04: a loss scaler at work (an fp16 overflow gives inf/nan gradients and the step is skipped)
    re.compile(r"inf/nan|nan/inf|inf or nan", re.IGNORECASE),
    # lesson 00: `labkit doctor` says why the model hub is not reachable (offline is not a problem for the lessons)
    re.compile(r"Hugging Face Hub reachable: no — "),
    # lesson 03: the message a config whose effective batch does not divide gets (the lesson shows it)
    re.compile(r"^ValueError: effective batch \d+ is not a multiple of"),
    # lesson 04: the message asking for bf16 on a T4 gets (the lesson shows it)
    re.compile(r"^bf16 on a T4 → ValueError: bf16 is not native"),
    # lesson 06: the error pure-fp16 weights give the GradScaler (the lesson shows it)
    re.compile(r"^ValueError: Attempting to unscale FP16 gradients\.$"),
]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _texts(output) -> list[tuple[str, bool]]:
    """(text, is_stderr) of one output: a stream, an error, or a result's plain text / HTML."""
    kind = output.get("output_type")
    if kind == "stream":
        return [(output.get("text", ""), output.get("name") == "stderr")]
    if kind == "error":
        return [("\n".join(output.get("traceback", [])) or f"{output.get('ename')}: {output.get('evalue')}", True)]
    data = output.get("data", {})
    return [(data[k], False) for k in ("text/plain", "text/html", "text/markdown") if isinstance(data.get(k), str)]


def problems(nb) -> list[str]:
    """One line per thing a learner must not read in this executed notebook's outputs, with the cell's number
    (counted from 1 over all cells) and the line; [] when it reads clean."""
    found = []
    for number, cell in enumerate(nb.cells, start=1):
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs", []):
            for text, red in _texts(output):
                text = _ANSI.sub("", text if isinstance(text, str) else "".join(text))
                if red and text.strip():
                    found.append(f"cell {number}: stderr — {text.strip().splitlines()[0][:160]!r}")
                    continue
                for line in text.splitlines():
                    if any(p.search(line) for p in INTENDED):
                        continue
                    for pattern, what in SUSPECT:
                        if pattern.search(line):
                            found.append(f"cell {number}: {what} — {line.strip()[:160]!r}")
                            break
    return found
