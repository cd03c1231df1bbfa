/*
 * remote.c — the outbound SMTP client (RFC 5321, 3207, 2920, 1870, 6152,
 * 6531, 3461, 3030, 4954 for smarthost AUTH).
 *
 * A job is one transaction: one message, the recipients of one domain.
 * Route: the smarthost when the queue names one, else the domain's mail
 * exchangers from dns.c (preference order, randomised among equals,
 * implicit MX, null MX bounced). Hosts and their addresses are tried in
 * order until one takes the transaction; a failure before MAIL FROM
 * (connect, greeting, EHLO, TLS) moves on to the next address, a reply
 * to MAIL/RCPT/DATA is the answer for this attempt.
 *
 * TLS policy per job (RFC 7435): none; may (STARTTLS when offered, no
 * certificate check; a failed handshake is retried once in plaintext with
 * the same host); encrypt (no TLS, no delivery); verify (the certificate
 * must chain to the system store or outbound.tls_ca_file and match the MX
 * host name).
 *
 * A connection whose transaction ended cleanly stays open for a few
 * seconds for the next job to the same route (several messages over one
 * connection). Open connections per remote IP are capped
 * (outbound.concurrency_per_ip); a job that finds every address at its cap
 * waits for a connection to close.
 */
#include "deliver/remote.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "deliver/dns.h"
#include "lib-queue/spool.h"
#include "lib-smtp/smtp.h"
#include "lib-tls/tls.h"
#include "lib/log.h"
#include "lib/util.h"

#define REMOTE_JOB_RCPTS     100u
#define REMOTE_IDLE_SECONDS  5
#define REMOTE_IDLE_MAX      64u
#define REMOTE_OUT_HIGH      (256u * 1024)   /* body bytes queued ahead of the socket */
#define REMOTE_CHUNK         (64u * 1024)
#define REMOTE_REPLY_MAX     512

enum rconn_state {
	RC_CONNECTING, RC_BANNER, RC_EHLO, RC_HELO, RC_STARTTLS, RC_TLS, RC_AUTH,
	RC_TXN,          /* MAIL/RCPT/DATA replies expected */
	RC_BODY,         /* sending the DATA body */
	RC_BDAT,         /* sending BDAT chunks */
	RC_DOT,          /* waiting for the reply to the end of data */
	RC_RSET,
	RC_IDLE, RC_QUIT,
};

enum rcmd { CMD_MAIL, CMD_RCPT, CMD_DATA };

struct rjob {
	struct rjob *next;
	struct remote *rm;
	uint64_t reqid;
	char id[17];
	char domain[256];
	char *route;                    /* smarthost "HOST:PORT" or NULL */
	char key[320];                  /* connections of the same key are reused */
	enum ipc_tls_policy tls;
	uint32_t flags;
	unsigned n;
	uint32_t idx[REMOTE_JOB_RCPTS];
	unsigned status[REMOTE_JOB_RCPTS];
	char *reply[REMOTE_JOB_RCPTS];
	bool answered[REMOTE_JOB_RCPTS];   /* this attempt has this recipient's answer */

	struct spool_envelope *env;
	int fd;
	off_t body_off;
	size_t body_len;

	struct dns_query *dq;
	struct dns_result *dns;
	size_t host_i, addr_i;
	bool plaintext_retry;           /* may: the TLS handshake with this address failed */
	bool started;                   /* MAIL FROM was sent: no other host this time */
	bool reused;                    /* on a connection kept from an earlier job */
	bool mail_replied;              /* the peer answered MAIL FROM */
	char error[REMOTE_REPLY_MAX];   /* the last connection-level failure */
	bool error_perm;
	struct rconn *conn;
	char remote_host[320];
	char tls_desc[128];
	bool peer_dsn;
};

struct rconn {
	struct rconn *next;
	struct remote *rm;
	struct bufferevent *bev;
	SSL *ssl;
	enum rconn_state state;
	char key[320];
	char host[256];
	char ip[INET6_ADDRSTRLEN];
	struct smtp_reply_parser parser;
	struct smtp_reply reply;
	struct smtp_ehlo_caps caps;
	bool tls_active, tls_failed, broken;
	unsigned busy;                  /* inside one of its callbacks */
	bool dead;                      /* freed once the callback returns */
	bool no_tls;                    /* plaintext retry after a failed handshake */
	struct rjob *job;
	struct event *idle_ev;

	/* transaction */
	enum rcmd cmds[REMOTE_JOB_RCPTS + 2];
	bool rcpt_ok[REMOTE_JOB_RCPTS];  /* accepted at RCPT in this transaction */
	unsigned ncmds, sent, answered, accepted;
	bool mail_failed;
	bool txn_open;                  /* the peer took MAIL and no end or RSET since */
	uint64_t body_pos;
	bool at_bol;                    /* the converted body is at the start of a line */
	bool last_lf;
	unsigned bdat_outstanding;
	size_t unsent_seen;             /* bytes not yet taken by the peer, at the last read timeout */
	bool bdat_last_sent, bdat_failed;
	char bdat_error[REMOTE_REPLY_MAX];
};

struct remote {
	struct event_base *base;
	const struct config *cfg;
	struct dns_resolver *dns;
	SSL_CTX *ctx;                   /* none/may/encrypt: no certificate check */
	SSL_CTX *verify_ctx;            /* verify: with the CA store, made at first use */
	remote_result_cb *cb;
	void *cb_ctx;
	struct rconn *conns;
	struct rjob *jobs;              /* every job in progress */
	struct rjob *parked;            /* waiting for a connection slot */
	char *smarthost_password;
	unsigned nidle;
};

static void rjob_next_address(struct rjob *job);
static void rconn_free(struct rconn *c);
static void rconn_set_timeouts(struct rconn *c);
static void rconn_start_txn(struct rconn *c);

/* ---- jobs ---- */

static void rjob_free(struct rjob *job)
{
	struct remote *rm = job->rm;
	for (struct rjob **p = &rm->jobs; *p != NULL; p = &(*p)->next) {
		if (*p == job) {
			*p = job->next;
			break;
		}
	}
	if (job->dq != NULL)
		dns_cancel(job->dq);
	for (unsigned i = 0; i < job->n; i++)
		free(job->reply[i]);
	spool_envelope_free(&job->env);
	if (job->fd >= 0)
		close(job->fd);
	free(job->dns);
	free(job->route);
	free(job);
}

/* Recipient k's answer for this attempt; the first one counts. */
static void rjob_set(struct rjob *job, unsigned k, enum ipc_dlv_status status, const char *reply)
{
	if (job->answered[k])
		return;
	job->status[k] = status;
	free(job->reply[k]);
	job->reply[k] = strdup(reply);
	job->answered[k] = true;
}

