/*
 * spool.c — spool files: writing and committing a message, reading it back,
 * recovery at start (format in spool.h).
 *
 * Run by the queue process, the only writer of SPOOL_DIR; the deliverer
 * reads with spool_read(). Owns the files under SPOOL_DIR/queue and
 * SPOOL_DIR/corrupt. Implements the "accepted means durable" half of
 * RFC 5321 4.1.1.4 / 6.1: the caller replies 250 only after
 * spool_writer_sync() and spool_sync_queue_dir() both succeeded.
 *
 * Why an end record and not a rename: one file, one name, no temporary
 * name to clean up and one metadata change less per message. The end record
 * carries checksums because a crash before fdatasync() may leave the end
 * record on disk while earlier blocks are still holes (delayed allocation);
 * such a file must not be taken for a good one.
 */
#include "lib-queue/spool.h"

#include "lib/log.h"
#include "lib/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SPOOL_ERROR_MAX 512

enum spool_writer_state {
	SPOOL_WRITER_WRITING,
	SPOOL_WRITER_FINISHED,
	SPOOL_WRITER_SYNCED,
	SPOOL_WRITER_FAILED,
};

struct spool_writer {
	int fd;
	enum spool_writer_state state;
	uint64_t env_len;
	uint64_t body_len;
	uint32_t env_crc;
	uint32_t body_crc;
	size_t buf_len;
	char path[PATH_MAX];
	char error[SPOOL_ERROR_MAX];
	unsigned char buf[SPOOL_WRITE_BUFFER];
};

/* Result of checking one file; recovery treats each differently. */
enum spool_check {
	SPOOL_CHECK_OK,
	SPOOL_CHECK_INCOMPLETE,  /* never committed: delete */
	SPOOL_CHECK_CORRUPT,     /* committed but damaged: quarantine */
	SPOOL_CHECK_IOERR,       /* cannot tell: leave alone */
};

static _Thread_local char spool_tls_error[SPOOL_ERROR_MAX];

static const char *spool_errorf(char *dest, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static const char *spool_errorf(char *dest, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(dest, SPOOL_ERROR_MAX, fmt, ap);
	va_end(ap);
	return dest;
}

/* ---- CRC-32C, slicing by 8 ---- */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++) {
		for (int t = 1; t < 8; t++) {
			uint32_t prev = crc_table[t - 1][i];
			crc_table[t][i] = (prev >> 8) ^ crc_table[0][prev & 0xff];
		}
	}
}

