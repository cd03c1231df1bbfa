/*
 * mime.c — messages for IMAP over GMime 3: parsing (from memory or a file,
 * without copying the message), the part tree with byte offsets of every
 * part, BODY[section] extraction (RFC 9051 6.4.5), BINARY (RFC 3516), the
 * SEARCH helpers (RFC 9051 6.4.4: decoded, case-folded substring tests)
 * and the sent date. ENVELOPE and BODYSTRUCTURE are in mime-imap.c.
 *
 * Runs in the imapd workers (and wherever a message must be described).
 * GMime owns the MIME structure; this file only maps GMime's objects back
 * to offsets in the original bytes so that sections are the exact original
 * octets, in CRLF form (the Maildir files have LF line endings).
 */
#include "lib-mime/mime.h"
#include "lib-mime/mime-private.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/util.h"

/* ---- init ------------------------------------------------------------ */

static pthread_once_t mime_once = PTHREAD_ONCE_INIT;

static void mime_init_once(void)
{
	g_mime_init();
}

void mime_init(void)
{
	pthread_once(&mime_once, mime_init_once);
}

void mime_shutdown(void)
{
	/* GMime's globals stay until exit: g_mime_shutdown() cannot be undone
	 * by a second mime_init() (pthread_once), and freeing at exit gains
	 * nothing. */
}

/* ---- CRLF helpers ---------------------------------------------------- */

uint64_t mime_crlf_size(const char *data, size_t len)
{
	return mime_region_crlf_len(data, 0, len);
}

uint64_t mime_region_crlf_len(const char *d, size_t start, size_t end)
{
	uint64_t n = end - start;
	const char *p = d + start, *e = d + end;

	while (p < e) {
		const char *lf = memchr(p, '\n', (size_t)(e - p));
		if (lf == NULL)
			break;
		if (lf == d + start || lf[-1] != '\r')
			n++;
		p = lf + 1;
	}
	return n;
}

uint64_t mime_region_lines(const char *d, size_t start, size_t end)
{
	uint64_t n = 0;
	const char *p = d + start, *e = d + end;

	while (p < e) {
		const char *lf = memchr(p, '\n', (size_t)(e - p));
		if (lf == NULL)
			break;
		n++;
		p = lf + 1;
	}
	return n;
}

/* Appends d[start, end) in CRLF form; *last is the byte before the range
 * (0 for none) and is updated, so that a range split in chunks converts
 * the same as a whole. */
static int append_crlf_state(struct buf *out, const char *d, size_t len, char *last)
{
	const char *p = d, *e = d + len;

	while (p < e) {
		const char *lf = memchr(p, '\n', (size_t)(e - p));
		if (lf == NULL) {
			if (buf_append(out, p, (size_t)(e - p)) < 0)
				return -1;
			break;
		}
		char prev = lf > p ? lf[-1] : (lf > d ? lf[-1] : *last);
		if (prev == '\r') {
			if (buf_append(out, p, (size_t)(lf + 1 - p)) < 0)
				return -1;
		} else {
			if (buf_append(out, p, (size_t)(lf - p)) < 0 ||
			    buf_append(out, "\r\n", 2) < 0)
				return -1;
		}
		p = lf + 1;
	}
	if (len > 0)
		*last = d[len - 1];
	return 0;
}

int mime_append_crlf(struct buf *out, const char *d, size_t start, size_t end)
{
	char last = 0;

	return append_crlf_state(out, d + start, end - start, &last);
}

/* ---- parse ----------------------------------------------------------- */

static struct mime_message *mime_new(void)
{
	struct mime_message *m = calloc(1, sizeof(*m));

	return m;
}

struct mime_message *mime_parse(const char *data, size_t len)
{
	struct mime_message *m = mime_new();

	if (m == NULL)
		return NULL;
	m->data = len > 0 ? data : "";
	m->len = len;
	m->crlf_size = mime_crlf_size(m->data, len);
	return m;
}

struct mime_message *mime_parse_fd(int fd)
{
	struct stat st;
	struct mime_message *m;

	if (fstat(fd, &st) < 0 || st.st_size < 0)
		return NULL;
	m = mime_new();
	if (m == NULL)
		return NULL;
	size_t size = (size_t)st.st_size;
	if (size > 0) {
		void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (p != MAP_FAILED) {
			m->map = p;
			m->map_len = size;
			m->data = p;
			m->len = size;
		} else {
			/* e.g. a pipe or a file system without mmap */
			m->owned = malloc(size);
			if (m->owned == NULL) {
				free(m);
				return NULL;
			}
			ssize_t n = pread(fd, m->owned, size, 0);
			m->data = m->owned;
			m->len = n > 0 ? (size_t)n : 0;
		}
	} else {
		m->data = "";
	}
	m->crlf_size = mime_crlf_size(m->data, m->len);
	return m;
}

void mime_free(struct mime_message **mp)
{
	struct mime_message *m = *mp;

	if (m == NULL)
		return;
	*mp = NULL;
	if (m->msg != NULL)
		g_object_unref(m->msg);
	if (m->stream != NULL)
		g_object_unref(m->stream);
	if (m->array != NULL) {
		/* the data is ours (or the caller's): detach it first */
		m->array->data = NULL;
		m->array->len = 0;
		g_byte_array_unref(m->array);
	}
	g_free(m->nodes);
	if (m->map != NULL)
		munmap(m->map, m->map_len);
	free(m->owned);
	free(m);
}

