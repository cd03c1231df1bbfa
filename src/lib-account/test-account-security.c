/*
 * test-account-security.c — unit tests for the login security data of
 * lib-account (account-security.h): password policy, scopes, CIDR lists,
 * app passwords, TOTP (checked against liboath's own generator) with
 * replay and recovery codes, allowlists, access rules (including a change
 * made through a second connection), failure counters and blocks, password
 * expiry, and the upgrade of a version 1 database. Each case runs against
 * a real SQLite file in a temporary directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <liboath/oath.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib-account/account-security.h"
#include "lib-account/account.h"

#define CHECK(label, cond)                                                   \
	do {                                                                 \
		if (!(cond))                                                 \
			fail_msg("case \"%s\": failed: %s", (label), #cond); \
	} while (0)

#define N(a) (sizeof(a) / sizeof((a)[0]))

struct fixture {
	char dir[64];
	char path[128];
	struct account_db *db;
};

static const char *const suffixes[] = { "", "-wal", "-shm", "-journal" };

static void remove_db(const char *path)
{
	char p[160];
	for (size_t i = 0; i < N(suffixes); i++) {
		snprintf(p, sizeof(p), "%s%s", path, suffixes[i]);
		unlink(p);
	}
}

static int fixture_setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	const char *error = NULL;

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/postern-test-acsec-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/postern.db", f->dir);
	if (account_db_open(f->path, true, &f->db, &error) < 0) {
		fprintf(stderr, "open: %s\n", error);
		return -1;
	}
	if (account_domain_add(f->db, "example.com", &error) < 0 ||
	    account_user_add(f->db, "alice@example.com", "x", &error) < 0 ||
	    account_user_add(f->db, "bob@example.com", "y", &error) < 0) {
		fprintf(stderr, "setup: %s\n", error);
		return -1;
	}
	*state = f;
	return 0;
}

static int fixture_teardown(void **state)
{
	struct fixture *f = *state;
	account_db_close(&f->db);
	remove_db(f->path);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* ---- password policy ------------------------------------------------------ */

static void test_policy(void **state)
{
	(void)state;
	static const struct {
		const char *label, *address, *password;
		unsigned min;
		int ret;
		const char *reason;     /* substring */
	} cases[] = {
		{ "ok", "alice@example.com", "Tr0ub4dor&3-horse", 12, 0, NULL },
		{ "ok random", "alice@example.com", "vq7-Lm2p-X9zk", 12, 0, NULL },
		{ "ok digits only", "alice@example.com", "839274619283", 12, 0, NULL },
		{ "empty", "alice@example.com", "", 12, -1, "empty" },
		{ "too short", "alice@example.com", "Xk9#mW2q", 12, -1, "too short" },
		{ "short in code points", "alice@example.com", "\xc3\xa4\xc3\xa4\xc3\xa4\xc3\xa4"
		  "\xc3\xa4\xc3\xa4", 8, -1, "at least 8" },
		{ "min 8 ok", "alice@example.com", "Xk9#mW2q", 8, 0, NULL },
		{ "default min when 0", "alice@example.com", "Xk9#mW2q", 0, -1, "at least 12" },
		{ "common exact", "alice@example.com", "qwerty123456", 12, -1, "common" },
		{ "common walk", "alice@example.com", "1qaz2wsx3edc", 12, -1, "common" },
		{ "common Password123!", "alice@example.com", "Password123!", 12, -1, "common" },
		{ "common leet", "alice@example.com", "P@ssw0rd2024!", 12, -1, "common" },
		{ "common case", "alice@example.com", "QWERTYUIOP123", 12, -1, "common" },
		{ "common word + digits", "alice@example.com", "monkey12345678", 12, -1, "common" },
		{ "common leading digits", "alice@example.com", "2024football!", 12, -1, "common" },
		{ "common 1 as l", "alice@example.com", "wi11iam123456", 12, -1, "common" },
		{ "repeated", "alice@example.com", "zzzzzzzzzzzzzz", 12, -1, "repeated" },
		{ "local part", "alice@example.com", "my-Alice-pass-99", 12, -1, "user name" },
		{ "whole address", "al@example.com", "xx-al@example.com", 12, -1, "user name" },
		{ "short local part ignored", "al@example.com", "alpine-Kx9-v2q", 12, 0, NULL },
		{ "no address", NULL, "Tr0ub4dor&3-horse", 12, 0, NULL },
	};
	for (size_t i = 0; i < N(cases); i++) {
		struct account_password_policy pol = { .min_length = cases[i].min };
		const char *reason = NULL;
		int ret = account_password_check(cases[i].address, cases[i].password, &pol, &reason);
		CHECK(cases[i].label, ret == cases[i].ret);
		if (cases[i].reason != NULL)
			CHECK(cases[i].label, reason != NULL && strstr(reason, cases[i].reason) != NULL);
	}
}

/* ---- scopes ------------------------------------------------------------------ */

