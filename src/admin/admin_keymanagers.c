/*
 * admin_keymanagers.c: /key-managers[/{keyManagerId}], the token issuers the
 * gateways accept besides our own Key Manager.
 *
 * The built-in "Resident Key Manager" is listed first and can be read but
 * neither changed nor deleted. The others are issuers whose JWT access
 * tokens the gateways verify with the keys published at a JWKS URL
 * (certificates {type: JWKS, value: url}); the application of such a token
 * is found through its consumer-key claim (consumerKeyClaim, "azp" unless
 * set) in the applications' key mappings.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin/admin.h"
#include "admin/admin_internal.h"
#include "admin/admin_schema.h"
#include "admin/admin_validate.h"
#include "common/util.h"
#include "keymanager/km_keys.h"
#include "store/store_keymanager.h"

#define ERRLEN 512
#define KM_NAME_MAX 100
#define KM_URL_MAX 2048
#define KM_ISSUER_MAX 1024
#define KM_CLAIM_MAX 255

/* the same id as the Developer Portal's /key-managers gives our own */
#define KM_RESIDENT_ID "4a8b7c2e-5f3d-4e6a-9b1c-0d2e3f4a5b6c"
#define KM_RESIDENT_NAME "Resident Key Manager"

static const char *const cert_types[] = {"JWKS", "PEM", NULL};
static const char *const token_types[] = {"DIRECT", "EXCHANGED", "BOTH", NULL};
static const char *const permission_types[] = {"PUBLIC", "ALLOW", "DENY", NULL};

static const schema_field cert_fields[] = {
	{.name = "type", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED, .enums = cert_types},
	{.name = "value", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED | SCHEMA_NONEMPTY,
	 .max = KM_URL_MAX},
	{.name = NULL},
};
static const schema_field claim_fields[] = {
	{.name = "remoteClaim", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED, .max = KM_CLAIM_MAX},
	{.name = "localClaim", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED, .max = KM_CLAIM_MAX},
	{.name = NULL},
};
static const schema_field permission_fields[] = {
	{.name = "permissionType", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED,
	 .enums = permission_types},
	{.name = "roles", .type = SCHEMA_ARRAY, .flags = 0, .item = SCHEMA_STRING},
	{.name = NULL},
};
#define KM_URL_FIELD(n) {.name = n, .type = SCHEMA_STRING, .flags = 0, .max = KM_URL_MAX}
static const schema_field km_fields[] = {
	{.name = "id", .type = SCHEMA_STRING, .flags = 0},
	{.name = "name", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED},
	{.name = "displayName", .type = SCHEMA_STRING, .flags = 0, .max = 255},
	{.name = "type", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED | SCHEMA_NONEMPTY,
	 .max = 100},
	{.name = "description", .type = SCHEMA_STRING, .flags = 0, .max = 1024},
	{.name = "enabled", .type = SCHEMA_BOOL, .flags = 0},
	{.name = "issuer", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED | SCHEMA_NONEMPTY,
	 .max = KM_ISSUER_MAX},
	{.name = "alias", .type = SCHEMA_STRING, .flags = 0, .max = 255},
	{.name = "certificates", .type = SCHEMA_OBJECT, .flags = SCHEMA_REQUIRED,
	 .fields = cert_fields},
	{.name = "consumerKeyClaim", .type = SCHEMA_STRING, .flags = 0, .max = KM_CLAIM_MAX},
	{.name = "scopesClaim", .type = SCHEMA_STRING, .flags = 0, .max = KM_CLAIM_MAX},
	{.name = "tokenType", .type = SCHEMA_STRING, .flags = 0, .enums = token_types},
	KM_URL_FIELD("wellKnownEndpoint"),
	KM_URL_FIELD("introspectionEndpoint"),
	KM_URL_FIELD("clientRegistrationEndpoint"),
	KM_URL_FIELD("tokenEndpoint"),
	KM_URL_FIELD("displayTokenEndpoint"),
	KM_URL_FIELD("revokeEndpoint"),
	KM_URL_FIELD("displayRevokeEndpoint"),
	KM_URL_FIELD("userInfoEndpoint"),
	KM_URL_FIELD("authorizeEndpoint"),
	KM_URL_FIELD("scopeManagementEndpoint"),
	{.name = "availableGrantTypes", .type = SCHEMA_ARRAY, .flags = 0, .item = SCHEMA_STRING},
	{.name = "enableTokenGeneration", .type = SCHEMA_BOOL, .flags = 0},
	{.name = "enableTokenEncryption", .type = SCHEMA_BOOL, .flags = 0},
	{.name = "enableTokenHashing", .type = SCHEMA_BOOL, .flags = 0},
	{.name = "enableMapOAuthConsumerApps", .type = SCHEMA_BOOL, .flags = 0},
	{.name = "enableOAuthAppCreation", .type = SCHEMA_BOOL, .flags = 0},
	{.name = "enableSelfValidationJWT", .type = SCHEMA_BOOL, .flags = 0},
	{.name = "claimMapping", .type = SCHEMA_ARRAY, .flags = 0, .item = SCHEMA_OBJECT,
	 .fields = claim_fields},
	{.name = "tokenValidation", .type = SCHEMA_ARRAY, .flags = 0, .item = SCHEMA_ANY},
	{.name = "endpoints", .type = SCHEMA_ARRAY, .flags = 0, .item = SCHEMA_ANY},
	{.name = "additionalProperties", .type = SCHEMA_ANY, .flags = 0},
	{.name = "permissions", .type = SCHEMA_OBJECT, .flags = 0, .fields = permission_fields},
	{.name = "isGlobal", .type = SCHEMA_BOOL, .flags = 0},
	{.name = "global", .type = SCHEMA_BOOL, .flags = 0},
	{.name = NULL},
};

