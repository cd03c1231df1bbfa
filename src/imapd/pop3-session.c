/*
 * pop3-session.c — one POP3 session's life in an imapd worker (RFC 1939,
 * RFC 2449, RFC 2595, RFC 8314): the connection verdict from the
 * directory, TLS (implicit on pop3s, STLS on pop3), reading command lines,
 * the reply path, timeouts, the password check, the store jobs (open the
 * INBOX at login, open a message for RETR/TOP, the UPDATE state at QUIT)
 * and streaming RETR/TOP through lib-pop3's dot-stuffer with output flow
 * control.
 *
 * The CR/LF rule for command lines lives in pop3_read_line() alone. Store
 * work that may be slow (mstore_open syncs the Maildir; sizes may be
 * computed from files; the expunge fsyncs) runs on the worker's workpool;
 * see pop3-private.h for the threading rules.
 */
#include "imapd/pop3-private.h"

#include <errno.h>
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

#include "lib/log.h"
#include "lib/util.h"
#include "lib-imap/imap-search.h"
#include "lib-imap/imap-seqset.h"
#include "lib-store/mstore.h"
#include "lib-tls/tls.h"

static const char *const state_names[] = { "authorization", "transaction", "update" };

/* The worker's POP3 sessions, for pop3_sessions_stop(). One loop thread
 * per worker process, so a plain list. */
static struct pop3_session *pop3_sessions;

static void pop3_read_cb(struct bufferevent *bev, void *arg);
static void pop3_write_cb(struct bufferevent *bev, void *arg);
static void pop3_event_cb(struct bufferevent *bev, short what, void *arg);
static void pop3_close_cb(evutil_socket_t fd, short what, void *arg);
static void pop3_process(struct pop3_session *s);
static void pop3_session_free(struct pop3_session **sp);

#define SID(s) ((unsigned long long)(s)->id)

static void pop3_set_timeout(struct pop3_session *s)
{
	const struct config *cfg = s->server->cfg;
	/* RFC 1939 3: the autologout timer is at least 10 minutes after
	 * login (pop3.timeout); before login a short one (imap.login_timeout)
	 * so that idle unauthenticated connections do not pile up. */
	unsigned secs = s->state == POP3_STATE_AUTHORIZATION ? cfg->imap_login_timeout
							     : cfg->pop3_timeout;
	struct timeval tv = { .tv_sec = secs };
	bufferevent_set_timeouts(s->bev, secs > 0 ? &tv : NULL, secs > 0 ? &tv : NULL);
}

void pop3_enter_state(struct pop3_session *s, enum pop3_state state)
{
	if (s->state == state)
		return;
	log_debug("session=%llx pop3 state %s -> %s", SID(s), state_names[s->state],
		  state_names[state]);
	s->state = state;
	pop3_set_timeout(s);
}

void pop3_send(struct pop3_session *s, const void *data, size_t len)
{
	if (s->closing || s->dead)
		return;
	bufferevent_write(s->bev, data, len);
}

void pop3_reply(struct pop3_session *s, enum pop3_reply_kind kind, const char *fmt, ...)
{
	char text[512];
	char line[520];
	va_list ap;
	if (s->closing || s->dead)
		return; /* nothing is said after the last reply */
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	int n = snprintf(line, sizeof(line), "%s%s%s\r\n", kind == POP3_OK ? "+OK" : "-ERR",
			 text[0] != '\0' ? " " : "", text);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = (int)sizeof(line) - 1;
		line[n - 2] = '\r';
		line[n - 1] = '\n';
	}
	bufferevent_write(s->bev, line, (size_t)n);
	if (kind == POP3_OK)
		return;
	log_info("session=%llx ip=%s pop3 reply=\"-ERR %s\"", SID(s), s->ip, text);
	if (kind == POP3_ERR && ++s->errors >= s->server->cfg->max_errors) {
		pop3_reply(s, POP3_FAIL, "Too many errors, closing connection");
		pop3_session_close(s);
	}
}

/* ---- creation, tear-down ---- */

static void pop3_connect_cb(void *ctx, struct ipc_reader *r);
static void pop3_login_count_cb(void *ctx, struct ipc_reader *r);

