/*
 * store_rating.c: API ratings and comments in shareddb (see
 * store_rating.h for the tables).
 */
#include "store/store_rating.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

static const char *const store_rating_steps[] = {
	/* 1: ratings and comments */
	"CREATE TABLE am_api_rating ("
	" id TEXT PRIMARY KEY,"
	" api_id TEXT NOT NULL,"
	" username TEXT NOT NULL,"
	" rating INTEGER NOT NULL,"
	" created_ms BIGINT NOT NULL,"
	" updated_ms BIGINT NOT NULL,"
	" UNIQUE (api_id, username));"
	"CREATE TABLE am_api_comment ("
	" id TEXT PRIMARY KEY,"
	" api_id TEXT NOT NULL,"
	" parent_id TEXT,"
	" content TEXT NOT NULL,"
	" category TEXT NOT NULL,"
	" entry_point TEXT NOT NULL,"
	" created_by TEXT NOT NULL,"
	" created_ms BIGINT NOT NULL,"
	" updated_ms BIGINT NOT NULL);"
	"CREATE INDEX am_api_comment_api ON am_api_comment (api_id, created_ms);"
	"CREATE INDEX am_api_comment_parent ON am_api_comment (parent_id);",
};

apim_rc store_rating_migrate(db *d)
{
	return db_migrate(d, "devportal-ratings", store_rating_steps,
			  sizeof(store_rating_steps) / sizeof(store_rating_steps[0]));
}

static const char *dup_cell(arena *pool, const db_res *r, size_t row, size_t col)
{
	const char *v = db_res_get(r, row, col);
	return v ? arena_strdup(pool, v) : NULL;
}

/* ---------- ratings ---------- */

#define RATING_COLS "id, api_id, username, rating, created_ms, updated_ms"

static void rating_from_row(arena *pool, const db_res *r, size_t row, store_rating *out)
{
	memset(out, 0, sizeof(*out));
	const char *id = db_res_get(r, row, 0);
	snprintf(out->id, sizeof(out->id), "%s", id ? id : "");
	out->api_id = dup_cell(pool, r, row, 1);
	out->username = dup_cell(pool, r, row, 2);
	out->rating = (int)db_res_int(r, row, 3);
	out->created_ms = db_res_int(r, row, 4);
	out->updated_ms = db_res_int(r, row, 5);
}

apim_rc store_rating_put(db *d, arena *pool, const char *api_id, const char *username,
			 int rating, store_rating *out)
{
	char id[APIM_UUID_LEN + 1], value[16], now[24];
	apim_uuid(id);
	snprintf(value, sizeof(value), "%d", rating);
	snprintf(now, sizeof(now), "%" PRId64, apim_now_ms());
	apim_rc rc = db_exec(d, NULL,
			     "INSERT INTO am_api_rating (" RATING_COLS ") VALUES (?, ?, ?, ?, ?, ?) "
			     "ON CONFLICT (api_id, username) DO UPDATE SET "
			     "rating = excluded.rating, updated_ms = excluded.updated_ms",
			     DB_ARGS(id, api_id, username, value, now, now));
	if (rc == APIM_OK && out != NULL)
		rc = store_rating_get(d, pool, api_id, username, out);
	return rc;
}

apim_rc store_rating_get(db *d, arena *pool, const char *api_id, const char *username,
			 store_rating *out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r,
			     "SELECT " RATING_COLS " FROM am_api_rating WHERE api_id = ? AND "
			     "username = ?",
			     DB_ARGS(api_id, username));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(r) == 0)
		rc = APIM_ENOTFOUND;
	else
		rating_from_row(pool, r, 0, out);
	db_res_free(r);
	return rc;
}

apim_rc store_rating_delete(db *d, const char *api_id, const char *username)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, "DELETE FROM am_api_rating WHERE api_id = ? AND username = ?",
			     DB_ARGS(api_id, username));
	if (rc == APIM_OK && db_res_changes(r) == 0)
		rc = APIM_ENOTFOUND;
	db_res_free(r);
	return rc;
}

apim_rc store_rating_list(db *d, arena *pool, const char *api_id, int64_t offset, int64_t limit,
			  store_rating **out, size_t *n, int64_t *total)
{
	db_res *r = NULL;
	char lim[24], off[24];
	*out = NULL;
	*n = 0;
	apim_rc rc = db_exec(d, &r, "SELECT COUNT(*) FROM am_api_rating WHERE api_id = ?",
			     DB_ARGS(api_id));
	if (rc != APIM_OK)
		return rc;
	*total = db_res_int(r, 0, 0);
	db_res_free(r);
	snprintf(lim, sizeof(lim), "%" PRId64, limit);
	snprintf(off, sizeof(off), "%" PRId64, offset);
	rc = db_exec(d, &r,
		     "SELECT " RATING_COLS " FROM am_api_rating WHERE api_id = ? "
		     "ORDER BY updated_ms DESC, id LIMIT ? OFFSET ?",
		     DB_ARGS(api_id, lim, off));
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(r);
	*out = arena_alloc(pool, (rows + 1) * sizeof(store_rating));
	for (size_t i = 0; i < rows; i++)
		rating_from_row(pool, r, i, &(*out)[i]);
	*n = rows;
	db_res_free(r);
	return APIM_OK;
}

apim_rc store_rating_summary(db *d, const char *api_id, int64_t *count, int64_t *sum)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r,
			     "SELECT COUNT(*), COALESCE(SUM(rating), 0) FROM am_api_rating "
			     "WHERE api_id = ?",
			     DB_ARGS(api_id));
	if (rc != APIM_OK)
		return rc;
	*count = db_res_int(r, 0, 0);
	*sum = db_res_int(r, 0, 1);
	db_res_free(r);
	return APIM_OK;
}

