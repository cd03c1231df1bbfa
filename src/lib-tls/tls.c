/*
 * tls.c — server TLS contexts, the per-listener set with SNI certificates,
 * certificate inspection (names, expiry) and self-signed certificate
 * generation (RFC 3207 STARTTLS and RFC 8314 implicit TLS use the same
 * contexts; RFC 6066 section 3 server_name; RFC 6125 names and wildcards).
 * The set is built in the master (and by `postern tls show`); front-end
 * workers inherit it across fork and take a reference. The keys stay in the
 * memory of the master and the front-ends only.
 */
#include "lib-tls/tls.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

#include "lib/audit.h"
#include "lib/log.h"

static _Thread_local char tls_error_msg[512];

static const char *tls_last_error(const char *what)
{
	unsigned long e = ERR_get_error();
	char detail[200] = "unknown error";
	if (e != 0)
		ERR_error_string_n(e, detail, sizeof(detail));
	ERR_clear_error();
	snprintf(tls_error_msg, sizeof(tls_error_msg), "%s: %s", what, detail);
	return tls_error_msg;
}

/* A formatted error text (no OpenSSL detail) in the thread-local buffer. */
static const char *tls_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *tls_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tls_error_msg, sizeof(tls_error_msg), fmt, ap);
	va_end(ap);
	ERR_clear_error();
	return tls_error_msg;
}

/* The common server options of every context Postern builds. */
static void tls_ctx_set_defaults(SSL_CTX *ctx)
{
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
				 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"postern", 7);
}

static int add_san(X509 *cert, const char *hostname)
{
	char san[600];
	snprintf(san, sizeof(san), "DNS:%s,DNS:localhost,IP:127.0.0.1,IP:::1", hostname);
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, cert, cert, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
	if (ext == NULL)
		return -1;
	int ok = X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return ok == 1 ? 0 : -1;
}

int tls_make_self_signed(const char *hostname, const char *cert_file, const char *key_file,
			 const char **error_r)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *cert = X509_new();
	FILE *f = NULL;
	int ret = -1, fd = -1;

	if (key == NULL || cert == NULL) {
		*error_r = tls_last_error("key generation");
		goto out;
	}
	X509_set_version(cert, 2);
	unsigned char serial[16];
	FILE *ur = fopen("/dev/urandom", "re");
	if (ur == NULL || fread(serial, 1, sizeof(serial), ur) != sizeof(serial)) {
		if (ur != NULL)
			fclose(ur);
		*error_r = "cannot read /dev/urandom";
		goto out;
	}
	fclose(ur);
	serial[0] &= 0x7f;
	BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
	BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert));
	BN_free(bn);
	X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
	X509_gmtime_adj(X509_getm_notAfter(cert), 3650L * 24 * 3600);
	X509_set_pubkey(cert, key);
	X509_NAME *name = X509_get_subject_name(cert);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)hostname,
				   -1, -1, 0);
	X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
				   (const unsigned char *)"Postern self-signed", -1, -1, 0);
	X509_set_issuer_name(cert, name);
	if (add_san(cert, hostname) < 0 || X509_sign(cert, key, EVP_sha256()) == 0) {
		*error_r = tls_last_error("certificate");
		goto out;
	}
	fd = open(key_file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
		*error_r = "cannot create key file";
		goto out;
	}
	fd = -1;
	if (PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) != 1 || fclose(f) != 0) {
		f = NULL;
		*error_r = "cannot write key file";
		goto out;
	}
	f = fopen(cert_file, "wx");
	if (f == NULL || PEM_write_X509(f, cert) != 1 || fclose(f) != 0) {
		f = NULL;
		*error_r = "cannot write certificate file";
		goto out;
	}
	f = NULL;
	ret = 0;
out:
	if (f != NULL)
		fclose(f);
	if (fd >= 0)
		close(fd);
	X509_free(cert);
	EVP_PKEY_free(key);
	return ret;
}

void tls_describe(SSL *ssl, char *out, size_t size)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
	snprintf(out, size, "%s:%s:%d", SSL_get_version(ssl),
		 c != NULL ? SSL_CIPHER_get_name(c) : "none",
		 c != NULL ? SSL_CIPHER_get_bits(c, NULL) : 0);
}

/* ---- certificates ---- */

