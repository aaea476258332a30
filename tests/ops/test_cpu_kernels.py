"""The native CPU kernels (csrc/cpu) where the shared backend tests do not reach: shapes large
enough for every work split (pieces of long rows, chunks of rows, blocks of columns), thread-count
independence of dγ, and the C++ argument checks. Parity on small shapes, switch points, NaN,
layouts, opcheck and torch.compile run for "cpu" in test_parity / test_gates / test_autograd."""

import pytest
import torch

from alphakern.ops.alpha_relu import alpha_relu_backward_op, alpha_relu_op
from tests.reference import TOL, assert_close_scaled, assert_matches_reference, needs_cpu_kernels, reference

pytestmark = needs_cpu_kernels

# (shape, layout, gates): what each exercises in csrc/cpu/gate.cpp
CASES = [
    ((3, 5, 70, 70), "contiguous", "layer"),  # 73500 elements: pieces of kPiece, parallel
    ((2, 2, 130, 130), "contiguous", "channel"),  # rows with B = 16900 > kPiece: 2 pieces a row
    ((4, 3, 80, 80), "channels_last", "channel"),  # cols, G = 3: spans of 85 rows, 2 row chunks
    ((6, 40, 9, 9), "contiguous", "channel"),  # cols, G = 40·81 = 3240: blocks of 512 columns
    ((3, 8, 16, 17), "contiguous", "element"),  # cols, G = 2176: a ragged last column block
    ((70, 9, 5, 7), "channels_last", "element"),  # cols, G = 315: row chunks, ragged span
]


def _inputs(shape, layout, kind, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 2).to(dtype)
    dy = torch.randn(shape, generator=g).to(dtype)
    if layout == "channels_last":
        x, dy = x.to(memory_format=torch.channels_last), dy.to(memory_format=torch.channels_last)
    gshape = {"layer": (), "channel": shape[1:2], "element": shape[1:]}[kind]
    gamma = torch.rand(gshape, generator=g) * 4 - 2
    return x, dy, gamma, torch.tensor(6.0)


def _run(x, dy, gamma, nu):
    return alpha_relu_op(x, gamma, nu, "cpu"), *alpha_relu_backward_op(dy, x, gamma, nu, "cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape,layout,kind", CASES, ids=[f"{c[2]}-{c[1]}-{c[0]}" for c in CASES])
def test_every_work_split_matches_the_oracle(shape, layout, kind, dtype):
    x, dy, gamma, nu = _inputs(shape, layout, kind, dtype)
    y, dx, dg = _run(x, dy, gamma, nu)
    assert y.stride() == x.stride() and dx.stride() == x.stride()
    assert_matches_reference(x, gamma, nu, dy, y, dx, dg, backend="cpu")


@pytest.mark.parametrize("shape,layout,kind", CASES, ids=[f"{c[2]}-{c[1]}-{c[0]}" for c in CASES])
def test_results_are_bitwise_the_same_for_1_2_and_4_threads(shape, layout, kind):
    x, dy, gamma, nu = _inputs(shape, layout, kind, torch.float32, seed=1)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            results.append(_run(x, dy, gamma, nu))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert torch.equal(a, b)


def test_a_nan_stays_in_its_gate_across_work_items():
    """NaN in one channel of a multi-chunk cols layout: that gate's dγ is NaN, no other."""
    x, dy, gamma, nu = _inputs((4, 3, 80, 80), "channels_last", "channel", torch.float32)
    x[2, 1, 40, 7] = float("nan")
    _, _, dg = _run(x, dy, gamma, nu)
    assert dg.isnan().tolist() == [False, True, False]


