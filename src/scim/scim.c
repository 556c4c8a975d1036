/*
 * scim.c: SCIM 2.0 (RFC 7643/7644) users and groups over auth_users.
 *
 * Groups are roles, as the reference's SCIM endpoint shows them: a group's
 * displayName is the role name ("Internal/creator"), its members are the
 * users holding the role. A user lists its roles both as "groups" (with
 * the group ids) and as "roles" (by name); creating or patching a user
 * accepts "roles" by name or by group id.
 *
 * Supported: filters of the form `userName eq "x"` / `displayName eq "x"`,
 * startIndex/count paging, PATCH add/replace/remove on the attributes apim
 * stores, PUT, DELETE, /scim2/Me, /scim2/ServiceProviderConfig. Bodies are
 * parsed here (HTTP_RAW_BODY) so that every error, including a malformed
 * body, has the SCIM error shape; responses are application/scim+json.
 * Everything allocated for a request comes from r->pool; parsed JSON bodies
 * are owned by the handler that parsed them.
 */
#include "scim/scim.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/auth.h"
#include "auth/auth_users.h"
#include "common/ctx.h"
#include "common/log.h"
#include "common/util.h"

#define SCIM_USER "urn:ietf:params:scim:schemas:core:2.0:User"
#define SCIM_GROUP "urn:ietf:params:scim:schemas:core:2.0:Group"
#define SCIM_LIST "urn:ietf:params:scim:api:messages:2.0:ListResponse"
#define SCIM_ERROR "urn:ietf:params:scim:api:messages:2.0:Error"
#define SCIM_SEARCH "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
#define SCIM_SPC "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
#define SCIM_ENTERPRISE "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
#define SCIM_CTYPE "application/scim+json"
#define SCIM_SCOPES "apim:admin apim:role_manage"
#define SCIM_MAX_COUNT 1000 /* largest page; also the default */
#define SCIM_NAME_MAX 255   /* userName, displayName, name parts, email */

/* ---------- replies ---------- */

static void scim_error(http_req *r, int status, const char *scim_type, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void scim_error(http_req *r, int status, const char *scim_type, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *detail = arena_vsprintf(r->pool, fmt, ap);
	va_end(ap);
	json_t *o = json_object();
	json_object_set_new(o, "schemas", json_pack("[s]", SCIM_ERROR));
	json_object_set_new(o, "status", json_string(arena_sprintf(r->pool, "%d", status)));
	if (scim_type != NULL)
		json_object_set_new(o, "scimType", json_string(scim_type));
	json_object_set_new(o, "detail", json_string(detail));
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (s == NULL) {
		http_reply_raw(r, status, SCIM_CTYPE, "{}", 2);
		return;
	}
	http_reply_raw(r, status, SCIM_CTYPE, s, strlen(s));
	free(s);
}

/* Answers an unexpected status of the user store (what names the object). */
static void scim_fail(http_req *r, apim_rc rc, const char *what)
{
	switch (rc) {
	case APIM_ENOTFOUND:
		scim_error(r, 404, NULL, "%s not found.", what);
		break;
	case APIM_EUNAVAIL:
		scim_error(r, 503, NULL, "The user store is unavailable; try again shortly.");
		break;
	case APIM_EFORBIDDEN:
		scim_error(r, 403, NULL, "This change to %s is not allowed.", what);
		break;
	default:
		scim_error(r, apim_rc_http_status(rc), NULL, "%s: %s.", what, apim_strerror(rc));
		break;
	}
}

/* Sends body (stolen) as application/scim+json. */
static void scim_reply(http_req *r, int status, json_t *body)
{
	char *s = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (s == NULL) {
		scim_error(r, 500, NULL, "The response could not be encoded.");
		return;
	}
	http_reply_raw(r, status, SCIM_CTYPE, s, strlen(s));
	free(s);
}

/* ---------- input helpers ---------- */

/* The request body as a JSON object (caller decrefs), or NULL after
 * answering 400. Any Content-Type is read: SCIM clients send
 * application/scim+json, scripts often application/json or none. */
static json_t *scim_body(http_req *r)
{
	if (r->body == NULL || r->body_len == 0) {
		scim_error(r, 400, "invalidSyntax", "The request body is empty: send a JSON object.");
		return NULL;
	}
	json_error_t e;
	json_t *j = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &e);
	if (j == NULL) {
		scim_error(r, 400, "invalidSyntax", "The body is not valid JSON (line %d, column %d): %s",
			   e.line, e.column, e.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		scim_error(r, 400, "invalidSyntax", "The body must be a JSON object.");
		return NULL;
	}
	return j;
}

/* o[key] with SCIM's case-insensitive attribute names; NULL when absent. */
static json_t *scim_get(json_t *o, const char *key)
{
	const char *k;
	json_t *v;
	if (!json_is_object(o))
		return NULL;
	json_object_foreach(o, k, v)
	{
		if (strcasecmp(k, key) == 0)
			return v;
	}
	return NULL;
}

/* Checks a short text attribute: at most SCIM_NAME_MAX bytes and no control
 * characters. 0 when fine, -1 after answering 400. */
static int scim_text_ok(http_req *r, const char *attr, const char *s)
{
	if (strlen(s) > SCIM_NAME_MAX) {
		scim_error(r, 400, "invalidValue", "%s is longer than %d characters.", attr,
			   SCIM_NAME_MAX);
		return -1;
	}
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f) {
			scim_error(r, 400, "invalidValue", "%s contains a control character.", attr);
			return -1;
		}
	return 0;
}

/* *out = string value (NULL when absent or null). -1 after answering 400. */
static int scim_str(http_req *r, json_t *v, const char *attr, const char **out)
{
	*out = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_string(v)) {
		scim_error(r, 400, "invalidValue", "%s must be a string.", attr);
		return -1;
	}
	*out = json_string_value(v);
	return scim_text_ok(r, attr, *out);
}

/* Usernames travel in Basic credentials ("user:password") and URLs. */
static int scim_username_ok(http_req *r, const char *name)
{
	if (*name == '\0') {
		scim_error(r, 400, "invalidValue", "userName must not be empty.");
		return -1;
	}
	if (scim_text_ok(r, "userName", name) != 0)
		return -1;
	for (const char *p = name; *p; p++)
		if (*p == ':' || *p == ' ' || *p == '\t') {
			scim_error(r, 400, "invalidValue",
				   "userName '%s' must not contain spaces or ':'.", name);
			return -1;
		}
	return 0;
}

