/*
 * store_application.c: applications, key mappings and API keys (see
 * store_application.h).
 */
#include "store/store_application.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const store_application_steps[] = {
	/* 1: key mappings and API keys */
	"CREATE TABLE am_application_key_mapping ("
	" id TEXT PRIMARY KEY,"
	" application_id TEXT NOT NULL,"
	" consumer_key TEXT NOT NULL,"
	" key_type TEXT NOT NULL,"
	" key_manager TEXT NOT NULL,"
	" create_mode TEXT NOT NULL,"
	" state TEXT NOT NULL,"
	" properties TEXT NOT NULL DEFAULT '{}',"
	" created_ms BIGINT NOT NULL,"
	" UNIQUE (application_id, key_type));"
	"CREATE UNIQUE INDEX am_application_key_mapping_client"
	" ON am_application_key_mapping (consumer_key);"
	"CREATE TABLE am_api_key ("
	" jti TEXT PRIMARY KEY,"
	" application_id TEXT NOT NULL,"
	" key_type TEXT NOT NULL,"
	" key_name TEXT,"
	" issued_ms BIGINT NOT NULL,"
	" expiry_ms BIGINT NOT NULL,"
	" revoked_ms BIGINT);"
	"CREATE INDEX am_api_key_app ON am_api_key (application_id);",
};

apim_rc store_application_migrate(db *d)
{
	return db_migrate(d, "devportal-apps", store_application_steps,
			  sizeof(store_application_steps) / sizeof(store_application_steps[0]));
}

static void i64s(char out[24], int64_t v)
{
	snprintf(out, 24, "%" PRId64, v);
}

static const char *dup_cell(arena *pool, const db_res *r, size_t row, size_t col)
{
	const char *v = db_res_get(r, row, col);
	return v ? arena_strdup(pool, v) : NULL;
}

/* Runs a write and maps "no row changed" to APIM_ENOTFOUND. */
static apim_rc exec_changes(db *d, const char *sql, size_t n, const char *const *params)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, sql, n, params);
	if (rc == APIM_OK && db_res_changes(r) == 0)
		rc = APIM_ENOTFOUND;
	db_res_free(r);
	return rc;
}

/* ---------- applications ---------- */

#define APP_COLS                                                                           \
	"a.id, a.name, a.owner, a.tier, a.status, a.token_type, a.description, a.attributes, " \
	"a.groups_json, a.created_ms, a.updated_ms, "                                           \
	"(SELECT COUNT(*) FROM am_subscription s WHERE s.application_id = a.id)"

static void app_from_row(arena *pool, const db_res *r, size_t row, store_application *a)
{
	memset(a, 0, sizeof(*a));
	const char *id = db_res_get(r, row, 0);
	snprintf(a->id, sizeof(a->id), "%s", id ? id : "");
	a->name = dup_cell(pool, r, row, 1);
	a->owner = dup_cell(pool, r, row, 2);
	a->tier = dup_cell(pool, r, row, 3);
	a->status = dup_cell(pool, r, row, 4);
	a->token_type = dup_cell(pool, r, row, 5);
	a->description = dup_cell(pool, r, row, 6);
	a->attributes = dup_cell(pool, r, row, 7);
	a->groups = dup_cell(pool, r, row, 8);
	a->created_ms = db_res_int(r, row, 9);
	a->updated_ms = db_res_int(r, row, 10);
	a->subscription_count = db_res_int(r, row, 11);
}

apim_rc store_application_insert(db *d, const store_application *a)
{
	char cr[24], up[24];
	i64s(cr, a->created_ms);
	i64s(up, a->updated_ms);
	return db_exec(d, NULL,
		       "INSERT INTO am_application (id, name, owner, tier, status, token_type, "
		       "description, attributes, groups_json, created_ms, updated_ms) "
		       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		       DB_ARGS(a->id, a->name, a->owner, a->tier, a->status, a->token_type,
			       a->description, a->attributes, a->groups, cr, up));
}

apim_rc store_application_update(db *d, const store_application *a)
{
	char up[24];
	i64s(up, a->updated_ms);
	return exec_changes(d,
			    "UPDATE am_application SET name = ?, tier = ?, token_type = ?, "
			    "description = ?, attributes = ?, groups_json = ?, updated_ms = ? "
			    "WHERE id = ?",
			    DB_ARGS(a->name, a->tier, a->token_type, a->description, a->attributes,
				    a->groups, up, a->id));
}

apim_rc store_application_delete(db *d, const char *id)
{
	return exec_changes(d, "DELETE FROM am_application WHERE id = ?", DB_ARGS(id));
}

