/*
 * test-qstatus.c — unit tests for the delivery-status store: schema
 * creation and versions, the queue's updates and the recovery load, batching,
 * purge, retry, and the CLI views (held recipients, JSON and terminal
 * escaping of hostile strings, status by address and by id).
 */
#include "lib-queue/qstatus.h"

#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#pragma GCC diagnostic ignored "-Wunused-parameter"

/* ---- fixtures and helpers ---- */

static char base_dir[256];
static char db_path[512];

static int setup(void **state)
{
	snprintf(base_dir, sizeof(base_dir), "/tmp/postern-test-qstatus-XXXXXX");
	if (mkdtemp(base_dir) == NULL)
		return -1;
	snprintf(db_path, sizeof(db_path), "%s/status.db", base_dir);
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

static struct qstatus *open_rw(void)
{
	struct qstatus *qs = NULL;
	const char *error = NULL;
	if (qstatus_open(db_path, false, &qs, &error) < 0)
		fail_msg("qstatus_open: %s", error);
	return qs;
}

static struct qstatus *open_ro(void)
{
	struct qstatus *qs = NULL;
	const char *error = NULL;
	if (qstatus_open(db_path, true, &qs, &error) < 0)
		fail_msg("qstatus_open(readonly): %s", error);
	return qs;
}

/* One integer from a query on a separate connection (what another process
 * would see). */
static long long sql_int(const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	long long v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

/* One text value (NULL → "NULL"), copied into dest. */
static void sql_text(const char *sql, char *dest, size_t size)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	const unsigned char *v = sqlite3_column_text(st, 0);
	snprintf(dest, size, "%s", v != NULL ? (const char *)v : "NULL");
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static void sql_exec(const char *sql)
{
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

/* An envelope with up to 4 recipients; the strings are not owned. */
struct test_env {
	struct spool_envelope env;
	struct spool_rcpt rcpts[4];
};

static void make_env(struct test_env *t, const char *id, const char *sender, int64_t queued_at,
		     size_t n, const char *const *addrs)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->env.id, sizeof(t->env.id), "%s", id);
	t->env.sender = (char *)sender;
	t->env.queued_at = queued_at;
	t->env.auth_user = (char *)"alice@example.test";
	assert_true(n <= 4);
	for (size_t i = 0; i < n; i++) {
		t->rcpts[i].address = (char *)addrs[i];
		if (strstr(addrs[i], "@example.test") != NULL)
			t->rcpts[i].mailbox = (char *)addrs[i];
	}
	t->env.rcpts = t->rcpts;
	t->env.nrcpts = n;
}

static void add(struct qstatus *qs, const char *id, const char *sender, int64_t queued_at,
		size_t n, const char *const *addrs)
{
	struct test_env t;
	make_env(&t, id, sender, queued_at, n, addrs);
	assert_int_equal(qstatus_add_message(qs, &t.env, 1000), 0);
}

static void update(struct qstatus *qs, const char *id, unsigned idx, enum qstatus_state s,
		   unsigned attempts, int64_t next, const char *reply, const char *host,
		   const char *tls)
{
	struct qstatus_rcpt r = {
		.state = s, .attempts = attempts, .next_attempt = next, .last_reply = reply,
		.remote_host = host, .tls = tls,
	};
	assert_int_equal(qstatus_update_rcpt(qs, id, idx, &r), 0);
}

/* Captures what a print function writes. Free *text_r. */
static int capture(struct qstatus *qs, bool queue, const char *arg, bool json, char **text_r)
{
	size_t len = 0;
	FILE *f = open_memstream(text_r, &len);
	assert_non_null(f);
	int n = queue ? qstatus_print_queue(qs, f, json) : qstatus_print_status(qs, f, arg, json);
	assert_int_equal(fclose(f), 0);
	return n;
}

static void assert_contains(const char *hay, const char *needle)
{
	if (strstr(hay, needle) == NULL)
		fail_msg("expected %s\n--- in ---\n%s", needle, hay);
}

static void assert_lacks(const char *hay, const char *needle)
{
	if (strstr(hay, needle) != NULL)
		fail_msg("did not expect %s\n--- in ---\n%s", needle, hay);
}

#define ID1 "00000000000000A1"
#define ID2 "00000000000000B2"
#define ID3 "00000000000000C3"

static const char *const three[] = { "friend@remote.test", "bob@example.test",
				     "other@elsewhere.test" };

/* ---- tests ---- */

static void test_state_names(void **state)
{
	static const struct {
		enum qstatus_state s;
		const char *name;
		bool final;
	} cases[] = {
		{ QS_QUEUED, "queued", false },
		{ QS_DEFERRED, "deferred", false },
		{ QS_DELIVERED, "delivered", true },
		{ QS_BOUNCED, "bounced", true },
		{ QS_EXPIRED, "expired", true },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum qstatus_state parsed = QS_EXPIRED;
		assert_string_equal(qstatus_state_name(cases[i].s), cases[i].name);
		assert_int_equal(qstatus_state_final(cases[i].s), cases[i].final);
		assert_int_equal(qstatus_state_parse(cases[i].name, &parsed), 0);
		assert_int_equal(parsed, cases[i].s);
	}
	enum qstatus_state s;
	assert_int_equal(qstatus_state_parse("held", &s), -1);
	assert_int_equal(qstatus_state_parse("Queued", &s), -1);
	assert_int_equal(qstatus_state_parse(NULL, &s), -1);
	assert_string_equal(qstatus_state_name((enum qstatus_state)42), "?");
}

static void test_schema_created(void **state)
{
	struct qstatus *qs = open_rw();
	assert_non_null(qs);
	qstatus_close(&qs);
	assert_null(qs);
	qstatus_close(&qs);     /* NULL is fine */

	assert_int_equal(sql_int("PRAGMA user_version"), QSTATUS_SCHEMA_VERSION);
	char mode[32];
	sql_text("PRAGMA journal_mode", mode, sizeof(mode));
	assert_string_equal(mode, "wal");
	assert_int_equal(sql_int("SELECT count(*) FROM sqlite_master WHERE type = 'table'"
				 " AND name IN ('messages', 'recipients')"), 2);
	assert_int_equal(sql_int("SELECT count(*) FROM sqlite_master WHERE type = 'index'"
				 " AND name IN ('recipients_address', 'messages_finished_at')"), 2);
	/* Exactly the columns the CLI and the queue agree on. */
	assert_int_equal(sql_int("SELECT count(*) FROM pragma_table_info('messages')"), 8);
	assert_int_equal(sql_int("SELECT count(*) FROM pragma_table_info('recipients')"), 11);

	/* Opening again (both ways) keeps the data. */
	qs = open_rw();
	add(qs, ID1, "a@example.test", 100, 1, three);
	qstatus_close(&qs);
	qs = open_rw();
	qstatus_close(&qs);
	qs = open_ro();
	char *out = NULL;
	assert_int_equal(capture(qs, true, NULL, false, &out), 1);
	assert_contains(out, ID1);
	free(out);
	qstatus_close(&qs);
}

static void test_open_failures(void **state)
{
	struct qstatus *qs = (struct qstatus *)&qs;   /* must be cleared */
	const char *error = NULL;

	/* Read-only open of a missing file: clean failure, nothing created. */
	assert_int_equal(qstatus_open(db_path, true, &qs, &error), -1);
	assert_null(qs);
	assert_non_null(error);
	assert_contains(error, db_path);
	assert_contains(error, strerror(ENOENT));
	assert_int_equal(access(db_path, F_OK), -1);

	/* A read-write open where the directory is missing. */
	char bad[600];
	snprintf(bad, sizeof(bad), "%s/nonexistent/status.db", base_dir);
	error = NULL;
	assert_int_equal(qstatus_open(bad, false, &qs, &error), -1);
	assert_null(qs);
	assert_non_null(error);

	/* An empty SQLite file (no schema) is not a status store. */
	sql_exec("CREATE TABLE other (x)");
	error = NULL;
	assert_int_equal(qstatus_open(db_path, true, &qs, &error), -1);
	assert_null(qs);
	assert_contains(error, "not a delivery-status database");

	/* A newer schema is refused both ways. */
	assert_int_equal(unlink(db_path), 0);
	sql_exec("PRAGMA user_version = 7");
	assert_int_equal(qstatus_open(db_path, true, &qs, &error), -1);
	assert_contains(error, "newer");
	assert_int_equal(qstatus_open(db_path, false, &qs, &error), -1);
	assert_contains(error, "newer");
	assert_null(qs);

	/* Not a database at all. */
	assert_int_equal(unlink(db_path), 0);
	FILE *f = fopen(db_path, "w");
	assert_non_null(f);
	fputs("this is not an SQLite file, just some text long enough to be a header.....\n", f);
	fclose(f);
	assert_int_equal(qstatus_open(db_path, true, &qs, &error), -1);
	assert_null(qs);
	assert_int_equal(qstatus_open(db_path, false, &qs, &error), -1);
	assert_null(qs);
}

static void test_round_trip(void **state)
{
	struct qstatus *qs = open_rw();
	enum qstatus_state st[4];
	unsigned att[4];
	int64_t next[4];
	bool held = true, dn = true;

	/* Unknown id: 0 and defaults. */
	for (size_t i = 0; i < 4; i++) {
		st[i] = QS_EXPIRED;
		att[i] = 9;
		next[i] = 9;
	}
	assert_int_equal(qstatus_load(qs, ID1, 4, st, att, next, &held, &dn), 0);
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(st[i], QS_QUEUED);
		assert_int_equal(att[i], 0);
		assert_int_equal(next[i], 0);
	}
	assert_false(held);
	assert_false(dn);

	add(qs, ID1, "alice@example.test", 1000, 3, three);
	assert_int_equal(sql_int("SELECT count(*) FROM recipients WHERE id = '" ID1 "'"
				 " AND status = 'queued' AND updated_at > 0"), 3);
	assert_int_equal(sql_int("SELECT size FROM messages WHERE id = '" ID1 "'"), 1000);
	char text[256];
	sql_text("SELECT mailbox FROM recipients WHERE id = '" ID1 "' AND idx = 1", text,
		 sizeof(text));
	assert_string_equal(text, "bob@example.test");
	sql_text("SELECT mailbox FROM recipients WHERE id = '" ID1 "' AND idx = 0", text,
		 sizeof(text));
	assert_string_equal(text, "NULL");

	update(qs, ID1, 0, QS_DEFERRED, 2, 5000, "451 4.7.1 try later",
	       "mx.remote.test[127.0.0.2]", "TLSv1.3 TLS_AES_256_GCM_SHA384");
	update(qs, ID1, 1, QS_DELIVERED, 1, 0, "250 ok", NULL, NULL);
	update(qs, ID1, 2, QS_BOUNCED, 1, 0, "550 5.1.1 no such user", NULL, NULL);
	assert_int_equal(qstatus_set_held(qs, ID1, true), 0);
	assert_int_equal(qstatus_set_delay_notified(qs, ID1), 0);

	/* A second add (recovery) changes nothing. */
	add(qs, ID1, "alice@example.test", 1000, 3, three);

	assert_int_equal(qstatus_load(qs, ID1, 4, st, att, next, &held, &dn), 1);
	assert_int_equal(st[0], QS_DEFERRED);
	assert_int_equal(att[0], 2);
	assert_int_equal(next[0], 5000);
	assert_int_equal(st[1], QS_DELIVERED);
	assert_int_equal(att[1], 1);
	assert_int_equal(st[2], QS_BOUNCED);
	assert_int_equal(st[3], QS_QUEUED);   /* no row */
	assert_int_equal(att[3], 0);
	assert_true(held);
	assert_true(dn);

	/* Fewer outputs than rows: the rest are ignored, nothing overflows. */
	assert_int_equal(qstatus_load(qs, ID1, 1, st, att, next, &held, &dn), 1);
	assert_int_equal(st[0], QS_DEFERRED);
	assert_int_equal(qstatus_load(qs, ID1, 0, NULL, NULL, NULL, &held, &dn), 1);

	/* NULL remote_host/tls keep the old values; NULL last_reply clears. */
	update(qs, ID1, 0, QS_DEFERRED, 3, 6000, NULL, NULL, NULL);
	sql_text("SELECT remote_host FROM recipients WHERE id = '" ID1 "' AND idx = 0", text,
		 sizeof(text));
	assert_string_equal(text, "mx.remote.test[127.0.0.2]");
	sql_text("SELECT tls FROM recipients WHERE id = '" ID1 "' AND idx = 0", text,
		 sizeof(text));
	assert_string_equal(text, "TLSv1.3 TLS_AES_256_GCM_SHA384");
	sql_text("SELECT last_reply FROM recipients WHERE id = '" ID1 "' AND idx = 0", text,
		 sizeof(text));
	assert_string_equal(text, "NULL");
	update(qs, ID1, 0, QS_DEFERRED, 3, 6000, NULL, "mx2.remote.test[127.0.0.3]", NULL);
	sql_text("SELECT remote_host FROM recipients WHERE id = '" ID1 "' AND idx = 0", text,
		 sizeof(text));
	assert_string_equal(text, "mx2.remote.test[127.0.0.3]");

	/* Updating a recipient that has no row does not create one. */
	update(qs, ID1, 7, QS_DELIVERED, 1, 0, NULL, NULL, NULL);
	assert_int_equal(sql_int("SELECT count(*) FROM recipients WHERE id = '" ID1 "'"), 3);

	assert_int_equal(qstatus_set_held(qs, ID1, false), 0);
	assert_int_equal(qstatus_load(qs, ID1, 4, st, att, next, &held, &dn), 1);
	assert_false(held);
	assert_true(dn);
	assert_int_equal(att[0], 3);
	assert_int_equal(next[0], 6000);

	/* An unknown stored status is retried rather than trusted. */
	sql_exec("UPDATE recipients SET status = 'weird' WHERE id = '" ID1 "' AND idx = 1");
	assert_int_equal(qstatus_load(qs, ID1, 4, st, att, next, &held, &dn), 1);
	assert_int_equal(st[1], QS_QUEUED);
	qstatus_close(&qs);

	/* The data survives a reopen. */
	qs = open_rw();
	assert_int_equal(qstatus_load(qs, ID1, 4, st, att, next, &held, &dn), 1);
	assert_int_equal(st[2], QS_BOUNCED);
	qstatus_close(&qs);
}

