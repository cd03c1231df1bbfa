/*
 * mstore-index.c — the SQLite index of an account (root/postern-index.db):
 * schema, every SQL statement (prepared once per store, see mstore_stmt),
 * folder rows, and building the index from the Maildir when it is new,
 * missing or was corrupt.
 *
 * Run by imapd (through mstore.c). The index is a cache (DESIGN.md
 * principle 5): UIDs come back from the ",U=" in file names, UIDVALIDITY
 * and UIDNEXT from each folder's postern-uidvalidity file, flags from the
 * names. What is lost in a rebuild: keywords, cached ENVELOPE/
 * BODYSTRUCTURE (recomputed), expunge history (MODSEQs restart above the
 * time in microseconds, and a QRESYNC client from before that gets every
 * UID not there any more as VANISHED: see mstore_frow_insert), and
 * subscriptions (every folder is subscribed again).
 */
#include "mstore-private.h"

#include "lib-imap/imap-search.h"
#include "lib-store/maildir.h"
#include "lib/log.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#define FOLDER_COLS "id, name, uidvalidity, uidnext, highestmodseq, cur_mtime_ns, " \
		    "first_recent_uid, special_use"
#define VIEW_COLS "uid, flags, keywords, modseq, internaldate, vsize"

static const char *const stmt_sql[ST_COUNT] = {
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_BEGIN_READ] = "BEGIN",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_SAVEPOINT] = "SAVEPOINT mstore",
	[ST_RELEASE] = "RELEASE mstore",
	[ST_ROLLBACK_TO] = "ROLLBACK TO mstore",
	[ST_FOLDER_BY_NAME] = "SELECT " FOLDER_COLS " FROM folder WHERE name=?1",
	[ST_FOLDER_BY_ID] = "SELECT " FOLDER_COLS " FROM folder WHERE id=?1",
	[ST_FOLDER_UPDATE] = "UPDATE folder SET uidnext=?2, highestmodseq=?3, cur_mtime_ns=?4, "
			     "first_recent_uid=?5 WHERE id=?1",
	[ST_FOLDER_INSERT] = "INSERT INTO folder(name, uidvalidity, uidnext, highestmodseq, "
			     "special_use) VALUES(?1, ?2, ?3, ?4, ?5)",
	[ST_FOLDER_SET_MTIME] = "UPDATE folder SET cur_mtime_ns=?1 WHERE id=?2",
	[ST_FOLDER_SET_RECENT] = "UPDATE folder SET first_recent_uid=?2 "
				 "WHERE id=?1 AND first_recent_uid<?2",
	[ST_FOLDER_KEYWORDS] = "SELECT keywords FROM folder WHERE id=?1",
	[ST_FOLDER_SET_KEYWORDS] = "UPDATE folder SET keywords=?2 WHERE id=?1",
	[ST_FOLDER_MAX_UIDV] = "SELECT max(uidvalidity) FROM folder",
	[ST_MSG_INSERT] = "INSERT INTO msg(folder, uid, base, flags, xflags, keywords, modseq, "
			  "internaldate, psize, vsize) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
	[ST_MSG_GET] = "SELECT base, flags, xflags, keywords, modseq, internaldate, psize, vsize "
		       "FROM msg WHERE folder=?1 AND uid=?2",
	[ST_MSG_DELETE] = "DELETE FROM msg WHERE folder=?1 AND uid=?2",
	[ST_MSG_SET_FLAGS] = "UPDATE msg SET flags=?3, xflags=?4, keywords=?5, modseq=?6 "
			     "WHERE folder=?1 AND uid=?2",
	[ST_MSG_SET_SYSFLAGS] = "UPDATE msg SET flags=?3, xflags=?4, modseq=?5 "
				"WHERE folder=?1 AND uid=?2",
	[ST_MSG_SET_NAME] = "UPDATE msg SET base=?3 WHERE folder=?1 AND uid=?2",
	[ST_MSG_SCAN] = "SELECT uid, base, flags, xflags FROM msg WHERE folder=?1 ORDER BY uid",
	[ST_MSG_VIEW_ALL] = "SELECT " VIEW_COLS " FROM msg WHERE folder=?1 ORDER BY uid",
	[ST_MSG_VIEW_CHANGED] = "SELECT " VIEW_COLS " FROM msg WHERE folder=?1 AND modseq>?2 "
				"ORDER BY uid",
	[ST_MSG_BASE_EXISTS] = "SELECT 1 FROM msg WHERE folder=?1 AND base=?2",
	[ST_MSG_DELETED] = "SELECT uid, base, flags, xflags, psize FROM msg "
			   "WHERE folder=?1 AND (flags & 8) != 0 ORDER BY uid",
	[ST_MSG_SET_VSIZE] = "UPDATE msg SET vsize=?3 WHERE folder=?1 AND uid=?2",
	[ST_CACHE_GET_ENVELOPE] = "SELECT envelope FROM cache WHERE id=?1",
	[ST_CACHE_GET_BODYSTRUCTURE] = "SELECT bodystructure FROM cache WHERE id=?1",
	[ST_CACHE_GET_BODY] = "SELECT body FROM cache WHERE id=?1",
	/* Cache writes are deferred (mstore_pending_flush): only for a
	 * message that still exists (?3 folder, ?4 uid), so a row never
	 * outlives its message and meets a later message with the same key. */
	[ST_CACHE_SET_ENVELOPE] = "INSERT INTO cache(id, envelope) SELECT ?1, ?2 "
		"WHERE EXISTS(SELECT 1 FROM msg WHERE folder=?3 AND uid=?4) "
		"ON CONFLICT(id) DO UPDATE SET envelope=excluded.envelope",
	[ST_CACHE_SET_BODYSTRUCTURE] = "INSERT INTO cache(id, bodystructure) SELECT ?1, ?2 "
		"WHERE EXISTS(SELECT 1 FROM msg WHERE folder=?3 AND uid=?4) "
		"ON CONFLICT(id) DO UPDATE SET bodystructure=excluded.bodystructure",
	[ST_CACHE_SET_BODY] = "INSERT INTO cache(id, body) SELECT ?1, ?2 "
		"WHERE EXISTS(SELECT 1 FROM msg WHERE folder=?3 AND uid=?4) "
		"ON CONFLICT(id) DO UPDATE SET body=excluded.body",
	[ST_CACHE_SET_SEARCH] = "INSERT INTO cache(id, hdrs, sentday) SELECT ?1, ?2, ?5 "
		"WHERE EXISTS(SELECT 1 FROM msg WHERE folder=?3 AND uid=?4) "
		"ON CONFLICT(id) DO UPDATE SET hdrs=excluded.hdrs, sentday=excluded.sentday",
	[ST_CACHE_SEARCH_RANGE] = "SELECT id, hdrs, sentday FROM cache "
		"WHERE id BETWEEN ?1 AND ?2 AND hdrs IS NOT NULL ORDER BY id",
	[ST_CACHE_DELETE] = "DELETE FROM cache WHERE id=?1",
	[ST_CACHE_COPY] = "INSERT OR REPLACE INTO cache(id, envelope, bodystructure, body, "
			  "hdrs, sentday) SELECT ?2, envelope, bodystructure, body, hdrs, sentday "
			  "FROM cache WHERE id=?1",
	[ST_SUB_ADD] = "INSERT OR IGNORE INTO subscription(name) VALUES(?1)",
	[ST_SUB_DEL] = "DELETE FROM subscription WHERE name=?1",
	[ST_SUB_LIST] = "SELECT name FROM subscription",
	[ST_FOLDER_LIST] = "SELECT id, name, special_use FROM folder",
	[ST_EXP_INSERT] = "INSERT OR REPLACE INTO expunged(folder, uid, modseq) VALUES(?1, ?2, ?3)",
	[ST_EXP_SINCE] = "SELECT uid FROM expunged WHERE folder=?1 AND modseq>?2 ORDER BY uid",
	[ST_STATUS] = "SELECT count(*), total((flags & 1) = 0), total((flags & 8) != 0), "
		      "total(uid >= ?2), total(CASE vsize WHEN 0 THEN psize ELSE vsize END) "
		      "FROM msg WHERE folder=?1",
};

