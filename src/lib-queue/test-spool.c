/*
 * test-spool.c — unit tests for the spool format and commit protocol:
 * round trips, truncation at every byte offset, corrupted records and end
 * records, write errors, recovery (spool_scan).
 */
#include "lib-queue/spool.h"

#include "lib/log.h"
#include "lib/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
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

/* ---- fixtures and helpers ---- */

static char base_dir[256];
static char spool_dir[512];

static int setup(void **state)
{
	const char *error = NULL;
	snprintf(base_dir, sizeof(base_dir), "/tmp/postern-test-spool-XXXXXX");
	if (mkdtemp(base_dir) == NULL)
		return -1;
	/* A spool below directories that do not exist yet. */
	snprintf(spool_dir, sizeof(spool_dir), "%s/data/spool", base_dir);
	if (spool_init(spool_dir, &error) < 0) {
		fprintf(stderr, "spool_init: %s\n", error);
		return -1;
	}
	return 0;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int teardown(void **state)
{
	return nftw(base_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void qpath(char *dest, size_t size, const char *sub, const char *id)
{
	int n = snprintf(dest, size, "%s/%s/%s", spool_dir, sub, id);
	assert_true(n > 0 && (size_t)n < size);
}

static bool file_exists(const char *sub, const char *id)
{
	char path[PATH_MAX];
	struct stat st;
	qpath(path, sizeof(path), sub, id);
	return lstat(path, &st) == 0;
}

static size_t count_entries(const char *sub)
{
	char path[PATH_MAX];
	size_t n = 0;
	snprintf(path, sizeof(path), "%s/%s", spool_dir, sub);
	DIR *d = opendir(path);
	assert_non_null(d);
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	}
	closedir(d);
	return n;
}

static void read_whole(const char *id, unsigned char **data_r, size_t *len_r)
{
	char path[PATH_MAX];
	char *data;
	qpath(path, sizeof(path), "queue", id);
	assert_int_equal(read_file(path, 64u * 1024 * 1024, &data, len_r), 0);
	*data_r = (unsigned char *)data;
}

static void write_raw(const char *id, const void *data, size_t len)
{
	char path[PATH_MAX];
	qpath(path, sizeof(path), "queue", id);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write_full(fd, data, len), 0);
	assert_int_equal(close(fd), 0);
}

/* Writes and commits a message, appending the body in chunks of chunk. */
static void commit_message(const struct spool_envelope *env, const void *body,
			   size_t body_len, size_t chunk)
{
	struct spool_writer *w = NULL;
	const char *error = NULL;
	const unsigned char *p = body;

	if (spool_writer_create(spool_dir, env, &w, &error) < 0)
		fail_msg("create: %s", error);
	for (size_t off = 0; off < body_len; off += chunk) {
		size_t n = body_len - off < chunk ? body_len - off : chunk;
		if (spool_writer_append(w, p + off, n, &error) < 0)
			fail_msg("append: %s", error);
	}
	if (spool_writer_finish_write(w, &error) < 0)
		fail_msg("finish: %s", error);
	if (spool_writer_sync(w, &error) < 0)
		fail_msg("sync: %s", error);
	assert_int_equal(spool_sync_queue_dir(spool_dir), 0);
	uint64_t size = spool_writer_size(w);
	spool_writer_close(&w);
	assert_null(w);

	char path[PATH_MAX];
	struct stat st;
	qpath(path, sizeof(path), "queue", env->id);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal((uint64_t)st.st_size, size);
	assert_true(size >= body_len + SPOOL_MAGIC_LEN + SPOOL_END_SIZE);
}

static void simple_env(struct spool_envelope *env, struct spool_rcpt *rcpt)
{
	memset(env, 0, sizeof(*env));
	memset(rcpt, 0, sizeof(*rcpt));
	queue_id_new(env->id);
	env->sender = "alice@example.org";
	env->queued_at = 1700000000;
	rcpt->address = "bob@example.com";
	rcpt->mailbox = "bob@example.com";
	env->rcpts = rcpt;
	env->nrcpts = 1;
}

struct id_list {
	char ids[64][17];
	size_t n;
};

static void collect_cb(const char *id, void *ctx)
{
	struct id_list *l = ctx;
	assert_true(l->n < 64);
	memcpy(l->ids[l->n++], id, 17);
}

static void assert_str_or_null(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		assert_ptr_equal(a, b);
	else
		assert_string_equal(a, b);
}

/* ---- CRC ---- */

static void test_crc32c(void **state)
{
	static const char check[] = "123456789";
	/* RFC 3720 B.4 check value for CRC-32C. */
	assert_int_equal(spool_crc32c(0, check, 9), 0xE3069283u);
	assert_int_equal(spool_crc32c(0, "", 0), 0);
	unsigned char big[1000];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (unsigned char)(i * 7 + 3);
	uint32_t whole = spool_crc32c(0, big, sizeof(big));
	for (size_t split = 0; split <= sizeof(big); split += 37) {
		uint32_t c = spool_crc32c(0, big, split);
		assert_int_equal(spool_crc32c(c, big + split, sizeof(big) - split), whole);
	}
}

/* ---- round trips ---- */

struct roundtrip_case {
	const char *label;
	size_t nrcpts;
	bool full;          /* every optional field set, UTF-8 strings */
	const char *sender;
	size_t body_len;
	size_t chunk;       /* append size; 1 = byte at a time */
};

static const struct roundtrip_case roundtrip_cases[] = {
	{ "minimal, empty body", 1, false, "a@b", 0, 1 },
	{ "null sender, UTF-8, all fields", 3, true, "", 300, 1 },
	{ "utf8 sender", 2, true, "j\xc3\xb6rg@\xc3\xa9xample.org", 1000, 7 },
	{ "many recipients", 1000, true, "bulk@example.org", 5000, 4096 },
	{ "body larger than the buffer, big chunks", 5, false, "x@y", 300000, 200000 },
	{ "body exactly the buffer", 1, false, "x@y", SPOOL_WRITE_BUFFER, SPOOL_WRITE_BUFFER },
	{ "long line body, 64 KiB chunks", 2, true, "x@y", 1000000, 65536 },
};

static unsigned char *make_body(size_t len)
{
	unsigned char *b = malloc(len + 1);
	assert_non_null(b);
	for (size_t i = 0; i < len; i++) {
		/* NUL bytes, 8-bit bytes, a few LFs, and a line far longer than
		 * any buffer in between. */
		if (i % 997 == 0)
			b[i] = '\0';
		else if (i % 1999 == 0 && i < 10000)
			b[i] = '\n';
		else
			b[i] = (unsigned char)(0x20 + (i * 31) % 0xe0);
	}
	return b;
}

static void build_env(const struct roundtrip_case *c, struct spool_envelope *env)
{
	memset(env, 0, sizeof(*env));
	queue_id_new(env->id);
	env->sender = strdup(c->sender);
	env->queued_at = c->full ? -1 : 1700000000;
	if (c->full) {
		env->helo = strdup("m\xc3\xa4il.example.org [odd\tchars\x7f]");
		env->client_ip = strdup("2001:db8::1");
		env->auth_user = strdup("");
		env->envid = strdup("QQ314159+2B");
		env->ret = strdup("HDRS");
		env->smtputf8 = true;
		env->body_8bit = true;
	}
	env->nrcpts = c->nrcpts;
	env->rcpts = calloc(c->nrcpts, sizeof(*env->rcpts));
	assert_non_null(env->rcpts);
	for (size_t i = 0; i < c->nrcpts; i++) {
		char buf[128];
		snprintf(buf, sizeof(buf), "B\xc3\xb6" "b+%zu@Example.com", i);
		env->rcpts[i].address = strdup(buf);
		if (i % 2 == 0) {
			snprintf(buf, sizeof(buf), "b\xc3\xb6" "b%zu@example.com", i);
			env->rcpts[i].mailbox = strdup(buf);
		}
		if (c->full && i % 3 != 2) {
			env->rcpts[i].orcpt = strdup("rfc822;b+2Bx@example.com");
			env->rcpts[i].notify = strdup(i % 3 == 0 ? "SUCCESS,FAILURE" : "");
		}
	}
}

static void test_roundtrip(void **state)
{
	for (size_t t = 0; t < sizeof(roundtrip_cases) / sizeof(roundtrip_cases[0]); t++) {
		const struct roundtrip_case *c = &roundtrip_cases[t];
		struct spool_envelope *in = calloc(1, sizeof(*in)), *out = NULL;
		const char *error = NULL;
		off_t off = -1;
		size_t len = 0;
		int fd = -1;

		assert_non_null(in);
		build_env(c, in);
		unsigned char *body = make_body(c->body_len);
		commit_message(in, body, c->body_len, c->chunk);

		if (spool_read(spool_dir, in->id, &out, &fd, &off, &len, &error) < 0)
			fail_msg("%s: %s", c->label, error);
		assert_string_equal(out->id, in->id);
		assert_string_equal(out->sender, in->sender);
		assert_true(out->queued_at == in->queued_at);
		assert_str_or_null(out->helo, in->helo);
		assert_str_or_null(out->client_ip, in->client_ip);
		assert_str_or_null(out->auth_user, in->auth_user);
		assert_str_or_null(out->envid, in->envid);
		assert_str_or_null(out->ret, in->ret);
		assert_int_equal(out->smtputf8, in->smtputf8);
		assert_int_equal(out->body_8bit, in->body_8bit);
		assert_int_equal(out->nrcpts, in->nrcpts);
		for (size_t i = 0; i < in->nrcpts; i++) {
			assert_string_equal(out->rcpts[i].address, in->rcpts[i].address);
			assert_str_or_null(out->rcpts[i].mailbox, in->rcpts[i].mailbox);
			assert_str_or_null(out->rcpts[i].orcpt, in->rcpts[i].orcpt);
			assert_str_or_null(out->rcpts[i].notify, in->rcpts[i].notify);
		}

		/* The body is where spool_read says, byte for byte, and the
		 * file is exactly envelope + body + end record. */
		assert_int_equal(len, c->body_len);
		unsigned char *copy = malloc(len + 1);
		assert_non_null(copy);
		assert_int_equal(pread(fd, copy, len, off), (ssize_t)len);
		assert_memory_equal(copy, body, len);
		struct stat st;
		assert_int_equal(fstat(fd, &st), 0);
		assert_int_equal((uint64_t)st.st_size, (uint64_t)off + len + SPOOL_END_SIZE);
		assert_int_equal(st.st_mode & 07777, 0600);

		/* Recovery lists it, and only it. */
		struct id_list l = { .n = 0 };
		assert_int_equal(spool_scan(spool_dir, collect_cb, &l, &error), 0);
		assert_int_equal(l.n, 1);
		assert_string_equal(l.ids[0], in->id);

		assert_int_equal(spool_remove(spool_dir, in->id), 0);
		assert_false(file_exists("queue", in->id));
		close(fd);
		free(copy);
		free(body);
		spool_envelope_free(&out);
		assert_null(out);
		spool_envelope_free(&in);
	}
}

/* ---- writer input validation ---- */

struct invalid_case {
	const char *label;
	void (*mutate)(struct spool_envelope *env, struct spool_rcpt *rcpt);
};

static char long_string[SPOOL_STRING_MAX + 2];

static void mut_bad_id(struct spool_envelope *env, struct spool_rcpt *r) { env->id[3] = 'g'; }
static void mut_short_id(struct spool_envelope *env, struct spool_rcpt *r) { env->id[15] = '\0'; }
static void mut_no_sender(struct spool_envelope *env, struct spool_rcpt *r) { env->sender = NULL; }
static void mut_no_rcpts(struct spool_envelope *env, struct spool_rcpt *r) { env->nrcpts = 0; }
static void mut_empty_rcpt(struct spool_envelope *env, struct spool_rcpt *r) { r->address = ""; }
static void mut_null_rcpt(struct spool_envelope *env, struct spool_rcpt *r) { r->address = NULL; }
static void mut_long_helo(struct spool_envelope *env, struct spool_rcpt *r) { env->helo = long_string; }
static void mut_long_orcpt(struct spool_envelope *env, struct spool_rcpt *r) { r->orcpt = long_string; }
static void mut_too_many(struct spool_envelope *env, struct spool_rcpt *r) { env->nrcpts = SPOOL_RCPTS_MAX + 1; }

static const struct invalid_case invalid_cases[] = {
	{ "non-hex id", mut_bad_id },
	{ "short id", mut_short_id },
	{ "no sender", mut_no_sender },
	{ "no recipients", mut_no_rcpts },
	{ "empty recipient", mut_empty_rcpt },
	{ "NULL recipient", mut_null_rcpt },
	{ "helo too long", mut_long_helo },
	{ "orcpt too long", mut_long_orcpt },
	{ "too many recipients", mut_too_many },
};

static void test_writer_rejects(void **state)
{
	memset(long_string, 'x', SPOOL_STRING_MAX + 1);
	for (size_t t = 0; t < sizeof(invalid_cases) / sizeof(invalid_cases[0]); t++) {
		struct spool_envelope env;
		struct spool_rcpt rcpt;
		struct spool_writer *w = NULL;
		const char *error = NULL;

		simple_env(&env, &rcpt);
		invalid_cases[t].mutate(&env, &rcpt);
		if (spool_writer_create(spool_dir, &env, &w, &error) == 0)
			fail_msg("%s: accepted", invalid_cases[t].label);
		assert_null(w);
		assert_non_null(error);
		assert_int_equal(count_entries("queue"), 0);
	}
	/* A string of exactly the maximum is fine. */
	struct spool_envelope env;
	struct spool_rcpt rcpt;
	long_string[SPOOL_STRING_MAX] = '\0';
	simple_env(&env, &rcpt);
	env.helo = long_string;
	commit_message(&env, "x\n", 2, 2);
	assert_int_equal(spool_remove(spool_dir, env.id), 0);
}

static void test_writer_exclusive(void **state)
{
	struct spool_envelope env;
	struct spool_rcpt rcpt;
	struct spool_writer *w = NULL;
	const char *error = NULL;
	struct spool_envelope *out = NULL;
	int fd;
	off_t off;
	size_t len;

	simple_env(&env, &rcpt);
	commit_message(&env, "first\n", 6, 6);
	assert_int_equal(spool_writer_create(spool_dir, &env, &w, &error), -1);
	assert_null(w);
	assert_non_null(strstr(error, "File exists"));
	/* The committed file was not touched. */
	assert_int_equal(spool_read(spool_dir, env.id, &out, &fd, &off, &len, &error), 0);
	assert_int_equal(len, 6);
	close(fd);
	spool_envelope_free(&out);
	assert_int_equal(spool_remove(spool_dir, env.id), 0);
}

static void test_writer_lifecycle(void **state)
{
	struct spool_envelope env;
	struct spool_rcpt rcpt;
	struct spool_writer *w = NULL;
	const char *error = NULL;

	/* close without sync: never accepted, so the file goes away */
	simple_env(&env, &rcpt);
	assert_int_equal(spool_writer_create(spool_dir, &env, &w, &error), 0);
	assert_true(file_exists("queue", env.id));
	assert_int_equal(spool_writer_append(w, "abc", 3, &error), 0);
	assert_int_equal(spool_writer_sync(w, &error), -1);    /* before finish */
	assert_int_equal(spool_writer_finish_write(w, &error), 0);
	assert_int_equal(spool_writer_append(w, "abc", 3, &error), -1);
	assert_int_equal(spool_writer_finish_write(w, &error), -1);
	spool_writer_close(&w);
	assert_null(w);
	assert_false(file_exists("queue", env.id));

	/* abort after sync removes it too */
	simple_env(&env, &rcpt);
	assert_int_equal(spool_writer_create(spool_dir, &env, &w, &error), 0);
	assert_int_equal(spool_writer_finish_write(w, &error), 0);
	assert_int_equal(spool_writer_sync(w, &error), 0);
	spool_writer_abort(&w);
	assert_null(w);
	assert_false(file_exists("queue", env.id));
	spool_writer_abort(&w);   /* NULL is fine */
	spool_writer_close(&w);
}

/* Group commit: finish on the main thread, fdatasync on worker threads,
 * one directory fsync for the batch. */
#define SYNC_BATCH 8

static void *sync_thread(void *arg)
{
	const char *error = NULL;
	return spool_writer_sync(arg, &error) == 0 ? arg : NULL;
}

static void test_sync_on_threads(void **state)
{
	struct spool_envelope env[SYNC_BATCH];
	struct spool_rcpt rcpt[SYNC_BATCH];
	struct spool_writer *w[SYNC_BATCH];
	pthread_t th[SYNC_BATCH];
	const char *error = NULL;

	for (int i = 0; i < SYNC_BATCH; i++) {
		simple_env(&env[i], &rcpt[i]);
		assert_int_equal(spool_writer_create(spool_dir, &env[i], &w[i], &error), 0);
		assert_int_equal(spool_writer_append(w[i], "body\n", 5, &error), 0);
		assert_int_equal(spool_writer_finish_write(w[i], &error), 0);
	}
	for (int i = 0; i < SYNC_BATCH; i++)
		assert_int_equal(pthread_create(&th[i], NULL, sync_thread, w[i]), 0);
	for (int i = 0; i < SYNC_BATCH; i++) {
		void *res = NULL;
		assert_int_equal(pthread_join(th[i], &res), 0);
		assert_ptr_equal(res, w[i]);
	}
	assert_int_equal(spool_sync_queue_dir(spool_dir), 0);
	for (int i = 0; i < SYNC_BATCH; i++)
		spool_writer_close(&w[i]);

	struct id_list l = { .n = 0 };
	assert_int_equal(spool_scan(spool_dir, collect_cb, &l, &error), 0);
	assert_int_equal(l.n, SYNC_BATCH);
	for (int i = 0; i < SYNC_BATCH; i++) {
		assert_string_equal(l.ids[i], env[i].id);   /* ids increase */
		assert_int_equal(spool_remove(spool_dir, env[i].id), 0);
	}
}

/* RLIMIT_FSIZE turns writes past the limit into EFBIG: a real write error
 * from the kernel without a full disk. */
static void test_writer_write_error(void **state)
{
	struct spool_envelope env;
	struct spool_rcpt rcpt;
	struct spool_writer *w = NULL;
	const char *error = NULL;
	struct rlimit old, lim;
	static unsigned char chunk[40000];

	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 100000;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);

	simple_env(&env, &rcpt);
	assert_int_equal(spool_writer_create(spool_dir, &env, &w, &error), 0);
	int r = 0;
	for (int i = 0; i < 100 && r == 0; i++)
		r = spool_writer_append(w, chunk, 10000, &error);
	if (r == 0)
		r = spool_writer_finish_write(w, &error);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	assert_int_equal(r, -1);
	assert_non_null(strstr(error, "File too large"));
	assert_non_null(strstr(error, env.id));
	/* The writer stays failed. */
	assert_int_equal(spool_writer_append(w, "x", 1, &error), -1);
	assert_int_equal(spool_writer_finish_write(w, &error), -1);
	assert_int_equal(spool_writer_sync(w, &error), -1);
	spool_writer_abort(&w);
	assert_false(file_exists("queue", env.id));

	/* Same limit hit by the final flush of a small message. */
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	simple_env(&env, &rcpt);
	assert_int_equal(spool_writer_create(spool_dir, &env, &w, &error), 0);
	for (int i = 0; i < 6; i++)
		assert_int_equal(spool_writer_append(w, chunk, 10000, &error), 0);
	r = spool_writer_append(w, chunk, 39990, &error);
	if (r == 0)
		r = spool_writer_finish_write(w, &error);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	assert_int_equal(r, -1);
	spool_writer_close(&w);    /* not synced: unlinked */
	assert_false(file_exists("queue", env.id));
	signal(SIGXFSZ, SIG_DFL);
}

