"""The 2-D toy cascade of notebook 08: training, region maps, the unsound spot, the sound
certificate, the view behind the explorer, the picture and the widget."""
import matplotlib

matplotlib.use("Agg")
import pytest
import torch

from tutorial_lib import bounds as B
from tutorial_lib.defenses import cascade as DC
from tutorial_lib.studies import cascade_toy as CT
from tutorial_lib.viz import cascade_plots as CP, widgets as WG

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy():
    return CT.toy_cascade(seed=0)


@pytest.fixture(scope="module")
def grid(toy):
    return CT.cascade_grid(toy, resolution=101)


@pytest.fixture(scope="module")
def spot(toy):
    return CT.find_unsound_spot(toy)


def _by_hand(stages, x, eps, fallback=-1):
    """The cascade's rule written out: forward passes, the dual bound of each stage's own
    prediction, the first stage whose bound is positive, else the fallback."""
    with torch.no_grad():
        preds = torch.stack([m(x).argmax(1) for m in stages])
        accepts = torch.stack([B.is_certified(B.dual_bounds(m, x, p, eps, clip=(0.0, 1.0)).lower)
                               for m, p in zip(stages, preds)])
    answer, stage = [], []
    for n in range(x.shape[0]):
        first = [k for k in range(len(stages)) if accepts[k, n]]
        stage.append(first[0] if first else fallback % len(stages))
        answer.append(int(preds[stage[-1], n]))
    return preds, accepts, torch.tensor(answer), torch.tensor(stage)


def test_same_seed_same_weights_and_the_global_generator_untouched(toy):
    state = torch.random.get_rng_state()
    again = CT.toy_cascade(seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    for a, b in zip(toy.stages, again.stages):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    other = CT.toy_cascade(seed=1, steps=5)
    assert not torch.equal(other.stages[0][0].weight, toy.stages[0][0].weight)


def test_each_stage_is_trained_on_what_the_earlier_ones_leave(toy):
    n = len(toy.x)
    assert toy.x.shape == (n, 2) and 0 <= toy.x.min() and toy.x.max() <= 1
    assert set(toy.y.tolist()) == {0, 1, 2}
    left = torch.arange(n)
    for k, model in enumerate(toy.stages):
        assert toy.trained_on[k] == len(left)
        _, ok = DC.stage_accepts(model, toy.x[left], toy.eps)
        assert toy.accepted[k] == int(ok.sum())
        left = left[~ok]
    # the robust first stage accepts most points, and it mostly accepts the right class
    pred, ok = DC.stage_accepts(toy.stages[0], toy.x, toy.eps)
    assert ok.float().mean() > 0.5 and (pred[ok] == toy.y[ok]).float().mean() > 0.9


def test_too_few_points_left_trains_on_everything():
    toy = CT.toy_cascade(seed=0, n=60, steps=3, min_points=61)
    assert toy.trained_on == [60, 60, 60]


def test_region_map_agrees_with_the_rule_written_out(toy, grid):
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, grid.points.shape[0], (300,), generator=g)
    x = grid.points[rows]
    preds, accepts, answer, stage = _by_hand(toy.stages, x, toy.eps)
    for k, model in enumerate(toy.stages):
        p, ok = DC.stage_accepts(model, x, toy.eps)
        assert torch.equal(p, preds[k]) and torch.equal(ok, accepts[k])
    i, j = rows // grid.resolution, rows % grid.resolution
    assert torch.allclose(x, torch.stack([grid.coords[j], grid.coords[i]], 1))
    assert torch.equal(grid.preds[:, i, j], preds) and torch.equal(grid.accepts[:, i, j], accepts)
    assert torch.equal(grid.answer[i, j], answer) and torch.equal(grid.stage[i, j], stage)
    first = torch.where(accepts.any(0), accepts.float().argmax(0), torch.full_like(stage, -1))
    assert torch.equal(grid.accepting[i, j], first)
    assert torch.equal(grid.paper[i, j], first >= 0)
    assert torch.equal(grid.sound[i, j], (preds == answer).all(0) & accepts[-1])
    assert torch.equal(toy.cascade.predict(x), answer)
    # every stage accepts somewhere, and somewhere none does (the fallback answers there)
    assert set(grid.accepting.unique().tolist()) == {-1, 0, 1, 2}


