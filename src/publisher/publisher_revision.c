/*
 * publisher_revision.c: revisions (immutable snapshots of an API's document
 * and OpenAPI definition, at most PUB_MAX_REVISIONS per API) and their
 * deployments on gateway environments.
 *
 * Deploying and undeploying record "deploy"/"undeploy" in the change
 * sequence in the same transaction as the deployment row, with payload
 * {"revisionId", "environment", "vhost"}, so gateways pick them up.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "auth/auth.h"
#include "common/ctx.h"
#include "common/log.h"
#include "common/util.h"
#include "publisher/publisher_internal.h"
#include "store/db.h"

#define PUB_MAX_REVISIONS 5

static json_t *deployment_json(const store_deployment *dp)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:b, s:o, s:o, s:s}", "revisionUuid",
			 dp->revision_id, "revisionId", dp->revision_id, "name", dp->environment,
			 "vhost", dp->vhost, "displayOnDevportal", dp->display_on_devportal,
			 "deployedTime", publisher_time_json(dp->deployed_ms), "successDeployedTime",
			 publisher_time_json(dp->deployed_ms), "status",
			 dp->status ? dp->status : "APPROVED");
}

static json_t *revision_json(const store_revision *rv, const store_deployment *deps, size_t ndeps)
{
	json_t *di = json_array();
	for (size_t i = 0; i < ndeps; i++)
		if (strcmp(deps[i].revision_id, rv->id) == 0)
			json_array_append_new(di, deployment_json(&deps[i]));
	char name[48];
	snprintf(name, sizeof(name), "Revision %" PRId64, rv->number);
	return json_pack("{s:s, s:s, s:s, s:o, s:{s:s}, s:o}", "id", rv->id, "displayName", name,
			 "description", rv->description ? rv->description : "", "createdTime",
			 publisher_time_json(rv->created_ms), "apiInfo", "id", rv->api_id,
			 "deploymentInfo", di);
}

/* Answers the API's revisions {count, list}, filtered by deployed
 * (-1: all, 0: not deployed, 1: deployed). */
static void reply_revisions(http_req *r, const char *api_id, int deployed)
{
	store_revision *revs;
	store_deployment *deps;
	size_t nrevs, ndeps;
	db *d = r->ctx->apimgt;
	apim_rc rc = store_revision_list(d, r->pool, api_id, 0, &revs, &nrevs);
	if (rc == APIM_OK)
		rc = store_deployment_list(d, r->pool, api_id, NULL, &deps, &ndeps);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "revisions");
		return;
	}
	json_t *list = json_array();
	for (size_t i = 0; i < nrevs; i++) {
		json_t *o = revision_json(&revs[i], deps, ndeps);
		int is_dep = json_array_size(json_object_get(o, "deploymentInfo")) > 0;
		if (deployed >= 0 && is_dep != deployed) {
			json_decref(o);
			continue;
		}
		json_array_append_new(list, o);
	}
	http_reply_json(r, 200,
			json_pack("{s:i, s:o}", "count", (int)json_array_size(list), "list", list));
}

static int not_retired(http_req *r, const store_api *a)
{
	if (strcmp(a->status, "RETIRED") != 0)
		return 0;
	http_reply_error(r, 400, "API %s %s is RETIRED: its revisions can no longer be created, "
				 "restored or deployed",
			 a->name, a->version);
	return -1;
}

static void h_list(http_req *r)
{
	store_api a;
	int deployed = -1;
	if (publisher_load_api(r, http_param(r, "apiId"), &a) != 0)
		return;
	const char *q = http_query(r, "query");
	if (q != NULL && *q) {
		if (strcmp(q, "deployed:true") == 0)
			deployed = 1;
		else if (strcmp(q, "deployed:false") == 0)
			deployed = 0;
		else {
			http_reply_error(r, 400, "Unknown revision query '%s': use deployed:true or "
						 "deployed:false",
					 q);
			return;
		}
	}
	reply_revisions(r, a.id, deployed);
}

