/*
 * smtpd.c — the smtpd worker process: accepts connections on the SMTP
 * listeners the master bound (MX, submission, submissions), runs the
 * sessions, and routes replies from the directory and the queue back to
 * the session that asked, by request id (= session id).
 *
 * Unprivileged; holds the TLS certificate's key in memory (the only secret
 * it sees). SIGHUP reloads the certificate: a bad new one is reported and
 * the old one stays in use. SIGTERM stops accepting and lets sessions
 * finish (bounded by the timeouts).
 */
#include "smtpd/smtpd.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "lib/log.h"
#include "lib-tls/tls.h"

#define SMTPD_MAX_LISTENERS 8

static struct evconnlistener *listeners[SMTPD_MAX_LISTENERS];
static unsigned nlisteners;

/* The listener kind travels in a small per-listener struct. */
struct smtpd_listen_ctx {
	struct smtpd *server;
	enum listener_kind kind;
};
static struct smtpd_listen_ctx listen_ctx[SMTPD_MAX_LISTENERS];

static void smtpd_accept_kind_cb(struct evconnlistener *l, evutil_socket_t fd,
				 struct sockaddr *sa, int salen, void *arg)
{
	struct smtpd_listen_ctx *ctx = arg;
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
	smtp_session_create(ctx->server, fd, ctx->kind, ip);
}

static void smtpd_peer_close_cb(struct ipc_conn *conn, void *ctx);

static void smtpd_dir_frame_cb(struct ipc_conn *conn, uint32_t type, uint64_t id,
			       struct ipc_reader *r, void *ctx)
{
	struct smtpd *server = ctx;
	(void)conn;
	if (type != IPC_DIR_REPLY) {
		log_warn("unexpected frame %u from directory", type);
		return;
	}
	struct smtp_session *s = smtp_session_find(server, id);
	if (s != NULL && s->wait != SMTP_WAIT_NONE) {
		smtp_dir_reply(s, r);
		return;
	}
	/* The verdict for a session that is already gone: give its slot back. */
	for (struct smtpd_orphan **p = &server->orphans; *p != NULL; p = &(*p)->next) {
		if ((*p)->id != id)
			continue;
		struct smtpd_orphan *o = *p;
		*p = o->next;
		if (ipc_get_u32(r) == IPC_CONN_OK && !r->error) {
			struct ipc_writer w;
			ipc_writer_init(&w);
			ipc_put_str(&w, o->ip);
			ipc_send(server->dir, IPC_DIR_DISCONNECT, id, &w);
			ipc_writer_free(&w);
		}
		free(o);
		return;
	}
}

static void smtpd_orphans_free(struct smtpd *server)
{
	while (server->orphans != NULL) {
		struct smtpd_orphan *o = server->orphans;
		server->orphans = o->next;
		free(o);
	}
}

static void smtpd_queue_frame_cb(struct ipc_conn *conn, uint32_t type, uint64_t id,
				 struct ipc_reader *r, void *ctx)
{
	struct smtpd *server = ctx;
	(void)conn;
	struct smtp_session *s = smtp_session_find(server, id);
	if (s != NULL)
		smtp_queue_reply(s, type, r);
}

static void smtpd_reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd *server = arg;
	(void)fd;
	(void)what;
	if (server->dir == NULL) {
		int dfd = ipc_connect_unix("run/dir.sock", 0);
		if (dfd >= 0) {
			server->dir = ipc_conn_new(server->base, dfd, smtpd_dir_frame_cb,
						   smtpd_peer_close_cb, server);
			log_info("reconnected to the directory");
		}
	}
	if (server->queue == NULL) {
		int qfd = ipc_connect_unix("run/q.sock", 0);
		if (qfd >= 0) {
			server->queue = ipc_conn_new(server->base, qfd, smtpd_queue_frame_cb,
						     smtpd_peer_close_cb, server);
			log_info("reconnected to the queue");
		}
	}
	if (server->dir != NULL && server->queue != NULL)
		evtimer_del(server->reconnect_ev);
}

static void smtpd_peer_close_cb(struct ipc_conn *conn, void *ctx)
{
	struct smtpd *server = ctx;
	bool dir = conn == server->dir;
	/* The master restarts the peer; until then, sessions that wait on it
	 * get a temporary error and new requests are refused. */
	log_error("lost connection to the %s process", dir ? "directory" : "queue");
	if (dir) {
		server->dir = NULL;
		smtpd_orphans_free(server); /* the new directory counts afresh */
	} else {
		server->queue = NULL;
	}
	ipc_conn_free(&conn);
	for (struct smtp_session *s = server->sessions; s != NULL; s = s->next)
		smtp_session_peer_lost(s, dir);
	struct timeval tv = { 0, 200000 };
	evtimer_add(server->reconnect_ev, &tv);
}

static void smtpd_stop_accepting(struct smtpd *server)
{
	server->stopping = true;
	for (unsigned i = 0; i < nlisteners; i++)
		evconnlistener_disable(listeners[i]);
	if (server->nsessions == 0)
		event_base_loopbreak(server->base);
}

/* SIGTERM/SIGINT: idle sessions are told 421 now; a session inside a
 * transaction finishes it first (smtp_end_result checks hard_stop). */
