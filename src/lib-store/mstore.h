/*
 * mstore.h — one account's mailboxes: Maildir++ folders on disk (the
 * source of truth, readable by mutt and Dovecot) and a SQLite index (WAL)
 * beside them that holds what IMAP needs and the Maildir cannot: UIDs,
 * UIDVALIDITY, UIDNEXT, MODSEQ, keywords, INTERNALDATE, sizes, cached
 * ENVELOPE/BODYSTRUCTURE, subscriptions, SPECIAL-USE, expunge history.
 *
 * Layout (root = MAIL_DIR/<domain>/<local>/):
 *   root/{cur,new,tmp}          INBOX
 *   root/.Sent/{cur,new,tmp}    folder "Sent"; hierarchy delimiter '.', so
 *   root/.a.b/                  folder "a.b" is a child of "a". Folder
 *                               names are UTF-8 in the API, modified UTF-7
 *                               on disk (as Courier and Dovecot do).
 *   root/postern-index.db       the index (+ -wal, -shm)
 *   <folder>/postern-uidvalidity  "UIDVALIDITY UIDNEXT\n", so a rebuilt
 *                               index keeps UIDs stable
 *   root/maildirsize            Maildir++ quota usage (quota.h)
 *
 * File names: "<base>,U=<uid>:2,<flags>" in cur/. A file gets its ",U="
 * when this store first sees it (moving it from new/ to cur/); the UID in
 * the name lets a lost or corrupt index be rebuilt with the same UIDs.
 * System flags live in the name (S R F T D, Maildir convention, so other
 * tools see them); keywords live in the index only.
 *
 * Discovery: Postern's deliverer and other tools only write files; the
 * index learns about them when a session syncs (mbox_sync, status, open):
 * new/ is read every time (it only holds undiscovered mail), cur/ only when
 * its mtime changed since the last scan. Every change this module makes
 * runs in one index write transaction (BEGIN IMMEDIATE), so Postern
 * processes never race each other; see docs/architecture.md.
 *
 * Threads: a struct mstore and its views are used by one thread at a time
 * (any thread). Different mstores (even of the same account, in other
 * processes) work concurrently through SQLite's locking.
 *
 * Errors: functions return 0 or -1; after -1, mstore_error() gives a code
 * that maps to an IMAP response code and a client-safe text; internal
 * detail (errno, SQLite message) has been logged with log_error.
 */
#ifndef POSTERN_MSTORE_H
#define POSTERN_MSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MSTORE_DELIMITER '.'
#define MSTORE_NAME_MAX 512          /* octets of a folder name (UTF-8) */

/* SPECIAL-USE (RFC 6154) attributes, as bits */
#define MSTORE_SPECIAL_SENT     0x01u
#define MSTORE_SPECIAL_DRAFTS   0x02u
#define MSTORE_SPECIAL_TRASH    0x04u
#define MSTORE_SPECIAL_JUNK     0x08u
#define MSTORE_SPECIAL_ARCHIVE  0x10u

enum mstore_err {
	MSTORE_ERR_NONE,
	MSTORE_ERR_NONEXISTENT,   /* [NONEXISTENT] / [TRYCREATE] for APPEND, COPY */
	MSTORE_ERR_ALREADYEXISTS, /* [ALREADYEXISTS] */
	MSTORE_ERR_CANNOT,        /* [CANNOT]: e.g. DELETE INBOX, bad name */
	MSTORE_ERR_OVERQUOTA,     /* [OVERQUOTA] */
	MSTORE_ERR_LIMIT,         /* [LIMIT] */
	MSTORE_ERR_EXPUNGED,      /* [EXPUNGEISSUED]: the message is gone */
	MSTORE_ERR_INTERNAL,      /* [SERVERBUG]; detail logged */
};

struct mstore_settings {
	const char *hostname;     /* for names of APPENDed files */
	uint64_t quota_bytes;     /* 0: unlimited */
	uint64_t quota_messages;  /* 0: unlimited */
};

struct mstore;

/*
 * Opens (and on first use creates) the account's store at root: the
 * Maildir, the index, and the folders INBOX, Sent, Drafts, Trash, Junk and
 * Archive with their SPECIAL-USE attributes, all subscribed. A missing or
 * corrupt index is rebuilt from the Maildir (the broken file is kept as
 * postern-index.db.corrupt-<time>), keeping UIDs and UIDVALIDITY from the
 * file names and postern-uidvalidity files. 0 and *store_r, or -1 with
 * *error_r (for the log).
 */
