/*
 * mstore.c — an account's store: opening (and creating or rebuilding) the
 * index, the error model, the prepared-statement cache, write
 * transactions, and folder names (validation, UTF-8 <-> modified UTF-7
 * directory names, RFC 3501 5.1.3).
 *
 * Run by imapd (IMAP and POP3 sessions) and by tools that read mailboxes.
 * Owns root/postern-index.db; see mstore.h for the layout.
 */
#include "mstore-private.h"

#include "lib-imap/imap-util.h"
#include "lib-store/maildir.h"
#include "lib/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void mstore_set_error(struct mstore *store, enum mstore_err code, const char *fmt, ...)
{
	va_list ap;
	store->err = code;
	va_start(ap, fmt);
	vsnprintf(store->errtext, sizeof(store->errtext), fmt, ap);
	va_end(ap);
}

const char *mstore_error(const struct mstore *store, enum mstore_err *code_r)
{
	if (code_r != NULL)
		*code_r = store->err;
	return store->errtext[0] != '\0' ? store->errtext : "Internal error";
}

void mstore_db_error(struct mstore *store, int rc, const char *what)
{
	int prim = rc & 0xff;
	log_error("mstore: %s: %s: %s (%d)", store->root, what,
		  store->db != NULL ? sqlite3_errmsg(store->db) : "no database", rc);
	if (prim == SQLITE_CORRUPT || prim == SQLITE_NOTADB)
		store->corrupt = true;
	mstore_set_error(store, MSTORE_ERR_INTERNAL, "Internal error in the mailbox index");
}

sqlite3_stmt *mstore_stmt(struct mstore *store, enum mstore_stmt id)
{
	sqlite3_stmt *st = store->stmts[id];
	if (st == NULL) {
		int rc = sqlite3_prepare_v3(store->db, mstore_stmt_sql(id), -1,
					    SQLITE_PREPARE_PERSISTENT, &st, NULL);
		if (rc != SQLITE_OK) {
			mstore_db_error(store, rc, mstore_stmt_sql(id));
			return NULL;
		}
		store->stmts[id] = st;
		return st;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return st;
}

int mstore_step_done(struct mstore *store, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		mstore_db_error(store, rc, what);
		return -1;
	}
	return 0;
}

static int run_stmt(struct mstore *store, enum mstore_stmt id)
{
	sqlite3_stmt *st = mstore_stmt(store, id);
	return st == NULL ? -1 : mstore_step_done(store, st, mstore_stmt_sql(id));
}

int mstore_read_begin(struct mstore *store)
{
	if (store->txn_depth > 0 || store->read_txn)
		return 0;
	if (run_stmt(store, ST_BEGIN_READ) < 0)
		return -1;
	store->read_txn = true;
	return 0;
}

void mstore_read_end(struct mstore *store)
{
	if (!store->read_txn)
		return;
	store->read_txn = false;
	(void)run_stmt(store, ST_COMMIT);
}

/* Is the file at root/postern-index.db not the one we have open (set
 * aside and rebuilt by another process, or removed)? */
static bool db_replaced(const struct mstore *store)
{
	char path[PATH_MAX];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", store->root, MSTORE_INDEX_FILE);
	return stat(path, &st) < 0 || st.st_dev != store->db_dev || st.st_ino != store->db_ino;
}

int mstore_txn_begin(struct mstore *store)
{
	store->fcache_valid = false;
	if (store->read_txn)
		mstore_read_end(store);
	if (run_stmt(store, store->txn_depth == 0 ? ST_BEGIN : ST_SAVEPOINT) < 0)
		return -1;
	/* Under the write lock: a process setting the index aside holds it
	 * (db_rebuild), so a transaction either ended before or sees the new
	 * file here, and never gives out UIDs from the old index that the
	 * new one gives out too. The next entry point opens the new one. */
	if (store->txn_depth == 0 && db_replaced(store)) {
		(void)run_stmt(store, ST_ROLLBACK);
		log_info("mstore: %s: index replaced during a command", store->root);
		mstore_set_error(store, MSTORE_ERR_INTERNAL, "Mailbox index was rebuilt, try again");
		return -1;
	}
	if (store->txn_depth == 0)
		store->touched_count = 0;
	store->txn_depth++;
	/* cache rows waiting to be written ride on this transaction */
	if (store->txn_depth == 1 && store->npending > 0 && !store->flushing)
		mstore_pending_flush(store);
	return 0;
}

