"""The README's Python blocks run as a reader would run them: in order, in one session. A block
that uses names the README leaves to the reader (``x``, a BatchNorm's ``w``, a trained ``model``)
gets them from PRELUDES, keyed by the block's first line. A new block changes the count: read it,
give it a prelude if it needs one."""

import contextlib
import io
import re

import torch

from tests.subproc import ROOT

# what the reader has at hand where a block starts (keyed by its first line)
PRELUDES = {
    "model = alphakern.linearize(net": (
        "x = torch.randn(4, 64, 8, 8); skip = torch.randn_like(x)\n"
        "gamma, nu = torch.zeros(64), torch.tensor(5.0)\n"
        "w, b, rm, rv = torch.rand(64) + 0.5, torch.randn(64), torch.zeros(64), torch.ones(64)\n"
    ),
    # the gates of the block above, materialised as training would (fold reads each gate's α)
    "folded = alphakern.fold(": "x = torch.randn(2, 3, 32, 32); alphakern.materialize(model)\n",
}


def _blocks() -> list[tuple[int, str]]:
    text = (ROOT / "README.md").read_text()
    return [
        (text[: m.start()].count("\n") + 2, m.group(1))
        for m in re.finditer(r"```python\n(.*?)```", text, re.S)
    ]


def test_the_readme_python_blocks_run_in_order():
    blocks = _blocks()
    assert len(blocks) == 5, [line for line, _ in blocks]
    ns: dict = {}
    out = io.StringIO()
    for line, code in blocks:
        prelude = next((p for k, p in PRELUDES.items() if code.startswith(k)), "")
        with contextlib.redirect_stdout(out):
            exec(compile(prelude + code, f"README.md:{line}", "exec"), ns)
    assert "torch.Size([64]) torch.Size([64])" in out.getvalue()  # the quickstart's "twice"
    assert len(ns["alphakern"].alpha_layers(ns["gated"])) == 17  # "17 gates"
    assert isinstance(ns["folded"], torch.fx.GraphModule)
