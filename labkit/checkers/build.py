"""Generate the exercise notebooks from the solution notebooks: `solutions/` is the single source.

    python -m labkit.checkers.build solutions exercises          # write exercises/*.ipynb
    python -m labkit.checkers.build solutions exercises --check  # exit 1 if exercises/ is out of date

In a solution notebook the answer sits between nbgrader's delimiters, in code or in Markdown:

    def plan_accumulation(effective_batch, micro_batch, num_gpus=1):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

For each notebook in the source folder the generator
- replaces every delimited block with a stub at the block's indentation (code: `raise NotImplementedError(...)`,
  Markdown: an answer prompt), keeping whatever comes before and after the block;
- tags every code cell that had a block, and every cell tagged `uses-solution` (a cell that calls the learner's
  code), `raises-exception`, so a notebook runner (nbval, Jupyter's Run All) expects the NotImplementedError the
  stub raises;
- clears outputs and execution counts, except in check cells (`# NBVAL_CHECK_OUTPUT` and a `check_…(` call from
  labkit.checkers), which get the fixed "not implemented yet" line the checker prints for a stub, pinned like
  every check;
- writes JSON the way Jupyter does (indent 1, sorted keys, trailing newline), so a rebuild is byte-identical.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
CODE_STUB = ("# YOUR CODE HERE", 'raise NotImplementedError("write your solution here, then run the check below")')
TEXT_STUB = ("**Your answer:** _replace this line with your answer._",)
USES_SOLUTION_TAG = "uses-solution"
RAISES_TAG = "raises-exception"
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
CHECK_CALL = re.compile(r"\b(check_[A-Za-z0-9_]+)\s*\(")
GENERATED_KEY = "labkit_generated_from"


def _source_text(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def stub_source(text: str, cell_type: str = "code") -> tuple[str, int, bool]:
    """Replace each BEGIN/END SOLUTION block of `text`. Returns (new text, number of blocks, whether a code block
    sat at the top level, i.e. the stub raises as soon as the cell runs). ValueError for unbalanced delimiters."""
    lines = text.split("\n")
    out: list[str] = []
    blocks, top_level, inside, indent = 0, False, False, ""
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"line {number}: {BEGIN} inside another solution block")
            inside, blocks = True, blocks + 1
            indent = line[: len(line) - len(line.lstrip())]
            top_level = top_level or indent == ""
            stub = CODE_STUB if cell_type == "code" else TEXT_STUB
            out.extend(indent + s for s in stub)
        elif stripped == END:
            if not inside:
                raise ValueError(f"line {number}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN} is never closed")
    return "\n".join(out), blocks, top_level and cell_type == "code"


def _split_source(text: str) -> list[str]:
    """Jupyter's on-disk form: a list of lines, each but the last ending in a newline."""
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def _not_implemented_output(text: str):
    """The output a check cell shows when run on the stub: one line per check call, or None if not a check cell."""
    if CHECK_MARK not in text:
        return None
    from labkit.checkers import TITLES, not_implemented_line

    names = CHECK_CALL.findall(text)
    if not names:
        return None
    unknown = [n for n in names if n not in TITLES]
    if unknown:
        raise ValueError(f"check cell calls {', '.join(unknown)}, which labkit.checkers does not define")
    return "".join(not_implemented_line(TITLES[n]) + "\n" for n in names)


def exercise_notebook(nb: dict, source_name: str = "") -> dict:
    """The exercise version of one solution notebook (a new dict; `nb` is left alone)."""
    nb = copy.deepcopy(nb)
    counter = 0
    for index, cell in enumerate(nb.get("cells", [])):
        kind = cell.get("cell_type")
        if kind not in ("code", "markdown", "raw"):
            continue
        try:
            text, blocks, top_level = stub_source(_source_text(cell), kind)
        except ValueError as e:
            raise ValueError(f"{source_name} cell {index}: {e}") from None
        cell["source"] = _split_source(text)
        if kind != "code":
            continue
        counter += 1
        meta = cell.setdefault("metadata", {})
        tags = list(meta.get("tags", []))
        if blocks or USES_SOLUTION_TAG in tags:
            if RAISES_TAG not in tags:
                tags.append(RAISES_TAG)
        if tags:
            meta["tags"] = tags
        for transient in ("execution", "collapsed", "scrolled"):
            meta.pop(transient, None)
        pinned = _not_implemented_output(text)
        if pinned is not None:
            cell["outputs"] = [{"name": "stdout", "output_type": "stream", "text": _split_source(pinned)}]
            cell["execution_count"] = counter
        else:
            cell["outputs"] = []
            cell["execution_count"] = None
    meta = nb.setdefault("metadata", {})
    meta.pop("widgets", None)
    meta.pop("execution", None)
    if source_name:
        meta[GENERATED_KEY] = source_name
    return nb