/* ---- crash at every instant: truncation ---- */

static void test_truncated_everywhere(void **state)
{
	struct spool_envelope *env = calloc(1, sizeof(*env));
	const struct roundtrip_case c = { "trunc", 3, true, "t@example.org", 700, 50 };
	unsigned char *data = NULL;
	size_t size = 0;
	const char *error = NULL;

	assert_non_null(env);
	build_env(&c, env);
	unsigned char *body = make_body(c.body_len);
	commit_message(env, body, c.body_len, c.chunk);
	read_whole(env->id, &data, &size);
	assert_int_equal(spool_remove(spool_dir, env->id), 0);

	/* Every prefix of a committed file, including the empty file and the
	 * file missing only its last byte, is incomplete. */
	char (*ids)[17] = calloc(size, sizeof(*ids));
	assert_non_null(ids);
	for (size_t n = 0; n < size; n++) {
		struct spool_envelope *out = NULL;
		int fd = -1;
		off_t off;
		size_t len;

		/* Keep the name the file was written under for the first one,
		 * so the id check can not be what rejects it. */
		if (n == 0)
			memcpy(ids[n], env->id, 17);
		else
			queue_id_new(ids[n]);
		write_raw(ids[n], data, n);
		if (spool_read(spool_dir, ids[n], &out, &fd, &off, &len, &error) == 0)
			fail_msg("prefix of %zu bytes read as committed", n);
		assert_null(out);
		assert_int_equal(fd, -1);
		if (strstr(error, "incomplete") == NULL)
			fail_msg("prefix of %zu bytes: %s", n, error);
	}
	write_raw(env->id, data, size - 1);

	/* Two committed messages among them. */
	struct spool_envelope good1, good2;
	struct spool_rcpt r1, r2;
	simple_env(&good1, &r1);
	simple_env(&good2, &r2);
	commit_message(&good2, "2\n", 2, 1);
	commit_message(&good1, "", 0, 1);

	struct id_list l = { .n = 0 };
	assert_int_equal(spool_scan(spool_dir, collect_cb, &l, &error), 0);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.ids[0], good1.id);   /* sorted */
	assert_string_equal(l.ids[1], good2.id);
	assert_int_equal(count_entries("queue"), 2);
	assert_int_equal(count_entries("corrupt"), 0);

	assert_int_equal(spool_remove(spool_dir, good1.id), 0);
	assert_int_equal(spool_remove(spool_dir, good2.id), 0);
	free(ids);
	free(data);
	free(body);
	spool_envelope_free(&env);
}

