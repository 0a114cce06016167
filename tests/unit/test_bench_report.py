"""The machine description every benchmark JSON shares: which int8 instruction sets the CPU has."""

from __future__ import annotations

from pathlib import Path

from benchmarks.report import INT8_FLAGS, cpu_flags


def test_cpu_flags_names_the_int8_instruction_sets_the_cpu_reports(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512bw\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512bw\n")
    assert cpu_flags(cpuinfo=info) == ["avx2", "avx512f", "avx512_vnni"]  # in INT8_FLAGS order, no AMX, no AVX-VNNI
    assert cpu_flags(("amx_int8", "avx512bw"), cpuinfo=info) == ["avx512bw"]
    assert set(INT8_FLAGS) >= {"avx512_vnni", "amx_int8"}


def test_cpu_flags_is_empty_where_there_is_no_cpuinfo(tmp_path: Path) -> None:
    assert cpu_flags(cpuinfo=tmp_path / "missing") == []
