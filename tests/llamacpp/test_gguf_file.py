"""The GGUF check (hoshikage_core.gguf_info) that runs before llama.cpp sees a file, and the
load errors it gives."""

from __future__ import annotations

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from hoshikage_core.errors import ModelLoadError  # noqa: E402
from hoshikage_core.gguf_info import FILE_TYPES, GGML_BLOCKS, GGUFError, read_info  # noqa: E402
from hoshikage_llamacpp.lifecycle.model import LlamaCppModel  # noqa: E402
from hoshikage_llamacpp.options import LlamaOptions  # noqa: E402


def test_block_sizes_match_the_gguf_package():
    from gguf.constants import GGML_QUANT_SIZES

    assert {int(t): size for t, size in GGML_QUANT_SIZES.items()} == GGML_BLOCKS


def test_file_type_names_match_the_gguf_package():
    from gguf.constants import LlamaFileType

    expected = {
        int(t): t.name.removeprefix("MOSTLY_").removeprefix("ALL_")
        for t in LlamaFileType
        if t is not LlamaFileType.GUESSED
    }
    assert FILE_TYPES == expected


def test_valid_file(tiny_model_path):
    info = read_info(tiny_model_path)
    assert info.version == 3
    assert info.required_size == info.file_size
    assert info.metadata["general.architecture"] == "llama"
    assert "{{ bos_token }}" in info.metadata["tokenizer.chat_template"]


def truncated_copy(src, dst, keep):
    data = src.read_bytes()
    dst.write_bytes(data[:keep])
    return dst


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda src, tmp: tmp / "missing.gguf", "file not found"),
        (lambda src, tmp: tmp, "is a directory"),
        (
            lambda src, tmp: _write(tmp / "notes.gguf", b"hello, I am text\n" * 10),
            "not a GGUF file",
        ),
        (lambda src, tmp: _write(tmp / "tiny.gguf", b"GGUF"), "truncated"),
        (
            lambda src, tmp: truncated_copy(src, tmp / "head.gguf", 2000),
            "truncated: the file ends inside its header",
        ),
        (lambda src, tmp: truncated_copy(src, tmp / "cut.gguf", -1000), "truncated: the file has"),
    ],
)
def test_bad_files_say_why(tiny_model_path, tmp_path, make, reason):
    path = make(tiny_model_path, tmp_path)
    with pytest.raises(GGUFError, match=reason):
        read_info(path)
    with pytest.raises(ModelLoadError) as info:
        LlamaCppModel.load("broken", str(path), LlamaOptions(n_ctx=64))
    assert str(path) in str(info.value) and reason in str(info.value)
    assert info.value.model == "broken"


def test_unsupported_version(tiny_model_path, tmp_path):
    data = bytearray(tiny_model_path.read_bytes())
    data[4:8] = (99).to_bytes(4, "little")
    path = _write(tmp_path / "v99.gguf", bytes(data))
    with pytest.raises(GGUFError, match="unsupported GGUF version 99"):
        read_info(path)


def _write(path, data):
    path.write_bytes(data)
    return path
