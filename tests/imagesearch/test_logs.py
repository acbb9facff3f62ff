"""Structured logs: one JSON object per line, with `extra` fields and exceptions."""

from __future__ import annotations

import json
import logging

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
