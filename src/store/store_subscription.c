/*
 * store_subscription.c: applications and subscriptions (see
 * store_subscription.h).
 */
#include "store/store_subscription.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char *const store_subscription_steps[] = {
	/* 1: applications and subscriptions */
	"CREATE TABLE am_application ("
	" id TEXT PRIMARY KEY,"
	" name TEXT NOT NULL,"
	" owner TEXT NOT NULL,"
	" tier TEXT NOT NULL,"
	" status TEXT NOT NULL DEFAULT 'APPROVED',"
	" token_type TEXT NOT NULL DEFAULT 'JWT',"
	" description TEXT,"
	" attributes TEXT NOT NULL DEFAULT '{}',"
	" groups_json TEXT NOT NULL DEFAULT '[]',"
	" callback_url TEXT,"
	" created_ms BIGINT NOT NULL,"
	" updated_ms BIGINT NOT NULL);"
	"CREATE UNIQUE INDEX am_application_owner_name ON am_application (owner, name);"
	"CREATE INDEX am_application_tier ON am_application (tier);"
	"CREATE TABLE am_subscription ("
	" id TEXT PRIMARY KEY,"
	" api_id TEXT NOT NULL,"
	" application_id TEXT NOT NULL,"
	" tier TEXT NOT NULL,"
	" requested_tier TEXT,"
	" status TEXT NOT NULL DEFAULT 'UNBLOCKED',"
	" created_by TEXT,"
	" created_ms BIGINT NOT NULL,"
	" updated_ms BIGINT NOT NULL,"
	" UNIQUE (api_id, application_id));"
	"CREATE INDEX am_subscription_app ON am_subscription (application_id);"
	"CREATE INDEX am_subscription_tier ON am_subscription (tier);",
};

apim_rc store_subscription_migrate(db *d)
{
	return db_migrate(d, "subscriptions", store_subscription_steps,
			  sizeof(store_subscription_steps) / sizeof(store_subscription_steps[0]));
}

#define SUB_COLS                                                                         \
	"s.id, s.api_id, s.application_id, s.tier, s.requested_tier, s.status, "          \
	"s.created_ms, s.updated_ms, a.name, a.owner, a.tier, a.description"
#define SUB_FROM " FROM am_subscription s LEFT JOIN am_application a ON a.id = s.application_id"

static const char *dup_cell(arena *pool, const db_res *r, size_t row, size_t col)
{
	const char *v = db_res_get(r, row, col);
	return v ? arena_strdup(pool, v) : NULL;
}

static void sub_from_row(arena *pool, const db_res *r, size_t row, store_subscription *s)
{
	memset(s, 0, sizeof(*s));
	snprintf(s->id, sizeof(s->id), "%s", db_res_get(r, row, 0) ? db_res_get(r, row, 0) : "");
	s->api_id = dup_cell(pool, r, row, 1);
	s->application_id = dup_cell(pool, r, row, 2);
	s->tier = dup_cell(pool, r, row, 3);
	s->requested_tier = dup_cell(pool, r, row, 4);
	s->status = dup_cell(pool, r, row, 5);
	s->created_ms = db_res_int(r, row, 6);
	s->updated_ms = db_res_int(r, row, 7);
	s->app_name = dup_cell(pool, r, row, 8);
	s->app_owner = dup_cell(pool, r, row, 9);
	s->app_tier = dup_cell(pool, r, row, 10);
	s->app_description = dup_cell(pool, r, row, 11);
}

apim_rc store_subscription_list(db *d, arena *pool, const char *api_id, int64_t offset,
				int64_t limit, store_subscription **out, size_t *n, int64_t *total)
{
	db_res *r = NULL;
	const char *where = api_id ? " WHERE s.api_id = ?" : "";
	size_t np = api_id ? 1 : 0;
	const char *params[1] = {api_id};
	char *sql = arena_sprintf(pool, "SELECT COUNT(*) FROM am_subscription s%s", where);
	apim_rc rc = db_exec(d, &r, sql, np, params);
	if (rc != APIM_OK)
		return rc;
	*total = db_res_int(r, 0, 0);
	db_res_free(r);
	sql = arena_sprintf(pool,
			    "SELECT " SUB_COLS SUB_FROM "%s ORDER BY s.created_ms DESC, s.id "
			    "LIMIT %" PRId64 " OFFSET %" PRId64,
			    where, limit, offset);
	rc = db_exec(d, &r, sql, np, params);
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(r);
	*out = arena_alloc(pool, (rows + 1) * sizeof(store_subscription));
	for (size_t i = 0; i < rows; i++)
		sub_from_row(pool, r, i, &(*out)[i]);
	*n = rows;
	db_res_free(r);
	return APIM_OK;
}

apim_rc store_subscription_get(db *d, arena *pool, const char *id, store_subscription *out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, "SELECT " SUB_COLS SUB_FROM " WHERE s.id = ?", DB_ARGS(id));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(r) == 0)
		rc = APIM_ENOTFOUND;
	else
		sub_from_row(pool, r, 0, out);
	db_res_free(r);
	return rc;
}

