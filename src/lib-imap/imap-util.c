/*
 * imap-util.c — writing IMAP syntax (quoted strings and literals, astring,
 * nstring, INTERNALDATE date-time, flag lists), parsing flag lists and
 * APPEND date-times, and mailbox name encoding: modified UTF-7 of
 * RFC 3501 5.1.3 (both directions, strict), calendar arithmetic.
 *
 * Runs in the imapd worker processes; pure computation, no I/O. Every
 * writer appends to a capped struct buf and leaves it unchanged when the
 * whole item does not fit.
 */
#include "lib-imap/imap-util.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib-imap/imap-parser.h"
#include "lib-imap/imap-search.h"
#include "lib/buf.h"

#define QUOTED_MAX 1024

static const char month_names[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

/* Undoes a partial write. */
static int buf_rollback(struct buf *out, size_t start)
{
	out->len = start;
	if (out->data != NULL)
		out->data[start] = '\0';
	return -1;
}

/* ------------------------------------------------------------ calendar */

int64_t imap_days_from_civil(int y, unsigned m, unsigned d)
{
	/* H. Hinnant's days_from_civil */
	int64_t yy = (int64_t)y - (m <= 2);
	int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
	int64_t yoe = yy - era * 400;
	int64_t mp = m > 2 ? (int64_t)m - 3 : (int64_t)m + 9;
	int64_t doy = (153 * mp + 2) / 5 + (int64_t)d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

void imap_civil_from_days(int64_t z, int *y_r, unsigned *m_r, unsigned *d_r)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t y = yoe + era * 400;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	int64_t d = doy - (153 * mp + 2) / 5 + 1;
	int64_t m = mp < 10 ? mp + 3 : mp - 9;
	*y_r = (int)(y + (m <= 2));
	*m_r = (unsigned)m;
	*d_r = (unsigned)d;
}

unsigned imap_days_in_month(int y, unsigned m)
{
	static const unsigned char days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	if (m < 1 || m > 12)
		return 0;
	if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return 29;
	return days[m - 1];
}

/* ------------------------------------------------------------ UTF-8 */

/* Decodes one UTF-8 sequence (strict: no overlong forms, no surrogates, at
 * most U+10FFFF). Returns its length or 0 if invalid. */
static size_t utf8_decode(const unsigned char *s, size_t len, uint32_t *cp_r)
{
	unsigned char c = s[0];
	size_t n;
	uint32_t cp, min;

	if (c < 0x80) {
		*cp_r = c;
		return 1;
	} else if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
		min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
		min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	*cp_r = cp;
	return n;
}

static bool utf8_valid(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;
	while (i < len) {
		uint32_t cp;
		size_t n = utf8_decode(u + i, len - i, &cp);
		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

static int utf8_append(struct buf *out, uint32_t cp)
{
	char b[4];
	size_t n;
	if (cp < 0x80) {
		b[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (char)(0xc0 | (cp >> 6));
		b[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (char)(0xe0 | (cp >> 12));
		b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		b[0] = (char)(0xf0 | (cp >> 18));
		b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	return buf_append(out, b, n);
}

/* ------------------------------------------------------------ strings */

static bool is_atom_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return false;
	return strchr("(){%*\"\\]", c) == NULL;
}

int imap_write_string(struct buf *out, const char *s, size_t len, bool utf8)
{
	size_t start = out->len;
	bool quoted = len <= QUOTED_MAX;
	bool eight = false;

	for (size_t i = 0; quoted && i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\r' || c == '\n' || c == '\0')
			quoted = false;
		else if (c >= 0x80)
			eight = true;
	}
	if (quoted && eight && (!utf8 || !utf8_valid(s, len)))
		quoted = false;

	if (!quoted) {
		if (buf_printf(out, "{%zu}\r\n", len) < 0 || buf_append(out, s, len) < 0)
			return buf_rollback(out, start);
		return 0;
	}
	if (buf_append(out, "\"", 1) < 0)
		return buf_rollback(out, start);
	size_t run = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '"' || s[i] == '\\') {
			if (buf_append(out, s + run, i - run) < 0 || buf_append(out, "\\", 1) < 0)
				return buf_rollback(out, start);
			run = i;
		}
	}
	if (buf_append(out, s + run, len - run) < 0 || buf_append(out, "\"", 1) < 0)
		return buf_rollback(out, start);
	return 0;
}

int imap_write_astring(struct buf *out, const char *s, bool utf8)
{
	size_t len = strlen(s);
	bool atom = len > 0 && strcasecmp(s, "NIL") != 0;
	for (size_t i = 0; atom && i < len; i++)
		atom = is_atom_char((unsigned char)s[i]);
	if (atom)
		return buf_append(out, s, len);
	return imap_write_string(out, s, len, utf8);
}

int imap_write_nstring(struct buf *out, const char *s_or_null, bool utf8)
{
	if (s_or_null == NULL)
		return buf_append(out, "NIL", 3);
	return imap_write_string(out, s_or_null, strlen(s_or_null), utf8);
}

/* ------------------------------------------------------------ dates */

int imap_write_datetime(struct buf *out, int64_t t, int tz_offset_min)
{
	if (tz_offset_min <= -24 * 60 || tz_offset_min >= 24 * 60)
		return -1;
	if (t > INT64_MAX / 2 || t < INT64_MIN / 2)
		return -1;
	int64_t local = t + (int64_t)tz_offset_min * 60;
	int64_t days = local / 86400, secs = local % 86400;
	if (secs < 0) {
		secs += 86400;
		days--;
	}
	int y;
	unsigned m, d;
	imap_civil_from_days(days, &y, &m, &d);
	if (y < 0 || y > 9999)
		return -1;
	int tz = tz_offset_min < 0 ? -tz_offset_min : tz_offset_min;
	return buf_printf(out, "\"%02u-%s-%04d %02u:%02u:%02u %c%02d%02d\"", d, month_names[m - 1],
			  y, (unsigned)(secs / 3600), (unsigned)(secs / 60 % 60),
			  (unsigned)(secs % 60), tz_offset_min < 0 ? '-' : '+', tz / 60, tz % 60);
}

static bool digits(const char *s, unsigned n, unsigned *v_r)
{
	unsigned v = 0;
	for (unsigned i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	*v_r = v;
	return true;
}

int64_t imap_datetime_parse(const char *s)
{
	unsigned day, month, year, hh, mm, ss, zh, zm;
	const char *p = s;

	if (s == NULL)
		return -1;
	/* date-day-fixed = (SP DIGIT) / 2DIGIT; a lone DIGIT is accepted too */
	if (p[0] == ' ' && digits(p + 1, 1, &day))
		p += 2;
	else if (digits(p, 2, &day))
		p += 2;
	else if (digits(p, 1, &day))
		p += 1;
	else
		return -1;
	if (*p++ != '-')
		return -1;
	for (month = 0; month < 12; month++) {
		if (strncasecmp(p, month_names[month], 3) == 0)
			break;
	}
	if (month == 12)
		return -1;
	p += 3;
	if (p[0] != '-' || !digits(p + 1, 4, &year) || p[5] != ' ')
		return -1;
	p += 6;
	if (!digits(p, 2, &hh) || p[2] != ':' || !digits(p + 3, 2, &mm) || p[5] != ':' ||
	    !digits(p + 6, 2, &ss) || p[8] != ' ')
		return -1;
	p += 9;
	if ((p[0] != '+' && p[0] != '-') || !digits(p + 1, 2, &zh) || !digits(p + 3, 2, &zm) ||
	    p[5] != '\0')
		return -1;
	if (day == 0 || day > imap_days_in_month((int)year, month + 1) || hh > 23 || mm > 59 ||
	    ss > 60 || zm > 59)
		return -1;
	int64_t zone = (int64_t)zh * 3600 + (int64_t)zm * 60;
	int64_t t = imap_days_from_civil((int)year, month + 1, day) * 86400 +
		    (int64_t)hh * 3600 + (int64_t)mm * 60 + (int64_t)ss;
	return p[0] == '+' ? t - zone : t + zone;
}

/* ------------------------------------------------------------ flags */

static const struct {
	const char *name;
	uint32_t bit;
} system_flags[] = {
	{ "\\Seen", IMAP_FLAG_SEEN },       { "\\Answered", IMAP_FLAG_ANSWERED },
	{ "\\Flagged", IMAP_FLAG_FLAGGED }, { "\\Deleted", IMAP_FLAG_DELETED },
	{ "\\Draft", IMAP_FLAG_DRAFT },     { "\\Recent", IMAP_FLAG_RECENT },
};
#define N_SYSTEM_FLAGS (sizeof(system_flags) / sizeof(system_flags[0]))

int imap_write_flags(struct buf *out, uint32_t flags, const char *keywords)
{
	size_t start = out->len;
	bool first = true;

	if (buf_append(out, "(", 1) < 0)
		return buf_rollback(out, start);
	for (size_t i = 0; i < N_SYSTEM_FLAGS; i++) {
		if ((flags & system_flags[i].bit) == 0)
			continue;
		if ((!first && buf_append(out, " ", 1) < 0) ||
		    buf_append_str(out, system_flags[i].name) < 0)
			return buf_rollback(out, start);
		first = false;
	}
	const char *k = keywords != NULL ? keywords : "";
	while (*k != '\0') {
		while (*k == ' ')
			k++;
		size_t n = strcspn(k, " ");
		if (n == 0)
			break;
		if ((!first && buf_append(out, " ", 1) < 0) || buf_append(out, k, n) < 0)
			return buf_rollback(out, start);
		first = false;
		k += n;
	}
	if (buf_append(out, ")", 1) < 0)
		return buf_rollback(out, start);
	return 0;
}

static bool keyword_valid(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++) {
		if (!is_atom_char((unsigned char)*s))
			return false;
	}
	return true;
}

struct kw_ref {
	const char *s;
	unsigned idx;
};

static int kw_cmp(const void *a, const void *b)
{
	const struct kw_ref *x = a, *y = b;
	int r = strcasecmp(x->s, y->s);
	if (r != 0)
		return r;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

int imap_parse_flags(const struct imap_arg *arg, uint32_t *flags_r, char **keywords_r,
		     const char **error_r)
{
	const struct imap_arg *items = arg;
	unsigned count = 1;
	struct kw_ref *kws = NULL;
	bool *dup = NULL;
	unsigned nkw = 0;
	size_t total = 0;
	int ret = -1;

	*flags_r = 0;
	*keywords_r = NULL;
	if (arg->type == IMAP_ARG_LIST) {
		items = arg->list;
		count = arg->count;
	}
	if (count > 0) {
		kws = malloc(sizeof(*kws) * count);
		dup = calloc(count, sizeof(*dup));
		if (kws == NULL || dup == NULL) {
			*error_r = "Out of memory";
			goto out;
		}
	}
	for (unsigned i = 0; i < count; i++) {
		const char *s = imap_arg_atom(&items[i]);
		if (s == NULL) {
			*error_r = "Flags must be atoms";
			goto out;
		}
		if (s[0] == '\\') {
			size_t k;
			for (k = 0; k < N_SYSTEM_FLAGS; k++) {
				if (strcasecmp(s, system_flags[k].name) == 0)
					break;
			}
			if (k == N_SYSTEM_FLAGS) {
				*error_r = "Unknown system flag";
				goto out;
			}
			if (system_flags[k].bit == IMAP_FLAG_RECENT) {
				*error_r = "\\Recent flag can't be set";
				goto out;
			}
			*flags_r |= system_flags[k].bit;
			continue;
		}
		if (!keyword_valid(s)) {
			*error_r = "Invalid keyword";
			goto out;
		}
		kws[nkw].s = s;
		kws[nkw].idx = nkw;
		nkw++;
	}
	if (nkw > 0) {
		/* duplicates (case-insensitive) keep their first spelling */
		struct kw_ref *sorted = malloc(sizeof(*sorted) * nkw);
		if (sorted == NULL) {
			*error_r = "Out of memory";
			goto out;
		}
		memcpy(sorted, kws, sizeof(*sorted) * nkw);
		qsort(sorted, nkw, sizeof(*sorted), kw_cmp);
		for (unsigned i = 1; i < nkw; i++) {
			if (strcasecmp(sorted[i].s, sorted[i - 1].s) == 0)
				dup[sorted[i].idx] = true;
		}
		free(sorted);
		for (unsigned i = 0; i < nkw; i++) {
			if (!dup[i])
				total += strlen(kws[i].s) + 1;
		}
		char *k = malloc(total);
		if (k == NULL) {
			*error_r = "Out of memory";
			goto out;
		}
		size_t pos = 0;
		for (unsigned i = 0; i < nkw; i++) {
			if (dup[i])
				continue;
			size_t n = strlen(kws[i].s);
			if (pos > 0)
				k[pos++] = ' ';
			memcpy(k + pos, kws[i].s, n);
			pos += n;
		}
		k[pos] = '\0';
		*keywords_r = k;
	}
	ret = 0;
out:
	free(kws);
	free(dup);
	if (ret < 0)
		*flags_r = 0;
	return ret;
}

/* ------------------------------------------------------------ modified UTF-7 */

static const char b64_chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == ',')
		return 63;
	return -1;
}

static char *buf_take(struct buf *b)
{
	if (b->data == NULL)
		return strdup("");
	char *s = b->data;
	b->data = NULL;
	return s;
}

char *imap_mutf7_to_utf8(const char *s)
{
	size_t len = strlen(s);
	struct buf out;
	buf_init(&out, len * 2 + 16);

	size_t i = 0;
	while (i < len) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c > 0x7e)
			goto fail;
		if (c != '&') {
			if (buf_append(&out, &c, 1) < 0)
				goto fail;
			i++;
			continue;
		}
		i++;
		if (s[i] == '-') {
			if (buf_append(&out, "&", 1) < 0)
				goto fail;
			i++;
			continue;
		}
		uint32_t bits = 0, high = 0;
		unsigned nbits = 0, units = 0;
		for (;; i++) {
			if (s[i] == '-')
				break;
			int v = b64_value((unsigned char)s[i]);
			if (v < 0)
				goto fail;   /* includes the end of the string */
			bits = (bits << 6) | (uint32_t)v;
			nbits += 6;
			if (nbits < 16)
				continue;
			nbits -= 16;
			uint32_t u = (bits >> nbits) & 0xffff;
			bits &= (1u << nbits) - 1;
			units++;
			if (u >= 0xd800 && u <= 0xdbff) {
				if (high != 0)
					goto fail;
				high = u;
				continue;
			}
			uint32_t cp = u;
			if (u >= 0xdc00 && u <= 0xdfff) {
				if (high == 0)
					goto fail;
				cp = 0x10000 + ((high - 0xd800) << 10) + (u - 0xdc00);
				high = 0;
			} else if (high != 0) {
				goto fail;
			} else if (u == 0 || (u >= 0x20 && u <= 0x7e)) {
				/* printable ASCII must represent itself */
				goto fail;
			}
			if (utf8_append(&out, cp) < 0)
				goto fail;
		}
		/* at '-': whole units only, zero padding shorter than a sextet */
		if (units == 0 || high != 0 || nbits >= 6 || bits != 0)
			goto fail;
		i++;
	}
	return buf_take(&out);
fail:
	buf_free(&out);
	return NULL;
}

