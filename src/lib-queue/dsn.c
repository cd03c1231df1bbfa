/*
 * dsn.c — delivery status notifications: the RFC 3464 multipart/report the
 * queue process sends back to a sender on failure, delay or success.
 *
 * A library function with no I/O; the queue process runs it and spools the
 * result. Owns nothing beyond the call. RFC 3461-3464, RFC 6522, RFC 3834,
 * RFC 5322; see dsn.h for the message layout.
 *
 * Why the parts are built before the message: the MIME boundary must not
 * occur in any part, and the parts carry text chosen by others (the remote
 * reply, the ENVID, the original message). Building them first lets us test
 * each boundary candidate against the exact bytes that will follow it.
 */
#include "lib-queue/dsn.h"

#include "lib/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* RFC 5322 2.1.1: a line is at most 998 octets without its line end. */
#define DSN_LINE_MAX            998
/* RFC 2046 5.1.1: a boundary is 1 to 70 characters. */
#define DSN_BOUNDARY_MAX        70
/* Boundary candidates tried before giving up (each one a scan of the parts);
 * from DSN_BOUNDARY_HASHED on, candidates also carry a hash of the parts, so
 * an original cannot list them in advance. */
#define DSN_BOUNDARY_TRIES      64
#define DSN_BOUNDARY_HASHED     4
#define DSN_DATE_MAX            64

static const char *const dsn_action_names[] = {
	[DSN_ACTION_FAILED] = "failed",
	[DSN_ACTION_DELAYED] = "delayed",
	[DSN_ACTION_DELIVERED] = "delivered",
	[DSN_ACTION_RELAYED] = "relayed",
	[DSN_ACTION_EXPANDED] = "expanded",
};
#define DSN_ACTION_COUNT (sizeof(dsn_action_names) / sizeof(dsn_action_names[0]))

/* ---- validation ---- */

static bool dsn_host_valid(const char *s)
{
	size_t i;

	if (s == NULL)
		return false;
	for (i = 0; s[i] != '\0'; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'))
			return false;
	}
	return i > 0 && i <= 255;
}

/* 1 to 3 digits at *p; moves p past them. */
static bool dsn_digits(const char **p)
{
	size_t n = 0;

	while (n < 4 && (*p)[n] >= '0' && (*p)[n] <= '9')
		n++;
	*p += n;
	return n >= 1 && n <= 3;
}

/* RFC 3463 2: status-code = class "." subject "." detail, class 2, 4 or 5. */
static bool dsn_status_valid(const char *s)
{
	if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
		return false;
	s += 2;
	if (!dsn_digits(&s) || *s != '.')
		return false;
	s++;
	return dsn_digits(&s) && *s == '\0';
}

static bool dsn_report_valid(const struct dsn_report *r)
{
	if (!dsn_host_valid(r->reporting_mta) || r->queue_id == NULL ||
	    !queue_id_valid(r->queue_id) || r->original_sender == NULL ||
	    r->original_sender[0] == '\0' || r->rcpts == NULL || r->nrcpts == 0 ||
	    (r->original == NULL && r->original_len > 0))
		return false;
	for (size_t i = 0; i < r->nrcpts; i++) {
		const struct dsn_rcpt *rc = &r->rcpts[i];
		if (rc->final_recipient == NULL || rc->final_recipient[0] == '\0' ||
		    (unsigned)rc->action >= DSN_ACTION_COUNT || !dsn_status_valid(rc->status))
			return false;
	}
	return true;
}

/* ---- values and lines ---- */

