/* imap-load — mailbox generator and IMAP load generator for bench/imap (not part of Postern).
 *
 * Compiled by bench/imap into its temporary directory (cc -O2 -pthread ... -lssl -lcrypto
 * -lsodium).
 * Linux only. The same binary drives Postern and Dovecot, so both get exactly the same load.
 *
 *   imap-load gen DIR COUNT SEED EXPECT
 *       Writes COUNT messages of realistic shape into the Maildir DIR (cur/, with flags in
 *       the info part: ~85 % seen, some flagged/answered, ~12 % unseen; mtime = Date:) and
 *       the expected answers of the benchmark's searches into the file EXPECT
 *       ("from TERM N", "subject TERM N", "unseen - N", "messages - N").
 *
 *   imap-load hash PASSWORD
 *       Prints an argon2id hash of PASSWORD with libsodium's INTERACTIVE limits (t=2, 64 MiB),
 *       the scheme and cost Postern stores, for Dovecot's passdb ({ARGON2ID} scheme), so both
 *       servers pay the same password check per login.
 *
 *   imap-load run|warm|idle [options]
 *       run   N clients (threads, one connection each) repeat SCENARIO for -d seconds (or
 *             -n operations per client); prints one line of key=value figures on stdout.
 *       warm  one session: SELECT, FETCH 1:* (FLAGS ENVELOPE INTERNALDATE RFC822.SIZE), and
 *             every expected search once (checked against EXPECT); prints what it saw.
 *       idle  opens -c sessions (LOGIN + SELECT), prints "ready N", then holds them until
 *             stdin reaches EOF or SIGTERM/SIGINT arrives, then LOGOUTs them all.
 *   Options:
 *       -p PORT  -h HOST (127.0.0.1)  -T tls|plain (tls: implicit TLS, as on port 993)
 *       -u USER  -w PASSWORD  -s SCENARIO  -c CLIENTS  -d SECONDS  -n OPS_PER_CLIENT
 *       -e EXPECT  -S SEED  -C CGROUP_DIR (read the servers' CPU there at the start and the
 *       end of the timed phase)  -v (print every error, not only the first 20)
 *   Scenarios (one "op" each):
 *       login     connect + TLS handshake + greeting, LOGIN, SELECT INBOX, LOGOUT
 *       flags     FETCH 1:* (FLAGS)                         (must return EXISTS responses)
 *       envelope  UID FETCH x:x+99 (ENVELOPE INTERNALDATE RFC822.SIZE), x random
 *       body      FETCH n BODY.PEEK[], n random             (one literal must come back)
 *       store     STORE n +FLAGS (\Flagged), then STORE n -FLAGS (\Flagged) on the same n
 *       search    SEARCH FROM <term> / SEARCH UNSEEN / SEARCH SUBJECT <term> in turn
 *                 (the number of hits must equal EXPECT's when -e is given)
 *       mixed     one client session: LOGIN, SELECT, FETCH 1:* (FLAGS), UID FETCH of 20
 *                 envelopes, 3 bodies, 1 STORE, 1 SEARCH, LOGOUT
 *
 * Every tagged response must be OK, and the untagged data must have the expected shape;
 * anything else counts as an error, is printed on stderr (the first 20), and the "errors="
 * figure is not 0 — bench/imap reports such a run as failed, so a broken server cannot look
 * fast. For non-session scenarios, connections are opened and logged in before the timed
 * phase and logged out after it; TLS sessions are never resumed (no tickets, no cache), so
 * every login pays a full handshake with either server.
 *
 * Output of "run": ops= errors= seconds= ops_per_s= cpu_us= p50_ms= p99_ms= fetches=
 * literal_bytes= clients= (cpu_us is -1 without -C).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sodium.h>

#define RBUF_SIZE 65536
#define LINE_MAX_BYTES (64u << 20)
#define MAX_TERMS 32
#define MAX_ERRORS_SHOWN 20
#define MAX_LAT_SAMPLES (4u << 20)

/* ================================================================ common */

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static unsigned rng_below(uint64_t *s, unsigned n)
{
	return n ? (unsigned)(rng_next(s) % n) : 0;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("imap-load: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

/* ================================================================ mailbox generation */

static const char *const first_names[] = {
	"Alice", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ingrid",
	"Jonas", "Keiko", "Lars", "Maya", "Nadia", "Oscar", "Priya", "Quentin", "Rosa",
	"Samir", "Tove", "Ulrich", "Vera", "Wanda", "Xavier", "Yara", "Zeno",
};
/* The first SEARCH_FROM_TERMS are the FROM search terms: distinctive, no overlap. */
static const char *const surnames[] = {
	"Quillfeather", "Brandvold", "Oyelaran", "Castellanos", "Vukovich", "Lindqvist",
	"Marchetti", "Okonkwo", "Petrakis", "Zimmermann", "Smith", "Jones", "Garcia", "Miller",
	"Davis", "Martin", "Bernard", "Dubois", "Moreau", "Laurent", "Fischer", "Weber",
	"Schulz", "Rossi", "Russo", "Ferrari", "Silva", "Santos", "Costa", "Novak", "Kowalski",
	"Nowak", "Jensen", "Hansen", "Nielsen", "Tanaka", "Suzuki", "Kim", "Park", "Chen",
};
#define SEARCH_FROM_TERMS 6
static const char *const mail_domains[] = {
	"example.org", "example.net", "mail.example.com", "corp.example", "lists.example.org",
	"university.example.edu", "shop.example", "news.example.net",
};
/* The first SEARCH_SUBJECT_TERMS are the SUBJECT search terms. */
static const char *const subject_words[] = {
	"invoice", "quarterly", "kickoff", "outage", "newsletter", "reimbursement",
	"meeting", "update", "project", "review", "draft", "budget", "schedule", "notes",
	"question", "proposal", "contract", "release", "report", "agenda", "travel", "photos",
	"weekend", "lunch", "deadline", "feedback", "minutes", "summary", "plan", "status",
};
#define SEARCH_SUBJECT_TERMS 6
static const char *const subject_prefixes[] = { "", "", "", "Re: ", "Re: ", "Fwd: ", "[team] " };
static const char *const utf8_subjects[] = {
	"Grüße aus München", "Réunion de l'équipe à Genève", "Ünïcödé ist überall",
	"Привет из Москвы", "東京からのお知らせ",
};
static const char *const body_words[] = {
	"the", "of", "and", "to", "in", "we", "will", "please", "find", "attached", "see",
	"below", "thanks", "regards", "next", "week", "team", "customer", "server", "mail",
	"message", "system", "data", "time", "people", "work", "first", "last", "new", "old",
	"good", "great", "small", "large", "number", "part", "place", "case", "point", "group",
	"problem", "fact", "hand", "eye", "night", "thing", "world", "life", "day", "year",
	"could", "would", "should", "about", "after", "before", "because", "between", "during",
	"without", "again", "further", "then", "once", "here", "there", "when", "where", "why",
	"how", "all", "any", "both", "each", "few", "more", "most", "other", "some", "such",
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

struct gbuf {
	char *p;
	size_t len, cap;
};

static void gb_add(struct gbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 65536;

		while (cap < b->len + n + 1)
			cap *= 2;
		b->p = realloc(b->p, cap);
		if (b->p == NULL)
			die("out of memory");
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void gb_printf(struct gbuf *b, const char *fmt, ...)
{
	char tmp[4096];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof tmp)
		die("gb_printf: line too long");
	gb_add(b, tmp, (size_t)n);
}

static void gb_base64(struct gbuf *b, const unsigned char *data, size_t n)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char line[80];
	size_t i = 0, col = 0;

	while (i < n) {
		uint32_t v = (uint32_t)data[i] << 16;
		int k = 1;

		if (i + 1 < n) {
			v |= (uint32_t)data[i + 1] << 8;
			k++;
		}
		if (i + 2 < n) {
			v |= data[i + 2];
			k++;
		}
		line[col++] = tab[(v >> 18) & 63];
		line[col++] = tab[(v >> 12) & 63];
		line[col++] = k > 1 ? tab[(v >> 6) & 63] : '=';
		line[col++] = k > 2 ? tab[v & 63] : '=';
		i += 3;
		if (col == 76 || i >= n) {
			line[col++] = '\n';
			gb_add(b, line, col);
			col = 0;
		}
	}
}

static void rfc2047_b(struct gbuf *b, const char *utf8)
{
	struct gbuf tmp = { 0 };

	gb_base64(&tmp, (const unsigned char *)utf8, strlen(utf8));
	if (tmp.len && tmp.p[tmp.len - 1] == '\n')
		tmp.p[--tmp.len] = '\0';
	gb_printf(b, "=?UTF-8?B?%s?=", tmp.p);
	free(tmp.p);
}

static void add_words(struct gbuf *b, uint64_t *rng, size_t target)
{
	size_t start = b->len, col = 0;

	while (b->len - start < target) {
		const char *w = body_words[rng_below(rng, NELEM(body_words))];
		size_t wl = strlen(w);

		if (col + wl + 1 > 72) {
			gb_add(b, "\n", 1);
			col = 0;
			if (rng_below(rng, 8) == 0)
				gb_add(b, "\n", 1);
		} else if (col) {
			gb_add(b, " ", 1);
			col++;
		}
		gb_add(b, w, wl);
		col += wl;
	}
	gb_add(b, ".\n", 2);
}

static int ci_contains(const char *hay, const char *needle)
{
	return strcasestr(hay, needle) != NULL;
}

static int cmd_gen(int argc, char **argv)
{
	const char *dir, *expect_path;
	unsigned long count, seed;
	unsigned long from_hits[SEARCH_FROM_TERMS] = { 0 }, subj_hits[SEARCH_SUBJECT_TERMS] = { 0 };
	unsigned long unseen = 0;
	uint64_t rng;
	struct gbuf m = { 0 };
	char path[4096];
	const time_t base = 1704067200; /* 2024-01-01 00:00:00 UTC */
	const time_t span = 2 * 365 * 86400;
	FILE *ef;

	if (argc != 6)
		die("usage: imap-load gen DIR COUNT SEED EXPECT");
	dir = argv[2];
	count = strtoul(argv[3], NULL, 10);
	seed = strtoul(argv[4], NULL, 10);
	expect_path = argv[5];
	if (count == 0)
		die("gen: COUNT must be > 0");
	rng = 0x9E3779B97F4A7C15ULL ^ (seed * 0x100000001B3ULL);
	if (rng == 0)
		rng = 1;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		die("mkdir %s: %s", dir, strerror(errno));
	for (int i = 0; i < 3; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, i == 0 ? "cur" : i == 1 ? "new" : "tmp");
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			die("mkdir %s: %s", path, strerror(errno));
	}
	for (unsigned long i = 0; i < count; i++) {
		const char *fn = first_names[rng_below(&rng, NELEM(first_names))];
		const char *sn = surnames[rng_below(&rng, NELEM(surnames))];
		const char *dom = mail_domains[rng_below(&rng, NELEM(mail_domains))];
		char from[256], subject[512], date[64], lower_fn[64], lower_sn[64], flags[8];
		time_t t = base + (time_t)((double)span * (double)i / (double)count) +
			   (time_t)rng_below(&rng, 3600);
		struct tm tm;
		unsigned r = rng_below(&rng, 1000);
		size_t target;
		int multipart = rng_below(&rng, 100) < 20;
		int utf8 = rng_below(&rng, 100) < 5;
		size_t k;

		for (k = 0; fn[k] && k + 1 < sizeof lower_fn; k++)
			lower_fn[k] = (char)tolower((unsigned char)fn[k]);
		lower_fn[k] = '\0';
		for (k = 0; sn[k] && k + 1 < sizeof lower_sn; k++)
			lower_sn[k] = (char)tolower((unsigned char)sn[k]);
		lower_sn[k] = '\0';
		snprintf(from, sizeof from, "%s %s <%s.%s@%s>", fn, sn, lower_fn, lower_sn, dom);
		if (utf8) {
			snprintf(subject, sizeof subject, "%s",
				 utf8_subjects[rng_below(&rng, NELEM(utf8_subjects))]);
		} else {
			const char *w1 = subject_words[rng_below(&rng, NELEM(subject_words))];
			const char *w2 = subject_words[rng_below(&rng, NELEM(subject_words))];
			const char *w3 = subject_words[rng_below(&rng, NELEM(subject_words))];

			snprintf(subject, sizeof subject, "%s%c%s %s for %s #%lu",
				 subject_prefixes[rng_below(&rng, NELEM(subject_prefixes))],
				 toupper((unsigned char)w1[0]), w1 + 1, w2, w3, i % 997);
		}
		gmtime_r(&t, &tm);
		strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);

		/* expected search hits: case-insensitive substring, as IMAP SEARCH does */
		for (int j = 0; j < SEARCH_FROM_TERMS; j++)
			from_hits[j] += ci_contains(from, surnames[j]);
		for (int j = 0; j < SEARCH_SUBJECT_TERMS; j++)
			subj_hits[j] += ci_contains(subject, subject_words[j]);
		if (r < 120)
			flags[0] = '\0', unseen++;
		else if (r < 170)
			snprintf(flags, sizeof flags, "FS");
		else if (r < 200)
			snprintf(flags, sizeof flags, "RS");
		else
			snprintf(flags, sizeof flags, "S");

		/* size: 1-20 KB, skewed towards small messages */
		{
			double u = (double)rng_below(&rng, 10000) / 10000.0;

			target = 1024 + (size_t)(u * u * 19.0 * 1024.0);
		}
		m.len = 0;
		gb_printf(&m, "Return-Path: <%s.%s@%s>\n", lower_fn, lower_sn, dom);
		gb_printf(&m, "Delivered-To: user@bench.test\n");
		gb_printf(&m,
			  "Received: from mail.%s (mail.%s [192.0.2.%u])\n"
			  "\tby mx.bench.test with ESMTPS id %08lx%04x\n"
			  "\tfor <user@bench.test>; %s\n",
			  dom, dom, 1 + rng_below(&rng, 250), i, rng_below(&rng, 65536), date);
		gb_printf(&m, "Date: %s\n", date);
		gb_printf(&m, "From: %s\n", from);
		gb_printf(&m, "To: Bench User <user@bench.test>\n");
		if (rng_below(&rng, 100) < 20)
			gb_printf(&m, "Cc: %s %s <%s@%s>\n",
				  first_names[rng_below(&rng, NELEM(first_names))],
				  surnames[SEARCH_FROM_TERMS +
					   rng_below(&rng, NELEM(surnames) - SEARCH_FROM_TERMS)],
				  "colleague", mail_domains[rng_below(&rng, NELEM(mail_domains))]);
		gb_printf(&m, "Subject: ");
		if (utf8)
			rfc2047_b(&m, subject);
		else
			gb_add(&m, subject, strlen(subject));
		gb_add(&m, "\n", 1);
		gb_printf(&m, "Message-ID: <%lu.%08x@%s>\n", i, (unsigned)rng_next(&rng), dom);
		if (rng_below(&rng, 100) < 30)
			gb_printf(&m, "In-Reply-To: <%lu.ref@%s>\nReferences: <%lu.ref@%s>\n",
				  i / 2, dom, i / 2, dom);
		gb_printf(&m, "MIME-Version: 1.0\n");
		if (multipart) {
			unsigned char att[6144];
			size_t an = 512 + rng_below(&rng, 4096);
			char boundary[64];

			snprintf(boundary, sizeof boundary, "=_bench_%lu_%08x", i,
				 (unsigned)rng_next(&rng));
			for (size_t j = 0; j < an; j++)
				att[j] = (unsigned char)rng_next(&rng);
			gb_printf(&m, "Content-Type: multipart/mixed; boundary=\"%s\"\n\n", boundary);
			gb_printf(&m, "This is a multi-part message in MIME format.\n\n--%s\n", boundary);
			gb_printf(&m, "Content-Type: text/plain; charset=utf-8\n"
				      "Content-Transfer-Encoding: 7bit\n\n");
			add_words(&m, &rng, target > an * 4 / 3 + 800 ? target - an * 4 / 3 - 800 : 200);
			gb_printf(&m, "\n--%s\n", boundary);
			gb_printf(&m, "Content-Type: application/pdf; name=\"doc-%lu.pdf\"\n"
				      "Content-Disposition: attachment; filename=\"doc-%lu.pdf\"\n"
				      "Content-Transfer-Encoding: base64\n\n", i, i);
			gb_base64(&m, att, an);
			gb_printf(&m, "\n--%s--\n", boundary);
		} else {
			gb_printf(&m, "Content-Type: text/plain; charset=utf-8\n"
				      "Content-Transfer-Encoding: 7bit\n\n");
			gb_printf(&m, "Hello,\n\n");
			add_words(&m, &rng, target > 700 ? target - 700 : 200);
			gb_printf(&m, "\n-- \n%s %s\n", fn, sn);
		}

		snprintf(path, sizeof path, "%s/cur/%ld.M%luP4242.bench.test:2,%s", dir, (long)t, i,
			 flags);
		{
			int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
			struct timespec times[2];

			if (fd < 0)
				die("open %s: %s", path, strerror(errno));
			if (write(fd, m.p, m.len) != (ssize_t)m.len)
				die("write %s: %s", path, strerror(errno));
			times[0].tv_sec = times[1].tv_sec = t;
			times[0].tv_nsec = times[1].tv_nsec = 0;
			futimens(fd, times);
			close(fd);
		}
	}
	free(m.p);
	ef = fopen(expect_path, "w");
	if (ef == NULL)
		die("%s: %s", expect_path, strerror(errno));
	fprintf(ef, "messages - %lu\n", count);
	fprintf(ef, "unseen - %lu\n", unseen);
	for (int j = 0; j < SEARCH_FROM_TERMS; j++)
		fprintf(ef, "from %s %lu\n", surnames[j], from_hits[j]);
	for (int j = 0; j < SEARCH_SUBJECT_TERMS; j++)
		fprintf(ef, "subject %s %lu\n", subject_words[j], subj_hits[j]);
	if (fclose(ef) != 0)
		die("%s: %s", expect_path, strerror(errno));
	return 0;
}

