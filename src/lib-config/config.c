/*
 * config.c — parser and validator of postern.conf (see config.h).
 *
 * Runs in the master (serve) and in every CLI command. The settings table is
 * the single list of keys: name, type, default, where the value goes.
 * docs/config.md documents the same keys.
 */
#include "lib-config/config.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sys/stat.h>

#include "lib/buf.h"
#include "lib/limits.h"
#include "lib/util.h"

enum setting_type { SET_STRING, SET_PATH, SET_ADDRESS, SET_UINT, SET_SIZE, SET_DURATION,
		    SET_BARE_LF, SET_SYNC_METHOD, SET_LOG_TARGET, SET_LOG_LEVEL, SET_TLS_POLICY,
		    SET_QUOTA_POLICY, SET_BOOL, SET_TLS_VERSION, SET_CLIENT_CERT, SET_LOCK_MODE };

struct setting {
	const char *key;
	enum setting_type type;
	const char *def;        /* NULL: no default (unset) */
	size_t offset;
	uint64_t min, max;      /* numeric bounds */
};

#define S(key, type, def, field, min, max) \
	{ key, type, def, offsetof(struct config, field), min, max }

/* Modern AEAD ciphers with forward secrecy for TLS 1.2 (TLS 1.3 suites are
 * all fine and stay OpenSSL's default). */
#define TLS_DEFAULT_CIPHERS \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

#define TLS_LISTENER_SETTINGS(name, k) \
	S("tls." name ".min_version", SET_TLS_VERSION, NULL, tls_listener[k].min_version, 0, 0), \
	S("tls." name ".ciphers", SET_STRING, NULL, tls_listener[k].ciphers, 0, 0), \
	S("tls." name ".ciphersuites", SET_STRING, NULL, tls_listener[k].ciphersuites, 0, 0), \
	S("tls." name ".cert", SET_PATH, NULL, tls_listener[k].cert, 0, 0), \
	S("tls." name ".key", SET_PATH, NULL, tls_listener[k].key, 0, 0), \
	S("tls." name ".client_ca", SET_PATH, NULL, tls_listener[k].client_ca, 0, 0), \
	S("tls." name ".client_cert", SET_CLIENT_CERT, NULL, tls_listener[k].client_cert, 0, 0), \
	S("listen." name ".allow_plaintext_auth", SET_BOOL, "no", \
	  tls_listener[k].allow_plaintext_auth, 0, 0)

