"""What a model's text means: its chat template (``templating``, ``chat``,
``chat_formats``), reasoning (``reasoning``), streamed text held back at markers
(``text_stream``), fill-in-the-middle (``fim``) and tool calls (``tools``). Imports only
``grammar`` of the package."""
