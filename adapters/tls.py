"""TLS to RabbitMQ (amqps://) and Redis (rediss://): one client SSLContext from the settings.

- REFERENCE_TLS_CA_FILE: the CA certificates (PEM) that the server's certificate must chain
  to; only these are trusted then. Unset: the system trust store.
- REFERENCE_TLS_CERT_FILE and REFERENCE_TLS_KEY_FILE: a client certificate (PEM, the chain
  may follow it) and its private key (PEM, unencrypted), presented when the server asks for
  one. Both or neither.
- The server's certificate is always verified, hostname included: the host of the URL must
  be in its subjectAltName (a DNS name, or an IP address for a URL such as
  amqps://10.0.0.5/). There is no switch to turn this off.

Every problem with the files is one ConfigError line that names the variable. The context is
built once per client (broker, store), when the services are built; connections share it.

A TLS failure that retrying cannot mend (the server's certificate fails verification, the
server refuses our certificate, the port does not speak TLS) is, before a client has ever
connected, a TlsStartupError (a StartupError) that names the server and the cause: the
process stops at once with that one line instead of retrying for REFERENCE_CONNECT_TIMEOUT_S.
Once connected, the same failure on a reconnect is an outage like any other
(BrokerUnavailable, StoreUnavailable: 503, reconnect with backoff).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

from reference.errors import ConfigError, StartupError
from reference.settings import Settings

CA_VAR = "REFERENCE_TLS_CA_FILE"
CERT_VAR = "REFERENCE_TLS_CERT_FILE"
KEY_VAR = "REFERENCE_TLS_KEY_FILE"

# Alerts a server sends when it will not take our certificate (OpenSSL's reason names end
# with these, after "SSLV3_ALERT_", "TLSV1_ALERT_" or "TLSV13_ALERT_").
_REFUSED_CERT_ALERTS = frozenset({
    "BAD_CERTIFICATE", "UNSUPPORTED_CERTIFICATE", "CERTIFICATE_REVOKED",
    "CERTIFICATE_EXPIRED", "CERTIFICATE_UNKNOWN", "UNKNOWN_CA", "ACCESS_DENIED",
    "CERTIFICATE_REQUIRED",
})


class TlsStartupError(StartupError):
    """A TLS handshake failed at start-up in a way that retrying will not mend."""


def _no_password() -> bytes:
    """Never prompt on a terminal for an encrypted key's passphrase (OpenSSL's default)."""
    return b""


def _readable(var: str, path: str) -> None:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise ConfigError(f"{var}={path!r} cannot be read: {exc.strerror or exc}") from None


def _reason(exc: ssl.SSLError, unknown: str = "") -> str:
    return str(exc.reason or unknown or exc.strerror or exc)


def client_context(settings: Settings) -> ssl.SSLContext:
    """The SSLContext for amqps:// and rediss://: verifies the server (against the CA file,
    or the system trust store) and its hostname; presents the client certificate if set.
    Raises ConfigError, in one line, for files that are missing, unreadable or not PEM."""
    ca, cert, key = settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file
    if bool(cert) != bool(key):
        given, missing = (CERT_VAR, KEY_VAR) if cert else (KEY_VAR, CERT_VAR)
        raise ConfigError(f"{given} is set but {missing} is not: a client certificate needs "
                          f"its private key, set both or neither")
    for var, path in ((CA_VAR, ca), (CERT_VAR, cert), (KEY_VAR, key)):
        if path:
            _readable(var, path)
    # CERT_REQUIRED and check_hostname=True; with a CA file, only its certificates are
    # trusted (the system trust store is not loaded then).
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca or None)
    except ssl.SSLError as exc:
        raise ConfigError(f"{CA_VAR}={ca!r} holds no usable PEM certificate: "
                          f"{_reason(exc)}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert and key:
        try:
            context.load_cert_chain(cert, key, password=_no_password)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{CERT_VAR}={cert!r} and {KEY_VAR}={key!r} are not a PEM certificate and its "
                f"unencrypted private key: "
                f"{_reason(exc, 'cannot parse them (not PEM, or an encrypted key)')}") from None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    return context


def reject_url_options(url: str, names: Iterable[str], *, prefix: str = "") -> None:
    """TLS is configured by the REFERENCE_TLS_* variables only: a driver's own TLS options in
    the URL's query (which would be ignored, or would turn verification off) are a
    ConfigError."""
    wanted = set(names)
    found = sorted({name for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)
                    if name in wanted or (prefix and name.startswith(prefix))})
    if found:
        raise ConfigError(f"TLS options in the URL are not supported ({', '.join(found)}): use "
                          f"{CA_VAR}, {CERT_VAR} and {KEY_VAR}")


def _causes(exc: BaseException) -> Iterable[BaseException]:
    """`exc` and every exception it was raised from or while handling (no cycles)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend(c for c in (e.__cause__, e.__context__) if c is not None)


def handshake_failure(exc: BaseException, *, server: str,
                      settings: Settings) -> TlsStartupError | None:
    """A TlsStartupError naming `server` and the cause, when `exc` came from a TLS failure
    that retrying will not mend; else None."""
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            what = cause.verify_message or _reason(cause)
            trust = (f"{CA_VAR}={settings.tls_ca_file!r}" if settings.tls_ca_file
                     else f"the system trust store ({CA_VAR} is not set)")
            return TlsStartupError(f"TLS: certificate verify failed for {server}: {what} "
                                   f"(trusted: {trust})")
        if isinstance(cause, ssl.SSLError):
            reason = _reason(cause)
            alert = reason.split("_ALERT_", 1)[1] if "_ALERT_" in reason else ""
            if alert in _REFUSED_CERT_ALERTS:
                mine = (f"{CERT_VAR}={settings.tls_cert_file!r}" if settings.tls_cert_file
                        else f"none: {CERT_VAR} is not set")
                return TlsStartupError(
                    f"TLS: {server} refused the client certificate ({alert.lower()}; "
                    f"client certificate: {mine})")
            if reason == "WRONG_VERSION_NUMBER":
                return TlsStartupError(f"TLS: {server} does not speak TLS on that port "
                                       f"({reason}): is it the plain-text port?")
    return None


def server_name(url: str, default_port: int) -> str:
    """host:port of a URL, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port or default_port}"