static const struct setting settings[] = {
	S("hostname", SET_STRING, NULL, hostname, 0, 0),
	S("data_dir", SET_PATH, NULL, data_dir, 0, 0),
	S("mail_dir", SET_PATH, NULL, mail_dir, 0, 0),
	S("spool_dir", SET_PATH, NULL, spool_dir, 0, 0),
	S("db_path", SET_PATH, NULL, db_path, 0, 0),
	S("user", SET_STRING, NULL, run_user, 0, 0),
	S("log", SET_LOG_TARGET, "stderr", log_target, 0, 0),
	S("log_level", SET_LOG_LEVEL, "info", log_level, 0, 0),
	S("smtpd_workers", SET_UINT, "0", smtpd_workers, 0, 64),
	S("sync_method", SET_SYNC_METHOD, "syncfs", sync_method, 0, 0),
	S("listen.smtp", SET_ADDRESS, NULL, listen[LISTENER_SMTP], 0, 0),
	S("listen.submission", SET_ADDRESS, NULL, listen[LISTENER_SUBMISSION], 0, 0),
	S("listen.submissions", SET_ADDRESS, NULL, listen[LISTENER_SUBMISSIONS], 0, 0),
	S("listen.imap", SET_ADDRESS, NULL, listen[LISTENER_IMAP], 0, 0),
	S("listen.imaps", SET_ADDRESS, NULL, listen[LISTENER_IMAPS], 0, 0),
	S("listen.pop3", SET_ADDRESS, NULL, listen[LISTENER_POP3], 0, 0),
	S("listen.pop3s", SET_ADDRESS, NULL, listen[LISTENER_POP3S], 0, 0),
	S("listen.http", SET_ADDRESS, NULL, listen[LISTENER_HTTP], 0, 0),
	S("tls.cert", SET_PATH, NULL, tls_cert, 0, 0),
	S("tls.key", SET_PATH, NULL, tls_key, 0, 0),
	S("tls.min_version", SET_TLS_VERSION, "TLSv1.2", tls_min_version, 0, 0),
	S("tls.ciphers", SET_STRING, TLS_DEFAULT_CIPHERS, tls_ciphers, 0, 0),
	S("tls.ciphersuites", SET_STRING, NULL, tls_ciphersuites, 0, 0),
	S("tls.client_ca", SET_PATH, NULL, tls_client_ca, 0, 0),
	S("tls.client_cert", SET_CLIENT_CERT, "none", tls_client_cert, 0, 0),
	S("tls.dir", SET_PATH, NULL, tls_dir, 0, 0),
	TLS_LISTENER_SETTINGS("smtp", LISTENER_SMTP),
	TLS_LISTENER_SETTINGS("submission", LISTENER_SUBMISSION),
	TLS_LISTENER_SETTINGS("submissions", LISTENER_SUBMISSIONS),
	TLS_LISTENER_SETTINGS("imap", LISTENER_IMAP),
	TLS_LISTENER_SETTINGS("imaps", LISTENER_IMAPS),
	TLS_LISTENER_SETTINGS("pop3", LISTENER_POP3),
	TLS_LISTENER_SETTINGS("pop3s", LISTENER_POP3S),
	TLS_LISTENER_SETTINGS("http", LISTENER_HTTP),
	S("security.password_min_length", SET_UINT, "12", password_min_length, 1, 1024),
	S("security.password_max_age", SET_DURATION, "0", password_max_age, 0, 3650u * 86400),
	S("security.max_failures_per_ip", SET_UINT, "10", max_failures_per_ip, 1, 100000),
	S("security.max_failures_per_account", SET_UINT, "20", max_failures_per_account, 1,
	  100000),
	S("security.failure_window", SET_DURATION, "15m", failure_window, 1, 30u * 86400),
	S("security.block_duration", SET_DURATION, "15m", block_duration, 1, 365u * 86400),
	S("security.account_lock", SET_LOCK_MODE, "soft", account_lock, 0, 0),
	S("security.auth_delay_ms", SET_UINT, "250", auth_delay_ms, 0, 8000),
	S("security.audit_log", SET_PATH, NULL, audit_log, 0, 0),
	S("smtp.max_message_size", SET_SIZE, "25M", max_message_size, 1024, 2ull << 30),
	S("smtp.max_line_length", SET_UINT, "4096", max_line_length, 78, 1u << 20),
	S("smtp.max_recipients", SET_UINT, "100", max_recipients, 1, 100000),
	S("smtp.max_connections", SET_UINT, "1000", max_connections, 1, 1000000),
	S("smtp.max_connections_per_ip", SET_UINT, "50", max_connections_per_ip, 1, 1000000),
	S("smtp.max_errors", SET_UINT, "10", max_errors, 1, 1000),
	S("smtp.command_timeout", SET_DURATION, "300", command_timeout, 1, 86400),
	S("smtp.data_timeout", SET_DURATION, "600", data_timeout, 1, 86400),
	S("smtp.max_auth_failures", SET_UINT, "3", max_auth_failures, 1, 100),
	S("smtp.bare_lf", SET_BARE_LF, "reject", bare_lf, 0, 0),
	S("outbound.resolver", SET_ADDRESS, NULL, resolver, 0, 0),
	S("outbound.dnssec_trust_anchor", SET_PATH, NULL, dnssec_trust_anchor, 0, 0),
	S("outbound.remote_port", SET_UINT, "25", remote_port, 1, 65535),
	S("outbound.smarthost", SET_ADDRESS, NULL, smarthost, 0, 0),
	S("outbound.smarthost_user", SET_STRING, NULL, smarthost_user, 0, 0),
	S("outbound.smarthost_password_file", SET_PATH, NULL, smarthost_password_file, 0, 0),
	S("outbound.tls", SET_TLS_POLICY, "may", tls_policy, 0, 0),
	S("outbound.tls_ca_file", SET_PATH, NULL, tls_ca_file, 0, 0),
	S("outbound.connect_timeout", SET_DURATION, "30", connect_timeout, 1, 3600),
	S("outbound.command_timeout", SET_DURATION, "300", out_command_timeout, 1, 86400),
	S("outbound.concurrency", SET_UINT, "10", concurrency, 1, 1000),
	S("outbound.concurrency_per_ip", SET_UINT, "10", concurrency_per_ip, 1, 1000),
	S("outbound.rate", SET_UINT, "0", rate, 0, 1000000),
	S("outbound.sender_rate", SET_UINT, "0", sender_rate, 0, 1000000),
	S("queue.retry_min", SET_DURATION, "5m", retry_min, 1, 86400),
	S("queue.retry_max", SET_DURATION, "4h", retry_max, 1, 7 * 86400),
	S("queue.lifetime", SET_DURATION, "5d", queue_lifetime, 1, 90 * 86400),
	S("queue.delay_warning", SET_DURATION, "4h", delay_warning, 0, 90 * 86400),
	S("queue.status_retention", SET_DURATION, "30d", status_retention, 0, 3650u * 86400),
	S("imapd_workers", SET_UINT, "0", imapd_workers, 0, 64),
	S("imap.max_append_size", SET_SIZE, "50M", imap_max_append_size, 1024, 2ull << 30),
	S("imap.timeout", SET_DURATION, "30m", imap_timeout, 60, 86400),
	S("imap.login_timeout", SET_DURATION, "60", imap_login_timeout, 5, 3600),
	S("imap.max_connections_per_user", SET_UINT, "20", imap_max_per_user, 1, 10000),
	S("pop3.timeout", SET_DURATION, "10m", pop3_timeout, 60, 86400),
	S("mailbox.quota", SET_SIZE, "1G", quota_bytes, 0, UINT64_MAX / 2),
	S("mailbox.quota_messages", SET_UINT, "0", quota_messages, 0, UINT32_MAX),
	S("mailbox.quota_exceeded", SET_QUOTA_POLICY, "tempfail", quota_exceeded, 0, 0),
};

