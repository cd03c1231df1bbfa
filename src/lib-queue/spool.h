/*
 * spool.h — the spool file format and its commit protocol.
 *
 * One file per message: SPOOL_DIR/queue/<ID>, ID = 16 upper-case hex digits
 * (queue_id_new()). Only the queue process writes the spool.
 *
 * File layout (all integers big-endian):
 *
 *   "POSTERN-SPOOL 1\n"                  magic and format version, 16 bytes
 *   envelope records                     type (1 byte) + length (u32) + value
 *   body                                 raw bytes, LF line endings, may hold NUL
 *   end record, SPOOL_END_SIZE bytes:
 *     "POSTEND1"                         8 bytes
 *     envelope length  u64               magic + records = offset of the body
 *     body length      u64
 *     envelope crc     u32               CRC-32C of magic + records
 *     body crc         u32               CRC-32C of the body
 *     end crc          u32               CRC-32C of the 32 bytes above
 *     reserved         u32               zero
 *
 * A file is committed when it ends in a valid end record and
 * envelope length + body length + SPOOL_END_SIZE == file size. Anything else
 * is an incomplete write (crash before the commit) and is deleted at
 * recovery. A file with a valid end record whose envelope or body does not
 * match its checksum, or whose envelope does not parse, is corrupt: it may
 * have been accepted, so recovery never deletes it but moves it to
 * SPOOL_DIR/corrupt/ for the operator.
 *
 * Envelope records, in this order (the reader rejects anything else):
 *   'I' queue id (16 bytes, must equal the file name)
 *   'T' queued_at (8 bytes, signed)
 *   'S' sender ("" for the null sender)
 *   'H' helo, 'C' client ip, 'A' auth user, 'E' envid, 'R' ret: optional,
 *       each at most once, any order
 *   'F' flags (4 bytes: SPOOL_FLAG_*)
 *   then per recipient: 'r' address, followed by optional 'm' mailbox,
 *       'o' orcpt, 'n' notify (each at most once)
 * String values hold any byte but NUL; every length is checked against
 * SPOOL_STRING_MAX and against the envelope's end.
 *
 * Commit (group commit, see smtpd "250 after DATA"):
 *   spool_writer_create() → spool_writer_append()… → spool_writer_finish_write()
 *   → spool_writer_sync() (may run on a worker thread)
 *   → spool_sync_queue_dir() once for a batch of messages → reply 250
 *   → spool_writer_close().
 */
#ifndef POSTERN_SPOOL_H
#define POSTERN_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SPOOL_MAGIC             "POSTERN-SPOOL 1\n"
#define SPOOL_MAGIC_LEN         16
#define SPOOL_END_MAGIC         "POSTEND1"
#define SPOOL_END_SIZE          40
#define SPOOL_RECORD_HDR_SIZE   5

/* Limits on what a spool file may hold; both writer and reader enforce them. */
#define SPOOL_STRING_MAX        4096                 /* one envelope string */
#define SPOOL_RCPTS_MAX         100000u              /* recipients per message */
#define SPOOL_ENVELOPE_MAX      (16u * 1024 * 1024)  /* magic + all records */
#define SPOOL_WRITE_BUFFER      (64u * 1024)

#define SPOOL_FLAG_SMTPUTF8     0x1u
#define SPOOL_FLAG_BODY_8BIT    0x2u

enum spool_record_type {
	SPOOL_REC_ID = 'I',
	SPOOL_REC_QUEUED_AT = 'T',
	SPOOL_REC_SENDER = 'S',
	SPOOL_REC_HELO = 'H',
	SPOOL_REC_CLIENT_IP = 'C',
	SPOOL_REC_AUTH_USER = 'A',
	SPOOL_REC_ENVID = 'E',
	SPOOL_REC_RET = 'R',
	SPOOL_REC_FLAGS = 'F',
	SPOOL_REC_RCPT = 'r',
	SPOOL_REC_MAILBOX = 'm',
	SPOOL_REC_ORCPT = 'o',
	SPOOL_REC_NOTIFY = 'n',
};

struct spool_rcpt {
	char *address;  /* as the client gave it, e.g. "Bob+x@Example.com" */
	char *mailbox;  /* canonical local user "bob@example.com"; NULL when remote */
	char *orcpt;    /* RFC 3461 ORCPT, may be NULL */
	char *notify;   /* RFC 3461 NOTIFY, may be NULL */
};

struct spool_envelope {
	char id[17];
	char *sender;        /* "" for the null sender */
	int64_t queued_at;   /* unix seconds */
	char *helo;          /* may be NULL */
	char *client_ip;     /* may be NULL */
	char *auth_user;     /* may be NULL */
	char *envid;         /* RFC 3461 ENVID, may be NULL */
	char *ret;           /* RFC 3461 RET, may be NULL */
	bool smtputf8;
	bool body_8bit;
	struct spool_rcpt *rcpts;
	size_t nrcpts;
};

