/*
 * mstore-mbox.c — a selected folder, one session's view of it (RFC 9051
 * 6.3.2 SELECT/EXAMINE, 7.5 unilateral EXISTS/EXPUNGE/FETCH): the message
 * list kept in memory (sorted by UID), brought up to date from the index
 * by MODSEQ; STORE, EXPUNGE/UID EXPUNGE (RFC 4315), COPY/MOVE (RFC 6851),
 * CONDSTORE/QRESYNC data (RFC 7162), cached FETCH items and the inotify
 * watch for IDLE.
 *
 * Run by imapd. A view changes files only inside an index write
 * transaction (mstore.c), so sessions of the same account in other
 * processes see each change whole, with its MODSEQ.
 */
#include "mstore-private.h"

#include "lib-imap/imap-search.h"
#include "lib-imap/imap-seqset.h"
#include "lib-store/quota.h"
#include "lib/log.h"
#include "lib/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define SYSTEM_FLAGS (IMAP_FLAG_SEEN | IMAP_FLAG_ANSWERED | IMAP_FLAG_FLAGGED | \
		      IMAP_FLAG_DELETED | IMAP_FLAG_DRAFT)
/* Messages in one view (memory bound: 48 bytes each). */
#define MBOX_MESSAGES_MAX (16u * 1024 * 1024)

/* ---- keywords (space-separated, case-insensitive, RFC 9051 2.3.2) ---- */

bool mstore_kw_has(const char *list, const char *kw, size_t len)
{
	if (list == NULL)
		return false;
	for (const char *p = list; *p != '\0';) {
		while (*p == ' ')
			p++;
		size_t n = strcspn(p, " ");
		if (n == len && n > 0 && strncasecmp(p, kw, len) == 0)
			return true;
		p += n;
	}
	return false;
}

static bool kw_equal(const char *a, const char *b)
{
	bool ea = a == NULL || a[0] == '\0', eb = b == NULL || b[0] == '\0';
	if (ea || eb)
		return ea == eb;
	return strcmp(a, b) == 0;
}

/* Appends each word of src to out (unless present / when keep() says);
 * 0 or -1 when out is full. */
static int kw_merge(char *out, size_t size, size_t *len, const char *src, const char *skip)
{
	if (src == NULL)
		return 0;
	for (const char *p = src; *p != '\0';) {
		while (*p == ' ')
			p++;
		size_t n = strcspn(p, " ");
		if (n == 0)
			break;
		if (!mstore_kw_has(out, p, n) && !mstore_kw_has(skip, p, n)) {
			if (*len + n + 2 > size)
				return -1;
			if (*len > 0)
				out[(*len)++] = ' ';
			memcpy(out + *len, p, n);
			*len += n;
			out[*len] = '\0';
		}
		p += n;
	}
	return 0;
}

/* ---- the view's array ---- */

