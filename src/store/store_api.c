/*
 * store_api.c: APIs, revisions, deployments and policy usage in apimgtdb
 * (see store_api.h for the tables).
 */
#include "store/store_api.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const store_api_steps[] = {
	/* 1: APIs, tags, policy usage, revisions, deployments */
	"CREATE TABLE am_api ("
	" id TEXT PRIMARY KEY,"
	" name TEXT NOT NULL,"
	" version TEXT NOT NULL,"
	" context TEXT NOT NULL,"
	" context_template TEXT NOT NULL,"
	" full_context TEXT NOT NULL,"
	" provider TEXT NOT NULL,"
	" description TEXT,"
	" status TEXT NOT NULL,"
	" is_default INTEGER NOT NULL DEFAULT 0,"
	" created_ms BIGINT NOT NULL,"
	" updated_ms BIGINT NOT NULL,"
	" revision_seq INTEGER NOT NULL DEFAULT 0,"
	" doc TEXT NOT NULL,"
	" swagger TEXT);"
	"CREATE UNIQUE INDEX am_api_full_context ON am_api (full_context);"
	"CREATE UNIQUE INDEX am_api_identity ON am_api (provider, name, version);"
	"CREATE INDEX am_api_name ON am_api (name);"
	"CREATE INDEX am_api_context ON am_api (context);"
	"CREATE INDEX am_api_status ON am_api (status);"
	"CREATE TABLE am_api_tag ("
	" api_id TEXT NOT NULL,"
	" tag TEXT NOT NULL,"
	" PRIMARY KEY (api_id, tag));"
	"CREATE INDEX am_api_tag_tag ON am_api_tag (tag);"
	"CREATE TABLE am_policy_usage ("
	" owner_id TEXT NOT NULL,"
	" api_id TEXT NOT NULL,"
	" level TEXT NOT NULL,"
	" name TEXT NOT NULL,"
	" uses BIGINT NOT NULL,"
	" PRIMARY KEY (owner_id, level, name));"
	"CREATE INDEX am_policy_usage_policy ON am_policy_usage (level, name);"
	"CREATE INDEX am_policy_usage_api ON am_policy_usage (api_id);"
	"CREATE TABLE am_revision ("
	" id TEXT PRIMARY KEY,"
	" api_id TEXT NOT NULL,"
	" rev_number INTEGER NOT NULL,"
	" description TEXT,"
	" created_ms BIGINT NOT NULL,"
	" doc TEXT NOT NULL,"
	" swagger TEXT,"
	" UNIQUE (api_id, rev_number));"
	"CREATE TABLE am_deployment ("
	" api_id TEXT NOT NULL,"
	" environment TEXT NOT NULL,"
	" revision_id TEXT NOT NULL,"
	" vhost TEXT NOT NULL,"
	" display_on_devportal INTEGER NOT NULL,"
	" deployed_ms BIGINT NOT NULL,"
	" status TEXT NOT NULL,"
	" PRIMARY KEY (api_id, environment));"
	"CREATE INDEX am_deployment_env ON am_deployment (environment);"
	"CREATE INDEX am_deployment_rev ON am_deployment (revision_id);",
};

apim_rc store_api_migrate(db *d)
{
	return db_migrate(d, "publisher", store_api_steps,
			  sizeof(store_api_steps) / sizeof(store_api_steps[0]));
}

#define API_COLS                                                                    \
	"id, name, version, context, context_template, full_context, provider, "    \
	"description, status, is_default, created_ms, updated_ms, revision_seq, doc, " \
	"swagger"

static const char *dup_cell(arena *pool, const db_res *r, size_t row, size_t col)
{
	const char *v = db_res_get(r, row, col);
	return v ? arena_strdup(pool, v) : NULL;
}

