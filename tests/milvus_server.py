"""A real Milvus reached over http://127.0.0.1:PORT, as a deployment would be: Milvus Lite's gRPC server in its
own process, shared by many clients (what Lite's file lock forbids for a .db path), stoppable and restartable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.ports import wait_listening

# What `milvus-lite server` runs, with one difference: it permits the keepalive pings pymilvus sends every 10 s, as
# a Milvus standalone server does. With grpc's default policy the Lite server answers idle clients with GOAWAY
# "too_many_pings" and later connections to it fail.
SERVER = """
import sys
from concurrent import futures
import grpc
from pymilvus.grpc_gen import milvus_pb2_grpc
from milvus_lite.adapter.grpc.servicer import MilvusServicer
from milvus_lite.db import MilvusLite

server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=[
    ("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20),
    ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.min_ping_interval_without_data_ms", 1000),
    ("grpc.http2.max_ping_strikes", 0),
])
milvus_pb2_grpc.add_MilvusServiceServicer_to_server(MilvusServicer(MilvusLite(sys.argv[1])), server)
server.add_insecure_port("127.0.0.1:" + sys.argv[2])
server.start()
server.wait_for_termination()
"""


class MilvusServer:
    """One server process on 127.0.0.1:port over `data_dir`; `stop()` and `start()` again keep the data."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir, self.port = data_dir, port
        self.uri = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60) -> MilvusServer:
        cmd = [sys.executable, "-c", SERVER, str(self.data_dir / "db"), str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.proc, self.port, timeout_s, "milvus_lite server")
        return self

    def stop(self) -> None:
        """End the process we started (by its id): terminate, then kill if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
