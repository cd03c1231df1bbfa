/*
 * smtp-session.c — one SMTP session's I/O in an smtpd worker: reading
 * command lines and message content, TLS (implicit and STARTTLS, RFC 3207,
 * RFC 8314), timeouts, the reply path, and tear-down.
 *
 * The CR/LF rule for command lines lives in smtp_session_read_line() alone;
 * message content goes through lib-smtp's DATA filter (smtp-commands.c).
 */
#include "smtpd/smtpd.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "lib/limits.h"
#include "lib/log.h"
#include "lib/util.h"
#include "lib-tls/tls.h"

static const char *const state_names[] = {
	"connect", "greeted", "ready", "mail", "rcpt", "data", "bdat", "auth", "tls", "quit",
};

static void smtp_session_read_cb(struct bufferevent *bev, void *arg);
static void smtp_session_close_cb(evutil_socket_t fd, short what, void *arg);
static void smtp_session_write_cb(struct bufferevent *bev, void *arg);
static void smtp_session_event_cb(struct bufferevent *bev, short what, void *arg);

void smtp_session_enter_state(struct smtp_session *s, enum smtp_state state)
{
	/* A closing session stays closing, whatever its callers do next. */
	if (s->state == state || s->state == SMTP_STATE_QUIT)
		return;
	log_debug("session=%llx state %s -> %s", (unsigned long long)s->id,
		  state_names[s->state], state_names[state]);
	s->state = state;
}

void smtp_reply(struct smtp_session *s, unsigned code, const char *enhanced, const char *fmt, ...)
{
	char text[512];
	va_list ap;
	if (s->state == SMTP_STATE_QUIT)
		return; /* after the final reply (421, 221) nothing more is said */
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);

	struct buf line;
	buf_init(&line, 4096);
	if (smtp_reply_format(&line, code, enhanced, text) == 0)
		bufferevent_write(s->bev, line.data, line.len);
	buf_free(&line);
	if (code >= 400) {
		log_info("session=%llx ip=%s reject reply=\"%u %s %s\"", (unsigned long long)s->id,
			 s->ip, code, enhanced != NULL ? enhanced : "", text);
		/* 421 closes by itself; other errors count towards the limit. */
		if (code != 421 && ++s->errors >= s->server->cfg->max_errors) {
			smtp_reply(s, 421, "4.7.0", "%s Error: too many errors",
				   s->server->cfg->hostname);
			smtp_session_close(s);
		}
	}
}

static void smtp_session_set_timeout(struct smtp_session *s)
{
	const struct config *cfg = s->server->cfg;
	struct timeval tv = {
		.tv_sec = s->state == SMTP_STATE_DATA || s->state == SMTP_STATE_BDAT
				  ? cfg->data_timeout : cfg->command_timeout,
	};
	bufferevent_set_timeouts(s->bev, &tv, &tv);
}

void smtp_session_create(struct smtpd *server, int fd, enum listener_kind kind, const char *ip)
{
	struct smtp_session *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		close(fd);
		return;
	}
	s->server = server;
	s->id = ++server->next_id;
	s->kind = kind;
	s->fd = fd;
	snprintf(s->ip, sizeof(s->ip), "%s", ip);
	buf_init(&s->out, 2 * IPC_DATA_CHUNK);
	s->state = SMTP_STATE_CONNECT;

	s->bev = tls_bufferevent_new(server->base, fd, server->tls, kind,
				     kind == LISTENER_SUBMISSIONS, &s->ssl);
	if (s->bev == NULL) {   /* fd closed */
		free(s);
		return;
	}
	s->close_ev = evtimer_new(server->base, smtp_session_close_cb, s);
	if (s->close_ev == NULL) {
		bufferevent_free(s->bev);
		free(s);
		return;
	}
	s->next = server->sessions;
	if (server->sessions != NULL)
		server->sessions->prev = s;
	server->sessions = s;
	server->nsessions++;

	bufferevent_setcb(s->bev, smtp_session_read_cb, smtp_session_write_cb,
			  smtp_session_event_cb, s);
	smtp_session_set_timeout(s);
	bufferevent_enable(s->bev, EV_WRITE);
	log_info("session=%llx connect ip=%s listener=%s", (unsigned long long)s->id, ip,
		 listener_kind_name(kind));

	/* Ask the directory whether this client may connect (access rules,
	 * blocks after failed logins, limits counted across all workers);
	 * park until it answers. */
	struct ipc_writer w;
	ipc_writer_init(&w);
	ipc_put_str(&w, s->ip);
	ipc_put_u32(&w, (uint32_t)kind);        /* for the listener's access rules */
	s->wait = SMTP_WAIT_CONNECT;
	if (server->dir == NULL || ipc_send(server->dir, IPC_DIR_CONNECT, s->id, &w) < 0) {
		smtp_reply(s, 421, "4.3.2", "%s Service not available", server->cfg->hostname);
		smtp_session_close(s);
	}
	ipc_writer_free(&w);
}

