/*
 * imap-commands.c — the IMAP command table and the commands valid in any
 * state or before login, in the imapd worker: CAPABILITY, NOOP, LOGOUT,
 * STARTTLS, LOGIN, AUTHENTICATE PLAIN (RFC 4616, with SASL-IR RFC 4959), ID
 * (RFC 2971), ENABLE (RFC 5161), NAMESPACE (RFC 2342); and the mailbox
 * name conversion every command uses (modified UTF-7, RFC 3501 5.1.3, or
 * UTF-8 once IMAP4rev2 is enabled, RFC 9051 5.1).
 *
 * Passwords are checked by the directory process (IPC_DIR_AUTH); they are
 * wiped here as soon as they are sent and never logged. Login refuses
 * plaintext before TLS (LOGINDISABLED, [PRIVACYREQUIRED]) unless the
 * listener has allow_plaintext_auth (loopback testing only; logged).
 */
#include "imapd/imap-private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "lib/limits.h"
#include "lib/log.h"
#include "lib/util.h"
#include "lib-imap/imap-util.h"

/* ---- capabilities ---- */

/* LOGIN/AUTHENTICATE may be used now: over TLS, or in plaintext where the
 * operator set listen.<listener>.allow_plaintext_auth (the config allows it
 * on loopback addresses only; every such login is logged as a warning). */
static bool imap_auth_allowed(const struct imap_session *s)
{
	return s->tls || s->server->cfg->tls_listener[s->kind].allow_plaintext_auth;
}

void imap_capabilities(const struct imap_session *s, struct buf *out)
{
	buf_append_str(out, "IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR ID ENABLE IDLE");
	if (s->state < IMAP_STATE_AUTH) {
		/* (On imaps the greeting goes out during the handshake.) */
		if (!s->tls && s->kind == LISTENER_IMAP)
			buf_append_str(out, imap_auth_allowed(s) ? " STARTTLS AUTH=PLAIN"
								 : " STARTTLS LOGINDISABLED");
		else
			buf_append_str(out, " AUTH=PLAIN");
		return;
	}
	buf_printf(out, " NAMESPACE UNSELECT UIDPLUS MOVE CHILDREN LIST-EXTENDED LIST-STATUS"
		       " SPECIAL-USE ESEARCH SEARCHRES CONDSTORE QRESYNC QUOTA QUOTA=RES-STORAGE"
		       " QUOTA=RES-MESSAGE BINARY MULTIAPPEND STATUS=SIZE APPENDLIMIT=%llu",
		   (unsigned long long)s->server->cfg->imap_max_append_size);
}

/* ---- mailbox names ---- */

char *imap_mailbox_arg(const struct imap_session *s, const struct imap_arg *arg)
{
	const char *raw = imap_arg_astring(arg);
	if (raw == NULL || strlen(raw) != arg->len)
		return NULL; /* NUL inside */
	if (strcasecmp(raw, "INBOX") == 0)
		return strdup("INBOX");
	char *name = s->utf8 ? strdup(raw) : imap_mutf7_to_utf8(raw);
	if (name == NULL)
		return NULL;
	/* "inbox.x" is not INBOX's child here: INBOX has no children in
	 * Maildir++ naming other than through the root, so keep it as is. */
	return name;
}

int imap_write_mailbox(const struct imap_session *s, struct buf *out, const char *name)
{
	if (s->utf8)
		return imap_write_string(out, name, strlen(name), true);
	char *m = imap_utf8_to_mutf7(name);
	if (m == NULL)
		return imap_write_string(out, name, strlen(name), false);
	int ret = imap_write_string(out, m, strlen(m), false);
	free(m);
	return ret;
}

/* ---- any state ---- */

static void cmd_capability_run(struct imap_cmd *cmd)
{
	struct buf caps;
	buf_init(&caps, 2048);
	imap_capabilities(cmd->s, &caps);
	imap_out(cmd->s, "* CAPABILITY %s\r\n", caps.data);
	buf_free(&caps);
	imap_cmd_ok(cmd, "CAPABILITY completed");
}

static void cmd_noop_run(struct imap_cmd *cmd)
{
	imap_cmd_ok(cmd, "NOOP completed");
}

