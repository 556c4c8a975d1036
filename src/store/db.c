/*
 * db.c: the repository layer over SQLite (WAL) and PostgreSQL (libpq).
 *
 * Connections: every db owns a pthread key; a thread's first call creates
 * its db_conn (registered under d->mu in d->conns so that db_close and
 * db_stats can see every connection), later calls find it with
 * pthread_getspecific alone. The key's destructor closes the connection
 * when the thread exits. The handle inside a db_conn is opened lazily and
 * reopened after the server went away.
 *
 * Results are copied out of the engine into a db_res: rows x cols cells,
 * each a malloc'ed NUL-terminated string or NULL for SQL NULL.
 */
#include "store/db.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"

/* pg_advisory_lock key that serialises db_migrate across nodes ("apim"). */
#define DB_MIGRATE_LOCK_KEY INT64_C(0x6170696d)
/* Retries of a statement that failed with a serialization failure or a
 * deadlock outside a transaction (PostgreSQL). */
#define DB_PG_SERIAL_RETRIES 3
/* Longest single pause between reconnect attempts. */
#define DB_BACKOFF_MAX_MS 1000
/* db_ping never waits longer than this for a connection. */
#define DB_PING_BUDGET_MS 1000
/* How much of a failing statement goes into the log. */
#define DB_LOG_SQL_MAX 200

typedef struct db_conn db_conn;

#define DB_STMT_CACHE 64

/* One thread's connection to one db. Only the owning thread touches the
 * handles; `open` and `in_tx` are atomics because db_stats reads them from
 * another thread. */
struct db_conn {
	db *owner;
	db_conn *next; /* in owner->conns, under owner->mu */
	sqlite3 *lite;
	PGconn *pg;
	int ever_connected;
	int broken;       /* PostgreSQL connection lost inside a transaction */
	uint64_t gen;     /* bumped on every (re)connect */
	atomic_int open;  /* a handle is open */
	atomic_int in_tx; /* db_begin done, no commit/rollback yet */
	/* SQLite prepared statements kept for reuse, by hash of their text:
	 * parsing was the largest cost of small queries (token endpoint). */
	struct {
		char *sql;
		sqlite3_stmt *st;
	} stmts[DB_STMT_CACHE];
};

struct db {
	db_dialect dialect;
	char *name;
	char *path;     /* SQLite file */
	char *conninfo; /* PostgreSQL URI; holds the password: never logged */
	char *safe_url; /* the URL with the password masked, for logs */
	int64_t busy_ms;
	pthread_key_t key;
	pthread_mutex_t mu;
	db_conn *conns;
	atomic_int_fast64_t reconnects;
};

struct db_res {
	size_t rows, cols, cap;
	char **cells; /* rows * cols, row-major */
	int64_t changes;
};

/* ---------------------------------------------------------------- results */

static db_res *res_new(size_t cols)
{
	db_res *r = calloc(1, sizeof(*r));
	if (r != NULL)
		r->cols = cols;
	return r;
}

/* Appends one row of cols empty (NULL) cells; returns its first cell. */
static char **res_add_row(db_res *r)
{
	if (r->rows == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 8;
		size_t cells = cap * (r->cols ? r->cols : 1);
		char **p = realloc(r->cells, cells * sizeof(*p));
		if (p == NULL)
			return NULL;
		r->cells = p;
		r->cap = cap;
	}
	char **row = r->cells + r->rows * r->cols;
	for (size_t i = 0; i < r->cols; i++)
		row[i] = NULL;
	r->rows++;
	return row;
}

static char *res_dup(const char *s, size_t len)
{
	char *p = malloc(len + 1);
	if (p != NULL) {
		memcpy(p, s, len);
		p[len] = '\0';
	}
	return p;
}

size_t db_res_rows(const db_res *r)
{
	return r ? r->rows : 0;
}

size_t db_res_cols(const db_res *r)
{
	return r ? r->cols : 0;
}

const char *db_res_get(const db_res *r, size_t row, size_t col)
{
	if (r == NULL || row >= r->rows || col >= r->cols)
		return NULL;
	return r->cells[row * r->cols + col];
}

int64_t db_res_int(const db_res *r, size_t row, size_t col)
{
	const char *s = db_res_get(r, row, col);
	return s ? strtoll(s, NULL, 10) : 0;
}

int64_t db_res_changes(const db_res *r)
{
	return r ? r->changes : 0;
}

void db_res_free(db_res *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->rows * r->cols; i++)
		free(r->cells[i]);
	free(r->cells);
	free(r);
}

/* ------------------------------------------------------------------ misc */

