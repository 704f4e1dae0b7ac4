"""``python -m tutorial_lib.report NAMES --eps E --n N ...``: the robustness numbers quoted in
the README. A thin entry point; the code lives in :mod:`tutorial_lib.studies.report`."""
from .studies.report import main, robustness_table

__all__ = ["main", "robustness_table"]

if __name__ == "__main__":
    main()