/* Stores the cur/ mtime of folders changed in this transaction (when
 * nothing else changed them before us, see mstore_touch). */
static void touch_refresh(struct mstore *store)
{
	store->fcache_valid = false;
	for (unsigned i = 0; i < store->touched_count; i++) {
		struct stat st;
		if (stat(store->touched[i].curdir, &st) < 0)
			continue;
		sqlite3_stmt *s = mstore_stmt(store, ST_FOLDER_SET_MTIME);
		if (s == NULL)
			return;
		sqlite3_bind_int64(s, 1, (int64_t)st.st_mtim.tv_sec * 1000000000 +
				   st.st_mtim.tv_nsec);
		sqlite3_bind_int64(s, 2, store->touched[i].folder_id);
		(void)mstore_step_done(store, s, "store cur mtime");
	}
	store->touched_count = 0;
}

int mstore_txn_end(struct mstore *store, bool ok)
{
	if (store->txn_depth == 0)
		panic("mstore_txn_end without a transaction");
	store->txn_depth--;
	if (!ok || store->txn_depth == 0)
		store->fcache_valid = false;
	if (store->txn_depth > 0) {
		if (!ok && run_stmt(store, ST_ROLLBACK_TO) < 0)
			return -1;
		return run_stmt(store, ST_RELEASE);
	}
	if (!ok) {
		store->touched_count = 0;
		(void)run_stmt(store, ST_ROLLBACK);
		return 0;
	}
	touch_refresh(store);
	if (run_stmt(store, ST_COMMIT) < 0) {
		(void)run_stmt(store, ST_ROLLBACK);
		return -1;
	}
	return 0;
}

