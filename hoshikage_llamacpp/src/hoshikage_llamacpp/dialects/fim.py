"""Fill-in-the-middle prompts, from the FIM tokens a model's metadata names
(``tokenizer.ggml.fim_pre_token_id`` and its siblings), laid out exactly as llama-server's
``format_prompt_infill`` lays them out (the repo-level pattern of Qwen2.5-Coder)::

    [FIM_REP]myproject\\n                      (when the model has FIM_REP)
    [FIM_SEP]{filename}\\n{text}               (each extra file; without FIM_SEP,
                                               "\\n\\n--- snippet ---\\n\\n"{text})
    [FIM_SEP]filename\\n                       (when the model has FIM_SEP)
    [BOS][FIM_PRE]{prefix}[FIM_SUF]{suffix}[FIM_MID]

llama-server also cuts the prefix and suffix to fit one batch; here they are read whole
(chunked like any prompt), and a prompt over the context is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hoshikage_core.errors import InvalidRequest

SNIPPET = "\n\n--- snippet ---\n\n"


def fim_ids(vocab) -> dict[str, int]:
    """The model's FIM tokens by name (pre, suf, mid, rep, sep), those it has."""
    import llama_cpp

    ids = {
        "pre": llama_cpp.llama_vocab_fim_pre(vocab),
        "suf": llama_cpp.llama_vocab_fim_suf(vocab),
        "mid": llama_cpp.llama_vocab_fim_mid(vocab),
        "rep": llama_cpp.llama_vocab_fim_rep(vocab),
        "sep": llama_cpp.llama_vocab_fim_sep(vocab),
    }
    return {k: v for k, v in ids.items() if v >= 0}


def fim_tokens(
    model, prefix: str, suffix: str, files: Sequence[Mapping[str, str]] = ()
) -> list[int]:
    """The prompt's tokens; InvalidRequest (``suffix``) when the model has no FIM tokens."""
    ids = fim_ids(model.vocab)
    missing = [name.upper() for name in ("pre", "suf", "mid") if name not in ids]
    if missing:
        raise InvalidRequest(
            f"The model '{model.name}' does not support insert (fill-in-the-middle): its metadata names no "
            f"FIM token{'s' if len(missing) > 1 else ''} {', '.join('FIM_' + m for m in missing)}.",
            "suffix",
        )
    text = model.tokenize
    tokens: list[int] = []
    if "rep" in ids:
        tokens += [ids["rep"], *text("myproject\n")]
    for file in files:
        if "sep" in ids:
            tokens += [ids["sep"], *text(str(file.get("filename") or "tmp") + "\n")]
        else:
            tokens += text(SNIPPET)
        tokens += text(str(file.get("text") or ""))
    if "sep" in ids:
        tokens += [ids["sep"], *text("filename\n")]
    tokens += model.bos_tokens()
    tokens += [ids["pre"], *text(prefix), ids["suf"], *text(suffix), ids["mid"]]
    return tokens
