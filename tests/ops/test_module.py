"""AlphaReLU: the ν schedule, state_dict, the alpha property, repeated forwards."""

import copy
import math
import re

import pytest
import torch

import alphakern


def test_nu_grows_in_training_only():
    m = alphakern.AlphaReLU(nu_step=0.25)
    x = torch.randn(4, 5)
    m.train()
    for _ in range(3):
        m(x)
    assert m.nu.item() == 0.75
    m.eval()
    m(x)
    assert m.nu.item() == 0.75


def test_forward_uses_updated_nu():
    m = alphakern.AlphaReLU(nu_step=2.0)
    with torch.no_grad():
        m.gamma.fill_(1.0)
    x = torch.tensor([-1.0, 2.0])
    y = m(x)  # ν = 2 during this forward
    a = torch.sigmoid((torch.sigmoid(torch.tensor(1.0)) - 0.5) * 2.0)
    torch.testing.assert_close(y, torch.stack([-1.0 + a, torch.tensor(2.0)]))


def test_state_dict_round_trip():
    m = alphakern.AlphaReLU()
    with torch.no_grad():
        m.gamma.fill_(-0.6)
    m(torch.randn(3))
    sd = m.state_dict()
    assert set(sd) == {"gamma", "nu"} and sd["gamma"].dim() == 0 and sd["nu"].dim() == 0
    m2 = alphakern.AlphaReLU()
    m2.load_state_dict(sd)
    assert m2.gamma.item() == m.gamma.item() and m2.nu.item() == m.nu.item()
    torch.testing.assert_close(m2.alpha, m.alpha)


def test_initial_state_and_repr():
    m = alphakern.AlphaReLU()
    assert m.gamma.item() == 0.0 and m.nu.item() == 0.0 and m.alpha.item() == 0.5
    assert m.gamma.requires_grad and not m.alpha.requires_grad
    assert "gamma=0" in repr(m) and "alpha=0.5" in repr(m)


def test_two_forwards_before_backward():
    """Gradient accumulation over several forwards: ν's update must not break autograd."""
    m = alphakern.AlphaReLU()
    x = torch.randn(8, requires_grad=True)
    loss = m(x).sum() + m(x).sum()
    loss.backward()
    assert m.gamma.grad is not None and torch.isfinite(m.gamma.grad)


def test_gradient_reaches_gamma():
    m = alphakern.AlphaReLU()
    m(torch.randn(10))  # ν > 0, so dα/dγ ≠ 0
    m(-torch.ones(10)).sum().backward()
    assert m.gamma.grad.item() != 0.0


def test_drop_in_for_relu_in_sequential():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), alphakern.AlphaReLU(), torch.nn.Linear(4, 1))
    net(torch.randn(2, 4)).sum().backward()
    assert net[1].gamma.grad is not None


def test_inference_mode_and_no_grad():
    m = alphakern.AlphaReLU().eval()
    x = torch.tensor([-2.0, 3.0])
    with torch.inference_mode():
        torch.testing.assert_close(m(x), torch.tensor([-1.0, 3.0]))  # α = ½ at ν = 0
    with torch.no_grad():
        y = m.train()(x)
    assert not y.requires_grad and m.nu.item() == pytest.approx(0.01)


@pytest.mark.parametrize(
    "granularity,x_shape,gamma_shape",
    [("channel", (2, 5, 3, 3), (5,)), ("element", (2, 5, 3, 3), (5, 3, 3)), ("channel", (4, 6), (6,))],
)
def test_granular_gamma_is_created_at_the_first_forward(granularity, x_shape, gamma_shape):
    m = alphakern.AlphaReLU(granularity=granularity)
    assert m.has_uninitialized_params()
    no_gamma = rf"AlphaReLU\(granularity='{granularity}'\) has no γ yet: .* alphakern.materialize"
    with pytest.raises(RuntimeError, match=no_gamma):  # not torch's words about LazyModules
        _ = m.alpha
    with pytest.raises(RuntimeError, match=no_gamma):  # what reads α, before any forward
        alphakern.discretize(torch.nn.Sequential(m))
    x = torch.randn(x_shape)
    m(x)
    assert m.gamma.shape == gamma_shape and torch.equal(m.gamma.detach(), torch.zeros(gamma_shape))
    assert m.alpha.shape == gamma_shape and not m.has_uninitialized_params()
    # an optimiser built now trains every gate
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    m(-x.abs() * torch.linspace(0.5, 2, x_shape[1]).reshape(1, -1, *([1] * (x.dim() - 2)))).sum().backward()
    opt.step()
    assert (m.gamma.detach() != 0).all()


