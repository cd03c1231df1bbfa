/*
 * imap-fetch.c — FETCH and STORE (and their UID forms) in the imapd
 * worker: RFC 9051 6.4.5/6.4.6 and 7.5.2, BINARY (RFC 3516), CONDSTORE
 * and QRESYNC modifiers (RFC 7162: MODSEQ, CHANGEDSINCE, VANISHED,
 * UNCHANGEDSINCE with [MODIFIED]).
 *
 * Runs on pool threads, in chunks: a job stops after IMAP_CHUNK_BYTES of
 * output or IMAP_CHUNK_MSGS messages and resumes where it was, even in the
 * middle of a literal. BODY[] and BODY[TEXT] literals are streamed from
 * the Maildir file in IMAP_STREAM_PIECE reads with LF -> CRLF conversion
 * (the files have LF line ends; IMAP counts CRLF); other sections come
 * from lib-mime into a buffer and are streamed from there.
 *
 * FLAGS, UID, INTERNALDATE, RFC822.SIZE and MODSEQ come from the index
 * and never open the file; ENVELOPE, BODYSTRUCTURE and BODY come from the
 * index cache and are computed with lib-mime (then cached) on a miss.
 *
 * A message expunged by another session after this view last synced
 * (RFC 2180 4.1, RFC 9051 7.5.1): index data is still answered from the
 * view; when its file is needed and gone, the message is left out and the
 * command ends with "NO [EXPUNGEISSUED]" after everything else was sent
 * (RFC 9051 7.1: "Some of the requested messages no longer exist").
 */
#include "imapd/imap-private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/util.h"
#include "lib-imap/imap-search.h"
#include "lib-imap/imap-util.h"
#include "lib-mime/mime.h"

/* A section materialised by lib-mime is at most this large. */
#define FETCH_SECTION_MAX (64u * 1024 * 1024)
#define FETCH_MAX_ITEMS 64

enum fetch_type {
	FI_FLAGS, FI_INTERNALDATE, FI_SIZE, FI_ENVELOPE, FI_BODYSTRUCTURE, FI_BODY, FI_UID,
	FI_MODSEQ, FI_SECTION, FI_BINARY, FI_BINARY_SIZE,
};

struct fetch_item {
	enum fetch_type type;
	char *label;         /* response name: "BODY[HEADER]", "RFC822", "BINARY[1]" */
	char *section;       /* text inside the brackets (FI_SECTION/BINARY*) */
	bool peek;
	bool partial;
	uint64_t off, len;
	bool whole;          /* section "": the whole message, streamed */
	bool text;           /* section "TEXT": the body, streamed */
};

struct fetch_stream {
	bool active;
	bool from_mem;
	struct buf mem;      /* from_mem: the octets (CRLF already) */
	size_t mem_off;
	uint64_t file_off;   /* !from_mem: next file octet */
	uint64_t skip;       /* converted octets still to skip (partial offset) */
	uint64_t left;       /* octets still to send */
	bool prev_cr;
	bool eof;            /* the file ended early: pad */
	bool nul80;          /* BODY[...]: NUL sent as 0x80 (see fetch_nul80()) */
};

struct fetch_priv {
	struct fetch_item items[FETCH_MAX_ITEMS];
	unsigned nitems;
	struct imap_seqset set;
	uint64_t changedsince;
	bool has_changedsince;
	bool vanished;
	bool need_file;      /* sections */
	bool set_seen;
	bool has_flags_item;

	uint32_t *seqs;
	uint32_t n, pos;
	bool started;
	bool in_msg;
	unsigned item_idx;
	bool seen_changed;   /* current message got \Seen: report FLAGS */
	bool search_filled;  /* current message's SEARCH data cached */
	int fd;
	struct mime_message *mime;
	struct fetch_stream stream;
};

static void fetch_msg_release(struct fetch_priv *fp)
{
	fp->search_filled = false;
	mime_free(&fp->mime);
	if (fp->fd >= 0) {
		close(fp->fd);
		fp->fd = -1;
	}
	fp->stream.active = false;
	buf_free(&fp->stream.mem);
}

static void fetch_priv_free(void *p)
{
	struct fetch_priv *fp = p;
	for (unsigned i = 0; i < fp->nitems; i++) {
		free(fp->items[i].label);
		free(fp->items[i].section);
	}
	fetch_msg_release(fp);
	imap_seqset_free(&fp->set);
	free(fp->seqs);
	free(fp);
}

/* ---- parsing ---- */

static struct fetch_item *fetch_add(struct fetch_priv *fp, enum fetch_type type)
{
	if (fp->nitems >= FETCH_MAX_ITEMS)
		return NULL;
	struct fetch_item *it = &fp->items[fp->nitems++];
	memset(it, 0, sizeof(*it));
	it->type = type;
	return it;
}

static bool fetch_has(const struct fetch_priv *fp, enum fetch_type type)
{
	for (unsigned i = 0; i < fp->nitems; i++)
		if (fp->items[i].type == type)
			return true;
	return false;
}

