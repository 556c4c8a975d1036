#include "store/store_environment.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#define ENV_COLS "uuid, name, read_only, doc, created_ms, updated_ms"

static void row_to_env(arena *pool, const db_res *r, size_t i, store_environment *e)
{
	e->id = arena_strdup(pool, db_res_get(r, i, 0));
	e->name = arena_strdup(pool, db_res_get(r, i, 1));
	e->read_only = db_res_int(r, i, 2) != 0;
	e->doc = arena_strdup(pool, db_res_get(r, i, 3) ? db_res_get(r, i, 3) : "{}");
	e->created_ms = db_res_int(r, i, 4);
	e->updated_ms = db_res_int(r, i, 5);
}

static apim_rc record(db *d, const char *id, const char *action, const char *name)
{
	json_t *o = json_pack("{s:s}", "name", name);
	char *payload = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (payload == NULL)
		return APIM_ENOMEM;
	apim_rc rc = db_change_record(d, "environment", id, action, payload, NULL);
	free(payload);
	return rc;
}

static apim_rc insert_one(db *d, const store_environment *e)
{
	char created[24], updated[24];
	snprintf(created, sizeof(created), "%" PRId64, e->created_ms);
	snprintf(updated, sizeof(updated), "%" PRId64, e->updated_ms);
	apim_rc rc = db_exec(d, NULL,
			     "INSERT INTO am_gateway_environment (" ENV_COLS ") VALUES (?, ?, ?, ?, ?, ?)",
			     DB_ARGS(e->id, e->name, e->read_only ? "1" : "0", e->doc, created,
				     updated));
	if (rc != APIM_OK)
		return rc;
	return record(d, e->id, "create", e->name);
}

apim_rc store_environment_create(db *d, const store_environment *e)
{
	apim_rc rc = db_begin(d);
	if (rc != APIM_OK)
		return rc;
	rc = insert_one(d, e);
	if (rc != APIM_OK)
		goto out;
	rc = db_commit(d);
out:
	if (rc != APIM_OK)
		db_rollback(d);
	return rc;
}

apim_rc store_environment_seed(db *d, const char *marker, const store_environment *e)
{
	int fresh = 0;
	apim_rc rc = db_begin(d);
	if (rc != APIM_OK)
		return rc;
	rc = store_seed_mark(d, marker, &fresh);
	if (rc != APIM_OK || !fresh)
		goto out;
	/* a user-made environment of that name stays as it is */
	db_res *r = NULL;
	rc = db_exec(d, &r, "SELECT 1 FROM am_gateway_environment WHERE name = ?", DB_ARGS(e->name));
	int taken = rc == APIM_OK && db_res_rows(r) > 0;
	db_res_free(r);
	if (rc == APIM_OK && !taken)
		rc = insert_one(d, e);
	if (rc != APIM_OK)
		goto out;
	return db_commit(d);
out:
	db_rollback(d);
	return rc;
}

static apim_rc get_one(db *d, arena *pool, const char *sql, const char *a,
		       store_environment *out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, sql, DB_ARGS(a));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(r) == 0)
		rc = APIM_ENOTFOUND;
	else
		row_to_env(pool, r, 0, out);
	db_res_free(r);
	return rc;
}

apim_rc store_environment_get(db *d, arena *pool, const char *id, store_environment *out)
{
	return get_one(d, pool, "SELECT " ENV_COLS " FROM am_gateway_environment WHERE uuid = ?", id,
		       out);
}

apim_rc store_environment_get_by_name(db *d, arena *pool, const char *name,
				      store_environment *out)
{
	return get_one(d, pool, "SELECT " ENV_COLS " FROM am_gateway_environment WHERE name = ?",
		       name, out);
}

apim_rc store_environment_list(db *d, arena *pool, int64_t offset, int64_t limit,
			       store_environment **out, size_t *n, int64_t *total)
{
	db_res *r = NULL;
	char off[24], lim[24];
	snprintf(off, sizeof(off), "%" PRId64, offset);
	snprintf(lim, sizeof(lim), "%" PRId64, limit);
	apim_rc rc = db_exec(d, &r, "SELECT COUNT(*) FROM am_gateway_environment", DB_NOARGS);
	if (rc != APIM_OK)
		return rc;
	*total = db_res_int(r, 0, 0);
	db_res_free(r);
	r = NULL;
	rc = db_exec(d, &r,
		     "SELECT " ENV_COLS " FROM am_gateway_environment "
		     "ORDER BY created_ms, name LIMIT ? OFFSET ?",
		     DB_ARGS(lim, off));
	if (rc != APIM_OK)
		return rc;
	*n = db_res_rows(r);
	*out = arena_alloc(pool, (*n ? *n : 1) * sizeof(**out));
	for (size_t i = 0; i < *n; i++)
		row_to_env(pool, r, i, &(*out)[i]);
	db_res_free(r);
	return APIM_OK;
}

apim_rc store_environment_update(db *d, const store_environment *e)
{
	db_res *r = NULL;
	char updated[24];
	snprintf(updated, sizeof(updated), "%" PRId64, e->updated_ms);
	apim_rc rc = db_begin(d);
	if (rc != APIM_OK)
		return rc;
	rc = db_exec(d, &r, "UPDATE am_gateway_environment SET doc = ?, updated_ms = ? WHERE uuid = ?",
		     DB_ARGS(e->doc, updated, e->id));
	if (rc != APIM_OK)
		goto out;
	if (db_res_changes(r) == 0) {
		rc = APIM_ENOTFOUND;
		goto out;
	}
	rc = record(d, e->id, "update", e->name);
	if (rc != APIM_OK)
		goto out;
	rc = db_commit(d);
out:
	db_res_free(r);
	if (rc != APIM_OK)
		db_rollback(d);
	return rc;
}

apim_rc store_environment_delete(db *d, const char *id, store_guard guard, void *arg)
{
	db_res *r = NULL;
	apim_rc rc = db_begin(d);
	if (rc != APIM_OK)
		return rc;
	rc = db_exec(d, &r, "SELECT name FROM am_gateway_environment WHERE uuid = ?", DB_ARGS(id));
	if (rc != APIM_OK)
		goto out;
	if (db_res_rows(r) == 0) {
		rc = APIM_ENOTFOUND;
		goto out;
	}
	if (guard != NULL) {
		rc = guard(arg);
		if (rc != APIM_OK)
			goto out;
	}
	rc = db_exec(d, NULL, "DELETE FROM am_gateway_environment WHERE uuid = ?", DB_ARGS(id));
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
