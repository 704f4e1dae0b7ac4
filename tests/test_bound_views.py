"""Notebook 10's explorer data (tutorial_lib.studies.bound_views): every outer bound contains every
sampled true output, for every eps of the slider's range."""
import numpy as np
import pytest

from tutorial_lib import data
from tutorial_lib.studies.bound_views import areas, bounds_view, draw_bounds_view
from tutorial_lib.studies.polytope import outer_polytope, train_toy_net

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy():
    net = train_toy_net(hidden=(16, 16), dataset="moons", seed=0)
    xt, _ = data.make_toy("moons", n=400, seed=1)
    return net, xt[0]


@pytest.mark.parametrize("eps", [0.02, 0.15, 0.4])
def test_every_outer_bound_contains_the_true_outputs(toy, eps):
    net, x0 = toy
    view = bounds_view(net, x0, eps, n_dirs=24, n_grid=40)
    s = view["samples"]
    (l1, u1), (l2, u2) = view["box"]
    tol = 1e-6 * (1 + np.abs(s).max())
    assert (s[:, 0] >= l1 - tol).all() and (s[:, 0] <= u1 + tol).all()
    assert (s[:, 1] >= l2 - tol).all() and (s[:, 1] <= u2 + tol).all()
    for method in view["polygons"]:
        poly = outer_polytope(net, x0, eps, 24, method=method)
        slack = s @ poly["directions"].T - poly["support"]  # c_i . f(x') - h_i >= 0 for a sound bound
        assert slack.min() >= -tol, method
        assert len(view["polygons"][method]) >= 3
    a = areas(view)
    assert set(a) == {"interval", "crown", "dual"} and all(v > 0 for v in a.values())
    draw_bounds_view(view)


def test_unknown_method_refused(toy):
    with pytest.raises(ValueError, match="unknown method"):
        outer_polytope(toy[0], toy[1], 0.1, 8, method="crown-opt")
