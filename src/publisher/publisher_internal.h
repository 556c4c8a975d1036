/*
 * publisher_internal.h: what the Publisher's files share with each other
 * (not an interface for other components: that is publisher.h).
 *
 *   publisher.c             routes, migrations, usage queries, request helpers
 *   publisher_api.c         /apis CRUD, search, copy-api
 *   publisher_dto.c         validation and normalisation of the API object
 *   publisher_openapi.c     /swagger, import-openapi, OpenAPI <-> API
 *   publisher_yaml.c        YAML -> JSON for definitions (libyaml)
 *   publisher_multipart.c   bounded multipart/form-data parser
 *   publisher_lifecycle.c   the lifecycle state machine and its endpoints
 *   publisher_revision.c    revisions and deployments
 *   publisher_document.c    documents
 *   publisher_subscription.c the API's subscriptions (block/unblock)
 */
#ifndef APIM_PUBLISHER_INTERNAL_H
#define APIM_PUBLISHER_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/error.h"
#include "http/http.h"
#include "store/store_api.h"

#define PUB_BASE "/api/am/publisher/v4"

/* Route scopes (any one of them). */
#define PUB_SCOPES_VIEW "apim:api_view apim:api_create apim:api_publish apim:api_manage"
#define PUB_SCOPES_CREATE "apim:api_create apim:api_manage"
#define PUB_SCOPES_DELETE "apim:api_delete apim:api_manage"
#define PUB_SCOPES_PUBLISH "apim:api_publish apim:api_manage"
#define PUB_SCOPES_DEPLOY "apim:api_publish apim:api_create apim:api_manage"
#define PUB_SCOPES_DOC_WRITE \
	"apim:api_create apim:api_manage apim:document_create apim:document_manage"
#define PUB_SCOPES_SUB_VIEW \
	"apim:subscription_view apim:api_view apim:sub_manage apim:api_manage"
#define PUB_SCOPES_SUB_BLOCK "apim:subscription_block apim:sub_manage apim:api_manage"

/* ---------- publisher.c: request helpers ---------- */

/* Loads the API; on failure answers (404 naming the id) and returns -1. */
int publisher_load_api(http_req *r, const char *id, store_api *out);
/*
 * 0 when the caller may change the API: admins, holders of apim:api_manage,
 * the API's provider, and (allow_publisher) holders of apim:api_publish.
 * Otherwise answers 403 and returns -1.
 */
int publisher_require_modify(http_req *r, const store_api *api, int allow_publisher);
/* Boolean query parameter ("true"/"false", any case); absent: dflt. On a
 * bad value answers 400 and returns -1. */
int publisher_query_bool(http_req *r, const char *name, int dflt, int *out);
/* ms since the epoch as the decimal string the reference uses for times. */
json_t *publisher_time_json(int64_t ms);
/* Parses JSON text into a new reference, NULL when malformed. */
json_t *publisher_json_parse(const char *text);
/* Compact JSON text of v from pool. */
char *publisher_json_text(arena *pool, const json_t *v);

/* ---------- publisher_dto.c: the API object ---------- */

/*
 * Validates in (the request's API object, borrowed) and returns the
 * normalised document in *out (new reference). base: the stored document on
 * update (borrowed, NULL on create): fields absent from in keep base's
 * values, and name, version, context and provider never change (as the
 * reference's PUT). Read-only fields (id, lifeCycleStatus, times, ...) are
 * ignored. On APIM_EINVAL err says which field is wrong and how.
 */
apim_rc publisher_dto_api(const json_t *in, const json_t *base, json_t **out, char *err,
			  size_t errlen);
/* Normalises a context (adds the leading "/", drops trailing "/") into out
 * and validates it: 0, or -1 with err. */
int publisher_dto_context(const char *in, char *out, size_t outlen, char *err, size_t errlen);
/* Validates a resource URL template ("/menu/{id}", or a wildcard last
 * segment): 0 or -1. */
int publisher_dto_template(const char *t, char *err, size_t errlen);
/* Validates an endpoint URL (http(s)://host[:port][/path]): 0 or -1. */
int publisher_dto_url(const char *url, char *err, size_t errlen);
/* "Any" for "Any"/"Application & Application User", ...; NULL if unknown. */
const char *publisher_dto_auth_type(const char *s);
/* 1 when verb is one of GET POST PUT PATCH DELETE HEAD OPTIONS (upper case). */
int publisher_dto_verb(const char *verb);
/* "/ctx/{version}" or the context itself when it holds "{version}". */
char *publisher_dto_context_template(arena *pool, const char *context);
/* The template with {version} replaced. */
char *publisher_dto_full_context(arena *pool, const char *tmpl, const char *version);
/* The rate-limit policies a normalised document refers to (from pool). */
void publisher_dto_policy_refs(arena *pool, const json_t *doc, store_policy_ref **out, size_t *n);
/* The default operations of a new API: the wildcard template with GET,
 * PUT, POST, DELETE and PATCH. */
json_t *publisher_dto_default_operations(void);

/* ---------- publisher_api.c ---------- */

