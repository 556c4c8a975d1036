/*
 * test_db.c: the store layer against SQLite (always) and PostgreSQL (when
 * APIM_TEST_PG_URL names a database the test may create schemas in; the
 * PostgreSQL cases report SKIPPED otherwise).
 *
 * Every case gets a fresh database: a SQLite file in a new temp folder, or
 * a fresh PostgreSQL schema made the search_path through the URL's
 * options parameter and dropped afterwards.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "store/db.h"

#define BUSY_MS 10000

typedef struct {
	db *d;
	int pg;
	char dir[64];    /* SQLite temp folder */
	char url[1024];  /* URL of the case's database */
	char schema[64]; /* PostgreSQL schema */
} fixture;

#define OK(expr) assert_int_equal((expr), APIM_OK)

static const char *pg_base(void)
{
	const char *u = getenv("APIM_TEST_PG_URL");
	return (u != NULL && *u != '\0') ? u : NULL;
}

/* Runs sql on d and returns the first cell as an integer. */
static int64_t q_int(db *d, const char *sql)
{
	db_res *r = NULL;
	OK(db_exec(d, &r, sql, DB_NOARGS));
	assert_int_equal(db_res_rows(r), 1);
	int64_t v = db_res_int(r, 0, 0);
	db_res_free(r);
	return v;
}

static int setup_sqlite(void **state)
{
	fixture *fx = calloc(1, sizeof(*fx));
	assert_non_null(fx);
	strcpy(fx->dir, "/tmp/apim_test_db_XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->url, sizeof(fx->url), "sqlite://%s/t.db", fx->dir);
	OK(db_open(&fx->d, fx->url, "apimgtdb", BUSY_MS));
	*state = fx;
	return 0;
}

static int setup_pg(void **state)
{
	static int counter;
	fixture *fx = calloc(1, sizeof(*fx));
	if (fx == NULL)
		return -1;
	fx->pg = 1;
	const char *base = pg_base();
	if (base == NULL) {
		*state = fx; /* the case skips itself */
		return 0;
	}
	snprintf(fx->schema, sizeof(fx->schema), "apimtest_%d_%d", (int)getpid(), ++counter);
	snprintf(fx->url, sizeof(fx->url), "%s%soptions=-csearch_path%%3D%s", base,
		 strchr(base, '?') ? "&" : "?", fx->schema);
	/* no asserts here: a failed setup gets no teardown */
	db *admin = NULL;
	char sql[256];
	snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s",
		 fx->schema, fx->schema);
	apim_rc rc = db_open(&admin, base, "admin", BUSY_MS);
	if (rc == APIM_OK)
		rc = db_exec(admin, NULL, sql, DB_NOARGS);
	db_close(admin);
	if (rc == APIM_OK)
		rc = db_open(&fx->d, fx->url, "apimgtdb", BUSY_MS);
	if (rc != APIM_OK) {
		print_error("cannot prepare PostgreSQL schema %s: %s\n", fx->schema,
			    apim_strerror(rc));
		free(fx);
		return -1;
	}
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	fixture *fx = *state;
	db_close(fx->d);
	if (fx->pg && fx->schema[0] != '\0') {
		db *admin = NULL;
		OK(db_open(&admin, pg_base(), "admin", BUSY_MS));
		char sql[256];
		snprintf(sql, sizeof(sql), "DROP SCHEMA %s CASCADE", fx->schema);
		OK(db_exec(admin, NULL, sql, DB_NOARGS));
		db_close(admin);
	}
	if (!fx->pg) {
		static const char *const files[] = {"t.db", "t.db-wal", "t.db-shm"};
		char path[128];
		for (size_t i = 0; i < 3; i++) {
			snprintf(path, sizeof(path), "%s/%s", fx->dir, files[i]);
			unlink(path);
		}
		rmdir(fx->dir);
	}
	free(fx);
	return 0;
}

/* The case's fixture; skips the case when its engine is not available. */
static fixture *fx_get(void **state)
{
	fixture *fx = *state;
	if (fx->d == NULL) {
		print_message("PostgreSQL case skipped: APIM_TEST_PG_URL is not set\n");
		skip();
	}
	return fx;
}

/* ------------------------------------------------- engine-free checks */

