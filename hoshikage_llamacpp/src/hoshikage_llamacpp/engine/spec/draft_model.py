"""A draft model: a second, smaller model with the target's vocabulary that guesses every
slot's next tokens, greedily, in batched decodes of its own (llama.cpp's ``--model-draft``).
"""

from __future__ import annotations

from ..prefix import common_prefix
from ..slots import trim_kv

#: As llama.cpp's ``common_speculative_are_compatible``: vocabularies may differ in size by
#: this much, and token texts are compared from this id on (the first few are special).
VOCAB_SIZE_SLACK = 128
VOCAB_CHECK_FROM = 5


def vocab_mismatch(target, draft) -> str | None:
    """Why ``draft``'s vocabulary (a ``llama_vocab`` pointer) cannot draft for ``target``'s,
    checked as llama.cpp checks it: type, BOS/EOS handling and ids, size, then the text of
    every token both have. None when they match."""
    import llama_cpp as lib

    for what, get in (
        ("vocabulary type", lib.llama_vocab_type),
        ("add-BOS setting", lib.llama_vocab_get_add_bos),
        ("add-EOS setting", lib.llama_vocab_get_add_eos),
        ("BOS token", lib.llama_vocab_bos),
        ("EOS token", lib.llama_vocab_eos),
    ):
        a, b = get(target), get(draft)
        if a != b:
            return f"its {what} differs from the model's ({b} against {a})"
    n_target, n_draft = lib.llama_vocab_n_tokens(target), lib.llama_vocab_n_tokens(draft)
    if abs(n_target - n_draft) > VOCAB_SIZE_SLACK:
        return f"its vocabulary has {n_draft} tokens, the model's {n_target}"
    for token in range(VOCAB_CHECK_FROM, min(n_target, n_draft)):
        a, b = lib.llama_vocab_get_text(target, token), lib.llama_vocab_get_text(draft, token)
        if a != b:
            a, b = (t.decode("utf-8", "replace") for t in (a, b))
            return f"token {token} is {b!r} in it and {a!r} in the model"
    return None


class DraftModel:
    """A second, smaller model that drafts for every slot of the target's engine: its own
    context with the same slots (KV sequence ``i`` follows target slot ``i``), greedy.

    Each call first brings each slot's draft cache up to the tokens the target holds (the
    prompt once, then what the last step kept, the rest dropped), then drafts ``k`` tokens per
    sequence, one batched decode per drafted token. Engine thread only.
    """

    def __init__(self, loaded, n_vocab_target: int, n_batch: int):
        import llama_cpp

        from ..batch import Batch

        self._lib = llama_cpp
        self.loaded = loaded
        ctx = loaded.context.ctx
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(loaded.model.vocab)
        #: Drafted ids must be tokens of the target too.
        self._limit = min(self._n_vocab, n_vocab_target)
        n_slots = int(llama_cpp.llama_n_seq_max(ctx))
        self._batch = Batch(llama_cpp, max(n_batch, n_slots))
        self.tokens: list[list[int]] = [[] for _ in range(n_slots)]

    def proposer(self) -> ModelProposer:
        """A sequence's proposer on this model."""
        return ModelProposer(self)

    def propose_all(self, wanted: list[tuple[ModelProposer, int]]) -> list[list[int]]:
        """For each ``(proposer, k)``: up to ``k`` tokens to follow its sequence, all
        sequences in the same batched decodes."""
        return self.draft([(p.slot, p.tokens, k) for p, k in wanted])

    def draft(self, wanted: list[tuple[int, list[int], int]]) -> list[list[int]]:
        """For each ``(slot, tokens, k)``: up to ``k`` tokens to follow ``tokens``."""
        out: list[list[int]] = [[] for _ in wanted]
        todo = []
        for slot, tokens, _k in wanted:
            held = self.tokens[slot]
            common = min(common_prefix(held, tokens), len(tokens) - 1)
            if common < len(held):
                common = trim_kv(self._lib, self._mem, slot, common)
                del held[common:]
            todo.append(tokens[common:])
        batch = self._batch
        # Catch up, in chunks of the batch: the prompt the first time, a token or two after.
        while any(todo):
            batch.clear()
            rows = {}
            for i, (slot, _tokens, _k) in enumerate(wanted):
                if todo[i] and batch.room:
                    take = todo[i][: batch.room]
                    todo[i] = todo[i][len(take) :]
                    held = self.tokens[slot]
                    row = batch.add_prompt(take, len(held), slot, logits_last=not todo[i])
                    held.extend(take)
                    if not todo[i]:
                        rows[i] = row
            if not self._decode():
                return out
            for i, row in rows.items():
                out[i].append(self._best(row))
        # Then one token per decode for every sequence that wants more.
        while True:
            batch.clear()
            rows = {}
            for i, (slot, _tokens, k) in enumerate(wanted):
                if out[i] and len(out[i]) < k and out[i][-1] < self._limit:
                    held = self.tokens[slot]
                    rows[i] = batch.add(out[i][-1], len(held), slot)
                    held.append(out[i][-1])
            if not rows or not self._decode():
                break
            for i, row in rows.items():
                out[i].append(self._best(row))
        for i, (_slot, _tokens, k) in enumerate(wanted):
            draft = out[i][:k]
            for j, token in enumerate(draft):
                if token >= self._limit:
                    del draft[j:]
                    break
            out[i] = draft
        return out

    def _decode(self) -> bool:
        batch = self._batch
        batch.struct.n_tokens = batch.n
        if self._lib.llama_decode(self._ctx, batch.struct) != 0:
            # What it wrote is unknown: start every slot's draft cache again.
            self._lib.llama_memory_clear(self._mem, True)
            for held in self.tokens:
                held.clear()
            return False
        return True

    def _best(self, row: int) -> int:
        from ...llama.logits import row_logits

        return int(row_logits(self._ctx, row, self._n_vocab).argmax())

    def close(self) -> None:
        loaded, self.loaded = self.loaded, None
        if loaded is not None:
            loaded.close()


class ModelProposer:
    """A :class:`~.proposer.Proposer` on a :class:`DraftModel`: one sequence's history, and
    the slot (KV sequence) it drafts in, which :class:`.speculation.Speculation` sets
    before each call (a choice gets its slot after it begins). Its guesses come in batches,
    through :meth:`DraftModel.propose_all`."""

    __slots__ = ("model", "tokens", "slot", "matched")

    def __init__(self, model: DraftModel):
        self.model = model
        self.tokens: list[int] = []
        self.slot = 0
        #: A model's guess continues no copy it could show.
        self.matched = 0

    def begin(self, prompt: list[int]) -> None:
        self.tokens = list(prompt)

    def accept(self, tokens: list[int]) -> None:
        self.tokens.extend(tokens)

    def propose(self, k: int) -> list[int]:
        return self.model.propose_all([(self, k)])[0]
