"""Every link in the notebooks' markdown resolves: a relative path to an existing file, and an
anchor (``other.ipynb#Heading-text`` or ``#Heading-text``) to a heading of that notebook, as
Jupyter names it (the heading's text, spaces as '-', percent-decoded)."""
import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$", re.M)


def _markdown(path):
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            yield cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def _anchors(path):
    return {h.replace(" ", "-") for text in _markdown(path) for h in HEADING.findall(text)}


def _broken(path):
    """The links of one notebook that do not resolve, as messages."""
    out = []
    for text in _markdown(path):
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):  # http(s), mailto: not checked offline
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / unquote(file)).resolve() if file else path
            if not dest.exists():
                out.append(f"{path.name}: link to {target}: no file {dest}")
            elif anchor and dest.suffix == ".ipynb" and unquote(anchor) not in _anchors(dest):
                out.append(f"{path.name}: link to {target}: {dest.name} has no heading with that anchor")
    return out


def test_the_check_finds_a_broken_anchor_and_file(tmp_path):
    cells = [{"cell_type": "markdown", "metadata": {}, "source": '## Why it "works": a colon'},
             {"cell_type": "markdown", "metadata": {},
              "source": "[ok](#Why-it-%22works%22:-a-colon) [bad](#Why-it-works) [gone](missing.py)"}]
    nb = tmp_path / "01_x.ipynb"
    nb.write_text(json.dumps({"cells": cells}))
    found = _broken(nb)
    assert len(found) == 2 and "#Why-it-works" in found[0] and "missing.py" in found[1]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_links_resolve(path):
    assert not _broken(path), "\n".join(_broken(path))