static void test_scope(void **state)
{
	(void)state;
	static const struct {
		const char *label, *in;
		int ret;
		unsigned scope;
		const char *out;
	} cases[] = {
		{ "null", NULL, 0, ACCOUNT_SCOPE_ALL, "smtp,imap,pop3" },
		{ "empty", "", 0, ACCOUNT_SCOPE_ALL, "smtp,imap,pop3" },
		{ "one", "imap", 0, ACCOUNT_SCOPE_IMAP, "imap" },
		{ "two, spaces, case", "SMTP , pop3", 0, ACCOUNT_SCOPE_SMTP | ACCOUNT_SCOPE_POP3,
		  "smtp,pop3" },
		{ "all", "all", 0, ACCOUNT_SCOPE_ALL, "smtp,imap,pop3" },
		{ "unknown", "imap,http", -1, 0, NULL },
		{ "empty item", "imap,", -1, 0, NULL },
	};
	for (size_t i = 0; i < N(cases); i++) {
		unsigned scope = 99;
		char out[32];
		CHECK(cases[i].label, account_scope_parse(cases[i].in, &scope) == cases[i].ret);
		if (cases[i].ret == 0) {
			CHECK(cases[i].label, scope == cases[i].scope);
			account_scope_format(scope, out, sizeof(out));
			CHECK(cases[i].label, strcmp(out, cases[i].out) == 0);
		}
	}
}

/* ---- CIDR lists ------------------------------------------------------------- */

static void test_cidr(void **state)
{
	(void)state;
	static const struct {
		const char *label, *list;
		int valid;
		const char *canon;
	} lists[] = {
		{ "v4", "192.0.2.0/24", 0, "192.0.2.0/24" },
		{ "host bits", "192.0.2.77/24", 0, "192.0.2.0/24" },
		{ "bare", "198.51.100.7", 0, "198.51.100.7" },
		{ "mixed", "10.0.0.0/8, 2001:db8::/32,::1", 0, "10.0.0.0/8,2001:db8::/32,::1" },
		{ "mapped", "::ffff:192.0.2.0/120", 0, "192.0.2.0/24" },
		{ "zero prefix", "0.0.0.0/0", 0, "0.0.0.0/0" },
		{ "bad prefix", "10.0.0.0/33", -1, NULL },
		{ "bad prefix v6", "2001:db8::/129", -1, NULL },
		{ "not a number", "10.0.0.0/x", -1, NULL },
		{ "no prefix digits", "10.0.0.0/", -1, NULL },
		{ "hostname", "example.com", -1, NULL },
		{ "empty item", "10.0.0.0/8,,", -1, NULL },
		{ "empty", "", -1, NULL },
	};
	for (size_t i = 0; i < N(lists); i++) {
		const char *why = NULL;
		char canon[256];
		CHECK(lists[i].label, account_cidr_list_valid(lists[i].list, &why) == lists[i].valid);
		if (lists[i].valid == 0) {
			CHECK(lists[i].label,
			      account_cidr_list_canon(lists[i].list, canon, sizeof(canon), &why) == 0);
			CHECK(lists[i].label, strcmp(canon, lists[i].canon) == 0);
		} else {
			CHECK(lists[i].label, why != NULL);
		}
	}
	static const struct {
		const char *label, *list, *ip;
		bool match;
	} matches[] = {
		{ "in /24", "192.0.2.0/24", "192.0.2.200", true },
		{ "out /24", "192.0.2.0/24", "192.0.3.1", false },
		{ "odd prefix in", "10.0.0.0/13", "10.7.255.255", true },
		{ "odd prefix out", "10.0.0.0/13", "10.8.0.0", false },
		{ "bare", "127.0.0.5", "127.0.0.5", true },
		{ "bare other", "127.0.0.5", "127.0.0.6", false },
		{ "second item", "10.0.0.0/8, 127.0.0.0/8", "127.0.0.1", true },
		{ "v6", "2001:db8::/32", "2001:db8:1::5", true },
		{ "v6 out", "2001:db8::/32", "2001:db9::1", false },
		{ "mapped ip", "127.0.0.0/8", "::ffff:127.0.0.3", true },
		{ "v4 vs v6", "::1", "127.0.0.1", false },
		{ "all v4", "0.0.0.0/0", "203.0.113.9", true },
		{ "invalid list matches nothing", "127.0.0.0/8,bogus", "127.0.0.1", false },
		{ "invalid ip", "127.0.0.0/8", "localhost", false },
	};
	for (size_t i = 0; i < N(matches); i++)
		CHECK(matches[i].label,
		      account_cidr_list_match(matches[i].list, matches[i].ip) == matches[i].match);
}

