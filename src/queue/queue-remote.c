/*
 * queue-remote.c — remote delivery scheduling in the queue process.
 *
 * Due remote recipients are grouped per message and destination domain
 * into jobs of at most QUEUE_JOB_RCPTS (one SMTP transaction each). A job
 * waits in its destination's FIFO until the destination has a free
 * connection slot (outbound.concurrency, or the domain's own), its rate
 * allows another message (outbound.rate per minute, spaced evenly) and the
 * sender's account is under outbound.sender_rate. Over a limit a job waits;
 * it is never dropped. The deliverer runs the SMTP client and answers each
 * job with one result per recipient; temporary failures are retried with
 * exponential backoff (queue.retry_min doubling to queue.retry_max) until
 * queue.lifetime, when the recipient expires.
 *
 * Also answers `postern queue retry|hold|release|delete` (IPC_Q_ADMIN).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/event.h>

#include "lib/log.h"
#include "lib/util.h"
#include "queue/queue-private.h"

static uint64_t queue_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static unsigned queue_hash_key(const char *s)
{
	unsigned h = 2166136261u;
	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)tolower((unsigned char)*s)) * 16777619u;
	return h % QUEUE_DEST_HASH;
}

bool queue_rcpt_is_remote(const struct queue_msg *m, size_t i)
{
	return m->env->rcpts[i].mailbox == NULL;
}

/* The lower-cased domain of a recipient address, or "" for none. */
static void queue_rcpt_domain(const char *address, char *out, size_t size)
{
	const char *at = strrchr(address, '@');
	size_t n = 0;
	if (at != NULL) {
		for (const char *c = at + 1; *c != '\0' && n + 1 < size; c++)
			out[n++] = (char)tolower((unsigned char)*c);
	}
	out[n] = '\0';
}

static struct queue_dest *queue_dest_get(struct queue *q, const char *domain)
{
	unsigned h = queue_hash_key(domain);
	for (struct queue_dest *d = q->dests[h]; d != NULL; d = d->hash_next) {
		if (strcmp(d->domain, domain) == 0)
			return d;
	}
	struct queue_dest *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	const struct config *cfg = q->cfg;
	const struct outbound_domain *od = config_outbound_domain(cfg, domain);
	snprintf(d->domain, sizeof(d->domain), "%s", domain);
	d->limit = od != NULL && od->concurrency > 0 ? od->concurrency : cfg->concurrency;
	d->rate = od != NULL && od->rate > 0 ? od->rate : cfg->rate;
	d->tls = od != NULL && od->tls >= 0 ? (enum tls_policy)od->tls : cfg->tls_policy;
	d->route = od != NULL && od->smarthost != NULL ? od->smarthost : cfg->smarthost;
	d->hash_next = q->dests[h];
	q->dests[h] = d;
	return d;
}

static void queue_dest_activate(struct queue *q, struct queue_dest *d)
{
	if (d->active)
		return;
	d->active = true;
	d->active_next = q->active;
	q->active = d;
}

void queue_schedule_remote(struct queue *q, struct queue_msg *m, time_t now)
{
	if (!m->committed || m->held || m->deleted)
		return;
	struct queue_job *jobs = NULL;
	for (size_t i = 0; i < m->env->nrcpts; i++) {
		struct queue_rcpt *r = &m->rcpts[i];
		if (!queue_rcpt_is_remote(m, i) || r->state != RCPT_PENDING || r->next_attempt > now)
			continue;
		char domain[256];
		queue_rcpt_domain(m->env->rcpts[i].address, domain, sizeof(domain));
		if (domain[0] == '\0') {
			queue_rcpt_final(q, m, i, QS_BOUNCED, "5.1.3 recipient address has no domain",
					 NULL, NULL);
			continue;
		}
		struct queue_dest *d = queue_dest_get(q, domain);
		if (d == NULL)
			break;
		struct queue_job *j = jobs;
		while (j != NULL && (j->dest != d || j->n == QUEUE_JOB_RCPTS))
			j = j->next;
		if (j == NULL) {
			if ((j = calloc(1, sizeof(*j))) == NULL)
				break;
			j->m = m;
			j->dest = d;
			j->next = jobs;
			jobs = j;
		}
		j->idx[j->n++] = (uint32_t)i;
		r->state = RCPT_INFLIGHT;
	}
	while (jobs != NULL) {
		struct queue_job *j = jobs;
		jobs = j->next;
		j->next = NULL;
		struct queue_dest *d = j->dest;
		if (d->tail != NULL)
			d->tail->next = j;
		else
			d->head = j;
		d->tail = j;
		m->jobs++;
		queue_dest_activate(q, d);
	}
}