static void h_create(http_req *r)
{
	store_api a;
	const char *description = NULL;
	db *d = r->ctx->apimgt;
	if (publisher_load_api(r, http_param(r, "apiId"), &a) != 0)
		return;
	if (publisher_require_modify(r, &a, 0) != 0 || not_retired(r, &a) != 0)
		return;
	if (r->body != NULL && r->body_len > 0) {
		json_t *in = http_json_body(r, JSON_OBJECT);
		if (in == NULL)
			return;
		const char *k;
		json_t *v;
		json_object_foreach(in, k, v) {
			if (strcmp(k, "description") == 0) {
				if (!json_is_string(v) && !json_is_null(v)) {
					http_reply_error(r, 400, "'description' must be a string");
					return;
				}
				description = json_string_value(v);
				if (description && strlen(description) > 255) {
					http_reply_error(r, 400, "'description' is longer than 255 "
								 "characters");
					return;
				}
			} else if (strcmp(k, "id") != 0 && strcmp(k, "displayName") != 0 &&
				   strcmp(k, "createdTime") != 0 && strcmp(k, "apiInfo") != 0 &&
				   strcmp(k, "deploymentInfo") != 0) {
				http_reply_error(r, 400, "Unknown field '%s' in the revision: only "
							 "'description' can be set",
						 k);
				return;
			}
		}
	}
	json_t *doc = publisher_json_parse(a.doc);
	if (doc == NULL) {
		http_reply_error(r, 500, "The stored API %s is unreadable", a.id);
		return;
	}
	store_revision rv;
	memset(&rv, 0, sizeof(rv));
	apim_uuid(rv.id);
	rv.api_id = a.id;
	rv.description = description ? arena_strdup(r->pool, description) : "";
	rv.created_ms = apim_now_ms();
	rv.doc = a.doc;
	json_t *oas = publisher_openapi_for(&a, doc);
	rv.swagger = publisher_json_text(r->pool, oas);
	json_decref(oas);
	store_policy_ref *refs;
	size_t nrefs;
	publisher_dto_policy_refs(r->pool, doc, &refs, &nrefs);
	json_decref(doc);

	int64_t count = 0;
	/* taking the next number locks the API's row first, so concurrent
	 * creations queue before counting (PostgreSQL; SQLite's BEGIN
	 * IMMEDIATE already does) */
	apim_rc rc = db_begin(d);
	if (rc == APIM_OK)
		rc = store_api_next_revision(d, a.id, &rv.number);
	if (rc == APIM_OK)
		rc = store_revision_count(d, a.id, &count);
	if (rc == APIM_OK && count >= PUB_MAX_REVISIONS) {
		db_rollback(d);
		http_reply_error(r, 400, "Maximum number of revisions per API reached (%d); delete "
					 "one first",
				 PUB_MAX_REVISIONS);
		return;
	}
	if (rc == APIM_OK)
		rc = store_revision_insert(d, &rv, refs, nrefs);
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc != APIM_OK) {
		db_rollback(d);
		http_reply_store_error(r, rc, "revision");
		return;
	}
	log_info("publisher", "API %s: revision %" PRId64 " (%s) created by %s", a.id, rv.number,
		 rv.id, r->who ? r->who->username : "?");
	http_set_header(r, "Location",
			arena_sprintf(r->pool, PUB_BASE "/apis/%s/revisions/%s", a.id, rv.id));
	http_reply_json(r, 201, revision_json(&rv, NULL, 0));
}

/* Loads the revision of the API; answers 404 and returns -1 when missing. */
static int load_revision(http_req *r, const store_api *a, const char *id, store_revision *rv)
{
	if (id == NULL || *id == '\0') {
		http_reply_error(r, 400, "Query parameter 'revisionId' is required");
		return -1;
	}
	apim_rc rc = store_revision_get(r->ctx->apimgt, r->pool, a->id, id, rv);
	if (rc == APIM_ENOTFOUND) {
		http_reply_error(r, 404, "Revision %s of API %s not found", id, a->id);
		return -1;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "revision");
		return -1;
	}
	return 0;
}

static void h_get(http_req *r)
{
	store_api a;
	store_revision rv;
	store_deployment *deps;
	size_t ndeps;
	if (publisher_load_api(r, http_param(r, "apiId"), &a) != 0 ||
	    load_revision(r, &a, http_param(r, "revisionId"), &rv) != 0)
		return;
	apim_rc rc = store_deployment_list(r->ctx->apimgt, r->pool, a.id, rv.id, &deps, &ndeps);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "deployments");
		return;
	}
	http_reply_json(r, 200, revision_json(&rv, deps, ndeps));
}

static void h_delete(http_req *r)
{
	store_api a;
	store_revision rv;
	store_deployment *deps;
	size_t ndeps = 0;
	db *d = r->ctx->apimgt;
	if (publisher_load_api(r, http_param(r, "apiId"), &a) != 0 ||
	    load_revision(r, &a, http_param(r, "revisionId"), &rv) != 0)
		return;
	if (publisher_require_modify(r, &a, 0) != 0)
		return;
	apim_rc rc = db_begin(d);
	if (rc == APIM_OK)
		rc = store_deployment_list(d, r->pool, a.id, rv.id, &deps, &ndeps);
	if (rc == APIM_OK && ndeps > 0) {
		db_rollback(d);
		http_reply_error(r, 400, "Revision %" PRId64 " is deployed on %s%s: undeploy it "
					 "before deleting it",
				 rv.number, deps[0].environment, ndeps > 1 ? " and more" : "");
		return;
	}
	if (rc == APIM_OK)
		rc = store_revision_delete(d, a.id, rv.id);
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc != APIM_OK) {
		db_rollback(d);
		http_reply_store_error(r, rc, "revision");
		return;
	}
	reply_revisions(r, a.id, -1);
}

