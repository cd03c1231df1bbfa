/*
 * imap-parser.h — resumable parser for IMAP command lines (RFC 9051 /
 * RFC 3501 section 9 grammar), with literals. No sockets, no I/O: the
 * session feeds it bytes as they arrive and acts on what it returns.
 *
 * One command is: tag SP name [SP arguments] CRLF, where arguments are
 * atoms, quoted strings, literals ({N}, {N+} LITERAL+, ~{N} literal8 of
 * RFC 3516), parenthesised lists and NIL. A "[...]" inside an atom is
 * taken whole, spaces and parentheses included, so fetch attributes such
 * as BODY.PEEK[HEADER.FIELDS (From To)]<0.100> are one atom.
 *
 * Lines end in CRLF; a bare LF is accepted as a line end too (many test
 * clients), a bare CR inside a line is an error. Empty lines between
 * commands are ignored. Several spaces between arguments and a space before
 * the line end are tolerated. Atoms are 7-bit (8-bit text must be quoted or
 * a literal); "\" may only start an atom ("\Seen"). Everything is bounded
 * by struct imap_parser_limits; nothing grows without a limit.
 */
#ifndef POSTERN_IMAP_PARSER_H
#define POSTERN_IMAP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum imap_arg_type {
	IMAP_ARG_ATOM,          /* includes "[...]" sections and "<...>" partials */
	IMAP_ARG_STRING,        /* quoted string, unescaped */
	IMAP_ARG_LITERAL,       /* {N} / {N+} / ~{N}; str is NULL if it went to a sink */
	IMAP_ARG_LIST,          /* ( ... ) */
	IMAP_ARG_NIL,           /* the atom NIL (case-insensitive) */
};

struct imap_arg {
	enum imap_arg_type type;
	const char *str;        /* NUL-terminated (may contain NULs for literal8) */
	size_t len;             /* octets in str; for a sunk literal, its size */
	bool literal8;          /* ~{N} (BINARY APPEND) */
	const struct imap_arg *list;  /* IMAP_ARG_LIST: count children */
	unsigned count;
};

struct imap_parser_limits {
	size_t line_max;        /* octets of one command outside literals, CRLF
				   included (64 KiB); a broken line is skipped
				   up to 4 * line_max, beyond that: fatal */
	size_t literal_max;     /* one literal kept in memory (not sunk) (1 MiB);
				   all of one command's in-memory literals
				   together: at most 4 * literal_max */
	unsigned depth_max;     /* nesting of lists (16) */
	unsigned args_max;      /* arguments in all lists together (10000) */
};
/* A zero field in lim means its default. */

struct imap_parser;

/* lim NULL: the defaults in the comments above. NULL on allocation failure. */
struct imap_parser *imap_parser_new(const struct imap_parser_limits *lim);
void imap_parser_free(struct imap_parser **p);

enum imap_parse_result {
	IMAP_PARSE_MORE,        /* all input used, command not complete */
	IMAP_PARSE_DONE,        /* a whole command: see imap_parser_tag/name/args */
	IMAP_PARSE_LITERAL,     /* a literal was announced: see imap_parser_literal() and
				   call imap_parser_literal_accept() or _reject() */
	IMAP_PARSE_ERROR,       /* syntax error: imap_parser_error(); the rest of the
				   command line has been or will be discarded (see below) */
};

/*
 * Consumes up to len bytes of data and sets *used_r to how many it used.
 * Stops at the first result other than MORE (the caller feeds the rest
 * again afterwards). After DONE or ERROR the caller handles the command
 * and then calls imap_parser_reset() before feeding the next one.
 *
 * ERROR: the tag (if one was read) is in imap_parser_tag() so the session
 * can answer "tag BAD ..." (or "* BAD" without a tag). Input up to the end
 * of the broken line is skipped by the parser itself on the next feeds
 * after reset (it remembers it is skipping); imap_parser_fatal() says the
 * input cannot be resynchronised (a line over line_max far beyond the
 * limit, or a non-synchronising literal too large to skip) and the session
 * should send BYE and close.
 *
 * Details of the contract:
 * - A fatal condition found while skipping a broken line after reset is
 *   reported as one more ERROR (with tag "", imap_parser_fatal() true).
 *   A fatal parser returns ERROR, using nothing, from then on.
 * - Feeding again after DONE/ERROR without imap_parser_reset() resets
 *   implicitly (the previous command's results are then gone).
 * - While a LITERAL is undecided, feed() returns LITERAL again, using
 *   nothing. len may be 0 (e.g. to collect the ERROR of an accepted
 *   literal that was too large, see imap_parser_literal_accept()).
 */
