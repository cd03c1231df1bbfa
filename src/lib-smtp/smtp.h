/*
 * smtp.h — SMTP syntax: command lines, paths and ESMTP parameters, replies,
 * the DATA/BDAT content filter, and the client side (reading a server's
 * replies and EHLO capabilities, xtext encoding). No sockets, no I/O, no
 * allocation except through the caller's struct buf.
 *
 * RFC 5321 (SMTP), RFC 6531 (SMTPUTF8), RFC 3461 (xtext), RFC 3030 (BDAT),
 * RFC 3463 (enhanced status codes), RFC 2034.
 *
 * Two kinds of error text come back through error_r; both are static strings
 * and safe to send to a client:
 *   - smtp_command_parse(): text only ("Syntax error, ..."); the caller adds
 *     the code (500 5.5.2 / 501 5.5.4);
 *   - smtp_path_parse(), smtp_bdat_parse(): a full reply line without CRLF
 *     ("501 5.1.7 Bad sender address syntax").
 * smtp_reply_parse() (client side) gives a text for the log only.
 */
#ifndef POSTERN_SMTP_H
#define POSTERN_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/limits.h"

/* ---------------------------------------------------------------- commands */

enum smtp_cmd {
	SMTP_CMD_UNKNOWN,
	SMTP_CMD_HELO,
	SMTP_CMD_EHLO,
	SMTP_CMD_MAIL,
	SMTP_CMD_RCPT,
	SMTP_CMD_DATA,
	SMTP_CMD_BDAT,
	SMTP_CMD_RSET,
	SMTP_CMD_NOOP,
	SMTP_CMD_QUIT,
	SMTP_CMD_HELP,
	SMTP_CMD_VRFY,
	SMTP_CMD_EXPN,
	SMTP_CMD_STARTTLS,
	SMTP_CMD_AUTH,
};

struct smtp_command {
	enum smtp_cmd cmd;
	const char *args;  /* points into the caller's line; NOT NUL-terminated */
	size_t args_len;
};

/*
 * Parses one command line given WITHOUT its CRLF (the line reader strips it
 * and enforces SMTP_COMMAND_LINE_MAX; lines longer than
 * SMTP_COMMAND_LINE_MAX - 2 are rejected here too).
 *
 * The verb is case-insensitive and separated from its arguments by one or
 * more SP/HT. args points into line, after the separator, with trailing SP/HT
 * removed. For MAIL and RCPT, args points at what follows "FROM:" / "TO:"
 * (matched case-insensitively, spaces after the colon skipped leniently), so
 * "MAIL FROM: <a@b> SIZE=1" gives args "<a@b> SIZE=1".
 *
 * Returns 0, or -1 with *error_r a client-safe text (no code) when:
 *   - the line is empty, too long, starts with white space, or holds a NUL,
 *     CR, LF or other control character other than HT (anywhere);
 *   - the verb holds a non-ASCII or control octet;
 *   - MAIL lacks "FROM:", RCPT lacks "TO:";
 *   - DATA, RSET, QUIT, STARTTLS have arguments;
 *   - HELO, EHLO, BDAT, AUTH, VRFY, EXPN have none.
 * On -1, cmd_r->cmd is still set to the verb when it was recognised (so the
 * caller can choose 501 over 500) and args/args_len are as far as parsed.
 * A verb of printable ASCII that is not in the table returns 0 with
 * SMTP_CMD_UNKNOWN. Non-ASCII octets in arguments are allowed (SMTPUTF8).
 */
int smtp_command_parse(const char *line, size_t len, struct smtp_command *cmd_r,
		       const char **error_r);
/* "HELO", "MAIL", ...; "UNKNOWN" for SMTP_CMD_UNKNOWN or out-of-range values. */
const char *smtp_cmd_name(enum smtp_cmd cmd);

/*
 * Parses the arguments of BDAT (RFC 3030): "chunk-size [SP LAST]", LAST
 * case-insensitive. Returns 0, or -1 with *error_r a full reply
 * ("501 5.5.4 Syntax error in BDAT parameters").
 */
int smtp_bdat_parse(const char *args, size_t len, uint64_t *size_r, bool *last_r,
		    const char **error_r);

/* ------------------------------------------------------- paths, addresses */

/* A parsed path, RFC 5321 4.1.2. Both strings are NUL-terminated. */
struct smtp_address {
	/* The local part as text, with quoting removed ("john.doe"@x ->
	 * john.doe, "a b"@x -> a b, "a\"b"@x -> a"b). Never contains NUL or
	 * control characters. Empty for the null path. */
	char localpart[SMTP_LOCALPART_MAX * 4 + 1];
	/* As given, not case-folded; domain literals keep their brackets
	 * ("[1.2.3.4]", "[IPv6:::1]"). Empty for the null path and for the
	 * bare RCPT TO:<Postmaster>. */
	char domain[SMTP_DOMAIN_MAX + 1];
	bool null_path;        /* <> */
	bool had_source_route; /* <@a,@b:user@c> (route validated, then stripped) */
	bool quoted_localpart; /* local part was a quoted-string */
	bool domain_literal;   /* [IPv4] or [IPv6:...] */
	bool utf8;             /* local part or domain holds non-ASCII (valid UTF-8) */
};

