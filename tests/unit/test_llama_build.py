"""The installed llama.cpp is the portable build the README's install makes (GGML_NATIVE=OFF).

A build tuned to the building CPU (`-march=native`) uses instructions other machines of the same
architecture lack: built on one machine and run on another, or built on a Xeon with AMX, it crashed
on its first generation. The portable build's CPU backend reports only the architecture's baseline.
"""

from __future__ import annotations

import re

import pytest

llama_cpp = pytest.importorskip("llama_cpp", reason="the `local` extra (llama-cpp-python) is not installed")

# Instruction sets only a native build compiles in (x86_64: AVX-512, AVX-VNNI, AMX; arm64: SVE, SME).
NATIVE_ONLY = re.compile(r"^(AVX512\w*|AVX_VNNI|AMX\w*|SVE\w*|SME\w*)$")


def native_only(system_info: str) -> list[str]:
    """The native-only instruction sets a llama.cpp system-info line reports as compiled in."""
    features = dict(re.findall(r"(\w+) = (\w+)", system_info))
    return sorted(name for name, value in features.items() if NATIVE_ONLY.match(name) and value == "1")


def test_the_installed_build_uses_no_instruction_set_only_a_native_build_compiles_in() -> None:
    info = llama_cpp.llama_print_system_info().decode()
    assert re.search(r"\w+ = 1", info), f"llama.cpp reported no CPU features: {info!r}"
    native = native_only(info)
    assert native == [], (
        f"llama.cpp was built for this CPU ({', '.join(native)}): reinstall with "
        'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --no-cache-dir --force-reinstall llama-cpp-python'
    )


def test_the_check_reads_features_a_native_build_reports() -> None:
    # What a native build on an AVX-512 Xeon with AMX prints: the check above would refuse it
    native = "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | "
    found = dict(re.findall(r"(\w+) = (\w+)", native))
    assert sorted(n for n, v in found.items() if NATIVE_ONLY.match(n) and v == "1") == [
        "AMX_INT8",
        "AVX512",
        "AVX512_VNNI",
    ]
