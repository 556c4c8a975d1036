/*
 * Unit tests of src/auth/auth_users.c: the password policy, and users,
 * roles, scopes, lockout and the admin bootstrap against a SQLite file in
 * a temporary folder (argon2id at its cheapest cost so the suite is quick).
 * With APIM_TEST_PG_URL set they run against that PostgreSQL database
 * instead (its users tables are dropped and re-created by every test).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "auth/auth.h"
#include "auth/auth_users.h"
#include "common/arena.h"
#include "common/log.h"
#include "common/util.h"
#include "store/db.h"

#define ADMIN_PW "Adm1n-Passw0rd"

typedef struct fixture {
	char home[64];
	apim_config cfg;
	apim_ctx ctx;
	arena *pool;
	char *generated;
} fixture;

/* The URL of a fresh shareddb: a SQLite file in home, or APIM_TEST_PG_URL
 * after dropping the users tables there. */
static void test_users_url(const char *home, char *url, size_t len)
{
	const char *pg = getenv("APIM_TEST_PG_URL");
	if (pg == NULL || *pg == '\0') {
		snprintf(url, len, "sqlite://%s/shared.db", home);
		return;
	}
	snprintf(url, len, "%s", pg);
	db *d = NULL;
	assert_int_equal(db_open(&d, url, "shareddb", 5000), APIM_OK);
	const char *reset[] = {
		"DROP TABLE IF EXISTS um_user, um_role, um_user_role, um_role_scope",
		"CREATE TABLE IF NOT EXISTS apim_schema (module TEXT PRIMARY KEY,"
		" version INTEGER NOT NULL)",
		"DELETE FROM apim_schema WHERE module = 'users'",
	};
	for (size_t i = 0; i < sizeof(reset) / sizeof(reset[0]); i++)
		assert_int_equal(db_exec(d, NULL, reset[i], DB_NOARGS), APIM_OK);
	db_close(d);
}

/* Opens a fresh shareddb in a temporary folder; admin_password may be "". */
static fixture *fixture_open(const char *admin_password)
{
	fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->home, sizeof(f->home), "/tmp/apim-test-users-XXXXXX");
	assert_non_null(mkdtemp(f->home));
	f->cfg.server_home = f->home;
	f->cfg.admin_username = "admin";
	f->cfg.admin_password = (char *)admin_password;
	f->cfg.security_lockout_attempts = 3;
	f->cfg.security_lockout_seconds = 1;
	f->cfg.security_argon2_opslimit = 1;
	f->cfg.security_argon2_memlimit_kb = 8;
	f->ctx.cfg = &f->cfg;
	char url[512];
	test_users_url(f->home, url, sizeof(url));
	assert_int_equal(db_open(&f->ctx.shared, url, "shareddb", 5000), APIM_OK);
	assert_int_equal(auth_users_bootstrap(&f->ctx, &f->generated), APIM_OK);
	f->pool = arena_create(4096);
	return f;
}

static void fixture_close(fixture *f)
{
	char path[128];
	db_close(f->ctx.shared);
	arena_destroy(f->pool);
	free(f->generated);
	const char *files[] = {"shared.db", "shared.db-wal", "shared.db-shm", "admin-password"};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", f->home, files[i]);
		unlink(path);
	}
	rmdir(f->home);
	free(f);
}

static int has(const char *const *v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i], s) == 0)
			return 1;
	return 0;
}

