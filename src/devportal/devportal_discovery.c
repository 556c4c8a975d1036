/*
 * devportal_discovery.c: what a consumer browses in the Developer Portal
 * (/api/am/devportal/v3): APIs (list, search, get) with their OpenAPI
 * definition, documents, tags and gateway URLs; the rate-limit tiers; the
 * Key Manager. Sign-up (devportal_signup.c) and ratings and comments
 * (devportal_rating.c) register their routes from here.
 *
 * Every route is public: an anonymous caller sees PUBLIC APIs, an
 * authenticated one also PRIVATE APIs and the RESTRICTED APIs of its roles
 * (devportal_api_visible). An API the caller may not see answers 404, the
 * same as an unknown one, so that its existence does not leak.
 *
 * The API shown is the Publisher's working copy (am_api.doc), as in the
 * reference; the gateway URLs come from its deployments and the vhosts of
 * their environments.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/util.h"
#include "devportal/devportal_internal.h"
#include "keymanager/km_keys.h"
#include "publisher/publisher_internal.h"
#include "store/db.h"
#include "store/store_keymanager.h"
#include "store/store_api.h"
#include "store/store_document.h"
#include "store/store_environment.h"
#include "store/store_policy.h"
#include "store/store_rating.h"

#define DP_BASE "/api/am/devportal/v3"
/* Upper bound of the APIs (or documents, policies) one list request reads
 * before filtering them by visibility and paging. */
#define DP_SCAN_MAX 10000

static const char *const dp_states[] = {"PUBLISHED", "PROTOTYPED", "DEPRECATED"};
#define DP_NSTATES (sizeof(dp_states) / sizeof(dp_states[0]))

/* ---------- visibility ---------- */

static int dp_has_role(const principal *p, const char *role)
{
	for (size_t i = 0; p != NULL && role != NULL && i < p->nroles; i++)
		if (p->roles[i] != NULL && strcasecmp(p->roles[i], role) == 0)
			return 1;
	return 0;
}

static int dp_is_admin(const principal *p)
{
	return p != NULL && (principal_is_admin(p) || dp_has_role(p, ROLE_ADMIN));
}

int devportal_api_visible(const principal *who, json_t *api)
{
	const char *status = json_string_value(json_object_get(api, "lifeCycleStatus"));
	int listed = 0;
	for (size_t i = 0; status != NULL && i < DP_NSTATES; i++)
		if (strcasecmp(status, dp_states[i]) == 0)
			listed = 1;
	if (!listed)
		return 0;
	const char *vis = json_string_value(json_object_get(api, "visibility"));
	if (vis == NULL || strcasecmp(vis, "PUBLIC") == 0)
		return 1;
	if (who == NULL)
		return 0;
	if (dp_is_admin(who))
		return 1;
	if (strcasecmp(vis, "PRIVATE") == 0)
		return 1;
	if (strcasecmp(vis, "RESTRICTED") != 0)
		return 0;
	size_t i;
	json_t *role;
	json_array_foreach(json_object_get(api, "visibleRoles"), i, role) {
		const char *name = json_string_value(role);
		if (name == NULL)
			continue;
		if (strcasecmp(name, ROLE_EVERYONE) == 0 || dp_has_role(who, name))
			return 1;
	}
	return 0;
}

/* ---------- helpers ---------- */


/*
 * Loads the API and its rendered document (*doc, new reference) when the
 * caller may see it; otherwise answers and returns -1.
 */
static int dp_load(http_req *r, const char *id, store_api *a, json_t **doc)
{
	*doc = NULL;
	if (id == NULL || !apim_uuid_valid(id)) {
		http_reply_error(r, 404, "API %s not found", id ? id : "");
		return -1;
	}
	apim_rc rc = store_api_get(r->ctx->apimgt, r->pool, id, a);
	if (rc == APIM_ENOTFOUND) {
		http_reply_error(r, 404, "API %s not found", id);
		return -1;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "API");
		return -1;
	}
	json_t *d = publisher_api_render(a);
	if (!devportal_api_visible(r->who, d)) {
		json_decref(d);
		http_reply_error(r, 404, "API %s not found", id);
		return -1;
	}
	*doc = d;
	return 0;
}

int devportal_discovery_load_api(http_req *r, const char *id, store_api *out)
{
	json_t *doc = NULL;
	int rc = dp_load(r, id, out, &doc);
	json_decref(doc);
	return rc;
}

/* A deep copy of doc[key], or dflt (stolen either way) when absent. */
static json_t *dp_copy(const json_t *doc, const char *key, json_t *dflt)
{
	json_t *v = json_object_get(doc, key);
	if (v == NULL)
		return dflt;
	json_decref(dflt);
	return json_deep_copy(v);
}

/* "4.5": the average rating with one decimal, as the reference's string. */
static json_t *dp_avg_json(int64_t count, int64_t sum)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%.1f", count > 0 ? (double)sum / (double)count : 0.0);
	return json_string(buf);
}

/* Average rating and count of an API (0 when they cannot be read). */
static void dp_rating(http_req *r, const char *api_id, int64_t *count, int64_t *sum)
{
	*count = *sum = 0;
	apim_rc rc = store_rating_summary(r->ctx->shared, api_id, count, sum);
	if (rc != APIM_OK)
		log_warn("devportal", "ratings of API %s unreadable: %s", api_id, apim_strerror(rc));
}

/* ---------- gateway URLs ---------- */

/* The vhost's httpContext as "" or "/ctx" (no trailing slash). */
static const char *dp_http_context(arena *pool, const char *c)
{
	if (c == NULL)
		return "";
	while (*c == '/')
		c++;
	size_t n = strlen(c);
	while (n > 0 && c[n - 1] == '/')
		n--;
	if (n == 0)
		return "";
	return arena_sprintf(pool, "/%.*s", (int)n, c);
}

