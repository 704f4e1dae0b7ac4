import pytest

from tutorial_lib.stats import format_rate
from tutorial_lib.studies.capacity import capacity_recipe, capacity_sweep, capacity_table, load_capacity_results


def test_tiny_sweep_trains_every_width_and_method(shared_dir):
    res = capacity_sweep([0.25, 0.5], epochs=1, n_eval=50, train_subset=640, max_steps=10,
                         data_dir=shared_dir, progress=False)
    rows = res["rows"]
    assert [(r["width"], r["method"]) for r in rows] == [(0.25, "natural"), (0.25, "pgd"),
                                                         (0.5, "natural"), (0.5, "pgd")]
    assert rows[0]["params"] < rows[2]["params"]
    assert all(0 <= r["clean"] <= 1 and 0 <= r["PGD-40"] <= r["clean"] + 0.05 for r in rows)


def test_shipped_results_show_capacity_helps_pgd_training():
    res = load_capacity_results()
    pgd = sorted((r["width"], r["PGD-40"]) for r in res["rows"] if r["method"] == "pgd")
    nat = [r["PGD-40"] for r in res["rows"] if r["method"] == "natural"]
    assert pgd[-1][1] > pgd[0][1] + 0.05  # the widest PGD-trained net beats the narrowest
    assert max(nat) < 0.1 < min(a for _, a in pgd)  # natural training is never robust at eps 0.3


def test_bad_method():
    with pytest.raises(ValueError):
        capacity_recipe(1, "fgsm")


def test_capacity_table_gives_every_rate_its_interval():
    res = load_capacity_results()
    table = capacity_table(res)
    assert len(table.rows) == len(res["rows"])
    first = res["rows"][0]
    assert table.column("clean")[0] == format_rate(first["clean"], res["n_eval"])
    assert all("[" in cell for cell in table.column("PGD-40") + table.column("clean"))
    assert str(round(sum(r["train_seconds"] for r in res["rows"]))) in table.notes
