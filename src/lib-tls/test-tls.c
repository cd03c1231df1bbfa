/*
 * test-tls.c — unit tests for lib-tls: certificate names and wildcard
 * matching, certificate loading errors, expiry arithmetic, and the listener
 * set driven through in-memory handshakes (BIO pairs): minimum versions per
 * listener, SNI selection and client certificates.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "lib-tls/tls.h"

static char dir[64];
static char path_buf[8][300];

static const char *tmp_path(unsigned slot, const char *name)
{
	snprintf(path_buf[slot], sizeof(path_buf[slot]), "%s/%s", dir, name);
	return path_buf[slot];
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/postern-test-tls-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	const char *error;
	char sni[300];
	snprintf(sni, sizeof(sni), "%s/sni", dir);
	if (mkdir(sni, 0700) < 0)
		return -1;
	/* default: mail.test; SNI: other.test; a stray key for mismatch tests */
	if (tls_make_self_signed("mail.test", tmp_path(0, "cert.pem"), tmp_path(1, "key.pem"),
				 &error) < 0 ||
	    tls_make_self_signed("other.test", tmp_path(0, "sni/other.test.pem"),
				 tmp_path(1, "sni/other.test.key"), &error) < 0 ||
	    tls_make_self_signed("client.test", tmp_path(0, "client.pem"),
				 tmp_path(1, "client.key"), &error) < 0 ||
	    tls_make_self_signed("stray.test", tmp_path(0, "stray.pem"), tmp_path(1, "stray.key"),
				 &error) < 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- names ---- */

static const struct {
	const char *label, *pattern, *host;
	bool match;
} name_cases[] = {
	{ "exact", "mail.example.com", "mail.example.com", true },
	{ "case", "Mail.Example.COM", "mail.example.com", true },
	{ "other name", "mail.example.com", "www.example.com", false },
	{ "wildcard one label", "*.example.com", "www.example.com", true },
	{ "wildcard case", "*.example.com", "WWW.Example.Com", true },
	{ "wildcard two labels", "*.example.com", "a.b.example.com", false },
	{ "wildcard bare domain", "*.example.com", "example.com", false },
	{ "wildcard empty label", "*.example.com", ".example.com", false },
	{ "wildcard other domain", "*.example.com", "www.example.org", false },
	{ "wildcard suffix trick", "*.example.com", "www.badexample.com", false },
	{ "literal star host", "*.example.com", "*.example.com", false },
	{ "partial wildcard unsupported", "w*.example.com", "www.example.com", false },
	{ "empty host", "mail.example.com", "", false },
	{ "lone star", "*", "localhost", false },
};

static void test_name_match(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(name_cases) / sizeof(name_cases[0]); i++) {
		bool got = tls_name_match(name_cases[i].pattern, name_cases[i].host);
		if (got != name_cases[i].match)
			fail_msg("case \"%s\": %s vs %s: got %d", name_cases[i].label,
				 name_cases[i].pattern, name_cases[i].host, got);
	}
}

/* ---- loading ---- */

static void test_cert_load(void **state)
{
	(void)state;
	const char *error = NULL;
	struct tls_cert *c = tls_cert_load(tmp_path(0, "cert.pem"), tmp_path(1, "key.pem"),
					   &error);
	assert_non_null(c);
	assert_int_equal(tls_cert_name_count(c), 2);
	assert_string_equal(tls_cert_name(c, 0), "mail.test");
	assert_string_equal(tls_cert_name(c, 1), "localhost");
	assert_null(tls_cert_name(c, 2));
	assert_non_null(strstr(tls_cert_subject(c), "CN=mail.test"));
	assert_true(tls_cert_covers(c, "MAIL.test"));
	assert_false(tls_cert_covers(c, "other.test"));
	/* tls_make_self_signed: 10 years */
	long days = tls_cert_days_left(c, time(NULL));
	assert_true(days >= 3649 && days <= 3650);
	time_t end = tls_cert_not_after(c);
	assert_int_equal(tls_cert_days_left(c, end - 5 * 86400), 5);
	assert_int_equal(tls_cert_days_left(c, end - 5 * 86400 + 1), 4);
	assert_int_equal(tls_cert_days_left(c, end), 0);
	assert_int_equal(tls_cert_days_left(c, end + 1), -1);
	assert_int_equal(tls_cert_days_left(c, end + 3 * 86400), -3);

	struct buf out;
	buf_init(&out, 8192);
	tls_cert_describe(c, end - 10 * 86400, "  ", &out);
	assert_non_null(strstr(out.data, "  names: mail.test, localhost\n"));
	assert_non_null(strstr(out.data, "(10 days left)"));
	buf_free(&out);
	tls_cert_free(&c);
	assert_null(c);
}

