"""Command line: ``python -m alphakern {build-cuda,train,report}`` (also the ``alphakern`` script)."""

from __future__ import annotations

import argparse
import sys


def _build_cuda(args: argparse.Namespace) -> int:
    from alphakern.ops import cuda_ext

    try:
        path = cuda_ext.build(verbose=args.verbose)
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"alphakern CUDA backend built: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alphakern", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build-cuda", help="compile csrc/ (the 'cuda' backend) and print where it went")
    p.add_argument("--verbose", action="store_true", help="show the compiler's commands")
    p.set_defaults(func=_build_cuda)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