static int64_t view_find(const struct mbox *mbox, uint32_t uid)
{
	uint32_t lo = 0, hi = mbox->count;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		uint32_t u = mbox->msgs[mid].uid;
		if (u == uid)
			return mid;
		if (u < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static int view_grow(struct mbox *mbox)
{
	if (mbox->count < mbox->cap)
		return 0;
	if (mbox->cap >= MBOX_MESSAGES_MAX)
		return -1;
	uint32_t cap = mbox->cap == 0 ? 256 : mbox->cap * 2;
	struct mstore_msg *m = realloc(mbox->msgs, cap * sizeof(*m));
	if (m == NULL)
		return -1;
	mbox->msgs = m;
	mbox->cap = cap;
	return 0;
}

static char *col_strdup(sqlite3_stmt *st, int col)
{
	const char *s = (const char *)sqlite3_column_text(st, col);
	return s == NULL || s[0] == '\0' ? NULL : strdup(s);
}

static void msg_set_keywords(struct mstore_msg *m, char *kw)
{
	free((char *)m->keywords);
	m->keywords = kw;
}

static int load_keywords(struct mbox *mbox)
{
	struct mstore *store = mbox->store;
	sqlite3_stmt *st = mstore_stmt(store, ST_FOLDER_KEYWORDS);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, mbox->folder_id);
	if (sqlite3_step(st) == SQLITE_ROW) {
		const char *kw = (const char *)sqlite3_column_text(st, 0);
		if (kw == NULL)
			kw = "";
		if (mbox->keywords == NULL || strcmp(mbox->keywords, kw) != 0) {
			char *dup = strdup(kw);
			if (dup != NULL) {
				free(mbox->keywords);
				mbox->keywords = dup;
			}
		}
	}
	sqlite3_reset(st);
	return 0;
}

/* Changed uids to report as FETCH FLAGS after the expunges. */
struct uid_list {
	uint32_t *uids;
	uint32_t count, cap;
};

static int uid_list_add(struct uid_list *l, uint32_t uid)
{
	if (l->count == l->cap) {
		uint32_t cap = l->cap == 0 ? 64 : l->cap * 2;
		uint32_t *u = realloc(l->uids, cap * sizeof(*u));
		if (u == NULL)
			return -1;
		l->uids = u;
		l->cap = cap;
	}
	l->uids[l->count++] = uid;
	return 0;
}

/*
 * Applies the index to the view (inside a transaction). full: every row
 * (first load, or after an index rebuild: what is missing is expunged);
 * otherwise the rows and expunges with a MODSEQ above the view's.
 */
static int view_update(struct mbox *mbox, struct mstore_frow *row, bool full,
		       bool allow_expunge, const struct mbox_sync_cb *cb, void *ctx)
{
	struct mstore *store = mbox->store;
	struct uid_list changed = { 0 };
	uint32_t count_before = mbox->count, taken_recent = 0;
	bool *present = NULL;
	int ret = -1;
	int rc;

	if (full && mbox->count > 0) {
		present = calloc(mbox->count, sizeof(*present));
		if (present == NULL)
			goto nomem;
	}
	if (!full) {
		sqlite3_stmt *st = mstore_stmt(store, ST_EXP_SINCE);
		if (st == NULL)
			goto out;
		sqlite3_bind_int64(st, 1, mbox->folder_id);
		sqlite3_bind_int64(st, 2, (int64_t)mbox->known_modseq);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			int64_t i = view_find(mbox, (uint32_t)sqlite3_column_int64(st, 0));
			if (i >= 0 && !mbox->msgs[i].expunged) {
				mbox->msgs[i].expunged = true;
				mbox->pending_expunges++;
			}
		}
		sqlite3_reset(st);
		if (rc != SQLITE_DONE) {
			mstore_db_error(store, rc, "read expunged");
			goto out;
		}
	}
	sqlite3_stmt *st = mstore_stmt(store, full ? ST_MSG_VIEW_ALL : ST_MSG_VIEW_CHANGED);
	if (st == NULL)
		goto out;
	sqlite3_bind_int64(st, 1, mbox->folder_id);
	if (!full)
		sqlite3_bind_int64(st, 2, (int64_t)mbox->known_modseq);
	uint32_t last_uid = mbox->count > 0 ? mbox->msgs[mbox->count - 1].uid : 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		uint32_t uid = (uint32_t)sqlite3_column_int64(st, 0);
		uint32_t flags = (uint32_t)sqlite3_column_int64(st, 1) & SYSTEM_FLAGS;
		const char *kw = (const char *)sqlite3_column_text(st, 2);
		uint64_t modseq = (uint64_t)sqlite3_column_int64(st, 3);
		uint64_t vsize = (uint64_t)sqlite3_column_int64(st, 5);
		if (uid <= last_uid) {
			int64_t i = view_find(mbox, uid);
			if (i < 0)
				continue;   /* expunged before this view saw it */
			struct mstore_msg *m = &mbox->msgs[i];
			if (present != NULL)
				present[i] = true;
			if (m->expunged)
				continue;
			if ((m->flags & SYSTEM_FLAGS) != flags || !kw_equal(m->keywords, kw)) {
				m->flags = (m->flags & IMAP_FLAG_RECENT) | flags;
				msg_set_keywords(m, kw == NULL || kw[0] == '\0' ? NULL : strdup(kw));
				if (uid_list_add(&changed, uid) < 0)
					goto nomem_reset;
			}
			m->modseq = modseq;
			if (vsize != 0)
				m->vsize = vsize;
			continue;
		}
		if (view_grow(mbox) < 0)
			goto nomem_reset;
		struct mstore_msg *m = &mbox->msgs[mbox->count++];
		m->uid = uid;
		m->flags = flags;
		if (uid >= row->first_recent_uid) {
			/* EXAMINE shows \Recent without taking it */
			m->flags |= IMAP_FLAG_RECENT;
			mbox->recent++;
			taken_recent++;
		}
		m->modseq = modseq;
		m->internaldate = sqlite3_column_int64(st, 4);
		m->vsize = vsize;
		m->keywords = col_strdup(st, 2);
		m->expunged = false;
		last_uid = uid;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		mstore_db_error(store, rc, "read messages");
		goto out;
	}
	if (present != NULL) {
		for (uint32_t i = 0; i < count_before; i++) {
			if (!present[i] && !mbox->msgs[i].expunged) {
				mbox->msgs[i].expunged = true;
				mbox->pending_expunges++;
			}
		}
	}
	if (taken_recent > 0 && !mbox->readonly && store->txn_depth > 0) {
		/* RFC 3501 2.3.2: \Recent goes to one session */
		sqlite3_stmt *r = mstore_stmt(store, ST_FOLDER_SET_RECENT);
		if (r == NULL)
			goto out;
		sqlite3_bind_int64(r, 1, mbox->folder_id);
		sqlite3_bind_int64(r, 2, row->uidnext);
		store->fcache_valid = false;
		if (mstore_step_done(store, r, "take recent") < 0)
			goto out;
	}
	uint32_t removed = 0;
	if (allow_expunge && mbox->pending_expunges > 0) {
		/* descending, so every number is valid when it is sent */
		for (uint32_t i = mbox->count; i-- > 0;) {
			struct mstore_msg *m = &mbox->msgs[i];
			if (!m->expunged)
				continue;
			if (cb != NULL && cb->expunged != NULL)
				cb->expunged(ctx, i + 1, m->uid);
		}
		uint32_t o = 0;
		for (uint32_t i = 0; i < mbox->count; i++) {
			struct mstore_msg *m = &mbox->msgs[i];
			if (m->expunged) {
				if ((m->flags & IMAP_FLAG_RECENT) != 0)
					mbox->recent--;
				free((char *)m->keywords);
				removed++;
				continue;
			}
			mbox->msgs[o++] = *m;
		}
		mbox->count = o;
		mbox->pending_expunges = 0;
	}
	if (mbox->count > count_before - removed && cb != NULL && cb->exists != NULL)
		cb->exists(ctx, mbox->count, mbox->recent);
	for (uint32_t i = 0; i < changed.count; i++) {
		int64_t s = view_find(mbox, changed.uids[i]);
		if (s >= 0 && !mbox->msgs[s].expunged && cb != NULL && cb->flags != NULL)
			cb->flags(ctx, (uint32_t)s + 1, &mbox->msgs[s]);
	}
	if (row->highestmodseq > mbox->known_modseq || full)
		mbox->known_modseq = row->highestmodseq;
	mbox->uidnext = row->uidnext;
	mbox->uidvalidity = row->uidvalidity;
	ret = load_keywords(mbox);
	goto out;
nomem_reset:
	sqlite3_reset(st);
nomem:
	mstore_set_error(store, MSTORE_ERR_INTERNAL, "Out of memory");
out:
	free(present);
	free(changed.uids);
	return ret;
}

/* Every view operation starts here: rebuilds a corrupt index, and after a
 * rebuild finds the folder's new id (UIDs are the same; the next sync
 * reloads every row to find what is gone). */
static int view_check(struct mbox *mbox)
{
	struct mstore *store = mbox->store;
	struct mstore_frow row;
	if (store->txn_depth == 0 && mstore_check_corrupt(store) < 0)
		return -1;
	if (mbox->generation == store->generation)
		return 0;
	if (mstore_folder_find(store, mbox->name, &row) <= 0)
		return -1;
	mbox->folder_id = row.id;
	mbox->generation = store->generation;
	mbox->needs_full = true;
	return 0;
}

/* Brings the view up to date; see mbox_sync. */
static int view_sync(struct mbox *mbox, bool allow_expunge, bool force_full,
		     const struct mbox_sync_cb *cb, void *ctx)
{
	struct mstore *store = mbox->store;
	struct mstore_frow row;
	bool full = force_full;

	if (view_check(mbox) < 0)
		return -1;
	full = full || mbox->needs_full;
	int r = mstore_frow_by_id(store, mbox->folder_id, &row);
	if (r <= 0) {
		if (r == 0)
			mstore_set_error(store, MSTORE_ERR_NONEXISTENT, "Mailbox was deleted");
		return -1;
	}
	if (strcmp(row.dir, mbox->dir) != 0) {
		/* renamed (by us or another session) */
		char *name = strdup(row.name);
		if (name != NULL) {
			free(mbox->name);
			mbox->name = name;
			memcpy(mbox->dir, row.dir, sizeof(mbox->dir));
		}
	}
	int need_disk = mstore_folder_sync_needed(store, &row);
	if (need_disk == 0 && !full && row.highestmodseq == mbox->known_modseq &&
	    !(allow_expunge && mbox->pending_expunges > 0))
		return 0;   /* the common case: 2 syscalls and one query */
	bool write = need_disk != 0 || (!mbox->readonly && row.uidnext != mbox->uidnext);
	bool ok;
	if (write) {
		if (mstore_txn_begin(store) < 0)
			return -1;
		ok = (need_disk == 0 || mstore_folder_sync(store, &row, false, false, NULL) == 0) &&
		     mstore_frow_by_id(store, mbox->folder_id, &row) > 0 &&
		     view_update(mbox, &row, full, allow_expunge, cb, ctx) == 0;
		if (mstore_txn_end(store, ok) < 0)
			ok = false;
	} else {
		if (mstore_read_begin(store) < 0)
			return -1;
		ok = mstore_frow_by_id(store, mbox->folder_id, &row) > 0 &&
		     view_update(mbox, &row, full, allow_expunge, cb, ctx) == 0;
		mstore_read_end(store);
	}
	if (ok && full)
		mbox->needs_full = false;
	return ok ? 0 : -1;
}

