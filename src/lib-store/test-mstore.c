/*
 * test-mstore.c — unit tests for the mailbox store (mstore.h) and the
 * Maildir++ quota file (quota.h): default folders, discovery of delivered
 * and outside-changed files, flags, two sessions of one account, APPEND
 * (CRLF, MULTIAPPEND), COPY/MOVE, EXPUNGE, folder operations, index
 * rebuilds, quota. Ends with timings (printed, not asserted) for a
 * 10,000-message INBOX.
 */
#include "lib-store/maildir.h"
#include "lib-store/mstore.h"
#include "lib-store/quota.h"

#include "lib-imap/imap-search.h"
#include "lib-imap/imap-seqset.h"
#include "lib/log.h"
#include "lib/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#pragma GCC diagnostic ignored "-Wunused-parameter"

static char base_dir[256];
static char root[512];
static const struct mstore_settings settings = { .hostname = "test.example" };

static int setup(void **state)
{
	snprintf(base_dir, sizeof(base_dir), "/tmp/postern-test-mstore-XXXXXX");
	if (mkdtemp(base_dir) == NULL)
		return -1;
	snprintf(root, sizeof(root), "%s/mail/example.com/bob", base_dir);
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

static struct mstore *open_store(const struct mstore_settings *set)
{
	struct mstore *store = NULL;
	const char *error = NULL;
	if (mstore_open(root, set != NULL ? set : &settings, &store, &error) < 0)
		fail_msg("mstore_open: %s", error);
	return store;
}

static void pathf(char *out, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void pathf(char *out, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, size, fmt, ap);
	va_end(ap);
	assert_true(n > 0 && (size_t)n < size);
}

static void write_file(const char *path, const char *content)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write_full(fd, content, strlen(content)), 0);
	assert_int_equal(close(fd), 0);
}

/* Delivers like the deliverer (or procmail) does: tmp/, then new/. */
static void deliver(const char *folder_dir, const char *name, const char *content)
{
	char tmp[PATH_MAX], dst[PATH_MAX];
	pathf(tmp, sizeof(tmp), "%s/tmp/%s", folder_dir, name);
	pathf(dst, sizeof(dst), "%s/new/%s", folder_dir, name);
	write_file(tmp, content);
	assert_int_equal(rename(tmp, dst), 0);
}

/* The name of the one file in dir/sub starting with prefix ("" if none). */
static void find_file(const char *dir, const char *sub, const char *prefix, char *out,
		      size_t size)
{
	char path[PATH_MAX];
	pathf(path, sizeof(path), "%s/%s", dir, sub);
	out[0] = '\0';
	DIR *d = opendir(path);
	if (d == NULL)
		return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
			snprintf(out, size, "%s", e->d_name);
			break;
		}
	}
	closedir(d);
}

static unsigned count_files(const char *dir, const char *sub)
{
	char path[PATH_MAX];
	unsigned n = 0;
	pathf(path, sizeof(path), "%s/%s", dir, sub);
	DIR *d = opendir(path);
	if (d == NULL)
		return 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] != '.')
			n++;
	}
	closedir(d);
	return n;
}

static char *read_all(const char *path)
{
	char *data = NULL;
	size_t len;
	assert_int_equal(read_file(path, 1 << 20, &data, &len), 0);
	return data;
}

/* ---- sync callback recorder ---- */

struct rec {
	uint32_t expunged_seqs[64], expunged_uids[64];
	unsigned n_expunged;
	uint32_t exists;
	unsigned n_exists;
	uint32_t flag_seqs[64], flag_flags[64];
	unsigned n_flags;
};

static void rec_expunged(void *ctx, uint32_t seq, uint32_t uid)
{
	struct rec *r = ctx;
	if (r->n_expunged < 64) {
		r->expunged_seqs[r->n_expunged] = seq;
		r->expunged_uids[r->n_expunged] = uid;
	}
	r->n_expunged++;
}

static void rec_exists(void *ctx, uint32_t count, uint32_t recent)
{
	struct rec *r = ctx;
	r->exists = count;
	r->n_exists++;
}

static void rec_flags(void *ctx, uint32_t seq, const struct mstore_msg *msg)
{
	struct rec *r = ctx;
	if (r->n_flags < 64) {
		r->flag_seqs[r->n_flags] = seq;
		r->flag_flags[r->n_flags] = msg->flags;
	}
	r->n_flags++;
}

static const struct mbox_sync_cb rec_cb = { rec_expunged, rec_exists, rec_flags };

static void sync_rec(struct mbox *box, bool allow_expunge, struct rec *r)
{
	memset(r, 0, sizeof(*r));
	assert_int_equal(mbox_sync(box, allow_expunge, &rec_cb, r), 0);
}

static uint32_t append_msg(struct mstore *store, const char *folder, const char *content,
			   uint32_t flags)
{
	struct mstore_append *a = NULL;
	uint32_t uid = 0, uidv = 0;
	assert_int_equal(mstore_append_begin(store, folder, strlen(content), &a), 0);
	assert_int_equal(mstore_append_write(a, content, strlen(content)), 0);
	mstore_append_set(a, flags, NULL, 0);
	assert_int_equal(mstore_append_commit(&a, 1, &uid, &uidv), 0);
	assert_null(a);
	assert_true(uid > 0);
	return uid;
}

/* ---- tests ---- */

struct seen_folder {
	char name[64];
	unsigned special_use;
	bool subscribed, has_children, nonexistent;
};

struct folder_list {
	struct seen_folder f[32];
	unsigned n;
};

static void list_cb(const struct mstore_folder *folder, void *ctx)
{
	struct folder_list *l = ctx;
	if (l->n >= 32)
		return;
	struct seen_folder *s = &l->f[l->n++];
	snprintf(s->name, sizeof(s->name), "%s", folder->name);
	s->special_use = folder->special_use;
	s->subscribed = folder->subscribed;
	s->has_children = folder->has_children;
	s->nonexistent = folder->nonexistent;
}

static const struct seen_folder *list_find(const struct folder_list *l, const char *name)
{
	for (unsigned i = 0; i < l->n; i++) {
		if (strcmp(l->f[i].name, name) == 0)
			return &l->f[i];
	}
	return NULL;
}

static void test_create_defaults(void **state)
{
	static const struct { const char *name; unsigned special; } want[] = {
		{ "INBOX", 0 },
		{ "Archive", MSTORE_SPECIAL_ARCHIVE },
		{ "Drafts", MSTORE_SPECIAL_DRAFTS },
		{ "Junk", MSTORE_SPECIAL_JUNK },
		{ "Sent", MSTORE_SPECIAL_SENT },
		{ "Trash", MSTORE_SPECIAL_TRASH },
	};
	struct mstore *store = open_store(NULL);
	struct folder_list l = { 0 };
	assert_int_equal(mstore_folder_list(store, list_cb, &l), 0);
	assert_int_equal(l.n, 6);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		/* sorted, INBOX first */
		assert_string_equal(l.f[i].name, want[i].name);
		assert_int_equal(l.f[i].special_use, want[i].special);
		assert_true(l.f[i].subscribed);
		assert_false(l.f[i].nonexistent);
		char path[PATH_MAX];
		struct stat st;
		if (i > 0) {
			pathf(path, sizeof(path), "%s/.%s/cur", root, want[i].name);
			assert_int_equal(stat(path, &st), 0);
		}
		pathf(path, sizeof(path), "%s%s%s/postern-uidvalidity", root, i > 0 ? "/." : "",
		      i > 0 ? want[i].name : "");
		assert_int_equal(stat(path, &st), 0);
	}
	const char *canon = NULL;
	assert_int_equal(mstore_folder_exists(store, "inBox", &canon), 1);
	assert_string_equal(canon, "INBOX");
	assert_int_equal(mstore_folder_exists(store, "Nope", NULL), 0);
	mstore_close(&store);
	assert_null(store);
	/* opening again creates nothing new */
	store = open_store(NULL);
	memset(&l, 0, sizeof(l));
	assert_int_equal(mstore_folder_list(store, list_cb, &l), 0);
	assert_int_equal(l.n, 6);
	mstore_close(&store);
}

static void test_deliver_sync(void **state)
{
	struct mstore *store = open_store(NULL);
	struct mbox *box = NULL;
	char name[256];
	struct rec r;

	deliver(root, "1000.A.host", "Subject: a\n\nbody\n");
	assert_int_equal(mbox_open(store, "INBOX", false, &box), 0);
	assert_int_equal(mbox_count(box), 1);
	assert_int_equal(mbox_recent(box), 1);
	const struct mstore_msg *m = mbox_msg(box, 1);
	assert_int_equal(m->uid, 1);
	assert_true((m->flags & IMAP_FLAG_RECENT) != 0);
	assert_int_equal(mbox_uidnext(box), 2);
	assert_int_equal(mbox_first_unseen(box), 1);
	assert_int_equal(count_files(root, "new"), 0);
	find_file(root, "cur", "1000.A.host", name, sizeof(name));
	assert_string_equal(name, "1000.A.host,U=1:2,");

	/* a delivery with flags already in its name (":2,S") */
	char tmp[PATH_MAX], dst[PATH_MAX];
	pathf(tmp, sizeof(tmp), "%s/tmp/x", root);
	pathf(dst, sizeof(dst), "%s/new/1001.B.host:2,S", root);
	write_file(tmp, "Subject: b\n\nbody\n");
	assert_int_equal(rename(tmp, dst), 0);
	sync_rec(box, true, &r);
	assert_int_equal(r.n_exists, 1);
	assert_int_equal(r.exists, 2);
	assert_int_equal(r.n_flags, 0);
	assert_int_equal(mbox_msg(box, 2)->uid, 2);
	assert_int_equal(mbox_msg(box, 2)->flags & IMAP_FLAG_SEEN, IMAP_FLAG_SEEN);
	find_file(root, "cur", "1001.B.host", name, sizeof(name));
	assert_string_equal(name, "1001.B.host,U=2:2,S");

	/* no change: nothing reported */
	sync_rec(box, true, &r);
	assert_int_equal(r.n_exists + r.n_flags + r.n_expunged, 0);

	struct mstore_status st;
	assert_int_equal(mstore_folder_status(store, "INBOX", &st), 0);
	assert_int_equal(st.messages, 2);
	assert_int_equal(st.unseen, 1);
	assert_int_equal(st.uidnext, 3);
	assert_int_equal(st.recent, 0);   /* this session took them */
	assert_int_equal(st.uidvalidity, mbox_uidvalidity(box));
	assert_true(st.size >= 34);

	/* the deliverer's recovery check finds the renamed files */
	assert_int_equal(maildir_has(root, "1000.A.host"), 1);
	assert_int_equal(maildir_has(root, "1001.B.host"), 1);
	assert_int_equal(maildir_has(root, "1000.A.hos"), 0);
	mbox_close(&box);
	mstore_close(&store);
}

