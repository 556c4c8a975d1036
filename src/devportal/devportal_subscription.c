/*
 * devportal_subscription.c: /subscriptions of the Developer Portal:
 * subscribe an application to an API with a subscription tier (one or
 * several at once, all or nothing), list by application or by API, read,
 * change the tier, unsubscribe.
 *
 * An API can be subscribed to when the caller may see it (its visibility
 * and roles, devportal_api_visible) and it is PUBLISHED or PROTOTYPED; the
 * tier must be one of the API's `policies`. Only the caller's applications
 * count (admins: every application). Subscriptions the API's publisher
 * blocked keep their status: the Developer Portal can neither unblock them
 * nor remove them (which would let them be re-created unblocked).
 *
 * Every create, update and delete is recorded in the change sequence
 * ("subscription", id, action, {apiId, applicationId, tier, status}) in
 * its transaction.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/ctx.h"
#include "common/log.h"
#include "common/util.h"
#include "devportal/devportal_app_internal.h"
#include "devportal/devportal_internal.h"
#include "store/db.h"
#include "store/store_api.h"
#include "store/store_subscription.h"

#define MULTIPLE_MAX 100

json_t *devportal_subscription_payload(const char *api_id, const char *app_id,
				       const char *tier, const char *status)
{
	return json_pack("{s:s, s:s, s:s, s:s}", "apiId", api_id, "applicationId", app_id, "tier",
			 tier, "status", status);
}

/* ---------- APIs ---------- */

/*
 * Loads the API when the caller may see it in the Developer Portal, in any
 * lifecycle state (the state is checked separately, so that the error can
 * say what is wrong). *doc receives its document (new reference). Answers
 * 404 and returns -1 otherwise.
 */
static int load_api(http_req *r, const char *id, store_api *api, json_t **doc)
{
	*doc = NULL;
	if (id == NULL || *id == '\0') {
		http_reply_error(r, 400, "'apiId' is required: the id of the API to subscribe to");
		return -1;
	}
	apim_rc rc = store_api_get(r->ctx->apimgt, r->pool, id, api);
	if (rc != APIM_OK && rc != APIM_ENOTFOUND) {
		http_reply_store_error(r, rc, "API");
		return -1;
	}
	json_t *d = rc == APIM_OK && api->doc ? json_loads(api->doc, 0, NULL) : NULL;
	if (d != NULL && json_is_object(d)) {
		/* Visibility by roles only: lifecycle state is judged below. */
		json_object_set_new(d, "id", json_string(api->id));
		json_object_set_new(d, "provider", json_string(api->provider));
		json_object_set_new(d, "lifeCycleStatus", json_string("PUBLISHED"));
		if (devportal_api_visible(r->who, d)) {
			json_object_set_new(d, "lifeCycleStatus", json_string(api->status));
			*doc = d;
			return 0;
		}
	}
	json_decref(d);
	http_reply_error(r, 404, "API %s not found", id);
	return -1;
}

/* 0 when the API is subscribable and tier is one of its policies; else
 * answers 400 and returns -1. */
static int check_api_tier(http_req *r, const store_api *api, json_t *doc, const char *tier)
{
	if (strcmp(api->status, "PUBLISHED") != 0 && strcmp(api->status, "PROTOTYPED") != 0) {
		http_reply_error(r, 400, "API %s %s is %s: only PUBLISHED or PROTOTYPED APIs can be "
					 "subscribed to",
				 api->name, api->version, api->status);
		return -1;
	}
	json_t *pols = json_object_get(doc, "policies");
	char *names = arena_strdup(r->pool, "");
	size_t i;
	json_t *p;
	json_array_foreach(pols, i, p)
	{
		const char *s = json_string_value(p);
		if (s == NULL)
			continue;
		if (strcmp(s, tier) == 0)
			return 0;
		names = arena_sprintf(r->pool, "%s%s%s", names, *names ? ", " : "", s);
	}
	http_reply_error(r, 400, "Throttling policy '%s' is not available for API %s %s; choose "
				 "one of: %s",
			 tier, api->name, api->version, *names ? names : "(none)");
	return -1;
}

/* The APIInfo object of a subscription (new reference). */
static json_t *api_info(const store_api *a)
{
	return json_pack("{s:s, s:s, s:s?, s:s, s:s, s:s, s:s, s:s, s:n}", "id", a->id, "name",
			 a->name, "description", a->description, "context", a->context,
			 "version", a->version, "provider", a->provider, "lifeCycleStatus",
			 a->status, "type", "HTTP", "thumbnailUri");
}

/* ---------- rendering ---------- */

