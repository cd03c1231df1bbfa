/*
 * queue.c — the queue process: receives messages from smtpd workers into
 * the spool, makes them durable with group commit before any 250 goes out,
 * hands local recipients to the deliverer, retries temporary failures, and
 * removes a spool file once every local recipient has its copy.
 *
 * Owns DATA/spool/ (the only writer). Principle 1 of DESIGN.md lives here:
 * a transaction's END is answered only after its spool file and the queue
 * directory are fsync'ed. The fsyncs run on one commit thread; while it
 * syncs one batch the next batch gathers, so N concurrent sessions share
 * about one journal commit (group commit).
 *
 * Remote recipients are scheduled into destination jobs for the
 * deliverer's SMTP client (queue-remote.c); failures and expiry produce
 * delivery status notifications (queue-bounce.c). Every recipient's state
 * is kept in the status store (SPOOL_DIR/status.db), which also carries
 * the retry schedule across restarts.
 */
#include "queue/queue.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <event2/event.h>

#include "lib/buf.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/util.h"
#include "lib/workpool.h"
#include "lib-account/account.h"
#include "lib-queue/spool.h"
#include "queue/queue-private.h"

static unsigned queue_hash_str(const char *s)
{
	unsigned h = 2166136261u;
	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h & (QUEUE_HASH_SIZE - 1);
}

static unsigned queue_hash_txn(const struct ipc_conn *conn, uint64_t reqid)
{
	uint64_t h = (uint64_t)(uintptr_t)conn ^ (reqid * 0x9E3779B97F4A7C15ull);
	return (unsigned)(h >> 20) & (QUEUE_HASH_SIZE - 1);
}

struct queue_msg *queue_find_id(struct queue *q, const char *id)
{
	for (struct queue_msg *m = q->by_id[queue_hash_str(id)]; m != NULL; m = m->id_next) {
		if (strcmp(m->id, id) == 0)
			return m;
	}
	return NULL;
}

static struct queue_msg *queue_find_txn(struct queue *q, struct ipc_conn *conn, uint64_t reqid)
{
	for (struct queue_msg *m = q->by_txn[queue_hash_txn(conn, reqid)]; m != NULL;
	     m = m->txn_next) {
		if (m->owner == conn && m->reqid == reqid)
			return m;
	}
	return NULL;
}

static void queue_unlink_txn(struct queue *q, struct queue_msg *m)
{
	if (m->owner == NULL)
		return;
	struct queue_msg **p = &q->by_txn[queue_hash_txn(m->owner, m->reqid)];
	for (; *p != NULL; p = &(*p)->txn_next) {
		if (*p == m) {
			*p = m->txn_next;
			break;
		}
	}
	m->txn_next = NULL;
	m->owner = NULL;
}

static void queue_unready(struct queue *q, struct queue_msg *m);

static void queue_msg_free(struct queue *q, struct queue_msg *m)
{
	queue_unready(q, m);
	struct queue_msg **p = &q->by_id[queue_hash_str(m->id)];
	for (; *p != NULL; p = &(*p)->id_next) {
		if (*p == m) {
			*p = m->id_next;
			q->nmsgs--;
			break;
		}
	}
	queue_unlink_txn(q, m);
	if (m->writer != NULL)
		spool_writer_abort(&m->writer);
	for (size_t i = 0; m->rcpts != NULL && i < m->env->nrcpts; i++) {
		free(m->rcpts[i].last_reply);
		free(m->rcpts[i].remote_host);
	}
	spool_envelope_free(&m->env);
	free(m->rcpts);
	free(m);
}

struct queue_msg *queue_msg_new(struct queue *q, struct spool_envelope *env)
{
	struct queue_msg *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return NULL;
	m->rcpts = calloc(env->nrcpts + 1, sizeof(*m->rcpts));
	if (m->rcpts == NULL) {
		free(m);
		return NULL;
	}
	memcpy(m->id, env->id, sizeof(m->id));
	m->env = env;
	unsigned h = queue_hash_str(m->id);
	m->id_next = q->by_id[h];
	q->by_id[h] = m;
	q->nmsgs++;
	return m;
}

/* ---- removing finished spool files ---- */

static void queue_unlink_run(struct workpool_job *job)
{
	struct queue_unlink *u = (struct queue_unlink *)job;
	for (size_t i = 0; i < u->n; i++)
		spool_remove(u->q->cfg->spool_dir, u->ids[i]);
}

static void queue_unlink_kick(struct queue *q);

static void queue_unlink_done(struct workpool_job *job)
{
	struct queue_unlink *u = (struct queue_unlink *)job;
	u->busy = false;
	u->n = 0;
	queue_unlink_kick(u->q);
}

/* Hands the waiting ids to the unlink thread (one batch at a time). */
static void queue_unlink_kick(struct queue *q)
{
	struct queue_unlink *u = &q->unlink;
	if (u->busy || q->unlink_n == 0)
		return;
	if (q->unlink_pool == NULL) {
		for (size_t i = 0; i < q->unlink_n; i++)
			spool_remove(q->cfg->spool_dir, q->unlink_ids[i]);
		q->unlink_n = 0;
		return;
	}
	char (*ids)[17] = u->ids;
	size_t cap = u->cap;
	u->ids = q->unlink_ids;
	u->cap = q->unlink_cap;
	u->n = q->unlink_n;
	q->unlink_ids = ids;
	q->unlink_cap = cap;
	q->unlink_n = 0;
	u->busy = true;
	workpool_submit(q->unlink_pool, &u->job);
}

