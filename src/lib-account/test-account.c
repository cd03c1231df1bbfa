/*
 * test-account.c — unit tests for lib-account: the domain/user/alias
 * mutators and their errors, password hashing, recipient resolution and
 * sender ownership, each against a real SQLite file in a temporary directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib-account/account.h"
#include "lib/buf.h"

#define CHECK(label, cond)                                                   \
	do {                                                                 \
		if (!(cond))                                                 \
			fail_msg("case \"%s\": failed: %s", (label), #cond); \
	} while (0)

struct fixture {
	char dir[64];
	char path[128];
	struct account_db *db;
};

static int fixture_setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	const char *error = NULL;

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/postern-test-account-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/postern.db", f->dir);
	if (account_db_open(f->path, true, &f->db, &error) < 0) {
		fprintf(stderr, "open: %s\n", error);
		return -1;
	}
	*state = f;
	return 0;
}

static int fixture_teardown(void **state)
{
	struct fixture *f = *state;
	static const char *const suffixes[] = { "", "-wal", "-shm", "-journal" };
	char p[160];

	account_db_close(&f->db);
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", f->path, suffixes[i]);
		unlink(p);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

/* ---- a script of mutations with their expected outcome ---------------- */

enum op {
	OP_DOMAIN_ADD, OP_DOMAIN_DEL, OP_USER_ADD, OP_USER_DEL, OP_USER_PASSWD,
	OP_ALIAS_ADD, OP_ALIAS_DEL,
};

struct step {
	const char *label;
	enum op op;
	const char *a, *b;
	int ret;
	const char *error;      /* a substring of the error when ret == -1 */
};

static void run_steps(struct account_db *db, const struct step *steps, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct step *s = &steps[i];
		const char *error = NULL;
		int ret = -2;

		switch (s->op) {
		case OP_DOMAIN_ADD: ret = account_domain_add(db, s->a, &error); break;
		case OP_DOMAIN_DEL: ret = account_domain_del(db, s->a, &error); break;
		case OP_USER_ADD: ret = account_user_add(db, s->a, s->b, &error); break;
		case OP_USER_DEL: ret = account_user_del(db, s->a, &error); break;
		case OP_USER_PASSWD: ret = account_user_passwd(db, s->a, s->b, &error); break;
		case OP_ALIAS_ADD: ret = account_alias_add(db, s->a, s->b, &error); break;
		case OP_ALIAS_DEL: ret = account_alias_del(db, s->a, &error); break;
		}
		if (ret != s->ret)
			fail_msg("case \"%s\": returned %d, expected %d (error: %s)", s->label,
				 ret, s->ret, ret < 0 && error != NULL ? error : "-");
		if (s->ret < 0) {
			CHECK(s->label, error != NULL);
			if (strstr(error, s->error) == NULL)
				fail_msg("case \"%s\": error \"%s\" lacks \"%s\"", s->label, error,
					 s->error);
		}
	}
}

/* Collects list callbacks into "a|b|c". */
static void collect_cb(const char *s, void *ctx)
{
	struct buf *b = ctx;
	if (b->len > 0)
		buf_append_str(b, "|");
	buf_append_str(b, s);
}

static void collect_alias_cb(const char *alias, const char *targets, void *ctx)
{
	struct buf *b = ctx;
	if (b->len > 0)
		buf_append_str(b, "|");
	buf_printf(b, "%s -> %s", alias, targets);
}

static const char pw[] = "correct horse";

