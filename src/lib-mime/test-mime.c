/*
 * test-mime.c — unit tests for lib-mime (mime.c, mime-imap.c): ENVELOPE,
 * BODY/BODYSTRUCTURE, BODY[section], BINARY, the SEARCH helpers and the
 * sent date, on a corpus of real-world-shaped messages built here
 * (multipart/alternative, nested multipart/mixed with attachments,
 * message/rfc822, encoded words, 8-bit, groups, malformed ones), in LF and
 * CRLF form. Every message is also parsed truncated at every byte (the
 * byte-at-a-time rule for a parser that takes whole messages): each prefix
 * must give balanced BODYSTRUCTURE syntax whose sizes match the sections.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib-mime/mime.h"
#include "lib/buf.h"

#define CHECK(label, cond) \
	do { \
		if (!(cond)) \
			fail_msg("case '%s': check failed: %s", (label), #cond); \
	} while (0)

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))
#define OUT_MAX (16u * 1024 * 1024)

/* ---- the corpus ------------------------------------------------------ */

static const char msg_plain[] =
	"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\n"
	"From: Fred Foobar <foobar@Blurdybloop.example>\n"
	"Subject: afternoon meeting\n"
	"To: mooch@owatagu.siam.edu.example\n"
	"Message-Id: <B27397-0100000@Blurdybloop.example>\n"
	"MIME-Version: 1.0\n"
	"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\n"
	"\n"
	"Hello Joe, do you think we can meet at 3:30 tomorrow?\n";

static const char msg_alternative[] =
	"From: Alice <alice@example.org>\n"
	"To: Bob <bob@example.net>, carol@example.net\n"
	"Cc: \"Dave, the Boss\" <dave@example.com>\n"
	"Subject: Lunch\n"
	"Date: Tue, 1 Jul 2003 10:52:37 +0200\n"
	"Message-ID: <alt1@example.org>\n"
	"In-Reply-To: <prev@example.net>\n"
	"MIME-Version: 1.0\n"
	"Content-Type: multipart/alternative; boundary=\"ALT\"\n"
	"\n"
	"This is a multi-part message in MIME format.\n"
	"--ALT\n"
	"Content-Type: text/plain; charset=utf-8\n"
	"Content-Transfer-Encoding: quoted-printable\n"
	"\n"
	"Caf=C3=A9 at noon?\n"
	"See you=\n"
	" there.\n"
	"--ALT\n"
	"Content-Type: text/html; charset=utf-8\n"
	"Content-Transfer-Encoding: 7bit\n"
	"\n"
	"<p>Caf&eacute; at noon?</p>\n"
	"--ALT--\n";

static const char msg_mixed[] =
	"From: Alice <alice@example.org>\n"
	"To: bob@example.net\n"
	"Subject: Report\n"
	"Date: Wed, 2 Jul 2003 08:00:00 -0500\n"
	"Message-ID: <mixed1@example.org>\n"
	"MIME-Version: 1.0\n"
	"Content-Type: multipart/mixed; boundary=OUTER\n"
	"\n"
	"--OUTER\n"
	"Content-Type: multipart/alternative; boundary=INNER\n"
	"\n"
	"--INNER\n"
	"Content-Type: text/plain; charset=us-ascii\n"
	"\n"
	"See attached.\n"
	"--INNER\n"
	"Content-Type: text/html; charset=us-ascii\n"
	"\n"
	"<b>See attached.</b>\n"
	"--INNER--\n"
	"\n"
	"--OUTER\n"
	"Content-Type: application/pdf; name=\"report.pdf\"\n"
	"Content-Transfer-Encoding: base64\n"
	"Content-Disposition: attachment; filename=\"report.pdf\"\n"
	"Content-ID: <part2@example.org>\n"
	"Content-Description: The report\n"
	"\n"
	"JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4Kc3RyZWFtCg==\n"
	"--OUTER\n"
	"Content-Type: text/plain; charset=utf-8\n"
	"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%20rates.txt\n"
	"Content-Language: en\n"
	"\n"
	"Euro rates.\n"
	"--OUTER--\n";

static const char msg_rfc822[] =
	"From: Forwarder <fwd@example.org>\n"
	"To: list@example.org\n"
	"Subject: Fwd: original\n"
	"Date: Thu, 3 Jul 2003 12:00:00 +0000\n"
	"MIME-Version: 1.0\n"
	"Content-Type: multipart/mixed; boundary=\"FWD\"\n"
	"\n"
	"--FWD\n"
	"Content-Type: text/plain\n"
	"\n"
	"See below.\n"
	"--FWD\n"
	"Content-Type: message/rfc822\n"
	"\n"
	"From: Original <orig@example.com>\n"
	"To: fwd@example.org\n"
	"Subject: original\n"
	"Date: Wed, 2 Jul 2003 11:00:00 +0000\n"
	"Message-ID: <orig@example.com>\n"
	"Content-Type: multipart/mixed; boundary=\"IN\"\n"
	"\n"
	"--IN\n"
	"Content-Type: text/plain\n"
	"\n"
	"Inner text.\n"
	"--IN\n"
	"Content-Type: image/png\n"
	"Content-Transfer-Encoding: base64\n"
	"\n"
	"iVBORw0KGgo=\n"
	"--IN--\n"
	"--FWD--\n";

static const char msg_encoded[] =
	"From: =?ISO-8859-1?Q?Andr=E9?= Pirard <PIRARD@vm1.ulg.ac.be>\n"
	"To: =?UTF-8?B?SsO8cmdlbg==?= <j@example.de>\n"
	"Subject: =?UTF-8?B?SGVsbG8gd8O2cmxk?=\n"
	" =?ISO-8859-1?Q?_caf=E9?=\n"
	"Date: Fri, 4 Jul 2003 09:00:00 +0100\n"
	"Content-Type: text/plain; charset=iso-8859-1\n"
	"Content-Transfer-Encoding: quoted-printable\n"
	"\n"
	"Caf=E9 cr=E8me\n";

static const char msg_eightbit[] =
	"From: Kim <kim@example.org>\n"
	"To: lee@example.org\n"
	"Subject: Grüße aus Köln\n"
	"Date: Sat, 5 Jul 2003 10:00:00 +0200\n"
	"\n"
	"Grüße und Küsse, Straße.\n";

