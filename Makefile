# Two entry points, each setting up .venv itself on a fresh machine:
#   make bench   - the activation benchmark on whatever device is present
#   make test    - the test suite (CPU-only machines run Triton under TRITON_INTERPRET=1)
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch pinned to the build this machine kind installs from disk; override for other machines.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.alphakern-installed

.PHONY: bench test lint checkstyle venv native clean mutants torch-compat

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# The native CPU kernels (csrc/cpu): compiled once into torch's extension cache (~1 min on 2 cores),
# then only when their sources change; a no-op load otherwise.
native: $(STAMP)
	$(PY) -m alphakern build --only cpu

bench: native
	$(PY) benchmarks/bench_activation.py $(BENCH_ARGS)

# The tests run in JOBS pytest-xdist workers (default 2, this machine's cores), an idle worker taking
# tests queued on a busy one (worksteal: the builds would otherwise queue on one worker); JOBS=0:
# one process. The times measured each way: README, "The two commands".
# pytest exits 5 when it collects nothing: not a failure of the code.
JOBS ?= 2
test: native
	$(PY) -m pytest -q -n $(JOBS) --dist worksteal $(TEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

lint: checkstyle

# As Liger-Kernel's `make checkstyle`: ruff's lint and format checks for Python, clang-format
# (.clang-format) for csrc/. CI runs it before the tests.
CSRC := $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' -o -name '*.h')
checkstyle: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/clang-format --dry-run -Werror $(CSRC)

# Mutation testing (mutmut) of the Python files changed since BASE (default HEAD~1), or of FILES,
# against TESTS (default tests/) narrowed by K (a pytest -k expression), in a scratch copy under
# build/mutants (the tree is never edited; a second run resumes). Prints the score. E.g.
#   make mutants FILES=alphakern/ops/core/batchnorm.py TESTS=tests/ops/test_bn_gate.py K="not triton"
mutants: native
	$(PY) .ci/mutants.py --base $(or $(BASE),HEAD~1) $(if $(FILES),--files $(FILES)) \
	  $(if $(TESTS),--tests $(TESTS)) $(if $(K),-k "$(K)")

# The GPU machine's versions, before a GPU session after any kernel change (.ci/torch_compat.py):
# csrc/ compiled against torch 2.11's headers and C++17 (this machine builds with 2.14, C++20 -- the
# gap that cost the first GPU run its CUDA backend), the Triton kernels compiled by Triton 3.6 (here
# 3.8). The first call downloads torch's wheel (~530 MB) into build/torch-compat; ~4 min on 2 cores.
# SUITE=1: also the whole test suite in a venv of that torch (~4.7 GB, ~15 min more).
TORCH_COMPAT ?= 2.11.0
TRITON_COMPAT ?= 3.6.0
torch-compat: $(STAMP)
	$(PY) .ci/torch_compat.py --torch $(TORCH_COMPAT) \
	  --triton "$(TRITON_COMPAT)" $(if $(SUITE),--suite)

clean:
	rm -rf $(VENV) build *.egg-info
