/*
 * imap-parser.c — resumable parser for IMAP command lines (RFC 9051 and
 * RFC 3501 section 9 grammar): tag, command name (with "UID" folded in),
 * atoms (with "[...]" sections taken whole), quoted strings, literals
 * ({N}, {N+} of RFC 7888, ~{N} literal8 of RFC 3516), lists and NIL.
 *
 * Runs inside the imapd worker processes. It never touches a socket: the
 * session feeds it whatever bytes arrived, split anywhere, and acts on the
 * result. Everything it keeps lives in one arena and one node array per
 * parser, both bounded by struct imap_parser_limits and reused from one
 * command to the next (no allocation per command once warmed up).
 *
 * Error recovery: after a syntax error the rest of the broken line is
 * skipped by a small "skipper" that still recognises a non-synchronising
 * literal ("{N+}" / "~{N+}") at the end of a skipped line and skips its N
 * octets too, so a rejected APPEND's message body is never parsed as
 * commands (the usual literal-smuggling hole).
 */
#include "lib-imap/imap-parser.h"

#include <stdlib.h>
#include <string.h>

#define DEFAULT_LINE_MAX    (64u * 1024)
#define DEFAULT_LITERAL_MAX (1024u * 1024)
#define DEFAULT_DEPTH_MAX   16u
#define DEFAULT_ARGS_MAX    10000u
/* All literals of one command kept in memory together: this many times
 * literal_max (each one is also <= literal_max). */
#define LITERAL_TOTAL_FACTOR 4u
/* A skipped line longer than this many times line_max cannot be resynced. */
#define SKIP_FACTOR 4u
/* Nesting of '[' inside one atom ("BODY[...[...]]"). */
#define BRACKET_DEPTH_MAX 8u

enum parser_state {
	PS_START,       /* before the tag; empty lines are ignored */
	PS_START_CR,    /* CR of an empty line */
	PS_TAG,
	PS_NAME_START,  /* after "tag SP" or "UID SP" */
	PS_NAME,
	PS_SEP,         /* after an argument: SP, ')' or the line end */
	PS_ARG,         /* after SP or '(': an argument, ')' or the line end */
	PS_ATOM,
	PS_TILDE,       /* '~' read: literal8 if '{' follows, else an atom */
	PS_BRACKET,     /* inside "[...]" of an atom */
	PS_QUOTED,
	PS_QUOTED_ESC,
	PS_LIT_NUM,     /* after '{' */
	PS_LIT_PLUS,    /* after '+' */
	PS_LIT_EOL,     /* after '}' */
	PS_LIT_CR,
	PS_LIT_WAIT,    /* LITERAL returned: waiting for accept/reject */
	PS_LIT_DATA,
	PS_EOL_CR,      /* CR at the end of the command */
	PS_FINISHED,    /* DONE / ERROR returned (or literal rejected) */
};

/* What the skipper has seen at the end of the skipped line so far. */
enum skip_tail {
	TAIL_NONE,
	TAIL_BRACE,
	TAIL_DIGITS,
	TAIL_PLUS,
	TAIL_CLOSE,
	TAIL_CLOSE_CR,
};

struct pnode {
	size_t off, len;
	int parent;             /* node index, -1 at the top level */
	unsigned nchildren;
	unsigned first, fill;   /* used while building the imap_arg arrays */
	enum imap_arg_type type;
	bool literal8;
	bool sunk;
};

struct imap_parser {
	struct imap_parser_limits lim;
	enum parser_state state;

	char *arena;
	size_t arena_len, arena_cap, arena_max;

	struct pnode *nodes;
	unsigned nnodes, nodes_cap, nroot;
	int *stack;             /* open lists */
	unsigned depth;
	struct imap_arg *args;
	unsigned args_cap;

	size_t tag_off, name_off, tok_off;
	bool have_tag, have_name, name_uid;
	int cur_node;           /* atom/string/literal being read */
	unsigned bracket_depth;
	bool br_quote, br_esc;
	uint64_t line_count;    /* non-literal octets of this command */

	/* literal */
	uint64_t lit_size, lit_remaining;
	bool lit_sync, lit8;
	unsigned lit_digits, lit_index;
	size_t lit_total, lit_total_max;
	imap_literal_sink_cb *sink;
	void *sink_ctx;

	const char *error;
	const char *pending_error;
	bool fatal;

