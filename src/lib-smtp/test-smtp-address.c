/*
 * test-smtp-address.c — unit tests for smtp-address.c: MAIL FROM / RCPT TO
 * paths and parameters, domain checks, address formatting, relay characters,
 * xtext.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib-smtp/smtp.h"

#define CHECK(label, cond) \
	do { \
		if (!(cond)) \
			fail_msg("case '%s': check failed: %s", (label), #cond); \
	} while (0)

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

#define ES   "501 5.1.7 Bad sender address syntax"
#define ER   "501 5.1.3 Bad recipient address syntax"
#define EP   "501 5.5.4 Syntax error in parameters"
#define ETM  "501 5.5.4 Too many parameters"
#define EDUP "501 5.5.4 Duplicate parameter"

#define F_NULL    1u
#define F_ROUTE   2u
#define F_QUOTED  4u
#define F_LITERAL 8u
#define F_UTF8    16u

#define MAIL true
#define RCPT false

struct path_case {
	const char *label;
	const char *args;
	size_t len;             /* 0: strlen(args) */
	bool mail;              /* allow_null */
	int ret;
	const char *error;      /* -1: the exact reply */
	const char *localpart;
	const char *domain;
	unsigned flags;
	const char *params;     /* "KEY=value KEY2" as parsed */
	const char *formatted;  /* smtp_address_format() */
	bool relay;             /* smtp_address_has_relay_chars() */
};

#define OKP(label, args, mail, lp, dom, flags, params, fmt, relay) \
	{ label, args, 0, mail, 0, NULL, lp, dom, flags, params, fmt, relay }
#define BADP(label, args, mail, err) \
	{ label, args, 0, mail, -1, err, NULL, NULL, 0, NULL, NULL, false }
#define BADN(label, args, mail, err) \
	{ label, args, sizeof(args) - 1, mail, -1, err, NULL, NULL, 0, NULL, NULL, false }

