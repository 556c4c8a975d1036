/*
 * store_keymanager.h: key managers other than our own (the Resident Key
 * Manager is not stored: it is built in), in apimgtdb table am_key_manager.
 *
 * A row holds uuid, name (unique), issuer (unique: a token's `iss` names
 * one key manager), whether it is enabled, and doc: the key manager's JSON
 * as the Admin API renders it (gateways read issuer, certificates,
 * consumerKeyClaim and scopesClaim from it). Every write runs in its own
 * transaction with db_change_record("key_manager", uuid, action,
 * {"name":..}), so that gateways refetch their data.
 */
#ifndef APIM_STORE_KEYMANAGER_H
#define APIM_STORE_KEYMANAGER_H

#include <stddef.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/error.h"
#include "store/db.h"

typedef struct store_keymanager {
	const char *id;
	const char *name;
	const char *issuer;
	int enabled;
	const char *doc; /* JSON text */
	int64_t created_ms;
	int64_t updated_ms;
} store_keymanager;

/* Creates am_key_manager (db_migrate module "keymanager"). */
apim_rc store_keymanager_migrate(db *d);
/* APIM_ECONFLICT when the name or the issuer is taken. */
apim_rc store_keymanager_create(db *d, const store_keymanager *k);
apim_rc store_keymanager_get(db *d, arena *pool, const char *id, store_keymanager *out);
apim_rc store_keymanager_get_by_name(db *d, arena *pool, const char *name,
				     store_keymanager *out);
/* Ordered by creation; limit < 0: all. */
apim_rc store_keymanager_list(db *d, arena *pool, int64_t offset, int64_t limit,
			      store_keymanager **out, size_t *n, int64_t *total);
/* Replaces issuer, enabled, doc and updated_ms of k->id; APIM_ENOTFOUND
 * when gone, APIM_ECONFLICT when the issuer is another's. */
apim_rc store_keymanager_update(db *d, const store_keymanager *k);
apim_rc store_keymanager_delete(db *d, const char *id);

#endif
