#include "dataapi/dataapi.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "common/log.h"
#include "common/util.h"
#include "keymanager/km_keys.h"
#include "store/db.h"
#include "store/store_keymanager.h"
#include "trafficmanager/tm_custom.h"

#define DA_COMP "dataapi"
#define DA_HEADER "X-APIM-Gateway-Credential"
#define DA_CRED_MAX 512

/* The credential of this process, set once by dataapi_init. */
static char da_credential[DA_CRED_MAX + 1];

/* ------------------------------------------------------------ credential */

apim_rc dataapi_init(apim_ctx *ctx)
{
	const apim_config *cfg = ctx->cfg;
	if (*cfg->gateway_credential) {
		if (strlen(cfg->gateway_credential) > DA_CRED_MAX) {
			log_error(DA_COMP, "gateway.credential is longer than %d characters",
				  DA_CRED_MAX);
			return APIM_ECONFIG;
		}
		snprintf(da_credential, sizeof(da_credential), "%s", cfg->gateway_credential);
		return APIM_OK;
	}
	char path[4096], tmp[4200];
	if (snprintf(path, sizeof(path), "%s/gateway-credential", cfg->server_home) >=
	    (int)sizeof(path))
		return APIM_ECONFIG;
	char *text = NULL;
	apim_rc rc = apim_read_file(path, 4096, &text, NULL);
	if (rc == APIM_ENOTFOUND) {
		/* private file linked into place: two nodes sharing a home agree */
		char fresh[64];
		apim_random_token(fresh, 32);
		size_t n = strlen(fresh);
		fresh[n] = '\n';
		snprintf(tmp, sizeof(tmp), "%s.new.%ld", path, (long)getpid());
		rc = apim_write_file(tmp, fresh, n + 1, 0600);
		if (rc == APIM_OK) {
			if (link(tmp, path) == 0)
				log_info(DA_COMP, "generated the gateway credential into %s (mode 0600)",
					 path);
			else if (errno != EEXIST)
				rc = APIM_EIO;
			unlink(tmp);
		}
		if (rc == APIM_OK)
			rc = apim_read_file(path, 4096, &text, NULL);
	}
	if (rc != APIM_OK) {
		log_error(DA_COMP, "cannot read or create %s: %s", path, apim_strerror(rc));
		return rc;
	}
	size_t n = strcspn(text, "\r\n");
	text[n] = '\0';
	if (n == 0 || n > DA_CRED_MAX) {
		log_error(DA_COMP, "%s is empty or too long", path);
		free(text);
		return APIM_ECONFIG;
	}
	snprintf(da_credential, sizeof(da_credential), "%s", text);
	free(text);
	return APIM_OK;
}

/*
 * 1 when the request carries the gateway credential; otherwise answers 401
 * and returns 0.
 */
static int dataapi_authorized(http_req *r)
{
	const char *got = http_header(r, DA_HEADER);
	if (got != NULL && *da_credential &&
	    apim_ct_equal(got, strlen(got), da_credential, strlen(da_credential)))
		return 1;
	http_set_header(r, "WWW-Authenticate", "APIM-Gateway-Credential");
	http_reply_error(r, 401, got == NULL ? "The " DA_HEADER " header is missing: gateways "
					       "send the gateway credential (gateway.credential)"
					     : "The " DA_HEADER " header does not carry the gateway "
					       "credential of this control plane");
	return 0;
}

/* ------------------------------------------------------------ sections */

/* Parses JSON text into a new reference, or JSON null. */
static json_t *da_json(const char *text)
{
	json_t *v = text != NULL ? json_loads(text, 0, NULL) : NULL;
	return v != NULL ? v : json_null();
}

static const char *da_str(const db_res *r, size_t i, size_t c)
{
	const char *s = db_res_get(r, i, c);
	return s != NULL ? s : "";
}

/* Deployed APIs of label (and id when not NULL): the deployed revision's
 * document, with the API's current lifecycle state and default flag. */