static void test_store_flags(void **state)
{
	struct mstore *store = open_store(NULL);
	struct mbox *box = NULL;
	bool changed, conflict;
	char name[256];

	deliver(root, "2000.A.host", "Subject: a\n\nx\n");
	assert_int_equal(mbox_open(store, "INBOX", false, &box), 0);
	uint64_t modseq0 = mbox_msg(box, 1)->modseq;

	static const struct {
		const char *label;
		enum mbox_store_op op;
		uint32_t flags;
		const char *keywords;
		bool changed;
		uint32_t want_flags;
		const char *want_kw;
		const char *want_suffix;
	} cases[] = {
		{ "+seen", MBOX_STORE_ADD, IMAP_FLAG_SEEN, NULL, true, IMAP_FLAG_SEEN, NULL, ":2,S" },
		{ "+seen again", MBOX_STORE_ADD, IMAP_FLAG_SEEN, NULL, false, IMAP_FLAG_SEEN, NULL,
		  ":2,S" },
		{ "+flagged +kw", MBOX_STORE_ADD, IMAP_FLAG_FLAGGED, "$Work", true,
		  IMAP_FLAG_SEEN | IMAP_FLAG_FLAGGED, "$Work", ":2,FS" },
		{ "+kw case", MBOX_STORE_ADD, 0, "$work later", true,
		  IMAP_FLAG_SEEN | IMAP_FLAG_FLAGGED, "$Work later", ":2,FS" },
		{ "-seen -kw", MBOX_STORE_REMOVE, IMAP_FLAG_SEEN, "$WORK", true, IMAP_FLAG_FLAGGED,
		  "later", ":2,F" },
		{ "replace", MBOX_STORE_REPLACE, IMAP_FLAG_DELETED | IMAP_FLAG_ANSWERED |
		  IMAP_FLAG_DRAFT, NULL, true, IMAP_FLAG_DELETED | IMAP_FLAG_ANSWERED |
		  IMAP_FLAG_DRAFT, NULL, ":2,DRT" },
		{ "replace none", MBOX_STORE_REPLACE, 0, NULL, true, 0, NULL, ":2," },
	};
	uint64_t last = modseq0;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(mbox_store(box, 1, cases[i].op, cases[i].flags, cases[i].keywords,
					    0, &changed, &conflict), 0);
		const struct mstore_msg *m = mbox_msg(box, 1);
		if (changed != cases[i].changed)
			fail_msg("%s: changed %d", cases[i].label, changed);
		assert_false(conflict);
		if ((m->flags & ~IMAP_FLAG_RECENT) != cases[i].want_flags)
			fail_msg("%s: flags %x", cases[i].label, m->flags);
		if ((cases[i].want_kw == NULL) != (m->keywords == NULL) ||
		    (m->keywords != NULL && strcmp(m->keywords, cases[i].want_kw) != 0))
			fail_msg("%s: keywords %s", cases[i].label, m->keywords);
		if (changed)
			assert_true(m->modseq > last);
		else
			assert_int_equal(m->modseq, last);
		last = m->modseq;
		char want[64];
		snprintf(want, sizeof(want), "2000.A.host,U=1%s", cases[i].want_suffix);
		find_file(root, "cur", "2000.A.host", name, sizeof(name));
		if (strcmp(name, want) != 0)
			fail_msg("%s: file %s, want %s", cases[i].label, name, want);
	}
	assert_string_equal(mbox_keywords(box), "$Work later");
	/* CONDSTORE: UNCHANGEDSINCE below the modseq */
	assert_int_equal(mbox_store(box, 1, MBOX_STORE_ADD, IMAP_FLAG_SEEN, NULL, last - 1,
				    &changed, &conflict), 0);
	assert_true(conflict);
	assert_false(changed);
	assert_int_equal(mbox_store(box, 1, MBOX_STORE_ADD, IMAP_FLAG_SEEN, NULL, last,
				    &changed, &conflict), 0);
	assert_false(conflict);
	assert_true(changed);
	assert_int_equal(mbox_highestmodseq(box) >= modseq0, 1);

	/* someone renamed the file behind our back: STORE still works */
	char from[PATH_MAX], to[PATH_MAX];
	find_file(root, "cur", "2000.A.host", name, sizeof(name));
	pathf(from, sizeof(from), "%s/cur/%s", root, name);
	pathf(to, sizeof(to), "%s/cur/2000.A.host,U=1:2,FS", root);
	assert_int_equal(rename(from, to), 0);
	assert_int_equal(mbox_store(box, 1, MBOX_STORE_ADD, IMAP_FLAG_ANSWERED, NULL, 0,
				    &changed, &conflict), 0);
	assert_true(changed);
	find_file(root, "cur", "2000.A.host", name, sizeof(name));
	assert_string_equal(name, "2000.A.host,U=1:2,FRS");
	/* file gone: EXPUNGED */
	pathf(from, sizeof(from), "%s/cur/%s", root, name);
	assert_int_equal(unlink(from), 0);
	assert_int_equal(mbox_store(box, 1, MBOX_STORE_ADD, IMAP_FLAG_DRAFT, NULL, 0,
				    &changed, &conflict), -1);
	enum mstore_err code;
	mstore_error(store, &code);
	assert_int_equal(code, MSTORE_ERR_EXPUNGED);
	mbox_close(&box);
	mstore_close(&store);
}

