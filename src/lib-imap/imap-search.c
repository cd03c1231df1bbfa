/*
 * imap-search.c — SEARCH criteria: RFC 9051 6.4.4 and RFC 3501 6.4.4 keys,
 * MODSEQ of RFC 7162 3.1.5, "$" of RFC 5182, the RETURN options of
 * RFC 4731 (ESEARCH) and CHARSET. Parses the command's arguments into a
 * tree once, then evaluates it per message through the callbacks of struct
 * imap_search_msg.
 *
 * Runs in the imapd worker processes. Never touches a mailbox: all it
 * knows about a message comes from the callbacks. Evaluation allocates
 * nothing. In AND groups the children are sorted by cost at parse time
 * (flags, numbers and dates before size, Date: header, header fields and
 * body text), and evaluation stops at the first child that decides, so an
 * expensive body search runs only on messages the cheap keys let through.
 * OR groups are flattened and ordered the same way; NOT NOT x is x.
 */
#include "lib-imap/imap-search.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib-imap/imap-seqset.h"
#include "lib-imap/imap-util.h"
#include "lib/util.h"

#define SEARCH_PAREN_DEPTH_MAX 32u     /* parenthesised groups */
#define SEARCH_DEPTH_MAX       256u    /* groups, NOT and OR together */

enum snode_type {
	SN_AND,
	SN_OR,
	SN_NOT,
	SN_ALL,
	SN_FLAGS,
	SN_KEYWORD,
	SN_SEQ,
	SN_UID,
	SN_SAVED,
	SN_MODSEQ,
	SN_BEFORE,
	SN_ON,
	SN_SINCE,
	SN_LARGER,
	SN_SMALLER,
	SN_SENTBEFORE,
	SN_SENTON,
	SN_SENTSINCE,
	SN_HEADER,
	SN_BODY,
	SN_TEXT,
};

/* Relative cost of a leaf; groups cost their most expensive child. */
enum {
	COST_FREE = 0,      /* fields of struct imap_search_msg */
	COST_KEYWORD = 1,
	COST_SIZE = 2,
	COST_SENTDATE = 3,  /* parses the Date: header */
	COST_HEADER = 4,
	COST_BODY = 5,
	COST_TEXT = 6,
};

struct snode {
	enum snode_type type;
	unsigned cost;
	uint32_t set_mask, clear_mask;  /* SN_FLAGS */
	uint64_t num;                   /* sizes, MODSEQ */
	int64_t day;                    /* dates: days since the epoch */
	char *field, *needle;           /* SN_HEADER field; needle / keyword */
	struct imap_seqset set;         /* SN_SEQ, SN_UID */
	struct snode **children;
	unsigned nchildren;
	unsigned order;                 /* position for a stable sort */
};

struct imap_search {
	struct snode *root;
	bool uses_modseq;
};

struct sparse {
	uint32_t msg_max, uid_max;
	const char *error;
	bool uses_modseq;
};

static void snode_free(struct snode *n)
{
	if (n == NULL)
		return;
	for (unsigned i = 0; i < n->nchildren; i++)
		snode_free(n->children[i]);
	free(n->children);
	free(n->field);
	free(n->needle);
	imap_seqset_free(&n->set);
	free(n);
}

void imap_search_free(struct imap_search **search)
{
	if (*search == NULL)
		return;
	snode_free((*search)->root);
	free(*search);
	*search = NULL;
}

static struct snode *snode_new(struct sparse *ps, enum snode_type type, unsigned cost)
{
	struct snode *n = calloc(1, sizeof(*n));
	if (n == NULL) {
		ps->error = "Out of memory";
		return NULL;
	}
	n->type = type;
	n->cost = cost;
	return n;
}

static int snode_add_child(struct sparse *ps, struct snode *parent, struct snode *child)
{
	/* capacity: next power of two >= nchildren */
	unsigned c = parent->nchildren;
	if (c == 0 || (c & (c - 1)) == 0) {
		unsigned cap = c == 0 ? 2 : c * 2;
		struct snode **a = realloc(parent->children, sizeof(*a) * cap);
		if (a == NULL) {
			ps->error = "Out of memory";
			return -1;
		}
		parent->children = a;
	}
	child->order = c;
	parent->children[parent->nchildren++] = child;
	if (child->cost > parent->cost)
		parent->cost = child->cost;
	return 0;
}

