"""Search settings are documented and validated."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from search_service.settings import SearchSettings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_documented_in_the_readme():
    text = README.read_text()
    assert not [name for name in SearchSettings.model_fields
                if f"`SEARCH_{name.upper()}`" not in text]


def test_half_configured_tls_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="embedder_tls_cert_file and embedder_tls_key_file"):
        SearchSettings(embedder_tls_cert_file=tmp_path / "c.pem")


def test_milvus_token_comes_from_a_file_or_the_variable_never_both(tmp_path):
    token = tmp_path / "token"
    token.write_text("root:Milvus\n")
    assert SearchSettings(milvus_token_file=token).milvus_credentials() == "root:Milvus"
    assert SearchSettings(milvus_token="k").milvus_credentials() == "k"
    assert SearchSettings().milvus_credentials() == ""
    with pytest.raises(ValidationError, match="milvus_token or milvus_token_file, not both"):
        SearchSettings(milvus_token="k", milvus_token_file=token)


def test_a_milvus_ca_is_refused_unless_the_uri_is_https(tmp_path):
    ca = tmp_path / "ca.crt"
    with pytest.raises(ValidationError, match="milvus_tls_ca_file needs an https:// milvus_uri"):
        SearchSettings(milvus_uri="http://milvus:19530", milvus_tls_ca_file=ca)
    assert SearchSettings(milvus_uri="https://milvus:19530",
                          milvus_tls_ca_file=ca).milvus_tls_ca_file == ca


def test_the_image_store_sits_beside_lite_and_is_chosen_for_a_server(tmp_path):
    assert SearchSettings(milvus_uri="data/x.db").image_location() == Path("data/x.db.images")
    assert SearchSettings(milvus_uri="http://milvus:19530").image_location() is None
    assert SearchSettings(milvus_uri="http://milvus:19530",
                          image_store=str(tmp_path)).image_location() == tmp_path
    assert SearchSettings(milvus_uri="http://milvus:19530",
                          image_store="s3://images/prod").image_location() == "s3://images/prod"
    assert SearchSettings(image_store="off").image_location() is None


@pytest.mark.parametrize("uri", ["s3://", "s3:///prefix", "s3://a", "s3://Upper-Case",
                                 "s3://bucket_name", "s3:/bucket", "S3://bucket"])
def test_an_object_store_uri_that_names_no_bucket_fails_at_start_up(uri):
    with pytest.raises(ValidationError, match=r"s3://bucket\[/prefix\]"):
        SearchSettings(image_store=uri)