/* ================================================================ IMAP client */

enum scenario { SC_LOGIN, SC_FLAGS, SC_ENVELOPE, SC_BODY, SC_STORE, SC_SEARCH, SC_MIXED };
static const char *const scenario_names[] = {
	"login", "flags", "envelope", "body", "store", "search", "mixed",
};

struct search_term {
	char kind[32]; /* "from", "subject", "unseen" */
	char term[128];
	long expect;   /* -1: unknown */
};

static struct {
	const char *host;
	int port;
	int tls;
	const char *user, *password;
	enum scenario scenario;
	int clients;
	double seconds;
	long ops_per_client;
	const char *cgroup;
	uint64_t seed;
	int verbose;
	struct search_term terms[MAX_TERMS];
	int nterms;
	long expect_messages;
	SSL_CTX *ctx;
} cfg = {
	.host = "127.0.0.1", .tls = 1, .user = "user@bench.test", .clients = 1, .seconds = 5,
	.seed = 1, .expect_messages = -1,
};

static atomic_ulong errors_total;
static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;

static void report_error(int client, const char *what, const char *detail)
{
	unsigned long n = atomic_fetch_add(&errors_total, 1) + 1;

	if (n > MAX_ERRORS_SHOWN && !cfg.verbose)
		return;
	pthread_mutex_lock(&err_lock);
	fprintf(stderr, "imap-load: client %d: %s%s%.300s\n", client, what,
		detail && *detail ? ": " : "", detail ? detail : "");
	if (n == MAX_ERRORS_SHOWN && !cfg.verbose)
		fprintf(stderr, "imap-load: (further errors are counted, not printed)\n");
	pthread_mutex_unlock(&err_lock);
}