static void test_batching(void **state)
{
	struct qstatus *qs = open_rw();
	assert_int_equal(qstatus_commit(qs), 0);   /* none open: no-op */
	assert_int_equal(qstatus_begin(qs), 0);
	assert_int_equal(qstatus_begin(qs), 0);    /* already open: no-op */
	add(qs, ID1, "a@example.test", 100, 2, three);
	update(qs, ID1, 0, QS_DEFERRED, 1, 500, "421 busy", NULL, NULL);
	assert_int_equal(qstatus_set_held(qs, ID1, true), 0);
	/* Another connection sees nothing before the commit (one transaction). */
	assert_int_equal(sql_int("SELECT count(*) FROM messages"), 0);
	assert_int_equal(qstatus_commit(qs), 0);
	assert_int_equal(sql_int("SELECT count(*) FROM messages"), 1);
	assert_int_equal(sql_int("SELECT count(*) FROM recipients WHERE status = 'deferred'"), 1);
	assert_int_equal(qstatus_commit(qs), 0);

	/* close commits an open batch. */
	assert_int_equal(qstatus_begin(qs), 0);
	add(qs, ID2, "b@example.test", 200, 1, three);
	assert_int_equal(sql_int("SELECT count(*) FROM messages"), 1);
	qstatus_close(&qs);
	assert_int_equal(sql_int("SELECT count(*) FROM messages"), 2);
}