/* BODY[...]<o.n> / BINARY[...]<o.n> / BINARY.SIZE[...] */
static int fetch_parse_section(struct fetch_priv *fp, const char *att, const char **error_r)
{
	const char *lb = strchr(att, '[');
	const char *rb = lb != NULL ? strchr(lb, ']') : NULL;
	if (lb == NULL || rb == NULL) {
		*error_r = "Invalid section";
		return -1;
	}
	size_t plen = (size_t)(lb - att);
	enum fetch_type type;
	bool peek = false;
	const char *resp;
	if (plen == 4 && strncasecmp(att, "BODY", 4) == 0) {
		type = FI_SECTION;
		resp = "BODY";
	} else if (plen == 9 && strncasecmp(att, "BODY.PEEK", 9) == 0) {
		type = FI_SECTION;
		peek = true;
		resp = "BODY";
	} else if (plen == 6 && strncasecmp(att, "BINARY", 6) == 0) {
		type = FI_BINARY;
		resp = "BINARY";
	} else if (plen == 11 && strncasecmp(att, "BINARY.PEEK", 11) == 0) {
		type = FI_BINARY;
		peek = true;
		resp = "BINARY";
	} else if (plen == 11 && strncasecmp(att, "BINARY.SIZE", 11) == 0) {
		type = FI_BINARY_SIZE;
		peek = true;
		resp = "BINARY.SIZE";
	} else {
		*error_r = "Unknown FETCH attribute";
		return -1;
	}
	size_t slen = (size_t)(rb - lb - 1);
	char *section = strndup(lb + 1, slen);
	if (section == NULL)
		return -1;
	if (type == FI_SECTION && !mime_section_valid(section)) {
		free(section);
		*error_r = "Invalid section";
		return -1;
	}
	if (type != FI_SECTION) {
		/* BINARY takes part numbers only */
		for (size_t i = 0; i < slen; i++) {
			if (!(section[i] >= '0' && section[i] <= '9') && section[i] != '.') {
				free(section);
				*error_r = "Invalid BINARY section";
				return -1;
			}
		}
	}
	struct fetch_item *it = fetch_add(fp, type);
	if (it == NULL) {
		free(section);
		*error_r = "Too many FETCH attributes";
		return -1;
	}
	it->section = section;
	it->peek = peek;
	it->whole = type == FI_SECTION && slen == 0;
	it->text = type == FI_SECTION && strcasecmp(section, "TEXT") == 0;
	const char *rest = rb + 1;
	if (*rest == '<') {
		/* <offset.length> (RFC 9051: both numbers) */
		const char *dot = strchr(rest, '.');
		const char *gt = strchr(rest, '>');
		if (type == FI_BINARY_SIZE || dot == NULL || gt == NULL || dot > gt || gt[1] != '\0' ||
		    strn_to_u64(rest + 1, (size_t)(dot - rest - 1), &it->off) < 0 ||
		    strn_to_u64(dot + 1, (size_t)(gt - dot - 1), &it->len) < 0 || it->len == 0) {
			*error_r = "Invalid partial";
			return -1;
		}
		it->partial = true;
	} else if (*rest != '\0') {
		*error_r = "Invalid section";
		return -1;
	}
	size_t llen = strlen(resp) + slen + 3;
	it->label = malloc(llen);
	if (it->label == NULL)
		return -1;
	snprintf(it->label, llen, "%s[%s]", resp, section);
	if (type != FI_BINARY_SIZE) {
		fp->need_file = true;
		if (!peek)
			fp->set_seen = true;
	}
	return 0;
}

static int fetch_parse_att(struct fetch_priv *fp, const char *att, const char **error_r)
{
	static const struct {
		const char *name;
		enum fetch_type type;
	} simple[] = {
		{ "FLAGS", FI_FLAGS }, { "INTERNALDATE", FI_INTERNALDATE },
		{ "RFC822.SIZE", FI_SIZE }, { "ENVELOPE", FI_ENVELOPE },
		{ "BODYSTRUCTURE", FI_BODYSTRUCTURE }, { "BODY", FI_BODY }, { "UID", FI_UID },
		{ "MODSEQ", FI_MODSEQ },
	};
	for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++) {
		if (strcasecmp(att, simple[i].name) == 0) {
			if (fetch_has(fp, simple[i].type))
				return 0;
			if (fetch_add(fp, simple[i].type) == NULL) {
				*error_r = "Too many FETCH attributes";
				return -1;
			}
			if (simple[i].type == FI_FLAGS)
				fp->has_flags_item = true;
			return 0;
		}
	}
	if (strcasecmp(att, "ALL") == 0 || strcasecmp(att, "FAST") == 0 ||
	    strcasecmp(att, "FULL") == 0) {
		bool all = strcasecmp(att, "FAST") != 0;
		if (fetch_parse_att(fp, "FLAGS", error_r) < 0 ||
		    fetch_parse_att(fp, "INTERNALDATE", error_r) < 0 ||
		    fetch_parse_att(fp, "RFC822.SIZE", error_r) < 0 ||
		    (all && fetch_parse_att(fp, "ENVELOPE", error_r) < 0) ||
		    (strcasecmp(att, "FULL") == 0 && fetch_parse_att(fp, "BODY", error_r) < 0))
			return -1;
		return 0;
	}
	/* RFC822 forms (RFC 3501; still accepted by RFC 9051 servers) */
	const char *section = NULL, *label = NULL;
	bool peek = false;
	if (strcasecmp(att, "RFC822") == 0) {
		section = "";
		label = "RFC822";
	} else if (strcasecmp(att, "RFC822.HEADER") == 0) {
		section = "HEADER";
		label = "RFC822.HEADER";
		peek = true;
	} else if (strcasecmp(att, "RFC822.TEXT") == 0) {
		section = "TEXT";
		label = "RFC822.TEXT";
	}
	if (section != NULL) {
		char tmp[32];
		snprintf(tmp, sizeof(tmp), "%s[%s]", peek ? "BODY.PEEK" : "BODY", section);
		if (fetch_parse_section(fp, tmp, error_r) < 0)
			return -1;
		struct fetch_item *it = &fp->items[fp->nitems - 1];
		free(it->label);
		it->label = strdup(label);
		return it->label == NULL ? -1 : 0;
	}
	if (strchr(att, '[') != NULL)
		return fetch_parse_section(fp, att, error_r);
	*error_r = "Unknown FETCH attribute";
	return -1;
}