static json_t *dp_url(arena *pool, const char *scheme, const char *host, int64_t port,
		      int64_t dflt_port, const char *ctx, const char *path)
{
	char p[24] = "";
	if (port != dflt_port)
		snprintf(p, sizeof(p), ":%" PRId64, port);
	return json_string(arena_sprintf(pool, "%s://%s%s%s%s", scheme, host, p, ctx, path));
}

/* The context of the default version: the template without "{version}". */
static const char *dp_default_path(arena *pool, const char *tmpl)
{
	char *s = arena_strdup(pool, tmpl ? tmpl : "");
	char *v = strstr(s, "{version}");
	if (v == NULL)
		return s;
	char *end = v + strlen("{version}");
	if (v > s && v[-1] == '/')
		v--;
	else if (*end == '/')
		end++;
	memmove(v, end, strlen(end) + 1);
	if (*s == '\0')
		return "/";
	return s;
}

static int dp_has_transport(const json_t *doc, const char *t)
{
	json_t *tr = json_object_get(doc, "transport");
	size_t i;
	json_t *v;
	if (!json_is_array(tr) || json_array_size(tr) == 0)
		return 1;
	json_array_foreach(tr, i, v)
		if (json_is_string(v) && strcasecmp(json_string_value(v), t) == 0)
			return 1;
	return 0;
}

/* {http, https, ws, wss} of one path on one vhost. */
static json_t *dp_urls(arena *pool, const json_t *doc, const char *host, const json_t *vh,
		       int64_t offset, const char *path)
{
	const char *ctx = dp_http_context(pool, json_string_value(json_object_get(vh, "httpContext")));
	json_t *hp = json_object_get(vh, "httpPort"), *hsp = json_object_get(vh, "httpsPort");
	int64_t http_port = json_is_integer(hp) ? json_integer_value(hp) : 8280 + offset;
	int64_t https_port = json_is_integer(hsp) ? json_integer_value(hsp) : 8243 + offset;
	json_t *o = json_object();
	json_object_set_new(o, "http",
			    dp_has_transport(doc, "http")
				    ? dp_url(pool, "http", host, http_port, 80, ctx, path)
				    : json_null());
	json_object_set_new(o, "https",
			    dp_has_transport(doc, "https")
				    ? dp_url(pool, "https", host, https_port, 443, ctx, path)
				    : json_null());
	json_object_set_new(o, "ws", json_null());
	json_object_set_new(o, "wss", json_null());
	return o;
}

/*
 * endpointURLs of the API: one entry per deployment shown on the Developer
 * Portal (environment filter: only that environment, NULL: all).
 * *names (may be NULL) receives the environment names as a JSON array.
 */
static json_t *dp_endpoint_urls(http_req *r, const store_api *a, const json_t *doc,
				const char *environment, json_t **names)
{
	json_t *out = json_array();
	store_deployment *deps = NULL;
	size_t n = 0;
	int64_t offset = r->ctx->cfg ? r->ctx->cfg->server_port_offset : 0;
	if (names != NULL)
		*names = json_array();
	apim_rc rc = store_deployment_list(r->ctx->apimgt, r->pool, a->id, NULL, &deps, &n);
	if (rc != APIM_OK) {
		log_warn("devportal", "deployments of API %s unreadable: %s", a->id,
			 apim_strerror(rc));
		return out;
	}
	for (size_t i = 0; i < n; i++) {
		const store_deployment *dp = &deps[i];
		if (!dp->display_on_devportal)
			continue;
		if (environment != NULL && strcmp(environment, dp->environment) != 0)
			continue;
		store_environment env;
		json_t *edoc = NULL;
		if (store_environment_get_by_name(r->ctx->apimgt, r->pool, dp->environment, &env) ==
		    APIM_OK)
			edoc = publisher_json_parse(env.doc);
		/* the deployment's vhost as the environment defines it now */
		json_t *vh = NULL, *v;
		size_t j;
		json_array_foreach(json_object_get(edoc, "vhosts"), j, v) {
			const char *h = json_string_value(json_object_get(v, "host"));
			if (h != NULL && dp->vhost != NULL && strcasecmp(h, dp->vhost) == 0)
				vh = v;
		}
		const char *host = dp->vhost && *dp->vhost ? dp->vhost : "localhost";
		const char *display = json_string_value(json_object_get(edoc, "displayName"));
		const char *type = json_string_value(json_object_get(edoc, "type"));
		json_t *e = json_object();
		json_object_set_new(e, "environmentName", json_string(dp->environment));
		json_object_set_new(e, "environmentDisplayName",
				    json_string(display ? display : dp->environment));
		json_object_set_new(e, "environmentType", json_string(type ? type : "hybrid"));
		json_object_set_new(e, "URLs", dp_urls(r->pool, doc, host, vh, offset,
							a->full_context));
		if (a->is_default)
			json_object_set_new(
				e, "defaultVersionURLs",
				dp_urls(r->pool, doc, host, vh, offset,
					dp_default_path(r->pool, a->context_template)));
		else
			json_object_set_new(e, "defaultVersionURLs",
					    json_pack("{s:n, s:n, s:n, s:n}", "http", "https", "ws",
						      "wss"));
		json_array_append_new(out, e);
		if (names != NULL)
			json_array_append_new(*names, json_string(dp->environment));
		json_decref(edoc);
	}
	return out;
}

/* ---------- the API object ---------- */

static const char *dp_tier_plan(http_req *r, const char *name)
{
	store_policy p;
	if (store_policy_get_by_name(r->ctx->apimgt, r->pool, "subscription", name, &p) != APIM_OK)
		return "FREE";
	json_t *doc = publisher_json_parse(p.doc);
	const char *plan = json_string_value(json_object_get(doc, "billingPlan"));
	const char *out = arena_strdup(r->pool, plan && *plan ? plan : "FREE");
	json_decref(doc);
	return out;
}