struct conn {
	int fd;
	SSL *ssl;
	int id;
	unsigned char rbuf[RBUF_SIZE];
	size_t rpos, rlen;
	char *line;
	size_t len, cap;
	unsigned tag;
	/* session state after SELECT */
	unsigned long exists, uidnext;
	/* what the next command's FETCH responses are checked for */
	const char *want;          /* count only FETCH responses containing this, if set */
	unsigned long match_seq;   /* report the flags of this message's FETCH response */
	/* results of the last command */
	unsigned long fetches;     /* distinct messages with a FETCH response (with want) */
	unsigned long extra_fetches; /* other FETCH responses (unsolicited flag updates) */
	unsigned long search_n, lit_bytes, r_exists, r_uidnext;
	int have_search, bye, match_found, match_flagged;
	unsigned char *seen;       /* bitmap of sequence numbers with a FETCH response */
	size_t seen_bytes;
	char err[512];
};

static void conn_close(struct conn *c)
{
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	c->rpos = c->rlen = 0;
}

static void set_err(struct conn *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof c->err, fmt, ap);
	va_end(ap);
}

static void set_ssl_err(struct conn *c, const char *what, int ret)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "";

	if (e)
		ERR_error_string_n(e, buf, sizeof buf);
	ERR_clear_error();
	set_err(c, "%s: ssl error %d %s%s", what, c->ssl ? SSL_get_error(c->ssl, ret) : 0, buf,
		errno ? strerror(errno) : "");
}

