"""The package's architecture, checked: the core never reaches into what serves one notebook,
the bounds stand on their own, and the loss registry is complete without import side effects."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "tutorial_lib"
CORE = ["data.py", "models.py", "checkpoints.py", "runtime.py", "cascade_model.py", "stats.py", "training", "attacks",
        "defenses", "bounds"]


def _imports(path: Path):
    """Absolute module names imported by one file (relative imports resolved)."""
    module = ".".join(("tutorial_lib",) + path.relative_to(PKG).with_suffix("").parts)
    package = module.rsplit(".", 1)[0]  # the package a relative import starts from
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield name
            yield from (f"{name}.{a.name}" for a in node.names)


def _files(entries):
    for e in entries:
        p = PKG / e
        yield from (sorted(p.rglob("*.py")) if p.is_dir() else [p])


def test_import_resolution_sees_relative_imports():
    names = set(_imports(PKG / "defenses" / "adversarial.py"))
    assert "tutorial_lib.attacks.PGD" in names and "tutorial_lib.runtime.eval_mode" in names


@pytest.mark.parametrize("path", list(_files(CORE)), ids=lambda p: str(p.relative_to(PKG)))
def test_core_never_imports_notebook_code(path):
    bad = [n for n in _imports(path)
           if n.startswith(("tutorial_lib.studies", "tutorial_lib.viz", "tutorial_lib.exercises"))]
    assert not bad, f"{path.relative_to(PKG)} imports {bad}: the core must not depend on notebook code"


@pytest.mark.parametrize("path", list(_files(["bounds"])), ids=lambda p: str(p.relative_to(PKG)))
def test_bounds_stand_alone(path):
    allowed = ("tutorial_lib.bounds", "tutorial_lib.models", "tutorial_lib.validation")
    bad = [n for n in _imports(path) if n.startswith("tutorial_lib") and not n.startswith(allowed)]
    assert not bad, f"{path.relative_to(PKG)} imports {bad}: bounds depend only on models and the shared input checks"


@pytest.mark.parametrize("path", list(_files(["attacks", "cascade_model.py"])), ids=lambda p: str(p.relative_to(PKG)))
def test_attacks_and_the_cascade_model_never_import_defenses(path):
    """defenses import attacks (adversarial training); a cascade is a classifier, in
    cascade_model below both: no import of defenses from there, not even inside a function."""
    bad = [n for n in _imports(path) if n.startswith("tutorial_lib.defenses")]
    assert not bad, f"{path.relative_to(PKG)} imports {bad}: import the cascade from tutorial_lib.cascade_model"


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout


def test_loss_registry_is_complete_on_its_own():
    """Importing only the training package names every loss (no registration by side effect)."""
    out = _fresh("from tutorial_lib.training import LOSSES; print(sorted(LOSSES)); "
                 "print(LOSSES['pgd'].__name__, LOSSES['robust'].__name__)")
    assert out.splitlines() == ["['crown_ibp', 'distill', 'ibp', 'natural', 'pgd', 'robust', 'temperature', 'trades']",
                                "PGDTrainingLoss RobustTrainingLoss"]


def test_bounds_import_neither_training_nor_attacks():
    out = _fresh("import sys, tutorial_lib.bounds; "
                 "print(sorted(m for m in sys.modules if m.startswith('tutorial_lib.')))")
    loaded = eval(out)
    assert not [m for m in loaded if m.startswith(("tutorial_lib.training", "tutorial_lib.attacks",
                                                   "tutorial_lib.defenses", "tutorial_lib.studies"))]


@pytest.mark.parametrize("entry", ["tutorial_lib.train", "tutorial_lib.report", "tutorial_lib.training",
                                   "tutorial_lib.studies.capacity", "tutorial_lib.studies.madry_table",
                                   "tutorial_lib.studies.cascade_eval", "tutorial_lib.studies.scaling_eval"])
def test_command_lines_answer_help(entry):
    out = subprocess.run([sys.executable, "-m", entry, "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "usage: python -m tutorial_lib." in out.stdout
