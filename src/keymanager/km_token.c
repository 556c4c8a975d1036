/*
 * km_token.c: access and refresh tokens: issuing (km_token_issue and the
 * token endpoint with its four grants), introspection, revocation,
 * userinfo, the revoked-JWT list, and the bearer verifier that turns our
 * JWTs into principals on every REST API.
 *
 * Tables (apimgtdb, module "tokens"):
 * - km_token: one row per issued access token and, when one was issued with
 *   it, its refresh token (stored as SHA-256). family is the jti of the
 *   first token of the grant; tokens refreshed from it share it, so a
 *   revoked or replayed refresh token takes the whole grant down. state:
 *   ACTIVE; ROTATED (its refresh token was used: the refresh token is dead
 *   and its access token revoked); REVOKED.
 * - km_auth_code: authorization codes (km_authorize.c).
 * - am_revoked_jwt: the reference's AM_REVOKED_JWT; each row is recorded
 *   under the change sequence ("revoked_jwt") so gateways learn of it.
 * Rows are purged some time after they expire (PURGE_MARGIN_MS covers the
 * largest leeway a verifier may apply).
 *
 * Rows of tokens without a refresh token (client_credentials, the
 * Developer Portal's application tokens: the high-volume kind) are written
 * behind: a writer thread inserts them in batches, one transaction per
 * batch, at most FLUSH_MS after issue. A JWT is self-contained and every
 * revocation lands in am_revoked_jwt, so the row only serves introspection
 * (which accepts a valid, unrevoked token whose row is not written yet),
 * revocation by client, and cleanup. Whatever reads those rows on this node
 * first waits for the queue (tok_flush). The cost of that choice: a crash
 * loses the rows of the last few milliseconds, and a client deleted on
 * another node within those milliseconds keeps those tokens until they
 * expire. Rows with a refresh token are written before the answer.
 *
 * Tokens, refresh tokens and codes never reach the logs.
 */
#include "keymanager/km_token.h"

#include <ctype.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "auth/auth.h"
#include "auth/auth_users.h"
#include "common/log.h"
#include "common/util.h"
#include "keymanager/km_authorize.h"
#include "keymanager/km_keys.h"
#include "store/db.h"

#define PURGE_EVERY_MS 60000
/* Expired rows stay this long: the largest keymanager.leeway allowed. */
#define PURGE_MARGIN_MS (600 * 1000)
#define REFRESH_BYTES 32
/* write-behind batches: rows per transaction, and the longest a row
 * waits (INSERTs take at most 32 rows: 224 parameters, under SQLite's
 * historical limit of 999) */
#define BATCH_MAX 128
#define FLUSH_MS 5
/* past this many queued rows (database down), new rows are written
 * synchronously by the request instead */
#define QUEUE_MAX 20000
#define RETRY_AFTER "60"

/* Step i is schema version i+1; append new steps, never edit old ones. */
static const char *const tok_steps[] = {
	"CREATE TABLE km_token ("
	" jti TEXT PRIMARY KEY,"
	" client_id TEXT NOT NULL,"
	" username TEXT,"
	" scope TEXT NOT NULL,"
	" issued_ms BIGINT NOT NULL,"
	" expires_ms BIGINT NOT NULL,"
	" refresh_hash TEXT UNIQUE,"
	" refresh_expires_ms BIGINT,"
	" state TEXT NOT NULL,"
	" family TEXT NOT NULL);"
	"CREATE INDEX km_token_by_client ON km_token (client_id);"
	"CREATE INDEX km_token_by_family ON km_token (family);"
	"CREATE INDEX km_token_by_expiry ON km_token (expires_ms);"
	"CREATE TABLE km_auth_code ("
	" code_hash TEXT PRIMARY KEY,"
	" client_id TEXT NOT NULL,"
	" username TEXT NOT NULL,"
	" redirect_uri TEXT,"
	" scope TEXT NOT NULL,"
	" code_challenge TEXT NOT NULL,"
	" method TEXT NOT NULL,"
	" expires_ms BIGINT NOT NULL,"
	" used INTEGER NOT NULL,"
	" family TEXT);"
	"CREATE INDEX km_auth_code_by_expiry ON km_auth_code (expires_ms);"
	"CREATE TABLE am_revoked_jwt ("
	" jti TEXT PRIMARY KEY,"
	" expiry_ms BIGINT NOT NULL,"
	" revoked_ms BIGINT NOT NULL);"
	"CREATE INDEX am_revoked_jwt_by_expiry ON am_revoked_jwt (expiry_ms)",
};

static _Atomic int64_t tok_last_purge_ms = INT64_MIN / 2;

/* ------------------------------------------------------------ helpers */

/* A time-ordered UUID (version 7: 48-bit ms timestamp, then 74 random
 * bits), so that the jti and family indexes grow at their end instead of
 * splitting pages at random. */
static void tok_uuid7(char out[APIM_UUID_LEN + 1])
{
	unsigned char b[16];
	uint64_t ms = (uint64_t)apim_now_ms();
	apim_random(b + 6, sizeof(b) - 6);
	for (int i = 0; i < 6; i++)
		b[i] = (unsigned char)(ms >> (40 - 8 * i));
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x70);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	snprintf(out, APIM_UUID_LEN + 1,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
		 b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
		 b[14], b[15]);
}

static void tok_i64(char out[24], int64_t v)
{
	snprintf(out, 24, "%" PRId64, v);
}

/* 1 when the space-separated list holds w. */
static int tok_list_has(const char *list, const char *w)
{
	size_t n = strlen(w);
	const char *s = list;
	while (s != NULL && *s) {
		while (*s == ' ')
			s++;
		const char *e = s;
		while (*e && *e != ' ')
			e++;
		if ((size_t)(e - s) == n && n > 0 && memcmp(s, w, n) == 0)
			return 1;
		s = e;
	}
	return 0;
}

static int tok_vec_has(const char *const *v, size_t n, const char *w)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i], w) == 0)
			return 1;
	return 0;
}

/* Splits a space-separated list into distinct words (array from pool). */
static const char **tok_split(arena *pool, const char *s, size_t *n)
{
	size_t cap = 1;
	for (const char *p = s; p && *p; p++)
		cap += *p == ' ';
	const char **v = arena_alloc(pool, (cap + 1) * sizeof(*v));
	*n = 0;
	while (s != NULL && *s) {
		while (*s == ' ')
			s++;
		const char *e = s;
		while (*e && *e != ' ')
			e++;
		if (e > s) {
			char *w = arena_strndup(pool, s, (size_t)(e - s));
			if (!tok_vec_has(v, *n, w))
				v[(*n)++] = w;
		}
		s = e;
	}
	return v;
}

/* 1 when s is a valid scope parameter (RFC 6749 section 3.3: tokens of
 * %x21 / %x23-5B / %x5D-7E separated by spaces). */
static int tok_scope_syntax_ok(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p != ' ' && (*p < 0x21 || *p == 0x22 || *p == 0x5c || *p > 0x7e))
			return 0;
	return 1;
}

/*
 * The narrowing rule, without the database: requested scopes that the
 * client allows (client_scopes NULL or "" = any) and, for apim: scopes,
 * that role_scopes hold. "default" when nothing remains (the reference).
 */
static const char *tok_narrow(arena *pool, const char *requested, const char *client_scopes,
			      const char *const *role_scopes, size_t nrole)
{
	size_t n = 0;
	const char **req = tok_split(pool, requested, &n);
	size_t len = 1;
	for (size_t i = 0; i < n; i++)
		len += strlen(req[i]) + 1;
	char *out = arena_alloc(pool, len + sizeof("default"));
	size_t o = 0;
	int any_client = client_scopes == NULL || *client_scopes == '\0';
	for (size_t i = 0; i < n; i++) {
		const char *s = req[i];
		if (strcmp(s, "default") == 0)
			continue;
		if (!any_client && !tok_list_has(client_scopes, s))
			continue;
		if (strncmp(s, "apim:", 5) == 0 && !tok_vec_has(role_scopes, nrole, s))
			continue;
		if (o > 0)
			out[o++] = ' ';
		memcpy(out + o, s, strlen(s));
		o += strlen(s);
	}
	if (o == 0) {
		memcpy(out, "default", 7);
		o = 7;
	}
	out[o] = '\0';
	return out;
}