static void h_restore(http_req *r)
{
	store_api a;
	store_revision rv;
	if (publisher_load_api(r, http_param(r, "apiId"), &a) != 0 ||
	    load_revision(r, &a, http_query(r, "revisionId"), &rv) != 0)
		return;
	if (publisher_require_modify(r, &a, 0) != 0 || not_retired(r, &a) != 0)
		return;
	json_t *doc = publisher_json_parse(rv.doc);
	if (!json_is_object(doc)) {
		json_decref(doc);
		http_reply_error(r, 500, "Revision %s is unreadable", rv.id);
		return;
	}
	/* the lifecycle state and default version belong to the API, not to
	 * the snapshot */
	json_object_set_new(doc, "isDefaultVersion", json_boolean(a.is_default));
	if (publisher_api_save(r, &a, doc, rv.swagger) != 0)
		return;
	log_info("publisher", "API %s restored to revision %" PRId64 " by %s", a.id, rv.number,
		 r->who ? r->who->username : "?");
	http_reply_json(r, 201, publisher_api_render(&a));
}

/* One entry of a deploy/undeploy body. */
typedef struct dep_req {
	const char *name;
	const char *vhost;
	int display;
} dep_req;

static int vhost_valid(const char *v)
{
	size_t n = strlen(v);
	if (n == 0 || n > 255)
		return 0;
	for (const char *p = v; *p; p++)
		if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '.'))
			return 0;
	return v[0] != '-' && v[0] != '.' && v[n - 1] != '-' && v[n - 1] != '.';
}

/* Parses the [{name, vhost, displayOnDevportal}] body; answers 400 and
 * returns -1 when malformed. need_env: check each environment exists. */
static int parse_deployments(http_req *r, json_t *body, dep_req **out, size_t *n)
{
	size_t cnt = json_array_size(body);
	if (cnt == 0) {
		http_reply_error(r, 400, "The body must list at least one environment: "
					 "[{\"name\": \"Default\", \"vhost\": \"localhost\", "
					 "\"displayOnDevportal\": true}]");
		return -1;
	}
	if (cnt > 64) {
		http_reply_error(r, 400, "At most 64 environments per request");
		return -1;
	}
	dep_req *reqs = arena_alloc(r->pool, cnt * sizeof(*reqs));
	for (size_t i = 0; i < cnt; i++) {
		json_t *e = json_array_get(body, i);
		if (!json_is_object(e)) {
			http_reply_error(r, 400, "Entry %zu must be an object {\"name\": \"Default\", "
						 "\"vhost\": \"localhost\"}",
					 i);
			return -1;
		}
		reqs[i].vhost = "localhost";
		reqs[i].display = 1;
		const char *k;
		json_t *v;
		json_object_foreach(e, k, v) {
			if (json_is_null(v))
				continue;
			if (strcmp(k, "name") == 0 || strcmp(k, "vhost") == 0) {
				if (!json_is_string(v)) {
					http_reply_error(r, 400, "'[%zu].%s' must be a string", i, k);
					return -1;
				}
				if (k[0] == 'n')
					reqs[i].name = json_string_value(v);
				else
					reqs[i].vhost = json_string_value(v);
			} else if (strcmp(k, "displayOnDevportal") == 0) {
				if (!json_is_boolean(v)) {
					http_reply_error(r, 400, "'[%zu].displayOnDevportal' must be a "
								 "boolean",
							 i);
					return -1;
				}
				reqs[i].display = json_is_true(v);
			} else if (strcmp(k, "revisionUuid") != 0 && strcmp(k, "status") != 0 &&
				   strcmp(k, "deployedTime") != 0 &&
				   strcmp(k, "successDeployedTime") != 0 &&
				   strcmp(k, "liveGatewayCount") != 0 &&
				   strcmp(k, "deployedGatewayCount") != 0 &&
				   strcmp(k, "failedGatewayCount") != 0) {
				http_reply_error(r, 400, "Unknown field '%s' in deployment %zu: use name, "
							 "vhost and displayOnDevportal",
						 k, i);
				return -1;
			}
		}
		if (reqs[i].name == NULL || *reqs[i].name == '\0') {
			http_reply_error(r, 400, "Deployment %zu needs 'name': the gateway environment "
						 "(for example Default)",
					 i);
			return -1;
		}
		if (!vhost_valid(reqs[i].vhost)) {
			http_reply_error(r, 400, "'vhost' %s of deployment %zu is not a host name",
					 reqs[i].vhost, i);
			return -1;
		}
		for (size_t j = 0; j < i; j++)
			if (strcmp(reqs[j].name, reqs[i].name) == 0) {
				http_reply_error(r, 400, "Environment %s is listed twice", reqs[i].name);
				return -1;
			}
	}
	*out = reqs;
	*n = cnt;
	return 0;
}

