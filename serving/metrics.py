"""Serving's Prometheus metrics: adapters loaded into vLLM, syncs with the registry, vLLM's reachability.

vLLM's own metrics (tokens/s, KV cache, queue) are on its API port at /metrics; these are Flywheel's side.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

ADAPTER_LOADS = Counter("flywheel_adapter_loads_total", "Adapters loaded into vLLM (new, or replaced in place).")
ADAPTER_UNLOADS = Counter("flywheel_adapter_unloads_total", "Adapters unloaded from vLLM.")
ADAPTER_LOAD_SECONDS = Histogram(
    "flywheel_adapter_load_seconds", "Time vLLM took to load one adapter.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SYNC_FAILURES = Counter(
    "flywheel_adapter_sync_failures_total",
    "Syncs of vLLM's adapters with the registry that failed (vLLM unreachable, an adapter refused); retried later.",
)
VLLM_RESTARTS = Counter("flywheel_vllm_restarts_total", "Times `flywheel serve` restarted a vLLM that had died.")


class VllmProbe(Collector):
    """`flywheel_vllm_up`, asked of vLLM at each scrape: a value set earlier could be stale."""

    def __init__(self, url: str, timeout_s: float = 2.0):
        self.url, self.timeout_s = url, timeout_s

    def collect(self):
        from serving.engine import is_ready  # engine.py counts restarts here: imported late, no cycle

        up = is_ready(self.url, timeout=self.timeout_s)
        yield GaugeMetricFamily("flywheel_vllm_up", "Whether vLLM answers its model list now (1) or not (0).",
                                value=float(up))
