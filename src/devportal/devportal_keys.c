/*
 * devportal_keys.c: an application's OAuth keys, through the Key Manager's
 * internal interface (km_client.h, km_token.h):
 *
 *   POST /applications/{id}/generate-keys       new client + mapping (+ a first token)
 *   POST /applications/{id}/map-keys            map an existing client
 *   GET  /applications/{id}/oauth-keys          the mappings
 *   GET|PUT .../oauth-keys/{keyMappingId}       read, change grants/callback
 *   POST .../oauth-keys/{keyMappingId}/generate-token | regenerate-secret | clean-up
 *
 * and the same operations under the reference's deprecated
 * .../keys/{keyType} paths. A client's secret is shown when it is created
 * or regenerated, never again (the Key Manager keeps only its hash).
 *
 * The client is created first (its own statement) and the mapping row with
 * its change-sequence record after it, in one transaction; when that fails
 * the client is deleted again, so nothing is left half made.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ctx.h"
#include "common/log.h"
#include "common/util.h"
#include "devportal/devportal_app_internal.h"
#include "keymanager/km_client.h"
#include "keymanager/km_keys.h"
#include "keymanager/km_token.h"
#include "store/db.h"
#include "store/store_keymanager.h"

#define VALIDITY_MAX 31536000 /* one year: the Key Manager's limit */
#define GRANTS_MAX 16
#define SCOPES_MAX 64

/*
 * Grant types of the reference that this Key Manager does not implement.
 * The reference's Developer Portal offers them by default, so requests
 * copied from it list them: they are left out of the client (its
 * supportedGrantTypes show what it got) rather than refused.
 */
static const char *const grants_not_offered[] = {
	"implicit",
	"iwa:ntlm",
	"kerberos",
	"urn:ietf:params:oauth:grant-type:saml2-bearer",
	"urn:ietf:params:oauth:grant-type:jwt-bearer",
	"urn:ietf:params:oauth:grant-type:device_code",
	"urn:ietf:params:oauth:grant-type:token-exchange",
	"urn:ietf:params:oauth:grant-type:uma-ticket",
	"client_credentials_with_mtls",
	NULL,
};

/* ---------- rendering ---------- */

/* Space-separated words as a JSON array of strings. */
static json_t *words_array(const char *s)
{
	json_t *a = json_array();
	while (s != NULL && *s) {
		while (*s == ' ')
			s++;
		const char *e = s;
		while (*e && *e != ' ')
			e++;
		if (e > s)
			json_array_append_new(a, json_stringn(s, (size_t)(e - s)));
		s = e;
	}
	return a;
}

json_t *devportal_keys_render(const store_app_key *k, const km_client *c, const char *secret,
			      json_t *token)
{
	json_t *props = k->properties ? json_loads(k->properties, 0, NULL) : NULL;
	if (!json_is_object(props)) {
		json_decref(props);
		props = json_object();
	}
	json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:s?, s:s, s:s, s:s, s:n, s:o, s:o}",
			      "keyMappingId", k->id, "keyManager", k->key_manager, "consumerKey",
			      k->consumer_key, "supportedGrantTypes",
			      words_array(c ? c->grant_types : NULL), "callbackUrl",
			      c ? c->callback_url : NULL, "keyState", k->state, "keyType",
			      k->key_type, "mode", k->create_mode, "groupId", "token",
			      token ? token : json_null(), "additionalProperties", props);
	if (o != NULL && secret != NULL)
		json_object_set_new(o, "consumerSecret", json_string(secret));
	return o;
}

json_t *devportal_keys_payload(const store_app_key *k)
{
	return json_pack("{s:s, s:s, s:s}", "applicationId", k->application_id, "consumerKey",
			 k->consumer_key, "keyType", k->key_type);
}

/* The ApplicationToken object of an issued token (new reference). */
static json_t *token_json(const km_issued *t)
{
	return json_pack("{s:s, s:o, s:I}", "accessToken", t->access_token, "tokenScopes",
			 words_array(t->scope), "validityTime", (json_int_t)t->expires_in);
}

/* ---------- request fields ---------- */

/* PRODUCTION or SANDBOX (canonical, static), or NULL. */
static const char *key_type_of(const char *s)
{
	if (s == NULL)
		return NULL;
	if (strcmp(s, "PRODUCTION") == 0)
		return "PRODUCTION";
	if (strcmp(s, "SANDBOX") == 0)
		return "SANDBOX";
	return NULL;
}

