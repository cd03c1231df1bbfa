/*
 * limits.h — every built-in limit of Postern in one place.
 *
 * Configurable limits (message size, recipients, connections, timeouts) have
 * their defaults here and their keys in lib-config/config.c; fixed protocol
 * limits (command line length per RFC 5321 4.5.3.1) are here alone.
 */
#ifndef POSTERN_LIMITS_H
#define POSTERN_LIMITS_H

/* RFC 5321 4.5.3.1.4: 512 octets for a command line; ESMTP parameters
 * (RFC 1869 4.1.2) allow more, so we accept up to this many octets with CRLF. */
#define SMTP_COMMAND_LINE_MAX   2048
/* An over-long command line is discarded up to its end, but a client that
 * sends more than this without a line end is disconnected. */
#define SMTP_SKIP_MAX           (64u * 1024)
/* RFC 5321 4.5.3.1.1/2: local part 64, domain 255 octets. */
#define SMTP_LOCALPART_MAX      64
#define SMTP_DOMAIN_MAX         255
#define SMTP_ADDRESS_MAX        (SMTP_LOCALPART_MAX + 1 + SMTP_DOMAIN_MAX)

#define DEFAULT_MAX_MESSAGE_SIZE   (25u * 1024 * 1024)
#define DEFAULT_MAX_LINE_LENGTH    4096   /* DATA lines, octets without CRLF */
#define DEFAULT_MAX_RECIPIENTS     100
#define DEFAULT_MAX_CONNECTIONS    1000
#define DEFAULT_MAX_CONN_PER_IP    50
#define DEFAULT_MAX_ERRORS         10
#define DEFAULT_COMMAND_TIMEOUT    300    /* seconds, RFC 5321 4.5.3.2.7 */
#define DEFAULT_DATA_TIMEOUT       600
#define DEFAULT_MAX_AUTH_FAILURES  3

/* Replies queued for a client that does not read them: beyond this, the
 * session stops reading commands until they drain. */
#define SMTP_OUTPUT_MAX         (64u * 1024)

/* One IPC frame payload; DATA is sent in chunks well below this. */
#define IPC_FRAME_MAX           (256u * 1024)
#define IPC_DATA_CHUNK          (64u * 1024)

/* An AUTH exchange line (base64 of user + password). */
#define SMTP_AUTH_LINE_MAX      2048
#define PASSWORD_MAX            1024

/* Maximum number of recipients expanded from one alias. */
#define ALIAS_EXPAND_MAX        1000

#endif
