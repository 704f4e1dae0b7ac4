"""Reproduce a shipped checkpoint from its recipe.

    python -m tutorial_lib.train mnist_small_natural           # the shipped (CPU) budget
    python -m tutorial_lib.train mnist_small_natural --full    # the paper's budget (for a GPU)
    torchrun --nproc_per_node=4 -m tutorial_lib.train mnist_small_natural --full   # several GPUs

A recipe is a JSON file in ``data/recipes/`` (or any path). Its top-level fields are the budget
the shipped checkpoint was trained with; ``"full"`` holds overrides for the paper's budget.
Under ``torchrun`` the same code runs with DistributedDataParallel (NCCL on GPUs, gloo on CPU).
"""
from __future__ import annotations

import argparse
import os

import torch

from ..checkpoints import CHECKPOINT_DIR
from .recipes import run_recipe

__all__ = ["main"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tutorial_lib.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipe name in data/recipes/ or path to a recipe JSON")
    parser.add_argument("--full", action="store_true", help="the paper's full budget (GPU)")
    parser.add_argument("--out", default=str(CHECKPOINT_DIR), help="output directory (default: data/checkpoints)")
    parser.add_argument("--no-register", action="store_true", help="do not record the checkpoint in the registry")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if available)")
    parser.add_argument("--data-dir", default=None, help="directory with the dataset files (else $ROBUSTNESS_DATA_DIR)")
    args = parser.parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
    try:
        run_recipe(args.recipe, full=args.full, out_dir=args.out, register=not args.no_register,
                   device=args.device, data_dir=args.data_dir, progress=True)
        if distributed:
            torch.distributed.barrier()  # rank 0 evaluates and saves; the others wait for it
    finally:
        if distributed:
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()


if __name__ == "__main__":
    main()