/* ---- rate limits ---- */

static const char *queue_sender_key(const struct queue_msg *m)
{
	return m->env->auth_user != NULL ? m->env->auth_user : m->env->sender;
}

static struct queue_sender *queue_sender_get(struct queue *q, const char *key)
{
	unsigned h = queue_hash_key(key);
	for (struct queue_sender *s = q->senders[h]; s != NULL; s = s->next) {
		if (strcasecmp(s->key, key) == 0)
			return s;
	}
	size_t len = strlen(key);
	struct queue_sender *s = calloc(1, sizeof(*s) + len + 1);
	if (s == NULL)
		return NULL;
	memcpy(s->key, key, len + 1);
	s->next = q->senders[h];
	q->senders[h] = s;
	return s;
}

static void queue_pump_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	queue_pump(arg);
}

static void queue_pump_later(struct queue *q, uint64_t wait_ms)
{
	if (q->pump_ev == NULL && (q->pump_ev = event_new(q->base, -1, 0, queue_pump_cb, q)) == NULL)
		return;
	if (event_pending(q->pump_ev, EV_TIMEOUT, NULL))
		return;
	struct timeval tv = { (time_t)(wait_ms / 1000), (suseconds_t)(wait_ms % 1000) * 1000 };
	event_add(q->pump_ev, &tv);
}

/* ---- sending jobs ---- */

static int queue_job_send(struct queue *q, struct queue_job *j)
{
	const struct config *cfg = q->cfg;
	struct queue_dest *d = j->dest;
	struct ipc_writer w;
	ipc_writer_init(&w);
	ipc_put_str(&w, j->m->id);
	ipc_put_str(&w, d->domain);
	ipc_put_str(&w, d->route);
	ipc_put_u32(&w, (uint32_t)d->tls);
	ipc_put_u32(&w, d->route != NULL && cfg->smarthost_user != NULL ? IPC_DLV_SMARTHOST_AUTH : 0);
	ipc_put_u32(&w, j->n);
	for (unsigned i = 0; i < j->n; i++)
		ipc_put_u32(&w, j->idx[i]);
	j->reqid = ++q->next_reqid;
	int ret = ipc_send(q->deliverer, IPC_DLV_REMOTE, j->reqid, &w);
	ipc_writer_free(&w);
	return ret;
}

