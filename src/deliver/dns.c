/*
 * dns.c — asynchronous MX / host resolution with libunbound on libevent.
 *
 * Process: "deliver" (the remote SMTP client), one resolver per process.
 * Owns: a libunbound context created with ub_ctx_create_event() on the
 * process's event base — unbound's state machines run in our loop, with no
 * thread and no forked helper (ub_ctx_async(ctx, 0) would fork one) — and
 * every lookup in flight.
 *
 * A lookup is a small state machine: the MX query of the domain, then the
 * A and AAAA queries of each target in parallel (RFC 5321 5.1: MX sorted by
 * preference, equal preferences in random order; no MX → the domain's own
 * address, "implicit MX"; RFC 7505 null MX). libunbound hands us the answer
 * as a wire-format message; dns_packet_parse() reads what we need from it.
 *
 * Callbacks from libunbound may run inside ub_resolve_event() (cache hits,
 * /etc/hosts) or inside unbound's own event handlers, where calling back
 * into the library is not safe. So they only record the answer; the next
 * step, and the user's callback, run from a per-lookup event that is made
 * active when the last answer of a step is in.
 */
#include "deliver/dns.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <event2/event.h>
#include <unbound.h>
#include <unbound-event.h>

#include "lib/util.h"

#define DNS_MX_PARSE_MAX   64   /* MX records read from one answer */
#define DNS_CNAME_MAX      16   /* CNAME links followed inside one answer */
#define DNS_CLASS_IN       1
#define DNS_WIRE_NAME_MAX  255  /* RFC 1035 3.1, octets with length bytes */
#define DNS_LABEL_MAX      63

/* ---------------------------------------------------------------- parser */

