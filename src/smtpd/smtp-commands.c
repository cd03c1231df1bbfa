/*
 * smtp-commands.c — the SMTP command table and what each command does in an
 * smtpd worker (RFC 5321; 1870 SIZE; 2920 PIPELINING; 3030 CHUNKING; 3207
 * STARTTLS; 4954 AUTH; 6152 8BITMIME; 6531 SMTPUTF8; 2034 enhanced codes;
 * 3461 DSN parameters, which go into the envelope for the queue's DSNs).
 *
 * Each command has a check step (state, listener, TLS, AUTH rules from the
 * table flags) and a run step. Commands that need another process (RCPT,
 * AUTH, MAIL by an authenticated user, DATA/BDAT commit) park the session
 * until the reply comes back through smtp_dir_reply()/smtp_queue_reply().
 */
#include "smtpd/smtpd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <sodium.h>

#include "lib/limits.h"
#include "lib/log.h"
#include "lib/util.h"

/* Table flags. */
#define CMD_NEED_HELO   0x01u   /* EHLO/HELO first */
#define CMD_NEED_MAIL   0x02u
#define CMD_NEED_RCPT   0x04u
#define CMD_NO_TXN      0x08u   /* not inside a transaction */
#define CMD_NEED_AUTH   0x10u   /* on submission listeners */

struct smtp_cmd_def {
	enum smtp_cmd cmd;
	unsigned flags;
	void (*run)(struct smtp_session *s, const char *args, size_t len);
};

#define SESSION_ID(s) ((unsigned long long)(s)->id)

static bool smtp_is_submission(const struct smtp_session *s)
{
	return s->kind == LISTENER_SUBMISSION || s->kind == LISTENER_SUBMISSIONS;
}

/* AUTH is possible here now: over TLS, or in plaintext where the operator
 * set listen.<listener>.allow_plaintext_auth (loopback testing only; the
 * config refuses it on other addresses, and every such login is logged). */
static bool smtp_auth_allowed(const struct smtp_session *s)
{
	return s->tls || s->server->cfg->tls_listener[s->kind].allow_plaintext_auth;
}

static bool smtp_in_txn(const struct smtp_session *s)
{
	return s->state == SMTP_STATE_MAIL || s->state == SMTP_STATE_RCPT ||
	       s->state == SMTP_STATE_BDAT;
}

static void smtp_park(struct smtp_session *s, enum smtp_wait wait)
{
	s->wait = wait;
	bufferevent_disable(s->bev, EV_READ);
}

static void smtp_unpark(struct smtp_session *s)
{
	s->wait = SMTP_WAIT_NONE;
}

/* lib-smtp reports syntax errors as a whole reply, "501 5.1.3 text". */
static void smtp_reply_preformatted(struct smtp_session *s, const char *reply)
{
	uint64_t code;
	char enh[16];
	const char *sp1 = strchr(reply, ' ');
	const char *sp2 = sp1 != NULL ? strchr(sp1 + 1, ' ') : NULL;
	if (sp1 == NULL || sp2 == NULL || (size_t)(sp2 - sp1 - 1) >= sizeof(enh) ||
	    strn_to_u64(reply, (size_t)(sp1 - reply), &code) < 0 || code < 400 || code > 599) {
		smtp_reply(s, 501, "5.5.2", "Syntax error");
		return;
	}
	memcpy(enh, sp1 + 1, (size_t)(sp2 - sp1 - 1));
	enh[sp2 - sp1 - 1] = '\0';
	smtp_reply(s, (unsigned)code, enh, "%s", sp2 + 1);
}

/* ---- HELO / EHLO ---- */