static void test_open_urls(void **state)
{
	(void)state;
	db *d = NULL;
	assert_int_equal(db_open(&d, "mysql://u@h/x", "apimgtdb", 100), APIM_ECONFIG);
	assert_null(d);
	assert_int_equal(db_open(&d, "sqlite://", "apimgtdb", 100), APIM_ECONFIG);
	assert_int_equal(db_open(&d, "sqlite://:memory:", "apimgtdb", 100), APIM_ECONFIG);
	assert_int_equal(db_open(&d, "postgresql://u@[::1", "apimgtdb", 100), APIM_ECONFIG);

	/* PostgreSQL opens lazily: no server is needed for db_open */
	OK(db_open(&d, "postgres://u:p@127.0.0.1:1/x", "shareddb", 100));
	assert_int_equal(db_dialect_of(d), DB_POSTGRES);
	assert_string_equal(db_name(d), "shareddb");
	db_close(d);

	/* sqlite://relative/path is relative to the working directory */
	char dir[] = "/tmp/apim_test_rel_XXXXXX";
	assert_non_null(mkdtemp(dir));
	char cwd[1024];
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(dir), 0);
	OK(db_open(&d, "sqlite://sub.db", "apimgtdb", 100));
	assert_int_equal(db_dialect_of(d), DB_SQLITE);
	OK(db_exec(d, NULL, "CREATE TABLE x (a TEXT)", DB_NOARGS));
	db_close(d);
	assert_int_equal(chdir(cwd), 0);
	char path[128];
	struct stat st;
	snprintf(path, sizeof(path), "%s/sub.db", dir);
	assert_int_equal(stat(path, &st), 0);
	unlink(path);
	snprintf(path, sizeof(path), "%s/sub.db-wal", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/sub.db-shm", dir);
	unlink(path);
	assert_int_equal(rmdir(dir), 0);
}

/* An unreachable PostgreSQL answers APIM_EUNAVAIL within the budget, and
 * neither that nor a rejected URL puts the password in the logs. */
static void test_password_not_logged(void **state)
{
	(void)state;
	char logpath[] = "/tmp/apim_test_log_XXXXXX";
	int fd = mkstemp(logpath);
	assert_true(fd >= 0);
	fflush(stderr);
	int saved = dup(2);
	assert_int_equal(dup2(fd, 2), 2);

	db *d = NULL;
	apim_rc bad = db_open(&d, "mysql://alice:s3cretPW@h/x", "apimgtdb", 100);
	apim_rc ok = db_open(&d, "postgresql://alice:s3cretPW@127.0.0.1:1/x", "apimgtdb", 300);
	int64_t t0 = apim_mono_ms();
	apim_rc ex = ok == APIM_OK ? db_exec(d, NULL, "SELECT 1", DB_NOARGS) : ok;
	int64_t took = apim_mono_ms() - t0;
	int ping = ok == APIM_OK ? db_ping(d) : 1;
	db_close(d);

	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	char *text = NULL;
	size_t len = 0;
	OK(apim_read_file(logpath, 1 << 20, &text, &len));
	close(fd);
	unlink(logpath);

	assert_int_equal(bad, APIM_ECONFIG);
	assert_int_equal(ok, APIM_OK);
	assert_int_equal(ex, APIM_EUNAVAIL);
	assert_true(took < 3000);
	assert_int_equal(ping, 0);
	assert_non_null(strstr(text, "alice:***@127.0.0.1:1")); /* it did log */
	assert_null(strstr(text, "s3cretPW"));
	free(text);
}

static void test_like_escape(void **state)
{
	(void)state;
	char *e = db_like_escape("50%_a\\b");
	assert_string_equal(e, "50\\%\\_a\\\\b");
	free(e);
	e = db_like_escape("");
	assert_string_equal(e, "");
	free(e);
}

/* ------------------------------------------------ cases for both engines */

