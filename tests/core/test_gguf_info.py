from __future__ import annotations

import os

import pytest
from hoshikage_core.gguf_info import GGUFError, _parse, cached_info, read_info

from tests.core.gguf_writer import write_minimal_gguf


def test_reads_header_facts(tmp_path):
    path = tmp_path / "m.gguf"
    write_minimal_gguf(path, arch="gemma3", context_length=32768, file_type=7)
    info = read_info(path)
    assert (info.architecture, info.context_length, info.quantization) == ("gemma3", 32768, "Q8_0")
    assert info.tensor_count == 1 and info.file_size == path.stat().st_size
    assert info.parameter_count == 64 // 4  # the one F32 tensor's elements


def test_parameter_count_sums_every_tensor(tiny_model_path):
    pytest.importorskip("gguf")
    from gguf import GGUFReader

    expected = sum(int(t.n_elements) for t in GGUFReader(tiny_model_path).tensors)
    assert read_info(tiny_model_path).parameter_count == expected > 100_000


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: None, "file not found"),
        (lambda p: p.write_bytes(b"PK\x03\x04 zip, not gguf"), "not a GGUF file"),
        (lambda p: p.write_bytes(b"GGUF\x03\x00"), "truncated"),
        (lambda p: write_minimal_gguf(p, truncate=10), "truncated"),
    ],
)
def test_bad_files_say_why(tmp_path, make, reason):
    path = tmp_path / "bad.gguf"
    make(path)
    with pytest.raises(GGUFError, match=reason):
        read_info(path)


def test_cached_info_parses_a_file_once_until_it_changes(tmp_path, monkeypatch):
    parsed = []
    monkeypatch.setattr(
        "hoshikage_core.gguf_info._parse",
        lambda buf, size: parsed.append(size) or _parse(buf, size),
    )
    path = tmp_path / "m.gguf"
    write_minimal_gguf(path, arch="gemma3", context_length=4096)
    first = cached_info(path)
    assert cached_info(path) is first
    assert cached_info(tmp_path / ".." / tmp_path.name / "m.gguf") is first  # the same file
    assert len(parsed) == 1
    write_minimal_gguf(path, arch="llama", context_length=8192)
    os.utime(path, ns=(1, 1))  # a new modification time, whatever the clock's resolution
    assert cached_info(path).architecture == "llama" and len(parsed) == 2


def test_cached_info_says_why_a_bad_file_is_bad_each_time(tmp_path):
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"GGUF\x03\x00")
    for _ in range(2):
        with pytest.raises(GGUFError, match="truncated"):
            cached_info(path)
    with pytest.raises(GGUFError, match="file not found"):
        cached_info(tmp_path / "missing.gguf")
