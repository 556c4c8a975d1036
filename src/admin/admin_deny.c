/*
 * admin_deny.c: deny policies (the reference's blocking conditions). A
 * condition blocks an API (by context), an application ("owner:name"), a
 * user, an IP address or an IP range (IPv4 or IPv6; both may be inverted:
 * "block everything but"). Each is enabled or disabled with PATCH.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin/admin_internal.h"
#include "admin/admin_schema.h"
#include "admin/admin_validate.h"
#include "common/util.h"
#include "store/store_block.h"

#define ERRLEN 512

static const char *const condition_types[] = {"API", "APPLICATION", "IP", "IPRANGE", "USER",
					      NULL};

static const schema_field deny_fields[] = {
	{.name = "conditionId", .type = SCHEMA_STRING, .flags = 0},
	{.name = "conditionType", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED, .enums = condition_types},
	{.name = "conditionValue", .type = SCHEMA_ANY, .flags = SCHEMA_REQUIRED},
	{.name = "conditionStatus", .type = SCHEMA_BOOL, .flags = 0},
	{.name = NULL},
};
static const schema_field ip_value_fields[] = {
	{.name = "fixedIp", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED},
	{.name = "invert", .type = SCHEMA_BOOL, .flags = 0},
	{.name = NULL},
};
static const schema_field range_value_fields[] = {
	{.name = "startingIp", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED},
	{.name = "endingIp", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED},
	{.name = "invert", .type = SCHEMA_BOOL, .flags = 0},
	{.name = NULL},
};
static const schema_field status_fields[] = {
	{.name = "conditionId", .type = SCHEMA_STRING, .flags = 0},
	{.name = "conditionStatus", .type = SCHEMA_BOOL, .flags = SCHEMA_REQUIRED},
	{.name = NULL},
};

static int has_space(const char *s)
{
	for (; *s; s++)
		if (isspace((unsigned char)*s) || iscntrl((unsigned char)*s))
			return 1;
	return 0;
}

/* Checks a string-valued condition (API, APPLICATION, USER). */
static int check_string_value(arena *pool, const char *type, const char *v, char **msg)
{
	size_t n = strlen(v);
	if (strcmp(type, "API") == 0) {
		if (n < 2 || v[0] != '/' || n > 512 || has_space(v)) {
			*msg = arena_sprintf(pool,
					     "'conditionValue' of an API condition must be the API's "
					     "context with its version, e.g. /pizza/1.0.0 (got '%s')",
					     v);
			return -1;
		}
	} else if (strcmp(type, "APPLICATION") == 0) {
		const char *colon = strchr(v, ':');
		if (colon == NULL || colon == v || colon[1] == '\0' || n > 512 ||
		    isspace((unsigned char)v[0]) || isspace((unsigned char)v[n - 1])) {
			*msg = arena_sprintf(pool,
					     "'conditionValue' of an APPLICATION condition must be "
					     "owner:applicationName, e.g. admin:DefaultApplication "
					     "(got '%s')",
					     v);
			return -1;
		}
	} else if (n == 0 || n > 255 || has_space(v)) { /* USER */
		*msg = arena_sprintf(pool,
				     "'conditionValue' of a USER condition must be a user name "
				     "without spaces (got '%s')",
				     v);
		return -1;
	}
	return 0;
}

/*
 * Checks conditionType/conditionValue of body and renders the value as the
 * API returns it (*value) with its duplicate key (*key, from pool).
 */