/* The body's keyType: 0, or -1 after answering 400. */
static int body_key_type(http_req *r, json_t *in, const char **out)
{
	json_t *v = json_object_get(in, "keyType");
	*out = key_type_of(json_string_value(v));
	if (*out == NULL) {
		http_reply_error(r, 400, "'keyType' is required: PRODUCTION or SANDBOX");
		return -1;
	}
	return 0;
}

/*
 * The body's keyManager: absent, ours by name or id, or "default" (*name =
 * NULL); or an enabled key manager of the Admin API, by name or id (*name
 * = its name, in r->pool). -1 after answering 400.
 */
static int body_key_manager(http_req *r, json_t *in, const char **name)
{
	*name = NULL;
	json_t *v = json_object_get(in, "keyManager");
	if (v == NULL || json_is_null(v))
		return 0;
	const char *s = json_string_value(v);
	if (s != NULL && (*s == '\0' || strcmp(s, DP_KEY_MANAGER) == 0 ||
			  strcmp(s, DEVPORTAL_KM_ID) == 0 || strcmp(s, "default") == 0))
		return 0;
	store_keymanager km;
	apim_rc rc = APIM_ENOTFOUND;
	if (s != NULL && strlen(s) <= 255) {
		rc = store_keymanager_get_by_name(r->ctx->apimgt, r->pool, s, &km);
		if (rc == APIM_ENOTFOUND && apim_uuid_valid(s))
			rc = store_keymanager_get(r->ctx->apimgt, r->pool, s, &km);
	}
	if (rc == APIM_OK && km.enabled) {
		*name = km.name;
		return 0;
	}
	if (rc != APIM_OK && rc != APIM_ENOTFOUND) {
		http_reply_store_error(r, rc, "key manager");
		return -1;
	}
	http_reply_error(r, 400, rc == APIM_OK ? "Key Manager '%s' is disabled"
					       : "Key Manager '%s' not found",
			 s ? s : "(not a string)");
	return -1;
}

/* A validity in seconds given as a number or a numeric string; absent,
 * null, 0 or negative mean the default (0). -1 after answering 400. */
static int body_validity(http_req *r, json_t *in, const char *field, int64_t *out)
{
	json_t *v = json_object_get(in, field);
	*out = 0;
	if (v == NULL || json_is_null(v))
		return 0;
	int64_t n = 0;
	const char *s = json_string_value(v);
	int ok = json_is_integer(v) || (s != NULL && (*s == '\0' || apim_parse_i64(s, &n) == 0));
	if (!ok) {
		http_reply_error(r, 400, "'%s' must be a number of seconds", field);
		return -1;
	}
	if (json_is_integer(v))
		n = json_integer_value(v);
	if (n > VALIDITY_MAX) {
		http_reply_error(r, 400, "'%s' must be at most %d seconds (one year)", field,
				 VALIDITY_MAX);
		return -1;
	}
	*out = n > 0 ? n : 0;
	return 0;
}

/* An array of strings as a space-separated list (pool). -1 after 400. */
static int body_words(http_req *r, json_t *in, const char *field, size_t max, int required,
		      const char **out)
{
	json_t *v = json_object_get(in, field);
	*out = NULL;
	if (v == NULL || json_is_null(v)) {
		if (required) {
			http_reply_error(r, 400, "'%s' is required: an array of strings", field);
			return -1;
		}
		return 0;
	}
	if (!json_is_array(v) || json_array_size(v) > max) {
		http_reply_error(r, 400, "'%s' must be an array of at most %zu strings", field, max);
		return -1;
	}
	char *s = arena_strdup(r->pool, "");
	size_t i;
	json_t *e;
	json_array_foreach(v, i, e)
	{
		const char *w = json_string_value(e);
		if (w == NULL || *w == '\0' || strpbrk(w, " \t\r\n") != NULL) {
			http_reply_error(r, 400, "'%s' must be an array of non-empty strings without "
						 "spaces",
					 field);
			return -1;
		}
		s = arena_sprintf(r->pool, "%s%s%s", s, *s ? " " : "", w);
	}
	*out = s;
	return 0;
}

/* The requested grant types without the reference's ones we do not offer. */
static int body_grants(http_req *r, json_t *in, const char *field, int required,
		       const char **out)
{
	const char *all;
	if (body_words(r, in, field, GRANTS_MAX, required, &all) != 0)
		return -1;
	if (all == NULL)
		return 0;
	char *kept = arena_strdup(r->pool, "");
	json_t *arr = json_object_get(in, field);
	size_t i;
	json_t *e;
	json_array_foreach(arr, i, e)
	{
		const char *g = json_string_value(e);
		int skip = 0;
		for (size_t j = 0; grants_not_offered[j]; j++)
			skip |= strcmp(g, grants_not_offered[j]) == 0;
		if (!skip)
			kept = arena_sprintf(r->pool, "%s%s%s", kept, *kept ? " " : "", g);
	}
	if (*kept == '\0') {
		http_reply_error(r, 400, "'%s' must include at least one of client_credentials, "
					 "password, refresh_token, authorization_code",
				 field);
		return -1;
	}
	*out = kept;
	return 0;
}