static int fetch_parse_modifiers(struct imap_cmd *cmd, struct fetch_priv *fp,
				 const struct imap_arg *list)
{
	if (!imap_arg_is_list(list))
		return -1;
	for (unsigned i = 0; i < list->count; i++) {
		const char *m = imap_arg_atom(&list->list[i]);
		if (m != NULL && strcasecmp(m, "CHANGEDSINCE") == 0 && i + 1 < list->count) {
			const char *v = imap_arg_atom(&list->list[++i]);
			if (v == NULL || str_to_u64(v, &fp->changedsince) < 0)
				return -1;
			fp->has_changedsince = true;
		} else if (m != NULL && strcasecmp(m, "VANISHED") == 0) {
			fp->vanished = true;
		} else {
			return -1;
		}
	}
	/* RFC 7162 3.2.6: VANISHED only in UID FETCH with CHANGEDSINCE, and
	 * only once QRESYNC is enabled. */
	if (fp->vanished && (!cmd->uid || !fp->has_changedsince || !cmd->s->qresync))
		return -1;
	return 0;
}

int imap_cmd_fetch_check(struct imap_cmd *cmd)
{
	const char *error = "Syntax: FETCH set items [(modifiers)]";
	if (cmd->nargs < 2 || cmd->nargs > 3) {
		imap_cmd_bad(cmd, "%s", error);
		return -1;
	}
	struct fetch_priv *fp = calloc(1, sizeof(*fp));
	if (fp == NULL)
		return -1;
	fp->fd = -1;
	buf_init(&fp->stream.mem, FETCH_SECTION_MAX);
	cmd->priv = fp;
	cmd->priv_free = fetch_priv_free;
	if (imap_parse_set(cmd, &cmd->args[0], cmd->uid, &fp->set) < 0)
		return -1;
	const struct imap_arg *atts = &cmd->args[1];
	if (imap_arg_is_list(atts)) {
		if (atts->count == 0) {
			imap_cmd_bad(cmd, "Empty FETCH attribute list");
			return -1;
		}
		for (unsigned i = 0; i < atts->count; i++) {
			const char *a = imap_arg_atom(&atts->list[i]);
			if (a == NULL || fetch_parse_att(fp, a, &error) < 0) {
				imap_cmd_bad(cmd, "%s", a == NULL ? "Invalid FETCH attribute" : error);
				return -1;
			}
		}
	} else {
		const char *a = imap_arg_atom(atts);
		if (a == NULL || fetch_parse_att(fp, a, &error) < 0) {
			imap_cmd_bad(cmd, "%s", a == NULL ? "Invalid FETCH attribute" : error);
			return -1;
		}
	}
	if (cmd->nargs == 3 && fetch_parse_modifiers(cmd, fp, &cmd->args[2]) < 0) {
		imap_cmd_bad(cmd, "Invalid FETCH modifiers");
		return -1;
	}
	/* UID FETCH always answers with UID (RFC 9051 6.4.9), first. */
	if (cmd->uid && !fetch_has(fp, FI_UID)) {
		if (fp->nitems >= FETCH_MAX_ITEMS) {
			imap_cmd_bad(cmd, "Too many FETCH attributes");
			return -1;
		}
		memmove(&fp->items[1], &fp->items[0], fp->nitems * sizeof(fp->items[0]));
		memset(&fp->items[0], 0, sizeof(fp->items[0]));
		fp->items[0].type = FI_UID;
		fp->nitems++;
	}
	if (fp->has_changedsince && !fetch_has(fp, FI_MODSEQ))
		fetch_add(fp, FI_MODSEQ);
	return 0;
}

/* ---- streaming ---- */

/* A message stored with NUL octets (APPENDed as a literal8, RFC 3516)
 * cannot go out in a plain literal: RFC 9051 literals are CHAR8, without
 * %x00. As Dovecot does, BODY[...] and RFC822* send each NUL as 0x80 (same
 * length, so sizes stay true); BINARY[...] sends the real octets in a
 * literal8. Replaces in place. */
static void fetch_nul80(char *data, size_t len)
{
	char *p = data, *end = data + len;
	while (p < end && (p = memchr(p, '\0', (size_t)(end - p))) != NULL)
		*p++ = (char)0x80;
}

/* Converts LF to CRLF (an existing CRLF stays) from in into out, NUL to
 * 0x80 when nul80; returns octets written (out must hold 2 * len). */
static size_t fetch_crlf(const char *in, size_t len, char *out, bool *prev_cr, bool nul80)
{
	size_t o = 0;
	bool cr = *prev_cr;
	for (size_t i = 0; i < len; i++) {
		char c = in[i];
		if (c == '\n' && !cr)
			out[o++] = '\r';
		else if (c == '\0' && nul80)
			c = (char)0x80;
		out[o++] = c;
		cr = c == '\r';
	}
	*prev_cr = cr;
	return o;
}

