/*
 * qstatus.h — the delivery-status store: what happened to every recipient
 * of every queued message, in SQLite at SPOOL_DIR/status.db.
 *
 * Written only by the queue process (and, while the daemon is not running,
 * by `postern queue hold|release|retry|delete`); read by `postern queue
 * list|show` and `postern status`. The spool file stays the truth about
 * WHAT is queued; this store says HOW FAR each recipient got, so that the
 * queue can resume retries after a restart and the operator can answer
 * "where is my mail?". Finished messages stay until qstatus_purge().
 *
 * Schema (PRAGMA user_version = 1), WAL, synchronous = NORMAL: a crash may
 * lose the last few status changes but never corrupts the file; the queue
 * then re-delivers idempotently from the spool.
 *   messages(id PK, sender, size, queued_at, auth_user, held,
 *            delay_notified, finished_at)   finished_at: spool file removed
 *   recipients(id, idx, address, mailbox, status, attempts, last_reply,
 *              next_attempt, remote_host, tls, updated_at; PK (id, idx))
 * Statuses are stored as text: "queued", "deferred", "delivered",
 * "bounced", "expired". "held" is never stored per recipient: the views show
 * it for a recipient that is not final while its message is held.
 *
 * Every function that changes rows runs in its own transaction unless the
 * caller opened one with qstatus_begin() (the queue batches many changes
 * into one commit). Failures are logged with log_error().
 */
#ifndef POSTERN_QSTATUS_H
#define POSTERN_QSTATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "lib-queue/spool.h"

#define QSTATUS_SCHEMA_VERSION  1
/* `postern status ADDRESS` shows at most this many records. */
#define QSTATUS_STATUS_MAX      100

enum qstatus_state { QS_QUEUED, QS_DEFERRED, QS_DELIVERED, QS_BOUNCED, QS_EXPIRED };

/* "queued", "deferred", "delivered", "bounced", "expired" ("?" for a value
 * out of range). */
const char *qstatus_state_name(enum qstatus_state s);
/* Parses a stored status name; 0, or -1 for anything else. */
int qstatus_state_parse(const char *name, enum qstatus_state *s_r);
/* True for delivered, bounced and expired: nothing more will be tried. */
bool qstatus_state_final(enum qstatus_state s);

/* One recipient's state, as the queue updates it. The strings are copied. */
struct qstatus_rcpt {
	enum qstatus_state state;
	unsigned attempts;
	int64_t next_attempt;        /* unix seconds, 0 = now */
	const char *last_reply;      /* may be NULL */
	const char *remote_host;     /* "mx.example.com[127.0.0.2]" or NULL */
	const char *tls;             /* "TLSv1.3 TLS_AES_256_GCM_SHA384" or NULL */
};

struct qstatus;

/* Opens the store at path. When !readonly the file is created if missing
 * and the schema with it (WAL, synchronous = NORMAL, busy timeout 5 s);
 * a readonly open of a missing file, of a file without the schema or with a
 * newer schema fails. 0 with *qs_r, or -1 with *error_r (thread-local text,
 * valid until the next qstatus_open() on this thread). */
int qstatus_open(const char *path, bool readonly, struct qstatus **qs_r,
		 const char **error_r);
/* Commits an open transaction (qstatus_begin()), closes the database, frees
 * qs and sets *qs to NULL. NULL is fine. */
void qstatus_close(struct qstatus **qs);

/* Batching: begin opens a write transaction when none is open (no-op
 * otherwise); commit commits it (no-op when none is open; on failure the
 * transaction is rolled back). 0 or -1. */
int qstatus_begin(struct qstatus *qs);
int qstatus_commit(struct qstatus *qs);

/* A new message: one messages row (sender, size, queued_at, auth_user from
 * env) and one recipients row per env->rcpts[i] with idx = i, status
 * queued and updated_at = now. Rows that already exist are left alone
 * (recovery may add a message again). 0 or -1 (nothing added then). */
int qstatus_add_message(struct qstatus *qs, const struct spool_envelope *env, uint64_t size);

/* Sets recipient idx of message id to *r, updated_at = now. last_reply NULL
 * stores NULL; remote_host and tls NULL keep the stored value. A row that
 * does not exist is not created (0 all the same). 0 or -1. */
