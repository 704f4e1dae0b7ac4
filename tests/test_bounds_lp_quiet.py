"""The LP and MILP print nothing: HiGHS's banner, which its constructor prints once per process
before any option can be set, must not reach stdout (it used to be stored in notebook outputs)."""
import subprocess
import sys

import torch
from torch import nn

from tutorial_lib import bounds

_SCRIPT = """
import torch
from torch import nn
from tutorial_lib import bounds
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
x, spec = torch.rand(1, 3), torch.tensor([[1.0, -1.0]])
bounds.{fn}(model, x, None, 0.2, spec=spec, clip=None)
"""


def _run_fresh(fn):
    """stdout and stderr of a fresh interpreter whose first HiGHS solve is bounds.<fn>."""
    return subprocess.run([sys.executable, "-c", _SCRIPT.format(fn=fn)], capture_output=True,
                          text=True, timeout=300, check=True)


def test_lp_prints_nothing_in_a_fresh_process():
    # a fresh process: the banner is printed by the first Highs object only, which an earlier test
    # in this process may already have created
    out = _run_fresh("lp_bounds")
    assert out.stdout == "", out.stdout
    assert "HiGHS" not in out.stderr, out.stderr


def test_milp_prints_nothing_in_a_fresh_process():
    out = _run_fresh("milp_bounds")
    assert out.stdout == "", out.stdout
    assert "HiGHS" not in out.stderr, out.stderr


def test_lp_and_milp_print_nothing(capfd):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.rand(2, 3)
    y = torch.tensor([0, 2])
    lp = bounds.lp_bounds(model, x, y, 0.1)
    milp = bounds.milp_bounds(model, x, y, 0.1)
    assert (lp.lower <= milp.lower + 1e-5).all()
    out, err = capfd.readouterr()
    assert out == "" and "HiGHS" not in err, (out, err)