static const struct {
	const char *label, *cert, *key, *error;
} load_errors[] = {
	{ "key of another certificate", "cert.pem", "stray.key", "does not match" },
	{ "missing certificate", "nonexistent.pem", "key.pem", "cannot open" },
	{ "missing key", "cert.pem", "nonexistent.key", "cannot open" },
	{ "key given as certificate", "key.pem", "key.pem", "no PEM certificate" },
	{ "certificate given as key", "cert.pem", "cert.pem", "no unencrypted PEM private key" },
};

static void test_cert_load_errors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(load_errors) / sizeof(load_errors[0]); i++) {
		const char *error = NULL;
		struct tls_cert *c = tls_cert_load(tmp_path(0, load_errors[i].cert),
						   tmp_path(1, load_errors[i].key), &error);
		if (c != NULL)
			fail_msg("case \"%s\": loaded", load_errors[i].label);
		if (error == NULL || strstr(error, load_errors[i].error) == NULL)
			fail_msg("case \"%s\": error \"%s\"", load_errors[i].label,
				 error != NULL ? error : "(null)");
	}
}

/* ---- the listener set, through in-memory handshakes ---- */

static struct config *load_config(const char *extra)
{
	char text[4096];
	snprintf(text, sizeof(text),
		 "hostname = mail.test\ndata_dir = %s\n"
		 "tls.cert = %s/cert.pem\ntls.key = %s/key.pem\ntls.dir = %s/sni\n"
		 "listen.smtp = 127.0.0.1:2525\nlisten.imaps = 127.0.0.1:9930\n%s",
		 dir, dir, dir, dir, extra);
	const char *conf = tmp_path(2, "postern.conf");
	FILE *f = fopen(conf, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	struct config *cfg;
	char *errors = NULL;
	if (config_load(conf, &cfg, &errors) < 0)
		fail_msg("config: %s", errors);
	return cfg;
}

struct client_opts {
	const char *sni;         /* NULL: no server_name */
	int max_version;         /* 0: any */
	bool client_cert;        /* present client.pem */
};

/* Runs a handshake between a server SSL of the set's listener kind and a
 * client; returns 1 on success (and the server certificate's CN in cn),
 * 0 on failure. */
static int handshake(const struct tls_set *set, enum listener_kind kind,
		     const struct client_opts *o, char *cn, size_t cn_size)
{
	SSL *server = tls_session_new(set, kind);
	assert_non_null(server);
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(cctx);
	SSL_CTX_set_security_level(cctx, 0);
	SSL_CTX_set_min_proto_version(cctx, TLS1_2_VERSION);
	if (o->max_version != 0)
		SSL_CTX_set_max_proto_version(cctx, o->max_version);
	if (o->client_cert) {
		assert_int_equal(SSL_CTX_use_certificate_file(cctx, tmp_path(3, "client.pem"),
							      SSL_FILETYPE_PEM), 1);
		assert_int_equal(SSL_CTX_use_PrivateKey_file(cctx, tmp_path(3, "client.key"),
							     SSL_FILETYPE_PEM), 1);
	}
	SSL *client = SSL_new(cctx);
	if (o->sni != NULL)
		SSL_set_tlsext_host_name(client, o->sni);
	BIO *sbio, *cbio;
	assert_int_equal(BIO_new_bio_pair(&sbio, 0, &cbio, 0), 1);
	SSL_set_bio(server, sbio, sbio);
	SSL_set_bio(client, cbio, cbio);
	SSL_set_accept_state(server);
	SSL_set_connect_state(client);
	int ok = 0;
	bool cdone = false, sdone = false;
	for (int round = 0; round < 50 && !(cdone && sdone); round++) {
		if (!cdone) {
			int r = SSL_do_handshake(client);
			if (r == 1)
				cdone = true;
			else if (SSL_get_error(client, r) != SSL_ERROR_WANT_READ)
				break;
		}
		if (!sdone) {
			int r = SSL_do_handshake(server);
			if (r == 1)
				sdone = true;
			else if (SSL_get_error(server, r) != SSL_ERROR_WANT_READ)
				break;
		}
	}
	/* TLS 1.3: the server's verdict on a client certificate reaches the
	 * client after its handshake "finished"; a read shows it. */
	if (cdone && sdone) {
		char byte;
		SSL_write(server, "x", 1);
		ok = SSL_read(client, &byte, 1) == 1;
	}
	if (ok && cn != NULL) {
		X509 *peer = SSL_get1_peer_certificate(client);
		assert_non_null(peer);
		X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn,
					  (int)cn_size);
		X509_free(peer);
	}
	ERR_clear_error();
	SSL_free(client);
	SSL_free(server);
	SSL_CTX_free(cctx);
	return ok;
}

