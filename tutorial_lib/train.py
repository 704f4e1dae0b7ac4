"""``python -m tutorial_lib.train <recipe> [--full]``: the command that reproduces a shipped
checkpoint. A thin entry point; the code lives in :mod:`tutorial_lib.training.recipes`."""
from .training.__main__ import main
from .training.recipes import RECIPE_DIR, latest_run, load_recipe, load_run, promote_run, retrain, run_recipe

__all__ = ["RECIPE_DIR", "load_recipe", "run_recipe", "retrain", "load_run", "latest_run", "promote_run", "main"]

if __name__ == "__main__":
    main()