static const char msg_group[] =
	"From: Sender <s@example.org>\n"
	"To: undisclosed-recipients:;\n"
	"Cc: Team: a@example.org, \"B. Person\" <b@example.org>;, c@example.org\n"
	"Subject: group test\n"
	"Date: Sun, 6 Jul 2003 10:00:00 +0200\n"
	"\n"
	"Body.\n";

static const char msg_nodate[] =
	"Subject: no date or from\n"
	"To: x@example.org\n"
	"\n"
	"Just a body\n"
	"with two lines\n";

static const char msg_noboundary[] =
	"From: a@example.org\n"
	"Subject: no boundary\n"
	"Content-Type: multipart/mixed\n"
	"\n"
	"--XYZ\n"
	"Content-Type: text/plain\n"
	"\n"
	"lost\n"
	"--XYZ--\n";

static const char msg_unclosed[] =
	"From: a@example.org\n"
	"Subject: unclosed\n"
	"Content-Type: multipart/mixed; boundary=B\n"
	"\n"
	"--B\n"
	"Content-Type: text/plain\n"
	"\n"
	"first\n"
	"--B\n"
	"Content-Type: text/plain\n"
	"\n"
	"second, never closed\n";

static const char msg_nocolon[] =
	"From: a@example.org\n"
	"This line has no colon\n"
	"Subject: after junk\n"
	"\n"
	"body text\n";

static const char msg_zeroparts[] =
	"From: a@example.org\n"
	"Subject: zero\n"
	"Content-Type: multipart/mixed; boundary=Z\n"
	"\n"
	"--Z--\n";

static const char msg_noheaders[] =
	"\n"
	"Only a body, no header at all.\n";

struct corpus_case {
	const char *label;
	const char *msg;
	const char *envelope;       /* NULL: not asserted */
	const char *bodystructure;  /* NULL: not asserted */
};

#define ALICE "((\"Alice\" NIL \"alice\" \"example.org\"))"
#define A_EX "((NIL NIL \"a\" \"example.org\"))"
#define TEXT_ASCII "\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\""

