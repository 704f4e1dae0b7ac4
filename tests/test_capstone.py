"""Notebook 09's study code: the shipped tables are complete and sound, the lessons are read
correctly, and the explorer's plain functions answer what the widget shows."""
import pytest
import torch

from tutorial_lib.studies import capstone

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_shipped_tables_complete_and_sound(eps):
    res = capstone.load_results(eps)
    assert res["complete"] and res["n"] == 10000 and list(res["table"]) == list(capstone.MODELS)
    for name, row in res["table"].items():
        cols = [c for c in capstone.ATTACK_COLUMNS if c in row]
        assert len(cols) == len(capstone.ATTACK_COLUMNS), name
        assert all(row["ensemble"] <= row[c] <= row["clean"] for c in cols), name
        if "certified" in row:
            assert row["certified"] <= row["ensemble"], name  # a certified example is never broken


def test_unfinished_or_missing_results_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="RERUN"):
        capstone.load_results(0.2, tmp_path)
    (tmp_path / "capstone_eps0.2.json").write_text('{"complete": false, "table": {"a": {}}}')
    with pytest.raises(ValueError, match="unfinished"):
        capstone.load_results(0.2, tmp_path)


def test_lessons():
    row = {"clean": 0.99, "FGSM": 0.9, "PGD-40": 0.8, "PGD-100 x3": 0.7, "APGD-CE": 0.7, "APGD-T": 0.6,
           "Square": 0.6, "ensemble": 0.55, "certified": 0.5}
    got = capstone.lessons({"m": row, "n": {**row, "certified": 0.6}})
    assert got["m"]["best_attack"] == "APGD-T"  # ties go to the earlier (cheaper) attack
    assert got["m"]["overstated_by_pgd40"] == pytest.approx(0.25)
    assert got["m"]["unknown"] == pytest.approx(0.05) and got["m"]["sound"] is True
    assert got["n"]["sound"] is False
    no_cert = {k: v for k, v in row.items() if k != "certified"}
    assert capstone.lessons({"m": no_cert})["m"]["unknown"] is None


def test_explorer_attacks_and_curve(natural_model, mnist_test):
    x, y = mnist_test[0][:8], mnist_test[1][:8]
    for name in capstone.EXPLORER_ATTACKS:
        x_adv = capstone.make_attack(name, 0.2, square_queries=20)(natural_model, x, y)
        assert (x_adv - x).abs().max() <= 0.2 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with pytest.raises(ValueError, match="unknown attack"):
        capstone.make_attack("BIM", 0.1)
    curve = capstone.robust_accuracy_curve(natural_model, x, y, "PGD-40", [0.0, 0.1, 0.3])
    with torch.no_grad():
        clean = (natural_model(x).argmax(1) == y).float().mean().item()
    assert curve[0] == pytest.approx(clean) and curve[2] <= curve[1] <= curve[0]


def test_evaluation_explorer_builds(natural_model, mnist_test):
    pytest.importorskip("ipywidgets")
    from tutorial_lib.viz.widgets import evaluation_explorer

    box = evaluation_explorer({"natural": natural_model}, mnist_test[0][:4], mnist_test[1][:4],
                              eps_values=(0.0, 0.2), square_queries=10)
    sliders = [w for row in box.children[:2] for w in row.children]
    sliders[1].value = "Square"  # another attack: a new curve, no error
    assert len(box.children) == 3


def test_paper_numbers_say_what_they_measured_and_train_labels_name_the_hardware():
    for (model, _eps), (value, measured, source) in capstone.PAPER.items():
        assert model in capstone.MODELS and 0 < value <= 1 and source
        assert measured.startswith(("attacked:", "certified"))
    assert capstone.train_label({"train_seconds": 24.3, "device": "cpu"}) == "24 s, CPU"
    gpu = {"train_seconds": 426.1, "device": "cuda", "card": "NVIDIA H200"}
    assert capstone.train_label(gpu) == "426 s, NVIDIA H200"
    assert capstone.train_label({}) == "-"
    from tutorial_lib.checkpoints import read_registry

    registry = read_registry()
    for defended, baseline in capstone.BASELINES.items():
        assert registry[baseline]["recipe"]["model"] == registry[defended]["recipe"]["model"]


def test_summary_figure():
    import matplotlib

    matplotlib.use("Agg")
    from tutorial_lib.viz.capstone_plots import summary_figure

    results = {e: capstone.load_results(e) for e in (0.1, 0.3)}
    fig = summary_figure(results)
    assert len(fig.axes) == 2
    n_models = len(capstone.MODELS)
    n_cert = sum(row.get("certified") is not None for row in results[0.1]["table"].values())
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * n_models and len(ax.collections[0].get_offsets()) == n_cert
