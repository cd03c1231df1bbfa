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
 * Remote recipients stay queued (the delivery engine is the next step).
 */
#include "queue/queue.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/buf.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/util.h"
#include "lib/workpool.h"
#include "lib-queue/spool.h"

#define QUEUE_HASH_SIZE      4096u
#define QUEUE_DLV_INFLIGHT   64u
#define QUEUE_RETRY_MIN      30u       /* seconds, doubled per attempt */
#define QUEUE_RETRY_MAX      3600u

enum rcpt_state { RCPT_PENDING, RCPT_INFLIGHT, RCPT_DONE, RCPT_REMOTE, RCPT_FAILED };

struct queue_msg {
	struct queue_msg *id_next;      /* hash chain by id */
	struct queue_msg *txn_next;     /* hash chain by (conn, request id) while receiving */
	struct queue_msg *run_next;     /* ready list / commit batch */
	char id[17];
	struct spool_envelope *env;
	struct spool_writer *writer;
	struct ipc_conn *owner;         /* smtpd connection while receiving */
	uint64_t reqid;
	bool failed;                    /* a write error happened while receiving */
	bool committing;
	bool recovered;
	bool ready;                     /* on the ready list */
	unsigned char *rcpt_state;
	unsigned *attempts;
	time_t next_attempt;
};

struct queue_peer {
	struct queue_peer *next;
	struct ipc_conn *conn;
	bool deliverer;
};

struct queue {
	struct event_base *base;
	const struct config *cfg;
	struct queue_msg *by_id[QUEUE_HASH_SIZE];
	struct queue_msg *by_txn[QUEUE_HASH_SIZE];
	struct queue_peer *peers;
	struct ipc_conn *deliverer;
	unsigned inflight;
	struct queue_msg *ready_head, *ready_tail;
	size_t nmsgs;

	/* group commit: one batch at a time on a one-thread pool */
	struct queue_msg *gather;       /* ENDed, waiting for the next batch */
	struct queue_commit {
		struct workpool_job job;
		struct queue *q;
		struct queue_msg *batch;    /* the thread's while busy */
		bool busy;
	} commit;
	struct workpool *pool;

	struct event *listen_ev, *timer_ev;
	int listen_fd;
	bool stopping;
};

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

static struct queue_msg *queue_find_id(struct queue *q, const char *id)
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
	spool_envelope_free(&m->env);
	free(m->rcpt_state);
	free(m->attempts);
	free(m);
}

static struct queue_msg *queue_msg_new(struct queue *q, struct spool_envelope *env)
{
	struct queue_msg *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return NULL;
	m->rcpt_state = calloc(env->nrcpts + 1, 1);
	m->attempts = calloc(env->nrcpts + 1, sizeof(*m->attempts));
	if (m->rcpt_state == NULL || m->attempts == NULL) {
		free(m->rcpt_state);
		free(m->attempts);
		free(m);
		return NULL;
	}
	memcpy(m->id, env->id, sizeof(m->id));
	m->env = env;
	for (size_t i = 0; i < env->nrcpts; i++)
		m->rcpt_state[i] = env->rcpts[i].mailbox != NULL ? RCPT_PENDING : RCPT_REMOTE;
	unsigned h = queue_hash_str(m->id);
	m->id_next = q->by_id[h];
	q->by_id[h] = m;
	q->nmsgs++;
	return m;
}

/* ---- local delivery scheduling ---- */

static void queue_make_ready(struct queue *q, struct queue_msg *m)
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
 * delivered; the message is freed once no delivery of it is in flight. */
static void queue_msg_forget(struct queue *q, struct queue_msg *m)
{
	bool inflight = false;
	for (size_t i = 0; i < m->env->nrcpts; i++) {
		if (m->rcpt_state[i] == RCPT_INFLIGHT)
			inflight = true;
		else
			m->rcpt_state[i] = RCPT_FAILED;
	}
	queue_unready(q, m);
	if (!inflight)
		queue_msg_free(q, m);
}

/* Builds DATA/mail/<domain>/<localpart> for a canonical user address;
 * -1 for anything that could escape the mail directory. */
