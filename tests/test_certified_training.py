"""The study behind notebook 10's cross table (tutorial_lib.studies.certified_training): counts are
consistent (certified <= clean, 'any' is the union), certified examples survive PGD, and the curves
start at clean accuracy and never rise."""
import pytest
import torch

from tutorial_lib.attacks import PGD
from tutorial_lib.bounds import certified_mask
from tutorial_lib.checkpoints import load_checkpoint
from tutorial_lib.data import test_subset
from tutorial_lib.studies.certified_training import certified_curves, certify_cross, cross_table

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = ["mnist_small_pgd", "mnist_small_robust"]


@pytest.fixture(scope="module")
def cross():
    return certify_cross(MODELS, eps=0.1, n=12, methods=("interval", "dual"))


def test_counts_consistent_and_any_is_the_union(cross):
    assert cross["eps"] == 0.1 and cross["n"] == 12
    for name in MODELS:
        row = cross["rows"][name]
        counts = [m["certified"] for m in row["methods"].values()]
        assert max(counts) <= row["any"] <= min(sum(counts), row["clean"]) <= 12
    # the dual-trained model: the dual certifies more than interval bounds (notebook 05's lesson)
    robust = cross["rows"]["mnist_small_robust"]["methods"]
    assert robust["dual"]["certified"] > robust["interval"]["certified"]


def test_certified_examples_survive_pgd():
    model = load_checkpoint("mnist_small_robust")[0]
    x, y = test_subset("mnist", 12)
    cert = certified_mask(model, x, y, 0.1, method="dual")
    adv = PGD(0.1, alpha=0.01, steps=40)(model, x, y)
    with torch.no_grad():
        survived = model(adv).argmax(1) == y
    assert cert.any() and bool((survived | ~cert).all())


def test_curves_start_at_clean_and_never_rise(cross):
    curves = certified_curves(MODELS, (0.0, 0.05, 0.1, 0.3), n=12)
    for name, counts in curves["rows"].items():
        assert counts[0] == cross["rows"][name]["clean"]  # at eps 0 a certificate is a correct prediction
        assert all(b <= a for a, b in zip(counts, counts[1:]))
        # the union of interval and dual, on the survivors only: at least the dual's own count at 0.1
        assert counts[2] >= cross["rows"][name]["methods"]["dual"]["certified"]
    with pytest.raises(ValueError, match="increasing"):
        certified_curves(MODELS, (0.1, 0.05), n=4)


def test_cross_table_rows_and_intervals(cross):
    table = cross_table({"cross": [cross]}, 0.1)
    assert table.column("model") == MODELS
    assert table.header[-1] == "any" and "dual" in table.header
    assert all("[" in cell for cell in table.column("dual"))
    with pytest.raises(KeyError):
        cross_table({"cross": [cross]}, 0.3)


def test_optimised_dual_on_fewer_images_says_so():
    c = certify_cross(["mnist_small_robust"], eps=0.1, n=6, methods=("dual", "dual-opt"), n_opt=3, opt_steps=3)
    row = c["rows"]["mnist_small_robust"]["methods"]
    assert row["dual"]["n"] == 6 and row["dual-opt"]["n"] == 3
    assert row["dual-opt"]["certified"] <= 3
    notes = cross_table({"cross": [c]}, 0.1).notes
    assert "optimised on the first 3" in notes
