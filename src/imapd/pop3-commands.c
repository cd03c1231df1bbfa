/*
 * pop3-commands.c — the POP3 command table of the imapd worker: RFC 1939
 * (USER PASS STAT LIST UIDL RETR TOP DELE RSET NOOP QUIT), RFC 2449 (CAPA,
 * response codes), RFC 2595 (STLS), RFC 5034 (AUTH PLAIN with an initial
 * response or the "+ " continuation), RFC 3206 ([SYS/TEMP], [AUTH]).
 *
 * Each command has a table row (the states where it is allowed, whether it
 * carries credentials and so needs TLS) and a run function. Credentials are
 * refused before TLS on the pop3 listener with "-ERR [AUTH]" (RFC 2595 2.2
 * and our policy: no plaintext passwords); CAPA then shows neither USER nor
 * SASL, only STLS. listen.pop3.allow_plaintext_auth (loopback testing only)
 * lifts that rule.
 *
 * Message numbers are indexes into the snapshot taken at login
 * (pop3-private.h); DELE only marks, the UPDATE at QUIT removes.
 */
#include "imapd/pop3-private.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/util.h"

#define ST_AUTHZ (1u << POP3_STATE_AUTHORIZATION)
#define ST_TRANS (1u << POP3_STATE_TRANSACTION)

#define CMD_CREDENTIALS 0x1u   /* carries a password: TLS required */
#define CMD_NO_ARGS     0x2u   /* takes no arguments */

/* Multi-line listings (LIST, UIDL) are flushed to the socket in pieces. */
#define POP3_LIST_FLUSH 16384u

struct pop3_cmd_def {
	enum pop3_cmd cmd;
	unsigned states;
	unsigned flags;
	void (*run)(struct pop3_session *s, const struct pop3_command *cmd);
};

/* Credentials may be sent now: over TLS, or in plaintext where the operator
 * set listen.<listener>.allow_plaintext_auth (the config allows it on
 * loopback addresses only; every such login is logged as a warning). */
static bool pop3_secure(const struct pop3_session *s)
{
	return s->tls || s->server->cfg->tls_listener[s->kind].allow_plaintext_auth;
}

/* ---- AUTHORIZATION ---- */

static void cmd_capa(struct pop3_session *s, const struct pop3_command *cmd)
{
	(void)cmd;
	struct buf b;
	buf_init(&b, 1024);
	/* RFC 2449 6: the capabilities valid in the current state. */
	buf_append_str(&b, "+OK Capability list follows\r\n"
			   "TOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n");
	if (s->state == POP3_STATE_AUTHORIZATION) {
		if (!s->tls && s->kind == LISTENER_POP3)
			buf_append_str(&b, "STLS\r\n");
		if (pop3_secure(s))
			buf_append_str(&b, "USER\r\nSASL PLAIN\r\n");
	}
	buf_append_str(&b, "IMPLEMENTATION Postern\r\n.\r\n");
	pop3_send(s, b.data, b.len);
	buf_free(&b);
}

static void cmd_stls(struct pop3_session *s, const struct pop3_command *cmd)
{
	(void)cmd;
	if (s->tls || s->kind == LISTENER_POP3S) {
		pop3_reply(s, POP3_ERR, "Command not permitted when TLS active");
		return;
	}
	pop3_reply(s, POP3_OK, "Begin TLS negotiation now");
	if (pop3_session_start_tls(s) < 0) {
		log_error("session=%llx ip=%s STLS: cannot set up TLS", (unsigned long long)s->id,
			  s->ip);
		pop3_session_close(s);
	}
}

static void cmd_user(struct pop3_session *s, const struct pop3_command *cmd)
{
	if (cmd->args_len == 0 || cmd->args_len > POP3_USER_MAX ||
	    memchr(cmd->args, ' ', cmd->args_len) != NULL) {
		pop3_reply(s, POP3_ERR, "Invalid user name");
		return;
	}
	if (s->user != NULL) {
		secure_zero(s->user, strlen(s->user));
		free(s->user);
	}
	s->user = strndup(cmd->args, cmd->args_len);
	if (s->user == NULL) {
		pop3_reply(s, POP3_FAIL, "[SYS/TEMP] Out of memory");
		return;
	}
	pop3_reply(s, POP3_OK, "Send your password");
}

