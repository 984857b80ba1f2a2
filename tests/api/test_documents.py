"""Documents on a real server, through the official SDKs: a PDF's text (pypdf) or a text
file's goes into the prompt where the document stood, on the Anthropic Messages API
(``document`` blocks, in a message or a ``tool_result``), the chat API (``file`` parts) and
the Responses API (``input_file``). Each check compares the tokens the model was given with
those of the same request carrying the expected text in the document's place, so a
document that was dropped, or read wrong, fails it. Every bad document is a 400 naming its
field, and the server stays up."""

from __future__ import annotations

import base64

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
pytest.importorskip("pypdf")

from tests.support.documents import pdf  # noqa: E402
from tests.support.server import running_server  # noqa: E402

pytestmark = pytest.mark.timeout(180)

TWO_PAGES = pdf(["The lighthouse keeper", "counted 41 ships."], "Page two: the fog lifted.")
TWO_PAGES_TEXT = (
    "[Page 1]\nThe lighthouse keeper\ncounted 41 ships.\n\n[Page 2]\nPage two: the fog lifted."
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(data: bytes, mime: str = "application/pdf") -> str:
    return f"data:{mime};base64,{b64(data)}"


@pytest.fixture(scope="module")
def server(tiny_model_path):
    config = {"models": [{"name": "tiny", "path": str(tiny_model_path), "n_ctx": 2048}]}
    with running_server(config) as srv:
        yield srv


@pytest.fixture
def claude(server):
    return anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0)


@pytest.fixture
def oai(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)


def tokens(claude, content) -> int:
    return claude.messages.count_tokens(
        model="tiny", messages=[{"role": "user", "content": content}]
    ).input_tokens


def test_a_pdf_document_is_read_page_by_page(claude):
    question = {"type": "text", "text": "How many ships?"}
    document = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": b64(TWO_PAGES)},
    }
    read = tokens(claude, [document, question])
    assert read == tokens(claude, [{"type": "text", "text": TWO_PAGES_TEXT}, question])
    assert read != tokens(claude, [{"type": "text", "text": "[Page 1]\nThe keeper"}, question])
    # title and context go before the text; a generation reads the same.
    titled = {**document, "title": "log.pdf", "context": "The keeper's log."}
    expected = f"Document: log.pdf\n\nThe keeper's log.\n\n{TWO_PAGES_TEXT}"
    assert tokens(claude, [titled, question]) == tokens(
        claude, [{"type": "text", "text": expected}, question]
    )
    answer = claude.messages.create(
        model="tiny", max_tokens=2, messages=[{"role": "user", "content": [titled, question]}]
    )
    assert answer.stop_reason == "max_tokens"
    assert answer.usage.input_tokens + (answer.usage.cache_read_input_tokens or 0) >= read


def test_text_documents_and_documents_in_tool_results(claude):
    question = {"type": "text", "text": "What does it say?"}
    text = "Tide at 6:40.\nWind from the west."
    for source in (
        {"type": "text", "media_type": "text/plain", "data": text},
        {
            "type": "content",
            "content": [
                {"type": "text", "text": "Tide at 6:40."},
                {"type": "text", "text": "Wind from the west."},
            ],
        },
        {"type": "base64", "media_type": "text/markdown", "data": b64(text.encode())},
    ):
        document = {"type": "document", "source": source}
        assert tokens(claude, [document, question]) == tokens(
            claude, [{"type": "text", "text": text}, question]
        ), source

    # In a tool_result, as Claude Code's Read of a PDF sends it.
    def conversation(result_content):
        return [
            {"role": "user", "content": "Read log.pdf"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": result_content}
                ],
            },
        ]

    read_tool = [{"name": "Read", "input_schema": {"type": "object"}}]
    pdf_block = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": b64(TWO_PAGES)},
    }
    as_pdf = claude.messages.count_tokens(
        model="tiny", tools=read_tool, messages=conversation([pdf_block])
    ).input_tokens
    as_text = claude.messages.count_tokens(
        model="tiny",
        tools=read_tool,
        messages=conversation([{"type": "text", "text": TWO_PAGES_TEXT}]),
    ).input_tokens
    assert as_pdf == as_text


