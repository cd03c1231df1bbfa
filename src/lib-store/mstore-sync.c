/*
 * mstore-sync.c — keeps a folder's index rows in step with its Maildir
 * directory: files delivered into new/ get a UID and move to
 * cur/<base>,U=<uid>:2,<flags>; when cur/'s mtime changed (another tool
 * renamed or deleted files), cur/ is read in full and reconciled: flag
 * changes, unknown files (new UIDs) and vanished files (expunged). Also the
 * file-name grammar and the postern-uidvalidity file.
 *
 * Run by imapd inside an index write transaction (mstore.c), so Postern
 * processes never race each other here; other tools may, and a readdir()
 * that raced with one is repeated (cur/ mtime checked around it).
 * Maildir: https://cr.yp.to/proto/maildir.html; flags S R F T D (and
 * others kept as letters) after ":2,".
 *
 * The cur/ mtime is compared in nanoseconds. On Linux >= 6.13 a change
 * after we stat()ed the directory always gets a newer timestamp
 * (multigrain timestamps); on older kernels an outside change within the
 * same clock tick as one of ours can go unnoticed until the next one.
 */
#include "mstore-private.h"

#include "lib-imap/imap-search.h"
#include "lib/log.h"
#include "lib/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A directory listing larger than this is refused (memory bound). */
#define SCAN_FILES_MAX (4u * 1024 * 1024)
#define SCAN_RETRIES 3

static uint32_t letter_flag(char c)
{
	switch (c) {
	case 'S': return IMAP_FLAG_SEEN;
	case 'R': return IMAP_FLAG_ANSWERED;
	case 'F': return IMAP_FLAG_FLAGGED;
	case 'T': return IMAP_FLAG_DELETED;
	case 'D': return IMAP_FLAG_DRAFT;
	default: return 0;
	}
}

static int letter_bit(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return 26 + (c - 'a');
	return -1;
}

void mstore_fname_parse(const char *name, struct mstore_fname *f_r)
{
	const char *colon = strrchr(name, ':');
	size_t prefix_len = colon != NULL ? (size_t)(colon - name) : strlen(name);

	f_r->uid = 0;
	f_r->flags = 0;
	f_r->xflags = 0;
	f_r->base_len = prefix_len;
	if (colon != NULL && colon[1] == '2' && colon[2] == ',') {
		for (const char *p = colon + 3; *p != '\0'; p++) {
			uint32_t fl = letter_flag(*p);
			int bit = letter_bit(*p);
			if (fl != 0)
				f_r->flags |= fl;
			else if (bit >= 0)
				f_r->xflags |= 1ull << bit;
		}
	}
	/* ",U=<digits>" ending at ',' or the end of the prefix */
	for (size_t i = 0; i + 3 < prefix_len; i++) {
		if (name[i] != ',' || name[i + 1] != 'U' || name[i + 2] != '=')
			continue;
		size_t j = i + 3;
		uint64_t v = 0;
		while (j < prefix_len && name[j] >= '0' && name[j] <= '9' && v <= UINT32_MAX)
			v = v * 10 + (uint64_t)(name[j++] - '0');
		if (j > i + 3 && (j == prefix_len || name[j] == ',') && v > 0 && v <= UINT32_MAX) {
			f_r->uid = (uint32_t)v;
			f_r->base_len = i;
			return;
		}
	}
}

void mstore_flags_letters(uint32_t flags, uint64_t xflags, char *out, size_t size)
{
	size_t o = 0;
	for (char c = 'A'; c <= 'z' && o + 1 < size; c++) {
		int bit = letter_bit(c);
		if (bit < 0)
			continue;
		uint32_t fl = letter_flag(c);
		if ((fl != 0 && (flags & fl) != 0) || (fl == 0 && (xflags & (1ull << bit)) != 0))
			out[o++] = c;
	}
	out[o] = '\0';
}