void queue_pump(struct queue *q)
{
	if (q->deliverer == NULL)
		return;
	uint64_t now = queue_now_ms(), wait = UINT64_MAX;
	struct queue_dest **dp = &q->active;
	while (*dp != NULL) {
		struct queue_dest *d = *dp;
		while (d->head != NULL && d->inflight < d->limit) {
			if (d->rate > 0 && now < d->next_send_ms) {
				if (d->next_send_ms - now < wait)
					wait = d->next_send_ms - now;
				break;
			}
			/* The first job whose sender is under its rate (a few
			 * looked at, so one busy sender doesn't stall others). */
			struct queue_job *j = d->head, *prev = NULL;
			struct queue_sender *s = NULL;
			for (unsigned n = 0; j != NULL && n < 64; n++, prev = j, j = j->next) {
				if (q->cfg->sender_rate == 0)
					break;
				s = queue_sender_get(q, queue_sender_key(j->m));
				if (s == NULL || now >= s->next_send_ms)
					break;
				if (s->next_send_ms - now < wait)
					wait = s->next_send_ms - now;
			}
			if (j == NULL || (q->cfg->sender_rate > 0 && s != NULL && now < s->next_send_ms))
				break;
			if (queue_job_send(q, j) < 0)
				break;
			if (prev != NULL)
				prev->next = j->next;
			else
				d->head = j->next;
			if (d->tail == j)
				d->tail = prev;
			j->next = q->running;
			q->running = j;
			j->sent_at = time(NULL);
			d->inflight++;
			if (d->rate > 0) {
				uint64_t base = d->next_send_ms > now ? d->next_send_ms : now;
				d->next_send_ms = base + 60000u / d->rate;
			}
			if (s != NULL && q->cfg->sender_rate > 0)
				s->next_send_ms = (s->next_send_ms > now ? s->next_send_ms : now) +
						  60000u / q->cfg->sender_rate;
		}
		if (d->head == NULL) {
			d->active = false;
			*dp = d->active_next;
			d->active_next = NULL;
		} else {
			dp = &d->active_next;
		}
	}
	if (wait != UINT64_MAX)
		queue_pump_later(q, wait);
}

/* Ends a job taken off the running list: its recipients without a result
 * (done[slot] false, or done NULL for all) are deferred with reply, or
 * dropped when the message was deleted; the job is freed. */
static void queue_job_end(struct queue *q, struct queue_job *j, const bool *done,
			  const char *reply)
{
	struct queue_msg *m = j->m;
	for (unsigned slot = 0; slot < j->n; slot++) {
		struct queue_rcpt *r = &m->rcpts[j->idx[slot]];
		if ((done != NULL && done[slot]) || r->state != RCPT_INFLIGHT)
			continue;
		if (m->deleted)
			r->state = RCPT_FAILED;
		else
			queue_rcpt_defer(q, m, j->idx[slot], reply, q->cfg->retry_min,
					 q->cfg->retry_max);
	}
	j->dest->inflight--;
	m->jobs--;
	free(j);
	queue_msg_check_done(q, m);
}

static struct queue_job *queue_job_take_running(struct queue *q, uint64_t reqid)
{
	for (struct queue_job **p = &q->running; *p != NULL; p = &(*p)->next) {
		if ((*p)->reqid == reqid) {
			struct queue_job *j = *p;
			*p = j->next;
			j->next = NULL;
			return j;
		}
	}
	return NULL;
}

void queue_remote_result(struct queue *q, uint64_t reqid, struct ipc_reader *r)
{
	struct queue_job *j = queue_job_take_running(q, reqid);
	if (j == NULL) {
		log_warn("remote delivery result for unknown request %llu",
			 (unsigned long long)reqid);
		return;
	}
	struct queue_msg *m = j->m;
	const struct config *cfg = q->cfg;
	const char *id = ipc_get_str(r);
	const char *host = ipc_get_str(r);
	const char *tls = ipc_get_str(r);
	bool peer_dsn = ipc_get_u32(r) != 0;
	uint32_t n = ipc_get_u32(r);
	bool done[QUEUE_JOB_RCPTS] = { false };
	if (r->error || id == NULL || strcmp(id, m->id) != 0)
		n = 0;
	for (uint32_t k = 0; k < n && !r->error; k++) {
		uint32_t idx = ipc_get_u32(r);
		uint32_t status = ipc_get_u32(r);
		const char *reply = ipc_get_str(r);
		unsigned slot = 0;
		while (slot < j->n && j->idx[slot] != idx)
			slot++;
		if (r->error || slot == j->n || done[slot] || m->rcpts[idx].state != RCPT_INFLIGHT)
			continue;
		done[slot] = true;
		if (m->deleted) {
			m->rcpts[idx].state = RCPT_FAILED;
			continue;
		}
		m->rcpts[idx].peer_dsn = peer_dsn;
		if (status == IPC_DLV_OK)
			queue_rcpt_final(q, m, idx, QS_DELIVERED, reply, host, tls);
		else if (status == IPC_DLV_PERMFAIL)
			queue_rcpt_final(q, m, idx, QS_BOUNCED, reply, host, tls);
		else
			queue_rcpt_defer(q, m, idx, reply, cfg->retry_min, cfg->retry_max);
	}
	queue_job_end(q, j, done, "4.3.0 no result from the deliverer");
}

