"""Settings: validated at start-up, and every one documented in the README."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from embedder_service.settings import EmbedderSettings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_documented_in_the_readme():
    text = README.read_text()
    missing = [f"EMBEDDER_{name.upper()}" for name in EmbedderSettings.model_fields
               if f"`EMBEDDER_{name.upper()}`" not in text]
    assert not missing


def test_settings_come_from_prefixed_environment_variables(monkeypatch):
    monkeypatch.setenv("EMBEDDER_MAX_BATCH_SIZE", "64")
    monkeypatch.setenv("EMBEDDER_PROVIDERS", '["CPUExecutionProvider"]')
    settings = EmbedderSettings()
    assert settings.max_batch_size == 64
    assert settings.providers == ["CPUExecutionProvider"]


def test_tls_key_without_certificate_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="set both tls_cert_file and tls_key_file"):
        EmbedderSettings(tls_key_file=tmp_path / "key.pem")


def test_nonsense_values_are_refused():
    with pytest.raises(ValidationError, match="max_batch_size"):
        EmbedderSettings(max_batch_size=0)


@pytest.mark.parametrize(("spinning", "entry"), [(False, "0"), (True, "1")])
def test_onnx_runtime_threads_spin_only_when_asked(spinning, entry):
    """Spinning threads hold the cores image decoding needs (off by default)."""
    from embedder_service.runtime import RuntimeOptions, _session_options

    options = _session_options(RuntimeOptions(intra_op_spinning=spinning))
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == entry
    assert EmbedderSettings().intra_op_spinning is False


@pytest.mark.parametrize("value", ['["/models/a", "/models/b"]', "/models/a,/models/b",
                                   " /models/a , /models/b, "])
def test_extra_bundles_are_a_json_list_or_comma_separated(monkeypatch, value):
    monkeypatch.setenv("EMBEDDER_EXTRA_BUNDLES", value)
    assert EmbedderSettings().extra_bundles == [Path("/models/a"), Path("/models/b")]


def test_no_extra_bundles_by_default(monkeypatch):
    monkeypatch.setenv("EMBEDDER_EXTRA_BUNDLES", "")
    assert EmbedderSettings().extra_bundles == []
    monkeypatch.delenv("EMBEDDER_EXTRA_BUNDLES")
    assert EmbedderSettings().extra_bundles == []
