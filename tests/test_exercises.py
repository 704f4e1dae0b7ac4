"""The notebooks' lesson conventions (CONTRIBUTING.md, "Exercises"), checked on the notebook files:
an algorithm cell checked against the library, 2-4 numbered exercises at the end, every implement
exercise with a stub, a checker call, a reference solution and a tested checker."""
import ast
import importlib
import json
import re
import sys
from pathlib import Path

import pytest
import torch

import tutorial_lib.exercises as exercises

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
HEADER = re.compile(r"^\*\*Exercise (\d+) \((predict|implement|explore|prove)\)\*\*")
sys.path.insert(0, str(ROOT / "notebooks"))


def _cells(path):
    for cell in json.loads(path.read_text())["cells"]:
        src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        yield cell["cell_type"], set(cell.get("metadata", {}).get("tags", [])), src


def _exercises(path):
    """[(number, kind, [cells after the header up to the next header])]"""
    out = []
    for kind, tags, src in _cells(path):
        m = HEADER.match(src) if kind == "markdown" and "exercise" in tags else None
        if m:
            out.append((int(m.group(1)), m.group(2), []))
        elif out:
            out[-1][2].append((kind, tags, src))
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_numbered_at_the_end(path):
    found = _exercises(path)
    assert 2 <= len(found) <= 4, f"{path.name}: {len(found)} exercises, expected 2-4"
    assert [n for n, _, _ in found] == list(range(1, len(found) + 1)), f"{path.name}: numbering"
    cells = list(_cells(path))
    first = next(i for i, (k, t, s) in enumerate(cells) if k == "markdown" and HEADER.match(s) and "exercise" in t)
    assert any(k == "markdown" and s.lstrip().startswith("## Exercises") for k, _, s in cells[:first]), \
        f"{path.name}: no '## Exercises' heading before the first exercise"
    assert not any(k == "markdown" and s.lstrip().startswith("## ") for k, _, s in cells[first:]), \
        f"{path.name}: a section follows the exercises (they belong at the end)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_exercise_has_its_parts(path):
    for number, kind, body in _exercises(path):
        code = [(t, s) for k, t, s in body if k == "code"]
        where = f"{path.name}, exercise {number} ({kind})"
        if kind == "predict":
            assert code and "answer" in code[0][0], \
                f"{where}: the first code cell after the question must be its 'answer' (no cell between them)"
        elif kind in ("explore", "prove"):
            assert any(k == "markdown" and "solution" in t for k, t, _ in body), \
                f"{where}: no 'solution' markdown with the expected answer"
        else:
            stubs = [s for t, s in code if "exercise" in t]
            assert len(stubs) == 1 and "NotImplementedError" in stubs[0], f"{where}: one stub cell expected"
            name = next(n.name for n in ast.parse(stubs[0]).body if isinstance(n, ast.FunctionDef))
            assert any(f"check_{name}({name})" in s for t, s in code if not t), f"{where}: no check_{name} call"
            assert f"check_{name}" in exercises.__all__, f"{where}: tutorial_lib.exercises has no check_{name}"
            assert any("solution" in t and re.search(rf"from solutions\.\w+ import .*\b{name}\b", s)
                       for t, s in code), f"{where}: no solution cell importing {name}"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if not p.name.startswith("00")], ids=lambda p: p.stem)
def test_algorithm_written_in_the_page_and_checked(path):
    cells = list(_cells(path))
    algo = [i for i, (k, t, _) in enumerate(cells) if k == "code" and "algorithm" in t]
    assert algo, f"{path.name}: no code cell tagged 'algorithm'"
    after = "".join(s for k, _, s in cells[algo[0] + 1:algo[0] + 4] if k == "code")
    assert "assert" in after, f"{path.name}: the algorithm cell is not followed by a check against the library"
    assert any(k == "markdown" and "../tutorial_lib/" in s for k, _, s in cells[max(0, algo[0] - 3):algo[0] + 4]), \
        f"{path.name}: no link to the library source near the algorithm cell"


def test_every_checker_has_a_reference_solution_and_a_test():
    solutions = {}
    for path in sorted((ROOT / "notebooks" / "solutions").glob("nb*.py")):
        module = importlib.import_module(f"solutions.{path.stem}")
        solutions.update({n: getattr(module, n) for n in dir(module) if not n.startswith("_")})
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_exercises_*.py"))
    checks = [n for n in exercises.__all__ if n.startswith("check_")]
    assert checks, "no checkers"
    for check in checks:
        assert callable(solutions.get(check[len("check_"):])), f"{check}: no reference solution"
        assert check in tests, f"{check}: not exercised by any tests/test_exercises_*.py"


def test_every_exercise_module_exists():
    for name in exercises.MODULES:
        importlib.import_module(f"tutorial_lib.exercises.{name}")


def test_checker_refuses_a_forbidden_library_call_under_any_name():
    from tutorial_lib.attacks import PGD, pgd as pgd_module
    from tutorial_lib.exercises.checking import Checker

    alias = pgd_module.PGD
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 1])

    def cheat(m, x, y):
        return alias(0.1, steps=2)(m, x, y)

    checker = Checker("attack", cheat, verbose=False, forbid=[PGD])
    assert checker.call("two images", model, x, y) is None
    result = checker.finish()
    assert not result.passed and "PGD" in result.problems[0] and "yourself" in result.problems[0]

    def honest(m, x, y):
        x = x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(m(x), y).backward()
        return (x + 0.1 * x.grad.sign()).clamp(0, 1).detach()

    checker = Checker("attack", honest, verbose=False, forbid=[PGD])
    assert checker.call("two images", model, x, y) is not None
    assert checker.finish().passed
    assert sys.getprofile() is None  # the watcher is removed after the call


def test_checker_forbid_rejects_what_it_cannot_watch():
    from tutorial_lib.exercises.checking import Checker

    with pytest.raises(TypeError):
        Checker("x", lambda: None, forbid=[3])


def test_proof_exercises_in_at_least_three_notebooks():
    # the course asks for reasoning too: a proof or a counterexample, with the answer in a solution cell
    with_proof = [p.stem for p in NOTEBOOKS if any(kind == "prove" for _, kind, _ in _exercises(p))]
    assert len(with_proof) >= 3, f"prove exercises only in {with_proof}"