static void test_users_policy(void **state)
{
	(void)state;
	assert_non_null(auth_password_policy(NULL));
	assert_non_null(auth_password_policy(""));
	assert_non_null(auth_password_policy("Ab1!xyz"));   /* 7 characters */
	assert_non_null(auth_password_policy("abcdefgh"));  /* one class */
	assert_non_null(auth_password_policy("abcdefgH"));  /* two classes */
	assert_non_null(auth_password_policy("12345678!")); /* two classes */
	assert_null(auth_password_policy("abcdefG1"));      /* lower, upper, digit */
	assert_null(auth_password_policy("abcd1234!"));     /* lower, digit, symbol */
	assert_null(auth_password_policy("ABCD-EFG-1"));    /* upper, symbol, digit */
	assert_null(auth_password_policy("Passw0rd!"));
	/* length counts characters, not UTF-8 bytes */
	assert_non_null(auth_password_policy("\xc3\xa4\xc3\xa4\xc3\xa4" "A1")); /* 5 chars */
	assert_null(auth_password_policy("\xc3\xa4\xc3\xa4\xc3\xa4\xc3\xa4\xc3\xa4\xc3\xa4" "A1"));
	char long_pw[300];
	memset(long_pw, 'a', sizeof(long_pw));
	memcpy(long_pw, "A1", 2);
	long_pw[256] = '\0';
	assert_null(auth_password_policy(long_pw));
	long_pw[256] = 'a';
	long_pw[257] = '\0';
	assert_non_null(auth_password_policy(long_pw));
	const char *msg = auth_password_policy("x");
	assert_non_null(strstr(msg, "8 to 256"));
	assert_non_null(strstr(msg, "at least 3"));
}

static void test_users_admin_and_scopes(void **state)
{
	(void)state;
	fixture *f = fixture_open(ADMIN_PW);
	auth_user u;
	assert_null(f->generated); /* configured, not generated */
	assert_int_equal(auth_users_verify(&f->ctx, f->pool, "admin", ADMIN_PW, &u), APIM_OK);
	assert_string_equal(u.username, "admin");
	assert_true(has(u.roles, u.nroles, "admin"));
	const char **scopes = NULL;
	size_t n = 0;
	assert_int_equal(auth_roles_scopes(&f->ctx, f->pool, u.roles, u.nroles, &scopes, &n),
			 APIM_OK);
	assert_true(has(scopes, n, "apim:admin"));
	assert_true(has(scopes, n, "apim:api_create"));
	assert_true(has(scopes, n, "apim:role_manage"));
	assert_true(has(scopes, n, "apim:tenantInfo"));
	for (size_t i = 0; i + 1 < n; i++) /* deduplicated (sorted) */
		assert_true(strcmp(scopes[i], scopes[i + 1]) != 0);

	assert_int_equal(auth_users_verify(&f->ctx, f->pool, "admin", "wrong", &u), APIM_EUNAUTH);
	assert_int_equal(auth_users_verify(&f->ctx, f->pool, "nobody", ADMIN_PW, &u),
			 APIM_EUNAUTH);
	/* the admin cannot be deleted nor lose its role */
	assert_int_equal(auth_users_get_by_name(&f->ctx, f->pool, "admin", &u), APIM_OK);
	assert_int_equal(auth_users_delete(&f->ctx, u.id), APIM_EFORBIDDEN);
	const char *creator[] = {ROLE_CREATOR};
	assert_int_equal(auth_users_set_roles(&f->ctx, u.id, creator, 1), APIM_EFORBIDDEN);

	/* the reference roles' scopes */
	const char *sub[] = {ROLE_SUBSCRIBER, ROLE_EVERYONE};
	assert_int_equal(auth_roles_scopes(&f->ctx, f->pool, sub, 2, &scopes, &n), APIM_OK);
	assert_true(has(scopes, n, "apim:subscribe"));
	assert_true(has(scopes, n, "apim:app_manage"));
	assert_false(has(scopes, n, "apim:api_view"));
	assert_int_equal(auth_roles_scopes(&f->ctx, f->pool, creator, 1, &scopes, &n), APIM_OK);
	assert_true(has(scopes, n, "apim:api_create"));
	assert_false(has(scopes, n, "apim:api_publish"));
	assert_false(has(scopes, n, "apim:admin"));
	fixture_close(f);
}

static void test_users_generated_admin(void **state)
{
	(void)state;
	fixture *f = fixture_open("");
	assert_non_null(f->generated);
	assert_int_equal(strlen(f->generated), 24);
	char path[128];
	snprintf(path, sizeof(path), "%s/admin-password", f->home);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	char *data = NULL;
	size_t len = 0;
	assert_int_equal(apim_read_file(path, 1024, &data, &len), APIM_OK);
	assert_int_equal(len, 25);
	assert_memory_equal(data, f->generated, 24);
	free(data);
	auth_user u;
	assert_int_equal(auth_users_verify(&f->ctx, f->pool, "admin", f->generated, &u), APIM_OK);
	/* a second start finds the admin and generates nothing */
	char *again = NULL;
	assert_int_equal(auth_users_bootstrap(&f->ctx, &again), APIM_OK);
	assert_null(again);
	fixture_close(f);
}

