"""What Serve's calls cost apart from any work, by how they are made: a caller deployment (as the
ingress) asks two "shard" deployments at once for a small reply, as `qa.serve.FanOut` does, and
a client calls the caller, as `qa bench --ray` and the web app do.

Timed, alternately, in each of `rounds` rounds:
- "hop": the client's call of a caller method that does nothing;
- "fan-out, thread": inside the caller, a sync method in a worker thread asks both shards and
  blocks on each `.result()` (how `FanOut.gather` asks today);
- "fan-out, await": inside the caller, an async method awaits both responses
  (`asyncio.gather`).

Each run deploys with one set of Serve's own switches (env vars read when a replica starts,
passed in each deployment's runtime_env, and set in this process for the client's handle):
- "default";
- "same-loop": RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0 and
  RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0 (two of RAY_SERVE_THROUGHPUT_OPTIMIZED's);
- "grpc-only": RAY_SERVE_USE_GRPC_BY_DEFAULT=1 alone;
- "grpc": same-loop and RAY_SERVE_USE_GRPC_BY_DEFAULT=1 (replicas called over gRPC, not as actor
  tasks).

Usage: PYTHONPATH=$PWD python scripts/serve_overhead.py ADDRESS VARIANT [ROUNDS]
  (a cluster as in README, "Measured with `qa bench --ray`"; one variant per process, since the
  client reads the switches when it imports Serve; the app is deleted at the end)
"""

import asyncio
import os
import statistics
import sys
import time

VARIANTS = {
    "default": {},
    "same-loop": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
                  "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"},
    "grpc-only": {"RAY_SERVE_USE_GRPC_BY_DEFAULT": "1"},
    "grpc": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
             "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
             "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1"},
}
APP = "qa-overhead-probe"
# A small reply (about 2.7 KB): the calls' own cost. A shard's real reply is 190-264 KB, whose
# size scripts/serve_payload.py measures apart.
REPLY = {"hits": [[i, 0.5, "passage text " * 20] for i in range(10)]}


def main(address: str, variant: str, rounds: int) -> None:
    env = VARIANTS[variant]
    # The client's handle is called outside an event loop, where a router in the caller's own
    # loop is refused; the replicas get them all.
    os.environ.update({k: v for k, v in env.items() if "ROUTER" not in k})
    from qa.cluster import connect

    connect(address)
    from ray import serve

    options: dict = {"num_cpus": 0.25}
    if env:
        options["runtime_env"] = {"env_vars": env}

    @serve.deployment(ray_actor_options=options)
    class Shard:
        def hits(self, question: str) -> dict:
            return REPLY

    @serve.deployment(ray_actor_options=options)
    class Caller:
        def __init__(self, *shards):
            self.shards = shards

        async def nothing(self) -> None:
            return None

        def fanout_thread(self) -> float:
            start = time.perf_counter()
            calls = [s.hits.remote("q") for s in self.shards]
            for call in calls:
                call.result(timeout_s=30)
            return time.perf_counter() - start

        async def fanout_await(self) -> float:
            start = time.perf_counter()
            await asyncio.gather(*[s.hits.remote("q") for s in self.shards])
            return time.perf_counter() - start

    serve.start(proxy_location="Disabled")
    shards = [Shard.options(name=f"shard{i}").bind() for i in range(2)]
    handle = serve.run(Caller.bind(*shards), name=APP, route_prefix=None)
    times: dict[str, list[float]] = {"hop": [], "fan-out, thread": [], "fan-out, await": []}
    try:
        try:  # a router in the replica's loop refuses calls from a worker thread
            handle.fanout_thread.remote().result(timeout_s=60)
        except Exception as e:  # noqa: BLE001 - reported, and that way left out
            print(f"{variant}: fan-out from a thread fails: {str(e).splitlines()[-1][:120]}")
            del times["fan-out, thread"]
        for _ in range(20):  # warm up
            handle.nothing.remote().result(timeout_s=60)
            handle.fanout_await.remote().result(timeout_s=60)
        for _ in range(rounds):
            start = time.perf_counter()
            handle.nothing.remote().result(timeout_s=60)
            times["hop"].append(time.perf_counter() - start)
            if "fan-out, thread" in times:
                times["fan-out, thread"].append(handle.fanout_thread.remote().result(timeout_s=60))
            times["fan-out, await"].append(handle.fanout_await.remote().result(timeout_s=60))
        load = os.getloadavg()[0]
        print(f"{variant}: p50 / p95 ms of {rounds} rounds (load {load:.1f})")
        for name, got in times.items():
            got.sort()
            p95 = got[int(0.95 * (len(got) - 1))]
            print(f"  {name:16} {1000 * statistics.median(got):7.2f} {1000 * p95:7.2f}",
                  flush=True)
    finally:
        serve.delete(APP)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 200)