/* 1 when s is an absolute http(s) URL with a host and no spaces */
static int km_url_ok(const char *s)
{
	const char *h;
	if (strncasecmp(s, "https://", 8) == 0)
		h = s + 8;
	else if (strncasecmp(s, "http://", 7) == 0)
		h = s + 7;
	else
		return 0;
	if (*h == '\0' || *h == '/' || *h == ':')
		return 0;
	for (const char *p = s; *p; p++)
		if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
			return 0;
	return 1;
}

/* 1 when s is a usable claim name: printable, no spaces */
static int km_claim_ok(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s; s++)
		if (!isgraph((unsigned char)*s))
			return 0;
	return 1;
}

static const char *or_default(const char *s, const char *def)
{
	return s != NULL && *s ? s : def;
}

static void copy_if(json_t *doc, json_t *body, const char *field, json_t *def)
{
	json_t *v = admin_json_get(body, field);
	if (v != NULL) {
		json_object_set(doc, field, v);
		json_decref(def);
	} else {
		json_object_set_new(doc, field, def);
	}
}

/*
 * Checks body and renders the key manager's document (from r->pool for
 * messages; the document is new). NULL with *msg on a bad body.
 */
static json_t *km_build(http_req *r, json_t *body, const char *id, const char *name,
			char **msg)
{
	char err[ERRLEN];
	if (admin_schema_check(r->pool, body, km_fields, "", msg) != APIM_OK)
		return NULL;
	if (admin_validate_name("name", name, KM_NAME_MAX, err, sizeof(err)) != APIM_OK) {
		*msg = arena_strdup(r->pool, err);
		return NULL;
	}
	if (strcasecmp(name, "default") == 0) {
		*msg = arena_sprintf(r->pool, "'name': '%s' is the Resident Key Manager's; choose "
					      "another name",
				     name);
		return NULL;
	}
	const char *issuer = admin_json_str(body, "issuer");
	for (const char *p = issuer; *p; p++) {
		if (!isgraph((unsigned char)*p)) {
			*msg = arena_sprintf(r->pool, "'issuer' must be the tokens' 'iss' value, "
						      "without spaces or control characters");
			return NULL;
		}
	}
	if (strcmp(issuer, km_issuer(r->ctx)) == 0) {
		*msg = arena_sprintf(r->pool, "'issuer' '%s' is the Resident Key Manager's; another "
					      "key manager needs its own issuer",
				     issuer);
		return NULL;
	}
	json_t *certs = admin_json_get(body, "certificates");
	const char *ctype = admin_json_str(certs, "type");
	const char *jwks = admin_json_str(certs, "value");
	if (strcmp(ctype, "JWKS") != 0) {
		*msg = arena_sprintf(r->pool, "'certificates.type' %s is not supported: give the "
					      "issuer's JWKS URL with type JWKS",
				     ctype);
		return NULL;
	}
	if (!km_url_ok(jwks)) {
		*msg = arena_sprintf(r->pool, "'certificates.value' must be the issuer's JWKS URL "
					      "(http:// or https://, no spaces), got '%s'",
				     jwks);
		return NULL;
	}
	static const char *const url_fields[] = {
		"wellKnownEndpoint", "introspectionEndpoint", "clientRegistrationEndpoint",
		"tokenEndpoint", "displayTokenEndpoint", "revokeEndpoint", "displayRevokeEndpoint",
		"userInfoEndpoint", "authorizeEndpoint", "scopeManagementEndpoint", NULL};
	for (size_t i = 0; url_fields[i]; i++) {
		const char *u = admin_json_str(body, url_fields[i]);
		if (u != NULL && *u && !km_url_ok(u)) {
			*msg = arena_sprintf(r->pool, "'%s' must be an http:// or https:// URL, got '%s'",
					     url_fields[i], u);
			return NULL;
		}
	}
	const char *ckc = or_default(admin_json_str(body, "consumerKeyClaim"), "azp");
	const char *sc = or_default(admin_json_str(body, "scopesClaim"), "scope");
	if (!km_claim_ok(ckc) || !km_claim_ok(sc)) {
		*msg = arena_sprintf(r->pool, "'consumerKeyClaim' and 'scopesClaim' must be claim "
					      "names without spaces");
		return NULL;
	}
	json_t *perm = admin_json_get(body, "permissions");
	const char *ptype = perm ? admin_json_str(perm, "permissionType") : "PUBLIC";
	json_t *roles = perm ? admin_json_get(perm, "roles") : NULL;
	if (strcmp(ptype, "PUBLIC") != 0 && json_array_size(roles) == 0) {
		*msg = arena_sprintf(r->pool, "'permissions.roles' must name at least one role when "
					      "'permissions.permissionType' is %s",
				     ptype);
		return NULL;
	}

	const char *display = admin_json_str(body, "displayName");
	const char *desc = admin_json_str(body, "description");
	json_t *doc = json_object();
	json_object_set_new(doc, "id", json_string(id));
	json_object_set_new(doc, "name", json_string(name));
	json_object_set_new(doc, "displayName", json_string(or_default(display, name)));
	json_object_set_new(doc, "type", json_string(admin_json_str(body, "type")));
	json_object_set_new(doc, "description", json_string(desc ? desc : ""));
	json_object_set_new(doc, "enabled", json_boolean(admin_json_bool(body, "enabled", 1)));
	json_object_set_new(doc, "issuer", json_string(issuer));
	copy_if(doc, body, "alias", json_null());
	json_object_set_new(doc, "certificates",
			    json_pack("{s:s, s:s}", "type", "JWKS", "value", jwks));
	json_object_set_new(doc, "consumerKeyClaim", json_string(ckc));
	json_object_set_new(doc, "scopesClaim", json_string(sc));
	json_object_set_new(doc, "tokenType",
			    json_string(or_default(admin_json_str(body, "tokenType"), "DIRECT")));
	for (size_t i = 0; url_fields[i]; i++)
		copy_if(doc, body, url_fields[i], json_null());
	copy_if(doc, body, "availableGrantTypes", json_array());
	json_object_set_new(doc, "enableTokenGeneration",
			    json_boolean(admin_json_bool(body, "enableTokenGeneration", 0)));
	json_object_set_new(doc, "enableTokenEncryption",
			    json_boolean(admin_json_bool(body, "enableTokenEncryption", 0)));
	json_object_set_new(doc, "enableTokenHashing",
			    json_boolean(admin_json_bool(body, "enableTokenHashing", 0)));
	json_object_set_new(doc, "enableMapOAuthConsumerApps",
			    json_boolean(admin_json_bool(body, "enableMapOAuthConsumerApps", 1)));
	json_object_set_new(doc, "enableOAuthAppCreation",
			    json_boolean(admin_json_bool(body, "enableOAuthAppCreation", 0)));
	json_object_set_new(doc, "enableSelfValidationJWT",
			    json_boolean(admin_json_bool(body, "enableSelfValidationJWT", 1)));
	copy_if(doc, body, "claimMapping", json_array());
	copy_if(doc, body, "tokenValidation", json_array());
	copy_if(doc, body, "endpoints", json_array());
	copy_if(doc, body, "additionalProperties", json_object());
	json_object_set_new(doc, "permissions",
			    json_pack("{s:s, s:o}", "permissionType", ptype, "roles",
				      roles ? json_deep_copy(roles) : json_array()));
	json_object_set_new(doc, "isGlobal", json_false());
	return doc;
}

