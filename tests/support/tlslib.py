"""Certificates for the TLS tests, made with the cryptography library: a CA and the server certificates it signs."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(names):
    entries = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _write_pem(path, data):
    with open(path, "wb") as fh:
        fh.write(data)
    return path


class CA:
    """A self-signed CA in folder/<label>-ca.crt that issues server certificates into the same folder."""

    def __init__(self, folder, label="test"):
        self.folder = str(folder)
        self.label = label
        os.makedirs(self.folder, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(_name("outputguard %s CA" % label))
                     .issuer_name(_name("outputguard %s CA" % label)).public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.path = _write_pem(os.path.join(self.folder, "%s-ca.crt" % label),
                               self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, names, stem, days=(-1, 30), client=False):
        """Write stem.crt and stem.key, a server certificate (client=True: a client one) for names valid from
        days[0] to days[1] from now; return (cert path, key path, serial number)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        serial = x509.random_serial_number()
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        cert = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(self.cert.subject)
                .public_key(key.public_key()).serial_number(serial)
                .not_valid_before(now + dt.timedelta(days=days[0])).not_valid_after(now + dt.timedelta(days=days[1]))
                .add_extension(_san(names), critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .sign(self.key, hashes.SHA256()))
        base = os.path.join(self.folder, stem)
        cert_path = _write_pem(base + ".crt", cert.public_bytes(serialization.Encoding.PEM))
        key_path = _write_pem(base + ".key", key.private_bytes(serialization.Encoding.PEM,
                                                               serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))
        os.chmod(key_path, 0o600)
        return cert_path, key_path, serial


def replace(src, dest):
    """Put src's bytes at dest atomically (as a deploy tool does): readers see the old file or the new one."""
    with open(src, "rb") as fh:
        data = fh.read()
    tmp = dest + ".new"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, os.stat(dest).st_mode & 0o777 if os.path.exists(dest) else 0o600)
    os.rename(tmp, dest)