static void test_two_sessions(void **state)
{
	struct mstore *a = open_store(NULL), *b = open_store(NULL);
	struct mbox *ba = NULL, *bb = NULL;
	struct rec r;
	bool changed, conflict;

	deliver(root, "3000.A.host", "Subject: 1\n\nx\n");
	deliver(root, "3001.B.host", "Subject: 2\n\nx\n");
	assert_int_equal(mbox_open(a, "INBOX", false, &ba), 0);
	assert_int_equal(mbox_open(b, "INBOX", false, &bb), 0);
	assert_int_equal(mbox_count(ba), 2);
	assert_int_equal(mbox_count(bb), 2);
	/* \Recent went to the first session only */
	assert_int_equal(mbox_recent(ba), 2);
	assert_int_equal(mbox_recent(bb), 0);

	assert_int_equal(mbox_store(ba, 2, MBOX_STORE_ADD, IMAP_FLAG_FLAGGED, "Todo", 0,
				    &changed, &conflict), 0);
	sync_rec(ba, true, &r);
	assert_int_equal(r.n_flags, 0);     /* our own change is not echoed */
	sync_rec(bb, true, &r);
	assert_int_equal(r.n_flags, 1);
	assert_int_equal(r.flag_seqs[0], 2);
	assert_int_equal(r.flag_flags[0] & IMAP_FLAG_FLAGGED, IMAP_FLAG_FLAGGED);
	assert_string_equal(mbox_msg(bb, 2)->keywords, "Todo");
	assert_int_equal(mbox_msg(bb, 2)->modseq, mbox_msg(ba, 2)->modseq);
	assert_int_equal(mbox_highestmodseq(bb), mbox_highestmodseq(ba));

	/* a new delivery, seen by the other session; \Recent to whoever syncs first */
	deliver(root, "3002.C.host", "Subject: 3\n\nx\n");
	sync_rec(bb, true, &r);
	assert_int_equal(r.n_exists, 1);
	assert_int_equal(r.exists, 3);
	assert_int_equal(mbox_recent(bb), 1);
	sync_rec(ba, true, &r);
	assert_int_equal(r.exists, 3);
	assert_int_equal(mbox_recent(ba), 2);

	/* expunge in a: b sees it only when expunges are allowed */
	assert_int_equal(mbox_store(ba, 1, MBOX_STORE_ADD, IMAP_FLAG_DELETED, NULL, 0,
				    &changed, &conflict), 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(mbox_expunge(ba, NULL, &rec_cb, &r), 0);
	assert_int_equal(r.n_expunged, 1);
	assert_int_equal(r.expunged_seqs[0], 1);
	assert_int_equal(mbox_count(ba), 2);
	sync_rec(bb, false, &r);
	assert_int_equal(r.n_expunged, 0);
	assert_int_equal(mbox_count(bb), 3);
	assert_true(mbox_msg(bb, 1)->expunged);
	int fd;
	assert_int_equal(mbox_msg_open(bb, 1, &fd), -1);
	sync_rec(bb, true, &r);
	assert_int_equal(r.n_expunged, 1);
	assert_int_equal(r.expunged_seqs[0], 1);
	assert_int_equal(r.expunged_uids[0], 1);
	assert_int_equal(mbox_count(bb), 2);
	assert_int_equal(mbox_msg(bb, 1)->uid, 2);
	assert_int_equal(mbox_seq_of_uid(bb, 3), 2);
	assert_int_equal(mbox_seq_of_uid(bb, 1), 0);

	/* QRESYNC: UID 1 vanished since the first modseq */
	struct imap_seqset out = { 0 };
	assert_int_equal(mbox_vanished_since(bb, 1, NULL, &out), 0);
	assert_true(imap_seqset_contains(&out, 1));
	assert_false(imap_seqset_contains(&out, 2));
	imap_seqset_free(&out);

	/* the watch fd wakes up on a delivery */
	int wfd = mbox_watch_fd(bb);
	assert_true(wfd >= 0);
	mbox_watch_drain(bb);
	deliver(root, "3003.D.host", "Subject: 4\n\nx\n");
	struct pollfd pfd = { .fd = wfd, .events = POLLIN };
	assert_int_equal(poll(&pfd, 1, 1000), 1);
	mbox_watch_drain(bb);
	sync_rec(bb, true, &r);
	assert_int_equal(r.exists, 3);

	mbox_close(&ba);
	mbox_close(&bb);
	mstore_close(&a);
	mstore_close(&b);
}

static void test_outside_changes(void **state)
{
	struct mstore *store = open_store(NULL);
	struct mbox *box = NULL;
	struct rec r;
	char name[256], from[PATH_MAX], to[PATH_MAX];

	deliver(root, "4000.A.host", "Subject: 1\n\nx\n");
	deliver(root, "4001.B.host", "Subject: 2\n\nx\n");
	deliver(root, "4002.C.host", "Subject: 3\n\nx\n");
	assert_int_equal(mbox_open(store, "INBOX", false, &box), 0);
	assert_int_equal(mbox_count(box), 3);

	/* mutt marks message 2 seen */
	find_file(root, "cur", "4001.B.host", name, sizeof(name));
	pathf(from, sizeof(from), "%s/cur/%s", root, name);
	pathf(to, sizeof(to), "%s/cur/4001.B.host,U=2:2,S", root);
	assert_int_equal(rename(from, to), 0);
	sync_rec(box, true, &r);
	assert_int_equal(r.n_flags, 1);
	assert_int_equal(r.flag_seqs[0], 2);
	assert_int_equal(r.flag_flags[0] & IMAP_FLAG_SEEN, IMAP_FLAG_SEEN);

	/* another tool deletes message 1 */
	find_file(root, "cur", "4000.A.host", name, sizeof(name));
	pathf(from, sizeof(from), "%s/cur/%s", root, name);
	assert_int_equal(unlink(from), 0);
	sync_rec(box, true, &r);
	assert_int_equal(r.n_expunged, 1);
	assert_int_equal(r.expunged_uids[0], 1);
	assert_int_equal(mbox_count(box), 2);

	/* a file put into cur/ without ",U=" gets a UID above the max */
	pathf(to, sizeof(to), "%s/cur/4100.X.other:2,F", root);
	write_file(to, "Subject: x\n\ny\n");
	sync_rec(box, true, &r);
	assert_int_equal(r.exists, 3);
	assert_int_equal(mbox_msg(box, 3)->uid, 4);
	assert_int_equal(mbox_msg(box, 3)->flags & IMAP_FLAG_FLAGGED, IMAP_FLAG_FLAGGED);
	find_file(root, "cur", "4100.X.other", name, sizeof(name));
	assert_string_equal(name, "4100.X.other,U=4:2,F");
	/* and one with a stale ",U=" (a UID that was expunged) gets a new one */
	pathf(to, sizeof(to), "%s/cur/4200.Y.other,U=1:2,", root);
	write_file(to, "Subject: y\n\ny\n");
	sync_rec(box, true, &r);
	assert_int_equal(mbox_count(box), 4);
	assert_int_equal(mbox_msg(box, 4)->uid, 5);
	find_file(root, "cur", "4200.Y.other", name, sizeof(name));
	assert_string_equal(name, "4200.Y.other,U=5:2,");

	/* a folder made by another tool is found */
	char dir[PATH_MAX];
	pathf(dir, sizeof(dir), "%s/.Outside", root);
	assert_int_equal(mkdir(dir, 0700), 0);
	pathf(dir, sizeof(dir), "%s/.Outside/cur", root);
	assert_int_equal(mkdir(dir, 0700), 0);
	pathf(dir, sizeof(dir), "%s/.Outside/new", root);
	assert_int_equal(mkdir(dir, 0700), 0);
	pathf(dir, sizeof(dir), "%s/.Outside/tmp", root);
	assert_int_equal(mkdir(dir, 0700), 0);
	pathf(dir, sizeof(dir), "%s/.Outside", root);
	deliver(dir, "4300.Z.host", "Subject: z\n\nz\n");
	struct folder_list l = { 0 };
	assert_int_equal(mstore_folder_list(store, list_cb, &l), 0);
	assert_non_null(list_find(&l, "Outside"));
	struct mstore_status st;
	assert_int_equal(mstore_folder_status(store, "Outside", &st), 0);
	assert_int_equal(st.messages, 1);
	assert_int_equal(st.recent, 1);
	mbox_close(&box);
	mstore_close(&store);
}

/* ---- APPEND ---- */

struct append_case {
	const char *label;
	const char *chunks[4];
	const char *want;
};

static const struct append_case append_cases[] = {
	{ "crlf", { "a\r\nb\r\n" }, "a\nb\n" },
	{ "lf stays", { "a\nb\n" }, "a\nb\n" },
	{ "cr at chunk end", { "a\r", "\nb\r", "\n" }, "a\nb\n" },
	{ "lone cr kept", { "a\rb\r\n" }, "a\rb\n" },
	{ "lone cr at chunk end", { "a\r", "b" }, "a\rb" },
	{ "cr at the very end", { "a\r" }, "a\r" },
	/* a CR before a CRLF stays, and so does that CRLF: read back (LF
	 * after CR is sent as is) it is the same message */
	{ "double cr", { "a\r\r\n" }, "a\r\r\n" },
	{ "double cr at chunk end", { "a\r", "\r\nb" }, "a\r\r\nb" },
	{ "double cr split", { "a\r\r", "\nb\r\n" }, "a\r\r\nb\n" },
	{ "triple cr", { "a\r\r\r\nb" }, "a\r\r\r\nb" },
	{ "crlf after cr line", { "a\r\r\n\r\nb" }, "a\r\r\n\nb" },
	{ "empty chunks", { "", "x\r\n", "" }, "x\n" },
};

static void check_append_case(struct mstore *store, const struct append_case *c,
			      bool bytewise)
{
	struct mstore_append *a = NULL;
	size_t total = 0;
	for (int i = 0; i < 4 && c->chunks[i] != NULL; i++)
		total += strlen(c->chunks[i]);
	assert_int_equal(mstore_append_begin(store, "Drafts", total, &a), 0);
	for (int i = 0; i < 4 && c->chunks[i] != NULL; i++) {
		const char *s = c->chunks[i];
		if (bytewise) {
			for (size_t j = 0; s[j] != '\0'; j++)
				assert_int_equal(mstore_append_write(a, s + j, 1), 0);
		} else {
			assert_int_equal(mstore_append_write(a, s, strlen(s)), 0);
		}
	}
	mstore_append_set(a, IMAP_FLAG_SEEN | IMAP_FLAG_RECENT, "$Draft", 1000000000);
	uint32_t uid, uidv;
	assert_int_equal(mstore_append_commit(&a, 1, &uid, &uidv), 0);

	struct mbox *box = NULL;
	assert_int_equal(mbox_open(store, "Drafts", true, &box), 0);
	uint32_t seq = mbox_seq_of_uid(box, uid);
	assert_true(seq > 0);
	const struct mstore_msg *m = mbox_msg(box, seq);
	assert_int_equal(m->flags & ~IMAP_FLAG_RECENT, IMAP_FLAG_SEEN);
	assert_int_equal(m->internaldate, 1000000000);
	assert_string_equal(m->keywords, "$Draft");
	int fd;
	assert_int_equal(mbox_msg_open(box, seq, &fd), 0);
	char buf[64];
	ssize_t n = read_full(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_true(n >= 0);
	buf[n] = '\0';
	if (strcmp(buf, c->want) != 0)
		fail_msg("%s%s: stored \"%s\"", c->label, bytewise ? " (bytewise)" : "", buf);
	/* RFC822.SIZE: what FETCH sends, the file with each LF not after a
	 * CR as CRLF; with only CRLF line ends in the input, that is the
	 * input itself */
	char conv[64], in[64];
	size_t o = 0;
	for (const char *p = c->want; *p != '\0' && o + 2 < sizeof(conv); p++) {
		if (*p == '\n' && (p == c->want || p[-1] != '\r'))
			conv[o++] = '\r';
		conv[o++] = *p;
	}
	conv[o] = '\0';
	size_t inlen = 0;
	for (int i = 0; i < 4 && c->chunks[i] != NULL; i++) {
		size_t clen = strlen(c->chunks[i]);
		assert_true(inlen + clen < sizeof(in));
		memcpy(in + inlen, c->chunks[i], clen);
		inlen += clen;
	}
	in[inlen] = '\0';
	bool bare_lf = false;
	for (size_t i = 0; in[i] != '\0'; i++)
		bare_lf |= in[i] == '\n' && (i == 0 || in[i - 1] != '\r');
	if (!bare_lf && strcmp(conv, in) != 0)
		fail_msg("%s: read back as \"%s\"", c->label, conv);
	uint64_t vsize;
	assert_int_equal(mbox_msg_vsize(box, seq, &vsize), 0);
	if (vsize != strlen(conv))
		fail_msg("%s%s: vsize %llu, FETCH sends %zu", c->label, bytewise ? " (bytewise)" : "",
			 (unsigned long long)vsize, strlen(conv));
	mbox_close(&box);
}

static void test_append(void **state)
{
	struct mstore *store = open_store(NULL);
	for (size_t i = 0; i < sizeof(append_cases) / sizeof(append_cases[0]); i++) {
		check_append_case(store, &append_cases[i], false);
		check_append_case(store, &append_cases[i], true);
	}
	char dir[PATH_MAX];
	pathf(dir, sizeof(dir), "%s/.Drafts", root);
	assert_int_equal(count_files(dir, "tmp"), 0);
	assert_int_equal(count_files(dir, "cur"), 2 * sizeof(append_cases) /
			 sizeof(append_cases[0]));

	/* missing folder: TRYCREATE */
	struct mstore_append *a = NULL;
	enum mstore_err code;
	assert_int_equal(mstore_append_begin(store, "Nope", 10, &a), -1);
	mstore_error(store, &code);
	assert_int_equal(code, MSTORE_ERR_NONEXISTENT);
	/* more data than announced */
	assert_int_equal(mstore_append_begin(store, "INBOX", 3, &a), 0);
	assert_int_equal(mstore_append_write(a, "abcd", 4), -1);
	mstore_append_abort(&a);
	assert_null(a);
	assert_int_equal(count_files(root, "tmp"), 0);
	mstore_close(&store);
}

static void test_multiappend(void **state)
{
	struct mstore *store = open_store(NULL);
	struct mstore_append *a[3] = { NULL };
	uint32_t uids[3], uidv;
	enum mstore_err code;

	/* all or none: the third one failed, nothing is stored */
	for (int i = 0; i < 3; i++)
		assert_int_equal(mstore_append_begin(store, "INBOX", 4, &a[i]), 0);
	assert_int_equal(mstore_append_write(a[0], "one\n", 4), 0);
	assert_int_equal(mstore_append_write(a[1], "two\n", 4), 0);
	assert_int_equal(mstore_append_write(a[2], "three\n", 6), -1);
	assert_int_equal(mstore_append_commit(a, 3, uids, &uidv), -1);
	for (int i = 0; i < 3; i++)
		assert_null(a[i]);
	assert_int_equal(count_files(root, "cur"), 0);
	assert_int_equal(count_files(root, "tmp"), 0);
	/* different folders in one MULTIAPPEND are refused */
	assert_int_equal(mstore_append_begin(store, "INBOX", 4, &a[0]), 0);
	assert_int_equal(mstore_append_begin(store, "Sent", 4, &a[1]), 0);
	assert_int_equal(mstore_append_commit(a, 2, uids, &uidv), -1);
	mstore_error(store, &code);
	assert_int_equal(code, MSTORE_ERR_INTERNAL);
	assert_int_equal(count_files(root, "tmp"), 0);

	for (int i = 0; i < 3; i++) {
		assert_int_equal(mstore_append_begin(store, "INBOX", 4, &a[i]), 0);
		assert_int_equal(mstore_append_write(a[i], "msg\n", 4), 0);
	}
	assert_int_equal(mstore_append_commit(a, 3, uids, &uidv), 0);
	assert_int_equal(uids[0], 1);
	assert_int_equal(uids[1], 2);
	assert_int_equal(uids[2], 3);
	assert_int_equal(count_files(root, "cur"), 3);
	struct mstore_status st;
	assert_int_equal(mstore_folder_status(store, "INBOX", &st), 0);
	assert_int_equal(st.messages, 3);
	assert_int_equal(st.uidvalidity, uidv);
	assert_int_equal(st.recent, 3);
	/* usage: 3 files of 4 bytes */
	uint64_t bytes, msgs;
	assert_int_equal(mstore_quota(store, &bytes, &msgs), 0);
	assert_int_equal(bytes, 12);
	assert_int_equal(msgs, 3);
	mstore_close(&store);
}

/* Rows of the cache table with id (folder * 2^32 + uid) and a non-NULL
 * column col, straight from the file (what another process would see). */
static int cache_rows(const char *col)
{
	char path[PATH_MAX], sql[128];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	pathf(path, sizeof(path), "%s/postern-index.db", root);
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM cache WHERE %s IS NOT NULL", col);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	int n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

/* Cache writes wait in memory, are seen by the same store at once and by
 * others after the flush; SEARCH data round-trips with its NULs; a row for
 * a message expunged before the flush is not written. */
static void test_cache_deferred(void **state)
{
	(void)state;
	struct mstore *store = open_store(NULL), *other = open_store(NULL);
	struct mbox *box = NULL, *obox = NULL, *arch = NULL;
	char *v = NULL;
	bool changed, conflict;

	for (int i = 0; i < 5; i++) {
		char name[32], body[64];
		snprintf(name, sizeof(name), "600%d.A.host", i);
		snprintf(body, sizeof(body), "Subject: %d\n\nx\n", i);
		deliver(root, name, body);
	}
	assert_int_equal(mbox_open(store, "INBOX", false, &box), 0);
	assert_int_equal(mbox_open(other, "INBOX", false, &obox), 0);
	assert_int_equal(mbox_count(box), 5);

	assert_int_equal(mbox_cache_set(box, 1, MSTORE_CACHE_ENVELOPE, "(env 1)"), 0);
	assert_int_equal(mbox_cache_set(box, 1, MSTORE_CACHE_BODYSTRUCTURE, "(bs 1)"), 0);
	static const char hdrs1[] = "\001alice\000\005hello world";
	static const char hdrs3[] = "\002bob\000";
	assert_int_equal(mbox_search_data_set(box, 1, hdrs1, sizeof(hdrs1), 7 * 86400), 0);
	assert_int_equal(mbox_search_data_set(box, 3, hdrs3, sizeof(hdrs3), -1), 0);
	/* seen by the same store before the flush, not yet written */
	assert_int_equal(mbox_cache_get(box, 1, MSTORE_CACHE_ENVELOPE, &v), 1);
	assert_string_equal(v, "(env 1)");
	free(v);
	assert_int_equal(cache_rows("envelope"), 0);
	assert_int_equal(mbox_cache_get(obox, 1, MSTORE_CACHE_ENVELOPE, &v), 0);

	/* message 2: cached here, expunged by the other store before the flush */
	assert_int_equal(mbox_cache_set(box, 2, MSTORE_CACHE_ENVELOPE, "(env 2)"), 0);
	assert_int_equal(mbox_store(obox, 2, MBOX_STORE_ADD, IMAP_FLAG_DELETED, NULL, 0,
				    &changed, &conflict), 0);
	assert_int_equal(mbox_expunge(obox, NULL, NULL, NULL), 0);

	mbox_cache_flush(box);
	assert_int_equal(cache_rows("envelope"), 1);
	assert_int_equal(cache_rows("bodystructure"), 1);
	assert_int_equal(cache_rows("hdrs"), 2);
	assert_int_equal(mbox_cache_get(obox, 1, MSTORE_CACHE_BODYSTRUCTURE, &v), 1);
	assert_string_equal(v, "(bs 1)");
	free(v);

	/* a window over all 5 (message 2 is still in this view, expunged) */
	struct mbox_search_data rows[5];
	void *arena = NULL;
	assert_int_equal(mbox_search_data_load(box, 1, 5, rows, &arena), 0);
	assert_non_null(rows[0].hdrs);
	assert_int_equal(rows[0].hdrs_len, sizeof(hdrs1));
	assert_memory_equal(rows[0].hdrs, hdrs1, sizeof(hdrs1));
	assert_int_equal(rows[0].sentday, 7 * 86400);
	assert_null(rows[1].hdrs);
	assert_non_null(rows[2].hdrs);
	assert_memory_equal(rows[2].hdrs, hdrs3, sizeof(hdrs3));
	assert_int_equal(rows[2].sentday, -1);
	assert_null(rows[3].hdrs);
	assert_null(rows[4].hdrs);
	free(arena);
	/* a window that starts in the middle */
	assert_int_equal(mbox_search_data_load(box, 3, 4, rows, &arena), 0);
	assert_non_null(rows[0].hdrs);
	assert_null(rows[1].hdrs);
	free(arena);
	assert_int_equal(mbox_search_data_load(box, 4, 3, rows, &arena), -1);

	/* COPY takes the SEARCH data along */
	struct rec r;
	sync_rec(box, true, &r);
	assert_int_equal(mbox_count(box), 4);
	uint32_t seqs[1] = { 2 }, uids[1], uidv;  /* old message 3 */
	assert_int_equal(mbox_copy(box, seqs, 1, "Archive", false, uids, &uidv), 0);
	assert_int_equal(mbox_open(store, "Archive", false, &arch), 0);
	assert_int_equal(mbox_search_data_load(arch, 1, 1, rows, &arena), 0);
	assert_non_null(rows[0].hdrs);
	assert_memory_equal(rows[0].hdrs, hdrs3, sizeof(hdrs3));
	free(arena);

	/* many writes: flushed on the way, nothing lost */
	for (int i = 0; i < 1200; i++)
		assert_int_equal(mbox_cache_set(box, 1 + (uint32_t)(i % 4), MSTORE_CACHE_BODY,
						"(body)"), 0);
	/* closing the store writes what is left */
	mbox_close(&arch);
	mbox_close(&box);
	mstore_close(&store);
	assert_int_equal(cache_rows("body"), 4);
	mbox_close(&obox);
	mstore_close(&other);
}

/* A version 1 index (no SEARCH columns) is upgraded in place. */
static void test_cache_upgrade(void **state)
{
	(void)state;
	struct mstore *store = open_store(NULL);
	deliver(root, "7000.A.host", "Subject: a\n\nx\n");
	struct mbox *box = NULL;
	assert_int_equal(mbox_open(store, "INBOX", false, &box), 0);
	assert_int_equal(mbox_cache_set(box, 1, MSTORE_CACHE_ENVELOPE, "(env)"), 0);
	mbox_close(&box);
	mstore_close(&store);

	char path[PATH_MAX];
	sqlite3 *db = NULL;
	pathf(path, sizeof(path), "%s/postern-index.db", root);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "ALTER TABLE cache DROP COLUMN hdrs;"
				      "ALTER TABLE cache DROP COLUMN sentday;"
				      "PRAGMA user_version=1", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);

	store = open_store(NULL);
	assert_int_equal(mbox_open(store, "INBOX", false, &box), 0);
	char *v = NULL;
	assert_int_equal(mbox_cache_get(box, 1, MSTORE_CACHE_ENVELOPE, &v), 1);
	assert_string_equal(v, "(env)");   /* the cache survived */
	free(v);
	assert_int_equal(mbox_search_data_set(box, 1, "\001x", 3, 5), 0);
	mbox_cache_flush(box);
	struct mbox_search_data rows[1];
	void *arena = NULL;
	assert_int_equal(mbox_search_data_load(box, 1, 1, rows, &arena), 0);
	assert_non_null(rows[0].hdrs);
	assert_int_equal(rows[0].sentday, 5);
	free(arena);
	mbox_close(&box);
	mstore_close(&store);

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 2);
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static void test_copy_move(void **state)
{
	struct mstore *store = open_store(NULL);
	struct mbox *box = NULL, *arch = NULL;
	uint32_t uids[3], uidv;
	bool changed, conflict;
	enum mstore_err code;
	struct rec r;

	deliver(root, "5000.A.host", "Subject: 1\n\nx\n");
	deliver(root, "5001.B.host", "Subject: 2\n\nx\n");
	deliver(root, "5002.C.host", "Subject: 3\n\nx\n");
	assert_int_equal(mbox_open(store, "INBOX", false, &box), 0);
	assert_int_equal(mbox_store(box, 2, MBOX_STORE_ADD, IMAP_FLAG_SEEN, "Blue", 0,
				    &changed, &conflict), 0);
	assert_int_equal(mbox_cache_set(box, 2, MSTORE_CACHE_ENVELOPE, "(env)"), 0);

	uint32_t seqs[2] = { 2, 3 };
	assert_int_equal(mbox_copy(box, seqs, 2, "Archive", false, uids, &uidv), 0);
	assert_int_equal(uids[0], 1);
	assert_int_equal(uids[1], 2);
	assert_int_equal(mbox_open(store, "Archive", false, &arch), 0);
	assert_int_equal(mbox_uidvalidity(arch), uidv);
	assert_int_equal(mbox_count(arch), 2);
	assert_int_equal(mbox_msg(arch, 1)->flags & IMAP_FLAG_SEEN, IMAP_FLAG_SEEN);
	assert_true((mbox_msg(arch, 1)->flags & IMAP_FLAG_RECENT) != 0);
	assert_string_equal(mbox_msg(arch, 1)->keywords, "Blue");
	char *env = NULL;
	assert_int_equal(mbox_cache_get(arch, 1, MSTORE_CACHE_ENVELOPE, &env), 1);
	assert_string_equal(env, "(env)");
	free(env);
	assert_int_equal(mbox_cache_get(arch, 2, MSTORE_CACHE_ENVELOPE, &env), 0);
	char dir[PATH_MAX], name[256];
	pathf(dir, sizeof(dir), "%s/.Archive", root);
	find_file(dir, "cur", "5001.B.host", name, sizeof(name));
	assert_string_equal(name, "5001.B.host,U=1:2,S");
	/* copying again: same base in the destination gets a new one */
	assert_int_equal(mbox_copy(box, seqs, 1, "Archive", false, uids, &uidv), 0);
	assert_int_equal(uids[0], 3);
	assert_int_equal(count_files(dir, "cur"), 3);
	/* into the same folder */
	assert_int_equal(mbox_copy(box, seqs, 1, "INBOX", false, uids, &uidv), 0);
	assert_int_equal(uids[0], 4);
	assert_int_equal(count_files(root, "cur"), 4);
	sync_rec(box, true, &r);
	assert_int_equal(r.exists, 4);

	/* move 1 to Trash: reported at the next sync */
	seqs[0] = 1;
	assert_int_equal(mbox_copy(box, seqs, 1, "Trash", true, uids, &uidv), 0);
	assert_int_equal(uids[0], 1);
	sync_rec(box, true, &r);
	assert_int_equal(r.n_expunged, 1);
	assert_int_equal(r.expunged_uids[0], 1);
	assert_int_equal(mbox_count(box), 3);
	find_file(root, "cur", "5000.A.host", name, sizeof(name));
	assert_string_equal(name, "");
	pathf(dir, sizeof(dir), "%s/.Trash", root);
	find_file(dir, "cur", "5000.A.host", name, sizeof(name));
	assert_string_equal(name, "5000.A.host,U=1:2,");

	/* missing destination */
	assert_int_equal(mbox_copy(box, seqs, 1, "Nope", false, uids, &uidv), -1);
	mstore_error(store, &code);
	assert_int_equal(code, MSTORE_ERR_NONEXISTENT);
	/* read-only views cannot move */
	struct mbox *ro = NULL;
	assert_int_equal(mbox_open(store, "INBOX", true, &ro), 0);
	assert_int_equal(mbox_copy(ro, seqs, 1, "Trash", true, uids, &uidv), -1);
	mstore_error(store, &code);
	assert_int_equal(code, MSTORE_ERR_CANNOT);
	assert_int_equal(mbox_expunge(ro, NULL, NULL, NULL), -1);
	mbox_close(&ro);
	mbox_close(&arch);
	mbox_close(&box);
	mstore_close(&store);
}

static void test_uid_expunge(void **state)
{
	struct mstore *store = open_store(NULL);
	struct mbox *box = NULL;
	bool changed, conflict;
	struct rec r;

	for (int i = 0; i < 4; i++)
		append_msg(store, "INBOX", "Subject: x\n\ny\n", 0);
	uint64_t bytes0, msgs0, bytes, msgs;
	assert_int_equal(mstore_quota(store, &bytes0, &msgs0), 0);
	assert_int_equal(mbox_open(store, "INBOX", false, &box), 0);
	for (uint32_t seq = 1; seq <= 3; seq++)
		assert_int_equal(mbox_store(box, seq, MBOX_STORE_ADD, IMAP_FLAG_DELETED, NULL, 0,
					    &changed, &conflict), 0);
	uint64_t before = mbox_highestmodseq(box);
	struct imap_seqset set = { 0 };
	assert_int_equal(imap_seqset_parse("2,4", 3, &set), 0);
	memset(&r, 0, sizeof(r));
	assert_int_equal(mbox_expunge(box, &set, &rec_cb, &r), 0);
	imap_seqset_free(&set);
	assert_int_equal(r.n_expunged, 1);
	assert_int_equal(r.expunged_uids[0], 2);
	assert_int_equal(mbox_count(box), 3);
	assert_true(mbox_highestmodseq(box) > before);
	assert_int_equal(mstore_quota(store, &bytes, &msgs), 0);
	assert_int_equal(msgs, msgs0 - 1);
	assert_int_equal(bytes, bytes0 - strlen("Subject: x\n\ny\n"));
	/* plain EXPUNGE: the two other \Deleted ones, in descending order */
	memset(&r, 0, sizeof(r));
	assert_int_equal(mbox_expunge(box, NULL, &rec_cb, &r), 0);
	assert_int_equal(r.n_expunged, 2);
	assert_int_equal(r.expunged_seqs[0], 2);
	assert_int_equal(r.expunged_uids[0], 3);
	assert_int_equal(r.expunged_seqs[1], 1);
	assert_int_equal(r.expunged_uids[1], 1);
	assert_int_equal(mbox_count(box), 1);
	assert_int_equal(mbox_msg(box, 1)->uid, 4);
	assert_int_equal(count_files(root, "cur"), 1);
	mbox_close(&box);
	mstore_close(&store);
}

static void test_folders(void **state)
{
	struct mstore *store = open_store(NULL);
	enum mstore_err code;
	struct folder_list l;

	static const struct { const char *label, *name; } bad[] = {
		{ "empty", "" }, { "leading dot", ".a" }, { "trailing dot", "a." },
		{ "empty component", "a..b" }, { "slash", "a/b" }, { "control", "a\tb" },
		{ "bad utf-8", "a\xff" }, { "wildcard", "a*" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (mstore_folder_create(store, bad[i].name, 0) != -1)
			fail_msg("%s: created", bad[i].label);
		mstore_error(store, &code);
		if (code != MSTORE_ERR_CANNOT)
			fail_msg("%s: code %d", bad[i].label, code);
	}
	assert_int_equal(mstore_folder_create(store, "Sent", 0), -1);
	mstore_error(store, &code);
	assert_int_equal(code, MSTORE_ERR_ALREADYEXISTS);
	assert_int_equal(mstore_folder_create(store, "inbox", 0), -1);
	mstore_error(store, &code);
	assert_int_equal(code, MSTORE_ERR_ALREADYEXISTS);

	/* parents are created */
	assert_int_equal(mstore_folder_create(store, "a.b.c", 0), 0);
	assert_int_equal(mstore_folder_exists(store, "a", NULL), 1);
	assert_int_equal(mstore_folder_exists(store, "a.b", NULL), 1);
	append_msg(store, "a.b", "Subject: in a.b\n\n.\n", 0);

	/* rename with children */
	assert_int_equal(mstore_folder_rename(store, "a", "x.y"), 0);
	assert_int_equal(mstore_folder_exists(store, "a", NULL), 0);
	assert_int_equal(mstore_folder_exists(store, "a.b.c", NULL), 0);
	assert_int_equal(mstore_folder_exists(store, "x", NULL), 1);
	assert_int_equal(mstore_folder_exists(store, "x.y.b.c", NULL), 1);
	struct mstore_status st;
	assert_int_equal(mstore_folder_status(store, "x.y.b", &st), 0);
	assert_int_equal(st.messages, 1);
	assert_int_equal(mstore_folder_rename(store, "x", "x.z"), -1);
	mstore_error(store, &code);
	assert_int_equal(code, MSTORE_ERR_CANNOT);
	assert_int_equal(mstore_folder_rename(store, "x.y", "Sent"), -1);
	mstore_error(store, &code);
	assert_int_equal(code, MSTORE_ERR_ALREADYEXISTS);
	assert_int_equal(mstore_folder_rename(store, "nope", "other"), -1);
	mstore_error(store, &code);
	assert_int_equal(code, MSTORE_ERR_NONEXISTENT);

	/* delete a parent: the child stays, the parent is \NonExistent */
	uint32_t uidv_before = st.uidvalidity;
	assert_int_equal(mstore_folder_delete(store, "x.y.b"), 0);
	assert_int_equal(mstore_folder_exists(store, "x.y.b", NULL), 0);
	assert_int_equal(mstore_folder_exists(store, "x.y.b.c", NULL), 1);
	memset(&l, 0, sizeof(l));
	assert_int_equal(mstore_folder_list(store, list_cb, &l), 0);
	const struct seen_folder *f = list_find(&l, "x.y.b");
	assert_non_null(f);
	assert_true(f->nonexistent);
	assert_true(f->has_children);
	assert_true(list_find(&l, "x.y")->has_children);
	assert_false(list_find(&l, "x.y.b.c")->has_children);
	assert_false(list_find(&l, "Sent")->has_children);
	/* created again: a new UIDVALIDITY */
	assert_int_equal(mstore_folder_create(store, "x.y.b", 0), 0);
	assert_int_equal(mstore_folder_status(store, "x.y.b", &st), 0);
	assert_int_equal(st.messages, 0);
	assert_true(st.uidvalidity > uidv_before);
	assert_int_equal(mstore_folder_delete(store, "INBOX"), -1);
	mstore_error(store, &code);
	assert_int_equal(code, MSTORE_ERR_CANNOT);
	assert_int_equal(mstore_folder_delete(store, "nope"), -1);
	mstore_error(store, &code);
	assert_int_equal(code, MSTORE_ERR_NONEXISTENT);

	/* subscriptions outlive folders */
	assert_int_equal(mstore_folder_subscribe(store, "x.y.b.c", true), 0);
	assert_int_equal(mstore_folder_subscribe(store, "Junk", false), 0);
	assert_int_equal(mstore_folder_delete(store, "x.y.b.c"), 0);
	memset(&l, 0, sizeof(l));
	assert_int_equal(mstore_folder_list(store, list_cb, &l), 0);
	f = list_find(&l, "x.y.b.c");
	assert_non_null(f);
	assert_true(f->subscribed);
	assert_true(f->nonexistent);
	assert_false(list_find(&l, "Junk")->subscribed);
	assert_false(list_find(&l, "x.y.b")->has_children);

	/* non-ASCII names: modified UTF-7 on disk */
	assert_int_equal(mstore_folder_create(store, "Entw\xc3\xbcrfe & Co", 0), 0);
	char path[PATH_MAX];
	struct stat sb;
	pathf(path, sizeof(path), "%s/.Entw&APw-rfe &- Co/cur", root);
	assert_int_equal(stat(path, &sb), 0);
	memset(&l, 0, sizeof(l));
	assert_int_equal(mstore_folder_list(store, list_cb, &l), 0);
	assert_non_null(list_find(&l, "Entw\xc3\xbcrfe & Co"));

	/* renaming INBOX moves its messages and leaves it empty */
	deliver(root, "6000.A.host", "Subject: 1\n\nx\n");
	deliver(root, "6001.B.host", "Subject: 2\n\nx\n");
	assert_int_equal(mstore_folder_rename(store, "INBOX", "Old"), 0);
	assert_int_equal(mstore_folder_status(store, "INBOX", &st), 0);
	assert_int_equal(st.messages, 0);
	assert_int_equal(mstore_folder_status(store, "Old", &st), 0);
	assert_int_equal(st.messages, 2);
	assert_int_equal(st.uidnext, 3);
	assert_int_equal(count_files(root, "cur"), 0);
	mstore_close(&store);
}

/* ---- rebuild ---- */

struct snapshot {
	uint32_t uidvalidity, uidnext, count;
	uint32_t uids[8], flags[8];
};

static void snap(struct mstore *store, const char *folder, struct snapshot *s)
{
	struct mbox *box = NULL;
	assert_int_equal(mbox_open(store, folder, true, &box), 0);
	s->uidvalidity = mbox_uidvalidity(box);
	s->uidnext = mbox_uidnext(box);
	s->count = mbox_count(box);
	for (uint32_t i = 0; i < s->count && i < 8; i++) {
		s->uids[i] = mbox_msg(box, i + 1)->uid;
		s->flags[i] = mbox_msg(box, i + 1)->flags & ~IMAP_FLAG_RECENT;
	}
	mbox_close(&box);
}

static void prepare_rebuild(struct snapshot *inbox, struct snapshot *sent)
{
	struct mstore *store = open_store(NULL);
	struct mbox *box = NULL;
	bool changed, conflict;
	for (int i = 0; i < 4; i++) {
		char name[32];
		snprintf(name, sizeof(name), "700%d.A.host", i);
		deliver(root, name, "Subject: r\n\nx\n");
	}
	assert_int_equal(mbox_open(store, "INBOX", false, &box), 0);
	assert_int_equal(mbox_store(box, 2, MBOX_STORE_ADD, IMAP_FLAG_SEEN | IMAP_FLAG_FLAGGED,
				    NULL, 0, &changed, &conflict), 0);
	assert_int_equal(mbox_store(box, 1, MBOX_STORE_ADD, IMAP_FLAG_DELETED, NULL, 0,
				    &changed, &conflict), 0);
	assert_int_equal(mbox_expunge(box, NULL, NULL, NULL), 0);
	mbox_close(&box);
	append_msg(store, "Sent", "Subject: s\n\nx\n", IMAP_FLAG_SEEN);
	snap(store, "INBOX", inbox);
	snap(store, "Sent", sent);
	assert_int_equal(inbox->count, 3);
	assert_int_equal(inbox->uids[0], 2);
	assert_int_equal(inbox->uidnext, 5);
	mstore_close(&store);
}

static void check_rebuilt(const struct snapshot *inbox, const struct snapshot *sent)
{
	struct mstore *store = open_store(NULL);
	struct snapshot a, b;
	snap(store, "INBOX", &a);
	snap(store, "Sent", &b);
	assert_int_equal(a.uidvalidity, inbox->uidvalidity);
	assert_int_equal(a.uidnext, inbox->uidnext);
	assert_int_equal(a.count, inbox->count);
	assert_memory_equal(a.uids, inbox->uids, a.count * sizeof(uint32_t));
	assert_memory_equal(a.flags, inbox->flags, a.count * sizeof(uint32_t));
	assert_int_equal(b.uidvalidity, sent->uidvalidity);
	assert_int_equal(b.count, 1);
	assert_int_equal(b.flags[0], IMAP_FLAG_SEEN);
	/* a new message continues above */
	deliver(root, "7100.N.host", "Subject: n\n\nx\n");
	snap(store, "INBOX", &a);
	assert_int_equal(a.uids[a.count - 1], inbox->uidnext);
	struct folder_list l = { 0 };
	assert_int_equal(mstore_folder_list(store, list_cb, &l), 0);
	assert_int_equal(list_find(&l, "Trash")->special_use, MSTORE_SPECIAL_TRASH);
	mstore_close(&store);
}

static void test_rebuild_missing(void **state)
{
	struct snapshot inbox, sent;
	char path[PATH_MAX];
	prepare_rebuild(&inbox, &sent);
	static const char *const files[] = { "", "-wal", "-shm" };
	for (int i = 0; i < 3; i++) {
		pathf(path, sizeof(path), "%s/postern-index.db%s", root, files[i]);
		unlink(path);
	}
	check_rebuilt(&inbox, &sent);
}

static void test_rebuild_corrupt(void **state)
{
	struct snapshot inbox, sent;
	char path[PATH_MAX];
	prepare_rebuild(&inbox, &sent);
	pathf(path, sizeof(path), "%s/postern-index.db", root);
	unlink(path);   /* its -wal would be replayed otherwise */
	write_file(path, "this is not an SQLite database, just garbage........"
		   "................................................................");
	check_rebuilt(&inbox, &sent);
	char name[256];
	find_file(root, "", "postern-index.db.corrupt-", name, sizeof(name));
	assert_true(name[0] != '\0');
	pathf(path, sizeof(path), "%s/%s", root, name);
	char *data = read_all(path);
	assert_non_null(strstr(data, "garbage"));
	free(data);
}

/* Another process finds the index corrupt and rebuilds it while this one
 * has a folder selected: this one moves to the new index, same UIDs. */
static void test_rebuild_while_open(void **state)
{
	struct mstore *store = open_store(NULL);
	struct mbox *box = NULL;
	bool changed, conflict;
	deliver(root, "7500.A.host", "Subject: 1\n\nx\n");
	deliver(root, "7501.B.host", "Subject: 2\n\nx\n");
	deliver(root, "7502.C.host", "Subject: 3\n\nx\n");
	assert_int_equal(mbox_open(store, "INBOX", false, &box), 0);
	uint32_t uidv = mbox_uidvalidity(box);
	uint64_t modseq = mbox_highestmodseq(box);
	/* garbage over the file, in place */
	char path[PATH_MAX];
	pathf(path, sizeof(path), "%s/postern-index.db", root);
	int fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	for (int i = 0; i < 64; i++)
		assert_int_equal(write_full(fd, "garbage garbage garbage garbage garbage "
					    "garbage garbage garbage", 63), 0);
	close(fd);
	/* and its WAL lost (else pages come from there) */
	pathf(path, sizeof(path), "%s/postern-index.db-wal", root);
	unlink(path);
	pathf(path, sizeof(path), "%s/postern-index.db-shm", root);
	unlink(path);
	struct mstore *other = open_store(NULL);   /* finds it, rebuilds */
	char name[256];
	find_file(root, "", "postern-index.db.corrupt-", name, sizeof(name));
	assert_true(name[0] != '\0');
	/* meanwhile message 2 was deleted by another tool */
	find_file(root, "cur", "7501.B.host", name, sizeof(name));
	pathf(path, sizeof(path), "%s/cur/%s", root, name);
	assert_int_equal(unlink(path), 0);

	struct rec r;
	sync_rec(box, true, &r);
	assert_int_equal(r.n_expunged, 1);
	assert_int_equal(r.expunged_uids[0], 2);
	assert_int_equal(mbox_count(box), 2);
	assert_int_equal(mbox_msg(box, 2)->uid, 3);
	assert_int_equal(mbox_uidvalidity(box), uidv);
	/* MODSEQs never go back */
	assert_true(mbox_highestmodseq(box) > modseq);
	/* the view works on the new index */
	assert_int_equal(mbox_store(box, 2, MBOX_STORE_ADD, IMAP_FLAG_SEEN, NULL, 0, &changed,
				    &conflict), 0);
	assert_true(changed);
	deliver(root, "7503.D.host", "Subject: 4\n\nx\n");
	sync_rec(box, true, &r);
	assert_int_equal(mbox_count(box), 3);
	assert_int_equal(mbox_msg(box, 3)->uid, 4);
	struct mbox *ob = NULL;
	assert_int_equal(mbox_open(other, "INBOX", true, &ob), 0);
	assert_int_equal(mbox_count(ob), 3);
	assert_int_equal(mbox_msg(ob, 2)->flags & IMAP_FLAG_SEEN, IMAP_FLAG_SEEN);
	mbox_close(&ob);
	mstore_close(&other);
	mbox_close(&box);
	mstore_close(&store);
}

/* ---- quota ---- */

static void test_quota_file(void **state)
{
	uint64_t bytes, msgs;
	char path[PATH_MAX];
	const char *err;
	assert_int_equal(maildir_create(root, &err), 0);
	char dir[PATH_MAX];
	pathf(dir, sizeof(dir), "%s/.Sub", root);
	assert_int_equal(maildir_create(dir, &err), 0);
	pathf(path, sizeof(path), "%s/cur/a:2,S", root);
	write_file(path, "12345");
	pathf(path, sizeof(path), "%s/new/b", root);
	write_file(path, "123");
	pathf(path, sizeof(path), "%s/.Sub/cur/c", root);
	write_file(path, "1234567");
	pathf(path, sizeof(path), "%s/tmp/ignored", root);
	write_file(path, "xxxxxxxxxxxxxxxx");

	/* missing: recalculated */
	assert_int_equal(maildir_quota_usage(root, &bytes, &msgs), 0);
	assert_int_equal(bytes, 15);
	assert_int_equal(msgs, 3);
	pathf(path, sizeof(path), "%s/maildirsize", root);
	char *data = read_all(path);
	assert_string_equal(data, "0S,0C\n15 3\n");
	free(data);

	static const struct {
		const char *label;
		int64_t bytes, msgs;
		uint64_t want_bytes, want_msgs;
	} adds[] = {
		{ "add", 100, 1, 115, 4 },
		{ "remove", -15, -1, 100, 3 },
		{ "zero", 0, 0, 100, 3 },
	};
	for (size_t i = 0; i < sizeof(adds) / sizeof(adds[0]); i++) {
		assert_int_equal(maildir_quota_add(root, adds[i].bytes, adds[i].msgs), 0);
		assert_int_equal(maildir_quota_usage(root, &bytes, &msgs), 0);
		if (bytes != adds[i].want_bytes || msgs != adds[i].want_msgs)
			fail_msg("%s: %llu %llu", adds[i].label, (unsigned long long)bytes,
				 (unsigned long long)msgs);
	}
	/* unparsable or too large: recalculated from the Maildir */
	static const char *const broken[] = { "0S\n12 x\n", "0S\n12 1", "", "0S\n-50 -1\n" };
	for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
		write_file(path, broken[i]);
		assert_int_equal(maildir_quota_usage(root, &bytes, &msgs), 0);
		assert_int_equal(bytes, 15);
		assert_int_equal(msgs, 3);
	}
	for (int i = 0; i < 1500; i++)
		assert_int_equal(maildir_quota_add(root, 1, 0), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_true(st.st_size > 5120);
	assert_int_equal(maildir_quota_usage(root, &bytes, &msgs), 0);
	assert_int_equal(bytes, 15);   /* the +1 lines were not real files */
	assert_int_equal(stat(path, &st), 0);
	assert_true(st.st_size < 100);
}

static void test_quota_append(void **state)
{
	struct mstore_settings set = settings;
	set.quota_bytes = 100;
	set.quota_messages = 3;
	struct mstore *store = open_store(&set);
	struct mstore_append *a = NULL;
	enum mstore_err code;
	uint64_t bytes, msgs;

	assert_int_equal(mstore_append_begin(store, "INBOX", 101, &a), -1);
	mstore_error(store, &code);
	assert_int_equal(code, MSTORE_ERR_OVERQUOTA);
	append_msg(store, "INBOX", "0123456789012345678901234567890123456789", 0);
	assert_int_equal(mstore_append_begin(store, "INBOX", 61, &a), -1);
	mstore_error(store, &code);
	assert_int_equal(code, MSTORE_ERR_OVERQUOTA);
	append_msg(store, "INBOX", "x", 0);
	append_msg(store, "Sent", "y", 0);
	assert_int_equal(mstore_quota(store, &bytes, &msgs), 0);
	assert_int_equal(bytes, 42);
	assert_int_equal(msgs, 3);
	/* the message count is full */
	assert_int_equal(mstore_append_begin(store, "INBOX", 1, &a), -1);
	mstore_error(store, &code);
	assert_int_equal(code, MSTORE_ERR_OVERQUOTA);
	/* copying is refused too; moving is not */
	struct mbox *box = NULL;
	uint32_t seqs[1] = { 1 }, uids[1], uidv;
	assert_int_equal(mbox_open(store, "INBOX", false, &box), 0);
	assert_int_equal(mbox_copy(box, seqs, 1, "Archive", false, uids, &uidv), -1);
	mstore_error(store, &code);
	assert_int_equal(code, MSTORE_ERR_OVERQUOTA);
	assert_int_equal(mbox_copy(box, seqs, 1, "Archive", true, uids, &uidv), 0);
	assert_int_equal(mstore_quota(store, &bytes, &msgs), 0);
	assert_int_equal(msgs, 3);
	/* deleting a folder frees its usage */
	assert_int_equal(mstore_folder_delete(store, "Archive"), 0);
	assert_int_equal(mstore_quota(store, &bytes, &msgs), 0);
	assert_int_equal(bytes, 2);
	assert_int_equal(msgs, 2);
	mbox_close(&box);
	mstore_close(&store);
}

/* ---- regressions (review r2) ---- */

/* Renames the file of uid in dir/cur as another tool would: appends
 * letter to its flags. */
static void outside_flag(const char *dir, uint32_t uid, const char *letter)
{
	char prefix[32], name[256], from[PATH_MAX], to[PATH_MAX], cur[PATH_MAX];
	pathf(cur, sizeof(cur), "%s/cur", dir);
	snprintf(prefix, sizeof(prefix), ",U=%u:", uid);
	name[0] = '\0';
	DIR *d = opendir(cur);
	assert_non_null(d);
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strstr(e->d_name, prefix) != NULL) {
			snprintf(name, sizeof(name), "%s", e->d_name);
			break;
		}
	}
	closedir(d);
	assert_true(name[0] != '\0');
	pathf(from, sizeof(from), "%s/%s", cur, name);
	pathf(to, sizeof(to), "%s/%s%s", cur, name, letter);
	assert_int_equal(rename(from, to), 0);
}

/* COPY into the same folder while a source file was renamed by another
 * tool: the rescan must not drop the UIDNEXT/MODSEQ the copy already
 * took (UIDNEXT went backwards, later APPENDs failed on a UNIQUE
 * constraint). */
static void test_regress_copy_same_folder(void **state)
{
	struct mstore *store = open_store(NULL);
	struct mbox *box = NULL;
	uint32_t uids[3], uidv;
	for (int i = 0; i < 3; i++)
		append_msg(store, "INBOX", "Subject: x\r\n\r\nbody\r\n", 0);
	assert_int_equal(mbox_open(store, "INBOX", false, &box), 0);
	outside_flag(root, 3, "S");
	uint32_t seqs[3] = { 1, 2, 3 };
	assert_int_equal(mbox_copy(box, seqs, 3, "INBOX", false, uids, &uidv), 0);
	assert_int_equal(uids[0], 4);
	assert_int_equal(uids[2], 6);
	struct mstore_status st;
	assert_int_equal(mstore_folder_status(store, "INBOX", &st), 0);
	assert_int_equal(st.messages, 6);
	assert_int_equal(st.uidnext, 7);
	assert_int_equal(append_msg(store, "INBOX", "Subject: y\r\n\r\nb\r\n", 0), 7);
	deliver(root, "9000.N.host", "Subject: new\n\nhi\n");
	assert_int_equal(mstore_folder_status(store, "INBOX", &st), 0);
	assert_int_equal(st.messages, 8);
	assert_int_equal(st.uidnext, 9);
	struct rec r;
	sync_rec(box, true, &r);
	assert_int_equal(mbox_count(box), 8);
	assert_int_equal(mbox_msg(box, 8)->uid, 8);
	/* the MODSEQs of the copies are below the folder's */
	for (uint32_t s = 1; s <= 8; s++)
		assert_true(mbox_msg(box, s)->modseq <= mbox_highestmodseq(box));
	mbox_close(&box);
	mstore_close(&store);
}

/* EXPUNGE that meets a file renamed by another tool after it removed
 * others: the rescan must keep the MODSEQs already given out. */
static void test_regress_expunge_rescan(void **state)
{
	struct mstore *store = open_store(NULL);
	struct mbox *box = NULL;
	for (int i = 0; i < 3; i++)
		append_msg(store, "INBOX", "Subject: x\r\n\r\nbody\r\n", IMAP_FLAG_DELETED);
	assert_int_equal(mbox_open(store, "INBOX", false, &box), 0);
	uint64_t before = mbox_highestmodseq(box);
	outside_flag(root, 3, "F");
	assert_int_equal(mbox_expunge(box, NULL, NULL, NULL), 0);
	assert_int_equal(mbox_count(box), 0);
	struct mstore_status st;
	assert_int_equal(mstore_folder_status(store, "INBOX", &st), 0);
	/* 3 expunges and the flag change: 4 MODSEQs above before */
	assert_true(st.highestmodseq >= before + 4);
	struct imap_seqset v = { 0 };
	assert_int_equal(mbox_vanished_since(box, before, NULL, &v), 0);
	assert_int_equal(v.count, 1);
	assert_int_equal(v.ranges[0].lo, 1);
	assert_int_equal(v.ranges[0].hi, 3);
	imap_seqset_free(&v);
	/* nothing expunged above the folder's HIGHESTMODSEQ */
	assert_int_equal(mbox_vanished_since(box, st.highestmodseq, NULL, &v), 0);
	assert_int_equal(v.count, 0);
	imap_seqset_free(&v);
	mbox_close(&box);
	mstore_close(&store);
}

struct race_lookup {
	struct mstore *store;
	int ret;
	enum mstore_err code;
};

static void *race_status_cb(void *arg)
{
	struct race_lookup *rl = arg;
	struct mstore_status st;
	rl->ret = mstore_folder_status(rl->store, "A", &st);
	mstore_error(rl->store, &rl->code);
	return NULL;
}

/* A lookup of "A" racing another process's RENAME A B (between its
 * rename(2) and its COMMIT) must not delete the rows that are B's once
 * that commits: B keeps its UIDs and keywords under the same
 * UIDVALIDITY. */
static void test_regress_find_rename_race(void **state)
{
	struct mstore *p = open_store(NULL), *q = open_store(NULL);
	struct mbox *box = NULL;
	bool changed, conflict;
	assert_int_equal(mstore_folder_create(p, "A", 0), 0);
	for (int i = 0; i < 3; i++)
		append_msg(p, "A", "Subject: x\r\n\r\nbody\r\n", 0);
	assert_int_equal(mbox_open(p, "A", false, &box), 0);
	assert_int_equal(mbox_store(box, 1, MBOX_STORE_ADD, 0, "$Important", 0, &changed,
				    &conflict), 0);
	uint32_t uidv = mbox_uidvalidity(box);
	mbox_close(&box);
	/* q knows A (its row is read without a transaction) */
	struct mstore_status st;
	assert_int_equal(mstore_folder_status(q, "A", &st), 0);

	/* the other process: write lock, directory renamed, row not yet */
	char path[PATH_MAX], from[PATH_MAX], to[PATH_MAX];
	sqlite3 *db = NULL;
	pathf(path, sizeof(path), "%s/postern-index.db", root);
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE; UPDATE folder SET name='B' "
				      "WHERE name='A'", NULL, NULL, NULL), SQLITE_OK);
	pathf(from, sizeof(from), "%s/.A", root);
	pathf(to, sizeof(to), "%s/.B", root);
	assert_int_equal(rename(from, to), 0);
	struct race_lookup rl = { .store = q };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, race_status_cb, &rl), 0);
	usleep(300 * 1000);   /* q waits for the write lock by now */
	assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(rl.ret, -1);
	assert_int_equal(rl.code, MSTORE_ERR_NONEXISTENT);

	assert_int_equal(mbox_open(p, "B", false, &box), 0);
	assert_int_equal(mbox_uidvalidity(box), uidv);
	assert_int_equal(mbox_count(box), 3);
	for (uint32_t s = 1; s <= 3; s++)
		assert_int_equal(mbox_msg(box, s)->uid, s);
	assert_non_null(mbox_msg(box, 1)->keywords);
	assert_string_equal(mbox_msg(box, 1)->keywords, "$Important");
	assert_int_equal(mbox_uidnext(box), 4);
	mbox_close(&box);
	mstore_close(&q);
	mstore_close(&p);
}