def test_a_pdf_without_text_says_so_in_the_prompt(claude):
    blank = pdf([], [])
    document = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": b64(blank)},
    }
    note = (
        "[This PDF has 2 pages and no text to read: its pages are images (a scan?), which are"
        " not read from PDFs here.]"
    )
    assert tokens(claude, [document]) == tokens(claude, [{"type": "text", "text": note}])


@pytest.mark.parametrize(
    ("source", "field", "words"),
    [
        (
            {"type": "base64", "media_type": "application/pdf", "data": b64(b"%PDF-1.4 broken")},
            "source.data",
            "PDF cannot be read",
        ),
        (
            {"type": "base64", "media_type": "application/pdf", "data": "not base64!"},
            "source.data",
            "not valid base64",
        ),
        (
            {"type": "base64", "media_type": "image/png", "data": b64(b"\x89PNG")},
            "source.data",
            "PDFs and text files are",
        ),
        (
            {"type": "base64", "media_type": "text/plain", "data": b64(b"\xff\xfe\xfa")},
            "source.data",
            "not UTF-8",
        ),
        ({"type": "url", "url": "https://example.com/a.pdf"}, "source", "not fetched from URLs"),
        ({"type": "file", "file_id": "file_1"}, "source.type", "no files are stored"),
    ],
)
def test_bad_documents_are_400_naming_the_field(claude, source, field, words):
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(
            model="tiny",
            max_tokens=2,
            messages=[{"role": "user", "content": [{"type": "document", "source": source}]}],
        )
    message = info.value.response.json()["error"]["message"]
    assert f"messages[0].content[0].{field}" in message and words in message, message


def test_chat_file_parts_and_responses_input_files(oai):
    question = {"type": "text", "text": "How many ships?"}

    def chat_tokens(part) -> int:
        reply = oai.chat.completions.create(
            model="tiny", max_tokens=1, messages=[{"role": "user", "content": [part, question]}]
        )
        return reply.usage.prompt_tokens

    expected = chat_tokens({"type": "text", "text": TWO_PAGES_TEXT})
    part = {"type": "file", "file": {"file_data": data_url(TWO_PAGES), "filename": "log.pdf"}}
    titled = chat_tokens({"type": "text", "text": f"Document: log.pdf\n\n{TWO_PAGES_TEXT}"})
    assert chat_tokens(part) == titled != expected
    # Bare base64: the file's name tells its type.
    bare = {"type": "file", "file": {"file_data": b64(TWO_PAGES), "filename": "log.pdf"}}
    assert chat_tokens(bare) == titled
    with pytest.raises(openai.BadRequestError) as info:
        chat_tokens({"type": "file", "file": {"file_id": "file-abc"}})
    assert info.value.param == "messages[0].content[0].file.file_data"
    assert "file_id and file_url are not supported" in info.value.message

    def responses_tokens(part) -> int:
        answer = oai.responses.create(
            model="tiny",
            max_output_tokens=1,
            store=False,
            input=[{"role": "user", "content": [part, {"type": "input_text", "text": "Ships?"}]}],
        )
        return answer.usage.input_tokens

    text = responses_tokens({"type": "input_text", "text": TWO_PAGES_TEXT})
    as_file = responses_tokens({"type": "input_file", "file_data": data_url(TWO_PAGES)})
    assert as_file == text
    with pytest.raises(openai.BadRequestError) as info:
        responses_tokens({"type": "input_file", "file_url": "https://example.com/a.pdf"})
    assert info.value.param == "input[0].content[0].file_data"
    assert oai.models.list().data  # the server is still up