/* One ESMTP parameter (RFC 5321 4.1.2 esmtp-param). The value is kept as
 * sent (xtext not decoded); see smtp_xtext_decode(). */
struct smtp_param {
	char keyword[32];      /* upper-cased */
	char value[512];       /* "" when !has_value */
	bool has_value;
};

#define SMTP_PARAMS_MAX 16

struct smtp_path_args {
	struct smtp_address addr;
	struct smtp_param params[SMTP_PARAMS_MAX];
	unsigned nparams;
};

/*
 * Parses the args of MAIL FROM (allow_null = true) or RCPT TO (allow_null =
 * false), as returned by smtp_command_parse(): "<path> [SP params]".
 *
 * Leading SP/HT is skipped; angle brackets are required (no bare addresses);
 * no white space inside them. Accepts:
 *   - "<>" only when allow_null;
 *   - "<Postmaster>" (case-insensitive, no domain) only when !allow_null:
 *     localpart "postmaster", domain "" (RFC 5321 4.5.1);
 *   - an optional source route "@a,@b:" (each domain validated, then dropped);
 *   - a dot-string local part (atext, plus UTF-8 per RFC 6531; no empty
 *     atoms, no leading/trailing dot, no "..") or a non-empty quoted-string
 *     (qtextSMTP / quoted-pairSMTP, plus UTF-8);
 *   - a domain (see smtp_domain_valid(), but address literals only as
 *     [IPv4] or [IPv6:...]).
 * Rejects control characters (C0, DEL, and C1 U+0080..U+009F), NUL, invalid
 * UTF-8 (overlong forms, surrogates, > U+10FFFF), and a local part longer than
 * 64 octets (ASCII) / 64 characters (when it holds UTF-8), both measured as
 * sent (quotes included).
 *
 * Parameters: SP-separated "KEYWORD[=value]"; keyword 1-31 of ALPHA/DIGIT/"-"
 * starting with ALPHA/DIGIT (stored upper-cased); value 1-511 octets of
 * printable ASCII (leniently including '=') or UTF-8. At most
 * SMTP_PARAMS_MAX; a keyword given twice is an error. Whether a parameter is
 * supported (555 5.5.4) is the caller's decision.
 *
 * Returns 0, or -1 with *error_r a full reply (no CRLF), one of:
 *   "501 5.1.7 Bad sender address syntax"      (path, allow_null)
 *   "501 5.1.3 Bad recipient address syntax"   (path, !allow_null)
 *   "501 5.5.4 Syntax error in parameters"
 *   "501 5.5.4 Too many parameters"
 *   "501 5.5.4 Duplicate parameter"
 * *r is zeroed first; on -1 it is left zeroed.
 */
int smtp_path_parse(const char *args, size_t len, bool allow_null,
		    struct smtp_path_args *r, const char **error_r);

/* The parameter with this keyword (case-insensitive), or NULL. */
const struct smtp_param *smtp_param_find(const struct smtp_path_args *r, const char *keyword);

/*
 * Formats the address as "local@domain" into out (NUL-terminated),
 * re-quoting the local part when it is not a valid dot-string ("a b" ->
 * "\"a b\"", with '"' and '\' backslash-escaped). The null path formats as
 * "" and the domain-less postmaster as "postmaster".
 * Returns 0, or -1 when it does not fit in size (out then holds "" if size > 0).
 */
int smtp_address_format(const struct smtp_address *a, char *out, size_t size);

/* true when the local part contains '%', '!' or '@' (relay tricks). */
bool smtp_address_has_relay_chars(const struct smtp_address *a);

/*
 * RFC 3461 4 xtext decoding of a NUL-terminated parameter value into out
 * (NUL-terminated). "+XX" takes two hex digits (upper case per the RFC;
 * lower case accepted). Returns 0, or -1 (out then "" if size > 0) on bad
 * xtext (a character outside '!'..'~', a '=', a bad or truncated "+XX"), on
 * a "+XX" that decodes to anything but printable ASCII or SP (no NUL, no
 * CR/LF for header injection via ENVID/ORCPT, no 8-bit), or when the result
 * does not fit in size.
 */
int smtp_xtext_decode(const char *in, char *out, size_t size);