/* A folder deleted and created again at once gets a new UIDVALIDITY,
 * also when its old one was the highest (the row is gone by then). */
static void test_regress_uidvalidity_reuse(void **state)
{
	struct mstore *store = open_store(NULL);
	struct mstore_status s1, s2, s3;
	assert_int_equal(mstore_folder_create(store, "X", 0), 0);
	append_msg(store, "X", "Subject: old1\r\n\r\nold\r\n", 0);
	append_msg(store, "X", "Subject: old2\r\n\r\nold\r\n", 0);
	assert_int_equal(mstore_folder_status(store, "X", &s1), 0);
	assert_int_equal(mstore_folder_delete(store, "X"), 0);
	assert_int_equal(mstore_folder_create(store, "X", 0), 0);
	assert_int_equal(append_msg(store, "X", "Subject: NEW\r\n\r\nnew\r\n", 0), 1);
	assert_int_equal(mstore_folder_status(store, "X", &s2), 0);
	assert_true(s2.uidvalidity > s1.uidvalidity);
	/* and again, from another store of the account */
	struct mstore *other = open_store(NULL);
	assert_int_equal(mstore_folder_delete(other, "X"), 0);
	assert_int_equal(mstore_folder_create(other, "X", 0), 0);
	assert_int_equal(mstore_folder_status(store, "X", &s3), 0);
	assert_true(s3.uidvalidity > s2.uidvalidity);
	/* its postern-uidvalidity file says so too */
	char path[PATH_MAX];
	pathf(path, sizeof(path), "%s/.X/postern-uidvalidity", root);
	char *data = read_all(path);
	char want[32];
	snprintf(want, sizeof(want), "%u 1\n", s3.uidvalidity);
	assert_string_equal(data, want);
	free(data);
	mstore_close(&other);
	mstore_close(&store);
}

