/*
 * workpool.c — thread pool with completions on the event loop (workpool.h).
 * Used by the directory (password checks), the deliverer (Maildir writes)
 * and the queue (group-commit fsyncs).
 */
#include "lib/workpool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include <event2/event.h>

#define WORKPOOL_MAX_THREADS 32

struct workpool {
	pthread_mutex_t lock;           /* guards todo, done, stop */
	pthread_cond_t cond;
	struct workpool_job *todo, **todo_tail;
	struct workpool_job *done, **done_tail;
	bool stop;
	int done_fd;                    /* eventfd: threads -> loop */
	struct event *done_ev;
	size_t pending;                 /* loop thread only */
	pthread_t threads[WORKPOOL_MAX_THREADS];
	unsigned nthreads;
};

static void *workpool_thread(void *arg)
{
	struct workpool *pool = arg;
	pthread_mutex_lock(&pool->lock);
	for (;;) {
		while (!pool->stop && pool->todo == NULL)
			pthread_cond_wait(&pool->cond, &pool->lock);
		if (pool->stop)
			break;
		struct workpool_job *job = pool->todo;
		if ((pool->todo = job->next) == NULL)
			pool->todo_tail = &pool->todo;
		pthread_mutex_unlock(&pool->lock);

		job->run(job);

		pthread_mutex_lock(&pool->lock);
		job->next = NULL;
		*pool->done_tail = job;
		pool->done_tail = &job->next;
		uint64_t one = 1;
		ssize_t ret = write(pool->done_fd, &one, sizeof(one));
		(void)ret; /* EAGAIN: the counter is already non-zero */
	}
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

/* Runs the completions, in the order the jobs finished. */
static void workpool_reap(struct workpool *pool)
{
	pthread_mutex_lock(&pool->lock);
	struct workpool_job *job = pool->done;
	pool->done = NULL;
	pool->done_tail = &pool->done;
	pthread_mutex_unlock(&pool->lock);
	while (job != NULL) {
		struct workpool_job *next = job->next;
		pool->pending--;
		job->done(job);
		job = next;
	}
}

static void workpool_done_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t n;
	(void)what;
	ssize_t ret = read(fd, &n, sizeof(n));
	(void)ret;
	workpool_reap(arg);
}

struct workpool *workpool_new(struct event_base *base, unsigned nthreads, const char **error_r)
{
	struct workpool *pool = calloc(1, sizeof(*pool));
	if (pool == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	if (nthreads == 0)
		nthreads = 1;
	if (nthreads > WORKPOOL_MAX_THREADS)
		nthreads = WORKPOOL_MAX_THREADS;
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->cond, NULL);
	pool->todo_tail = &pool->todo;
	pool->done_tail = &pool->done;
	pool->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (pool->done_fd < 0) {
		*error_r = "eventfd failed";
		goto fail;
	}
	pool->done_ev = event_new(base, pool->done_fd, EV_READ | EV_PERSIST, workpool_done_cb,
				  pool);
	if (pool->done_ev == NULL || event_add(pool->done_ev, NULL) < 0) {
		*error_r = "cannot watch the completion eventfd";
		goto fail;
	}
	/* Threads get no signals: the loop thread handles them. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	while (pool->nthreads < nthreads &&
	       pthread_create(&pool->threads[pool->nthreads], NULL, workpool_thread, pool) == 0)
		pool->nthreads++;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (pool->nthreads == 0) {
		*error_r = "cannot start threads";
		goto fail;
	}
	return pool;
fail:
	workpool_free(&pool, NULL);
	return NULL;
}

void workpool_submit(struct workpool *pool, struct workpool_job *job)
{
	job->next = NULL;
	pool->pending++;
	pthread_mutex_lock(&pool->lock);
	*pool->todo_tail = job;
	pool->todo_tail = &job->next;
	pthread_cond_signal(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
}

size_t workpool_pending(const struct workpool *pool)
{
	return pool->pending;
}

unsigned workpool_threads(const struct workpool *pool)
{
	return pool->nthreads;
}

void workpool_free(struct workpool **poolp, void (*drop)(struct workpool_job *job))
{
	struct workpool *pool = *poolp;
	if (pool == NULL)
		return;
	/* *poolp stays valid while completions run: they may submit more,
	 * which is then dropped below. */
	pthread_mutex_lock(&pool->lock);
	pool->stop = true;
	pthread_cond_broadcast(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
	for (unsigned i = 0; i < pool->nthreads; i++)
		pthread_join(pool->threads[i], NULL);
	workpool_reap(pool);
	while (pool->todo != NULL) {
		struct workpool_job *job = pool->todo;
		pool->todo = job->next;
		if (drop != NULL)
			drop(job);
	}
	*poolp = NULL;
	if (pool->done_ev != NULL)
		event_free(pool->done_ev);
	if (pool->done_fd >= 0)
		close(pool->done_fd);
	pthread_mutex_destroy(&pool->lock);
	pthread_cond_destroy(&pool->cond);
	free(pool);
}
