"""References as people type them, and which files of a repo a quant tag picks."""

from __future__ import annotations

import pytest
from hoshikage_core.pull.hub import NotFound, RemoteFile, choose
from hoshikage_core.pull.refs import BadReference, HfRef, OllamaRef, parse


@pytest.mark.parametrize(
    "text, repo, quant, file",
    [
        ("hf.co/bartowski/Qwen3-8B-GGUF:Q4_K_M", "bartowski/Qwen3-8B-GGUF", "Q4_K_M", None),
        ("huggingface.co/bartowski/Qwen3-8B-GGUF", "bartowski/Qwen3-8B-GGUF", None, None),
        ("https://hf.co/org/repo:iq4_xs", "org/repo", "iq4_xs", None),
        ("org/repo:Q8_0", "org/repo", "Q8_0", None),
        ("org/repo:latest", "org/repo", None, None),
        ("hf.co/org/repo/sub/Model-Q4_K_M.gguf", "org/repo", None, "sub/Model-Q4_K_M.gguf"),
    ],
)
def test_hugging_face_references(text, repo, quant, file):
    ref = parse(text)
    assert isinstance(ref, HfRef)
    assert (ref.repo, ref.quant, ref.file) == (repo, quant, file)


@pytest.mark.parametrize(
    "text, namespace, model, tag",
    [
        ("qwen3:8b", "library", "qwen3", "8b"),
        ("qwen3", "library", "qwen3", "latest"),
        ("library/qwen3:8b", "library", "qwen3", "8b"),
        ("ollama.com/someone/model:tag", "someone", "model", "tag"),
        ("registry.ollama.ai/library/gemma3:270m", "library", "gemma3", "270m"),
    ],
)
def test_ollama_references(text, namespace, model, tag):
    ref = parse(text)
    assert isinstance(ref, OllamaRef)
    assert (ref.namespace, ref.model, ref.tag) == (namespace, model, tag)
    assert ref.name == (
        f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"
    )


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "required"),
        ("a b", "not a valid name"),
        ("hf.co/org", "org/repo"),
        ("hf.co/org/repo/readme.md", ".gguf"),
        ("hf.co/org/repo/../x.gguf", ".gguf"),
        ("a/b/c/d:e", ".gguf"),
        ("model:bad tag", "not a tag"),
    ],
)
def test_bad_references_say_why(text, words):
    with pytest.raises(BadReference, match=words):
        parse(text)


def files(*paths: str) -> list[RemoteFile]:
    return [RemoteFile(path=p, size=1, sha256=None) for p in paths]


REPO = files(
    "Model-IQ4_XS.gguf",
    "Model-Q4_K.gguf",
    "Model-Q4_K_M.gguf",
    "Model-Q8_0.gguf",
    "mmproj-Model-F16.gguf",
    "Q6_K/Model-Q6_K-00001-of-00002.gguf",
    "Q6_K/Model-Q6_K-00002-of-00002.gguf",
)


def pick(text: str, repo=REPO) -> tuple[list[str], str | None]:
    model, projector = choose(parse(text), repo)
    return [f.path for f in model], projector.path if projector else None


def test_quant_tags_pick_their_file_case_insensitively():
    assert pick("org/repo:q4_k_m") == (["Model-Q4_K_M.gguf"], "mmproj-Model-F16.gguf")
    assert pick("org/repo:Q4_K")[0] == ["Model-Q4_K.gguf"]  # not Q4_K_M
    assert pick("org/repo:IQ4_XS")[0] == ["Model-IQ4_XS.gguf"]
    assert pick("org/repo")[0] == ["Model-Q4_K_M.gguf"]  # Ollama's default


def test_a_split_model_is_every_shard():
    assert pick("org/repo:Q6_K")[0] == [
        "Q6_K/Model-Q6_K-00001-of-00002.gguf",
        "Q6_K/Model-Q6_K-00002-of-00002.gguf",
    ]
    assert pick("hf.co/org/repo/Q6_K/Model-Q6_K-00001-of-00002.gguf")[0][1].endswith("2.gguf")


def test_a_missing_quant_lists_what_there_is():
    with pytest.raises(NotFound, match="no Q2_K file. Its quantizations: IQ4_XS, Q4_K, Q4_K_M"):
        pick("org/repo:Q2_K")
    with pytest.raises(NotFound, match="no Q4_K_M: name one"):
        pick("org/repo", files("A-Q8_0.gguf", "A-Q5_K_M.gguf"))
    assert pick("org/repo", files("Only-F16.gguf"))[0] == ["Only-F16.gguf"]
    with pytest.raises(NotFound, match="no GGUF files"):
        pick("org/repo", files("mmproj-x.gguf"))
