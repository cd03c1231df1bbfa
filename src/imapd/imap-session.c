/*
 * imap-session.c — one IMAP session's I/O in an imapd worker: the
 * bufferevent (OpenSSL for imaps, RFC 8314 implicit TLS), STARTTLS (RFC
 * 9051 6.2.1, with pipelined plaintext discarded), feeding lib-imap's
 * parser, literals ("+ OK" for synchronising ones, RFC 7888 LITERAL+),
 * the reply path, running commands on the loop (before login) or as
 * workpool jobs (after login) in bounded chunks with output flow control,
 * timeouts (RFC 9051 5.4 autologout), and tear-down.
 *
 * Runs in the imapd worker process, on its loop thread; the job functions
 * named *_job_run run on pool threads and touch only what imap-private.h
 * says a job owns.
 */
#include "imapd/imap-private.h"

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
#include "lib-tls/tls.h"

static struct imap_session *sessions;

static const char *const state_names[] = {
	"connect", "notauth", "auth", "selected", "logout",
};

static void imap_session_read_cb(struct bufferevent *bev, void *arg);
static void imap_session_write_cb(struct bufferevent *bev, void *arg);
static void imap_session_event_cb(struct bufferevent *bev, short what, void *arg);
static void imap_session_close_cb(evutil_socket_t fd, short what, void *arg);
static void imap_session_process(struct imap_session *s);
static void imap_session_free(struct imap_session **sp);

/* ---- output ---- */

int imap_out(struct imap_session *s, const char *fmt, ...)
{
	va_list ap;
	char small[1024];
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n < sizeof(small))
		return buf_append(&s->out, small, (size_t)n);
	char *big = malloc((size_t)n + 1);
	if (big == NULL)
		return -1;
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	int ret = buf_append(&s->out, big, (size_t)n);
	free(big);
	return ret;
}

int imap_out_raw(struct imap_session *s, const void *data, size_t len)
{
	return buf_append(&s->out, data, len);
}

bool imap_chunk_full(const struct imap_cmd *cmd)
{
	return cmd->s->out.len >= IMAP_CHUNK_BYTES || cmd->chunk_msgs >= IMAP_CHUNK_MSGS;
}

static void imap_cmd_end_v(struct imap_cmd *cmd, enum imap_status status, const char *fmt,
			   va_list ap) __attribute__((format(printf, 3, 0)));
static void imap_cmd_end_v(struct imap_cmd *cmd, enum imap_status status, const char *fmt,
			   va_list ap)
{
	if (cmd->finished)
		return; /* the first answer wins */
	vsnprintf(cmd->result, sizeof(cmd->result), fmt, ap);
	cmd->status = status;
	cmd->finished = true;
}

void imap_cmd_ok(struct imap_cmd *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	imap_cmd_end_v(cmd, IMAP_OK, fmt, ap);
	va_end(ap);
}

void imap_cmd_no(struct imap_cmd *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	imap_cmd_end_v(cmd, IMAP_NO, fmt, ap);
	va_end(ap);
}

void imap_cmd_bad(struct imap_cmd *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	imap_cmd_end_v(cmd, IMAP_BAD, fmt, ap);
	va_end(ap);
}

void imap_cmd_serverbug(struct imap_cmd *cmd, const char *detail)
{
	char logid[17];
	queue_id_new(logid);
	log_error("session=%llx user=%s command=%s log-id=%s: %s", IMAP_SID(cmd->s),
		  cmd->s->user != NULL ? cmd->s->user : "-", cmd->def->name, logid, detail);
	imap_cmd_no(cmd, "[SERVERBUG] Internal error (log id %s)", logid);
}

void imap_cmd_store_error(struct imap_cmd *cmd, const char *what)
{
	enum mstore_err code = MSTORE_ERR_INTERNAL;
	const char *text = cmd->s->store != NULL ? mstore_error(cmd->s->store, &code) : NULL;
	if (text == NULL || *text == '\0')
		text = "Failed";
	switch (code) {
	case MSTORE_ERR_NONEXISTENT:
		imap_cmd_no(cmd, "[NONEXISTENT] %s", text);
		break;
	case MSTORE_ERR_ALREADYEXISTS:
		imap_cmd_no(cmd, "[ALREADYEXISTS] %s", text);
		break;
	case MSTORE_ERR_CANNOT:
		imap_cmd_no(cmd, "[CANNOT] %s", text);
		break;
	case MSTORE_ERR_OVERQUOTA:
		imap_cmd_no(cmd, "[OVERQUOTA] %s", text);
		break;
	case MSTORE_ERR_LIMIT:
		imap_cmd_no(cmd, "[LIMIT] %s", text);
		break;
	case MSTORE_ERR_EXPUNGED:
		imap_cmd_no(cmd, "[EXPUNGEISSUED] %s", text);
		break;
	case MSTORE_ERR_NONE:
	case MSTORE_ERR_INTERNAL:
	default:
		imap_cmd_serverbug(cmd, what);
		break;
	}
}