/* IPv6 clients are throttled per /64; IPv4 (and IPv4-mapped) per address. */
static void test_throttle_key(void **state)
{
	(void)state;
	static const struct {
		const char *label, *ip;
		int ret;
		const char *key;
	} cases[] = {
		{ "v4", "192.0.2.7", 0, "192.0.2.7" },
		{ "v4 key typed back", "192.0.2.7/32", 0, "192.0.2.7" },
		{ "v4 wider prefix", "192.0.2.0/24", -1, "" },
		{ "mapped", "::ffff:192.0.2.7", 0, "192.0.2.7" },
		{ "v6 host", "2001:db8:1:2:aaaa:bbbb:cccc:dddd", 0, "2001:db8:1:2::/64" },
		{ "v6 same /64", "2001:db8:1:2::1", 0, "2001:db8:1:2::/64" },
		{ "v6 next /64", "2001:db8:1:3::1", 0, "2001:db8:1:3::/64" },
		{ "v6 upper case", "2001:DB8::1", 0, "2001:db8::/64" },
		{ "v6 key typed back", "2001:db8:1:2::/64", 0, "2001:db8:1:2::/64" },
		{ "v6 address inside key", "2001:db8:1:2::99/64", 0, "2001:db8:1:2::/64" },
		{ "v6 other prefix", "2001:db8::/48", -1, "" },
		{ "loopback", "::1", 0, "::/64" },
		{ "unknown", "unknown", -1, "" },
		{ "empty", "", -1, "" },
		{ "garbage after", "192.0.2.7x", -1, "" },
	};
	for (size_t i = 0; i < N(cases); i++) {
		char key[ACCOUNT_THROTTLE_KEY_MAX];
		CHECK(cases[i].label,
		      account_throttle_key(cases[i].ip, key, sizeof(key)) == cases[i].ret);
		CHECK(cases[i].label, strcmp(key, cases[i].key) == 0);
	}
	char small[8];
	CHECK("short buffer", account_throttle_key("2001:db8::1", small, sizeof(small)) == -1);
	CHECK("short buffer empty", small[0] == '\0');
}

/* ---- app passwords ------------------------------------------------------------ */

struct ap_seen {
	int count;
	char names[4][32];
	int64_t last_used[4];
	char last_ip[4][32];
	unsigned scope[4];
};

static void ap_cb(const struct account_app_password *ap, void *ctx)
{
	struct ap_seen *s = ctx;
	if (s->count < 4) {
		snprintf(s->names[s->count], 32, "%s", ap->name);
		s->last_used[s->count] = ap->last_used;
		snprintf(s->last_ip[s->count], 32, "%s", ap->last_ip != NULL ? ap->last_ip : "-");
		s->scope[s->count] = ap->scope;
	}
	s->count++;
}