/* Sends more of the current literal; stops when the chunk is full. */
static int fetch_stream_some(struct imap_cmd *cmd, struct fetch_priv *fp)
{
	struct imap_session *s = cmd->s;
	struct fetch_stream *st = &fp->stream;
	static __thread char raw[IMAP_STREAM_PIECE];
	static __thread char conv[2 * IMAP_STREAM_PIECE];

	while (st->left > 0) {
		if (s->out.len >= IMAP_CHUNK_BYTES)
			return 0;
		if (st->from_mem) {
			size_t avail = st->mem.len > st->mem_off ? st->mem.len - st->mem_off : 0;
			size_t n = avail < st->left ? avail : (size_t)st->left;
			if (n > IMAP_STREAM_PIECE)
				n = IMAP_STREAM_PIECE;
			if (n == 0) {
				st->eof = true;
			} else {
				if (imap_out_raw(s, st->mem.data + st->mem_off, n) < 0)
					return -1;
				st->mem_off += n;
				st->left -= n;
				continue;
			}
		}
		if (!st->eof && !st->from_mem) {
			ssize_t r = pread(fp->fd, raw, sizeof(raw), (off_t)st->file_off);
			if (r < 0)
				return -1;
			if (r == 0) {
				st->eof = true;
			} else {
				st->file_off += (uint64_t)r;
				size_t n = fetch_crlf(raw, (size_t)r, conv, &st->prev_cr, st->nul80);
				const char *p = conv;
				if (st->skip > 0) {
					size_t sk = st->skip < n ? (size_t)st->skip : n;
					p += sk;
					n -= sk;
					st->skip -= sk;
				}
				if (n > st->left)
					n = (size_t)st->left;
				if (n > 0 && imap_out_raw(s, p, n) < 0)
					return -1;
				st->left -= n;
				continue;
			}
		}
		if (st->eof) {
			/* The file is shorter than its recorded size (changed
			 * behind our back): pad, the literal size is promised. */
			char pad[1024];
			memset(pad, ' ', sizeof(pad));
			size_t n = st->left < sizeof(pad) ? (size_t)st->left : sizeof(pad);
			if (imap_out_raw(s, pad, n) < 0)
				return -1;
			st->left -= n;
		}
	}
	st->active = false;
	buf_free(&st->mem);
	return 0;
}

/* Header size in CRLF form and the file offset where the body starts. */
static int fetch_header_extent(int fd, uint64_t *hdr_crlf_r, uint64_t *body_off_r)
{
	char raw[8192];
	uint64_t off = 0, crlf = 0;
	int state = 1; /* 1: at a line start (the message starts at one) */
	bool prev_cr = false;
	for (;;) {
		ssize_t r = pread(fd, raw, sizeof(raw), (off_t)off);
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		for (ssize_t i = 0; i < r; i++) {
			char c = raw[i];
			crlf += (c == '\n' && !prev_cr) ? 2 : 1;
			prev_cr = c == '\r';
			off++;
			if (c == '\n') {
				if (state == 1) {
					*hdr_crlf_r = crlf;
					*body_off_r = off;
					return 0;
				}
				state = 1;
			} else if (c != '\r') {
				state = 0;
			}
		}
		if (off > 16u * 1024 * 1024)
			break; /* no blank line in 16 MiB: all header */
	}
	*hdr_crlf_r = crlf;
	*body_off_r = off;
	return 0;
}

/* ---- one message ---- */

static int fetch_open(struct imap_cmd *cmd, struct fetch_priv *fp, uint32_t seq)
{
	if (fp->fd >= 0)
		return 0;
	if (mbox_msg_open(cmd->s->mbox, seq, &fp->fd) < 0) {
		fp->fd = -1;
		return -1;
	}
	return 0;
}

static int fetch_mime(struct imap_cmd *cmd, struct fetch_priv *fp, uint32_t seq)
{
	if (fp->mime != NULL)
		return 0;
	if (fetch_open(cmd, fp, seq) < 0)
		return -1;
	fp->mime = mime_parse_fd(fp->fd);
	if (fp->mime == NULL)
		return -1;
	/* RFC822.SIZE comes free with the parse: no second read for it */
	mbox_msg_set_vsize(cmd->s->mbox, seq, mime_size(fp->mime));
	return 0;
}

/* mime_binary()'s error for a part number that the message does not have. */
static bool fetch_binary_no_part(const char *error)
{
	return error != NULL && strcmp(error, "No such part") == 0;
}

static int fetch_cached(struct imap_cmd *cmd, struct fetch_priv *fp, uint32_t seq,
			enum mstore_cache_field field)
{
	struct imap_session *s = cmd->s;
	char *value = NULL;
	int ret = mbox_cache_get(s->mbox, seq, field, &value);
	if (ret == 1) {
		ret = imap_out_raw(s, value, strlen(value));
		free(value);
		return ret;
	}
	if (fetch_mime(cmd, fp, seq) < 0)
		return -1;
	struct buf b;
	buf_init(&b, 4u * 1024 * 1024);
	if (field == MSTORE_CACHE_ENVELOPE)
		ret = mime_envelope(fp->mime, s->utf8, &b);
	else
		ret = mime_bodystructure(fp->mime, field == MSTORE_CACHE_BODYSTRUCTURE, &b);
	if (ret == 0 && b.data != NULL) {
		/* The cached form must not depend on the session: only cache
		 * the envelope when it was made for a 7-bit client. */
		if (field != MSTORE_CACHE_ENVELOPE || !s->utf8)
			mbox_cache_set(s->mbox, seq, field, b.data);
		ret = imap_out_raw(s, b.data, b.len);
	}
	if (ret == 0 && !fp->search_filled) {
		/* the first parse of this message: SEARCH data too, so
		 * SEARCH FROM/SUBJECT... never needs the file */
		fp->search_filled = true;
		buf_reset(&b);
		if (mime_search_fields(fp->mime, &b) == 0)
			(void)mbox_search_data_set(s->mbox, seq, b.data != NULL ? b.data : "", b.len,
						   mime_sent_date(fp->mime, true));
	}
	buf_free(&b);
	return ret;
}