/* The Subscription object; app and api may be NULL (loaded here). */
static json_t *sub_render(http_req *r, const store_subscription *s, const store_application *app,
			  const store_api *api)
{
	store_application a;
	store_api x;
	if (app == NULL && store_application_get(r->ctx->apimgt, r->pool, s->application_id, &a) ==
				   APIM_OK)
		app = &a;
	if (api == NULL && store_api_get(r->ctx->apimgt, r->pool, s->api_id, &x) == APIM_OK)
		api = &x;
	return json_pack("{s:s, s:s, s:s, s:o, s:o, s:s, s:s?, s:s, s:n}", "subscriptionId", s->id,
			 "applicationId", s->application_id, "apiId", s->api_id, "apiInfo",
			 api ? api_info(api) : json_null(), "applicationInfo",
			 app ? devportal_app_info(app) : json_null(), "throttlingPolicy", s->tier,
			 "requestedThrottlingPolicy", s->requested_tier, "status", s->status,
			 "redirectionParams");
}

/* Loads the subscription when its application is the caller's; else 404. */
static int load_sub(http_req *r, store_subscription *s)
{
	const char *id = http_param(r, "subscriptionId");
	apim_rc rc = store_subscription_get(r->ctx->apimgt, r->pool, id, s);
	if (rc == APIM_OK && !devportal_app_visible(r->who, s->app_owner))
		rc = APIM_ENOTFOUND;
	if (rc == APIM_ENOTFOUND) {
		http_reply_error(r, 404, "Subscription %s not found", id);
		return -1;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "subscription");
		return -1;
	}
	return 0;
}

/* ---------- create ---------- */

typedef struct sub_req {
	store_application app;
	store_api api;
	const char *tier;
	char id[37];
} sub_req;

/* The string field of a Subscription object; -1 after answering 400. */
static int field(http_req *r, json_t *in, const char *name, const char *what, const char **out)
{
	json_t *v = json_object_get(in, name);
	*out = json_string_value(v);
	if (*out != NULL && **out != '\0')
		return 0;
	http_reply_error(r, 400, "'%s' is required: %s", name, what);
	return -1;
}

/* Validates one Subscription object into q: the caller's application, a
 * subscribable API, one of its tiers, not subscribed yet. */
static int sub_check(http_req *r, json_t *in, sub_req *q)
{
	const char *app_id, *api_id;
	json_t *doc = NULL;
	if (!json_is_object(in)) {
		http_reply_error(r, 400, "Each subscription must be an object {applicationId, "
					 "apiId, throttlingPolicy}");
		return -1;
	}
	if (field(r, in, "applicationId", "the id of your application", &app_id) != 0 ||
	    field(r, in, "apiId", "the id of the API to subscribe to", &api_id) != 0 ||
	    field(r, in, "throttlingPolicy", "one of the API's subscription tiers (its 'policies')",
		  &q->tier) != 0)
		return -1;
	if (devportal_app_load(r, app_id, &q->app) != 0 || load_api(r, api_id, &q->api, &doc) != 0)
		return -1;
	int bad = check_api_tier(r, &q->api, doc, q->tier);
	json_decref(doc);
	if (bad != 0)
		return -1;
	store_subscription old;
	apim_rc rc = store_subscription_find(r->ctx->apimgt, r->pool, q->api.id, q->app.id, &old);
	if (rc == APIM_OK) {
		http_reply_error(r, 409, "Application '%s' is already subscribed to API %s %s "
					 "(subscription %s)",
				 q->app.name, q->api.name, q->api.version, old.id);
		return -1;
	}
	if (rc != APIM_ENOTFOUND) {
		http_reply_store_error(r, rc, "subscription");
		return -1;
	}
	q->tier = arena_strdup(r->pool, q->tier);
	apim_uuid(q->id);
	return 0;
}

/* Inserts the checked subscriptions in one transaction; answers errors. */
static int sub_insert(http_req *r, sub_req *qs, size_t n, store_subscription *out)
{
	db *d = r->ctx->apimgt;
	int64_t now = apim_now_ms();
	apim_rc rc = db_begin(d);
	for (size_t i = 0; rc == APIM_OK && i < n; i++) {
		store_subscription *s = &out[i];
		memset(s, 0, sizeof(*s));
		memcpy(s->id, qs[i].id, sizeof(s->id));
		s->api_id = qs[i].api.id;
		s->application_id = qs[i].app.id;
		s->tier = qs[i].tier;
		s->requested_tier = qs[i].tier;
		s->status = "UNBLOCKED";
		s->created_ms = s->updated_ms = now;
		rc = store_application_lock(d, s->application_id);
		if (rc == APIM_OK)
			rc = store_subscription_insert(d, s, r->who->username);
		if (rc == APIM_OK)
			rc = devportal_app_record(r, "subscription", s->id, "create",
						  devportal_subscription_payload(
							  s->api_id, s->application_id, s->tier,
							  s->status));
	}
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc != APIM_OK) {
		db_rollback(d);
		if (rc == APIM_ECONFLICT)
			http_reply_error(r, 409, "The application is already subscribed to the API "
						 "(subscribed concurrently?)");
		else if (rc == APIM_ENOTFOUND)
			http_reply_error(r, 404, "The application was deleted meanwhile");
		else
			http_reply_store_error(r, rc, "subscription");
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		log_info("devportal", "application %s subscribed to API %s (%s) as %s by %s",
			 qs[i].app.id, qs[i].api.id, qs[i].tier, out[i].id, r->who->username);
	return 0;
}