#define TLS_MAX_NAMES 100
#define TLS_MAX_NAME_LEN 253

struct tls_cert {
	X509 *x509;
	EVP_PKEY *key;
	STACK_OF(X509) *chain;     /* intermediates after the leaf; may be NULL */
	char *cert_file, *key_file;
	char *subject;
	char *names[TLS_MAX_NAMES];
	size_t nnames;
	time_t not_after;
};

/* Keys must be unencrypted: never prompt on a terminal for a passphrase. */
static int tls_no_passphrase_cb(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

static int tls_cert_add_name(struct tls_cert *c, const char *name, size_t len)
{
	if (len == 0 || len > TLS_MAX_NAME_LEN || memchr(name, '\0', len) != NULL)
		return 0;       /* not a usable DNS name: ignored */
	if (c->nnames >= TLS_MAX_NAMES)
		return 0;
	for (size_t i = 0; i < c->nnames; i++) {
		if (strlen(c->names[i]) == len && strncasecmp(c->names[i], name, len) == 0)
			return 0;
	}
	char *copy = strndup(name, len);
	if (copy == NULL)
		return -1;
	for (char *p = copy; *p != '\0'; p++) {
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	}
	c->names[c->nnames++] = copy;
	return 0;
}

static int tls_cert_read_names(struct tls_cert *c)
{
	GENERAL_NAMES *sans = X509_get_ext_d2i(c->x509, NID_subject_alt_name, NULL, NULL);
	int ret = 0;
	for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
		if (gn->type != GEN_DNS)
			continue;
		const ASN1_IA5STRING *s = gn->d.dNSName;
		if (tls_cert_add_name(c, (const char *)ASN1_STRING_get0_data(s),
				      (size_t)ASN1_STRING_length(s)) < 0)
			ret = -1;
	}
	GENERAL_NAMES_free(sans);
	if (c->nnames == 0) {
		/* RFC 6125 6.4.4: the CN only when there is no DNS SAN. */
		X509_NAME *subj = X509_get_subject_name(c->x509);
		int idx = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
		if (idx >= 0) {
			ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
			unsigned char *utf8 = NULL;
			int len = ASN1_STRING_to_UTF8(&utf8, cn);
			if (len > 0 && tls_cert_add_name(c, (const char *)utf8, (size_t)len) < 0)
				ret = -1;
			OPENSSL_free(utf8);
		}
	}
	return ret;
}

static char *tls_name_text(const X509_NAME *name)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *text = NULL;
	if (bio == NULL)
		return NULL;
	/* RFC 2253 escaping, in the certificate's order ("CN=a, O=b"), UTF-8. */
	unsigned long flags = (XN_FLAG_RFC2253 & ~(XN_FLAG_DN_REV | XN_FLAG_SEP_MASK |
						    ASN1_STRFLGS_ESC_MSB)) | XN_FLAG_SEP_CPLUS_SPC;
	if (X509_NAME_print_ex(bio, name, 0, flags) >= 0) {
		char *data;
		long len = BIO_get_mem_data(bio, &data);
		text = strndup(len > 0 ? data : "", len > 0 ? (size_t)len : 0);
	}
	BIO_free(bio);
	return text;
}