static const char *const listener_names[LISTENER_COUNT] = {
	"smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http",
};

static const char *const listener_defaults[LISTENER_COUNT] = {
	"127.0.0.1:2525", "127.0.0.1:2587", "127.0.0.1:2465", "127.0.0.1:2143",
	"127.0.0.1:2993", "127.0.0.1:2110", "127.0.0.1:2995", "127.0.0.1:8080",
};

const char *listener_kind_name(enum listener_kind kind)
{
	return (unsigned)kind < LISTENER_COUNT ? listener_names[kind] : NULL;
}

int listener_kind_parse(const char *name, enum listener_kind *kind_r)
{
	for (unsigned i = 0; i < LISTENER_COUNT; i++) {
		if (strcmp(name, listener_names[i]) == 0) {
			*kind_r = (enum listener_kind)i;
			return 0;
		}
	}
	return -1;
}

const char *listener_default_address(enum listener_kind kind)
{
	return (unsigned)kind < LISTENER_COUNT ? listener_defaults[kind] : NULL;
}

int config_split_address(const char *addr, char *host_r, size_t host_size, char *port_r,
			 size_t port_size)
{
	const char *colon, *host = addr;
	size_t host_len;

	if (addr[0] == '[') {
		const char *end = strchr(addr, ']');
		if (end == NULL || end[1] != ':')
			return -1;
		host = addr + 1;
		host_len = (size_t)(end - host);
		colon = end + 1;
	} else {
		colon = strrchr(addr, ':');
		if (colon == NULL || memchr(addr, ':', (size_t)(colon - addr)) != NULL)
			return -1;
		host_len = (size_t)(colon - addr);
	}
	uint64_t port;
	if (host_len == 0 || host_len >= host_size || str_to_u64(colon + 1, &port) < 0 ||
	    port == 0 || port > 65535 || strlen(colon + 1) >= port_size)
		return -1;
	memcpy(host_r, host, host_len);
	host_r[host_len] = '\0';
	memcpy(port_r, colon + 1, strlen(colon + 1) + 1);
	return 0;
}

static int tls_policy_parse(const char *value)
{
	static const char *const names[] = { "none", "may", "encrypt", "verify" };
	for (int i = 0; i < 4; i++) {
		if (strcmp(value, names[i]) == 0)
			return i;
	}
	return -1;
}