/* RFC 5322 3.3 date-time in UTC, with English names whatever the locale. */
static void dsn_date(int64_t t, char date_r[DSN_DATE_MAX])
{
	static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t tt = (time_t)t;
	struct tm tm;

	if ((int64_t)tt != t || gmtime_r(&tt, &tm) == NULL) {
		tt = 0;
		gmtime_r(&tt, &tm);
	}
	snprintf(date_r, DSN_DATE_MAX, "%s, %02d %s %04d %02d:%02d:%02d +0000",
		 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
		 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/*
 * Appends s to b, at most *room octets (decremented). Each run of control
 * characters (CR, LF, TAB, NUL, DEL...) becomes one space: an inserted value
 * can never end a line. With ascii, bytes >= 0x80 become '?'; without, a
 * UTF-8 sequence is kept whole or not at all. The room keeps the line within
 * DSN_LINE_MAX: what does not fit is dropped.
 */
static int dsn_put(struct buf *b, const char *s, size_t *room, bool ascii)
{
	char tmp[DSN_LINE_MAX];
	size_t n = 0;
	bool in_ctl = false;

	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		unsigned char c = *p;
		size_t need = 1;

		if (c < 0x20 || c == 0x7f) {
			if (in_ctl)
				continue;
			in_ctl = true;
			c = ' ';
		} else {
			in_ctl = false;
		}
		if (c >= 0x80) {
			if (ascii)
				c = '?';
			else if (c >= 0xf0)
				need = 4;
			else if (c >= 0xe0)
				need = 3;
			else if (c >= 0xc0)
				need = 2;
		}
		if (n + need > *room || n >= sizeof(tmp))
			break;
		tmp[n++] = (char)c;
	}
	*room -= n;
	return buf_append(b, tmp, n);
}

/* One field line "prefix VALUE suffix\n" within DSN_LINE_MAX octets. */
static int dsn_line(struct buf *b, const char *prefix, const char *value,
		    const char *suffix, bool ascii)
{
	size_t room = DSN_LINE_MAX - strlen(suffix);

	if (dsn_put(b, prefix, &room, true) < 0 || dsn_put(b, value, &room, ascii) < 0 ||
	    buf_append_str(b, suffix) < 0 || buf_append(b, "\n", 1) < 0)
		return -1;
	return 0;
}

static bool dsn_has_8bit(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)p[i] >= 0x80)
			return true;
	}
	return false;
}

static bool dsn_has_action(const struct dsn_report *r, enum dsn_action action)
{
	for (size_t i = 0; i < r->nrcpts; i++) {
		if (r->rcpts[i].action == action)
			return true;
	}
	return false;
}

/* Length of the original's header block: up to and including the line end
 * before the first empty line (or all of it), at most DSN_FULL_MAX cut at a
 * line end. 0 when the message starts with an empty line. */
static size_t dsn_header_block_len(const char *msg, size_t len)
{
	const char *end;
	size_t hlen;

	if (len == 0 || msg[0] == '\n')
		return 0;
	end = memmem(msg, len, "\n\n", 2);
	hlen = end == NULL ? len : (size_t)(end - msg) + 1;
	if (hlen > DSN_FULL_MAX) {
		end = memrchr(msg, '\n', DSN_FULL_MAX);
		hlen = end == NULL ? 0 : (size_t)(end - msg) + 1;
	}
	return hlen;
}

/* ---- part 1: text/plain for the sender ---- */

static const char *const dsn_text_intro[] = {
	[DSN_ACTION_FAILED] =
		"Your message could not be delivered to one or more recipients.\n"
		"The reasons are listed below. This is a permanent error: the mail\n"
		"system has given up on these recipients.\n",
	[DSN_ACTION_DELAYED] =
		"Delivery of your message to one or more recipients has been delayed.\n"
		"This is only a warning: you do not need to send the message again.\n",
	[DSN_ACTION_DELIVERED] =
		"Your message was successfully delivered to the following recipients:\n",
	[DSN_ACTION_RELAYED] =
		"Your message was relayed to the following recipients. Their mail\n"
		"systems may not send further delivery reports:\n",
	[DSN_ACTION_EXPANDED] =
		"Your message was delivered to the following lists or aliases. Their\n"
		"members' mail systems may not send further delivery reports:\n",
};

