/*
 * imap-seqset.h — IMAP sequence sets (RFC 9051 section 9, "sequence-set"):
 * "1:5,7,9:*" for message sequence numbers or UIDs. "$" (SEARCHRES) is
 * recognised and reported, not expanded here.
 */
#ifndef POSTERN_IMAP_SEQSET_H
#define POSTERN_IMAP_SEQSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMAP_SEQ_STAR UINT32_MAX   /* "*" before it is resolved */
#define IMAP_SEQSET_MAX_RANGES 10000
/* Ranges a set built with imap_seqset_add() may hold (results are bigger
 * than what a client may send). */
#define IMAP_SEQSET_ADD_MAX_RANGES (1u << 22)

struct imap_range {
	uint32_t lo, hi;            /* inclusive, lo <= hi after normalisation */
};

struct imap_seqset {
	struct imap_range *ranges;  /* sorted, merged, non-overlapping */
	unsigned count;
	bool dollar;                /* the set was "$" */
};

/* Parses s (len octets). Numbers are 1..4294967295 (0 is an error); "*"
 * becomes IMAP_SEQ_STAR; "b:a" is normalised to "a:b". 0, or -1 (syntax,
 * more than IMAP_SEQSET_MAX_RANGES ranges, out of memory). The caller frees
 * with imap_seqset_free(). Note: the number 4294967295 and "*" are the same
 * value once parsed. Leading zeros ("01") are a syntax error. */
int imap_seqset_parse(const char *s, size_t len, struct imap_seqset *set_r);
void imap_seqset_free(struct imap_seqset *set);
/* Replaces "*" with max (the highest sequence number or UID in use; for an
 * empty mailbox pass 0, which makes "*" match nothing... except that RFC 9051
 * 6.4.8 says "*" is the largest UID, so callers pass the last UID or 0) and
 * re-sorts/merges. Ranges entirely above max are kept (callers test against
 * real numbers with imap_seqset_contains). */
void imap_seqset_resolve(struct imap_seqset *set, uint32_t max);
bool imap_seqset_contains(const struct imap_seqset *set, uint32_t n);
/* Adds n (for building UIDPLUS / ESEARCH results); 0 or -1 (n is 0, more
 * than IMAP_SEQSET_ADD_MAX_RANGES ranges, out of memory). Start from a
 * zeroed struct or a parsed set. Adding in increasing order is O(1). */
int imap_seqset_add(struct imap_seqset *set, uint32_t n);
/* Writes the compact form "1:3,5" to out (a struct buf from lib/buf.h);
 * 0 or -1 when the buffer is full. An empty set writes nothing. */
struct buf;
int imap_seqset_write(const struct imap_seqset *set, struct buf *out);

#endif
