/*
 * tls.h — OpenSSL contexts for Postern's listeners, and the self-signed
 * certificate `postern init` generates.
 *
 * Policy (secure by default): TLS 1.2 minimum (TLS 1.0/1.1 and SSLv3 are
 * never offered), no compression, no renegotiation, server cipher
 * preference, session tickets off (no long-term ticket key to protect).
 * Per listener: minimum version, TLS 1.2 ciphers, TLS 1.3 suites, default
 * certificate, client certificates; certificates from tls.dir are chosen by
 * SNI (RFC 6066 section 3). Also the libevent bufferevents of the
 * front-ends' connections: implicit TLS (RFC 8314) and STARTTLS upgrades.
 */
#ifndef POSTERN_TLS_H
#define POSTERN_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <openssl/ssl.h>

#include "lib/buf.h"

#include "lib-config/config.h"

/* The server-side TLS contexts of every listener that is on (one SSL_CTX
 * per listener kind, each with its protocol policy, default certificate,
 * SNI certificates and client-certificate mode). Reference-counted: the
 * master builds it, each front-end worker takes a reference. */
struct tls_set;

/* Builds the contexts for every listener in cfg->listen[] from the tls.*
 * and tls.<listener>.* keys and the certificates in cfg->tls_dir. NULL with
 * *error_r (thread-local text naming the file and the problem) when a
 * certificate or key is unreadable, does not match, or a policy is bad. */
struct tls_set *tls_set_new(const struct config *cfg, const char **error_r);

/* Takes a reference; returns set. */
struct tls_set *tls_set_ref(struct tls_set *set);

/* Drops a reference (the set is freed with the last one) and clears *set.
 * Sessions keep their own references to the SSL_CTX they were made from. */
void tls_set_free(struct tls_set **set);

/* A new server SSL for a connection on a listener of the given kind; NULL
 * when the set has no context for it or OpenSSL fails. The caller frees it
 * with SSL_free(). */
SSL *tls_session_new(const struct tls_set *set, enum listener_kind kind);

/* ---- connections (libevent) ---- */

struct bufferevent;
struct event_base;

/* The bufferevent of a new connection on fd: with implicit (RFC 8314
 * imaps/pop3s/submissions) an OpenSSL one accepting a handshake over a new
 * SSL from the set (*ssl_r, owned by the bufferevent; dirty shutdowns
 * allowed), else a plain socket one (*ssl_r NULL). Either closes fd when
 * freed. NULL on failure, with the SSL freed, fd closed and *ssl_r NULL. */
struct bufferevent *tls_bufferevent_new(struct event_base *base, int fd,
					const struct tls_set *set, enum listener_kind kind,
					bool implicit, SSL **ssl_r);

/* STARTTLS (RFC 3207, RFC 9051 6.2.1, RFC 2595): discards whatever the
 * client pipelined after the command (their count in *discarded_r, which
 * the caller logs), then returns an OpenSSL filter over plain accepting a
 * handshake over a new SSL (*ssl_r) that frees plain when it is freed.
 * NULL when there is no context or libevent fails (plain is untouched
 * but for the discarded input; *ssl_r NULL). */
struct bufferevent *tls_bufferevent_starttls(struct event_base *base, struct bufferevent *plain,
					     const struct tls_set *set, enum listener_kind kind,
					     SSL **ssl_r, size_t *discarded_r);

/* Writes a self-signed certificate and its key (EC P-256, 10 years, SAN
 * hostname + localhost + 127.0.0.1 + ::1) to the given paths, key mode 0600.
 * 0 or -1 with *error_r. */
int tls_make_self_signed(const char *hostname, const char *cert_file, const char *key_file,
			 const char **error_r);

/* ---- certificates ---- */

/* One certificate with its key and chain, as loaded from PEM files. */
struct tls_cert;

/* Reads a PEM certificate file (leaf first, then its chain) and its PEM key
 * (unencrypted), and checks that they match. NULL with *error_r
 * (thread-local text naming the file) otherwise. */
struct tls_cert *tls_cert_load(const char *cert_file, const char *key_file,
			       const char **error_r);
void tls_cert_free(struct tls_cert **cert);

/* The DNS names the certificate is for: its subjectAltName DNS entries (lower
 * case, "*.example.com" kept as is), or its CN when it has no DNS SAN. */
size_t tls_cert_name_count(const struct tls_cert *cert);
const char *tls_cert_name(const struct tls_cert *cert, size_t i);
/* The subject, RFC 2253 escaping in the certificate's order
 * ("CN=mail.example.com, O=..."). */
const char *tls_cert_subject(const struct tls_cert *cert);
/* notAfter as a time_t (UTC). */
time_t tls_cert_not_after(const struct tls_cert *cert);
/* Whole days from now until notAfter (negative once expired). */
long tls_cert_days_left(const struct tls_cert *cert, time_t now);
/* true when one of the certificate's names matches host (see tls_name_match). */
bool tls_cert_covers(const struct tls_cert *cert, const char *host);
/* Appends "subject / names / not after (N days left)" lines, each starting
 * with indent, to out. */
void tls_cert_describe(const struct tls_cert *cert, time_t now, const char *indent,
		       struct buf *out);

/* Does a certificate name match a host name? Case-insensitive exact match,
 * or a wildcard "*.example.com" standing for exactly one label
 * ("a.example.com", not "example.com" nor "a.b.example.com"). */
bool tls_name_match(const char *pattern, const char *host);

/* Certificates expiring within this many days are warned about. */
#define TLS_EXPIRY_WARN_DAYS 14

/* ---- the listener set ---- */

/* Appends `postern tls show`'s text: per listener its address, protocol
 * policy, client-certificate mode and certificate, then the SNI
 * certificates. */
void tls_set_describe(const struct tls_set *set, time_t now, struct buf *out);

/* Appends the subjects of every distinct certificate ("CN=a, CN=b"). */
void tls_set_subjects(const struct tls_set *set, struct buf *out);

/* Logs every distinct certificate (subject, names, notAfter, days left) at
 * info level. */
void tls_set_log(const struct tls_set *set, time_t now);

/* Warns about each certificate that expires within TLS_EXPIRY_WARN_DAYS
 * (log_warn "certificate CN=... expires in N days", audit
 * "certificate_expiring"). Returns how many. */
unsigned tls_set_check_expiry(const struct tls_set *set, time_t now);

/* "TLSv1.3:TLS_AES_256_GCM_SHA384:256" style description for logs and
 * Received: headers. */
void tls_describe(SSL *ssl, char *out, size_t size);

#endif
