/*
 * mstore-folder.c — an account's folders: LIST (with folders other tools
 * made or removed on disk), CREATE, DELETE, RENAME, SUBSCRIBE, STATUS and
 * the quota (RFC 9051 6.3, RFC 6154 SPECIAL-USE, RFC 8438 STATUS SIZE,
 * RFC 9208 QUOTA).
 *
 * Run by imapd. Each folder is a Maildir++ directory root/.<mUTF-7 name>
 * (flat: "a.b" is root/.a.b, a child of "a"); INBOX is root itself.
 */
#include "mstore-private.h"

#include "lib-store/maildir.h"
#include "lib-store/quota.h"
#include "lib/log.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Folders in one LIST (memory bound). */
#define FOLDER_LIST_MAX 100000

static bool dir_has_cur(const char *dir)
{
	char path[PATH_MAX];
	struct stat st;
	if (snprintf(path, sizeof(path), "%s/cur", dir) >= (int)sizeof(path))
		return false;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int exec_fmt(struct mstore *store, const char *fmt, int64_t id)
	__attribute__((format(printf, 2, 0)));

/* Rare operations (delete, rename): a statement with one integer. */
static int exec_fmt(struct mstore *store, const char *fmt, int64_t id)
{
	char sql[256];
	snprintf(sql, sizeof(sql), fmt, (long long)id);
	int rc = sqlite3_exec(store->db, sql, NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		mstore_db_error(store, rc, sql);
		return -1;
	}
	return 0;
}

static int delete_rows(struct mstore *store, int64_t id)
{
	store->fcache_valid = false;
	if (exec_fmt(store, "DELETE FROM msg WHERE folder=%lld", id) < 0 ||
	    exec_fmt(store, "DELETE FROM expunged WHERE folder=%lld", id) < 0 ||
	    exec_fmt(store, "DELETE FROM folder WHERE id=%lld", id) < 0)
		return -1;
	char sql[128];
	snprintf(sql, sizeof(sql), "DELETE FROM cache WHERE id BETWEEN %lld AND %lld",
		 (long long)mstore_cache_key(id, 0), (long long)mstore_cache_key(id, UINT32_MAX));
	int rc = sqlite3_exec(store->db, sql, NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		mstore_db_error(store, rc, sql);
		return -1;
	}
	return 0;
}

int mstore_folder_find(struct mstore *store, const char *name, struct mstore_frow *row_r)
{
	char norm[MSTORE_NAME_MAX + 1];
	if (mstore_name_normalize(store, name, norm, sizeof(norm)) < 0) {
		mstore_set_error(store, MSTORE_ERR_NONEXISTENT, "Mailbox does not exist");
		return 0;
	}
	int r = mstore_frow_by_name(store, norm, row_r);
	if (r < 0)
		return -1;
	bool on_disk;
	if (r > 0) {
		on_disk = strcmp(norm, "INBOX") == 0 || dir_has_cur(row_r->dir);
		if (on_disk)
			return 1;
		/* Removed by another tool: forget it. But look again under
		 * the write lock first: another process renaming or deleting
		 * it does its rename(2) before its COMMIT, and the row read
		 * above may be another folder's by now (RENAME A B: the id
		 * is B's). Postern processes change folder directories only
		 * while holding the lock, so row and disk now agree. */
		if (mstore_txn_begin(store) < 0)
			return -1;
		r = mstore_frow_by_name(store, norm, row_r);
		on_disk = r > 0 && dir_has_cur(row_r->dir);
		bool ok = r >= 0 && (r == 0 || on_disk || delete_rows(store, row_r->id) == 0);
		if (mstore_txn_end(store, ok) < 0 || !ok)
			return -1;
		if (on_disk)
			return 1;
	} else {
		char dir[PATH_MAX];
		if (mstore_folder_dir(store, norm, dir, sizeof(dir)) == 0 && dir_has_cur(dir)) {
			/* Made by another tool: adopt it. */
			if (mstore_txn_begin(store) < 0)
				return -1;
			r = mstore_frow_by_name(store, norm, row_r);
			if (r == 0 && dir_has_cur(dir))
				r = mstore_frow_insert(store, norm, 0, row_r) < 0 ? -1 : 1;
			if (mstore_txn_end(store, r > 0) < 0 || r < 0)
				return -1;
			if (r > 0)
				return 1;
		}
	}
	mstore_set_error(store, MSTORE_ERR_NONEXISTENT, "Mailbox does not exist");
	return 0;
}

int mstore_folder_exists(struct mstore *store, const char *name, const char **canonical_r)
{
	struct mstore_frow row;
	if (mstore_check_corrupt(store) < 0)
		return -1;
	int r = mstore_folder_find(store, name, &row);
	if (r > 0 && canonical_r != NULL) {
		snprintf(store->canonical, sizeof(store->canonical), "%s", row.name);
		*canonical_r = store->canonical;
	}
	return r;
}

/* ---- LIST ---- */

struct list_entry {
	char *name;
	unsigned special_use;
	bool exists, subscribed, has_children;
};

struct list_ctx {
	struct list_entry *e;
	size_t count, cap;
};

static int list_add(struct list_ctx *l, const char *name, size_t len, unsigned special,
		    bool exists, bool subscribed)
{
	if (l->count == l->cap) {
		if (l->cap >= FOLDER_LIST_MAX)
			return -1;
		size_t cap = l->cap == 0 ? 32 : l->cap * 2;
		struct list_entry *e = realloc(l->e, cap * sizeof(*e));
		if (e == NULL)
			return -1;
		l->e = e;
		l->cap = cap;
	}
	struct list_entry *e = &l->e[l->count];
	e->name = strndup(name, len);
	if (e->name == NULL)
		return -1;
	e->special_use = special;
	e->exists = exists;
	e->subscribed = subscribed;
	e->has_children = false;
	l->count++;
	return 0;
}

static int list_cmp(const void *a, const void *b)
{
	const struct list_entry *x = a, *y = b;
	bool xi = strcmp(x->name, "INBOX") == 0, yi = strcmp(y->name, "INBOX") == 0;
	if (xi != yi)
		return xi ? -1 : 1;
	int c = strcmp(x->name, y->name);
	if (c != 0)
		return c;
	/* same name: the existing folder first, then subscribed */
	if (x->exists != y->exists)
		return x->exists ? -1 : 1;
	return (int)y->subscribed - (int)x->subscribed;
}

static struct list_entry *list_find(struct list_ctx *l, const char *name, size_t len)
{
	char key[MSTORE_NAME_MAX + 1];
	if (len > MSTORE_NAME_MAX)
		return NULL;
	memcpy(key, name, len);
	key[len] = '\0';
	struct list_entry k = { .name = key, .exists = true, .subscribed = true };
	size_t lo = 0, hi = l->count;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(l->e[mid].name, key) == 0 ? 0 : list_cmp(&l->e[mid], &k);
		if (c == 0)
			return &l->e[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Reconciles the folder table with root's directories (in a txn). */
static int list_discover(struct mstore *store)
{
	DIR *dir = opendir(store->root);
	if (dir == NULL) {
		log_error("mstore: opendir %s: %s", store->root, strerror(errno));
		mstore_set_error(store, MSTORE_ERR_INTERNAL, "Internal error");
		return -1;
	}
	struct dirent *d;
	int ret = 0;
	while (ret == 0 && (d = readdir(dir)) != NULL) {
		struct mstore_frow row;
		char path[PATH_MAX];
		if (d->d_name[0] != '.' || d->d_name[1] == '\0' || d->d_name[1] == '.')
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", store->root, d->d_name) >=
		    (int)sizeof(path) || !dir_has_cur(path))
			continue;
		char *name = mstore_dir_to_name(d->d_name + 1);
		if (name == NULL)
			continue;
		int r = mstore_frow_by_name(store, name, &row);
		if (r == 0)
			r = mstore_frow_insert(store, name, 0, &row);
		if (r < 0)
			ret = -1;
		free(name);
	}
	closedir(dir);
	if (ret < 0)
		return -1;
	/* rows whose directory is gone */
	sqlite3_stmt *st = mstore_stmt(store, ST_FOLDER_LIST);
	if (st == NULL)
		return -1;
	int64_t gone[64];
	unsigned ngone = 0;
	while (sqlite3_step(st) == SQLITE_ROW && ngone < 64) {
		const char *name = (const char *)sqlite3_column_text(st, 1);
		char path[PATH_MAX];
		if (strcmp(name, "INBOX") == 0 ||
		    mstore_folder_dir(store, name, path, sizeof(path)) < 0 || dir_has_cur(path))
			continue;
		gone[ngone++] = sqlite3_column_int64(st, 0);
	}
	sqlite3_reset(st);
	for (unsigned i = 0; i < ngone; i++) {
		if (delete_rows(store, gone[i]) < 0)
			return -1;
	}
	return 0;
}

int mstore_folder_list(struct mstore *store,
		       void (*cb)(const struct mstore_folder *folder, void *ctx), void *ctx)
{
	struct list_ctx l = { 0 };
	int ret = -1;

	if (mstore_check_corrupt(store) < 0)
		return -1;
	if (mstore_txn_begin(store) < 0)
		return -1;
	bool ok = list_discover(store) == 0;
	sqlite3_stmt *st = ok ? mstore_stmt(store, ST_FOLDER_LIST) : NULL;
	while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 1);
		if (list_add(&l, name, strlen(name), (unsigned)sqlite3_column_int(st, 2), true,
			     false) < 0) {
			ok = false;
			break;
		}
	}
	if (st != NULL)
		sqlite3_reset(st);
	st = ok ? mstore_stmt(store, ST_SUB_LIST) : NULL;
	while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 0);
		if (list_add(&l, name, strlen(name), 0, false, true) < 0) {
			ok = false;
			break;
		}
	}
	if (st != NULL)
		sqlite3_reset(st);
	if (mstore_txn_end(store, ok) < 0 || !ok) {
		if (store->err == MSTORE_ERR_NONE)
			mstore_set_error(store, MSTORE_ERR_INTERNAL, "Internal error");
		goto out;
	}
	/* merge a folder with its subscription */
	qsort(l.e, l.count, sizeof(*l.e), list_cmp);
	size_t o = 0;
	for (size_t i = 0; i < l.count; i++) {
		if (o > 0 && strcmp(l.e[o - 1].name, l.e[i].name) == 0) {
			l.e[o - 1].subscribed |= l.e[i].subscribed;
			free(l.e[i].name);
			continue;
		}
		l.e[o++] = l.e[i];
	}
	l.count = o;
	/* implied parents of existing folders (\NonExistent \HasChildren) */
	size_t n = l.count;
	for (size_t i = 0; i < n; i++) {
		if (!l.e[i].exists)
			continue;
		const char *name = l.e[i].name;
		for (const char *p = strchr(name, MSTORE_DELIMITER); p != NULL;
		     p = strchr(p + 1, MSTORE_DELIMITER)) {
			size_t len = (size_t)(p - name);
			bool found = false;
			for (size_t j = n; j < l.count && !found; j++)
				found = strlen(l.e[j].name) == len &&
					memcmp(l.e[j].name, name, len) == 0;
			if (!found) {
				/* list_find needs sorted input: only [0, n) is */
				struct list_ctx sorted = { l.e, n, n };
				found = list_find(&sorted, name, len) != NULL;
			}
			if (!found && list_add(&l, name, len, 0, false, false) < 0) {
				mstore_set_error(store, MSTORE_ERR_INTERNAL, "Out of memory");
				goto out;
			}
		}
	}
	qsort(l.e, l.count, sizeof(*l.e), list_cmp);
	/* every ancestor of an existing folder has children (some of them
	 * may be \NonExistent in between) */
	for (size_t i = 0; i < l.count; i++) {
		const char *name = l.e[i].name;
		if (!l.e[i].exists)
			continue;
		for (const char *p = strchr(name, MSTORE_DELIMITER); p != NULL;
		     p = strchr(p + 1, MSTORE_DELIMITER)) {
			struct list_entry *parent = list_find(&l, name, (size_t)(p - name));
			if (parent != NULL)
				parent->has_children = true;
		}
	}
	for (size_t i = 0; i < l.count; i++) {
		struct mstore_folder f = {
			.name = l.e[i].name,
			.special_use = l.e[i].special_use,
			.subscribed = l.e[i].subscribed,
			.has_children = l.e[i].has_children,
			.nonexistent = !l.e[i].exists,
		};
		cb(&f, ctx);
	}
	ret = 0;