/*
 * The address of SCIM "emails": an array of {value, primary, type} objects
 * or of strings, or a single object or string; the primary one, else the
 * first. "" for null or an empty array. -1 after answering 400.
 */
static int scim_email(http_req *r, json_t *v, const char **out)
{
	*out = "";
	json_t *pick = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (json_is_array(v)) {
		size_t i;
		json_t *e;
		json_array_foreach(v, i, e)
		{
			if (!json_is_string(e) && !json_is_object(e)) {
				scim_error(r, 400, "invalidValue",
					   "emails must be a list of {\"value\": \"a@b.c\"} objects.");
				return -1;
			}
			if (pick == NULL || json_is_true(scim_get(e, "primary")))
				pick = e;
		}
		if (pick == NULL)
			return 0;
	} else {
		pick = v;
	}
	if (json_is_object(pick))
		pick = scim_get(pick, "value");
	if (!json_is_string(pick)) {
		scim_error(r, 400, "invalidValue", "emails must be a list of {\"value\": \"a@b.c\"} "
						    "objects.");
		return -1;
	}
	const char *s = json_string_value(pick);
	if (scim_text_ok(r, "The email address", s) != 0)
		return -1;
	if (*s != '\0' && (strchr(s, '@') == NULL || strchr(s, ' ') != NULL)) {
		scim_error(r, 400, "invalidValue", "'%s' is not an email address.", s);
		return -1;
	}
	*out = s;
	return 0;
}

/* A set of strings from r->pool (role names, user ids), insertion order. */
typedef struct scim_set {
	const char **v;
	size_t n, cap;
} scim_set;

static int scim_set_has(const scim_set *s, const char *x)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->v[i], x) == 0)
			return 1;
	return 0;
}

static void scim_set_add(arena *pool, scim_set *s, const char *x)
{
	if (scim_set_has(s, x))
		return;
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 8;
		const char **v = arena_alloc(pool, cap * sizeof(*v));
		if (s->n > 0)
			memcpy(v, s->v, s->n * sizeof(*v));
		s->v = v;
		s->cap = cap;
	}
	s->v[s->n++] = x;
}

static void scim_set_del(scim_set *s, const char *x)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->v[i], x) == 0) {
			memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof(*s->v));
			s->n--;
			return;
		}
}

/*
 * Resolves one role reference (a role name, or a group id as found in a
 * user's "groups") to the role name. -1 after answering 400.
 */
static int scim_role_name(http_req *r, const char *ref, const char **name)
{
	apim_ctx *ctx = r->ctx;
	auth_role *roles = NULL;
	size_t n = 0;
	apim_rc rc = auth_roles_list(ctx, r->pool, ref, &roles, &n);
	if (rc == APIM_OK && n > 0) {
		*name = roles[0].name;
		return 0;
	}
	if (rc == APIM_OK && apim_uuid_valid(ref)) {
		auth_role role;
		rc = auth_roles_get(ctx, r->pool, ref, &role);
		if (rc == APIM_OK) {
			*name = role.name;
			return 0;
		}
		if (rc == APIM_ENOTFOUND)
			rc = APIM_OK;
	}
	if (rc != APIM_OK) {
		scim_fail(r, rc, "Role lookup");
		return -1;
	}
	scim_error(r, 400, "invalidValue", "Role '%s' does not exist.", ref);
	return -1;
}

/*
 * Role references of "roles": [{"value": "Internal/creator"}], ["name"] or
 * one {"value"}. Names are added to *out. -1 after answering 400.
 */
static int scim_roles(http_req *r, json_t *v, scim_set *out)
{
	size_t i;
	json_t *e;
	if (v == NULL || json_is_null(v))
		return 0;
	if (json_is_object(v) || json_is_string(v)) {
		json_t *a = json_pack("[O]", v);
		int rc = scim_roles(r, a, out);
		json_decref(a);
		return rc;
	}
	if (!json_is_array(v)) {
		scim_error(r, 400, "invalidValue",
			   "roles must be a list of {\"value\": \"Internal/creator\"} objects.");
		return -1;
	}
	json_array_foreach(v, i, e)
	{
		json_t *ref = json_is_object(e) ? scim_get(e, "value") : e;
		if (json_is_object(e) && ref == NULL)
			ref = scim_get(e, "display");
		if (!json_is_string(ref)) {
			scim_error(r, 400, "invalidValue",
				   "roles must be a list of {\"value\": \"Internal/creator\"} objects.");
			return -1;
		}
		const char *name = NULL;
		if (scim_role_name(r, json_string_value(ref), &name) != 0)
			return -1;
		scim_set_add(r->pool, out, name);
	}
	return 0;
}

/* User ids of "members": [{"value": id}] or [id]. -1 after answering 400. */
static int scim_members(http_req *r, json_t *v, scim_set *out)
{
	size_t i;
	json_t *e;
	if (v == NULL || json_is_null(v))
		return 0;
	if (json_is_object(v) || json_is_string(v)) {
		json_t *a = json_pack("[O]", v);
		int rc = scim_members(r, a, out);
		json_decref(a);
		return rc;
	}
	if (!json_is_array(v)) {
		scim_error(r, 400, "invalidValue",
			   "members must be a list of {\"value\": \"<user id>\"} objects.");
		return -1;
	}
	json_array_foreach(v, i, e)
	{
		json_t *ref = json_is_object(e) ? scim_get(e, "value") : e;
		if (!json_is_string(ref)) {
			scim_error(r, 400, "invalidValue",
				   "members must be a list of {\"value\": \"<user id>\"} objects.");
			return -1;
		}
		scim_set_add(r->pool, out, arena_strdup(r->pool, json_string_value(ref)));
	}
	return 0;
}

/*
 * Parses `<attr> eq <value>`: attr case-insensitive (optionally prefixed by
 * the schema URN and ':'), "eq" in any case, value double-quoted (with
 * backslash escapes) or bare. 0 when filter is absent, 1 with *value (from
 * r->pool), -1 after answering 400 invalidFilter.
 */