void pop3_session_create(struct imapd *server, int fd, enum listener_kind kind, const char *ip)
{
	struct pop3_session *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		close(fd);
		imapd_session_gone(server);
		return;
	}
	s->server = server;
	s->id = ++server->next_id;
	s->kind = kind;
	s->stream_fd = -1;
	snprintf(s->ip, sizeof(s->ip), "%s", ip);
	s->state = POP3_STATE_AUTHORIZATION;

	/* On failure the SSL is freed and fd closed. */
	s->bev = tls_bufferevent_new(server->base, fd, server->tls, kind, kind == LISTENER_POP3S,
				     &s->ssl);
	s->close_ev = evtimer_new(server->base, pop3_close_cb, s);
	if (s->bev == NULL || s->close_ev == NULL) {
		if (s->bev != NULL)
			bufferevent_free(s->bev);
		if (s->close_ev != NULL)
			event_free(s->close_ev);
		free(s);
		imapd_session_gone(server);
		return;
	}
	s->next = pop3_sessions;
	if (pop3_sessions != NULL)
		pop3_sessions->prev = s;
	pop3_sessions = s;

	bufferevent_setcb(s->bev, pop3_read_cb, pop3_write_cb, pop3_event_cb, s);
	/* The write callback refills a streamed message when the output has
	 * drained below this. */
	bufferevent_setwatermark(s->bev, EV_WRITE, POP3_OUT_LOW, 0);
	pop3_set_timeout(s);
	bufferevent_enable(s->bev, EV_WRITE);
	log_info("session=%llx connect ip=%s listener=%s", SID(s), s->ip,
		 listener_kind_name(kind));

	/* Ask the directory whether this client may connect (limits are
	 * counted across all workers); park until it answers. */
	s->wait = POP3_WAIT_CONNECT;
	s->dir_wait = imapd_connect_request(server, s->ip, kind, pop3_connect_cb, s);
	if (s->dir_wait == NULL) {
		s->wait = POP3_WAIT_NONE;
		pop3_reply(s, POP3_FAIL, "[SYS/TEMP] Service not available, try again later");
		pop3_session_close(s);
	}
}

static void pop3_greet(struct pop3_session *s)
{
	s->greeted = true;
	s->wait = POP3_WAIT_NONE;
	pop3_reply(s, POP3_OK, "Postern POP3 server ready");
	pop3_process(s);
}

static void pop3_connect_cb(void *ctx, struct ipc_reader *r)
{
	struct pop3_session *s = ctx;
	s->dir_wait = NULL;
	s->wait = POP3_WAIT_NONE;
	uint32_t verdict = IPC_CONN_TOO_MANY;
	if (r != NULL) {
		verdict = ipc_get_u32(r);
		if (r->error)
			verdict = IPC_CONN_TOO_MANY;
		else if (verdict == IPC_CONN_OK)
			s->counted = true;
	}
	if (s->closing)
		return; /* counted: the free gives the slot back */
	if (r == NULL || verdict != IPC_CONN_OK) {
		log_info("session=%llx ip=%s refused: %s", SID(s), s->ip,
			 r == NULL ? "no directory"
			 : verdict == IPC_CONN_DENIED ? "access rule"
			 : verdict == IPC_CONN_BLOCKED ? "ip blocked after failed logins"
			 : verdict == IPC_CONN_TOO_MANY_FROM_IP ? "too many connections from ip"
								 : "too many connections");
		/* RFC 2449 8.1.2 / RFC 3206 4: the condition is temporary
		 * (an access rule is not: no response code). */
		if (r != NULL && verdict == IPC_CONN_DENIED)
			pop3_reply(s, POP3_FAIL, "Access denied");
		else if (r != NULL && verdict == IPC_CONN_BLOCKED)
			pop3_reply(s, POP3_FAIL,
				   "[SYS/TEMP] Temporarily blocked after failed logins");
		else
			pop3_reply(s, POP3_FAIL, "[SYS/TEMP] Too many connections, try again later");
		pop3_session_close(s);
		return;
	}
	if (s->kind == LISTENER_POP3S && !s->tls) {
		s->wait = POP3_WAIT_TLS; /* greet once the handshake is done */
		return;
	}
	pop3_greet(s);
}

/* Octets not yet handed to the kernel. With STLS the TLS filter writes
 * into the plaintext bufferevent below it, which must drain too. */
static size_t pop3_unsent(struct pop3_session *s)
{
	size_t n = evbuffer_get_length(bufferevent_get_output(s->bev));
	struct bufferevent *under = bufferevent_get_underlying(s->bev);
	if (under != NULL)
		n += evbuffer_get_length(bufferevent_get_output(under));
	return n;
}

static void pop3_stream_end(struct pop3_session *s)
{
	if (s->stream_fd >= 0)
		close(s->stream_fd);
	s->stream_fd = -1;
	free(s->piece);
	s->piece = NULL;
	s->piece_pos = s->piece_len = 0;
}