int mbox_open(struct mstore *store, const char *name, bool readonly, struct mbox **mbox_r)
{
	struct mstore_frow row;

	if (mstore_check_corrupt(store) < 0)
		return -1;
	int r = mstore_folder_find(store, name, &row);
	if (r <= 0)
		return -1;
	struct mbox *mbox = calloc(1, sizeof(*mbox));
	if (mbox == NULL || (mbox->name = strdup(row.name)) == NULL) {
		free(mbox);
		mstore_set_error(store, MSTORE_ERR_INTERNAL, "Out of memory");
		return -1;
	}
	mbox->store = store;
	mbox->folder_id = row.id;
	mbox->generation = store->generation;
	mbox->readonly = readonly;
	mbox->watch_fd = -1;
	memcpy(mbox->dir, row.dir, sizeof(mbox->dir));
	/* uidnext 0 makes a read-write view take \Recent in view_sync */
	if (view_sync(mbox, true, true, NULL, NULL) < 0) {
		mbox_close(&mbox);
		return -1;
	}
	*mbox_r = mbox;
	return 0;
}

void mbox_close(struct mbox **mboxp)
{
	struct mbox *mbox = *mboxp;
	if (mbox == NULL)
		return;
	*mboxp = NULL;
	for (uint32_t i = 0; i < mbox->count; i++)
		free((char *)mbox->msgs[i].keywords);
	free(mbox->msgs);
	free(mbox->keywords);
	free(mbox->name);
	if (mbox->watch_fd >= 0)
		close(mbox->watch_fd);
	free(mbox);
}

const char *mbox_name(const struct mbox *mbox) { return mbox->name; }
bool mbox_readonly(const struct mbox *mbox) { return mbox->readonly; }
uint32_t mbox_count(const struct mbox *mbox) { return mbox->count; }
uint32_t mbox_recent(const struct mbox *mbox) { return mbox->recent; }
uint32_t mbox_uidvalidity(const struct mbox *mbox) { return mbox->uidvalidity; }
uint32_t mbox_uidnext(const struct mbox *mbox) { return mbox->uidnext; }
uint64_t mbox_highestmodseq(const struct mbox *mbox) { return mbox->known_modseq; }

uint32_t mbox_first_unseen(const struct mbox *mbox)
{
	for (uint32_t i = 0; i < mbox->count; i++) {
		if ((mbox->msgs[i].flags & IMAP_FLAG_SEEN) == 0)
			return i + 1;
	}
	return 0;
}

const char *mbox_keywords(const struct mbox *mbox)
{
	return mbox->keywords != NULL ? mbox->keywords : "";
}

const struct mstore_msg *mbox_msg(const struct mbox *mbox, uint32_t seq)
{
	if (seq == 0 || seq > mbox->count)
		return NULL;
	return &mbox->msgs[seq - 1];
}

uint32_t mbox_seq_of_uid(const struct mbox *mbox, uint32_t uid)
{
	int64_t i = view_find(mbox, uid);
	return i < 0 ? 0 : (uint32_t)i + 1;
}

int mbox_sync(struct mbox *mbox, bool allow_expunge, const struct mbox_sync_cb *cb, void *ctx)
{
	return view_sync(mbox, allow_expunge, false, cb, ctx);
}

int mbox_begin(struct mbox *mbox)
{
	if (view_check(mbox) < 0)
		return -1;
	return mstore_txn_begin(mbox->store);
}

int mbox_commit(struct mbox *mbox)
{
	return mstore_txn_end(mbox->store, true);
}

/* ---- one message's row and file ---- */

struct msg_row {
	char base[MSTORE_FNAME_MAX];
	uint32_t flags;
	uint64_t xflags;
	char *keywords;
	uint64_t modseq, psize, vsize;
	int64_t internaldate;
};

/* 1 found, 0 not, -1 error. */
static int msg_row_get(struct mstore *store, int64_t folder_id, uint32_t uid, struct msg_row *r)
{
	sqlite3_stmt *st = mstore_stmt(store, ST_MSG_GET);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, folder_id);
	sqlite3_bind_int64(st, 2, uid);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		snprintf(r->base, sizeof(r->base), "%s", (const char *)sqlite3_column_text(st, 0));
		r->flags = (uint32_t)sqlite3_column_int64(st, 1);
		r->xflags = (uint64_t)sqlite3_column_int64(st, 2);
		r->keywords = col_strdup(st, 3);
		r->modseq = (uint64_t)sqlite3_column_int64(st, 4);
		r->internaldate = sqlite3_column_int64(st, 5);
		r->psize = (uint64_t)sqlite3_column_int64(st, 6);
		r->vsize = (uint64_t)sqlite3_column_int64(st, 7);
		sqlite3_reset(st);
		return 1;
	}
	sqlite3_reset(st);
	if (rc == SQLITE_DONE)
		return 0;
	mstore_db_error(store, rc, "read message");
	return -1;
}

static int msg_path(const struct mbox *mbox, uint32_t uid, const struct msg_row *r,
		    uint32_t flags, char *out, size_t size)
{
	char name[MSTORE_FNAME_MAX];
	if (mstore_fname_make(name, sizeof(name), r->base, strlen(r->base), uid, flags,
			      r->xflags) < 0)
		return -1;
	return snprintf(out, size, "%s/cur/%s", mbox->dir, name) < (int)size ? 0 : -1;
}

/* Someone renamed or removed the file: read cur/ again (in a txn). */
static int rescan(struct mbox *mbox, struct mstore_frow *row)
{
	struct mstore *store = mbox->store;
	if (mstore_txn_begin(store) < 0)
		return -1;
	bool ok = mstore_folder_sync(store, row, true, false, NULL) == 0;
	return mstore_txn_end(store, ok) < 0 || !ok ? -1 : 0;
}

static void set_expunged(struct mbox *mbox)
{
	mstore_set_error(mbox->store, MSTORE_ERR_EXPUNGED, "Message was expunged");
}

int mbox_msg_open(struct mbox *mbox, uint32_t seq, int *fd_r)
{
	struct mstore *store = mbox->store;
	struct msg_row r;
	char path[PATH_MAX];

	if (seq == 0 || seq > mbox->count || mbox->msgs[seq - 1].expunged) {
		set_expunged(mbox);
		return -1;
	}
	uint32_t uid = mbox->msgs[seq - 1].uid;
	if (view_check(mbox) < 0)
		return -1;
	for (int attempt = 0; attempt < 2; attempt++) {
		int found = msg_row_get(store, mbox->folder_id, uid, &r);
		if (found <= 0) {
			if (found == 0)
				set_expunged(mbox);
			return -1;
		}
		free(r.keywords);
		if (msg_path(mbox, uid, &r, r.flags, path, sizeof(path)) < 0) {
			mstore_set_error(store, MSTORE_ERR_INTERNAL, "Bad file name");
			return -1;
		}
		int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd >= 0) {
			*fd_r = fd;
			return 0;
		}
		if (errno != ENOENT) {
			log_error("mstore: open %s: %s", path, strerror(errno));
			mstore_set_error(store, MSTORE_ERR_INTERNAL, "Cannot read the message");
			return -1;
		}
		struct mstore_frow row = { .id = mbox->folder_id };
		if (attempt == 0 && rescan(mbox, &row) < 0)
			return -1;
	}
	set_expunged(mbox);
	return -1;
}