/* Validity of application_access_token_expiry_time / refresh_token_expiry_time
 * in additionalProperties ("N/A", absent: default). -1 after 400. */
static int props_validity(http_req *r, json_t *props, const char *field, int64_t *out)
{
	json_t *v = json_object_get(props, field);
	const char *s = json_string_value(v);
	*out = 0;
	if (v == NULL || json_is_null(v) || (s != NULL && (strcmp(s, "N/A") == 0 || *s == '\0')))
		return 0;
	int64_t n = -1;
	if (json_is_integer(v))
		n = json_integer_value(v);
	else if (s != NULL && apim_parse_i64(s, &n) != 0)
		n = -1;
	if (n < 0 || n > VALIDITY_MAX) {
		http_reply_error(r, 400, "additionalProperties.%s must be N/A or 0 to %d seconds",
				 field, VALIDITY_MAX);
		return -1;
	}
	*out = n;
	return 0;
}

/* The body's additionalProperties: NULL when absent; -1 after 400. */
static int body_props(http_req *r, json_t *in, json_t **out)
{
	json_t *v = json_object_get(in, "additionalProperties");
	*out = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_object(v) || json_object_size(v) > 32) {
		http_reply_error(r, 400, "'additionalProperties' must be an object of at most 32 "
					 "entries");
		return -1;
	}
	*out = v;
	return 0;
}

/* ---------- loading ---------- */

/* The application of the path, and the mapping named by {keyMappingId} or
 * {keyType}. Answers 404 and returns -1 when either is not the caller's. */
static int load_key(http_req *r, store_application *a, store_app_key *k)
{
	if (devportal_app_load(r, http_param(r, "applicationId"), a) != 0)
		return -1;
	const char *id = http_param(r, "keyMappingId");
	apim_rc rc;
	if (id != NULL) {
		rc = store_application_key_get(r->ctx->apimgt, r->pool, a->id, id, k);
	} else {
		const char *kt = key_type_of(http_param(r, "keyType"));
		if (kt == NULL) {
			http_reply_error(r, 400, "The key type must be PRODUCTION or SANDBOX");
			return -1;
		}
		id = kt;
		rc = store_application_key_by_type(r->ctx->apimgt, r->pool, a->id, kt, k);
	}
	if (rc == APIM_ENOTFOUND) {
		http_reply_error(r, 404, "Keys %s not found for application %s", id, a->id);
		return -1;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "keys");
		return -1;
	}
	return 0;
}

/* The mapping's client; answers 404 when it was deleted behind our back. */
static int load_client(http_req *r, const store_app_key *k, km_client *c)
{
	if (k->key_manager != NULL && strcmp(k->key_manager, DP_KEY_MANAGER) != 0) {
		http_reply_error(r, 400, "Keys %s are a client of Key Manager '%s': its tokens, "
					 "secret and settings are managed there",
				 k->id, k->key_manager);
		return -1;
	}
	apim_rc rc = km_client_get(r->ctx, r->pool, k->consumer_key, c);
	if (rc == APIM_ENOTFOUND) {
		http_reply_error(r, 404, "The OAuth client %s of keys %s no longer exists; clean up "
					 "these keys and generate new ones",
				 k->consumer_key, k->id);
		return -1;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "OAuth client");
		return -1;
	}
	return 0;
}

/* Inserts the mapping and its change record in one transaction. */
/* A new, completed key mapping of the application to the OAuth client
 * (mode CREATED or MAPPED). Strings are borrowed. */
static void mapping_init(store_app_key *k, const char *app_id, const char *client_id,
			 const char *key_type, const char *mode, const char *properties)
{
	memset(k, 0, sizeof(*k));
	apim_uuid(k->id);
	k->application_id = app_id;
	k->consumer_key = client_id;
	k->key_type = key_type;
	k->key_manager = DP_KEY_MANAGER;
	k->create_mode = mode;
	k->state = "COMPLETED";
	k->properties = properties;
	k->created_ms = apim_now_ms();
}

