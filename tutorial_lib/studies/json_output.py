"""What the study command lines share: a ``--json`` result file that is never replaced without
``--overwrite``, written whole (through a temporary file) so that an interrupted run leaves the old
file or none, never half of one."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional

__all__ = ["add_json_arguments", "refuse_existing_json", "write_json"]


def add_json_arguments(p: argparse.ArgumentParser, what: str = "write the results here") -> None:
    """Add ``--json FILE`` and ``--overwrite`` to a parser."""
    p.add_argument("--json", default=None, help=f"{what} (refused if it exists, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")


def refuse_existing_json(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with status 2, before any work, when ``--json`` names an existing file and
    ``--overwrite`` was not given."""
    if args.json and Path(args.json).exists() and not args.overwrite:
        p.exit(2, f"{p.prog}: error: {args.json} exists: nothing run (pass --overwrite to replace it)\n")


def write_json(obj: Any, path: Optional[str]) -> None:
    """Write ``obj`` as indented JSON to ``path`` (atomically, parents created), or print it when
    ``path`` is None."""
    text = json.dumps(obj, indent=1) + "\n"
    if not path:
        print(text, end="")
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(target)