static void queue_unlink_later(struct queue *q, const char *id)
{
	if (q->unlink_n == q->unlink_cap) {
		size_t cap = q->unlink_cap == 0 ? 256 : q->unlink_cap * 2;
		char (*grown)[17] = realloc(q->unlink_ids, cap * sizeof(*grown));
		if (grown == NULL) {
			spool_remove(q->cfg->spool_dir, id);
			return;
		}
		q->unlink_ids = grown;
		q->unlink_cap = cap;
	}
	memcpy(q->unlink_ids[q->unlink_n++], id, 17);
	if (q->status == NULL)
		queue_unlink_kick(q);
}

/* ---- status store ---- */

static void queue_status_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	(void)fd;
	(void)what;
	q->status_dirty = false;
	if (q->status != NULL)
		qstatus_commit(q->status);
	/* Finished is recorded: now their spool files may go. */
	queue_unlink_kick(q);
}

struct qstatus *queue_status(struct queue *q)
{
	if (q->status == NULL)
		return NULL;
	if (!q->status_dirty) {
		q->status_dirty = true;
		qstatus_begin(q->status);
		struct timeval zero = { 0, 0 };
		event_add(q->status_flush_ev, &zero);
	}
	return q->status;
}

void queue_status_rcpt(struct queue *q, struct queue_msg *m, size_t i, const char *tls)
{
	struct qstatus *qs = queue_status(q);
	const struct queue_rcpt *r = &m->rcpts[i];
	if (qs == NULL)
		return;
	struct qstatus_rcpt rec = {
		.attempts = r->attempts,
		.next_attempt = r->state == RCPT_PENDING ? (int64_t)r->next_attempt : 0,
		.last_reply = r->last_reply,
		.remote_host = r->remote_host,
		.tls = tls,
	};
	if (r->state == RCPT_DONE || r->state == RCPT_FAILED)
		rec.state = (enum qstatus_state)r->final;
	else
		rec.state = r->attempts > 0 ? QS_DEFERRED : QS_QUEUED;
	qstatus_update_rcpt(qs, m->id, (unsigned)i, &rec);
}

static void queue_set_str(char **dst, const char *src)
{
	if (src == NULL)
		return;
	char *copy = strdup(src);
	if (copy == NULL)
		return;
	free(*dst);
	*dst = copy;
}

void queue_rcpt_final(struct queue *q, struct queue_msg *m, size_t i, enum qstatus_state st,
		      const char *reply, const char *remote_host, const char *tls)
{
	struct queue_rcpt *r = &m->rcpts[i];
	r->state = st == QS_DELIVERED ? RCPT_DONE : RCPT_FAILED;
	r->final = (unsigned char)st;
	queue_set_str(&r->last_reply, reply);
	queue_set_str(&r->remote_host, remote_host);
	queue_status_rcpt(q, m, i, tls);
	log_info("id=%s to=<%s> status=%s%s%s%s%s", m->id, m->env->rcpts[i].address,
		 qstatus_state_name(st), remote_host != NULL ? " relay=" : "",
		 remote_host != NULL ? remote_host : "", reply != NULL ? " reply=" : "",
		 reply != NULL ? reply : "");
}

void queue_rcpt_defer(struct queue *q, struct queue_msg *m, size_t i, const char *reply,
		      unsigned retry_min, unsigned retry_max)
{
	struct queue_rcpt *r = &m->rcpts[i];
	time_t now = time(NULL);
	unsigned n = r->attempts++;
	uint64_t delay = retry_min;
	while (n-- > 0 && delay < retry_max)
		delay *= 2;
	if (delay > retry_max)
		delay = retry_max;
	queue_set_str(&r->last_reply, reply);
	if (now - (time_t)m->env->queued_at >= (time_t)q->cfg->queue_lifetime) {
		char text[600];
		snprintf(text, sizeof(text), "4.4.7 message expired after %u attempts; last: %s",
			 r->attempts, reply != NULL ? reply : "none");
		queue_rcpt_final(q, m, i, QS_EXPIRED, text, NULL, NULL);
		return;
	}
	r->state = RCPT_PENDING;
	r->next_attempt = now + (time_t)delay;
	queue_status_rcpt(q, m, i, NULL);
	log_info("id=%s to=<%s> status=deferred delay=%llus reply=%s", m->id,
		 m->env->rcpts[i].address, (unsigned long long)delay,
		 reply != NULL ? reply : "");
}

/* ---- local delivery scheduling ---- */

void queue_make_ready(struct queue *q, struct queue_msg *m)
{
	if (m->ready)
		return;
	m->ready = true;
	m->run_next = NULL;
	if (q->ready_tail != NULL)
		q->ready_tail->run_next = m;
	else
		q->ready_head = m;
	q->ready_tail = m;
}

static void queue_unready(struct queue *q, struct queue_msg *m)
{
	if (!m->ready)
		return;
	struct queue_msg *prev = NULL;
	for (struct queue_msg *p = q->ready_head; p != NULL; prev = p, p = p->run_next) {
		if (p != m)
			continue;
		if (prev != NULL)
			prev->run_next = m->run_next;
		else
			q->ready_head = m->run_next;
		if (q->ready_tail == m)
			q->ready_tail = prev;
		break;
	}
	m->ready = false;
	m->run_next = NULL;
}

/* The spool file is gone (the operator deleted it): nothing more is
 * delivered; the message is freed once nothing of it is in flight. */
static void queue_msg_forget(struct queue *q, struct queue_msg *m)
{
	m->deleted = true;
	queue_remote_unschedule(q, m);
	for (size_t i = 0; i < m->env->nrcpts; i++) {
		if (m->rcpts[i].state == RCPT_PENDING)
			m->rcpts[i].state = RCPT_FAILED;
	}
	queue_unready(q, m);
	queue_msg_check_done(q, m);
}

