/*
 * pop3.h — POP3 syntax only (RFC 1939, RFC 2449, RFC 5034): command lines
 * and the dot-stuffed multi-line responses (RETR, TOP). No sockets, no
 * allocation: the imapd worker's POP3 sessions (src/imapd/pop3-*.c) read
 * lines and files and hand the bytes to these functions.
 *
 * Command lines (RFC 1939 3, RFC 2449 4): a keyword of 3 or 4 letters,
 * case-insensitive, then arguments separated by a single space; at most
 * POP3_LINE_MAX octets including the CRLF. The CR/LF rule itself (where a
 * line ends) lives in the session's line reader; the parser gets the line
 * without its terminator.
 *
 * Multi-line responses (RFC 1939 3): each line ends with CRLF, a line that
 * starts with "." gets one more ".", and ".\r\n" ends the response. The
 * Maildir stores LF line ends; the writer turns a LF not preceded by CR into
 * CRLF, so the octets it writes (before the terminator) are the message's
 * RFC822.SIZE, which is what STAT and LIST report.
 */
#ifndef POSTERN_POP3_H
#define POSTERN_POP3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 2449 4: a command line is at most 255 octets including the CRLF. */
#define POP3_LINE_MAX 255
/* RFC 5034 4: the 255-octet limit does not bind SASL continuation lines
 * (base64 of user + password); this is ours. */
#define POP3_AUTH_LINE_MAX 2048
/* RFC 2449 4: keywords are 3 or 4 characters (we take 1..4 letters so that
 * odd input gets "unknown command", not a syntax error). */
#define POP3_KEYWORD_MAX 4

enum pop3_cmd {
	POP3_CMD_UNKNOWN,
	POP3_CMD_USER,
	POP3_CMD_PASS,
	POP3_CMD_APOP,
	POP3_CMD_AUTH,
	POP3_CMD_CAPA,
	POP3_CMD_STLS,
	POP3_CMD_STAT,
	POP3_CMD_LIST,
	POP3_CMD_UIDL,
	POP3_CMD_RETR,
	POP3_CMD_TOP,
	POP3_CMD_DELE,
	POP3_CMD_RSET,
	POP3_CMD_NOOP,
	POP3_CMD_QUIT,
	POP3_CMD_COUNT
};

struct pop3_command {
	enum pop3_cmd cmd;             /* POP3_CMD_UNKNOWN for a well-formed unknown keyword */
	char keyword[POP3_KEYWORD_MAX + 1];  /* upper-cased, NUL-terminated */
	const char *args;              /* points into the line, after the one space */
	size_t args_len;               /* 0 when there are no arguments */
};

/*
 * Splits a command line (without CRLF; len octets, need not be
 * NUL-terminated) into keyword and arguments. The arguments are everything
 * after the first space, untouched (RFC 1939 7: a PASS argument may contain
 * spaces). Returns 0 and fills *cmd_r, or -1 with *error_r (a client-safe
 * text) for an empty line, a keyword that is not 1..4 ASCII letters or is
 * followed by something other than a space, a NUL octet, or a line longer
 * than POP3_LINE_MAX - 2.
 */
int pop3_command_parse(const char *line, size_t len, struct pop3_command *cmd_r,
		       const char **error_r);

/* The keyword of a command ("RETR"); "" for POP3_CMD_UNKNOWN. */
const char *pop3_command_name(enum pop3_cmd cmd);

/*
 * Parses args[0..len) as between min and max decimal numbers separated by
 * spaces (leading and trailing spaces tolerated: clients send "LIST ").
 * Each number is 0..UINT32_MAX, digits only (no sign). nums_r has room for
 * max numbers. Returns the count (min..max), or -1 with *error_r.
 */
int pop3_parse_numbers(const char *args, size_t len, uint32_t *nums_r, unsigned min,
		       unsigned max, const char **error_r);

/*
 * The multi-line response writer. Keeps state between chunks (a CR at the
 * end of one chunk and a LF at the start of the next, a "." at the start of
 * a chunk that starts a line), so a message is streamed in chunks of any
 * size with bounded memory.
 *
 * TOP (RFC 1939 7): the header, the blank line that ends it, and the first
 * top_lines lines of the body. A message without a blank line is all
 * header. Once the wanted lines have been written, pop3_dot_done() is true
 * and further input is not consumed.
 */
struct pop3_dot {
	bool bol;            /* the next input octet starts a line */
	bool cr;             /* the last octet written was a CR */
	bool blank;          /* the current line so far is empty (or only CRs) */
	bool top;            /* TOP mode */
	bool in_body;        /* TOP: the header has ended */
	bool done;           /* TOP: enough lines written */
	bool finished;       /* pop3_dot_finish() succeeded */
	uint64_t lines_left; /* TOP: body lines still to write */
	uint64_t out_octets; /* written by feed (not counting the terminator
			      * or the stuffed dots): the CRLF size */
};

/* top false: the whole message (RETR); true: TOP with top_lines. */
void pop3_dot_init(struct pop3_dot *d, bool top, uint64_t top_lines);

/*
 * Converts in[0..in_len) into out[0..out_size) and sets *out_len_r to the
 * octets written. Returns the octets of input consumed: less than in_len
 * when out is full (call again with more room and the rest) or when TOP is
 * done. Never writes more than out_size; makes progress whenever
 * out_size >= 2 and the writer is not done.
 */
size_t pop3_dot_feed(struct pop3_dot *d, const char *in, size_t in_len, char *out,
		     size_t out_size, size_t *out_len_r);

/* True when TOP has written all the lines it wants. */
bool pop3_dot_done(const struct pop3_dot *d);

/* The longest pop3_dot_finish() output: CRLF + ".\r\n". */
#define POP3_DOT_FINISH_MAX 5

/*
 * Ends the response: a CRLF if the message's last line had no line end
 * (only "\n" when it ended in a CR), then ".\r\n". Writes into out
 * (out_size >= POP3_DOT_FINISH_MAX is always enough) and returns the
 * octets written, or -1 when out_size is too small (nothing written).
 */
int pop3_dot_finish(struct pop3_dot *d, char *out, size_t out_size);

#endif