static apim_rc da_apis(db *d, const char *label, const char *id, json_t *out)
{
	db_res *r = NULL;
	/* one API: plain equalities, so that the indexes serve (deltas) */
#define DA_APIS_SQL                                                                   \
	"SELECT a.id, v.doc, a.status, a.is_default, d.revision_id, v.rev_number,"    \
	" d.vhost, d.deployed_ms FROM am_deployment d"                                \
	" JOIN am_revision v ON v.id = d.revision_id JOIN am_api a ON a.id = d.api_id" \
	" WHERE d.environment = ?"
	apim_rc rc = id != NULL ? db_exec(d, &r, DA_APIS_SQL " AND d.api_id = ?", DB_ARGS(label, id))
				: db_exec(d, &r, DA_APIS_SQL " ORDER BY a.id", DB_ARGS(label));
#undef DA_APIS_SQL
	if (rc != APIM_OK)
		return rc;
	for (size_t i = 0; i < db_res_rows(r); i++) {
		json_t *doc = da_json(db_res_get(r, i, 1));
		if (!json_is_object(doc)) {
			json_decref(doc);
			doc = json_object();
		}
		json_object_set_new(doc, "id", json_string(da_str(r, i, 0)));
		json_object_set_new(doc, "lifeCycleStatus", json_string(da_str(r, i, 2)));
		json_object_set_new(doc, "isDefaultVersion", json_boolean(db_res_int(r, i, 3) != 0));
		json_object_set_new(doc, "revisionId", json_string(da_str(r, i, 4)));
		json_object_set_new(doc, "revisionNumber", json_integer(db_res_int(r, i, 5)));
		json_object_set_new(doc, "vhost", json_string(da_str(r, i, 6)));
		json_object_set_new(doc, "deployedTime", json_integer(db_res_int(r, i, 7)));
		json_object_set_new(doc, "gatewayLabel", json_string(label));
		json_array_append_new(out, doc);
	}
	db_res_free(r);
	return APIM_OK;
}

static apim_rc da_applications(db *d, const char *id, json_t *out)
{
	db_res *r = NULL;
#define DA_APPS_SQL "SELECT id, name, owner, tier, status, token_type FROM am_application"
	apim_rc rc = id != NULL ? db_exec(d, &r, DA_APPS_SQL " WHERE id = ?", DB_ARGS(id))
				: db_exec(d, &r, DA_APPS_SQL " ORDER BY id", DB_NOARGS);
#undef DA_APPS_SQL
	if (rc != APIM_OK)
		return rc;
	for (size_t i = 0; i < db_res_rows(r); i++)
		json_array_append_new(out, json_pack("{ss ss ss ss ss ss}", "id", da_str(r, i, 0),
						     "name", da_str(r, i, 1), "owner",
						     da_str(r, i, 2), "tier", da_str(r, i, 3),
						     "status", da_str(r, i, 4), "tokenType",
						     da_str(r, i, 5)));
	db_res_free(r);
	return APIM_OK;
}

static apim_rc da_key_mappings(db *d, const char *consumer_key, json_t *out)
{
	db_res *r = NULL;
#define DA_MAPS_SQL                                                         \
	"SELECT application_id, consumer_key, key_type, key_manager, state" \
	" FROM am_application_key_mapping"
	apim_rc rc = consumer_key != NULL
			     ? db_exec(d, &r, DA_MAPS_SQL " WHERE consumer_key = ?",
				       DB_ARGS(consumer_key))
			     : db_exec(d, &r, DA_MAPS_SQL " ORDER BY application_id, key_type",
				       DB_NOARGS);
#undef DA_MAPS_SQL
	if (rc != APIM_OK)
		return rc;
	for (size_t i = 0; i < db_res_rows(r); i++)
		json_array_append_new(out, json_pack("{ss ss ss ss ss}", "applicationId",
						     da_str(r, i, 0), "consumerKey",
						     da_str(r, i, 1), "keyType", da_str(r, i, 2),
						     "keyManager", da_str(r, i, 3), "state",
						     da_str(r, i, 4)));
	db_res_free(r);
	return APIM_OK;
}