struct smtp_session *smtp_session_find(struct smtpd *server, uint64_t id)
{
	for (struct smtp_session *s = server->sessions; s != NULL; s = s->next) {
		if (s->id == id)
			return s;
	}
	return NULL;
}

void smtp_transaction_reset(struct smtp_session *s)
{
	struct smtp_transaction *t = &s->txn;
	if (t->began && s->server->queue != NULL)
		ipc_send_raw(s->server->queue, IPC_Q_ABORT, s->id, NULL, 0);
	free(t->sender);
	free(t->envid);
	for (unsigned i = 0; i < t->nrcpts; i++) {
		free(t->rcpts[i].address);
		free(t->rcpts[i].mailbox);
		free(t->rcpts[i].orcpt);
		free(t->rcpts[i].notify);
	}
	free(t->rcpts);
	memset(t, 0, sizeof(*t));
	buf_reset(&s->out);
}

void smtp_session_free(struct smtp_session **sp)
{
	struct smtp_session *s = *sp;
	if (s == NULL)
		return;
	*sp = NULL;
	struct smtpd *server = s->server;
	smtp_transaction_reset(s);
	if (s->wait == SMTP_WAIT_CONNECT && server->dir != NULL) {
		struct smtpd_orphan *o = calloc(1, sizeof(*o));
		if (o != NULL) {
			o->id = s->id;
			snprintf(o->ip, sizeof(o->ip), "%s", s->ip);
			o->next = server->orphans;
			server->orphans = o;
		}
	}
	if (s->counted && server->dir != NULL) {
		struct ipc_writer w;
		ipc_writer_init(&w);
		ipc_put_str(&w, s->ip);
		ipc_send(server->dir, IPC_DIR_DISCONNECT, s->id, &w);
		ipc_writer_free(&w);
	}
	log_info("session=%llx disconnect ip=%s", (unsigned long long)s->id, s->ip);
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		server->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	server->nsessions--;
	/* With BEV_OPT_CLOSE_ON_FREE the TLS bufferevent frees the SSL and the
	 * underlying bufferevent closes the socket. */
	bufferevent_free(s->bev);
	event_free(s->close_ev);
	free(s->auth_user);
	if (s->auth_login_user != NULL) {
		secure_zero(s->auth_login_user, strlen(s->auth_login_user));
		free(s->auth_login_user);
	}
	free(s->pending_rcpt);
	free(s->pending_mail);
	free(s->pending_sender);
	buf_free(&s->out);
	free(s);
}

/* Octets not yet handed to the kernel. With STARTTLS the TLS filter
 * writes into the plaintext bufferevent below it, which must drain too. */
static size_t smtp_session_unsent(struct smtp_session *s)
{
	size_t n = evbuffer_get_length(bufferevent_get_output(s->bev));
	struct bufferevent *under = bufferevent_get_underlying(s->bev);
	if (under != NULL)
		n += evbuffer_get_length(bufferevent_get_output(under));
	return n;
}

static void smtp_session_close_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;
	(void)fd;
	(void)what;
	/* Wait (bounded: 2 s) for the last reply to leave. */
	if (smtp_session_unsent(s) > 0 && s->close_polls++ < 200) {
		struct timeval tv = { 0, 10000 };
		evtimer_add(s->close_ev, &tv);
		return;
	}
	smtp_session_free(&s);
}