static const char *imap_status_name(enum imap_status st)
{
	return st == IMAP_OK ? "OK" : st == IMAP_NO ? "NO" : "BAD";
}

/* The tagged line; on whichever thread owns s->out. */
static void imap_cmd_write_tagged(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	if (cmd->status == IMAP_OK && cmd->expunge_issued) {
		cmd->status = IMAP_NO;
		snprintf(cmd->result, sizeof(cmd->result),
			 "[EXPUNGEISSUED] Some messages were expunged meanwhile");
		free(cmd->result_long);
		cmd->result_long = NULL;
	}
	const char *text = cmd->result_long != NULL ? cmd->result_long : cmd->result;
	if (imap_out(s, "%s %s %s\r\n", cmd->tag, imap_status_name(cmd->status), text) < 0) {
		/* The buffer is full only with a broken chunking; drop the
		 * data rather than the tag the client waits for. */
		buf_reset(&s->out);
		imap_out(s, "%s NO [SERVERBUG] Response too large\r\n", cmd->tag);
	}
	cmd->tagged_written = true;
}

static size_t imap_session_unsent(struct imap_session *s)
{
	size_t n = evbuffer_get_length(bufferevent_get_output(s->bev));
	struct bufferevent *under = bufferevent_get_underlying(s->bev);
	if (under != NULL)
		n += evbuffer_get_length(bufferevent_get_output(under));
	return n;
}

void imap_session_flush(struct imap_session *s)
{
	if (s->out.len > 0) {
		bufferevent_write(s->bev, s->out.data, s->out.len);
		s->bytes_out += s->out.len;
	}
	buf_reset(&s->out);
	/* A big response leaves a big buffer: give it back. */
	if (s->out.cap > 64 * 1024)
		buf_free(&s->out);
}

/* Untagged (or continuation) text straight to the socket; loop thread, no
 * job running. */
