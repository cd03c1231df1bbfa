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

#include <event2/event.h>

#include "lib-config/config.h"
#include "lib-queue/spool.h"
#include "lib-store/maildir.h"
#include "lib/ipc.h"
#include "lib/limits.h"
#include "lib/log.h"
#include "lib/util.h"
#include "lib/workpool.h"

#define DLV_SOCKET          "run/q.sock"
#define DLV_CONNECT_TIMEOUT 10000   /* ms, while the queue starts */
#define DLV_THREADS         4
#define DLV_PENDING_MAX     10000   /* requests queued or running; beyond: TEMPFAIL */

struct dlv_job {
	struct workpool_job job;        /* first: the pool's view of it */
	struct dlv_server *srv;
	uint64_t req_id;
	char id[17];
	uint32_t rcpt_idx;
	char *mailbox;          /* canonical "bob@example.com" */
	char *maildir;          /* absolute Maildir path */
	enum ipc_dlv_status status;
	bool recovered;         /* an earlier attempt may have written it */
	bool already;           /* found in the Maildir, nothing written */
	char text[512];
};

struct dlv_server {
	const struct config *cfg;
	struct event_base *base;
	struct ipc_conn *conn;  /* NULL once the queue has gone */
	struct event *sigterm_ev, *sigint_ev;
	struct workpool *pool;
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

/* Worker thread: one delivery. Copies every thread-local error string into
 * job->text before returning. */
static void dlv_run(const struct config *cfg, struct dlv_job *job)
{
	struct spool_envelope *env = NULL;
	int fd = -1;
	off_t off;
	size_t len;
	const char *error;
	char name[MAILDIR_NAME_MAX];
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
	if (maildir_name(name, sizeof(name), env->queued_at, job->id, job->rcpt_idx,
			 cfg->hostname) < 0) {
		dlv_set(job, IPC_DLV_TEMPFAIL, "maildir name: %s", strerror(errno));
		goto out;
	}
	/* Only a delivery that may have happened before (crash, restart of
	 * a process) looks for an earlier copy: the check reads cur/. */
	int has = job->recovered ? maildir_has(job->maildir, name) : 0;
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
	if (maildir_deliver(job->maildir, name, prefix, (size_t)n, fd, off, len, &error) < 0) {
		dlv_set(job, dlv_errno_status(errno), "%s", error);
		goto out;
	}
	dlv_set(job, IPC_DLV_OK, "delivered");
out:
	if (fd >= 0)
		close(fd);
	spool_envelope_free(&env);
}

/* Loop thread: logs a finished delivery and answers the queue. */
static void dlv_finish(struct workpool_job *wjob)
{
	struct dlv_job *job = (struct dlv_job *)wjob;
	struct dlv_server *srv = job->srv;
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

static void dlv_job_run(struct workpool_job *wjob)
{
	struct dlv_job *job = (struct dlv_job *)wjob;
	dlv_run(job->srv->cfg, job);
}

static void dlv_job_drop(struct workpool_job *wjob)
{
	dlv_job_free((struct dlv_job *)wjob);
}

static void dlv_frame_cb(struct ipc_conn *conn, uint32_t type, uint64_t req_id,
			 struct ipc_reader *r, void *ctx)
{
	struct dlv_server *srv = ctx;

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
	if (job == NULL || workpool_pending(srv->pool) >= DLV_PENDING_MAX || maildir[0] != '/') {
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
	job->srv = srv;
	job->job.run = dlv_job_run;
	job->job.done = dlv_finish;
	workpool_submit(srv->pool, &job->job);
}

static void dlv_close_cb(struct ipc_conn *conn, void *ctx)
{
	struct dlv_server *srv = ctx;
	log_info("queue connection closed; exiting (%zu deliveries pending: running ones "
		 "finish, queued ones are dropped)", workpool_pending(srv->pool));
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
	if ((srv.pool = workpool_new(srv.base, DLV_THREADS, &error)) == NULL) {
		log_error("delivery threads: %s", error);
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
	ipc_conn_free(&srv.conn);
	workpool_free(&srv.pool, dlv_job_drop);
	struct event *evs[] = { srv.sigterm_ev, srv.sigint_ev };
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
		if (evs[i] != NULL)
			event_free(evs[i]);
	if (srv.base != NULL)
		event_base_free(srv.base);
	return ret;
}