/* MULTIAPPEND: each message fits the quota alone, all of them do not:
 * the commit refuses them all (RFC 3502: all or none). */
static void test_regress_multiappend_quota(void **state)
{
	struct mstore_settings set = settings;
	set.quota_bytes = 100;
	set.quota_messages = 10;
	struct mstore *store = open_store(&set);
	struct mstore_append *a[3] = { NULL };
	uint32_t uids[3], uidv;
	enum mstore_err code;
	uint64_t bytes, msgs;
	const char *body = "0123456789012345678901234567890123456789";   /* 40 */

	for (int i = 0; i < 3; i++) {
		assert_int_equal(mstore_append_begin(store, "INBOX", 40, &a[i]), 0);
		assert_int_equal(mstore_append_write(a[i], body, 40), 0);
	}
	assert_int_equal(mstore_append_commit(a, 3, uids, &uidv), -1);
	mstore_error(store, &code);
	assert_int_equal(code, MSTORE_ERR_OVERQUOTA);
	assert_int_equal(count_files(root, "cur"), 0);
	assert_int_equal(count_files(root, "tmp"), 0);
	assert_int_equal(mstore_quota(store, &bytes, &msgs), 0);
	assert_int_equal(bytes, 0);
	/* two fit; the message count limit counts the whole command too */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(mstore_append_begin(store, "INBOX", 40, &a[i]), 0);
		assert_int_equal(mstore_append_write(a[i], body, 40), 0);
	}
	assert_int_equal(mstore_append_commit(a, 2, uids, &uidv), 0);
	assert_int_equal(mstore_quota(store, &bytes, &msgs), 0);
	assert_int_equal(bytes, 80);
	assert_int_equal(msgs, 2);
	mstore_close(&store);

	set.quota_bytes = 0;
	set.quota_messages = 3;
	store = open_store(&set);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(mstore_append_begin(store, "INBOX", 1, &a[i]), 0);
		assert_int_equal(mstore_append_write(a[i], "x", 1), 0);
	}
	assert_int_equal(mstore_append_commit(a, 2, uids, &uidv), -1);
	mstore_error(store, &code);
	assert_int_equal(code, MSTORE_ERR_OVERQUOTA);
	assert_int_equal(count_files(root, "cur"), 2);
	mstore_close(&store);
}