/* The cache table is keyed by folder * 2^32 + uid (a rowid table: its rows
 * are large, unlike msg's). hdrs and sentday answer SEARCH FROM/TO/CC/BCC/
 * SUBJECT and SENT* without the file (mime_search_fields). */
static const char schema_sql[] =
	"CREATE TABLE folder(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,"
	" uidvalidity INTEGER NOT NULL, uidnext INTEGER NOT NULL,"
	" highestmodseq INTEGER NOT NULL, special_use INTEGER NOT NULL DEFAULT 0,"
	" cur_mtime_ns INTEGER NOT NULL DEFAULT -1, first_recent_uid INTEGER NOT NULL DEFAULT 1,"
	" keywords TEXT NOT NULL DEFAULT '');"
	"CREATE TABLE msg(folder INTEGER NOT NULL, uid INTEGER NOT NULL, base TEXT NOT NULL,"
	" flags INTEGER NOT NULL, xflags INTEGER NOT NULL DEFAULT 0, keywords TEXT,"
	" modseq INTEGER NOT NULL, internaldate INTEGER NOT NULL, psize INTEGER NOT NULL,"
	" vsize INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(folder, uid)) WITHOUT ROWID;"
	"CREATE INDEX msg_modseq ON msg(folder, modseq);"
	"CREATE INDEX msg_base ON msg(folder, base);"
	"CREATE TABLE cache(id INTEGER PRIMARY KEY, envelope TEXT, bodystructure TEXT, body TEXT,"
	" hdrs BLOB, sentday INTEGER);"
	"CREATE TABLE expunged(folder INTEGER NOT NULL, uid INTEGER NOT NULL,"
	" modseq INTEGER NOT NULL, PRIMARY KEY(folder, uid)) WITHOUT ROWID;"
	"CREATE INDEX expunged_modseq ON expunged(folder, modseq);"
	"CREATE TABLE subscription(name TEXT PRIMARY KEY) WITHOUT ROWID;";

