"""A real Milvus standalone server for the tests (the PyPI `milvus` package, 2.3.5).

Its components listen on every interface whatever `X.ip` says (that only sets the address they
advertise to each other), so the server is only started in a network namespace that has nothing
but loopback: `make test` runs pytest through scripts/loopback-only.sh.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pymilvus import MilvusClient

COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord",
              "dataNode")
# The wrapper picks each port afresh at every start, moving on when one is still in TIME_WAIT
# after a stop; a restart must come back on the same ports, or the components find each
# other's stale addresses in etcd and never become ready. Written into the config directly,
# these win over the wrapper's choice (Milvus itself binds with SO_REUSEADDR).
PORT_KEYS = ("rootCoord.port", "proxy.internalPort", "queryCoord.port", "queryNode.port",
             "indexNode.port", "dataCoord.port", "dataNode.port")


def loopback_only() -> bool:
    """True when this process' network namespace has no interface but `lo`."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MilvusServer:
    """One `milvus-server` process over a data folder; restartable on the same port and data."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self._config = {f"{name}.ip": "127.0.0.1" for name in COMPONENTS}
        self._config.update({key: str(free_port()) for key in PORT_KEYS})
        self._config["proxy.port"] = str(self.port)
        # The embedded etcd listens on 2379/2380 unless its own config file says otherwise,
        # so a second server in one network namespace failed to start ("bind: address already
        # in use"). Milvus reads ETCD_CONFIG_PATH and ETCD_ENDPOINTS from the environment.
        self._etcd_ports = (free_port(), free_port())
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> None:
        extras = [arg for key, value in self._config.items()
                  for arg in ("--extra-config", f"{key}={value}")]
        command = [sys.executable, "-c", "import sys, milvus; sys.exit(milvus.main())",
                   "--data", str(self.data_dir), *extras]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "wrapper.log", "ab") as log:
            # Its own process group: SIGINT to the group is how the wrapper shuts Milvus down.
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True, env=self._etcd_env())
        self._wait_ready(timeout_s)

    def _etcd_env(self) -> dict[str, str]:
        client, peer = (f"http://127.0.0.1:{port}" for port in self._etcd_ports)
        config = self.data_dir / "embed-etcd.yaml"
        config.write_text(f"listen-client-urls: {client}\nadvertise-client-urls: {client}\n"
                          f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
                          f"initial-cluster: default={peer}\n")
        return {**os.environ, "ETCD_CONFIG_PATH": str(config),
                "ETCD_ENDPOINTS": f"127.0.0.1:{self._etcd_ports[0]}"}

    def stop(self, timeout_s: float = 60.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def kill(self) -> None:
        """SIGKILL to every Milvus process: no shutdown, sessions left behind in etcd."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGCONT)  # a frozen one too
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        """Stops every Milvus process without closing a connection (SIGSTOP): a hung server."""
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGCONT)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"milvus-server exited with {self._process.returncode}; "
                                   f"see {self.data_dir / 'wrapper.log'}")
            try:
                client = MilvusClient(self.uri, timeout=2)
                client.list_collections()
                client.close()
                return
            except Exception:  # not up yet, whatever the failure
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"milvus-server not ready after {timeout_s:.0f} s")
