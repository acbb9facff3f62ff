"""What a token's scopes let a call touch: the one place the search service checks them.

Every RPC of the servicer declares, with `@requires`, the level it needs on the collection it
names (read: look; write: add and delete images; admin: create and delete collections), and
the check runs before anything else - a caller learns nothing about a collection it may not
read, not even whether it exists. ListCollections shows only what the token may read.
IngestImages checks every message's collection. With authentication off, everything is
allowed. tests/imagesearch/test_scopes.py holds every RPC to a declaration.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from imagesearch.errors import PermissionDenied
from imagesearch.serving.auth import Level, current_grant

F = TypeVar("F", bound=Callable[..., Any])
_VERBS = {Level.READ: "read", Level.WRITE: "write to", Level.ADMIN: "manage"}


def require(level: Level, collection: str) -> None:
    grant = current_grant()
    if grant is not None and not grant.allows(level, collection):
        raise PermissionDenied(f"this token may not {_VERBS[level]} collection "
                               f"{collection[:80]!r}")


def may_read(collection: str) -> bool:
    grant = current_grant()
    return grant is None or grant.allows(Level.READ, collection)


def requires(level: Level, field: str | None) -> Callable[[F], F]:
    """Declares the level a servicer method needs on the collection named by the request's
    `field`; field None: the method checks each collection it touches itself."""
    def declare(method: F) -> F:
        if field is None:
            method.access = (level, None)  # type: ignore[attr-defined]
            return method

        @functools.wraps(method)
        async def checked(self: Any, request: Any, context: Any) -> Any:
            require(level, getattr(request, field))
            return await method(self, request, context)
        checked.access = (level, field)  # type: ignore[attr-defined]
        return checked  # type: ignore[return-value]
    return declare
