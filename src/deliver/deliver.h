/*
 * deliver.h — entry point of the deliver process (local delivery).
 *
 * The deliverer connects to the queue on DATA/run/q.sock, says
 * IPC_DLV_HELLO, and answers every IPC_DLV_REQUEST (one queued message,
 * one local recipient) with an IPC_DLV_RESULT once the message is durably
 * in the recipient's Maildir, or with the reason it is not. It reads the
 * spool but never writes it: only the queue does.
 */
#ifndef POSTERN_DELIVER_H
#define POSTERN_DELIVER_H

struct config;

/*
 * Runs the deliverer until SIGTERM/SIGINT or until the queue closes the
 * connection (deliveries already running are finished first; the master
 * restarts the process). The master has already chdir'ed to cfg->data_dir,
 * created run/, dropped privileges and set up logging. Returns 0 after a
 * clean stop, 1 if the queue could not be reached or start-up failed.
 */
int deliver_main(const struct config *cfg);

#endif