/*
 * Syntax of a domain name or address literal, for HELO/EHLO arguments:
 * dot-separated labels of ALPHA/DIGIT/"-" (no leading or trailing '-'), or
 * labels holding valid UTF-8 (U-labels; IDNA rules are not checked); each
 * label 1-63 octets, total 1-255 octets; no leading, trailing or double dot.
 * Or an address literal "[a.b.c.d]" (no leading zeros) or "[IPv6:...]".
 */
bool smtp_domain_valid(const char *s, size_t len);

/* ----------------------------------------------------------------- replies */

/*
 * Appends a reply to out: "CODE ENH TEXT\r\n", or when text holds '\n' one
 * line per piece, "CODE-ENH piece\r\n" ... "CODE ENH last\r\n" (a single
 * trailing '\n' in text is ignored). enhanced may be NULL (EHLO lines, 354);
 * when given it must be "class.subject.detail" with class equal to the
 * code's first digit (2, 4 or 5). code must be 200..599.
 * Returns 0, or -1 (out unchanged) on a bad code or enhanced code, a control
 * character other than '\n' in text (reply injection), or when out is full.
 */
int smtp_reply_format(struct buf *out, unsigned code, const char *enhanced, const char *text);

/* ------------------------------------------------------------ DATA / BDAT */

/* DATA / BDAT content filter (RFC 5321 4.1.1.4, 4.5.2; RFC 3030). */
enum smtp_data_mode {
	SMTP_DATA_DOT, /* DATA: dot-unstuffing, ends at CRLF.CRLF */
	SMTP_DATA_RAW, /* BDAT: content as is; the caller counts chunk sizes */
};

enum smtp_data_error {
	SMTP_DATA_OK = 0,
	SMTP_DATA_BARE_LF = 1,
	SMTP_DATA_BARE_CR = 2,
	SMTP_DATA_LINE_TOO_LONG = 4,
	SMTP_DATA_NUL = 8,
};

enum smtp_data_state {
	SMTP_DATA_STATE_BOL,    /* start of a line (data start or after CRLF) */
	SMTP_DATA_STATE_TEXT,   /* inside a line */
	SMTP_DATA_STATE_CR,     /* inside a line, CR seen */
	SMTP_DATA_STATE_DOT,    /* DOT mode: "." at BOL seen */
	SMTP_DATA_STATE_DOT_CR, /* DOT mode: ".\r" at BOL seen */
	SMTP_DATA_STATE_DONE,   /* terminator consumed / finished */
};

/* Treat as opaque except for the documented output fields. */
struct smtp_data {
	enum smtp_data_mode mode;
	bool normalize_bare;
	size_t max_line;
	enum smtp_data_state state;
	size_t line_len;       /* octets of the current line so far (saturating) */

	unsigned errors;       /* out: bitmask of smtp_data_error seen (sticky) */
	bool overflow;         /* out: an append to out failed; output is incomplete */
	uint64_t in_octets;    /* out: octets consumed so far, terminator included */
};

/*
 * DOT mode: dot-unstuffing; only "\r\n.\r\n" (or ".\r\n" as the very first
 * line) ends the data. "\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r\n.\r"+X
 * never do (SMTP smuggling defence). A line following a bare CR/LF is not a
 * line start for these rules. A leading '.' followed by anything other than
 * CR or LF is removed (RFC 5321 4.5.2, also for ".x"); a '.' followed by a
 * bare CR/LF is kept.
 *
 * normalize_bare: true: a bare LF or bare CR is written as a line end "\n"
 * and not flagged; false: it is flagged (SMTP_DATA_BARE_LF/_CR) and written
 * as is ('\n' / '\r'), and the line goes on. Never ends the data either way.
 * max_line: octets of a line without its CRLF (a stuffed dot counts); longer
 * lines are flagged SMTP_DATA_LINE_TOO_LONG and still pass through. 0 = no
 * limit.
 * NUL octets are flagged SMTP_DATA_NUL and dropped from the output (they
 * still count towards the line length).
 */
void smtp_data_init(struct smtp_data *d, enum smtp_data_mode mode, bool normalize_bare,
		    size_t max_line);

/*
 * Feeds len octets of input. Appends the message to out with every line end
 * written as a single "\n" (Maildir convention). If an append fails (out at
 * its max), keeps consuming but appends nothing more and sets d->overflow
 * (what was appended then depends on the chunking; the caller should treat the
 * message as lost). The caller drains out between calls.
 *
 * DOT mode: returns 1 when the terminating CRLF.CRLF was consumed;
 * *consumed_r is then the octets consumed from in, terminator included;
 * octets after it are not consumed (pipelined commands). Returns 0 when all of
 * in was consumed (*consumed_r = len) and more is needed. After 1, further
 * calls return 1 and consume nothing.
 * RAW mode: always returns 0 and consumes everything; call smtp_data_finish()
 * after the last chunk.
 * consumed_r may be NULL. Output, errors and results are the same however the
 * input is split into chunks.
 */
