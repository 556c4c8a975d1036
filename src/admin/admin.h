/*
 * admin.h: Admin v4 REST API (/api/am/admin/v4): rate-limit policies of
 * every level, deny policies (blocking conditions) and gateway
 * environments.
 */
#ifndef APIM_ADMIN_H
#define APIM_ADMIN_H

#include "common/ctx.h"
#include "common/error.h"
#include "http/http.h"

/* Applies the Admin migrations to apimgtdb and creates the reference's
 * default tiers and the "Default" gateway environment when missing. */
apim_rc admin_migrate(apim_ctx *ctx);
void admin_routes(http_server *s);

/* *exists = 1 when a policy of level ("application", "subscription",
 * "advanced", "custom") named name exists. */
apim_rc admin_policy_exists(apim_ctx *ctx, const char *level, const char *name, int *exists);
/* *exists = 1 when a gateway environment of that name exists. */
apim_rc admin_environment_exists(apim_ctx *ctx, const char *name, int *exists);

#endif
