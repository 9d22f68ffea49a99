"""A throwaway PKI for the TLS and DANE tests, made with the openssl command.

    ca = tlslib.make_ca(tmp_path / "pki")
    mx = ca.issue("mx", ["mx.tern-test"])        # mx.keyfile, mx.certfile, mx.chainfile
    receiver = SmtpReceiver(starttls=(mx.chainfile, mx.keyfile))
    zone = tlslib.tlsa_record("mx.tern-test", 3, 1, 1, mx.tlsa_3_1_1())
    # '_25._tcp.mx.tern-test. 3600 IN TLSA 3 1 1 <hex>'

Keys are EC P-256 (PKCS#8 PEM, unencrypted), certificates SHA-256-signed and valid from now for
a year. The CA has basicConstraints CA:TRUE and keyCertSign; leaves have CA:FALSE,
digitalSignature, extendedKeyUsage serverAuth+clientAuth and the given names as SAN dNSNames
(the first also as CN). File paths are str, ready for a tern configuration.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
DAYS = 365
TIMEOUT = 60.0

_REQ_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[leaf_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = @alt

[alt]
"""


def openssl(*args: str, input: bytes | None = None) -> bytes:
    """Runs the openssl command; returns its stdout, raises RuntimeError (with stderr) on failure."""
    proc = subprocess.run([OPENSSL, *args], input=input, capture_output=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed with status {proc.returncode}:\n"
                           f"{proc.stderr.decode(errors='replace')}")
    return proc.stdout


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "cert"


def _write_config(path: Path, dns_names: list[str]) -> None:
    alt = "".join(f"DNS.{i} = {n}\n" for i, n in enumerate(dns_names, 1))
    path.write_text(_REQ_CONFIG + alt)


def _new_key(path: Path) -> None:
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))
    os.chmod(path, 0o600)


def _subject(cn: str) -> str:
    return "/CN=" + cn.replace("\\", "\\\\").replace("/", "\\/")


class _CertificateFile:
    """TLSA association data of the certificate in `certfile`."""
    certfile: str

    def pem(self) -> str:
        return Path(self.certfile).read_text()

    def der(self) -> bytes:
        """The DER certificate (the data of TLSA selector 0)."""
        return openssl("x509", "-in", self.certfile, "-outform", "DER")

    def spki_der(self) -> bytes:
        """The DER SubjectPublicKeyInfo (the data of TLSA selector 1)."""
        pubkey = openssl("x509", "-in", self.certfile, "-pubkey", "-noout")
        return openssl("pkey", "-pubin", "-outform", "DER", input=pubkey)

    def tlsa_data(self, selector: int, mtype: int) -> str:
        """The hex association data for a TLSA selector (0 cert, 1 SPKI) and matching type
        (0 full, 1 SHA-256, 2 SHA-512)."""
        if selector == 0:
            data = self.der()
        elif selector == 1:
            data = self.spki_der()
        else:
            raise ValueError(f"TLSA selector {selector}")
        if mtype == 0:
            return data.hex()
        if mtype == 1:
            return hashlib.sha256(data).hexdigest()
        if mtype == 2:
            return hashlib.sha512(data).hexdigest()
        raise ValueError(f"TLSA matching type {mtype}")


@dataclass
class Cert(_CertificateFile):
    """A leaf key and certificate; `chainfile` is the leaf followed by its issuer (for a
    self-signed certificate just the leaf)."""
    name: str
    dns_names: list[str]
    certfile: str
    keyfile: str
    chainfile: str

    def tlsa_3_1_1(self) -> str:
        """DANE-EE SPKI SHA-256: hex SHA-256 of the DER SubjectPublicKeyInfo."""
        return self.tlsa_data(1, 1)

    def tlsa_3_0_1(self) -> str:
        """DANE-EE Cert SHA-256: hex SHA-256 of the DER certificate."""
        return self.tlsa_data(0, 1)