/* Scopes the roles of username give (none when the user does not exist). */
static apim_rc tok_user_scopes(apim_ctx *ctx, arena *pool, const char *username,
			       const char ***scopes, size_t *n)
{
	auth_user u;
	*scopes = NULL;
	*n = 0;
	if (username == NULL)
		return APIM_OK;
	apim_rc rc = auth_users_get_by_name(ctx, pool, username, &u);
	if (rc == APIM_ENOTFOUND)
		return APIM_OK;
	if (rc != APIM_OK)
		return rc;
	return auth_roles_scopes(ctx, pool, u.roles, u.nroles, scopes, n);
}

apim_rc km_token_scopes(apim_ctx *ctx, arena *pool, const km_client *c, const char *user,
			const char *requested, const char **granted)
{
	const char **roles_scopes = NULL;
	size_t nrs = 0;
	/* the roles are looked up only when an apim: scope is asked for */
	if (requested != NULL && strstr(requested, "apim:") != NULL) {
		apim_rc rc = tok_user_scopes(ctx, pool, user ? user : c->owner, &roles_scopes, &nrs);
		if (rc != APIM_OK)
			return rc;
	}
	*granted = tok_narrow(pool, requested ? requested : "", c->scopes, roles_scopes, nrs);
	return APIM_OK;
}

/* Opportunistic clean-up of expired rows, at most once a minute. */
static void tok_purge(apim_ctx *ctx)
{
	int64_t now = apim_mono_ms();
	int64_t last = atomic_load(&tok_last_purge_ms);
	if (now - last < PURGE_EVERY_MS ||
	    !atomic_compare_exchange_strong(&tok_last_purge_ms, &last, now))
		return;
	char cut[24];
	tok_i64(cut, apim_now_ms() - PURGE_MARGIN_MS);
	db *d = ctx->apimgt;
	if (db_exec(d, NULL,
		    "DELETE FROM km_token WHERE expires_ms < ?"
		    " AND (refresh_expires_ms IS NULL OR refresh_expires_ms < ?)",
		    DB_ARGS(cut, cut)) != APIM_OK ||
	    db_exec(d, NULL, "DELETE FROM km_auth_code WHERE expires_ms < ?", DB_ARGS(cut)) !=
		    APIM_OK ||
	    db_exec(d, NULL, "DELETE FROM am_revoked_jwt WHERE expiry_ms < ?", DB_ARGS(cut)) !=
		    APIM_OK)
		log_warn("keymanager", "purging expired tokens failed; retrying in a minute");
}

/* ------------------------------------------------------------ write-behind */

#define ROW_COLS 7 /* jti, client_id, username, scope, issued_ms, expires_ms, family */

typedef struct tok_row {
	struct tok_row *next;
	const char *v[ROW_COLS];
	char data[]; /* the strings */
} tok_row;

static struct {
	pthread_mutex_t mu;
	pthread_cond_t wake; /* the writer waits for rows */
	pthread_cond_t done; /* tok_flush waits for the writer */
	tok_row *head, *tail;
	size_t n;
	uint64_t queued, written; /* rows so far: enqueued, written or dropped */
	int running, stop, hurry;
	pthread_t th;
	apim_ctx *ctx;
} tok_q = {.mu = PTHREAD_MUTEX_INITIALIZER,
	   .wake = PTHREAD_COND_INITIALIZER,
	   .done = PTHREAD_COND_INITIALIZER};

static atomic_int tok_stopping;

static const char tok_row_cols[] =
	"INSERT INTO km_token (jti, client_id, username, scope, issued_ms, expires_ms,"
	" refresh_hash, refresh_expires_ms, state, family) VALUES ";
static const char tok_row_values[] = "(?, ?, ?, ?, ?, ?, NULL, NULL, 'ACTIVE', ?)";

/* Inserts n rows with one multi-row INSERT (n <= BATCH_MAX). */
static apim_rc tok_rows_insert_one(db *d, tok_row *const *rows, size_t n)
{
	size_t len = sizeof(tok_row_cols) + n * (sizeof(tok_row_values) + 2);
	char *sql = malloc(len);
	const char **args = malloc(n * ROW_COLS * sizeof(*args));
	apim_rc rc = APIM_ENOMEM;
	if (sql == NULL || args == NULL)
		goto out;
	size_t o = 0;
	memcpy(sql, tok_row_cols, sizeof(tok_row_cols) - 1);
	o += sizeof(tok_row_cols) - 1;
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			sql[o++] = ',';
		memcpy(sql + o, tok_row_values, sizeof(tok_row_values) - 1);
		o += sizeof(tok_row_values) - 1;
		memcpy(args + i * ROW_COLS, rows[i]->v, sizeof(rows[i]->v));
	}
	sql[o] = '\0';
	rc = db_exec(d, NULL, sql, n * ROW_COLS, args);
out:
	free(sql);
	free(args);
	return rc;
}

/* Inserts n rows in chunks of a few fixed sizes, so that the statements
 * repeat (cheaper to parse, cacheable). */
static apim_rc tok_rows_insert_chunks(db *d, tok_row *const *rows, size_t n)
{
	static const size_t chunks[] = {32, 8, 1};
	apim_rc rc = APIM_OK;
	size_t done = 0;
	for (size_t k = 0; rc == APIM_OK && k < sizeof(chunks) / sizeof(chunks[0]); k++)
		while (rc == APIM_OK && n - done >= chunks[k]) {
			rc = tok_rows_insert_one(d, rows + done, chunks[k]);
			done += chunks[k];
		}
	return rc;
}

/* Inserts n rows in one transaction. */
static apim_rc tok_rows_insert(db *d, tok_row *const *rows, size_t n)
{
	apim_rc rc = db_begin(d);
	if (rc == APIM_OK)
		rc = tok_rows_insert_chunks(d, rows, n);
	if (rc == APIM_OK)
		return db_commit(d);
	db_rollback(d);
	return rc;
}

/* The writer thread: waits for rows, lets them gather for up to FLUSH_MS
 * (unless someone waits in tok_flush), writes them in batches. */
static void *tok_writer(void *arg)
{
	(void)arg;
	tok_row *batch[BATCH_MAX];
	pthread_mutex_lock(&tok_q.mu);
	for (;;) {
		while (tok_q.head == NULL && !tok_q.stop)
			pthread_cond_wait(&tok_q.wake, &tok_q.mu);
		if (tok_q.head == NULL)
			break;
		if (tok_q.n < BATCH_MAX && !tok_q.hurry && !tok_q.stop) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += FLUSH_MS * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&tok_q.wake, &tok_q.mu, &ts);
		}
		size_t n = 0;
		while (tok_q.head != NULL && n < BATCH_MAX) {
			batch[n++] = tok_q.head;
			tok_q.head = tok_q.head->next;
		}
		if (tok_q.head == NULL) {
			tok_q.tail = NULL;
			tok_q.hurry = 0;
		}
		tok_q.n -= n;
		pthread_mutex_unlock(&tok_q.mu);

		/* a database that is down gets a few tries, but not while
		 * stopping: shutdown must not wait on it */
		apim_rc rc = APIM_EUNAVAIL;
		for (int attempt = 0; attempt < 3; attempt++) {
			if (attempt > 0)
				usleep(200 * 1000);
			rc = tok_rows_insert(tok_q.ctx->apimgt, batch, n);
			if (rc != APIM_EUNAVAIL || atomic_load(&tok_stopping))
				break;
		}
		if (rc != APIM_OK)
			log_error("keymanager", "%zu issued tokens could not be recorded (%s): their "
				  "introspection still works, revocation by client misses them",
				  n, apim_strerror(rc));
		for (size_t i = 0; i < n; i++)
			free(batch[i]);

		pthread_mutex_lock(&tok_q.mu);
		tok_q.written += n;
		pthread_cond_broadcast(&tok_q.done);
	}
	tok_q.running = 0;
	pthread_cond_broadcast(&tok_q.done);
	pthread_mutex_unlock(&tok_q.mu);
	return NULL;
}

