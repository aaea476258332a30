"""What decides the CPU library's build, without compiling: its flags and fingerprint."""

from alphakern.ops.backends.native import build as native_build
from alphakern.ops.backends.native import cpu as cpu_ext


def test_extra_cflags_come_last_and_make_another_build(monkeypatch, tmp_path):
    """ALPHAKERN_CPU_CFLAGS is split as a shell would and appended (so its -O wins); the fingerprint
    changes with it, so a library built with other flags is never loaded for this one."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.delenv("ALPHAKERN_CPU_CFLAGS", raising=False)
    default = cpu_ext.flags("AVX2")
    assert default[0] == "-O3" and "-mavx2" in default
    name, _, _, digest = cpu_ext._build_spec()
    native_build.write_stamp(name, digest, tmp_path / "lib.so")
    (tmp_path / "lib.so").touch()
    assert native_build.cached_library(name, digest) == tmp_path / "lib.so"

    monkeypatch.setenv("ALPHAKERN_CPU_CFLAGS", "-O0 -g '-DTAG=a b'")
    assert cpu_ext.flags("AVX2") == [*default, "-O0", "-g", "-DTAG=a b"]
    other_name, _, _, other = cpu_ext._build_spec()
    assert other_name == name and other != digest
    assert native_build.cached_library(name, other) is None  # rebuilt, not loaded