static void test_domains(void **state)
{
	struct fixture *f = *state;
	static const struct step steps[] = {
		{ "add", OP_DOMAIN_ADD, "example.com", NULL, 0, NULL },
		{ "add upper-case is lower-cased", OP_DOMAIN_ADD, "Example.NET", NULL, 0, NULL },
		{ "add UTF-8 label", OP_DOMAIN_ADD, "b\xc3\xbc" "cher.example", NULL, 0, NULL },
		{ "dup", OP_DOMAIN_ADD, "example.com", NULL, -1,
		  "domain example.com already exists" },
		{ "dup other case", OP_DOMAIN_ADD, "EXAMPLE.com", NULL, -1, "already exists" },
		{ "empty", OP_DOMAIN_ADD, "", NULL, -1, "invalid domain" },
		{ "underscore", OP_DOMAIN_ADD, "bad_name.com", NULL, -1, "invalid domain" },
		{ "leading hyphen", OP_DOMAIN_ADD, "-x.com", NULL, -1, "invalid domain" },
		{ "empty label", OP_DOMAIN_ADD, "a..b", NULL, -1, "invalid domain" },
		{ "trailing dot", OP_DOMAIN_ADD, "x.com.", NULL, -1, "invalid domain" },
		{ "with @", OP_DOMAIN_ADD, "a@x.com", NULL, -1, "invalid domain" },
		{ "label of 64", OP_DOMAIN_ADD,
		  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com", NULL,
		  -1, "63" },
		{ "user in it", OP_USER_ADD, "bob@example.com", pw, 0, NULL },
		{ "alias in it", OP_ALIAS_ADD, "info@example.net", "bob@example.com", 0, NULL },
		{ "del with user refused", OP_DOMAIN_DEL, "example.com", NULL, -1,
		  "still has 1 user and 0 aliases" },
		{ "del with alias refused", OP_DOMAIN_DEL, "example.net", NULL, -1,
		  "still has 0 users and 1 alias" },
		{ "del user", OP_USER_DEL, "bob@example.com", NULL, 0, NULL },
		{ "del alias", OP_ALIAS_DEL, "info@example.net", NULL, 0, NULL },
		{ "del now ok", OP_DOMAIN_DEL, "EXAMPLE.COM", NULL, 0, NULL },
		{ "del again", OP_DOMAIN_DEL, "example.com", NULL, -1,
		  "no such domain example.com" },
	};
	struct buf b;

	run_steps(f->db, steps, sizeof(steps) / sizeof(steps[0]));
	assert_int_equal(account_domain_exists(f->db, "EXAMPLE.net"), 1);
	assert_int_equal(account_domain_exists(f->db, "example.com"), 0);
	assert_int_equal(account_domain_exists(f->db, "not valid!"), 0);
	buf_init(&b, 4096);
	assert_int_equal(account_domain_list(f->db, collect_cb, &b), 0);
	assert_string_equal(b.data, "b\xc3\xbc" "cher.example|example.net");
	buf_free(&b);
}

