/*
 * store_subscription.h: applications and subscriptions in apimgtdb
 * (migration module "subscriptions").
 *
 *   am_application  (id, name, owner, tier, status, token_type, description,
 *                    attributes JSON, groups JSON, callback_url, created_ms,
 *                    updated_ms); name unique per owner.
 *   am_subscription (id, api_id, application_id, tier, requested_tier,
 *                    status, created_by, created_ms, updated_ms); one per
 *                    API and application.
 *
 * Subscription statuses are the reference's: UNBLOCKED, BLOCKED,
 * PROD_ONLY_BLOCKED, ON_HOLD, REJECTED, TIER_UPDATE_PENDING, DELETE_PENDING.
 * The Publisher reads both tables and blocks/unblocks subscriptions; the
 * Developer Portal owns the other writes.
 */
#ifndef APIM_STORE_SUBSCRIPTION_H
#define APIM_STORE_SUBSCRIPTION_H

#include <stddef.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/error.h"
#include "store/db.h"

typedef struct store_subscription {
	char id[37];
	const char *api_id;
	const char *application_id;
	const char *tier;
	const char *requested_tier;
	const char *status;
	int64_t created_ms;
	int64_t updated_ms;
	/* joined from am_application */
	const char *app_name;
	const char *app_owner;
	const char *app_tier;
	const char *app_description;
} store_subscription;

apim_rc store_subscription_migrate(db *d);

/* Subscriptions of one API (api_id NULL: of every API), newest first,
 * with their application's fields. */
apim_rc store_subscription_list(db *d, arena *pool, const char *api_id, int64_t offset,
				int64_t limit, store_subscription **out, size_t *n, int64_t *total);
apim_rc store_subscription_get(db *d, arena *pool, const char *id, store_subscription *out);
apim_rc store_subscription_set_status(db *d, const char *id, const char *status,
				      int64_t updated_ms);
/* Subscriptions of the API that are not REJECTED. */
apim_rc store_subscription_count_active(db *d, const char *api_id, int64_t *count);
/* Subscriptions and applications that use a subscription-level
 * (level "subscription") or application-level policy. */
apim_rc store_subscription_policy_usage(db *d, const char *level, const char *name,
					int64_t *count);

/* ---- Developer Portal writes (devportal_subscription.c) ---- */

/* Subscriptions filtered by any of api_id, application_id and the
 * application's owner (each NULL: no filter), newest first. */
apim_rc store_subscription_search(db *d, arena *pool, const char *api_id,
				  const char *application_id, const char *owner, int64_t offset,
				  int64_t limit, store_subscription **out, size_t *n,
				  int64_t *total);
/* The subscription of the application to the API; APIM_ENOTFOUND if none. */
apim_rc store_subscription_find(db *d, arena *pool, const char *api_id,
				const char *application_id, store_subscription *out);
/* Inserts s (id, api_id, application_id, tier, requested_tier, status,
 * created_ms, updated_ms). APIM_ECONFLICT when the application is already
 * subscribed to the API. */
apim_rc store_subscription_insert(db *d, const store_subscription *s, const char *created_by);
/* Sets tier and requested_tier; APIM_ENOTFOUND when gone. */
apim_rc store_subscription_set_tier(db *d, const char *id, const char *tier,
				    int64_t updated_ms);
apim_rc store_subscription_delete(db *d, const char *id);

#endif
