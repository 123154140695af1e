"""Throw-away certificates and keys for one local cluster, and the kubeconfig that uses them.

Everything is generated fresh for each cluster and lives only in its state directory: a CA, one
serving certificate for 127.0.0.1 and the real node's address (shared by the control plane), an
admin client certificate in `system:masters`, and the ServiceAccount token signing key pair. For a
real node also: the kubelet's serving and client certificates, kube-proxy's client certificate,
and the apiserver's client certificate for calling kubelets.
"""
from __future__ import annotations

import base64
import datetime
import ipaddress
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=30)
# The apiserver's in-cluster name and the first address of the service range (10.96.0.0/16).
SERVING_DNS = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
               "kubernetes.default.svc.cluster.local"]
SERVING_IPS = ["127.0.0.1", "10.96.0.1", "10.245.0.1"]  # loopback, the Service, the real node


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY))


def _issue(ca_key, ca_cert, subject: x509.Name, usage, sans=None):
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _builder(subject, ca_cert.subject, key.public_key())
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def write_pki(pki_dir: Path, node: tuple[str, str] | None = None) -> None:
    """Create ca.crt/key, serving.crt/key, admin.crt/key and sa.key/sa.pub in `pki_dir`; with
    `node` = (name, ip), also the real node's certificates."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("torchyard-local-ca")
    ca_cert = (_builder(ca_name, ca_name, ca_key.public_key())
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    sans = [x509.DNSName(n) for n in SERVING_DNS] + [x509.IPAddress(ipaddress.ip_address(i))
                                                     for i in SERVING_IPS]
    serving = _issue(ca_key, ca_cert, _name("torchyard-local-apiserver"),
                     ExtendedKeyUsageOID.SERVER_AUTH, sans)
    admin = _issue(ca_key, ca_cert, _name("torchyard-admin", "system:masters"),
                   ExtendedKeyUsageOID.CLIENT_AUTH)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        "ca.crt": _cert_pem(ca_cert), "ca.key": _key_pem(ca_key),
        "serving.crt": _cert_pem(serving[1]), "serving.key": _key_pem(serving[0]),
        "admin.crt": _cert_pem(admin[1]), "admin.key": _key_pem(admin[0]),
        "sa.key": _key_pem(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo),
    }
    if node:
        files.update(_node_files(ca_key, ca_cert, *node))
    for name, data in files.items():
        path = pki_dir / name
        path.write_bytes(data)
        path.chmod(0o600)


def _node_files(ca_key, ca_cert, node_name: str, node_ip: str) -> dict[str, bytes]:
    """The kubelet's serving and client certificates (the Node authorizer knows it by its name),
    kube-proxy's client certificate (bound to system:node-proxier by default) and the apiserver's
    client certificate for the kubelet API."""
    issued = {
        "kubelet": _issue(ca_key, ca_cert, _name(node_name), ExtendedKeyUsageOID.SERVER_AUTH,
                          [x509.DNSName(node_name), x509.IPAddress(ipaddress.ip_address(node_ip))]),
        "kubelet-client": _issue(ca_key, ca_cert, _name(f"system:node:{node_name}", "system:nodes"),
                                 ExtendedKeyUsageOID.CLIENT_AUTH),
        "kube-proxy": _issue(ca_key, ca_cert, _name("system:kube-proxy"), ExtendedKeyUsageOID.CLIENT_AUTH),
        "apiserver-kubelet-client": _issue(ca_key, ca_cert,
                                           _name("kube-apiserver-kubelet-client", "system:masters"),
                                           ExtendedKeyUsageOID.CLIENT_AUTH),
    }
    files = {}
    for name, (key, cert) in issued.items():
        files[f"{name}.crt"], files[f"{name}.key"] = _cert_pem(cert), _key_pem(key)
    return files


def issue_loopback_serving(pki_dir: Path, out_dir: Path, common_name: str) -> Path:
    """A serving certificate for 127.0.0.1 and localhost signed by this cluster's CA, written as
    tls.crt/tls.key in `out_dir` (the layout controller-runtime's webhook server reads), for a
    webhook the API server calls on loopback with ca.crt as its caBundle. Returns `out_dir`."""
    ca_key = serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes())
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    key, cert = _issue(ca_key, ca_cert, _name(common_name), ExtendedKeyUsageOID.SERVER_AUTH, sans)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in (("tls.crt", _cert_pem(cert)), ("tls.key", _key_pem(key))):
        (out_dir / name).write_bytes(data)
        (out_dir / name).chmod(0o600)
    return out_dir


def write_admin_kubeconfig(path: Path, pki_dir: Path, server: str, identity: str = "admin") -> None:
    """A kubeconfig with the certificates embedded, so it can be copied anywhere; `identity` names
    the client certificate (admin, kubelet-client, kube-proxy)."""
    def b64(name: str) -> str:
        return base64.b64encode((pki_dir / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "torchyard-local",
        "clusters": [{"name": "torchyard-local",
                      "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")}}],
        "users": [{"name": f"torchyard-{identity}",
                   "user": {"client-certificate-data": b64(f"{identity}.crt"),
                            "client-key-data": b64(f"{identity}.key")}}],
        "contexts": [{"name": "torchyard-local",
                      "context": {"cluster": "torchyard-local", "user": f"torchyard-{identity}"}}],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