static apim_rc da_subscriptions(db *d, const char *api_id, const char *app_id, json_t *out)
{
	db_res *r = NULL;
#define DA_SUBS_SQL "SELECT id, api_id, application_id, tier, status FROM am_subscription"
	apim_rc rc;
	if (api_id != NULL && app_id != NULL) /* one: the unique index */
		rc = db_exec(d, &r, DA_SUBS_SQL " WHERE api_id = ? AND application_id = ?",
			     DB_ARGS(api_id, app_id));
	else
		rc = db_exec(d, &r,
			     DA_SUBS_SQL
			     " WHERE (CAST(? AS TEXT) IS NULL OR api_id = ?)"
			     " AND (CAST(? AS TEXT) IS NULL OR application_id = ?) ORDER BY id",
			     DB_ARGS(api_id, api_id, app_id, app_id));
#undef DA_SUBS_SQL
	if (rc != APIM_OK)
		return rc;
	for (size_t i = 0; i < db_res_rows(r); i++)
		json_array_append_new(out, json_pack("{ss ss ss ss ss}", "id", da_str(r, i, 0),
						     "apiId", da_str(r, i, 1), "applicationId",
						     da_str(r, i, 2), "tier", da_str(r, i, 3),
						     "status", da_str(r, i, 4)));
	db_res_free(r);
	return APIM_OK;
}

/*
 * A custom policy gets its Siddhi query parsed here, once, for the gateways
 * and the Traffic Managers: "rule" (tm_custom.h). -1: the policy does not
 * apply (isDeployed false, or a query outside the supported subset, which
 * the Admin API refuses since it knows the subset).
 */
static int da_custom_rule(json_t *p, json_t *doc)
{
	tm_custom_rule rule;
	char err[512];
	const char *query = json_string_value(json_object_get(doc, "siddhiQuery"));
	const char *tmpl = json_string_value(json_object_get(doc, "keyTemplate"));
	if (json_is_false(json_object_get(doc, "isDeployed")) || query == NULL || tmpl == NULL)
		return -1;
	if (tm_custom_parse(query, &rule, err, sizeof(err)) != APIM_OK ||
	    tm_custom_template_check(tmpl, err, sizeof(err)) != APIM_OK) {
		log_warn("dataapi", "custom policy '%s' left out: %s",
			 json_string_value(json_object_get(p, "name")), err);
		return -1;
	}
	json_t *j = tm_custom_rule_json(&rule, tmpl);
	if (j == NULL)
		return -1;
	json_object_set_new(p, "rule", j);
	return 0;
}

static apim_rc da_policies(db *d, json_t *out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, "SELECT uuid, level, name, doc FROM am_policy"
				    " ORDER BY level, name", DB_NOARGS);
	if (rc != APIM_OK)
		return rc;
	for (size_t i = 0; i < db_res_rows(r); i++) {
		json_t *doc = da_json(db_res_get(r, i, 3));
		json_t *p = json_pack("{ss ss ss so}", "id", da_str(r, i, 0), "level",
				      da_str(r, i, 1), "name", da_str(r, i, 2), "doc", doc);
		if (p != NULL && strcmp(da_str(r, i, 1), "custom") == 0 &&
		    da_custom_rule(p, doc) != 0) {
			json_decref(p);
			continue;
		}
		json_array_append_new(out, p);
	}
	db_res_free(r);
	return APIM_OK;
}

static apim_rc da_blocks(db *d, json_t *out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, "SELECT uuid, type, value, enabled FROM am_block_condition"
				    " ORDER BY uuid", DB_NOARGS);
	if (rc != APIM_OK)
		return rc;
	for (size_t i = 0; i < db_res_rows(r); i++) {
		/* value is stored as JSON text (a string, or an object for IP ranges) */
		const char *v = da_str(r, i, 2);
		json_t *jv = json_loads(v, JSON_DECODE_ANY, NULL);
		if (jv == NULL)
			jv = json_string(v);
		json_array_append_new(out, json_pack("{ss ss so sb}", "conditionId",
						     da_str(r, i, 0), "conditionType",
						     da_str(r, i, 1), "conditionValue", jv,
						     "conditionStatus", db_res_int(r, i, 3) != 0));
	}
	db_res_free(r);
	return APIM_OK;
}

static apim_rc da_revoked(db *d, json_t *out)
{
	db_res *r = NULL;
	char now[24];
	snprintf(now, sizeof(now), "%lld", (long long)apim_now_ms());
	apim_rc rc = db_exec(d, &r, "SELECT jti, expiry_ms FROM am_revoked_jwt"
				    " WHERE expiry_ms > ? ORDER BY jti", DB_ARGS(now));
	if (rc != APIM_OK)
		return rc;
	for (size_t i = 0; i < db_res_rows(r); i++)
		json_array_append_new(out, json_pack("{ss sI}", "jti", da_str(r, i, 0), "expiry",
						     (json_int_t)db_res_int(r, i, 1)));
	db_res_free(r);
	return APIM_OK;
}