static int scim_filter(http_req *r, const char *filter, const char *attr, const char *urn,
		       const char **value)
{
	*value = NULL;
	if (filter == NULL || *filter == '\0')
		return 0;
	const char *p = filter, *s;
	size_t ulen = strlen(urn);
	while (*p == ' ')
		p++;
	s = p;
	while (*p && *p != ' ')
		p++;
	if (strncasecmp(s, urn, ulen) == 0 && s[ulen] == ':')
		s += ulen + 1;
	if ((size_t)(p - s) != strlen(attr) || strncasecmp(s, attr, strlen(attr)) != 0)
		goto bad;
	while (*p == ' ')
		p++;
	if (strncasecmp(p, "eq ", 3) != 0)
		goto bad;
	p += 3;
	while (*p == ' ')
		p++;
	char *out = arena_alloc(r->pool, strlen(p) + 1), *o = out;
	if (*p == '"') {
		for (p++; *p && *p != '"'; p++) {
			if (*p == '\\' && p[1] != '\0')
				p++;
			*o++ = *p;
		}
		if (*p != '"')
			goto bad;
		p++;
	} else {
		while (*p && *p != ' ')
			*o++ = *p++;
		if (o == out)
			goto bad;
	}
	*o = '\0';
	while (*p == ' ')
		p++;
	if (*p != '\0')
		goto bad;
	*value = out;
	return 1;
bad:
	scim_error(r, 400, "invalidFilter",
		   "Unsupported filter '%s': only %s eq \"value\" is supported.", filter, attr);
	return -1;
}

/* Parses an integer query/body value; -1 after answering 400. */
static int scim_int(http_req *r, const char *name, const char *s, int64_t *out)
{
	if (s != NULL && apim_parse_i64(s, out) != 0) {
		scim_error(r, 400, "invalidValue", "%s must be an integer, not '%s'.", name, s);
		return -1;
	}
	return 0;
}

/* startIndex (1-based, below 1 means 1) and count (0..SCIM_MAX_COUNT). */
static int scim_paging(http_req *r, const char *start_s, const char *count_s, int64_t *start,
		       int64_t *count)
{
	*start = 1;
	*count = SCIM_MAX_COUNT;
	if (scim_int(r, "startIndex", start_s, start) != 0 ||
	    scim_int(r, "count", count_s, count) != 0)
		return -1;
	if (*start < 1)
		*start = 1;
	if (*count < 0)
		*count = 0;
	if (*count > SCIM_MAX_COUNT)
		*count = SCIM_MAX_COUNT;
	return 0;
}

static json_t *scim_list(int64_t total, int64_t start, json_t *resources)
{
	return json_pack("{s:[s], s:I, s:I, s:I, s:o}", "schemas", SCIM_LIST, "totalResults",
			 (json_int_t)total, "startIndex", (json_int_t)start, "itemsPerPage",
			 (json_int_t)json_array_size(resources), "Resources", resources);
}

/* ---------- rendering ---------- */

static const char *scim_location(http_req *r, const char *kind, const char *id)
{
	const apim_ctx *ctx = r->ctx;
	const char *scheme = *ctx->cfg->http_tls_cert ? "https" : "http";
	return arena_sprintf(r->pool, "%s://%s:%d/scim2/%s/%s", scheme, ctx->cfg->server_hostname,
			     ctx->port, kind, id);
}

static void scim_time(json_t *meta, const char *key, int64_t ms)
{
	char buf[40];
	if (ms <= 0)
		return;
	apim_iso8601(ms, buf, sizeof(buf));
	json_object_set_new(meta, key, json_string(buf));
}

/* Every role (for group ids); -1 after answering. */
static int scim_all_roles(http_req *r, auth_role **roles, size_t *n)
{
	apim_rc rc = auth_roles_list(r->ctx, r->pool, NULL, roles, n);
	if (rc != APIM_OK) {
		scim_fail(r, rc, "Role list");
		return -1;
	}
	return 0;
}

static json_t *scim_user_json(http_req *r, const auth_user *u, const auth_role *all, size_t nall)
{
	json_t *o = json_object();
	json_object_set_new(o, "schemas", json_pack("[s]", SCIM_USER));
	json_object_set_new(o, "id", json_string(u->id));
	json_object_set_new(o, "userName", json_string(u->username));
	if ((u->given_name && *u->given_name) || (u->family_name && *u->family_name)) {
		json_t *name = json_object();
		if (u->given_name && *u->given_name)
			json_object_set_new(name, "givenName", json_string(u->given_name));
		if (u->family_name && *u->family_name)
			json_object_set_new(name, "familyName", json_string(u->family_name));
		json_object_set_new(o, "name", name);
	}
	if (u->email && *u->email)
		json_object_set_new(o, "emails", json_pack("[{s:s, s:b}]", "value", u->email,
							   "primary", 1));
	json_t *groups = json_array(), *roles = json_array();
	for (size_t i = 0; i < u->nroles; i++) {
		for (size_t j = 0; j < nall; j++)
			if (strcmp(all[j].name, u->roles[i]) == 0)
				json_array_append_new(
					groups, json_pack("{s:s, s:s, s:s}", "value", all[j].id,
							  "display", u->roles[i], "$ref",
							  scim_location(r, "Groups", all[j].id)));
		json_array_append_new(roles, json_pack("{s:s, s:s, s:s}", "value", u->roles[i],
						       "display", u->roles[i], "type", "default"));
	}
	json_object_set_new(o, "groups", groups);
	json_object_set_new(o, "roles", roles);
	json_t *meta = json_pack("{s:s}", "resourceType", "User");
	scim_time(meta, "created", u->created_ms);
	scim_time(meta, "lastModified", u->modified_ms);
	json_object_set_new(meta, "location", json_string(scim_location(r, "Users", u->id)));
	json_object_set_new(o, "meta", meta);
	return o;
}

/* Answers status with the user id, freshly read. */
static void scim_reply_user(http_req *r, int status, const char *id)
{
	auth_user u;
	auth_role *all = NULL;
	size_t nall = 0;
	apim_rc rc = auth_users_get(r->ctx, r->pool, id, &u);
	if (rc != APIM_OK) {
		scim_fail(r, rc, arena_sprintf(r->pool, "User '%s'", id));
		return;
	}
	if (scim_all_roles(r, &all, &nall) != 0)
		return;
	if (status == 201)
		http_set_header(r, "Location", scim_location(r, "Users", u.id));
	scim_reply(r, status, scim_user_json(r, &u, all, nall));
}