out:
	for (size_t i = 0; i < l.count; i++)
		free(l.e[i].name);
	free(l.e);
	return ret;
}

/* ---- CREATE / DELETE / RENAME / SUBSCRIBE ---- */

/* Creates norm (which does not exist) and its missing parents; in a txn. */
static int create_with_parents(struct mstore *store, const char *norm, unsigned special_use)
{
	char part[MSTORE_NAME_MAX + 1];
	size_t len = strlen(norm);
	for (size_t i = 0; i <= len; i++) {
		if (norm[i] != MSTORE_DELIMITER && norm[i] != '\0')
			continue;
		memcpy(part, norm, i);
		part[i] = '\0';
		struct mstore_frow row;
		int r = mstore_folder_find(store, part, &row);
		if (r < 0)
			return -1;
		if (r > 0)
			continue;
		char dir[PATH_MAX];
		const char *err = NULL;
		if (mstore_folder_dir(store, part, dir, sizeof(dir)) < 0) {
			mstore_set_error(store, MSTORE_ERR_CANNOT, "Invalid mailbox name");
			return -1;
		}
		if (maildir_create(dir, &err) < 0) {
			log_error("mstore: %s", err);
			mstore_set_error(store, errno == ENAMETOOLONG ? MSTORE_ERR_CANNOT :
					 MSTORE_ERR_INTERNAL, "Cannot create the mailbox");
			return -1;
		}
		if (mstore_frow_insert(store, part, i == len ? special_use : 0, NULL) < 0)
			return -1;
	}
	return 0;
}