struct tls_cert *tls_cert_load(const char *cert_file, const char *key_file,
			       const char **error_r)
{
	struct tls_cert *c = calloc(1, sizeof(*c));
	FILE *f = NULL;
	if (c == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	c->cert_file = strdup(cert_file);
	c->key_file = strdup(key_file);
	if (c->cert_file == NULL || c->key_file == NULL) {
		*error_r = "out of memory";
		goto fail;
	}
	ERR_clear_error();
	f = fopen(cert_file, "re");
	if (f == NULL) {
		*error_r = tls_error("certificate %s: cannot open: %s", cert_file,
				     strerror(errno));
		goto fail;
	}
	c->x509 = PEM_read_X509(f, NULL, tls_no_passphrase_cb, NULL);
	if (c->x509 == NULL) {
		*error_r = tls_error("certificate %s: no PEM certificate in it", cert_file);
		goto fail;
	}
	/* The rest of the file: the chain, leaf's issuer first. */
	for (;;) {
		X509 *extra = PEM_read_X509(f, NULL, tls_no_passphrase_cb, NULL);
		if (extra == NULL)
			break;
		if ((c->chain == NULL && (c->chain = sk_X509_new_null()) == NULL) ||
		    sk_X509_push(c->chain, extra) <= 0) {
			X509_free(extra);
			*error_r = "out of memory";
			goto fail;
		}
	}
	ERR_clear_error();      /* the end of the file reads as "no start line" */
	fclose(f);
	f = fopen(key_file, "re");
	if (f == NULL) {
		*error_r = tls_error("key %s: cannot open: %s", key_file, strerror(errno));
		goto fail;
	}
	c->key = PEM_read_PrivateKey(f, NULL, tls_no_passphrase_cb, NULL);
	if (c->key == NULL) {
		*error_r = tls_error("key %s: no unencrypted PEM private key in it", key_file);
		goto fail;
	}
	fclose(f);
	f = NULL;
	if (X509_check_private_key(c->x509, c->key) != 1) {
		*error_r = tls_error("key %s does not match certificate %s", key_file, cert_file);
		goto fail;
	}
	c->subject = tls_name_text(X509_get_subject_name(c->x509));
	if (c->subject == NULL || tls_cert_read_names(c) < 0) {
		*error_r = "out of memory";
		goto fail;
	}
	/* notAfter as seconds since the epoch, without struct tm. */
	ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
	int days = 0, secs = 0;
	int diff_ok = epoch != NULL &&
		      ASN1_TIME_diff(&days, &secs, epoch, X509_get0_notAfter(c->x509)) == 1;
	ASN1_TIME_free(epoch);
	if (!diff_ok) {
		*error_r = tls_error("certificate %s: bad notAfter", cert_file);
		goto fail;
	}
	c->not_after = (time_t)days * 86400 + secs;
	return c;
fail:
	if (f != NULL)
		fclose(f);
	tls_cert_free(&c);
	return NULL;
}

void tls_cert_free(struct tls_cert **cert)
{
	struct tls_cert *c = *cert;
	if (c == NULL)
		return;
	*cert = NULL;
	X509_free(c->x509);
	EVP_PKEY_free(c->key);      /* OpenSSL clears key material on free */
	sk_X509_pop_free(c->chain, X509_free);
	for (size_t i = 0; i < c->nnames; i++)
		free(c->names[i]);
	free(c->subject);
	free(c->cert_file);
	free(c->key_file);
	free(c);
}

size_t tls_cert_name_count(const struct tls_cert *cert)
{
	return cert->nnames;
}

const char *tls_cert_name(const struct tls_cert *cert, size_t i)
{
	return i < cert->nnames ? cert->names[i] : NULL;
}

const char *tls_cert_subject(const struct tls_cert *cert)
{
	return cert->subject;
}

time_t tls_cert_not_after(const struct tls_cert *cert)
{
	return cert->not_after;
}

long tls_cert_days_left(const struct tls_cert *cert, time_t now)
{
	double secs = difftime(cert->not_after, now);
	long days = (long)(secs / 86400.0);
	if (secs < 0 && (double)days * 86400.0 != secs)
		days--;         /* floor: one second after notAfter is day -1 */
	return days;
}

bool tls_name_match(const char *pattern, const char *host)
{
	if (pattern == NULL || host == NULL || host[0] == '\0')
		return false;
	if (strcasecmp(pattern, host) == 0)
		return pattern[0] != '*';
	if (pattern[0] != '*' || pattern[1] != '.' || pattern[2] == '\0')
		return false;
	/* "*.example.com": host is one non-empty label, then ".example.com". */
	const char *dot = strchr(host, '.');
	if (dot == NULL || dot == host)
		return false;
	return strcasecmp(dot, pattern + 1) == 0;
}

bool tls_cert_covers(const struct tls_cert *cert, const char *host)
{
	for (size_t i = 0; i < cert->nnames; i++) {
		if (tls_name_match(cert->names[i], host))
			return true;
	}
	return false;
}

static void tls_time_text(time_t t, char *out, size_t size)
{
	struct tm tm;
	if (gmtime_r(&t, &tm) == NULL || strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, size, "?");
}

static void tls_cert_names_text(const struct tls_cert *c, struct buf *out)
{
	for (size_t i = 0; i < c->nnames; i++)
		buf_printf(out, "%s%s", i > 0 ? ", " : "", c->names[i]);
	if (c->nnames == 0)
		buf_append_str(out, "(none)");
}

void tls_cert_describe(const struct tls_cert *cert, time_t now, const char *indent,
		       struct buf *out)
{
	char when[40];
	tls_time_text(cert->not_after, when, sizeof(when));
	long days = tls_cert_days_left(cert, now);
	buf_printf(out, "%sfile: %s (key %s)\n", indent, cert->cert_file, cert->key_file);
	buf_printf(out, "%ssubject: %s\n", indent, cert->subject);
	buf_printf(out, "%snames: ", indent);
	tls_cert_names_text(cert, out);
	buf_printf(out, "\n%snot after: %s (%s%ld days %s)\n", indent, when,
		   days < 0 ? "EXPIRED " : "", days < 0 ? -days : days,
		   days < 0 ? "ago" : "left");
}

/* ---- SNI ---- */

/* The certificates of tls.dir, shared by every context of a set and kept
 * alive by the contexts themselves (ex_data): a handshake in progress never
 * sees a freed table, even after its set was dropped. */
struct tls_sni_table {
	atomic_int refs;
	struct tls_cert **certs;
	size_t ncerts;
};

static int tls_sni_index = -1;
static pthread_once_t tls_sni_once = PTHREAD_ONCE_INIT;

static void tls_sni_table_unref(struct tls_sni_table **table)
{
	struct tls_sni_table *t = *table;
	*table = NULL;
	if (t == NULL || atomic_fetch_sub(&t->refs, 1) != 1)
		return;
	for (size_t i = 0; i < t->ncerts; i++)
		tls_cert_free(&t->certs[i]);
	free(t->certs);
	free(t);
}

static void tls_sni_free_cb(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
			    void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	struct tls_sni_table *t = ptr;
	tls_sni_table_unref(&t);
}

static void tls_sni_init(void)
{
	tls_sni_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, tls_sni_free_cb);
}

