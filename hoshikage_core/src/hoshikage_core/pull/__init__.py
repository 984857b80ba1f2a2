"""Pull, plan and adopt: get models from Hugging Face and Ollama's registry, know before
downloading whether they fit, and serve the models a user already has.

- :mod:`.refs`: the references people type (``hf.co/org/repo:Q4_K_M``, ``qwen3:8b``…);
- :mod:`.hub` (``huggingface_hub``) and :mod:`.registry` (``httpx``): what they mean, and
  the bytes;
- :mod:`.landing`: one file onto the disk, resumed, verified, renamed, or not at all;
- :mod:`.fetch`: one pull start to end; :mod:`.jobs`: pulls in a running server;
- :mod:`.store`: where pulled models are kept and how they join the registry;
- :mod:`.plan`: the memory a model needs, from its GGUF header read remotely by ``Range``;
- :mod:`.adopt`: Ollama's store, the Hugging Face cache and LM Studio's folder, in place;
- :mod:`.commands`: ``hoshikage pull``, ``rm`` and ``ls``.

Nothing here imports a web framework or llama.cpp; ``huggingface_hub`` and ``httpx`` are
imported inside the functions that use them.
"""