static void h_create(http_req *r)
{
	json_t *in = http_json_body(r, JSON_OBJECT);
	if (in == NULL)
		return;
	sub_req q;
	store_subscription s;
	if (sub_check(r, in, &q) != 0 || sub_insert(r, &q, 1, &s) != 0)
		return;
	store_application_get(r->ctx->apimgt, r->pool, q.app.id, &q.app); /* new count */
	http_set_header(r, "Location", arena_sprintf(r->pool, DP_BASE "/subscriptions/%s", s.id));
	http_reply_json(r, 201, sub_render(r, &s, &q.app, &q.api));
}

static void h_create_multiple(http_req *r)
{
	json_t *in = http_json_body(r, JSON_ARRAY);
	if (in == NULL)
		return;
	size_t n = json_array_size(in);
	if (n == 0 || n > MULTIPLE_MAX) {
		http_reply_error(r, 400, "The body must be an array of 1 to %d subscriptions",
				 MULTIPLE_MAX);
		return;
	}
	sub_req *qs = arena_alloc(r->pool, n * sizeof(*qs));
	store_subscription *subs = arena_alloc(r->pool, n * sizeof(*subs));
	for (size_t i = 0; i < n; i++) {
		if (sub_check(r, json_array_get(in, i), &qs[i]) != 0)
			return;
		for (size_t j = 0; j < i; j++)
			if (strcmp(qs[j].app.id, qs[i].app.id) == 0 &&
			    strcmp(qs[j].api.id, qs[i].api.id) == 0) {
				http_reply_error(r, 409, "Subscriptions %zu and %zu both subscribe "
							 "application '%s' to API %s %s",
						 j + 1, i + 1, qs[i].app.name, qs[i].api.name,
						 qs[i].api.version);
				return;
			}
	}
	if (sub_insert(r, qs, n, subs) != 0)
		return;
	json_t *out = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(out, sub_render(r, &subs[i], NULL, &qs[i].api));
	/* 200 with the array, as the reference's POST /subscriptions/multiple. */
	http_reply_json(r, 200, out);
}

/* ---------- read ---------- */

static void h_list(http_req *r)
{
	int64_t limit, offset, total = 0;
	if (http_paging(r, &limit, &offset) != 0)
		return;
	const char *app_id = http_query(r, "applicationId");
	const char *api_id = http_query(r, "apiId");
	if (app_id != NULL && *app_id == '\0')
		app_id = NULL;
	if (api_id != NULL && *api_id == '\0')
		api_id = NULL;
	if (app_id == NULL && api_id == NULL) {
		http_reply_error(r, 400, "Query parameter 'applicationId' or 'apiId' is required");
		return;
	}
	store_application app;
	store_api api;
	if (app_id != NULL && devportal_app_load(r, app_id, &app) != 0)
		return;
	if (api_id != NULL) {
		json_t *doc = NULL;
		if (load_api(r, api_id, &api, &doc) != 0)
			return;
		json_decref(doc);
	}
	const char *owner = principal_is_admin(r->who) ? NULL : r->who->username;
	store_subscription *subs = NULL;
	size_t n = 0;
	apim_rc rc = store_subscription_search(r->ctx->apimgt, r->pool, api_id, app_id, owner,
					       offset, limit, &subs, &n, &total);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "subscriptions");
		return;
	}
	json_t *list = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(list, sub_render(r, &subs[i], app_id ? &app : NULL,
						       api_id ? &api : NULL));
	http_reply_list(r, list, total, limit, offset);
}

static void h_get(http_req *r)
{
	store_subscription s;
	if (load_sub(r, &s) != 0)
		return;
	http_reply_json(r, 200, sub_render(r, &s, NULL, NULL));
}

/* ---------- update, delete ---------- */

