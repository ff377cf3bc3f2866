"""ML-DSA-44 signing: both backends interoperate, reject every tampering, and key files stay private."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import pytest

from qbfl.crypto.signing import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    KeyFileError,
    SignatureBackend,
    SigningKey,
    is_valid,
    load_seed,
    resolve_backend,
    save_seed,
    verify,
)
from qbfl.errors import InvalidSignature

BACKENDS = [b.value for b in SignatureBackend]
SEED = bytes(range(32))
OTHER_SEED = bytes(range(1, 33))
MESSAGE = b"round 7 / view 0 / ids 1,2,5 / digest 00ff"


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


@pytest.fixture(scope="module")
def signatures() -> dict[tuple[str, bytes], bytes]:
    """One signature per (backend, context), made once: dilithium-py signs in ~30 ms."""
    return {
        (b, ctx): SigningKey.from_seed(SEED, b).sign(MESSAGE, context=ctx)
        for b in BACKENDS
        for ctx in (b"", b"qbfl/block")
    }


def test_both_backends_derive_the_same_public_key() -> None:
    keys = {SigningKey.from_seed(SEED, b).public_key for b in BACKENDS}
    assert len(keys) == 1
    assert len(keys.pop()) == PUBLIC_KEY_BYTES


@pytest.mark.parametrize("signer", BACKENDS)
@pytest.mark.parametrize("verifier", BACKENDS)
@pytest.mark.parametrize("context", [b"", b"qbfl/block"])
def test_each_backend_verifies_the_others_signatures(
    signatures: dict[tuple[str, bytes], bytes], signer: str, verifier: str, context: bytes
) -> None:
    sig = signatures[(signer, context)]
    assert len(sig) == SIGNATURE_BYTES
    pk = SigningKey.from_seed(SEED).public_key
    verify(pk, MESSAGE, sig, context=context, backend=verifier)
    assert is_valid(pk, MESSAGE, sig, context=context, backend=verifier)


@pytest.mark.parametrize("verifier", BACKENDS)
def test_tampering_is_rejected(signatures: dict[tuple[str, bytes], bytes], verifier: str) -> None:
    pk = SigningKey.from_seed(SEED).public_key
    sig = signatures[("cryptography", b"qbfl/block")]
    ctx = b"qbfl/block"
    rng = random.Random(1234)
    cases = {
        "message bit": (pk, _flip(MESSAGE, rng.randrange(len(MESSAGE))), sig, ctx),
        "signature bit (challenge)": (pk, MESSAGE, _flip(sig, 3), ctx),
        "signature bit (response)": (pk, MESSAGE, _flip(sig, rng.randrange(32, 2300)), ctx),
        "public key bit": (_flip(pk, rng.randrange(PUBLIC_KEY_BYTES)), MESSAGE, sig, ctx),
        "wrong key": (SigningKey.from_seed(OTHER_SEED).public_key, MESSAGE, sig, ctx),
        "wrong context": (pk, MESSAGE, sig, b"qbfl/vote"),
        "missing context": (pk, MESSAGE, sig, b""),
    }
    for name, (key, msg, s, c) in cases.items():
        with pytest.raises(InvalidSignature, match="does not verify|malformed"):
            verify(key, msg, s, context=c, backend=verifier)
        assert not is_valid(key, msg, s, context=c, backend=verifier), name


@pytest.mark.parametrize("verifier", BACKENDS)
def test_wrong_lengths_are_rejected_with_a_reason(
    signatures: dict[tuple[str, bytes], bytes], verifier: str
) -> None:
    pk = SigningKey.from_seed(SEED).public_key
    sig = signatures[("cryptography", b"")]
    with pytest.raises(InvalidSignature, match="signature is 2419 bytes"):
        verify(pk, MESSAGE, sig[:-1], backend=verifier)
    with pytest.raises(InvalidSignature, match="public key is 1313 bytes"):
        verify(pk + b"\x00", MESSAGE, sig, backend=verifier)
    assert not is_valid(b"", MESSAGE, sig, backend=verifier)


def test_signing_is_hedged_in_both_backends() -> None:
    # FIPS 204 hedged mode: a fresh 32-byte rnd per signature, so repeated signatures differ
    for b in BACKENDS:
        key = SigningKey.from_seed(SEED, b)
        assert key.sign(b"x") != key.sign(b"x")


def test_bad_seed_lengths_and_names_are_value_errors() -> None:
    for n in (0, 31, 33, 64):
        with pytest.raises(ValueError, match="32 bytes"):
            SigningKey.from_seed(b"\x00" * n)
    with pytest.raises(ValueError, match="unknown signature backend 'rsa'"):
        resolve_backend("rsa")
    with pytest.raises(ValueError, match="at most 255"):
        SigningKey.from_seed(SEED).sign(b"m", context=b"c" * 256)


def test_generate_uses_the_passed_random_source() -> None:
    rng = random.Random(7)
    a = SigningKey.generate(rng.randbytes)
    b = SigningKey.generate(random.Random(7).randbytes)
    assert a == b and a.public_key == b.public_key
    assert SigningKey.generate(rng.randbytes) != a
    assert SEED.hex() not in repr(SigningKey.from_seed(SEED))


def test_seed_file_round_trip_is_private(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    old = os.umask(0)  # even with a permissive umask the file must be created 0600
    try:
        save_seed(path, SEED)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_seed(path) == SEED
    save_seed(path, OTHER_SEED)  # atomic replace of an existing key
    assert load_seed(path) == OTHER_SEED
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]  # no temp file left behind


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_load_refuses_group_or_world_readable_files(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    save_seed(path, SEED)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_seed(path)


def test_load_refuses_wrong_sizes_and_missing_files(tmp_path: Path) -> None:
    for size in (31, 33):
        path = tmp_path / f"k{size}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"\x01" * size)
        os.close(fd)
        with pytest.raises(KeyFileError, match="bytes; an ML-DSA-44 seed is 32"):
            load_seed(path)
    with pytest.raises(KeyFileError, match="does not exist"):
        load_seed(tmp_path / "absent.key")
    with pytest.raises(ValueError, match="32 bytes"):
        save_seed(tmp_path / "short.key", b"\x00" * 16)
