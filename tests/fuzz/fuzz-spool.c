/*
 * fuzz-spool.c — libFuzzer entry point for the spool file reader:
 * spool_read() (end record, size, envelope checksum, envelope records) and
 * spool_scan() (recovery: body checksum, delete / quarantine decisions).
 *
 * Every input becomes SPOOL/queue/0123456789ABCDEF in a private temporary
 * spool, is read and scanned, and is cleaned up again. Input byte 0:
 *   bit 0 set: the rest is the whole file, as is (reaches the end-record and
 *              size checks; random data rarely gets further: CRCs);
 *   bit 0 clear: "build" mode, past the checksums into the record parser:
 *              bytes 1-2 (big-endian) L, then L bytes of envelope records,
 *              then the body; the harness adds the magic, the end record and
 *              correct CRCs; unless bit 3 is set it also puts the id and
 *              queued_at records first, so mutations land on the rest;
 *   bit 1: flip the body checksum (scan must quarantine, read must not care).
 *
 * Invariants: what spool_scan() accepts spool_read() accepts; what
 * spool_read() accepts is never deleted by spool_scan() as incomplete; an
 * accepted envelope keeps its documented limits; and it goes through
 * spool_writer_*() and back through spool_read() unchanged (reader and writer
 * agree on the format). Logging is off (scan logs every rejected file).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib-queue/spool.h"
#include "lib/log.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ID "0123456789ABCDEF"

static char *tmp_root;
static char spool_dir[4200], copy_dir[4200];
static char queue_file[4300], corrupt_file[4300], copy_file[4300];

static void cleanup_files(void)
{
	(void)unlink(queue_file);
	(void)unlink(corrupt_file);
	(void)unlink(copy_file);
}

static void rmdir_all(void)
{
	char p[4400];
	cleanup_files();
	const char *dirs[] = { spool_dir, copy_dir };
	for (size_t i = 0; i < 2; i++) {
		snprintf(p, sizeof(p), "%s/queue", dirs[i]);
		(void)rmdir(p);
		snprintf(p, sizeof(p), "%s/corrupt", dirs[i]);
		(void)rmdir(p);
		(void)rmdir(dirs[i]);
	}
	(void)rmdir(tmp_root);
	free(tmp_root);
}

static void setup(void)
{
	const char *error = NULL;

	/* Above LOG_LEVEL_ERROR: nothing is logged. The harness has nothing to
	 * learn from "deleting incomplete message" a million times. */
	log_init("fuzz-spool", "stderr", (enum log_level)(LOG_LEVEL_ERROR + 1));
	tmp_root = fuzz_tmpdir();
	snprintf(spool_dir, sizeof(spool_dir), "%s/spool", tmp_root);
	snprintf(copy_dir, sizeof(copy_dir), "%s/copy", tmp_root);
	snprintf(queue_file, sizeof(queue_file), "%s/queue/%s", spool_dir, FUZZ_ID);
	snprintf(corrupt_file, sizeof(corrupt_file), "%s/corrupt/%s", spool_dir, FUZZ_ID);
	snprintf(copy_file, sizeof(copy_file), "%s/queue/%s", copy_dir, FUZZ_ID);
	if (mkdir(spool_dir, 0700) < 0 || mkdir(copy_dir, 0700) < 0 ||
	    spool_init(spool_dir, &error) < 0 || spool_init(copy_dir, &error) < 0) {
		fprintf(stderr, "fuzz-spool: setup in %s failed: %s\n", tmp_root,
			error != NULL ? error : strerror(errno));
		exit(1);
	}
	atexit(rmdir_all);
}

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static void put_be64(unsigned char *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

/* Builds a committed-looking file from records and body. Returns its size. */
static size_t build_file(unsigned char *out, bool prefix, const unsigned char *rec,
			 size_t rec_len, const unsigned char *body, size_t body_len,
			 bool bad_body_crc)
{
	size_t n = 0;

	memcpy(out, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
	n = SPOOL_MAGIC_LEN;
	if (prefix) {
		out[n] = SPOOL_REC_ID;
		put_be32(out + n + 1, 16);
		memcpy(out + n + 5, FUZZ_ID, 16);
		n += 21;
		out[n] = SPOOL_REC_QUEUED_AT;
		put_be32(out + n + 1, 8);
		put_be64(out + n + 5, 1700000000);
		n += 13;
	}
	if (rec_len > 0)
		memcpy(out + n, rec, rec_len);
	n += rec_len;
	size_t env_len = n;
	if (body_len > 0)
		memcpy(out + n, body, body_len);
	n += body_len;

	unsigned char *end = out + n;
	memcpy(end, SPOOL_END_MAGIC, 8);
	put_be64(end + 8, env_len);
	put_be64(end + 16, body_len);
	put_be32(end + 24, spool_crc32c(0, out, env_len));
	put_be32(end + 28, spool_crc32c(0, body, body_len) ^ (bad_body_crc ? 1u : 0u));
	put_be32(end + 32, spool_crc32c(0, end, 32));
	put_be32(end + 36, 0);
	return n + SPOOL_END_SIZE;
}

static void write_file(const char *path, const unsigned char *p, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FUZZ_CHECK(fd >= 0);
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		FUZZ_CHECK(n > 0);
		p += n;
		len -= (size_t)n;
	}
	FUZZ_CHECK(close(fd) == 0);
}

static bool str_eq(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool str_ok(const char *s, bool required)
{
	return s == NULL ? !required : strlen(s) <= SPOOL_STRING_MAX;
}

static void check_envelope(const struct spool_envelope *env)
{
	FUZZ_CHECK(strcmp(env->id, FUZZ_ID) == 0);
	FUZZ_CHECK(str_ok(env->sender, true));
	FUZZ_CHECK(str_ok(env->helo, false) && str_ok(env->client_ip, false) &&
		   str_ok(env->auth_user, false) && str_ok(env->envid, false) &&
		   str_ok(env->ret, false));
	FUZZ_CHECK(env->nrcpts >= 1 && env->nrcpts <= SPOOL_RCPTS_MAX && env->rcpts != NULL);
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];
		FUZZ_CHECK(str_ok(r->address, true) && r->address[0] != '\0');
		FUZZ_CHECK(str_ok(r->mailbox, false) && str_ok(r->orcpt, false) &&
			   str_ok(r->notify, false));
	}
}

