/*
 * deliver.c — the deliver process: local delivery into Maildir.
 *
 * Process: "deliver", one instance. Connects to the queue on DATA/run/q.sock,
 * sends IPC_DLV_HELLO and answers each IPC_DLV_REQUEST (queue id, recipient
 * index, mailbox, Maildir path) with one IPC_DLV_RESULT under the same
 * request id. The queue decides what and when; this process only copies a
 * committed spool file (read-only) into DATA/mail/... durably.
 *
 * Owns: the queue connection and a workpool of DLV_THREADS threads. A
 * delivery blocks on fsync (file and new/), so several run in parallel and
 * the filesystem can group their journal commits; the loop thread only
 * parses requests, sends results and logs. Delivery is idempotent (principle 1): the Maildir name is derived
 * from queue id + recipient index, and a name that is already there (a crash
 * after the rename, before the queue heard of it) is answered OK unwritten.
 */
#include "deliver/deliver.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <event2/event.h>

#include "lib-config/config.h"
#include "lib-queue/spool.h"
#include "lib-account/account.h"
#include "lib-store/maildir.h"
#include "lib-store/quota.h"
#include "deliver/remote.h"
#include "lib/ipc.h"
#include "lib/limits.h"
#include "lib/log.h"
#include "lib/util.h"
#include "lib/workpool.h"

#define DLV_SOCKET          "run/q.sock"
#define DLV_CONNECT_TIMEOUT 10000   /* ms, while the queue starts */
#define DLV_PENDING_MAX     10000   /* requests queued or running; beyond: TEMPFAIL */

struct dlv_job {
	struct dlv_job *next;
	uint64_t req_id;
	char id[17];
	uint32_t rcpt_idx;
	char *mailbox;          /* canonical "bob@example.com" */
	char *maildir;          /* absolute Maildir path */
	enum ipc_dlv_status status;
	bool recovered;         /* an earlier attempt may have written it */
	bool already;           /* found in the Maildir, nothing written */
	bool written;           /* tmp/<name> written, to be published */
	uint64_t size;          /* octets written (for the quota) */
	char name[MAILDIR_NAME_MAX];
	char text[512];
};

/* One batch at a time is made durable together (group commit). */
struct dlv_batch {
	struct workpool_job job;        /* first: the pool's view of it */
	struct dlv_server *srv;
	struct dlv_job *jobs;
	bool busy;
};

struct dlv_server {
	const struct config *cfg;
	struct event_base *base;
	struct ipc_conn *conn;  /* NULL once the queue has gone */
	struct event *sigterm_ev, *sigint_ev;
	struct workpool *pool;
	struct dlv_job *waiting, **waiting_tail;   /* not yet in a batch */
	size_t pending;                            /* waiting + in the batch */
	struct dlv_batch batch;
	struct remote *remote;                     /* the SMTP client */
	struct account_db *db;                     /* quota overrides; pool thread only */
};

static void dlv_job_free(struct dlv_job *job)
{
	free(job->mailbox);
	free(job->maildir);
	free(job);
}