static void pop3_session_free(struct pop3_session **sp)
{
	struct pop3_session *s = *sp;
	if (s == NULL)
		return;
	*sp = NULL;
	struct imapd *server = s->server;
	if (s->wait == POP3_WAIT_STORE) {
		/* A pool thread is using the store: the job's done() frees. */
		s->dead = true;
		bufferevent_disable(s->bev, EV_READ | EV_WRITE);
		return;
	}
	if (s->dir_wait != NULL)
		imapd_dir_cancel(server, s->dir_wait);
	if (s->counted && server->dir != NULL) {
		struct ipc_writer w;
		ipc_writer_init(&w);
		ipc_put_str(&w, s->ip);
		ipc_send(server->dir, IPC_DIR_DISCONNECT, s->id, &w);
		ipc_writer_free(&w);
	}
	if (s->login_counted)
		imapd_login_uncount(server, s->auth_user);
	pop3_stream_end(s);
	/* RFC 1939 6: without QUIT there is no UPDATE: DELE'd messages stay. */
	if (s->mbox != NULL)
		mbox_close(&s->mbox);
	if (s->store != NULL)
		mstore_close(&s->store);
	log_info("session=%llx disconnect ip=%s user=%s", SID(s), s->ip,
		 s->auth_user != NULL ? s->auth_user : "-");
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		pop3_sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	/* With BEV_OPT_CLOSE_ON_FREE the TLS bufferevent frees the SSL and
	 * the underlying bufferevent closes the socket. */
	bufferevent_free(s->bev);
	event_free(s->close_ev);
	if (s->user != NULL) {
		secure_zero(s->user, strlen(s->user));
		free(s->user);
	}
	free(s->auth_user);
	free(s->msgs);
	free(s);
	imapd_session_gone(server);
}

static void pop3_close_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pop3_session *s = arg;
	(void)fd;
	(void)what;
	/* Wait (bounded: 2 s) for the last reply to leave. */
	if (pop3_unsent(s) > 0 && s->close_polls++ < 200) {
		struct timeval tv = { 0, 10000 };
		evtimer_add(s->close_ev, &tv);
		return;
	}
	pop3_session_free(&s);
}

