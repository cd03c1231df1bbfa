/*
 * workpool.h — a small thread pool whose results come back to a libevent
 * loop: blocking work (argon2id checks, fsync, Maildir writes) runs on the
 * pool's threads, and each job's completion callback runs on the loop
 * thread, so the loop never blocks and the callbacks need no locks.
 *
 * Jobs are intrusive: embed struct workpool_job in your own struct and
 * recover it with a container cast in the callbacks.
 */
#ifndef POSTERN_WORKPOOL_H
#define POSTERN_WORKPOOL_H

#include <stddef.h>

struct event_base;
struct workpool;

struct workpool_job {
	struct workpool_job *next;                  /* the pool's */
	void (*run)(struct workpool_job *job);      /* on a pool thread */
	void (*done)(struct workpool_job *job);     /* later, on the loop thread */
};

/* Starts nthreads threads (they block all signals). NULL with *error_r. */
struct workpool *workpool_new(struct event_base *base, unsigned nthreads,
			      const char **error_r);
/* Queues a job; run() and then done() will be called exactly once, unless
 * the pool is freed first (see workpool_free). */
void workpool_submit(struct workpool *pool, struct workpool_job *job);
/* Jobs submitted whose done() has not run yet. */
size_t workpool_pending(const struct workpool *pool);
unsigned workpool_threads(const struct workpool *pool);
/*
 * Stops the pool: running jobs finish and get their done() now (they may
 * still call workpool_submit()); jobs not started are handed to drop()
 * instead (NULL: just forgotten).
 */
void workpool_free(struct workpool **pool, void (*drop)(struct workpool_job *job));

#endif
