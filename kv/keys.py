"""Keys derived from the cluster secret (DESIGN.md §2 Security: nodes authenticate each other
with keys derived from the secret; the secret itself never crosses the network).

The one importer of `cryptography` in the runtime packages (tests/unit/test_layering.py).
Each purpose gets its own HKDF `info` label, so a key leaked from one use says nothing
about another's; a new purpose or a new derivation is a new label, never a changed one.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

INTERNODE_AUTH = b"kv internode auth v1"
CONTEXT_SEAL = b"kv context seal v1"
CLUSTER_FINGERPRINT = b"kv cluster fingerprint v1"


def derive(secret: str, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) of the secret, no salt (the secret is already high-entropy
    and cluster-wide; the label separates uses)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(
        secret.encode("utf-8")
    )


def internode_key(secret: str) -> bytes:
    """The key of the internode handshake's HMAC proofs (kv/wire.py)."""
    return derive(secret, INTERNODE_AUTH)


def context_key(secret: str) -> bytes:
    """The key that binds causal contexts to their key (dynamo_mode/context_seal.py)."""
    return derive(secret, CONTEXT_SEAL)


def cluster_fingerprint(secret: str) -> str:
    """Names the cluster a data directory belongs to (kv/startup.py) without revealing
    anything of the secret."""
    return derive(secret, CLUSTER_FINGERPRINT, 16).hex()