static void api_from_row(arena *pool, const db_res *r, size_t row, store_api *a)
{
	memset(a, 0, sizeof(*a));
	snprintf(a->id, sizeof(a->id), "%s", db_res_get(r, row, 0) ? db_res_get(r, row, 0) : "");
	a->name = dup_cell(pool, r, row, 1);
	a->version = dup_cell(pool, r, row, 2);
	a->context = dup_cell(pool, r, row, 3);
	a->context_template = dup_cell(pool, r, row, 4);
	a->full_context = dup_cell(pool, r, row, 5);
	a->provider = dup_cell(pool, r, row, 6);
	a->description = dup_cell(pool, r, row, 7);
	a->status = dup_cell(pool, r, row, 8);
	a->is_default = db_res_int(r, row, 9) != 0;
	a->created_ms = db_res_int(r, row, 10);
	a->updated_ms = db_res_int(r, row, 11);
	a->revision_seq = db_res_int(r, row, 12);
	a->doc = dup_cell(pool, r, row, 13);
	a->swagger = dup_cell(pool, r, row, 14);
}

apim_rc store_api_get(db *d, arena *pool, const char *id, store_api *out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, "SELECT " API_COLS " FROM am_api WHERE id = ?", DB_ARGS(id));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(r) == 0)
		rc = APIM_ENOTFOUND;
	else
		api_from_row(pool, r, 0, out);
	db_res_free(r);
	return rc;
}

apim_rc store_api_find_duplicate(db *d, const store_api *a, const char *exclude_id,
				 const char **what)
{
	db_res *r = NULL;
	const char *ex = exclude_id ? exclude_id : "";
	*what = NULL;
	apim_rc rc = db_exec(d, &r, "SELECT 1 FROM am_api WHERE full_context = ? AND id <> ?",
			     DB_ARGS(a->full_context, ex));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(r) > 0)
		*what = "context";
	db_res_free(r);
	if (*what != NULL)
		return APIM_OK;
	rc = db_exec(d, &r,
		     "SELECT 1 FROM am_api WHERE provider = ? AND name = ? AND version = ? AND id <> ?",
		     DB_ARGS(a->provider, a->name, a->version, ex));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(r) > 0)
		*what = "name";
	db_res_free(r);
	return APIM_OK;
}

static apim_rc set_tags(db *d, const char *api_id, const char *const *tags, size_t n)
{
	apim_rc rc = db_exec(d, NULL, "DELETE FROM am_api_tag WHERE api_id = ?", DB_ARGS(api_id));
	for (size_t i = 0; rc == APIM_OK && i < n; i++)
		rc = db_exec(d, NULL, "INSERT INTO am_api_tag (api_id, tag) VALUES (?, ?)",
			     DB_ARGS(api_id, tags[i]));
	return rc;
}

/* Replaces the policy references of owner (an API or a revision of api_id). */
static apim_rc set_usage(db *d, const char *owner_id, const char *api_id,
			 const store_policy_ref *refs, size_t n)
{
	apim_rc rc = db_exec(d, NULL, "DELETE FROM am_policy_usage WHERE owner_id = ?",
			     DB_ARGS(owner_id));
	for (size_t i = 0; rc == APIM_OK && i < n; i++) {
		char uses[24];
		snprintf(uses, sizeof(uses), "%" PRId64, refs[i].uses);
		rc = db_exec(d, NULL,
			     "INSERT INTO am_policy_usage (owner_id, api_id, level, name, uses) "
			     "VALUES (?, ?, ?, ?, ?)",
			     DB_ARGS(owner_id, api_id, refs[i].level, refs[i].name, uses));
	}
	return rc;
}

