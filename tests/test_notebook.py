"""docs/notebooks/tutorials.ipynb runs from top to bottom, and shows its tables and figures."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "notebooks" / "tutorials.ipynb"


@pytest.mark.slow
def test_tutorials_notebook_executes(mnist_dir, monkeypatch, tmp_path):
    """Every cell runs without an error; the tables come out as HTML and the figures as PNG."""
    monkeypatch.setenv("DIGITLAB_DATA", str(mnist_dir))  # the kernel inherits the environment
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(html) >= 3 and all("<table>" in h for h in html)  # runs_table, permuted_table, the comparison
    assert len(pngs) >= 8  # grids, curves, bars, confusion matrix, photos, comparison
    comparison = html[-1]
    for name in ("seed000", "seed001", "seed003", "seed004"):
        assert f"<td>{name}</td>" in comparison
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "precision" in printed and "recall" in printed  # the classification reports
