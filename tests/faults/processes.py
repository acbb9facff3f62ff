"""The real services as separate processes, to kill, freeze and restart at will.

Each process keeps its port across restarts (clients reconnect to the same address, as to a
Kubernetes Service) and logs to a file of its own. Everything listens on loopback only and is
stopped by `close()`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.milvus_server import MilvusServer, free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Service:
    """One of our servers, run as `python -m <module>` with its environment."""

    name: str
    module: str
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    frozen: bool = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait_s: float | None = 120.0) -> None:
        assert self.process is None or self.process.poll() is not None, f"{self.name} runs"
        prefix = "EMBEDDER_" if self.name == "embedder" else "SEARCH_"
        env = {**os.environ, **self.env, f"{prefix}PORT": str(self.port),
               f"{prefix}HOST": "127.0.0.1", f"{prefix}LOG_FORMAT": "text"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", self.module], env=env,
                                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.frozen = False
        if wait_s is not None:
            self.wait_serving(wait_s)

    def wait_serving(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}; "
                                       f"see {self.log_path}")
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not SERVING after {timeout_s:.0f} s; "
                                       f"see {self.log_path}")
                time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to its clients."""
        if self.process is not None and self.process.poll() is None:
            if self.frozen:
                self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()
        self.frozen = False

    def freeze(self) -> None:
        """SIGSTOP: the process and its connections stay, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.frozen = False

    def stop(self) -> None:
        """SIGTERM, the graceful way; SIGKILL if it does not end in time."""
        if self.process is None or self.process.poll() is not None:
            return
        if self.frozen:
            self.thaw()
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()


class Stack:
    """An embedder, a search service over Milvus Lite or a Milvus server, and that server."""

    def __init__(self, workdir: Path, backend: str, milvus: MilvusServer | None = None,
                 database: str = "", embedder_env: dict[str, str] | None = None,
                 search_env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.backend = backend
        self.milvus = milvus
        workdir.mkdir(parents=True, exist_ok=True)
        self.embedder = Service("embedder", "embedder_service.server", {
            "EMBEDDER_MAX_QUEUE_DELAY_MS": "2", "EMBEDDER_SHUTDOWN_GRACE_S": "2",
            **(embedder_env or {})},
            workdir / "embedder.log")
        uri = (str(workdir / "search.db") if milvus is None
               else f"{milvus.uri}/{database}" if database else milvus.uri)
        self.search = Service("search", "search_service.server", {
            "SEARCH_MILVUS_URI": uri, "SEARCH_EMBEDDER_TARGET": self.embedder.address,
            "SEARCH_EMBEDDER_TIMEOUT_S": "5", "SEARCH_MILVUS_TIMEOUT_S": "5",
            "SEARCH_HEALTH_CHECK_INTERVAL_S": "0.5", "SEARCH_SHUTDOWN_GRACE_S": "2",
            **(search_env or {})},
            workdir / "search.log")

    def start(self) -> None:
        self.embedder.start()
        self.search.start()

    def close(self) -> None:
        for service in (self.search, self.embedder):
            service.stop()