static int child_cmp(const void *a, const void *b)
{
	const struct snode *x = *(const struct snode *const *)a;
	const struct snode *y = *(const struct snode *const *)b;
	if (x->cost != y->cost)
		return x->cost < y->cost ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* Cheap children first. */
static void snode_sort(struct snode *n)
{
	if (n->nchildren > 1)
		qsort(n->children, n->nchildren, sizeof(*n->children), child_cmp);
}

static bool str_ieq(const char *a, const char *b)
{
	return strcasecmp(a, b) == 0;
}

/* Days since 1970-01-01 of a time, rounding down. */
static int64_t day_of(int64_t t)
{
	int64_t q = t / 86400;
	if (t % 86400 < 0)
		q--;
	return q;
}

int64_t imap_date_parse(const char *s)
{
	static const char months[12][4] = { "jan", "feb", "mar", "apr", "may", "jun",
					     "jul", "aug", "sep", "oct", "nov", "dec" };
	unsigned day = 0, i = 0, month, year = 0;

	if (s == NULL)
		return -1;
	while (i < 2 && s[i] >= '0' && s[i] <= '9')
		day = day * 10 + (unsigned)(s[i++] - '0');
	if (i == 0 || s[i++] != '-')
		return -1;
	for (month = 0; month < 12; month++) {
		if (strncasecmp(s + i, months[month], 3) == 0)
			break;
	}
	if (month == 12)
		return -1;
	i += 3;
	if (s[i++] != '-')
		return -1;
	for (unsigned k = 0; k < 4; k++, i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		year = year * 10 + (unsigned)(s[i] - '0');
	}
	if (s[i] != '\0' || day == 0 || day > imap_days_in_month((int)year, month + 1))
		return -1;
	return imap_days_from_civil((int)year, month + 1, day) * 86400;
}

/* ------------------------------------------------------------ parsing */

static const char *arg_str(const struct imap_arg *a)
{
	const char *s = imap_arg_astring(a);
	return s;
}

static int take_number(struct sparse *ps, const struct imap_arg *a, uint64_t *n_r)
{
	const char *s = imap_arg_atom(a);
	if (s == NULL || str_to_u64(s, n_r) < 0 || *n_r > (uint64_t)INT64_MAX) {
		ps->error = "Invalid number in search";
		return -1;
	}
	return 0;
}

static int take_date(struct sparse *ps, const struct imap_arg *a, int64_t *day_r)
{
	const char *s = NULL;
	if (a->type == IMAP_ARG_ATOM || a->type == IMAP_ARG_STRING)
		s = a->str;
	int64_t t = imap_date_parse(s);
	if (t == -1) {
		ps->error = "Invalid date in search";
		return -1;
	}
	*day_r = day_of(t);
	return 0;
}

static char *take_string(struct sparse *ps, const struct imap_arg *a)
{
	const char *s = arg_str(a);
	if (s == NULL) {
		ps->error = "Invalid string in search";
		return NULL;
	}
	char *dup = strdup(s);
	if (dup == NULL)
		ps->error = "Out of memory";
	return dup;
}

/* flag-keyword = atom without "\"; a system flag name maps to its bit. */
static uint32_t system_flag(const char *s)
{
	static const struct {
		const char *name;
		uint32_t bit;
	} flags[] = {
		{ "\\Seen", IMAP_FLAG_SEEN },         { "\\Answered", IMAP_FLAG_ANSWERED },
		{ "\\Flagged", IMAP_FLAG_FLAGGED },   { "\\Deleted", IMAP_FLAG_DELETED },
		{ "\\Draft", IMAP_FLAG_DRAFT },       { "\\Recent", IMAP_FLAG_RECENT },
	};
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		if (str_ieq(s, flags[i].name))
			return flags[i].bit;
	}
	return 0;
}