/* Renders the API as GET /apis/{id} does (new reference). */
json_t *publisher_api_render(const store_api *a);
/* Fills a's identity columns and doc text from the normalised doc. */
void publisher_api_fill(arena *pool, store_api *a, json_t *doc);
/* Checks every policy of doc exists at its level; answers 400 naming the
 * first that does not and returns -1. refs/nrefs: the references (pool). */
int publisher_api_check_policies(http_req *r, const json_t *doc, store_policy_ref **refs,
				 size_t *nrefs);
/* Tags of the doc as a string array (pool). */
const char **publisher_api_tags(arena *pool, const json_t *doc, size_t *n);
/*
 * Creates an API from a request object (borrowed) and an optional OpenAPI
 * definition (swagger JSON text, or NULL to generate one on demand), then
 * answers 201 with it. Answers the error itself otherwise.
 */
void publisher_api_create(http_req *r, const json_t *in, const char *swagger);
/*
 * Stores a new working copy of an existing API: doc (normalised, stolen) and
 * swagger (text or NULL), in one transaction that also moves the default
 * version when doc asks for it. Answers errors itself and returns -1; 0 on
 * success with *a updated.
 */
int publisher_api_save(http_req *r, store_api *a, json_t *doc, const char *swagger);
void publisher_api_routes(http_server *s);

/* ---------- publisher_openapi.c ---------- */

/* The OpenAPI 3 definition of the API: the stored one kept in step with
 * the API's operations and scopes, or one generated. New reference. */
json_t *publisher_openapi_for(const store_api *a, const json_t *doc);
/*
 * Parses an OpenAPI 3 definition (JSON or YAML text). On APIM_EINVAL err
 * says what is wrong.
 */
apim_rc publisher_openapi_parse(const char *text, size_t len, json_t **out, char *err,
				size_t errlen);
/* Operations (and, when the definition declares them, API scopes) derived
 * from the definition's paths, not yet normalised: new references. */
apim_rc publisher_openapi_operations(const json_t *oas, json_t **ops, json_t **scopes,
				     char *err, size_t errlen);
void publisher_openapi_routes(http_server *s);

/* ---------- publisher_yaml.c ---------- */

/* YAML (one document) to JSON with bounded size and depth. */
apim_rc publisher_yaml_to_json(const char *text, size_t len, json_t **out, char *err,
			       size_t errlen);

/* ---------- publisher_multipart.c ---------- */

typedef struct publisher_part {
	const char *name;
	const char *filename;     /* NULL when not a file */
	const char *content_type; /* NULL when not given */
	const char *data;         /* NUL-terminated copy (pool) */
	size_t len;
} publisher_part;

/*
 * Parses a multipart/form-data body (at most 32 parts) given the request's
 * Content-Type. Parts are copied into pool. APIM_EINVAL with err on a
 * malformed body, APIM_EMEDIA when content_type is not multipart/form-data.
 */
apim_rc publisher_multipart_parse(arena *pool, const char *content_type, const char *body,
				  size_t len, publisher_part **parts, size_t *n, char *err,
				  size_t errlen);
const publisher_part *publisher_multipart_get(const publisher_part *parts, size_t n,
					      const char *name);
/* 1 when the Content-Type is multipart/form-data. */
int publisher_multipart_is(const char *content_type);

/* ---------- publisher_lifecycle.c ---------- */

typedef enum {
	PUB_LC_CREATED,
	PUB_LC_PROTOTYPED,
	PUB_LC_PUBLISHED,
	PUB_LC_BLOCKED,
	PUB_LC_DEPRECATED,
	PUB_LC_RETIRED,
	PUB_LC_NSTATES
} publisher_lc_state;

/* "CREATED" / "Created" / "created" -> state; -1 when unknown. */
int publisher_lifecycle_parse(const char *s, publisher_lc_state *out);
const char *publisher_lifecycle_name(publisher_lc_state s);  /* "PUBLISHED" */
const char *publisher_lifecycle_label(publisher_lc_state s); /* "Published" */
/* The target of action from state: 0, or -1 when the action is not allowed
 * there (or unknown). Actions compare case-insensitively. */
int publisher_lifecycle_next(publisher_lc_state from, const char *action, publisher_lc_state *to);
/* Actions allowed from state, in the reference's order; returns how many
 * (at most max are stored). */
size_t publisher_lifecycle_actions(publisher_lc_state from, const char **actions,
				   publisher_lc_state *targets, size_t max);
/* 1 when action is one of the reference's action names. */
int publisher_lifecycle_known_action(const char *action);
void publisher_lifecycle_routes(http_server *s);

/* ---------- other route tables ---------- */

void publisher_revision_routes(http_server *s);
void publisher_document_routes(http_server *s);
void publisher_subscription_routes(http_server *s);
/* Deletes the API's documents (shareddb) inside the caller's shareddb
 * transaction. */
apim_rc publisher_document_delete_all(http_req *r, const char *api_id);
/* Copies the documents of one API to another (shareddb) inside the
 * caller's shareddb transaction. */
apim_rc publisher_document_copy(http_req *r, const char *from_api, const char *to_api);

#endif