/* ---- hand-built files: record-level corruption ---- */

struct raw {
	unsigned char data[16384];
	size_t len;
};

static void raw_put(struct raw *r, const void *p, size_t len)
{
	assert_true(r->len + len <= sizeof(r->data));
	memcpy(r->data + r->len, p, len);
	r->len += len;
}

static void raw_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static void raw_u64(unsigned char *p, uint64_t v)
{
	raw_u32(p, (uint32_t)(v >> 32));
	raw_u32(p + 4, (uint32_t)v);
}

/* A record whose length field says claimed, followed by len bytes. */
static void raw_rec_lie(struct raw *r, char type, uint32_t claimed, const void *v, size_t len)
{
	unsigned char hdr[5];
	hdr[0] = (unsigned char)type;
	raw_u32(hdr + 1, claimed);
	raw_put(r, hdr, 5);
	raw_put(r, v, len);
}

static void raw_rec(struct raw *r, char type, const void *v, size_t len)
{
	raw_rec_lie(r, type, (uint32_t)len, v, len);
}

static void raw_str(struct raw *r, char type, const char *s)
{
	raw_rec(r, type, s, strlen(s));
}

enum raw_part { RAW_ID, RAW_TIME, RAW_SENDER, RAW_FLAGS, RAW_RCPTS };