static void test_users(void **state)
{
	struct fixture *f = *state;
	static const struct step steps[] = {
		{ "unknown domain refused", OP_USER_ADD, "bob@example.org", pw, -1,
		  "domain example.org is not a local domain" },
		{ "domain", OP_DOMAIN_ADD, "example.com", NULL, 0, NULL },
		{ "mixed case stored lower", OP_USER_ADD, "Bob@Example.COM", pw, 0, NULL },
		{ "dup other case", OP_USER_ADD, "BOB@example.com", pw, -1,
		  "user bob@example.com already exists" },
		{ "UTF-8 local part", OP_USER_ADD, "j\xc3\xb6rg@example.com", pw, 0, NULL },
		{ "no @", OP_USER_ADD, "bob", pw, -1, "invalid address \"bob\": missing '@'" },
		{ "no local part", OP_USER_ADD, "@example.com", pw, -1, "missing local part" },
		{ "no domain", OP_USER_ADD, "bob@", pw, -1, "empty domain" },
		{ "two @", OP_USER_ADD, "a@b@example.com", pw, -1, "more than one '@'" },
		{ "space", OP_USER_ADD, "bo b@example.com", pw, -1, "invalid character" },
		{ "comma", OP_USER_ADD, "a,b@example.com", pw, -1, "invalid character" },
		{ "slash is atext but leading dot is not", OP_USER_ADD, ".bob@example.com", pw,
		  -1, "misplaced '.'" },
		{ "double dot", OP_USER_ADD, "b..ob@example.com", pw, -1, "misplaced '.'" },
		{ "control char", OP_USER_ADD, "b\tob@example.com", pw, -1,
		  "invalid address \"b?ob@example.com\"" },
		{ "local part of 65", OP_USER_ADD,
		  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com",
		  pw, -1, "local part too long" },
		{ "empty password", OP_USER_ADD, "carol@example.com", "", -1, "empty password" },
		/* Length and the rest of the policy are account_password_check's
		 * (test-account-security.c); the library refuses only empty,
		 * too long and control characters. */
		{ "password with newline", OP_USER_ADD, "carol@example.com", "12345678\n", -1,
		  "control character" },
		{ "alias name", OP_ALIAS_ADD, "sales@example.com", "bob@example.com", 0, NULL },
		{ "user over alias refused", OP_USER_ADD, "Sales@example.com", pw, -1,
		  "sales@example.com is already an alias" },
		{ "passwd unknown", OP_USER_PASSWD, "nobody@example.com", pw, -1,
		  "no such user nobody@example.com" },
		{ "passwd empty", OP_USER_PASSWD, "bob@example.com", "", -1, "empty password" },
		{ "passwd", OP_USER_PASSWD, "BOB@example.com", "new password", 0, NULL },
		{ "del unknown", OP_USER_DEL, "nobody@example.com", NULL, -1,
		  "no such user nobody@example.com" },
		{ "del invalid", OP_USER_DEL, "nobody", NULL, -1, "invalid address" },
	};
	char *hash = NULL;
	struct buf b;

	run_steps(f->db, steps, sizeof(steps) / sizeof(steps[0]));

	assert_int_equal(account_user_get_hash(f->db, "bOb@EXAMPLE.com", &hash), 1);
	assert_non_null(hash);
	assert_int_equal(password_verify(hash, "new password"), 1);
	assert_int_equal(password_verify(hash, pw), 0);
	free(hash);
	assert_int_equal(account_user_get_hash(f->db, "nobody@example.com", &hash), 0);
	assert_null(hash);
	assert_int_equal(account_user_get_hash(f->db, "garbage", &hash), 0);

	buf_init(&b, 4096);
	assert_int_equal(account_user_list(f->db, "EXAMPLE.COM", collect_cb, &b), 0);
	assert_string_equal(b.data, "bob@example.com|j\xc3\xb6rg@example.com");
	buf_free(&b);
	buf_init(&b, 4096);
	assert_int_equal(account_domain_add(f->db, "a.example", &(const char *){ NULL }), 0);
	assert_int_equal(account_user_add(f->db, "zed@a.example", pw, &(const char *){ NULL }),
			 0);
	assert_int_equal(account_user_list(f->db, NULL, collect_cb, &b), 0);
	assert_string_equal(b.data, "zed@a.example|bob@example.com|j\xc3\xb6rg@example.com");
	buf_free(&b);

	const char *error = NULL;
	assert_int_equal(account_user_del(f->db, "Bob@Example.com", &error), 0);
	assert_int_equal(account_user_get_hash(f->db, "bob@example.com", &hash), 0);
}

