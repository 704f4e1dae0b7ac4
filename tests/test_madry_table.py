"""Madry et al.'s MNIST table (tutorial_lib.studies.madry_table) on tiny untrained networks: the rows,
the robust-accuracy rule, the shared source B attacked once, and the paper's numbers."""
import pytest
import torch

from tutorial_lib.attacks import FGSM, PGD, MarginPGD
from tutorial_lib.models import mnist_small, papernot_mnist
from tutorial_lib.studies.madry_table import PAPER_TABLE_1, ROWS, Row, format_table, madry_table, make_attack

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(builder, seed):
    torch.manual_seed(seed)
    return builder().eval()


@pytest.fixture(scope="module")
def nets():
    return {"a": _net(lambda: mnist_small(width=0.25), 0), "b": _net(lambda: mnist_small(width=0.25), 1),
            "a_copy": _net(lambda: mnist_small(width=0.25), 2), "other": _net(papernot_mnist, 3)}


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    return torch.rand(6, 1, 28, 28, generator=gen), torch.randint(0, 10, (6,), generator=gen)


def test_every_row_for_every_target(nets, batch):
    x, y = batch
    skip_row = Row("PGD", 100, 3, "A")
    table = madry_table({"a": nets["a"], "b": nets["b"]}, x, y, 0.3, copies={"a": nets["a_copy"]},
                        other=nets["other"], skip={"b": [skip_row]})
    assert list(table) == list(ROWS)
    clean = table[ROWS[0]]
    for row, values in table.items():
        assert set(values) == {"a", "b"}
        for name, acc in values.items():
            if (name == "b" and (row.source == "A'" or row == skip_row)):
                assert acc is None, (row, name)  # no copy of b; a row b skips
            else:
                assert 0 <= acc <= clean[name] + 1e-9, (row, name)  # robust only if also right clean


def test_zero_eps_gives_the_clean_accuracy(nets, batch):
    x, y = batch
    table = madry_table({"a": nets["a"]}, x, y, 0.0, copies={"a": nets["a_copy"]}, other=nets["other"])
    assert {values["a"] for values in table.values()} == {table[ROWS[0]]["a"]}


def test_source_b_is_attacked_once_for_all_targets(nets, batch):
    x, y = batch
    calls = []
    hook = nets["other"].register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        b_rows = [r for r in ROWS if r.source == "B"]
        madry_table({"a": nets["a"]}, x, y, 0.3, other=nets["other"], rows=b_rows)
        once = len(calls)
        madry_table({"a": nets["a"], "b": nets["b"]}, x, y, 0.3, other=nets["other"], rows=b_rows)
    finally:
        hook.remove()
    assert once > 0 and len(calls) == 2 * once


def test_b_rows_need_the_other_network(nets, batch):
    with pytest.raises(ValueError, match="other"):
        madry_table({"a": nets["a"]}, *batch, 0.3)


def test_attacks_of_the_rows():
    assert isinstance(make_attack(Row("FGSM", source="B"), 0.3), FGSM)
    pgd = make_attack(Row("PGD", 100, 3, "A"), 0.3)
    assert type(pgd) is PGD and (pgd.steps, pgd.restarts, pgd.alpha, pgd.eps) == (100, 3, 0.01, 0.3)
    cw, cw_plus = make_attack(Row("CW", 40, 1, "A"), 0.3), make_attack(Row("CW+", 40, 1, "A'"), 0.3)
    assert isinstance(cw, MarginPGD) and cw.kappa == float("inf") and cw_plus.kappa == 50
    with pytest.raises(ValueError):
        make_attack(ROWS[0], 0.3)


def test_targeted_rows_stay_in_the_ball(nets, batch):
    x, y = batch
    x_adv = make_attack(Row("Targeted", 40, 1, "A"), 0.3)(nets["a"], x, y)
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= 0.3 + 1e-6


def test_paper_numbers_and_format():
    assert PAPER_TABLE_1[Row("CW+", 40, 1, "A")] == 93.9 and PAPER_TABLE_1[Row("PGD", 40, 1, "B")] == 96.4
    assert all(r in PAPER_TABLE_1 for r in ROWS if r != Row("PGD", 100, 3, "A"))
    table = {ROWS[0]: {"a": 0.5, "b": None}, Row("PGD", 100, 3, "A"): {"a": 0.25, "b": None}}
    lines = format_table(table, ["a", "b"], ["ours", "other"]).splitlines()
    assert lines[0].split() == ["attack", "(source)", "ours", "other", "paper"]
    assert lines[1].split() == ["natural", "50.0", "-", "98.8"]
    assert lines[2].split() == ["PGD-100", "x3", "(A)", "25.0", "-", "-"]


def test_format_with_intervals():
    table = {ROWS[0]: {"a": 0.5, "b": None}, Row("PGD", 100, 3, "A"): {"a": 0.0, "b": 1.0}}
    lines = format_table(table, ["a", "b"], n=100).splitlines()
    assert lines[1].split() == ["natural", "50.0", "[40.4,", "59.6]", "-", "98.8"]
    assert lines[2].split()[3:] == ["0.0", "[0.0,", "3.7]", "100.0", "[96.3,", "100.0]", "-"]
    with pytest.raises(ValueError, match="not a count"):
        format_table({ROWS[0]: {"a": 0.505}}, ["a"], n=100)


def test_table_view_for_the_notebook():
    from tutorial_lib.studies.madry_table import table_view

    table = {ROWS[0]: {"a": 0.5, "b": None}, Row("PGD", 100, 3, "A"): {"a": 0.0, "b": 1.0}}
    view = table_view(table, ["a", "b"], n=100, headers=["ours", "other"], caption="c")
    assert view.header[:3] == ["attack (source)", "ours", "other"] and view.header[3].startswith("paper")
    assert view.rows[0] == ["natural", "50.0 % [40.4, 59.6]", "-", "98.8 %"]
    assert view.rows[1] == ["PGD-100 x3 (A)", "0.0 % [0.0, 3.7]", "100.0 % [96.3, 100.0]", "-"]
    assert "<table>" in view._repr_html_() and view.caption == "c"
    assert len(table_view(table, ["a"], n=100, paper=False).header) == 2
    with pytest.raises(ValueError, match="not a count"):
        table_view({ROWS[0]: {"a": 0.505}}, ["a"], n=100)