/* Queues a row; 0 when queued, -1 when the caller must write it itself
 * (no writer, or the queue is full). v: ROW_COLS strings, username may be
 * NULL. */
static int tok_enqueue(const char *const *v)
{
	size_t len = 0;
	for (size_t i = 0; i < ROW_COLS; i++)
		len += v[i] ? strlen(v[i]) + 1 : 0;
	tok_row *row = malloc(sizeof(*row) + len);
	if (row == NULL)
		return -1;
	row->next = NULL;
	char *p = row->data;
	for (size_t i = 0; i < ROW_COLS; i++) {
		row->v[i] = NULL;
		if (v[i] != NULL) {
			size_t n = strlen(v[i]) + 1;
			memcpy(p, v[i], n);
			row->v[i] = p;
			p += n;
		}
	}
	pthread_mutex_lock(&tok_q.mu);
	if (!tok_q.running || tok_q.stop || tok_q.n >= QUEUE_MAX) {
		pthread_mutex_unlock(&tok_q.mu);
		free(row);
		return -1;
	}
	if (tok_q.tail != NULL)
		tok_q.tail->next = row;
	else
		tok_q.head = row;
	tok_q.tail = row;
	tok_q.n++;
	tok_q.queued++;
	/* the writer sleeps until the first row, and cuts its wait short
	 * when a batch is full */
	if (tok_q.n == 1 || tok_q.n == BATCH_MAX)
		pthread_cond_signal(&tok_q.wake);
	pthread_mutex_unlock(&tok_q.mu);
	return 0;
}

/*
 * Inside the caller's transaction the writer cannot be waited for (on
 * SQLite it would wait for the caller's write lock): the caller takes the
 * queued rows and inserts them itself, in its transaction. A batch the
 * writer holds at that moment is missed (a window of one batch).
 */
static apim_rc tok_flush_in_tx(db *d)
{
	pthread_mutex_lock(&tok_q.mu);
	tok_row *head = tok_q.head;
	size_t n = tok_q.n;
	tok_q.head = tok_q.tail = NULL;
	tok_q.n = 0;
	pthread_mutex_unlock(&tok_q.mu);
	if (n == 0)
		return APIM_OK;
	tok_row **rows = malloc(n * sizeof(*rows));
	apim_rc rc = APIM_ENOMEM;
	size_t i = 0;
	for (tok_row *r = head; rows != NULL && r != NULL && i < n; r = r->next)
		rows[i++] = r;
	if (rows != NULL)
		rc = tok_rows_insert_chunks(d, rows, n);
	free(rows);
	while (head != NULL) {
		tok_row *next = head->next;
		free(head);
		head = next;
	}
	pthread_mutex_lock(&tok_q.mu);
	tok_q.written += n;
	pthread_cond_broadcast(&tok_q.done);
	pthread_mutex_unlock(&tok_q.mu);
	return rc;
}

/* Waits until every row queued so far is written. */
static void tok_flush(void)
{
	pthread_mutex_lock(&tok_q.mu);
	uint64_t target = tok_q.queued;
	if (tok_q.written < target) {
		tok_q.hurry = 1;
		pthread_cond_signal(&tok_q.wake);
		while (tok_q.running && tok_q.written < target)
			pthread_cond_wait(&tok_q.done, &tok_q.mu);
	}
	pthread_mutex_unlock(&tok_q.mu);
}

static void tok_writer_start(apim_ctx *ctx)
{
	pthread_mutex_lock(&tok_q.mu);
	if (!tok_q.running) {
		tok_q.ctx = ctx;
		tok_q.stop = 0;
		atomic_store(&tok_stopping, 0);
		tok_q.running = pthread_create(&tok_q.th, NULL, tok_writer, NULL) == 0;
		if (!tok_q.running)
			log_warn("keymanager", "no token writer thread: token rows are written "
				 "synchronously");
	}
	pthread_mutex_unlock(&tok_q.mu);
}

void km_token_shutdown(void)
{
	pthread_mutex_lock(&tok_q.mu);
	int joinable = tok_q.running;
	tok_q.stop = 1;
	atomic_store(&tok_stopping, 1);
	pthread_cond_signal(&tok_q.wake);
	pthread_mutex_unlock(&tok_q.mu);
	if (joinable)
		pthread_join(tok_q.th, NULL); /* drains the queue first */
}

/* ------------------------------------------------------------ revocation */

/* Inside a transaction: records jti in am_revoked_jwt (once) under the
 * change sequence. */
static apim_rc tok_revoked_insert(db *d, const char *jti, int64_t exp_ms)
{
	char exp[24], now[24];
	db_res *res = NULL;
	tok_i64(exp, exp_ms);
	tok_i64(now, apim_now_ms());
	apim_rc rc = db_exec(d, &res,
			     "INSERT INTO am_revoked_jwt (jti, expiry_ms, revoked_ms) VALUES (?, ?, ?)"
			     " ON CONFLICT (jti) DO NOTHING",
			     DB_ARGS(jti, exp, now));
	if (rc != APIM_OK)
		return rc;
	int inserted = db_res_changes(res) > 0;
	db_res_free(res);
	if (!inserted)
		return APIM_OK;
	json_t *p = json_pack("{s:s,s:I}", "jti", jti, "exp", (json_int_t)(exp_ms / 1000));
	char *payload = p ? json_dumps(p, JSON_COMPACT) : NULL;
	json_decref(p);
	if (payload == NULL)
		return APIM_ENOMEM;
	rc = db_change_record(d, "revoked_jwt", jti, "revoke", payload, NULL);
	free(payload);
	return rc;
}

/* Begins a transaction unless the caller has one open (then joins it),
 * after the queued token rows are written. */
static apim_rc tok_begin(db *d, int *own)
{
	*own = !db_in_tx(d);
	if (!*own)
		return tok_flush_in_tx(d);
	tok_flush();
	return db_begin(d);
}

static apim_rc tok_end(db *d, int own, apim_rc rc)
{
	if (!own)
		return rc;
	if (rc == APIM_OK)
		return db_commit(d);
	db_rollback(d);
	return rc;
}

/* Revokes the ACTIVE rows matching "<column> = value". */
static apim_rc tok_revoke_where(apim_ctx *ctx, const char *column, const char *value)
{
	db *d = ctx->apimgt;
	db_res *res = NULL;
	int own = 0;
	char sql[160];
	snprintf(sql, sizeof(sql),
		 "UPDATE km_token SET state = 'REVOKED' WHERE %s = ? AND state = 'ACTIVE'"
		 " RETURNING jti, expires_ms", column);
	apim_rc rc = tok_begin(d, &own);
	if (rc != APIM_OK)
		return rc;
	rc = db_exec(d, &res, sql, DB_ARGS(value));
	int64_t now = apim_now_ms();
	for (size_t i = 0; rc == APIM_OK && i < db_res_rows(res); i++) {
		int64_t exp = db_res_int(res, i, 1);
		if (exp + PURGE_MARGIN_MS > now)
			rc = tok_revoked_insert(d, db_res_get(res, i, 0), exp);
	}
	db_res_free(res);
	return tok_end(d, own, rc);
}

apim_rc km_token_revoke_family(apim_ctx *ctx, const char *family)
{
	return tok_revoke_where(ctx, "family", family);
}

apim_rc km_token_revoke_client(apim_ctx *ctx, const char *client_id)
{
	return tok_revoke_where(ctx, "client_id", client_id);
}

apim_rc km_token_revoke_jti(apim_ctx *ctx, const char *jti, int64_t exp_s)
{
	db *d = ctx->apimgt;
	int own = 0;
	apim_rc rc = tok_begin(d, &own);
	if (rc != APIM_OK)
		return rc;
	rc = tok_revoked_insert(d, jti, exp_s * 1000);
	if (rc == APIM_OK)
		rc = db_exec(d, NULL,
			     "UPDATE km_token SET state = 'REVOKED' WHERE jti = ? AND state = 'ACTIVE'",
			     DB_ARGS(jti));
	return tok_end(d, own, rc);
}

