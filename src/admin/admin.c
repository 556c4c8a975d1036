/*
 * admin.c: the Admin v4 module: migrations and first-start seeds, the
 * route table with its scopes, and helpers shared by the handlers.
 */
#include "admin/admin.h"

#include <string.h>

#include "admin/admin_internal.h"
#include "common/log.h"
#include "store/db.h"
#include "store/store_keymanager.h"

/*
 * apimgtdb tables of the Admin API. Documents are JSON text as the API
 * renders them, so that the Traffic Manager and the gateways read one shape.
 * am_admin_seed remembers which first-start seeds ran, so that a default
 * the administrator deleted is not created again at the next start.
 */
static const char *const admin_steps[] = {
	"CREATE TABLE am_policy ("
	" uuid TEXT PRIMARY KEY,"
	" level TEXT NOT NULL,"
	" name TEXT NOT NULL,"
	" doc TEXT NOT NULL,"
	" created_ms BIGINT NOT NULL,"
	" updated_ms BIGINT NOT NULL,"
	" UNIQUE (level, name));"
	"CREATE TABLE am_block_condition ("
	" uuid TEXT PRIMARY KEY,"
	" type TEXT NOT NULL,"
	" value TEXT NOT NULL,"
	" value_key TEXT NOT NULL,"
	" enabled INTEGER NOT NULL,"
	" created_ms BIGINT NOT NULL,"
	" updated_ms BIGINT NOT NULL,"
	" UNIQUE (type, value_key));"
	"CREATE TABLE am_gateway_environment ("
	" uuid TEXT PRIMARY KEY,"
	" name TEXT NOT NULL UNIQUE,"
	" read_only INTEGER NOT NULL,"
	" doc TEXT NOT NULL,"
	" created_ms BIGINT NOT NULL,"
	" updated_ms BIGINT NOT NULL);"
	"CREATE TABLE am_admin_seed ("
	" name TEXT PRIMARY KEY,"
	" applied_ms BIGINT NOT NULL);",
};

apim_rc admin_migrate(apim_ctx *ctx)
{
	if (ctx->apimgt == NULL)
		return APIM_OK;
	/* the seeds below record changes: the change tables must exist (the
	 * call is idempotent, whoever else makes it) */
	apim_rc rc = db_change_migrate(ctx->apimgt);
	if (rc == APIM_OK)
		rc = db_migrate(ctx->apimgt, "admin", admin_steps,
				sizeof(admin_steps) / sizeof(admin_steps[0]));
	if (rc == APIM_OK)
		rc = store_keymanager_migrate(ctx->apimgt);
	if (rc != APIM_OK) {
		log_error("admin", "apimgtdb migrations failed: %s", apim_strerror(rc));
		return rc;
	}
	rc = admin_policy_seed(ctx);
	if (rc != APIM_OK) {
		log_error("admin", "creating the default rate-limit policies failed: %s",
			  apim_strerror(rc));
		return rc;
	}
	rc = admin_environment_seed(ctx);
	if (rc != APIM_OK)
		log_error("admin", "creating the Default gateway environment failed: %s",
			  apim_strerror(rc));
	return rc;
}

#define TIER_VIEW "apim:tier_view apim:tier_manage apim:admin apim:admin_tier_view"
#define TIER_MANAGE "apim:tier_manage apim:admin"
#define BL_VIEW "apim:bl_view apim:bl_manage apim:admin"
#define BL_MANAGE "apim:bl_manage apim:admin"
#define ENV_READ "apim:environment_read apim:environment_manage apim:admin"
#define ENV_MANAGE "apim:environment_manage apim:admin"
#define KM_MANAGE "apim:keymanagers_manage apim:admin_operations apim:admin"

#define POLICY_ROUTES(level)                                                               \
	{"GET", ADMIN_BASE "/throttling/policies/" level, admin_policy_list, TIER_VIEW, 0},  \
	{"POST", ADMIN_BASE "/throttling/policies/" level, admin_policy_create, TIER_MANAGE, \
	 0},                                                                                 \
	{"GET", ADMIN_BASE "/throttling/policies/" level "/{policyId}", admin_policy_get,    \
	 TIER_VIEW, 0},                                                                      \
	{"PUT", ADMIN_BASE "/throttling/policies/" level "/{policyId}", admin_policy_update, \
	 TIER_MANAGE, 0},                                                                    \
	{"DELETE", ADMIN_BASE "/throttling/policies/" level "/{policyId}",                   \
	 admin_policy_delete, TIER_MANAGE, 0}

static const http_route admin_route_table[] = {
	{"GET", ADMIN_BASE "/throttling/policies/search", admin_policy_search, TIER_VIEW, 0},
	POLICY_ROUTES("application"),
	POLICY_ROUTES("subscription"),
	POLICY_ROUTES("advanced"),
	POLICY_ROUTES("custom"),
	{"GET", ADMIN_BASE "/throttling/deny-policies", admin_deny_list, BL_VIEW, 0},
	{"POST", ADMIN_BASE "/throttling/deny-policies", admin_deny_create, BL_MANAGE, 0},
	{"GET", ADMIN_BASE "/throttling/deny-policy/{conditionId}", admin_deny_get, BL_VIEW, 0},
	{"PATCH", ADMIN_BASE "/throttling/deny-policy/{conditionId}", admin_deny_patch, BL_MANAGE,
	 0},
	{"DELETE", ADMIN_BASE "/throttling/deny-policy/{conditionId}", admin_deny_delete,
	 BL_MANAGE, 0},
	{"GET", ADMIN_BASE "/environments", admin_environment_list, ENV_READ, 0},
	{"POST", ADMIN_BASE "/environments", admin_environment_create, ENV_MANAGE, 0},
	{"GET", ADMIN_BASE "/environments/{environmentId}", admin_environment_get, ENV_READ, 0},
	{"PUT", ADMIN_BASE "/environments/{environmentId}", admin_environment_update, ENV_MANAGE,
	 0},
	{"DELETE", ADMIN_BASE "/environments/{environmentId}", admin_environment_delete,
	 ENV_MANAGE, 0},
	{"GET", ADMIN_BASE "/key-managers", admin_keymanager_list, KM_MANAGE, 0},
	{"POST", ADMIN_BASE "/key-managers", admin_keymanager_create, KM_MANAGE, 0},
	{"GET", ADMIN_BASE "/key-managers/{keyManagerId}", admin_keymanager_get, KM_MANAGE, 0},
	{"PUT", ADMIN_BASE "/key-managers/{keyManagerId}", admin_keymanager_update, KM_MANAGE, 0},
	{"DELETE", ADMIN_BASE "/key-managers/{keyManagerId}", admin_keymanager_delete, KM_MANAGE,
	 0},
};

void admin_routes(http_server *s)
{
	http_server_routes(s, admin_route_table,
			   sizeof(admin_route_table) / sizeof(admin_route_table[0]));
}


int admin_paging(http_req *r, int64_t *limit, int64_t *offset)
{
	if (http_paging(r, limit, offset) != 0)
		return -1;
	if (http_query(r, "limit") == NULL)
		*limit = 1000;
	return 0;
}

json_t *admin_doc_load(const char *text)
{
	json_t *v = json_loads(text ? text : "", 0, NULL);
	if (v != NULL && !json_is_object(v)) {
		json_decref(v);
		v = NULL;
	}
	return v;
}