static ssize_t io_read(struct conn *c, void *buf, size_t n)
{
	for (;;) {
		ssize_t r;

		errno = 0;
		if (c->ssl) {
			int ret = SSL_read(c->ssl, buf, (int)n);

			if (ret > 0)
				return ret;
			if (SSL_get_error(c->ssl, ret) == SSL_ERROR_ZERO_RETURN) {
				set_err(c, "connection closed by server (TLS close_notify)");
				return 0;
			}
			if (errno == EINTR)
				continue;
			set_ssl_err(c, "read", ret);
			return -1;
		}
		r = read(c->fd, buf, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			set_err(c, "connection closed by server");
		else if (r < 0)
			set_err(c, "read: %s", strerror(errno));
		return r;
	}
}

static int io_write(struct conn *c, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t r;

		errno = 0;
		if (c->ssl) {
			int ret = SSL_write(c->ssl, p, (int)n);

			if (ret <= 0) {
				if (errno == EINTR)
					continue;
				set_ssl_err(c, "write", ret);
				return -1;
			}
			r = ret;
		} else {
			r = write(c->fd, p, n);
			if (r < 0) {
				if (errno == EINTR)
					continue;
				set_err(c, "write: %s", strerror(errno));
				return -1;
			}
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int fill(struct conn *c)
{
	ssize_t r;

	if (c->rpos < c->rlen)
		return 0;
	c->rpos = c->rlen = 0;
	r = io_read(c, c->rbuf, sizeof c->rbuf);
	if (r <= 0)
		return -1;
	c->rlen = (size_t)r;
	return 0;
}

static int line_add(struct conn *c, const void *p, size_t n)
{
	if (c->len + n + 1 > c->cap) {
		size_t cap = c->cap ? c->cap : 4096;

		while (cap < c->len + n + 1)
			cap *= 2;
		if (cap > LINE_MAX_BYTES) {
			set_err(c, "response line longer than %u bytes", LINE_MAX_BYTES);
			return -1;
		}
		c->line = realloc(c->line, cap);
		if (c->line == NULL)
			die("out of memory");
		c->cap = cap;
	}
	memcpy(c->line + c->len, p, n);
	c->len += n;
	c->line[c->len] = '\0';
	return 0;
}

/* A trailing "{N}" or "{N+}" on the physical line just read: N, else -1. */
static long literal_at_end(struct conn *c, size_t from)
{
	size_t e = c->len;
	unsigned long n = 0, mul = 1;

	if (e <= from || c->line[e - 1] != '}')
		return -1;
	e--;
	if (e > from && c->line[e - 1] == '+')
		e--;
	if (e <= from || !isdigit((unsigned char)c->line[e - 1]))
		return -1;
	while (e > from && isdigit((unsigned char)c->line[e - 1])) {
		n += (unsigned long)(c->line[e - 1] - '0') * mul;
		mul *= 10;
		e--;
		if (mul > 100000000000ULL)
			return -1;
	}
	if (e <= from || c->line[e - 1] != '{')
		return -1;
	return (long)n;
}

/* Reads one logical response line into c->line (CRLF removed; literal contents skipped
 * and counted in c->lit_bytes, the "{N}" markers kept). 0 or -1 (c->err set). */
static int read_line(struct conn *c)
{
	size_t seg = 0;

	c->len = 0;
	for (;;) {
		unsigned char *nl;
		size_t avail;
		long lit;

		if (fill(c) < 0)
			return -1;
		avail = c->rlen - c->rpos;
		nl = memchr(c->rbuf + c->rpos, '\n', avail);
		if (nl == NULL) {
			if (line_add(c, c->rbuf + c->rpos, avail) < 0)
				return -1;
			c->rpos = c->rlen;
			continue;
		}
		if (line_add(c, c->rbuf + c->rpos, (size_t)(nl - (c->rbuf + c->rpos))) < 0)
			return -1;
		c->rpos = (size_t)(nl - c->rbuf) + 1;
		if (c->len > 0 && c->line[c->len - 1] == '\r')
			c->line[--c->len] = '\0';
		lit = literal_at_end(c, seg);
		if (lit < 0)
			return 0;
		c->lit_bytes += (unsigned long)lit;
		while (lit > 0) {
			size_t take;

			if (fill(c) < 0)
				return -1;
			take = c->rlen - c->rpos;
			if (take > (size_t)lit)
				take = (size_t)lit;
			c->rpos += take;
			lit -= (long)take;
		}
		seg = c->len;
	}
}

static unsigned long parse_ul(const char *p, const char **end)
{
	unsigned long v = 0;

	while (isdigit((unsigned char)*p))
		v = v * 10 + (unsigned long)(*p++ - '0');
	if (end)
		*end = p;
	return v;
}

static void parse_untagged(struct conn *c)
{
	const char *p = c->line + 2, *q;

	if (isdigit((unsigned char)*p)) {
		unsigned long n = parse_ul(p, &q);

		if (strncmp(q, " EXISTS", 7) == 0) {
			c->r_exists = n;
		} else if (strncmp(q, " FETCH", 6) == 0) {
			/* Other sessions' STOREs arrive as unsolicited FETCH (FLAGS ...) responses:
			 * count a message once, and only if the response has the data asked for. */
			if (n == c->match_seq) {
				c->match_found = 1;
				c->match_flagged = strstr(q, "\\Flagged") != NULL;
			}
			if (c->want != NULL && strstr(q, c->want) == NULL) {
				c->extra_fetches++;
			} else if (n / 8 < c->seen_bytes) {
				if (c->seen[n / 8] & (1u << (n % 8))) {
					c->extra_fetches++;
				} else {
					c->seen[n / 8] |= (unsigned char)(1u << (n % 8));
					c->fetches++;
				}
			} else {
				c->fetches++;
			}
		}
		return;
	}
	if (strncmp(p, "SEARCH", 6) == 0 && (p[6] == '\0' || p[6] == ' ')) {
		c->have_search = 1;
		p += 6;
		while (*p == ' ') {
			p++;
			if (isdigit((unsigned char)*p)) {
				parse_ul(p, &p);
				c->search_n++;
			} else {
				break; /* e.g. (MODSEQ n) */
			}
		}
		return;
	}
	if (strncmp(p, "OK [UIDNEXT ", 12) == 0) {
		c->r_uidnext = parse_ul(p + 12, NULL);
		return;
	}
	if (strncmp(p, "BYE", 3) == 0)
		c->bye = 1;
}

/* Sends a tagged command and reads up to its tagged response.
 * Returns 0 (OK), 1 (NO/BAD/unexpected; c->err set) or -1 (connection lost; c->err set). */
static int cmd(struct conn *c, const char *fmt, ...)
{
	char buf[1024], tag[16];
	size_t taglen;
	va_list ap;
	int n;

	c->fetches = c->extra_fetches = c->search_n = c->lit_bytes = 0;
	c->r_exists = c->r_uidnext = 0;
	c->have_search = c->bye = c->match_found = c->match_flagged = 0;
	if (c->seen != NULL)
		memset(c->seen, 0, c->seen_bytes);
	taglen = (size_t)snprintf(tag, sizeof tag, "a%u ", ++c->tag);
	memcpy(buf, tag, taglen);
	va_start(ap, fmt);
	n = vsnprintf(buf + taglen, sizeof buf - taglen - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof buf - taglen - 2)
		die("command too long");
	memcpy(buf + taglen + (size_t)n, "\r\n", 2);
	if (io_write(c, buf, taglen + (size_t)n + 2) < 0)
		return -1;
	for (;;) {
		if (read_line(c) < 0)
			return -1;
		if (c->len >= 2 && c->line[0] == '*' && c->line[1] == ' ') {
			parse_untagged(c);
			continue;
		}
		if (strncmp(c->line, tag, taglen) == 0) {
			if (strncmp(c->line + taglen, "OK", 2) == 0)
				return 0;
			set_err(c, "%.*s -> %.400s", n < 60 ? n : 60, buf + taglen, c->line);
			return 1;
		}
		if (c->line[0] == '+') {
			set_err(c, "%.*s -> unexpected continuation: %.300s", n < 60 ? n : 60,
				buf + taglen, c->line);
			return -1; /* the command is now half-sent: give up on the connection */
		}
		/* another tag: not ours, ignore (we never pipeline) */
	}
}

static int conn_open(struct conn *c)
{
	struct sockaddr_in sa;
	struct timeval tv = { 120, 0 };
	int one = 1, ret;

	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		set_err(c, "socket: %s", strerror(errno));
		return -1;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)cfg.port);
	if (inet_pton(AF_INET, cfg.host, &sa.sin_addr) != 1)
		die("bad host %s (IPv4 address expected)", cfg.host);
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		set_err(c, "connect: %s", strerror(errno));
		conn_close(c);
		return -1;
	}
	if (cfg.tls) {
		c->ssl = SSL_new(cfg.ctx);
		if (c->ssl == NULL)
			die("SSL_new failed");
		SSL_set_fd(c->ssl, c->fd);
		errno = 0;
		ret = SSL_connect(c->ssl);
		if (ret != 1) {
			set_ssl_err(c, "TLS handshake", ret);
			conn_close(c);
			return -1;
		}
	}
	if (read_line(c) < 0) {
		conn_close(c);
		return -1;
	}
	if (strncmp(c->line, "* OK", 4) != 0) {
		set_err(c, "bad greeting: %.300s", c->line);
		conn_close(c);
		return -1;
	}
	return 0;
}