/* The certificate of the table for host: an exact name first, then a
 * wildcard; NULL: none (the context's default certificate is used). */
static const struct tls_cert *tls_sni_lookup(const struct tls_sni_table *t, const char *host)
{
	for (size_t i = 0; i < t->ncerts; i++) {
		for (size_t n = 0; n < t->certs[i]->nnames; n++) {
			if (t->certs[i]->names[n][0] != '*' &&
			    strcasecmp(t->certs[i]->names[n], host) == 0)
				return t->certs[i];
		}
	}
	for (size_t i = 0; i < t->ncerts; i++) {
		for (size_t n = 0; n < t->certs[i]->nnames; n++) {
			if (t->certs[i]->names[n][0] == '*' &&
			    tls_name_match(t->certs[i]->names[n], host))
				return t->certs[i];
		}
	}
	return NULL;
}

static int tls_servername_cb(SSL *ssl, int *alert, void *arg)
{
	(void)arg;
	const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (host == NULL || host[0] == '\0')
		return SSL_TLSEXT_ERR_NOACK;
	const struct tls_sni_table *t = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_sni_index);
	const struct tls_cert *c = t != NULL ? tls_sni_lookup(t, host) : NULL;
	if (c == NULL)
		return SSL_TLSEXT_ERR_OK;       /* the default certificate */
	if (SSL_use_cert_and_key(ssl, c->x509, c->key, c->chain, 1) != 1) {
		ERR_clear_error();
		*alert = SSL_AD_INTERNAL_ERROR;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	return SSL_TLSEXT_ERR_OK;
}

/* Loads NAME.pem + NAME.key of every NAME in dir (written by `postern tls
 * add`). Skipped: dot files (temporaries), a .pem without its .key and the
 * default certificate's files (`postern init` puts cert.pem and key.pem in
 * the same directory). A missing directory is an empty table. */
/* Is path one of the configured default certificate or key files? */
static bool tls_is_default_file(const struct config *cfg, const char *path)
{
	struct stat st, ds;
	if (stat(path, &st) < 0)
		return false;
	for (unsigned k = 0; k <= LISTENER_COUNT; k++) {
		const char *files[2] = {
			k == LISTENER_COUNT ? cfg->tls_cert : cfg->tls_listener[k].cert,
			k == LISTENER_COUNT ? cfg->tls_key : cfg->tls_listener[k].key,
		};
		for (unsigned i = 0; i < 2; i++) {
			if (files[i] != NULL && stat(files[i], &ds) == 0 && ds.st_dev == st.st_dev &&
			    ds.st_ino == st.st_ino)
				return true;
		}
	}
	return false;
}

