/*
 * imap-private.h — internals of the IMAP half of the imapd worker
 * (RFC 9051 IMAP4rev2, RFC 3501 IMAP4rev1 and the extensions listed in
 * imap-commands.c): the session, the command table, the command context
 * that a command's steps share, and the functions the imap-*.c files call
 * in each other.
 *
 * Threads: before login every command runs on the worker's loop thread.
 * After login every command runs on a workpool thread (a "job"), one job
 * per session at a time, while the session is parked (not reading). A job
 * touches only its session's command, output buffer (s->out), store, view
 * and enabled-extension flags; the loop thread touches none of those while
 * s->job_running. Replies written by a job reach the socket when the job's
 * done() runs on the loop. Long commands run in chunks (see imap_chunk_full).
 */
#ifndef POSTERN_IMAP_PRIVATE_H
#define POSTERN_IMAP_PRIVATE_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "imapd/imapd.h"
#include "lib/buf.h"
#include "lib/workpool.h"
#include "lib-imap/imap-parser.h"
#include "lib-imap/imap-seqset.h"
#include "lib-store/mstore.h"

struct bufferevent;
struct event;
struct imap_session;
struct imap_cmd;

/* A job stops after this much output or this many messages; the next
 * chunk starts when the socket's output drained below IMAP_OUT_LOW. */
#define IMAP_CHUNK_BYTES   (256u * 1024)
#define IMAP_CHUNK_MSGS    200u
#define IMAP_OUT_LOW       (128u * 1024)
/* The job's output buffer: a chunk plus one FETCH item (items larger than
 * a literal piece are streamed across chunks). */
#define IMAP_OUT_MAX       (8u * 1024 * 1024)
/* Pending socket output above which no more commands are read. */
#define IMAP_SOCKET_OUT_MAX (512u * 1024)
/* A streamed literal is read from the file in pieces of this size. */
#define IMAP_STREAM_PIECE  (64u * 1024)
/* Literals before login (LOGIN with a literal password). */
#define IMAP_PREAUTH_LITERAL_MAX 8192u
/* APPEND literals kept in memory per command before they go to a file. */
#define IMAP_APPEND_MEM_MAX (4u * 1024 * 1024)
/* An AUTHENTICATE continuation or IDLE "DONE" line. */
#define IMAP_AUX_LINE_MAX  8192u
/* Poll for changes during IDLE even when inotify is there (NFS, other tools). */
#define IMAP_IDLE_POLL_SECS 30

enum imap_state {
	IMAP_STATE_CONNECT,     /* waiting for the directory's connection verdict */
	IMAP_STATE_NOTAUTH,
	IMAP_STATE_AUTH,
	IMAP_STATE_SELECTED,
	IMAP_STATE_LOGOUT,      /* closing after the last reply is written */
};
#define IMAP_ST(x) (1u << (x))
#define IMAP_ST_ANY      (IMAP_ST(IMAP_STATE_NOTAUTH) | IMAP_ST(IMAP_STATE_AUTH) | \
			  IMAP_ST(IMAP_STATE_SELECTED))
#define IMAP_ST_NOTAUTH  IMAP_ST(IMAP_STATE_NOTAUTH)
#define IMAP_ST_AUTHED   (IMAP_ST(IMAP_STATE_AUTH) | IMAP_ST(IMAP_STATE_SELECTED))
#define IMAP_ST_SELECTED IMAP_ST(IMAP_STATE_SELECTED)

/* Command table flags */
#define IMAP_CMD_NOEXPUNGE 0x01u  /* the sync after it sends no EXPUNGE (RFC 9051 7.5.1) */
#define IMAP_CMD_NOSYNC    0x02u  /* no sync after it (SELECT: it reported the new view) */
#define IMAP_CMD_LOOP      0x04u  /* runs on the loop even after login (IDLE) */

struct imap_command {
	const char *name;          /* upper case, "UID FETCH" for UID forms */
	unsigned states;           /* IMAP_ST_* where it is allowed */
	unsigned flags;
	/* On the loop thread: parses and checks the arguments into cmd->priv.
	 * 0: go on with run; -1: answered (imap_cmd_bad/no), nothing to run. */
	int (*check)(struct imap_cmd *cmd);
	/* On a pool thread after login, on the loop before. Writes untagged
	 * responses with imap_out*(), and ends the command with
	 * imap_cmd_ok/no/bad(); returning without ending it means "call me
	 * again for the next chunk". */
	void (*run)(struct imap_cmd *cmd);
};

enum imap_status { IMAP_OK, IMAP_NO, IMAP_BAD };

struct imap_cmd {
	struct imap_session *s;
	const struct imap_command *def;
	char *tag;
	const struct imap_arg *args;   /* the parser's; valid until the command ends */
	unsigned nargs;
	bool uid;                      /* a UID command */
	bool finished;
	enum imap_status status;
	char result[512];              /* text after "tag OK " */
	char *result_long;  /* malloc'ed tagged text longer than result, or NULL */
	void *priv;                    /* the command's own state */
	void (*priv_free)(void *priv);
	unsigned chunk_msgs;           /* messages done in the current chunk */
	bool expunge_issued;           /* a message was gone: NO [EXPUNGEISSUED] at the end */
	bool tagged_written;
};