static int fetch_literal_start(struct imap_cmd *cmd, struct fetch_priv *fp,
			       const struct fetch_item *it, uint64_t total, bool binary8)
{
	struct imap_session *s = cmd->s;
	struct fetch_stream *st = &fp->stream;
	uint64_t off = 0, len = total;
	if (it->partial) {
		off = it->off < total ? it->off : total;
		len = total - off;
		if (len > it->len)
			len = it->len;
		if (imap_out(s, "%s<%llu> ", it->label, (unsigned long long)it->off) < 0)
			return -1;
	} else if (imap_out(s, "%s ", it->label) < 0) {
		return -1;
	}
	if (imap_out(s, "%s{%llu}\r\n", binary8 ? "~" : "", (unsigned long long)len) < 0)
		return -1;
	st->skip = off;
	st->left = len;
	st->eof = false;
	st->active = len > 0;
	if (st->from_mem) {
		st->mem_off = (size_t)off;
		st->skip = 0;
	}
	return 0;
}

/* Writes one item (or starts its literal). 0, -1 error, -2 message gone. */
static int fetch_item_write(struct imap_cmd *cmd, struct fetch_priv *fp, uint32_t seq,
			    const struct fetch_item *it)
{
	struct imap_session *s = cmd->s;
	struct buf *out = &s->out;
	const struct mstore_msg *msg = mbox_msg(s->mbox, seq);
	const char *error = NULL;
	switch (it->type) {
	case FI_UID:
		return buf_printf(out, "UID %u", msg->uid);
	case FI_FLAGS: {
		uint32_t flags = msg->flags;
		if (s->rev2)
			flags &= ~IMAP_FLAG_RECENT;
		if (buf_append_str(out, "FLAGS ") < 0)
			return -1;
		return imap_write_flags(out, flags, msg->keywords);
	}
	case FI_INTERNALDATE:
		if (buf_append_str(out, "INTERNALDATE ") < 0)
			return -1;
		return imap_write_datetime(out, msg->internaldate, 0);
	case FI_SIZE: {
		uint64_t size = msg->vsize;
		if (size == 0 && mbox_msg_vsize(s->mbox, seq, &size) < 0)
			return -2;
		return buf_printf(out, "RFC822.SIZE %llu", (unsigned long long)size);
	}
	case FI_MODSEQ:
		return buf_printf(out, "MODSEQ (%llu)", (unsigned long long)msg->modseq);
	case FI_ENVELOPE:
		if (buf_append_str(out, "ENVELOPE ") < 0)
			return -1;
		return fetch_cached(cmd, fp, seq, MSTORE_CACHE_ENVELOPE) < 0 ? -2 : 0;
	case FI_BODYSTRUCTURE:
		if (buf_append_str(out, "BODYSTRUCTURE ") < 0)
			return -1;
		return fetch_cached(cmd, fp, seq, MSTORE_CACHE_BODYSTRUCTURE) < 0 ? -2 : 0;
	case FI_BODY:
		if (buf_append_str(out, "BODY ") < 0)
			return -1;
		return fetch_cached(cmd, fp, seq, MSTORE_CACHE_BODY) < 0 ? -2 : 0;
	case FI_SECTION:
		if (fetch_open(cmd, fp, seq) < 0)
			return -2;
		fp->stream.from_mem = false;
		fp->stream.prev_cr = false;
		fp->stream.nul80 = true;
		if (it->whole) {
			uint64_t size = msg->vsize;
			if (size == 0 && mbox_msg_vsize(s->mbox, seq, &size) < 0)
				return -2;
			fp->stream.file_off = 0;
			return fetch_literal_start(cmd, fp, it, size, false);
		}
		if (it->text) {
			uint64_t size = msg->vsize, hdr = 0, body_off = 0;
			if (size == 0 && mbox_msg_vsize(s->mbox, seq, &size) < 0)
				return -2;
			if (fetch_header_extent(fp->fd, &hdr, &body_off) < 0)
				return -2;
			fp->stream.file_off = body_off;
			return fetch_literal_start(cmd, fp, it, size > hdr ? size - hdr : 0, false);
		}
		if (fetch_mime(cmd, fp, seq) < 0)
			return -2;
		buf_reset(&fp->stream.mem);
		if (mime_section(fp->mime, it->section, &fp->stream.mem, &error) != 0)
			buf_reset(&fp->stream.mem); /* too big or odd: empty */
		if (fp->stream.mem.len > 0)
			fetch_nul80(fp->stream.mem.data, fp->stream.mem.len);
		fp->stream.from_mem = true;
		return fetch_literal_start(cmd, fp, it, fp->stream.mem.len, false);
	case FI_BINARY:
	case FI_BINARY_SIZE: {
		if (fetch_mime(cmd, fp, seq) < 0)
			return -2;
		buf_reset(&fp->stream.mem);
		int ret = mime_binary(fp->mime, it->section, &fp->stream.mem, &error);
		if (ret == -1 && fetch_binary_no_part(error))
			ret = -3; /* no such part: empty data, as for BODY[] */
		if (ret == -1) {
			/* RFC 3516: an unknown CTE is NO [UNKNOWN-CTE] */
			imap_cmd_no(cmd, "[UNKNOWN-CTE] %s", error != NULL ? error : "Cannot decode");
			return -1;
		}
		if (ret < 0)
			buf_reset(&fp->stream.mem);
		if (it->type == FI_BINARY_SIZE) {
			int r = buf_printf(out, "%s %zu", it->label, fp->stream.mem.len);
			buf_reset(&fp->stream.mem);
			return r;
		}
		bool has_nul = memchr(fp->stream.mem.data != NULL ? fp->stream.mem.data : "", '\0',
				      fp->stream.mem.len) != NULL;
		fp->stream.from_mem = true;
		fp->stream.nul80 = false;
		return fetch_literal_start(cmd, fp, it, fp->stream.mem.len, has_nul);
	}
	}
	return -1;
}