static void test_aliases(void **state)
{
	struct fixture *f = *state;
	static const struct step steps[] = {
		{ "domain", OP_DOMAIN_ADD, "example.com", NULL, 0, NULL },
		{ "other domain", OP_DOMAIN_ADD, "example.net", NULL, 0, NULL },
		{ "user", OP_USER_ADD, "alice@example.com", pw, 0, NULL },
		{ "normalised", OP_ALIAS_ADD, "Sales@Example.COM",
		  " Alice@EXAMPLE.com , Foo.Bar@Remote.ORG,alice@example.com", 0, NULL },
		{ "catch-all", OP_ALIAS_ADD, "@Example.NET", "alice@example.com", 0, NULL },
		{ "dup", OP_ALIAS_ADD, "sales@example.com", "alice@example.com", -1,
		  "alias sales@example.com already exists" },
		{ "dup catch-all", OP_ALIAS_ADD, "@example.net", "alice@example.com", -1,
		  "alias @example.net already exists" },
		{ "not local", OP_ALIAS_ADD, "x@example.org", "alice@example.com", -1,
		  "domain example.org is not a local domain" },
		{ "alias over user", OP_ALIAS_ADD, "ALICE@example.com", "x@remote.org", -1,
		  "alice@example.com is already a user" },
		{ "self", OP_ALIAS_ADD, "me@example.com", "bob@remote.org,Me@Example.com", -1,
		  "cannot point to itself" },
		{ "empty target list", OP_ALIAS_ADD, "x@example.com", "", -1, "empty target" },
		{ "empty item", OP_ALIAS_ADD, "x@example.com", "a@remote.org,,b@remote.org", -1,
		  "empty target" },
		{ "invalid target", OP_ALIAS_ADD, "x@example.com", "a@remote.org,nope", -1,
		  "invalid target address \"nope\"" },
		{ "catch-all target", OP_ALIAS_ADD, "x@example.com", "@example.net", -1,
		  "invalid target address" },
		{ "invalid alias", OP_ALIAS_ADD, "x@@example.com", "a@remote.org", -1,
		  "invalid address" },
		{ "del unknown", OP_ALIAS_DEL, "nope@example.com", NULL, -1,
		  "no such alias nope@example.com" },
		{ "del catch-all", OP_ALIAS_DEL, "@EXAMPLE.net", NULL, 0, NULL },
		{ "del catch-all again", OP_ALIAS_DEL, "@example.net", NULL, -1,
		  "no such alias @example.net" },
	};
	struct buf b;

	run_steps(f->db, steps, sizeof(steps) / sizeof(steps[0]));
	buf_init(&b, 4096);
	assert_int_equal(account_alias_list(f->db, collect_alias_cb, &b), 0);
	/* Local addresses lower-cased, the remote local part kept, duplicate
	 * dropped. */
	assert_string_equal(b.data, "sales@example.com -> alice@example.com,Foo.Bar@remote.org");
	buf_free(&b);
}