static void test_exec_params(void **state)
{
	fixture *fx = fx_get(state);
	db *d = fx->d;
	db_res *r = NULL;
	OK(db_exec(d, NULL, "CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT, note TEXT)", DB_NOARGS));
	OK(db_exec(d, NULL, "INSERT INTO t (id, n, note) VALUES (?, ?, ?)", DB_ARGS("a", "42", "x y")));
	OK(db_exec(d, NULL, "INSERT INTO t (id, n, note) VALUES (?, ?, ?)", DB_ARGS("b", NULL, NULL)));

	OK(db_exec(d, &r, "SELECT id, n, note FROM t WHERE id = ? OR id = ? ORDER BY id",
		   DB_ARGS("a", "b")));
	assert_int_equal(db_res_rows(r), 2);
	assert_int_equal(db_res_cols(r), 3);
	assert_string_equal(db_res_get(r, 0, 0), "a");
	assert_string_equal(db_res_get(r, 0, 1), "42");
	assert_int_equal(db_res_int(r, 0, 1), 42);
	assert_string_equal(db_res_get(r, 0, 2), "x y");
	assert_string_equal(db_res_get(r, 1, 0), "b");
	assert_null(db_res_get(r, 1, 1));
	assert_int_equal(db_res_int(r, 1, 1), 0);
	assert_null(db_res_get(r, 1, 2));
	assert_null(db_res_get(r, 2, 0)); /* out of range */
	assert_null(db_res_get(r, 0, 3));
	db_res_free(r);

	/* NULL parameter compares as SQL NULL: matches nothing */
	OK(db_exec(d, &r, "SELECT id FROM t WHERE note = ?", DB_ARGS(NULL)));
	assert_int_equal(db_res_rows(r), 0);
	assert_int_equal(db_res_cols(r), 1);
	db_res_free(r);
	OK(db_exec(d, &r, "SELECT count(*) FROM t WHERE note IS NULL", DB_NOARGS));
	assert_int_equal(db_res_int(r, 0, 0), 1);
	db_res_free(r);

	/* text parameters work where numbers are expected: paging, and
	 * comparisons with a BIGINT column (numerically: "9" < "42") */
	OK(db_exec(d, &r, "SELECT id FROM t ORDER BY id LIMIT ? OFFSET ?", DB_ARGS("1", "1")));
	assert_int_equal(db_res_rows(r), 1);
	assert_string_equal(db_res_get(r, 0, 0), "b");
	db_res_free(r);
	OK(db_exec(d, &r, "SELECT id FROM t WHERE n > ?", DB_ARGS("9")));
	assert_int_equal(db_res_rows(r), 1);
	assert_string_equal(db_res_get(r, 0, 0), "a");
	db_res_free(r);

	/* parameters are data, never SQL */
	OK(db_exec(d, NULL, "INSERT INTO t (id) VALUES (?)", DB_ARGS("x'); DROP TABLE t; --")));
	OK(db_exec(d, &r, "SELECT id FROM t WHERE id LIKE ?", DB_ARGS("x'%")));
	assert_int_equal(db_res_rows(r), 1);
	assert_string_equal(db_res_get(r, 0, 0), "x'); DROP TABLE t; --");
	db_res_free(r);

	/* a syntax error is APIM_EDB and leaves *out NULL */
	r = (db_res *)1;
	assert_int_equal(db_exec(d, &r, "SELEKT 1", DB_NOARGS), APIM_EDB);
	assert_null(r);
	/* placeholder count mismatch is a programming error */
	assert_int_equal(db_exec(d, NULL, "SELECT ?, ?", DB_ARGS("1")), APIM_EINTERNAL);
}

static void test_placeholders_in_literals(void **state)
{
	fixture *fx = fx_get(state);
	db_res *r = NULL;
	OK(db_exec(fx->d, &r,
		   "SELECT 'it''s ?' AS \"q?\", /* ? */ ? AS v, '?' || ? AS w -- ? here\n",
		   DB_ARGS("P", "Q")));
	assert_int_equal(db_res_rows(r), 1);
	assert_string_equal(db_res_get(r, 0, 0), "it's ?");
	assert_string_equal(db_res_get(r, 0, 1), "P");
	assert_string_equal(db_res_get(r, 0, 2), "?Q");
	db_res_free(r);
	if (fx->pg) {
		/* E'' strings take backslash escapes: \' does not end them */
		OK(db_exec(fx->d, &r, "SELECT E'a\\'?', ?", DB_ARGS("z")));
		assert_string_equal(db_res_get(r, 0, 0), "a'?");
		assert_string_equal(db_res_get(r, 0, 1), "z");
		db_res_free(r);
	}
}