static void check_same(const struct spool_envelope *a, const struct spool_envelope *b)
{
	FUZZ_CHECK(strcmp(a->id, b->id) == 0 && a->queued_at == b->queued_at);
	FUZZ_CHECK(str_eq(a->sender, b->sender) && str_eq(a->helo, b->helo) &&
		   str_eq(a->client_ip, b->client_ip) && str_eq(a->auth_user, b->auth_user) &&
		   str_eq(a->envid, b->envid) && str_eq(a->ret, b->ret));
	FUZZ_CHECK(a->smtputf8 == b->smtputf8 && a->body_8bit == b->body_8bit);
	FUZZ_CHECK(a->nrcpts == b->nrcpts);
	for (size_t i = 0; i < a->nrcpts; i++) {
		FUZZ_CHECK(str_eq(a->rcpts[i].address, b->rcpts[i].address));
		FUZZ_CHECK(str_eq(a->rcpts[i].mailbox, b->rcpts[i].mailbox));
		FUZZ_CHECK(str_eq(a->rcpts[i].orcpt, b->rcpts[i].orcpt));
		FUZZ_CHECK(str_eq(a->rcpts[i].notify, b->rcpts[i].notify));
	}
}

/* Writes env and body with the spool writer into copy_dir, reads it back and
 * compares. */
static void round_trip(const struct spool_envelope *env, const unsigned char *body,
		       size_t body_len)
{
	struct spool_writer *w = NULL;
	struct spool_envelope *env2 = NULL;
	const char *error = NULL;
	off_t off2 = 0;
	size_t len2 = 0;
	int fd2 = -1;

	if (spool_writer_create(copy_dir, env, &w, &error) < 0) {
		fprintf(stderr, "spool: read envelope not writable: %s\n", error);
		abort();
	}
	FUZZ_CHECK(spool_writer_append(w, body, body_len, &error) == 0);
	FUZZ_CHECK(spool_writer_finish_write(w, &error) == 0);
	FUZZ_CHECK(spool_writer_sync(w, &error) == 0);
	spool_writer_close(&w);
	FUZZ_CHECK(w == NULL);
	if (spool_read(copy_dir, FUZZ_ID, &env2, &fd2, &off2, &len2, &error) < 0) {
		fprintf(stderr, "spool: written copy does not read back: %s\n", error);
		abort();
	}
	check_same(env, env2);
	FUZZ_CHECK(len2 == body_len);
	spool_envelope_free(&env2);
	FUZZ_CHECK(env2 == NULL);
	close(fd2);
	FUZZ_CHECK(spool_remove(copy_dir, FUZZ_ID) == 0);
}

static void scan_cb(const char *id, void *ctx)
{
	FUZZ_CHECK(strcmp(id, FUZZ_ID) == 0);
	(*(unsigned *)ctx)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	unsigned char *file = NULL;
	size_t file_len;

	if (!ready) {
		setup();
		ready = true;
	}
	if (size == 0)
		return 0;
	unsigned flags = data[0];
	data++;
	size--;

	if ((flags & 1) != 0) {
		file = (unsigned char *)fuzz_copy(data, size, 0);
		file_len = size;
	} else {
		size_t rec_len = 0;
		if (size >= 2) {
			rec_len = (size_t)data[0] << 8 | data[1];
			data += 2;
			size -= 2;
		}
		if (rec_len > size)
			rec_len = size;
		file = malloc(SPOOL_MAGIC_LEN + 34 + size + SPOOL_END_SIZE);
		FUZZ_CHECK(file != NULL);
		file_len = build_file(file, (flags & 8) == 0, data, rec_len, data + rec_len,
				      size - rec_len, (flags & 2) != 0);
	}
	write_file(queue_file, file, file_len);

	struct spool_envelope *env = NULL;
	const char *error = NULL;
	off_t body_off = -1;
	size_t body_len = 0;
	int fd = -1;
	bool read_ok = spool_read(spool_dir, FUZZ_ID, &env, &fd, &body_off, &body_len,
				  &error) == 0;
	if (read_ok) {
		FUZZ_CHECK(env != NULL && fd >= 0);
		FUZZ_CHECK(body_off >= SPOOL_MAGIC_LEN);
		FUZZ_CHECK((uint64_t)body_off + body_len + SPOOL_END_SIZE == file_len);
		check_envelope(env);
		round_trip(env, file + body_off, body_len);
		spool_envelope_free(&env);
		close(fd);
	} else {
		FUZZ_CHECK(error != NULL && env == NULL);
	}

	unsigned ok = 0;
	FUZZ_CHECK(spool_scan(spool_dir, scan_cb, &ok, &error) == 0);
	FUZZ_CHECK(ok <= 1);
	bool in_queue = access(queue_file, F_OK) == 0;
	bool in_corrupt = access(corrupt_file, F_OK) == 0;
	if (ok == 1)
		FUZZ_CHECK(read_ok && in_queue && !in_corrupt);
	if (read_ok)
		FUZZ_CHECK(ok == 1 || (in_corrupt && !in_queue));

	cleanup_files();
	free(file);
	return 0;
}