int mstore_folder_create(struct mstore *store, const char *name, unsigned special_use)
{
	char norm[MSTORE_NAME_MAX + 1];
	struct mstore_frow row;

	if (mstore_check_corrupt(store) < 0 ||
	    mstore_name_normalize(store, name, norm, sizeof(norm)) < 0)
		return -1;
	if (mstore_txn_begin(store) < 0)
		return -1;
	int r = mstore_folder_find(store, norm, &row);
	if (r > 0) {
		mstore_set_error(store, MSTORE_ERR_ALREADYEXISTS, "Mailbox already exists");
		r = -1;
	} else if (r == 0) {
		r = create_with_parents(store, norm, special_use);
	}
	if (mstore_txn_end(store, r == 0) < 0)
		return -1;
	return r;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (remove(path) < 0)
		log_warn("mstore: remove %s: %s", path, strerror(errno));
	return 0;
}

int mstore_folder_delete(struct mstore *store, const char *name)
{
	char norm[MSTORE_NAME_MAX + 1], trash[PATH_MAX];
	struct mstore_frow row;
	int64_t bytes = 0, count = 0;

	if (mstore_check_corrupt(store) < 0 ||
	    mstore_name_normalize(store, name, norm, sizeof(norm)) < 0)
		return -1;
	if (strcmp(norm, "INBOX") == 0) {
		mstore_set_error(store, MSTORE_ERR_CANNOT, "INBOX cannot be deleted");
		return -1;
	}
	if (mstore_txn_begin(store) < 0)
		return -1;
	int r = mstore_folder_find(store, norm, &row);
	if (r <= 0)
		goto fail;
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(store->db, "SELECT total(psize), count(*) FROM msg WHERE folder=?1",
			       -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, row.id);
		if (sqlite3_step(st) == SQLITE_ROW) {
			bytes = (int64_t)sqlite3_column_double(st, 0);
			count = sqlite3_column_int64(st, 1);
		}
	}
	sqlite3_finalize(st);
	/* Out of sight in one rename (the name starts with "..": never a
	 * folder), then removed at leisure. */
	snprintf(trash, sizeof(trash), "%s/..postern-deleted.%lld.%lld", store->root,
		 (long long)row.id, (long long)mstore_now_ns());
	if (rename(row.dir, trash) < 0) {
		log_error("mstore: rename %s: %s", row.dir, strerror(errno));
		mstore_set_error(store, MSTORE_ERR_INTERNAL, "Cannot delete the mailbox");
		goto fail;
	}
	if (delete_rows(store, row.id) < 0 || mstore_txn_end(store, true) < 0) {
		if (rename(trash, row.dir) < 0)
			log_error("mstore: rename back %s: %s", trash, strerror(errno));
		return -1;
	}
	nftw(trash, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	if (count > 0)
		(void)maildir_quota_add(store->root, -bytes, -count);
	return 0;
fail:
	(void)mstore_txn_end(store, false);
	return -1;
}

