/*
 * publisher_lifecycle.c: the API lifecycle.
 *
 * The state machine is one table (transitions) with the reference's states
 * and actions; POST /apis/change-lifecycle and GET
 * /apis/{apiId}/lifecycle-state read it. A state change of an API that is
 * deployed on a gateway is recorded in the change sequence in the same
 * transaction, so gateways learn that it was blocked, retired, ...
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/auth.h"
#include "common/ctx.h"
#include "common/log.h"
#include "common/util.h"
#include "publisher/publisher_internal.h"
#include "store/db.h"

static const struct {
	const char *name;
	const char *label;
} states[PUB_LC_NSTATES] = {
	[PUB_LC_CREATED] = {"CREATED", "Created"},
	[PUB_LC_PROTOTYPED] = {"PROTOTYPED", "Prototyped"},
	[PUB_LC_PUBLISHED] = {"PUBLISHED", "Published"},
	[PUB_LC_BLOCKED] = {"BLOCKED", "Blocked"},
	[PUB_LC_DEPRECATED] = {"DEPRECATED", "Deprecated"},
	[PUB_LC_RETIRED] = {"RETIRED", "Retired"},
};

/* The reference's lifecycle (section 2, "Lifecycle"), in its order. */
static const struct {
	publisher_lc_state from;
	const char *action;
	publisher_lc_state to;
} transitions[] = {
	{PUB_LC_CREATED, "Publish", PUB_LC_PUBLISHED},
	{PUB_LC_CREATED, "Deploy as a Prototype", PUB_LC_PROTOTYPED},
	{PUB_LC_PROTOTYPED, "Publish", PUB_LC_PUBLISHED},
	{PUB_LC_PROTOTYPED, "Demote to Created", PUB_LC_CREATED},
	{PUB_LC_PROTOTYPED, "Deploy as a Prototype", PUB_LC_PROTOTYPED},
	{PUB_LC_PUBLISHED, "Block", PUB_LC_BLOCKED},
	{PUB_LC_PUBLISHED, "Deploy as a Prototype", PUB_LC_PROTOTYPED},
	{PUB_LC_PUBLISHED, "Demote to Created", PUB_LC_CREATED},
	{PUB_LC_PUBLISHED, "Deprecate", PUB_LC_DEPRECATED},
	{PUB_LC_PUBLISHED, "Publish", PUB_LC_PUBLISHED},
	{PUB_LC_BLOCKED, "Re-Publish", PUB_LC_PUBLISHED},
	{PUB_LC_BLOCKED, "Deprecate", PUB_LC_DEPRECATED},
	{PUB_LC_DEPRECATED, "Retire", PUB_LC_RETIRED},
};

#define NTRANS (sizeof(transitions) / sizeof(transitions[0]))

/* The reference's checklist items. */
#define CHECK_DEPRECATE "Deprecate old versions after publishing the API"
#define CHECK_RESUBSCRIBE "Requires re-subscription when publishing the API"

int publisher_lifecycle_parse(const char *s, publisher_lc_state *out)
{
	for (int i = 0; i < PUB_LC_NSTATES; i++) {
		if (strcasecmp(s, states[i].name) == 0) {
			*out = (publisher_lc_state)i;
			return 0;
		}
	}
	return -1;
}

const char *publisher_lifecycle_name(publisher_lc_state s)
{
	return (unsigned)s < PUB_LC_NSTATES ? states[s].name : "UNKNOWN";
}

const char *publisher_lifecycle_label(publisher_lc_state s)
{
	return (unsigned)s < PUB_LC_NSTATES ? states[s].label : "Unknown";
}

int publisher_lifecycle_next(publisher_lc_state from, const char *action, publisher_lc_state *to)
{
	for (size_t i = 0; i < NTRANS; i++) {
		if (transitions[i].from == from && strcasecmp(transitions[i].action, action) == 0) {
			*to = transitions[i].to;
			return 0;
		}
	}
	return -1;
}

size_t publisher_lifecycle_actions(publisher_lc_state from, const char **actions,
				   publisher_lc_state *targets, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < NTRANS; i++) {
		if (transitions[i].from != from)
			continue;
		if (n < max) {
			if (actions)
				actions[n] = transitions[i].action;
			if (targets)
				targets[n] = transitions[i].to;
		}
		n++;
	}
	return n;
}

int publisher_lifecycle_known_action(const char *action)
{
	for (size_t i = 0; i < NTRANS; i++)
		if (strcasecmp(transitions[i].action, action) == 0)
			return 1;
	return 0;
}