/*
 * Our Key Manager with its JWKS, then every other issuer (store_keymanager)
 * with the URL of its JWKS, which each gateway fetches itself. When the
 * other issuers cannot be read, only ours (logged): a gateway then refuses
 * their tokens until the next snapshot rather than accepting stale ones.
 */
static json_t *da_key_managers(apim_ctx *ctx)
{
	json_t *jwks = ctx->shared != NULL ? km_keys_jwks(ctx) : NULL;
	if (jwks == NULL)
		jwks = json_pack("{s[]}", "keys");
	json_t *out = json_pack("[{ss ss ss so}]", "name", "Resident Key Manager", "type",
				"default", "issuer", km_issuer(ctx), "jwks", jwks);
	if (out == NULL || ctx->apimgt == NULL)
		return out;
	arena *pool = arena_create(4096);
	store_keymanager *ks = NULL;
	size_t n = 0;
	int64_t total = 0;
	apim_rc rc = store_keymanager_list(ctx->apimgt, pool, 0, -1, &ks, &n, &total);
	if (rc != APIM_OK)
		log_error(DA_COMP, "reading the key managers failed: %s", apim_strerror(rc));
	for (size_t i = 0; rc == APIM_OK && i < n; i++) {
		json_t *doc = json_loads(ks[i].doc, 0, NULL);
		json_t *certs = json_object_get(doc, "certificates");
		const char *url = json_string_value(json_object_get(certs, "value"));
		const char *ckc = json_string_value(json_object_get(doc, "consumerKeyClaim"));
		const char *sc = json_string_value(json_object_get(doc, "scopesClaim"));
		const char *type = json_string_value(json_object_get(doc, "type"));
		json_t *o = json_pack("{ss ss ss ss ss ss sb}", "id", ks[i].id, "name", ks[i].name,
				      "type", type ? type : "custom", "issuer", ks[i].issuer,
				      "consumerKeyClaim", ckc ? ckc : "azp", "scopesClaim",
				      sc ? sc : "scope", "enabled", ks[i].enabled);
		if (o != NULL && url != NULL)
			json_object_set_new(o, "jwksUrl", json_string(url));
		if (o != NULL)
			json_array_append_new(out, o);
		json_decref(doc);
	}
	arena_destroy(pool);
	return out;
}

/* ------------------------------------------------------------ handlers */

/* Replies to a failed section read. */
static void da_fail(http_req *r, apim_rc rc)
{
	http_reply_rc(r, rc, "The control plane could not read its data: %s", apim_strerror(rc));
}

static const char *da_label(http_req *r)
{
	const char *l = http_query(r, "gatewayLabel");
	return l != NULL && *l ? l : "Default";
}

static void h_snapshot(http_req *r)
{
	if (!dataapi_authorized(r))
		return;
	db *d = r->ctx->apimgt;
	const char *label = da_label(r);
	json_t *apis = json_array(), *apps = json_array(), *maps = json_array(),
	       *subs = json_array(), *pols = json_array(), *blocks = json_array(),
	       *revoked = json_array();
	int64_t seq = 0;
	apim_rc rc = db_begin_read(d);
	if (rc == APIM_OK)
		rc = db_change_current(d, &seq);
	if (rc == APIM_OK)
		rc = da_apis(d, label, NULL, apis);
	if (rc == APIM_OK)
		rc = da_applications(d, NULL, apps);
	if (rc == APIM_OK)
		rc = da_key_mappings(d, NULL, maps);
	if (rc == APIM_OK)
		rc = da_subscriptions(d, NULL, NULL, subs);
	if (rc == APIM_OK)
		rc = da_policies(d, pols);
	if (rc == APIM_OK)
		rc = da_blocks(d, blocks);
	if (rc == APIM_OK)
		rc = da_revoked(d, revoked);
	db_rollback(d); /* read only: nothing to commit */
	if (rc != APIM_OK) {
		json_decref(apis);
		json_decref(apps);
		json_decref(maps);
		json_decref(subs);
		json_decref(pols);
		json_decref(blocks);
		json_decref(revoked);
		da_fail(r, rc);
		return;
	}
	json_t *body = json_pack("{sI ss so so so so so so so so}", "seq", (json_int_t)seq,
				 "gatewayLabel", label, "apis", apis, "applications", apps,
				 "keyMappings", maps, "subscriptions", subs, "policies", pols,
				 "blockConditions", blocks, "revokedJwts", revoked, "keyManagers",
				 da_key_managers(r->ctx));
	http_reply_json(r, 200, body);
}

