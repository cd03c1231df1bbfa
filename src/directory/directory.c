/*
 * directory.c — the directory process: account lookups, password checks and
 * the connection counter (Postfix's anvil).
 *
 * Process: "directory", one instance. Listens on DATA/run/dir.sock; each smtpd
 * worker connects once and sends IPC_DIR_* requests (lib/ipc.h), answered with
 * IPC_DIR_REPLY under the same request id.
 *
 * Owns: the account_db (used from the loop thread only); the live connection
 * counts, total and per client IP, each charged to the smtpd connection that
 * took it, so a crashed worker's counts are released with its connection; a
 * small thread pool that runs argon2id checks off the loop (DESIGN principle
 * 4; lib/workpool.h). A check whose requester has gone
 * is dropped. Passwords are copied once, wiped after use and never logged.
 */
#include "directory/directory.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib-account/account.h"
#include "lib-store/quota.h"
#include "lib-config/config.h"
#include "lib/ipc.h"
#include "lib/limits.h"
#include "lib/log.h"
#include "lib/util.h"
#include "lib/workpool.h"

#define DIR_SOCKET            "run/dir.sock"
#define DIR_IP_BUCKETS        1024
#define DIR_AUTH_THREADS_MIN  2
#define DIR_AUTH_THREADS_MAX  4     /* argon2id takes 64 MiB per running check */
#define DIR_AUTH_QUEUE_MAX    1024  /* checks queued or running; beyond: TEMPFAIL */

/* Live sessions per key: client IPs (every listener, like Postfix's
 * anvil) and logged-in accounts (IMAP and POP3). */
struct dir_table {
	struct dir_count *buckets[DIR_IP_BUCKETS];
	unsigned total;
};

struct dir_count {
	struct dir_count *next;
	struct dir_table *table;
	unsigned count;
	char key[];
};

struct dir_hold {               /* what one worker holds for one key */
	struct dir_count *entry;
	unsigned count;
};

struct dir_client {             /* one connected smtpd worker */
	struct dir_server *srv;
	struct ipc_conn *conn;  /* NULL once closed while checks are pending */
	struct dir_client *prev, *next;
	struct dir_hold *holds;
	size_t nholds, holds_cap;
	unsigned auth_pending;
};

struct dir_auth_job {
	struct workpool_job job;        /* first: the pool's view of it */
	struct dir_client *client;
	uint64_t req_id;
	char *hash;             /* NULL for an unknown user: same cost, dummy hash */
	char *password;         /* wiped by the worker */
	char *user;             /* lower-cased: the canonical user */
	int result;             /* password_verify() */
};

struct dir_server {
	const struct config *cfg;
	struct event_base *base;
	struct account_db *db;
	struct event *listen_ev, *sigterm_ev, *sigint_ev;
	struct dir_client *clients;
	struct dir_table ips;           /* connections per client IP */
	struct dir_table logins;        /* IMAP/POP3 sessions per account */
	struct workpool *pool;  /* password checks */
};

/* ---- connection counts ---- */

static struct dir_count **dir_count_slot(struct dir_table *t, const char *key)
{
	uint32_t h = 2166136261u;       /* FNV-1a */
	for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++)
		h = (h ^ *p) * 16777619u;
	struct dir_count **slot = &t->buckets[h % DIR_IP_BUCKETS];
	while (*slot != NULL && strcmp((*slot)->key, key) != 0)
		slot = &(*slot)->next;
	return slot;            /* *slot is the entry, or NULL where it would go */
}

static void dir_count_release(struct dir_count *e, unsigned n)
{
	struct dir_table *t = e->table;
	e->count -= n;
	t->total -= n;
	if (e->count == 0) {
		struct dir_count **slot = dir_count_slot(t, e->key);
		*slot = e->next;
		free(e);
	}
}

/* Counts one more session for key, held by worker c (released when the
 * worker goes away). 0, 1 when the table is at max_total, 2 when the key
 * is at max_key (0 = no limit), -1 out of memory. */