static void cmd_pass(struct pop3_session *s, const struct pop3_command *cmd)
{
	if (s->user == NULL) {
		pop3_reply(s, POP3_ERR, "Send USER first");
		return;
	}
	/* RFC 1939 7: the argument is the rest of the line, spaces and all.
	 * It ends the (NUL-terminated) line, so it is a C string; the caller
	 * wipes the line. */
	pop3_session_auth(s, "USER", s->user, cmd->args);
}

static void cmd_apop(struct pop3_session *s, const struct pop3_command *cmd)
{
	(void)cmd;
	/* APOP needs the plaintext password on the server side (MD5 of
	 * timestamp + secret); Postern stores argon2id hashes only. */
	pop3_reply(s, POP3_ERR, "APOP not supported, use USER/PASS or AUTH PLAIN over TLS");
}

/* SASL PLAIN (RFC 4616) response in base64: authzid NUL authcid NUL passwd. */
static void pop3_auth_plain(struct pop3_session *s, const char *b64, size_t len)
{
	char dec[POP3_AUTH_LINE_MAX + 1];
	size_t n = 0;
	if (len == 1 && b64[0] == '=')
		len = 0; /* RFC 5034 4: "=" is an empty initial response */
	if (len > 0 && sodium_base642bin((unsigned char *)dec, sizeof(dec) - 1, b64, len, NULL,
					 &n, NULL, sodium_base64_VARIANT_ORIGINAL) != 0) {
		pop3_reply(s, POP3_ERR, "Invalid base64 data");
		return;
	}
	dec[n] = '\0';
	const char *authzid = dec;
	const char *nul1 = memchr(dec, '\0', n);
	const char *nul2 = nul1 != NULL ? memchr(nul1 + 1, '\0', n - (size_t)(nul1 + 1 - dec))
					: NULL;
	if (nul1 == NULL || nul2 == NULL || nul1 + 1 == nul2 ||
	    memchr(nul2 + 1, '\0', n - (size_t)(nul2 + 1 - dec)) != NULL) {
		secure_zero(dec, sizeof(dec));
		pop3_reply(s, POP3_ERR, "Invalid AUTH PLAIN data");
		return;
	}
	const char *authcid = nul1 + 1;
	const char *passwd = nul2 + 1;
	/* No proxy authorisation: authzid empty or the same user. */
	if (authzid[0] != '\0' && strcmp(authzid, authcid) != 0) {
		secure_zero(dec, sizeof(dec));
		pop3_reply(s, POP3_FAIL, "[AUTH] Authorization identity not permitted");
		return;
	}
	pop3_session_auth(s, "PLAIN", authcid, passwd);
	secure_zero(dec, sizeof(dec));
}

static void cmd_auth(struct pop3_session *s, const struct pop3_command *cmd)
{
	const char *p = cmd->args;
	size_t len = cmd->args_len;
	while (len > 0 && p[len - 1] == ' ')
		len--;
	if (len == 0) {
		/* Not in RFC 5034, but clients (and Dovecot) use a bare AUTH
		 * to list the mechanisms, as RFC 1734 servers did. */
		pop3_send(s, "+OK\r\nPLAIN\r\n.\r\n", 16);
		return;
	}
	const char *sp = memchr(p, ' ', len);
	size_t mlen = sp != NULL ? (size_t)(sp - p) : len;
	if (mlen != 5 || strncasecmp(p, "PLAIN", 5) != 0) {
		pop3_reply(s, POP3_ERR, "Unsupported authentication mechanism");
		return;
	}
	if (sp != NULL) {
		const char *ir = sp + 1;
		pop3_auth_plain(s, ir, len - (size_t)(ir - p));
		return;
	}
	/* RFC 5034 4: an empty challenge, "+ " and the response line. */
	s->auth_cont = true;
	pop3_send(s, "+ \r\n", 4);
}

void pop3_auth_continue(struct pop3_session *s, const char *line, size_t len)
{
	s->auth_cont = false;
	if (len == 1 && line[0] == '*') {
		pop3_reply(s, POP3_ERR, "Authentication cancelled");
		return;
	}
	pop3_auth_plain(s, line, len);
}

/* ---- TRANSACTION ---- */

/* Finds message number num (1-based) of the snapshot that is not deleted.
 * Returns its index, or -1 after answering -ERR. */
static int64_t pop3_msg_find(struct pop3_session *s, uint32_t num)
{
	if (num == 0 || num > s->nmsgs) {
		pop3_reply(s, POP3_FAIL, "no such message");
		return -1;
	}
	if (s->msgs[num - 1].deleted) {
		pop3_reply(s, POP3_FAIL, "message %u already deleted", num);
		return -1;
	}
	return (int64_t)num - 1;
}