int smtp_data_feed(struct smtp_data *d, const char *in, size_t len, size_t *consumed_r,
		   struct buf *out);

/*
 * Ends the content: flushes a pending CR (as a bare CR: flagged or
 * normalized) or a pending line-start '.' (kept). For RAW mode after the last
 * BDAT chunk; in DOT mode after the terminator it does nothing.
 */
void smtp_data_finish(struct smtp_data *d, struct buf *out);

/* ------------------------------------------------- client side (outbound) */

/*
 * Replies from a remote server, as deliver's SMTP client reads them
 * (RFC 5321 4.2, 4.5.3.1.5; RFC 3463; RFC 2034). The server is untrusted:
 * every limit below is checked before the bytes are looked at further, and
 * the text that comes out is plain printable ASCII, safe for logs, status
 * records and DSNs.
 */
#define SMTP_REPLY_LINE_MAX   2048   /* one reply line incl. CRLF; longer: protocol error */
#define SMTP_REPLY_LINES_MAX  128    /* lines in one multi-line reply */
#define SMTP_REPLY_TEXT_MAX   4096   /* kept text; the rest is dropped silently */

struct smtp_reply {
	unsigned code;                  /* 200..599 */
	char enhanced[16];              /* RFC 3463 "x.y.z" from the first line when it starts
					   with one (class must match the code's first digit), else "" */
	char text[SMTP_REPLY_TEXT_MAX]; /* each line's text after "CODE-"/"CODE " (enhanced code kept),
					   lines joined by '\n', NUL-terminated; bytes outside printable
					   ASCII (TAB included) replaced by '?' */
	unsigned nlines;
};

/* Incremental reply reader. Treat as opaque. */
struct smtp_reply_parser {
	char line[SMTP_REPLY_LINE_MAX]; /* the current line so far (a trailing CR included) */
	size_t line_len;
	size_t text_len;                /* octets in reply.text */
	const char *error;              /* set after -1: every later call fails alike */
	struct smtp_reply reply;        /* the reply being built */
};

/* Starts (or restarts) a parser for a new connection. */
void smtp_reply_parser_init(struct smtp_reply_parser *p);

/*
 * Feeds server bytes. Consumes input up to the end of the FIRST complete reply
 * and returns 1 with *reply_r filled (the rest of in is left for the next call),
 * 0 when all of in was consumed and the reply is not complete yet, -1 on a
 * protocol error (*error_r static text: line too long, no 3-digit code 2xx..5xx,
 * code changes between lines of one reply, too many lines); after -1 the
 * connection must be closed (further calls return -1 with the same text and
 * consume nothing). *consumed_r is always set. Lines end in CRLF; a bare LF
 * is accepted as a line end too (a CR elsewhere is text, shown as '?').
 * "250\r\n" (no text) is valid, as is "250-\r\n"; after the code comes SP,
 * '-' or the line end. Results are the same however the input is split.
 */
int smtp_reply_parse(struct smtp_reply_parser *p, const char *in, size_t len,
		     size_t *consumed_r, struct smtp_reply *reply_r, const char **error_r);

/*
 * "550 5.1.1 text of line one text of line two": the reply on one line for logs,
 * status records and DSN Diagnostic-Code (lines joined by a space, code first,
 * enhanced code not duplicated when already in the text: a continuation line
 * that repeats it loses the copy, and when the first line lacks it, it is put
 * after the code). Empty lines are skipped. Truncates to size (always
 * NUL-terminated when size > 0).
 */
void smtp_reply_oneline(const struct smtp_reply *r, char *out, size_t size);

struct smtp_ehlo_caps {
	bool pipelining, starttls, eightbitmime, smtputf8, chunking, dsn, enhancedstatuscodes;
	bool auth_plain, auth_login;
	bool size_given;
	uint64_t size;                  /* SIZE n; 0 = no fixed limit */
};

/*
 * Capabilities from a 250 EHLO reply (lines after the first; keywords
 * case-insensitive; "AUTH PLAIN LOGIN" and the old "AUTH=PLAIN LOGIN" form).
 * *caps_r is zeroed first; any other code gives no capabilities. "SIZE" with
 * no number means no fixed limit (size_given, size 0); a SIZE whose value is
 * not a decimal number that fits in 64 bits is ignored.
 */
void smtp_ehlo_caps_parse(const struct smtp_reply *r, struct smtp_ehlo_caps *caps_r);

/*
 * RFC 3461 4 xtext encoding (for ENVID and ORCPT sent to the next hop): bytes
 * outside '!'..'~' and '+' and '=' become "+XX" (upper-case hex). in is
 * NUL-terminated; out is NUL-terminated. 0, or -1 when it does not fit (out
 * then "" if size > 0).
 */
int smtp_xtext_encode(const char *in, char *out, size_t size);

#endif
