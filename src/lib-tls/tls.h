/*
 * tls.h — OpenSSL contexts for Postern's listeners, and the self-signed
 * certificate `postern init` generates.
 *
 * Policy (secure by default): TLS 1.2 minimum, no compression, no
 * renegotiation, server cipher preference, session tickets off (no long-term
 * ticket key to protect).
 */
#ifndef POSTERN_TLS_H
#define POSTERN_TLS_H

#include <openssl/ssl.h>

/* Builds a server context from PEM files. NULL with *error_r (static or
 * thread-local text) when the certificate or key is unusable. */
SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, const char **error_r);

/* Writes a self-signed certificate and its key (EC P-256, 10 years, SAN
 * hostname + localhost + 127.0.0.1 + ::1) to the given paths, key mode 0600.
 * 0 or -1 with *error_r. */
int tls_make_self_signed(const char *hostname, const char *cert_file, const char *key_file,
			 const char **error_r);

/* "TLSv1.3:TLS_AES_256_GCM_SHA384:256" style description for logs and
 * Received: headers. */
void tls_describe(SSL *ssl, char *out, size_t size);

#endif