static const char *change_payload(http_req *r, const char *revision_id, const char *env,
				  const char *vhost)
{
	json_t *p = json_pack("{s:s, s:s, s:s}", "revisionId", revision_id, "environment", env,
			      "vhost", vhost);
	const char *s = publisher_json_text(r->pool, p);
	json_decref(p);
	return s;
}

static void h_deploy(http_req *r)
{
	store_api a;
	store_revision rv;
	dep_req *reqs;
	size_t n;
	db *d = r->ctx->apimgt;
	if (publisher_load_api(r, http_param(r, "apiId"), &a) != 0 ||
	    load_revision(r, &a, http_query(r, "revisionId"), &rv) != 0)
		return;
	if (publisher_require_modify(r, &a, 1) != 0 || not_retired(r, &a) != 0)
		return;
	json_t *body = http_json_body(r, JSON_ARRAY);
	if (body == NULL || parse_deployments(r, body, &reqs, &n) != 0)
		return;
	for (size_t i = 0; i < n; i++) {
		int exists = 0;
		apim_rc rc = admin_environment_exists(r->ctx, reqs[i].name, &exists);
		if (rc != APIM_OK) {
			http_reply_store_error(r, rc, "gateway environment");
			return;
		}
		if (!exists) {
			http_reply_error(r, 400, "Gateway environment %s does not exist: use one listed "
						 "by GET /api/am/admin/v4/environments (for example "
						 "Default)",
					 reqs[i].name);
			return;
		}
	}
	int64_t now = apim_now_ms();
	json_t *out = json_array();
	apim_rc rc = db_begin(d);
	for (size_t i = 0; rc == APIM_OK && i < n; i++) {
		store_deployment dp = {.api_id = a.id,
				       .revision_id = rv.id,
				       .environment = reqs[i].name,
				       .vhost = reqs[i].vhost,
				       .display_on_devportal = reqs[i].display,
				       .deployed_ms = now,
				       .status = "APPROVED"};
		rc = store_deployment_put(d, &dp);
		if (rc == APIM_OK)
			rc = db_change_record(d, "api", a.id, "deploy",
					      change_payload(r, rv.id, dp.environment, dp.vhost), NULL);
		json_array_append_new(out, deployment_json(&dp));
	}
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc != APIM_OK) {
		db_rollback(d);
		json_decref(out);
		http_reply_store_error(r, rc, "deployment");
		return;
	}
	for (size_t i = 0; i < n; i++)
		log_info("publisher", "API %s: revision %" PRId64 " deployed on %s by %s", a.id,
			 rv.number, reqs[i].name, r->who ? r->who->username : "?");
	http_reply_json(r, 201, out);
}