/* Stores value into the field; returns NULL or a reason. */
static const char *setting_apply(struct config *cfg, const struct setting *s, const char *value)
{
	char *field = (char *)cfg + s->offset;
	uint64_t n;

	switch (s->type) {
	case SET_STRING:
	case SET_PATH:
	case SET_LOG_TARGET:
	case SET_LOG_LEVEL:
	case SET_TLS_VERSION:
	case SET_ADDRESS: {
		if (s->type == SET_TLS_VERSION && strcmp(value, "TLSv1.2") != 0 &&
		    strcmp(value, "TLSv1.3") != 0)
			return "must be TLSv1.2 or TLSv1.3 (older versions are not offered)";
		if (s->type == SET_PATH && value[0] != '/')
			return "must be an absolute path";
		if (s->type == SET_LOG_TARGET && strcmp(value, "stderr") != 0 &&
		    strcmp(value, "syslog") != 0)
			return "must be stderr or syslog";
		if (s->type == SET_LOG_LEVEL && strcmp(value, "debug") != 0 &&
		    strcmp(value, "info") != 0 && strcmp(value, "warn") != 0 &&
		    strcmp(value, "error") != 0)
			return "must be debug, info, warn or error";
		char **str = (char **)(void *)field;
		free(*str);
		*str = NULL;
		if (s->type == SET_ADDRESS) {
			char host[256], port[8];
			if (strcmp(value, "off") == 0)
				return NULL;
			if (config_split_address(value, host, sizeof(host), port, sizeof(port)) < 0)
				return "must be ADDR:PORT, [IPV6]:PORT or off";
		}
		if (s->type == SET_STRING && value[0] == '\0')
			return NULL;
		*str = strdup(value);
		return *str == NULL ? "out of memory" : NULL;
	}
	case SET_UINT:
	case SET_DURATION:
		if ((s->type == SET_UINT ? str_to_u64(value, &n) : str_to_duration(value, &n)) < 0)
			return s->type == SET_UINT ? "must be a non-negative integer"
						   : "must be a duration (e.g. 30, 30s, 5m, 1h)";
		if (n < s->min || n > s->max)
			return "value out of range";
		*(unsigned *)(void *)field = (unsigned)n;
		return NULL;
	case SET_SIZE:
		if (str_to_size(value, &n) < 0)
			return "must be a size in bytes (suffix K, M or G allowed)";
		if (n < s->min || n > s->max)
			return "value out of range";
		*(uint64_t *)(void *)field = n;
		return NULL;
	case SET_SYNC_METHOD:
		if (strcmp(value, "syncfs") == 0)
			cfg->sync_method = SYNC_SYNCFS;
		else if (strcmp(value, "fsync") == 0)
			cfg->sync_method = SYNC_FSYNC;
		else
			return "must be syncfs or fsync";
		return NULL;
	case SET_TLS_POLICY: {
		int p = tls_policy_parse(value);
		if (p < 0)
			return "must be none, may, encrypt or verify";
		*(enum tls_policy *)(void *)field = (enum tls_policy)p;
		return NULL;
	}
	case SET_BOOL:
		if (strcmp(value, "yes") == 0 || strcmp(value, "true") == 0)
			*(bool *)(void *)field = true;
		else if (strcmp(value, "no") == 0 || strcmp(value, "false") == 0)
			*(bool *)(void *)field = false;
		else
			return "must be yes or no";
		return NULL;
	case SET_CLIENT_CERT:
		if (strcmp(value, "none") == 0)
			*(enum tls_client_cert *)(void *)field = TLS_CLIENT_CERT_NONE;
		else if (strcmp(value, "optional") == 0)
			*(enum tls_client_cert *)(void *)field = TLS_CLIENT_CERT_OPTIONAL;
		else if (strcmp(value, "required") == 0)
			*(enum tls_client_cert *)(void *)field = TLS_CLIENT_CERT_REQUIRED;
		else
			return "must be none, optional or required";
		return NULL;
	case SET_LOCK_MODE:
		if (strcmp(value, "soft") == 0)
			cfg->account_lock = ACCOUNT_LOCK_SOFT;
		else if (strcmp(value, "hard") == 0)
			cfg->account_lock = ACCOUNT_LOCK_HARD;
		else
			return "must be soft or hard";
		return NULL;
	case SET_QUOTA_POLICY:
		if (strcmp(value, "tempfail") == 0)
			cfg->quota_exceeded = QUOTA_TEMPFAIL;
		else if (strcmp(value, "bounce") == 0)
			cfg->quota_exceeded = QUOTA_BOUNCE;
		else
			return "must be tempfail or bounce";
		return NULL;
	case SET_BARE_LF:
		if (strcmp(value, "reject") == 0)
			cfg->bare_lf = BARE_LF_REJECT;
		else if (strcmp(value, "normalize") == 0)
			cfg->bare_lf = BARE_LF_NORMALIZE;
		else
			return "must be reject or normalize";
		return NULL;
	}
	return "unknown setting type";
}