static const struct path_case path_cases[] = {
	/* plain paths */
	OKP("simple sender", "<user@example.com>", MAIL, "user", "example.com", 0, "",
	    "user@example.com", false),
	OKP("simple recipient", "<user@example.com>", RCPT, "user", "example.com", 0, "",
	    "user@example.com", false),
	OKP("case kept", "<John.Doe@Example.COM>", RCPT, "John.Doe", "Example.COM", 0, "",
	    "John.Doe@Example.COM", false),
	OKP("leading spaces", "  <a@b.example>", MAIL, "a", "b.example", 0, "", "a@b.example", false),
	OKP("trailing spaces", "<a@b.example>   ", MAIL, "a", "b.example", 0, "", "a@b.example", false),
	OKP("single label domain", "<root@localhost>", RCPT, "root", "localhost", 0, "",
	    "root@localhost", false),
	OKP("hyphen and digits", "<a1@my-host.123.example>", RCPT, "a1", "my-host.123.example", 0,
	    "", "a1@my-host.123.example", false),
	OKP("dotted local", "<first.middle.last@x.example>", RCPT, "first.middle.last", "x.example",
	    0, "", "first.middle.last@x.example", false),
	OKP("atext specials", "<a#$&'*+-/=?^_`{|}~b@x.example>", RCPT, "a#$&'*+-/=?^_`{|}~b",
	    "x.example", 0, "", "a#$&'*+-/=?^_`{|}~b@x.example", false),
	OKP("plus address", "<user+tag@x.example>", RCPT, "user+tag", "x.example", 0, "",
	    "user+tag@x.example", false),

	/* null path */
	OKP("null path", "<>", MAIL, "", "", F_NULL, "", "", false),
	OKP("null path with params", "<> SIZE=1000 BODY=7BIT", MAIL, "", "", F_NULL,
	    "SIZE=1000 BODY=7BIT", "", false),
	BADP("null path for rcpt", "<>", RCPT, ER),
	BADP("null path with space", "< >", MAIL, ES),

	/* MAIL FROM parameters */
	OKP("size", "<a@b.example> SIZE=12345", MAIL, "a", "b.example", 0, "SIZE=12345",
	    "a@b.example", false),
	OKP("body 8bitmime", "<a@b.example> BODY=8BITMIME", MAIL, "a", "b.example", 0,
	    "BODY=8BITMIME", "a@b.example", false),
	OKP("smtputf8", "<a@b.example> SMTPUTF8", MAIL, "a", "b.example", 0, "SMTPUTF8",
	    "a@b.example", false),
	OKP("keyword upper-cased", "<a@b.example> body=8bitmime smtputf8", MAIL, "a", "b.example",
	    0, "BODY=8bitmime SMTPUTF8", "a@b.example", false),
	OKP("several params", "<a@b.example> SIZE=1 SMTPUTF8 BODY=8BITMIME RET=HDRS ENVID=QQ314159",
	    MAIL, "a", "b.example", 0, "SIZE=1 SMTPUTF8 BODY=8BITMIME RET=HDRS ENVID=QQ314159",
	    "a@b.example", false),
	OKP("several spaces between params", "<a@b.example>   SIZE=1    SMTPUTF8  ", MAIL, "a",
	    "b.example", 0, "SIZE=1 SMTPUTF8", "a@b.example", false),
	OKP("auth null", "<a@b.example> AUTH=<>", MAIL, "a", "b.example", 0, "AUTH=<>",
	    "a@b.example", false),
	OKP("xtext kept raw", "<a@b.example> ENVID=a+2Bb+3Dc", MAIL, "a", "b.example", 0,
	    "ENVID=a+2Bb+3Dc", "a@b.example", false),
	OKP("equals in value lenient", "<a@b.example> X=a=b", MAIL, "a", "b.example", 0, "X=a=b",
	    "a@b.example", false),
	OKP("hyphen keyword", "<a@b.example> X-FOO=bar", MAIL, "a", "b.example", 0, "X-FOO=bar",
	    "a@b.example", false),
	OKP("digit keyword", "<a@b.example> 8BIT", MAIL, "a", "b.example", 0, "8BIT",
	    "a@b.example", false),
	OKP("utf8 value", "<a@b.example> X=\xc3\xa9t\xc3\xa9", MAIL, "a", "b.example", 0,
	    "X=\xc3\xa9t\xc3\xa9", "a@b.example", false),
	OKP("rcpt dsn params", "<a@b.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b.example",
	    RCPT, "a", "b.example", 0, "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b.example",
	    "a@b.example", false),
	BADP("empty value", "<a@b.example> SIZE=", MAIL, EP),
	BADP("no keyword", "<a@b.example> =1", MAIL, EP),
	BADP("keyword starts with hyphen", "<a@b.example> -SIZE=1", MAIL, EP),
	BADP("underscore keyword", "<a@b.example> SI_ZE=1", MAIL, EP),
	BADP("duplicate", "<a@b.example> SIZE=1 SIZE=2", MAIL, EDUP),
	BADP("duplicate other case", "<a@b.example> size=1 SIZE=2", MAIL, EDUP),
	BADP("duplicate no value", "<a@b.example> SMTPUTF8 SMTPUTF8", MAIL, EDUP),
	BADP("control in value", "<a@b.example> SIZE=1\x01", MAIL, EP),
	BADP("del in value", "<a@b.example> X=a\x7f", MAIL, EP),
	BADP("invalid utf8 value", "<a@b.example> X=\xff", MAIL, EP),
	BADP("truncated utf8 value", "<a@b.example> X=a\xc3", MAIL, EP),
	BADP("keyword junk", "<a@b.example> SIZE:1", MAIL, EP),
	BADP("rcpt duplicate notify", "<a@b.example> NOTIFY=NEVER NOTIFY=NEVER", RCPT, EDUP),

	/* brackets, spaces, @ */
	BADP("empty", "", MAIL, ES),
	BADP("empty rcpt", "", RCPT, ER),
	BADP("only spaces", "   ", MAIL, ES),
	BADP("bare address", "user@example.com", MAIL, ES),
	BADP("bare address rcpt", "user@example.com", RCPT, ER),
	BADP("missing close", "<user@example.com", MAIL, ES),
	BADP("missing open", "user@example.com>", RCPT, ER),
	BADP("double brackets", "<<a@b.example>>", MAIL, ES),
	BADP("extra close", "<a@b.example>>", MAIL, ES),
	BADP("junk after path", "<a@b.example>x", MAIL, ES),
	BADP("space after open", "< a@b.example>", MAIL, ES),
	BADP("space before at", "<a @b.example>", MAIL, ES),
	BADP("space after at", "<a@ b.example>", MAIL, ES),
	BADP("space before close", "<a@b.example >", MAIL, ES),
	BADP("space in local", "<a b@c.example>", RCPT, ER),
	BADP("two at", "<a@b@c.example>", RCPT, ER),
	BADP("empty local", "<@b.example>", RCPT, ER),
	BADP("empty domain", "<a@>", RCPT, ER),
	BADP("no domain", "<user>", RCPT, ER),
	BADP("no domain sender", "<user>", MAIL, ES),
	BADP("comma in local", "<a,b@c.example>", RCPT, ER),
	BADP("parens in local", "<a(b)@c.example>", RCPT, ER),
	BADP("brackets in local", "<a[b]@c.example>", RCPT, ER),
	BADP("colon in local", "<a:b@c.example>", RCPT, ER),
	BADP("semicolon in local", "<a;b@c.example>", RCPT, ER),
	BADP("backslash in dot-string", "<a\\b@c.example>", RCPT, ER),

	/* dots */
	BADP("leading dot", "<.a@b.example>", RCPT, ER),
	BADP("trailing dot", "<a.@b.example>", RCPT, ER),
	BADP("double dot", "<a..b@b.example>", RCPT, ER),
	BADP("only dot", "<.@b.example>", RCPT, ER),
	BADP("domain leading dot", "<a@.b.example>", RCPT, ER),
	BADP("domain trailing dot", "<a@b.example.>", RCPT, ER),
	BADP("domain double dot", "<a@b..example>", RCPT, ER),
	BADP("domain label leading hyphen", "<a@-b.example>", RCPT, ER),
	BADP("domain label trailing hyphen", "<a@b-.example>", RCPT, ER),
	BADP("domain underscore", "<a@b_c.example>", RCPT, ER),
	BADP("domain percent", "<a@b%c.example>", RCPT, ER),

	/* control characters and NUL */
	BADP("control in local", "<a\x01" "b@c.example>", RCPT, ER),
	BADP("tab in local", "<a\tb@c.example>", RCPT, ER),
	BADP("del in local", "<a\x7f" "b@c.example>", RCPT, ER),
	BADP("del in domain", "<a@c\x7f.example>", RCPT, ER),
	BADP("cr in local", "<a\rb@c.example>", RCPT, ER),
	BADP("lf in domain", "<a@c.exa\nmple>", RCPT, ER),
	BADN("nul in local", "<a\0b@c.example>", RCPT, ER),
	BADN("nul in domain", "<a@c\0.example>", MAIL, ES),
	BADN("nul in quoted", "<\"a\0b\"@c.example>", RCPT, ER),
	BADN("nul in param", "<a@b.example> X=a\0b", MAIL, EP),
	BADP("control in quoted", "<\"a\x01\"@c.example>", RCPT, ER),
	BADP("tab in quoted", "<\"a\tb\"@c.example>", RCPT, ER),
	BADP("control in quoted-pair", "<\"a\\\x01\"@c.example>", RCPT, ER),
	BADP("c1 control in local", "<a\xc2\x85" "b@c.example>", RCPT, ER),
	BADP("c1 control in domain", "<a@c\xc2\x9f.example>", RCPT, ER),

	/* quoted local parts */
	OKP("quoted not needed", "<\"john.doe\"@x.example>", RCPT, "john.doe", "x.example",
	    F_QUOTED, "", "john.doe@x.example", false),
	OKP("quoted space", "<\"a b\"@x.example>", RCPT, "a b", "x.example", F_QUOTED, "",
	    "\"a b\"@x.example", false),
	OKP("quoted escaped quote", "<\"a\\\"b\"@x.example>", RCPT, "a\"b", "x.example",
	    F_QUOTED, "", "\"a\\\"b\"@x.example", false),
	OKP("quoted escaped backslash", "<\"a\\\\b\"@x.example>", RCPT, "a\\b", "x.example",
	    F_QUOTED, "", "\"a\\\\b\"@x.example", false),
	OKP("quoted-pair of plain char", "<\"\\a\"@x.example>", RCPT, "a", "x.example", F_QUOTED,
	    "", "a@x.example", false),
	OKP("quoted at", "<\"a@b\"@x.example>", RCPT, "a@b", "x.example", F_QUOTED, "",
	    "\"a@b\"@x.example", true),
	OKP("quoted double dot", "<\"a..b\"@x.example>", RCPT, "a..b", "x.example", F_QUOTED, "",
	    "\"a..b\"@x.example", false),
	OKP("quoted leading dot", "<\".a\"@x.example>", RCPT, ".a", "x.example", F_QUOTED, "",
	    "\".a\"@x.example", false),
	OKP("quoted specials", "<\"<a>,(b);[c]:\"@x.example>", RCPT, "<a>,(b);[c]:", "x.example",
	    F_QUOTED, "", "\"<a>,(b);[c]:\"@x.example", false),
	OKP("quoted with params", "<\"a b\"@x.example> SIZE=5", MAIL, "a b", "x.example",
	    F_QUOTED, "SIZE=5", "\"a b\"@x.example", false),
	BADP("empty quoted", "<\"\"@x.example>", RCPT, ER),
	BADP("unterminated quoted", "<\"abc@x.example>", RCPT, ER),
	BADP("junk after quoted", "<\"a\"b@x.example>", RCPT, ER),
	BADP("dot after quoted", "<\"a\".b@x.example>", RCPT, ER),
	BADP("quoted without domain", "<\"a\">", RCPT, ER),
	BADP("backslash at end", "<\"a\\", RCPT, ER),

	/* source routes */
	OKP("source route", "<@a.example,@b.example:user@c.example>", RCPT, "user", "c.example",
	    F_ROUTE, "", "user@c.example", false),
	OKP("source route one hop", "<@a.example:user@c.example>", MAIL, "user", "c.example",
	    F_ROUTE, "", "user@c.example", false),
	OKP("source route with params", "<@a.example:user@c.example> SIZE=1", MAIL, "user",
	    "c.example", F_ROUTE, "SIZE=1", "user@c.example", false),
	BADP("source route no colon", "<@a.example user@c.example>", RCPT, ER),
	BADP("source route bad domain", "<@a..example:user@c.example>", RCPT, ER),
	BADP("source route empty domain", "<@:user@c.example>", RCPT, ER),
	BADP("source route missing at", "<@a.example,b.example:user@c.example>", RCPT, ER),
	BADP("source route no mailbox", "<@a.example:>", RCPT, ER),
	BADP("source route only", "<@a.example>", RCPT, ER),
	BADP("source route to postmaster", "<@a.example:Postmaster>", RCPT, ER),

	/* Postmaster */
	OKP("postmaster", "<Postmaster>", RCPT, "postmaster", "", 0, "", "postmaster", false),
	OKP("postmaster lower", "<postmaster>", RCPT, "postmaster", "", 0, "", "postmaster", false),
	OKP("postmaster upper", "<POSTMASTER>", RCPT, "postmaster", "", 0, "", "postmaster", false),
	OKP("postmaster params", "<Postmaster> NOTIFY=NEVER", RCPT, "postmaster", "", 0,
	    "NOTIFY=NEVER", "postmaster", false),
	OKP("postmaster with domain", "<Postmaster@x.example>", RCPT, "Postmaster", "x.example",
	    0, "", "Postmaster@x.example", false),
	BADP("postmaster as sender", "<Postmaster>", MAIL, ES),
	BADP("quoted postmaster", "<\"Postmaster\">", RCPT, ER),
	BADP("postmasterx", "<postmasterx>", RCPT, ER),

	/* domain literals */
	OKP("ipv4 literal", "<u@[192.0.2.1]>", RCPT, "u", "[192.0.2.1]", F_LITERAL, "",
	    "u@[192.0.2.1]", false),
	OKP("ipv4 zeros", "<u@[0.0.0.0]>", RCPT, "u", "[0.0.0.0]", F_LITERAL, "", "u@[0.0.0.0]",
	    false),
	OKP("ipv4 max", "<u@[255.255.255.255]>", RCPT, "u", "[255.255.255.255]", F_LITERAL, "",
	    "u@[255.255.255.255]", false),
	OKP("ipv6 literal", "<u@[IPv6:2001:db8::1]>", RCPT, "u", "[IPv6:2001:db8::1]", F_LITERAL,
	    "", "u@[IPv6:2001:db8::1]", false),
	OKP("ipv6 tag lower", "<u@[ipv6:::1]>", RCPT, "u", "[ipv6:::1]", F_LITERAL, "",
	    "u@[ipv6:::1]", false),
	OKP("ipv6 full", "<u@[IPv6:2001:db8:0:0:0:0:0:1]>", MAIL, "u", "[IPv6:2001:db8:0:0:0:0:0:1]",
	    F_LITERAL, "", "u@[IPv6:2001:db8:0:0:0:0:0:1]", false),
	OKP("ipv6 v4-mapped", "<u@[IPv6:::ffff:192.0.2.1]>", RCPT, "u", "[IPv6:::ffff:192.0.2.1]",
	    F_LITERAL, "", "u@[IPv6:::ffff:192.0.2.1]", false),
	OKP("literal with params", "<u@[192.0.2.1]> SIZE=1", MAIL, "u", "[192.0.2.1]", F_LITERAL,
	    "SIZE=1", "u@[192.0.2.1]", false),
	BADP("ipv4 three parts", "<u@[1.2.3]>", RCPT, ER),
	BADP("ipv4 five parts", "<u@[1.2.3.4.5]>", RCPT, ER),
	BADP("ipv4 too big", "<u@[256.1.1.1]>", RCPT, ER),
	BADP("ipv4 leading zero", "<u@[01.2.3.4]>", RCPT, ER),
	BADP("ipv4 four digits", "<u@[1.2.3.1000]>", RCPT, ER),
	BADP("ipv4 empty part", "<u@[1..3.4]>", RCPT, ER),
	BADP("ipv4 trailing dot", "<u@[1.2.3.4.]>", RCPT, ER),
	BADP("ipv4 space", "<u@[1.2.3.4 ]>", RCPT, ER),
	BADP("literal unterminated", "<u@[1.2.3.4>", RCPT, ER),
	BADP("literal empty", "<u@[]>", RCPT, ER),
	BADP("literal junk after", "<u@[1.2.3.4]x>", RCPT, ER),
	BADP("literal no brackets ok but ip", "<u@[1.2.3.4].example>", RCPT, ER),
	BADP("ipv6 bad hex", "<u@[IPv6:zz::1]>", RCPT, ER),
	BADP("ipv6 too many groups", "<u@[IPv6:1:2:3:4:5:6:7:8:9]>", RCPT, ER),
	BADP("ipv6 zone", "<u@[IPv6:fe80::1%eth0]>", RCPT, ER),
	BADP("ipv6 without tag", "<u@[2001:db8::1]>", RCPT, ER),
	BADP("ipv6 empty", "<u@[IPv6:]>", RCPT, ER),
	BADP("general literal", "<u@[x-tag:foo]>", RCPT, ER),

	/* UTF-8 (RFC 6531) */
	OKP("utf8 local", "<j\xc3\xb6ran@example.de>", RCPT, "j\xc3\xb6ran", "example.de", F_UTF8,
	    "", "j\xc3\xb6ran@example.de", false),
	OKP("utf8 domain", "<user@b\xc3\xbc" "cher.de>", RCPT, "user", "b\xc3\xbc" "cher.de", F_UTF8,
	    "", "user@b\xc3\xbc" "cher.de", false),
	OKP("utf8 cjk", "<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a>",
	    MAIL, "\xe7\x94\xa8\xe6\x88\xb7", "\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a",
	    F_UTF8, "",
	    "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a", false),
	OKP("utf8 4-byte", "<\xf0\x9f\x98\x80@x.example>", RCPT, "\xf0\x9f\x98\x80", "x.example",
	    F_UTF8, "", "\xf0\x9f\x98\x80@x.example", false),
	OKP("utf8 quoted", "<\"\xc3\xbc \xc3\xbc\"@x.example>", RCPT, "\xc3\xbc \xc3\xbc",
	    "x.example", F_UTF8 | F_QUOTED, "", "\"\xc3\xbc \xc3\xbc\"@x.example", false),
	OKP("utf8 with smtputf8", "<j\xc3\xb6ran@b\xc3\xbc" "cher.de> SMTPUTF8", MAIL,
	    "j\xc3\xb6ran", "b\xc3\xbc" "cher.de", F_UTF8, "SMTPUTF8",
	    "j\xc3\xb6ran@b\xc3\xbc" "cher.de", false),
	OKP("a-label domain", "<user@xn--bcher-kva.de>", RCPT, "user", "xn--bcher-kva.de", 0, "",
	    "user@xn--bcher-kva.de", false),
	BADP("utf8 truncated", "<\xc3@x.example>", RCPT, ER),
	BADP("utf8 truncated at end", "<a@x.example\xc3>", RCPT, ER),
	BADP("utf8 overlong slash", "<\xc0\xaf@x.example>", RCPT, ER),
	BADP("utf8 overlong 3-byte", "<\xe0\x80\xaf@x.example>", RCPT, ER),
	BADP("utf8 overlong 4-byte", "<\xf0\x80\x80\xaf@x.example>", RCPT, ER),
	BADP("utf8 surrogate", "<\xed\xa0\x80@x.example>", RCPT, ER),
	BADP("utf8 above max", "<\xf4\x90\x80\x80@x.example>", RCPT, ER),
	BADP("utf8 ff", "<\xff@x.example>", MAIL, ES),
	BADP("utf8 lone continuation", "<a\x80@x.example>", RCPT, ER),
	BADP("latin1 local", "<j\xf6ran@x.example>", RCPT, ER),
	BADP("utf8 bad domain", "<a@\xc3\x28.de>", RCPT, ER),
	BADP("utf8 bad in quoted", "<\"\xc3\x28\"@x.example>", RCPT, ER),
	BADP("utf8 bad in route", "<@\xc3\x28.de:a@x.example>", RCPT, ER),

	/* relay tricks (the parser accepts them; the flag tells) */
	OKP("percent hack", "<user%other.example@x.example>", RCPT, "user%other.example",
	    "x.example", 0, "", "user%other.example@x.example", true),
	OKP("bang path", "<other.example!user@x.example>", RCPT, "other.example!user",
	    "x.example", 0, "", "other.example!user@x.example", true),
	OKP("quoted at relay", "<\"user@other.example\"@x.example>", RCPT, "user@other.example",
	    "x.example", F_QUOTED, "", "\"user@other.example\"@x.example", true),
	OKP("quoted percent relay", "<\"user%other\"@x.example>", RCPT, "user%other",
	    "x.example", F_QUOTED, "", "user%other@x.example", true),
};