static void db_sleep_ms(int64_t ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Copies url with the password (userinfo after ':' and a password=
 * query parameter) replaced by "***". malloc'ed. */
static char *db_mask_url(const char *url)
{
	size_t len = strlen(url);
	/* every mask adds at most 3 bytes and needs at least 9 of input */
	char *out = malloc(2 * len + 8);
	if (out == NULL)
		return NULL;
	const char *scheme = strstr(url, "://");
	const char *query = strchr(url, '?');
	const char *end = query ? query : url + len;
	const char *at = NULL;
	if (scheme != NULL) {
		for (const char *p = scheme + 3; p < end; p++)
			if (*p == '@')
				at = p; /* the last '@': a raw '@' may sit in the password */
	}
	const char *colon = NULL;
	if (at != NULL)
		colon = memchr(scheme + 3, ':', (size_t)(at - (scheme + 3)));
	char *o = out;
	const char *p = url;
	if (colon != NULL) {
		memcpy(o, url, (size_t)(colon + 1 - url));
		o += colon + 1 - url;
		memcpy(o, "***", 3);
		o += 3;
		p = at;
	}
	while (*p) {
		if (query != NULL && p > query && (p[-1] == '&' || p[-1] == '?') &&
		    strncmp(p, "password=", 9) == 0) {
			memcpy(o, "password=***", 12);
			o += 12;
			p += 9;
			while (*p && *p != '&')
				p++;
			continue;
		}
		*o++ = *p++;
	}
	*o = '\0';
	return out;
}

/* The first DB_LOG_SQL_MAX bytes of sql, for a log line. */
static int db_sql_loglen(const char *sql)
{
	size_t n = strlen(sql);
	return (int)(n > DB_LOG_SQL_MAX ? DB_LOG_SQL_MAX : n);
}

char *db_like_escape(const char *s)
{
	size_t len = strlen(s);
	char *out = malloc(2 * len + 1);
	if (out == NULL)
		return NULL;
	char *o = out;
	for (; *s; s++) {
		if (*s == '%' || *s == '_' || *s == '\\')
			*o++ = '\\';
		*o++ = *s;
	}
	*o = '\0';
	return out;
}

/* ------------------------------------------------------------ connections */

/* Closes the engine handle of c (not c itself). */
static void conn_close_handle(db_conn *c)
{
	for (size_t i = 0; i < DB_STMT_CACHE; i++) {
		if (c->stmts[i].st != NULL)
			sqlite3_finalize(c->stmts[i].st);
		free(c->stmts[i].sql);
		c->stmts[i].st = NULL;
		c->stmts[i].sql = NULL;
	}
	if (c->lite != NULL) {
		sqlite3_close_v2(c->lite);
		c->lite = NULL;
	}
	if (c->pg != NULL) {
		PQfinish(c->pg);
		c->pg = NULL;
	}
	atomic_store(&c->open, 0);
}

/* pthread key destructor: the thread is exiting, drop its connection. */
static void conn_destroy(void *arg)
{
	db_conn *c = arg;
	db *d = c->owner;
	pthread_mutex_lock(&d->mu);
	for (db_conn **pp = &d->conns; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	pthread_mutex_unlock(&d->mu);
	conn_close_handle(c);
	free(c);
}

/* This thread's connection record for d, created on first use. The handle
 * inside may still be closed. NULL only when out of memory. */
static db_conn *conn_get(db *d)
{
	db_conn *c = pthread_getspecific(d->key);
	if (c != NULL)
		return c;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->owner = d;
	if (pthread_setspecific(d->key, c) != 0) {
		free(c);
		return NULL;
	}
	pthread_mutex_lock(&d->mu);
	c->next = d->conns;
	d->conns = c;
	pthread_mutex_unlock(&d->mu);
	return c;
}

/* Runs one setup statement on a fresh SQLite handle, retrying while
 * another connection holds the lock it needs (switching to WAL takes an
 * exclusive lock that the busy handler does not wait for). */
static int lite_setup(db *d, sqlite3 *h, const char *sql)
{
	int64_t deadline = apim_mono_ms() + d->busy_ms;
	for (;;) {
		int rc = sqlite3_exec(h, sql, NULL, NULL, NULL);
		if ((rc & 0xff) != SQLITE_BUSY || apim_mono_ms() >= deadline)
			return rc;
		db_sleep_ms(10);
	}
}

static apim_rc lite_connect(db *d, db_conn *c)
{
	sqlite3 *h = NULL;
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
	int rc = sqlite3_open_v2(d->path, &h, flags, NULL);
	if (rc != SQLITE_OK) {
		log_error("db", "%s: cannot open %s: %s", d->name, d->safe_url,
			  h ? sqlite3_errmsg(h) : sqlite3_errstr(rc));
		sqlite3_close_v2(h);
		return APIM_EUNAVAIL;
	}
	sqlite3_extended_result_codes(h, 1);
	sqlite3_busy_timeout(h, d->busy_ms > INT32_MAX ? INT32_MAX : (int)d->busy_ms);
	static const char *const pragmas[] = {
		"PRAGMA journal_mode=WAL",
		"PRAGMA synchronous=NORMAL",
		"PRAGMA foreign_keys=ON",
	};
	for (size_t i = 0; i < sizeof(pragmas) / sizeof(pragmas[0]); i++) {
		rc = lite_setup(d, h, pragmas[i]);
		if (rc != SQLITE_OK) {
			log_error("db", "%s: %s on %s failed: %s", d->name, pragmas[i],
				  d->safe_url, sqlite3_errmsg(h));
			sqlite3_close_v2(h);
			return (rc & 0xff) == SQLITE_BUSY ? APIM_EUNAVAIL : APIM_EDB;
		}
	}
	c->lite = h;
	c->gen++;
	c->ever_connected = 1;
	atomic_store(&c->open, 1);
	log_debug("db", "%s: opened %s", d->name, d->safe_url);
	return APIM_OK;
}

static void pg_notice(void *arg, const char *message)
{
	db *d = arg;
	log_debug("db", "%s: %s", d->name, message);
}

/* One connection attempt to PostgreSQL; a failure is logged at warn level
 * unless quiet (retries of an outage already reported). */
static apim_rc pg_connect_once(db *d, db_conn *c, int quiet)
{
	/* expand_dbname=1 parses the URI; connect_timeout comes first so that
	 * a value in the URI wins over our default. */
	char timeout[24];
	int64_t secs = (d->busy_ms + 999) / 1000;
	snprintf(timeout, sizeof(timeout), "%" PRId64, secs < 2 ? 2 : secs);
	const char *const keys[] = {"connect_timeout", "dbname", NULL};
	const char *const vals[] = {timeout, d->conninfo, NULL};
	PGconn *pg = PQconnectdbParams(keys, vals, 1);
	if (pg == NULL)
		return APIM_ENOMEM;
	if (PQstatus(pg) != CONNECTION_OK) {
		/* libpq's message names host, port and user, never the password */
		char msg[512];
		snprintf(msg, sizeof(msg), "%s", PQerrorMessage(pg));
		msg[strcspn(msg, "\n")] = '\0';
		log_write(quiet ? LOG_DEBUG : LOG_WARN, "db", "%s: cannot connect to %s: %s", d->name,
			  d->safe_url, msg);
		PQfinish(pg);
		return APIM_EUNAVAIL;
	}
	PQsetNoticeProcessor(pg, pg_notice, d);
	PGresult *r = PQexec(pg, "SET client_min_messages=warning");
	int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	PQclear(r);
	if (!ok) {
		log_warn("db", "%s: session setup on %s failed: %s", d->name, d->safe_url,
			 PQerrorMessage(pg));
		PQfinish(pg);
		return APIM_EUNAVAIL;
	}
	c->pg = pg;
	c->gen++;
	if (c->ever_connected) {
		atomic_fetch_add(&d->reconnects, 1);
		log_info("db", "%s: reconnected to %s", d->name, d->safe_url);
	} else {
		log_debug("db", "%s: connected to %s", d->name, d->safe_url);
	}
	c->ever_connected = 1;
	atomic_store(&c->open, 1);
	return APIM_OK;
}

/*
 * Makes sure c has a usable PostgreSQL handle, connecting with backoff
 * until budget_ms has passed (at least one attempt). A connection that is
 * bad inside a transaction is not replaced: the transaction is gone, so
 * the connection is marked broken and APIM_EUNAVAIL returned until
 * db_rollback.
 */
static apim_rc pg_ensure(db *d, db_conn *c, int64_t budget_ms)
{
	if (c->broken)
		return APIM_EUNAVAIL;
	if (c->pg != NULL && PQstatus(c->pg) == CONNECTION_OK)
		return APIM_OK;
	if (atomic_load(&c->in_tx)) {
		c->broken = 1;
		return APIM_EUNAVAIL;
	}
	conn_close_handle(c);
	int64_t deadline = apim_mono_ms() + budget_ms;
	int64_t pause = 50;
	for (int attempt = 0;; attempt++) {
		apim_rc rc = pg_connect_once(d, c, attempt > 0);
		if (rc != APIM_EUNAVAIL)
			return rc;
		int64_t left = deadline - apim_mono_ms();
		if (left <= 0)
			break;
		db_sleep_ms(pause < left ? pause : left);
		pause = pause * 2 > DB_BACKOFF_MAX_MS ? DB_BACKOFF_MAX_MS : pause * 2;
	}
	log_error("db", "%s: %s unreachable for %" PRId64 " ms", d->name, d->safe_url,
		  budget_ms);
	return APIM_EUNAVAIL;
}

/* This thread's connection, opened if needed. */
static apim_rc conn_ready(db *d, db_conn **out, int64_t budget_ms)
{
	db_conn *c = conn_get(d);
	if (c == NULL)
		return APIM_ENOMEM;
	*out = c;
	if (d->dialect == DB_POSTGRES)
		return pg_ensure(d, c, budget_ms);
	return c->lite != NULL ? APIM_OK : lite_connect(d, c);
}

/* ---------------------------------------------------------------- SQLite */

/* Maps the last error of h; logs what is not a conflict or a busy wait. */
static apim_rc lite_error(db *d, sqlite3 *h, int code, const char *sql)
{
	int ext = sqlite3_extended_errcode(h);
	if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY) {
		log_debug("db", "%s: conflict: %s", d->name, sqlite3_errmsg(h));
		return APIM_ECONFLICT;
	}
	if ((code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED) {
		log_warn("db", "%s: database busy for %" PRId64 " ms: %s", d->name, d->busy_ms,
			 sqlite3_errmsg(h));
		return APIM_EUNAVAIL;
	}
	if ((code & 0xff) == SQLITE_NOMEM)
		return APIM_ENOMEM;
	log_error("db", "%s: %s (%d) in: %.*s", d->name, sqlite3_errmsg(h), ext,
		  db_sql_loglen(sql), sql);
	return APIM_EDB;
}

/* Slot of sql in the statement cache. */
static size_t stmt_slot(const char *sql)
{
	uint32_t h = 2166136261u;
	for (const char *p = sql; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h % DB_STMT_CACHE;
}

/* Only whitespace (or nothing) in s. */
static int all_space(const char *s)
{
	while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')
		s++;
	return *s == '\0';
}

/*
 * Prepares the statement at tail. A whole-string single statement (sql ==
 * tail) comes from, or goes into, the connection's cache: *cached says so,
 * and such a statement is reset rather than finalized after use.
 */
static int lite_prepare(db_conn *c, const char *sql, const char *tail, sqlite3_stmt **st,
			const char **next, int *cached)
{
	*cached = 0;
	if (tail == sql) {
		size_t slot = stmt_slot(sql);
		if (c->stmts[slot].sql != NULL && strcmp(c->stmts[slot].sql, sql) == 0) {
			*st = c->stmts[slot].st;
			*next = sql + strlen(sql);
			*cached = 1;
			return SQLITE_OK;
		}
		int src = sqlite3_prepare_v3(c->lite, tail, -1, SQLITE_PREPARE_PERSISTENT, st, next);
		if (src != SQLITE_OK || *st == NULL || !all_space(*next))
			return src;
		char *copy = strdup(sql);
		if (copy == NULL)
			return SQLITE_OK; /* used once, finalized as usual */
		if (c->stmts[slot].st != NULL)
			sqlite3_finalize(c->stmts[slot].st);
		free(c->stmts[slot].sql);
		c->stmts[slot].sql = copy;
		c->stmts[slot].st = *st;
		*cached = 1;
		return SQLITE_OK;
	}
	return sqlite3_prepare_v2(c->lite, tail, -1, st, next);
}

/* Done with st: cached statements are reset for the next use. */
static void lite_release(sqlite3_stmt *st, int cached)
{
	if (st == NULL)
		return;
	if (cached) {
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
	} else {
		sqlite3_finalize(st);
	}
}

/*
 * Runs sql on a SQLite handle. Several statements are allowed only without
 * parameters (migrations); the rows returned are the last statement's.
 */
static apim_rc lite_exec(db *d, db_conn *c, db_res **out, const char *sql, size_t n,
			 const char *const *params)
{
	sqlite3 *h = c->lite;
	db_res *res = NULL;
	sqlite3_stmt *st = NULL;
	apim_rc rc = APIM_OK;
	int nstmt = 0, cached = 0;
	const char *tail = sql;

	while (*tail != '\0') {
		const char *next = NULL;
		int src = lite_prepare(c, sql, tail, &st, &next, &cached);
		if (src != SQLITE_OK) {
			rc = lite_error(d, h, src, tail);
			goto out;
		}
		if (st == NULL)
			break; /* only whitespace or comments left */
		tail = next;
		if (++nstmt > 1 && n > 0) {
			log_error("db", "%s: parameters given to several statements: %.*s", d->name,
				  db_sql_loglen(sql), sql);
			rc = APIM_EINTERNAL;
			goto out;
		}
		if ((size_t)sqlite3_bind_parameter_count(st) != n) {
			log_error("db", "%s: %d placeholders but %zu parameters in: %.*s", d->name,
				  sqlite3_bind_parameter_count(st), n, db_sql_loglen(sql), sql);
			rc = APIM_EINTERNAL;
			goto out;
		}
		for (size_t i = 0; i < n; i++) {
			src = params[i] ? sqlite3_bind_text(st, (int)i + 1, params[i], -1,
							    SQLITE_STATIC)
					: sqlite3_bind_null(st, (int)i + 1);
			if (src != SQLITE_OK) {
				rc = lite_error(d, h, src, sql);
				goto out;
			}
		}
		db_res_free(res);
		res = res_new((size_t)sqlite3_column_count(st));
		if (res == NULL) {
			rc = APIM_ENOMEM;
			goto out;
		}
		sqlite3_int64 before = sqlite3_total_changes64(h);
		while ((src = sqlite3_step(st)) == SQLITE_ROW) {
			if (out == NULL)
				continue;
			char **row = res_add_row(res);
			if (row == NULL) {
				rc = APIM_ENOMEM;
				goto out;
			}
			for (size_t i = 0; i < res->cols; i++) {
				if (sqlite3_column_type(st, (int)i) == SQLITE_NULL)
					continue;
				const unsigned char *v = sqlite3_column_text(st, (int)i);
				size_t len = (size_t)sqlite3_column_bytes(st, (int)i);
				row[i] = res_dup(v ? (const char *)v : "", v ? len : 0);
				if (row[i] == NULL) {
					rc = APIM_ENOMEM;
					goto out;
				}
			}
		}
		if (src != SQLITE_DONE) {
			rc = lite_error(d, h, src, sql);
			goto out;
		}
		/* sqlite3_changes() keeps the last DML's count across SELECTs
		 * and DDL: only believe it when this statement changed rows. */
		res->changes = sqlite3_total_changes64(h) != before ? sqlite3_changes64(h) : 0;
		lite_release(st, cached);
		st = NULL;
	}
	if (out != NULL) {
		if (res == NULL)
			res = res_new(0);
		if (res == NULL) {
			rc = APIM_ENOMEM;
			goto out;
		}
		*out = res;
		res = NULL;
	}
out:
	lite_release(st, cached);
	db_res_free(res);
	return rc;
}

/* ------------------------------------------------------------ PostgreSQL */

static int pg_ident_char(char ch)
{
	return ch == '_' || (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z');
}

/*
 * Rewrites `?` placeholders to $1..$n, leaving alone '...' literals
 * (E'...' with backslash escapes), "..." identifiers, -- and block
 * comments. Dollar-quoted strings and the jsonb `?` operators are not
 * understood: do not use them in statements with parameters. With
 * out == NULL only counts. Returns the number found.
 */
static size_t pg_placeholders(const char *sql, char *out)
{
	size_t count = 0;
	const char *p = sql;
	char *o = out;
	/* copies one byte (when writing) and always moves on */
#define PG_COPY()                  \
	do {                       \
		if (o != NULL)     \
			*o++ = *p; \
		p++;               \
	} while (0)
	while (*p) {
		char ch = *p;
		if (ch == '\'' || ch == '"') {
			int esc = ch == '\'' && p > sql && (p[-1] | 0x20) == 'e' &&
				  (p - 1 == sql || !pg_ident_char(p[-2]));
			PG_COPY();
			while (*p && *p != ch) {
				if (esc && *p == '\\' && p[1])
					PG_COPY();
				PG_COPY();
			}
			if (*p)
				PG_COPY();
		} else if (ch == '-' && p[1] == '-') {
			while (*p && *p != '\n')
				PG_COPY();
		} else if (ch == '/' && p[1] == '*') {
			PG_COPY();
			PG_COPY();
			while (*p && !(p[0] == '*' && p[1] == '/'))
				PG_COPY();
			if (*p) {
				PG_COPY();
				PG_COPY();
			}
		} else if (ch == '?') {
			count++;
			if (o != NULL)
				o += sprintf(o, "$%zu", count);
			p++;
		} else {
			PG_COPY();
		}
	}
#undef PG_COPY
	if (o != NULL)
		*o = '\0';
	return count;
}

/*
 * 1 when sql cannot have changed anything, so that running it again on a
 * fresh connection after the first one died mid-statement is safe: a
 * SELECT (no data-modifying CTE: those start with WITH), BEGIN, SET, SHOW.
 * Any other statement outside a transaction may have committed before the
 * connection died, and is never re-run.
 */
static int pg_rerunnable(const char *sql)
{
	static const char *const reads[] = {"SELECT", "BEGIN", "SET", "SHOW"};
	while (*sql == ' ' || *sql == '\n' || *sql == '\t' || *sql == '\r' || *sql == '(')
		sql++;
	for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
		size_t n = strlen(reads[i]);
		if (strncasecmp(sql, reads[i], n) == 0 && !pg_ident_char(sql[n]))
			return 1;
	}
	return 0;
}

/*
 * An idle connection has nothing to read: when its socket is readable (or
 * hung up), the server ended the session (a restart, pg_terminate_backend,
 * an idle timeout; its last words are a FATAL message and EOF). Checking
 * before sending lets the caller reconnect with the statement not sent yet
 * (one poll(2), no wait). Only for connections outside a transaction.
 */
static int pg_idle_conn_dead(PGconn *pg)
{
	struct pollfd p = {.fd = PQsocket(pg), .events = POLLIN | POLLRDHUP};
	if (p.fd < 0)
		return 1;
	int n = poll(&p, 1, 0);
	return n > 0 && (p.revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

/* 1 when a failed result means the connection is gone. */
static int pg_lost(PGconn *pg, const char *state)
{
	if (PQstatus(pg) != CONNECTION_OK)
		return 1;
	if (state == NULL)
		return 0;
	/* class 08: connection exception; 57P0x: shutdown, crash, not yet up,
	 * database dropped, idle session timeout */
	return strncmp(state, "08", 2) == 0 || strncmp(state, "57P0", 4) == 0;
}

static apim_rc pg_copy_result(PGresult *r, db_res **out)
{
	db_res *res = res_new((size_t)PQnfields(r));
	if (res == NULL)
		return APIM_ENOMEM;
	/* PQcmdTuples also counts the rows of a SELECT or FETCH: only DML
	 * changes rows */
	const char *tag = PQcmdStatus(r);
	if (tag != NULL && (strncmp(tag, "INSERT ", 7) == 0 || strncmp(tag, "UPDATE ", 7) == 0 ||
			    strncmp(tag, "DELETE ", 7) == 0 || strncmp(tag, "MERGE ", 6) == 0))
		res->changes = strtoll(PQcmdTuples(r), NULL, 10);
	int rows = PQntuples(r);
	for (int i = 0; i < rows; i++) {
		char **row = res_add_row(res);
		if (row == NULL)
			goto nomem;
		for (size_t j = 0; j < res->cols; j++) {
			if (PQgetisnull(r, i, (int)j))
				continue;
			row[j] = res_dup(PQgetvalue(r, i, (int)j),
					 (size_t)PQgetlength(r, i, (int)j));
			if (row[j] == NULL)
				goto nomem;
		}
	}
	*out = res;
	return APIM_OK;
nomem:
	db_res_free(res);
	return APIM_ENOMEM;
}

/*
 * Runs sql on PostgreSQL. Without parameters it goes through PQexec, which
 * accepts several statements (migrations); with parameters the `?` are
 * rewritten and it goes through PQexecParams. Outside a transaction a
 * connection the server closed while idle is replaced before sending; one
 * lost during the statement is reopened (with backoff up to budget_ms) and
 * the statement retried once when it is a read (pg_rerunnable), never
 * when it may have written; serialization failures/deadlocks are retried a
 * few times. Inside a transaction both end in APIM_EUNAVAIL.
 */
static apim_rc pg_exec(db *d, db_conn *c, db_res **out, const char *sql, size_t n,
		       const char *const *params, int64_t budget_ms)
{
	char *rsql = NULL;
	apim_rc rc = APIM_OK;
	int reconnected = 0;
	int serial_tries = 0;

	if (n > 0) {
		size_t found = pg_placeholders(sql, NULL);
		if (found != n) {
			log_error("db", "%s: %zu placeholders but %zu parameters in: %.*s", d->name,
				  found, n, db_sql_loglen(sql), sql);
			return APIM_EINTERNAL;
		}
		/* each 1-byte '?' becomes at most 1 + 20 bytes */
		rsql = malloc(strlen(sql) + 20 * n + 1);
		if (rsql == NULL)
			return APIM_ENOMEM;
		pg_placeholders(sql, rsql);
	}
	for (;;) {
		if (c->pg != NULL && !atomic_load(&c->in_tx) && PQstatus(c->pg) == CONNECTION_OK &&
		    pg_idle_conn_dead(c->pg)) {
			log_info("db", "%s: the server closed an idle connection; reconnecting",
				 d->name);
			conn_close_handle(c);
		}
		rc = pg_ensure(d, c, budget_ms);
		if (rc != APIM_OK)
			break;
		PGresult *r = n > 0 ? PQexecParams(c->pg, rsql, (int)n, NULL, params, NULL, NULL, 0)
				    : PQexec(c->pg, sql);
		ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
		if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) {
			rc = out ? pg_copy_result(r, out) : APIM_OK;
			PQclear(r);
			break;
		}
		const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
		if (pg_lost(c->pg, state)) {
			PQclear(r);
			if (atomic_load(&c->in_tx)) {
				log_warn("db", "%s: connection lost inside a transaction", d->name);
				c->broken = 1;
				rc = APIM_EUNAVAIL;
				break;
			}
			if (reconnected) {
				rc = APIM_EUNAVAIL;
				break;
			}
			if (!pg_rerunnable(sql)) {
				/* the server may have committed it before the connection
				 * died: running it again could apply it twice */
				log_warn("db", "%s: connection lost during a write; not run again "
					       "(it may have been applied): %.*s",
					 d->name, db_sql_loglen(sql), sql);
				conn_close_handle(c);
				rc = APIM_EUNAVAIL;
				break;
			}
			log_warn("db", "%s: connection lost, reconnecting", d->name);
			conn_close_handle(c);
			reconnected = 1;
			continue;
		}
		if (state != NULL && strcmp(state, "23505") == 0) {
			log_debug("db", "%s: conflict: %s", d->name,
				  PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
			PQclear(r);
			rc = APIM_ECONFLICT;
			break;
		}
		if (state != NULL && (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)) {
			PQclear(r);
			if (!atomic_load(&c->in_tx) && serial_tries++ < DB_PG_SERIAL_RETRIES) {
				db_sleep_ms(10 * serial_tries);
				continue;
			}
			log_warn("db", "%s: serialization failure or deadlock (%s)", d->name, state);
			rc = APIM_EUNAVAIL;
			break;
		}
		/* the primary message only: DETAIL may quote parameter values */
		const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
		log_error("db", "%s: %s (%s) in: %.*s", d->name,
			  msg ? msg : PQerrorMessage(c->pg), state ? state : "-", db_sql_loglen(sql),
			  sql);
		PQclear(r);
		rc = APIM_EDB;
		break;
	}
	free(rsql);
	return rc;
}

/* ------------------------------------------------------------ public API */

apim_rc db_open(db **out, const char *url, const char *name, int64_t busy_timeout_ms)
{
	*out = NULL;
	if (url == NULL || name == NULL) {
		log_error("db", "database URL missing");
		return APIM_ECONFIG;
	}
	db *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return APIM_ENOMEM;
	d->busy_ms = busy_timeout_ms > 0 ? busy_timeout_ms : 0;
	d->name = strdup(name);
	d->safe_url = db_mask_url(url);
	apim_rc rc = APIM_ENOMEM;
	if (d->name == NULL || d->safe_url == NULL)
		goto fail;

	if (strncmp(url, "sqlite://", 9) == 0) {
		d->dialect = DB_SQLITE;
		/* sqlite:///abs/path keeps its leading '/', sqlite://rel is relative */
		const char *path = url + 9;
		if (*path == '\0' || strcmp(path, "/") == 0) {
			log_error("db", "%s: no file in database URL %s", name, d->safe_url);
			rc = APIM_ECONFIG;
			goto fail;
		}
		if (strcmp(path, ":memory:") == 0) {
			/* every thread has its own connection, hence its own database */
			log_error("db", "%s: in-memory SQLite cannot be shared between threads: "
					"use a file", name);
			rc = APIM_ECONFIG;
			goto fail;
		}
		d->path = strdup(path);
		if (d->path == NULL)
			goto fail;
	} else if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0) {
		d->dialect = DB_POSTGRES;
		char *err = NULL;
		PQconninfoOption *opts = PQconninfoParse(url, &err);
		if (opts == NULL) {
			/* err may quote a piece of the URL: the password, maybe */
			PQfreemem(err);
			log_error("db", "%s: malformed PostgreSQL URL %s", name, d->safe_url);
			rc = APIM_ECONFIG;
			goto fail;
		}
		PQconninfoFree(opts);
		d->conninfo = strdup(url);
		if (d->conninfo == NULL)
			goto fail;
	} else {
		log_error("db", "%s: unsupported database URL %s (want sqlite:// or postgresql://)",
			  name, d->safe_url);
		rc = APIM_ECONFIG;
		goto fail;
	}
	if (pthread_mutex_init(&d->mu, NULL) != 0)
		goto fail;
	if (pthread_key_create(&d->key, conn_destroy) != 0) {
		pthread_mutex_destroy(&d->mu);
		goto fail;
	}
	atomic_init(&d->reconnects, 0);
	*out = d;
	return APIM_OK;
fail:
	free(d->name);
	free(d->safe_url);
	free(d->path);
	free(d->conninfo);
	free(d);
	return rc;
}

/*
 * Deleting the key first means no thread-exit destructor runs for d after
 * this point; threads that used d must be idle or joined (a thread exiting
 * while db_close runs is a caller bug, as is any later use).
 */
void db_close(db *d)
{
	if (d == NULL)
		return;
	pthread_key_delete(d->key);
	pthread_mutex_lock(&d->mu);
	db_conn *c = d->conns;
	d->conns = NULL;
	pthread_mutex_unlock(&d->mu);
	while (c != NULL) {
		db_conn *next = c->next;
		conn_close_handle(c);
		free(c);
		c = next;
	}
	pthread_mutex_destroy(&d->mu);
	free(d->name);
	free(d->path);
	free(d->conninfo);
	free(d->safe_url);
	free(d);
}

db_dialect db_dialect_of(const db *d)
{
	return d->dialect;
}

const char *db_name(const db *d)
{
	return d->name;
}

/* Runs on this thread's connection with the given reconnect budget. */
static apim_rc db_exec_budget(db *d, db_res **out, const char *sql, size_t n,
			      const char *const *params, int64_t budget_ms)
{
	if (out != NULL)
		*out = NULL;
	if (sql == NULL || (n > 0 && params == NULL))
		return APIM_EINTERNAL;
	db_conn *c = conn_get(d);
	if (c == NULL)
		return APIM_ENOMEM;
	if (d->dialect == DB_POSTGRES)
		return pg_exec(d, c, out, sql, n, params, budget_ms);
	if (c->lite == NULL) {
		apim_rc rc = lite_connect(d, c);
		if (rc != APIM_OK)
			return rc;
	}
	return lite_exec(d, c, out, sql, n, params);
}

apim_rc db_exec(db *d, db_res **out, const char *sql, size_t n, const char *const *params)
{
	return db_exec_budget(d, out, sql, n, params, d->busy_ms);
}

apim_rc db_begin(db *d)
{
	db_conn *c = conn_get(d);
	if (c == NULL)
		return APIM_ENOMEM;
	if (atomic_load(&c->in_tx)) {
		log_error("db", "%s: db_begin inside a transaction", d->name);
		return APIM_EINTERNAL;
	}
	apim_rc rc = db_exec(d, NULL, d->dialect == DB_SQLITE ? "BEGIN IMMEDIATE" : "BEGIN",
			     DB_NOARGS);
	if (rc == APIM_OK)
		atomic_store(&c->in_tx, 1);
	return rc;
}

apim_rc db_begin_read(db *d)
{
	db_conn *c = conn_get(d);
	if (c == NULL)
		return APIM_ENOMEM;
	if (atomic_load(&c->in_tx)) {
		log_error("db", "%s: db_begin_read inside a transaction", d->name);
		return APIM_EINTERNAL;
	}
	apim_rc rc = db_exec(d, NULL, d->dialect == DB_SQLITE ?
			     "BEGIN" : "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", DB_NOARGS);
	if (rc == APIM_OK)
		atomic_store(&c->in_tx, 1);
	return rc;
}

/* Ends the transaction state of c whatever happened on the server. */
static void conn_end_tx(db_conn *c)
{
	atomic_store(&c->in_tx, 0);
	if (c->broken) {
		c->broken = 0;
		conn_close_handle(c); /* reconnect on next use */
	}
}

void db_rollback(db *d)
{
	if (d == NULL)
		return;
	db_conn *c = pthread_getspecific(d->key);
	if (c == NULL || !atomic_load(&c->in_tx))
		return;
	if (d->dialect == DB_SQLITE) {
		/* an error may already have rolled back: then there is nothing to do */
		if (c->lite != NULL && !sqlite3_get_autocommit(c->lite))
			sqlite3_exec(c->lite, "ROLLBACK", NULL, NULL, NULL);
	} else if (!c->broken && c->pg != NULL && PQstatus(c->pg) == CONNECTION_OK) {
		PGresult *r = PQexec(c->pg, "ROLLBACK");
		if (PQresultStatus(r) != PGRES_COMMAND_OK)
			c->broken = 1; /* state unknown: drop the connection */
		PQclear(r);
	} else {
		c->broken = 1;
	}
	conn_end_tx(c);
}

/* On failure the transaction is rolled back and the error returned. */
apim_rc db_commit(db *d)
{
	db_conn *c = pthread_getspecific(d->key);
	if (c == NULL || !atomic_load(&c->in_tx)) {
		log_error("db", "%s: db_commit outside a transaction", d->name);
		return APIM_EINTERNAL;
	}
	if (d->dialect == DB_POSTGRES && !c->broken && c->pg != NULL &&
	    PQtransactionStatus(c->pg) == PQTRANS_INERROR) {
		/* COMMIT would silently answer ROLLBACK */
		log_error("db", "%s: commit of a transaction aborted by an earlier error", d->name);
		db_rollback(d);
		return APIM_EDB;
	}
	apim_rc rc = db_exec(d, NULL, "COMMIT", DB_NOARGS);
	if (rc != APIM_OK) {
		db_rollback(d);
		return rc;
	}
	conn_end_tx(c);
	return APIM_OK;
}

int db_in_tx(db *d)
{
	db_conn *c = pthread_getspecific(d->key);
	return c != NULL && atomic_load(&c->in_tx);
}

/* Current version of module (0 when unknown) on this thread's connection. */
static apim_rc db_schema_version(db *d, const char *module, int64_t *out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, "SELECT version FROM apim_schema WHERE module = ?",
			     DB_ARGS(module));
	if (rc == APIM_OK)
		*out = db_res_rows(r) ? db_res_int(r, 0, 0) : 0;
	db_res_free(r);
	return rc;
}

/*
 * Applies steps[version..n-1] of module, each with its version bump in one
 * transaction. PostgreSQL: the whole run holds a session advisory lock on
 * this thread's connection, so a node that starts meanwhile waits and then
 * finds the work done; if the connection is replaced mid-run (the lock is
 * gone with it) the run stops with APIM_EUNAVAIL. SQLite: BEGIN IMMEDIATE
 * takes the write lock and the version is re-read under it.
 */
apim_rc db_migrate(db *d, const char *module, const char *const *steps, size_t n)
{
	db_conn *c = NULL;
	apim_rc rc = conn_ready(d, &c, d->busy_ms);
	int locked = 0;
	uint64_t gen = 0;
	char sql[96];

	if (rc != APIM_OK)
		return rc;
	if (atomic_load(&c->in_tx)) {
		log_error("db", "%s: db_migrate inside a transaction", d->name);
		return APIM_EINTERNAL;
	}
	if (d->dialect == DB_POSTGRES) {
		snprintf(sql, sizeof(sql), "SELECT pg_advisory_lock(%" PRId64 ")",
			 DB_MIGRATE_LOCK_KEY);
		rc = db_exec(d, NULL, sql, DB_NOARGS);
		if (rc != APIM_OK)
			return rc;
		locked = 1;
		gen = c->gen;
	}
	rc = db_exec(d, NULL,
		     "CREATE TABLE IF NOT EXISTS apim_schema ("
		     "module TEXT PRIMARY KEY, version INTEGER NOT NULL)",
		     DB_NOARGS);
	if (rc != APIM_OK)
		goto out;
	int64_t version = 0;
	rc = db_schema_version(d, module, &version);
	if (rc != APIM_OK)
		goto out;
	if (version > (int64_t)n)
		log_warn("db", "%s: schema of %s is at version %" PRId64
			       " but this build knows %zu steps",
			 d->name, module, version, n);
	while (version < (int64_t)n) {
		rc = db_begin(d);
		if (rc != APIM_OK)
			goto out;
		if (locked && c->gen != gen) {
			/* db_begin reconnected: the advisory lock went with the old session */
			log_error("db", "%s: connection lost while migrating %s", d->name, module);
			db_rollback(d);
			rc = APIM_EUNAVAIL;
			goto out;
		}
		/* another node may have gone ahead (SQLite) */
		rc = db_schema_version(d, module, &version);
		if (rc != APIM_OK || version >= (int64_t)n) {
			db_rollback(d);
			goto out;
		}
		rc = db_exec(d, NULL, steps[version], DB_NOARGS);
		if (rc != APIM_OK) {
			log_error("db", "%s: migration %s step %" PRId64 " failed", d->name, module,
				  version + 1);
			db_rollback(d);
			goto out;
		}
		char vbuf[24];
		snprintf(vbuf, sizeof(vbuf), "%" PRId64, version + 1);
		rc = db_exec(d, NULL,
			     "INSERT INTO apim_schema (module, version) VALUES (?, ?) "
			     "ON CONFLICT (module) DO UPDATE SET version = excluded.version",
			     DB_ARGS(module, vbuf));
		if (rc != APIM_OK) {
			db_rollback(d);
			goto out;
		}
		rc = db_commit(d);
		if (rc != APIM_OK)
			goto out;
		version++;
		log_info("db", "%s: %s schema now at version %" PRId64, d->name, module, version);
	}
out:
	if (locked && c->gen == gen && c->pg != NULL) {
		snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock(%" PRId64 ")",
			 DB_MIGRATE_LOCK_KEY);
		PGresult *r = PQexec(c->pg, sql);
		PQclear(r);
	}
	return rc;
}

static const char *const db_change_steps[] = {
	"CREATE TABLE am_change_seq (id INTEGER PRIMARY KEY, seq BIGINT NOT NULL);"
	"INSERT INTO am_change_seq (id, seq) VALUES (1, 0);"
	"CREATE TABLE am_change_log (seq BIGINT PRIMARY KEY, entity_type TEXT NOT NULL,"
	" entity_id TEXT NOT NULL, action TEXT NOT NULL, payload TEXT,"
	" created_ms BIGINT NOT NULL);"
	"CREATE INDEX am_change_log_entity ON am_change_log (entity_type, entity_id);",
};

apim_rc db_change_migrate(db *d)
{
	return db_migrate(d, "changes", db_change_steps,
			  sizeof(db_change_steps) / sizeof(db_change_steps[0]));
}

/*
 * The counter row is updated first: its row lock (PostgreSQL) or the write
 * lock (SQLite) is held until the caller commits, so a later transaction
 * gets a larger number and commits after this one.
 */
apim_rc db_change_record(db *d, const char *entity_type, const char *entity_id,
			 const char *action, const char *payload, int64_t *seq_out)
{
	db_res *r = NULL;
	if (!db_in_tx(d)) {
		log_error("db", "%s: db_change_record outside a transaction", d->name);
		return APIM_EINTERNAL;
	}
	apim_rc rc = db_exec(d, &r, "UPDATE am_change_seq SET seq = seq + 1 WHERE id = 1 RETURNING seq",
			     DB_NOARGS);
	if (rc != APIM_OK)
		goto out;
	if (db_res_rows(r) != 1) {
		log_error("db", "%s: am_change_seq has no counter row", d->name);
		rc = APIM_EDB;
		goto out;
	}
	const char *seq = db_res_get(r, 0, 0);
	char now[24];
	snprintf(now, sizeof(now), "%" PRId64, apim_now_ms());
	rc = db_exec(d, NULL,
		     "INSERT INTO am_change_log (seq, entity_type, entity_id, action, payload,"
		     " created_ms) VALUES (?, ?, ?, ?, ?, ?)",
		     DB_ARGS(seq, entity_type, entity_id, action, payload, now));
	if (rc != APIM_OK)
		goto out;
	if (seq_out != NULL)
		*seq_out = db_res_int(r, 0, 0);
out:
	db_res_free(r);
	return rc;
}

apim_rc db_change_current(db *d, int64_t *seq_out)
{
	db_res *r = NULL;
	apim_rc rc = db_exec(d, &r, "SELECT seq FROM am_change_seq WHERE id = 1", DB_NOARGS);
	if (rc == APIM_OK) {
		if (db_res_rows(r) == 1) {
			*seq_out = db_res_int(r, 0, 0);
		} else {
			log_error("db", "%s: am_change_seq has no counter row", d->name);
			rc = APIM_EDB;
		}
	}
	db_res_free(r);
	return rc;
}

int db_ping(db *d)
{
	int64_t budget = d->busy_ms < DB_PING_BUDGET_MS ? d->busy_ms : DB_PING_BUDGET_MS;
	db_res *r = NULL;
	apim_rc rc = db_exec_budget(d, &r, "SELECT 1", DB_NOARGS, budget);
	int ok = rc == APIM_OK && db_res_int(r, 0, 0) == 1;
	db_res_free(r);
	return ok;
}

void db_stats(db *d, int64_t *open, int64_t *in_tx, int64_t *reconnects)
{
	int64_t o = 0, t = 0;
	pthread_mutex_lock(&d->mu);
	for (db_conn *c = d->conns; c != NULL; c = c->next) {
		o += atomic_load(&c->open);
		t += atomic_load(&c->in_tx);
	}
	pthread_mutex_unlock(&d->mu);
	if (open != NULL)
		*open = o;
	if (in_tx != NULL)
		*in_tx = t;
	if (reconnects != NULL)
		*reconnects = atomic_load(&d->reconnects);
}
