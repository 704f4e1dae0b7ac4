"""Notebook 08's MNIST cascade evaluation (studies.cascade_eval): its numbers agree with each other
and with the library, the sound examples survive the attack, and the command never overwrites."""
import json
import subprocess
import sys

import pytest
import torch

from tutorial_lib.data import test_subset
from tutorial_lib.defenses import Cascade, certify_cascade
from tutorial_lib.studies import cascade_eval as CE

pytestmark = pytest.mark.usefixtures("one_thread")

# a stand-in cascade of shipped models (the natural fallback makes the paper's claims breakable)
NAMES = ("mnist_small_robust_full", "mnist_small_natural")


@pytest.fixture(scope="module")
def result():
    x, y = test_subset("mnist", 40)
    cascade = CE.load_cascade(names=NAMES)
    return cascade, x, y, CE.evaluate(cascade, x, y, check_sound=3, progress=False, attack_kwargs={"steps": 10})


def test_rates_agree_with_the_library(result):
    cascade, x, y, out = result
    cert = certify_cascade(cascade, x, y)
    s = out["summary"]
    assert s["paper_certified_accuracy"] == pytest.approx(float(cert.paper.float().mean()), abs=1e-6)
    assert s["sound_certified_accuracy"] <= s["paper_certified_accuracy"]
    single = certify_cascade(Cascade([cascade.stages[0]], 0.1), x, y)
    assert out["stage_certified"]["stage 1"] == pytest.approx(float(single.paper.float().mean()), abs=1e-6)
    first = certify_cascade(Cascade(list(cascade.stages), 0.1, fallback=0), x, y)
    assert out["fallback_first"]["sound_certified_accuracy"] == pytest.approx(float(first.sound.float().mean()),
                                                                              abs=1e-6)


def test_attack_counts_and_breaks_are_real(result):
    cascade, x, y, out = result
    a = out["attack"]
    assert a["attacked"] == a["claimed_not_sound"] > 0
    assert 0 < a["broken"] <= a["attacked"]  # a natural fallback: the paper's claims do break
    idx = torch.tensor(a["broken_indices"])
    cert = certify_cascade(cascade, x, y)
    assert cert.paper[idx].all() and not cert.sound[idx].any()
    assert out["sound_check"]["broken"] == 0 and out["sound_check"]["attacked"] <= 3


def test_the_command_refuses_to_overwrite(tmp_path):
    path = tmp_path / "cascade.json"
    path.write_text("{}")
    run = subprocess.run([sys.executable, "-m", "tutorial_lib.studies.cascade_eval", "--n", "5", "--json", str(path)],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "--overwrite" in run.stderr
    assert json.loads(path.read_text()) == {}