int mstore_open(const char *root, const struct mstore_settings *set, struct mstore **store_r,
		const char **error_r);
void mstore_close(struct mstore **store);
/* The code and client-safe text of the last failure. */
const char *mstore_error(const struct mstore *store, enum mstore_err *code_r);

/* ---- folders ---- */

struct mstore_folder {
	const char *name;         /* UTF-8, "INBOX" for the root */
	unsigned special_use;     /* MSTORE_SPECIAL_* */
	bool subscribed;
	bool has_children;
	bool nonexistent;         /* subscribed but deleted (LSUB/LIST SUBSCRIBED) */
};
/* Every folder (and subscribed names that no longer exist), sorted by
 * name, INBOX first. Folders made on disk by other tools are found here.
 * cb's pointers are valid during the call. */
int mstore_folder_list(struct mstore *store,
		       void (*cb)(const struct mstore_folder *folder, void *ctx), void *ctx);
/* name is case-sensitive except INBOX (any case). Creating "a.b.c" creates
 * missing parents (RFC 9051 6.3.4). Names: no '/', no empty component, no
 * leading '.', valid UTF-8, at most MSTORE_NAME_MAX. */
int mstore_folder_create(struct mstore *store, const char *name, unsigned special_use);
/* Deletes the folder and its messages (MSTORE_ERR_CANNOT for INBOX). Its
 * children stay (each Maildir++ folder is its own directory); LIST then
 * shows the parent as \NonExistent \HasChildren (RFC 9051 6.3.5). */
int mstore_folder_delete(struct mstore *store, const char *name);
/* Renames with its children; renaming INBOX moves its messages into a new
 * folder and leaves INBOX empty (RFC 9051 6.3.6). */
int mstore_folder_rename(struct mstore *store, const char *from, const char *to);
int mstore_folder_subscribe(struct mstore *store, const char *name, bool subscribe);
/* 1 exists, 0 not, -1 error. Sets *canonical_r to the stored spelling
 * ("INBOX" for any case of inbox) when not NULL (static or store-owned). */
int mstore_folder_exists(struct mstore *store, const char *name, const char **canonical_r);

struct mstore_status {
	uint32_t messages, recent, unseen, deleted;
	uint32_t uidnext, uidvalidity;
	uint64_t highestmodseq;
	uint64_t size;            /* sum of RFC822.SIZE (STATUS SIZE, RFC 8438) */
};
/* Syncs the folder with the disk first (so new deliveries count). */
int mstore_folder_status(struct mstore *store, const char *name, struct mstore_status *st_r);

/* Quota (RFC 9208, resource STORAGE in KiB and MESSAGE): usage of the
 * whole account from root/maildirsize; limits from the settings. */
int mstore_quota(struct mstore *store, uint64_t *bytes_r, uint64_t *messages_r);

/* ---- appending ---- */

struct mstore_append;
/* Starts appending to folder name (MSTORE_ERR_NONEXISTENT if missing, the
 * caller answers [TRYCREATE]). size is the announced literal size, checked
 * against the quota here (MSTORE_ERR_OVERQUOTA) before anything is read.
 * The content is written with mstore_append_write(); CRLF line ends become
 * LF on disk. */
int mstore_append_begin(struct mstore *store, const char *name, uint64_t size,
			struct mstore_append **append_r);
int mstore_append_write(struct mstore_append *append, const char *data, size_t len);
/* flags: IMAP_FLAG_* (Recent ignored); keywords space-separated or NULL;
 * internaldate 0 = now. */
void mstore_append_set(struct mstore_append *append, uint32_t flags, const char *keywords,
		       int64_t internaldate);
/*
 * Commits appends[0..n-1] (MULTIAPPEND: all or none, all to the same
 * folder): each file is fsync()ed and renamed into cur/, cur/ is fsync()ed,
 * and the index gets the rows in one transaction. Only then is it
 * "delivered". uids_r[i] gets each UID, *uidvalidity_r the folder's.
 * Frees the appends in every case. 0 or -1.
 */
int mstore_append_commit(struct mstore_append **appends, unsigned n, uint32_t *uids_r,
			 uint32_t *uidvalidity_r);
void mstore_append_abort(struct mstore_append **append);

/* ---- a selected folder: one session's view ---- */

