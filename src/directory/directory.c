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
 *
 * Login security (issue 6; rules in dir-security.c): at connect, the IP
 * access rules of the listener and IP blocks; at login, app passwords,
 * 2FA, allow-from lists, account locks and password expiry. Failures are
 * counted per IP and per account in postern.db (so the state survives
 * restarts and the CLI sees it) and a FAIL reply waits on an event timer,
 * longer after each failure of the IP. Every login goes to the audit log.
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
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "directory/dir-security.h"
#include "lib-account/account.h"
#include "lib-account/account-security.h"
#include "lib-store/quota.h"
#include "lib-config/config.h"
#include "lib/audit.h"
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

/* One login, from IPC_DIR_AUTH to its (possibly delayed) reply. */
struct dir_auth_job {
	struct workpool_job job;        /* first: the pool's view of it */
	struct dir_client *client;
	uint64_t req_id;
	char *hash;             /* NULL for an unknown user: same cost, dummy hash */
	char *password;         /* wiped by the worker */
	char *user;             /* lower-cased: the canonical user */
	char ip[64];            /* the client's, or "unknown" from old front-ends */
	char tkey[ACCOUNT_THROTTLE_KEY_MAX];    /* its throttle key (IPv6: the /64) */
	enum ipc_auth_proto proto;
	char mech[16];          /* "PLAIN", "LOGIN" */
	int result;             /* password_verify() */
	struct dir_login_facts facts;
	char *app_name;         /* the app password that matched, or NULL */
	char *app_allow;        /* its own allow-from list, or NULL */
	enum ipc_auth_result res;
	struct event *delay_ev; /* a FAIL reply waiting out the throttle delay */
	struct dir_auth_job *prev, *next;       /* in dir_server.delayed */
};

struct dir_server {
	const struct config *cfg;       /* the current one: started with, or reloaded */
	struct config *loaded;          /* the last one re-read on SIGHUP (owned), or NULL */
	struct event_base *base;
	struct account_db *db;
	struct event *listen_ev, *sigterm_ev, *sigint_ev, *sighup_ev;
	struct dir_client *clients;
	struct dir_table ips;           /* connections per client IP */
	struct dir_table logins;        /* IMAP/POP3 sessions per account */
	struct workpool *pool;  /* password checks */
	struct dir_auth_job *delayed;   /* FAIL replies on their throttle timer */
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

/* ---- logins: password checks (worker threads) and the security rules ---- */

static void dir_auth_job_free(struct dir_auth_job *job)
{
	if (job->password != NULL) {
		secure_zero(job->password, strlen(job->password));
		free(job->password);
	}
	if (job->delay_ev != NULL)
		event_free(job->delay_ev);
	free(job->hash);
	free(job->user);
	free(job->app_name);
	free(job->app_allow);
	free(job);
}

/* Pool thread: the slow part. */
static void dir_auth_run(struct workpool_job *wjob)
{
	struct dir_auth_job *job = (struct dir_auth_job *)wjob;
	job->result = password_verify(job->hash, job->password);
	secure_zero(job->password, strlen(job->password));
}

/* Sends the reply (unless the worker has gone or reply is false) and
 * forgets the job; the last job of a closed worker frees it. */
static void dir_auth_finish(struct dir_auth_job *job, bool reply)
{
	struct dir_client *c = job->client;

	if (reply && c->conn != NULL) {
		uint64_t qb = 0, qm = 0;
		if (job->res == IPC_AUTH_OK)
			dir_user_quota(c->srv, job->user, &qb, &qm);
		struct ipc_writer w;
		ipc_writer_init(&w);
		ipc_put_u32(&w, job->res);
		ipc_put_str(&w, job->user);
		ipc_put_u64(&w, qb);
		ipc_put_u32(&w, (uint32_t)(qm > UINT32_MAX ? UINT32_MAX : qm));
		dir_reply(c, job->req_id, &w);
	}
	if (--c->auth_pending == 0 && c->conn == NULL)
		dir_client_unlink_free(c);
	dir_auth_job_free(job);
}

static void dir_auth_delay_unlink(struct dir_auth_job *job)
{
	struct dir_server *srv = job->client->srv;
	if (job->prev != NULL)
		job->prev->next = job->next;
	else
		srv->delayed = job->next;
	if (job->next != NULL)
		job->next->prev = job->prev;
	job->prev = job->next = NULL;
}

/* The throttle delay of a FAIL reply is over. */
static void dir_auth_delay_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dir_auth_job *job = arg;
	(void)fd;
	(void)what;
	dir_auth_delay_unlink(job);
	dir_auth_finish(job, true);
}