/* Where the session's job is in its life. */
struct imap_job {
	struct workpool_job job;
	struct imap_session *s;
	void (*run)(struct imap_session *s);    /* pool thread */
	void (*done)(struct imap_session *s);   /* loop thread */
};

/* APPEND: literals that went to a temporary file (see imap-mailbox.c). */
struct imap_append_spool {
	int fd;                        /* -1: none */
	uint64_t size;                 /* bytes written */
	uint64_t offsets[64];          /* start of each sunk literal in the file */
	uint64_t sizes[64];
	unsigned count;
	uint64_t mem_total;            /* literal bytes kept in memory by the parser */
	char failed_text[160];         /* a sink failure, answered as NO */
};

struct imap_session {
	struct imap_session *prev, *next;
	struct imapd *server;
	uint64_t id;
	enum listener_kind kind;
	char ip[64];
	struct bufferevent *bev;
	SSL *ssl;
	bool tls;
	bool tls_pending;              /* STARTTLS handshake running */
	struct event *close_ev;
	unsigned close_polls;
	enum imap_state state;
	struct imap_parser *parser;
	struct imapd_dir_wait *dir_wait;
	bool counted;                  /* the directory counted the connection */
	bool login_counted;            /* ... and the login (per-account limit) */

	/* authentication */
	char *user;                    /* canonical, after login */
	char *mech;                    /* "LOGIN", "PLAIN" */
	char root[1024];
	uint64_t quota_bytes;
	uint64_t quota_messages;
	unsigned auth_failures;
	unsigned errors;               /* consecutive BADs */
	bool auth_continue;            /* AUTHENTICATE PLAIN waiting for the "+" line */

	/* enabled behaviour (RFC 5161 ENABLE) */
	bool rev2;
	bool condstore;                /* enabled explicitly or by a CONDSTORE command */
	bool qresync;
	bool utf8;                     /* mailbox names in UTF-8 (rev2) */

	/* the store: used only by this session's job (or the loop when no job runs) */
	struct mstore *store;
	struct mbox *mbox;
	bool readonly;
	struct imap_seqset saved;      /* SEARCHRES "$": UIDs */
	bool saved_valid;

	/* the current command; the parser's arguments stay valid until it ends */
	struct imap_cmd *cmd;
	bool busy;                     /* a command (or login) is in progress */
	bool job_running;
	bool job_again;                /* another chunk wanted when output drains */
	bool free_pending;             /* free as soon as the job is done */
	bool output_blocked;
	bool logout;                   /* LOGOUT ran: close after its reply */
	bool logout_on_end;            /* SIGTERM while busy: BYE after this command */
	bool starttls_after;           /* STARTTLS ran: start TLS after its reply */
	struct imap_job job;
	struct buf out;                /* responses written by the command (job) */
	struct imap_append_spool spool;

	/* IDLE */
	bool idling;
	bool idle_done;                /* DONE came while a sync job ran */
	bool idle_sync_again;          /* a change was signalled while a sync ran */
	struct event *idle_watch_ev;
	struct event *idle_poll_ev;

	uint64_t bytes_in, bytes_out;
};

#define IMAP_SID(s) ((unsigned long long)(s)->id)

