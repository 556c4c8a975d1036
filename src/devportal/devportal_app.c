/*
 * devportal_app.c: /applications of the Developer Portal v3 API (create,
 * list, get, update, delete), the helpers the application half shares
 * (devportal_app_internal.h), its migrations and its routes.
 *
 * Deleting an application removes, in one apimgtdb transaction, its
 * subscriptions, key mappings, API key records and the application, each
 * recorded in the change sequence, the OAuth clients created for it
 * (which revokes their tokens) and its live API keys (revoked): a database
 * failure half-way leaves the application whole, never a usable client of
 * a deleted application.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin/admin.h"
#include "common/ctx.h"
#include "common/log.h"
#include "common/util.h"
#include "devportal/devportal_app_internal.h"
#include "devportal/devportal_internal.h"
#include "keymanager/km_token.h"
#include "store/db.h"
#include "store/store_policy.h"
#include "store/store_subscription.h"

#define APP_NAME_MAX 100  /* characters */
#define APP_DESC_MAX 512  /* characters, as the reference */
#define APP_ATTR_MAX 50   /* attributes per application */
#define APP_ATTR_KEY_MAX 255
#define APP_ATTR_VALUE_MAX 1024
#define APP_GROUPS_MAX 50
#define ALL_ROWS 1000000  /* "every row" for the per-application lists of a delete */

/* ---------- shared helpers ---------- */

int devportal_app_visible(const principal *who, const char *owner)
{
	if (who == NULL || owner == NULL)
		return 0;
	return principal_is_admin(who) || strcmp(who->username, owner) == 0;
}


int devportal_app_load(http_req *r, const char *id, store_application *out)
{
	if (id == NULL || *id == '\0') {
		http_reply_error(r, 400, "The application id is missing");
		return -1;
	}
	apim_rc rc = store_application_get(r->ctx->apimgt, r->pool, id, out);
	if (rc == APIM_OK && !devportal_app_visible(r->who, out->owner))
		rc = APIM_ENOTFOUND; /* another user's application does not exist for the caller */
	if (rc == APIM_ENOTFOUND) {
		http_reply_error(r, 404, "Application %s not found", id);
		return -1;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "application");
		return -1;
	}
	return 0;
}

char *devportal_app_json_text(arena *pool, const json_t *v)
{
	char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	if (s == NULL)
		return arena_strdup(pool, "null");
	char *copy = arena_strdup(pool, s);
	free(s);
	return copy;
}

json_t *devportal_app_time(int64_t ms)
{
	char buf[24];
	snprintf(buf, sizeof(buf), "%" PRId64, ms);
	return json_string(buf);
}

/* Parses stored JSON text, falling back to an empty value of type t. */
static json_t *parse_or(const char *text, json_type t)
{
	json_t *v = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
	if (v == NULL || json_typeof(v) != t) {
		json_decref(v);
		v = t == JSON_ARRAY ? json_array() : json_object();
	}
	return v;
}

json_t *devportal_app_info(const store_application *a)
{
	return json_pack("{s:s, s:s, s:s, s:s?, s:s, s:o, s:I, s:o, s:s, s:o, s:o}",
			 "applicationId", a->id, "name", a->name, "throttlingPolicy", a->tier,
			 "description", a->description, "status", a->status, "groups",
			 parse_or(a->groups, JSON_ARRAY), "subscriptionCount",
			 (json_int_t)a->subscription_count, "attributes",
			 parse_or(a->attributes, JSON_OBJECT), "owner", a->owner, "createdTime",
			 devportal_app_time(a->created_ms), "updatedTime",
			 devportal_app_time(a->updated_ms));
}

apim_rc devportal_app_record(http_req *r, const char *entity, const char *id,
			     const char *action, json_t *payload)
{
	const char *text = payload ? devportal_app_json_text(r->pool, payload) : NULL;
	json_decref(payload);
	return db_change_record(r->ctx->apimgt, entity, id, action, text, NULL);
}

