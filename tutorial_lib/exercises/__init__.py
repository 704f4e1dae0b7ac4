"""Checkers for the notebooks' implement exercises: ``check_<name>(student_fn)``.

Each checker runs a student's function on fixed cases and prints, in words, what is right and
what is wrong; it returns a :class:`~tutorial_lib.exercises.checking.CheckResult` and never
raises for a wrong answer, so an unfinished notebook still runs top to bottom. Reference
solutions live apart, in ``notebooks/solutions/`` (``make student`` hands out the notebooks
without them).

One module per notebook (its ``__all__`` lists its checkers):

* ``checking.py`` -- :class:`Checker`, :class:`CheckResult`: what every checker shares;
* ``baseline.py`` (00), ``attacks.py`` (01), ``adversarial_training.py`` (02), ``trades.py`` (03),
  ``polytope.py`` (04), ``dual_network.py`` (05), ``distillation.py`` (06), ``scaling.py`` (07),
  ``cascades.py`` (08),
  ``evaluation.py`` (09), ``certified_training.py`` (10).
"""
from importlib import import_module

from .checking import Checker, CheckResult

MODULES = ("baseline", "attacks", "adversarial_training", "trades", "polytope", "dual_network",
           "distillation", "scaling", "cascades", "evaluation", "certified_training")

__all__ = ["Checker", "CheckResult", "MODULES"]



def _collect():
    """Re-export every module's checkers (a module not written yet is skipped)."""
    for name in MODULES:
        try:
            module = import_module(f".{name}", __name__)
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            continue
        for check in module.__all__:
            globals()[check] = getattr(module, check)
            __all__.append(check)


_collect()
