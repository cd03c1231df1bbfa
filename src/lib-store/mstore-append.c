/*
 * mstore-append.c — APPEND and MULTIAPPEND (RFC 9051 6.3.12, RFC 3502):
 * the message is written to the folder's tmp/ as it arrives (CRLF becomes
 * LF, the Maildir convention), then at commit every file is fsync()ed,
 * renamed into cur/ with its UID, cur/ is fsync()ed and the index gets the
 * rows in one transaction — all of them or none (DESIGN.md principle 1:
 * "delivered" only once durable).
 *
 * Run by imapd.
 */
#include "mstore-private.h"

#include "lib-imap/imap-search.h"
#include "lib-store/maildir.h"
#include "lib-store/quota.h"
#include "lib/log.h"
#include "lib/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define APPEND_BUF 65536
#define SYSTEM_FLAGS (IMAP_FLAG_SEEN | IMAP_FLAG_ANSWERED | IMAP_FLAG_FLAGGED | \
		      IMAP_FLAG_DELETED | IMAP_FLAG_DRAFT)

struct mstore_append {
	struct mstore *store;
	int64_t folder_id;
	char dir[PATH_MAX];
	char base[MSTORE_FNAME_MAX];
	char tmp_path[PATH_MAX];
	char cur_path[PATH_MAX];  /* after the rename at commit */
	int fd;
	uint64_t announced, received, written;
	uint64_t lfs;             /* stored LFs not after a CR: FETCH adds a CR */
	bool pending_cr, failed;
	bool last_cr;             /* the last byte stored was a CR */
	uint32_t flags;
	char *keywords;
	int64_t internaldate;
	size_t buf_len;
	char buf[APPEND_BUF];
};

static int quota_check(struct mstore *store, uint64_t bytes, uint64_t messages)
{
	uint64_t used_bytes, used_msgs;
	if (store->set.quota_bytes == 0 && store->set.quota_messages == 0)
		return 0;
	if (maildir_quota_usage(store->root, &used_bytes, &used_msgs) < 0) {
		log_error("mstore: %s: quota usage: %s", store->root, strerror(errno));
		return 0;   /* do not refuse mail because the quota file is bad */
	}
	if ((store->set.quota_bytes != 0 && used_bytes + bytes > store->set.quota_bytes) ||
	    (store->set.quota_messages != 0 && used_msgs + messages > store->set.quota_messages)) {
		mstore_set_error(store, MSTORE_ERR_OVERQUOTA, "Quota exceeded");
		return -1;
	}
	return 0;
}

int mstore_append_begin(struct mstore *store, const char *name, uint64_t size,
			struct mstore_append **append_r)
{
	struct mstore_frow row;

	if (store->txn_depth == 0 && mstore_check_corrupt(store) < 0)
		return -1;
	if (mstore_folder_find(store, name, &row) <= 0)
		return -1;
	if (quota_check(store, size, 1) < 0)
		return -1;
	struct mstore_append *a = calloc(1, sizeof(*a));
	if (a == NULL) {
		mstore_set_error(store, MSTORE_ERR_INTERNAL, "Out of memory");
		return -1;
	}
	a->store = store;
	a->folder_id = row.id;
	a->announced = size;
	a->fd = -1;
	memcpy(a->dir, row.dir, sizeof(a->dir));
	mstore_new_base(store, a->base, sizeof(a->base));
	mstore_path(a->tmp_path, sizeof(a->tmp_path), "%s/tmp/%s", a->dir, a->base);
	for (int attempt = 0; attempt < 2; attempt++) {
		a->fd = open(a->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
			     0600);
		if (a->fd >= 0 || errno != ENOENT)
			break;
		const char *err;
		if (maildir_create(a->dir, &err) < 0)
			break;
	}
	if (a->fd < 0) {
		log_error("mstore: create %s: %s", a->tmp_path, strerror(errno));
		mstore_set_error(store, errno == ENOSPC || errno == EDQUOT ?
				 MSTORE_ERR_OVERQUOTA : MSTORE_ERR_INTERNAL,
				 "Cannot store the message");
		free(a);
		return -1;
	}
	*append_r = a;
	return 0;
}

static int append_flush(struct mstore_append *a)
{
	if (a->buf_len == 0)
		return 0;
	if (write_full(a->fd, a->buf, a->buf_len) < 0) {
		log_error("mstore: write %s: %s", a->tmp_path, strerror(errno));
		mstore_set_error(a->store, errno == ENOSPC || errno == EDQUOT ?
				 MSTORE_ERR_OVERQUOTA : MSTORE_ERR_INTERNAL,
				 "Cannot store the message");
		a->failed = true;
		return -1;
	}
	a->written += a->buf_len;
	a->buf_len = 0;
	return 0;
}