static void imap_session_say(struct imap_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void imap_session_say(struct imap_session *s, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = (int)sizeof(line) - 1;
	bufferevent_write(s->bev, line, (size_t)n);
	s->bytes_out += (size_t)n;
}

/* ---- jobs ---- */

static void imap_job_run_cb(struct workpool_job *j)
{
	struct imap_job *job = (struct imap_job *)(void *)j;
	job->run(job->s);
}

static void imap_job_done_cb(struct workpool_job *j)
{
	struct imap_job *job = (struct imap_job *)(void *)j;
	struct imap_session *s = job->s;
	s->job_running = false;
	if (s->free_pending) {
		imap_session_free(&s);
		return;
	}
	job->done(s);
}

void imap_session_submit(struct imap_session *s, void (*run)(struct imap_session *s),
			 void (*done)(struct imap_session *s))
{
	s->job.job.run = imap_job_run_cb;
	s->job.job.done = imap_job_done_cb;
	s->job.s = s;
	s->job.run = run;
	s->job.done = done;
	s->job_running = true;
	workpool_submit(s->server->pool, &s->job.job);
}

/* One step of the current command on a pool thread. */
static void imap_cmd_job_run(struct imap_session *s)
{
	struct imap_cmd *cmd = s->cmd;
	cmd->chunk_msgs = 0;
	cmd->def->run(cmd);
	if (!cmd->finished)
		return;
	if (s->mbox != NULL && (cmd->def->flags & IMAP_CMD_NOSYNC) == 0)
		imap_sync(s, (cmd->def->flags & IMAP_CMD_NOEXPUNGE) == 0);
	imap_cmd_write_tagged(cmd);
}

static void imap_cmd_job_done(struct imap_session *s)
{
	imap_session_flush(s);
	if (s->state == IMAP_STATE_LOGOUT) {
		/* closed (timeout, SIGTERM) while the job ran */
		imap_session_close(s);
		return;
	}
	if (s->cmd->finished) {
		imap_session_command_end(s);
		if (s->state != IMAP_STATE_LOGOUT)
			imap_session_process(s);
		return;
	}
	if (s->server->stopping && s->server->pool == NULL) {
		imap_session_close(s);
		return;
	}
	/* The next chunk when the client has read most of this one. */
	if (imap_session_unsent(s) <= IMAP_OUT_LOW)
		imap_session_submit(s, imap_cmd_job_run, imap_cmd_job_done);
	else
		s->job_again = true;
}

static void imap_session_drain_check(struct imap_session *s)
{
	if (!s->job_again || s->job_running)
		return;
	if (imap_session_unsent(s) <= IMAP_OUT_LOW) {
		s->job_again = false;
		imap_session_submit(s, imap_cmd_job_run, imap_cmd_job_done);
		return;
	}
	/* Under a STARTTLS filter the plaintext bufferevent drains without
	 * telling us: look again shortly. */
	if (bufferevent_get_underlying(s->bev) != NULL && !evtimer_pending(s->close_ev, NULL)) {
		struct timeval tv = { 0, 5000 };
		evtimer_add(s->close_ev, &tv);
	}
}

/* ---- commands ---- */

static void imap_cmd_free(struct imap_cmd **cmdp)
{
	struct imap_cmd *cmd = *cmdp;
	if (cmd == NULL)
		return;
	*cmdp = NULL;
	if (cmd->priv != NULL && cmd->priv_free != NULL)
		cmd->priv_free(cmd->priv);
	free(cmd->result_long);
	free(cmd->tag);
	free(cmd);
}

void imap_session_command_end(struct imap_session *s)
{
	struct imap_cmd *cmd = s->cmd;
	if (cmd == NULL)
		return;
	if (cmd->finished && !cmd->tagged_written)
		imap_cmd_write_tagged(cmd);
	enum imap_status status = cmd->status;
	imap_session_flush(s);
	imap_cmd_free(&s->cmd);
	s->busy = false;
	imap_parser_reset(s->parser);
	imap_append_spool_reset(s);
	if (s->logout) {
		imap_session_close(s);
		return;
	}
	if (s->logout_on_end) {
		imap_session_say(s, "* BYE Server shutting down\r\n");
		imap_session_close(s);
		return;
	}
	if (status == IMAP_BAD) {
		if (++s->errors >= s->server->cfg->max_errors) {
			log_info("session=%llx ip=%s too many errors", IMAP_SID(s), s->ip);
			imap_session_say(s, "* BYE Too many errors\r\n");
			imap_session_close(s);
			return;
		}
	} else if (status == IMAP_OK) {
		s->errors = 0;
	}
	if (s->starttls_after) {
		s->starttls_after = false;
		if (imap_session_start_tls(s) < 0) {
			imap_session_say(s, "* BYE TLS not available\r\n");
			imap_session_close(s);
		}
	}
}

/* A BAD answered right away (parse errors, unknown commands). */
static void imap_session_bad(struct imap_session *s, const char *tag, const char *text)
{
	if (tag != NULL && *tag != '\0')
		imap_session_say(s, "%s BAD %s\r\n", tag, text);
	else
		imap_session_say(s, "* BAD %s\r\n", text);
	if (++s->errors >= s->server->cfg->max_errors) {
		log_info("session=%llx ip=%s too many errors", IMAP_SID(s), s->ip);
		imap_session_say(s, "* BYE Too many errors\r\n");
		imap_session_close(s);
	}
}

static void imap_session_dispatch(struct imap_session *s)
{
	const char *tag = imap_parser_tag(s->parser);
	const char *name = imap_parser_name(s->parser);
	unsigned nargs = 0;
	const struct imap_arg *args = imap_parser_args(s->parser, &nargs);
	const struct imap_command *def = name != NULL ? imap_command_find(name) : NULL;

	if (def == NULL) {
		imap_session_bad(s, tag, "Unknown command");
		imap_parser_reset(s->parser);
		return;
	}
	if ((def->states & IMAP_ST(s->state)) == 0) {
		imap_session_bad(s, tag, s->state == IMAP_STATE_NOTAUTH ? "Log in first"
			: s->state == IMAP_STATE_AUTH && (def->states & IMAP_ST_SELECTED) != 0
				? "No mailbox selected"
				: "Command not allowed in this state");
		imap_parser_reset(s->parser);
		return;
	}
	struct imap_cmd *cmd = calloc(1, sizeof(*cmd));
	if (cmd == NULL || (cmd->tag = strdup(tag)) == NULL) {
		free(cmd);
		imap_session_say(s, "* BYE Out of memory\r\n");
		imap_session_close(s);
		return;
	}
	cmd->s = s;
	cmd->def = def;
	cmd->args = args;
	cmd->nargs = nargs;
	cmd->uid = strncmp(def->name, "UID ", 4) == 0;
	s->cmd = cmd;
	s->busy = true;
	log_debug("session=%llx command %s", IMAP_SID(s), def->name);

	if (def->check != NULL && def->check(cmd) < 0) {
		if (!cmd->finished)
			imap_cmd_bad(cmd, "Invalid arguments");
		imap_session_command_end(s);
		return;
	}
	if (cmd->finished) {
		imap_session_command_end(s);
		return;
	}
	if (def->run == NULL)
		return; /* the check started something that ends it later (IDLE) */
	if (s->state >= IMAP_STATE_AUTH && (def->flags & IMAP_CMD_LOOP) == 0) {
		imap_session_submit(s, imap_cmd_job_run, imap_cmd_job_done);
		return;
	}
	def->run(cmd);
	if (cmd->finished)
		imap_session_command_end(s);
	/* else: waiting for the directory; its callback ends the command */
}

/* Reads one auxiliary line (AUTHENTICATE continuation, IDLE's DONE).
 * 1 with the line (NUL-terminated, malloc'ed), 0 need more, -1 too long. */
static int imap_session_read_aux(struct imap_session *s, struct evbuffer *in, char **line_r,
				 size_t *len_r)
{
	size_t avail = evbuffer_get_length(in);
	size_t scan = avail < IMAP_AUX_LINE_MAX ? avail : IMAP_AUX_LINE_MAX;
	struct evbuffer_ptr lf = evbuffer_search_range(in, "\n", 1, NULL, NULL);
	if (lf.pos < 0 || (size_t)lf.pos >= scan)
		return avail >= IMAP_AUX_LINE_MAX ? -1 : 0;
	size_t len = (size_t)lf.pos;
	char *line = malloc(len + 1);
	if (line == NULL)
		return -1;
	evbuffer_remove(in, line, len);
	evbuffer_drain(in, 1);
	s->bytes_in += len + 1;
	if (len > 0 && line[len - 1] == '\r')
		len--;
	line[len] = '\0';
	*line_r = line;
	*len_r = len;
	return 1;
}

static void imap_session_literal(struct imap_session *s)
{
	struct imap_literal_info info;
	imap_parser_literal(s->parser, &info);
	const char *name = imap_parser_name(s->parser);
	const char *tag = imap_parser_tag(s->parser);

	if (name != NULL && strcmp(name, "APPEND") == 0 && s->state >= IMAP_STATE_AUTH) {
		if (imap_append_literal(s, &info) == 0 && info.sync)
			imap_session_say(s, "+ OK\r\n");
		return;
	}
	uint64_t max = s->state >= IMAP_STATE_AUTH ? 1024u * 1024 : IMAP_PREAUTH_LITERAL_MAX;
	if (info.size > max) {
		imap_parser_literal_reject(s->parser);
		if (info.sync) {
			imap_session_bad(s, tag, "Literal too large");
			imap_parser_reset(s->parser);
		} else {
			/* The parser skips the octets; the command ends in ERROR
			 * or is answered here and reset. */
			imap_session_bad(s, tag, "Literal too large");
			imap_parser_reset(s->parser);
		}
		return;
	}
	imap_parser_literal_accept(s->parser, NULL, NULL);
	if (info.sync)
		imap_session_say(s, "+ OK\r\n");
}

static void imap_session_set_timeout(struct imap_session *s)
{
	const struct config *cfg = s->server->cfg;
	struct timeval tv = {
		.tv_sec = s->state >= IMAP_STATE_AUTH ? cfg->imap_timeout : cfg->imap_login_timeout,
	};
	bufferevent_set_timeouts(s->bev, &tv, &tv);
}

/* Whether input is wanted now: commands when none runs; the AUTHENTICATE
 * continuation or IDLE's DONE while those commands run. */
static bool imap_session_reading(const struct imap_session *s)
{
	if (s->tls_pending || s->state == IMAP_STATE_CONNECT || s->state == IMAP_STATE_LOGOUT)
		return false;
	return !s->busy || s->auth_continue || s->idling;
}

static void imap_session_process(struct imap_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);

	while (imap_session_reading(s)) {
		if (imap_session_unsent(s) > IMAP_SOCKET_OUT_MAX) {
			/* The client does not read its replies: stop reading
			 * its commands until they drain. */
			s->output_blocked = true;
			break;
		}
		if (s->idling || s->auth_continue) {
			char *line;
			size_t len;
			int ret = imap_session_read_aux(s, in, &line, &len);
			if (ret == 0)
				break;
			if (ret < 0) {
				imap_session_say(s, "* BYE Line too long\r\n");
				imap_session_close(s);
				return;
			}
			if (s->idling)
				imap_idle_input(s, line, len);
			else
				imap_auth_line(s, line, len);
			secure_zero(line, len);
			free(line);
			continue;
		}
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
			break;
		size_t used = 0;
		enum imap_parse_result r = imap_parser_feed(s->parser, v.iov_base, v.iov_len, &used);
		evbuffer_drain(in, used);
		s->bytes_in += used;
		switch (r) {
		case IMAP_PARSE_MORE:
			break;
		case IMAP_PARSE_DONE:
			imap_session_dispatch(s);
			break;
		case IMAP_PARSE_LITERAL:
			imap_session_literal(s);
			break;
		case IMAP_PARSE_ERROR: {
			const char *tag = imap_parser_tag(s->parser);
			const char *err = imap_parser_error(s->parser);
			const char *name = imap_parser_name(s->parser);
			bool append = name != NULL && strcmp(name, "APPEND") == 0 &&
				      s->state >= IMAP_STATE_AUTH;
			if (imap_parser_fatal(s->parser)) {
				log_info("session=%llx ip=%s unrecoverable input: %s", IMAP_SID(s),
					 s->ip, err != NULL ? err : "");
				imap_session_say(s, "* BYE %s\r\n", err != NULL ? err : "Syntax error");
				imap_session_close(s);
				return;
			}
			if (append && s->spool.failed_text[0] != '\0')
				/* a sink failure (quota, disk): not a syntax error */
				imap_session_say(s, "%s NO %s\r\n", tag, s->spool.failed_text);
			else
				imap_session_bad(s, tag, err != NULL ? err : "Syntax error");
			imap_parser_reset(s->parser);
			imap_append_spool_reset(s);
			break;
		}
		}
		if (used == 0 && r == IMAP_PARSE_MORE)
			break;
	}
	if (s->state == IMAP_STATE_LOGOUT)
		return;
	imap_session_set_timeout(s);
	if (imap_session_reading(s) && !s->output_blocked)
		bufferevent_enable(s->bev, EV_READ);
	else if (!s->tls_pending)
		bufferevent_disable(s->bev, EV_READ);
}

