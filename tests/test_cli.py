"""The three command lines answer ordinary mistakes with one line that names the culprit (no
traceback, exit code 2), and answer --help."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(module, *args, env=None):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def _one_line_error(proc, *names):
    """Exit code 2, stderr a single 'error:' line without a traceback, naming each of ``names``."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    assert "Traceback" not in err and len(err.splitlines()) == 1, err[-2000:]
    assert "error:" in err
    for name in names:
        assert name in err, (name, err)
    return err


def _recipe(tmp_path, name="mine", **changes):
    recipe = {"name": name, "dataset": "mnist", "model": "mnist_small", "loss": "natural", "epochs": 1,
              "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.002}, "seed": 0, "train_subset": 256}
    recipe.update(changes)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(recipe, indent=1))
    return path


# Every train call below fails before any training; --out points into tmp_path anyway, so that
# even an old version of the command line that ignored the mistake could not write into
# data/checkpoints.

def test_train_unknown_recipe_lists_the_known_ones(tmp_path):
    err = _one_line_error(_run("tutorial_lib.train", "mnist_small_natual", "--out", tmp_path),
                          "mnist_small_natual", "mnist_small_natural", "papernot_teacher_t1")
    assert "did you mean 'mnist_small_natural'" in err


def test_train_malformed_json_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n "name": "broken",\n "epochs": 1\n "loss": "natural"\n}\n')
    _one_line_error(_run("tutorial_lib.train", path, "--out", tmp_path / "out"), str(path), "line 4")


def test_train_accepts_a_recipe_path_without_json(tmp_path):
    """The file is found (its mistake is reported, not 'no recipe')."""
    path = _recipe(tmp_path, optimizer={"name": "adam", "lrr": 0.1})
    err = _one_line_error(_run("tutorial_lib.train", path.with_suffix(""), "--out", tmp_path / "out"),
                          str(path), "'lrr'", "'adam'")
    assert "did you mean 'lr'" in err


def test_train_bad_optimizer_keyword_and_unknown_optimizer(tmp_path):
    path = _recipe(tmp_path, optimizer={"name": "sgd", "lr": 0.1, "momentun": 0.9})
    _one_line_error(_run("tutorial_lib.train", path, "--out", tmp_path / "out"), "'momentun'", "'sgd'")
    path = _recipe(tmp_path, optimizer={"name": "adamw", "lr": 0.1})
    _one_line_error(_run("tutorial_lib.train", path, "--out", tmp_path / "out"), "'adamw'", "adam, sgd")


def test_train_unknown_loss_model_dataset_and_loss_keyword(tmp_path):
    cases = [({"loss": "trade"}, ["'trade'", "trades"]),
             ({"model": "mnist_smal"}, ["'mnist_smal'", "mnist_small"]),
             ({"dataset": "mnsit"}, ["'mnsit'", "mnist"]),
             ({"loss": "pgd", "loss_kwargs": {"epsilon": 0.3}}, ["'epsilon'", "'pgd'"])]
    for changes, names in cases:
        path = _recipe(tmp_path, **changes)
        _one_line_error(_run("tutorial_lib.train", path, "--out", tmp_path / "out"), *names)


def test_train_refuses_the_shipped_folder_without_promote(tmp_path):
    # --data-dir points nowhere: even a command line that did not refuse would fail before writing
    proc = _run("tutorial_lib.train", _recipe(tmp_path), "--out", REPO / "data" / "checkpoints",
                "--data-dir", tmp_path / "nothing-here")
    _one_line_error(proc, "--promote")


def test_report_unknown_checkpoint_lists_the_known_ones():
    err = _one_line_error(_run("tutorial_lib.report", "mnist_small_natural", "mnist_small_pdg", "--n", 10),
                          "mnist_small_pdg", "mnist_small_pgd", "papernot_student_t100")
    assert "did you mean 'mnist_small_pgd'" in err
    _one_line_error(_run("tutorial_lib.report", "mnist_small_pgd", "--transfer",
                         "mnist_small_pgd=mnist_small_pgd_cpy", "--n", 10), "mnist_small_pgd_cpy")


def test_data_unknown_dataset_and_help():
    _one_line_error(_run("tutorial_lib.data", "mnsit"), "'mnsit'", "mnist, fashion_mnist, cifar10")
    proc = _run("tutorial_lib.data", "--help")
    assert proc.returncode == 0 and "usage: python -m tutorial_lib.data" in proc.stdout


def test_data_missing_files_is_one_line(tmp_path):
    _one_line_error(_run("tutorial_lib.data", "mnist", "--data-dir", tmp_path), str(tmp_path), ".gz")


@pytest.mark.parametrize("module", ["tutorial_lib.train", "tutorial_lib.report", "tutorial_lib.data"])
def test_help(module):
    proc = _run(module, "--help")
    assert proc.returncode == 0 and f"usage: python -m {module}" in proc.stdout, proc.stderr
