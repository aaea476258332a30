"""Compile the Triton kernels ahead of time for real GPUs (no GPU needed); report PTX and registers.

Run as a script (the test runs it in a child process without TRITON_INTERPRET, since the kernels
are interpreted functions in a process where that variable is set). Prints one JSON line:
per arch and dtype, per kernel, the 16-byte loads/stores, atomics, approximate-math instructions
and the registers ptxas allocates (``ptxas -v``, Triton's bundled ptxas).

Pointers get Triton's 16-byte divisibility hint (what the JIT infers from aligned tensors);
``n_elements`` gets none, so the ragged-size variant is what is compiled: a kernel whose full
tiles lost their vector accesses would show here.
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from alphakern.ops.backends.triton import bn_gate as BN
from alphakern.ops.backends.triton import gates as G
from alphakern.ops.backends.triton import layer as T

DIV16 = [["tt.divisibility", 16]]
ACT_ARGS = {"ACT": "constexpr", "NEG": "constexpr"}
PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"


def compile_ptx(fn, signature, aligned, arch, block, num_warps):
    """``block``: BLOCK_SIZE, or a dict of every constexpr; ``aligned``: argument indices with
    Triton's divisibility-by-16 hint (pointers, and sizes the JIT would see as multiples of 16)."""
    attrs = {(i,): DIV16 for i in aligned}
    constexprs = dict(block) if isinstance(block, dict) else {"BLOCK_SIZE": block}
    if "ACT" in signature:  # the element-math kernels: ReLU unless the caller names f
        constexprs = {"ACT": 0, "NEG": 0.0, **constexprs}
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps}).asm[
        "ptx"
    ]


def registers(ptx: str, arch: int) -> int | None:
    """Registers per thread that ptxas allocates for the (single) kernel in ``ptx``."""
    if not PTXAS.exists():
        return None
    target = re.search(r"^\.target\s+(sm_\w+)", ptx, re.M)  # Triton targets sm_90a on Hopper
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "k.ptx"
        src.write_text(ptx)
        proc = subprocess.run(
            [
                str(PTXAS),
                "-v",
                f"-arch={target.group(1) if target else f'sm_{arch}'}",
                str(src),
                "-o",
                str(Path(d) / "k.cubin"),
            ],
            capture_output=True,
            text=True,
        )
    m = re.search(r"Used (\d+) registers", proc.stderr)
    return int(m.group(1)) if m else None


def report(ptx: str, arch: int) -> dict:
    return {
        "v4_loads": ptx.count("ld.global.v4"),
        "v4_stores": ptx.count("st.global.v4"),
        "atomics": ptx.count("atom."),
        # fp32 fast-math transcendentals: α must come from exact fp64 exp and division
        "approx_math": len(re.findall(r"\b(?:ex2|rcp|div)\.approx", ptx)),
        "registers": registers(ptx, arch),
    }


