#include "store/store_policy.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/util.h"

#define POLICY_COLS "uuid, level, name, doc, created_ms, updated_ms"

static void row_to_policy(arena *pool, const db_res *r, size_t i, store_policy *p)
{
	p->id = arena_strdup(pool, db_res_get(r, i, 0));
	p->level = arena_strdup(pool, db_res_get(r, i, 1));
	p->name = arena_strdup(pool, db_res_get(r, i, 2));
	p->doc = arena_strdup(pool, db_res_get(r, i, 3) ? db_res_get(r, i, 3) : "{}");
	p->created_ms = db_res_int(r, i, 4);
	p->updated_ms = db_res_int(r, i, 5);
}

/* {"level":..,"name":..} as malloc'ed JSON text. */
static char *change_payload(const char *level, const char *name)
{
	json_t *o = json_pack("{s:s, s:s}", "level", level, "name", name);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return s;
}

apim_rc store_seed_mark(db *d, const char *marker, int *fresh)
{
	char now[24];
	snprintf(now, sizeof(now), "%" PRId64, apim_now_ms());
	apim_rc rc = db_exec(d, NULL, "INSERT INTO am_admin_seed (name, applied_ms) VALUES (?, ?)",
			     DB_ARGS(marker, now));
	*fresh = rc == APIM_OK;
	return rc == APIM_ECONFLICT ? APIM_OK : rc;
}

/* INSERT plus its change record, inside the caller's transaction. */
static apim_rc insert_one(db *d, const store_policy *p)
{
	char created[24], updated[24];
	snprintf(created, sizeof(created), "%" PRId64, p->created_ms);
	snprintf(updated, sizeof(updated), "%" PRId64, p->updated_ms);
	apim_rc rc = db_exec(d, NULL,
			     "INSERT INTO am_policy (" POLICY_COLS ") VALUES (?, ?, ?, ?, ?, ?)",
			     DB_ARGS(p->id, p->level, p->name, p->doc, created, updated));
	if (rc != APIM_OK)
		return rc;
	char *payload = change_payload(p->level, p->name);
	if (payload == NULL)
		return APIM_ENOMEM;
	rc = db_change_record(d, "policy", p->id, "create", payload, NULL);
	free(payload);
	return rc;
}

apim_rc store_policy_create(db *d, const store_policy *p)
{
	apim_rc rc = db_begin(d);
	if (rc != APIM_OK)
		return rc;
	rc = insert_one(d, p);
	if (rc != APIM_OK)
		goto out;
	rc = db_commit(d);
out:
	if (rc != APIM_OK)
		db_rollback(d);
	return rc;
}

apim_rc store_policy_seed(db *d, const char *marker, const store_policy *ps, size_t n)
{
	int fresh = 0;
	apim_rc rc = db_begin(d);
	if (rc != APIM_OK)
		return rc;
	rc = store_seed_mark(d, marker, &fresh);
	if (rc != APIM_OK || !fresh)
		goto out;
	for (size_t i = 0; i < n && rc == APIM_OK; i++)
		rc = insert_one(d, &ps[i]);
	if (rc != APIM_OK)
		goto out;
	rc = db_commit(d);
	return rc;
out:
	db_rollback(d);
	return rc;
}

static apim_rc get_one(db *d, arena *pool, const char *sql, const char *a, const char *b,
		       store_policy *out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, sql, DB_ARGS(a, b));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(r) == 0)
		rc = APIM_ENOTFOUND;
	else
		row_to_policy(pool, r, 0, out);
	db_res_free(r);
	return rc;
}

apim_rc store_policy_get(db *d, arena *pool, const char *level, const char *id,
			 store_policy *out)
{
	return get_one(d, pool, "SELECT " POLICY_COLS " FROM am_policy WHERE level = ? AND uuid = ?",
		       level, id, out);
}

apim_rc store_policy_get_by_name(db *d, arena *pool, const char *level, const char *name,
				 store_policy *out)
{
	return get_one(d, pool, "SELECT " POLICY_COLS " FROM am_policy WHERE level = ? AND name = ?",
		       level, name, out);
}

