/*
 * queue-private.h — what the queue process's source files share: the
 * message and recipient records, destinations and remote jobs.
 *
 *   queue.c         process, spool commits (group commit), local delivery,
 *                   recovery, the status store
 *   queue-remote.c  remote delivery scheduling: destinations with
 *                   concurrency and rate limits, retries, expiry, the
 *                   administration requests of `postern queue`
 *   queue-bounce.c  delivery status notifications (RFC 3464) written back
 *                   into the spool
 */
#ifndef POSTERN_QUEUE_PRIVATE_H
#define POSTERN_QUEUE_PRIVATE_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "lib-config/config.h"
#include "lib-queue/qstatus.h"
#include "lib-queue/spool.h"
#include "lib/ipc.h"
#include "lib/workpool.h"

#define QUEUE_HASH_SIZE      4096u
#define QUEUE_DEST_HASH      256u
#define QUEUE_DLV_INFLIGHT   64u       /* local deliveries in flight */
#define QUEUE_JOB_RCPTS      100u      /* recipients per SMTP transaction */
#define QUEUE_LOCAL_RETRY_MIN 30u      /* seconds: local delivery, doubled per attempt */
#define QUEUE_LOCAL_RETRY_MAX 3600u

enum rcpt_state {
	RCPT_PENDING,   /* waiting for next_attempt */
	RCPT_INFLIGHT,  /* handed to the deliverer (local) or in a remote job */
	RCPT_DONE,      /* delivered */
	RCPT_FAILED,    /* bounced, expired, or dropped (message deleted) */
};

struct queue_rcpt {
	unsigned char state;            /* enum rcpt_state */
	unsigned char final;            /* enum qstatus_state once DONE/FAILED */
	bool reported;                  /* a DSN already covers this final state */
	bool peer_dsn;                  /* the next hop took NOTIFY: it reports success */
	unsigned attempts;
	time_t next_attempt;
	char *last_reply;
	char *remote_host;
};

struct queue_msg {
	struct queue_msg *id_next;      /* hash chain by id */
	struct queue_msg *txn_next;     /* hash chain by (conn, request id) while receiving */
	struct queue_msg *run_next;     /* local ready list / commit batch */
	char id[17];
	struct spool_envelope *env;
	struct spool_writer *writer;
	struct ipc_conn *owner;         /* smtpd connection while receiving */
	uint64_t reqid;
	uint64_t size;                  /* spool file size */
	uint64_t received;              /* body bytes so far, for local users' size limit */
	bool local_user;                /* from run/submit.sock */
	bool too_big;
	bool failed;                    /* a write error happened while receiving */
	bool committing;
	bool committed;
	bool recovered;
	bool ready;                     /* on the local ready list */
	bool held;
	bool deleted;                   /* the operator removed it; results are dropped */
	bool delay_notified;
	bool bounce_pending;            /* final, but its notice could not be written yet */
	time_t bounce_retry_at;
	unsigned jobs;                  /* remote jobs queued or in flight */
	struct queue_rcpt *rcpts;
};

struct queue_job {
	struct queue_job *next;
	struct queue_msg *m;
	struct queue_dest *dest;
	uint64_t reqid;
	time_t sent_at;                 /* handed to the deliverer */
	unsigned n;
	uint32_t idx[QUEUE_JOB_RCPTS];
};

/* A destination domain: its operator policy, its running jobs and a FIFO of
 * jobs waiting for a connection slot or for the rate limit. */
struct queue_dest {
	struct queue_dest *hash_next, *active_next;
	char domain[256];
	unsigned inflight;
	unsigned limit;
	unsigned rate;                  /* messages per minute; 0: none */
	enum tls_policy tls;
	const char *route;              /* smarthost "HOST:PORT" or NULL */
	uint64_t next_send_ms;          /* monotonic; rate limit */
	struct queue_job *head, *tail;
	bool active;
};

struct queue_sender {
	struct queue_sender *next;
	uint64_t next_send_ms;
	char key[];
};

struct queue_peer {
	struct queue_peer *next;
	struct ipc_conn *conn;
	bool deliverer;
	bool local_user;                /* from run/submit.sock: untrusted */
	char local_name[64];            /* "local:NAME" from the peer's uid */
};

