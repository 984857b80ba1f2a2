"""Strict request-body decoding.

Litestar converts ``data`` leniently (``"5"`` becomes ``5``). OpenAI clients deserve a 400
for a wrong type, so handlers declare ``dto=StrictBody``: the body is decoded by msgspec in
strict mode straight into the handler's Struct, and every failure becomes a 400 that names
the offending field (``messages[0].role``). The OpenAPI schema is still generated from the
Struct. The body size limit is enforced before this runs (``request_max_body_size``).
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import Any

import msgspec
from litestar.dto import AbstractDTO, DTOFieldDefinition
from litestar.typing import FieldDefinition

from .errors import invalid

_AT_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def _param(path: str | None) -> str | None:
    if not path:
        return None
    path = path.replace("[...]", "")  # msgspec's marker for "some key of a dict"
    return path[1:] if path.startswith(".") else path


def is_json(content_type: str) -> bool:
    """Whether a ``Content-Type`` declares JSON: ``application/json`` (any parameters) or an
    ``application/...+json`` type."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def decode(raw: bytes, type_: type, content_type: str = "application/json") -> Any:
    """Decode ``raw`` JSON into ``type_``, raising a 400 :class:`~.errors.ApiError`.
    ``content_type`` is the type the client declared: a body sent as another type (a client
    that sends no ``Origin`` may, see :mod:`hoshikage_api.guard`) is read as JSON all the
    same, and an error that it is not JSON says what it was sent as."""
    if not raw.strip():
        raise invalid("The request body is empty: send a JSON object.")
    try:
        return msgspec.json.decode(raw, type=type_, strict=True)
    except msgspec.ValidationError as exc:
        m = _AT_PATH.match(str(exc))
        param = _param(m.group("path"))
        where = f"Invalid '{param}'" if param else "Invalid request body"
        raise invalid(f"{where}: {m.group('msg')}.", param=param) from None
    except msgspec.DecodeError as exc:
        media = content_type.split(";", 1)[0].strip()
        sent = (
            ""
            if is_json(content_type)
            else f" (it was sent as '{media[:100] or 'no type'}'; send a JSON object)"
        )
        raise invalid(f"The request body is not valid JSON: {exc}{sent}.") from None
    except UnicodeDecodeError:
        raise invalid("The request body is not valid UTF-8.") from None
    except RecursionError:
        raise invalid("The request body is nested too deeply.") from None


class StrictBody(AbstractDTO):
    """A DTO that decodes the body strictly into the handler's ``data`` type (a Struct)."""

    @classmethod
    def create_for_field_definition(cls, field_definition, handler_id, backend_cls=None) -> None:
        """Nothing to prepare: decoding needs only the annotation."""

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator
    ):
        return schema_creator.for_field_definition(
            FieldDefinition.from_annotation(field_definition.annotation)
        )

    @classmethod
    def generate_field_definitions(
        cls, model_type: type[Any]
    ) -> Generator[DTOFieldDefinition, None, None]:
        yield from ()

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False

    def decode_bytes(self, value: bytes) -> Any:
        handler = self.asgi_connection.route_handler
        return decode(
            value,
            handler.parsed_fn_signature.parameters["data"].annotation,
            self.asgi_connection.headers.get("content-type", ""),
        )
