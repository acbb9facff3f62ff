"""The models one server serves: the primary and any extra bundles, found by name or
fingerprint, each loaded (ready) or not yet. No grpc here."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from embedder_service.bundle import Manifest
from embedder_service.core import Embedder
from embedder_service.errors import BundleError, ModelNotFound, ModelNotReady


@dataclass
class ServedModel:
    """One bundle this server serves; `embedder` is set once it has loaded."""

    bundle_dir: Path
    manifest: Manifest
    is_primary: bool
    embedder: Embedder | None = None

    @property
    def name(self) -> str:
        return self.manifest.model_name

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    @property
    def ready(self) -> bool:
        return self.embedder is not None

    def loaded(self) -> Embedder:
        if self.embedder is None:
            what = "the model" if self.is_primary else f"model {self.name!r}"
            raise ModelNotReady(f"{what} is still loading; retry shortly")
        return self.embedder


class ServedModels:
    """Every served model, the primary first. A request's `model` is an exact model name or
    fingerprint; empty means the primary. Empty until the server has read the manifests."""

    def __init__(self) -> None:
        self._models: list[ServedModel] = []

    def serve(self, models: list[ServedModel]) -> None:
        """Sets what is served (the primary first); BundleError on an ambiguous name."""
        _refuse_duplicates(models)
        self._models = models

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models)

    @property
    def embedder(self) -> Embedder | None:
        """The primary's embedder, once loaded."""
        return self._models[0].embedder if self._models else None

    def find(self, model: str) -> ServedModel:
        if not self._models:
            raise ModelNotReady("the model is still loading; retry shortly")
        if not model:
            return self._models[0]
        for served in self._models:
            if model in (served.name, served.fingerprint):
                return served
        listed = ", ".join(f"{m.name} ({m.fingerprint})" for m in self._models)
        raise ModelNotFound(f"model {model!r} is not served here; served models: {listed}")

    def get(self, model: str = "") -> Embedder:
        """The loaded embedder for `model`: ModelNotFound, or ModelNotReady while it loads."""
        return self.find(model).loaded()

    def loaded(self) -> list[Embedder]:
        return [m.embedder for m in self._models if m.embedder is not None]

    def queue_depth(self) -> int:
        return sum(embedder.queue_depth for embedder in self.loaded())

    def longest_model_call_s(self) -> float:
        """The oldest model call running now, over every model (0 when none runs)."""
        return max((e.longest_model_call_s() for e in self.loaded()), default=0.0)


def _refuse_duplicates(models: list[ServedModel]) -> None:
    """A name or fingerprint must pick one model, or requests would be ambiguous."""
    for key in ("name", "fingerprint"):
        seen: dict[str, Path] = {}
        for served in models:
            value = getattr(served, key)
            if value in seen:
                raise BundleError(
                    f"{served.bundle_dir} and {seen[value]} have the same model {key} "
                    f"({value}); each served bundle needs its own name and fingerprint")
            seen[value] = served.bundle_dir