	/* skipping the rest of a broken line (survives reset) */
	bool skip_line;
	uint64_t skip_lit, skip_count;
	enum skip_tail tail;
	uint64_t tail_num;
	bool tail_plus;
};

enum step {
	ST_OK,          /* byte consumed */
	ST_AGAIN,       /* byte not consumed, state changed: look at it again */
	ST_DONE,        /* byte consumed, command complete */
	ST_LITERAL,     /* byte consumed, literal announced */
	ST_ERROR,       /* byte not consumed; the skipper starts at it */
	ST_ERROR_EOL,   /* byte (the LF) consumed; skip state already decided */
};

/* ATOM-CHAR of RFC 9051: CHAR except atom-specials. */
static bool is_atom_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return false;
	switch (c) {
	case '(': case ')': case '{': case '%': case '*': case '"': case '\\': case ']':
		return false;
	default:
		return true;
	}
}

/* What may continue an atom argument here: ATOM-CHAR plus list-wildcards
 * (LIST patterns) and ']' (ASTRING-CHAR). '[' opens a section. */
static bool is_arg_atom_char(unsigned char c)
{
	return is_atom_char(c) || c == '%' || c == '*' || c == ']';
}

/* tag = 1*<any ASTRING-CHAR except "+"> */
static bool is_tag_char(unsigned char c)
{
	return (is_atom_char(c) || c == ']') && c != '+';
}

static size_t sat_mul(size_t a, size_t b)
{
	return (b != 0 && a > SIZE_MAX / b) ? SIZE_MAX : a * b;
}