/* insert_mapping inside the caller's transaction. */
static apim_rc insert_mapping_tx(http_req *r, const store_app_key *k)
{
	db *d = r->ctx->apimgt;
	apim_rc rc = store_application_lock(d, k->application_id);
	if (rc == APIM_OK)
		rc = store_application_key_insert(d, k);
	if (rc == APIM_OK)
		rc = devportal_app_record(r, "key_mapping", k->id, "create",
					  devportal_keys_payload(k));
	return rc;
}

static apim_rc insert_mapping(http_req *r, const store_app_key *k)
{
	db *d = r->ctx->apimgt;
	apim_rc rc = db_begin(d);
	if (rc == APIM_OK)
		rc = insert_mapping_tx(r, k);
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc != APIM_OK)
		db_rollback(d);
	return rc;
}

/* Answers 409 for keys that exist already. */
static void reply_keys_exist(http_req *r, const store_application *a, const char *kt,
			     const store_app_key *old)
{
	http_reply_error(r, 409, "Application '%s' already has %s keys (keyMappingId %s); "
				 "update them with PUT .../oauth-keys/%s, or remove them with "
				 ".../oauth-keys/%s/clean-up first",
			 a->name, kt, old ? old->id : "?", old ? old->id : "?", old ? old->id : "?");
}

/* ---------- handlers ---------- */

static void h_generate(http_req *r)
{
	store_application a;
	store_app_key old, k;
	const char *kt, *grants, *scopes;
	int64_t validity, access_validity, refresh_validity;
	json_t *props;
	if (devportal_app_load(r, http_param(r, "applicationId"), &a) != 0)
		return;
	json_t *in = http_json_body(r, JSON_OBJECT);
	const char *other_km = NULL;
	if (in == NULL || body_key_type(r, in, &kt) != 0 ||
	    body_key_manager(r, in, &other_km) != 0)
		return;
	if (other_km != NULL) {
		http_reply_error(r, 400, "Key Manager '%s' creates its clients itself: register "
					 "the client there and map it with POST "
					 "/applications/{applicationId}/map-keys",
				 other_km);
		return;
	}
	if (body_grants(r, in, "grantTypesToBeSupported", 1, &grants) != 0 ||
	    body_words(r, in, "scopes", SCOPES_MAX, 0, &scopes) != 0 ||
	    body_validity(r, in, "validityTime", &validity) != 0 || body_props(r, in, &props) != 0 ||
	    props_validity(r, props, "application_access_token_expiry_time", &access_validity) != 0 ||
	    props_validity(r, props, "refresh_token_expiry_time", &refresh_validity) != 0)
		return;
	json_t *cbv = json_object_get(in, "callbackUrl");
	if (cbv != NULL && !json_is_null(cbv) && !json_is_string(cbv)) {
		http_reply_error(r, 400, "'callbackUrl' must be a string");
		return;
	}
	apim_rc rc = store_application_key_by_type(r->ctx->apimgt, r->pool, a.id, kt, &old);
	if (rc == APIM_OK) {
		reply_keys_exist(r, &a, kt, &old);
		return;
	}
	if (rc != APIM_ENOTFOUND) {
		http_reply_store_error(r, rc, "keys");
		return;
	}

	km_client in_c = {
		.name = arena_sprintf(r->pool, "%s_%s_%s", a.owner, a.name, kt),
		.owner = a.owner,
		.grant_types = grants,
		.callback_url = json_string_value(cbv),
		.access_validity = access_validity,
		.refresh_validity = refresh_validity,
		.app_id = a.id,
		.key_type = kt,
	};
	km_client c;
	const char *secret = NULL, *why = NULL;
	/* The client and its mapping in one transaction: a failure (the
	 * database going away between the two) leaves neither. */
	db *d = r->ctx->apimgt;
	rc = db_begin(d);
	if (rc == APIM_OK)
		rc = km_client_create(r->ctx, r->pool, &in_c, &c, &secret, &why);
	if (rc == APIM_ECONFLICT) {
		/* A client of that name exists (e.g. made by hand): keep ours
		 * apart, in a fresh transaction (PostgreSQL aborted this one). */
		db_rollback(d);
		in_c.name = arena_sprintf(r->pool, "%s_%s_%s_%s", a.owner, a.name, kt, a.id);
		rc = db_begin(d);
		if (rc == APIM_OK)
			rc = km_client_create(r->ctx, r->pool, &in_c, &c, &secret, &why);
	}
	if (rc == APIM_EINVAL) {
		db_rollback(d);
		http_reply_error(r, 400, "The keys cannot be generated: %s", why ? why : "invalid");
		return;
	}
	if (rc != APIM_OK) {
		db_rollback(d);
		http_reply_store_error(r, rc, "OAuth client");
		return;
	}

	mapping_init(&k, a.id, c.client_id, kt, "CREATED",
		     props ? devportal_app_json_text(r->pool, props) : "{}");
	rc = insert_mapping_tx(r, &k);
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc != APIM_OK) {
		db_rollback(d);
		if (rc == APIM_ENOTFOUND) {
			http_reply_error(r, 404, "Application %s not found", a.id);
		} else if (rc == APIM_ECONFLICT) {
			store_app_key *oldp = NULL;
			if (store_application_key_by_type(r->ctx->apimgt, r->pool, a.id, kt, &old) ==
			    APIM_OK)
				oldp = &old;
			reply_keys_exist(r, &a, kt, oldp);
		} else {
			http_reply_store_error(r, rc, "keys");
		}
		return;
	}
	log_info("devportal", "%s keys %s (client %s) generated for application %s by %s", kt,
		 k.id, c.client_id, a.id, r->who->username);

	/* As the reference: a first application token when the client may use
	 * client_credentials. Keys without it are still a success. */
	json_t *token = NULL;
	if (km_client_allows_grant(&c, "client_credentials")) {
		km_issued t;
		rc = km_token_issue(r->ctx, r->pool, &c, NULL, scopes ? scopes : "", validity, 0, &t);
		if (rc == APIM_OK)
			token = token_json(&t);
		else
			log_error("devportal", "keys %s generated but their first token failed: %s",
				  k.id, apim_strerror(rc));
	}
	http_reply_json(r, 200, devportal_keys_render(&k, &c, secret, token));
}

