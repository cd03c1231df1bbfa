/*
 * cli.h — the `postern` subcommands other than the account commands
 * (cli-accounts.h).
 */
#ifndef POSTERN_CLI_H
#define POSTERN_CLI_H

#include "lib-config/config.h"

/* Prints "postern: MESSAGE" and a newline to stderr; returns EXIT_FAILURE
 * (for `return cli_fail(...)`). */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Starts the audit log of this command (security.audit_log): when run as
 * root with `user = ...` set, a log file the command creates (after a
 * rotation) is given to that user, so the directory can still append. */
void cli_audit_init(const struct config *cfg);

/* `postern init DIR [options]`; argv[0] = "init". Exit status. */
int cli_init(int argc, char **argv);
/* `postern queue list [--json] | show ID | retry ID|all | hold ID |
 * release ID | delete ID`; argv[0] = "queue". list reads SPOOL_DIR/status.db;
 * retry/hold/release/delete go to the running queue (run/q.sock) or, when
 * it is not running, are applied to the spool and status.db directly.
 * Exit status: 0, 1 (unknown id, failure), 2 (usage). */
int cli_queue(const struct config *cfg, int argc, char **argv);
/* `postern status ADDRESS|ID [--json]`; argv[0] = "status". The delivery
 * status of every recipient with that address (newest first) or of every
 * recipient of that message. Exit status: 0, 1 (nothing found, failure),
 * 2 (usage). */
int cli_status(const struct config *cfg, int argc, char **argv);
/* `postern sendmail [-t] [-i] [-oi] [-v] [-f SENDER] [-F FULLNAME] [RCPT...]`,
 * or the binary run through a link named "sendmail"; argv[0] is "sendmail"
 * (or that link's path). Reads the message from stdin, loads the config
 * from config_path itself and submits to the running queue. Returns a
 * sysexits.h status: 0 queued (fsync'ed), 64 usage, 65 data error (no or
 * unknown recipients, bad address, too big), 75 queue unreachable or
 * refusing, 78 bad config, 70 internal. */
int cli_sendmail(const char *config_path, int argc, char **argv);
/* `postern access allow|deny|del CIDR [--listener KIND] | list`; 0, 1, 2 (usage). */
int cli_access(const struct config *cfg, int argc, char **argv);
/* `postern security blocked | unblock IP|ADDRESS | log [--address A] [--since T] [--json]`. */
int cli_security(const struct config *cfg, int argc, char **argv);
/* `postern tls add CERTFILE KEYFILE | tls show` (cli-tls.c); argv[0] = "tls". */
int cli_tls(const struct config *cfg, int argc, char **argv);
/* `postern reload`: SIGHUP to the master in DATA/run/master.pid; 1 when not running. */
int cli_reload(const struct config *cfg, int argc, char **argv);

#endif