static const struct corpus_case corpus[] = {
	{ "plain (RFC 3501 example)", msg_plain,
	  "(\"Mon, 7 Feb 1994 21:52:25 -0800 (PST)\" \"afternoon meeting\" "
	  "((\"Fred Foobar\" NIL \"foobar\" \"Blurdybloop.example\")) "
	  "((\"Fred Foobar\" NIL \"foobar\" \"Blurdybloop.example\")) "
	  "((\"Fred Foobar\" NIL \"foobar\" \"Blurdybloop.example\")) "
	  "((NIL NIL \"mooch\" \"owatagu.siam.edu.example\")) NIL NIL NIL "
	  "\"<B27397-0100000@Blurdybloop.example>\")",
	  "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 55 1 NIL NIL NIL NIL)" },
	{ "multipart/alternative", msg_alternative,
	  "(\"Tue, 1 Jul 2003 10:52:37 +0200\" \"Lunch\" " ALICE " " ALICE " " ALICE " "
	  "((\"Bob\" NIL \"bob\" \"example.net\")(NIL NIL \"carol\" \"example.net\")) "
	  "((\"Dave, the Boss\" NIL \"dave\" \"example.com\")) NIL \"<prev@example.net>\" "
	  "\"<alt1@example.org>\")",
	  "((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"QUOTED-PRINTABLE\" 37 2 "
	  "NIL NIL NIL NIL)(\"TEXT\" \"HTML\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 27 0 "
	  "NIL NIL NIL NIL) \"ALTERNATIVE\" (\"BOUNDARY\" \"ALT\") NIL NIL NIL)" },
	{ "nested mixed, base64 attachment, RFC 2231 filename", msg_mixed,
	  "(\"Wed, 2 Jul 2003 08:00:00 -0500\" \"Report\" " ALICE " " ALICE " " ALICE " "
	  "((NIL NIL \"bob\" \"example.net\")) NIL NIL NIL \"<mixed1@example.org>\")",
	  "(((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 13 0 NIL NIL NIL NIL)"
	  "(\"TEXT\" \"HTML\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 20 0 NIL NIL NIL NIL) "
	  "\"ALTERNATIVE\" (\"BOUNDARY\" \"INNER\") NIL NIL NIL)"
	  "(\"APPLICATION\" \"PDF\" (\"NAME\" \"report.pdf\") \"<part2@example.org>\" "
	  "\"The report\" \"BASE64\" 72 NIL (\"ATTACHMENT\" (\"FILENAME\" \"report.pdf\")) NIL NIL)"
	  "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 11 0 NIL "
	  "(\"ATTACHMENT\" (\"FILENAME*\" \"utf-8''%E2%82%AC%20rates.txt\")) \"en\" NIL) "
	  "\"MIXED\" (\"BOUNDARY\" \"OUTER\") NIL NIL NIL)" },
	{ "message/rfc822 attachment", msg_rfc822,
	  "(\"Thu, 3 Jul 2003 12:00:00 +0000\" \"Fwd: original\" "
	  "((\"Forwarder\" NIL \"fwd\" \"example.org\")) ((\"Forwarder\" NIL \"fwd\" \"example.org\")) "
	  "((\"Forwarder\" NIL \"fwd\" \"example.org\")) ((NIL NIL \"list\" \"example.org\")) "
	  "NIL NIL NIL NIL)",
	  "((" TEXT_ASCII " 10 0 NIL NIL NIL NIL)(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 328 "
	  "(\"Wed, 2 Jul 2003 11:00:00 +0000\" \"original\" "
	  "((\"Original\" NIL \"orig\" \"example.com\")) ((\"Original\" NIL \"orig\" \"example.com\")) "
	  "((\"Original\" NIL \"orig\" \"example.com\")) ((NIL NIL \"fwd\" \"example.org\")) "
	  "NIL NIL NIL \"<orig@example.com>\") ((" TEXT_ASCII " 11 0 NIL NIL NIL NIL)"
	  "(\"IMAGE\" \"PNG\" NIL NIL NIL \"BASE64\" 12 NIL NIL NIL NIL) \"MIXED\" "
	  "(\"BOUNDARY\" \"IN\") NIL NIL NIL) 16 NIL NIL NIL NIL) \"MIXED\" "
	  "(\"BOUNDARY\" \"FWD\") NIL NIL NIL)" },
	{ "encoded words (UTF-8 B, ISO-8859-1 Q)", msg_encoded,
	  "(\"Fri, 4 Jul 2003 09:00:00 +0100\" "
	  "\"=?UTF-8?B?SGVsbG8gd8O2cmxk?= =?ISO-8859-1?Q?_caf=E9?=\" "
	  "((\"=?UTF-8?b?QW5kcsOp?= Pirard\" NIL \"PIRARD\" \"vm1.ulg.ac.be\")) "
	  "((\"=?UTF-8?b?QW5kcsOp?= Pirard\" NIL \"PIRARD\" \"vm1.ulg.ac.be\")) "
	  "((\"=?UTF-8?b?QW5kcsOp?= Pirard\" NIL \"PIRARD\" \"vm1.ulg.ac.be\")) "
	  "((\"=?UTF-8?b?SsO8cmdlbg==?=\" NIL \"j\" \"example.de\")) NIL NIL NIL NIL)",
	  "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"iso-8859-1\") NIL NIL \"QUOTED-PRINTABLE\" 16 1 "
	  "NIL NIL NIL NIL)" },
	{ "8-bit header and body, no MIME headers", msg_eightbit,
	  "(\"Sat, 5 Jul 2003 10:00:00 +0200\" {17}\r\nGr\xc3\xbc\xc3\x9f" "e aus K\xc3\xb6ln "
	  "((\"Kim\" NIL \"kim\" \"example.org\")) ((\"Kim\" NIL \"kim\" \"example.org\")) "
	  "((\"Kim\" NIL \"kim\" \"example.org\")) ((NIL NIL \"lee\" \"example.org\")) "
	  "NIL NIL NIL NIL)",
	  "(" TEXT_ASCII " 30 1 NIL NIL NIL NIL)" },
	{ "group addresses", msg_group,
	  "(\"Sun, 6 Jul 2003 10:00:00 +0200\" \"group test\" "
	  "((\"Sender\" NIL \"s\" \"example.org\")) ((\"Sender\" NIL \"s\" \"example.org\")) "
	  "((\"Sender\" NIL \"s\" \"example.org\")) "
	  "((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) "
	  "((NIL NIL \"Team\" NIL)(NIL NIL \"a\" \"example.org\")(\"B. Person\" NIL \"b\" "
	  "\"example.org\")(NIL NIL NIL NIL)(NIL NIL \"c\" \"example.org\")) NIL NIL NIL)",
	  "(" TEXT_ASCII " 7 1 NIL NIL NIL NIL)" },
	{ "missing Date and From", msg_nodate,
	  "(NIL \"no date or from\" NIL NIL NIL ((NIL NIL \"x\" \"example.org\")) NIL NIL NIL NIL)",
	  "(" TEXT_ASCII " 29 2 NIL NIL NIL NIL)" },
	{ "multipart without boundary", msg_noboundary,
	  "(NIL \"no boundary\" " A_EX " " A_EX " " A_EX " NIL NIL NIL NIL NIL)",
	  "(" TEXT_ASCII " 50 5 NIL NIL NIL NIL)" },
	{ "boundary never closed", msg_unclosed, NULL,
	  "((" TEXT_ASCII " 5 0 NIL NIL NIL NIL)(" TEXT_ASCII " 22 1 NIL NIL NIL NIL) \"MIXED\" "
	  "(\"BOUNDARY\" \"B\") NIL NIL NIL)" },
	{ "header line without colon", msg_nocolon,
	  "(NIL \"after junk\" " A_EX " " A_EX " " A_EX " NIL NIL NIL NIL NIL)",
	  "(" TEXT_ASCII " 11 1 NIL NIL NIL NIL)" },
	{ "multipart with zero parts", msg_zeroparts, NULL,
	  "(" TEXT_ASCII " 7 1 NIL NIL NIL NIL)" },
	{ "no header at all", msg_noheaders, "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)",
	  "(" TEXT_ASCII " 32 1 NIL NIL NIL NIL)" },
};

/* ---- helpers --------------------------------------------------------- */

static char *to_crlf(const char *s)
{
	size_t n = strlen(s), extra = 0;
	for (size_t i = 0; i < n; i++)
		extra += s[i] == '\n' && (i == 0 || s[i - 1] != '\r');
	char *r = malloc(n + extra + 1), *p = r;
	assert_non_null(r);
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
			*p++ = '\r';
		*p++ = s[i];
	}
	*p = '\0';
	return r;
}

/* IMAP syntax: parentheses balance outside quoted strings and literals,
 * and the whole is one parenthesised list. */
static bool balanced(const char *s, size_t len)
{
	int depth = 0;
	size_t i = 0;

	if (len == 0 || s[0] != '(')
		return false;
	while (i < len) {
		char c = s[i];
		if (c == '"') {
			for (i++; i < len && s[i] != '"'; i++) {
				if (s[i] == '\\')
					i++;
			}
			if (i >= len)
				return false;
		} else if (c == '{') {
			size_t n = 0;
			for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++)
				n = n * 10 + (size_t)(s[i] - '0');
			if (i + 2 >= len || s[i] != '}' || s[i + 1] != '\r' || s[i + 2] != '\n')
				return false;
			i += 2 + n;
		} else if (c == '(') {
			depth++;
		} else if (c == ')') {
			if (--depth < 0)
				return false;
			if (depth == 0 && i != len - 1)
				return false;
		}
		i++;
	}
	return depth == 0;
}

/* A tiny BODYSTRUCTURE reader: a tree of lists, strings, numbers, NIL. */
enum tok_kind { T_LIST, T_STR, T_NUM, T_NIL };
struct tnode {
	enum tok_kind kind;
	const char *s;
	size_t len;
	uint64_t num;
	int first, next; /* children of a list */
};
struct tree {
	struct tnode n[4096];
	int count;
};

