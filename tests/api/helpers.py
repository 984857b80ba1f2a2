"""Assertions shared by the API tests."""

from __future__ import annotations


def assert_openai_error(
    response, status: int, *, type: str = "invalid_request_error", code=None, param=None
):
    """The response is ``status`` with OpenAI's error body (and the given fields)."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == type
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error