def dumps(nb: dict) -> str:
    """Jupyter's own formatting: indent 1, sorted keys, real UTF-8, a trailing newline."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def _plan(src_dir: Path, dst_dir: Path) -> tuple[dict[Path, str], list[Path]]:
    """What the destination should hold: {path: text}, and generated notebooks there that have no source."""
    if not src_dir.is_dir():
        raise ValueError(f"source folder {src_dir} does not exist")
    src, dst = src_dir.resolve(), dst_dir.resolve()
    if dst == src or src in dst.parents:
        where = "the source folder" if dst == src else f"inside the source folder {src_dir}"
        raise ValueError(f"the destination {dst_dir} is {where}: the exercises would overwrite or sit among the "
                         "solutions; write them to a folder of their own (e.g. exercises)")
    sources = sorted(p for p in src_dir.glob("*.ipynb") if p.is_file())
    if not sources:
        raise ValueError(f"no notebooks in {src_dir}")
    wanted = {}
    for path in sources:
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as e:      # RecursionError: nested deeper than Python's stack
            raise ValueError(f"cannot read {path}: {type(e).__name__}: {e}") from None
        label = f"{src_dir.name}/{path.name}"
        wanted[dst_dir / path.name] = dumps(exercise_notebook(nb, label))
    stale = []
    if dst_dir.is_dir():
        for p in sorted(dst_dir.glob("*.ipynb")):
            if p in wanted:
                continue
            if _generated(p):
                stale.append(p)
    return wanted, stale


def _generated(path: Path) -> bool:
    """Whether `path` is an exercise notebook this kit wrote (its metadata names the solution it came from)."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError, AttributeError, RecursionError):
        return False
    return isinstance(meta, dict) and GENERATED_KEY in meta


def build(src_dir="solutions", dst_dir="exercises") -> list[Path]:
    """Write the exercise notebooks; remove generated ones whose source is gone. Returns the paths written."""
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    wanted, stale = _plan(src_dir, dst_dir)
    foreign = [p.name for p in wanted if p.exists() and not _generated(p)]
    if foreign:        # a learner's own notebook, or a solution: never overwritten
        raise ValueError(f"{dst_dir} already holds {', '.join(foreign)}, which this kit did not generate; nothing "
                         "was written. Move them or choose another destination")
    dst_dir.mkdir(parents=True, exist_ok=True)
    for path, text in wanted.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    for path in stale:
        path.unlink()
    return list(wanted)


def out_of_date(src_dir="solutions", dst_dir="exercises") -> list[str]:
    """Paths in dst_dir that a build would change, add or remove (empty: up to date)."""
    wanted, stale = _plan(Path(src_dir), Path(dst_dir))
    changed = [str(p) for p, text in wanted.items()
               if not p.exists() or p.read_text(encoding="utf-8") != text]
    return changed + [str(p) for p in stale]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.checkers.build",
                                     description="generate exercise notebooks (stubs) from solution notebooks")
    parser.add_argument("src", nargs="?", default="solutions", help="folder of solution notebooks")
    parser.add_argument("dst", nargs="?", default="exercises", help="folder to write the exercises to")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if dst is out of date")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = out_of_date(args.src, args.dst)
            if stale:
                print(f"out of date: {', '.join(stale)} — run: python -m labkit.checkers.build "
                      f"{args.src} {args.dst}", file=sys.stderr)
                return 1
            print(f"{args.dst} is up to date with {args.src}")
            return 0
        written = build(args.src, args.dst)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} exercise notebook(s) to {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
