"""Load test of `pid serve` on localhost: a bounded asyncio client (httpx) against the server in another process.

For max-batch N and max-batch 1 (the batching gain, in the same run), at each concurrency (closed loop: that many
clients, each sending its next request when the last is answered): images/s, p50 / p99 latency, and the mean batch
size the server decoded (from its /metrics). Then open loop at twice the capacity measured with max-batch N (Poisson
arrivals for --overload-seconds, at most --max-in-flight at once): the rejected (503) fraction, the accepted
requests' p50 / p99, and any past the server's timeout (504). Every request carries its own seed; requests use the
Remote VAE decode protocol as diffusers' client sends it, output_type=pt (the float tensor; --reply png / jpg adds the
image encoding).

    python benchmarks/bench_serve.py --arch tiny --size 128
    python benchmarks/bench_serve.py --arch small --size 128 --json serve_small.json
    python benchmarks/bench_serve.py --arch full --device cuda --size 1024 --max-batch 4   # a GPU

Random weights (pid.archs): serving cost does not depend on trained values.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import socket
import sys
import time

import torch


# ------------------------------------------------------------------------------------------ the server process
def _serve(port: int, arch: str, device: str, precision, app_kwargs: dict) -> None:
    import logging

    import uvicorn

    import pid
    from pid.archs import ARCHS, random_net
    from pid.captions import CaptionCache
    from pid.serve import create_app

    logging.basicConfig(level=logging.WARNING)
    for name in ("pid.decoder", "pid.inputs"):  # "outside the trained sizes", once per decode
        logging.getLogger(name).setLevel(logging.ERROR)
    from pid.plan import default_precision, weights_dtype

    cfg = ARCHS[arch]
    precision = precision or default_precision(device)  # as pid.load chooses it
    net = random_net(cfg, device)
    net = net.to(weights_dtype(precision))
    decoder = pid.PidDecoder(net, variant=pid.get_variant("flux-v1.5"), precision=precision, fp8_emulation=True,
                             caption_cache=CaptionCache())
    embeds = torch.randn(1, 300, cfg.txt_embed_dim, generator=torch.Generator().manual_seed(0))
    app = create_app(decoder, caption_embeds=embeds, **app_kwargs)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class Server:
    """`pid serve`'s app with a random-weight network in a child process (spawned: its own interpreter and GIL)."""

    def __init__(self, args, **app_kwargs):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        ctx = multiprocessing.get_context("spawn")
        self.process = ctx.Process(target=_serve, args=(self.port, args.arch, args.device, args.precision,
                                                        app_kwargs), daemon=True)

    def __enter__(self) -> "Server":
        import httpx

        self.process.start()
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{self.url}/health").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if not self.process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not become healthy")
            time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        self.process.terminate()  # SIGTERM: a graceful stop
        self.process.join(60)

    def batches(self) -> tuple[float, float]:
        """(samples decoded, decode calls) so far, from /metrics."""
        import httpx

        values = {}
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            name, _, value = line.partition(" ")
            if name in ("pid_serve_batch_size_sum", "pid_serve_batch_size_count"):
                values[name] = float(value)
        return values.get("pid_serve_batch_size_sum", 0.0), values.get("pid_serve_batch_size_count", 0.0)


# ------------------------------------------------------------------------------------------ the client
class Load:
    def __init__(self, url: str, latent: torch.Tensor, reply: str):
        self.url, self.body = url, latent.numpy().tobytes()
        self.query = {"shape": list(latent.shape), "dtype": "float32", "do_scaling": "True",
                      "output_type": "pt" if reply == "pt" else "pil", "image_format": reply if reply != "pt" else "jpg"}

    async def one(self, http, seed: int) -> tuple[int, float]:
        start = time.perf_counter()
        response = await http.post(f"{self.url}/", content=self.body, params={**self.query, "seed": seed},
                                   headers={"Content-Type": "tensor/binary"})
        await response.aread()
        return response.status_code, time.perf_counter() - start

    async def closed_loop(self, concurrency: int, requests: int) -> dict:
        import httpx

        results: list[tuple[int, float]] = []
        counter = iter(range(requests))

        async def client(http):
            for seed in counter:
                results.append(await self.one(http, seed))
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=600, limits=limits) as http:
            start = time.perf_counter()
            await asyncio.gather(*(client(http) for _ in range(concurrency)))
            wall = time.perf_counter() - start
        return _summary(results, wall)

    async def open_loop(self, rate: float, seconds: float, max_in_flight: int) -> dict:
        """Poisson arrivals at `rate` requests/s for `seconds`; at most `max_in_flight` requests open (the client's
        own bound: an arrival beyond it is counted as not sent)."""
        import httpx

        rng = random.Random(0)
        results: list[tuple[int, float]] = []
        tasks, not_sent = [], 0
        limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
        async with httpx.AsyncClient(timeout=600, limits=limits) as http:
            in_flight = asyncio.Semaphore(max_in_flight)

            async def send(seed):
                try:
                    results.append(await self.one(http, seed))
                finally:
                    in_flight.release()
            start = time.perf_counter()
            next_at, seed = start, 0
            while next_at - start < seconds:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                if in_flight.locked():
                    not_sent += 1
                else:
                    await in_flight.acquire()
                    tasks.append(asyncio.create_task(send(seed)))
                seed += 1
                next_at += rng.expovariate(rate)
            await asyncio.gather(*tasks)
            wall = time.perf_counter() - start
        out = _summary(results, wall)
        out.update(offered_per_s=rate, not_sent=not_sent)
        return out