struct queue {
	struct event_base *base;
	const struct config *cfg;
	struct queue_msg *by_id[QUEUE_HASH_SIZE];
	struct queue_msg *by_txn[QUEUE_HASH_SIZE];
	struct queue_peer *peers;
	struct ipc_conn *deliverer;
	unsigned inflight;              /* local deliveries in flight */
	struct queue_msg *ready_head, *ready_tail;
	size_t nmsgs;

	/* remote delivery */
	struct queue_dest *dests[QUEUE_DEST_HASH];
	struct queue_dest *active;      /* destinations with waiting jobs */
	struct queue_job *running;      /* jobs sent to the deliverer */
	struct queue_sender *senders[QUEUE_DEST_HASH];
	uint64_t next_reqid;
	struct event *pump_ev;          /* wakes the pump when a rate limit allows */

	/* status store: changes are batched into one transaction per loop turn */
	struct qstatus *status;
	struct event *status_flush_ev;
	bool status_dirty;
	struct account_db *accounts;    /* read-only: where bounces go */

	/* group commit: one batch at a time on a one-thread pool */
	struct queue_msg *gather;       /* ENDed, waiting for the next batch */
	struct queue_commit {
		struct workpool_job job;
		struct queue *q;
		struct queue_msg *batch;    /* the thread's while busy */
		bool busy;
	} commit;
	struct workpool *pool;

	/* Spool files of finished messages are unlinked on their own thread,
	 * after the status store has recorded them finished (an unlink can
	 * block for a while: journal, discard). */
	struct queue_unlink {
		struct workpool_job job;
		struct queue *q;
		char (*ids)[17];        /* the thread's batch while busy */
		size_t n, cap;
		bool busy;
	} unlink;
	char (*unlink_ids)[17];         /* waiting for the next batch */
	size_t unlink_n, unlink_cap;
	struct workpool *unlink_pool;

	struct event *listen_ev, *timer_ev, *submit_ev;
	int listen_fd, submit_fd;
	time_t last_purge;
	bool stopping;
};

/* queue.c */
struct queue_msg *queue_find_id(struct queue *q, const char *id);
struct queue_msg *queue_msg_new(struct queue *q, struct spool_envelope *env);
void queue_make_ready(struct queue *q, struct queue_msg *m);
/* Opens a status transaction for this loop turn (committed right after). */
struct qstatus *queue_status(struct queue *q);
/* Stores recipient i's state in the status store. */
void queue_status_rcpt(struct queue *q, struct queue_msg *m, size_t i, const char *tls);
/* When every recipient is final and nothing is in flight: notices, spool
 * file removed, status finished, message freed. Returns true when freed. */
bool queue_msg_check_done(struct queue *q, struct queue_msg *m);
/* Schedules a temporary failure of recipient i: retry later or expire. */
void queue_rcpt_defer(struct queue *q, struct queue_msg *m, size_t i, const char *reply,
		      unsigned retry_min, unsigned retry_max);
/* Makes recipient i final (RCPT_DONE/RCPT_FAILED with final state). */
void queue_rcpt_final(struct queue *q, struct queue_msg *m, size_t i, enum qstatus_state st,
		      const char *reply, const char *remote_host, const char *tls);

/* queue-remote.c */
bool queue_rcpt_is_remote(const struct queue_msg *m, size_t i);
/* Puts the due remote recipients of m into destination jobs. */
void queue_schedule_remote(struct queue *q, struct queue_msg *m, time_t now);
/* Sends waiting jobs within the limits. */
void queue_pump(struct queue *q);
void queue_remote_result(struct queue *q, uint64_t reqid, struct ipc_reader *r);
/* The deliverer went away: running jobs go back to pending. */
void queue_remote_reset(struct queue *q);
/* Drops m's waiting jobs (message deleted or held). */
void queue_remote_unschedule(struct queue *q, struct queue_msg *m);
void queue_admin(struct queue *q, struct ipc_conn *conn, uint64_t reqid, struct ipc_reader *r);
void queue_remote_free(struct queue *q);
/* Once a second: jobs without a result for far too long are given up
 * (their recipients deferred), idle destination records are dropped. */
void queue_remote_tick(struct queue *q, time_t now);

/* queue-bounce.c */
/* Sends the notices m's recipients ask for: failures (and successes with
 * NOTIFY=SUCCESS) when final is true, else a delay notice. Never to the
 * null sender. 0 when the notice is durably queued (or none was due), -1
 * when it could not be written (recipients are marked reported only on
 * success, so a later call tries again). */
int queue_bounce(struct queue *q, struct queue_msg *m, bool final);

#endif
