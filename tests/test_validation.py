"""Nothing silently wrong: inputs that would give NaN examples, a wrong accuracy or a cryptic torch
error are refused with a message naming the problem (tutorial_lib.validation, used by every
attack and by evaluate / accuracy_vs_eps)."""
import ast
import functools
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tutorial_lib import attacks as A, validation as V
from tutorial_lib.models import build_model


@pytest.fixture(scope="module")
def batch(mnist_test):
    x, y = mnist_test
    return x[:6].clone(), y[:6].clone()


def _attacks():
    """Every attack, configured to be quick: the checks run before any work."""
    return {"FGSM": A.FGSM(0.1), "PGD": A.PGD(0.1, steps=2), "MarginPGD": A.MarginPGD(0.1, steps=2),
            "JSMA": A.JSMA(gamma=0.01), "CarliniWagnerL2": A.CarliniWagnerL2(steps=2, binary_steps=1)}


def _runners(model):
    """name -> f(x, y): each attack, the transfer wrapper, evaluate (two ways) and accuracy_vs_eps."""
    out = {name: functools.partial(a, model) for name, a in _attacks().items()}
    out["TransferAttack"] = lambda x, y: A.TransferAttack(model, A.FGSM(0.1))(model, x, y)
    out["evaluate"] = lambda x, y: A.evaluate(model, (x, y), {"fgsm": A.FGSM(0.1)}, batch_size=4,
                                              progress=False)
    out["evaluate-loader"] = lambda x, y: A.evaluate(model, DataLoader(TensorDataset(x, y), batch_size=4),
                                                     progress=False)
    out["accuracy_vs_eps"] = lambda x, y: A.accuracy_vs_eps(model, (x, y), [0.1], lambda e: A.FGSM(e))
    return out


RUNNERS = ["FGSM", "PGD", "MarginPGD", "JSMA", "CarliniWagnerL2", "TransferAttack", "evaluate",
           "evaluate-loader", "accuracy_vs_eps"]


# ---------------------------------------------------------------------------------------------
# Non-finite inputs
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("value, kind", [(float("nan"), "NaN"), (float("inf"), "inf"), (-float("inf"), "inf")])
def test_non_finite_pixel_is_refused(natural_model, batch, runner, value, kind):
    x, y = batch
    x = x.clone()
    x[5, 0, 3, 4] = value  # example 5 sits in the second batch of 4 in evaluate: its index stays 5
    with pytest.raises(ValueError, match=rf"x has 1 non-finite value \(1 {kind}\) in 1 example \(index 5\)"):
        _runners(natural_model)[runner](x, y)


def test_non_finite_message_counts_values_and_lists_the_first_examples():
    x = torch.zeros(10, 1, 2, 2)
    x[[0, 2, 3, 5, 7, 9], 0, 0, 0] = float("nan")
    x[2, 0, 1, 1] = float("inf")
    with pytest.raises(ValueError, match=r"x has 7 non-finite values \(6 NaN, 1 inf\) in 6 examples "
                                         r"\(index 0, 2, 3, 5, 7, \.\.\.\)"):
        V.check_finite("x", x)
    with pytest.raises(ValueError, match=r"index 100, 102"):
        V.check_finite("x", x, offset=100)
    V.check_finite("x", torch.zeros(3, 4))
    V.check_finite("y", torch.tensor([1, 2]))  # integers are finite


# ---------------------------------------------------------------------------------------------
# Dtypes and shapes
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("runner", RUNNERS)
def test_float64_input_names_both_dtypes(natural_model, batch, runner):
    x, y = batch
    with pytest.raises(TypeError, match=r"x is float64 but the model's weights are float32: call x\.float\(\)"):
        _runners(natural_model)[runner](x.double(), y)


def test_integer_input_is_refused(natural_model, batch):
    x, y = batch
    with pytest.raises(TypeError, match="floating-point"):
        A.FGSM(0.1)(natural_model, (x * 255).to(torch.uint8), y)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("shape", [(6, 1, 28, 27), (6, 784)])
def test_wrong_input_shape_names_the_shape(natural_model, batch, runner, shape):
    x, y = batch
    bad = x.flatten(1)[:, :shape[-1] * (shape[-2] if len(shape) == 4 else 1)].reshape(shape)
    with pytest.raises(ValueError, match=r"x has shape \(\d+, " + ", ".join(map(str, shape[1:]))
                       + r"\).*expects another input shape") as info:
        _runners(natural_model)[runner](bad, y)
    assert isinstance(info.value.__cause__, RuntimeError)  # the model's own error, chained


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("label", [10, -1])
def test_label_out_of_range(natural_model, batch, runner, label):
    x, y = batch
    y = y.clone()
    y[5] = label  # in the second batch of 4 in evaluate: its index stays 5
    with pytest.raises(ValueError, match=rf"y must lie in \[0, 10\).*1 example \(index 5\) has y = {label}$"):
        _runners(natural_model)[runner](x, y)


@pytest.mark.parametrize("attack", ["PGD", "JSMA", "CarliniWagnerL2"])
def test_target_out_of_range(natural_model, batch, attack):
    x, y = batch
    target = (y + 1) % 10
    target[0] = 10
    with pytest.raises(ValueError, match=r"target must lie in \[0, 10\)"):
        _attacks()[attack](natural_model, x, y, target)
    with pytest.raises(TypeError, match="target must hold integer"):
        _attacks()[attack](natural_model, x, y, target.float())