static void test_listing_and_held(void **state)
{
	struct qstatus *qs = open_rw();
	char *out = NULL;

	/* Empty queue. */
	assert_int_equal(capture(qs, true, NULL, false, &out), 0);
	assert_string_equal(out, "queue is empty\n");
	free(out);
	assert_int_equal(capture(qs, true, NULL, true, &out), 0);
	assert_string_equal(out, "[]\n");
	free(out);

	/* Added out of order: listed oldest first. */
	add(qs, ID2, "late@example.test", 2000000000, 1, three);
	add(qs, ID1, "alice@example.test", 1795442400, 3, three);   /* 2026-11-23T14:00:00Z */
	add(qs, ID3, "", 1000, 1, three);                           /* finished below */
	update(qs, ID1, 0, QS_DEFERRED, 2, 1795444200, "451 4.7.1 try later",
	       "mx.remote.test[127.0.0.2]", NULL);
	update(qs, ID1, 1, QS_DELIVERED, 1, 0, "250 ok", NULL, NULL);
	assert_int_equal(qstatus_set_held(qs, ID1, true), 0);
	assert_int_equal(qstatus_finish_message(qs, ID3, 3000), 0);

	assert_int_equal(capture(qs, true, NULL, false, &out), 2);
	assert_lacks(out, ID3);
	char *p1 = strstr(out, ID1), *p2 = strstr(out, ID2);
	assert_non_null(p1);
	assert_non_null(p2);
	assert_true(p1 < p2);
	assert_contains(out, ID1 "      1000  2026-11-23T14:00:00Z  <alice@example.test>  (held)\n");
	assert_contains(out, "    held      <friend@remote.test>  attempts=2"
			     "  next=2026-11-23T14:30:00Z  host=mx.remote.test[127.0.0.2]"
			     "  reply: 451 4.7.1 try later\n");
	assert_contains(out, "    delivered <bob@example.test>  attempts=1  reply: 250 ok\n");
	assert_contains(out, "    held      <other@elsewhere.test>  attempts=0\n");
	assert_contains(out, "<late@example.test>\n");
	assert_contains(out, "2 messages in the queue\n");
	free(out);

	assert_int_equal(capture(qs, true, NULL, true, &out), 2);
	assert_contains(out, "[\n{\"id\":\"" ID1 "\",\"sender\":\"alice@example.test\","
			     "\"size\":1000,\"queued_at\":\"2026-11-23T14:00:00Z\","
			     "\"auth_user\":\"alice@example.test\",\"held\":true,\"recipients\":[{");
	assert_contains(out, "{\"address\":\"friend@remote.test\",\"mailbox\":null,"
			     "\"status\":\"held\",\"attempts\":2,"
			     "\"last_reply\":\"451 4.7.1 try later\","
			     "\"next_attempt\":\"2026-11-23T14:30:00Z\","
			     "\"remote_host\":\"mx.remote.test[127.0.0.2]\",\"tls\":null,");
	assert_contains(out, "{\"address\":\"bob@example.test\",\"mailbox\":\"bob@example.test\","
			     "\"status\":\"delivered\",\"attempts\":1,\"last_reply\":\"250 ok\","
			     "\"next_attempt\":null,");
	assert_contains(out, "\"held\":false");
	assert_lacks(out, ID3);
	assert_true(strlen(out) > 3 && strcmp(out + strlen(out) - 4, "}\n]\n") == 0);
	free(out);

	/* Released: the real statuses come back. */
	assert_int_equal(qstatus_set_held(qs, ID1, false), 0);
	assert_int_equal(capture(qs, true, NULL, false, &out), 2);
	assert_contains(out, "    deferred  <friend@remote.test>");
	assert_contains(out, "    queued    <other@elsewhere.test>");
	assert_lacks(out, "held");
	free(out);

	/* One message left: singular; the reader sees what the writer did. */
	assert_int_equal(qstatus_finish_message(qs, ID2, 4000), 0);
	struct qstatus *ro = open_ro();
	assert_int_equal(capture(ro, true, NULL, false, &out), 1);
	assert_contains(out, "1 message in the queue\n");
	free(out);
	qstatus_close(&ro);
	qstatus_close(&qs);
}