void pop3_session_close(struct pop3_session *s)
{
	/* Stop reading; free once the last reply has been written. Never
	 * frees synchronously, so callers may look at s afterwards. */
	if (s->closing)
		return;
	s->closing = true;
	pop3_stream_end(s);
	bufferevent_disable(s->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
		event_active(s->close_ev, EV_TIMEOUT, 1);
	else
		bufferevent_enable(s->bev, EV_WRITE);
}

void pop3_sessions_stop(struct imapd *server)
{
	for (struct pop3_session *s = pop3_sessions; s != NULL; s = s->next) {
		if (s->server != server || s->closing || s->wait != POP3_WAIT_NONE)
			continue;
		/* RFC 1939 has no unsolicited response; the session simply
		 * ends without UPDATE. */
		log_info("session=%llx ip=%s closed: server stopping", SID(s), s->ip);
		pop3_session_close(s);
	}
}

/* ---- TLS ---- */

int pop3_session_start_tls(struct pop3_session *s)
{
	struct imapd *server = s->server;
	/* RFC 2595 / STARTTLS injection (CVE-2011-0411 class): anything the
	 * client pipelined after STLS in plaintext is discarded, never run. */
	SSL *ssl;
	size_t junk;
	struct bufferevent *tls_bev = tls_bufferevent_starttls(server->base, s->bev, server->tls,
							       s->kind, &ssl, &junk);
	if (junk > 0)
		log_warn("session=%llx ip=%s discarded %zu octets pipelined after STLS", SID(s),
			 s->ip, junk);
	if (tls_bev == NULL)
		return -1;
	/* The filter moves encrypted data into the plaintext bufferevent only
	 * up to its write high-water mark: flow control for streaming. */
	bufferevent_setwatermark(s->bev, EV_WRITE, 0, POP3_OUT_LOW);
	s->bev = tls_bev;
	s->ssl = ssl;
	/* RFC 2595 4: forget what was learnt before TLS. */
	if (s->user != NULL) {
		secure_zero(s->user, strlen(s->user));
		free(s->user);
		s->user = NULL;
	}
	s->wait = POP3_WAIT_TLS;
	bufferevent_setcb(s->bev, pop3_read_cb, pop3_write_cb, pop3_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_WRITE, POP3_OUT_LOW, 0);
	pop3_set_timeout(s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	return 0;
}

static void pop3_tls_ready(struct pop3_session *s)
{
	s->tls = true;
	tls_describe(s->ssl, s->tls_desc, sizeof(s->tls_desc));
	log_info("session=%llx ip=%s tls=%s", SID(s), s->ip, s->tls_desc);
	if (s->wait != POP3_WAIT_TLS)
		return; /* pop3s: still waiting for the connection verdict */
	if (!s->greeted) {
		pop3_greet(s);
	} else {
		s->wait = POP3_WAIT_NONE;
		pop3_process(s);
	}
}

/* ---- reading commands ---- */

/*
 * Reads one line into line[0..size). The only place where the POP3 line
 * rule lives: a line ends with LF, a CR before it is stripped (RFC 1939 3
 * says CRLF; bare LF is accepted as most servers do). A line longer than
 * POP3_LINE_MAX with CRLF (RFC 2449 4; POP3_AUTH_LINE_MAX for an AUTH
 * continuation, RFC 5034 4) is refused before its end is seen and the
 * rest is discarded. Returns 1 with the NUL-terminated line and its length,
 * 0 when more input is needed, -1 when the session is closing.
 */
static int pop3_read_line(struct pop3_session *s, struct evbuffer *in, char *line, size_t size,
			  size_t *len_r)
{
	size_t max = s->auth_cont ? POP3_AUTH_LINE_MAX : POP3_LINE_MAX;
	if (max > size - 1)
		max = size - 1;
	for (;;) {
		size_t avail = evbuffer_get_length(in);
		if (s->skip_line) {
			struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);
			size_t drop = lf.pos >= 0 ? (size_t)lf.pos + 1 : avail;
			evbuffer_drain(in, drop);
			s->skipped += drop;
			if (s->skipped > POP3_SKIP_MAX) {
				pop3_reply(s, POP3_FAIL, "Line too long, closing connection");
				pop3_session_close(s);
				return -1;
			}
			if (lf.pos < 0)
				return 0;
			s->skip_line = false;
			continue;
		}
		size_t scan = avail < max ? avail : max;
		struct evbuffer_ptr end;
		evbuffer_ptr_set(in, &end, scan, EVBUFFER_PTR_SET);
		struct evbuffer_ptr lf = evbuffer_search_range(in, "\n", 1, NULL, &end);
		if (lf.pos < 0) {
			if (avail < max)
				return 0;
			s->skip_line = true;
			s->skipped = 0;
			s->auth_cont = false;
			pop3_reply(s, POP3_ERR, "Line too long");
			if (s->closing)
				return -1;
			continue;
		}
		size_t len = (size_t)lf.pos;
		evbuffer_remove(in, line, len);
		evbuffer_drain(in, 1);
		if (len > 0 && line[len - 1] == '\r')
			len--;
		line[len] = '\0';
		*len_r = len;
		return 1;
	}
}

static void pop3_process(struct pop3_session *s)
{
	char line[POP3_AUTH_LINE_MAX + 1];

	while (s->wait == POP3_WAIT_NONE && !s->closing && !s->dead) {
		struct evbuffer *in = bufferevent_get_input(s->bev);
		if (evbuffer_get_length(in) == 0)
			break;
		/* A client that sends commands but does not read the replies
		 * is not read from either (the write callback resumes). */
		if (evbuffer_get_length(bufferevent_get_output(s->bev)) > POP3_OUT_MAX) {
			s->output_blocked = true;
			break;
		}
		size_t len;
		if (pop3_read_line(s, in, line, sizeof(line), &len) <= 0)
			break;
		if (s->auth_cont)
			pop3_auth_continue(s, line, len);
		else
			pop3_command_dispatch(s, line, len);
		secure_zero(line, len);
	}
	if (s->closing || s->dead)
		return;
	/* Parked sessions stop reading: back-pressure onto the client. */
	if (s->wait == POP3_WAIT_NONE && !s->output_blocked)
		bufferevent_enable(s->bev, EV_READ);
	else if (s->wait != POP3_WAIT_TLS)
		bufferevent_disable(s->bev, EV_READ);
}

static void pop3_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	pop3_process(arg);
}

/* ---- RETR / TOP ---- */

/* Writes more of the message while the output is below POP3_OUT_LOW.
 * Returns true when the response is complete (or the session closing),
 * false when the write callback must call again. */
static bool pop3_stream(struct pop3_session *s)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	while (evbuffer_get_length(out) < POP3_OUT_LOW) {
		if (pop3_dot_done(&s->dot))
			break;
		if (s->piece_pos == s->piece_len) {
			ssize_t n;
			do
				n = read(s->stream_fd, s->piece, POP3_STREAM_PIECE);
			while (n < 0 && errno == EINTR);
			if (n < 0) {
				/* Half a response is out: nothing valid can follow. */
				log_error("session=%llx user=%s reading a message: %s", SID(s),
					  s->auth_user, strerror(errno));
				pop3_session_close(s);
				return true;
			}
			if (n == 0)
				break;
			s->piece_pos = 0;
			s->piece_len = (size_t)n;
		}
		size_t left = s->piece_len - s->piece_pos;
		struct evbuffer_iovec v;
		if (evbuffer_reserve_space(out, (ev_ssize_t)(2 * left), &v, 1) < 1) {
			log_error("session=%llx out of memory streaming a message", SID(s));
			pop3_session_close(s);
			return true;
		}
		size_t wrote;
		size_t used = pop3_dot_feed(&s->dot, s->piece + s->piece_pos, left, v.iov_base,
					    v.iov_len, &wrote);
		v.iov_len = wrote;
		evbuffer_commit_space(out, &v, 1);
		s->piece_pos += used;
	}
	if (!pop3_dot_done(&s->dot) && (s->piece_pos < s->piece_len ||
					evbuffer_get_length(out) >= POP3_OUT_LOW))
		return false;
	char fin[POP3_DOT_FINISH_MAX];
	int n = pop3_dot_finish(&s->dot, fin, sizeof(fin));
	if (n > 0)
		pop3_send(s, fin, (size_t)n);
	pop3_stream_end(s);
	s->wait = POP3_WAIT_NONE;
	return true;
}