/* ---------- comments ---------- */

#define COMMENT_COLS                                                                      \
	"id, api_id, parent_id, content, category, entry_point, created_by, created_ms, " \
	"updated_ms"

static void comment_from_row(arena *pool, const db_res *r, size_t row, store_comment *out)
{
	memset(out, 0, sizeof(*out));
	const char *id = db_res_get(r, row, 0);
	snprintf(out->id, sizeof(out->id), "%s", id ? id : "");
	out->api_id = dup_cell(pool, r, row, 1);
	out->parent_id = dup_cell(pool, r, row, 2);
	out->content = dup_cell(pool, r, row, 3);
	out->category = dup_cell(pool, r, row, 4);
	out->entry_point = dup_cell(pool, r, row, 5);
	out->created_by = dup_cell(pool, r, row, 6);
	out->created_ms = db_res_int(r, row, 7);
	out->updated_ms = db_res_int(r, row, 8);
}

apim_rc store_comment_insert(db *d, const store_comment *c)
{
	char created[24], updated[24];
	snprintf(created, sizeof(created), "%" PRId64, c->created_ms);
	snprintf(updated, sizeof(updated), "%" PRId64, c->updated_ms);
	return db_exec(d, NULL,
		       "INSERT INTO am_api_comment (" COMMENT_COLS ") VALUES "
		       "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
		       DB_ARGS(c->id, c->api_id, c->parent_id, c->content, c->category,
			       c->entry_point, c->created_by, created, updated));
}

apim_rc store_comment_get(db *d, arena *pool, const char *api_id, const char *id,
			  store_comment *out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r,
			     "SELECT " COMMENT_COLS " FROM am_api_comment WHERE api_id = ? AND "
			     "id = ?",
			     DB_ARGS(api_id, id));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(r) == 0)
		rc = APIM_ENOTFOUND;
	else
		comment_from_row(pool, r, 0, out);
	db_res_free(r);
	return rc;
}

apim_rc store_comment_list(db *d, arena *pool, const char *api_id, const char *parent_id,
			   int64_t offset, int64_t limit, store_comment **out, size_t *n,
			   int64_t *total)
{
	db_res *r = NULL;
	char lim[24], off[24];
	const char *where = parent_id ? "api_id = ? AND parent_id = ?"
				      : "api_id = ? AND parent_id IS NULL";
	const char *params[] = {api_id, parent_id};
	size_t np = parent_id ? 2 : 1;
	*out = NULL;
	*n = 0;
	char sql[512];
	snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM am_api_comment WHERE %s", where);
	apim_rc rc = db_exec(d, &r, sql, np, params);
	if (rc != APIM_OK)
		return rc;
	*total = db_res_int(r, 0, 0);
	db_res_free(r);
	snprintf(lim, sizeof(lim), "%" PRId64, limit);
	snprintf(off, sizeof(off), "%" PRId64, offset);
	const char *params2[] = {api_id, parent_id ? parent_id : lim, parent_id ? lim : off,
				 off};
	snprintf(sql, sizeof(sql),
		 "SELECT " COMMENT_COLS " FROM am_api_comment WHERE %s "
		 "ORDER BY created_ms DESC, id LIMIT ? OFFSET ?",
		 where);
	rc = db_exec(d, &r, sql, np + 2, params2);
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(r);
	*out = arena_alloc(pool, (rows + 1) * sizeof(store_comment));
	for (size_t i = 0; i < rows; i++)
		comment_from_row(pool, r, i, &(*out)[i]);
	*n = rows;
	db_res_free(r);
	return APIM_OK;
}

apim_rc store_comment_update(db *d, const store_comment *c)
{
	db_res *r = NULL;
	char updated[24];
	snprintf(updated, sizeof(updated), "%" PRId64, c->updated_ms);
	apim_rc rc = db_exec(d, &r,
			     "UPDATE am_api_comment SET content = ?, category = ?, updated_ms = ? "
			     "WHERE api_id = ? AND id = ?",
			     DB_ARGS(c->content, c->category, updated, c->api_id, c->id));
	if (rc == APIM_OK && db_res_changes(r) == 0)
		rc = APIM_ENOTFOUND;
	db_res_free(r);
	return rc;
}

apim_rc store_comment_delete(db *d, const char *api_id, const char *id)
{
	db_res *r = NULL;
	apim_rc rc = db_begin(d);
	if (rc == APIM_OK)
		rc = db_exec(d, NULL, "DELETE FROM am_api_comment WHERE api_id = ? AND parent_id = ?",
			     DB_ARGS(api_id, id));
	if (rc == APIM_OK)
		rc = db_exec(d, &r, "DELETE FROM am_api_comment WHERE api_id = ? AND id = ?",
			     DB_ARGS(api_id, id));
	if (rc == APIM_OK && db_res_changes(r) == 0)
		rc = APIM_ENOTFOUND;
	db_res_free(r);
	if (rc == APIM_OK)
		rc = db_commit(d);
	if (rc != APIM_OK)
		db_rollback(d);
	return rc;
}

apim_rc store_rating_delete_api(db *d, const char *api_id)
{
	apim_rc rc = db_exec(d, NULL, "DELETE FROM am_api_comment WHERE api_id = ?",
			     DB_ARGS(api_id));
	if (rc == APIM_OK)
		rc = db_exec(d, NULL, "DELETE FROM am_api_rating WHERE api_id = ?", DB_ARGS(api_id));
	return rc;
}
