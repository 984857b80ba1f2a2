"""Hoshikage HTTP API: the OpenAI-compatible endpoints, admin routes and `hoshikage serve`."""