/* Every recipient without an answer yet gets status/reply. */
static void rjob_set_all(struct rjob *job, enum ipc_dlv_status status, const char *reply)
{
	for (unsigned k = 0; k < job->n; k++)
		rjob_set(job, k, status, reply);
}

static void rjob_finish(struct rjob *job)
{
	struct remote *rm = job->rm;
	struct ipc_writer w;
	ipc_writer_init(&w);
	ipc_put_str(&w, job->id);
	ipc_put_str(&w, job->remote_host[0] != '\0' ? job->remote_host : NULL);
	ipc_put_str(&w, job->tls_desc[0] != '\0' ? job->tls_desc : NULL);
	ipc_put_u32(&w, job->peer_dsn ? 1 : 0);
	ipc_put_u32(&w, job->n);
	for (unsigned k = 0; k < job->n; k++) {
		ipc_put_u32(&w, job->idx[k]);
		ipc_put_u32(&w, job->reply[k] != NULL ? job->status[k] : IPC_DLV_TEMPFAIL);
		ipc_put_str(&w, job->reply[k] != NULL ? job->reply[k] : job->error);
	}
	rm->cb(job->reqid, &w, rm->cb_ctx);
	ipc_writer_free(&w);
	if (job->conn != NULL)
		job->conn->job = NULL;
	rjob_free(job);
}

/* Nothing more can be tried this time: the last error answers for every
 * recipient without an answer of its own. */
static void rjob_fail(struct rjob *job)
{
	if (job->error[0] == '\0')
		snprintf(job->error, sizeof(job->error), "4.4.1 no mail exchanger reachable");
	rjob_set_all(job, job->error_perm ? IPC_DLV_PERMFAIL : IPC_DLV_TEMPFAIL, job->error);
	rjob_finish(job);
}

static void rjob_error(struct rjob *job, bool perm, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void rjob_error(struct rjob *job, bool perm, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(job->error, sizeof(job->error), fmt, ap);
	va_end(ap);
	job->error_perm = perm;
}

/* ---- connections ---- */

static void rconn_send(struct rconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void rconn_send(struct rconn *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	evbuffer_add_vprintf(bufferevent_get_output(c->bev), fmt, ap);
	va_end(ap);
}

static unsigned remote_conns_to(struct remote *rm, const char *ip)
{
	unsigned n = 0;
	for (struct rconn *c = rm->conns; c != NULL; c = c->next)
		n += strcmp(c->ip, ip) == 0;
	return n;
}

static void remote_unpark(struct remote *rm)
{
	struct rjob *parked = rm->parked;
	rm->parked = NULL;
	while (parked != NULL) {
		struct rjob *job = parked;
		parked = job->next;
		/* Back on the job list, then try the same address again. */
		job->next = rm->jobs;
		rm->jobs = job;
		rjob_next_address(job);
	}
}

static void rconn_destroy(struct rconn *c)
{
	if (c->idle_ev != NULL)
		event_free(c->idle_ev);
	if (c->bev != NULL)
		bufferevent_free(c->bev);   /* frees the SSL and the socket */
	free(c);
}

/* Unlinks c at once; the memory goes when no callback of c is running
 * (callers check c->dead after anything that may free). */
static void rconn_free(struct rconn *c)
{
	struct remote *rm = c->rm;
	if (c->dead)
		return;
	for (struct rconn **p = &rm->conns; *p != NULL; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			break;
		}
	}
	if (c->state == RC_IDLE)
		rm->nidle--;
	c->state = RC_QUIT;
	c->dead = true;
	if (c->job != NULL)
		c->job->conn = NULL;
	c->job = NULL;
	if (c->busy > 0) {
		/* Closed (and waiting jobs woken) when the callback returns. */
		if (c->bev != NULL)
			bufferevent_disable(c->bev, EV_READ | EV_WRITE);
		event_del(c->idle_ev);
		return;
	}
	rconn_destroy(c);
	if (rm->parked != NULL)
		remote_unpark(rm);
}

static void rconn_enter(struct rconn *c)
{
	c->busy++;
}

/* Leaves a callback; false when c is gone. */
static bool rconn_leave(struct rconn *c)
{
	if (--c->busy == 0 && c->dead) {
		struct remote *rm = c->rm;
		rconn_destroy(c);
		if (rm->parked != NULL)
			remote_unpark(rm);
		return false;
	}
	return !c->dead;
}

/* The connection failed or was refused before the transaction started:
 * the job tries its next address; after a transaction started, the job
 * is answered. */
static void rjob_lookup(struct rjob *job);

/* The connection failed or was refused before the transaction started:
 * the job tries its next address (or, under `may` after a failed TLS
 * handshake, the same one in plaintext). After MAIL FROM the job is
 * answered, except on a kept connection that the peer had dropped: that
 * attempt starts afresh. c is unlinked first so that it no longer counts
 * against the per-IP limit. */
static void rconn_abort(struct rconn *c)
{
	struct rjob *job = c->job;
	bool tls_failed = c->tls_failed, no_tls = c->no_tls;
	rconn_free(c);
	if (job == NULL)
		return;
	if (job->started) {
		if (job->reused && !job->mail_replied) {
			log_info("id=%s kept connection to %s lost; connecting afresh", job->id,
				 job->remote_host);
			job->started = false;
			job->reused = false;
			job->error[0] = '\0';
			job->tls_desc[0] = '\0';
			rjob_lookup(job);
			return;
		}
		rjob_fail(job);
		return;
	}
	if (tls_failed && job->tls == IPC_TLS_MAY && !no_tls) {
		job->plaintext_retry = true;   /* same address, no STARTTLS */
	} else {
		job->plaintext_retry = false;
		job->addr_i++;
	}
	if (job->dns == NULL)
		rjob_lookup(job);
	else
		rjob_next_address(job);
}

static void rconn_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rconn *c = arg;
	(void)fd;
	(void)what;
	if (c->dead)
		return;
	if (c->state == RC_IDLE) {
		c->rm->nidle--;
		c->state = RC_QUIT;
		rconn_send(c, "QUIT\r\n");
		/* Don't wait for the 221: close once the QUIT is written. */
		bufferevent_disable(c->bev, EV_READ);
		struct timeval tv = { 1, 0 };
		event_add(c->idle_ev, &tv);
		return;
	}
	rconn_free(c);
}

/* A kept connection takes job: no DNS now (a lookup if it fails before
 * the peer answers MAIL FROM). */