/* Opening the message file is store work that may block: when another
 * tool renamed the file, mbox_msg_open() rescans the folder under the
 * index's write lock (a 5 s busy timeout) and may even rebuild the index.
 * So it runs on the workpool like the other store jobs (the session is
 * parked meanwhile); only the reading of the open file is the loop's. */
struct pop3_retr_job {
	struct workpool_job job;
	struct pop3_session *s;
	uint32_t index;             /* in s->msgs */
	bool top;
	bool was_retrieved;         /* restored when the message cannot be read */
	uint64_t lines;
	int fd;                     /* the open file, or -1 */
	enum mstore_err code;       /* when fd is -1 */
};

/* On a pool thread. */
static void pop3_retr_run_cb(struct workpool_job *job)
{
	struct pop3_retr_job *j = (struct pop3_retr_job *)(void *)job;
	struct pop3_session *s = j->s;
	uint32_t seq = mbox_seq_of_uid(s->mbox, s->msgs[j->index].uid);
	j->code = MSTORE_ERR_EXPUNGED;
	if (seq != 0 && mbox_msg_open(s->mbox, seq, &j->fd) < 0) {
		j->fd = -1;
		mstore_error(s->store, &j->code);
	}
}

/* On the loop: answer and start streaming. */
static void pop3_retr_done_cb(struct workpool_job *job)
{
	struct pop3_retr_job *j = (struct pop3_retr_job *)(void *)job;
	struct pop3_session *s = j->s;
	uint32_t i = j->index;
	int fd = j->fd;
	bool top = j->top;
	uint64_t lines = j->lines;
	enum mstore_err code = j->code;
	bool was_retrieved = j->was_retrieved;
	free(j);
	s->wait = POP3_WAIT_NONE;
	if (s->dead || s->closing) {
		if (fd >= 0)
			close(fd);
		if (s->dead)
			pop3_session_free(&s);
		return;
	}
	if (fd < 0) {
		if (!top)
			s->msgs[i].retrieved = was_retrieved;   /* no \Seen at QUIT */
		if (code == MSTORE_ERR_EXPUNGED)
			pop3_reply(s, POP3_FAIL, "Message %u was removed by another session", i + 1);
		else
			pop3_reply(s, POP3_FAIL, "[SYS/TEMP] Cannot read message %u", i + 1);
		pop3_process(s);
		return;
	}
	s->piece = malloc(POP3_STREAM_PIECE);
	if (s->piece == NULL) {
		close(fd);
		if (!top)
			s->msgs[i].retrieved = was_retrieved;
		pop3_reply(s, POP3_FAIL, "[SYS/TEMP] Out of memory");
		pop3_process(s);
		return;
	}
	s->stream_fd = fd;
	s->piece_pos = s->piece_len = 0;
	pop3_dot_init(&s->dot, top, lines);
	if (top)
		pop3_reply(s, POP3_OK, "Top of message follows");
	else
		pop3_reply(s, POP3_OK, "%llu octets", (unsigned long long)s->msgs[i].size);
	s->wait = POP3_WAIT_OUTPUT;
	/* Done at once for a small message (then the next pipelined command);
	 * otherwise the write callback continues and calls pop3_process(). */
	if (pop3_stream(s))
		pop3_process(s);
}

int pop3_session_retr(struct pop3_session *s, uint32_t i, bool top, uint64_t lines)
{
	struct pop3_retr_job *j = calloc(1, sizeof(*j));
	if (j == NULL) {
		pop3_reply(s, POP3_FAIL, "[SYS/TEMP] Out of memory");
		return -1;
	}
	j->job.run = pop3_retr_run_cb;
	j->job.done = pop3_retr_done_cb;
	j->s = s;
	j->index = i;
	j->top = top;
	j->lines = lines;
	j->fd = -1;
	j->was_retrieved = s->msgs[i].retrieved;
	/* parked: the loop touches neither s->store nor s->mbox meanwhile */
	s->wait = POP3_WAIT_STORE;
	bufferevent_disable(s->bev, EV_READ);
	workpool_submit(s->server->pool, &j->job);
	return 0;
}

