"""What a reply's size costs in a Serve fan-out, apart from any work: a caller deployment asks
two "shard" deployments at once for a reply of N bytes, as the ingress asks the shards
(`qa.serve.FanOut.gather`), and times the fan-out inside its replica. Ray passes a reply under
100 KB inline and a larger one through the object store (`max_direct_call_object_size`).

Usage: PYTHONPATH=$PWD python scripts/serve_payload.py ADDRESS [ROUNDS] [INLINE_BYTES] [grpc]
  ("grpc": the caller asks over Serve's gRPC path, as `qa.serve.direct` does; else as actor tasks)
  (a cluster as in README, "Measured with `qa bench --ray`"; the app is deleted at the end)
"""

import statistics
import sys
import time

from qa.cluster import connect

SIZES = (0, 10_000, 50_000, 90_000, 120_000, 180_000, 264_000)
APP = "qa-payload-probe"


def main(address: str, rounds: int) -> None:
    connect(address)
    from ray import serve

    inline = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] != "0" else ""
    grpc = "grpc" in sys.argv[4:]
    blob_options: dict = {"num_cpus": 0.25}
    if inline:
        blob_options["runtime_env"] = {"env_vars": {"RAY_max_direct_call_object_size": inline}}

    @serve.deployment(ray_actor_options=blob_options)
    class Blob:
        def get(self, n: int) -> bytes:
            return bytes(n)

    @serve.deployment(ray_actor_options={"num_cpus": 0.25})
    class Caller:
        def __init__(self, *blobs):
            from qa.serve import direct

            self.blobs = [direct(b, grpc) for b in blobs]

        def fanout(self, n: int, rounds: int) -> list[float]:
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                calls = [b.get.remote(n) for b in self.blobs]
                for call in calls:
                    call.result(timeout_s=30)
                times.append(time.perf_counter() - start)
            return times

    serve.start(proxy_location="Disabled")
    blobs = [Blob.options(name=f"blob{i}").bind() for i in range(2)]
    handle = serve.run(Caller.bind(*blobs), name=APP, route_prefix=None)
    try:
        handle.fanout.remote(1000, 20).result(timeout_s=120)  # warm up
        print(f"fan-out to 2 deployments {'over gRPC' if grpc else 'as actor tasks'}, p50 / p95 ms of {rounds} rounds, by reply size:")
        for n in SIZES:
            times = sorted(handle.fanout.remote(n, rounds).result(timeout_s=600))
            p50, p95 = statistics.median(times), times[int(0.95 * (len(times) - 1))]
            print(f"  {n:>8,} bytes  {1000 * p50:7.2f}  {1000 * p95:7.2f}", flush=True)
    finally:
        serve.delete(APP)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200)
