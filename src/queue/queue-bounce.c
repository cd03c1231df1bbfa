/*
 * queue-bounce.c — delivery status notifications (RFC 3461-3464).
 *
 * When a message's last recipient is final, the recipients that failed (and
 * those that asked for NOTIFY=SUCCESS, unless the next hop took that
 * request on) are reported in one DSN to the envelope sender; after
 * queue.delay_warning a "delayed" notice goes out once. Never to the null
 * sender, and every notice is sent with the null sender and
 * "Auto-Submitted: auto-replied" (RFC 3834), so notices never loop.
 *
 * A notice is a new message written into the spool and made durable before
 * the original's spool file is removed; the recipient is resolved with the
 * account database (read-only) so a local sender gets it in its Maildir.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "lib-account/account.h"
#include "lib-queue/dsn.h"
#include "lib/log.h"
#include "lib/util.h"
#include "queue/queue-private.h"

/* Does the RFC 3461 NOTIFY list hold word? NULL (not given) means the
 * default: FAILURE and DELAY. */
static bool queue_notify_has(const char *notify, const char *word)
{
	if (notify == NULL)
		return strcmp(word, "FAILURE") == 0 || strcmp(word, "DELAY") == 0;
	size_t len = strlen(word);
	for (const char *p = notify; *p != '\0';) {
		const char *comma = strchr(p, ',');
		size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);
		if (n == len && strncasecmp(p, word, len) == 0)
			return true;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	return false;
}

/* The RFC 3463 code inside a reply ("550 5.1.1 ..." or "5.1.1 ..."), or
 * fallback. */
static void queue_status_code(const char *reply, const char *fallback, char *out, size_t size)
{
	snprintf(out, size, "%s", fallback);
	if (reply == NULL)
		return;
	const char *p = reply;
	if (isdigit((unsigned char)p[0]) && isdigit((unsigned char)p[1]) &&
	    isdigit((unsigned char)p[2]) && p[3] == ' ')
		p += 4;
	size_t n = strspn(p, "0123456789.");
	if (n >= 5 && n < size && (p[0] == '2' || p[0] == '4' || p[0] == '5') && p[1] == '.' &&
	    (p[n] == ' ' || p[n] == '\0')) {
		memcpy(out, p, n);
		out[n] = '\0';
	}
}

/* Writes a notice to rcpt into the spool (durably) and queues it. 0 (also
 * when rcpt is a local address that no longer exists: nobody to tell), or
 * -1 when it could not be written. */
static int queue_inject(struct queue *q, const char *rcpt, const struct buf *msg)
{
	struct spool_envelope *env = calloc(1, sizeof(*env));
	struct account_targets t = { 0 };
	const char *error = "out of memory";
	if (env == NULL)
		goto fail;
	env->sender = strdup("");
	env->queued_at = time(NULL);
	queue_id_new(env->id);
	enum account_resolve_result res = q->accounts != NULL
		? account_resolve(q->accounts, rcpt, &t) : ACCOUNT_RESOLVE_NOT_LOCAL;
	if (res == ACCOUNT_RESOLVE_NO_SUCH_USER) {
		log_warn("notice to <%s> dropped: no such local user", rcpt);
		spool_envelope_free(&env);
		return 0;
	}
	size_t n = res == ACCOUNT_RESOLVE_OK ? t.count : 1;
	env->rcpts = calloc(n, sizeof(*env->rcpts));
	if (env->sender == NULL || env->rcpts == NULL)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		bool local = res == ACCOUNT_RESOLVE_OK && t.v[i].local;
		const char *addr = res == ACCOUNT_RESOLVE_OK ? t.v[i].address : rcpt;
		env->nrcpts++;
		env->rcpts[i].address = strdup(res == ACCOUNT_RESOLVE_OK && !local ? addr : rcpt);
		if (env->rcpts[i].address == NULL)
			goto fail;
		if (local && (env->rcpts[i].mailbox = strdup(addr)) == NULL)
			goto fail;
	}
	for (const char *c = rcpt; *c != '\0'; c++)
		env->smtputf8 |= (unsigned char)*c >= 0x80;
	for (size_t i = 0; i < msg->len && !env->body_8bit; i++)
		env->body_8bit = (unsigned char)msg->data[i] >= 0x80;

	struct spool_writer *w = NULL;
	if (spool_writer_create(q->cfg->spool_dir, env, &w, &error) < 0)
		goto fail;
	if (spool_writer_append(w, msg->data, msg->len, &error) < 0 ||
	    spool_writer_finish_write(w, &error) < 0 || spool_writer_sync(w, &error) < 0) {
		spool_writer_abort(&w);
		goto fail;
	}
	if (spool_sync_queue_dir(q->cfg->spool_dir) < 0) {
		error = "fsync of the queue directory failed";
		spool_writer_abort(&w);
		goto fail;
	}
	uint64_t size = spool_writer_size(w);
	spool_writer_close(&w);
	struct queue_msg *m = queue_msg_new(q, env);
	if (m == NULL) {
		/* On disk: the next start delivers it. */
		log_error("id=%s notice queued but out of memory; delivered after a restart",
			  env->id);
		spool_envelope_free(&env);
		account_targets_free(&t);
		return 0;
	}
	m->committed = true;
	m->size = size;
	struct qstatus *qs = queue_status(q);
	if (qs != NULL)
		qstatus_add_message(qs, env, size);
	log_info("id=%s notice to <%s> queued", m->id, rcpt);
	queue_make_ready(q, m);
	account_targets_free(&t);
	return 0;