int mstore_fname_make(char *out, size_t size, const char *base, size_t base_len, uint32_t uid,
		      uint32_t flags, uint64_t xflags)
{
	char letters[64];
	mstore_flags_letters(flags, xflags, letters, sizeof(letters));
	int n = snprintf(out, size, "%.*s,U=%u:2,%s", (int)base_len, base, uid, letters);
	if (n < 0 || (size_t)n >= size || n > 255) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

int mstore_uidv_write(const char *dir, uint32_t uidvalidity, uint32_t uidnext)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8], line[32];
	snprintf(path, sizeof(path), "%s/%s", dir, MSTORE_UIDV_FILE);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	int len = snprintf(line, sizeof(line), "%u %u\n", uidvalidity, uidnext);
	/* The first write (a new folder) is made durable: a crash must not
	 * lose the UIDVALIDITY the index and clients already use. Later
	 * refreshes of UIDNEXT are not fsync()ed (one per APPEND). */
	bool first = access(path, F_OK) < 0;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || write_full(fd, line, (size_t)len) < 0 || (first && fdatasync(fd) < 0) ||
	    close(fd) < 0 || rename(tmp, path) < 0) {
		log_error("mstore: write %s: %s", path, strerror(errno));
		if (fd >= 0)
			unlink(tmp);
		return -1;
	}
	if (first && fsync_dir(dir) < 0)
		log_warn("mstore: fsync %s: %s", dir, strerror(errno));
	return 0;
}

int mstore_uidv_read(const char *dir, uint32_t *uidvalidity_r, uint32_t *uidnext_r)
{
	char path[PATH_MAX];
	char *data = NULL;
	size_t len;
	uint64_t v, n;

	snprintf(path, sizeof(path), "%s/%s", dir, MSTORE_UIDV_FILE);
	if (read_file(path, 64, &data, &len) < 0)
		return -1;
	size_t sp = strcspn(data, " ");
	size_t end = data[sp] == ' ' ? sp + 1 + strcspn(data + sp + 1, " \n") : sp;
	int ret = -1;
	if (data[sp] == ' ' && strn_to_u64(data, sp, &v) == 0 &&
	    strn_to_u64(data + sp + 1, end - sp - 1, &n) == 0 && v > 0 && v <= UINT32_MAX &&
	    n <= UINT32_MAX) {
		*uidvalidity_r = (uint32_t)v;
		*uidnext_r = (uint32_t)n;
		ret = 0;
	}
	free(data);
	return ret;
}

static int64_t st_mtime_ns(const struct stat *st)
{
	return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* ---- directory listings ---- */

struct listing {
	char *names;          /* NUL-separated */
	size_t names_len, names_cap;
	uint32_t *offs;
	uint32_t count, cap;
};

static void listing_free(struct listing *l)
{
	free(l->names);
	free(l->offs);
	memset(l, 0, sizeof(*l));
}

static int listing_add(struct listing *l, const char *name)
{
	size_t n = strlen(name) + 1;
	if (l->count == l->cap) {
		if (l->cap >= SCAN_FILES_MAX)
			return -1;
		uint32_t cap = l->cap == 0 ? 256 : l->cap * 2;
		uint32_t *o = realloc(l->offs, cap * sizeof(*o));
		if (o == NULL)
			return -1;
		l->offs = o;
		l->cap = cap;
	}
	if (l->names_len + n > l->names_cap) {
		size_t cap = l->names_cap == 0 ? 16384 : l->names_cap * 2;
		if (cap > UINT32_MAX)
			return -1;
		char *p = realloc(l->names, cap);
		if (p == NULL)
			return -1;
		l->names = p;
		l->names_cap = cap;
	}
	memcpy(l->names + l->names_len, name, n);
	l->offs[l->count++] = (uint32_t)l->names_len;
	l->names_len += n;
	return 0;
}

/* Reads the names in dir (not starting with '.'). 0 or -1 with errno. */
static int list_dir(const char *path, struct listing *l)
{
	DIR *dir = opendir(path);
	if (dir == NULL)
		return -1;
	l->count = 0;
	l->names_len = 0;
	int ret = 0;
	for (;;) {
		errno = 0;
		struct dirent *d = readdir(dir);
		if (d == NULL) {
			if (errno != 0)
				ret = -1;
			break;
		}
		if (d->d_name[0] == '.')
			continue;
		if (listing_add(l, d->d_name) < 0) {
			errno = ENOMEM;
			ret = -1;
			break;
		}
	}
	int saved = errno;
	closedir(dir);
	errno = saved;
	return ret;
}

/* ---- base-name hash (FNV-1a, open addressing) ---- */

struct base_hash {
	int32_t *slots;
	uint32_t mask;
};

static uint32_t hash_bytes(const char *s, size_t len)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)s[i]) * 16777619u;
	return h;
}