static int b64_flush(struct buf *out, uint32_t *bits, unsigned *nbits)
{
	while (*nbits >= 6) {
		*nbits -= 6;
		char ch = b64_chars[(*bits >> *nbits) & 0x3f];
		if (buf_append(out, &ch, 1) < 0)
			return -1;
	}
	*bits &= (1u << *nbits) - 1;
	return 0;
}

char *imap_utf8_to_mutf7(const char *s)
{
	size_t len = strlen(s);
	const unsigned char *u = (const unsigned char *)s;
	struct buf out;
	bool shifted = false;
	uint32_t bits = 0;
	unsigned nbits = 0;

	buf_init(&out, len * 8 + 16);
	size_t i = 0;
	while (i < len) {
		uint32_t cp;
		size_t n = utf8_decode(u + i, len - i, &cp);
		if (n == 0)
			goto fail;
		i += n;
		if (cp >= 0x20 && cp <= 0x7e) {
			if (shifted) {
				if (nbits > 0) {
					bits <<= 6 - nbits;
					nbits = 6;
					if (b64_flush(&out, &bits, &nbits) < 0)
						goto fail;
				}
				if (buf_append(&out, "-", 1) < 0)
					goto fail;
				shifted = false;
			}
			if (cp == '&') {
				if (buf_append(&out, "&-", 2) < 0)
					goto fail;
			} else {
				char ch = (char)cp;
				if (buf_append(&out, &ch, 1) < 0)
					goto fail;
			}
			continue;
		}
		if (!shifted) {
			if (buf_append(&out, "&", 1) < 0)
				goto fail;
			shifted = true;
		}
		if (cp >= 0x10000) {
			uint32_t v = cp - 0x10000;
			bits = (bits << 16) | (0xd800 | (v >> 10));
			nbits += 16;
			if (b64_flush(&out, &bits, &nbits) < 0)
				goto fail;
			bits = (bits << 16) | (0xdc00 | (v & 0x3ff));
		} else {
			bits = (bits << 16) | cp;
		}
		nbits += 16;
		if (b64_flush(&out, &bits, &nbits) < 0)
			goto fail;
	}
	if (shifted) {
		if (nbits > 0) {
			bits <<= 6 - nbits;
			nbits = 6;
			if (b64_flush(&out, &bits, &nbits) < 0)
				goto fail;
		}
		if (buf_append(&out, "-", 1) < 0)
			goto fail;
	}
	return buf_take(&out);
fail:
	buf_free(&out);
	return NULL;
}