static json_t *scim_group_json(http_req *r, const auth_role *g, const char *const *names)
{
	json_t *members = json_array();
	for (size_t i = 0; i < g->nmembers; i++) {
		json_t *m = json_pack("{s:s, s:s, s:s}", "value", g->members[i], "$ref",
				      scim_location(r, "Users", g->members[i]), "type", "User");
		if (names != NULL && names[i] != NULL)
			json_object_set_new(m, "display", json_string(names[i]));
		json_array_append_new(members, m);
	}
	json_t *meta = json_pack("{s:s, s:s}", "resourceType", "Group", "location",
				 scim_location(r, "Groups", g->id));
	return json_pack("{s:[s], s:s, s:s, s:o, s:o}", "schemas", SCIM_GROUP, "id", g->id,
			 "displayName", g->name, "members", members, "meta", meta);
}

/* Usernames of the members of g (NULL entries for unknown ids). */
static int scim_member_names(http_req *r, const auth_role *g, const char ***names)
{
	apim_rc rc = auth_users_names(r->ctx, r->pool, g->members, g->nmembers, names);
	if (rc != APIM_OK) {
		scim_fail(r, rc, "User lookup");
		return -1;
	}
	return 0;
}

static void scim_reply_group(http_req *r, int status, const char *id)
{
	auth_role g;
	const char **names = NULL;
	apim_rc rc = auth_roles_get(r->ctx, r->pool, id, &g);
	if (rc != APIM_OK) {
		scim_fail(r, rc, arena_sprintf(r->pool, "Group '%s'", id));
		return;
	}
	if (scim_member_names(r, &g, &names) != 0)
		return;
	if (status == 201)
		http_set_header(r, "Location", scim_location(r, "Groups", g.id));
	scim_reply(r, status, scim_group_json(r, &g, names));
}

/* ---------- users ---------- */

/* Attributes of a POST/PUT user body; NULL = absent. */
typedef struct scim_user_in {
	const char *username, *password, *given, *family, *email;
	int has_roles;
	scim_set roles;
} scim_user_in;

static int scim_user_parse(http_req *r, json_t *body, scim_user_in *in)
{
	memset(in, 0, sizeof(*in));
	json_t *name = scim_get(body, "name");
	if (scim_str(r, scim_get(body, "userName"), "userName", &in->username) != 0)
		return -1;
	json_t *pw = scim_get(body, "password");
	if (pw != NULL && !json_is_null(pw)) {
		if (!json_is_string(pw)) {
			scim_error(r, 400, "invalidValue", "password must be a string.");
			return -1;
		}
		in->password = json_string_value(pw);
	}
	if (name != NULL && !json_is_null(name)) {
		if (!json_is_object(name)) {
			scim_error(r, 400, "invalidValue",
				   "name must be an object {\"givenName\", \"familyName\"}.");
			return -1;
		}
		if (scim_str(r, scim_get(name, "givenName"), "name.givenName", &in->given) != 0 ||
		    scim_str(r, scim_get(name, "familyName"), "name.familyName", &in->family) != 0)
			return -1;
	}
	json_t *emails = scim_get(body, "emails");
	if (emails != NULL && scim_email(r, emails, &in->email) != 0)
		return -1;
	json_t *roles = scim_get(body, "roles");
	if (roles != NULL && !json_is_null(roles)) {
		in->has_roles = 1;
		if (scim_roles(r, roles, &in->roles) != 0)
			return -1;
	}
	return 0;
}

static int scim_password_ok(http_req *r, const char *password)
{
	const char *why = auth_password_policy(password);
	if (why != NULL) {
		scim_error(r, 400, "invalidValue", "%s", why);
		return -1;
	}
	return 0;
}

static void scim_users_create(http_req *r, json_t *body)
{
	scim_user_in in;
	auth_user u, out;
	if (scim_user_parse(r, body, &in) != 0)
		return;
	if (in.username == NULL) {
		scim_error(r, 400, "invalidValue", "userName is required.");
		return;
	}
	if (scim_username_ok(r, in.username) != 0)
		return;
	if (in.password == NULL) {
		scim_error(r, 400, "invalidValue", "password is required.");
		return;
	}
	if (scim_password_ok(r, in.password) != 0)
		return;
	memset(&u, 0, sizeof(u));
	u.username = in.username;
	u.given_name = in.given;
	u.family_name = in.family;
	u.email = in.email != NULL && *in.email ? in.email : NULL;
	u.roles = in.roles.v;
	u.nroles = in.roles.n;
	apim_rc rc = auth_users_create(r->ctx, r->pool, &u, in.password, &out);
	if (rc == APIM_ECONFLICT) {
		scim_error(r, 409, "uniqueness", "A user named '%s' already exists.", in.username);
		return;
	}
	if (rc != APIM_OK) {
		scim_fail(r, rc, "Creating the user");
		return;
	}
	log_info("scim", "user '%s' created", in.username);
	scim_reply_user(r, 201, out.id);
}

static void scim_users_post(http_req *r)
{
	json_t *body = scim_body(r);
	if (body == NULL)
		return;
	scim_users_create(r, body);
	json_decref(body);
}

static void scim_users_page(http_req *r, const char *filter, const char *start_s,
			    const char *count_s)
{
	const char *eq = NULL;
	int64_t start, count, total = 0;
	auth_user *users = NULL;
	size_t n = 0;
	auth_role *all = NULL;
	size_t nall = 0;
	if (scim_filter(r, filter, "userName", SCIM_USER, &eq) < 0 ||
	    scim_paging(r, start_s, count_s, &start, &count) != 0)
		return;
	apim_rc rc = auth_users_list(r->ctx, r->pool, eq, start - 1, count, &users, &n, &total);
	if (rc != APIM_OK) {
		scim_fail(r, rc, "User list");
		return;
	}
	if (scim_all_roles(r, &all, &nall) != 0)
		return;
	json_t *res = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(res, scim_user_json(r, &users[i], all, nall));
	scim_reply(r, 200, scim_list(total, start, res));
}

