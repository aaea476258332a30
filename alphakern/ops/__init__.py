"""Kernels and the registered op. Users call alphakern.alpha_relu / alphakern.AlphaReLU instead."""