static json_t *dp_scopes(const json_t *doc)
{
	json_t *out = json_array(), *s;
	size_t i;
	json_array_foreach(json_object_get(doc, "scopes"), i, s) {
		json_t *sc = json_object_get(s, "scope");
		if (!json_is_object(sc))
			sc = s;
		const char *name = json_string_value(json_object_get(sc, "name"));
		const char *display = json_string_value(json_object_get(sc, "displayName"));
		const char *desc = json_string_value(json_object_get(sc, "description"));
		json_t *roles = json_object_get(sc, "bindings");
		json_array_append_new(out, json_pack("{s:s?, s:s?, s:o, s:s?}", "key", name, "name",
						     display ? display : name, "roles",
						     json_is_array(roles) ? json_deep_copy(roles)
									  : json_array(),
						     "description", desc));
	}
	return out;
}

static json_t *dp_operations(const json_t *doc)
{
	json_t *out = json_array(), *op;
	size_t i;
	static const char *const keys[] = {"id", "target", "verb", "authType", "throttlingPolicy",
					   "scopes"};
	json_array_foreach(json_object_get(doc, "operations"), i, op) {
		json_t *o = json_object();
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
			json_t *v = json_object_get(op, keys[k]);
			json_object_set_new(o, keys[k], v ? json_deep_copy(v) : json_null());
		}
		json_array_append_new(out, o);
	}
	return out;
}

/* The API object of GET /apis/{apiId} (DevPortal v3 "API"). */
static json_t *dp_api_render(http_req *r, const store_api *a, const json_t *doc)
{
	int64_t count, sum;
	dp_rating(r, a->id, &count, &sum);
	json_t *o = json_object();
	json_object_set_new(o, "id", json_string(a->id));
	json_object_set_new(o, "name", json_string(a->name));
	json_object_set_new(o, "description", a->description ? json_string(a->description)
							      : json_null());
	json_object_set_new(o, "context", json_string(a->context));
	json_object_set_new(o, "version", json_string(a->version));
	json_object_set_new(o, "provider", json_string(a->provider));
	json_object_set_new(o, "apiDefinition", json_null());
	json_object_set_new(o, "wsdlUri", json_null());
	json_object_set_new(o, "lifeCycleStatus", json_string(a->status));
	json_object_set_new(o, "isDefaultVersion", json_boolean(a->is_default));
	json_object_set_new(o, "type", dp_copy(doc, "type", json_string("HTTP")));
	json_object_set_new(o, "transport", dp_copy(doc, "transport", json_pack("[s,s]", "http",
										  "https")));
	json_object_set_new(o, "operations", dp_operations(doc));
	json_object_set_new(o, "authorizationHeader",
			    dp_copy(doc, "authorizationHeader", json_string("Authorization")));
	json_object_set_new(o, "apiKeyHeader", dp_copy(doc, "apiKeyHeader", json_string("ApiKey")));
	json_object_set_new(o, "securityScheme", dp_copy(doc, "securityScheme", json_array()));
	json_object_set_new(o, "tags", dp_copy(doc, "tags", json_array()));
	json_t *policies = dp_copy(doc, "policies", json_array());
	json_t *tiers = json_array(), *p;
	size_t i;
	json_array_foreach(policies, i, p) {
		const char *name = json_string_value(p);
		if (name == NULL)
			continue;
		json_array_append_new(tiers, json_pack("{s:s, s:s, s:n}", "tierName", name,
						       "tierPlan", dp_tier_plan(r, name),
						       "monetizationAttributes"));
	}
	json_object_set_new(o, "policies", policies);
	json_object_set_new(o, "tiers", tiers);
	json_object_set_new(o, "hasThumbnail", json_false());
	json_object_set_new(o, "additionalProperties",
			    dp_copy(doc, "additionalProperties", json_array()));
	json_object_set_new(o, "additionalPropertiesMap",
			    dp_copy(doc, "additionalPropertiesMap", json_object()));
	json_object_set_new(o, "monetization", dp_copy(doc, "monetization", json_null()));
	json_t *envs = NULL;
	json_object_set_new(o, "endpointURLs", dp_endpoint_urls(r, a, doc, NULL, &envs));
	json_object_set_new(o, "environmentList", envs);
	json_object_set_new(o, "businessInformation",
			    dp_copy(doc, "businessInformation", json_object()));
	json_object_set_new(o, "scopes", dp_scopes(doc));
	json_object_set_new(o, "avgRating", dp_avg_json(count, sum));
	json_object_set_new(o, "ratingCount", json_integer(count));
	json_object_set_new(o, "advertiseInfo",
			    dp_copy(doc, "advertiseInfo", json_pack("{s:b}", "advertised", 0)));
	json_object_set_new(o, "isSubscriptionAvailable",
			    json_boolean(strcmp(a->status, "PUBLISHED") == 0 &&
					 json_array_size(policies) > 0));
	json_object_set_new(o, "categories", dp_copy(doc, "categories", json_array()));
	json_object_set_new(o, "keyManagers", dp_copy(doc, "keyManagers", json_pack("[s]", "all")));
	json_object_set_new(o, "createdTime", publisher_time_json(a->created_ms));
	json_object_set_new(o, "lastUpdatedTime", publisher_time_json(a->updated_ms));
	json_object_set_new(o, "gatewayVendor", dp_copy(doc, "gatewayVendor", json_string("wso2")));
	json_object_set_new(o, "asyncTransportProtocols",
			    dp_copy(doc, "asyncTransportProtocols", json_array()));
	return o;
}