static void pop3_write_cb(struct bufferevent *bev, void *arg)
{
	struct pop3_session *s = arg;
	(void)bev;
	if (s->dead)
		return;
	if (s->closing) {
		if (!evtimer_pending(s->close_ev, NULL))
			pop3_close_cb(-1, 0, s);
		return;
	}
	if (s->wait == POP3_WAIT_OUTPUT) {
		if (pop3_stream(s))
			pop3_process(s);
		return;
	}
	if (s->output_blocked) {
		s->output_blocked = false;
		pop3_process(s);
	}
}

static void pop3_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct pop3_session *s = arg;
	if ((what & BEV_EVENT_CONNECTED) != 0) {
		pop3_tls_ready(s);
		return;
	}
	if ((what & BEV_EVENT_TIMEOUT) != 0 && !s->closing && !s->dead) {
		/* RFC 1939 3: on the autologout timer the session does not
		 * enter UPDATE, and no response is sent. */
		log_info("session=%llx ip=%s timeout state=%s", SID(s), s->ip,
			 state_names[s->state]);
		pop3_session_close(s);
		return;
	}
	if ((what & BEV_EVENT_ERROR) != 0 && s->ssl != NULL && !s->tls) {
		unsigned long e = bufferevent_get_openssl_error(bev);
		char detail[160] = "";
		if (e != 0)
			ERR_error_string_n(e, detail, sizeof(detail));
		log_info("session=%llx ip=%s TLS handshake failed: %s", SID(s), s->ip, detail);
	}
	if (s->state == POP3_STATE_TRANSACTION && !s->closing)
		log_info("session=%llx ip=%s connection lost in TRANSACTION: no messages removed",
			 SID(s), s->ip);
	pop3_session_free(&s);
}

/* ---- the password check and the store jobs ---- */

static void pop3_job_run_cb(struct workpool_job *job);
static void pop3_job_done_cb(struct workpool_job *job);

static void pop3_job_start(struct pop3_session *s, enum pop3_job_kind kind)
{
	struct pop3_job *j = &s->job;
	j->job.run = pop3_job_run_cb;
	j->job.done = pop3_job_done_cb;
	j->s = s;
	j->kind = kind;
	j->ret = -1;
	j->error = NULL;
	j->expunged = 0;
	s->wait = POP3_WAIT_STORE;
	bufferevent_disable(s->bev, EV_READ);
	workpool_submit(s->server->pool, &j->job);
}

static void pop3_auth_cb(void *ctx, struct ipc_reader *r)
{
	struct pop3_session *s = ctx;
	const struct config *cfg = s->server->cfg;
	s->dir_wait = NULL;
	s->wait = POP3_WAIT_NONE;
	if (s->closing)
		return;
	if (s->user != NULL) {
		/* RFC 1939 7: after PASS, USER must be given again. */
		secure_zero(s->user, strlen(s->user));
		free(s->user);
		s->user = NULL;
	}
	uint32_t result = IPC_AUTH_TEMPFAIL;
	const char *user = NULL;
	uint64_t quota_bytes = cfg->quota_bytes;
	uint64_t quota_messages = cfg->quota_messages;
	if (r != NULL) {
		result = ipc_get_u32(r);
		user = ipc_get_str(r);
		/* u64 quota_bytes, u32 quota_messages: the account's limits
		 * (replies from a directory without them keep the defaults). */
		if (!r->error && r->left >= 12) {
			quota_bytes = ipc_get_u64(r);
			quota_messages = ipc_get_u32(r);
		}
		if (r->error)
			result = IPC_AUTH_TEMPFAIL;
	}
	if (result == IPC_AUTH_OK && user != NULL) {
		char root[sizeof(s->job.root)];
		s->auth_user = strdup(user);
		if (s->auth_user == NULL ||
		    imapd_user_root(s->server, s->auth_user, root, sizeof(root)) < 0) {
			log_error("session=%llx no mailbox path for user=%s", SID(s), user);
			pop3_reply(s, POP3_FAIL, "[SYS/TEMP] Mailbox unavailable");
			pop3_session_close(s);
			return;
		}
		memcpy(s->job.root, root, sizeof(root));
		s->job.quota_bytes = quota_bytes;
		s->job.quota_messages = quota_messages;
		/* One more session of this account? (imap.max_connections_per_user) */
		s->dir_wait = imapd_login_count(s->server, s->auth_user, pop3_login_count_cb, s);
		if (s->dir_wait == NULL) {
			pop3_reply(s, POP3_FAIL, "[SYS/TEMP] Authentication temporarily unavailable");
			pop3_session_close(s);
			return;
		}
		s->wait = POP3_WAIT_AUTH;
		return;
	}
	if (result == IPC_AUTH_FAIL || result == IPC_AUTH_EXPIRED) {
		s->auth_failures++;
		log_info("session=%llx ip=%s pop3 auth failed (%u)%s", SID(s), s->ip,
			 s->auth_failures, result == IPC_AUTH_EXPIRED ? ": password expired" : "");
		/* RFC 3206 5: [AUTH] says the credentials were wrong. */
		pop3_reply(s, POP3_FAIL, result == IPC_AUTH_EXPIRED
					 ? "[AUTH] Password expired, set a new one"
					 : "[AUTH] Authentication failed");
		if (s->auth_failures >= cfg->max_auth_failures) {
			pop3_reply(s, POP3_FAIL, "Too many authentication failures");
			pop3_session_close(s);
			return;
		}
	} else {
		pop3_reply(s, POP3_FAIL, "[SYS/TEMP] Authentication temporarily unavailable");
	}
	pop3_process(s);
}

