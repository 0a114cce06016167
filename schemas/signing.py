"""Ed25519 signatures over edge models and rollouts: what is signed, how keys are made, stored and checked.

The signature covers the model's SHA-256 and its metadata (name, version, device class, format), never
the transport: a record copied to another topic or re-encoded still verifies, and a model relabelled for
another device class or version does not. Rollout records (which version a class runs) are signed with the
same key under another prefix, over the fields that decide what a device runs and their ``sequence``, so a
device can refuse a forged record and an old one replayed. ``cryptography`` is imported only when a key is
used, so the agent's base install does not need it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

SIGNED_FIELDS = ("name", "version", "device_class", "format", "sha256")
ROLLOUT_SIGNED_FIELDS = (
    "sequence", "rollout_id", "device_class", "state", "version", "previous_version", "canary_devices", "reason",
)
_DOMAIN = b"eddyline-edge-model/v1\n"
_ROLLOUT_DOMAIN = b"eddyline-edge-rollout/v1\n"


class SignatureError(ValueError):
    """A model whose bytes, metadata or signature do not check out."""


def signed_message(record: dict[str, Any]) -> bytes:
    """The bytes a model's signature covers: a fixed prefix and the signed fields as canonical JSON.

    Parameters
    ----------
    record
        An ``edge_model`` record (at least the ``SIGNED_FIELDS``).

    Examples
    --------
    >>> from schemas.signing import signed_message
    >>> signed_message({"name": "anomaly", "version": "2", "device_class": "rpi4", "format": "onnx", "sha256": "ab"})
    b'eddyline-edge-model/v1\\n{"device_class":"rpi4","format":"onnx","name":"anomaly","sha256":"ab","version":"2"}'
    """
    fields = {k: record[k] for k in SIGNED_FIELDS}
    return _DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def rollout_message(record: dict[str, Any]) -> bytes:
    """The bytes a rollout record's signature covers: its own prefix (a model's signature never passes for one)
    and the ``ROLLOUT_SIGNED_FIELDS`` as canonical JSON.

    Parameters
    ----------
    record
        An ``edge_rollout`` record (v2: with ``sequence``).

    Examples
    --------
    >>> from schemas.signing import rollout_message
    >>> rollout_message({"sequence": 7, "rollout_id": "r", "device_class": "rpi4", "state": "promoted",
    ...                  "version": "2", "previous_version": "1", "canary_devices": [], "reason": None})[:24]
    b'eddyline-edge-rollout/v1'
    """
    fields = {k: record[k] for k in ROLLOUT_SIGNED_FIELDS}
    return _ROLLOUT_DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def digest(model: bytes) -> str:
    return hashlib.sha256(model).hexdigest()


def key_id(public_raw: bytes) -> str:
    """A short name for a public key: the first 16 hex characters of the SHA-256 of its 32 raw bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def generate_keypair(private_path: Path, public_path: Path) -> str:
    """Write a new Ed25519 key pair as PEM files (the private one readable by its owner only); returns its key id.

    Parameters
    ----------
    private_path
        Where the private key goes; an existing file is refused rather than overwritten.
    public_path
        Where the public key goes: this is what agents get in ``[edge.models] public_key``.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        public_pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        for path, pem, mode in ((private_path, private_pem, 0o600), (public_path, public_pem, 0o644)):
            _create(path, pem, mode)
            written.append(path)
    except BaseException:
        for path in written:  # half a pair would be refused as existing ever after
            path.unlink()
        raise
    return key_id(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def _create(path: Path, data: bytes, mode: int) -> None:
    """Write a new file: one already there, or a link (even to nothing), is refused in the same step that creates it,
    so that no key goes through a link planted in a shared folder or over a file made since anyone looked."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        raise FileExistsError(f"{path} exists; move it away or choose another path (keys are never "
                              "overwritten)") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def sign_model(record: dict[str, Any], private_pem: bytes) -> dict[str, Any]:
    """``record`` with ``sha256``, ``key_id`` and ``signature`` filled from its ``model`` bytes.

    Parameters
    ----------
    record
        An ``edge_model`` record without its digest and signature.
    private_pem
        The PEM private key from ``generate_keypair``.
    """
    key, kid = _private_key(private_pem)
    out = {**record, "sha256": digest(record["model"]), "key_id": kid}
    out["signature"] = key.sign(signed_message(out))
    return out


def sign_rollout(record: dict[str, Any], private_pem: bytes) -> dict[str, Any]:
    """``record`` with ``key_id`` and ``signature`` over ``rollout_message``: agents act on no other rollout.

    Parameters
    ----------
    record
        An ``edge_rollout`` record with its ``sequence`` set (higher than any record of its class before it).
    private_pem
        The PEM private key that signs the class's models.
    """
    key, kid = _private_key(private_pem)
    return {**record, "key_id": kid, "signature": key.sign(rollout_message(record))}


def _private_key(private_pem: bytes) -> tuple[Any, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("the signing key is not an Ed25519 key; make one with `eddyline edge keygen`")
    return key, key_id(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


class Verifier:
    """Checks models against one public key.

    Parameters
    ----------
    public_key
        A PEM public key (its text or bytes), or the 32 raw bytes base64-encoded.
    """

    def __init__(self, public_key: str | bytes) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        data = public_key.encode() if isinstance(public_key, str) else public_key
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                key = serialization.load_pem_public_key(data)
            else:
                key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data, validate=True))
        except ValueError as exc:
            raise SignatureError(f"cannot read the public key ({exc}); give the PEM from `eddyline edge keygen`") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SignatureError("the public key is not an Ed25519 key; give the PEM from `eddyline edge keygen`")
        self._key = key
        self.key_id = key_id(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    @classmethod
    def for_signing_key(cls, private_pem: bytes) -> Verifier:
        """The verifier of the key that signs: the rollout controller trusts only what it signed itself.

        Parameters
        ----------
        private_pem
            The PEM private key from ``generate_keypair``.
        """
        from cryptography.hazmat.primitives import serialization

        key, _ = _private_key(private_pem)
        return cls(base64.b64encode(key.public_key().public_bytes(serialization.Encoding.Raw,
                                                                  serialization.PublicFormat.Raw)))

    def verify(self, record: dict[str, Any]) -> None:
        """Raise ``SignatureError`` saying what is wrong unless the model's bytes, digest and signature agree."""
        from cryptography.exceptions import InvalidSignature

        if digest(record["model"]) != record["sha256"]:
            raise SignatureError(f"model {record['version']}: bytes do not match their sha256 (corrupted or altered)")
        if record["key_id"] != self.key_id:
            raise SignatureError(
                f"model {record['version']}: signed with key {record['key_id']}, this device trusts {self.key_id}"
            )
        try:
            self._key.verify(record["signature"], signed_message(record))
        except InvalidSignature:
            raise SignatureError(f"model {record['version']}: bad signature") from None

    def verify_rollout(self, record: dict[str, Any]) -> None:
        """Raise ``SignatureError`` unless this key signed the rollout record's fields as they are.

        Parameters
        ----------
        record
            An ``edge_rollout`` record; one written before rollouts were signed has no signature and is refused.
        """
        from cryptography.exceptions import InvalidSignature

        what = f"rollout {record['rollout_id']} ({record['state']} {record['version']})"
        if record.get("signature") is None:
            raise SignatureError(f"{what}: not signed")
        if record["key_id"] != self.key_id:
            raise SignatureError(f"{what}: signed with key {record['key_id']}, this device trusts {self.key_id}")
        try:
            self._key.verify(record["signature"], rollout_message(record))
        except InvalidSignature:
            raise SignatureError(f"{what}: bad signature") from None
