"""Domain errors. The API maps each to an HTTP status in one place (``hoshikage_api.kernel.errors``)."""

from __future__ import annotations


class HoshikageError(Exception):
    """Base class of every error Hoshikage raises on purpose."""

    code: str = "internal_error"
    #: The request field the error is about (``messages``, ``prompt``, ``input``...), or
    #: None. Whoever raises the error knows it; the API reports it as the error's ``param``.
    param: str | None = None

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(HoshikageError):
    """The config file is missing, unreadable, or has a bad key or value."""

    code = "config_error"

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        #: Every problem found, one ``key.path: message`` line each (a reload reports them all).
        self.problems: list[str] = list(problems) if problems is not None else [message]


class ModelNotFound(HoshikageError):
    """A name that is neither a registered model nor an alias."""

    code = "model_not_found"

    def __init__(self, name: str, known: list[str]):
        self.name = name
        self.known = sorted(known)
        listed = ", ".join(self.known) if self.known else "none are registered"
        super().__init__(f"The model '{name}' does not exist. Known models: {listed}.")


class BackendNotFound(HoshikageError):
    """No installed plugin can create a backend for a model's ``backend`` name."""

    code = "backend_not_found"


class ModelLoadError(HoshikageError):
    """A model could not be loaded: missing file, not GGUF, truncated, out of memory..."""

    code = "model_load_failed"

    def __init__(self, model: str, reason: str, crashed: bool = False):
        self.model = model
        self.reason = reason
        #: The load crashed (its process died by a signal), as opposed to a refusal such
        #: as a missing file: repeated crashes back off (see the pool).
        self.crashed = crashed
        super().__init__(f"Model '{model}' failed to load: {reason}")


class QueueFull(HoshikageError):
    """The wait queue is at ``max_queue``: the request is refused at once."""

    code = "queue_full"

    def __init__(self, max_queue: int, retry_after: int = 1):
        self.max_queue = max_queue
        self.retry_after = retry_after
        super().__init__(
            f"The server is busy: {max_queue} requests are already waiting. Retry later."
        )


class ContextLengthExceeded(HoshikageError):
    """The prompt does not fit in the model's context."""

    code = "context_length_exceeded"

    def __init__(self, prompt_tokens: int, n_ctx: int, param: str | None = None):
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx
        self.param = param
        super().__init__(
            f"This model's maximum context length is {n_ctx} tokens, but the request has "
            f"{prompt_tokens} prompt tokens. Shorten the prompt or lower max_tokens."
        )


class InvalidRequest(HoshikageError):
    """A request the backend cannot serve as asked (bad schema, unsupported option...)."""

    code = "invalid_request"

    def __init__(self, message: str, param: str | None = None):
        self.param = param
        super().__init__(message)


class Cancelled(HoshikageError):
    """The client went away or the server is shutting down."""

    code = "cancelled"


class ModelFailed(HoshikageError):
    """A loaded model stopped working on its own (its backend process died, a remote host
    went away). The requests it was serving end with this error and the pool unloads it, so
    the next request loads it again."""

    code = "model_failed"

    def __init__(self, model: str, reason: str):
        self.model = model
        self.reason = reason
        super().__init__(f"Model '{model}' failed: {reason}")