static void params_canonical(const struct smtp_path_args *r, char *out, size_t size)
{
	size_t len = 0;
	out[0] = '\0';
	for (unsigned i = 0; i < r->nparams; i++) {
		int n = snprintf(out + len, size - len, "%s%s%s%s", i > 0 ? " " : "",
				 r->params[i].keyword, r->params[i].has_value ? "=" : "",
				 r->params[i].value);
		assert_true(n > 0 && (size_t)n < size - len);
		len += (size_t)n;
	}
}

static unsigned addr_flags(const struct smtp_address *a)
{
	return (a->null_path ? F_NULL : 0) | (a->had_source_route ? F_ROUTE : 0) |
		(a->quoted_localpart ? F_QUOTED : 0) | (a->domain_literal ? F_LITERAL : 0) |
		(a->utf8 ? F_UTF8 : 0);
}

static bool path_args_zero(const struct smtp_path_args *r)
{
	static const struct smtp_path_args zero;
	return memcmp(r, &zero, sizeof(zero)) == 0;
}

/* Parses with a heap copy of exactly len octets so ASan sees over-reads. */
static int parse_copy(const char *args, size_t len, bool allow_null, struct smtp_path_args *r,
		      const char **error_r)
{
	char *copy = malloc(len > 0 ? len : 1);
	assert_non_null(copy);
	memcpy(copy, args, len);
	int ret = smtp_path_parse(copy, len, allow_null, r, error_r);
	free(copy);
	return ret;
}