/*
 * Maps the client consumer_key of another key manager (km) as the kt keys
 * of a. Its secret stays with that key manager: it is neither checked nor
 * kept here. Gateways accept that key manager's tokens naming this client
 * for this application only.
 */
static void map_external(http_req *r, const store_application *a, const char *kt,
			 const char *km, const char *consumer_key)
{
	store_app_key old, k;
	if (consumer_key == NULL || *consumer_key == '\0' || strlen(consumer_key) > 255) {
		http_reply_error(r, 400, "'consumerKey' is required (at most 255 characters): the "
					 "client id registered at Key Manager '%s'",
				 km);
		return;
	}
	apim_rc rc = store_application_key_by_type(r->ctx->apimgt, r->pool, a->id, kt, &old);
	if (rc == APIM_OK) {
		reply_keys_exist(r, a, kt, &old);
		return;
	}
	if (rc != APIM_ENOTFOUND) {
		http_reply_store_error(r, rc, "keys");
		return;
	}
	if (store_application_key_by_client(r->ctx->apimgt, r->pool, consumer_key, &old) ==
	    APIM_OK) {
		http_reply_error(r, 409, "Client %s already belongs to another application's keys",
				 consumer_key);
		return;
	}
	mapping_init(&k, a->id, consumer_key, kt, "MAPPED", "{}");
	k.key_manager = km;
	rc = insert_mapping(r, &k);
	if (rc == APIM_ECONFLICT) {
		http_reply_error(r, 409, "Application '%s' already has %s keys, or client %s is "
					 "mapped already",
				 a->name, kt, consumer_key);
		return;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "keys");
		return;
	}
	log_info("devportal", "client %s of key manager %s mapped as %s keys %s of application "
			      "%s by %s",
		 consumer_key, km, kt, k.id, a->id, r->who->username);
	http_reply_json(r, 200, devportal_keys_render(&k, NULL, NULL, NULL));
}

