/*
 * imap-util.h — writing IMAP syntax (strings, dates, flags) and mailbox
 * name encoding (modified UTF-7, RFC 3501 5.1.3).
 */
#ifndef POSTERN_IMAP_UTIL_H
#define POSTERN_IMAP_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

/* Appends s as an IMAP string: quoted when it is short (<= 1024 octets),
 * 7-bit (or valid UTF-8 with utf8 true) and has no CR, LF or NUL; a literal
 * {N}\r\n... otherwise.
 * imap_write_astring writes an atom when s is a valid non-empty atom.
 * imap_write_nstring writes NIL for NULL. 0, or -1 when out is full. */
int imap_write_string(struct buf *out, const char *s, size_t len, bool utf8);
int imap_write_astring(struct buf *out, const char *s, bool utf8);
int imap_write_nstring(struct buf *out, const char *s_or_null, bool utf8);

/* "23-Nov-2026 17:03:52 +0000" (date-time with quotes) for INTERNALDATE;
 * tz_offset_min is the zone to show (minutes east of UTC, |tz| < 24 h).
 * The day is always two digits ("01-Feb-2024"). -1 for a year outside
 * 0..9999 or a full buffer. */
int imap_write_datetime(struct buf *out, int64_t t, int tz_offset_min);
/* Parses an APPEND date-time "dd-Mon-yyyy hh:mm:ss +zzzz" (day may be
 * " d" or "d"); returns seconds since the epoch or -1 (also the value of
 * 31-Dec-1969 23:59:59 UTC, which is refused). */
int64_t imap_datetime_parse(const char *s);

/* "(\Seen \Answered)" style list from IMAP_FLAG_* bits (imap-search.h)
 * followed by the space-separated keywords (may be NULL or ""). */
int imap_write_flags(struct buf *out, uint32_t flags, const char *keywords);
/* Parses a flag list argument into bits and a space-separated keyword
 * string (malloc'ed; NULL when none). \Recent and unknown \-flags are an
 * error (-1, *error_r). Keywords must be atoms without "\", "]", "%", "*";
 * duplicates (case-insensitive) are dropped, the first spelling kept. arg
 * may be a list "(\Seen foo)" or a single atom. */
struct imap_arg;
int imap_parse_flags(const struct imap_arg *arg, uint32_t *flags_r, char **keywords_r,
		     const char **error_r);

/* Modified UTF-7 <-> UTF-8 mailbox names. Results are malloc'ed; NULL when
 * the input is not valid (bad base64, unpaired surrogate, invalid UTF-8). */
char *imap_mutf7_to_utf8(const char *s);
char *imap_utf8_to_mutf7(const char *s);

/* Calendar helpers (proleptic Gregorian, UTC), shared with imap-search.c:
 * days since 1970-01-01 of y-m-d (m 1..12, d 1..31, not validated), the
 * inverse, and the number of days in a month (0 for a bad month). */
int64_t imap_days_from_civil(int y, unsigned m, unsigned d);
void imap_civil_from_days(int64_t days, int *y_r, unsigned *m_r, unsigned *d_r);
unsigned imap_days_in_month(int y, unsigned m);

#endif
