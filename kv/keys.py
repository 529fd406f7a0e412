"""Keys derived from the cluster secret (DESIGN.md §2 Security: nodes authenticate each other
with keys derived from the secret; the secret itself never crosses the network), and the
certificates of a cluster's private CA (kv/tls.py uses them).

The one importer of `cryptography` in the runtime packages (tests/unit/test_layering.py).
Each purpose gets its own HKDF `info` label, so a key leaked from one use says nothing
about another's; a new purpose or a new derivation is a new label, never a changed one.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

INTERNODE_AUTH = b"kv internode auth v1"
RAFT_AUTH = b"kv raft auth v1"
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


def raft_key(secret: str) -> bytes:
    """The key of the Raft port's handshake proofs and frame MACs
    (raft_groups/syncobj_adapter/link_codec.py)."""
    return derive(secret, RAFT_AUTH)


def context_key(secret: str) -> bytes:
    """The key that binds causal contexts to their key (dynamo_mode/context_seal.py)."""
    return derive(secret, CONTEXT_SEAL)


def cluster_fingerprint(secret: str) -> str:
    """Names the cluster a data directory belongs to (kv/startup.py) without revealing
    anything of the secret."""
    return derive(secret, CLUSTER_FINGERPRINT, 16).hex()


# ---------------------------------------------------------------------- certificates
@dataclass(frozen=True)
class Pem:
    cert: bytes
    key: bytes


def make_ca(name: str = "kv local CA", days: int = 3650) -> Pem:
    """A private certificate authority for one cluster (`ops/cluster up --secure`)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        _builder(subject, subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def make_node_cert(ca: Pem, name: str, hosts: tuple[str, ...], days: int = 825) -> Pem:
    """A node's certificate, signed by `ca`, naming `hosts` (IP addresses or DNS names: what
    peers and clients dial) — good for both ends of a TLS connection (mutual TLS)."""
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key made by make_ca")
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        _builder(subject, ca_cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(_BOTH_ENDS), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


_BOTH_ENDS = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def _builder(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