static void h_map(http_req *r)
{
	store_application a;
	store_app_key old, k;
	const char *kt;
	if (devportal_app_load(r, http_param(r, "applicationId"), &a) != 0)
		return;
	json_t *in = http_json_body(r, JSON_OBJECT);
	const char *other_km = NULL;
	if (in == NULL || body_key_type(r, in, &kt) != 0 ||
	    body_key_manager(r, in, &other_km) != 0)
		return;
	const char *ck = json_string_value(json_object_get(in, "consumerKey"));
	const char *cs = json_string_value(json_object_get(in, "consumerSecret"));
	if (other_km != NULL) {
		map_external(r, &a, kt, other_km, ck);
		return;
	}
	if (ck == NULL || *ck == '\0' || cs == NULL || *cs == '\0') {
		http_reply_error(r, 400, "'consumerKey' and 'consumerSecret' are required: the "
					 "client id and secret of an existing OAuth client");
		return;
	}
	apim_rc rc = store_application_key_by_type(r->ctx->apimgt, r->pool, a.id, kt, &old);
	if (rc == APIM_OK) {
		reply_keys_exist(r, &a, kt, &old);
		return;
	}
	if (rc != APIM_ENOTFOUND) {
		http_reply_store_error(r, rc, "keys");
		return;
	}
	km_client c;
	rc = km_client_authenticate(r->ctx, r->pool, ck, cs, &c);
	if (rc == APIM_ELOCKED) {
		http_reply_error(r, 429, "Too many failed attempts for consumer key %s; retry in a "
					 "minute",
				 ck);
		return;
	}
	if (rc == APIM_EUNAUTH) {
		http_reply_error(r, 400, "'consumerKey' and 'consumerSecret' do not match an OAuth "
					 "client");
		return;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "OAuth client");
		return;
	}
	if (c.owner == NULL || strcmp(c.owner, a.owner) != 0) {
		http_reply_error(r, 400, "OAuth client %s belongs to user %s, not to %s, the owner "
					 "of application '%s'",
				 ck, c.owner ? c.owner : "(none)", a.owner, a.name);
		return;
	}
	if (store_application_key_by_client(r->ctx->apimgt, r->pool, ck, &old) == APIM_OK ||
	    (c.app_id != NULL && strcmp(c.app_id, a.id) != 0)) {
		http_reply_error(r, 409, "OAuth client %s already belongs to another application's "
					 "keys",
				 ck);
		return;
	}
	mapping_init(&k, a.id, c.client_id, kt, "MAPPED", "{}");
	rc = insert_mapping(r, &k);
	if (rc == APIM_ECONFLICT) {
		http_reply_error(r, 409, "Application '%s' already has %s keys, or client %s is "
					 "mapped already",
				 a.name, kt, ck);
		return;
	}
	if (rc == APIM_ENOTFOUND) {
		http_reply_error(r, 404, "Application %s not found", a.id);
		return;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "keys");
		return;
	}
	log_info("devportal", "client %s mapped as %s keys %s of application %s by %s", ck, kt,
		 k.id, a.id, r->who->username);
	http_reply_json(r, 200, devportal_keys_render(&k, &c, cs, NULL));
}

static void h_list(http_req *r)
{
	store_application a;
	if (devportal_app_load(r, http_param(r, "applicationId"), &a) != 0)
		return;
	store_app_key *ks = NULL;
	size_t n = 0;
	apim_rc rc = store_application_key_list(r->ctx->apimgt, r->pool, a.id, &ks, &n);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "keys");
		return;
	}
	json_t *list = json_array();
	for (size_t i = 0; i < n; i++) {
		km_client c;
		int have = km_client_get(r->ctx, r->pool, ks[i].consumer_key, &c) == APIM_OK;
		json_array_append_new(list, devportal_keys_render(&ks[i], have ? &c : NULL, NULL,
								  NULL));
	}
	http_reply_json(r, 200, json_pack("{s:I, s:o}", "count", (json_int_t)n, "list", list));
}

static void h_get(http_req *r)
{
	store_application a;
	store_app_key k;
	if (load_key(r, &a, &k) != 0)
		return;
	km_client c;
	int have = km_client_get(r->ctx, r->pool, k.consumer_key, &c) == APIM_OK;
	http_reply_json(r, 200, devportal_keys_render(&k, have ? &c : NULL, NULL, NULL));
}

static void h_update(http_req *r)
{
	store_application a;
	store_app_key k;
	km_client c;
	const char *grants = NULL;
	json_t *props = NULL;
	int64_t av = 0, rv = 0;
	if (load_key(r, &a, &k) != 0)
		return;
	json_t *in = http_json_body(r, JSON_OBJECT);
	if (in == NULL || body_grants(r, in, "supportedGrantTypes", 0, &grants) != 0 ||
	    body_props(r, in, &props) != 0 ||
	    props_validity(r, props, "application_access_token_expiry_time", &av) != 0 ||
	    props_validity(r, props, "refresh_token_expiry_time", &rv) != 0)
		return;
	json_t *cbv = json_object_get(in, "callbackUrl");
	if (cbv != NULL && !json_is_null(cbv) && !json_is_string(cbv)) {
		http_reply_error(r, 400, "'callbackUrl' must be a string");
		return;
	}
	if (load_client(r, &k, &c) != 0)
		return;
	json_t *cur = devportal_keys_render(&k, &c, NULL, NULL);
	int bad = http_check_if_match(r, cur);
	json_decref(cur);
	if (bad != 0)
		return;
	km_client next = c;
	if (grants != NULL)
		next.grant_types = grants;
	if (cbv != NULL)
		next.callback_url = json_string_value(cbv); /* null clears it */
	if (props != NULL) {
		next.access_validity = av;
		next.refresh_validity = rv;
	}
	const char *why = NULL;
	apim_rc rc = km_client_update(r->ctx, &next, &why);
	if (rc == APIM_EINVAL) {
		http_reply_error(r, 400, "The keys cannot be updated: %s", why ? why : "invalid");
		return;
	}
	if (rc == APIM_ENOTFOUND) {
		load_client(r, &k, &c); /* answers 404 */
		return;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "OAuth client");
		return;
	}
	if (props != NULL)
		k.properties = devportal_app_json_text(r->pool, props);
	db *d = r->ctx->apimgt;
	rc = db_begin(d);
	if (rc == APIM_OK)
		rc = store_application_lock(d, a.id);
	if (rc == APIM_OK && props != NULL)
		rc = store_application_key_set_properties(d, k.id, k.properties);
	if (rc == APIM_OK)
		rc = devportal_app_record(r, "key_mapping", k.id, "update",
					  devportal_keys_payload(&k));
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc != APIM_OK) {
		db_rollback(d);
		http_reply_store_error(r, rc, "keys");
		return;
	}
	if (load_client(r, &k, &c) != 0)
		return;
	http_reply_json(r, 200, devportal_keys_render(&k, &c, NULL, NULL));
}

