/*
 * smtp-reply.c — the client side of SMTP syntax: reads a server's replies
 * (single and multi-line, pipelined back to back), picks out the RFC 3463
 * enhanced status code, flattens a reply to one line for logs and DSNs,
 * reads EHLO capabilities, and xtext-encodes ENVID/ORCPT for the next hop.
 * Pure syntax, no I/O; used by deliver's outbound SMTP client, which is the
 * only place untrusted replies are parsed. The rule for CR, LF and CRLF in
 * reply lines lives in smtp_reply_parse() alone.
 *
 * RFC 5321 4.2 (replies), 4.5.3.1.5 (reply line length), 4.1.1.1 (EHLO);
 * RFC 3463, RFC 2034 (enhanced status codes); RFC 1870 (SIZE); RFC 2920,
 * 3207, 6152, 6531, 3030, 3461, 4954 (the EHLO keywords); RFC 3461 4 (xtext).
 */
#include "lib-smtp/smtp.h"

#include <string.h>
#include <strings.h>

#include "lib/util.h"

#define ERR_TOO_LONG    "reply line too long"
#define ERR_NO_CODE     "reply line without a 3-digit code 2xx..5xx"
#define ERR_CODE_CHANGE "reply code changes between lines of one reply"
#define ERR_TOO_MANY    "too many lines in one reply"

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* What the text of a reply may hold: printable ASCII. Everything else (TAB,
 * CR, NUL, escape sequences, 8-bit) becomes '?' so that a hostile server
 * cannot inject into logs, status records or DSN headers. */
static char safe_char(unsigned char c)
{
	return c >= 0x20 && c <= 0x7e ? (char)c : '?';
}

/* ------------------------------------------------------------ reply parser */

static void reply_reset(struct smtp_reply_parser *p)
{
	p->line_len = 0;
	p->text_len = 0;
	p->reply.code = 0;
	p->reply.enhanced[0] = '\0';
	p->reply.text[0] = '\0';
	p->reply.nlines = 0;
}

void smtp_reply_parser_init(struct smtp_reply_parser *p)
{
	memset(p, 0, sizeof(*p));
	reply_reset(p);
}

/* Length of the RFC 3463 code "class.subject.detail" at the start of text
 * (class 2/4/5 equal to the reply code's first digit, subject and detail
 * 1-3 digits), when SP or the end of the line follows it; else 0. */
static size_t enhanced_len(const char *text, size_t len, unsigned code)
{
	size_t i = 0;

	if (len < 5 || (text[0] != '2' && text[0] != '4' && text[0] != '5') ||
	    (unsigned)(text[0] - '0') != code / 100 || text[1] != '.')
		return 0;
	i = 2;
	for (int part = 0; part < 2; part++) {
		size_t start = i;
		while (i < len && i - start < 4 && is_digit((unsigned char)text[i]))
			i++;
		if (i == start || i - start > 3)
			return 0;
		if (part == 0) {
			if (i == len || text[i] != '.')
				return 0;
			i++;
		}
	}
	return i == len || text[i] == ' ' ? i : 0;
}

/* Appends a line's text to the reply text, sanitised, after a '\n' when it
 * is not the first line; what does not fit is dropped. */
static void text_append(struct smtp_reply_parser *p, const char *s, size_t n, bool newline)
{
	size_t room = SMTP_REPLY_TEXT_MAX - 1 - p->text_len;
	if (newline && room > 0) {
		p->reply.text[p->text_len++] = '\n';
		room--;
	}
	if (n > room)
		n = room;
	for (size_t i = 0; i < n; i++)
		p->reply.text[p->text_len + i] = safe_char((unsigned char)s[i]);
	p->text_len += n;
	p->reply.text[p->text_len] = '\0';
}

static int parse_fail(struct smtp_reply_parser *p, const char *error, const char **error_r)
{
	p->error = error;
	*error_r = error;
	return -1;
}

/* One complete line in p->line (its LF already dropped). 1 when it ends the
 * reply, 0 when more lines follow, -1 on a protocol error. */