static void rconn_reuse(struct rconn *c, struct rjob *job)
{
	c->job = job;
	job->conn = c;
	job->reused = true;
	snprintf(job->remote_host, sizeof(job->remote_host), "%s[%s]", c->host, c->ip);
	if (c->tls_active)
		tls_describe(c->ssl, job->tls_desc, sizeof(job->tls_desc));
	rconn_start_txn(c);
}

/* The job is answered; the connection stays for the next job of its key. */
static void rconn_job_done(struct rconn *c)
{
	struct remote *rm = c->rm;
	struct rjob *job = c->job;
	c->job = NULL;
	if (job != NULL) {
		job->conn = NULL;
		rjob_finish(job);
	}
	if (c->broken || rm->nidle >= REMOTE_IDLE_MAX) {
		rconn_free(c);
		return;
	}
	if (c->txn_open) {
		/* The peer still holds the refused transaction: reset it
		 * before the connection is used again. */
		c->state = RC_RSET;
		rconn_send(c, "RSET\r\n");
		return;
	}
	/* A job waiting for a connection slot with this very key takes the
	 * connection at once; one waiting for another key gets the slot. */
	for (struct rjob **p = &rm->parked; *p != NULL; p = &(*p)->next) {
		struct rjob *j = *p;
		if (strcmp(j->key, c->key) != 0)
			continue;
		*p = j->next;
		j->next = rm->jobs;
		rm->jobs = j;
		rconn_reuse(c, j);
		return;
	}
	if (rm->parked != NULL) {
		rconn_free(c);
		return;
	}
	c->state = RC_IDLE;
	rm->nidle++;
	struct timeval tv = { REMOTE_IDLE_SECONDS, 0 };
	event_add(c->idle_ev, &tv);
}

/* ---- transaction ---- */

static bool reply_ok(const struct smtp_reply *r)
{
	return r->code >= 200 && r->code < 300;
}

static enum ipc_dlv_status reply_status(const struct smtp_reply *r)
{
	return r->code >= 500 ? IPC_DLV_PERMFAIL : r->code >= 400 ? IPC_DLV_TEMPFAIL : IPC_DLV_OK;
}

static void reply_text(const struct smtp_reply *r, char *out, size_t size)
{
	smtp_reply_oneline(r, out, size);
}

/* The reply to the end of data (or to DATA itself) answers for the
 * recipients the peer accepted at RCPT, and only for them. */
static void rconn_set_accepted(struct rconn *c, const struct smtp_reply *r, const char *text)
{
	for (unsigned k = 0; k < c->job->n; k++) {
		if (c->rcpt_ok[k])
			rjob_set(c->job, k, reply_status(r), text);
	}
}

static void rconn_send_next_cmd(struct rconn *c)
{
	struct rjob *job = c->job;
	const struct spool_envelope *env = job->env;
	while (c->sent < c->ncmds && (c->caps.pipelining || c->sent == c->answered)) {
		enum rcmd cmd = c->cmds[c->sent];
		if (cmd == CMD_MAIL) {
			struct evbuffer *out = bufferevent_get_output(c->bev);
			evbuffer_add_printf(out, "MAIL FROM:<%s>", env->sender);
			if (c->caps.size_given)
				evbuffer_add_printf(out, " SIZE=%zu", job->body_len);
			if (env->body_8bit && c->caps.eightbitmime)
				evbuffer_add_printf(out, " BODY=8BITMIME");
			if (env->smtputf8 && c->caps.smtputf8)
				evbuffer_add_printf(out, " SMTPUTF8");
			if (c->caps.dsn) {
				char x[512];
				if (env->ret != NULL)
					evbuffer_add_printf(out, " RET=%s", env->ret);
				if (env->envid != NULL &&
				    smtp_xtext_encode(env->envid, x, sizeof(x)) == 0)
					evbuffer_add_printf(out, " ENVID=%s", x);
			}
			evbuffer_add(out, "\r\n", 2);
		} else if (cmd == CMD_RCPT) {
			unsigned k = c->sent - 1;
			const struct spool_rcpt *r = &env->rcpts[job->idx[k]];
			struct evbuffer *out = bufferevent_get_output(c->bev);
			evbuffer_add_printf(out, "RCPT TO:<%s>", r->address);
			if (c->caps.dsn) {
				char x[1024];
				if (r->notify != NULL)
					evbuffer_add_printf(out, " NOTIFY=%s", r->notify);
				const char *semi = r->orcpt != NULL ? strchr(r->orcpt, ';') : NULL;
				if (semi != NULL && smtp_xtext_encode(semi + 1, x, sizeof(x)) == 0)
					evbuffer_add_printf(out, " ORCPT=%.*s;%s",
							    (int)(semi - r->orcpt), r->orcpt, x);
			}
			evbuffer_add(out, "\r\n", 2);
		} else {
			rconn_send(c, "DATA\r\n");
		}
		c->sent++;
	}
}

static void rconn_start_txn(struct rconn *c)
{
	struct rjob *job = c->job;
	const struct spool_envelope *env = job->env;
	char text[REMOTE_REPLY_MAX];
	job->peer_dsn = c->caps.dsn;
	/* What the message needs and the peer lacks is final: another try
	 * with the same peer cannot do better (RFC 6531 3.5, RFC 6152). */
	if (env->smtputf8 && !c->caps.smtputf8) {
		snprintf(text, sizeof(text),
			 "5.6.7 %s does not support SMTPUTF8, which the message needs", c->host);
		rjob_set_all(job, IPC_DLV_PERMFAIL, text);
		rconn_job_done(c);
		return;
	}
	if (env->body_8bit && !c->caps.eightbitmime) {
		snprintf(text, sizeof(text),
			 "5.6.3 %s does not support 8BITMIME, which the message needs", c->host);
		rjob_set_all(job, IPC_DLV_PERMFAIL, text);
		rconn_job_done(c);
		return;
	}
	if (c->caps.size_given && c->caps.size > 0 && job->body_len > c->caps.size) {
		snprintf(text, sizeof(text), "5.3.4 message size %zu exceeds %s's limit of %llu",
			 job->body_len, c->host, (unsigned long long)c->caps.size);
		rjob_set_all(job, IPC_DLV_PERMFAIL, text);
		rconn_job_done(c);
		return;
	}
	job->started = true;
	c->ncmds = 0;
	c->cmds[c->ncmds++] = CMD_MAIL;
	for (unsigned k = 0; k < job->n; k++)
		c->cmds[c->ncmds++] = CMD_RCPT;
	if (!c->caps.chunking)
		c->cmds[c->ncmds++] = CMD_DATA;
	c->sent = c->answered = c->accepted = 0;
	memset(c->rcpt_ok, 0, sizeof(c->rcpt_ok));
	c->mail_failed = false;
	c->body_pos = 0;
	c->unsent_seen = 0;
	c->at_bol = true;
	c->last_lf = true;
	c->bdat_outstanding = 0;
	c->bdat_last_sent = c->bdat_failed = false;
	c->state = RC_TXN;
	event_del(c->idle_ev);
	rconn_set_timeouts(c);
	rconn_send_next_cmd(c);
}