static void test_path_parse(void **state)
{
	struct smtp_path_args *r = malloc(sizeof(*r));
	struct smtp_path_args *r2 = malloc(sizeof(*r2));
	char buf[2048], fmt[SMTP_ADDRESS_MAX * 4 + 8];
	(void)state;

	assert_non_null(r);
	assert_non_null(r2);
	for (size_t i = 0; i < N_ELEMENTS(path_cases); i++) {
		const struct path_case *c = &path_cases[i];
		size_t len = c->len != 0 ? c->len : strlen(c->args);
		const char *error = NULL;

		memset(r, 0x55, sizeof(*r));
		int ret = parse_copy(c->args, len, c->mail, r, &error);
		CHECK(c->label, ret == c->ret);
		if (ret < 0) {
			CHECK(c->label, error != NULL && strcmp(error, c->error) == 0);
			CHECK(c->label, path_args_zero(r));
			continue;
		}
		CHECK(c->label, strcmp(r->addr.localpart, c->localpart) == 0);
		CHECK(c->label, strcmp(r->addr.domain, c->domain) == 0);
		CHECK(c->label, addr_flags(&r->addr) == c->flags);
		params_canonical(r, buf, sizeof(buf));
		CHECK(c->label, strcmp(buf, c->params) == 0);
		CHECK(c->label, smtp_address_format(&r->addr, fmt, sizeof(fmt)) == 0);
		CHECK(c->label, strcmp(fmt, c->formatted) == 0);
		CHECK(c->label, smtp_address_has_relay_chars(&r->addr) == c->relay);

		/* Round trip: the formatted address parses back to the same. */
		int n = snprintf(buf, sizeof(buf), "<%s>", fmt);
		assert_true(n > 0 && (size_t)n < sizeof(buf));
		CHECK(c->label, parse_copy(buf, (size_t)n, c->mail, r2, &error) == 0);
		CHECK(c->label, strcmp(r2->addr.localpart, r->addr.localpart) == 0);
		CHECK(c->label, strcmp(r2->addr.domain, r->addr.domain) == 0);
		CHECK(c->label, r2->addr.null_path == r->addr.null_path);
	}
	free(r);
	free(r2);
}