def test_certifying_a_given_label(toy, grid):
    g1 = CT.cascade_grid(toy, resolution=101, label=1)
    assert torch.equal(g1.paper, (grid.accepting >= 0) & (grid.answer == 1))
    assert torch.equal(g1.sound, (grid.preds == 1).all(0) & grid.accepts[-1])
    assert not g1.paper[grid.answer != 1].any()


def test_the_unsound_spot_is_real(toy, spot):
    x, x_prime, stage_x, stage_xp = spot
    assert (x_prime - x).abs().max() <= toy.eps + 1e-7
    assert 0 <= x.min() and x.max() <= 1 and 0 <= x_prime.min() and x_prime.max() <= 1
    _, accepts, answer, stage = _by_hand(toy.stages, torch.stack([x, x_prime]), toy.eps)
    assert accepts[:, 0].any(), "the paper's certifier must accept x"
    assert answer[1] != answer[0], "x' must get another answer"
    assert (int(stage[0]), int(stage[1])) == (stage_x, stage_xp)
    # the sound certificate refuses x
    assert not CT.cascade_toy_view(toy, x.tolist())["sound"]


def test_the_attack_finds_an_unsound_spot_too(toy):
    x, x_prime, stage_x, stage_xp = CT.find_unsound_spot(toy, method="attack", attack_points=40)
    assert (x_prime - x).abs().max() <= toy.eps + 1e-6
    _, accepts, answer, stage = _by_hand(toy.stages, torch.stack([x, x_prime]), toy.eps)
    assert accepts[:, 0].any() and answer[1] != answer[0]
    assert (int(stage[0]), int(stage[1])) == (stage_x, stage_xp)


def test_the_unsound_spot_also_exists_with_the_first_stage_as_fallback(toy):
    x, x_prime, _, _ = CT.find_unsound_spot(toy, fallback=0)
    _, accepts, answer, _ = _by_hand(toy.stages, torch.stack([x, x_prime]), toy.eps, fallback=0)
    assert accepts[:, 0].any() and answer[1] != answer[0]


def test_no_spot_is_invented_for_a_single_stage():
    """One stage is an ordinary certified model: its certificate is sound, nothing to find."""
    toy = CT.toy_cascade(seed=0, num_stages=1, steps=150)
    g = CT.cascade_grid(toy, resolution=51)
    assert g.paper.any() and not g.unsound.any()
    with pytest.raises(LookupError):
        CT.find_unsound_spot(toy, resolution=51)


def test_the_sound_certificate_holds_on_dense_samples_of_the_box(toy, grid):
    assert grid.sound.any() and not (grid.sound & ~grid.paper).any()
    assert not (grid.sound & grid.unsound).any()
    assert grid.unsound.any()
    # the sound points nearest to another answer are the hardest: take 40 of them
    steps = round(toy.eps / grid.spacing)
    other = (grid.answer[None, None] != torch.arange(3)[:, None, None, None]).float()
    near = torch.nn.functional.avg_pool2d(other, 2 * steps + 1, 1, steps, count_include_pad=False)[:, 0]
    share = near.gather(0, grid.label[None])[0]
    rows = torch.where(grid.sound, share, torch.full_like(share, -1)).flatten().argsort(descending=True)[:40]
    g = torch.Generator().manual_seed(1)
    for r in rows.tolist():
        x, label = grid.points[r], int(grid.label.flatten()[r])
        box = CT.ball_samples(x, toy.eps, 31)
        box = torch.cat([box, (x + toy.eps * (2 * torch.rand(200, 2, generator=g) - 1)).clamp(0, 1)])
        _, _, answer, _ = _by_hand(toy.stages, box, toy.eps)
        assert (answer == label).all(), f"sound certificate broken at {x.tolist()}"