/* RFC 3516 / RFC 9051 7.5.2: a BINARY item that cannot be decoded ends
 * the command with NO [UNKNOWN-CTE] before this message's "* n FETCH (" is
 * written (never a half-written response). Probes each BINARY item with a
 * buffer that takes nothing: decodable parts stop at the first octet.
 * 0 go on, -1 answered. */
static int fetch_binary_check(struct imap_cmd *cmd, struct fetch_priv *fp, uint32_t seq)
{
	for (unsigned i = 0; i < fp->nitems; i++) {
		const struct fetch_item *it = &fp->items[i];
		if (it->type != FI_BINARY && it->type != FI_BINARY_SIZE)
			continue;
		if (fetch_mime(cmd, fp, seq) < 0)
			return 0; /* the file is gone: the item says NIL */
		struct buf probe;
		const char *error = NULL;
		buf_init(&probe, 0);
		int ret = mime_binary(fp->mime, it->section, &probe, &error);
		buf_free(&probe);
		if (ret != -1 || fetch_binary_no_part(error))
			continue;
		if (error != NULL && strcmp(error, "Invalid part") == 0)
			imap_cmd_bad(cmd, "Invalid BINARY section %s", it->section);
		else
			/* an unknown transfer encoding, or a multipart or
			 * message/rfc822 part that has none to remove */
			imap_cmd_no(cmd, "[UNKNOWN-CTE] Cannot decode BINARY[%s]: %s", it->section,
				    error != NULL ? error : "unknown encoding");
		return -1;
	}
	return 0;
}

/* Starts a message: decides whether it is sent, sets \Seen. 1 go, 0 skip,
 * -1 error (the command may be answered already). */
static int fetch_msg_begin(struct imap_cmd *cmd, struct fetch_priv *fp, uint32_t seq)
{
	struct imap_session *s = cmd->s;
	const struct mstore_msg *msg = mbox_msg(s->mbox, seq);
	if (fp->has_changedsince && msg->modseq <= fp->changedsince)
		return 0;
	fp->seen_changed = false;
	if (fp->need_file || msg->expunged) {
		if (msg->expunged && !fp->need_file) {
			/* index data of a message another session expunged:
			 * still answered from the view */
		} else if (fetch_open(cmd, fp, seq) < 0) {
			enum mstore_err code;
			mstore_error(s->store, &code);
			if (code == MSTORE_ERR_EXPUNGED || msg->expunged) {
				cmd->expunge_issued = true;
				return 0;
			}
			return -1;
		}
	}
	if (fetch_binary_check(cmd, fp, seq) < 0)
		return -1;
	if (fp->set_seen && !s->readonly && !msg->expunged && (msg->flags & IMAP_FLAG_SEEN) == 0) {
		bool changed = false, conflict = false;
		if (mbox_store(s->mbox, seq, MBOX_STORE_ADD, IMAP_FLAG_SEEN, NULL, 0, &changed,
			       &conflict) == 0 && changed)
			fp->seen_changed = true;
	}
	return 1;
}

void imap_cmd_fetch_run(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	struct fetch_priv *fp = cmd->priv;
	bool in_txn = false;

	if (!fp->started) {
		fp->started = true;
		if (fp->has_changedsince || fetch_has(fp, FI_MODSEQ))
			s->condstore = true; /* RFC 7162 3.1: CONDSTORE-enabling */
		if (imap_set_to_seqs(cmd, &fp->set, cmd->uid, &fp->seqs, &fp->n) < 0) {
			if (!cmd->finished)
				imap_cmd_serverbug(cmd, "out of memory");
			return;
		}
		if (fp->vanished) {
			/* RFC 7162 3.2.6: the UIDs as the client wrote them, with
			 * "*" as UIDNEXT-1 (as SELECT QRESYNC does), not the set
			 * resolved against the view's last UID: UIDs expunged
			 * above the last message are reported too. */
			struct imap_seqset v, uids;
			memset(&v, 0, sizeof(v));
			const char *text = imap_arg_atom(&cmd->args[0]);
			if (text != NULL && imap_seqset_parse(text, cmd->args[0].len, &uids) == 0) {
				imap_seqset_resolve(&uids, mbox_uidnext(s->mbox) - 1);
				if (mbox_vanished_since(s->mbox, fp->changedsince,
							uids.dollar ? &s->saved : &uids, &v) == 0 &&
				    v.count > 0) {
					imap_out(s, "* VANISHED (EARLIER) ");
					imap_seqset_write(&v, &s->out);
					imap_out(s, "\r\n");
				}
				imap_seqset_free(&uids);
			}
			imap_seqset_free(&v);
		}
	}
	if (fp->set_seen && !s->readonly && mbox_begin(s->mbox) == 0)
		in_txn = true;
	else
		(void)mbox_read_begin(s->mbox);   /* one snapshot for the chunk's lookups */

	while (fp->pos < fp->n) {
		uint32_t seq = fp->seqs[fp->pos];
		if (!fp->in_msg) {
			if (imap_chunk_full(cmd))
				goto out;
			int r = fetch_msg_begin(cmd, fp, seq);
			if (r < 0) {
				if (!cmd->finished)
					imap_cmd_store_error(cmd, "FETCH open");
				goto out;
			}
			if (r == 0) {
				fetch_msg_release(fp);
				fp->pos++;
				continue;
			}
			cmd->chunk_msgs++;
			fp->in_msg = true;
			fp->item_idx = 0;
			imap_out(s, "* %u FETCH (", seq);
		}
		if (fp->stream.active) {
			if (fetch_stream_some(cmd, fp) < 0) {
				imap_cmd_serverbug(cmd, "FETCH stream failed");
				goto out;
			}
			if (fp->stream.active)
				goto out;
		}
		while (fp->item_idx < fp->nitems) {
			const struct fetch_item *it = &fp->items[fp->item_idx++];
			if (fp->item_idx > 1)
				imap_out_raw(s, " ", 1);
			int r = fetch_item_write(cmd, fp, seq, it);
			if (r == -2) {
				/* the file vanished under us: finish the
				 * response syntactically and report it */
				cmd->expunge_issued = true;
				imap_out(s, "NIL");
				continue;
			}
			if (r < 0) {
				if (!cmd->finished)
					imap_cmd_serverbug(cmd, "FETCH item failed");
				goto out;
			}
			if (fp->stream.active) {
				if (fetch_stream_some(cmd, fp) < 0) {
					imap_cmd_serverbug(cmd, "FETCH stream failed");
					goto out;
				}
				if (fp->stream.active)
					goto out;
			}
		}
		if (fp->seen_changed && !fp->has_flags_item) {
			const struct mstore_msg *msg = mbox_msg(s->mbox, seq);
			uint32_t flags = msg->flags;
			if (s->rev2)
				flags &= ~IMAP_FLAG_RECENT;
			imap_out(s, " FLAGS ");
			imap_write_flags(&s->out, flags, msg->keywords);
		}
		imap_out(s, ")\r\n");
		fp->in_msg = false;
		fetch_msg_release(fp);
		fp->pos++;
	}
	imap_cmd_ok(cmd, "%s completed", cmd->def->name);
out:
	if (in_txn)
		mbox_commit(s->mbox);
	else
		mbox_read_end(s->mbox);
	mbox_cache_flush(s->mbox);   /* this chunk's cache fills, in one transaction */
	if (cmd->finished && fp->in_msg) {
		/* an error mid-message: the response line cannot be finished
		 * correctly any more; close the connection after the tag */
		fetch_msg_release(fp);
		s->logout = true;
	}
}