OPS = torch.ops.alphakern_C if hasattr(torch.ops, "alphakern_C") else None


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: OPS.layer_gate_fwd(torch.zeros(3, dtype=torch.float64), torch.zeros(1), torch.zeros(1)),
         "x must be float32, float16 or bfloat16, got Double"),
        (lambda: OPS.layer_gate_fwd(torch.zeros(3), torch.zeros(2), torch.zeros(1)),
         "gamma must be a 1-element floating tensor"),
        (lambda: OPS.layer_gate_bwd(torch.zeros(4), torch.zeros(3), torch.zeros(1), torch.zeros(1)),
         "dy must have x's shape"),
        (lambda: OPS.gates_cols_fwd(torch.zeros(6), torch.zeros(4), 2, 3),
         "slopes must be 3 contiguous fp32 values"),
        (lambda: OPS.gates_rows_fwd(torch.zeros(2, 3), torch.zeros(3), 3, 1),
         "x must be flat and contiguous"),
        (lambda: OPS.gates_rows_fwd(torch.zeros(7), torch.zeros(3), 3, 1),
         "7 elements do not split into 3 gates x 1"),
        # the whole fused BN op: a residual or dy that would only broadcast is refused, not copied
        (lambda: OPS.bn_gate(torch.zeros(2, 3, 4, 4), torch.zeros(1, 3, 1, 1), None, None, None, None,
                             torch.zeros(3), torch.tensor(1.0), True, 1e-5),
         r"residual must have x's shape \[2, 3, 4, 4\]"),
        (lambda: OPS.bn_gate_backward(torch.zeros(1, 3, 4, 4),  # a layout copy would broadcast it
                                      torch.zeros(2, 3, 4, 4).to(memory_format=torch.channels_last),
                                      None, None, None, torch.zeros(3), torch.ones(3), torch.zeros(3),
                                      torch.tensor(1.0), True),
         "dy must have x's shape"),
        (lambda: OPS.bn_gate(torch.zeros(2, 3, 4, 4), None, None, None, None, None,
                             torch.zeros(2), torch.tensor(1.0), True, 1e-5),
         "gamma must be a floating CPU tensor of 1 or 3 values"),
        (lambda: OPS.bn_gate(torch.zeros(2, 3, 4, 4), None, torch.ones(4), None, None, None,
                             torch.zeros(3), torch.tensor(1.0), True, 1e-5),
         "weight must be a floating CPU tensor of 3 values"),
    ],
    ids=["dtype", "gamma", "dy-shape", "slopes", "not-flat", "split", "bn-residual-broadcast",
         "bn-dy-broadcast", "bn-gamma", "bn-weight"],
)  # fmt: skip
def test_the_kernels_check_their_arguments(call, message):
    with pytest.raises(RuntimeError, match=message):
        call()


def test_cpu_backend_refuses_float64_and_other_devices():
    x = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="backend='cpu' takes float32, float16 or bfloat16"):
        alpha_relu_op(x, torch.zeros(()), torch.zeros(()), "cpu")


@pytest.mark.parametrize("nu", [0.0, 3.0, 500.0])
def test_gate_terms_match_the_float64_formula(nu):
    """gate_terms (vectorised fp64, SLEEF's exp) against ops.core.alpha in torch's fp64: 1 − α
    within one fp32 rounding, dα/dγ within 1e-13 relative, at saturation, ±inf and NaN, over
    ragged vector tails and several parallel chunks."""
    from alphakern.ops.backends.native import cpu
    from alphakern.ops.core.alpha import alpha_terms

    cpu.build()
    g = torch.Generator().manual_seed(7)
    special = torch.tensor(
        [0.0, -0.0, 1e-300, 40.0, -40.0, 1000.0, -1000.0, float("inf"), -float("inf"), float("nan")]
    )
    for gamma in (torch.cat([special, torch.randn(9001, generator=g) * 8]), torch.randn(3, generator=g)):
        om, dadg = torch.ops.alphakern_C.gate_terms(gamma, torch.tensor(nu))
        _, want_om, want_d = alpha_terms(gamma, torch.tensor(nu))
        assert om.dtype == torch.float32 and dadg.dtype == torch.float64
        torch.testing.assert_close(
            om.double(), want_om.float().double(), rtol=1.2e-7, atol=1e-45, equal_nan=True
        )
        torch.testing.assert_close(dadg, want_d, rtol=1e-13, atol=1e-300, equal_nan=True)


def test_cached_gate_terms_follow_the_values_of_gamma_and_nu():
    """The per-element terms are reused while γ and ν keep their values — checked on values, so a
    write through ``.data`` (which bypasses the version counter) or a new ν is seen — and an
    element-gated training loop on the cpu backend follows the torch backend step by step."""
    import alphakern
    from alphakern.ops.backends.native import cpu, glue

    cpu.build()
    ops = torch.ops.alphakern_C
    g = torch.Generator().manual_seed(3)
    gamma, nu = torch.randn(64, 8, 8, generator=g), torch.tensor(3.0)
    first = glue.cpu_gate_terms(ops, gamma, nu)
    assert gamma.numel() >= glue.TERMS_MIN and glue.cpu_gate_terms(ops, gamma, nu)[0] is first[0]  # a hit
    for change in (lambda: gamma.data[0, 0, :3].add_(1.0), lambda: nu.data.fill_(4.0)):
        change()
        om, dadg = glue.cpu_gate_terms(ops, gamma, nu)
        want_om, want_d = ops.gate_terms(gamma, nu)
        assert torch.equal(om, want_om) and torch.equal(dadg, want_d)
    x = torch.randn(5, 64, 8, 8, generator=g)
    params = {
        b: torch.randn(64, 8, 8, generator=torch.Generator().manual_seed(4)).requires_grad_()
        for b in ("cpu", "torch")
    }
    nus = {b: torch.tensor(1.0) for b in params}
    for _ in range(4):  # forward, backward, an optimiser step, ν's schedule: every call sees new values
        for b, p in params.items():
            y = alphakern.gate(x, p, nus[b], backend=b)
            (y * y).sum().backward()
            with torch.no_grad():
                p.sub_(0.5 * p.grad)
                p.grad = None
                nus[b].add_(0.5)
        torch.testing.assert_close(params["cpu"], params["torch"], rtol=1e-5, atol=1e-5)