void mstore_touch(struct mstore *store, int64_t folder_id, const char *curdir,
		  int64_t expected_mtime_ns)
{
	struct stat st;

	for (unsigned i = 0; i < store->touched_count; i++) {
		if (store->touched[i].folder_id == folder_id)
			return;
	}
	/* Not clean (or no room): leave the stored mtime alone, so the next
	 * sync scans cur/ and finds the outside change too. */
	if (expected_mtime_ns < 0 || store->touched_count == MSTORE_TOUCH_MAX ||
	    stat(curdir, &st) < 0 ||
	    (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec != expected_mtime_ns)
		return;
	struct mstore_touch *t = &store->touched[store->touched_count];
	if (snprintf(t->curdir, sizeof(t->curdir), "%s", curdir) >= (int)sizeof(t->curdir))
		return;
	t->folder_id = folder_id;
	store->touched_count++;
}

int mstore_path(char *out, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, size, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size) {
		out[0] = '\0';
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

int mstore_rename_noreplace(const char *src, const char *dst)
{
	if (renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	/* the Maildir spec's own way: link() fails when dst exists */
	if (link(src, dst) < 0)
		return -1;
	if (unlink(src) < 0)
		log_warn("mstore: unlink %s: %s", src, strerror(errno));
	return 0;
}

int64_t mstore_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void mstore_new_base(struct mstore *store, char *out, size_t size)
{
	struct timespec ts;
	char host[128];
	size_t h = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	/* The maildir spec's escapes for '/' and ':'; ',' too, since ",U="
	 * follows the base. */
	for (const char *p = store->hostname; *p != '\0' && h + 5 < sizeof(host); p++) {
		const char *esc = *p == '/' ? "\\057" : *p == ':' ? "\\072" :
				  *p == ',' ? "\\054" : NULL;
		if (esc != NULL) {
			memcpy(host + h, esc, 4);
			h += 4;
		} else {
			host[h++] = *p;
		}
	}
	host[h] = '\0';
	snprintf(out, size, "%lld.M%ldP%ldQ%u.%s", (long long)ts.tv_sec, ts.tv_nsec / 1000,
		 (long)getpid(), ++store->name_counter, host);
}

/* ---- folder names ---- */

/* Length of the UTF-8 sequence at s (0: invalid), and its code point. */
static size_t utf8_decode(const unsigned char *s, uint32_t *cp_r)
{
	uint32_t cp;
	size_t n;
	if (s[0] < 0x80) {
		*cp_r = s[0];
		return 1;
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		cp = s[0] & 0x1f;
		n = 2;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		cp = s[0] & 0x0f;
		n = 3;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		cp = s[0] & 0x07;
		n = 4;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	*cp_r = cp;
	return n;
}

int mstore_name_normalize(struct mstore *store, const char *name, char *out, size_t size)
{
	size_t len = strlen(name);
	if (len == 0 || len > MSTORE_NAME_MAX || len >= size)
		goto bad;
	const unsigned char *s = (const unsigned char *)name;
	bool comp_start = true;
	for (size_t i = 0; i < len;) {
		uint32_t cp;
		size_t n = utf8_decode(s + i, &cp);
		if (n == 0 || cp < 0x20 || cp == 0x7f || cp == '/' || cp == '*' || cp == '%')
			goto bad;
		if (cp == MSTORE_DELIMITER) {
			if (comp_start)
				goto bad;   /* leading '.' or empty component */
			comp_start = true;
		} else {
			comp_start = false;
		}
		i += n;
	}
	if (comp_start)
		goto bad;           /* trailing '.' */
	memcpy(out, name, len + 1);
	/* "inbox" in any case, also as the first component of a child */
	if (strncasecmp(out, "INBOX", 5) == 0 && (out[5] == '\0' || out[5] == MSTORE_DELIMITER))
		memcpy(out, "INBOX", 5);
	return 0;
bad:
	mstore_set_error(store, MSTORE_ERR_CANNOT, "Invalid mailbox name");
	return -1;
}

int mstore_folder_dir(const struct mstore *store, const char *name, char *out, size_t size)
{
	if (strcmp(name, "INBOX") == 0)
		return snprintf(out, size, "%s", store->root) < (int)size ? 0 : -1;
	char *enc = imap_utf8_to_mutf7(name);
	if (enc == NULL)
		return -1;
	int n = snprintf(out, size, "%s/.%s", store->root, enc);
	free(enc);
	return n > 0 && (size_t)n < size ? 0 : -1;
}

char *mstore_dir_to_name(const char *entry)
{
	char *name = imap_mutf7_to_utf8(entry);
	char tmp[MSTORE_NAME_MAX + 1];
	struct mstore dummy = { 0 };
	if (name == NULL)
		return NULL;
	if (mstore_name_normalize(&dummy, name, tmp, sizeof(tmp)) < 0 ||
	    strcmp(tmp, name) != 0) {
		/* Not a name we would make (".inbox.x", bad UTF-8). */
		free(name);
		return NULL;
	}
	return name;
}

/* ---- open / close ---- */

static void db_close(struct mstore *store)
{
	for (unsigned i = 0; i < ST_COUNT; i++) {
		sqlite3_finalize(store->stmts[i]);
		store->stmts[i] = NULL;
	}
	sqlite3_close(store->db);
	store->db = NULL;
	store->txn_depth = 0;
	store->touched_count = 0;
	/* pending cache rows name folder ids of this index: a rebuilt or
	 * replaced one may number them differently */
	mstore_pending_free(store);
}

static int db_exec(struct mstore *store, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(store->db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		mstore_db_error(store, rc, sql);
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

/* Opens the index and checks it; builds it when empty. 0, or -1. */
static int db_open(struct mstore *store)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", store->root, MSTORE_INDEX_FILE);
	int rc = sqlite3_open_v2(path, &store->db,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				 SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		mstore_db_error(store, rc, "open index");
		return -1;
	}
	struct stat st;
	if (stat(path, &st) == 0) {
		store->db_dev = st.st_dev;
		store->db_ino = st.st_ino;
	}
	sqlite3_busy_timeout(store->db, 5000);
	sqlite3_extended_result_codes(store->db, 1);
	/* synchronous=NORMAL: the index is a cache rebuilt from the Maildir;
	 * the message files themselves are fsync()ed. */
	if (db_exec(store, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;") < 0)
		return -1;
	/* Memory per selected connection: every session has its own
	 * connection and page cache, and a SELECT of a large folder reads the
	 * whole msg table once. Reads go through a shared mapping of the file
	 * instead (the kernel's page cache, shared by every session and
	 * process), and the private cache stays small (it mostly holds pages
	 * being written; WAL changes by other sessions invalidate it anyway). */
	if (db_exec(store, "PRAGMA mmap_size=" MSTORE_MMAP_SIZE "; PRAGMA cache_size=-"
		    MSTORE_CACHE_KIB ";") < 0)
		return -1;
	return mstore_index_build(store);
}

/* Keeps a broken index as postern-index.db.corrupt-<time> (and drops its
 * -wal/-shm, which a new index must not replay) so the next open starts
 * afresh. Processes that still have it open notice at their next write
 * transaction (mstore_txn_begin) or entry point (db_check_replaced). */
static void db_set_aside(struct mstore *store)
{
	char path[PATH_MAX], dest[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/%s", store->root, MSTORE_INDEX_FILE);
	snprintf(dest, sizeof(dest), "%s.corrupt-%lld", path, (long long)time(NULL));
	if (rename(path, dest) < 0)
		log_error("mstore: rename %s: %s", path, strerror(errno));
	else
		log_warn("mstore: %s: corrupt index kept as %s; rebuilding", store->root, dest);
	snprintf(dest, sizeof(dest), "%s-wal", path);
	unlink(dest);
	snprintf(dest, sizeof(dest), "%s-shm", path);
	unlink(dest);
}

static int db_rebuild(struct mstore *store)
{
	/* Set aside under the old index's write lock (best effort: it is
	 * broken), so that other processes' write transactions end first or
	 * see the new file once they get the lock. PERSIST_WAL: our close
	 * must not delete "-wal" by name, which may be the new index's. */
	if (store->db != NULL && store->txn_depth == 0 && !store->read_txn) {
		int one = 1;
		(void)sqlite3_file_control(store->db, "main", SQLITE_FCNTL_PERSIST_WAL, &one);
		if (sqlite3_exec(store->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
			log_warn("mstore: %s: no lock on the old index: %s", store->root,
				 sqlite3_errmsg(store->db));
	}
	db_set_aside(store);
	db_close(store);
	store->corrupt = false;
	store->generation++;
	if (db_open(store) < 0) {
		db_close(store);
		return -1;
	}
	return 0;
}

/* Another process rebuilt the index (our file was set aside): open the
 * new one. 0 same or reopened, -1 error. */
static int db_check_replaced(struct mstore *store)
{
	char path[PATH_MAX];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", store->root, MSTORE_INDEX_FILE);
	if (stat(path, &st) == 0 && st.st_dev == store->db_dev && st.st_ino == store->db_ino)
		return 0;
	log_info("mstore: %s: index replaced by another process; reopening", store->root);
	db_close(store);
	store->generation++;
	if (db_open(store) < 0) {
		db_close(store);
		return -1;
	}
	return 0;
}

int mstore_check_corrupt(struct mstore *store)
{
	store->err = MSTORE_ERR_NONE;
	store->errtext[0] = '\0';
	if (store->txn_depth > 0)
		return store->corrupt ? -1 : 0;
	if (store->db != NULL && !store->corrupt) {
		if (store->read_txn || db_check_replaced(store) == 0)
			return 0;
	} else if (store->db == NULL && !store->corrupt) {
		/* an earlier reopen failed (busy?): try again */
		if (db_open(store) == 0)
			return 0;
		db_close(store);
	}
	if (!store->corrupt) {
		mstore_set_error(store, MSTORE_ERR_INTERNAL, "Mailbox index unavailable");
		return -1;
	}
	if (db_rebuild(store) < 0) {
		mstore_set_error(store, MSTORE_ERR_INTERNAL, "Mailbox index unavailable");
		return -1;
	}
	return 0;
}

int mstore_open(const char *root, const struct mstore_settings *set, struct mstore **store_r,
		const char **error_r)
{
	struct mstore *store = calloc(1, sizeof(*store));
	if (store == NULL) {
		*error_r = "mstore: out of memory";
		return -1;
	}
	store->root = strdup(root);
	store->hostname = strdup(set->hostname != NULL && set->hostname[0] != '\0' ?
				 set->hostname : "localhost");
	if (store->root == NULL || store->hostname == NULL) {
		*error_r = "mstore: out of memory";
		goto fail;
	}
	store->set = *set;
	store->set.hostname = store->hostname;
	if (maildir_create(root, error_r) < 0)
		goto fail;
	if (db_open(store) < 0) {
		if (!store->corrupt) {
			*error_r = "mstore: cannot open the mailbox index (see log)";
			goto fail;
		}
		if (db_rebuild(store) < 0) {
			*error_r = "mstore: cannot rebuild the mailbox index (see log)";
			goto fail;
		}
	}
	*store_r = store;
	return 0;
fail:
	mstore_close(&store);
	return -1;
}

void mstore_close(struct mstore **storep)
{
	struct mstore *store = *storep;
	if (store == NULL)
		return;
	*storep = NULL;
	if (store->txn_depth > 0) {
		store->txn_depth = 1;
		(void)mstore_txn_end(store, true);
	}
	if (store->db != NULL && !store->corrupt)
		mstore_pending_flush(store);
	db_close(store);
	free(store->root);
	free(store->hostname);
	free(store);
}
