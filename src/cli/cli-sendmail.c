/*
 * cli-sendmail.c — `postern sendmail`, the sendmail(8)-compatible local
 * submission command for cron, PHP mail() and scripts; also what runs when
 * the binary is invoked through a link named "sendmail".
 *
 * Runs in the invoking user's own process with that user's rights (no
 * set-id), so any local user can use it (cron jobs, PHP as www-data): it
 * needs to read the config and to reach DATA/run/submit.sock (mode 0666 in
 * a traversable run/). It owns nothing durable: it reads the message from
 * stdin, adds the header fields an MTA adds to locally submitted mail, and
 * hands the message to the queue with the same IPC_Q_BEGIN / IPC_Q_DATA /
 * IPC_Q_END transaction smtpd uses. The queue resolves the recipients
 * (aliases, unknown local users: exit 65) and takes the user's identity
 * from the socket, not from us. Exit status 0
 * comes only after the queue's END reply, i.e. after the spool file is
 * fsync'ed; any failure before that leaves nothing in the queue, and the
 * caller keeps the message (exit status 75 = try again later).
 *
 * Input: LF or CRLF line ends; stored with LF (the spool's convention, as
 * smtpd's DATA filter writes it): CRLF and a bare CR become LF. No
 * dot-unstuffing (sendmail(8) never unstuffs); without -i/-oi a line that is
 * exactly "." ends the message and the rest of stdin is not read. A leading
 * mbox "From " line is dropped. NUL octets and lines longer than
 * smtp.max_line_length are refused, as smtpd refuses them.
 *
 * Addresses: a bare name without '@' ("root") is qualified with the config's
 * hostname ("root@HOSTNAME"), so an operator who wants cron mail for root
 * delivered locally makes HOSTNAME a domain with a root alias.
 *
 * RFC 5322 (3.2.2 comments and folding, 3.4 address lists and groups, 3.6
 * Date/From/Message-ID/Bcc), RFC 5321 4.4 (Received), RFC 2047 (encoded
 * display names), RFC 6531 (SMTPUTF8 envelope flag); exit codes from
 * sysexits.h as sendmail(8) uses them.
 */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "lib-config/config.h"
#include "lib-queue/spool.h"
#include "lib-smtp/smtp.h"
#include "lib/buf.h"
#include "lib/ipc.h"
#include "lib/limits.h"
#include "lib/util.h"

#define SM_QUEUE_SOCKET      "run/submit.sock"
#define SM_CONNECT_TIMEOUT   2000        /* ms: the queue may be restarting */
#define SM_BEGIN_TIMEOUT     30000       /* ms */
#define SM_END_TIMEOUT       300000      /* ms: the commit waits for fsync */
#define SM_ADDRESS_BUF       (SMTP_ADDRESS_MAX * 4 + 8)
/* One address as written in a header (quotes and route included). */
#define SM_ADDRESS_TEXT_MAX  (SMTP_ADDRESS_MAX * 4 + 256)
/* A display name from -F or the password file, in octets. */
#define SM_FULLNAME_MAX      256
/* RFC 2047 2: an encoded word is at most 75 characters; 45 octets are 60
 * base64 characters plus 12 for "=?UTF-8?B?" and "?=". */
#define SM_EW_CHUNK          45

static const char sm_usage_text[] =
	"usage: sendmail [-t] [-i] [-oi] [-v] [-f SENDER] [-F FULLNAME] [RECIPIENT...]\n"
	"       (the message is read from stdin; also `postern [-c FILE] sendmail ...`)\n"
	"  -t           also send to the To:, Cc: and Bcc: addresses of the message\n"
	"  -i, -oi      a line with a single \".\" does not end the message\n"
	"  -f SENDER    envelope sender ('<>' or '' for the null sender)\n"
	"  -F FULLNAME  display name for a From: header added to the message\n"
	"  -v           print the queue id\n"
	"  ignored: -oem -oee -oep -oeq -oew -odb -odi -odq -oQ... -om -bm -B 7BIT|8BITMIME\n";

/* One header field of the input: the whole field, continuation lines and
 * its final LF included. */
struct sm_field {
	size_t start, len;
	size_t name_len;
	bool drop;                   /* Bcc: never leaves this program */
};

struct sm_rcpt {
	char *address;               /* as given (qualified), or a remote alias target */
	char *mailbox;               /* canonical local user, NULL for remote */
};

struct sendmail {
	const struct config *cfg;

	/* options */
	bool extract;                /* -t */
	bool ignore_dots;            /* -i, -oi */
	bool verbose;                /* -v */
	const char *sender_arg;      /* -f / -r, NULL: the invoking user */
	const char *fullname_arg;    /* -F */
	char **rcpt_args;
	size_t nrcpt_args;

	/* who we are */
	uid_t uid;
	char *user;                  /* login name, or "uidN" */
	char *gecos_name;            /* first field of pw_gecos, or NULL */
	char user_addr[SM_ADDRESS_BUF];
	char sender[SM_ADDRESS_BUF]; /* "" for the null sender */
	bool smtputf8;

	/* the message, LF line ends */
	struct buf msg;
	bool body_8bit;
	struct sm_field *fields;
	size_t nfields, fields_alloc;
	size_t body_start;           /* offset of the body in msg */
	bool had_separator;          /* an empty line ended the header */
	bool has_date, has_msgid, has_from;

