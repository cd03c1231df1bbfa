/*
 * imap-seqset.c — IMAP sequence sets (RFC 9051 section 9 "sequence-set",
 * RFC 5182 "$"): parsing into sorted, merged ranges (O(n log n)), "*"
 * resolution, membership by binary search, incremental building for
 * UIDPLUS / ESEARCH results and the compact writer.
 *
 * Runs in the imapd worker processes; pure computation, no I/O.
 *
 * Storage: set->ranges is always allocated with room for at least
 * seqset_cap(count) entries (a power of two, >= 8), so imap_seqset_add()
 * can grow it without a capacity field in the public struct.
 */
#include "lib-imap/imap-seqset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"

static unsigned seqset_cap(unsigned count)
{
	unsigned cap = 8;
	while (cap < count && cap < (1u << 31))
		cap *= 2;
	return cap;
}

/* Makes room for count + 1 ranges; 0 or -1. */
static int seqset_grow(struct imap_seqset *set, unsigned max_ranges)
{
	if (set->count >= max_ranges)
		return -1;
	if (set->ranges != NULL && set->count + 1 <= seqset_cap(set->count))
		return 0;
	unsigned cap = seqset_cap(set->count + 1);
	struct imap_range *r = realloc(set->ranges, sizeof(*r) * cap);
	if (r == NULL)
		return -1;
	set->ranges = r;
	return 0;
}

static int range_cmp(const void *a, const void *b)
{
	const struct imap_range *x = a, *y = b;
	if (x->lo != y->lo)
		return x->lo < y->lo ? -1 : 1;
	if (x->hi != y->hi)
		return x->hi < y->hi ? -1 : 1;
	return 0;
}

/* Sorts and merges overlapping or adjacent ranges. */
static void seqset_normalise(struct imap_seqset *set)
{
	if (set->count < 2)
		return;
	qsort(set->ranges, set->count, sizeof(*set->ranges), range_cmp);
	unsigned out = 0;
	for (unsigned i = 1; i < set->count; i++) {
		struct imap_range *last = &set->ranges[out];
		const struct imap_range *r = &set->ranges[i];
		if (last->hi == UINT32_MAX || r->lo <= last->hi + 1) {
			if (r->hi > last->hi)
				last->hi = r->hi;
		} else {
			set->ranges[++out] = *r;
		}
	}
	set->count = out + 1;
}

/* seq-number = nz-number / "*"; returns octets used or 0. "*" gives
 * *star_r = true (and *n_r = 0). */
static size_t parse_number(const char *s, size_t len, uint32_t *n_r, bool *star_r)
{
	*star_r = false;
	if (len == 0)
		return 0;
	if (s[0] == '*') {
		*n_r = 0;
		*star_r = true;
		return 1;
	}
	if (s[0] < '1' || s[0] > '9')
		return 0;
	uint64_t n = 0;
	size_t i = 0;
	while (i < len && s[i] >= '0' && s[i] <= '9') {
		n = n * 10 + (uint64_t)(s[i] - '0');
		if (n > UINT32_MAX)
			return 0;
		i++;
	}
	*n_r = (uint32_t)n;
	return i;
}