/* Entries are indexes into bases[]/lens[]. */
struct base_set {
	struct base_hash h;
	const char **bases;
	size_t *lens;
	uint32_t count, cap;
};

static int base_set_init(struct base_set *s, uint32_t cap)
{
	uint32_t size = 64;
	while (size < cap * 2)
		size *= 2;
	s->h.slots = malloc(size * sizeof(int32_t));
	s->bases = malloc(cap * sizeof(*s->bases));
	s->lens = malloc(cap * sizeof(*s->lens));
	if (s->h.slots == NULL || s->bases == NULL || s->lens == NULL)
		return -1;
	memset(s->h.slots, 0xff, size * sizeof(int32_t));
	s->h.mask = size - 1;
	s->count = 0;
	s->cap = cap;
	return 0;
}

static void base_set_free(struct base_set *s)
{
	free(s->h.slots);
	free(s->bases);
	free(s->lens);
}

/* Index of base in the set, or -1. */
static int32_t base_set_find(const struct base_set *s, const char *base, size_t len)
{
	for (uint32_t i = hash_bytes(base, len) & s->h.mask;; i = (i + 1) & s->h.mask) {
		int32_t e = s->h.slots[i];
		if (e < 0)
			return -1;
		if (s->lens[e] == len && memcmp(s->bases[e], base, len) == 0)
			return e;
	}
}

/* Adds base (the pointer must stay valid); returns its index or -1 when
 * full. Duplicates are not added (the existing index is returned). */
static int32_t base_set_add(struct base_set *s, const char *base, size_t len)
{
	uint32_t i = hash_bytes(base, len) & s->h.mask;
	for (;; i = (i + 1) & s->h.mask) {
		int32_t e = s->h.slots[i];
		if (e < 0)
			break;
		if (s->lens[e] == len && memcmp(s->bases[e], base, len) == 0)
			return e;
	}
	if (s->count == s->cap)
		return -1;
	s->bases[s->count] = base;
	s->lens[s->count] = len;
	s->h.slots[i] = (int32_t)s->count;
	return (int32_t)s->count++;
}

/* ---- sync ---- */

struct newfile {
	const char *name;
	struct mstore_fname f;
	int64_t mtime_ns;
	uint64_t size;
};

static int newfile_cmp(const void *a, const void *b)
{
	const struct newfile *x = a, *y = b;
	if (x->mtime_ns != y->mtime_ns)
		return x->mtime_ns < y->mtime_ns ? -1 : 1;
	return strcmp(x->name, y->name);
}

static int newfile_uid_cmp(const void *a, const void *b)
{
	const struct newfile *x = a, *y = b;
	if (x->f.uid != y->f.uid)
		return x->f.uid < y->f.uid ? -1 : 1;
	return newfile_cmp(a, b);
}

static int insert_msg(struct mstore *store, struct mstore_frow *row, uint32_t uid,
		      const char *base, size_t base_len, const struct newfile *nf)
{
	sqlite3_stmt *st = mstore_stmt(store, ST_MSG_INSERT);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, row->id);
	sqlite3_bind_int64(st, 2, uid);
	sqlite3_bind_text(st, 3, base, (int)base_len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, nf->f.flags);
	sqlite3_bind_int64(st, 5, (int64_t)nf->f.xflags);
	sqlite3_bind_null(st, 6);
	sqlite3_bind_int64(st, 7, (int64_t)++row->highestmodseq);
	sqlite3_bind_int64(st, 8, nf->mtime_ns / 1000000000);
	sqlite3_bind_int64(st, 9, (int64_t)nf->size);
	sqlite3_bind_int64(st, 10, 0);
	return mstore_step_done(store, st, "insert msg");
}

