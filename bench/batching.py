"""The batched-engine benchmark: Hoshikage beside llama.cpp's llama-server, same model,
threads, slots and context per slot, measured in one run.

- aggregate decode tok/s at 1, 2, 4 and 8 concurrent streams (both with 4 slots);
- the wall time of a sampled completion (temperature 0.8, 64 tokens per choice, end of
  generation banned) with ``n = 1`` and ``n = 4``, and ``n = 4`` over ``n = 1``;
- later-turn TTFT of 2 and 4 conversations taking turns, each with its own ~1,300-token
  system prompt;
- ``json_schema`` decode tok/s over plain decode tok/s (Hoshikage, and llama-server for
  reference);
- one stream on servers of one slot each (:func:`side_by_side`: ``parallel = 1``,
  llama-server ``-np 1``); four streams on servers of four slots, the defaults (flash
  attention on for Gemma 3's wide heads) beside one with ``flash_attn = false``.

Hoshikage runs with its defaults (speculation on). Its own speculation-off figures come from
the same server with ``"speculative": false`` in each request (``hoshikage_spec_off``), reps
interleaved with the rest, so speculation on ÷ off is measured in one run. Every median keeps
its per-rep range (``*_range``).

Everything goes through ``/v1/completions`` and ``/v1/chat/completions`` with plain httpx,
so both servers pay the same client cost.
"""

from __future__ import annotations

import json
import statistics
import threading
import time

SLOTS = 4
#: Gemma 3's end-of-generation ids (``<eos>``, ``<end_of_turn>``), banned where every
#: choice must run its full length.
GEMMA_EOG = {"1": -100, "106": -100}

#: The story as JSON. Its ``minLength`` keeps the answer as long as the plain one (the
#: ``max_tokens`` of the row, 96 by default): without it Gemma 3 closed the object after
#: 19 tokens in one rep of three, and that rep's decode rate measured the first steps of an
#: answer, before speculation has anything to draft from, not the grammar's cost.
SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "story": {"type": "string", "minLength": 400}},
    "required": ["title", "story"],
}


def _stream(http, path: str, body: dict) -> tuple[float | None, list[float], str]:
    """(TTFT, arrival times of the content events, text) of one streamed request."""
    t0 = time.perf_counter()
    arrivals: list[float] = []
    texts: list[str] = []
    # A connection per stream: llama-server may close a kept-alive one after a stream.
    with http.stream(
        "POST", path, json={**body, "stream": True}, headers={"Connection": "close"}
    ) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            data = json.loads(line[6:])
            choice = (data.get("choices") or [{}])[0]
            text = choice.get("text") or (choice.get("delta") or {}).get("content")
            if text:
                arrivals.append(time.perf_counter())
                texts.append(text)
    ttft = arrivals[0] - t0 if arrivals else None
    return ttft, arrivals, "".join(texts)


def _decode_tps(arrivals: list[float]) -> float | None:
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 2 else None


def aggregate(
    http_factory, streams: int, max_tokens: int, tag: str, extra: dict | None = None
) -> float:
    """Aggregate decode tok/s of ``streams`` concurrent streamed completions (``extra``: more
    request fields, e.g. ``{"speculative": false}``)."""
    counts = [0] * streams
    starts, ends = [0.0] * streams, [0.0] * streams

    def one(i: int) -> None:
        with http_factory() as http:
            _ttft, arrivals, _text = _stream(
                http,
                "/v1/completions",
                {
                    "model": "a",
                    "prompt": f"[{tag}-{i}] Write a long story about a lighthouse keeper number {i}.",
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "logit_bias": GEMMA_EOG,
                    **(extra or {}),
                },
            )
        counts[i] = len(arrivals)
        starts[i], ends[i] = arrivals[0], arrivals[-1]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # From the first token anywhere to the last token anywhere: decode only.
    return (sum(counts) - streams) / (max(ends) - min(starts))


