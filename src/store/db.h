/*
 * db.h: the one repository layer over SQLite (WAL) and PostgreSQL (libpq).
 *
 * A `db` is one logical database (apimgtdb or shareddb) named by a URL:
 * sqlite:///abs/path.db, sqlite://relative/path.db or
 * postgresql://user:pass@host:port/dbname. Each thread that uses it gets its
 * own connection, opened on first use and kept for the thread's life (the
 * HTTP pool threads are long-lived). Statements use `?` placeholders in both
 * dialects; the layer rewrites them to $1.. for PostgreSQL. All values go in
 * and come out as text (NULL for SQL NULL): integers are decimal strings,
 * JSON documents are text columns. Write portable SQL: TEXT, BIGINT, INTEGER,
 * no AUTOINCREMENT/SERIAL, ids are UUIDs made by apim_uuid().
 *
 * Errors: a unique/primary-key violation is APIM_ECONFLICT; a lost or
 * unreachable server is APIM_EUNAVAIL (the REST edge answers 503), after one
 * transparent reconnect-and-retry when no transaction was open; anything
 * else is APIM_EDB and is logged with the SQL error.
 */
#ifndef APIM_DB_H
#define APIM_DB_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef struct db db;
typedef struct db_res db_res;

typedef enum { DB_SQLITE, DB_POSTGRES } db_dialect;

/* Opens (lazily: no connection yet) a database; name is for logs/metrics
 * ("apimgtdb", "shareddb"). busy_timeout_ms bounds lock waits and
 * reconnect attempts. The URL's password never reaches the logs. */
apim_rc db_open(db **out, const char *url, const char *name, int64_t busy_timeout_ms);
/* Closes every thread's connection. No thread may use d afterwards. */
void db_close(db *d);
db_dialect db_dialect_of(const db *d);
const char *db_name(const db *d);

/*
 * Runs sql with n text parameters (NULL = SQL NULL). On success *out (when
 * out != NULL) receives the rows, which the caller frees with db_res_free().
 */
apim_rc db_exec(db *d, db_res **out, const char *sql, size_t n, const char *const *params);

/* db_exec(d, &res, "SELECT .. WHERE a = ? AND b = ?", DB_ARGS(a, b)) */
#define DB_ARGS(...)                                                          \
	(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)),        \
		((const char *const[]){__VA_ARGS__})
#define DB_NOARGS 0, NULL

size_t db_res_rows(const db_res *r);
size_t db_res_cols(const db_res *r);
/* Cell text, or NULL for SQL NULL or out of range. Borrowed from r. */
const char *db_res_get(const db_res *r, size_t row, size_t col);
int64_t db_res_int(const db_res *r, size_t row, size_t col); /* 0 when NULL */
/* Rows changed by an INSERT/UPDATE/DELETE. */
int64_t db_res_changes(const db_res *r);
void db_res_free(db_res *r);

/*
 * Transactions on this thread's connection. db_begin takes the write lock at
 * once on SQLite (BEGIN IMMEDIATE) so concurrent writers queue instead of
 * failing. Always pair with db_commit or db_rollback (rollback is safe to
 * call when nothing is open).
 */
apim_rc db_begin(db *d);
/* A read-only transaction whose reads all see one snapshot: PostgreSQL
 * REPEATABLE READ; SQLite a deferred BEGIN (WAL: the snapshot is taken at
 * the first read, and no write lock is held). End it with db_rollback. */
apim_rc db_begin_read(db *d);
apim_rc db_commit(db *d);
/* Ends the transaction, if any (d may be NULL: nothing to do). */
void db_rollback(db *d);
int db_in_tx(db *d);

/*
 * Migrations: each module owns its tables and an ordered list of steps
 * (step i is version i+1). db_migrate applies the steps this database has
 * not seen yet, each in its own transaction together with the version
 * bump, under a lock that serialises nodes starting at once (PostgreSQL
 * advisory lock; SQLite's write lock).
 */
apim_rc db_migrate(db *d, const char *module, const char *const *steps, size_t n);

/* Creates the change tables (am_change_seq with its counter row,
 * am_change_log) through db_migrate(d, "changes", ...). */
apim_rc db_change_migrate(db *d);

/*
 * Change sequence (apimgtdb only): records that entity (type, id) changed
 * with action ("create", "update", "delete", "deploy", ...), and returns its
 * sequence number, strictly increasing in commit order across every node
 * (a single counter row updated inside the caller's transaction). Must be
 * called inside a transaction. payload may be NULL (JSON text otherwise).
 */
apim_rc db_change_record(db *d, const char *entity_type, const char *entity_id,
			 const char *action, const char *payload, int64_t *seq_out);
/* Last committed change sequence number. */
apim_rc db_change_current(db *d, int64_t *seq_out);

/* 1 when the database answers a trivial query now. */
int db_ping(db *d);

/* Pool state for /metrics: open connections, connections inside a
 * transaction, reconnects so far. */
void db_stats(db *d, int64_t *open, int64_t *in_tx, int64_t *reconnects);

/* Escapes s for use inside a LIKE pattern with ESCAPE '\'. malloc'ed. */
char *db_like_escape(const char *s);

#endif