static void dlv_set(struct dlv_job *job, enum ipc_dlv_status status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void dlv_set(struct dlv_job *job, enum ipc_dlv_status status, const char *fmt, ...)
{
	va_list ap;
	job->status = status;
	va_start(ap, fmt);
	vsnprintf(job->text, sizeof(job->text), fmt, ap);
	va_end(ap);
}

/* Only what no retry can fix is permanent; everything else (ENOSPC, EDQUOT,
 * EIO, EACCES an operator can correct, ...) is retried by the queue. */
static enum ipc_dlv_status dlv_errno_status(int err)
{
	return err == EINVAL || err == ENAMETOOLONG || err == ELOOP ? IPC_DLV_PERMFAIL :
	       IPC_DLV_TEMPFAIL;
}

/* Pool thread: would size more octets put the mailbox over its quota
 * (mailbox.quota*, or the user's override in the account database)? Then
 * the job fails, temporarily or for good as mailbox.quota_exceeded says
 * (RFC 3463 X.2.2), and true is returned. Trouble reading the limits or the
 * usage never blocks a delivery. */
static bool dlv_over_quota(struct dlv_server *srv, struct dlv_job *job, uint64_t size)
{
	const struct config *cfg = srv->cfg;
	const char *error;
	int64_t b = -1, m = -1;

	if (srv->db == NULL && account_db_open(cfg->db_path, false, &srv->db, &error) < 0) {
		log_warn("quota: account database: %s; delivering without a quota check", error);
		srv->db = NULL;
	}
	if (srv->db != NULL && account_user_quota_get(srv->db, job->mailbox, &b, &m) < 0)
		log_warn("quota user=%s: lookup failed; using the default", job->mailbox);
	uint64_t qb = b >= 0 ? (uint64_t)b : cfg->quota_bytes;
	uint64_t qm = m >= 0 ? (uint64_t)m : cfg->quota_messages;
	uint64_t ub, um;
	if ((qb == 0 && qm == 0) || maildir_quota_usage(job->maildir, &ub, &um) < 0)
		return false;
	if ((qb == 0 || ub + size <= qb) && (qm == 0 || um + 1 <= qm))
		return false;
	bool perm = cfg->quota_exceeded == QUOTA_BOUNCE;
	dlv_set(job, perm ? IPC_DLV_PERMFAIL : IPC_DLV_TEMPFAIL,
		"%s mailbox full (%" PRIu64 " of %" PRIu64 " bytes, %" PRIu64 " messages used)",
		perm ? "5.2.2" : "4.2.2", ub, qb, um);
	return true;
}

/* Pool thread: everything of one delivery up to a written tmp/<name>
 * (fsync'ed when sync). Copies every thread-local error string into
 * job->text before returning. */
static void dlv_prepare(struct dlv_server *srv, struct dlv_job *job, bool sync)
{
	const struct config *cfg = srv->cfg;
	struct spool_envelope *env = NULL;
	int fd = -1;
	off_t off;
	size_t len;
	const char *error;
	char prefix[SPOOL_STRING_MAX + SMTP_ADDRESS_MAX + 64];

	if (spool_read(cfg->spool_dir, job->id, &env, &fd, &off, &len, &error) < 0) {
		dlv_set(job, IPC_DLV_TEMPFAIL, "%s", error);
		goto out;
	}
	if (job->rcpt_idx >= env->nrcpts) {
		dlv_set(job, IPC_DLV_TEMPFAIL, "no recipient %" PRIu32 " in message",
			job->rcpt_idx);
		goto out;
	}
	/* Both come from checked SMTP input; refuse header injection anyway. */
	if (strpbrk(env->sender, "\r\n") != NULL || strpbrk(job->mailbox, "\r\n") != NULL) {
		dlv_set(job, IPC_DLV_PERMFAIL, "line break in sender or mailbox");
		goto out;
	}
	if (maildir_name(job->name, sizeof(job->name), env->queued_at, job->id, job->rcpt_idx,
			 cfg->hostname) < 0) {
		dlv_set(job, IPC_DLV_TEMPFAIL, "maildir name: %s", strerror(errno));
		goto out;
	}
	/* Only a delivery that may have happened before (crash, restart of
	 * a process) looks for an earlier copy: the check reads cur/. */
	int has = job->recovered ? maildir_has(job->maildir, job->name) : 0;
	if (has < 0) {
		dlv_set(job, IPC_DLV_TEMPFAIL, "maildir check: %s", strerror(errno));
		goto out;
	}
	if (has == 1) {
		job->already = true;
		dlv_set(job, IPC_DLV_OK, "already delivered");
		goto out;
	}
	int n = snprintf(prefix, sizeof(prefix), "Return-Path: <%s>\nDelivered-To: %s\n",
			 env->sender, job->mailbox);
	if (n < 0 || (size_t)n >= sizeof(prefix)) {
		dlv_set(job, IPC_DLV_PERMFAIL, "sender or mailbox too long");
		goto out;
	}
	job->size = (uint64_t)n + len;
	if (dlv_over_quota(srv, job, job->size))
		goto out;
	if (maildir_write_tmp(job->maildir, job->name, prefix, (size_t)n, fd, off, len, sync,
			      &error) < 0) {
		dlv_set(job, dlv_errno_status(errno), "%s", error);
		goto out;
	}
	job->written = true;
out:
	if (fd >= 0)
		close(fd);
	spool_envelope_free(&env);
}

/* syncfs() of every file system that holds a Maildir of the batch that is
 * at the given step; a failure fails those deliveries (temporarily). */
static void dlv_sync_batch(struct dlv_job *jobs, bool written)
{
	struct dlv_fs { dev_t dev; int ret; int err; } seen[32];
	size_t nseen = 0;
	for (struct dlv_job *job = jobs; job != NULL; job = job->next) {
		if (job->written != written || job->status != IPC_DLV_OK || job->already)
			continue;
		struct stat st;
		int ret = 0, err = 0;
		if (stat(job->maildir, &st) < 0) {
			ret = -1;
			err = errno;
		} else {
			size_t i;
			for (i = 0; i < nseen && seen[i].dev != st.st_dev; i++)
				;
			if (i == nseen) {
				/* More file systems than slots: sync each job's. */
				int r = fs_sync(job->maildir);
				if (nseen < sizeof(seen) / sizeof(seen[0]))
					seen[nseen++] = (struct dlv_fs){ st.st_dev, r, errno };
				ret = r;
				err = errno;
			} else {
				ret = seen[i].ret;
				err = seen[i].err;
			}
		}
		if (ret < 0) {
			dlv_set(job, IPC_DLV_TEMPFAIL, "syncfs %s: %s", job->maildir, strerror(err));
			if (written)
				maildir_discard_tmp(job->maildir, job->name);
			job->written = false;
		}
	}
}

/* Pool thread: a batch of deliveries. With sync_method = syncfs the data of
 * all its files is made durable with one flush per file system, then all
 * are renamed into new/, then one more flush makes the names durable: two
 * flushes per batch instead of two per message. The order (data before
 * name, name before the reply) is the same as one delivery's. */
static void dlv_batch_run(struct workpool_job *wjob)
{
	struct dlv_batch *b = (struct dlv_batch *)wjob;
	const struct config *cfg = b->srv->cfg;
	bool sync = cfg->sync_method == SYNC_FSYNC;
	const char *error;

	for (struct dlv_job *job = b->jobs; job != NULL; job = job->next) {
		dlv_set(job, IPC_DLV_OK, "delivered");
		dlv_prepare(b->srv, job, sync);
	}
	if (!sync)
		dlv_sync_batch(b->jobs, true);
	for (struct dlv_job *job = b->jobs; job != NULL; job = job->next) {
		if (!job->written)
			continue;
		job->written = false;
		/* Published and counted together: a recalculation of the usage
		 * sees both or neither (lib-store/quota.h). */
		int lock = maildir_quota_lock_shared(job->maildir);
		if (maildir_publish(job->maildir, job->name, sync, &error) < 0)
			dlv_set(job, dlv_errno_status(errno), "%s", error);
		else if (maildir_quota_add(job->maildir, (int64_t)job->size, 1) < 0)
			log_warn("quota %s: cannot record the delivery: %s", job->maildir,
				 strerror(errno));
		maildir_quota_unlock(lock);
	}
	if (!sync)
		dlv_sync_batch(b->jobs, false);
}

/* Loop thread: logs a finished delivery and answers the queue. */
static void dlv_finish(struct dlv_server *srv, struct dlv_job *job)
{
	srv->pending--;
	if (job->status == IPC_DLV_OK)
		log_info("%s id=%s to=%s maildir=%s",
			 job->already ? "already delivered" : "delivered",
			 job->id, job->mailbox, job->maildir);
	else if (job->status == IPC_DLV_TEMPFAIL)
		log_warn("deferred id=%s to=%s reason=%s", job->id, job->mailbox, job->text);
	else
		log_warn("failed id=%s to=%s reason=%s", job->id, job->mailbox, job->text);

	if (srv->conn != NULL) {
		struct ipc_writer w;
		ipc_writer_init(&w);
		ipc_put_str(&w, job->id);
		ipc_put_u32(&w, job->rcpt_idx);
		ipc_put_u32(&w, job->status);
		ipc_put_str(&w, job->text);
		if (ipc_send(srv->conn, IPC_DLV_RESULT, job->req_id, &w) < 0)
			log_error("result id=%s could not be sent", job->id);
		ipc_writer_free(&w);
	}
	dlv_job_free(job);
}

static void dlv_batch_done(struct workpool_job *wjob);

/* Loop thread: starts the next batch with what has been waiting. */
static void dlv_kick(struct dlv_server *srv)
{
	struct dlv_batch *b = &srv->batch;
	if (b->busy || srv->waiting == NULL)
		return;
	b->jobs = srv->waiting;
	srv->waiting = NULL;
	srv->waiting_tail = &srv->waiting;
	b->busy = true;
	workpool_submit(srv->pool, &b->job);
}

static void dlv_batch_done(struct workpool_job *wjob)
{
	struct dlv_batch *b = (struct dlv_batch *)wjob;
	struct dlv_job *job = b->jobs;
	b->jobs = NULL;
	b->busy = false;
	while (job != NULL) {
		struct dlv_job *next = job->next;
		dlv_finish(b->srv, job);
		job = next;
	}
	dlv_kick(b->srv);
}

static void dlv_free_list(struct dlv_job *job)
{
	while (job != NULL) {
		struct dlv_job *next = job->next;
		dlv_job_free(job);
		job = next;
	}
}

/* At shutdown: a batch that never started is dropped (the queue asks
 * again, flagged as recovered). */
static void dlv_batch_drop(struct workpool_job *wjob)
{
	struct dlv_batch *b = (struct dlv_batch *)wjob;
	dlv_free_list(b->jobs);
	b->jobs = NULL;
	b->busy = false;
}

static void dlv_frame_cb(struct ipc_conn *conn, uint32_t type, uint64_t req_id,
			 struct ipc_reader *r, void *ctx)
{
	struct dlv_server *srv = ctx;

	if (type == IPC_DLV_REMOTE && srv->remote != NULL) {
		remote_job(srv->remote, req_id, r);
		return;
	}
	if (type != IPC_DLV_REQUEST) {
		log_warn("unexpected frame type=%" PRIu32 " id=%" PRIu64, type, req_id);
		return;
	}
	const char *id = ipc_get_str(r);
	uint32_t rcpt_idx = ipc_get_u32(r);
	const char *mailbox = ipc_get_str(r);
	const char *maildir = ipc_get_str(r);
	uint32_t flags = ipc_get_u32(r);
	if (r->error || id == NULL || mailbox == NULL || maildir == NULL ||
	    !queue_id_valid(id)) {
		log_warn("malformed delivery request id=%" PRIu64, req_id);
		return;
	}

	struct dlv_job *job = calloc(1, sizeof(*job));
	if (job == NULL || (job->mailbox = strdup(mailbox)) == NULL ||
	    (job->maildir = strdup(maildir)) == NULL) {
		if (job != NULL)
			dlv_job_free(job);
		job = NULL;
	}
	if (job == NULL || srv->pending >= DLV_PENDING_MAX || maildir[0] != '/') {
		const char *why = job == NULL ? "out of memory" :
				  maildir[0] != '/' ? "maildir path not absolute" :
				  "too many deliveries pending";
		log_warn("deferred id=%s to=%s reason=%s", id, mailbox, why);
		struct ipc_writer w;
		ipc_writer_init(&w);
		ipc_put_str(&w, id);
		ipc_put_u32(&w, rcpt_idx);
		ipc_put_u32(&w, IPC_DLV_TEMPFAIL);
		ipc_put_str(&w, why);
		if (ipc_send(conn, IPC_DLV_RESULT, req_id, &w) < 0)
			log_error("result id=%s could not be sent", id);
		ipc_writer_free(&w);
		if (job != NULL)
			dlv_job_free(job);
		return;
	}
	job->req_id = req_id;
	memcpy(job->id, id, sizeof(job->id));
	job->rcpt_idx = rcpt_idx;
	job->recovered = (flags & IPC_DLV_RECOVERED) != 0;
	srv->pending++;
	*srv->waiting_tail = job;
	srv->waiting_tail = &job->next;
	dlv_kick(srv);
}

static void dlv_remote_result(uint64_t reqid, const struct ipc_writer *w, void *ctx)
{
	struct dlv_server *srv = ctx;
	if (srv->conn == NULL || ipc_send(srv->conn, IPC_DLV_REMOTE_RESULT, reqid, w) < 0)
		log_error("remote delivery result %" PRIu64 " could not be sent", reqid);
}

static void dlv_close_cb(struct ipc_conn *conn, void *ctx)
{
	struct dlv_server *srv = ctx;
	log_info("queue connection closed; exiting (%zu deliveries pending: running ones "
		 "finish, queued ones are dropped)", srv->pending);
	ipc_conn_free(&srv->conn);
	/* The master restarts us; running deliveries finish in the teardown. */
	event_base_loopexit(srv->base, NULL);
}

static void dlv_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct dlv_server *srv = arg;
	log_info("signal %d: stopping", (int)sig);
	event_base_loopexit(srv->base, NULL);
}

