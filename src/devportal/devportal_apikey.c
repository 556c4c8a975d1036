/*
 * devportal_apikey.c: API keys, self-contained JWTs that a gateway checks
 * locally (signature with the Key Manager's keys, expiry, revoked jtis),
 * bound to an application and to its subscriptions at issue time:
 *
 *   POST /applications/{id}/api-keys/{keyType}/generate
 *   POST /applications/{id}/api-keys/{keyType}/revoke
 *
 * The claims follow the reference's API key: iss, sub (the application's
 * owner), iat, exp, jti, keytype, token_type "apiKey", application {id,
 * uuid, name, owner, tier}, tierInfo {<subscription tier>: {...}},
 * subscribedAPIs [{name, context, version, publisher, subscriptionTier,
 * ...}] and, when asked for, permittedIP / permittedReferer.
 *
 * A key "without expiry" (validityPeriod -1 or 0) still carries an exp,
 * 100 years ahead, because our verifiers (km_jwt_verify) require one; the
 * reference leaves exp out. validityTime in the response is -1 for such a
 * key, as in the reference.
 *
 * Every issued key is recorded (am_api_key) so that it can be revoked:
 * revoking records its jti in am_revoked_jwt under the change sequence
 * (km_token_revoke_jti), which gateways load.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/ctx.h"
#include "common/log.h"
#include "common/util.h"
#include "devportal/devportal_app_internal.h"
#include "keymanager/km_keys.h"
#include "keymanager/km_token.h"
#include "store/db.h"
#include "store/store_api.h"
#include "store/store_policy.h"
#include "store/store_subscription.h"

#define NO_EXPIRY_S (100LL * 365 * 24 * 3600) /* "no expiry": 100 years */
#define ALL_ROWS 1000000
#define PERMIT_MAX 2048 /* bytes of permittedIP / permittedReferer */
#define KEY_NAME_MAX 100

/* PRODUCTION or SANDBOX of the path; -1 after answering 400. */
static int path_key_type(http_req *r, const char **out)
{
	const char *kt = http_param(r, "keyType");
	if (kt != NULL && (strcmp(kt, "PRODUCTION") == 0 || strcmp(kt, "SANDBOX") == 0)) {
		*out = kt;
		return 0;
	}
	http_reply_error(r, 400, "The key type must be PRODUCTION or SANDBOX, not '%s'",
			 kt ? kt : "");
	return -1;
}

/* 1 when a subscription in this status lets keys of key_type call the API. */
static int sub_usable(const char *status, const char *key_type)
{
	if (strcmp(status, "UNBLOCKED") == 0 || strcmp(status, "TIER_UPDATE_PENDING") == 0)
		return 1;
	return strcmp(status, "PROD_ONLY_BLOCKED") == 0 && strcmp(key_type, "SANDBOX") == 0;
}

/* The reference's tierInfo entry of a subscription policy (new reference). */
static json_t *tier_info(http_req *r, const char *tier)
{
	store_policy p;
	json_t *doc = NULL;
	if (store_policy_get_by_name(r->ctx->apimgt, r->pool, "subscription", tier, &p) == APIM_OK)
		doc = json_loads(p.doc, 0, NULL);
	const char *type = json_string_value(json_object_get(json_object_get(doc, "defaultLimit"),
							     "type"));
	const char *quota = "requestCount";
	if (type != NULL && strcmp(type, "BANDWIDTHLIMIT") == 0)
		quota = "bandwidthVolume";
	else if (type != NULL && strcmp(type, "EVENTCOUNTLIMIT") == 0)
		quota = "eventCount";
	json_t *unit = json_object_get(doc, "rateLimitTimeUnit");
	json_t *o = json_pack(
		"{s:s, s:I, s:I, s:b, s:I, s:O}", "tierQuotaType", quota, "graphQLMaxComplexity",
		(json_int_t)json_integer_value(json_object_get(doc, "graphQLMaxComplexity")),
		"graphQLMaxDepth",
		(json_int_t)json_integer_value(json_object_get(doc, "graphQLMaxDepth")),
		"stopOnQuotaReach", doc == NULL || json_is_true(json_object_get(doc, "stopOnQuotaReach")),
		"spikeArrestLimit", (json_int_t)json_integer_value(json_object_get(doc, "rateLimitCount")),
		"spikeArrestUnit", json_is_string(unit) ? unit : json_null());
	json_decref(doc);
	return o;
}

/*
 * Fills subscribedAPIs and tierInfo from the application's subscriptions
 * usable with key_type, as they are now.
 */