static void test_json_escaping(void **state)
{
	struct qstatus *qs = open_rw();
	static const char *const nasty_rcpt[] = { "q\"uote\\back@remote.test" };
	char *out = NULL;

	add(qs, ID1, "\"a\\b\"\n\r\t\b\f\x01\x1f\x7f é 😀 \xff\xc3 end@x", 1000, 1, nasty_rcpt);
	/* A reply with a terminal escape, a C1 control, an overlong '/' and a
	 * UTF-16 surrogate encoded as UTF-8. */
	update(qs, ID1, 0, QS_DEFERRED, 1, 0,
	       "451 \x1b[31mred\x1b[0m \xc2\x9b x \xc0\xaf \xed\xa0\x80 ok",
	       "mx\n.test", "TLS\"1.3");
	assert_int_equal(capture(qs, true, NULL, true, &out), 1);
	assert_contains(out, "\"sender\":\"\\\"a\\\\b\\\"\\n\\r\\t\\b\\f\\u0001\\u001f\\u007f"
			     " é 😀 \\ufffd\\ufffd end@x\"");
	assert_contains(out, "\"address\":\"q\\\"uote\\\\back@remote.test\"");
	assert_contains(out, "\"last_reply\":\"451 \\u001b[31mred\\u001b[0m \xc2\x9b x "
			     "\\ufffd\\ufffd \\ufffd\\ufffd\\ufffd ok\"");
	assert_contains(out, "\"remote_host\":\"mx\\n.test\"");
	assert_contains(out, "\"tls\":\"TLS\\\"1.3\"");
	assert_contains(out, "\"next_attempt\":null");   /* 0 = now */
	/* No raw control character anywhere in the JSON but the line breaks. */
	for (const char *p = out; *p != '\0'; p++)
		assert_true((unsigned char)*p >= 0x20 || *p == '\n');
	assert_null(strchr(out, '\x7f'));
	free(out);

	/* Text: nothing reaches the terminal raw (ESC, C1 CSI, CR, bad bytes). */
	assert_int_equal(capture(qs, true, NULL, false, &out), 1);
	assert_contains(out, "<\"a\\b\"\\x0a\\x0d\\x09\\x08\\x0c\\x01\\x1f\\x7f é 😀 \\xff\\xc3 "
			     "end@x>");
	assert_contains(out, "reply: 451 \\x1b[31mred\\x1b[0m \\xc2\\x9b x \\xc0\\xaf "
			     "\\xed\\xa0\\x80 ok\n");
	assert_contains(out, "host=mx\\x0a.test");
	assert_null(strchr(out, '\x1b'));
	assert_null(strchr(out, '\r'));
	assert_null(strstr(out, "\xc2\x9b"));
	free(out);

	assert_int_equal(capture(qs, false, "Q\"UOTE\\BACK@REMOTE.TEST", true, &out), 1);
	assert_contains(out, "\"id\":\"" ID1 "\",\"sender\":\"\\\"a\\\\b");
	free(out);
	qstatus_close(&qs);
}

