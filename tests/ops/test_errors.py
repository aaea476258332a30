"""Bad input gives clear errors naming the argument and what was expected."""

import pytest
import torch

import alphakern
from alphakern.ops.alpha_relu import auto_backend
from alphakern.ops.backends import cpu_backend as cpu_ext
from alphakern.ops.backends import triton_backend as alpha_relu_triton
from alphakern.ops.backends.triton import common as triton_common

G = torch.tensor(0.0)
NU = torch.tensor(1.0)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.complex64])
def test_non_floating_x(dtype):
    x = torch.zeros(3, dtype=dtype)
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor.*" + str(dtype)):
        alphakern.alpha_relu(x, G, NU)


def test_x_not_a_tensor():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        alphakern.alpha_relu([1.0, 2.0], G, NU)


BAD_SCALARS = {
    "two-elements": torch.zeros(2),
    "int": torch.tensor(1),
    "empty": torch.zeros(0),
    "python-float": 0.5,
    "complex": torch.tensor(1 + 1j),
}


@pytest.mark.parametrize("bad", list(BAD_SCALARS))
def test_bad_nu(bad):
    with pytest.raises(ValueError, match="nu must be a 1-element floating-point tensor"):
        alphakern.alpha_relu(torch.zeros(3), G, BAD_SCALARS[bad])


@pytest.mark.parametrize(
    "bad,message",
    [
        ("int", "gamma must be a floating-point tensor, got a torch.int64 tensor"),
        ("python-float", "gamma must be a floating-point tensor, got float"),
        ("complex", "gamma must be a floating-point tensor, got a torch.complex64 tensor"),
        ("empty", "gamma must be a 1-element floating-point tensor, got a torch.float32 tensor of shape"),
        ("two-elements", r"gamma of shape \(2,\) does not fit x of shape \(3,\): gamma must have 1 element"),
    ],
)
def test_bad_gamma(bad, message):
    with pytest.raises(ValueError, match=message):
        alphakern.alpha_relu(torch.zeros(3), BAD_SCALARS[bad], NU)


@pytest.mark.parametrize("shape", [(2,), (4, 5), (3, 4), (3, 4, 5, 1), (1, 3, 4, 5)], ids=str)
def test_gamma_shape_that_fits_no_granularity(shape):
    """x of shape (2, 3, 4, 5) takes γ of 1 element, (3,) or (3, 4, 5): nothing else."""
    with pytest.raises(ValueError, match=r"gamma must have 1 element \(per layer\), \(3,\) \(per channel\) "
                       r"or \(3, 4, 5\) \(per element\)"):  # fmt: skip
        alphakern.alpha_relu(torch.zeros(2, 3, 4, 5), torch.zeros(shape), NU)


def test_one_element_shapes_are_fine():
    y = alphakern.alpha_relu(torch.tensor([-1.0]), torch.zeros(1), torch.zeros(1, 1))
    assert y.item() == -0.5


@pytest.mark.parametrize("name", ["gamma", "nu"])
def test_scalar_on_another_device(name):
    args = {"gamma": G, "nu": NU, name: torch.tensor(0.0, device="meta")}
    with pytest.raises(ValueError, match=f"{name} must be on x's device cpu, got meta"):
        alphakern.alpha_relu(torch.zeros(3), args["gamma"], args["nu"])


def test_unknown_backend_lists_valid_ones():
    listed = r"backend must be one of \['auto', 'torch', 'triton', 'cuda', 'cpu'\]"
    with pytest.raises(ValueError, match=listed):
        alphakern.alpha_relu(torch.zeros(3), G, NU, backend="numba")


def test_bad_env_backend(monkeypatch):
    monkeypatch.setenv("ALPHAKERN_BACKEND", "fast")
    with pytest.raises(ValueError, match=r"\$ALPHAKERN_BACKEND must be one of"):
        alphakern.alpha_relu(torch.zeros(3), G, NU)


def test_env_backend_overrides_default(monkeypatch):
    monkeypatch.setenv("ALPHAKERN_BACKEND", "torch")
    assert alphakern.resolve_backend(None, torch.zeros(1)) == "torch"
    assert alphakern.resolve_backend("triton", torch.zeros(1)) == "triton"  # explicit wins


def test_auto_on_cpu_is_the_native_kernels_when_built(monkeypatch):
    monkeypatch.setattr(cpu_ext, "available", lambda: True)
    assert alphakern.resolve_backend("auto", torch.zeros(1)) == "cpu"
    assert alphakern.resolve_backend("auto", torch.zeros(1, dtype=torch.float64)) == "torch"