static apim_rc snapshot_subscriptions(http_req *r, const store_application *a,
				      const char *key_type, json_t *apis, json_t *tiers)
{
	store_subscription *subs = NULL;
	size_t n = 0;
	int64_t total = 0;
	apim_rc rc = store_subscription_search(r->ctx->apimgt, r->pool, NULL, a->id, NULL, 0,
					       ALL_ROWS, &subs, &n, &total);
	for (size_t i = 0; rc == APIM_OK && i < n; i++) {
		store_api api;
		if (!sub_usable(subs[i].status, key_type))
			continue;
		apim_rc grc = store_api_get(r->ctx->apimgt, r->pool, subs[i].api_id, &api);
		if (grc == APIM_ENOTFOUND)
			continue;
		if (grc != APIM_OK)
			return grc;
		json_array_append_new(
			apis, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "name", api.name,
					"context", api.full_context, "version", api.version,
					"publisher", api.provider, "subscriptionTier", subs[i].tier,
					"uuid", api.id, "subscriberTenantDomain", "carbon.super",
					"publisherTenantDomain", "carbon.super"));
		if (json_object_get(tiers, subs[i].tier) == NULL)
			json_object_set_new(tiers, subs[i].tier, tier_info(r, subs[i].tier));
	}
	return rc;
}

/* An optional string of additionalProperties (at most PERMIT_MAX bytes). */
static int permit_field(http_req *r, json_t *props, const char *field, const char **out)
{
	json_t *v = json_object_get(props, field);
	*out = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	const char *s = json_string_value(v);
	if (s == NULL || strlen(s) > PERMIT_MAX) {
		http_reply_error(r, 400, "additionalProperties.%s must be a string of at most %d "
					 "characters (a comma-separated list)",
				 field, PERMIT_MAX);
		return -1;
	}
	*out = *s ? s : NULL;
	return 0;
}

static void h_generate(http_req *r)
{
	store_application a;
	const char *kt, *ip = NULL, *referer = NULL;
	if (devportal_app_load(r, http_param(r, "applicationId"), &a) != 0 ||
	    path_key_type(r, &kt) != 0)
		return;
	json_t *in = devportal_app_optional_body(r);
	if (in == NULL)
		return;
	json_t *claims = NULL;
	int64_t validity = -1;
	json_t *v = json_object_get(in, "validityPeriod");
	const char *vs = json_string_value(v);
	if (v != NULL && !json_is_null(v)) {
		if (json_is_integer(v))
			validity = json_integer_value(v);
		else if (vs == NULL || apim_parse_i64(vs, &validity) != 0) {
			http_reply_error(r, 400, "'validityPeriod' must be a number of seconds (-1: "
						 "no expiry)");
			goto out;
		}
	}
	if (validity > NO_EXPIRY_S || validity < -1) {
		http_reply_error(r, 400, "'validityPeriod' must be -1 or 0 (no expiry) or 1 to %lld "
					 "seconds",
				 (long long)NO_EXPIRY_S);
		goto out;
	}
	if (validity == 0)
		validity = -1;
	json_t *props = json_object_get(in, "additionalProperties");
	if (props != NULL && !json_is_null(props) && !json_is_object(props)) {
		http_reply_error(r, 400, "'additionalProperties' must be an object "
					 "{permittedIP, permittedReferer}");
		goto out;
	}
	if (permit_field(r, props, "permittedIP", &ip) != 0 ||
	    permit_field(r, props, "permittedReferer", &referer) != 0)
		goto out;
	const char *name = json_string_value(json_object_get(in, "keyName"));
	if (name != NULL && (*name == '\0' || strlen(name) > KEY_NAME_MAX)) {
		http_reply_error(r, 400, "'keyName' must be 1 to %d characters", KEY_NAME_MAX);
		goto out;
	}

	char jti[APIM_UUID_LEN + 1];
	apim_uuid(jti);
	int64_t now_ms = apim_now_ms(), iat = now_ms / 1000;
	int64_t exp = iat + (validity > 0 ? validity : NO_EXPIRY_S);
	json_t *apis = json_array(), *tiers = json_object();
	apim_rc rc = snapshot_subscriptions(r, &a, kt, apis, tiers);
	if (rc != APIM_OK) {
		json_decref(apis);
		json_decref(tiers);
		http_reply_store_error(r, rc, "subscriptions");
		goto out;
	}
	claims = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:{s:s, s:s, s:s, s:s, s:s}, "
			   "s:o, s:o}",
			   "iss", km_issuer(r->ctx), "sub", a.owner, "iat", (json_int_t)iat, "exp",
			   (json_int_t)exp, "jti", jti, "keytype", kt, "token_type", "apiKey",
			   "application", "id", a.id, "uuid", a.id, "name", a.name, "owner",
			   a.owner, "tier", a.tier, "tierInfo", tiers, "subscribedAPIs", apis);
	if (claims == NULL) {
		http_reply_error(r, 500, "Building the API key failed");
		goto out;
	}
	if (ip != NULL)
		json_object_set_new(claims, "permittedIP", json_string(ip));
	if (referer != NULL)
		json_object_set_new(claims, "permittedReferer", json_string(referer));

	store_app_apikey k = {
		.jti = jti,
		.application_id = a.id,
		.key_type = kt,
		.key_name = name ? name : jti,
		.issued_ms = now_ms,
		.expiry_ms = exp * 1000,
	};
	rc = store_application_apikey_insert(r->ctx->apimgt, &k);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "API key");
		goto out;
	}
	char *jwt = NULL;
	rc = km_jwt_sign(r->ctx, claims, &jwt);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "API key signature");
		goto out;
	}
	log_info("devportal", "%s API key %s issued for application %s by %s", kt, jti, a.id,
		 r->who->username);
	http_set_header(r, "Cache-Control", "no-store");
	http_reply_json(r, 200, json_pack("{s:s, s:s, s:I}", "keyName", k.key_name, "apikey", jwt,
					  "validityTime", (json_int_t)validity));
	OPENSSL_cleanse(jwt, strlen(jwt));
	free(jwt);