uint32_t spool_crc32c(uint32_t crc, const void *data, size_t len)
{
	const unsigned char *p = data;

	pthread_once(&crc_once, crc_init);
	crc = ~crc;
	while (len >= 8) {
		uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
				     (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
		crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
		      crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
		      crc_table[3][p[4]] ^ crc_table[2][p[5]] ^
		      crc_table[1][p[6]] ^ crc_table[0][p[7]];
		p += 8;
		len -= 8;
	}
	while (len-- > 0)
		crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
	return ~crc;
}

/* ---- big-endian helpers ---- */

static void put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static void put_u64(unsigned char *p, uint64_t v)
{
	put_u32(p, (uint32_t)(v >> 32));
	put_u32(p + 4, (uint32_t)v);
}

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_u64(const unsigned char *p)
{
	return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

/* ---- paths ---- */

static int spool_path(char *dest, size_t size, const char *spool_dir, const char *sub,
		      const char *name)
{
	int n = name == NULL ? snprintf(dest, size, "%s/%s", spool_dir, sub)
			     : snprintf(dest, size, "%s/%s/%s", spool_dir, sub, name);
	if (n < 0 || (size_t)n >= size) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* mkdir that also makes the new entry durable in its parent. */
static int mkdir_durable(const char *path, mode_t mode)
{
	if (mkdir(path, mode) < 0)
		return errno == EEXIST ? 0 : -1;
	char parent[PATH_MAX];
	size_t len = strlen(path);
	while (len > 1 && path[len - 1] == '/')
		len--;
	while (len > 0 && path[len - 1] != '/')
		len--;
	if (len == 0) {
		parent[0] = '.';
		parent[1] = '\0';
	} else {
		memcpy(parent, path, len);
		parent[len] = '\0';
	}
	return fsync_dir(parent);
}

int spool_init(const char *spool_dir, const char **error_r)
{
	static const char *const subs[] = { "queue", "corrupt" };
	char path[PATH_MAX];

	if (mkdir_p(spool_dir, 0700) < 0) {
		*error_r = spool_errorf(spool_tls_error, "spool: mkdir %s: %s", spool_dir,
					strerror(errno));
		return -1;
	}
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		if (spool_path(path, sizeof(path), spool_dir, subs[i], NULL) < 0 ||
		    mkdir_durable(path, 0700) < 0) {
			*error_r = spool_errorf(spool_tls_error, "spool: mkdir %s/%s: %s",
						spool_dir, subs[i], strerror(errno));
			return -1;
		}
		struct stat st;
		if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
			*error_r = spool_errorf(spool_tls_error, "spool: %s is not a directory",
						path);
			return -1;
		}
	}
	return 0;
}

int spool_sync_queue_dir(const char *spool_dir)
{
	char path[PATH_MAX];
	if (spool_path(path, sizeof(path), spool_dir, "queue", NULL) < 0)
		return -1;
	return fsync_dir(path);
}

/* ---- envelope encoding ---- */

struct enc {
	unsigned char *data;
	size_t len;
	size_t cap;
};

static int enc_put(struct enc *e, const void *data, size_t len)
{
	if (len > SPOOL_ENVELOPE_MAX - e->len)
		return -1;
	if (e->len + len > e->cap) {
		size_t cap = e->cap == 0 ? 1024 : e->cap;
		while (cap < e->len + len)
			cap *= 2;
		unsigned char *p = realloc(e->data, cap);
		if (p == NULL)
			return -1;
		e->data = p;
		e->cap = cap;
	}
	memcpy(e->data + e->len, data, len);
	e->len += len;
	return 0;
}

static int enc_record(struct enc *e, char type, const void *value, size_t len)
{
	unsigned char hdr[SPOOL_RECORD_HDR_SIZE];
	hdr[0] = (unsigned char)type;
	put_u32(hdr + 1, (uint32_t)len);
	if (enc_put(e, hdr, sizeof(hdr)) < 0)
		return -1;
	return enc_put(e, value, len);
}

static int enc_string(struct enc *e, char type, const char *s)
{
	if (s == NULL)
		return 0;
	return enc_record(e, type, s, strlen(s));
}

static bool string_ok(const char *s, bool required)
{
	if (s == NULL)
		return !required;
	return strnlen(s, SPOOL_STRING_MAX + 1) <= SPOOL_STRING_MAX;
}

static const char *envelope_invalid(const struct spool_envelope *env)
{
	if (!queue_id_valid(env->id))
		return "invalid queue id";
	if (!string_ok(env->sender, true))
		return "sender missing or too long";
	if (!string_ok(env->helo, false) || !string_ok(env->client_ip, false) ||
	    !string_ok(env->auth_user, false) || !string_ok(env->envid, false) ||
	    !string_ok(env->ret, false))
		return "envelope string too long";
	if (env->nrcpts == 0 || env->nrcpts > SPOOL_RCPTS_MAX || env->rcpts == NULL)
		return "bad number of recipients";
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];
		if (!string_ok(r->address, true) || r->address[0] == '\0')
			return "recipient address missing or too long";
		if (!string_ok(r->mailbox, false) || !string_ok(r->orcpt, false) ||
		    !string_ok(r->notify, false))
			return "recipient parameter too long";
	}
	return NULL;
}