static bool keyword_valid(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\]", c) != NULL)
			return false;
	}
	return true;
}

/* Adds k to parent, taking over k's children instead when k is of the
 * parent's own type ("(a b) c" is "a b c", OR (OR a b) c is OR a b c).
 * Consumes k: on failure (-1) it is freed. */
static int snode_absorb(struct sparse *ps, struct snode *parent, struct snode *k)
{
	if (k->type != parent->type) {
		if (snode_add_child(ps, parent, k) < 0) {
			snode_free(k);
			return -1;
		}
		return 0;
	}
	for (unsigned i = 0; i < k->nchildren; i++) {
		if (snode_add_child(ps, parent, k->children[i]) < 0) {
			for (unsigned j = i; j < k->nchildren; j++)
				snode_free(k->children[j]);
			k->nchildren = 0;
			snode_free(k);
			return -1;
		}
	}
	k->nchildren = 0;
	snode_free(k);
	return 0;
}

static struct snode *parse_key(struct sparse *ps, const struct imap_arg *args, unsigned count,
			       unsigned *pos, unsigned depth, unsigned paren_depth);

/* keys of a group: an AND node */
static struct snode *parse_group(struct sparse *ps, const struct imap_arg *args,
				 unsigned count, unsigned depth, unsigned paren_depth)
{
	struct snode *and = snode_new(ps, SN_AND, COST_FREE);
	unsigned pos = 0;
	if (and == NULL)
		return NULL;
	if (count == 0) {
		ps->error = "Missing search criteria";
		goto fail;
	}
	while (pos < count) {
		struct snode *k = parse_key(ps, args, count, &pos, depth, paren_depth);
		if (k == NULL)
			goto fail;
		if (snode_absorb(ps, and, k) < 0)
			goto fail;
	}
	/* merge the flag tests into one */
	struct snode *flags = NULL;
	unsigned out = 0;
	for (unsigned i = 0; i < and->nchildren; i++) {
		struct snode *c = and->children[i];
		if (c->type == SN_FLAGS && flags != NULL) {
			flags->set_mask |= c->set_mask;
			flags->clear_mask |= c->clear_mask;
			snode_free(c);
			continue;
		}
		if (c->type == SN_FLAGS)
			flags = c;
		and->children[out++] = c;
	}
	and->nchildren = out;
	snode_sort(and);
	if (and->nchildren == 1) {
		struct snode *only = and->children[0];
		and->nchildren = 0;
		snode_free(and);
		return only;
	}
	return and;
fail:
	snode_free(and);
	return NULL;
}