bool queue_msg_check_done(struct queue *q, struct queue_msg *m)
{
	if (m->jobs > 0 || m->writer != NULL || m->committing || !m->committed)
		return false;
	for (size_t i = 0; i < m->env->nrcpts; i++) {
		if (m->rcpts[i].state != RCPT_DONE && m->rcpts[i].state != RCPT_FAILED)
			return false;
	}
	if (!m->deleted && queue_bounce(q, m, true) < 0) {
		/* The notice is not on disk: keep the original (and its
		 * final states) and try again in a minute. */
		m->bounce_pending = true;
		m->bounce_retry_at = time(NULL) + 60;
		return false;
	}
	m->bounce_pending = false;
	struct qstatus *qs = queue_status(q);
	if (qs != NULL)
		qstatus_finish_message(qs, m->id, (int64_t)time(NULL));
	queue_unlink_later(q, m->id);
	log_info("id=%s removed (all recipients done)", m->id);
	queue_msg_free(q, m);
	return true;
}

static void queue_dispatch(struct queue *q)
{
	time_t now = time(NULL);
	while (q->deliverer != NULL && q->ready_head != NULL && q->inflight < QUEUE_DLV_INFLIGHT) {
		struct queue_msg *m = q->ready_head;
		q->ready_head = m->run_next;
		if (q->ready_head == NULL)
			q->ready_tail = NULL;
		m->ready = false;
		m->run_next = NULL;
		for (size_t i = 0; i < m->env->nrcpts && !m->held; i++) {
			if (m->rcpts[i].state != RCPT_PENDING || m->rcpts[i].next_attempt > now ||
			    m->env->rcpts[i].mailbox == NULL)
				continue;
			char path[4096];
			if (account_maildir_path(q->cfg->mail_dir, m->env->rcpts[i].mailbox, path,
						 sizeof(path)) < 0) {
				queue_rcpt_final(q, m, i, QS_BOUNCED,
						 "5.3.0 unusable mailbox name; not delivered", NULL,
						 NULL);
				continue;
			}
			struct ipc_writer w;
			ipc_writer_init(&w);
			ipc_put_str(&w, m->id);
			ipc_put_u32(&w, (uint32_t)i);
			ipc_put_str(&w, m->env->rcpts[i].mailbox);
			ipc_put_str(&w, path);
			ipc_put_u32(&w, m->recovered ? IPC_DLV_RECOVERED : 0);
			if (ipc_send(q->deliverer, IPC_DLV_REQUEST, 0, &w) == 0) {
				m->rcpts[i].state = RCPT_INFLIGHT;
				q->inflight++;
			}
			ipc_writer_free(&w);
		}
		queue_schedule_remote(q, m, now);
		queue_msg_check_done(q, m);
	}
	queue_pump(q);
}

static void queue_dlv_result(struct queue *q, struct ipc_reader *r)
{
	const char *id = ipc_get_str(r);
	uint32_t idx = ipc_get_u32(r);
	uint32_t status = ipc_get_u32(r);
	const char *text = ipc_get_str(r);
	if (r->error || id == NULL) {
		log_warn("malformed delivery result");
		return;
	}
	struct queue_msg *m = queue_find_id(q, id);
	if (m == NULL || idx >= m->env->nrcpts || m->rcpts[idx].state != RCPT_INFLIGHT) {
		log_warn("delivery result for unknown id=%s rcpt=%u", id, idx);
		return;
	}
	q->inflight--;
	switch (status) {
	case IPC_DLV_OK:
		queue_rcpt_final(q, m, idx, QS_DELIVERED, "2.0.0 delivered to maildir", NULL,
				 NULL);
		break;
	case IPC_DLV_PERMFAIL:
		queue_rcpt_final(q, m, idx, QS_BOUNCED, text, NULL, NULL);
		break;
	default: {
		char path[4096];
		snprintf(path, sizeof(path), "%s/queue/%s", q->cfg->spool_dir, m->id);
		if (m->deleted || (access(path, F_OK) < 0 && errno == ENOENT)) {
			log_info("id=%s removed from the spool by the operator", m->id);
			m->rcpts[idx].state = RCPT_PENDING;
			queue_msg_forget(q, m);
			return;
		}
		/* The copy may have reached new/ before the failure (a failed
		 * fsync after the rename): every retry checks first. */
		m->recovered = true;
		queue_rcpt_defer(q, m, idx, text, QUEUE_LOCAL_RETRY_MIN, QUEUE_LOCAL_RETRY_MAX);
		break;
	}
	}
	queue_msg_check_done(q, m);
}

