/*
 * store_environment.h: gateway environments in apimgtdb (table
 * am_gateway_environment, owned by the Admin module's migrations).
 *
 * A row holds uuid, name (unique), whether it is read-only (defined by the
 * server, like "Default"), and doc: the environment's JSON as the Admin API
 * renders it (vhosts included; gateways read it). Every write runs in its
 * own transaction with db_change_record("environment", uuid, action,
 * {"name":..}).
 */
#ifndef APIM_STORE_ENVIRONMENT_H
#define APIM_STORE_ENVIRONMENT_H

#include <stddef.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/error.h"
#include "store/db.h"
#include "store/store_policy.h" /* store_guard, store_seed_mark */

typedef struct store_environment {
	const char *id;
	const char *name;
	int read_only;
	const char *doc; /* JSON text */
	int64_t created_ms;
	int64_t updated_ms;
} store_environment;

/* APIM_ECONFLICT when the name is taken. */
apim_rc store_environment_create(db *d, const store_environment *e);
/* Inserts e once per database (marker row in am_admin_seed); nothing when
 * the marker exists or an environment of that name exists already. */
apim_rc store_environment_seed(db *d, const char *marker, const store_environment *e);
apim_rc store_environment_get(db *d, arena *pool, const char *id, store_environment *out);
apim_rc store_environment_get_by_name(db *d, arena *pool, const char *name,
				      store_environment *out);
/* Ordered by creation (so "Default" comes first). */
apim_rc store_environment_list(db *d, arena *pool, int64_t offset, int64_t limit,
			       store_environment **out, size_t *n, int64_t *total);
/* Replaces doc and updated_ms of e->id; APIM_ENOTFOUND when gone. */
apim_rc store_environment_update(db *d, const store_environment *e);
/* Deletes after guard(arg) allowed it inside the transaction. */
apim_rc store_environment_delete(db *d, const char *id, store_guard guard, void *arg);

#endif