/* 1 revoked, 0 not, -1 the database could not tell. */
static int tok_revoked(apim_ctx *ctx, const char *jti)
{
	db_res *res = NULL;
	if (db_exec(ctx->apimgt, &res, "SELECT 1 FROM am_revoked_jwt WHERE jti = ?",
		    DB_ARGS(jti)) != APIM_OK)
		return -1;
	int n = db_res_rows(res) > 0;
	db_res_free(res);
	return n;
}

int km_token_is_revoked(apim_ctx *ctx, const char *jti)
{
	return tok_revoked(ctx, jti) != 0; /* fails closed */
}

/* ------------------------------------------------------------ issuing */

/* What a refresh grant replaces: the row whose refresh token was used. */
typedef struct tok_rotate {
	const char *jti;
	int64_t expires_ms;
	const char *family;
} tok_rotate;

/*
 * Signs and records an access token (and a refresh token when
 * with_refresh) for c and user (NULL: application token) with the granted
 * scopes, valid for validity seconds. With rot, the used row becomes
 * ROTATED and its access token revoked in the same transaction;
 * APIM_EPRECOND when another request rotated it first.
 */
static apim_rc tok_mint(apim_ctx *ctx, arena *pool, const km_client *c, const char *user,
			const char *granted, int64_t validity, int with_refresh,
			const tok_rotate *rot, km_issued *out)
{
	char jti[APIM_UUID_LEN + 1], iss_ms[24], exp_ms[24], rexp_ms[24];
	char refresh[REFRESH_BYTES * 4 / 3 + 4], rhash[65];
	char *jwt = NULL;
	db *d = ctx->apimgt;
	apim_rc rc;

	tok_purge(ctx);
	tok_uuid7(jti);
	int64_t now_ms = apim_now_ms(), now = now_ms / 1000;
	int64_t exp = now + validity;
	json_t *claims = json_pack(
		"{s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:s,s:s}", "iss", km_issuer(ctx),
		"sub", user ? user : (c->owner ? c->owner : c->client_id), "aud", c->client_id,
		"azp", c->client_id, "client_id", c->client_id, "scope", granted, "exp",
		(json_int_t)exp, "iat", (json_int_t)now, "nbf", (json_int_t)now, "jti", jti,
		"aut", user ? "APPLICATION_USER" : "APPLICATION");
	if (claims == NULL)
		return APIM_ENOMEM;
	rc = km_jwt_sign(ctx, claims, &jwt);
	json_decref(claims);
	if (rc != APIM_OK)
		return rc;

	int64_t rvalid = c->refresh_validity > 0 ? c->refresh_validity
						  : ctx->cfg->keymanager_refresh_token_validity;
	if (with_refresh) {
		apim_random_token(refresh, REFRESH_BYTES);
		apim_sha256_hex(refresh, strlen(refresh), rhash);
		tok_i64(rexp_ms, now_ms + rvalid * 1000);
	}
	tok_i64(iss_ms, now_ms);
	tok_i64(exp_ms, exp * 1000);
	const char *family = rot ? rot->family : jti;
	const char *ins = "INSERT INTO km_token (jti, client_id, username, scope, issued_ms,"
			  " expires_ms, refresh_hash, refresh_expires_ms, state, family)"
			  " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'ACTIVE', ?)";
	const char *const args[] = {jti,
				    c->client_id,
				    user,
				    granted,
				    iss_ms,
				    exp_ms,
				    with_refresh ? rhash : NULL,
				    with_refresh ? rexp_ms : NULL,
				    family};
	size_t nargs = sizeof(args) / sizeof(args[0]);
	const char *const queued[ROW_COLS] = {jti, c->client_id, user, granted, iss_ms, exp_ms,
					       family};
	if (rot == NULL && !with_refresh && tok_enqueue(queued) == 0) {
		rc = APIM_OK;
	} else if (rot == NULL) {
		rc = db_exec(d, NULL, ins, nargs, args);
	} else {
		db_res *res = NULL;
		rc = db_begin(d);
		if (rc == APIM_OK)
			rc = db_exec(d, &res,
				     "UPDATE km_token SET state = 'ROTATED'"
				     " WHERE jti = ? AND state = 'ACTIVE'",
				     DB_ARGS(rot->jti));
		if (rc == APIM_OK && db_res_changes(res) != 1)
			rc = APIM_EPRECOND;
		db_res_free(res);
		if (rc == APIM_OK && rot->expires_ms + PURGE_MARGIN_MS > now_ms)
			rc = tok_revoked_insert(d, rot->jti, rot->expires_ms);
		if (rc == APIM_OK)
			rc = db_exec(d, NULL, ins, nargs, args);
		if (rc == APIM_OK)
			rc = db_commit(d);
		else
			db_rollback(d);
	}
	if (rc == APIM_OK) {
		out->access_token = arena_strdup(pool, jwt);
		out->refresh_token = with_refresh ? arena_strdup(pool, refresh) : NULL;
		out->scope = granted;
		out->expires_in = validity;
		out->jti = arena_strdup(pool, jti);
	}
	OPENSSL_cleanse(jwt, strlen(jwt));
	free(jwt);
	OPENSSL_cleanse(refresh, sizeof(refresh));
	return rc;
}

/* The client's access-token lifetime (seconds). */
static int64_t tok_client_validity(apim_ctx *ctx, const km_client *c)
{
	return c->access_validity > 0 ? c->access_validity
				      : ctx->cfg->keymanager_access_token_validity;
}

apim_rc km_token_issue(apim_ctx *ctx, arena *pool, const km_client *c, const char *user,
		       const char *scope, int64_t validity, int with_refresh, km_issued *out)
{
	const char *granted = NULL;
	apim_rc rc = km_token_scopes(ctx, pool, c, user, scope, &granted);
	if (rc != APIM_OK)
		return rc;
	if (validity <= 0)
		validity = tok_client_validity(ctx, c);
	return tok_mint(ctx, pool, c, user, granted, validity, with_refresh && user != NULL, NULL,
			out);
}

apim_rc km_token_migrate(apim_ctx *ctx)
{
	if (ctx->apimgt == NULL)
		return APIM_OK;
	apim_rc rc = db_change_migrate(ctx->apimgt);
	if (rc == APIM_OK)
		rc = db_migrate(ctx->apimgt, "tokens", tok_steps,
				sizeof(tok_steps) / sizeof(tok_steps[0]));
	if (rc != APIM_OK)
		log_error("keymanager", "token table migrations failed: %s", apim_strerror(rc));
	else
		tok_writer_start(ctx);
	return rc;
}

/* ------------------------------------------------------------ bearer */

/*
 * Verifies a bearer token of ours and builds the principal: the token's
 * scopes, where apim: scopes must still be granted by the current roles of
 * the subject (a demoted user loses them at once), and the user's roles
 * for user tokens. APIM_EUNAUTH when invalid or revoked, APIM_EUNAVAIL when
 * the database cannot tell.
 */
