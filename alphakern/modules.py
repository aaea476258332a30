"""``AlphaGate``: a drop-in replacement for an activation that learns whether to stay non-linear;
``AlphaReLU`` is AlphaGate with f = relu, the drop-in for ``nn.ReLU``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from alphakern.functional import alpha, bn_gate, gate
from alphakern.ops.core import GRANULARITIES
from alphakern.ops.core.activations import Activation
from alphakern.ops.core.checks import check_module, check_tensor, is_finite_number
from alphakern.ops.core.granularity import gate_shape, gate_view
from alphakern.ops.dispatch import BN_GATE_GRANULARITIES


def _recomputing() -> bool:
    """Is this forward run by autograd's backward? That is activation checkpointing recomputing a
    forward (torch.utils.checkpoint, reentrant or not: Hugging Face's gradient_checkpointing,
    timm's checkpoint_seq). Left to the compiler when compiling: its recomputation does not run
    the module again."""
    return not torch.compiler.is_compiling() and torch._C._current_graph_task_id() != -1


class AlphaGate(LazyModuleMixin, nn.Module):
    """G_α,f(x) = x + α·(f(x) − x), α = σ((σ(γ) − ½)·ν): f where α = 1, the identity where α = 0.

    ``activation``: "relu", "relu6", "leaky_relu" (``negative_slope``), "gelu" (``approximate``
    "none" or "tanh"), "silu" or "hardswish" — ``AlphaGate()`` is ``AlphaReLU()``.

    ``gamma`` (parameter, init 0) is trained; ``nu`` (0-dim buffer, init 0, in the state dict)
    grows by ``nu_step`` at every forward in training mode, driving α to 1 (a ReLU) or 0 (the
    identity). The update stays on the device: no host sync.

    ``granularity``: "layer" (one 0-dim γ), "channel" (γ of shape (C,), C = x.shape[1], like
    ``nn.PReLU(C)``), "element" (γ of shape x.shape[1:], shared over the batch) or "feature" (γ of
    shape (D,), D = x.shape[-1], shared over every leading dim: one gate per hidden feature of a
    transformer, whatever the batch and sequence length). Channel, element and feature γ are
    created at the first forward from x's shape, as ``nn.LazyLinear`` creates its weight — build
    the optimiser after that forward (or ``materialize`` the model); ``load_state_dict`` into a
    fresh module works.
    """

    cls_to_become = None
    fuses_with_bn = True  # BatchNormGate runs this gate's α terms (a method's own gate: False)

    def __init__(
        self,
        nu_step: float = 0.01,
        *,
        activation: str = "relu",
        negative_slope: float = 0.01,
        approximate: str = "none",
        granularity: str = "layer",
        backend: str | None = None,
    ) -> None:
        super().__init__()
        self.act = Activation.of(activation, negative_slope, approximate)
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {list(GRANULARITIES)}, got {granularity!r}")
        if not (is_finite_number(nu_step) and nu_step >= 0):  # NaN would make every α NaN from then on
            raise ValueError(f"nu_step must be a finite number >= 0, got {nu_step!r}")
        self.nu_step = float(nu_step)
        self.granularity = granularity
        self.backend = backend
        if granularity == "layer":
            self.gamma = nn.Parameter(torch.tensor(0.0))
        else:
            self.gamma = UninitializedParameter()
        self.register_buffer("nu", torch.tensor(0.0, dtype=torch.float32))  # not the default dtype: _apply
        if granularity == "layer":
            self._drop_lazy_hooks()

    def _apply(self, fn, recurse: bool = True):
        """nn.Module's device and dtype casts (``.to``, ``.half``, ``.bfloat16``, ``.cuda``, ...), except
        that ν stays float32 when the rest goes to half precision: it grows by ``nu_step`` from 0
        into the hundreds, and ν + 0.01 rounds back to ν from 4 on in bfloat16, from 32 in float16
        — ν would stop there and α never saturate. Its value is kept exactly (not rounded)."""
        nu = self.nu
        super()._apply(fn, recurse)
        if self.nu.dtype in (torch.float16, torch.bfloat16):
            src = self.nu if nu.is_meta or nu.dtype in (torch.float16, torch.bfloat16) else nu
            self.nu = src.to(device=self.nu.device, dtype=torch.float32)
        return self

    def _drop_lazy_hooks(self) -> None:
        """Nothing to infer (a layer gate, or γ materialised by hand): LazyModuleMixin's hooks go, as
        after its first forward — a hook left on a gate whose forward never runs (one fused with
        its BatchNorm) would make every call unfused and the first compiled one fail its guards."""
        if not self.has_uninitialized_params() and hasattr(self, "_initialize_hook"):
            self._initialize_hook.remove()
            self._load_hook.remove()
            del self._initialize_hook, self._load_hook

    def initialize_parameters(self, x: Tensor) -> None:
        """γ = 0 of the granularity's shape for x, on x's device (called before the first forward)."""
        if not self.has_uninitialized_params():
            return
        try:
            shape = gate_shape(x, self.granularity)
        except ValueError as e:
            raise ValueError(f"{type(self).__name__}: {e}") from None
        with torch.no_grad():
            self.gamma.materialize(shape, device=x.device)
            self.reset_gamma()

    @torch.no_grad()
    def reset_gamma(self) -> None:
        """γ's starting value: 0 (α = ½ at ν = 0). A linearisation method's gate starts elsewhere."""
        self.gamma.zero_()

    def step_nu(self) -> Tensor:
        """ν for this forward: advanced by nu_step in training mode (on the device), as is — once
        per forward even under activation checkpointing, whose recomputation gets the ν that the
        forward it repeats used."""
        if not self.training:
            return self.nu
        if _recomputing():
            return self.nu.clone()  # the value the first run advanced it to (a fresh tensor, as below)
        # A fresh tensor goes into the op (autograd saves it), then the buffer takes its value:
        # an in-place add would trip autograd's version check when a second forward runs
        # before backward.
        nu = self.nu + self.nu_step
        self.nu.copy_(nu)
        return nu

    def forward(self, x: Tensor) -> Tensor:
        # functional.gate routes f = relu to the alpha_relu op (the one place that does)
        act = self.act
        return gate(x, self.gamma, self.step_nu(), activation=act.name, negative_slope=act.negative_slope,
                    granularity=self.granularity, backend=self.backend)  # fmt: skip

    def differentiable_alpha(self) -> Tensor:
        """α per gate as a function of the trained parameter: what a penalty on the soft count
        differentiates (a linearisation method's gate defines its own)."""
        return alpha(self.gamma, self.nu)

    @property
    def alpha(self) -> Tensor:
        """The current α per gate (detached, γ's shape, on the module's device)."""
        if self.has_uninitialized_params():  # torch's own error speaks of LazyModules and sigmoid
            raise RuntimeError(
                f"{type(self).__name__}(granularity={self.granularity!r}) has no γ yet: channel, element "
                "and feature gates are created at the first forward, from x's shape — run the model "
                "once, or alphakern.materialize(model, example_input=x), before reading α"
            )
        with torch.no_grad():
            return self.differentiable_alpha().detach()

    def extra_repr(self) -> str:
        # Printing reads a few numbers off the device; forward never does.
        text = f"nu_step={self.nu_step}"
        if self.act.name != "relu" and type(self) is AlphaGate:
            text = f"activation={str(self.act)!r}, " + text
        if self.granularity != "layer":
            text += f", granularity={self.granularity!r}"
        if self.has_uninitialized_params() or self.gamma.device.type == "meta":
            return text
        if self.gamma.numel() == 1:
            return text + f", gamma={self.gamma.item():.4g}, alpha={self.alpha.item():.4g}"
        a = self.alpha
        return text + f", gates={tuple(self.gamma.shape)}, mean alpha={a.mean().item():.4g}"


class AlphaReLU(AlphaGate):
    """R_α(x) = x + α·relu(−x) — PReLU with the learned slope 1 − α: AlphaGate with f = relu
    (state, schedule and granularities as AlphaGate's)."""

    def __init__(
        self, nu_step: float = 0.01, *, granularity: str = "layer", backend: str | None = None
    ) -> None:
        super().__init__(nu_step, granularity=granularity, backend=backend)


class EagerAlphaReLU(AlphaReLU):
    """The original study's unfused expression ``x + α·relu(−x)`` with the same γ/ν state.

    For A/B runs against the fused op: same parameters, schedule and state_dict keys.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and torch.compiler.is_compiling():
            # AOTAutograd may recompute α in the backward from the ν buffer *after* this forward
            # advanced it, giving silently wrong γ gradients (pytorch/pytorch PR #197039).
            # AlphaReLU is immune: its op saves the ν it used.
            raise RuntimeError(
                "EagerAlphaReLU cannot be trained under torch.compile (PyTorch recomputes reads "
                "of mutated buffers in the backward, so γ's gradient would be wrong); use AlphaReLU"
            )
        a = gate_view(alpha(self.gamma, self.step_nu()), x, self.granularity)
        return x + a * torch.relu(-x)


def _bn_args(bn: nn.BatchNorm2d) -> tuple[tuple, dict]:
    """A BatchNorm's constructor arguments, device and dtype (for a new one that shares its tensors)."""
    p = bn.weight if bn.affine else bn.running_mean
    args = (bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    return args, ({} if p is None else dict(device=p.device, dtype=p.dtype))


def _share(dst: nn.BatchNorm2d, src: nn.BatchNorm2d) -> None:
    """dst holds src's parameters and buffers (the same tensors, the same names)."""
    if src.affine:
        dst.weight, dst.bias = src.weight, src.bias
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        setattr(dst, name, getattr(src, name))


class BatchNormGate(nn.BatchNorm2d):
    """An ``nn.BatchNorm2d`` followed by an ``AlphaGate`` (per layer or channel), or by a plain
    ``nn.ReLU`` (the gate at α = 1 exactly: a fused BN + ReLU), run as one fused op
    (``alphakern.bn_gate``) — what ``fuse_bn`` makes of each BN → gate pair.

    It *is* the BatchNorm: the same parameters and buffers under the same state-dict keys (shared
    with the BN it replaces, updated exactly as nn.BatchNorm2d updates them), and it holds the
    gate by reference, not as a submodule — the gate stays registered where it was, so a model's
    state dict is the same fused or not and loads both ways. The gate's ν advances as the gate's
    own forward would. Where the gate has hooks (``nonlinearity_count``, ``gate_sites``), element
    gates, or no fused kernel for x, it runs the BN and then the gate, as unfused."""

    def __init__(self, bn: nn.BatchNorm2d, gate: AlphaGate | nn.ReLU, gate_name: str = "") -> None:
        args, kw = _bn_args(bn)
        super().__init__(*args, **kw)
        _share(self, bn)
        object.__setattr__(self, "gate", gate)  # a reference: not registered, not in the state dict
        self.gate_name = gate_name
        if isinstance(gate, nn.ReLU):  # α = 1 exactly: σ(−z) = 0 at ν = inf; not in the state dict
            dev = kw.get("device")
            self.register_buffer("relu_gamma", torch.ones((), device=dev), persistent=False)
            self.register_buffer("relu_nu", torch.full((), float("inf"), device=dev), persistent=False)
        self.train(bn.training)

    def unfused(self) -> nn.BatchNorm2d:
        """A plain BatchNorm2d sharing this one's parameters and buffers."""
        args, kw = _bn_args(self)
        bn = nn.BatchNorm2d(*args, **kw)
        _share(bn, self)
        return bn.train(self.training)

    def _plain(self) -> bool:
        g = self.gate
        hooks = g._forward_hooks or g._forward_pre_hooks or nn.modules.module._global_forward_hooks
        if isinstance(g, nn.ReLU):
            return bool(hooks)
        unfused = g.granularity not in BN_GATE_GRANULARITIES  # element and feature gates
        return bool(hooks) or isinstance(g.gamma, UninitializedParameter) or unfused

    def _gate_args(self) -> tuple[Tensor, Tensor, Activation, str | None]:
        """(γ, ν for this forward, f, backend)."""
        g = self.gate
        if isinstance(g, nn.ReLU):
            return self.relu_gamma, self.relu_nu, Activation("relu"), None
        return g.gamma, g.step_nu(), g.act, g.backend

    def forward(self, x: Tensor) -> Tensor:
        return self._bn_gate(x, None)

    def _bn_gate(self, x: Tensor, residual: Tensor | None) -> Tensor:
        """G(BN(x) [+ residual]): fused, or the BN, the add and the gate one after the other."""
        like_x = residual is None or (residual.shape == x.shape and residual.dtype == x.dtype)
        if self._plain() or not like_x:  # a broadcast residual: the plain add
            z = super().forward(x)
            return self.gate(z if residual is None else z + residual)
        self._check_input_dim(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        keep = not self.training or self.track_running_stats
        gamma, nu, act, backend = self._gate_args()
        return bn_gate(
            x, gamma, nu, activation=act.name, negative_slope=act.negative_slope, residual=residual,
            weight=self.weight, bias=self.bias,
            running_mean=self.running_mean if keep else None, running_var=self.running_var if keep else None,
            training=use_batch, momentum=factor, eps=self.eps, backend=backend,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return super().extra_repr() + f", gate={self.gate_name or type(self.gate).__name__}"


class BatchNormAddGate(BatchNormGate):
    """A ``BatchNormGate`` with the residual add between the BN and the gate: forward(x, r) =
    gate(BN(x) + r), one fused op (``alphakern.bn_add_gate``) — what ``fuse_bn`` makes of the tail
    of a residual block (BN → add(skip) → activation). The same state-dict contract as
    BatchNormGate's; a residual of another shape or dtype than x (a broadcast add) runs unfused."""

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self._bn_gate(x, residual)


_FIXED_GRANULARITIES = ("channel", "element", "feature")  # a layer gate becomes f's module or nn.Identity


class FixedGate(nn.Module):
    """x + w·(f(x) − x) with a fixed weight w per gate (a buffer, nothing trained): what
    ``discretize`` and the budget make of a per-channel/element/feature AlphaGate of f ≠ relu whose
    gates disagree — w = 1 (f) or 0 (identity) per decided gate, α for an undecided one."""

    def __init__(self, weight: Tensor, *, activation: Activation, granularity: str) -> None:
        super().__init__()
        if granularity not in _FIXED_GRANULARITIES:
            raise ValueError(f"granularity must be one of {list(_FIXED_GRANULARITIES)}, got {granularity!r}")
        self.act, self.granularity = activation, granularity
        self.register_buffer("weight", weight.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        w = gate_view(self.weight.to(x.dtype), x, self.granularity)
        # exactly f(x) where w = 1 and x where w = 0 (a blend would give NaN for 0·inf there)
        return torch.where(w == 1, self.act.f(x), torch.where(w == 0, x, torch.lerp(x, self.act.f(x), w)))

    def extra_repr(self) -> str:
        gates = tuple(self.weight.shape)
        return f"activation={str(self.act)!r}, granularity={self.granularity!r}, gates={gates}"


class FixedSlopeReLU(nn.Module):
    """PReLU with a fixed slope per gate (a buffer, nothing trained): what ``discretize`` makes of
    a per-channel/element/feature AlphaReLU whose gates disagree — slope 0 for a ReLU gate, 1 for an
    identity gate, 1 − α for an undecided one."""

    def __init__(self, slope: Tensor, *, granularity: str) -> None:
        super().__init__()
        if granularity not in _FIXED_GRANULARITIES:
            raise ValueError(f"granularity must be one of {list(_FIXED_GRANULARITIES)}, got {granularity!r}")
        self.granularity = granularity
        self.register_buffer("slope", slope.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        s = self.slope.to(x.dtype)
        if self.granularity == "channel":
            return F.prelu(x, s)
        # no torch.relu here: relu_count would take it for a ReLU of every position
        return torch.where(x > 0, x, x * gate_view(s, x, self.granularity))

    def extra_repr(self) -> str:
        return f"granularity={self.granularity!r}, gates={tuple(self.slope.shape)}"


def alpha_layers(model: nn.Module) -> list[tuple[str, AlphaGate]]:
    """The model's learnable activations with their qualified names, in forward order: the order
    of their calls in the graph of a torch.fx GraphModule (what ``linearize`` returns), else
    registration order (= forward order for sequential models)."""
    check_module(model)
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, AlphaGate)]
    if isinstance(model, fx.GraphModule):
        modules = dict(model.named_modules())
        # a fused BN → gate pair calls its gate from the BN's node (fuse_bn)
        calls = [
            modules[n.target].gate_name if isinstance(modules.get(n.target), BatchNormGate) else n.target
            for n in model.graph.nodes
            if n.op == "call_module"
        ]
        first = {t: i for i, t in reversed(list(enumerate(calls)))}
        found.sort(key=lambda item: first.get(item[0], len(calls)))
    return found


@torch.no_grad()
def materialize(
    model: nn.Module, shape: tuple[int, ...] = (1, 3, 32, 32), *, example_input: Tensor | None = None
) -> nn.Module:
    """Create the lazy γ of per-channel/per-element gates now, with one forward in eval mode (ν and
    the BatchNorm statistics do not move) of ``example_input`` — token ids for a language model —
    or else of a zero batch of ``shape`` (CIFAR-sized by default)."""
    check_module(model)
    if example_input is not None:
        check_tensor(example_input)
    else:
        p = next(model.parameters())
        example_input = torch.zeros(shape, device=p.device, dtype=p.dtype)
    was_training = model.training
    model.eval()(example_input)
    return model.train(was_training)
