"""Prometheus metrics, with ``prometheus_client`` and one registry per app.

Counters and histograms are fed by the core's events (:mod:`hoshikage_api.events`) and by
the error handlers; gauges (queue depth, in-flight requests, model states) are read from the
runtime when ``/metrics`` is scraped. The registry also carries the standard ``process_*``
and ``python_*`` metrics.

Every label value comes from a bounded set: models are registry names, error paths are route
templates (:func:`hoshikage_api.errors.route_of`; a URL that matches no route is
``<unmatched>``), statuses and codes are the server's own. Nothing a client writes in a URL
or body becomes a label, so no request, authenticated or not, can add series without limit.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TPS_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 200, 500)


class _RuntimeGauges:
    """A collector reading the runtime's status at scrape time."""

    def __init__(self) -> None:
        self.runtime = None

    def collect(self):
        if self.runtime is None:
            return
        status = self.runtime.status()
        models = status["models"]

        def gauge(name: str, help: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, help, value=value)

        def per_model(name: str, help: str, value) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, help, labels=["model"])
            for m in models:
                family.add_metric([m["name"]], value(m))
            return family

        yield gauge(
            "hoshikage_uptime_seconds",
            "Seconds since the server started.",
            status["uptime_seconds"],
        )
        yield gauge("hoshikage_in_flight_requests", "Requests holding a slot.", status["running"])
        yield gauge("hoshikage_queue_depth", "Requests waiting for a slot.", status["queued"])
        yield per_model(
            "hoshikage_model_queued_requests", "Requests waiting, by model.", lambda m: m["queued"]
        )
        yield per_model(
            "hoshikage_model_loaded",
            "1 if the model is loaded (idle or busy), else 0.",
            lambda m: 1 if m["state"] in ("loaded", "busy") else 0,
        )
        yield per_model(
            "hoshikage_model_memory_bytes",
            "Memory held by each loaded model.",
            lambda m: m["memory_bytes"] or 0,
        )


class Metrics:
    """Every metric the server exports, in :attr:`registry`."""

    def __init__(self) -> None:
        p = "hoshikage_"
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._gauges = _RuntimeGauges()
        r.register(self._gauges)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        # Label names in alphabetical order: the exposition keeps this order.
        self.requests = Counter(
            p + "requests",
            "Generation and embedding requests by endpoint, model and status.",
            ["endpoint", "model", "status"],
            registry=r,
        )
        self.errors = Counter(
            p + "http_errors",
            "Error responses by route template (path), HTTP status and error code.",
            ["code", "path", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            p + "prompt_tokens", "Prompt tokens processed, by model.", ["model"], registry=r
        )
        self.completion_tokens = Counter(
            p + "completion_tokens", "Completion tokens generated, by model.", ["model"], registry=r
        )
        self.draft_tokens = Counter(
            p + "draft_tokens",
            "Tokens drafted by speculative decoding, by model.",
            ["model"],
            registry=r,
        )
        self.draft_accepted = Counter(
            p + "draft_accepted_tokens",
            "Drafted tokens the model confirmed, by model.",
            ["model"],
            registry=r,
        )
        self.loads = Counter(p + "model_loads", "Model loads, by model.", ["model"], registry=r)
        self.unloads = Counter(
            p + "model_unloads",
            "Model unloads, by model and reason.",
            ["model", "reason"],
            registry=r,
        )
        self.load_failures = Counter(
            p + "model_load_failures", "Failed model loads, by model.", ["model"], registry=r
        )
        self.load_seconds = Histogram(
            p + "model_load_seconds",
            "Time to load a model.",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            p + "time_to_first_token_seconds",
            "Arrival to first output token.",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tps = Histogram(
            p + "tokens_per_second",
            "Decode speed of a generation.",
            ["model"],
            buckets=TPS_BUCKETS,
            registry=r,
        )

    # ---- fed by events -----------------------------------------------------------------

    def request_finished(self, record) -> None:
        model = record.model
        self.requests.labels(endpoint=record.endpoint, model=model, status=record.status).inc()
        if record.prompt_tokens:
            self.prompt_tokens.labels(model=model).inc(record.prompt_tokens)
        if record.completion_tokens:
            self.completion_tokens.labels(model=model).inc(record.completion_tokens)
        if record.draft_tokens:
            self.draft_tokens.labels(model=model).inc(record.draft_tokens)
            self.draft_accepted.labels(model=model).inc(record.draft_accepted)
        if record.ttft is not None:
            self.ttft.labels(model=model).observe(record.ttft)
        if record.tokens_per_second is not None:
            self.tps.labels(model=model).observe(record.tokens_per_second)

    def model_loaded(self, name: str, seconds: float) -> None:
        self.loads.labels(model=name).inc()
        self.load_seconds.labels(model=name).observe(seconds)

    def model_unloaded(self, name: str, reason: str) -> None:
        self.unloads.labels(model=name, reason=reason).inc()

    def model_load_failed(self, name: str) -> None:
        self.load_failures.labels(model=name).inc()

    def error_response(self, route: str, status: int, code: str) -> None:
        """One error response; ``route`` is a route template, never a raw path."""
        self.errors.labels(code=code, path=route, status=str(status)).inc()

    # ---- scrape ------------------------------------------------------------------------

    def render(self, runtime) -> str:
        """The text exposition format (0.0.4)."""
        self._gauges.runtime = runtime
        return generate_latest(self.registry).decode("utf-8")