void smtp_session_close(struct smtp_session *s)
{
	/* Stop reading; free once the last reply has been written. Never
	 * frees synchronously, so callers may look at s->state afterwards. */
	smtp_session_enter_state(s, SMTP_STATE_QUIT);
	bufferevent_disable(s->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
		event_active(s->close_ev, EV_TIMEOUT, 1);
	else
		bufferevent_enable(s->bev, EV_WRITE);
}

int smtp_session_start_tls(struct smtp_session *s)
{
	struct smtpd *server = s->server;
	/* RFC 3207 4.2 / STARTTLS injection: anything the client pipelined
	 * after STARTTLS in plaintext is discarded, never executed. */
	SSL *ssl;
	size_t junk;
	struct bufferevent *tls_bev = tls_bufferevent_starttls(server->base, s->bev, server->tls,
							       s->kind, &ssl, &junk);
	if (junk > 0)
		log_warn("session=%llx ip=%s discarded %zu octets pipelined after STARTTLS",
			 (unsigned long long)s->id, s->ip, junk);
	if (tls_bev == NULL)
		return -1;
	s->bev = tls_bev;
	s->ssl = ssl;
	/* RFC 3207 4.2: forget everything learnt before TLS. */
	smtp_transaction_reset(s);
	s->helo[0] = '\0';
	s->esmtp = false;
	free(s->auth_user);
	s->auth_user = NULL;
	smtp_session_enter_state(s, SMTP_STATE_TLS);
	bufferevent_setcb(s->bev, smtp_session_read_cb, smtp_session_write_cb,
			  smtp_session_event_cb, s);
	smtp_session_set_timeout(s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	return 0;
}

static void smtp_session_tls_ready(struct smtp_session *s)
{
	s->tls = true;
	tls_describe(s->ssl, s->tls_desc, sizeof(s->tls_desc));
	log_info("session=%llx ip=%s tls=%s", (unsigned long long)s->id, s->ip, s->tls_desc);
	if (s->state == SMTP_STATE_TLS)
		smtp_session_enter_state(s, SMTP_STATE_GREETED);
}

/*
 * Reads one command line. The only place where the SMTP line rule for
 * commands lives: a line ends with LF (a preceding CR is stripped); a line
 * longer than SMTP_COMMAND_LINE_MAX is refused before its end is seen.
 * Returns 1 with the line (malloc'ed) in *line_r, 0 when more input is
 * needed, -1 when the line was too long (already answered).
 */
static int smtp_session_read_line(struct smtp_session *s, struct evbuffer *in, char **line_r,
				  size_t *len_r)
{
	for (;;) {
		size_t avail = evbuffer_get_length(in);
		size_t scan = avail < SMTP_COMMAND_LINE_MAX ? avail : SMTP_COMMAND_LINE_MAX;
		struct evbuffer_ptr lf = evbuffer_search_range(in, "\n", 1, NULL, NULL);
		if (s->skip_line) {
			/* Discarding the rest of an over-long line. */
			size_t drop = lf.pos >= 0 ? (size_t)lf.pos + 1 : avail;
			evbuffer_drain(in, drop);
			s->skipped += drop;
			if (s->skipped > SMTP_SKIP_MAX) {
				smtp_reply(s, 421, "4.7.0", "%s Error: line too long, closing",
					   s->server->cfg->hostname);
				smtp_session_close(s);
				return -1;
			}
			if (lf.pos < 0)
				return 0;
			s->skip_line = false;
			continue;
		}
		if (lf.pos < 0 || (size_t)lf.pos >= scan) {
			if (avail < SMTP_COMMAND_LINE_MAX)
				return 0;
			/* RFC 5321 4.5.3.1.4: refuse it, drop the rest of the
			 * line, and keep the session. */
			smtp_reply(s, 500, "5.5.2", "Error: line too long");
			s->skip_line = true;
			s->skipped = 0;
			if (s->state == SMTP_STATE_QUIT)
				return -1;
			continue;
		}
		size_t len = (size_t)lf.pos;
		char *line = malloc(len + 1);
		if (line == NULL)
			return -1;
		evbuffer_remove(in, line, len);
		evbuffer_drain(in, 1);
		if (len > 0 && line[len - 1] == '\r')
			len--;
		line[len] = '\0';
		*line_r = line;
		*len_r = len;
		return 1;
	}
}

static void smtp_session_process(struct smtp_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);

	while (s->wait == SMTP_WAIT_NONE && s->state != SMTP_STATE_QUIT &&
	       s->state != SMTP_STATE_TLS && s->state != SMTP_STATE_CONNECT) {
		size_t avail = evbuffer_get_length(in);
		if (avail == 0)
			break;
		/* A client that sends commands but does not read the replies
		 * is not read from either: replies stay bounded. (The write
		 * callback resumes once the output has drained.) */
		if (evbuffer_get_length(bufferevent_get_output(s->bev)) > SMTP_OUTPUT_MAX) {
			s->output_blocked = true;
			break;
		}
		if (s->state == SMTP_STATE_DATA ||
		    (s->state == SMTP_STATE_BDAT && s->txn.bdat_remaining > 0)) {
			struct evbuffer_iovec v;
			if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
				break;
			size_t len = v.iov_len < IPC_DATA_CHUNK ? v.iov_len : IPC_DATA_CHUNK;
			size_t used = s->state == SMTP_STATE_DATA
					      ? smtp_data_input(s, v.iov_base, len)
					      : smtp_bdat_input(s, v.iov_base, len);
			if (s->state == SMTP_STATE_QUIT)
				return; /* freed or closing */
			evbuffer_drain(in, used);
			if (used == 0)
				break;
			continue;
		}
		char *line;
		size_t len;
		int ret = smtp_session_read_line(s, in, &line, &len);
		if (ret <= 0)
			break;
		if (s->state == SMTP_STATE_AUTH)
			smtp_auth_continue(s, line, len);
		else
			smtp_command_dispatch(s, line, len);
		secure_zero(line, len);
		free(line);
	}
	if (s->state == SMTP_STATE_QUIT)
		return;
	smtp_session_set_timeout(s);
	/* Parked sessions stop reading: back-pressure onto the client. */
	if (s->wait == SMTP_WAIT_NONE && !s->output_blocked)
		bufferevent_enable(s->bev, EV_READ);
	else
		bufferevent_disable(s->bev, EV_READ);
}

void smtp_session_resume(struct smtp_session *s)
{
	smtp_session_process(s);
}

static void smtp_session_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	smtp_session_process(arg);
}