static void test_users_crud(void **state)
{
	(void)state;
	fixture *f = fixture_open(ADMIN_PW);
	const char *roles[] = {ROLE_CREATOR, ROLE_CREATOR};
	auth_user in = {.username = "alice", .given_name = "Alice", .email = "alice@example.com",
			.roles = roles, .nroles = 2};
	auth_user u, v;
	assert_int_equal(auth_users_create(&f->ctx, f->pool, &in, "Passw0rd!", &u), APIM_OK);
	assert_true(apim_uuid_valid(u.id));
	assert_string_equal(u.username, "alice");
	assert_string_equal(u.given_name, "Alice");
	assert_int_equal(u.nroles, 1);
	assert_string_equal(u.roles[0], ROLE_CREATOR);
	assert_int_equal(auth_users_create(&f->ctx, f->pool, &in, "Passw0rd!", &v),
			 APIM_ECONFLICT);
	const char *bad[] = {"no-such-role"};
	auth_user in2 = {.username = "bob", .roles = bad, .nroles = 1};
	assert_int_equal(auth_users_create(&f->ctx, f->pool, &in2, "Passw0rd!", &v),
			 APIM_EINVAL);
	/* no roles: Internal/everyone */
	auth_user in3 = {.username = "carol"};
	assert_int_equal(auth_users_create(&f->ctx, f->pool, &in3, "Passw0rd!", &v), APIM_OK);
	assert_int_equal(v.nroles, 1);
	assert_string_equal(v.roles[0], ROLE_EVERYONE);

	assert_int_equal(auth_users_verify(&f->ctx, f->pool, "alice", "Passw0rd!", &v), APIM_OK);
	assert_string_equal(v.id, u.id);

	auth_user *list = NULL;
	size_t n = 0;
	int64_t total = 0;
	assert_int_equal(auth_users_list(&f->ctx, f->pool, NULL, 0, 100, &list, &n, &total),
			 APIM_OK);
	assert_int_equal(total, 3);
	assert_int_equal(n, 3);
	assert_string_equal(list[0].username, "admin");
	assert_int_equal(auth_users_list(&f->ctx, f->pool, NULL, 1, 1, &list, &n, &total),
			 APIM_OK);
	assert_int_equal(total, 3);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].username, "alice");
	assert_int_equal(auth_users_list(&f->ctx, f->pool, "carol", 0, 10, &list, &n, &total),
			 APIM_OK);
	assert_int_equal(total, 1);
	assert_string_equal(list[0].username, "carol");

	/* password change: the old one stops working at once */
	assert_int_equal(auth_users_update(&f->ctx, u.id, NULL, "Smith", NULL, "N3w-Password"),
			 APIM_OK);
	assert_int_equal(auth_users_verify(&f->ctx, f->pool, "alice", "Passw0rd!", &v),
			 APIM_EUNAUTH);
	assert_int_equal(auth_users_verify(&f->ctx, f->pool, "alice", "N3w-Password", &v),
			 APIM_OK);
	assert_string_equal(v.given_name, "Alice"); /* NULL left it unchanged */
	assert_string_equal(v.family_name, "Smith");

	const char *pub[] = {ROLE_PUBLISHER, ROLE_SUBSCRIBER};
	assert_int_equal(auth_users_set_roles(&f->ctx, u.id, pub, 2), APIM_OK);
	assert_int_equal(auth_users_get(&f->ctx, f->pool, u.id, &v), APIM_OK);
	assert_int_equal(v.nroles, 2);
	assert_false(has(v.roles, v.nroles, ROLE_CREATOR));
	assert_int_equal(auth_users_set_roles(&f->ctx, u.id, bad, 1), APIM_EINVAL);

	const char *ids[] = {u.id, "00000000-0000-4000-8000-00000000ffff"};
	const char **names = NULL;
	assert_int_equal(auth_users_names(&f->ctx, f->pool, ids, 2, &names), APIM_OK);
	assert_string_equal(names[0], "alice");
	assert_null(names[1]);

	assert_int_equal(auth_users_delete(&f->ctx, u.id), APIM_OK);
	assert_int_equal(auth_users_get(&f->ctx, f->pool, u.id, &v), APIM_ENOTFOUND);
	assert_int_equal(auth_users_delete(&f->ctx, u.id), APIM_ENOTFOUND);
	fixture_close(f);
}