static int dir_count_take(struct dir_client *c, struct dir_table *t, const char *key,
			  unsigned max_total, unsigned max_key)
{
	struct dir_count **slot = dir_count_slot(t, key);

	if (max_total != 0 && t->total >= max_total)
		return 1;
	if (*slot != NULL && max_key != 0 && (*slot)->count >= max_key)
		return 2;
	size_t i;
	for (i = 0; i < c->nholds && c->holds[i].entry != *slot; i++)
		;
	if (*slot == NULL || i == c->nholds) {
		if (c->nholds == c->holds_cap) {
			size_t cap = c->holds_cap == 0 ? 16 : c->holds_cap * 2;
			struct dir_hold *v = reallocarray(c->holds, cap, sizeof(*v));
			if (v == NULL)
				return -1;
			c->holds = v;
			c->holds_cap = cap;
		}
		if (*slot == NULL) {
			size_t len = strlen(key) + 1;
			if ((*slot = calloc(1, sizeof(**slot) + len)) == NULL)
				return -1;
			memcpy((*slot)->key, key, len);
			(*slot)->table = t;
		}
		c->holds[c->nholds++] = (struct dir_hold){ .entry = *slot, .count = 0 };
	}
	c->holds[i].count++;
	(*slot)->count++;
	t->total++;
	return 0;
}

static void dir_count_give(struct dir_client *c, struct dir_table *t, const char *key)
{
	struct dir_count *e = *dir_count_slot(t, key);
	size_t i;
	for (i = 0; i < c->nholds && c->holds[i].entry != e; i++)
		;
	if (e == NULL || i == c->nholds) {
		log_warn("end of session for %s without a counted one", key);
		return;
	}
	if (--c->holds[i].count == 0)
		c->holds[i] = c->holds[--c->nholds];
	dir_count_release(e, 1);
}

static enum ipc_conn_verdict dir_connect(struct dir_client *c, const char *ip)
{
	const struct config *cfg = c->srv->cfg;
	switch (dir_count_take(c, &c->srv->ips, ip, cfg->max_connections,
			       cfg->max_connections_per_ip)) {
	case 0: return IPC_CONN_OK;
	case 2: return IPC_CONN_TOO_MANY_FROM_IP;
	default: return IPC_CONN_TOO_MANY;
	}
}

/* ---- clients ---- */

static void dir_client_unlink_free(struct dir_client *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		c->srv->clients = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	for (size_t i = 0; i < c->nholds; i++)
		dir_count_release(c->holds[i].entry, c->holds[i].count);
	ipc_conn_free(&c->conn);
	free(c->holds);
	free(c);
}

/* A worker's connection closed (or it crashed): its counts go at once; the
 * client itself stays until its last password check has come back. */
static void dir_client_close_cb(struct ipc_conn *conn, void *ctx)
{
	struct dir_client *c = ctx;
	for (; c->nholds > 0; c->nholds--)
		dir_count_release(c->holds[c->nholds - 1].entry, c->holds[c->nholds - 1].count);
	ipc_conn_free(&c->conn);
	if (c->auth_pending == 0)
		dir_client_unlink_free(c);
}

static void dir_reply(struct dir_client *c, uint64_t id, struct ipc_writer *w)
{
	if (ipc_send(c->conn, IPC_DIR_REPLY, id, w) < 0)
		log_error("reply id=%" PRIu64 " too large or connection closed", id);
	ipc_writer_free(w);
}

static void dir_reply_u32(struct dir_client *c, uint64_t id, uint32_t v)
{
	struct ipc_writer w;
	ipc_writer_init(&w);
	ipc_put_u32(&w, v);
	dir_reply(c, id, &w);
}

/* "<Postmaster>" without a domain (RFC 5321 4.5.1) is the postmaster of
 * the first local domain that has one. */
struct dir_postmaster {
	struct account_db *db;
	struct account_targets *t;
	enum account_resolve_result res;
};

static void dir_postmaster_cb(const char *domain, void *ctx)
{
	struct dir_postmaster *pm = ctx;
	char address[SMTP_ADDRESS_MAX + 1];
	if (pm->res == ACCOUNT_RESOLVE_OK)
		return;
	snprintf(address, sizeof(address), "postmaster@%s", domain);
	account_targets_free(pm->t);
	pm->res = account_resolve(pm->db, address, pm->t);
}

static enum account_resolve_result dir_resolve(struct account_db *db, const char *address,
					       struct account_targets *t)
{
	if (strchr(address, '@') != NULL)
		return account_resolve(db, address, t);
	if (strcasecmp(address, "postmaster") != 0)
		return ACCOUNT_RESOLVE_NO_SUCH_USER;
	struct dir_postmaster pm = { db, t, ACCOUNT_RESOLVE_NO_SUCH_USER };
	if (account_domain_list(db, dir_postmaster_cb, &pm) < 0)
		return ACCOUNT_RESOLVE_ERROR;
	return pm.res;
}

