/*
 * tls.c — server TLS contexts and self-signed certificate generation
 * (RFC 3207 STARTTLS and RFC 8314 implicit TLS use the same contexts).
 * Runs in smtpd workers (contexts) and in `postern init` (certificate).
 */
#include "lib-tls/tls.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

static const char *tls_last_error(const char *what)
{
	static _Thread_local char msg[256];
	unsigned long e = ERR_get_error();
	char detail[200] = "unknown error";
	if (e != 0)
		ERR_error_string_n(e, detail, sizeof(detail));
	ERR_clear_error();
	snprintf(msg, sizeof(msg), "%s: %s", what, detail);
	return msg;
}

SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, const char **error_r)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		*error_r = tls_last_error("SSL_CTX_new");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
				 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_set_cipher_list(ctx, "HIGH:!aNULL:!MD5:!RC4:!3DES:!SHA1") != 1) {
		*error_r = tls_last_error("cipher list");
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		*error_r = tls_last_error(cert_file);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		*error_r = tls_last_error(key_file);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		*error_r = tls_last_error("key does not match certificate");
		goto fail;
	}
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"postern", 7);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
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