/* "  <bob@example.com> (5.1.1): host mx.example.com said: 550 No such user" */
static int dsn_text_rcpt(struct buf *b, const struct dsn_rcpt *rc)
{
	size_t room = DSN_LINE_MAX;
	char date[DSN_DATE_MAX];
	int ret = 0;

	ret |= dsn_put(b, "  <", &room, true);
	ret |= dsn_put(b, rc->final_recipient, &room, false);
	ret |= dsn_put(b, "> (", &room, true);
	ret |= dsn_put(b, rc->status, &room, true);
	ret |= dsn_put(b, ")", &room, true);
	if (rc->diagnostic != NULL) {
		ret |= dsn_put(b, ": ", &room, true);
		if (rc->remote_mta != NULL) {
			ret |= dsn_put(b, "host ", &room, true);
			ret |= dsn_put(b, rc->remote_mta, &room, true);
			ret |= dsn_put(b, " said: ", &room, true);
		}
		ret |= dsn_put(b, rc->diagnostic, &room, true);
	} else if (rc->remote_mta != NULL) {
		ret |= dsn_put(b, ": via host ", &room, true);
		ret |= dsn_put(b, rc->remote_mta, &room, true);
	}
	if (rc->action == DSN_ACTION_DELAYED && rc->will_retry_until != 0) {
		dsn_date(rc->will_retry_until, date);
		ret |= dsn_put(b, "; will retry until ", &room, true);
		ret |= dsn_put(b, date, &room, true);
	}
	ret |= buf_append(b, "\n", 1);
	return ret < 0 ? -1 : 0;
}

static int dsn_build_text(const struct dsn_report *r, struct buf *b)
{
	char date[DSN_DATE_MAX];
	int64_t retry_until = 0;
	int ret = 0;

	ret |= dsn_line(b, "This is the mail system at host ", r->reporting_mta, ".", true);
	for (size_t a = 0; a < DSN_ACTION_COUNT; a++) {
		if (!dsn_has_action(r, (enum dsn_action)a))
			continue;
		ret |= buf_append(b, "\n", 1);
		ret |= buf_append_str(b, dsn_text_intro[a]);
		if (a == DSN_ACTION_DELAYED) {
			for (size_t i = 0; i < r->nrcpts; i++) {
				if (r->rcpts[i].action == DSN_ACTION_DELAYED &&
				    r->rcpts[i].will_retry_until > retry_until)
					retry_until = r->rcpts[i].will_retry_until;
			}
			if (retry_until != 0) {
				dsn_date(retry_until, date);
				ret |= dsn_line(b, "The mail system will keep trying until ", date,
						".", true);
			}
		}
		ret |= buf_append(b, "\n", 1);
		for (size_t i = 0; i < r->nrcpts; i++) {
			if (r->rcpts[i].action == (enum dsn_action)a)
				ret |= dsn_text_rcpt(b, &r->rcpts[i]);
		}
	}
	ret |= buf_append(b, "\n", 1);
	ret |= dsn_line(b, "The queue id of your message was ", r->queue_id, ".", true);
	return ret < 0 ? -1 : 0;
}

/* ---- part 2: message/delivery-status (RFC 3464 2.2, 2.3) ---- */