/* The limits of one account: its override, else the configured default. */
static void dir_user_quota(struct dir_server *srv, const char *user, uint64_t *bytes_r,
			   uint64_t *messages_r)
{
	int64_t b = -1, m = -1;
	if (account_user_quota_get(srv->db, user, &b, &m) < 0)
		log_error("quota user=%s: lookup failed; using the default", user);
	*bytes_r = b >= 0 ? (uint64_t)b : srv->cfg->quota_bytes;
	*messages_r = m >= 0 ? (uint64_t)m : srv->cfg->quota_messages;
}

/* Is every local target over its quota (RFC 5321 452 4.2.2 / 552 5.2.2 at
 * RCPT)? An alias with one full member among others is accepted: the
 * deliverer refuses that member alone. Usage comes from each Maildir's
 * maildirsize (lib-store/quota.h). */
static bool dir_targets_full(struct dir_server *srv, const struct account_targets *t)
{
	unsigned local = 0, full = 0;
	for (size_t i = 0; i < t->count; i++) {
		if (!t->v[i].local)
			continue;
		local++;
		uint64_t qb, qm, ub, um;
		char root[4096];
		dir_user_quota(srv, t->v[i].address, &qb, &qm);
		if (qb == 0 && qm == 0)
			continue;
		if (account_maildir_path(srv->cfg->mail_dir, t->v[i].address, root,
					 sizeof(root)) < 0 ||
		    maildir_quota_usage(root, &ub, &um) < 0)
			continue;
		if ((qb != 0 && ub >= qb) || (qm != 0 && um >= qm))
			full++;
	}
	return local > 0 && full == local;
}

static void dir_rcpt(struct dir_client *c, uint64_t id, const char *address)
{
	struct account_targets t = { NULL, 0 };
	enum ipc_rcpt_result res = IPC_RCPT_TEMPFAIL;
	struct ipc_writer w;

	switch (dir_resolve(c->srv->db, address, &t)) {
	case ACCOUNT_RESOLVE_OK:
		res = dir_targets_full(c->srv, &t) ? c->srv->cfg->quota_exceeded == QUOTA_BOUNCE
			? IPC_RCPT_OVER_QUOTA_PERM : IPC_RCPT_OVER_QUOTA : IPC_RCPT_OK;
		break;
	case ACCOUNT_RESOLVE_NO_SUCH_USER: res = IPC_RCPT_NO_SUCH_USER; break;
	case ACCOUNT_RESOLVE_NOT_LOCAL: res = IPC_RCPT_NOT_LOCAL; break;
	case ACCOUNT_RESOLVE_ERROR: res = IPC_RCPT_TEMPFAIL; break;
	}
	ipc_writer_init(&w);
	ipc_put_u32(&w, res);
	ipc_put_u32(&w, (uint32_t)t.count);
	for (size_t i = 0; i < t.count; i++) {
		ipc_put_str(&w, t.v[i].address);
		ipc_put_u32(&w, t.v[i].local ? 1 : 0);
	}
	if (ipc_send(c->conn, IPC_DIR_REPLY, id, &w) < 0) {
		/* ALIAS_EXPAND_MAX long addresses can exceed IPC_FRAME_MAX. */
		log_error("rcpt address=%s: %zu targets do not fit in a reply", address,
			  t.count);
		ipc_writer_free(&w);
		ipc_writer_init(&w);
		ipc_put_u32(&w, IPC_RCPT_TEMPFAIL);
		ipc_put_u32(&w, 0);
		dir_reply(c, id, &w);
	} else {
		ipc_writer_free(&w);
	}
	account_targets_free(&t);
}

/* ---- password checks (worker threads) ---- */

static void dir_auth_job_free(struct dir_auth_job *job)
{
	if (job->password != NULL) {
		secure_zero(job->password, strlen(job->password));
		free(job->password);
	}
	free(job->hash);
	free(job->user);
	free(job);
}

/* Pool thread: the slow part. */
static void dir_auth_run(struct workpool_job *wjob)
{
	struct dir_auth_job *job = (struct dir_auth_job *)wjob;
	job->result = password_verify(job->hash, job->password);
	secure_zero(job->password, strlen(job->password));
}

