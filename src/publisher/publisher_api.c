/*
 * publisher_api.c: /apis: list and search, create, get, update, delete and
 * copy-api (new version).
 *
 * The stored document (am_api.doc) is the normalised API object of
 * publisher_dto.c with id, lifeCycleStatus and times filled in; the indexed
 * columns are copies of its identity fields. Responses render the document
 * with the columns that can change without a document rewrite (status,
 * default version) taken from the row.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin/admin.h"
#include "auth/auth.h"
#include "common/ctx.h"
#include "common/log.h"
#include "common/util.h"
#include "publisher/publisher_internal.h"
#include "store/db.h"
#include "store/store_rating.h"
#include "store/store_subscription.h"

json_t *publisher_api_render(const store_api *a)
{
	json_t *doc = publisher_json_parse(a->doc);
	if (!json_is_object(doc)) {
		json_decref(doc);
		doc = json_object();
	}
	json_object_set_new(doc, "id", json_string(a->id));
	json_object_set_new(doc, "provider", json_string(a->provider ? a->provider : ""));
	json_object_set_new(doc, "lifeCycleStatus", json_string(a->status ? a->status : "CREATED"));
	json_object_set_new(doc, "isDefaultVersion", json_boolean(a->is_default));
	json_object_set_new(doc, "createdTime", publisher_time_json(a->created_ms));
	json_object_set_new(doc, "lastUpdatedTime", publisher_time_json(a->updated_ms));
	return doc;
}

/* The APIInfo object of lists. */
static json_t *render_info(const store_api *a)
{
	json_t *doc = publisher_json_parse(a->doc);
	json_t *sec = json_object_get(doc, "securityScheme");
	json_t *o = json_pack("{s:s, s:s?, s:s?, s:s, s:s, s:s, s:s, s:s, s:n, s:b, s:O?, s:o, s:o, "
			      "s:b, s:s, s:b}",
			      "id", a->id, "name", a->name, "description", a->description,
			      "context", a->context, "version", a->version, "provider", a->provider,
			      "type", "HTTP", "lifeCycleStatus", a->status, "workflowStatus",
			      "hasThumbnail", 0, "securityScheme", sec, "createdTime",
			      publisher_time_json(a->created_ms), "updatedTime",
			      publisher_time_json(a->updated_ms), "isDefaultVersion",
			      a->is_default, "gatewayVendor", "wso2", "advertiseOnly", 0);
	json_decref(doc);
	return o;
}

void publisher_api_fill(arena *pool, store_api *a, json_t *doc)
{
	const char *ctx = json_string_value(json_object_get(doc, "context"));
	const char *ver = json_string_value(json_object_get(doc, "version"));
	a->name = arena_strdup(pool, json_string_value(json_object_get(doc, "name")));
	a->version = arena_strdup(pool, ver);
	a->context = arena_strdup(pool, ctx);
	a->context_template = publisher_dto_context_template(pool, ctx);
	a->full_context = publisher_dto_full_context(pool, a->context_template, ver);
	a->provider = arena_strdup(pool, json_string_value(json_object_get(doc, "provider")));
	const char *desc = json_string_value(json_object_get(doc, "description"));
	a->description = desc ? arena_strdup(pool, desc) : NULL;
	a->is_default = json_is_true(json_object_get(doc, "isDefaultVersion"));
	json_object_set_new(doc, "id", json_string(a->id));
	json_object_set_new(doc, "lifeCycleStatus", json_string(a->status));
	json_object_set_new(doc, "createdTime", publisher_time_json(a->created_ms));
	json_object_set_new(doc, "lastUpdatedTime", publisher_time_json(a->updated_ms));
	a->doc = publisher_json_text(pool, doc);
}

int publisher_api_check_policies(http_req *r, const json_t *doc, store_policy_ref **refs,
				 size_t *nrefs)
{
	publisher_dto_policy_refs(r->pool, doc, refs, nrefs);
	for (size_t i = 0; i < *nrefs; i++) {
		int exists = 0;
		apim_rc rc = admin_policy_exists(r->ctx, (*refs)[i].level, (*refs)[i].name, &exists);
		if (rc != APIM_OK) {
			http_reply_store_error(r, rc, "rate-limit policy");
			return -1;
		}
		if (exists)
			continue;
		if (strcmp((*refs)[i].level, "subscription") == 0)
			http_reply_error(r, 400, "Subscription policy '%s' in 'policies' does not exist: "
						 "use one listed by GET /api/am/admin/v4/throttling/"
						 "policies/subscription (for example Unlimited, Gold)",
					 (*refs)[i].name);
		else
			http_reply_error(r, 400, "API policy '%s' (apiThrottlingPolicy or an operation's "
						 "throttlingPolicy) does not exist: use an advanced "
						 "policy listed by GET /api/am/admin/v4/throttling/"
						 "policies/advanced (for example Unlimited)",
					 (*refs)[i].name);
		return -1;
	}
	return 0;
}

