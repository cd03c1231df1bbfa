/*
 * config.h — the one Postern configuration file.
 *
 * Format: one "key = value" per line; '#' starts a comment line; blank lines
 * are ignored. Every key is listed (with type, default and meaning) in the
 * settings table in config.c and in docs/config.md. Unknown keys, repeated
 * keys and bad values are errors reported as "FILE:LINE: reason".
 *
 * The master parses the file once; children get the parsed struct by fork().
 */
#ifndef POSTERN_CONFIG_H
#define POSTERN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum listener_kind {
	LISTENER_SMTP,          /* MX: no AUTH, local recipients only */
	LISTENER_SUBMISSION,    /* STARTTLS + AUTH required (587-style) */
	LISTENER_SUBMISSIONS,   /* implicit TLS + AUTH required (465-style) */
	LISTENER_IMAP,
	LISTENER_IMAPS,
	LISTENER_POP3,
	LISTENER_POP3S,
	LISTENER_HTTP,
	LISTENER_COUNT
};

enum bare_lf_policy { BARE_LF_REJECT, BARE_LF_NORMALIZE };
/* How a batch of new files is made durable: one syncfs() of the file system
 * (group commit; default) or an fsync() per file and directory. */
enum sync_method { SYNC_SYNCFS, SYNC_FSYNC };
/* Outbound TLS (RFC 7435): none; may = opportunistic STARTTLS (default);
 * encrypt = no delivery without TLS; verify = TLS with a certificate valid
 * for the MX host name. Same order as enum ipc_tls_policy. */
enum tls_policy { TLS_POLICY_NONE, TLS_POLICY_MAY, TLS_POLICY_ENCRYPT, TLS_POLICY_VERIFY };

/* TLS client certificates on a listener: not asked for, asked for and
 * verified when given, or required (handshake fails without a valid one).
 * INHERIT (0): a per-listener setting that takes the global one. */
enum tls_client_cert { TLS_CLIENT_CERT_INHERIT, TLS_CLIENT_CERT_NONE, TLS_CLIENT_CERT_OPTIONAL,
		       TLS_CLIENT_CERT_REQUIRED };

/* Per-listener TLS policy ("tls.<listener>.*"); NULL/INHERIT fields take the
 * global tls.* values. */
struct tls_listener_config {
	char *min_version;      /* "TLSv1.2" or "TLSv1.3" */
	char *ciphers;          /* OpenSSL cipher list for TLS 1.2 */
	char *ciphersuites;     /* TLS 1.3 suites */
	char *cert, *key;       /* this listener's default certificate */
	char *client_ca;        /* CAs for client certificates */
	enum tls_client_cert client_cert;
	bool allow_plaintext_auth;   /* "listen.<listener>.allow_plaintext_auth" */
};

/* security.account_lock: soft = IPs without failures for the account still
 * log in while it is locked; hard = nobody does. */
enum account_lock_mode { ACCOUNT_LOCK_SOFT, ACCOUNT_LOCK_HARD };

/* Mail for a full mailbox: 452 4.2.2 (the sender retries; default) or
 * 552 5.2.2 (refused for good). */
enum quota_policy { QUOTA_TEMPFAIL, QUOTA_BOUNCE };

/* "outbound.domain.NAME = tls=verify concurrency=2 rate=30 smarthost=HOST:PORT":
 * what an operator sets for one destination domain; unset fields take the
 * global outbound.* values. */
struct outbound_domain {
	char *domain;           /* lower case */
	int tls;                /* enum tls_policy, or -1: global */
	unsigned concurrency;   /* 0: global */
	unsigned rate;          /* messages per minute; 0: global */
	char *smarthost;        /* "HOST:PORT" or NULL: global */
};

struct config {
	char *path;             /* the file this was read from */
	char *hostname;
	char *data_dir;         /* absolute */
	char *mail_dir;         /* Maildirs: MAIL_DIR/<domain>/<localpart>/ */
	char *spool_dir;
	char *db_path;
	char *run_user;         /* NULL: keep the invoking user */
	char *log_target;       /* "stderr" or "syslog" */
	char *log_level;
	unsigned smtpd_workers; /* 0: one per core */
	enum sync_method sync_method;

	char *listen[LISTENER_COUNT];   /* "ADDR:PORT" or NULL when off */

	char *tls_cert;
	char *tls_key;
	char *tls_min_version;          /* "TLSv1.2" (default) or "TLSv1.3" */
	char *tls_ciphers;              /* TLS 1.2 cipher list */
	char *tls_ciphersuites;         /* TLS 1.3 suites; NULL: OpenSSL's */
	char *tls_client_ca;
	enum tls_client_cert tls_client_cert;
	char *tls_dir;                  /* certificates added by `postern tls add` */
	struct tls_listener_config tls_listener[LISTENER_COUNT];