static apim_rc tok_verify_bearer(apim_ctx *ctx, arena *pool, const char *token, int64_t leeway,
				 principal **out, json_t **claims_out)
{
	json_t *claims = NULL;
	const char *why = NULL;
	auth_user u;
	apim_rc rc;

	while (*token == ' ')
		token++;
	size_t len = strlen(token);
	while (len > 0 && token[len - 1] == ' ')
		len--;
	if (len == 0 || len > 16384)
		return APIM_EUNAUTH;
	char *t = arena_strndup(pool, token, len);
	rc = km_jwt_verify(ctx, t, leeway, &claims, &why);
	if (rc != APIM_OK)
		return rc == APIM_EUNAVAIL ? rc : APIM_EUNAUTH;
	const char *jti = json_string_value(json_object_get(claims, "jti"));
	const char *sub = json_string_value(json_object_get(claims, "sub"));
	const char *scope = json_string_value(json_object_get(claims, "scope"));
	const char *aut = json_string_value(json_object_get(claims, "aut"));
	const char *cid = json_string_value(json_object_get(claims, "client_id"));
	if (jti == NULL || sub == NULL || cid == NULL) {
		rc = APIM_EUNAUTH;
		goto out;
	}
	int rv = tok_revoked(ctx, jti);
	if (rv != 0) {
		rc = rv < 0 ? APIM_EUNAVAIL : APIM_EUNAUTH;
		goto out;
	}
	int is_user = aut != NULL && strcmp(aut, "APPLICATION_USER") == 0;
	principal *p = arena_alloc(pool, sizeof(*p));
	p->username = arena_strdup(pool, sub);
	p->method = AUTH_BEARER;
	p->client_id = arena_strdup(pool, cid);
	p->roles = arena_alloc(pool, sizeof(char *));
	rc = auth_users_get_by_name(ctx, pool, sub, &u);
	if (rc == APIM_ENOTFOUND && is_user) {
		rc = APIM_EUNAUTH; /* the user is gone */
		goto out;
	}
	const char **rscopes = NULL;
	size_t nrs = 0;
	if (rc == APIM_OK) {
		if (is_user) {
			p->user_id = arena_strdup(pool, u.id);
			p->roles = u.roles;
			p->nroles = u.nroles;
		}
		rc = auth_roles_scopes(ctx, pool, u.roles, u.nroles, &rscopes, &nrs);
	} else if (rc == APIM_ENOTFOUND) {
		rc = APIM_OK;
	}
	if (rc != APIM_OK)
		goto out;
	size_t n = 0;
	const char **all = tok_split(pool, scope ? scope : "", &n);
	const char **keep = arena_alloc(pool, (n + 1) * sizeof(*keep));
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(all[i], "apim:", 5) != 0 || tok_vec_has(rscopes, nrs, all[i]))
			keep[k++] = all[i];
	p->scopes = keep;
	p->nscopes = k;
	*out = p;
out:
	if (rc == APIM_OK && claims_out != NULL)
		*claims_out = json_incref(claims);
	json_decref(claims);
	return rc;
}

static apim_rc tok_bearer(http_req *r, const char *token, principal **out)
{
	return tok_verify_bearer(r->ctx, r->pool, token, r->ctx->cfg->keymanager_leeway, out, NULL);
}

void km_token_install_bearer(apim_ctx *ctx)
{
	(void)ctx;
	auth_set_bearer(tok_bearer);
}

/* ------------------------------------------------------------ OAuth replies */

static void tok_nostore(http_req *r)
{
	http_set_header(r, "Cache-Control", "no-store");
	http_set_header(r, "Pragma", "no-cache");
}

/* RFC 6749 section 5.2 error. */
static void tok_error(http_req *r, int status, const char *error, const char *desc)
{
	json_t *o = json_pack("{s:s,s:s}", "error", error, "error_description", desc);
	http_reply_json(r, status, o);
	tok_nostore(r);
	if (status == 401)
		http_set_header(r, "WWW-Authenticate", "Basic realm=\"apim\"");
	if (status == 429)
		http_set_header(r, "Retry-After", RETRY_AFTER);
}

static void tok_server_error(http_req *r, apim_rc rc)
{
	if (rc == APIM_EUNAVAIL)
		tok_error(r, 503, "temporarily_unavailable",
			  "The authorization server is temporarily unavailable; retry shortly");
	else
		tok_error(r, 500, "server_error", "The authorization server failed; see its logs");
}

/* Checks the form content type; replies invalid_request and returns -1 when
 * it is not application/x-www-form-urlencoded. */
static int tok_need_form(http_req *r)
{
	const char *ct = http_header(r, "Content-Type");
	size_t n = strlen("application/x-www-form-urlencoded");
	if (ct == NULL || strncasecmp(ct, "application/x-www-form-urlencoded", n) != 0 ||
	    (ct[n] != '\0' && ct[n] != ';' && ct[n] != ' ')) {
		tok_error(r, 400, "invalid_request",
			  "Send the parameters as application/x-www-form-urlencoded");
		return -1;
	}
	return 0;
}

/* Form parameter; a repeated one answers invalid_request (*bad = 1). */
static const char *tok_param(http_req *r, const char *name, int *bad)
{
	int dup = 0;
	const char *v = http_form(r, name, &dup);
	if (dup && !*bad) {
		*bad = 1;
		char *d = arena_sprintf(r->pool, "Parameter '%s' is repeated", name);
		tok_error(r, 400, "invalid_request", d);
	}
	return v;
}

static int tok_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* form-urldecodes n bytes (RFC 6749 section 2.3.1); NULL on a NUL byte. */
static char *tok_urldecode(arena *pool, const char *s, size_t n)
{
	char *o = arena_alloc(pool, n + 1);
	size_t j = 0;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (ch == '+') {
			ch = ' ';
		} else if (ch == '%' && i + 2 < n &&
			   tok_hexval(s[i + 1]) >= 0 && tok_hexval(s[i + 2]) >= 0) {
			ch = (char)(tok_hexval(s[i + 1]) * 16 + tok_hexval(s[i + 2]));
			i += 2;
		}
		if (ch == '\0')
			return NULL;
		o[j++] = ch;
	}
	o[j] = '\0';
	return o;
}

/* Decodes "Basic base64(urlenc(id):urlenc(secret))". 0 on success. */
static int tok_basic(arena *pool, const char *authz, const char **id, const char **secret)
{
	const char *b = authz + 6;
	while (*b == ' ')
		b++;
	size_t len = strlen(b);
	while (len > 0 && b[len - 1] == ' ')
		len--;
	size_t dlen = 0;
	unsigned char *dec = apim_base64_decode(b, len, &dlen);
	if (dec == NULL)
		return -1;
	int rc = -1;
	char *colon = memchr(dec, ':', dlen);
	if (colon != NULL && colon != (char *)dec) {
		*id = tok_urldecode(pool, (const char *)dec, (size_t)(colon - (char *)dec));
		*secret = tok_urldecode(pool, colon + 1, dlen - (size_t)(colon + 1 - (char *)dec));
		rc = *id != NULL && *secret != NULL ? 0 : -1;
	}
	OPENSSL_cleanse(dec, dlen);
	free(dec);
	return rc;
}

/*
 * Authenticates the client of the token or revocation endpoint: HTTP Basic
 * or client_id + client_secret in the body, not both. Replies and returns
 * -1 on failure.
 */
static int tok_client_auth(http_req *r, km_client *c)
{
	const char *authz = http_header(r, "Authorization");
	int bad = 0;
	const char *fid = tok_param(r, "client_id", &bad);
	const char *fsecret = tok_param(r, "client_secret", &bad);
	const char *id = NULL, *secret = NULL;
	if (bad)
		return -1;
	if (authz != NULL) {
		if (strncasecmp(authz, "Basic ", 6) != 0 || tok_basic(r->pool, authz, &id, &secret) != 0) {
			tok_error(r, 401, "invalid_client",
				  "Authenticate the client with HTTP Basic: base64 of "
				  "client_id:client_secret");
			return -1;
		}
		if (fsecret != NULL) {
			tok_error(r, 400, "invalid_request",
				  "Use one client authentication method: HTTP Basic or "
				  "client_secret in the body, not both");
			return -1;
		}
		if (fid != NULL && strcmp(fid, id) != 0) {
			tok_error(r, 400, "invalid_request",
				  "client_id in the body differs from the HTTP Basic credentials");
			return -1;
		}
	} else if (fid != NULL && fsecret != NULL) {
		id = fid;
		secret = fsecret;
	} else {
		tok_error(r, 401, "invalid_client",
			  fid ? "client_secret is missing: this server supports confidential "
				"clients only (HTTP Basic or client_id and client_secret)"
			      : "Client authentication is required: HTTP Basic with "
				"client_id:client_secret, or client_id and client_secret in the body");
		return -1;
	}
	apim_rc rc = km_client_authenticate(r->ctx, r->pool, id, secret, c);
	if (rc == APIM_ELOCKED) {
		tok_error(r, 429, "invalid_client",
			  "Too many failed authentications for this client; retry in a minute");
		return -1;
	}
	if (rc == APIM_EUNAUTH || rc == APIM_ENOTFOUND) {
		tok_error(r, 401, "invalid_client",
			  "Client authentication failed: unknown client_id or wrong secret");
		return -1;
	}
	if (rc != APIM_OK) {
		tok_server_error(r, rc);
		return -1;
	}
	return 0;
}