def test_granular_state_dict_into_a_fresh_module():
    m = alphakern.AlphaReLU(granularity="element")
    m(torch.randn(2, 3, 4))
    with torch.no_grad():
        m.gamma.copy_(torch.randn(3, 4))
    fresh = alphakern.AlphaReLU(granularity="element")
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.gamma, m.gamma) and torch.equal(fresh.nu, m.nu)
    x = torch.randn(5, 3, 4)
    torch.testing.assert_close(fresh.eval()(x), m.eval()(x), rtol=0, atol=0)


def test_granularity_and_input_errors():
    with pytest.raises(
        ValueError, match=r"granularity must be one of \['layer', 'channel', 'element', 'feature'\]"
    ):
        alphakern.AlphaReLU(granularity="pixel")
    for bad in (float("nan"), float("inf"), -0.01, "0.01", True):
        with pytest.raises(
            ValueError, match=rf"nu_step must be a finite number >= 0, got {re.escape(repr(bad))}"
        ):
            alphakern.AlphaGate(bad)
    with pytest.raises(ValueError, match="nu_step must be"):  # linearize checks before any work
        alphakern.linearize(torch.nn.Sequential(torch.nn.ReLU()), nu_step=float("nan"))
    with pytest.raises(ValueError, match="needs x with >= 2 dims"):
        alphakern.AlphaReLU(granularity="channel")(torch.randn(5))
    with pytest.raises(ValueError, match=r"AlphaReLU: granularity='feature' needs x with >= 1 dims"):
        alphakern.AlphaReLU(granularity="feature")(torch.tensor(1.0))


@pytest.mark.parametrize("granularity", ["channel", "element", "feature"])
def test_granular_module_under_compile_from_fresh(granularity):
    """torch.compile(fullgraph=True) of a fresh lazy module: materialised, then traced, no break."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4)
    eager = alphakern.AlphaReLU(granularity=granularity)
    compiled_m = alphakern.AlphaReLU(granularity=granularity)
    compiled = torch.compile(compiled_m, fullgraph=True)
    for _ in range(2):
        out_c, out_e = compiled(x), eager(x)
        torch.testing.assert_close(out_c, out_e)
        out_c.sum().backward()
        out_e.sum().backward()
    torch.testing.assert_close(compiled_m.gamma.grad, eager.gamma.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("granularity", ["channel", "element", "feature"])
def test_eager_module_matches_fused_per_gate(granularity):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 5)
    fused = alphakern.AlphaReLU(granularity=granularity, nu_step=0.5)
    eager = alphakern.EagerAlphaReLU(granularity=granularity, nu_step=0.5)
    fused(x)
    eager(x)
    with torch.no_grad():
        fused.gamma.copy_(torch.randn_like(fused.gamma))
        eager.gamma.copy_(fused.gamma)
    fused(x).square().sum().backward()
    eager(x).square().sum().backward()
    torch.testing.assert_close(fused.gamma.grad, eager.gamma.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "a, nu", [(0.5, 0.0), (0.5, 7.0), (0.95, 20.0), (0.05, 20.0), (0.999, 20.0), (0.2, 3.0)]
)
def test_gamma_for_inverts_the_alpha_formula(a, nu):
    from alphakern.ops.core.alpha import gamma_for

    g = torch.tensor(gamma_for(a, nu), dtype=torch.float64)
    got = torch.sigmoid((torch.sigmoid(g) - 0.5) * nu)  # the formula, in float64
    assert float(got) == pytest.approx(a, rel=0, abs=1e-12)
    assert (float(g) > 0) == (a > 0.5) and (a != 0.5 or float(g) == 0.0)


@pytest.mark.parametrize(
    "a, nu, message",
    [
        (0.0, 10.0, "alpha must lie strictly between 0 and 1, got 0.0"),
        (1.0, 10.0, "alpha must lie strictly between 0 and 1, got 1.0"),
        (0.9, 0.0, "alpha = 0.9 is out of reach at nu = 0: .* spans \\(0.5, 0.5\\); start nu above 4.394"),
        (0.99, 9.0, "spans \\(0.01099, 0.989\\); start nu above 9.19"),
        (0.01, 9.0, "spans \\(0.01099, 0.989\\); start nu above 9.19"),
        (0.9, 0.5, "spans \\(0.4378, 0.5622\\); start nu above 4.394"),  # a ν below 1 still has a reach
        (0.9, 2 * math.log(0.9 / (1 - 0.9)), "alpha = 0.9 is out of reach at nu = 4.394"),  # σ(γ) = 1
    ],
)
def test_gamma_for_refuses_what_the_formula_cannot_reach(a, nu, message):
    from alphakern.ops.core.alpha import gamma_for

    with pytest.raises(ValueError, match=message):
        gamma_for(a, nu)


def _cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.GELU())


class _Checkpointed(torch.nn.Module):
    """The model's forward under torch.utils.checkpoint: recomputed during backward."""

    def __init__(self, inner: torch.nn.Module, use_reentrant: bool) -> None:
        super().__init__()
        self.inner, self.use_reentrant = inner, use_reentrant

    def forward(self, x):
        return torch.utils.checkpoint.checkpoint(self.inner, x, use_reentrant=self.use_reentrant)


