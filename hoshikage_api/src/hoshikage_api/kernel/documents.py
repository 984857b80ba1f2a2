"""Documents sent to a model: a PDF's text (read with pypdf) or a text file's, put in the
prompt where the document stood.

The surfaces take documents in their own forms: Anthropic's ``document`` blocks (in a
message or a ``tool_result``: Claude Code's ``Read`` of a PDF sends one), the Responses API's
``input_file`` and the chat API's ``file`` part, each with the file's bytes as base64 (or a
``data:`` URL). The translator calls :meth:`~.media.Collector.add_document`, which checks the
type and writes a marker where the document stands; :func:`~.media.attach` then reads every
document in a worker thread (a long PDF takes seconds: never on the event loop) and puts each
one's text in place of its marker. What a model reads of a document:

* ``Document: <title>`` (the block's ``title``, else the file's name) and its ``context``,
  when given, then the text;
* a PDF's text page by page, each page after a ``[Page N]`` line when there are several;
  a PDF with no text at all (scanned pages, which are images) says so in the prompt, so
  the model can tell its user, rather than failing the conversation it is part of.

A PDF that cannot be read (damaged, or encrypted with a password) and text that is not
UTF-8 are a 400 naming the field.
"""

from __future__ import annotations

import io
import logging

import attrs

from .errors import ApiError, invalid

log = logging.getLogger("hoshikage.api.documents")

#: Media types read as PDF.
PDF_TYPES = ("application/pdf",)
#: Media types read as UTF-8 text besides ``text/*``.
TEXT_TYPES = (
    "application/json",
    "application/xml",
    "application/x-yaml",
    "application/yaml",
    "application/javascript",
    "application/x-sh",
    "application/toml",
)


def kind_of(media_type: str | None, filename: str | None = None) -> str | None:
    """``"pdf"``, ``"text"`` or None (not a document read here), from the media type or,
    without one, the file name's extension."""
    media = (media_type or "").split(";", 1)[0].strip().lower()
    if media in PDF_TYPES:
        return "pdf"
    if media.startswith("text/") or media in TEXT_TYPES or media.endswith("+json"):
        return "text"
    if not media or media == "application/octet-stream":
        name = (filename or "").lower()
        if name.endswith(".pdf"):
            return "pdf"
        if name.endswith((".txt", ".md", ".csv", ".json", ".xml", ".yaml", ".yml", ".html")):
            return "text"
    return None


@attrs.define
class Document:
    """A document as the client sent it, and the marker that stands for it in the prompt."""

    data: bytes
    kind: str
    field: str
    marker: str
    title: str | None = None
    context: str | None = None


def read(document: Document) -> str:
    """The text a model reads for ``document`` (blocking: run it in a worker)."""
    if document.kind == "pdf":
        body = pdf_text(document.data, document.field)
    else:
        try:
            body = document.data.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid(
                f"Invalid '{document.field}': the document is not UTF-8 text.", document.field
            ) from None
    title = f"Document: {document.title}" if document.title else None
    return "\n\n".join(part for part in (title, document.context, body) if part)


def pdf_text(data: bytes, field: str) -> str:
    """A PDF's text, page by page (each after a ``[Page N]`` line when there are several)."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise invalid(
                f"Invalid '{field}': the PDF is encrypted with a password; send it unlocked.",
                field,
            )
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except ApiError:
        raise
    except Exception as exc:  # pypdf raises many kinds for a damaged file
        log.info("a PDF could not be read: %r", exc)
        raise invalid(f"Invalid '{field}': the PDF cannot be read ({exc}).", field) from None
    if not any(pages):
        return (
            f"[This PDF has {len(pages)} page{'s' if len(pages) != 1 else ''} and no text to"
            " read: its pages are images (a scan?), which are not read from PDFs here.]"
        )
    if len(pages) == 1:
        return pages[0]
    return "\n\n".join(f"[Page {n}]\n{text}" for n, text in enumerate(pages, 1))