int qstatus_update_rcpt(struct qstatus *qs, const char *id, unsigned idx,
			const struct qstatus_rcpt *r);

/* Sets or clears the message's held flag. 0 or -1. */
int qstatus_set_held(struct qstatus *qs, const char *id, bool held);
/* Records that the RFC 3464 "delayed" notice went out for id. 0 or -1. */
int qstatus_set_delay_notified(struct qstatus *qs, const char *id);
/* The spool file of id is gone (all recipients final, or deleted):
 * finished_at = when; the message leaves `queue list`. 0 or -1. */
int qstatus_finish_message(struct qstatus *qs, const char *id, int64_t when);

/* Makes the recipients of id that are queued or deferred due now
 * (next_attempt = 0); id NULL: of every unfinished message. Used by an
 * offline `postern queue retry`. Returns the number of rows changed or -1. */
int qstatus_retry(struct qstatus *qs, const char *id);

/* For recovery at start: fills states[i], attempts[i] and next_attempt[i]
 * for recipients 0..n-1 of id from the rows (a recipient without a row:
 * QS_QUEUED, 0, 0; rows with idx >= n are ignored) and *held_r,
 * *delay_notified_r. Returns 1 when the message has a row, 0 when not
 * (outputs are then the defaults), -1 on error. */
int qstatus_load(struct qstatus *qs, const char *id, size_t n, enum qstatus_state *states,
		 unsigned *attempts, int64_t *next_attempt, bool *held_r,
		 bool *delay_notified_r);

/* The stored last reply and remote host of recipient idx of id (each
 * malloc'ed or NULL), for notices after a restart. 1, 0 (no row) or -1. */
int qstatus_rcpt_texts(struct qstatus *qs, const char *id, unsigned idx, char **last_reply_r,
		       char **remote_host_r);

/* 1 when id is recorded as finished (its spool file was to be removed), 0
 * when not or unknown, -1 on error. */
int qstatus_is_finished(struct qstatus *qs, const char *id);

/* Calls cb for the id of every message not finished (at start the queue
 * finishes those whose spool file is gone: a crash between the removal and
 * its record). Returns the number of ids, or -1. */
int qstatus_unfinished(struct qstatus *qs, void (*cb)(const char *id, void *ctx), void *ctx);

/* Deletes finished messages with finished_at < before and their
 * recipients. Returns the number of messages deleted, or -1. */
int qstatus_purge(struct qstatus *qs, int64_t before);

/*
 * The CLI views. Times are ISO 8601 UTC ("2026-11-23T14:00:00Z"). Strings
 * from the network (replies, host names) are escaped: in JSON per RFC 8259
 * (invalid UTF-8 becomes U+FFFD), in text every control character is shown
 * as \xNN so nothing can drive the terminal.
 */

/* `queue list`: every unfinished message, oldest first.
 * json: one array of {"id", "sender", "size", "queued_at", "auth_user",
 * "held", "recipients": [{"address", "mailbox", "status", "attempts",
 * "last_reply", "next_attempt", "remote_host", "tls", "updated_at"}]};
 * next_attempt is null for a final recipient or 0; status is "held" for a
 * recipient that is not final while the message is held.
 * text: one line per message (id, size, queued time, sender, "(held)"),
 * then one indented line per recipient (status, address, attempts, next
 * attempt, last reply), then "N messages in the queue"; an empty queue
 * prints "queue is empty". Returns the number of messages, or -1. */
int qstatus_print_queue(struct qstatus *qs, FILE *out, bool json);

/* `status ADDRESS|ID`: if arg is a queue id (16 hex digits, either case),
 * the recipients of that message, finished or not; otherwise every
 * recipient with address = arg (ASCII case-insensitive), the most recently
 * updated first, at most QSTATUS_STATUS_MAX. json: an array of recipient
 * records as in qstatus_print_queue() plus "id", "queued_at" and "sender"
 * (an empty array when nothing matches); text: one block per record,
 * nothing when nothing matches. Returns the number of records, or -1. */
int qstatus_print_status(struct qstatus *qs, FILE *out, const char *arg, bool json);

#endif