static struct snode *parse_key(struct sparse *ps, const struct imap_arg *args, unsigned count,
			       unsigned *pos, unsigned depth, unsigned paren_depth)
{
	const struct imap_arg *a = &args[(*pos)++];
	struct snode *n = NULL;

	if (depth >= SEARCH_DEPTH_MAX) {
		ps->error = "Search criteria nested too deeply";
		return NULL;
	}
	if (a->type == IMAP_ARG_LIST) {
		if (paren_depth >= SEARCH_PAREN_DEPTH_MAX) {
			ps->error = "Search criteria nested too deeply";
			return NULL;
		}
		if (a->count == 0) {
			ps->error = "Empty search group";
			return NULL;
		}
		return parse_group(ps, a->list, a->count, depth + 1, paren_depth + 1);
	}
	const char *key = imap_arg_atom(a);
	if (key == NULL || a->type == IMAP_ARG_NIL) {
		ps->error = "Invalid search key";
		return NULL;
	}
	if (key[0] == '$' || key[0] == '*' || (key[0] >= '0' && key[0] <= '9')) {
		n = snode_new(ps, SN_SEQ, COST_FREE);
		if (n == NULL)
			return NULL;
		if (imap_seqset_parse(key, strlen(key), &n->set) < 0) {
			ps->error = "Invalid message sequence set";
			goto fail;
		}
		if (n->set.dollar)
			n->type = SN_SAVED;
		else
			imap_seqset_resolve(&n->set, ps->msg_max);
		return n;
	}

	static const struct {
		const char *name;
		uint32_t set, clear;
	} flag_keys[] = {
		{ "ANSWERED", IMAP_FLAG_ANSWERED, 0 },   { "UNANSWERED", 0, IMAP_FLAG_ANSWERED },
		{ "DELETED", IMAP_FLAG_DELETED, 0 },     { "UNDELETED", 0, IMAP_FLAG_DELETED },
		{ "DRAFT", IMAP_FLAG_DRAFT, 0 },         { "UNDRAFT", 0, IMAP_FLAG_DRAFT },
		{ "FLAGGED", IMAP_FLAG_FLAGGED, 0 },     { "UNFLAGGED", 0, IMAP_FLAG_FLAGGED },
		{ "SEEN", IMAP_FLAG_SEEN, 0 },           { "UNSEEN", 0, IMAP_FLAG_SEEN },
		{ "RECENT", IMAP_FLAG_RECENT, 0 },       { "OLD", 0, IMAP_FLAG_RECENT },
		{ "NEW", IMAP_FLAG_RECENT, IMAP_FLAG_SEEN },
	};
	for (size_t i = 0; i < sizeof(flag_keys) / sizeof(flag_keys[0]); i++) {
		if (str_ieq(key, flag_keys[i].name)) {
			n = snode_new(ps, SN_FLAGS, COST_FREE);
			if (n == NULL)
				return NULL;
			n->set_mask = flag_keys[i].set;
			n->clear_mask = flag_keys[i].clear;
			return n;
		}
	}

	static const struct {
		const char *name;
		const char *field;
	} header_keys[] = {
		{ "BCC", "Bcc" }, { "CC", "Cc" }, { "FROM", "From" },
		{ "SUBJECT", "Subject" }, { "TO", "To" },
	};
	for (size_t i = 0; i < sizeof(header_keys) / sizeof(header_keys[0]); i++) {
		if (!str_ieq(key, header_keys[i].name))
			continue;
		if (*pos >= count) {
			ps->error = "Missing search argument";
			return NULL;
		}
		n = snode_new(ps, SN_HEADER, COST_HEADER);
		if (n == NULL)
			return NULL;
		n->field = strdup(header_keys[i].field);
		if (n->field == NULL) {
			ps->error = "Out of memory";
			goto fail;
		}
		if ((n->needle = take_string(ps, &args[(*pos)++])) == NULL)
			goto fail;
		return n;
	}

	static const struct {
		const char *name;
		enum snode_type type;
		unsigned cost;
	} date_keys[] = {
		{ "BEFORE", SN_BEFORE, COST_FREE },
		{ "ON", SN_ON, COST_FREE },
		{ "SINCE", SN_SINCE, COST_FREE },
		{ "SENTBEFORE", SN_SENTBEFORE, COST_SENTDATE },
		{ "SENTON", SN_SENTON, COST_SENTDATE },
		{ "SENTSINCE", SN_SENTSINCE, COST_SENTDATE },
	};
	for (size_t i = 0; i < sizeof(date_keys) / sizeof(date_keys[0]); i++) {
		if (!str_ieq(key, date_keys[i].name))
			continue;
		if (*pos >= count) {
			ps->error = "Missing search argument";
			return NULL;
		}
		n = snode_new(ps, date_keys[i].type, date_keys[i].cost);
		if (n == NULL)
			return NULL;
		if (take_date(ps, &args[(*pos)++], &n->day) < 0)
			goto fail;
		return n;
	}

	if (str_ieq(key, "ALL"))
		return snode_new(ps, SN_ALL, COST_FREE);

	/* the rest all take at least one argument */
	if (*pos >= count) {
		bool known = false;
		static const char *const need_arg[] = { "BODY", "TEXT", "HEADER", "KEYWORD",
			"UNKEYWORD", "LARGER", "SMALLER", "NOT", "OR", "UID", "MODSEQ" };
		for (size_t i = 0; i < sizeof(need_arg) / sizeof(need_arg[0]); i++)
			known = known || str_ieq(key, need_arg[i]);
		ps->error = known ? "Missing search argument" : "Unknown search key";
		return NULL;
	}

	if (str_ieq(key, "BODY") || str_ieq(key, "TEXT")) {
		bool text = str_ieq(key, "TEXT");
		n = snode_new(ps, text ? SN_TEXT : SN_BODY, text ? COST_TEXT : COST_BODY);
		if (n == NULL)
			return NULL;
		if ((n->needle = take_string(ps, &args[(*pos)++])) == NULL)
			goto fail;
		return n;
	}
	if (str_ieq(key, "HEADER")) {
		if (*pos + 1 >= count) {
			ps->error = "Missing search argument";
			return NULL;
		}
		n = snode_new(ps, SN_HEADER, COST_HEADER);
		if (n == NULL)
			return NULL;
		if ((n->field = take_string(ps, &args[(*pos)++])) == NULL)
			goto fail;
		if (n->field[0] == '\0') {
			ps->error = "Empty header field name";
			goto fail;
		}
		if ((n->needle = take_string(ps, &args[(*pos)++])) == NULL)
			goto fail;
		return n;
	}
	if (str_ieq(key, "KEYWORD") || str_ieq(key, "UNKEYWORD")) {
		bool un = str_ieq(key, "UNKEYWORD");
		const char *kw = imap_arg_atom(&args[(*pos)++]);
		if (kw == NULL) {
			ps->error = "Invalid keyword";
			return NULL;
		}
		uint32_t bit = system_flag(kw);
		if (bit != 0) {
			/* "KEYWORD \Seen": the system flag */
			n = snode_new(ps, SN_FLAGS, COST_FREE);
			if (n == NULL)
				return NULL;
			if (un)
				n->clear_mask = bit;
			else
				n->set_mask = bit;
			return n;
		}
		if (!keyword_valid(kw)) {
			ps->error = "Invalid keyword";
			return NULL;
		}
		n = snode_new(ps, SN_KEYWORD, COST_KEYWORD);
		if (n == NULL)
			return NULL;
		if ((n->needle = strdup(kw)) == NULL) {
			ps->error = "Out of memory";
			goto fail;
		}
		if (!un)
			return n;
		struct snode *not = snode_new(ps, SN_NOT, COST_KEYWORD);
		if (not == NULL || snode_add_child(ps, not, n) < 0) {
			free(not);
			goto fail;
		}
		return not;
	}
	if (str_ieq(key, "LARGER") || str_ieq(key, "SMALLER")) {
		n = snode_new(ps, str_ieq(key, "LARGER") ? SN_LARGER : SN_SMALLER, COST_SIZE);
		if (n == NULL)
			return NULL;
		if (take_number(ps, &args[(*pos)++], &n->num) < 0)
			goto fail;
		return n;
	}
	if (str_ieq(key, "UID")) {
		const char *set = imap_arg_atom(&args[(*pos)++]);
		n = snode_new(ps, SN_UID, COST_FREE);
		if (n == NULL)
			return NULL;
		if (set == NULL || imap_seqset_parse(set, strlen(set), &n->set) < 0) {
			ps->error = "Invalid UID set";
			goto fail;
		}
		if (n->set.dollar)
			n->type = SN_SAVED;
		else
			imap_seqset_resolve(&n->set, ps->uid_max);
		return n;
	}
	if (str_ieq(key, "MODSEQ")) {
		/* MODSEQ [entry-name entry-type-req] mod-sequence-valzer */
		const struct imap_arg *v = &args[(*pos)++];
		if (v->type == IMAP_ARG_STRING) {
			if (*pos + 1 >= count) {
				ps->error = "Missing search argument";
				return NULL;
			}
			const char *type = imap_arg_atom(&args[(*pos)++]);
			if (strncasecmp(v->str, "/flags/", 7) != 0 ||
			    (system_flag(v->str + 7) == 0 && !keyword_valid(v->str + 7)) ||
			    type == NULL ||
			    (!str_ieq(type, "priv") && !str_ieq(type, "shared") &&
			     !str_ieq(type, "all"))) {
				ps->error = "Invalid MODSEQ entry";
				return NULL;
			}
			v = &args[(*pos)++];
		}
		n = snode_new(ps, SN_MODSEQ, COST_FREE);
		if (n == NULL)
			return NULL;
		if (take_number(ps, v, &n->num) < 0)
			goto fail;
		ps->uses_modseq = true;
		return n;
	}
	if (str_ieq(key, "NOT")) {
		struct snode *k = parse_key(ps, args, count, pos, depth + 1, paren_depth);
		if (k == NULL)
			return NULL;
		if (k->type == SN_NOT) {
			/* NOT NOT x */
			struct snode *inner = k->children[0];
			k->nchildren = 0;
			snode_free(k);
			return inner;
		}
		if (k->type == SN_FLAGS && (k->set_mask == 0 || k->clear_mask == 0) &&
		    (k->set_mask | k->clear_mask) != 0 &&
		    ((k->set_mask | k->clear_mask) & ((k->set_mask | k->clear_mask) - 1)) == 0) {
			/* NOT SEEN is UNSEEN */
			uint32_t t = k->set_mask;
			k->set_mask = k->clear_mask;
			k->clear_mask = t;
			return k;
		}
		n = snode_new(ps, SN_NOT, COST_FREE);
		if (n == NULL || snode_add_child(ps, n, k) < 0) {
			free(n);
			snode_free(k);
			return NULL;
		}
		return n;
	}
	if (str_ieq(key, "OR")) {
		n = snode_new(ps, SN_OR, COST_FREE);
		if (n == NULL)
			return NULL;
		for (int side = 0; side < 2; side++) {
			if (*pos >= count) {
				ps->error = "Missing search argument";
				goto fail;
			}
			struct snode *k = parse_key(ps, args, count, pos, depth + 1, paren_depth);
			if (k == NULL)
				goto fail;
			if (snode_absorb(ps, n, k) < 0)
				goto fail;
		}
		for (unsigned i = 0; i < n->nchildren; i++)
			n->children[i]->order = i;
		snode_sort(n);
		return n;
	}
	ps->error = "Unknown search key";
	return NULL;
fail:
	snode_free(n);
	return NULL;
}