static void test_password(void **state)
{
	char *h1 = NULL, *h2 = NULL;
	char long_pw[PASSWORD_MAX + 2];

	(void)state;
	assert_int_equal(password_hash("s3cret password", &h1), 0);
	assert_int_equal(password_hash("s3cret password", &h2), 0);
	assert_non_null(h1);
	assert_true(strncmp(h1, "$argon2id$", 10) == 0);
	/* Salted: the same password never gives the same string. */
	assert_string_not_equal(h1, h2);

	static const struct {
		const char *label;
		int hash;           /* 1: h1, 0: NULL, -1: malformed */
		const char *password;
		int expect;
	} cases[] = {
		{ "right", 1, "s3cret password", 1 },
		{ "wrong", 1, "s3cret passwore", 0 },
		{ "prefix", 1, "s3cret", 0 },
		{ "empty", 1, "", 0 },
		{ "case", 1, "S3cret password", 0 },
		{ "no hash", 0, "s3cret password", 0 },
		{ "malformed hash", -1, "s3cret password", -1 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *hash = cases[i].hash == 1 ? h1 :
			cases[i].hash == 0 ? NULL : "$argon2id$garbage";
		int ret = password_verify(hash, cases[i].password);
		if (ret != cases[i].expect)
			fail_msg("case \"%s\": %d, expected %d", cases[i].label, ret,
				 cases[i].expect);
	}
	assert_int_equal(password_verify("$1$md5$whatever", "x"), -1);

	memset(long_pw, 'x', sizeof(long_pw) - 1);
	long_pw[sizeof(long_pw) - 1] = '\0';
	char *h3 = NULL;
	assert_int_equal(password_hash(long_pw, &h3), -1);
	assert_null(h3);
	assert_int_equal(password_verify(h1, long_pw), 0);
	free(h1);
	free(h2);
}

static void test_open(void **state)
{
	struct fixture *f = *state;
	struct account_db *db2 = NULL;
	const char *error = NULL;
	char path[160];

	/* Without create a missing file is an error, with a reason. */
	snprintf(path, sizeof(path), "%s/missing.db", f->dir);
	assert_int_equal(account_db_open(path, false, &db2, &error), -1);
	assert_null(db2);
	assert_non_null(strstr(error, "missing.db"));
	assert_int_equal(access(path, F_OK), -1);

	/* Created private. */
	snprintf(path, sizeof(path), "%s/new.db", f->dir);
	assert_int_equal(account_db_open(path, true, &db2, &error), 0);
	assert_int_equal(account_domain_add(db2, "new.example", &error), 0);
	account_db_close(&db2);
	assert_null(db2);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* Reopened without create: the data is there. */
	assert_int_equal(account_db_open(path, false, &db2, &error), 0);
	assert_int_equal(account_domain_exists(db2, "new.example"), 1);
	account_db_close(&db2);
	account_db_close(&db2);     /* harmless */
	unlink(path);
	snprintf(path, sizeof(path), "%s/new.db-wal", f->dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/new.db-shm", f->dir);
	unlink(path);

	/* A second connection to the fixture's file sees its writes (one
	 * connection per thread is the documented model). */
	assert_int_equal(account_db_open(f->path, false, &db2, &error), 0);
	assert_int_equal(account_domain_add(f->db, "shared.example", &error), 0);
	assert_int_equal(account_domain_exists(db2, "shared.example"), 1);
	assert_int_equal(account_domain_add(db2, "shared.example", &error), -1);
	assert_non_null(strstr(error, "already exists"));
	account_db_close(&db2);
}

/* ---- resolution and sender ownership ---------------------------------- */

static int resolve_setup(void **state)
{
	static const struct step steps[] = {
		{ "d1", OP_DOMAIN_ADD, "example.com", NULL, 0, NULL },
		{ "d2", OP_DOMAIN_ADD, "example.net", NULL, 0, NULL },
		{ "alice", OP_USER_ADD, "alice@example.com", pw, 0, NULL },
		{ "bob", OP_USER_ADD, "bob@example.com", pw, 0, NULL },
		{ "carol", OP_USER_ADD, "carol@example.com", pw, 0, NULL },
		{ "dave", OP_USER_ADD, "dave@example.net", pw, 0, NULL },
		{ "plus user", OP_USER_ADD, "bob+x@example.com", pw, 0, NULL },
		{ "sales", OP_ALIAS_ADD, "sales@example.com", "alice@example.com,bob@example.com",
		  0, NULL },
		{ "team", OP_ALIAS_ADD, "team@example.com",
		  "sales@example.com, carol@example.com, alice@example.com", 0, NULL },
		{ "loop1", OP_ALIAS_ADD, "loop1@example.com", "loop2@example.com", 0, NULL },
		{ "loop2", OP_ALIAS_ADD, "loop2@example.com", "loop1@example.com", 0, NULL },
		{ "ext", OP_ALIAS_ADD, "ext@example.com", "Someone@Remote.ORG,bob@example.com",
		  0, NULL },
		{ "diamond", OP_ALIAS_ADD, "both@example.com", "sales@example.com,team@example.com",
		  0, NULL },
		{ "gone", OP_ALIAS_ADD, "gone@example.com", "nobody@example.com", 0, NULL },
		{ "half", OP_ALIAS_ADD, "half@example.com",
		  "nobody@example.com,carol+tag@example.com", 0, NULL },
		{ "catch-all", OP_ALIAS_ADD, "@example.net", "dave@example.net", 0, NULL },
		{ "stale", OP_ALIAS_ADD, "stale@example.net", "nobody@example.net", 0, NULL },
	};
	char name[64], target[64];

	if (fixture_setup(state) < 0)
		return -1;
	struct fixture *f = *state;
	run_steps(f->db, steps, sizeof(steps) / sizeof(steps[0]));
	/* deep0 -> deep1 -> ... -> deep11 -> alice: deep2 is 10 aliases deep
	 * (allowed), deep1 11 (too deep). */
	for (int i = 0; i <= 11; i++) {
		const char *error;
		snprintf(name, sizeof(name), "deep%d@example.com", i);
		if (i < 11)
			snprintf(target, sizeof(target), "deep%d@example.com", i + 1);
		else
			snprintf(target, sizeof(target), "alice@example.com");
		if (account_alias_add(f->db, name, target, &error) < 0) {
			fprintf(stderr, "%s: %s\n", name, error);
			return -1;
		}
	}
	return 0;
}

/* Targets as "a@x,!remote@y" (remote ones marked with '!'). */
static void targets_string(const struct account_targets *t, struct buf *b)
{
	for (size_t i = 0; i < t->count; i++)
		buf_printf(b, "%s%s%s", i > 0 ? "," : "", t->v[i].local ? "" : "!",
			   t->v[i].address);
}

static const char *result_name(enum account_resolve_result r)
{
	switch (r) {
	case ACCOUNT_RESOLVE_OK: return "OK";
	case ACCOUNT_RESOLVE_NO_SUCH_USER: return "NO_SUCH_USER";
	case ACCOUNT_RESOLVE_NOT_LOCAL: return "NOT_LOCAL";
	case ACCOUNT_RESOLVE_ERROR: return "ERROR";
	}
	return "?";
}

static void test_resolve(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *label;
		const char *address;
		enum account_resolve_result result;
		const char *targets;
	} cases[] = {
		{ "user", "alice@example.com", ACCOUNT_RESOLVE_OK, "alice@example.com" },
		{ "user, any case", "ALICE@Example.COM", ACCOUNT_RESOLVE_OK, "alice@example.com" },
		{ "alias one-to-many", "sales@example.com", ACCOUNT_RESOLVE_OK,
		  "alice@example.com,bob@example.com" },
		{ "nested alias, duplicate removed", "team@example.com", ACCOUNT_RESOLVE_OK,
		  "alice@example.com,bob@example.com,carol@example.com" },
		{ "diamond is not a loop", "Both@example.com", ACCOUNT_RESOLVE_OK,
		  "alice@example.com,bob@example.com,carol@example.com" },
		{ "alias loop", "loop1@example.com", ACCOUNT_RESOLVE_ERROR, "" },
		{ "10 levels allowed", "deep2@example.com", ACCOUNT_RESOLVE_OK,
		  "alice@example.com" },
		{ "11 levels too deep", "deep1@example.com", ACCOUNT_RESOLVE_ERROR, "" },
		{ "plus-addressing", "alice+news@example.com", ACCOUNT_RESOLVE_OK,
		  "alice@example.com" },
		{ "plus-addressing, any case", "Alice+News@EXAMPLE.com", ACCOUNT_RESOLVE_OK,
		  "alice@example.com" },
		{ "plus on alias", "sales+q3@example.com", ACCOUNT_RESOLVE_OK,
		  "alice@example.com,bob@example.com" },
		{ "exact user with '+' wins", "bob+x@example.com", ACCOUNT_RESOLVE_OK,
		  "bob+x@example.com" },
		{ "other tag strips", "bob+y@example.com", ACCOUNT_RESOLVE_OK, "bob@example.com" },
		{ "empty base not stripped", "+tag@example.com", ACCOUNT_RESOLVE_NO_SUCH_USER, "" },
		{ "catch-all", "anything@example.net", ACCOUNT_RESOLVE_OK, "dave@example.net" },
		{ "dead target falls to catch-all", "stale@example.net", ACCOUNT_RESOLVE_OK,
		  "dave@example.net" },
		{ "user beats catch-all", "dave+x@example.net", ACCOUNT_RESOLVE_OK,
		  "dave@example.net" },
		{ "unknown user", "nobody@example.com", ACCOUNT_RESOLVE_NO_SUCH_USER, "" },
		{ "postmaster has no default", "postmaster@example.com",
		  ACCOUNT_RESOLVE_NO_SUCH_USER, "" },
		{ "not local", "alice@example.org", ACCOUNT_RESOLVE_NOT_LOCAL, "" },
		{ "subdomain not local", "alice@sub.example.com", ACCOUNT_RESOLVE_NOT_LOCAL, "" },
		{ "quoted remote is not local", "\"a b\"@remote.org", ACCOUNT_RESOLVE_NOT_LOCAL,
		  "" },
		{ "address literal", "a@[192.0.2.1]", ACCOUNT_RESOLVE_NOT_LOCAL, "" },
		{ "remote target", "ext@example.com", ACCOUNT_RESOLVE_OK,
		  "!Someone@remote.org,bob@example.com" },
		{ "all targets gone", "gone@example.com", ACCOUNT_RESOLVE_NO_SUCH_USER, "" },
		{ "dead target skipped, tag stripped", "half@example.com", ACCOUNT_RESOLVE_OK,
		  "carol@example.com" },
		{ "no @", "alice", ACCOUNT_RESOLVE_NO_SUCH_USER, "" },
		{ "empty", "", ACCOUNT_RESOLVE_NO_SUCH_USER, "" },
		{ "catch-all syntax", "@example.net", ACCOUNT_RESOLVE_NO_SUCH_USER, "" },
		{ "bad local part", "a..b@example.com", ACCOUNT_RESOLVE_NO_SUCH_USER, "" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct account_targets t = { NULL, 0 };
		struct buf b;

		enum account_resolve_result r = account_resolve(f->db, cases[i].address, &t);
		if (r != cases[i].result)
			fail_msg("case \"%s\": %s, expected %s", cases[i].label, result_name(r),
				 result_name(cases[i].result));
		buf_init(&b, 65536);
		buf_append_str(&b, "");
		targets_string(&t, &b);
		if (strcmp(b.data, cases[i].targets) != 0)
			fail_msg("case \"%s\": targets \"%s\", expected \"%s\"", cases[i].label,
				 b.data, cases[i].targets);
		CHECK(cases[i].label, (r == ACCOUNT_RESOLVE_OK) == (t.count > 0));
		CHECK(cases[i].label, t.count > 0 || t.v == NULL);
		buf_free(&b);
		account_targets_free(&t);
		CHECK(cases[i].label, t.v == NULL && t.count == 0);
	}
}

static void test_resolve_limits(void **state)
{
	struct fixture *f = *state;
	struct buf list;
	const char *error = NULL;
	struct account_targets t = { NULL, 0 };

	/* A target list of exactly ALIAS_EXPAND_MAX remote addresses is fine;
	 * one more through nesting is too many. */
	buf_init(&list, (size_t)ALIAS_EXPAND_MAX * 32);
	for (unsigned i = 0; i < ALIAS_EXPAND_MAX; i++)
		buf_printf(&list, "%su%u@remote.org", i > 0 ? "," : "", i);
	assert_int_equal(account_alias_add(f->db, "big@example.com", list.data, &error), 0);
	assert_int_equal(account_resolve(f->db, "big@example.com", &t), ACCOUNT_RESOLVE_OK);
	assert_int_equal(t.count, ALIAS_EXPAND_MAX);
	assert_string_equal(t.v[ALIAS_EXPAND_MAX - 1].address, "u999@remote.org");
	account_targets_free(&t);
	assert_int_equal(account_alias_add(f->db, "bigger@example.com",
					   "big@example.com,one.more@remote.org", &error), 0);
	assert_int_equal(account_resolve(f->db, "bigger@example.com", &t),
			 ACCOUNT_RESOLVE_ERROR);
	assert_int_equal(t.count, 0);
	assert_null(t.v);

	buf_printf(&list, ",extra@remote.org");
	assert_int_equal(account_alias_add(f->db, "huge@example.com", list.data, &error), -1);
	assert_non_null(strstr(error, "more than 1000 targets"));
	buf_free(&list);
	assert_int_equal(account_alias_del(f->db, "bigger@example.com", &error), 0);
	assert_int_equal(account_alias_del(f->db, "big@example.com", &error), 0);
}

static void test_sender_allowed(void **state)
{
	struct fixture *f = *state;
	static const struct {
		const char *label;
		const char *user;
		const char *sender;
		int expect;
	} cases[] = {
		{ "own address", "alice@example.com", "alice@example.com", 1 },
		{ "own address, other case", "alice@example.com", "Alice@EXAMPLE.com", 1 },
		{ "user given in other case", "ALICE@example.com", "alice@example.com", 1 },
		{ "own with +tag", "alice@example.com", "alice+lists@example.com", 1 },
		{ "alias including user", "alice@example.com", "sales@example.com", 1 },
		{ "alias including other user too", "bob@example.com", "sales@example.com", 1 },
		{ "nested alias including user", "carol@example.com", "team@example.com", 1 },
		{ "alias with +tag", "bob@example.com", "sales+q3@example.com", 1 },
		{ "alias not including user", "carol@example.com", "sales@example.com", 0 },
		{ "alias with only remote and other", "alice@example.com", "ext@example.com", 0 },
		{ "alias with remote and user", "bob@example.com", "ext@example.com", 1 },
		{ "someone else", "alice@example.com", "bob@example.com", 0 },
		{ "someone else with tag", "alice@example.com", "bob+y@example.com", 0 },
		{ "a user of its own with '+'", "bob@example.com", "bob+x@example.com", 0 },
		{ "the '+' user itself", "bob+x@example.com", "bob+x@example.com", 1 },
		{ "catch-all not allowed", "dave@example.net", "anything@example.net", 0 },
		{ "catch-all reached through an alias not allowed", "dave@example.net",
		  "stale@example.net", 0 },
		{ "own in catch-all domain", "dave@example.net", "dave@example.net", 1 },
		{ "remote sender", "alice@example.com", "alice@example.org", 0 },
		{ "empty sender", "alice@example.com", "", 0 },
		{ "invalid sender", "alice@example.com", "alice", 0 },
		{ "broken alias", "alice@example.com", "loop1@example.com", -1 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int ret = account_sender_allowed(f->db, cases[i].user, cases[i].sender);
		if (ret != cases[i].expect)
			fail_msg("case \"%s\": %d, expected %d", cases[i].label, ret,
				 cases[i].expect);
	}
}

/* Two threads, one connection each, resolving while a third writes. */
struct thread_arg {
	const char *path;
	int failures;
};

static void *resolve_thread(void *p)
{
	struct thread_arg *arg = p;
	struct account_db *db = NULL;
	const char *error;

	if (account_db_open(arg->path, false, &db, &error) < 0) {
		arg->failures++;
		return NULL;
	}
	for (int i = 0; i < 200; i++) {
		struct account_targets t;
		if (account_resolve(db, "team@example.com", &t) != ACCOUNT_RESOLVE_OK ||
		    t.count != 3)
			arg->failures++;
		account_targets_free(&t);
	}
	account_db_close(&db);
	return NULL;
}

static void test_threads(void **state)
{
	struct fixture *f = *state;
	struct thread_arg args[2] = { { f->path, 0 }, { f->path, 0 } };
	pthread_t th[2];
	const char *error;
	char name[64];

	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, resolve_thread, &args[i]), 0);
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "tmp%d@example.com", i);
		assert_int_equal(account_alias_add(f->db, name, "alice@example.com", &error), 0);
		assert_int_equal(account_alias_del(f->db, name, &error), 0);
	}
	for (int i = 0; i < 2; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(args[i].failures, 0);
	}
}

int main(void)
{
	const struct CMUnitTest mutators[] = {
		cmocka_unit_test_setup_teardown(test_domains, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_users, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_aliases, fixture_setup, fixture_teardown),
		cmocka_unit_test_setup_teardown(test_open, fixture_setup, fixture_teardown),
		cmocka_unit_test(test_password),
	};
	const struct CMUnitTest resolution[] = {
		cmocka_unit_test(test_resolve),
		cmocka_unit_test(test_resolve_limits),
		cmocka_unit_test(test_sender_allowed),
		cmocka_unit_test(test_threads),
	};
	int failed = cmocka_run_group_tests_name("account", mutators, NULL, NULL);
	failed += cmocka_run_group_tests_name("account-resolve", resolution, resolve_setup,
					      fixture_teardown);
	return failed;
}