	/* login security */
	unsigned password_min_length;
	unsigned password_max_age;      /* seconds; 0: passwords do not expire */
	unsigned max_failures_per_ip;
	unsigned max_failures_per_account;
	unsigned failure_window;        /* seconds */
	unsigned block_duration;        /* seconds */
	enum account_lock_mode account_lock;
	unsigned auth_delay_ms;         /* first failure's reply delay, doubled after */
	char *audit_log;                /* JSON lines */

	uint64_t max_message_size;
	unsigned max_line_length;
	unsigned max_recipients;
	unsigned max_connections;
	unsigned max_connections_per_ip;
	unsigned max_errors;
	unsigned command_timeout;
	unsigned data_timeout;
	unsigned max_auth_failures;
	enum bare_lf_policy bare_lf;

	/* outbound delivery */
	char *resolver;                 /* "ADDR:PORT" of a DNS server, NULL: the system's */
	char *dnssec_trust_anchor;      /* libunbound validates itself with it; NULL: off */
	unsigned remote_port;           /* TCP port of remote MX hosts (25) */
	char *smarthost;                /* "HOST:PORT": relay everything through it */
	char *smarthost_user;           /* AUTH PLAIN over TLS with the smarthost */
	char *smarthost_password_file;
	enum tls_policy tls_policy;
	char *tls_ca_file;              /* CAs for verify; NULL: the system store */
	unsigned connect_timeout;
	unsigned out_command_timeout;
	unsigned concurrency;           /* connections per destination domain */
	unsigned concurrency_per_ip;    /* connections per remote IP */
	unsigned rate;                  /* messages per minute per domain; 0: no limit */
	unsigned sender_rate;           /* messages per minute per sender account; 0: no limit */
	unsigned retry_min, retry_max;  /* seconds: first retry, doubled up to max */
	unsigned queue_lifetime;        /* seconds until a message expires (bounced) */
	unsigned delay_warning;         /* seconds until a delay notice; 0: none */
	unsigned status_retention;      /* seconds a finished message's status is kept */
	struct outbound_domain *domains;
	size_t ndomains;

	/* mailbox access (IMAP, POP3) and quota */
	unsigned imapd_workers;         /* 0: one per core */
	uint64_t imap_max_append_size;  /* one APPEND literal; refused before it is read */
	unsigned imap_timeout;          /* seconds of inactivity after login (RFC 9051: >= 30m) */
	unsigned imap_login_timeout;    /* seconds before login, IMAP and POP3 */
	unsigned imap_max_per_user;     /* IMAP+POP3 sessions of one account */
	unsigned pop3_timeout;          /* RFC 1939: >= 10 minutes */
	uint64_t quota_bytes;           /* per account default; 0: unlimited */
	unsigned quota_messages;        /* per account default; 0: unlimited */
	enum quota_policy quota_exceeded;
};

/* The operator's settings for domain (case-insensitive), or NULL. */
const struct outbound_domain *config_outbound_domain(const struct config *cfg,
						     const char *domain);

/* "smtp", "submission", ... ; NULL for an out-of-range kind. */
const char *listener_kind_name(enum listener_kind kind);
/* Returns 0 and sets *kind_r, or -1 for an unknown name. */
int listener_kind_parse(const char *name, enum listener_kind *kind_r);
/* Default "ADDR:PORT" for each listener kind (unprivileged loopback ports). */
const char *listener_default_address(enum listener_kind kind);

/*
 * Reads and validates path. On success returns 0 and a config owned by the
 * caller (free with config_free()). On failure returns -1 and *errors_r, a
 * malloc'ed text with one "FILE:LINE: reason" line per problem.
 */
int config_load(const char *path, struct config **config_r, char **errors_r);
void config_free(struct config **config);

/* Splits "ADDR:PORT" / "[V6]:PORT" into host and port. 0 or -1. */
int config_split_address(const char *addr, char *host_r, size_t host_size, char *port_r,
			 size_t port_size);

/* Writes the documented default config file for `postern init`; the values
 * given override defaults (listen[] entries may be "off"). 0 or -1 + errno. */
struct config_init {
	const char *hostname;
	const char *domain;
	const char *data_dir;
	const char *listen[LISTENER_COUNT];
	const char *tls_cert;
	const char *tls_key;
	const char *resolver;           /* NULL: omitted */
	const char *remote_port;
	const char *smarthost;
};
int config_write_default(const char *path, const struct config_init *init);

#endif
