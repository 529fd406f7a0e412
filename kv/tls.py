"""TLS contexts from the files a node's config names (docs/security.md "TLS").

One private CA signs every node's certificate (`ops/cluster up --secure` makes them:
kv/keys.py `make_ca`, `make_node_cert`). Between nodes TLS is mutual: each side presents
its certificate and checks the other's against the CA, and a client checks that the
certificate names the address it dialled. API clients present none (they hold a token);
a node's API port asks for no client certificate.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass


@dataclass(frozen=True)
class TlsFiles:
    cert: str  # this node's certificate (PEM), signed by `ca`
    key: str  # its private key (PEM), readable by the node's user only
    ca: str  # the cluster's CA certificate (PEM): the one issuer the node trusts


def server_context(files: TlsFiles, *, peers_only: bool) -> ssl.SSLContext:
    """A listening socket's context; `peers_only`: the client must present a certificate
    signed by the CA (the Raft port), else none is asked for (the API port)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(files.cert, files.key)
    ctx.load_verify_locations(files.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED if peers_only else ssl.CERT_NONE
    return ctx


def client_context(ca: str, files: TlsFiles | None = None) -> ssl.SSLContext:
    """A dialling context that trusts `ca` only and checks the peer's name; with `files`
    it presents this node's certificate (node to node)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if files is not None:
        ctx.load_cert_chain(files.cert, files.key)
    return ctx