static void test_unique_conflict(void **state)
{
	fixture *fx = fx_get(state);
	db *d = fx->d;
	OK(db_exec(d, NULL,
		   "CREATE TABLE u (id TEXT PRIMARY KEY, name TEXT NOT NULL);"
		   "CREATE UNIQUE INDEX u_name ON u (name)",
		   DB_NOARGS));
	OK(db_exec(d, NULL, "INSERT INTO u VALUES (?, ?)", DB_ARGS("1", "a")));
	assert_int_equal(db_exec(d, NULL, "INSERT INTO u VALUES (?, ?)", DB_ARGS("1", "b")),
			 APIM_ECONFLICT);
	assert_int_equal(db_exec(d, NULL, "INSERT INTO u VALUES (?, ?)", DB_ARGS("2", "a")),
			 APIM_ECONFLICT);
	/* NOT NULL is not a conflict */
	assert_int_equal(db_exec(d, NULL, "INSERT INTO u VALUES (?, ?)", DB_ARGS("3", NULL)),
			 APIM_EDB);
	/* inside a transaction too; rollback then leaves the table as it was */
	OK(db_begin(d));
	OK(db_exec(d, NULL, "INSERT INTO u VALUES (?, ?)", DB_ARGS("4", "d")));
	assert_int_equal(db_exec(d, NULL, "INSERT INTO u VALUES (?, ?)", DB_ARGS("4", "e")),
			 APIM_ECONFLICT);
	db_rollback(d);
	assert_int_equal(q_int(d, "SELECT count(*) FROM u"), 1);
}

struct reader_arg {
	db *d;
	int64_t seen;
	apim_rc rc;
};

static void *count_reader(void *p)
{
	struct reader_arg *a = p;
	db_res *r = NULL;
	a->rc = db_exec(a->d, &r, "SELECT count(*) FROM tx", DB_NOARGS);
	a->seen = db_res_int(r, 0, 0);
	db_res_free(r);
	return NULL;
}

static void test_transactions(void **state)
{
	fixture *fx = fx_get(state);
	db *d = fx->d;
	int64_t open, in_tx, rec;
	OK(db_exec(d, NULL, "CREATE TABLE tx (id TEXT PRIMARY KEY)", DB_NOARGS));

	db_rollback(d); /* nothing open: harmless */
	assert_false(db_in_tx(d));
	assert_int_equal(db_commit(d), APIM_EINTERNAL);

	OK(db_begin(d));
	assert_true(db_in_tx(d));
	assert_int_equal(db_begin(d), APIM_EINTERNAL);
	OK(db_exec(d, NULL, "INSERT INTO tx VALUES (?)", DB_ARGS("a")));
	assert_int_equal(q_int(d, "SELECT count(*) FROM tx"), 1);
	db_stats(d, &open, &in_tx, &rec);
	assert_int_equal(open, 1);
	assert_int_equal(in_tx, 1);
	/* another thread has its own connection and does not see it yet */
	struct reader_arg ra = {.d = d};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, count_reader, &ra), 0);
	pthread_join(th, NULL);
	OK(ra.rc);
	assert_int_equal(ra.seen, 0);
	db_rollback(d);
	assert_false(db_in_tx(d));
	assert_int_equal(q_int(d, "SELECT count(*) FROM tx"), 0);
	db_stats(d, &open, &in_tx, &rec);
	assert_int_equal(open, 1); /* the reader thread's connection closed at its exit */
	assert_int_equal(in_tx, 0);

	OK(db_begin(d));
	OK(db_exec(d, NULL, "INSERT INTO tx VALUES (?)", DB_ARGS("b")));
	OK(db_commit(d));
	assert_false(db_in_tx(d));
	ra.seen = -1;
	assert_int_equal(pthread_create(&th, NULL, count_reader, &ra), 0);
	pthread_join(th, NULL);
	assert_int_equal(ra.seen, 1);

	/* a failed statement inside: commit does not keep a half transaction */
	OK(db_begin(d));
	OK(db_exec(d, NULL, "INSERT INTO tx VALUES (?)", DB_ARGS("c")));
	assert_int_equal(db_exec(d, NULL, "SELEKT", DB_NOARGS), APIM_EDB);
	if (fx->pg) {
		/* PostgreSQL aborted the transaction: COMMIT must not succeed */
		assert_int_equal(db_commit(d), APIM_EDB);
		assert_int_equal(q_int(d, "SELECT count(*) FROM tx"), 1);
	} else {
		/* SQLite undoes only the failed statement */
		OK(db_commit(d));
		assert_int_equal(q_int(d, "SELECT count(*) FROM tx"), 2);
	}
	assert_false(db_in_tx(d));
}

