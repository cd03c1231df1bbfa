/*
 * remote.h — the outbound SMTP client of the deliver process.
 *
 * The queue sends one IPC_DLV_REMOTE per SMTP transaction (one message,
 * up to 100 recipients of one domain); this module finds the mail
 * exchangers (or the smarthost), connects, speaks RFC 5321 with the
 * extensions the peer offers (PIPELINING, SIZE, 8BITMIME, SMTPUTF8, DSN,
 * CHUNKING, STARTTLS) and answers with one IPC_DLV_REMOTE_RESULT. Replies
 * from the network are parsed here, never in the queue.
 */
#ifndef POSTERN_DELIVER_REMOTE_H
#define POSTERN_DELIVER_REMOTE_H

#include <stdint.h>

#include "lib-config/config.h"
#include "lib/ipc.h"

struct event_base;
struct remote;

/* Sends one finished job's result (IPC_DLV_REMOTE_RESULT payload). */
typedef void remote_result_cb(uint64_t reqid, const struct ipc_writer *w, void *ctx);

/* NULL with *error_r when the resolver or the TLS context can't be set up. */
struct remote *remote_new(struct event_base *base, const struct config *cfg,
			  remote_result_cb *cb, void *ctx, const char **error_r);
/* Closes every connection; unfinished jobs are dropped without a result
 * (the queue retries them). Sets *r to NULL. */
void remote_free(struct remote **r);
/* Starts the job of an IPC_DLV_REMOTE frame; a malformed one is answered
 * with temporary failures. */
void remote_job(struct remote *r, uint64_t reqid, struct ipc_reader *payload);

#endif