json_t *devportal_app_optional_body(http_req *r)
{
	const char *b = r->body;
	size_t i = 0;
	while (b != NULL && i < r->body_len && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' ||
						b[i] == '\n'))
		i++;
	if (b == NULL || i == r->body_len)
		return json_object();
	json_t *v = http_json_body(r, JSON_OBJECT);
	return v ? json_incref(v) : NULL;
}

/* ---------- the Application object ---------- */

/* Number of UTF-8 characters of s, or -1 when s holds a control character
 * (line breaks and tabs allowed when text). */
static long utf8_count(const char *s, int text)
{
	long n = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		int ctl = *p < 0x20 || *p == 0x7f;
		if (ctl && !(text && (*p == '\n' || *p == '\r' || *p == '\t')))
			return -1;
		if ((*p & 0xc0) != 0x80)
			n++;
	}
	return n;
}

static long utf8_chars(const char *s)
{
	return utf8_count(s, 0);
}

/* The value of an optional string field: 0 with *out (NULL when absent or
 * null), or -1 after answering 400. */
static int opt_string(http_req *r, json_t *in, const char *field, const char **out)
{
	json_t *v = json_object_get(in, field);
	*out = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_string(v)) {
		http_reply_error(r, 400, "'%s' must be a string", field);
		return -1;
	}
	*out = json_string_value(v);
	return 0;
}

/* Answers 400 naming the application-level policies. */
static void reply_bad_tier(http_req *r, const char *tier)
{
	store_policy *ps = NULL;
	size_t n = 0;
	int64_t total = 0;
	char *names = arena_strdup(r->pool, "");
	if (store_policy_list(r->ctx->apimgt, r->pool, "application", 0, 100, &ps, &n, &total) ==
	    APIM_OK)
		for (size_t i = 0; i < n; i++)
			names = arena_sprintf(r->pool, "%s%s%s", names, i ? ", " : "", ps[i].name);
	http_reply_error(r, 400,
			 "Throttling policy '%s' is not an application-level policy; use one of: %s "
			 "(GET /api/am/devportal/v3/throttling-policies/application)",
			 tier, *names ? names : "(none defined)");
}

/*
 * Validates the Application object in and fills a's name, tier,
 * token_type, description, attributes and groups (from r->pool).
 * Read-only fields (applicationId, owner, status, keys, ...) are ignored.
 * Answers 400 and returns -1 on the first problem.
 */
