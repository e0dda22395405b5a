"""Prometheus text-format metrics (exposition format 0.0.4), without a client library.

Exposed at ``GET /metrics``: request counts by route and status, prompt and completion token
counts, request latency and time-to-first-token histograms, queue depth and busy state, the
requests cancelled because their client went away, and guardrail events by guardrail, stage
(input / output) and action (block / flag / redact).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Histogram:
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        self.n += 1
        self.total += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{b}"}} {c}' for b, c in zip(self.buckets, self.counts, strict=True)]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}')
        suffix = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{suffix} {self.total:.6f}", f"{name}_count{suffix} {self.n}"]
        return out


class Metrics:
    """Counters and histograms of the server; ``render()`` gives the Prometheus text."""

    def __init__(self, queue_depth: Callable[[], int] = lambda: 0, busy: Callable[[], bool] = lambda: False):
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cancelled = 0
        self.guardrail_events: Counter[tuple[str, str, str]] = Counter()
        self.latency: dict[str, Histogram] = {}
        self.ttft = Histogram()
        self._queue_depth = queue_depth
        self._busy = busy

    def record_request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] += 1
            self.latency.setdefault(route, Histogram()).observe(seconds)

    def record_tokens(self, prompt: int, completion: int, time_to_first_token: float | None = None) -> None:
        with self._lock:
            self.prompt_tokens += prompt
            self.completion_tokens += completion
            if time_to_first_token is not None:
                self.ttft.observe(time_to_first_token)

    def record_cancelled(self) -> None:
        with self._lock:
            self.cancelled += 1

    def record_guardrail(self, guardrail: str, stage: str, action: str) -> None:
        with self._lock:
            self.guardrail_events[(guardrail, stage, action)] += 1

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP tunelab_requests_total Requests answered, by route and HTTP status.",
                     "# TYPE tunelab_requests_total counter"]
            lines += [f'tunelab_requests_total{{route="{r}",status="{s}"}} {n}'
                      for (r, s), n in sorted(self.requests.items())]
            lines += ["# HELP tunelab_prompt_tokens_total Prompt tokens processed.",
                      "# TYPE tunelab_prompt_tokens_total counter", f"tunelab_prompt_tokens_total {self.prompt_tokens}",
                      "# HELP tunelab_completion_tokens_total Tokens generated.",
                      "# TYPE tunelab_completion_tokens_total counter",
                      f"tunelab_completion_tokens_total {self.completion_tokens}",
                      "# HELP tunelab_cancelled_total Generations stopped early because the client went away.",
                      "# TYPE tunelab_cancelled_total counter", f"tunelab_cancelled_total {self.cancelled}",
                      "# HELP tunelab_guardrail_events_total Guardrail findings, by guardrail, stage and action.",
                      "# TYPE tunelab_guardrail_events_total counter"]
            lines += [f'tunelab_guardrail_events_total{{guardrail="{g}",stage="{s}",action="{a}"}} {n}'
                      for (g, s, a), n in sorted(self.guardrail_events.items())]
            lines += ["# HELP tunelab_request_latency_seconds Request latency, by route.",
                      "# TYPE tunelab_request_latency_seconds histogram"]
            for route, hist in sorted(self.latency.items()):
                lines += hist.lines("tunelab_request_latency_seconds", f'route="{route}"')
            lines += ["# HELP tunelab_time_to_first_token_seconds Time to the first generated token.",
                      "# TYPE tunelab_time_to_first_token_seconds histogram"]
            lines += self.ttft.lines("tunelab_time_to_first_token_seconds")
            lines += ["# HELP tunelab_queue_depth Requests waiting for the model.",
                      "# TYPE tunelab_queue_depth gauge", f"tunelab_queue_depth {self._queue_depth()}",
                      "# HELP tunelab_busy 1 while the model is generating.",
                      "# TYPE tunelab_busy gauge", f"tunelab_busy {int(self._busy())}"]
        return "\n".join(lines) + "\n"