/* connect, LOGIN, SELECT INBOX. 0, or -1 with the error reported. */
static int session_open(struct conn *c)
{
	int r;

	c->tag = 0;
	if (conn_open(c) < 0) {
		report_error(c->id, "connect", c->err);
		return -1;
	}
	r = cmd(c, "LOGIN \"%s\" \"%s\"", cfg.user, cfg.password);
	if (r != 0) {
		report_error(c->id, "LOGIN", c->err);
		conn_close(c);
		return -1;
	}
	r = cmd(c, "SELECT INBOX");
	if (r != 0 || c->r_exists == 0) {
		report_error(c->id, "SELECT", r ? c->err : "no EXISTS or empty mailbox");
		conn_close(c);
		return -1;
	}
	c->exists = c->r_exists;
	c->uidnext = c->r_uidnext;
	if (c->seen_bytes < c->exists / 8 + 1) {
		free(c->seen);
		c->seen_bytes = c->exists / 8 + 1;
		c->seen = calloc(c->seen_bytes, 1);
		if (c->seen == NULL)
			die("out of memory");
	}
	if (cfg.expect_messages >= 0 && c->exists != (unsigned long)cfg.expect_messages) {
		char d[96];

		snprintf(d, sizeof d, "%lu EXISTS, expected %ld", c->exists, cfg.expect_messages);
		report_error(c->id, "SELECT", d);
		conn_close(c);
		return -1;
	}
	return 0;
}

/* LOGOUT: BYE and tagged OK expected. 0 or -1 (error reported). Closes the connection. */
static int session_close(struct conn *c)
{
	int r = cmd(c, "LOGOUT");

	if (r == 0 && !c->bye) {
		set_err(c, "LOGOUT without BYE");
		r = 1;
	}
	if (r != 0)
		report_error(c->id, "LOGOUT", c->err);
	conn_close(c);
	return r ? -1 : 0;
}

struct client {
	pthread_t th;
	struct conn c;
	uint64_t rng;
	unsigned long ops, fail;
	unsigned long fetches, lit_bytes;
	unsigned store_phase, store_n, search_i;
	uint32_t *lat;
	size_t nlat, caplat;
	int64_t t_end;
};

/* ready: every client connected (and logged in, except login/mixed); go: the main thread
 * has set the deadline and read the CPU counter; end: every client did its last op. */
static pthread_barrier_t ready_barrier, go_barrier, end_barrier;
static int64_t deadline;