/* ---- STORE ---- */

struct store_priv {
	struct imap_seqset set;
	enum mbox_store_op op;
	bool silent;
	uint32_t flags;
	char *keywords;
	uint64_t unchangedsince;
	bool has_unchangedsince;
	uint32_t *seqs;
	uint32_t n, pos;
	bool started;
	struct imap_seqset modified;
	char *kw_known;      /* the mailbox's keywords the client knows of */
};

/* RFC 9051 7.3.5: FLAGS and PERMANENTFLAGS again when a STORE gave the
 * mailbox a new keyword (as imap-select.c does after a sync). */
static void store_write_flag_lists(struct imap_session *s, const char *kw)
{
	bool has_kw = kw != NULL && *kw != '\0';
	imap_out(s, "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft%s%s)\r\n",
		 has_kw ? " " : "", has_kw ? kw : "");
	imap_out(s, "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft%s%s \\*)]"
		    " Flags permitted\r\n", has_kw ? " " : "", has_kw ? kw : "");
}

static void store_priv_free(void *p)
{
	struct store_priv *sp = p;
	imap_seqset_free(&sp->set);
	imap_seqset_free(&sp->modified);
	free(sp->kw_known);
	free(sp->keywords);
	free(sp->seqs);
	free(sp);
}

/* Appends keywords b to a (space-separated, malloc'ed). */
static int store_join(char **a, const char *b)
{
	if (b == NULL || *b == '\0')
		return 0;
	if (*a == NULL) {
		*a = strdup(b);
		return *a != NULL ? 0 : -1;
	}
	size_t al = strlen(*a), bl = strlen(b);
	char *n = realloc(*a, al + bl + 2);
	if (n == NULL)
		return -1;
	n[al] = ' ';
	memcpy(n + al + 1, b, bl + 1);
	*a = n;
	return 0;
}

int imap_cmd_store_check(struct imap_cmd *cmd)
{
	const char *error = NULL;
	if (cmd->nargs < 3) {
		imap_cmd_bad(cmd, "Syntax: STORE set [(UNCHANGEDSINCE n)] item flags");
		return -1;
	}
	struct store_priv *sp = calloc(1, sizeof(*sp));
	if (sp == NULL)
		return -1;
	cmd->priv = sp;
	cmd->priv_free = store_priv_free;
	if (imap_parse_set(cmd, &cmd->args[0], cmd->uid, &sp->set) < 0)
		return -1;
	unsigned i = 1;
	if (imap_arg_is_list(&cmd->args[1])) {
		const struct imap_arg *m = &cmd->args[1];
		const char *name = m->count == 2 ? imap_arg_atom(&m->list[0]) : NULL;
		const char *val = m->count == 2 ? imap_arg_atom(&m->list[1]) : NULL;
		if (name == NULL || val == NULL || strcasecmp(name, "UNCHANGEDSINCE") != 0 ||
		    str_to_u64(val, &sp->unchangedsince) < 0) {
			imap_cmd_bad(cmd, "Invalid STORE modifier");
			return -1;
		}
		sp->has_unchangedsince = true;
		i++;
	}
	const char *item = i < cmd->nargs ? imap_arg_atom(&cmd->args[i]) : NULL;
	if (item == NULL)
		goto bad;
	sp->op = MBOX_STORE_REPLACE;
	if (*item == '+') {
		sp->op = MBOX_STORE_ADD;
		item++;
	} else if (*item == '-') {
		sp->op = MBOX_STORE_REMOVE;
		item++;
	}
	if (strcasecmp(item, "FLAGS.SILENT") == 0)
		sp->silent = true;
	else if (strcasecmp(item, "FLAGS") != 0)
		goto bad;
	i++;
	if (i >= cmd->nargs)
		goto bad;
	for (; i < cmd->nargs; i++) {
		uint32_t f = 0;
		char *kw = NULL;
		if (imap_parse_flags(&cmd->args[i], &f, &kw, &error) < 0) {
			imap_cmd_bad(cmd, "%s", error != NULL ? error : "Invalid flags");
			return -1;
		}
		sp->flags |= f;
		int r = store_join(&sp->keywords, kw);
		free(kw);
		if (r < 0)
			return -1;
	}
	return 0;
bad:
	imap_cmd_bad(cmd, "Syntax: STORE set [(UNCHANGEDSINCE n)] [+-]FLAGS[.SILENT] flags");
	return -1;
}