/* Answers now, or after delay_ms on an event timer (the loop never
 * sleeps; other clients go on meanwhile). */
static void dir_auth_reply_after(struct dir_auth_job *job, unsigned delay_ms)
{
	struct dir_server *srv = job->client->srv;

	if (delay_ms == 0 || job->client->conn == NULL) {
		dir_auth_finish(job, true);
		return;
	}
	struct timeval tv = { .tv_sec = delay_ms / 1000, .tv_usec = (delay_ms % 1000) * 1000 };
	if ((job->delay_ev = evtimer_new(srv->base, dir_auth_delay_cb, job)) == NULL ||
	    evtimer_add(job->delay_ev, &tv) < 0) {
		log_error("auth user=%s: cannot delay the reply", job->user);
		dir_auth_finish(job, true);
		return;
	}
	job->next = srv->delayed;
	if (job->next != NULL)
		job->next->prev = job;
	srv->delayed = job;
}

static void dir_auth_tempfail(struct dir_auth_job *job, const char *what)
{
	log_error("auth user=%s ip=%s: %s; answering tempfail", job->user, job->ip, what);
	job->res = IPC_AUTH_TEMPFAIL;
	dir_auth_finish(job, true);
}

/* The facts that matter once a credential matched: 2FA, allow-from lists,
 * the account lock, expiry. 0, or -1 on a database error. */
static int dir_auth_credential_facts(struct dir_server *srv, struct dir_auth_job *job,
				     time_t now)
{
	struct dir_login_facts *f = &job->facts;
	const struct config *cfg = srv->cfg;
	enum account_2fa_state tfa = ACCOUNT_2FA_OFF;
	char *cidrs = NULL;
	time_t until;
	int ret;

	if (!f->app_password) {
		if (account_2fa_state(srv->db, job->user, &tfa) < 0)
			return -1;
		f->twofa_on = tfa == ACCOUNT_2FA_ON;
	}
	if ((ret = account_allow_from_get(srv->db, job->user, &cidrs)) < 0)
		return -1;
	f->allow_from_ok = ret == 0 || cidrs == NULL || cidrs[0] == '\0' ||
			   account_cidr_list_match(cidrs, job->ip);
	free(cidrs);
	if (f->app_password && job->app_allow != NULL && job->app_allow[0] != '\0' &&
	    !account_cidr_list_match(job->app_allow, job->ip))
		f->allow_from_ok = false;
	if ((ret = account_block_get(srv->db, ACCOUNT_BLOCK_ACCOUNT, job->user, now, &until)) < 0)
		return -1;
	f->account_locked = ret == 1;
	if (f->account_locked) {
		if ((ret = account_fail_ip_tried(srv->db, job->tkey, job->user, now,
						 cfg->failure_window)) < 0)
			return -1;
		f->ip_tried_account = ret > 0;
	}
	if (!f->app_password && cfg->password_max_age != 0) {
		if ((ret = account_password_expired_after(srv->db, job->user,
							  cfg->password_max_age, time(NULL))) < 0)
			return -1;
		f->expired = ret == 1;
	}
	return 0;
}

/*
 * Decides a login whose credential was checked (or that needs no check:
 * blocked IP), records the outcome (failure counters, blocks, app password
 * use, audit log, operational log) and replies, a FAIL after the throttle
 * delay.
 */
