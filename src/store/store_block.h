/*
 * store_block.h: blocking conditions ("deny policies") in apimgtdb (table
 * am_block_condition, owned by the Admin module's migrations).
 *
 * A row holds the condition type (API, APPLICATION, IP, IPRANGE, USER), its
 * value as the Admin API renders it (JSON text: a string, or an object for
 * IP and IPRANGE), a canonical key of the value that makes (type, key)
 * unique, and whether it is enabled. Every write runs in its own
 * transaction with db_change_record("block", uuid, action, {conditionType,
 * conditionValue, conditionStatus}).
 */
#ifndef APIM_STORE_BLOCK_H
#define APIM_STORE_BLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/error.h"
#include "store/db.h"

typedef struct store_block {
	const char *id;
	const char *type;
	const char *value;     /* JSON text */
	const char *value_key; /* canonical value: duplicates have the same key */
	int enabled;
	int64_t created_ms;
	int64_t updated_ms;
} store_block;

/* APIM_ECONFLICT when (type, value_key) exists already. */
apim_rc store_block_create(db *d, const store_block *b);
/* APIM_ENOTFOUND when missing; strings from pool. */
apim_rc store_block_get(db *d, arena *pool, const char *id, store_block *out);
/* Filtered by type and/or value key (NULL: any), oldest first. */
apim_rc store_block_list(db *d, arena *pool, const char *type, const char *value_key,
			 int64_t offset, int64_t limit, store_block **out, size_t *n,
			 int64_t *total);
/* Enables or disables; APIM_ENOTFOUND when missing. A change record is
 * written only when the status really changes. */
apim_rc store_block_set_enabled(db *d, const char *id, int enabled, int64_t now_ms);
apim_rc store_block_delete(db *d, const char *id);

#endif
