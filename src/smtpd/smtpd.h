/*
 * smtpd.h — internals of the smtpd worker process (RFC 5321 server).
 *
 * Each worker is one libevent loop serving many SMTP sessions on the
 * listeners the master bound. A session that waits on another process
 * (directory lookup, password check, queue commit) is parked: reading is
 * disabled until the reply, matched by request id, comes back.
 */
#ifndef POSTERN_SMTPD_H
#define POSTERN_SMTPD_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "lib/buf.h"
#include "lib/ipc.h"
#include "lib-config/config.h"
#include "lib-smtp/smtp.h"

struct event_base;
struct bufferevent;
struct event;
struct tls_set;

/* The master hands each worker its listening sockets. */
struct smtpd_listener {
	int fd;
	enum listener_kind kind;
};

/* tls: the TLS contexts the master loaded before forking (the worker takes
 * a reference; their pages stay shared with the other workers). */
int smtpd_main(const struct config *cfg, struct tls_set *tls,
	       const struct smtpd_listener *listeners, unsigned count);

enum smtp_state {
	SMTP_STATE_CONNECT,     /* waiting for the connection verdict */
	SMTP_STATE_GREETED,     /* banner sent, no EHLO yet */
	SMTP_STATE_READY,       /* EHLO/HELO done, no transaction */
	SMTP_STATE_MAIL,        /* MAIL accepted */
	SMTP_STATE_RCPT,        /* at least one RCPT accepted */
	SMTP_STATE_DATA,        /* reading DATA content */
	SMTP_STATE_BDAT,        /* inside a BDAT transaction */
	SMTP_STATE_AUTH,        /* AUTH exchange in progress */
	SMTP_STATE_TLS,         /* TLS handshake in progress */
	SMTP_STATE_QUIT,        /* closing after the last reply is written */
};

/* What the session waits for (at most one thing at a time). */
enum smtp_wait {
	SMTP_WAIT_NONE,
	SMTP_WAIT_CONNECT,
	SMTP_WAIT_RCPT,
	SMTP_WAIT_AUTH,
	SMTP_WAIT_SENDER,
	SMTP_WAIT_BEGIN,
	SMTP_WAIT_END,
};

struct smtp_rcpt {
	char *address;          /* for the envelope: local recipient as given, or remote target */
	char *mailbox;          /* canonical local user, NULL for remote */
	char *orcpt;            /* RFC 3461 ORCPT decoded, "rfc822;bob@example.com", or NULL */
	char *notify;           /* RFC 3461 NOTIFY canonical, "SUCCESS,FAILURE" / "NEVER", or NULL */
};

struct smtp_transaction {
	char *sender;           /* "" for <> */
	char *envid;            /* RFC 3461 ENVID decoded, or NULL */
	const char *ret;        /* RFC 3461 RET: "FULL", "HDRS" (static) or NULL */
	bool smtputf8;
	bool body_8bit;
	struct smtp_rcpt *rcpts;
	unsigned nrcpts, rcpts_alloc;
	unsigned rcpt_commands;          /* accepted RCPT commands, for the limit */
	char queue_id[17];
	bool began;                      /* IPC_Q_BEGIN acknowledged */
	uint64_t size;                   /* message octets after unstuffing */
	bool too_big;
	bool data_failed;                /* queue reported failure mid-stream */
	struct smtp_data data;
	bool bdat;                       /* content comes by BDAT (RFC 3030), not DATA */
	bool bdat_last;
	uint64_t bdat_remaining;         /* octets of the current chunk still to read */
	unsigned bdat_fail_code;         /* non-zero: chunks are discarded and refused */
};

struct smtpd;

struct smtp_session {
	struct smtp_session *prev, *next;
	struct smtpd *server;
	uint64_t id;
	enum listener_kind kind;
	int fd;
	struct bufferevent *bev;
	struct event *close_ev;          /* deferred free after the last reply */
	unsigned close_polls;
	SSL *ssl;
	char ip[64];
	char helo[256];
	bool esmtp;
	bool tls;
	char tls_desc[128];
	char *auth_user;                 /* canonical, after AUTH */
	enum smtp_state state;
	enum smtp_wait wait;
	bool counted;                    /* the directory counted this connection */
	unsigned errors;
	unsigned auth_failures;
	bool skip_line;                  /* discarding the rest of an over-long line */
	bool output_blocked;             /* not reading until the client reads replies */
	size_t skipped;
	/* AUTH exchange */
	int auth_mech;                   /* 0 none, 1 PLAIN, 2 LOGIN */
	char *auth_login_user;
	struct smtp_transaction txn;
	struct buf out;                  /* pending message bytes for the queue */
	/* a pending RCPT lookup */
	struct smtp_path_args *pending_rcpt;
	char *pending_sender;
	struct smtp_path_args *pending_mail;
};

/* A session freed while its connection verdict was still on the way: if the
 * directory counted it, the count must be given back when the verdict comes. */
struct smtpd_orphan {
	struct smtpd_orphan *next;
	uint64_t id;
	char ip[64];
};

struct smtpd {
	struct event_base *base;
	const struct config *cfg;
	struct tls_set *tls;
	struct ipc_conn *dir;
	struct ipc_conn *queue;
	struct smtp_session *sessions;
	unsigned nsessions;
	struct smtpd_orphan *orphans;
	uint64_t next_id;
	struct event *reconnect_ev;      /* while the directory or queue is away */
	bool stopping;                   /* no new connections */
	bool hard_stop;                  /* SIGTERM: close sessions after their transaction */
};

/* smtp-session.c */
void smtp_session_create(struct smtpd *server, int fd, enum listener_kind kind,
			 const char *ip);
void smtp_session_free(struct smtp_session **s);
struct smtp_session *smtp_session_find(struct smtpd *server, uint64_t id);
void smtp_reply(struct smtp_session *s, unsigned code, const char *enhanced,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void smtp_session_enter_state(struct smtp_session *s, enum smtp_state state);
/* Resumes command processing after a parked wait ended. */
void smtp_session_resume(struct smtp_session *s);
void smtp_session_close(struct smtp_session *s);
/* The directory (dir = true) or the queue went away: fail what waits on it. */
void smtp_session_peer_lost(struct smtp_session *s, bool dir);
int smtp_session_start_tls(struct smtp_session *s);
void smtp_transaction_reset(struct smtp_session *s);

/* smtp-commands.c */
/* Runs one complete command line (without CRLF). */
void smtp_command_dispatch(struct smtp_session *s, const char *line, size_t len);
/* An AUTH continuation line. */
void smtp_auth_continue(struct smtp_session *s, const char *line, size_t len);
/* Replies from other processes. */
void smtp_dir_reply(struct smtp_session *s, struct ipc_reader *r);
void smtp_queue_reply(struct smtp_session *s, uint32_t type, struct ipc_reader *r);
/* DATA/BDAT content: feeds bytes, returns bytes consumed. */
size_t smtp_data_input(struct smtp_session *s, const char *in, size_t len);
size_t smtp_bdat_input(struct smtp_session *s, const char *in, size_t len);

#endif