/* {count, list} of one section. */
static void da_reply_list(http_req *r, apim_rc rc, json_t *list)
{
	if (rc != APIM_OK) {
		json_decref(list);
		da_fail(r, rc);
		return;
	}
	http_reply_json(r, 200, json_pack("{sI so}", "count", (json_int_t)json_array_size(list),
					   "list", list));
}

static void h_apis(http_req *r)
{
	if (!dataapi_authorized(r))
		return;
	json_t *l = json_array();
	da_reply_list(r, da_apis(r->ctx->apimgt, da_label(r), http_query(r, "apiId"), l), l);
}

static void h_applications(http_req *r)
{
	if (!dataapi_authorized(r))
		return;
	json_t *l = json_array();
	da_reply_list(r, da_applications(r->ctx->apimgt, http_query(r, "id"), l), l);
}

static void h_key_mappings(http_req *r)
{
	if (!dataapi_authorized(r))
		return;
	json_t *l = json_array();
	da_reply_list(r, da_key_mappings(r->ctx->apimgt, http_query(r, "consumerKey"), l), l);
}

static void h_subscriptions(http_req *r)
{
	if (!dataapi_authorized(r))
		return;
	json_t *l = json_array();
	da_reply_list(r, da_subscriptions(r->ctx->apimgt, http_query(r, "apiId"),
					  http_query(r, "appId"), l), l);
}

static void h_policies(http_req *r)
{
	if (!dataapi_authorized(r))
		return;
	json_t *l = json_array();
	da_reply_list(r, da_policies(r->ctx->apimgt, l), l);
}

static void h_block(http_req *r)
{
	if (!dataapi_authorized(r))
		return;
	json_t *l = json_array();
	da_reply_list(r, da_blocks(r->ctx->apimgt, l), l);
}

static void h_revoked(http_req *r)
{
	if (!dataapi_authorized(r))
		return;
	json_t *l = json_array();
	da_reply_list(r, da_revoked(r->ctx->apimgt, l), l);
}

static void h_key_managers(http_req *r)
{
	if (!dataapi_authorized(r))
		return;
	da_reply_list(r, APIM_OK, da_key_managers(r->ctx));
}

/*
 * Log rows one delta carries at most; beyond, a full snapshot is cheaper.
 * Entity types a delta carries; any other change (policy, block,
 * environment, key manager...) asks for a full snapshot.
 */
#define DA_DELTA_MAX 5000

/* The entity a change row names, as a set key; NULL: no delta for it. */
static const char *da_change_key(const char *type, const char *id, json_t *payload,
				 char *buf, size_t len)
{
	if (strcmp(type, "api") == 0 || strcmp(type, "application") == 0 ||
	    strcmp(type, "revoked_jwt") == 0)
		return id;
	if (strcmp(type, "key_mapping") == 0) {
		const char *ck = json_string_value(json_object_get(payload, "consumerKey"));
		return ck != NULL ? ck : ""; /* no key yet: nothing to send */
	}
	if (strcmp(type, "subscription") == 0) {
		const char *app = json_string_value(json_object_get(payload, "applicationId"));
		const char *api = json_string_value(json_object_get(payload, "apiId"));
		if (app == NULL || api == NULL)
			return NULL;
		snprintf(buf, len, "%s\n%s", app, api);
		return buf;
	}
	return NULL;
}