static void test_param_find(void **state)
{
	struct smtp_path_args r;
	const char *error;
	const char *args = "<a@b.example> SIZE=100 smtputf8 Body=8BITMIME";
	(void)state;

	assert_int_equal(smtp_path_parse(args, strlen(args), true, &r, &error), 0);
	assert_int_equal(r.nparams, 3);
	const struct smtp_param *p = smtp_param_find(&r, "SIZE");
	assert_non_null(p);
	assert_true(p->has_value);
	assert_string_equal(p->value, "100");
	p = smtp_param_find(&r, "size");
	assert_non_null(p);
	assert_string_equal(p->keyword, "SIZE");
	p = smtp_param_find(&r, "SMTPUTF8");
	assert_non_null(p);
	assert_false(p->has_value);
	assert_string_equal(p->value, "");
	p = smtp_param_find(&r, "body");
	assert_non_null(p);
	assert_string_equal(p->value, "8BITMIME");
	assert_null(smtp_param_find(&r, "RET"));
	assert_null(smtp_param_find(&r, "SIZ"));
	assert_null(smtp_param_find(&r, ""));
}

/* Builds "<" local "@" domain ">" + tail in buf. */
static size_t make_path(char *buf, size_t size, const char *local, const char *domain,
			const char *tail)
{
	int n = snprintf(buf, size, "<%s@%s>%s", local, domain, tail);
	assert_true(n > 0 && (size_t)n < size);
	return (size_t)n;
}

