/*
 * test-maildir.c — unit tests for Maildir delivery: names, exact content,
 * idempotence, recovery checks and clean failure on write errors.
 */
#include "lib-store/maildir.h"

#include "lib/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

/* cmocka's void **state and the table callbacks' unused arguments; the
 * project build passes -Wno-unused-parameter anyway. */
#pragma GCC diagnostic ignored "-Wunused-parameter"

#define TEST_ID "0123456789ABCDEF"

static char base_dir[256];
static char mdir[512];      /* the Maildir under test: base/mail/example.com/bob */
static char src_path[512];  /* a spool-like source file */

static int setup(void **state)
{
	snprintf(base_dir, sizeof(base_dir), "/tmp/postern-test-maildir-XXXXXX");
	if (mkdtemp(base_dir) == NULL)
		return -1;
	snprintf(mdir, sizeof(mdir), "%s/mail/example.com/bob", base_dir);
	snprintf(src_path, sizeof(src_path), "%s/source", base_dir);
	return 0;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	chmod(path, 0700);
	return remove(path);
}

static int teardown(void **state)
{
	return nftw(base_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void sub_path(char *dest, size_t size, const char *sub, const char *name)
{
	int n = name == NULL ? snprintf(dest, size, "%s/%s", mdir, sub)
			     : snprintf(dest, size, "%s/%s/%s", mdir, sub, name);
	assert_true(n > 0 && (size_t)n < size);
}

static size_t count_entries(const char *sub)
{
	char path[PATH_MAX];
	size_t n = 0;
	sub_path(path, sizeof(path), sub, NULL);
	DIR *d = opendir(path);
	if (d == NULL)
		return 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	}
	closedir(d);
	return n;
}

static void touch(const char *sub, const char *name)
{
	char path[PATH_MAX];
	sub_path(path, sizeof(path), sub, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
}

/* Writes junk_len bytes of junk then data into the source file; returns an
 * open read-only fd on it. */
static int make_source(const void *data, size_t len, size_t junk_len)
{
	int fd = open(src_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	for (size_t i = 0; i < junk_len; i++)
		assert_int_equal(write_full(fd, "J", 1), 0);
	assert_int_equal(write_full(fd, data, len), 0);
	close(fd);
	fd = open(src_path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

/* ---- names ---- */

struct name_case {
	const char *label;
	int64_t queued_at;
	const char *id;
	unsigned idx;
	const char *host;
	size_t size;
	const char *expect;  /* NULL: must fail */
	int err;
};

static const struct name_case name_cases[] = {
	{ "plain", 1700000000, TEST_ID, 0, "mx.example.com", 256,
	  "1700000000." TEST_ID "R0.mx.example.com", 0 },
	{ "index", 1700000000, TEST_ID, 4294967295u, "h", 256,
	  "1700000000." TEST_ID "R4294967295.h", 0 },
	{ "slash and colon escaped", 5, TEST_ID, 3, "a/b:c", 256,
	  "5." TEST_ID "R3.a\\057b\\072c", 0 },
	{ "exact fit", 5, TEST_ID, 3, "a:", sizeof("5." TEST_ID "R3.a\\072"),
	  "5." TEST_ID "R3.a\\072", 0 },
	{ "escape does not fit", 5, TEST_ID, 3, "a:", sizeof("5." TEST_ID "R3.a\\072") - 1,
	  NULL, ENAMETOOLONG },
	{ "prefix does not fit", 5, TEST_ID, 3, "a", 10, NULL, ENAMETOOLONG },
	{ "lower-case id", 5, "0123456789abcdef", 0, "h", 256, NULL, EINVAL },
	{ "short id", 5, "0123", 0, "h", 256, NULL, EINVAL },
	{ "empty host", 5, TEST_ID, 0, "", 256, NULL, EINVAL },
};

static void test_name(void **state)
{
	for (size_t t = 0; t < sizeof(name_cases) / sizeof(name_cases[0]); t++) {
		const struct name_case *c = &name_cases[t];
		char out[256], again[256];

		assert_true(c->size <= sizeof(out));
		errno = 0;
		int r = maildir_name(out, c->size, c->queued_at, c->id, c->idx, c->host);
		if (c->expect == NULL) {
			if (r != -1)
				fail_msg("%s: accepted as %s", c->label, out);
			assert_int_equal(errno, c->err);
			continue;
		}
		if (r != 0)
			fail_msg("%s: failed", c->label);
		assert_string_equal(out, c->expect);
		/* Deterministic: the same input gives the same name. */
		assert_int_equal(maildir_name(again, sizeof(again), c->queued_at, c->id,
					      c->idx, c->host), 0);
		assert_string_equal(again, out);
	}
	/* A 255-byte host name of only escapes fits in MAILDIR_NAME_MAX. */
	char host[256], out[MAILDIR_NAME_MAX];
	memset(host, ':', 255);
	host[255] = '\0';
	assert_int_equal(maildir_name(out, sizeof(out), INT64_MIN, TEST_ID, UINT32_MAX, host),
			 0);
	/* Different recipients, different names. */
	char a[128], b[128];
	assert_int_equal(maildir_name(a, sizeof(a), 1, TEST_ID, 1, "h"), 0);
	assert_int_equal(maildir_name(b, sizeof(b), 1, TEST_ID, 11, "h"), 0);
	assert_string_not_equal(a, b);
}

/* ---- delivery ---- */

struct deliver_case {
	const char *label;
	const char *prefix;
	size_t prefix_len;
	size_t body_len;
	size_t junk;   /* body offset in the source */
};

static const struct deliver_case deliver_cases[] = {
	{ "prefix and small body", "Return-Path: <a@b>\nDelivered-To: bob@example.com\n", 49,
	  100, 0 },
	{ "no prefix", "", 0, 100, 7 },
	{ "empty body", "Return-Path: <>\n", 16, 0, 3 },
	{ "body over several chunks at an offset", "X: y\n", 5, 300000, 12345 },
	{ "body of exactly one chunk", "X: y\n", 5, 65536, 1 },
};

static unsigned char *make_body(size_t len)
{
	unsigned char *b = malloc(len + 1);
	assert_non_null(b);
	for (size_t i = 0; i < len; i++)
		b[i] = i % 101 == 0 ? '\0' : i % 77 == 0 ? '\n' : (unsigned char)(i * 13);
	return b;
}

static void assert_file_content(const char *path, const void *a, size_t alen,
				 const void *b, size_t blen)
{
	char *data = NULL;
	size_t len = 0;
	assert_int_equal(read_file(path, 64u * 1024 * 1024, &data, &len), 0);
	assert_int_equal(len, alen + blen);
	assert_memory_equal(data, a, alen);
	if (blen > 0)
		assert_memory_equal(data + alen, b, blen);
	free(data);
}

static void test_deliver_content(void **state)
{
	for (size_t t = 0; t < sizeof(deliver_cases) / sizeof(deliver_cases[0]); t++) {
		const struct deliver_case *c = &deliver_cases[t];
		const char *error = NULL;
		char name[128], path[PATH_MAX];
		struct stat st;

		assert_int_equal(strlen(c->prefix), c->prefix_len);
		unsigned char *body = make_body(c->body_len);
		int fd = make_source(body, c->body_len, c->junk);
		assert_int_equal(maildir_name(name, sizeof(name), 1700000000, TEST_ID,
					      (unsigned)t, "mx.example.com"), 0);
		/* The first delivery also creates the Maildir. */
		if (maildir_deliver(mdir, name, c->prefix, c->prefix_len, fd, (off_t)c->junk,
				    c->body_len, &error) < 0)
			fail_msg("%s: %s", c->label, error);
		sub_path(path, sizeof(path), "new", name);
		assert_file_content(path, c->prefix, c->prefix_len, body, c->body_len);
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0600);
		assert_int_equal(count_entries("tmp"), 0);
		assert_int_equal(count_entries("new"), t + 1);
		/* The source's file offset is not used. */
		assert_int_equal(lseek(fd, 0, SEEK_CUR), 0);
		close(fd);
		free(body);
	}
	static const char *const subs[] = { "cur", "new", "tmp", NULL };
	for (size_t i = 0; i < 4; i++) {
		char path[PATH_MAX];
		struct stat st;
		if (subs[i] == NULL)
			snprintf(path, sizeof(path), "%s", mdir);
		else
			sub_path(path, sizeof(path), subs[i], NULL);
		assert_int_equal(stat(path, &st), 0);
		assert_true(S_ISDIR(st.st_mode));
		assert_int_equal(st.st_mode & 07777, 0700);
	}
}

static void test_deliver_idempotent(void **state)
{
	const char *error = NULL;
	char name[128], path[PATH_MAX];
	int fd = make_source("Subject: x\n\nhello\n", 18, 0);

	assert_int_equal(maildir_name(name, sizeof(name), 1, TEST_ID, 0, "h"), 0);
	assert_int_equal(maildir_create(mdir, &error), 0);
	assert_int_equal(maildir_create(mdir, &error), 0);   /* exists: fine */
	/* A stale tmp file from a crashed attempt, and a planted symlink
	 * would be a way to write elsewhere: both are replaced. */
	char victim[PATH_MAX];
	snprintf(victim, sizeof(victim), "%s/victim", base_dir);
	int vfd = open(victim, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(vfd >= 0);
	assert_int_equal(write_full(vfd, "keep", 4), 0);
	close(vfd);
	sub_path(path, sizeof(path), "tmp", name);
	assert_int_equal(symlink(victim, path), 0);

	for (int i = 0; i < 2; i++) {
		if (maildir_deliver(mdir, name, "P: 1\n", 5, fd, 0, 18, &error) < 0)
			fail_msg("attempt %d: %s", i, error);
		assert_int_equal(maildir_has(mdir, name), 1);
		assert_int_equal(count_entries("new"), 1);
		assert_int_equal(count_entries("tmp"), 0);
		sub_path(path, sizeof(path), "new", name);
		assert_file_content(path, "P: 1\n", 5, "Subject: x\n\nhello\n", 18);
	}
	assert_file_content(victim, "keep", 4, "", 0);

	/* new/ gone (someone cleaned up): recreated, message delivered. */
	assert_int_equal(unlink(path), 0);
	sub_path(path, sizeof(path), "new", NULL);
	assert_int_equal(rmdir(path), 0);
	if (maildir_deliver(mdir, name, "P: 1\n", 5, fd, 0, 18, &error) < 0)
		fail_msg("without new/: %s", error);
	assert_int_equal(maildir_has(mdir, name), 1);
	assert_int_equal(count_entries("tmp"), 0);
	close(fd);
}

/* ---- recovery check ---- */

struct has_case {
	const char *label;
	const char *sub;    /* where a file is put; NULL: nowhere */
	const char *file;   /* its name, with "%s" for the name under test */
	int expect;
};

static const struct has_case has_cases[] = {
	{ "absent", NULL, NULL, 0 },
	{ "in new/", "new", "%s", 1 },
	{ "in cur/ unchanged", "cur", "%s", 1 },
	{ "in cur/ seen", "cur", "%s:2,S", 1 },
	{ "in cur/ no flags", "cur", "%s:2,", 1 },
	{ "only in tmp/", "tmp", "%s", 0 },
	{ "longer name in cur/", "cur", "%sX:2,S", 0 },
	{ "longer name in new/", "new", "%s0", 0 },
	{ "shorter name in cur/", "cur", "1.0123456789ABCDEFR1:2,S", 0 },
	/* renamed by the store (mstore.h): "<name>,U=<uid>:2,<flags>" */
	{ "in cur/ with UID", "cur", "%s,U=7:2,S", 1 },
	{ "in cur/ with UID, no info", "cur", "%s,U=7", 1 },
	{ "longer name with UID", "cur", "%sX,U=7:2,", 0 },
};

static void test_has(void **state)
{
	const char *error = NULL;
	char name[128];

	assert_int_equal(maildir_name(name, sizeof(name), 1, TEST_ID, 1, "host"), 0);
	/* No Maildir at all: not delivered. */
	assert_int_equal(maildir_has(mdir, name), 0);
	for (size_t t = 0; t < sizeof(has_cases) / sizeof(has_cases[0]); t++) {
		const struct has_case *c = &has_cases[t];
		char file[256];

		assert_int_equal(maildir_create(mdir, &error), 0);
		if (c->sub != NULL) {
			if (strstr(c->file, "%s") != NULL)
				snprintf(file, sizeof(file), "%s%s", name, c->file + 2);
			else
				snprintf(file, sizeof(file), "%s", c->file);
			touch(c->sub, file);
		}
		int r = maildir_has(mdir, name);
		if (r != c->expect)
			fail_msg("%s: %d, expected %d", c->label, r, c->expect);
		assert_int_equal(teardown(state), 0);
		assert_int_equal(setup(state), 0);
	}
	errno = 0;
	assert_int_equal(maildir_has(mdir, "../x"), -1);
	assert_int_equal(errno, EINVAL);
}

/* ---- failures ---- */

static void assert_clean(const char *name)
{
	assert_int_equal(count_entries("tmp"), 0);
	assert_int_equal(count_entries("new"), 0);
	assert_int_equal(maildir_has(mdir, name), 0);
}

static void test_deliver_short_source(void **state)
{
	const char *error = NULL;
	int fd = make_source("0123456789", 10, 0);

	errno = 0;
	assert_int_equal(maildir_deliver(mdir, "n1", "P\n", 2, fd, 4, 7, &error), -1);
	assert_int_equal(errno, EIO);
	assert_non_null(strstr(error, "short"));
	assert_clean("n1");
	close(fd);

	/* An unreadable source fd. */
	errno = 0;
	assert_int_equal(maildir_deliver(mdir, "n2", "P\n", 2, -1, 0, 7, &error), -1);
	assert_int_equal(errno, EBADF);
	assert_clean("n2");
}

static void test_deliver_too_large(void **state)
{
	const char *error = NULL;
	struct rlimit old, lim;
	unsigned char *body = make_body(200000);
	int fd = make_source(body, 200000, 0);

	/* The source is written: now limit file size so the copy fails with
	 * EFBIG, a real kernel write error standing in for ENOSPC/EDQUOT. */
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 100000;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	errno = 0;
	int r = maildir_deliver(mdir, "big", "P\n", 2, fd, 0, 200000, &error);
	int err = errno;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	assert_int_equal(r, -1);
	assert_int_equal(err, EFBIG);
	assert_non_null(strstr(error, "write"));
	assert_clean("big");
	close(fd);
	free(body);
}

static void test_deliver_read_only(void **state)
{
	const char *error = NULL;
	char path[PATH_MAX];
	int fd = make_source("x\n", 2, 0);

	assert_int_equal(maildir_create(mdir, &error), 0);
	sub_path(path, sizeof(path), "tmp", NULL);
	assert_int_equal(chmod(path, 0500), 0);
	if (geteuid() != 0) {
		errno = 0;
		assert_int_equal(maildir_deliver(mdir, "ro", "", 0, fd, 0, 2, &error), -1);
		assert_int_equal(errno, EACCES);
		assert_non_null(strstr(error, "Permission denied"));
		assert_clean("ro");
	}
	assert_int_equal(chmod(path, 0700), 0);

	/* tmp/ is a file: ENOTDIR, also for root. */
	assert_int_equal(rmdir(path), 0);
	int tfd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(tfd >= 0);
	close(tfd);
	errno = 0;
	assert_int_equal(maildir_deliver(mdir, "nd", "", 0, fd, 0, 2, &error), -1);
	assert_int_equal(errno, ENOTDIR);
	assert_int_equal(count_entries("new"), 0);
	assert_int_equal(unlink(path), 0);

	/* A Maildir path under a file: cannot be created. */
	char bad[PATH_MAX];
	snprintf(bad, sizeof(bad), "%s/sub", src_path);
	errno = 0;
	assert_int_equal(maildir_deliver(bad, "x", "", 0, fd, 0, 2, &error), -1);
	assert_int_equal(errno, ENOTDIR);
	assert_non_null(error);
	close(fd);
}

static void test_deliver_bad_name(void **state)
{
	static const char *const names[] = { "", ".hidden", "../escape", "a/b" };
	const char *error = NULL;
	int fd = make_source("x\n", 2, 0);

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		errno = 0;
		assert_int_equal(maildir_deliver(mdir, names[i], "", 0, fd, 0, 2, &error), -1);
		assert_int_equal(errno, EINVAL);
	}
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name),
		cmocka_unit_test_setup_teardown(test_deliver_content, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_idempotent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_has, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_short_source, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_too_large, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_read_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_bad_name, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