static void pop3_login_count_cb(void *ctx, struct ipc_reader *r)
{
	struct pop3_session *s = ctx;
	s->dir_wait = NULL;
	s->wait = POP3_WAIT_NONE;
	if (s->closing)
		return;
	uint32_t verdict = r != NULL ? ipc_get_u32(r) : IPC_CONN_TOO_MANY;
	if (r == NULL || r->error || verdict != IPC_CONN_OK) {
		log_warn("session=%llx ip=%s user=%s too many sessions for the account", SID(s),
			 s->ip, s->auth_user);
		/* RFC 2449 8.1.1: [IN-USE] for a mailbox that cannot be had now. */
		pop3_reply(s, POP3_FAIL, r == NULL ? "[SYS/TEMP] Try again later"
				       : "[IN-USE] Too many sessions for this account");
		pop3_session_close(s);
		return;
	}
	s->login_counted = true;
	log_info("session=%llx ip=%s pop3 login user=%s tls=%s", SID(s), s->ip, s->auth_user,
		 s->tls ? "yes" : "no");
	if (!s->tls)
		log_warn("session=%llx ip=%s user=%s: plaintext login on listener %s "
			 "(allow_plaintext_auth; for loopback testing only)", SID(s), s->ip,
			 s->auth_user, listener_kind_name(s->kind));
	pop3_job_start(s, POP3_JOB_OPEN);
}

void pop3_session_auth(struct pop3_session *s, const char *mech, const char *user,
		       const char *password)
{
	struct ipc_writer w;
	ipc_writer_init(&w);
	ipc_put_str(&w, user);
	ipc_put_str(&w, password);
	ipc_put_str(&w, s->ip);
	ipc_put_u32(&w, IPC_PROTO_POP3);
	ipc_put_str(&w, mech);
	s->dir_wait = imapd_dir_request(s->server, IPC_DIR_AUTH, &w, pop3_auth_cb, s);
	if (w.b.data != NULL)
		secure_zero(w.b.data, w.b.len);
	ipc_writer_free(&w);
	if (s->dir_wait == NULL) {
		pop3_reply(s, POP3_FAIL, "[SYS/TEMP] Authentication temporarily unavailable");
		return;
	}
	s->wait = POP3_WAIT_AUTH;
}

/* On a pool thread: open the store and the INBOX and take the snapshot. */
static void pop3_job_open(struct pop3_job *j)
{
	struct pop3_session *s = j->s;
	struct mstore_settings set = {
		.hostname = s->server->cfg->hostname,
		.quota_bytes = j->quota_bytes,
		.quota_messages = j->quota_messages,
	};
	enum mstore_err code;
	if (mstore_open(j->root, &set, &s->store, &j->error) < 0)
		return;
	if (mbox_open(s->store, "INBOX", false, &s->mbox) < 0) {
		j->error = mstore_error(s->store, &code);
		return;
	}
	uint32_t count = mbox_count(s->mbox);
	s->msgs = calloc(count > 0 ? count : 1, sizeof(*s->msgs));
	if (s->msgs == NULL) {
		j->error = "out of memory";
		return;
	}
	uint32_t n = 0;
	for (uint32_t seq = 1; seq <= count; seq++) {
		const struct mstore_msg *m = mbox_msg(s->mbox, seq);
		if (m == NULL || m->expunged)
			continue;
		uint64_t size = m->vsize;
		uint32_t uid = m->uid;
		if (size == 0 && mbox_msg_vsize(s->mbox, seq, &size) < 0) {
			if (mstore_error(s->store, &code) != NULL && code == MSTORE_ERR_EXPUNGED)
				continue; /* removed meanwhile: not in the snapshot */
			j->error = mstore_error(s->store, &code);
			return;
		}
		s->msgs[n].uid = uid;
		s->msgs[n].size = size;
		n++;
	}
	s->nmsgs = n;
	s->uidvalidity = mbox_uidvalidity(s->mbox);
	j->ret = 0;
}