def _summary(results: list[tuple[int, float]], wall: float) -> dict:
    ok = sorted(t for status, t in results if status == 200)
    statuses = [status for status, _ in results]
    return {"requests": len(results), "ok": len(ok), "rejected_503": statuses.count(503),
            "timed_out_504": statuses.count(504), "other_errors": len(results) - len(ok) - statuses.count(503)
            - statuses.count(504), "wall_s": wall, "images_per_s": len(ok) / wall,
            "p50_s": _percentile(ok, 50), "p99_s": _percentile(ok, 99)}


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


# ------------------------------------------------------------------------------------------ the run
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("tiny", "small", "full"), default="tiny")
    parser.add_argument("--size", type=int, default=128, help="output side (the latent is size/32)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("float32", "reference", "fast", "fp8"), help="default: the device's")
    parser.add_argument("--max-batch", type=int, default=8, help="N of the batching comparison (against 1)")
    parser.add_argument("--max-batches", help="the servers' max-batch values, comma-separated (default: N,1); the "
                        "largest is the overload run's")
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--requests", type=int, default=24, help="requests per concurrency level (closed loop)")
    parser.add_argument("--max-queue", type=int, default=8, help="the server's queue in the overload run")
    parser.add_argument("--overload-seconds", type=float, default=10.0, help="0: no overload run")
    parser.add_argument("--max-in-flight", type=int, default=64, help="the open-loop client's bound")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--reply", choices=("pt", "png", "jpg"), default="pt")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.size % 32:
        parser.error("--size must be a multiple of 32")
    levels = [int(c) for c in args.concurrency.split(",")]
    max_batches = ([int(b) for b in args.max_batches.split(",")] if args.max_batches else [args.max_batch, 1])
    args.max_batch = max(max_batches)
    side = args.size // 32
    latent = torch.randn(1, 16, side, side, generator=torch.Generator().manual_seed(0))
    print(f"pid serve load test: {args.arch} network (random weights), {args.size}x{args.size} images, "
          f"{args.device}, torch {torch.__version__}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; reply {args.reply}", flush=True)
    out = {"arch": args.arch, "size": args.size, "device": args.device, "reply": args.reply, "closed_loop": [],
           "load_average_start": os.getloadavg()}
    print(f"{'max batch':>9} {'conc':>4} {'images/s':>9} {'p50 s':>7} {'p99 s':>7} {'mean batch':>10} {'errors':>6}")
    capacity = None
    for max_batch in max_batches:
        with Server(args, max_batch=max_batch, max_queue=max(16, 2 * max(levels)),
                    batch_wait_ms=args.batch_wait_ms) as server:
            load = Load(server.url, latent, args.reply)
            asyncio.run(load.closed_loop(1, 2))  # warm the connection path and the first decodes
            for c in levels:
                samples, calls = server.batches()
                row = asyncio.run(load.closed_loop(c, args.requests))
                samples2, calls2 = server.batches()
                row.update(max_batch=max_batch, concurrency=c,
                           mean_batch=(samples2 - samples) / max(1.0, calls2 - calls))
                out["closed_loop"].append(row)
                errors = row["requests"] - row["ok"]
                print(f"{max_batch:>9} {c:>4} {row['images_per_s']:>9.2f} {row['p50_s']:>7.3f} {row['p99_s']:>7.3f} "
                      f"{row['mean_batch']:>10.2f} {errors:>6}", flush=True)
                if max_batch == args.max_batch:
                    capacity = max(capacity or 0.0, row["images_per_s"])
    best = {mb: max(r["images_per_s"] for r in out["closed_loop"] if r["max_batch"] == mb) for mb in max_batches}
    out["best_images_per_s"] = best
    lowest = min(max_batches)
    out["batching_gain"] = best[args.max_batch] / best[lowest]
    print(f"batching gain: {best[args.max_batch]:.2f} images/s with max batch {args.max_batch} vs {best[lowest]:.2f} "
          f"with max batch {lowest} (x{out['batching_gain']:.2f}); best per max batch: "
          + ", ".join(f"{mb}: {v:.2f}" for mb, v in sorted(best.items())), flush=True)
    if args.overload_seconds <= 0:
        _write(args, out)
        return 0

    rate = 2 * capacity
    with Server(args, max_batch=args.max_batch, max_queue=args.max_queue, batch_wait_ms=args.batch_wait_ms) as server:
        load = Load(server.url, latent, args.reply)
        asyncio.run(load.closed_loop(1, 2))
        samples, calls = server.batches()
        row = asyncio.run(load.open_loop(rate, args.overload_seconds, args.max_in_flight))
        samples2, calls2 = server.batches()
    row["mean_batch"] = (samples2 - samples) / max(1.0, calls2 - calls)
    out["overload"] = row
    answered = row["requests"]
    print(f"overload (open loop, {rate:.2f} requests/s = 2x the capacity {capacity:.2f} images/s, "
          f"{args.overload_seconds:g} s, max batch {args.max_batch}, max queue {args.max_queue}): {answered} sent, "
          f"{row['ok']} accepted ({row['images_per_s']:.2f} images/s, mean batch {row['mean_batch']:.2f}), "
          f"{row['rejected_503']} rejected 503 ({row['rejected_503'] / max(1, answered):.0%}), "
          f"{row['timed_out_504']} timed out, {row['other_errors']} other errors, {row['not_sent']} not sent (client "
          f"bound); accepted p50 {row['p50_s']:.3f} s, p99 {row['p99_s']:.3f} s", flush=True)
    _write(args, out)
    return 0


def _write(args, out: dict) -> None:
    out["load_average_end"] = os.getloadavg()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in out['load_average_end'])}")
    if args.json:
        from pid.atomic import atomic_path

        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.exit(main())