static void h_token(http_req *r)
{
	store_application a;
	store_app_key k;
	km_client c;
	const char *scopes;
	int64_t validity;
	if (load_key(r, &a, &k) != 0)
		return;
	json_t *in = http_json_body(r, JSON_OBJECT);
	if (in == NULL || body_words(r, in, "scopes", SCOPES_MAX, 0, &scopes) != 0 ||
	    body_validity(r, in, "validityPeriod", &validity) != 0)
		return;
	const char *secret = json_string_value(json_object_get(in, "consumerSecret"));
	if (secret == NULL || *secret == '\0') {
		http_reply_error(r, 400, "'consumerSecret' is required: the secret of consumer key "
					 "%s",
				 k.consumer_key);
		return;
	}
	apim_rc rc = km_client_authenticate(r->ctx, r->pool, k.consumer_key, secret, &c);
	if (rc == APIM_ELOCKED) {
		http_reply_error(r, 429, "Too many failed attempts for consumer key %s; retry in a "
					 "minute",
				 k.consumer_key);
		return;
	}
	if (rc == APIM_EUNAUTH) {
		http_reply_error(r, 400, "'consumerSecret' is not the secret of consumer key %s "
					 "(regenerated since?)",
				 k.consumer_key);
		return;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "OAuth client");
		return;
	}
	if (!km_client_allows_grant(&c, "client_credentials")) {
		http_reply_error(r, 400, "Keys %s do not allow the client_credentials grant; add it "
					 "to supportedGrantTypes with PUT .../oauth-keys/%s",
				 k.id, k.id);
		return;
	}
	/* revokeToken: an earlier token of this client that the caller is done
	 * with; anything else (not ours, expired, another client's) is ignored. */
	const char *old = json_string_value(json_object_get(in, "revokeToken"));
	if (old != NULL && *old != '\0') {
		json_t *claims = NULL;
		const char *why = NULL;
		if (km_jwt_verify(r->ctx, old, r->ctx->cfg->keymanager_leeway, &claims, &why) ==
		    APIM_OK) {
			const char *cid = json_string_value(json_object_get(claims, "client_id"));
			const char *jti = json_string_value(json_object_get(claims, "jti"));
			json_int_t exp = json_integer_value(json_object_get(claims, "exp"));
			if (cid != NULL && jti != NULL && strcmp(cid, c.client_id) == 0) {
				apim_rc rrc = km_token_revoke_jti(r->ctx, jti, exp);
				if (rrc != APIM_OK)
					log_error("devportal", "revoking token %s failed: %s", jti,
						  apim_strerror(rrc));
			}
			json_decref(claims);
		}
	}
	km_issued t;
	rc = km_token_issue(r->ctx, r->pool, &c, NULL, scopes ? scopes : "", validity, 0, &t);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "token");
		return;
	}
	http_set_header(r, "Cache-Control", "no-store");
	http_reply_json(r, 200, token_json(&t));
}

static void h_regenerate(http_req *r)
{
	store_application a;
	store_app_key k;
	if (load_key(r, &a, &k) != 0)
		return;
	const char *secret = NULL;
	apim_rc rc = km_client_regenerate_secret(r->ctx, r->pool, k.consumer_key, &secret);
	if (rc == APIM_ENOTFOUND) {
		km_client c;
		load_client(r, &k, &c); /* answers 404 */
		return;
	}
	if (rc != APIM_OK && secret == NULL) {
		http_reply_store_error(r, rc, "OAuth client");
		return;
	}
	log_info("devportal", "secret of keys %s (client %s) regenerated by %s", k.id,
		 k.consumer_key, r->who->username);
	http_set_header(r, "Cache-Control", "no-store");
	http_reply_json(r, 200, json_pack("{s:s, s:s}", "consumerKey", k.consumer_key,
					  "consumerSecret", secret));
}