/* The current state of each changed entity (or its deletion) into body. */
static apim_rc da_delta(db *d, const char *label, json_t *sets, json_t *body)
{
	json_t *apis = json_array(), *apps = json_array(), *maps = json_array(),
	       *subs = json_array(), *revoked = json_array(), *gone_apis = json_array(),
	       *gone_apps = json_array(), *gone_maps = json_array(), *gone_subs = json_array();
	json_object_set_new(body, "apis", apis);
	json_object_set_new(body, "deletedApis", gone_apis);
	json_object_set_new(body, "applications", apps);
	json_object_set_new(body, "deletedApplications", gone_apps);
	json_object_set_new(body, "keyMappings", maps);
	json_object_set_new(body, "deletedKeyMappings", gone_maps);
	json_object_set_new(body, "subscriptions", subs);
	json_object_set_new(body, "deletedSubscriptions", gone_subs);
	json_object_set_new(body, "revokedJwts", revoked);
	apim_rc rc = APIM_OK;
	const char *type, *key;
	json_t *set, *v;
	json_object_foreach(sets, type, set)
	{
		json_object_foreach(set, key, v)
		{
			if (*key == '\0')
				continue;
			size_t before;
			if (strcmp(type, "api") == 0) {
				before = json_array_size(apis);
				rc = da_apis(d, label, key, apis);
				if (rc == APIM_OK && json_array_size(apis) == before)
					json_array_append_new(gone_apis, json_string(key));
			} else if (strcmp(type, "application") == 0) {
				before = json_array_size(apps);
				rc = da_applications(d, key, apps);
				if (rc == APIM_OK && json_array_size(apps) == before)
					json_array_append_new(gone_apps, json_string(key));
			} else if (strcmp(type, "key_mapping") == 0) {
				before = json_array_size(maps);
				rc = da_key_mappings(d, key, maps);
				if (rc == APIM_OK && json_array_size(maps) == before)
					json_array_append_new(gone_maps, json_string(key));
			} else if (strcmp(type, "subscription") == 0) {
				before = json_array_size(subs);
				rc = da_subscriptions(d, json_string_value(json_object_get(v, "apiId")),
						      json_string_value(json_object_get(v, "applicationId")),
						      subs);
				if (rc == APIM_OK && json_array_size(subs) == before)
					json_array_append(gone_subs, v);
			} else if (strcmp(type, "revoked_jwt") == 0) {
				db_res *r = NULL;
				rc = db_exec(d, &r, "SELECT jti, expiry_ms FROM am_revoked_jwt WHERE jti = ?",
					     DB_ARGS(key));
				for (size_t i = 0; rc == APIM_OK && i < db_res_rows(r); i++)
					json_array_append_new(revoked,
							      json_pack("{ss sI}", "jti", da_str(r, i, 0),
									"expiry",
									(json_int_t)db_res_int(r, i, 1)));
				db_res_free(r);
			}
			if (rc != APIM_OK)
				return rc;
		}
	}
	return APIM_OK;
}

/*
 * GET /changes?since=<seq>&gatewayLabel=: what changed after since, as
 * {"seq", "since", "apis", "deletedApis", "applications",
 * "deletedApplications", "keyMappings", "deletedKeyMappings" (consumer
 * keys), "subscriptions", "deletedSubscriptions" ({applicationId, apiId}),
 * "revokedJwts"}: the current state of each changed entity or its deletion,
 * read in one transaction with seq. {"seq", "since", "full": true,
 * "reason"} when a delta cannot say it: since is ahead of the sequence
 * (database restored), too many changes, rows purged from the log (since
 * is before the oldest row kept, see events.h) or missing, or a change of
 * a kind deltas do not carry.
 */