static void queue_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	time_t now = time(NULL);
	const struct config *cfg = q->cfg;
	(void)fd;
	(void)what;
	for (unsigned h = 0; h < QUEUE_HASH_SIZE; h++) {
		struct queue_msg *m = q->by_id[h];
		while (m != NULL) {
			struct queue_msg *next = m->id_next;
			if (m->bounce_pending) {
				if (now >= m->bounce_retry_at)
					queue_msg_check_done(q, m);
				m = next;
				continue;
			}
			if (!m->committed || m->held || m->deleted) {
				m = next;
				continue;
			}
			bool local_due = false, pending = false;
			for (size_t i = 0; i < m->env->nrcpts; i++) {
				const struct queue_rcpt *r = &m->rcpts[i];
				if (r->state != RCPT_PENDING && r->state != RCPT_INFLIGHT)
					continue;
				pending = true;
				if (r->state == RCPT_PENDING && r->next_attempt <= now &&
				    m->env->rcpts[i].mailbox != NULL)
					local_due = true;
			}
			if (local_due)
				queue_make_ready(q, m);
			queue_schedule_remote(q, m, now);
			if (pending && !m->delay_notified && cfg->delay_warning > 0 &&
			    now - (time_t)m->env->queued_at >= (time_t)cfg->delay_warning) {
				m->delay_notified = true;
				struct qstatus *qs = queue_status(q);
				if (qs != NULL)
					qstatus_set_delay_notified(qs, m->id);
				queue_bounce(q, m, false);
			}
			m = next;
		}
	}
	queue_remote_tick(q, now);
	if (q->status != NULL && cfg->status_retention > 0 && now - q->last_purge >= 3600) {
		q->last_purge = now;
		struct qstatus *qs = queue_status(q);
		if (qs != NULL)
			qstatus_purge(qs, (int64_t)now - (int64_t)cfg->status_retention);
	}
	queue_dispatch(q);
}

/* ---- group commit ---- */

/* Commit thread: makes a batch durable: by default one syncfs() of the
 * spool's file system; with sync_method = fsync, each file and then the
 * directory entries of all of them with one fsync of the directory. */
static void queue_commit_run(struct workpool_job *job)
{
	struct queue_commit *c = (struct queue_commit *)job;
	const struct config *cfg = c->q->cfg;
	const char *error = NULL;
	bool ok = true;
	if (cfg->sync_method == SYNC_SYNCFS) {
		/* One flush for the files and directory entries of the whole
		 * batch; syncfs() cannot say which file failed, so an error
		 * fails them all. */
		char dir[4096];
		snprintf(dir, sizeof(dir), "%s/queue", cfg->spool_dir);
		if (fs_sync(dir) < 0) {
			log_error("syncfs of the spool failed: %s", strerror(errno));
			ok = false;
		}
		for (struct queue_msg *m = c->batch; ok && m != NULL; m = m->run_next) {
			if (spool_writer_mark_synced(m->writer, &error) < 0) {
				m->failed = true;
				log_error("id=%s spool write failed: %s", m->id, error);
			}
		}
	} else {
		for (struct queue_msg *m = c->batch; m != NULL; m = m->run_next) {
			if (spool_writer_sync(m->writer, &error) < 0) {
				m->failed = true;
				log_error("id=%s fsync failed: %s", m->id, error);
			}
		}
		if (spool_sync_queue_dir(cfg->spool_dir) < 0) {
			log_error("fsync of the queue directory failed: %s", strerror(errno));
			ok = false;
		}
	}
	if (!ok) {
		for (struct queue_msg *m = c->batch; m != NULL; m = m->run_next)
			m->failed = true;
	}
}

static void queue_commit_done(struct workpool_job *job);

static void queue_commit_kick(struct queue *q)
{
	if (q->commit.busy || q->gather == NULL)
		return;
	q->commit.batch = q->gather;
	q->gather = NULL;
	q->commit.busy = true;
	workpool_submit(q->pool, &q->commit.job);
}

static void queue_reply(struct ipc_conn *conn, uint32_t type, uint64_t reqid, uint32_t status,
			const char *text)
{
	struct ipc_writer w;
	ipc_writer_init(&w);
	ipc_put_u32(&w, status);
	ipc_put_str(&w, text);
	ipc_send(conn, type, reqid, &w);
	ipc_writer_free(&w);
}

/* Loop thread: the batch is durable (or failed); answer every session. */
static void queue_commit_done(struct workpool_job *job)
{
	struct queue_commit *c = (struct queue_commit *)job;
	struct queue *q = c->q;
	struct queue_msg *batch = c->batch;
	c->batch = NULL;
	c->busy = false;

	while (batch != NULL) {
		struct queue_msg *m = batch;
		batch = m->run_next;
		m->run_next = NULL;
		m->committing = false;
		if (m->failed) {
			if (m->owner != NULL)
				queue_reply(m->owner, IPC_Q_END_REPLY, m->reqid, IPC_Q_TEMPFAIL,
					    "spool write failed");
			queue_msg_free(q, m);
			continue;
		}
		m->size = spool_writer_size(m->writer);
		spool_writer_close(&m->writer);
		m->committed = true;
		struct qstatus *qs = queue_status(q);
		if (qs != NULL)
			qstatus_add_message(qs, m->env, m->size);
		if (m->owner != NULL)
			queue_reply(m->owner, IPC_Q_END_REPLY, m->reqid, IPC_Q_OK, m->id);
		queue_unlink_txn(q, m);
		log_info("id=%s committed from=<%s> nrcpt=%zu%s%s", m->id, m->env->sender,
			 m->env->nrcpts, m->env->auth_user != NULL ? " user=" : "",
			 m->env->auth_user != NULL ? m->env->auth_user : "");
		queue_make_ready(q, m);
	}
	queue_commit_kick(q);
	queue_dispatch(q);
}

/* ---- smtpd transactions ---- */

/* Recipients of a local user's message (run/submit.sock): resolved here
 * like smtpd's RCPT TO (aliases expanded, unknown local users refused),
 * whatever the client claimed. 0, or -1 with *reject_r set (permanent) or
 * not (temporary) and *error_r. */