static size_t sat_add(size_t a, size_t b)
{
	return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

struct imap_parser *imap_parser_new(const struct imap_parser_limits *lim)
{
	struct imap_parser *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	if (lim != NULL)
		p->lim = *lim;
	if (p->lim.line_max == 0)
		p->lim.line_max = DEFAULT_LINE_MAX;
	if (p->lim.literal_max == 0)
		p->lim.literal_max = DEFAULT_LITERAL_MAX;
	if (p->lim.depth_max == 0)
		p->lim.depth_max = DEFAULT_DEPTH_MAX;
	if (p->lim.args_max == 0)
		p->lim.args_max = DEFAULT_ARGS_MAX;
	if (p->lim.args_max > (unsigned)INT32_MAX / 2)
		p->lim.args_max = (unsigned)INT32_MAX / 2;
	if (p->lim.depth_max > p->lim.args_max)
		p->lim.depth_max = p->lim.args_max;
	p->lit_total_max = sat_mul(p->lim.literal_max, LITERAL_TOTAL_FACTOR);
	/* non-literal text (<= line_max) + literals + one NUL per string */
	p->arena_max = sat_add(sat_add(p->lim.line_max, p->lit_total_max),
			       (size_t)p->lim.args_max + 8);
	p->stack = malloc(sizeof(*p->stack) * (p->lim.depth_max + 1));
	if (p->stack == NULL) {
		free(p);
		return NULL;
	}
	p->state = PS_START;
	p->cur_node = -1;
	return p;
}

void imap_parser_free(struct imap_parser **pp)
{
	struct imap_parser *p = *pp;
	if (p == NULL)
		return;
	free(p->arena);
	free(p->nodes);
	free(p->stack);
	free(p->args);
	free(p);
	*pp = NULL;
}

/* ------------------------------------------------------------ storage */

static int arena_reserve(struct imap_parser *p, size_t extra)
{
	if (extra > p->arena_max || p->arena_len > p->arena_max - extra)
		return -1;
	size_t need = p->arena_len + extra;
	if (need <= p->arena_cap)
		return 0;
	size_t cap = p->arena_cap == 0 ? 256 : p->arena_cap;
	while (cap < need)
		cap = sat_mul(cap, 2);
	if (cap > p->arena_max)
		cap = p->arena_max;
	char *a = realloc(p->arena, cap);
	if (a == NULL)
		return -1;
	p->arena = a;
	p->arena_cap = cap;
	return 0;
}

static int arena_putc(struct imap_parser *p, char c)
{
	if (p->arena_len >= p->arena_cap && arena_reserve(p, 1) < 0)
		return -1;
	p->arena[p->arena_len++] = c;
	return 0;
}

static void reset_skip_tail(struct imap_parser *p)
{
	p->tail = TAIL_NONE;
	p->tail_num = 0;
	p->tail_plus = false;
}

static enum step perr(struct imap_parser *p, const char *msg)
{
	p->error = msg;
	p->skip_line = true;
	p->skip_count = p->line_count;
	reset_skip_tail(p);
	/* an error (such as "Line too long") inside a literal announcement:
	 * the skipper must still see the "{N+}" it is in the middle of */
	switch (p->state) {
	case PS_LIT_NUM:
		p->tail = p->lit_digits > 0 ? TAIL_DIGITS : TAIL_BRACE;
		p->tail_num = p->lit_size;
		break;
	case PS_LIT_PLUS:
		p->tail = TAIL_PLUS;
		p->tail_num = p->lit_size;
		p->tail_plus = true;
		break;
	case PS_LIT_EOL:
	case PS_LIT_CR:
		p->tail = p->state == PS_LIT_EOL ? TAIL_CLOSE : TAIL_CLOSE_CR;
		p->tail_num = p->lit_size;
		p->tail_plus = !p->lit_sync;
		break;
	default:
		break;
	}
	return ST_ERROR;
}

static enum step put(struct imap_parser *p, char c)
{
	if (arena_putc(p, c) < 0)
		return perr(p, "Out of memory");
	return ST_OK;
}

/* Adds a node as a child of the innermost open list; -1 when full. */
static int node_add(struct imap_parser *p, enum imap_arg_type type)
{
	if (p->nnodes >= p->lim.args_max)
		return -1;
	if (p->nnodes >= p->nodes_cap) {
		unsigned cap = p->nodes_cap == 0 ? 16 : p->nodes_cap * 2;
		if (cap > p->lim.args_max)
			cap = p->lim.args_max;
		struct pnode *n = realloc(p->nodes, sizeof(*n) * cap);
		if (n == NULL)
			return -1;
		p->nodes = n;
		p->nodes_cap = cap;
	}
	int idx = (int)p->nnodes++;
	struct pnode *n = &p->nodes[idx];
	memset(n, 0, sizeof(*n));
	n->type = type;
	n->parent = p->depth > 0 ? p->stack[p->depth - 1] : -1;
	n->off = p->arena_len;
	if (n->parent < 0)
		p->nroot++;
	else
		p->nodes[n->parent].nchildren++;
	return idx;
}

static enum step token_start(struct imap_parser *p, enum imap_arg_type type)
{
	p->cur_node = node_add(p, type);
	if (p->cur_node < 0)
		return perr(p, "Too many arguments");
	return ST_OK;
}

/* NUL-terminates the current token and records its length. */
static enum step token_end(struct imap_parser *p)
{
	struct pnode *n = &p->nodes[p->cur_node];
	n->len = p->arena_len - n->off;
	if (arena_putc(p, '\0') < 0)
		return perr(p, "Out of memory");
	if (n->type == IMAP_ARG_ATOM && n->len == 3 &&
	    (p->arena[n->off] | 0x20) == 'n' && (p->arena[n->off + 1] | 0x20) == 'i' &&
	    (p->arena[n->off + 2] | 0x20) == 'l')
		n->type = IMAP_ARG_NIL;
	p->cur_node = -1;
	return ST_OK;
}

/* Lays the nodes (in preorder) out as contiguous imap_arg arrays. */
static int build_args(struct imap_parser *p)
{
	if (p->nnodes > p->args_cap) {
		struct imap_arg *a = realloc(p->args, sizeof(*a) * p->nnodes);
		if (a == NULL)
			return -1;
		p->args = a;
		p->args_cap = p->nnodes;
	}
	unsigned cursor = p->nroot, root_fill = 0;
	for (unsigned i = 0; i < p->nnodes; i++) {
		struct pnode *n = &p->nodes[i];
		unsigned slot;
		if (n->parent < 0) {
			slot = root_fill++;
		} else {
			struct pnode *par = &p->nodes[n->parent];
			slot = par->first + par->fill++;
		}
		struct imap_arg *a = &p->args[slot];
		memset(a, 0, sizeof(*a));
		a->type = n->type;
		a->literal8 = n->literal8;
		a->len = n->len;
		if (n->type == IMAP_ARG_LIST) {
			n->first = cursor;
			cursor += n->nchildren;
			a->str = "";
			a->list = p->args + n->first;   /* never NULL, even when empty */
			a->count = n->nchildren;
		} else if (n->sunk) {
			a->str = NULL;
		} else {
			a->str = p->arena + n->off;
		}
	}
	return 0;
}

/* ------------------------------------------------------------ reset */

void imap_parser_reset(struct imap_parser *p)
{
	switch (p->state) {
	case PS_START:
	case PS_FINISHED:
		break;
	case PS_LIT_WAIT:
		/* undecided literal: as if rejected */
		if (!p->lit_sync) {
			p->skip_lit = p->lit_size;
			p->skip_line = true;
			p->skip_count = p->line_count;
			reset_skip_tail(p);
		}
		break;
	case PS_LIT_DATA:
		p->skip_lit = p->lit_remaining;
		p->skip_line = true;
		p->skip_count = p->line_count;
		reset_skip_tail(p);
		break;
	default:
		/* abandoned in the middle of a line */
		if (!p->skip_line) {
			p->skip_line = true;
			p->skip_count = p->line_count;
			reset_skip_tail(p);
		}
		break;
	}
	p->state = PS_START;
	p->arena_len = 0;
	p->nnodes = 0;
	p->nroot = 0;
	p->depth = 0;
	p->have_tag = p->have_name = p->name_uid = false;
	p->tag_off = p->name_off = p->tok_off = 0;
	p->cur_node = -1;
	p->line_count = 0;
	p->lit_index = 0;
	p->lit_total = 0;
	p->sink = NULL;
	p->sink_ctx = NULL;
	p->error = NULL;
	p->pending_error = NULL;
}

/* ------------------------------------------------------------ skipper */

/* Skips the rest of a broken line (and the octets of non-synchronising
 * literals announced at the end of skipped lines). Returns octets used. */
static size_t skip_input(struct imap_parser *p, const char *data, size_t len)
{
	size_t k = 0;
	uint64_t skip_max = (uint64_t)p->lim.line_max * SKIP_FACTOR;

	while (k < len) {
		if (p->skip_lit > 0) {
			size_t m = len - k;
			if ((uint64_t)m > p->skip_lit)
				m = (size_t)p->skip_lit;
			k += m;
			p->skip_lit -= m;
			continue;
		}
		if (!p->skip_line)
			break;
		unsigned char c = (unsigned char)data[k++];
		if (++p->skip_count > skip_max) {
			p->fatal = true;
			p->error = "Line too long";
			return k;
		}
		switch (c) {
		case '\n':
			if ((p->tail == TAIL_CLOSE || p->tail == TAIL_CLOSE_CR) && p->tail_plus) {
				if (p->tail_num > UINT32_MAX) {
					p->fatal = true;
					p->error = "Literal too large";
					return k;
				}
				p->skip_lit = p->tail_num;
			} else {
				p->skip_line = false;
				p->skip_count = 0;
			}
			reset_skip_tail(p);
			break;
		case '{':
			p->tail = TAIL_BRACE;
			p->tail_num = 0;
			p->tail_plus = false;
			break;
		case '+':
			p->tail = p->tail == TAIL_DIGITS ? TAIL_PLUS : TAIL_NONE;
			p->tail_plus = p->tail == TAIL_PLUS;
			break;
		case '}':
			p->tail = (p->tail == TAIL_DIGITS || p->tail == TAIL_PLUS) ? TAIL_CLOSE
										      : TAIL_NONE;
			break;
		case '\r':
			p->tail = p->tail == TAIL_CLOSE ? TAIL_CLOSE_CR : TAIL_NONE;
			break;
		default:
			if (c >= '0' && c <= '9' &&
			    (p->tail == TAIL_BRACE || p->tail == TAIL_DIGITS)) {
				p->tail = TAIL_DIGITS;
				if (p->tail_num <= UINT32_MAX)
					p->tail_num = p->tail_num * 10 + (uint64_t)(c - '0');
			} else {
				p->tail = TAIL_NONE;
			}
			break;
		}
	}
	return k;
}

/* ------------------------------------------------------------ state machine */

static enum step open_list(struct imap_parser *p)
{
	if (p->depth >= p->lim.depth_max)
		return perr(p, "Too deep nesting");
	int idx = node_add(p, IMAP_ARG_LIST);
	if (idx < 0)
		return perr(p, "Too many arguments");
	p->stack[p->depth++] = idx;
	return ST_OK;
}

static enum step line_end(struct imap_parser *p)
{
	if (build_args(p) < 0) {
		/* the LF is consumed: nothing left to skip */
		p->error = "Out of memory";
		return ST_ERROR_EOL;
	}
	return ST_DONE;
}

/* The CRLF after "{N}" was read. */
static enum step literal_announce(struct imap_parser *p)
{
	if (p->lit_size > UINT32_MAX) {
		p->error = "Literal too large";
		/* a synchronising one: the client waits for "+" and sends
		 * nothing; a non-synchronising one cannot be skipped */
		if (!p->lit_sync)
			p->fatal = true;
		return ST_ERROR_EOL;
	}
	p->cur_node = node_add(p, IMAP_ARG_LITERAL);
	if (p->cur_node < 0) {
		p->error = "Too many arguments";
		if (!p->lit_sync) {
			p->skip_lit = p->lit_size;
			p->skip_line = true;
			p->skip_count = p->line_count;
			reset_skip_tail(p);
		}
		return ST_ERROR_EOL;
	}
	p->nodes[p->cur_node].literal8 = p->lit8;
	p->state = PS_LIT_WAIT;
	return ST_LITERAL;
}

static enum step step(struct imap_parser *p, unsigned char c)
{
	switch (p->state) {
	case PS_START:
		if (c == '\n') {
			p->line_count = 0;
			return ST_OK;
		}
		if (c == '\r') {
			p->state = PS_START_CR;
			return ST_OK;
		}
		if (!is_tag_char(c))
			return perr(p, "Invalid tag");
		p->tag_off = p->arena_len;
		p->state = PS_TAG;
		return put(p, (char)c);
	case PS_START_CR:
		if (c != '\n')
			return perr(p, "CR without LF");
		p->state = PS_START;
		p->line_count = 0;
		return ST_OK;
	case PS_TAG:
		if (is_tag_char(c))
			return put(p, (char)c);
		if (c == ' ' || c == '\r' || c == '\n') {
			if (arena_putc(p, '\0') < 0)
				return perr(p, "Out of memory");
			p->have_tag = true;
			if (c != ' ')
				return perr(p, "Missing command");
			p->state = PS_NAME_START;
			return ST_OK;
		}
		return perr(p, "Invalid tag");
	case PS_NAME_START:
		if (c == ' ')
			return ST_OK;
		if (!is_atom_char(c))
			return perr(p, "Missing command");
		if (!p->name_uid)
			p->name_off = p->arena_len;
		p->state = PS_NAME;
		return put(p, (char)(c >= 'a' && c <= 'z' ? c - 0x20 : c));
	case PS_NAME:
		if (is_atom_char(c))
			return put(p, (char)(c >= 'a' && c <= 'z' ? c - 0x20 : c));
		if (c == ' ' && !p->name_uid && p->arena_len - p->name_off == 3 &&
		    memcmp(p->arena + p->name_off, "UID", 3) == 0) {
			p->name_uid = true;
			p->state = PS_NAME_START;
			return put(p, ' ');
		}
		if (arena_putc(p, '\0') < 0)
			return perr(p, "Out of memory");
		p->have_name = true;
		p->state = PS_SEP;
		return ST_AGAIN;
	case PS_SEP:
		switch (c) {
		case ' ':
			p->state = PS_ARG;
			return ST_OK;
		case ')':
			if (p->depth == 0)
				return perr(p, "Unexpected ')'");
			p->depth--;
			return ST_OK;
		case '\r':
		case '\n':
			if (p->depth > 0)
				return perr(p, "Missing ')'");
			if (c == '\n')
				return line_end(p);
			p->state = PS_EOL_CR;
			return ST_OK;
		default:
			return perr(p, "Missing space");
		}
	case PS_ARG:
		switch (c) {
		case ' ':
			return ST_OK;
		case '(':
			return open_list(p);
		case ')':
		case '\r':
		case '\n':
			p->state = PS_SEP;
			return ST_AGAIN;
		case '"':
			p->state = PS_QUOTED;
			return token_start(p, IMAP_ARG_STRING);
		case '{':
			p->lit8 = false;
			p->lit_size = 0;
			p->lit_digits = 0;
			p->lit_sync = true;
			p->state = PS_LIT_NUM;
			return ST_OK;
		case '~':
			p->state = PS_TILDE;
			return ST_OK;
		default:
			break;
		}
		if (c == '\\' || c == '[' || is_arg_atom_char(c)) {
			enum step r = token_start(p, IMAP_ARG_ATOM);
			if (r != ST_OK)
				return r;
			if (c == '[') {
				p->bracket_depth = 1;
				p->br_quote = p->br_esc = false;
				p->state = PS_BRACKET;
			} else {
				p->state = PS_ATOM;
			}
			return put(p, (char)c);
		}
		return perr(p, "Invalid characters in atom");
	case PS_TILDE:
		if (c == '{') {
			p->lit8 = true;
			p->lit_size = 0;
			p->lit_digits = 0;
			p->lit_sync = true;
			p->state = PS_LIT_NUM;
			return ST_OK;
		} else {
			enum step r = token_start(p, IMAP_ARG_ATOM);
			if (r != ST_OK)
				return r;
			p->state = PS_ATOM;
			r = put(p, '~');
			return r == ST_OK ? ST_AGAIN : r;
		}
	case PS_ATOM:
		if (c == '[') {
			p->bracket_depth = 1;
			p->br_quote = p->br_esc = false;
			p->state = PS_BRACKET;
			return put(p, (char)c);
		}
		if (is_arg_atom_char(c))
			return put(p, (char)c);
		if (c == '\\' || c < 0x20 || c >= 0x7f) {
			if (c != '\r' && c != '\n')
				return perr(p, "Invalid characters in atom");
		}
		{
			enum step r = token_end(p);
			if (r != ST_OK)
				return r;
		}
		p->state = PS_SEP;
		return ST_AGAIN;
	case PS_BRACKET:
		if (c == '\r' || c == '\n' || c == '\0')
			return perr(p, "Missing ']'");
		if (p->br_quote) {
			if (p->br_esc)
				p->br_esc = false;
			else if (c == '\\')
				p->br_esc = true;
			else if (c == '"')
				p->br_quote = false;
			return put(p, (char)c);
		}
		if (c < 0x20 || c >= 0x7f)
			return perr(p, "Invalid characters in atom");
		if (c == '"') {
			p->br_quote = true;
		} else if (c == '[') {
			if (p->bracket_depth >= BRACKET_DEPTH_MAX)
				return perr(p, "Too deep nesting");
			p->bracket_depth++;
		} else if (c == ']') {
			if (--p->bracket_depth == 0)
				p->state = PS_ATOM;
		}
		return put(p, (char)c);
	case PS_QUOTED:
		if (c == '"') {
			p->state = PS_SEP;
			return token_end(p);
		}
		if (c == '\\') {
			p->state = PS_QUOTED_ESC;
			return ST_OK;
		}
		if (c == '\r' || c == '\n')
			return perr(p, "Missing '\"'");
		if (c == '\0')
			return perr(p, "NUL in string");
		return put(p, (char)c);
	case PS_QUOTED_ESC:
		if (c != '"' && c != '\\')
			return perr(p, "Invalid escape in string");
		p->state = PS_QUOTED;
		return put(p, (char)c);
	case PS_LIT_NUM:
		if (c >= '0' && c <= '9') {
			if (p->lit_size <= UINT32_MAX)
				p->lit_size = p->lit_size * 10 + (uint64_t)(c - '0');
			p->lit_digits++;
			return ST_OK;
		}
		if (p->lit_digits == 0)
			return perr(p, "Invalid literal");
		if (c == '+') {
			p->lit_sync = false;
			p->state = PS_LIT_PLUS;
			return ST_OK;
		}
		if (c == '}') {
			p->state = PS_LIT_EOL;
			return ST_OK;
		}
		return perr(p, "Invalid literal");
	case PS_LIT_PLUS:
		if (c != '}')
			return perr(p, "Invalid literal");
		p->state = PS_LIT_EOL;
		return ST_OK;
	case PS_LIT_EOL:
		if (c == '\r') {
			p->state = PS_LIT_CR;
			return ST_OK;
		}
		if (c == '\n')
			return literal_announce(p);
		return perr(p, "Missing CRLF after literal");
	case PS_LIT_CR:
		if (c != '\n')
			return perr(p, "CR without LF");
		return literal_announce(p);
	case PS_EOL_CR:
		if (c != '\n')
			return perr(p, "CR without LF");
		return line_end(p);
	case PS_LIT_WAIT:
	case PS_LIT_DATA:
	case PS_FINISHED:
		break;
	}
	return perr(p, "Internal parser error");
}

/* Literal octets: into the arena or the sink. Returns octets used; sets
 * *ret_r to ERROR when the command failed. */
static size_t literal_data(struct imap_parser *p, const char *data, size_t len,
			   enum imap_parse_result *ret_r)
{
	size_t n = len;
	if ((uint64_t)n > p->lit_remaining)
		n = (size_t)p->lit_remaining;
	if (!p->lit8) {
		const char *nul = memchr(data, '\0', n);
		if (nul != NULL) {
			size_t used = (size_t)(nul - data) + 1;
			p->error = "NUL in literal";
			/* the octets before the NUL first, so that the same input
			 * gives the same error however it is split */
			if (p->sink != NULL && used > 1 && p->sink(p->sink_ctx, data, used - 1) < 0) {
				used--;
				p->error = "Literal rejected";
			}
			p->skip_lit = p->lit_remaining - used;
			p->skip_line = true;
			p->skip_count = p->line_count;
			reset_skip_tail(p);
			*ret_r = IMAP_PARSE_ERROR;
			return used;
		}
	}
	if (p->sink != NULL) {
		if (n > 0 && p->sink(p->sink_ctx, data, n) < 0) {
			p->error = "Literal rejected";
			p->skip_lit = p->lit_remaining - n;
			p->skip_line = true;
			p->skip_count = p->line_count;
			reset_skip_tail(p);
			*ret_r = IMAP_PARSE_ERROR;
			return n;
		}
	} else {
		memcpy(p->arena + p->arena_len, data, n);
		p->arena_len += n;
	}
	p->lit_remaining -= n;
	if (p->lit_remaining == 0) {
		struct pnode *node = &p->nodes[p->cur_node];
		node->len = p->lit_size;
		if (!node->sunk)
			p->arena[p->arena_len++] = '\0';   /* reserved in accept */
		p->cur_node = -1;
		p->state = PS_SEP;
	}
	return n;
}

/* Length of the run of octets at data that PS_ATOM / PS_QUOTED would just
 * append, within the line limit. */
static size_t fast_run(const struct imap_parser *p, const char *data, size_t len)
{
	size_t room = p->line_count < p->lim.line_max ? p->lim.line_max - p->line_count : 0;
	size_t max = len < room ? len : room, k = 0;
	if (p->state == PS_ATOM) {
		while (k < max && data[k] != '[' && is_arg_atom_char((unsigned char)data[k]))
			k++;
	} else {
		while (k < max) {
			char c = data[k];
			if (c == '"' || c == '\\' || c == '\r' || c == '\n' || c == '\0')
				break;
			k++;
		}
	}
	return k;
}

enum imap_parse_result imap_parser_feed(struct imap_parser *p, const char *data, size_t len,
					size_t *used_r)
{
	enum imap_parse_result ret = IMAP_PARSE_MORE;
	size_t i = 0;

	*used_r = 0;
	if (p->fatal)
		return IMAP_PARSE_ERROR;
	if (p->pending_error != NULL) {
		p->error = p->pending_error;
		p->pending_error = NULL;
		p->state = PS_FINISHED;
		return IMAP_PARSE_ERROR;
	}
	if (p->state == PS_FINISHED)
		imap_parser_reset(p);
	if (p->state == PS_LIT_WAIT)
		return IMAP_PARSE_LITERAL;

	while (i < len) {
		if (p->skip_lit > 0 || p->skip_line) {
			i += skip_input(p, data + i, len - i);
			if (p->fatal) {
				ret = IMAP_PARSE_ERROR;
				p->state = PS_FINISHED;
				break;
			}
			continue;
		}
		if (p->state == PS_LIT_DATA) {
			i += literal_data(p, data + i, len - i, &ret);
			if (ret != IMAP_PARSE_MORE) {
				p->state = PS_FINISHED;
				break;
			}
			continue;
		}
		if (p->state == PS_ATOM || p->state == PS_QUOTED) {
			/* fast path: a run of plain characters in one copy */
			size_t k = fast_run(p, data + i, len - i);
			if (k > 0) {
				if (arena_reserve(p, k) < 0) {
					(void)perr(p, "Out of memory");
					ret = IMAP_PARSE_ERROR;
					p->state = PS_FINISHED;
					break;
				}
				memcpy(p->arena + p->arena_len, data + i, k);
				p->arena_len += k;
				p->line_count += k;
				i += k;
				continue;
			}
		}
		enum step r;
		if (p->line_count >= p->lim.line_max)
			r = perr(p, "Line too long");
		else
			r = step(p, (unsigned char)data[i]);
		if (r == ST_AGAIN)
			continue;
		if (r != ST_ERROR) {
			i++;
			p->line_count++;
		}
		if (r == ST_OK)
			continue;
		if (r == ST_DONE) {
			ret = IMAP_PARSE_DONE;
			p->state = PS_FINISHED;
		} else if (r == ST_LITERAL) {
			ret = IMAP_PARSE_LITERAL;
		} else {
			ret = IMAP_PARSE_ERROR;
			p->state = PS_FINISHED;
		}
		break;
	}
	*used_r = i;
	return ret;
}

/* ------------------------------------------------------------ literals */

void imap_parser_literal(const struct imap_parser *p, struct imap_literal_info *info_r)
{
	info_r->size = p->lit_size;
	info_r->sync = p->lit_sync;
	info_r->literal8 = p->lit8;
	info_r->index = p->lit_index;
}

static void literal_fail(struct imap_parser *p, const char *msg)
{
	p->pending_error = msg;
	if (!p->lit_sync) {
		p->skip_lit = p->lit_size;
		p->skip_line = true;
		p->skip_count = p->line_count;
		reset_skip_tail(p);
	}
	p->lit_remaining = 0;
	p->state = PS_FINISHED;   /* feed() reports pending_error first */
}

void imap_parser_literal_accept(struct imap_parser *p, imap_literal_sink_cb *sink, void *ctx)
{
	if (p->state != PS_LIT_WAIT)
		return;
	struct pnode *node = &p->nodes[p->cur_node];
	if (sink == NULL) {
		if (p->lit_size > p->lim.literal_max ||
		    p->lit_size > p->lit_total_max - p->lit_total) {
			literal_fail(p, "Literal too large");
			return;
		}
		if (arena_reserve(p, (size_t)p->lit_size + 1) < 0) {
			literal_fail(p, "Out of memory");
			return;
		}
		p->lit_total += (size_t)p->lit_size;
		node->off = p->arena_len;
	} else {
		node->sunk = true;
	}
	p->sink = sink;
	p->sink_ctx = ctx;
	p->lit_index++;
	p->lit_remaining = p->lit_size;
	p->state = PS_LIT_DATA;
	if (p->lit_remaining == 0) {
		enum imap_parse_result dummy = IMAP_PARSE_MORE;
		(void)literal_data(p, "", 0, &dummy);
	}
}

void imap_parser_literal_reject(struct imap_parser *p)
{
	if (p->state != PS_LIT_WAIT)
		return;
	if (!p->lit_sync) {
		p->skip_lit = p->lit_size;
		p->skip_line = true;
		p->skip_count = p->line_count;
		reset_skip_tail(p);
	}
	p->state = PS_FINISHED;
}

/* ------------------------------------------------------------ results */

const char *imap_parser_tag(const struct imap_parser *p)
{
	return p->have_tag ? p->arena + p->tag_off : "";
}

const char *imap_parser_name(const struct imap_parser *p)
{
	return p->have_name ? p->arena + p->name_off : NULL;
}

const struct imap_arg *imap_parser_args(const struct imap_parser *p, unsigned *count_r)
{
	static const struct imap_arg no_args[1];
	*count_r = p->nroot;
	return p->args != NULL ? p->args : no_args;
}

const char *imap_parser_error(const struct imap_parser *p)
{
	return p->error != NULL ? p->error : "";
}

bool imap_parser_fatal(const struct imap_parser *p)
{
	return p->fatal;
}

const char *imap_arg_astring(const struct imap_arg *arg)
{
	switch (arg->type) {
	case IMAP_ARG_ATOM:
	case IMAP_ARG_NIL:
	case IMAP_ARG_STRING:
	case IMAP_ARG_LITERAL:
		return arg->str;
	default:
		return NULL;
	}
}

const char *imap_arg_atom(const struct imap_arg *arg)
{
	return arg->type == IMAP_ARG_ATOM || arg->type == IMAP_ARG_NIL ? arg->str : NULL;
}

const char *imap_arg_nstring(const struct imap_arg *arg, bool *is_nil_r)
{
	*is_nil_r = false;
	switch (arg->type) {
	case IMAP_ARG_NIL:
		*is_nil_r = true;
		return "";
	case IMAP_ARG_STRING:
	case IMAP_ARG_LITERAL:
		return arg->str;
	default:
		return NULL;
	}
}

bool imap_arg_is_list(const struct imap_arg *arg)
{
	return arg->type == IMAP_ARG_LIST;
}