struct mstore_msg {
	uint32_t uid;
	uint32_t flags;           /* IMAP_FLAG_*; RECENT for this view only */
	uint64_t modseq;
	int64_t internaldate;
	uint64_t vsize;           /* RFC822.SIZE (CRLF), 0 if not known yet */
	const char *keywords;     /* space-separated, or NULL */
	bool expunged;            /* gone, not yet reported to this view */
};

struct mbox;
/* Opens a view (SELECT; readonly for EXAMINE). A read-write view takes the
 * \Recent messages (RFC 3501: one session gets them). */
int mbox_open(struct mstore *store, const char *name, bool readonly, struct mbox **mbox_r);
void mbox_close(struct mbox **mbox);
const char *mbox_name(const struct mbox *mbox);
bool mbox_readonly(const struct mbox *mbox);
uint32_t mbox_count(const struct mbox *mbox);
uint32_t mbox_recent(const struct mbox *mbox);
uint32_t mbox_uidvalidity(const struct mbox *mbox);
uint32_t mbox_uidnext(const struct mbox *mbox);
uint64_t mbox_highestmodseq(const struct mbox *mbox);
/* Sequence number of the first message without \Seen, or 0. */
uint32_t mbox_first_unseen(const struct mbox *mbox);
/* Keywords ever used in this folder, space-separated ("" if none), for
 * FLAGS and PERMANENTFLAGS. */
const char *mbox_keywords(const struct mbox *mbox);
/* seq is 1..mbox_count(); the pointer is valid until the next call that
 * changes the view (sync, store, expunge). */
const struct mstore_msg *mbox_msg(const struct mbox *mbox, uint32_t seq);
/* 0 when the UID is not in the view. Binary search. */
uint32_t mbox_seq_of_uid(const struct mbox *mbox, uint32_t uid);

/*
 * Brings the view up to date with the disk and the index (changes by this
 * and other sessions, deliveries, other tools) and reports through cb:
 * expunged(seq) — in descending sequence order so each number is valid
 * when sent, and only when allow_expunge (RFC 9051 7.5.1: not during FETCH,
 * STORE, SEARCH); otherwise expunged messages stay in the view, marked
 * expunged; exists(count) when the count grew; flags(seq) for messages
 * whose flags or keywords changed (modseq above what the view saw) and
 * were not changed by this view itself.
 */
struct mbox_sync_cb {
	void (*expunged)(void *ctx, uint32_t seq, uint32_t uid);
	void (*exists)(void *ctx, uint32_t count, uint32_t recent);
	void (*flags)(void *ctx, uint32_t seq, const struct mstore_msg *msg);
};
int mbox_sync(struct mbox *mbox, bool allow_expunge, const struct mbox_sync_cb *cb, void *ctx);

/* Opens the message file read-only (follows a rename by another process).
 * fd_r is the caller's to close. MSTORE_ERR_EXPUNGED if it is gone. */
int mbox_msg_open(struct mbox *mbox, uint32_t seq, int *fd_r);
/* RFC822.SIZE: from the view, or computed from the file and cached. */
int mbox_msg_vsize(struct mbox *mbox, uint32_t seq, uint64_t *vsize_r);

/* Records RFC822.SIZE when the caller learnt it another way (a parsed
 * message: mime_size()); no-op when the view knows it already. Written
 * with the deferred cache rows. */
void mbox_msg_set_vsize(struct mbox *mbox, uint32_t seq, uint64_t vsize);

/* A read snapshot for a run of lookups (a FETCH or SEARCH chunk): one
 * SQLite read transaction instead of one per statement. A write
 * (mbox_begin, a cache flush) ends it. 0 or -1. */
int mbox_read_begin(struct mbox *mbox);
void mbox_read_end(struct mbox *mbox);

enum mstore_cache_field { MSTORE_CACHE_ENVELOPE, MSTORE_CACHE_BODYSTRUCTURE,
			  MSTORE_CACHE_BODY };
/* 1 and *value_r (malloc'ed), 0 when not cached, -1 error. */
int mbox_cache_get(struct mbox *mbox, uint32_t seq, enum mstore_cache_field field,
		   char **value_r);
/* Caches value (copied). The write is deferred: it waits in memory (where
 * mbox_cache_get finds it) until the store's next write transaction,
 * mbox_cache_flush(), or a few hundred writes, so a FETCH that fills the
 * cache for many messages writes them in one transaction. 0 or -1. */