/* Writes set as text ("" when empty) for comparisons. */
static void seqset_text(const struct imap_seqset *set, char *out, size_t size)
{
	size_t o = 0;
	out[0] = '\0';
	for (unsigned i = 0; i < set->count; i++) {
		int n = set->ranges[i].lo == set->ranges[i].hi ?
			snprintf(out + o, size - o, "%s%u", i > 0 ? "," : "", set->ranges[i].lo) :
			snprintf(out + o, size - o, "%s%u:%u", i > 0 ? "," : "",
				 set->ranges[i].lo, set->ranges[i].hi);
		assert_true(n > 0 && (size_t)n < size - o);
		o += (size_t)n;
	}
}

static void check_vanished(struct mbox *box, uint64_t since, const char *known,
			   const char *want)
{
	struct imap_seqset k = { 0 }, v = { 0 };
	char got[128];
	if (known != NULL) {
		assert_int_equal(imap_seqset_parse(known, strlen(known), &k), 0);
		imap_seqset_resolve(&k, mbox_uidnext(box) - 1);   /* as callers do */
	}
	assert_int_equal(mbox_vanished_since(box, since, known != NULL ? &k : NULL, &v), 0);
	seqset_text(&v, got, sizeof(got));
	if (strcmp(got, want) != 0)
		fail_msg("vanished since %llu known %s: \"%s\", want \"%s\"",
			 (unsigned long long)since, known != NULL ? known : "-", got, want);
	imap_seqset_free(&k);
	imap_seqset_free(&v);
}