static void h_changes(http_req *r)
{
	if (!dataapi_authorized(r))
		return;
	const char *q = http_query(r, "since");
	char *end = NULL;
	long long since = q != NULL ? strtoll(q, &end, 10) : -1;
	if (q == NULL || *q == '\0' || end == NULL || *end != '\0' || since < 0) {
		http_reply_error(r, 400, "since must be a change sequence number (0 or more)");
		return;
	}
	db *d = r->ctx->apimgt;
	const char *label = da_label(r);
	const char *reason = NULL;
	int64_t seq = 0;
	db_res *res = NULL;
	json_t *body = json_object(), *sets = json_object();
	apim_rc rc = db_begin_read(d);
	if (rc == APIM_OK)
		rc = db_change_current(d, &seq);
	if (rc == APIM_OK) {
		if (since > seq)
			reason = "the gateway is ahead of the change sequence (database restored?)";
		else if (seq - since > DA_DELTA_MAX)
			reason = "too many changes";
	}
	if (rc == APIM_OK && reason == NULL && seq > since) {
		/* the purge (events.c) removed rows after since: a snapshot */
		rc = db_exec(d, &res, "SELECT MIN(seq) FROM am_change_log", DB_NOARGS);
		if (rc == APIM_OK && (db_res_rows(res) != 1 || db_res_get(res, 0, 0) == NULL ||
				      db_res_int(res, 0, 0) > since + 1))
			reason = "the change log was purged past since (event_hub.change_log_keep_rows, "
				 "change_log_keep_days)";
		db_res_free(res);
		res = NULL;
	}
	if (rc == APIM_OK && reason == NULL && seq > since) {
		char from[32], to[32];
		snprintf(from, sizeof(from), "%lld", since);
		snprintf(to, sizeof(to), "%lld", (long long)seq);
		rc = db_exec(d, &res,
			     "SELECT seq, entity_type, entity_id, payload FROM am_change_log"
			     " WHERE seq > ? AND seq <= ? ORDER BY seq",
			     DB_ARGS(from, to));
		if (rc == APIM_OK && (int64_t)db_res_rows(res) != seq - since)
			reason = "the change log does not hold every change since then";
		for (size_t i = 0; rc == APIM_OK && reason == NULL && i < db_res_rows(res); i++) {
			const char *type = da_str(res, i, 1);
			json_t *pl = da_json(db_res_get(res, i, 3));
			char buf[600];
			const char *key = da_change_key(type, da_str(res, i, 2), pl, buf, sizeof(buf));
			if (key == NULL) {
				reason = "a change that only a full snapshot carries";
			} else {
				json_t *set = json_object_get(sets, type);
				if (set == NULL) {
					set = json_object();
					json_object_set_new(sets, type, set);
				}
				json_object_set_new(set, key,
						    strcmp(type, "subscription") == 0
							    ? json_pack("{sO sO}", "applicationId",
									json_object_get(pl, "applicationId"),
									"apiId", json_object_get(pl, "apiId"))
							    : json_true());
			}
			json_decref(pl);
		}
		db_res_free(res);
	}
	if (rc == APIM_OK && reason == NULL)
		rc = da_delta(d, label, sets, body);
	db_rollback(d); /* read only: nothing to commit */
	json_decref(sets);
	if (rc != APIM_OK) {
		json_decref(body);
		da_fail(r, rc);
		return;
	}
	json_object_set_new(body, "seq", json_integer(seq));
	json_object_set_new(body, "since", json_integer(since));
	if (reason != NULL) {
		json_object_clear(body);
		json_object_set_new(body, "seq", json_integer(seq));
		json_object_set_new(body, "since", json_integer(since));
		json_object_set_new(body, "full", json_true());
		json_object_set_new(body, "reason", json_string(reason));
	}
	http_reply_json(r, 200, body);
}

static void h_sequence(http_req *r)
{
	if (!dataapi_authorized(r))
		return;
	int64_t seq = 0;
	apim_rc rc = db_change_current(r->ctx->apimgt, &seq);
	if (rc != APIM_OK) {
		da_fail(r, rc);
		return;
	}
	http_reply_json(r, 200, json_pack("{sI}", "seq", (json_int_t)seq));
}

#define DA_BASE "/internal/data/v1"
static const http_route dataapi_table[] = {
	{"GET", DA_BASE "/snapshot", h_snapshot, NULL, HTTP_OWN_AUTH},
	{"GET", DA_BASE "/sequence", h_sequence, NULL, HTTP_OWN_AUTH},
	{"GET", DA_BASE "/changes", h_changes, NULL, HTTP_OWN_AUTH},
	{"GET", DA_BASE "/apis", h_apis, NULL, HTTP_OWN_AUTH},
	{"GET", DA_BASE "/applications", h_applications, NULL, HTTP_OWN_AUTH},
	{"GET", DA_BASE "/application-key-mappings", h_key_mappings, NULL, HTTP_OWN_AUTH},
	{"GET", DA_BASE "/subscriptions", h_subscriptions, NULL, HTTP_OWN_AUTH},
	{"GET", DA_BASE "/throttling-policies", h_policies, NULL, HTTP_OWN_AUTH},
	{"GET", DA_BASE "/block", h_block, NULL, HTTP_OWN_AUTH},
	{"GET", DA_BASE "/revokedjwt", h_revoked, NULL, HTTP_OWN_AUTH},
	{"GET", DA_BASE "/keymanagers", h_key_managers, NULL, HTTP_OWN_AUTH},
};

void dataapi_routes(http_server *s)
{
	http_server_routes(s, dataapi_table, sizeof(dataapi_table) / sizeof(dataapi_table[0]));
}
