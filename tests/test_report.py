"""The report behind the README and notebook 09: the ensemble column is the per-example worst
case, certificates stay below it, models the bounds cannot see are left uncertified, and a
results file is never replaced without --overwrite."""
import json

import pytest

from tutorial_lib.studies.report import ENSEMBLE_COLUMNS, main, robustness_table

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_table():
    return robustness_table(["mnist_small_robust", "mnist_small_quantized"], eps=0.1, n=16, ensemble=True,
                            certified=True, square_queries=20, batch_size=16)


def test_ensemble_is_the_worst_case_of_every_column(small_table):
    for name, row in small_table.items():
        attacks = ["FGSM", "PGD-40", "PGD-100 x3", *ENSEMBLE_COLUMNS]
        assert set(attacks) <= set(row)
        assert all(row["ensemble"] <= row[a] <= row["clean"] for a in attacks), (name, row)


def test_certified_below_ensemble_and_only_where_the_bounds_apply(small_table):
    robust = small_table["mnist_small_robust"]
    assert robust["certified"] <= robust["ensemble"]  # a sound certificate is never broken
    assert "certified" not in small_table["mnist_small_quantized"]  # rounding: no bound


def test_results_file_kept_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("{}")
    with pytest.raises(SystemExit) as e:
        main(["mnist_small_natural", "--n", "4", "--json", str(out)])
    assert e.value.code == 2 and out.read_text() == "{}"
    assert "--overwrite" in capsys.readouterr().err
    main(["mnist_small_natural", "--n", "4", "--json", str(out), "--overwrite"])
    saved = json.loads(out.read_text())
    assert saved["complete"] is True and set(saved["table"]) == {"mnist_small_natural"}
    assert saved["n"] == 4 and "--overwrite" in saved["command"]


def test_several_certifiers_one_column_each_and_their_union():
    table = robustness_table(["mnist_small_robust"], eps=0.1, n=24, certified=True, batch_size=24,
                             certifiers=["interval", "dual"])
    row = table["mnist_small_robust"]
    each = [row["certified (interval)"], row["certified (dual)"]]
    # the dual-trained model: the dual certifies most examples, interval bounds almost none
    assert each[1] > each[0]
    assert max(each) <= row["certified"] <= min(sum(each), row["PGD-100 x3"])


def test_a_certified_example_broken_by_an_attack_stops_the_report(monkeypatch):
    import torch

    import tutorial_lib.studies.report as R

    # a broken certifier that certifies every example of the natural model, which PGD breaks
    monkeypatch.setattr(R, "certified_mask", lambda model, x, y, eps, **kw: torch.ones(len(x), dtype=torch.bool))
    with pytest.raises(RuntimeError, match="false certificate"):
        robustness_table(["mnist_small_natural"], eps=0.3, n=8, certified=True, batch_size=8)


def test_unknown_certifier_refused():
    with pytest.raises(ValueError, match="certifiers"):
        robustness_table(["mnist_small_robust"], eps=0.1, n=4, certified=True, certifiers=["dual-projections"])