/* Converts the next piece of the body (LF -> CRLF, dot-stuffing for DATA)
 * into out. Returns bytes of converted output, 0 at the end. */
static size_t rconn_body_piece(struct rconn *c, struct evbuffer *out, bool stuff)
{
	struct rjob *job = c->job;
	char in[REMOTE_CHUNK / 2];
	size_t left = job->body_len - c->body_pos;
	size_t want = left < sizeof(in) ? left : sizeof(in);
	if (want == 0)
		return 0;
	ssize_t got = pread(job->fd, in, want, job->body_off + (off_t)c->body_pos);
	if (got <= 0)
		return (size_t)-1;
	char conv[REMOTE_CHUNK + 16];
	size_t n = 0;
	for (ssize_t i = 0; i < got; i++) {
		char ch = in[i];
		if (stuff && c->at_bol && ch == '.')
			conv[n++] = '.';
		if (ch == '\n')
			conv[n++] = '\r';
		conv[n++] = ch;
		c->at_bol = ch == '\n';
	}
	c->last_lf = in[got - 1] == '\n';
	c->body_pos += (uint64_t)got;
	evbuffer_add(out, conv, n);
	return n;
}

/* While the body goes out nothing is read, so only writes are timed;
 * waiting for the answer to the end of data gets twice the command
 * timeout (RFC 5321 4.5.3.2.6: 10 minutes with the default 300 s). */
static void rconn_body_timeouts(struct rconn *c, bool waiting_reply)
{
	unsigned t = c->rm->cfg->out_command_timeout;
	struct timeval w = { (time_t)t, 0 }, r = { (time_t)t * 2, 0 };
	bufferevent_set_timeouts(c->bev, waiting_reply ? &r : NULL, &w);
}

static void rconn_fill_body(struct rconn *c)
{
	struct rjob *job = c->job;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	if (c->state == RC_BODY) {
		while (evbuffer_get_length(out) < REMOTE_OUT_HIGH) {
			size_t n = rconn_body_piece(c, out, true);
			if (n == (size_t)-1) {
				rjob_error(job, false, "4.3.0 cannot read the spool file");
				c->broken = true;
				rconn_abort(c);
				return;
			}
			if (n == 0) {
				evbuffer_add_printf(out, "%s.\r\n", c->last_lf ? "" : "\r\n");
				c->state = RC_DOT;
				rconn_body_timeouts(c, true);
				return;
			}
		}
	} else if (c->state == RC_BDAT) {
		while (evbuffer_get_length(out) < REMOTE_OUT_HIGH && !c->bdat_last_sent &&
		       !c->bdat_failed && (c->caps.pipelining || c->bdat_outstanding == 0)) {
			struct evbuffer *chunk = evbuffer_new();
			size_t n = chunk != NULL ? rconn_body_piece(c, chunk, false) : (size_t)-1;
			if (n == (size_t)-1) {
				if (chunk != NULL)
					evbuffer_free(chunk);
				rjob_error(job, false, "4.3.0 cannot read the spool file");
				c->broken = true;
				rconn_abort(c);
				return;
			}
			bool last = c->body_pos >= job->body_len;
			if (last && !c->last_lf && job->body_len > 0) {
				evbuffer_add(chunk, "\r\n", 2);
				n += 2;
			}
			evbuffer_add_printf(out, "BDAT %zu%s\r\n", n, last ? " LAST" : "");
			evbuffer_add_buffer(out, chunk);
			evbuffer_free(chunk);
			c->bdat_outstanding++;
			if (last) {
				c->bdat_last_sent = true;
				c->state = RC_DOT;
			}
		}
		rconn_body_timeouts(c, c->bdat_last_sent || !c->caps.pipelining);
	}
}

/* After the last RCPT reply with CHUNKING: the body or an RSET. */
static void rconn_after_rcpts(struct rconn *c)
{
	if (c->mail_failed || c->accepted == 0) {
		rconn_job_done(c);
		return;
	}
	c->state = RC_BDAT;
	rconn_fill_body(c);
}

static void rconn_txn_reply(struct rconn *c, const struct smtp_reply *r)
{
	struct rjob *job = c->job;
	char text[REMOTE_REPLY_MAX];
	reply_text(r, text, sizeof(text));
	if (c->answered >= c->sent) {
		/* A reply to nothing we sent: the peer is confused. */
		rjob_error(job, false, "4.5.0 %s[%s] sent an unexpected reply: %s", c->host, c->ip,
			   text);
		c->broken = true;
		rconn_abort(c);
		return;
	}
	enum rcmd cmd = c->cmds[c->answered++];
	if (cmd == CMD_MAIL) {
		job->mail_replied = true;
		c->txn_open = reply_ok(r);
		if (!reply_ok(r)) {
			c->mail_failed = true;
			rjob_set_all(job, reply_status(r), text);
		}
	} else if (cmd == CMD_RCPT) {
		unsigned k = c->answered - 2;
		if (c->mail_failed) {
			/* Pipelined after a refused MAIL: nothing to learn. */
		} else if (reply_ok(r)) {
			c->accepted++;
			c->rcpt_ok[k] = true;
		} else {
			rjob_set(job, k, reply_status(r), text);
		}
	} else {
		/* DATA */
		if (r->code == 354) {
			if (c->mail_failed || c->accepted == 0) {
				/* RFC 2920 3.1: end the data at once. */
				rconn_send(c, ".\r\n");
				c->state = RC_DOT;
				c->accepted = 0;
				return;
			}
			c->state = RC_BODY;
			rconn_body_timeouts(c, false);
			rconn_fill_body(c);
			return;
		}
		if (!c->mail_failed && c->accepted > 0)
			rconn_set_accepted(c, r, text);
		rconn_job_done(c);
		return;
	}
	if (c->answered == c->ncmds && c->caps.chunking) {
		rconn_after_rcpts(c);
		return;
	}
	if (!c->caps.pipelining && c->sent == c->answered &&
	    (c->mail_failed || (c->cmds[c->sent] == CMD_DATA && c->accepted == 0))) {
		rconn_job_done(c);
		return;
	}
	rconn_send_next_cmd(c);
}