/* Loop thread: answers one finished (or, with reply false, abandoned) check. */
static void dir_auth_finish(struct dir_auth_job *job, bool reply)
{
	struct dir_client *c = job->client;

	if (reply && c->conn != NULL) {
		enum ipc_auth_result res = job->result == 1 ? IPC_AUTH_OK :
					   job->result == 0 ? IPC_AUTH_FAIL :
					   IPC_AUTH_TEMPFAIL;
		if (job->result < 0)
			log_error("auth user=%s: stored password hash is unusable", job->user);
		uint64_t qb = 0, qm = 0;
		if (res == IPC_AUTH_OK)
			dir_user_quota(c->srv, job->user, &qb, &qm);
		struct ipc_writer w;
		ipc_writer_init(&w);
		ipc_put_u32(&w, res);
		ipc_put_str(&w, job->user);
		ipc_put_u64(&w, qb);
		ipc_put_u32(&w, (uint32_t)(qm > UINT32_MAX ? UINT32_MAX : qm));
		dir_reply(c, job->req_id, &w);
	}
	if (--c->auth_pending == 0 && c->conn == NULL)
		dir_client_unlink_free(c);
	dir_auth_job_free(job);
}

static void dir_auth_done(struct workpool_job *wjob)
{
	dir_auth_finish((struct dir_auth_job *)wjob, true);
}

/* At shutdown: checks never started are abandoned (this frees orphaned
 * clients). */
static void dir_auth_drop(struct workpool_job *wjob)
{
	dir_auth_finish((struct dir_auth_job *)wjob, false);
}

static void dir_auth(struct dir_client *c, uint64_t id, const char *user, const char *pw)
{
	struct dir_server *srv = c->srv;
	struct dir_auth_job *job = calloc(1, sizeof(*job));
	enum ipc_auth_result res = IPC_AUTH_TEMPFAIL;

	if (job == NULL || (job->user = strdup(user)) == NULL ||
	    (job->password = strdup(pw)) == NULL)
		goto fail;
	str_lcase(job->user);
	if (workpool_pending(srv->pool) >= DIR_AUTH_QUEUE_MAX) {
		log_error("auth: %zu password checks pending; answering tempfail",
			  workpool_pending(srv->pool));
		goto fail;
	}
	if (account_user_get_hash(srv->db, job->user, &job->hash) < 0) {
		log_error("auth user=%s: database error", job->user);
		goto fail;
	}
	job->client = c;
	job->req_id = id;
	c->auth_pending++;
	job->job.run = dir_auth_run;
	job->job.done = dir_auth_done;
	workpool_submit(srv->pool, &job->job);
	return;
fail:;
	struct ipc_writer w;
	ipc_writer_init(&w);
	ipc_put_u32(&w, res);
	ipc_put_str(&w, job != NULL ? job->user : NULL);
	dir_reply(c, id, &w);
	if (job != NULL)
		dir_auth_job_free(job);
}

/* ---- requests ---- */

static void dir_frame_cb(struct ipc_conn *conn, uint32_t type, uint64_t id,
			 struct ipc_reader *r, void *ctx)
{
	struct dir_client *c = ctx;
	const char *a = NULL, *b = NULL;

	switch (type) {
	case IPC_DIR_CONNECT:
	case IPC_DIR_DISCONNECT:
	case IPC_DIR_RCPT:
	case IPC_DIR_LOGIN:
	case IPC_DIR_LOGOUT:
		a = ipc_get_str(r);
		break;
	case IPC_DIR_AUTH:
	case IPC_DIR_SENDER:
		a = ipc_get_str(r);
		b = ipc_get_str(r);
		break;
	default:
		log_warn("unexpected frame type=%" PRIu32 " id=%" PRIu64, type, id);
		return;
	}
	if (r->error || a == NULL ||
	    ((type == IPC_DIR_AUTH || type == IPC_DIR_SENDER) && b == NULL)) {
		log_warn("malformed frame type=%" PRIu32 " id=%" PRIu64, type, id);
		goto out;
	}
	switch (type) {
	case IPC_DIR_CONNECT:
		dir_reply_u32(c, id, dir_connect(c, a));
		break;
	case IPC_DIR_DISCONNECT:
		dir_count_give(c, &c->srv->ips, a);
		break;
	case IPC_DIR_LOGIN: {
		int ret = dir_count_take(c, &c->srv->logins, a, 0, c->srv->cfg->imap_max_per_user);
		dir_reply_u32(c, id, ret == 0 ? IPC_CONN_OK : IPC_CONN_TOO_MANY);
		break;
	}
	case IPC_DIR_LOGOUT:
		dir_count_give(c, &c->srv->logins, a);
		break;
	case IPC_DIR_RCPT:
		dir_rcpt(c, id, a);
		break;
	case IPC_DIR_AUTH:
		dir_auth(c, id, a, b);
		break;
	case IPC_DIR_SENDER: {
		int ret = account_sender_allowed(c->srv->db, a, b);
		if (ret < 0)
			log_error("sender user=%s sender=%s: lookup failed", a, b);
		dir_reply_u32(c, id, ret < 0 ? 2 : (uint32_t)ret);
		break;
	}
	}
out:
	/* dir_auth() copied the password; wipe it from the frame too (evbuffer
	 * memory, writable although the reader hands it out as const). */
	if (type == IPC_DIR_AUTH && b != NULL)
		secure_zero((char *)b, strlen(b));
}

