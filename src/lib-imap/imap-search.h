/*
 * imap-search.h — SEARCH criteria (RFC 9051 6.4.4, RFC 3501 6.4.4, MODSEQ
 * of RFC 7162): parsed from the command's arguments into a tree, then
 * evaluated per message through callbacks, so this module never touches a
 * mailbox or a message file. Cheap keys (flags, UID, size, dates) are
 * evaluated before expensive ones (headers, body text) in AND groups, and
 * the expensive callbacks are not called when the cheap ones decide.
 *
 * Keys: ALL ANSWERED BCC BEFORE BODY CC DELETED DRAFT FLAGGED FROM HEADER
 * KEYWORD LARGER NEW NOT OLD ON OR RECENT SEEN SENTBEFORE SENTON SENTSINCE
 * SINCE SMALLER SUBJECT TEXT TO UID UNANSWERED UNDELETED UNDRAFT UNFLAGGED
 * UNKEYWORD UNSEEN, sequence sets, "$" (SEARCHRES), parenthesised groups,
 * and MODSEQ [entry-name entry-type] n.
 */
#ifndef POSTERN_IMAP_SEARCH_H
#define POSTERN_IMAP_SEARCH_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "lib-imap/imap-parser.h"

/* System flags as a bitmask; the same values are used by lib-store. */
#define IMAP_FLAG_SEEN      0x01u
#define IMAP_FLAG_ANSWERED  0x02u
#define IMAP_FLAG_FLAGGED   0x04u
#define IMAP_FLAG_DELETED   0x08u
#define IMAP_FLAG_DRAFT     0x10u
#define IMAP_FLAG_RECENT    0x20u   /* session-only, never stored */

struct imap_search;   /* a parsed program */

/* What the evaluator asks about one message. ctx is the caller's. */
struct imap_search_msg {
	uint32_t seq, uid;
	uint32_t flags;               /* IMAP_FLAG_* including RECENT */
	uint64_t modseq;
	int64_t internaldate;         /* seconds since the epoch */
	/* Size in octets as RFC822.SIZE (CRLF form). Called only for
	 * LARGER/SMALLER. */
	uint64_t (*size)(void *ctx);
	/* Does the message have this keyword (case-insensitive)? */
	bool (*has_keyword)(void *ctx, const char *keyword);
	/* The Date: header as seconds since the epoch in its own zone's
	 * calendar date, or -1 when missing/unparsable (SENT* keys). */
	int64_t (*sent_date)(void *ctx);
	/* Does header field `field` (any occurrence, decoded: RFC 2047 words,
	 * case-insensitive substring) contain needle (UTF-8)? An empty needle
	 * matches when the field exists. */
	bool (*header_contains)(void *ctx, const char *field, const char *needle);
	/* Does the body (decoded text parts; with headers too when
	 * with_headers, for TEXT) contain needle, case-insensitively? */
	bool (*text_contains)(void *ctx, const char *needle, bool with_headers);
	void *ctx;
};

/*
 * Parses args[0..count-1] (after "SEARCH" and any "RETURN (...)" and
 * "CHARSET x", which the caller strips; see imap_search_parse_options).
 * msg_max and uid_max resolve "*". Returns 0 and *search_r, or -1 with
 * *error_r (client-safe text for "BAD"). Limits nesting to 32 levels of
 * parentheses, and to 256 levels of parentheses, NOT and OR together
 * ("OR OR OR ..." chains as clients build them are flattened when
 * evaluated). Strings are copied: the program outlives the parser's
 * arguments. "KEYWORD \Seen" (a system flag) tests the flag. A literal that
 * went to a sink is an error. SENT* keys do not match a message whose
 * sent_date() is -1. A NULL callback in struct imap_search_msg makes its
 * keys not match.
 */
int imap_search_parse(const struct imap_arg *args, unsigned count, uint32_t msg_max,
		      uint32_t uid_max, struct imap_search **search_r, const char **error_r);
void imap_search_free(struct imap_search **search);

/* Evaluates the program for one message; "$" uses saved (may be NULL:
 * matches nothing), a set of UIDs. */
struct imap_seqset;
bool imap_search_match(const struct imap_search *search, const struct imap_search_msg *msg,
		       const struct imap_seqset *saved_uids);
/* True when the program uses MODSEQ (the reply then carries (MODSEQ n)). */
bool imap_search_uses_modseq(const struct imap_search *search);

/*
 * ESEARCH (RFC 4731) and CHARSET handling before the criteria:
 * "SEARCH [RETURN (MIN MAX ALL COUNT SAVE)] [CHARSET UTF-8|US-ASCII] keys".
 * Returns the index of the first criterion argument and sets *ret_r
 * (bitmask; 0: no RETURN given, plain "* SEARCH" answer; RETURN () means
 * ALL). -1 with *error_r for a bad option; an unknown charset gives -1 with
 * *badcharset_r = true ("NO [BADCHARSET (UTF-8 US-ASCII)]").
 */
#define IMAP_SEARCH_RET_MIN    0x1u
#define IMAP_SEARCH_RET_MAX    0x2u
#define IMAP_SEARCH_RET_ALL    0x4u
#define IMAP_SEARCH_RET_COUNT  0x8u
#define IMAP_SEARCH_RET_SAVE   0x10u
#define IMAP_SEARCH_RET_GIVEN  0x80u   /* RETURN was present: answer with ESEARCH */
int imap_search_parse_options(const struct imap_arg *args, unsigned count, unsigned *ret_r,
			      bool *badcharset_r, const char **error_r);

/* "1-Feb-1994" (RFC 3501 date) to the UTC midnight of that day; -1 if bad. */
int64_t imap_date_parse(const char *s);

#endif