int mbox_msg_vsize(struct mbox *mbox, uint32_t seq, uint64_t *vsize_r)
{
	if (seq == 0 || seq > mbox->count) {
		set_expunged(mbox);
		return -1;
	}
	struct mstore_msg *m = &mbox->msgs[seq - 1];
	if (m->vsize != 0) {
		*vsize_r = m->vsize;
		return 0;
	}
	int fd;
	if (mbox_msg_open(mbox, seq, &fd) < 0)
		return -1;
	/* RFC822.SIZE counts each bare LF as CRLF */
	char buf[65536];
	uint64_t size = 0;
	char prev = '\0';
	ssize_t n;
	while ((n = read_full(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n' && prev != '\r')
				size++;
			prev = buf[i];
		}
		size += (uint64_t)n;
	}
	close(fd);
	if (n < 0) {
		mstore_set_error(mbox->store, MSTORE_ERR_INTERNAL, "Cannot read the message");
		return -1;
	}
	if (size == 0)
		size = 1;   /* 0 means unknown; an empty file is rare enough */
	*vsize_r = size;
	mbox_msg_set_vsize(mbox, seq, size);
	return 0;
}

static int pending_add(struct mbox *mbox, uint32_t seq, unsigned field, const void *value,
		       size_t len, int64_t sentday);

void mbox_msg_set_vsize(struct mbox *mbox, uint32_t seq, uint64_t vsize)
{
	if (seq == 0 || seq > mbox->count || mbox->msgs[seq - 1].vsize != 0 || vsize == 0 ||
	    vsize > INT64_MAX)
		return;
	mbox->msgs[seq - 1].vsize = vsize;
	/* written with the next batch of cache rows */
	(void)pending_add(mbox, seq, MSTORE_PENDING_VSIZE, "", 0, (int64_t)vsize);
}

int mbox_read_begin(struct mbox *mbox)
{
	struct mstore *store = mbox->store;
	if (store->txn_depth > 0 || store->read_txn)
		return 0;
	if (view_check(mbox) < 0)
		return -1;
	return mstore_read_begin(store);
}

void mbox_read_end(struct mbox *mbox)
{
	mstore_read_end(mbox->store);
}

/* ---- the cache (ENVELOPE, BODYSTRUCTURE, BODY, SEARCH data) ---- */

void mstore_pending_free(struct mstore *store)
{
	for (unsigned i = 0; i < store->npending; i++)
		free(store->pending[i].value);
	free(store->pending);
	store->pending = NULL;
	store->npending = 0;
	store->pending_bytes = 0;
}

void mstore_pending_flush(struct mstore *store)
{
	static const enum mstore_stmt ids[] = { ST_CACHE_SET_ENVELOPE,
		ST_CACHE_SET_BODYSTRUCTURE, ST_CACHE_SET_BODY };
	if (store->npending == 0 || store->flushing || store->db == NULL)
		return;
	store->flushing = true;
	bool own = store->txn_depth == 0;
	if (own && mstore_txn_begin(store) < 0) {
		store->flushing = false;
		mstore_pending_free(store);
		return;
	}
	bool ok = true;
	for (unsigned i = 0; i < store->npending && ok; i++) {
		const struct mstore_pending *p = &store->pending[i];
		if (p->field == MSTORE_PENDING_VSIZE) {
			sqlite3_stmt *st = mstore_stmt(store, ST_MSG_SET_VSIZE);
			if (st == NULL) {
				ok = false;
				break;
			}
			sqlite3_bind_int64(st, 1, p->folder_id);
			sqlite3_bind_int64(st, 2, p->uid);
			sqlite3_bind_int64(st, 3, p->sentday);
			ok = mstore_step_done(store, st, "store vsize") == 0;
			continue;
		}
		bool search = p->field == MSTORE_PENDING_SEARCH;
		sqlite3_stmt *st = mstore_stmt(store, search ? ST_CACHE_SET_SEARCH : ids[p->field]);
		if (st == NULL) {
			ok = false;
			break;
		}
		sqlite3_bind_int64(st, 1, mstore_cache_key(p->folder_id, p->uid));
		if (search)
			sqlite3_bind_blob(st, 2, p->value, (int)p->len, SQLITE_STATIC);
		else
			sqlite3_bind_text(st, 2, p->value, (int)p->len, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, p->folder_id);
		sqlite3_bind_int64(st, 4, p->uid);
		if (search)
			sqlite3_bind_int64(st, 5, p->sentday);
		ok = mstore_step_done(store, st, "write cache") == 0;
	}
	mstore_pending_free(store);
	if (own)
		(void)mstore_txn_end(store, ok);
	store->flushing = false;
}

void mbox_cache_flush(struct mbox *mbox)
{
	struct mstore *store = mbox->store;
	if (store->npending == 0 || (store->txn_depth == 0 && mstore_check_corrupt(store) < 0))
		return;
	mstore_pending_flush(store);   /* in the open write transaction, if any */
}

static const struct mstore_pending *pending_find(const struct mstore *store, int64_t folder_id,
						 uint32_t uid, unsigned field)
{
	for (unsigned i = store->npending; i-- > 0;) {
		const struct mstore_pending *p = &store->pending[i];
		if (p->uid == uid && p->field == field && p->folder_id == folder_id)
			return p;
	}
	return NULL;
}

static int pending_add(struct mbox *mbox, uint32_t seq, unsigned field, const void *value,
		       size_t len, int64_t sentday)
{
	struct mstore *store = mbox->store;
	if (seq == 0 || seq > mbox->count || view_check(mbox) < 0)
		return -1;
	if (store->npending >= MSTORE_PENDING_MAX || store->pending_bytes >= MSTORE_PENDING_BYTES)
		mbox_cache_flush(mbox);
	if (store->npending >= MSTORE_PENDING_MAX)
		return 0; /* could not flush: skip, it is a cache */
	if (store->pending == NULL) {
		store->pending = calloc(MSTORE_PENDING_MAX, sizeof(*store->pending));
		if (store->pending == NULL)
			return -1;
	}
	char *copy = malloc(len + 1);
	if (copy == NULL)
		return -1;
	memcpy(copy, value, len);
	copy[len] = '\0';
	struct mstore_pending *p = &store->pending[store->npending++];
	p->folder_id = mbox->folder_id;
	p->uid = mbox->msgs[seq - 1].uid;
	p->field = field;
	p->value = copy;
	p->len = len;
	p->sentday = sentday;
	store->pending_bytes += len;
	return 0;
}

int mbox_cache_get(struct mbox *mbox, uint32_t seq, enum mstore_cache_field field,
		   char **value_r)
{
	static const enum mstore_stmt ids[] = { ST_CACHE_GET_ENVELOPE,
		ST_CACHE_GET_BODYSTRUCTURE, ST_CACHE_GET_BODY };
	if (seq == 0 || seq > mbox->count || (unsigned)field > MSTORE_CACHE_BODY)
		return 0;
	if (view_check(mbox) < 0)
		return -1;
	if (mbox->store->npending > 0) {
		const struct mstore_pending *p = pending_find(mbox->store, mbox->folder_id,
							      mbox->msgs[seq - 1].uid, field);
		if (p != NULL) {
			*value_r = strdup(p->value);
			return *value_r != NULL ? 1 : -1;
		}
	}
	sqlite3_stmt *st = mstore_stmt(mbox->store, ids[field]);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, mstore_cache_key(mbox->folder_id, mbox->msgs[seq - 1].uid));
	int rc = sqlite3_step(st);
	int ret = 0;
	if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
		*value_r = strdup((const char *)sqlite3_column_text(st, 0));
		ret = *value_r != NULL ? 1 : -1;
	} else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		mstore_db_error(mbox->store, rc, "read cache");
		ret = -1;
	}
	sqlite3_reset(st);
	return ret;
}