def test_view_matches_the_rule(toy, grid, spot):
    v = CT.cascade_toy_view(toy, spot.x.tolist())
    preds, accepts, answer, stage = _by_hand(toy.stages, spot.x[None], toy.eps)
    assert v["stage_preds"] == preds[:, 0].tolist() and v["stage_accepts"] == accepts[:, 0].tolist()
    assert (v["answer"], v["stage"]) == (int(answer[0]), int(stage[0])) == (v["answer"], spot.stage_at_x)
    assert v["paper"] and not v["sound"] and v["other_answer"] and v["broken"]
    assert (v["x_prime"] - spot.x).abs().max() <= toy.eps + 1e-7
    _, _, a_xp, s_xp = _by_hand(toy.stages, v["x_prime"][None], toy.eps)
    assert (int(a_xp[0]), int(s_xp[0])) == (v["x_prime_answer"], v["x_prime_stage"]) and a_xp[0] != v["answer"]
    assert {v["answer"], v["x_prime_answer"]} <= set(v["box_answers"])
    assert "WRONG" in CT.describe_view(v)
    # a sound grid point far from every other answer: nothing to find in its box
    r = int((grid.sound & ~grid.unsound).flatten().nonzero()[0])
    w = CT.cascade_toy_view(toy, grid.points[r].tolist())
    assert w["sound"] and w["paper"] and not w["other_answer"] and w["x_prime"] is None
    assert w["box_answers"] == [w["answer"]] and not w["broken"]
    # where no stage accepts, the fallback answers: the last stage, or the first one
    r = int((grid.accepting < 0).flatten().nonzero()[0])
    p = grid.points[r].tolist()
    last, first = CT.cascade_toy_view(toy, p), CT.cascade_toy_view(toy, p, fallback=0)
    assert (last["stage"], first["stage"]) == (2, 0) and not last["paper"] and not first["paper"]
    assert first["answer"] == first["stage_preds"][0] and last["answer"] == last["stage_preds"][2]


def test_bad_input_is_refused(toy):
    with pytest.raises(ValueError, match="fallback"):
        CT.cascade_grid(toy, resolution=11, fallback=3)
    with pytest.raises(ValueError, match="box"):
        CT.cascade_toy_view(toy, (1.2, 0.5))
    with pytest.raises(ValueError, match="resolution"):
        CT.cascade_grid(toy, resolution=1)
    with pytest.raises(ValueError, match="method"):
        CT.find_unsound_spot(toy, resolution=11, method="guess")
    with pytest.raises(ValueError, match="label"):
        CT.cascade_grid(toy, resolution=11, label=3)


def test_the_picture_draws_what_it_says(grid, spot):
    from matplotlib.patches import Rectangle
    ax = CP.plot_cascade_regions(grid, point=spot.x.tolist(), x_prime=spot.x_prime.tolist())
    assert "stage" in ax.get_title() and "eps = 0.08" in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"stage 1 accepts", "stage 2 accepts", "stage 3 accepts", "x' (another answer)"} <= set(labels)
    lo, hi = (spot.x - grid.eps).clamp(0, 1), (spot.x + grid.eps).clamp(0, 1)
    boxes = [(p.get_x(), p.get_y(), p.get_width(), p.get_height()) for p in ax.patches if isinstance(p, Rectangle)]
    want = (lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1])
    assert any(all(abs(a - float(b)) < 1e-6 for a, b in zip(box, want)) for box in boxes), boxes
    # the region image holds one pale colour per stage and white where none accepts
    assert len(ax.images) == 1 and len({tuple(c) for c in CP.region_image(grid).reshape(-1, 3)}) == 4
    assert len(ax.collections) >= 8  # hatching, contours, training points, the box's points, x, x'


def test_the_view_figure_and_the_widget(toy, grid, spot, monkeypatch):
    view = CT.cascade_toy_view(toy, spot.x.tolist())
    fig = CP.draw_cascade_view(grid, view)
    assert any("WRONG" in t.get_text() for t in fig.texts)
    pytest.importorskip("ipywidgets")
    calls = []
    real = CT.cascade_toy_view

    def recording(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(CT, "cascade_toy_view", recording)
    box = WG.cascade_explorer(toy, resolution=51)
    assert len(calls) == 1 and tuple(calls[0][1]) == (0.5, 0.5)
    sliders = [w for row in box.children[:2] for w in getattr(row, "children", ())]
    x1 = next(w for w in sliders if w.description == "x1")
    fallback = next(w for w in sliders if w.description == "fallback")
    x1.value = 0.25
    assert len(calls) == 2 and tuple(calls[1][1]) == (0.25, 0.5) and calls[1][3] == -1
    fallback.value = "first"
    assert len(calls) == 3 and calls[2][3] == 0
