"""TLS_CERT_FILE and TLS_KEY_FILE, checked before nginx gets them: readable by the image's user,
PEM, unexpired, and a pair. A CertificateError is one line naming the variable, the file and
what is wrong with it."""

from __future__ import annotations

import datetime
import os
import ssl


class CertificateError(ValueError):
    """One line for the user: which variable, which file, what is wrong with it."""

    def __init__(self, name: str, value: str, problem: str) -> None:
        super().__init__(f"{name}={value!r}: {problem}")


def _readable(name: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise CertificateError(
            name, path, "no such file (mount it, e.g. -v ./certs:/run/secrets:ro)"
        ) from None
    except PermissionError:
        raise CertificateError(
            name, path, f"permission denied: the image's user (uid {os.getuid()}) cannot read it"
        ) from None
    except IsADirectoryError:
        raise CertificateError(name, path, "is a directory, not a file") from None


def check(cert: str, key: str, now: datetime.datetime | None = None) -> None:
    """Raises CertificateError when the certificate or key cannot serve HTTPS: missing,
    unreadable, not PEM, expired, or not a pair."""
    _readable("TLS_CERT_FILE", cert)
    _readable("TLS_KEY_FILE", key)
    try:
        # The leaf certificate's fields, as Python's ssl module decodes them (its own tests use
        # this function; the public API offers no other way to read a certificate file).
        fields = ssl._ssl._test_decode_cert(cert)  # type: ignore[attr-defined]
    except (ssl.SSLError, ValueError):
        raise CertificateError("TLS_CERT_FILE", cert, "not a PEM certificate") from None
    expires = datetime.datetime.fromtimestamp(
        ssl.cert_time_to_seconds(fields["notAfter"]), datetime.UTC
    )
    if expires <= (now or datetime.datetime.now(datetime.UTC)):
        raise CertificateError(
            "TLS_CERT_FILE", cert, f"the certificate expired on {expires:%Y-%m-%d %H:%M} UTC"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # A password-protected key fails here too: nginx would ask for the password on a tty.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as error:
        if "KEY_VALUES_MISMATCH" in str(error):
            raise CertificateError(
                "TLS_KEY_FILE", key, f"does not match the certificate in {cert}"
            ) from None
        raise CertificateError(
            "TLS_KEY_FILE",
            key,
            "not an unencrypted PEM private key (" + (error.reason or str(error)) + ")",
        ) from None