uint64_t mime_size(const struct mime_message *m)
{
	return m->crlf_size;
}

/* ---- layout: byte offsets of every part ------------------------------ */

/* After a blank line at pos (LF or CRLF), or pos when there is none. */
static size_t skip_blank(const char *d, size_t len, size_t pos)
{
	if (pos < len && d[pos] == '\n')
		return pos + 1;
	if (pos + 1 < len && d[pos] == '\r' && d[pos + 1] == '\n')
		return pos + 2;
	return pos;
}

/* Before the line end that ends just at pos (a blank line of a part without
 * headers), not below lower. */
static size_t back_blank(const char *d, size_t pos, size_t lower)
{
	if (pos > lower && d[pos - 1] == '\n') {
		pos--;
		if (pos > lower && d[pos - 1] == '\r')
			pos--;
	}
	return pos;
}

/* End (after its last line end) of the header field starting at pos. */
static size_t field_end(const char *d, size_t len, size_t pos)
{
	while (pos < len) {
		const char *lf = memchr(d + pos, '\n', len - pos);
		if (lf == NULL)
			return len;
		pos = (size_t)(lf - d) + 1;
		if (pos >= len || (d[pos] != ' ' && d[pos] != '\t'))
			return pos;
	}
	return len;
}

/* Body start of a header block whose last field starts at last: after the
 * first empty line found before limit (GMime skips junk lines, so there
 * may be some), else right after that field. */
static size_t header_block_end(const char *d, size_t len, size_t last, size_t limit)
{
	size_t fend = field_end(d, len, last), p = fend;

	if (limit > len)
		limit = len;
	while (p < limit) {
		size_t b = skip_blank(d, len, p);
		if (b != p)
			return b;
		const char *lf = memchr(d + p, '\n', len - p);
		if (lf == NULL)
			break;
		p = (size_t)(lf - d) + 1;
	}
	return fend;
}

static bool header_range(GMimeObject *o, gint64 *min, gint64 *max)
{
	GMimeHeaderList *hl;
	bool any = false;

	if (o == NULL || (hl = g_mime_object_get_header_list(o)) == NULL)
		return false;
	int n = g_mime_header_list_get_count(hl);
	for (int i = 0; i < n; i++) {
		gint64 off = g_mime_header_get_offset(g_mime_header_list_get_header_at(hl, i));
		if (off < 0)
			continue;
		if (*min < 0 || off < *min)
			*min = off;
		if (off > *max)
			*max = off;
		any = true;
	}
	return any;
}

/* The persistent content substream of a leaf: its bounds in the data. */
static bool leaf_content(struct mime_message *m, GMimeObject *o, size_t *start, size_t *end)
{
	if (o == NULL || !GMIME_IS_PART(o))
		return false;
	GMimeDataWrapper *w = g_mime_part_get_content((GMimePart *)o);
	if (w == NULL)
		return false;
	GMimeStream *s = g_mime_data_wrapper_get_stream(w);
	if (s == NULL || s->bound_start < 0 || s->bound_end < s->bound_start ||
	    (guint64)s->bound_end > m->len)
		return false;
	*start = (size_t)s->bound_start;
	*end = (size_t)s->bound_end;
	return true;
}

static int node_add(struct mime_message *m, size_t *cap, GMimeObject *obj, GMimeMessage *msg,
		    int parent)
{
	if (m->n_nodes >= MIME_MAX_PARTS)
		return -1;
	if (m->n_nodes == *cap) {
		size_t ncap = *cap == 0 ? 8 : *cap * 2;
		/* g_realloc aborts on out of memory, like every GLib/GMime
		 * allocation under us */
		m->nodes = g_realloc_n(m->nodes, ncap, sizeof(*m->nodes));
		*cap = ncap;
	}
	struct mime_node *n = &m->nodes[m->n_nodes];
	memset(n, 0, sizeof(*n));
	n->obj = obj;
	n->msg = msg;
	n->kind = MIME_NODE_LEAF;
	n->parent = parent;
	n->first_child = n->next = -1;
	if (parent >= 0) {
		struct mime_node *p = &m->nodes[parent];
		if (p->first_child < 0) {
			p->first_child = (int)m->n_nodes;
		} else {
			int c = p->first_child;
			while (m->nodes[c].next >= 0)
				c = m->nodes[c].next;
			m->nodes[c].next = (int)m->n_nodes;
		}
		p->n_children++;
	}
	return (int)m->n_nodes++;
}

