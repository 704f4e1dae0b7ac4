"""viz.tables.Table: the HTML and text forms carry the same cells, escaped, in order."""
import pytest

from tutorial_lib.viz.tables import Table


def test_text_and_html_hold_every_cell_in_order():
    t = Table(["model", "error"], [["a<b", "1.0 %"], ["c", None]], caption="Errors", notes="n = 100")
    text, page = repr(t), t._repr_html_()
    assert text.splitlines()[0] == "Errors" and text.splitlines()[-1] == "n = 100"
    assert text.splitlines()[1].split("|")[0].strip() == "model"
    assert "a&lt;b" in page and "a<b" not in page          # escaped in HTML
    assert page.index("a&lt;b") < page.index("1.0 %") < page.index(">c<")
    assert page.count("<tr>") == 3 and "<td></td>" in page  # None is an empty cell
    assert t.column("error") == ["1.0 %", ""]


def test_ragged_rows_and_empty_header_refused():
    with pytest.raises(ValueError, match="row 1"):
        Table(["a", "b"], [[1, 2], [3]])
    with pytest.raises(ValueError):
        Table([], [])
