"""The search service reaches a Milvus server over TLS, trusting the CA it is given."""

from __future__ import annotations

import pytest

from search_service import server
from search_service.adapters.milvus import vector_store
from search_service.settings import SearchSettings


class Connected(Exception):
    """Stands in for the network: raised where pymilvus would connect."""


def test_an_https_milvus_is_verified_against_the_configured_ca(monkeypatch, tmp_path):
    seen: dict[str, object] = {}

    def milvus_client(uri: str, **options: object) -> None:
        seen.update(options, uri=uri)
        raise Connected

    monkeypatch.setattr(vector_store, "MilvusClient", milvus_client)
    ca, token = tmp_path / "ca.crt", tmp_path / "token"
    token.write_text("imagesearch:secret\n")
    settings = SearchSettings(milvus_uri="https://milvus:19530", milvus_tls_ca_file=ca,
                              milvus_token_file=token)
    with pytest.raises(Connected):
        server.connect_store(settings)
    # pymilvus turns TLS on for https:// itself; server_pem_path is the CA it trusts.
    assert seen == {"uri": "https://milvus:19530", "token": "imagesearch:secret",
                    "server_pem_path": str(ca)}


def test_without_a_ca_the_client_gets_no_tls_option():
    assert vector_store.milvus_tls(None) == {}
