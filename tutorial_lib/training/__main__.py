"""Retrain a checkpoint from its recipe, into a run folder; replace a shipped one only on request.

    python -m tutorial_lib.train mnist_small_natural           # the shipped (CPU) budget
    python -m tutorial_lib.train mnist_small_natural --full    # the paper's budget (for a GPU)
    python -m tutorial_lib.train mnist_small_natural --promote # ... and replace the shipped checkpoint
    python -m tutorial_lib.train runs/mnist_small_natural/<timestamp> --promote   # promote a finished run
    torchrun --nproc_per_node=4 -m tutorial_lib.train mnist_small_natural --full   # several GPUs

A recipe is a JSON file in ``data/recipes/`` (or any path, ``.json`` may be left out). Its
top-level fields are the budget the shipped checkpoint was trained with; ``"full"`` holds
overrides for the paper's budget.

Training writes to runs/<recipe>/<timestamp>/ (checkpoint.pt, state.pt, recipe.json,
metrics.json; $ROBUSTNESS_RUNS_DIR moves runs/) and never to data/checkpoints/: an interrupted
run is resumed by the same command. --promote copies the finished checkpoint into
data/checkpoints/, updates the registry and prints what it replaced.

Before training, a few steps are timed and the cost printed ("estimated N steps x S s = H h M min
on <device>"); on a CPU a run estimated above one hour starts only with --yes.
Under torchrun the same code runs with DistributedDataParallel (NCCL on GPUs, gloo on CPU).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from ..checkpoints import CheckpointNotFoundError, ChecksumMismatchError
from ..data import ChecksumError, DataUnavailableError
from .recipes import RecipeError, promote_run, run_recipe

__all__ = ["main"]

#: the ordinary mistakes answered with one line and exit code 2
USER_ERRORS = (RecipeError, CheckpointNotFoundError, ChecksumMismatchError, DataUnavailableError,
               ChecksumError)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tutorial_lib.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipe name in data/recipes/, path to a recipe JSON, or (with "
                                       "--promote) a finished run folder")
    parser.add_argument("--full", action="store_true", help="the paper's full budget (GPU)")
    parser.add_argument("--promote", action="store_true",
                        help="replace the shipped checkpoint in data/checkpoints/ and its registry entry")
    parser.add_argument("--yes", action="store_true", help="start even when a CPU run is estimated above one hour")
    parser.add_argument("--out", default=None,
                        help="write <name>.pt (and registry.json) to this directory instead of runs/ "
                             "(data/checkpoints only with --promote)")
    parser.add_argument("--no-register", action="store_true", help="with --out: no registry.json there")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if available)")
    parser.add_argument("--data-dir", default=None, help="directory with the dataset files (else $ROBUSTNESS_DATA_DIR)")
    args = parser.parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
    try:
        run = Path(args.recipe)
        if args.promote and run.is_dir():
            if not distributed or torch.distributed.get_rank() == 0:
                promote_run(run)
            return
        run_recipe(args.recipe, full=args.full, out_dir=args.out, register=not args.no_register,
                   device=args.device, data_dir=args.data_dir, progress=True, promote=args.promote,
                   yes=args.yes)
        if distributed:
            torch.distributed.barrier()  # rank 0 evaluates and saves; the others wait for it
    except USER_ERRORS as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    finally:
        if distributed:
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
