"""``python -m tutorial_lib.train <recipe> [--full]``: the command that reproduces a shipped
checkpoint. A thin entry point; the code lives in :mod:`tutorial_lib.training.recipes`."""
from .training.__main__ import main
from .training.recipes import RECIPE_DIR, load_recipe, run_recipe

__all__ = ["RECIPE_DIR", "load_recipe", "run_recipe", "main"]

if __name__ == "__main__":
    main()