void imap_cmd_store_run(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	struct store_priv *sp = cmd->priv;

	if (!sp->started) {
		sp->started = true;
		if (s->readonly) {
			imap_cmd_no(cmd, "[CANNOT] Mailbox is read-only");
			return;
		}
		if (sp->has_unchangedsince)
			s->condstore = true;
		if (imap_set_to_seqs(cmd, &sp->set, cmd->uid, &sp->seqs, &sp->n) < 0) {
			if (!cmd->finished)
				imap_cmd_serverbug(cmd, "out of memory");
			return;
		}
		if (sp->keywords != NULL)
			sp->kw_known = strdup(mbox_keywords(s->mbox));
	}
	if (mbox_begin(s->mbox) < 0) {
		imap_cmd_store_error(cmd, "STORE begin");
		return;
	}
	while (sp->pos < sp->n && !imap_chunk_full(cmd)) {
		uint32_t seq = sp->seqs[sp->pos++];
		cmd->chunk_msgs++;
		bool changed = false, conflict = false;
		const struct mstore_msg *msg = mbox_msg(s->mbox, seq);
		uint32_t uid = msg->uid;
		if (msg->expunged) {
			cmd->expunge_issued = true;
			continue;
		}
		if (sp->has_unchangedsince && sp->unchangedsince == 0) {
			/* RFC 7162 3.1.3: UNCHANGEDSINCE 0 always fails for
			 * flags, which always exist (mbox_store reads 0 as "no
			 * condition") */
			conflict = true;
		} else if (mbox_store(s->mbox, seq, sp->op, sp->flags, sp->keywords,
				      sp->has_unchangedsince ? sp->unchangedsince : 0, &changed,
				      &conflict) < 0) {
			enum mstore_err code;
			mstore_error(s->store, &code);
			if (code == MSTORE_ERR_EXPUNGED) {
				cmd->expunge_issued = true;
				continue;
			}
			mbox_commit(s->mbox);
			imap_cmd_store_error(cmd, "STORE");
			return;
		}
		if (conflict) {
			imap_seqset_add(&sp->modified, cmd->uid ? uid : seq);
			continue;
		}
		msg = mbox_msg(s->mbox, seq);
		if (changed && sp->kw_known != NULL &&
		    strcmp(sp->kw_known, mbox_keywords(s->mbox)) != 0) {
			/* a keyword new to the mailbox: before its FETCH */
			char *kw = strdup(mbox_keywords(s->mbox));
			if (kw != NULL) {
				free(sp->kw_known);
				sp->kw_known = kw;
			}
			store_write_flag_lists(s, mbox_keywords(s->mbox));
		}
		if (!sp->silent) {
			imap_write_flags_fetch(s, seq, msg, cmd->uid || s->qresync);
		} else if (changed && s->condstore) {
			/* RFC 7162 3.2: .SILENT still reports the new MODSEQ */
			if (cmd->uid || s->qresync)
				imap_out(s, "* %u FETCH (UID %u MODSEQ (%llu))\r\n", seq, msg->uid,
					 (unsigned long long)msg->modseq);
			else
				imap_out(s, "* %u FETCH (MODSEQ (%llu))\r\n", seq,
					 (unsigned long long)msg->modseq);
		}
	}
	if (mbox_commit(s->mbox) < 0) {
		imap_cmd_store_error(cmd, "STORE commit");
		return;
	}
	if (sp->pos < sp->n)
		return; /* next chunk */
	if (sp->modified.count > 0) {
		/* At most one number (10 digits) and a separator per message;
		 * the tagged line goes to s->out, so keep well under its max. */
		static const char tail[] = "] Conditional STORE failed";
		size_t max = (size_t)sp->n * 11 + 64;
		if (max > IMAP_OUT_MAX / 2)
			max = IMAP_OUT_MAX / 2;
		struct buf text;
		buf_init(&text, max);
		if (buf_append_str(&text, "[MODIFIED ") < 0 ||
		    imap_seqset_write(&sp->modified, &text) < 0 ||
		    buf_append_str(&text, tail) < 0) {
			/* a cut set would name wrong messages */
			log_warn("session=%llx STORE: [MODIFIED] set over %zu octets left out",
				 IMAP_SID(s), max);
			imap_cmd_ok(cmd, "Conditional STORE failed for some messages");
		} else if (text.len < sizeof(cmd->result)) {
			imap_cmd_ok(cmd, "%s", text.data);
		} else {
			/* RFC 7162 3.1.3: the whole set, in a text longer than
			 * cmd->result; the session prints result_long. */
			imap_cmd_ok(cmd, "Conditional STORE failed for some messages");
			cmd->result_long = text.data;
			text.data = NULL;
		}
		buf_free(&text);
		return;
	}
	imap_cmd_ok(cmd, "%s completed", cmd->def->name);
}
