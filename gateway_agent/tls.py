"""The agent's transport security: which server URLs it accepts, and how it verifies a wss:// server (docs/tls.md).

A gateway's token and its allowlist cross the network in every session, so ws:// (clear text) is accepted only
to loopback unless allow_insecure_transport is set; wss:// always verifies the certificate chain against ca_file
(or the system's CAs) and the URL's host against the certificate's names, with TLS 1.2 or later.
"""

from __future__ import annotations

import ipaddress
import ssl
from urllib.parse import urlsplit

import websocket


# OpenSSL's X509_V_ERR_* codes of the refusals an operator can fix by name.
CERT_HAS_EXPIRED = 10
HOSTNAME_MISMATCH = 62
IP_ADDRESS_MISMATCH = 64
# OpenSSL's reasons for the server's alert when it did not accept the client certificate (mutual TLS).
CLIENT_CERT_REFUSED = ("TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE", "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
                       "TLSV1_ALERT_DECRYPT_ERROR", "SSLV3_ALERT_CERTIFICATE_EXPIRED")
CLIENT_CERT_MISSING = ("TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_HANDSHAKE_FAILURE")


class TransportError(Exception):
    """A wss:// server that could not be trusted; the message says why and which setting fixes it."""


def is_loopback(host):
    """True for localhost, 127.0.0.0/8 and ::1: clear text to these never leaves the host."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_problems(servers, allow_insecure):
    """What is wrong with the server URLs as to transport security (the syntax is checked by config)."""
    if allow_insecure is True:
        return []
    problems = []
    for url in servers:
        parts = urlsplit(str(url))
        if parts.scheme == "ws" and parts.hostname and not is_loopback(parts.hostname):
            problems.append(
                "server %s is ws:// (clear text: the gateway token and the allowlist would cross the network "
                "unencrypted); use wss:// (with ca_file naming the CA of the server's certificate), or set "
                "allow_insecure_transport: true (--allow-insecure-transport) to allow ws:// to hosts other than "
                "loopback" % url)
    return problems


def client_context(ca_file="", cert_file="", key_file=""):
    """Verify the server's chain (ca_file, else the system's CAs) and its name; TLS 1.2 or later; with cert_file
    and key_file, show that client certificate to a server that asks for one (mutual TLS)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # CERT_REQUIRED and check_hostname by default
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def explain(exc, url, ca_file=""):
    """An operator's sentence for a failed TLS handshake with url: what was wrong and what to set."""
    trusted = "the CA in ca_file %s" % ca_file if ca_file else "the system's CAs (ca_file is not set)"
    host = urlsplit(url).hostname
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or str(exc)
        if exc.verify_code in (HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH):
            return ("the certificate of %s is not valid for %s (%s): use a URL with a name or address the "
                    "certificate lists, or give the server a certificate for %s" % (url, host, reason, host))
        if exc.verify_code == CERT_HAS_EXPIRED:
            return ("the certificate of %s has expired (%s): renew the server's certificate (tls_cert_file)"
                    % (url, reason))
        return ("the certificate of %s is not trusted by %s (%s): set ca_file to the CA that signed the server's "
                "certificate" % (url, trusted, reason))
    if exc.reason in CLIENT_CERT_REFUSED:
        return ("%s refused the gateway's client certificate (%s): set client_cert_file and client_key_file to a "
                "certificate signed by the CA in the server's tls_client_ca_file" % (url, exc.reason))
    if exc.reason in CLIENT_CERT_MISSING:
        return ("%s requires a client certificate (%s): set client_cert_file and client_key_file (mutual TLS, "
                "the server's tls_client_ca_file)" % (url, exc.reason))
    return "TLS with %s failed (%s): check that it serves wss:// (tls_cert_file) with TLS 1.2 or later" % (
        url, exc.reason or exc)


def connect(create_connection, url, cfg, **kwargs):
    """create_connection(url, ...) with the agent's TLS settings; ssl errors, and a server's refusal for want of
    a client certificate, become a TransportError."""
    ca_file = cfg.get("ca_file") or ""
    if not url.startswith("wss://"):
        return create_connection(url, **kwargs)
    context = client_context(ca_file, cfg.get("client_cert_file") or "", cfg.get("client_key_file") or "")
    try:
        return create_connection(url, sslopt={"context": context}, **kwargs)
    except ssl.SSLError as exc:
        raise TransportError(explain(exc, url, ca_file)) from exc
    except websocket.WebSocketBadStatusException as exc:
        if exc.status_code == 403 and b"client_certificate_required" in (exc.resp_body or b""):
            raise TransportError("%s requires a client certificate signed by the CA in its tls_client_ca_file: "
                                 "set client_cert_file and client_key_file (mutual TLS)" % url) from exc
        raise
