"""A throwaway CA with a server and a client certificate, made by openssl, for TLS tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_certs(directory: Path) -> dict[str, Path]:
    """ca.pem, server.pem/.key (localhost, 127.0.0.1), client.pem/.key, valid for a day."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")
    for name, cn in (("server", "localhost"), ("client", "client")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout",
            f"{name}.key", "-out", f"{name}.csr")
        (directory / f"{name}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    return {p.name: p for p in directory.iterdir()}