apim_rc store_policy_list(db *d, arena *pool, const char *level, int64_t offset, int64_t limit,
			  store_policy **out, size_t *n, int64_t *total)
{
	db_res *r = NULL;
	char off[24], lim[24];
	snprintf(off, sizeof(off), "%" PRId64, offset);
	snprintf(lim, sizeof(lim), "%" PRId64, limit);
	/* level NULL matches every level */
	apim_rc rc = db_exec(d, &r,
			     "SELECT COUNT(*) FROM am_policy WHERE (CAST(? AS TEXT) IS NULL OR level = ?)",
			     DB_ARGS(level, level));
	if (rc != APIM_OK)
		return rc;
	*total = db_res_int(r, 0, 0);
	db_res_free(r);
	r = NULL;
	rc = db_exec(d, &r,
		     "SELECT " POLICY_COLS " FROM am_policy WHERE (CAST(? AS TEXT) IS NULL OR level = ?) "
		     "ORDER BY level, created_ms, name LIMIT ? OFFSET ?",
		     DB_ARGS(level, level, lim, off));
	if (rc != APIM_OK)
		return rc;
	*n = db_res_rows(r);
	*out = arena_alloc(pool, (*n ? *n : 1) * sizeof(**out));
	for (size_t i = 0; i < *n; i++)
		row_to_policy(pool, r, i, &(*out)[i]);
	db_res_free(r);
	return APIM_OK;
}

apim_rc store_policy_update(db *d, const store_policy *p)
{
	db_res *r = NULL;
	char updated[24];
	snprintf(updated, sizeof(updated), "%" PRId64, p->updated_ms);
	apim_rc rc = db_begin(d);
	if (rc != APIM_OK)
		return rc;
	rc = db_exec(d, &r, "UPDATE am_policy SET doc = ?, updated_ms = ? WHERE level = ? AND uuid = ?",
		     DB_ARGS(p->doc, updated, p->level, p->id));
	if (rc != APIM_OK)
		goto out;
	if (db_res_changes(r) == 0) {
		rc = APIM_ENOTFOUND;
		goto out;
	}
	char *payload = change_payload(p->level, p->name);
	if (payload == NULL) {
		rc = APIM_ENOMEM;
		goto out;
	}
	rc = db_change_record(d, "policy", p->id, "update", payload, NULL);
	free(payload);
	if (rc != APIM_OK)
		goto out;
	rc = db_commit(d);
out:
	db_res_free(r);
	if (rc != APIM_OK)
		db_rollback(d);
	return rc;
}

apim_rc store_policy_delete(db *d, const char *level, const char *id, store_guard guard,
			    void *arg)
{
	db_res *r = NULL;
	char *payload = NULL;
	apim_rc rc = db_begin(d);
	if (rc != APIM_OK)
		return rc;
	rc = db_exec(d, &r, "SELECT name FROM am_policy WHERE level = ? AND uuid = ?",
		     DB_ARGS(level, id));
	if (rc != APIM_OK)
		goto out;
	if (db_res_rows(r) == 0) {
		rc = APIM_ENOTFOUND;
		goto out;
	}
	payload = change_payload(level, db_res_get(r, 0, 0));
	if (payload == NULL) {
		rc = APIM_ENOMEM;
		goto out;
	}
	if (guard != NULL) {
		rc = guard(arg);
		if (rc != APIM_OK)
			goto out;
	}
	rc = db_exec(d, NULL, "DELETE FROM am_policy WHERE level = ? AND uuid = ?",
		     DB_ARGS(level, id));
	if (rc != APIM_OK)
		goto out;
	rc = db_change_record(d, "policy", id, "delete", payload, NULL);
	if (rc != APIM_OK)
		goto out;
	rc = db_commit(d);
out:
	free(payload);
	db_res_free(r);
	if (rc != APIM_OK)
		db_rollback(d);
	return rc;
}

apim_rc store_policy_exists(db *d, const char *level, const char *name, int *exists)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, "SELECT 1 FROM am_policy WHERE level = ? AND name = ?",
			     DB_ARGS(level, name));
	if (rc == APIM_OK)
		*exists = db_res_rows(r) > 0;
	db_res_free(r);
	return rc;
}
