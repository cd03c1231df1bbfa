/*
 * cli.h — the `postern` subcommands other than the account commands
 * (cli-accounts.h).
 */
#ifndef POSTERN_CLI_H
#define POSTERN_CLI_H

#include "lib-config/config.h"

/* `postern init DIR [options]`; argv[0] = "init". Exit status. */
int cli_init(int argc, char **argv);
/* `postern queue list | show ID | delete ID`; argv[0] = "queue". */
int cli_queue(const struct config *cfg, int argc, char **argv);

#endif