static void test_res_changes(void **state)
{
	fixture *fx = fx_get(state);
	db *d = fx->d;
	db_res *r = NULL;
	OK(db_exec(d, &r, "CREATE TABLE c (id TEXT PRIMARY KEY, v BIGINT)", DB_NOARGS));
	assert_int_equal(db_res_changes(r), 0);
	db_res_free(r);
	OK(db_exec(d, &r, "INSERT INTO c VALUES ('a', 1), ('b', 2), ('c', 3)", DB_NOARGS));
	assert_int_equal(db_res_changes(r), 3);
	db_res_free(r);
	OK(db_exec(d, &r, "UPDATE c SET v = v + 10 WHERE v >= ?", DB_ARGS("2")));
	assert_int_equal(db_res_changes(r), 2);
	db_res_free(r);
	OK(db_exec(d, &r, "SELECT * FROM c", DB_NOARGS));
	assert_int_equal(db_res_changes(r), 0);
	assert_int_equal(db_res_rows(r), 3);
	db_res_free(r);
	OK(db_exec(d, &r, "UPDATE c SET v = 0 WHERE id = ?", DB_ARGS("zzz")));
	assert_int_equal(db_res_changes(r), 0);
	db_res_free(r);
	OK(db_exec(d, &r, "DELETE FROM c", DB_NOARGS));
	assert_int_equal(db_res_changes(r), 3);
	db_res_free(r);
}

static void test_like_query(void **state)
{
	fixture *fx = fx_get(state);
	db *d = fx->d;
	db_res *r = NULL;
	OK(db_exec(d, NULL, "CREATE TABLE l (s TEXT); INSERT INTO l VALUES ('50%off'), ('50xoff'),"
			    " ('a_b'), ('axb')",
		   DB_NOARGS));
	char *e = db_like_escape("50%");
	char pat[32];
	snprintf(pat, sizeof(pat), "%s%%", e);
	free(e);
	OK(db_exec(d, &r, "SELECT s FROM l WHERE s LIKE ? ESCAPE '\\' ORDER BY s", DB_ARGS(pat)));
	assert_int_equal(db_res_rows(r), 1);
	assert_string_equal(db_res_get(r, 0, 0), "50%off");
	db_res_free(r);
	e = db_like_escape("a_b");
	OK(db_exec(d, &r, "SELECT s FROM l WHERE s LIKE ? ESCAPE '\\'", DB_ARGS(e)));
	free(e);
	assert_int_equal(db_res_rows(r), 1);
	assert_string_equal(db_res_get(r, 0, 0), "a_b");
	db_res_free(r);
}

static int64_t schema_version(db *d, const char *module)
{
	db_res *r = NULL;
	OK(db_exec(d, &r, "SELECT version FROM apim_schema WHERE module = ?", DB_ARGS(module)));
	int64_t v = db_res_rows(r) ? db_res_int(r, 0, 0) : 0;
	db_res_free(r);
	return v;
}

static void test_migrate(void **state)
{
	fixture *fx = fx_get(state);
	db *d = fx->d;
	const char *const steps[] = {
		"CREATE TABLE mig_a (x INTEGER); INSERT INTO mig_a VALUES (1);",
		"ALTER TABLE mig_a ADD COLUMN y TEXT; INSERT INTO mig_a (x) VALUES (2)",
		"CREATE TABLE mig_b (x INTEGER); THIS IS NOT SQL",
	};
	OK(db_migrate(d, "m", steps, 1));
	assert_int_equal(schema_version(d, "m"), 1);
	OK(db_migrate(d, "m", steps, 1)); /* idempotent */
	assert_int_equal(schema_version(d, "m"), 1);
	assert_int_equal(q_int(d, "SELECT count(*) FROM mig_a"), 1);

	OK(db_migrate(d, "m", steps, 2)); /* only the new step runs */
	OK(db_migrate(d, "m", steps, 2));
	assert_int_equal(schema_version(d, "m"), 2);
	assert_int_equal(q_int(d, "SELECT count(*) FROM mig_a"), 2);

	/* a failing step leaves neither its tables nor its version behind */
	assert_int_equal(db_migrate(d, "m", steps, 3), APIM_EDB);
	assert_false(db_in_tx(d));
	assert_int_equal(schema_version(d, "m"), 2);
	assert_int_equal(db_exec(d, NULL, "SELECT * FROM mig_b", DB_NOARGS), APIM_EDB);

	/* modules are independent; an older build (fewer steps) is accepted */
	OK(db_change_migrate(d));
	OK(db_change_migrate(d));
	assert_int_equal(schema_version(d, "changes"), 1);
	assert_int_equal(schema_version(d, "m"), 2);
	OK(db_migrate(d, "m", steps, 1));
	assert_int_equal(schema_version(d, "m"), 2);
	int64_t cur = -1;
	OK(db_change_current(d, &cur));
	assert_int_equal(cur, 0);
}