fail:
	log_error("notice to <%s> not queued: %s", rcpt, error);
	spool_envelope_free(&env);
	account_targets_free(&t);
	return -1;
}

int queue_bounce(struct queue *q, struct queue_msg *m, bool final)
{
	const struct spool_envelope *env = m->env;
	if (env->sender == NULL || env->sender[0] == '\0')
		return 0;
	int ret = -1;
	struct dsn_rcpt *rr = calloc(env->nrcpts, sizeof(*rr));
	char (*codes)[16] = calloc(env->nrcpts, sizeof(*codes));
	char (*hosts)[256] = calloc(env->nrcpts, sizeof(*hosts));
	size_t n = 0;
	size_t *which = calloc(env->nrcpts, sizeof(*which));
	time_t now = time(NULL);
	if (rr == NULL || codes == NULL || hosts == NULL || which == NULL)
		goto out;
	for (size_t i = 0; i < env->nrcpts; i++) {
		const struct queue_rcpt *r = &m->rcpts[i];
		const char *notify = env->rcpts[i].notify;
		struct dsn_rcpt *d = &rr[n];
		if (r->reported || queue_notify_has(notify, "NEVER"))
			continue;
		if (final && r->state == RCPT_FAILED && queue_notify_has(notify, "FAILURE")) {
			d->action = DSN_ACTION_FAILED;
			queue_status_code(r->last_reply,
					  r->final == QS_EXPIRED ? "4.4.7" : "5.0.0", codes[n],
					  sizeof(codes[n]));
		} else if (final && r->state == RCPT_DONE && queue_notify_has(notify, "SUCCESS") &&
			   !r->peer_dsn) {
			d->action = queue_rcpt_is_remote(m, i) ? DSN_ACTION_RELAYED
							       : DSN_ACTION_DELIVERED;
			snprintf(codes[n], sizeof(codes[n]), "2.0.0");
		} else if (!final && (r->state == RCPT_PENDING || r->state == RCPT_INFLIGHT) &&
			   queue_notify_has(notify, "DELAY")) {
			d->action = DSN_ACTION_DELAYED;
			queue_status_code(r->last_reply, "4.0.0", codes[n], sizeof(codes[n]));
			if (codes[n][0] != '4')
				snprintf(codes[n], sizeof(codes[n]), "4.0.0");
			d->will_retry_until = env->queued_at + (int64_t)q->cfg->queue_lifetime;
		} else {
			continue;
		}
		d->final_recipient = env->rcpts[i].address;
		d->orcpt = env->rcpts[i].orcpt;
		d->status = codes[n];
		d->diagnostic = r->last_reply;
		if (r->remote_host != NULL) {
			/* "mx.example.com[127.0.0.2]" -> "mx.example.com" */
			snprintf(hosts[n], sizeof(hosts[n]), "%s", r->remote_host);
			char *br = strchr(hosts[n], '[');
			if (br != NULL && br != hosts[n])
				*br = '\0';
			d->remote_mta = hosts[n];
		}
		d->last_attempt = r->attempts > 0 || r->state != RCPT_PENDING ? (int64_t)now : 0;
		which[n++] = i;
	}
	if (n == 0) {
		ret = 0;
		goto out;
	}

	int fd;
	off_t off;
	size_t len;
	const char *error;
	struct spool_envelope *orig_env;
	if (spool_read(q->cfg->spool_dir, m->id, &orig_env, &fd, &off, &len, &error) < 0) {
		log_error("id=%s notice not sent: cannot read the original: %s", m->id, error);
		goto out;
	}
	spool_envelope_free(&orig_env);
	size_t want = len > DSN_FULL_MAX ? 256 * 1024 : len;
	char *orig = malloc(want + 1);
	ssize_t got = orig != NULL ? pread(fd, orig, want, off) : -1;
	close(fd);
	if (got < 0) {
		log_error("id=%s notice not sent: cannot read the original", m->id);
		free(orig);
		goto out;
	}
	struct dsn_report rep = {
		.reporting_mta = q->cfg->hostname,
		.queue_id = m->id,
		.envid = env->envid,
		.original_sender = env->sender,
		.arrival_date = env->queued_at,
		.now = now,
		.rcpts = rr,
		.nrcpts = n,
		.headers_only = (env->ret != NULL && strcasecmp(env->ret, "HDRS") == 0) ||
				len > DSN_FULL_MAX,
		.original = orig,
		.original_len = (size_t)got,
	};
	struct buf out;
	buf_init(&out, DSN_FULL_MAX + 1024 * 1024);
	if (dsn_build(&rep, &out) < 0) {
		/* Not retryable: the report itself is invalid. */
		log_error("id=%s notice not built", m->id);
		ret = 0;
	} else {
		ret = queue_inject(q, env->sender, &out);
	}
	for (size_t k = 0; ret == 0 && final && k < n; k++)
		m->rcpts[which[k]].reported = true;
	buf_free(&out);
	free(orig);
out:
	free(rr);
	free(codes);
	free(hosts);
	free(which);
	return ret;
}
