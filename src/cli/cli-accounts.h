/*
 * cli-accounts.h — `postern domain`, `postern user` and `postern alias`:
 * managing the account database from the command line.
 *
 * Each takes the loaded config (for db_path) and the arguments starting at
 * the subcommand name (argv[0] is "domain", "user" or "alias"), and returns
 * the process exit status: 0 done, 1 failed (one line "postern: reason" on
 * stderr), 2 usage error (usage on stderr).
 */
#ifndef POSTERN_CLI_ACCOUNTS_H
#define POSTERN_CLI_ACCOUNTS_H

struct config;

/* domain add|del DOMAIN, domain list */
int cli_domain(const struct config *cfg, int argc, char **argv);
/* user add|passwd ADDRESS [--password-stdin], user del ADDRESS, user list [DOMAIN] */
int cli_user(const struct config *cfg, int argc, char **argv);
/* alias add ALIAS TARGET[,TARGET...] [TARGET...], alias del ALIAS, alias list */
int cli_alias(const struct config *cfg, int argc, char **argv);

#endif
