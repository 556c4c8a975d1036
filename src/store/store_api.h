/*
 * store_api.h: the Publisher's APIs, revisions and deployments in apimgtdb.
 *
 * Tables (migration module "publisher"):
 *   am_api            one row per API: indexed identity columns and the
 *                     normalised API document (doc, JSON text) that the
 *                     gateway snapshots read; swagger is the stored OpenAPI
 *                     definition (NULL: generated from doc on demand).
 *   am_api_tag        (api_id, tag) for tag search.
 *   am_policy_usage   (owner_id, api_id, level, name, uses): the rate-limit
 *                     policies an API's working copy or one of its revisions
 *                     refers to, so that "is this policy used" is one
 *                     indexed query.
 *   am_revision       immutable snapshots (doc + swagger) of an API.
 *   am_deployment     (api_id, environment) -> revision deployed there.
 *
 * Every function runs one statement or a few on the calling thread's
 * connection: callers that change several rows wrap them in
 * db_begin/db_commit. Strings of results come from the given pool.
 */
#ifndef APIM_STORE_API_H
#define APIM_STORE_API_H

#include <stddef.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/error.h"
#include "store/db.h"

typedef struct store_api {
	char id[37];
	const char *name;
	const char *version;
	const char *context;          /* as given, e.g. "/pizza" */
	const char *context_template; /* "/pizza/{version}" */
	const char *full_context;     /* "/pizza/1.0.0": unique */
	const char *provider;
	const char *description;      /* copy of doc.description, for search */
	const char *status;           /* CREATED, PUBLISHED, ... */
	int is_default;
	int64_t created_ms;
	int64_t updated_ms;
	int64_t revision_seq; /* number of the last revision created */
	const char *doc;      /* normalised API JSON */
	const char *swagger;  /* stored OpenAPI JSON or NULL */
} store_api;

/* A rate-limit policy an API document refers to, with its number of uses. */
typedef struct store_policy_ref {
	const char *level; /* "subscription" or "advanced" */
	const char *name;
	int64_t uses;
} store_policy_ref;

typedef struct store_api_query {
	/* Each term: field ("name", "context", "tag", "provider", "version",
	 * "status", "description") and a value; every term must match. */
	const char *field[8];
	const char *value[8];
	size_t nterms;
	const char *order_by; /* column: name, version, context, provider, status, created_ms */
	int desc;
	int64_t offset, limit;
} store_api_query;

/* Applies the "publisher" migrations to apimgtdb. */
apim_rc store_api_migrate(db *d);

apim_rc store_api_get(db *d, arena *pool, const char *id, store_api *out);
/* Finds another API (id != exclude_id, exclude_id may be NULL) with the same
 * full context, or the same provider+name+version. *what = "context",
 * "name" or NULL when there is none. */
apim_rc store_api_find_duplicate(db *d, const store_api *a, const char *exclude_id,
				 const char **what);
/* Inserts a with its tags and policy references. APIM_ECONFLICT on a
 * duplicate context/version or provider/name/version. */
apim_rc store_api_insert(db *d, const store_api *a, const char *const *tags, size_t ntags,
			 const store_policy_ref *refs, size_t nrefs);
/* Replaces doc, swagger, status, is_default, updated_ms, revision_seq and
 * the identity columns of a->id with its tags and policy references.
 * APIM_ENOTFOUND when gone. */
apim_rc store_api_update(db *d, const store_api *a, const char *const *tags, size_t ntags,
			 const store_policy_ref *refs, size_t nrefs);
/* Status (and doc) only. */
apim_rc store_api_set_status(db *d, const char *id, const char *status, const char *doc,
			     int64_t updated_ms);
/* Deletes the API, its tags, policy usage, revisions and deployments. */
apim_rc store_api_delete(db *d, const char *id);
/* Clears is_default on every other version of provider+name; returns the
 * ids whose flag changed (from pool) in *ids and *n when ids != NULL. */
apim_rc store_api_clear_default(db *d, arena *pool, const char *provider, const char *name,
				const char *except_id, const char ***ids, size_t *n);
apim_rc store_api_list(db *d, arena *pool, const store_api_query *q, store_api **out, size_t *n,
		       int64_t *total);
/*
 * Every API in one of the given statuses (at most 8) that matches q's terms,
 * ordered by name and version; q's paging and order are ignored and at
 * most max rows are returned (the Developer Portal filters them further by
 * visibility before paging). Read-only.
 */
apim_rc store_api_list_in_status(db *d, arena *pool, const store_api_query *q,
				 const char *const *statuses, size_t nstatuses, int64_t max,
				 store_api **out, size_t *n);
/* Other versions of provider+name (not id) in the given status. */
apim_rc store_api_versions(db *d, arena *pool, const char *provider, const char *name,
			   const char *status, const char *except_id, store_api **out, size_t *n);
/* Increments the API's revision counter and returns the new value (the
 * number of the revision being created); locks the API's row. */
apim_rc store_api_next_revision(db *d, const char *id, int64_t *number);
/* Sum of the uses of a policy by API documents and revisions. */
apim_rc store_api_policy_usage(db *d, const char *level, const char *name, int64_t *count);

typedef struct store_revision {
	char id[37];
	const char *api_id;
	int64_t number;
	const char *description;
	int64_t created_ms;
	const char *doc;
	const char *swagger;
} store_revision;

/* Inserts a revision with the policy references of its document. */
apim_rc store_revision_insert(db *d, const store_revision *rv, const store_policy_ref *refs,
			      size_t nrefs);
apim_rc store_revision_get(db *d, arena *pool, const char *api_id, const char *id,
			   store_revision *out);
apim_rc store_revision_get_by_number(db *d, arena *pool, const char *api_id, int64_t number,
				     store_revision *out);
/* Revisions of an API by number (doc/swagger not loaded when !full). */
apim_rc store_revision_list(db *d, arena *pool, const char *api_id, int full,
			    store_revision **out, size_t *n);
apim_rc store_revision_count(db *d, const char *api_id, int64_t *count);
apim_rc store_revision_delete(db *d, const char *api_id, const char *id);

typedef struct store_deployment {
	const char *api_id;
	const char *revision_id;
	const char *environment;
	const char *vhost;
	int display_on_devportal;
	int64_t deployed_ms;
	const char *status; /* "APPROVED" */
} store_deployment;

/* Deploys (or moves) the API's deployment on dep->environment. */
apim_rc store_deployment_put(db *d, const store_deployment *dep);
apim_rc store_deployment_delete(db *d, const char *api_id, const char *environment);
/* The API's deployments (revision_id NULL: all), by environment. */
apim_rc store_deployment_list(db *d, arena *pool, const char *api_id, const char *revision_id,
			      store_deployment **out, size_t *n);
apim_rc store_deployment_env_usage(db *d, const char *environment, int64_t *count);

#endif