static int queue_local_rcpts(struct queue *q, struct spool_envelope *env, bool *reject_r,
			     const char **error_r)
{
	static __thread char why[600];
	size_t n = env->nrcpts, cap = n + 8, out = 0;
	struct spool_rcpt *given = env->rcpts;
	struct spool_rcpt *res = calloc(cap, sizeof(*res));
	int ret = -1;
	*reject_r = false;
	*error_r = "out of memory";
	if (res == NULL)
		return -1;
	if (q->accounts == NULL) {
		*error_r = "account database unavailable";
		goto out;
	}
	if (n > q->cfg->max_recipients) {
		*reject_r = true;
		*error_r = "5.5.3 too many recipients";
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		struct account_targets t = { NULL, 0 };
		enum account_resolve_result rr = account_resolve(q->accounts, given[i].address, &t);
		if (rr == ACCOUNT_RESOLVE_NO_SUCH_USER || rr == ACCOUNT_RESOLVE_ERROR) {
			*reject_r = rr == ACCOUNT_RESOLVE_NO_SUCH_USER;
			snprintf(why, sizeof(why), "%s <%.500s>: %s", *reject_r ? "5.1.1" : "4.3.0",
				 given[i].address, *reject_r ? "no such user"
							     : "temporary lookup failure");
			*error_r = why;
			account_targets_free(&t);
			goto out;
		}
		size_t k = rr == ACCOUNT_RESOLVE_OK ? t.count : 1;
		for (size_t j = 0; j < k; j++) {
			bool local = rr == ACCOUNT_RESOLVE_OK && t.v[j].local;
			const char *addr = rr == ACCOUNT_RESOLVE_OK && !local ? t.v[j].address
									     : given[i].address;
			const char *mbox = local ? t.v[j].address : NULL;
			bool dup = false;
			/* One copy per mailbox (local) or per address (remote). */
			for (size_t d = 0; d < out && !dup; d++)
				dup = mbox != NULL ? res[d].mailbox != NULL &&
						     strcmp(res[d].mailbox, mbox) == 0
						   : res[d].mailbox == NULL &&
						     strcmp(res[d].address, addr) == 0;
			if (dup)
				continue;
			if (out == cap || out >= SPOOL_RCPTS_MAX) {
				account_targets_free(&t);
				*reject_r = true;
				*error_r = "5.5.3 too many recipients";
				goto out;
			}
			res[out].address = strdup(addr);
			res[out].mailbox = mbox != NULL ? strdup(mbox) : NULL;
			if (res[out].address == NULL || (mbox != NULL && res[out].mailbox == NULL)) {
				out++;
				account_targets_free(&t);
				goto out;
			}
			out++;
			if (out == cap) {
				struct spool_rcpt *grown = realloc(res, 2 * cap * sizeof(*res));
				if (grown == NULL) {
					account_targets_free(&t);
					goto out;
				}
				memset(grown + cap, 0, cap * sizeof(*res));
				res = grown;
				cap *= 2;
			}
		}
		account_targets_free(&t);
	}
	for (size_t i = 0; i < n; i++) {
		free(given[i].address);
		free(given[i].mailbox);
		free(given[i].orcpt);
		free(given[i].notify);
	}
	free(given);
	env->rcpts = res;
	env->nrcpts = out;
	res = NULL;
	ret = 0;
out:
	for (size_t i = 0; res != NULL && i < out; i++) {
		free(res[i].address);
		free(res[i].mailbox);
	}
	free(res);
	return ret;
}

static struct queue_peer *queue_peer_of(struct queue *q, struct ipc_conn *conn)
{
	for (struct queue_peer *p = q->peers; p != NULL; p = p->next) {
		if (p->conn == conn)
			return p;
	}
	return NULL;
}

static void queue_begin(struct queue *q, struct ipc_conn *conn, uint64_t reqid,
			struct ipc_reader *r)
{
	const char *error = "malformed envelope";
	const struct queue_peer *peer = queue_peer_of(q, conn);
	bool local_user = peer != NULL && peer->local_user;
	uint32_t status = IPC_Q_TEMPFAIL;
	struct spool_envelope *env = calloc(1, sizeof(*env));
	struct queue_msg *m = NULL;
	if (env == NULL)
		goto fail;
	const char *sender = ipc_get_str(r);
	const char *helo = ipc_get_str(r);
	const char *ip = ipc_get_str(r);
	const char *auth = ipc_get_str(r);
	uint32_t flags = ipc_get_u32(r);
	const char *envid = ipc_get_str(r);
	const char *ret = ipc_get_str(r);
	uint32_t n = ipc_get_u32(r);
	if (r->error || sender == NULL || n == 0 || n > SPOOL_RCPTS_MAX)
		goto fail;
	if (local_user) {
		/* Not from the network, and not who the client says it is. */
		helo = "localhost";
		ip = NULL;
		auth = peer->local_name;
	}
	env->rcpts = calloc(n, sizeof(*env->rcpts));
	if (env->rcpts == NULL)
		goto fail;
#define DUP(dst, src) do { if ((src) != NULL && ((dst) = strdup(src)) == NULL) goto fail; } while (0)
	DUP(env->sender, sender);
	DUP(env->helo, helo);
	DUP(env->client_ip, ip);
	DUP(env->auth_user, auth);
	DUP(env->envid, envid);
	DUP(env->ret, ret);
	for (uint32_t i = 0; i < n; i++) {
		const char *address = ipc_get_str(r);
		const char *mailbox = ipc_get_str(r);
		const char *orcpt = ipc_get_str(r);
		const char *notify = ipc_get_str(r);
		if (r->error || address == NULL)
			goto fail;
		env->nrcpts++;
		DUP(env->rcpts[i].address, address);
		DUP(env->rcpts[i].mailbox, mailbox);
		DUP(env->rcpts[i].orcpt, orcpt);
		DUP(env->rcpts[i].notify, notify);
	}
#undef DUP
	env->smtputf8 = (flags & IPC_ENV_SMTPUTF8) != 0;
	env->body_8bit = (flags & IPC_ENV_8BITMIME) != 0;
	env->queued_at = time(NULL);
	queue_id_new(env->id);
	if (local_user) {
		bool reject;
		if (queue_local_rcpts(q, env, &reject, &error) < 0) {
			if (reject)
				status = IPC_Q_REJECT;
			log_info("%s: message refused: %s", peer->local_name, error);
			goto fail_logged;
		}
	}