static inline int append_byte(struct mstore_append *a, char c)
{
	if (a->buf_len == sizeof(a->buf) && append_flush(a) < 0)
		return -1;
	a->buf[a->buf_len++] = c;
	if (c == '\n' && !a->last_cr)
		a->lfs++;
	a->last_cr = c == '\r';
	return 0;
}

int mstore_append_write(struct mstore_append *a, const char *data, size_t len)
{
	if (a->failed)
		return -1;
	if (len > a->announced - a->received) {
		mstore_set_error(a->store, MSTORE_ERR_LIMIT, "More data than announced");
		a->failed = true;
		return -1;
	}
	a->received += len;
	/* CRLF -> LF, except after a stored CR: "\r\r\n" stays as it is,
	 * since "\r\n" in the file reads back (FETCH, RETR: a LF after a CR
	 * is sent as is) as one CRLF, and the CR would be lost. */
	for (size_t i = 0; i < len; i++) {
		char c = data[i];
		if (a->pending_cr) {
			/* a CR at the end of the previous chunk */
			a->pending_cr = false;
			if ((c != '\n' || a->last_cr) && append_byte(a, '\r') < 0)
				return -1;
		}
		if (c == '\r') {
			if (i + 1 == len) {
				a->pending_cr = true;
				continue;
			}
			if (data[i + 1] == '\n' && !a->last_cr)
				continue;   /* CRLF -> LF */
		}
		if (append_byte(a, c) < 0)
			return -1;
	}
	return 0;
}

void mstore_append_set(struct mstore_append *a, uint32_t flags, const char *keywords,
		       int64_t internaldate)
{
	a->flags = flags & SYSTEM_FLAGS;
	free(a->keywords);
	a->keywords = NULL;
	if (keywords != NULL && keywords[0] != '\0') {
		/* normalised: single spaces, no duplicates */
		char kw[MSTORE_KEYWORDS_MAX + 1];
		size_t len = 0;
		kw[0] = '\0';
		for (const char *p = keywords; *p != '\0';) {
			while (*p == ' ')
				p++;
			size_t n = strcspn(p, " ");
			if (n == 0)
				break;
			if (!mstore_kw_has(kw, p, n) && len + n + 2 <= sizeof(kw)) {
				if (len > 0)
					kw[len++] = ' ';
				memcpy(kw + len, p, n);
				len += n;
				kw[len] = '\0';
			}
			p += n;
		}
		if (len > 0)
			a->keywords = strdup(kw);
	}
	a->internaldate = internaldate;
}

void mstore_append_abort(struct mstore_append **ap)
{
	struct mstore_append *a = *ap;
	if (a == NULL)
		return;
	*ap = NULL;
	if (a->fd >= 0) {
		close(a->fd);
		unlink(a->tmp_path);
	}
	free(a->keywords);
	free(a);
}

/* Makes the tmp file complete and durable. */
static int append_finish(struct mstore_append *a)
{
	if (a->failed)
		return -1;
	if (a->pending_cr) {
		a->pending_cr = false;
		if (append_byte(a, '\r') < 0)
			return -1;
	}
	if (append_flush(a) < 0)
		return -1;
	if (a->internaldate == 0)
		a->internaldate = (int64_t)time(NULL);
	/* the file's mtime is the INTERNALDATE a rebuilt index finds */
	struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT },
				  { .tv_sec = (time_t)a->internaldate } };
	(void)futimens(a->fd, ts);
	if (fdatasync(a->fd) < 0 || close(a->fd) < 0) {
		a->fd = -1;
		log_error("mstore: sync %s: %s", a->tmp_path, strerror(errno));
		mstore_set_error(a->store, MSTORE_ERR_INTERNAL, "Cannot store the message");
		a->failed = true;
		return -1;
	}
	a->fd = -1;
	return 0;
}

