"""The native backends: the C++/CUDA libraries of csrc/ (``cpu``, ``cuda``), the op schemas both
register kernels for (``schema``), how they are built and cached (``build``), and the Python side
that maps any layout and granularity onto their flat ops (``glue``)."""

from alphakern.ops.backends.native import schema  # noqa: F401  (defines the ops before any load)