apim_rc store_api_insert(db *d, const store_api *a, const char *const *tags, size_t ntags,
			 const store_policy_ref *refs, size_t nrefs)
{
	char created[24], updated[24], seq[24];
	snprintf(created, sizeof(created), "%" PRId64, a->created_ms);
	snprintf(updated, sizeof(updated), "%" PRId64, a->updated_ms);
	snprintf(seq, sizeof(seq), "%" PRId64, a->revision_seq);
	apim_rc rc = db_exec(d, NULL,
			     "INSERT INTO am_api (" API_COLS ") VALUES "
			     "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
			     DB_ARGS(a->id, a->name, a->version, a->context, a->context_template,
				     a->full_context, a->provider, a->description, a->status,
				     a->is_default ? "1" : "0", created, updated, seq, a->doc,
				     a->swagger));
	if (rc == APIM_OK)
		rc = set_tags(d, a->id, tags, ntags);
	if (rc == APIM_OK)
		rc = set_usage(d, a->id, a->id, refs, nrefs);
	return rc;
}

apim_rc store_api_update(db *d, const store_api *a, const char *const *tags, size_t ntags,
			 const store_policy_ref *refs, size_t nrefs)
{
	char updated[24], seq[24];
	db_res *r = NULL;
	snprintf(updated, sizeof(updated), "%" PRId64, a->updated_ms);
	snprintf(seq, sizeof(seq), "%" PRId64, a->revision_seq);
	apim_rc rc = db_exec(d, &r,
			     "UPDATE am_api SET name = ?, version = ?, context = ?, "
			     "context_template = ?, full_context = ?, provider = ?, description = ?, "
			     "status = ?, is_default = ?, updated_ms = ?, revision_seq = ?, doc = ?, "
			     "swagger = ? WHERE id = ?",
			     DB_ARGS(a->name, a->version, a->context, a->context_template,
				     a->full_context, a->provider, a->description, a->status,
				     a->is_default ? "1" : "0", updated, seq, a->doc, a->swagger,
				     a->id));
	if (rc != APIM_OK)
		return rc;
	if (db_res_changes(r) == 0)
		rc = APIM_ENOTFOUND;
	db_res_free(r);
	if (rc == APIM_OK)
		rc = set_tags(d, a->id, tags, ntags);
	if (rc == APIM_OK)
		rc = set_usage(d, a->id, a->id, refs, nrefs);
	return rc;
}

apim_rc store_api_set_status(db *d, const char *id, const char *status, const char *doc,
			     int64_t updated_ms)
{
	char updated[24];
	db_res *r = NULL;
	snprintf(updated, sizeof(updated), "%" PRId64, updated_ms);
	apim_rc rc = db_exec(d, &r,
			     "UPDATE am_api SET status = ?, doc = ?, updated_ms = ? WHERE id = ?",
			     DB_ARGS(status, doc, updated, id));
	if (rc == APIM_OK && db_res_changes(r) == 0)
		rc = APIM_ENOTFOUND;
	db_res_free(r);
	return rc;
}

apim_rc store_api_delete(db *d, const char *id)
{
	static const char *const sqls[] = {
		"DELETE FROM am_deployment WHERE api_id = ?",
		"DELETE FROM am_revision WHERE api_id = ?",
		"DELETE FROM am_policy_usage WHERE api_id = ?",
		"DELETE FROM am_api_tag WHERE api_id = ?",
	};
	apim_rc rc = APIM_OK;
	for (size_t i = 0; rc == APIM_OK && i < sizeof(sqls) / sizeof(sqls[0]); i++)
		rc = db_exec(d, NULL, sqls[i], DB_ARGS(id));
	if (rc != APIM_OK)
		return rc;
	db_res *r = NULL;
	rc = db_exec(d, &r, "DELETE FROM am_api WHERE id = ?", DB_ARGS(id));
	if (rc == APIM_OK && db_res_changes(r) == 0)
		rc = APIM_ENOTFOUND;
	db_res_free(r);
	return rc;
}