static int build_value(arena *pool, json_t *body, json_t **value, const char **key, char **msg)
{
	const char *type = admin_json_str(body, "conditionType");
	json_t *v = json_object_get(body, "conditionValue");
	char err[ERRLEN], a[64], b[64];

	if (strcmp(type, "IP") == 0 || strcmp(type, "IPRANGE") == 0) {
		int range = strcmp(type, "IPRANGE") == 0;
		json_t *obj = v;
		if (json_is_string(v) && !range) /* a bare address: older clients send it so */
			obj = json_pack("{s:O}", "fixedIp", v);
		else if (!json_is_object(v)) {
			*msg = arena_sprintf(pool,
					     range ? "'conditionValue' of an IPRANGE condition must be "
						     "an object {startingIp, endingIp, invert}"
						   : "'conditionValue' of an IP condition must be an "
						     "object {fixedIp, invert}");
			return -1;
		} else {
			json_incref(obj);
		}
		int ok = admin_schema_check(pool, obj, range ? range_value_fields : ip_value_fields,
					    "conditionValue", msg) == APIM_OK;
		int invert = admin_json_bool(obj, "invert", 0);
		if (ok && !range) {
			const char *ip = admin_json_str(obj, "fixedIp");
			ok = admin_validate_ip("conditionValue.fixedIp", ip, NULL, NULL, err,
					       sizeof(err)) == APIM_OK;
			if (ok) {
				admin_ip_canonical(ip, a, sizeof(a));
				*key = arena_sprintf(pool, "%s%s", invert ? "!" : "", a);
				*value = json_pack("{s:s, s:b}", "fixedIp", ip, "invert", invert);
			}
		} else if (ok) {
			const char *s = admin_json_str(obj, "startingIp");
			const char *e = admin_json_str(obj, "endingIp");
			ok = admin_validate_ip_range("conditionValue.startingIp", s,
						     "conditionValue.endingIp", e, err,
						     sizeof(err)) == APIM_OK;
			if (ok) {
				admin_ip_canonical(s, a, sizeof(a));
				admin_ip_canonical(e, b, sizeof(b));
				*key = arena_sprintf(pool, "%s%s-%s", invert ? "!" : "", a, b);
				*value = json_pack("{s:s, s:s, s:b}", "startingIp", s, "endingIp", e,
						   "invert", invert);
			}
		}
		if (!ok && *msg == NULL)
			*msg = arena_strdup(pool, err);
		json_decref(obj);
		return ok ? 0 : -1;
	}
	if (!json_is_string(v)) {
		*msg = arena_sprintf(pool, "'conditionValue' of a%s %s condition must be a string",
				     strcmp(type, "API") == 0 || strcmp(type, "APPLICATION") == 0
					     ? "n"
					     : "",
				     type);
		return -1;
	}
	if (check_string_value(pool, type, json_string_value(v), msg) != 0)
		return -1;
	*key = arena_strdup(pool, json_string_value(v));
	*value = json_string(json_string_value(v));
	return 0;
}

static json_t *render(const store_block *b)
{
	json_t *v = json_loads(b->value, JSON_DECODE_ANY, NULL);
	if (v == NULL)
		v = json_string(b->value);
	return json_pack("{s:s, s:s, s:o, s:b}", "conditionId", b->id, "conditionType", b->type,
			 "conditionValue", v, "conditionStatus", b->enabled);
}

static apim_rc load(http_req *r, const char *id, store_block *b)
{
	apim_rc rc = apim_uuid_valid(id) ? store_block_get(r->ctx->apimgt, r->pool, id, b)
					 : APIM_ENOTFOUND;
	if (rc != APIM_OK)
		http_reply_store_error(r, rc, arena_sprintf(r->pool, "Deny policy '%s'", id));
	return rc;
}

/*
 * query: "conditionType:IP", "conditionValue:/pizza/1.0.0", or both joined
 * by '&' or spaces.
 */
static int parse_query(http_req *r, const char **type, const char **value)
{
	const char *q = http_query(r, "query");
	*type = *value = NULL;
	if (q == NULL)
		return 0;
	char *s = arena_strdup(r->pool, q), *save = NULL;
	for (char *t = strtok_r(s, "& ", &save); t != NULL; t = strtok_r(NULL, "& ", &save)) {
		if (strncmp(t, "conditionType:", 14) == 0) {
			const char *v = t + 14;
			for (size_t i = 0; condition_types[i] != NULL; i++)
				if (strcasecmp(v, condition_types[i]) == 0)
					*type = condition_types[i];
			if (*type == NULL) {
				http_reply_error(r, 400,
						 "'query': conditionType must be one of: API, "
						 "APPLICATION, IP, IPRANGE, USER (got '%s')",
						 v);
				return -1;
			}
		} else if (strncmp(t, "conditionValue:", 15) == 0) {
			char canon[64];
			*value = admin_ip_canonical(t + 15, canon, sizeof(canon)) == APIM_OK
					 ? arena_strdup(r->pool, canon)
					 : t + 15;
		} else {
			http_reply_error(r, 400,
					 "'query' takes conditionType:<type> and/or "
					 "conditionValue:<value> (got '%s')",
					 t);
			return -1;
		}
	}
	return 0;
}

