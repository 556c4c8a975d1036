/*
 * admin_internal.h: what the Admin module's files share (handlers for the
 * route table in admin.c, first-start seeds, reply helpers). Not for other
 * modules: they use admin.h.
 */
#ifndef APIM_ADMIN_INTERNAL_H
#define APIM_ADMIN_INTERNAL_H

#include <jansson.h>

#include "common/ctx.h"
#include "common/error.h"
#include "http/http.h"

#define ADMIN_BASE "/api/am/admin/v4"

/* admin_policy.c: /throttling/policies/{level}[/{policyId}], /search */
void admin_policy_list(http_req *r);
void admin_policy_create(http_req *r);
void admin_policy_get(http_req *r);
void admin_policy_update(http_req *r);
void admin_policy_delete(http_req *r);
void admin_policy_search(http_req *r);
/* Creates the reference's default tiers once per database. */
apim_rc admin_policy_seed(apim_ctx *ctx);

/* admin_deny.c: /throttling/deny-policies, /throttling/deny-policy/{conditionId} */
void admin_deny_list(http_req *r);
void admin_deny_create(http_req *r);
void admin_deny_get(http_req *r);
void admin_deny_patch(http_req *r);
void admin_deny_delete(http_req *r);

/* admin_environment.c: /environments[/{environmentId}] */
void admin_environment_list(http_req *r);
void admin_environment_create(http_req *r);
void admin_environment_get(http_req *r);
void admin_environment_update(http_req *r);
void admin_environment_delete(http_req *r);
/* Creates the read-only "Default" environment once per database. */
apim_rc admin_environment_seed(apim_ctx *ctx);

/* admin_keymanagers.c: /key-managers[/{keyManagerId}] */
void admin_keymanager_list(http_req *r);
void admin_keymanager_create(http_req *r);
void admin_keymanager_get(http_req *r);
void admin_keymanager_update(http_req *r);
void admin_keymanager_delete(http_req *r);

/* limit/offset for a list: http_paging, except that without a `limit`
 * parameter the whole list is returned (the reference's Admin lists are not
 * paged, and scripts written for it expect every item). -1 when answered. */
int admin_paging(http_req *r, int64_t *limit, int64_t *offset);

/* Parses stored JSON text (an object); NULL only when the store is corrupt. */
json_t *admin_doc_load(const char *text);

#endif