static const struct {
	const char *name;
	unsigned special_use;
} default_folders[] = {
	{ "INBOX", 0 },
	{ "Sent", MSTORE_SPECIAL_SENT },
	{ "Drafts", MSTORE_SPECIAL_DRAFTS },
	{ "Trash", MSTORE_SPECIAL_TRASH },
	{ "Junk", MSTORE_SPECIAL_JUNK },
	{ "Archive", MSTORE_SPECIAL_ARCHIVE },
};

const char *mstore_stmt_sql(enum mstore_stmt id)
{
	return stmt_sql[id];
}

static void frow_fill(const struct mstore *store, sqlite3_stmt *st, struct mstore_frow *row)
{
	row->id = sqlite3_column_int64(st, 0);
	snprintf(row->name, sizeof(row->name), "%s", (const char *)sqlite3_column_text(st, 1));
	row->uidvalidity = (uint32_t)sqlite3_column_int64(st, 2);
	row->uidnext = (uint32_t)sqlite3_column_int64(st, 3);
	row->highestmodseq = (uint64_t)sqlite3_column_int64(st, 4);
	row->cur_mtime_ns = sqlite3_column_int64(st, 5);
	row->first_recent_uid = (uint32_t)sqlite3_column_int64(st, 6);
	row->special_use = (unsigned)sqlite3_column_int(st, 7);
	if (mstore_folder_dir(store, row->name, row->dir, sizeof(row->dir)) < 0)
		row->dir[0] = '\0';
}

static int frow_get(struct mstore *store, sqlite3_stmt *st, struct mstore_frow *row_r)
{
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		frow_fill(store, st, row_r);
		sqlite3_reset(st);
		if (row_r->dir[0] == '\0') {
			mstore_set_error(store, MSTORE_ERR_INTERNAL, "Bad folder name");
			return -1;
		}
		return 1;
	}
	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		return 0;
	mstore_db_error(store, rc, "read folder");
	return -1;
}

int mstore_frow_by_name(struct mstore *store, const char *name, struct mstore_frow *row_r)
{
	sqlite3_stmt *st = mstore_stmt(store, ST_FOLDER_BY_NAME);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	return frow_get(store, st, row_r);
}

int mstore_frow_by_id(struct mstore *store, int64_t id, struct mstore_frow *row_r)
{
	/* Inside a write transaction nobody else changes the row: the copy
	 * saves a query per message in a STORE over a range. */
	if (store->txn_depth > 0 && store->fcache_valid && store->fcache.id == id) {
		*row_r = store->fcache;
		return 1;
	}
	sqlite3_stmt *st = mstore_stmt(store, ST_FOLDER_BY_ID);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, id);
	int r = frow_get(store, st, row_r);
	if (r > 0 && store->txn_depth > 0) {
		store->fcache = *row_r;
		store->fcache_valid = true;
	}
	return r;
}

