"""ML-DSA-44 (FIPS 204) identities behind one interface, with a native and a pure-Python backend."""

from __future__ import annotations

import functools
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Protocol

from qbfl.errors import InvalidSignature, QbflError

SEED_BYTES = 32
PUBLIC_KEY_BYTES = 1312
SIGNATURE_BYTES = 2420
MAX_CONTEXT_BYTES = 255  # FIPS 204 Alg. 2: ctx is at most 255 bytes
_EXPANDED_CACHE = 64  # expanded dilithium-py key pairs kept in memory


class SignatureBackend(Enum):
    """Which library computes ML-DSA-44; both derive the same key pair from one 32-byte seed."""

    CRYPTOGRAPHY = "cryptography"  # native (OpenSSL/aws-lc), the default: ~0.4 ms sign
    DILITHIUM_PY = "dilithium-py"  # pure Python, ~30 ms sign: a second, independent implementation


BackendName = SignatureBackend | str


class KeyFileError(QbflError):
    """A key seed file is missing, has the wrong size, or can be read by other users."""


class _Backend(Protocol):
    """What one ML-DSA-44 library must offer; signing is hedged (FIPS 204 §3.4) in both."""

    def public_key(self, seed: bytes) -> bytes: ...

    def sign(self, seed: bytes, message: bytes, context: bytes) -> bytes: ...

    def verify(
        self, public_key: bytes, message: bytes, signature: bytes, context: bytes
    ) -> bool: ...


