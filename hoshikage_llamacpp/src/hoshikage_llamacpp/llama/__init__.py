"""What stands next to llama.cpp itself: the GIL-holding per-token binding (``native``), RPC
servers (``rpc``), llama.cpp's log (``logging_bridge``), a token's bytes (``pieces``) and a
batch row's logits (``logits``). Imports nothing else of the package."""