static void test_purge(void **state)
{
	struct qstatus *qs = open_rw();
	add(qs, ID1, "a@example.test", 10, 3, three);
	add(qs, ID2, "b@example.test", 20, 2, three);
	add(qs, ID3, "c@example.test", 30, 1, three);
	assert_int_equal(qstatus_finish_message(qs, ID1, 100), 0);
	assert_int_equal(qstatus_finish_message(qs, ID2, 200), 0);

	assert_int_equal(qstatus_purge(qs, 100), 0);   /* strictly before */
	assert_int_equal(qstatus_purge(qs, 150), 1);
	assert_int_equal(sql_int("SELECT count(*) FROM messages WHERE id = '" ID1 "'"), 0);
	assert_int_equal(sql_int("SELECT count(*) FROM recipients WHERE id = '" ID1 "'"), 0);
	assert_int_equal(sql_int("SELECT count(*) FROM recipients"), 3);

	/* Unfinished messages are never purged. */
	assert_int_equal(qstatus_purge(qs, INT64_MAX), 1);
	assert_int_equal(sql_int("SELECT count(*) FROM messages"), 1);
	assert_int_equal(sql_int("SELECT count(*) FROM recipients WHERE id = '" ID3 "'"), 1);
	assert_int_equal(qstatus_purge(qs, INT64_MAX), 0);

	/* Inside a batch the purge is part of the batch. */
	assert_int_equal(qstatus_finish_message(qs, ID3, 300), 0);
	assert_int_equal(qstatus_begin(qs), 0);
	assert_int_equal(qstatus_purge(qs, 400), 1);
	assert_int_equal(sql_int("SELECT count(*) FROM messages"), 1);
	assert_int_equal(qstatus_commit(qs), 0);
	assert_int_equal(sql_int("SELECT count(*) FROM messages"), 0);
	qstatus_close(&qs);
}