int mstore_frow_save(struct mstore *store, const struct mstore_frow *row)
{
	sqlite3_stmt *st = mstore_stmt(store, ST_FOLDER_UPDATE);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, row->id);
	sqlite3_bind_int64(st, 2, row->uidnext);
	sqlite3_bind_int64(st, 3, (int64_t)row->highestmodseq);
	sqlite3_bind_int64(st, 4, row->cur_mtime_ns);
	sqlite3_bind_int64(st, 5, row->first_recent_uid);
	store->fcache_valid = false;
	if (mstore_step_done(store, st, "update folder") < 0)
		return -1;
	if (store->txn_depth > 0) {
		store->fcache = *row;
		store->fcache_valid = true;
	}
	return 0;
}

/* The highest UIDVALIDITY handed out, kept in the meta table (made on
 * first use: older indexes lack it). Rare (folder creation): statements
 * are not cached. rc of the failing call, or SQLITE_OK. */
#define META_TABLE_SQL "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY," \
		       " value INTEGER NOT NULL) WITHOUT ROWID"
#define META_LAST_UIDV "last_uidvalidity"

static int meta_last_uidv(struct mstore *store, int64_t *last_r)
{
	sqlite3_stmt *st = NULL;
	*last_r = 0;
	int rc = sqlite3_exec(store->db, META_TABLE_SQL, NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(store->db, "SELECT value FROM meta WHERE key='"
					META_LAST_UIDV "'", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			*last_r = sqlite3_column_int64(st, 0);
		rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
	}
	sqlite3_finalize(st);
	return rc;
}

static int meta_set_last_uidv(struct mstore *store, int64_t v)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(store->db, "INSERT OR REPLACE INTO meta(key, value) "
				    "VALUES('" META_LAST_UIDV "', ?1)", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, v);
		rc = sqlite3_step(st);
		rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
	}
	sqlite3_finalize(st);
	return rc;
}

/* A new UIDVALIDITY (in a write transaction): the time, but above every
 * one in use and every one handed out before — a folder deleted and
 * created again in the same second has no row left to be above (RFC 9051
 * 2.3.1.1: a UIDVALIDITY is never reused for a folder name). */
static int new_uidvalidity(struct mstore *store, uint32_t *uidv_r)
{
	int64_t last;
	int rc = meta_last_uidv(store, &last);
	if (rc != SQLITE_OK) {
		mstore_db_error(store, rc, "last uidvalidity");
		return -1;
	}
	sqlite3_stmt *st = mstore_stmt(store, ST_FOLDER_MAX_UIDV);
	if (st == NULL)
		return -1;
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(st);
		mstore_db_error(store, rc, "max uidvalidity");
		return -1;
	}
	int64_t max = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (last > max && last <= UINT32_MAX)
		max = last;
	int64_t now = (int64_t)time(NULL);
	int64_t v = now > max ? now : max + 1;
	if (v > UINT32_MAX)
		v = max < UINT32_MAX ? max + 1 : 1;
	if ((rc = meta_set_last_uidv(store, v)) != SQLITE_OK) {
		mstore_db_error(store, rc, "store last uidvalidity");
		return -1;
	}
	*uidv_r = (uint32_t)v;
	return 0;
}

int mstore_frow_insert(struct mstore *store, const char *name, unsigned special_use,
		       struct mstore_frow *row_r)
{
	struct mstore_frow row = { 0 };
	uint32_t uidv = 0, uidnext = 1;

	snprintf(row.name, sizeof(row.name), "%s", name);
	if (mstore_folder_dir(store, name, row.dir, sizeof(row.dir)) < 0) {
		mstore_set_error(store, MSTORE_ERR_CANNOT, "Invalid mailbox name");
		return -1;
	}
	bool known = mstore_uidv_read(row.dir, &uidv, &uidnext) == 0 && uidv != 0;
	if (!known) {
		if (new_uidvalidity(store, &uidv) < 0)
			return -1;
		uidnext = 1;
		(void)mstore_uidv_write(row.dir, uidv, uidnext);
	}
	/* A folder that existed before (its file says so) may have had MODSEQs
	 * we no longer know: restart above any we can have given out. */
	row.highestmodseq = known ? (uint64_t)(mstore_now_ns() / 1000) : 1;
	row.uidvalidity = uidv;
	row.uidnext = uidnext == 0 ? 1 : uidnext;
	row.first_recent_uid = 1;
	row.cur_mtime_ns = -1;
	row.special_use = special_use;

