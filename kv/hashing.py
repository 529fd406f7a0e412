"""Ring tokens: the only importer of mmh3 (STYLE.md rule 12).

A token is an unsigned 64-bit integer in [0, 2**64): the first half of
MurmurHash3 x64_128 (``mmh3.hash64``) under the fixed seed ``SEED``.
Tokens are persisted implicitly (they decide where data lives), so ``SEED``
and the byte encodings below must never change; tests/unit/test_ring.py
holds recorded vectors that catch any change. Never Python's ``hash()``:
it is salted per process (PYTHONHASHSEED).
"""

from __future__ import annotations

import mmh3

# "kv" in ASCII. Fixed forever: changing it moves every key (DESIGN.md §2).
SEED = 0x6B76

TOKEN_BITS = 64
TOKEN_SPACE = 1 << TOKEN_BITS


def _token_of(data: bytes) -> int:
    first, _second = mmh3.hash64(data, seed=SEED, signed=False)
    return int(first)


def token(keyspace: str, key: str) -> int:
    """Token of ``keyspace + b"\\0" + key`` (UTF-8).

    A keyspace may not contain NUL, which keeps the encoding injective.
    """
    if "\0" in keyspace:
        raise ValueError(f"keyspace must not contain NUL: {keyspace!r}")
    return _token_of(keyspace.encode() + b"\0" + key.encode())


def vnode_token(node_id: str, index: int) -> int:
    """Token of virtual node ``index`` of ``node_id``: hash of ``f"{node_id}#{index}"``."""
    return _token_of(f"{node_id}#{index}".encode())


def rank_token(partition: int, node_id: str) -> int:
    """Rendezvous rank of ``node_id`` for ``partition`` (kv/claim.py's seeded initial order)."""
    return _token_of(f"claim/{partition}/{node_id}".encode())
