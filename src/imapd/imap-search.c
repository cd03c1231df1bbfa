/*
 * imap-search.c — SEARCH and UID SEARCH in the imapd worker (RFC 9051
 * 6.4.4, RFC 3501 6.4.4), with ESEARCH result options (RFC 4731: RETURN
 * MIN MAX ALL COUNT), SEARCHRES (RFC 5182: SAVE and "$"), MODSEQ (RFC
 * 7162 3.1.5) and CHARSET UTF-8 / US-ASCII.
 *
 * The criteria are parsed and evaluated by lib-imap (imap-search.h); this
 * file supplies the per-message callbacks: flags, UID, sizes and dates
 * from the index; FROM, TO, CC, BCC, SUBJECT (and HEADER with those
 * fields) and SENT* from the index's SEARCH data (mbox_search_data_load,
 * loaded SEARCH_WINDOW messages at a time); other headers and text from
 * lib-mime on a file opened only when such a key is reached. A message
 * whose file had to be parsed gets its SEARCH data cached for next time.
 * Runs on pool threads in chunks: a job stops after IMAP_CHUNK_MSGS
 * messages whose file it had to read.
 */
#include "imapd/imap-private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib-imap/imap-search.h"
#include "lib-imap/imap-util.h"
#include "lib-mime/mime.h"

/* Messages evaluated without opening a file, per chunk. */
#define SEARCH_CHEAP_PER_CHUNK 50000u
/* Messages whose SEARCH data is loaded from the index in one query. */
#define SEARCH_WINDOW 512u
/* Needles folded once per command (a program has few string keys). */
#define SEARCH_FOLDED_MAX 16u
/* SEARCH data of one message is at most this large (else not cached). */
#define SEARCH_DATA_MAX (64u * 1024)

struct search_priv {
	unsigned ret;              /* IMAP_SEARCH_RET_* */
	unsigned first_key;        /* index of the first criterion argument */
	struct imap_search *search;
	bool started;
	uint32_t pos;              /* next sequence number to look at */
	uint32_t *hits;            /* seqs */
	uint32_t nhits, hits_alloc;
	uint64_t max_modseq;
	unsigned cheap;
	/* SEARCH data of messages win_first .. win_first + win_n - 1 */
	struct mbox_search_data win[SEARCH_WINDOW];
	uint32_t win_first, win_n;
	void *win_arena;
	bool win_failed;
	struct {
		const char *needle;  /* the program's string (stable) */
		char *folded;
	} folded[SEARCH_FOLDED_MAX];
	unsigned nfolded;
};

static void search_priv_free(void *p)
{
	struct search_priv *sp = p;
	imap_search_free(&sp->search);
	free(sp->hits);
	free(sp->win_arena);
	for (unsigned i = 0; i < sp->nfolded; i++)
		free(sp->folded[i].folded);
	free(sp);
}

int imap_cmd_search_check(struct imap_cmd *cmd)
{
	struct search_priv *sp = calloc(1, sizeof(*sp));
	if (sp == NULL)
		return -1;
	cmd->priv = sp;
	cmd->priv_free = search_priv_free;
	bool badcharset = false;
	const char *error = NULL;
	int first = imap_search_parse_options(cmd->args, cmd->nargs, &sp->ret, &badcharset, &error);
	if (first < 0) {
		if (badcharset)
			imap_cmd_no(cmd, "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset");
		else
			imap_cmd_bad(cmd, "%s", error != NULL ? error : "Invalid SEARCH options");
		return -1;
	}
	if ((unsigned)first >= cmd->nargs) {
		imap_cmd_bad(cmd, "Missing SEARCH criteria");
		return -1;
	}
	sp->first_key = (unsigned)first;
	return 0;
}

/* ---- per-message callbacks ---- */

struct search_msg {
	struct imap_cmd *cmd;
	struct search_priv *sp;
	uint32_t seq;
	const struct mstore_msg *msg;
	int fd;
	struct mime_message *mime;
	bool failed;
	const struct mbox_search_data *data; /* NULL: not looked up yet */
	bool data_looked;
};