	if (queue_find_txn(q, conn, reqid) != NULL) {
		error = "transaction already open";
		goto fail;
	}
	m = queue_msg_new(q, env);
	if (m == NULL) {
		error = "out of memory";
		goto fail;
	}
	env = NULL;
	if (spool_writer_create(q->cfg->spool_dir, m->env, &m->writer, &error) < 0) {
		log_error("id=%s cannot create spool file: %s", m->id, error);
		queue_msg_free(q, m);
		goto fail_logged;
	}
	m->owner = conn;
	m->reqid = reqid;
	m->local_user = local_user;
	unsigned h = queue_hash_txn(conn, reqid);
	m->txn_next = q->by_txn[h];
	q->by_txn[h] = m;
	queue_reply(conn, IPC_Q_BEGIN_REPLY, reqid, IPC_Q_OK, m->id);
	return;
fail:
	log_error("transaction refused: %s", error);
fail_logged:
	spool_envelope_free(&env);
	queue_reply(conn, IPC_Q_BEGIN_REPLY, reqid, status, error);
}

static void queue_data(struct queue *q, struct ipc_conn *conn, uint64_t reqid,
		       struct ipc_reader *r)
{
	struct queue_msg *m = queue_find_txn(q, conn, reqid);
	const char *error;
	if (m == NULL || m->committing || m->failed)
		return;
	m->received += r->left;
	if (m->local_user && m->received > q->cfg->max_message_size) {
		/* smtpd enforces this itself; local users may not. */
		m->too_big = true;
		m->failed = true;
		return;
	}
	if (spool_writer_append(m->writer, r->p, r->left, &error) < 0) {
		log_error("id=%s spool write failed: %s", m->id, error);
		m->failed = true;
	}
}

static void queue_end(struct queue *q, struct ipc_conn *conn, uint64_t reqid)
{
	struct queue_msg *m = queue_find_txn(q, conn, reqid);
	const char *error;
	if (m == NULL || m->committing) {
		queue_reply(conn, IPC_Q_END_REPLY, reqid, IPC_Q_TEMPFAIL, "no such transaction");
		return;
	}
	if (m->too_big) {
		queue_reply(conn, IPC_Q_END_REPLY, reqid, IPC_Q_REJECT,
			    "5.3.4 message size exceeds the fixed maximum message size");
		queue_msg_free(q, m);
		return;
	}
	if (m->failed || spool_writer_finish_write(m->writer, &error) < 0) {
		if (!m->failed)
			log_error("id=%s spool write failed: %s", m->id, error);
		queue_reply(conn, IPC_Q_END_REPLY, reqid, IPC_Q_TEMPFAIL, "spool write failed");
		queue_msg_free(q, m);
		return;
	}
	m->committing = true;
	m->run_next = q->gather;
	q->gather = m;
	queue_commit_kick(q);
}

static void queue_abort(struct queue *q, struct ipc_conn *conn, uint64_t reqid)
{
	struct queue_msg *m = queue_find_txn(q, conn, reqid);
	if (m != NULL && !m->committing)
		queue_msg_free(q, m);
}

/* ---- peers ---- */

static void queue_peer_close_cb(struct ipc_conn *conn, void *ctx)
{
	struct queue *q = ctx;
	struct queue_peer **p = &q->peers;
	for (; *p != NULL; p = &(*p)->next) {
		if ((*p)->conn == conn)
			break;
	}
	struct queue_peer *peer = *p;
	if (peer == NULL)
		return;
	*p = peer->next;
	if (peer->deliverer && q->deliverer == conn) {
		q->deliverer = NULL;
		/* What was in flight is asked again of the next deliverer; the
		 * deliverer checks the Maildir first, so no copy is made twice.
		 * Remote jobs are retried at once (at-least-once: the peer may
		 * have taken the message before the deliverer died). */
		queue_remote_reset(q);
		for (unsigned h = 0; h < QUEUE_HASH_SIZE; h++) {
			for (struct queue_msg *m = q->by_id[h]; m != NULL; m = m->id_next) {
				for (size_t i = 0; m->env != NULL && i < m->env->nrcpts; i++) {
					/* Remote ones in waiting jobs stay as they are. */
					if (m->rcpts[i].state == RCPT_INFLIGHT &&
					    m->env->rcpts[i].mailbox != NULL) {
						m->rcpts[i].state = RCPT_PENDING;
						m->recovered = true;
					}
				}
			}
		}
		q->inflight = 0;
	} else {
		/* Open transactions of a vanished worker are abandoned (no 250
		 * was given); ones being committed complete without a reply. */
		for (unsigned h = 0; h < QUEUE_HASH_SIZE; h++) {
			struct queue_msg *m = q->by_txn[h];
			while (m != NULL) {
				struct queue_msg *next = m->txn_next;
				if (m->owner == conn) {
					if (m->committing)
						queue_unlink_txn(q, m);
					else
						queue_msg_free(q, m);
				}
				m = next;
			}
		}
	}
	ipc_conn_free(&peer->conn);
	free(peer);
}