/* The APIInfo object of lists. */
static json_t *dp_api_info(http_req *r, const store_api *a, const json_t *doc)
{
	int64_t count, sum;
	dp_rating(r, a->id, &count, &sum);
	json_t *o = json_object();
	json_object_set_new(o, "id", json_string(a->id));
	json_object_set_new(o, "name", json_string(a->name));
	json_object_set_new(o, "description", a->description ? json_string(a->description)
							      : json_null());
	json_object_set_new(o, "context", json_string(a->context));
	json_object_set_new(o, "version", json_string(a->version));
	json_object_set_new(o, "type", dp_copy(doc, "type", json_string("HTTP")));
	json_object_set_new(o, "createdTime", publisher_time_json(a->created_ms));
	json_object_set_new(o, "provider", json_string(a->provider));
	json_object_set_new(o, "lifeCycleStatus", json_string(a->status));
	json_object_set_new(o, "thumbnailUri", json_null());
	json_object_set_new(o, "avgRating", dp_avg_json(count, sum));
	json_object_set_new(o, "throttlingPolicies", dp_copy(doc, "policies", json_array()));
	json_object_set_new(o, "tags", dp_copy(doc, "tags", json_array()));
	json_object_set_new(o, "advertiseInfo",
			    dp_copy(doc, "advertiseInfo", json_pack("{s:b}", "advertised", 0)));
	json_object_set_new(o, "businessInformation",
			    dp_copy(doc, "businessInformation", json_object()));
	json_object_set_new(o, "isSubscriptionAvailable",
			    json_boolean(strcmp(a->status, "PUBLISHED") == 0 &&
					 json_array_size(json_object_get(doc, "policies")) > 0));
	json_object_set_new(o, "monetizationLabel", json_string("FREE"));
	json_object_set_new(o, "gatewayVendor", dp_copy(doc, "gatewayVendor", json_string("wso2")));
	json_object_set_new(o, "additionalProperties",
			    dp_copy(doc, "additionalProperties", json_array()));
	json_object_set_new(o, "additionalPropertiesMap",
			    dp_copy(doc, "additionalPropertiesMap", json_object()));
	return o;
}

/* ---------- search ---------- */

typedef struct dp_search {
	store_api_query q;   /* attribute terms, run in SQL */
	const char *words[8]; /* bare words: name or description contains them */
	size_t nwords;
} dp_search;

/* Drops surrounding quotes. */
static const char *dp_unquote(arena *pool, const char *v)
{
	size_t n = strlen(v);
	if (n >= 2 && v[0] == '"' && v[n - 1] == '"')
		return arena_strndup(pool, v + 1, n - 2);
	return v;
}

/*
 * Splits query= into terms: "name:pizza tag:food", "provider:admin", and
 * bare words that must appear in the name or the description. Values may
 * be "quoted" (exact match for attributes). Answers 400 and returns -1 on
 * an unknown attribute or too many terms.
 */
static int dp_parse_search(http_req *r, const char *query, dp_search *s)
{
	static const char *const fields[] = {"name", "context", "tag", "provider", "version",
					     "description"};
	char *buf = arena_strdup(r->pool, query);
	char *p = buf;
	while (*p) {
		while (isspace((unsigned char)*p))
			p++;
		if (*p == '\0')
			break;
		char *start = p;
		int inq = 0;
		while (*p && (inq || !isspace((unsigned char)*p))) {
			if (*p == '"')
				inq = !inq;
			p++;
		}
		if (*p)
			*p++ = '\0';
		char *colon = strchr(start, ':');
		char *quote = strchr(start, '"');
		if (colon == NULL || (quote != NULL && quote < colon)) {
			const char *w = dp_unquote(r->pool, start);
			if (*w == '\0')
				continue;
			if (s->nwords == 8) {
				http_reply_error(r, 400, "The query has more than 8 words");
				return -1;
			}
			s->words[s->nwords++] = w;
			continue;
		}
		*colon = '\0';
		const char *field = NULL, *value = colon + 1;
		for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
			if (strcasecmp(start, fields[i]) == 0)
				field = fields[i];
		if (field == NULL && strcasecmp(start, "tags") == 0)
			field = "tag";
		if (field == NULL) {
			http_reply_error(r, 400, "Unknown search attribute '%s' in query: use name, "
						 "context, tag, provider, version or description "
						 "(for example name:pizza), or a bare word",
					 start);
			return -1;
		}
		if (*value == '\0')
			continue;
		if (s->q.nterms == 8) {
			http_reply_error(r, 400, "The query has more than 8 attribute terms");
			return -1;
		}
		s->q.field[s->q.nterms] = field;
		s->q.value[s->q.nterms] = value;
		s->q.nterms++;
	}
	return 0;
}

static int dp_contains_ci(const char *hay, const char *needle)
{
	if (hay == NULL)
		return 0;
	size_t n = strlen(needle);
	for (const char *h = hay; *h; h++)
		if (strncasecmp(h, needle, n) == 0)
			return 1;
	return n == 0;
}

static int dp_words_match(const dp_search *s, const store_api *a)
{
	for (size_t i = 0; i < s->nwords; i++)
		if (!dp_contains_ci(a->name, s->words[i]) &&
		    !dp_contains_ci(a->description, s->words[i]))
			return 0;
	return 1;
}

/*
 * The APIs the caller may see that match s, with their rendered documents
 * (docs[i] new references, released by the caller). -1 after answering.
 */
static int dp_visible_apis(http_req *r, const dp_search *s, store_api **apis, json_t ***docs,
			   size_t *n)
{
	store_api *all = NULL;
	size_t nall = 0;
	apim_rc rc = store_api_list_in_status(r->ctx->apimgt, r->pool, &s->q, dp_states, DP_NSTATES,
					      DP_SCAN_MAX, &all, &nall);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "APIs");
		return -1;
	}
	*apis = arena_alloc(r->pool, (nall + 1) * sizeof(store_api));
	*docs = arena_alloc(r->pool, (nall + 1) * sizeof(json_t *));
	*n = 0;
	for (size_t i = 0; i < nall; i++) {
		if (!dp_words_match(s, &all[i]))
			continue;
		json_t *doc = publisher_api_render(&all[i]);
		if (!devportal_api_visible(r->who, doc)) {
			json_decref(doc);
			continue;
		}
		(*apis)[*n] = all[i];
		(*docs)[*n] = doc;
		(*n)++;
	}
	return 0;
}

static void dp_docs_free(json_t **docs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		json_decref(docs[i]);
}

/* ---------- /apis ---------- */

