"""Certificates for the secure local broker, made with Python's ``cryptography``.

Why ``cryptography`` rather than the JDK's ``keytool``: one in-process call
writes every file in a few milliseconds, straight as PEM, which is what both
sides read (the broker with ``ssl.keystore.type=PEM``, librdkafka with
``ssl.ca.location``). ``keytool`` would take a JVM start per step (CA, key
pair, signing request, signing, import: about five, a second each) and
writes JKS/PKCS12 stores that clients cannot read without an export step.

Files, in the directory given (mode 0600 for keys)::

    ca.pem        the CA certificate: what clients trust (``ssl.ca.location``)
    broker.pem    the broker's PKCS#8 private key, then its certificate and the CA's
                  (the broker's ``ssl.keystore.location``)

The CA's private key is not kept: nothing signs with it after the broker's
certificate. Everything is made again when a file is missing.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from streamkit.errors import LocalKafkaError

CA_FILE = "ca.pem"
BROKER_FILE = "broker.pem"

# Long enough that a data directory kept for months still starts; this CA
# is trusted by nothing but the clients pointed at its file.
_VALID_DAYS = 825


@dataclass(frozen=True)
class TlsFiles:
    """Where the broker's key store and the clients' CA file are."""

    ca: Path
    broker: Path


def ensure_certificates(directory: Path) -> TlsFiles:
    """Return the certificates in ``directory``, generating them when any file is missing.

    Raises:
        LocalKafkaError: ``cryptography`` is not installed.

    """
    files = TlsFiles(ca=directory / CA_FILE, broker=directory / BROKER_FILE)
    if files.ca.is_file() and files.broker.is_file():
        return files
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem, broker_pem = generate(hosts=("localhost",), ips=("127.0.0.1",))
    _write(files.broker, broker_pem, private=True)
    _write(files.ca, ca_pem, private=False)
    return files


def write_ca(path: Path, name: str = "streamkit untrusted CA") -> Path:
    """Write a fresh CA certificate unrelated to any broker (for "unknown CA" tests)."""
    ca_pem, _ = generate(hosts=("localhost",), ips=("127.0.0.1",), ca_name=name)
    _write(path, ca_pem, private=False)
    return path


def generate(
    hosts: tuple[str, ...], ips: tuple[str, ...], ca_name: str = "streamkit local CA"
) -> tuple[bytes, bytes]:
    """Return ``(ca_pem, broker_pem)``: a new CA, and a broker key and chain it signed."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LocalKafkaError(
            "the secure broker generates its certificates with the 'cryptography' package: "
            "pip install 'streamkit[secure]'"
        ) from exc

    now = datetime.datetime.now(datetime.UTC)
    # Backdated a little: a client whose clock lags the machine's by
    # seconds must not see a certificate from the future.
    not_before = now - datetime.timedelta(minutes=5)
    not_after = now + datetime.timedelta(days=_VALID_DAYS)
    # P-256: generated in microseconds (RSA 2048 takes tens of ms), and read
    # by both Java's PEM key store and OpenSSL.
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # librdkafka checks the host name against the SAN (the CN is ignored
        # by modern verifiers), and the bootstrap is an IP address.
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # Server for clients; client too, since the broker also connects to
        # its own listener (inter-broker) with this certificate store.
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = ca_cert.public_bytes(pem)
    # Kafka's PEM key store reads PKCS#8 only; unencrypted, so no key
    # password is needed in server.properties.
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca_pem, key_pem + cert.public_bytes(pem) + ca_pem


def _write(path: Path, data: bytes, *, private: bool) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)
