#include "store/store_block.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#define BLOCK_COLS "uuid, type, value, value_key, enabled, created_ms, updated_ms"

static void row_to_block(arena *pool, const db_res *r, size_t i, store_block *b)
{
	b->id = arena_strdup(pool, db_res_get(r, i, 0));
	b->type = arena_strdup(pool, db_res_get(r, i, 1));
	b->value = arena_strdup(pool, db_res_get(r, i, 2));
	b->value_key = arena_strdup(pool, db_res_get(r, i, 3));
	b->enabled = db_res_int(r, i, 4) != 0;
	b->created_ms = db_res_int(r, i, 5);
	b->updated_ms = db_res_int(r, i, 6);
}

/* {conditionType, conditionValue, conditionStatus} as malloc'ed JSON text. */
static char *change_payload(const char *type, const char *value, int enabled)
{
	json_t *v = json_loads(value, JSON_DECODE_ANY, NULL);
	if (v == NULL)
		v = json_string(value);
	json_t *o = json_pack("{s:s, s:o, s:b}", "conditionType", type, "conditionValue", v,
			      "conditionStatus", enabled);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return s;
}

static apim_rc record(db *d, const char *id, const char *action, const char *type,
		      const char *value, int enabled)
{
	char *payload = change_payload(type, value, enabled);
	if (payload == NULL)
		return APIM_ENOMEM;
	apim_rc rc = db_change_record(d, "block", id, action, payload, NULL);
	free(payload);
	return rc;
}

apim_rc store_block_create(db *d, const store_block *b)
{
	char created[24], updated[24];
	snprintf(created, sizeof(created), "%" PRId64, b->created_ms);
	snprintf(updated, sizeof(updated), "%" PRId64, b->updated_ms);
	apim_rc rc = db_begin(d);
	if (rc != APIM_OK)
		return rc;
	rc = db_exec(d, NULL,
		     "INSERT INTO am_block_condition (" BLOCK_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?)",
		     DB_ARGS(b->id, b->type, b->value, b->value_key, b->enabled ? "1" : "0",
			     created, updated));
	if (rc != APIM_OK)
		goto out;
	rc = record(d, b->id, "create", b->type, b->value, b->enabled);
	if (rc != APIM_OK)
		goto out;
	rc = db_commit(d);
out:
	if (rc != APIM_OK)
		db_rollback(d);
	return rc;
}

apim_rc store_block_get(db *d, arena *pool, const char *id, store_block *out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, "SELECT " BLOCK_COLS " FROM am_block_condition WHERE uuid = ?",
			     DB_ARGS(id));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(r) == 0)
		rc = APIM_ENOTFOUND;
	else
		row_to_block(pool, r, 0, out);
	db_res_free(r);
	return rc;
}

#define BLOCK_FILTER                                                                       \
	" WHERE (CAST(? AS TEXT) IS NULL OR type = ?)"                                     \
	" AND (CAST(? AS TEXT) IS NULL OR value_key = ?)"

apim_rc store_block_list(db *d, arena *pool, const char *type, const char *value_key,
			 int64_t offset, int64_t limit, store_block **out, size_t *n,
			 int64_t *total)
{
	db_res *r = NULL;
	char off[24], lim[24];
	snprintf(off, sizeof(off), "%" PRId64, offset);
	snprintf(lim, sizeof(lim), "%" PRId64, limit);
	apim_rc rc = db_exec(d, &r, "SELECT COUNT(*) FROM am_block_condition" BLOCK_FILTER,
			     DB_ARGS(type, type, value_key, value_key));
	if (rc != APIM_OK)
		return rc;
	*total = db_res_int(r, 0, 0);
	db_res_free(r);
	r = NULL;
	rc = db_exec(d, &r,
		     "SELECT " BLOCK_COLS " FROM am_block_condition" BLOCK_FILTER
		     " ORDER BY created_ms, uuid LIMIT ? OFFSET ?",
		     DB_ARGS(type, type, value_key, value_key, lim, off));
	if (rc != APIM_OK)
		return rc;
	*n = db_res_rows(r);
	*out = arena_alloc(pool, (*n ? *n : 1) * sizeof(**out));
	for (size_t i = 0; i < *n; i++)
		row_to_block(pool, r, i, &(*out)[i]);
	db_res_free(r);
	return APIM_OK;
}

apim_rc store_block_set_enabled(db *d, const char *id, int enabled, int64_t now_ms)
{
	db_res *r = NULL;
	char now[24];
	snprintf(now, sizeof(now), "%" PRId64, now_ms);
	apim_rc rc = db_begin(d);
	if (rc != APIM_OK)
		return rc;
	rc = db_exec(d, &r, "SELECT type, value, enabled FROM am_block_condition WHERE uuid = ?",
		     DB_ARGS(id));
	if (rc != APIM_OK)
		goto out;
	if (db_res_rows(r) == 0) {
		rc = APIM_ENOTFOUND;
		goto out;
	}
	if ((db_res_int(r, 0, 2) != 0) == (enabled != 0)) {
		db_rollback(d); /* nothing changes: no change record either */
		db_res_free(r);
		return APIM_OK;
	}
	rc = db_exec(d, NULL, "UPDATE am_block_condition SET enabled = ?, updated_ms = ? WHERE uuid = ?",
		     DB_ARGS(enabled ? "1" : "0", now, id));
	if (rc != APIM_OK)
		goto out;
	rc = record(d, id, "update", db_res_get(r, 0, 0), db_res_get(r, 0, 1), enabled);
	if (rc != APIM_OK)
		goto out;
	rc = db_commit(d);
out:
	db_res_free(r);
	if (rc != APIM_OK)
		db_rollback(d);
	return rc;
}

apim_rc store_block_delete(db *d, const char *id)
{
	db_res *r = NULL;
	apim_rc rc = db_begin(d);
	if (rc != APIM_OK)
		return rc;
	rc = db_exec(d, &r, "SELECT type, value, enabled FROM am_block_condition WHERE uuid = ?",
		     DB_ARGS(id));
	if (rc != APIM_OK)
		goto out;
	if (db_res_rows(r) == 0) {
		rc = APIM_ENOTFOUND;
		goto out;
	}
	rc = db_exec(d, NULL, "DELETE FROM am_block_condition WHERE uuid = ?", DB_ARGS(id));
	if (rc != APIM_OK)
		goto out;
	rc = record(d, id, "delete", db_res_get(r, 0, 0), db_res_get(r, 0, 1),
		    db_res_int(r, 0, 2) != 0);
	if (rc != APIM_OK)
		goto out;
	rc = db_commit(d);
out:
	db_res_free(r);
	if (rc != APIM_OK)
		db_rollback(d);
	return rc;
}