apim_rc store_api_clear_default(db *d, arena *pool, const char *provider, const char *name,
				const char *except_id, const char ***ids, size_t *n)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r,
			     "SELECT id FROM am_api WHERE provider = ? AND name = ? AND id <> ? "
			     "AND is_default = 1",
			     DB_ARGS(provider, name, except_id));
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(r);
	if (ids != NULL) {
		*ids = arena_alloc(pool, (rows + 1) * sizeof(char *));
		for (size_t i = 0; i < rows; i++)
			(*ids)[i] = arena_strdup(pool, db_res_get(r, i, 0));
		*n = rows;
	}
	db_res_free(r);
	if (rows == 0)
		return APIM_OK;
	return db_exec(d, NULL,
		       "UPDATE am_api SET is_default = 0 WHERE provider = ? AND name = ? AND id <> ?",
		       DB_ARGS(provider, name, except_id));
}

/* Builds the WHERE clause of a list query; params point into q or pool. */
static apim_rc list_where(arena *pool, const store_api_query *q, char *where, size_t wlen,
			  const char **params, size_t *np)
{
	size_t used = 0;
	*np = 0;
	where[0] = '\0';
	for (size_t i = 0; i < q->nterms; i++) {
		const char *f = q->field[i], *v = q->value[i];
		size_t vlen = strlen(v);
		int exact = vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"';
		const char *val;
		const char *clause;
		if (exact)
			v = arena_strndup(pool, v + 1, vlen - 2);
		if (exact) {
			val = v;
		} else {
			char *esc = db_like_escape(v);
			if (esc == NULL)
				return APIM_ENOMEM;
			val = arena_sprintf(pool, "%%%s%%", esc);
			free(esc);
		}
		const char *op = exact ? "= lower(?)" : "LIKE lower(?) ESCAPE '\\'";
		if (strcmp(f, "name") == 0)
			clause = arena_sprintf(pool, "lower(name) %s", op);
		else if (strcmp(f, "context") == 0)
			clause = arena_sprintf(pool, "lower(full_context) %s", op);
		else if (strcmp(f, "provider") == 0)
			clause = arena_sprintf(pool, "lower(provider) %s", op);
		else if (strcmp(f, "version") == 0)
			clause = arena_sprintf(pool, "lower(version) %s", op);
		else if (strcmp(f, "description") == 0)
			clause = arena_sprintf(pool, "lower(description) %s", op);
		else if (strcmp(f, "status") == 0) {
			clause = "upper(status) = upper(?)";
			val = v;
		} else if (strcmp(f, "tag") == 0) {
			clause = "EXISTS (SELECT 1 FROM am_api_tag t WHERE t.api_id = am_api.id AND "
				 "lower(t.tag) = lower(?))";
			val = v;
		} else {
			return APIM_EINVAL;
		}
		int w = snprintf(where + used, wlen - used, "%s%s", used ? " AND " : " WHERE ",
				 clause);
		if (w < 0 || (size_t)w >= wlen - used)
			return APIM_EINVAL;
		used += (size_t)w;
		params[(*np)++] = val;
	}
	return APIM_OK;
}

apim_rc store_api_list(db *d, arena *pool, const store_api_query *q, store_api **out, size_t *n,
		       int64_t *total)
{
	static const char *const columns[] = {"name", "version", "context", "provider",
					      "status", "created_ms", "updated_ms"};
	char where[2048];
	const char *params[8];
	size_t np = 0;
	db_res *r = NULL;
	*out = NULL;
	*n = 0;
	if (q->nterms > 8)
		return APIM_EINVAL;
	apim_rc rc = list_where(pool, q, where, sizeof(where), params, &np);
	if (rc != APIM_OK)
		return rc;
	const char *order = "name";
	for (size_t i = 0; q->order_by && i < sizeof(columns) / sizeof(columns[0]); i++)
		if (strcmp(q->order_by, columns[i]) == 0)
			order = columns[i];
	if (strcmp(order, "context") == 0)
		order = "full_context";
	char *sql = arena_sprintf(pool, "SELECT COUNT(*) FROM am_api%s", where);
	rc = db_exec(d, &r, sql, np, params);
	if (rc != APIM_OK)
		return rc;
	*total = db_res_int(r, 0, 0);
	db_res_free(r);
	sql = arena_sprintf(pool,
			    "SELECT " API_COLS " FROM am_api%s ORDER BY %s %s, version %s, id "
			    "LIMIT %" PRId64 " OFFSET %" PRId64,
			    where, order, q->desc ? "DESC" : "ASC", q->desc ? "DESC" : "ASC",
			    q->limit, q->offset);
	rc = db_exec(d, &r, sql, np, params);
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(r);
	*out = arena_alloc(pool, (rows + 1) * sizeof(store_api));
	for (size_t i = 0; i < rows; i++)
		api_from_row(pool, r, i, &(*out)[i]);
	*n = rows;
	db_res_free(r);
	return APIM_OK;
}