#define OUTBOUND_DOMAIN_PREFIX "outbound.domain."

/* "tls=verify concurrency=2 rate=30 smarthost=HOST:PORT" for one domain. */
static const char *outbound_domain_add(struct config *cfg, const char *domain, char *value)
{
	if (domain[0] == '\0' || strlen(domain) > 253 || strchr(domain, '/') != NULL)
		return "bad domain name";
	for (size_t i = 0; i < cfg->ndomains; i++) {
		if (strcasecmp(cfg->domains[i].domain, domain) == 0)
			return "duplicate domain";
	}
	struct outbound_domain d = { .tls = -1 };
	const char *reason = NULL;
	char *save = NULL;
	for (char *tok = strtok_r(value, " \t", &save); tok != NULL && reason == NULL;
	     tok = strtok_r(NULL, " \t", &save)) {
		char *eq = strchr(tok, '=');
		uint64_t n;
		if (eq == NULL) {
			reason = "expected name=value items (tls, concurrency, rate, smarthost)";
			break;
		}
		*eq++ = '\0';
		if (strcmp(tok, "tls") == 0) {
			if ((d.tls = tls_policy_parse(eq)) < 0)
				reason = "tls must be none, may, encrypt or verify";
		} else if (strcmp(tok, "concurrency") == 0) {
			if (str_to_u64(eq, &n) < 0 || n < 1 || n > 1000)
				reason = "concurrency must be 1..1000";
			d.concurrency = (unsigned)n;
		} else if (strcmp(tok, "rate") == 0) {
			if (str_to_u64(eq, &n) < 0 || n > 1000000)
				reason = "rate must be messages per minute, 0..1000000";
			d.rate = (unsigned)n;
		} else if (strcmp(tok, "smarthost") == 0) {
			char host[256], port[8];
			if (config_split_address(eq, host, sizeof(host), port, sizeof(port)) < 0)
				reason = "smarthost must be HOST:PORT";
			else if (d.smarthost == NULL && (d.smarthost = strdup(eq)) == NULL)
				reason = "out of memory";
		} else {
			reason = "unknown item (tls, concurrency, rate, smarthost)";
		}
	}
	if (reason == NULL) {
		struct outbound_domain *nd = realloc(cfg->domains,
						     (cfg->ndomains + 1) * sizeof(*nd));
		d.domain = strdup(domain);
		if (nd == NULL || d.domain == NULL) {
			if (nd != NULL)
				cfg->domains = nd;
			reason = "out of memory";
		} else {
			for (char *c = d.domain; *c != '\0'; c++)
				*c = (char)tolower((unsigned char)*c);
			cfg->domains = nd;
			cfg->domains[cfg->ndomains++] = d;
			return NULL;
		}
	}
	free(d.domain);
	free(d.smarthost);
	return reason;
}

const struct outbound_domain *config_outbound_domain(const struct config *cfg,
						     const char *domain)
{
	for (size_t i = 0; i < cfg->ndomains; i++) {
		if (strcasecmp(cfg->domains[i].domain, domain) == 0)
			return &cfg->domains[i];
	}
	return NULL;
}

static const struct setting *setting_find(const char *key)
{
	for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
		if (strcmp(settings[i].key, key) == 0)
			return &settings[i];
	}
	return NULL;
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t len = strlen(s);
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\r'))
		s[--len] = '\0';
	return s;
}

static char *path_join(const char *dir, const char *name)
{
	struct buf b;
	buf_init(&b, 4096);
	if (buf_printf(&b, "%s/%s", dir, name) < 0) {
		buf_free(&b);
		return NULL;
	}
	return b.data;
}

