/*
 * store_policy.h: rate-limit policies in apimgtdb (table am_policy, owned
 * by the Admin module's migrations).
 *
 * One row per policy: uuid, level ("application", "subscription",
 * "advanced", "custom"), name (unique per level), doc (the policy's JSON as
 * the Admin API renders it; the Traffic Manager reads it), created_ms,
 * updated_ms. Every write runs in its own transaction together with
 * db_change_record("policy", uuid, action, {"level":..,"name":..}).
 */
#ifndef APIM_STORE_POLICY_H
#define APIM_STORE_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/error.h"
#include "store/db.h"

typedef struct store_policy {
	const char *id;
	const char *level;
	const char *name;
	const char *doc; /* JSON text */
	int64_t created_ms;
	int64_t updated_ms;
} store_policy;

/* Runs inside a store write's transaction before it changes anything (e.g.
 * an in-use check); anything but APIM_OK aborts the write and is returned. */
typedef apim_rc (*store_guard)(void *arg);

/* Inserts p (its id, created_ms and updated_ms are taken as given).
 * APIM_ECONFLICT when the level already has a policy of that name. */
apim_rc store_policy_create(db *d, const store_policy *p);
/* Inserts the policies, all or none, once per database: when the marker
 * (a row in am_admin_seed) already exists nothing happens. */
apim_rc store_policy_seed(db *d, const char *marker, const store_policy *ps, size_t n);
/* By level and id, or level and name. APIM_ENOTFOUND when missing. Strings
 * of *out are from pool. */
apim_rc store_policy_get(db *d, arena *pool, const char *level, const char *id,
			 store_policy *out);
apim_rc store_policy_get_by_name(db *d, arena *pool, const char *level, const char *name,
				 store_policy *out);
/* The level's policies (level NULL: every level) ordered by level and
 * creation; *out from pool. */
apim_rc store_policy_list(db *d, arena *pool, const char *level, int64_t offset, int64_t limit,
			  store_policy **out, size_t *n, int64_t *total);
/* Replaces doc and updated_ms of (p->level, p->id); APIM_ENOTFOUND when gone. */
apim_rc store_policy_update(db *d, const store_policy *p);
/* Deletes (level, id) after guard(arg) allowed it; APIM_ENOTFOUND when gone. */
apim_rc store_policy_delete(db *d, const char *level, const char *id, store_guard guard,
			    void *arg);
apim_rc store_policy_exists(db *d, const char *level, const char *name, int *exists);

/* Inserts the seed marker inside the caller's transaction: *fresh = 1 when
 * it was not there yet (so the caller seeds), 0 when it was. Shared by the
 * Admin seeds (policies, the Default environment). */
apim_rc store_seed_mark(db *d, const char *marker, int *fresh);

#endif