/* The standard envelope, with one part replaced by the case's own bytes. */
struct record_case {
	const char *label;
	bool valid;
	void (*build)(struct raw *r, const char *id);
};

static void std_id(struct raw *r, const char *id) { raw_rec(r, 'I', id, 16); }
static void std_time(struct raw *r)
{
	unsigned char t[8];
	raw_u64(t, 1700000000);
	raw_rec(r, 'T', t, 8);
}
static void std_flags(struct raw *r)
{
	unsigned char f[4];
	raw_u32(f, SPOOL_FLAG_SMTPUTF8);
	raw_rec(r, 'F', f, 4);
}
static void std_head(struct raw *r, const char *id)
{
	raw_put(r, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
	std_id(r, id);
	std_time(r);
	raw_str(r, 'S', "s@example.org");
	raw_str(r, 'H', "helo.example.org");
	std_flags(r);
}

static void b_valid(struct raw *r, const char *id)
{
	std_head(r, id);
	raw_str(r, 'r', "a@example.com");
	raw_str(r, 'm', "a@example.com");
	raw_str(r, 'o', "rfc822;a@example.com");
	raw_str(r, 'n', "NEVER");
	raw_str(r, 'r', "remote@example.net");
}
static void b_valid_empty_optional(struct raw *r, const char *id)
{
	raw_put(r, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
	std_id(r, id);
	std_time(r);
	raw_str(r, 'S', "");
	raw_str(r, 'E', "");
	std_flags(r);
	raw_str(r, 'r', "a@b");
}
static void b_len_huge(struct raw *r, const char *id)
{
	std_head(r, id);
	raw_rec_lie(r, 'r', 0xFFFFFFFFu, "a@example.com", 13);
}
static void b_len_one_more(struct raw *r, const char *id)
{
	std_head(r, id);
	raw_rec_lie(r, 'r', 14, "a@example.com", 13);
}
static void b_len_short(struct raw *r, const char *id)
{
	/* The sender's length is one short: the parser then reads garbage
	 * as the next record's type. */
	raw_put(r, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
	std_id(r, id);
	std_time(r);
	raw_rec_lie(r, 'S', 12, "s@example.org", 13);
	std_flags(r);
	raw_str(r, 'r', "a@b");
}
static void b_hdr_truncated(struct raw *r, const char *id)
{
	b_valid(r, id);
	raw_put(r, "r\0\0", 3);
}
static void b_nul(struct raw *r, const char *id)
{
	std_head(r, id);
	raw_rec(r, 'r', "a@b\0c", 5);
}
static void b_too_long(struct raw *r, const char *id)
{
	static char s[SPOOL_STRING_MAX + 1];
	memset(s, 'x', sizeof(s));
	std_head(r, id);
	raw_rec(r, 'r', s, sizeof(s));
}
static void b_dup_helo(struct raw *r, const char *id)
{
	raw_put(r, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
	std_id(r, id);
	std_time(r);
	raw_str(r, 'S', "");
	raw_str(r, 'H', "a");
	raw_str(r, 'H', "b");
	std_flags(r);
	raw_str(r, 'r', "a@b");
}
static void b_dup_mailbox(struct raw *r, const char *id)
{
	std_head(r, id);
	raw_str(r, 'r', "a@b");
	raw_str(r, 'm', "a@b");
	raw_str(r, 'm', "c@d");
}
static void b_unknown_type(struct raw *r, const char *id)
{
	std_head(r, id);
	raw_str(r, 'r', "a@b");
	raw_str(r, 'Z', "?");
}
static void b_no_rcpt(struct raw *r, const char *id) { std_head(r, id); }
static void b_mailbox_first(struct raw *r, const char *id)
{
	std_head(r, id);
	raw_str(r, 'm', "a@b");
	raw_str(r, 'r', "a@b");
}
static void b_header_after_rcpt(struct raw *r, const char *id)
{
	std_head(r, id);
	raw_str(r, 'r', "a@b");
	raw_str(r, 'H', "late");
}
static void b_empty_rcpt(struct raw *r, const char *id)
{
	std_head(r, id);
	raw_str(r, 'r', "");
}
static void b_other_id(struct raw *r, const char *id)
{
	char other[17];
	queue_id_new(other);
	raw_put(r, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
	std_id(r, other);
	std_time(r);
	raw_str(r, 'S', "");
	std_flags(r);
	raw_str(r, 'r', "a@b");
}
static void b_id_not_first(struct raw *r, const char *id)
{
	raw_put(r, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
	std_time(r);
	std_id(r, id);
	raw_str(r, 'S', "");
	std_flags(r);
	raw_str(r, 'r', "a@b");
}
static void b_time_len(struct raw *r, const char *id)
{
	raw_put(r, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
	std_id(r, id);
	raw_rec(r, 'T', "1234", 4);
	raw_str(r, 'S', "");
	std_flags(r);
	raw_str(r, 'r', "a@b");
}
static void b_flags_unknown(struct raw *r, const char *id)
{
	unsigned char f[4];
	raw_put(r, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
	std_id(r, id);
	std_time(r);
	raw_str(r, 'S', "");
	raw_u32(f, 0x80);
	raw_rec(r, 'F', f, 4);
	raw_str(r, 'r', "a@b");
}
static void b_flags_len(struct raw *r, const char *id)
{
	raw_put(r, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
	std_id(r, id);
	std_time(r);
	raw_str(r, 'S', "");
	raw_rec(r, 'F', "\0\0\0\0\0", 5);
	raw_str(r, 'r', "a@b");
}
static void b_no_flags(struct raw *r, const char *id)
{
	raw_put(r, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
	std_id(r, id);
	std_time(r);
	raw_str(r, 'S', "");
	raw_str(r, 'r', "a@b");
}
static void b_version(struct raw *r, const char *id)
{
	b_valid(r, id);
	r->data[14] = '2';
}

static const struct record_case record_cases[] = {
	{ "valid (checks the test's own encoder)", true, b_valid },
	{ "valid with empty strings", true, b_valid_empty_optional },
	{ "length 0xFFFFFFFF", false, b_len_huge },
	{ "length one past the end", false, b_len_one_more },
	{ "length one short", false, b_len_short },
	{ "truncated record header", false, b_hdr_truncated },
	{ "NUL in a string", false, b_nul },
	{ "string over SPOOL_STRING_MAX", false, b_too_long },
	{ "duplicate helo", false, b_dup_helo },
	{ "duplicate mailbox", false, b_dup_mailbox },
	{ "unknown record type", false, b_unknown_type },
	{ "no recipient", false, b_no_rcpt },
	{ "mailbox before any recipient", false, b_mailbox_first },
	{ "header record after recipients", false, b_header_after_rcpt },
	{ "empty recipient address", false, b_empty_rcpt },
	{ "id of another message", false, b_other_id },
	{ "id not first", false, b_id_not_first },
	{ "queued_at of 4 bytes", false, b_time_len },
	{ "unknown flag bit", false, b_flags_unknown },
	{ "flags of 5 bytes", false, b_flags_len },
	{ "flags missing", false, b_no_flags },
	{ "format version 2", false, b_version },
};

/* Appends body and a correct end record (checksums over what is there). */
static void raw_finish(struct raw *r, const char *body, size_t body_len)
{
	size_t env_len = r->len;
	uint32_t env_crc = spool_crc32c(0, r->data, env_len);
	unsigned char end[SPOOL_END_SIZE];

	raw_put(r, body, body_len);
	memcpy(end, SPOOL_END_MAGIC, 8);
	raw_u64(end + 8, env_len);
	raw_u64(end + 16, body_len);
	raw_u32(end + 24, env_crc);
	raw_u32(end + 28, spool_crc32c(0, body, body_len));
	raw_u32(end + 32, spool_crc32c(0, end, 32));
	raw_u32(end + 36, 0);
	raw_put(r, end, sizeof(end));
}

static void test_record_corruption(void **state)
{
	size_t ncases = sizeof(record_cases) / sizeof(record_cases[0]);
	char ids[sizeof(record_cases) / sizeof(record_cases[0])][17];
	size_t nvalid = 0;
	const char *error = NULL;

	for (size_t t = 0; t < ncases; t++) {
		const struct record_case *c = &record_cases[t];
		struct raw *r = calloc(1, sizeof(*r));
		struct spool_envelope *out = NULL;
		int fd = -1;
		off_t off;
		size_t len;

		assert_non_null(r);
		queue_id_new(ids[t]);
		c->build(r, ids[t]);
		raw_finish(r, "body\n", 5);
		write_raw(ids[t], r->data, r->len);
		int ret = spool_read(spool_dir, ids[t], &out, &fd, &off, &len, &error);
		if (c->valid) {
			if (ret < 0)
				fail_msg("%s: %s", c->label, error);
			assert_int_equal(len, 5);
			assert_true(out->nrcpts >= 1);
			nvalid++;
			close(fd);
			spool_envelope_free(&out);
		} else {
			if (ret == 0)
				fail_msg("%s: accepted", c->label);
			assert_null(out);
			if (strstr(error, "corrupt") == NULL)
				fail_msg("%s: %s", c->label, error);
		}
		free(r);
	}

	/* Recovery lists the valid ones and quarantines the others: they
	 * have a valid end record, so they may have been accepted. */
	struct id_list l = { .n = 0 };
	assert_int_equal(spool_scan(spool_dir, collect_cb, &l, &error), 0);
	assert_int_equal(l.n, nvalid);
	assert_int_equal(count_entries("queue"), nvalid);
	assert_int_equal(count_entries("corrupt"), ncases - nvalid);
	for (size_t t = 0; t < ncases; t++) {
		assert_int_equal(file_exists("queue", ids[t]), record_cases[t].valid);
		assert_int_equal(file_exists("corrupt", ids[t]), !record_cases[t].valid);
		if (record_cases[t].valid)
			assert_int_equal(spool_remove(spool_dir, ids[t]), 0);
	}
}

/* ---- damage to the end record, envelope or body of a real file ---- */

enum damage_result { DAMAGE_INCOMPLETE, DAMAGE_CORRUPT, DAMAGE_BODY };

struct damage_case {
	const char *label;
	enum damage_result result;
	void (*damage)(unsigned char *data, size_t *size, size_t env_len);
};

static void fix_end_crc(unsigned char *end)
{
	raw_u32(end + 32, spool_crc32c(0, end, 32));
}

static void d_end_magic(unsigned char *d, size_t *size, size_t env_len) { d[*size - SPOOL_END_SIZE] ^= 1; }
static void d_end_crc(unsigned char *d, size_t *size, size_t env_len) { d[*size - 5] ^= 0x40; }
static void d_reserved(unsigned char *d, size_t *size, size_t env_len) { d[*size - 1] = 1; }
static void d_body_len(unsigned char *d, size_t *size, size_t env_len)
{
	unsigned char *end = d + *size - SPOOL_END_SIZE;
	raw_u64(end + 16, 3);
	fix_end_crc(end);
}
static void d_env_len_huge(unsigned char *d, size_t *size, size_t env_len)
{
	unsigned char *end = d + *size - SPOOL_END_SIZE;
	raw_u64(end + 8, UINT64_MAX - 2);
	fix_end_crc(end);
}
static void d_env_len_zero(unsigned char *d, size_t *size, size_t env_len)
{
	unsigned char *end = d + *size - SPOOL_END_SIZE;
	raw_u64(end + 8, 0);
	raw_u64(end + 16, *size - SPOOL_END_SIZE);
	fix_end_crc(end);
}
static void d_appended(unsigned char *d, size_t *size, size_t env_len) { d[(*size)++] = '\n'; }
static void d_env_byte(unsigned char *d, size_t *size, size_t env_len) { d[env_len - 3] ^= 0x20; }
static void d_magic_byte(unsigned char *d, size_t *size, size_t env_len) { d[0] = 'p'; }
static void d_env_zeroed(unsigned char *d, size_t *size, size_t env_len)
{
	/* A hole from delayed allocation after a crash before fdatasync. */
	memset(d + 20, 0, env_len - 20);
}
static void d_body_byte(unsigned char *d, size_t *size, size_t env_len) { d[env_len + 1] ^= 0x01; }

static const struct damage_case damage_cases[] = {
	{ "end magic", DAMAGE_INCOMPLETE, d_end_magic },
	{ "end crc", DAMAGE_INCOMPLETE, d_end_crc },
	{ "reserved not zero", DAMAGE_INCOMPLETE, d_reserved },
	{ "body length off (crc fixed)", DAMAGE_INCOMPLETE, d_body_len },
	{ "envelope length huge (crc fixed)", DAMAGE_INCOMPLETE, d_env_len_huge },
	{ "envelope length zero (crc fixed)", DAMAGE_INCOMPLETE, d_env_len_zero },
	{ "byte appended", DAMAGE_INCOMPLETE, d_appended },
	{ "envelope byte flipped", DAMAGE_CORRUPT, d_env_byte },
	{ "magic byte changed", DAMAGE_CORRUPT, d_magic_byte },
	{ "envelope zeroed", DAMAGE_CORRUPT, d_env_zeroed },
	{ "body byte flipped", DAMAGE_BODY, d_body_byte },
};

static void test_damage(void **state)
{
	size_t ncases = sizeof(damage_cases) / sizeof(damage_cases[0]);
	char ids[sizeof(damage_cases) / sizeof(damage_cases[0])][17];
	const char *error = NULL;
	size_t ncorrupt = 0;

	for (size_t t = 0; t < ncases; t++) {
		const struct damage_case *c = &damage_cases[t];
		struct spool_envelope env;
		struct spool_rcpt rcpt;
		struct spool_envelope *out = NULL;
		unsigned char *data;
		size_t size;
		int fd = -1;
		off_t off;
		size_t len;

		simple_env(&env, &rcpt);
		memcpy(ids[t], env.id, 17);
		commit_message(&env, "some body\n", 10, 10);
		read_whole(env.id, &data, &size);
		unsigned char *copy = malloc(size + 1);
		assert_non_null(copy);
		memcpy(copy, data, size);
		c->damage(copy, &size, size - 10 - SPOOL_END_SIZE);
		write_raw(env.id, copy, size);

		int ret = spool_read(spool_dir, env.id, &out, &fd, &off, &len, &error);
		if (c->result == DAMAGE_BODY) {
			/* spool_read does not read the body; spool_scan does. */
			assert_int_equal(ret, 0);
			close(fd);
			spool_envelope_free(&out);
		} else {
			if (ret == 0)
				fail_msg("%s: accepted", c->label);
			const char *want = c->result == DAMAGE_INCOMPLETE ? "incomplete" : "corrupt";
			if (strstr(error, want) == NULL)
				fail_msg("%s: %s", c->label, error);
		}
		if (c->result != DAMAGE_INCOMPLETE)
			ncorrupt++;
		free(copy);
		free(data);
	}
	struct id_list l = { .n = 0 };
	assert_int_equal(spool_scan(spool_dir, collect_cb, &l, &error), 0);
	assert_int_equal(l.n, 0);
	assert_int_equal(count_entries("queue"), 0);
	assert_int_equal(count_entries("corrupt"), ncorrupt);
	for (size_t t = 0; t < ncases; t++)
		assert_int_equal(file_exists("corrupt", ids[t]),
				 damage_cases[t].result != DAMAGE_INCOMPLETE);
}

/* A second corrupt file of the same id does not replace the first one in
 * corrupt/. */
static void test_quarantine_no_overwrite(void **state)
{
	struct spool_envelope env;
	struct spool_rcpt rcpt;
	const char *error = NULL;
	unsigned char *data;
	size_t size;

	simple_env(&env, &rcpt);
	commit_message(&env, "x\n", 2, 2);
	read_whole(env.id, &data, &size);
	data[size - SPOOL_END_SIZE - 1] ^= 1;   /* body */
	for (int i = 0; i < 2; i++) {
		struct id_list l = { .n = 0 };
		write_raw(env.id, data, size);
		assert_int_equal(spool_scan(spool_dir, collect_cb, &l, &error), 0);
		assert_int_equal(l.n, 0);
	}
	char name[32];
	snprintf(name, sizeof(name), "%s.1", env.id);
	assert_true(file_exists("corrupt", env.id));
	assert_true(file_exists("corrupt", name));
	free(data);
}

static void test_scan_leaves_foreign_files(void **state)
{
	const char *error = NULL;
	struct id_list l = { .n = 0 };
	struct spool_envelope env;
	struct spool_rcpt rcpt;
	char path[PATH_MAX], target[PATH_MAX];

	write_raw("README", "hello", 5);
	write_raw("0123456789abcdef", "", 0);   /* lower case: not an id */
	/* A symlink under an id's name: not followed, not deleted. */
	simple_env(&env, &rcpt);
	qpath(path, sizeof(path), "queue", env.id);
	snprintf(target, sizeof(target), "%s/victim", spool_dir);
	write_raw("../victim", "", 0);
	assert_int_equal(symlink(target, path), 0);

	assert_int_equal(spool_scan(spool_dir, collect_cb, &l, &error), 0);
	assert_int_equal(l.n, 0);
	assert_true(file_exists("queue", "README"));
	assert_true(file_exists("queue", "0123456789abcdef"));
	assert_true(file_exists("queue", env.id));
	assert_true(file_exists(".", "victim"));

	struct spool_envelope *out = NULL;
	int fd = -1;
	off_t off;
	size_t len;
	assert_int_equal(spool_read(spool_dir, env.id, &out, &fd, &off, &len, &error), -1);
	assert_int_equal(spool_read(spool_dir, "README", &out, &fd, &off, &len, &error), -1);
	assert_int_equal(spool_read(spool_dir, "../queue/README", &out, &fd, &off, &len,
				    &error), -1);
	assert_null(out);
}

static void test_remove(void **state)
{
	struct spool_envelope env;
	struct spool_rcpt rcpt;

	simple_env(&env, &rcpt);
	commit_message(&env, "x\n", 2, 2);
	assert_int_equal(spool_remove(spool_dir, env.id), 0);
	assert_false(file_exists("queue", env.id));
	assert_int_equal(spool_remove(spool_dir, env.id), 0);   /* already gone */
	errno = 0;
	assert_int_equal(spool_remove(spool_dir, "../../etc/passwd"), -1);
	assert_int_equal(errno, EINVAL);
}

static void test_scan_missing_dir(void **state)
{
	const char *error = NULL;
	struct id_list l = { .n = 0 };
	assert_int_equal(spool_scan("/nonexistent/postern", collect_cb, &l, &error), -1);
	assert_non_null(strstr(error, "No such file"));
	assert_int_equal(l.n, 0);
}

int main(void)
{
	/* Recovery logs a warning per deleted file; keep the output readable. */
	log_init("test-spool", "stderr", LOG_LEVEL_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c),
		cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_rejects, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_exclusive, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_lifecycle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_write_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sync_on_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_everywhere, setup, teardown),
		cmocka_unit_test_setup_teardown(test_record_corruption, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quarantine_no_overwrite, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scan_leaves_foreign_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove, setup, teardown),
		cmocka_unit_test(test_scan_missing_dir),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
