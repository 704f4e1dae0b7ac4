"""Notebook 07's study and figures (studies.scaling_eval, viz.scaling_plots): certify() never lets
an attack break a certificate, the sampled range sits inside the bounds of sigmoid/tanh networks,
the CIFAR ResNet has the paper's shape, the relaxation lines are valid, the CLI guards its output."""
import json

import matplotlib
import pytest
import torch
from torch import nn

from tutorial_lib import bounds
from tutorial_lib.models import cifar_resnet
from tutorial_lib.studies import scaling_eval as S
from tutorial_lib.viz import scaling_plots as P

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("one_thread")


def _cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 20), nn.ReLU(), nn.Linear(20, 3)).eval()


def _data(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 12, 12, generator=g)
    return x


@pytest.mark.parametrize("norm, eps", [("linf", 0.02), ("l2", 0.2)])
def test_certify_orders_the_accuracies(norm, eps):
    net = _cnn()
    x = _data()
    with torch.no_grad():
        y = net(x).argmax(1)
    y[:4] = (y[:4] + 1) % 3  # a few wrong labels: never certified, never robust
    r = S.certify(net, x, y, eps, norm=norm, batch_size=10, attack_steps=20, progress=False)
    assert r["n"] == 24
    assert r["certified_accuracy"] <= r["pgd_accuracy"] <= r["clean_accuracy"] <= 20 / 24
    assert r["certified_error"] == pytest.approx(1 - r["certified_accuracy"])
    assert r["certified_accuracy"] > 0  # small radius: something is certified, or the test shows nothing


def test_certify_refuses_a_certificate_the_attack_breaks(monkeypatch):
    net = _cnn()
    x = _data()
    with torch.no_grad():
        y = net(x).argmax(1)

    def optimistic(model, x, y, eps, **kw):  # a wrong bound: every margin "positive"
        return bounds.BoundResult(lower=torch.ones(len(y), 2), pre_bounds=[], method="dual")

    monkeypatch.setattr(S, "certified_bounds", optimistic)
    with pytest.raises(RuntimeError, match="certified .* but PGD broke it"):
        S.certify(net, x, y, 0.5, attack_steps=20, progress=False)


def test_certify_rejects_empty_or_mismatched_input():
    with pytest.raises(ValueError):
        S.certify(_cnn(), _data(4), torch.zeros(3, dtype=torch.long), 0.1, progress=False)


@pytest.mark.parametrize("act", [nn.Sigmoid, nn.Tanh])
def test_bounds_contain_the_sampled_range(act):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), act(), nn.Linear(12, 12), act(), nn.Linear(12, 4)).eval()
    x = torch.rand(1, 1, 4, 4)
    r = S.bounds_vs_sampling(net, x, 0.1, samples=3000)
    assert (r["lower"] <= r["sample_min"] + 1e-6).all() and (r["sample_max"] <= r["upper"] + 1e-6).all()
    assert (r["sample_min"] < r["sample_max"]).all()
    with pytest.raises(ValueError, match="one input"):
        S.bounds_vs_sampling(net, torch.rand(2, 1, 4, 4), 0.1)


def test_bound_cost_reports_the_cifar_resnet_shape():
    torch.manual_seed(0)
    out = S.bound_cost(cifar_resnet(), torch.rand(1, 3, 32, 32), 2 / 255, proj=5, grad=True)
    convs = [shape[0] for kind, shape in out["nodes"] if kind == "Add"]
    assert convs == [16, 16, 32, 64]  # four residual blocks with 16, 16, 32, 64 filters
    assert out["nodes"][-1] == ("Linear", (10,))
    assert out["seconds"] > 0 and (out["peak_bytes"] is None or out["peak_bytes"] >= 0)
    # every activation's input counted: 16x32x32 four times (stem + 2 blocks x ...), then smaller maps
    assert out["neurons"] == 16 * 32 * 32 * 5 + 32 * 16 * 16 * 2 + 64 * 8 * 8 * 2 + 1000


def test_relaxation_lines_are_valid():
    g = torch.Generator().manual_seed(0)
    for act, f in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh), ("relu", torch.relu)):
        for _ in range(40):
            lo, hi = sorted((torch.randn(2, generator=g, dtype=torch.float64) * 4).tolist())
            ls, li, us, ui = P.relaxation_lines(act, lo, hi)
            z = torch.linspace(lo, hi, 201, dtype=torch.float64)
            assert (ls * z + li <= f(z) + 1e-12).all() and (f(z) <= us * z + ui + 1e-12).all(), (act, lo, hi)
    with pytest.raises(ValueError):
        P.relaxation_lines("sigmoid", 1.0, 0.0)
    with pytest.raises(ValueError):
        P.relaxation_lines("softplus", 0.0, 1.0)


def test_figures_draw():
    import matplotlib.pyplot as plt
    P.draw_relaxation("tanh", -1.0, 2.0)
    P.draw_residual_dual()
    ax = P.draw_certified_curves({"a": ([0.1, 0.2], [0.9, 0.5]), "b": ([0.1], [0.3])},
                                 attack_curves={"a": ([0.1, 0.2], [0.95, 0.7])})
    assert len(ax.lines) == 3 and ax.lines[0].get_color() == ax.lines[1].get_color()
    errors = {5: {"relative_error": torch.rand(50), "tighter": 0.5}, 50: {"relative_error": torch.rand(50) / 3,
                                                                          "tighter": 0.45}}
    P.draw_projection_errors(errors)
    plt.close("all")


def test_relaxation_explorer_keeps_l_below_u():
    from tutorial_lib.viz.widgets import relaxation_explorer
    w = relaxation_explorer("tanh", -1.0, 1.0)
    lo, hi = w.children[1].children
    lo.value = 3.0
    assert hi.value >= lo.value
    hi.value = -4.0
    assert lo.value <= hi.value


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("{}")
    with pytest.raises(SystemExit) as e:
        S.main(["mnist_small_robust", "--json", str(out)])
    assert e.value.code == 2 and out.read_text() == "{}"
    with pytest.raises(SystemExit):
        S.main([])  # no checkpoint, no --cifar-resnet-cost


@pytest.mark.parametrize("name", list(S.ROWS))
def test_shipped_results_match_their_rows(name):
    r = S.load_results(name)
    norm, eps, _ = S.ROWS[name]
    assert (r["norm"], r["eps"], r["n"]) == (norm, eps, 10000)
    assert r["certified_accuracy"] <= r["pgd_accuracy"] <= r["clean_accuracy"]
    assert name in r["command"] and f"--eps {eps:g}" in r["command"]


def test_shipped_resnet_costs():
    r = S.load_cifar_resnet_costs()
    exact = [row for row in r["rows"] if row["proj"] is None]
    proj = [row for row in r["rows"] if row["proj"] is not None]
    assert exact and proj and json.dumps(r)
    assert all(row["seconds"] > 0 for row in r["rows"])