def gate_kernels(arch: int, dt: str) -> dict[str, str]:
    """The per-channel/per-element kernels at the reference CNN's shapes: channels_last 64
    channels ("cols", G = 64) and NCHW with 32x32 planes ("rows", B = 1024)."""
    block_a, block_g = G._cols_blocks(64)
    cols = {"BLOCK_A": block_a, "BLOCK_G": block_g}
    ptr = f"*{dt}"
    common = {
        "gate_ptr": "*fp32",
        "nu_ptr": "*fp32",
        "A": "i32",
        "G": "i32",
        "BLOCK_A": "constexpr",
        "BLOCK_G": "constexpr",
        **ACT_ARGS,
    }
    rows_common = {
        "gamma_ptr": "*fp32",
        "nu_ptr": "*fp32",
        "C": "i32",
        "B": "i32",
        "n_chunks": "i32",
        "BLOCK": "constexpr",
        **ACT_ARGS,
    }
    rows = {"BLOCK": G._rows_block(1024)}
    rows_warps = G._rows_warps(rows["BLOCK"], 4 if dt == "fp32" else 2)
    return {
        "cols_fwd": compile_ptx(
            G._cols_fwd_kernel, {"x_ptr": ptr, "y_ptr": ptr, **common}, (0, 1, 5), arch, cols, 8
        ),
        "cols_bwd": compile_ptx(
            G._cols_bwd_kernel,
            {
                "dy_ptr": ptr,
                "x_ptr": ptr,
                "dx_ptr": ptr,
                "partial_ptr": "*fp32",
                **{k: v for k, v in common.items() if k not in ACT_ARGS},
                "row_blocks_per_program": "i32",
                **{k: v for k, v in common.items() if k in ACT_ARGS},
            },
            (0, 1, 2, 3, 7),
            arch,
            cols,
            8,
        ),
        "rows_fwd": compile_ptx(
            G._rows_fwd_kernel, {"x_ptr": ptr, "y_ptr": ptr, **rows_common}, (0, 1, 5), arch, rows, rows_warps
        ),
        "rows_bwd": compile_ptx(
            G._rows_bwd_kernel,
            {"dy_ptr": ptr, "x_ptr": ptr, "dx_ptr": ptr, "partial_ptr": "*fp32", **rows_common},
            (0, 1, 2, 3, 7),
            arch,
            rows,
            rows_warps,
        ),
        "colsum": compile_ptx(
            G._colsum_kernel,
            {
                "partial_ptr": "*fp32",
                "out_ptr": "*fp32",
                "K": "i32",
                "G": "i32",
                "BLOCK_K": "constexpr",
                "BLOCK_G": "constexpr",
            },
            (0, 1, 3),
            arch,
            {"BLOCK_K": G.FINAL_BLOCK_K, "BLOCK_G": G.FINAL_BLOCK_G},
            4,
        ),
    }


def main() -> None:
    out = {}
    for arch in map(int, sys.argv[1:] or ["90"]):
        for dt in ("fp32", "fp16", "bf16"):
            fwd = compile_ptx(
                T._layer_gate_fwd_kernel,
                {
                    "x_ptr": f"*{dt}",
                    "y_ptr": f"*{dt}",
                    "gamma_ptr": "*fp32",
                    "nu_ptr": "*fp32",
                    "n_elements": "i64",
                    "BLOCK_SIZE": "constexpr",
                    **ACT_ARGS,
                },
                aligned=(0, 1),
                arch=arch,
                block=T.FWD_BLOCK,
                num_warps=T.NUM_WARPS,
            )
            bwd = compile_ptx(
                T._layer_gate_bwd_kernel,
                {
                    "dy_ptr": f"*{dt}",
                    "x_ptr": f"*{dt}",
                    "dx_ptr": f"*{dt}",
                    "partial_ptr": "*fp32",
                    "gamma_ptr": "*fp32",
                    "nu_ptr": "*fp32",
                    "n_elements": "i64",
                    "tiles_per_program": "i32",
                    "BLOCK_SIZE": "constexpr",
                    **ACT_ARGS,
                },
                aligned=(0, 1, 2),
                arch=arch,
                block=T.BWD_BLOCK,
                num_warps=T.NUM_WARPS,
            )
            fin = compile_ptx(
                T._alpha_relu_dgamma_kernel,
                {
                    "partial_ptr": "*fp32",
                    "gamma_ptr": "*fp32",
                    "nu_ptr": "*fp32",
                    "dgamma_ptr": "*fp32",
                    "n_partials": "i32",
                    "BLOCK_SIZE": "constexpr",
                },
                aligned=(0,),
                arch=arch,
                block=T.FINAL_BLOCK,
                num_warps=4,
            )
            kernels = {"fwd": fwd, "bwd": bwd, "dgamma": fin, **gate_kernels(arch, dt)}
            out[f"sm{arch}-{dt}"] = {name: report(ptx, arch) for name, ptx in kernels.items()}
        out[f"sm{arch}-fp32-activations"] = activation_kernels(arch)
        out[f"sm{arch}-fp32-bn_gate"] = bn_gate_kernels(arch)
    print(json.dumps(out))