static void smtpd_stop_cb(evutil_socket_t sig, short what, void *arg)
{
	struct smtpd *server = arg;
	(void)what;
	if (server->hard_stop) {
		event_base_loopbreak(server->base);
		return;
	}
	log_info("signal %d: stopping, %u sessions open", (int)sig, server->nsessions);
	server->hard_stop = true;
	for (struct smtp_session *s = server->sessions; s != NULL; s = s->next) {
		if (s->wait == SMTP_WAIT_NONE && s->state != SMTP_STATE_DATA &&
		    s->state != SMTP_STATE_BDAT && s->state != SMTP_STATE_QUIT &&
		    s->state != SMTP_STATE_TLS) {
			smtp_reply(s, 421, "4.3.2", "%s Service shutting down",
				   server->cfg->hostname);
			smtp_session_close(s);
		}
	}
	smtpd_stop_accepting(server);
}

/* SIGUSR1 (after a reload): stop accepting, let every session finish. */
static void smtpd_retire_cb(evutil_socket_t sig, short what, void *arg)
{
	struct smtpd *server = arg;
	(void)sig;
	(void)what;
	log_info("retiring after reload, %u sessions open", server->nsessions);
	smtpd_stop_accepting(server);
}

static void smtpd_reload_cb(evutil_socket_t sig, short what, void *arg)
{
	struct smtpd *server = arg;
	const char *error;
	(void)sig;
	(void)what;
	struct tls_set *set = tls_set_new(server->cfg, &error);
	if (set == NULL) {
		log_error("certificate reload failed, keeping the old one: %s", error);
		return;
	}
	/* Sessions hold their own SSL references; new ones get the new set. */
	tls_set_free(&server->tls);
	server->tls = set;
	log_info("certificate reloaded from %s", server->cfg->tls_cert);
}

static void smtpd_drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd *server = arg;
	(void)fd;
	(void)what;
	if (server->stopping && server->nsessions == 0)
		event_base_loopbreak(server->base);
}

int smtpd_main(const struct config *cfg, struct tls_set *tls, const struct smtpd_listener *ls,
	       unsigned count)
{
	struct smtpd server;
	const char *error;
	int status = 1;

	memset(&server, 0, sizeof(server));
	server.cfg = cfg;
	server.base = event_base_new();
	if (server.base == NULL)
		fatal("event_base_new failed");
	if (tls != NULL)
		server.tls = tls_set_ref(tls);
	else
		server.tls = tls_set_new(cfg, &error);
	if (server.tls == NULL)
		fatal("TLS: %s", error);

	int dfd = ipc_connect_unix("run/dir.sock", 10000);
	int qfd = ipc_connect_unix("run/q.sock", 10000);
	if (dfd < 0 || qfd < 0)
		fatal("cannot connect to the directory or queue process: %s", strerror(errno));
	server.dir = ipc_conn_new(server.base, dfd, smtpd_dir_frame_cb, smtpd_peer_close_cb, &server);
	server.queue = ipc_conn_new(server.base, qfd, smtpd_queue_frame_cb, smtpd_peer_close_cb,
				    &server);

	nlisteners = 0;
	for (unsigned i = 0; i < count && nlisteners < SMTPD_MAX_LISTENERS; i++) {
		listen_ctx[nlisteners].server = &server;
		listen_ctx[nlisteners].kind = ls[i].kind;
		evutil_make_socket_nonblocking(ls[i].fd);
		listeners[nlisteners] = evconnlistener_new(server.base, smtpd_accept_kind_cb,
							   &listen_ctx[nlisteners],
							   LEV_OPT_CLOSE_ON_FREE, -1, ls[i].fd);
		if (listeners[nlisteners] == NULL)
			fatal("cannot listen on %s", listener_kind_name(ls[i].kind));
		nlisteners++;
	}

	struct event *ev_term = evsignal_new(server.base, SIGTERM, smtpd_stop_cb, &server);
	struct event *ev_int = evsignal_new(server.base, SIGINT, smtpd_stop_cb, &server);
	struct event *ev_hup = evsignal_new(server.base, SIGHUP, smtpd_reload_cb, &server);
	struct event *ev_usr1 = evsignal_new(server.base, SIGUSR1, smtpd_retire_cb, &server);
	struct event *ev_drain = event_new(server.base, -1, EV_PERSIST, smtpd_drain_cb, &server);
	server.reconnect_ev = event_new(server.base, -1, EV_PERSIST, smtpd_reconnect_cb, &server);
	struct timeval second = { 1, 0 };
	event_add(ev_term, NULL);
	event_add(ev_int, NULL);
	event_add(ev_hup, NULL);
	event_add(ev_usr1, NULL);
	event_add(ev_drain, &second);
	signal(SIGPIPE, SIG_IGN);

	event_base_dispatch(server.base);
	status = server.stopping ? 0 : 1;

	while (server.sessions != NULL) {
		struct smtp_session *s = server.sessions;
		smtp_session_free(&s);
	}
	for (unsigned i = 0; i < nlisteners; i++)
		evconnlistener_free(listeners[i]);
	smtpd_orphans_free(&server);
	ipc_conn_free(&server.dir);
	ipc_conn_free(&server.queue);
	event_free(ev_term);
	event_free(ev_int);
	event_free(ev_hup);
	event_free(ev_usr1);
	event_free(ev_drain);
	event_free(server.reconnect_ev);
	tls_set_free(&server.tls);
	event_base_free(server.base);
	return status;
}
