/*
 * mstore-private.h — internals shared by the mstore*.c files (not part of
 * the API): the store and view structures, the prepared-statement cache,
 * transactions, folder rows, Maildir file-name parsing and the disk→index
 * sync. See mstore.h for the on-disk layout.
 */
#ifndef POSTERN_MSTORE_PRIVATE_H
#define POSTERN_MSTORE_PRIVATE_H

#include "lib-store/mstore.h"

#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define MSTORE_INDEX_FILE "postern-index.db"
#define MSTORE_UIDV_FILE "postern-uidvalidity"
/* 1: first; 2: cache.hdrs and cache.sentday (SEARCH data), added to a
 * version 1 index in place */
#define MSTORE_SCHEMA_VERSION 2
/* SQLite: bytes of the index mapped for reads, KiB of private page cache
 * per connection (PRAGMA mmap_size, cache_size). */
#define MSTORE_MMAP_SIZE "1073741824"
#define MSTORE_CACHE_KIB "256"
/* Keywords: per message and per folder (space-separated text). */
#define MSTORE_KEYWORDS_MAX 4096
#define MSTORE_FOLDER_KEYWORDS_MAX 8192
/* Our part of a file name: ",U=4294967295:2," + up to 52 flag letters. */
#define MSTORE_BASE_MAX 180
#define MSTORE_FNAME_MAX 256
/* Folders whose cur/ mtime a transaction refreshes at commit. */
#define MSTORE_TOUCH_MAX 8

enum mstore_stmt {
	ST_BEGIN, ST_BEGIN_READ, ST_COMMIT, ST_ROLLBACK, ST_SAVEPOINT, ST_RELEASE, ST_ROLLBACK_TO,
	ST_FOLDER_BY_NAME, ST_FOLDER_BY_ID, ST_FOLDER_UPDATE, ST_FOLDER_INSERT,
	ST_FOLDER_SET_MTIME, ST_FOLDER_SET_RECENT, ST_FOLDER_KEYWORDS, ST_FOLDER_SET_KEYWORDS,
	ST_FOLDER_MAX_UIDV,
	ST_MSG_INSERT, ST_MSG_GET, ST_MSG_DELETE, ST_MSG_SET_FLAGS, ST_MSG_SET_SYSFLAGS, ST_MSG_SET_NAME,
	ST_MSG_SCAN, ST_MSG_VIEW_ALL, ST_MSG_VIEW_CHANGED, ST_MSG_BASE_EXISTS, ST_MSG_DELETED,
	ST_MSG_SET_VSIZE,
	ST_CACHE_GET_ENVELOPE, ST_CACHE_GET_BODYSTRUCTURE, ST_CACHE_GET_BODY,
	ST_CACHE_SET_ENVELOPE, ST_CACHE_SET_BODYSTRUCTURE, ST_CACHE_SET_BODY,
	ST_CACHE_SET_SEARCH, ST_CACHE_SEARCH_RANGE,
	ST_CACHE_DELETE, ST_CACHE_COPY,
	ST_SUB_ADD, ST_SUB_DEL, ST_SUB_LIST, ST_FOLDER_LIST,
	ST_EXP_INSERT, ST_EXP_SINCE,
	ST_STATUS,
	ST_COUNT
};

struct mstore_touch {
	int64_t folder_id;
	char curdir[PATH_MAX];
};

/* Cache writes wait in memory (mbox_cache_set) and are written together:
 * in the next write transaction, at mbox_cache_flush(), or when these
 * limits are reached. One transaction for a chunk of FETCH ENVELOPE cache
 * fills instead of one each, and no write lock held while parsing. */
#define MSTORE_PENDING_MAX 2048
#define MSTORE_PENDING_BYTES (2u * 1024 * 1024)

struct mstore_pending {
	int64_t folder_id;
	uint32_t uid;
	unsigned field;           /* enum mstore_cache_field, MSTORE_PENDING_SEARCH or
				   * MSTORE_PENDING_VSIZE (the size in sentday) */
	char *value;              /* malloc'ed; NUL-terminated for text fields */
	size_t len;
	int64_t sentday;          /* MSTORE_PENDING_SEARCH */
};
#define MSTORE_PENDING_SEARCH 100u
#define MSTORE_PENDING_VSIZE 101u