/* One number argument (min 0: optional). -1 after answering. */
static int pop3_args(struct pop3_session *s, const struct pop3_command *cmd, uint32_t *nums,
		     unsigned min, unsigned max)
{
	const char *error;
	int n = pop3_parse_numbers(cmd->args, cmd->args_len, nums, min, max, &error);
	if (n < 0)
		pop3_reply(s, POP3_ERR, "%s", error);
	return n;
}

static void pop3_totals(const struct pop3_session *s, uint32_t *count_r, uint64_t *size_r)
{
	uint32_t count = 0;
	uint64_t size = 0;
	for (uint32_t i = 0; i < s->nmsgs; i++) {
		if (s->msgs[i].deleted)
			continue;
		count++;
		size += s->msgs[i].size;
	}
	*count_r = count;
	*size_r = size;
}

static void cmd_stat(struct pop3_session *s, const struct pop3_command *cmd)
{
	(void)cmd;
	uint32_t count;
	uint64_t size;
	pop3_totals(s, &count, &size);
	/* RFC 1939 5: exactly "+OK nn mm". */
	pop3_reply(s, POP3_OK, "%u %llu", count, (unsigned long long)size);
}

/* LIST and UIDL: one message, or a multi-line listing. */
static void pop3_listing(struct pop3_session *s, const struct pop3_command *cmd, bool uidl)
{
	uint32_t num;
	char id[32];
	int n = pop3_args(s, cmd, &num, 0, 1);
	if (n < 0)
		return;
	if (n == 1) {
		int64_t i = pop3_msg_find(s, num);
		if (i < 0)
			return;
		if (uidl) {
			pop3_uidl(s, (uint32_t)i, id, sizeof(id));
			pop3_reply(s, POP3_OK, "%u %s", num, id);
		} else {
			pop3_reply(s, POP3_OK, "%u %llu", num,
				   (unsigned long long)s->msgs[i].size);
		}
		return;
	}
	uint32_t count;
	uint64_t size;
	pop3_totals(s, &count, &size);
	if (uidl)
		pop3_reply(s, POP3_OK, "Unique-ID listing follows");
	else
		pop3_reply(s, POP3_OK, "%u messages (%llu octets)", count, (unsigned long long)size);
	struct buf b;
	buf_init(&b, POP3_LIST_FLUSH + 128);
	for (uint32_t i = 0; i < s->nmsgs; i++) {
		if (s->msgs[i].deleted)
			continue;
		if (uidl) {
			pop3_uidl(s, i, id, sizeof(id));
			buf_printf(&b, "%u %s\r\n", i + 1, id);
		} else {
			buf_printf(&b, "%u %llu\r\n", i + 1, (unsigned long long)s->msgs[i].size);
		}
		if (b.len >= POP3_LIST_FLUSH) {
			pop3_send(s, b.data, b.len);
			buf_reset(&b);
		}
	}
	buf_append_str(&b, ".\r\n");
	pop3_send(s, b.data, b.len);
	buf_free(&b);
}

static void cmd_list(struct pop3_session *s, const struct pop3_command *cmd)
{
	pop3_listing(s, cmd, false);
}

static void cmd_uidl(struct pop3_session *s, const struct pop3_command *cmd)
{
	pop3_listing(s, cmd, true);
}

static void cmd_retr(struct pop3_session *s, const struct pop3_command *cmd)
{
	uint32_t num;
	if (pop3_args(s, cmd, &num, 1, 1) < 0)
		return;
	int64_t i = pop3_msg_find(s, num);
	if (i < 0)
		return;
	if (pop3_session_retr(s, (uint32_t)i, false, 0) == 0)
		s->msgs[i].retrieved = true; /* \Seen at QUIT, as Dovecot does */
}

static void cmd_top(struct pop3_session *s, const struct pop3_command *cmd)
{
	uint32_t nums[2];
	if (pop3_args(s, cmd, nums, 2, 2) < 0)
		return;
	int64_t i = pop3_msg_find(s, nums[0]);
	if (i < 0)
		return;
	pop3_session_retr(s, (uint32_t)i, true, nums[1]);
}

static void cmd_dele(struct pop3_session *s, const struct pop3_command *cmd)
{
	uint32_t num;
	if (pop3_args(s, cmd, &num, 1, 1) < 0)
		return;
	int64_t i = pop3_msg_find(s, num);
	if (i < 0)
		return;
	s->msgs[i].deleted = true;
	pop3_reply(s, POP3_OK, "message %u deleted", num);
}