static void h_cleanup(http_req *r)
{
	store_application a;
	store_app_key k;
	if (load_key(r, &a, &k) != 0)
		return;
	db *d = r->ctx->apimgt;
	apim_rc rc = db_begin(d);
	if (rc == APIM_OK)
		rc = store_application_lock(d, a.id);
	if (rc == APIM_OK)
		rc = store_application_key_delete(d, k.id);
	if (rc == APIM_OK)
		rc = devportal_app_record(r, "key_mapping", k.id, "delete",
					  devportal_keys_payload(&k));
	/* A mapped client was registered elsewhere: it stays with its owner.
	 * A client made here goes in the same transaction as its mapping. */
	if (rc == APIM_OK && strcmp(k.create_mode, "CREATED") == 0) {
		rc = km_client_delete(r->ctx, k.consumer_key);
		if (rc == APIM_ENOTFOUND)
			rc = APIM_OK;
	}
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc != APIM_OK) {
		db_rollback(d);
		http_reply_store_error(r, rc, "keys");
		return;
	}
	log_info("devportal", "%s keys %s of application %s cleaned up by %s", k.key_type, k.id,
		 a.id, r->who->username);
	http_reply_empty(r, 200);
}

void devportal_keys_app_renamed(http_req *r, const store_application *a)
{
	store_app_key *ks = NULL;
	size_t n = 0;
	if (store_application_key_list(r->ctx->apimgt, r->pool, a->id, &ks, &n) != APIM_OK)
		return;
	for (size_t i = 0; i < n; i++) {
		km_client c;
		if (strcmp(ks[i].create_mode, "CREATED") != 0 ||
		    km_client_get(r->ctx, r->pool, ks[i].consumer_key, &c) != APIM_OK)
			continue;
		c.name = arena_sprintf(r->pool, "%s_%s_%s", a->owner, a->name, ks[i].key_type);
		const char *why = NULL;
		apim_rc rc = km_client_update(r->ctx, &c, &why);
		if (rc != APIM_OK)
			log_warn("devportal", "client %s of renamed application %s keeps its name: %s",
				 c.client_id, a->id, why ? why : apim_strerror(rc));
	}
}

#define APP_KEYS DP_BASE "/applications/{applicationId}"

static const http_route key_routes[] = {
	{"POST", APP_KEYS "/generate-keys", h_generate, DP_SCOPES_APP, 0},
	{"POST", APP_KEYS "/map-keys", h_map, DP_SCOPES_APP, 0},
	{"GET", APP_KEYS "/oauth-keys", h_list, DP_SCOPES_APP, 0},
	{"GET", APP_KEYS "/oauth-keys/{keyMappingId}", h_get, DP_SCOPES_APP, 0},
	{"PUT", APP_KEYS "/oauth-keys/{keyMappingId}", h_update, DP_SCOPES_APP, 0},
	{"POST", APP_KEYS "/oauth-keys/{keyMappingId}/generate-token", h_token, DP_SCOPES_APP, 0},
	{"POST", APP_KEYS "/oauth-keys/{keyMappingId}/regenerate-secret", h_regenerate,
	 DP_SCOPES_APP, 0},
	{"POST", APP_KEYS "/oauth-keys/{keyMappingId}/clean-up", h_cleanup, DP_SCOPES_APP, 0},
	/* the reference's deprecated key-type paths */
	{"GET", APP_KEYS "/keys", h_list, DP_SCOPES_APP, 0},
	{"GET", APP_KEYS "/keys/{keyType}", h_get, DP_SCOPES_APP, 0},
	{"PUT", APP_KEYS "/keys/{keyType}", h_update, DP_SCOPES_APP, 0},
	{"POST", APP_KEYS "/keys/{keyType}/generate-token", h_token, DP_SCOPES_APP, 0},
	{"POST", APP_KEYS "/keys/{keyType}/regenerate-secret", h_regenerate, DP_SCOPES_APP, 0},
	{"POST", APP_KEYS "/keys/{keyType}/clean-up", h_cleanup, DP_SCOPES_APP, 0},
};

void devportal_keys_routes(http_server *s)
{
	http_server_routes(s, key_routes, sizeof(key_routes) / sizeof(key_routes[0]));
}