static void h_apis_list(http_req *r)
{
	dp_search s;
	int64_t limit, offset;
	memset(&s, 0, sizeof(s));
	if (http_paging(r, &limit, &offset) != 0)
		return;
	const char *query = http_query(r, "query");
	if (query != NULL && dp_parse_search(r, query, &s) != 0)
		return;
	store_api *apis;
	json_t **docs;
	size_t n;
	if (dp_visible_apis(r, &s, &apis, &docs, &n) != 0)
		return;
	json_t *list = json_array();
	for (size_t i = (size_t)offset; i < n && (int64_t)(i - (size_t)offset) < limit; i++)
		json_array_append_new(list, dp_api_info(r, &apis[i], docs[i]));
	dp_docs_free(docs, n);
	http_reply_list(r, list, (int64_t)n, limit, offset);
}

static void h_api_get(http_req *r)
{
	store_api a;
	json_t *doc;
	if (dp_load(r, http_param(r, "apiId"), &a, &doc) != 0)
		return;
	json_t *o = dp_api_render(r, &a, doc);
	json_decref(doc);
	http_reply_json(r, 200, o);
}

static void h_swagger(http_req *r)
{
	store_api a;
	json_t *doc;
	if (dp_load(r, http_param(r, "apiId"), &a, &doc) != 0)
		return;
	const char *env = http_query(r, "environmentName");
	if (env != NULL && *env == '\0')
		env = NULL;
	json_t *urls = dp_endpoint_urls(r, &a, doc, env, NULL);
	if (env != NULL && json_array_size(urls) == 0) {
		json_decref(urls);
		json_decref(doc);
		http_reply_error(r, 404, "API %s is not deployed on gateway environment '%s'", a.id,
				 env);
		return;
	}
	json_t *oas = publisher_openapi_for(&a, doc);
	json_decref(doc);
	if (oas == NULL) {
		json_decref(urls);
		http_reply_error(r, 500, "The OpenAPI definition of API %s is unreadable", a.id);
		return;
	}
	/* where consumers call it: the gateway URLs of the first (or the named)
	 * environment, https first */
	json_t *first = json_object_get(json_array_get(urls, 0), "URLs");
	if (first != NULL) {
		json_t *servers = json_array();
		const char *schemes[] = {"https", "http"};
		for (size_t i = 0; i < 2; i++) {
			const char *u = json_string_value(json_object_get(first, schemes[i]));
			if (u != NULL)
				json_array_append_new(servers, json_pack("{s:s}", "url", u));
		}
		json_object_set_new(oas, "servers", servers);
	}
	json_decref(urls);
	http_reply_json(r, 200, oas);
}

static void h_thumbnail(http_req *r)
{
	store_api a;
	json_t *doc;
	if (dp_load(r, http_param(r, "apiId"), &a, &doc) != 0)
		return;
	json_decref(doc);
	http_reply_error(r, 404, "API %s has no thumbnail", a.id);
}

/* ---------- documents ---------- */

/* API_LEVEL: whoever sees the API; PRIVATE: authenticated callers;
 * OWNER_ONLY: the API's provider and admins. */
static int dp_doc_visible(const principal *who, const store_api *a, const store_document *d)
{
	const char *v = d->visibility ? d->visibility : "API_LEVEL";
	if (strcasecmp(v, "OWNER_ONLY") == 0)
		return who != NULL && (dp_is_admin(who) ||
				       (a->provider && strcmp(a->provider, who->username) == 0));
	if (strcasecmp(v, "PRIVATE") == 0)
		return who != NULL;
	return 1;
}

static json_t *dp_doc_json(const store_document *d)
{
	return json_pack("{s:s, s:s, s:s, s:s?, s:s, s:s?, s:s?, s:s?, s:o, s:o}", "documentId",
			 d->id, "name", d->name, "type", d->type, "summary", d->summary,
			 "sourceType", d->source_type, "sourceUrl", d->source_url, "otherTypeName",
			 d->other_type_name, "fileName", d->file_name, "createdTime",
			 publisher_time_json(d->created_ms), "lastUpdatedTime",
			 publisher_time_json(d->updated_ms));
}

static void h_docs_list(http_req *r)
{
	store_api a;
	json_t *doc;
	int64_t limit, offset, total = 0;
	store_document *docs;
	size_t n;
	if (http_paging(r, &limit, &offset) != 0)
		return;
	if (dp_load(r, http_param(r, "apiId"), &a, &doc) != 0)
		return;
	json_decref(doc);
	apim_rc rc = store_document_list(r->ctx->shared, r->pool, a.id, 0, DP_SCAN_MAX, &docs, &n,
					 &total);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "documents");
		return;
	}
	json_t *list = json_array();
	int64_t shown = 0;
	for (size_t i = 0; i < n; i++) {
		if (!dp_doc_visible(r->who, &a, &docs[i]))
			continue;
		if (shown >= offset && shown < offset + limit)
			json_array_append_new(list, dp_doc_json(&docs[i]));
		shown++;
	}
	http_reply_list(r, list, shown, limit, offset);
}

static int dp_load_doc(http_req *r, store_api *a, store_document *d)
{
	json_t *doc;
	if (dp_load(r, http_param(r, "apiId"), a, &doc) != 0)
		return -1;
	json_decref(doc);
	const char *id = http_param(r, "documentId");
	apim_rc rc = apim_uuid_valid(id) ? store_document_get(r->ctx->shared, r->pool, a->id, id, d)
					 : APIM_ENOTFOUND;
	if (rc == APIM_OK && !dp_doc_visible(r->who, a, d))
		rc = APIM_ENOTFOUND;
	if (rc == APIM_ENOTFOUND) {
		http_reply_error(r, 404, "Document %s of API %s not found", id, a->id);
		return -1;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "document");
		return -1;
	}
	return 0;
}

static void h_doc_get(http_req *r)
{
	store_api a;
	store_document d;
	if (dp_load_doc(r, &a, &d) != 0)
		return;
	http_reply_json(r, 200, dp_doc_json(&d));
}