static void cmd_logout_run(struct imap_cmd *cmd)
{
	imap_out(cmd->s, "* BYE Logging out\r\n");
	cmd->s->logout = true;
	log_info("session=%llx logout user=%s", IMAP_SID(cmd->s),
		 cmd->s->user != NULL ? cmd->s->user : "-");
	imap_cmd_ok(cmd, "LOGOUT completed");
}

static int cmd_id_check(struct imap_cmd *cmd)
{
	if (cmd->nargs != 1 || (cmd->args[0].type != IMAP_ARG_NIL &&
				!imap_arg_is_list(&cmd->args[0]))) {
		imap_cmd_bad(cmd, "Syntax: ID (params) or ID NIL");
		return -1;
	}
	return 0;
}

static void cmd_id_run(struct imap_cmd *cmd)
{
	imap_out(cmd->s, "* ID (\"name\" \"Postern\" \"vendor\" \"Postern\")\r\n");
	imap_cmd_ok(cmd, "ID completed");
}

static int cmd_enable_check(struct imap_cmd *cmd)
{
	if (cmd->nargs == 0) {
		imap_cmd_bad(cmd, "Syntax: ENABLE capability...");
		return -1;
	}
	for (unsigned i = 0; i < cmd->nargs; i++) {
		if (imap_arg_atom(&cmd->args[i]) == NULL) {
			imap_cmd_bad(cmd, "Syntax: ENABLE capability...");
			return -1;
		}
	}
	return 0;
}

static void cmd_enable_run(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	char enabled[256] = "";
	size_t n = 0;
	for (unsigned i = 0; i < cmd->nargs; i++) {
		const char *c = imap_arg_atom(&cmd->args[i]);
		const char *name = NULL;
		if (strcasecmp(c, "IMAP4rev2") == 0 && !s->rev2) {
			s->rev2 = true;
			s->utf8 = true;
			name = "IMAP4rev2";
		} else if (strcasecmp(c, "CONDSTORE") == 0 && !s->condstore) {
			s->condstore = true;
			name = "CONDSTORE";
		} else if (strcasecmp(c, "QRESYNC") == 0 && !s->qresync) {
			s->qresync = true;
			s->condstore = true;
			name = "QRESYNC";
		}
		if (name != NULL) {
			int w = snprintf(enabled + n, sizeof(enabled) - n, " %s", name);
			if (w > 0 && (size_t)w < sizeof(enabled) - n)
				n += (size_t)w;
		}
	}
	imap_out(s, "* ENABLED%s\r\n", enabled);
	imap_cmd_ok(cmd, "ENABLE completed");
}

static void cmd_namespace_run(struct imap_cmd *cmd)
{
	imap_out(cmd->s, "* NAMESPACE ((\"\" \".\")) NIL NIL\r\n");
	imap_cmd_ok(cmd, "NAMESPACE completed");
}

/* ---- STARTTLS ---- */

static int cmd_starttls_check(struct imap_cmd *cmd)
{
	if (cmd->nargs != 0) {
		imap_cmd_bad(cmd, "Syntax: STARTTLS");
		return -1;
	}
	if (cmd->s->tls || cmd->s->kind != LISTENER_IMAP) {
		imap_cmd_bad(cmd, "TLS is already active");
		return -1;
	}
	return 0;
}

static void cmd_starttls_run(struct imap_cmd *cmd)
{
	cmd->s->starttls_after = true;
	imap_cmd_ok(cmd, "Begin TLS negotiation now");
}

/* ---- LOGIN / AUTHENTICATE ---- */

/* A refused login; expired: the password was right but too old (it counts
 * as a failure all the same). */
static void imap_login_refused(struct imap_session *s, const char *user, bool expired)
{
	struct imap_cmd *cmd = s->cmd;
	const char *text = expired ? "[EXPIRED] Password expired, set a new one"
				   : "[AUTHENTICATIONFAILED] Authentication failed";
	s->auth_failures++;
	log_warn("session=%llx ip=%s auth failed user=%s mechanism=%s%s", IMAP_SID(s), s->ip,
		 user != NULL ? user : "-", s->mech != NULL ? s->mech : "-",
		 expired ? ": password expired" : "");
	imap_cmd_no(cmd, "%s", text);
	if (s->auth_failures >= s->server->cfg->max_auth_failures) {
		/* The tagged NO first, then BYE (command_end sees logout). */
		imap_out(s, "%s NO %s\r\n"
			    "* BYE Too many authentication failures\r\n", cmd->tag, text);
		cmd->tagged_written = true;
		s->logout = true;
	}
}

