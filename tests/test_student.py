"""`make student`: solutions never reach the student copies, stubs and checkers do."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_student", ROOT / "scripts" / "make_student.py")
make_student = importlib.util.module_from_spec(_spec)
sys.modules["make_student"] = make_student
_spec.loader.exec_module(make_student)


def _cell(kind, source, tags=(), outputs=None):
    cell = {"cell_type": kind, "metadata": {"tags": list(tags)} if tags else {}, "source": source}
    if kind == "code":
        cell["outputs"] = outputs if outputs is not None else [{"output_type": "stream", "name": "stdout",
                                                                "text": "shown\n"}]
        cell["execution_count"] = 1
    return cell


def _nb(*cells):
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


STUB = 'def f(x):\n    """Return x + 1."""\n    raise NotImplementedError("your code here")\n'


def test_solutions_dropped_exercises_cleared_rest_kept():
    nb = _nb(_cell("code", "x = 1"),
             _cell("markdown", "**Exercise 1 (implement)** write f", ["exercise"]),
             _cell("code", STUB, ["exercise"]),
             _cell("code", "check_f(f)"),
             _cell("code", "from solutions.nb00_baseline import f\ncheck_f(f)", ["solution"]),
             _cell("markdown", "**Exercise 2 (predict)** what is 2 + 2?", ["exercise"]),
             _cell("code", "print(2 + 2)", ["answer"]),
             _cell("markdown", "The answer is 4.", ["solution"]))
    out = make_student.student_copy(nb)
    sources = [make_student._source(c) for c in out["cells"]]
    assert not any("solutions" in s or "answer is 4" in s for s in sources)
    assert len(out["cells"]) == 6
    assert out["cells"][0]["outputs"]  # an ordinary cell keeps its output
    for i in (2, 3, 5):  # the stub, the checker call, the answer: outputs cleared
        assert out["cells"][i]["outputs"] == [] and out["cells"][i]["execution_count"] is None
    assert len(nb["cells"]) == 8 and nb["cells"][3]["outputs"]  # the input is left alone


@pytest.mark.parametrize("cell, message", [
    (_cell("code", "def f(x):\n    return x + 1\n", ["exercise"]), "stub"),
    (_cell("code", "from solutions.nb01_attacks import f"), "not tagged 'solution'"),
    (_cell("code", "import solutions"), "not tagged 'solution'"),
])
def test_leaking_notebook_refused(cell, message):
    with pytest.raises(make_student.NotebookError, match=message):
        make_student.student_copy(_nb(_cell("code", "x = 1"), cell))


def test_real_notebooks_and_output_folder(tmp_path, capsys):
    out = tmp_path / "student"
    assert make_student.main(["--out", str(out)]) == 0
    written = sorted(p.name for p in out.glob("*.ipynb"))
    assert written == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    for path in out.glob("*.ipynb"):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            assert "solution" not in cell.get("metadata", {}).get("tags", []), path.name
            assert "from solutions" not in make_student._source(cell), path.name
    assert make_student.main(["--out", str(out)]) == 2  # not empty: nothing overwritten
    assert "not empty" in capsys.readouterr().err
    assert make_student.main(["--out", str(out), "--force"]) == 0


def test_bad_notebook_writes_nothing(tmp_path):
    bad = tmp_path / "bad.ipynb"
    bad.write_text(json.dumps(_nb(_cell("code", "from solutions.x import f"))))
    out = tmp_path / "student"
    assert make_student.main([str(bad), "--out", str(out)]) == 1
    assert not out.exists()