	sqlite3_stmt *st = mstore_stmt(store, ST_FOLDER_INSERT);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, row.uidvalidity);
	sqlite3_bind_int64(st, 3, row.uidnext);
	sqlite3_bind_int64(st, 4, (int64_t)row.highestmodseq);
	sqlite3_bind_int(st, 5, (int)special_use);
	if (mstore_step_done(store, st, "insert folder") < 0)
		return -1;
	row.id = sqlite3_last_insert_rowid(store->db);
	if (known) {
		/* The expunge history below this MODSEQ is lost: an expunged
		 * row with UID 0 (never a message's) marks it, and
		 * mbox_vanished_since() answers a client from before it with
		 * every UID that is not there (RFC 7162 3.2.5.1). */
		st = mstore_stmt(store, ST_EXP_INSERT);
		if (st == NULL)
			return -1;
		sqlite3_bind_int64(st, 1, row.id);
		sqlite3_bind_int64(st, 2, 0);
		sqlite3_bind_int64(st, 3, (int64_t)row.highestmodseq);
		if (mstore_step_done(store, st, "mark history") < 0)
			return -1;
	}
	if (row_r != NULL)
		*row_r = row;
	return 0;
}

int mstore_folder_add_keywords(struct mstore *store, int64_t folder_id, const char *keywords)
{
	char list[MSTORE_FOLDER_KEYWORDS_MAX + 1];
	size_t len;
	bool changed = false;

	if (keywords == NULL || keywords[0] == '\0')
		return 0;
	sqlite3_stmt *st = mstore_stmt(store, ST_FOLDER_KEYWORDS);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, folder_id);
	if (sqlite3_step(st) != SQLITE_ROW) {
		sqlite3_reset(st);
		return 0;
	}
	const char *cur = (const char *)sqlite3_column_text(st, 0);
	len = (size_t)snprintf(list, sizeof(list), "%s", cur != NULL ? cur : "");
	sqlite3_reset(st);
	if (len >= sizeof(list))
		return 0;
	for (const char *p = keywords; *p != '\0';) {
		while (*p == ' ')
			p++;
		size_t n = strcspn(p, " ");
		if (n == 0)
			break;
		if (!mstore_kw_has(list, p, n)) {
			if (len + n + 1 >= sizeof(list)) {
				log_warn("mstore: %s: too many keywords in folder %lld",
					 store->root, (long long)folder_id);
				break;
			}
			if (len > 0)
				list[len++] = ' ';
			memcpy(list + len, p, n);
			len += n;
			list[len] = '\0';
			changed = true;
		}
		p += n;
	}
	if (!changed)
		return 0;
	st = mstore_stmt(store, ST_FOLDER_SET_KEYWORDS);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, folder_id);
	sqlite3_bind_text(st, 2, list, -1, SQLITE_STATIC);
	return mstore_step_done(store, st, "folder keywords");
}

int mstore_msg_expunge(struct mstore *store, struct mstore_frow *row, uint32_t uid)
{
	sqlite3_stmt *st = mstore_stmt(store, ST_MSG_DELETE);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, row->id);
	sqlite3_bind_int64(st, 2, uid);
	if (mstore_step_done(store, st, "delete msg") < 0)
		return -1;
	st = mstore_stmt(store, ST_CACHE_DELETE);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, mstore_cache_key(row->id, uid));
	if (mstore_step_done(store, st, "delete cache") < 0)
		return -1;
	st = mstore_stmt(store, ST_EXP_INSERT);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, row->id);
	sqlite3_bind_int64(st, 2, uid);
	sqlite3_bind_int64(st, 3, (int64_t)++row->highestmodseq);
	return mstore_step_done(store, st, "insert expunged");
}

static int db_exec(struct mstore *store, const char *sql)
{
	int rc = sqlite3_exec(store->db, sql, NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		mstore_db_error(store, rc, sql);
		return -1;
	}
	return 0;
}