apim_rc store_application_get(db *d, arena *pool, const char *id, store_application *out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, "SELECT " APP_COLS " FROM am_application a WHERE a.id = ?",
			     DB_ARGS(id));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(r) == 0)
		rc = APIM_ENOTFOUND;
	else
		app_from_row(pool, r, 0, out);
	db_res_free(r);
	return rc;
}

apim_rc store_application_lock(db *d, const char *id)
{
	return exec_changes(d, "UPDATE am_application SET updated_ms = updated_ms WHERE id = ?",
			    DB_ARGS(id));
}

apim_rc store_application_list(db *d, arena *pool, const store_application_query *q,
			       store_application **out, size_t *n, int64_t *total)
{
	const char *params[2];
	size_t np = 0;
	char where[128] = "";
	if (q->owner != NULL) {
		params[np++] = q->owner;
		snprintf(where, sizeof(where), " WHERE a.owner = ?");
	}
	if (q->name != NULL) {
		char *esc = db_like_escape(q->name);
		if (esc == NULL)
			return APIM_ENOMEM;
		params[np++] = arena_sprintf(pool, "%%%s%%", esc);
		free(esc);
		size_t used = strlen(where);
		snprintf(where + used, sizeof(where) - used,
			 "%s lower(a.name) LIKE lower(?) ESCAPE '\\'", used ? " AND" : " WHERE");
	}
	const char *col = "a.name";
	if (q->order_by != NULL && strcmp(q->order_by, "tier") == 0)
		col = "a.tier";
	else if (q->order_by != NULL && strcmp(q->order_by, "status") == 0)
		col = "a.status";
	else if (q->order_by != NULL && strcmp(q->order_by, "created_ms") == 0)
		col = "a.created_ms";

	db_res *r = NULL;
	char *sql = arena_sprintf(pool, "SELECT COUNT(*) FROM am_application a%s", where);
	apim_rc rc = db_exec(d, &r, sql, np, params);
	if (rc != APIM_OK)
		return rc;
	*total = db_res_int(r, 0, 0);
	db_res_free(r);
	sql = arena_sprintf(pool,
			    "SELECT " APP_COLS " FROM am_application a%s ORDER BY %s %s, a.owner, "
			    "a.id LIMIT %" PRId64 " OFFSET %" PRId64,
			    where, col, q->desc ? "DESC" : "ASC", q->limit, q->offset);
	rc = db_exec(d, &r, sql, np, params);
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(r);
	*out = arena_alloc(pool, (rows + 1) * sizeof(store_application));
	for (size_t i = 0; i < rows; i++)
		app_from_row(pool, r, i, &(*out)[i]);
	*n = rows;
	db_res_free(r);
	return APIM_OK;
}

/* ---------- key mappings ---------- */

#define KEY_COLS                                                                        \
	"id, application_id, consumer_key, key_type, key_manager, create_mode, state, "  \
	"properties, created_ms"

static void key_from_row(arena *pool, const db_res *r, size_t row, store_app_key *k)
{
	memset(k, 0, sizeof(*k));
	const char *id = db_res_get(r, row, 0);
	snprintf(k->id, sizeof(k->id), "%s", id ? id : "");
	k->application_id = dup_cell(pool, r, row, 1);
	k->consumer_key = dup_cell(pool, r, row, 2);
	k->key_type = dup_cell(pool, r, row, 3);
	k->key_manager = dup_cell(pool, r, row, 4);
	k->create_mode = dup_cell(pool, r, row, 5);
	k->state = dup_cell(pool, r, row, 6);
	k->properties = dup_cell(pool, r, row, 7);
	k->created_ms = db_res_int(r, row, 8);
}

static apim_rc key_get_one(db *d, arena *pool, const char *sql, size_t n,
			   const char *const *params, store_app_key *out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, sql, n, params);
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(r) == 0)
		rc = APIM_ENOTFOUND;
	else
		key_from_row(pool, r, 0, out);
	db_res_free(r);
	return rc;
}

apim_rc store_application_key_insert(db *d, const store_app_key *k)
{
	char cr[24];
	i64s(cr, k->created_ms);
	return db_exec(d, NULL,
		       "INSERT INTO am_application_key_mapping (" KEY_COLS ") "
		       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
		       DB_ARGS(k->id, k->application_id, k->consumer_key, k->key_type,
			       k->key_manager, k->create_mode, k->state,
			       k->properties ? k->properties : "{}", cr));
}

apim_rc store_application_key_get(db *d, arena *pool, const char *app_id, const char *id,
				  store_app_key *out)
{
	if (app_id == NULL)
		return key_get_one(d, pool,
				   "SELECT " KEY_COLS " FROM am_application_key_mapping WHERE id = ?",
				   DB_ARGS(id), out);
	return key_get_one(d, pool,
			   "SELECT " KEY_COLS " FROM am_application_key_mapping "
			   "WHERE id = ? AND application_id = ?",
			   DB_ARGS(id, app_id), out);
}

