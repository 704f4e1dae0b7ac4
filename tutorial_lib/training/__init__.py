"""Training: the one loop, the one loss registry, the recipes behind every shipped checkpoint.

* :func:`fit` (:mod:`.loop`)      train a model with any loss ``loss_fn(model, x, y)``, resumable
* :data:`LOSSES` (:mod:`.losses`) every training loss by the name a recipe uses
* :func:`load_recipe`, :func:`run_recipe`, :func:`retrain` (:mod:`.recipes`) reproduce a shipped
  checkpoint into ``runs/<recipe>/<timestamp>/`` (:func:`load_run`, :func:`latest_run` read it back;
  :func:`promote_run` replaces the shipped one); ``python -m tutorial_lib.train <recipe>``

The run helpers (:func:`accuracy`, :func:`predict`, :func:`eval_mode`, :func:`default_device`,
:func:`set_seed`) live in :mod:`tutorial_lib.runtime` and are re-exported here for the notebooks.
"""
from ..defenses.schedule import linear_ramp
from ..runtime import accuracy, default_device, eval_mode, is_distributed, is_main_process, predict, set_seed
from .loop import LossFn, fit
from .losses import LOSSES, cross_entropy_loss
from .recipes import (
    RECIPE_DIR,
    latest_run,
    load_recipe,
    load_run,
    plan_recipe,
    promote_run,
    retrain,
    run_recipe,
)

__all__ = ["fit", "LossFn", "LOSSES", "cross_entropy_loss", "load_recipe", "run_recipe", "RECIPE_DIR",
           "retrain", "load_run", "latest_run", "promote_run", "plan_recipe", "accuracy", "predict",
           "eval_mode", "default_device", "set_seed", "is_distributed", "is_main_process", "linear_ramp"]