int imap_search_parse(const struct imap_arg *args, unsigned count, uint32_t msg_max,
		      uint32_t uid_max, struct imap_search **search_r, const char **error_r)
{
	struct sparse ps = { .msg_max = msg_max, .uid_max = uid_max };
	struct imap_search *s;

	*search_r = NULL;
	struct snode *root = parse_group(&ps, args, count, 0, 0);
	if (root == NULL) {
		*error_r = ps.error != NULL ? ps.error : "Invalid search criteria";
		return -1;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		snode_free(root);
		*error_r = "Out of memory";
		return -1;
	}
	s->root = root;
	s->uses_modseq = ps.uses_modseq;
	*search_r = s;
	return 0;
}

bool imap_search_uses_modseq(const struct imap_search *search)
{
	return search->uses_modseq;
}

/* ------------------------------------------------------------ evaluation */

static bool eval(const struct snode *n, const struct imap_search_msg *m,
		 const struct imap_seqset *saved)
{
	switch (n->type) {
	case SN_AND:
		for (unsigned i = 0; i < n->nchildren; i++) {
			if (!eval(n->children[i], m, saved))
				return false;
		}
		return true;
	case SN_OR:
		for (unsigned i = 0; i < n->nchildren; i++) {
			if (eval(n->children[i], m, saved))
				return true;
		}
		return false;
	case SN_NOT:
		return !eval(n->children[0], m, saved);
	case SN_ALL:
		return true;
	case SN_FLAGS:
		return (m->flags & n->set_mask) == n->set_mask && (m->flags & n->clear_mask) == 0;
	case SN_KEYWORD:
		return m->has_keyword != NULL && m->has_keyword(m->ctx, n->needle);
	case SN_SEQ:
		return imap_seqset_contains(&n->set, m->seq);
	case SN_UID:
		return imap_seqset_contains(&n->set, m->uid);
	case SN_SAVED:
		return saved != NULL && imap_seqset_contains(saved, m->uid);
	case SN_MODSEQ:
		return m->modseq >= n->num;
	case SN_BEFORE:
		return day_of(m->internaldate) < n->day;
	case SN_ON:
		return day_of(m->internaldate) == n->day;
	case SN_SINCE:
		return day_of(m->internaldate) >= n->day;
	case SN_LARGER:
		return m->size != NULL && m->size(m->ctx) > n->num;
	case SN_SMALLER:
		return m->size != NULL && m->size(m->ctx) < n->num;
	case SN_SENTBEFORE:
	case SN_SENTON:
	case SN_SENTSINCE: {
		int64_t t = m->sent_date != NULL ? m->sent_date(m->ctx) : -1;
		if (t == -1)
			return false;
		int64_t d = day_of(t);
		return n->type == SN_SENTBEFORE ? d < n->day
		     : n->type == SN_SENTON     ? d == n->day
						: d >= n->day;
	}
	case SN_HEADER:
		return m->header_contains != NULL &&
		       m->header_contains(m->ctx, n->field, n->needle);
	case SN_BODY:
		return m->text_contains != NULL && m->text_contains(m->ctx, n->needle, false);
	case SN_TEXT:
		return m->text_contains != NULL && m->text_contains(m->ctx, n->needle, true);
	}
	return false;
}