static bool is_child_of(const char *name, const char *parent)
{
	size_t len = strlen(parent);
	return strncmp(name, parent, len) == 0 && name[len] == MSTORE_DELIMITER;
}

struct rename_item {
	int64_t id;
	char *from, *to;
	char from_dir[PATH_MAX], to_dir[PATH_MAX];
	bool moved;
};

static int rename_sub(struct mstore *store, const char *from, const char *to)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(store->db,
				    "UPDATE OR REPLACE subscription SET name=?2 WHERE name=?1", -1,
				    &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, from, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, to, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		mstore_db_error(store, rc, "rename subscription");
		return -1;
	}
	return 0;
}

static int rename_inbox(struct mstore *store, const char *to)
{
	struct mbox *box = NULL;
	uint32_t *seqs = NULL, *uids = NULL, uidv;
	int ret = -1;

	if (mstore_folder_create(store, to, 0) < 0)
		return -1;
	if (mbox_open(store, "INBOX", false, &box) < 0)
		return -1;
	uint32_t n = mbox_count(box);
	if (n > 0) {
		seqs = malloc(n * sizeof(*seqs));
		uids = malloc(n * sizeof(*uids));
		if (seqs == NULL || uids == NULL) {
			mstore_set_error(store, MSTORE_ERR_INTERNAL, "Out of memory");
			goto out;
		}
		for (uint32_t i = 0; i < n; i++)
			seqs[i] = i + 1;
		if (mbox_copy(box, seqs, n, to, true, uids, &uidv) < 0)
			goto out;
	}
	ret = 0;
out:
	mbox_close(&box);
	free(seqs);
	free(uids);
	return ret;
}