const char **publisher_api_tags(arena *pool, const json_t *doc, size_t *n)
{
	json_t *tags = json_object_get(doc, "tags");
	size_t cnt = json_array_size(tags);
	const char **out = arena_alloc(pool, (cnt + 1) * sizeof(char *));
	for (size_t i = 0; i < cnt; i++)
		out[i] = arena_strdup(pool, json_string_value(json_array_get(tags, i)));
	*n = cnt;
	return out;
}

static void reply_duplicate(http_req *r, const store_api *a, const char *what)
{
	if (strcmp(what, "context") == 0)
		http_reply_error(r, 409, "API with context %s and version %s already exists "
					 "(gateway path %s): choose another context or version",
				 a->context, a->version, a->full_context);
	else
		http_reply_error(r, 409, "API %s with version %s already exists for provider %s: "
					 "choose another name or version",
				 a->name, a->version, a->provider);
}

/*
 * Inside the caller's transaction: records that the default-version flag of
 * API id changed, when the API is deployed (gateways route the unversioned
 * context to the default version).
 */
static apim_rc record_default(http_req *r, const char *id, int is_default)
{
	db *d = r->ctx->apimgt;
	store_deployment *deps;
	size_t n = 0;
	apim_rc rc = store_deployment_list(d, r->pool, id, NULL, &deps, &n);
	if (rc != APIM_OK || n == 0)
		return rc;
	return db_change_record(d, "api", id, "default-version",
				is_default ? "{\"isDefaultVersion\":true}"
					   : "{\"isDefaultVersion\":false}",
				NULL);
}

/* Makes a the default version: clears the flag of the other versions,
 * recording the change of those that are deployed. */
static apim_rc move_default(http_req *r, const store_api *a)
{
	const char **ids = NULL;
	size_t n = 0;
	apim_rc rc = store_api_clear_default(r->ctx->apimgt, r->pool, a->provider, a->name, a->id,
					     &ids, &n);
	for (size_t i = 0; rc == APIM_OK && i < n; i++)
		rc = record_default(r, ids[i], 0);
	return rc;
}

/*
 * An API write that touches shareddb too (a copy's documents; a delete's
 * documents, ratings and comments) runs one transaction on each database,
 * shareddb's (s, may be NULL) opened first: while either database is away
 * the request fails with nothing written. The caller commits apimgtdb
 * first, then shareddb; only a shareddb failure between the two commits
 * leaves a trace, which is logged: unreachable documents of a deleted API
 * (its id is never reused), or a new version without its documents.
 * Both are rolled back on failure here.
 */
static apim_rc publisher_api_begin_both(db *d, db *s)
{
	apim_rc rc = s != NULL ? db_begin(s) : APIM_OK;
	if (rc == APIM_OK)
		rc = db_begin(d);
	if (rc != APIM_OK && s != NULL)
		db_rollback(s);
	return rc;
}

/*
 * Inserts the normalised doc (borrowed) as a new CREATED API with swagger
 * (or NULL) and answers 201; copies the documents of copy_docs_from when
 * not NULL.
 */
