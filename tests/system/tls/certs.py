"""Certificates made by the test: a CA, a server certificate for 127.0.0.1 and localhost, a
client certificate, a server certificate for another host, and a second CA (the "wrong CA")
with a client certificate of its own. EC P-256 keys: all of it takes a few milliseconds."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA that signed the server and client certificates
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_ca: Path  # a CA that signed nothing here
    wrong_client_cert: Path  # a client certificate signed by the wrong CA
    wrong_client_key: Path
    misnamed_server_cert: Path  # signed by the CA, but for another host than 127.0.0.1
    misnamed_server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> _Key:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: _Key, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _builder(subject: str, issuer: x509.Name, key: _Key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)))


def _ca(common_name: str) -> tuple[x509.Certificate, _Key]:
    key = _key()
    cert = (_builder(common_name, _name(common_name), key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(common_name: str, ca: x509.Certificate, ca_key: _Key, *, server: bool,
          hosts: tuple[str, ...] = ()) -> tuple[x509.Certificate, _Key]:
    key = _key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (_builder(common_name, ca.subject, key)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_certs(directory: Path, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Certs:
    """Write the certificates and keys of `Certs` into `directory`, as PEM files; the server
    certificate is for `hosts`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca("reference test CA")
    wrong, wrong_key = _ca("reference wrong CA")
    server, server_key = _leaf("reference test server", ca, ca_key, server=True, hosts=hosts)
    client, client_key = _leaf("reference test client", ca, ca_key, server=False)
    stranger, stranger_key = _leaf("reference stranger", wrong, wrong_key, server=False)
    misnamed, misnamed_key = _leaf("reference other server", ca, ca_key, server=True,
                                   hosts=("other.invalid",))
    return Certs(
        ca=_write_cert(ca, directory / "ca.pem"),
        server_cert=_write_cert(server, directory / "server.pem"),
        server_key=_write_key(server_key, directory / "server.key"),
        client_cert=_write_cert(client, directory / "client.pem"),
        client_key=_write_key(client_key, directory / "client.key"),
        wrong_ca=_write_cert(wrong, directory / "wrong-ca.pem"),
        wrong_client_cert=_write_cert(stranger, directory / "wrong-client.pem"),
        wrong_client_key=_write_key(stranger_key, directory / "wrong-client.key"),
        misnamed_server_cert=_write_cert(misnamed, directory / "misnamed-server.pem"),
        misnamed_server_key=_write_key(misnamed_key, directory / "misnamed-server.key"),
    )