static void imap_login_open_run(struct imap_session *s)
{
	struct mstore_settings set = {
		.hostname = s->server->cfg->hostname,
		.quota_bytes = s->quota_bytes,
		.quota_messages = s->quota_messages,
	};
	const char *error = NULL;
	if (mstore_open(s->root, &set, &s->store, &error) < 0) {
		char detail[1600];
		snprintf(detail, sizeof(detail), "cannot open the mail store %s: %.400s", s->root,
			 error != NULL ? error : "?");
		imap_cmd_serverbug(s->cmd, detail);
	}
}

static void imap_login_open_done(struct imap_session *s)
{
	struct imap_cmd *cmd = s->cmd;
	if (s->state == IMAP_STATE_LOGOUT) {
		imap_session_close(s);
		return;
	}
	if (!cmd->finished) {
		s->state = IMAP_STATE_AUTH;
		struct buf caps;
		buf_init(&caps, 2048);
		imap_capabilities(s, &caps);
		imap_cmd_ok(cmd, "[CAPABILITY %s] Logged in", caps.data);
		buf_free(&caps);
		log_info("session=%llx login user=%s mechanism=%s ip=%s", IMAP_SID(s), s->user,
			 s->mech, s->ip);
		if (!s->tls)
			log_warn("session=%llx ip=%s user=%s: plaintext login on listener %s "
				 "(allow_plaintext_auth; for loopback testing only)", IMAP_SID(s),
				 s->ip, s->user, listener_kind_name(s->kind));
	}
	imap_session_command_end(s);
	if (s->state != IMAP_STATE_LOGOUT)
		imap_session_resume(s);
}

static void imap_login_count_cb(void *ctx, struct ipc_reader *r)
{
	struct imap_session *s = ctx;
	struct imap_cmd *cmd = s->cmd;
	s->dir_wait = NULL;
	uint32_t verdict = r != NULL ? ipc_get_u32(r) : IPC_CONN_TOO_MANY;
	if (r == NULL || r->error || verdict != IPC_CONN_OK) {
		log_warn("session=%llx ip=%s user=%s too many sessions for the account",
			 IMAP_SID(s), s->ip, s->user);
		free(s->user);
		s->user = NULL;
		imap_cmd_no(cmd, r == NULL ? "[UNAVAILABLE] Try again later"
					   : "[LIMIT] Too many sessions for this account");
		imap_session_command_end(s);
		if (s->state != IMAP_STATE_LOGOUT)
			imap_session_resume(s);
		return;
	}
	s->login_counted = true;
	/* The store is opened on the pool: SQLite and a first-time Maildir
	 * creation may take a while. */
	imap_session_submit(s, imap_login_open_run, imap_login_open_done);
}

static void imap_auth_reply_cb(void *ctx, struct ipc_reader *r)
{
	struct imap_session *s = ctx;
	struct imap_cmd *cmd = s->cmd;
	s->dir_wait = NULL;
	if (r == NULL) {
		imap_cmd_no(cmd, "[UNAVAILABLE] Authentication service unavailable, try later");
		goto end;
	}
	uint32_t result = ipc_get_u32(r);
	const char *user = ipc_get_str(r);
	if (r->error || (result == IPC_AUTH_OK && (user == NULL || *user == '\0'))) {
		imap_cmd_no(cmd, "[UNAVAILABLE] Authentication service error, try later");
		goto end;
	}
	if (result == IPC_AUTH_TEMPFAIL) {
		imap_cmd_no(cmd, "[UNAVAILABLE] Temporary authentication failure, try later");
		goto end;
	}
	if (result != IPC_AUTH_OK) {
		imap_login_refused(s, user, result == IPC_AUTH_EXPIRED);
		goto end;
	}
	/* Quota limits (newer directories send them; 0 = unlimited). */
	uint64_t qb = ipc_get_u64(r);
	uint32_t qm = ipc_get_u32(r);
	if (r->error) {
		qb = s->server->cfg->quota_bytes;
		qm = s->server->cfg->quota_messages;
	}
	s->quota_bytes = qb;
	s->quota_messages = qm;
	if (imapd_user_root(s->server, user, s->root, sizeof(s->root)) < 0 ||
	    (s->user = strdup(user)) == NULL) {
		imap_cmd_serverbug(cmd, "bad canonical user name from the directory");
		goto end;
	}
	/* One more session of this account? (imap.max_connections_per_user) */
	s->dir_wait = imapd_login_count(s->server, s->user, imap_login_count_cb, s);
	if (s->dir_wait == NULL) {
		free(s->user);
		s->user = NULL;
		imap_cmd_no(cmd, "[UNAVAILABLE] Authentication service unavailable, try later");
		goto end;
	}
	return;
end:
	imap_session_command_end(s);
	if (s->state != IMAP_STATE_LOGOUT)
		imap_session_resume(s);
}