static struct mime_message *search_mime(struct search_msg *m)
{
	if (m->mime != NULL || m->failed)
		return m->mime;
	if (mbox_msg_open(m->cmd->s->mbox, m->seq, &m->fd) < 0) {
		m->fd = -1;
		m->failed = true;
		m->cmd->expunge_issued = m->msg->expunged;
		return NULL;
	}
	m->cmd->chunk_msgs++;
	m->mime = mime_parse_fd(m->fd);
	if (m->mime == NULL)
		m->failed = true;
	return m->mime;
}

/* The message's cached SEARCH data, or NULL (then the file answers). */
static const struct mbox_search_data *search_data(struct search_msg *m)
{
	struct search_priv *sp = m->sp;
	if (m->data_looked)
		return m->data;
	m->data_looked = true;
	if (m->msg->expunged)
		return NULL;
	if (m->seq < sp->win_first || m->seq >= sp->win_first + sp->win_n) {
		struct mbox *mbox = m->cmd->s->mbox;
		uint32_t last = mbox_count(mbox);
		if (last - m->seq >= SEARCH_WINDOW)
			last = m->seq + SEARCH_WINDOW - 1;
		free(sp->win_arena);
		sp->win_arena = NULL;
		sp->win_first = m->seq;
		sp->win_n = last - m->seq + 1;
		sp->win_failed = mbox_search_data_load(mbox, m->seq, last, sp->win,
						      &sp->win_arena) < 0;
	}
	if (sp->win_failed)
		return NULL;
	const struct mbox_search_data *d = &sp->win[m->seq - sp->win_first];
	m->data = d->hdrs != NULL ? d : NULL;
	return m->data;
}

/* Caches the SEARCH data of a message whose file this search parsed. */
static void search_data_fill(struct search_msg *m)
{
	if (m->mime == NULL || m->msg->expunged || search_data(m) != NULL)
		return;
	struct buf b;
	buf_init(&b, SEARCH_DATA_MAX);
	if (mime_search_fields(m->mime, &b) == 0)
		(void)mbox_search_data_set(m->cmd->s->mbox, m->seq, b.data != NULL ? b.data : "",
					   b.len, mime_sent_date(m->mime, true));
	buf_free(&b);
}

static const char *search_folded(struct search_priv *sp, const char *needle)
{
	for (unsigned i = 0; i < sp->nfolded; i++)
		if (sp->folded[i].needle == needle)
			return sp->folded[i].folded;
	if (sp->nfolded == SEARCH_FOLDED_MAX)
		return NULL;
	char *f = mime_fold(needle);
	if (f == NULL)
		return NULL;
	sp->folded[sp->nfolded].needle = needle;
	sp->folded[sp->nfolded].folded = f;
	sp->nfolded++;
	return f;
}

static uint64_t search_size_cb(void *ctx)
{
	struct search_msg *m = ctx;
	uint64_t size = m->msg->vsize;
	if (size == 0 && mbox_msg_vsize(m->cmd->s->mbox, m->seq, &size) < 0)
		return 0;
	return size;
}

static bool search_keyword_cb(void *ctx, const char *kw)
{
	struct search_msg *m = ctx;
	const char *p = m->msg->keywords;
	size_t kl = strlen(kw);
	while (p != NULL && *p != '\0') {
		const char *sp = strchr(p, ' ');
		size_t len = sp != NULL ? (size_t)(sp - p) : strlen(p);
		if (len == kl && strncasecmp(p, kw, kl) == 0)
			return true;
		p = sp != NULL ? sp + 1 : NULL;
	}
	return false;
}

static int64_t search_sent_date_cb(void *ctx)
{
	const struct mbox_search_data *d = search_data(ctx);
	if (d != NULL)
		return d->sentday;
	struct mime_message *mime = search_mime(ctx);
	return mime != NULL ? mime_sent_date(mime, true) : -1;
}

