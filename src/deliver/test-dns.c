/*
 * test-dns.c — unit tests for dns.c, and the `dns-lookup` test driver.
 *
 * Built twice (src/meson.build):
 *  - test-dns: cmocka tests of dns_packet_parse() on hand-built DNS messages
 *    (compression, CNAME chains, limits, every truncation, byte mutations),
 *    and of the lookup API where no DNS server is needed (IP literals, name
 *    checks, callbacks never synchronous, cancel, freeing with queries in
 *    flight).
 *  - dns-lookup (-DDNS_LOOKUP_MAIN, not installed): runs real lookups and
 *    prints one JSON line per result, for tests/integration/test_dns.py:
 *      dns-lookup [--forwarder ADDR:PORT] [--port N] [--timeout MS]
 *                 [--repeat N] [--concurrent] (--mx DOMAIN | --host NAME)...
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <event2/event.h>

#include "deliver/dns.h"
#include "lib/util.h"

/* "127.0.0.2:25" / "[::1]:25" */
static void format_addr(const struct sockaddr_storage *ss, char *out, size_t size)
{
	char ip[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
		snprintf(out, size, "%s:%u", ip, ntohs(sin->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
		snprintf(out, size, "[%s]:%u", ip, ntohs(sin6->sin6_port));
	} else {
		snprintf(out, size, "?family=%d", ss->ss_family);
	}
}

static const char *status_name(enum dns_status s)
{
	switch (s) {
	case DNS_OK: return "OK";
	case DNS_TEMPFAIL: return "TEMPFAIL";
	case DNS_PERMFAIL: return "PERMFAIL";
	case DNS_NULL_MX: return "NULL_MX";
	}
	return "?";
}

#ifdef DNS_LOOKUP_MAIN
/* ------------------------------------------------------------ the driver */

struct op {
	bool mx;
	const char *name;
};

struct run {
	struct event_base *base;
	struct dns_resolver *r;
	uint16_t port;
	bool in_call;            /* inside dns_lookup_*: a callback now is a bug */
	size_t outstanding;
};

struct job {
	struct run *run;
	const struct op *op;
	struct timespec start;
};

static void json_str(const char *s)
{
	putchar('"');
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void lookup_cb(const struct dns_result *res, void *ctx)
{
	struct job *job = ctx;
	struct timespec now;
	char addr[INET6_ADDRSTRLEN + 16];
	long ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (now.tv_sec - job->start.tv_sec) * 1000 +
	     (now.tv_nsec - job->start.tv_nsec) / 1000000;
	printf("{\"query\": \"%s\", \"name\": ", job->op->mx ? "mx" : "host");
	json_str(job->op->name);
	printf(", \"status\": \"%s\", \"error\": ", status_name(res->status));
	json_str(res->error);
	printf(", \"secure\": %s, \"implicit_mx\": %s, \"sync_callback\": %s, "
	       "\"elapsed_ms\": %ld, \"hosts\": [",
	       res->secure ? "true" : "false", res->implicit_mx ? "true" : "false",
	       job->run->in_call ? "true" : "false", ms);
	for (size_t i = 0; i < res->nhosts; i++) {
		const struct dns_host *h = &res->hosts[i];
		printf("%s{\"name\": ", i > 0 ? ", " : "");
		json_str(h->name);
		printf(", \"pref\": %u, \"addrs\": [", h->pref);
		for (size_t j = 0; j < h->naddrs; j++) {
			format_addr(&h->addrs[j], addr, sizeof(addr));
			printf("%s\"%s\"", j > 0 ? ", " : "", addr);
		}
		printf("]}");
	}
	printf("]}\n");
	fflush(stdout);
	/* libunbound keeps timers of abandoned queries (a timeout) for a
	 * while: do not wait for those to run out. */
	if (--job->run->outstanding == 0)
		event_base_loopbreak(job->run->base);
	free(job);
}

static int start(struct run *run, const struct op *op)
{
	struct job *job = calloc(1, sizeof(*job));
	const char *error = NULL;
	struct dns_query *q;

	if (job == NULL)
		return -1;
	job->run = run;
	job->op = op;
	clock_gettime(CLOCK_MONOTONIC, &job->start);
	run->in_call = true;
	if (op->mx)
		q = dns_lookup_mx(run->r, op->name, run->port, lookup_cb, job, &error);
	else
		q = dns_lookup_host(run->r, op->name, run->port, lookup_cb, job, &error);
	run->in_call = false;
	if (q == NULL) {
		printf("{\"query\": \"%s\", \"name\": ", op->mx ? "mx" : "host");
		json_str(op->name);
		printf(", \"status\": \"ERROR\", \"error\": ");
		json_str(error);
		printf(", \"hosts\": []}\n");
		fflush(stdout);
		free(job);
		return -1;
	}
	run->outstanding++;
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: dns-lookup [--forwarder ADDR:PORT] [--port N] [--timeout MS]\n"
			"                  [--repeat N] [--concurrent] (--mx DOMAIN | --host NAME)...\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct op ops[64];
	size_t nops = 0;
	const char *forwarder = NULL, *error = NULL;
	uint64_t num, repeat = 1, timeout = 0, port = 25;
	bool concurrent = false;
	struct run run;
	int ret = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--concurrent") == 0) {
			concurrent = true;
			continue;
		}
		if (v == NULL)
			return usage();
		i++;
		if (strcmp(a, "--forwarder") == 0) {
			forwarder = v;
		} else if ((strcmp(a, "--mx") == 0 || strcmp(a, "--host") == 0) &&
			   nops < sizeof(ops) / sizeof(ops[0])) {
			ops[nops].mx = strcmp(a, "--mx") == 0;
			ops[nops++].name = v;
		} else if (str_to_u64(v, &num) == 0 && strcmp(a, "--repeat") == 0 && num > 0) {
			repeat = num;
		} else if (str_to_u64(v, &num) == 0 && strcmp(a, "--timeout") == 0) {
			timeout = num;
		} else if (str_to_u64(v, &num) == 0 && strcmp(a, "--port") == 0 && num <= 65535) {
			port = num;
		} else {
			return usage();
		}
	}
	if (nops == 0)
		return usage();

	memset(&run, 0, sizeof(run));
	run.port = (uint16_t)port;
	if ((run.base = event_base_new()) == NULL)
		return 1;
	if ((run.r = dns_resolver_new(run.base, forwarder, NULL, &error)) == NULL) {
		fprintf(stderr, "dns-lookup: %s\n", error);
		event_base_free(run.base);
		return 1;
	}
	if (timeout > 0)
		dns_resolver_set_timeout(run.r, (unsigned)timeout);
	for (uint64_t n = 0; n < repeat; n++) {
		for (size_t i = 0; i < nops; i++) {
			if (start(&run, &ops[i]) < 0)
				ret = 1;
			if (!concurrent)
				event_base_dispatch(run.base);
		}
	}
	if (run.outstanding > 0)
		event_base_dispatch(run.base);
	if (run.outstanding != 0) {
		fprintf(stderr, "dns-lookup: %zu callbacks missing\n", run.outstanding);
		ret = 1;
	}
	dns_resolver_free(&run.r);
	event_base_free(run.base);
	return ret;
}

#else
/* ------------------------------------------------------- the unit tests */

#include <cmocka.h>

#define CHECK(label, cond) \
	do { \
		if (!(cond)) \
			fail_msg("case '%s': check failed: %s", (label), #cond); \
	} while (0)

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* A DNS message builder: names uncompressed unless written with pb_ptr. */
struct pb {
	unsigned char b[2048];
	size_t len;
};

static void pb_u8(struct pb *p, unsigned v)
{
	assert_true(p->len < sizeof(p->b));
	p->b[p->len++] = (unsigned char)v;
}

static void pb_u16(struct pb *p, unsigned v)
{
	pb_u8(p, v >> 8);
	pb_u8(p, v & 0xff);
}

static void pb_raw(struct pb *p, const void *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		pb_u8(p, ((const unsigned char *)d)[i]);
}

/* Labels of "a.b.c"; with end, the terminating zero octet too. */
static void pb_labels(struct pb *p, const char *dotted, bool end)
{
	const char *s = dotted;

	while (*s != '\0') {
		const char *dot = strchr(s, '.');
		size_t n = dot != NULL ? (size_t)(dot - s) : strlen(s);
		pb_u8(p, (unsigned)n);
		pb_raw(p, s, n);
		s += n;
		if (*s == '.')
			s++;
	}
	if (end)
		pb_u8(p, 0);
}

static void pb_name(struct pb *p, const char *dotted)
{
	pb_labels(p, dotted, true);
}

static void pb_ptr(struct pb *p, size_t off)
{
	pb_u16(p, 0xc000 | (unsigned)off);
}

static void pb_header(struct pb *p, unsigned rcode, unsigned qd, unsigned an)
{
	p->len = 0;
	pb_u16(p, 0x1234);
	pb_u16(p, 0x8180 | rcode);
	pb_u16(p, qd);
	pb_u16(p, an);
	pb_u16(p, 0);
	pb_u16(p, 0);
}

#define QNAME_OFF 12    /* where the question's name starts */

static void pb_question(struct pb *p, const char *name, unsigned type)
{
	pb_name(p, name);
	pb_u16(p, type);
	pb_u16(p, 1);
}

/* Type, class, TTL and a placeholder RDLENGTH after the owner name; returns
 * where RDLENGTH is, for pb_rr_end. */
static size_t pb_rr_begin(struct pb *p, unsigned type, unsigned class)
{
	size_t at;

	pb_u16(p, type);
	pb_u16(p, class);
	pb_u16(p, 0);
	pb_u16(p, 3600);
	at = p->len;
	pb_u16(p, 0);
	return at;
}

static void pb_rr_end(struct pb *p, size_t at)
{
	size_t n = p->len - at - 2;
	p->b[at] = (unsigned char)(n >> 8);
	p->b[at + 1] = (unsigned char)n;
}

static void pb_a(struct pb *p, const char *owner, const char *ip)
{
	unsigned char a[4];
	assert_int_equal(inet_pton(AF_INET, ip, a), 1);
	pb_name(p, owner);
	size_t at = pb_rr_begin(p, DNS_TYPE_A, 1);
	pb_raw(p, a, 4);
	pb_rr_end(p, at);
}

static void pb_mx(struct pb *p, const char *owner, unsigned pref, const char *target)
{
	pb_name(p, owner);
	size_t at = pb_rr_begin(p, DNS_TYPE_MX, 1);
	pb_u16(p, pref);
	pb_name(p, target);
	pb_rr_end(p, at);
}

static void pb_cname(struct pb *p, const char *owner, const char *target)
{
	pb_name(p, owner);
	size_t at = pb_rr_begin(p, DNS_TYPE_CNAME, 1);
	pb_name(p, target);
	pb_rr_end(p, at);
}

/* --- the messages, one builder per case --- */

static void m_mx_compressed(struct pb *p)
{
	pb_header(p, 0, 1, 2);
	pb_question(p, "example.test", DNS_TYPE_MX);
	pb_ptr(p, QNAME_OFF);
	size_t at = pb_rr_begin(p, DNS_TYPE_MX, 1);
	pb_u16(p, 10);
	pb_labels(p, "mx1", false);
	pb_ptr(p, QNAME_OFF);
	pb_rr_end(p, at);
	pb_mx(p, "example.test", 20, "mx2.example.test");
}

static void m_mx_case(struct pb *p)
{
	pb_header(p, 0, 1, 1);
	pb_question(p, "Example.TEST", DNS_TYPE_MX);
	pb_mx(p, "EXAMPLE.test", 5, "MX.Example.TEST");
}

static void m_null_mx(struct pb *p)
{
	pb_header(p, 0, 1, 1);
	pb_question(p, "nullmx.test", DNS_TYPE_MX);
	pb_mx(p, "nullmx.test", 0, "");
}

static void m_cname_chain(struct pb *p)
{
	pb_header(p, 0, 1, 4);
	pb_question(p, "www.a.test", DNS_TYPE_A);
	pb_cname(p, "www.a.test", "b.test");
	pb_cname(p, "b.test", "c.test");
	pb_a(p, "c.test", "192.0.2.1");
	pb_a(p, "other.test", "192.0.2.9");
}

static void m_cname_reversed(struct pb *p)
{
	pb_header(p, 0, 1, 4);
	pb_question(p, "www.a.test", DNS_TYPE_A);
	pb_a(p, "c.test", "192.0.2.1");
	pb_a(p, "www.a.test", "192.0.2.8");   /* beside a CNAME: not the chain's end */
	pb_cname(p, "b.test", "c.test");
	pb_cname(p, "www.a.test", "b.test");
}

static void m_cname_loop(struct pb *p)
{
	pb_header(p, 0, 1, 3);
	pb_question(p, "a.test", DNS_TYPE_A);
	pb_cname(p, "a.test", "b.test");
	pb_cname(p, "b.test", "a.test");
	pb_a(p, "a.test", "192.0.2.1");
}

static void m_nxdomain(struct pb *p)
{
	pb_header(p, 3, 1, 0);
	pb_question(p, "nx.test", DNS_TYPE_MX);
}

static void m_aaaa(struct pb *p)
{
	unsigned char a[16];
	pb_header(p, 0, 1, 1);
	pb_question(p, "v6.test", DNS_TYPE_AAAA);
	pb_ptr(p, QNAME_OFF);
	size_t at = pb_rr_begin(p, DNS_TYPE_AAAA, 1);
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::25", a), 1);
	pb_raw(p, a, 16);
	pb_rr_end(p, at);
}

static void m_ignored(struct pb *p)
{
	pb_header(p, 0, 1, 4);
	pb_question(p, "x.test", DNS_TYPE_A);
	pb_a(p, "y.test", "192.0.2.2");                  /* other owner */
	pb_name(p, "x.test");
	size_t at = pb_rr_begin(p, DNS_TYPE_A, 3);         /* class CH */
	pb_raw(p, "\1\2\3\4", 4);
	pb_rr_end(p, at);
	pb_name(p, "x.test");
	at = pb_rr_begin(p, 46, 1);                        /* RRSIG */
	pb_raw(p, "whatever", 8);
	pb_rr_end(p, at);
	pb_a(p, "x.test", "192.0.2.3");
}

static void m_a_bad_length(struct pb *p)
{
	pb_header(p, 0, 1, 1);
	pb_question(p, "x.test", DNS_TYPE_A);
	pb_name(p, "x.test");
	size_t at = pb_rr_begin(p, DNS_TYPE_A, 1);
	pb_raw(p, "\1\2\3\4\5", 5);
	pb_rr_end(p, at);
}

static void m_mx_overrun(struct pb *p)
{
	pb_header(p, 0, 1, 1);
	pb_question(p, "x.test", DNS_TYPE_MX);
	pb_name(p, "x.test");
	size_t at = pb_rr_begin(p, DNS_TYPE_MX, 1);
	pb_u16(p, 10);
	pb_name(p, "mx.x.test");
	pb_rr_end(p, at);
	p->b[at + 1] -= 3;      /* RDLENGTH ends inside the exchange name */
}

static void m_ptr_forward(struct pb *p)
{
	pb_header(p, 0, 1, 1);
	pb_question(p, "x.test", DNS_TYPE_A);
	pb_ptr(p, p->len + 2);  /* points at the type that follows */
	size_t at = pb_rr_begin(p, DNS_TYPE_A, 1);
	pb_raw(p, "\1\2\3\4", 4);
	pb_rr_end(p, at);
}

static void m_ptr_self(struct pb *p)
{
	pb_header(p, 0, 1, 1);
	pb_question(p, "x.test", DNS_TYPE_A);
	pb_ptr(p, p->len);
	size_t at = pb_rr_begin(p, DNS_TYPE_A, 1);
	pb_raw(p, "\1\2\3\4", 4);
	pb_rr_end(p, at);
}

static void m_ptr_loop(struct pb *p)
{
	/* Answer 1's owner "a" + pointer to answer 2's owner, which points
	 * back into answer 1: each pointer alone may look plausible. */
	pb_header(p, 0, 1, 2);
	pb_question(p, "x.test", DNS_TYPE_A);
	size_t first = p->len;
	pb_labels(p, "a", false);
	size_t fix = p->len;
	pb_ptr(p, 0);
	size_t at = pb_rr_begin(p, DNS_TYPE_A, 1);
	pb_raw(p, "\1\2\3\4", 4);
	pb_rr_end(p, at);
	size_t second = p->len;
	pb_labels(p, "b", false);
	pb_ptr(p, first);
	at = pb_rr_begin(p, DNS_TYPE_A, 1);
	pb_raw(p, "\1\2\3\4", 4);
	pb_rr_end(p, at);
	p->b[fix] = (unsigned char)(0xc0 | second >> 8);
	p->b[fix + 1] = (unsigned char)second;
}

static void m_label_0x40(struct pb *p)
{
	pb_header(p, 0, 1, 0);
	pb_u8(p, 0x41);
	pb_raw(p, "x", 1);
	pb_u8(p, 0);
	pb_u16(p, DNS_TYPE_A);
	pb_u16(p, 1);
}

static char long_label[64];   /* 63 'a' */

static void m_name_too_long(struct pb *p)
{
	pb_header(p, 0, 1, 0);
	for (int i = 0; i < 4; i++)
		pb_labels(p, long_label, false);   /* 4 * 64 + 1 = 257 octets */
	pb_u8(p, 0);
	pb_u16(p, DNS_TYPE_A);
	pb_u16(p, 1);
}

static void m_name_255(struct pb *p)
{
	/* 3 * 64 + 62 + 1 = 255 octets: the longest name, 253 in text. */
	pb_header(p, 0, 1, 1);
	pb_question(p, "x.test", DNS_TYPE_MX);
	pb_name(p, "x.test");
	size_t at = pb_rr_begin(p, DNS_TYPE_MX, 1);
	pb_u16(p, 1);
	for (int i = 0; i < 3; i++)
		pb_labels(p, long_label, false);
	pb_u8(p, 61);
	for (int i = 0; i < 61; i++)
		pb_u8(p, 'b');
	pb_u8(p, 0);
	pb_rr_end(p, at);
}

static void m_mx_bad_labels(struct pb *p)
{
	pb_header(p, 0, 1, 3);
	pb_question(p, "x.test", DNS_TYPE_MX);
	pb_name(p, "x.test");
	size_t at = pb_rr_begin(p, DNS_TYPE_MX, 1);
	pb_u16(p, 10);
	pb_u8(p, 3);
	pb_raw(p, "a.b", 3);                 /* a dot inside a label */
	pb_name(p, "test");
	pb_rr_end(p, at);
	pb_name(p, "x.test");
	at = pb_rr_begin(p, DNS_TYPE_MX, 1);
	pb_u16(p, 20);
	pb_u8(p, 3);
	pb_raw(p, "a b", 3);                 /* a space */
	pb_name(p, "test");
	pb_rr_end(p, at);
	pb_mx(p, "x.test", 30, "good.x.test");
}

static void m_no_question(struct pb *p)
{
	pb_header(p, 0, 0, 0);
}

static void m_short(struct pb *p)
{
	pb_header(p, 0, 1, 0);
	p->len = 11;
}

static void m_many_a(struct pb *p)
{
	pb_header(p, 0, 1, 5);
	pb_question(p, "x.test", DNS_TYPE_A);
	pb_a(p, "x.test", "192.0.2.1");
	pb_a(p, "x.test", "192.0.2.2");
	pb_a(p, "x.test", "192.0.2.3");
	pb_a(p, "x.test", "192.0.2.4");
	pb_a(p, "x.test", "192.0.2.5");
}

static void m_two_questions(struct pb *p)
{
	pb_header(p, 0, 2, 1);
	pb_question(p, "x.test", DNS_TYPE_A);
	pb_question(p, "y.test", DNS_TYPE_A);
	pb_a(p, "x.test", "192.0.2.7");
}

struct parse_case {
	const char *label;
	void (*build)(struct pb *p);
	uint16_t qtype;
	size_t max;
	int ret;
	int rcode;
	const char *expect;     /* records as "pref name;..." or "addr;...", NULL: unchecked */
};

static const struct parse_case parse_cases[] = {
	{ "MX, compressed names", m_mx_compressed, DNS_TYPE_MX, 8, 0, 0,
	  "10 mx1.example.test;20 mx2.example.test" },
	{ "MX, case folded", m_mx_case, DNS_TYPE_MX, 8, 0, 0, "5 mx.example.test" },
	{ "null MX", m_null_mx, DNS_TYPE_MX, 8, 0, 0, "0 " },
	{ "A through a CNAME chain", m_cname_chain, DNS_TYPE_A, 8, 0, 0, "192.0.2.1" },
	{ "CNAME chain in reverse order", m_cname_reversed, DNS_TYPE_A, 8, 0, 0, "192.0.2.1" },
	{ "CNAME loop ends", m_cname_loop, DNS_TYPE_A, 8, 0, 0, NULL },
	{ "NXDOMAIN", m_nxdomain, DNS_TYPE_MX, 8, 0, 3, "" },
	{ "NXDOMAIN asked as A", m_nxdomain, DNS_TYPE_A, 8, 0, 3, "" },
	{ "AAAA", m_aaaa, DNS_TYPE_AAAA, 8, 0, 0, "2001:db8::25" },
	{ "other owner, class, type ignored", m_ignored, DNS_TYPE_A, 8, 0, 0, "192.0.2.3" },
	{ "A of 5 octets", m_a_bad_length, DNS_TYPE_A, 8, -1, 0, NULL },
	{ "A of 5 octets, asked AAAA", m_a_bad_length, DNS_TYPE_AAAA, 8, 0, 0, "" },
	{ "MX name beyond RDLENGTH", m_mx_overrun, DNS_TYPE_MX, 8, -1, 0, NULL },
	{ "forward pointer", m_ptr_forward, DNS_TYPE_A, 8, -1, 0, NULL },
	{ "pointer to itself", m_ptr_self, DNS_TYPE_A, 8, -1, 0, NULL },
	{ "pointer loop", m_ptr_loop, DNS_TYPE_A, 8, -1, 0, NULL },
	{ "label type 0x40", m_label_0x40, DNS_TYPE_A, 8, -1, 0, NULL },
	{ "name of 257 octets", m_name_too_long, DNS_TYPE_A, 8, -1, 0, NULL },
	{ "MX name of 255 octets", m_name_255, DNS_TYPE_MX, 8, 0, 0, NULL },
	{ "MX labels with '.' or space skipped", m_mx_bad_labels, DNS_TYPE_MX, 8, 0, 0,
	  "30 good.x.test" },
	{ "no question", m_no_question, DNS_TYPE_A, 8, -1, 0, NULL },
	{ "shorter than a header", m_short, DNS_TYPE_A, 8, -1, 0, NULL },
	{ "more records than max", m_many_a, DNS_TYPE_A, 3, 0, 0,
	  "192.0.2.1;192.0.2.2;192.0.2.3" },
	{ "two questions, the first counts", m_two_questions, DNS_TYPE_A, 8, 0, 0,
	  "192.0.2.7" },
};

static void format_rrs(const struct dns_rr *rrs, size_t n, char *out, size_t size)
{
	size_t o = 0;

	out[0] = '\0';
	for (size_t i = 0; i < n && o < size; i++) {
		char ip[INET6_ADDRSTRLEN];
		const char *sep = i > 0 ? ";" : "";
		if (rrs[i].type == DNS_TYPE_MX)
			o += (size_t)snprintf(out + o, size - o, "%s%u %s", sep, rrs[i].pref,
					      rrs[i].name);
		else {
			inet_ntop(rrs[i].type == DNS_TYPE_A ? AF_INET : AF_INET6, rrs[i].addr,
				  ip, sizeof(ip));
			o += (size_t)snprintf(out + o, size - o, "%s%s", sep, ip);
		}
	}
}

static void test_parse_cases(void **state)
{
	for (size_t i = 0; i < N_ELEMENTS(parse_cases); i++) {
		const struct parse_case *c = &parse_cases[i];
		struct dns_rr rrs[8];
		struct pb p;
		char got[1024];
		const char *error = NULL;
		size_t n = 99;
		int rcode = -1;

		memset(&p, 0, sizeof(p));
		c->build(&p);
		int ret = dns_packet_parse(p.b, p.len, c->qtype, rrs, c->max, &n, &rcode, &error);
		if (ret != c->ret)
			fail_msg("case '%s': returned %d (%s), expected %d", c->label, ret,
				 error != NULL ? error : "", c->ret);
		if (ret < 0) {
			CHECK(c->label, error != NULL && error[0] != '\0');
			continue;
		}
		CHECK(c->label, rcode == c->rcode);
		CHECK(c->label, n <= c->max);
		if (c->expect == NULL)
			continue;
		format_rrs(rrs, n, got, sizeof(got));
		if (strcmp(got, c->expect) != 0)
			fail_msg("case '%s': got \"%s\", expected \"%s\"", c->label, got, c->expect);
	}
}

static void test_parse_longest_name(void **state)
{
	struct dns_rr rrs[2];
	struct pb p;
	const char *error;
	size_t n;
	int rcode;

	memset(&p, 0, sizeof(p));
	m_name_255(&p);
	assert_int_equal(dns_packet_parse(p.b, p.len, DNS_TYPE_MX, rrs, 2, &n, &rcode, &error), 0);
	assert_int_equal(n, 1);
	assert_int_equal(strlen(rrs[0].name), DNS_NAME_MAX);
	assert_int_equal(rrs[0].name[DNS_NAME_MAX - 1], 'b');
}

/* Every strict prefix of a valid message is malformed: the counts promise more. */
static void test_parse_truncated(void **state)
{
	void (*builders[])(struct pb *) = {
		m_mx_compressed, m_cname_chain, m_aaaa, m_ignored, m_name_255, m_mx_bad_labels,
	};
	uint16_t qtypes[] = {
		DNS_TYPE_MX, DNS_TYPE_A, DNS_TYPE_AAAA, DNS_TYPE_A, DNS_TYPE_MX, DNS_TYPE_MX,
	};

	for (size_t b = 0; b < N_ELEMENTS(builders); b++) {
		struct pb p;
		struct dns_rr rrs[8];
		const char *error;
		size_t n;
		int rcode;

		memset(&p, 0, sizeof(p));
		builders[b](&p);
		assert_int_equal(dns_packet_parse(p.b, p.len, qtypes[b], rrs, 8, &n, &rcode,
						  &error), 0);
		for (size_t len = 0; len < p.len; len++) {
			/* A copy of exactly len octets, so ASan sees any over-read. */
			unsigned char *copy = malloc(len > 0 ? len : 1);
			assert_non_null(copy);
			memcpy(copy, p.b, len);
			if (dns_packet_parse(copy, len, qtypes[b], rrs, 8, &n, &rcode, &error) != -1)
				fail_msg("builder %zu: prefix of %zu/%zu octets parsed", b, len, p.len);
			free(copy);
		}
	}
}

/* Each octet set to values that mean something to a parser: no crash, no
 * over-read, results within bounds. */
static void test_parse_mutations(void **state)
{
	static const unsigned char values[] = { 0x00, 0x01, 0x3f, 0x40, 0xc0, 0xc1, 0xff };
	void (*builders[])(struct pb *) = { m_mx_compressed, m_cname_chain, m_ptr_loop };
	uint16_t qtypes[] = { DNS_TYPE_MX, DNS_TYPE_A, DNS_TYPE_A };

	for (size_t b = 0; b < N_ELEMENTS(builders); b++) {
		struct pb p;

		memset(&p, 0, sizeof(p));
		builders[b](&p);
		for (size_t pos = 0; pos < p.len; pos++) {
			for (size_t v = 0; v < N_ELEMENTS(values); v++) {
				unsigned char *copy = malloc(p.len);
				struct dns_rr rrs[4];
				const char *error;
				size_t n = 0;
				int rcode;

				assert_non_null(copy);
				memcpy(copy, p.b, p.len);
				copy[pos] = values[v];
				int ret = dns_packet_parse(copy, p.len, qtypes[b], rrs, 4, &n, &rcode,
							   &error);
				assert_true(ret == 0 || ret == -1);
				if (ret == 0) {
					assert_true(n <= 4);
					for (size_t i = 0; i < n; i++)
						assert_true(strlen(rrs[i].name) <= DNS_NAME_MAX);
				}
				free(copy);
			}
		}
	}
}

/* --- the lookup API without a DNS server --- */

struct cb_state {
	int calls;
	bool in_call;
	bool sync;
	struct event_base *base;
	struct dns_result res;
};

static void record_cb(const struct dns_result *res, void *ctx)
{
	struct cb_state *st = ctx;

	st->calls++;
	st->sync = st->sync || st->in_call;
	st->res = *res;
}

/* Nothing listens on the discard port of loopback: lookups stay pending. */
#define DEAD_FORWARDER "127.0.0.1:9"

struct literal_case {
	const char *label;
	const char *host;
	const char *addr;    /* NULL: refused at once */
};

static const struct literal_case literal_cases[] = {
	{ "IPv4", "127.0.0.1", "127.0.0.1:2525" },
	{ "IPv6", "::1", "[::1]:2525" },
	{ "IPv6 in brackets", "[::1]", "[::1]:2525" },
	{ "IPv4 in brackets", "[192.0.2.4]", "192.0.2.4:2525" },
	{ "RFC 5321 IPv6 literal", "[IPv6:2001:db8::1]", "[2001:db8::1]:2525" },
	{ "unclosed bracket", "[::1", NULL },
	{ "space", "mail example.test", NULL },
	{ "empty", "", NULL },
	{ "empty label", "a..test", NULL },
	{ "only a dot", ".", NULL },
	{ "slash", "a/b.test", NULL },
	{ "label of 64", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test",
	  NULL },
};

static void test_host_literals(void **state)
{
	struct event_base *base = event_base_new();
	const char *error = NULL;
	struct dns_resolver *r = dns_resolver_new(base, DEAD_FORWARDER, NULL, &error);

	assert_non_null(r);
	for (size_t i = 0; i < N_ELEMENTS(literal_cases); i++) {
		const struct literal_case *c = &literal_cases[i];
		struct cb_state st;
		char got[INET6_ADDRSTRLEN + 16];

		memset(&st, 0, sizeof(st));
		st.in_call = true;
		error = NULL;
		struct dns_query *q = dns_lookup_host(r, c->host, 2525, record_cb, &st, &error);
		st.in_call = false;
		if (c->addr == NULL) {
			CHECK(c->label, q == NULL && error != NULL);
			continue;
		}
		CHECK(c->label, q != NULL);
		CHECK(c->label, st.calls == 0);
		event_base_dispatch(base);
		CHECK(c->label, st.calls == 1 && !st.sync);
		CHECK(c->label, st.res.status == DNS_OK);
		CHECK(c->label, st.res.nhosts == 1 && st.res.hosts[0].naddrs == 1);
		CHECK(c->label, st.res.hosts[0].pref == 0 && !st.res.secure);
		format_addr(&st.res.hosts[0].addrs[0], got, sizeof(got));
		if (strcmp(got, c->addr) != 0)
			fail_msg("case '%s': got %s, expected %s", c->label, got, c->addr);
		CHECK(c->label, st.res.hosts[0].addrlens[0] ==
		      (st.res.hosts[0].addrs[0].ss_family == AF_INET ?
		       sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)));
	}
	dns_resolver_free(&r);
	assert_null(r);
	event_base_free(base);
}

static void test_mx_bad_names(void **state)
{
	static const char *bad[] = {
		"", ".", "a..b", "exa mple.test", "ex\"ample.test", "a/b", "[127.0.0.1]",
		"ex\xc3\xa9mple.test",
	};
	struct event_base *base = event_base_new();
	const char *error = NULL;
	struct dns_resolver *r = dns_resolver_new(base, DEAD_FORWARDER, NULL, &error);
	char longname[300];
	struct cb_state st;

	assert_non_null(r);
	memset(&st, 0, sizeof(st));
	for (size_t i = 0; i < N_ELEMENTS(bad); i++) {
		error = NULL;
		if (dns_lookup_mx(r, bad[i], 25, record_cb, &st, &error) != NULL)
			fail_msg("'%s' accepted", bad[i]);
		assert_non_null(error);
	}
	/* 254 octets without the dot is one too many. */
	memset(longname, 'a', sizeof(longname));
	for (size_t i = 63; i < 254; i += 64)
		longname[i] = '.';
	longname[254] = '\0';
	assert_null(dns_lookup_mx(r, longname, 25, record_cb, &st, &error));
	assert_int_equal(st.calls, 0);
	dns_resolver_free(&r);
	event_base_free(base);
}

static void test_resolver_forwarders(void **state)
{
	static const struct { const char *fwd; bool ok; } cases[] = {
		{ "127.0.0.1:5353", true }, { "[::1]:53", true }, { "127.0.0.1", true },
		{ "::1", true }, { "[::1]", true }, { "localhost:53", false },
		{ "127.0.0.1:0", false }, { "127.0.0.1:65536", false }, { "127.0.0.1:", false },
		{ "[::1", false }, { "[::1]x", false }, { "", false },
	};
	struct event_base *base = event_base_new();

	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		const char *error = NULL;
		struct dns_resolver *r = dns_resolver_new(base, cases[i].fwd, NULL, &error);
		CHECK(cases[i].fwd, (r != NULL) == cases[i].ok);
		CHECK(cases[i].fwd, r != NULL || error != NULL);
		dns_resolver_free(&r);
	}
	event_base_free(base);
}