static int tparse(struct tree *t, const char **pp, const char *end)
{
	const char *p = *pp;
	while (p < end && *p == ' ')
		p++;
	if (p >= end || t->count >= (int)N_ELEMENTS(t->n))
		return -1;
	int idx = t->count++;
	struct tnode *n = &t->n[idx];
	memset(n, 0, sizeof(*n));
	n->first = n->next = -1;
	if (*p == '(') {
		int last = -1;
		n->kind = T_LIST;
		p++;
		for (;;) {
			while (p < end && *p == ' ')
				p++;
			if (p >= end)
				return -1;
			if (*p == ')') {
				p++;
				break;
			}
			int c = tparse(t, &p, end);
			if (c < 0)
				return -1;
			if (last < 0)
				t->n[idx].first = c;
			else
				t->n[last].next = c;
			last = c;
		}
	} else if (*p == '"') {
		n->kind = T_STR;
		n->s = ++p;
		while (p < end && *p != '"')
			p += *p == '\\' ? 2 : 1;
		n->len = (size_t)(p - n->s);
		p++;
	} else if (*p == '{') {
		size_t l = 0;
		for (p++; *p >= '0' && *p <= '9'; p++)
			l = l * 10 + (size_t)(*p - '0');
		p += 3;
		n->kind = T_STR;
		n->s = p;
		n->len = l;
		p += l;
	} else if (end - p >= 3 && memcmp(p, "NIL", 3) == 0) {
		n->kind = T_NIL;
		p += 3;
	} else if (*p >= '0' && *p <= '9') {
		n->kind = T_NUM;
		while (p < end && *p >= '0' && *p <= '9')
			n->num = n->num * 10 + (uint64_t)(*p++ - '0');
	} else {
		return -1;
	}
	*pp = p;
	return idx;
}

static const struct tnode *child(const struct tree *t, int list, int i)
{
	int c = t->n[list].first;
	while (c >= 0 && i-- > 0)
		c = t->n[c].next;
	return c >= 0 ? &t->n[c] : NULL;
}

static int child_idx(const struct tree *t, int list, int i)
{
	int c = t->n[list].first;
	while (c >= 0 && i-- > 0)
		c = t->n[c].next;
	return c;
}

static bool str_is(const struct tnode *n, const char *s)
{
	return n != NULL && n->kind == T_STR && n->len == strlen(s) && memcmp(n->s, s, n->len) == 0;
}

static uint64_t count_lf(const char *s, size_t len)
{
	uint64_t n = 0;
	for (size_t i = 0; i < len; i++)
		n += s[i] == '\n';
	return n;
}

/* Every leaf's size (and lines) equals its BODY[part]; recursion into
 * multiparts and message/rfc822. Returns the number of leaves checked. */
static int check_sizes(const char *label, struct mime_message *m, const struct tree *t, int body,
		       const char *prefix, bool from_message)
{
	char part[256];
	const struct tnode *first = child(t, body, 0);
	int checked = 0;

	CHECK(label, first != NULL);
	if (first->kind == T_LIST) {
		int i = 0;
		for (int c = t->n[body].first; c >= 0 && t->n[c].kind == T_LIST; c = t->n[c].next) {
			snprintf(part, sizeof(part), "%s%s%d", prefix, *prefix ? "." : "", ++i);
			checked += check_sizes(label, m, t, c, part, false);
		}
		return checked;
	}
	if (from_message)
		snprintf(part, sizeof(part), "%s%s1", prefix, *prefix ? "." : "");
	else
		snprintf(part, sizeof(part), "%s", prefix);
	const struct tnode *size = child(t, body, 6);
	CHECK(label, size != NULL && size->kind == T_NUM);

	struct buf b;
	const char *error = NULL;
	buf_init(&b, OUT_MAX);
	CHECK(label, mime_section(m, part, &b, &error) == 0);
	if (size->num != b.len)
		fail_msg("case '%s': BODY[%s] is %zu octets, BODYSTRUCTURE says %llu", label, part,
			 b.len, (unsigned long long)size->num);
	if (str_is(child(t, body, 0), "TEXT")) {
		const struct tnode *lines = child(t, body, 7);
		CHECK(label, lines != NULL && lines->kind == T_NUM);
		CHECK(label, lines->num == count_lf(b.data, b.len));
	}
	checked++;
	if (str_is(child(t, body, 0), "MESSAGE") && str_is(child(t, body, 1), "RFC822")) {
		const struct tnode *env = child(t, body, 7);
		const struct tnode *lines = child(t, body, 9);
		CHECK(label, env != NULL && env->kind == T_LIST);
		CHECK(label, lines != NULL && lines->kind == T_NUM &&
				     lines->num == count_lf(b.data, b.len));
		checked += check_sizes(label, m, t, child_idx(t, body, 8), part, true);
	}
	buf_free(&b);
	return checked;
}

/* The invariants every message must satisfy, whatever its shape. */
static void check_invariants(const char *label, const char *data, size_t len)
{
	struct mime_message *m = mime_parse(data, len);
	struct buf b;
	const char *error = NULL;

	CHECK(label, m != NULL);
	buf_init(&b, OUT_MAX);
	CHECK(label, mime_size(m) == mime_crlf_size(data, len));
	CHECK(label, mime_section(m, "", &b, &error) == 0);
	CHECK(label, b.len == mime_size(m));
	buf_reset(&b);
	CHECK(label, mime_envelope(m, false, &b) == 0);
	CHECK(label, balanced(b.data, b.len));
	buf_reset(&b);
	CHECK(label, mime_bodystructure(m, false, &b) == 0);
	CHECK(label, balanced(b.data, b.len));
	buf_reset(&b);
	CHECK(label, mime_bodystructure(m, true, &b) == 0);
	if (!balanced(b.data, b.len))
		fail_msg("case '%s': unbalanced BODYSTRUCTURE %s", label, b.data);

	struct tree *t = calloc(1, sizeof(*t));
	assert_non_null(t);
	const char *p = b.data;
	int root = tparse(t, &p, b.data + b.len);
	CHECK(label, root >= 0 && p == b.data + b.len);
	CHECK(label, check_sizes(label, m, t, root, "", true) > 0);
	free(t);

	/* HEADER + TEXT is the whole message */
	struct buf h, x;
	buf_init(&h, OUT_MAX);
	buf_init(&x, OUT_MAX);
	CHECK(label, mime_section(m, "HEADER", &h, &error) == 0);
	CHECK(label, mime_section(m, "TEXT", &x, &error) == 0);
	CHECK(label, h.len + x.len == mime_size(m));
	buf_free(&h);
	buf_free(&x);
	buf_free(&b);
	mime_free(&m);
	CHECK(label, m == NULL);
}