#define NODES 4
static const char *const node_steps[] = {
	"CREATE TABLE node_t (step INTEGER PRIMARY KEY); INSERT INTO node_t VALUES (1)",
	"INSERT INTO node_t VALUES (2)",
	"INSERT INTO node_t VALUES (3)",
	"INSERT INTO node_t VALUES (4)",
	"INSERT INTO node_t VALUES (5)",
};

struct node_arg {
	const char *url;
	pthread_barrier_t *start;
	apim_rc rc;
};

/* One "node": its own db handle, migrating at the same moment as others. */
static void *node_main(void *p)
{
	struct node_arg *a = p;
	db *d = NULL;
	a->rc = db_open(&d, a->url, "apimgtdb", BUSY_MS);
	pthread_barrier_wait(a->start);
	if (a->rc == APIM_OK)
		a->rc = db_migrate(d, "nodes", node_steps, 5);
	db_close(d);
	return NULL;
}

static void test_migrate_concurrent(void **state)
{
	fixture *fx = fx_get(state);
	pthread_barrier_t start;
	pthread_barrier_init(&start, NULL, NODES);
	pthread_t th[NODES];
	struct node_arg args[NODES];
	for (int i = 0; i < NODES; i++) {
		args[i] = (struct node_arg){.url = fx->url, .start = &start};
		assert_int_equal(pthread_create(&th[i], NULL, node_main, &args[i]), 0);
	}
	for (int i = 0; i < NODES; i++) {
		pthread_join(th[i], NULL);
		OK(args[i].rc);
	}
	pthread_barrier_destroy(&start);
	/* each step ran exactly once (a second run would hit the primary key
	 * and fail its node) */
	assert_int_equal(q_int(fx->d, "SELECT count(*) FROM node_t"), 5);
	assert_int_equal(schema_version(fx->d, "nodes"), 5);
}

#define WRITERS 2
#define PER_WRITER 200

struct writer_arg {
	db *d;
	int id;
	int64_t seqs[PER_WRITER];
	char ids[PER_WRITER][APIM_UUID_LEN + 1];
	apim_rc rc;
};

static void *writer_main(void *p)
{
	struct writer_arg *a = p;
	a->rc = APIM_OK;
	for (int i = 0; i < PER_WRITER && a->rc == APIM_OK; i++) {
		apim_uuid(a->ids[i]);
		a->rc = db_begin(a->d);
		if (a->rc != APIM_OK)
			break;
		a->rc = db_change_record(a->d, "api", a->ids[i], i % 2 ? "update" : "create",
					 i % 3 ? "{\"k\":1}" : NULL, &a->seqs[i]);
		if (a->rc != APIM_OK) {
			db_rollback(a->d);
			break;
		}
		a->rc = db_commit(a->d);
	}
	return NULL;
}

struct watch_arg {
	db *d;
	atomic_int *stop;
	int samples;
	int gaps;
	apim_rc rc;
};

/* Samples the log while writers run: if a larger sequence number could
 * commit before a smaller one, some snapshot would show a gap. */
static void *watch_main(void *p)
{
	struct watch_arg *a = p;
	while (!atomic_load(a->stop) && a->rc == APIM_OK) {
		db_res *r = NULL;
		a->rc = db_exec(a->d, &r, "SELECT count(*), coalesce(max(seq), 0) FROM am_change_log",
				DB_NOARGS);
		if (a->rc == APIM_OK) {
			if (db_res_int(r, 0, 0) != db_res_int(r, 0, 1))
				a->gaps++;
			a->samples++;
		}
		db_res_free(r);
	}
	return NULL;
}