static uint16_t get16(const unsigned char *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/*
 * Reads the (possibly compressed) name at *off into out (lower case, no
 * trailing dot, "" for the root) and moves *off past it. Every compression
 * pointer must point before the segment it is found in, so the walk only
 * ever goes backwards and ends. Returns 0, 1 when the name has a label that
 * cannot be text (contains '.', a byte outside '!'..'~'), -1 if malformed.
 */
static int read_name(const unsigned char *p, size_t len, size_t *off, char *out)
{
	size_t pos = *off, seg = *off, wire = 1, o = 0;
	bool jumped = false;
	int bad = 0;

	for (;;) {
		if (pos >= len)
			return -1;
		unsigned c = p[pos];
		if ((c & 0xc0) == 0xc0) {
			if (pos + 1 >= len)
				return -1;
			size_t ptr = (size_t)(c & 0x3f) << 8 | p[pos + 1];
			if (ptr >= seg)
				return -1;
			if (!jumped) {
				*off = pos + 2;
				jumped = true;
			}
			pos = seg = ptr;
			continue;
		}
		if ((c & 0xc0) != 0)
			return -1;          /* 0x40 / 0x80: no longer defined */
		if (c == 0)
			break;
		wire += c + 1;
		if (wire > DNS_WIRE_NAME_MAX || pos + 1 + c > len)
			return -1;
		if (o > 0)
			out[o++] = '.';
		for (size_t i = 0; i < c; i++) {
			unsigned char b = p[pos + 1 + i];
			if (b < '!' || b > '~' || b == '.')
				bad = 1;
			out[o++] = (char)(b >= 'A' && b <= 'Z' ? b + 32 : b);
		}
		pos += 1 + c;
	}
	out[o] = '\0';
	if (!jumped)
		*off = pos + 1;
	return bad;
}

struct rr_head {
	int name_rc;                 /* read_name() of the owner */
	char owner[DNS_NAME_MAX + 1];
	uint16_t type, class;
	size_t rdata, rdlen;
};

/* Reads one resource record's fixed part at *off and moves past it. */
static int read_rr(const unsigned char *p, size_t len, size_t *off, struct rr_head *rr)
{
	rr->name_rc = read_name(p, len, off, rr->owner);
	if (rr->name_rc < 0 || len - *off < 10)
		return -1;
	rr->type = get16(p + *off);
	rr->class = get16(p + *off + 2);
	rr->rdlen = get16(p + *off + 8);
	rr->rdata = *off + 10;
	if (len - rr->rdata < rr->rdlen)
		return -1;
	*off = rr->rdata + rr->rdlen;
	return 0;
}

int dns_packet_parse(const unsigned char *pkt, size_t len, uint16_t qtype,
		     struct dns_rr *rrs, size_t max, size_t *nrrs_r, int *rcode_r,
		     const char **error_r)
{
	char current[DNS_NAME_MAX + 1], target[DNS_NAME_MAX + 1];
	struct rr_head rr;
	size_t off, answers, n = 0;
	unsigned qdcount, ancount;
	int rc;

	*nrrs_r = 0;
	if (len < 12) {
		*error_r = "DNS message shorter than its header";
		return -1;
	}
	*rcode_r = pkt[3] & 0x0f;
	qdcount = get16(pkt + 4);
	ancount = get16(pkt + 6);
	if (qdcount == 0) {
		*error_r = "DNS message without a question";
		return -1;
	}
	off = 12;
	rc = read_name(pkt, len, &off, current);
	if (rc < 0 || len - off < 4)
		goto malformed;
	off += 4;
	for (unsigned i = 1; i < qdcount; i++) {
		if (read_name(pkt, len, &off, target) < 0 || len - off < 4)
			goto malformed;
		off += 4;
	}
	answers = off;
	if (rc > 0)
		return 0;           /* nothing can match a name we cannot write */

	/* Follow the CNAME chain from the question's name, records in any order. */
	for (unsigned hop = 0; hop < DNS_CNAME_MAX && qtype != DNS_TYPE_CNAME; hop++) {
		bool found = false;
		off = answers;
		for (unsigned i = 0; i < ancount; i++) {
			if (read_rr(pkt, len, &off, &rr) < 0)
				goto malformed;
			if (found || rr.type != DNS_TYPE_CNAME || rr.class != DNS_CLASS_IN ||
			    rr.name_rc != 0 || strcmp(rr.owner, current) != 0)
				continue;
			size_t t = rr.rdata;
			rc = read_name(pkt, len, &t, target);
			if (rc < 0 || t != rr.rdata + rr.rdlen)
				goto malformed;
			if (rc > 0)
				return 0;
			found = true;
		}
		if (!found)
			break;
		memcpy(current, target, sizeof(current));
	}

	off = answers;
	for (unsigned i = 0; i < ancount; i++) {
		if (read_rr(pkt, len, &off, &rr) < 0)
			goto malformed;
		if (rr.type != qtype || rr.class != DNS_CLASS_IN || rr.name_rc != 0 ||
		    strcmp(rr.owner, current) != 0)
			continue;
		struct dns_rr *out = n < max ? &rrs[n] : NULL;
		switch (qtype) {
		case DNS_TYPE_A:
		case DNS_TYPE_AAAA:
			if (rr.rdlen != (qtype == DNS_TYPE_A ? 4u : 16u)) {
				*error_r = "DNS address record of the wrong length";
				return -1;
			}
			if (out != NULL) {
				memset(out, 0, sizeof(*out));
				memcpy(out->addr, pkt + rr.rdata, rr.rdlen);
			}
			break;
		case DNS_TYPE_MX: {
			size_t t = rr.rdata + 2;
			if (rr.rdlen < 3) {
				*error_r = "DNS MX record too short";
				return -1;
			}
			rc = read_name(pkt, len, &t, target);
			if (rc < 0 || t != rr.rdata + rr.rdlen)
				goto malformed;
			if (rc > 0)
				continue;
			if (out != NULL) {
				memset(out, 0, sizeof(*out));
				out->pref = get16(pkt + rr.rdata);
				memcpy(out->name, target, sizeof(out->name));
			}
			break;
		}
		default:
			break;
		}
		if (out != NULL) {
			out->type = qtype;
			n++;
		}
	}
	*nrrs_r = n;
	return 0;

malformed:
	*error_r = "malformed DNS message";
	return -1;
}

/* --------------------------------------------------------------- lookups */

struct dns_resolver {
	struct event_base *base;
	struct ub_ctx *ctx;
	struct dns_query *queries;     /* in flight, not yet calling back */
	unsigned timeout_ms;
};

enum sub_state { SUB_IDLE, SUB_PENDING, SUB_DONE };

/* One libunbound query of a lookup. */
struct dns_sub {
	struct dns_query *q;
	int async_id;
	enum sub_state state;
	uint16_t type;
	int cand;              /* index in q->cand; -1: the domain's MX */
};

/* A host whose addresses are being looked up. */
struct dns_cand {
	char name[DNS_NAME_MAX + 1];
	unsigned pref;
	size_t n4, n6;
	unsigned char a4[DNS_ADDRS_MAX][4];
	unsigned char a6[DNS_ADDRS_MAX][16];
	bool secure;           /* every answer used for it was validated */
	bool tempfail;         /* a lookup failed in a way worth retrying */
	bool nxdomain;
};

enum query_phase {
	Q_MX,          /* waiting for the MX answer */
	Q_ADDR,        /* MX answered (or a host lookup): addresses to look up / wait for */
	Q_DONE,        /* res.status and res.error are final */
};

struct dns_query {
	struct dns_resolver *r;
	struct dns_query *prev, *next;
	dns_cb *cb;
	void *ctx;
	uint16_t port;
	bool mx;               /* dns_lookup_mx, not dns_lookup_host */
	bool literal;          /* dns_lookup_host of an IP literal */
	bool calling;          /* inside cb: dns_cancel is a no-op */
	bool addr_started;
	bool timed_out;
	enum query_phase phase;
	char domain[DNS_NAME_MAX + 1];
	struct event *step, *timer;
	size_t npending;
	bool mx_secure;
	struct dns_sub mx_sub;
	struct dns_sub subs[2 * DNS_HOSTS_MAX];
	size_t ncand;
	struct dns_cand cand[DNS_HOSTS_MAX];
	struct dns_result res;
};

static void query_fail(struct dns_query *q, enum dns_status status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void query_fail(struct dns_query *q, enum dns_status status, const char *fmt, ...)
{
	va_list ap;

	q->phase = Q_DONE;
	q->res.status = status;
	va_start(ap, fmt);
	vsnprintf(q->res.error, sizeof(q->res.error), fmt, ap);
	va_end(ap);
}

/* Letters, digits, '-', '_', '.'; labels of 1..63; 1..253 octets without
 * one trailing dot. Writes the lower-case name without that dot. */
static int name_normalize(const char *in, char out[DNS_NAME_MAX + 1], const char **error_r)
{
	size_t len = strlen(in), label = 0;

	if (len > 0 && in[len - 1] == '.')
		len--;
	if (len == 0 || len > DNS_NAME_MAX) {
		*error_r = len == 0 ? "empty domain name" : "domain name too long";
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		char c = in[i];
		if (c == '.') {
			if (label == 0) {
				*error_r = "empty label in domain name";
				return -1;
			}
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			   (c >= '0' && c <= '9') || c == '-' || c == '_') {
			if (++label > DNS_LABEL_MAX) {
				*error_r = "label over 63 octets in domain name";
				return -1;
			}
		} else {
			*error_r = "invalid character in domain name";
			return -1;
		}
		out[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
	}
	out[len] = '\0';
	return 0;
}

/* "127.0.0.1", "::1", "[::1]", "[127.0.0.1]", "[IPv6:::1]" (RFC 5321 4.1.3)
 * into c's address list; false if s is not an IP literal. */
static bool parse_ip_literal(const char *s, struct dns_cand *c)
{
	char buf[64];
	size_t len = strlen(s);

	if (len >= sizeof(buf))
		return false;
	if (s[0] == '[') {
		if (len < 3 || s[len - 1] != ']')
			return false;
		memcpy(buf, s + 1, len - 2);
		buf[len - 2] = '\0';
		if (strncasecmp(buf, "IPv6:", 5) == 0)
			memmove(buf, buf + 5, strlen(buf + 5) + 1);
	} else {
		memcpy(buf, s, len + 1);
	}
	if (inet_pton(AF_INET, buf, c->a4[0]) == 1) {
		c->n4 = 1;
		return true;
	}
	if (inet_pton(AF_INET6, buf, c->a6[0]) == 1) {
		c->n6 = 1;
		return true;
	}
	return false;
}

static void sub_done_cb(void *arg, int rcode, void *pkt, int len, int sec,
			char *why_bogus, int was_ratelimited);

/* Starts one libunbound query; on failure the sub is done and *error_r set. */
static int sub_start(struct dns_query *q, struct dns_sub *s, const char *name,
		     uint16_t type, int cand, const char **error_r)
{
	int ret;

	s->q = q;
	s->type = type;
	s->cand = cand;
	s->async_id = 0;
	s->state = SUB_PENDING;
	q->npending++;
	/* May call sub_done_cb before it returns (cache, /etc/hosts). */
	ret = ub_resolve_event(q->r->ctx, name, type, DNS_CLASS_IN, s, sub_done_cb,
			       &s->async_id);
	if (ret != 0) {
		if (s->state == SUB_PENDING) {
			s->state = SUB_DONE;
			q->npending--;
		}
		*error_r = ub_strerror(ret);
		return -1;
	}
	return 0;
}

static void sub_cancel(struct dns_query *q, struct dns_sub *s)
{
	if (s->state != SUB_PENDING)
		return;
	/* After this libunbound never calls sub_done_cb for it (the query is
	 * marked cancelled and freed when unbound is done with it). */
	(void)ub_cancel(q->r->ctx, s->async_id);
	s->state = SUB_DONE;
	q->npending--;
}

static void query_cancel_subs(struct dns_query *q)
{
	sub_cancel(q, &q->mx_sub);
	for (size_t i = 0; i < 2 * DNS_HOSTS_MAX; i++)
		sub_cancel(q, &q->subs[i]);
}

static void mx_shuffle_sort(struct dns_rr *rrs, size_t n)
{
	/* Insertion sort by preference (n <= DNS_MX_PARSE_MAX), then a
	 * Fisher-Yates shuffle of each run of equal preference. */
	for (size_t i = 1; i < n; i++) {
		struct dns_rr t = rrs[i];
		size_t j = i;
		for (; j > 0 && rrs[j - 1].pref > t.pref; j--)
			rrs[j] = rrs[j - 1];
		rrs[j] = t;
	}
	for (size_t start = 0; start < n;) {
		size_t end = start + 1;
		while (end < n && rrs[end].pref == rrs[start].pref)
			end++;
		for (size_t i = end - 1; i > start; i--) {
			size_t j = start + arc4random_uniform((uint32_t)(i - start + 1));
			struct dns_rr t = rrs[i];
			rrs[i] = rrs[j];
			rrs[j] = t;
		}
		start = end;
	}
}

static void add_cand(struct dns_query *q, const char *name, unsigned pref)
{
	struct dns_cand *c = &q->cand[q->ncand++];

	memset(c, 0, sizeof(*c));
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->pref = pref;
	c->secure = true;
}

static const char *rcode_name(int rcode)
{
	static const char *const names[] = {
		"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
	};

	return rcode >= 0 && (size_t)rcode < sizeof(names) / sizeof(names[0]) ?
	       names[rcode] : "error";
}

static const char *sec_text(int sec, const char *why_bogus)
{
	if (sec != 1)
		return "";
	return why_bogus != NULL ? why_bogus : "DNSSEC validation failed";
}

static void mx_answer(struct dns_query *q, int rcode, const unsigned char *pkt, size_t len,
		      int sec, const char *why_bogus)
{
	struct dns_rr rrs[DNS_MX_PARSE_MAX];
	const char *error;
	size_t n, nnull = 0;
	int prcode;

	if (rcode != 0 || sec == 1) {
		/* sec 1: bogus (DNSSEC validation failed): never used. */
		query_fail(q, DNS_TEMPFAIL, "DNS failure looking up MX of %s: %s (rcode %d)%s%s",
			   q->domain, sec == 1 ? "DNSSEC validation failed" : rcode_name(rcode),
			   rcode, sec == 1 ? ": " : "", sec_text(sec, why_bogus));
		return;
	}
	if (dns_packet_parse(pkt, len, DNS_TYPE_MX, rrs, DNS_MX_PARSE_MAX, &n, &prcode,
			     &error) < 0) {
		query_fail(q, DNS_TEMPFAIL, "MX of %s: %s", q->domain, error);
		return;
	}
	if (prcode == DNS_RCODE_NXDOMAIN) {
		query_fail(q, DNS_PERMFAIL, "NXDOMAIN for %s", q->domain);
		return;
	}
	if (prcode != DNS_RCODE_NOERROR) {
		query_fail(q, DNS_TEMPFAIL, "DNS failure looking up MX of %s: %s (rcode %d)",
			   q->domain, rcode_name(prcode), prcode);
		return;
	}
	q->mx_secure = sec == 2;
	q->phase = Q_ADDR;
	if (n == 0) {
		/* RFC 5321 5.1: no MX, the domain itself is the host. */
		q->res.implicit_mx = true;
		add_cand(q, q->domain, 0);
		return;
	}
	for (size_t i = 0; i < n; i++)
		if (rrs[i].name[0] == '\0')
			nnull++;
	if (nnull == n) {
		/* RFC 7505 3: MX 0 "." alone. A "." among other MX records
		 * names no host and is skipped below. */
		query_fail(q, DNS_NULL_MX, "%s accepts no mail (null MX)", q->domain);
		return;
	}
	mx_shuffle_sort(rrs, n);
	for (size_t i = 0; i < n && q->ncand < DNS_HOSTS_MAX; i++) {
		char name[DNS_NAME_MAX + 1];
		struct dns_cand lit;
		bool dup = false;

		if (rrs[i].name[0] == '\0')
			continue;
		for (size_t j = 0; j < q->ncand; j++)
			dup = dup || strcmp(q->cand[j].name, rrs[i].name) == 0;
		if (dup)
			continue;
		memset(&lit, 0, sizeof(lit));
		if (parse_ip_literal(rrs[i].name, &lit)) {
			add_cand(q, rrs[i].name, rrs[i].pref);
			struct dns_cand *c = &q->cand[q->ncand - 1];
			c->n4 = lit.n4;
			c->n6 = lit.n6;
			memcpy(c->a4, lit.a4, sizeof(c->a4));
			memcpy(c->a6, lit.a6, sizeof(c->a6));
			continue;
		}
		if (name_normalize(rrs[i].name, name, &error) < 0)
			continue;
		add_cand(q, name, rrs[i].pref);
	}
}

static void addr_answer(struct dns_query *q, struct dns_sub *s, int rcode,
			const unsigned char *pkt, size_t len, int sec)
{
	struct dns_cand *c = &q->cand[s->cand];
	struct dns_rr rrs[DNS_ADDRS_MAX];
	const char *error;
	size_t n;
	int prcode;

	if (rcode != 0 || sec == 1 ||
	    dns_packet_parse(pkt, len, s->type, rrs, DNS_ADDRS_MAX, &n, &prcode, &error) < 0) {
		c->tempfail = true;   /* sec 1: a bogus answer is never used */
		return;
	}
	if (prcode == DNS_RCODE_NXDOMAIN) {
		c->nxdomain = true;
		return;
	}
	if (prcode != DNS_RCODE_NOERROR) {
		c->tempfail = true;
		return;
	}
	if (n > 0 && sec != 2)
		c->secure = false;
	for (size_t i = 0; i < n; i++) {
		if (s->type == DNS_TYPE_A && c->n4 < DNS_ADDRS_MAX)
			memcpy(c->a4[c->n4++], rrs[i].addr, 4);
		else if (s->type == DNS_TYPE_AAAA && c->n6 < DNS_ADDRS_MAX)
			memcpy(c->a6[c->n6++], rrs[i].addr, 16);
	}
}

/* libunbound's callback: record the answer; the step event does the rest. */
static void sub_done_cb(void *arg, int rcode, void *pkt, int len, int sec,
			char *why_bogus, int was_ratelimited)
{
	struct dns_sub *s = arg;
	struct dns_query *q = s->q;

	if (s->state != SUB_PENDING)
		return;
	s->state = SUB_DONE;
	q->npending--;
	if (q->phase != Q_DONE) {
		if (pkt == NULL || len < 0)
			rcode = rcode != 0 ? rcode : DNS_RCODE_SERVFAIL;
		if (s->cand < 0)
			mx_answer(q, rcode, pkt, (size_t)(len < 0 ? 0 : len), sec, why_bogus);
		else
			addr_answer(q, s, rcode, pkt, (size_t)(len < 0 ? 0 : len), sec);
	}
	if (q->npending == 0)
		event_active(q->step, EV_TIMEOUT, 0);
}

/* Starts the A and AAAA queries of every candidate without addresses. */
static void query_start_addr(struct dns_query *q)
{
	const char *error;
	size_t k = 0;

	q->addr_started = true;
	q->npending++;          /* no step while starting */
	for (size_t i = 0; i < q->ncand; i++) {
		struct dns_cand *c = &q->cand[i];
		if (c->n4 > 0 || c->n6 > 0)
			continue;   /* an IP literal */
		if (sub_start(q, &q->subs[k++], c->name, DNS_TYPE_A, (int)i, &error) < 0)
			c->tempfail = true;
		if (sub_start(q, &q->subs[k++], c->name, DNS_TYPE_AAAA, (int)i, &error) < 0)
			c->tempfail = true;
	}
	q->npending--;
}

static void sockaddr_fill(struct dns_host *h, int family, const unsigned char *addr,
			  uint16_t port)
{
	struct sockaddr_storage *ss = &h->addrs[h->naddrs];

	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, addr, 4);
		h->addrlens[h->naddrs] = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, addr, 16);
		h->addrlens[h->naddrs] = sizeof(*sin6);
	}
	h->naddrs++;
}

