"""Typed QBFL errors → gRPC status codes, with the error's own message for the caller."""

from __future__ import annotations

import grpc

from qbfl.consensus.envelope import UnknownSender
from qbfl.consensus.wire import InvalidMessage
from qbfl.errors import (
    ForkDetected,
    InvalidSignature,
    InvalidUpdate,
    KeyPoolExhausted,
    QbflError,
    StaleRound,
)
from qbfl.ledger.chain import InvalidBlock
from qbfl.ledger.encoding import EncodingError
from qbfl.net.serde import MisaddressedMessage, Unauthenticated


class Overloaded(QbflError):
    """The node's inbound queue is full: the caller should back off and retry."""


class NotReady(QbflError):
    """The node has not verified its genesis yet, or is disconnected on purpose."""


# Most specific first: the first matching type decides.
_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (UnknownSender, grpc.StatusCode.UNAUTHENTICATED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (MisaddressedMessage, grpc.StatusCode.PERMISSION_DENIED),
    (NotReady, grpc.StatusCode.UNAVAILABLE),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StaleRound, grpc.StatusCode.FAILED_PRECONDITION),
    (ForkDetected, grpc.StatusCode.ABORTED),
    (EncodingError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidUpdate, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidMessage, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidBlock, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidSignature, grpc.StatusCode.INVALID_ARGUMENT),
    (KeyPoolExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (QbflError, grpc.StatusCode.FAILED_PRECONDITION),
)


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status a rejected message gets; INTERNAL for anything that is not a QBFL error."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


# A signature that fails on the envelope means we cannot tell who sent it: UNAUTHENTICATED. The
# same error raised later by the core (a client's submission signature) is a bad argument.
AUTH_CODE = grpc.StatusCode.UNAUTHENTICATED
