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

#define IMAP_SEQSET_MAX_RANGES 10000
/* Ranges a set built with imap_seqset_add() may hold (results are bigger
 * than what a client may send). */
#define IMAP_SEQSET_ADD_MAX_RANGES (1u << 22)

struct imap_range {
	uint32_t lo, hi;            /* inclusive, lo <= hi after normalisation */
};

/*
 * "*" is kept apart from the numbers until it is resolved, so that the
 * number 4294967295 stays a number. Every range with a "*" end ("*", "n:*",
 * "*:n") contains "*" once resolved, so together they are one interval:
 * from min(star_lo, max) to max(star_hi, max), where star_lo/star_hi are the
 * smallest and largest n paired with "*" (0 when "*" only came alone).
 */
struct imap_seqset {
	struct imap_range *ranges;  /* numbers only: sorted, merged, non-overlapping */
	unsigned count;
	bool dollar;                /* the set was "$" */
	bool star;                  /* "*" seen and not resolved yet */
	uint32_t star_lo, star_hi;  /* see above; meaningful when star */
};

/* Parses s (len octets). Numbers are 1..4294967295 (0 is an error); "*"
 * sets set_r->star (see struct imap_seqset); "b:a" is normalised to "a:b".
 * 0, or -1 (syntax, more than IMAP_SEQSET_MAX_RANGES ranges, out of
 * memory). The caller frees with imap_seqset_free(). Leading zeros ("01")
 * are a syntax error. */
int imap_seqset_parse(const char *s, size_t len, struct imap_seqset *set_r);
void imap_seqset_free(struct imap_seqset *set);
/* Replaces "*" with max (the highest sequence number or UID in use, 0 for
 * an empty mailbox: then "*" alone matches nothing and the "n:*" ranges
 * become star_lo..star_hi) and re-sorts/merges; afterwards set->star is
 * false. Ranges entirely above max are kept (callers test against real
 * numbers with imap_seqset_contains). */
void imap_seqset_resolve(struct imap_seqset *set, uint32_t max);
/* Membership among the numbers (an unresolved "*" matches nothing). */
bool imap_seqset_contains(const struct imap_seqset *set, uint32_t n);
/* Adds n (for building UIDPLUS / ESEARCH results); 0 or -1 (n is 0, more
 * than IMAP_SEQSET_ADD_MAX_RANGES ranges, out of memory). Start from a
 * zeroed struct or a parsed set. Adding in increasing order is O(1). */
int imap_seqset_add(struct imap_seqset *set, uint32_t n);
/* Adds lo..hi (inclusive), merged with the ranges it overlaps or touches;
 * 0 or -1 (lo is 0, lo > hi, more than IMAP_SEQSET_ADD_MAX_RANGES ranges,
 * out of memory: the set is unchanged). Like imap_seqset_add(), O(1) when
 * lo is above every number in the set, else O(log n + the ranges moved). */
int imap_seqset_add_range(struct imap_seqset *set, uint32_t lo, uint32_t hi);
/* Writes the compact form "1:3,5" to out (a struct buf from lib/buf.h), an
 * unresolved "*" as "n:*" ranges after the numbers; 0 or -1 when the buffer
 * is full (out unchanged). An empty set writes nothing. */
struct buf;
int imap_seqset_write(const struct imap_seqset *set, struct buf *out);

#endif