static void cmd_helo_common(struct smtp_session *s, const char *args, size_t len, bool esmtp)
{
	if (len == 0 || len >= sizeof(s->helo) || !smtp_domain_valid(args, len)) {
		smtp_reply(s, 501, "5.5.4", "Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
		return;
	}
	smtp_transaction_reset(s);
	memcpy(s->helo, args, len);
	s->helo[len] = '\0';
	s->esmtp = esmtp;
	smtp_session_enter_state(s, SMTP_STATE_READY);
}

static void cmd_helo(struct smtp_session *s, const char *args, size_t len)
{
	cmd_helo_common(s, args, len, false);
	if (s->state == SMTP_STATE_READY)
		smtp_reply(s, 250, NULL, "%s", s->server->cfg->hostname);
}

static void cmd_ehlo(struct smtp_session *s, const char *args, size_t len)
{
	cmd_helo_common(s, args, len, true);
	if (s->state != SMTP_STATE_READY || !s->esmtp)
		return;
	const struct config *cfg = s->server->cfg;
	struct buf b;
	buf_init(&b, 1024);
	buf_printf(&b, "%s\nPIPELINING\nSIZE %llu\n8BITMIME\nSMTPUTF8\nENHANCEDSTATUSCODES\n"
		       "CHUNKING\nDSN",
		   cfg->hostname, (unsigned long long)cfg->max_message_size);
	if (!s->tls && s->kind != LISTENER_SUBMISSIONS)
		buf_append_str(&b, "\nSTARTTLS");
	if (smtp_auth_allowed(s) && smtp_is_submission(s) && s->auth_user == NULL)
		buf_append_str(&b, "\nAUTH PLAIN LOGIN");
	smtp_reply(s, 250, NULL, "%s", b.data);
	buf_free(&b);
}

/* ---- simple commands ---- */

static void cmd_noop(struct smtp_session *s, const char *args, size_t len)
{
	smtp_reply(s, 250, "2.0.0", "Ok");
}

static void cmd_rset(struct smtp_session *s, const char *args, size_t len)
{
	if (len != 0) {
		smtp_reply(s, 501, "5.5.4", "Syntax: RSET");
		return;
	}
	smtp_transaction_reset(s);
	if (s->state != SMTP_STATE_GREETED)
		smtp_session_enter_state(s, SMTP_STATE_READY);
	smtp_reply(s, 250, "2.0.0", "Ok");
}

static void cmd_quit(struct smtp_session *s, const char *args, size_t len)
{
	smtp_reply(s, 221, "2.0.0", "%s Bye", s->server->cfg->hostname);
	smtp_session_close(s);
}

static void cmd_help(struct smtp_session *s, const char *args, size_t len)
{
	smtp_reply(s, 214, "2.0.0",
		   "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY STARTTLS AUTH\n"
		   "See RFC 5321");
}

static void cmd_vrfy(struct smtp_session *s, const char *args, size_t len)
{
	/* RFC 5321 3.5.3: 252 without saying whether the account exists. */
	if (len == 0) {
		smtp_reply(s, 501, "5.5.4", "Syntax: VRFY address");
		return;
	}
	smtp_reply(s, 252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_expn(struct smtp_session *s, const char *args, size_t len)
{
	smtp_reply(s, 502, "5.5.1", "EXPN not available");
}

/* ---- STARTTLS ---- */

static void cmd_starttls(struct smtp_session *s, const char *args, size_t len)
{
	if (s->tls || s->kind == LISTENER_SUBMISSIONS) {
		smtp_reply(s, 503, "5.5.1", "Error: TLS already active");
		return;
	}
	if (len != 0) {
		smtp_reply(s, 501, "5.5.4", "Syntax: STARTTLS");
		return;
	}
	if (s->server->tls == NULL) {
		smtp_reply(s, 454, "4.7.0", "TLS not available");
		return;
	}
	smtp_reply(s, 220, "2.0.0", "Ready to start TLS");
	if (smtp_session_start_tls(s) < 0) {
		log_error("session=%llx cannot start TLS", SESSION_ID(s));
		smtp_session_close(s);
	}
}

/* ---- AUTH (RFC 4954) ---- */

enum { AUTH_NONE, AUTH_PLAIN, AUTH_LOGIN };

/* Decodes base64 (strict, RFC 4648) into out; -1 on bad input. */
static int smtp_b64_decode(const char *in, size_t len, char *out, size_t size, size_t *len_r)
{
	if (sodium_base642bin((unsigned char *)out, size - 1, in, len, NULL, len_r, NULL,
			      sodium_base64_VARIANT_ORIGINAL) != 0)
		return -1;
	out[*len_r] = '\0';
	return 0;
}

static void smtp_auth_fail(struct smtp_session *s, unsigned code, const char *enh,
			   const char *text)
{
	s->auth_mech = AUTH_NONE;
	smtp_session_enter_state(s, s->helo[0] != '\0' ? SMTP_STATE_READY : SMTP_STATE_GREETED);
	smtp_reply(s, code, enh, "%s", text);
}

static void smtp_auth_submit(struct smtp_session *s, const char *user, const char *password)
{
	struct ipc_writer w;
	if (user[0] == '\0' || password[0] == '\0') {
		smtp_auth_fail(s, 535, "5.7.8", "Error: authentication failed");
		return;
	}
	ipc_writer_init(&w);
	ipc_put_str(&w, user);
	ipc_put_str(&w, password);
	ipc_put_str(&w, s->ip);
	ipc_put_u32(&w, IPC_PROTO_SMTP);
	ipc_put_str(&w, s->auth_mech == AUTH_LOGIN ? "LOGIN" : "PLAIN");
	int ret = ipc_send(s->server->dir, IPC_DIR_AUTH, s->id, &w);
	secure_zero(w.b.data, w.b.len);
	ipc_writer_free(&w);
	if (ret < 0) {
		smtp_auth_fail(s, 454, "4.7.0", "Temporary authentication failure");
		return;
	}
	free(s->auth_login_user);
	s->auth_login_user = strdup(user);
	smtp_park(s, SMTP_WAIT_AUTH);
}

static void smtp_auth_plain(struct smtp_session *s, const char *b64, size_t len)
{
	char dec[SMTP_AUTH_LINE_MAX];
	size_t n;
	if (smtp_b64_decode(b64, len, dec, sizeof(dec), &n) < 0) {
		smtp_auth_fail(s, 501, "5.5.2", "Error: invalid base64 data");
		return;
	}
	/* authzid NUL authcid NUL password (RFC 4616) */
	const char *authz = dec;
	const char *nul1 = memchr(dec, '\0', n);
	const char *nul2 = nul1 != NULL ? memchr(nul1 + 1, '\0', n - (size_t)(nul1 + 1 - dec)) : NULL;
	if (nul1 == NULL || nul2 == NULL || memchr(nul2 + 1, '\0', n - (size_t)(nul2 + 1 - dec))) {
		secure_zero(dec, sizeof(dec));
		smtp_auth_fail(s, 501, "5.5.2", "Error: malformed PLAIN response");
		return;
	}
	const char *user = nul1 + 1, *pass = nul2 + 1;
	if (authz[0] != '\0' && strcasecmp(authz, user) != 0) {
		secure_zero(dec, sizeof(dec));
		smtp_auth_fail(s, 535, "5.7.8", "Error: authorization identity not permitted");
		return;
	}
	smtp_auth_submit(s, user, pass);
	secure_zero(dec, sizeof(dec));
}

void smtp_auth_continue(struct smtp_session *s, const char *line, size_t len)
{
	if (len == 1 && line[0] == '*') {
		smtp_auth_fail(s, 501, "5.7.0", "Authentication cancelled");
		return;
	}
	if (s->auth_mech == AUTH_PLAIN) {
		smtp_auth_plain(s, line, len);
		return;
	}
	char dec[SMTP_AUTH_LINE_MAX];
	size_t n;
	if (smtp_b64_decode(line, len, dec, sizeof(dec), &n) < 0 || memchr(dec, '\0', n)) {
		smtp_auth_fail(s, 501, "5.5.2", "Error: invalid base64 data");
		return;
	}
	if (s->auth_login_user == NULL) {
		s->auth_login_user = strdup(dec);
		smtp_reply(s, 334, NULL, "UGFzc3dvcmQ6"); /* "Password:" */
	} else {
		char *user = s->auth_login_user;
		s->auth_login_user = NULL;
		smtp_auth_submit(s, user, dec);
		free(user);
	}
	secure_zero(dec, sizeof(dec));
}

static void cmd_auth(struct smtp_session *s, const char *args, size_t len)
{
	if (!smtp_is_submission(s)) {
		smtp_reply(s, 503, "5.5.1", "Error: authentication not enabled on this port");
		return;
	}
	if (!smtp_auth_allowed(s)) {
		smtp_reply(s, 530, "5.7.0", "Must issue a STARTTLS command first");
		return;
	}
	if (s->auth_user != NULL) {
		smtp_reply(s, 503, "5.5.1", "Error: already authenticated");
		return;
	}
	const char *sp = memchr(args, ' ', len);
	size_t mlen = sp != NULL ? (size_t)(sp - args) : len;
	const char *ir = sp != NULL ? sp + 1 : NULL;
	size_t irlen = sp != NULL ? len - mlen - 1 : 0;

	free(s->auth_login_user);
	s->auth_login_user = NULL;
	if (mlen == 5 && strncasecmp(args, "PLAIN", 5) == 0) {
		s->auth_mech = AUTH_PLAIN;
		if (ir != NULL && !(irlen == 1 && ir[0] == '=')) {
			smtp_auth_plain(s, ir, irlen);
			return;
		}
		smtp_session_enter_state(s, SMTP_STATE_AUTH);
		smtp_reply(s, 334, NULL, " ");
	} else if (mlen == 5 && strncasecmp(args, "LOGIN", 5) == 0) {
		s->auth_mech = AUTH_LOGIN;
		smtp_session_enter_state(s, SMTP_STATE_AUTH);
		if (ir != NULL) {
			smtp_auth_continue(s, ir, irlen);
			return;
		}
		smtp_reply(s, 334, NULL, "VXNlcm5hbWU6"); /* "Username:" */
	} else {
		smtp_reply(s, 504, "5.5.4", "Unrecognized authentication type");
	}
}

static void smtp_auth_result(struct smtp_session *s, struct ipc_reader *r)
{
	uint32_t result = ipc_get_u32(r);
	const char *user = ipc_get_str(r);
	char *tried = s->auth_login_user;
	s->auth_login_user = NULL;
	s->auth_mech = AUTH_NONE;
	smtp_session_enter_state(s, SMTP_STATE_READY);
	if (!r->error && result == IPC_AUTH_OK && user != NULL) {
		s->auth_user = strdup(user);
		log_info("session=%llx ip=%s auth ok user=%s", SESSION_ID(s), s->ip, user);
		if (!s->tls)
			log_warn("session=%llx ip=%s user=%s: PLAINTEXT login without TLS "
				 "(listen.%s.allow_plaintext_auth = yes; for loopback testing only)",
				 SESSION_ID(s), s->ip, user, listener_kind_name(s->kind));
		smtp_reply(s, 235, "2.7.0", "Authentication successful");
	} else if (!r->error && result == IPC_AUTH_EXPIRED) {
		log_info("session=%llx ip=%s auth refused user=%s: password expired", SESSION_ID(s),
			 s->ip, tried != NULL ? tried : "?");
		smtp_reply(s, 535, "5.7.8", "Password expired, set a new one");
	} else if (!r->error && result == IPC_AUTH_FAIL) {
		log_info("session=%llx ip=%s auth failed user=%s", SESSION_ID(s), s->ip,
			 tried != NULL ? tried : "?");
		if (++s->auth_failures >= s->server->cfg->max_auth_failures) {
			smtp_reply(s, 535, "5.7.8", "Error: authentication failed");
			smtp_reply(s, 421, "4.7.0", "%s Error: too many authentication failures",
				   s->server->cfg->hostname);
			smtp_session_close(s);
		} else {
			smtp_reply(s, 535, "5.7.8", "Error: authentication failed");
		}
	} else {
		smtp_reply(s, 454, "4.7.0", "Temporary authentication failure");
	}
	free(tried);
}

/* ---- RFC 3461 DSN parameters ---- */

/* RFC 3461 4.4: an ENVID "MUST NOT exceed 100 characters". */
#define SMTP_ENVID_MAX  100
/* RFC 3461 4.2: the original recipient address before xtext encoding
 * "MUST NOT exceed 500 characters". */
#define SMTP_ORCPT_MAX  500
/* "rfc822;" or "utf-8;" + the address + NUL */
#define SMTP_ORCPT_BUF  (SMTP_ORCPT_MAX + 8)
/* "SUCCESS,FAILURE,DELAY" + NUL */
#define SMTP_NOTIFY_BUF 32
#define N_WORDS(a) (sizeof(a) / sizeof((a)[0]))

/* RET=FULL|HDRS (RFC 3461 4.3), case-insensitive: the upper-case word
 * (static), or NULL when the value is anything else. */
static const char *smtp_dsn_ret(const struct smtp_param *q)
{
	if (!q->has_value)
		return NULL;
	if (strcasecmp(q->value, "FULL") == 0)
		return "FULL";
	if (strcasecmp(q->value, "HDRS") == 0)
		return "HDRS";
	return NULL;
}

/* ENVID=xtext (RFC 3461 4.4), decoded into out (size SMTP_ENVID_MAX + 1).
 * smtp_xtext_decode() refuses control characters and 8-bit, so the value
 * cannot inject a header into a DSN. 0, or -1 on bad xtext or when longer
 * than SMTP_ENVID_MAX. */
static int smtp_dsn_envid(const struct smtp_param *q, char out[SMTP_ENVID_MAX + 1])
{
	if (!q->has_value || smtp_xtext_decode(q->value, out, SMTP_ENVID_MAX + 1) < 0 ||
	    out[0] == '\0')
		return -1;
	return 0;
}

/* NOTIFY="NEVER" / 1#("SUCCESS" / "FAILURE" / "DELAY") (RFC 3461 4.1),
 * case-insensitive; NEVER only alone; no word twice; no empty item. Writes
 * the canonical form into out (size SMTP_NOTIFY_BUF): upper case, in the
 * order SUCCESS,FAILURE,DELAY. 0, or -1. */
static int smtp_dsn_notify(const struct smtp_param *q, char out[SMTP_NOTIFY_BUF])
{
	static const char *const words[] = { "NEVER", "SUCCESS", "FAILURE", "DELAY" };
	unsigned seen = 0;

	if (!q->has_value)
		return -1;
	for (const char *p = q->value;;) {
		const char *comma = strchr(p, ',');
		size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
		unsigned w = 0;
		while (w < N_WORDS(words) &&
		       !(strlen(words[w]) == len && strncasecmp(p, words[w], len) == 0))
			w++;
		if (w == N_WORDS(words) || (seen & (1u << w)) != 0)
			return -1;
		seen |= 1u << w;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	if ((seen & 1u) != 0 && seen != 1u)
		return -1;
	size_t n = 0;
	out[0] = '\0';
	for (unsigned w = 0; w < N_WORDS(words); w++) {
		if ((seen & (1u << w)) != 0)
			n += (size_t)snprintf(out + n, SMTP_NOTIFY_BUF - n, "%s%s", n > 0 ? "," : "",
					      words[w]);
	}
	return 0;
}

/* ORCPT=addr-type ";" xtext (RFC 3461 4.2): addr-type "rfc822" or "utf-8"
 * (RFC 6533), case-insensitive; the decoded address is not empty and at most
 * SMTP_ORCPT_MAX characters. Writes "rfc822;decoded" (addr-type lower-cased)
 * into out (size SMTP_ORCPT_BUF). 0, or -1. */
static int smtp_dsn_orcpt(const struct smtp_param *q, char out[SMTP_ORCPT_BUF])
{
	char addr[SMTP_ORCPT_MAX + 1];
	const char *type;

	if (!q->has_value)
		return -1;
	const char *semi = strchr(q->value, ';');
	size_t type_len = semi != NULL ? (size_t)(semi - q->value) : 0;
	if (type_len == 6 && strncasecmp(q->value, "rfc822", 6) == 0)
		type = "rfc822";
	else if (type_len == 5 && strncasecmp(q->value, "utf-8", 5) == 0)
		type = "utf-8";
	else
		return -1;
	if (smtp_xtext_decode(semi + 1, addr, sizeof(addr)) < 0 || addr[0] == '\0')
		return -1;
	snprintf(out, SMTP_ORCPT_BUF, "%s;%s", type, addr);
	return 0;
}

/* ---- MAIL ---- */

static bool smtp_check_address(struct smtp_session *s, const struct smtp_path_args *p,
			       bool txn_utf8)
{
	if (p->addr.utf8 && !txn_utf8) {
		smtp_reply(s, 553, "5.6.7", "Error: UTF-8 address requires SMTPUTF8");
		return false;
	}
	return true;
}

static void smtp_mail_accept(struct smtp_session *s)
{
	struct smtp_path_args *p = s->pending_mail;
	char addr[SMTP_ADDRESS_MAX * 4 + 8] = "";
	if (!p->addr.null_path)
		smtp_address_format(&p->addr, addr, sizeof(addr));
	s->txn.sender = strdup(addr);
	/* RET and ENVID were checked by cmd_mail(). */
	const struct smtp_param *ret = smtp_param_find(p, "RET");
	s->txn.ret = ret != NULL ? smtp_dsn_ret(ret) : NULL;
	const struct smtp_param *envid = smtp_param_find(p, "ENVID");
	char envid_dec[SMTP_ENVID_MAX + 1];
	if (envid != NULL && smtp_dsn_envid(envid, envid_dec) == 0)
		s->txn.envid = strdup(envid_dec);
	if (s->txn.sender == NULL || (envid != NULL && s->txn.envid == NULL)) {
		smtp_transaction_reset(s);
		free(s->pending_mail);
		s->pending_mail = NULL;
		smtp_reply(s, 451, "4.3.0", "Error: out of memory");
		return;
	}
	s->txn.smtputf8 = smtp_param_find(p, "SMTPUTF8") != NULL;
	const struct smtp_param *body = smtp_param_find(p, "BODY");
	s->txn.body_8bit = body != NULL && strcasecmp(body->value, "8BITMIME") == 0;
	smtp_data_init(&s->txn.data, SMTP_DATA_DOT, s->server->cfg->bare_lf == BARE_LF_NORMALIZE,
		       s->server->cfg->max_line_length);
	smtp_session_enter_state(s, SMTP_STATE_MAIL);
	log_info("session=%llx ip=%s from=<%s>", SESSION_ID(s), s->ip, addr);
	smtp_reply(s, 250, "2.1.0", "Ok");
	free(s->pending_mail);
	s->pending_mail = NULL;
}

static void cmd_mail(struct smtp_session *s, const char *args, size_t len)
{
	const struct config *cfg = s->server->cfg;
	struct smtp_path_args *p = calloc(1, sizeof(*p));
	const char *error;
	if (p == NULL) {
		smtp_reply(s, 451, "4.3.0", "Error: out of memory");
		return;
	}
	if (smtp_path_parse(args, len, true, p, &error) < 0) {
		free(p);
		smtp_reply_preformatted(s, error);
		return;
	}
	bool utf8 = false;
	for (unsigned i = 0; i < p->nparams; i++) {
		const struct smtp_param *q = &p->params[i];
		if (strcmp(q->keyword, "SIZE") == 0) {
			uint64_t size;
			if (!q->has_value || str_to_u64(q->value, &size) < 0) {
				smtp_reply(s, 501, "5.5.4", "Error: bad SIZE parameter");
				goto fail;
			}
			if (size > cfg->max_message_size) {
				smtp_reply(s, 552, "5.3.4",
					   "Message size exceeds fixed maximum message size");
				goto fail;
			}
		} else if (strcmp(q->keyword, "BODY") == 0) {
			if (!q->has_value || (strcasecmp(q->value, "7BIT") != 0 &&
					      strcasecmp(q->value, "8BITMIME") != 0)) {
				smtp_reply(s, 501, "5.5.4", "Error: unsupported BODY value");
				goto fail;
			}
		} else if (strcmp(q->keyword, "SMTPUTF8") == 0 && !q->has_value) {
			utf8 = true;
		} else if (strcmp(q->keyword, "AUTH") == 0 && smtp_is_submission(s)) {
			/* RFC 4954 5: accepted and not trusted. */
		} else if (strcmp(q->keyword, "RET") == 0) {
			if (smtp_dsn_ret(q) == NULL) {
				smtp_reply(s, 501, "5.5.4", "Error: RET must be FULL or HDRS");
				goto fail;
			}
		} else if (strcmp(q->keyword, "ENVID") == 0) {
			char envid[SMTP_ENVID_MAX + 1];
			if (smtp_dsn_envid(q, envid) < 0) {
				smtp_reply(s, 501, "5.5.4",
					   "Error: ENVID must be xtext of at most %d characters",
					   SMTP_ENVID_MAX);
				goto fail;
			}
		} else {
			smtp_reply(s, 555, "5.5.4", "Error: unsupported parameter %s", q->keyword);
			goto fail;
		}
	}
	if (!smtp_check_address(s, p, utf8))
		goto fail;

	s->pending_mail = p;
	if (s->auth_user != NULL && !p->addr.null_path) {
		/* An authenticated user may only send as itself or its aliases. */
		char addr[SMTP_ADDRESS_MAX * 4 + 8];
		smtp_address_format(&p->addr, addr, sizeof(addr));
		struct ipc_writer w;
		ipc_writer_init(&w);
		ipc_put_str(&w, s->auth_user);
		ipc_put_str(&w, addr);
		int ret = ipc_send(s->server->dir, IPC_DIR_SENDER, s->id, &w);
		ipc_writer_free(&w);
		if (ret < 0) {
			s->pending_mail = NULL;
			smtp_reply(s, 451, "4.3.0", "Error: internal error");
			goto fail;
		}
		smtp_park(s, SMTP_WAIT_SENDER);
		return;
	}
	smtp_mail_accept(s);
	return;
fail:
	free(p);
}

static void smtp_sender_result(struct smtp_session *s, struct ipc_reader *r)
{
	uint32_t allowed = ipc_get_u32(r);
	if (!r->error && allowed == 1) {
		smtp_mail_accept(s);
		return;
	}
	free(s->pending_mail);
	s->pending_mail = NULL;
	if (!r->error && allowed == 0)
		smtp_reply(s, 553, "5.7.1", "Sender address rejected: not owned by user %s",
			   s->auth_user);
	else
		smtp_reply(s, 451, "4.3.0", "Error: internal error");
}

/* ---- RCPT ---- */

/* The recipient as the directory resolves it and the logs show it:
 * "<Postmaster>" without a domain (RFC 5321 4.5.1) is "postmaster", which
 * the directory maps to the postmaster of a local domain. */
static void smtp_rcpt_address(const struct smtp_path_args *p, char *addr, size_t size)
{
	if (p->addr.domain[0] == '\0')
		snprintf(addr, size, "postmaster");
	else
		smtp_address_format(&p->addr, addr, size);
}

static void cmd_rcpt(struct smtp_session *s, const char *args, size_t len)
{
	struct smtp_path_args *p = calloc(1, sizeof(*p));
	const char *error;
	if (p == NULL) {
		smtp_reply(s, 451, "4.3.0", "Error: out of memory");
		return;
	}
	if (smtp_path_parse(args, len, false, p, &error) < 0) {
		free(p);
		smtp_reply_preformatted(s, error);
		return;
	}
	for (unsigned i = 0; i < p->nparams; i++) {
		const struct smtp_param *q = &p->params[i];
		char notify[SMTP_NOTIFY_BUF], orcpt[SMTP_ORCPT_BUF];
		if (strcmp(q->keyword, "NOTIFY") == 0) {
			if (smtp_dsn_notify(q, notify) < 0) {
				smtp_reply(s, 501, "5.5.4", "Error: NOTIFY must be NEVER or a list "
					   "of SUCCESS, FAILURE and DELAY");
				goto fail;
			}
		} else if (strcmp(q->keyword, "ORCPT") == 0) {
			if (smtp_dsn_orcpt(q, orcpt) < 0) {
				smtp_reply(s, 501, "5.5.4", "Error: ORCPT must be rfc822;address or "
					   "utf-8;address in xtext, at most %d characters",
					   SMTP_ORCPT_MAX);
				goto fail;
			}
		} else {
			smtp_reply(s, 555, "5.5.4", "Error: unsupported parameter %s", q->keyword);
			goto fail;
		}
	}
	if (!smtp_check_address(s, p, s->txn.smtputf8)) {
		free(p);
		return;
	}
	if (s->txn.rcpt_commands >= s->server->cfg->max_recipients) {
		free(p);
		smtp_reply(s, 452, "4.5.3", "Error: too many recipients");
		return;
	}
	/* Relay tricks are refused in every syntax, whoever asks: source
	 * routes, %-hacks, bang paths, quoted local parts hiding an '@',
	 * and address literals. */
	if (p->addr.had_source_route || smtp_address_has_relay_chars(&p->addr) ||
	    p->addr.domain_literal) {
		free(p);
		smtp_reply(s, 550, "5.7.1", "Relay access denied");
		return;
	}
	char addr[SMTP_ADDRESS_MAX * 4 + 8];
	smtp_rcpt_address(p, addr, sizeof(addr));
	struct ipc_writer w;
	ipc_writer_init(&w);
	ipc_put_str(&w, addr);
	int ret = ipc_send(s->server->dir, IPC_DIR_RCPT, s->id, &w);
	ipc_writer_free(&w);
	if (ret < 0) {
		free(p);
		smtp_reply(s, 451, "4.3.0", "Error: internal error");
		return;
	}
	s->pending_rcpt = p;
	smtp_park(s, SMTP_WAIT_RCPT);
	return;
fail:
	free(p);
}

/* orcpt and notify: the RFC 3461 parameters of the RCPT command, canonical
 * (see smtp_dsn_orcpt(), smtp_dsn_notify()) or NULL; every recipient an
 * alias expands to carries them (RFC 3461 6.2.7.3). */
static int smtp_txn_add_rcpt(struct smtp_transaction *t, const char *address,
			     const char *mailbox, const char *orcpt, const char *notify)
{
	/* One copy per mailbox: aliases may name the same user twice. */
	for (unsigned i = 0; i < t->nrcpts; i++) {
		if (mailbox != NULL && t->rcpts[i].mailbox != NULL &&
		    strcmp(t->rcpts[i].mailbox, mailbox) == 0)
			return 0;
		if (mailbox == NULL && t->rcpts[i].mailbox == NULL &&
		    strcmp(t->rcpts[i].address, address) == 0)
			return 0;
	}
	if (t->nrcpts == t->rcpts_alloc) {
		unsigned n = t->rcpts_alloc == 0 ? 4 : t->rcpts_alloc * 2;
		struct smtp_rcpt *v = realloc(t->rcpts, n * sizeof(*v));
		if (v == NULL)
			return -1;
		t->rcpts = v;
		t->rcpts_alloc = n;
	}
	struct smtp_rcpt *r = &t->rcpts[t->nrcpts];
	r->address = strdup(address);
	r->mailbox = mailbox != NULL ? strdup(mailbox) : NULL;
	r->orcpt = orcpt != NULL ? strdup(orcpt) : NULL;
	r->notify = notify != NULL ? strdup(notify) : NULL;
	if (r->address == NULL || (mailbox != NULL && r->mailbox == NULL) ||
	    (orcpt != NULL && r->orcpt == NULL) || (notify != NULL && r->notify == NULL)) {
		free(r->address);
		free(r->mailbox);
		free(r->orcpt);
		free(r->notify);
		return -1;
	}
	t->nrcpts++;
	return 0;
}

static void smtp_rcpt_result(struct smtp_session *s, struct ipc_reader *r)
{
	struct smtp_path_args *p = s->pending_rcpt;
	s->pending_rcpt = NULL;
	char addr[SMTP_ADDRESS_MAX * 4 + 8];
	smtp_rcpt_address(p, addr, sizeof(addr));
	/* NOTIFY and ORCPT were checked by cmd_rcpt(). */
	char notify_buf[SMTP_NOTIFY_BUF], orcpt_buf[SMTP_ORCPT_BUF];
	const char *notify = NULL, *orcpt = NULL;
	const struct smtp_param *q = smtp_param_find(p, "NOTIFY");
	if (q != NULL && smtp_dsn_notify(q, notify_buf) == 0)
		notify = notify_buf;
	q = smtp_param_find(p, "ORCPT");
	if (q != NULL && smtp_dsn_orcpt(q, orcpt_buf) == 0)
		orcpt = orcpt_buf;
	free(p);

	uint32_t result = ipc_get_u32(r);
	uint32_t n = ipc_get_u32(r);
	if (r->error) {
		smtp_reply(s, 451, "4.3.0", "Error: internal error");
		return;
	}
	switch (result) {
	case IPC_RCPT_OK:
		break;
	case IPC_RCPT_NO_SUCH_USER:
		smtp_reply(s, 550, "5.1.1", "<%s>: Recipient address rejected: User unknown", addr);
		return;
	case IPC_RCPT_OVER_QUOTA:
		smtp_reply(s, 452, "4.2.2", "<%s>: Mailbox full", addr);
		return;
	case IPC_RCPT_OVER_QUOTA_PERM:
		smtp_reply(s, 552, "5.2.2", "<%s>: Mailbox full", addr);
		return;
	case IPC_RCPT_NOT_LOCAL:
		if (s->auth_user != NULL) {
			if (smtp_txn_add_rcpt(&s->txn, addr, NULL, orcpt, notify) < 0) {
				smtp_reply(s, 451, "4.3.0", "Error: out of memory");
				return;
			}
			goto accepted;
		}
		smtp_reply(s, 554, "5.7.1", "<%s>: Relay access denied", addr);
		return;
	default:
		smtp_reply(s, 451, "4.3.0", "<%s>: Temporary lookup failure", addr);
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		const char *target = ipc_get_str(r);
		uint32_t local = ipc_get_u32(r);
		if (r->error || target == NULL) {
			smtp_reply(s, 451, "4.3.0", "Error: internal error");
			return;
		}
		int ret = local != 0 ? smtp_txn_add_rcpt(&s->txn, addr, target, orcpt, notify)
				     : smtp_txn_add_rcpt(&s->txn, target, NULL, orcpt, notify);
		if (ret < 0) {
			smtp_reply(s, 451, "4.3.0", "Error: out of memory");
			return;
		}
	}
accepted:
	s->txn.rcpt_commands++;
	smtp_session_enter_state(s, SMTP_STATE_RCPT);
	log_info("session=%llx ip=%s to=<%s>", SESSION_ID(s), s->ip, addr);
	smtp_reply(s, 250, "2.1.5", "Ok");
}

/* ---- DATA / BDAT ---- */

static void smtp_received_header(struct smtp_session *s)
{
	const struct config *cfg = s->server->cfg;
	char date[64];
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	/* RFC 3848 protocol names. */
	const char *proto = s->esmtp ? (s->tls ? (s->auth_user ? "ESMTPSA" : "ESMTPS")
					       : (s->auth_user ? "ESMTPA" : "ESMTP"))
				     : "SMTP";
	buf_printf(&s->out, "Received: from %s ([%s])\n\tby %s (Postern) with %s id %s",
		   s->helo, s->ip, cfg->hostname, proto, s->txn.queue_id);
	if (s->tls)
		buf_printf(&s->out, "\n\t(using %s)", s->tls_desc);
	if (s->auth_user != NULL)
		buf_printf(&s->out, "\n\t(authenticated sender: %s)", s->auth_user);
	if (s->txn.nrcpts == 1)
		buf_printf(&s->out, "\n\tfor <%s>", s->txn.rcpts[0].address);
	buf_printf(&s->out, ";\n\t%s\n", date);
}

/* Asks the queue to open a spool file; parks until it answers. -1 when the
 * request cannot be sent (the caller answers). */
static int smtp_queue_begin(struct smtp_session *s)
{
	struct smtp_transaction *t = &s->txn;
	struct ipc_writer w;
	ipc_writer_init(&w);
	ipc_put_str(&w, t->sender);
	ipc_put_str(&w, s->helo);
	ipc_put_str(&w, s->ip);
	ipc_put_str(&w, s->auth_user);
	ipc_put_u32(&w, (t->smtputf8 ? IPC_ENV_SMTPUTF8 : 0) | (t->body_8bit ? IPC_ENV_8BITMIME : 0));
	ipc_put_str(&w, t->envid);
	ipc_put_str(&w, t->ret);
	ipc_put_u32(&w, t->nrcpts);
	for (unsigned i = 0; i < t->nrcpts; i++) {
		ipc_put_str(&w, t->rcpts[i].address);
		ipc_put_str(&w, t->rcpts[i].mailbox);
		ipc_put_str(&w, t->rcpts[i].orcpt);
		ipc_put_str(&w, t->rcpts[i].notify);
	}
	int ret = s->server->queue != NULL ? ipc_send(s->server->queue, IPC_Q_BEGIN, s->id, &w) : -1;
	ipc_writer_free(&w);
	if (ret < 0)
		return -1;
	smtp_park(s, SMTP_WAIT_BEGIN);
	return 0;
}

static void cmd_data(struct smtp_session *s, const char *args, size_t len)
{
	if (len != 0) {
		smtp_reply(s, 501, "5.5.4", "Syntax: DATA");
		return;
	}
	if (smtp_queue_begin(s) < 0)
		smtp_reply(s, 451, "4.3.0", "Error: queue not available");
}

/* Sends what the DATA filter produced to the queue. */
static void smtp_flush_out(struct smtp_session *s, bool force)
{
	if (s->out.len == 0 || (!force && s->out.len < IPC_DATA_CHUNK))
		return;
	if (!s->txn.too_big && !s->txn.data_failed &&
	    ipc_send_raw(s->server->queue, IPC_Q_DATA, s->id, s->out.data, s->out.len) < 0)
		s->txn.data_failed = true;
	buf_reset(&s->out);
}

static void smtp_count_output(struct smtp_session *s, size_t before)
{
	s->txn.size += s->out.len - before;
	if (s->txn.size > s->server->cfg->max_message_size && !s->txn.too_big) {
		/* Keep reading to the end, but stop storing. */
		s->txn.too_big = true;
		ipc_send_raw(s->server->queue, IPC_Q_ABORT, s->id, NULL, 0);
		s->txn.began = false;
	}
	if (s->txn.too_big)
		buf_reset(&s->out);
}

/* The end of a DATA or of the last BDAT chunk: commit or refuse. */
static void smtp_message_end(struct smtp_session *s)
{
	struct smtp_transaction *t = &s->txn;
	unsigned errors = t->data.errors;
	bool failed = false;
	if (t->too_big) {
		smtp_reply(s, 552, "5.3.4", "Error: message size exceeds fixed maximum message size");
		failed = true;
	} else if ((errors & (SMTP_DATA_BARE_LF | SMTP_DATA_BARE_CR)) != 0) {
		smtp_reply(s, 550, "5.6.2",
			   "Error: bare CR or LF in message not allowed (RFC 5321 2.3.8)");
		failed = true;
	} else if ((errors & SMTP_DATA_NUL) != 0) {
		smtp_reply(s, 550, "5.6.0", "Error: NUL character in message not allowed");
		failed = true;
	} else if ((errors & SMTP_DATA_LINE_TOO_LONG) != 0) {
		smtp_reply(s, 550, "5.5.2", "Error: message line longer than %u octets",
			   s->server->cfg->max_line_length);
		failed = true;
	} else if (t->data_failed) {
		smtp_reply(s, 451, "4.3.0", "Error: queue file write error");
		failed = true;
	}
	if (failed) {
		smtp_transaction_reset(s);
		smtp_session_enter_state(s, SMTP_STATE_READY);
		return;
	}
	smtp_flush_out(s, true);
	if (ipc_send_raw(s->server->queue, IPC_Q_END, s->id, NULL, 0) < 0) {
		smtp_reply(s, 451, "4.3.0", "Error: queue not available");
		smtp_transaction_reset(s);
		smtp_session_enter_state(s, SMTP_STATE_READY);
		return;
	}
	/* "250" only after the queue's commit has succeeded. */
	smtp_park(s, SMTP_WAIT_END);
}

size_t smtp_data_input(struct smtp_session *s, const char *in, size_t len)
{
	size_t consumed = 0, before = s->out.len;
	int ret = smtp_data_feed(&s->txn.data, in, len, &consumed, &s->out);
	smtp_count_output(s, before);
	smtp_flush_out(s, false);
	if (ret == 1)
		smtp_message_end(s);
	return consumed;
}

static void smtp_bdat_refuse(struct smtp_session *s)
{
	switch (s->txn.bdat_fail_code) {
	case 451:
		smtp_reply(s, 451, "4.3.0", "Error: queue file write error");
		break;
	case 503:
		smtp_reply(s, 503, "5.5.1", "Error: need RCPT command");
		break;
	case 552:
		smtp_reply(s, 552, "5.3.4", "Error: message size exceeds fixed maximum message size");
		break;
	default:
		smtp_reply(s, 554, "5.5.0", "Error: BDAT transaction failed, send RSET");
		break;
	}
	/* Later chunks of this transaction are refused alike. */
	s->txn.bdat_fail_code = 554;
}

size_t smtp_bdat_input(struct smtp_session *s, const char *in, size_t len)
{
	struct smtp_transaction *t = &s->txn;
	if (len > t->bdat_remaining)
		len = (size_t)t->bdat_remaining;
	if (t->bdat_fail_code == 0) {
		size_t consumed = 0, before = s->out.len;
		smtp_data_feed(&t->data, in, len, &consumed, &s->out);
		smtp_count_output(s, before);
		smtp_flush_out(s, false);
	}
	t->bdat_remaining -= len;
	if (t->bdat_remaining > 0)
		return len;
	/* RFC 3030 2: exactly one reply per chunk. */
	if (t->bdat_fail_code != 0) {
		bool last = t->bdat_last;
		smtp_bdat_refuse(s);
		if (last) {
			smtp_transaction_reset(s);
			smtp_session_enter_state(s, SMTP_STATE_READY);
		}
	} else if (t->bdat_last) {
		size_t before = s->out.len;
		smtp_data_finish(&t->data, &s->out);
		smtp_count_output(s, before);
		smtp_message_end(s);
	} else if (t->too_big) {
		t->bdat_fail_code = 552;
		smtp_bdat_refuse(s);
	} else {
		smtp_reply(s, 250, "2.0.0", "%llu octets received", (unsigned long long)t->size);
	}
	return len;
}

static void cmd_bdat(struct smtp_session *s, const char *args, size_t len)
{
	struct smtp_transaction *t = &s->txn;
	const char *sp = memchr(args, ' ', len);
	size_t nlen = sp != NULL ? (size_t)(sp - args) : len;
	uint64_t size;
	bool last = false;
	if (strn_to_u64(args, nlen, &size) < 0 ||
	    (sp != NULL && (len - nlen - 1 != 4 || strncasecmp(sp + 1, "LAST", 4) != 0))) {
		/* We cannot know how much to skip: the session is lost. */
		smtp_reply(s, 501, "5.5.4", "Syntax: BDAT size [LAST]");
		smtp_reply(s, 421, "4.5.0", "%s Error: unrecoverable BDAT syntax",
			   s->server->cfg->hostname);
		smtp_session_close(s);
		return;
	}
	last = sp != NULL;
	if (s->state != SMTP_STATE_BDAT && s->state != SMTP_STATE_RCPT) {
		/* Still consume the chunk (RFC 3030 2), then refuse it. */
		smtp_transaction_reset(s);
		t->bdat = true;
		t->bdat_fail_code = 503;
	}
	t->bdat_remaining = size;
	t->bdat_last = last;
	if (s->state == SMTP_STATE_RCPT) {
		t->bdat = true;
		smtp_data_init(&t->data, SMTP_DATA_RAW, s->server->cfg->bare_lf == BARE_LF_NORMALIZE,
			       s->server->cfg->max_line_length);
		if (smtp_queue_begin(s) == 0)
			return;
		/* The chunk still follows: consume it, then refuse it once. */
		t->bdat_fail_code = 451;
	}
	smtp_session_enter_state(s, SMTP_STATE_BDAT);
	if (size == 0)
		smtp_bdat_input(s, "", 0);
}

static void smtp_begin_result(struct smtp_session *s, struct ipc_reader *r)
{
	uint32_t status = ipc_get_u32(r);
	const char *text = ipc_get_str(r);
	struct smtp_transaction *t = &s->txn;
	bool ok = !r->error && status == IPC_Q_OK && text != NULL && queue_id_valid(text);
	if (!ok) {
		log_error("session=%llx queue refused transaction: %s", SESSION_ID(s),
			  text != NULL ? text : "malformed reply");
		if (!t->bdat) {
			smtp_reply(s, 451, "4.3.0", "Error: queue file write error");
			smtp_transaction_reset(s);
			smtp_session_enter_state(s, SMTP_STATE_READY);
			return;
		}
		t->bdat_fail_code = 451;
	} else {
		memcpy(t->queue_id, text, sizeof(t->queue_id));
		t->began = true;
		smtp_received_header(s);
	}
	if (!t->bdat) {
		smtp_session_enter_state(s, SMTP_STATE_DATA);
		smtp_reply(s, 354, NULL, "End data with <CR><LF>.<CR><LF>");
		return;
	}
	smtp_session_enter_state(s, SMTP_STATE_BDAT);
	if (t->bdat_remaining == 0)
		smtp_bdat_input(s, "", 0);
}

static void smtp_end_result(struct smtp_session *s, struct ipc_reader *r)
{
	uint32_t status = ipc_get_u32(r);
	const char *text = ipc_get_str(r);
	struct smtp_transaction *t = &s->txn;
	if (!r->error && status == IPC_Q_OK) {
		log_info("session=%llx ip=%s queued id=%s size=%llu nrcpt=%u", SESSION_ID(s),
			 s->ip, t->queue_id, (unsigned long long)t->size, t->nrcpts);
		smtp_reply(s, 250, "2.0.0", "Ok: queued as %s", t->queue_id);
	} else {
		log_error("session=%llx id=%s commit failed: %s", SESSION_ID(s), t->queue_id,
			  text != NULL ? text : "malformed reply");
		smtp_reply(s, 451, "4.3.0", "Error: queue file write error");
	}
	t->began = false; /* committed or given up by the queue: no ABORT */
	smtp_transaction_reset(s);
	smtp_session_enter_state(s, SMTP_STATE_READY);
	if (s->server->hard_stop) {
		smtp_reply(s, 421, "4.3.2", "%s Service shutting down", s->server->cfg->hostname);
		smtp_session_close(s);
	}
}

/* ---- dispatch ---- */

static const struct smtp_cmd_def smtp_commands[] = {
	{ SMTP_CMD_HELO, CMD_NO_TXN, cmd_helo },
	{ SMTP_CMD_EHLO, CMD_NO_TXN, cmd_ehlo },
	{ SMTP_CMD_MAIL, CMD_NEED_HELO | CMD_NEED_AUTH | CMD_NO_TXN, cmd_mail },
	{ SMTP_CMD_RCPT, CMD_NEED_HELO | CMD_NEED_MAIL, cmd_rcpt },
	{ SMTP_CMD_DATA, CMD_NEED_HELO | CMD_NEED_RCPT, cmd_data },
	{ SMTP_CMD_BDAT, CMD_NEED_HELO, cmd_bdat },
	{ SMTP_CMD_RSET, 0, cmd_rset },
	{ SMTP_CMD_NOOP, 0, cmd_noop },
	{ SMTP_CMD_QUIT, 0, cmd_quit },
	{ SMTP_CMD_HELP, 0, cmd_help },
	{ SMTP_CMD_VRFY, 0, cmd_vrfy },
	{ SMTP_CMD_EXPN, 0, cmd_expn },
	{ SMTP_CMD_STARTTLS, CMD_NEED_HELO | CMD_NO_TXN, cmd_starttls },
	{ SMTP_CMD_AUTH, CMD_NEED_HELO | CMD_NO_TXN, cmd_auth },
};

void smtp_command_dispatch(struct smtp_session *s, const char *line, size_t len)
{
	struct smtp_command cmd = { .cmd = SMTP_CMD_UNKNOWN };
	const char *error;
	if (smtp_command_parse(line, len, &cmd, &error) < 0) {
		/* A known verb with bad arguments is 501; anything else 500. */
		if (cmd.cmd != SMTP_CMD_UNKNOWN)
			smtp_reply(s, 501, "5.5.4", "%s", error);
		else
			smtp_reply(s, 500, "5.5.2", "%s", error);
		return;
	}
	const struct smtp_cmd_def *def = NULL;
	for (size_t i = 0; i < sizeof(smtp_commands) / sizeof(smtp_commands[0]); i++) {
		if (smtp_commands[i].cmd == cmd.cmd) {
			def = &smtp_commands[i];
			break;
		}
	}
	if (def == NULL) {
		smtp_reply(s, 500, "5.5.2", "Error: command not recognized");
		return;
	}
	/* Inside BDAT only BDAT, RSET, NOOP and QUIT make sense. */
	if (s->state == SMTP_STATE_BDAT && cmd.cmd != SMTP_CMD_BDAT && cmd.cmd != SMTP_CMD_RSET &&
	    cmd.cmd != SMTP_CMD_NOOP && cmd.cmd != SMTP_CMD_QUIT) {
		smtp_reply(s, 503, "5.5.1", "Error: BDAT transaction in progress");
		return;
	}
	if ((def->flags & CMD_NEED_HELO) != 0 && s->helo[0] == '\0') {
		smtp_reply(s, 503, "5.5.1", "Error: send HELO/EHLO first");
		return;
	}
	if ((def->flags & CMD_NEED_AUTH) != 0 && smtp_is_submission(s) && s->auth_user == NULL) {
		if (!smtp_auth_allowed(s))
			smtp_reply(s, 530, "5.7.0", "Must issue a STARTTLS command first");
		else
			smtp_reply(s, 530, "5.7.0", "Authentication required");
		return;
	}
	if ((def->flags & CMD_NO_TXN) != 0 && smtp_in_txn(s)) {
		if (cmd.cmd == SMTP_CMD_MAIL)
			smtp_reply(s, 503, "5.5.1", "Error: nested MAIL command");
		else if (cmd.cmd == SMTP_CMD_EHLO || cmd.cmd == SMTP_CMD_HELO)
			goto run; /* RFC 5321 4.1.4: EHLO resets the transaction */
		else
			smtp_reply(s, 503, "5.5.1", "Error: command not allowed in a transaction");
		return;
	}
	if ((def->flags & CMD_NEED_MAIL) != 0 && !smtp_in_txn(s)) {
		smtp_reply(s, 503, "5.5.1", "Error: need MAIL command");
		return;
	}
	if ((def->flags & CMD_NEED_RCPT) != 0 && s->state != SMTP_STATE_RCPT) {
		smtp_reply(s, 503, "5.5.1", "Error: need RCPT command");
		return;
	}
run:
	def->run(s, cmd.args, cmd.args_len);
}

void smtp_dir_reply(struct smtp_session *s, struct ipc_reader *r)
{
	enum smtp_wait wait = s->wait;
	smtp_unpark(s);
	switch (wait) {
	case SMTP_WAIT_CONNECT: {
		uint32_t verdict = ipc_get_u32(r);
		if (r->error) {
			verdict = IPC_CONN_TOO_MANY;
		}
		if (verdict == IPC_CONN_OK) {
			s->counted = true;
			smtp_session_enter_state(s, SMTP_STATE_GREETED);
			smtp_reply(s, 220, NULL, "%s ESMTP Postern", s->server->cfg->hostname);
		} else if (verdict == IPC_CONN_DENIED) {
			/* RFC 5321 3.1: 554 instead of the greeting. */
			smtp_reply(s, 554, "5.7.1", "Access denied");
			smtp_session_close(s);
		} else if (verdict == IPC_CONN_BLOCKED) {
			smtp_reply(s, 421, "4.7.0", "%s Access temporarily blocked after failed logins",
				   s->server->cfg->hostname);
			smtp_session_close(s);
		} else {
			smtp_reply(s, 421, "4.7.0", "%s Error: too many connections%s",
				   s->server->cfg->hostname,
				   verdict == IPC_CONN_TOO_MANY_FROM_IP ? " from your address" : "");
			smtp_session_close(s);
		}
		break;
	}
	case SMTP_WAIT_RCPT:
		smtp_rcpt_result(s, r);
		break;
	case SMTP_WAIT_AUTH:
		smtp_auth_result(s, r);
		break;
	case SMTP_WAIT_SENDER:
		smtp_sender_result(s, r);
		break;
	default:
		log_warn("session=%llx unexpected directory reply", SESSION_ID(s));
		return;
	}
	smtp_session_resume(s);
}

void smtp_queue_reply(struct smtp_session *s, uint32_t type, struct ipc_reader *r)
{
	enum smtp_wait wait = s->wait;
	if (type == IPC_Q_BEGIN_REPLY && wait == SMTP_WAIT_BEGIN) {
		smtp_unpark(s);
		smtp_begin_result(s, r);
	} else if (type == IPC_Q_END_REPLY && wait == SMTP_WAIT_END) {
		smtp_unpark(s);
		smtp_end_result(s, r);
	} else {
		log_warn("session=%llx unexpected queue reply %u", SESSION_ID(s), type);
		return;
	}
	smtp_session_resume(s);
}

void smtp_session_peer_lost(struct smtp_session *s, bool dir)
{
	struct smtp_transaction *t = &s->txn;
	if (s->state == SMTP_STATE_QUIT)
		return;
	if (dir) {
		/* The new directory starts counting afresh. */
		s->counted = false;
	} else {
		/* What the queue had of this transaction is gone: the message
		 * cannot be committed any more. */
		t->began = false;
		if (s->state == SMTP_STATE_DATA || s->state == SMTP_STATE_BDAT)
			t->data_failed = true;
	}
	enum smtp_wait wait = s->wait;
	bool ours = dir ? (wait == SMTP_WAIT_CONNECT || wait == SMTP_WAIT_RCPT ||
			   wait == SMTP_WAIT_AUTH || wait == SMTP_WAIT_SENDER)
			: (wait == SMTP_WAIT_BEGIN || wait == SMTP_WAIT_END);
	if (!ours)
		return;
	smtp_unpark(s);
	switch (wait) {
	case SMTP_WAIT_CONNECT:
		smtp_reply(s, 421, "4.3.2", "%s Service not available", s->server->cfg->hostname);
		smtp_session_close(s);
		return;
	case SMTP_WAIT_AUTH:
		free(s->auth_login_user);
		s->auth_login_user = NULL;
		smtp_auth_fail(s, 454, "4.7.0", "Temporary authentication failure");
		break;
	case SMTP_WAIT_RCPT:
		free(s->pending_rcpt);
		s->pending_rcpt = NULL;
		smtp_reply(s, 451, "4.3.0", "Temporary lookup failure");
		break;
	case SMTP_WAIT_SENDER:
		free(s->pending_mail);
		s->pending_mail = NULL;
		smtp_reply(s, 451, "4.3.0", "Temporary lookup failure");
		break;
	default:
		/* BEGIN or END: no 250 can be given. A BDAT chunk that still
		 * follows is consumed first and gets the one reply. */
		if (t->bdat && t->bdat_remaining > 0) {
			t->bdat_fail_code = 451;
			smtp_session_enter_state(s, SMTP_STATE_BDAT);
			break;
		}
		smtp_reply(s, 451, "4.3.0", "Error: queue not available, try again");
		smtp_transaction_reset(s);
		smtp_session_enter_state(s, SMTP_STATE_READY);
		break;
	}
	smtp_session_resume(s);
}