static char *fmt(struct mime_message *m, int what)
{
	struct buf b;
	buf_init(&b, OUT_MAX);
	if (what == 0)
		assert_int_equal(mime_envelope(m, false, &b), 0);
	else
		assert_int_equal(mime_bodystructure(m, what == 2, &b), 0);
	char *r = strdup(b.data != NULL ? b.data : "");
	buf_free(&b);
	return r;
}

/* ---- tests ----------------------------------------------------------- */

static void test_corpus(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(corpus); i++) {
		const struct corpus_case *c = &corpus[i];
		struct mime_message *m = mime_parse(c->msg, strlen(c->msg));
		char *env = fmt(m, 0), *bs = fmt(m, 2);
		if (c->envelope != NULL && strcmp(env, c->envelope) != 0)
			fail_msg("case '%s': ENVELOPE\n got %s\nwant %s", c->label, env, c->envelope);
		if (c->bodystructure != NULL && strcmp(bs, c->bodystructure) != 0)
			fail_msg("case '%s': BODYSTRUCTURE\n got %s\nwant %s", c->label, bs,
				 c->bodystructure);
		check_invariants(c->label, c->msg, strlen(c->msg));

		/* the same message with CRLF line ends describes the same */
		char *crlf = to_crlf(c->msg);
		struct mime_message *m2 = mime_parse(crlf, strlen(crlf));
		char *env2 = fmt(m2, 0), *bs2 = fmt(m2, 2);
		if (strcmp(env, env2) != 0 || strcmp(bs, bs2) != 0)
			fail_msg("case '%s': CRLF form differs:\n%s\n%s", c->label, bs, bs2);
		CHECK(c->label, mime_size(m) == mime_size(m2));
		check_invariants(c->label, crlf, strlen(crlf));
		free(env2);
		free(bs2);
		mime_free(&m2);
		free(crlf);
		free(env);
		free(bs);
		mime_free(&m);
	}
}

static void test_truncated(void **state)
{
	(void)state;
	/* every prefix of every message, as an exact-size heap copy so that
	 * ASan sees any read past the end */
	for (size_t i = 0; i < N_ELEMENTS(corpus); i++) {
		size_t len = strlen(corpus[i].msg);
		for (size_t n = 0; n <= len; n++) {
			char *copy = malloc(n > 0 ? n : 1);
			assert_non_null(copy);
			memcpy(copy, corpus[i].msg, n);
			check_invariants(corpus[i].label, copy, n);
			free(copy);
		}
	}
}

static void test_body(void **state)
{
	(void)state;
	struct mime_message *m = mime_parse(msg_rfc822, strlen(msg_rfc822));
	char *b = fmt(m, 1);
	assert_string_equal(b,
		"((" TEXT_ASCII " 10 0)(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 328 "
		"(\"Wed, 2 Jul 2003 11:00:00 +0000\" \"original\" "
		"((\"Original\" NIL \"orig\" \"example.com\")) ((\"Original\" NIL \"orig\" "
		"\"example.com\")) ((\"Original\" NIL \"orig\" \"example.com\")) "
		"((NIL NIL \"fwd\" \"example.org\")) NIL NIL NIL \"<orig@example.com>\") "
		"((" TEXT_ASCII " 11 0)(\"IMAGE\" \"PNG\" NIL NIL NIL \"BASE64\" 12) \"MIXED\") 16) "
		"\"MIXED\")");
	free(b);
	mime_free(&m);
}

static void test_envelope_utf8(void **state)
{
	(void)state;
	static const char msg[] = "From: \"J\xc3\xbcrgen\" <j@example.de>\nSubject: K\xc3\xb6ln\n\nx\n";
	struct mime_message *m = mime_parse(msg, strlen(msg));
	struct buf b;
	buf_init(&b, OUT_MAX);
	assert_int_equal(mime_envelope(m, true, &b), 0);
	assert_string_equal(b.data, "(NIL \"K\xc3\xb6ln\" ((\"J\xc3\xbcrgen\" NIL \"j\" \"example.de\")) "
				    "((\"J\xc3\xbcrgen\" NIL \"j\" \"example.de\")) "
				    "((\"J\xc3\xbcrgen\" NIL \"j\" \"example.de\")) NIL NIL NIL NIL NIL)");
	buf_reset(&b);
	assert_int_equal(mime_envelope(m, false, &b), 0);
	assert_string_equal(b.data, "(NIL {5}\r\nK\xc3\xb6ln ((\"=?UTF-8?b?SsO8cmdlbg==?=\" NIL \"j\" "
				    "\"example.de\")) ((\"=?UTF-8?b?SsO8cmdlbg==?=\" NIL \"j\" "
				    "\"example.de\")) ((\"=?UTF-8?b?SsO8cmdlbg==?=\" NIL \"j\" "
				    "\"example.de\")) NIL NIL NIL NIL NIL)");
	/* a full buffer is reported, not overrun */
	struct buf small;
	buf_init(&small, 16);
	assert_int_equal(mime_envelope(m, false, &small), -1);
	assert_int_equal(mime_bodystructure(m, true, &small), -1);
	buf_free(&small);
	buf_free(&b);
	mime_free(&m);
}

struct section_case {
	const char *label;
	const char *msg;
	const char *section;
	int ret;
	const char *want; /* CRLF form */
};

