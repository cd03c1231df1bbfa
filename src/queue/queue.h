/*
 * queue.h — the queue process: the only writer of the spool.
 */
#ifndef POSTERN_QUEUE_H
#define POSTERN_QUEUE_H

#include "lib-config/config.h"

/* Runs the queue process until SIGTERM; returns the exit status. The caller
 * (master) has chdir'ed to the data directory and dropped privileges. */
int queue_main(const struct config *cfg);

#endif
