"""The C++/CUDA sources live at the top level (csrc/, as extension-cpp and torchvision lay them
out). alphakern compiles them at first use (torch.utils.cpp_extension, cached), so an installed
alphakern needs them too: the wheel carries a copy as package data, alphakern/_csrc. Everything
else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithSources(build_py):
    """build_py that also copies csrc/ into the built package as alphakern/_csrc."""

    def run(self) -> None:
        super().run()
        src = Path(__file__).resolve().parent / "csrc"
        dest = Path(self.build_lib) / "alphakern" / "_csrc"
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.o", "*.so"))


setup(cmdclass={"build_py": BuildPyWithSources})