int mstore_folder_rename(struct mstore *store, const char *from, const char *to)
{
	char nfrom[MSTORE_NAME_MAX + 1], nto[MSTORE_NAME_MAX + 1];
	struct rename_item *items = NULL;
	size_t n = 0, cap = 0;
	struct mstore_frow row;
	int r;

	if (mstore_check_corrupt(store) < 0 ||
	    mstore_name_normalize(store, from, nfrom, sizeof(nfrom)) < 0 ||
	    mstore_name_normalize(store, to, nto, sizeof(nto)) < 0)
		return -1;
	if (strcmp(nto, "INBOX") == 0 || strcmp(nfrom, nto) == 0) {
		mstore_set_error(store, MSTORE_ERR_ALREADYEXISTS, "Mailbox already exists");
		return -1;
	}
	if (is_child_of(nto, nfrom)) {
		mstore_set_error(store, MSTORE_ERR_CANNOT, "Cannot move a mailbox into itself");
		return -1;
	}
	if (strcmp(nfrom, "INBOX") == 0) {
		/* RFC 9051 6.3.6: the messages move, INBOX stays (its children
		 * are not renamed). */
		if ((r = mstore_folder_find(store, nto, &row)) != 0) {
			if (r > 0)
				mstore_set_error(store, MSTORE_ERR_ALREADYEXISTS,
						 "Mailbox already exists");
			return -1;
		}
		return rename_inbox(store, nto);
	}
	if (mstore_txn_begin(store) < 0)
		return -1;
	bool ok = false;
	if ((r = mstore_folder_find(store, nfrom, &row)) <= 0)
		goto end;
	if ((r = mstore_folder_find(store, nto, &row)) != 0) {
		if (r > 0)
			mstore_set_error(store, MSTORE_ERR_ALREADYEXISTS, "Mailbox already exists");
		goto end;
	}
	/* the folder and its children */
	sqlite3_stmt *st = mstore_stmt(store, ST_FOLDER_LIST);
	if (st == NULL)
		goto end;
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 1);
		if (strcmp(name, nfrom) != 0 && !is_child_of(name, nfrom))
			continue;
		if (n == cap) {
			cap = cap == 0 ? 8 : cap * 2;
			struct rename_item *it = realloc(items, cap * sizeof(*it));
			if (it == NULL)
				break;
			items = it;
		}
		struct rename_item *it = &items[n];
		memset(it, 0, sizeof(*it));
		it->id = sqlite3_column_int64(st, 0);
		it->from = strdup(name);
		size_t tlen = strlen(nto) + strlen(name) - strlen(nfrom);
		it->to = malloc(tlen + 1);
		if (it->from == NULL || it->to == NULL) {
			free(it->from);
			free(it->to);
			break;
		}
		snprintf(it->to, tlen + 1, "%s%s", nto, name + strlen(nfrom));
		n++;
	}
	sqlite3_reset(st);
	for (size_t i = 0; i < n; i++) {
		struct mstore_frow other;
		if (strlen(items[i].to) > MSTORE_NAME_MAX ||
		    mstore_folder_dir(store, items[i].from, items[i].from_dir, PATH_MAX) < 0 ||
		    mstore_folder_dir(store, items[i].to, items[i].to_dir, PATH_MAX) < 0) {
			mstore_set_error(store, MSTORE_ERR_CANNOT, "Mailbox name too long");
			goto end;
		}
		if ((r = mstore_folder_find(store, items[i].to, &other)) != 0) {
			if (r > 0)
				mstore_set_error(store, MSTORE_ERR_ALREADYEXISTS,
						 "Mailbox already exists");
			goto end;
		}
	}
	store->fcache_valid = false;
	for (size_t i = 0; i < n; i++) {
		struct rename_item *it = &items[i];
		if (rename(it->from_dir, it->to_dir) < 0) {
			log_error("mstore: rename %s: %s", it->from_dir, strerror(errno));
			mstore_set_error(store, MSTORE_ERR_INTERNAL, "Cannot rename the mailbox");
			goto end;
		}
		it->moved = true;
		sqlite3_stmt *u = NULL;
		int rc = sqlite3_prepare_v2(store->db, "UPDATE folder SET name=?2 WHERE id=?1", -1,
					    &u, NULL);
		if (rc == SQLITE_OK) {
			sqlite3_bind_int64(u, 1, it->id);
			sqlite3_bind_text(u, 2, it->to, -1, SQLITE_STATIC);
			rc = sqlite3_step(u);
		}
		sqlite3_finalize(u);
		if (rc != SQLITE_DONE) {
			mstore_db_error(store, rc, "rename folder");
			goto end;
		}
		if (rename_sub(store, it->from, it->to) < 0)
			goto end;
	}
	/* missing parents of the new name */
	const char *dot = strrchr(nto, MSTORE_DELIMITER);
	if (dot != NULL) {
		char parent[MSTORE_NAME_MAX + 1];
		memcpy(parent, nto, (size_t)(dot - nto));
		parent[dot - nto] = '\0';
		if ((r = mstore_folder_find(store, parent, &row)) < 0)
			goto end;
		if (r == 0 && create_with_parents(store, parent, 0) < 0)
			goto end;
	}
	ok = true;