static int app_parse(http_req *r, json_t *in, store_application *a)
{
	const char *name, *tier, *desc, *tt;
	if (opt_string(r, in, "name", &name) != 0 || opt_string(r, in, "throttlingPolicy", &tier) != 0 ||
	    opt_string(r, in, "description", &desc) != 0 || opt_string(r, in, "tokenType", &tt) != 0)
		return -1;
	if (name == NULL || *name == '\0') {
		http_reply_error(r, 400, "'name' is required: the application's name (1 to %d "
					 "characters)", APP_NAME_MAX);
		return -1;
	}
	long len = utf8_chars(name);
	if (len < 0 || len > APP_NAME_MAX) {
		http_reply_error(r, 400, "'name' must be 1 to %d characters without control "
					 "characters", APP_NAME_MAX);
		return -1;
	}
	size_t blen = strlen(name);
	if (name[0] == ' ' || name[blen - 1] == ' ') {
		http_reply_error(r, 400, "'name' must not start or end with a space");
		return -1;
	}
	if (tier == NULL || *tier == '\0') {
		http_reply_error(r, 400, "'throttlingPolicy' is required: an application-level "
					 "throttling policy such as Unlimited");
		return -1;
	}
	int exists = 0;
	apim_rc rc = admin_policy_exists(r->ctx, "application", tier, &exists);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "throttling policy");
		return -1;
	}
	if (!exists) {
		reply_bad_tier(r, tier);
		return -1;
	}
	if (desc != NULL && ((len = utf8_count(desc, 1)) < 0 || len > APP_DESC_MAX)) {
		http_reply_error(r, 400, "'description' must be at most %d characters without "
					 "control characters", APP_DESC_MAX);
		return -1;
	}
	/* Our Key Manager issues JWT access tokens only; OAUTH (opaque tokens)
	 * is accepted for scripts written for the reference and means JWT. */
	if (tt != NULL && strcmp(tt, "JWT") != 0 && strcmp(tt, "OAUTH") != 0 &&
	    strcmp(tt, "DEFAULT") != 0) {
		http_reply_error(r, 400, "'tokenType' must be JWT (or OAUTH, which this server "
					 "treats as JWT), not '%s'", tt);
		return -1;
	}

	json_t *attrs = json_object_get(in, "attributes");
	if (attrs != NULL && !json_is_null(attrs)) {
		if (!json_is_object(attrs)) {
			http_reply_error(r, 400, "'attributes' must be an object of string values");
			return -1;
		}
		if (json_object_size(attrs) > APP_ATTR_MAX) {
			http_reply_error(r, 400, "'attributes' may hold at most %d entries",
					 APP_ATTR_MAX);
			return -1;
		}
		const char *k;
		json_t *v;
		json_object_foreach(attrs, k, v)
		{
			if (!json_is_string(v)) {
				http_reply_error(r, 400, "Attribute '%s' must be a string", k);
				return -1;
			}
			if (*k == '\0' || strlen(k) > APP_ATTR_KEY_MAX ||
			    strlen(json_string_value(v)) > APP_ATTR_VALUE_MAX) {
				http_reply_error(r, 400, "Attribute names must be 1 to %d bytes and "
							 "values at most %d bytes ('%.40s')",
						 APP_ATTR_KEY_MAX, APP_ATTR_VALUE_MAX, k);
				return -1;
			}
		}
		a->attributes = devportal_app_json_text(r->pool, attrs);
	} else {
		a->attributes = "{}";
	}

	json_t *groups = json_object_get(in, "groups");
	if (groups != NULL && !json_is_null(groups)) {
		size_t i;
		json_t *g;
		if (!json_is_array(groups) || json_array_size(groups) > APP_GROUPS_MAX) {
			http_reply_error(r, 400, "'groups' must be an array of at most %d strings",
					 APP_GROUPS_MAX);
			return -1;
		}
		json_array_foreach(groups, i, g)
		{
			if (!json_is_string(g) || utf8_chars(json_string_value(g)) < 0) {
				http_reply_error(r, 400, "'groups' must be an array of strings");
				return -1;
			}
		}
		a->groups = devportal_app_json_text(r->pool, groups);
	} else {
		a->groups = "[]";
	}
	a->name = arena_strdup(r->pool, name);
	a->tier = arena_strdup(r->pool, tier);
	a->description = desc ? arena_strdup(r->pool, desc) : NULL;
	a->token_type = "JWT";
	return 0;
}

/* The Application object as GET renders it, with its keys (new reference). */
static json_t *app_render(http_req *r, const store_application *a)
{
	json_t *o = devportal_app_info(a);
	json_t *keys = json_array();
	store_app_key *ks = NULL;
	size_t n = 0;
	if (store_application_key_list(r->ctx->apimgt, r->pool, a->id, &ks, &n) == APIM_OK) {
		for (size_t i = 0; i < n; i++) {
			km_client c;
			int have = km_client_get(r->ctx, r->pool, ks[i].consumer_key, &c) == APIM_OK;
			json_array_append_new(keys, devportal_keys_render(&ks[i], have ? &c : NULL,
									  NULL, NULL));
		}
	}
	json_object_set_new(o, "tokenType", json_string(a->token_type ? a->token_type : "JWT"));
	json_object_set_new(o, "keys", keys);
	json_object_set_new(o, "subscriptionScopes", json_array());
	json_object_set_new(o, "hashEnabled", json_false());
	return o;
}

static json_t *app_payload(const store_application *a)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "name", a->name, "owner", a->owner,
			 "tier", a->tier, "tokenType", a->token_type, "status", a->status,
			 "attributes", parse_or(a->attributes, JSON_OBJECT));
}

/* ---------- handlers ---------- */