int imap_seqset_parse(const char *s, size_t len, struct imap_seqset *set_r)
{
	memset(set_r, 0, sizeof(*set_r));
	if (len == 1 && s[0] == '$') {
		set_r->dollar = true;
		return 0;
	}
	size_t i = 0;
	unsigned nranges = 0;
	for (;;) {
		uint32_t lo, hi;
		bool lo_star, hi_star;
		size_t n = parse_number(s + i, len - i, &lo, &lo_star);
		if (n == 0)
			goto fail;
		i += n;
		hi = lo;
		hi_star = lo_star;
		if (i < len && s[i] == ':') {
			i++;
			n = parse_number(s + i, len - i, &hi, &hi_star);
			if (n == 0)
				goto fail;
			i += n;
		}
		if (++nranges > IMAP_SEQSET_MAX_RANGES)
			goto fail;
		if (lo_star || hi_star) {
			/* "*", "n:*" or "*:n": n joins the star interval */
			uint32_t num = lo_star ? hi : lo;
			if (!set_r->star) {
				set_r->star = true;
				set_r->star_lo = set_r->star_hi = num;
			} else if (num != 0) {
				if (set_r->star_lo == 0 || num < set_r->star_lo)
					set_r->star_lo = num;
				if (num > set_r->star_hi)
					set_r->star_hi = num;
			}
		} else {
			if (seqset_grow(set_r, IMAP_SEQSET_MAX_RANGES) < 0)
				goto fail;
			set_r->ranges[set_r->count].lo = lo < hi ? lo : hi;
			set_r->ranges[set_r->count].hi = lo < hi ? hi : lo;
			set_r->count++;
		}
		if (i == len)
			break;
		if (s[i] != ',')
			goto fail;
		i++;
	}
	/* room for the star interval, so that resolving cannot fail */
	if (set_r->star && seqset_grow(set_r, IMAP_SEQSET_MAX_RANGES + 1) < 0)
		goto fail;
	seqset_normalise(set_r);
	return 0;
fail:
	imap_seqset_free(set_r);
	return -1;
}

void imap_seqset_free(struct imap_seqset *set)
{
	free(set->ranges);
	set->ranges = NULL;
	set->count = 0;
	set->dollar = false;
	set->star = false;
	set->star_lo = set->star_hi = 0;
}

void imap_seqset_resolve(struct imap_seqset *set, uint32_t max)
{
	if (!set->star)
		return;
	struct imap_range r;
	if (max == 0) {
		/* "*" of an empty mailbox matches nothing; "n:*" is n */
		r.lo = set->star_lo;
		r.hi = set->star_hi;
	} else {
		/* "n:*" with n above the last is "max:n" (RFC 9051 6.4.8) */
		r.lo = set->star_lo != 0 && set->star_lo < max ? set->star_lo : max;
		r.hi = set->star_hi > max ? set->star_hi : max;
	}
	set->star = false;
	set->star_lo = set->star_hi = 0;
	if (r.lo == 0)
		return;
	/* imap_seqset_parse() made room for this range, so this does not
	 * allocate for a parsed set; should it fail anyway, the set matches
	 * less, never more. */
	if (seqset_grow(set, IMAP_SEQSET_ADD_MAX_RANGES) < 0)
		return;
	set->ranges[set->count++] = r;
	seqset_normalise(set);
}

bool imap_seqset_contains(const struct imap_seqset *set, uint32_t n)
{
	unsigned lo = 0, hi = set->count;
	/* find the last range with ranges[i].lo <= n */
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		if (set->ranges[mid].lo <= n)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo > 0 && n <= set->ranges[lo - 1].hi;
}

int imap_seqset_add(struct imap_seqset *set, uint32_t n)
{
	struct imap_range *r = set->ranges;
	unsigned count = set->count;

	if (n == 0)
		return -1;
	/* fast path: increasing order */
	if (count > 0 && n >= r[count - 1].lo) {
		if (n <= r[count - 1].hi)
			return 0;
		if (n == r[count - 1].hi + 1) {
			r[count - 1].hi = n;
			return 0;
		}
		if (seqset_grow(set, IMAP_SEQSET_ADD_MAX_RANGES) < 0)
			return -1;
		set->ranges[set->count].lo = set->ranges[set->count].hi = n;
		set->count++;
		return 0;
	}
	/* i: the first range with lo > n */
	unsigned lo = 0, hi = count;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		if (r[mid].lo <= n)
			lo = mid + 1;
		else
			hi = mid;
	}
	unsigned i = lo;
	bool join_prev = i > 0 && r[i - 1].hi != UINT32_MAX && n <= r[i - 1].hi + 1;
	bool join_next = i < count && n + 1 == r[i].lo;
	if (i > 0 && n <= r[i - 1].hi)
		return 0;
	if (join_prev && join_next) {
		r[i - 1].hi = r[i].hi;
		memmove(&r[i], &r[i + 1], sizeof(*r) * (count - i - 1));
		set->count--;
		return 0;
	}
	if (join_prev) {
		r[i - 1].hi = n;
		return 0;
	}
	if (join_next) {
		r[i].lo = n;
		return 0;
	}
	if (seqset_grow(set, IMAP_SEQSET_ADD_MAX_RANGES) < 0)
		return -1;
	r = set->ranges;
	memmove(&r[i + 1], &r[i], sizeof(*r) * (count - i));
	r[i].lo = r[i].hi = n;
	set->count++;
	return 0;
}