/* Authenticates a user for the password grant (and the introspection
 * caller): limiter, then the password (account lockout inside). Replies
 * with error_code and returns -1 on failure. */
static int tok_user_auth(http_req *r, const char *username, const char *password,
			 const char *error_code, int fail_status, auth_user *u)
{
	char *key = arena_sprintf(r->pool, "user:%s", username);
	if (km_limit_blocked(r->ctx, key)) {
		tok_error(r, 429, error_code,
			  "Too many failed logins for this user; retry in a minute");
		return -1;
	}
	apim_rc rc = auth_users_verify(r->ctx, r->pool, username, password, u);
	if (rc == APIM_OK)
		return 0;
	if (rc == APIM_EUNAUTH || rc == APIM_ELOCKED) {
		km_limit_fail(r->ctx, key);
		tok_error(r, fail_status, error_code,
			  rc == APIM_ELOCKED ? "The account is locked after repeated failed logins; "
					       "try again later"
					     : "Invalid user name or password");
		return -1;
	}
	tok_server_error(r, rc);
	return -1;
}

static void tok_reply_issued(http_req *r, const km_issued *t)
{
	json_t *o = json_pack("{s:s,s:s,s:I,s:s}", "access_token", t->access_token, "token_type",
			      "Bearer", "expires_in", (json_int_t)t->expires_in, "scope", t->scope);
	if (o != NULL && t->refresh_token != NULL)
		json_object_set_new(o, "refresh_token", json_string(t->refresh_token));
	http_reply_json(r, 200, o);
	tok_nostore(r);
}

/* ------------------------------------------------------------ grants */

/* Grant handlers: reply themselves. validity is the lifetime to issue. */
static void grant_client_credentials(http_req *r, const km_client *c, const char *scope,
				     int64_t validity)
{
	km_issued t;
	const char *granted = NULL;
	apim_rc rc = km_token_scopes(r->ctx, r->pool, c, NULL, scope, &granted);
	if (rc == APIM_OK)
		rc = tok_mint(r->ctx, r->pool, c, NULL, granted, validity, 0, NULL, &t);
	if (rc != APIM_OK) {
		tok_server_error(r, rc);
		return;
	}
	tok_reply_issued(r, &t);
}

static void grant_password(http_req *r, const km_client *c, const char *scope, int64_t validity)
{
	int bad = 0;
	const char *username = tok_param(r, "username", &bad);
	const char *password = tok_param(r, "password", &bad);
	if (bad)
		return;
	if (username == NULL || *username == '\0' || password == NULL) {
		tok_error(r, 400, "invalid_request",
			  "The password grant needs the parameters username and password");
		return;
	}
	auth_user u;
	if (tok_user_auth(r, username, password, "invalid_grant", 400, &u) != 0)
		return;
	km_issued t;
	const char *granted = NULL;
	apim_rc rc = km_token_scopes(r->ctx, r->pool, c, u.username, scope, &granted);
	if (rc == APIM_OK)
		rc = tok_mint(r->ctx, r->pool, c, u.username, granted, validity,
			      km_client_allows_grant(c, "refresh_token"), NULL, &t);
	if (rc != APIM_OK) {
		tok_server_error(r, rc);
		return;
	}
	tok_reply_issued(r, &t);
}

static void grant_refresh_token(http_req *r, const km_client *c, const char *scope,
				int64_t validity)
{
	int bad = 0;
	const char *refresh = tok_param(r, "refresh_token", &bad);
	db_res *res = NULL;
	char hash[65];
	if (bad)
		return;
	if (refresh == NULL || *refresh == '\0') {
		tok_error(r, 400, "invalid_request", "The refresh_token parameter is missing");
		return;
	}
	apim_sha256_hex(refresh, strlen(refresh), hash);
	apim_rc rc = db_exec(r->ctx->apimgt, &res,
			     "SELECT jti, client_id, username, scope, expires_ms,"
			     " refresh_expires_ms, state, family FROM km_token WHERE refresh_hash = ?",
			     DB_ARGS(hash));
	if (rc != APIM_OK) {
		tok_server_error(r, rc);
		return;
	}
	if (db_res_rows(res) == 0 || strcmp(db_res_get(res, 0, 1), c->client_id) != 0) {
		tok_error(r, 400, "invalid_grant", "The refresh token is invalid");
		goto out;
	}
	tok_rotate rot = {.jti = arena_strdup(r->pool, db_res_get(res, 0, 0)),
			  .expires_ms = db_res_int(res, 0, 4),
			  .family = arena_strdup(r->pool, db_res_get(res, 0, 7))};
	const char *state = db_res_get(res, 0, 6);
	const char *user = db_res_get(res, 0, 2);
	const char *orig = db_res_get(res, 0, 3);
	user = user ? arena_strdup(r->pool, user) : NULL;
	orig = arena_strdup(r->pool, orig);
	if (strcmp(state, "ROTATED") == 0) {
		/* A used refresh token came back: it leaked, or the client
		 * raced itself. Either way the grant is no longer trusted. */
		log_warn("keymanager", "a rotated refresh token of client %s was reused; revoking "
			 "its grant", c->client_id);
		(void)km_token_revoke_family(r->ctx, rot.family);
		tok_error(r, 400, "invalid_grant", "The refresh token was already used");
		goto out;
	}
	if (strcmp(state, "ACTIVE") != 0) {
		tok_error(r, 400, "invalid_grant", "The refresh token was revoked");
		goto out;
	}
	if (db_res_int(res, 0, 5) <= apim_now_ms()) {
		tok_error(r, 400, "invalid_grant", "The refresh token has expired");
		goto out;
	}
	if (user == NULL) {
		tok_error(r, 400, "invalid_grant", "The refresh token is invalid");
		goto out;
	}
	/* the scope may only narrow */
	const char *want = orig;
	if (scope != NULL && *scope != '\0') {
		size_t n = 0;
		const char **req = tok_split(r->pool, scope, &n);
		for (size_t i = 0; i < n; i++) {
			if (!tok_list_has(orig, req[i])) {
				char *d = arena_sprintf(r->pool, "Scope '%s' was not granted "
							"originally: a refresh may only narrow the scope",
							req[i]);
				tok_error(r, 400, "invalid_scope", d);
				goto out;
			}
		}
		want = scope;
	}
	auth_user u;
	rc = auth_users_get_by_name(r->ctx, r->pool, user, &u);
	if (rc == APIM_ENOTFOUND) {
		tok_error(r, 400, "invalid_grant", "The user of this refresh token no longer exists");
		goto out;
	}
	const char *granted = NULL;
	km_issued t;
	if (rc == APIM_OK)
		rc = km_token_scopes(r->ctx, r->pool, c, user, want, &granted);
	if (rc == APIM_OK)
		rc = tok_mint(r->ctx, r->pool, c, user, granted, validity, 1, &rot, &t);
	if (rc == APIM_EPRECOND) {
		tok_error(r, 400, "invalid_grant", "The refresh token was already used");
		goto out;
	}
	if (rc != APIM_OK) {
		tok_server_error(r, rc);
		goto out;
	}
	tok_reply_issued(r, &t);
out:
	db_res_free(res);
}

static void grant_authorization_code(http_req *r, const km_client *c, int64_t validity)
{
	int bad = 0;
	const char *code = tok_param(r, "code", &bad);
	const char *redirect = tok_param(r, "redirect_uri", &bad);
	const char *verifier = tok_param(r, "code_verifier", &bad);
	if (bad)
		return;
	if (code == NULL || *code == '\0') {
		tok_error(r, 400, "invalid_request", "The code parameter is missing");
		return;
	}
	if (verifier == NULL) {
		tok_error(r, 400, "invalid_request",
			  "The code_verifier parameter is missing: PKCE (S256) is required");
		return;
	}
	const char *user = NULL, *scope = NULL, *code_hash = NULL, *why = NULL;
	apim_rc rc = km_authorize_redeem(r->ctx, r->pool, c, code, redirect, verifier, &user,
					 &scope, &code_hash, &why);
	if (rc == APIM_EUNAUTH) {
		tok_error(r, 400, "invalid_grant", why ? why : "The authorization code is invalid");
		return;
	}
	km_issued t;
	if (rc == APIM_OK)
		rc = tok_mint(r->ctx, r->pool, c, user, scope, validity,
			      km_client_allows_grant(c, "refresh_token"), NULL, &t);
	if (rc != APIM_OK) {
		tok_server_error(r, rc);
		return;
	}
	km_authorize_link(r->ctx, code_hash, t.jti);
	tok_reply_issued(r, &t);
}