static int envelope_encode(const struct spool_envelope *env, struct enc *e)
{
	unsigned char num[8];
	uint32_t flags = (env->smtputf8 ? SPOOL_FLAG_SMTPUTF8 : 0) |
			 (env->body_8bit ? SPOOL_FLAG_BODY_8BIT : 0);

	if (enc_put(e, SPOOL_MAGIC, SPOOL_MAGIC_LEN) < 0 ||
	    enc_record(e, SPOOL_REC_ID, env->id, 16) < 0)
		return -1;
	put_u64(num, (uint64_t)env->queued_at);
	if (enc_record(e, SPOOL_REC_QUEUED_AT, num, 8) < 0 ||
	    enc_string(e, SPOOL_REC_SENDER, env->sender) < 0 ||
	    enc_string(e, SPOOL_REC_HELO, env->helo) < 0 ||
	    enc_string(e, SPOOL_REC_CLIENT_IP, env->client_ip) < 0 ||
	    enc_string(e, SPOOL_REC_AUTH_USER, env->auth_user) < 0 ||
	    enc_string(e, SPOOL_REC_ENVID, env->envid) < 0 ||
	    enc_string(e, SPOOL_REC_RET, env->ret) < 0)
		return -1;
	put_u32(num, flags);
	if (enc_record(e, SPOOL_REC_FLAGS, num, 4) < 0)
		return -1;
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct spool_rcpt *r = &env->rcpts[i];
		if (enc_string(e, SPOOL_REC_RCPT, r->address) < 0 ||
		    enc_string(e, SPOOL_REC_MAILBOX, r->mailbox) < 0 ||
		    enc_string(e, SPOOL_REC_ORCPT, r->orcpt) < 0 ||
		    enc_string(e, SPOOL_REC_NOTIFY, r->notify) < 0)
			return -1;
	}
	return 0;
}

/* ---- writer ---- */

static int writer_fail(struct spool_writer *w, const char *what, const char **error_r)
{
	char ebuf[128];

	/* May run on a sync thread: strerror_r, not strerror. */
	w->state = SPOOL_WRITER_FAILED;
	spool_errorf(w->error, "spool: %s %s: %s", what, w->path,
		     strerror_r(errno, ebuf, sizeof(ebuf)));
	*error_r = w->error;
	return -1;
}

static int writer_flush(struct spool_writer *w)
{
	if (w->buf_len == 0)
		return 0;
	if (write_full(w->fd, w->buf, w->buf_len) < 0)
		return -1;
	w->buf_len = 0;
	return 0;
}

static int writer_put(struct spool_writer *w, const void *data, size_t len)
{
	if (len <= sizeof(w->buf) - w->buf_len) {
		memcpy(w->buf + w->buf_len, data, len);
		w->buf_len += len;
		return 0;
	}
	if (writer_flush(w) < 0)
		return -1;
	if (len >= sizeof(w->buf))
		return write_full(w->fd, data, len);
	memcpy(w->buf, data, len);
	w->buf_len = len;
	return 0;
}

int spool_writer_create(const char *spool_dir, const struct spool_envelope *env,
			struct spool_writer **w_r, const char **error_r)
{
	struct enc e = { NULL, 0, 0 };
	struct spool_writer *w = NULL;
	const char *invalid = envelope_invalid(env);
	int ret = -1;

