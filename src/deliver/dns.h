/*
 * dns.h — asynchronous MX and host resolution for the outbound SMTP client.
 *
 * A resolver is a libunbound context driven by the caller's libevent loop
 * (ub_ctx_create_event: no thread, no forked helper). A lookup answers the
 * question "which addresses do I connect to, in which order" for a
 * recipient domain (RFC 5321 5.1) or a configured smarthost, and reports
 * whether every DNS answer it used was DNSSEC-validated (for DANE later).
 *
 * Every callback runs from the event loop, never from inside the call that
 * started the lookup, so a caller may start, cancel or free anything from it.
 */
#ifndef POSTERN_DELIVER_DNS_H
#define POSTERN_DELIVER_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define DNS_ADDRS_MAX  8     /* addresses kept per host */
#define DNS_HOSTS_MAX  16    /* MX hosts kept */
#define DNS_NAME_MAX   253   /* a domain name in text, without the trailing dot */

/* A whole lookup (MX and then the targets' addresses) gives up after this
 * long. libunbound alone can take minutes to give up on a server that does
 * not answer (exponential backoff, probing a server it marked down). */
#define DNS_DEFAULT_TIMEOUT_MS  30000

enum dns_status {
	DNS_OK,          /* hosts[] has at least one host with at least one address */
	DNS_TEMPFAIL,    /* SERVFAIL, timeout, no answer from the resolver: retry later */
	DNS_PERMFAIL,    /* NXDOMAIN, or no MX and no A/AAAA, or MX hosts none of which has an address */
	DNS_NULL_MX,     /* RFC 7505: the domain accepts no mail (MX 0 ".") */
};

struct dns_host {
	char name[256];                       /* MX target (or the domain itself for implicit MX), no trailing dot, lower case */
	unsigned pref;
	size_t naddrs;
	struct sockaddr_storage addrs[DNS_ADDRS_MAX];   /* port set to the port given to the lookup; IPv4 first */
	socklen_t addrlens[DNS_ADDRS_MAX];
};

struct dns_result {
	enum dns_status status;
	char error[256];          /* human text for TEMPFAIL/PERMFAIL ("NXDOMAIN for example.test", "MX hosts have no address") */
	bool secure;              /* every answer used was DNSSEC-validated (ub_result->secure) */
	bool implicit_mx;         /* no MX: the domain's own A/AAAA */
	size_t nhosts;
	struct dns_host hosts[DNS_HOSTS_MAX];   /* in the order to try: MX preference ascending, RANDOMISED among equal preferences; hosts whose lookups all failed are dropped; an MX target that is an IP literal is used as is */
};

struct dns_resolver;
struct event_base;

/*
 * Creates a resolver whose queries run on base.
 *
 * forwarder: "ADDR:PORT" ("127.0.0.1:5353", "[::1]:53"; a bare address means
 * port 53) of a DNS server that every query is sent to with recursion
 * desired, names under test. included; no trust anchor is loaded then, so
 * answers are not validated (secure stays false unless the library says
 * otherwise). NULL: the system's servers from /etc/resolv.conf plus
 * /etc/hosts (both read now).
 *
 * trust_anchor: NULL, or a DNSSEC trust anchor file (e.g.
 * /usr/share/dns/root.key) for libunbound to validate every answer itself
 * (read at the first lookup, so it must stay readable after privileges are
 * dropped). Only for resolvers that pass DNSSEC records on: one that strips
 * signatures makes every answer bogus, reported as DNS_TEMPFAIL. That is
 * why validation is opt-in (outbound.dnssec_trust_anchor).
 *
 * One resolver per event loop; not thread-safe. Returns the resolver, or
 * NULL with *error_r (static text) when the forwarder does not parse or
 * libunbound cannot be set up. Free it with dns_resolver_free() before
 * freeing base.
 */
struct dns_resolver *dns_resolver_new(struct event_base *base, const char *forwarder,
				      const char *trust_anchor, const char **error_r);
/* Cancels every lookup in flight WITHOUT calling their callbacks, frees
 * everything and sets *r to NULL. Safe from inside a dns_cb. */
