"""Throw-away TLS certificates for the certificate scenarios.

Made with the ``cryptography`` package (present wherever ``keyring`` is
installed on Linux, through SecretStorage). Without it, the ``openssl``
command line makes the self-signed one; OpenSSL 3.0's command line cannot
back-date a certificate, so an expired one then needs ``cryptography``.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Certificate:
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


def make_certificate(directory: Path, *, expired: bool = False, host: str = "127.0.0.1",
                     name: str = "server") -> Certificate:
    """A self-signed certificate for ``host``; ``expired`` makes it valid
    only in the past (not after yesterday)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    try:
        _with_cryptography(cert_file, key_file, expired, host)
    except ImportError:
        if expired:
            raise RuntimeError("an expired certificate needs the 'cryptography' package") from None
        _with_openssl(cert_file, key_file, host)
    key_file.chmod(0o600)
    return Certificate(cert_file, key_file)


def _with_cryptography(cert_file: Path, key_file: Path, expired: bool, host: str) -> None:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = _dt.datetime.now(_dt.timezone.utc)
    start, end = (now - _dt.timedelta(days=30), now - _dt.timedelta(days=1)) if expired \
        else (now - _dt.timedelta(minutes=5), now + _dt.timedelta(days=2))
    try:
        alt = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


def _with_openssl(cert_file: Path, key_file: Path, host: str) -> None:
    if not shutil.which("openssl"):
        raise RuntimeError("making a certificate needs 'cryptography' or the openssl command")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={host}", "-addext", f"subjectAltName=IP:{host}",
                    "-keyout", str(key_file), "-out", str(cert_file)],
                   check=True, capture_output=True)