static void build(struct mime_message *m, size_t *cap, GMimeObject *obj, GMimeMessage *msg,
		  int parent, unsigned int depth)
{
	int idx = node_add(m, cap, obj, msg, parent);

	if (idx < 0 || obj == NULL || depth >= MIME_MAX_DEPTH)
		return;
	if (GMIME_IS_MULTIPART(obj)) {
		GMimeMultipart *mp = (GMimeMultipart *)obj;
		int n = g_mime_multipart_get_count(mp);
		/* no parts (no boundary, or none in the body): a single
		 * text/plain part, its body all there is */
		if (n > 0)
			m->nodes[idx].kind = MIME_NODE_MULTI;
		for (int i = 0; i < n; i++)
			build(m, cap, g_mime_multipart_get_part(mp, i), NULL, idx, depth + 1);
	} else if (GMIME_IS_MESSAGE_PART(obj)) {
		GMimeMessage *inner = g_mime_message_part_get_message((GMimeMessagePart *)obj);
		if (inner == NULL)
			return;
		m->nodes[idx].kind = MIME_NODE_MSG;
		build(m, cap, g_mime_message_get_mime_part(inner), inner, idx, depth + 1);
	}
}

/* Post-order: header start and body start of every node. */
static void layout_starts(struct mime_message *m, int idx)
{
	struct mime_node *n = &m->nodes[idx];
	const char *d = m->data;
	size_t len = m->len, cs, ce;
	gint64 min = -1, max = -1;

	for (int c = n->first_child; c >= 0; c = m->nodes[c].next)
		layout_starts(m, c);
	n = &m->nodes[idx];

	bool any = header_range(n->obj, &min, &max);
	if (n->msg != NULL)
		any = header_range((GMimeObject *)n->msg, &min, &max) || any;
	if ((guint64)max >= len)
		any = false; /* cannot happen: offsets are in the data */

	if (n->kind == MIME_NODE_LEAF && leaf_content(m, n->obj, &cs, &ce)) {
		n->bs = cs;
		n->hs = any && (size_t)min <= cs ? (size_t)min : back_blank(d, cs, 0);
	} else if (any) {
		size_t limit = n->first_child >= 0 ? m->nodes[n->first_child].hs : len;
		if (n->kind == MIME_NODE_LEAF && !GMIME_IS_MULTIPART(n->obj))
			limit = 0; /* no content: the part ends with its header */
		n->hs = (size_t)min;
		n->bs = header_block_end(d, len, (size_t)max, limit);
	} else if (n->first_child >= 0 && m->nodes[n->first_child].hs != SIZE_MAX) {
		n->bs = m->nodes[n->first_child].hs;
		n->hs = back_blank(d, n->bs, 0);
	} else {
		n->hs = n->bs = SIZE_MAX; /* unknown: placed by layout_ends */
	}
	if (n->kind == MIME_NODE_MSG && n->first_child >= 0 && n->bs != SIZE_MAX)
		m->nodes[n->first_child].hs = n->bs; /* the message starts there */
}

static size_t multipart_close(struct mime_message *m, struct mime_node *n, size_t e);

/* Post-order: where each part ends by itself (before the line end that
 * precedes its parent's next boundary). */
static size_t layout_natural(struct mime_message *m, int idx)
{
	struct mime_node *n = &m->nodes[idx];
	size_t cs, ce, e;
	int last = -1;

	for (int c = n->first_child; c >= 0; c = m->nodes[c].next) {
		layout_natural(m, c);
		last = c;
	}
	n = &m->nodes[idx];
	if (n->bs == SIZE_MAX)
		e = SIZE_MAX;
	else if (n->kind == MIME_NODE_LEAF && n->obj != NULL && GMIME_IS_MULTIPART(n->obj))
		e = multipart_close(m, n, last >= 0 ? m->nodes[last].nat : SIZE_MAX);
	else if (n->kind == MIME_NODE_LEAF)
		e = leaf_content(m, n->obj, &cs, &ce) ? ce : n->bs;
	else if (n->kind == MIME_NODE_MSG)
		e = last >= 0 ? m->nodes[last].nat : n->bs;
	else
		e = multipart_close(m, n, last >= 0 ? m->nodes[last].nat : SIZE_MAX);
	n->nat = e;
	return e;
}

/* A multipart ends after its close delimiter and epilogue; e is the end of
 * its last part (SIZE_MAX: no parts). GMime keeps the epilogue as text
 * (CRs dropped), so we count its lines in the original data. */
static size_t multipart_close(struct mime_message *m, struct mime_node *n, size_t e)
{
	const char *d = m->data, *boundary;
	size_t len = m->len, p, blen;
	GMimeMultipart *mp = (GMimeMultipart *)n->obj;

	if (e == SIZE_MAX) {
		const char *pro = g_mime_multipart_get_prologue(mp);
		e = n->bs + (pro != NULL ? strlen(pro) : 0);
		if (e > len)
			e = len;
	}
	boundary = g_mime_multipart_get_boundary(mp);
	if (boundary == NULL)
		return e;
	blen = strlen(boundary);
	p = e;
	if (p < len && d[p] == '\n')
		p++;
	else if (p + 1 < len && d[p] == '\r' && d[p + 1] == '\n')
		p += 2;
	else if (p != n->bs)
		return e;
	if (len - p < blen + 4 || memcmp(d + p, "--", 2) != 0 ||
	    memcmp(d + p + 2, boundary, blen) != 0 || memcmp(d + p + 2 + blen, "--", 2) != 0)
		return e;
	const char *lf = memchr(d + p, '\n', len - p);
	if (lf == NULL)
		return len;
	p = (size_t)(lf - d); /* at the delimiter's line end */
	e = p > 0 && d[p - 1] == '\r' ? p - 1 : p;

	const char *epi = g_mime_multipart_get_epilogue(mp);
	/* GMime: NULL when the parent's boundary follows at once, "" for one
	 * empty line, else the lines without the last line end */
	if (epi == NULL)
		return e;
	if (*epi == '\0')
		return p + 1;
	size_t k = 0, elen = strlen(epi);
	for (const char *q = epi; (q = strchr(q, '\n')) != NULL; q++)
		k++;
	p++; /* after the delimiter's LF */
	for (; k > 0 && p < len; k--) {
		lf = memchr(d + p, '\n', len - p);
		p = lf == NULL ? len : (size_t)(lf - d) + 1;
	}
	if (epi[elen - 1] != '\n' && p < len) {
		lf = memchr(d + p, '\n', len - p);
		p = lf == NULL ? len : (size_t)(lf - d);
		if (p > 0 && d[p - 1] == '\r' && lf != NULL)
			p--;
	}
	return p;
}