apim_rc store_subscription_set_status(db *d, const char *id, const char *status,
				      int64_t updated_ms)
{
	char ms[24];
	db_res *r = NULL;
	snprintf(ms, sizeof(ms), "%" PRId64, updated_ms);
	apim_rc rc = db_exec(d, &r, "UPDATE am_subscription SET status = ?, updated_ms = ? "
				    "WHERE id = ?",
			     DB_ARGS(status, ms, id));
	if (rc == APIM_OK && db_res_changes(r) == 0)
		rc = APIM_ENOTFOUND;
	db_res_free(r);
	return rc;
}

apim_rc store_subscription_count_active(db *d, const char *api_id, int64_t *count)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r,
			     "SELECT COUNT(*) FROM am_subscription WHERE api_id = ? AND "
			     "status <> 'REJECTED'",
			     DB_ARGS(api_id));
	if (rc == APIM_OK)
		*count = db_res_int(r, 0, 0);
	db_res_free(r);
	return rc;
}

apim_rc store_subscription_policy_usage(db *d, const char *level, const char *name,
					int64_t *count)
{
	db_res *r = NULL;
	apim_rc rc;
	*count = 0;
	if (strcmp(level, "subscription") == 0)
		rc = db_exec(d, &r,
			     "SELECT COUNT(*) FROM am_subscription WHERE tier = ? OR "
			     "requested_tier = ?",
			     DB_ARGS(name, name));
	else if (strcmp(level, "application") == 0)
		rc = db_exec(d, &r, "SELECT COUNT(*) FROM am_application WHERE tier = ?",
			     DB_ARGS(name));
	else
		return APIM_OK;
	if (rc == APIM_OK)
		*count = db_res_int(r, 0, 0);
	db_res_free(r);
	return rc;
}

/* ---------- Developer Portal writes ---------- */

apim_rc store_subscription_search(db *d, arena *pool, const char *api_id,
				  const char *application_id, const char *owner, int64_t offset,
				  int64_t limit, store_subscription **out, size_t *n,
				  int64_t *total)
{
	const char *params[3];
	size_t np = 0;
	const char *where = "";
	if (api_id != NULL) {
		params[np++] = api_id;
		where = arena_sprintf(pool, "%s%s s.api_id = ?", where, np > 1 ? " AND" : " WHERE");
	}
	if (application_id != NULL) {
		params[np++] = application_id;
		where = arena_sprintf(pool, "%s%s s.application_id = ?", where,
				      np > 1 ? " AND" : " WHERE");
	}
	if (owner != NULL) {
		params[np++] = owner;
		where = arena_sprintf(pool, "%s%s a.owner = ?", where, np > 1 ? " AND" : " WHERE");
	}
	db_res *r = NULL;
	char *sql = arena_sprintf(pool, "SELECT COUNT(*)" SUB_FROM "%s", where);
	apim_rc rc = db_exec(d, &r, sql, np, params);
	if (rc != APIM_OK)
		return rc;
	*total = db_res_int(r, 0, 0);
	db_res_free(r);
	sql = arena_sprintf(pool,
			    "SELECT " SUB_COLS SUB_FROM "%s ORDER BY s.created_ms DESC, s.id "
			    "LIMIT %" PRId64 " OFFSET %" PRId64,
			    where, limit, offset);
	rc = db_exec(d, &r, sql, np, params);
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(r);
	*out = arena_alloc(pool, (rows + 1) * sizeof(store_subscription));
	for (size_t i = 0; i < rows; i++)
		sub_from_row(pool, r, i, &(*out)[i]);
	*n = rows;
	db_res_free(r);
	return APIM_OK;
}

apim_rc store_subscription_find(db *d, arena *pool, const char *api_id,
				const char *application_id, store_subscription *out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r,
			     "SELECT " SUB_COLS SUB_FROM " WHERE s.api_id = ? AND s.application_id = ?",
			     DB_ARGS(api_id, application_id));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(r) == 0)
		rc = APIM_ENOTFOUND;
	else
		sub_from_row(pool, r, 0, out);
	db_res_free(r);
	return rc;
}

apim_rc store_subscription_insert(db *d, const store_subscription *s, const char *created_by)
{
	char cr[24], up[24];
	snprintf(cr, sizeof(cr), "%" PRId64, s->created_ms);
	snprintf(up, sizeof(up), "%" PRId64, s->updated_ms);
	return db_exec(d, NULL,
		       "INSERT INTO am_subscription (id, api_id, application_id, tier, "
		       "requested_tier, status, created_by, created_ms, updated_ms) "
		       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
		       DB_ARGS(s->id, s->api_id, s->application_id, s->tier, s->requested_tier,
			       s->status, created_by, cr, up));
}

apim_rc store_subscription_set_tier(db *d, const char *id, const char *tier, int64_t updated_ms)
{
	char ms[24];
	db_res *r = NULL;
	snprintf(ms, sizeof(ms), "%" PRId64, updated_ms);
	apim_rc rc = db_exec(d, &r,
			     "UPDATE am_subscription SET tier = ?, requested_tier = ?, updated_ms = ? "
			     "WHERE id = ?",
			     DB_ARGS(tier, tier, ms, id));
	if (rc == APIM_OK && db_res_changes(r) == 0)
		rc = APIM_ENOTFOUND;
	db_res_free(r);
	return rc;
}

apim_rc store_subscription_delete(db *d, const char *id)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, "DELETE FROM am_subscription WHERE id = ?", DB_ARGS(id));
	if (rc == APIM_OK && db_res_changes(r) == 0)
		rc = APIM_ENOTFOUND;
	db_res_free(r);
	return rc;
}