/* Is root/<entry> a Maildir++ folder (".Name" with cur/)? */
static bool is_folder_dir(const char *root, const char *entry)
{
	char path[PATH_MAX];
	struct stat st;
	if (entry[0] != '.' || entry[1] == '\0' || entry[1] == '.')
		return false;
	if (snprintf(path, sizeof(path), "%s/%s/cur", root, entry) >= (int)sizeof(path))
		return false;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static unsigned default_special_use(const char *name)
{
	for (size_t i = 0; i < sizeof(default_folders) / sizeof(default_folders[0]); i++) {
		if (strcmp(default_folders[i].name, name) == 0)
			return default_folders[i].special_use;
	}
	return 0;
}

static int subscribe(struct mstore *store, const char *name)
{
	sqlite3_stmt *st = mstore_stmt(store, ST_SUB_ADD);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	return mstore_step_done(store, st, "subscribe");
}

/* Adds a folder found on disk (rebuild): row, then its messages. */
static int build_folder(struct mstore *store, const char *name)
{
	struct mstore_frow row;
	if (mstore_frow_insert(store, name, default_special_use(name), &row) < 0 ||
	    mstore_folder_sync(store, &row, true, true, NULL) < 0)
		return -1;
	return subscribe(store, name);
}

static int build_from_disk(struct mstore *store)
{
	if (build_folder(store, "INBOX") < 0)
		return -1;
	DIR *dir = opendir(store->root);
	if (dir == NULL) {
		log_error("mstore: opendir %s: %s", store->root, strerror(errno));
		mstore_set_error(store, MSTORE_ERR_INTERNAL, "Internal error");
		return -1;
	}
	int ret = 0;
	struct dirent *d;
	while (ret == 0 && (d = readdir(dir)) != NULL) {
		if (!is_folder_dir(store->root, d->d_name))
			continue;
		char *name = mstore_dir_to_name(d->d_name + 1);
		if (name == NULL) {
			log_warn("mstore: %s: ignoring folder directory %s (bad name)",
				 store->root, d->d_name);
			continue;
		}
		ret = build_folder(store, name);
		free(name);
	}
	closedir(dir);
	if (ret < 0)
		return -1;
	/* The default folders of a new store (also made again if missing). */
	for (size_t i = 1; i < sizeof(default_folders) / sizeof(default_folders[0]); i++) {
		struct mstore_frow row;
		const char *err = NULL;
		int r = mstore_frow_by_name(store, default_folders[i].name, &row);
		if (r < 0)
			return -1;
		if (r > 0)
			continue;
		char path[PATH_MAX];
		if (mstore_folder_dir(store, default_folders[i].name, path, sizeof(path)) < 0 ||
		    maildir_create(path, &err) < 0) {
			log_error("mstore: %s", err != NULL ? err : "path too long");
			mstore_set_error(store, MSTORE_ERR_INTERNAL, "Internal error");
			return -1;
		}
		if (build_folder(store, default_folders[i].name) < 0)
			return -1;
	}
	return 0;
}

int mstore_index_build(struct mstore *store)
{
	sqlite3_stmt *st = NULL;
	if (mstore_txn_begin(store) < 0)
		return -1;
	int rc = sqlite3_prepare_v2(store->db, "PRAGMA user_version", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	int64_t version = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW) {
		mstore_db_error(store, rc, "read index version");
		goto fail;
	}
	if (version == MSTORE_SCHEMA_VERSION)
		return mstore_txn_end(store, true);
	if (version == 1) {
		/* version 2 only adds the SEARCH columns of the cache */
		char up[160];
		snprintf(up, sizeof(up), "ALTER TABLE cache ADD COLUMN hdrs BLOB;"
			 "ALTER TABLE cache ADD COLUMN sentday INTEGER;"
			 "PRAGMA user_version=%d", MSTORE_SCHEMA_VERSION);
		if (db_exec(store, up) < 0)
			goto fail;
		return mstore_txn_end(store, true);
	}
	if (version != 0) {
		log_error("mstore: %s: index version %lld, expected %d", store->root,
			  (long long)version, MSTORE_SCHEMA_VERSION);
		store->corrupt = true;
		goto fail;
	}
	log_info("mstore: %s: building the mailbox index", store->root);
	char sql[64];
	snprintf(sql, sizeof(sql), "PRAGMA user_version=%d", MSTORE_SCHEMA_VERSION);
	if (db_exec(store, schema_sql) < 0 || build_from_disk(store) < 0 ||
	    db_exec(store, sql) < 0)
		goto fail;
	return mstore_txn_end(store, true);
fail:
	(void)mstore_txn_end(store, false);
	return -1;
}
