"""Built-in prompt formats, selectable with a model's ``chat_format`` option.

Each is a Jinja template in the Hugging Face style (``messages``, ``bos_token``,
``eos_token``, ``add_generation_prompt``) plus the stop strings that end an answer when the
format's end marker is plain text rather than a special token. ``plain`` is the fallback for
models with neither a GGUF template nor a configured format. Pure data: no imports.
"""

from __future__ import annotations

#: ``plain``: a transcript any base model continues sensibly. Each message is
#: ``Role: content`` followed by a blank line; the prompt ends with ``Assistant:``, and the
#: answer ends where the model starts the next ``User:`` or ``System:`` turn.
PLAIN = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}System: "
    "{% elif m['role'] == 'user' %}User: "
    "{% elif m['role'] == 'assistant' %}Assistant: "
    "{% else %}{{ m['role'] | capitalize }}: {% endif %}"
    "{{ m['content'] }}\n\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

LLAMA_2 = (
    "{% set ns = namespace(system='') %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.system = '<<SYS>>\n' + m['content'] + '\n<</SYS>>\n\n' %}"
    "{% elif m['role'] == 'assistant' %} {{ m['content'] }} {{ eos_token }}"
    "{% else %}{{ bos_token }}[INST] {{ ns.system }}{{ m['content'] }} [/INST]"
    "{% set ns.system = '' %}{% endif %}"
    "{% endfor %}"
)

LLAMA_3 = (
    "{{ bos_token }}{% for m in messages %}"
    "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

GEMMA = (
    "{{ bos_token }}{% set ns = namespace(system='') %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.system = ns.system + m['content'] + '\n\n' %}"
    "{% else %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{% if m['role'] != 'assistant' %}{{ ns.system }}{% set ns.system = '' %}{% endif %}"
    "{{ m['content'] | trim }}<end_of_turn>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

MISTRAL_INSTRUCT = (
    "{{ bos_token }}{% set ns = namespace(system='') %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.system = ns.system + m['content'] + '\n\n' %}"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}"
    "{% else %}[INST] {{ ns.system }}{{ m['content'] }} [/INST]{% set ns.system = '' %}{% endif %}"
    "{% endfor %}"
)

PHI_3 = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

#: name -> (Jinja template, stop strings)
CHAT_FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "plain": (PLAIN, ("\nUser:", "\nSystem:")),
    "chatml": (CHATML, ("<|im_end|>",)),
    "llama-2": (LLAMA_2, ()),
    "llama-3": (LLAMA_3, ("<|eot_id|>",)),
    "gemma": (GEMMA, ("<end_of_turn>",)),
    "mistral-instruct": (MISTRAL_INSTRUCT, ()),
    "phi-3": (PHI_3, ("<|end|>",)),
}