static void smtp_session_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;
	(void)bev;
	if (s->state == SMTP_STATE_QUIT) {
		if (!evtimer_pending(s->close_ev, NULL))
			smtp_session_close_cb(-1, 0, s);
		return;
	}
	if (s->output_blocked) {
		s->output_blocked = false;
		smtp_session_process(s);
	}
}

static void smtp_session_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_session *s = arg;
	(void)bev;
	if ((what & BEV_EVENT_CONNECTED) != 0) {
		smtp_session_tls_ready(s);
		smtp_session_process(s);
		return;
	}
	if ((what & BEV_EVENT_TIMEOUT) != 0 && s->state != SMTP_STATE_QUIT) {
		log_info("session=%llx ip=%s timeout state=%s", (unsigned long long)s->id, s->ip,
			 state_names[s->state]);
		smtp_reply(s, 421, "4.4.2", "%s Error: timeout exceeded", s->server->cfg->hostname);
		smtp_session_close(s);
		return;
	}
	if ((what & BEV_EVENT_ERROR) != 0 && s->ssl != NULL && !s->tls) {
		unsigned long e = bufferevent_get_openssl_error(bev);
		char detail[160] = "";
		if (e != 0)
			ERR_error_string_n(e, detail, sizeof(detail));
		log_info("session=%llx ip=%s TLS handshake failed: %s", (unsigned long long)s->id,
			 s->ip, detail);
	}
	smtp_session_free(&s);
}