void imap_session_resume(struct imap_session *s)
{
	imap_session_process(s);
}

/* ---- connection life ---- */

static void imap_session_greet(struct imap_session *s)
{
	struct buf caps;
	buf_init(&caps, 2048);
	s->state = IMAP_STATE_NOTAUTH;
	imap_capabilities(s, &caps);
	imap_session_say(s, "* OK [CAPABILITY %s] Postern ready.\r\n", caps.data);
	buf_free(&caps);
}

static void imap_session_verdict_cb(void *ctx, struct ipc_reader *r)
{
	struct imap_session *s = ctx;
	s->dir_wait = NULL;
	uint32_t verdict = r != NULL ? ipc_get_u32(r) : IPC_CONN_TOO_MANY;
	if (r != NULL && r->error)
		verdict = IPC_CONN_TOO_MANY;
	if (verdict != IPC_CONN_OK) {
		log_info("session=%llx ip=%s refused: %s", IMAP_SID(s), s->ip,
			 r == NULL ? "directory unavailable"
			 : verdict == IPC_CONN_DENIED ? "access rule"
			 : verdict == IPC_CONN_BLOCKED ? "ip blocked after failed logins"
			 : verdict == IPC_CONN_TOO_MANY_FROM_IP ? "too many connections from ip"
								  : "too many connections");
		s->state = IMAP_STATE_NOTAUTH;
		imap_session_say(s, "* BYE %s\r\n",
				 r == NULL ? "Service not available"
				 : verdict == IPC_CONN_DENIED ? "Access denied"
				 : verdict == IPC_CONN_BLOCKED
					 ? "Temporarily blocked after failed logins"
					 : "Too many connections");
		imap_session_close(s);
		return;
	}
	s->counted = true;
	imap_session_greet(s);
	imap_session_process(s);
}

