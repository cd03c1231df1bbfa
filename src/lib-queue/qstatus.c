/*
 * qstatus.c — the delivery-status store (SPOOL_DIR/status.db): schema,
 * the queue's updates, recovery loading, purging, and the views that
 * `postern queue list|show` and `postern status` print (text and JSON).
 *
 * Runs in the queue process (the only writer while the daemon runs) and in
 * the CLI (reader; writer only while the daemon is stopped).
 * Owns: one sqlite3 connection and its prepared statements per
 * struct qstatus. Not thread-safe: one struct qstatus per thread.
 */
#include "lib-queue/qstatus.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>

#include "lib/log.h"

enum qs_stmt {
	QS_STMT_MSG_INSERT,
	QS_STMT_RCPT_INSERT,
	QS_STMT_RCPT_UPDATE,
	QS_STMT_MSG_HELD,
	QS_STMT_MSG_DELAY,
	QS_STMT_MSG_FINISH,
	QS_STMT_RETRY,
	QS_STMT_LOAD_MSG,
	QS_STMT_LOAD_RCPTS,
	QS_STMT_PURGE_RCPTS,
	QS_STMT_PURGE_MSGS,
	QS_STMT_LIST,
	QS_STMT_STATUS_ID,
	QS_STMT_STATUS_ADDR,
	QS_STMT_RCPT_TEXTS,
	QS_STMT_MSG_FINISHED,
	QS_STMT_UNFINISHED,
	QS_STMT_COUNT
};

/* The address index uses NOCASE so that `postern status Bob@Example.COM`
 * finds bob@example.com without a table scan. */