void dns_resolver_free(struct dns_resolver **r);
/* Overall limit of each lookup started from now on, in milliseconds
 * (default DNS_DEFAULT_TIMEOUT_MS). When it expires the lookup ends: in
 * DNS_OK with the MX hosts whose addresses have arrived, if any, else in
 * DNS_TEMPFAIL ("DNS timeout ..."). */
void dns_resolver_set_timeout(struct dns_resolver *r, unsigned msecs);

/* res is owned by the callee and valid only during the call (copy what you keep). */
typedef void dns_cb(const struct dns_result *res, void *ctx);
struct dns_query;

/*
 * Looks up the mail exchangers of domain (MX, then A and AAAA of each
 * target; or A/AAAA of the domain itself when it has no MX records
 * (implicit MX, RFC 5321 5.1); MX 0 "." → DNS_NULL_MX; a CNAME chain is
 * followed by unbound). port goes into every sockaddr. The callback is
 * called exactly once, ALWAYS asynchronously (never from within this
 * call), unless cancelled; the handle is invalid once it has been called.
 *
 * At most DNS_HOSTS_MAX targets (the best after sorting) are looked up.
 * A target whose name is not a host name (letters, digits, '-', '_', '.')
 * nor an IP literal is dropped, as is one whose address lookups all fail;
 * when no target has an address the status is DNS_TEMPFAIL if any of
 * those lookups failed temporarily, else DNS_PERMFAIL.
 *
 * Returns a handle for dns_cancel, or NULL on immediate failure (out of
 * memory, or domain is not a valid domain name: empty, over DNS_NAME_MAX,
 * an empty label, a label over 63 octets, a character other than letters,
 * digits, '-', '_' and '.'; one trailing dot is allowed) with *error_r.
 */
struct dns_query *dns_lookup_mx(struct dns_resolver *r, const char *domain, uint16_t port,
				dns_cb *cb, void *ctx, const char **error_r);
/* Like dns_lookup_mx but for one host (a smarthost): its A/AAAA only, or an IP literal
 * ("127.0.0.1", "::1", "[::1]", "[IPv6:::1]") parsed without DNS (then secure is
 * false); result has one host with pref 0 named host as given (literal) or
 * normalised. No address → DNS_PERMFAIL (NXDOMAIN or no A/AAAA) or DNS_TEMPFAIL. */
struct dns_query *dns_lookup_host(struct dns_resolver *r, const char *host, uint16_t port,
				  dns_cb *cb, void *ctx, const char **error_r);
/* Cancels a query not yet completed: its callback will not be called.
 * From inside the query's own callback it does nothing (the query is
 * freed when the callback returns). */
void dns_cancel(struct dns_query *q);

/*
 * The DNS message parser behind the lookups, public for its unit test and
 * fuzzing. It never touches a socket.
 */
#define DNS_TYPE_A      1
#define DNS_TYPE_CNAME  5
#define DNS_TYPE_MX     15
#define DNS_TYPE_AAAA   28

#define DNS_RCODE_NOERROR   0
#define DNS_RCODE_SERVFAIL  2
#define DNS_RCODE_NXDOMAIN  3

/* One answer record of the type asked for. */
struct dns_rr {
	uint16_t type;
	unsigned pref;              /* MX preference */
	char name[DNS_NAME_MAX + 1];   /* MX exchange in lower case without the
					* trailing dot, "" for the root (null MX) */
	unsigned char addr[16];     /* A: 4 octets, AAAA: 16 */
};

/*
 * Parses a DNS response message (pkt, len): its RCODE, and the answer
 * records of type qtype and class IN owned by the question's name or by
 * the end of the CNAME chain that starts there (at most 16 links, in any
 * order). At most max records are stored in rrs (others are ignored);
 * records whose exchange name has a label that is empty after the first,
 * contains '.' or a byte outside '!'..'~' are skipped.
 *
 * Returns 0 with *nrrs_r and *rcode_r set, or -1 with *error_r (static
 * text) when the message is malformed: truncated, a compression pointer
 * that does not point backwards, a name over 255 octets, no question, or
 * an A/AAAA/MX record whose data has the wrong length.
 */
int dns_packet_parse(const unsigned char *pkt, size_t len, uint16_t qtype,
		     struct dns_rr *rrs, size_t max, size_t *nrrs_r, int *rcode_r,
		     const char **error_r);

#endif