static const char *const tok_grants[] = {"client_credentials", "password", "refresh_token",
					 "authorization_code"};

/* POST /oauth2/token */
static void tok_token(http_req *r)
{
	km_client c;
	int bad = 0;
	if (tok_need_form(r) != 0)
		return;
	const char *grant = tok_param(r, "grant_type", &bad);
	const char *scope = tok_param(r, "scope", &bad);
	const char *vp = tok_param(r, "validity_period", &bad);
	if (bad || tok_client_auth(r, &c) != 0)
		return;
	if (grant == NULL || *grant == '\0') {
		tok_error(r, 400, "invalid_request", "The grant_type parameter is missing");
		return;
	}
	int known = 0;
	for (size_t i = 0; i < sizeof(tok_grants) / sizeof(tok_grants[0]); i++)
		known |= strcmp(grant, tok_grants[i]) == 0;
	if (!known) {
		char *d = arena_sprintf(r->pool, "Grant type '%.64s' is not supported: use "
					"client_credentials, password, refresh_token or "
					"authorization_code", grant);
		tok_error(r, 400, "unsupported_grant_type", d);
		return;
	}
	if (!km_client_allows_grant(&c, grant)) {
		char *d = arena_sprintf(r->pool, "This client may not use the %s grant", grant);
		tok_error(r, 400, "unauthorized_client", d);
		return;
	}
	if (scope != NULL && !tok_scope_syntax_ok(scope)) {
		tok_error(r, 400, "invalid_scope",
			  "The scope parameter holds characters that RFC 6749 does not allow");
		return;
	}
	int64_t validity = tok_client_validity(r->ctx, &c), v = 0;
	if (vp != NULL && *vp != '\0') {
		if (apim_parse_i64(vp, &v) != 0 || v < 1) {
			tok_error(r, 400, "invalid_request",
				  "validity_period must be a positive number of seconds");
			return;
		}
		if (v < validity)
			validity = v;
	}
	if (strcmp(grant, "client_credentials") == 0)
		grant_client_credentials(r, &c, scope, validity);
	else if (strcmp(grant, "password") == 0)
		grant_password(r, &c, scope, validity);
	else if (strcmp(grant, "refresh_token") == 0)
		grant_refresh_token(r, &c, scope, validity);
	else
		grant_authorization_code(r, &c, validity);
}

/* ------------------------------------------------------------ introspect */

static void tok_inactive(http_req *r)
{
	http_reply_json(r, 200, json_pack("{s:b}", "active", 0));
	tok_nostore(r);
}

/* 1 when the string has the shape of a compact JWS. */
static int tok_looks_jwt(const char *t)
{
	const char *a = strchr(t, '.');
	return a != NULL && strchr(a + 1, '.') != NULL;
}

/*
 * Authenticates the introspection caller: a client (may see its own
 * tokens: *client_only set) by Basic, or a user holding apim:admin by
 * Basic or a bearer token. Replies and returns -1 otherwise.
 */
static int tok_introspect_caller(http_req *r, const char **client_only)
{
	const char *authz = http_header(r, "Authorization");
	*client_only = NULL;
	if (authz == NULL) {
		tok_error(r, 401, "invalid_client",
			  "Authenticate: HTTP Basic as a client (client_id:client_secret) or as an "
			  "administrator, or a bearer token with apim:admin");
		return -1;
	}
	if (strncasecmp(authz, "Bearer ", 7) == 0) {
		principal *p = NULL;
		apim_rc rc = tok_verify_bearer(r->ctx, r->pool, authz + 7,
					       r->ctx->cfg->keymanager_leeway, &p, NULL);
		if (rc == APIM_EUNAVAIL) {
			tok_server_error(r, rc);
			return -1;
		}
		if (rc != APIM_OK) {
			json_t *o = json_pack("{s:s,s:s}", "error", "invalid_token",
					      "error_description", "The bearer token is invalid");
			http_reply_json(r, 401, o);
			http_set_header(r, "WWW-Authenticate",
					"Bearer realm=\"apim\", error=\"invalid_token\"");
			tok_nostore(r);
			return -1;
		}
		if (!principal_is_admin(p)) {
			tok_error(r, 403, "insufficient_scope",
				  "Introspection needs the scope apim:admin");
			return -1;
		}
		return 0;
	}
	const char *id = NULL, *secret = NULL;
	if (strncasecmp(authz, "Basic ", 6) != 0 || tok_basic(r->pool, authz, &id, &secret) != 0) {
		tok_error(r, 401, "invalid_client", "Malformed Authorization header");
		return -1;
	}
	km_client c;
	apim_rc rc = km_client_get(r->ctx, r->pool, id, &c);
	if (rc == APIM_OK) {
		rc = km_client_authenticate(r->ctx, r->pool, id, secret, &c);
		if (rc == APIM_OK) {
			*client_only = c.client_id;
			return 0;
		}
		if (rc == APIM_ELOCKED)
			tok_error(r, 429, "invalid_client",
				  "Too many failed authentications for this client; retry in a "
				  "minute");
		else if (rc == APIM_EUNAUTH)
			tok_error(r, 401, "invalid_client", "Client authentication failed");
		else
			tok_server_error(r, rc);
		return -1;
	}
	if (rc != APIM_ENOTFOUND) {
		tok_server_error(r, rc);
		return -1;
	}
	/* a user: the REST APIs' Basic authentication (with its cache of
	 * verified credentials and the account lockout), plus the limiter */
	char *key = arena_sprintf(r->pool, "user:%s", id);
	if (km_limit_blocked(r->ctx, key)) {
		tok_error(r, 429, "invalid_client", "Too many failed logins for this user; retry in "
			  "a minute");
		return -1;
	}
	principal *p = NULL;
	rc = auth_authenticate(r, authz, &p);
	if (rc == APIM_EUNAUTH || rc == APIM_ELOCKED) {
		km_limit_fail(r->ctx, key);
		tok_error(r, 401, "invalid_client",
			  rc == APIM_ELOCKED ? "The account is locked after repeated failed logins"
					     : "Invalid user name or password");
		return -1;
	}
	if (rc != APIM_OK) {
		tok_server_error(r, rc);
		return -1;
	}
	if (!principal_is_admin(p)) {
		tok_error(r, 403, "insufficient_scope", "Introspection needs the scope apim:admin");
		return -1;
	}
	return 0;
}

static void tok_introspect_refresh(http_req *r, const char *token, const char *client_only)
{
	char hash[65];
	db_res *res = NULL;
	apim_sha256_hex(token, strlen(token), hash);
	apim_rc rc = db_exec(r->ctx->apimgt, &res,
			     "SELECT client_id, username, scope, issued_ms, refresh_expires_ms, state"
			     " FROM km_token WHERE refresh_hash = ?",
			     DB_ARGS(hash));
	if (rc != APIM_OK) {
		tok_server_error(r, rc);
		return;
	}
	if (db_res_rows(res) == 0 || strcmp(db_res_get(res, 0, 5), "ACTIVE") != 0 ||
	    db_res_int(res, 0, 4) <= apim_now_ms() ||
	    (client_only && strcmp(client_only, db_res_get(res, 0, 0)) != 0)) {
		db_res_free(res);
		tok_inactive(r);
		return;
	}
	const char *user = db_res_get(res, 0, 1);
	json_t *o = json_pack("{s:b,s:s,s:s,s:s,s:I,s:I}", "active", 1, "token_type",
			      "refresh_token", "client_id", db_res_get(res, 0, 0), "scope",
			      db_res_get(res, 0, 2), "iat", (json_int_t)(db_res_int(res, 0, 3) / 1000),
			      "exp", (json_int_t)(db_res_int(res, 0, 4) / 1000));
	if (o != NULL && user != NULL) {
		json_object_set_new(o, "username", json_string(user));
		json_object_set_new(o, "sub", json_string(user));
	}
	db_res_free(res);
	http_reply_json(r, 200, o);
	tok_nostore(r);
}