/* Frees an envelope returned by spool_read() (every string and the rcpts
 * array are malloc'ed) and sets *env to NULL. NULL is fine. */
void spool_envelope_free(struct spool_envelope **env);

/* Creates SPOOL_DIR/queue and SPOOL_DIR/corrupt (0700) if missing and makes
 * their directory entries durable. 0, or -1 with *error_r. */
int spool_init(const char *spool_dir, const char **error_r);

/* fsync() of SPOOL_DIR/queue: makes every file created (or removed) since
 * the last call durable by name. One call covers many writers (group
 * commit). 0, or -1 with errno. */
int spool_sync_queue_dir(const char *spool_dir);

struct spool_writer;

/* Checks env (valid id, sender set, 1..SPOOL_RCPTS_MAX recipients each with
 * a non-empty address, strings <= SPOOL_STRING_MAX) and creates
 * SPOOL_DIR/queue/<env->id> (O_EXCL, mode 0600), buffering the envelope.
 * env is not kept. 0 with *w_r, or -1 with *error_r (file not left behind).
 * *error_r points to thread-local storage valid until the next spool call
 * from this thread. */
int spool_writer_create(const char *spool_dir, const struct spool_envelope *env,
			struct spool_writer **w_r, const char **error_r);

/* Appends body bytes (buffered, SPOOL_WRITE_BUFFER). 0, or -1 with
 * *error_r. After any error the writer only accepts abort/close.
 * For every function taking a writer, *error_r points into the writer and
 * stays valid until spool_writer_close()/abort(). */
int spool_writer_append(struct spool_writer *w, const void *data, size_t len,
			const char **error_r);

/* Writes the end record and flushes the buffer; no fsync. Main thread.
 * 0, or -1 with *error_r (ENOSPC, EIO, …). */
int spool_writer_finish_write(struct spool_writer *w, const char **error_r);

/* fdatasync() of the file. Only after a successful finish_write. Touches
 * nothing but w, so distinct writers may sync on distinct threads at once.
 * 0, or -1 with *error_r: the message is then NOT accepted — abort it (after
 * a failed fsync the kernel may have dropped the dirty pages, so retrying is
 * not safe). */
int spool_writer_sync(struct spool_writer *w, const char **error_r);

/* The message's size on disk so far (envelope + body + end record). */
/* For group commit by syncfs(): the caller has made the whole file system
 * durable (data and directory entries of every finished writer) and marks
 * the writer synced. 0, or -1 when the writer is not finished. */
int spool_writer_mark_synced(struct spool_writer *w, const char **error_r);

uint64_t spool_writer_size(const struct spool_writer *w);

/* Closes and frees the writer; sets *w to NULL. If the writer was not
 * synced successfully the file is unlinked (it was never accepted). */
void spool_writer_close(struct spool_writer **w);

/* Closes, unlinks the file and frees the writer; sets *w to NULL. */
void spool_writer_abort(struct spool_writer **w);

/* Reads a committed spool file: checks the end record, the file size and
 * the envelope checksum (not the body checksum: that needs the whole body;
 * spool_scan() checks it) and parses the envelope, whose id must equal id.
 * On success returns 0 with *env_r (free with spool_envelope_free()), *fd_r
 * (O_RDONLY, O_CLOEXEC; the caller closes it) and the body's place in it for
 * pread()/copy_file_range(). -1 with *error_r (thread-local, see above) when
 * the file is missing, incomplete or corrupt; nothing is returned then. */
int spool_read(const char *spool_dir, const char *id, struct spool_envelope **env_r,
	       int *fd_r, off_t *body_offset_r, size_t *body_len_r, const char **error_r);

/* Recovery at start, before any writer exists. Checks every file in
 * SPOOL_DIR/queue fully (envelope and body checksums):
 *   committed   → cb(id, ctx), in increasing id order;
 *   incomplete  → unlinked, log_warn;
 *   corrupt     → moved to SPOOL_DIR/corrupt/<id>, log_error;
 *   unreadable (EIO, EACCES) or a name that is not a queue id → left alone,
 *   log_error / log_warn.
 * 0, or -1 with *error_r if the directory cannot be read (cb not called). */
int spool_scan(const char *spool_dir, void (*cb)(const char *id, void *ctx), void *ctx,
	       const char **error_r);

/* Unlinks SPOOL_DIR/queue/<id> without fsync: a crash may bring the file
 * back, and the deliverer's idempotent names (maildir_has()) make the
 * re-delivery a no-op. 0 (also when already gone), or -1 with errno
 * (EINVAL for a bad id). */
int spool_remove(const char *spool_dir, const char *id);

/* CRC-32C (Castagnoli) of data, continuing from crc (start with 0). */
uint32_t spool_crc32c(uint32_t crc, const void *data, size_t len);

#endif
