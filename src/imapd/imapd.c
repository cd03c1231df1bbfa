/*
 * imapd.c — the imapd worker process: accepts connections on the imap,
 * imaps, pop3 and pop3s listeners the master bound and hands each to the
 * IMAP (imap-session.c) or POP3 (pop3-session.c) half; owns the connection
 * to the directory (password checks, connection counting) with reconnect,
 * routing each IPC_DIR_REPLY to the request that asked by request id; owns
 * the worker's workpool, on which mailbox work runs.
 *
 * Unprivileged (the run user, who owns the Maildirs). Signals: SIGTERM /
 * SIGINT stop (idle IMAP sessions get "* BYE", the rest end when their
 * command ends or times out); SIGUSR1 retires the worker (stop accepting,
 * let sessions end); SIGHUP is ignored (the master reloads by starting new
 * workers and retiring the old ones).
 */
#include "imapd/imapd.h"

#include "lib-account/account.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "lib/log.h"
#include "lib/workpool.h"
#include "lib-mime/mime.h"
#include "lib-tls/tls.h"

#define IMAPD_MAX_LISTENERS 8
/* Pool threads per worker: mailbox work is mostly I/O (SQLite, Maildir
 * files) with some MIME parsing; a few threads keep one worker's sessions
 * from queueing behind a long FETCH. */
#define IMAPD_POOL_THREADS 4

static struct evconnlistener *listeners[IMAPD_MAX_LISTENERS];
static unsigned nlisteners;

struct imapd_listen_ctx {
	struct imapd *server;
	enum listener_kind kind;
};
static struct imapd_listen_ctx listen_ctx[IMAPD_MAX_LISTENERS];

static void imapd_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
			    int salen, void *arg)
{
	struct imapd_listen_ctx *ctx = arg;
	char ip[64] = "unknown";
	(void)l;
	(void)salen;
	if (ctx->server->stopping) {
		close(fd);
		return;
	}
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)sa)->sin_addr, ip, sizeof(ip));
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)sa)->sin6_addr, ip, sizeof(ip));
	/* A response often ends in a short write (the tagged OK after a
	 * literal); Nagle would hold it for the client's delayed ACK (~40 ms
	 * per command). Responses are already written in large pieces. */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* Counted here; the session calls imapd_session_gone() exactly once
	 * when it ends (also when its creation fails). */
	ctx->server->nsessions++;
	if (ctx->kind == LISTENER_POP3 || ctx->kind == LISTENER_POP3S)
		pop3_session_create(ctx->server, fd, ctx->kind, ip);
	else
		imap_session_create(ctx->server, fd, ctx->kind, ip);
}

void imapd_session_gone(struct imapd *server)
{
	if (server->nsessions > 0)
		server->nsessions--;
	if (server->stopping && server->nsessions == 0)
		event_base_loopbreak(server->base);
}

/* ---- the directory ---- */

static void imapd_dir_close_cb(struct ipc_conn *conn, void *ctx);

static void imapd_dir_give_back(struct imapd *server, const struct imapd_dir_wait *w,
				struct ipc_reader *r)
{
	/* A connection or login verdict for a session that went away: if the
	 * directory counted it, the slot must be given back. */
	if ((w->type != IPC_DIR_CONNECT && w->type != IPC_DIR_LOGIN) || r == NULL)
		return;
	if (ipc_get_u32(r) == IPC_CONN_OK && !r->error && server->dir != NULL) {
		struct ipc_writer wr;
		ipc_writer_init(&wr);
		ipc_put_str(&wr, w->key);
		ipc_send(server->dir, w->type == IPC_DIR_CONNECT ? IPC_DIR_DISCONNECT
								 : IPC_DIR_LOGOUT, w->id, &wr);
		ipc_writer_free(&wr);
	}
}

static void imapd_dir_frame_cb(struct ipc_conn *conn, uint32_t type, uint64_t id,
			       struct ipc_reader *r, void *ctx)
{
	struct imapd *server = ctx;
	(void)conn;
	if (type != IPC_DIR_REPLY) {
		log_warn("unexpected frame %u from directory", type);
		return;
	}
	for (struct imapd_dir_wait **p = &server->waits; *p != NULL; p = &(*p)->next) {
		if ((*p)->id != id)
			continue;
		struct imapd_dir_wait *w = *p;
		*p = w->next;
		if (w->cb != NULL)
			w->cb(w->ctx, r);
		else
			imapd_dir_give_back(server, w, r);
		free(w);
		return;
	}
	log_debug("reply %llu from the directory matches no request", (unsigned long long)id);
}