static struct tls_sni_table *tls_sni_load(const struct config *cfg, const char **error_r)
{
	struct tls_sni_table *t = calloc(1, sizeof(*t));
	DIR *d = NULL;
	if (t == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	atomic_init(&t->refs, 1);
	const char *dir = cfg->tls_dir;
	if (dir == NULL)
		return t;
	d = opendir(dir);
	if (d == NULL) {
		if (errno == ENOENT)
			return t;
		*error_r = tls_error("tls.dir %s: %s", dir, strerror(errno));
		goto fail;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		if (de->d_name[0] == '.' || len <= 4 || strcmp(de->d_name + len - 4, ".pem") != 0)
			continue;
		char cert_path[4096], key_path[4096];
		int n1 = snprintf(cert_path, sizeof(cert_path), "%s/%s", dir, de->d_name);
		int n2 = snprintf(key_path, sizeof(key_path), "%s/%.*s.key", dir, (int)(len - 4),
				  de->d_name);
		if (n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof(cert_path) ||
		    (size_t)n2 >= sizeof(key_path)) {
			*error_r = tls_error("tls.dir %s: file name too long", dir);
			goto fail;
		}
		if (tls_is_default_file(cfg, cert_path) || tls_is_default_file(cfg, key_path) ||
		    (access(key_path, F_OK) < 0 && errno == ENOENT))
			continue;
		struct tls_cert *c = tls_cert_load(cert_path, key_path, error_r);
		if (c == NULL)
			goto fail;
		struct tls_cert **grown = realloc(t->certs, (t->ncerts + 1) * sizeof(*grown));
		if (grown == NULL) {
			tls_cert_free(&c);
			*error_r = "out of memory";
			goto fail;
		}
		t->certs = grown;
		t->certs[t->ncerts++] = c;
	}
	closedir(d);
	/* Same order in every process and run: by file name. */
	for (size_t i = 1; i < t->ncerts; i++) {
		for (size_t j = i; j > 0 && strcmp(t->certs[j - 1]->cert_file,
						   t->certs[j]->cert_file) > 0; j--) {
			struct tls_cert *tmp = t->certs[j];
			t->certs[j] = t->certs[j - 1];
			t->certs[j - 1] = tmp;
		}
	}
	return t;
fail:
	if (d != NULL)
		closedir(d);
	tls_sni_table_unref(&t);
	return NULL;
}

/* ---- the listener set ---- */

struct tls_listener_ctx {
	SSL_CTX *ctx;                   /* NULL: listener off (or HTTP) */
	struct tls_cert *cert;          /* the default certificate */
	int min_version;                /* TLS1_2_VERSION or TLS1_3_VERSION */
	char *ciphers, *ciphersuites;   /* as configured; ciphersuites NULL: OpenSSL's */
	enum tls_client_cert client_cert;
	char *client_ca;
	char *address;
};

struct tls_set {
	atomic_int refs;
	struct tls_listener_ctx l[LISTENER_COUNT];
	struct tls_sni_table *sni;
};

static const char *tls_client_cert_name(enum tls_client_cert mode)
{
	switch (mode) {
	case TLS_CLIENT_CERT_OPTIONAL:
		return "optional";
	case TLS_CLIENT_CERT_REQUIRED:
		return "required";
	default:
		return "none";
	}
}

static char *tls_strdup_or_null(const char *s, bool *oom)
{
	if (s == NULL)
		return NULL;
	char *copy = strdup(s);
	if (copy == NULL)
		*oom = true;
	return copy;
}

/* Builds listener k's context from cfg. 0 or -1 with *error_r. */
static int tls_listener_build(struct tls_set *set, const struct config *cfg,
			      enum listener_kind k, const char **error_r)
{
	const struct tls_listener_config *lc = &cfg->tls_listener[k];
	struct tls_listener_ctx *l = &set->l[k];
	const char *name = listener_kind_name(k);
	bool oom = false;

