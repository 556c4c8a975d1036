/*
 * tm_custom.c: the Siddhi subset of custom rate-limit policies (see
 * tm_custom.h).
 *
 * The query is cut into tokens (identifiers, numbers, quoted strings,
 * operators), then read statement by statement. Errors name what was
 * expected and where, and end with the supported form.
 */
#include "trafficmanager/tm_custom.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TM_CUSTOM_TOKENS_MAX 1024

const char *const tm_custom_vars[] = {"userId",   "apiContext", "apiVersion",
				      "resourceKey", "appId",   "appTenant",
				      "apiTenant", "clientIp",  "apiName",
				      NULL};

#define SUPPORTED                                                                          \
	" Supported: FROM RequestStream SELECT ..., (<field> == '<value>' [and ...]) "    \
	"AS isEligible, ... INSERT INTO <stream>; FROM <stream>[isEligible==true]"         \
	"#throttler:timeBatch(<N> sec|min|hour|day|week|month|year) SELECT throttleKey, "  \
	"(count(<field>) >= <N>) AS isThrottled, expiryTimeStamp GROUP BY throttleKey "    \
	"INSERT ALL EVENTS INTO ResultStream; (isEligible may be 'true'; '>' admits one "  \
	"more than '>='); fields: userId, apiContext, apiVersion, resourceKey, appId, "    \
	"appTenant, apiTenant, clientIp, apiName"

enum { TK_IDENT, TK_NUM, TK_STR, TK_OP, TK_END };

typedef struct {
	int type;
	const char *p; /* into the query; strings: inside the quotes */
	size_t len;
	size_t at; /* offset in the query, for messages */
} tm_token;

typedef struct {
	tm_token t[TM_CUSTOM_TOKENS_MAX + 1];
	size_t n;
	size_t i;
	const char *q;
	char *err;
	size_t errlen;
} tm_parser;

