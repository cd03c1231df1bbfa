/*
 * imapd.h — the imapd worker process: IMAP (RFC 9051, RFC 3501) and POP3
 * (RFC 1939) sessions on the imap, imaps, pop3 and pop3s listeners the
 * master bound. Unprivileged (the run user, who owns the Maildirs); one
 * libevent loop per worker, one worker per core.
 *
 * Passwords are checked by the directory process (IPC_DIR_AUTH), never
 * here; connections are counted there too (IPC_DIR_CONNECT). Mailbox work
 * that can take long (MIME parsing, reading many files, SEARCH over
 * bodies) runs on the worker's workpool threads in bounded chunks while
 * the session is parked, so one client never stalls the others.
 *
 * This header is what the IMAP and POP3 halves of the process share.
 */
#ifndef POSTERN_IMAPD_H
#define POSTERN_IMAPD_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "lib/ipc.h"
#include "lib-config/config.h"

struct event_base;
struct event;
struct workpool;
struct tls_set;

struct imapd_listener {
	int fd;
	enum listener_kind kind;   /* LISTENER_IMAP, _IMAPS, _POP3, _POP3S */
};

/* tls: the contexts the master loaded (the worker takes a reference). */
int imapd_main(const struct config *cfg, struct tls_set *tls,
	       const struct imapd_listener *listeners, unsigned count);

/* A request to the directory waiting for its IPC_DIR_REPLY. */
typedef void imapd_dir_reply_cb(void *ctx, struct ipc_reader *reply);
struct imapd_dir_wait {
	struct imapd_dir_wait *next;
	uint64_t id;
	imapd_dir_reply_cb *cb;    /* NULL: cancelled (the session went away) */
	void *ctx;
	char key[320];             /* IPC_DIR_CONNECT's ip, IPC_DIR_LOGIN's user: to
				      give a late slot back */
	uint32_t type;
};

struct imapd {
	struct event_base *base;
	const struct config *cfg;
	struct tls_set *tls;
	struct ipc_conn *dir;
	struct workpool *pool;
	struct imapd_dir_wait *waits;
	uint64_t next_id;
	unsigned nsessions;
	struct event *reconnect_ev;
	bool stopping;
};

/*
 * Sends a request to the directory; cb(ctx, reply) runs when the reply
 * comes, or cb(ctx, NULL) when the directory is gone. Returns a handle for
 * imapd_dir_cancel() (a session freed while waiting), or NULL when the
 * directory is not connected (the caller answers with a temporary error).
 */
struct imapd_dir_wait *imapd_dir_request(struct imapd *server, uint32_t type,
					 const struct ipc_writer *w, imapd_dir_reply_cb *cb,
					 void *ctx);
void imapd_dir_cancel(struct imapd *server, struct imapd_dir_wait *wait);

/* Asks the directory whether a client at ip may connect to a listener of
 * the given kind (IPC_DIR_CONNECT: str ip, u32 kind; reply u32 enum
 * ipc_conn_verdict). Returns as imapd_dir_request(). */
struct imapd_dir_wait *imapd_connect_request(struct imapd *server, const char *ip,
					     enum listener_kind kind, imapd_dir_reply_cb *cb,
					     void *ctx);

/* Counting an account's sessions (imap.max_connections_per_user, in the
 * directory): after a successful login, imapd_login_count() asks for a
 * slot (reply u32 enum ipc_conn_verdict, as imapd_dir_request()); a
 * session that got IPC_CONN_OK calls imapd_login_uncount() when it ends. */
struct imapd_dir_wait *imapd_login_count(struct imapd *server, const char *user,
					 imapd_dir_reply_cb *cb, void *ctx);
void imapd_login_uncount(struct imapd *server, const char *user);

/* The Maildir root of a canonical user address: MAIL_DIR/<domain>/<local>. */
int imapd_user_root(const struct imapd *server, const char *user, char *out, size_t size);

/* Called by a session when it ends (for the stop logic). The accept
 * callback counts the session (nsessions++) before *_session_create(); the
 * session calls this exactly once when it ends, also when its creation
 * fails. */
void imapd_session_gone(struct imapd *server);

/* Session entry points (imap-session.c, pop3-session.c). */
void imap_session_create(struct imapd *server, int fd, enum listener_kind kind, const char *ip);
void pop3_session_create(struct imapd *server, int fd, enum listener_kind kind, const char *ip);

/* imap-session.c: SIGTERM — idle IMAP sessions get "* BYE" and close, busy
 * ones close after their command. imap_sessions_free_all() frees whatever
 * is left when the loop has ended (after the workpool was freed). */
void imap_sessions_stop(struct imapd *server);
void imap_sessions_free_all(struct imapd *server);
/* pop3-session.c: SIGTERM — idle POP3 sessions close without UPDATE (RFC
 * 1939: nothing is deleted), busy ones after their command. */
void pop3_sessions_stop(struct imapd *server);

#endif