static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS messages ("
	"  id TEXT PRIMARY KEY,"
	"  sender TEXT NOT NULL,"
	"  size INTEGER NOT NULL,"
	"  queued_at INTEGER NOT NULL,"
	"  auth_user TEXT,"
	"  held INTEGER NOT NULL DEFAULT 0,"
	"  delay_notified INTEGER NOT NULL DEFAULT 0,"
	"  finished_at INTEGER);"
	"CREATE TABLE IF NOT EXISTS recipients ("
	"  id TEXT NOT NULL,"
	"  idx INTEGER NOT NULL,"
	"  address TEXT NOT NULL,"
	"  mailbox TEXT,"
	"  status TEXT NOT NULL,"
	"  attempts INTEGER NOT NULL DEFAULT 0,"
	"  last_reply TEXT,"
	"  next_attempt INTEGER NOT NULL DEFAULT 0,"
	"  remote_host TEXT,"
	"  tls TEXT,"
	"  updated_at INTEGER NOT NULL,"
	"  PRIMARY KEY (id, idx));"
	"CREATE INDEX IF NOT EXISTS recipients_address ON recipients (address COLLATE NOCASE);"
	"CREATE INDEX IF NOT EXISTS messages_finished_at ON messages (finished_at);"
	"PRAGMA user_version = 1;";

/* The columns every view reads, in the order view_row() expects. */
#define QS_VIEW_COLUMNS \
	"m.id, m.sender, m.size, m.queued_at, m.auth_user, m.held," \
	" r.address, r.mailbox, r.status, r.attempts, r.last_reply, r.next_attempt," \
	" r.remote_host, r.tls, r.updated_at"

static const char *const stmt_sql[QS_STMT_COUNT] = {
	[QS_STMT_RCPT_TEXTS] =
		"SELECT last_reply, remote_host FROM recipients WHERE id = ?1 AND idx = ?2",
	[QS_STMT_MSG_FINISHED] = "SELECT finished_at IS NOT NULL FROM messages WHERE id = ?1",
	[QS_STMT_UNFINISHED] = "SELECT id FROM messages WHERE finished_at IS NULL",
	[QS_STMT_MSG_INSERT] =
		"INSERT OR IGNORE INTO messages (id, sender, size, queued_at, auth_user)"
		" VALUES (?1, ?2, ?3, ?4, ?5)",
	[QS_STMT_RCPT_INSERT] =
		"INSERT OR IGNORE INTO recipients (id, idx, address, mailbox, status, updated_at)"
		" VALUES (?1, ?2, ?3, ?4, 'queued', ?5)",
	[QS_STMT_RCPT_UPDATE] =
		"UPDATE recipients SET status = ?3, attempts = ?4, next_attempt = ?5,"
		" last_reply = ?6, remote_host = COALESCE(?7, remote_host),"
		" tls = COALESCE(?8, tls), updated_at = ?9 WHERE id = ?1 AND idx = ?2",
	[QS_STMT_MSG_HELD] = "UPDATE messages SET held = ?2 WHERE id = ?1",
	[QS_STMT_MSG_DELAY] = "UPDATE messages SET delay_notified = 1 WHERE id = ?1",
	[QS_STMT_MSG_FINISH] = "UPDATE messages SET finished_at = ?2 WHERE id = ?1",
	[QS_STMT_RETRY] =
		"UPDATE recipients SET next_attempt = 0, updated_at = ?2"
		" WHERE status IN ('queued', 'deferred') AND (?1 IS NULL OR id = ?1)"
		" AND id IN (SELECT id FROM messages WHERE finished_at IS NULL)",
	[QS_STMT_LOAD_MSG] = "SELECT held, delay_notified FROM messages WHERE id = ?1",
	[QS_STMT_LOAD_RCPTS] =
		"SELECT idx, status, attempts, next_attempt FROM recipients WHERE id = ?1",
	[QS_STMT_PURGE_RCPTS] =
		"DELETE FROM recipients WHERE id IN (SELECT id FROM messages"
		" WHERE finished_at IS NOT NULL AND finished_at < ?1)",
	[QS_STMT_PURGE_MSGS] =
		"DELETE FROM messages WHERE finished_at IS NOT NULL AND finished_at < ?1",
	[QS_STMT_LIST] =
		"SELECT " QS_VIEW_COLUMNS " FROM messages m LEFT JOIN recipients r ON r.id = m.id"
		" WHERE m.finished_at IS NULL ORDER BY m.queued_at, m.id, r.idx",
	[QS_STMT_STATUS_ID] =
		"SELECT " QS_VIEW_COLUMNS " FROM messages m JOIN recipients r ON r.id = m.id"
		" WHERE m.id = ?1 ORDER BY r.idx",
	[QS_STMT_STATUS_ADDR] =
		"SELECT " QS_VIEW_COLUMNS " FROM recipients r JOIN messages m ON m.id = r.id"
		" WHERE r.address = ?1 COLLATE NOCASE"
		" ORDER BY r.updated_at DESC, m.queued_at DESC, m.id DESC, r.idx"
		" LIMIT ?2",
};

struct qstatus {
	sqlite3 *db;
	char *path;
	sqlite3_stmt *stmt[QS_STMT_COUNT];
};

static const char *const state_names[] = {
	[QS_QUEUED] = "queued",
	[QS_DEFERRED] = "deferred",
	[QS_DELIVERED] = "delivered",
	[QS_BOUNCED] = "bounced",
	[QS_EXPIRED] = "expired",
};

const char *qstatus_state_name(enum qstatus_state s)
{
	if ((unsigned)s >= sizeof(state_names) / sizeof(state_names[0]))
		return "?";
	return state_names[s];
}

int qstatus_state_parse(const char *name, enum qstatus_state *s_r)
{
	for (size_t i = 0; i < sizeof(state_names) / sizeof(state_names[0]); i++) {
		if (name != NULL && strcmp(name, state_names[i]) == 0) {
			*s_r = (enum qstatus_state)i;
			return 0;
		}
	}
	return -1;
}

bool qstatus_state_final(enum qstatus_state s)
{
	return s == QS_DELIVERED || s == QS_BOUNCED || s == QS_EXPIRED;
}

/* ---- connection, errors, statements ---- */

/* qstatus_open has no struct to keep its error in. */
static _Thread_local char open_error[512];

static const char *open_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static const char *open_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(open_error, sizeof(open_error), fmt, ap);
	va_end(ap);
	return open_error;
}

static void qs_sql_error(struct qstatus *qs, const char *what)
{
	log_error("qstatus: %s: database error while %s: %s", qs->path, what,
		  sqlite3_errmsg(qs->db));
}

/* Prepares statement id on first use (a reader never prepares the
 * writers' statements). NULL on error (logged). */
static sqlite3_stmt *qs_stmt(struct qstatus *qs, enum qs_stmt id)
{
	if (qs->stmt[id] == NULL &&
	    sqlite3_prepare_v3(qs->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
			       &qs->stmt[id], NULL) != SQLITE_OK) {
		qs_sql_error(qs, "preparing a statement");
		qs->stmt[id] = NULL;
	}
	return qs->stmt[id];
}