/* ---- imap-session.c ---- */
/* Output of the current command / job (s->out). -1 when it is full. */
int imap_out(struct imap_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int imap_out_raw(struct imap_session *s, const void *data, size_t len);
/* True when the job should stop and let the output drain (chunking). */
bool imap_chunk_full(const struct imap_cmd *cmd);
/* Ends the command with its tagged response. */
void imap_cmd_ok(struct imap_cmd *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void imap_cmd_no(struct imap_cmd *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void imap_cmd_bad(struct imap_cmd *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* NO with the response code of the store's last error (or [SERVERBUG]). */
void imap_cmd_store_error(struct imap_cmd *cmd, const char *what);
/* NO [SERVERBUG] with a log id; detail goes to the log. */
void imap_cmd_serverbug(struct imap_cmd *cmd, const char *detail);
/* Runs fn on the pool for the session, done on the loop after. */
void imap_session_submit(struct imap_session *s, void (*run)(struct imap_session *s),
			 void (*done)(struct imap_session *s));
/* Writes s->out to the socket (loop thread only). */
void imap_session_flush(struct imap_session *s);
void imap_session_close(struct imap_session *s);
/* Reads and runs the next commands (after an asynchronous end). */
void imap_session_resume(struct imap_session *s);
/* Ends the command (loop thread): tagged reply written, parser reset, read
 * the next one. */
void imap_session_command_end(struct imap_session *s);
int imap_session_start_tls(struct imap_session *s);
/* Parser literal handling for APPEND (imap-mailbox.c). 0 accepted, -1
 * refused (answered). */
int imap_append_literal(struct imap_session *s, const struct imap_literal_info *info);
void imap_append_spool_reset(struct imap_session *s);

/* ---- imap-commands.c ---- */
const struct imap_command *imap_command_find(const char *name);
/* Writes the capability list for the current state (no CRLF). */
void imap_capabilities(const struct imap_session *s, struct buf *out);
/* The directory answered an AUTH request / login done (imap-commands.c). */
void imap_auth_line(struct imap_session *s, const char *line, size_t len);
/* Mailbox name argument -> UTF-8 name for the store (malloc'ed) or NULL. */
char *imap_mailbox_arg(const struct imap_session *s, const struct imap_arg *arg);
/* UTF-8 store name -> the wire (quoted/literal), appended to out. */
int imap_write_mailbox(const struct imap_session *s, struct buf *out, const char *name);

/* ---- imap-select.c ---- */
/* Sends pending changes of the selected folder (EXPUNGE/VANISHED, EXISTS,
 * RECENT, FETCH FLAGS). Pool thread (or loop when no job runs). */
int imap_sync(struct imap_session *s, bool allow_expunge);
/* Closes the selected view (UNSELECT semantics). */
void imap_unselect(struct imap_session *s);
/* IDLE (loop thread): "DONE" line arrived. */
void imap_idle_input(struct imap_session *s, const char *line, size_t len);
void imap_idle_stop(struct imap_session *s);
/* One untagged FETCH of flags for seq (with UID under UID commands / QRESYNC,
 * MODSEQ under CONDSTORE). */
int imap_write_flags_fetch(struct imap_session *s, uint32_t seq, const struct mstore_msg *msg,
			   bool with_uid);
/* Parses a sequence set argument, resolving "*" and "$" for the selected
 * view: for uid=false the numbers are sequence numbers. 0 or -1 (answered). */
int imap_parse_set(struct imap_cmd *cmd, const struct imap_arg *arg, bool uid,
		   struct imap_seqset *set_r);
/* Pool thread: the sequence numbers of the view's messages in set (UIDs
 * when uid, "$" = the saved result), ascending, malloc'ed (NULL when
 * none). Resolves "*" in set. 0, or -1 (answered BAD for numbers beyond
 * the mailbox, or out of memory). */
int imap_set_to_seqs(struct imap_cmd *cmd, struct imap_seqset *set, bool uid, uint32_t **seqs_r,
		     uint32_t *n_r);
/* priv_free for a malloc'ed struct imap_seqset. */
void imap_seqset_priv_free(void *p);

/* The command functions, by file. */
int imap_cmd_select_check(struct imap_cmd *cmd);
void imap_cmd_select_run(struct imap_cmd *cmd);
void imap_cmd_close_run(struct imap_cmd *cmd);
void imap_cmd_unselect_run(struct imap_cmd *cmd);
int imap_cmd_expunge_check(struct imap_cmd *cmd);
void imap_cmd_expunge_run(struct imap_cmd *cmd);
void imap_cmd_check_run(struct imap_cmd *cmd);
int imap_cmd_idle_check(struct imap_cmd *cmd);

int imap_cmd_create_check(struct imap_cmd *cmd);
void imap_cmd_create_run(struct imap_cmd *cmd);
void imap_cmd_delete_run(struct imap_cmd *cmd);
int imap_cmd_rename_check(struct imap_cmd *cmd);
void imap_cmd_rename_run(struct imap_cmd *cmd);
void imap_cmd_subscribe_run(struct imap_cmd *cmd);
void imap_cmd_unsubscribe_run(struct imap_cmd *cmd);
int imap_cmd_mailbox_check(struct imap_cmd *cmd);
int imap_cmd_list_check(struct imap_cmd *cmd);
void imap_cmd_list_run(struct imap_cmd *cmd);
int imap_cmd_lsub_check(struct imap_cmd *cmd);
int imap_cmd_status_check(struct imap_cmd *cmd);
void imap_cmd_status_run(struct imap_cmd *cmd);
int imap_cmd_append_check(struct imap_cmd *cmd);
void imap_cmd_append_run(struct imap_cmd *cmd);
int imap_cmd_getquota_check(struct imap_cmd *cmd);
void imap_cmd_getquota_run(struct imap_cmd *cmd);
int imap_cmd_getquotaroot_check(struct imap_cmd *cmd);
void imap_cmd_getquotaroot_run(struct imap_cmd *cmd);
int imap_cmd_setquota_check(struct imap_cmd *cmd);

int imap_cmd_fetch_check(struct imap_cmd *cmd);
void imap_cmd_fetch_run(struct imap_cmd *cmd);
int imap_cmd_store_check(struct imap_cmd *cmd);
void imap_cmd_store_run(struct imap_cmd *cmd);

int imap_cmd_search_check(struct imap_cmd *cmd);
void imap_cmd_search_run(struct imap_cmd *cmd);

int imap_cmd_copy_check(struct imap_cmd *cmd);
void imap_cmd_copy_run(struct imap_cmd *cmd);

#endif