static void rconn_dot_reply(struct rconn *c, const struct smtp_reply *r)
{
	struct rjob *job = c->job;
	char text[REMOTE_REPLY_MAX];
	reply_text(r, text, sizeof(text));
	if (c->caps.chunking) {
		if (c->bdat_outstanding == 0) {
			rjob_error(job, false, "4.5.0 %s[%s] sent an unexpected reply: %s", c->host,
				   c->ip, text);
			c->broken = true;
			rconn_abort(c);
			return;
		}
		c->bdat_outstanding--;
		if (!reply_ok(r)) {
			/* RFC 3030: no more chunks after a refused one; what
			 * the peer holds now is unclear, so the connection goes. */
			if (!c->bdat_failed)
				rconn_set_accepted(c, r, text);
			c->bdat_failed = true;
			c->broken = true;
		}
		if (c->bdat_outstanding > 0)
			return;
		if (!c->bdat_failed && !c->bdat_last_sent) {
			/* Without PIPELINING: one chunk at a time. */
			rconn_fill_body(c);
			return;
		}
		c->txn_open = false;
		if (!c->bdat_failed)
			rconn_set_accepted(c, r, text);
		rconn_job_done(c);
		return;
	}
	c->txn_open = false;
	if (c->accepted > 0)
		rconn_set_accepted(c, r, text);
	rconn_job_done(c);
}

/* ---- session setup ---- */

static bool rconn_want_tls(const struct rconn *c)
{
	return c->job != NULL && c->job->tls != IPC_TLS_NONE && !c->no_tls && !c->tls_active;
}

static void rconn_ehlo_done(struct rconn *c)
{
	struct rjob *job = c->job;
	bool tls_required = job->tls == IPC_TLS_ENCRYPT || job->tls == IPC_TLS_VERIFY;
	if (rconn_want_tls(c) && c->caps.starttls) {
		c->state = RC_STARTTLS;
		rconn_send(c, "STARTTLS\r\n");
		return;
	}
	if (tls_required && !c->tls_active) {
		rjob_error(job, false, "4.7.5 TLS is required for %s but %s[%s] does not offer STARTTLS",
			   job->domain, c->host, c->ip);
		c->broken = true;
		rconn_abort(c);
		return;
	}
	if (job->flags & IPC_DLV_SMARTHOST_AUTH) {
		struct remote *rm = c->rm;
		if (!c->tls_active) {
			rjob_error(job, false, "4.7.5 smarthost %s offers no TLS; credentials not sent",
				   c->host);
			c->broken = true;
			rconn_abort(c);
			return;
		}
		const char *user = rm->cfg->smarthost_user;
		const char *pass = rm->smarthost_password != NULL ? rm->smarthost_password : "";
		size_t ulen = strlen(user), plen = strlen(pass);
		unsigned char *raw = malloc(ulen + plen + 2);
		unsigned char *b64 = malloc(4 * ((ulen + plen + 4) / 3) + 4);
		if (raw == NULL || b64 == NULL) {
			free(raw);
			free(b64);
			rjob_error(job, false, "4.3.0 out of memory");
			rconn_abort(c);
			return;
		}
		raw[0] = '\0';
		memcpy(raw + 1, user, ulen);
		raw[1 + ulen] = '\0';
		memcpy(raw + 2 + ulen, pass, plen);
		EVP_EncodeBlock(b64, raw, (int)(ulen + plen + 2));
		c->state = RC_AUTH;
		rconn_send(c, "AUTH PLAIN %s\r\n", b64);
		OPENSSL_cleanse(raw, ulen + plen + 2);
		OPENSSL_cleanse(b64, strlen((char *)b64));
		free(raw);
		free(b64);
		return;
	}
	rconn_start_txn(c);
}

static void rconn_read_cb(struct bufferevent *bev, void *arg);
static void rconn_write_cb(struct bufferevent *bev, void *arg);
static void rconn_event_cb(struct bufferevent *bev, short what, void *arg);

static void rconn_set_timeouts(struct rconn *c)
{
	struct timeval tv = { (time_t)c->rm->cfg->out_command_timeout, 0 };
	bufferevent_set_timeouts(c->bev, &tv, &tv);
}

static SSL_CTX *remote_ctx_new(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx != NULL) {
		SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
		SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	}
	return ctx;
}

/* The CA store costs about a megabyte: loaded only once a destination
 * with the verify policy comes up. */
static SSL_CTX *remote_verify_ctx(struct remote *rm)
{
	if (rm->verify_ctx != NULL)
		return rm->verify_ctx;
	SSL_CTX *ctx = remote_ctx_new();
	if (ctx == NULL)
		return NULL;
	int ok = rm->cfg->tls_ca_file != NULL
		? SSL_CTX_load_verify_locations(ctx, rm->cfg->tls_ca_file, NULL)
		: SSL_CTX_set_default_verify_paths(ctx);
	if (ok != 1) {
		log_error("cannot load the CA certificates%s%s", rm->cfg->tls_ca_file != NULL ?
			  " from " : " (system store)",
			  rm->cfg->tls_ca_file != NULL ? rm->cfg->tls_ca_file : "");
		SSL_CTX_free(ctx);
		return NULL;
	}
	return rm->verify_ctx = ctx;
}

