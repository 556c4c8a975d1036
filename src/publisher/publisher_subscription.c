/*
 * publisher_subscription.c: /subscriptions: the subscriptions of APIs as
 * their publishers see them, and blocking/unblocking them. A block or
 * unblock is recorded in the change sequence ("subscription", id,
 * "block"/"unblock", {apiId, applicationId, status}) in the same
 * transaction, so gateways stop (or resume) honouring it.
 */
#include <stdio.h>
#include <string.h>

#include "auth/auth.h"
#include "common/ctx.h"
#include "common/log.h"
#include "common/util.h"
#include "publisher/publisher_internal.h"
#include "store/db.h"
#include "store/store_subscription.h"

static json_t *sub_json(const store_subscription *s)
{
	return json_pack("{s:s, s:s, s:{s:s, s:s?, s:s?, s:s?, s:s?}, s:s, s:s?, s:s}",
			 "subscriptionId", s->id, "apiId", s->api_id, "applicationInfo",
			 "applicationId", s->application_id, "name", s->app_name, "subscriber",
			 s->app_owner, "description", s->app_description, "throttlingPolicy",
			 s->app_tier, "throttlingPolicy", s->tier, "requestedThrottlingPolicy",
			 s->requested_tier, "subscriptionStatus", s->status);
}

static void h_list(http_req *r)
{
	int64_t limit, offset, total;
	store_subscription *subs;
	size_t n;
	const char *api_id = http_query(r, "apiId");
	if (http_paging(r, &limit, &offset) != 0)
		return;
	if (api_id != NULL && *api_id != '\0') {
		store_api a;
		if (publisher_load_api(r, api_id, &a) != 0)
			return;
	} else {
		api_id = NULL;
	}
	apim_rc rc = store_subscription_list(r->ctx->apimgt, r->pool, api_id, offset, limit, &subs,
					     &n, &total);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "subscriptions");
		return;
	}
	json_t *list = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(list, sub_json(&subs[i]));
	http_reply_list(r, list, total, limit, offset);
}

/* Sets the subscription's status; action is "block" or "unblock". */
static void set_status(http_req *r, const char *status, const char *action)
{
	const char *id = http_query(r, "subscriptionId");
	store_subscription s;
	db *d = r->ctx->apimgt;
	if (id == NULL || *id == '\0') {
		http_reply_error(r, 400, "Query parameter 'subscriptionId' is required");
		return;
	}
	apim_rc rc = db_begin(d);
	if (rc == APIM_OK)
		rc = store_subscription_get(d, r->pool, id, &s);
	if (rc == APIM_ENOTFOUND) {
		db_rollback(d);
		http_reply_error(r, 404, "Subscription %s not found", id);
		return;
	}
	if (rc == APIM_OK && strcmp(s.status, "UNBLOCKED") != 0 &&
	    strcmp(s.status, "BLOCKED") != 0 && strcmp(s.status, "PROD_ONLY_BLOCKED") != 0) {
		db_rollback(d);
		http_reply_error(r, 400, "Subscription %s is %s: only active subscriptions (UNBLOCKED, "
					 "BLOCKED, PROD_ONLY_BLOCKED) can be blocked or unblocked",
				 id, s.status);
		return;
	}
	int changed = rc == APIM_OK && strcmp(s.status, status) != 0;
	if (changed) {
		rc = store_subscription_set_status(d, id, status, apim_now_ms());
		if (rc == APIM_OK) {
			json_t *p = json_pack("{s:s, s:s, s:s}", "apiId", s.api_id, "applicationId",
					      s.application_id, "status", status);
			const char *payload = publisher_json_text(r->pool, p);
			json_decref(p);
			rc = db_change_record(d, "subscription", id, action, payload, NULL);
		}
	}
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc != APIM_OK) {
		db_rollback(d);
		http_reply_store_error(r, rc, "subscription");
		return;
	}
	if (changed)
		log_info("publisher", "subscription %s %s -> %s by %s", id, s.status, status,
			 r->who ? r->who->username : "?");
	http_reply_empty(r, 200);
}

static void h_block(http_req *r)
{
	const char *state = http_query(r, "blockState");
	if (state == NULL || (strcmp(state, "BLOCKED") != 0 &&
			      strcmp(state, "PROD_ONLY_BLOCKED") != 0)) {
		http_reply_error(r, 400, "Query parameter 'blockState' must be BLOCKED or "
					 "PROD_ONLY_BLOCKED");
		return;
	}
	set_status(r, state, "block");
}

static void h_unblock(http_req *r)
{
	set_status(r, "UNBLOCKED", "unblock");
}

static const http_route subscription_routes[] = {
	{"GET", PUB_BASE "/subscriptions", h_list, PUB_SCOPES_SUB_VIEW, 0},
	{"POST", PUB_BASE "/subscriptions/block-subscription", h_block, PUB_SCOPES_SUB_BLOCK, 0},
	{"POST", PUB_BASE "/subscriptions/unblock-subscription", h_unblock, PUB_SCOPES_SUB_BLOCK, 0},
};

void publisher_subscription_routes(http_server *s)
{
	http_server_routes(s, subscription_routes,
			   sizeof(subscription_routes) / sizeof(subscription_routes[0]));
}