static void dir_auth_conclude(struct dir_auth_job *job)
{
	struct dir_server *srv = job->client->srv;
	const struct config *cfg = srv->cfg;
	struct dir_login_facts *f = &job->facts;
	time_t now = time(NULL);
	const char *reason;
	const char *proto = dir_login_proto_name(job->proto);
	char credential[96];
	unsigned delay = 0;

	f->lock_mode = cfg->account_lock;
	if (!f->ip_blocked && f->user_exists && (f->app_password || f->password_ok) &&
	    dir_auth_credential_facts(srv, job, now) < 0) {
		dir_auth_tempfail(job, "database error");
		return;
	}
	job->res = dir_login_decide(f, &reason);

	credential[0] = '\0';
	if (f->app_password)
		snprintf(credential, sizeof(credential), "app_password:%s", job->app_name);
	else if (f->password_ok)
		snprintf(credential, sizeof(credential), "password");

	switch (job->res) {
	case IPC_AUTH_OK:
		/* Only this IP's record against this account: the IP-wide count
		 * ages out, so owning one account does not reset the count of
		 * guesses at others. */
		if (account_fail_clear_ip_account(srv->db, job->tkey, job->user) < 0)
			log_error("auth user=%s ip=%s: cannot clear failures", job->user, job->ip);
		if (f->app_password &&
		    account_app_password_used(srv->db, job->user, job->app_name, job->ip) < 0)
			log_error("auth user=%s: cannot record the use of app password %s",
				  job->user, job->app_name);
		audit_event("login", "result", "ok", "address", job->user, "ip", job->ip,
			    "protocol", proto, "mechanism", job->mech, "credential", credential,
			    NULL);
		break;
	case IPC_AUTH_EXPIRED:
		log_warn("auth user=%s ip=%s proto=%s: password expired, set a new one",
			 job->user, job->ip, proto);
		audit_event("login", "result", "fail", "address", job->user, "ip", job->ip,
			    "protocol", proto, "mechanism", job->mech, "credential", credential,
			    "reason", reason, NULL);
		break;
	default: {
		int n;
		if (f->ip_blocked) {
			/* No check was made: the reply still takes as long as the
			 * failures that led to the block. */
			n = account_fail_count(srv->db, ACCOUNT_BLOCK_IP, job->tkey, now,
					       cfg->failure_window);
			if (n < (int)cfg->max_failures_per_ip)
				n = (int)cfg->max_failures_per_ip;
		} else {
			n = dir_security_record_failure(srv->db, cfg, job->tkey,
							f->user_exists ? job->user : NULL, now);
		}
		delay = dir_login_delay_ms(cfg->auth_delay_ms, n > 0 ? (unsigned)n : 1);
		log_warn("auth failed ip=%s user=%s proto=%s reason=%s failures=%d delay=%ums",
			 job->ip, job->user, proto, reason, n, delay);
		audit_event("login", "result", "fail", "address", job->user, "ip", job->ip,
			    "protocol", proto, "mechanism", job->mech,
			    "credential", credential[0] != '\0' ? credential : NULL,
			    "reason", reason, NULL);
		break;
	}
	}
	dir_auth_reply_after(job, delay);
}

static void dir_auth_done(struct workpool_job *wjob)
{
	struct dir_auth_job *job = (struct dir_auth_job *)wjob;
	if (job->result < 0) {
		dir_auth_tempfail(job, "stored password hash is unusable");
		return;
	}
	job->facts.password_ok = job->result == 1 && job->facts.user_exists;
	dir_auth_conclude(job);
}

/* At shutdown: checks never started are abandoned (this frees orphaned
 * clients). */
static void dir_auth_drop(struct workpool_job *wjob)
{
	dir_auth_finish((struct dir_auth_job *)wjob, false);
}

/*
 * One login (IPC_DIR_AUTH): the cheap checks here on the loop thread (IP
 * block, user, app passwords: a hash and an indexed lookup), argon2id for
 * the main password on the pool; dir_auth_conclude() decides.
 */