void imap_session_create(struct imapd *server, int fd, enum listener_kind kind, const char *ip)
{
	struct imap_session *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		close(fd);
		imapd_session_gone(server);
		return;
	}
	s->server = server;
	s->id = ++server->next_id;
	s->kind = kind;
	snprintf(s->ip, sizeof(s->ip), "%s", ip);
	s->state = IMAP_STATE_CONNECT;
	s->spool.fd = -1;
	buf_init(&s->out, IMAP_OUT_MAX);
	s->parser = imap_parser_new(NULL);

	/* On failure the SSL is freed and fd closed. */
	s->bev = tls_bufferevent_new(server->base, fd, server->tls, kind, kind == LISTENER_IMAPS,
				     &s->ssl);
	s->close_ev = evtimer_new(server->base, imap_session_close_cb, s);
	if (s->bev == NULL || s->close_ev == NULL || s->parser == NULL) {
		if (s->bev != NULL)
			bufferevent_free(s->bev);
		if (s->close_ev != NULL)
			event_free(s->close_ev);
		imap_parser_free(&s->parser);
		free(s);
		imapd_session_gone(server);
		return;
	}
	s->next = sessions;
	if (sessions != NULL)
		sessions->prev = s;
	sessions = s;

	bufferevent_setcb(s->bev, imap_session_read_cb, imap_session_write_cb,
			  imap_session_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_WRITE, IMAP_OUT_LOW, 0);
	imap_session_set_timeout(s);
	bufferevent_enable(s->bev, EV_WRITE);
	bufferevent_disable(s->bev, EV_READ);
	log_info("session=%llx connect ip=%s listener=%s", IMAP_SID(s), s->ip,
		 listener_kind_name(kind));

	s->dir_wait = imapd_connect_request(server, s->ip, kind, imap_session_verdict_cb, s);
	if (s->dir_wait == NULL) {
		s->state = IMAP_STATE_NOTAUTH;
		imap_session_say(s, "* BYE Service not available\r\n");
		imap_session_close(s);
	}
}