/* A folder's index row (and where it lives on disk). */
struct mstore_frow {
	int64_t id;
	char name[MSTORE_NAME_MAX + 1];
	uint32_t uidvalidity, uidnext, first_recent_uid;
	uint64_t highestmodseq;
	int64_t cur_mtime_ns;     /* -1: unknown, scan cur/ */
	unsigned special_use;
	char dir[PATH_MAX];
};

struct mstore {
	char *root;
	char *hostname;
	struct mstore_settings set;
	sqlite3 *db;
	sqlite3_stmt *stmts[ST_COUNT];
	/* transactions: depth 0 = none; >1 are savepoints */
	unsigned txn_depth;
	struct mstore_touch touched[MSTORE_TOUCH_MAX];
	unsigned touched_count;
	/* SQLITE_CORRUPT/NOTADB seen: rebuild at the next entry point */
	bool corrupt;
	/* the index file we have open: another process that rebuilt the
	 * index replaced it, and then we must open the new one */
	dev_t db_dev;
	ino_t db_ino;
	/* bumped by every rebuild: views reload everything */
	unsigned generation;
	unsigned name_counter;    /* Q<n> of generated base names */
	/* the last folder row read or written in the current transaction */
	struct mstore_frow fcache;
	bool fcache_valid;
	bool read_txn;            /* a deferred (read) transaction is open */
	struct mstore_pending *pending;   /* MSTORE_PENDING_MAX entries, or NULL */
	unsigned npending;
	size_t pending_bytes;
	bool flushing;
	enum mstore_err err;
	char errtext[160];
	char canonical[MSTORE_NAME_MAX + 1];
};

/* A parsed Maildir file name "<base>[,U=<uid>][...][:2,<letters>]". */
struct mstore_fname {
	size_t base_len;
	uint32_t uid;             /* 0: none */
	uint32_t flags;           /* IMAP_FLAG_* from S R F T D */
	uint64_t xflags;          /* other letters: bit (c-'A') or 26+(c-'a') */
};

struct mbox {
	struct mstore *store;
	int64_t folder_id;
	unsigned generation;
	bool needs_full;          /* index rebuilt: reload every row */
	char *name;
	char dir[PATH_MAX];
	bool readonly;
	struct mstore_msg *msgs;  /* sorted by uid */
	uint32_t count, cap;
	uint32_t recent;
	uint32_t pending_expunges;
	uint32_t uidvalidity, uidnext;
	uint64_t known_modseq;
	char *keywords;           /* folder's keywords, "" if none */
	int watch_fd;
};