static void imapd_reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
	struct imapd *server = arg;
	(void)fd;
	(void)what;
	if (server->dir != NULL) {
		evtimer_del(server->reconnect_ev);
		return;
	}
	int dfd = ipc_connect_unix("run/dir.sock", 0);
	if (dfd < 0)
		return;
	server->dir = ipc_conn_new(server->base, dfd, imapd_dir_frame_cb, imapd_dir_close_cb,
				   server);
	if (server->dir == NULL) {
		close(dfd);
		return;
	}
	log_info("reconnected to the directory");
	evtimer_del(server->reconnect_ev);
}

static void imapd_dir_close_cb(struct ipc_conn *conn, void *ctx)
{
	struct imapd *server = ctx;
	log_error("lost connection to the directory process");
	server->dir = NULL;
	ipc_conn_free(&conn);
	/* Every waiting request fails (temporary error to its session); the
	 * restarted directory counts connections afresh, so cancelled
	 * connection verdicts need no give-back. */
	struct imapd_dir_wait *w = server->waits;
	server->waits = NULL;
	while (w != NULL) {
		struct imapd_dir_wait *next = w->next;
		if (w->cb != NULL)
			w->cb(w->ctx, NULL);
		free(w);
		w = next;
	}
	struct timeval tv = { 0, 200000 };
	evtimer_add(server->reconnect_ev, &tv);
}

struct imapd_dir_wait *imapd_dir_request(struct imapd *server, uint32_t type,
					 const struct ipc_writer *w, imapd_dir_reply_cb *cb,
					 void *ctx)
{
	if (server->dir == NULL)
		return NULL;
	struct imapd_dir_wait *wait = calloc(1, sizeof(*wait));
	if (wait == NULL)
		return NULL;
	wait->id = ++server->next_id;
	wait->cb = cb;
	wait->ctx = ctx;
	wait->type = type;
	if ((type == IPC_DIR_CONNECT || type == IPC_DIR_LOGIN) && w != NULL) {
		/* The payload is str ip / str user: kept for a late give-back. */
		struct ipc_reader r = { .p = (const unsigned char *)w->b.data, .left = w->b.len };
		const char *key = ipc_get_str(&r);
		if (key != NULL)
			snprintf(wait->key, sizeof(wait->key), "%s", key);
	}
	if (ipc_send(server->dir, type, wait->id, w) < 0) {
		free(wait);
		return NULL;
	}
	wait->next = server->waits;
	server->waits = wait;
	return wait;
}

void imapd_dir_cancel(struct imapd *server, struct imapd_dir_wait *wait)
{
	(void)server;
	if (wait == NULL)
		return;
	/* Stays in the list until its reply comes (or the directory goes),
	 * so that a late connection verdict can be given back. */
	wait->cb = NULL;
	wait->ctx = NULL;
}

struct imapd_dir_wait *imapd_connect_request(struct imapd *server, const char *ip,
					     enum listener_kind kind, imapd_dir_reply_cb *cb,
					     void *ctx)
{
	struct ipc_writer w;
	ipc_writer_init(&w);
	ipc_put_str(&w, ip);
	ipc_put_u32(&w, (uint32_t)kind);   /* access rules may be per listener */
	struct imapd_dir_wait *wait = imapd_dir_request(server, IPC_DIR_CONNECT, &w, cb, ctx);
	ipc_writer_free(&w);
	return wait;
}

struct imapd_dir_wait *imapd_login_count(struct imapd *server, const char *user,
					 imapd_dir_reply_cb *cb, void *ctx)
{
	struct ipc_writer w;
	ipc_writer_init(&w);
	ipc_put_str(&w, user);
	struct imapd_dir_wait *wait = imapd_dir_request(server, IPC_DIR_LOGIN, &w, cb, ctx);
	ipc_writer_free(&w);
	return wait;
}

void imapd_login_uncount(struct imapd *server, const char *user)
{
	if (server->dir == NULL)
		return;   /* a restarted directory counts afresh */
	struct ipc_writer w;
	ipc_writer_init(&w);
	ipc_put_str(&w, user);
	ipc_send(server->dir, IPC_DIR_LOGOUT, 0, &w);
	ipc_writer_free(&w);
}

int imapd_user_root(const struct imapd *server, const char *user, char *out, size_t size)
{
	return account_maildir_path(server->cfg->mail_dir, user, out, size);
}

/* ---- signals ---- */

static void imapd_stop_accepting(struct imapd *server)
{
	server->stopping = true;
	for (unsigned i = 0; i < nlisteners; i++)
		evconnlistener_disable(listeners[i]);
	if (server->nsessions == 0)
		event_base_loopbreak(server->base);
}

