#include "store/store_keymanager.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#define KM_COLS "uuid, name, issuer, enabled, doc, created_ms, updated_ms"

static const char *const km_steps[] = {
	"CREATE TABLE am_key_manager ("
	" uuid TEXT PRIMARY KEY,"
	" name TEXT NOT NULL UNIQUE,"
	" issuer TEXT NOT NULL UNIQUE,"
	" enabled INTEGER NOT NULL,"
	" doc TEXT NOT NULL,"
	" created_ms BIGINT NOT NULL,"
	" updated_ms BIGINT NOT NULL);",
};

apim_rc store_keymanager_migrate(db *d)
{
	return db_migrate(d, "keymanager", km_steps, sizeof(km_steps) / sizeof(km_steps[0]));
}

static void row_to_km(arena *pool, const db_res *r, size_t i, store_keymanager *k)
{
	k->id = arena_strdup(pool, db_res_get(r, i, 0));
	k->name = arena_strdup(pool, db_res_get(r, i, 1));
	k->issuer = arena_strdup(pool, db_res_get(r, i, 2));
	k->enabled = db_res_int(r, i, 3) != 0;
	k->doc = arena_strdup(pool, db_res_get(r, i, 4) ? db_res_get(r, i, 4) : "{}");
	k->created_ms = db_res_int(r, i, 5);
	k->updated_ms = db_res_int(r, i, 6);
}

static apim_rc record(db *d, const char *id, const char *action, const char *name)
{
	json_t *o = json_pack("{s:s}", "name", name);
	char *payload = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (payload == NULL)
		return APIM_ENOMEM;
	apim_rc rc = db_change_record(d, "key_manager", id, action, payload, NULL);
	free(payload);
	return rc;
}

apim_rc store_keymanager_create(db *d, const store_keymanager *k)
{
	char created[24], updated[24];
	snprintf(created, sizeof(created), "%" PRId64, k->created_ms);
	snprintf(updated, sizeof(updated), "%" PRId64, k->updated_ms);
	apim_rc rc = db_begin(d);
	if (rc != APIM_OK)
		return rc;
	rc = db_exec(d, NULL, "INSERT INTO am_key_manager (" KM_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?)",
		     DB_ARGS(k->id, k->name, k->issuer, k->enabled ? "1" : "0", k->doc, created,
			     updated));
	if (rc != APIM_OK)
		goto out;
	rc = record(d, k->id, "create", k->name);
	if (rc != APIM_OK)
		goto out;
	rc = db_commit(d);
out:
	if (rc != APIM_OK)
		db_rollback(d);
	return rc;
}

static apim_rc get_one(db *d, arena *pool, const char *sql, const char *a, store_keymanager *out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, sql, DB_ARGS(a));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(r) == 0)
		rc = APIM_ENOTFOUND;
	else
		row_to_km(pool, r, 0, out);
	db_res_free(r);
	return rc;
}

apim_rc store_keymanager_get(db *d, arena *pool, const char *id, store_keymanager *out)
{
	return get_one(d, pool, "SELECT " KM_COLS " FROM am_key_manager WHERE uuid = ?", id, out);
}

apim_rc store_keymanager_get_by_name(db *d, arena *pool, const char *name,
				     store_keymanager *out)
{
	return get_one(d, pool, "SELECT " KM_COLS " FROM am_key_manager WHERE name = ?", name, out);
}

apim_rc store_keymanager_list(db *d, arena *pool, int64_t offset, int64_t limit,
			      store_keymanager **out, size_t *n, int64_t *total)
{
	db_res *r = NULL;
	char off[24], lim[24];
	snprintf(off, sizeof(off), "%" PRId64, offset);
	snprintf(lim, sizeof(lim), "%" PRId64, limit < 0 ? INT64_MAX : limit);
	apim_rc rc = db_exec(d, &r, "SELECT COUNT(*) FROM am_key_manager", DB_NOARGS);
	if (rc != APIM_OK)
		return rc;
	*total = db_res_int(r, 0, 0);
	db_res_free(r);
	r = NULL;
	rc = db_exec(d, &r,
		     "SELECT " KM_COLS " FROM am_key_manager "
		     "ORDER BY created_ms, name LIMIT ? OFFSET ?",
		     DB_ARGS(lim, off));
	if (rc != APIM_OK)
		return rc;
	*n = db_res_rows(r);
	*out = arena_alloc(pool, (*n ? *n : 1) * sizeof(**out));
	for (size_t i = 0; i < *n; i++)
		row_to_km(pool, r, i, &(*out)[i]);
	db_res_free(r);
	return APIM_OK;
}

apim_rc store_keymanager_update(db *d, const store_keymanager *k)
{
	db_res *r = NULL;
	char updated[24];
	snprintf(updated, sizeof(updated), "%" PRId64, k->updated_ms);
	apim_rc rc = db_begin(d);
	if (rc != APIM_OK)
		return rc;
	rc = db_exec(d, &r,
		     "UPDATE am_key_manager SET issuer = ?, enabled = ?, doc = ?, updated_ms = ? "
		     "WHERE uuid = ?",
		     DB_ARGS(k->issuer, k->enabled ? "1" : "0", k->doc, updated, k->id));
	if (rc != APIM_OK)
		goto out;
	if (db_res_changes(r) == 0) {
		rc = APIM_ENOTFOUND;
		goto out;
	}
	rc = record(d, k->id, "update", k->name);
	if (rc != APIM_OK)
		goto out;
	rc = db_commit(d);
out:
	db_res_free(r);
	if (rc != APIM_OK)
		db_rollback(d);
	return rc;
}

apim_rc store_keymanager_delete(db *d, const char *id)
{
	db_res *r = NULL;
	apim_rc rc = db_begin(d);
	if (rc != APIM_OK)
		return rc;
	rc = db_exec(d, &r, "SELECT name FROM am_key_manager WHERE uuid = ?", DB_ARGS(id));
	if (rc != APIM_OK)
		goto out;
	if (db_res_rows(r) == 0) {
		rc = APIM_ENOTFOUND;
		goto out;
	}
	rc = db_exec(d, NULL, "DELETE FROM am_key_manager WHERE uuid = ?", DB_ARGS(id));
	if (rc != APIM_OK)
		goto out;
	rc = record(d, id, "delete", db_res_get(r, 0, 0));
	if (rc != APIM_OK)
		goto out;
	rc = db_commit(d);
out:
	db_res_free(r);
	if (rc != APIM_OK)
		db_rollback(d);
	return rc;
}