static int reply_line(struct smtp_reply_parser *p, const char **error_r)
{
	const char *l = p->line;
	size_t n = p->line_len;

	p->line_len = 0;
	if (n > 0 && l[n - 1] == '\r')
		n--;
	if (n < 3 || l[0] < '2' || l[0] > '5' || !is_digit((unsigned char)l[1]) ||
	    !is_digit((unsigned char)l[2]) || (n > 3 && l[3] != ' ' && l[3] != '-'))
		return parse_fail(p, ERR_NO_CODE, error_r);
	unsigned code = (unsigned)(l[0] - '0') * 100 + (unsigned)(l[1] - '0') * 10 +
			(unsigned)(l[2] - '0');
	bool last = n == 3 || l[3] == ' ';
	const char *text = n > 3 ? l + 4 : l + n;
	size_t text_len = n > 3 ? n - 4 : 0;

	if (p->reply.nlines > 0 && code != p->reply.code)
		return parse_fail(p, ERR_CODE_CHANGE, error_r);
	if (p->reply.nlines >= SMTP_REPLY_LINES_MAX)
		return parse_fail(p, ERR_TOO_MANY, error_r);
	if (p->reply.nlines == 0) {
		size_t e = enhanced_len(text, text_len, code);
		p->reply.code = code;
		memcpy(p->reply.enhanced, text, e);
		p->reply.enhanced[e] = '\0';
	}
	text_append(p, text, text_len, p->reply.nlines > 0);
	p->reply.nlines++;
	return last ? 1 : 0;
}

int smtp_reply_parse(struct smtp_reply_parser *p, const char *in, size_t len,
		     size_t *consumed_r, struct smtp_reply *reply_r, const char **error_r)
{
	size_t i = 0;

	if (p->error != NULL) {
		*consumed_r = 0;
		*error_r = p->error;
		return -1;
	}
	while (i < len) {
		const char *lf = memchr(in + i, '\n', len - i);
		size_t n = lf != NULL ? (size_t)(lf - (in + i)) : len - i;

		/* The limit before the terminator: the line so far, these
		 * octets and the LF still to come must fit. The octet that
		 * goes over is consumed with the error. */
		if (p->line_len + n + 1 > SMTP_REPLY_LINE_MAX) {
			*consumed_r = i + (SMTP_REPLY_LINE_MAX - p->line_len);
			return parse_fail(p, ERR_TOO_LONG, error_r);
		}
		memcpy(p->line + p->line_len, in + i, n);
		p->line_len += n;
		i += n;
		if (lf == NULL)
			break;
		i++; /* the LF */
		int ret = reply_line(p, error_r);
		if (ret < 0) {
			*consumed_r = i;
			return -1;
		}
		if (ret == 1) {
			*reply_r = p->reply;
			reply_reset(p);
			*consumed_r = i;
			return 1;
		}
	}
	*consumed_r = len;
	return 0;
}

/* ------------------------------------------------------------ one-liner */

struct out_str {
	char *s;
	size_t size;
	size_t len;
};

static void out_put(struct out_str *o, const char *s, size_t n)
{
	for (size_t i = 0; i < n && o->len + 1 < o->size; i++)
		o->s[o->len++] = safe_char((unsigned char)s[i]);
	o->s[o->len] = '\0';
}

/* Does piece start with the enhanced code e as a word of its own? */
static bool starts_with_enhanced(const char *piece, size_t len, const char *e, size_t elen)
{
	return elen > 0 && len >= elen && memcmp(piece, e, elen) == 0 &&
	       (len == elen || piece[elen] == ' ');
}

void smtp_reply_oneline(const struct smtp_reply *r, char *out, size_t size)
{
	struct out_str o = { out, size, 0 };
	char code[3];
	unsigned c = r->code % 1000;

	if (size == 0)
		return;
	out[0] = '\0';
	code[0] = (char)('0' + c / 100);
	code[1] = (char)('0' + c / 10 % 10);
	code[2] = (char)('0' + c % 10);
	out_put(&o, code, 3);

	size_t elen = strnlen(r->enhanced, sizeof(r->enhanced));
	size_t tlen = strnlen(r->text, sizeof(r->text));
	const char *t = r->text;
	const char *nl1 = memchr(t, '\n', tlen);
	size_t first_len = nl1 != NULL ? (size_t)(nl1 - t) : tlen;
	if (elen > 0 && !starts_with_enhanced(t, first_len, r->enhanced, elen)) {
		out_put(&o, " ", 1);
		out_put(&o, r->enhanced, elen);
	}
	for (size_t pos = 0, line = 0; pos <= tlen; line++) {
		const char *piece = t + pos;
		const char *nl = memchr(piece, '\n', tlen - pos);
		size_t plen = nl != NULL ? (size_t)(nl - piece) : tlen - pos;
		size_t next = pos + plen + 1;

		/* Continuation lines often repeat the enhanced code. */
		if (line > 0 && starts_with_enhanced(piece, plen, r->enhanced, elen)) {
			piece += elen;
			plen -= elen;
			while (plen > 0 && *piece == ' ') {
				piece++;
				plen--;
			}
		}
		if (plen > 0) {
			out_put(&o, " ", 1);
			out_put(&o, piece, plen);
		}
		pos = next;
	}
}