static void pop3_expunged_cb(void *ctx, uint32_t seq, uint32_t uid)
{
	struct pop3_job *j = ctx;
	(void)seq;
	(void)uid;
	j->expunged++;
}

/* On a pool thread: RFC 1939 6, the UPDATE state. DELE'd messages get
 * \Deleted and are removed with UID EXPUNGE semantics (exactly those,
 * never messages another session marked); RETR'd ones get \Seen. */
static void pop3_job_update(struct pop3_job *j)
{
	struct pop3_session *s = j->s;
	struct imap_seqset uids = { 0 };
	enum mstore_err code;
	bool failed = false;

	if (mbox_begin(s->mbox) < 0) {
		j->error = mstore_error(s->store, &code);
		return;
	}
	for (uint32_t i = 0; i < s->nmsgs && !failed; i++) {
		const struct pop3_msg *m = &s->msgs[i];
		if (!m->deleted && !m->retrieved)
			continue;
		uint32_t seq = mbox_seq_of_uid(s->mbox, m->uid);
		if (seq == 0)
			continue; /* already gone */
		bool changed, conflict;
		uint32_t flag = m->deleted ? IMAP_FLAG_DELETED : IMAP_FLAG_SEEN;
		if (mbox_store(s->mbox, seq, MBOX_STORE_ADD, flag, NULL, 0, &changed,
			       &conflict) < 0) {
			mstore_error(s->store, &code);
			if (code == MSTORE_ERR_EXPUNGED)
				continue;
			j->error = mstore_error(s->store, &code);
			failed = true;
			break;
		}
		if (m->deleted && imap_seqset_add(&uids, m->uid) < 0) {
			j->error = "out of memory";
			failed = true;
		}
	}
	if (mbox_commit(s->mbox) < 0 && !failed) {
		j->error = mstore_error(s->store, &code);
		failed = true;
	}
	if (!failed && uids.count > 0) {
		const struct mbox_sync_cb cb = { .expunged = pop3_expunged_cb };
		if (mbox_expunge(s->mbox, &uids, &cb, j) < 0) {
			j->error = mstore_error(s->store, &code);
			failed = true;
		}
	}
	imap_seqset_free(&uids);
	if (!failed)
		j->ret = 0;
}

static void pop3_job_run_cb(struct workpool_job *job)
{
	struct pop3_job *j = (struct pop3_job *)(void *)job;
	if (j->kind == POP3_JOB_OPEN)
		pop3_job_open(j);
	else
		pop3_job_update(j);
}

static void pop3_job_done_cb(struct workpool_job *job)
{
	struct pop3_job *j = (struct pop3_job *)(void *)job;
	struct pop3_session *s = j->s;
	s->wait = POP3_WAIT_NONE;
	if (s->dead) {
		pop3_session_free(&s);
		return;
	}
	if (j->kind == POP3_JOB_OPEN) {
		if (j->ret < 0) {
			log_error("session=%llx user=%s cannot open INBOX: %s", SID(s), s->auth_user,
				  j->error != NULL ? j->error : "unknown error");
			pop3_reply(s, POP3_FAIL,
				   "[SYS/TEMP] Cannot open the mailbox, try again later");
			pop3_session_close(s);
			return;
		}
		uint64_t total = 0;
		for (uint32_t i = 0; i < s->nmsgs; i++)
			total += s->msgs[i].size;
		pop3_enter_state(s, POP3_STATE_TRANSACTION);
		pop3_reply(s, POP3_OK, "Logged in, %u messages (%llu octets)", s->nmsgs,
			   (unsigned long long)total);
		pop3_process(s);
		return;
	}
	/* UPDATE */
	if (j->ret < 0) {
		log_error("session=%llx user=%s pop3 update failed: %s", SID(s), s->auth_user,
			  j->error != NULL ? j->error : "unknown error");
		/* RFC 1939 6: -ERR when some deleted messages were not removed. */
		pop3_reply(s, POP3_FAIL, "[SYS/TEMP] Some deleted messages were not removed");
	} else {
		log_info("session=%llx user=%s pop3 quit expunged=%u", SID(s), s->auth_user,
			 j->expunged);
		pop3_reply(s, POP3_OK, "Postern POP3 server signing off");
	}
	pop3_session_close(s);
}

void pop3_session_update(struct pop3_session *s)
{
	pop3_enter_state(s, POP3_STATE_UPDATE);
	pop3_job_start(s, POP3_JOB_UPDATE);
}

void pop3_uidl(const struct pop3_session *s, uint32_t i, char *out, size_t size)
{
	snprintf(out, size, "%u.%u", s->uidvalidity, s->msgs[i].uid);
}
