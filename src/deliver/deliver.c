/*
 * deliver.c — the deliver process: local delivery into Maildir.
 *
 * Process: "deliver", one instance. Connects to the queue on DATA/run/q.sock,
 * sends IPC_DLV_HELLO and answers each IPC_DLV_REQUEST (queue id, recipient
 * index, mailbox, Maildir path) with one IPC_DLV_RESULT under the same
 * request id. The queue decides what and when; this process only copies a
 * committed spool file (read-only) into DATA/mail/... durably.
 *
 * Owns: the queue connection and a pool of DLV_THREADS worker threads. A
 * delivery blocks on fsync (file and new/), so several run in parallel and
 * the filesystem can group their journal commits; the loop thread only
 * parses requests, sends results and logs. Results come back through an
 * eventfd. Delivery is idempotent (principle 1): the Maildir name is derived
 * from queue id + recipient index, and a name that is already there (a crash
 * after the rename, before the queue heard of it) is answered OK unwritten.
 */
#include "deliver/deliver.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib-config/config.h"
#include "lib-queue/spool.h"
#include "lib-store/maildir.h"
#include "lib/ipc.h"
#include "lib/limits.h"
#include "lib/log.h"
#include "lib/util.h"

#define DLV_SOCKET          "run/q.sock"
#define DLV_CONNECT_TIMEOUT 10000   /* ms, while the queue starts */
#define DLV_THREADS         4
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
	char text[512];
};

struct dlv_server {
	const struct config *cfg;
	struct event_base *base;
	struct ipc_conn *conn;  /* NULL once the queue has gone */
	struct event *sigterm_ev, *sigint_ev, *done_ev;
	unsigned pending;       /* loop thread only */

	pthread_mutex_t lock;   /* guards todo, done and stop */
	pthread_cond_t cond;
	struct dlv_job *todo, **todo_tail, *done;
	bool stop;
	int done_fd;            /* eventfd: workers -> loop */
	pthread_t threads[DLV_THREADS];
	unsigned nthreads;
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

static void *dlv_thread(void *arg)
{
	struct dlv_server *srv = arg;

	pthread_mutex_lock(&srv->lock);
	for (;;) {
		while (!srv->stop && srv->todo == NULL)
			pthread_cond_wait(&srv->cond, &srv->lock);
		if (srv->stop)
			break;
		struct dlv_job *job = srv->todo;
		if ((srv->todo = job->next) == NULL)
			srv->todo_tail = &srv->todo;
		pthread_mutex_unlock(&srv->lock);

		dlv_run(srv->cfg, job);

		pthread_mutex_lock(&srv->lock);
		job->next = srv->done;
		srv->done = job;
		uint64_t one = 1;
		ssize_t ret = write(srv->done_fd, &one, sizeof(one));
		(void)ret;      /* EAGAIN: the counter is already non-zero */
	}
	pthread_mutex_unlock(&srv->lock);
	return NULL;
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

static void dlv_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dlv_server *srv = arg;
	uint64_t n;
	ssize_t ret = read(fd, &n, sizeof(n));
	(void)ret;

	pthread_mutex_lock(&srv->lock);
	struct dlv_job *job = srv->done;
	srv->done = NULL;
	pthread_mutex_unlock(&srv->lock);
	while (job != NULL) {
		struct dlv_job *next = job->next;
		dlv_finish(srv, job);
		job = next;
	}
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
	pthread_mutex_lock(&srv->lock);
	*srv->todo_tail = job;
	srv->todo_tail = &job->next;
	pthread_cond_signal(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
}

static void dlv_close_cb(struct ipc_conn *conn, void *ctx)
{
	struct dlv_server *srv = ctx;
	log_info("queue connection closed; exiting (%u deliveries pending: running ones "
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
	struct dlv_server srv = { .cfg = cfg, .done_fd = -1 };
	int fd = -1, ret = 1;

	srv.todo_tail = &srv.todo;
	pthread_mutex_init(&srv.lock, NULL);
	pthread_cond_init(&srv.cond, NULL);
	signal(SIGPIPE, SIG_IGN);

	if ((srv.base = event_base_new()) == NULL) {
		log_error("event_base_new failed");
		goto out;
	}
	if ((srv.done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
		log_error("eventfd: %s", strerror(errno));
		goto out;
	}
	srv.done_ev = event_new(srv.base, srv.done_fd, EV_READ | EV_PERSIST, dlv_done_cb,
				&srv);
	srv.sigterm_ev = evsignal_new(srv.base, SIGTERM, dlv_signal_cb, &srv);
	srv.sigint_ev = evsignal_new(srv.base, SIGINT, dlv_signal_cb, &srv);
	if (srv.done_ev == NULL || srv.sigterm_ev == NULL || srv.sigint_ev == NULL ||
	    event_add(srv.done_ev, NULL) < 0 || event_add(srv.sigterm_ev, NULL) < 0 ||
	    event_add(srv.sigint_ev, NULL) < 0) {
		log_error("cannot set up events");
		goto out;
	}

	/* Workers get no signals: the loop thread handles them. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	while (srv.nthreads < DLV_THREADS &&
	       pthread_create(&srv.threads[srv.nthreads], NULL, dlv_thread, &srv) == 0)
		srv.nthreads++;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (srv.nthreads == 0) {
		log_error("cannot start delivery threads");
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
	log_info("ready queue=%s threads=%u", DLV_SOCKET, srv.nthreads);
	if (event_base_dispatch(srv.base) < 0)
		log_error("event loop failed");
	else
		ret = 0;
out:
	/* Running deliveries finish (join); queued ones are dropped: the queue
	 * asks again and maildir_has() makes a repeat harmless. */
	pthread_mutex_lock(&srv.lock);
	srv.stop = true;
	pthread_cond_broadcast(&srv.cond);
	pthread_mutex_unlock(&srv.lock);
	for (unsigned i = 0; i < srv.nthreads; i++)
		pthread_join(srv.threads[i], NULL);
	ipc_conn_free(&srv.conn);       /* finished results are logged, not sent */
	while (srv.done != NULL) {
		struct dlv_job *job = srv.done;
		srv.done = job->next;
		dlv_finish(&srv, job);
	}
	while (srv.todo != NULL) {
		struct dlv_job *job = srv.todo;
		srv.todo = job->next;
		dlv_job_free(job);
	}
	struct event *evs[] = { srv.done_ev, srv.sigterm_ev, srv.sigint_ev };
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
		if (evs[i] != NULL)
			event_free(evs[i]);
	if (srv.done_fd >= 0)
		close(srv.done_fd);
	if (srv.base != NULL)
		event_base_free(srv.base);
	pthread_mutex_destroy(&srv.lock);
	pthread_cond_destroy(&srv.cond);
	return ret;
}
