/*
 * publisher.h: Publisher v4 REST API (/api/am/publisher/v4): APIs,
 * OpenAPI, lifecycle, revisions, deployments, documents, scopes and the
 * API's subscriptions.
 */
#ifndef APIM_PUBLISHER_H
#define APIM_PUBLISHER_H

#include <stdint.h>

#include "common/ctx.h"
#include "common/error.h"
#include "http/http.h"

/* Applies the Publisher's migrations to apimgtdb and shareddb. */
apim_rc publisher_migrate(apim_ctx *ctx);
void publisher_routes(http_server *s);

/*
 * How many APIs, operations, subscriptions or applications use the rate-limit
 * policy (level is "application", "subscription", "advanced" or "custom"),
 * so that the Admin API refuses to delete a policy in use.
 */
apim_rc publisher_policy_usage(apim_ctx *ctx, const char *level, const char *name,
			       int64_t *count);
/* How many deployments name the gateway environment. */
apim_rc publisher_environment_usage(apim_ctx *ctx, const char *name, int64_t *count);

#endif