/* QRESYNC across an index rebuild (RFC 7162 3.2.5.1): the expunge history
 * is gone, so a client whose MODSEQ is from before the rebuild gets every
 * UID it may know that is not there any more. */
static void test_regress_vanished_after_rebuild(void **state)
{
	struct mstore *store = open_store(NULL);
	struct mbox *box = NULL;
	bool changed, conflict;
	for (int i = 0; i < 6; i++)
		append_msg(store, "INBOX", "Subject: v\r\n\r\nx\r\n", 0);
	assert_int_equal(mbox_open(store, "INBOX", false, &box), 0);
	/* what a client saw: UIDs 1..6 at this MODSEQ */
	uint64_t client = mbox_highestmodseq(box);
	uint32_t uidv = mbox_uidvalidity(box);
	assert_int_equal(mbox_store(box, 2, MBOX_STORE_ADD, IMAP_FLAG_DELETED, NULL, 0,
				    &changed, &conflict), 0);
	assert_int_equal(mbox_expunge(box, NULL, NULL, NULL), 0);
	check_vanished(box, client, NULL, "2");
	mbox_close(&box);
	mstore_close(&store);

	/* index lost; meanwhile another tool removed UID 4 */
	char path[PATH_MAX];
	static const char *const files[] = { "", "-wal", "-shm" };
	for (int i = 0; i < 3; i++) {
		pathf(path, sizeof(path), "%s/postern-index.db%s", root, files[i]);
		unlink(path);
	}
	pathf(path, sizeof(path), "%s/cur", root);
	DIR *d = opendir(path);
	assert_non_null(d);
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strstr(e->d_name, ",U=4:") != NULL) {
			char f[PATH_MAX];
			pathf(f, sizeof(f), "%s/%s", path, e->d_name);
			assert_int_equal(unlink(f), 0);
		}
	}
	closedir(d);

	store = open_store(NULL);
	assert_int_equal(mbox_open(store, "INBOX", false, &box), 0);
	assert_int_equal(mbox_uidvalidity(box), uidv);
	assert_int_equal(mbox_count(box), 4);   /* 1 3 5 6 */
	assert_true(mbox_highestmodseq(box) > client);
	/* from before the rebuild: everything not there */
	check_vanished(box, client, NULL, "2,4");
	check_vanished(box, client, "1:3", "2");
	check_vanished(box, client, "2:*", "2,4");
	check_vanished(box, client, "5,6,9", "");
	check_vanished(box, 0, NULL, "2,4");
	/* from after it: the history is complete again */
	uint64_t after = mbox_highestmodseq(box);
	check_vanished(box, after, NULL, "");
	assert_int_equal(mbox_store(box, 3, MBOX_STORE_ADD, IMAP_FLAG_DELETED, NULL, 0,
				    &changed, &conflict), 0);
	assert_int_equal(mbox_expunge(box, NULL, NULL, NULL), 0);
	check_vanished(box, after, NULL, "5");
	check_vanished(box, client, NULL, "2,4:5");
	/* a new folder has its whole history */
	struct mbox *nb = NULL;
	assert_int_equal(mstore_folder_create(store, "Fresh", 0), 0);
	append_msg(store, "Fresh", "Subject: v\r\n\r\nx\r\n", 0);
	assert_int_equal(mbox_open(store, "Fresh", false, &nb), 0);
	check_vanished(nb, 0, NULL, "");
	mbox_close(&nb);
	mbox_close(&box);
	mstore_close(&store);
}