/* Pre-order: final ends, every node inside its parent's body. */
static void layout_ends(struct mime_message *m, int idx, size_t lower, size_t end)
{
	struct mime_node *n = &m->nodes[idx];

	if (n->hs == SIZE_MAX || n->bs == SIZE_MAX)
		n->hs = n->bs = lower;
	if (n->hs < lower)
		n->hs = lower;
	if (n->hs > end)
		n->hs = end;
	if (n->bs < n->hs)
		n->bs = n->hs;
	if (n->bs > end)
		n->bs = end;
	n->be = end;

	size_t floor = n->bs;
	for (int c = n->first_child; c >= 0; c = m->nodes[c].next) {
		struct mime_node *cn = &m->nodes[c];
		if (n->kind == MIME_NODE_MSG) {
			cn->hs = n->bs;
			layout_ends(m, c, n->bs, n->be);
			continue;
		}
		size_t ce = cn->nat;
		size_t cstart = cn->hs == SIZE_MAX ? floor : cn->hs;
		if (cstart < floor)
			cstart = floor;
		if (ce == SIZE_MAX || ce > end)
			ce = end;
		if (ce < cstart)
			ce = cstart > end ? end : cstart;
		layout_ends(m, c, floor, ce);
		floor = m->nodes[c].be;
	}
}

static void parse_fallback(struct mime_message *m)
{
	size_t cap = 0, bs = 0;
	const char *d = m->data;
	size_t len = m->len;

	/* No message from GMime: a header block only if the first line looks
	 * like a header field, the rest is a text/plain body. */
	size_t i = 0;
	while (i < len && d[i] != ':' && d[i] != '\n' && d[i] != ' ' && d[i] != '\t')
		i++;
	if (i > 0 && i < len && d[i] == ':')
		bs = header_block_end(d, len, 0, len);
	else
		bs = skip_blank(d, len, 0);
	(void)node_add(m, &cap, NULL, NULL, -1);
	m->nodes[0].hs = 0;
	m->nodes[0].bs = bs;
	m->nodes[0].be = len;
}

void mime_ensure_parsed(struct mime_message *m)
{
	GMimeParser *parser;
	size_t cap = 0;

	if (m->parsed)
		return;
	m->parsed = true;
	if (m->len == 0 || m->len > G_MAXUINT) {
		parse_fallback(m);
		return;
	}
	/* A GByteArray over the caller's bytes: the memory stream and all
	 * content substreams read them in place (set_owner FALSE: the stream
	 * never frees or grows the array). */
	m->array = g_byte_array_new();
	m->array->data = (guint8 *)(uintptr_t)m->data;
	m->array->len = (guint)m->len;
	m->stream = g_mime_stream_mem_new_with_byte_array(m->array);
	g_mime_stream_mem_set_owner((GMimeStreamMem *)m->stream, FALSE);
	parser = g_mime_parser_new_with_stream(m->stream);
	g_mime_parser_set_persist_stream(parser, TRUE);
	g_mime_parser_set_format(parser, GMIME_FORMAT_MESSAGE);
	m->msg = g_mime_parser_construct_message(parser, NULL);
	gint64 hend = g_mime_parser_get_headers_end(parser);
	g_object_unref(parser);

	if (m->msg == NULL || g_mime_message_get_mime_part(m->msg) == NULL) {
		parse_fallback(m);
		return;
	}
	build(m, &cap, g_mime_message_get_mime_part(m->msg), m->msg, -1, 0);
	if (m->n_nodes == 0) {
		parse_fallback(m);
		return;
	}
	layout_starts(m, 0);
	layout_natural(m, 0);
	/* The top-level header is everything before GMime's end of headers. */
	struct mime_node *root = &m->nodes[0];
	size_t cs, ce;
	root->hs = 0;
	if (root->kind == MIME_NODE_LEAF && leaf_content(m, root->obj, &cs, &ce))
		root->bs = cs;
	else if (hend >= 0 && (guint64)hend <= m->len)
		root->bs = skip_blank(m->data, m->len, (size_t)hend);
	else if (root->bs == SIZE_MAX)
		root->bs = m->len;
	layout_ends(m, 0, 0, m->len);
}