int deliver_main(const struct config *cfg)
{
	struct dlv_server srv = { .cfg = cfg };
	const char *error;
	int fd = -1, ret = 1;

	srv.waiting_tail = &srv.waiting;
	srv.batch.srv = &srv;
	srv.batch.job.run = dlv_batch_run;
	srv.batch.job.done = dlv_batch_done;
	signal(SIGPIPE, SIG_IGN);
	if ((srv.base = event_base_new()) == NULL) {
		log_error("event_base_new failed");
		goto out;
	}
	srv.sigterm_ev = evsignal_new(srv.base, SIGTERM, dlv_signal_cb, &srv);
	srv.sigint_ev = evsignal_new(srv.base, SIGINT, dlv_signal_cb, &srv);
	if (srv.sigterm_ev == NULL || srv.sigint_ev == NULL ||
	    event_add(srv.sigterm_ev, NULL) < 0 || event_add(srv.sigint_ev, NULL) < 0) {
		log_error("cannot set up events");
		goto out;
	}
	if ((srv.pool = workpool_new(srv.base, 1, &error)) == NULL) {
		log_error("delivery threads: %s", error);
		goto out;
	}
	if ((srv.remote = remote_new(srv.base, cfg, dlv_remote_result, &srv, &error)) == NULL) {
		log_error("outbound SMTP client: %s", error);
		goto out;
	}
	if ((fd = ipc_connect_unix(DLV_SOCKET, DLV_CONNECT_TIMEOUT)) < 0) {
		log_error("connect to queue %s: %s", DLV_SOCKET, strerror(errno));
		goto out;
	}
	if ((srv.conn = ipc_conn_new(srv.base, fd, dlv_frame_cb, dlv_close_cb, &srv)) == NULL) {
		log_error("queue connection: out of memory");
		close(fd);
		goto out;
	}
	if (ipc_send_raw(srv.conn, IPC_DLV_HELLO, 0, NULL, 0) < 0) {
		log_error("cannot send hello to the queue");
		goto out;
	}
	log_info("ready queue=%s threads=%u", DLV_SOCKET, workpool_threads(srv.pool));
	if (event_base_dispatch(srv.base) < 0)
		log_error("event loop failed");
	else
		ret = 0;
out:
	/* Running deliveries finish; queued ones are dropped: the queue asks
	 * again (flagged as recovered) and maildir_has() makes a repeat
	 * harmless. Finished results are logged, not sent. */
	remote_free(&srv.remote);
	ipc_conn_free(&srv.conn);
	workpool_free(&srv.pool, dlv_batch_drop);
	account_db_close(&srv.db);   /* the pool's threads are gone */
	dlv_free_list(srv.waiting);
	struct event *evs[] = { srv.sigterm_ev, srv.sigint_ev };
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
		if (evs[i] != NULL)
			event_free(evs[i]);
	if (srv.base != NULL)
		event_base_free(srv.base);
	return ret;
}
