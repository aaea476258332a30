"""Graph tools: what works on a whole network's modules and torch.fx graph, one home each.

- ``fx``: the gate-aware tracer, tracing, setting a submodule by name;
- ``linearize``: every activation application gets its own gate;
- ``bn_fusion``: BatchNorm → gate pairs fused into one op (``fuse_bn``) and split again;
- ``counting``: the non-linearities evaluated per sample (``nonlinearity_count``, ``relu_count``);
- ``discretize``: every way a gate becomes exact (``exact_gate``, ``discretize``, ``apply_keep``);
- ``budget``: where gates act, the soft count and its penalties, the exact cut to a budget;
- ``report``: verdicts per layer and the complexity report.

Imports run one way: ops → modules → graph → folding → train → cli.
"""

from alphakern.graph.bn_fusion import fuse_bn, unfuse_bn
from alphakern.graph.counting import nonlinearity_count, relu_count
from alphakern.graph.discretize import apply_keep, discretize, exact_gate
from alphakern.graph.fx import GateTracer, as_graph_module, set_module, trace
from alphakern.graph.linearize import linearize
from alphakern.graph.report import format_report, layer_verdicts

__all__ = [
    "GateTracer",
    "apply_keep",
    "as_graph_module",
    "discretize",
    "exact_gate",
    "format_report",
    "fuse_bn",
    "layer_verdicts",
    "linearize",
    "nonlinearity_count",
    "relu_count",
    "set_module",
    "trace",
    "unfuse_bn",
]
