"""Error types shared across QBFL; each names what went wrong so the edge can tell a person what to do."""


class QbflError(Exception):
    """Base class of every error QBFL raises on purpose."""


class ConfigError(QbflError, ValueError):
    """A setting or flag has a value that cannot work."""


class DatasetNotFound(QbflError, FileNotFoundError):
    """The raw dataset files are not installed; the message names the command that fetches them."""


class InvalidSignature(QbflError):
    """A signature does not verify under the claimed key, message and context."""


class InvalidUpdate(QbflError, ValueError):
    """A model update has the wrong shape or size, or contains NaN/Inf."""


class StaleRound(QbflError):
    """A message belongs to a round or view that is already over."""


class ForkDetected(QbflError):
    """Two different valid blocks were seen for one height."""


class ChainCorrupted(QbflError):
    """A stored block does not verify; the message names the height.

    `height` is the first height that cannot be trusted (blocks below it verified), or None
    when the damage is not in any block (an unreadable file header or schema).
    """

    def __init__(self, message: str, *, height: int | None = None) -> None:
        super().__init__(message)
        self.height = height


class KeyPoolExhausted(QbflError):
    """A pairwise QKD key pool holds fewer bits than a protocol step needs."""


class QkdAborted(QbflError):
    """A QKD session aborted, typically because the estimated QBER exceeded the threshold."""


class ChainStalled(QbflError):
    """Honest nodes made no progress for the stated time (CometBFT's e2e runner reports the same)."""