static void test_retry(void **state)
{
	struct qstatus *qs = open_rw();
	add(qs, ID1, "a@example.test", 10, 3, three);
	add(qs, ID2, "b@example.test", 20, 1, three);
	update(qs, ID1, 0, QS_DEFERRED, 1, 9000, "451", NULL, NULL);
	update(qs, ID1, 1, QS_DELIVERED, 1, 0, "250", NULL, NULL);
	update(qs, ID1, 2, QS_QUEUED, 0, 9000, NULL, NULL, NULL);
	update(qs, ID2, 0, QS_DEFERRED, 1, 9000, "451", NULL, NULL);

	assert_int_equal(qstatus_retry(qs, ID1), 2);
	assert_int_equal(sql_int("SELECT next_attempt FROM recipients WHERE id = '" ID1 "'"
				 " AND idx = 0"), 0);
	assert_int_equal(sql_int("SELECT next_attempt FROM recipients WHERE id = '" ID2 "'"), 9000);
	assert_int_equal(qstatus_retry(qs, "0000000000000000"), 0);
	/* all: only unfinished messages */
	update(qs, ID1, 0, QS_DEFERRED, 1, 9000, "451", NULL, NULL);
	assert_int_equal(qstatus_finish_message(qs, ID1, 50), 0);
	assert_int_equal(qstatus_retry(qs, NULL), 1);
	assert_int_equal(sql_int("SELECT next_attempt FROM recipients WHERE id = '" ID2 "'"), 0);
	assert_int_equal(sql_int("SELECT next_attempt FROM recipients WHERE id = '" ID1 "'"
				 " AND idx = 0"), 9000);
	qstatus_close(&qs);
}

