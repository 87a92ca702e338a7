"""The decode service as a Ray Serve deployment (`pip install 'pid-decoder[ray]'`): the same app as `pid serve`
(`create_app`) in every replica, one replica per GPU (or per CPU slot), replicas placed across a Ray cluster, Ray's
proxy in front.

    from ray import serve
    from pid.serve.ray import deployment

    serve.run(deployment("flux-v1.5", device="cuda", num_replicas=4, max_batch=4), route_prefix="/")

Each replica loads its own decoder (on the GPU Ray gives it) and batches its own requests; it takes traffic only
once it is loaded and warm. Two queues bound the work: each replica's own (`max_queue`, 503 + Retry-After from the
app) and Ray's (`max_queued_requests` per replica, 503 from Ray's proxy). `max_ongoing_requests` (default: max_batch +
max_queue) is what Ray sends a replica at once, so the replica's batcher sees enough requests to batch.
"""

from __future__ import annotations

from typing import Any, Optional

from .extras import RAY_EXTRA, require_serve_extra

require_serve_extra(("ray", "starlette", "uvicorn", "prometheus_client"), "pid.serve.ray", RAY_EXTRA)
from ray import serve  # noqa: E402  (the Ray package, not this module)


@serve.ingress()
class PidReplica:
    """One replica: a decoder (`pid.load(**load_kwargs)`) and the pid serve app around it (`create_app(**app_kwargs)`)."""

    def __init__(self, load_kwargs: dict, app_kwargs: dict):
        self._load_kwargs = dict(load_kwargs)
        self._app_kwargs = dict(app_kwargs)
        self._service = None

    def __serve_build_asgi_app__(self):
        import pid

        from .app import create_app

        load_kwargs = self._load_kwargs
        app = create_app(lambda: pid.load(**load_kwargs), wait_ready=True, **self._app_kwargs)
        self._service = app.state.service
        return app

    def check_health(self) -> None:
        """Ray's health check: a replica whose decoder failed is replaced."""
        if self._service is not None and self._service.error is not None:
            raise RuntimeError(self._service.error)


def deployment(checkpoint: Any, *, variant: Optional[str] = None, config: Optional[dict] = None,
               device: str = "cpu", precision: Optional[str] = None, num_replicas: "int | str" = 1,
               num_cpus: Optional[float] = None, max_ongoing_requests: Optional[int] = None,
               max_queued_requests: int = 64, name: str = "pid", **app_kwargs):
    """A Ray Serve application of `pid serve` replicas: bind it with `serve.run(app, route_prefix="/")`.

    checkpoint, variant, config, precision: as `pid.load` takes them (a path must exist on every node; a variant name
    is fetched by each). device "cuda": one GPU per replica (Ray picks it: the replica sees it as cuda:0); "cpu":
    `num_cpus` CPUs per replica (default 1). num_replicas: a number, or "auto" (Ray's autoscaling). app_kwargs go to
    `create_app` (max_batch, max_queue, max_memory, batch_wait_ms, timeout, caption_embeds: a tensor travels with the
    deployment, a file must exist on every node)."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda' (Ray gives each replica its GPU), got {device!r}")
    actor = {"num_gpus": 1} if device == "cuda" else {"num_cpus": 1 if num_cpus is None else num_cpus}
    max_batch = app_kwargs.get("max_batch", 4)
    max_queue = app_kwargs.get("max_queue", 16)
    load_kwargs = dict(checkpoint_or_state_dict=checkpoint, variant=variant, config=config, device=device,
                       precision=precision)
    options = serve.deployment(PidReplica, name=name, num_replicas=num_replicas, ray_actor_options=actor,
                               max_ongoing_requests=max_ongoing_requests or max_batch + max_queue,
                               max_queued_requests=max_queued_requests)
    return options.bind(load_kwargs, app_kwargs)
