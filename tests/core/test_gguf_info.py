from __future__ import annotations

import pytest
from hoshikage_core.gguf_info import GGUFError, read_info

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
