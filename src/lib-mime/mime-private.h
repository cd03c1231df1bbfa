/*
 * mime-private.h — what mime.c (parsing, part tree, sections, BINARY,
 * SEARCH) and mime-imap.c (ENVELOPE and BODYSTRUCTURE writers) share.
 * Not installed, not for other modules: use mime.h.
 *
 * The part tree: GMime builds the MIME structure; we keep a flat array of
 * nodes over it with the byte offsets of each part in the original data
 * (header start, body start, body end), taken from GMime's header offsets
 * and persistent content substreams. Offsets always satisfy
 * hs <= bs <= be <= len.
 */
#ifndef POSTERN_MIME_PRIVATE_H
#define POSTERN_MIME_PRIVATE_H

#include <gmime/gmime.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

/* At most this many parts are indexed; deeper or further parts of a
 * pathological message are folded into their parent's body. */
#define MIME_MAX_PARTS 10000
/* MIME nesting deeper than this is described as an opaque leaf. */
#define MIME_MAX_DEPTH 100

enum mime_node_kind {
	MIME_NODE_LEAF,   /* a GMimePart (or anything we do not descend into) */
	MIME_NODE_MULTI,  /* a GMimeMultipart: children are its parts */
	MIME_NODE_MSG,    /* message/rfc822 (GMimeMessagePart): one child, the
			   * encapsulated message's root part */
};

struct mime_node {
	GMimeObject *obj;   /* NULL for the synthetic body of an unparsable message */
	GMimeMessage *msg;  /* set when this node is the root part of a message:
			     * [hs, bs) is then that message's whole header */
	enum mime_node_kind kind;
	int parent, first_child, next; /* indexes, -1 for none */
	unsigned int n_children;
	size_t hs, bs, be;  /* header start, body start, body end */
	size_t nat;         /* scratch: natural end while laying out */
};

struct mime_message {
	const char *data;
	size_t len;
	void *map;          /* mmap()ed by mime_parse_fd, or NULL */
	size_t map_len;
	char *owned;        /* read() by mime_parse_fd, or NULL */
	uint64_t crlf_size;

	bool parsed;
	GByteArray *array;  /* wraps data without copying it */
	GMimeStream *stream;
	GMimeMessage *msg;  /* NULL when GMime could not make a message */
	struct mime_node *nodes;
	size_t n_nodes;
};

/* Parses on first use (GMime + layout). Never fails: an unparsable message
 * becomes one synthetic text/plain node. */
void mime_ensure_parsed(struct mime_message *m);

/* CRLF-form length, LF count and CRLF-form copy of data[start, end): a LF
 * counts as bare when it starts the range or follows a byte other than CR. */
uint64_t mime_region_crlf_len(const char *d, size_t start, size_t end);
uint64_t mime_region_lines(const char *d, size_t start, size_t end);
int mime_append_crlf(struct buf *out, const char *d, size_t start, size_t end);

/* IMAP string: NIL for NULL, a quoted string when it can be one (ASCII, or
 * valid UTF-8 when utf8), else a literal. CR, LF and NUL are dropped (the
 * callers hand unfolded header text). Leading and trailing white space is
 * trimmed when trim. 0 or -1 when out is full. */
int mime_imap_string(struct buf *out, const char *s, size_t len, bool utf8, bool trim);

#endif
