/*
 * pop3-private.h — internals of the POP3 half of the imapd worker
 * (RFC 1939 POP3, RFC 2449 CAPA and response codes, RFC 2595 STLS,
 * RFC 5034 AUTH PLAIN, RFC 3206 [SYS/TEMP] and [AUTH]): the session, its
 * message snapshot, and what pop3-session.c (I/O, TLS, timeouts, the
 * directory, the store jobs) and pop3-commands.c (the command table)
 * call in each other.
 *
 * Threads: everything runs on the worker's loop thread except three kinds
 * of store jobs on the workpool: opening the mailbox at login (mstore_open,
 * INBOX, the sizes: may read files), the UPDATE at QUIT (\Deleted, UID
 * EXPUNGE), and opening the message file for RETR/TOP (mbox_msg_open()
 * may rescan the folder under the index's write lock). While a job runs the session is parked (wait
 * POP3_WAIT_STORE) and the loop thread touches neither s->store nor
 * s->mbox; a session whose client goes away meanwhile is freed by the
 * job's done(). RETR/TOP then only read the opened file on the loop, in
 * POP3_STREAM_PIECE reads, only while the socket's output is below
 * POP3_OUT_LOW: a 50 MB message costs one piece of memory, not 50 MB.
 */
#ifndef POSTERN_POP3_PRIVATE_H
#define POSTERN_POP3_PRIVATE_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "imapd/imapd.h"
#include "lib/workpool.h"
#include "lib-pop3/pop3.h"

struct bufferevent;
struct event;
struct mstore;
struct mbox;

/* A message file is read in pieces of this size while streaming. */
#define POP3_STREAM_PIECE   (32u * 1024)
/* Streaming refills the socket's output when it drains below this. */
#define POP3_OUT_LOW        (64u * 1024)
/* Pending output above which no more commands are read (a client that
 * pipelines LISTs without reading the answers). */
#define POP3_OUT_MAX        (256u * 1024)
/* An over-long line is discarded to its end; a client that sends more
 * than this without a line end is disconnected. */
#define POP3_SKIP_MAX       (64u * 1024)
/* USER's argument. */
#define POP3_USER_MAX       255

enum pop3_state {
	POP3_STATE_AUTHORIZATION,
	POP3_STATE_TRANSACTION,
	POP3_STATE_UPDATE,
};

/* What a parked session waits for; POP3_WAIT_NONE: reading commands. */
enum pop3_wait {
	POP3_WAIT_NONE,
	POP3_WAIT_CONNECT,   /* the directory's connection verdict */
	POP3_WAIT_TLS,       /* a TLS handshake (pop3s, or after STLS) */
	POP3_WAIT_AUTH,      /* the directory's password check */
	POP3_WAIT_STORE,     /* a workpool job (open, or the UPDATE) */
	POP3_WAIT_OUTPUT,    /* RETR/TOP streaming a message */
};

/* One message of the snapshot taken at login (RFC 1939 5: numbers and
 * sizes are fixed for the session; other sessions' changes are not seen). */
struct pop3_msg {
	uint32_t uid;
	bool deleted;        /* DELE'd in this session; undone by RSET */
	bool retrieved;      /* RETR'd: gets \Seen at QUIT */
	uint64_t size;       /* RFC822.SIZE: the CRLF octet count */
};

enum pop3_job_kind { POP3_JOB_OPEN, POP3_JOB_UPDATE };

struct pop3_job {
	struct workpool_job job;
	struct pop3_session *s;
	enum pop3_job_kind kind;
	int ret;                    /* 0 or -1 */
	const char *error;          /* for the log (static or store-owned) */
	uint32_t expunged;          /* UPDATE: messages removed */
	char root[4096];            /* OPEN: the Maildir root */
	uint64_t quota_bytes;
	uint64_t quota_messages;
};

struct pop3_session {
	struct pop3_session *next, *prev;   /* the worker's POP3 sessions */
	struct imapd *server;
	uint64_t id;
	enum listener_kind kind;
	char ip[64];
	struct bufferevent *bev;
	SSL *ssl;                   /* owned by bev */
	bool tls;                   /* the handshake is done */
	char tls_desc[128];
	struct event *close_ev;
	unsigned close_polls;