	if (invalid != NULL) {
		*error_r = spool_errorf(spool_tls_error, "spool: %s", invalid);
		goto out;
	}
	if (envelope_encode(env, &e) < 0) {
		*error_r = spool_errorf(spool_tls_error, "spool: %s: envelope too large",
					env->id);
		goto out;
	}
	w = calloc(1, sizeof(*w));
	if (w == NULL) {
		*error_r = spool_errorf(spool_tls_error, "spool: out of memory");
		goto out;
	}
	w->fd = -1;
	if (spool_path(w->path, sizeof(w->path), spool_dir, "queue", env->id) < 0) {
		*error_r = spool_errorf(spool_tls_error, "spool: path too long");
		goto out;
	}
	w->fd = open(w->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (w->fd < 0) {
		*error_r = spool_errorf(spool_tls_error, "spool: create %s: %s", w->path,
					strerror(errno));
		goto out;
	}
	w->env_len = e.len;
	w->env_crc = spool_crc32c(0, e.data, e.len);
	if (writer_put(w, e.data, e.len) < 0) {
		*error_r = spool_errorf(spool_tls_error, "spool: write %s: %s", w->path,
					strerror(errno));
		goto out;
	}
	w->state = SPOOL_WRITER_WRITING;
	*w_r = w;
	w = NULL;
	ret = 0;
out:
	if (w != NULL) {
		if (w->fd >= 0) {
			close(w->fd);
			unlink(w->path);
		}
		free(w);
	}
	free(e.data);
	return ret;
}

int spool_writer_append(struct spool_writer *w, const void *data, size_t len,
			const char **error_r)
{
	if (w->state != SPOOL_WRITER_WRITING) {
		*error_r = w->state == SPOOL_WRITER_FAILED ? w->error
				 : "spool: append after finish (bug)";
		return -1;
	}
	if (len == 0)
		return 0;
	w->body_crc = spool_crc32c(w->body_crc, data, len);
	w->body_len += len;
	if (writer_put(w, data, len) < 0)
		return writer_fail(w, "write", error_r);
	return 0;
}

int spool_writer_finish_write(struct spool_writer *w, const char **error_r)
{
	unsigned char end[SPOOL_END_SIZE];

	if (w->state != SPOOL_WRITER_WRITING) {
		*error_r = w->state == SPOOL_WRITER_FAILED ? w->error
				 : "spool: finish twice (bug)";
		return -1;
	}
	memcpy(end, SPOOL_END_MAGIC, 8);
	put_u64(end + 8, w->env_len);
	put_u64(end + 16, w->body_len);
	put_u32(end + 24, w->env_crc);
	put_u32(end + 28, w->body_crc);
	put_u32(end + 32, spool_crc32c(0, end, 32));
	put_u32(end + 36, 0);
	if (writer_put(w, end, sizeof(end)) < 0 || writer_flush(w) < 0)
		return writer_fail(w, "write", error_r);
	w->state = SPOOL_WRITER_FINISHED;
	return 0;
}

int spool_writer_sync(struct spool_writer *w, const char **error_r)
{
	if (w->state != SPOOL_WRITER_FINISHED) {
		*error_r = w->state == SPOOL_WRITER_FAILED ? w->error
				 : "spool: sync before finish (bug)";
		return -1;
	}
	if (fdatasync(w->fd) < 0)
		return writer_fail(w, "fdatasync", error_r);
	w->state = SPOOL_WRITER_SYNCED;
	return 0;
}

int spool_writer_mark_synced(struct spool_writer *w, const char **error_r)
{
	if (w->state != SPOOL_WRITER_FINISHED) {
		*error_r = w->state == SPOOL_WRITER_FAILED ? w->error
				 : "spool: sync before finish (bug)";
		return -1;
	}
	w->state = SPOOL_WRITER_SYNCED;
	return 0;
}

uint64_t spool_writer_size(const struct spool_writer *w)
{
	return w->env_len + w->body_len +
	       (w->state == SPOOL_WRITER_WRITING ? 0 : SPOOL_END_SIZE);
}

static void writer_free(struct spool_writer **wp, bool unlink_file)
{
	struct spool_writer *w = *wp;
	if (w == NULL)
		return;
	*wp = NULL;
	int saved = errno;
	if (w->fd >= 0)
		close(w->fd);
	if (unlink_file && unlink(w->path) < 0 && errno != ENOENT)
		log_error("spool: unlink %s: %s", w->path, strerror(errno));
	free(w);
	errno = saved;
}

void spool_writer_close(struct spool_writer **w)
{
	if (*w != NULL)
		writer_free(w, (*w)->state != SPOOL_WRITER_SYNCED);
}

void spool_writer_abort(struct spool_writer **w)
{
	writer_free(w, true);
}

/* ---- reading ---- */

void spool_envelope_free(struct spool_envelope **envp)
{
	struct spool_envelope *env = *envp;
	if (env == NULL)
		return;
	*envp = NULL;
	free(env->sender);
	free(env->helo);
	free(env->client_ip);
	free(env->auth_user);
	free(env->envid);
	free(env->ret);
	for (size_t i = 0; i < env->nrcpts; i++) {
		free(env->rcpts[i].address);
		free(env->rcpts[i].mailbox);
		free(env->rcpts[i].orcpt);
		free(env->rcpts[i].notify);
	}
	free(env->rcpts);
	free(env);
}

/* pread of exactly len bytes; -1 with errno, or -2 on a short file. */
static int pread_exact(int fd, void *dest, size_t len, off_t off)
{
	unsigned char *p = dest;
	while (len > 0) {
		ssize_t n = pread(fd, p, len, off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			return -2;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

/* Envelope parser phases: records must come in the order of spool.h. */
enum parse_phase {
	PARSE_ID,
	PARSE_QUEUED_AT,
	PARSE_SENDER,
	PARSE_OPTIONAL,   /* H C A E R, then F */
	PARSE_FIRST_RCPT,
	PARSE_RCPT,       /* r m o n */
};

/* Sets *dest to a copy of the value; fails on a duplicate, NUL or length. */
static int parse_string(char **dest, const unsigned char *value, size_t len,
			bool *oom_r, const char **why_r)
{
	if (*dest != NULL) {
		*why_r = "duplicate record";
		return -1;
	}
	if (len > SPOOL_STRING_MAX) {
		*why_r = "string too long";
		return -1;
	}
	if (memchr(value, '\0', len) != NULL) {
		*why_r = "NUL in string";
		return -1;
	}
	char *s = malloc(len + 1);
	if (s == NULL) {
		*oom_r = true;
		*why_r = "out of memory";
		return -1;
	}
	memcpy(s, value, len);
	s[len] = '\0';
	*dest = s;
	return 0;
}

static int envelope_parse(const unsigned char *data, size_t size, const char *id,
			  struct spool_envelope *env, bool *oom_r, const char **why_r)
{
	enum parse_phase phase = PARSE_ID;
	size_t pos = SPOOL_MAGIC_LEN, rcpts_cap = 0;
	struct spool_rcpt *cur = NULL;

	if (size < SPOOL_MAGIC_LEN || memcmp(data, SPOOL_MAGIC, SPOOL_MAGIC_LEN) != 0) {
		*why_r = "bad magic or version";
		return -1;
	}
	while (pos < size) {
		if (size - pos < SPOOL_RECORD_HDR_SIZE) {
			*why_r = "truncated record header";
			return -1;
		}
		char type = (char)data[pos];
		uint32_t len = get_u32(data + pos + 1);
		pos += SPOOL_RECORD_HDR_SIZE;
		if (len > size - pos) {
			*why_r = "record length past end of envelope";
			return -1;
		}
		const unsigned char *value = data + pos;
		pos += len;
		char **str = NULL;

		switch (phase) {
		case PARSE_ID:
			if (type != SPOOL_REC_ID || len != 16) {
				*why_r = "first record is not the queue id";
				return -1;
			}
			memcpy(env->id, value, 16);
			env->id[16] = '\0';
			if (!queue_id_valid(env->id) || strcmp(env->id, id) != 0) {
				*why_r = "queue id does not match file name";
				return -1;
			}
			phase = PARSE_QUEUED_AT;
			continue;
		case PARSE_QUEUED_AT:
			if (type != SPOOL_REC_QUEUED_AT || len != 8) {
				*why_r = "bad queued_at record";
				return -1;
			}
			env->queued_at = (int64_t)get_u64(value);
			phase = PARSE_SENDER;
			continue;
		case PARSE_SENDER:
			if (type != SPOOL_REC_SENDER) {
				*why_r = "sender record missing";
				return -1;
			}
			str = &env->sender;
			phase = PARSE_OPTIONAL;
			break;
		case PARSE_OPTIONAL:
			switch (type) {
			case SPOOL_REC_HELO: str = &env->helo; break;
			case SPOOL_REC_CLIENT_IP: str = &env->client_ip; break;
			case SPOOL_REC_AUTH_USER: str = &env->auth_user; break;
			case SPOOL_REC_ENVID: str = &env->envid; break;
			case SPOOL_REC_RET: str = &env->ret; break;
			case SPOOL_REC_FLAGS: {
				if (len != 4) {
					*why_r = "bad flags record";
					return -1;
				}
				uint32_t flags = get_u32(value);
				if ((flags & ~(SPOOL_FLAG_SMTPUTF8 | SPOOL_FLAG_BODY_8BIT)) != 0) {
					*why_r = "unknown flags";
					return -1;
				}
				env->smtputf8 = (flags & SPOOL_FLAG_SMTPUTF8) != 0;
				env->body_8bit = (flags & SPOOL_FLAG_BODY_8BIT) != 0;
				phase = PARSE_FIRST_RCPT;
				continue;
			}
			default:
				*why_r = "unexpected record before flags";
				return -1;
			}
			break;
		case PARSE_FIRST_RCPT:
		case PARSE_RCPT:
			if (type == SPOOL_REC_RCPT) {
				if (env->nrcpts == SPOOL_RCPTS_MAX) {
					*why_r = "too many recipients";
					return -1;
				}
				if (env->nrcpts == rcpts_cap) {
					size_t cap = rcpts_cap == 0 ? 8 : rcpts_cap * 2;
					struct spool_rcpt *p = realloc(env->rcpts, cap * sizeof(*p));
					if (p == NULL) {
						*oom_r = true;
						*why_r = "out of memory";
						return -1;
					}
					env->rcpts = p;
					rcpts_cap = cap;
				}
				cur = &env->rcpts[env->nrcpts++];
				memset(cur, 0, sizeof(*cur));
				str = &cur->address;
				if (len == 0) {
					*why_r = "empty recipient address";
					return -1;
				}
				phase = PARSE_RCPT;
			} else if (phase == PARSE_RCPT && type == SPOOL_REC_MAILBOX) {
				str = &cur->mailbox;
			} else if (phase == PARSE_RCPT && type == SPOOL_REC_ORCPT) {
				str = &cur->orcpt;
			} else if (phase == PARSE_RCPT && type == SPOOL_REC_NOTIFY) {
				str = &cur->notify;
			} else {
				*why_r = "unexpected record among recipients";
				return -1;
			}
			break;
		}
		if (parse_string(str, value, len, oom_r, why_r) < 0)
			return -1;
	}
	if (phase != PARSE_RCPT) {
		*why_r = "envelope ends before the first recipient";
		return -1;
	}
	return 0;
}

static enum spool_check body_verify(int fd, off_t off, uint64_t len, uint32_t crc,
				    const char **why_r)
{
	enum { CHUNK = 64 * 1024 };
	unsigned char *buf = malloc(CHUNK);
	uint32_t c = 0;
	enum spool_check ret = SPOOL_CHECK_OK;

	if (buf == NULL) {
		*why_r = "out of memory";
		return SPOOL_CHECK_IOERR;
	}
	while (len > 0) {
		size_t n = len < CHUNK ? (size_t)len : CHUNK;
		int r = pread_exact(fd, buf, n, off);
		if (r < 0) {
			*why_r = r == -2 ? "file shrank while reading" : strerror(errno);
			ret = SPOOL_CHECK_IOERR;
			goto out;
		}
		c = spool_crc32c(c, buf, n);
		off += (off_t)n;
		len -= n;
	}
	if (c != crc) {
		*why_r = "body checksum mismatch";
		ret = SPOOL_CHECK_CORRUPT;
	}
out:
	free(buf);
	return ret;
}

/* Checks the open file fd (named id) and parses its envelope. Body checksum
 * only with verify_body. On OK, *env_r (unless NULL) and the body's place are
 * set; otherwise *why_r says what is wrong. */
static enum spool_check spool_check_fd(int fd, const char *id, bool verify_body,
				       struct spool_envelope **env_r, off_t *body_offset_r,
				       size_t *body_len_r, const char **why_r)
{
	unsigned char end[SPOOL_END_SIZE];
	unsigned char *envdata = NULL;
	struct spool_envelope *env = NULL;
	enum spool_check ret = SPOOL_CHECK_INCOMPLETE;
	struct stat st;
	int r;

	if (fstat(fd, &st) < 0) {
		*why_r = strerror(errno);
		return SPOOL_CHECK_IOERR;
	}
	if (!S_ISREG(st.st_mode)) {
		*why_r = "not a regular file";
		return SPOOL_CHECK_IOERR;
	}
	uint64_t size = (uint64_t)st.st_size;
	if (size < SPOOL_MAGIC_LEN + SPOOL_END_SIZE) {
		*why_r = "too short for an end record";
		return SPOOL_CHECK_INCOMPLETE;
	}
	r = pread_exact(fd, end, sizeof(end), (off_t)(size - SPOOL_END_SIZE));
	if (r < 0) {
		*why_r = r == -2 ? "file shrank while reading" : strerror(errno);
		return SPOOL_CHECK_IOERR;
	}
	if (memcmp(end, SPOOL_END_MAGIC, 8) != 0 ||
	    get_u32(end + 32) != spool_crc32c(0, end, 32) || get_u32(end + 36) != 0) {
		*why_r = "no valid end record";
		return SPOOL_CHECK_INCOMPLETE;
	}
	uint64_t env_len = get_u64(end + 8), body_len = get_u64(end + 16);
	if (env_len < SPOOL_MAGIC_LEN || env_len > SPOOL_ENVELOPE_MAX ||
	    body_len > size || env_len + body_len != size - SPOOL_END_SIZE) {
		*why_r = "end record does not match the file size";
		return SPOOL_CHECK_INCOMPLETE;
	}

	/* From here on the file was committed: damage means corruption. */
	envdata = malloc((size_t)env_len);
	env = calloc(1, sizeof(*env));
	if (envdata == NULL || env == NULL) {
		*why_r = "out of memory";
		ret = SPOOL_CHECK_IOERR;
		goto out;
	}
	r = pread_exact(fd, envdata, (size_t)env_len, 0);
	if (r < 0) {
		*why_r = r == -2 ? "file shrank while reading" : strerror(errno);
		ret = SPOOL_CHECK_IOERR;
		goto out;
	}
	if (spool_crc32c(0, envdata, (size_t)env_len) != get_u32(end + 24)) {
		*why_r = "envelope checksum mismatch";
		ret = SPOOL_CHECK_CORRUPT;
		goto out;
	}
	bool oom = false;
	if (envelope_parse(envdata, (size_t)env_len, id, env, &oom, why_r) < 0) {
		ret = oom ? SPOOL_CHECK_IOERR : SPOOL_CHECK_CORRUPT;
		goto out;
	}
	if (verify_body) {
		ret = body_verify(fd, (off_t)env_len, body_len, get_u32(end + 28), why_r);
		if (ret != SPOOL_CHECK_OK)
			goto out;
	}
	ret = SPOOL_CHECK_OK;
	if (body_offset_r != NULL)
		*body_offset_r = (off_t)env_len;
	if (body_len_r != NULL)
		*body_len_r = (size_t)body_len;
	if (env_r != NULL) {
		*env_r = env;
		env = NULL;
	}
out:
	spool_envelope_free(&env);
	free(envdata);
	return ret;
}

int spool_read(const char *spool_dir, const char *id, struct spool_envelope **env_r,
	       int *fd_r, off_t *body_offset_r, size_t *body_len_r, const char **error_r)
{
	char path[PATH_MAX];
	const char *why = "?";

	if (!queue_id_valid(id)) {
		*error_r = "spool: invalid queue id";
		return -1;
	}
	if (spool_path(path, sizeof(path), spool_dir, "queue", id) < 0) {
		*error_r = "spool: path too long";
		return -1;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		*error_r = spool_errorf(spool_tls_error, "spool: open %s: %s", path,
					strerror(errno));
		return -1;
	}
	enum spool_check c = spool_check_fd(fd, id, false, env_r, body_offset_r,
					    body_len_r, &why);
	if (c != SPOOL_CHECK_OK) {
		static const char *const kinds[] = {
			[SPOOL_CHECK_OK] = "ok",
			[SPOOL_CHECK_INCOMPLETE] = "incomplete",
			[SPOOL_CHECK_CORRUPT] = "corrupt",
			[SPOOL_CHECK_IOERR] = "unreadable",
		};
		*error_r = spool_errorf(spool_tls_error, "spool: %s %s: %s", kinds[c], path,
					why);
		close(fd);
		return -1;
	}
	*fd_r = fd;
	return 0;
}

/* ---- recovery ---- */

static int id_cmp(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

/* Moves queue/<id> to corrupt/<id> (or <id>.<n> if taken) without replacing
 * anything there, durably. */
static void spool_quarantine(const char *spool_dir, const char *id, const char *why)
{
	char from[PATH_MAX], to[PATH_MAX], name[32];

	if (spool_path(from, sizeof(from), spool_dir, "queue", id) < 0)
		return;
	for (unsigned n = 0; n < 100; n++) {
		if (n == 0)
			snprintf(name, sizeof(name), "%s", id);
		else
			snprintf(name, sizeof(name), "%s.%u", id, n);
		if (spool_path(to, sizeof(to), spool_dir, "corrupt", name) < 0)
			return;
		if (link(from, to) == 0) {
			char dir[PATH_MAX];
			if (spool_path(dir, sizeof(dir), spool_dir, "corrupt", NULL) == 0)
				(void)fsync_dir(dir);
			unlink(from);
			(void)spool_sync_queue_dir(spool_dir);
			log_error("spool: corrupt message id=%s moved to %s: %s", id, to, why);
			return;
		}
		if (errno != EEXIST)
			break;
	}
	log_error("spool: corrupt message id=%s left in queue (cannot move: %s): %s", id,
		  strerror(errno), why);
}

int spool_scan(const char *spool_dir, void (*cb)(const char *id, void *ctx), void *ctx,
	       const char **error_r)
{
	char path[PATH_MAX];
	char (*ids)[17] = NULL;
	size_t nids = 0, cap = 0;
	DIR *dir = NULL;
	int ret = -1;

	if (spool_path(path, sizeof(path), spool_dir, "queue", NULL) < 0 ||
	    (dir = opendir(path)) == NULL) {
		*error_r = spool_errorf(spool_tls_error, "spool: opendir %s/queue: %s",
					spool_dir, strerror(errno));
		goto out;
	}
	for (;;) {
		errno = 0;
		struct dirent *d = readdir(dir);
		if (d == NULL) {
			if (errno != 0) {
				*error_r = spool_errorf(spool_tls_error,
							"spool: readdir %s: %s", path,
							strerror(errno));
				goto out;
			}
			break;
		}
		if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
			continue;
		if (!queue_id_valid(d->d_name)) {
			log_warn("spool: ignoring unexpected file %s/%s", path, d->d_name);
			continue;
		}
		if (nids == cap) {
			size_t ncap = cap == 0 ? 64 : cap * 2;
			char (*p)[17] = realloc(ids, ncap * sizeof(*p));
			if (p == NULL) {
				*error_r = "spool: out of memory";
				goto out;
			}
			ids = p;
			cap = ncap;
		}
		memcpy(ids[nids++], d->d_name, 17);
	}
	closedir(dir);
	dir = NULL;
	if (nids > 0)
		qsort(ids, nids, sizeof(*ids), id_cmp);

	for (size_t i = 0; i < nids; i++) {
		char file[PATH_MAX];
		const char *why = "?";
		if (spool_path(file, sizeof(file), spool_dir, "queue", ids[i]) < 0)
			continue;
		int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0) {
			log_error("spool: open %s: %s", file, strerror(errno));
			continue;
		}
		enum spool_check c = spool_check_fd(fd, ids[i], true, NULL, NULL, NULL, &why);
		close(fd);
		switch (c) {
		case SPOOL_CHECK_OK:
			cb(ids[i], ctx);
			break;
		case SPOOL_CHECK_INCOMPLETE:
			log_warn("spool: deleting incomplete message id=%s: %s", ids[i], why);
			if (unlink(file) < 0)
				log_error("spool: unlink %s: %s", file, strerror(errno));
			break;
		case SPOOL_CHECK_CORRUPT:
			spool_quarantine(spool_dir, ids[i], why);
			break;
		case SPOOL_CHECK_IOERR:
			log_error("spool: cannot check message id=%s, leaving it: %s", ids[i],
				  why);
			break;
		}
	}
	ret = 0;
out:
	if (dir != NULL)
		closedir(dir);
	free(ids);
	return ret;
}

int spool_remove(const char *spool_dir, const char *id)
{
	char path[PATH_MAX];

	if (!queue_id_valid(id)) {
		errno = EINVAL;
		return -1;
	}
	if (spool_path(path, sizeof(path), spool_dir, "queue", id) < 0)
		return -1;
	if (unlink(path) < 0 && errno != ENOENT)
		return -1;
	return 0;
}