static const struct section_case section_cases[] = {
	{ "plain 1 is the body", msg_plain, "1", 0,
	  "Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n" },
	{ "plain TEXT", msg_plain, "text", 0,
	  "Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n" },
	{ "plain 2 does not exist", msg_plain, "2", 0, "" },
	{ "plain 1.1 does not exist", msg_plain, "1.2", 0, "" },
	{ "HEADER.FIELDS case-insensitive", msg_plain, "HEADER.FIELDS (subject FROM)", 0,
	  "From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
	  "Subject: afternoon meeting\r\n\r\n" },
	{ "HEADER.FIELDS quoted name", msg_plain, "HEADER.FIELDS (\"Subject\")", 0,
	  "Subject: afternoon meeting\r\n\r\n" },
	{ "HEADER.FIELDS nothing matches", msg_plain, "HEADER.FIELDS (X-None)", 0, "\r\n" },
	{ "HEADER.FIELDS.NOT", msg_plain,
	  "HEADER.FIELDS.NOT (Date From To Message-Id MIME-Version Content-Type)", 0,
	  "Subject: afternoon meeting\r\n\r\n" },
	{ "folded header kept whole", msg_encoded, "HEADER.FIELDS (SUBJECT)", 0,
	  "Subject: =?UTF-8?B?SGVsbG8gd8O2cmxk?=\r\n =?ISO-8859-1?Q?_caf=E9?=\r\n\r\n" },
	{ "alternative 1", msg_alternative, "1", 0,
	  "Caf=C3=A9 at noon?\r\nSee you=\r\n there." },
	{ "alternative 2.MIME", msg_alternative, "2.MIME", 0,
	  "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n" },
	{ "alternative 2", msg_alternative, "2", 0, "<p>Caf&eacute; at noon?</p>" },
	{ "mixed 1 is the inner multipart", msg_mixed, "1", 0,
	  "--INNER\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nSee attached.\r\n"
	  "--INNER\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n<b>See attached.</b>\r\n"
	  "--INNER--\r\n" },
	{ "mixed 1.2", msg_mixed, "1.2", 0, "<b>See attached.</b>" },
	{ "mixed 2 base64 as is", msg_mixed, "2", 0,
	  "JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4Kc3RyZWFtCg==" },
	{ "mixed 3", msg_mixed, "3", 0, "Euro rates." },
	{ "mixed 1.3 does not exist", msg_mixed, "1.3", 0, "" },
	{ "mixed 2.HEADER not a message", msg_mixed, "2.HEADER", 0, "" },
	{ "rfc822 2.HEADER.FIELDS", msg_rfc822, "2.HEADER.FIELDS (Subject)", 0,
	  "Subject: original\r\n\r\n" },
	{ "rfc822 2.1", msg_rfc822, "2.1", 0, "Inner text." },
	{ "rfc822 2.2.MIME", msg_rfc822, "2.2.MIME", 0,
	  "Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n" },
	{ "rfc822 2.TEXT", msg_rfc822, "2.TEXT", 0,
	  "--IN\r\nContent-Type: text/plain\r\n\r\nInner text.\r\n--IN\r\n"
	  "Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n"
	  "--IN--" },
	{ "unclosed 2", msg_unclosed, "2", 0, "second, never closed\r\n" },
	{ "no header: HEADER is the blank line", msg_noheaders, "HEADER", 0, "\r\n" },
	{ "bad: part 0", msg_plain, "0", -1, NULL },
	{ "bad: trailing dot", msg_plain, "1.", -1, NULL },
	{ "bad: MIME alone", msg_plain, "MIME", -1, NULL },
	{ "bad: unknown word", msg_plain, "BODY", -1, NULL },
	{ "bad: empty field list", msg_plain, "HEADER.FIELDS ()", -1, NULL },
	{ "bad: no list", msg_plain, "HEADER.FIELDS", -1, NULL },
	{ "bad: unclosed list", msg_plain, "HEADER.FIELDS (From", -1, NULL },
	{ "bad: part overflow", msg_plain, "99999999999", -1, NULL },
};

static void test_sections(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(section_cases); i++) {
		const struct section_case *c = &section_cases[i];
		struct mime_message *m = mime_parse(c->msg, strlen(c->msg));
		struct buf b;
		const char *error = NULL;
		buf_init(&b, OUT_MAX);
		int ret = mime_section(m, c->section, &b, &error);
		if (ret != c->ret)
			fail_msg("case '%s': returned %d, want %d", c->label, ret, c->ret);
		CHECK(c->label, mime_section_valid(c->section) == (c->ret == 0));
		if (ret < 0)
			CHECK(c->label, error != NULL);
		if (c->want != NULL &&
		    (b.len != strlen(c->want) || (b.len > 0 && memcmp(b.data, c->want, b.len) != 0)))
			fail_msg("case '%s': got <<%s>>", c->label, b.data != NULL ? b.data : "");
		/* CRLF input gives the same octets */
		char *crlf = to_crlf(c->msg);
		struct mime_message *m2 = mime_parse(crlf, strlen(crlf));
		struct buf b2;
		buf_init(&b2, OUT_MAX);
		CHECK(c->label, mime_section(m2, c->section, &b2, &error) == c->ret);
		CHECK(c->label, b.len == b2.len && (b.len == 0 || memcmp(b.data, b2.data, b.len) == 0));
		buf_free(&b2);
		mime_free(&m2);
		free(crlf);
		/* a full buffer gives -2 */
		if (c->ret == 0 && b.len > 0) {
			struct buf small;
			buf_init(&small, b.len - 1);
			CHECK(c->label, mime_section(m, c->section, &small, &error) == -2);
			buf_free(&small);
		}
		buf_free(&b);
		mime_free(&m);
	}
}

struct binary_case {
	const char *label;
	const char *msg;
	const char *part;
	int ret;
	const char *want;
	size_t want_len;
};

static const char msg_binary[] =
	"Content-Type: multipart/mixed; boundary=X\n"
	"\n"
	"--X\n"
	"Content-Type: application/octet-stream\n"
	"Content-Transfer-Encoding: base64\n"
	"\n"
	"AAEC/w0K\n"
	"--X\n"
	"Content-Type: text/plain\n"
	"Content-Transfer-Encoding: Quoted-Printable\n"
	"\n"
	"Caf=C3=A9=\n"
	" au lait\n"
	"line two\n"
	"--X\n"
	"Content-Type: text/plain\n"
	"Content-Transfer-Encoding: x-uuencode\n"
	"\n"
	"begin\n"
	"--X\n"
	"Content-Type: text/plain\n"
	"\n"
	"plain\n"
	"text\n"
	"--X--\n";