static int dsn_build_status(const struct dsn_report *r, struct buf *b)
{
	char date[DSN_DATE_MAX];
	int ret = 0;

	ret |= dsn_line(b, "Reporting-MTA: dns; ", r->reporting_mta, "", true);
	ret |= dsn_line(b, "X-Postern-Queue-ID: ", r->queue_id, "", true);
	if (r->envid != NULL)
		ret |= dsn_line(b, "Original-Envelope-Id: ", r->envid, "", true);
	dsn_date(r->arrival_date, date);
	ret |= dsn_line(b, "Arrival-Date: ", date, "", true);

	for (size_t i = 0; i < r->nrcpts; i++) {
		const struct dsn_rcpt *rc = &r->rcpts[i];

		ret |= buf_append(b, "\n", 1);
		/* RFC 3461 4.2: ORCPT is "addr-type;address"; one without a
		 * type is taken as rfc822 (RFC 3464 2.3.1 needs the type). */
		if (rc->orcpt != NULL)
			ret |= dsn_line(b, strchr(rc->orcpt, ';') != NULL ?
					"Original-Recipient: " : "Original-Recipient: rfc822;",
					rc->orcpt, "", false);
		ret |= dsn_line(b, "Final-Recipient: rfc822; ", rc->final_recipient, "", false);
		ret |= dsn_line(b, "Action: ", dsn_action_names[rc->action], "", true);
		ret |= dsn_line(b, "Status: ", rc->status, "", true);
		if (rc->remote_mta != NULL)
			ret |= dsn_line(b, "Remote-MTA: dns; ", rc->remote_mta, "", true);
		if (rc->diagnostic != NULL)
			ret |= dsn_line(b, "Diagnostic-Code: smtp; ", rc->diagnostic, "", true);
		if (rc->last_attempt != 0) {
			dsn_date(rc->last_attempt, date);
			ret |= dsn_line(b, "Last-Attempt-Date: ", date, "", true);
		}
		/* RFC 3464 2.3.9: only with Action: delayed. */
		if (rc->action == DSN_ACTION_DELAYED && rc->will_retry_until != 0) {
			dsn_date(rc->will_retry_until, date);
			ret |= dsn_line(b, "Will-Retry-Until: ", date, "", true);
		}
	}
	return ret < 0 ? -1 : 0;
}

/* ---- boundary ---- */

/* FNV-1a, 64 bits: not a secret, only unpredictable enough that an original
 * cannot contain the candidates derived from its own bytes. */