/* A DNS server that never answers: a bound UDP socket nobody reads.
 * Returns the socket; fwd gets "127.0.0.1:PORT". */
static evutil_socket_t blackhole(char *fwd, size_t size)
{
	evutil_socket_t s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in sin;
	socklen_t slen = sizeof(sin);

	assert_true(s >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sin, &slen), 0);
	snprintf(fwd, size, "127.0.0.1:%u", ntohs(sin.sin_port));
	return s;
}

static void stop_loop_cb(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(arg);
}

/* Cancelled lookups, and lookups still in flight when the resolver is
 * freed, never call back (and leak nothing: ASan). */
static void test_cancel_and_free(void **state)
{
	struct event_base *base = event_base_new();
	const char *error = NULL;
	char fwd[64];
	evutil_socket_t hole = blackhole(fwd, sizeof(fwd));
	struct dns_resolver *r = dns_resolver_new(base, fwd, NULL, &error);
	struct cb_state a, b, c;
	struct timeval tv = { 0, 200 * 1000 };
	struct event *stop = evtimer_new(base, stop_loop_cb, base);

	assert_non_null(r);
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	memset(&c, 0, sizeof(c));
	struct dns_query *qa = dns_lookup_mx(r, "example.test", 25, record_cb, &a, &error);
	struct dns_query *qb = dns_lookup_host(r, "mx.example.test", 25, record_cb, &b, &error);
	struct dns_query *qc = dns_lookup_host(r, "127.0.0.1", 25, record_cb, &c, &error);
	assert_non_null(qa);
	assert_non_null(qb);
	assert_non_null(qc);
	dns_cancel(qa);
	dns_cancel(qc);          /* already answerable, not yet called back */
	evtimer_add(stop, &tv);
	event_base_dispatch(base);
	assert_int_equal(a.calls, 0);
	assert_int_equal(c.calls, 0);
	/* qb's queries went to a silent server: still in flight. */
	assert_int_equal(b.calls, 0);
	dns_resolver_free(&r);
	event_base_dispatch(base);
	assert_int_equal(b.calls, 0);
	evutil_closesocket(hole);
	event_free(stop);
	event_base_free(base);
}