static void queue_frame_cb(struct ipc_conn *conn, uint32_t type, uint64_t reqid,
			   struct ipc_reader *r, void *ctx)
{
	struct queue *q = ctx;
	if (type != IPC_Q_BEGIN && type != IPC_Q_DATA && type != IPC_Q_END &&
	    type != IPC_Q_ABORT) {
		const struct queue_peer *peer = queue_peer_of(q, conn);
		if (peer == NULL || peer->local_user) {
			log_warn("frame type %u from a local user's connection refused", type);
			return;
		}
	}
	switch (type) {
	case IPC_Q_BEGIN:
		queue_begin(q, conn, reqid, r);
		break;
	case IPC_Q_DATA:
		queue_data(q, conn, reqid, r);
		break;
	case IPC_Q_END:
		queue_end(q, conn, reqid);
		break;
	case IPC_Q_ABORT:
		queue_abort(q, conn, reqid);
		break;
	case IPC_DLV_HELLO:
		for (struct queue_peer *p = q->peers; p != NULL; p = p->next) {
			if (p->conn == conn)
				p->deliverer = true;
		}
		q->deliverer = conn;
		log_info("deliverer connected");
		queue_timer_cb(-1, 0, q);
		break;
	case IPC_DLV_RESULT:
		queue_dlv_result(q, r);
		queue_dispatch(q);
		break;
	case IPC_DLV_REMOTE_RESULT:
		queue_remote_result(q, reqid, r);
		queue_dispatch(q);
		break;
	case IPC_Q_ADMIN:
		queue_admin(q, conn, reqid, r);
		queue_dispatch(q);
		break;
	default:
		log_warn("unexpected frame type %u", type);
		break;
	}
}

static void queue_accept(struct queue *q, evutil_socket_t fd, bool local_user)
{
	int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (cfd < 0)
		return;
	struct queue_peer *peer = calloc(1, sizeof(*peer));
	if (peer == NULL) {
		close(cfd);
		return;
	}
	if (local_user) {
		/* Who it is comes from the kernel, never from the client. */
		struct ucred cred;
		socklen_t len = sizeof(cred);
		if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
			close(cfd);
			free(peer);
			return;
		}
		struct passwd pw, *pwr = NULL;
		char pwbuf[4096];
		if (getpwuid_r(cred.uid, &pw, pwbuf, sizeof(pwbuf), &pwr) == 0 && pwr != NULL)
			snprintf(peer->local_name, sizeof(peer->local_name), "local:%.50s",
				 pw.pw_name);
		else
			snprintf(peer->local_name, sizeof(peer->local_name), "local:uid%u",
				 (unsigned)cred.uid);
		peer->local_user = true;
	}
	peer->conn = ipc_conn_new(q->base, cfd, queue_frame_cb, queue_peer_close_cb, q);
	if (peer->conn == NULL) {
		close(cfd);
		free(peer);
		return;
	}
	peer->next = q->peers;
	q->peers = peer;
}

static void queue_accept_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	queue_accept(arg, fd, false);
}

static void queue_submit_accept_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	queue_accept(arg, fd, true);
}

/* ---- recovery ---- */

static void queue_recover_cb(const char *id, void *ctx)
{
	struct queue *q = ctx;
	struct spool_envelope *env;
	int fd;
	off_t off;
	size_t len;
	const char *error;
	if (q->status != NULL && qstatus_is_finished(q->status, id) == 1) {
		/* Done before the stop; only its removal had not happened. */
		spool_remove(q->cfg->spool_dir, id);
		return;
	}
	if (spool_read(q->cfg->spool_dir, id, &env, &fd, &off, &len, &error) < 0) {
		log_error("id=%s cannot read spool file: %s", id, error);
		return;
	}
	struct stat st;
	uint64_t size = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
	close(fd);
	struct queue_msg *m = queue_msg_new(q, env);
	if (m == NULL) {
		spool_envelope_free(&env);
		return;
	}
	m->recovered = true;
	m->committed = true;
	m->size = size;
	/* The schedule lives in the status store; a recipient that was in
	 * flight when we stopped (status queued) is tried again at once. */
	size_t n = env->nrcpts;
	enum qstatus_state *states = calloc(n, sizeof(*states));
	unsigned *attempts = calloc(n, sizeof(*attempts));
	int64_t *next = calloc(n, sizeof(*next));
	int known = 0;
	if (states != NULL && attempts != NULL && next != NULL && q->status != NULL)
		known = qstatus_load(q->status, id, n, states, attempts, next, &m->held,
				     &m->delay_notified);
	if (known <= 0) {
		struct qstatus *qs = queue_status(q);
		if (qs != NULL)
			qstatus_add_message(qs, env, size);
	}
	for (size_t i = 0; i < n; i++) {
		struct queue_rcpt *r = &m->rcpts[i];
		if (known > 0) {
			r->attempts = attempts[i];
			if (attempts[i] > 0 || qstatus_state_final(states[i]))
				qstatus_rcpt_texts(q->status, id, (unsigned)i, &r->last_reply,
						   &r->remote_host);
			if (qstatus_state_final(states[i])) {
				r->state = states[i] == QS_DELIVERED ? RCPT_DONE : RCPT_FAILED;
				r->final = (unsigned char)states[i];
				/* A crash between the last result and the spool
				 * removal: the notice may not have gone out. */
			} else if (states[i] == QS_DEFERRED && env->rcpts[i].mailbox == NULL) {
				/* Remote: the schedule survives the restart. Local
				 * ones are retried at once: a restart usually follows
				 * the fix (disk space, permissions). */
				r->next_attempt = (time_t)next[i];
			}
		}
	}
	free(states);
	free(attempts);
	free(next);
	queue_make_ready(q, m);
}