/* Sends user/password to the directory; wipes the password. 0 or -1 (the
 * command was answered). */
static int imap_auth_request(struct imap_session *s, const char *user, char *password,
			     size_t password_len)
{
	struct imap_cmd *cmd = s->cmd;
	struct ipc_writer w;
	ipc_writer_init(&w);
	ipc_put_str(&w, user);
	ipc_put_str(&w, password);
	secure_zero(password, password_len);
	ipc_put_str(&w, s->ip);
	ipc_put_u32(&w, IPC_PROTO_IMAP);
	ipc_put_str(&w, s->mech != NULL ? s->mech : "LOGIN");
	s->dir_wait = imapd_dir_request(s->server, IPC_DIR_AUTH, &w, imap_auth_reply_cb, s);
	secure_zero(w.b.data, w.b.len);
	ipc_writer_free(&w);
	if (s->dir_wait == NULL) {
		imap_cmd_no(cmd, "[UNAVAILABLE] Authentication service unavailable, try later");
		return -1;
	}
	return 0;
}

static int cmd_login_check(struct imap_cmd *cmd)
{
	if (cmd->nargs != 2 || imap_arg_astring(&cmd->args[0]) == NULL ||
	    imap_arg_astring(&cmd->args[1]) == NULL) {
		imap_cmd_bad(cmd, "Syntax: LOGIN user password");
		return -1;
	}
	if (!imap_auth_allowed(cmd->s)) {
		imap_cmd_no(cmd, "[PRIVACYREQUIRED] Use STARTTLS first");
		return -1;
	}
	if (cmd->args[1].len > PASSWORD_MAX || cmd->args[0].len > 512) {
		imap_cmd_no(cmd, "[AUTHENTICATIONFAILED] Authentication failed");
		return -1;
	}
	return 0;
}

static void cmd_login_run(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	free(s->mech);
	s->mech = strdup("LOGIN");
	/* The parser's copy of the password is wiped in place. */
	char *password = (char *)(uintptr_t)imap_arg_astring(&cmd->args[1]);
	imap_auth_request(s, imap_arg_astring(&cmd->args[0]), password, cmd->args[1].len);
}

/* Decodes and checks an AUTH PLAIN response; sends it to the directory. */
static void imap_auth_plain(struct imap_session *s, const char *b64, size_t len)
{
	struct imap_cmd *cmd = s->cmd;
	unsigned char dec[SMTP_AUTH_LINE_MAX];
	size_t dlen = 0;
	if (len == 1 && b64[0] == '=')
		len = 0;
	if (len >= sizeof(dec) ||
	    (len > 0 && sodium_base642bin(dec, sizeof(dec) - 1, b64, len, NULL, &dlen, NULL,
					  sodium_base64_VARIANT_ORIGINAL) != 0)) {
		imap_cmd_bad(cmd, "Invalid base64 data");
		return;
	}
	dec[dlen] = '\0';
	/* authzid NUL authcid NUL passwd (RFC 4616) */
	unsigned char *nul1 = memchr(dec, '\0', dlen);
	unsigned char *nul2 = nul1 != NULL ? memchr(nul1 + 1, '\0', dlen - (size_t)(nul1 + 1 - dec))
					   : NULL;
	if (nul1 == NULL || nul2 == NULL) {
		secure_zero(dec, sizeof(dec));
		imap_cmd_bad(cmd, "Invalid AUTHENTICATE PLAIN data");
		return;
	}
	const char *authzid = (const char *)dec;
	const char *authcid = (const char *)nul1 + 1;
	char *password = (char *)nul2 + 1;
	size_t plen = dlen - (size_t)(nul2 + 1 - dec);
	if (*authzid != '\0' && strcmp(authzid, authcid) != 0) {
		secure_zero(dec, sizeof(dec));
		imap_login_refused(s, authcid, false);
		return;
	}
	imap_auth_request(s, authcid, password, plen);
	secure_zero(dec, sizeof(dec));
}