@pytest.mark.parametrize(
    "device_type,dtype,expected",
    [
        ("cuda", torch.float32, "triton"),
        ("cuda", torch.bfloat16, "triton"),
        ("cuda", torch.float16, "triton"),
        ("cuda", torch.float64, "torch"),  # Triton's kernels take fp32/fp16/bf16 only
        ("cpu", torch.float32, "cpu"),
        ("cpu", torch.bfloat16, "cpu"),
        ("cpu", torch.float16, "cpu"),
        ("cpu", torch.float64, "torch"),  # the native CPU kernels take fp32/fp16/bf16 only
    ],
)
def test_what_auto_means(device_type, dtype, expected, monkeypatch):
    monkeypatch.setattr(triton_common, "triton", object())  # "installed", GPU or not
    monkeypatch.setattr(cpu_ext, "available", lambda: True)  # built
    assert auto_backend(device_type, dtype) == expected


def test_auto_on_cpu_without_a_build_is_torch(monkeypatch):
    monkeypatch.setattr(cpu_ext, "available", lambda: False)
    assert auto_backend("cpu", torch.float32) == "torch"


def test_auto_without_triton_is_torch(monkeypatch):
    monkeypatch.setattr(triton_common, "triton", None)
    assert auto_backend("cuda", torch.float32) == "torch"


# The registered ops check their inputs whoever calls them: the functional API, a direct
# torch.ops call, or the graph torch.compile runs (the fake kernels check while tracing).
DIRECT = {
    "functional": lambda x, g, n, b: alphakern.alpha_relu(x, g, n, backend=b),
    "op": lambda x, g, n, b: torch.ops.alphakern.alpha_relu(x, g, n, b),
    "backward_op": lambda x, g, n, b: torch.ops.alphakern.alpha_relu_backward(torch.ones_like(x), x, g, n, b),
    "compiled": lambda x, g, n, b: torch.compile(
        lambda x, g, n: torch.ops.alphakern.alpha_relu(x, g, n, b), fullgraph=True, backend="eager"
    )(x, g, n),
}


@pytest.mark.parametrize("entry", list(DIRECT))
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_every_entry_rejects_a_two_element_gamma(entry, backend):
    torch._dynamo.reset()
    with pytest.raises(Exception, match=r"gamma of shape \(2,\) does not fit x of shape \(3,\)"):
        DIRECT[entry](torch.zeros(3), torch.tensor([0.3, 99.0]), NU, backend)


@pytest.mark.parametrize("entry", ["op", "backward_op"])
def test_ops_reject_gamma_on_another_device(entry):
    """A γ on another device than x (on a GPU: a host pointer read by the kernel) is refused."""
    with pytest.raises(ValueError, match="gamma must be on x's device meta, got cpu"):
        DIRECT[entry](torch.zeros(3, device="meta"), G, NU, "torch")


def test_backward_op_checks_dy():
    with pytest.raises(ValueError, match=r"dy must match x \(torch.float32 \(3,\)"):
        torch.ops.alphakern.alpha_relu_backward(torch.ones(4), torch.zeros(3), G, NU, "torch")


def test_op_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        torch.ops.alphakern.alpha_relu(torch.zeros(3), G, NU, "auto")