static void create_doc(http_req *r, json_t *doc, const char *swagger, const char *copy_docs_from)
{
	store_policy_ref *refs;
	size_t nrefs, ntags;
	db *d = r->ctx->apimgt;
	if (publisher_api_check_policies(r, doc, &refs, &nrefs) != 0)
		return;
	store_api a;
	memset(&a, 0, sizeof(a));
	apim_uuid(a.id);
	a.status = "CREATED";
	a.created_ms = a.updated_ms = apim_now_ms();
	a.swagger = swagger;
	publisher_api_fill(r->pool, &a, doc);
	const char **tags = publisher_api_tags(r->pool, doc, &ntags);

	const char *dup = NULL;
	/* a copy's documents go into shareddb in the same step: see
	 * publisher_api_begin_both */
	db *s = copy_docs_from != NULL ? r->ctx->shared : NULL;
	apim_rc rc = publisher_api_begin_both(d, s);
	if (rc == APIM_OK)
		rc = store_api_find_duplicate(d, &a, NULL, &dup);
	if (rc == APIM_OK && dup != NULL) {
		db_rollback(d);
		db_rollback(s);
		reply_duplicate(r, &a, dup);
		return;
	}
	if (rc == APIM_OK && a.is_default)
		rc = move_default(r, &a);
	if (rc == APIM_OK)
		rc = store_api_insert(d, &a, tags, ntags, refs, nrefs);
	if (rc == APIM_OK && s != NULL)
		rc = publisher_document_copy(r, copy_docs_from, a.id);
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc == APIM_OK && s != NULL && db_commit(s) != APIM_OK)
		log_error("publisher", "API %s created, but shareddb failed at its commit: the "
				       "documents of %s were not copied", a.id, copy_docs_from);
	if (rc != APIM_OK) {
		db_rollback(d);
		db_rollback(s);
		if (rc == APIM_ECONFLICT)
			http_reply_error(r, 409, "API %s %s (context %s) already exists", a.name,
					 a.version, a.full_context);
		else
			http_reply_store_error(r, rc, "API");
		return;
	}
	log_info("publisher", "API %s created: %s %s at %s by %s", a.id, a.name, a.version,
		 a.full_context, r->who ? r->who->username : "?");
	http_set_header(r, "Location", arena_sprintf(r->pool, PUB_BASE "/apis/%s", a.id));
	http_reply_json(r, 201, publisher_api_render(&a));
}

void publisher_api_create(http_req *r, const json_t *in, const char *swagger)
{
	const principal *p = r->who;
	const char *prov = json_string_value(json_object_get(in, "provider"));
	char err[512];
	json_t *doc = NULL;
	if (prov != NULL && *prov != '\0' && strcmp(prov, p->username) != 0 &&
	    !principal_is_admin(p) && !principal_has_scope(p, "apim:api_manage")) {
		http_reply_error(r, 403, "User %s may not create an API for provider %s: only admins "
					 "may set another provider",
				 p->username, prov);
		return;
	}
	if (publisher_dto_api(in, NULL, &doc, err, sizeof(err)) != APIM_OK) {
		http_reply_error(r, 400, "%s", err);
		return;
	}
	if (json_string_value(json_object_get(doc, "provider")) == NULL)
		json_object_set_new(doc, "provider", json_string(p->username));
	create_doc(r, doc, swagger, NULL);
	json_decref(doc);
}

int publisher_api_save(http_req *r, store_api *a, json_t *doc, const char *swagger)
{
	store_policy_ref *refs;
	size_t nrefs, ntags;
	db *d = r->ctx->apimgt;
	int rcode = -1;
	if (publisher_api_check_policies(r, doc, &refs, &nrefs) != 0)
		goto out;
	int was_default = a->is_default;
	a->updated_ms = apim_now_ms();
	a->swagger = swagger;
	publisher_api_fill(r->pool, a, doc);
	const char **tags = publisher_api_tags(r->pool, doc, &ntags);
	apim_rc rc = db_begin(d);
	if (rc == APIM_OK && a->is_default && !was_default)
		rc = move_default(r, a);
	if (rc == APIM_OK && a->is_default != was_default)
		rc = record_default(r, a->id, a->is_default);
	if (rc == APIM_OK)
		rc = store_api_update(d, a, tags, ntags, refs, nrefs);
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc != APIM_OK) {
		db_rollback(d);
		http_reply_store_error(r, rc, "API");
		goto out;
	}
	rcode = 0;
out:
	json_decref(doc);
	return rcode;
}

/* ---------- handlers ---------- */

/* Splits query= into terms: "name:pizza tag:food", bare words search names;
 * values may be "quoted" (exact match). Answers 400 and returns -1 on an
 * unknown attribute. */