static void rconn_start_tls(struct rconn *c)
{
	struct rjob *job = c->job;
	SSL_CTX *ctx = job->tls == IPC_TLS_VERIFY ? remote_verify_ctx(c->rm) : c->rm->ctx;
	SSL *ssl = ctx != NULL ? SSL_new(ctx) : NULL;
	if (ssl == NULL)
		goto fail;
	SSL_set_tlsext_host_name(ssl, c->host);
	if (job->tls == IPC_TLS_VERIFY) {
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (SSL_set1_host(ssl, c->host) != 1)
			goto fail;
		SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
	}
	struct bufferevent *tls = bufferevent_openssl_filter_new(
		c->rm->base, c->bev, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (tls == NULL)
		goto fail;
	bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
	c->bev = tls;
	c->ssl = ssl;
	c->state = RC_TLS;
	bufferevent_setcb(c->bev, rconn_read_cb, rconn_write_cb, rconn_event_cb, c);
	rconn_set_timeouts(c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	return;
fail:
	if (ssl != NULL)
		SSL_free(ssl);
	rjob_error(job, false, "4.7.0 cannot start TLS with %s[%s]", c->host, c->ip);
	c->tls_failed = true;
	rconn_abort(c);
}

static void rconn_send_ehlo(struct rconn *c)
{
	c->state = RC_EHLO;
	rconn_send(c, "EHLO %s\r\n", c->rm->cfg->hostname);
}

/* One complete reply from the server. Returns false when c was freed. */
static bool rconn_reply(struct rconn *c, const struct smtp_reply *r)
{
	struct rjob *job = c->job;
	char text[REMOTE_REPLY_MAX];
	if (job == NULL && c->state != RC_QUIT && c->state != RC_IDLE && c->state != RC_RSET) {
		rconn_free(c);
		return false;
	}
	switch (c->state) {
	case RC_BANNER:
		if (r->code != 220) {
			reply_text(r, text, sizeof(text));
			rjob_error(job, false, "4.4.0 %s[%s] greeted with: %s", c->host, c->ip, text);
			rconn_abort(c);
			return false;
		}
		rconn_send_ehlo(c);
		break;
	case RC_EHLO:
		if (reply_ok(r)) {
			smtp_ehlo_caps_parse(r, &c->caps);
			rconn_ehlo_done(c);
			break;
		}
		if (r->code >= 500 && r->code != 421) {
			c->state = RC_HELO;
			rconn_send(c, "HELO %s\r\n", c->rm->cfg->hostname);
			break;
		}
		reply_text(r, text, sizeof(text));
		rjob_error(job, false, "4.4.0 %s[%s] refused EHLO: %s", c->host, c->ip, text);
		rconn_abort(c);
		return false;
	case RC_HELO:
		if (!reply_ok(r)) {
			reply_text(r, text, sizeof(text));
			rjob_error(job, false, "4.4.0 %s[%s] refused HELO: %s", c->host, c->ip, text);
			rconn_abort(c);
			return false;
		}
		memset(&c->caps, 0, sizeof(c->caps));
		rconn_ehlo_done(c);
		break;
	case RC_STARTTLS:
		if (r->code == 220 &&
		    (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0 || c->parser.line_len > 0)) {
			/* Bytes after the 220 in plaintext: an injection attempt
			 * (or a broken peer); they must never reach TLS. */
			rjob_error(job, false, "4.7.0 %s[%s] sent data after its STARTTLS reply",
				   c->host, c->ip);
			c->tls_failed = true;
			c->broken = true;
			rconn_abort(c);
			return false;
		}
		if (r->code == 220) {
			rconn_start_tls(c);
			return false; /* the parser restarts with the TLS layer */
		}
		if (job->tls == IPC_TLS_MAY) {
			c->no_tls = true;
			rconn_ehlo_done(c);
			break;
		}
		reply_text(r, text, sizeof(text));
		rjob_error(job, false, "4.7.5 %s[%s] refused STARTTLS: %s", c->host, c->ip, text);
		rconn_abort(c);
		return false;
	case RC_AUTH:
		if (r->code != 235) {
			reply_text(r, text, sizeof(text));
			rjob_error(job, false, "4.7.8 smarthost %s refused authentication: %s",
				   c->host, text);
			c->broken = true;
			rconn_abort(c);
			return false;
		}
		rconn_start_txn(c);
		break;
	case RC_TXN:
		rconn_txn_reply(c, r);
		break;
	case RC_DOT:
	case RC_BDAT:
		rconn_dot_reply(c, r);
		break;
	case RC_BODY:
		/* An answer before the end of the data: the peer gave up on
		 * the message (a 2xx this early is no acceptance). */
		reply_text(r, text, sizeof(text));
		if (reply_ok(r)) {
			char why[REMOTE_REPLY_MAX + 64];
			snprintf(why, sizeof(why), "4.5.0 answer before the end of the data: %s", text);
			for (unsigned k = 0; k < job->n; k++) {
				if (c->rcpt_ok[k])
					rjob_set(job, k, IPC_DLV_TEMPFAIL, why);
			}
		} else {
			rconn_set_accepted(c, r, text);
		}
		c->broken = true;
		rconn_job_done(c);
		return false;
	case RC_RSET:
		c->txn_open = false;
		if (!reply_ok(r))
			c->broken = true;
		rconn_job_done(c);
		break;
	case RC_IDLE:
	case RC_QUIT:
		/* A 421 on an idle connection, or the 221: done with it. */
		rconn_free(c);
		return false;
	default:
		reply_text(r, text, sizeof(text));
		rjob_error(job, false, "4.5.0 %s[%s] sent an unexpected reply: %s", c->host, c->ip,
			   text);
		c->broken = true;
		rconn_abort(c);
		return false;
	}
	return !c->dead;
}

static void rconn_read_cb(struct bufferevent *bev, void *arg)
{
	struct rconn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	rconn_enter(c);
	while (!c->dead && c->bev == bev) {
		size_t len = evbuffer_get_length(in);
		if (len == 0)
			break;
		struct evbuffer_iovec v;
		evbuffer_peek(in, -1, NULL, &v, 1);
		size_t consumed = 0;
		const char *error;
		int ret = smtp_reply_parse(&c->parser, v.iov_base, v.iov_len, &consumed, &c->reply,
					   &error);
		evbuffer_drain(in, consumed);
		if (ret < 0) {
			if (c->job != NULL)
				rjob_error(c->job, false, "4.5.0 protocol error from %s[%s]: %s",
					   c->host, c->ip, error);
			c->broken = true;
			rconn_abort(c);
			break;
		}
		if (ret == 0)
			continue;
		if (!rconn_reply(c, &c->reply))
			break;
	}
	rconn_leave(c);
}

static void rconn_write_cb(struct bufferevent *bev, void *arg)
{
	struct rconn *c = arg;
	(void)bev;
	rconn_enter(c);
	if (c->state == RC_BODY || (c->state == RC_BDAT && !c->bdat_last_sent))
		rconn_fill_body(c);
	else if (c->state == RC_QUIT)
		rconn_free(c);
	rconn_leave(c);
}

static void rconn_event(struct rconn *c, short what);

static void rconn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct rconn *c = arg;
	(void)bev;
	rconn_enter(c);
	if (!c->dead)
		rconn_event(c, what);
	rconn_leave(c);
}

static void rconn_event(struct rconn *c, short what)
{
	struct rjob *job = c->job;
	if (what & BEV_EVENT_CONNECTED) {
		if (c->state == RC_CONNECTING) {
			c->state = RC_BANNER;
			rconn_set_timeouts(c);
			return;
		}
		if (c->state == RC_TLS) {
			c->tls_active = true;
			smtp_reply_parser_init(&c->parser);
			if (job != NULL)
				tls_describe(c->ssl, job->tls_desc, sizeof(job->tls_desc));
			rconn_send_ehlo(c);
			return;
		}
		return;
	}
	if (job == NULL) {
		rconn_free(c);
		return;
	}
	if (c->state == RC_TLS) {
		unsigned long e = bufferevent_get_openssl_error(c->bev);
		char err[256] = "handshake failed";
		if (e != 0)
			ERR_error_string_n(e, err, sizeof(err));
		long vr = c->ssl != NULL ? SSL_get_verify_result(c->ssl) : X509_V_OK;
		if (vr != X509_V_OK)
			rjob_error(job, false, "4.7.5 TLS with %s[%s]: certificate not trusted: %s",
				   c->host, c->ip, X509_verify_cert_error_string(vr));
		else
			rjob_error(job, false, "4.7.5 TLS with %s[%s] failed: %s", c->host, c->ip,
				   err);
		c->tls_failed = true;
	} else if (what & BEV_EVENT_TIMEOUT) {
		/* After the end of the data, bytes still in the kernel's send
		 * queue that keep draining mean a slow reader, not a dead one. */
		int outq = 0;
		evutil_socket_t fd = bufferevent_getfd(c->bev);
		if ((what & BEV_EVENT_READING) && (c->state == RC_DOT || c->state == RC_BDAT) &&
		    fd >= 0 && ioctl(fd, SIOCOUTQ, &outq) == 0) {
			size_t unsent = (size_t)(outq > 0 ? outq : 0) +
					evbuffer_get_length(bufferevent_get_output(c->bev));
			if (unsent > 0 && (c->unsent_seen == 0 || unsent < c->unsent_seen)) {
				c->unsent_seen = unsent;
				bufferevent_enable(c->bev, EV_READ);
				return;
			}
		}
		rjob_error(job, false, "4.4.2 %s[%s]: timeout %s", c->host, c->ip,
			   c->state == RC_CONNECTING ? "while connecting" :
			   c->state == RC_BANNER ? "waiting for the greeting" : "waiting for a reply");
	} else if (c->state == RC_CONNECTING) {
		rjob_error(job, false, "4.4.1 connect to %s[%s]: %s", c->host, c->ip,
			   strerror(EVUTIL_SOCKET_ERROR()));
	} else {
		rjob_error(job, false, "4.4.2 %s[%s]: connection lost", c->host, c->ip);
	}
	c->broken = true;
	rconn_abort(c);
}

static void rconn_open(struct rjob *job, const struct dns_host *h, const struct sockaddr *sa,
		       socklen_t salen, const char *ip)
{
	struct remote *rm = job->rm;
	struct rconn *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		rjob_error(job, false, "4.3.0 out of memory");
		rjob_fail(job);
		return;
	}
	c->rm = rm;
	snprintf(c->key, sizeof(c->key), "%s", job->key);
	snprintf(c->host, sizeof(c->host), "%s", h->name);
	snprintf(c->ip, sizeof(c->ip), "%s", ip);
	c->no_tls = job->plaintext_retry;
	c->job = job;
	job->conn = c;
	smtp_reply_parser_init(&c->parser);
	c->idle_ev = event_new(rm->base, -1, 0, rconn_idle_cb, c);
	c->bev = bufferevent_socket_new(rm->base, -1, BEV_OPT_CLOSE_ON_FREE);
	c->next = rm->conns;
	rm->conns = c;
	snprintf(job->remote_host, sizeof(job->remote_host), "%s[%s]", c->host, c->ip);
	job->tls_desc[0] = '\0';
	if (c->idle_ev == NULL || c->bev == NULL) {
		rjob_error(job, false, "4.3.0 out of memory");
		rconn_abort(c);
		return;
	}
	bufferevent_setcb(c->bev, rconn_read_cb, rconn_write_cb, rconn_event_cb, c);
	struct timeval tv = { (time_t)rm->cfg->connect_timeout, 0 };
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	c->state = RC_CONNECTING;
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect(c->bev, sa, (int)salen) < 0) {
		rjob_error(job, false, "4.4.1 connect to %s[%s]: %s", c->host, c->ip,
			   strerror(errno));
		rconn_abort(c);
		return;
	}
}