static void scim_users_list(http_req *r)
{
	scim_users_page(r, http_query(r, "filter"), http_query(r, "startIndex"),
			http_query(r, "count"));
}

/* POST /scim2/Users/.search {filter, startIndex, count} (RFC 7644 3.4.3). */
static void scim_users_search(http_req *r)
{
	json_t *body = scim_body(r);
	const char *filter = NULL;
	if (body == NULL)
		return;
	json_t *f = scim_get(body, "filter"), *s = scim_get(body, "startIndex"),
	       *c = scim_get(body, "count");
	if (f != NULL && !json_is_null(f) && !json_is_string(f)) {
		scim_error(r, 400, "invalidFilter", "filter must be a string.");
		goto out;
	}
	if ((s != NULL && !json_is_integer(s)) || (c != NULL && !json_is_integer(c))) {
		scim_error(r, 400, "invalidValue", "startIndex and count must be integers.");
		goto out;
	}
	filter = json_is_string(f) ? json_string_value(f) : NULL;
	scim_users_page(r, filter,
			s ? arena_sprintf(r->pool, "%lld", (long long)json_integer_value(s)) : NULL,
			c ? arena_sprintf(r->pool, "%lld", (long long)json_integer_value(c)) : NULL);
out:
	json_decref(body);
}

static void scim_users_get(http_req *r)
{
	scim_reply_user(r, 200, http_param(r, "id"));
}

/* Answers the outcome of auth_users_set_roles. 0 when it went through. */
static int scim_set_roles(http_req *r, const auth_user *u, const scim_set *roles)
{
	apim_ctx *ctx = r->ctx;
	apim_rc rc = auth_users_set_roles(ctx, u->id, roles->v, roles->n);
	if (rc == APIM_EFORBIDDEN) {
		scim_error(r, 403, NULL, "The administrator account '%s' must keep the '%s' role.",
			   u->username, ROLE_ADMIN);
		return -1;
	}
	if (rc != APIM_OK) {
		scim_fail(r, rc, "Setting the roles");
		return -1;
	}
	return 0;
}

static void scim_users_replace(http_req *r, json_t *body)
{
	const char *id = http_param(r, "id");
	scim_user_in in;
	auth_user cur;
	apim_rc rc = auth_users_get(r->ctx, r->pool, id, &cur);
	if (rc != APIM_OK) {
		scim_fail(r, rc, arena_sprintf(r->pool, "User '%s'", id));
		return;
	}
	if (scim_user_parse(r, body, &in) != 0)
		return;
	if (in.username != NULL && strcmp(in.username, cur.username) != 0) {
		scim_error(r, 400, "mutability", "userName cannot be changed (it is '%s').",
			   cur.username);
		return;
	}
	if (in.password != NULL && scim_password_ok(r, in.password) != 0)
		return;
	if (in.has_roles && scim_set_roles(r, &cur, &in.roles) != 0)
		return;
	/* PUT replaces: attributes left out are cleared; the password and the
	 * roles only change when sent. */
	rc = auth_users_update(r->ctx, id, in.given ? in.given : "", in.family ? in.family : "",
			       in.email ? in.email : "", in.password);
	if (rc != APIM_OK) {
		scim_fail(r, rc, arena_sprintf(r->pool, "User '%s'", id));
		return;
	}
	scim_reply_user(r, 200, id);
}

static void scim_users_put(http_req *r)
{
	json_t *body = scim_body(r);
	if (body == NULL)
		return;
	scim_users_replace(r, body);
	json_decref(body);
}

/* The changes a user PATCH accumulates before applying them. */
typedef struct scim_user_patch {
	const auth_user *cur;
	const char *given, *family, *email, *password; /* NULL = unchanged */
	scim_set roles;
	int roles_changed;
} scim_user_patch;

static int scim_op_kind(http_req *r, json_t *op, char *kind)
{
	json_t *v = scim_get(op, "op");
	const char *s = json_is_string(v) ? json_string_value(v) : "";
	if (strcasecmp(s, "add") == 0)
		*kind = 'a';
	else if (strcasecmp(s, "replace") == 0)
		*kind = 'r';
	else if (strcasecmp(s, "remove") == 0)
		*kind = 'd';
	else {
		scim_error(r, 400, "invalidSyntax",
			   "Each operation needs \"op\": \"add\", \"replace\" or \"remove\".");
		return -1;
	}
	return 0;
}

/* "attr[value eq "x"]": 1 with *x, 0 when path is not of that form for
 * attr, -1 after answering 400. */
static int scim_value_filter(http_req *r, const char *path, const char *attr, const char **x)
{
	size_t alen = strlen(attr), plen = strlen(path);
	if (strncasecmp(path, attr, alen) != 0 || path[alen] != '[' || path[plen - 1] != ']')
		return 0;
	char *inner = arena_strndup(r->pool, path + alen + 1, plen - alen - 2);
	if (*inner == '\0') {
		scim_error(r, 400, "invalidPath", "'%s' needs a filter: %s[value eq \"x\"].", path,
			   attr);
		return -1;
	}
	return scim_filter(r, inner, "value", "", x);
}