@pytest.mark.parametrize("fuse_bn", [False, True], ids=["gates", "bn_fused"])
@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("use_reentrant", [False, True], ids=["non_reentrant", "reentrant"])
def test_activation_checkpointing_steps_nu_once_with_the_gradients_of_the_plain_model(
    use_reentrant, granularity, fuse_bn
):
    """The recomputed forward uses the ν of the forward it repeats, and ν steps once per forward:
    three SGD steps under checkpointing give the plain model's ν, γ gradients and γ (the
    recomputation used to step ν again and differentiate at that ν)."""
    x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(1), requires_grad=use_reentrant)
    plain = alphakern.linearize(_cnn(), granularity=granularity, fuse_bn=fuse_bn, example_input=x)
    inner = copy.deepcopy(plain)
    models = {"plain": plain, "checkpointed": _Checkpointed(inner, use_reentrant)}
    gates = {k: alphakern.alpha_layers(m) for k, m in (("plain", plain), ("checkpointed", inner))}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.5) for k, m in models.items()}
    for _ in range(3):
        for k, m in models.items():
            opts[k].zero_grad()
            m(x).square().mean().backward()
            opts[k].step()
        for (name, a), (_, b) in zip(gates["plain"], gates["checkpointed"], strict=True):
            assert torch.equal(a.nu, b.nu), name
            torch.testing.assert_close(b.gamma.grad, a.gamma.grad, rtol=1e-6, atol=1e-9, msg=name)
            torch.testing.assert_close(b.gamma, a.gamma, rtol=1e-6, atol=1e-9, msg=name)
    assert float(gates["plain"][0][1].nu) == pytest.approx(3 * 0.01)


@pytest.mark.parametrize("cast", ["half", "bfloat16", "to"])
def test_nu_stays_float32_when_the_module_goes_to_half_precision(cast):
    """ν + 0.01 rounds back to ν from 4 on in bfloat16 (from 32 in float16): a gate cast with the
    model kept its ν there and α never saturated. ν stays float32, its value exact; γ is cast."""
    dtype = {"half": torch.float16, "bfloat16": torch.bfloat16, "to": torch.bfloat16}[cast]
    g = alphakern.AlphaReLU()
    g.nu.fill_(123.456)
    g = g.to(dtype) if cast == "to" else getattr(g, cast)()
    assert g.gamma.dtype == dtype and g.nu.dtype == torch.float32
    assert float(g.nu) == float(torch.tensor(123.456))  # not rounded through dtype
    g.nu.fill_(40.0)  # past where bfloat16 and float16 stop
    x = torch.randn(16, dtype=dtype)
    for _ in range(100):
        g(x)
    assert float(g.nu) == pytest.approx(41.0, abs=1e-3)  # float32's rounding of 100 additions
    assert g.double().nu.dtype == torch.float64  # more precision is kept


def test_nu_is_float32_whatever_the_default_dtype_and_after_to_empty():
    before = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.bfloat16)
        g = alphakern.AlphaReLU()
    finally:
        torch.set_default_dtype(before)
    assert g.gamma.dtype == torch.bfloat16 and g.nu.dtype == torch.float32
    with torch.device("meta"):
        lazy = alphakern.AlphaReLU()
    real = lazy.to_empty(device="cpu").bfloat16()
    assert real.nu.dtype == torch.float32 and real.nu.device.type == "cpu"


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_a_linearized_network_in_bfloat16_trains_its_nu(backend):
    """A whole network cast to bfloat16 (gates per layer and channel, one fused with its
    BatchNorm): its ν advance by exactly nu_step, in float32, on both backends."""
    x = torch.randn(2, 3, 10, 10, dtype=torch.bfloat16)
    for granularity in ("layer", "channel"):
        m = alphakern.linearize(_cnn(), granularity=granularity, fuse_bn=True, backend=backend)
        m = alphakern.materialize(m.to(torch.bfloat16), example_input=x)  # .bfloat16() refuses lazy γ
        gates = alphakern.alpha_layers(m)
        for _, g in gates:
            g.nu.fill_(300.0)
        for _ in range(3):
            m(x).float().square().mean().backward()
        for name, g in gates:
            assert g.nu.dtype == torch.float32 and float(g.nu) == pytest.approx(300.03, abs=1e-3), name
            assert g.gamma.grad is not None and g.gamma.grad.dtype == torch.bfloat16, name