/* Counts files in dir/cur whose name has ",U=<uid>:". */
static unsigned files_with_uid(const char *dir, uint32_t uid)
{
	char path[PATH_MAX], pat[32];
	unsigned n = 0;
	pathf(path, sizeof(path), "%s/cur", dir);
	snprintf(pat, sizeof(pat), ",U=%u:", uid);
	DIR *d = opendir(path);
	assert_non_null(d);
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		n += strstr(e->d_name, pat) != NULL;
	closedir(d);
	return n;
}

/* Another process sets the index aside and rebuilds it while this one is
 * inside an entry point (an APPEND between begin and commit): the commit
 * must not give out a UID from the old index, which the new one gives out
 * too. */
static void test_regress_index_replaced_mid_append(void **state)
{
	struct mstore *store = open_store(NULL);
	append_msg(store, "INBOX", "Subject: 1\r\n\r\nx\r\n", 0);
	append_msg(store, "INBOX", "Subject: 2\r\n\r\nx\r\n", 0);
	struct mstore_append *a = NULL;
	uint32_t uid = 0, uidv;
	assert_int_equal(mstore_append_begin(store, "INBOX", 15, &a), 0);
	assert_int_equal(mstore_append_write(a, "Subject: q\r\n\r\n", 14), 0);

	/* the other process: what db_set_aside() and the rebuild do */
	char path[PATH_MAX], dest[PATH_MAX];
	pathf(path, sizeof(path), "%s/postern-index.db", root);
	pathf(dest, sizeof(dest), "%s/postern-index.db.corrupt-1", root);
	assert_int_equal(rename(path, dest), 0);
	pathf(dest, sizeof(dest), "%s/postern-index.db-wal", root);
	unlink(dest);
	pathf(dest, sizeof(dest), "%s/postern-index.db-shm", root);
	unlink(dest);
	struct mstore *other = open_store(NULL);
	assert_int_equal(append_msg(other, "INBOX", "Subject: p\r\n\r\nx\r\n", 0), 3);

	/* refused, not UID 3 again */
	assert_int_equal(mstore_append_commit(&a, 1, &uid, &uidv), -1);
	assert_int_equal(files_with_uid(root, 3), 1);
	assert_int_equal(count_files(root, "tmp"), 0);
	/* the next entry point uses the new index */
	assert_int_equal(append_msg(store, "INBOX", "Subject: q\r\n\r\nx\r\n", 0), 4);
	struct mstore_status st;
	assert_int_equal(mstore_folder_status(other, "INBOX", &st), 0);
	assert_int_equal(st.messages, 4);
	assert_int_equal(st.uidnext, 5);
	for (uint32_t u = 1; u <= 4; u++)
		assert_int_equal(files_with_uid(root, u), 1);
	mstore_close(&other);
	mstore_close(&store);
}

/* ---- timing (printed, not asserted) ---- */

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void test_timing(void **state)
{
	enum { N = 10000 };
	struct mstore *store = open_store(NULL);
	struct mbox *box = NULL;
	char name[64], path[PATH_MAX];
	const char *body = "From: a@example.com\nTo: b@example.com\nSubject: timing\n\n"
			   "Hello, this is a test message body.\n";

	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "%d.T%05d.host", 1700000000 + i, i);
		pathf(path, sizeof(path), "%s/new/%s", root, name);
		write_file(path, body);
	}
	double t0 = now_ms();
	assert_int_equal(mbox_open(store, "INBOX", false, &box), 0);
	double t_scratch = now_ms() - t0;
	assert_int_equal(mbox_count(box), N);
	assert_int_equal(mbox_msg(box, N)->uid, N);
	mbox_close(&box);

	t0 = now_ms();
	assert_int_equal(mbox_open(store, "INBOX", false, &box), 0);
	double t_select = now_ms() - t0;
	assert_int_equal(mbox_count(box), N);

	struct rec r;
	t0 = now_ms();
	for (int i = 0; i < 100; i++)
		sync_rec(box, true, &r);
	double t_nochange = (now_ms() - t0) / 100;

	t0 = now_ms();
	assert_int_equal(mbox_begin(box), 0);
	for (uint32_t seq = 1; seq <= 1000; seq++) {
		bool changed, conflict;
		assert_int_equal(mbox_store(box, seq, MBOX_STORE_ADD, IMAP_FLAG_SEEN, NULL, 0,
					    &changed, &conflict), 0);
		assert_true(changed);
	}
	assert_int_equal(mbox_commit(box), 0);
	double t_store = now_ms() - t0;
	t0 = now_ms();
	sync_rec(box, true, &r);
	double t_after_store = now_ms() - t0;
	assert_int_equal(r.n_flags, 0);

	/* another session sees the 1,000 changes */
	struct mstore *other = open_store(NULL);
	struct mbox *ob = NULL;
	assert_int_equal(mbox_open(other, "INBOX", true, &ob), 0);
	assert_int_equal(mbox_first_unseen(ob), 1001);
	mbox_close(&ob);
	mstore_close(&other);

	/* index rebuild from the file names */
	mbox_close(&box);
	mstore_close(&store);
	static const char *const files[] = { "", "-wal", "-shm" };
	for (int i = 0; i < 3; i++) {
		pathf(path, sizeof(path), "%s/postern-index.db%s", root, files[i]);
		unlink(path);
	}
	t0 = now_ms();
	store = open_store(NULL);
	double t_rebuild = now_ms() - t0;
	assert_int_equal(mbox_open(store, "INBOX", true, &box), 0);
	assert_int_equal(mbox_count(box), N);
	assert_int_equal(mbox_first_unseen(box), 1001);
	mbox_close(&box);
	mstore_close(&store);

	printf("timing: sync of a %d-message INBOX from scratch (new/ -> cur/): %.1f ms\n", N,
	       t_scratch);
	printf("timing: reopen/select of it: %.2f ms\n", t_select);
	printf("timing: no-change sync: %.4f ms\n", t_nochange);
	printf("timing: 1,000 flag changes in one mbox_begin/commit: %.1f ms "
	       "(next sync %.2f ms)\n", t_store, t_after_store);
	printf("timing: index rebuild of it from file names: %.1f ms\n", t_rebuild);
}

int main(void)
{
	log_init("test-mstore", "stderr", LOG_LEVEL_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_sync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_flags, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_sessions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outside_changes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_append, setup, teardown),
		cmocka_unit_test_setup_teardown(test_multiappend, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_move, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uid_expunge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_folders, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rebuild_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rebuild_corrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rebuild_while_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quota_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quota_append, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache_deferred, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache_upgrade, setup, teardown),
		cmocka_unit_test_setup_teardown(test_regress_copy_same_folder, setup, teardown),
		cmocka_unit_test_setup_teardown(test_regress_expunge_rescan, setup, teardown),
		cmocka_unit_test_setup_teardown(test_regress_find_rename_race, setup, teardown),
		cmocka_unit_test_setup_teardown(test_regress_uidvalidity_reuse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_regress_multiappend_quota, setup, teardown),
		cmocka_unit_test_setup_teardown(test_regress_vanished_after_rebuild, setup, teardown),
		cmocka_unit_test_setup_teardown(test_regress_index_replaced_mid_append, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timing, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