int mstore_append_commit(struct mstore_append **appends, unsigned n, uint32_t *uids_r,
			 uint32_t *uidvalidity_r)
{
	struct mstore *store = n > 0 && appends[0] != NULL ? appends[0]->store : NULL;
	struct mstore_frow row;
	char curdir[PATH_MAX];
	uint64_t total = 0;
	unsigned renamed = 0;
	bool ok = false, in_txn = false;

	if (store == NULL)
		goto free_all;
	for (unsigned i = 0; i < n; i++) {
		if (appends[i] == NULL || appends[i]->store != store ||
		    appends[i]->folder_id != appends[0]->folder_id) {
			mstore_set_error(store, MSTORE_ERR_INTERNAL, "Bad MULTIAPPEND");
			goto fail;
		}
		if (append_finish(appends[i]) < 0)
			goto fail;
		total += appends[i]->written;
	}
	/* mstore_append_begin checked each message alone; a MULTIAPPEND
	 * must fit as a whole (one message was checked with its size). */
	if (n > 1 && quota_check(store, total, n) < 0)
		goto fail;
	if (mstore_txn_begin(store) < 0)
		goto fail;
	in_txn = true;
	int r = mstore_frow_by_id(store, appends[0]->folder_id, &row);
	if (r <= 0) {
		if (r == 0)
			mstore_set_error(store, MSTORE_ERR_NONEXISTENT, "Mailbox was deleted");
		goto fail;
	}
	mstore_path(curdir, sizeof(curdir), "%s/cur", row.dir);
	mstore_touch(store, row.id, curdir, row.cur_mtime_ns);
	for (unsigned i = 0; i < n; i++) {
		struct mstore_append *a = appends[i];
		char name[MSTORE_FNAME_MAX];
		if (row.uidnext == UINT32_MAX) {
			mstore_set_error(store, MSTORE_ERR_LIMIT, "UIDs exhausted");
			goto fail;
		}
		uids_r[i] = row.uidnext++;
		if (mstore_fname_make(name, sizeof(name), a->base, strlen(a->base), uids_r[i],
				      a->flags, 0) < 0)
			goto fail;
		mstore_path(a->cur_path, sizeof(a->cur_path), "%s/%s", curdir, name);
		if (mstore_rename_noreplace(a->tmp_path, a->cur_path) < 0) {
			log_error("mstore: rename %s: %s", a->tmp_path, strerror(errno));
			mstore_set_error(store, MSTORE_ERR_INTERNAL, "Cannot store the message");
			goto fail;
		}
		renamed++;
	}
	if (fsync_dir(curdir) < 0) {
		log_error("mstore: fsync %s: %s", curdir, strerror(errno));
		mstore_set_error(store, MSTORE_ERR_INTERNAL, "Cannot store the message");
		goto fail;
	}
	for (unsigned i = 0; i < n; i++) {
		struct mstore_append *a = appends[i];
		sqlite3_stmt *st = mstore_stmt(store, ST_MSG_INSERT);
		if (st == NULL)
			goto fail;
		sqlite3_bind_int64(st, 1, row.id);
		sqlite3_bind_int64(st, 2, uids_r[i]);
		sqlite3_bind_text(st, 3, a->base, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, a->flags);
		sqlite3_bind_int64(st, 5, 0);
		if (a->keywords != NULL)
			sqlite3_bind_text(st, 6, a->keywords, -1, SQLITE_STATIC);
		else
			sqlite3_bind_null(st, 6);
		sqlite3_bind_int64(st, 7, (int64_t)++row.highestmodseq);
		sqlite3_bind_int64(st, 8, a->internaldate);
		sqlite3_bind_int64(st, 9, (int64_t)a->written);
		/* RFC822.SIZE: what FETCH sends (a CR added before each LF
		 * that does not follow a CR) */
		sqlite3_bind_int64(st, 10, (int64_t)(a->written + a->lfs));
		if (mstore_step_done(store, st, "append") < 0)
			goto fail;
		if (a->keywords != NULL &&
		    mstore_folder_add_keywords(store, row.id, a->keywords) < 0)
			goto fail;
	}
	if (mstore_frow_save(store, &row) < 0)
		goto fail;
	in_txn = false;
	if (mstore_txn_end(store, true) < 0)
		goto fail;
	ok = true;
	(void)mstore_uidv_write(row.dir, row.uidvalidity, row.uidnext);
	*uidvalidity_r = row.uidvalidity;
	(void)maildir_quota_add(store->root, (int64_t)total, (int64_t)n);
	goto free_all;
fail:
	for (unsigned i = 0; i < renamed; i++)
		unlink(appends[i]->cur_path);
	if (in_txn)
		(void)mstore_txn_end(store, false);
free_all:
	for (unsigned i = 0; i < n; i++) {
		if (appends[i] != NULL && appends[i]->fd < 0 && i >= renamed)
			unlink(appends[i]->tmp_path);
		mstore_append_abort(&appends[i]);
	}
	return ok ? 0 : -1;
}