end:
	if (!ok) {
		for (size_t i = n; i-- > 0;) {
			if (items[i].moved && rename(items[i].to_dir, items[i].from_dir) < 0)
				log_error("mstore: rename back %s: %s", items[i].to_dir,
					  strerror(errno));
		}
	}
	for (size_t i = 0; i < n; i++) {
		free(items[i].from);
		free(items[i].to);
	}
	free(items);
	if (mstore_txn_end(store, ok) < 0)
		return -1;
	return ok ? 0 : -1;
}

int mstore_folder_subscribe(struct mstore *store, const char *name, bool subscribe)
{
	char norm[MSTORE_NAME_MAX + 1];
	if (mstore_check_corrupt(store) < 0 ||
	    mstore_name_normalize(store, name, norm, sizeof(norm)) < 0)
		return -1;
	sqlite3_stmt *st = mstore_stmt(store, subscribe ? ST_SUB_ADD : ST_SUB_DEL);
	if (st == NULL)
		return -1;
	sqlite3_bind_text(st, 1, norm, -1, SQLITE_STATIC);
	return mstore_step_done(store, st, "subscribe");
}

/* ---- STATUS, QUOTA ---- */

int mstore_folder_status(struct mstore *store, const char *name, struct mstore_status *st_r)
{
	struct mstore_frow row;

	if (mstore_check_corrupt(store) < 0)
		return -1;
	int r = mstore_folder_find(store, name, &row);
	if (r <= 0)
		return -1;
	if (mstore_folder_sync_needed(store, &row) != 0) {
		if (mstore_txn_begin(store) < 0)
			return -1;
		bool ok = mstore_folder_sync(store, &row, false, false, NULL) == 0;
		if (mstore_txn_end(store, ok) < 0 || !ok)
			return -1;
	}
	/* The counts and the folder row from one snapshot. */
	bool own_txn = store->txn_depth == 0;
	if (own_txn && sqlite3_exec(store->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
		mstore_db_error(store, sqlite3_errcode(store->db), "begin");
		return -1;
	}
	int ret = -1;
	if (mstore_frow_by_id(store, row.id, &row) <= 0)
		goto out;
	sqlite3_stmt *st = mstore_stmt(store, ST_STATUS);
	if (st == NULL)
		goto out;
	sqlite3_bind_int64(st, 1, row.id);
	sqlite3_bind_int64(st, 2, row.first_recent_uid);
	int rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(st);
		mstore_db_error(store, rc, "status");
		goto out;
	}
	memset(st_r, 0, sizeof(*st_r));
	st_r->messages = (uint32_t)sqlite3_column_int64(st, 0);
	st_r->unseen = (uint32_t)sqlite3_column_double(st, 1);
	st_r->deleted = (uint32_t)sqlite3_column_double(st, 2);
	st_r->recent = (uint32_t)sqlite3_column_double(st, 3);
	st_r->size = (uint64_t)sqlite3_column_double(st, 4);
	sqlite3_reset(st);
	st_r->uidnext = row.uidnext;
	st_r->uidvalidity = row.uidvalidity;
	st_r->highestmodseq = row.highestmodseq;
	ret = 0;
out:
	if (own_txn)
		sqlite3_exec(store->db, "COMMIT", NULL, NULL, NULL);
	return ret;
}

int mstore_quota(struct mstore *store, uint64_t *bytes_r, uint64_t *messages_r)
{
	if (maildir_quota_usage(store->root, bytes_r, messages_r) < 0) {
		log_error("mstore: %s: quota usage: %s", store->root, strerror(errno));
		mstore_set_error(store, MSTORE_ERR_INTERNAL, "Cannot read the quota");
		return -1;
	}
	return 0;
}