class _CryptographyBackend:
    """`cryptography`'s native ML-DSA; its sign() is hedged (fresh randomness per signature)."""

    def public_key(self, seed: bytes) -> bytes:
        from cryptography.hazmat.primitives import serialization

        key = self._private(seed)
        return key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign(self, seed: bytes, message: bytes, context: bytes) -> bytes:
        return self._private(seed).sign(message, context=context or None)

    def verify(self, public_key: bytes, message: bytes, signature: bytes, context: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature as _CryptoInvalid

        try:
            key = _public_key_object(public_key)
        except ValueError as exc:
            raise InvalidSignature(f"malformed ML-DSA-44 public key: {exc}") from exc
        try:
            key.verify(signature, message, context=context or None)
        except _CryptoInvalid:
            return False
        return True

    @staticmethod
    def _private(seed: bytes):  # type: ignore[no-untyped-def]
        return _private_key_object(seed)


# A node signs and verifies thousands of messages per minute with a few dozen keys: expanding a
# key from its seed (~0.2 ms) or parsing a public key on every call would cost more than hashing
# the message, so the key objects are kept (bounded; the seeds are already in this process).
@functools.lru_cache(maxsize=16)
def _private_key_object(seed: bytes):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric import mldsa

    return mldsa.MLDSA44PrivateKey.from_seed_bytes(seed)


@functools.lru_cache(maxsize=4096)
def _public_key_object(public_key: bytes):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric import mldsa

    return mldsa.MLDSA44PublicKey.from_public_bytes(public_key)


class _DilithiumPyBackend:
    """dilithium-py's ML_DSA_44. Its default sign() is hedged with os.urandom, like cryptography's,
    so both backends behave the same: two signatures of one message differ, both verify."""

    def __init__(self) -> None:
        self._expanded: dict[bytes, tuple[bytes, bytes]] = {}

    def _keys(self, seed: bytes) -> tuple[bytes, bytes]:
        from dilithium_py.ml_dsa import ML_DSA_44

        # key_derive costs ~6 ms in pure Python; a node signs many times with one key
        keys = self._expanded.get(seed)
        if keys is None:
            keys = ML_DSA_44.key_derive(seed)
            if len(self._expanded) >= _EXPANDED_CACHE:
                self._expanded.pop(next(iter(self._expanded)))  # oldest first
            self._expanded[seed] = keys
        return keys

    def public_key(self, seed: bytes) -> bytes:
        return self._keys(seed)[0]

    def sign(self, seed: bytes, message: bytes, context: bytes) -> bytes:
        from dilithium_py.ml_dsa import ML_DSA_44

        return ML_DSA_44.sign(self._keys(seed)[1], message, ctx=context)

    def verify(self, public_key: bytes, message: bytes, signature: bytes, context: bytes) -> bool:
        from dilithium_py.ml_dsa import ML_DSA_44

        try:
            return bool(ML_DSA_44.verify(public_key, message, signature, ctx=context))
        except (ValueError, IndexError) as exc:  # unpacking a malformed signature or key
            raise InvalidSignature(f"malformed ML-DSA-44 input: {exc}") from exc


# Registry by name (STYLE.md rule 5): a config or flag names the backend.
SIGNATURE_BACKENDS: dict[SignatureBackend, Callable[[], _Backend]] = {
    SignatureBackend.CRYPTOGRAPHY: _CryptographyBackend,
    SignatureBackend.DILITHIUM_PY: _DilithiumPyBackend,
}
_instances: dict[SignatureBackend, _Backend] = {}


def resolve_backend(backend: BackendName) -> SignatureBackend:
    """Turn a backend name from a config or flag into the enum; unknown names are a ValueError."""
    if isinstance(backend, SignatureBackend):
        return backend
    try:
        return SignatureBackend(backend)
    except ValueError:
        names = ", ".join(b.value for b in SignatureBackend)
        raise ValueError(f"unknown signature backend {backend!r}; choose one of: {names}") from None


def _backend(backend: BackendName) -> _Backend:
    which = resolve_backend(backend)
    impl = _instances.get(which)
    if impl is None:
        impl = SIGNATURE_BACKENDS[which]()
        _instances[which] = impl
    return impl


def _check_context(context: bytes) -> None:
    if len(context) > MAX_CONTEXT_BYTES:
        raise ValueError(f"context is {len(context)} bytes; FIPS 204 allows at most 255")


@dataclass(frozen=True)
class SigningKey:
    """A node's ML-DSA-44 identity, held as its 32-byte FIPS 204 seed (ξ)."""

    seed: bytes = field(repr=False)
    backend: SignatureBackend = SignatureBackend.CRYPTOGRAPHY

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != SEED_BYTES:
            n = len(self.seed) if isinstance(self.seed, bytes | bytearray) else "non-bytes"
            raise ValueError(f"an ML-DSA-44 seed is {SEED_BYTES} bytes, got {n}")

    @classmethod
    def from_seed(cls, seed: bytes, backend: BackendName = "cryptography") -> SigningKey:
        return cls(bytes(seed), resolve_backend(backend))

    @classmethod
    def generate(
        cls,
        rng: Callable[[int], bytes] = secrets.token_bytes,
        backend: BackendName = "cryptography",
    ) -> SigningKey:
        """A fresh key from `rng(nbytes)`; pass a seeded source in tests, `secrets` at the edge."""
        return cls.from_seed(rng(SEED_BYTES), backend)

    @property
    def public_key(self) -> bytes:
        return _backend(self.backend).public_key(self.seed)

    def sign(self, message: bytes, *, context: bytes = b"") -> bytes:
        """A hedged ML-DSA-44 signature (2420 bytes) over `message` under `context`."""
        _check_context(context)
        return _backend(self.backend).sign(self.seed, message, context)


def verify(
    public_key: bytes,
    message: bytes,
    signature: bytes,
    *,
    context: bytes = b"",
    backend: BackendName = "cryptography",
) -> None:
    """Return if `signature` verifies; otherwise raise InvalidSignature saying why."""
    _check_context(context)
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise InvalidSignature(
            f"public key is {len(public_key)} bytes; ML-DSA-44 keys are {PUBLIC_KEY_BYTES}"
        )
    if len(signature) != SIGNATURE_BYTES:
        raise InvalidSignature(
            f"signature is {len(signature)} bytes; ML-DSA-44 signatures are {SIGNATURE_BYTES}"
        )
    if not _backend(backend).verify(public_key, message, signature, context):
        raise InvalidSignature("signature does not verify under this key, message and context")


def is_valid(
    public_key: bytes,
    message: bytes,
    signature: bytes,
    *,
    context: bytes = b"",
    backend: BackendName = "cryptography",
) -> bool:
    """True iff `verify` would return; never raises for a bad signature or key."""
    try:
        verify(public_key, message, signature, context=context, backend=backend)
    except InvalidSignature:
        return False
    return True


def save_seed(path: str | os.PathLike[str], seed: bytes) -> None:
    """Write a seed file atomically with mode 0600: temp file (created 0600) + fsync + os.replace."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"an ML-DSA-44 seed is {SEED_BYTES} bytes, got {len(seed)}")
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    # O_EXCL + mode 0o600 at creation: the secret is never readable by others, not even briefly
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # a umask can only remove bits; this pins the mode exactly
            view = memoryview(seed)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def load_seed(path: str | os.PathLike[str]) -> bytes:
    """Read a seed file; refuse one that others can read or that is not exactly 32 bytes."""
    target = Path(path)
    try:
        fd = os.open(target, os.O_RDONLY)
    except FileNotFoundError:
        raise KeyFileError(f"key file {target} does not exist") from None
    try:
        info = os.fstat(fd)
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"key file {target} has mode {stat.S_IMODE(info.st_mode):o}; "
                f"it must not be accessible to group or others (run: chmod 600 {target})"
            )
        data = os.read(fd, SEED_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) != SEED_BYTES:
        size = f"{len(data)}" if len(data) <= SEED_BYTES else f"more than {SEED_BYTES}"
        raise KeyFileError(f"key file {target} holds {size} bytes; an ML-DSA-44 seed is 32")
    return data