static void test_users_lockout(void **state)
{
	(void)state;
	fixture *f = fixture_open(ADMIN_PW);
	auth_user in = {.username = "dave"}, u;
	assert_int_equal(auth_users_create(&f->ctx, f->pool, &in, "Passw0rd!", &u), APIM_OK);
	/* a success resets the count */
	assert_int_equal(auth_users_verify(&f->ctx, f->pool, "dave", "bad", &u), APIM_EUNAUTH);
	assert_int_equal(auth_users_verify(&f->ctx, f->pool, "dave", "bad", &u), APIM_EUNAUTH);
	assert_int_equal(auth_users_verify(&f->ctx, f->pool, "dave", "Passw0rd!", &u), APIM_OK);
	/* three failures in a row lock, even the right password is refused */
	assert_int_equal(auth_users_verify(&f->ctx, f->pool, "dave", "bad", &u), APIM_EUNAUTH);
	assert_int_equal(auth_users_verify(&f->ctx, f->pool, "dave", "bad", &u), APIM_EUNAUTH);
	assert_int_equal(auth_users_verify(&f->ctx, f->pool, "dave", "bad", &u), APIM_ELOCKED);
	assert_int_equal(auth_users_verify(&f->ctx, f->pool, "dave", "Passw0rd!", &u),
			 APIM_ELOCKED);
	usleep(1200 * 1000);
	assert_int_equal(auth_users_verify(&f->ctx, f->pool, "dave", "Passw0rd!", &u), APIM_OK);
	/* after the lock expires the user has a full set of attempts again */
	assert_int_equal(auth_users_verify(&f->ctx, f->pool, "dave", "bad", &u), APIM_EUNAUTH);
	fixture_close(f);
}

static void test_users_roles(void **state)
{
	(void)state;
	fixture *f = fixture_open(ADMIN_PW);
	auth_role g, *list = NULL;
	size_t n = 0;
	auth_user in = {.username = "erin"}, u, admin;
	assert_int_equal(auth_users_create(&f->ctx, f->pool, &in, "Passw0rd!", &u), APIM_OK);
	assert_int_equal(auth_roles_list(&f->ctx, f->pool, NULL, &list, &n), APIM_OK);
	assert_int_equal(n, 7);
	assert_int_equal(auth_roles_create(&f->ctx, f->pool, "qa", &g), APIM_OK);
	assert_string_equal(g.name, "qa");
	assert_int_equal(g.nmembers, 0);
	assert_int_equal(auth_roles_create(&f->ctx, f->pool, "qa", NULL), APIM_ECONFLICT);
	const char *members[] = {u.id, u.id};
	assert_int_equal(auth_roles_add_members(&f->ctx, g.id, members, 2), APIM_OK);
	assert_int_equal(auth_roles_add_members(&f->ctx, g.id, members, 1), APIM_OK); /* again */
	assert_int_equal(auth_roles_list(&f->ctx, f->pool, "qa", &list, &n), APIM_OK);
	assert_int_equal(n, 1);
	assert_int_equal(list[0].nmembers, 1);
	assert_string_equal(list[0].members[0], u.id);
	const char *ghost[] = {"00000000-0000-4000-8000-00000000ffff"};
	assert_int_equal(auth_roles_add_members(&f->ctx, g.id, ghost, 1), APIM_EINVAL);
	assert_int_equal(auth_users_get(&f->ctx, f->pool, u.id, &u), APIM_OK);
	assert_true(has(u.roles, u.nroles, "qa"));
	assert_int_equal(auth_roles_remove_members(&f->ctx, g.id, members, 1), APIM_OK);
	assert_int_equal(auth_roles_get(&f->ctx, f->pool, g.id, &g), APIM_OK);
	assert_int_equal(g.nmembers, 0);
	assert_int_equal(auth_roles_delete(&f->ctx, g.id), APIM_OK);
	assert_int_equal(auth_roles_get(&f->ctx, f->pool, g.id, &g), APIM_ENOTFOUND);

	/* the admin role keeps the admin and cannot be deleted */
	assert_int_equal(auth_roles_list(&f->ctx, f->pool, ROLE_ADMIN, &list, &n), APIM_OK);
	assert_int_equal(n, 1);
	assert_int_equal(auth_users_get_by_name(&f->ctx, f->pool, "admin", &admin), APIM_OK);
	const char *adm[] = {admin.id};
	assert_int_equal(auth_roles_remove_members(&f->ctx, list[0].id, adm, 1), APIM_EFORBIDDEN);
	assert_int_equal(auth_roles_delete(&f->ctx, list[0].id), APIM_EFORBIDDEN);
	fixture_close(f);
}

