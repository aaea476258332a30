"""What folding bought: depth (convs and linears on the longest path), parameters, MACs and
median latency of a model before and after."""

from __future__ import annotations

import statistics

import torch
from torch import fx, nn

from alphakern.folding.chains import traced_copy
from alphakern.folding.policy import median_seconds
from alphakern.ops.core.checks import check_module, check_tensor


def _depth(model: nn.Module) -> int:
    """Convs and linears on the longest path through the model's graph."""
    gm = model if isinstance(model, fx.GraphModule) else traced_copy(model)
    best: dict[fx.Node, int] = {}
    for node in gm.graph.nodes:
        inputs = [best.get(a, 0) for a in node.all_input_nodes]
        here = 0
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), (nn.Conv2d, nn.Linear)):
            here = 1
        best[node] = max(inputs, default=0) + here
    return max(best.values(), default=0)


def _macs(model: nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def fold_report(before: nn.Module, after: nn.Module, x: torch.Tensor, rounds: int = 20) -> dict:
    """Depth (convs/linears on the longest path), parameters, MACs (torch's FlopCounterMode) and
    median latency (eval, inference mode, interleaved rounds on x's device) of both models."""
    check_module(before, "before")
    check_module(after, "after")
    check_tensor(x, "x")
    models = {"before": before.eval(), "after": after.eval()}
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            m(x)
        for _ in range(rounds):
            for k, m in models.items():
                times[k].append(median_seconds(lambda m=m: m(x), x.device, rounds=1))
    out = {
        k: dict(
            depth=_depth(m),
            params=sum(p.numel() for p in m.parameters()),
            macs=_macs(m, x),
            latency_ms=1e3 * statistics.median(times[k]),
        )
        for k, m in models.items()
    }
    out["speedup"] = out["before"]["latency_ms"] / out["after"]["latency_ms"]
    return out