struct free_in_cb {
	struct dns_resolver *r;
	int calls;
	struct cb_state other;
};

static void free_resolver_cb(const struct dns_result *res, void *ctx)
{
	struct free_in_cb *f = ctx;

	f->calls++;
	dns_resolver_free(&f->r);
}

/* A callback may free the resolver, with other lookups still pending. */
static void test_free_from_callback(void **state)
{
	struct event_base *base = event_base_new();
	const char *error = NULL;
	struct free_in_cb f;
	char fwd[64];
	evutil_socket_t hole = blackhole(fwd, sizeof(fwd));

	memset(&f, 0, sizeof(f));
	f.r = dns_resolver_new(base, fwd, NULL, &error);
	assert_non_null(f.r);
	assert_non_null(dns_lookup_mx(f.r, "pending.test", 25, record_cb, &f.other, &error));
	assert_non_null(dns_lookup_host(f.r, "::1", 25, free_resolver_cb, &f, &error));
	event_base_dispatch(base);
	assert_int_equal(f.calls, 1);
	assert_null(f.r);
	assert_int_equal(f.other.calls, 0);
	evutil_closesocket(hole);
	event_base_free(base);
}

static void loopbreak_cb(const struct dns_result *res, void *ctx)
{
	struct cb_state *st = ctx;

	record_cb(res, ctx);
	/* libunbound's timers for the abandoned query run on for a while. */
	event_base_loopbreak(st->base);
}

