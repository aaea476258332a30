"""Kernels and the registered op; users call ``alphakern.alpha_relu`` / ``alphakern.AlphaReLU``.

core/       what every backend needs: the α formula, checks, granularity, layouts, gate layout
backends/   one module or package per backend behind one contract (see backends/__init__.py):
            torch.py, triton/ (common, layer, gates), native/ (schema, build, glue, cpu, cuda)
alpha_relu.py  the torch.library op, its fake kernels and autograd, the backend choice
"""