static int cmd_authenticate_check(struct imap_cmd *cmd)
{
	const char *mech = cmd->nargs >= 1 ? imap_arg_atom(&cmd->args[0]) : NULL;
	if (mech == NULL || cmd->nargs > 2 ||
	    (cmd->nargs == 2 && imap_arg_atom(&cmd->args[1]) == NULL)) {
		imap_cmd_bad(cmd, "Syntax: AUTHENTICATE mechanism [initial-response]");
		return -1;
	}
	if (!imap_auth_allowed(cmd->s)) {
		imap_cmd_no(cmd, "[PRIVACYREQUIRED] Use STARTTLS first");
		return -1;
	}
	if (strcasecmp(mech, "PLAIN") != 0) {
		imap_cmd_no(cmd, "[CANNOT] Unsupported authentication mechanism");
		return -1;
	}
	return 0;
}

static void cmd_authenticate_run(struct imap_cmd *cmd)
{
	struct imap_session *s = cmd->s;
	free(s->mech);
	s->mech = strdup("PLAIN");
	if (cmd->nargs == 2) {
		/* SASL-IR (RFC 4959) */
		const struct imap_arg *ir = &cmd->args[1];
		imap_auth_plain(s, ir->str, ir->len);
		secure_zero((char *)(uintptr_t)ir->str, ir->len);
		return;
	}
	s->auth_continue = true;
	imap_out(s, "+ \r\n");
	imap_session_flush(s);
}

void imap_auth_line(struct imap_session *s, const char *line, size_t len)
{
	struct imap_cmd *cmd = s->cmd;
	s->auth_continue = false;
	if (cmd == NULL)
		return;
	if (len == 1 && line[0] == '*')
		imap_cmd_bad(cmd, "Authentication cancelled");
	else
		imap_auth_plain(s, line, len);
	if (cmd->finished)
		imap_session_command_end(s);
}

/* ---- the table ---- */