/* The result from the candidates, once every address query is done. */
static void query_build_result(struct dns_query *q)
{
	struct dns_result *res = &q->res;
	bool tempfail = false, nxdomain = false;

	res->secure = q->literal ? false : (q->mx ? q->mx_secure : true);
	for (size_t i = 0; i < q->ncand; i++) {
		struct dns_cand *c = &q->cand[i];
		if (c->n4 + c->n6 == 0) {
			tempfail = tempfail || c->tempfail;
			nxdomain = nxdomain || c->nxdomain;
			continue;
		}
		struct dns_host *h = &res->hosts[res->nhosts++];
		memcpy(h->name, c->name, sizeof(c->name));
		h->pref = c->pref;
		h->naddrs = 0;
		/* IPv4 first: it works from more networks. */
		for (size_t j = 0; j < c->n4 && h->naddrs < DNS_ADDRS_MAX; j++)
			sockaddr_fill(h, AF_INET, c->a4[j], q->port);
		for (size_t j = 0; j < c->n6 && h->naddrs < DNS_ADDRS_MAX; j++)
			sockaddr_fill(h, AF_INET6, c->a6[j], q->port);
		res->secure = res->secure && c->secure;
	}
	if (res->nhosts > 0) {
		res->status = DNS_OK;
		return;
	}
	res->secure = false;
	if (tempfail)
		query_fail(q, DNS_TEMPFAIL, "DNS %s looking up the address of %s%s",
			   q->timed_out ? "timeout" : "failure",
			   q->mx && !res->implicit_mx ? "the MX hosts of " : "", q->domain);
	else if (!q->mx && nxdomain)
		query_fail(q, DNS_PERMFAIL, "NXDOMAIN for %s", q->domain);
	else if (!q->mx || res->implicit_mx)
		query_fail(q, DNS_PERMFAIL, "%s has no %sA/AAAA record", q->domain,
			   q->mx ? "MX and no " : "");
	else
		query_fail(q, DNS_PERMFAIL, "MX hosts of %s have no address", q->domain);
}