enum imap_parse_result imap_parser_feed(struct imap_parser *p, const char *data, size_t len,
					size_t *used_r);

/* After DONE/ERROR: "" when no tag was read. Valid until reset. */
const char *imap_parser_tag(const struct imap_parser *p);
/* After DONE (and during LITERAL): the command name, upper-cased, with "UID "
 * folded in ("UID FETCH"); NULL if not read yet. */
const char *imap_parser_name(const struct imap_parser *p);
/* After DONE: the arguments after the command name. Valid until reset.
 * Never NULL (with *count_r 0 too); a list's `list` is never NULL either. */
const struct imap_arg *imap_parser_args(const struct imap_parser *p, unsigned *count_r);
/* After ERROR: a short client-safe reason ("Missing ')'", "Line too long"). */
const char *imap_parser_error(const struct imap_parser *p);
bool imap_parser_fatal(const struct imap_parser *p);

/* During LITERAL: the announced size, whether it is synchronising ({N}: the
 * client waits for "+ " before sending) and whether it is literal8, and its
 * index among this command's literals (0, 1, ... for MULTIAPPEND). */
struct imap_literal_info {
	uint64_t size;
	bool sync;
	bool literal8;
	unsigned index;
};
void imap_parser_literal(const struct imap_parser *p, struct imap_literal_info *info_r);

/*
 * Accept the announced literal. With sink NULL it is kept in memory (and
 * must be <= literal_max, else the parser answers ERROR "Literal too
 * large" itself). With a sink, its bytes are passed to sink as they arrive
 * (any size; sink returns 0, or -1 to fail the command: the rest of the
 * literal is then skipped and the result is ERROR with reason "Literal
 * rejected"), and the argument is an IMAP_ARG_LITERAL with str NULL. The
 * caller sends "+ OK" itself for a synchronising literal.
 * An in-memory literal over the limits is reported by the next feed()
 * (which uses nothing) as ERROR "Literal too large", and handled like a
 * rejected one: check info.size yourself before sending "+ OK".
 * A literal that is not literal8 must not contain NUL: ERROR "NUL in
 * literal" (the rest of it is skipped).
 */
typedef int imap_literal_sink_cb(void *ctx, const char *data, size_t len);
void imap_parser_literal_accept(struct imap_parser *p, imap_literal_sink_cb *sink, void *ctx);
/*
 * Refuse it (size over a limit): for {N} the client sends nothing more for
 * this command, so the parser is ready for a new command after reset; for
 * {N+} / ~{N+} the N bytes and the rest of the line are skipped first.
 * The caller answers "tag NO [TOOBIG] ..." (or BAD) itself, with the tag
 * from imap_parser_tag(), and then calls imap_parser_reset().
 */
void imap_parser_literal_reject(struct imap_parser *p);

/* Ready for the next command (keeps any pending skip state). */
void imap_parser_reset(struct imap_parser *p);

/* Helpers for command handlers. An "astring" is an atom, string or literal;
 * these return its text or NULL if arg is not of that kind (a literal that
 * went to a sink gives NULL too). NIL counts as an atom for imap_arg_atom()
 * and imap_arg_astring() (its text as sent: a user may be called "nil"). */
const char *imap_arg_astring(const struct imap_arg *arg);
/* Atom text, or NULL. */
const char *imap_arg_atom(const struct imap_arg *arg);
/* nstring: NIL gives *is_nil_r = true and "" */
const char *imap_arg_nstring(const struct imap_arg *arg, bool *is_nil_r);
bool imap_arg_is_list(const struct imap_arg *arg);

#endif