/* ---- part numbers ---------------------------------------------------- */

/* The n-th (1-based) sub-part of node idx (-1: the top-level message), or
 * -1. RFC 9051 6.4.5: a non-multipart has only part 1 (itself, or for a
 * message/rfc822 part, the encapsulated message's body). */
static int sub_part(struct mime_message *m, int idx, uint32_t num)
{
	int container;

	if (idx < 0) {
		container = 0;
	} else if (m->nodes[idx].kind == MIME_NODE_MSG) {
		container = m->nodes[idx].first_child;
		if (container < 0)
			return -1;
	} else if (m->nodes[idx].kind == MIME_NODE_MULTI) {
		container = idx;
	} else {
		return -1; /* a leaf inside a message has no sub-parts */
	}
	if (m->nodes[container].kind != MIME_NODE_MULTI)
		return num == 1 ? container : -1;
	int c = m->nodes[container].first_child;
	for (uint32_t i = 1; c >= 0 && i < num; i++)
		c = m->nodes[c].next;
	return c;
}

/* ---- section syntax -------------------------------------------------- */

enum section_text {
	SEC_BODY,        /* nothing after the part numbers */
	SEC_HEADER,
	SEC_FIELDS,
	SEC_FIELDS_NOT,
	SEC_TEXT,
	SEC_MIME,
};

#define SECTION_MAX_PARTS (MIME_MAX_DEPTH + 28)
#define FIELD_NAME_MAX 256

struct section {
	uint32_t parts[SECTION_MAX_PARTS];
	unsigned int n_parts;
	enum section_text text;
	const char *list;   /* HEADER.FIELDS: after "(" */
	const char *list_end; /* at ")" */
};

static bool prefix_ci(const char *s, const char *word)
{
	return g_ascii_strncasecmp(s, word, strlen(word)) == 0;
}

static bool is_atom_char(unsigned char c)
{
	/* RFC 9051 ASTRING-CHAR: ATOM-CHAR / "]" */
	return c > 0x20 && c < 0x7f && c != '(' && c != ')' && c != '{' && c != '%' &&
	       c != '*' && c != '"' && c != '\\';
}

/* Next header field name of a list: 1 and the (unquoted) name in name_r,
 * 0 at the end, -1 on bad syntax. */
static int next_field_name(const char **pp, const char *end, char name_r[FIELD_NAME_MAX + 1],
			   size_t *len_r)
{
	const char *p = *pp;
	size_t n = 0;

	while (p < end && *p == ' ')
		p++;
	if (p == end) {
		*pp = p;
		return 0;
	}
	if (*p == '"') {
		p++;
		while (p < end && *p != '"') {
			if (*p == '\\') {
				p++;
				if (p == end || (*p != '"' && *p != '\\'))
					return -1;
			}
			if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
				return -1;
			if (n < FIELD_NAME_MAX)
				name_r[n] = *p;
			n++;
			p++;
		}
		if (p == end)
			return -1;
		p++;
	} else {
		while (p < end && is_atom_char((unsigned char)*p)) {
			if (n < FIELD_NAME_MAX)
				name_r[n] = *p;
			n++;
			p++;
		}
		if (n == 0)
			return -1;
	}
	if (p < end && *p != ' ')
		return -1;
	if (n > FIELD_NAME_MAX)
		n = FIELD_NAME_MAX + 1; /* never matches: no such header */
	name_r[n > FIELD_NAME_MAX ? FIELD_NAME_MAX : n] = '\0';
	*len_r = n;
	*pp = p;
	return 1;
}

static int section_parse(const char *s, struct section *sec, const char **error_r)
{
	const char *p = s;

	memset(sec, 0, sizeof(*sec));
	while (*p >= '0' && *p <= '9') {
		uint64_t num = 0;
		if (*p == '0') {
			*error_r = "Invalid part number";
			return -1;
		}
		while (*p >= '0' && *p <= '9') {
			num = num * 10 + (uint64_t)(*p - '0');
			if (num > UINT32_MAX) {
				*error_r = "Invalid part number";
				return -1;
			}
			p++;
		}
		if (sec->n_parts == SECTION_MAX_PARTS) {
			*error_r = "Too many part numbers";
			return -1;
		}
		sec->parts[sec->n_parts++] = (uint32_t)num;
		if (*p != '.')
			break;
		if (p[1] >= '0' && p[1] <= '9') {
			p++;
			continue;
		}
		if (p[1] == '\0') {
			*error_r = "Invalid section";
			return -1;
		}
		p++;
		break;
	}
	if (*p == '\0') {
		if (sec->n_parts > 0 && p[-1] == '.') {
			*error_r = "Invalid section";
			return -1;
		}
		sec->text = SEC_BODY;
		return 0;
	}
	if (sec->n_parts > 0 && p[-1] != '.') {
		*error_r = "Invalid section";
		return -1;
	}
	if (g_ascii_strcasecmp(p, "HEADER") == 0) {
		sec->text = SEC_HEADER;
		return 0;
	}
	if (g_ascii_strcasecmp(p, "TEXT") == 0) {
		sec->text = SEC_TEXT;
		return 0;
	}
	if (g_ascii_strcasecmp(p, "MIME") == 0 && sec->n_parts > 0) {
		sec->text = SEC_MIME;
		return 0;
	}
	if (prefix_ci(p, "HEADER.FIELDS.NOT ")) {
		sec->text = SEC_FIELDS_NOT;
		p += strlen("HEADER.FIELDS.NOT ");
	} else if (prefix_ci(p, "HEADER.FIELDS ")) {
		sec->text = SEC_FIELDS;
		p += strlen("HEADER.FIELDS ");
	} else {
		*error_r = "Invalid section";
		return -1;
	}
	size_t plen = strlen(p);
	if (plen < 3 || p[0] != '(' || p[plen - 1] != ')') {
		*error_r = "Invalid header field list";
		return -1;
	}
	sec->list = p + 1;
	sec->list_end = p + plen - 1;

	const char *q = sec->list;
	char name[FIELD_NAME_MAX + 1];
	size_t nlen, count = 0;
	int ret;
	while ((ret = next_field_name(&q, sec->list_end, name, &nlen)) > 0)
		count++;
	if (ret < 0 || count == 0) {
		*error_r = "Invalid header field list";
		return -1;
	}
	return 0;
}