@dataclass
class Ca(_CertificateFile):
    """A self-signed CA that issues leaf certificates into its directory."""
    name: str
    dir: str
    certfile: str
    keyfile: str
    issued: list[Cert] = field(default_factory=list)

    def tlsa_2_0_1(self) -> str:
        """DANE-TA Cert SHA-256: hex SHA-256 of the CA certificate's DER."""
        return self.tlsa_data(0, 1)

    def tlsa_2_1_1(self) -> str:
        """DANE-TA SPKI SHA-256: hex SHA-256 of the CA's DER SubjectPublicKeyInfo."""
        return self.tlsa_data(1, 1)

    def issue(self, name: str, dns_names: list[str], days: int = DAYS) -> Cert:
        """A new key and a certificate for `dns_names` (the first is also the CN), signed by this
        CA; files <dir>/<name>.key, .crt and .chain.pem."""
        if not dns_names:
            raise ValueError("a certificate needs at least one DNS name")
        base = Path(self.dir) / _safe(name)
        key, csr, crt, chain, cnf = (Path(f"{base}{s}") for s in (".key", ".csr", ".crt", ".chain.pem", ".cnf"))
        _write_config(cnf, dns_names)
        _new_key(key)
        openssl("req", "-new", "-config", str(cnf), "-key", str(key), "-subj", _subject(dns_names[0]),
                "-out", str(csr))
        openssl("x509", "-req", "-in", str(csr), "-CA", self.certfile, "-CAkey", self.keyfile,
                "-set_serial", str(secrets.randbits(63) | 1), "-days", str(days), "-sha256",
                "-extfile", str(cnf), "-extensions", "leaf_ext", "-out", str(crt))
        chain.write_text(crt.read_text() + Path(self.certfile).read_text())
        cert = Cert(name=name, dns_names=list(dns_names), certfile=str(crt), keyfile=str(key), chainfile=str(chain))
        self.issued.append(cert)
        return cert


def make_ca(dir: str | os.PathLike, name: str = "Tern Test CA", days: int = DAYS) -> Ca:
    """A new CA (EC P-256 key, self-signed) in `dir` (made if missing): ca.key and ca.crt."""
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    key, crt, cnf = d / "ca.key", d / "ca.crt", d / "ca.cnf"
    _write_config(cnf, [])
    _new_key(key)
    openssl("req", "-new", "-x509", "-config", str(cnf), "-key", str(key), "-subj", _subject(name),
            "-days", str(days), "-sha256", "-set_serial", str(secrets.randbits(63) | 1),
            "-extensions", "ca_ext", "-out", str(crt))
    return Ca(name=name, dir=str(d), certfile=str(crt), keyfile=str(key))


def self_signed(dir: str | os.PathLike, name: str, dns_names: list[str], days: int = DAYS) -> Cert:
    """A key and a self-signed leaf certificate (not from any CA) in `dir`: <name>.key, .crt and
    .chain.pem (the same certificate alone)."""
    if not dns_names:
        raise ValueError("a certificate needs at least one DNS name")
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    base = d / _safe(name)
    key, crt, chain, cnf = (Path(f"{base}{s}") for s in (".key", ".crt", ".chain.pem", ".cnf"))
    _write_config(cnf, dns_names)
    _new_key(key)
    openssl("req", "-new", "-x509", "-config", str(cnf), "-key", str(key), "-subj", _subject(dns_names[0]),
            "-days", str(days), "-sha256", "-set_serial", str(secrets.randbits(63) | 1),
            "-extensions", "leaf_ext", "-out", str(crt))
    shutil.copyfile(crt, chain)
    return Cert(name=name, dns_names=list(dns_names), certfile=str(crt), keyfile=str(key), chainfile=str(chain))


def tlsa_record(name: str, usage: int, selector: int, mtype: int, hexdata: str,
                port: int = 25, proto: str = "tcp", ttl: int = 3600) -> str:
    """A zone-file line: tlsa_record("mx.tern-test", 3, 1, 1, h) ->
    '_25._tcp.mx.tern-test. 3600 IN TLSA 3 1 1 h'. A name that already starts with "_" is taken
    as the whole owner name."""
    owner = name if name.startswith("_") else f"_{port}._{proto}.{name}"
    if not owner.endswith("."):
        owner += "."
    return f"{owner} {ttl} IN TLSA {usage} {selector} {mtype} {hexdata.lower()}"