static int scim_user_apply(http_req *r, scim_user_patch *st, char kind, const char *path,
			   json_t *value)
{
	size_t ulen = strlen(SCIM_USER);
	if (strncasecmp(path, SCIM_USER, ulen) == 0 && path[ulen] == ':')
		path += ulen + 1;
	if (strncasecmp(path, SCIM_ENTERPRISE, strlen(SCIM_ENTERPRISE)) == 0 ||
	    strcasecmp(path, "schemas") == 0)
		return 0; /* not stored; accepted like the reference's scripts send it */
	if (strcasecmp(path, "name") == 0) {
		if (kind == 'd') {
			st->given = st->family = "";
			return 0;
		}
		if (!json_is_object(value)) {
			scim_error(r, 400, "invalidValue",
				   "name must be an object {\"givenName\", \"familyName\"}.");
			return -1;
		}
		const char *g = NULL, *f = NULL;
		if (scim_str(r, scim_get(value, "givenName"), "name.givenName", &g) != 0 ||
		    scim_str(r, scim_get(value, "familyName"), "name.familyName", &f) != 0)
			return -1;
		if (g != NULL)
			st->given = g;
		if (f != NULL)
			st->family = f;
		return 0;
	}
	if (strcasecmp(path, "name.givenName") == 0 || strcasecmp(path, "name.familyName") == 0) {
		const char **dst = strcasecmp(path, "name.givenName") == 0 ? &st->given : &st->family;
		const char *s = NULL;
		if (kind == 'd') {
			*dst = "";
			return 0;
		}
		if (scim_str(r, value, path, &s) != 0)
			return -1;
		*dst = s != NULL ? s : "";
		return 0;
	}
	if (strcasecmp(path, "emails") == 0 || strncasecmp(path, "emails[", 7) == 0 ||
	    strncasecmp(path, "emails.", 7) == 0) {
		if (kind == 'd') {
			st->email = "";
			return 0;
		}
		return scim_email(r, value, &st->email);
	}
	if (strcasecmp(path, "password") == 0) {
		if (kind == 'd' || !json_is_string(value)) {
			scim_error(r, 400, "invalidValue", "password must be replaced by a string; it "
							    "cannot be removed.");
			return -1;
		}
		st->password = json_string_value(value);
		return 0;
	}
	if (strcasecmp(path, "userName") == 0) {
		if (kind != 'd' && json_is_string(value) &&
		    strcmp(json_string_value(value), st->cur->username) == 0)
			return 0;
		scim_error(r, 400, "mutability", "userName cannot be changed (it is '%s').",
			   st->cur->username);
		return -1;
	}
	if (strcasecmp(path, "roles") == 0) {
		scim_set given = {0};
		if (scim_roles(r, value, &given) != 0)
			return -1;
		st->roles_changed = 1;
		if (kind == 'r' || (kind == 'd' && (value == NULL || json_is_null(value))))
			st->roles.n = 0;
		for (size_t i = 0; i < given.n; i++) {
			if (kind == 'd')
				scim_set_del(&st->roles, given.v[i]);
			else
				scim_set_add(r->pool, &st->roles, given.v[i]);
		}
		return 0;
	}
	const char *x = NULL;
	int f = scim_value_filter(r, path, "roles", &x);
	if (f < 0)
		return -1;
	if (f > 0) {
		const char *name = NULL;
		if (kind != 'd') {
			scim_error(r, 400, "invalidPath", "Use a path of \"roles\" to add roles.");
			return -1;
		}
		if (scim_role_name(r, x, &name) != 0)
			return -1;
		scim_set_del(&st->roles, name);
		st->roles_changed = 1;
		return 0;
	}
	if (strcasecmp(path, "groups") == 0) {
		scim_error(r, 400, "mutability", "groups is read-only: change the roles attribute, or "
						  "the members of /scim2/Groups.");
		return -1;
	}
	scim_error(r, 400, "invalidPath",
		   "Unsupported path '%s': use name, name.givenName, name.familyName, emails, "
		   "password or roles.",
		   path);
	return -1;
}

/*
 * Runs the Operations of a PatchOp body through apply (with state st).
 * Without a path, an add/replace value is an object of attribute: value.
 */
static int scim_patch_ops(http_req *r, json_t *body, void *st,
			  int (*apply)(http_req *, void *, char, const char *, json_t *))
{
	json_t *ops = scim_get(body, "Operations");
	size_t i;
	json_t *op;
	if (!json_is_array(ops) || json_array_size(ops) == 0) {
		scim_error(r, 400, "invalidSyntax", "Operations must be a non-empty list of "
						    "{\"op\", \"path\", \"value\"}.");
		return -1;
	}
	json_array_foreach(ops, i, op)
	{
		char kind;
		if (!json_is_object(op)) {
			scim_error(r, 400, "invalidSyntax", "Each operation must be an object.");
			return -1;
		}
		if (scim_op_kind(r, op, &kind) != 0)
			return -1;
		json_t *path = scim_get(op, "path"), *value = scim_get(op, "value");
		if (path != NULL && !json_is_null(path)) {
			if (!json_is_string(path) || json_string_length(path) == 0) {
				scim_error(r, 400, "invalidPath", "path must be a non-empty string.");
				return -1;
			}
			if (apply(r, st, kind, json_string_value(path), value) != 0)
				return -1;
			continue;
		}
		if (kind == 'd') {
			scim_error(r, 400, "noTarget", "A remove operation needs a path.");
			return -1;
		}
		if (!json_is_object(value)) {
			scim_error(r, 400, "invalidValue", "Without a path, value must be an object of "
							    "attributes.");
			return -1;
		}
		const char *k;
		json_t *v;
		json_object_foreach(value, k, v)
		{
			if (apply(r, st, kind, k, v) != 0)
				return -1;
		}
	}
	return 0;
}

static int scim_user_apply_cb(http_req *r, void *st, char kind, const char *path, json_t *v)
{
	return scim_user_apply(r, st, kind, path, v);
}

static void scim_users_modify(http_req *r, json_t *body)
{
	const char *id = http_param(r, "id");
	auth_user cur;
	scim_user_patch st;
	apim_rc rc = auth_users_get(r->ctx, r->pool, id, &cur);
	if (rc != APIM_OK) {
		scim_fail(r, rc, arena_sprintf(r->pool, "User '%s'", id));
		return;
	}
	memset(&st, 0, sizeof(st));
	st.cur = &cur;
	for (size_t i = 0; i < cur.nroles; i++)
		scim_set_add(r->pool, &st.roles, cur.roles[i]);
	if (scim_patch_ops(r, body, &st, scim_user_apply_cb) != 0)
		return;
	if (st.password != NULL && scim_password_ok(r, st.password) != 0)
		return;
	if (st.roles_changed && scim_set_roles(r, &cur, &st.roles) != 0)
		return;
	if (st.given || st.family || st.email || st.password) {
		rc = auth_users_update(r->ctx, id, st.given, st.family, st.email, st.password);
		if (rc != APIM_OK) {
			scim_fail(r, rc, arena_sprintf(r->pool, "User '%s'", id));
			return;
		}
	}
	scim_reply_user(r, 200, id);
}

static void scim_users_patch(http_req *r)
{
	json_t *body = scim_body(r);
	if (body == NULL)
		return;
	scim_users_modify(r, body);
	json_decref(body);
}