/* Tries the job's current address (host_i, addr_i), moving on past the
 * ones that are used up; answers the job when none is left. */
static void rjob_next_address(struct rjob *job)
{
	struct remote *rm = job->rm;
	const struct dns_result *d = job->dns;
	bool all_busy = true;
	while (job->host_i < d->nhosts) {
		const struct dns_host *h = &d->hosts[job->host_i];
		if (job->addr_i >= h->naddrs) {
			job->host_i++;
			job->addr_i = 0;
			continue;
		}
		const struct sockaddr *sa = (const struct sockaddr *)&h->addrs[job->addr_i];
		char ip[INET6_ADDRSTRLEN] = "?";
		if (sa->sa_family == AF_INET)
			inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip, sizeof(ip));
		else if (sa->sa_family == AF_INET6)
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, ip,
				  sizeof(ip));
		if (remote_conns_to(rm, ip) >= rm->cfg->concurrency_per_ip) {
			/* At the cap: look further, or wait if all are. */
			job->addr_i++;
			job->plaintext_retry = false;
			continue;
		}
		all_busy = false;
		rconn_open(job, h, sa, h->addrlens[job->addr_i], ip);
		return;
	}
	(void)all_busy;
	/* Every address was tried; if some were skipped only for the per-IP
	 * cap and no real error was seen, wait for a connection to close. */
	if (job->error[0] == '\0' && d->nhosts > 0) {
		job->host_i = 0;
		job->addr_i = 0;
		for (struct rjob **p = &rm->jobs; *p != NULL; p = &(*p)->next) {
			if (*p == job) {
				*p = job->next;
				break;
			}
		}
		job->next = rm->parked;
		rm->parked = job;
		return;
	}
	rjob_fail(job);
}

static void rjob_dns_cb(const struct dns_result *res, void *ctx)
{
	struct rjob *job = ctx;
	job->dq = NULL;
	switch (res->status) {
	case DNS_OK:
		break;
	case DNS_NULL_MX:
		rjob_error(job, true, "556 5.1.10 %s does not accept mail (null MX, RFC 7505)",
			   job->domain);
		rjob_fail(job);
		return;
	case DNS_PERMFAIL:
		rjob_error(job, true, "5.4.4 %s: host or domain name not found: %s",
			   job->route != NULL ? job->route : job->domain, res->error);
		rjob_fail(job);
		return;
	default:
		rjob_error(job, false, "4.4.3 %s: DNS lookup failed: %s",
			   job->route != NULL ? job->route : job->domain, res->error);
		rjob_fail(job);
		return;
	}
	job->dns = malloc(sizeof(*job->dns));
	if (job->dns == NULL) {
		rjob_error(job, false, "4.3.0 out of memory");
		rjob_fail(job);
		return;
	}
	memcpy(job->dns, res, sizeof(*res));
	rjob_next_address(job);
}