bool mime_section_valid(const char *section)
{
	struct section sec;
	const char *error;

	return section_parse(section, &sec, &error) == 0;
}

/* ---- sections -------------------------------------------------------- */

static bool field_listed(const struct section *sec, const char *name, size_t len)
{
	const char *q = sec->list;
	char want[FIELD_NAME_MAX + 1];
	size_t wlen;

	while (next_field_name(&q, sec->list_end, want, &wlen) > 0) {
		if (wlen == len && g_ascii_strncasecmp(want, name, len) == 0)
			return true;
	}
	return false;
}

/* HEADER.FIELDS[.NOT] of the header block d[hs, bs): the matching fields
 * as they are, then the blank line. */
static int append_fields(struct buf *out, const char *d, size_t hs, size_t bs,
			 const struct section *sec)
{
	size_t p = hs;
	bool want_match = sec->text == SEC_FIELDS;

	while (p < bs) {
		if (skip_blank(d, bs, p) != p)
			break; /* the blank line */
		size_t e = field_end(d, bs, p);
		size_t nl = p;
		while (nl < e && d[nl] != ':' && d[nl] != '\n')
			nl++;
		size_t name_end = nl;
		while (name_end > p && (d[name_end - 1] == ' ' || d[name_end - 1] == '\t'))
			name_end--;
		bool listed = nl < e && d[nl] == ':' && field_listed(sec, d + p, name_end - p);
		if (listed == want_match) {
			if (mime_append_crlf(out, d, p, e) < 0)
				return -1;
			if (d[e - 1] != '\n' && buf_append(out, "\r\n", 2) < 0)
				return -1;
		}
		p = e;
	}
	return buf_append(out, "\r\n", 2);
}

int mime_section(struct mime_message *m, const char *section, struct buf *out,
		 const char **error_r)
{
	struct section sec;
	int idx = -1;
	size_t hs, bs, be;

	if (section_parse(section, &sec, error_r) < 0)
		return -1;
	if (sec.n_parts == 0 && sec.text == SEC_BODY)
		return mime_append_crlf(out, m->data, 0, m->len) < 0 ? -2 : 0;

	mime_ensure_parsed(m);
	for (unsigned int i = 0; i < sec.n_parts; i++) {
		idx = sub_part(m, idx, sec.parts[i]);
		if (idx < 0)
			return 0; /* no such part: empty */
	}

	if (sec.n_parts == 0) {
		/* the top-level message */
		hs = 0;
		bs = m->nodes[0].bs;
		be = m->len;
	} else {
		const struct mime_node *n = &m->nodes[idx];
		if (sec.text == SEC_BODY)
			return mime_append_crlf(out, m->data, n->bs, n->be) < 0 ? -2 : 0;
		if (sec.text == SEC_MIME)
			return mime_append_crlf(out, m->data, n->hs, n->bs) < 0 ? -2 : 0;
		/* HEADER, TEXT, HEADER.FIELDS: only of an encapsulated message */
		if (n->kind != MIME_NODE_MSG || n->first_child < 0)
			return 0;
		const struct mime_node *c = &m->nodes[n->first_child];
		hs = c->hs;
		bs = c->bs;
		be = c->be;
	}
	int ret;
	switch (sec.text) {
	case SEC_HEADER:
		ret = mime_append_crlf(out, m->data, hs, bs);
		break;
	case SEC_TEXT:
		ret = mime_append_crlf(out, m->data, bs, be);
		break;
	case SEC_FIELDS:
	case SEC_FIELDS_NOT:
		ret = append_fields(out, m->data, hs, bs, &sec);
		break;
	case SEC_BODY:
	case SEC_MIME:
	default:
		ret = 0;
		break;
	}
	return ret < 0 ? -2 : 0;
}

/* ---- BINARY ---------------------------------------------------------- */

