/*
 * ipc.h — the only way Postern processes talk to each other.
 *
 * Processes connect over Unix stream sockets in DATA/run/: the directory and
 * the queue listen, smtpd workers and the deliverer connect. One socket is
 * for local users: run/submit.sock (mode 0666) takes IPC_Q_BEGIN/DATA/END
 * from `postern sendmail` run by anyone; the queue then ignores what the
 * client says about itself (the peer's uid decides the auth user) and
 * resolves the recipients itself.
 * (A restarted child simply reconnects; see docs/architecture.md.)
 *
 * A frame is a fixed header (type, payload length, request id) and a payload
 * of typed fields: u32, u64 and strings (length-prefixed, NUL-terminated, may
 * be absent). Every read is length-checked; a malformed frame closes the
 * connection. Every message type that crosses processes is declared here.
 */
#ifndef POSTERN_IPC_H
#define POSTERN_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

struct event_base;

enum ipc_type {
	/* smtpd -> directory ("anvil" + accounts) */
	IPC_DIR_CONNECT = 100,   /* str ip, u32 enum listener_kind -> REPLY u32 enum
				    ipc_conn_verdict (access rules, blocks, counts) */
	IPC_DIR_DISCONNECT,      /* str ip; no reply */
	IPC_DIR_RCPT,            /* str address -> REPLY u32 enum ipc_rcpt_result, u32 n, n * (str address, u32 local) */
	IPC_DIR_AUTH,            /* str user, str password, str client ip, u32 enum
				    ipc_auth_proto, str mechanism ("PLAIN", "LOGIN")
				    -> REPLY u32 enum ipc_auth_result, str canonical user,
				    u64 quota bytes, u32 quota messages (the account's
				    limits, 0 = unlimited). A FAIL reply may come late: the
				    directory delays it after repeated failures. */
	IPC_DIR_SENDER,          /* str user, str sender -> REPLY u32 allowed (1/0), or 2 on error */
	IPC_DIR_REPLY,
	IPC_DIR_LOGIN,           /* imapd, after a successful login: str canonical user
				    -> REPLY u32 enum ipc_conn_verdict (TOO_MANY: the account
				    has imap.max_connections_per_user sessions) */
	IPC_DIR_LOGOUT,          /* str canonical user: that session ended; no reply */

	/* smtpd -> queue: one transaction per request id */
	IPC_Q_BEGIN = 200,       /* envelope: str sender, str helo, str client_ip, str auth_user,
				    u32 flags (IPC_ENV_*), str envid, str ret, u32 n,
				    n * (str address, str mailbox, str orcpt, str notify)
				    -> IPC_Q_BEGIN_REPLY u32 status, str id-or-reason */
	IPC_Q_DATA,              /* raw message bytes (no framing inside) */
	IPC_Q_END,               /* -> IPC_Q_END_REPLY u32 status, str id-or-reason; the reply
				    comes only after the spool file and directory are fsync'ed */
	IPC_Q_ABORT,             /* no reply */
	IPC_Q_BEGIN_REPLY,
	IPC_Q_END_REPLY,

	/* queue <-> deliver */
	IPC_DLV_HELLO = 300,     /* deliver -> queue, once after connecting */
	IPC_DLV_REQUEST,         /* str id, u32 rcpt index, str mailbox, str maildir path,
				    u32 flags (IPC_DLV_RECOVERED: check for an earlier copy first) */
	IPC_DLV_RESULT,          /* str id, u32 rcpt index, u32 enum ipc_dlv_status, str text */
	IPC_DLV_REMOTE,          /* queue -> deliver: one SMTP transaction to a remote domain:
				    str id, str domain, str route ("HOST:PORT" smarthost or NULL
				    for MX lookup), u32 enum ipc_tls_policy, u32 flags,
				    u32 n, n * u32 rcpt index (all of the same domain) */
	IPC_DLV_REMOTE_RESULT,   /* deliver -> queue, same request id: str id, str remote host
				    ("mx.example.com[127.0.0.2]" or NULL when none answered),
				    str tls ("TLSv1.3 TLS_AES_256_GCM_SHA384" or NULL),
				    u32 peer_dsn (1 when the peer took NOTIFY/ORCPT), u32 n,
				    n * (u32 rcpt index, u32 enum ipc_dlv_status, str reply) */

	/* `postern queue|sendmail` (CLI) -> queue; the CLI connects to run/q.sock */
	IPC_Q_ADMIN = 400,       /* u32 enum ipc_q_admin_op, str id ("all" for retry)
				    -> IPC_Q_ADMIN_REPLY u32 enum ipc_q_admin_status, str text */
	IPC_Q_ADMIN_REPLY,
};

/* IPC_DLV_REMOTE policy: RFC 7435 opportunistic TLS and its stricter forms */
enum ipc_tls_policy { IPC_TLS_NONE, IPC_TLS_MAY, IPC_TLS_ENCRYPT, IPC_TLS_VERIFY };
/* IPC_DLV_REMOTE flags */
#define IPC_DLV_SMARTHOST_AUTH 0x1u   /* AUTH with the configured smarthost credentials */
/* IPC_Q_ADMIN */
enum ipc_q_admin_op { IPC_Q_ADMIN_RETRY, IPC_Q_ADMIN_HOLD, IPC_Q_ADMIN_RELEASE,
		      IPC_Q_ADMIN_DELETE };
enum ipc_q_admin_status { IPC_Q_ADMIN_OK, IPC_Q_ADMIN_UNKNOWN_ID, IPC_Q_ADMIN_ERROR };