static void test_change_seq_concurrent(void **state)
{
	fixture *fx = fx_get(state);
	db *d = fx->d;
	int64_t seq = 0;
	OK(db_change_migrate(d));

	/* outside a transaction it is refused */
	assert_int_equal(db_change_record(d, "api", "x", "create", NULL, &seq), APIM_EINTERNAL);
	/* a rolled-back change consumes no number */
	OK(db_begin(d));
	OK(db_change_record(d, "api", "x", "create", NULL, &seq));
	assert_int_equal(seq, 1);
	db_rollback(d);
	OK(db_change_current(d, &seq));
	assert_int_equal(seq, 0);

	static struct writer_arg w[WRITERS];
	pthread_t th[WRITERS], wt;
	atomic_int stop = 0;
	struct watch_arg wa = {.d = d, .stop = &stop};
	assert_int_equal(pthread_create(&wt, NULL, watch_main, &wa), 0);
	for (int i = 0; i < WRITERS; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].d = d;
		w[i].id = i;
		assert_int_equal(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
	}
	for (int i = 0; i < WRITERS; i++)
		pthread_join(th[i], NULL);
	atomic_store(&stop, 1);
	pthread_join(wt, NULL);
	for (int i = 0; i < WRITERS; i++)
		OK(w[i].rc);
	OK(wa.rc);
	print_message("change sequence: %d writers x %d transactions, watcher took %d "
		      "snapshots, %d with a gap\n",
		      WRITERS, PER_WRITER, wa.samples, wa.gaps);
	assert_int_equal(wa.gaps, 0);

	/* per writer strictly increasing; together exactly 1..N, each once */
	const int total = WRITERS * PER_WRITER;
	static const char *owner[WRITERS * PER_WRITER + 1];
	memset(owner, 0, sizeof(owner));
	for (int i = 0; i < WRITERS; i++) {
		for (int j = 0; j < PER_WRITER; j++) {
			int64_t s = w[i].seqs[j];
			if (j > 0)
				assert_true(s > w[i].seqs[j - 1]);
			assert_true(s >= 1 && s <= total);
			assert_null(owner[s]);
			owner[s] = w[i].ids[j];
		}
	}
	OK(db_change_current(d, &seq));
	assert_int_equal(seq, total);

	/* the log holds one row per number, in order, for the right entity */
	db_res *r = NULL;
	OK(db_exec(d, &r,
		   "SELECT seq, entity_type, entity_id, action, payload, created_ms"
		   " FROM am_change_log ORDER BY seq",
		   DB_NOARGS));
	assert_int_equal(db_res_rows(r), total);
	int64_t now = apim_now_ms();
	for (int i = 0; i < total; i++) {
		assert_int_equal(db_res_int(r, (size_t)i, 0), i + 1);
		assert_string_equal(db_res_get(r, (size_t)i, 1), "api");
		assert_string_equal(db_res_get(r, (size_t)i, 2), owner[i + 1]);
		int64_t ms = db_res_int(r, (size_t)i, 5);
		assert_true(ms > now - 600000 && ms <= now);
	}
	db_res_free(r);
	assert_int_equal(q_int(d, "SELECT count(*) FROM am_change_log WHERE payload IS NULL"),
			 WRITERS * ((PER_WRITER + 2) / 3));

	/* the writer threads are gone: only this thread's connection is left */
	int64_t open, in_tx, rec;
	db_stats(d, &open, &in_tx, &rec);
	assert_int_equal(open, 1);
	assert_int_equal(in_tx, 0);
	assert_int_equal(rec, 0);
}

static void test_ping(void **state)
{
	fixture *fx = fx_get(state);
	assert_int_equal(db_ping(fx->d), 1);
}

/* ------------------------------------------------------ PostgreSQL only */

static int64_t backend_pid(db *d)
{
	return q_int(d, "SELECT pg_backend_pid()");
}

/* Kills d's session on this thread from another session and waits until
 * the server has let it go. */
static void kill_session(const char *url, int64_t pid)
{
	db *admin = NULL;
	OK(db_open(&admin, url, "admin", BUSY_MS));
	char p[24];
	snprintf(p, sizeof(p), "%" PRId64, pid);
	db_res *r = NULL;
	OK(db_exec(admin, &r, "SELECT pg_terminate_backend(CAST(? AS INTEGER))", DB_ARGS(p)));
	assert_string_equal(db_res_get(r, 0, 0), "t");
	db_res_free(r);
	for (int i = 0; i < 100; i++) {
		OK(db_exec(admin, &r, "SELECT count(*) FROM pg_stat_activity WHERE pid = CAST(? AS INTEGER)",
			   DB_ARGS(p)));
		int64_t n = db_res_int(r, 0, 0);
		db_res_free(r);
		if (n == 0)
			break;
		struct timespec ts = {0, 20 * 1000000};
		nanosleep(&ts, NULL);
	}
	db_close(admin);
}