static void dir_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct dir_server *srv = arg;

	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
			    errno != ECONNABORTED)
				log_error("accept on %s: %s", DIR_SOCKET, strerror(errno));
			return;
		}
		struct dir_client *c = calloc(1, sizeof(*c));
		if (c == NULL || (c->conn = ipc_conn_new(srv->base, fd, dir_frame_cb,
							 dir_client_close_cb, c)) == NULL) {
			log_error("accept: out of memory");
			free(c);
			close(fd);
			continue;
		}
		c->srv = srv;
		c->next = srv->clients;
		if (c->next != NULL)
			c->next->prev = c;
		srv->clients = c;
	}
}

static void dir_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct dir_server *srv = arg;
	log_info("signal %d: stopping", (int)sig);
	event_base_loopexit(srv->base, NULL);
}

/* ---- main ---- */

int directory_main(const struct config *cfg)
{
	struct dir_server srv = { .cfg = cfg };
	const char *error;
	int lfd = -1, ret = 1;

	signal(SIGPIPE, SIG_IGN);

	if (account_db_open(cfg->db_path, true, &srv.db, &error) < 0) {
		log_error("account db %s: %s", cfg->db_path, error);
		goto out;
	}
	if ((srv.base = event_base_new()) == NULL) {
		log_error("event_base_new failed");
		goto out;
	}
	if ((lfd = ipc_listen_unix(DIR_SOCKET)) < 0) {
		log_error("listen on %s: %s", DIR_SOCKET, strerror(errno));
		goto out;
	}
	srv.listen_ev = event_new(srv.base, lfd, EV_READ | EV_PERSIST, dir_accept_cb, &srv);
	srv.sigterm_ev = evsignal_new(srv.base, SIGTERM, dir_signal_cb, &srv);
	srv.sigint_ev = evsignal_new(srv.base, SIGINT, dir_signal_cb, &srv);
	if (srv.listen_ev == NULL || srv.sigterm_ev == NULL ||
	    srv.sigint_ev == NULL || event_add(srv.listen_ev, NULL) < 0 ||
	    event_add(srv.sigterm_ev, NULL) < 0 ||
	    event_add(srv.sigint_ev, NULL) < 0) {
		log_error("cannot set up events");
		goto out;
	}

	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned want = ncpu < DIR_AUTH_THREADS_MIN ? DIR_AUTH_THREADS_MIN :
			ncpu > DIR_AUTH_THREADS_MAX ? DIR_AUTH_THREADS_MAX : (unsigned)ncpu;
	if ((srv.pool = workpool_new(srv.base, want, &error)) == NULL) {
		log_error("password check threads: %s", error);
		goto out;
	}

	log_info("ready socket=%s auth_threads=%u", DIR_SOCKET, workpool_threads(srv.pool));
	if (event_base_dispatch(srv.base) < 0)
		log_error("event loop failed");
	else
		ret = 0;
out:
	workpool_free(&srv.pool, dir_auth_drop);
	while (srv.clients != NULL)
		dir_client_unlink_free(srv.clients);
	struct dir_table *tables[] = { &srv.ips, &srv.logins };
	for (size_t t = 0; t < 2; t++) {
		for (size_t i = 0; i < DIR_IP_BUCKETS; i++) {
			while (tables[t]->buckets[i] != NULL) { /* only if counts leaked: a bug */
				struct dir_count *e = tables[t]->buckets[i];
				tables[t]->buckets[i] = e->next;
				free(e);
			}
		}
	}
	struct event *evs[] = { srv.listen_ev, srv.sigterm_ev, srv.sigint_ev };
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
		if (evs[i] != NULL)
			event_free(evs[i]);
	if (lfd >= 0)
		close(lfd);
	if (srv.base != NULL)
		event_base_free(srv.base);
	account_db_close(&srv.db);
	return ret;
}