static bool search_header_cb(void *ctx, const char *field, const char *needle)
{
	struct search_msg *m = ctx;
	unsigned id = mime_search_field_id(field);
	if (id != 0) {
		const struct mbox_search_data *d = search_data(m);
		const char *folded = d != NULL ? search_folded(m->sp, needle) : NULL;
		if (folded != NULL)
			return mime_search_fields_contain(d->hdrs, d->hdrs_len, id, folded);
	}
	struct mime_message *mime = search_mime(m);
	return mime != NULL && mime_header_contains(mime, field, needle);
}

static bool search_text_cb(void *ctx, const char *needle, bool with_headers)
{
	struct mime_message *mime = search_mime(ctx);
	return mime != NULL && mime_text_contains(mime, needle, with_headers);
}

static int search_hit(struct search_priv *sp, uint32_t seq)
{
	if (sp->nhits == sp->hits_alloc) {
		uint32_t n = sp->hits_alloc == 0 ? 64 : sp->hits_alloc * 2;
		uint32_t *h = realloc(sp->hits, (size_t)n * sizeof(*h));
		if (h == NULL)
			return -1;
		sp->hits = h;
		sp->hits_alloc = n;
	}
	sp->hits[sp->nhits++] = seq;
	return 0;
}

/* ---- results ---- */

static void search_write_results(struct imap_cmd *cmd, struct search_priv *sp)
{
	struct imap_session *s = cmd->s;
	struct mbox *mbox = s->mbox;
	bool uid = cmd->uid;
	bool modseq = imap_search_uses_modseq(sp->search);
	unsigned ret = sp->ret;
	uint32_t n = sp->nhits;

	if (ret & IMAP_SEARCH_RET_SAVE) {
		/* RFC 5182 2.1: "$" holds UIDs; with only MIN/MAX, just those */
		imap_seqset_free(&s->saved);
		memset(&s->saved, 0, sizeof(s->saved));
		bool only_minmax = (ret & (IMAP_SEARCH_RET_MIN | IMAP_SEARCH_RET_MAX)) != 0 &&
				   (ret & (IMAP_SEARCH_RET_ALL | IMAP_SEARCH_RET_COUNT)) == 0;
		for (uint32_t i = 0; i < n; i++) {
			if (only_minmax && !((i == 0 && (ret & IMAP_SEARCH_RET_MIN)) ||
					     (i == n - 1 && (ret & IMAP_SEARCH_RET_MAX))))
				continue;
			imap_seqset_add(&s->saved, mbox_msg(mbox, sp->hits[i])->uid);
		}
		s->saved_valid = true;
	}

	bool esearch = (ret & IMAP_SEARCH_RET_GIVEN) != 0 || s->rev2;
	if (!esearch) {
		struct buf *out = &s->out;
		buf_append_str(out, "* SEARCH");
		for (uint32_t i = 0; i < n; i++) {
			const struct mstore_msg *msg = mbox_msg(mbox, sp->hits[i]);
			if (buf_printf(out, " %u", uid ? msg->uid : sp->hits[i]) < 0)
				break;
		}
		if (modseq && n > 0)
			buf_printf(out, " (MODSEQ %llu)", (unsigned long long)sp->max_modseq);
		buf_append_str(out, "\r\n");
		return;
	}
	unsigned want = ret & ~(IMAP_SEARCH_RET_GIVEN);
	if (want == IMAP_SEARCH_RET_SAVE)
		return; /* RFC 5182 2.4: SAVE alone gives no ESEARCH */
	if ((want & ~IMAP_SEARCH_RET_SAVE) == 0)
		want |= IMAP_SEARCH_RET_ALL; /* RETURN () or no RETURN under rev2 */
	struct buf *out = &s->out;
	buf_append_str(out, "* ESEARCH (TAG ");
	imap_write_string(out, cmd->tag, strlen(cmd->tag), false);
	buf_append_str(out, ")");
	if (uid)
		buf_append_str(out, " UID");
	if (n > 0) {
		uint32_t min = uid ? mbox_msg(mbox, sp->hits[0])->uid : sp->hits[0];
		uint32_t max = uid ? mbox_msg(mbox, sp->hits[n - 1])->uid : sp->hits[n - 1];
		if (want & IMAP_SEARCH_RET_MIN)
			buf_printf(out, " MIN %u", min);
		if (want & IMAP_SEARCH_RET_MAX)
			buf_printf(out, " MAX %u", max);
	}
	if (want & IMAP_SEARCH_RET_COUNT)
		buf_printf(out, " COUNT %u", n);
	if ((want & IMAP_SEARCH_RET_ALL) && n > 0) {
		struct imap_seqset all;
		memset(&all, 0, sizeof(all));
		for (uint32_t i = 0; i < n; i++)
			imap_seqset_add(&all, uid ? mbox_msg(mbox, sp->hits[i])->uid : sp->hits[i]);
		buf_append_str(out, " ALL ");
		imap_seqset_write(&all, out);
		imap_seqset_free(&all);
	}
	if (modseq && n > 0)
		buf_printf(out, " MODSEQ %llu", (unsigned long long)sp->max_modseq);
	buf_append_str(out, "\r\n");
}