bool imap_search_match(const struct imap_search *search, const struct imap_search_msg *msg,
		       const struct imap_seqset *saved_uids)
{
	return eval(search->root, msg, saved_uids);
}

/* ------------------------------------------------------------ options */

int imap_search_parse_options(const struct imap_arg *args, unsigned count, unsigned *ret_r,
			      bool *badcharset_r, const char **error_r)
{
	unsigned i = 0;
	const char *s;

	*ret_r = 0;
	*badcharset_r = false;
	if (i < count && (s = imap_arg_atom(&args[i])) != NULL && str_ieq(s, "RETURN")) {
		static const struct {
			const char *name;
			unsigned bit;
		} opts[] = {
			{ "MIN", IMAP_SEARCH_RET_MIN },     { "MAX", IMAP_SEARCH_RET_MAX },
			{ "ALL", IMAP_SEARCH_RET_ALL },     { "COUNT", IMAP_SEARCH_RET_COUNT },
			{ "SAVE", IMAP_SEARCH_RET_SAVE },
		};
		i++;
		if (i >= count || !imap_arg_is_list(&args[i])) {
			*error_r = "Missing RETURN options";
			return -1;
		}
		unsigned ret = IMAP_SEARCH_RET_GIVEN;
		for (unsigned k = 0; k < args[i].count; k++) {
			const char *o = imap_arg_atom(&args[i].list[k]);
			size_t j;
			for (j = 0; o != NULL && j < sizeof(opts) / sizeof(opts[0]); j++) {
				if (str_ieq(o, opts[j].name))
					break;
			}
			if (o == NULL || j == sizeof(opts) / sizeof(opts[0])) {
				*error_r = "Unknown RETURN option";
				return -1;
			}
			ret |= opts[j].bit;
		}
		if (args[i].count == 0)
			ret |= IMAP_SEARCH_RET_ALL;
		*ret_r = ret;
		i++;
	}
	if (i < count && (s = imap_arg_atom(&args[i])) != NULL && str_ieq(s, "CHARSET")) {
		i++;
		const char *cs = i < count ? imap_arg_astring(&args[i]) : NULL;
		if (cs == NULL) {
			*error_r = "Missing CHARSET";
			return -1;
		}
		if (!str_ieq(cs, "UTF-8") && !str_ieq(cs, "US-ASCII")) {
			*badcharset_r = true;
			*error_r = "Unsupported charset";
			return -1;
		}
		i++;
	}
	return (int)i;
}