/* A failed command: report it; -1 if the connection is gone. */
static int op_result(struct client *cl, int r, const char *what)
{
	if (r == 0)
		return 0;
	report_error(cl->c.id, what, cl->c.err);
	return r < 0 ? -1 : 1;
}

static int check(struct client *cl, int ok, const char *what, const char *fmt, ...)
{
	char d[256];
	va_list ap;

	if (ok)
		return 0;
	va_start(ap, fmt);
	vsnprintf(d, sizeof d, fmt, ap);
	va_end(ap);
	report_error(cl->c.id, what, d);
	return 1;
}

static int dense_uids(const struct conn *c)
{
	return c->uidnext == c->exists + 1;
}

static int do_flags(struct client *cl)
{
	struct conn *c = &cl->c;
	int r;

	c->want = "FLAGS";
	r = op_result(cl, cmd(c, "FETCH 1:* (FLAGS)"), "FETCH FLAGS");
	c->want = NULL;

	if (r)
		return r;
	cl->fetches += c->fetches;
	return check(cl, c->fetches == c->exists, "FETCH 1:* FLAGS", "%lu FETCH responses for %lu messages",
		     c->fetches, c->exists);
}

static int do_envelopes(struct client *cl, unsigned width)
{
	struct conn *c = &cl->c;
	unsigned long top = c->uidnext > width ? c->uidnext - width : 1, x;
	int r;

	x = 1 + rng_below(&cl->rng, (unsigned)top);
	c->want = "ENVELOPE";
	r = op_result(cl, cmd(c, "UID FETCH %lu:%lu (ENVELOPE INTERNALDATE RFC822.SIZE)", x,
			      x + width - 1), "UID FETCH ENVELOPE");
	c->want = NULL;
	if (r)
		return r;
	cl->fetches += c->fetches;
	if (dense_uids(c)) {
		unsigned long want = c->exists >= width ? width : c->exists;

		return check(cl, c->fetches == want, "UID FETCH ENVELOPE",
			     "%lu FETCH responses for UIDs %lu:%lu (want %lu)", c->fetches, x,
			     x + width - 1, want);
	}
	return check(cl, c->fetches > 0, "UID FETCH ENVELOPE", "no FETCH response for %lu:%lu", x,
		     x + width - 1);
}

static int do_body(struct client *cl)
{
	struct conn *c = &cl->c;
	unsigned long n = 1 + rng_below(&cl->rng, (unsigned)c->exists);
	int r;

	c->want = "BODY[]";
	r = op_result(cl, cmd(c, "FETCH %lu BODY.PEEK[]", n), "FETCH BODY");
	c->want = NULL;

	if (r)
		return r;
	cl->fetches += c->fetches;
	cl->lit_bytes += c->lit_bytes;
	return check(cl, c->fetches == 1 && c->lit_bytes > 200, "FETCH BODY.PEEK[]",
		     "message %lu: %lu FETCH responses, %lu literal bytes", n, c->fetches, c->lit_bytes);
}

static int do_store(struct client *cl)
{
	struct conn *c = &cl->c;
	int r;

	int add = (cl->store_phase & 1) == 0;

	/* Client i only stores on messages i+1, i+1+clients, ...: no two clients change the
	 * same message, so the flags in the FETCH response must be the ones just stored. */
	if (add) {
		unsigned long i = (unsigned long)c->id, nc = (unsigned long)cfg.clients;

		if (i < c->exists)
			cl->store_n = (unsigned)(1 + i +
				nc * rng_below(&cl->rng, (unsigned)((c->exists - 1 - i) / nc + 1)));
		else
			cl->store_n = 1 + rng_below(&cl->rng, (unsigned)c->exists);
	}
	c->match_seq = cl->store_n;
	r = op_result(cl, cmd(c, "STORE %u %cFLAGS (\\Flagged)", cl->store_n, add ? '+' : '-'),
		      "STORE");
	c->match_seq = 0;
	cl->store_phase++;
	if (r)
		return r;
	cl->fetches += c->fetches;
	/* A server may leave out the FETCH response when the flags did not change (the
	 * message was already flagged, or another client changed it at the same time). */
	return check(cl, !c->match_found || c->match_flagged == add, "STORE",
		     "message %u: FETCH response after %cFLAGS (\\Flagged) %s \\Flagged",
		     cl->store_n, add ? '+' : '-', c->match_flagged ? "has" : "lacks");
}

static int do_search(struct client *cl)
{
	struct conn *c = &cl->c;
	const struct search_term *t;
	int r;

	if (cfg.nterms == 0)
		die("search needs -e EXPECT");
	t = &cfg.terms[cl->search_i++ % (unsigned)cfg.nterms];
	if (strcmp(t->kind, "unseen") == 0)
		r = cmd(c, "SEARCH UNSEEN");
	else if (strcmp(t->kind, "from") == 0)
		r = cmd(c, "SEARCH FROM \"%s\"", t->term);
	else
		r = cmd(c, "SEARCH SUBJECT \"%s\"", t->term);
	r = op_result(cl, r, "SEARCH");
	if (r)
		return r;
	if (check(cl, c->have_search, "SEARCH", "%s %s: no * SEARCH response", t->kind, t->term))
		return 1;
	return check(cl, t->expect < 0 || c->search_n == (unsigned long)t->expect, "SEARCH",
		     "%s %s: %lu hits, expected %ld", t->kind, t->term, c->search_n, t->expect);
}

/* One operation of the scenario: 0 ok, 1 failed (connection usable), -1 connection lost. */
static int do_op(struct client *cl)
{
	struct conn *c = &cl->c;
	int r, bad = 0;

	switch (cfg.scenario) {
	case SC_LOGIN:
		if (session_open(c) < 0)
			return -1;
		return session_close(c) < 0 ? 1 : 0;
	case SC_FLAGS:
		return do_flags(cl);
	case SC_ENVELOPE:
		return do_envelopes(cl, 100);
	case SC_BODY:
		return do_body(cl);
	case SC_STORE:
		return do_store(cl);
	case SC_SEARCH:
		return do_search(cl);
	case SC_MIXED:
		if (session_open(c) < 0)
			return -1;
#define STEP(call)                       \
	do {                             \
		r = (call);              \
		if (r < 0) {             \
			conn_close(c);   \
			return -1;       \
		}                        \
		bad |= r;                \
	} while (0)
		STEP(do_flags(cl));
		STEP(do_envelopes(cl, 20));
		STEP(do_body(cl));
		STEP(do_body(cl));
		STEP(do_body(cl));
		STEP(do_store(cl));
		if (cfg.nterms)
			STEP(do_search(cl));
#undef STEP
		if (session_close(c) < 0)
			bad = 1;
		return bad;
	}
	return -1;
}

