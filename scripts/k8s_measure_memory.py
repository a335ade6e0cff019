#!/usr/bin/env python3
"""Measures the resident memory of each custops service binary, idle and under gRPC load, so
the Kubernetes resource requests and limits in k8s/base are sized from numbers, not guesses.

    python3 scripts/k8s_measure_memory.py [--bin-dir target/release] [--seconds 20]

For each service it creates a throw-away database on the Postgres at $MEASURE_ADMIN_URL
(default postgres://postgres@127.0.0.1:5432/postgres, trust auth), starts the binary on a free
loopback port with migrations on, waits for SERVING, samples VmRSS after a few idle seconds, then
drives it from --connections separate HTTP/2 connections (health Check, reflection
ListServices and FileContainingSymbol, which returns the largest messages the servers send
today) for --seconds and reports the peak (VmHWM). It stops what it started and drops the
database. The load generator needs grpcio, which the project does not ship:

    python3 -m venv /tmp/measure && /tmp/measure/bin/pip install grpcio grpcio-health-checking \
        grpcio-reflection && /tmp/measure/bin/python scripts/k8s_measure_memory.py

The results are recorded in k8s/README.md; run it again after a service grows real work.
"""

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

SERVICES = {
    # service -> its API, asked for by name in health checks and reflection lookups
    "profiles": "custops.profiles.v1.ProfilesService",
    "segmentation": "custops.segmentation.v1.SegmentationService",
    "loyalty": "custops.loyalty.v1.LoyaltyService",
    "feedback": "custops.feedback.v1.FeedbackService",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found for pid {pid}")


def psql(admin_url: str, sql: str) -> None:
    subprocess.run(["psql", admin_url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], check=True)


def wait_serving(target: str, deadline: float) -> None:
    while time.time() < deadline:
        try:
            with grpc.insecure_channel(target) as ch:
                reply = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{target} never reported SERVING")


def load(target: str, api: str, stop: threading.Event, counts: list, idx: int) -> None:
    # One channel per thread: a separate connection, as separate client pods would open.
    with grpc.insecure_channel(target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        n = 0
        while not stop.is_set():
            health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            health.Check(health_pb2.HealthCheckRequest(service=api), timeout=5)
            reqs = [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=api),
            ]
            for _ in refl.ServerReflectionInfo(iter(reqs), timeout=5):
                pass
            n += 4
        counts[idx] = n


def measure(bin_dir: str, service: str, admin_url: str, seconds: float, connections: int):
    db = f"custops_k8s_measure_{service}"
    psql(admin_url, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    psql(admin_url, f"CREATE DATABASE {db}")
    parts = urllib.parse.urlsplit(admin_url)
    db_url = urllib.parse.urlunsplit(parts._replace(path="/" + db))
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": db_url,
        "CUSTOPS_LISTEN_HOST": "127.0.0.1",
        f"CUSTOPS_{service.upper()}_PORT": str(port),
        "CUSTOPS_AUTH_MODE": "disabled",
        "CUSTOPS_LOG_FORMAT": "json",
        "RUST_LOG": "warn",
    }
    proc = subprocess.Popen(
        [os.path.join(bin_dir, f"custops-{service}")],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    target = f"127.0.0.1:{port}"
    try:
        wait_serving(target, time.time() + 60)
        time.sleep(5)
        idle = status_kib(proc.pid, "VmRSS")
        stop = threading.Event()
        counts = [0] * connections
        threads = [
            threading.Thread(target=load, args=(target, SERVICES[service], stop, counts, i))
            for i in range(connections)
        ]
        started = time.time()
        for t in threads:
            t.start()
        time.sleep(seconds)
        loaded = status_kib(proc.pid, "VmRSS")
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.time() - started
        peak = status_kib(proc.pid, "VmHWM")
        return idle, loaded, peak, sum(counts) / elapsed
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        psql(admin_url, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", default="target/debug")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--admin-url",
        default=os.environ.get(
            "MEASURE_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()
    print(f"binaries: {args.bin_dir}; load: {args.connections} connections for {args.seconds:.0f}s")
    print(f"{'service':<13} {'idle MiB':>9} {'loaded MiB':>11} {'peak MiB':>9} {'calls/s':>8}")
    for service in SERVICES:
        idle, loaded, peak, rate = measure(
            args.bin_dir, service, args.admin_url, args.seconds, args.connections
        )
        print(
            f"{service:<13} {idle / 1024:>9.1f} {loaded / 1024:>11.1f} {peak / 1024:>9.1f}"
            f" {rate:>8.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