	/* recipients */
	struct sm_rcpt *rcpts;
	size_t nrcpts, rcpts_alloc;
	size_t given;                /* addresses given, before alias expansion */
	char first_given[SM_ADDRESS_BUF];

	/* the queue */
	int fd;
	char queue_id[17];
};

static int sm_fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int sm_fail(int status, const char *fmt, ...)
{
	va_list ap;

	fputs("sendmail: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return status;
}

static int sm_usage(const char *fmt, const char *arg)
{
	if (fmt != NULL) {
		fputs("sendmail: ", stderr);
		fprintf(stderr, fmt, arg);
		fputc('\n', stderr);
	}
	fputs(sm_usage_text, stderr);
	return EX_USAGE;
}

/* ---- options ---- */

/* The value of "-fVALUE" or "-f VALUE"; NULL when missing. */
static const char *sm_opt_value(int argc, char **argv, int *i)
{
	const char *a = argv[*i];
	if (a[2] != '\0')
		return a + 2;
	if (*i + 1 >= argc)
		return NULL;
	return argv[++*i];
}

/* "-o..." options: -oi is the only one with an effect. */
static bool sm_opt_o(struct sendmail *sm, const char *a)
{
	if (strcmp(a, "-oi") == 0) {
		sm->ignore_dots = true;
		return true;
	}
	/* error mode (-oe?), delivery mode (-od?), queue directory (-oQ...),
	 * "me too" (-om): meaningless here, accepted so programs keep working. */
	if ((a[2] == 'e' || a[2] == 'd') && a[3] != '\0' && a[4] == '\0')
		return true;
	return a[2] == 'Q' || strcmp(a, "-om") == 0;
}

static int sm_parse_args(struct sendmail *sm, int argc, char **argv)
{
	bool options = true;

	sm->rcpt_args = calloc((size_t)argc + 1, sizeof(*sm->rcpt_args));
	if (sm->rcpt_args == NULL)
		return sm_fail(EX_SOFTWARE, "out of memory");
	/* Options and recipients may be mixed, as with getopt()'s permutation. */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		if (!options || a[0] != '-' || a[1] == '\0') {
			sm->rcpt_args[sm->nrcpt_args++] = argv[i];
			continue;
		}
		if (strcmp(a, "--") == 0) {
			options = false;
			continue;
		}
		switch (a[1]) {
		case 'f':
		case 'r':
		case 'F':
		case 'B':
			v = sm_opt_value(argc, argv, &i);
			if (v == NULL)
				return sm_usage("option -%s needs a value", a + 1);
			if (a[1] == 'F')
				sm->fullname_arg = v;
			else if (a[1] == 'B') {
				if (strcasecmp(v, "7BIT") != 0 && strcasecmp(v, "8BITMIME") != 0)
					return sm_usage("-B %s: only 7BIT and 8BITMIME", v);
			} else
				sm->sender_arg = v;
			break;
		case 'o':
			if (!sm_opt_o(sm, a))
				return sm_usage("unsupported option %s", a);
			break;
		case 'b':
			if (strcmp(a, "-bm") != 0)
				return sm_usage("unsupported mode %s (only -bm)", a);
			break;
		default:
			/* a cluster of flags: -t, -i, -v, -ti, ... */
			for (const char *p = a + 1; *p != '\0'; p++) {
				if (*p == 't')
					sm->extract = true;
				else if (*p == 'i')
					sm->ignore_dots = true;
				else if (*p == 'v')
					sm->verbose = true;
				else
					return sm_usage("unknown option %s", a);
			}
			break;
		}
	}
	return 0;
}

/* ---- addresses ---- */

static bool sm_has_8bit(const char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s >= 0x80)
			return true;
	}
	return false;
}

/*
 * Parses one address as a user would give it: "a@b", "<a@b>", a bare name
 * (qualified with the hostname), or with allow_null "" / "<>". On success
 * writes "local@domain" (quoted as needed; "" for the null sender) to out.
 * 0, or -1 with *error_r.
 */
static int sm_address_parse(const struct sendmail *sm, const char *text, bool allow_null,
			    char *out, size_t size, const char **error_r)
{
	size_t len = strlen(text);
	struct buf b;
	struct smtp_path_args *pa = NULL;
	bool at = false, quoted = false;
	int ret = -1;

	*error_r = "bad address syntax";
	if (len >= 2 && text[0] == '<' && text[len - 1] == '>') {
		text++;
		len -= 2;
	}
	if (len == 0) {
		if (!allow_null) {
			*error_r = "empty address";
			return -1;
		}
		if (size > 0)
			out[0] = '\0';
		return 0;
	}
	if (len > SM_ADDRESS_TEXT_MAX)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (text[i] == '\\' && quoted)
			i++;
		else if (text[i] == '"')
			quoted = !quoted;
		else if (text[i] == '@' && !quoted)
			at = true;
	}
	buf_init(&b, SM_ADDRESS_TEXT_MAX + SMTP_DOMAIN_MAX + 8);
	pa = calloc(1, sizeof(*pa));
	if (pa == NULL) {
		*error_r = "out of memory";
		goto out;
	}
	if (buf_append(&b, "<", 1) < 0 || buf_append(&b, text, len) < 0 ||
	    (!at && buf_printf(&b, "@%s", sm->cfg->hostname) < 0) || buf_append(&b, ">", 1) < 0)
		goto out;
	if (smtp_path_parse(b.data, b.len, allow_null, pa, error_r) < 0) {
		*error_r = "bad address syntax";
		goto out;
	}
	if (pa->nparams != 0 || pa->addr.domain[0] == '\0') {
		*error_r = "bad address syntax";
		goto out;
	}
	if (smtp_address_format(&pa->addr, out, size) < 0) {
		*error_r = "address too long";
		goto out;
	}
	ret = 0;