apim_rc store_application_key_by_type(db *d, arena *pool, const char *app_id,
				      const char *key_type, store_app_key *out)
{
	return key_get_one(d, pool,
			   "SELECT " KEY_COLS " FROM am_application_key_mapping "
			   "WHERE application_id = ? AND key_type = ?",
			   DB_ARGS(app_id, key_type), out);
}

apim_rc store_application_key_by_client(db *d, arena *pool, const char *consumer_key,
					store_app_key *out)
{
	return key_get_one(d, pool,
			   "SELECT " KEY_COLS " FROM am_application_key_mapping "
			   "WHERE consumer_key = ?",
			   DB_ARGS(consumer_key), out);
}

apim_rc store_application_key_list(db *d, arena *pool, const char *app_id, store_app_key **out,
				   size_t *n)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r,
			     "SELECT " KEY_COLS " FROM am_application_key_mapping "
			     "WHERE application_id = ? ORDER BY key_type, id",
			     DB_ARGS(app_id));
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(r);
	*out = arena_alloc(pool, (rows + 1) * sizeof(store_app_key));
	for (size_t i = 0; i < rows; i++)
		key_from_row(pool, r, i, &(*out)[i]);
	*n = rows;
	db_res_free(r);
	return APIM_OK;
}

apim_rc store_application_key_set_properties(db *d, const char *id, const char *properties)
{
	return exec_changes(d, "UPDATE am_application_key_mapping SET properties = ? WHERE id = ?",
			    DB_ARGS(properties, id));
}

apim_rc store_application_key_delete(db *d, const char *id)
{
	return exec_changes(d, "DELETE FROM am_application_key_mapping WHERE id = ?",
			    DB_ARGS(id));
}

/* ---------- API keys ---------- */

#define APIKEY_COLS "jti, application_id, key_type, key_name, issued_ms, expiry_ms, revoked_ms"

static void apikey_from_row(arena *pool, const db_res *r, size_t row, store_app_apikey *k)
{
	memset(k, 0, sizeof(*k));
	k->jti = dup_cell(pool, r, row, 0);
	k->application_id = dup_cell(pool, r, row, 1);
	k->key_type = dup_cell(pool, r, row, 2);
	k->key_name = dup_cell(pool, r, row, 3);
	k->issued_ms = db_res_int(r, row, 4);
	k->expiry_ms = db_res_int(r, row, 5);
	k->revoked_ms = db_res_int(r, row, 6);
}

apim_rc store_application_apikey_insert(db *d, const store_app_apikey *k)
{
	char is[24], ex[24];
	i64s(is, k->issued_ms);
	i64s(ex, k->expiry_ms);
	return db_exec(d, NULL,
		       "INSERT INTO am_api_key (jti, application_id, key_type, key_name, issued_ms, "
		       "expiry_ms) VALUES (?, ?, ?, ?, ?, ?)",
		       DB_ARGS(k->jti, k->application_id, k->key_type, k->key_name, is, ex));
}

apim_rc store_application_apikey_get(db *d, arena *pool, const char *jti, store_app_apikey *out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, "SELECT " APIKEY_COLS " FROM am_api_key WHERE jti = ?",
			     DB_ARGS(jti));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(r) == 0)
		rc = APIM_ENOTFOUND;
	else
		apikey_from_row(pool, r, 0, out);
	db_res_free(r);
	return rc;
}

apim_rc store_application_apikey_revoke(db *d, const char *jti, int64_t revoked_ms)
{
	char rv[24];
	i64s(rv, revoked_ms);
	return exec_changes(d,
			    "UPDATE am_api_key SET revoked_ms = COALESCE(revoked_ms, ?) WHERE jti = ?",
			    DB_ARGS(rv, jti));
}

apim_rc store_application_apikey_live(db *d, arena *pool, const char *app_id, int64_t now_ms,
				      store_app_apikey **out, size_t *n)
{
	char now[24];
	i64s(now, now_ms);
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r,
			     "SELECT " APIKEY_COLS " FROM am_api_key WHERE application_id = ? AND "
			     "revoked_ms IS NULL AND expiry_ms > ? ORDER BY issued_ms, jti",
			     DB_ARGS(app_id, now));
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(r);
	*out = arena_alloc(pool, (rows + 1) * sizeof(store_app_apikey));
	for (size_t i = 0; i < rows; i++)
		apikey_from_row(pool, r, i, &(*out)[i]);
	*n = rows;
	db_res_free(r);
	return APIM_OK;
}

apim_rc store_application_apikey_delete_all(db *d, const char *app_id)
{
	return db_exec(d, NULL, "DELETE FROM am_api_key WHERE application_id = ?",
		       DB_ARGS(app_id));
}