/* IPC_Q_BEGIN flags */
#define IPC_ENV_SMTPUTF8   0x1u
#define IPC_ENV_8BITMIME   0x2u
/* IPC_Q_*_REPLY status */
enum ipc_q_status { IPC_Q_OK, IPC_Q_TEMPFAIL, IPC_Q_REJECT /* permanent: bad recipient, too big */ };
/* IPC_DLV_REQUEST flags */
#define IPC_DLV_RECOVERED  0x1u

/* DENIED: an access rule (postern access) refuses the IP on this listener;
 * BLOCKED: the IP is blocked for a while after failed logins. */
enum ipc_conn_verdict { IPC_CONN_OK, IPC_CONN_TOO_MANY, IPC_CONN_TOO_MANY_FROM_IP,
			IPC_CONN_DENIED, IPC_CONN_BLOCKED };
/* OVER_QUOTA: every local target's mailbox is full; the reply says whether
 * the operator wants that permanent (mailbox.quota_exceeded = bounce). */
enum ipc_rcpt_result { IPC_RCPT_OK, IPC_RCPT_NO_SUCH_USER, IPC_RCPT_NOT_LOCAL, IPC_RCPT_TEMPFAIL,
		       IPC_RCPT_OVER_QUOTA, IPC_RCPT_OVER_QUOTA_PERM };
/* FAIL covers every refusal the client must not tell apart (wrong password,
 * unknown user, blocked, locked, wrong IP or scope, 2FA); EXPIRED: the
 * password was right but is older than security.password_max_age. */
enum ipc_auth_result { IPC_AUTH_OK, IPC_AUTH_FAIL, IPC_AUTH_TEMPFAIL, IPC_AUTH_EXPIRED };
enum ipc_auth_proto { IPC_PROTO_SMTP, IPC_PROTO_IMAP, IPC_PROTO_POP3 };
enum ipc_dlv_status { IPC_DLV_OK, IPC_DLV_TEMPFAIL, IPC_DLV_PERMFAIL };

/* ---- payload encoding ---- */
struct ipc_writer {
	struct buf b;
};
void ipc_writer_init(struct ipc_writer *w);
void ipc_writer_free(struct ipc_writer *w);
/* These never fail visibly: an over-long payload makes ipc_send() fail. */
void ipc_put_u32(struct ipc_writer *w, uint32_t v);
void ipc_put_u64(struct ipc_writer *w, uint64_t v);
void ipc_put_str(struct ipc_writer *w, const char *s);   /* NULL is encoded as absent */
void ipc_put_bytes(struct ipc_writer *w, const void *data, size_t len);

struct ipc_reader {
	const unsigned char *p;
	size_t left;
	bool error;              /* sticky: set by any read past the end or bad string */
};
uint32_t ipc_get_u32(struct ipc_reader *r);
uint64_t ipc_get_u64(struct ipc_reader *r);
/* Returns a NUL-terminated string inside the payload (valid during the
 * callback), or NULL when absent or on error (check r->error). */
const char *ipc_get_str(struct ipc_reader *r);
/* Bytes: returns a pointer into the payload and its length. */
const void *ipc_get_bytes(struct ipc_reader *r, size_t *len_r);

/* ---- connections ---- */
struct ipc_conn;
typedef void ipc_frame_cb(struct ipc_conn *conn, uint32_t type, uint64_t id,
			  struct ipc_reader *payload, void *ctx);
/* Called once when the peer closes or the connection breaks; the callee
 * must ipc_conn_free() the connection. */
typedef void ipc_close_cb(struct ipc_conn *conn, void *ctx);

struct ipc_conn *ipc_conn_new(struct event_base *base, int fd, ipc_frame_cb *frame_cb,
			      ipc_close_cb *close_cb, void *ctx);
void ipc_conn_free(struct ipc_conn **conn);
void ipc_conn_set_ctx(struct ipc_conn *conn, void *ctx);
void *ipc_conn_ctx(struct ipc_conn *conn);
/* Queues one frame; 0 or -1 (payload too large, or conn NULL/closed). */
int ipc_send(struct ipc_conn *conn, uint32_t type, uint64_t id, const struct ipc_writer *w);
int ipc_send_raw(struct ipc_conn *conn, uint32_t type, uint64_t id, const void *payload,
		 size_t len);
/* Bytes queued for the peer and not yet written (for back-pressure). */
size_t ipc_conn_pending(struct ipc_conn *conn);

/* Creates a listening Unix socket at path (relative to the cwd; replaces a
 * stale one), mode 0600. Returns the fd or -1 with errno. */
int ipc_listen_unix(const char *path);
/* Connects to path, retrying for up to timeout_ms while the peer starts.
 * Returns a non-blocking fd or -1. */
int ipc_connect_unix(const char *path, int timeout_ms);

/* ---- blocking client side, for CLI commands (no event loop) ---- */
/* Writes one whole frame to a blocking fd. 0, or -1 with errno. */
int ipc_sync_send(int fd, uint32_t type, uint64_t id, const struct ipc_writer *w);
/* Reads one whole frame, waiting at most timeout_ms in total. The payload is
 * put in payload_r (buf_init'ed by the caller; replaced). 0, or -1 with
 * errno (ETIMEDOUT, EPROTO for a frame over IPC_FRAME_MAX, ECONNRESET on EOF). */
int ipc_sync_recv(int fd, uint32_t *type_r, uint64_t *id_r, struct buf *payload_r,
		  int timeout_ms);

#endif