BIG = 2**31 + 32  # bf16 elements: offsets past int32 (and past 2**31 // 4 for 4 channels' columns)
PERIOD = 32  # x and dy repeat every PERIOD elements of memory: dγ's oracle counts, it does not sum
C = 4
PAT_X = torch.arange(PERIOD, dtype=torch.float64) - 20  # exact in bf16; 20 negative values
PAT_DY = torch.linspace(-1, 1, PERIOD, dtype=torch.float64).to(torch.bfloat16).double()
WINDOWS = [torch.arange(0, 64), torch.arange(2**31 - 64, 2**31 + 32), torch.arange(BIG - 64, BIG)]


def _gate_of(i: torch.Tensor, kind: str, layout: str) -> torch.Tensor:
    """The gate of memory indices i."""
    if kind == "layer":
        return torch.zeros_like(i)
    return i % C if layout == "channels_last" else i // (BIG // C)


def _count(kind: str, layout: str, g: int) -> torch.Tensor:
    """How many memory indices i ≡ r (mod PERIOD) belong to gate g, for each r."""
    r = torch.arange(PERIOD)
    if kind == "layer":
        return torch.full((PERIOD,), BIG // PERIOD)
    if layout == "channels_last":  # channel = i mod C, and C divides PERIOD
        return torch.where(r % C == g, BIG // PERIOD, 0)
    n = BIG // C  # NCHW: channel g holds memory [g·n, (g + 1)·n)
    return ((g + 1) * n - r + PERIOD - 1) // PERIOD - (g * n - r + PERIOD - 1) // PERIOD


def _check_windows(out, x, gamma, nu, kind: str, layout: str, which: int) -> None:
    """y (which = 0) or dx (1) in each window of memory against the float64 oracle."""
    what = f"{kind} gates, {layout}: {('y', 'dx')[which]}"
    assert out.stride() == x.stride(), what
    flat = out.as_strided((BIG,), (1,))
    for i in WINDOWS:
        xw, dyw = PAT_X[i % PERIOD].to(torch.bfloat16), PAT_DY[i % PERIOD].to(torch.bfloat16)
        want = reference(xw, gamma.reshape(-1)[_gate_of(i, kind, layout)], nu, dyw, "feature")[which]
        assert_close_scaled(flat[i], want, what=f"{what} at {int(i[0])}", **TOL[torch.bfloat16])


@pytest.mark.slow
def test_past_2_31_elements(big_memory):
    """2**31 + 32 bf16 elements through each path of the CPU kernels — layer gates' flat pieces,
    channel gates as NCHW rows and as channels_last columns (one channel lies wholly past 2**31) —
    one after the other in one test (two at once would need twice the 13 GB). y and dx at memory's
    start, across 2**31 and at its end against the float64 oracle; dγ per gate against the oracle
    of one period, dy scaled by how often each position falls in that gate. An int32 offset or
    count would wrap there."""
    big_memory(16, "x, dy and dx of 2**31 + 32 bf16 elements, 4 GiB each")
    mem_x, mem_dy = torch.empty(BIG, dtype=torch.bfloat16), torch.empty(BIG, dtype=torch.bfloat16)
    mem_x.view(-1, PERIOD).copy_(PAT_X)
    mem_dy.view(-1, PERIOD).copy_(PAT_DY)
    n, nu = BIG // C, torch.tensor(4.0)
    strides = {"contiguous": (C * n, n, 1, 1), "channels_last": (C * n, 1, C, C)}
    for kind, layout in (("layer", "contiguous"), ("channel", "contiguous"), ("channel", "channels_last")):
        x = mem_x.as_strided((1, C, n, 1), strides[layout])  # memory as filled, viewed in the layout
        dy = mem_dy.as_strided((1, C, n, 1), strides[layout])
        gamma = torch.tensor([-2.0, -0.5, 0.7, 3.0]) if kind == "channel" else torch.tensor(0.4)
        y = alpha_relu_op(x, gamma, nu, "cpu")
        _check_windows(y, x, gamma, nu, kind, layout, 0)
        del y
        dx, dg = alpha_relu_backward_op(dy, x, gamma, nu, "cpu")
        _check_windows(dx, x, gamma, nu, kind, layout, 1)
        del dx
        # dγ is linear in dy: per gate, one period's oracle with dy times the period's count in it
        xp, gammas = PAT_X.to(torch.bfloat16), gamma.reshape(-1)
        want = [
            reference(xp, gammas[g], nu, PAT_DY * _count(kind, layout, g))[2] for g in range(gammas.numel())
        ]
        what = f"{kind} gates, {layout}: dgamma"
        assert_close_scaled(dg, torch.stack(want).reshape(gamma.shape), 1e-5, 0.0, what=what)
