"""OpenAPI descriptions shared by the routes."""

from __future__ import annotations

from litestar.openapi.datastructures import ResponseSpec

from .wire import ErrorBody


def errors(*statuses: int) -> dict[int, ResponseSpec]:
    """The documented error responses of a route with the default (OpenAI) error body."""
    text = {
        400: (
            "Invalid request: bad JSON, a wrong type or value (`param` names it), or a prompt over the context "
            "(`context_length_exceeded`); for `/api/reload`, a config with errors "
            "(`config_error`, every one in `problems`)."
        ),
        401: "Missing or wrong API key (`authentication_error`).",
        403: "The hub refused access: a gated or private repo (`access_denied`); set `HF_TOKEN`.",
        404: "Unknown model (`model_not_found`).",
        413: "Request body over `max_body_size`.",
        500: "The model failed to load (`model_load_failed`) or an internal error.",
        502: "The hub or registry failed, or a download did not verify (`digest_mismatch`).",
        503: "The queue is full (`queue_full`) or the server is shutting down; see `Retry-After`.",
        507: "Not enough disk space for the download (`disk_full`).",
    }
    return {
        code: ResponseSpec(data_container=ErrorBody, description=text[code]) for code in statuses
    }


GENERATION_ERRORS = errors(400, 401, 404, 413, 500, 503)
