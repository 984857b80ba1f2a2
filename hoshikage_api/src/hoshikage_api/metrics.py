"""Prometheus metrics, rendered by hand in the text exposition format (no dependency).

Counters and histograms are fed by the core's events (:mod:`hoshikage_api.events`) and by
the error handler; gauges (queue depth, in-flight requests, model states) are read from the
runtime when ``/metrics`` is scraped. Everything runs on the event loop, so no locks.
"""

from __future__ import annotations

import math

LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TPS_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 200, 500)

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _key(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


class Counter:
    def __init__(self, name: str, help: str):
        self.name, self.help = name, help
        self.values: dict[Labels, float] = {}

    def inc(self, amount: float = 1, **labels: str) -> None:
        key = _key(labels)
        self.values[key] = self.values.get(key, 0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        lines += [f"{self.name}{_labels(k)} {_number(v)}" for k, v in sorted(self.values.items())]
        return lines


class Histogram:
    def __init__(self, name: str, help: str, buckets: tuple[float, ...]):
        self.name, self.help = name, help
        self.bounds = (*buckets, math.inf)
        #: labels -> (cumulative count per bound, sum)
        self.series: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        counts, total = self.series.setdefault(_key(labels), ([0] * len(self.bounds), [0.0]))
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                counts[i] += 1
        total[0] += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, (counts, total) in sorted(self.series.items()):
            for bound, n in zip(self.bounds, counts, strict=True):
                lines.append(f"{self.name}_bucket{_labels((*key, ('le', _number(bound))))} {n}")
            lines.append(f"{self.name}_sum{_labels(key)} {_number(total[0])}")
            lines.append(f"{self.name}_count{_labels(key)} {counts[-1]}")
        return lines


def _gauge(name: str, help: str, samples: list[tuple[Labels, float]]) -> list[str]:
    lines = [f"# HELP {name} {help}", f"# TYPE {name} gauge"]
    lines += [f"{name}{_labels(k)} {_number(v)}" for k, v in samples]
    return lines


class Metrics:
    """Every metric the server exports."""

    def __init__(self) -> None:
        p = "hoshikage_"
        self.requests = Counter(p + "requests_total", "Generation and embedding requests by endpoint, model and status.")
        self.errors = Counter(p + "http_errors_total", "Error responses by path, HTTP status and error code.")
        self.prompt_tokens = Counter(p + "prompt_tokens_total", "Prompt tokens processed, by model.")
        self.completion_tokens = Counter(p + "completion_tokens_total", "Completion tokens generated, by model.")
        self.loads = Counter(p + "model_loads_total", "Model loads, by model.")
        self.unloads = Counter(p + "model_unloads_total", "Model unloads, by model and reason.")
        self.load_failures = Counter(p + "model_load_failures_total", "Failed model loads, by model.")
        self.load_seconds = Histogram(p + "model_load_seconds", "Time to load a model.", LOAD_BUCKETS)
        self.ttft = Histogram(p + "time_to_first_token_seconds", "Arrival to first output token.", TTFT_BUCKETS)
        self.tps = Histogram(p + "tokens_per_second", "Decode speed of a generation.", TPS_BUCKETS)

    # ---- fed by events -----------------------------------------------------------------

    def request_finished(self, record) -> None:
        model = record.model
        self.requests.inc(endpoint=record.endpoint, model=model, status=record.status)
        if record.prompt_tokens:
            self.prompt_tokens.inc(record.prompt_tokens, model=model)
        if record.completion_tokens:
            self.completion_tokens.inc(record.completion_tokens, model=model)
        if record.ttft is not None:
            self.ttft.observe(record.ttft, model=model)
        if record.tokens_per_second is not None:
            self.tps.observe(record.tokens_per_second, model=model)

    def model_loaded(self, name: str, seconds: float) -> None:
        self.loads.inc(model=name)
        self.load_seconds.observe(seconds, model=name)

    def model_unloaded(self, name: str, reason: str) -> None:
        self.unloads.inc(model=name, reason=reason)

    def model_load_failed(self, name: str) -> None:
        self.load_failures.inc(model=name)

    def error_response(self, path: str, status: int, code: str) -> None:
        self.errors.inc(path=path, status=str(status), code=code)

    # ---- scrape ------------------------------------------------------------------------

    def render(self, runtime) -> str:
        status = runtime.status()
        models = status["models"]
        lines = [
            *_gauge("hoshikage_uptime_seconds", "Seconds since the server started.", [((), status["uptime_seconds"])]),
            *_gauge("hoshikage_in_flight_requests", "Requests holding a slot.", [((), status["running"])]),
            *_gauge("hoshikage_queue_depth", "Requests waiting for a slot.", [((), status["queued"])]),
            *_gauge(
                "hoshikage_model_queued_requests", "Requests waiting, by model.",
                [((("model", m["name"]),), m["queued"]) for m in models],
            ),
            *_gauge(
                "hoshikage_model_loaded", "1 if the model is loaded (idle or busy), else 0.",
                [((("model", m["name"]),), 1 if m["state"] in ("loaded", "busy") else 0) for m in models],
            ),
            *_gauge(
                "hoshikage_model_memory_bytes", "Memory held by each loaded model.",
                [((("model", m["name"]),), m["memory_bytes"] or 0) for m in models],
            ),
        ]  # fmt: skip
        for metric in (
            self.requests, self.errors, self.prompt_tokens, self.completion_tokens, self.loads,
            self.unloads, self.load_failures, self.load_seconds, self.ttft, self.tps,
        ):  # fmt: skip
            lines += metric.render()
        return "\n".join(lines) + "\n"