static json_t *km_render(const store_keymanager *k)
{
	json_t *doc = admin_doc_load(k->doc);
	if (doc == NULL)
		doc = json_object();
	json_object_set_new(doc, "id", json_string(k->id));
	json_object_set_new(doc, "name", json_string(k->name));
	json_object_set_new(doc, "issuer", json_string(k->issuer));
	json_object_set_new(doc, "enabled", json_boolean(k->enabled));
	return doc;
}

/* The Resident Key Manager as the Admin API shows it. */
static json_t *km_resident(http_req *r)
{
	json_t *doc = json_object();
	json_object_set_new(doc, "id", json_string(KM_RESIDENT_ID));
	json_object_set_new(doc, "name", json_string(KM_RESIDENT_NAME));
	json_object_set_new(doc, "displayName", json_string(KM_RESIDENT_NAME));
	json_object_set_new(doc, "type", json_string("default"));
	json_object_set_new(doc, "description", json_string("This is Resident Key Manager"));
	json_object_set_new(doc, "enabled", json_true());
	json_object_set_new(doc, "issuer", json_string(km_issuer(r->ctx)));
	json_object_set_new(doc, "consumerKeyClaim", json_string("azp"));
	json_object_set_new(doc, "scopesClaim", json_string("scope"));
	json_object_set_new(doc, "tokenType", json_string("DIRECT"));
	json_object_set_new(doc, "isGlobal", json_false());
	return doc;
}

