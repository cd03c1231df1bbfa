/*
 * master.h — the master process of `postern serve`.
 */
#ifndef POSTERN_MASTER_H
#define POSTERN_MASTER_H

#include "lib-config/config.h"

/* Binds the listeners, forks and supervises the children, reloads on
 * SIGHUP, stops gracefully on SIGTERM. Takes ownership of cfg. Returns the
 * exit status. */
int master_serve(struct config *cfg);

#endif