def test_triton_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setattr(triton_common, "INTERPRET", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        alphakern.alpha_relu(torch.zeros(3), G, NU, backend="triton")


def test_triton_missing(monkeypatch):
    monkeypatch.setattr(triton_common, "triton", None)
    with pytest.raises(RuntimeError, match="pip install triton"):
        alphakern.alpha_relu(torch.zeros(3), G, NU, backend="triton")


def test_triton_rejects_float64():
    if not alpha_relu_triton.INTERPRET and not torch.cuda.is_available():
        pytest.skip("triton needs a GPU or TRITON_INTERPRET=1")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with pytest.raises(TypeError, match="float32, float16 or bfloat16, got torch.float64"):
        alphakern.alpha_relu(
            torch.zeros(3, dtype=torch.float64, device=device),
            G.to(device),
            NU.to(device),
            backend="triton",
        )


def test_cuda_backend_on_cpu_tensor():
    with pytest.raises(RuntimeError, match="backend='cuda' needs x on a CUDA device, got cpu"):
        alphakern.alpha_relu(torch.zeros(3), G, NU, backend="cuda")


def test_cuda_build_failure_is_loud(monkeypatch):
    from alphakern.ops.backends.native import cuda as cuda_ext

    monkeypatch.setattr(cuda_ext, "_loaded", None)
    monkeypatch.setattr(cuda_ext, "_find_cuda_home", lambda: None)
    with pytest.raises(RuntimeError, match="needs the CUDA toolkit"):
        cuda_ext.build()


def test_alpha_checks_arguments():
    with pytest.raises(ValueError, match="gamma must be a floating-point tensor"):
        alphakern.alpha(torch.tensor([1, 2]), NU)
    with pytest.raises(ValueError, match="nu must be a 1-element"):
        alphakern.alpha(G, torch.zeros(2))
    torch.testing.assert_close(alphakern.alpha(G, NU), torch.tensor(0.5))
    assert alphakern.alpha(torch.zeros(3, 4), NU).shape == (3, 4)  # one α per gate


def test_what_auto_means_for_bn_gate(monkeypatch):
    """The fused CPU kernels for CPU tensors they take; the composition on CUDA tensors (the
    Triton fused op measured slower than eager BN + gate on an H100: ops.dispatch)."""
    from types import SimpleNamespace

    from alphakern.ops.backends.native import bn_gate as native_bn
    from alphakern.ops.dispatch import auto_bn_gate_backend

    monkeypatch.setattr(native_bn, "available", lambda device="cpu": True)
    x = torch.zeros(2, 3, 4, 4)
    assert auto_bn_gate_backend(x, "channel") == auto_bn_gate_backend(x, "layer") == "cpu"
    assert auto_bn_gate_backend(x, "element") == "torch" == auto_bn_gate_backend(x.double(), "layer")
    cuda_x = SimpleNamespace(device=torch.device("cuda"), dtype=torch.float32)  # no GPU needed
    assert auto_bn_gate_backend(cuda_x, "channel") == "torch"
    monkeypatch.setattr(native_bn, "available", lambda device="cpu": False)
    assert auto_bn_gate_backend(x, "channel") == "torch"


def test_bn_gate_backend_choice_follows_the_device_and_names_what_it_takes(monkeypatch):
    """resolve: a named fused backend only for the tensors it takes (with what it takes in the
    error), "torch" as named, "auto" by ops.dispatch; Triton takes CPU tensors only under the
    interpreter (these tests run under it, so it is switched off here)."""
    from alphakern.ops import dispatch
    from alphakern.ops.bn_gate import resolve

    x = torch.zeros(2, 3, 4, 4)
    assert resolve("torch", x, "channel") == "torch"
    assert resolve("cpu", x, "layer") == "cpu"
    assert (
        resolve(None, x, "channel")
        == resolve("auto", x, "channel")
        == dispatch.auto_bn_gate_backend(x, "channel")
    )
    with pytest.raises(ValueError, match=r"^backend must be one of \['auto', .*got 'gpu'$"):
        resolve("gpu", x, "channel")
    with pytest.raises(ValueError, match=r"^bn_gate backend='cuda' takes fp32/fp16/bf16 CUDA tensors with "
                       r"a gate per layer or channel, got torch.float32 on cpu with channel gates; "
                       r"use backend='auto'$"):  # fmt: skip
        resolve("cuda", x, "channel")
    element = r"^bn_gate backend='cpu' takes fp32/fp16/bf16 CPU tensors with a gate per layer or channel, "
    with pytest.raises(ValueError, match=element + "got torch.float32 on cpu with element gates"):
        resolve("cpu", x, "element")
    monkeypatch.setattr(dispatch, "INTERPRET", False)
    assert resolve("cpu", x, "channel") == "cpu"
    with pytest.raises(ValueError, match=r"^bn_gate backend='triton' takes fp32/fp16/bf16 CUDA tensors "
                       r"\(CPU ones under TRITON_INTERPRET=1\) with a gate per layer or channel, got "
                       r"torch.float32 on cpu with channel gates; use backend='auto'$"):  # fmt: skip
        resolve("triton", x, "channel")
    monkeypatch.setattr(dispatch, "INTERPRET", True)
    assert resolve("triton", x, "channel") == "triton"


def test_what_auto_means_on_a_gpu_and_off_the_interpreter(monkeypatch):
    """ops.dispatch's rules for the cases this CPU-only suite never meets: the gate's "auto" on CUDA
    (Triton for its dtypes), the fused op's runs on CUDA tensors, and the fused CPU op chosen by
    its own name even when Triton does not take CPU tensors."""
    from types import SimpleNamespace

    from alphakern.ops import dispatch
    from alphakern.ops.backends.native import bn_gate as native_bn

    monkeypatch.setattr(alpha_relu_triton, "available", lambda: True)
    assert dispatch.auto_backend("cuda", torch.float32) == "triton"
    assert dispatch.auto_backend("cuda", torch.float64) == "torch"  # not a Triton dtype
    cuda_x = SimpleNamespace(device=torch.device("cuda"), dtype=torch.float32)
    assert dispatch.bn_gate_runs("triton", cuda_x, "channel") and dispatch.bn_gate_runs(
        "cuda", cuda_x, "layer"
    )
    assert not dispatch.bn_gate_runs("cpu", cuda_x, "layer")
    monkeypatch.setattr(dispatch, "INTERPRET", False)
    monkeypatch.setattr(native_bn, "available", lambda device="cpu": True)
    x = torch.zeros(2, 3, 4, 4)
    assert not dispatch.bn_gate_runs("triton", x, "channel")
    assert dispatch.auto_bn_gate_backend(x, "channel") == "cpu"