typedef struct node {
	pthread_t thread;
	const char *url;
	apim_ctx ctx;
	char *generated;
	apim_rc rc;
} node;

static void *node_start(void *arg)
{
	node *n = arg;
	n->rc = db_open(&n->ctx.shared, n->url, "shareddb", 10000);
	if (n->rc == APIM_OK)
		n->rc = auth_users_bootstrap(&n->ctx, &n->generated);
	return NULL;
}

/* Nodes starting at once on one database end with one admin, and only the
 * node that created it reports a generated password. (The hash costs a few
 * ms here so that the nodes really race between looking and inserting.) */
static void test_users_concurrent_bootstrap(void **state)
{
	(void)state;
	char home[64], url[512];
	snprintf(home, sizeof(home), "/tmp/apim-test-users-XXXXXX");
	assert_non_null(mkdtemp(home));
	test_users_url(home, url, sizeof(url));
	apim_config cfg = {.server_home = home, .admin_username = "admin", .admin_password = "",
			   .security_lockout_attempts = 3, .security_lockout_seconds = 1,
			   .security_argon2_opslimit = 2, .security_argon2_memlimit_kb = 16384};
	node nodes[4];
	memset(nodes, 0, sizeof(nodes));
	for (size_t i = 0; i < 4; i++) {
		nodes[i].url = url;
		nodes[i].ctx.cfg = &cfg;
		assert_int_equal(pthread_create(&nodes[i].thread, NULL, node_start, &nodes[i]), 0);
	}
	int winners = 0;
	const char *pw = NULL;
	for (size_t i = 0; i < 4; i++) {
		pthread_join(nodes[i].thread, NULL);
		assert_int_equal(nodes[i].rc, APIM_OK);
		if (nodes[i].generated != NULL) {
			winners++;
			pw = nodes[i].generated;
		}
	}
	assert_int_equal(winners, 1);
	arena *pool = arena_create(1024);
	auth_user *list = NULL, u;
	size_t n = 0;
	int64_t total = 0;
	assert_int_equal(auth_users_list(&nodes[0].ctx, pool, "admin", 0, 10, &list, &n, &total),
			 APIM_OK);
	assert_int_equal(total, 1);
	assert_int_equal(auth_users_verify(&nodes[0].ctx, pool, "admin", pw, &u), APIM_OK);
	arena_destroy(pool);
	char path[128];
	const char *files[] = {"shared.db", "shared.db-wal", "shared.db-shm", "admin-password"};
	for (size_t i = 0; i < 4; i++) {
		db_close(nodes[i].ctx.shared);
		free(nodes[i].generated);
		snprintf(path, sizeof(path), "%s/%s", home, files[i]);
		unlink(path);
	}
	rmdir(home);
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	log_setup(LOG_ERROR, 0);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_users_policy),
		cmocka_unit_test(test_users_admin_and_scopes),
		cmocka_unit_test(test_users_generated_admin),
		cmocka_unit_test(test_users_crud),
		cmocka_unit_test(test_users_lockout),
		cmocka_unit_test(test_users_roles),
		cmocka_unit_test(test_users_concurrent_bootstrap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
