"""Between a request and the engine: the plan (``planning``) and each choice's output
(``output``: text, reasoning, tool calls, chunks), which the engine calls through its
protocols."""