out:
	json_decref(claims);
	json_decref(in);
}

static void h_revoke(http_req *r)
{
	store_application a;
	const char *kt;
	if (devportal_app_load(r, http_param(r, "applicationId"), &a) != 0 ||
	    path_key_type(r, &kt) != 0)
		return;
	json_t *in = http_json_body(r, JSON_OBJECT);
	if (in == NULL)
		return;
	const char *key = json_string_value(json_object_get(in, "apikey"));
	if (key == NULL || *key == '\0') {
		http_reply_error(r, 400, "'apikey' is required: the API key to revoke");
		return;
	}
	json_t *claims = NULL;
	const char *why = NULL;
	apim_rc rc = km_jwt_verify(r->ctx, key, r->ctx->cfg->keymanager_leeway, &claims, &why);
	if (rc == APIM_EUNAVAIL) {
		http_reply_store_error(r, rc, "signing keys");
		return;
	}
	if (rc != APIM_OK) {
		http_reply_error(r, 400, "'apikey' is not a valid API key of this server (%s)",
				 why ? why : "malformed, expired or not signed here");
		return;
	}
	const char *jti = json_string_value(json_object_get(claims, "jti"));
	const char *tt = json_string_value(json_object_get(claims, "token_type"));
	const char *ktc = json_string_value(json_object_get(claims, "keytype"));
	const char *app = json_string_value(
		json_object_get(json_object_get(claims, "application"), "uuid"));
	json_int_t exp = json_integer_value(json_object_get(claims, "exp"));
	store_app_apikey k;
	if (jti == NULL || tt == NULL || strcmp(tt, "apiKey") != 0) {
		http_reply_error(r, 400, "'apikey' is not an API key (an access token?)");
		goto out;
	}
	if (app == NULL || strcmp(app, a.id) != 0 ||
	    store_application_apikey_get(r->ctx->apimgt, r->pool, jti, &k) != APIM_OK ||
	    strcmp(k.application_id, a.id) != 0) {
		http_reply_error(r, 400, "The API key does not belong to application %s", a.id);
		goto out;
	}
	if (ktc == NULL || strcmp(ktc, kt) != 0) {
		http_reply_error(r, 400, "The API key is a %s key, not %s", ktc ? ktc : "?", kt);
		goto out;
	}
	rc = km_token_revoke_jti(r->ctx, jti, exp);
	if (rc == APIM_OK)
		rc = store_application_apikey_revoke(r->ctx->apimgt, jti, apim_now_ms());
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "API key");
		goto out;
	}
	log_info("devportal", "API key %s of application %s revoked by %s", jti, a.id,
		 r->who->username);
	http_reply_empty(r, 200);
out:
	json_decref(claims);
}

#define APIKEYS DP_BASE "/applications/{applicationId}/api-keys/{keyType}"

static const http_route apikey_routes[] = {
	{"POST", APIKEYS "/generate", h_generate, DP_SCOPES_APIKEY, 0},
	{"POST", APIKEYS "/revoke", h_revoke, DP_SCOPES_APIKEY, 0},
};

void devportal_apikey_routes(http_server *s)
{
	http_server_routes(s, apikey_routes, sizeof(apikey_routes) / sizeof(apikey_routes[0]));
}