void queue_remote_reset(struct queue *q)
{
	while (q->running != NULL) {
		struct queue_job *j = q->running;
		struct queue_msg *m = j->m;
		q->running = j->next;
		for (unsigned k = 0; k < j->n; k++) {
			struct queue_rcpt *r = &m->rcpts[j->idx[k]];
			if (r->state == RCPT_INFLIGHT) {
				r->state = m->deleted ? RCPT_FAILED : RCPT_PENDING;
				r->next_attempt = 0;
			}
		}
		j->dest->inflight--;
		m->jobs--;
		free(j);
		queue_msg_check_done(q, m);
	}
}

void queue_remote_tick(struct queue *q, time_t now)
{
	const struct config *cfg = q->cfg;
	/* Far beyond every timeout of one attempt: DNS, a connect and a
	 * handshake per address, each command, the data. */
	time_t limit = (time_t)(4 * cfg->out_command_timeout + 8 * cfg->connect_timeout + 600);
	struct queue_job **p = &q->running;
	while (*p != NULL) {
		struct queue_job *j = *p;
		if (now - j->sent_at < limit) {
			p = &j->next;
			continue;
		}
		*p = j->next;
		log_error("id=%s no result from the deliverer after %lds; deferring", j->m->id,
			  (long)(now - j->sent_at));
		queue_job_end(q, j, NULL, "4.4.7 no result from the deliverer");
	}
	/* Destinations and senders with nothing going on are forgotten after
	 * their rate spacing has passed (bounded memory). */
	uint64_t now_ms = queue_now_ms();
	for (unsigned h = 0; h < QUEUE_DEST_HASH; h++) {
		for (struct queue_dest **dp = &q->dests[h]; *dp != NULL;) {
			struct queue_dest *d = *dp;
			if (d->inflight == 0 && d->head == NULL && !d->active && now_ms >= d->next_send_ms) {
				*dp = d->hash_next;
				free(d);
			} else {
				dp = &d->hash_next;
			}
		}
		for (struct queue_sender **sp = &q->senders[h]; *sp != NULL;) {
			struct queue_sender *snd = *sp;
			if (now_ms >= snd->next_send_ms) {
				*sp = snd->next;
				free(snd);
			} else {
				sp = &snd->next;
			}
		}
	}
}

void queue_remote_unschedule(struct queue *q, struct queue_msg *m)
{
	for (struct queue_dest *d = q->active; d != NULL; d = d->active_next) {
		struct queue_job **p = &d->head, *prev = NULL;
		while (*p != NULL) {
			struct queue_job *j = *p;
			if (j->m != m) {
				prev = j;
				p = &j->next;
				continue;
			}
			*p = j->next;
			if (d->tail == j)
				d->tail = prev;
			for (unsigned k = 0; k < j->n; k++)
				m->rcpts[j->idx[k]].state = RCPT_PENDING;
			m->jobs--;
			free(j);
		}
	}
}

void queue_remote_free(struct queue *q)
{
	while (q->running != NULL) {
		struct queue_job *j = q->running;
		q->running = j->next;
		free(j);
	}
	for (unsigned h = 0; h < QUEUE_DEST_HASH; h++) {
		while (q->dests[h] != NULL) {
			struct queue_dest *d = q->dests[h];
			q->dests[h] = d->hash_next;
			while (d->head != NULL) {
				struct queue_job *j = d->head;
				d->head = j->next;
				free(j);
			}
			free(d);
		}
		while (q->senders[h] != NULL) {
			struct queue_sender *s = q->senders[h];
			q->senders[h] = s->next;
			free(s);
		}
	}
	q->active = NULL;
	if (q->pump_ev != NULL)
		event_free(q->pump_ev);
	q->pump_ev = NULL;
}

