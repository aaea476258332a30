"""Compile the Triton kernels ahead of time for real GPUs (no GPU needed) and report the PTX.

Run as a script (the test runs it in a child process without TRITON_INTERPRET, since the kernels
are interpreted functions in a process where that variable is set). Prints one JSON line.
"""

import json
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from alphakern.ops import alpha_relu_triton as T

DIV16 = [["tt.divisibility", 16]]  # what the JIT assumes for 16-byte aligned pointers / sizes


def compile_ptx(fn, signature, aligned, arch, block, num_warps):
    attrs = {(i,): DIV16 for i in aligned}
    src = ASTSource(fn=fn, signature=signature, constexprs={"BLOCK_SIZE": block}, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps}).asm[
        "ptx"
    ]


def main() -> None:
    out = {}
    for arch in map(int, sys.argv[1:] or ["90"]):
        for dt in ("fp32", "fp16", "bf16"):
            # n_elements not a multiple of 16 (no divisibility hint on it): full tiles stay vectorised
            fwd = compile_ptx(
                T._alpha_relu_fwd_kernel,
                {
                    "x_ptr": f"*{dt}",
                    "y_ptr": f"*{dt}",
                    "gamma_ptr": "*fp32",
                    "nu_ptr": "*fp32",
                    "n_elements": "i64",
                    "BLOCK_SIZE": "constexpr",
                },
                aligned=(0, 1, 4),
                arch=arch,
                block=T.FWD_BLOCK,
                num_warps=T.NUM_WARPS,
            )
            bwd = compile_ptx(
                T._alpha_relu_bwd_kernel,
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
                },
                aligned=(0, 1, 2, 6),
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
            out[f"sm{arch}-{dt}"] = {
                name: {
                    "v4_loads": ptx.count("ld.global.v4"),
                    "v4_stores": ptx.count("st.global.v4"),
                    "atomics": ptx.count("atom."),
                    "bytes": len(ptx),
                }
                for name, ptx in (("fwd", fwd), ("bwd", bwd), ("dgamma", fin))
            }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