static void scim_users_delete(http_req *r)
{
	const char *id = http_param(r, "id");
	apim_ctx *ctx = r->ctx;
	apim_rc rc = auth_users_delete(ctx, id);
	if (rc == APIM_EFORBIDDEN) {
		scim_error(r, 403, NULL, "The administrator account '%s' cannot be deleted.",
			   ctx->cfg->admin_username);
		return;
	}
	if (rc != APIM_OK) {
		scim_fail(r, rc, arena_sprintf(r->pool, "User '%s'", id));
		return;
	}
	log_info("scim", "user %s deleted", id);
	http_reply_empty(r, 204);
}

static void scim_me(http_req *r)
{
	const principal *p = r->who;
	auth_user u;
	apim_rc rc = APIM_ENOTFOUND;
	if (p != NULL && p->user_id != NULL)
		rc = auth_users_get(r->ctx, r->pool, p->user_id, &u);
	else if (p != NULL && p->username != NULL)
		rc = auth_users_get_by_name(r->ctx, r->pool, p->username, &u);
	if (rc == APIM_ENOTFOUND) {
		scim_error(r, 404, NULL, "The caller is not a user of this server (for example an "
					 "application token).");
		return;
	}
	if (rc != APIM_OK) {
		scim_fail(r, rc, "The caller's user");
		return;
	}
	scim_reply_user(r, 200, u.id);
}

/* ---------- groups ---------- */

static void scim_groups_list(http_req *r)
{
	const char *eq = NULL;
	int64_t start, count;
	auth_role *roles = NULL;
	size_t n = 0;
	if (scim_filter(r, http_query(r, "filter"), "displayName", SCIM_GROUP, &eq) < 0 ||
	    scim_paging(r, http_query(r, "startIndex"), http_query(r, "count"), &start, &count) != 0)
		return;
	apim_rc rc = auth_roles_list(r->ctx, r->pool, eq, &roles, &n);
	if (rc != APIM_OK) {
		scim_fail(r, rc, "Group list");
		return;
	}
	json_t *res = json_array();
	for (size_t i = (size_t)(start - 1); i < n && (int64_t)json_array_size(res) < count; i++) {
		const char **names = NULL;
		if (scim_member_names(r, &roles[i], &names) != 0) {
			json_decref(res);
			return;
		}
		json_array_append_new(res, scim_group_json(r, &roles[i], names));
	}
	scim_reply(r, 200, scim_list((int64_t)n, start, res));
}

/* Checks that every id names a user. -1 after answering 400. */
static int scim_users_exist(http_req *r, const scim_set *ids)
{
	const char **names = NULL;
	apim_rc rc = auth_users_names(r->ctx, r->pool, ids->v, ids->n, &names);
	if (rc != APIM_OK) {
		scim_fail(r, rc, "User lookup");
		return -1;
	}
	for (size_t i = 0; i < ids->n; i++)
		if (names[i] == NULL) {
			scim_error(r, 400, "invalidValue", "Member '%s' is not a user id.", ids->v[i]);
			return -1;
		}
	return 0;
}

/* Moves the members of role g to the set want. -1 after answering. */
static int scim_group_set_members(http_req *r, const auth_role *g, const scim_set *want)
{
	apim_ctx *ctx = r->ctx;
	scim_set add = {0}, del = {0};
	scim_set have = {0};
	for (size_t i = 0; i < g->nmembers; i++)
		scim_set_add(r->pool, &have, g->members[i]);
	for (size_t i = 0; i < want->n; i++)
		if (!scim_set_has(&have, want->v[i]))
			scim_set_add(r->pool, &add, want->v[i]);
	for (size_t i = 0; i < g->nmembers; i++)
		if (!scim_set_has(want, g->members[i]))
			scim_set_add(r->pool, &del, g->members[i]);
	if (scim_users_exist(r, &add) != 0)
		return -1;
	apim_rc rc = APIM_OK;
	if (del.n > 0)
		rc = auth_roles_remove_members(ctx, g->id, del.v, del.n);
	if (rc == APIM_EFORBIDDEN) {
		scim_error(r, 403, NULL, "The administrator account '%s' must keep the '%s' role.",
			   ctx->cfg->admin_username, g->name);
		return -1;
	}
	if (rc == APIM_OK && add.n > 0)
		rc = auth_roles_add_members(ctx, g->id, add.v, add.n);
	if (rc != APIM_OK) {
		scim_fail(r, rc, arena_sprintf(r->pool, "Group '%s'", g->name));
		return -1;
	}
	return 0;
}

static void scim_groups_create(http_req *r, json_t *body)
{
	const char *name = NULL;
	scim_set members = {0};
	auth_role g;
	if (scim_str(r, scim_get(body, "displayName"), "displayName", &name) != 0)
		return;
	if (name == NULL || *name == '\0') {
		scim_error(r, 400, "invalidValue", "displayName is required.");
		return;
	}
	if (scim_members(r, scim_get(body, "members"), &members) != 0 ||
	    scim_users_exist(r, &members) != 0)
		return;
	apim_rc rc = auth_roles_create(r->ctx, r->pool, name, &g);
	if (rc == APIM_ECONFLICT) {
		scim_error(r, 409, "uniqueness", "A group (role) named '%s' already exists.", name);
		return;
	}
	if (rc != APIM_OK) {
		scim_fail(r, rc, "Creating the group");
		return;
	}
	log_info("scim", "role '%s' created", name);
	if (members.n > 0 && scim_group_set_members(r, &g, &members) != 0)
		return;
	scim_reply_group(r, 201, g.id);
}

static void scim_groups_post(http_req *r)
{
	json_t *body = scim_body(r);
	if (body == NULL)
		return;
	scim_groups_create(r, body);
	json_decref(body);
}

static void scim_groups_get(http_req *r)
{
	scim_reply_group(r, 200, http_param(r, "id"));
}

typedef struct scim_group_patch {
	const auth_role *cur;
	scim_set members;
} scim_group_patch;

