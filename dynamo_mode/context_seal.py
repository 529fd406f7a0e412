"""Causal contexts bound to the key they were issued for (issue 11, item 5).

A context is the clock a client hands back so that its write supersedes what it read
(Dynamo §4.4). Unbound, a context read from one key and sent with a write to another
makes that write supersede versions of the second key the client never saw — acknowledged
writes vanish without a sibling. So every context this store hands out is sealed:
`<context>.<tag>`, where the tag is an HMAC-SHA256 (truncated to 128 bits) over the
keyspace's uid, the key and the context, keyed by a key derived from the cluster secret
(kv/keys.py `context_key`). A context sent with a write must carry the tag for that
keyspace incarnation and key; anything else — another key's context, another keyspace's
(or a deleted and re-created keyspace's), an altered or forged one — is refused with 400.
The empty context "" says nothing and needs no seal. Pure: no I/O.

The base64url alphabet of the context has no ".", so the last "." splits body from tag.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

TAG_BYTES = 16


def seal(key: bytes, uid: int, name: str, context: str) -> str:
    """The context as handed to the client: bound to keyspace `uid` and key `name`."""
    return f"{context}.{_tag(key, uid, name, context)}"


def unseal(key: bytes, uid: int, name: str, token: str) -> str:
    """The context inside `token` if it was sealed for this keyspace and key; ValueError
    otherwise. The tags are compared in constant time."""
    if token == "":
        return ""
    context, dot, tag = token.rpartition(".")
    if not dot:
        raise ValueError("is not a context this store issued (pass the one a GET returned)")
    if not hmac.compare_digest(tag, _tag(key, uid, name, context)):
        raise ValueError("was issued for another key or keyspace, or was altered")
    return context


def _tag(key: bytes, uid: int, name: str, context: str) -> str:
    encoded = name.encode("utf-8")
    message = b"%d:%d:%s%s" % (uid, len(encoded), encoded, context.encode("utf-8"))
    mac = hmac.new(key, message, hashlib.sha256).digest()[:TAG_BYTES]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")