out:
	free(pa);
	buf_free(&b);
	return ret;
}

/* Adds one envelope recipient; one copy per local mailbox, one per remote
 * address (aliases may name the same user twice). 0 or -1 (out of memory). */
static int sm_rcpt_add(struct sendmail *sm, const char *address, const char *mailbox)
{
	for (size_t i = 0; i < sm->nrcpts; i++) {
		const struct sm_rcpt *r = &sm->rcpts[i];
		if (mailbox != NULL && r->mailbox != NULL && strcmp(r->mailbox, mailbox) == 0)
			return 0;
		if (mailbox == NULL && r->mailbox == NULL && strcmp(r->address, address) == 0)
			return 0;
	}
	if (sm->nrcpts == sm->rcpts_alloc) {
		size_t n = sm->rcpts_alloc == 0 ? 8 : sm->rcpts_alloc * 2;
		struct sm_rcpt *v = realloc(sm->rcpts, n * sizeof(*v));
		if (v == NULL)
			return -1;
		sm->rcpts = v;
		sm->rcpts_alloc = n;
	}
	struct sm_rcpt *r = &sm->rcpts[sm->nrcpts];
	r->address = strdup(address);
	r->mailbox = mailbox != NULL ? strdup(mailbox) : NULL;
	if (r->address == NULL || (mailbox != NULL && r->mailbox == NULL)) {
		free(r->address);
		free(r->mailbox);
		return -1;
	}
	if (sm_has_8bit(address) || (mailbox != NULL && sm_has_8bit(mailbox)))
		sm->smtputf8 = true;
	sm->nrcpts++;
	return 0;
}

/* One recipient address as given on the command line or in a header:
 * parsed and qualified; the queue resolves it (aliases, local users) like
 * smtpd's RCPT TO. Exit status. */
static int sm_recipient(struct sendmail *sm, const char *text)
{
	char addr[SM_ADDRESS_BUF];
	const char *error;

	if (sm_address_parse(sm, text, false, addr, sizeof(addr), &error) < 0)
		return sm_fail(EX_DATAERR, "<%s>: %s", text, error);
	if (sm->given++ == 0)
		memcpy(sm->first_given, addr, sizeof(addr));
	if (sm_rcpt_add(sm, addr, NULL) < 0)
		return sm_fail(EX_SOFTWARE, "out of memory");
	return 0;
}

/* The end of one mailbox of an address list (',' or ';' or the end). */
static int sm_alist_finish(struct sendmail *sm, struct buf *plain, struct buf *angle,
			   bool *had_angle)
{
	int status = 0;

	if (*had_angle) {
		/* RFC 5322 3.4: nothing but comments after the angle-addr. */
		if (plain->len > 0)
			status = sm_fail(EX_DATAERR, "malformed address near \"%s\"", plain->data);
		else if (angle->len > 0)
			status = sm_recipient(sm, angle->data);
	} else if (plain->len > 0) {
		status = sm_recipient(sm, plain->data);
	}
	buf_reset(plain);
	buf_reset(angle);
	*had_angle = false;
	return status;
}

/*
 * RFC 5322 3.4 address-list (with its obsolete forms, 4.4): mailboxes
 * "addr", "Name <addr>", "<addr>" separated by commas, groups
 * "name: mailbox, ...;" (possibly empty), comments, quoted strings, domain
 * literals and folding white space. Each addr-spec found goes to
 * sm_recipient(). `where` names the source for errors. Exit status.
 */