def n_cost(http, n: int, max_tokens: int, seed: int) -> float:
    """Wall seconds of one non-streamed completion with ``n`` choices."""
    t0 = time.perf_counter()
    r = http.post(
        "/v1/completions",
        headers={"Connection": "close"},
        json={
            "model": "a",
            "prompt": f"[n{n}-{seed}] The three wishes of the fisherman were",
            "n": n,
            "max_tokens": max_tokens,
            "temperature": 0.8,
            "seed": seed,
            "logit_bias": GEMMA_EOG,
        },
    )
    r.raise_for_status()
    wall = time.perf_counter() - t0
    body = r.json()
    assert len(body["choices"]) == n, body
    return wall


def system_prompt(i: int) -> str:
    rules = " ".join(
        f"Rule {k}: in conversation {i}, answer topic {k} politely and briefly." for k in range(70)
    )
    return f"You are assistant number {i}. {rules}\n"


def interleaved_ttft(http, conversations: int, turns: int, tag: str) -> list[float]:
    """TTFT of every turn after the first of ``conversations`` taking turns."""
    history = [system_prompt(c) + f"[{tag}]\n" for c in range(conversations)]
    later: list[float] = []
    for turn in range(turns):
        for c in range(conversations):
            history[c] += f"User: question {turn} about item {c}?\nAssistant:"
            ttft, _, text = _stream(
                http,
                "/v1/completions",
                {
                    "model": "a",
                    "prompt": history[c],
                    "max_tokens": 8,
                    "temperature": 0,
                    "logit_bias": GEMMA_EOG,
                },
            )
            history[c] += text + "\n"
            if turn > 0 and ttft is not None:
                later.append(ttft)
    return later


def schema_ratio(http, max_tokens: int, reps: int, extra: dict | None = None) -> dict:
    """Decode tok/s with a ``json_schema`` response format, and without."""
    messages = [
        {"role": "user", "content": "Write a long story about a lighthouse keeper, as JSON."}
    ]
    plain, constrained = [], []
    for rep in range(reps):
        base = {
            "model": "a",
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "seed": rep,
            **(extra or {}),
        }
        _, arrivals, _ = _stream(
            http,
            "/v1/chat/completions",
            {
                **base,
                "messages": [
                    {
                        "role": "user",
                        "content": f"[{rep}] Write a long story about a lighthouse keeper.",
                    }
                ],
            },
        )
        plain.append(_decode_tps(arrivals))
        _, arrivals, _ = _stream(
            http,
            "/v1/chat/completions",
            {
                **base,
                "messages": [
                    {
                        "role": "user",
                        "content": f"[{rep}] Write a long story about a lighthouse keeper, as JSON.",
                    }
                ],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "story", "schema": SCHEMA},
                },
            },
        )
        constrained.append(_decode_tps(arrivals))
    plain = [p for p in plain if p]
    constrained = [c for c in constrained if c]
    p, c = statistics.median(plain), statistics.median(constrained)
    return {
        "plain_tps": p,
        "schema_tps": c,
        "ratio": c / p,
        "plain_range": [min(plain), max(plain)],
        "schema_range": [min(constrained), max(constrained)],
    }


#: Hoshikage's server measured again with speculation off, request by request.
SPEC_OFF = "hoshikage_spec_off"


def _clients(servers: dict) -> tuple[dict, dict]:
    """httpx client factories and extra request fields by name, each server warmed up; a
    "hoshikage" server also as its speculation-off view (:data:`SPEC_OFF`), the same server
    with ``"speculative": false`` in each request."""
    import httpx

    urls, extras = dict(servers), {name: {} for name in servers}
    if "hoshikage" in servers:
        urls[SPEC_OFF] = servers["hoshikage"]
        extras[SPEC_OFF] = {"speculative": False}
    factories = {
        name: (lambda url=url: httpx.Client(base_url=url, timeout=600))
        for name, url in urls.items()
    }
    for name in servers:  # warm-up
        with factories[name]() as http:
            http.post(
                "/v1/completions", json={"model": "a", "prompt": "Hi", "max_tokens": 4}
            ).raise_for_status()
    return factories, extras