static void test_app_passwords(void **state)
{
	struct fixture *f = *state;
	char pw[ACCOUNT_APP_PASSWORD_CHARS + 6], pw2[ACCOUNT_APP_PASSWORD_CHARS + 6];
	const char *error = NULL;
	char *name = NULL, *allow = NULL;
	unsigned scope = 0;

	assert_int_equal(account_app_password_add(f->db, "Alice@Example.com", "phone",
						   ACCOUNT_SCOPE_IMAP | ACCOUNT_SCOPE_SMTP,
						   pw, sizeof(pw), &error), 0);
	assert_int_equal(strlen(pw), 29);
	for (int i = 0; i < 29; i++) {
		if (i % 5 == 4)
			assert_int_equal(pw[i], '-');
		else
			assert_non_null(strchr("abcdefghijkmnpqrstuvwxyz23456789", pw[i]));
	}
	assert_int_equal(account_app_password_add(f->db, "alice@example.com", "laptop",
						   ACCOUNT_SCOPE_ALL, pw2, sizeof(pw2), &error), 0);
	assert_string_not_equal(pw, pw2);

	static const struct {
		const char *label, *name;
		unsigned scope;
		size_t size;
		const char *address;
		const char *error;
	} bad[] = {
		{ "duplicate name", "phone", ACCOUNT_SCOPE_ALL, 40, "alice@example.com", "already" },
		{ "no such user", "x", ACCOUNT_SCOPE_ALL, 40, "nobody@example.com", "no such user" },
		{ "empty name", "", ACCOUNT_SCOPE_ALL, 40, "alice@example.com", "name" },
		{ "control in name", "a\nb", ACCOUNT_SCOPE_ALL, 40, "alice@example.com", "control" },
		{ "no scope", "y", 0, 40, "alice@example.com", "scope" },
		{ "small buffer", "z", ACCOUNT_SCOPE_ALL, 20, "alice@example.com", "small" },
	};
	for (size_t i = 0; i < N(bad); i++) {
		char out[40];
		error = NULL;
		CHECK(bad[i].label, account_app_password_add(f->db, bad[i].address, bad[i].name,
							     bad[i].scope, out, bad[i].size,
							     &error) == -1);
		CHECK(bad[i].label, error != NULL && strstr(error, bad[i].error) != NULL);
	}

	/* Matching ignores dashes, spaces and case. */
	char variant[64];
	size_t j = 0;
	for (const char *p = pw; *p != '\0'; p++)
		if (*p != '-')
			variant[j++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
	variant[j] = '\0';
	static const struct {
		const char *label;
		int which;      /* 0 pw, 1 variant, 2 pw2, 3 wrong */
		const char *address;
		int ret;
		const char *name;
	} m[] = {
		{ "as shown", 0, "alice@example.com", 1, "phone" },
		{ "upper, no dashes", 1, "ALICE@example.com", 1, "phone" },
		{ "other one", 2, "alice@example.com", 1, "laptop" },
		{ "wrong user", 0, "bob@example.com", 0, NULL },
		{ "not an app password", 3, "alice@example.com", 0, NULL },
	};
	for (size_t i = 0; i < N(m); i++) {
		const char *cand = m[i].which == 0 ? pw : m[i].which == 1 ? variant
				 : m[i].which == 2 ? pw2 : "correct horse battery staple";
		int r = account_app_password_match(f->db, m[i].address, cand, &name, &scope, &allow);
		CHECK(m[i].label, r == m[i].ret);
		if (r == 1)
			CHECK(m[i].label, strcmp(name, m[i].name) == 0);
		else
			CHECK(m[i].label, name == NULL);
		free(name);
		free(allow);
		name = allow = NULL;
	}
	assert_int_equal(account_app_password_match(f->db, "alice@example.com", pw, &name, &scope,
						     &allow), 1);
	assert_int_equal(scope, ACCOUNT_SCOPE_IMAP | ACCOUNT_SCOPE_SMTP);
	assert_null(allow);
	free(name);

	/* Per app password allowlist. */
	assert_int_equal(account_app_password_set_allow_from(f->db, "alice@example.com", "phone",
							      "10.0.0.0/8", &error), 0);
	assert_int_equal(account_app_password_set_allow_from(f->db, "alice@example.com", "nope",
							      "10.0.0.0/8", &error), -1);
	assert_int_equal(account_app_password_set_allow_from(f->db, "alice@example.com", "phone",
							      "10.0.0.0/99", &error), -1);
	assert_int_equal(account_app_password_match(f->db, "alice@example.com", pw, &name, &scope,
						     &allow), 1);
	assert_string_equal(allow, "10.0.0.0/8");
	free(name);
	free(allow);

	/* Use, list, revoke. */
	assert_int_equal(account_app_password_used(f->db, "alice@example.com", "phone",
						    "192.0.2.9"), 0);
	struct ap_seen seen = { 0 };
	assert_int_equal(account_app_password_list(f->db, "alice@example.com", ap_cb, &seen), 0);
	assert_int_equal(seen.count, 2);
	assert_string_equal(seen.names[0], "laptop");
	assert_int_equal(seen.last_used[0], 0);
	assert_string_equal(seen.last_ip[0], "-");
	assert_string_equal(seen.names[1], "phone");
	assert_true(seen.last_used[1] > 0);
	assert_string_equal(seen.last_ip[1], "192.0.2.9");
	assert_int_equal(account_app_password_list(f->db, "nobody@example.com", ap_cb, &seen), -1);

	assert_int_equal(account_app_password_revoke(f->db, "alice@example.com", "phone", &error), 0);
	assert_int_equal(account_app_password_revoke(f->db, "alice@example.com", "phone", &error), -1);
	assert_non_null(strstr(error, "no app password"));
	assert_int_equal(account_app_password_match(f->db, "alice@example.com", pw, &name, &scope,
						     &allow), 0);

	/* Deleting the user deletes the rest. */
	assert_int_equal(account_user_del(f->db, "alice@example.com", &error), 0);
	assert_int_equal(account_app_password_match(f->db, "alice@example.com", pw2, &name, &scope,
						     &allow), 0);
}

/* ---- TOTP ----------------------------------------------------------------------- */

/* The secret from the URI, decoded. */
static size_t uri_secret(const char *uri, char *out, size_t size)
{
	const char *s = strstr(uri, "secret=");
	assert_non_null(s);
	s += 7;
	size_t len = strcspn(s, "&");
	char *bin = NULL;
	size_t binlen = 0;
	assert_int_equal(oath_base32_decode(s, len, &bin, &binlen), OATH_OK);
	assert_true(binlen <= size);
	memcpy(out, bin, binlen);
	free(bin);
	return binlen;
}

static void totp_at(const char *secret, size_t len, time_t t, char out[7])
{
	assert_int_equal(oath_totp_generate(secret, len, t, 30, 0, 6, out), OATH_OK);
}

static void test_totp(void **state)
{
	struct fixture *f = *state;
	char uri[512];
	char codes[ACCOUNT_RECOVERY_CODES][16];
	char secret[64];
	char code[7];
	const char *error = NULL;
	enum account_2fa_state st;
	const time_t t0 = 1800000000;   /* a multiple of 30 */

	assert_int_equal(oath_init(), OATH_OK);
	assert_int_equal(account_2fa_state(f->db, "alice@example.com", &st), 0);
	assert_int_equal(st, ACCOUNT_2FA_OFF);
	assert_int_equal(account_2fa_verify(f->db, "alice@example.com", "123456", t0), 0);
	assert_int_equal(account_2fa_disable(f->db, "alice@example.com", &error), -1);
	assert_non_null(strstr(error, "not enabled"));

	assert_int_equal(account_2fa_enable(f->db, "alice@example.com", uri, sizeof(uri), codes,
					    &error), 0);
	assert_true(strncmp(uri, "otpauth://totp/Postern:alice@example.com?secret=", 48) == 0);
	assert_non_null(strstr(uri, "&issuer=Postern"));
	for (int i = 0; i < ACCOUNT_RECOVERY_CODES; i++) {
		assert_int_equal(strlen(codes[i]), 14);
		assert_int_equal(codes[i][4], '-');
	}
	size_t len = uri_secret(uri, secret, sizeof(secret));
	assert_int_equal(len, ACCOUNT_TOTP_SECRET_BYTES);
	assert_int_equal(account_2fa_state(f->db, "alice@example.com", &st), 0);
	assert_int_equal(st, ACCOUNT_2FA_PENDING);
	/* Re-enrolling while pending replaces the secret. */
	assert_int_equal(account_2fa_enable(f->db, "alice@example.com", uri, sizeof(uri), codes,
					    &error), 0);
	char secret2[64];
	assert_int_equal(uri_secret(uri, secret2, sizeof(secret2)), len);
	assert_memory_not_equal(secret, secret2, len);
	memcpy(secret, secret2, len);

	/* A recovery code is no use before 2FA is on. */
	assert_int_equal(account_2fa_recovery(f->db, "alice@example.com", codes[0]), 0);

	static const struct {
		const char *label;
		long offset;    /* seconds from t0 for the code */
		long now;       /* seconds from t0 for the check */
		const char *literal;
		int ret;
	} steps[] = {
		{ "garbage", 0, 0, "12345x", 0 },
		{ "too short", 0, 0, "12345", 0 },
		{ "two steps early", 60, 0, NULL, 0 },
		{ "previous step ok", -30, 0, NULL, 1 },
		{ "replay", -30, 0, NULL, 0 },
		{ "older step after newer", -60, -30, NULL, 0 },
		{ "current step", 0, 0, NULL, 1 },
		{ "same step again", 0, 5, NULL, 0 },
		{ "next step", 30, 0, NULL, 1 },
		{ "later, with a space", 300, 300, "SPACE", 1 },
		{ "two steps late", 330, 400, NULL, 0 },
	};
	for (size_t i = 0; i < N(steps); i++) {
		char given[16];
		totp_at(secret, len, t0 + steps[i].offset, code);
		if (steps[i].literal == NULL)
			snprintf(given, sizeof(given), "%s", code);
		else if (strcmp(steps[i].literal, "SPACE") == 0)
			snprintf(given, sizeof(given), "%.3s %s", code, code + 3);
		else
			snprintf(given, sizeof(given), "%s", steps[i].literal);
		CHECK(steps[i].label, account_2fa_verify(f->db, "alice@example.com", given,
							 t0 + steps[i].now) == steps[i].ret);
	}
	assert_int_equal(account_2fa_state(f->db, "alice@example.com", &st), 0);
	assert_int_equal(st, ACCOUNT_2FA_ON);
	assert_int_equal(account_2fa_enable(f->db, "alice@example.com", uri, sizeof(uri), codes,
					    &error), -1);
	assert_non_null(strstr(error, "already on"));

	/* Recovery codes: once each, any case, dashes optional. */
	char upper[16];
	for (int i = 0; codes[1][i] != '\0'; i++)
		upper[i] = (char)(codes[1][i] >= 'a' && codes[1][i] <= 'z' ? codes[1][i] - 32
									      : codes[1][i]);
	upper[strlen(codes[1])] = '\0';
	assert_int_equal(account_2fa_recovery(f->db, "alice@example.com", upper), 1);
	assert_int_equal(account_2fa_recovery(f->db, "alice@example.com", codes[1]), 0);
	assert_int_equal(account_2fa_recovery(f->db, "bob@example.com", codes[2]), 0);
	assert_int_equal(account_2fa_recovery(f->db, "alice@example.com", "aaaa-bbbb-cccc"), 0);

	assert_int_equal(account_2fa_disable(f->db, "alice@example.com", &error), 0);
	assert_int_equal(account_2fa_state(f->db, "alice@example.com", &st), 0);
	assert_int_equal(st, ACCOUNT_2FA_OFF);
	assert_int_equal(account_2fa_recovery(f->db, "alice@example.com", codes[2]), 0);
	assert_int_equal(account_2fa_enable(f->db, "nobody@example.com", uri, sizeof(uri), codes,
					    &error), -1);
}

/* ---- allowlists --------------------------------------------------------------- */

static void test_allow_from(void **state)
{
	struct fixture *f = *state;
	const char *error = NULL;
	char *cidrs = NULL;

	assert_int_equal(account_allow_from_get(f->db, "alice@example.com", &cidrs), 0);
	assert_null(cidrs);
	assert_int_equal(account_allow_from_set(f->db, "alice@example.com",
						"127.0.0.5, 10.1.2.3/8", &error), 0);
	assert_int_equal(account_allow_from_get(f->db, "ALICE@example.com", &cidrs), 1);
	assert_string_equal(cidrs, "127.0.0.5,10.0.0.0/8");
	assert_true(account_cidr_list_match(cidrs, "10.9.9.9"));
	assert_false(account_cidr_list_match(cidrs, "127.0.0.6"));
	free(cidrs);
	assert_int_equal(account_allow_from_set(f->db, "alice@example.com", "10.0.0.0/40",
						&error), -1);
	assert_non_null(strstr(error, "invalid CIDR"));
	assert_int_equal(account_allow_from_set(f->db, "nobody@example.com", "10.0.0.0/8",
						&error), -1);
	assert_int_equal(account_allow_from_set(f->db, "alice@example.com", NULL, &error), 0);
	assert_int_equal(account_allow_from_get(f->db, "alice@example.com", &cidrs), 0);
}

/* ---- access rules --------------------------------------------------------------- */

static void count_rule_cb(const struct account_access_rule *r, void *ctx)
{
	(void)r;
	(*(int *)ctx)++;
}

static void test_access(void **state)
{
	struct fixture *f = *state;
	struct account_db *other = NULL;
	const char *error = NULL;

	/* No rules: everyone. */
	assert_int_equal(account_access_check(f->db, "203.0.113.1", "smtp"), 1);

	static const struct {
		const char *cidr, *listener;
		enum account_access_action action;
	} rules[] = {
		{ "203.0.113.0/24", NULL, ACCOUNT_ACCESS_DENY },
		{ "127.0.0.0/8", "imaps", ACCOUNT_ACCESS_ALLOW },
		{ "127.0.0.9", "imaps", ACCOUNT_ACCESS_DENY },
		{ "2001:db8::/32", "submission", ACCOUNT_ACCESS_ALLOW },
	};
	for (size_t i = 0; i < N(rules); i++)
		assert_int_equal(account_access_add(f->db, rules[i].cidr, rules[i].listener,
						    rules[i].action, &error), 0);
	static const struct {
		const char *label, *ip, *listener;
		int ret;
	} cases[] = {
		{ "global deny", "203.0.113.7", "smtp", 0 },
		{ "global deny on imaps too", "203.0.113.7", "imaps", 0 },
		{ "other ip, smtp: no allow rules", "198.51.100.1", "smtp", 1 },
		{ "imaps allow rule admits", "127.0.0.5", "imaps", 1 },
		{ "imaps allow rule excludes others", "198.51.100.1", "imaps", 0 },
		{ "listener deny beats its allow", "127.0.0.9", "imaps", 0 },
		{ "listener deny only there", "127.0.0.9", "imap", 1 },
		{ "v6 allow", "2001:db8::5", "submission", 1 },
		{ "v4 not in v6 allow", "127.0.0.1", "submission", 0 },
		{ "mapped deny", "::ffff:203.0.113.7", "smtp", 0 },
		{ "no listener: global rules only", "127.0.0.9", NULL, 1 },
	};
	for (size_t i = 0; i < N(cases); i++)
		CHECK(cases[i].label,
		      account_access_check(f->db, cases[i].ip, cases[i].listener) == cases[i].ret);

	/* Errors. */
	assert_int_equal(account_access_add(f->db, "10.0.0.0/8", "ftp", ACCOUNT_ACCESS_DENY,
					    &error), -1);
	assert_non_null(strstr(error, "unknown listener"));
	assert_int_equal(account_access_add(f->db, "10.0.0.0/8,11.0.0.0/8", NULL,
					    ACCOUNT_ACCESS_DENY, &error), -1);
	assert_int_equal(account_access_add(f->db, "nonsense", NULL, ACCOUNT_ACCESS_DENY,
					    &error), -1);
	assert_int_equal(account_access_del(f->db, "10.0.0.0/8", NULL, &error), -1);
	assert_non_null(strstr(error, "no such rule"));

	/* Replacing the action of an existing rule. */
	assert_int_equal(account_access_add(f->db, "203.0.113.0/24", NULL, ACCOUNT_ACCESS_ALLOW,
					    &error), 0);
	assert_int_equal(account_access_check(f->db, "203.0.113.7", "smtp"), 1);
	/* Now there is a global allow rule: others are out on smtp. */
	assert_int_equal(account_access_check(f->db, "198.51.100.1", "smtp"), 0);
	int count = 0;
	assert_int_equal(account_access_list(f->db, count_rule_cb, &count), 0);
	assert_int_equal(count, 4);

	/* A change through another connection (the CLI) reaches the cache. */
	assert_int_equal(account_db_open(f->path, false, &other, &error), 0);
	assert_int_equal(account_access_del(other, "203.0.113.77/24", NULL, &error), 0);
	assert_int_equal(account_access_check(f->db, "198.51.100.1", "smtp"), 1);
	assert_int_equal(account_access_add(other, "198.51.100.0/24", "smtp", ACCOUNT_ACCESS_DENY,
					    &error), 0);
	assert_int_equal(account_access_check(f->db, "198.51.100.1", "smtp"), 0);
	assert_int_equal(account_access_del(other, "198.51.100.0/24", "smtp", &error), 0);
	assert_int_equal(account_access_check(f->db, "198.51.100.1", "smtp"), 1);
	account_db_close(&other);
}

/* ---- failures and blocks --------------------------------------------------------- */

struct block_seen {
	int count;
	enum account_block_kind kind[4];
	char key[4][64];
	unsigned failures[4];
};

static void block_cb(const struct account_block *b, void *ctx)
{
	struct block_seen *s = ctx;
	if (s->count < 4) {
		s->kind[s->count] = b->kind;
		snprintf(s->key[s->count], 64, "%s", b->key);
		s->failures[s->count] = b->failures;
	}
	s->count++;
}

static void test_failures(void **state)
{
	struct fixture *f = *state;
	const time_t t = 1800000000;
	const unsigned window = 900;
	time_t until = 0;

	static const struct {
		const char *label;
		enum account_block_kind kind;
		const char *key, *address;
		long at;
		int count;
	} steps[] = {
		{ "first", ACCOUNT_BLOCK_IP, "192.0.2.1", "alice@example.com", 0, 1 },
		{ "second", ACCOUNT_BLOCK_IP, "192.0.2.1", "bob@example.com", 10, 2 },
		{ "third", ACCOUNT_BLOCK_IP, "192.0.2.1", "alice@example.com", 20, 3 },
		{ "other ip", ACCOUNT_BLOCK_IP, "192.0.2.2", NULL, 20, 1 },
		{ "account", ACCOUNT_BLOCK_ACCOUNT, "alice@example.com", NULL, 20, 1 },
		{ "after the window: again 1", ACCOUNT_BLOCK_IP, "192.0.2.2", NULL, 20 + 901, 1 },
	};
	for (size_t i = 0; i < N(steps); i++)
		CHECK(steps[i].label, account_fail_record(f->db, steps[i].kind, steps[i].key,
							  steps[i].address, t + steps[i].at,
							  window) == steps[i].count);
	assert_int_equal(account_fail_count(f->db, ACCOUNT_BLOCK_IP, "192.0.2.1", t + 20, window), 3);
	assert_int_equal(account_fail_count(f->db, ACCOUNT_BLOCK_IP, "192.0.2.1", t + 2000, window), 0);
	assert_int_equal(account_fail_count(f->db, ACCOUNT_BLOCK_IP, "192.0.2.99", t, window), 0);
	assert_int_equal(account_fail_ip_tried(f->db, "192.0.2.1", "alice@example.com", t + 30,
					       window), 1);
	assert_int_equal(account_fail_ip_tried(f->db, "192.0.2.2", "alice@example.com", t + 30,
					       window), 0);
	assert_int_equal(account_fail_ip_tried(f->db, "192.0.2.1", "alice@example.com", t + 2000,
					       window), 0);

	/* A login of alice from 192.0.2.1 forgets that IP's record against
	 * alice only: its IP-wide count and its record against bob stay. */
	assert_int_equal(account_fail_clear_ip_account(f->db, "192.0.2.1", "alice@example.com"), 0);
	assert_int_equal(account_fail_ip_tried(f->db, "192.0.2.1", "alice@example.com", t + 30,
					       window), 0);
	assert_int_equal(account_fail_ip_tried(f->db, "192.0.2.1", "bob@example.com", t + 30,
					       window), 1);
	assert_int_equal(account_fail_count(f->db, ACCOUNT_BLOCK_IP, "192.0.2.1", t + 20, window), 3);
	assert_int_equal(account_fail_record(f->db, ACCOUNT_BLOCK_IP, "192.0.2.1",
					     "alice@example.com", t + 25, window), 4);

	/* Clearing the IP key (unblock) keeps its per-account record. */
	assert_int_equal(account_fail_clear(f->db, ACCOUNT_BLOCK_IP, "192.0.2.1"), 0);
	assert_int_equal(account_fail_count(f->db, ACCOUNT_BLOCK_IP, "192.0.2.1", t + 20, window), 0);
	assert_int_equal(account_fail_ip_tried(f->db, "192.0.2.1", "alice@example.com", t + 30,
					       window), 1);

	/* Blocks (real time: account_block_set stamps "since" with now). */
	time_t now = time(NULL);
	assert_int_equal(account_block_get(f->db, ACCOUNT_BLOCK_IP, "192.0.2.1", now, &until), 0);
	assert_int_equal(account_block_set(f->db, ACCOUNT_BLOCK_IP, "192.0.2.2", now + 900,
					   "failed logins"), 0);
	assert_int_equal(account_block_set(f->db, ACCOUNT_BLOCK_ACCOUNT, "alice@example.com",
					   now + 600, NULL), 0);
	assert_int_equal(account_block_get(f->db, ACCOUNT_BLOCK_IP, "192.0.2.2", now, &until), 1);
	assert_int_equal(until, now + 900);
	assert_int_equal(account_block_get(f->db, ACCOUNT_BLOCK_IP, "192.0.2.2", now + 900,
					   &until), 0);
	struct block_seen seen = { 0 };
	assert_int_equal(account_block_list(f->db, now, block_cb, &seen), 0);
	assert_int_equal(seen.count, 2);
	assert_int_equal(account_block_list(f->db, now + 700, block_cb, &(struct block_seen){ 0 }),
			 0);
	seen.count = 0;
	assert_int_equal(account_block_list(f->db, now + 700, block_cb, &seen), 0);
	assert_int_equal(seen.count, 1);
	assert_int_equal(seen.kind[0], ACCOUNT_BLOCK_IP);
	assert_string_equal(seen.key[0], "192.0.2.2");
	assert_int_equal(seen.failures[0], 1);

	assert_int_equal(account_block_del(f->db, ACCOUNT_BLOCK_IP, "192.0.2.2"), 1);
	assert_int_equal(account_block_del(f->db, ACCOUNT_BLOCK_IP, "192.0.2.2"), 0);
	assert_int_equal(account_block_get(f->db, ACCOUNT_BLOCK_IP, "192.0.2.2", now, &until), 0);
	assert_int_equal(account_block_del(f->db, ACCOUNT_BLOCK_ACCOUNT, "alice@example.com"), 1);
	assert_int_equal(account_fail_count(f->db, ACCOUNT_BLOCK_ACCOUNT, "alice@example.com",
					    t + 20, window), 0);
	/* Unblocking the account forgets which IPs tried it. */
	assert_int_equal(account_fail_ip_tried(f->db, "192.0.2.1", "alice@example.com", t + 30,
					       window), 0);
}

/* ---- expiry and the schema upgrade ---------------------------------------------- */

static void test_expiry(void **state)
{
	struct fixture *f = *state;
	const char *error = NULL;
	time_t now = time(NULL);

	assert_int_equal(account_password_expired_after(f->db, "alice@example.com", 0, now + 99999),
			 0);
	assert_int_equal(account_password_expired_after(f->db, "alice@example.com", 3600, now), 0);
	assert_int_equal(account_password_expired_after(f->db, "alice@example.com", 3600,
							now + 7200), 1);
	assert_int_equal(account_password_expired(f->db, "alice@example.com", 1), 0);
	assert_int_equal(account_password_expired_after(f->db, "nobody@example.com", 1, now + 10),
			 0);
	/* passwd stamps the change. */
	sqlite3 *raw = NULL;
	assert_int_equal(sqlite3_open(f->path, &raw), SQLITE_OK);
	assert_int_equal(sqlite3_exec(raw, "UPDATE users SET password_changed = 1000", NULL, NULL,
				      NULL), SQLITE_OK);
	sqlite3_close(raw);
	assert_int_equal(account_password_expired(f->db, "alice@example.com", 1), 1);
	assert_int_equal(account_user_passwd(f->db, "alice@example.com", "z", &error), 0);
	assert_int_equal(account_password_expired(f->db, "alice@example.com", 1), 0);
	/* The library itself only refuses empty passwords now. */
	assert_int_equal(account_user_passwd(f->db, "alice@example.com", "", &error), -1);
}

static void test_upgrade(void **state)
{
	(void)state;
	char dir[64], path[128];
	struct account_db *db = NULL;
	const char *error = NULL;
	sqlite3 *raw = NULL;

	snprintf(dir, sizeof(dir), "/tmp/postern-test-acup-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/postern.db", dir);
	/* A version 1 database as the previous release made it. */
	assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
	assert_int_equal(sqlite3_exec(raw,
		"CREATE TABLE schema_version (component TEXT PRIMARY KEY NOT NULL,"
		" version INTEGER NOT NULL);"
		"CREATE TABLE domains (name TEXT PRIMARY KEY NOT NULL, created INTEGER NOT NULL);"
		"CREATE TABLE users (address TEXT PRIMARY KEY NOT NULL,"
		" domain TEXT NOT NULL REFERENCES domains(name), password_hash TEXT NOT NULL,"
		" created INTEGER NOT NULL);"
		"CREATE TABLE aliases (alias TEXT PRIMARY KEY NOT NULL, domain TEXT NOT NULL,"
		" targets TEXT NOT NULL, created INTEGER NOT NULL);"
		"CREATE TABLE user_quota (address TEXT PRIMARY KEY NOT NULL, bytes INTEGER NOT NULL,"
		" messages INTEGER NOT NULL);"
		"INSERT INTO schema_version VALUES ('account', 1);"
		"INSERT INTO domains VALUES ('old.test', 1);"
		"INSERT INTO users VALUES ('carol@old.test', 'old.test', 'x', 1000);",
		NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(raw);

	/* Opened without create (the queue, the deliverer): upgraded too. */
	assert_int_equal(account_db_open(path, false, &db, &error), 0);
	assert_int_equal(account_password_expired(db, "carol@old.test", 1), 1);
	char pw[40];
	assert_int_equal(account_app_password_add(db, "carol@old.test", "mua", ACCOUNT_SCOPE_ALL,
						   pw, sizeof(pw), &error), 0);
	account_db_close(&db);
	assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_prepare_v2(raw, "SELECT version FROM schema_version"
					    " WHERE component = 'account'", -1, &st, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 2);
	sqlite3_finalize(st);
	sqlite3_close(raw);
	/* And again: idempotent. */
	assert_int_equal(account_db_open(path, true, &db, &error), 0);
	account_db_close(&db);
	remove_db(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_policy),
		cmocka_unit_test(test_scope),
		cmocka_unit_test(test_cidr),
		cmocka_unit_test(test_throttle_key),
		cmocka_unit_test_setup_teardown(test_app_passwords, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_totp, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_allow_from, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_access, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_failures, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_expiry, fixture_setup, fixture_teardown),
		cmocka_unit_test(test_upgrade),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
