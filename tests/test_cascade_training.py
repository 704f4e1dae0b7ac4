"""A cascade's next stage trains on what the earlier stages do not accept (recipes' "train_on")."""
import copy

import pytest
import torch

from tutorial_lib import cascade_model as CM
from tutorial_lib.checkpoints import load_checkpoint
from tutorial_lib.data import load_dataset
from tutorial_lib.defenses import cascade as C
from tutorial_lib.training import cascade as TC
from tutorial_lib.training.recipes import RecipeError, load_recipe, validate_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 0.1


@pytest.fixture(scope="module")
def train_head():
    x, y = load_dataset("mnist", "train").tensors
    return x[:160], y[:160]


def test_stage_accepts_is_the_dual_certificate_of_the_own_prediction(train_head):
    from tutorial_lib.bounds import dual_bounds, is_certified
    model, _ = load_checkpoint("mnist_small_robust_full")
    x = train_head[0][:40]
    pred, ok = C.stage_accepts(model, x, EPS, batch_size=16)
    assert torch.equal(pred, model(x).argmax(1))
    with torch.no_grad():
        expected = is_certified(dual_bounds(model, x, pred, EPS).lower)
    assert torch.equal(ok, expected)
    # a robust model accepts most training digits at 0.1 and none at a radius as wide as the box
    assert ok.float().mean() > 0.8
    assert not C.stage_accepts(model, x[:4], 0.5)[1].any()


def test_not_accepted_indices_keeps_exactly_the_rejected_examples_and_caches(train_head, tmp_path, monkeypatch):
    x = train_head[0]
    model, _ = load_checkpoint("mnist_small_robust_full")
    _, ok = C.stage_accepts(model, x, EPS)
    left = TC.not_accepted_indices(["mnist_small_robust_full"], x, EPS, cache_dir=tmp_path, chunk=50,
                                   dataset="head160", progress=False)
    assert torch.equal(left, torch.nonzero(~ok).flatten())
    assert 0 < len(left) < len(x)
    assert not list(tmp_path.glob("*.partial.pt"))
    # the second call reads the cache: it must not certify anything again
    monkeypatch.setattr(CM, "stage_accepts", lambda *a, **k: pytest.fail("recomputed a cached subset"))
    again = TC.not_accepted_indices(["mnist_small_robust_full"], x, EPS, cache_dir=tmp_path,
                                    dataset="head160", progress=False)
    assert torch.equal(again, left)


def test_a_second_stage_only_looks_at_what_the_first_left(train_head, tmp_path, monkeypatch):
    x = train_head[0][:60]
    seen = []
    real = C.stage_accepts

    def spy(model, xb, *a, **k):
        seen.append(xb.shape[0])
        return real(model, xb, *a, **k)

    monkeypatch.setattr(CM, "stage_accepts", spy)
    one = TC.not_accepted_indices(["mnist_small_robust_full"], x, EPS, cache_dir=tmp_path, progress=False,
                                  dataset="head60")
    two = TC.not_accepted_indices(["mnist_small_robust_full", "mnist_small_robust"], x, EPS,
                                  cache_dir=tmp_path, progress=False, dataset="head60")
    assert seen == [60, len(one)]  # the first stage came from the cache the second time
    assert set(two.tolist()) <= set(one.tolist())


def test_an_interrupted_subset_resumes_from_its_partial_file(train_head, tmp_path, monkeypatch):
    x = train_head[0][:90]
    full = TC.not_accepted_indices(["mnist_small_robust_full"], x, EPS, cache_dir=tmp_path / "a", chunk=30,
                                   progress=False, dataset="head90")
    calls = {"n": 0}
    real = C.stage_accepts

    def dies_on_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(CM, "stage_accepts", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        TC.not_accepted_indices(["mnist_small_robust_full"], x, EPS, cache_dir=tmp_path / "b", chunk=30,
                                progress=False, dataset="head90")
    assert len(list((tmp_path / "b").glob("*.partial.pt"))) == 1
    monkeypatch.setattr(CM, "stage_accepts", real)
    resumed = TC.not_accepted_indices(["mnist_small_robust_full"], x, EPS, cache_dir=tmp_path / "b", chunk=30,
                                      progress=False, dataset="head90")
    assert torch.equal(resumed, full)


def test_shipped_cascade_recipes_are_valid_and_name_their_earlier_stages():
    stage2 = load_recipe("mnist_cascade_stage2")
    stage3 = load_recipe("mnist_cascade_stage3")
    assert stage2["train_on"]["not_accepted_by"] == ["mnist_small_robust_full"]
    assert stage3["train_on"]["not_accepted_by"] == ["mnist_small_robust_full", "mnist_cascade_stage2"]


@pytest.mark.parametrize("bad, words", [
    ([], "must be an object"),
    ({"not_accepted_by": [], "eps": 0.1}, "non-empty list"),
    ({"not_accepted_by": ["a"], "eps": 0}, "positive number"),
    ({"not_accepted_by": ["a"], "eps": 0.1, "norm": "l3"}, "l3"),
    ({"not_accepted_by": ["a"], "eps": 0.1, "radius": 1}, "radius"),
])
def test_a_malformed_train_on_is_a_recipe_error_naming_it(bad, words):
    recipe = copy.deepcopy(load_recipe("mnist_cascade_stage2"))
    recipe["train_on"] = bad
    with pytest.raises(RecipeError, match=words):
        validate_recipe(recipe)
