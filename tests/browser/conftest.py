"""The browser test's summary: each explorer's measured slider latencies, printed at the end of
the run (``make test-browser``), so the README's numbers come from a command."""
import pytest

_LATENCIES = []  # one dict per explorer driven, in test order


@pytest.fixture(scope="session")
def explorer_latencies():
    """The list test_explorers appends each explorer's measurement to: dicts with notebook, slider,
    the readouts and the seconds (wall clock, browser side) from the key press to the new figure."""
    return _LATENCIES


def pytest_terminal_summary(terminalreporter):
    if not _LATENCIES:
        return
    tr = terminalreporter
    tr.section("explorer slider latencies (key press -> new figure in the browser)")
    tr.write_line(f"{'notebook':36s} {'slider':11s} {'1st move':>9s} {'2nd move':>9s}  budget")
    for r in _LATENCIES:
        second = "-" if r["second_s"] is None else f"{r['second_s']:.2f} s"
        verdict = "-" if r["second_s"] is None else ("ok" if r["second_s"] <= r["budget_s"] else "OVER")
        tr.write_line(f"{r['notebook']:36s} {r['slider']:11s} {r['first_s']:7.2f} s {second:>9s}  "
                      f"{r['budget_s']:g} s {verdict}")
    tr.write_line("(a loaded machine inflates these; the budget applies to the 2nd move)")
