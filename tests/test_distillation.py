"""Defensive distillation (notebook 06): soft labels, losses, shipped models, JSMA and the logit attacks.

Uses the shipped checkpoints (``data/checkpoints/papernot_*``) and MNIST from ``ROBUSTNESS_DATA_DIR``.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from tutorial_lib.attacks import JSMA, PGD, CarliniWagnerL2, MarginPGD
from tutorial_lib.checkpoints import load_checkpoint, read_registry
from tutorial_lib.data import test_subset
from tutorial_lib.defenses.distillation import TEMPERATURES, soft_labels, student_name, teacher_name
from tutorial_lib.studies.distillation_study import (
    attack_summary,
    common_correct,
    deployed_models,
    feature_robustness,
    gradient_summary,
    input_gradient_norm,
    load_study,
    random_targets,
    softmax_jacobian,
)
from tutorial_lib.train import load_recipe
from tutorial_lib.training import LOSSES, accuracy

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="module")
def study():
    return load_study()


@pytest.fixture(scope="module")
def data():
    return test_subset("mnist", 500)


@pytest.fixture(scope="module")
def attack_set(study, data):
    """12 test examples every deployed model classifies correctly, with seeded random targets."""
    x, y = common_correct(deployed_models(study), *data, n=12)
    return x, y, random_targets(y, seed=0)


def _entropy(p):
    return -(p * p.clamp_min(1e-30).log()).sum(1)


# --- soft labels and the two losses -------------------------------------------------------------

def test_soft_labels_sum_to_one_and_soften_with_temperature(study, data):
    teacher = study["teachers"][10]
    x = data[0][:200]
    labels = {t: soft_labels(teacher, x, t) for t in (1, 2, 10, 100)}
    for t, p in labels.items():
        assert p.shape == (200, 10)
        assert torch.allclose(p.sum(1), torch.ones(200), atol=1e-5), t
        assert (p >= 0).all()
    ent = [_entropy(labels[t]).mean().item() for t in (1, 2, 10, 100)]
    top = [labels[t].max(1).values.mean().item() for t in (1, 2, 10, 100)]
    assert all(a < b for a, b in zip(ent, ent[1:])), ent  # softer (higher entropy) as T grows
    assert all(a > b for a, b in zip(top, top[1:])), top
    # the argmax (the teacher's decision) does not depend on T
    assert (labels[1].argmax(1) == labels[100].argmax(1)).all()
    with pytest.raises(ValueError):
        soft_labels(teacher, x, 0)


def test_temperature_loss_is_cross_entropy_of_scaled_logits(study, data):
    model = study["teachers"][1]
    x, y = data[0][:64], data[1][:64]
    with torch.no_grad():
        logits = model(x)
        for t in (1, 10):
            loss, out = LOSSES["temperature"](temperature=t)(model, x, y)
            assert torch.equal(out, logits)
            assert torch.allclose(loss, F.cross_entropy(logits / t, y))
        assert torch.allclose(LOSSES["temperature"](temperature=1)(model, x, y)[0],
                              LOSSES["natural"]()(model, x, y)[0])


def test_distillation_loss_is_soft_cross_entropy_minimised_by_the_teacher(study, data):
    teacher, other = study["teachers"][10], study["teachers"][1]
    x, y = data[0][:64], data[1][:64]
    loss_fn = LOSSES["distill"](teacher=teacher, temperature=10)
    with torch.no_grad():
        own, _ = loss_fn(teacher, x, y)
        p = soft_labels(teacher, x, 10)
        expected = -(p * F.log_softmax(other(x) / 10, 1)).sum(1).mean()
        got, logits = loss_fn(other, x, y)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(own, _entropy(p).mean(), atol=1e-5)  # at the teacher: the soft labels' entropy
    assert own < got  # Gibbs: any other model pays a KL divergence on top
    assert logits.shape == (64, 10)
    # a registered name works too (that is what recipes pass), and the loss trains (has a gradient)
    by_name = LOSSES["distill"](teacher=teacher_name(10), temperature=10)
    student = load_checkpoint(student_name(10))[0].train()
    loss, _ = by_name(student, x, y)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_recipes_chain_teachers_and_students():
    reg = read_registry()
    for t in TEMPERATURES:
        tr, sr = load_recipe(teacher_name(t)), load_recipe(student_name(t))
        assert tr["loss"] == "temperature" and tr["loss_kwargs"]["temperature"] == t
        assert sr["loss"] == "distill" and sr["loss_kwargs"] == {"teacher": teacher_name(t), "temperature": t}
        assert tr["model"] == sr["model"] == "papernot_mnist"
        full = load_recipe(student_name(t), full=True)
        assert full["epochs"] == 50 and full["budget"] == "full"
        for name in (teacher_name(t), student_name(t)):
            assert name in reg, name


# --- the shipped models -------------------------------------------------------------------------

def test_shipped_accuracy(study, data):
    reg = read_registry()
    assert reg[teacher_name(1)]["metrics"]["test_acc"] >= 0.99  # full test set, recorded by the CLI
    for t in TEMPERATURES:
        a_teacher = accuracy(study["teachers"][t], data)
        a_student = accuracy(study["students"][t], data)
        assert a_student >= a_teacher - 0.02, (t, a_teacher, a_student)  # keeps the teacher's accuracy
        assert a_student >= 0.95, (t, a_student)  # the shipped 1-epoch budget (see the recipes)


def test_softmax_gradient_collapses_but_logit_gradient_does_not(study, attack_set):
    x = attack_set[0]
    base = gradient_summary(study["teachers"][1], x)
    hot = gradient_summary(study["students"][100], x)
    assert hot["softmax_grad_median"] < 1e-3 * base["softmax_grad_median"]
    assert hot["zero_gradient"] >= 0.5 and hot["top_prob_is_one"] >= 0.5
    assert base["zero_gradient"] == 0.0
    assert hot["logit_grad_median"] > 0.1 * base["logit_grad_median"]  # the logits are not flat
    assert hot["median_logit_gap"] > 10 * base["median_logit_gap"]


def test_zero_gradient_norm_means_every_entry_is_zero(study, attack_set):
    """A collapsed softmax Jacobian has entries down to 1e-45: their float32 squares underflow, so
    the norm is taken in float64 and is 0 only for a Jacobian that is exactly zero."""
    x = attack_set[0]
    for t in (10, 100):
        model = study["students"][t]
        jac = softmax_jacobian(model, x).flatten(1)
        norms = input_gradient_norm(model, x)
        assert norms.dtype == torch.float64
        assert torch.equal(norms == 0, (jac == 0).all(1)), t
        tiny = (jac != 0).any(1) & (jac.abs().max(1).values < 1e-20)
        assert (norms[tiny] > 0).all()  # tiny but not zero: a float32 norm would have said 0
    with torch.no_grad():
        logits = study["students"][100](x)
    assert (F.softmax(logits, 1).max(1).values == 1).all()  # saturated in float32


# --- Papernot et al.'s robustness measure: pixels JSMA must change -------------------------------

def test_feature_robustness_counts_failures_at_the_budget():
    summary = {"success": 0.25, "pixels": 40.0, "unchanged": 0.5, "features": 784}
    r = feature_robustness(summary, budget=112)
    assert r["pixels"] == 40.0 and math.isclose(r["fraction"], 40 / 784)
    assert math.isclose(r["at_least"], 0.25 * 40 + 0.75 * 112)
    assert math.isclose(r["at_least_fraction"], r["at_least"] / 784)
    assert r["success"] == 0.25 and r["unchanged"] == 0.5
    none = feature_robustness({"success": 0.0, "pixels": float("nan"), "unchanged": 1.0, "features": 784}, 112)
    assert math.isnan(none["pixels"]) and none["at_least"] == 112
    every = feature_robustness({"success": 1.0, "pixels": 30.0, "unchanged": 0.0, "features": 784}, 112)
    assert every["at_least"] == every["pixels"] == 30.0
    with pytest.raises(ValueError):
        feature_robustness(summary, budget=-1)


def test_feature_robustness_of_jsma_runs(study, attack_set):
    x, y, target = attack_set
    jsma = JSMA()
    budget = jsma.max_pixels(x[0].numel())
    run = jsma.run(study["teachers"][1], x[:2], y[:2], target[:2])

    class Replay:  # the JSMA run above, replayed (attack_summary calls .run)
        def run(self, model, x, y, target):
            return run

    base = attack_summary(study["teachers"][1], x[:2], y[:2], target[:2], Replay())
    _, ok, n_changed = run
    assert base["features"] == 784 and base["n"] == 2
    assert math.isclose(base["pixels"], n_changed[ok].float().mean().item())
    assert base["unchanged"] == (n_changed == 0).float().mean().item()
    r_base = feature_robustness(base, budget)
    assert r_base["success"] > 0 and 0 < r_base["pixels"] <= budget
    hot = feature_robustness(attack_summary(study["students"][100], x, y, target, jsma), budget)
    assert hot["success"] <= 0.2 and hot["unchanged"] >= 0.8  # stalls at once: no admissible pair
    assert hot["at_least"] > r_base["at_least"]


# --- the attacks --------------------------------------------------------------------------------

def test_jsma_respects_gamma_box_and_direction(study, attack_set):
    x, y, target = attack_set
    model = study["teachers"][1]
    jsma = JSMA()
    x, y, target = x[:5], y[:5], target[:5]
    x_adv, success, n_changed = jsma.run(model, x, y, target)
    assert x_adv.shape == x.shape
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv >= x).all()  # this JSMA only increases pixels
    d = x[0].numel()
    assert jsma.max_pixels(d) == 112 and jsma.max_pixels(d) <= 0.145 * d
    assert (n_changed <= math.floor(0.145 * d)).all()
    assert torch.equal(n_changed, (x_adv != x).flatten(1).sum(1))
    with torch.no_grad():
        assert torch.equal(success, model(x_adv).argmax(1) == target)
    assert success.float().mean() >= 0.6  # the undefended model falls to JSMA
    assert torch.equal(jsma(model, x[:2], y[:2], target[:2]), x_adv[:2])  # deterministic, same call shape
    with pytest.raises(ValueError):
        jsma.run(model, x[:2], y[:2], y[:2])  # a target equal to the label
    with pytest.raises(RuntimeError):
        jsma.run(model.train(), x[:2], y[:2], target[:2])
    model.eval()


def test_t100_student_defeats_jsma_but_not_the_logit_attacks(study, attack_set):
    """The notebook's claim: on the T = 100 student JSMA (softmax saliency) mostly fails, while the
    attacks on the logits, on the same examples and targets, almost always succeed."""
    x, y, target = attack_set
    student = study["students"][100]
    jsma = attack_summary(student, x, y, target, JSMA())
    cw = attack_summary(student, x, y, target, CarliniWagnerL2(steps=30, binary_steps=2, lr=0.1))
    pgd = attack_summary(student, x, y, target, MarginPGD(eps=0.3, steps=20, alpha=0.03))
    assert jsma["success"] <= 0.2, jsma
    assert cw["success"] >= 0.9, cw
    assert pgd["success"] >= 0.6, pgd
    assert cw["success"] - jsma["success"] >= 0.7
    assert cw["l2"] < 5.0  # at a small distortion, not by rewriting the digit


def test_untargeted_pgd_on_cross_entropy_is_masked_but_margin_pgd_is_not(study, attack_set):
    x, y, _ = attack_set
    student = study["students"][100]
    ce = attack_summary(student, x, y, None, PGD(eps=0.2, steps=20, random_start=False))
    mg = attack_summary(student, x, y, None, MarginPGD(eps=0.2, steps=20, random_start=False))
    assert mg["success"] >= ce["success"] + 0.5, (ce, mg)


def test_carlini_wagner_outputs(study, attack_set):
    x, y, target = attack_set
    model = study["teachers"][1]
    x, y, target = x[:4], y[:4], target[:4]
    cw = CarliniWagnerL2(steps=30, binary_steps=2, lr=0.1)
    x_adv, success, l2 = cw.run(model, x, y, target)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.allclose(l2[success], (x_adv - x).flatten(1).norm(dim=1)[success], atol=1e-5)
    assert torch.equal(x_adv[~success], x[~success])  # failures are returned unchanged
    assert (l2[~success] == 0).all()
    assert success.any()
    with torch.no_grad():
        assert torch.equal(success, model(x_adv).argmax(1) == target)
    # untargeted: any class but the label
    x_u, ok_u, _ = cw.run(model, x, y)
    with torch.no_grad():
        assert torch.equal(ok_u, model(x_u).argmax(1) != y)


def test_margin_pgd_stays_in_ball(study, attack_set):
    x, y, target = attack_set
    model = study["teachers"][1]
    x_adv = MarginPGD(eps=0.1, steps=5)(model, x, y, target)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


# --- the explorer -------------------------------------------------------------------------------

def test_temperature_explorer_function(study, attack_set):
    import matplotlib

    matplotlib.use("Agg")
    from tutorial_lib.viz.distillation_plots import show_temperature, temperature_records

    x, y, target = attack_set
    students = {t: study["students"][t] for t in (1, 100)}
    records = temperature_records(students, x[:1], int(y[0]), int(target[0]), JSMA(),
                                  CarliniWagnerL2(steps=30, binary_steps=2, lr=0.1))
    cold, hot = show_temperature(1, records, draw=False), show_temperature(100, records)
    assert torch.allclose(cold["probs"].sum(), torch.tensor(1.0), atol=1e-5)
    assert hot["probs"].max().item() == 1.0  # saturated softmax
    assert hot["softmax_grad"] < 1e-3 * cold["softmax_grad"]
    assert not hot["jsma"]["success"] and hot["jsma"]["pixels"] == 0
    assert hot["logit_attack"]["success"] and hot["logit_attack"]["pred"] == int(target[0])
    with pytest.raises(KeyError):
        show_temperature(5, records)