/* The part's Content-Transfer-Encoding, trimmed (NULL when absent). */
static const char *raw_cte(GMimeObject *o, size_t *len_r)
{
	if (o == NULL)
		return NULL;
	GMimeHeader *h = g_mime_header_list_get_header(g_mime_object_get_header_list(o),
						       "Content-Transfer-Encoding");
	if (h == NULL)
		return NULL;
	const char *v = g_mime_header_get_raw_value(h);
	if (v == NULL)
		return NULL;
	while (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n')
		v++;
	size_t len = strlen(v);
	while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t' || v[len - 1] == '\r' ||
			   v[len - 1] == '\n'))
		len--;
	*len_r = len;
	return v;
}

static bool token_is(const char *v, size_t len, const char *word)
{
	return len == strlen(word) && g_ascii_strncasecmp(v, word, len) == 0;
}

#define BINARY_CHUNK (64u * 1024)

int mime_binary(struct mime_message *m, const char *part, struct buf *out,
		const char **error_r)
{
	struct section sec;
	int idx = -1;

	if (*part == '\0')
		return mime_append_crlf(out, m->data, 0, m->len) < 0 ? -2 : 0;
	if (section_parse(part, &sec, error_r) < 0 || sec.text != SEC_BODY) {
		*error_r = "Invalid part";
		return -1;
	}
	mime_ensure_parsed(m);
	for (unsigned int i = 0; i < sec.n_parts; i++) {
		idx = sub_part(m, idx, sec.parts[i]);
		if (idx < 0) {
			*error_r = "No such part";
			return -1;
		}
	}
	const struct mime_node *n = &m->nodes[idx];
	if (n->kind != MIME_NODE_LEAF) {
		*error_r = "Cannot decode a multipart or message part";
		return -1;
	}

	size_t vlen = 0;
	const char *v = raw_cte(n->obj, &vlen);
	GMimeContentEncoding enc;
	if (v == NULL || vlen == 0 || token_is(v, vlen, "7bit") || token_is(v, vlen, "8bit") ||
	    token_is(v, vlen, "binary"))
		return mime_append_crlf(out, m->data, n->bs, n->be) < 0 ? -2 : 0;
	if (token_is(v, vlen, "base64"))
		enc = GMIME_CONTENT_ENCODING_BASE64;
	else if (token_is(v, vlen, "quoted-printable"))
		enc = GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE;
	else {
		*error_r = "UNKNOWN-CTE";
		return -1;
	}

	/* Base64 decodes to the exact octets; quoted-printable text had CRLF
	 * hard line breaks that the Maildir file stores as LF. */
	GMimeFilter *f = g_mime_filter_basic_new(enc, FALSE);
	int ret = 0;
	char last = 0;
	size_t p = n->bs;
	while (ret == 0) {
		size_t chunk = n->be - p > BINARY_CHUNK ? BINARY_CHUNK : n->be - p;
		char *o;
		size_t olen, opre;
		if (chunk > 0)
			g_mime_filter_filter(f, (char *)(uintptr_t)(m->data + p), chunk, 0, &o,
					     &olen, &opre);
		else
			g_mime_filter_complete(f, (char *)(uintptr_t)(m->data + p), 0, 0, &o,
					       &olen, &opre);
		if (olen > 0) {
			if (enc == GMIME_CONTENT_ENCODING_BASE64)
				ret = buf_append(out, o, olen) < 0 ? -2 : 0;
			else
				ret = append_crlf_state(out, o, olen, &last) < 0 ? -2 : 0;
		}
		if (chunk == 0)
			break;
		p += chunk;
	}
	g_object_unref(f);
	return ret;
}

/* ---- SEARCH ---------------------------------------------------------- */

/* Case-folded, valid UTF-8 copy (g_free). */
static char *fold(const char *s, gssize len)
{
	char *valid = g_utf8_make_valid(s, len);
	char *folded = g_utf8_casefold(valid, -1);

	g_free(valid);
	return folded;
}

static bool folded_contains(const char *text, const char *folded_needle)
{
	if (text == NULL)
		return false;
	char *ft = fold(text, -1);
	bool found = strstr(ft, folded_needle) != NULL;
	g_free(ft);
	return found;
}

static bool list_header_contains(GMimeObject *o, const char *field, const char *fneedle,
				 bool *exists)
{
	GMimeHeaderList *hl;

	if (o == NULL || (hl = g_mime_object_get_header_list(o)) == NULL)
		return false;
	int n = g_mime_header_list_get_count(hl);
	for (int i = 0; i < n; i++) {
		GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
		if (g_ascii_strcasecmp(g_mime_header_get_name(h), field) != 0)
			continue;
		*exists = true;
		if (*fneedle == '\0' || folded_contains(g_mime_header_get_value(h), fneedle))
			return true;
	}
	return false;
}

bool mime_header_contains(struct mime_message *m, const char *field, const char *needle)
{
	bool exists = false, found;

	mime_ensure_parsed(m);
	if (m->msg == NULL)
		return false;
	char *fneedle = fold(needle, -1);
	found = list_header_contains((GMimeObject *)m->msg, field, fneedle, &exists) ||
		list_header_contains(g_mime_message_get_mime_part(m->msg), field, fneedle,
				     &exists);
	g_free(fneedle);
	return found;
}