static int sm_address_list(struct sendmail *sm, const char *s, size_t len, const char *where)
{
	struct buf plain, angle;
	bool in_angle = false, had_angle = false, in_group = false;
	int status = 0;
	const char *error = NULL;

	buf_init(&plain, SM_ADDRESS_TEXT_MAX);
	buf_init(&angle, SM_ADDRESS_TEXT_MAX);
	for (size_t i = 0; i < len && status == 0 && error == NULL; i++) {
		unsigned char c = (unsigned char)s[i];
		struct buf *cur = in_angle ? &angle : &plain;
		int ret = 0;
		switch (c) {
		case ' ':
		case '\t':
		case '\r':
		case '\n':
			break;
		case '(': {
			unsigned depth = 1;
			for (i++; i < len && depth > 0; i++) {
				if (s[i] == '\\')
					i++;
				else if (s[i] == '(')
					depth++;
				else if (s[i] == ')')
					depth--;
			}
			if (depth > 0)
				error = "unterminated comment";
			i--;
			break;
		}
		case '"':
			ret = buf_append(cur, "\"", 1);
			for (i++; i < len && s[i] != '"' && ret == 0; i++) {
				if (s[i] == '\\' && i + 1 < len) {
					ret = buf_append(cur, s + i, 2);
					i++;
				} else if (s[i] != '\r' && s[i] != '\n') {
					ret = buf_append(cur, s + i, 1);
				}
			}
			if (i >= len)
				error = "unterminated quoted string";
			else if (ret == 0)
				ret = buf_append(cur, "\"", 1);
			break;
		case '[':
			for (; i < len && s[i] != ']' && ret == 0; i++) {
				if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
					ret = buf_append(cur, s + i, 1);
			}
			if (i >= len)
				error = "unterminated domain literal";
			else if (ret == 0)
				ret = buf_append(cur, "]", 1);
			break;
		case '<':
			if (in_angle || had_angle) {
				error = "unexpected '<'";
				break;
			}
			buf_reset(&plain);      /* the display name */
			in_angle = had_angle = true;
			break;
		case '>':
			if (!in_angle)
				error = "unexpected '>'";
			in_angle = false;
			break;
		case ':':
			if (in_angle) {
				ret = buf_append(cur, ":", 1);   /* source route */
			} else if (in_group) {
				error = "nested group";
			} else {
				buf_reset(&plain);              /* the group's name */
				in_group = true;
			}
			break;
		case ';':
			if (in_angle) {
				error = "unexpected ';'";
				break;
			}
			status = sm_alist_finish(sm, &plain, &angle, &had_angle);
			in_group = false;
			break;
		case ',':
			if (in_angle)
				ret = buf_append(cur, ",", 1);   /* source route */
			else
				status = sm_alist_finish(sm, &plain, &angle, &had_angle);
			break;
		default:
			if (c < 0x20 || c == 0x7f)
				error = "control character";
			else
				ret = buf_append(cur, s + i, 1);
			break;
		}
		if (ret < 0 && error == NULL)
			error = "address too long";
	}
	if (status == 0 && error == NULL && in_angle)
		error = "missing '>'";
	if (status == 0 && error == NULL)
		status = sm_alist_finish(sm, &plain, &angle, &had_angle);
	if (status == 0 && error != NULL)
		status = sm_fail(EX_DATAERR, "%s: malformed address list: %s", where, error);
	buf_free(&plain);
	buf_free(&angle);
	return status;
}

/* ---- the invoking user ---- */

static int sm_identity(struct sendmail *sm)
{
	struct passwd *pw;
	struct smtp_address a;
	const char *error;

	sm->uid = getuid();
	pw = getpwuid(sm->uid);
	if (pw != NULL && pw->pw_name != NULL && pw->pw_name[0] != '\0') {
		sm->user = strdup(pw->pw_name);
		if (pw->pw_gecos != NULL && pw->pw_gecos[0] != '\0' &&
		    pw->pw_gecos[0] != ',') {
			sm->gecos_name = strndup(pw->pw_gecos, strcspn(pw->pw_gecos, ","));
			if (sm->gecos_name == NULL)
				return sm_fail(EX_SOFTWARE, "out of memory");
		}
	} else {
		char tmp[32];
		snprintf(tmp, sizeof(tmp), "uid%lu", (unsigned long)sm->uid);
		sm->user = strdup(tmp);
	}
	if (sm->user == NULL)
		return sm_fail(EX_SOFTWARE, "out of memory");

	/* user@hostname, the local part quoted if the login name needs it */
	memset(&a, 0, sizeof(a));
	if (strlen(sm->user) >= sizeof(a.localpart) ||
	    strlen(sm->cfg->hostname) >= sizeof(a.domain))
		return sm_fail(EX_DATAERR, "cannot make an address from user %s", sm->user);
	memcpy(a.localpart, sm->user, strlen(sm->user) + 1);
	memcpy(a.domain, sm->cfg->hostname, strlen(sm->cfg->hostname) + 1);
	char tmp[SM_ADDRESS_BUF];
	if (smtp_address_format(&a, tmp, sizeof(tmp)) < 0 ||
	    sm_address_parse(sm, tmp, false, sm->user_addr, sizeof(sm->user_addr), &error) < 0)
		return sm_fail(EX_DATAERR, "cannot make an address from user %s", sm->user);

	if (sm->sender_arg == NULL) {
		memcpy(sm->sender, sm->user_addr, sizeof(sm->sender));
	} else if (sm_address_parse(sm, sm->sender_arg, true, sm->sender, sizeof(sm->sender),
				    &error) < 0) {
		return sm_fail(EX_DATAERR, "-f <%s>: %s", sm->sender_arg, error);
	}
	if (sm_has_8bit(sm->sender))
		sm->smtputf8 = true;
	return 0;
}

/* ---- reading the message ---- */

struct sm_input {
	size_t line_start;       /* offset in msg of the current line */
	size_t line_len;
	bool cr;                 /* a CR was the last octet */
	bool done;               /* the "." line was seen */
	bool nul, long_line;
};

/* Appends to the message; EX_DATAERR when it would exceed the size limit. */
static int sm_msg_append(struct sendmail *sm, const char *data, size_t len)
{
	if (len > sm->msg.max - sm->msg.len)
		return sm_fail(EX_DATAERR, "message too big: the limit is %llu octets "
			       "(smtp.max_message_size)", (unsigned long long)sm->msg.max);
	if (buf_append(&sm->msg, data, len) < 0)
		return sm_fail(EX_SOFTWARE, "out of memory");
	return 0;
}