static int queue_maildir_path(const struct queue *q, const char *mailbox, struct buf *out)
{
	const char *at = strrchr(mailbox, '@');
	if (at == NULL || at == mailbox || at[1] == '\0')
		return -1;
	size_t llen = (size_t)(at - mailbox);
	const char *domain = at + 1;
	if (memchr(mailbox, '/', llen) != NULL || strchr(domain, '/') != NULL ||
	    mailbox[0] == '.' || domain[0] == '.')
		return -1;
	return buf_printf(out, "%s/%s/%.*s", q->cfg->mail_dir, domain, (int)llen, mailbox);
}

static bool queue_msg_finished(const struct queue_msg *m)
{
	for (size_t i = 0; i < m->env->nrcpts; i++) {
		if (m->rcpt_state[i] != RCPT_DONE && m->rcpt_state[i] != RCPT_FAILED)
			return false;
	}
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
		for (size_t i = 0; i < m->env->nrcpts; i++) {
			if (m->rcpt_state[i] != RCPT_PENDING || m->next_attempt > now)
				continue;
			struct buf path;
			buf_init(&path, 4096);
			if (queue_maildir_path(q, m->env->rcpts[i].mailbox, &path) < 0) {
				log_error("id=%s to=%s: unusable mailbox name; not delivered", m->id,
					  m->env->rcpts[i].mailbox);
				m->rcpt_state[i] = RCPT_FAILED;
				buf_free(&path);
				continue;
			}
			struct ipc_writer w;
			ipc_writer_init(&w);
			ipc_put_str(&w, m->id);
			ipc_put_u32(&w, (uint32_t)i);
			ipc_put_str(&w, m->env->rcpts[i].mailbox);
			ipc_put_str(&w, path.data);
			ipc_put_u32(&w, m->recovered ? IPC_DLV_RECOVERED : 0);
			if (ipc_send(q->deliverer, IPC_DLV_REQUEST, 0, &w) == 0) {
				m->rcpt_state[i] = RCPT_INFLIGHT;
				q->inflight++;
			}
			ipc_writer_free(&w);
			buf_free(&path);
		}
		if (queue_msg_finished(m)) {
			spool_remove(q->cfg->spool_dir, m->id);
			queue_msg_free(q, m);
		}
	}
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
	if (m == NULL || idx >= m->env->nrcpts || m->rcpt_state[idx] != RCPT_INFLIGHT) {
		log_warn("delivery result for unknown id=%s rcpt=%u", id, idx);
		return;
	}
	q->inflight--;
	switch (status) {
	case IPC_DLV_OK:
		m->rcpt_state[idx] = RCPT_DONE;
		break;
	case IPC_DLV_PERMFAIL:
		/* Bounces (DSN) come with the delivery engine; until then the
		 * failure is logged for the operator. */
		log_error("id=%s to=%s permanent delivery failure: %s", m->id,
			  m->env->rcpts[idx].mailbox, text != NULL ? text : "");
		m->rcpt_state[idx] = RCPT_FAILED;
		break;
	default: {
		char path[4096];
		snprintf(path, sizeof(path), "%s/queue/%s", q->cfg->spool_dir, m->id);
		if (access(path, F_OK) < 0 && errno == ENOENT) {
			log_info("id=%s removed from the spool by the operator", m->id);
			queue_msg_forget(q, m);
			return;
		}
		/* The copy may have reached new/ before the failure (a failed
		 * fsync after the rename): every retry checks first. */
		m->recovered = true;
		unsigned n = m->attempts[idx]++;
		unsigned delay = n >= 7 ? QUEUE_RETRY_MAX : QUEUE_RETRY_MIN << n;
		if (delay > QUEUE_RETRY_MAX)
			delay = QUEUE_RETRY_MAX;
		m->rcpt_state[idx] = RCPT_PENDING;
		m->next_attempt = time(NULL) + (time_t)delay;
		log_info("id=%s to=%s deferred for %us: %s", m->id, m->env->rcpts[idx].mailbox,
			 delay, text != NULL ? text : "");
		return;
	}
	}
	if (queue_msg_finished(m)) {
		spool_remove(q->cfg->spool_dir, m->id);
		log_info("id=%s removed (all recipients done)", m->id);
		queue_msg_free(q, m);
	}
}