static void dir_auth(struct dir_client *c, uint64_t id, const char *user, const char *pw,
		     const char *ip, enum ipc_auth_proto proto, const char *mech)
{
	struct dir_server *srv = c->srv;
	struct dir_auth_job *job = calloc(1, sizeof(*job));
	time_t now = time(NULL), until;
	unsigned scope = 0;
	int ret;

	if (job == NULL || (job->user = strdup(user)) == NULL ||
	    (job->password = strdup(pw)) == NULL) {
		log_error("auth: out of memory");
		struct ipc_writer w;
		ipc_writer_init(&w);
		ipc_put_u32(&w, IPC_AUTH_TEMPFAIL);
		ipc_put_str(&w, NULL);
		dir_reply(c, id, &w);
		if (job != NULL)
			dir_auth_job_free(job);
		return;
	}
	str_lcase(job->user);
	snprintf(job->ip, sizeof(job->ip), "%s", ip);
	if (account_throttle_key(job->ip, job->tkey, sizeof(job->tkey)) < 0)
		snprintf(job->tkey, sizeof(job->tkey), "%s", DIR_LOGIN_IP_UNKNOWN);
	snprintf(job->mech, sizeof(job->mech), "%s", mech);
	job->proto = proto;
	job->client = c;
	job->req_id = id;
	c->auth_pending++;

	if (workpool_pending(srv->pool) >= DIR_AUTH_QUEUE_MAX) {
		dir_auth_tempfail(job, "too many password checks pending");
		return;
	}
	if ((ret = account_block_get(srv->db, ACCOUNT_BLOCK_IP, job->tkey, now, &until)) < 0) {
		dir_auth_tempfail(job, "database error (blocks)");
		return;
	}
	if (ret == 1) {
		job->facts.ip_blocked = true;
		dir_auth_conclude(job);
		return;
	}
	if ((ret = account_user_get_hash(srv->db, job->user, &job->hash)) < 0) {
		dir_auth_tempfail(job, "database error");
		return;
	}
	job->facts.user_exists = ret == 1;
	if (job->facts.user_exists) {
		ret = account_app_password_match(srv->db, job->user, job->password,
						 &job->app_name, &scope, &job->app_allow);
		if (ret < 0) {
			dir_auth_tempfail(job, "database error (app passwords)");
			return;
		}
		if (ret == 1) {
			job->facts.app_password = true;
			job->facts.app_scope_ok = (scope & dir_login_proto_scope(proto)) != 0;
			secure_zero(job->password, strlen(job->password));
			dir_auth_conclude(job);
			return;
		}
	}
	job->job.run = dir_auth_run;
	job->job.done = dir_auth_done;
	workpool_submit(srv->pool, &job->job);
}

/* ---- requests ---- */

/* IPC_DIR_CONNECT: access rules, then IP blocks, then the counts. */
static enum ipc_conn_verdict dir_connect_check(struct dir_client *c, const char *ip,
					       enum listener_kind kind)
{
	struct dir_server *srv = c->srv;
	const char *name = listener_kind_name(kind);
	char key[ACCOUNT_THROTTLE_KEY_MAX];
	time_t until;

	switch (account_access_check(srv->db, ip, name)) {
	case 0:
		log_info("connect denied ip=%s listener=%s: access rule", ip, name);
		return IPC_CONN_DENIED;
	case -1:
		/* A broken database must not lock every client out. */
		log_error("connect ip=%s listener=%s: access rules unreadable; allowing", ip, name);
		break;
	default:
		break;
	}
	/* Blocks are kept per throttle key (an IPv6 client's /64). */
	if (account_throttle_key(ip, key, sizeof(key)) < 0)
		snprintf(key, sizeof(key), "%s", DIR_LOGIN_IP_UNKNOWN);
	switch (account_block_get(srv->db, ACCOUNT_BLOCK_IP, key, time(NULL), &until)) {
	case 1:
		log_info("connect refused ip=%s listener=%s: blocked after failed logins", ip,
			 name);
		return IPC_CONN_BLOCKED;
	case -1:
		log_error("connect ip=%s: block state unreadable; allowing", ip);
		break;
	default:
		break;
	}
	return dir_connect(c, ip);
}

static void dir_frame_cb(struct ipc_conn *conn, uint32_t type, uint64_t id,
			 struct ipc_reader *r, void *ctx)
{
	struct dir_client *c = ctx;
	const char *a = NULL, *b = NULL, *ip = DIR_LOGIN_IP_UNKNOWN, *mech = "unknown";
	uint32_t kind = LISTENER_SMTP, proto = IPC_PROTO_SMTP;