static void test_status_views(void **state)
{
	struct qstatus *qs = open_rw();
	static const char *const bob[] = { "Bob@Example.test" };
	static const char *const two[] = { "carol@remote.test", "bob@example.test" };
	char *out = NULL;

	add(qs, ID1, "x@remote.test", 1000, 1, bob);
	add(qs, ID2, "y@remote.test", 2000, 2, two);
	add(qs, ID3, "z@remote.test", 3000, 1, three);
	update(qs, ID2, 1, QS_DELIVERED, 1, 0, "250 2.0.0 ok", NULL, NULL);
	update(qs, ID2, 0, QS_DEFERRED, 4, 1795444200, "421 4.4.2 timeout",
	       "mx.remote.test[127.0.0.2]", "TLSv1.3 TLS_AES_256_GCM_SHA384");
	assert_int_equal(qstatus_finish_message(qs, ID1, 1500), 0);

	/* By address, any case, finished or not; newest first (same second:
	 * the later queued message first). */
	assert_int_equal(capture(qs, false, "BOB@example.TEST", false, &out), 2);
	char *p1 = strstr(out, ID1), *p2 = strstr(out, ID2);
	assert_non_null(p1);
	assert_non_null(p2);
	assert_true(p2 < p1);
	assert_contains(out, ID2 "  <bob@example.test>  delivered  attempts=1  updated ");
	assert_contains(out, "    from <y@remote.test>, queued 1970-01-01T00:33:20Z\n");
	assert_contains(out, "    last reply: 250 2.0.0 ok\n");
	assert_contains(out, ID1 "  <Bob@Example.test>  queued  attempts=0");
	assert_lacks(out, "carol");
	free(out);

	assert_int_equal(capture(qs, false, "bob@example.test", true, &out), 2);
	assert_contains(out, "{\"id\":\"" ID2 "\",\"sender\":\"y@remote.test\","
			     "\"queued_at\":\"1970-01-01T00:33:20Z\","
			     "\"address\":\"bob@example.test\"");
	free(out);

	/* By id, in either case: every recipient in index order. */
	assert_int_equal(capture(qs, false, "00000000000000b2", false, &out), 2);
	p1 = strstr(out, "carol@remote.test");
	p2 = strstr(out, "bob@example.test");
	assert_non_null(p1);
	assert_non_null(p2);
	assert_true(p1 < p2);
	assert_contains(out, "<carol@remote.test>  deferred  attempts=4");
	assert_contains(out, "    next attempt 2026-11-23T14:30:00Z\n");
	assert_contains(out, "    remote host mx.remote.test[127.0.0.2], tls TLSv1.3 "
			     "TLS_AES_256_GCM_SHA384\n");
	assert_contains(out, "    last reply: 421 4.4.2 timeout\n");
	free(out);
	assert_int_equal(capture(qs, false, ID2, true, &out), 2);
	assert_contains(out, "\"status\":\"deferred\",\"attempts\":4,"
			     "\"last_reply\":\"421 4.4.2 timeout\","
			     "\"next_attempt\":\"2026-11-23T14:30:00Z\","
			     "\"remote_host\":\"mx.remote.test[127.0.0.2]\","
			     "\"tls\":\"TLSv1.3 TLS_AES_256_GCM_SHA384\"");
	free(out);
	/* A finished message's id still answers. */
	assert_int_equal(capture(qs, false, ID1, false, &out), 1);
	free(out);
	/* Held shows here too. */
	assert_int_equal(qstatus_set_held(qs, ID2, true), 0);
	assert_int_equal(capture(qs, false, ID2, false, &out), 2);
	assert_contains(out, "<carol@remote.test>  held  attempts=4");
	assert_contains(out, "<bob@example.test>  delivered");
	free(out);

	/* Nothing found. */
	assert_int_equal(capture(qs, false, "nobody@example.test", false, &out), 0);
	assert_string_equal(out, "");
	free(out);
	assert_int_equal(capture(qs, false, "nobody@example.test", true, &out), 0);
	assert_string_equal(out, "[]\n");
	free(out);
	assert_int_equal(capture(qs, false, "0000000000000000", true, &out), 0);
	assert_string_equal(out, "[]\n");
	free(out);
	/* Not an id (17 hex digits, or 15): looked up as an address. */
	assert_int_equal(capture(qs, false, "00000000000000B2F", false, &out), 0);
	free(out);
	assert_int_equal(capture(qs, false, "00000000000000B", false, &out), 0);
	free(out);
	/* Wildcards in an address mean nothing. */
	assert_int_equal(capture(qs, false, "%", false, &out), 0);
	free(out);

	/* At most QSTATUS_STATUS_MAX records for an address. */
	static const char *const many[] = { "many@remote.test" };
	assert_int_equal(qstatus_begin(qs), 0);
	for (unsigned i = 0; i < QSTATUS_STATUS_MAX + 5; i++) {
		char id[17];
		snprintf(id, sizeof(id), "%016X", 0x1000u + i);
		add(qs, id, "s@example.test", 5000 + i, 1, many);
	}
	assert_int_equal(qstatus_commit(qs), 0);
	assert_int_equal(capture(qs, false, "many@remote.test", true, &out), QSTATUS_STATUS_MAX);
	/* The newest is first, the oldest five are cut off. */
	assert_contains(out, "[\n{\"id\":\"0000000000001068\"");
	assert_lacks(out, "\"0000000000001004\"");
	assert_contains(out, "\"0000000000001005\"");
	free(out);
	qstatus_close(&qs);
}

static void test_readonly_cannot_write(void **state)
{
	struct qstatus *qs = open_rw();
	struct test_env t;
	add(qs, ID1, "a@example.test", 10, 1, three);
	qstatus_close(&qs);

	qs = open_ro();
	assert_int_equal(qstatus_set_held(qs, ID1, true), -1);
	make_env(&t, ID2, "b@example.test", 20, 1, three);
	assert_int_equal(qstatus_add_message(qs, &t.env, 10), -1);
	assert_int_equal(qstatus_retry(qs, NULL), -1);
	qstatus_close(&qs);
	assert_int_equal(sql_int("SELECT held FROM messages WHERE id = '" ID1 "'"), 0);
	assert_int_equal(sql_int("SELECT count(*) FROM messages"), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_state_names),
		cmocka_unit_test_setup_teardown(test_schema_created, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batching, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listing_and_held, setup, teardown),
		cmocka_unit_test_setup_teardown(test_json_escaping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_purge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_views, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readonly_cannot_write, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