	enum pop3_state state;
	enum pop3_wait wait;
	struct imapd_dir_wait *dir_wait;
	bool counted;               /* the directory counted the connection */
	bool login_counted;         /* ... and the login (per-account limit) */
	bool greeted;
	bool closing;               /* the last reply is being written */
	bool dead;                  /* the client went away during a job */
	bool output_blocked;        /* stopped reading until output drains */
	bool skip_line;             /* discarding the rest of an over-long line */
	size_t skipped;
	unsigned errors;
	unsigned auth_failures;

	/* AUTHORIZATION */
	char *user;                 /* USER's argument */
	bool auth_cont;             /* AUTH PLAIN: the "+ " continuation is out */
	char *auth_user;            /* canonical, after a successful login */

	/* TRANSACTION */
	struct mstore *store;
	struct mbox *mbox;
	uint32_t uidvalidity;
	struct pop3_msg *msgs;
	uint32_t nmsgs;

	/* RETR/TOP streaming */
	int stream_fd;              /* -1 when not streaming */
	struct pop3_dot dot;
	char *piece;                /* POP3_STREAM_PIECE octets while streaming */
	size_t piece_pos, piece_len;

	struct pop3_job job;
};

/* ---- pop3-session.c ---- */

enum pop3_reply_kind {
	POP3_OK,                    /* +OK */
	POP3_ERR,                   /* -ERR for a client mistake: counts towards max_errors */
	POP3_FAIL,                  /* -ERR that is not the client's fault (no such message
				       is, a store failure is not): not counted */
};
/* Every status line goes through here: "+OK text" / "-ERR text" CRLF.
 * Nothing is written once the session is closing. */
void pop3_reply(struct pop3_session *s, enum pop3_reply_kind kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Appends raw octets (the lines of a multi-line response, already CRLF'd). */
void pop3_send(struct pop3_session *s, const void *data, size_t len);
void pop3_enter_state(struct pop3_session *s, enum pop3_state state);
/* Stops reading, frees once the last reply is written (never synchronously). */
void pop3_session_close(struct pop3_session *s);
/* Puts TLS on the connection after "+OK" to STLS; 0 or -1. */
int pop3_session_start_tls(struct pop3_session *s);
/* Sends the credentials to the directory and parks the session (the
 * caller wipes password). On success the mailbox is opened on the
 * workpool and the session enters TRANSACTION; failures are answered
 * here ([AUTH], [SYS/TEMP]) and counted towards max_auth_failures.
 * mech names the mechanism for the directory's log and policy: "USER"
 * (USER/PASS) or "PLAIN" (AUTH PLAIN). */
void pop3_session_auth(struct pop3_session *s, const char *mech, const char *user,
		       const char *password);
/* Starts streaming message index i (0-based) of the snapshot: TOP with
 * lines when top; sends the "+OK" itself. 0, or -1 when the message
 * cannot be read (already answered with -ERR). */
int pop3_session_retr(struct pop3_session *s, uint32_t i, bool top, uint64_t lines);
/* QUIT in TRANSACTION: the UPDATE state on the workpool, then "+OK" and
 * close. */
void pop3_session_update(struct pop3_session *s);
/* The UIDL of message index i: "<uidvalidity>.<uid>" (RFC 1939 7: 1..70
 * octets 0x21..0x7E, never reused: the store keeps UIDVALIDITY and UIDs
 * stable across restarts and index rebuilds). */
void pop3_uidl(const struct pop3_session *s, uint32_t i, char *out, size_t size);

/* ---- pop3-commands.c ---- */

/* Runs one command line (without CRLF) in the current state. */
void pop3_command_dispatch(struct pop3_session *s, const char *line, size_t len);
/* The AUTH PLAIN continuation line (after "+ "). */
void pop3_auth_continue(struct pop3_session *s, const char *line, size_t len);


#endif