apim_rc store_api_list_in_status(db *d, arena *pool, const store_api_query *q,
				 const char *const *statuses, size_t nstatuses, int64_t max,
				 store_api **out, size_t *n)
{
	char where[2048];
	const char *params[16];
	size_t np = 0;
	db_res *r = NULL;
	*out = NULL;
	*n = 0;
	if (q->nterms > 8 || nstatuses == 0 || nstatuses > 8)
		return APIM_EINVAL;
	apim_rc rc = list_where(pool, q, where, sizeof(where), params, &np);
	if (rc != APIM_OK)
		return rc;
	size_t used = strlen(where);
	int w = snprintf(where + used, sizeof(where) - used, "%s status IN (",
			 used ? " AND" : " WHERE");
	if (w < 0 || (size_t)w >= sizeof(where) - used)
		return APIM_EINVAL;
	used += (size_t)w;
	for (size_t i = 0; i < nstatuses; i++) {
		w = snprintf(where + used, sizeof(where) - used, "%s?", i ? ", " : "");
		if (w < 0 || (size_t)w >= sizeof(where) - used)
			return APIM_EINVAL;
		used += (size_t)w;
		params[np++] = statuses[i];
	}
	if (used + 2 >= sizeof(where))
		return APIM_EINVAL;
	strcat(where, ")");
	char *sql = arena_sprintf(pool,
				  "SELECT " API_COLS " FROM am_api%s ORDER BY name, version, id "
				  "LIMIT %" PRId64,
				  where, max);
	rc = db_exec(d, &r, sql, np, params);
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(r);
	*out = arena_alloc(pool, (rows + 1) * sizeof(store_api));
	for (size_t i = 0; i < rows; i++)
		api_from_row(pool, r, i, &(*out)[i]);
	*n = rows;
	db_res_free(r);
	return APIM_OK;
}

apim_rc store_api_versions(db *d, arena *pool, const char *provider, const char *name,
			   const char *status, const char *except_id, store_api **out, size_t *n)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r,
			     "SELECT " API_COLS " FROM am_api WHERE provider = ? AND name = ? AND "
			     "status = ? AND id <> ? ORDER BY created_ms",
			     DB_ARGS(provider, name, status, except_id));
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(r);
	*out = arena_alloc(pool, (rows + 1) * sizeof(store_api));
	for (size_t i = 0; i < rows; i++)
		api_from_row(pool, r, i, &(*out)[i]);
	*n = rows;
	db_res_free(r);
	return APIM_OK;
}

apim_rc store_api_next_revision(db *d, const char *id, int64_t *number)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r,
			     "UPDATE am_api SET revision_seq = revision_seq + 1 WHERE id = ? "
			     "RETURNING revision_seq",
			     DB_ARGS(id));
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(r) == 0)
		rc = APIM_ENOTFOUND;
	else
		*number = db_res_int(r, 0, 0);
	db_res_free(r);
	return rc;
}