int imap_seqset_add_range(struct imap_seqset *set, uint32_t lo, uint32_t hi)
{
	if (lo == 0 || lo > hi)
		return -1;
	struct imap_range *r = set->ranges;
	unsigned count = set->count;
	/* i: the first range that ends at or after lo - 1 (touches or is
	 * above lo..hi); the last range first, for building in order */
	unsigned i;
	if (count == 0 || r[count - 1].hi < lo - 1) {
		i = count;
	} else {
		unsigned a = 0, b = count;
		while (a < b) {
			unsigned mid = a + (b - a) / 2;
			if (r[mid].hi < lo - 1)
				a = mid + 1;
			else
				b = mid;
		}
		i = a;
	}
	/* j: the first range from i that starts after hi + 1 */
	unsigned j = i;
	if (hi == UINT32_MAX) {
		j = count;
	} else {
		unsigned a = i, b = count;
		while (a < b) {
			unsigned mid = a + (b - a) / 2;
			if (r[mid].lo <= hi + 1)
				a = mid + 1;
			else
				b = mid;
		}
		j = a;
	}
	if (i == j) {
		/* touches nothing: a new range at i */
		if (seqset_grow(set, IMAP_SEQSET_ADD_MAX_RANGES) < 0)
			return -1;
		r = set->ranges;
		memmove(&r[i + 1], &r[i], sizeof(*r) * (count - i));
		r[i].lo = lo;
		r[i].hi = hi;
		set->count++;
		return 0;
	}
	/* ranges i..j-1 become one */
	if (r[i].lo < lo)
		lo = r[i].lo;
	if (r[j - 1].hi > hi)
		hi = r[j - 1].hi;
	r[i].lo = lo;
	r[i].hi = hi;
	memmove(&r[i + 1], &r[j], sizeof(*r) * (count - j));
	set->count -= j - i - 1;
	return 0;
}

int imap_seqset_write(const struct imap_seqset *set, struct buf *out)
{
	size_t start = out->len;
	for (unsigned i = 0; i <= set->count; i++) {
		char tmp[48];
		int n;
		const char *comma = i > 0 ? "," : "";
		if (i == set->count) {
			/* the unresolved star interval, if any */
			if (!set->star)
				break;
			if (set->star_lo == 0)
				n = snprintf(tmp, sizeof(tmp), "%s*", comma);
			else if (set->star_lo == set->star_hi)
				n = snprintf(tmp, sizeof(tmp), "%s%u:*", comma, (unsigned)set->star_lo);
			else
				n = snprintf(tmp, sizeof(tmp), "%s%u:*,%u:*", comma,
					     (unsigned)set->star_lo, (unsigned)set->star_hi);
		} else if (set->ranges[i].lo == set->ranges[i].hi) {
			n = snprintf(tmp, sizeof(tmp), "%s%u", comma, (unsigned)set->ranges[i].lo);
		} else {
			n = snprintf(tmp, sizeof(tmp), "%s%u:%u", comma, (unsigned)set->ranges[i].lo,
				     (unsigned)set->ranges[i].hi);
		}
		if (n < 0 || buf_append(out, tmp, (size_t)n) < 0) {
			out->len = start;
			if (out->data != NULL)
				out->data[start] = '\0';
			return -1;
		}
	}
	return 0;
}
