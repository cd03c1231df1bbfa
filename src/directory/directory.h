/*
 * directory.h — entry point of the directory process.
 *
 * The directory owns the account database (users, domains, aliases,
 * password checks) and the live connection counts of every smtpd worker
 * (total and per client IP). smtpd workers reach it only through the
 * IPC_DIR_* frames of lib/ipc.h on DATA/run/dir.sock.
 */
#ifndef POSTERN_DIRECTORY_H
#define POSTERN_DIRECTORY_H

struct config;

/*
 * Runs the directory until SIGTERM/SIGINT. The master has already chdir'ed
 * to cfg->data_dir, created run/ (0700), dropped privileges and set up
 * logging. Opens cfg->db_path (creating it if missing) and listens on
 * run/dir.sock. Returns the process exit status: 0 after a clean stop,
 * 1 if start-up failed (logged).
 */
int directory_main(const struct config *cfg);

#endif