apim_rc store_api_policy_usage(db *d, const char *level, const char *name, int64_t *count)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r,
			     "SELECT COALESCE(SUM(uses), 0) FROM am_policy_usage WHERE level = ? "
			     "AND name = ?",
			     DB_ARGS(level, name));
	if (rc == APIM_OK)
		*count = db_res_int(r, 0, 0);
	db_res_free(r);
	return rc;
}

/* ---------- revisions ---------- */

#define REV_COLS "id, api_id, rev_number, description, created_ms, doc, swagger"
#define REV_COLS_SHORT "id, api_id, rev_number, description, created_ms, NULL, NULL"

static void rev_from_row(arena *pool, const db_res *r, size_t row, store_revision *rv)
{
	memset(rv, 0, sizeof(*rv));
	snprintf(rv->id, sizeof(rv->id), "%s", db_res_get(r, row, 0) ? db_res_get(r, row, 0) : "");
	rv->api_id = dup_cell(pool, r, row, 1);
	rv->number = db_res_int(r, row, 2);
	rv->description = dup_cell(pool, r, row, 3);
	rv->created_ms = db_res_int(r, row, 4);
	rv->doc = dup_cell(pool, r, row, 5);
	rv->swagger = dup_cell(pool, r, row, 6);
}

apim_rc store_revision_insert(db *d, const store_revision *rv, const store_policy_ref *refs,
			      size_t nrefs)
{
	char num[24], created[24];
	snprintf(num, sizeof(num), "%" PRId64, rv->number);
	snprintf(created, sizeof(created), "%" PRId64, rv->created_ms);
	apim_rc rc = db_exec(d, NULL,
			     "INSERT INTO am_revision (" REV_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?)",
			     DB_ARGS(rv->id, rv->api_id, num, rv->description, created, rv->doc,
				     rv->swagger));
	if (rc == APIM_OK)
		rc = set_usage(d, rv->id, rv->api_id, refs, nrefs);
	return rc;
}

static apim_rc rev_get(db *d, arena *pool, const char *sql, size_t n, const char *const *params,
		       store_revision *out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, sql, n, params);
	if (rc != APIM_OK)
		return rc;
	if (db_res_rows(r) == 0)
		rc = APIM_ENOTFOUND;
	else
		rev_from_row(pool, r, 0, out);
	db_res_free(r);
	return rc;
}

apim_rc store_revision_get(db *d, arena *pool, const char *api_id, const char *id,
			   store_revision *out)
{
	return rev_get(d, pool, "SELECT " REV_COLS " FROM am_revision WHERE api_id = ? AND id = ?",
		       DB_ARGS(api_id, id), out);
}

apim_rc store_revision_get_by_number(db *d, arena *pool, const char *api_id, int64_t number,
				     store_revision *out)
{
	char num[24];
	snprintf(num, sizeof(num), "%" PRId64, number);
	return rev_get(d, pool,
		       "SELECT " REV_COLS " FROM am_revision WHERE api_id = ? AND rev_number = ?",
		       DB_ARGS(api_id, num), out);
}

apim_rc store_revision_list(db *d, arena *pool, const char *api_id, int full,
			    store_revision **out, size_t *n)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r,
			     full ? "SELECT " REV_COLS " FROM am_revision WHERE api_id = ? "
				    "ORDER BY rev_number"
				  : "SELECT " REV_COLS_SHORT " FROM am_revision WHERE api_id = ? "
				    "ORDER BY rev_number",
			     DB_ARGS(api_id));
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(r);
	*out = arena_alloc(pool, (rows + 1) * sizeof(store_revision));
	for (size_t i = 0; i < rows; i++)
		rev_from_row(pool, r, i, &(*out)[i]);
	*n = rows;
	db_res_free(r);
	return APIM_OK;
}

apim_rc store_revision_count(db *d, const char *api_id, int64_t *count)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, "SELECT COUNT(*) FROM am_revision WHERE api_id = ?",
			     DB_ARGS(api_id));
	if (rc == APIM_OK)
		*count = db_res_int(r, 0, 0);
	db_res_free(r);
	return rc;
}