static const struct imap_command commands[] = {
	{ "CAPABILITY", IMAP_ST_ANY, 0, NULL, cmd_capability_run },
	{ "NOOP", IMAP_ST_ANY, 0, NULL, cmd_noop_run },
	{ "LOGOUT", IMAP_ST_ANY, IMAP_CMD_NOSYNC, NULL, cmd_logout_run },
	{ "ID", IMAP_ST_ANY, 0, cmd_id_check, cmd_id_run },
	{ "STARTTLS", IMAP_ST_NOTAUTH, 0, cmd_starttls_check, cmd_starttls_run },
	{ "LOGIN", IMAP_ST_NOTAUTH, 0, cmd_login_check, cmd_login_run },
	{ "AUTHENTICATE", IMAP_ST_NOTAUTH, 0, cmd_authenticate_check, cmd_authenticate_run },
	{ "ENABLE", IMAP_ST_AUTHED, 0, cmd_enable_check, cmd_enable_run },
	{ "NAMESPACE", IMAP_ST_AUTHED, 0, NULL, cmd_namespace_run },

	{ "SELECT", IMAP_ST_AUTHED, IMAP_CMD_NOSYNC, imap_cmd_select_check, imap_cmd_select_run },
	{ "EXAMINE", IMAP_ST_AUTHED, IMAP_CMD_NOSYNC, imap_cmd_select_check, imap_cmd_select_run },
	{ "CREATE", IMAP_ST_AUTHED, 0, imap_cmd_create_check, imap_cmd_create_run },
	{ "DELETE", IMAP_ST_AUTHED, 0, imap_cmd_mailbox_check, imap_cmd_delete_run },
	{ "RENAME", IMAP_ST_AUTHED, 0, imap_cmd_rename_check, imap_cmd_rename_run },
	{ "SUBSCRIBE", IMAP_ST_AUTHED, 0, imap_cmd_mailbox_check, imap_cmd_subscribe_run },
	{ "UNSUBSCRIBE", IMAP_ST_AUTHED, 0, imap_cmd_mailbox_check, imap_cmd_unsubscribe_run },
	{ "LIST", IMAP_ST_AUTHED, 0, imap_cmd_list_check, imap_cmd_list_run },
	{ "LSUB", IMAP_ST_AUTHED, 0, imap_cmd_lsub_check, imap_cmd_list_run },
	{ "STATUS", IMAP_ST_AUTHED, 0, imap_cmd_status_check, imap_cmd_status_run },
	{ "APPEND", IMAP_ST_AUTHED, 0, imap_cmd_append_check, imap_cmd_append_run },
	{ "GETQUOTA", IMAP_ST_AUTHED, 0, imap_cmd_getquota_check, imap_cmd_getquota_run },
	{ "GETQUOTAROOT", IMAP_ST_AUTHED, 0, imap_cmd_getquotaroot_check,
	  imap_cmd_getquotaroot_run },
	{ "SETQUOTA", IMAP_ST_AUTHED, 0, imap_cmd_setquota_check, NULL },
	{ "IDLE", IMAP_ST_AUTHED, IMAP_CMD_LOOP, imap_cmd_idle_check, NULL },

	{ "CLOSE", IMAP_ST_SELECTED, IMAP_CMD_NOSYNC, NULL, imap_cmd_close_run },
	{ "UNSELECT", IMAP_ST_SELECTED, IMAP_CMD_NOSYNC, NULL, imap_cmd_unselect_run },
	{ "EXPUNGE", IMAP_ST_SELECTED, 0, imap_cmd_expunge_check, imap_cmd_expunge_run },
	{ "UID EXPUNGE", IMAP_ST_SELECTED, 0, imap_cmd_expunge_check, imap_cmd_expunge_run },
	{ "CHECK", IMAP_ST_SELECTED, 0, NULL, imap_cmd_check_run },
	{ "SEARCH", IMAP_ST_SELECTED, IMAP_CMD_NOEXPUNGE, imap_cmd_search_check,
	  imap_cmd_search_run },
	{ "UID SEARCH", IMAP_ST_SELECTED, IMAP_CMD_NOEXPUNGE, imap_cmd_search_check,
	  imap_cmd_search_run },
	{ "FETCH", IMAP_ST_SELECTED, IMAP_CMD_NOEXPUNGE, imap_cmd_fetch_check, imap_cmd_fetch_run },
	{ "UID FETCH", IMAP_ST_SELECTED, IMAP_CMD_NOEXPUNGE, imap_cmd_fetch_check,
	  imap_cmd_fetch_run },
	{ "STORE", IMAP_ST_SELECTED, IMAP_CMD_NOEXPUNGE, imap_cmd_store_check, imap_cmd_store_run },
	{ "UID STORE", IMAP_ST_SELECTED, IMAP_CMD_NOEXPUNGE, imap_cmd_store_check,
	  imap_cmd_store_run },
	{ "COPY", IMAP_ST_SELECTED, 0, imap_cmd_copy_check, imap_cmd_copy_run },
	{ "UID COPY", IMAP_ST_SELECTED, 0, imap_cmd_copy_check, imap_cmd_copy_run },
	{ "MOVE", IMAP_ST_SELECTED, 0, imap_cmd_copy_check, imap_cmd_copy_run },
	{ "UID MOVE", IMAP_ST_SELECTED, 0, imap_cmd_copy_check, imap_cmd_copy_run },
};

const struct imap_command *imap_command_find(const char *name)
{
	/* The parser upper-cases names; ~40 entries, a linear scan is cheaper
	 * than anything cleverer. */
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	}
	return NULL;
}