static int sm_input_eol(struct sendmail *sm, struct sm_input *in)
{
	if (!sm->ignore_dots && sm->msg.len - in->line_start == 1 &&
	    sm->msg.data[in->line_start] == '.') {
		sm->msg.len = in->line_start;
		sm->msg.data[sm->msg.len] = '\0';
		in->done = true;
		return 0;
	}
	int status = sm_msg_append(sm, "\n", 1);
	in->line_start = sm->msg.len;
	in->line_len = 0;
	return status;
}

/* Feeds one chunk of stdin: CRLF and bare CR become LF. Exit status. */
static int sm_input_feed(struct sendmail *sm, struct sm_input *in, const char *p, size_t len)
{
	size_t max_line = sm->cfg->max_line_length;
	size_t i = 0;
	int status = 0;

	while (i < len && status == 0 && !in->done) {
		unsigned char c = (unsigned char)p[i];
		if (in->cr) {
			in->cr = false;
			status = sm_input_eol(sm, in);
			if (c == '\n')
				i++;
			continue;
		}
		if (c == '\r') {
			in->cr = true;
			i++;
			continue;
		}
		if (c == '\n') {
			status = sm_input_eol(sm, in);
			i++;
			continue;
		}
		/* a run of ordinary octets */
		size_t start = i;
		for (; i < len && p[i] != '\r' && p[i] != '\n'; i++) {
			if (p[i] == '\0')
				in->nul = true;
			else if ((unsigned char)p[i] >= 0x80)
				sm->body_8bit = true;
		}
		in->line_len += i - start;
		if (max_line != 0 && in->line_len > max_line)
			in->long_line = true;
		status = sm_msg_append(sm, p + start, i - start);
	}
	return status;
}

static int sm_read_input(struct sendmail *sm, int fd)
{
	struct sm_input in = { 0 };
	char chunk[64 * 1024];
	int status = 0;

	buf_init(&sm->msg, (size_t)sm->cfg->max_message_size);
	if (sm_msg_append(sm, "", 0) != 0)   /* msg.data is never NULL */
		return EX_SOFTWARE;
	while (status == 0 && !in.done) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return sm_fail(EX_IOERR, "reading the message: %s", strerror(errno));
		if (n == 0)
			break;
		status = sm_input_feed(sm, &in, chunk, (size_t)n);
	}
	if (status != 0)
		return status;
	/* the last line, unterminated or ending in CR */
	if (!in.done && (in.cr || sm->msg.len > in.line_start))
		status = sm_input_eol(sm, &in);
	if (status != 0)
		return status;
	if (in.nul)
		return sm_fail(EX_DATAERR, "NUL character in message not allowed");
	if (in.long_line)
		return sm_fail(EX_DATAERR, "message line longer than %u octets "
			       "(smtp.max_line_length)", sm->cfg->max_line_length);
	return 0;
}

/* ---- the header ---- */

static bool sm_field_is(const struct sendmail *sm, const struct sm_field *f, const char *name)
{
	return f->name_len == strlen(name) &&
	       strncasecmp(sm->msg.data + f->start, name, f->name_len) == 0;
}

/* Length of "Name:" at p (name_len_r = the name's length), or 0 when the
 * line is not a header field. RFC 5322 3.6.8 ftext, 4.5.1 WSP before ':'. */
static size_t sm_field_name(const char *p, size_t len, size_t *name_len_r)
{
	size_t i = 0;
	while (i < len && (unsigned char)p[i] >= 33 && (unsigned char)p[i] <= 126 && p[i] != ':')
		i++;
	*name_len_r = i;
	if (i == 0)
		return 0;
	while (i < len && (p[i] == ' ' || p[i] == '\t'))
		i++;
	return i < len && p[i] == ':' ? i + 1 : 0;
}

/* Splits msg into header fields and body. Exit status. */
static int sm_parse_header(struct sendmail *sm)
{
	const char *m = sm->msg.data;
	size_t n = sm->msg.len, pos = 0;

	/* RFC 4155 mbox "From " line (not "From :", an obsolete From field):
	 * sendmail drops it. */
	size_t name_len0;
	if (n >= 5 && memcmp(m, "From ", 5) == 0 && sm_field_name(m, n, &name_len0) == 0) {
		const char *lf = memchr(m, '\n', n);
		pos = lf != NULL ? (size_t)(lf - m) + 1 : n;
	}
	while (pos < n) {
		size_t name_len;
		if (m[pos] == '\n') {
			sm->had_separator = true;
			sm->body_start = pos + 1;
			return 0;
		}
		if (sm_field_name(m + pos, n - pos, &name_len) == 0)
			break;  /* not a header field: the body starts here */
		size_t end = pos;
		do {
			const char *lf = memchr(m + end, '\n', n - end);
			end = lf != NULL ? (size_t)(lf - m) + 1 : n;
		} while (end < n && (m[end] == ' ' || m[end] == '\t'));
		if (sm->nfields == sm->fields_alloc) {
			size_t k = sm->fields_alloc == 0 ? 32 : sm->fields_alloc * 2;
			struct sm_field *v = realloc(sm->fields, k * sizeof(*v));
			if (v == NULL)
				return sm_fail(EX_SOFTWARE, "out of memory");
			sm->fields = v;
			sm->fields_alloc = k;
		}
		struct sm_field *f = &sm->fields[sm->nfields++];
		f->start = pos;
		f->len = end - pos;
		f->name_len = name_len;
		f->drop = sm_field_is(sm, f, "Bcc");
		sm->has_date |= sm_field_is(sm, f, "Date");
		sm->has_msgid |= sm_field_is(sm, f, "Message-ID");
		sm->has_from |= sm_field_is(sm, f, "From");
		pos = end;
	}
	sm->body_start = pos;
	return 0;
}