def test_int32_labels_work_like_int64(natural_model, batch):
    x, y = batch
    for attack in (A.FGSM(0.1), A.PGD(0.1, steps=2)):
        assert torch.equal(attack(natural_model, x, y.int()), attack(natural_model, x, y))


def test_check_labels():
    V.check_labels(torch.tensor([0, 9]), 2, 10)
    V.check_labels(torch.tensor([0, 12]), 2, None)  # no K: no range check
    with pytest.raises(TypeError, match="integer"):
        V.check_labels(torch.tensor([True, False]), 2, 10)
    with pytest.raises(ValueError, match=r"must have shape \(3,\)"):
        V.check_labels(torch.tensor([0, 1]), 3, 10)
    with pytest.raises(ValueError, match=r"2 examples \(index 0, 1\) have y = 10, 11"):
        V.check_labels(torch.tensor([10, 11, 3]), 3, 10)


def test_probe_counts_classes_without_side_effects():
    torch.manual_seed(0)
    model = build_model("papernot_mnist")  # has dropout; left in training mode on purpose
    model.train()
    model[0].eval()  # a mixed state survives the probe
    x = torch.rand(3, 1, 28, 28)
    state = torch.get_rng_state()
    assert V.probe_num_classes(model, x) == 10
    assert torch.equal(torch.get_rng_state(), state)  # no random numbers drawn
    assert model.training and not model[0].training and model[1].training
    assert V.probe_num_classes(model, torch.rand(0, 1, 28, 28)) is None


# ---------------------------------------------------------------------------------------------
# eps
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [A.FGSM, A.PGD, A.MarginPGD, lambda e: A.PGD(e, norm="l2")])
def test_eps_as_string_is_a_type_error(make):
    with pytest.raises(TypeError, match=r"eps must be a number, got str '0\.3'"):
        make("0.3")


def test_eps_values_as_strings_in_the_curve(natural_model, batch):
    with pytest.raises(TypeError, match=r"eps_values\[1\] must be a number, got str '0\.3'"):
        A.accuracy_vs_eps(natural_model, batch, [0.1, "0.3"], lambda e: A.FGSM(e))


@pytest.mark.parametrize("make", [A.FGSM, A.PGD, A.MarginPGD])
@pytest.mark.parametrize("eps", [float("nan"), float("inf"), -0.1])
def test_eps_not_finite_or_negative(make, eps):
    with pytest.raises(ValueError, match="eps must be"):
        make(eps)


@pytest.mark.parametrize("make", [A.FGSM, A.PGD, A.MarginPGD])
def test_eps_wider_than_the_box_warns(make):
    with pytest.warns(UserWarning, match=r"eps = 8 exceeds the width of the input box \[0, 1\]: every input "
                                         r"in the box is reachable; did you mean 8/255 = 0\.0314\?"):
        make(8)


def test_eps_warning_follows_the_box_and_norm():
    with pytest.warns(UserWarning, match=r"eps = 1 equals the width"):
        A.FGSM(1.0)
    with pytest.warns(UserWarning, match=r"\[-1, 1\]"):
        A.FGSM(3, clip=(-1.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A.PGD(8, norm="l2")  # an l2 ball of radius 8 does not cover 784 pixels
        A.FGSM(8, clip=(0.0, 255.0))
        A.FGSM(8, clip=None)
        A.FGSM(8 / 255)


def test_check_eps_returns_numbers_and_tensors():
    assert V.check_eps(0.25) == 0.25 and isinstance(V.check_eps(0), float)
    assert V.check_eps(torch.tensor(0.5)) == 0.5
    per_example = torch.tensor([0.1, 0.2])
    assert torch.equal(V.check_eps(per_example), per_example)
    with pytest.raises(TypeError, match="bool"):
        V.check_eps(True)
    with pytest.raises(ValueError, match="finite"):
        V.check_eps(torch.tensor([0.1, float("nan")]))
    with pytest.warns(UserWarning, match="eps = 2"):
        V.check_eps(torch.tensor([0.1, 2.0]))


# ---------------------------------------------------------------------------------------------
# Valid input: no warning, no error; the module stands alone
# ---------------------------------------------------------------------------------------------

def test_valid_input_gives_no_warning(natural_model, batch):
    x, y = batch
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for attack in _attacks().values():
            assert attack(natural_model, x, y).shape == x.shape
        A.PGD(8 / 255, steps=2)(natural_model, x, y, (y + 1) % 10)
        A.evaluate(natural_model, (x, y), {"fgsm": A.FGSM(0.1)}, progress=False)
        A.accuracy_vs_eps(natural_model, (x, y), [0, 0.1], lambda e: A.FGSM(e))
        assert V.check_batch(natural_model, x, y) == 10


def test_validation_imports_nothing_from_tutorial_lib():
    """The bounds may import it: it must not pull in the attacks (or anything else of ours)."""
    tree = ast.parse((Path(V.__file__)).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    levels = [n.level for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.startswith("tutorial_lib")] and not any(levels)