static void h_doc_content(http_req *r)
{
	store_api a;
	store_document d;
	if (dp_load_doc(r, &a, &d) != 0)
		return;
	if (strcmp(d.source_type, "URL") == 0) {
		http_set_header(r, "Location", d.source_url);
		http_reply_empty(r, 303);
		return;
	}
	if (strcmp(d.source_type, "FILE") == 0) {
		if (d.file_content == NULL) {
			http_reply_error(r, 404, "Document %s has no file", d.name);
			return;
		}
		size_t len = 0;
		unsigned char *bytes =
			apim_base64_decode(d.file_content, strlen(d.file_content), &len);
		if (bytes == NULL) {
			http_reply_error(r, 500, "The stored file of document %s is unreadable", d.name);
			return;
		}
		http_set_header(r, "Content-Disposition",
				arena_sprintf(r->pool, "attachment; filename=\"%s\"",
					      d.file_name ? d.file_name : "document"));
		http_reply_raw(r, 200, d.file_type ? d.file_type : "application/octet-stream",
			       (const char *)bytes, len);
		free(bytes);
		return;
	}
	if (d.inline_content == NULL) {
		http_reply_error(r, 404, "Document %s has no content", d.name);
		return;
	}
	http_reply_raw(r, 200, strcmp(d.source_type, "MARKDOWN") == 0 ? "text/markdown"
								    : "text/plain",
		       d.inline_content, strlen(d.inline_content));
}

/* ---------- tags ---------- */

typedef struct dp_tag {
	const char *value;
	int64_t count;
} dp_tag;

static int dp_tag_cmp(const void *x, const void *y)
{
	const dp_tag *a = x, *b = y;
	int c = strcasecmp(a->value, b->value);
	return c != 0 ? c : strcmp(a->value, b->value);
}

static void h_tags(http_req *r)
{
	dp_search s;
	int64_t limit, offset;
	memset(&s, 0, sizeof(s));
	if (http_paging(r, &limit, &offset) != 0)
		return;
	store_api *apis;
	json_t **docs;
	size_t n, ntags = 0, cap = 0;
	if (dp_visible_apis(r, &s, &apis, &docs, &n) != 0)
		return;
	for (size_t i = 0; i < n; i++)
		cap += json_array_size(json_object_get(docs[i], "tags"));
	dp_tag *tags = arena_alloc(r->pool, (cap + 1) * sizeof(dp_tag));
	for (size_t i = 0; i < n; i++) {
		size_t j;
		json_t *t;
		json_array_foreach(json_object_get(docs[i], "tags"), j, t) {
			const char *v = json_string_value(t);
			if (v == NULL)
				continue;
			size_t k;
			for (k = 0; k < ntags; k++)
				if (strcmp(tags[k].value, v) == 0)
					break;
			if (k == ntags)
				tags[ntags++] = (dp_tag){arena_strdup(r->pool, v), 0};
			tags[k].count++;
		}
	}
	dp_docs_free(docs, n);
	if (ntags > 1)
		qsort(tags, ntags, sizeof(dp_tag), dp_tag_cmp);
	json_t *list = json_array();
	for (size_t i = (size_t)offset; i < ntags && (int64_t)(i - (size_t)offset) < limit; i++)
		json_array_append_new(list, json_pack("{s:s, s:I}", "value", tags[i].value, "count",
						      (json_int_t)tags[i].count));
	http_reply_list(r, list, (int64_t)ntags, limit, offset);
}

/* ---------- rate-limit tiers ---------- */

static int dp_level(http_req *r, const char **level)
{
	const char *l = http_param(r, "policyLevel");
	if (l != NULL && strcasecmp(l, "application") == 0)
		*level = "application";
	else if (l != NULL && strcasecmp(l, "subscription") == 0)
		*level = "subscription";
	else {
		http_reply_error(r, 400, "Unknown throttling policy level '%s': use application or "
					 "subscription",
				 l ? l : "");
		return -1;
	}
	return 0;
}

/* Subscription tiers with permissions: ALLOW lists the roles that see the
 * tier, DENY the roles that do not; admins see every tier. */
static int dp_policy_visible(const principal *who, const json_t *doc)
{
	json_t *perm = json_object_get(doc, "permissions");
	const char *type = json_string_value(json_object_get(perm, "permissionType"));
	if (type == NULL || dp_is_admin(who))
		return 1;
	int listed = 0;
	size_t i;
	json_t *role;
	json_array_foreach(json_object_get(perm, "roles"), i, role)
		if (json_is_string(role) &&
		    (dp_has_role(who, json_string_value(role)) ||
		     (who != NULL && strcasecmp(json_string_value(role), ROLE_EVERYONE) == 0)))
			listed = 1;
	if (strcasecmp(type, "ALLOW") == 0)
		return listed;
	if (strcasecmp(type, "DENY") == 0)
		return !listed;
	return 1;
}