/* A status record of a message whose spool file is gone: finished. */
static void queue_finish_stale_cb(const char *id, void *ctx)
{
	struct queue *q = ctx;
	if (queue_find_id(q, id) != NULL)
		return;
	struct qstatus *qs = queue_status(q);
	if (qs != NULL)
		qstatus_finish_message(qs, id, (int64_t)time(NULL));
}

static void queue_stop_cb(evutil_socket_t sig, short what, void *arg)
{
	struct queue *q = arg;
	(void)what;
	log_info("signal %d: stopping", (int)sig);
	q->stopping = true;
	event_base_loopexit(q->base, NULL);
}

int queue_main(const struct config *cfg)
{
	struct queue *q = calloc(1, sizeof(*q));
	const char *error;
	if (q == NULL)
		fatal("out of memory");
	q->cfg = cfg;
	q->base = event_base_new();
	if (q->base == NULL)
		fatal("event_base_new failed");
	if (spool_init(cfg->spool_dir, &error) < 0)
		fatal("spool: %s", error);
	q->commit.q = q;
	q->commit.job.run = queue_commit_run;
	q->commit.job.done = queue_commit_done;
	q->pool = workpool_new(q->base, 1, &error);
	if (q->pool == NULL)
		fatal("commit thread: %s", error);
	q->unlink.q = q;
	q->unlink.job.run = queue_unlink_run;
	q->unlink.job.done = queue_unlink_done;
	q->unlink_pool = workpool_new(q->base, 1, &error);
	if (q->unlink_pool == NULL)
		fatal("unlink thread: %s", error);

	char path[4096];
	snprintf(path, sizeof(path), "%s/status.db", cfg->spool_dir);
	if (qstatus_open(path, false, &q->status, &error) < 0)
		log_error("delivery status store %s: %s; running without it", path, error);
	q->status_flush_ev = event_new(q->base, -1, 0, queue_status_flush_cb, q);
	if (account_db_open(cfg->db_path, false, &q->accounts, &error) < 0)
		log_error("account database %s: %s; bounces to local senders go out by SMTP",
			  cfg->db_path, error);

	if (spool_scan(cfg->spool_dir, queue_recover_cb, q, &error) < 0)
		fatal("spool recovery: %s", error);
	if (q->nmsgs > 0)
		log_info("recovered %zu messages from the spool", q->nmsgs);
	if (q->status != NULL)
		qstatus_unfinished(q->status, queue_finish_stale_cb, q);

	q->listen_fd = ipc_listen_unix("run/q.sock");
	if (q->listen_fd < 0)
		fatal("cannot listen on run/q.sock: %s", strerror(errno));
	q->listen_ev = event_new(q->base, q->listen_fd, EV_READ | EV_PERSIST, queue_accept_cb, q);
	/* Local users' submissions (`postern sendmail`): anyone may connect. */
	q->submit_fd = ipc_listen_unix("run/submit.sock");
	if (q->submit_fd < 0 || chmod("run/submit.sock", 0666) < 0)
		fatal("cannot listen on run/submit.sock: %s", strerror(errno));
	q->submit_ev = event_new(q->base, q->submit_fd, EV_READ | EV_PERSIST,
				 queue_submit_accept_cb, q);
	event_add(q->submit_ev, NULL);
	q->timer_ev = event_new(q->base, -1, EV_PERSIST, queue_timer_cb, q);
	struct event *ev_term = evsignal_new(q->base, SIGTERM, queue_stop_cb, q);
	struct event *ev_int = evsignal_new(q->base, SIGINT, queue_stop_cb, q);
	struct timeval second = { 1, 0 };
	event_add(q->listen_ev, NULL);
	event_add(q->timer_ev, &second);
	event_add(ev_term, NULL);
	event_add(ev_int, NULL);
	signal(SIGPIPE, SIG_IGN);

	event_base_dispatch(q->base);

	/* A running commit finishes and is answered; one not started is
	 * dropped, and its unsynced files go with their messages below (no
	 * 250 was given for them). */
	workpool_free(&q->pool, NULL);
	/* What is finished is recorded, then its files go (a running batch
	 * finishes; one not started and the waiting ids are done here). */
	if (q->status != NULL)
		qstatus_commit(q->status);
	workpool_free(&q->unlink_pool, NULL);
	if (q->unlink.busy) {
		for (size_t i = 0; i < q->unlink.n; i++)
			spool_remove(cfg->spool_dir, q->unlink.ids[i]);
	}
	for (size_t i = 0; i < q->unlink_n; i++)
		spool_remove(cfg->spool_dir, q->unlink_ids[i]);
	free(q->unlink.ids);
	free(q->unlink_ids);
	/* Let the replies of that last commit reach the workers. */
	event_base_loop(q->base, EVLOOP_NONBLOCK);
	while (q->peers != NULL) {
		struct queue_peer *p = q->peers;
		q->peers = p->next;
		ipc_conn_free(&p->conn);
		free(p);
	}
	for (unsigned h = 0; h < QUEUE_HASH_SIZE; h++) {
		while (q->by_id[h] != NULL) {
			struct queue_msg *m = q->by_id[h];
			queue_msg_free(q, m);
		}
	}
	queue_remote_free(q);
	qstatus_close(&q->status);
	account_db_close(&q->accounts);
	event_free(q->status_flush_ev);
	event_free(q->listen_ev);
	event_free(q->submit_ev);
	close(q->submit_fd);
	event_free(q->timer_ev);
	event_free(ev_term);
	event_free(ev_int);
	close(q->listen_fd);
	event_base_free(q->base);
	free(q);
	return 0;
}