/* ------------------------------------------------------------ EHLO */

static bool word_is(const char *w, size_t len, const char *kw)
{
	return strlen(kw) == len && strncasecmp(w, kw, len) == 0;
}

/* AUTH mechanisms, SP-separated. */
static void caps_auth(const char *s, size_t len, struct smtp_ehlo_caps *caps)
{
	size_t i = 0;
	while (i < len) {
		while (i < len && s[i] == ' ')
			i++;
		size_t start = i;
		while (i < len && s[i] != ' ')
			i++;
		if (word_is(s + start, i - start, "PLAIN"))
			caps->auth_plain = true;
		else if (word_is(s + start, i - start, "LOGIN"))
			caps->auth_login = true;
	}
}

static void caps_size(const char *s, size_t len, struct smtp_ehlo_caps *caps)
{
	uint64_t size = 0;

	while (len > 0 && s[0] == ' ') {
		s++;
		len--;
	}
	while (len > 0 && s[len - 1] == ' ')
		len--;
	if (len > 0 && strn_to_u64(s, len, &size) < 0)
		return;
	caps->size_given = true;
	caps->size = size;
}

static void caps_line(const char *l, size_t len, struct smtp_ehlo_caps *caps)
{
	size_t kw = 0;
	while (kw < len && l[kw] != ' ' && l[kw] != '=')
		kw++;
	const char *args = kw < len ? l + kw + 1 : l + len;
	size_t args_len = kw < len ? len - kw - 1 : 0;

	if (word_is(l, kw, "AUTH")) {
		caps_auth(args, args_len, caps); /* "AUTH mechs" and "AUTH=mechs" */
		return;
	}
	if (kw < len && l[kw] == '=')
		return;
	if (word_is(l, kw, "SIZE"))
		caps_size(args, args_len, caps);
	else if (word_is(l, kw, "PIPELINING"))
		caps->pipelining = true;
	else if (word_is(l, kw, "STARTTLS"))
		caps->starttls = true;
	else if (word_is(l, kw, "8BITMIME"))
		caps->eightbitmime = true;
	else if (word_is(l, kw, "SMTPUTF8"))
		caps->smtputf8 = true;
	else if (word_is(l, kw, "CHUNKING"))
		caps->chunking = true;
	else if (word_is(l, kw, "DSN"))
		caps->dsn = true;
	else if (word_is(l, kw, "ENHANCEDSTATUSCODES"))
		caps->enhancedstatuscodes = true;
}

void smtp_ehlo_caps_parse(const struct smtp_reply *r, struct smtp_ehlo_caps *caps_r)
{
	memset(caps_r, 0, sizeof(*caps_r));
	if (r->code != 250)
		return;
	size_t tlen = strnlen(r->text, sizeof(r->text));
	const char *nl = memchr(r->text, '\n', tlen);
	/* The first line is the server's name and greeting. */
	size_t pos = nl != NULL ? (size_t)(nl - r->text) + 1 : tlen;
	while (pos < tlen) {
		const char *l = r->text + pos;
		nl = memchr(l, '\n', tlen - pos);
		size_t len = nl != NULL ? (size_t)(nl - l) : tlen - pos;
		caps_line(l, len, caps_r);
		pos += len + 1;
	}
}

/* ------------------------------------------------------------ xtext */

int smtp_xtext_encode(const char *in, char *out, size_t size)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (; *in != '\0'; in++) {
		unsigned char c = (unsigned char)*in;
		if (c >= '!' && c <= '~' && c != '+' && c != '=') {
			if (o + 1 >= size)
				goto fail;
			out[o++] = (char)c;
		} else {
			if (o + 3 >= size)
				goto fail;
			out[o++] = '+';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 0xf];
		}
	}
	if (size == 0)
		return -1;
	out[o] = '\0';
	return 0;
fail:
	if (size > 0)
		out[0] = '\0';
	return -1;
}