/* The DevPortal "ThrottlingPolicy" of an Admin policy document. */
static json_t *dp_policy_json(const char *level, const json_t *doc)
{
	json_t *lim = json_object_get(doc, "defaultLimit");
	const char *type = json_string_value(json_object_get(lim, "type"));
	int bandwidth = type != NULL && strcmp(type, "BANDWIDTHLIMIT") == 0;
	int events = type != NULL && strcmp(type, "EVENTCOUNTLIMIT") == 0;
	json_t *part = json_object_get(lim, bandwidth ? "bandwidth"
					    : events  ? "eventCount"
						      : "requestCount");
	const char *count_key = bandwidth ? "dataAmount" : events ? "eventCount" : "requestCount";
	int sub = strcmp(level, "subscription") == 0;
	const char *plan = json_string_value(json_object_get(doc, "billingPlan"));
	json_t *stop = json_object_get(doc, "stopOnQuotaReach");
	json_t *attrs = json_object();
	size_t i;
	json_t *a;
	json_array_foreach(json_object_get(doc, "customAttributes"), i, a) {
		const char *k = json_string_value(json_object_get(a, "name"));
		const char *v = json_string_value(json_object_get(a, "value"));
		if (k != NULL)
			json_object_set_new(attrs, k, json_string(v ? v : ""));
	}
	json_t *o = json_object();
	json_object_set_new(o, "name", dp_copy(doc, "policyName", json_null()));
	json_object_set_new(o, "displayName", dp_copy(doc, "displayName", json_null()));
	json_object_set_new(o, "description", dp_copy(doc, "description", json_string("")));
	json_object_set_new(o, "policyLevel", json_string(level));
	json_object_set_new(o, "attributes", attrs);
	json_object_set_new(o, "requestCount", dp_copy(part, count_key, json_integer(0)));
	json_object_set_new(o, "dataUnit", bandwidth ? dp_copy(part, "dataUnit", json_null())
						     : json_null());
	json_object_set_new(o, "unitTime", dp_copy(part, "unitTime", json_integer(1)));
	json_object_set_new(o, "timeUnit", dp_copy(part, "timeUnit", json_string("min")));
	json_t *burst = sub ? (json_t *)doc : json_object_get(doc, "burstLimit");
	json_object_set_new(o, "rateLimitCount", dp_copy(burst, "rateLimitCount", json_integer(0)));
	json_object_set_new(o, "rateLimitTimeUnit",
			    dp_copy(burst, "rateLimitTimeUnit", json_null()));
	json_object_set_new(o, "quotaPolicyType",
			    json_string(bandwidth ? "BANDWIDTHVOLUME"
					: events  ? "EVENTCOUNT"
						  : "REQUESTCOUNT"));
	json_object_set_new(o, "tierPlan", json_string(plan && *plan ? plan : "FREE"));
	json_object_set_new(o, "stopOnQuotaReach", json_boolean(!json_is_false(stop)));
	json_object_set_new(o, "monetizationAttributes", json_null());
	json_t *perm = json_object_get(doc, "permissions");
	if (json_is_object(perm))
		json_object_set_new(
			o, "throttlingPolicyPermissions",
			json_pack("{s:s?, s:O?}", "type",
				  json_string_value(json_object_get(perm, "permissionType")), "roles",
				  json_object_get(perm, "roles")));
	else
		json_object_set_new(o, "throttlingPolicyPermissions", json_null());
	return o;
}

static void h_policies_list(http_req *r)
{
	const char *level;
	int64_t limit, offset, total = 0;
	store_policy *ps;
	size_t n;
	if (dp_level(r, &level) != 0 || http_paging(r, &limit, &offset) != 0)
		return;
	apim_rc rc = store_policy_list(r->ctx->apimgt, r->pool, level, 0, DP_SCAN_MAX, &ps, &n,
				       &total);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "throttling policies");
		return;
	}
	json_t *list = json_array();
	int64_t shown = 0;
	for (size_t i = 0; i < n; i++) {
		json_t *doc = publisher_json_parse(ps[i].doc);
		if (dp_policy_visible(r->who, doc)) {
			if (shown >= offset && shown < offset + limit)
				json_array_append_new(list, dp_policy_json(level, doc));
			shown++;
		}
		json_decref(doc);
	}
	http_reply_list(r, list, shown, limit, offset);
}

static void h_policy_get(http_req *r)
{
	const char *level;
	store_policy p;
	if (dp_level(r, &level) != 0)
		return;
	const char *id = http_param(r, "policyId");
	/* the reference names the tier here; a policy's uuid works too */
	apim_rc rc = store_policy_get_by_name(r->ctx->apimgt, r->pool, level, id, &p);
	if (rc == APIM_ENOTFOUND && apim_uuid_valid(id))
		rc = store_policy_get(r->ctx->apimgt, r->pool, level, id, &p);
	json_t *doc = rc == APIM_OK ? publisher_json_parse(p.doc) : NULL;
	if (rc == APIM_OK && !dp_policy_visible(r->who, doc))
		rc = APIM_ENOTFOUND;
	if (rc == APIM_ENOTFOUND) {
		json_decref(doc);
		http_reply_error(r, 404, "Throttling policy '%s' of level %s not found", id, level);
		return;
	}
	if (rc != APIM_OK) {
		json_decref(doc);
		http_reply_store_error(r, rc, "throttling policy");
		return;
	}
	json_t *o = dp_policy_json(level, doc);
	json_decref(doc);
	http_reply_json(r, 200, o);
}

/* GET /apis/{apiId}/subscription-policies: the API's tiers the caller may
 * use, as an array of ThrottlingPolicy. */
static void h_api_policies(http_req *r)
{
	store_api a;
	json_t *doc;
	if (dp_load(r, http_param(r, "apiId"), &a, &doc) != 0)
		return;
	json_t *out = json_array(), *name;
	size_t i;
	json_array_foreach(json_object_get(doc, "policies"), i, name) {
		store_policy p;
		if (!json_is_string(name))
			continue;
		apim_rc rc = store_policy_get_by_name(r->ctx->apimgt, r->pool, "subscription",
						      json_string_value(name), &p);
		if (rc == APIM_ENOTFOUND)
			continue; /* deleted since: not offered */
		if (rc != APIM_OK) {
			json_decref(out);
			json_decref(doc);
			http_reply_store_error(r, rc, "throttling policies");
			return;
		}
		json_t *pd = publisher_json_parse(p.doc);
		if (dp_policy_visible(r->who, pd))
			json_array_append_new(out, dp_policy_json("subscription", pd));
		json_decref(pd);
	}
	json_decref(doc);
	http_reply_json(r, 200, out);
}

/* ---------- key managers ---------- */

/* Where the Key Manager's endpoints are: the configured issuer without
 * "/oauth2/token", else this server. */