int mbox_cache_set(struct mbox *mbox, uint32_t seq, enum mstore_cache_field field,
		   const char *value)
{
	if ((unsigned)field > MSTORE_CACHE_BODY)
		return -1;
	return pending_add(mbox, seq, field, value, strlen(value), 0);
}

int mbox_search_data_set(struct mbox *mbox, uint32_t seq, const void *hdrs, size_t len,
			 int64_t sentday)
{
	if (len > INT32_MAX)
		return -1;
	return pending_add(mbox, seq, MSTORE_PENDING_SEARCH, hdrs, len, sentday);
}

int mbox_search_data_load(struct mbox *mbox, uint32_t first, uint32_t last,
			  struct mbox_search_data *rows_r, void **arena_r)
{
	struct mstore *store = mbox->store;
	*arena_r = NULL;
	if (first == 0 || first > last || last > mbox->count)
		return -1;
	uint32_t n = last - first + 1;
	for (uint32_t i = 0; i < n; i++)
		rows_r[i] = (struct mbox_search_data){ .hdrs = NULL, .sentday = -1 };
	if (view_check(mbox) < 0)
		return -1;
	mbox_cache_flush(mbox);
	sqlite3_stmt *st = mstore_stmt(store, ST_CACHE_SEARCH_RANGE);
	if (st == NULL)
		return -1;
	const struct mstore_msg *msgs = &mbox->msgs[first - 1];
	sqlite3_bind_int64(st, 1, mstore_cache_key(mbox->folder_id, msgs[0].uid));
	sqlite3_bind_int64(st, 2, mstore_cache_key(mbox->folder_id, msgs[n - 1].uid));
	/* Two passes over the rows would need two queries: copy into a
	 * growing arena and turn offsets into pointers at the end. */
	char *arena = NULL;
	size_t used = 0, cap = 0;
	uint32_t i = 0;
	int rc, ret = 0;
	size_t *offs = calloc(n, sizeof(*offs));
	if (offs == NULL) {
		sqlite3_reset(st);
		return -1;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		uint32_t uid = (uint32_t)(sqlite3_column_int64(st, 0) & 0xffffffff);
		while (i < n && msgs[i].uid < uid)
			i++;
		if (i == n)
			break;
		if (msgs[i].uid != uid)
			continue;
		const void *b = sqlite3_column_blob(st, 1);
		size_t len = (size_t)sqlite3_column_bytes(st, 1);
		if (used + len + 1 > cap) {
			size_t ncap = cap == 0 ? 16384 : cap;
			while (used + len + 1 > ncap)
				ncap *= 2;
			char *a = realloc(arena, ncap);
			if (a == NULL) {
				ret = -1;
				break;
			}
			arena = a;
			cap = ncap;
		}
		if (len > 0)
			memcpy(arena + used, b, len);
		arena[used + len] = '\0';
		offs[i] = used + 1;   /* 0: none */
		rows_r[i].hdrs_len = len;
		rows_r[i].sentday = sqlite3_column_type(st, 2) == SQLITE_NULL ?
			-1 : sqlite3_column_int64(st, 2);
		used += len + 1;
		i++;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		mstore_db_error(store, rc, "read search cache");
		ret = -1;
	}
	sqlite3_reset(st);
	if (ret == 0) {
		for (uint32_t k = 0; k < n; k++)
			if (offs[k] != 0)
				rows_r[k].hdrs = arena + offs[k] - 1;
		*arena_r = arena;
	} else {
		free(arena);
		for (uint32_t k = 0; k < n; k++)
			rows_r[k].hdrs = NULL;
	}
	free(offs);
	return ret;
}

/* ---- STORE ---- */

static int kw_apply(enum mbox_store_op op, const char *old, const char *given, char *out,
		    size_t size)
{
	size_t len = 0;
	out[0] = '\0';
	switch (op) {
	case MBOX_STORE_REPLACE:
		return kw_merge(out, size, &len, given, NULL);
	case MBOX_STORE_ADD:
		if (kw_merge(out, size, &len, old, NULL) < 0)
			return -1;
		return kw_merge(out, size, &len, given, NULL);
	case MBOX_STORE_REMOVE:
		return kw_merge(out, size, &len, old, given);
	}
	return -1;
}