/* The list's KeyManagerInfo of a full document (borrowed). */
static json_t *km_info(json_t *doc)
{
	static const char *const fields[] = {"id", "name", "displayName", "type", "description",
					     "enabled", "issuer", "tokenType", "isGlobal", NULL};
	json_t *o = json_object();
	for (size_t i = 0; fields[i]; i++) {
		json_t *v = json_object_get(doc, fields[i]);
		json_object_set(o, fields[i], v ? v : json_null());
	}
	return o;
}

static int is_resident(const char *id)
{
	return id != NULL && (strcmp(id, KM_RESIDENT_ID) == 0);
}

static apim_rc load(http_req *r, const char *id, store_keymanager *k)
{
	apim_rc rc = apim_uuid_valid(id) ? store_keymanager_get(r->ctx->apimgt, r->pool, id, k)
					 : APIM_ENOTFOUND;
	if (rc != APIM_OK)
		http_reply_store_error(r, rc, arena_sprintf(r->pool, "Key Manager '%s'", id));
	return rc;
}

void admin_keymanager_list(http_req *r)
{
	int64_t total = 0;
	store_keymanager *ks = NULL;
	size_t n = 0;
	apim_rc rc = store_keymanager_list(r->ctx->apimgt, r->pool, 0, -1, &ks, &n, &total);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "Key Managers");
		return;
	}
	json_t *list = json_array();
	json_t *res = km_resident(r);
	json_array_append_new(list, km_info(res));
	json_decref(res);
	for (size_t i = 0; i < n; i++) {
		json_t *doc = km_render(&ks[i]);
		json_array_append_new(list, km_info(doc));
		json_decref(doc);
	}
	http_reply_json(r, 200, json_pack("{s:I, s:o}", "count", (json_int_t)json_array_size(list),
					  "list", list));
}

static void reply_conflict(http_req *r, const char *name, const char *issuer)
{
	http_reply_error(r, 409,
			 "A key manager named '%s' or with issuer '%s' exists already; each needs "
			 "its own name and issuer",
			 name, issuer);
}