/* A session killed by the server is replaced transparently between
 * statements, but inside a transaction the caller hears APIM_EUNAVAIL. */
static void test_pg_reconnect(void **state)
{
	fixture *fx = fx_get(state);
	db *d = fx->d;
	int64_t open, in_tx, rec;
	OK(db_exec(d, NULL, "CREATE TABLE rc (id TEXT PRIMARY KEY)", DB_NOARGS));
	int64_t pid1 = backend_pid(d);

	kill_session(fx->url, pid1);
	OK(db_exec(d, NULL, "INSERT INTO rc VALUES (?)", DB_ARGS("a")));
	int64_t pid2 = backend_pid(d);
	assert_true(pid2 != pid1);
	db_stats(d, &open, &in_tx, &rec);
	assert_int_equal(rec, 1);
	assert_int_equal(open, 1);

	OK(db_begin(d));
	OK(db_exec(d, NULL, "INSERT INTO rc VALUES (?)", DB_ARGS("b")));
	kill_session(fx->url, pid2);
	assert_int_equal(db_exec(d, NULL, "INSERT INTO rc VALUES (?)", DB_ARGS("c")), APIM_EUNAVAIL);
	assert_int_equal(db_exec(d, NULL, "SELECT 1", DB_NOARGS), APIM_EUNAVAIL);
	assert_true(db_in_tx(d));
	assert_int_equal(db_commit(d), APIM_EUNAVAIL);
	assert_false(db_in_tx(d));
	db_rollback(d); /* harmless after a failed commit */

	/* next use reconnects; the lost transaction left nothing */
	assert_int_equal(q_int(d, "SELECT count(*) FROM rc"), 1);
	db_stats(d, &open, &in_tx, &rec);
	assert_int_equal(rec, 2);

	/* the same, ended by db_rollback */
	OK(db_begin(d));
	kill_session(fx->url, backend_pid(d));
	assert_int_equal(db_exec(d, NULL, "INSERT INTO rc VALUES (?)", DB_ARGS("d")), APIM_EUNAVAIL);
	db_rollback(d);
	assert_false(db_in_tx(d));
	assert_int_equal(db_ping(d), 1);
	assert_int_equal(q_int(d, "SELECT count(*) FROM rc"), 1);
	db_stats(d, &open, &in_tx, &rec);
	assert_int_equal(rec, 3);
}

#define BOTH(f) cmocka_unit_test_setup_teardown(f, SETUP, teardown)

int main(void)
{
	const struct CMUnitTest plain[] = {
		cmocka_unit_test(test_open_urls),
		cmocka_unit_test(test_password_not_logged),
		cmocka_unit_test(test_like_escape),
	};
#define SETUP setup_sqlite
	const struct CMUnitTest sqlite[] = {
		BOTH(test_exec_params),     BOTH(test_placeholders_in_literals),
		BOTH(test_unique_conflict), BOTH(test_transactions),
		BOTH(test_res_changes),     BOTH(test_like_query),
		BOTH(test_migrate),         BOTH(test_migrate_concurrent),
		BOTH(test_change_seq_concurrent), BOTH(test_ping),
	};
#undef SETUP
#define SETUP setup_pg
	const struct CMUnitTest postgresql[] = {
		BOTH(test_exec_params),     BOTH(test_placeholders_in_literals),
		BOTH(test_unique_conflict), BOTH(test_transactions),
		BOTH(test_res_changes),     BOTH(test_like_query),
		BOTH(test_migrate),         BOTH(test_migrate_concurrent),
		BOTH(test_change_seq_concurrent), BOTH(test_ping),
		BOTH(test_pg_reconnect),
	};
#undef SETUP
	int failed = 0;
	failed += cmocka_run_group_tests_name("db", plain, NULL, NULL);
	failed += cmocka_run_group_tests_name("db/sqlite", sqlite, NULL, NULL);
	failed += cmocka_run_group_tests_name("db/postgresql", postgresql, NULL, NULL);
	return failed;
}
