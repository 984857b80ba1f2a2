"""GBNF: its checks (``gbnf_check``). Imports nothing else of the package."""