void admin_keymanager_create(http_req *r)
{
	json_t *body = http_json_body(r, JSON_OBJECT);
	if (body == NULL)
		return;
	json_t *name = json_object_get(body, "name");
	if (name == NULL || json_is_null(name)) {
		http_reply_error(r, 400, "'name' is required");
		return;
	}
	if (!json_is_string(name)) {
		http_reply_error(r, 400, "'name' must be a string");
		return;
	}
	const char *kname = arena_strdup(r->pool, json_string_value(name));
	if (strcmp(kname, KM_RESIDENT_NAME) == 0) {
		http_reply_error(r, 409, "'%s' is the built-in key manager; choose another name",
				 kname);
		return;
	}
	char id[APIM_UUID_LEN + 1], *msg = NULL;
	apim_uuid(id);
	json_t *doc = km_build(r, body, id, kname, &msg);
	if (doc == NULL) {
		http_reply_error(r, 400, "%s", msg);
		return;
	}
	char *text = json_dumps(doc, JSON_COMPACT);
	int64_t now = apim_now_ms();
	store_keymanager k = {.id = id,
			      .name = kname,
			      .issuer = json_string_value(json_object_get(doc, "issuer")),
			      .enabled = json_is_true(json_object_get(doc, "enabled")),
			      .doc = text,
			      .created_ms = now,
			      .updated_ms = now};
	apim_rc rc = text ? store_keymanager_create(r->ctx->apimgt, &k) : APIM_ENOMEM;
	free(text);
	if (rc != APIM_OK) {
		if (rc == APIM_ECONFLICT)
			reply_conflict(r, kname, k.issuer);
		else
			http_reply_store_error(r, rc, "Key Manager");
		json_decref(doc);
		return;
	}
	http_set_header(r, "Location", arena_sprintf(r->pool, ADMIN_BASE "/key-managers/%s", id));
	http_reply_json(r, 201, doc);
}

void admin_keymanager_get(http_req *r)
{
	const char *id = http_param(r, "keyManagerId");
	if (is_resident(id)) {
		http_reply_json(r, 200, km_resident(r));
		return;
	}
	store_keymanager k;
	if (load(r, id, &k) != APIM_OK)
		return;
	http_reply_json(r, 200, km_render(&k));
}

void admin_keymanager_update(http_req *r)
{
	const char *id = http_param(r, "keyManagerId");
	if (is_resident(id)) {
		http_reply_error(r, 403, "The %s is built in: it cannot be changed here",
				 KM_RESIDENT_NAME);
		return;
	}
	json_t *body = http_json_body(r, JSON_OBJECT);
	if (body == NULL)
		return;
	store_keymanager k;
	if (load(r, id, &k) != APIM_OK)
		return;
	json_t *cur = km_render(&k);
	int ok = http_check_if_match(r, cur);
	json_decref(cur);
	if (ok != 0)
		return;
	json_t *name = json_object_get(body, "name");
	if (name != NULL && !json_is_null(name) &&
	    (!json_is_string(name) || strcmp(json_string_value(name), k.name) != 0)) {
		http_reply_error(r, 400,
				 "'name' cannot be changed (the key manager is '%s'); change "
				 "displayName instead",
				 k.name);
		return;
	}
	if (name == NULL || json_is_null(name))
		json_object_set_new(body, "name", json_string(k.name));
	const char *bid = admin_json_str(body, "id");
	if (bid != NULL && strcmp(bid, k.id) != 0) {
		http_reply_error(r, 400,
				 "'id' in the body does not match the key manager in the path ('%s')",
				 k.id);
		return;
	}
	char *msg = NULL;
	json_t *doc = km_build(r, body, k.id, k.name, &msg);
	if (doc == NULL) {
		http_reply_error(r, 400, "%s", msg);
		return;
	}
	char *text = json_dumps(doc, JSON_COMPACT);
	k.issuer = json_string_value(json_object_get(doc, "issuer"));
	k.enabled = json_is_true(json_object_get(doc, "enabled"));
	k.doc = text;
	k.updated_ms = apim_now_ms();
	apim_rc rc = text ? store_keymanager_update(r->ctx->apimgt, &k) : APIM_ENOMEM;
	free(text);
	if (rc != APIM_OK) {
		if (rc == APIM_ECONFLICT)
			reply_conflict(r, k.name, k.issuer);
		else
			http_reply_store_error(r, rc,
						arena_sprintf(r->pool, "Key Manager '%s'", k.id));
		json_decref(doc);
		return;
	}
	http_reply_json(r, 200, doc);
}

void admin_keymanager_delete(http_req *r)
{
	const char *id = http_param(r, "keyManagerId");
	if (is_resident(id)) {
		http_reply_error(r, 403, "The %s is built in: it cannot be deleted",
				 KM_RESIDENT_NAME);
		return;
	}
	store_keymanager k;
	if (load(r, id, &k) != APIM_OK)
		return;
	apim_rc rc = store_keymanager_delete(r->ctx->apimgt, k.id);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, arena_sprintf(r->pool, "Key Manager '%s'", k.id));
		return;
	}
	http_reply_empty(r, 200);
}