static int base_in_index(struct mstore *store, int64_t folder_id, const char *base, size_t len)
{
	sqlite3_stmt *st = mstore_stmt(store, ST_MSG_BASE_EXISTS);
	if (st == NULL)
		return -1;
	sqlite3_bind_int64(st, 1, folder_id);
	sqlite3_bind_text(st, 2, base, (int)len, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	mstore_db_error(store, rc, "find base");
	return -1;
}

/*
 * Gives files new UIDs (or, in a rebuild, the UIDs in their names when
 * those are unique) and moves them to their canonical name in cur/ (from
 * srcdir: cur/ or new/). bases (may be NULL) holds the bases in use in the
 * folder; without it the index is asked.
 */
static int add_files(struct mstore *store, struct mstore_frow *row, const char *srcdir,
		     const char *curdir, struct newfile *files, uint32_t n, bool rebuild,
		     struct base_set *bases, bool *changed)
{
	char src[PATH_MAX], dst[PATH_MAX], fname[MSTORE_FNAME_MAX], newbase[MSTORE_FNAME_MAX];
	uint32_t accepted_max = 0;

	if (rebuild) {
		/* Unique UIDs from names are kept; duplicates and missing ones
		 * get fresh UIDs above all of them. */
		qsort(files, n, sizeof(*files), newfile_uid_cmp);
		uint32_t prev = 0;
		for (uint32_t i = 0; i < n; i++) {
			if (files[i].f.uid == 0 || files[i].f.uid == prev) {
				files[i].f.uid = 0;
				continue;
			}
			prev = files[i].f.uid;
			accepted_max = prev;
		}
		if (accepted_max != 0 && row->uidnext <= accepted_max)
			row->uidnext = accepted_max == UINT32_MAX ? UINT32_MAX : accepted_max + 1;
	} else {
		qsort(files, n, sizeof(*files), newfile_cmp);
		for (uint32_t i = 0; i < n; i++)
			files[i].f.uid = 0;
	}
	for (uint32_t pass = 0; pass < 2; pass++) {
		/* pass 0: files keeping their UID; pass 1: new UIDs, in order */
		for (uint32_t i = 0; i < n; i++) {
			struct newfile *nf = &files[i];
			if ((pass == 0) != (nf->f.uid != 0))
				continue;
			const char *base = nf->name;
			size_t base_len = nf->f.base_len;
			int dup = 0;
			if (base_len == 0 || base_len > MSTORE_BASE_MAX)
				dup = 1;
			else if (bases != NULL)
				dup = base_set_find(bases, base, base_len) >= 0;
			else if ((dup = base_in_index(store, row->id, base, base_len)) < 0)
				return -1;
			if (dup) {
				mstore_new_base(store, newbase, sizeof(newbase));
				base = newbase;
				base_len = strlen(newbase);
			}
			uint32_t uid = nf->f.uid;
			if (uid == 0) {
				if (row->uidnext == UINT32_MAX) {
					log_error("mstore: %s: UIDs exhausted", row->dir);
					mstore_set_error(store, MSTORE_ERR_LIMIT, "UIDs exhausted");
					return -1;
				}
				uid = row->uidnext++;
			}
			if (mstore_fname_make(fname, sizeof(fname), base, base_len, uid,
					      nf->f.flags, nf->f.xflags) < 0)
				continue;
			snprintf(src, sizeof(src), "%s/%s", srcdir, nf->name);
			snprintf(dst, sizeof(dst), "%s/%s", curdir, fname);
			if (strcmp(src, dst) != 0) {
				mstore_touch(store, row->id, curdir, row->cur_mtime_ns);
				/* RENAME_NOREPLACE: never overwrite another message */
				if (mstore_rename_noreplace(src, dst) < 0) {
					if (errno != ENOENT && errno != EEXIST)
						log_error("mstore: rename %s: %s", src,
							  strerror(errno));
					continue;
				}
			}
			if (insert_msg(store, row, uid, base, base_len, nf) < 0)
				return -1;
			if (bases != NULL && base != newbase)
				(void)base_set_add(bases, base, base_len);
			*changed = true;
		}
	}
	return 0;
}

/* Stats listed files into nf[] (skipping what is not a regular file). */
static uint32_t stat_files(const char *dirpath, struct listing *l, const uint32_t *which,
			   uint32_t n, struct newfile *nf)
{
	int dfd = open(dirpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	uint32_t out = 0;
	if (dfd < 0)
		return 0;
	for (uint32_t i = 0; i < n; i++) {
		const char *name = l->names + l->offs[which != NULL ? which[i] : i];
		struct stat st;
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		nf[out].name = name;
		mstore_fname_parse(name, &nf[out].f);
		nf[out].mtime_ns = st_mtime_ns(&st);
		nf[out].size = (uint64_t)st.st_size;
		out++;
	}
	close(dfd);
	return out;
}

struct scan_row {
	uint32_t uid;
	uint32_t flags;
	uint64_t xflags;
	bool seen;
};

/* Reads cur/ in full and reconciles it with the index. *mtime_r: cur/'s
 * mtime before the listing that was used. */
static int scan_cur(struct mstore *store, struct mstore_frow *row, const char *curdir,
		    bool rebuild, int64_t *mtime_r, bool *changed)
{
	struct listing l = { 0 };
	struct base_set set = { 0 };
	struct scan_row *rows = NULL;
	char *arena = NULL;
	uint32_t *unknown = NULL;
	struct newfile *nf = NULL;
	uint32_t nrows = 0, rows_cap = 0, nunknown = 0;
	size_t arena_len = 0, arena_cap = 0;
	int ret = -1;

	for (unsigned attempt = 0;; attempt++) {
		struct stat st1, st2;
		if (stat(curdir, &st1) < 0 || list_dir(curdir, &l) < 0 ||
		    stat(curdir, &st2) < 0) {
			log_error("mstore: read %s: %s", curdir, strerror(errno));
			mstore_set_error(store, errno == ENOENT ? MSTORE_ERR_NONEXISTENT :
					 MSTORE_ERR_INTERNAL, "Cannot read the mailbox");
			goto out;
		}
		*mtime_r = st_mtime_ns(&st1);
		/* Changed while we read it: a rename might have been missed. */
		if (st_mtime_ns(&st1) == st_mtime_ns(&st2))
			break;
		if (attempt + 1 == SCAN_RETRIES) {
			*mtime_r = -1;   /* scan again next time */
			break;
		}
	}
	row->cur_mtime_ns = *mtime_r;

	/* The index's rows: uid, base (in one arena), flags. */
	sqlite3_stmt *st = mstore_stmt(store, ST_MSG_SCAN);
	if (st == NULL)
		goto out;
	sqlite3_bind_int64(st, 1, row->id);
	int rc;
	uint32_t *base_off = NULL;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *b = (const char *)sqlite3_column_text(st, 1);
		size_t blen = (size_t)sqlite3_column_bytes(st, 1);
		if (nrows == rows_cap) {
			uint32_t cap = rows_cap == 0 ? 1024 : rows_cap * 2;
			struct scan_row *r = realloc(rows, cap * sizeof(*r));
			uint32_t *o = r == NULL ? NULL : realloc(base_off, cap * sizeof(*o));
			if (r != NULL)
				rows = r;
			if (o == NULL) {
				free(base_off);
				sqlite3_reset(st);
				goto nomem;
			}
			base_off = o;
			rows_cap = cap;
		}
		if (arena_len + blen + 1 > arena_cap) {
			size_t cap = arena_cap == 0 ? 65536 : arena_cap * 2;
			while (cap < arena_len + blen + 1)
				cap *= 2;
			char *a = realloc(arena, cap);
			if (a == NULL) {
				free(base_off);
				sqlite3_reset(st);
				goto nomem;
			}
			arena = a;
			arena_cap = cap;
		}
		memcpy(arena + arena_len, b != NULL ? b : "", blen);
		arena[arena_len + blen] = '\0';
		base_off[nrows] = (uint32_t)arena_len;
		arena_len += blen + 1;
		rows[nrows].uid = (uint32_t)sqlite3_column_int64(st, 0);
		rows[nrows].flags = (uint32_t)sqlite3_column_int64(st, 2);
		rows[nrows].xflags = (uint64_t)sqlite3_column_int64(st, 3);
		rows[nrows].seen = false;
		nrows++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		free(base_off);
		mstore_db_error(store, rc, "scan msg");
		goto out;
	}
	if (base_set_init(&set, nrows + l.count + 1) < 0) {
		free(base_off);
		goto nomem;
	}
	for (uint32_t i = 0; i < nrows; i++)
		(void)base_set_add(&set, arena + base_off[i], strlen(arena + base_off[i]));
	free(base_off);
	/* set index i == rows[i] for i < nrows (bases are unique per folder;
	 * a duplicate base in the index maps to its first row) */

	unknown = malloc((l.count + 1) * sizeof(*unknown));
	if (unknown == NULL)
		goto nomem;
	for (uint32_t i = 0; i < l.count; i++) {
		const char *name = l.names + l.offs[i];
		struct mstore_fname f;
		mstore_fname_parse(name, &f);
		int32_t e = base_set_find(&set, name, f.base_len);
		if (e < 0 || (uint32_t)e >= nrows || rows[e].seen) {
			unknown[nunknown++] = i;
			continue;
		}
		struct scan_row *r = &rows[e];
		r->seen = true;
		if (f.flags != r->flags || f.xflags != r->xflags) {
			/* another tool changed the flags in the name */
			st = mstore_stmt(store, ST_MSG_SET_SYSFLAGS);
			if (st == NULL)
				goto out;
			sqlite3_bind_int64(st, 1, row->id);
			sqlite3_bind_int64(st, 2, r->uid);
			sqlite3_bind_int64(st, 3, f.flags);
			sqlite3_bind_int64(st, 4, (int64_t)f.xflags);
			sqlite3_bind_int64(st, 5, (int64_t)++row->highestmodseq);
			if (mstore_step_done(store, st, "update flags") < 0)
				goto out;
			*changed = true;
		}
		char canon[MSTORE_FNAME_MAX];
		if (mstore_fname_make(canon, sizeof(canon), name, f.base_len, r->uid, f.flags,
				      f.xflags) == 0 && strcmp(canon, name) != 0) {
			char src[PATH_MAX], dst[PATH_MAX];
			mstore_path(src, sizeof(src), "%s/%s", curdir, name);
			mstore_path(dst, sizeof(dst), "%s/%s", curdir, canon);
			mstore_touch(store, row->id, curdir, row->cur_mtime_ns);
			if (mstore_rename_noreplace(src, dst) < 0)
				log_warn("mstore: rename %s: %s", src, strerror(errno));
		}
	}
	/* Rows without a file: deleted by another tool. */
	for (uint32_t i = 0; i < nrows; i++) {
		if (rows[i].seen)
			continue;
		if (mstore_msg_expunge(store, row, rows[i].uid) < 0)
			goto out;
		*changed = true;
	}
	if (nunknown > 0) {
		nf = malloc(nunknown * sizeof(*nf));
		if (nf == NULL)
			goto nomem;
		uint32_t n = stat_files(curdir, &l, unknown, nunknown, nf);
		if (add_files(store, row, curdir, curdir, nf, n, rebuild, &set, changed) < 0)
			goto out;
	}
	ret = 0;
	goto out;
nomem:
	log_error("mstore: %s: out of memory scanning", curdir);
	mstore_set_error(store, MSTORE_ERR_INTERNAL, "Out of memory");
out:
	listing_free(&l);
	base_set_free(&set);
	free(rows);
	free(arena);
	free(unknown);
	free(nf);
	return ret;
}

/* Moves what is in new/ to cur/ with new UIDs. */
static int sync_new(struct mstore *store, struct mstore_frow *row, const char *newdir,
		    const char *curdir, bool *changed)
{
	struct listing l = { 0 };
	struct newfile *nf = NULL;
	int ret = -1;

	if (list_dir(newdir, &l) < 0) {
		if (errno == ENOENT) {
			/* new/ removed by someone: make it again */
			if (mkdir(newdir, 0700) < 0 && errno != EEXIST)
				log_error("mstore: mkdir %s: %s", newdir, strerror(errno));
			return 0;
		}
		log_error("mstore: read %s: %s", newdir, strerror(errno));
		mstore_set_error(store, MSTORE_ERR_INTERNAL, "Cannot read the mailbox");
		return -1;
	}
	if (l.count == 0) {
		ret = 0;
		goto out;
	}
	nf = malloc(l.count * sizeof(*nf));
	if (nf == NULL) {
		mstore_set_error(store, MSTORE_ERR_INTERNAL, "Out of memory");
		goto out;
	}
	uint32_t n = stat_files(newdir, &l, NULL, l.count, nf);
	ret = add_files(store, row, newdir, curdir, nf, n, false, NULL, changed);
out:
	listing_free(&l);
	free(nf);
	return ret;
}

int mstore_folder_sync(struct mstore *store, struct mstore_frow *row, bool force_scan,
		       bool rebuild, bool *changed_r)
{
	char curdir[PATH_MAX], newdir[PATH_MAX];
	struct stat st;
	bool changed = false;
	uint32_t uidnext_before;

	int r = mstore_frow_by_id(store, row->id, row);
	if (r <= 0) {
		if (r == 0)
			mstore_set_error(store, MSTORE_ERR_NONEXISTENT, "Mailbox does not exist");
		return -1;
	}
	uidnext_before = row->uidnext;
	int64_t mtime_before = row->cur_mtime_ns;
	mstore_path(curdir, sizeof(curdir), "%s/cur", row->dir);
	mstore_path(newdir, sizeof(newdir), "%s/new", row->dir);
	if (stat(curdir, &st) < 0) {
		log_error("mstore: stat %s: %s", curdir, strerror(errno));
		mstore_set_error(store, errno == ENOENT ? MSTORE_ERR_NONEXISTENT :
				 MSTORE_ERR_INTERNAL, "Cannot read the mailbox");
		return -1;
	}
	if (force_scan || rebuild || st_mtime_ns(&st) != row->cur_mtime_ns) {
		int64_t m0;
		if (scan_cur(store, row, curdir, rebuild, &m0, &changed) < 0)
			return -1;
		/* after a rebuild, what was in cur/ is not \Recent any more */
		if (rebuild)
			row->first_recent_uid = row->uidnext;
	}
	if (sync_new(store, row, newdir, curdir, &changed) < 0)
		return -1;
	if (row->uidnext != uidnext_before || rebuild)
		(void)mstore_uidv_write(row->dir, row->uidvalidity, row->uidnext);
	if (changed_r != NULL)
		*changed_r = changed;
	if (!changed && !rebuild && row->cur_mtime_ns == mtime_before)
		return 0;
	return mstore_frow_save(store, row);
}

int mstore_folder_sync_needed(struct mstore *store, const struct mstore_frow *row)
{
	char path[PATH_MAX];
	struct stat st;

	mstore_path(path, sizeof(path), "%s/cur", row->dir);
	if (stat(path, &st) < 0 || st_mtime_ns(&st) != row->cur_mtime_ns)
		return 1;
	mstore_path(path, sizeof(path), "%s/new", row->dir);
	DIR *dir = opendir(path);
	if (dir == NULL)
		return 1;
	int ret = 0;
	struct dirent *d;
	while ((d = readdir(dir)) != NULL) {
		if (d->d_name[0] != '.') {
			ret = 1;
			break;
		}
	}
	closedir(dir);
	return ret;
}