static void qs_done(sqlite3_stmt *st)
{
	if (st == NULL)
		return;
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

/* Steps a statement that returns no rows, then resets it. 0 or -1. */
static int qs_run(struct qstatus *qs, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		qs_sql_error(qs, what);
	qs_done(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

static int qs_exec(struct qstatus *qs, const char *sql, const char *what)
{
	if (sqlite3_exec(qs->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		qs_sql_error(qs, what);
		return -1;
	}
	return 0;
}

/* A savepoint makes a multi-row change atomic whether or not the caller
 * has a transaction open (outside one it is the transaction). */
static int qs_savepoint(struct qstatus *qs)
{
	return qs_exec(qs, "SAVEPOINT qs_change", "starting a change");
}

static int qs_release(struct qstatus *qs)
{
	if (qs_exec(qs, "RELEASE qs_change", "committing a change") == 0)
		return 0;
	if (sqlite3_exec(qs->db, "ROLLBACK TO qs_change; RELEASE qs_change", NULL, NULL,
			 NULL) != SQLITE_OK)
		qs_sql_error(qs, "rolling back a change");
	return -1;
}

static void qs_rollback(struct qstatus *qs)
{
	if (sqlite3_exec(qs->db, "ROLLBACK TO qs_change; RELEASE qs_change", NULL, NULL,
			 NULL) != SQLITE_OK)
		qs_sql_error(qs, "rolling back a change");
}

static int qs_user_version(struct qstatus *qs, int *version_r)
{
	sqlite3_stmt *st = NULL;
	int ret = -1;
	if (sqlite3_prepare_v2(qs->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
		goto out;
	if (sqlite3_step(st) != SQLITE_ROW)
		goto out;
	*version_r = sqlite3_column_int(st, 0);
	ret = 0;
out:
	sqlite3_finalize(st);
	return ret;
}

/* Creates the schema in one transaction unless it is there. 0 or -1. */
static int qs_create_schema(struct qstatus *qs)
{
	char *errmsg = NULL;
	int version = 0;

	if (sqlite3_exec(qs->db, "BEGIN IMMEDIATE", NULL, NULL, &errmsg) != SQLITE_OK)
		goto fail;
	if (qs_user_version(qs, &version) < 0) {
		sqlite3_exec(qs->db, "ROLLBACK", NULL, NULL, NULL);
		goto fail;
	}
	if (version == 0 && sqlite3_exec(qs->db, schema_sql, NULL, NULL, &errmsg) != SQLITE_OK) {
		sqlite3_exec(qs->db, "ROLLBACK", NULL, NULL, NULL);
		goto fail;
	}
	if (sqlite3_exec(qs->db, "COMMIT", NULL, NULL, &errmsg) != SQLITE_OK) {
		sqlite3_exec(qs->db, "ROLLBACK", NULL, NULL, NULL);
		goto fail;
	}
	return 0;
fail:
	open_fail("%s: creating the schema: %s", qs->path,
		  errmsg != NULL ? errmsg : sqlite3_errmsg(qs->db));
	sqlite3_free(errmsg);
	return -1;
}

static void qs_free(struct qstatus *qs)
{
	for (size_t i = 0; i < QS_STMT_COUNT; i++)
		sqlite3_finalize(qs->stmt[i]);
	sqlite3_close(qs->db);
	free(qs->path);
	free(qs);
}

int qstatus_open(const char *path, bool readonly, struct qstatus **qs_r,
		 const char **error_r)
{
	struct qstatus *qs = NULL;
	char *errmsg = NULL;
	int version = 0;
	struct stat st;

	*qs_r = NULL;
	/* SQLite's "unable to open database file" hides the reason. */
	if (readonly && stat(path, &st) < 0) {
		*error_r = open_fail("%s: %s", path, strerror(errno));
		return -1;
	}
	qs = calloc(1, sizeof(*qs));
	if (qs == NULL || (qs->path = strdup(path)) == NULL) {
		free(qs);
		*error_r = open_fail("%s: out of memory", path);
		return -1;
	}
	int flags = (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
		    SQLITE_OPEN_NOMUTEX;
	int rc = sqlite3_open_v2(path, &qs->db, flags, NULL);
	if (rc != SQLITE_OK) {
		*error_r = open_fail("%s: %s", path,
				     qs->db != NULL ? sqlite3_errmsg(qs->db) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_busy_timeout(qs->db, 5000);
	if (!readonly) {
		/* WAL: the CLI reads while the queue writes. synchronous=NORMAL:
		 * a power cut may lose the last commits, not the file; the spool
		 * stays the truth and delivery is idempotent. */
		if (sqlite3_exec(qs->db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL",
				 NULL, NULL, &errmsg) != SQLITE_OK) {
			*error_r = open_fail("%s: %s", path, errmsg);
			sqlite3_free(errmsg);
			goto fail;
		}
		if (qs_create_schema(qs) < 0) {
			*error_r = open_error;
			goto fail;
		}
	}
	if (qs_user_version(qs, &version) < 0) {
		*error_r = open_fail("%s: reading the schema version: %s", path,
				     sqlite3_errmsg(qs->db));
		goto fail;
	}
	if (version == 0) {
		*error_r = open_fail("%s: not a delivery-status database", path);
		goto fail;
	}
	if (version > QSTATUS_SCHEMA_VERSION) {
		*error_r = open_fail("%s: schema version %d is newer than this program's (%d)",
				     path, version, QSTATUS_SCHEMA_VERSION);
		goto fail;
	}
	*qs_r = qs;
	return 0;
fail:
	qs_free(qs);
	return -1;
}

void qstatus_close(struct qstatus **qsp)
{
	struct qstatus *qs = *qsp;
	if (qs == NULL)
		return;
	*qsp = NULL;
	if (qstatus_commit(qs) < 0)
		log_error("qstatus: %s: the last changes were lost at close", qs->path);
	qs_free(qs);
}

int qstatus_begin(struct qstatus *qs)
{
	if (!sqlite3_get_autocommit(qs->db))
		return 0;
	return qs_exec(qs, "BEGIN IMMEDIATE", "starting a transaction");
}

int qstatus_commit(struct qstatus *qs)
{
	if (sqlite3_get_autocommit(qs->db))
		return 0;
	if (qs_exec(qs, "COMMIT", "committing") == 0)
		return 0;
	if (!sqlite3_get_autocommit(qs->db) &&
	    sqlite3_exec(qs->db, "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK)
		qs_sql_error(qs, "rolling back");
	return -1;
}

/* ---- the queue's changes ---- */

int qstatus_add_message(struct qstatus *qs, const struct spool_envelope *env, uint64_t size)
{
	sqlite3_stmt *msg = qs_stmt(qs, QS_STMT_MSG_INSERT);
	sqlite3_stmt *rcpt = qs_stmt(qs, QS_STMT_RCPT_INSERT);
	int64_t now = (int64_t)time(NULL);

	if (msg == NULL || rcpt == NULL || qs_savepoint(qs) < 0)
		return -1;
	sqlite3_bind_text(msg, 1, env->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(msg, 2, env->sender != NULL ? env->sender : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(msg, 3, size > INT64_MAX ? INT64_MAX : (sqlite3_int64)size);
	sqlite3_bind_int64(msg, 4, env->queued_at);
	sqlite3_bind_text(msg, 5, env->auth_user, -1, SQLITE_STATIC);
	if (qs_run(qs, msg, "adding a message") < 0)
		goto fail;
	for (size_t i = 0; i < env->nrcpts; i++) {
		sqlite3_bind_text(rcpt, 1, env->id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(rcpt, 2, (sqlite3_int64)i);
		sqlite3_bind_text(rcpt, 3, env->rcpts[i].address, -1, SQLITE_STATIC);
		sqlite3_bind_text(rcpt, 4, env->rcpts[i].mailbox, -1, SQLITE_STATIC);
		sqlite3_bind_int64(rcpt, 5, now);
		if (qs_run(qs, rcpt, "adding a recipient") < 0)
			goto fail;
	}
	return qs_release(qs);
fail:
	qs_rollback(qs);
	return -1;
}

int qstatus_update_rcpt(struct qstatus *qs, const char *id, unsigned idx,
			const struct qstatus_rcpt *r)
{
	sqlite3_stmt *st = qs_stmt(qs, QS_STMT_RCPT_UPDATE);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, idx);
	sqlite3_bind_text(st, 3, qstatus_state_name(r->state), -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, r->attempts);
	sqlite3_bind_int64(st, 5, r->next_attempt);
	sqlite3_bind_text(st, 6, r->last_reply, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, r->remote_host, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 8, r->tls, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 9, (sqlite3_int64)time(NULL));
	return qs_run(qs, st, "updating a recipient");
}

int qstatus_set_held(struct qstatus *qs, const char *id, bool held)
{
	sqlite3_stmt *st = qs_stmt(qs, QS_STMT_MSG_HELD);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, held ? 1 : 0);
	return qs_run(qs, st, "holding or releasing a message");
}

int qstatus_set_delay_notified(struct qstatus *qs, const char *id)
{
	sqlite3_stmt *st = qs_stmt(qs, QS_STMT_MSG_DELAY);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	return qs_run(qs, st, "recording a delay notice");
}

int qstatus_finish_message(struct qstatus *qs, const char *id, int64_t when)
{
	sqlite3_stmt *st = qs_stmt(qs, QS_STMT_MSG_FINISH);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, when);
	return qs_run(qs, st, "finishing a message");
}

int qstatus_retry(struct qstatus *qs, const char *id)
{
	sqlite3_stmt *st = qs_stmt(qs, QS_STMT_RETRY);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)time(NULL));
	if (qs_run(qs, st, "scheduling a retry") < 0)
		return -1;
	return sqlite3_changes(qs->db);
}

int qstatus_rcpt_texts(struct qstatus *qs, const char *id, unsigned idx, char **last_reply_r,
		       char **remote_host_r)
{
	sqlite3_stmt *st = qs_stmt(qs, QS_STMT_RCPT_TEXTS);
	int ret = -1;
	*last_reply_r = NULL;
	*remote_host_r = NULL;
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)idx);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *a = (const char *)sqlite3_column_text(st, 0);
		const char *b = (const char *)sqlite3_column_text(st, 1);
		*last_reply_r = a != NULL ? strdup(a) : NULL;
		*remote_host_r = b != NULL ? strdup(b) : NULL;
		ret = 1;
	} else if (rc == SQLITE_DONE) {
		ret = 0;
	} else {
		qs_sql_error(qs, "reading a recipient");
	}
	qs_done(st);
	return ret;
}

int qstatus_is_finished(struct qstatus *qs, const char *id)
{
	sqlite3_stmt *st = qs_stmt(qs, QS_STMT_MSG_FINISHED);
	int ret = -1;
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		ret = sqlite3_column_int(st, 0) != 0;
	else if (rc == SQLITE_DONE)
		ret = 0;
	else
		qs_sql_error(qs, "reading a message");
	qs_done(st);
	return ret;
}

int qstatus_unfinished(struct qstatus *qs, void (*cb)(const char *id, void *ctx), void *ctx)
{
	sqlite3_stmt *st = qs_stmt(qs, QS_STMT_UNFINISHED);
	int n = 0, rc;
	if (st == NULL)
		return -1;
	/* Collected first: cb may write to the database. */
	char (*ids)[17] = NULL;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(st, 0);
		if (id == NULL || strlen(id) != 16)
			continue;
		char (*grown)[17] = realloc(ids, (size_t)(n + 1) * sizeof(*ids));
		if (grown == NULL) {
			rc = SQLITE_NOMEM;
			break;
		}
		ids = grown;
		memcpy(ids[n++], id, 17);
	}
	qs_done(st);
	if (rc != SQLITE_DONE) {
		free(ids);
		qs_sql_error(qs, "listing unfinished messages");
		return -1;
	}
	for (int i = 0; i < n; i++)
		cb(ids[i], ctx);
	free(ids);
	return n;
}

int qstatus_load(struct qstatus *qs, const char *id, size_t n, enum qstatus_state *states,
		 unsigned *attempts, int64_t *next_attempt, bool *held_r,
		 bool *delay_notified_r)
{
	sqlite3_stmt *msg = qs_stmt(qs, QS_STMT_LOAD_MSG);
	sqlite3_stmt *rcpts = qs_stmt(qs, QS_STMT_LOAD_RCPTS);
	int ret = -1, rc;

	for (size_t i = 0; i < n; i++) {
		states[i] = QS_QUEUED;
		attempts[i] = 0;
		next_attempt[i] = 0;
	}
	*held_r = false;
	*delay_notified_r = false;
	if (msg == NULL || rcpts == NULL)
		return -1;
	sqlite3_bind_text(msg, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(msg);
	if (rc == SQLITE_DONE) {
		ret = 0;
		goto out;
	}
	if (rc != SQLITE_ROW) {
		qs_sql_error(qs, "loading a message");
		goto out;
	}
	*held_r = sqlite3_column_int(msg, 0) != 0;
	*delay_notified_r = sqlite3_column_int(msg, 1) != 0;

	sqlite3_bind_text(rcpts, 1, id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(rcpts)) == SQLITE_ROW) {
		sqlite3_int64 idx = sqlite3_column_int64(rcpts, 0);
		if (idx < 0 || (uint64_t)idx >= n)
			continue;
		const char *name = (const char *)sqlite3_column_text(rcpts, 1);
		if (qstatus_state_parse(name, &states[idx]) < 0) {
			log_warn("qstatus: %s: message %s recipient %lld has unknown status "
				 "%s; retrying it", qs->path, id, (long long)idx,
				 name != NULL ? name : "NULL");
			states[idx] = QS_QUEUED;
		}
		sqlite3_int64 a = sqlite3_column_int64(rcpts, 2);
		attempts[idx] = a < 0 ? 0 : a > UINT32_MAX ? UINT32_MAX : (unsigned)a;
		next_attempt[idx] = sqlite3_column_int64(rcpts, 3);
	}
	if (rc != SQLITE_DONE) {
		qs_sql_error(qs, "loading recipients");
		/* Leave no half-loaded state behind. */
		for (size_t i = 0; i < n; i++) {
			states[i] = QS_QUEUED;
			attempts[i] = 0;
			next_attempt[i] = 0;
		}
		*held_r = false;
		*delay_notified_r = false;
		goto out;
	}
	ret = 1;
out:
	qs_done(msg);
	qs_done(rcpts);
	return ret;
}

int qstatus_purge(struct qstatus *qs, int64_t before)
{
	sqlite3_stmt *rcpts = qs_stmt(qs, QS_STMT_PURGE_RCPTS);
	sqlite3_stmt *msgs = qs_stmt(qs, QS_STMT_PURGE_MSGS);
	int deleted;

	if (rcpts == NULL || msgs == NULL || qs_savepoint(qs) < 0)
		return -1;
	sqlite3_bind_int64(rcpts, 1, before);
	if (qs_run(qs, rcpts, "purging recipients") < 0)
		goto fail;
	sqlite3_bind_int64(msgs, 1, before);
	if (qs_run(qs, msgs, "purging messages") < 0)
		goto fail;
	deleted = sqlite3_changes(qs->db);
	if (qs_release(qs) < 0)
		return -1;
	return deleted;
fail:
	qs_rollback(qs);
	return -1;
}

/* ---- output: escaping ---- */

/* Length of the well-formed UTF-8 sequence (2..4 bytes) at p, or 0 when
 * the bytes there are not one (stray continuation, overlong form,
 * surrogate, beyond U+10FFFF, cut short). p is NUL-terminated; a NUL is
 * never a continuation byte, so nothing past it is read. */
static size_t utf8_seq(const unsigned char *p)
{
	unsigned c = p[0];
	if (c >= 0xC2 && c <= 0xDF)
		return (p[1] & 0xC0) == 0x80 ? 2 : 0;
	if (c >= 0xE0 && c <= 0xEF) {
		if ((p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
			return 0;
		if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0))
			return 0;
		return 3;
	}
	if (c >= 0xF0 && c <= 0xF4) {
		if ((p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
			return 0;
		if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] >= 0x90))
			return 0;
		return 4;
	}
	return 0;
}

/* A JSON string (RFC 8259 section 7), or null for NULL. Valid UTF-8 passes
 * through; a byte that is not part of it becomes U+FFFD so the output is
 * always valid JSON. */
static void json_str(FILE *out, const char *s)
{
	if (s == NULL) {
		fputs("null", out);
		return;
	}
	putc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		unsigned char c = *p;
		switch (c) {
		case '"': fputs("\\\"", out); continue;
		case '\\': fputs("\\\\", out); continue;
		case '\n': fputs("\\n", out); continue;
		case '\r': fputs("\\r", out); continue;
		case '\t': fputs("\\t", out); continue;
		case '\b': fputs("\\b", out); continue;
		case '\f': fputs("\\f", out); continue;
		default: break;
		}
		if (c < 0x20 || c == 0x7f) {
			fprintf(out, "\\u%04x", c);
		} else if (c < 0x80) {
			putc(c, out);
		} else {
			size_t n = utf8_seq(p);
			if (n == 0) {
				fputs("\\ufffd", out);
			} else {
				fwrite(p, 1, n, out);
				p += n - 1;
			}
		}
	}
	putc('"', out);
}

/* Text for a terminal: control characters (C0, DEL and the UTF-8 encoded
 * C1 range) and bytes that are not UTF-8 are shown as \xNN, so a remote
 * server's reply cannot move the cursor or change the terminal. NULL: "-". */
static void text_str(FILE *out, const char *s)
{
	if (s == NULL) {
		putc('-', out);
		return;
	}
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		unsigned char c = *p;
		if (c < 0x20 || c == 0x7f) {
			fprintf(out, "\\x%02x", c);
		} else if (c < 0x80) {
			putc(c, out);
		} else {
			size_t n = utf8_seq(p);
			if (n == 0 || (n == 2 && c == 0xC2 && p[1] < 0xA0)) {
				fprintf(out, "\\x%02x", c);
			} else {
				fwrite(p, 1, n, out);
				p += n - 1;
			}
		}
	}
}

/* ISO 8601 UTC, e.g. "2026-11-23T14:00:00Z". */
static void iso_time(int64_t t, char dest[32])
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (gmtime_r(&tt, &tm) == NULL || strftime(dest, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(dest, 32, "@%lld", (long long)t);
}

static void json_time(FILE *out, int64_t t)
{
	char when[32];
	iso_time(t, when);
	fprintf(out, "\"%s\"", when);
}

/* ---- output: rows ---- */

/* One row of a view (QS_VIEW_COLUMNS); the strings point into the
 * statement and are valid until the next step. */
struct qs_view_row {
	const char *id;
	const char *sender;
	int64_t size;
	int64_t queued_at;
	const char *auth_user;
	bool held;
	bool has_rcpt;           /* false: LEFT JOIN found no recipient */
	const char *address;
	const char *mailbox;
	const char *status;      /* what the views show: stored status or "held" */
	bool final;
	unsigned attempts;
	const char *last_reply;
	int64_t next_attempt;
	const char *remote_host;
	const char *tls;
	int64_t updated_at;
};

static const char *col_text(sqlite3_stmt *st, int col)
{
	return (const char *)sqlite3_column_text(st, col);
}

static void view_row(sqlite3_stmt *st, struct qs_view_row *row)
{
	enum qstatus_state state = QS_QUEUED;

	memset(row, 0, sizeof(*row));
	row->id = col_text(st, 0);
	row->sender = col_text(st, 1);
	row->size = sqlite3_column_int64(st, 2);
	row->queued_at = sqlite3_column_int64(st, 3);
	row->auth_user = col_text(st, 4);
	row->held = sqlite3_column_int(st, 5) != 0;
	row->has_rcpt = sqlite3_column_type(st, 6) != SQLITE_NULL;
	row->address = col_text(st, 6);
	row->mailbox = col_text(st, 7);
	row->status = col_text(st, 8);
	row->final = qstatus_state_parse(row->status, &state) == 0 && qstatus_state_final(state);
	if (row->held && !row->final)
		row->status = "held";
	if (row->status == NULL)
		row->status = "?";
	sqlite3_int64 a = sqlite3_column_int64(st, 9);
	row->attempts = a < 0 ? 0 : a > UINT32_MAX ? UINT32_MAX : (unsigned)a;
	row->last_reply = col_text(st, 10);
	row->next_attempt = sqlite3_column_int64(st, 11);
	row->remote_host = col_text(st, 12);
	row->tls = col_text(st, 13);
	row->updated_at = sqlite3_column_int64(st, 14);
	if (row->id == NULL)
		row->id = "?";
	if (row->sender == NULL)
		row->sender = "";
}

/* The recipient's fields as JSON members (no braces); with_message adds
 * the message's id, sender and queued_at first (for `status`). */
static void json_rcpt(FILE *out, const struct qs_view_row *row, bool with_message)
{
	if (with_message) {
		fputs("\"id\":", out);
		json_str(out, row->id);
		fputs(",\"sender\":", out);
		json_str(out, row->sender);
		fputs(",\"queued_at\":", out);
		json_time(out, row->queued_at);
		putc(',', out);
	}
	fputs("\"address\":", out);
	json_str(out, row->address);
	fputs(",\"mailbox\":", out);
	json_str(out, row->mailbox);
	fputs(",\"status\":", out);
	json_str(out, row->status);
	fprintf(out, ",\"attempts\":%u,\"last_reply\":", row->attempts);
	json_str(out, row->last_reply);
	fputs(",\"next_attempt\":", out);
	if (row->final || row->next_attempt == 0)
		fputs("null", out);
	else
		json_time(out, row->next_attempt);
	fputs(",\"remote_host\":", out);
	json_str(out, row->remote_host);
	fputs(",\"tls\":", out);
	json_str(out, row->tls);
	fputs(",\"updated_at\":", out);
	json_time(out, row->updated_at);
}

static void text_rcpt_line(FILE *out, const struct qs_view_row *row)
{
	fprintf(out, "    %-9s <", row->status);
	text_str(out, row->address);
	fprintf(out, ">  attempts=%u", row->attempts);
	if (!row->final && row->next_attempt != 0) {
		char when[32];
		iso_time(row->next_attempt, when);
		fprintf(out, "  next=%s", when);
	}
	if (row->remote_host != NULL) {
		fputs("  host=", out);
		text_str(out, row->remote_host);
	}
	if (row->last_reply != NULL) {
		fputs("  reply: ", out);
		text_str(out, row->last_reply);
	}
	putc('\n', out);
}

static int view_finish(struct qstatus *qs, sqlite3_stmt *st, int rc, FILE *out, int count)
{
	if (rc != SQLITE_DONE) {
		qs_sql_error(qs, "reading the delivery status");
		count = -1;
	}
	qs_done(st);
	if (fflush(out) != 0 || ferror(out))
		count = -1;
	return count;
}

int qstatus_print_queue(struct qstatus *qs, FILE *out, bool json)
{
	sqlite3_stmt *st = qs_stmt(qs, QS_STMT_LIST);
	struct qs_view_row row;
	char *cur = NULL;        /* id of the message being written */
	int count = 0, rc;

	if (st == NULL)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		view_row(st, &row);
		if (cur == NULL || strcmp(cur, row.id) != 0) {
			char *next = strdup(row.id);
			if (next == NULL) {
				rc = SQLITE_NOMEM;
				break;
			}
			if (json) {
				if (cur != NULL)
					fputs("]},\n", out);
				fputs(cur == NULL ? "[\n{\"id\":" : "{\"id\":", out);
				json_str(out, row.id);
				fputs(",\"sender\":", out);
				json_str(out, row.sender);
				fprintf(out, ",\"size\":%lld,\"queued_at\":", (long long)row.size);
				json_time(out, row.queued_at);
				fputs(",\"auth_user\":", out);
				json_str(out, row.auth_user);
				fprintf(out, ",\"held\":%s,\"recipients\":[",
					row.held ? "true" : "false");
			} else {
				char when[32];
				iso_time(row.queued_at, when);
				text_str(out, row.id);
				fprintf(out, "  %8lld  %s  <", (long long)row.size, when);
				text_str(out, row.sender);
				fprintf(out, ">%s\n", row.held ? "  (held)" : "");
			}
			free(cur);
			cur = next;
			count++;
		} else if (json && row.has_rcpt) {
			putc(',', out);
		}
		if (!row.has_rcpt)
			continue;
		if (json) {
			putc('{', out);
			json_rcpt(out, &row, false);
			putc('}', out);
		} else {
			text_rcpt_line(out, &row);
		}
	}
	free(cur);
	if (rc == SQLITE_DONE) {
		if (json)
			fputs(count == 0 ? "[]\n" : "]}\n]\n", out);
		else if (count == 0)
			fputs("queue is empty\n", out);
		else
			fprintf(out, "%d message%s in the queue\n", count, count == 1 ? "" : "s");
	}
	return view_finish(qs, st, rc, out, count);
}

/* A queue id in either case → upper case in dest; false when s is not one. */
static bool qs_parse_id(const char *s, char dest[17])
{
	size_t i;
	for (i = 0; s[i] != '\0' && i < 16; i++) {
		char c = s[i];
		if (c >= 'a' && c <= 'f')
			c = (char)(c - 'a' + 'A');
		if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F')))
			return false;
		dest[i] = c;
	}
	dest[i] = '\0';
	return i == 16 && s[16] == '\0';
}

int qstatus_print_status(struct qstatus *qs, FILE *out, const char *arg, bool json)
{
	char id[17];
	bool by_id = qs_parse_id(arg, id);
	sqlite3_stmt *st = qs_stmt(qs, by_id ? QS_STMT_STATUS_ID : QS_STMT_STATUS_ADDR);
	struct qs_view_row row;
	int count = 0, rc;

	if (st == NULL)
		return -1;
	if (by_id) {
		sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
	} else {
		sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 2, QSTATUS_STATUS_MAX);
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		view_row(st, &row);
		if (json) {
			fputs(count == 0 ? "[\n{" : ",\n{", out);
			json_rcpt(out, &row, true);
			putc('}', out);
		} else {
			char queued[32], updated[32];
			iso_time(row.queued_at, queued);
			iso_time(row.updated_at, updated);
			text_str(out, row.id);
			fputs("  <", out);
			text_str(out, row.address);
			fprintf(out, ">  %s  attempts=%u  updated %s\n", row.status, row.attempts,
				updated);
			fputs("    from <", out);
			text_str(out, row.sender);
			fprintf(out, ">, queued %s\n", queued);
			if (!row.final && row.next_attempt != 0) {
				char when[32];
				iso_time(row.next_attempt, when);
				fprintf(out, "    next attempt %s\n", when);
			}
			if (row.remote_host != NULL || row.tls != NULL) {
				fputs("    remote host ", out);
				text_str(out, row.remote_host);
				fputs(", tls ", out);
				text_str(out, row.tls);
				putc('\n', out);
			}
			if (row.last_reply != NULL) {
				fputs("    last reply: ", out);
				text_str(out, row.last_reply);
				putc('\n', out);
			}
		}
		count++;
	}
	if (rc == SQLITE_DONE && json)
		fputs(count == 0 ? "[]\n" : "\n]\n", out);
	return view_finish(qs, st, rc, out, count);
}