def _interleaved(
    factories: dict, extras: dict, streams: int, reps: int, tokens: int, tag: str
) -> dict[str, list[float]]:
    """Aggregate tok/s of ``streams`` streams per rep on every server, reps interleaved, as
    in the throughput benchmark: each server starts first in turn (3 reps at least), each
    with prompts of its own. Speculation off runs on the same server as on: with on's
    prompts it found them in its cache, so its streams started decoding together while on's
    still read theirs, and it read 4 % faster at 4 streams for that alone (nothing was
    drafted)."""
    names = list(factories)
    samples: dict = {name: [] for name in names}
    for rep in range(reps):
        for i in [(rep + j) % len(names) for j in range(len(names))]:
            name = names[i]
            samples[name].append(
                aggregate(
                    factories[name],
                    streams,
                    tokens,
                    f"{tag}s{streams}r{rep}n{i}",
                    extras[name],
                )
            )
    return samples


def run(servers: dict, args) -> dict:
    """``servers``: name -> base URL, each serving the model as "a" with ``SLOTS`` slots.
    With a "hoshikage" server, its speculation-off view (:data:`SPEC_OFF`) is measured too."""
    factories, extras = _clients(servers)
    out: dict = {name: {} for name in factories}
    reps = max(3, args.reps // 2)
    for streams in (1, 2, 4, 8):
        samples = _interleaved(factories, extras, streams, reps, args.batch_tokens, "")
        for name in factories:
            out[name][f"aggregate_tps_{streams}"] = statistics.median(samples[name])
            out[name][f"aggregate_tps_{streams}_range"] = [min(samples[name]), max(samples[name])]
    # Sampled (temperature 0.8), one choice and four, reps interleaved between the servers.
    walls: dict = {(name, n): [] for name in servers for n in (1, 4)}
    order = list(servers)
    for rep in range(reps):
        for name in order[rep % len(order) :] + order[: rep % len(order)]:
            with factories[name]() as http:
                for n in (1, 4):
                    walls[name, n].append(n_cost(http, n, 64, 100 * n + rep))
    for name in servers:
        for n in (1, 4):
            out[name][f"n{n}_s"] = statistics.median(walls[name, n])
            out[name][f"n{n}_s_range"] = [min(walls[name, n]), max(walls[name, n])]
        out[name]["n4_over_n1"] = out[name]["n4_s"] / out[name]["n1_s"]
    for conversations in (2, 4):
        for name in servers:
            with factories[name]() as http:
                later = interleaved_ttft(http, conversations, 3, f"{name}-{conversations}")
            out[name][f"interleaved_{conversations}_ttft_ms"] = statistics.median(later) * 1000
    for name, factory in factories.items():
        with factory() as http:
            out[name]["schema"] = schema_ratio(http, args.batch_tokens, reps, extras[name])
    return out


def side_by_side(servers: dict, args, streams: int, tag: str) -> dict:
    """Aggregate decode tok/s of ``streams`` streams on each server (name -> base URL), reps
    interleaved, median and range; a "hoshikage" server also with ``"speculative": false``
    (:data:`SPEC_OFF`). For one stream on servers of one slot each (N15), and for four
    streams on servers of four slots, the defaults (flash attention on for Gemma 3's wide
    heads: the engine gives a lone token a second row, so logits still do not depend on the
    other sequences) beside one with ``flash_attn = false`` (N16; docs/performance.md,
    "Flash attention with several slots")."""
    factories, extras = _clients(servers)
    reps = max(3, args.reps // 2)
    samples = _interleaved(factories, extras, streams, reps, args.batch_tokens, tag)
    return {
        name: {"tps": statistics.median(v), "tps_range": [min(v), max(v)]}
        for name, v in samples.items()
    }