/* Finds the route's addresses (smarthost or MX); the job goes on in
 * rjob_dns_cb(). */
static void rjob_lookup(struct rjob *job)
{
	struct remote *rm = job->rm;
	const char *error;
	free(job->dns);
	job->dns = NULL;
	job->host_i = job->addr_i = 0;
	job->plaintext_retry = false;
	if (job->route != NULL) {
		char host[256], port[8];
		uint64_t p = 0;
		if (config_split_address(job->route, host, sizeof(host), port, sizeof(port)) < 0 ||
		    str_to_u64(port, &p) < 0) {
			rjob_error(job, false, "4.3.5 bad smarthost %s", job->route);
			rjob_fail(job);
			return;
		}
		job->dq = dns_lookup_host(rm->dns, host, (uint16_t)p, rjob_dns_cb, job, &error);
	} else {
		job->dq = dns_lookup_mx(rm->dns, job->domain, (uint16_t)rm->cfg->remote_port,
					rjob_dns_cb, job, &error);
	}
	if (job->dq == NULL) {
		rjob_error(job, true, "5.1.2 bad destination %s: %s",
			   job->route != NULL ? job->route : job->domain, error);
		rjob_fail(job);
	}
}

/* ---- the job from the queue ---- */

void remote_job(struct remote *rm, uint64_t reqid, struct ipc_reader *r)
{
	struct rjob *job = calloc(1, sizeof(*job));
	if (job == NULL) {
		log_error("remote job: out of memory");
		return;
	}
	job->rm = rm;
	job->reqid = reqid;
	job->fd = -1;
	job->next = rm->jobs;
	rm->jobs = job;
	const char *id = ipc_get_str(r);
	const char *domain = ipc_get_str(r);
	const char *route = ipc_get_str(r);
	job->tls = (enum ipc_tls_policy)ipc_get_u32(r);
	job->flags = ipc_get_u32(r);
	uint32_t n = ipc_get_u32(r);
	if (r->error || id == NULL || domain == NULL || n == 0 || n > REMOTE_JOB_RCPTS ||
	    job->tls > IPC_TLS_VERIFY) {
		log_warn("malformed remote delivery request");
		snprintf(job->id, sizeof(job->id), "%s", id != NULL ? id : "");
		rjob_error(job, false, "4.3.0 malformed request");
		rjob_fail(job);
		return;
	}
	snprintf(job->id, sizeof(job->id), "%s", id);
	snprintf(job->domain, sizeof(job->domain), "%s", domain);
	job->n = n;
	for (uint32_t k = 0; k < n; k++)
		job->idx[k] = ipc_get_u32(r);
	if (route != NULL && (job->route = strdup(route)) == NULL) {
		rjob_error(job, false, "4.3.0 out of memory");
		rjob_fail(job);
		return;
	}
	snprintf(job->key, sizeof(job->key), "%s:%s/%u", route != NULL ? "relay" : "mx",
		 route != NULL ? route : domain, (unsigned)job->tls);

	const char *error;
	if (spool_read(rm->cfg->spool_dir, job->id, &job->env, &job->fd, &job->body_off,
		       &job->body_len, &error) < 0) {
		rjob_error(job, false, "4.3.0 cannot read the spool file: %s", error);
		rjob_fail(job);
		return;
	}
	for (uint32_t k = 0; k < n; k++) {
		if (r->error || job->idx[k] >= job->env->nrcpts) {
			rjob_error(job, false, "4.3.0 malformed request");
			rjob_fail(job);
			return;
		}
	}

	/* An idle connection to the same route takes the job at once. */
	for (struct rconn *c = rm->conns; c != NULL; c = c->next) {
		if (c->state == RC_IDLE && c->job == NULL && strcmp(c->key, job->key) == 0) {
			rm->nidle--;
			event_del(c->idle_ev);
			rconn_reuse(c, job);
			return;
		}
	}

	rjob_lookup(job);
}

/* ---- setup ---- */

static char *remote_read_secret(const char *path)
{
	char *text = NULL;
	if (read_file(path, 4096, &text, NULL) < 0)
		return NULL;
	text[strcspn(text, "\r\n")] = '\0';
	return text;
}

struct remote *remote_new(struct event_base *base, const struct config *cfg,
			  remote_result_cb *cb, void *ctx, const char **error_r)
{
	struct remote *rm = calloc(1, sizeof(*rm));
	if (rm == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	rm->base = base;
	rm->cfg = cfg;
	rm->cb = cb;
	rm->cb_ctx = ctx;
	rm->dns = dns_resolver_new(base, cfg->resolver, cfg->dnssec_trust_anchor, error_r);
	if (rm->dns == NULL)
		goto fail;
	rm->ctx = remote_ctx_new();
	if (rm->ctx == NULL) {
		*error_r = "cannot create the TLS client context";
		goto fail;
	}
	if (cfg->tls_ca_file != NULL && access(cfg->tls_ca_file, R_OK) < 0) {
		*error_r = "cannot read outbound.tls_ca_file";
		goto fail;
	}
	if (cfg->smarthost_password_file != NULL &&
	    (rm->smarthost_password = remote_read_secret(cfg->smarthost_password_file)) == NULL) {
		*error_r = "cannot read outbound.smarthost_password_file";
		goto fail;
	}
	return rm;
fail:
	remote_free(&rm);
	return NULL;
}

void remote_free(struct remote **rmp)
{
	struct remote *rm = *rmp;
	if (rm == NULL)
		return;
	*rmp = NULL;
	while (rm->parked != NULL) {
		struct rjob *job = rm->parked;
		rm->parked = job->next;
		job->next = rm->jobs;
		rm->jobs = job;
	}
	while (rm->conns != NULL)
		rconn_free(rm->conns);
	while (rm->jobs != NULL)
		rjob_free(rm->jobs);
	dns_resolver_free(&rm->dns);
	if (rm->ctx != NULL)
		SSL_CTX_free(rm->ctx);
	if (rm->verify_ctx != NULL)
		SSL_CTX_free(rm->verify_ctx);
	if (rm->smarthost_password != NULL) {
		OPENSSL_cleanse(rm->smarthost_password, strlen(rm->smarthost_password));
		free(rm->smarthost_password);
	}
	free(rm);
}