static void query_unlink(struct dns_query *q)
{
	if (q->r == NULL)
		return;
	if (q->prev != NULL)
		q->prev->next = q->next;
	else
		q->r->queries = q->next;
	if (q->next != NULL)
		q->next->prev = q->prev;
	q->prev = q->next = NULL;
	q->r = NULL;
}

static void query_free(struct dns_query *q)
{
	if (q->r != NULL) {
		query_cancel_subs(q);
		query_unlink(q);
	}
	if (q->step != NULL)
		event_free(q->step);
	if (q->timer != NULL)
		event_free(q->timer);
	free(q);
}

/* Calls back and frees q; the resolver may be freed by the callback. */
static void query_finish(struct dns_query *q)
{
	query_cancel_subs(q);
	if (q->phase == Q_MX)   /* not reached: the MX answer or the timeout ends it */
		query_fail(q, DNS_TEMPFAIL, "no MX answer for %s", q->domain);
	if (q->phase != Q_DONE)
		query_build_result(q);
	if (q->res.status != DNS_OK) {
		q->res.nhosts = 0;
		q->res.secure = false;
	}
	query_unlink(q);
	q->calling = true;
	q->cb(&q->res, q->ctx);
	query_free(q);
}

static void query_step_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;

	if (q->npending > 0)
		return;
	if (q->phase == Q_ADDR && !q->addr_started) {
		query_start_addr(q);
		if (q->npending > 0)
			return;
	}
	query_finish(q);
}

