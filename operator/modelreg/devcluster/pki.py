"""Certificates for the local control plane: one CA, serving and client pairs.

Called by `devcluster.cluster` when a cluster comes up. Everything is written as
PEM files into the cluster's state directory and lives only as long as it does.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=30)
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class ClusterPKI:
    """Every file the components need; paths only, so it serializes as JSON."""

    ca: KeyPair
    apiserver: KeyPair
    etcd: KeyPair
    etcd_client: KeyPair
    admin: KeyPair
    service_account: KeyPair  # cert holds the public key PEM, key the private key
    kubelet_client: KeyPair  # how the API server authenticates to kubelets (logs, exec, port-forward)


def create_pki(directory: Path, *, service_ip: str) -> ClusterPKI:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelreg-devcluster-ca")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca = _write(directory, "ca", ca_cert, ca_key)

    def issue(name: str, cn: str, *, org: str | None = None, server: bool = False) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        usages = (
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            if server
            else [ExtendedKeyUsageOID.CLIENT_AUTH]
        )
        builder = _builder(x509.Name(attrs), ca_name, key.public_key()).add_extension(
            x509.ExtendedKeyUsage(usages), critical=False
        )
        if server:
            builder = builder.add_extension(_server_sans(service_ip), critical=False)
        return _write(directory, name, builder.sign(ca_key, hashes.SHA256()), key)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa = KeyPair(cert=directory / "sa.pub", key=directory / "sa.key")
    sa.cert.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    _write_key(sa.key, sa_key)
    return ClusterPKI(
        ca=ca,
        apiserver=issue("apiserver", "kube-apiserver", server=True),
        etcd=issue("etcd", "etcd", server=True),
        etcd_client=issue("etcd-client", "kube-apiserver-etcd-client"),
        admin=issue("admin", "modelreg-admin", org="system:masters"),
        service_account=sa,
        kubelet_client=issue("kubelet-client", KUBELET_CLIENT_USER),
    )


def issue_node_pair(directory: Path, *, node: str, ip: str) -> tuple[KeyPair, KeyPair]:
    """A real node's client cert (the kubelet's identity towards the API server)
    and serving cert (the kubelet's TLS endpoint), signed by the cluster CA in `directory`."""
    ca_cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)

    def sign(
        name: str, subject: x509.Name, usage: x509.ObjectIdentifier, sans: x509.SubjectAlternativeName | None
    ) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = _builder(subject, ca_cert.subject, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if sans is not None:
            builder = builder.add_extension(sans, critical=False)
        return _write(directory, name, builder.sign(ca_key, hashes.SHA256()), key)

    client_subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}"),
        ]
    )
    serving_sans = x509.SubjectAlternativeName(
        [x509.DNSName(node), x509.DNSName("localhost")]
        + [x509.IPAddress(ipaddress.ip_address(a)) for a in (ip, "127.0.0.1")]
    )
    return (
        sign(f"node-{node}-client", client_subject, ExtendedKeyUsageOID.CLIENT_AUTH, None),
        sign(
            f"node-{node}-serving",
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]),
            ExtendedKeyUsageOID.SERVER_AUTH,
            serving_sans,
        ),
    )


def issue_client_pair(directory: Path, *, name: str, user: str) -> KeyPair:
    """A client cert for `user` (its CN), signed by the cluster CA in `directory`."""
    ca_cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user)])
    cert = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _write(directory, name, cert, key)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: object) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def _server_sans(service_ip: str) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [
        x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "etcd")
    ]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", service_ip)]
    return x509.SubjectAlternativeName(names)


def _write(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> KeyPair:
    pair = KeyPair(cert=directory / f"{name}.crt", key=directory / f"{name}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pair.key, key)
    return pair


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)