static int parse_search(http_req *r, const char *query, store_api_query *q)
{
	static const char *const fields[] = {"name",   "context", "tag",        "provider",
					     "version", "status", "description"};
	char *s = arena_strdup(r->pool, query);
	char *p = s;
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
		const char *field = "name", *value = start;
		char *colon = strchr(start, ':');
		if (colon != NULL && (strchr(start, '"') == NULL || strchr(start, '"') > colon)) {
			*colon = '\0';
			field = start;
			value = colon + 1;
			int known = 0;
			for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
				if (strcasecmp(field, fields[i]) == 0) {
					field = fields[i];
					known = 1;
				}
			if (!known) {
				http_reply_error(r, 400, "Unknown search attribute '%s' in query: use "
							 "name, context, tag, provider, version, status "
							 "or description (name:pizza) or a bare word",
						 field);
				return -1;
			}
		}
		if (*value == '\0')
			continue;
		if (q->nterms == 8) {
			http_reply_error(r, 400, "The query has more than 8 terms");
			return -1;
		}
		q->field[q->nterms] = field;
		q->value[q->nterms] = value;
		q->nterms++;
	}
	return 0;
}

static void h_list(http_req *r)
{
	store_api_query q;
	memset(&q, 0, sizeof(q));
	if (http_paging(r, &q.limit, &q.offset) != 0)
		return;
	const char *query = http_query(r, "query");
	if (query != NULL && parse_search(r, query, &q) != 0)
		return;
	const char *sort = http_query(r, "sortBy"), *order = http_query(r, "sortOrder");
	if (sort != NULL && *sort) {
		static const struct {
			const char *param, *col;
		} sorts[] = {{"name", "name"},
			     {"apiName", "name"},
			     {"version", "version"},
			     {"context", "context"},
			     {"provider", "provider"},
			     {"status", "status"},
			     {"createdTime", "created_ms"},
			     {"lastUpdatedTime", "updated_ms"},
			     {"updatedTime", "updated_ms"}};
		for (size_t i = 0; i < sizeof(sorts) / sizeof(sorts[0]); i++)
			if (strcasecmp(sort, sorts[i].param) == 0)
				q.order_by = sorts[i].col;
		if (q.order_by == NULL) {
			http_reply_error(r, 400, "Unknown sortBy '%s': use name, version, context, "
						 "provider, status, createdTime or lastUpdatedTime",
					 sort);
			return;
		}
	}
	if (order != NULL && *order) {
		if (strcasecmp(order, "desc") == 0)
			q.desc = 1;
		else if (strcasecmp(order, "asc") != 0) {
			http_reply_error(r, 400, "sortOrder must be asc or desc, not '%s'", order);
			return;
		}
	}
	store_api *apis;
	size_t n;
	int64_t total;
	apim_rc rc = store_api_list(r->ctx->apimgt, r->pool, &q, &apis, &n, &total);
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "APIs");
		return;
	}
	json_t *list = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(list, render_info(&apis[i]));
	http_reply_list(r, list, total, q.limit, q.offset);
}

static void h_create(http_req *r)
{
	json_t *in = http_json_body(r, JSON_OBJECT);
	if (in == NULL)
		return;
	publisher_api_create(r, in, NULL);
}

static void h_get(http_req *r)
{
	store_api a;
	if (publisher_load_api(r, http_param(r, "apiId"), &a) != 0)
		return;
	http_reply_json(r, 200, publisher_api_render(&a));
}

static void h_update(http_req *r)
{
	store_api a;
	char err[512];
	if (publisher_load_api(r, http_param(r, "apiId"), &a) != 0)
		return;
	if (publisher_require_modify(r, &a, 0) != 0)
		return;
	json_t *in = http_json_body(r, JSON_OBJECT);
	if (in == NULL)
		return;
	json_t *cur = publisher_api_render(&a);
	int ok = http_check_if_match(r, cur) == 0;
	json_decref(cur);
	if (!ok)
		return;
	json_t *base = publisher_json_parse(a.doc), *doc = NULL;
	apim_rc rc = publisher_dto_api(in, base, &doc, err, sizeof(err));
	json_decref(base);
	if (rc != APIM_OK) {
		http_reply_error(r, 400, "%s", err);
		return;
	}
	if (publisher_api_save(r, &a, doc, a.swagger) != 0)
		return;
	http_reply_json(r, 200, publisher_api_render(&a));
}