static void h_undeploy(http_req *r)
{
	store_api a;
	store_revision rv;
	dep_req *reqs = NULL;
	size_t n = 0;
	int all = 0;
	db *d = r->ctx->apimgt;
	if (publisher_load_api(r, http_param(r, "apiId"), &a) != 0)
		return;
	if (publisher_query_bool(r, "allEnvironments", 0, &all) != 0)
		return;
	const char *rid = http_query(r, "revisionId");
	const char *rnum = http_query(r, "revisionNumber");
	if (rnum == NULL)
		rnum = http_query(r, "revisionNum");
	if ((rid == NULL || *rid == '\0') && rnum != NULL && *rnum != '\0') {
		int64_t num;
		const char *digits = rnum;
		while (*digits && !isdigit((unsigned char)*digits))
			digits++; /* accepts "3" and "Revision 3" */
		if (apim_parse_i64(digits, &num) != 0) {
			http_reply_error(r, 400, "Query parameter 'revisionNumber' must be a number");
			return;
		}
		apim_rc rc = store_revision_get_by_number(d, r->pool, a.id, num, &rv);
		if (rc == APIM_ENOTFOUND) {
			http_reply_error(r, 404, "Revision %" PRId64 " of API %s not found", num, a.id);
			return;
		}
		if (rc != APIM_OK) {
			http_reply_store_error(r, rc, "revision");
			return;
		}
	} else if (load_revision(r, &a, rid, &rv) != 0) {
		return;
	}
	if (publisher_require_modify(r, &a, 1) != 0)
		return;
	store_deployment *deps;
	size_t ndeps = 0;
	apim_rc rc = store_deployment_list(d, r->pool, a.id, rv.id, &deps, &ndeps);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "deployments");
		return;
	}
	if (all) {
		reqs = arena_alloc(r->pool, (ndeps + 1) * sizeof(*reqs));
		for (size_t i = 0; i < ndeps; i++) {
			reqs[i].name = deps[i].environment;
			reqs[i].vhost = deps[i].vhost;
		}
		n = ndeps;
		if (n == 0) {
			http_reply_error(r, 400, "Revision %" PRId64 " is not deployed anywhere",
					 rv.number);
			return;
		}
	} else {
		json_t *body = http_json_body(r, JSON_ARRAY);
		if (body == NULL || parse_deployments(r, body, &reqs, &n) != 0)
			return;
		for (size_t i = 0; i < n; i++) {
			int found = 0;
			for (size_t j = 0; j < ndeps; j++) {
				if (strcmp(deps[j].environment, reqs[i].name) == 0) {
					found = 1;
					reqs[i].vhost = deps[j].vhost; /* the one deployed */
				}
			}
			if (!found) {
				http_reply_error(r, 400, "Revision %" PRId64 " is not deployed on %s",
						 rv.number, reqs[i].name);
				return;
			}
		}
	}
	rc = db_begin(d);
	for (size_t i = 0; rc == APIM_OK && i < n; i++) {
		rc = store_deployment_delete(d, a.id, reqs[i].name);
		if (rc == APIM_OK)
			rc = db_change_record(d, "api", a.id, "undeploy",
					      change_payload(r, rv.id, reqs[i].name, reqs[i].vhost),
					      NULL);
	}
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc != APIM_OK) {
		db_rollback(d);
		if (rc == APIM_ENOTFOUND)
			http_reply_error(r, 409, "The deployment changed meanwhile; reload and retry");
		else
			http_reply_store_error(r, rc, "deployment");
		return;
	}
	for (size_t i = 0; i < n; i++)
		log_info("publisher", "API %s: revision %" PRId64 " undeployed from %s by %s", a.id,
			 rv.number, reqs[i].name, r->who ? r->who->username : "?");
	rc = store_deployment_list(d, r->pool, a.id, NULL, &deps, &ndeps);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "deployments");
		return;
	}
	json_t *out = json_array();
	for (size_t i = 0; i < ndeps; i++)
		json_array_append_new(out, deployment_json(&deps[i]));
	http_reply_json(r, 201, out);
}

static void h_deployments(http_req *r)
{
	store_api a;
	store_deployment *deps;
	size_t n;
	if (publisher_load_api(r, http_param(r, "apiId"), &a) != 0)
		return;
	apim_rc rc = store_deployment_list(r->ctx->apimgt, r->pool, a.id, NULL, &deps, &n);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "deployments");
		return;
	}
	json_t *out = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(out, deployment_json(&deps[i]));
	http_reply_json(r, 200, out);
}

static const http_route revision_routes[] = {
	{"GET", PUB_BASE "/apis/{apiId}/revisions", h_list, PUB_SCOPES_VIEW, 0},
	{"POST", PUB_BASE "/apis/{apiId}/revisions", h_create, PUB_SCOPES_CREATE, 0},
	{"GET", PUB_BASE "/apis/{apiId}/revisions/{revisionId}", h_get, PUB_SCOPES_VIEW, 0},
	{"DELETE", PUB_BASE "/apis/{apiId}/revisions/{revisionId}", h_delete, PUB_SCOPES_CREATE, 0},
	{"POST", PUB_BASE "/apis/{apiId}/restore-revision", h_restore, PUB_SCOPES_CREATE, 0},
	{"POST", PUB_BASE "/apis/{apiId}/deploy-revision", h_deploy, PUB_SCOPES_DEPLOY, 0},
	{"POST", PUB_BASE "/apis/{apiId}/undeploy-revision", h_undeploy, PUB_SCOPES_DEPLOY, 0},
	{"GET", PUB_BASE "/apis/{apiId}/deployments", h_deployments, PUB_SCOPES_VIEW, 0},
};

void publisher_revision_routes(http_server *s)
{
	http_server_routes(s, revision_routes, sizeof(revision_routes) / sizeof(revision_routes[0]));
}