static void h_list(http_req *r)
{
	int64_t limit, offset, total = 0;
	if (http_paging(r, &limit, &offset) != 0)
		return;
	store_application_query q = {.limit = limit, .offset = offset, .order_by = "name"};
	const char *query = http_query(r, "query");
	const char *sort = http_query(r, "sortBy");
	const char *order = http_query(r, "sortOrder");
	if (query != NULL && *query != '\0')
		q.name = query;
	if (sort != NULL && *sort != '\0') {
		if (strcmp(sort, "name") == 0)
			q.order_by = "name";
		else if (strcmp(sort, "throttlingPolicy") == 0)
			q.order_by = "tier";
		else if (strcmp(sort, "status") == 0)
			q.order_by = "status";
		else {
			http_reply_error(r, 400, "'sortBy' must be name, throttlingPolicy or status");
			return;
		}
	}
	if (order != NULL && *order != '\0') {
		if (strcasecmp(order, "desc") == 0)
			q.desc = 1;
		else if (strcasecmp(order, "asc") != 0) {
			http_reply_error(r, 400, "'sortOrder' must be asc or desc");
			return;
		}
	}
	if (!principal_is_admin(r->who))
		q.owner = r->who->username;
	store_application *apps = NULL;
	size_t n = 0;
	apim_rc rc = store_application_list(r->ctx->apimgt, r->pool, &q, &apps, &n, &total);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "applications");
		return;
	}
	json_t *list = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(list, devportal_app_info(&apps[i]));
	http_reply_list(r, list, total, limit, offset);
}

/*
 * Inserts (create) or updates the application and records the change in one
 * transaction; on failure answers (409 for a taken name) and returns -1.
 */
static int app_store(http_req *r, const store_application *a, int create)
{
	db *d = r->ctx->apimgt;
	apim_rc rc = db_begin(d);
	if (rc == APIM_OK)
		rc = create ? store_application_insert(d, a) : store_application_update(d, a);
	if (rc == APIM_OK)
		rc = devportal_app_record(r, "application", a->id, create ? "create" : "update",
					  app_payload(a));
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc == APIM_OK)
		return 0;
	db_rollback(d);
	if (rc == APIM_ECONFLICT)
		http_reply_error(r, 409, "An application named '%s' already exists for user %s; "
				 "choose another name", a->name, a->owner);
	else
		http_reply_store_error(r, rc, "application");
	return -1;
}

static void h_create(http_req *r)
{
	json_t *in = http_json_body(r, JSON_OBJECT);
	if (in == NULL)
		return;
	store_application a;
	memset(&a, 0, sizeof(a));
	if (app_parse(r, in, &a) != 0)
		return;
	apim_uuid(a.id);
	a.owner = r->who->username;
	a.status = "APPROVED";
	a.created_ms = a.updated_ms = apim_now_ms();
	if (app_store(r, &a, 1) != 0)
		return;
	log_info("devportal", "application %s (\"%s\") created by %s", a.id, a.name, a.owner);
	http_set_header(r, "Location", arena_sprintf(r->pool, DP_BASE "/applications/%s", a.id));
	http_reply_json(r, 201, app_render(r, &a));
}

static void h_get(http_req *r)
{
	store_application a;
	if (devportal_app_load(r, http_param(r, "applicationId"), &a) != 0)
		return;
	http_reply_json(r, 200, app_render(r, &a));
}

static void h_update(http_req *r)
{
	store_application cur, a;
	if (devportal_app_load(r, http_param(r, "applicationId"), &cur) != 0)
		return;
	json_t *in = http_json_body(r, JSON_OBJECT);
	if (in == NULL)
		return;
	json_t *now = app_render(r, &cur);
	int bad = http_check_if_match(r, now);
	json_decref(now);
	if (bad != 0)
		return;
	a = cur;
	if (app_parse(r, in, &a) != 0)
		return;
	a.updated_ms = apim_now_ms();
	if (app_store(r, &a, 0) != 0)
		return;
	if (strcmp(cur.name, a.name) != 0)
		devportal_keys_app_renamed(r, &a);
	http_reply_json(r, 200, app_render(r, &a));
}

