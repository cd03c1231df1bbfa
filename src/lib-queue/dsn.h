/*
 * dsn.h — builds delivery status notifications (RFC 3464 multipart/report).
 *
 * A pure function over its arguments: no I/O, no clock, no allocation except
 * through the caller's struct buf. The queue process calls it on a final
 * failure, on expiry, for delay warnings and for NOTIFY=SUCCESS, and spools
 * the result as a new message from the null sender (<>) to original_sender.
 *
 * RFC 3461 (SMTP DSN: ENVID, ORCPT, RET), RFC 3462/6522 (multipart/report),
 * RFC 3463 (enhanced status codes), RFC 3464 (message/delivery-status),
 * RFC 3834 (Auto-Submitted), RFC 5322 (message format).
 *
 * Every string taken from the report is inserted with control characters
 * (CR, LF, TAB, NUL...) replaced by a space, so a remote reply or an ENVID
 * cannot add header fields or MIME parts. Diagnostic, status, host names and
 * ENVID are also limited to printable ASCII (other bytes become '?');
 * addresses keep UTF-8 (SMTPUTF8 senders and recipients). Every generated
 * line is at most 998 octets (RFC 5322 2.1.1): long values are truncated.
 *
 * The attached original is copied byte for byte. When it, or an address,
 * holds 8-bit bytes, the parts that carry them and the top-level message are
 * labelled "Content-Transfer-Encoding: 8bit": the DSN then needs an 8BITMIME
 * (or SMTPUTF8) capable next hop, like the original did.
 */
#ifndef POSTERN_DSN_H
#define POSTERN_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

/* RFC 3464 2.3.3 Action field values. */
enum dsn_action {
	DSN_ACTION_FAILED,
	DSN_ACTION_DELAYED,
	DSN_ACTION_DELIVERED,
	DSN_ACTION_RELAYED,
	DSN_ACTION_EXPANDED,
};

/* One recipient's per-recipient fields (RFC 3464 2.3). All strings are
 * borrowed for the duration of dsn_build() only. */
struct dsn_rcpt {
	const char *final_recipient;  /* the address as given in RCPT TO ("bob@example.com") */
	const char *orcpt;            /* RFC 3461 ORCPT as received, decoded: "rfc822;bob@x" (or NULL) */
	enum dsn_action action;
	const char *status;           /* RFC 3463 "5.1.1" */
	const char *remote_mta;       /* "mx.example.com" (DNS name) or NULL */
	const char *diagnostic;       /* remote reply on one line "550 5.1.1 No such user", or NULL */
	int64_t last_attempt;         /* unix seconds, 0 = none */
	int64_t will_retry_until;     /* unix seconds, for DELAYED; 0 = omit */
};

/* One report: the per-message fields, the recipients it is about and the
 * original message. All pointers are borrowed for the duration of the call. */
struct dsn_report {
	const char *reporting_mta;    /* our hostname */
	const char *queue_id;         /* 16 hex */
	const char *envid;            /* RFC 3461 ENVID (decoded) or NULL */
	const char *original_sender;  /* envelope sender of the original; never "" (no DSN to <>) */
	int64_t arrival_date;         /* unix seconds */
	int64_t now;                  /* unix seconds: Date: of the report */
	const struct dsn_rcpt *rcpts;
	size_t nrcpts;                /* >= 1 */
	bool headers_only;            /* RET=HDRS: attach text/rfc822-headers instead of the message */
	const char *original;         /* the original message as spooled: LF line endings */
	size_t original_len;
};

/* Larger originals are returned as headers only; a header block (up to the
 * first empty line) larger than this is cut at its last line end below it. */
#define DSN_FULL_MAX (10u * 1024 * 1024)

/*
 * Builds the complete DSN message (header + body) and appends it to out,
 * with LF line endings (the spool's convention; the SMTP client turns LF
 * into CRLF).
 *
 * Header: From "Mail Delivery System" <MAILER-DAEMON@reporting_mta>,
 * To <original_sender>, a Subject chosen by the most severe action present
 * (failed, then delayed, then the others), Date (UTC), Message-ID
 * <QUEUEID.dsn.NOW@reporting_mta>, Auto-Submitted: auto-replied, and
 * multipart/report; report-type=delivery-status with three parts: a
 * text/plain explanation, the message/delivery-status fields, and the
 * original as message/rfc822 (or its header block as text/rfc822-headers
 * when headers_only is set or original_len > DSN_FULL_MAX). The boundary
 * contains the queue id and occurs nowhere in the parts.
 *
 * Returns 0, or -1 with out unchanged when out's maximum is hit or the
 * report is invalid: NULL report or out, reporting_mta not a host name,
 * queue_id not valid (queue_id_valid()), original_sender NULL or "", no
 * recipients, a recipient without final_recipient, an action out of range,
 * a status that is not RFC 3463 "class.subject.detail" with class 2, 4 or 5,
 * or original NULL with original_len > 0.
 */
int dsn_build(const struct dsn_report *r, struct buf *out);

#endif
