"""The "cpu" backend: native kernels (csrc/cpu/) for fp32, fp16 and bf16 on the CPU.

Its ops' schemas are ``schema``'s; this library registers their CPU kernels.

Built by ``python -m alphakern build`` (``make`` runs it when it sets up the venv), into torch's
extension cache. The build targets the SIMD level torch itself uses on this machine: AVX2 (+FMA,
F16C) where the CPU has it, the portable ATen path elsewhere, never instructions the CPU lacks.
OpenMP (``-fopenmp``) is what makes ``at::parallel_for`` parallel: without it the kernels run on one
thread (far slower than torch.compile; benchmarks/results/README.md).

Using it without a build — the policy:
- ``backend="auto"`` on the CPU uses these kernels when a current build is cached, and otherwise the
  PyTorch backend, with a one-time warning that says how to build (it never compiles: no pauses);
- ``backend="cpu"`` asks for them: a missing build is compiled once (under a minute on 2 cores) with a
  one-line notice on stderr; a failed build raises RuntimeError with the compiler's output.
"""

from __future__ import annotations

import os
import shlex
import sys
import warnings

import torch

from alphakern.ops.backends.native import build as native_build
from alphakern.ops.backends.native import glue
from alphakern.ops.backends.native.schema import ops as _namespace
from alphakern.ops.core import activations
from alphakern.ops.core.activations import RELU, Activation

NAME = "cpu"
LIBRARY = "alphakern_cpu"
SOURCES = ("cpu/gate.cpp", "cpu/bn_gate.cpp")
HEADERS = (
    "common/checks.h",
    "common/alpha_terms.h",
    "common/act_codes.h",
    "common/bn_gate_host.h",
    "cpu/act_math.h",
    "cpu/vec_io.h",
)
ACTIVATIONS = activations.ACTIVATIONS  # every f: a template argument of the one kernel source
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_loaded: str | None = None
_missing = False  # checked once per process: auto resolves on every call, hashing sources is not free
_warned = False


def capability() -> str:
    """The SIMD level to build for, as torch's own kernels run here: "AVX512", "AVX2" or "DEFAULT".
    (ATen's vectorised exp/erf are 16 lanes wide on AVX-512: the smooth f are compute-bound there.)"""
    cap = torch.backends.cpu.get_cpu_capability()
    return cap if cap in ("AVX2", "AVX512") else "DEFAULT"


_SIMD = {
    "AVX2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"],
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c",
               "-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512"],
}  # fmt: skip


def flags(cap: str | None = None) -> list[str]:
    """Compiler flags for a capability, as ATen builds its own AVX2 / AVX-512 kernels, then those of
    ALPHAKERN_CPU_CFLAGS (e.g. "-O0 -g" to debug a kernel: the last -O wins). They are part of the
    build's fingerprint: a library built with other flags is rebuilt, never loaded."""
    cap = capability() if cap is None else cap
    extra = shlex.split(os.environ.get("ALPHAKERN_CPU_CFLAGS", ""))
    return ["-O3", "-fopenmp", *_SIMD.get(cap, ["-DCPU_CAPABILITY=DEFAULT"]), *extra]


def _build_spec() -> tuple[str, list, list[str], str]:
    """(library name, sources, flags, fingerprint of sources + headers + flags) for this machine."""
    cap = capability()
    src = native_build.csrc_dir((*SOURCES, *HEADERS))
    files = [src / s for s in SOURCES]
    cflags = flags(cap)
    digest = native_build.fingerprint([*files, *(src / h for h in HEADERS)], cflags)
    # one cache entry per SIMD level: a cache shared by two machines never loads the wrong one
    return f"{LIBRARY}_{cap.lower()}", files, cflags, digest


def build(verbose: bool = False, notice: bool = False) -> str:
    """Load the current build, compiling it first if there is none; returns the library's path."""
    global _loaded
    if _loaded is not None:
        return _loaded
    name, files, cflags, digest = _build_spec()
    lib = native_build.cached_library(name, digest)
    if lib is not None:
        torch.ops.load_library(str(lib))
    else:
        if notice:
            print("alphakern: compiling the native CPU kernels once (about a minute on 2 cores; "
                  "'python -m alphakern build' does it ahead)", file=sys.stderr)  # fmt: skip
        try:
            lib = native_build.compile_library(
                name, files, verbose, extra_cflags=cflags, extra_ldflags=["-fopenmp"]
            )
        except Exception as e:  # the builder raises RuntimeError/CalledProcessError with the log
            raise RuntimeError(
                f"building alphakern's CPU backend ({', '.join(SOURCES)}) failed:\n{e}\n"
                "It needs a C++17 compiler with OpenMP and ninja; use backend='torch' meanwhile."
            ) from e
        native_build.write_stamp(name, digest, lib)
    _loaded = str(lib)
    return _loaded


# torch.compile: looked up while Dynamo traces (a constant of the graph), never traced into it —
# a user's first call may be a compiled one, and the lookup reads files and the CPU's capability
@torch.compiler.assume_constant_result
def available(warn: bool = True) -> bool:
    """True when the kernels are loaded or a current build is cached (then loads it); never compiles.
    Otherwise False, with a one-time warning saying how to build them."""
    global _missing, _warned
    if _loaded is not None:
        return True
    if not _missing:
        name, _, _, digest = _build_spec()
        if native_build.cached_library(name, digest) is not None:
            build()
            return True
        _missing = True
    if warn and not _warned:
        _warned = True
        warnings.warn(
            "alphakern's native CPU kernels are not built: using the PyTorch backend on the CPU. "
            "Build them with 'python -m alphakern build' (or 'make').",
            stacklevel=4,
        )
    return False


def _ops():
    build(notice=True)
    return _namespace()


def _check(x: torch.Tensor) -> None:
    if x.device.type != "cpu":
        raise RuntimeError(f"backend='cpu' needs x on the CPU, got {x.device}")
    if x.dtype not in DTYPES:
        raise RuntimeError(f"backend='cpu' takes float32, float16 or bfloat16, got {x.dtype}; use 'torch'")


def forward(
    x: torch.Tensor, gamma: torch.Tensor, nu: torch.Tensor, granularity: str, act: Activation = RELU
) -> torch.Tensor:
    _check(x)
    return glue.forward(_ops(), x, gamma, nu, granularity, act)


def backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    gamma: torch.Tensor,
    nu: torch.Tensor,
    granularity: str,
    act: Activation = RELU,
) -> tuple[torch.Tensor, torch.Tensor]:
    _check(x)
    return glue.backward(_ops(), dy, x, gamma, nu, granularity, act)