static void cmd_rset(struct pop3_session *s, const struct pop3_command *cmd)
{
	(void)cmd;
	for (uint32_t i = 0; i < s->nmsgs; i++)
		s->msgs[i].deleted = false;
	uint32_t count;
	uint64_t size;
	pop3_totals(s, &count, &size);
	pop3_reply(s, POP3_OK, "maildrop has %u messages (%llu octets)", count,
		   (unsigned long long)size);
}

static void cmd_noop(struct pop3_session *s, const struct pop3_command *cmd)
{
	(void)cmd;
	pop3_reply(s, POP3_OK, "%s", "");
}

static void cmd_quit(struct pop3_session *s, const struct pop3_command *cmd)
{
	(void)cmd;
	if (s->state == POP3_STATE_TRANSACTION) {
		/* RFC 1939 6: the UPDATE state; the reply comes after it. */
		pop3_session_update(s);
		return;
	}
	pop3_reply(s, POP3_OK, "Postern POP3 server signing off");
	pop3_session_close(s);
}

static const struct pop3_cmd_def pop3_commands[] = {
	{ POP3_CMD_CAPA, ST_AUTHZ | ST_TRANS, CMD_NO_ARGS, cmd_capa },
	{ POP3_CMD_STLS, ST_AUTHZ, CMD_NO_ARGS, cmd_stls },
	{ POP3_CMD_USER, ST_AUTHZ, CMD_CREDENTIALS, cmd_user },
	{ POP3_CMD_PASS, ST_AUTHZ, CMD_CREDENTIALS, cmd_pass },
	{ POP3_CMD_APOP, ST_AUTHZ, 0, cmd_apop },
	{ POP3_CMD_AUTH, ST_AUTHZ, CMD_CREDENTIALS, cmd_auth },
	{ POP3_CMD_STAT, ST_TRANS, CMD_NO_ARGS, cmd_stat },
	{ POP3_CMD_LIST, ST_TRANS, 0, cmd_list },
	{ POP3_CMD_UIDL, ST_TRANS, 0, cmd_uidl },
	{ POP3_CMD_RETR, ST_TRANS, 0, cmd_retr },
	{ POP3_CMD_TOP, ST_TRANS, 0, cmd_top },
	{ POP3_CMD_DELE, ST_TRANS, 0, cmd_dele },
	{ POP3_CMD_RSET, ST_TRANS, CMD_NO_ARGS, cmd_rset },
	{ POP3_CMD_NOOP, ST_TRANS, CMD_NO_ARGS, cmd_noop },
	{ POP3_CMD_QUIT, ST_AUTHZ | ST_TRANS, CMD_NO_ARGS, cmd_quit },
};

void pop3_command_dispatch(struct pop3_session *s, const char *line, size_t len)
{
	struct pop3_command cmd;
	const char *error;
	if (pop3_command_parse(line, len, &cmd, &error) < 0) {
		pop3_reply(s, POP3_ERR, "%s", error);
		return;
	}
	const struct pop3_cmd_def *def = NULL;
	for (size_t i = 0; i < sizeof(pop3_commands) / sizeof(pop3_commands[0]); i++) {
		if (pop3_commands[i].cmd == cmd.cmd) {
			def = &pop3_commands[i];
			break;
		}
	}
	if (def == NULL) {
		pop3_reply(s, POP3_ERR, "Unknown command");
		return;
	}
	/* Never log arguments: PASS and AUTH carry secrets. */
	log_debug("session=%llx pop3 command %s", (unsigned long long)s->id, cmd.keyword);
	if ((def->states & (1u << s->state)) == 0) {
		pop3_reply(s, POP3_ERR, "Command not valid in this state");
		return;
	}
	if ((def->flags & CMD_CREDENTIALS) != 0 && !pop3_secure(s)) {
		/* RFC 2595 2.2, RFC 3206 5: no plaintext passwords; STLS first. */
		pop3_reply(s, POP3_ERR,
			   "[AUTH] Plaintext authentication disallowed on non-secure connections, "
			   "use STLS");
		return;
	}
	if ((def->flags & CMD_NO_ARGS) != 0) {
		uint32_t none;
		if (pop3_args(s, &cmd, &none, 0, 0) < 0)
			return;
	}
	def->run(s, &cmd);
}