static char *repeat(const char *unit, size_t count, const char *suffix)
{
	size_t ulen = strlen(unit), slen = strlen(suffix);
	char *s = malloc(ulen * count + slen + 1);
	assert_non_null(s);
	for (size_t i = 0; i < count; i++)
		memcpy(s + i * ulen, unit, ulen);
	memcpy(s + ulen * count, suffix, slen + 1);
	return s;
}

/* A domain of exactly total octets: labels of up to label 'a' separated by dots. */
static char *domain_of_len(size_t total, size_t label)
{
	char *s = malloc(total + 1);
	assert_non_null(s);
	for (size_t i = 0; i < total; i++)
		s[i] = (i + 1) % (label + 1) == 0 ? '.' : 'a';
	if (s[total - 1] == '.')
		s[total - 1] = 'b';
	s[total] = '\0';
	return s;
}

static void test_path_lengths(void **state)
{
	struct smtp_path_args r;
	const char *error;
	char buf[4096];
	size_t n;
	char *s, *d;
	(void)state;

	/* local part: 64 octets ok, 65 not */
	s = repeat("a", 64, "");
	n = make_path(buf, sizeof(buf), s, "x.example", "");
	assert_int_equal(parse_copy(buf, n, false, &r, &error), 0);
	assert_string_equal(r.addr.localpart, s);
	free(s);
	s = repeat("a", 65, "");
	n = make_path(buf, sizeof(buf), s, "x.example", "");
	assert_int_equal(parse_copy(buf, n, false, &r, &error), -1);
	assert_string_equal(error, ER);
	free(s);
	/* counted as sent: quotes included */
	s = repeat("a", 62, "\"");
	n = snprintf(buf, sizeof(buf), "<\"%s@x.example>", s);
	assert_int_equal(parse_copy(buf, n, false, &r, &error), 0);
	free(s);
	s = repeat("a", 63, "\"");
	n = snprintf(buf, sizeof(buf), "<\"%s@x.example>", s);
	assert_int_equal(parse_copy(buf, n, false, &r, &error), -1);
	free(s);
	/* UTF-8 local part: 64 characters (128 octets) ok, 65 not */
	s = repeat("\xc3\xa9", 64, "");
	n = make_path(buf, sizeof(buf), s, "x.example", "");
	assert_int_equal(parse_copy(buf, n, true, &r, &error), 0);
	assert_string_equal(r.addr.localpart, s);
	assert_true(r.addr.utf8);
	free(s);
	s = repeat("\xc3\xa9", 65, "");
	n = make_path(buf, sizeof(buf), s, "x.example", "");
	assert_int_equal(parse_copy(buf, n, true, &r, &error), -1);
	assert_string_equal(error, ES);
	free(s);
	/* 64 four-octet characters fill the buffer exactly */
	s = repeat("\xf0\x9f\x98\x80", 64, "");
	n = make_path(buf, sizeof(buf), s, "x.example", "");
	assert_int_equal(parse_copy(buf, n, true, &r, &error), 0);
	assert_int_equal(strlen(r.addr.localpart), 256);
	free(s);

	/* domain: 255 octets ok, 256 not; label 63 ok, 64 not */
	d = domain_of_len(255, 50);
	n = make_path(buf, sizeof(buf), "u", d, "");
	assert_int_equal(parse_copy(buf, n, false, &r, &error), 0);
	assert_string_equal(r.addr.domain, d);
	assert_true(smtp_domain_valid(d, 255));
	free(d);
	d = domain_of_len(256, 50);
	n = make_path(buf, sizeof(buf), "u", d, "");
	assert_int_equal(parse_copy(buf, n, false, &r, &error), -1);
	assert_false(smtp_domain_valid(d, 256));
	free(d);
	d = repeat("a", 63, ".example");
	n = make_path(buf, sizeof(buf), "u", d, "");
	assert_int_equal(parse_copy(buf, n, false, &r, &error), 0);
	free(d);
	d = repeat("a", 64, ".example");
	n = make_path(buf, sizeof(buf), "u", d, "");
	assert_int_equal(parse_copy(buf, n, false, &r, &error), -1);
	free(d);
	/* a very long path does not overflow anything */
	d = repeat("a.", 1500, "example");
	n = make_path(buf, sizeof(buf), "u", d, "");
	assert_int_equal(parse_copy(buf, n, false, &r, &error), -1);
	free(d);

	/* parameters: 16 ok, 17 too many */
	{
		size_t len = (size_t)snprintf(buf, sizeof(buf), "<a@b.example>");
		for (int i = 0; i < SMTP_PARAMS_MAX; i++)
			len += (size_t)snprintf(buf + len, sizeof(buf) - len, " P%d=%d", i, i);
		assert_int_equal(parse_copy(buf, len, true, &r, &error), 0);
		assert_int_equal(r.nparams, SMTP_PARAMS_MAX);
		assert_string_equal(r.params[15].keyword, "P15");
		assert_string_equal(r.params[15].value, "15");
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, " P16");
		assert_int_equal(parse_copy(buf, len, true, &r, &error), -1);
		assert_string_equal(error, ETM);
	}
	/* keyword 31 ok, 32 not; value 511 ok, 512 not */
	s = repeat("K", 31, "=v");
	n = make_path(buf, sizeof(buf), "a", "b.example", " ");
	memcpy(buf + n, s, strlen(s));
	assert_int_equal(parse_copy(buf, n + strlen(s), true, &r, &error), 0);
	assert_int_equal(strlen(r.params[0].keyword), 31);
	free(s);
	s = repeat("K", 32, "=v");
	memcpy(buf + n, s, strlen(s));
	assert_int_equal(parse_copy(buf, n + strlen(s), true, &r, &error), -1);
	assert_string_equal(error, EP);
	free(s);
	s = repeat("v", 511, "");
	n = make_path(buf, sizeof(buf), "a", "b.example", " X=");
	memcpy(buf + n, s, 511);
	assert_int_equal(parse_copy(buf, n + 511, true, &r, &error), 0);
	assert_string_equal(r.params[0].value, s);
	free(s);
	s = repeat("v", 512, "");
	memcpy(buf + n, s, 512);
	assert_int_equal(parse_copy(buf, n + 512, true, &r, &error), -1);
	assert_string_equal(error, EP);
	free(s);
}

