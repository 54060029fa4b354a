"""The gateway's TLS context: TLS 1.2 and newer, forward-secret AEAD ciphers
only, and a certificate that can be replaced while the gateway runs."""

import logging
import ssl

log = logging.getLogger("postern.gateway")

# TLS 1.2 suites: ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 (the
# recommended set of RFC 9325 section 4.2). TLS 1.3 suites are all AEAD and
# keep OpenSSL's defaults.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def tls_context(cert_file, key_file):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(cert_file, key_file)
    return context


def reload_certificate(context, cert_file, key_file):
    """Load a new certificate and key into the live context, so that new
    connections get them and sessions in progress are untouched. The files are
    tried on a fresh context first: a bad pair leaves the old one serving.
    Returns whether the new pair was loaded."""
    try:
        tls_context(cert_file, key_file)
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        log.error("event=tls_reload_failed error=%s", type(exc).__name__)
        return False
    log.info("event=tls_reloaded cert=%s", cert_file)
    return True