static void imap_session_free(struct imap_session **sp)
{
	struct imap_session *s = *sp;
	if (s == NULL)
		return;
	*sp = NULL;
	if (s->job_running && s->server->pool != NULL) {
		/* The job owns the store right now: free when it is done. */
		s->free_pending = true;
		bufferevent_disable(s->bev, EV_READ | EV_WRITE);
		return;
	}
	struct imapd *server = s->server;
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
		imapd_login_uncount(server, s->user);
	log_info("session=%llx disconnect ip=%s listener=%s user=%s in=%llu out=%llu",
		 IMAP_SID(s), s->ip, listener_kind_name(s->kind), s->user != NULL ? s->user : "-",
		 (unsigned long long)s->bytes_in, (unsigned long long)s->bytes_out);
	imap_idle_stop(s);
	imap_cmd_free(&s->cmd);
	imap_append_spool_reset(s);
	mbox_close(&s->mbox);
	mstore_close(&s->store);
	imap_seqset_free(&s->saved);
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	bufferevent_free(s->bev);
	event_free(s->close_ev);
	imap_parser_free(&s->parser);
	buf_free(&s->out);
	free(s->user);
	free(s->mech);
	free(s);
	imapd_session_gone(server);
}

static void imap_session_close_cb(evutil_socket_t fd, short what, void *arg)
{
	struct imap_session *s = arg;
	(void)fd;
	(void)what;
	if (s->state != IMAP_STATE_LOGOUT) {
		/* the drain re-check of a chunked command (STARTTLS filter) */
		imap_session_drain_check(s);
		return;
	}
	if (imap_session_unsent(s) > 0 && s->close_polls++ < 200) {
		struct timeval tv = { 0, 10000 };
		evtimer_add(s->close_ev, &tv);
		return;
	}
	imap_session_free(&s);
}