static void test_address_format(void **state)
{
	struct smtp_address a;
	char out[64];
	(void)state;

	memset(&a, 0, sizeof(a));
	memcpy(a.localpart, "a\"b c\\", 7);
	memcpy(a.domain, "x.example", 10);
	assert_int_equal(smtp_address_format(&a, out, sizeof(out)), 0);
	assert_string_equal(out, "\"a\\\"b c\\\\\"@x.example");
	/* exactly fitting, one short */
	memcpy(a.localpart, "ab", 3);
	memcpy(a.domain, "cd", 3);
	assert_int_equal(smtp_address_format(&a, out, 6), 0);
	assert_string_equal(out, "ab@cd");
	memset(out, 'z', sizeof(out));
	assert_int_equal(smtp_address_format(&a, out, 5), -1);
	assert_string_equal(out, "");
	assert_int_equal(smtp_address_format(&a, out, 0), -1);
	assert_int_equal(out[0], '\0');
	/* null path */
	memset(&a, 0, sizeof(a));
	a.null_path = true;
	memset(out, 'z', sizeof(out));
	assert_int_equal(smtp_address_format(&a, out, sizeof(out)), 0);
	assert_string_equal(out, "");
	assert_int_equal(smtp_address_format(&a, out, 1), 0);
}

struct domain_case {
	const char *label;
	const char *s;
	size_t len;   /* 0: strlen */
	bool valid;
};

