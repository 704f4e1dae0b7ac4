"""The notebooks' checked outputs are the same on any machine.

nbval compares the outputs of cells marked ``# NBVAL_CHECK_OUTPUT`` with the ones stored in the
notebook, which were produced on one machine. Another CPU family, thread count, BLAS build or a
GPU rounds float32 sums differently; a PGD trajectory or a training run amplifies that, and a
number printed to 0.1 % moves. So a checked output may hold only what every correct machine
reproduces (CONTRIBUTING.md, "What a checked output may contain"). Two checks:

* static (always): no checked cell runs a live attack or a training run;
* dynamic (``make test-portability``, run by CI after ``make test``): every notebook is run under
  nbval in kernels whose float rounding was changed by ``perturb_floats.py`` (oneDNN convolutions
  off, float64-accumulated matrix products, one thread, TF32-sized errors on the models'
  convolutions, ulp jitter elsewhere), and every checked output must still
  equal the stored one. About as long as the notebooks' own nbval run, so ``make test`` skips it.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ENV_FLAG = "PORTABILITY_CHECK"

# Calls whose results a machine's rounding can change by whole images: attacks (their trajectories
# follow the sign of float gradients) and training. A cell that calls one is a live measurement:
# print it with its 95 % interval (tutorial_lib.stats) and assert its lesson, but do not check it.
# (studies.polytope.train_tiny_mnist and certify_table's PGD run in float64, which is why they may be checked;
# retrain(...) only runs behind RETRAIN = True.)
LIVE_CALLS = re.compile(
    r"\b(FGSM|PGD|MarginPGD|APGD\w*|Square|CarliniWagner\w*|JSMA|evaluate|accuracy_vs_eps|madry_table|"
    r"robustness_table|attack_\w+|fit|train_epoch|[a-z_]*pgd[a-z_]*)\s*\("
)


def _checked_cells(path: Path):
    nb = json.loads(path.read_text())
    k = -1
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        k += 1
        src = "".join(cell["source"])
        if "NBVAL_CHECK_OUTPUT" in src:
            yield k, src


def _live_calls(src: str):
    code = "\n".join(line.split("#", 1)[0] for line in src.splitlines())  # comments do not run
    return sorted({m.group(1) for m in LIVE_CALLS.finditer(code)})


def test_the_static_rule_sees_a_live_cell():
    assert _live_calls("acc = evaluate(model, (x, y), {'PGD': PGD(0.1)})") == ["PGD", "evaluate"]
    assert _live_calls("x_adv = pgd_linf(model, x, y, 0.1, 0.01, 40)") == ["pgd_linf"]
    assert _live_calls("# evaluate(model)\nprint(load_capacity_results())") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_checked_cell_runs_an_attack_or_a_training_run(path):
    bad = {k: calls for k, src in _checked_cells(path) if (calls := _live_calls(src))}
    assert not bad, (f"{path.name}: checked cells (code cell index: calls) {bad} run live attacks or training; "
                     "print their numbers with tutorial_lib.stats.format_rate, assert the lesson, and drop "
                     "# NBVAL_CHECK_OUTPUT (CONTRIBUTING.md, 'What a checked output may contain')")


@pytest.mark.skipif(os.environ.get(ENV_FLAG) != "1",
                    reason=f"the perturbed notebook run takes as long as nbval itself: make test-portability "
                           f"({ENV_FLAG}=1) runs it, and CI runs that after make test")
def test_checked_outputs_survive_other_float_rounding(tmp_path):
    ipython_dir = tmp_path / "ipython"
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("perturb_floats.py"), startup / "00_perturb_floats.py")
    env = dict(os.environ, IPYTHONDIR=str(ipython_dir), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               MPLBACKEND="Agg")
    env.pop("PYTEST_ADDOPTS", None)
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q", "--rootdir", str(ROOT),
           *os.environ.get("PORTABILITY_NOTEBOOKS", " ".join(str(p) for p in NOTEBOOKS)).split()]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, (
        "checked notebook outputs changed when only float rounding did (see CONTRIBUTING.md, "
        "'What a checked output may contain'):\n" + run.stdout[-20000:] + run.stderr[-3000:])