/* POST /oauth2/introspect (RFC 7662) */
static void tok_introspect(http_req *r)
{
	const char *client_only = NULL;
	int bad = 0;
	if (tok_need_form(r) != 0 || tok_introspect_caller(r, &client_only) != 0)
		return;
	const char *token = tok_param(r, "token", &bad);
	(void)tok_param(r, "token_type_hint", &bad);
	if (bad)
		return;
	if (token == NULL || *token == '\0') {
		tok_error(r, 400, "invalid_request", "The token parameter is missing");
		return;
	}
	if (!tok_looks_jwt(token)) {
		tok_introspect_refresh(r, token, client_only);
		return;
	}
	json_t *claims = NULL;
	db_res *res = NULL;
	if (km_jwt_verify(r->ctx, token, 0, &claims, NULL) != APIM_OK) {
		tok_inactive(r);
		return;
	}
	const char *jti = json_string_value(json_object_get(claims, "jti"));
	const char *cid = json_string_value(json_object_get(claims, "client_id"));
	int rv = jti ? tok_revoked(r->ctx, jti) : 1;
	apim_rc rc = rv < 0 ? APIM_EUNAVAIL : APIM_OK;
	if (rc == APIM_OK && rv == 0) {
		tok_flush();
		rc = db_exec(r->ctx->apimgt, &res,
			     "SELECT state, username FROM km_token WHERE jti = ?", DB_ARGS(jti));
	}
	/* no row: issued by another node that has not written it yet (every
	 * revocation is in am_revoked_jwt, checked above) */
	if (rc != APIM_OK) {
		tok_server_error(r, rc);
	} else if (rv != 0 || cid == NULL ||
		   (db_res_rows(res) > 0 && strcmp(db_res_get(res, 0, 0), "ACTIVE") != 0) ||
		   (client_only && strcmp(client_only, cid) != 0)) {
		tok_inactive(r);
	} else {
		json_t *o = json_object();
		static const char *const copy[] = {"scope", "client_id", "exp", "iat", "nbf",
						   "sub", "aud", "iss", "jti", "aut"};
		json_object_set_new(o, "active", json_true());
		for (size_t i = 0; i < sizeof(copy) / sizeof(copy[0]); i++) {
			json_t *v = json_object_get(claims, copy[i]);
			if (v != NULL)
				json_object_set(o, copy[i], v);
		}
		json_object_set_new(o, "token_type", json_string("Bearer"));
		const char *user = db_res_rows(res) > 0 ? db_res_get(res, 0, 1) : NULL;
		json_object_set_new(o, "username",
				    json_string(user ? user
						     : json_string_value(json_object_get(claims, "sub"))));
		http_reply_json(r, 200, o);
		tok_nostore(r);
	}
	db_res_free(res);
	json_decref(claims);
}

/* ------------------------------------------------------------ revoke */

/* POST /oauth2/revoke (RFC 7009): 200 whatever the token, unless the
 * client fails authentication or the request is malformed. */
static void tok_revoke(http_req *r)
{
	km_client c;
	int bad = 0;
	if (tok_need_form(r) != 0)
		return;
	const char *token = tok_param(r, "token", &bad);
	(void)tok_param(r, "token_type_hint", &bad);
	if (bad || tok_client_auth(r, &c) != 0)
		return;
	if (token == NULL || *token == '\0') {
		tok_error(r, 400, "invalid_request", "The token parameter is missing");
		return;
	}
	apim_rc rc = APIM_OK;
	if (tok_looks_jwt(token)) {
		json_t *claims = NULL;
		/* an expired token needs no revocation; a foreign one is ignored */
		if (km_jwt_verify(r->ctx, token, PURGE_MARGIN_MS / 1000, &claims, NULL) == APIM_OK) {
			const char *jti = json_string_value(json_object_get(claims, "jti"));
			const char *cid = json_string_value(json_object_get(claims, "client_id"));
			json_int_t exp = json_integer_value(json_object_get(claims, "exp"));
			if (jti != NULL && cid != NULL && strcmp(cid, c.client_id) == 0)
				rc = km_token_revoke_jti(r->ctx, jti, (int64_t)exp);
		}
		json_decref(claims);
	} else {
		char hash[65];
		db_res *res = NULL;
		apim_sha256_hex(token, strlen(token), hash);
		rc = db_exec(r->ctx->apimgt, &res,
			     "SELECT client_id, family FROM km_token WHERE refresh_hash = ?",
			     DB_ARGS(hash));
		if (rc == APIM_OK && db_res_rows(res) == 1 &&
		    strcmp(db_res_get(res, 0, 0), c.client_id) == 0)
			rc = km_token_revoke_family(r->ctx, db_res_get(res, 0, 1));
		db_res_free(res);
	}
	if (rc != APIM_OK) {
		tok_server_error(r, rc);
		return;
	}
	http_reply_empty(r, 200);
	tok_nostore(r);
}

/* ------------------------------------------------------------ userinfo */

static void tok_bearer_error(http_req *r, int status, const char *error, const char *desc)
{
	json_t *o = json_pack("{s:s,s:s}", "error", error, "error_description", desc);
	http_reply_json(r, status, o);
	tok_nostore(r);
	char *h = arena_sprintf(r->pool, "Bearer realm=\"apim\", error=\"%s\"", error);
	http_set_header(r, "WWW-Authenticate", h);
}

/* GET/POST /oauth2/userinfo (OpenID Connect): the claims of the token's
 * user. */
static void tok_userinfo(http_req *r)
{
	const char *authz = http_header(r, "Authorization");
	principal *p = NULL;
	json_t *claims = NULL;
	if (authz == NULL || strncasecmp(authz, "Bearer ", 7) != 0) {
		tok_bearer_error(r, 401, "invalid_request",
				 "Send the access token as Authorization: Bearer <token>");
		return;
	}
	apim_rc rc = tok_verify_bearer(r->ctx, r->pool, authz + 7, r->ctx->cfg->keymanager_leeway,
				       &p, &claims);
	if (rc == APIM_EUNAVAIL) {
		tok_server_error(r, rc);
		return;
	}
	if (rc != APIM_OK) {
		tok_bearer_error(r, 401, "invalid_token", "The access token is invalid, expired or "
				 "revoked");
		return;
	}
	json_t *o = json_pack("{s:s}", "sub", p->username);
	const char *aut = json_string_value(json_object_get(claims, "aut"));
	auth_user u;
	if (aut != NULL && strcmp(aut, "APPLICATION_USER") == 0 &&
	    auth_users_get_by_name(r->ctx, r->pool, p->username, &u) == APIM_OK) {
		json_object_set_new(o, "preferred_username", json_string(u.username));
		if (u.given_name != NULL)
			json_object_set_new(o, "given_name", json_string(u.given_name));
		if (u.family_name != NULL)
			json_object_set_new(o, "family_name", json_string(u.family_name));
		if (u.email != NULL)
			json_object_set_new(o, "email", json_string(u.email));
	}
	json_decref(claims);
	http_reply_json(r, 200, o);
	tok_nostore(r);
}

/* ------------------------------------------------------------ routes */

static const http_route tok_routes[] = {
	{"POST", "/oauth2/token", tok_token, NULL, HTTP_OWN_AUTH | HTTP_RAW_BODY},
	{"POST", "/oauth2/introspect", tok_introspect, NULL, HTTP_OWN_AUTH | HTTP_RAW_BODY},
	{"POST", "/oauth2/revoke", tok_revoke, NULL, HTTP_OWN_AUTH | HTTP_RAW_BODY},
	{"GET", "/oauth2/userinfo", tok_userinfo, NULL, HTTP_OWN_AUTH | HTTP_RAW_BODY},
	{"POST", "/oauth2/userinfo", tok_userinfo, NULL, HTTP_OWN_AUTH | HTTP_RAW_BODY},
};

void km_token_routes(http_server *s)
{
	http_server_routes(s, tok_routes, sizeof(tok_routes) / sizeof(tok_routes[0]));
	km_authorize_routes(s);
}