static const struct domain_case domain_cases[] = {
	{ "simple", "example.com", 0, true },
	{ "single label", "localhost", 0, true },
	{ "one char", "a", 0, true },
	{ "hyphen inside", "my-host.example", 0, true },
	{ "digits", "123.example", 0, true },
	{ "dotted quad as name", "192.0.2.1", 0, true },
	{ "a-label", "xn--bcher-kva.de", 0, true },
	{ "u-label", "b\xc3\xbc" "cher.de", 0, true },
	{ "ipv4 literal", "[192.0.2.1]", 0, true },
	{ "ipv6 literal", "[IPv6:2001:db8::1]", 0, true },
	{ "empty", "", 0, false },
	{ "dot", ".", 0, false },
	{ "trailing dot", "example.com.", 0, false },
	{ "leading dot", ".example.com", 0, false },
	{ "double dot", "example..com", 0, false },
	{ "leading hyphen", "-example.com", 0, false },
	{ "trailing hyphen", "example-.com", 0, false },
	{ "underscore", "ex_ample.com", 0, false },
	{ "space", "exa mple.com", 0, false },
	{ "at", "user@example.com", 0, false },
	{ "bad literal", "[300.1.1.1]", 0, false },
	{ "unterminated literal", "[192.0.2.1", 0, false },
	{ "literal tag only", "[IPv6:]", 0, false },
	{ "invalid utf8", "b\xc3" "cher.de", 0, false },
	{ "latin1", "b\xfc" "cher.de", 0, false },
	{ "nul", "a\0b", 3, false },
	{ "control", "a\x01" "b", 0, false },
};

static void test_domain_valid(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(domain_cases); i++) {
		const struct domain_case *c = &domain_cases[i];
		size_t len = c->len != 0 ? c->len : strlen(c->s);
		char *copy = malloc(len > 0 ? len : 1);
		assert_non_null(copy);
		memcpy(copy, c->s, len);
		CHECK(c->label, smtp_domain_valid(copy, len) == c->valid);
		free(copy);
	}
}

struct xtext_case {
	const char *label;
	const char *in;
	int ret;
	const char *out;
};

static const struct xtext_case xtext_cases[] = {
	{ "plain", "abc", 0, "abc" },
	{ "empty", "", 0, "" },
	{ "plus", "a+2Bb", 0, "a+b" },
	{ "equals", "+3D", 0, "=" },
	{ "space", "a+20b", 0, "a b" },
	{ "lower hex", "a+2bb", 0, "a+b" },
	{ "orcpt", "rfc822;user+40example.com", 0, "rfc822;user@example.com" },
	{ "all printable", "!~", 0, "!~" },
	{ "lone plus", "+", -1, "" },
	{ "one hex digit", "+2", -1, "" },
	{ "bad hex", "+2G", -1, "" },
	{ "bad first hex", "+G2", -1, "" },
	{ "raw equals", "a=b", -1, "" },
	{ "raw space", "a b", -1, "" },
	{ "nul escape", "+00", -1, "" },
	{ "crlf escape", "a+0D+0Ab", -1, "" },
	{ "del escape", "+7F", -1, "" },
	{ "8bit escape", "+C3+A9", -1, "" },
	{ "8bit raw", "\xc3\xa9", -1, "" },
	{ "control raw", "a\x01", -1, "" },
};

static void test_xtext_decode(void **state)
{
	char out[64];
	(void)state;

	for (size_t i = 0; i < N_ELEMENTS(xtext_cases); i++) {
		const struct xtext_case *c = &xtext_cases[i];
		memset(out, 'z', sizeof(out));
		CHECK(c->label, smtp_xtext_decode(c->in, out, sizeof(out)) == c->ret);
		CHECK(c->label, strcmp(out, c->out) == 0);
	}
	/* size limits: the result and its NUL must fit */
	assert_int_equal(smtp_xtext_decode("abc", out, 4), 0);
	assert_string_equal(out, "abc");
	assert_int_equal(smtp_xtext_decode("abc", out, 3), -1);
	assert_string_equal(out, "");
	assert_int_equal(smtp_xtext_decode("a+2B", out, 3), 0);
	assert_string_equal(out, "a+");
	assert_int_equal(smtp_xtext_decode("", out, 1), 0);
	assert_int_equal(smtp_xtext_decode("", out, 0), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_path_parse),
		cmocka_unit_test(test_param_find),
		cmocka_unit_test(test_path_lengths),
		cmocka_unit_test(test_address_format),
		cmocka_unit_test(test_domain_valid),
		cmocka_unit_test(test_xtext_decode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