/* ---- recipients ---- */

static int sm_collect_recipients(struct sendmail *sm)
{
	int status = 0;

	for (size_t i = 0; i < sm->nrcpt_args && status == 0; i++)
		status = sm_address_list(sm, sm->rcpt_args[i], strlen(sm->rcpt_args[i]),
					 "command line");
	for (size_t i = 0; sm->extract && i < sm->nfields && status == 0; i++) {
		const struct sm_field *f = &sm->fields[i];
		if (!sm_field_is(sm, f, "To") && !sm_field_is(sm, f, "Cc") &&
		    !sm_field_is(sm, f, "Bcc"))
			continue;
		const char *v = sm->msg.data + f->start;
		const char *colon = memchr(v, ':', f->len);
		size_t off = (size_t)(colon - v) + 1;
		char where[16];
		snprintf(where, sizeof(where), "%.*s:", (int)f->name_len, v);
		status = sm_address_list(sm, colon + 1, f->len - off, where);
	}
	if (status == 0 && sm->nrcpts == 0)
		status = sm_fail(EX_DATAERR, "no recipients%s",
				 sm->extract ? "" : " (give addresses, or -t to read them from "
				 "To:/Cc:/Bcc:)");
	return status;
}

/* ---- header fields we add ---- */

static void sm_rfc5322_date(char *out, size_t size)
{
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	/* %a and %b are English: nothing here calls setlocale(). */
	strftime(out, size, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

/* A display name for From:: control characters become spaces; ASCII as an
 * RFC 5322 quoted-string, anything else as RFC 2047 "B" encoded words. */
static int sm_display_name(struct buf *out, const char *raw)
{
	char name[SM_FULLNAME_MAX + 1];
	size_t len = 0;
	bool ascii = true;

	while (*raw == ' ' || *raw == '\t')
		raw++;
	for (; raw[len] != '\0' && len < SM_FULLNAME_MAX; len++) {
		unsigned char c = (unsigned char)raw[len];
		name[len] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
		if (c >= 0x80)
			ascii = false;
	}
	/* do not cut a UTF-8 sequence in two: raw[len] is the first octet left out */
	while (len > 0 && ((unsigned char)raw[len] & 0xc0) == 0x80)
		len--;
	while (len > 0 && name[len - 1] == ' ')
		len--;
	name[len] = '\0';
	if (len == 0)
		return 0;
	if (ascii) {
		int ret = buf_append(out, "\"", 1);
		for (size_t i = 0; i < len && ret == 0; i++) {
			if (name[i] == '"' || name[i] == '\\')
				ret = buf_append(out, "\\", 1);
			if (ret == 0)
				ret = buf_append(out, name + i, 1);
		}
		return ret == 0 ? buf_append(out, "\" ", 2) : -1;
	}
	for (size_t i = 0; i < len;) {
		size_t n = len - i < SM_EW_CHUNK ? len - i : SM_EW_CHUNK;
		while (n > 1 && i + n < len && ((unsigned char)name[i + n] & 0xc0) == 0x80)
			n--;
		char b64[sodium_base64_ENCODED_LEN(SM_EW_CHUNK, sodium_base64_VARIANT_ORIGINAL)];
		sodium_bin2base64(b64, sizeof(b64), (const unsigned char *)name + i, n,
				  sodium_base64_VARIANT_ORIGINAL);
		if (buf_printf(out, "%s=?UTF-8?B?%s?=", i == 0 ? "" : "\n ", b64) < 0)
			return -1;
		i += n;
	}
	return buf_append(out, " ", 1);
}

/* The fields that go before the message's own (trace) and after them
 * (missing Date, Message-ID, From). */
static int sm_added_fields(struct sendmail *sm, struct buf *top, struct buf *bottom)
{
	char date[64];
	int ret = 0;

	sm_rfc5322_date(date, sizeof(date));
	/* RFC 5321 4.4; no "from" clause: the message did not come from the
	 * network (as Postfix writes it for local submission). */
	ret |= buf_printf(top, "Received: by %s (Postern, from userid %lu)\n\tid %s",
			  sm->cfg->hostname, (unsigned long)sm->uid, sm->queue_id);
	if (sm->given == 1)
		ret |= buf_printf(top, "\n\tfor <%s>", sm->first_given);
	ret |= buf_printf(top, ";\n\t%s\n", date);

	if (!sm->has_date)
		ret |= buf_printf(bottom, "Date: %s\n", date);
	if (!sm->has_msgid) {
		char stamp[32];
		time_t now = time(NULL);
		struct tm tm;
		gmtime_r(&now, &tm);
		strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm);
		ret |= buf_printf(bottom, "Message-ID: <%s.%s@%s>\n", stamp, sm->queue_id,
				  sm->cfg->hostname);
	}
	if (!sm->has_from) {
		const char *name = sm->fullname_arg != NULL ? sm->fullname_arg : sm->gecos_name;
		const char *addr = sm->sender[0] != '\0' ? sm->sender : sm->user_addr;
		ret |= buf_append(bottom, "From: ", 6);
		if (name != NULL && ret == 0) {
			size_t before = bottom->len;
			ret |= sm_display_name(bottom, name);
			ret |= buf_printf(bottom, bottom->len > before ? "<%s>\n" : "%s\n", addr);
		} else {
			ret |= buf_printf(bottom, "%s\n", addr);
		}
	}
	return ret == 0 ? 0 : -1;
}

/* ---- the queue ---- */

static int sm_connect(struct sendmail *sm)
{
	/* sun_path holds 108 octets: connect relative to the data directory.
	 * Nothing after this uses a relative path. */
	if (chdir(sm->cfg->data_dir) < 0)
		return sm_fail(EX_TEMPFAIL, "%s: %s", sm->cfg->data_dir, strerror(errno));
	sm->fd = ipc_connect_unix(SM_QUEUE_SOCKET, SM_CONNECT_TIMEOUT);
	if (sm->fd < 0)
		return sm_fail(EX_TEMPFAIL, "queue not available (%s/%s: %s); is postern running?",
			       sm->cfg->data_dir, SM_QUEUE_SOCKET, strerror(errno));
	int flags = fcntl(sm->fd, F_GETFL);
	if (flags < 0 || fcntl(sm->fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
		return sm_fail(EX_OSERR, "fcntl: %s", strerror(errno));
	return 0;
}

/* Waits for a reply of type `want`: u32 status, str text. Exit status;
 * on success text_r is a copy of the text (caller frees). */
static int sm_reply(struct sendmail *sm, uint32_t want, int timeout_ms, const char *what,
		    char **text_r)
{
	struct buf payload;
	uint32_t type;
	uint64_t id;
	int status = 0;

	*text_r = NULL;
	buf_init(&payload, IPC_FRAME_MAX);
	if (ipc_sync_recv(sm->fd, &type, &id, &payload, timeout_ms) < 0) {
		status = sm_fail(EX_TEMPFAIL, "queue: no answer to %s: %s", what,
				 errno == ECONNRESET ? "connection closed" : strerror(errno));
		goto out;
	}
	struct ipc_reader r = { (const unsigned char *)payload.data, payload.len, false };
	uint32_t st = ipc_get_u32(&r);
	const char *text = ipc_get_str(&r);
	if (type != want || id != 1 || r.error || text == NULL) {
		status = sm_fail(EX_TEMPFAIL, "queue: malformed answer to %s", what);
	} else if (st == IPC_Q_REJECT) {
		status = sm_fail(EX_DATAERR, "message refused: %s", text);
	} else if (st != IPC_Q_OK) {
		status = sm_fail(EX_TEMPFAIL, "queue refused the message (%s): %s", what, text);
	} else if ((*text_r = strdup(text)) == NULL) {
		status = sm_fail(EX_SOFTWARE, "out of memory");
	}
out:
	buf_free(&payload);
	return status;
}

static int sm_begin(struct sendmail *sm)
{
	struct ipc_writer w;
	struct buf auth;
	char *id = NULL;
	int status;

	/* "local:NAME" tells logs and rate limits that a local user submitted */
	buf_init(&auth, SPOOL_STRING_MAX);
	if (buf_printf(&auth, "local:%s", sm->user) < 0) {
		buf_free(&auth);
		return sm_fail(EX_SOFTWARE, "user name too long");
	}
	ipc_writer_init(&w);
	ipc_put_str(&w, sm->sender);
	ipc_put_str(&w, "localhost");
	ipc_put_str(&w, NULL);          /* no client ip: not from the network */
	ipc_put_str(&w, auth.data);
	ipc_put_u32(&w, (sm->smtputf8 ? IPC_ENV_SMTPUTF8 : 0) |
		    (sm->body_8bit ? IPC_ENV_8BITMIME : 0));
	ipc_put_str(&w, NULL);          /* envid */
	ipc_put_str(&w, NULL);          /* ret */
	ipc_put_u32(&w, (uint32_t)sm->nrcpts);
	for (size_t i = 0; i < sm->nrcpts; i++) {
		ipc_put_str(&w, sm->rcpts[i].address);
		ipc_put_str(&w, sm->rcpts[i].mailbox);
		ipc_put_str(&w, NULL);  /* orcpt */
		ipc_put_str(&w, NULL);  /* notify */
	}
	buf_free(&auth);
	if (ipc_sync_send(sm->fd, IPC_Q_BEGIN, 1, &w) < 0) {
		int saved = errno;
		ipc_writer_free(&w);
		if (saved == EMSGSIZE)
			return sm_fail(EX_DATAERR, "too many recipients for one message (%zu)",
				       sm->nrcpts);
		return sm_fail(EX_TEMPFAIL, "queue: %s", strerror(saved));
	}
	ipc_writer_free(&w);
	status = sm_reply(sm, IPC_Q_BEGIN_REPLY, SM_BEGIN_TIMEOUT, "BEGIN", &id);
	if (status != 0)
		return status;
	if (!queue_id_valid(id)) {
		free(id);
		return sm_fail(EX_TEMPFAIL, "queue: malformed queue id");
	}
	memcpy(sm->queue_id, id, sizeof(sm->queue_id));
	free(id);
	return 0;
}

/* IPC_Q_DATA frames of at most IPC_DATA_CHUNK octets. */
struct sm_data {
	struct ipc_writer w;
	int error;               /* errno of a failed send, sticky */
};

static void sm_data_flush(struct sendmail *sm, struct sm_data *d)
{
	if (d->error == 0 && d->w.b.len > 0 && ipc_sync_send(sm->fd, IPC_Q_DATA, 1, &d->w) < 0)
		d->error = errno;
	buf_reset(&d->w.b);
}

static void sm_data_put(struct sendmail *sm, struct sm_data *d, const char *p, size_t len)
{
	while (len > 0 && d->error == 0) {
		size_t room = IPC_DATA_CHUNK - d->w.b.len;
		size_t n = len < room ? len : room;
		if (buf_append(&d->w.b, p, n) < 0) {
			d->error = ENOMEM;
			return;
		}
		p += n;
		len -= n;
		if (d->w.b.len == IPC_DATA_CHUNK)
			sm_data_flush(sm, d);
	}
}

static void sm_abort(struct sendmail *sm)
{
	struct ipc_writer w;
	ipc_writer_init(&w);
	(void)ipc_sync_send(sm->fd, IPC_Q_ABORT, 1, &w);
	ipc_writer_free(&w);
}

/* Sends the message (our fields, the kept fields, the body) and commits it. */
static int sm_send(struct sendmail *sm)
{
	struct buf top, bottom;
	struct sm_data d = { .error = 0 };
	const char *m = sm->msg.data;
	size_t body_len = sm->msg.len - sm->body_start;
	bool separator = sm->had_separator || body_len > 0;
	char *id = NULL;
	int status = 0;

	buf_init(&top, 64 * 1024);
	buf_init(&bottom, 64 * 1024);
	ipc_writer_init(&d.w);
	if (sm_added_fields(sm, &top, &bottom) < 0) {
		sm_abort(sm);
		status = sm_fail(EX_SOFTWARE, "out of memory");
		goto out;
	}
	uint64_t total = top.len + bottom.len + (separator ? 1 : 0) + body_len;
	for (size_t i = 0; i < sm->nfields; i++)
		total += sm->fields[i].drop ? 0 : sm->fields[i].len;
	if (total > sm->cfg->max_message_size) {
		sm_abort(sm);
		status = sm_fail(EX_DATAERR, "message too big: the limit is %llu octets "
				 "(smtp.max_message_size)",
				 (unsigned long long)sm->cfg->max_message_size);
		goto out;
	}
	sm_data_put(sm, &d, top.data, top.len);
	for (size_t i = 0; i < sm->nfields; i++) {
		if (!sm->fields[i].drop)
			sm_data_put(sm, &d, m + sm->fields[i].start, sm->fields[i].len);
	}
	sm_data_put(sm, &d, bottom.data, bottom.len);
	if (separator)
		sm_data_put(sm, &d, "\n", 1);
	sm_data_put(sm, &d, m + sm->body_start, body_len);
	sm_data_flush(sm, &d);
	if (d.error != 0) {
		status = sm_fail(EX_TEMPFAIL, "queue: %s", strerror(d.error));
		goto out;
	}
	buf_reset(&d.w.b);
	if (ipc_sync_send(sm->fd, IPC_Q_END, 1, &d.w) < 0) {
		status = sm_fail(EX_TEMPFAIL, "queue: %s", strerror(errno));
		goto out;
	}
	status = sm_reply(sm, IPC_Q_END_REPLY, SM_END_TIMEOUT, "END", &id);
	free(id);
out:
	ipc_writer_free(&d.w);
	buf_free(&top);
	buf_free(&bottom);
	return status;
}

/* ---- main ---- */

static void sm_free(struct sendmail *sm)
{
	for (size_t i = 0; i < sm->nrcpts; i++) {
		free(sm->rcpts[i].address);
		free(sm->rcpts[i].mailbox);
	}
	free(sm->rcpts);
	free(sm->fields);
	buf_free(&sm->msg);
	free(sm->rcpt_args);
	free(sm->user);
	free(sm->gecos_name);
	if (sm->fd >= 0)
		close(sm->fd);
}

static int sm_run(struct sendmail *sm)
{
	int status;

	if ((status = sm_identity(sm)) != 0)
		return status;
	if ((status = sm_read_input(sm, STDIN_FILENO)) != 0)
		return status;
	if ((status = sm_parse_header(sm)) != 0)
		return status;
	if ((status = sm_collect_recipients(sm)) != 0)
		return status;
	if ((status = sm_connect(sm)) != 0)
		return status;
	if ((status = sm_begin(sm)) != 0)
		return status;
	if ((status = sm_send(sm)) != 0)
		return status;
	if (sm->verbose)
		printf("postern: queued as %s\n", sm->queue_id);
	return EX_OK;
}

int cli_sendmail(const char *config_path, int argc, char **argv)
{
	struct config *cfg = NULL;
	char *errors = NULL;
	struct sendmail sm = { .fd = -1 };
	int status;

	/* A queue that goes away mid-write is EPIPE and exit 75, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	/* The arguments first: a usage error is one even without a config. */
	status = sm_parse_args(&sm, argc, argv);
	if (status == 0 && config_load(config_path, &cfg, &errors) < 0) {
		fputs(errors, stderr);
		free(errors);
		status = sm_fail(EX_CONFIG, "cannot load %s", config_path);
	}
	if (status == 0) {
		sm.cfg = cfg;
		status = sm_run(&sm);
	}
	sm_free(&sm);
	config_free(&cfg);
	return status;
}