static void test_set_versions_and_sni(void **state)
{
	(void)state;
	struct config *cfg = load_config("tls.imaps.min_version = TLSv1.3\n");
	const char *error = NULL;
	struct tls_set *set = tls_set_new(cfg, &error);
	if (set == NULL)
		fail_msg("tls_set_new: %s", error);
	assert_null(tls_session_new(set, LISTENER_POP3S));   /* not configured */

	static const struct {
		const char *label;
		enum listener_kind kind;
		struct client_opts o;
		int ok;
		const char *cn;
	} cases[] = {
		{ "smtp any", LISTENER_SMTP, { NULL, 0, false }, 1, "mail.test" },
		{ "smtp TLS 1.2", LISTENER_SMTP, { NULL, TLS1_2_VERSION, false }, 1, "mail.test" },
		{ "smtp TLS 1.1 only", LISTENER_SMTP, { NULL, TLS1_1_VERSION, false }, 0, NULL },
		{ "imaps TLS 1.3", LISTENER_IMAPS, { NULL, 0, false }, 1, "mail.test" },
		{ "imaps TLS 1.2 refused", LISTENER_IMAPS, { NULL, TLS1_2_VERSION, false }, 0, NULL },
		{ "sni other", LISTENER_SMTP, { "other.test", 0, false }, 1, "other.test" },
		{ "sni other case", LISTENER_IMAPS, { "OTHER.Test", 0, false }, 1, "other.test" },
		{ "sni other TLS 1.2", LISTENER_SMTP, { "other.test", TLS1_2_VERSION, false }, 1,
		  "other.test" },
		{ "sni default name", LISTENER_SMTP, { "mail.test", 0, false }, 1, "mail.test" },
		{ "sni unknown name", LISTENER_SMTP, { "nobody.test", 0, false }, 1, "mail.test" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char cn[256] = "";
		int ok = handshake(set, cases[i].kind, &cases[i].o, cn, sizeof(cn));
		if (ok != cases[i].ok)
			fail_msg("case \"%s\": handshake %d", cases[i].label, ok);
		if (ok && strcmp(cn, cases[i].cn) != 0)
			fail_msg("case \"%s\": certificate %s", cases[i].label, cn);
	}

	struct buf out;
	buf_init(&out, 65536);
	tls_set_describe(set, time(NULL), &out);
	assert_non_null(strstr(out.data, "smtp 127.0.0.1:2525\n  min version: TLSv1.2\n"));
	assert_non_null(strstr(out.data, "imaps 127.0.0.1:9930\n  min version: TLSv1.3\n"));
	assert_non_null(strstr(out.data, "client certificates: none"));
	assert_non_null(strstr(out.data, "SNI certificates: 1\n"));
	assert_non_null(strstr(out.data, "CN=other.test"));
	assert_null(strstr(out.data, "pop3s"));
	buf_reset(&out);
	tls_set_subjects(set, &out);
	assert_non_null(strstr(out.data, "CN=mail.test"));
	assert_non_null(strstr(out.data, "; "));
	assert_non_null(strstr(out.data, "CN=other.test"));
	buf_free(&out);

	/* Expiry: nothing within 14 days now; both certificates 10 days
	 * before their end. */
	assert_int_equal(tls_set_check_expiry(set, time(NULL)), 0);
	assert_int_equal(tls_set_check_expiry(set, time(NULL) + (3650L - 10) * 86400), 2);

	/* A session outlives the set it was made from (reference counts). */
	SSL *ssl = tls_session_new(set, LISTENER_SMTP);
	struct tls_set *ref = tls_set_ref(set);
	tls_set_free(&set);
	assert_null(set);
	tls_set_free(&ref);
	assert_non_null(SSL_get_SSL_CTX(ssl));
	SSL_free(ssl);
	config_free(&cfg);
}

static void test_set_client_cert(void **state)
{
	(void)state;
	char extra[600];
	snprintf(extra, sizeof(extra),
		 "tls.smtp.client_cert = required\ntls.imaps.client_cert = optional\n"
		 "tls.client_ca = %s/client.pem\n", dir);
	struct config *cfg = load_config(extra);
	const char *error = NULL;
	struct tls_set *set = tls_set_new(cfg, &error);
	if (set == NULL)
		fail_msg("tls_set_new: %s", error);
	static const struct {
		const char *label;
		enum listener_kind kind;
		struct client_opts o;
		int ok;
	} cases[] = {
		{ "required, none given", LISTENER_SMTP, { NULL, 0, false }, 0 },
		{ "required, none given, 1.2", LISTENER_SMTP, { NULL, TLS1_2_VERSION, false }, 0 },
		{ "required, given", LISTENER_SMTP, { NULL, 0, true }, 1 },
		{ "required, given, 1.2", LISTENER_SMTP, { NULL, TLS1_2_VERSION, true }, 1 },
		{ "required, given, sni", LISTENER_SMTP, { "other.test", 0, true }, 1 },
		{ "optional, none given", LISTENER_IMAPS, { NULL, 0, false }, 1 },
		{ "optional, given", LISTENER_IMAPS, { NULL, 0, true }, 1 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int ok = handshake(set, cases[i].kind, &cases[i].o, NULL, 0);
		if (ok != cases[i].ok)
			fail_msg("case \"%s\": handshake %d", cases[i].label, ok);
	}
	struct buf out;
	buf_init(&out, 65536);
	tls_set_describe(set, time(NULL), &out);
	assert_non_null(strstr(out.data, "client certificates: required (CA "));
	assert_non_null(strstr(out.data, "client certificates: optional (CA "));
	buf_free(&out);
	tls_set_free(&set);
	config_free(&cfg);
}

static void test_set_errors(void **state)
{
	(void)state;
	char extra[600];
	static const struct {
		const char *label, *extra, *error;
	} cases[] = {
		{ "client cert without CA", "tls.smtp.client_cert = optional\n", "needs" },
		{ "bad ciphers", "tls.smtp.ciphers = NOSUCHCIPHER\n", "tls.smtp.ciphers" },
		{ "bad suites", "tls.imaps.ciphersuites = TLS_NOPE\n", "tls.imaps.ciphersuites" },
		{ "listener cert without key", "tls.smtp.cert = %s/stray.pem\n", "go together" },
		{ "listener key mismatch", "tls.smtp.cert = %s/stray.pem\ntls.smtp.key = %s/key.pem\n",
		  "does not match" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(extra, sizeof(extra), cases[i].extra, dir, dir);
		struct config *cfg = load_config(extra);
		const char *error = NULL;
		struct tls_set *set = tls_set_new(cfg, &error);
		if (set != NULL)
			fail_msg("case \"%s\": loaded", cases[i].label);
		if (error == NULL || strstr(error, cases[i].error) == NULL)
			fail_msg("case \"%s\": error \"%s\"", cases[i].label, error);
		config_free(&cfg);
	}

	/* A broken pair in tls.dir fails the whole set (the daemon keeps the
	 * old one); a .pem without .key there is not an SNI pair. */
	char cmd[900];
	snprintf(cmd, sizeof(cmd), "cp %s/stray.pem %s/sni/bad.test.pem && cp %s/key.pem "
		 "%s/sni/bad.test.key && cp %s/stray.pem %s/sni/lonely.pem", dir, dir, dir, dir,
		 dir, dir);
	assert_int_equal(system(cmd), 0);
	struct config *cfg = load_config("");
	const char *error = NULL;
	struct tls_set *set = tls_set_new(cfg, &error);
	assert_null(set);
	assert_non_null(strstr(error, "bad.test.key does not match"));
	snprintf(cmd, sizeof(cmd), "rm %s/sni/bad.test.pem %s/sni/bad.test.key", dir, dir);
	assert_int_equal(system(cmd), 0);
	set = tls_set_new(cfg, &error);
	assert_non_null(set);
	struct buf out;
	buf_init(&out, 65536);
	tls_set_describe(set, time(NULL), &out);
	assert_non_null(strstr(out.data, "SNI certificates: 1\n"));
	buf_free(&out);
	tls_set_free(&set);
	config_free(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_match),
		cmocka_unit_test(test_cert_load),
		cmocka_unit_test(test_cert_load_errors),
		cmocka_unit_test(test_set_versions_and_sni),
		cmocka_unit_test(test_set_client_cert),
		cmocka_unit_test(test_set_errors),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