int mbox_store(struct mbox *mbox, uint32_t seq, enum mbox_store_op op, uint32_t flags,
	       const char *keywords, uint64_t unchangedsince, bool *changed_r,
	       bool *conflict_r)
{
	struct mstore *store = mbox->store;
	struct mstore_frow row;
	struct msg_row r = { .keywords = NULL };
	char kw[MSTORE_KEYWORDS_MAX + 1];
	char from[PATH_MAX], to[PATH_MAX];
	bool ok = false;

	*changed_r = false;
	*conflict_r = false;
	if (mbox->readonly) {
		mstore_set_error(store, MSTORE_ERR_CANNOT, "Mailbox is read-only");
		return -1;
	}
	if (seq == 0 || seq > mbox->count || mbox->msgs[seq - 1].expunged) {
		set_expunged(mbox);
		return -1;
	}
	struct mstore_msg *m = &mbox->msgs[seq - 1];
	flags &= SYSTEM_FLAGS;
	if (view_check(mbox) < 0 || mstore_txn_begin(store) < 0)
		return -1;
	if (mstore_frow_by_id(store, mbox->folder_id, &row) <= 0)
		goto end;
	for (int attempt = 0;; attempt++) {
		int found = msg_row_get(store, mbox->folder_id, m->uid, &r);
		if (found <= 0) {
			if (found == 0)
				set_expunged(mbox);
			goto end;
		}
		if (unchangedsince != 0 && r.modseq > unchangedsince) {
			*conflict_r = true;
			ok = true;
			goto end;
		}
		uint32_t nf = op == MBOX_STORE_REPLACE ? flags :
			      op == MBOX_STORE_ADD ? (r.flags | flags) : (r.flags & ~flags);
		if (kw_apply(op, r.keywords, keywords, kw, sizeof(kw)) < 0) {
			mstore_set_error(store, MSTORE_ERR_LIMIT, "Too many keywords");
			goto end;
		}
		bool kw_same = kw_equal(r.keywords, kw);
		if (nf == r.flags && kw_same) {
			ok = true;
			/* another session may have made the change: show it */
			goto end;
		}
		if (nf != r.flags) {
			if (msg_path(mbox, m->uid, &r, r.flags, from, sizeof(from)) < 0 ||
			    msg_path(mbox, m->uid, &r, nf, to, sizeof(to)) < 0) {
				mstore_set_error(store, MSTORE_ERR_INTERNAL, "Bad file name");
				goto end;
			}
			char curdir[PATH_MAX];
			mstore_path(curdir, sizeof(curdir), "%s/cur", mbox->dir);
			mstore_touch(store, row.id, curdir, row.cur_mtime_ns);
			if (rename(from, to) < 0) {
				if (errno != ENOENT || attempt > 0) {
					if (errno == ENOENT) {
						set_expunged(mbox);
					} else {
						log_error("mstore: rename %s: %s", from,
							  strerror(errno));
						mstore_set_error(store, MSTORE_ERR_INTERNAL,
								 "Cannot change flags");
					}
					goto end;
				}
				/* renamed by another tool: find its new name */
				free(r.keywords);
				r.keywords = NULL;
				if (mstore_folder_sync(store, &row, true, false, NULL) < 0)
					goto end;
				continue;
			}
		}
		sqlite3_stmt *st = mstore_stmt(store, ST_MSG_SET_FLAGS);
		if (st == NULL)
			goto end;
		sqlite3_bind_int64(st, 1, row.id);
		sqlite3_bind_int64(st, 2, m->uid);
		sqlite3_bind_int64(st, 3, nf);
		sqlite3_bind_int64(st, 4, (int64_t)r.xflags);
		if (kw[0] != '\0')
			sqlite3_bind_text(st, 5, kw, -1, SQLITE_STATIC);
		else
			sqlite3_bind_null(st, 5);
		sqlite3_bind_int64(st, 6, (int64_t)++row.highestmodseq);
		if (mstore_step_done(store, st, "store flags") < 0 ||
		    mstore_frow_save(store, &row) < 0)
			goto end;
		if (!kw_same && mstore_folder_add_keywords(store, row.id, kw) < 0)
			goto end;
		m->flags = (m->flags & IMAP_FLAG_RECENT) | nf;
		msg_set_keywords(m, kw[0] != '\0' ? strdup(kw) : NULL);
		m->modseq = row.highestmodseq;
		*changed_r = true;
		ok = true;
		break;
	}
end:
	free(r.keywords);
	if (mstore_txn_end(store, ok) < 0)
		return -1;
	if (ok && *changed_r && !kw_equal(m->keywords, NULL)) {
		(void)mstore_read_begin(store);
		(void)load_keywords(mbox);
		mstore_read_end(store);
	}
	return ok ? 0 : -1;
}

/* ---- EXPUNGE ---- */

struct doomed {
	uint32_t uid;
	uint64_t psize;
	char path[PATH_MAX];
};

int mbox_expunge(struct mbox *mbox, const struct imap_seqset *uids,
		 const struct mbox_sync_cb *cb, void *ctx)
{
	struct mstore *store = mbox->store;
	struct mstore_frow row;
	struct doomed *d = NULL;
	uint32_t n = 0, cap = 0;
	int64_t bytes = 0;
	bool ok = false, rescanned = false;

	if (mbox->readonly) {
		mstore_set_error(store, MSTORE_ERR_CANNOT, "Mailbox is read-only");
		return -1;
	}
	if (view_check(mbox) < 0 || mstore_txn_begin(store) < 0)
		return -1;
	if (mstore_frow_by_id(store, mbox->folder_id, &row) <= 0)
		goto end;
again:
	n = 0;
	sqlite3_stmt *st = mstore_stmt(store, ST_MSG_DELETED);
	if (st == NULL)
		goto end;
	sqlite3_bind_int64(st, 1, row.id);
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		uint32_t uid = (uint32_t)sqlite3_column_int64(st, 0);
		if (uids != NULL && !imap_seqset_contains(uids, uid))
			continue;
		if (n == cap) {
			uint32_t c = cap == 0 ? 16 : cap * 2;
			struct doomed *nd = realloc(d, c * sizeof(*nd));
			if (nd == NULL)
				break;
			d = nd;
			cap = c;
		}
		struct msg_row r = { .xflags = (uint64_t)sqlite3_column_int64(st, 3) };
		snprintf(r.base, sizeof(r.base), "%s", (const char *)sqlite3_column_text(st, 1));
		d[n].uid = uid;
		d[n].psize = (uint64_t)sqlite3_column_int64(st, 4);
		if (msg_path(mbox, uid, &r, (uint32_t)sqlite3_column_int64(st, 2), d[n].path,
			     sizeof(d[n].path)) < 0)
			continue;
		n++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		mstore_db_error(store, rc, "find deleted");
		goto end;
	}
	char curdir[PATH_MAX];
	mstore_path(curdir, sizeof(curdir), "%s/cur", mbox->dir);
	if (n > 0)
		mstore_touch(store, row.id, curdir, row.cur_mtime_ns);
	uint32_t done = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (unlink(d[i].path) < 0) {
			if (errno == ENOENT && !rescanned) {
				/* renamed by another tool (flags changed?): look again */
				rescanned = true;
				/* keep the MODSEQs given out (the sync reloads row) */
				if (mstore_frow_save(store, &row) < 0 ||
				    mstore_folder_sync(store, &row, true, false, NULL) < 0)
					goto end;
				goto again;
			}
			if (errno != ENOENT) {
				log_error("mstore: unlink %s: %s", d[i].path, strerror(errno));
				continue;
			}
		}
		if (mstore_msg_expunge(store, &row, d[i].uid) < 0)
			goto end;
		bytes += (int64_t)d[i].psize;
		done++;
	}
	if (mstore_frow_save(store, &row) < 0)
		goto end;
	ok = true;
	if (done > 0)
		(void)maildir_quota_add(store->root, -bytes, -(int64_t)done);
end:
	free(d);
	if (mstore_txn_end(store, ok) < 0 || !ok)
		return -1;
	return view_sync(mbox, true, false, cb, ctx);
}

/* ---- COPY / MOVE ---- */