static const struct binary_case binary_cases[] = {
	{ "base64 to exact octets", msg_binary, "1", 0, "\x00\x01\x02\xff\r\n", 6 },
	{ "quoted-printable to CRLF text", msg_binary, "2", 0, "Caf\xc3\xa9 au lait\r\nline two", 0 },
	{ "unknown CTE", msg_binary, "3", -1, "UNKNOWN-CTE", 0 },
	{ "7bit as is", msg_binary, "4", 0, "plain\r\ntext", 0 },
	{ "no such part", msg_binary, "5", -1, NULL, 0 },
	{ "multipart refused", msg_mixed, "1", -1, NULL, 0 },
	{ "message refused", msg_rfc822, "2", -1, NULL, 0 },
	{ "part in a message", msg_rfc822, "2.2", 0, "\x89PNG\r\n\x1a\n", 8 },
	{ "bad syntax", msg_binary, "1.x", -1, NULL, 0 },
};

static void test_binary(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(binary_cases); i++) {
		const struct binary_case *c = &binary_cases[i];
		struct mime_message *m = mime_parse(c->msg, strlen(c->msg));
		struct buf b;
		const char *error = NULL;
		buf_init(&b, OUT_MAX);
		int ret = mime_binary(m, c->part, &b, &error);
		if (ret != c->ret)
			fail_msg("case '%s': returned %d, want %d", c->label, ret, c->ret);
		if (ret == 0) {
			size_t wl = c->want_len > 0 ? c->want_len : strlen(c->want);
			if (b.len != wl || memcmp(b.data, c->want, wl) != 0)
				fail_msg("case '%s': got %zu octets <<%s>>", c->label, b.len, b.data);
		} else {
			CHECK(c->label, error != NULL);
			if (c->want != NULL)
				CHECK(c->label, strcmp(error, c->want) == 0);
		}
		buf_free(&b);
		mime_free(&m);
	}
}

struct search_case {
	const char *label;
	const char *msg;
	const char *field;   /* NULL: text search */
	const char *needle;
	bool with_headers;
	bool want;
};

static const struct search_case search_cases[] = {
	{ "subject plain", msg_plain, "Subject", "AFTERNOON", false, true },
	{ "subject missing word", msg_plain, "Subject", "evening", false, false },
	{ "header name case", msg_plain, "SUBJECT", "meeting", false, true },
	{ "empty needle: field exists", msg_plain, "Message-Id", "", false, true },
	{ "empty needle: no such field", msg_plain, "Cc", "", false, false },
	{ "content header", msg_plain, "Content-Type", "text/plain", false, true },
	{ "encoded-word subject decoded", msg_encoded, "Subject", "hello w\xc3\x96rld caf\xc3\x89",
	  false, true },
	{ "encoded-word name decoded", msg_encoded, "From", "andr\xc3\xa9 pirard", false, true },
	{ "qp latin1 body decoded", msg_encoded, NULL, "CAF\xc3\x89 CR\xc3\x88ME", false, true },
	{ "html part searched", msg_alternative, NULL, "eacute", false, true },
	{ "qp soft break joined", msg_alternative, NULL, "see you there", false, true },
	{ "base64 attachment not text", msg_mixed, NULL, "JVBERi0", false, false },
	{ "attachment text", msg_mixed, NULL, "euro RATES", false, true },
	{ "header not in body", msg_plain, NULL, "afternoon", false, false },
	{ "header in TEXT", msg_plain, NULL, "afternoon", true, true },
	{ "inner message header is body", msg_rfc822, NULL, "orig@example.com", false, true },
	{ "inner text", msg_rfc822, NULL, "inner TEXT", false, true },
	{ "full case folding: SS finds \xc3\x9f", msg_eightbit, NULL, "STRASSE", false, true },
	{ "8-bit body utf-8", msg_eightbit, NULL, "STRA\xc3\x9f" "E", false, true },
	{ "empty needle text", msg_plain, NULL, "", false, true },
	{ "unparsable message", msg_noheaders, NULL, "only a BODY", false, true },
};

static void test_search(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(search_cases); i++) {
		const struct search_case *c = &search_cases[i];
		struct mime_message *m = mime_parse(c->msg, strlen(c->msg));
		bool got = c->field != NULL ? mime_header_contains(m, c->field, c->needle) :
					      mime_text_contains(m, c->needle, c->with_headers);
		if (got != c->want)
			fail_msg("case '%s': got %d", c->label, got);
		mime_free(&m);
	}
}

/* The SEARCH data an index keeps must answer exactly as the message does:
 * every corpus message x every kept field (any spelling) x needles that
 * hit and miss, plain, empty, encoded-word and case-folded. */
static void test_search_fields(void **state)
{
	(void)state;
	static const char *const fields[] = { "From", "to", "CC", "Bcc", "SUBJECT" };
	static const char *const needles[] = {
		"", "a", "E", "example", "@", "foobar", "MEETING", "andr\xc3\xa9",
		"hello w\xc3\xb6rld", "CAF\xc3\x89", "STRASSE", "zzz-not-there", "\"", " ",
	};
	unsigned hits = 0, misses = 0;
	for (size_t i = 0; i < N_ELEMENTS(corpus); i++) {
		const char *label = corpus[i].label;
		struct mime_message *m = mime_parse(corpus[i].msg, strlen(corpus[i].msg));
		struct buf b;
		buf_init(&b, 65536);
		CHECK(label, mime_search_fields(m, &b) == 0);
		for (size_t f = 0; f < N_ELEMENTS(fields); f++) {
			unsigned id = mime_search_field_id(fields[f]);
			CHECK(label, id >= 1 && id <= 5);
			for (size_t k = 0; k < N_ELEMENTS(needles); k++) {
				char *folded = mime_fold(needles[k]);
				bool want = mime_header_contains(m, fields[f], needles[k]);
				bool got = mime_search_fields_contain(b.data != NULL ? b.data : "", b.len,
								      id, folded);
				if (got != want)
					fail_msg("case '%s' %s '%s': index %d, file %d", label,
						 fields[f], needles[k], got, want);
				if (want)
					hits++;
				else
					misses++;
				free(folded);
			}
		}
		buf_free(&b);
		mime_free(&m);
	}
	/* the table exercises both answers */
	assert_true(hits > 20);
	assert_true(misses > 20);
	assert_int_equal(mime_search_field_id("Message-Id"), 0);
	assert_int_equal(mime_search_field_id("Fro"), 0);

	/* the encoded-word subject is kept decoded and folded */
	struct mime_message *m = mime_parse(msg_encoded, strlen(msg_encoded));
	struct buf b;
	buf_init(&b, 65536);
	assert_int_equal(mime_search_fields(m, &b), 0);
	char *folded = mime_fold("HELLO W\xc3\x96RLD");
	assert_true(mime_search_fields_contain(b.data, b.len, 5, folded));
	assert_false(mime_search_fields_contain(b.data, b.len, 1, folded));
	free(folded);
	assert_null(memmem(b.data, b.len, "=?", 2));
	buf_free(&b);
	/* out full: -1, so the caller does not cache a partial list */
	buf_init(&b, 8);
	assert_int_equal(mime_search_fields(m, &b), -1);
	buf_free(&b);
	mime_free(&m);
}