static void queue_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	time_t now = time(NULL);
	(void)fd;
	(void)what;
	for (unsigned h = 0; h < QUEUE_HASH_SIZE; h++) {
		for (struct queue_msg *m = q->by_id[h]; m != NULL; m = m->id_next) {
			if (m->writer != NULL || m->committing || m->ready || m->next_attempt > now)
				continue;
			for (size_t i = 0; i < m->env->nrcpts; i++) {
				if (m->rcpt_state[i] == RCPT_PENDING) {
					queue_make_ready(q, m);
					break;
				}
			}
		}
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
		spool_writer_close(&m->writer);
		if (m->owner != NULL)
			queue_reply(m->owner, IPC_Q_END_REPLY, m->reqid, IPC_Q_OK, m->id);
		queue_unlink_txn(q, m);
		log_info("id=%s committed from=<%s> nrcpt=%zu", m->id, m->env->sender,
			 m->env->nrcpts);
		queue_make_ready(q, m);
	}
	queue_commit_kick(q);
	queue_dispatch(q);
}

/* ---- smtpd transactions ---- */

static void queue_begin(struct queue *q, struct ipc_conn *conn, uint64_t reqid,
			struct ipc_reader *r)
{
	const char *error = "malformed envelope";
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
	unsigned h = queue_hash_txn(conn, reqid);
	m->txn_next = q->by_txn[h];
	q->by_txn[h] = m;
	queue_reply(conn, IPC_Q_BEGIN_REPLY, reqid, IPC_Q_OK, m->id);
	return;
fail:
	log_error("transaction refused: %s", error);
fail_logged:
	spool_envelope_free(&env);
	queue_reply(conn, IPC_Q_BEGIN_REPLY, reqid, IPC_Q_TEMPFAIL, error);
}

static void queue_data(struct queue *q, struct ipc_conn *conn, uint64_t reqid,
		       struct ipc_reader *r)
{
	struct queue_msg *m = queue_find_txn(q, conn, reqid);
	const char *error;
	if (m == NULL || m->committing || m->failed)
		return;
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
	if (peer->deliverer) {
		q->deliverer = NULL;
		/* What was in flight is asked again of the next deliverer; the
		 * deliverer checks the Maildir first, so no copy is made twice. */
		for (unsigned h = 0; h < QUEUE_HASH_SIZE; h++) {
			for (struct queue_msg *m = q->by_id[h]; m != NULL; m = m->id_next) {
				for (size_t i = 0; m->env != NULL && i < m->env->nrcpts; i++) {
					if (m->rcpt_state[i] == RCPT_INFLIGHT) {
						m->rcpt_state[i] = RCPT_PENDING;
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
	default:
		log_warn("unexpected frame type %u", type);
		break;
	}
}

static void queue_accept_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	(void)what;
	int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (cfd < 0)
		return;
	struct queue_peer *peer = calloc(1, sizeof(*peer));
	if (peer == NULL) {
		close(cfd);
		return;
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

/* ---- recovery ---- */

static void queue_recover_cb(const char *id, void *ctx)
{
	struct queue *q = ctx;
	struct spool_envelope *env;
	int fd;
	off_t off;
	size_t len;
	const char *error;
	if (spool_read(q->cfg->spool_dir, id, &env, &fd, &off, &len, &error) < 0) {
		log_error("id=%s cannot read spool file: %s", id, error);
		return;
	}
	close(fd);
	struct queue_msg *m = queue_msg_new(q, env);
	if (m == NULL) {
		spool_envelope_free(&env);
		return;
	}
	m->recovered = true;
	queue_make_ready(q, m);
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

	if (spool_scan(cfg->spool_dir, queue_recover_cb, q, &error) < 0)
		fatal("spool recovery: %s", error);
	if (q->nmsgs > 0)
		log_info("recovered %zu messages from the spool", q->nmsgs);

	q->listen_fd = ipc_listen_unix("run/q.sock");
	if (q->listen_fd < 0)
		fatal("cannot listen on run/q.sock: %s", strerror(errno));
	q->listen_ev = event_new(q->base, q->listen_fd, EV_READ | EV_PERSIST, queue_accept_cb, q);
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
	event_free(q->listen_ev);
	event_free(q->timer_ev);
	event_free(ev_term);
	event_free(ev_int);
	close(q->listen_fd);
	event_base_free(q->base);
	free(q);
	return 0;
}