static const char *dp_km_base(http_req *r)
{
	static const char suffix[] = "/oauth2/token";
	const char *iss = km_issuer(r->ctx);
	size_t n = iss ? strlen(iss) : 0, sl = strlen(suffix);
	if (n > sl && strcmp(iss + n - sl, suffix) == 0)
		return arena_strndup(r->pool, iss, n - sl);
	const apim_config *cfg = r->ctx->cfg;
	return arena_sprintf(r->pool, "%s://%s:%d",
			     cfg->http_tls_cert && *cfg->http_tls_cert ? "https" : "http",
			     cfg->server_hostname ? cfg->server_hostname : "localhost", r->ctx->port);
}

static void h_key_managers(http_req *r)
{
	const char *base = dp_km_base(r);
	json_t *km = json_object();
	json_object_set_new(km, "id", json_string(DEVPORTAL_KM_ID));
	json_object_set_new(km, "name", json_string(DEVPORTAL_KM_NAME));
	json_object_set_new(km, "type", json_string("default"));
	json_object_set_new(km, "displayName", json_string(DEVPORTAL_KM_NAME));
	json_object_set_new(km, "description",
			    json_string("This is Resident Key Manager"));
	json_object_set_new(km, "enabled", json_true());
	json_object_set_new(km, "availableGrantTypes",
			    json_pack("[s,s,s,s]", "client_credentials", "password",
				      "refresh_token", "authorization_code"));
	json_object_set_new(km, "tokenEndpoint",
			    json_string(arena_sprintf(r->pool, "%s/oauth2/token", base)));
	json_object_set_new(km, "revokeEndpoint",
			    json_string(arena_sprintf(r->pool, "%s/oauth2/revoke", base)));
	json_object_set_new(km, "userInfoEndpoint",
			    json_string(arena_sprintf(r->pool, "%s/oauth2/userinfo", base)));
	json_object_set_new(km, "enableTokenGeneration", json_true());
	json_object_set_new(km, "enableTokenEncryption", json_false());
	json_object_set_new(km, "enableTokenHashing", json_false());
	json_object_set_new(km, "enableOAuthAppCreation", json_true());
	json_object_set_new(km, "enableMapOAuthConsumerApps", json_true());
	json_object_set_new(km, "applicationConfiguration", json_array());
	json_object_set_new(km, "alias", json_null());
	json_object_set_new(km, "additionalProperties", json_object());
	json_object_set_new(km, "tokenType", json_string("DIRECT"));
	json_t *list = json_array();
	json_array_append_new(list, km);
	/* the enabled key managers of the Admin API: clients are mapped
	 * (map-keys), never created, and tokens come from them */
	store_keymanager *ks = NULL;
	size_t n = 0;
	int64_t total = 0;
	if (r->ctx->apimgt != NULL &&
	    store_keymanager_list(r->ctx->apimgt, r->pool, 0, -1, &ks, &n, &total) == APIM_OK) {
		for (size_t i = 0; i < n; i++) {
			if (!ks[i].enabled)
				continue;
			json_t *doc = json_loads(ks[i].doc, 0, NULL);
			json_t *o = json_pack(
				"{s:s, s:s, s:s, s:O?, s:O?, s:b, s:b, s:b, s:b, s:b, s:o, s:n, s:o, "
				"s:s}",
				"id", ks[i].id, "name", ks[i].name, "type",
				json_string_value(json_object_get(doc, "type")) ? json_string_value(json_object_get(doc, "type")) : "custom",
				"displayName", json_object_get(doc, "displayName"), "description",
				json_object_get(doc, "description"), "enabled", 1,
				"enableTokenGeneration", 0, "enableTokenEncryption", 0,
				"enableOAuthAppCreation", 0, "enableMapOAuthConsumerApps", 1,
				"applicationConfiguration", json_array(), "alias",
				"additionalProperties", json_object(), "tokenType", "DIRECT");
			json_decref(doc);
			if (o != NULL)
				json_array_append_new(list, o);
		}
	}
	http_reply_json(r, 200, json_pack("{s:I, s:o}", "count", (json_int_t)json_array_size(list),
					  "list", list));
}

/* ---------- wiring ---------- */

apim_rc devportal_discovery_migrate(apim_ctx *ctx)
{
	return devportal_rating_migrate(ctx);
}

static const http_route discovery_routes[] = {
	{"GET", DP_BASE "/apis", h_apis_list, NULL, HTTP_PUBLIC},
	{"GET", DP_BASE "/apis/{apiId}", h_api_get, NULL, HTTP_PUBLIC},
	{"GET", DP_BASE "/apis/{apiId}/swagger", h_swagger, NULL, HTTP_PUBLIC},
	{"GET", DP_BASE "/apis/{apiId}/thumbnail", h_thumbnail, NULL, HTTP_PUBLIC},
	{"GET", DP_BASE "/apis/{apiId}/subscription-policies", h_api_policies, NULL, HTTP_PUBLIC},
	{"GET", DP_BASE "/apis/{apiId}/documents", h_docs_list, NULL, HTTP_PUBLIC},
	{"GET", DP_BASE "/apis/{apiId}/documents/{documentId}", h_doc_get, NULL, HTTP_PUBLIC},
	{"GET", DP_BASE "/apis/{apiId}/documents/{documentId}/content", h_doc_content, NULL,
	 HTTP_PUBLIC},
	{"GET", DP_BASE "/tags", h_tags, NULL, HTTP_PUBLIC},
	{"GET", DP_BASE "/throttling-policies/{policyLevel}", h_policies_list, NULL, HTTP_PUBLIC},
	{"GET", DP_BASE "/throttling-policies/{policyLevel}/{policyId}", h_policy_get, NULL,
	 HTTP_PUBLIC},
	{"GET", DP_BASE "/key-managers", h_key_managers, NULL, HTTP_PUBLIC},
};

void devportal_discovery_routes(http_server *s)
{
	http_server_routes(s, discovery_routes,
			   sizeof(discovery_routes) / sizeof(discovery_routes[0]));
	devportal_signup_routes(s);
	devportal_rating_routes(s);
}