static void h_delete(http_req *r)
{
	store_api a;
	db *d = r->ctx->apimgt;
	if (publisher_load_api(r, http_param(r, "apiId"), &a) != 0)
		return;
	if (publisher_require_modify(r, &a, 0) != 0)
		return;
	int64_t subs = 0;
	/* documents, ratings and comments live in shareddb */
	db *s = r->ctx->shared;
	apim_rc rc = publisher_api_begin_both(d, s);
	if (rc == APIM_OK)
		rc = store_subscription_count_active(d, a.id, &subs);
	if (rc == APIM_OK && subs > 0) {
		db_rollback(d);
		db_rollback(s);
		http_reply_error(r, 409, "Cannot delete API %s %s: it has %lld active subscription%s; "
					 "they must be removed first",
				 a.name, a.version, (long long)subs, subs == 1 ? "" : "s");
		return;
	}
	if (rc == APIM_OK) {
		json_t *p = json_pack("{s:s, s:s, s:s, s:s}", "name", a.name, "version", a.version,
				      "context", a.full_context, "provider", a.provider);
		const char *payload = publisher_json_text(r->pool, p);
		json_decref(p);
		rc = db_change_record(d, "api", a.id, "delete", payload, NULL);
	}
	if (rc == APIM_OK)
		rc = store_api_delete(d, a.id);
	if (rc == APIM_OK && s != NULL)
		rc = publisher_document_delete_all(r, a.id);
	if (rc == APIM_OK && s != NULL)
		rc = store_rating_delete_api(s, a.id);
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc != APIM_OK) {
		db_rollback(d);
		db_rollback(s);
		http_reply_store_error(r, rc, "API");
		return;
	}
	if (s != NULL && db_commit(s) != APIM_OK)
		log_error("publisher", "API %s deleted, but shareddb failed at its commit: its "
				       "documents, ratings and comments remain, unreachable", a.id);
	log_info("publisher", "API %s (%s %s) deleted by %s", a.id, a.name, a.version,
		 r->who ? r->who->username : "?");
	http_reply_empty(r, 200);
}

static void h_copy(http_req *r)
{
	const char *api_id = http_query(r, "apiId");
	const char *newv = http_query(r, "newVersion");
	int dflt = 0;
	char err[512];
	store_api a;
	if (api_id == NULL || *api_id == '\0') {
		http_reply_error(r, 400, "Query parameter 'apiId' is required");
		return;
	}
	if (newv == NULL || *newv == '\0') {
		http_reply_error(r, 400, "Query parameter 'newVersion' is required");
		return;
	}
	if (publisher_query_bool(r, "defaultVersion", 0, &dflt) != 0)
		return;
	if (publisher_load_api(r, api_id, &a) != 0)
		return;
	if (publisher_require_modify(r, &a, 0) != 0)
		return;
	if (strcmp(newv, a.version) == 0) {
		http_reply_error(r, 409, "API %s already has version %s", a.name, a.version);
		return;
	}
	json_t *in = publisher_json_parse(a.doc), *doc = NULL;
	if (!json_is_object(in)) {
		json_decref(in);
		http_reply_error(r, 500, "The stored API %s is unreadable", a.id);
		return;
	}
	json_object_set_new(in, "version", json_string(newv));
	json_object_set_new(in, "isDefaultVersion", json_boolean(dflt));
	/* the new version's scopes get fresh ids */
	json_t *sc;
	size_t i;
	json_array_foreach(json_object_get(in, "scopes"), i, sc)
		json_object_del(json_object_get(sc, "scope"), "id");
	apim_rc rc = publisher_dto_api(in, NULL, &doc, err, sizeof(err));
	json_decref(in);
	if (rc != APIM_OK) {
		http_reply_error(r, 400, "%s", err);
		return;
	}
	create_doc(r, doc, a.swagger, a.id);
	json_decref(doc);
}

static const http_route api_routes[] = {
	{"GET", PUB_BASE "/apis", h_list, PUB_SCOPES_VIEW, 0},
	{"POST", PUB_BASE "/apis", h_create, PUB_SCOPES_CREATE, 0},
	{"POST", PUB_BASE "/apis/copy-api", h_copy, PUB_SCOPES_CREATE, 0},
	{"GET", PUB_BASE "/apis/{apiId}", h_get, PUB_SCOPES_VIEW, 0},
	{"PUT", PUB_BASE "/apis/{apiId}", h_update, PUB_SCOPES_CREATE, 0},
	{"DELETE", PUB_BASE "/apis/{apiId}", h_delete, PUB_SCOPES_DELETE, 0},
};

void publisher_api_routes(http_server *s)
{
	http_server_routes(s, api_routes, sizeof(api_routes) / sizeof(api_routes[0]));
}