static int scim_group_apply(http_req *r, void *vst, char kind, const char *path, json_t *value)
{
	scim_group_patch *st = vst;
	if (strcasecmp(path, "displayName") == 0) {
		if (kind != 'd' && json_is_string(value) &&
		    strcmp(json_string_value(value), st->cur->name) == 0)
			return 0;
		scim_error(r, 400, "mutability", "Renaming a group (role) is not supported.");
		return -1;
	}
	if (strcasecmp(path, "schemas") == 0 || strcasecmp(path, "id") == 0)
		return 0;
	if (strcasecmp(path, "members") == 0) {
		scim_set given = {0};
		if (scim_members(r, value, &given) != 0)
			return -1;
		if (kind == 'r' || (kind == 'd' && (value == NULL || json_is_null(value))))
			st->members.n = 0;
		for (size_t i = 0; i < given.n; i++) {
			if (kind == 'd')
				scim_set_del(&st->members, given.v[i]);
			else
				scim_set_add(r->pool, &st->members, given.v[i]);
		}
		return 0;
	}
	const char *x = NULL;
	int f = scim_value_filter(r, path, "members", &x);
	if (f < 0)
		return -1;
	if (f > 0 && kind == 'd') {
		scim_set_del(&st->members, x);
		return 0;
	}
	scim_error(r, 400, "invalidPath",
		   "Unsupported path '%s': use members, or members[value eq \"<user id>\"] to remove "
		   "one member.",
		   path);
	return -1;
}

static void scim_groups_modify(http_req *r, json_t *body, int put)
{
	const char *id = http_param(r, "id");
	auth_role g;
	scim_group_patch st;
	apim_rc rc = auth_roles_get(r->ctx, r->pool, id, &g);
	if (rc != APIM_OK) {
		scim_fail(r, rc, arena_sprintf(r->pool, "Group '%s'", id));
		return;
	}
	memset(&st, 0, sizeof(st));
	st.cur = &g;
	if (put) {
		/* PUT replaces the member list; displayName may only repeat. */
		json_t *dn = scim_get(body, "displayName");
		if (dn != NULL && scim_group_apply(r, &st, 'r', "displayName", dn) != 0)
			return;
		if (scim_members(r, scim_get(body, "members"), &st.members) != 0)
			return;
	} else {
		for (size_t i = 0; i < g.nmembers; i++)
			scim_set_add(r->pool, &st.members, g.members[i]);
		if (scim_patch_ops(r, body, &st, scim_group_apply) != 0)
			return;
	}
	if (scim_group_set_members(r, &g, &st.members) != 0)
		return;
	scim_reply_group(r, 200, id);
}

static void scim_groups_patch(http_req *r)
{
	json_t *body = scim_body(r);
	if (body == NULL)
		return;
	scim_groups_modify(r, body, 0);
	json_decref(body);
}

static void scim_groups_put(http_req *r)
{
	json_t *body = scim_body(r);
	if (body == NULL)
		return;
	scim_groups_modify(r, body, 1);
	json_decref(body);
}

static void scim_groups_delete(http_req *r)
{
	const char *id = http_param(r, "id");
	auth_role g;
	apim_rc rc = auth_roles_get(r->ctx, r->pool, id, &g);
	if (rc == APIM_OK)
		rc = auth_roles_delete(r->ctx, id);
	if (rc == APIM_EFORBIDDEN) {
		scim_error(r, 403, NULL, "The role '%s' cannot be deleted.", g.name);
		return;
	}
	if (rc != APIM_OK) {
		scim_fail(r, rc, arena_sprintf(r->pool, "Group '%s'", id));
		return;
	}
	log_info("scim", "role '%s' deleted", g.name);
	http_reply_empty(r, 204);
}

/* ---------- discovery ---------- */

static void scim_spc(http_req *r)
{
	json_t *o = json_pack(
		"{s:[s], s:{s:b}, s:{s:b, s:i, s:i}, s:{s:b, s:i}, s:{s:b}, s:{s:b}, s:{s:b},"
		" s:[{s:s, s:s, s:s, s:b}]}",
		"schemas", SCIM_SPC, "patch", "supported", 1, "bulk", "supported", 0,
		"maxOperations", 0, "maxPayloadSize", 0, "filter", "supported", 1, "maxResults",
		SCIM_MAX_COUNT, "changePassword", "supported", 1, "sort", "supported", 0, "etag",
		"supported", 0, "authenticationSchemes", "type", "httpbasic", "name", "HTTP Basic",
		"description", "Authentication with a username and password (RFC 7617).", "primary",
		1);
	scim_reply(r, 200, o);
}

static const http_route scim_route_table[] = {
	{"GET", "/scim2/Users", scim_users_list, SCIM_SCOPES, 0},
	{"POST", "/scim2/Users", scim_users_post, SCIM_SCOPES, HTTP_RAW_BODY},
	{"POST", "/scim2/Users/.search", scim_users_search, SCIM_SCOPES, HTTP_RAW_BODY},
	{"GET", "/scim2/Users/{id}", scim_users_get, SCIM_SCOPES, 0},
	{"PUT", "/scim2/Users/{id}", scim_users_put, SCIM_SCOPES, HTTP_RAW_BODY},
	{"PATCH", "/scim2/Users/{id}", scim_users_patch, SCIM_SCOPES, HTTP_RAW_BODY},
	{"DELETE", "/scim2/Users/{id}", scim_users_delete, SCIM_SCOPES, 0},
	{"GET", "/scim2/Groups", scim_groups_list, SCIM_SCOPES, 0},
	{"POST", "/scim2/Groups", scim_groups_post, SCIM_SCOPES, HTTP_RAW_BODY},
	{"GET", "/scim2/Groups/{id}", scim_groups_get, SCIM_SCOPES, 0},
	{"PUT", "/scim2/Groups/{id}", scim_groups_put, SCIM_SCOPES, HTTP_RAW_BODY},
	{"PATCH", "/scim2/Groups/{id}", scim_groups_patch, SCIM_SCOPES, HTTP_RAW_BODY},
	{"DELETE", "/scim2/Groups/{id}", scim_groups_delete, SCIM_SCOPES, 0},
	{"GET", "/scim2/Me", scim_me, NULL, 0},
	{"GET", "/scim2/ServiceProviderConfig", scim_spc, NULL, 0},
};

void scim_routes(http_server *s)
{
	http_server_routes(s, scim_route_table,
			   sizeof(scim_route_table) / sizeof(scim_route_table[0]));
}