static int session_scenario(void)
{
	return cfg.scenario == SC_LOGIN || cfg.scenario == SC_MIXED;
}

static void *client_main(void *arg)
{
	struct client *cl = arg;
	int connected = 0;

	if (!session_scenario())
		connected = session_open(&cl->c) == 0;
	if (!session_scenario() && !connected)
		cl->fail++;
	pthread_barrier_wait(&ready_barrier);
	pthread_barrier_wait(&go_barrier);
	for (long i = 0; session_scenario() || connected; i++) {
		int64_t t0 = now_ns(), t1;
		int r;

		if (cfg.ops_per_client > 0 ? i >= cfg.ops_per_client : t0 >= deadline)
			break;
		r = do_op(cl);
		t1 = now_ns();
		if (r == 0) {
			cl->ops++;
			if (cl->nlat == cl->caplat && cl->caplat < MAX_LAT_SAMPLES) {
				cl->caplat = cl->caplat ? cl->caplat * 2 : 4096;
				cl->lat = realloc(cl->lat, cl->caplat * sizeof *cl->lat);
				if (cl->lat == NULL)
					die("out of memory");
			}
			if (cl->nlat < cl->caplat)
				cl->lat[cl->nlat++] = (uint32_t)((t1 - t0) / 1000);
		} else {
			cl->fail++;
		}
		if (r < 0 && !session_scenario()) {
			/* connection lost: one attempt to get a new session, else this client stops */
			conn_close(&cl->c);
			connected = session_open(&cl->c) == 0;
		}
		if (r < 0 && session_scenario() && cfg.ops_per_client <= 0 && cl->fail > 1000)
			break; /* the server is gone: do not spin */
	}
	cl->t_end = now_ns();
	pthread_barrier_wait(&end_barrier);
	if (connected)
		session_close(&cl->c);
	return NULL;
}

