/*
 * publisher_dto.c: validation and normalisation of the Publisher's API
 * object.
 *
 * One table (api_fields) lists every field of the reference's API object
 * with its JSON type and how it is treated: validated and normalised here,
 * passed through (type-checked only: fields the reference has that this
 * implementation stores but does not act on), or read-only (ignored on
 * input, filled by the server). A field outside the table is an error that
 * names it, so typos do not silently vanish. The table order is the order of
 * the fields in the stored document and in responses.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "publisher/publisher_internal.h"

#define MAX_CONTEXT 200
#define MAX_TEMPLATE 1000
#define MAX_URL 2048
#define MAX_ITEMS 1000

typedef enum { T_STRING, T_BOOL, T_INT, T_ARRAY, T_OBJECT, T_ANY } ftype;
typedef enum {
	K_CHECKED,   /* normalised by a function */
	K_IMMUTABLE, /* normalised; on update the stored value is kept */
	K_PASS,      /* type-checked and stored as given */
	K_READONLY   /* ignored on input; placeholder in the document */
} fkind;

typedef struct norm_ctx {
	char *err;
	size_t errlen;
	const json_t *all; /* the merged input */
} norm_ctx;

typedef int (*norm_fn)(norm_ctx *c, const char *name, const json_t *v, json_t *out);

typedef struct api_field {
	const char *name;
	ftype type;
	fkind kind;
	norm_fn norm;     /* K_CHECKED / K_IMMUTABLE */
	const char *dflt; /* JSON text when absent (K_PASS / K_READONLY), or NULL */
} api_field;

