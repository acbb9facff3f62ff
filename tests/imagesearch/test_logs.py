"""Structured logs: one JSON object per line, with `extra` fields and exceptions."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time

from imagesearch.serving.logs import JsonFormatter


def test_json_lines_carry_extra_fields_and_tracebacks():
    formatter = JsonFormatter()
    record = logging.LogRecord("svc", logging.INFO, __file__, 1, "rpc %s", ("done",), None)
    record.method, record.ms = "/x.Y/Z", 1.5
    entry = json.loads(formatter.format(record))
    assert entry["msg"] == "rpc done" and entry["level"] == "info" and entry["logger"] == "svc"
    assert (entry["method"], entry["ms"]) == ("/x.Y/Z", 1.5)
    assert entry["ts"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = logging.LogRecord("svc", logging.ERROR, __file__, 1, "bad", (), sys.exc_info())
    assert "ValueError: boom" in json.loads(formatter.format(failed))["exc"]


async def test_a_first_start_on_a_new_lite_file_logs_nothing_that_reads_as_broken(
        tmp_path, embedder_server):
    """Seen by a newcomer: an ERROR traceback (pymilvus waiting for an index with an RPC Lite
    lacks) and faiss' 'Could not load library' lines on every first start."""
    env = {**os.environ, "SEARCH_MILVUS_URI": str(tmp_path / "new.db"), "SEARCH_PORT": "0",
           "SEARCH_HOST": "127.0.0.1", "SEARCH_LOG_FORMAT": "json",
           "SEARCH_EMBEDDER_TARGET": f"127.0.0.1:{embedder_server.port}"}
    # Off the event loop: the embedder answers on it.
    lines = await asyncio.to_thread(log_until_serving, env)
    assert lines and lines[-1].get("serving") is True, lines
    assert [e for e in lines if e["level"] not in ("info", "debug")] == []
    assert [e for e in lines if e["logger"].startswith("faiss")] == []


def log_until_serving(env: dict[str, str], timeout_s: float = 60) -> list[dict]:
    """The search service's log lines from its start until it reports itself serving."""
    service = subprocess.Popen(
        [sys.executable, "-c", "from search_service.server import main; main()"], env=env,
        stderr=subprocess.PIPE, text=True)
    assert service.stderr is not None
    lines: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        for line in service.stderr:
            lines.append(json.loads(line))
            if lines[-1].get("msg") == "health" and lines[-1].get("serving"):
                break
            assert time.monotonic() < deadline, lines
    finally:
        service.send_signal(signal.SIGINT)
        service.wait(30)
    return lines
