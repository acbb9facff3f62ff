"""The search service with Milvus Lite in a child process of its own (`milvus-lite server`),
for `python -m bench.soak --lite-child`: measures what moving Lite out of the service's
process would buy, without changing the service.

pymilvus opens a Lite file through milvus_lite's server manager, which runs Lite's gRPC
server as threads of the calling process. Here the manager starts `python -m milvus_lite
server` on a free loopback port instead and hands pymilvus that address; everything else
(the service's Lite layout, flusher, serial writes) is as in production, as the URI is still
the file's path. The child's pid goes to <data dir>.pid, for the soak's RSS column.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any

import milvus_lite.server_manager as server_manager

_children: list[subprocess.Popen[bytes]] = []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_and_get_uri(path: str, args: Any = None) -> str:
    data_dir, port = os.path.abspath(path), _free_port()
    child = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir",
                              data_dir, "--host", "127.0.0.1", "--port", str(port)],
                             stdout=subprocess.DEVNULL)
    _children.append(child)
    with open(f"{data_dir}.pid", "w") as out:
        out.write(str(child.pid))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"milvus-lite server for {data_dir} did not start")


def main() -> None:
    server_manager.server_manager_instance.start_and_get_uri = (  # type: ignore[method-assign]
        start_and_get_uri)
    from search_service.server import main as search_main
    try:
        search_main()
    finally:
        for child in _children:
            child.terminate()
            child.wait(30)


if __name__ == "__main__":
    main()
