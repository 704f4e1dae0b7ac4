"""Write the student copies of the notebooks: solutions out, exercises empty, checkers kept.

    python scripts/make_student.py [--out student] [--force] [notebooks ...]

Cell tags (CONTRIBUTING.md, "Exercises"): ``solution`` cells (instructor only) are dropped;
``exercise`` cells (the question, the function stub) and ``answer`` cells (what a
predict-then-run question reveals) keep their source but lose their outputs, so a student
predicts before seeing; the cells that call ``check_<name>(...)`` lose their outputs too.
Every other cell is copied unchanged, outputs included. ``notebooks/solutions/`` is not copied.

The instructor notebooks are checked on the way: an ``exercise`` code cell must be a stub (it
raises NotImplementedError), and no copied cell may import from ``solutions``; a notebook that
breaks either rule is refused, naming the cell. The output folder must be empty or missing
unless ``--force`` (then only the notebooks written here are replaced).
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
_SOLUTION_IMPORT = re.compile(r"^\s*(from\s+solutions(\.|\s)|import\s+solutions\b)", re.M)
_CHECK_CALL = re.compile(r"\bcheck_\w+\s*\(")


class NotebookError(ValueError):
    """An instructor notebook that would leak a solution or hand out a non-stub."""


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _tags(cell) -> set:
    return set(cell.get("metadata", {}).get("tags", []))


def _clear(cell) -> None:
    if cell["cell_type"] == "code":
        cell["outputs"], cell["execution_count"] = [], None


def student_copy(nb: dict, name: str = "notebook") -> dict:
    """The student version of one notebook (a new dict; ``nb`` is left as it is)."""
    out = copy.deepcopy(nb)
    cells = []
    for i, cell in enumerate(out["cells"]):
        tags, src = _tags(cell), _source(cell)
        if "solution" in tags:
            continue
        if cell["cell_type"] == "code" and _SOLUTION_IMPORT.search(src):
            raise NotebookError(f"{name}, cell {i}: imports from solutions but is not tagged 'solution'")
        if cell["cell_type"] == "code" and "exercise" in tags and "NotImplementedError" not in src:
            raise NotebookError(f"{name}, cell {i}: an 'exercise' code cell must be a stub that raises "
                                f"NotImplementedError (is a solution written in it?)")
        if tags & {"exercise", "answer"} or (cell["cell_type"] == "code" and _CHECK_CALL.search(src)):
            _clear(cell)
        cells.append(cell)
    out["cells"] = cells
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/make_student.py", description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb")
    parser.add_argument("--out", type=Path, default=ROOT / "student", help="output folder (default: student/)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty output folder")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb"))
    if not paths:
        parser.error(f"no notebooks found in {NOTEBOOKS}")
    if args.out.exists() and any(args.out.iterdir()) and not args.force:
        print(f"{args.out} is not empty: nothing written (pass --force, or FORCE=1 with make, to replace "
              f"the notebooks in it)", file=sys.stderr)
        return 2
    copies = {}
    for path in paths:  # check every notebook before writing any
        try:
            copies[path.name] = student_copy(json.loads(path.read_text()), path.name)
        except NotebookError as err:
            print(f"refused: {err}", file=sys.stderr)
            return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name, nb in copies.items():
        (args.out / name).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(copies)} student notebooks to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