static const char *const search_field_names[] = { NULL, "From", "To", "Cc", "Bcc",
						   "Subject" };
#define SEARCH_FIELDS 5u

unsigned mime_search_field_id(const char *field)
{
	for (unsigned i = 1; i <= SEARCH_FIELDS; i++)
		if (g_ascii_strcasecmp(field, search_field_names[i]) == 0)
			return i;
	return 0;
}

/* The same walk as list_header_contains, recording instead of matching. */
static int search_fields_of(GMimeObject *o, struct buf *out)
{
	GMimeHeaderList *hl;

	if (o == NULL || (hl = g_mime_object_get_header_list(o)) == NULL)
		return 0;
	int n = g_mime_header_list_get_count(hl);
	for (int i = 0; i < n; i++) {
		GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
		unsigned id = mime_search_field_id(g_mime_header_get_name(h));
		if (id == 0)
			continue;
		const char *v = g_mime_header_get_value(h);
		char *fv = fold(v != NULL ? v : "", -1);
		char k = (char)id;
		int r = buf_append(out, &k, 1) < 0 || buf_append(out, fv, strlen(fv) + 1) < 0 ?
			-1 : 0;
		g_free(fv);
		if (r < 0)
			return -1;
	}
	return 0;
}

int mime_search_fields(struct mime_message *m, struct buf *out)
{
	mime_ensure_parsed(m);
	if (m->msg == NULL)
		return 0;
	if (search_fields_of((GMimeObject *)m->msg, out) < 0 ||
	    search_fields_of(g_mime_message_get_mime_part(m->msg), out) < 0)
		return -1;
	return 0;
}

bool mime_search_fields_contain(const void *data, size_t len, unsigned id,
				const char *folded_needle)
{
	const char *p = data, *end = p + len;
	while (p < end) {
		unsigned k = (unsigned char)*p++;
		const char *z = memchr(p, '\0', (size_t)(end - p));
		if (z == NULL)
			return false; /* truncated: cannot happen with our data */
		if (k == id && (*folded_needle == '\0' || strstr(p, folded_needle) != NULL))
			return true;
		p = z + 1;
	}
	return false;
}

char *mime_fold(const char *s)
{
	char *f = fold(s, -1);
	char *copy = f != NULL ? strdup(f) : NULL;
	g_free(f);
	return copy;
}

/* Every header of o as "Name: decoded value" lines. */
static bool headers_contain(GMimeObject *o, const char *fneedle)
{
	GMimeHeaderList *hl;

	if (o == NULL || (hl = g_mime_object_get_header_list(o)) == NULL)
		return false;
	int n = g_mime_header_list_get_count(hl);
	for (int i = 0; i < n; i++) {
		GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
		char *line = g_strconcat(g_mime_header_get_name(h), ": ",
					 g_mime_header_get_value(h) != NULL ?
						 g_mime_header_get_value(h) : "",
					 NULL);
		bool found = folded_contains(line, fneedle);
		g_free(line);
		if (found)
			return true;
	}
	return false;
}

bool mime_text_contains(struct mime_message *m, const char *needle, bool with_headers)
{
	bool found = false;

	if (*needle == '\0')
		return true;
	mime_ensure_parsed(m);
	char *fneedle = fold(needle, -1);
	if (m->msg == NULL) {
		/* unparsable: search the raw text */
		const struct mime_node *n = &m->nodes[0];
		size_t from = with_headers ? 0 : n->bs;
		char *t = g_strndup(m->data + from, m->len - from);
		found = folded_contains(t, fneedle);
		g_free(t);
		g_free(fneedle);
		return found;
	}
	if (with_headers)
		found = headers_contain((GMimeObject *)m->msg, fneedle) ||
			headers_contain(m->nodes[0].obj, fneedle);
	for (size_t i = 0; i < m->n_nodes && !found; i++) {
		const struct mime_node *n = &m->nodes[i];
		if (i > 0 && n->msg != NULL) {
			/* an encapsulated message's header is body text */
			found = headers_contain((GMimeObject *)n->msg, fneedle) ||
				headers_contain(n->obj, fneedle);
			if (found)
				break;
		}
		if (n->kind != MIME_NODE_LEAF || n->obj == NULL || !GMIME_IS_TEXT_PART(n->obj))
			continue;
		char *text = g_mime_text_part_get_text((GMimeTextPart *)n->obj);
		found = folded_contains(text, fneedle);
		g_free(text);
	}
	g_free(fneedle);
	return found;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t days_from_civil(int64_t y, int64_t mo, int64_t d)
{
	y -= mo <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (mo > 2 ? mo - 3 : mo + 9) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

int64_t mime_sent_date(struct mime_message *m, bool day_only)
{
	mime_ensure_parsed(m);
	if (m->msg == NULL)
		return -1;
	GDateTime *dt = g_mime_message_get_date(m->msg);
	if (dt == NULL)
		return -1;
	if (!day_only)
		return g_date_time_to_unix(dt);
	int y, mo, d;
	g_date_time_get_ymd(dt, &y, &mo, &d);
	return days_from_civil(y, mo, d) * 86400;
}