static void h_delete(http_req *r)
{
	store_application a;
	if (devportal_app_load(r, http_param(r, "applicationId"), &a) != 0)
		return;
	db *d = r->ctx->apimgt;
	store_subscription *subs = NULL;
	store_app_key *keys = NULL;
	store_app_apikey *akeys = NULL;
	size_t nsubs = 0, nkeys = 0, nakeys = 0;
	int64_t total = 0;
	apim_rc rc = db_begin(d);
	if (rc == APIM_OK)
		rc = store_application_lock(d, a.id);
	if (rc == APIM_OK)
		rc = store_subscription_search(d, r->pool, NULL, a.id, NULL, 0, ALL_ROWS, &subs,
					       &nsubs, &total);
	if (rc == APIM_OK)
		rc = store_application_key_list(d, r->pool, a.id, &keys, &nkeys);
	if (rc == APIM_OK)
		rc = store_application_apikey_live(d, r->pool, a.id, apim_now_ms(), &akeys, &nakeys);
	for (size_t i = 0; rc == APIM_OK && i < nsubs; i++) {
		rc = store_subscription_delete(d, subs[i].id);
		if (rc == APIM_OK)
			rc = devportal_app_record(r, "subscription", subs[i].id, "delete",
						  devportal_subscription_payload(
							  subs[i].api_id, a.id, subs[i].tier,
							  subs[i].status));
	}
	for (size_t i = 0; rc == APIM_OK && i < nkeys; i++) {
		rc = store_application_key_delete(d, keys[i].id);
		if (rc == APIM_OK)
			rc = devportal_app_record(r, "key_mapping", keys[i].id, "delete",
						  devportal_keys_payload(&keys[i]));
	}
	if (rc == APIM_OK)
		rc = store_application_apikey_delete_all(d, a.id);
	if (rc == APIM_OK)
		rc = store_application_delete(d, a.id);
	if (rc == APIM_OK)
		rc = devportal_app_record(r, "application", a.id, "delete", app_payload(&a));
	/* Clients registered elsewhere and only mapped here stay with their
	 * owner; the ones created for this application go with it, and its
	 * API keys are revoked, in the same transaction: a database failure
	 * leaves the application whole rather than usable clients behind. */
	for (size_t i = 0; rc == APIM_OK && i < nkeys; i++) {
		if (strcmp(keys[i].create_mode, "CREATED") != 0)
			continue;
		rc = km_client_delete(r->ctx, keys[i].consumer_key);
		if (rc == APIM_ENOTFOUND)
			rc = APIM_OK;
	}
	for (size_t i = 0; rc == APIM_OK && i < nakeys; i++)
		rc = km_token_revoke_jti(r->ctx, akeys[i].jti, akeys[i].expiry_ms / 1000);
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc != APIM_OK) {
		db_rollback(d);
		http_reply_store_error(r, rc, "application");
		return;
	}
	log_info("devportal", "application %s (\"%s\" of %s) deleted by %s with %zu "
			      "subscription(s) and %zu key mapping(s)",
		 a.id, a.name, a.owner, r->who->username, nsubs, nkeys);
	http_reply_empty(r, 200);
}

/* ---------- migrations and routes ---------- */

apim_rc devportal_app_migrate(apim_ctx *ctx)
{
	if (ctx->apimgt == NULL)
		return APIM_OK;
	apim_rc rc = store_application_migrate(ctx->apimgt);
	if (rc != APIM_OK)
		log_error("devportal", "application table migrations failed: %s",
			  apim_strerror(rc));
	return rc;
}

static const http_route app_routes[] = {
	{"GET", DP_BASE "/applications", h_list, DP_SCOPES_APP, 0},
	{"POST", DP_BASE "/applications", h_create, DP_SCOPES_APP, 0},
	{"GET", DP_BASE "/applications/{applicationId}", h_get, DP_SCOPES_APP, 0},
	{"PUT", DP_BASE "/applications/{applicationId}", h_update, DP_SCOPES_APP, 0},
	{"DELETE", DP_BASE "/applications/{applicationId}", h_delete, DP_SCOPES_APP, 0},
};

void devportal_app_routes(http_server *s)
{
	http_server_routes(s, app_routes, sizeof(app_routes) / sizeof(app_routes[0]));
	devportal_keys_routes(s);
	devportal_apikey_routes(s);
	devportal_subscription_routes(s);
}