/* ---------- HTTP ---------- */

static json_t *lifecycle_state_json(publisher_lc_state st, int deprecate_checked)
{
	const char *acts[16];
	publisher_lc_state tos[16];
	size_t n = publisher_lifecycle_actions(st, acts, tos, 16);
	json_t *tr = json_array();
	for (size_t i = 0; i < n && i < 16; i++)
		json_array_append_new(tr, json_pack("{s:s, s:s}", "event", acts[i], "targetState",
						    publisher_lifecycle_label(tos[i])));
	json_t *checks = json_pack("[{s:i, s:s, s:b, s:[]}, {s:i, s:s, s:b, s:[]}]", "index", 0,
				   "name", CHECK_DEPRECATE, "value", deprecate_checked,
				   "requiredStates", "index", 1, "name", CHECK_RESUBSCRIBE, "value",
				   0, "requiredStates");
	return json_pack("{s:s, s:o, s:o}", "state", publisher_lifecycle_label(st),
			 "availableTransitions", tr, "checkItems", checks);
}

static void h_lifecycle_state(http_req *r)
{
	store_api a;
	publisher_lc_state st;
	if (publisher_load_api(r, http_param(r, "apiId"), &a) != 0)
		return;
	if (publisher_lifecycle_parse(a.status, &st) != 0) {
		http_reply_error(r, 500, "API %s has an unknown lifecycle state %s", a.id, a.status);
		return;
	}
	http_reply_json(r, 200, lifecycle_state_json(st, 0));
}

/* Parses "Item A:true, Item B:false": 1 when the item named (any case) is
 * true. */
static int checklist_true(const char *list, const char *item)
{
	if (list == NULL)
		return 0;
	size_t il = strlen(item);
	const char *p = list;
	while (*p) {
		while (*p == ' ' || *p == ',')
			p++;
		const char *e = strchr(p, ',');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		const char *colon = memchr(p, ':', n);
		if (colon != NULL) {
			size_t kl = (size_t)(colon - p);
			while (kl > 0 && p[kl - 1] == ' ')
				kl--;
			const char *v = colon + 1;
			while (*v == ' ')
				v++;
			if (kl == il && strncasecmp(p, item, il) == 0 && strncasecmp(v, "true", 4) == 0)
				return 1;
		}
		if (e == NULL)
			break;
		p = e + 1;
	}
	return 0;
}

/* Sets the status in the document text too, so the stored doc and the
 * gateway snapshot of the working copy agree with the column. */
static const char *doc_with_status(http_req *r, const store_api *a, const char *status,
				   int64_t now)
{
	json_t *doc = publisher_json_parse(a->doc);
	if (doc == NULL)
		return a->doc;
	json_object_set_new(doc, "lifeCycleStatus", json_string(status));
	json_object_set_new(doc, "lastUpdatedTime", publisher_time_json(now));
	const char *s = publisher_json_text(r->pool, doc);
	json_decref(doc);
	return s;
}

/* Changes one API's status inside the caller's transaction, recording the
 * change when the API is deployed. */
static apim_rc set_status(http_req *r, const store_api *a, publisher_lc_state to, int64_t now)
{
	db *d = r->ctx->apimgt;
	const char *name = publisher_lifecycle_name(to);
	apim_rc rc = store_api_set_status(d, a->id, name, doc_with_status(r, a, name, now), now);
	if (rc != APIM_OK)
		return rc;
	store_deployment *deps;
	size_t ndeps = 0;
	rc = store_deployment_list(d, r->pool, a->id, NULL, &deps, &ndeps);
	if (rc != APIM_OK || ndeps == 0)
		return rc;
	json_t *p = json_pack("{s:s, s:s}", "from", a->status, "to", name);
	const char *payload = publisher_json_text(r->pool, p);
	json_decref(p);
	return db_change_record(d, "api", a->id, "lifecycle", payload, NULL);
}