	const char *version = lc->min_version != NULL ? lc->min_version : cfg->tls_min_version;
	if (version == NULL || strcasecmp(version, "TLSv1.2") == 0) {
		l->min_version = TLS1_2_VERSION;
	} else if (strcasecmp(version, "TLSv1.3") == 0) {
		l->min_version = TLS1_3_VERSION;
	} else {
		*error_r = tls_error("tls.%s.min_version: %s is not TLSv1.2 or TLSv1.3", name,
				     version);
		return -1;
	}
	const char *cert_file = lc->cert != NULL ? lc->cert : cfg->tls_cert;
	const char *key_file = lc->key != NULL ? lc->key : cfg->tls_key;
	if ((lc->cert == NULL) != (lc->key == NULL)) {
		*error_r = tls_error("tls.%s.cert and tls.%s.key go together", name, name);
		return -1;
	}
	if (cert_file == NULL || key_file == NULL) {
		*error_r = tls_error("listener %s: no certificate (tls.cert and tls.key)", name);
		return -1;
	}
	l->ciphers = tls_strdup_or_null(lc->ciphers != NULL ? lc->ciphers : cfg->tls_ciphers, &oom);
	l->ciphersuites = tls_strdup_or_null(lc->ciphersuites != NULL ? lc->ciphersuites
							: cfg->tls_ciphersuites, &oom);
	l->client_cert = lc->client_cert != TLS_CLIENT_CERT_INHERIT ? lc->client_cert
								  : cfg->tls_client_cert;
	l->client_ca = tls_strdup_or_null(lc->client_ca != NULL ? lc->client_ca
							: cfg->tls_client_ca, &oom);
	l->address = tls_strdup_or_null(cfg->listen[k], &oom);
	if (oom) {
		*error_r = "out of memory";
		return -1;
	}

	l->cert = tls_cert_load(cert_file, key_file, error_r);
	if (l->cert == NULL)
		return -1;
	SSL_CTX *ctx = l->ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		*error_r = tls_last_error("SSL_CTX_new");
		return -1;
	}
	tls_ctx_set_defaults(ctx);
	if (SSL_CTX_set_min_proto_version(ctx, l->min_version) != 1) {
		*error_r = tls_last_error("min_version");
		return -1;
	}
	if (l->ciphers != NULL && SSL_CTX_set_cipher_list(ctx, l->ciphers) != 1) {
		*error_r = tls_error("tls.%s.ciphers: no usable cipher in \"%s\"", name, l->ciphers);
		return -1;
	}
	if (l->ciphersuites != NULL && SSL_CTX_set_ciphersuites(ctx, l->ciphersuites) != 1) {
		*error_r = tls_error("tls.%s.ciphersuites: no usable suite in \"%s\"", name,
				     l->ciphersuites);
		return -1;
	}
	if (SSL_CTX_use_cert_and_key(ctx, l->cert->x509, l->cert->key, l->cert->chain, 1) != 1) {
		*error_r = tls_last_error(cert_file);
		return -1;
	}
	if (l->client_cert == TLS_CLIENT_CERT_OPTIONAL || l->client_cert == TLS_CLIENT_CERT_REQUIRED) {
		if (l->client_ca == NULL) {
			*error_r = tls_error("tls.%s.client_cert = %s needs tls.%s.client_ca or "
					     "tls.client_ca", name,
					     tls_client_cert_name(l->client_cert), name);
			return -1;
		}
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(l->client_ca);
		if (names == NULL || SSL_CTX_load_verify_locations(ctx, l->client_ca, NULL) != 1) {
			sk_X509_NAME_pop_free(names, X509_NAME_free);
			*error_r = tls_error("tls.%s.client_ca %s: no readable PEM CA certificate",
					     name, l->client_ca);
			return -1;
		}
		SSL_CTX_set_client_CA_list(ctx, names);
		int mode = SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE;
		if (l->client_cert == TLS_CLIENT_CERT_REQUIRED)
			mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
		SSL_CTX_set_verify(ctx, mode, NULL);
	}
	if (set->sni->ncerts > 0) {
		atomic_fetch_add(&set->sni->refs, 1);
		if (SSL_CTX_set_ex_data(ctx, tls_sni_index, set->sni) != 1) {
			atomic_fetch_sub(&set->sni->refs, 1);
			*error_r = tls_last_error("SSL_CTX_set_ex_data");
			return -1;
		}
		SSL_CTX_set_tlsext_servername_callback(ctx, tls_servername_cb);
	}
	return 0;
}