/* ---- `postern queue retry|hold|release|delete` ---- */

static void queue_admin_retry(struct queue *q, struct queue_msg *m)
{
	for (size_t i = 0; i < m->env->nrcpts; i++) {
		if (m->rcpts[i].state == RCPT_PENDING && m->rcpts[i].next_attempt != 0) {
			m->rcpts[i].next_attempt = 0;
			queue_status_rcpt(q, m, i, NULL);
		}
	}
	if (!m->held)
		queue_make_ready(q, m);
}

static void queue_admin_reply(struct ipc_conn *conn, uint64_t reqid,
			      enum ipc_q_admin_status status, const char *text)
{
	struct ipc_writer w;
	ipc_writer_init(&w);
	ipc_put_u32(&w, status);
	ipc_put_str(&w, text);
	ipc_send(conn, IPC_Q_ADMIN_REPLY, reqid, &w);
	ipc_writer_free(&w);
}

void queue_admin(struct queue *q, struct ipc_conn *conn, uint64_t reqid, struct ipc_reader *r)
{
	uint32_t op = ipc_get_u32(r);
	const char *id = ipc_get_str(r);
	char text[128];
	if (r->error || id == NULL) {
		queue_admin_reply(conn, reqid, IPC_Q_ADMIN_ERROR, "malformed request");
		return;
	}
	if (op == IPC_Q_ADMIN_RETRY && strcmp(id, "all") == 0) {
		unsigned n = 0;
		for (unsigned h = 0; h < QUEUE_HASH_SIZE; h++) {
			for (struct queue_msg *m = q->by_id[h]; m != NULL; m = m->id_next) {
				if (m->committed && !m->deleted) {
					queue_admin_retry(q, m);
					n++;
				}
			}
		}
		snprintf(text, sizeof(text), "%u messages scheduled for immediate delivery", n);
		queue_admin_reply(conn, reqid, IPC_Q_ADMIN_OK, text);
		return;
	}
	struct queue_msg *m = queue_id_valid(id) ? queue_find_id(q, id) : NULL;
	if (m == NULL || !m->committed || m->deleted) {
		snprintf(text, sizeof(text), "%.20s: no such message in the queue", id);
		queue_admin_reply(conn, reqid, IPC_Q_ADMIN_UNKNOWN_ID, text);
		return;
	}
	struct qstatus *qs = queue_status(q);
	switch (op) {
	case IPC_Q_ADMIN_RETRY:
		queue_admin_retry(q, m);
		snprintf(text, sizeof(text), "%s: scheduled for immediate delivery", m->id);
		break;
	case IPC_Q_ADMIN_HOLD:
		m->held = true;
		queue_remote_unschedule(q, m);
		if (qs != NULL)
			qstatus_set_held(qs, m->id, true);
		snprintf(text, sizeof(text), "%s: held", m->id);
		break;
	case IPC_Q_ADMIN_RELEASE:
		m->held = false;
		if (qs != NULL)
			qstatus_set_held(qs, m->id, false);
		queue_admin_retry(q, m);
		snprintf(text, sizeof(text), "%s: released", m->id);
		break;
	case IPC_Q_ADMIN_DELETE:
		snprintf(text, sizeof(text), "%s: deleted", m->id);
		spool_remove(q->cfg->spool_dir, m->id);
		log_info("id=%s deleted by the operator", m->id);
		m->deleted = true;
		queue_remote_unschedule(q, m);
		for (size_t i = 0; i < m->env->nrcpts; i++) {
			if (m->rcpts[i].state == RCPT_PENDING)
				m->rcpts[i].state = RCPT_FAILED;
		}
		queue_admin_reply(conn, reqid, IPC_Q_ADMIN_OK, text);
		queue_msg_check_done(q, m);
		return;
	default:
		queue_admin_reply(conn, reqid, IPC_Q_ADMIN_ERROR, "unknown operation");
		return;
	}
	log_info("%s (operator)", text);
	queue_admin_reply(conn, reqid, IPC_Q_ADMIN_OK, text);
}