/* The overall timeout ends a lookup whose server never answers. */
static void test_timeout(void **state)
{
	struct event_base *base = event_base_new();
	const char *error = NULL;
	struct dns_resolver *r;
	struct cb_state st;
	char fwd[64];
	evutil_socket_t s = blackhole(fwd, sizeof(fwd));

	r = dns_resolver_new(base, fwd, NULL, &error);
	assert_non_null(r);
	dns_resolver_set_timeout(r, 300);
	memset(&st, 0, sizeof(st));
	assert_non_null(dns_lookup_mx(r, "slow.test", 25, loopbreak_cb, &st, &error));
	st.base = base;
	event_base_dispatch(base);
	assert_int_equal(st.calls, 1);
	assert_int_equal(st.res.status, DNS_TEMPFAIL);
	assert_non_null(strstr(st.res.error, "timeout"));
	assert_int_equal(st.res.nhosts, 0);
	dns_resolver_free(&r);
	evutil_closesocket(s);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_cases),
		cmocka_unit_test(test_parse_longest_name),
		cmocka_unit_test(test_parse_truncated),
		cmocka_unit_test(test_parse_mutations),
		cmocka_unit_test(test_host_literals),
		cmocka_unit_test(test_mx_bad_names),
		cmocka_unit_test(test_resolver_forwarders),
		cmocka_unit_test(test_cancel_and_free),
		cmocka_unit_test(test_free_from_callback),
		cmocka_unit_test(test_timeout),
	};

	memset(long_label, 'a', 63);
	(void)status_name;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