/* ---- mstore.c ---- */
void mstore_set_error(struct mstore *store, enum mstore_err code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Logs an SQLite failure (rc), notes corruption; sets MSTORE_ERR_INTERNAL. */
void mstore_db_error(struct mstore *store, int rc, const char *what);
/* The cached statement, reset with bindings cleared; NULL on error. */
sqlite3_stmt *mstore_stmt(struct mstore *store, enum mstore_stmt id);
/* Runs a statement to SQLITE_DONE and resets it; 0 or -1. */
int mstore_step_done(struct mstore *store, sqlite3_stmt *st, const char *what);
/* Write transaction (BEGIN IMMEDIATE outermost, SAVEPOINT inside).
 * Fails when the index file was replaced. */
int mstore_txn_begin(struct mstore *store);
/* ok false rolls back this level. Returns -1 when commit failed. */
int mstore_txn_end(struct mstore *store, bool ok);
/* Before changing files in a folder's cur/: remember whether cur/ still
 * has the mtime the index knows (expected), so the commit can store the
 * new mtime without hiding an outside change. */
void mstore_touch(struct mstore *store, int64_t folder_id, const char *curdir,
		  int64_t expected_mtime_ns);
/* Deferred read transaction for a consistent snapshot (no-op inside a
 * write transaction). */
int mstore_read_begin(struct mstore *store);
void mstore_read_end(struct mstore *store);
/* Rebuilds a corrupt index when one was detected; call at entry points
 * with no transaction open. 0 or -1. */
int mstore_check_corrupt(struct mstore *store);
/* Folder name checks and conversions. Normalises "inbox" (any case, also
 * as the first component) to "INBOX" in out. 0 or -1 (CANNOT set). */
int mstore_name_normalize(struct mstore *store, const char *name, char *out, size_t size);
/* root for INBOX, root/.<mUTF-7> otherwise. 0 or -1. */
int mstore_folder_dir(const struct mstore *store, const char *name, char *out, size_t size);
/* UTF-8 name of a root/.<mUTF-7> directory entry (without the dot);
 * malloc'ed, NULL when it is not a valid name. */
char *mstore_dir_to_name(const char *entry);
/* A new unique base "<sec>.M<usec>P<pid>Q<n>.<host>". */
void mstore_new_base(struct mstore *store, char *out, size_t size);
int64_t mstore_now_ns(void);
/* rename() that never replaces an existing dst (RENAME_NOREPLACE, or
 * link()+unlink() where the file system lacks it). 0 or -1 with errno. */
int mstore_rename_noreplace(const char *src, const char *dst);
/* snprintf for paths: -1 (ENAMETOOLONG) when out is too small, with
 * out then an empty string so no truncated path is ever used. */
int mstore_path(char *out, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Writes the pending cache rows (in the current write transaction when
 * one is open, else in one of its own) and forgets them. Failures are
 * logged and ignored: it is a cache. */
void mstore_pending_flush(struct mstore *store);
void mstore_pending_free(struct mstore *store);

/* ---- mstore-index.c ---- */
const char *mstore_stmt_sql(enum mstore_stmt id);
/* Creates the schema and fills the index from the Maildir (in a txn). */
int mstore_index_build(struct mstore *store);
/* 1 found, 0 not, -1 error. */
int mstore_frow_by_name(struct mstore *store, const char *name, struct mstore_frow *row_r);
int mstore_frow_by_id(struct mstore *store, int64_t id, struct mstore_frow *row_r);
/* Writes uidnext, highestmodseq, cur_mtime_ns, first_recent_uid. */
int mstore_frow_save(struct mstore *store, const struct mstore_frow *row);
/* Inserts a folder row for the directory (which exists): uidvalidity
 * from its postern-uidvalidity file, or a new one. */
int mstore_frow_insert(struct mstore *store, const char *name, unsigned special_use,
		       struct mstore_frow *row_r);
/* Adds keywords (space-separated) to the folder's keyword list. */
int mstore_folder_add_keywords(struct mstore *store, int64_t folder_id, const char *keywords);
/* The cache table's key for (folder, uid). */
static inline int64_t mstore_cache_key(int64_t folder_id, uint32_t uid)
{
	return folder_id * 4294967296LL + uid;
}
/* Deletes a message row and records the expunge with a new modseq. */
int mstore_msg_expunge(struct mstore *store, struct mstore_frow *row, uint32_t uid);

/* ---- mstore-folder.c ---- */
/* Looks a folder up by (API) name, finding folders that other tools made
 * on disk and forgetting ones they removed. 1 found, 0 not (error
 * NONEXISTENT set), -1 error. */
int mstore_folder_find(struct mstore *store, const char *name, struct mstore_frow *row_r);

/* ---- mstore-sync.c ---- */
void mstore_fname_parse(const char *name, struct mstore_fname *f_r);
/* "<base>,U=<uid>:2,<letters>" into out; 0 or -1 (too long). */
int mstore_fname_make(char *out, size_t size, const char *base, size_t base_len, uint32_t uid,
		      uint32_t flags, uint64_t xflags);
/* Letters of (flags, xflags) in ASCII order. */
void mstore_flags_letters(uint32_t flags, uint64_t xflags, char *out, size_t size);
/*
 * Brings the index of the folder up to date with its directory: new/ is
 * read always, cur/ when its mtime changed (or force_scan). Runs inside
 * the caller's write transaction; row is loaded again and saved. rebuild:
 * trust UIDs in names (index just created). *changed_r (may be NULL) is
 * set when the index changed.
 */
int mstore_folder_sync(struct mstore *store, struct mstore_frow *row, bool force_scan,
		       bool rebuild, bool *changed_r);
/* Cheap check outside a transaction: does the folder need a sync (files
 * in new/, cur/ mtime changed)? 1 yes, 0 no, -1 error. */
int mstore_folder_sync_needed(struct mstore *store, const struct mstore_frow *row);
/* Writes <dir>/postern-uidvalidity. 0 or -1 (logged). The first write
 * (new file) is fsync()ed, file and directory. */
int mstore_uidv_write(const char *dir, uint32_t uidvalidity, uint32_t uidnext);
int mstore_uidv_read(const char *dir, uint32_t *uidvalidity_r, uint32_t *uidnext_r);

/* ---- keywords (mstore-mbox.c) ---- */
/* Case-insensitive membership of kw (len) in a space-separated list. */
bool mstore_kw_has(const char *list, const char *kw, size_t len);

#endif
