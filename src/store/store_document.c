/*
 * store_document.c: API documents in shareddb (see store_document.h).
 */
#include "store/store_document.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char *const store_document_steps[] = {
	/* 1: documents */
	"CREATE TABLE am_api_document ("
	" id TEXT PRIMARY KEY,"
	" api_id TEXT NOT NULL,"
	" name TEXT NOT NULL,"
	" type TEXT NOT NULL,"
	" other_type_name TEXT,"
	" summary TEXT,"
	" source_type TEXT NOT NULL,"
	" source_url TEXT,"
	" visibility TEXT NOT NULL,"
	" inline_content TEXT,"
	" file_name TEXT,"
	" file_type TEXT,"
	" file_content TEXT,"
	" created_by TEXT,"
	" created_ms BIGINT NOT NULL,"
	" updated_by TEXT,"
	" updated_ms BIGINT NOT NULL,"
	" UNIQUE (api_id, name));",
};

apim_rc store_document_migrate(db *d)
{
	return db_migrate(d, "publisher-documents", store_document_steps,
			  sizeof(store_document_steps) / sizeof(store_document_steps[0]));
}

#define DOC_COLS                                                                         \
	"id, api_id, name, type, other_type_name, summary, source_type, source_url, "     \
	"visibility, inline_content, file_name, file_type, file_content, created_by, "    \
	"created_ms, updated_by, updated_ms"
#define DOC_COLS_SHORT                                                                   \
	"id, api_id, name, type, other_type_name, summary, source_type, source_url, "     \
	"visibility, NULL, file_name, file_type, NULL, created_by, created_ms, updated_by, " \
	"updated_ms"

static const char *dup_cell(arena *pool, const db_res *r, size_t row, size_t col)
{
	const char *v = db_res_get(r, row, col);
	return v ? arena_strdup(pool, v) : NULL;
}

static void doc_from_row(arena *pool, const db_res *r, size_t row, store_document *d)
{
	memset(d, 0, sizeof(*d));
	snprintf(d->id, sizeof(d->id), "%s", db_res_get(r, row, 0) ? db_res_get(r, row, 0) : "");
	d->api_id = dup_cell(pool, r, row, 1);
	d->name = dup_cell(pool, r, row, 2);
	d->type = dup_cell(pool, r, row, 3);
	d->other_type_name = dup_cell(pool, r, row, 4);
	d->summary = dup_cell(pool, r, row, 5);
	d->source_type = dup_cell(pool, r, row, 6);
	d->source_url = dup_cell(pool, r, row, 7);
	d->visibility = dup_cell(pool, r, row, 8);
	d->inline_content = dup_cell(pool, r, row, 9);
	d->file_name = dup_cell(pool, r, row, 10);
	d->file_type = dup_cell(pool, r, row, 11);
	d->file_content = dup_cell(pool, r, row, 12);
	d->created_by = dup_cell(pool, r, row, 13);
	d->created_ms = db_res_int(r, row, 14);
	d->updated_by = dup_cell(pool, r, row, 15);
	d->updated_ms = db_res_int(r, row, 16);
}

apim_rc store_document_insert(db *d, const store_document *doc)
{
	char created[24], updated[24];
	snprintf(created, sizeof(created), "%" PRId64, doc->created_ms);
	snprintf(updated, sizeof(updated), "%" PRId64, doc->updated_ms);
	return db_exec(d, NULL,
		       "INSERT INTO am_api_document (" DOC_COLS ") VALUES "
		       "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		       DB_ARGS(doc->id, doc->api_id, doc->name, doc->type, doc->other_type_name,
			       doc->summary, doc->source_type, doc->source_url, doc->visibility,
			       doc->inline_content, doc->file_name, doc->file_type,
			       doc->file_content, doc->created_by, created, doc->updated_by,
			       updated));
}

apim_rc store_document_update(db *d, const store_document *doc)
{
	char updated[24];
	db_res *r = NULL;
	snprintf(updated, sizeof(updated), "%" PRId64, doc->updated_ms);
	apim_rc rc = db_exec(d, &r,
			     "UPDATE am_api_document SET name = ?, type = ?, other_type_name = ?, "
			     "summary = ?, source_type = ?, source_url = ?, visibility = ?, "
			     "inline_content = ?, file_name = ?, file_type = ?, file_content = ?, "
			     "updated_by = ?, updated_ms = ? WHERE api_id = ? AND id = ?",
			     DB_ARGS(doc->name, doc->type, doc->other_type_name, doc->summary,
				     doc->source_type, doc->source_url, doc->visibility,
				     doc->inline_content, doc->file_name, doc->file_type,
				     doc->file_content, doc->updated_by, updated, doc->api_id,
				     doc->id));
	if (rc == APIM_OK && db_res_changes(r) == 0)
		rc = APIM_ENOTFOUND;
	db_res_free(r);
	return rc;
}

apim_rc store_document_get(db *d, arena *pool, const char *api_id, const char *id,
			   store_document *out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r,
			     "SELECT " DOC_COLS " FROM am_api_document WHERE api_id = ? AND id = ?",
			     DB_ARGS(api_id, id));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(r) == 0)
		rc = APIM_ENOTFOUND;
	else
		doc_from_row(pool, r, 0, out);
	db_res_free(r);
	return rc;
}

apim_rc store_document_list(db *d, arena *pool, const char *api_id, int64_t offset,
			    int64_t limit, store_document **out, size_t *n, int64_t *total)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, "SELECT COUNT(*) FROM am_api_document WHERE api_id = ?",
			     DB_ARGS(api_id));
	if (rc != APIM_OK)
		return rc;
	*total = db_res_int(r, 0, 0);
	db_res_free(r);
	char *sql = arena_sprintf(pool,
				  "SELECT " DOC_COLS_SHORT " FROM am_api_document WHERE api_id = ? "
				  "ORDER BY name LIMIT %" PRId64 " OFFSET %" PRId64,
				  limit, offset);
	rc = db_exec(d, &r, sql, DB_ARGS(api_id));
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(r);
	*out = arena_alloc(pool, (rows + 1) * sizeof(store_document));
	for (size_t i = 0; i < rows; i++)
		doc_from_row(pool, r, i, &(*out)[i]);
	*n = rows;
	db_res_free(r);
	return APIM_OK;
}

apim_rc store_document_list_full(db *d, arena *pool, const char *api_id, store_document **out,
				 size_t *n)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r,
			     "SELECT " DOC_COLS " FROM am_api_document WHERE api_id = ? "
			     "ORDER BY name",
			     DB_ARGS(api_id));
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(r);
	*out = arena_alloc(pool, (rows + 1) * sizeof(store_document));
	for (size_t i = 0; i < rows; i++)
		doc_from_row(pool, r, i, &(*out)[i]);
	*n = rows;
	db_res_free(r);
	return APIM_OK;
}

apim_rc store_document_delete(db *d, const char *api_id, const char *id)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, "DELETE FROM am_api_document WHERE api_id = ? AND id = ?",
			     DB_ARGS(api_id, id));
	if (rc == APIM_OK && db_res_changes(r) == 0)
		rc = APIM_ENOTFOUND;
	db_res_free(r);
	return rc;
}

apim_rc store_document_delete_all(db *d, const char *api_id)
{
	return db_exec(d, NULL, "DELETE FROM am_api_document WHERE api_id = ?", DB_ARGS(api_id));
}
