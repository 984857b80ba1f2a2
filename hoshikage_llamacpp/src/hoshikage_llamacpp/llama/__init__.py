"""What stands next to llama.cpp itself: the GIL-holding per-token binding (``native``), RPC
servers (``rpc``), llama.cpp's log (``logging_bridge``), a token's bytes (``pieces``), a
batch row's logits (``logits``) and the threads it computes on (``threads``). Imports
nothing else of the package."""