struct date_case {
	const char *label;
	const char *msg;
	int64_t full, day;
};

static const struct date_case date_cases[] = {
	{ "zone -0800", msg_plain, 760686745, 760579200 },          /* 1994-02-08 05:52:25Z */
	{ "zone +0200", msg_alternative, 1057049557, 1057017600 },  /* day 2003-07-01 */
	{ "late in the day west of UTC", "Date: Wed, 31 Dec 2003 23:30:00 -0500\n\nx\n",
	  1072931400, 1072828800 },                                 /* day 2003-12-31 */
	{ "no Date", msg_nodate, -1, -1 },
	{ "bad Date", "Date: yesterday-ish\n\nx\n", -1, -1 },
};

static void test_sent_date(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(date_cases); i++) {
		const struct date_case *c = &date_cases[i];
		struct mime_message *m = mime_parse(c->msg, strlen(c->msg));
		int64_t full = mime_sent_date(m, false), day = mime_sent_date(m, true);
		if (full != c->full || day != c->day)
			fail_msg("case '%s': got %lld / %lld", c->label, (long long)full,
				 (long long)day);
		mime_free(&m);
	}
}

static void test_sizes(void **state)
{
	(void)state;
	static const struct {
		const char *label, *data;
		uint64_t size;
	} cases[] = {
		{ "empty", "", 0 },
		{ "LF only", "a\nb\n", 6 },
		{ "CRLF kept", "a\r\nb\r\n", 6 },
		{ "mixed", "\na\r\n\n", 7 },
		{ "lone CR", "a\rb", 3 },
		{ "no final newline", "abc", 3 },
	};
	for (size_t i = 0; i < N_ELEMENTS(cases); i++)
		CHECK(cases[i].label,
		      mime_crlf_size(cases[i].data, strlen(cases[i].data)) == cases[i].size);
}

static void test_parse_fd(void **state)
{
	(void)state;
	char path[] = "/tmp/test-mime.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, msg_rfc822, strlen(msg_rfc822)), (ssize_t)strlen(msg_rfc822));
	struct mime_message *a = mime_parse_fd(fd), *b = mime_parse(msg_rfc822, strlen(msg_rfc822));
	assert_non_null(a);
	char *ba = fmt(a, 2), *bb = fmt(b, 2);
	assert_string_equal(ba, bb);
	assert_true(mime_size(a) == mime_size(b));
	free(ba);
	free(bb);
	mime_free(&a);
	mime_free(&b);
	/* an empty file */
	assert_int_equal(ftruncate(fd, 0), 0);
	a = mime_parse_fd(fd);
	assert_non_null(a);
	assert_true(mime_size(a) == 0);
	ba = fmt(a, 2);
	assert_true(balanced(ba, strlen(ba)));
	free(ba);
	mime_free(&a);
	close(fd);
	unlink(path);
}

static void test_deep_nesting(void **state)
{
	(void)state;
	/* 300 nested multiparts: bounded recursion, valid syntax */
	struct buf b;
	buf_init(&b, OUT_MAX);
	for (int i = 0; i < 300; i++)
		assert_int_equal(buf_printf(&b, "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n",
					    i, i), 0);
	assert_int_equal(buf_append_str(&b, "Content-Type: text/plain\n\ndeep\n"), 0);
	for (int i = 299; i >= 0; i--)
		assert_int_equal(buf_printf(&b, "--b%d--\n", i), 0);
	check_invariants("deep nesting", b.data, b.len);
	buf_free(&b);
}

/* Rough cost of ENVELOPE (parse included) for a ~4 KB message: printed,
 * not asserted. */
static void test_envelope_speed(void **state)
{
	(void)state;
	struct buf msg, out;
	buf_init(&msg, OUT_MAX);
	buf_init(&out, OUT_MAX);
	assert_int_equal(buf_append_str(&msg, msg_alternative), 0);
	while (msg.len < 4096)
		assert_int_equal(buf_append_str(&msg, "Lorem ipsum dolor sit amet, consectetur "
						      "adipiscing elit, sed do eiusmod.\n"), 0);
	const int rounds = 20000;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < rounds; i++) {
		struct mime_message *m = mime_parse(msg.data, msg.len);
		buf_reset(&out);
		assert_int_equal(mime_envelope(m, false, &out), 0);
		mime_free(&m);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double us = ((double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3) /
		    rounds;
	printf("# ENVELOPE of a %zu-octet message: %.1f us (parse included)\n", msg.len, us);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < rounds; i++) {
		struct mime_message *m = mime_parse(msg.data, msg.len);
		buf_reset(&out);
		assert_int_equal(mime_bodystructure(m, true, &out), 0);
		mime_free(&m);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	us = ((double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3) /
	     rounds;
	printf("# BODYSTRUCTURE of the same: %.1f us (parse included)\n", us);
	buf_free(&out);
	buf_free(&msg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_corpus),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_body),
		cmocka_unit_test(test_envelope_utf8),
		cmocka_unit_test(test_sections),
		cmocka_unit_test(test_binary),
		cmocka_unit_test(test_search),
		cmocka_unit_test(test_search_fields),
		cmocka_unit_test(test_sent_date),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_parse_fd),
		cmocka_unit_test(test_deep_nesting),
		cmocka_unit_test(test_envelope_speed),
	};
	mime_init();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
