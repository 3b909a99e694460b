"""RPMP: a remote persistent-memory shuffle service for Apache Spark.

`rpmp.Client` and its errors are exported here (rpmp.client has an example). They are imported on first
use, so that `import rpmp.server...` (the node) does not pay for the client's pyarrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # rpmp.client
    "Client", "Placement", "Segment", "RpmpError", "BadRequestError", "ChecksumMismatchError", "ConflictError",
    "CorruptError", "IncompleteError", "NotFoundError", "PoolFullError", "QuotaExceededError", "UnavailableError",
    "AuthFailedError", "ForbiddenError",
    # rpmp.protocol
    "ProtocolError", "ErrorCode", "Node", "NodeState",
]
_FROM_PROTOCOL = frozenset({"ProtocolError", "ErrorCode", "Node", "NodeState"})

if TYPE_CHECKING:
    from rpmp.client import (
        AuthFailedError,
        BadRequestError,
        ChecksumMismatchError,
        Client,
        ConflictError,
        CorruptError,
        ForbiddenError,
        IncompleteError,
        NotFoundError,
        Placement,
        PoolFullError,
        QuotaExceededError,
        RpmpError,
        Segment,
        UnavailableError,
    )
    from rpmp.protocol import ErrorCode, Node, NodeState, ProtocolError


def __getattr__(name: str) -> Any:
    """An exported name, imported from its module on first use (then an ordinary attribute)."""
    if name not in __all__ or name == "__version__":
        raise AttributeError(f"module 'rpmp' has no attribute {name!r}")
    module = importlib.import_module("rpmp.protocol" if name in _FROM_PROTOCOL else "rpmp.client")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