static long long read_cgroup_cpu_us(void)
{
	char path[4096], buf[4096];
	FILE *f;
	size_t n;

	if (cfg.cgroup == NULL)
		return -1;
	snprintf(path, sizeof path, "%s/cpu.stat", cfg.cgroup);
	f = fopen(path, "r");
	if (f != NULL) {
		char *p;

		n = fread(buf, 1, sizeof buf - 1, f);
		buf[n] = '\0';
		fclose(f);
		p = strstr(buf, "usage_usec ");
		if (p != NULL)
			return strtoll(p + 11, NULL, 10);
	}
	snprintf(path, sizeof path, "%s/cpuacct.usage", cfg.cgroup);
	f = fopen(path, "r");
	if (f != NULL) {
		n = fread(buf, 1, sizeof buf - 1, f);
		buf[n] = '\0';
		fclose(f);
		return strtoll(buf, NULL, 10) / 1000;
	}
	return -1;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static void load_expect(const char *path)
{
	FILE *f = fopen(path, "r");
	char kind[32], term[128];
	long n;

	if (f == NULL)
		die("%s: %s", path, strerror(errno));
	while (fscanf(f, "%31s %127s %ld", kind, term, &n) == 3) {
		if (strcmp(kind, "messages") == 0) {
			cfg.expect_messages = n;
			continue;
		}
		if (cfg.nterms == MAX_TERMS)
			break;
		snprintf(cfg.terms[cfg.nterms].kind, sizeof cfg.terms[0].kind, "%s", kind);
		snprintf(cfg.terms[cfg.nterms].term, sizeof cfg.terms[0].term, "%s", term);
		cfg.terms[cfg.nterms].expect = n;
		cfg.nterms++;
	}
	fclose(f);
	/* Interleave the kinds so consecutive searches alternate FROM / UNSEEN / SUBJECT. */
	{
		struct search_term from[MAX_TERMS], subj[MAX_TERMS], uns[MAX_TERMS], out[3 * MAX_TERMS];
		int nf = 0, ns = 0, nu = 0, no = 0, i = 0;

		for (int k = 0; k < cfg.nterms; k++) {
			if (strcmp(cfg.terms[k].kind, "from") == 0)
				from[nf++] = cfg.terms[k];
			else if (strcmp(cfg.terms[k].kind, "subject") == 0)
				subj[ns++] = cfg.terms[k];
			else
				uns[nu++] = cfg.terms[k];
		}
		while (nf + ns > 0 && (i < nf || i < ns)) {
			if (i < nf)
				out[no++] = from[i];
			if (nu)
				out[no++] = uns[0];
			if (i < ns)
				out[no++] = subj[i];
			i++;
		}
		if (no == 0 && nu)
			out[no++] = uns[0];
		if (no > MAX_TERMS)
			no = MAX_TERMS;
		memcpy(cfg.terms, out, (size_t)no * sizeof out[0]);
		cfg.nterms = no;
	}
}

static void tls_init(void)
{
	cfg.ctx = SSL_CTX_new(TLS_client_method());
	if (cfg.ctx == NULL)
		die("SSL_CTX_new failed");
	SSL_CTX_set_verify(cfg.ctx, SSL_VERIFY_NONE, NULL); /* self-signed certificates */
	SSL_CTX_set_session_cache_mode(cfg.ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(cfg.ctx, SSL_OP_NO_TICKET);
}

static int cmd_run(void)
{
	struct client *cls = calloc((size_t)cfg.clients, sizeof *cls);
	unsigned long ops = 0, fail = 0, fetches = 0, lit = 0;
	long long cpu0, cpu1;
	int64_t t0, t1 = 0;
	uint32_t *all;
	size_t nall = 0;
	double secs;

	if (cls == NULL)
		die("out of memory");
	pthread_barrier_init(&ready_barrier, NULL, (unsigned)cfg.clients + 1);
	pthread_barrier_init(&go_barrier, NULL, (unsigned)cfg.clients + 1);
	pthread_barrier_init(&end_barrier, NULL, (unsigned)cfg.clients + 1);
	for (int i = 0; i < cfg.clients; i++) {
		pthread_attr_t attr;

		cls[i].c.fd = -1;
		cls[i].c.id = i;
		cls[i].rng = (cfg.seed + 1) * 0x9E3779B97F4A7C15ULL + (uint64_t)i * 0x632BE59BD9B4E019ULL;
		if (cls[i].rng == 0)
			cls[i].rng = 1;
		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, 256 * 1024);
		if (pthread_create(&cls[i].th, &attr, client_main, &cls[i]) != 0)
			die("pthread_create: %s", strerror(errno));
		pthread_attr_destroy(&attr);
	}
	pthread_barrier_wait(&ready_barrier);
	cpu0 = read_cgroup_cpu_us();
	t0 = now_ns();
	deadline = t0 + (int64_t)(cfg.seconds * 1e9);
	pthread_barrier_wait(&go_barrier);
	pthread_barrier_wait(&end_barrier);
	cpu1 = read_cgroup_cpu_us();
	for (int i = 0; i < cfg.clients; i++) {
		pthread_join(cls[i].th, NULL);
		ops += cls[i].ops;
		fail += cls[i].fail;
		fetches += cls[i].fetches;
		lit += cls[i].lit_bytes;
		nall += cls[i].nlat;
		if (cls[i].t_end > t1)
			t1 = cls[i].t_end;
	}
	all = malloc((nall ? nall : 1) * sizeof *all);
	if (all == NULL)
		die("out of memory");
	nall = 0;
	for (int i = 0; i < cfg.clients; i++) {
		memcpy(all + nall, cls[i].lat, cls[i].nlat * sizeof *all);
		nall += cls[i].nlat;
		free(cls[i].lat);
		free(cls[i].c.line);
		free(cls[i].c.seen);
	}
	qsort(all, nall, sizeof *all, cmp_u32);
	secs = (double)(t1 - t0) / 1e9;
	if (atomic_load(&errors_total) > fail)
		fail = atomic_load(&errors_total);
	printf("ops=%lu errors=%lu seconds=%.3f ops_per_s=%.1f cpu_us=%lld p50_ms=%.3f p99_ms=%.3f "
	       "fetches=%lu literal_bytes=%lu clients=%d scenario=%s\n",
	       ops, fail, secs, secs > 0 ? (double)ops / secs : 0.0,
	       cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1LL,
	       nall ? all[nall / 2] / 1000.0 : 0.0,
	       nall ? all[(size_t)((double)(nall - 1) * 0.99)] / 1000.0 : 0.0, fetches, lit,
	       cfg.clients, scenario_names[cfg.scenario]);
	free(all);
	free(cls);
	return fail ? 1 : 0;
}

static int cmd_warm(void)
{
	struct client cl;
	struct conn *c = &cl.c;
	int bad = 0;

	memset(&cl, 0, sizeof cl);
	c->fd = -1;
	cl.rng = cfg.seed | 1;
	if (session_open(c) < 0)
		return 1;
	if (c->ssl)
		printf("tls=%s/%s ", SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
	else
		printf("tls=none ");
	printf("exists=%lu uidnext=%lu ", c->exists, c->uidnext);
	if (op_result(&cl, cmd(c, "FETCH 1:* (FLAGS ENVELOPE INTERNALDATE RFC822.SIZE)"),
		      "FETCH 1:*") != 0)
		bad = 1;
	else if (c->fetches != c->exists)
		bad |= check(&cl, 0, "FETCH 1:*", "%lu FETCH responses for %lu messages", c->fetches,
			     c->exists);
	for (int i = 0; i < cfg.nterms && !bad; i++) {
		int r = do_search(&cl);

		if (r < 0)
			return 1;
		bad |= r;
	}
	printf("searches=%d\n", cfg.nterms);
	if (session_close(c) < 0)
		bad = 1;
	free(c->line);
	free(c->seen);
	return bad;
}

static volatile sig_atomic_t idle_stop;

static void on_stop(int sig)
{
	(void)sig;
	idle_stop = 1;
}

static int cmd_idle(void)
{
	struct conn *cs = calloc((size_t)cfg.clients, sizeof *cs);
	struct sigaction sa;
	int open_n = 0, bad = 0;
	char b[64];

	if (cs == NULL)
		die("out of memory");
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	for (int i = 0; i < cfg.clients; i++) {
		cs[i].fd = -1;
		cs[i].id = i;
		if (session_open(&cs[i]) < 0) {
			bad = 1;
			break;
		}
		open_n++;
	}
	printf("ready %d\n", open_n);
	fflush(stdout);
	while (!idle_stop && read(0, b, sizeof b) > 0)
		;
	for (int i = 0; i < open_n; i++) {
		if (session_close(&cs[i]) < 0)
			bad = 1;
		free(cs[i].line);
		free(cs[i].seen);
	}
	free(cs);
	return bad;
}

static enum scenario parse_scenario(const char *s)
{
	for (size_t i = 0; i < NELEM(scenario_names); i++)
		if (strcmp(s, scenario_names[i]) == 0)
			return (enum scenario)i;
	die("unknown scenario %s", s);
	return SC_LOGIN;
}

int main(int argc, char **argv)
{
	const char *mode;
	int opt, rc;

	if (argc >= 2 && strcmp(argv[1], "gen") == 0)
		return cmd_gen(argc, argv);
	if (argc == 3 && strcmp(argv[1], "hash") == 0) {
		char out[crypto_pwhash_argon2id_STRBYTES];

		if (sodium_init() < 0 ||
		    crypto_pwhash_argon2id_str(out, argv[2], strlen(argv[2]),
					       crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE,
					       crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE) != 0)
			die("argon2id hashing failed");
		printf("%s\n", out);
		return 0;
	}
	if (argc < 2)
		die("usage: imap-load gen DIR COUNT SEED EXPECT | run|warm|idle [options]");
	mode = argv[1];
	signal(SIGPIPE, SIG_IGN);
	optind = 2;
	while ((opt = getopt(argc, argv, "h:p:T:u:w:s:c:d:n:e:S:C:v")) != -1) {
		switch (opt) {
		case 'h': cfg.host = optarg; break;
		case 'p': cfg.port = atoi(optarg); break;
		case 'T': cfg.tls = strcmp(optarg, "plain") != 0; break;
		case 'u': cfg.user = optarg; break;
		case 'w': cfg.password = optarg; break;
		case 's': cfg.scenario = parse_scenario(optarg); break;
		case 'c': cfg.clients = atoi(optarg); break;
		case 'd': cfg.seconds = atof(optarg); break;
		case 'n': cfg.ops_per_client = atol(optarg); break;
		case 'e': load_expect(optarg); break;
		case 'S': cfg.seed = strtoull(optarg, NULL, 10); break;
		case 'C': cfg.cgroup = optarg; break;
		case 'v': cfg.verbose = 1; break;
		default: die("bad option");
		}
	}
	if (cfg.port <= 0 || cfg.password == NULL || cfg.clients <= 0)
		die("need -p PORT, -w PASSWORD and -c CLIENTS > 0");
	if (cfg.tls)
		tls_init();
	if (strcmp(mode, "run") == 0)
		rc = cmd_run();
	else if (strcmp(mode, "warm") == 0)
		rc = cmd_warm();
	else if (strcmp(mode, "idle") == 0)
		rc = cmd_idle();
	else
		die("unknown mode %s", mode);
	if (cfg.ctx)
		SSL_CTX_free(cfg.ctx);
	return rc;
}