void imap_session_close(struct imap_session *s)
{
	/* Never frees synchronously: callers may still look at s. */
	s->state = IMAP_STATE_LOGOUT;
	imap_idle_stop(s);
	bufferevent_disable(s->bev, EV_READ);
	if (s->job_running)
		return; /* the job's done() sees LOGOUT and comes back here */
	if (imap_session_unsent(s) == 0)
		event_active(s->close_ev, EV_TIMEOUT, 1);
	else
		bufferevent_enable(s->bev, EV_WRITE);
	if (!evtimer_pending(s->close_ev, NULL)) {
		struct timeval tv = { 0, 10000 };
		evtimer_add(s->close_ev, &tv);
	}
}

int imap_session_start_tls(struct imap_session *s)
{
	/* RFC 9051 6.2.1 / STARTTLS injection: anything pipelined after
	 * STARTTLS in plaintext is discarded, never executed. */
	SSL *ssl;
	size_t junk;
	struct bufferevent *tls_bev = tls_bufferevent_starttls(s->server->base, s->bev,
							       s->server->tls, s->kind, &ssl, &junk);
	if (junk > 0)
		log_warn("session=%llx ip=%s discarded %zu octets pipelined after STARTTLS",
			 IMAP_SID(s), s->ip, junk);
	if (tls_bev == NULL)
		return -1;
	s->bev = tls_bev;
	s->ssl = ssl;
	s->tls_pending = true;
	/* Forget parser state learnt before TLS. */
	imap_parser_reset(s->parser);
	bufferevent_setcb(s->bev, imap_session_read_cb, imap_session_write_cb,
			  imap_session_event_cb, s);
	bufferevent_setwatermark(s->bev, EV_WRITE, IMAP_OUT_LOW, 0);
	imap_session_set_timeout(s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	return 0;
}

static void imap_session_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	imap_session_process(arg);
}

static void imap_session_write_cb(struct bufferevent *bev, void *arg)
{
	struct imap_session *s = arg;
	(void)bev;
	if (s->state == IMAP_STATE_LOGOUT) {
		if (!s->job_running && !evtimer_pending(s->close_ev, NULL))
			imap_session_close_cb(-1, 0, s);
		return;
	}
	if (s->job_again) {
		imap_session_drain_check(s);
		return;
	}
	if (s->output_blocked && imap_session_unsent(s) <= IMAP_OUT_LOW) {
		s->output_blocked = false;
		imap_session_process(s);
	}
}

static void imap_session_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct imap_session *s = arg;
	if ((what & BEV_EVENT_CONNECTED) != 0) {
		char desc[128];
		s->tls = true;
		s->tls_pending = false;
		tls_describe(s->ssl, desc, sizeof(desc));
		log_info("session=%llx ip=%s tls=%s", IMAP_SID(s), s->ip, desc);
		imap_session_process(s);
		return;
	}
	if ((what & BEV_EVENT_TIMEOUT) != 0 && s->state != IMAP_STATE_LOGOUT) {
		log_info("session=%llx ip=%s timeout state=%s", IMAP_SID(s), s->ip,
			 state_names[s->state]);
		if (!s->job_running)
			imap_session_say(s, "* BYE Autologout; idle for too long\r\n");
		imap_session_close(s);
		return;
	}
	if ((what & BEV_EVENT_ERROR) != 0 && s->ssl != NULL && !s->tls) {
		unsigned long e = bufferevent_get_openssl_error(bev);
		char detail[160] = "";
		if (e != 0)
			ERR_error_string_n(e, detail, sizeof(detail));
		log_info("session=%llx ip=%s TLS handshake failed: %s", IMAP_SID(s), s->ip, detail);
	}
	imap_session_free(&s);
}

void imap_sessions_stop(struct imapd *server)
{
	(void)server;
	for (struct imap_session *s = sessions; s != NULL; s = s->next) {
		if (s->state == IMAP_STATE_LOGOUT)
			continue;
		if (!s->busy || s->idling) {
			if (!s->job_running)
				imap_session_say(s, "* BYE Server shutting down\r\n");
			imap_session_close(s);
		} else {
			s->logout_on_end = true;
		}
	}
}

void imap_sessions_free_all(struct imapd *server)
{
	(void)server;
	while (sessions != NULL) {
		struct imap_session *s = sessions;
		s->job_running = false; /* the pool is gone */
		s->free_pending = false;
		imap_session_free(&s);
	}
}
