"""Training: the one loop, the one loss registry, the recipes behind every shipped checkpoint.

* :func:`fit` (:mod:`.loop`)      train a model with any loss ``loss_fn(model, x, y)``, resumable
* :data:`LOSSES` (:mod:`.losses`) every training loss by the name a recipe uses
* :func:`load_recipe`, :func:`run_recipe` (:mod:`.recipes`) reproduce a shipped checkpoint;
  ``python -m tutorial_lib.train <recipe>`` on the command line

The run helpers (:func:`accuracy`, :func:`predict`, :func:`eval_mode`, :func:`default_device`,
:func:`set_seed`) live in :mod:`tutorial_lib.runtime` and are re-exported here for the notebooks.
"""
from ..defenses.schedule import linear_ramp
from ..runtime import accuracy, default_device, eval_mode, is_distributed, is_main_process, predict, set_seed
from .loop import LossFn, fit
from .losses import LOSSES, cross_entropy_loss
from .recipes import RECIPE_DIR, load_recipe, run_recipe

__all__ = ["fit", "LossFn", "LOSSES", "cross_entropy_loss", "load_recipe", "run_recipe", "RECIPE_DIR",
           "accuracy", "predict", "eval_mode", "default_device", "set_seed", "is_distributed",
           "is_main_process", "linear_ramp"]