/* Copies src to a new file dst (when link() is not possible). */
static int copy_file(const char *src, const char *dst)
{
	char buf[65536];
	int in = open(src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (in < 0)
		return -1;
	int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (out < 0) {
		int e = errno;
		close(in);
		errno = e;
		return -1;
	}
	ssize_t n;
	int ret = 0;
	while ((n = read_full(in, buf, sizeof(buf))) > 0) {
		if (write_full(out, buf, (size_t)n) < 0) {
			ret = -1;
			break;
		}
	}
	if (n < 0 || (ret == 0 && fdatasync(out) < 0))
		ret = -1;
	int e = errno;
	close(in);
	if (close(out) < 0)
		ret = -1;
	if (ret < 0) {
		unlink(dst);
		errno = e;
	}
	return ret;
}

struct copy_item {
	uint32_t src_uid, dst_uid;
	struct msg_row r;
	char src_path[PATH_MAX], dst_path[PATH_MAX];
	bool created;
};

int mbox_copy(struct mbox *mbox, const uint32_t *seqs, unsigned n, const char *dest,
	      bool move, uint32_t *uids_r, uint32_t *uidvalidity_r)
{
	struct mstore *store = mbox->store;
	struct mstore_frow src, dstrow, *dst = &dstrow;
	struct copy_item *items = NULL;
	char dst_cur[PATH_MAX], src_cur[PATH_MAX];
	uint64_t total = 0;
	bool ok = false;

	if (move && mbox->readonly) {
		mstore_set_error(store, MSTORE_ERR_CANNOT, "Mailbox is read-only");
		return -1;
	}
	if (view_check(mbox) < 0 || mstore_folder_find(store, dest, &dstrow) <= 0)
		return -1;
	items = calloc(n > 0 ? n : 1, sizeof(*items));
	if (items == NULL) {
		mstore_set_error(store, MSTORE_ERR_INTERNAL, "Out of memory");
		return -1;
	}
	if (mstore_txn_begin(store) < 0) {
		free(items);
		return -1;
	}
	if (mstore_frow_by_id(store, mbox->folder_id, &src) <= 0)
		goto end;
	if (dstrow.id == src.id)
		dst = &src;
	else if (mstore_frow_by_id(store, dstrow.id, dst) <= 0)
		goto end;
	mstore_path(dst_cur, sizeof(dst_cur), "%s/cur", dst->dir);
	mstore_path(src_cur, sizeof(src_cur), "%s/cur", src.dir);
	for (unsigned i = 0; i < n; i++) {
		if (seqs[i] == 0 || seqs[i] > mbox->count || mbox->msgs[seqs[i] - 1].expunged) {
			set_expunged(mbox);
			goto end;
		}
		items[i].src_uid = mbox->msgs[seqs[i] - 1].uid;
		int found = msg_row_get(store, src.id, items[i].src_uid, &items[i].r);
		if (found <= 0) {
			if (found == 0)
				set_expunged(mbox);
			goto end;
		}
		total += items[i].r.psize;
	}
	if (!move && (store->set.quota_bytes != 0 || store->set.quota_messages != 0)) {
		uint64_t used_bytes = 0, used_msgs = 0;
		if (maildir_quota_usage(store->root, &used_bytes, &used_msgs) == 0 &&
		    ((store->set.quota_bytes != 0 && used_bytes + total > store->set.quota_bytes) ||
		     (store->set.quota_messages != 0 &&
		      used_msgs + n > store->set.quota_messages))) {
			mstore_set_error(store, MSTORE_ERR_OVERQUOTA, "Quota exceeded");
			goto end;
		}
	}
	if (n > 0)
		mstore_touch(store, dst->id, dst_cur, dst->cur_mtime_ns);
	for (unsigned i = 0; i < n; i++) {
		struct copy_item *it = &items[i];
		char base[MSTORE_FNAME_MAX], name[MSTORE_FNAME_MAX];
		snprintf(base, sizeof(base), "%s", it->r.base);
		/* Another tool (Dovecot) takes the base as the message's id in
		 * the folder: a second copy gets its own. */
		int dup = dst == &src ? 1 : 0;
		if (!dup) {
			sqlite3_stmt *st = mstore_stmt(store, ST_MSG_BASE_EXISTS);
			if (st == NULL)
				goto end;
			sqlite3_bind_int64(st, 1, dst->id);
			sqlite3_bind_text(st, 2, base, -1, SQLITE_STATIC);
			dup = sqlite3_step(st) == SQLITE_ROW;
			sqlite3_reset(st);
		}
		if (dup)
			mstore_new_base(store, base, sizeof(base));
		if (dst->uidnext == UINT32_MAX) {
			mstore_set_error(store, MSTORE_ERR_LIMIT, "UIDs exhausted");
			goto end;
		}
		it->dst_uid = dst->uidnext++;
		if (msg_path(mbox, it->src_uid, &it->r, it->r.flags, it->src_path,
			     sizeof(it->src_path)) < 0 ||
		    mstore_fname_make(name, sizeof(name), base, strlen(base), it->dst_uid,
				      it->r.flags, it->r.xflags) < 0 ||
		    snprintf(it->dst_path, sizeof(it->dst_path), "%s/%s", dst_cur, name) >=
		    (int)sizeof(it->dst_path)) {
			mstore_set_error(store, MSTORE_ERR_INTERNAL, "Bad file name");
			goto end;
		}
		int r = link(it->src_path, it->dst_path);
		if (r < 0 && errno == ENOENT) {
			/* renamed by another tool: look again, once. The sync
			 * reloads the row: save what this copy took first
			 * (UIDNEXT, MODSEQ when dest is this folder). */
			if (mstore_frow_save(store, &src) < 0 ||
			    mstore_folder_sync(store, &src, true, false, NULL) < 0)
				goto end;
			free(it->r.keywords);
			it->r.keywords = NULL;
			int found = msg_row_get(store, src.id, it->src_uid, &it->r);
			if (found <= 0) {
				if (found == 0)
					set_expunged(mbox);
				goto end;
			}
			if (msg_path(mbox, it->src_uid, &it->r, it->r.flags, it->src_path,
				     sizeof(it->src_path)) < 0)
				goto end;
			r = link(it->src_path, it->dst_path);
			if (r < 0 && errno == ENOENT) {
				set_expunged(mbox);
				goto end;
			}
		}
		if (r < 0 && (errno == EXDEV || errno == EPERM || errno == EMLINK ||
			      errno == EOPNOTSUPP))
			r = copy_file(it->src_path, it->dst_path);
		if (r < 0) {
			log_error("mstore: copy %s to %s: %s", it->src_path, it->dst_path,
				  strerror(errno));
			mstore_set_error(store, MSTORE_ERR_INTERNAL, "Cannot copy the message");
			goto end;
		}
		it->created = true;
		sqlite3_stmt *st = mstore_stmt(store, ST_MSG_INSERT);
		if (st == NULL)
			goto end;
		sqlite3_bind_int64(st, 1, dst->id);
		sqlite3_bind_int64(st, 2, it->dst_uid);
		sqlite3_bind_text(st, 3, base, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, it->r.flags);
		sqlite3_bind_int64(st, 5, (int64_t)it->r.xflags);
		if (it->r.keywords != NULL)
			sqlite3_bind_text(st, 6, it->r.keywords, -1, SQLITE_STATIC);
		else
			sqlite3_bind_null(st, 6);
		sqlite3_bind_int64(st, 7, (int64_t)++dst->highestmodseq);
		sqlite3_bind_int64(st, 8, it->r.internaldate);
		sqlite3_bind_int64(st, 9, (int64_t)it->r.psize);
		sqlite3_bind_int64(st, 10, (int64_t)it->r.vsize);
		if (mstore_step_done(store, st, "copy msg") < 0)
			goto end;
		st = mstore_stmt(store, ST_CACHE_COPY);
		if (st == NULL)
			goto end;
		sqlite3_bind_int64(st, 1, mstore_cache_key(src.id, it->src_uid));
		sqlite3_bind_int64(st, 2, mstore_cache_key(dst->id, it->dst_uid));
		if (mstore_step_done(store, st, "copy cache") < 0)
			goto end;
		if (it->r.keywords != NULL &&
		    mstore_folder_add_keywords(store, dst->id, it->r.keywords) < 0)
			goto end;
		uids_r[i] = it->dst_uid;
	}
	if (n > 0 && fsync_dir(dst_cur) < 0) {
		log_error("mstore: fsync %s: %s", dst_cur, strerror(errno));
		mstore_set_error(store, MSTORE_ERR_INTERNAL, "Cannot copy the message");
		goto end;
	}
	if (move && n > 0) {
		/* Only now that the copies are durable. */
		mstore_touch(store, src.id, src_cur, src.cur_mtime_ns);
		for (unsigned i = 0; i < n; i++) {
			if (unlink(items[i].src_path) < 0 && errno != ENOENT)
				log_error("mstore: unlink %s: %s", items[i].src_path,
					  strerror(errno));
			if (mstore_msg_expunge(store, &src, items[i].src_uid) < 0)
				goto end;
		}
	}
	if ((dst != &src && mstore_frow_save(store, dst) < 0) || mstore_frow_save(store, &src) < 0)
		goto end;
	ok = true;
end:
	if (!ok) {
		for (unsigned i = 0; i < n; i++) {
			if (items[i].created)
				unlink(items[i].dst_path);
		}
	}
	if (mstore_txn_end(store, ok) < 0 && ok) {
		ok = false;
		/* the moved sources are gone; the copies stay for a rescan */
	}
	if (ok) {
		(void)mstore_uidv_write(dst->dir, dst->uidvalidity, dst->uidnext);
		*uidvalidity_r = dst->uidvalidity;
		if (!move && total > 0)
			(void)maildir_quota_add(store->root, (int64_t)total, (int64_t)n);
	}
	for (unsigned i = 0; i < n; i++)
		free(items[i].r.keywords);
	free(items);
	return ok ? 0 : -1;
}

/* ---- QRESYNC, watch ---- */

/* The expunge history before since is incomplete (the index was rebuilt,
 * or the folder found on disk): every UID of uids (NULL: all) below
 * UIDNEXT that is not in the view. RFC 7162 3.2.5.1 lets VANISHED
 * (EARLIER) name UIDs the client never saw. O(ranges + messages). */
static int vanished_all(struct mbox *mbox, const struct imap_seqset *uids,
			struct imap_seqset *out_r)
{
	if (mbox->uidnext <= 1)
		return 0;
	const uint32_t top = mbox->uidnext - 1;
	const struct imap_range all = { 1, top };
	const struct imap_range *r = uids != NULL ? uids->ranges : &all;
	unsigned nr = uids != NULL ? uids->count : 1;
	uint32_t i = 0;
	for (unsigned k = 0; k < nr; k++) {
		uint32_t next = r[k].lo, hi = r[k].hi < top ? r[k].hi : top;
		if (next == 0)
			next = 1;
		/* the first message at or above next (ranges are sorted) */
		uint32_t lo = i, up = mbox->count;
		while (lo < up) {
			uint32_t mid = lo + (up - lo) / 2;
			if (mbox->msgs[mid].uid < next)
				lo = mid + 1;
			else
				up = mid;
		}
		for (i = lo; next <= hi; i++) {
			while (i < mbox->count && mbox->msgs[i].expunged)
				i++;
			uint32_t m = i < mbox->count ? mbox->msgs[i].uid : UINT32_MAX;
			if (m > next && imap_seqset_add_range(out_r, next, m <= hi ? m - 1 : hi) < 0) {
				mstore_set_error(mbox->store, MSTORE_ERR_LIMIT,
						 "Too many expunged messages");
				return -1;
			}
			if (m >= hi)
				break;
			next = m + 1;
		}
	}
	return 0;
}

int mbox_vanished_since(struct mbox *mbox, uint64_t since, const struct imap_seqset *uids,
			struct imap_seqset *out_r)
{
	struct mstore *store = mbox->store;
	if (view_check(mbox) < 0)
		return -1;
	sqlite3_stmt *st = mstore_stmt(store, ST_EXP_SINCE);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, mbox->folder_id);
	sqlite3_bind_int64(st, 2, (int64_t)since);
	int rc, ret = 0;
	bool incomplete = false;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		uint32_t uid = (uint32_t)sqlite3_column_int64(st, 0);
		if (uid == 0) {
			/* the mark of lost history (mstore_frow_insert), above
			 * since: first, in UID order */
			incomplete = true;
			break;
		}
		if (uids != NULL && !imap_seqset_contains(uids, uid))
			continue;
		if (imap_seqset_add(out_r, uid) < 0) {
			mstore_set_error(store, MSTORE_ERR_LIMIT, "Too many expunged messages");
			ret = -1;
			break;
		}
	}
	sqlite3_reset(st);
	if (ret == 0 && rc != SQLITE_DONE && rc != SQLITE_ROW) {
		mstore_db_error(store, rc, "vanished");
		ret = -1;
	}
	if (ret == 0 && incomplete)
		ret = vanished_all(mbox, uids, out_r);
	return ret;
}

int mbox_watch_fd(struct mbox *mbox)
{
	char path[PATH_MAX];
	if (mbox->watch_fd >= 0)
		return mbox->watch_fd;
	int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (fd < 0)
		return -1;
	const uint32_t mask = IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_ATTRIB;
	mstore_path(path, sizeof(path), "%s/new", mbox->dir);
	bool ok = inotify_add_watch(fd, path, mask) >= 0;
	mstore_path(path, sizeof(path), "%s/cur", mbox->dir);
	ok = ok && inotify_add_watch(fd, path, mask) >= 0;
	/* other sessions' index changes (the WAL is written on each commit);
	 * other files in root wake us too, which costs one cheap sync */
	ok = ok && inotify_add_watch(fd, mbox->store->root, IN_MODIFY) >= 0;
	if (!ok) {
		log_warn("mstore: inotify on %s: %s", mbox->dir, strerror(errno));
		close(fd);
		return -1;
	}
	mbox->watch_fd = fd;
	return fd;
}

void mbox_watch_drain(struct mbox *mbox)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	if (mbox->watch_fd < 0)
		return;
	while (read(mbox->watch_fd, buf, sizeof(buf)) > 0)
		;
}