static void query_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;

	q->timed_out = true;
	query_cancel_subs(q);
	if (q->phase == Q_MX)
		query_fail(q, DNS_TEMPFAIL, "DNS timeout looking up MX of %s", q->domain);
	else if (q->phase == Q_ADDR)
		for (size_t i = 0; i < q->ncand; i++)
			q->cand[i].tempfail = true;   /* counts only for those without address */
	query_finish(q);
}

static struct dns_query *query_new(struct dns_resolver *r, uint16_t port, dns_cb *cb,
				   void *ctx, const char **error_r)
{
	struct dns_query *q = calloc(1, sizeof(*q));
	struct timeval tv = { r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000 };

	if (q == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	q->cb = cb;
	q->ctx = ctx;
	q->port = port;
	q->step = event_new(r->base, -1, 0, query_step_cb, q);
	q->timer = evtimer_new(r->base, query_timeout_cb, q);
	if (q->step == NULL || q->timer == NULL || evtimer_add(q->timer, &tv) < 0) {
		query_free(q);
		*error_r = "out of memory";
		return NULL;
	}
	q->r = r;
	q->next = r->queries;
	if (q->next != NULL)
		q->next->prev = q;
	r->queries = q;
	return q;
}

struct dns_query *dns_lookup_mx(struct dns_resolver *r, const char *domain, uint16_t port,
				dns_cb *cb, void *ctx, const char **error_r)
{
	char name[DNS_NAME_MAX + 1];
	struct dns_query *q;
	const char *error;

	if (name_normalize(domain, name, error_r) < 0)
		return NULL;
	if ((q = query_new(r, port, cb, ctx, error_r)) == NULL)
		return NULL;
	q->mx = true;
	q->phase = Q_MX;
	memcpy(q->domain, name, sizeof(name));
	if (sub_start(q, &q->mx_sub, q->domain, DNS_TYPE_MX, -1, &error) < 0) {
		query_fail(q, DNS_TEMPFAIL, "cannot look up MX of %s: %s", q->domain, error);
		event_active(q->step, EV_TIMEOUT, 0);
	}
	return q;
}

struct dns_query *dns_lookup_host(struct dns_resolver *r, const char *host, uint16_t port,
				  dns_cb *cb, void *ctx, const char **error_r)
{
	char name[DNS_NAME_MAX + 1];
	struct dns_cand lit;
	struct dns_query *q;

	memset(&lit, 0, sizeof(lit));
	if (parse_ip_literal(host, &lit)) {
		if ((q = query_new(r, port, cb, ctx, error_r)) == NULL)
			return NULL;
		q->literal = true;
		snprintf(q->domain, sizeof(q->domain), "%s", host);
		add_cand(q, host, 0);
		q->cand[0].n4 = lit.n4;
		q->cand[0].n6 = lit.n6;
		memcpy(q->cand[0].a4, lit.a4, sizeof(lit.a4));
		memcpy(q->cand[0].a6, lit.a6, sizeof(lit.a6));
	} else {
		if (name_normalize(host, name, error_r) < 0)
			return NULL;
		if ((q = query_new(r, port, cb, ctx, error_r)) == NULL)
			return NULL;
		memcpy(q->domain, name, sizeof(name));
		add_cand(q, name, 0);
	}
	q->phase = Q_ADDR;
	/* The step event starts the address queries (or, for a literal,
	 * calls back): never from within this call. */
	event_active(q->step, EV_TIMEOUT, 0);
	return q;
}

void dns_cancel(struct dns_query *q)
{
	if (q == NULL || q->calling)
		return;
	query_free(q);
}

void dns_resolver_set_timeout(struct dns_resolver *r, unsigned msecs)
{
	r->timeout_ms = msecs > 0 ? msecs : 1;
}

/* "ADDR:PORT", "[ADDR]:PORT", "ADDR", "[ADDR]" into unbound's "ADDR@PORT". */
static int forwarder_parse(const char *s, char *out, size_t outsize)
{
	char addr[INET6_ADDRSTRLEN];
	unsigned char bin[16];
	const char *a = s, *end, *port = NULL;
	uint64_t num = 53;

	if (s[0] == '[') {
		a = s + 1;
		if ((end = strchr(a, ']')) == NULL)
			return -1;
		if (end[1] == ':')
			port = end + 2;
		else if (end[1] != '\0')
			return -1;
	} else {
		const char *colon = strchr(s, ':');
		if (colon != NULL && strchr(colon + 1, ':') == NULL) {
			end = colon;          /* IPv4:port */
			port = colon + 1;
		} else {
			end = s + strlen(s);  /* IPv4, or IPv6 without brackets or port */
		}
	}
	if ((size_t)(end - a) >= sizeof(addr) || end == a)
		return -1;
	memcpy(addr, a, (size_t)(end - a));
	addr[end - a] = '\0';
	if (inet_pton(AF_INET, addr, bin) != 1 && inet_pton(AF_INET6, addr, bin) != 1)
		return -1;
	if (port != NULL && (str_to_u64(port, &num) < 0 || num == 0 || num > 65535))
		return -1;
	if ((size_t)snprintf(out, outsize, "%s@%u", addr, (unsigned)num) >= outsize)
		return -1;
	return 0;
}

struct dns_resolver *dns_resolver_new(struct event_base *base, const char *forwarder,
				      const char *trust_anchor, const char **error_r)
{
	struct dns_resolver *r = calloc(1, sizeof(*r));
	char fwd[INET6_ADDRSTRLEN + 8];

	if (r == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	r->base = base;
	r->timeout_ms = DNS_DEFAULT_TIMEOUT_MS;
	if (forwarder != NULL && forwarder_parse(forwarder, fwd, sizeof(fwd)) < 0) {
		*error_r = "DNS forwarder is not ADDRESS[:PORT]";
		goto fail;
	}
	if ((r->ctx = ub_ctx_create_event(base)) == NULL) {
		*error_r = "cannot create the libunbound context";
		goto fail;
	}
	/* Records come in the order the server sent them: the random order
	 * among equal MX preferences is ours (mx_shuffle_sort). */
	if (ub_ctx_set_option(r->ctx, "rrset-roundrobin:", "no") != 0) {
		*error_r = "libunbound refused rrset-roundrobin: no";
		goto fail;
	}
	if (forwarder != NULL) {
		/* Test and private resolvers: their zones are usually unsigned
		 * for the root's chain of trust, so nothing is validated. */
		if (ub_ctx_set_fwd(r->ctx, fwd) != 0) {
			*error_r = "libunbound refused the DNS forwarder";
			goto fail;
		}
		/* libunbound answers names under test. (RFC 6761 6.2) NXDOMAIN
		 * itself by default; test networks use them, so ask the
		 * forwarder like for any other name. A configured zone replaces
		 * the default one ("nodefault" is mis-parsed by set_option). */
		if (ub_ctx_set_option(r->ctx, "local-zone:", "test. transparent") != 0) {
			*error_r = "libunbound refused local-zone test. transparent";
			goto fail;
		}
	} else {
		if (ub_ctx_resolvconf(r->ctx, NULL) != 0) {
			*error_r = "cannot read the DNS servers from /etc/resolv.conf";
			goto fail;
		}
		/* A missing /etc/hosts is no reason not to resolve. */
		(void)ub_ctx_hosts(r->ctx, NULL);
	}
	if (trust_anchor != NULL && ub_ctx_add_ta_file(r->ctx, trust_anchor) != 0) {
		*error_r = "cannot load the DNSSEC trust anchor file";
		goto fail;
	}
	return r;
fail:
	if (r->ctx != NULL)
		ub_ctx_delete(r->ctx);
	free(r);
	return NULL;
}

void dns_resolver_free(struct dns_resolver **rp)
{
	struct dns_resolver *r = *rp;

	if (r == NULL)
		return;
	*rp = NULL;
	/* Cancel first: libunbound ends the queries it still holds at delete
	 * time by calling back, and only cancelled ones are skipped. */
	while (r->queries != NULL)
		query_free(r->queries);
	ub_ctx_delete(r->ctx);
	free(r);
}