static void imapd_stop_cb(evutil_socket_t sig, short what, void *arg)
{
	struct imapd *server = arg;
	(void)what;
	if (server->stopping && server->nsessions > 0 && sig == SIGINT) {
		event_base_loopbreak(server->base);
		return;
	}
	log_info("signal %d: stopping, %u sessions open", (int)sig, server->nsessions);
	imapd_stop_accepting(server);
	imap_sessions_stop(server);
	pop3_sessions_stop(server);
}

static void imapd_retire_cb(evutil_socket_t sig, short what, void *arg)
{
	struct imapd *server = arg;
	(void)sig;
	(void)what;
	log_info("retiring, %u sessions open", server->nsessions);
	imapd_stop_accepting(server);
}

static void imapd_hup_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	(void)arg;
}

static void imapd_drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct imapd *server = arg;
	(void)fd;
	(void)what;
	if (server->stopping && server->nsessions == 0)
		event_base_loopbreak(server->base);
}

int imapd_main(const struct config *cfg, struct tls_set *tls, const struct imapd_listener *ls,
	       unsigned count)
{
	struct imapd server;
	const char *error = "no certificate";

	memset(&server, 0, sizeof(server));
	server.cfg = cfg;
	signal(SIGPIPE, SIG_IGN);
	/* GMime's global state before any pool thread exists. */
	mime_init();
	server.base = event_base_new();
	if (server.base == NULL)
		fatal("event_base_new failed");
	if (tls != NULL)
		server.tls = tls_set_ref(tls);
	else
		server.tls = tls_set_new(cfg, &error);
	if (server.tls == NULL)
		fatal("TLS: %s", error);
	server.pool = workpool_new(server.base, IMAPD_POOL_THREADS, &error);
	if (server.pool == NULL)
		fatal("workpool: %s", error);

	int dfd = ipc_connect_unix("run/dir.sock", 10000);
	if (dfd < 0)
		fatal("cannot connect to the directory process: %s", strerror(errno));
	server.dir = ipc_conn_new(server.base, dfd, imapd_dir_frame_cb, imapd_dir_close_cb,
				  &server);

	nlisteners = 0;
	for (unsigned i = 0; i < count && nlisteners < IMAPD_MAX_LISTENERS; i++) {
		listen_ctx[nlisteners].server = &server;
		listen_ctx[nlisteners].kind = ls[i].kind;
		evutil_make_socket_nonblocking(ls[i].fd);
		listeners[nlisteners] = evconnlistener_new(server.base, imapd_accept_cb,
							   &listen_ctx[nlisteners],
							   LEV_OPT_CLOSE_ON_FREE, -1, ls[i].fd);
		if (listeners[nlisteners] == NULL)
			fatal("cannot listen on %s", listener_kind_name(ls[i].kind));
		nlisteners++;
	}

	struct event *ev_term = evsignal_new(server.base, SIGTERM, imapd_stop_cb, &server);
	struct event *ev_int = evsignal_new(server.base, SIGINT, imapd_stop_cb, &server);
	struct event *ev_hup = evsignal_new(server.base, SIGHUP, imapd_hup_cb, &server);
	struct event *ev_usr1 = evsignal_new(server.base, SIGUSR1, imapd_retire_cb, &server);
	struct event *ev_drain = event_new(server.base, -1, EV_PERSIST, imapd_drain_cb, &server);
	server.reconnect_ev = event_new(server.base, -1, EV_PERSIST, imapd_reconnect_cb, &server);
	struct timeval second = { 1, 0 };
	event_add(ev_term, NULL);
	event_add(ev_int, NULL);
	event_add(ev_hup, NULL);
	event_add(ev_usr1, NULL);
	event_add(ev_drain, &second);

	log_info("imapd ready, %u listeners", nlisteners);
	event_base_dispatch(server.base);
	int status = server.stopping ? 0 : 1;

	/* Sessions still open (a second signal): free them; their pool jobs
	 * finish first (workpool_free runs their done()). */
	imap_sessions_stop(&server);
	pop3_sessions_stop(&server);
	workpool_free(&server.pool, NULL);
	imap_sessions_free_all(&server);
	for (unsigned i = 0; i < nlisteners; i++)
		evconnlistener_free(listeners[i]);
	nlisteners = 0;
	ipc_conn_free(&server.dir);
	while (server.waits != NULL) {
		struct imapd_dir_wait *w = server.waits;
		server.waits = w->next;
		free(w);
	}
	event_free(ev_term);
	event_free(ev_int);
	event_free(ev_hup);
	event_free(ev_usr1);
	event_free(ev_drain);
	event_free(server.reconnect_ev);
	tls_set_free(&server.tls);
	event_base_free(server.base);
	mime_shutdown();
	return status;
}