/* Every problem counts, even one whose text no longer fits in the buffer. */
#define CONFIG_ERROR(...) do { nerrors++; (void)buf_printf(&errors, __VA_ARGS__); } while (0)

int config_load(const char *path, struct config **config_r, char **errors_r)
{
	unsigned nerrors = 0;
	struct config *cfg = calloc(1, sizeof(*cfg));
	char *text = NULL;
	bool seen[sizeof(settings) / sizeof(settings[0])] = { false };
	struct buf errors;
	buf_init(&errors, 64 * 1024);

	*config_r = NULL;
	*errors_r = NULL;
	if (cfg == NULL) {
		*errors_r = strdup("out of memory");
		return -1;
	}
	cfg->path = strdup(path);
	for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
		if (settings[i].def != NULL)
			(void)setting_apply(cfg, &settings[i], settings[i].def);
	}
	if (read_file(path, 1024 * 1024, &text, NULL) < 0) {
		CONFIG_ERROR("%s: cannot read: %s\n", path, strerror(errno));
		goto out;
	}

	unsigned lineno = 0;
	char *next = text;
	while (next != NULL && *next != '\0') {
		char *line = next;
		char *nl = strchr(line, '\n');
		next = nl != NULL ? nl + 1 : NULL;
		if (nl != NULL)
			*nl = '\0';
		lineno++;
		line = trim(line);
		if (*line == '\0' || *line == '#')
			continue;
		char *eq = strchr(line, '=');
		if (eq == NULL) {
			CONFIG_ERROR("%s:%u: expected \"key = value\"\n", path, lineno);
			continue;
		}
		*eq = '\0';
		char *key = trim(line), *value = trim(eq + 1);
		if (strncmp(key, OUTBOUND_DOMAIN_PREFIX, strlen(OUTBOUND_DOMAIN_PREFIX)) == 0) {
			const char *reason = outbound_domain_add(
				cfg, key + strlen(OUTBOUND_DOMAIN_PREFIX), value);
			if (reason != NULL)
				CONFIG_ERROR("%s:%u: %s: %s\n", path, lineno, key, reason);
			continue;
		}
		const struct setting *s = setting_find(key);
		if (s == NULL) {
			CONFIG_ERROR("%s:%u: unknown key \"%.100s\"\n", path, lineno, key);
			continue;
		}
		size_t idx = (size_t)(s - settings);
		if (seen[idx]) {
			CONFIG_ERROR("%s:%u: duplicate key \"%.100s\"\n", path, lineno, key);
			continue;
		}
		seen[idx] = true;
		const char *reason = setting_apply(cfg, s, value);
		if (reason != NULL)
			CONFIG_ERROR("%s:%u: %s: %s\n", path, lineno, key, reason);
	}

	if (nerrors == 0) {
		if (cfg->data_dir == NULL)
			CONFIG_ERROR("%s: data_dir is required\n", path);
		if (cfg->hostname == NULL)
			CONFIG_ERROR("%s: hostname is required\n", path);
		bool tls_needed = false;
		for (unsigned k = 0; k < LISTENER_COUNT; k++)
			tls_needed |= k != LISTENER_HTTP && cfg->listen[k] != NULL;
		if (tls_needed && (cfg->tls_cert == NULL || cfg->tls_key == NULL))
			CONFIG_ERROR("%s: tls.cert and tls.key are required\n", path);
		if (cfg->retry_min > cfg->retry_max)
			CONFIG_ERROR("%s: queue.retry_min is larger than queue.retry_max\n", path);
		if ((cfg->smarthost_user == NULL) != (cfg->smarthost_password_file == NULL))
			CONFIG_ERROR("%s: outbound.smarthost_user and "
				     "outbound.smarthost_password_file go together\n", path);
	}
	if (nerrors == 0) {
		if (cfg->mail_dir == NULL)
			cfg->mail_dir = path_join(cfg->data_dir, "mail");
		if (cfg->spool_dir == NULL)
			cfg->spool_dir = path_join(cfg->data_dir, "spool");
		if (cfg->db_path == NULL)
			cfg->db_path = path_join(cfg->data_dir, "postern.db");
		if (cfg->tls_dir == NULL)
			cfg->tls_dir = path_join(cfg->data_dir, "tls/sni");
		if (cfg->audit_log == NULL)
			cfg->audit_log = path_join(cfg->data_dir, "audit.log");
		for (unsigned k = 0; k < LISTENER_COUNT; k++) {
			const char *addr = cfg->listen[k];
			if (!cfg->tls_listener[k].allow_plaintext_auth || addr == NULL)
				continue;
			/* Only for tests on loopback: never on a real network. */
			if (strncmp(addr, "127.", 4) != 0 && strncmp(addr, "[::1]:", 6) != 0 &&
			    strncmp(addr, "localhost:", 10) != 0)
				CONFIG_ERROR("%s: listen.%s.allow_plaintext_auth needs a loopback "
					     "listen.%s address\n", path, listener_names[k],
					     listener_names[k]);
		}
	}