static void h_change_lifecycle(http_req *r)
{
	const char *api_id = http_query(r, "apiId");
	const char *action = http_query(r, "action");
	const char *checklist = http_query(r, "lifecycleChecklist");
	store_api a;
	publisher_lc_state from, to;

	if (api_id == NULL || *api_id == '\0') {
		http_reply_error(r, 400, "Query parameter 'apiId' is required");
		return;
	}
	if (action == NULL || *action == '\0') {
		http_reply_error(r, 400, "Query parameter 'action' is required: Publish, Deploy as a "
					 "Prototype, Demote to Created, Block, Re-Publish, Deprecate "
					 "or Retire");
		return;
	}
	if (!publisher_lifecycle_known_action(action)) {
		http_reply_error(r, 400, "Unknown lifecycle action '%s': use Publish, Deploy as a "
					 "Prototype, Demote to Created, Block, Re-Publish, Deprecate "
					 "or Retire",
				 action);
		return;
	}
	if (publisher_load_api(r, api_id, &a) != 0)
		return;
	if (publisher_require_modify(r, &a, 1) != 0)
		return;
	if (publisher_lifecycle_parse(a.status, &from) != 0) {
		http_reply_error(r, 500, "API %s has an unknown lifecycle state %s", a.id, a.status);
		return;
	}
	if (publisher_lifecycle_next(from, action, &to) != 0) {
		const char *acts[16];
		size_t n = publisher_lifecycle_actions(from, acts, NULL, 16);
		char allowed[512] = "";
		size_t used = 0;
		for (size_t i = 0; i < n && i < 16; i++) {
			int w = snprintf(allowed + used, sizeof(allowed) - used, "%s%s",
					 i ? ", " : "", acts[i]);
			if (w > 0 && (size_t)w < sizeof(allowed) - used)
				used += (size_t)w;
		}
		http_reply_error(r, 400, "Action '%s' is not allowed for an API in state %s: %s%s",
				 action, a.status, n ? "allowed actions are " : "",
				 n ? allowed : "no further action is possible");
		return;
	}
	json_t *doc = publisher_json_parse(a.doc);
	if (doc == NULL) {
		http_reply_error(r, 500, "The stored API %s is unreadable", a.id);
		return;
	}
	if (to == PUB_LC_PUBLISHED && from != PUB_LC_PUBLISHED) {
		json_t *ep = json_object_get(doc, "endpointConfig");
		if (ep == NULL || json_is_null(ep)) {
			json_decref(doc);
			http_reply_error(r, 400, "API %s cannot be published without an endpoint: set "
						 "endpointConfig with production_endpoints or "
						 "sandbox_endpoints first",
					 a.name);
			return;
		}
		if (json_array_size(json_object_get(doc, "policies")) == 0) {
			json_decref(doc);
			http_reply_error(r, 400, "API %s cannot be published without a subscription "
						 "policy: set 'policies' (for example [\"Unlimited\"]) "
						 "first",
					 a.name);
			return;
		}
	}
	json_decref(doc);

	int deprecate_old = to == PUB_LC_PUBLISHED &&
			    (checklist_true(checklist, CHECK_DEPRECATE) ||
			     checklist_true(checklist, "Deprecate older versions"));
	db *d = r->ctx->apimgt;
	int64_t now = apim_now_ms();
	apim_rc rc = db_begin(d);
	if (rc != APIM_OK)
		goto fail;
	rc = set_status(r, &a, to, now);
	if (rc == APIM_OK && deprecate_old) {
		store_api *olds;
		size_t nold = 0;
		rc = store_api_versions(d, r->pool, a.provider, a.name, "PUBLISHED", a.id, &olds,
					&nold);
		for (size_t i = 0; rc == APIM_OK && i < nold; i++)
			rc = set_status(r, &olds[i], PUB_LC_DEPRECATED, now);
	}
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc != APIM_OK)
		goto fail;
	log_info("publisher", "API %s (%s %s) %s -> %s by %s", a.id, a.name, a.version, a.status,
		 publisher_lifecycle_name(to), r->who ? r->who->username : "?");
	http_reply_json(r, 200,
			json_pack("{s:s, s:n, s:o}", "workflowStatus", "APPROVED", "jsonPayload",
				  "lifecycleState", lifecycle_state_json(to, deprecate_old)));
	return;
fail:
	db_rollback(d);
	http_reply_store_error(r, rc, "API");
}

static const http_route lifecycle_routes[] = {
	{"POST", PUB_BASE "/apis/change-lifecycle", h_change_lifecycle, PUB_SCOPES_PUBLISH, 0},
	{"GET", PUB_BASE "/apis/{apiId}/lifecycle-state", h_lifecycle_state, PUB_SCOPES_VIEW, 0},
};

void publisher_lifecycle_routes(http_server *s)
{
	http_server_routes(s, lifecycle_routes, sizeof(lifecycle_routes) / sizeof(lifecycle_routes[0]));
}
