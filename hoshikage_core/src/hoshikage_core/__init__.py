"""Hoshikage core: config, model registry, scheduler, unload policy, events and the CLI shell.

The core imports neither a backend (llama_cpp) nor a web framework (litestar); those arrive
as plugins in the ``hoshikage`` entry-point group.
"""

__version__ = "0.1.0"

from . import moved

moved.install(__name__, moved.MOVED)