out:
	free(text);
	if (nerrors > 0) {
		*errors_r = errors.data != NULL ? errors.data : strdup("configuration errors");
		config_free(&cfg);
		return -1;
	}
	buf_free(&errors);
	*config_r = cfg;
	return 0;
}

void config_free(struct config **cfgp)
{
	struct config *cfg = *cfgp;
	if (cfg == NULL)
		return;
	*cfgp = NULL;
	for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
		switch (settings[i].type) {
		case SET_STRING:
		case SET_PATH:
		case SET_ADDRESS:
		case SET_LOG_TARGET:
		case SET_LOG_LEVEL:
		case SET_TLS_VERSION:
			free(*(char **)(void *)((char *)cfg + settings[i].offset));
			break;
		default:
			break;
		}
	}
	for (size_t i = 0; i < cfg->ndomains; i++) {
		free(cfg->domains[i].domain);
		free(cfg->domains[i].smarthost);
	}
	free(cfg->domains);
	free(cfg->path);
	free(cfg);
}

int config_write_default(const char *path, const struct config_init *init)
{
	struct buf b;
	buf_init(&b, 64 * 1024);
	buf_printf(&b,
		   "# Postern configuration, written by `postern init`.\n"
		   "# Every key is documented in docs/config.md.\n\n"
		   "hostname = %s\n"
		   "data_dir = %s\n\n"
		   "# Listeners: ADDR:PORT, [IPV6]:PORT, or off.\n",
		   init->hostname, init->data_dir);
	for (unsigned i = 0; i < LISTENER_COUNT; i++) {
		const char *v = init->listen[i] != NULL ? init->listen[i] : listener_defaults[i];
		buf_printf(&b, "listen.%s = %s\n", listener_names[i], v);
	}
	buf_printf(&b,
		   "\ntls.cert = %s\n"
		   "tls.key = %s\n\n"
		   "# Limits (defaults shown).\n"
		   "smtp.max_message_size = 25M\n"
		   "smtp.max_recipients = 100\n"
		   "smtp.max_connections = 1000\n"
		   "smtp.max_connections_per_ip = 50\n",
		   init->tls_cert, init->tls_key);
	buf_printf(&b, "\n# Outbound delivery (see docs/config.md for per-domain policies).\n");
	if (init->resolver != NULL)
		buf_printf(&b, "outbound.resolver = %s\n", init->resolver);
	if (init->remote_port != NULL)
		buf_printf(&b, "outbound.remote_port = %s\n", init->remote_port);
	if (init->smarthost != NULL)
		buf_printf(&b, "outbound.smarthost = %s\n", init->smarthost);
	buf_printf(&b, "outbound.tls = may\n"
		       "queue.lifetime = 5d\n"
		       "\n# Mailboxes (IMAP, POP3): per-account quota; `postern user quota`\n"
		       "# overrides it for one account.\n"
		       "mailbox.quota = 1G\n"
		       "mailbox.quota_exceeded = tempfail\n"
		       "imap.max_append_size = 50M\n");
	int ret = -1;
	FILE *f = fopen(path, "wx");
	if (f != NULL) {
		/* Readable by local users, whatever the umask: `postern sendmail`
		 * reads it; no secret is ever stored in it. */
		ret = fchmod(fileno(f), 0644) == 0 && fwrite(b.data, 1, b.len, f) == b.len ? 0 : -1;
		if (fclose(f) != 0)
			ret = -1;
	}
	buf_free(&b);
	return ret;
}