static apim_rc fail(tm_parser *ps, size_t tok, const char *fmt, ...)
{
	char what[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	const tm_token *t = &ps->t[tok < ps->n ? tok : ps->n];
	if (t->type == TK_END)
		snprintf(ps->err, ps->errlen, "'siddhiQuery': %s at the end of the query.%s", what,
			 SUPPORTED);
	else
		snprintf(ps->err, ps->errlen, "'siddhiQuery': %s at '%.24s' (offset %zu).%s",
			 what, ps->q + t->at, t->at, SUPPORTED);
	return APIM_EINVAL;
}

static apim_rc tokenize(tm_parser *ps)
{
	const char *q = ps->q, *s = q;
	ps->n = 0;
	for (;;) {
		while (isspace((unsigned char)*s))
			s++;
		if (s[0] == '-' && s[1] == '-') { /* a comment to the end of the line */
			while (*s != '\0' && *s != '\n')
				s++;
			continue;
		}
		if (ps->n == TM_CUSTOM_TOKENS_MAX) {
			snprintf(ps->err, ps->errlen, "'siddhiQuery' is too long (over %d tokens).%s",
				 TM_CUSTOM_TOKENS_MAX, SUPPORTED);
			return APIM_EINVAL;
		}
		tm_token *t = &ps->t[ps->n];
		t->at = (size_t)(s - q);
		t->p = s;
		if (*s == '\0') {
			t->type = TK_END;
			t->len = 0;
			return APIM_OK;
		}
		if (isalpha((unsigned char)*s) || *s == '_') {
			while (isalnum((unsigned char)*s) || *s == '_')
				s++;
			t->type = TK_IDENT;
		} else if (isdigit((unsigned char)*s)) {
			while (isdigit((unsigned char)*s))
				s++;
			t->type = TK_NUM;
		} else if (*s == '\'' || *s == '"') {
			char quote = *s++;
			t->p = s;
			while (*s != '\0' && *s != quote)
				s++;
			if (*s == '\0') {
				snprintf(ps->err, ps->errlen,
					 "'siddhiQuery': a string opened at offset %zu is not "
					 "closed.%s",
					 t->at, SUPPORTED);
				return APIM_EINVAL;
			}
			t->type = TK_STR;
			t->len = (size_t)(s - t->p);
			s++;
			ps->n++;
			continue;
		} else {
			t->type = TK_OP;
			if ((s[0] == '=' || s[0] == '!' || s[0] == '>' || s[0] == '<') && s[1] == '=')
				s += 2;
			else
				s++;
		}
		t->len = (size_t)(s - t->p);
		ps->n++;
	}
}

static const tm_token *cur(tm_parser *ps)
{
	return &ps->t[ps->i];
}

static int is_kw(const tm_token *t, const char *kw)
{
	return t->type == TK_IDENT && strlen(kw) == t->len && strncasecmp(t->p, kw, t->len) == 0;
}

static int is_op(const tm_token *t, const char *op)
{
	return t->type == TK_OP && strlen(op) == t->len && strncmp(t->p, op, t->len) == 0;
}

static int accept_kw(tm_parser *ps, const char *kw)
{
	if (!is_kw(cur(ps), kw))
		return 0;
	ps->i++;
	return 1;
}

static int accept_op(tm_parser *ps, const char *op)
{
	if (!is_op(cur(ps), op))
		return 0;
	ps->i++;
	return 1;
}

static apim_rc expect_kw(tm_parser *ps, const char *kw)
{
	return accept_kw(ps, kw) ? APIM_OK : fail(ps, ps->i, "expected '%s'", kw);
}

static apim_rc expect_op(tm_parser *ps, const char *op)
{
	return accept_op(ps, op) ? APIM_OK : fail(ps, ps->i, "expected '%s'", op);
}

static int var_index(const tm_token *t)
{
	for (int i = 0; t->type == TK_IDENT && tm_custom_vars[i] != NULL; i++)
		if (strlen(tm_custom_vars[i]) == t->len &&
		    strncmp(tm_custom_vars[i], t->p, t->len) == 0)
			return i;
	return -1;
}

/* a positive decimal integer token */
static int64_t number(const tm_token *t)
{
	if (t->type != TK_NUM || t->len > 15)
		return -1;
	return strtoll(t->p, NULL, 10);
}

/* the end of the select item that starts at token from: the next ',' or
 * the keyword stop outside parentheses */
static size_t item_end(tm_parser *ps, size_t from, const char *stop)
{
	int depth = 0;
	size_t i;
	for (i = from; ps->t[i].type != TK_END; i++) {
		const tm_token *t = &ps->t[i];
		if (is_op(t, "(") || is_op(t, "["))
			depth++;
		else if (is_op(t, ")") || is_op(t, "]"))
			depth--;
		else if (depth == 0 && (is_op(t, ",") || is_kw(t, stop)))
			break;
	}
	return i;
}

/* eligibility: [a, b) is `true`, `field == 'v'`, `( ... )` or `x and y` */
static apim_rc cond_parse(tm_parser *ps, size_t a, size_t b, tm_custom_rule *r)
{
	/* top-level "and" splits */
	int depth = 0;
	for (size_t i = a; i < b; i++) {
		if (is_op(&ps->t[i], "("))
			depth++;
		else if (is_op(&ps->t[i], ")"))
			depth--;
		else if (depth == 0 && is_kw(&ps->t[i], "and")) {
			apim_rc rc = cond_parse(ps, a, i, r);
			return rc != APIM_OK ? rc : cond_parse(ps, i + 1, b, r);
		} else if (depth == 0 && (is_kw(&ps->t[i], "or") || is_kw(&ps->t[i], "not")))
			return fail(ps, i, "'%.*s' is not supported in isEligible (only 'and')",
				    (int)ps->t[i].len, ps->t[i].p);
	}
	if (b <= a)
		return fail(ps, a, "expected a condition");
	if (is_op(&ps->t[a], "(")) {
		/* only when those parentheses enclose it all */
		size_t i;
		depth = 0;
		for (i = a; i < b; i++) {
			if (is_op(&ps->t[i], "("))
				depth++;
			else if (is_op(&ps->t[i], ")") && --depth == 0)
				break;
		}
		if (i == b - 1)
			return cond_parse(ps, a + 1, b - 1, r);
	}
	if (b - a == 1 && is_kw(&ps->t[a], "true"))
		return APIM_OK;
	if (b - a != 3 || !is_op(&ps->t[a + 1], "=="))
		return fail(ps, a,
			    "isEligible must be 'true' or comparisons <field> == '<value>' joined "
			    "by 'and'");
	const tm_token *f = &ps->t[a], *v = &ps->t[a + 2];
	if (f->type == TK_STR) {
		const tm_token *x = f;
		f = v;
		v = x;
	}
	int var = var_index(f);
	if (var < 0)
		return fail(ps, f == &ps->t[a] ? a : a + 2, "unknown field '%.*s'", (int)f->len,
			    f->p);
	if (v->type != TK_STR)
		return fail(ps, a, "a field compares to a quoted literal");
	if (v->len >= TM_CUSTOM_VALUE_MAX)
		return fail(ps, a, "a literal longer than %d characters", TM_CUSTOM_VALUE_MAX - 1);
	if (r->nconds == TM_CUSTOM_MAX_CONDS)
		return fail(ps, a, "more than %d comparisons", TM_CUSTOM_MAX_CONDS);
	tm_custom_cond *c = &r->conds[r->nconds++];
	c->var = var;
	memcpy(c->value, v->p, v->len);
	c->value[v->len] = '\0';
	return APIM_OK;
}

/* SELECT items up to INSERT: item with alias `want` goes to handler */
typedef apim_rc (*item_fn)(tm_parser *ps, size_t a, size_t b, tm_custom_rule *r);

static apim_rc select_parse(tm_parser *ps, const char *want, item_fn fn, const char *stop,
			    tm_custom_rule *r)
{
	int found = 0;
	for (;;) {
		size_t a = ps->i, b = item_end(ps, a, stop);
		if (b == a)
			return fail(ps, a, "expected a select item");
		if (b - a == 1 && ps->t[a].type == TK_IDENT) {
			/* a bare attribute */
		} else if (b - a >= 3 && is_kw(&ps->t[b - 2], "as") && ps->t[b - 1].type == TK_IDENT) {
			if (is_kw(&ps->t[b - 1], want)) {
				apim_rc rc = fn(ps, a, b - 2, r);
				if (rc != APIM_OK)
					return rc;
				found = 1;
			} else if (!is_kw(&ps->t[b - 1], "throttleKey")) {
				return fail(ps, b - 1, "unsupported select item '%.*s'",
					    (int)ps->t[b - 1].len, ps->t[b - 1].p);
			}
			/* "... AS throttleKey": the key template is what counts */
		} else {
			return fail(ps, a, "unsupported select item");
		}
		ps->i = b;
		if (!accept_op(ps, ","))
			break;
	}
	if (!found)
		return fail(ps, ps->i, "no select item AS %s", want);
	return APIM_OK;
}

/* (count(<field>) >= N) or count(<field>) > N */
static apim_rc throttled_parse(tm_parser *ps, size_t a, size_t b, tm_custom_rule *r)
{
	if (b - a >= 2 && is_op(&ps->t[a], "(") && is_op(&ps->t[b - 1], ")")) {
		a++;
		b--;
	}
	/* count ( field ) op N */
	if (b - a != 6 || !is_kw(&ps->t[a], "count") || !is_op(&ps->t[a + 1], "(") ||
	    ps->t[a + 2].type != TK_IDENT || !is_op(&ps->t[a + 3], ")"))
		return fail(ps, a, "isThrottled must be (count(<field>) >= <N>)");
	const tm_token *op = &ps->t[a + 4];
	int64_t n = number(&ps->t[a + 5]);
	if (n < 0 || (!is_op(op, ">=") && !is_op(op, ">")))
		return fail(ps, a + 4, "isThrottled must be (count(<field>) >= <N>) or > <N>");
	if (is_op(op, ">"))
		n++; /* count > N: the (N+2)th is the first refused */
	if (n < 1)
		return fail(ps, a + 5, "the limit must be at least 1");
	r->limit = n;
	return APIM_OK;
}

static int64_t unit_ms(const tm_token *t)
{
	static const struct {
		const char *name;
		int64_t ms;
	} units[] = {{"sec", 1000},          {"secs", 1000},          {"second", 1000},
		     {"seconds", 1000},      {"min", 60000},          {"mins", 60000},
		     {"minute", 60000},      {"minutes", 60000},      {"hour", 3600000},
		     {"hours", 3600000},     {"day", 86400000},       {"days", 86400000},
		     {"week", 604800000},    {"weeks", 604800000},    {"month", 2592000000LL},
		     {"months", 2592000000LL}, {"year", 31536000000LL}, {"years", 31536000000LL}};
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (is_kw(t, units[i].name))
			return units[i].ms;
	return 0;
}

apim_rc tm_custom_parse(const char *query, tm_custom_rule *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (query == NULL) {
		snprintf(err, errlen, "'siddhiQuery' is required");
		return APIM_EINVAL;
	}
	tm_parser *ps = calloc(1, sizeof(*ps));
	if (ps == NULL)
		return APIM_ENOMEM;
	ps->q = query;
	ps->err = err;
	ps->errlen = errlen;
	apim_rc rc = tokenize(ps);
	if (rc != APIM_OK)
		goto out;

	/* FROM RequestStream SELECT ... INSERT INTO <stream>; */
	if ((rc = expect_kw(ps, "from")) != APIM_OK)
		goto out;
	if (!accept_kw(ps, "RequestStream")) {
		rc = fail(ps, ps->i, "the first statement reads RequestStream");
		goto out;
	}
	if ((rc = expect_kw(ps, "select")) != APIM_OK ||
	    (rc = select_parse(ps, "isEligible", cond_parse, "insert", out)) != APIM_OK ||
	    (rc = expect_kw(ps, "insert")) != APIM_OK || (rc = expect_kw(ps, "into")) != APIM_OK)
		goto out;
	const tm_token *stream = cur(ps);
	if (stream->type != TK_IDENT) {
		rc = fail(ps, ps->i, "expected a stream name");
		goto out;
	}
	ps->i++;
	if ((rc = expect_op(ps, ";")) != APIM_OK)
		goto out;

	/* FROM <stream>[isEligible==true]#throttler:timeBatch(N unit) */
	if ((rc = expect_kw(ps, "from")) != APIM_OK)
		goto out;
	if (cur(ps)->type != TK_IDENT || cur(ps)->len != stream->len ||
	    strncmp(cur(ps)->p, stream->p, stream->len) != 0) {
		rc = fail(ps, ps->i, "the second statement reads the stream the first inserts into "
				     "('%.*s')",
			  (int)stream->len, stream->p);
		goto out;
	}
	ps->i++;
	if ((rc = expect_op(ps, "[")) != APIM_OK || (rc = expect_kw(ps, "isEligible")) != APIM_OK ||
	    (rc = expect_op(ps, "==")) != APIM_OK || (rc = expect_kw(ps, "true")) != APIM_OK ||
	    (rc = expect_op(ps, "]")) != APIM_OK || (rc = expect_op(ps, "#")) != APIM_OK ||
	    (rc = expect_kw(ps, "throttler")) != APIM_OK || (rc = expect_op(ps, ":")) != APIM_OK ||
	    (rc = expect_kw(ps, "timeBatch")) != APIM_OK || (rc = expect_op(ps, "(")) != APIM_OK)
		goto out;
	int64_t n = number(cur(ps));
	if (n < 1 || n > INT32_MAX) {
		rc = fail(ps, ps->i, "timeBatch takes a positive number and a unit");
		goto out;
	}
	ps->i++;
	int64_t ms = unit_ms(cur(ps));
	if (ms == 0) {
		rc = fail(ps, ps->i, "timeBatch's unit must be sec, min, hour, day, week, month or "
				     "year");
		goto out;
	}
	ps->i++;
	out->window_ms = n * ms;
	if ((rc = expect_op(ps, ")")) != APIM_OK)
		goto out;

	/* SELECT ... GROUP BY throttleKey INSERT ALL EVENTS INTO ResultStream; */
	if ((rc = expect_kw(ps, "select")) != APIM_OK ||
	    (rc = select_parse(ps, "isThrottled", throttled_parse, "group", out)) != APIM_OK ||
	    (rc = expect_kw(ps, "group")) != APIM_OK || (rc = expect_kw(ps, "by")) != APIM_OK ||
	    (rc = expect_kw(ps, "throttleKey")) != APIM_OK ||
	    (rc = expect_kw(ps, "insert")) != APIM_OK)
		goto out;
	if (accept_kw(ps, "all") && (rc = expect_kw(ps, "events")) != APIM_OK)
		goto out;
	if ((rc = expect_kw(ps, "into")) != APIM_OK)
		goto out;
	if (!accept_kw(ps, "ResultStream")) {
		rc = fail(ps, ps->i, "the result goes to ResultStream");
		goto out;
	}
	accept_op(ps, ";");
	if (cur(ps)->type != TK_END) {
		rc = fail(ps, ps->i, "unexpected text after the second statement");
		goto out;
	}
	rc = APIM_OK;
out:
	free(ps);
	if (rc != APIM_OK && rc != APIM_ENOMEM) {
		tm_custom_rule z = {0};
		*out = z;
	}
	return rc;
}

apim_rc tm_custom_template_check(const char *tmpl, char *err, size_t errlen)
{
	const char *p = tmpl;
	if (p == NULL || *p == '\0') {
		snprintf(err, errlen, "'keyTemplate' must not be empty (e.g. $userId)");
		return APIM_EINVAL;
	}
	for (;;) {
		const char *e = strchr(p, ':');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (len > 0 && *p == '$') {
			int ok = 0;
			for (size_t i = 0; tm_custom_vars[i] != NULL && !ok; i++)
				ok = strlen(tm_custom_vars[i]) == len - 1 &&
				     strncmp(tm_custom_vars[i], p + 1, len - 1) == 0;
			if (!ok) {
				snprintf(err, errlen,
					 "'keyTemplate': '%.*s' is not supported in custom policies; "
					 "use $userId, $apiContext, $apiVersion, $resourceKey, $appId, "
					 "$appTenant, $apiTenant, $clientIp, $apiName or literal text",
					 (int)len, p);
				return APIM_EINVAL;
			}
		}
		if (e == NULL)
			return APIM_OK;
		p = e + 1;
	}
}

json_t *tm_custom_rule_json(const tm_custom_rule *rule, const char *key_template)
{
	json_t *conds = json_array();
	for (size_t i = 0; conds != NULL && i < rule->nconds; i++)
		json_array_append_new(conds, json_pack("{s:s, s:s}", "field",
						       tm_custom_vars[rule->conds[i].var],
						       "value", rule->conds[i].value));
	return json_pack("{s:o?, s:I, s:I, s:s}", "conditions", conds, "limit",
			 (json_int_t)rule->limit, "windowMs", (json_int_t)rule->window_ms,
			 "keyTemplate", key_template);
}
