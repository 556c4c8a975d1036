/*
 * publisher.c: the Publisher's migrations, route tables, usage queries for
 * the Admin API, and request helpers shared by the publisher_*.c files.
 */
#include "publisher/publisher.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/auth.h"
#include "common/log.h"
#include "publisher/publisher_internal.h"
#include "store/db.h"
#include "store/store_api.h"
#include "store/store_document.h"
#include "store/store_subscription.h"

apim_rc publisher_migrate(apim_ctx *ctx)
{
	apim_rc rc = store_api_migrate(ctx->apimgt);
	if (rc == APIM_OK)
		rc = store_subscription_migrate(ctx->apimgt);
	if (rc == APIM_OK)
		rc = store_document_migrate(ctx->shared);
	if (rc != APIM_OK)
		log_error("publisher", "migrations failed: %s", apim_strerror(rc));
	return rc;
}

void publisher_routes(http_server *s)
{
	publisher_api_routes(s);
	publisher_openapi_routes(s);
	publisher_lifecycle_routes(s);
	publisher_revision_routes(s);
	publisher_document_routes(s);
	publisher_subscription_routes(s);
}

apim_rc publisher_policy_usage(apim_ctx *ctx, const char *level, const char *name, int64_t *count)
{
	int64_t apis = 0, subs = 0;
	apim_rc rc = store_api_policy_usage(ctx->apimgt, level, name, &apis);
	if (rc == APIM_OK)
		rc = store_subscription_policy_usage(ctx->apimgt, level, name, &subs);
	if (rc == APIM_OK)
		*count = apis + subs;
	return rc;
}

apim_rc publisher_environment_usage(apim_ctx *ctx, const char *name, int64_t *count)
{
	return store_deployment_env_usage(ctx->apimgt, name, count);
}

/* ---------- helpers ---------- */


int publisher_load_api(http_req *r, const char *id, store_api *out)
{
	if (id == NULL || *id == '\0') {
		http_reply_error(r, 400, "The API id is missing");
		return -1;
	}
	apim_rc rc = store_api_get(r->ctx->apimgt, r->pool, id, out);
	if (rc == APIM_ENOTFOUND) {
		http_reply_error(r, 404, "API %s not found", id);
		return -1;
	}
	if (rc != APIM_OK) {
		http_reply_store_error(r, rc, "API");
		return -1;
	}
	return 0;
}

int publisher_require_modify(http_req *r, const store_api *api, int allow_publisher)
{
	const principal *p = r->who;
	if (p == NULL) {
		http_reply_error(r, 401, "Authentication required");
		return -1;
	}
	if (principal_is_admin(p) || principal_has_scope(p, "apim:api_manage"))
		return 0;
	if (allow_publisher && principal_has_scope(p, "apim:api_publish"))
		return 0;
	if (api->provider != NULL && strcmp(api->provider, p->username) == 0)
		return 0;
	http_reply_error(r, 403, "User %s is not allowed to modify API %s %s of provider %s: only "
				 "its provider, publishers and admins may",
			 p->username, api->name, api->version, api->provider);
	return -1;
}

int publisher_query_bool(http_req *r, const char *name, int dflt, int *out)
{
	const char *v = http_query(r, name);
	*out = dflt;
	if (v == NULL || *v == '\0')
		return 0;
	if (strcasecmp(v, "true") == 0) {
		*out = 1;
		return 0;
	}
	if (strcasecmp(v, "false") == 0) {
		*out = 0;
		return 0;
	}
	http_reply_error(r, 400, "Query parameter '%s' must be true or false, not '%s'", name, v);
	return -1;
}

json_t *publisher_time_json(int64_t ms)
{
	char buf[24];
	snprintf(buf, sizeof(buf), "%" PRId64, ms);
	return json_string(buf);
}

json_t *publisher_json_parse(const char *text)
{
	if (text == NULL)
		return NULL;
	return json_loads(text, JSON_DECODE_ANY, NULL);
}

char *publisher_json_text(arena *pool, const json_t *v)
{
	char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	if (s == NULL)
		return arena_strdup(pool, "null");
	char *copy = arena_strdup(pool, s);
	free(s);
	return copy;
}
