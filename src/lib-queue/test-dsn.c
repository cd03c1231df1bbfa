/*
 * test-dsn.c — unit tests for dsn.c: the RFC 3464 report for each action,
 * several recipients, ORCPT/ENVID, RET=HDRS, originals without a body or
 * too large to return, header injection through every inserted value, line
 * lengths, 8-bit labelling, boundary collisions, invalid reports and out's
 * limit.
 *
 * With DSN_DUMP_DIR set in the environment, every report built successfully
 * is also written there as NN-label.eml, with its input as NN-label.json and
 * the original as NN-label.orig, for tests/integration/test_dsn_format.py to
 * check with Python's email package.
 */
#include "lib-queue/dsn.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#pragma GCC diagnostic ignored "-Wunused-parameter"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

#define CHECK(label, cond) \
	do { \
		if (!(cond)) \
			fail_msg("case '%s': check failed: %s", (label), #cond); \
	} while (0)

#define HOST    "mail.example.test"
#define QID     "0123456789ABCDEF"
#define T_ARRIVAL 1700000000   /* Tue, 14 Nov 2023 22:13:20 +0000 */
#define T_NOW     1700086400   /* Wed, 15 Nov 2023 22:13:20 +0000 */
#define T_RETRY   1700172800   /* Thu, 16 Nov 2023 22:13:20 +0000 */
#define D_ARRIVAL "Tue, 14 Nov 2023 22:13:20 +0000"
#define D_NOW     "Wed, 15 Nov 2023 22:13:20 +0000"
#define D_RETRY   "Thu, 16 Nov 2023 22:13:20 +0000"

#define ORIGINAL \
	"From: Alice <alice@example.test>\n" \
	"To: bob@example.com\n" \
	"Subject: lunch\n" \
	"Message-ID: <m1@example.test>\n" \
	"\n" \
	"Shall we meet at noon?\n" \
	"-- \n" \
	"Alice\n"
#define ORIGINAL_HEADERS \
	"From: Alice <alice@example.test>\n" \
	"To: bob@example.com\n" \
	"Subject: lunch\n" \
	"Message-ID: <m1@example.test>\n"

#define OUT_MAX (64u * 1024 * 1024)

/* ---- building and dumping ---- */

static unsigned dump_seq;

static void json_str(FILE *f, const char *s)
{
	if (s == NULL) {
		fputs("null", f);
		return;
	}
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static FILE *dump_open(const char *dir, const char *name, const char *ext)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%03u-%s.%s", dir, dump_seq, name, ext);
	FILE *f = fopen(path, "wb");
	if (f == NULL)
		fail_msg("cannot write %s", path);
	return f;
}

/* Writes the report, its input and the original to DSN_DUMP_DIR. */
static void dump(const char *label, const struct dsn_report *r, const struct buf *out,
		 size_t start)
{
	const char *dir = getenv("DSN_DUMP_DIR");
	char name[128];
	size_t i;
	FILE *f;

	if (dir == NULL || dir[0] == '\0')
		return;
	for (i = 0; label[i] != '\0' && i < sizeof(name) - 1; i++)
		name[i] = (label[i] >= 'a' && label[i] <= 'z') ||
			  (label[i] >= '0' && label[i] <= '9') ? label[i] : '-';
	name[i] = '\0';
	dump_seq++;

	f = dump_open(dir, name, "eml");
	assert_int_equal(fwrite(out->data + start, 1, out->len - start, f), out->len - start);
	assert_int_equal(fclose(f), 0);

	f = dump_open(dir, name, "orig");
	if (r->original_len > 0)
		assert_int_equal(fwrite(r->original, 1, r->original_len, f), r->original_len);
	assert_int_equal(fclose(f), 0);

	f = dump_open(dir, name, "json");
	fputs("{\"label\": ", f);
	json_str(f, label);
	fputs(", \"reporting_mta\": ", f);
	json_str(f, r->reporting_mta);
	fputs(", \"queue_id\": ", f);
	json_str(f, r->queue_id);
	fputs(", \"envid\": ", f);
	json_str(f, r->envid);
	fputs(", \"original_sender\": ", f);
	json_str(f, r->original_sender);
	fprintf(f, ", \"arrival_date\": %lld, \"now\": %lld, \"headers_only\": %s, "
		"\"original_len\": %zu, \"full_max\": %u, \"rcpts\": [",
		(long long)r->arrival_date, (long long)r->now, r->headers_only ? "true" : "false",
		r->original_len, DSN_FULL_MAX);
	static const char *const actions[] = { "failed", "delayed", "delivered", "relayed",
					       "expanded" };
	for (i = 0; i < r->nrcpts; i++) {
		const struct dsn_rcpt *rc = &r->rcpts[i];
		fputs(i > 0 ? ", {\"final_recipient\": " : "{\"final_recipient\": ", f);
		json_str(f, rc->final_recipient);
		fputs(", \"orcpt\": ", f);
		json_str(f, rc->orcpt);
		fprintf(f, ", \"action\": \"%s\", \"status\": ", actions[rc->action]);
		json_str(f, rc->status);
		fputs(", \"remote_mta\": ", f);
		json_str(f, rc->remote_mta);
		fputs(", \"diagnostic\": ", f);
		json_str(f, rc->diagnostic);
		fprintf(f, ", \"last_attempt\": %lld, \"will_retry_until\": %lld}",
			(long long)rc->last_attempt, (long long)rc->will_retry_until);
	}
	fputs("]}\n", f);
	assert_int_equal(fclose(f), 0);
}

/* Builds r into a fresh out (caller frees); fails the test on -1. */
static void build_ok(const char *label, const struct dsn_report *r, struct buf *out)
{
	buf_init(out, OUT_MAX);
	if (dsn_build(r, out) != 0)
		fail_msg("case '%s': dsn_build failed", label);
	CHECK(label, out->len > 0 && strlen(out->data) <= out->len);
	dump(label, r, out, 0);
}

static struct dsn_report base_report(const struct dsn_rcpt *rcpts, size_t n)
{
	return (struct dsn_report){
		.reporting_mta = HOST,
		.queue_id = QID,
		.original_sender = "alice@example.test",
		.arrival_date = T_ARRIVAL,
		.now = T_NOW,
		.rcpts = rcpts,
		.nrcpts = n,
		.original = ORIGINAL,
		.original_len = sizeof(ORIGINAL) - 1,
	};
}

static const struct dsn_rcpt rcpt_failed = {
	.final_recipient = "bob@example.com",
	.action = DSN_ACTION_FAILED,
	.status = "5.1.1",
	.remote_mta = "mx.example.com",
	.diagnostic = "550 5.1.1 No such user",
	.last_attempt = T_NOW,
};

/* ---- parsing what we built ---- */

struct span {
	const char *p;
	size_t len;
};

struct parsed {
	struct span header;       /* top-level header block, with its last LF */
	char boundary[128];
	struct span part_header[3];
	struct span part_body[3];
};

static const char *span_find(struct span s, const char *needle)
{
	return memmem(s.p, s.len, needle, strlen(needle));
}

static bool span_has(struct span s, const char *needle)
{
	return span_find(s, needle) != NULL;
}

/* Whether the line (without LF) is one of s's lines. */
static bool span_has_line(struct span s, const char *line)
{
	size_t n = strlen(line);
	const char *p = s.p, *end = s.p + s.len;

	while (p < end) {
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		size_t len = lf == NULL ? (size_t)(end - p) : (size_t)(lf - p);
		if (len == n && memcmp(p, line, n) == 0)
			return true;
		p += len + 1;
	}
	return false;
}

static bool span_eq(struct span s, const char *str, size_t len)
{
	return s.len == len && memcmp(s.p, str, len) == 0;
}

/* Finds the next "--boundary" at a line start in [p, end). */
static const char *find_delim(const char *start, const char *p, const char *end,
			      const char *boundary)
{
	size_t blen = strlen(boundary);

	while (p + 2 + blen <= end) {
		const char *d = memmem(p, (size_t)(end - p), boundary, blen);
		if (d == NULL)
			return NULL;
		if (d - start >= 2 && d[-1] == '-' && d[-2] == '-' &&
		    (d - start == 2 || d[-3] == '\n'))
			return d - 2;
		p = d + 1;
	}
	return NULL;
}

/* Splits a DSN into its header, boundary and three parts; fails the test
 * when the MIME structure is not exactly that. */
static void parse(const char *label, const struct buf *b, struct parsed *m)
{
	const char *start = b->data, *end = b->data + b->len;
	const char *hend = memmem(start, b->len, "\n\n", 2);
	const char *q, *d;

	CHECK(label, hend != NULL);
	m->header = (struct span){ start, (size_t)(hend - start) + 1 };
	q = memmem(start, m->header.len, "boundary=\"", 10);
	CHECK(label, q != NULL);
	q += 10;
	const char *qe = memchr(q, '"', (size_t)(hend - q));
	CHECK(label, qe != NULL && (size_t)(qe - q) < sizeof(m->boundary) && qe > q);
	memcpy(m->boundary, q, (size_t)(qe - q));
	m->boundary[qe - q] = '\0';
	CHECK(label, strlen(m->boundary) <= 70);

	size_t blen = strlen(m->boundary);
	d = find_delim(start, hend + 2, end, m->boundary);
	for (int i = 0; i < 3; i++) {
		CHECK(label, d != NULL && d[2 + blen] == '\n');
		const char *ps = d + 2 + blen + 1;
		const char *next = find_delim(start, ps, end, m->boundary);
		CHECK(label, next != NULL && next > ps);
		/* The LF before the delimiter belongs to it. */
		const char *pe = next - 1;
		const char *phe = memmem(ps, (size_t)(pe - ps), "\n\n", 2);
		CHECK(label, phe != NULL);
		m->part_header[i] = (struct span){ ps, (size_t)(phe - ps) + 1 };
		m->part_body[i] = (struct span){ phe + 2, (size_t)(pe - (phe + 2)) };
		d = next;
	}
	/* The close delimiter ends the message. */
	CHECK(label, (size_t)(end - d) == 2 + blen + 3 && memcmp(d + 2 + blen, "--\n", 3) == 0);
}

static void check_lines(const char *label, const struct buf *b, size_t skip_from)
{
	/* Every generated line within 998 octets, no CR anywhere; the attached
	 * original (from skip_from on) is the sender's own. */
	size_t linelen = 0;
	for (size_t i = 0; i < skip_from && i < b->len; i++) {
		CHECK(label, b->data[i] != '\r' && b->data[i] != '\0');
		if (b->data[i] == '\n') {
			linelen = 0;
			continue;
		}
		linelen++;
		if (linelen > 998)
			fail_msg("case '%s': line over 998 octets at offset %zu", label, i);
	}
}

/* ---- cases ---- */

/* One recipient, each action: subject, Action, text intro, Will-Retry-Until. */
struct action_case {
	const char *label;
	enum dsn_action action;
	const char *status;
	int64_t retry;
	const char *subject;
	const char *action_line;
	const char *intro;
	const char *description;
	bool retry_line;
};

static const struct action_case action_cases[] = {
	{ "failed", DSN_ACTION_FAILED, "5.1.1", T_RETRY,
	  "Subject: Undelivered Mail Returned to Sender", "Action: failed",
	  "Your message could not be delivered to one or more recipients.",
	  "Content-Description: Undelivered message", false },
	{ "failed after expiry", DSN_ACTION_FAILED, "4.4.7", 0,
	  "Subject: Undelivered Mail Returned to Sender", "Action: failed",
	  "Your message could not be delivered to one or more recipients.",
	  "Content-Description: Undelivered message", false },
	{ "delayed", DSN_ACTION_DELAYED, "4.4.1", T_RETRY,
	  "Subject: Delayed Mail (still being retried)", "Action: delayed",
	  "Delivery of your message to one or more recipients has been delayed.",
	  "Content-Description: Original message", true },
	{ "delayed no retry date", DSN_ACTION_DELAYED, "4.4.1", 0,
	  "Subject: Delayed Mail (still being retried)", "Action: delayed",
	  "Delivery of your message to one or more recipients has been delayed.",
	  "Content-Description: Original message", false },
	{ "delivered", DSN_ACTION_DELIVERED, "2.0.0", T_RETRY,
	  "Subject: Successful Mail Delivery Report", "Action: delivered",
	  "Your message was successfully delivered to the following recipients:",
	  "Content-Description: Original message", false },
	{ "relayed", DSN_ACTION_RELAYED, "2.0.0", 0,
	  "Subject: Successful Mail Delivery Report", "Action: relayed",
	  "Your message was relayed to the following recipients. Their mail",
	  "Content-Description: Original message", false },
	{ "expanded", DSN_ACTION_EXPANDED, "2.0.0", 0,
	  "Subject: Successful Mail Delivery Report", "Action: expanded",
	  "Your message was delivered to the following lists or aliases. Their",
	  "Content-Description: Original message", false },
};

static void test_actions(void **state)
{
	for (size_t i = 0; i < N_ELEMENTS(action_cases); i++) {
		const struct action_case *c = &action_cases[i];
		struct dsn_rcpt rc = rcpt_failed;
		struct buf out;
		struct parsed m;

		rc.action = c->action;
		rc.status = c->status;
		rc.will_retry_until = c->retry;
		struct dsn_report r = base_report(&rc, 1);
		build_ok(c->label, &r, &out);
		parse(c->label, &out, &m);
		check_lines(c->label, &out, out.len);

		/* header */
		CHECK(c->label, span_has_line(m.header, c->subject));
		CHECK(c->label, span_has_line(m.header,
			"From: \"Mail Delivery System\" <MAILER-DAEMON@" HOST ">"));
		CHECK(c->label, span_has_line(m.header, "To: <alice@example.test>"));
		CHECK(c->label, span_has_line(m.header, "Date: " D_NOW));
		CHECK(c->label, span_has_line(m.header, "Message-ID: <" QID ".dsn.1700086400@" HOST ">"));
		CHECK(c->label, span_has_line(m.header, "Auto-Submitted: auto-replied"));
		CHECK(c->label, span_has_line(m.header, "MIME-Version: 1.0"));
		CHECK(c->label, span_has_line(m.header,
			"Content-Type: multipart/report; report-type=delivery-status;"));
		CHECK(c->label, !span_has(m.header, "Content-Transfer-Encoding"));
		CHECK(c->label, strstr(m.boundary, QID) != NULL);

		/* part 1 */
		CHECK(c->label, span_has_line(m.part_header[0], "Content-Type: text/plain; charset=utf-8"));
		CHECK(c->label, span_has_line(m.part_body[0], "This is the mail system at host " HOST "."));
		CHECK(c->label, span_has_line(m.part_body[0], c->intro));
		char line[256];
		snprintf(line, sizeof(line), "  <bob@example.com> (%s): host mx.example.com said: "
			 "550 5.1.1 No such user%s", c->status,
			 c->retry_line ? "; will retry until " D_RETRY : "");
		CHECK(c->label, span_has_line(m.part_body[0], line));
		CHECK(c->label, span_has_line(m.part_body[0],
			"The mail system will keep trying until " D_RETRY ".") == c->retry_line);

		/* part 2, exactly */
		CHECK(c->label, span_has_line(m.part_header[1], "Content-Type: message/delivery-status"));
		char expect[1024];
		int n = snprintf(expect, sizeof(expect),
			"Reporting-MTA: dns; " HOST "\n"
			"X-Postern-Queue-ID: " QID "\n"
			"Arrival-Date: " D_ARRIVAL "\n"
			"\n"
			"Final-Recipient: rfc822; bob@example.com\n"
			"%s\n"
			"Status: %s\n"
			"Remote-MTA: dns; mx.example.com\n"
			"Diagnostic-Code: smtp; 550 5.1.1 No such user\n"
			"Last-Attempt-Date: " D_NOW "\n"
			"%s",
			c->action_line, c->status,
			c->retry_line ? "Will-Retry-Until: " D_RETRY "\n" : "");
		if (!span_eq(m.part_body[1], expect, (size_t)n))
			fail_msg("case '%s': delivery-status part is\n%.*s", c->label,
				 (int)m.part_body[1].len, m.part_body[1].p);

		/* part 3: the original as is */
		CHECK(c->label, span_has_line(m.part_header[2], "Content-Type: message/rfc822"));
		CHECK(c->label, span_has_line(m.part_header[2], c->description));
		CHECK(c->label, span_eq(m.part_body[2], ORIGINAL, sizeof(ORIGINAL) - 1));
		buf_free(&out);
	}
}

static void test_several_recipients(void **state)
{
	const char *label = "several recipients";
	const struct dsn_rcpt rcpts[] = {
		{ .final_recipient = "dave@example.net", .action = DSN_ACTION_DELIVERED,
		  .status = "2.0.0", .remote_mta = "mx.example.net", .diagnostic = "250 2.0.0 Ok" },
		{ .final_recipient = "bob@example.com", .action = DSN_ACTION_FAILED,
		  .status = "5.1.1", .remote_mta = "mx.example.com",
		  .diagnostic = "550 5.1.1 No such user", .orcpt = "rfc822;Bob@Example.COM" },
		{ .final_recipient = "carol@example.org", .action = DSN_ACTION_DELAYED,
		  .status = "4.4.1", .diagnostic = "connection timed out",
		  .last_attempt = T_NOW, .will_retry_until = T_RETRY },
		{ .final_recipient = "erin@example.com", .action = DSN_ACTION_FAILED,
		  .status = "5.2.2" },
	};
	struct dsn_report r = base_report(rcpts, N_ELEMENTS(rcpts));
	struct buf out;
	struct parsed m;

	r.envid = "env-42";
	build_ok(label, &r, &out);
	parse(label, &out, &m);
	CHECK(label, span_has_line(m.header, "Subject: Undelivered Mail Returned to Sender"));
	static const char expect[] =
		"Reporting-MTA: dns; " HOST "\n"
		"X-Postern-Queue-ID: " QID "\n"
		"Original-Envelope-Id: env-42\n"
		"Arrival-Date: " D_ARRIVAL "\n"
		"\n"
		"Final-Recipient: rfc822; dave@example.net\n"
		"Action: delivered\n"
		"Status: 2.0.0\n"
		"Remote-MTA: dns; mx.example.net\n"
		"Diagnostic-Code: smtp; 250 2.0.0 Ok\n"
		"\n"
		"Original-Recipient: rfc822;Bob@Example.COM\n"
		"Final-Recipient: rfc822; bob@example.com\n"
		"Action: failed\n"
		"Status: 5.1.1\n"
		"Remote-MTA: dns; mx.example.com\n"
		"Diagnostic-Code: smtp; 550 5.1.1 No such user\n"
		"\n"
		"Final-Recipient: rfc822; carol@example.org\n"
		"Action: delayed\n"
		"Status: 4.4.1\n"
		"Diagnostic-Code: smtp; connection timed out\n"
		"Last-Attempt-Date: " D_NOW "\n"
		"Will-Retry-Until: " D_RETRY "\n"
		"\n"
		"Final-Recipient: rfc822; erin@example.com\n"
		"Action: failed\n"
		"Status: 5.2.2\n";
	if (!span_eq(m.part_body[1], expect, sizeof(expect) - 1))
		fail_msg("delivery-status part is\n%.*s", (int)m.part_body[1].len, m.part_body[1].p);

	/* The text lists failures first, then delays, then successes. */
	struct span t = m.part_body[0];
	const char *f1 = span_find(t, "\n  <bob@example.com> (5.1.1): host mx.example.com said: "
				   "550 5.1.1 No such user\n");
	const char *f2 = span_find(t, "\n  <erin@example.com> (5.2.2)\n");
	const char *d1 = span_find(t, "\n  <carol@example.org> (4.4.1): connection timed out; "
				   "will retry until " D_RETRY "\n");
	const char *s1 = span_find(t, "\n  <dave@example.net> (2.0.0): host mx.example.net said: "
				   "250 2.0.0 Ok\n");
	CHECK(label, f1 != NULL && f2 != NULL && d1 != NULL && s1 != NULL);
	CHECK(label, f1 < f2 && f2 < d1 && d1 < s1);
	CHECK(label, span_has_line(t, "The mail system will keep trying until " D_RETRY "."));
	CHECK(label, span_has_line(t, "The queue id of your message was " QID "."));
	buf_free(&out);

	/* Delayed and delivered: the delay is the most severe. */
	struct dsn_report r2 = base_report(&rcpts[0], 1);
	struct dsn_rcpt two[] = { rcpts[0], rcpts[2] };
	r2.rcpts = two;
	r2.nrcpts = 2;
	build_ok("delayed and delivered", &r2, &out);
	parse("delayed and delivered", &out, &m);
	CHECK(label, span_has_line(m.header, "Subject: Delayed Mail (still being retried)"));
	buf_free(&out);
}

static void test_orcpt_envid(void **state)
{
	struct dsn_rcpt rc = rcpt_failed;
	struct dsn_report r = base_report(&rc, 1);
	struct buf out;
	struct parsed m;

	/* absent */
	build_ok("no orcpt no envid", &r, &out);
	parse("no orcpt no envid", &out, &m);
	CHECK("absent", !span_has(m.part_body[1], "Original-Recipient"));
	CHECK("absent", !span_has(m.part_body[1], "Original-Envelope-Id"));
	buf_free(&out);

	/* present */
	rc.orcpt = "rfc822;B+ob@example.com";
	r.envid = "QQ314159";
	build_ok("orcpt and envid", &r, &out);
	parse("orcpt and envid", &out, &m);
	CHECK("present", span_has_line(m.part_body[1], "Original-Recipient: rfc822;B+ob@example.com"));
	CHECK("present", span_has_line(m.part_body[1], "Original-Envelope-Id: QQ314159"));
	buf_free(&out);

	/* an ORCPT without its address type is taken as rfc822 */
	rc.orcpt = "bob@example.com";
	build_ok("orcpt without type", &r, &out);
	parse("orcpt without type", &out, &m);
	CHECK("untyped", span_has_line(m.part_body[1], "Original-Recipient: rfc822;bob@example.com"));
	buf_free(&out);
}

/* Originals of every shape, returned in full and as headers. */
struct original_case {
	const char *label;
	const char *original;   /* NULL: no original */
	size_t len;
	bool headers_only;
	const char *type;       /* Content-Type of part 3 */
	const char *body;       /* part 3 body expected */
	size_t body_len;
};

#define S(s) s, sizeof(s) - 1
static const struct original_case original_cases[] = {
	{ "full", S(ORIGINAL), false, "message/rfc822", S(ORIGINAL) },
	{ "headers only", S(ORIGINAL), true, "text/rfc822-headers", S(ORIGINAL_HEADERS) },
	{ "no body, full", S("Subject: x\nFrom: y@example.test\n"), false, "message/rfc822",
	  S("Subject: x\nFrom: y@example.test\n") },
	{ "no body, headers", S("Subject: x\nFrom: y@example.test\n"), true, "text/rfc822-headers",
	  S("Subject: x\nFrom: y@example.test\n") },
	{ "no final lf, full", S("Subject: x\n\nbody"), false, "message/rfc822",
	  S("Subject: x\n\nbody") },
	{ "no final lf, headers", S("Subject: x"), true, "text/rfc822-headers", S("Subject: x") },
	{ "empty line only, full", S("\n"), false, "message/rfc822", S("\n") },
	{ "empty line only, headers", S("\n"), true, "text/rfc822-headers", S("") },
	{ "empty line first, headers", S("\nSubject: body\n"), true, "text/rfc822-headers", S("") },
	{ "empty original", S(""), false, "message/rfc822", S("") },
	{ "null original", NULL, 0, false, "message/rfc822", S("") },
	{ "null original, headers", NULL, 0, true, "text/rfc822-headers", S("") },
	{ "two empty lines", S("A: b\n\n\nbody\n"), true, "text/rfc822-headers", S("A: b\n") },
};

static void test_originals(void **state)
{
	for (size_t i = 0; i < N_ELEMENTS(original_cases); i++) {
		const struct original_case *c = &original_cases[i];
		struct dsn_report r = base_report(&rcpt_failed, 1);
		struct buf out;
		struct parsed m;
		char type[128];

		r.original = c->original;
		r.original_len = c->len;
		r.headers_only = c->headers_only;
		build_ok(c->label, &r, &out);
		parse(c->label, &out, &m);
		snprintf(type, sizeof(type), "Content-Type: %s", c->type);
		CHECK(c->label, span_has_line(m.part_header[2], type));
		if (!span_eq(m.part_body[2], c->body, c->body_len))
			fail_msg("case '%s': part 3 is '%.*s'", c->label, (int)m.part_body[2].len,
				 m.part_body[2].p);
		CHECK(c->label, span_has_line(m.part_header[2], c->headers_only ?
			"Content-Description: Message headers" :
			"Content-Description: Undelivered message"));
		buf_free(&out);
	}
}

static void test_huge_original(void **state)
{
	const char *label = "huge original";
	size_t len = DSN_FULL_MAX + 1;
	char *big = malloc(len);
	struct dsn_report r = base_report(&rcpt_failed, 1);
	struct buf out;
	struct parsed m;

	assert_non_null(big);
	memset(big, 'x', len);
	memcpy(big, ORIGINAL_HEADERS "\n", sizeof(ORIGINAL_HEADERS "\n") - 1);
	for (size_t i = 200; i < len; i += 77)
		big[i] = '\n';
	r.original = big;
	r.original_len = len;
	build_ok(label, &r, &out);
	parse(label, &out, &m);
	CHECK(label, span_has_line(m.part_header[2], "Content-Type: text/rfc822-headers"));
	CHECK(label, span_eq(m.part_body[2], S(ORIGINAL_HEADERS)));
	CHECK(label, out.len < 8192);
	buf_free(&out);

	/* Exactly DSN_FULL_MAX still goes back whole. */
	r.original_len = DSN_FULL_MAX;
	build_ok("original at the limit", &r, &out);
	parse(label, &out, &m);
	CHECK(label, span_has_line(m.part_header[2], "Content-Type: message/rfc822"));
	CHECK(label, span_eq(m.part_body[2], big, DSN_FULL_MAX));
	buf_free(&out);

	/* A header block longer than DSN_FULL_MAX (no empty line anywhere) is cut
	 * at its last line end within the limit. */
	memset(big, 'h', len);
	for (size_t i = 60; i < len; i += 61)
		big[i] = '\n';
	r.original_len = len;
	build_ok("headers over the limit", &r, &out);
	parse(label, &out, &m);
	CHECK(label, span_has_line(m.part_header[2], "Content-Type: text/rfc822-headers"));
	size_t cut = (DSN_FULL_MAX / 61) * 61;   /* one past the last LF below the limit */
	CHECK(label, m.part_body[2].len == cut && m.part_body[2].p[cut - 1] == '\n');
	CHECK(label, memcmp(m.part_body[2].p, big, cut) == 0);
	buf_free(&out);
	free(big);
}

static void check_no_injection(const char *label, const struct buf *out, const struct parsed *m)
{
	static const char *const bad_starts[] = { "X-Injected", "Bcc:", "Evil:", "--fake",
						  "Content-Type: text/html" };
	const char *p = out->data, *end = out->data + m->part_header[2].len +
		(size_t)(m->part_header[2].p - out->data);

	check_lines(label, out, (size_t)(m->part_body[2].p - out->data));
	/* No generated line starts with an injected field. */
	while (p < end) {
		for (size_t i = 0; i < N_ELEMENTS(bad_starts); i++) {
			if (strncmp(p, bad_starts[i], strlen(bad_starts[i])) == 0)
				fail_msg("case '%s': injected line '%.40s'", label, p);
		}
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		if (lf == NULL)
			break;
		p = lf + 1;
	}
}

static void test_injection(void **state)
{
	const char *label = "injection";
	struct dsn_rcpt rcpts[2] = { rcpt_failed, rcpt_failed };
	struct dsn_report r = base_report(rcpts, 2);
	struct buf out;
	struct parsed m;

	rcpts[0].diagnostic = "550 oops\r\nX-Injected: yes\r\n\r\n--fake\r\n"
			      "Content-Type: text/html\r\n\r\n<b>hi</b>";
	rcpts[0].remote_mta = "mx.example.com\nEvil: 1";
	rcpts[0].orcpt = "rfc822;bob@example.com\r\nBcc: x@evil.example";
	rcpts[1].final_recipient = "carol@example.com\nBcc: x@evil.example";
	rcpts[1].diagnostic = "550\t\001\002tabs and\x7f" "controls\n";
	r.envid = "ENV\r\nX-Injected: envid";
	r.original_sender = "alice@example.test>\r\nBcc: <x@evil.example";
	build_ok(label, &r, &out);
	parse(label, &out, &m);
	check_no_injection(label, &out, &m);

	struct span st = m.part_body[1];
	CHECK(label, span_has_line(st, "Diagnostic-Code: smtp; 550 oops X-Injected: yes --fake "
				   "Content-Type: text/html <b>hi</b>"));
	CHECK(label, span_has_line(st, "Remote-MTA: dns; mx.example.com Evil: 1"));
	CHECK(label, span_has_line(st, "Original-Recipient: rfc822;bob@example.com Bcc: x@evil.example"));
	CHECK(label, span_has_line(st, "Final-Recipient: rfc822; carol@example.com Bcc: x@evil.example"));
	CHECK(label, span_has_line(st, "Diagnostic-Code: smtp; 550 tabs and controls "));
	CHECK(label, span_has_line(st, "Original-Envelope-Id: ENV X-Injected: envid"));
	CHECK(label, span_has_line(m.header, "To: <alice@example.test> Bcc: <x@evil.example>"));
	/* The delivery-status part holds exactly one per-message and two
	 * per-recipient blocks. */
	size_t blocks = 1;
	for (size_t i = 0; i + 1 < st.len; i++)
		blocks += st.p[i] == '\n' && st.p[i + 1] == '\n';
	CHECK(label, blocks == 3);
	buf_free(&out);
}

static void test_long_values(void **state)
{
	const char *label = "long values";
	char diag[5000], addr[1401], envid[3000];
	struct dsn_rcpt rc = rcpt_failed;
	struct dsn_report r = base_report(&rc, 1);
	struct buf out;
	struct parsed m;

	memset(diag, 'd', sizeof(diag) - 1);
	diag[sizeof(diag) - 1] = '\0';
	memcpy(diag, "550 ", 4);
	memset(envid, 'e', sizeof(envid) - 1);
	envid[sizeof(envid) - 1] = '\0';
	/* "é" (2 octets) after "x@": truncation must not split one. */
	memcpy(addr, "x@", 2);
	for (size_t i = 2; i + 2 <= sizeof(addr) - 1; i += 2)
		memcpy(addr + i, "\xc3\xa9", 2);
	addr[sizeof(addr) - 1] = '\0';
	rc.diagnostic = diag;
	rc.final_recipient = addr;
	r.envid = envid;
	r.original_sender = addr;
	build_ok(label, &r, &out);
	parse(label, &out, &m);
	check_lines(label, &out, (size_t)(m.part_body[2].p - out.data));

	struct span st = m.part_body[1];
	const char *dc = memmem(st.p, st.len, "Diagnostic-Code: smtp; 550 ddd", 30);
	CHECK(label, dc != NULL);
	const char *lf = memchr(dc, '\n', (size_t)(st.p + st.len - dc));
	CHECK(label, lf != NULL && lf - dc == 998);
	const char *ei = memmem(st.p, st.len, "Original-Envelope-Id: eee", 25);
	CHECK(label, ei != NULL && (const char *)memchr(ei, '\n', 1000) - ei == 998);
	/* The address line stops before a sequence that does not fit: the line
	 * is "Final-Recipient: rfc822; x@" (27) + whole "é"s. */
	const char *fr = memmem(st.p, st.len, "Final-Recipient: rfc822; x@", 27);
	CHECK(label, fr != NULL);
	size_t frlen = (size_t)((const char *)memchr(fr, '\n', 1000) - fr);
	CHECK(label, frlen == 997 && (frlen - 27) % 2 == 0);
	/* To: <...> keeps its closing bracket. */
	const char *to = memmem(m.header.p, m.header.len, "\nTo: <x@", 8);
	CHECK(label, to != NULL);
	lf = memchr(to + 1, '\n', 1000);
	CHECK(label, lf != NULL && lf[-1] == '>' && lf - (to + 1) <= 998);
	/* UTF-8 in an address makes the parts that carry it 8bit. */
	CHECK(label, span_has_line(m.header, "Content-Transfer-Encoding: 8bit"));
	CHECK(label, span_has_line(m.part_header[1], "Content-Transfer-Encoding: 8bit"));
	CHECK(label, !span_has(m.part_header[2], "Content-Transfer-Encoding"));
	buf_free(&out);
}

static void test_8bit(void **state)
{
	static const char orig8[] = "Subject: =?utf-8?q?caf=C3=A9?=\n\nCaf\xc3\xa9 at noon\n";
	struct dsn_rcpt rc = rcpt_failed;
	struct dsn_report r = base_report(&rc, 1);
	struct buf out;
	struct parsed m;

	/* 8-bit body: part 3 and the message are labelled 8bit, the rest not. */
	r.original = orig8;
	r.original_len = sizeof(orig8) - 1;
	build_ok("8bit original", &r, &out);
	parse("8bit original", &out, &m);
	CHECK("8bit", span_has_line(m.header, "Content-Transfer-Encoding: 8bit"));
	CHECK("8bit", span_has_line(m.part_header[2], "Content-Transfer-Encoding: 8bit"));
	CHECK("8bit", !span_has(m.part_header[0], "Content-Transfer-Encoding"));
	CHECK("8bit", !span_has(m.part_header[1], "Content-Transfer-Encoding"));
	CHECK("8bit", span_eq(m.part_body[2], orig8, sizeof(orig8) - 1));
	buf_free(&out);

	/* Returned as headers only, the 8-bit body is gone and so is the label. */
	r.headers_only = true;
	build_ok("8bit original headers", &r, &out);
	parse("8bit original headers", &out, &m);
	CHECK("8bit hdrs", !span_has(m.header, "Content-Transfer-Encoding"));
	CHECK("8bit hdrs", !span_has(m.part_header[2], "Content-Transfer-Encoding"));
	buf_free(&out);

	/* 8-bit bytes in a remote reply become '?': the status part stays 7bit. */
	r.headers_only = false;
	r.original = ORIGINAL;
	r.original_len = sizeof(ORIGINAL) - 1;
	rc.diagnostic = "550 Benutzer unbekannt \xc3\xbc \xff";
	build_ok("8bit diagnostic", &r, &out);
	parse("8bit diagnostic", &out, &m);
	CHECK("8bit diag", span_has_line(m.part_body[1],
		"Diagnostic-Code: smtp; 550 Benutzer unbekannt ?? ?"));
	CHECK("8bit diag", !span_has(m.header, "Content-Transfer-Encoding"));
	buf_free(&out);

	/* A UTF-8 ORCPT shows only in the status part: it alone makes the
	 * message 8bit. */
	rc.diagnostic = rcpt_failed.diagnostic;
	rc.orcpt = "rfc822;b\xc3\xb8" "b@example.com";
	build_ok("8bit orcpt", &r, &out);
	parse("8bit orcpt", &out, &m);
	CHECK("8bit orcpt", span_has_line(m.part_body[1],
		"Original-Recipient: rfc822;b\xc3\xb8" "b@example.com"));
	CHECK("8bit orcpt", span_has_line(m.part_header[1], "Content-Transfer-Encoding: 8bit"));
	CHECK("8bit orcpt", span_has_line(m.header, "Content-Transfer-Encoding: 8bit"));
	CHECK("8bit orcpt", !span_has(m.part_header[0], "Content-Transfer-Encoding"));
	CHECK("8bit orcpt", !span_has(m.part_header[2], "Content-Transfer-Encoding"));
	buf_free(&out);
}

static void test_boundary_collision(void **state)
{
	const char *label = "boundary collision";
	char seen[12][128];
	struct buf orig, out;
	struct parsed m;
	struct dsn_report r = base_report(&rcpt_failed, 1);

	/* Each round puts every boundary used so far into the original; the
	 * next report must pick a new one. Past the first few candidates the
	 * boundary carries a hash of the content. */
	buf_init(&orig, 1 << 20);
	assert_int_equal(buf_append_str(&orig, "Subject: boundaries\n\n"), 0);
	for (size_t round = 0; round < N_ELEMENTS(seen); round++) {
		r.original = orig.data;
		r.original_len = orig.len;
		build_ok(label, &r, &out);
		parse(label, &out, &m);
		CHECK(label, strstr(m.boundary, QID) != NULL);
		CHECK(label, memmem(orig.data, orig.len, m.boundary, strlen(m.boundary)) == NULL);
		CHECK(label, !span_has(m.part_body[0], m.boundary));
		CHECK(label, !span_has(m.part_body[1], m.boundary));
		CHECK(label, span_eq(m.part_body[2], orig.data, orig.len));
		for (size_t j = 0; j < round; j++)
			CHECK(label, strcmp(seen[j], m.boundary) != 0);
		snprintf(seen[round], sizeof(seen[round]), "%s", m.boundary);
		assert_int_equal(buf_printf(&orig, "--%s\n", m.boundary), 0);
		buf_free(&out);
	}
	buf_free(&orig);

	/* A diagnostic holding the first candidate moves the boundary too. */
	struct dsn_rcpt rc = rcpt_failed;
	r = base_report(&rc, 1);
	char diag[256];
	snprintf(diag, sizeof(diag), "550 look: --%s", seen[0]);
	rc.diagnostic = diag;
	build_ok("boundary in diagnostic", &r, &out);
	parse("boundary in diagnostic", &out, &m);
	CHECK(label, strcmp(m.boundary, seen[0]) != 0);
	buf_free(&out);
}

static void test_pure(void **state)
{
	struct dsn_report r = base_report(&rcpt_failed, 1);
	struct buf a, b;

	/* Same input, same bytes; appended after what out already holds. */
	build_ok("pure", &r, &a);
	buf_init(&b, OUT_MAX);
	assert_int_equal(buf_append_str(&b, "prefix\n"), 0);
	assert_int_equal(dsn_build(&r, &b), 0);
	assert_int_equal(b.len, 7 + a.len);
	assert_memory_equal(b.data, "prefix\n", 7);
	assert_memory_equal(b.data + 7, a.data, a.len);

	/* Another time, another Date and Message-ID. */
	r.now = 0;
	r.arrival_date = 951782400;
	buf_reset(&b);
	assert_int_equal(dsn_build(&r, &b), 0);
	assert_non_null(strstr(b.data, "\nDate: Thu, 01 Jan 1970 00:00:00 +0000\n"));
	assert_non_null(strstr(b.data, "\nMessage-ID: <" QID ".dsn.0@" HOST ">\n"));
	assert_non_null(strstr(b.data, "\nArrival-Date: Tue, 29 Feb 2000 00:00:00 +0000\n"));
	buf_free(&a);
	buf_free(&b);
}

static void test_out_limit(void **state)
{
	struct dsn_report r = base_report(&rcpt_failed, 1);
	struct buf full, out;

	buf_init(&full, OUT_MAX);
	assert_int_equal(dsn_build(&r, &full), 0);
	/* One octet short: -1, and out is left as it was. */
	buf_init(&out, 5 + full.len - 1);
	assert_int_equal(buf_append_str(&out, "keep\n"), 0);
	assert_int_equal(dsn_build(&r, &out), -1);
	assert_int_equal(out.len, 5);
	assert_string_equal(out.data, "keep\n");
	buf_free(&out);
	/* Exactly enough. */
	buf_init(&out, 5 + full.len);
	assert_int_equal(buf_append_str(&out, "keep\n"), 0);
	assert_int_equal(dsn_build(&r, &out), 0);
	assert_int_equal(out.len, 5 + full.len);
	assert_memory_equal(out.data + 5, full.data, full.len);
	buf_free(&out);
	/* Tiny limits, out never used before. */
	for (size_t max = 0; max < 64; max += 7) {
		buf_init(&out, max);
		assert_int_equal(dsn_build(&r, &out), -1);
		assert_int_equal(out.len, 0);
		buf_free(&out);
	}
	buf_free(&full);
}

/* Invalid reports: -1 and out untouched. */
struct invalid_case {
	const char *label;
	void (*mutate)(struct dsn_report *r, struct dsn_rcpt *rc);
};

#define MUT(name, body) \
	static void mut_##name(struct dsn_report *r, struct dsn_rcpt *rc) { body; }
MUT(no_rcpts, r->nrcpts = 0)
MUT(null_rcpts, r->rcpts = NULL)
MUT(null_sender, r->original_sender = NULL)
MUT(empty_sender, r->original_sender = "")
MUT(null_qid, r->queue_id = NULL)
MUT(short_qid, r->queue_id = "0123")
MUT(lower_qid, r->queue_id = "0123456789abcdef")
MUT(bad_qid, r->queue_id = "0123456789ABCDE\n")
MUT(null_host, r->reporting_mta = NULL)
MUT(empty_host, r->reporting_mta = "")
MUT(host_space, r->reporting_mta = "mail example")
MUT(host_lf, r->reporting_mta = "mail\nBcc: x")
MUT(host_bracket, r->reporting_mta = "mail>")
MUT(null_original, r->original = NULL)
MUT(null_rcpt, rc->final_recipient = NULL)
MUT(empty_rcpt, rc->final_recipient = "")
MUT(bad_action, rc->action = (enum dsn_action)5)
MUT(neg_action, rc->action = (enum dsn_action)-1)
MUT(null_status, rc->status = NULL)
MUT(status_class, rc->status = "3.0.0")
MUT(status_short, rc->status = "5.1")
MUT(status_trailing, rc->status = "5.1.1 ")
MUT(status_long, rc->status = "5.1234.1")
MUT(status_empty_part, rc->status = "5..1")
MUT(status_empty, rc->status = "")
MUT(status_lf, rc->status = "5.1.1\n")

static const struct invalid_case invalid_cases[] = {
	{ "no recipients", mut_no_rcpts },
	{ "null recipients", mut_null_rcpts },
	{ "null sender", mut_null_sender },
	{ "null sender <>", mut_empty_sender },
	{ "null queue id", mut_null_qid },
	{ "short queue id", mut_short_qid },
	{ "lower-case queue id", mut_lower_qid },
	{ "queue id with LF", mut_bad_qid },
	{ "null host", mut_null_host },
	{ "empty host", mut_empty_host },
	{ "host with space", mut_host_space },
	{ "host with LF", mut_host_lf },
	{ "host with >", mut_host_bracket },
	{ "null original with a length", mut_null_original },
	{ "null recipient", mut_null_rcpt },
	{ "empty recipient", mut_empty_rcpt },
	{ "action out of range", mut_bad_action },
	{ "negative action", mut_neg_action },
	{ "null status", mut_null_status },
	{ "status class 3", mut_status_class },
	{ "status 5.1", mut_status_short },
	{ "status trailing space", mut_status_trailing },
	{ "status 4-digit subject", mut_status_long },
	{ "status empty subject", mut_status_empty_part },
	{ "empty status", mut_status_empty },
	{ "status with LF", mut_status_lf },
};

static void test_invalid(void **state)
{
	for (size_t i = 0; i < N_ELEMENTS(invalid_cases); i++) {
		const struct invalid_case *c = &invalid_cases[i];
		struct dsn_rcpt rcpts[2] = { rcpt_failed, rcpt_failed };
		struct dsn_report r = base_report(rcpts, 2);
		struct buf out;

		/* The second recipient is the bad one: every one is checked. */
		c->mutate(&r, &rcpts[1]);
		buf_init(&out, OUT_MAX);
		assert_int_equal(buf_append_str(&out, "keep"), 0);
		if (dsn_build(&r, &out) != -1)
			fail_msg("case '%s': accepted", c->label);
		CHECK(c->label, out.len == 4 && strcmp(out.data, "keep") == 0);
		buf_free(&out);
	}
	struct dsn_report r = base_report(&rcpt_failed, 1);
	struct buf out;
	buf_init(&out, OUT_MAX);
	assert_int_equal(dsn_build(NULL, &out), -1);
	assert_int_equal(dsn_build(&r, NULL), -1);
	assert_int_equal(out.len, 0);
	buf_free(&out);
}

static void test_valid_edges(void **state)
{
	/* What is accepted at the edges of validation. */
	static const char *const statuses[] = { "2.0.0", "4.4.7", "5.7.1", "5.999.999", "4.0.12" };
	for (size_t i = 0; i < N_ELEMENTS(statuses); i++) {
		struct dsn_rcpt rc = rcpt_failed;
		struct dsn_report r = base_report(&rc, 1);
		struct buf out;
		struct parsed m;
		char line[64];

		rc.status = statuses[i];
		r.reporting_mta = "Mail-1.example_test";
		build_ok(statuses[i], &r, &out);
		parse(statuses[i], &out, &m);
		snprintf(line, sizeof(line), "Status: %s", statuses[i]);
		CHECK(statuses[i], span_has_line(m.part_body[1], line));
		CHECK(statuses[i], span_has_line(m.part_body[1], "Reporting-MTA: dns; Mail-1.example_test"));
		buf_free(&out);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_actions),
		cmocka_unit_test(test_several_recipients),
		cmocka_unit_test(test_orcpt_envid),
		cmocka_unit_test(test_originals),
		cmocka_unit_test(test_huge_original),
		cmocka_unit_test(test_injection),
		cmocka_unit_test(test_long_values),
		cmocka_unit_test(test_8bit),
		cmocka_unit_test(test_boundary_collision),
		cmocka_unit_test(test_pure),
		cmocka_unit_test(test_out_limit),
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_valid_edges),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