static uint64_t dsn_fnv(uint64_t h, const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

struct dsn_span {
	const char *p;
	size_t len;
};

static int dsn_pick_boundary(const struct dsn_report *r, const struct dsn_span *parts,
			     size_t nparts, char boundary_r[DSN_BOUNDARY_MAX + 1])
{
	uint64_t hash = 0xcbf29ce484222325ULL;

	for (unsigned n = 0; n < DSN_BOUNDARY_TRIES; n++) {
		/* "=_" cannot occur in quoted-printable text. */
		int len;
		if (n == DSN_BOUNDARY_HASHED) {
			for (size_t i = 0; i < nparts; i++)
				hash = dsn_fnv(hash, parts[i].p, parts[i].len);
		}
		if (n < DSN_BOUNDARY_HASHED)
			len = snprintf(boundary_r, DSN_BOUNDARY_MAX + 1, "=_postern-%s-%" PRId64 "-%u",
				       r->queue_id, r->now, n);
		else
			len = snprintf(boundary_r, DSN_BOUNDARY_MAX + 1,
				       "=_postern-%s-%" PRId64 "-%u-%016" PRIx64, r->queue_id,
				       r->now, n, dsn_fnv(hash, (const char *)&n, sizeof(n)));
		if (len < 0 || len > DSN_BOUNDARY_MAX)
			return -1;
		bool found = false;
		for (size_t i = 0; i < nparts && !found; i++)
			found = memmem(parts[i].p, parts[i].len, boundary_r, (size_t)len) != NULL;
		if (!found)
			return 0;
	}
	return -1;
}

/* ---- the message ---- */

static const char *dsn_subject(const struct dsn_report *r)
{
	if (dsn_has_action(r, DSN_ACTION_FAILED))
		return "Undelivered Mail Returned to Sender";
	if (dsn_has_action(r, DSN_ACTION_DELAYED))
		return "Delayed Mail (still being retried)";
	return "Successful Mail Delivery Report";
}

static int dsn_part_header(struct buf *b, const char *boundary, const char *description,
			   const char *type, bool is_8bit)
{
	int ret = 0;

	ret |= buf_printf(b, "--%s\nContent-Description: %s\nContent-Type: %s\n", boundary,
			  description, type);
	if (is_8bit)
		ret |= buf_append_str(b, "Content-Transfer-Encoding: 8bit\n");
	ret |= buf_append(b, "\n", 1);
	return ret < 0 ? -1 : 0;
}

static int dsn_assemble(const struct dsn_report *r, const struct dsn_span *parts,
			bool attach_full, struct buf *out)
{
	char boundary[DSN_BOUNDARY_MAX + 1];
	char date[DSN_DATE_MAX];
	bool text_8bit = dsn_has_8bit(parts[0].p, parts[0].len);
	bool status_8bit = dsn_has_8bit(parts[1].p, parts[1].len);
	bool orig_8bit = dsn_has_8bit(parts[2].p, parts[2].len);
	const char *orig_description;
	int ret = 0;

	if (dsn_pick_boundary(r, parts, 3, boundary) < 0)
		return -1;
	if (!attach_full)
		orig_description = "Message headers";
	else if (dsn_has_action(r, DSN_ACTION_FAILED))
		orig_description = "Undelivered message";
	else
		orig_description = "Original message";

	ret |= buf_printf(out, "From: \"Mail Delivery System\" <MAILER-DAEMON@%s>\n",
			  r->reporting_mta);
	ret |= dsn_line(out, "To: <", r->original_sender, ">", false);
	ret |= dsn_line(out, "Subject: ", dsn_subject(r), "", true);
	dsn_date(r->now, date);
	ret |= dsn_line(out, "Date: ", date, "", true);
	/* Queue id and host name are validated: no control characters, and
	 * short enough for one line. */
	ret |= buf_printf(out, "Message-ID: <%s.dsn.%" PRId64 "@%s>\n", r->queue_id, r->now,
			  r->reporting_mta);
	/* RFC 3834 5: a report is an automatic reply; others must not answer it. */
	ret |= buf_append_str(out, "Auto-Submitted: auto-replied\n");
	ret |= buf_append_str(out, "MIME-Version: 1.0\n");
	ret |= buf_printf(out, "Content-Type: multipart/report; report-type=delivery-status;\n"
			  "\tboundary=\"%s\"\n", boundary);
	if (text_8bit || status_8bit || orig_8bit)
		ret |= buf_append_str(out, "Content-Transfer-Encoding: 8bit\n");
	ret |= buf_append_str(out, "\nThis is a MIME-encapsulated message.\n\n");

	ret |= dsn_part_header(out, boundary, "Notification", "text/plain; charset=utf-8",
			       text_8bit);
	ret |= buf_append(out, parts[0].p, parts[0].len);
	ret |= buf_append(out, "\n", 1);
	ret |= dsn_part_header(out, boundary, "Delivery report", "message/delivery-status",
			       status_8bit);
	ret |= buf_append(out, parts[1].p, parts[1].len);
	ret |= buf_append(out, "\n", 1);
	ret |= dsn_part_header(out, boundary, orig_description,
			       attach_full ? "message/rfc822" : "text/rfc822-headers", orig_8bit);
	ret |= buf_append(out, parts[2].p, parts[2].len);
	/* RFC 2046 5.1.1: the line end before a delimiter belongs to it. */
	ret |= buf_printf(out, "\n--%s--\n", boundary);
	return ret < 0 ? -1 : 0;
}

int dsn_build(const struct dsn_report *r, struct buf *out)
{
	struct buf text, status;
	struct dsn_span parts[3];
	size_t start;
	bool attach_full;
	int ret = -1;

	if (r == NULL || out == NULL || !dsn_report_valid(r))
		return -1;
	start = out->len;
	buf_init(&text, out->max);
	buf_init(&status, out->max);
	if (dsn_build_text(r, &text) < 0 || dsn_build_status(r, &status) < 0)
		goto done;

	attach_full = !r->headers_only && r->original_len <= DSN_FULL_MAX;
	parts[0] = (struct dsn_span){ text.data, text.len };
	parts[1] = (struct dsn_span){ status.data, status.len };
	parts[2].p = r->original != NULL ? r->original : "";
	parts[2].len = attach_full ? r->original_len :
		dsn_header_block_len(parts[2].p, r->original_len);
	ret = dsn_assemble(r, parts, attach_full, out);
done:
	if (ret < 0 && out->data != NULL) {
		out->len = start;
		out->data[start] = '\0';
	}
	buf_free(&text);
	buf_free(&status);
	return ret;
}