def bn_gate_kernels(arch: int) -> dict:
    """BatchNorm + gate (fp32, relu and silu; with a residual — RES — and without) at the reference
    CNN's 64 channels: channels_last (tiles of 32 rows x 64 channels) and NCHW with 32x32 planes
    (2 channels x 1024); the launch's own 4 warps. C and S carry the divisibility hint the JIT
    infers for multiples of 16."""
    ptr = "*fp32"
    geo = {"M": "i32", "C": "i32", "S": "i32", "n_sb": "i32"}
    params = {k: ptr for k in ("mean_ptr", "invstd_ptr", "w_ptr", "b_ptr", "a_ptr", "om_ptr")}
    tile = {"CL": "constexpr", "AX": "constexpr", "BM": "constexpr", "BC": "constexpr"}
    no_ax = {k: v for k, v in tile.items() if k != "AX"}
    sigs = {
        "stats": (BN._stats_kernel, {"x_ptr": ptr, "shift_ptr": ptr, "part_ptr": ptr, **geo, **tile}, 3),
        "fwd": (BN._fwd_kernel, {"x_ptr": ptr, "r_ptr": ptr, "y_ptr": ptr, **params, **geo, **no_ax,
                                 **ACT_ARGS, "RES": "constexpr"}, 9),
        "bwd": (BN._bwd_kernel, {"dy_ptr": ptr, "x_ptr": ptr, "r_ptr": ptr, "dx_ptr": ptr, "dr_ptr": ptr,
                                 "part_ptr": ptr, **params, "ca_ptr": ptr, "cb_ptr": ptr, **geo, **tile,
                                 **ACT_ARGS, "APPLY": "constexpr", "RES": "constexpr"}, 14),
    }  # fmt: skip
    out = {}
    for layout, cx in (
        ("cl", {"CL": True, "BM": 32, "BC": 64}),
        ("nchw", {"CL": False, "BM": 1024, "BC": 2}),
    ):
        for act in (0, 5):  # relu, silu
            for kind, (fn, sig, n_ptrs) in sigs.items():
                variants = [{"APPLY": False}, {"APPLY": True}] if kind == "bwd" else [{}]
                if kind != "stats":
                    variants = [{**v, "RES": res} for v in variants for res in (False, True)]
                for v in variants:
                    if kind == "stats" and act:
                        continue
                    block = {**cx, **v, **({"AX": 0 if cx["CL"] else 1} if "AX" in sig else {})}
                    if "ACT" in sig:
                        block.update(ACT=act, NEG=0.0)
                    # pointers and C, S aligned; geometry starts at index n_ptrs
                    aligned = (*range(n_ptrs), n_ptrs + 1, n_ptrs + 2)
                    mode = ("_apply" if v.get("APPLY") else "") + ("_res" if v.get("RES") else "")
                    name = f"{layout}_{kind}{mode}_{'silu' if act else 'relu'}"
                    out[name] = report(compile_ptx(fn, sig, aligned, arch, block, 4), arch)
    return out


def activation_kernels(arch: int) -> dict:
    """The layer-gate forward and backward for every other f (fp32): they compile, keep their
    16-byte accesses and their register budget (their fp32 exp/erf are the fast hardware forms,
    as PyTorch's own kernels use; α stays exact fp64)."""
    from alphakern.ops.core.activations import ACTIVATIONS, Activation

    ptr = "*fp32"
    fwd_sig = {"x_ptr": ptr, "y_ptr": ptr, "gamma_ptr": ptr, "nu_ptr": ptr, "n_elements": "i64",
               "BLOCK_SIZE": "constexpr", **ACT_ARGS}  # fmt: skip
    bwd_sig = {"dy_ptr": ptr, "x_ptr": ptr, "dx_ptr": ptr, "partial_ptr": ptr, "gamma_ptr": ptr,
               "nu_ptr": ptr, "n_elements": "i64", "tiles_per_program": "i32",
               "BLOCK_SIZE": "constexpr", **ACT_ARGS}  # fmt: skip
    out = {}
    for name in ACTIVATIONS[1:]:
        act = Activation(name, 0.2)
        cx = {"ACT": act.code, "NEG": act.negative_slope if name == "leaky_relu" else 0.0}
        for kind, fn, sig, aligned, block in (
            ("fwd", T._layer_gate_fwd_kernel, fwd_sig, (0, 1), T.FWD_BLOCK),
            ("bwd", T._layer_gate_bwd_kernel, bwd_sig, (0, 1, 2), T.BWD_BLOCK),
        ):
            ptx = compile_ptx(fn, sig, aligned, arch, {"BLOCK_SIZE": block, **cx}, T.NUM_WARPS)
            out[f"{name}_{kind}"] = report(ptx, arch)
    return out


if __name__ == "__main__":
    main()