void imap_cmd_search_run(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	struct search_priv *sp = cmd->priv;
	struct mbox *mbox = s->mbox;
	uint32_t count = mbox_count(mbox);

	if (!sp->started) {
		sp->started = true;
		const char *error = NULL;
		if (imap_search_parse(cmd->args + sp->first_key, cmd->nargs - sp->first_key, count,
				      count > 0 ? mbox_msg(mbox, count)->uid : 0, &sp->search,
				      &error) < 0) {
			imap_cmd_bad(cmd, "%s", error != NULL ? error : "Invalid SEARCH criteria");
			return;
		}
		if (imap_search_uses_modseq(sp->search))
			s->condstore = true;
		sp->pos = 1;
	}
	sp->cheap = 0;
	(void)mbox_read_begin(mbox);   /* one snapshot for the chunk's lookups */
	while (sp->pos <= count) {
		if (cmd->chunk_msgs >= IMAP_CHUNK_MSGS || sp->cheap >= SEARCH_CHEAP_PER_CHUNK) {
			mbox_read_end(mbox);
			mbox_cache_flush(mbox);
			return; /* next chunk */
		}
		uint32_t seq = sp->pos++;
		const struct mstore_msg *msg = mbox_msg(mbox, seq);
		struct search_msg m = { .cmd = cmd, .sp = sp, .seq = seq, .msg = msg, .fd = -1 };
		struct imap_search_msg q = {
			.seq = seq,
			.uid = msg->uid,
			.flags = s->rev2 ? (msg->flags & ~IMAP_FLAG_RECENT) : msg->flags,
			.modseq = msg->modseq,
			.internaldate = msg->internaldate,
			.size = search_size_cb,
			.has_keyword = search_keyword_cb,
			.sent_date = search_sent_date_cb,
			.header_contains = search_header_cb,
			.text_contains = search_text_cb,
			.ctx = &m,
		};
		bool match = imap_search_match(sp->search, &q, s->saved_valid ? &s->saved : NULL);
		if (m.mime == NULL && m.fd < 0)
			sp->cheap++;
		search_data_fill(&m);
		mime_free(&m.mime);
		if (m.fd >= 0)
			close(m.fd);
		if (!match)
			continue;
		/* mbox_msg pointers may have moved (vsize cache): look again */
		msg = mbox_msg(mbox, seq);
		if (msg->modseq > sp->max_modseq)
			sp->max_modseq = msg->modseq;
		if (search_hit(sp, seq) < 0) {
			mbox_read_end(mbox);
			imap_cmd_serverbug(cmd, "out of memory in SEARCH");
			return;
		}
	}
	mbox_read_end(mbox);
	mbox_cache_flush(mbox);
	search_write_results(cmd, sp);
	imap_cmd_ok(cmd, "%s completed", cmd->def->name);
}
