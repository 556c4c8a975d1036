/*
 * test_km_token.c: the write-behind queue of token rows (km_token.c) on a
 * SQLite database: rows reach the table, readers on the node see them,
 * revocation inside a caller's transaction sees queued rows without
 * waiting for the writer, and shutdown writes what is queued.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "keymanager/km_token.c"

#define OK(expr) assert_int_equal((expr), APIM_OK)

typedef struct {
	apim_config cfg;
	apim_ctx ctx;
	char dir[64];
} fixture;

static int64_t q_int(db *d, const char *sql)
{
	db_res *r = NULL;
	OK(db_exec(d, &r, sql, DB_NOARGS));
	assert_int_equal(db_res_rows(r), 1);
	int64_t v = db_res_int(r, 0, 0);
	db_res_free(r);
	return v;
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_km_token.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	char url[128];
	snprintf(url, sizeof(url), "sqlite://%s/apimgt.db", f->dir);
	f->cfg.keymanager_leeway = 30;
	f->ctx.cfg = &f->cfg;
	if (db_open(&f->ctx.apimgt, url, "apimgtdb", 5000) != APIM_OK)
		return -1;
	if (km_token_migrate(&f->ctx) != APIM_OK)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	km_token_shutdown();
	db_close(f->ctx.apimgt);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

/* Queues n rows of client cid (as tok_mint does for tokens without a
 * refresh token), expiring in an hour. */
static void queue_rows(const char *cid, int n)
{
	char iss[24], exp[24];
	tok_i64(iss, apim_now_ms());
	tok_i64(exp, apim_now_ms() + 3600 * 1000);
	for (int i = 0; i < n; i++) {
		char jti[APIM_UUID_LEN + 1];
		tok_uuid7(jti);
		const char *const v[ROW_COLS] = {jti, cid, NULL, "default", iss, exp, jti};
		assert_int_equal(tok_enqueue(v), 0);
	}
}

static void test_rows_are_written_and_flush_waits(void **state)
{
	fixture *f = *state;
	queue_rows("c1", 45); /* 32 + 8 + 5 x 1 */
	tok_flush();
	assert_int_equal(q_int(f->ctx.apimgt, "SELECT COUNT(*) FROM km_token WHERE client_id = 'c1'"
				 " AND state = 'ACTIVE' AND refresh_hash IS NULL"),
			 45);
	/* without a flush the writer still gets there within FLUSH_MS */
	queue_rows("c2", 3);
	for (int i = 0; i < 200 && q_int(f->ctx.apimgt, "SELECT COUNT(*) FROM km_token WHERE "
					 "client_id = 'c2'") < 3; i++)
		usleep(5000);
	assert_int_equal(q_int(f->ctx.apimgt, "SELECT COUNT(*) FROM km_token WHERE client_id = 'c2'"),
			 3);
}

static void test_revoke_client_sees_queued_rows(void **state)
{
	fixture *f = *state;
	queue_rows("c3", 10);
	OK(km_token_revoke_client(&f->ctx, "c3"));
	assert_int_equal(q_int(f->ctx.apimgt, "SELECT COUNT(*) FROM km_token WHERE client_id = 'c3'"
				 " AND state = 'REVOKED'"),
			 10);
	assert_int_equal(q_int(f->ctx.apimgt, "SELECT COUNT(*) FROM am_revoked_jwt"), 10);
	assert_int_equal(q_int(f->ctx.apimgt, "SELECT COUNT(*) FROM am_change_log WHERE "
				 "entity_type = 'revoked_jwt' AND action = 'revoke'"),
			 10);
}

static void test_revoke_client_inside_a_transaction(void **state)
{
	fixture *f = *state;
	/* the caller holds SQLite's write lock: waiting for the writer would
	 * deadlock, so the queued rows are written in the caller's transaction.
	 * The writer is held off (stopped, the queue still open) so that the
	 * rows are surely still queued. */
	km_token_shutdown();
	pthread_mutex_lock(&tok_q.mu);
	tok_q.running = 1;
	tok_q.stop = 0;
	pthread_mutex_unlock(&tok_q.mu);
	queue_rows("c4", 7);
	OK(db_begin(f->ctx.apimgt));
	OK(km_token_revoke_client(&f->ctx, "c4"));
	OK(db_commit(f->ctx.apimgt));
	pthread_mutex_lock(&tok_q.mu);
	assert_int_equal(tok_q.n, 0);
	tok_q.running = 0; /* no thread to join */
	pthread_mutex_unlock(&tok_q.mu);
	assert_int_equal(q_int(f->ctx.apimgt, "SELECT COUNT(*) FROM km_token WHERE client_id = 'c4'"
				 " AND state = 'REVOKED'"),
			 7);
	assert_int_equal(q_int(f->ctx.apimgt, "SELECT COUNT(*) FROM am_revoked_jwt"), 7);
	/* and nothing is written twice afterwards */
	tok_flush();
	assert_int_equal(q_int(f->ctx.apimgt, "SELECT COUNT(*) FROM km_token WHERE client_id = 'c4'"),
			 7);
}

static void test_shutdown_writes_the_queue(void **state)
{
	fixture *f = *state;
	queue_rows("c5", 20);
	km_token_shutdown();
	assert_int_equal(q_int(f->ctx.apimgt, "SELECT COUNT(*) FROM km_token WHERE client_id = 'c5'"),
			 20);
	/* after the stop rows are not queued: the caller writes them itself */
	char jti[APIM_UUID_LEN + 1];
	tok_uuid7(jti);
	const char *const v[ROW_COLS] = {jti, "c5", NULL, "default", "1", "2", jti};
	assert_int_equal(tok_enqueue(v), -1);
}

static void test_uuid7_is_time_ordered(void **state)
{
	(void)state;
	char a[APIM_UUID_LEN + 1], b[APIM_UUID_LEN + 1];
	tok_uuid7(a);
	usleep(2000);
	tok_uuid7(b);
	assert_true(strcmp(a, b) < 0);
	assert_int_equal(a[14], '7'); /* version */
	assert_true(strchr("89ab", a[19]) != NULL); /* variant */
	assert_int_equal(strlen(a), APIM_UUID_LEN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_rows_are_written_and_flush_waits, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_revoke_client_sees_queued_rows, setup, teardown),
		cmocka_unit_test_setup_teardown(test_revoke_client_inside_a_transaction, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_shutdown_writes_the_queue, setup, teardown),
		cmocka_unit_test(test_uuid7_is_time_ordered),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