	switch (type) {
	case IPC_DIR_CONNECT:
		a = ipc_get_str(r);
		/* Front-ends not yet sending the listener kind: "smtp". */
		if (!r->error && r->left > 0)
			kind = ipc_get_u32(r);
		break;
	case IPC_DIR_DISCONNECT:
	case IPC_DIR_RCPT:
	case IPC_DIR_LOGIN:
	case IPC_DIR_LOGOUT:
		a = ipc_get_str(r);
		break;
	case IPC_DIR_AUTH:
		a = ipc_get_str(r);
		b = ipc_get_str(r);
		/* The login context (ip, protocol, mechanism) may be missing at
		 * the end of frames from front-ends that predate it. */
		if (!r->error && r->left > 0) {
			ip = ipc_get_str(r);
			proto = ipc_get_u32(r);
			mech = ipc_get_str(r);
		}
		break;
	case IPC_DIR_SENDER:
		a = ipc_get_str(r);
		b = ipc_get_str(r);
		break;
	default:
		log_warn("unexpected frame type=%" PRIu32 " id=%" PRIu64, type, id);
		return;
	}
	if (r->error || a == NULL ||
	    ((type == IPC_DIR_AUTH || type == IPC_DIR_SENDER) && b == NULL) ||
	    (type == IPC_DIR_CONNECT && kind >= LISTENER_COUNT) ||
	    (type == IPC_DIR_AUTH && (ip == NULL || mech == NULL ||
				      dir_login_proto_name((enum ipc_auth_proto)proto) == NULL))) {
		log_warn("malformed frame type=%" PRIu32 " id=%" PRIu64, type, id);
		goto out;
	}
	switch (type) {
	case IPC_DIR_CONNECT:
		dir_reply_u32(c, id, dir_connect_check(c, a, (enum listener_kind)kind));
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
		dir_auth(c, id, a, b, ip, (enum ipc_auth_proto)proto, mech);
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

/*
 * SIGHUP (the master forwards `postern reload`): re-reads the configuration
 * file so security.*, the connection limits and audit_log apply without a
 * restart. The config directory_main() was given belongs to its caller and
 * stays alive; only configs loaded here are freed (the previous one when a
 * newer one replaces it: nothing keeps a pointer into it across events).
 * data_dir and the database path take effect after a restart.
 */
static void dir_reload_cb(evutil_socket_t sig, short what, void *arg)
{
	struct dir_server *srv = arg;
	struct config *cfg = NULL;
	char *errors = NULL;
	(void)sig;
	(void)what;

	if (srv->cfg->path == NULL) {
		log_warn("reload: configuration file unknown; keeping the running one");
		return;
	}
	if (config_load(srv->cfg->path, &cfg, &errors) < 0) {
		log_error("reload: %s has errors; keeping the running configuration",
			  srv->cfg->path);
		free(errors);
		return;
	}
	if (strcmp(cfg->db_path, srv->cfg->db_path) != 0)
		log_warn("reload: the database path changed; takes effect after a restart");
	srv->cfg = cfg;
	config_free(&srv->loaded);
	srv->loaded = cfg;
	audit_init(cfg->audit_log);
	log_info("reload: configuration re-read");
}

/* ---- main ---- */

int directory_main(const struct config *cfg)
{
	struct dir_server srv = { .cfg = cfg };
	const char *error;
	int lfd = -1, ret = 1;

	signal(SIGPIPE, SIG_IGN);
	audit_init(cfg->audit_log);

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
	srv.sighup_ev = evsignal_new(srv.base, SIGHUP, dir_reload_cb, &srv);
	if (srv.listen_ev == NULL || srv.sigterm_ev == NULL ||
	    srv.sigint_ev == NULL || srv.sighup_ev == NULL ||
	    event_add(srv.listen_ev, NULL) < 0 ||
	    event_add(srv.sigterm_ev, NULL) < 0 ||
	    event_add(srv.sigint_ev, NULL) < 0 || event_add(srv.sighup_ev, NULL) < 0) {
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
	while (srv.delayed != NULL) {   /* FAIL replies still on their timer */
		struct dir_auth_job *job = srv.delayed;
		dir_auth_delay_unlink(job);
		dir_auth_finish(job, false);
	}
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
	struct event *evs[] = { srv.listen_ev, srv.sigterm_ev, srv.sigint_ev, srv.sighup_ev };
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
		if (evs[i] != NULL)
			event_free(evs[i]);
	if (lfd >= 0)
		close(lfd);
	if (srv.base != NULL)
		event_base_free(srv.base);
	account_db_close(&srv.db);
	config_free(&srv.loaded);
	return ret;
}