struct tls_set *tls_set_new(const struct config *cfg, const char **error_r)
{
	pthread_once(&tls_sni_once, tls_sni_init);
	if (tls_sni_index < 0) {
		*error_r = tls_last_error("SSL_CTX_get_ex_new_index");
		return NULL;
	}
	struct tls_set *set = calloc(1, sizeof(*set));
	if (set == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	atomic_init(&set->refs, 1);
	set->sni = tls_sni_load(cfg, error_r);
	if (set->sni == NULL)
		goto fail;
	for (unsigned k = 0; k < LISTENER_COUNT; k++) {
		if (cfg->listen[k] == NULL || k == LISTENER_HTTP)
			continue;
		if (tls_listener_build(set, cfg, (enum listener_kind)k, error_r) < 0)
			goto fail;
	}
	return set;
fail:
	tls_set_free(&set);
	return NULL;
}

struct tls_set *tls_set_ref(struct tls_set *set)
{
	atomic_fetch_add(&set->refs, 1);
	return set;
}

void tls_set_free(struct tls_set **setp)
{
	struct tls_set *set = *setp;
	*setp = NULL;
	if (set == NULL || atomic_fetch_sub(&set->refs, 1) != 1)
		return;
	for (unsigned k = 0; k < LISTENER_COUNT; k++) {
		struct tls_listener_ctx *l = &set->l[k];
		SSL_CTX_free(l->ctx);   /* sessions keep their own references */
		tls_cert_free(&l->cert);
		free(l->ciphers);
		free(l->ciphersuites);
		free(l->client_ca);
		free(l->address);
	}
	tls_sni_table_unref(&set->sni);
	free(set);
}

SSL *tls_session_new(const struct tls_set *set, enum listener_kind kind)
{
	if (set == NULL || (unsigned)kind >= LISTENER_COUNT || set->l[kind].ctx == NULL)
		return NULL;
	return SSL_new(set->l[kind].ctx);
}

struct bufferevent *tls_bufferevent_new(struct event_base *base, int fd,
					const struct tls_set *set, enum listener_kind kind,
					bool implicit, SSL **ssl_r)
{
	struct bufferevent *bev;

	*ssl_r = NULL;
	if (!implicit) {
		bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
		if (bev == NULL)
			close(fd);
		return bev;
	}
	SSL *ssl = tls_session_new(set, kind);
	if (ssl == NULL) {
		close(fd);
		return NULL;
	}
	bev = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
					     BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		SSL_free(ssl);
		close(fd);
		return NULL;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	*ssl_r = ssl;
	return bev;
}

struct bufferevent *tls_bufferevent_starttls(struct event_base *base, struct bufferevent *plain,
					     const struct tls_set *set, enum listener_kind kind,
					     SSL **ssl_r, size_t *discarded_r)
{
	*ssl_r = NULL;
	*discarded_r = 0;
	SSL *ssl = tls_session_new(set, kind);
	if (ssl == NULL)
		return NULL;
	/* STARTTLS injection (CVE-2011-0411 class): anything the client
	 * pipelined after the command in plaintext is discarded, never run. */
	struct evbuffer *in = bufferevent_get_input(plain);
	size_t junk = evbuffer_get_length(in);
	if (junk > 0) {
		evbuffer_drain(in, junk);
		*discarded_r = junk;
	}
	struct bufferevent *tls_bev = bufferevent_openssl_filter_new(
		base, plain, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (tls_bev == NULL) {
		SSL_free(ssl);
		return NULL;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(tls_bev, 1);
	*ssl_r = ssl;
	return tls_bev;
}

/* Calls fn for each distinct certificate of the set: the listeners'
 * defaults (each file pair once), then the SNI ones. */
static void tls_set_each_cert(const struct tls_set *set,
			      void (*fn)(const struct tls_cert *c, void *ctx), void *ctx)
{
	for (unsigned k = 0; k < LISTENER_COUNT; k++) {
		const struct tls_cert *c = set->l[k].cert;
		if (c == NULL)
			continue;
		bool seen = false;
		for (unsigned j = 0; j < k && !seen; j++) {
			const struct tls_cert *o = set->l[j].cert;
			seen = o != NULL && strcmp(o->cert_file, c->cert_file) == 0 &&
			       strcmp(o->key_file, c->key_file) == 0;
		}
		if (!seen)
			fn(c, ctx);
	}
	for (size_t i = 0; set->sni != NULL && i < set->sni->ncerts; i++)
		fn(set->sni->certs[i], ctx);
}

void tls_set_describe(const struct tls_set *set, time_t now, struct buf *out)
{
	for (unsigned k = 0; k < LISTENER_COUNT; k++) {
		const struct tls_listener_ctx *l = &set->l[k];
		if (l->ctx == NULL)
			continue;
		buf_printf(out, "%s %s\n", listener_kind_name((enum listener_kind)k),
			   l->address != NULL ? l->address : "-");
		buf_printf(out, "  min version: %s\n",
			   l->min_version == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2");
		buf_printf(out, "  ciphers (TLS 1.2): %s\n",
			   l->ciphers != NULL ? l->ciphers : "(OpenSSL default)");
		buf_printf(out, "  ciphersuites (TLS 1.3): %s\n",
			   l->ciphersuites != NULL ? l->ciphersuites : "(OpenSSL default)");
		buf_printf(out, "  client certificates: %s", tls_client_cert_name(l->client_cert));
		if (l->client_cert != TLS_CLIENT_CERT_NONE && l->client_ca != NULL)
			buf_printf(out, " (CA %s)", l->client_ca);
		buf_append_str(out, "\n  certificate:\n");
		tls_cert_describe(l->cert, now, "    ", out);
	}
	size_t n = set->sni != NULL ? set->sni->ncerts : 0;
	buf_printf(out, "SNI certificates: %zu\n", n);
	for (size_t i = 0; i < n; i++) {
		buf_append_str(out, "  certificate:\n");
		tls_cert_describe(set->sni->certs[i], now, "    ", out);
	}
}

static void tls_subject_cb(const struct tls_cert *c, void *ctx)
{
	struct buf *out = ctx;
	buf_printf(out, "%s%s", out->len > 0 ? "; " : "", c->subject);
}

void tls_set_subjects(const struct tls_set *set, struct buf *out)
{
	struct buf tmp;
	buf_init(&tmp, 16384);
	tls_set_each_cert(set, tls_subject_cb, &tmp);
	if (tmp.len > 0)
		buf_append(out, tmp.data, tmp.len);
	buf_free(&tmp);
}

struct tls_expiry_ctx {
	time_t now;
	unsigned count;
	bool log_all;
};

static void tls_expiry_cb(const struct tls_cert *c, void *arg)
{
	struct tls_expiry_ctx *x = arg;
	long days = tls_cert_days_left(c, x->now);
	char when[40];
	tls_time_text(c->not_after, when, sizeof(when));
	if (x->log_all) {
		struct buf names;
		buf_init(&names, 8192);
		tls_cert_names_text(c, &names);
		log_info("certificate %s (%s): names %s, not after %s, %ld days left",
			 c->subject, c->cert_file, names.data != NULL ? names.data : "", when, days);
		buf_free(&names);
		return;
	}
	if (days >= TLS_EXPIRY_WARN_DAYS)
		return;
	x->count++;
	char days_text[32];
	snprintf(days_text, sizeof(days_text), "%ld", days);
	if (days < 0)
		log_warn("certificate %s expired %ld days ago (%s, not after %s)", c->subject,
			 -days, c->cert_file, when);
	else
		log_warn("certificate %s expires in %ld days (%s, not after %s)", c->subject, days,
			 c->cert_file, when);
	audit_event("certificate_expiring", "subject", c->subject, "file", c->cert_file,
		    "not_after", when, "days_left", days_text, NULL);
}

void tls_set_log(const struct tls_set *set, time_t now)
{
	struct tls_expiry_ctx x = { .now = now, .log_all = true };
	tls_set_each_cert(set, tls_expiry_cb, &x);
}

unsigned tls_set_check_expiry(const struct tls_set *set, time_t now)
{
	struct tls_expiry_ctx x = { .now = now };
	tls_set_each_cert(set, tls_expiry_cb, &x);
	return x.count;
}