static int fail(norm_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(norm_ctx *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err, c->errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static int errf(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static const char *type_name(ftype t)
{
	switch (t) {
	case T_STRING: return "a string";
	case T_BOOL: return "a boolean (true or false)";
	case T_INT: return "an integer";
	case T_ARRAY: return "an array";
	case T_OBJECT: return "an object";
	case T_ANY: return "a value";
	}
	return "a value";
}

static int type_ok(ftype t, const json_t *v)
{
	switch (t) {
	case T_STRING: return json_is_string(v);
	case T_BOOL: return json_is_boolean(v);
	case T_INT: return json_is_integer(v);
	case T_ARRAY: return json_is_array(v);
	case T_OBJECT: return json_is_object(v);
	case T_ANY: return 1;
	}
	return 0;
}

static int has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	return 0;
}

/* ---------- context, URL template, endpoint URL ---------- */

int publisher_dto_context(const char *in, char *out, size_t outlen, char *err, size_t errlen)
{
	size_t n = strlen(in);
	if (n == 0)
		return errf(err, errlen, "'context' must not be empty: give a path such as /pizza");
	if (n + 2 > outlen || n > MAX_CONTEXT)
		return errf(err, errlen, "'context' is longer than %d characters", MAX_CONTEXT);
	size_t o = 0;
	if (in[0] != '/')
		out[o++] = '/';
	memcpy(out + o, in, n + 1);
	o += n;
	while (o > 1 && out[o - 1] == '/')
		out[--o] = '\0';
	if (strlen(out) > MAX_CONTEXT)
		return errf(err, errlen, "'context' is longer than %d characters", MAX_CONTEXT);
	if (strcmp(out, "/") == 0)
		return errf(err, errlen, "'context' must name a path below /, such as /pizza");
	int versions = 0;
	for (const char *p = out; *p; p++) {
		char ch = *p;
		if (ch == '{') {
			if (strncmp(p, "{version}", 9) != 0)
				return errf(err, errlen,
					    "'context' %s: braces are only allowed as {version}", out);
			versions++;
			p += 8;
			continue;
		}
		if (ch == '/' && p[1] == '/')
			return errf(err, errlen, "'context' %s must not contain //", out);
		if (!(isalnum((unsigned char)ch) || ch == '_' || ch == '/' || ch == '.' || ch == '-'))
			return errf(err, errlen,
				    "'context' %s contains '%c': use only letters, digits and _ . - / "
				    "(and {version})",
				    out, ch);
	}
	if (versions > 1)
		return errf(err, errlen, "'context' %s may contain {version} only once", out);
	/* the gateway answers /_apim/... itself (health, metrics) */
	if (strncmp(out, "/_apim", 6) == 0 && (out[6] == '\0' || out[6] == '/'))
		return errf(err, errlen, "'context' %s is reserved: the gateway serves /_apim itself",
			    out);
	/* "." and ".." segments would be rewritten by clients and proxies. */
	for (const char *p = out; *p; p++) {
		if (*p != '/')
			continue;
		const char *s = p + 1;
		size_t len = strcspn(s, "/");
		if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
			return errf(err, errlen, "'context' %s must not contain . or .. segments",
				    out);
	}
	return 0;
}

static int literal_char(char ch)
{
	return isalnum((unsigned char)ch) || strchr("-._~!$&'()+,;=:@%", ch) != NULL;
}

int publisher_dto_template(const char *t, char *err, size_t errlen)
{
	size_t n = strlen(t);
	char names[32][64];
	size_t nnames = 0;
	if (n == 0 || t[0] != '/')
		return errf(err, errlen, "must start with / (for example /menu/{id})");
	if (n > MAX_TEMPLATE)
		return errf(err, errlen, "is longer than %d characters", MAX_TEMPLATE);
	for (size_t i = 0; i < n; i++) {
		char ch = t[i];
		if (ch == ' ' || (unsigned char)ch < 0x20 || ch == 0x7f)
			return errf(err, errlen, "must not contain spaces or control characters");
		if (ch == '?' || ch == '#')
			return errf(err, errlen,
				    "must not contain a query string or fragment ('%c'): give only "
				    "the path",
				    ch);
	}
	for (size_t i = 0; i < n; i++) {
		char ch = t[i];
		if (ch == '/') {
			if (t[i + 1] == '/')
				return errf(err, errlen, "must not contain //");
			const char *s = t + i + 1;
			size_t len = strcspn(s, "/");
			if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
				return errf(err, errlen, "must not contain . or .. segments");
			continue;
		}
		if (ch == '*') {
			if (i != n - 1 || t[i - 1] != '/')
				return errf(err, errlen,
					    "may use the wildcard * only as the whole last segment "
					    "(/*)");
			continue;
		}
		if (ch == '{') {
			size_t j = i + 1;
			while (j < n && t[j] != '}' && t[j] != '{' && t[j] != '/')
				j++;
			if (j >= n || t[j] != '}')
				return errf(err, errlen, "has an unclosed '{': parameters look like {id}");
			size_t len = j - i - 1;
			if (len == 0)
				return errf(err, errlen, "has an empty parameter {}");
			if (len >= sizeof(names[0]))
				return errf(err, errlen, "has a parameter name longer than 63 characters");
			for (size_t k = i + 1; k < j; k++) {
				char c2 = t[k];
				if (!(isalnum((unsigned char)c2) || c2 == '_' || c2 == '.' || c2 == '-'))
					return errf(err, errlen,
						    "has parameter {%.*s}: names use letters, digits, "
						    "_ . and -",
						    (int)len, t + i + 1);
			}
			for (size_t k = 0; k < nnames; k++)
				if (strlen(names[k]) == len && strncmp(names[k], t + i + 1, len) == 0)
					return errf(err, errlen, "uses parameter {%.*s} twice",
						    (int)len, t + i + 1);
			if (nnames < 32) {
				memcpy(names[nnames], t + i + 1, len);
				names[nnames][len] = '\0';
				nnames++;
			}
			i = j;
			continue;
		}
		if (ch == '}')
			return errf(err, errlen, "has a '}' without a matching '{'");
		if (ch == '%') {
			if (i + 2 >= n || !isxdigit((unsigned char)t[i + 1]) ||
			    !isxdigit((unsigned char)t[i + 2]))
				return errf(err, errlen, "has a '%%' that is not a %%XX escape");
			continue;
		}
		if (!literal_char(ch))
			return errf(err, errlen, "contains '%c', which is not allowed in a path", ch);
	}
	return 0;
}

int publisher_dto_url(const char *url, char *err, size_t errlen)
{
	size_t n = strlen(url);
	const char *p;
	if (n > MAX_URL)
		return errf(err, errlen, "is longer than %d characters", MAX_URL);
	if (strncasecmp(url, "http://", 7) == 0)
		p = url + 7;
	else if (strncasecmp(url, "https://", 8) == 0)
		p = url + 8;
	else
		return errf(err, errlen, "'%s' must be an http:// or https:// URL", url);
	for (const char *q = url; *q; q++)
		if (isspace((unsigned char)*q) || (unsigned char)*q < 0x20 || *q == 0x7f)
			return errf(err, errlen, "'%s' must not contain spaces", url);
	size_t hl = strcspn(p, "/?#");
	if (hl == 0)
		return errf(err, errlen, "'%s' has no host", url);
	/* userinfo is not allowed: credentials belong in endpoint security */
	if (memchr(p, '@', hl) != NULL)
		return errf(err, errlen, "'%s' must not carry user:password@ credentials", url);
	const char *h = p, *he = p + hl;
	if (*h == '[') {
		const char *rb = memchr(h, ']', hl);
		if (rb == NULL)
			return errf(err, errlen, "'%s' has an unclosed IPv6 address", url);
		for (const char *q = h + 1; q < rb; q++)
			if (!(isxdigit((unsigned char)*q) || *q == ':' || *q == '.'))
				return errf(err, errlen, "'%s' has a malformed IPv6 address", url);
		h = rb + 1;
	} else {
		const char *colon = memchr(h, ':', hl);
		const char *hend = colon ? colon : he;
		if (hend == h)
			return errf(err, errlen, "'%s' has no host", url);
		for (const char *q = h; q < hend; q++)
			if (!(isalnum((unsigned char)*q) || *q == '.' || *q == '-' || *q == '_' ||
			      *q == '{' || *q == '}'))
				return errf(err, errlen, "'%s' has an invalid host name", url);
		h = hend;
	}
	if (h < he) {
		if (*h != ':' || h + 1 == he)
			return errf(err, errlen, "'%s' has a malformed port", url);
		long port = 0;
		for (const char *q = h + 1; q < he; q++) {
			if (!isdigit((unsigned char)*q))
				return errf(err, errlen, "'%s' has a malformed port", url);
			port = port * 10 + (*q - '0');
			if (port > 65535)
				return errf(err, errlen, "'%s' has a port above 65535", url);
		}
		if (port == 0)
			return errf(err, errlen, "'%s' has port 0", url);
	}
	return 0;
}

const char *publisher_dto_auth_type(const char *s)
{
	if (strcasecmp(s, "Any") == 0 || strcasecmp(s, "Application & Application User") == 0 ||
	    strcasecmp(s, "Application_&_Application_User") == 0)
		return "Any";
	if (strcasecmp(s, "Application") == 0)
		return "Application";
	if (strcasecmp(s, "Application User") == 0 || strcasecmp(s, "Application_User") == 0)
		return "Application User";
	if (strcasecmp(s, "None") == 0)
		return "None";
	return NULL;
}

static const char *const verbs[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"};

int publisher_dto_verb(const char *verb)
{
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (strcmp(verb, verbs[i]) == 0)
			return 1;
	return 0;
}

char *publisher_dto_context_template(arena *pool, const char *context)
{
	if (strstr(context, "{version}") != NULL)
		return arena_strdup(pool, context);
	return arena_sprintf(pool, "%s/{version}", context);
}

char *publisher_dto_full_context(arena *pool, const char *tmpl, const char *version)
{
	const char *v = strstr(tmpl, "{version}");
	if (v == NULL)
		return arena_strdup(pool, tmpl);
	return arena_sprintf(pool, "%.*s%s%s", (int)(v - tmpl), tmpl, version, v + 9);
}

json_t *publisher_dto_default_operations(void)
{
	static const char *const dv[] = {"GET", "PUT", "POST", "DELETE", "PATCH"};
	json_t *ops = json_array();
	for (size_t i = 0; i < sizeof(dv) / sizeof(dv[0]); i++)
		json_array_append_new(ops, json_pack("{s:s, s:s, s:s, s:s, s:s, s:[]}", "id", "",
						     "target", "/*", "verb", dv[i], "authType",
						     "Any", "throttlingPolicy", "Unlimited",
						     "scopes"));
	return ops;
}

/* ---------- small normalisers ---------- */

/* A string array: each a non-empty string without control characters (at
 * most maxlen long), duplicates dropped. */
static int string_array(norm_ctx *c, const char *name, const json_t *v, size_t maxlen,
			int lower, json_t **out)
{
	json_t *a = json_array();
	size_t i;
	json_t *e;
	if (json_array_size(v) > MAX_ITEMS) {
		json_decref(a);
		return fail(c, "'%s' has more than %d items", name, MAX_ITEMS);
	}
	json_array_foreach(v, i, e) {
		if (!json_is_string(e)) {
			json_decref(a);
			return fail(c, "'%s[%zu]' must be a string", name, i);
		}
		const char *s = json_string_value(e);
		if (*s == '\0' || strlen(s) > maxlen || has_ctl(s)) {
			json_decref(a);
			return fail(c, "'%s[%zu]' must be a non-empty string of at most %zu characters",
				    name, i, maxlen);
		}
		char buf[256];
		if (lower && strlen(s) < sizeof(buf)) {
			size_t k;
			for (k = 0; s[k]; k++)
				buf[k] = (char)tolower((unsigned char)s[k]);
			buf[k] = '\0';
			s = buf;
		}
		int dup = 0;
		size_t j;
		json_t *x;
		json_array_foreach(a, j, x)
			if (strcmp(json_string_value(x), s) == 0)
				dup = 1;
		if (!dup)
			json_array_append_new(a, json_string(s));
	}
	*out = a;
	return 0;
}

static int norm_name(norm_ctx *c, const char *name, const json_t *v, json_t *out)
{
	if (v == NULL)
		return fail(c, "'name' is required");
	const char *s = json_string_value(v);
	size_t n = strlen(s);
	if (n == 0 || n > 60)
		return fail(c, "'name' must be 1 to 60 characters long");
	if (isspace((unsigned char)s[0]) || isspace((unsigned char)s[n - 1]) || has_ctl(s))
		return fail(c, "'name' must not start or end with spaces");
	const char *bad = strpbrk(s, "~!@#;:%^*()+={}|\\<>\"',&$[]/");
	if (bad != NULL)
		return fail(c, "'name' %s contains '%c': names may not use ~!@#;:%%^*()+={}|\\<>\"',&$[]/",
			    s, *bad);
	json_object_set_new(out, name, json_string(s));
	return 0;
}

static int norm_context(norm_ctx *c, const char *name, const json_t *v, json_t *out)
{
	char buf[MAX_CONTEXT + 8];
	if (v == NULL)
		return fail(c, "'context' is required (for example /pizza)");
	if (publisher_dto_context(json_string_value(v), buf, sizeof(buf), c->err, c->errlen) != 0)
		return -1;
	json_object_set_new(out, name, json_string(buf));
	return 0;
}

static int norm_version(norm_ctx *c, const char *name, const json_t *v, json_t *out)
{
	if (v == NULL)
		return fail(c, "'version' is required (for example 1.0.0)");
	const char *s = json_string_value(v);
	size_t n = strlen(s);
	if (n == 0 || n > 30)
		return fail(c, "'version' must be 1 to 30 characters long");
	for (const char *p = s; *p; p++)
		if (!(isalnum((unsigned char)*p) || *p == '.' || *p == '_' || *p == '-'))
			return fail(c, "'version' %s contains '%c': use only letters, digits and . _ -",
				    s, *p);
	if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return fail(c, "'version' must not be . or ..");
	json_object_set_new(out, name, json_string(s));
	return 0;
}

static int norm_provider(norm_ctx *c, const char *name, const json_t *v, json_t *out)
{
	if (v == NULL) {
		json_object_set_new(out, name, json_null()); /* the caller fills it */
		return 0;
	}
	const char *s = json_string_value(v);
	size_t n = strlen(s);
	if (n == 0 || n > 100 || has_ctl(s) || strchr(s, ' ') != NULL)
		return fail(c, "'provider' must be a user name (1 to 100 characters, no spaces)");
	json_object_set_new(out, name, json_string(s));
	return 0;
}

static int norm_description(norm_ctx *c, const char *name, const json_t *v, json_t *out)
{
	if (v != NULL && strlen(json_string_value(v)) > 32766)
		return fail(c, "'description' is longer than 32766 characters");
	json_object_set_new(out, name, v ? json_string(json_string_value(v)) : json_null());
	return 0;
}

static int norm_type(norm_ctx *c, const char *name, const json_t *v, json_t *out)
{
	static const char *const others[] = {"WS",    "SOAPTOREST", "SOAP",    "GRAPHQL",
					     "WEBSUB", "SSE",       "WEBHOOK", "ASYNC"};
	const char *s = v ? json_string_value(v) : "HTTP";
	if (strcasecmp(s, "HTTP") == 0) {
		json_object_set_new(out, name, json_string("HTTP"));
		return 0;
	}
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
		if (strcasecmp(s, others[i]) == 0)
			return fail(c, "API type %s is not supported: only HTTP (REST) APIs can be "
				       "created",
				    others[i]);
	return fail(c, "'type' %s is unknown: use HTTP", s);
}

static int norm_transport(norm_ctx *c, const char *name, const json_t *v, json_t *out)
{
	json_t *a;
	if (v == NULL) {
		json_object_set_new(out, name, json_pack("[s,s]", "http", "https"));
		return 0;
	}
	if (string_array(c, name, v, 10, 1, &a) != 0)
		return -1;
	size_t i;
	json_t *e;
	json_array_foreach(a, i, e) {
		const char *s = json_string_value(e);
		if (strcmp(s, "http") != 0 && strcmp(s, "https") != 0) {
			int rc = fail(c, "'transport' may list only http and https, not %s", s);
			json_decref(a);
			return rc;
		}
	}
	if (json_array_size(a) == 0) {
		json_decref(a);
		return fail(c, "'transport' must list http, https or both");
	}
	json_object_set_new(out, name, a);
	return 0;
}

static int norm_strings(norm_ctx *c, const char *name, const json_t *v, json_t *out)
{
	json_t *a;
	if (v == NULL) {
		json_object_set_new(out, name, json_array());
		return 0;
	}
	if (string_array(c, name, v, 255, 0, &a) != 0)
		return -1;
	json_object_set_new(out, name, a);
	return 0;
}

static int norm_policy_name(norm_ctx *c, const char *name, const json_t *v, json_t *out)
{
	if (v == NULL) {
		json_object_set_new(out, name, json_null());
		return 0;
	}
	const char *s = json_string_value(v);
	if (*s == '\0') { /* the reference's UIs send "" for "none" */
		json_object_set_new(out, name, json_null());
		return 0;
	}
	if (strlen(s) > 255 || has_ctl(s))
		return fail(c, "'%s' must be a policy name of at most 255 characters", name);
	json_object_set_new(out, name, json_string(s));
	return 0;
}

static int norm_security(norm_ctx *c, const char *name, const json_t *v, json_t *out)
{
	static const char *const ok[] = {"oauth2", "api_key", "basic_auth",
					 "oauth_basic_auth_api_key_mandatory"};
	json_t *a;
	if (v == NULL) {
		json_object_set_new(out, name,
				    json_pack("[s,s]", "oauth2", "oauth_basic_auth_api_key_mandatory"));
		return 0;
	}
	if (string_array(c, name, v, 64, 0, &a) != 0)
		return -1;
	int auth = 0;
	size_t i;
	json_t *e;
	json_array_foreach(a, i, e) {
		const char *s = json_string_value(e);
		int known = 0;
		for (size_t k = 0; k < sizeof(ok) / sizeof(ok[0]); k++)
			if (strcmp(s, ok[k]) == 0)
				known = 1;
		if (!known) {
			int rc = strncmp(s, "mutualssl", 9) == 0
					 ? fail(c, "'securityScheme' %s (mutual TLS) is not supported; "
						   "use oauth2, api_key or basic_auth",
						s)
					 : fail(c, "'securityScheme' %s is unknown: use oauth2, api_key, "
						   "basic_auth and optionally "
						   "oauth_basic_auth_api_key_mandatory",
						s);
			json_decref(a);
			return rc;
		}
		if (strcmp(s, "oauth_basic_auth_api_key_mandatory") != 0)
			auth = 1;
	}
	if (!auth) {
		json_decref(a);
		return fail(c, "'securityScheme' must include at least one of oauth2, api_key, "
			       "basic_auth");
	}
	json_object_set_new(out, name, a);
	return 0;
}

static int norm_max_tps(norm_ctx *c, const char *name, const json_t *v, json_t *out)
{
	if (v == NULL) {
		json_object_set_new(out, name, json_null());
		return 0;
	}
	json_t *o = json_object();
	const char *k;
	json_t *e;
	json_object_foreach((json_t *)v, k, e) {
		if (json_is_null(e))
			continue;
		if (strcmp(k, "production") == 0 || strcmp(k, "sandbox") == 0) {
			if (!json_is_integer(e) || json_integer_value(e) < 0) {
				json_decref(o);
				return fail(c, "'maxTps.%s' must be a non-negative integer", k);
			}
		} else if (strcmp(k, "productionTimeUnit") == 0 || strcmp(k, "sandboxTimeUnit") == 0) {
			const char *u = json_string_value(e);
			if (u == NULL || (strcmp(u, "SECOND") != 0 && strcmp(u, "MINUTE") != 0 &&
					  strcmp(u, "HOUR") != 0)) {
				json_decref(o);
				return fail(c, "'maxTps.%s' must be SECOND, MINUTE or HOUR", k);
			}
		} else {
			json_decref(o);
			return fail(c, "'maxTps.%s' is not a known field: use production and sandbox",
				    k);
		}
		json_object_set(o, k, e);
	}
	json_object_set_new(out, name, o);
	return 0;
}

static int norm_visibility(norm_ctx *c, const char *name, const json_t *v, json_t *out)
{
	static const char *const ok[] = {"PUBLIC", "PRIVATE", "RESTRICTED"};
	const char *s = v ? json_string_value(v) : "PUBLIC";
	for (size_t i = 0; i < 3; i++) {
		if (strcasecmp(s, ok[i]) == 0) {
			json_object_set_new(out, name, json_string(ok[i]));
			return 0;
		}
	}
	return fail(c, "'visibility' %s is unknown: use PUBLIC, PRIVATE or RESTRICTED", s);
}

static int norm_bool_false(norm_ctx *c, const char *name, const json_t *v, json_t *out)
{
	(void)c;
	json_object_set_new(out, name, json_boolean(v != NULL && json_is_true(v)));
	return 0;
}

static int norm_cors(norm_ctx *c, const char *name, const json_t *v, json_t *out)
{
	json_t *o = json_pack("{s:b, s:[s], s:b, s:[s,s,s,s,s,s], s:[s,s,s,s,s,s]}",
			      "corsConfigurationEnabled", 0, "accessControlAllowOrigins", "*",
			      "accessControlAllowCredentials", 0, "accessControlAllowHeaders",
			      "authorization", "Access-Control-Allow-Origin", "Content-Type",
			      "SOAPAction", "apikey", "Internal-Key", "accessControlAllowMethods",
			      "GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS");
	if (v == NULL) {
		json_object_set_new(out, name, o);
		return 0;
	}
	const char *k;
	json_t *e;
	json_object_foreach((json_t *)v, k, e) {
		char field[96];
		snprintf(field, sizeof(field), "corsConfiguration.%s", k);
		if (json_is_null(e))
			continue;
		if (strcmp(k, "corsConfigurationEnabled") == 0 ||
		    strcmp(k, "accessControlAllowCredentials") == 0) {
			if (!json_is_boolean(e)) {
				json_decref(o);
				return fail(c, "'%s' must be a boolean (true or false)", field);
			}
			json_object_set(o, k, e);
		} else if (strcmp(k, "accessControlAllowOrigins") == 0 ||
			   strcmp(k, "accessControlAllowHeaders") == 0 ||
			   strcmp(k, "accessControlAllowMethods") == 0) {
			json_t *a;
			if (!json_is_array(e)) {
				json_decref(o);
				return fail(c, "'%s' must be an array of strings", field);
			}
			int methods = strcmp(k, "accessControlAllowMethods") == 0;
			if (string_array(c, field, e, 255, 0, &a) != 0) {
				json_decref(o);
				return -1;
			}
			size_t i;
			json_t *x;
			json_array_foreach(a, i, x) {
				const char *s = json_string_value(x);
				if (methods) {
					char up[16];
					size_t n = strlen(s);
					if (n >= sizeof(up))
						n = sizeof(up) - 1;
					for (size_t j = 0; j < n; j++)
						up[j] = (char)toupper((unsigned char)s[j]);
					up[n] = '\0';
					if (!publisher_dto_verb(up)) {
						int rc = fail(c, "'%s[%zu]' %s is not an HTTP method",
							      field, i, s);
						json_decref(a);
						json_decref(o);
						return rc;
					}
					json_array_set_new(a, i, json_string(up));
				} else if (strcmp(k, "accessControlAllowOrigins") == 0 &&
					   strcmp(s, "*") != 0 && strncmp(s, "http://", 7) != 0 &&
					   strncmp(s, "https://", 8) != 0) {
					int rc = fail(c, "'%s[%zu]' %s must be * or an http(s):// origin",
						      field, i, s);
					json_decref(a);
					json_decref(o);
					return rc;
				}
			}
			json_object_set_new(o, k, a);
		} else {
			json_decref(o);
			return fail(c, "'%s' is not a known field of corsConfiguration", field);
		}
	}
	json_object_set_new(out, name, o);
	return 0;
}

/* ---------- endpointConfig ---------- */

/* One endpoint object {url, config, template_not_supported, endpoint_type}. */
static int endpoint_one(norm_ctx *c, const char *field, const json_t *e, json_t **out)
{
	if (!json_is_object(e))
		return fail(c, "'%s' must be an object {\"url\": \"https://...\"}", field);
	json_t *o = json_object();
	const char *k;
	json_t *x;
	json_object_foreach((json_t *)e, k, x) {
		if (strcmp(k, "url") == 0) {
			char uerr[384];
			if (!json_is_string(x)) {
				json_decref(o);
				return fail(c, "'%s.url' must be a string", field);
			}
			if (publisher_dto_url(json_string_value(x), uerr, sizeof(uerr)) != 0) {
				json_decref(o);
				return fail(c, "'%s.url' %s", field, uerr);
			}
			json_object_set(o, k, x);
		} else if (strcmp(k, "config") == 0) {
			if (!json_is_null(x) && !json_is_object(x)) {
				json_decref(o);
				return fail(c, "'%s.config' must be an object", field);
			}
			json_object_set(o, k, x);
		} else if (strcmp(k, "template_not_supported") == 0) {
			if (!json_is_boolean(x)) {
				json_decref(o);
				return fail(c, "'%s.template_not_supported' must be a boolean", field);
			}
			json_object_set(o, k, x);
		} else if (strcmp(k, "endpoint_type") == 0) {
			if (!json_is_string(x) || strcmp(json_string_value(x), "http") != 0) {
				json_decref(o);
				return fail(c, "'%s.endpoint_type' must be \"http\"", field);
			}
			json_object_set(o, k, x);
		} else {
			json_decref(o);
			return fail(c, "'%s.%s' is not a known endpoint field: use url (and config)",
				    field, k);
		}
	}
	if (json_object_get(o, "url") == NULL) {
		json_decref(o);
		return fail(c, "'%s.url' is required", field);
	}
	*out = o;
	return 0;
}

/* An endpoint list: an array of endpoint objects (one object is accepted
 * as a list of one). */
static int endpoint_list(norm_ctx *c, const char *field, const json_t *e, int allow_empty,
			 json_t **out)
{
	json_t *a = json_array(), *one;
	if (json_is_object(e)) {
		if (endpoint_one(c, field, e, &one) != 0) {
			json_decref(a);
			return -1;
		}
		json_array_append_new(a, one);
		*out = a;
		return 0;
	}
	if (!json_is_array(e)) {
		json_decref(a);
		return fail(c, "'%s' must be an array of {\"url\": ...} objects", field);
	}
	if (json_array_size(e) > 64) {
		json_decref(a);
		return fail(c, "'%s' has more than 64 endpoints", field);
	}
	size_t i;
	json_t *x;
	json_array_foreach(e, i, x) {
		char f2[96];
		snprintf(f2, sizeof(f2), "%s[%zu]", field, i);
		if (endpoint_one(c, f2, x, &one) != 0) {
			json_decref(a);
			return -1;
		}
		json_array_append_new(a, one);
	}
	if (!allow_empty && json_array_size(a) == 0) {
		json_decref(a);
		return fail(c, "'%s' must list at least one endpoint", field);
	}
	*out = a;
	return 0;
}

static int norm_endpoint(norm_ctx *c, const char *name, const json_t *v, json_t *out)
{
	static const char *const pass[] = {"algoCombo", "sessionManagement", "sessionTimeOut",
					   "failOver", "endpoint_security"};
	if (v == NULL) {
		json_object_set_new(out, name, json_null());
		return 0;
	}
	const json_t *et = json_object_get(v, "endpoint_type");
	if (et == NULL || !json_is_string(et))
		return fail(c, "'endpointConfig.endpoint_type' is required: http, load_balance or "
			       "failover");
	const char *type = json_string_value(et);
	int lb = strcmp(type, "load_balance") == 0, fo = strcmp(type, "failover") == 0;
	if (!lb && !fo && strcmp(type, "http") != 0)
		return fail(c, "'endpointConfig.endpoint_type' %s is not supported: use http, "
			       "load_balance or failover",
			    type);
	json_t *o = json_object();
	json_object_set_new(o, "endpoint_type", json_string(type));
	const char *k;
	json_t *x;
	int have = 0;
	json_object_foreach((json_t *)v, k, x) {
		char field[96];
		snprintf(field, sizeof(field), "endpointConfig.%s", k);
		if (strcmp(k, "endpoint_type") == 0)
			continue;
		if (json_is_null(x))
			continue;
		if (strcmp(k, "production_endpoints") == 0 || strcmp(k, "sandbox_endpoints") == 0) {
			json_t *e;
			int rc = lb ? endpoint_list(c, field, x, 0, &e) : endpoint_one(c, field, x, &e);
			if (rc != 0) {
				json_decref(o);
				return -1;
			}
			json_object_set_new(o, k, e);
			have = 1;
		} else if (strcmp(k, "production_failovers") == 0 ||
			   strcmp(k, "sandbox_failovers") == 0) {
			json_t *e;
			if (endpoint_list(c, field, x, 1, &e) != 0) {
				json_decref(o);
				return -1;
			}
			if (!fo && json_array_size(e) > 0) {
				json_decref(e);
				json_decref(o);
				return fail(c, "'%s' needs endpoint_type failover", field);
			}
			if (fo)
				json_object_set_new(o, k, e);
			else
				json_decref(e);
		} else if (strcmp(k, "algoClassName") == 0) {
			if (!json_is_string(x)) {
				json_decref(o);
				return fail(c, "'%s' must be a string", field);
			}
			json_object_set(o, k, x);
		} else {
			int ok = 0;
			for (size_t i = 0; i < sizeof(pass) / sizeof(pass[0]); i++)
				if (strcmp(k, pass[i]) == 0)
					ok = 1;
			if (!ok) {
				json_decref(o);
				return fail(c, "'%s' is not a known endpointConfig field", field);
			}
			json_object_set(o, k, x);
		}
	}
	if (!have) {
		json_decref(o);
		return fail(c, "'endpointConfig' needs production_endpoints or sandbox_endpoints "
			       "(or both)");
	}
	if (fo) {
		static const char *const pairs[][2] = {
			{"production_failovers", "production_endpoints"},
			{"sandbox_failovers", "sandbox_endpoints"}};
		for (size_t i = 0; i < 2; i++) {
			json_t *f = json_object_get(o, pairs[i][0]);
			if (f != NULL && json_array_size(f) > 0 &&
			    json_object_get(o, pairs[i][1]) == NULL) {
				json_decref(o);
				return fail(c, "'endpointConfig.%s' needs %s as the primary endpoint",
					    pairs[i][0], pairs[i][1]);
			}
			if (json_object_get(o, pairs[i][1]) != NULL && f == NULL)
				json_object_set_new(o, pairs[i][0], json_array());
		}
	}
	if (lb && json_object_get(o, "algoClassName") == NULL)
		json_object_set_new(o, "algoClassName",
				    json_string("org.apache.synapse.endpoints.algorithms.RoundRobin"));
	json_object_set_new(out, name, o);
	return 0;
}

/* ---------- scopes and operations ---------- */

static int norm_scopes(norm_ctx *c, const char *name, const json_t *v, json_t *out)
{
	json_t *a = json_array();
	size_t i;
	json_t *e;
	if (v != NULL && json_array_size(v) > 500) {
		json_decref(a);
		return fail(c, "'scopes' has more than 500 scopes");
	}
	json_array_foreach(v, i, e) {
		char f[48];
		snprintf(f, sizeof(f), "scopes[%zu]", i);
		if (!json_is_object(e)) {
			json_decref(a);
			return fail(c, "'%s' must be an object {\"scope\": {\"name\": ...}, "
				       "\"shared\": false}",
				    f);
		}
		const json_t *sc = NULL, *shared = NULL;
		const char *k;
		json_t *x;
		json_object_foreach((json_t *)e, k, x) {
			if (strcmp(k, "scope") == 0)
				sc = x;
			else if (strcmp(k, "shared") == 0)
				shared = x;
			else {
				json_decref(a);
				return fail(c, "'%s.%s' is not a known field: use scope and shared", f,
					    k);
			}
		}
		if (shared != NULL && !json_is_null(shared) && !json_is_boolean(shared)) {
			json_decref(a);
			return fail(c, "'%s.shared' must be a boolean", f);
		}
		if (!json_is_object(sc)) {
			json_decref(a);
			return fail(c, "'%s.scope' must be an object with at least a name", f);
		}
		const char *sname = NULL, *dname = NULL, *desc = "", *sid = NULL;
		json_t *bindings = NULL;
		json_object_foreach((json_t *)sc, k, x) {
			if (json_is_null(x))
				continue;
			if (strcmp(k, "name") == 0 || strcmp(k, "displayName") == 0 ||
			    strcmp(k, "description") == 0 || strcmp(k, "id") == 0) {
				if (!json_is_string(x)) {
					json_decref(bindings);
					json_decref(a);
					return fail(c, "'%s.scope.%s' must be a string", f, k);
				}
				const char *s = json_string_value(x);
				if (strcmp(k, "name") == 0)
					sname = s;
				else if (strcmp(k, "displayName") == 0)
					dname = s;
				else if (strcmp(k, "description") == 0)
					desc = s;
				else
					sid = s;
			} else if (strcmp(k, "bindings") == 0) {
				char bf[64];
				snprintf(bf, sizeof(bf), "%s.scope.bindings", f);
				if (!json_is_array(x)) {
					json_decref(a);
					return fail(c, "'%s' must be an array of role names", bf);
				}
				json_decref(bindings);
				if (string_array(c, bf, x, 255, 0, &bindings) != 0) {
					json_decref(a);
					return -1;
				}
			} else if (strcmp(k, "usageCount") == 0) {
				continue; /* read-only */
			} else {
				json_decref(bindings);
				json_decref(a);
				return fail(c, "'%s.scope.%s' is not a known field: use name, "
					       "displayName, description and bindings",
					    f, k);
			}
		}
		if (sname == NULL || *sname == '\0' || strlen(sname) > 255 ||
		    strpbrk(sname, " \t\r\n") != NULL || has_ctl(sname)) {
			json_decref(bindings);
			json_decref(a);
			return fail(c, "'%s.scope.name' is required: 1 to 255 characters without "
				       "spaces",
				    f);
		}
		if (strlen(desc) > 512 || (dname != NULL && strlen(dname) > 255)) {
			json_decref(bindings);
			json_decref(a);
			return fail(c, "'%s.scope' displayName (255) or description (512) is too long",
				    f);
		}
		size_t j;
		json_t *y;
		json_array_foreach(a, j, y) {
			const char *other = json_string_value(
				json_object_get(json_object_get(y, "scope"), "name"));
			if (strcmp(other, sname) == 0) {
				json_decref(bindings);
				json_decref(a);
				return fail(c, "'scopes' declares scope %s twice", sname);
			}
		}
		json_t *so = json_object();
		if (sid != NULL)
			json_object_set_new(so, "id", json_string(sid));
		json_object_set_new(so, "name", json_string(sname));
		json_object_set_new(so, "displayName", json_string(dname && *dname ? dname : sname));
		json_object_set_new(so, "description", json_string(desc));
		json_object_set_new(so, "bindings", bindings ? bindings : json_array());
		json_array_append_new(a, json_pack("{s:o, s:b}", "scope", so, "shared",
						   shared != NULL && json_is_true(shared)));
	}
	json_object_set_new(out, name, a);
	return 0;
}

static int norm_operation(norm_ctx *c, size_t idx, const json_t *e, json_t **out)
{
	char f[48];
	snprintf(f, sizeof(f), "operations[%zu]", idx);
	if (!json_is_object(e))
		return fail(c, "'%s' must be an object {\"target\": \"/path\", \"verb\": \"GET\"}", f);
	const char *id = "", *target = NULL, *verb = NULL, *auth = "Any", *policy = "Unlimited";
	json_t *scopes = NULL, *extra = json_object();
	const char *k;
	json_t *x;
	json_object_foreach((json_t *)e, k, x) {
		if (json_is_null(x))
			continue;
		if (strcmp(k, "id") == 0 || strcmp(k, "target") == 0 || strcmp(k, "verb") == 0 ||
		    strcmp(k, "authType") == 0 || strcmp(k, "throttlingPolicy") == 0) {
			if (!json_is_string(x)) {
				json_decref(scopes);
				json_decref(extra);
				return fail(c, "'%s.%s' must be a string", f, k);
			}
			const char *s = json_string_value(x);
			if (strcmp(k, "id") == 0)
				id = s;
			else if (strcmp(k, "target") == 0)
				target = s;
			else if (strcmp(k, "verb") == 0)
				verb = s;
			else if (strcmp(k, "authType") == 0)
				auth = s;
			else if (*s != '\0')
				policy = s;
		} else if (strcmp(k, "scopes") == 0) {
			char sf[64];
			snprintf(sf, sizeof(sf), "%s.scopes", f);
			if (!json_is_array(x)) {
				json_decref(extra);
				return fail(c, "'%s' must be an array of scope names", sf);
			}
			json_decref(scopes);
			if (string_array(c, sf, x, 255, 0, &scopes) != 0) {
				json_decref(extra);
				return -1;
			}
		} else if (strcmp(k, "usedProductIds") == 0 || strcmp(k, "operationPolicies") == 0 ||
			   strcmp(k, "amznResourceName") == 0 ||
			   strcmp(k, "amznResourceTimeout") == 0 ||
			   strcmp(k, "amznResourceContentEncode") == 0 ||
			   strcmp(k, "payloadSchema") == 0 || strcmp(k, "uriMapping") == 0) {
			int ok = strcmp(k, "usedProductIds") == 0 ? json_is_array(x)
				 : strcmp(k, "operationPolicies") == 0 ? json_is_object(x)
				 : strcmp(k, "amznResourceTimeout") == 0 ? json_is_integer(x)
				 : strcmp(k, "amznResourceContentEncode") == 0 ? json_is_boolean(x)
									       : json_is_string(x);
			if (!ok) {
				json_decref(scopes);
				json_decref(extra);
				return fail(c, "'%s.%s' has the wrong type", f, k);
			}
			json_object_set(extra, k, x);
		} else {
			json_decref(scopes);
			json_decref(extra);
			return fail(c, "'%s.%s' is not a known operation field: use target, verb, "
				       "authType, throttlingPolicy and scopes",
				    f, k);
		}
	}
	char terr[256], up[16];
	if (target == NULL) {
		json_decref(scopes);
		json_decref(extra);
		return fail(c, "'%s.target' is required (for example /menu/{id})", f);
	}
	if (publisher_dto_template(target, terr, sizeof(terr)) != 0) {
		json_decref(scopes);
		json_decref(extra);
		return fail(c, "'%s.target' %s %s", f, target, terr);
	}
	if (verb == NULL) {
		json_decref(scopes);
		json_decref(extra);
		return fail(c, "'%s.verb' is required: GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS",
			    f);
	}
	size_t vn = strlen(verb);
	if (vn >= sizeof(up))
		vn = sizeof(up) - 1;
	for (size_t i = 0; i < vn; i++)
		up[i] = (char)toupper((unsigned char)verb[i]);
	up[vn] = '\0';
	if (!publisher_dto_verb(up)) {
		json_decref(scopes);
		json_decref(extra);
		return fail(c, "'%s.verb' %s is not supported: use GET, POST, PUT, PATCH, DELETE, "
			       "HEAD or OPTIONS",
			    f, verb);
	}
	const char *at = publisher_dto_auth_type(auth);
	if (at == NULL) {
		json_decref(scopes);
		json_decref(extra);
		return fail(c, "'%s.authType' %s is unknown: use Any, Application, Application User "
			       "or None",
			    f, auth);
	}
	if (strlen(policy) > 255 || has_ctl(policy) || strlen(id) > 255) {
		json_decref(scopes);
		json_decref(extra);
		return fail(c, "'%s' has an id or throttlingPolicy that is too long", f);
	}
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "id", id, "target", target, "verb",
			      up, "authType", at, "throttlingPolicy", policy, "scopes",
			      scopes ? scopes : json_array());
	json_object_update(o, extra);
	json_decref(extra);
	*out = o;
	return 0;
}

static int norm_operations(norm_ctx *c, const char *name, const json_t *v, json_t *out)
{
	if (v == NULL || json_array_size(v) == 0) {
		json_object_set_new(out, name, publisher_dto_default_operations());
		return 0;
	}
	if (json_array_size(v) > MAX_ITEMS)
		return fail(c, "'operations' has more than %d operations", MAX_ITEMS);
	json_t *a = json_array();
	size_t i;
	json_t *e;
	json_array_foreach(v, i, e) {
		json_t *op;
		if (norm_operation(c, i, e, &op) != 0) {
			json_decref(a);
			return -1;
		}
		size_t j;
		json_t *y;
		json_array_foreach(a, j, y) {
			if (strcmp(json_string_value(json_object_get(y, "target")),
				   json_string_value(json_object_get(op, "target"))) == 0 &&
			    strcmp(json_string_value(json_object_get(y, "verb")),
				   json_string_value(json_object_get(op, "verb"))) == 0) {
				int dup = fail(c, "'operations' lists %s %s twice (operations[%zu] and "
						  "operations[%zu])",
					       json_string_value(json_object_get(op, "verb")),
					       json_string_value(json_object_get(op, "target")), j, i);
				json_decref(op);
				json_decref(a);
				return dup;
			}
		}
		json_array_append_new(a, op);
	}
	json_object_set_new(out, name, a);
	return 0;
}

/* ---------- the table ---------- */

static const api_field api_fields[] = {
	{"id", T_STRING, K_READONLY, NULL, "null"},
	{"name", T_STRING, K_IMMUTABLE, norm_name, NULL},
	{"displayName", T_STRING, K_PASS, NULL, NULL},
	{"description", T_STRING, K_CHECKED, norm_description, NULL},
	{"context", T_STRING, K_IMMUTABLE, norm_context, NULL},
	{"version", T_STRING, K_IMMUTABLE, norm_version, NULL},
	{"provider", T_STRING, K_IMMUTABLE, norm_provider, NULL},
	{"lifeCycleStatus", T_STRING, K_READONLY, NULL, "\"CREATED\""},
	{"wsdlInfo", T_OBJECT, K_PASS, NULL, NULL},
	{"wsdlUrl", T_STRING, K_READONLY, NULL, NULL},
	{"responseCachingEnabled", T_BOOL, K_PASS, NULL, "false"},
	{"cacheTimeout", T_INT, K_PASS, NULL, "300"},
	{"hasThumbnail", T_BOOL, K_READONLY, NULL, "false"},
	{"isDefaultVersion", T_BOOL, K_CHECKED, norm_bool_false, NULL},
	{"isRevision", T_BOOL, K_READONLY, NULL, "false"},
	{"revisionedApiId", T_STRING, K_READONLY, NULL, "null"},
	{"revisionId", T_INT, K_READONLY, NULL, "0"},
	{"enableSchemaValidation", T_BOOL, K_PASS, NULL, "false"},
	{"enableSubscriberVerification", T_BOOL, K_PASS, NULL, NULL},
	{"type", T_STRING, K_CHECKED, norm_type, NULL},
	{"audience", T_STRING, K_PASS, NULL, NULL},
	{"audiences", T_ARRAY, K_PASS, NULL, NULL},
	{"transport", T_ARRAY, K_CHECKED, norm_transport, NULL},
	{"tags", T_ARRAY, K_CHECKED, norm_strings, NULL},
	{"policies", T_ARRAY, K_CHECKED, norm_strings, NULL},
	{"organizationPolicies", T_ARRAY, K_PASS, NULL, NULL},
	{"apiThrottlingPolicy", T_STRING, K_CHECKED, norm_policy_name, NULL},
	{"authorizationHeader", T_STRING, K_PASS, NULL, "\"Authorization\""},
	{"apiKeyHeader", T_STRING, K_PASS, NULL, "\"ApiKey\""},
	{"securityScheme", T_ARRAY, K_CHECKED, norm_security, NULL},
	{"maxTps", T_OBJECT, K_CHECKED, norm_max_tps, NULL},
	{"visibility", T_STRING, K_CHECKED, norm_visibility, NULL},
	{"visibleRoles", T_ARRAY, K_CHECKED, norm_strings, NULL},
	{"visibleTenants", T_ARRAY, K_PASS, NULL, "[]"},
	{"visibleOrganizations", T_ARRAY, K_PASS, NULL, NULL},
	{"mediationPolicies", T_ARRAY, K_PASS, NULL, "[]"},
	{"apiPolicies", T_OBJECT, K_PASS, NULL, NULL},
	{"subscriptionAvailability", T_STRING, K_PASS, NULL, "\"CURRENT_TENANT\""},
	{"subscriptionAvailableTenants", T_ARRAY, K_PASS, NULL, "[]"},
	{"additionalProperties", T_ARRAY, K_PASS, NULL, "[]"},
	{"additionalPropertiesMap", T_OBJECT, K_PASS, NULL, "{}"},
	{"monetization", T_OBJECT, K_PASS, NULL, NULL},
	{"accessControl", T_STRING, K_PASS, NULL, "\"NONE\""},
	{"accessControlRoles", T_ARRAY, K_PASS, NULL, "[]"},
	{"businessInformation", T_OBJECT, K_PASS, NULL, "{}"},
	{"corsConfiguration", T_OBJECT, K_CHECKED, norm_cors, NULL},
	{"websubSubscriptionConfiguration", T_OBJECT, K_PASS, NULL, NULL},
	{"workflowStatus", T_STRING, K_READONLY, NULL, "null"},
	{"createdTime", T_ANY, K_READONLY, NULL, "null"},
	{"lastUpdatedTimestamp", T_ANY, K_READONLY, NULL, NULL},
	{"lastUpdatedTime", T_ANY, K_READONLY, NULL, "null"},
	{"endpointConfig", T_OBJECT, K_CHECKED, norm_endpoint, NULL},
	{"primaryProductionEndpointId", T_STRING, K_PASS, NULL, NULL},
	{"primarySandboxEndpointId", T_STRING, K_PASS, NULL, NULL},
	{"endpointImplementationType", T_STRING, K_PASS, NULL, "\"ENDPOINT\""},
	{"scopes", T_ARRAY, K_CHECKED, norm_scopes, NULL},
	{"operations", T_ARRAY, K_CHECKED, norm_operations, NULL},
	{"threatProtectionPolicies", T_OBJECT, K_PASS, NULL, NULL},
	{"categories", T_ARRAY, K_PASS, NULL, "[]"},
	{"keyManagers", T_ANY, K_PASS, NULL, "[\"all\"]"},
	{"serviceInfo", T_OBJECT, K_PASS, NULL, NULL},
	{"advertiseInfo", T_OBJECT, K_PASS, NULL, NULL},
	{"gatewayVendor", T_STRING, K_PASS, NULL, "\"wso2\""},
	{"gatewayType", T_STRING, K_PASS, NULL, "\"wso2/synapse\""},
	{"asyncTransportProtocols", T_ARRAY, K_PASS, NULL, NULL},
	{"subtypeConfiguration", T_OBJECT, K_PASS, NULL, NULL},
	{"initiatedFromGateway", T_BOOL, K_READONLY, NULL, NULL},
};

#define NFIELDS (sizeof(api_fields) / sizeof(api_fields[0]))

static const api_field *find_field(const char *name)
{
	for (size_t i = 0; i < NFIELDS; i++)
		if (strcmp(api_fields[i].name, name) == 0)
			return &api_fields[i];
	return NULL;
}

/* Enumerated pass-through fields: checked so the stored value is one the
 * reference accepts. */
static int check_enums(norm_ctx *c, const json_t *o)
{
	static const struct {
		const char *field;
		const char *values[4];
	} enums[] = {
		{"subscriptionAvailability", {"CURRENT_TENANT", "ALL_TENANTS", "SPECIFIC_TENANTS"}},
		{"accessControl", {"NONE", "RESTRICTED"}},
		{"endpointImplementationType", {"ENDPOINT", "INLINE", "MOCKED_OAS"}},
		{"audience", {"PUBLIC", "SINGLE"}},
	};
	for (size_t i = 0; i < sizeof(enums) / sizeof(enums[0]); i++) {
		const char *v = json_string_value(json_object_get(o, enums[i].field));
		if (v == NULL)
			continue;
		int ok = 0;
		for (size_t k = 0; k < 4 && enums[i].values[k]; k++)
			if (strcmp(v, enums[i].values[k]) == 0)
				ok = 1;
		if (!ok)
			return fail(c, "'%s' %s is unknown: use %s, %s%s%s", enums[i].field, v,
				    enums[i].values[0], enums[i].values[1],
				    enums[i].values[2] ? " or " : "",
				    enums[i].values[2] ? enums[i].values[2] : "");
	}
	const char *hdrs[] = {"authorizationHeader", "apiKeyHeader"};
	for (size_t i = 0; i < 2; i++) {
		const char *h = json_string_value(json_object_get(o, hdrs[i]));
		if (h == NULL)
			continue;
		if (*h == '\0' || strlen(h) > 255 || strpbrk(h, " \t~!@#;:%^*()+={}|\\<>\"',&$") ||
		    has_ctl(h))
			return fail(c, "'%s' %s is not a valid header name", hdrs[i], h);
	}
	return 0;
}

/* Checks that cross-field rules hold on the normalised document. */
static int check_cross(norm_ctx *c, json_t *o)
{
	if (strcmp(json_string_value(json_object_get(o, "visibility")), "RESTRICTED") == 0 &&
	    json_array_size(json_object_get(o, "visibleRoles")) == 0)
		return fail(c, "'visibility' RESTRICTED needs 'visibleRoles': the roles that may see "
			       "the API");
	json_t *scopes = json_object_get(o, "scopes");
	json_t *ops = json_object_get(o, "operations");
	size_t i;
	json_t *op;
	json_array_foreach(ops, i, op) {
		size_t j;
		json_t *s;
		json_array_foreach(json_object_get(op, "scopes"), j, s) {
			const char *want = json_string_value(s);
			int found = 0;
			size_t k;
			json_t *d;
			json_array_foreach(scopes, k, d)
				if (strcmp(json_string_value(json_object_get(
						   json_object_get(d, "scope"), "name")),
					   want) == 0)
					found = 1;
			if (!found)
				return fail(c, "'operations[%zu].scopes' names scope %s, which the API "
					       "does not declare: add it to 'scopes'",
					    i, want);
		}
	}
	return 0;
}

apim_rc publisher_dto_api(const json_t *in, const json_t *base, json_t **out, char *err,
			  size_t errlen)
{
	norm_ctx c = {.err = err, .errlen = errlen};
	const char *k;
	json_t *v;
	*out = NULL;
	if (!json_is_object(in)) {
		fail(&c, "The API must be a JSON object");
		return APIM_EINVAL;
	}
	json_object_foreach((json_t *)in, k, v) {
		const api_field *f = find_field(k);
		if (f == NULL) {
			fail(&c, "Unknown field '%s' in the API object: remove it or check its "
				 "spelling",
			     k);
			return APIM_EINVAL;
		}
		if (json_is_null(v) || f->kind == K_READONLY)
			continue;
		if (!type_ok(f->type, v)) {
			fail(&c, "Field '%s' must be %s", k, type_name(f->type));
			return APIM_EINVAL;
		}
	}
	json_t *m = base ? json_deep_copy(base) : json_object();
	json_object_foreach((json_t *)in, k, v) {
		const api_field *f = find_field(k);
		if (f->kind == K_READONLY || (base != NULL && f->kind == K_IMMUTABLE))
			continue;
		if (json_is_null(v))
			json_object_del(m, k);
		else
			json_object_set_new(m, k, json_deep_copy(v));
	}
	c.all = m;
	json_t *o = json_object();
	for (size_t i = 0; i < NFIELDS; i++) {
		const api_field *f = &api_fields[i];
		json_t *mv = json_object_get(m, f->name);
		if (mv != NULL && json_is_null(mv))
			mv = NULL;
		if (f->norm != NULL) {
			if (f->norm(&c, f->name, mv, o) != 0)
				goto bad;
		} else if (f->kind == K_PASS && mv != NULL) {
			if (!type_ok(f->type, mv)) {
				fail(&c, "Field '%s' must be %s", f->name, type_name(f->type));
				goto bad;
			}
			json_object_set(o, f->name, mv);
		} else if (f->dflt != NULL) {
			json_object_set_new(o, f->name, json_loads(f->dflt, JSON_DECODE_ANY, NULL));
		}
	}
	if (check_enums(&c, o) != 0 || check_cross(&c, o) != 0)
		goto bad;
	json_decref(m);
	*out = o;
	return APIM_OK;
bad:
	json_decref(m);
	json_decref(o);
	return APIM_EINVAL;
}

/* ---------- policy references ---------- */

static void add_ref(arena *pool, store_policy_ref *refs, size_t *n, size_t cap,
		    const char *level, const char *name)
{
	for (size_t i = 0; i < *n; i++) {
		if (strcmp(refs[i].level, level) == 0 && strcmp(refs[i].name, name) == 0) {
			refs[i].uses++;
			return;
		}
	}
	if (*n == cap)
		return;
	refs[*n].level = level;
	refs[*n].name = arena_strdup(pool, name);
	refs[*n].uses = 1;
	(*n)++;
}

void publisher_dto_policy_refs(arena *pool, const json_t *doc, store_policy_ref **out, size_t *n)
{
	json_t *pol = json_object_get(doc, "policies");
	json_t *ops = json_object_get(doc, "operations");
	size_t cap = json_array_size(pol) + json_array_size(ops) + 1;
	store_policy_ref *refs = arena_alloc(pool, cap * sizeof(*refs));
	size_t i;
	json_t *e;
	*n = 0;
	json_array_foreach(pol, i, e)
		add_ref(pool, refs, n, cap, "subscription", json_string_value(e));
	const char *apip = json_string_value(json_object_get(doc, "apiThrottlingPolicy"));
	if (apip != NULL)
		add_ref(pool, refs, n, cap, "advanced", apip);
	json_array_foreach(ops, i, e) {
		const char *p = json_string_value(json_object_get(e, "throttlingPolicy"));
		if (p != NULL)
			add_ref(pool, refs, n, cap, "advanced", p);
	}
	*out = refs;
}