void admin_deny_list(http_req *r)
{
	int64_t limit, offset, total = 0;
	const char *type, *value;
	store_block *bs = NULL;
	size_t n = 0;
	if (admin_paging(r, &limit, &offset) != 0 || parse_query(r, &type, &value) != 0)
		return;
	apim_rc rc = store_block_list(r->ctx->apimgt, r->pool, type, value, offset, limit, &bs, &n,
				      &total);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "Deny policies");
		return;
	}
	json_t *list = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(list, render(&bs[i]));
	http_reply_list(r, list, total, limit, offset);
}

void admin_deny_create(http_req *r)
{
	json_t *body = http_json_body(r, JSON_OBJECT);
	if (body == NULL)
		return;
	char *msg = NULL;
	json_t *value = NULL;
	const char *key = NULL;
	if (admin_schema_check(r->pool, body, deny_fields, "", &msg) != APIM_OK ||
	    build_value(r->pool, body, &value, &key, &msg) != 0) {
		http_reply_error(r, 400, "%s", msg);
		return;
	}
	char id[APIM_UUID_LEN + 1];
	apim_uuid(id);
	char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
	int64_t now = apim_now_ms();
	store_block b = {.id = id, .type = admin_json_str(body, "conditionType"), .value = text,
			 .value_key = key, .enabled = admin_json_bool(body, "conditionStatus", 1),
			 .created_ms = now, .updated_ms = now};
	apim_rc rc = text ? store_block_create(r->ctx->apimgt, &b) : APIM_ENOMEM;
	json_decref(value);
	if (rc == APIM_ECONFLICT) {
		http_reply_error(r, 409,
				 "A deny policy of type %s with this value already exists (%s); "
				 "enable or delete that one instead",
				 b.type, text);
		free(text);
		return;
	}
	if (rc != APIM_OK) {
		free(text);
		http_reply_store_error(r, rc, "Deny policy");
		return;
	}
	b.value = arena_strdup(r->pool, text);
	free(text);
	http_set_header(r, "Location",
			arena_sprintf(r->pool, ADMIN_BASE "/throttling/deny-policy/%s", id));
	http_reply_json(r, 201, render(&b));
}

void admin_deny_get(http_req *r)
{
	store_block b;
	if (load(r, http_param(r, "conditionId"), &b) != APIM_OK)
		return;
	http_reply_json(r, 200, render(&b));
}

void admin_deny_patch(http_req *r)
{
	json_t *body = http_json_body(r, JSON_OBJECT);
	if (body == NULL)
		return;
	char *msg = NULL;
	if (admin_schema_check(r->pool, body, status_fields, "", &msg) != APIM_OK) {
		http_reply_error(r, 400, "%s", msg);
		return;
	}
	const char *id = http_param(r, "conditionId");
	const char *bid = admin_json_str(body, "conditionId");
	store_block b;
	if (load(r, id, &b) != APIM_OK)
		return;
	if (bid != NULL && strcmp(bid, b.id) != 0) {
		http_reply_error(r, 400,
				 "'conditionId' in the body does not match the deny policy in the "
				 "path ('%s')",
				 b.id);
		return;
	}
	int enabled = admin_json_bool(body, "conditionStatus", 1);
	apim_rc rc = store_block_set_enabled(r->ctx->apimgt, b.id, enabled, apim_now_ms());
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, arena_sprintf(r->pool, "Deny policy '%s'", b.id));
		return;
	}
	b.enabled = enabled;
	http_reply_json(r, 200, render(&b));
}

void admin_deny_delete(http_req *r)
{
	const char *id = http_param(r, "conditionId");
	apim_rc rc = apim_uuid_valid(id) ? store_block_delete(r->ctx->apimgt, id) : APIM_ENOTFOUND;
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, arena_sprintf(r->pool, "Deny policy '%s'", id));
		return;
	}
	http_reply_empty(r, 200);
}