int mbox_cache_set(struct mbox *mbox, uint32_t seq, enum mstore_cache_field field,
		   const char *value);
/* Writes the deferred cache rows now (call at the end of a command chunk).
 * Failures are logged only: it is a cache. */
void mbox_cache_flush(struct mbox *mbox);

/*
 * SEARCH data: the decoded, case-folded values of the header fields that
 * SEARCH asks for most (mime_search_fields(): From, To, Cc, Bcc, Subject)
 * and the Date: as a day (mime_sent_date(day_only), -1 when none), cached
 * per message like ENVELOPE. hdrs == NULL: not cached (read the file).
 */
struct mbox_search_data {
	const void *hdrs;
	size_t hdrs_len;
	int64_t sentday;
};
/* Fills rows_r[0 .. last-first] for messages first..last (sequence
 * numbers, first <= last <= mbox_count()) with one index query. The
 * pointers point into *arena_r (malloc'ed, the caller frees it; NULL when
 * nothing was cached). 0 or -1. */
int mbox_search_data_load(struct mbox *mbox, uint32_t first, uint32_t last,
			  struct mbox_search_data *rows_r, void **arena_r);
/* Caches message seq's SEARCH data (deferred like mbox_cache_set). */
int mbox_search_data_set(struct mbox *mbox, uint32_t seq, const void *hdrs, size_t len,
			 int64_t sentday);

/* Batches many changes (STORE on a range, COPY) into one index
 * transaction; calls may nest (only the outermost commits). */
int mbox_begin(struct mbox *mbox);
int mbox_commit(struct mbox *mbox);

enum mbox_store_op { MBOX_STORE_REPLACE, MBOX_STORE_ADD, MBOX_STORE_REMOVE };
/*
 * Changes flags/keywords of message seq (renaming its file when system
 * flags change) and gives it a new MODSEQ. unchangedsince (CONDSTORE, 0 =
 * none): when the message's modseq is above it, nothing changes and
 * *conflict_r is set. *changed_r says whether anything changed (a no-op
 * keeps the modseq). MSTORE_ERR_EXPUNGED if the message is gone.
 */
int mbox_store(struct mbox *mbox, uint32_t seq, enum mbox_store_op op, uint32_t flags,
	       const char *keywords, uint64_t unchangedsince, bool *changed_r,
	       bool *conflict_r);

/* Removes messages with \Deleted (only those whose UID is in uids when
 * uids is not NULL: UID EXPUNGE) and reports each through cb->expunged as
 * mbox_sync does. Read-only views fail with MSTORE_ERR_CANNOT. */
struct imap_seqset;
int mbox_expunge(struct mbox *mbox, const struct imap_seqset *uids,
		 const struct mbox_sync_cb *cb, void *ctx);

/*
 * Copies messages seqs[0..n-1] to folder dest (hard links when possible,
 * with the flags and keywords; \Recent set in dest), in one transaction,
 * fsyncing dest's cur/. uids_r[i] gets the new UIDs, *uidvalidity_r the
 * destination's. With move, the sources are removed afterwards (RFC 6851)
 * and reported by the caller's next mbox_sync(allow_expunge = true).
 * MSTORE_ERR_NONEXISTENT when dest is missing ([TRYCREATE]),
 * MSTORE_ERR_OVERQUOTA when the copy would exceed the quota.
 */
int mbox_copy(struct mbox *mbox, const uint32_t *seqs, unsigned n, const char *dest,
	      bool move, uint32_t *uids_r, uint32_t *uidvalidity_r);

/* QRESYNC (RFC 7162): UIDs expunged with a modseq above since, in the
 * given UID set (NULL: all), added to out_r (an initialised empty set);
 * when the history before `since` is incomplete (index rebuilt, folder
 * adopted from disk), every UID in `uids` (NULL: 1..UIDNEXT-1) that is not
 * in the view; `uids` must be resolved (imap_seqset_resolve()). */
int mbox_vanished_since(struct mbox *mbox, uint64_t since, const struct imap_seqset *uids,
			struct imap_seqset *out_r);

/* An fd (inotify) that becomes readable when the folder may have changed
 * (new mail, other sessions' changes); the caller then calls
 * mbox_watch_drain() and mbox_sync(). -1 when unavailable (poll instead). */
int mbox_watch_fd(struct mbox *mbox);
void mbox_watch_drain(struct mbox *mbox);

#endif