apim_rc store_revision_delete(db *d, const char *api_id, const char *id)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, "DELETE FROM am_revision WHERE api_id = ? AND id = ?",
			     DB_ARGS(api_id, id));
	if (rc == APIM_OK && db_res_changes(r) == 0)
		rc = APIM_ENOTFOUND;
	db_res_free(r);
	if (rc == APIM_OK)
		rc = db_exec(d, NULL, "DELETE FROM am_policy_usage WHERE owner_id = ?", DB_ARGS(id));
	return rc;
}

/* ---------- deployments ---------- */

apim_rc store_deployment_put(db *d, const store_deployment *dep)
{
	char ms[24];
	snprintf(ms, sizeof(ms), "%" PRId64, dep->deployed_ms);
	return db_exec(d, NULL,
		       "INSERT INTO am_deployment (api_id, environment, revision_id, vhost, "
		       "display_on_devportal, deployed_ms, status) VALUES (?, ?, ?, ?, ?, ?, ?) "
		       "ON CONFLICT (api_id, environment) DO UPDATE SET "
		       "revision_id = excluded.revision_id, vhost = excluded.vhost, "
		       "display_on_devportal = excluded.display_on_devportal, "
		       "deployed_ms = excluded.deployed_ms, status = excluded.status",
		       DB_ARGS(dep->api_id, dep->environment, dep->revision_id, dep->vhost,
			       dep->display_on_devportal ? "1" : "0", ms, dep->status));
}

apim_rc store_deployment_delete(db *d, const char *api_id, const char *environment)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, "DELETE FROM am_deployment WHERE api_id = ? AND environment = ?",
			     DB_ARGS(api_id, environment));
	if (rc == APIM_OK && db_res_changes(r) == 0)
		rc = APIM_ENOTFOUND;
	db_res_free(r);
	return rc;
}

apim_rc store_deployment_list(db *d, arena *pool, const char *api_id, const char *revision_id,
			      store_deployment **out, size_t *n)
{
	db_res *r = NULL;
	apim_rc rc;
	if (revision_id != NULL)
		rc = db_exec(d, &r,
			     "SELECT api_id, revision_id, environment, vhost, display_on_devportal, "
			     "deployed_ms, status FROM am_deployment WHERE api_id = ? AND "
			     "revision_id = ? ORDER BY environment",
			     DB_ARGS(api_id, revision_id));
	else
		rc = db_exec(d, &r,
			     "SELECT api_id, revision_id, environment, vhost, display_on_devportal, "
			     "deployed_ms, status FROM am_deployment WHERE api_id = ? "
			     "ORDER BY environment",
			     DB_ARGS(api_id));
	if (rc != APIM_OK)
		return rc;
	size_t rows = db_res_rows(r);
	*out = arena_alloc(pool, (rows + 1) * sizeof(store_deployment));
	for (size_t i = 0; i < rows; i++) {
		store_deployment *dp = &(*out)[i];
		dp->api_id = dup_cell(pool, r, i, 0);
		dp->revision_id = dup_cell(pool, r, i, 1);
		dp->environment = dup_cell(pool, r, i, 2);
		dp->vhost = dup_cell(pool, r, i, 3);
		dp->display_on_devportal = db_res_int(r, i, 4) != 0;
		dp->deployed_ms = db_res_int(r, i, 5);
		dp->status = dup_cell(pool, r, i, 6);
	}
	*n = rows;
	db_res_free(r);
	return APIM_OK;
}

apim_rc store_deployment_env_usage(db *d, const char *environment, int64_t *count)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, "SELECT COUNT(*) FROM am_deployment WHERE environment = ?",
			     DB_ARGS(environment));
	if (rc == APIM_OK)
		*count = db_res_int(r, 0, 0);
	db_res_free(r);
	return rc;
}
