"""The server's Prometheus metrics (`GET /metrics`), in a registry of its own (several apps can live in one process)."""

from __future__ import annotations

import resource
import sys

import torch

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class ServeMetrics:
    """requests by endpoint and status, the queue's depth, samples per decode, time in the queue / decoding / encoding
    the reply, images decoded, and the device's memory peak (CUDA: the allocator's; CPU: the process's peak RSS)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("pid_serve_requests", "Decode requests answered, by endpoint and HTTP status "
                                "(499: the client disconnected first)", ["endpoint", "status"], registry=r)
        self.queue_depth = Gauge("pid_serve_queue_depth", "Requests waiting for a decode", registry=r)
        self.batch_size = Histogram("pid_serve_batch_size", "Samples per decode call", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.queue_seconds = Histogram("pid_serve_queue_seconds", "Time a request waited before its decode started",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.decode_seconds = Histogram("pid_serve_decode_seconds", "Time of one (batched) decode call",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.encode_seconds = Histogram("pid_serve_encode_seconds", "Time to encode one reply (PNG, JPEG, tensor "
                                        "bytes)", buckets=LATENCY_BUCKETS, registry=r)
        self.images = Counter("pid_serve_images_decoded", "Images decoded and sent", registry=r)
        self.dropped = Counter("pid_serve_dropped_before_decode", "Requests dropped from the queue before their "
                               "decode (client gone or timed out)", registry=r)
        self.memory_peak = Gauge("pid_serve_device_memory_peak_bytes", "Peak memory of the decoder's device (CUDA: "
                                 "torch.cuda.max_memory_allocated; CPU: the process's peak resident set)", registry=r)
        self.ready = Gauge("pid_serve_ready", "1 once the weights are loaded and a warm-up decode ran", registry=r)

    def record_memory(self, device: torch.device) -> None:
        if device.type == "cuda":
            self.memory_peak.set(torch.cuda.max_memory_allocated(device))
        else:  # ru_maxrss: kilobytes on Linux, bytes on macOS
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.memory_peak.set(rss if sys.platform == "darwin" else rss * 1024)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