static void h_update(http_req *r)
{
	store_subscription s;
	store_api api;
	json_t *doc = NULL;
	if (load_sub(r, &s) != 0)
		return;
	json_t *in = http_json_body(r, JSON_OBJECT);
	if (in == NULL)
		return;
	const char *tier = json_string_value(json_object_get(in, "throttlingPolicy"));
	const char *app_id = json_string_value(json_object_get(in, "applicationId"));
	const char *api_id = json_string_value(json_object_get(in, "apiId"));
	const char *status = json_string_value(json_object_get(in, "status"));
	if (tier == NULL || *tier == '\0') {
		http_reply_error(r, 400, "'throttlingPolicy' is required: the new subscription tier");
		return;
	}
	if ((app_id != NULL && strcmp(app_id, s.application_id) != 0) ||
	    (api_id != NULL && strcmp(api_id, s.api_id) != 0)) {
		http_reply_error(r, 400, "'applicationId' and 'apiId' of a subscription cannot "
					 "change: subscribe again instead");
		return;
	}
	if (status != NULL && strcmp(status, s.status) != 0) {
		http_reply_error(r, 400, "The status of subscription %s is %s and cannot be changed "
					 "here: the API's publisher blocks and unblocks subscriptions",
				 s.id, s.status);
		return;
	}
	if (strcmp(s.status, "UNBLOCKED") != 0 && strcmp(s.status, "PROD_ONLY_BLOCKED") != 0 &&
	    strcmp(s.status, "TIER_UPDATE_PENDING") != 0) {
		http_reply_error(r, 400, "Subscription %s is %s: its tier cannot be changed", s.id,
				 s.status);
		return;
	}
	json_t *cur = sub_render(r, &s, NULL, NULL);
	int bad = http_check_if_match(r, cur);
	json_decref(cur);
	if (bad != 0)
		return;
	if (load_api(r, s.api_id, &api, &doc) != 0)
		return;
	bad = check_api_tier(r, &api, doc, tier);
	json_decref(doc);
	if (bad != 0)
		return;
	db *d = r->ctx->apimgt;
	int64_t now = apim_now_ms();
	apim_rc rc = db_begin(d);
	if (rc == APIM_OK)
		rc = store_application_lock(d, s.application_id);
	if (rc == APIM_OK)
		rc = store_subscription_set_tier(d, s.id, tier, now);
	if (rc == APIM_OK)
		rc = devportal_app_record(r, "subscription", s.id, "update",
					  devportal_subscription_payload(s.api_id, s.application_id,
									 tier, s.status));
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc != APIM_OK) {
		db_rollback(d);
		http_reply_store_error(r, rc, "subscription");
		return;
	}
	log_info("devportal", "subscription %s tier %s -> %s by %s", s.id, s.tier, tier,
		 r->who->username);
	s.tier = s.requested_tier = tier;
	s.updated_ms = now;
	http_reply_json(r, 200, sub_render(r, &s, NULL, &api));
}

static void h_delete(http_req *r)
{
	store_subscription s;
	if (load_sub(r, &s) != 0)
		return;
	if (strcmp(s.status, "BLOCKED") == 0 || strcmp(s.status, "PROD_ONLY_BLOCKED") == 0) {
		http_reply_error(r, 400, "Subscription %s is %s by the API's publisher: it cannot be "
					 "removed here; ask the publisher to unblock it first",
				 s.id, s.status);
		return;
	}
	db *d = r->ctx->apimgt;
	apim_rc rc = db_begin(d);
	if (rc == APIM_OK)
		rc = store_application_lock(d, s.application_id);
	if (rc == APIM_OK)
		rc = store_subscription_delete(d, s.id);
	if (rc == APIM_OK)
		rc = devportal_app_record(r, "subscription", s.id, "delete",
					  devportal_subscription_payload(s.api_id, s.application_id,
									 s.tier, s.status));
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc != APIM_OK) {
		db_rollback(d);
		http_reply_store_error(r, rc, "subscription");
		return;
	}
	log_info("devportal", "subscription %s (application %s, API %s) removed by %s", s.id,
		 s.application_id, s.api_id, r->who->username);
	http_reply_empty(r, 200);
}

static const http_route sub_routes[] = {
	{"GET", DP_BASE "/subscriptions", h_list, DP_SCOPES_SUB, 0},
	{"POST", DP_BASE "/subscriptions", h_create, DP_SCOPES_SUB, 0},
	{"POST", DP_BASE "/subscriptions/multiple", h_create_multiple, DP_SCOPES_SUB, 0},
	{"GET", DP_BASE "/subscriptions/{subscriptionId}", h_get, DP_SCOPES_SUB, 0},
	{"PUT", DP_BASE "/subscriptions/{subscriptionId}", h_update, DP_SCOPES_SUB, 0},
	{"DELETE", DP_BASE "/subscriptions/{subscriptionId}", h_delete, DP_SCOPES_SUB, 0},
};

void devportal_subscription_routes(http_server *s)
{
	http_server_routes(s, sub_routes, sizeof(sub_routes) / sizeof(sub_routes[0]));
}
