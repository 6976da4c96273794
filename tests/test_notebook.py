"""jaxpipe.fit in a real Jupyter kernel (nbclient runs the notebook): a live display of
the epochs (updated in place, no ipywidgets), a one-screen summary at the end, and no
message about a temporary folder already removed (issue 25)."""

import os

import pytest
from conftest import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

CELLS = [
    "import numpy as np\nimport jaxpipe\n"
    "rng = np.random.default_rng(0)\n"
    "x = rng.normal(size=(96, 3)).astype('float32')\n"
    "y = np.where(x[:, 0] > 0, 'up', 'down')",
    "spec = {'model': {'hidden': [8]}, 'training': {'epochs': 3, 'batch_size': 16}}\n"
    "model = jaxpipe.fit(spec, x, y)",
    "model",
]


class _Recording(nbclient.NotebookClient):
    """Keeps the type of every message the kernel sent while a cell ran."""

    seen: list = []

    def process_message(self, msg, cell, cell_index):
        self.seen.append(msg["msg_type"])
        return super().process_message(msg, cell, cell_index)


def test_fit_in_a_notebook_shows_progress_and_a_summary(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    env_path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", env_path)  # the kernel imports this tree's jaxpipe
    client = _Recording(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    fit_outputs = nb.cells[1].outputs
    texts = [
        str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", ""))
        for c in nb.cells
        for o in c.outputs
    ]
    htmls = [str(o.get("data", {}).get("text/html", "")) for o in fit_outputs]
    # Progress: one display, updated in place as the epochs went; it ends at the last.
    assert client.seen.count("update_display_data") >= 3
    assert any("<progress" in h and "epoch 3/3" in h for h in htmls), htmls
    # A one-screen summary, and nothing about the temporary run directory.
    summary = next(t for t in texts if t.startswith("jaxpipe: completed"))
    assert "val_accuracy" in summary and "classes          down, up" in summary
    assert len(summary.splitlines()) < 15
    assert not any("Wrote" in t or "jaxpipe-fit-" in t for t in texts + htmls)
    # The model shows itself in one line, not its weights.
    (shown,) = [
        t for t in (str(o.get("data", {}).get("text/plain", "")) for o in nb.cells[2].outputs) if t
    ]
    assert shown.startswith("Model(2 classes") and len(shown) < 200
