/*
 * Unit tests of src/common/config.c: defaults, the apim.conf parser (TOML
 * subset), "file:line:" in every error, environment overrides and the
 * cross-key checks. The .c is included to reach its statics (trim, unquote,
 * env_name, config_keys).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/config.c"

/* A config file written for one test; removed by the teardown. */
static char test_config_path[64];

/* Removes every APIM_<SECTION>_<KEY> variable so that the environment of
 * the test run cannot change what a test sees. */
static void test_config_clear_env(void)
{
	for (size_t i = 0; i < NKEYS; i++) {
		char name[128];
		env_name(&config_keys[i], name, sizeof(name));
		unsetenv(name);
	}
}

static int test_config_setup(void **state)
{
	(void)state;
	test_config_clear_env();
	test_config_path[0] = '\0';
	return 0;
}

static int test_config_teardown(void **state)
{
	(void)state;
	if (test_config_path[0] != '\0')
		unlink(test_config_path);
	test_config_path[0] = '\0';
	test_config_clear_env();
	return 0;
}

/* Writes text to a fresh temp file; the path is test_config_path. */
static const char *test_config_write(const char *text)
{
	if (test_config_path[0] != '\0')
		unlink(test_config_path);
	snprintf(test_config_path, sizeof(test_config_path), "/tmp/apim-test-config-XXXXXX");
	int fd = mkstemp(test_config_path);
	assert_true(fd >= 0);
	size_t n = strlen(text);
	assert_int_equal(write(fd, text, n), (ssize_t)n);
	close(fd);
	return test_config_path;
}

/* Loads text as a config file; returns the status and leaves err. */
static apim_rc test_config_load_text(apim_config *cfg, const char *text, char *err, size_t len)
{
	err[0] = '\0';
	return config_load(cfg, test_config_write(text), err, len);
}

static void test_config_assert_contains(const char *hay, const char *needle)
{
	if (hay == NULL || strstr(hay, needle) == NULL)
		fail_msg("\"%s\" does not contain \"%s\"", hay ? hay : "(null)", needle);
}

/* The file must be rejected with "<path>:<line>:" and a message holding
 * each of the given fragments; cfg must be left freed. */
static void test_config_assert_rejected(const char *text, int line, const char *frag1,
					const char *frag2)
{
	apim_config cfg;
	char err[1024];
	apim_rc rc = test_config_load_text(&cfg, text, err, sizeof(err));
	if (rc != APIM_ECONFIG)
		fail_msg("accepted (rc %d) but should fail at line %d:\n%s", rc, line, text);
	char prefix[128];
	snprintf(prefix, sizeof(prefix), "%s:%d: ", test_config_path, line);
	if (strncmp(err, prefix, strlen(prefix)) != 0)
		fail_msg("error \"%s\" does not start with \"%s\"", err, prefix);
	if (frag1 != NULL)
		test_config_assert_contains(err, frag1);
	if (frag2 != NULL)
		test_config_assert_contains(err, frag2);
	/* config_load freed the strings it had set. */
	assert_null(cfg.server_home);
	assert_null(cfg.log_format);
}

static void test_config_defaults(void **state)
{
	(void)state;
	apim_config cfg;
	char err[512] = "";
	assert_int_equal(config_load(&cfg, NULL, err, sizeof(err)), APIM_OK);
	assert_string_equal(err, "");
	assert_string_equal(cfg.server_home, "./var");
	assert_int_equal(cfg.server_port_offset, 0);
	assert_string_equal(cfg.server_host, "0.0.0.0");
	assert_string_equal(cfg.server_hostname, "localhost");
	assert_int_equal(cfg.server_threads, 8);
	assert_int_equal(cfg.http_max_body_kb, 1024);
	assert_string_equal(cfg.http_tls_cert, "");
	assert_string_equal(cfg.http_tls_key, "");
	assert_string_equal(cfg.http_cors_origins, "*");
	assert_string_equal(cfg.database_apimgtdb_url, "");
	assert_string_equal(cfg.database_shareddb_url, "");
	assert_int_equal(cfg.database_busy_timeout_ms, 5000);
	assert_string_equal(cfg.admin_username, "admin");
	assert_string_equal(cfg.admin_password, "");
	assert_int_equal(cfg.security_lockout_attempts, 5);
	assert_int_equal(cfg.security_lockout_seconds, 300);
	assert_int_equal(cfg.security_argon2_opslimit, 2);
	assert_int_equal(cfg.security_argon2_memlimit_kb, 65536);
	assert_int_equal(cfg.security_auth_cache_seconds, 60);
	assert_string_equal(cfg.log_level, "info");
	assert_string_equal(cfg.log_format, "json");
	config_free(&cfg);
	/* config_free leaves no dangling pointers (a second free is harmless). */
	assert_null(cfg.server_home);
	assert_null(cfg.log_level);
	config_free(&cfg);
}

/* Every key of the table: section and name are unique, the integer default
 * is inside the bounds, the documentation is there. */
static void test_config_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < NKEYS; i++) {
		const config_key *k = &config_keys[i];
		assert_ptr_equal(find_key(k->section, k->name), k);
		assert_non_null(k->doc);
		assert_true(strlen(k->doc) > 10);
		if (k->type == CFG_INT) {
			int64_t v = 0;
			assert_int_equal(apim_parse_i64(k->def, &v), 0);
			assert_true(v >= k->min && v <= k->max);
			assert_true(k->min <= k->max);
		}
	}
	assert_null(find_key("server", "nope"));
	assert_null(find_key("", "home"));
	char name[128];
	env_name(find_key("database", "apimgtdb_url"), name, sizeof(name));
	assert_string_equal(name, "APIM_DATABASE_APIMGTDB_URL");
	env_name(find_key("server", "port_offset"), name, sizeof(name));
	assert_string_equal(name, "APIM_SERVER_PORT_OFFSET");
}

static void test_config_file_parsing(void **state)
{
	(void)state;
	apim_config cfg;
	char err[1024];
	apim_rc rc = test_config_load_text(&cfg,
		"# apim.conf for a test\n"
		"\n"
		"[server]\n"
		"home = \"/srv/apim\"   # trailing comment\n"
		"  port_offset=7\n"
		"threads = 16 # comment after an integer\n"
		"hostname = \"api.example.com\"\n"
		"\n"
		"   [ database ]   # spaces inside the brackets\n"
		"apimgtdb_url = \"postgresql://u:p@db:5432/apimgt\"\n"
		"shareddb_url = \"sqlite:///var/lib/apim/shared.db\"\n"
		"\n"
		"[admin]\n"
		"password = \"a \\\"quoted\\\" \\\\ pw\\t#1\\n\"\n"
		"\n"
		"[http]\n"
		"cors_origins = \"\"\n"
		"\n"
		"[log]\n"
		"level = \"debug\"\n"
		"format = \"text\"", /* no newline at the end of the last line */
		err, sizeof(err));
	if (rc != APIM_OK)
		fail_msg("rejected: %s", err);
	assert_string_equal(cfg.server_home, "/srv/apim");
	assert_int_equal(cfg.server_port_offset, 7);
	assert_int_equal(cfg.server_threads, 16);
	assert_string_equal(cfg.server_hostname, "api.example.com");
	assert_string_equal(cfg.database_apimgtdb_url, "postgresql://u:p@db:5432/apimgt");
	assert_string_equal(cfg.database_shareddb_url, "sqlite:///var/lib/apim/shared.db");
	assert_string_equal(cfg.admin_password, "a \"quoted\" \\ pw\t#1\n");
	assert_string_equal(cfg.http_cors_origins, "");
	assert_string_equal(cfg.log_level, "debug");
	assert_string_equal(cfg.log_format, "text");
	/* Keys the file does not name keep their defaults. */
	assert_string_equal(cfg.server_host, "0.0.0.0");
	assert_int_equal(cfg.http_max_body_kb, 1024);
	config_free(&cfg);
}

static void test_config_crlf_and_repeats(void **state)
{
	(void)state;
	apim_config cfg;
	char err[1024];
	/* Windows line endings; a section may appear twice; '#' inside a quoted
	 * string is text, not a comment. */
	apim_rc rc = test_config_load_text(&cfg,
		"[server]\r\n"
		"host = \"127.0.0.1\"\r\n"
		"[log]\r\n"
		"level = \"warn\"\r\n"
		"[server]\r\n"
		"hostname = \"host#1\" # real comment\r\n",
		err, sizeof(err));
	if (rc != APIM_OK)
		fail_msg("rejected: %s", err);
	assert_string_equal(cfg.server_host, "127.0.0.1");
	assert_string_equal(cfg.server_hostname, "host#1");
	assert_string_equal(cfg.log_level, "warn");
	config_free(&cfg);
}

static void test_config_int_bounds(void **state)
{
	(void)state;
	apim_config cfg;
	char err[1024];
	/* The bounds themselves are allowed. */
	apim_rc rc = test_config_load_text(&cfg,
		"[server]\nport_offset = 50000\nthreads = 1\n"
		"[security]\nargon2_memlimit_kb = 8\nauth_cache_seconds = 0\n",
		err, sizeof(err));
	if (rc != APIM_OK)
		fail_msg("rejected: %s", err);
	assert_int_equal(cfg.server_port_offset, 50000);
	assert_int_equal(cfg.server_threads, 1);
	assert_int_equal(cfg.security_argon2_memlimit_kb, 8);
	assert_int_equal(cfg.security_auth_cache_seconds, 0);
	config_free(&cfg);
	rc = test_config_load_text(&cfg, "[server]\nthreads = 256\nport_offset = 0\n", err,
				   sizeof(err));
	assert_int_equal(rc, APIM_OK);
	assert_int_equal(cfg.server_threads, 256);
	config_free(&cfg);

	/* One past either bound is not, and the message gives the range. */
	test_config_assert_rejected("[server]\nthreads = 257\n", 2, "server.threads",
				    "between 1 and 256");
	test_config_assert_rejected("[server]\n\nthreads = 0\n", 3, "server.threads",
				    "between 1 and 256");
	test_config_assert_rejected("[server]\nport_offset = -1\n", 2, "server.port_offset",
				    "between 0 and 50000");
	test_config_assert_rejected("[server]\nport_offset = 50001\n", 2, "server.port_offset",
				    "between 0 and 50000");
	test_config_assert_rejected("[security]\nargon2_opslimit = 11\n", 2,
				    "security.argon2_opslimit", "between 1 and 10");
	/* Larger than int64: not an integer at all. */
	test_config_assert_rejected("[database]\nbusy_timeout_ms = 99999999999999999999\n", 2,
				    "database.busy_timeout_ms", "must be an integer");
}

/* Each kind of error names the file and the line. */
static void test_config_error_kinds(void **state)
{
	(void)state;
	test_config_assert_rejected("[server]\nhome = \"/x\"\nnope = 1\n", 3,
				    "unknown key 'nope'", "[server]");
	test_config_assert_rejected("# top\nhome = \"/x\"\n", 2, "unknown key 'home'",
				    "outside any section");
	test_config_assert_rejected("[server]\n\n[nosuch]\nkey = 1\n", 3, "unknown section",
				    "nosuch");
	test_config_assert_rejected("[server\nhome = \"/x\"\n", 1, "malformed section header",
				    NULL);
	test_config_assert_rejected("[server] junk\n", 1, "malformed section header", NULL);
	test_config_assert_rejected("[server]\njust some words\n", 2, "expected key = value",
				    NULL);
	test_config_assert_rejected("[server]\nport_offset = 12abc\n", 2, "server.port_offset",
				    "must be an integer");
	test_config_assert_rejected("[server]\nport_offset =\n", 2, "server.port_offset",
				    "must be an integer");
	test_config_assert_rejected("[server]\nport_offset = \"12\"\n", 2, "server.port_offset",
				    "not a string");
	test_config_assert_rejected("[server]\nhome = /srv/apim\n", 2, "server.home",
				    "must be quoted");
	test_config_assert_rejected("[log]\nlevel = \"info\n", 2, "unterminated or malformed string",
				    NULL);
	test_config_assert_rejected("[log]\nlevel = \"in\\xfo\"\n", 2,
				    "unterminated or malformed string", NULL);
	test_config_assert_rejected("[log]\nlevel = \"info\" extra\n", 2,
				    "unexpected text after the value", NULL);
	test_config_assert_rejected("[log]\nlevel = \"loud\"\n", 2, "log.level",
				    "debug, info, warn, error");
	test_config_assert_rejected("[log]\nformat = \"xml\"\n", 2, "log.format", "json or text");
	test_config_assert_rejected("[database]\napimgtdb_url = \"mysql://x/y\"\n", 2,
				    "database.apimgtdb_url", "URL");
	test_config_assert_rejected("[server]\nhost = \"\"\n", 2, "server.host", "must not be empty");
	test_config_assert_rejected("[admin]\npassword = \"short\"\n", 2, "admin.password",
				    "8 to 256 characters");
	/* The first error wins, later lines are not reached. */
	test_config_assert_rejected("[server]\nthreads = x\nbogus = 1\n", 2, "server.threads",
				    NULL);
}

static void test_config_missing_file(void **state)
{
	(void)state;
	apim_config cfg;
	char err[512] = "";
	const char *path = "/nonexistent/apim-test/apim.conf";
	assert_int_equal(config_load(&cfg, path, err, sizeof(err)), APIM_ECONFIG);
	test_config_assert_contains(err, path);
	test_config_assert_contains(err, "cannot read");
	assert_null(cfg.server_home);
}

static void test_config_env_overrides(void **state)
{
	(void)state;
	apim_config cfg;
	char err[1024];
	setenv("APIM_SERVER_PORT_OFFSET", "9", 1);
	setenv("APIM_LOG_LEVEL", "error", 1);
	setenv("APIM_SERVER_HOST", "127.0.0.2", 1); /* no quotes in the environment */
	setenv("APIM_HTTP_CORS_ORIGINS", "", 1);    /* an empty value is a value */
	apim_rc rc = test_config_load_text(&cfg,
		"[server]\nport_offset = 3\nhost = \"10.0.0.1\"\nthreads = 4\n"
		"[log]\nlevel = \"debug\"\n",
		err, sizeof(err));
	if (rc != APIM_OK)
		fail_msg("rejected: %s", err);
	assert_int_equal(cfg.server_port_offset, 9); /* env wins over the file */
	assert_string_equal(cfg.log_level, "error");
	assert_string_equal(cfg.server_host, "127.0.0.2");
	assert_string_equal(cfg.http_cors_origins, "");
	assert_int_equal(cfg.server_threads, 4);     /* file wins over the default */
	config_free(&cfg);

	/* Without a file the environment still applies. */
	assert_int_equal(config_load(&cfg, NULL, err, sizeof(err)), APIM_OK);
	assert_int_equal(cfg.server_port_offset, 9);
	config_free(&cfg);
}

/* Bad values in the environment are rejected naming the variable. */
static void test_config_env_validated(void **state)
{
	(void)state;
	static const struct {
		const char *name, *value, *msg;
	} cases[] = {
		{"APIM_SERVER_PORT_OFFSET", "abc", "must be an integer"},
		{"APIM_SERVER_PORT_OFFSET", "", "must be an integer"},
		{"APIM_SERVER_THREADS", "1000", "between 1 and 256"},
		{"APIM_LOG_FORMAT", "yaml", "json or text"},
		{"APIM_DATABASE_SHAREDDB_URL", "oracle://db", "URL"},
		{"APIM_ADMIN_USERNAME", "", "must not be empty"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		apim_config cfg;
		char err[512] = "";
		char want[256];
		test_config_clear_env();
		setenv(cases[i].name, cases[i].value, 1);
		assert_int_equal(config_load(&cfg, NULL, err, sizeof(err)), APIM_ECONFIG);
		snprintf(want, sizeof(want), "%s: ", cases[i].name);
		if (strncmp(err, want, strlen(want)) != 0)
			fail_msg("error \"%s\" does not start with \"%s\"", err, want);
		test_config_assert_contains(err, cases[i].msg);
		assert_null(cfg.server_home);
	}
	/* A good file does not hide a bad environment. */
	apim_config cfg;
	char err[512];
	test_config_clear_env();
	setenv("APIM_SECURITY_LOCKOUT_ATTEMPTS", "0", 1);
	assert_int_equal(test_config_load_text(&cfg, "[security]\nlockout_attempts = 3\n", err,
					       sizeof(err)),
			 APIM_ECONFIG);
	test_config_assert_contains(err, "APIM_SECURITY_LOCKOUT_ATTEMPTS: ");
	/* A bad file is reported before the environment is looked at. */
	test_config_assert_rejected("[security]\nlockout_attempts = many\n", 2,
				    "security.lockout_attempts", "must be an integer");
}

static void test_config_tls_pair(void **state)
{
	(void)state;
	apim_config cfg;
	char err[512];
	assert_int_equal(test_config_load_text(&cfg, "[http]\ntls_cert = \"/etc/apim/cert.pem\"\n",
					       err, sizeof(err)),
			 APIM_ECONFIG);
	test_config_assert_contains(err, "tls_cert");
	test_config_assert_contains(err, "tls_key");
	assert_null(cfg.http_tls_cert);

	assert_int_equal(test_config_load_text(&cfg, "[http]\ntls_key = \"/etc/apim/key.pem\"\n",
					       err, sizeof(err)),
			 APIM_ECONFIG);
	test_config_assert_contains(err, "set together");

	/* Through the environment too. */
	setenv("APIM_HTTP_TLS_CERT", "/etc/apim/cert.pem", 1);
	assert_int_equal(config_load(&cfg, NULL, err, sizeof(err)), APIM_ECONFIG);
	test_config_assert_contains(err, "set together");

	/* Both set: accepted (the files are read by the HTTP layer, not here). */
	setenv("APIM_HTTP_TLS_KEY", "/etc/apim/key.pem", 1);
	assert_int_equal(config_load(&cfg, NULL, err, sizeof(err)), APIM_OK);
	assert_string_equal(cfg.http_tls_cert, "/etc/apim/cert.pem");
	assert_string_equal(cfg.http_tls_key, "/etc/apim/key.pem");
	config_free(&cfg);
}

static void test_config_unquote(void **state)
{
	(void)state;
	char a[] = "\"x\\ty\\\\z\\\"\" # tail";
	char *rest = NULL;
	char *v = unquote(a, &rest);
	assert_non_null(v);
	assert_string_equal(v, "x\ty\\z\"");
	assert_string_equal(rest, " # tail");
	char b[] = "\"open";
	assert_null(unquote(b, &rest));
	char c[] = "\"bad \\q escape\"";
	assert_null(unquote(c, &rest));
	char d[] = "\"ends in backslash\\";
	assert_null(unquote(d, &rest));
	char e[] = "  \t spaced \r\n";
	assert_string_equal(trim(e), "spaced");
}

static void test_config_docs(void **state)
{
	(void)state;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	config_print_docs(f);
	fclose(f);
	test_config_assert_contains(buf, "## [server]");
	test_config_assert_contains(buf, "## [log]");
	test_config_assert_contains(buf, "| `port_offset` | `APIM_SERVER_PORT_OFFSET` | "
					 "integer (0–50000) | `0` |");
	test_config_assert_contains(buf, "| `apimgtdb_url` | `APIM_DATABASE_APIMGTDB_URL` | string "
					 "| `\"\"` |");
	/* Every key is documented. */
	for (size_t i = 0; i < NKEYS; i++) {
		char env[128];
		env_name(&config_keys[i], env, sizeof(env));
		test_config_assert_contains(buf, env);
	}
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_config_defaults, test_config_setup,
						test_config_teardown),
		cmocka_unit_test_setup_teardown(test_config_table, test_config_setup,
						test_config_teardown),
		cmocka_unit_test_setup_teardown(test_config_file_parsing, test_config_setup,
						test_config_teardown),
		cmocka_unit_test_setup_teardown(test_config_crlf_and_repeats, test_config_setup,
						test_config_teardown),
		cmocka_unit_test_setup_teardown(test_config_int_bounds, test_config_setup,
						test_config_teardown),
		cmocka_unit_test_setup_teardown(test_config_error_kinds, test_config_setup,
						test_config_teardown),
		cmocka_unit_test_setup_teardown(test_config_missing_file, test_config_setup,
						test_config_teardown),
		cmocka_unit_test_setup_teardown(test_config_env_overrides, test_config_setup,
						test_config_teardown),
		cmocka_unit_test_setup_teardown(test_config_env_validated, test_config_setup,
						test_config_teardown),
		cmocka_unit_test_setup_teardown(test_config_tls_pair, test_config_setup,
						test_config_teardown),
		cmocka_unit_test_setup_teardown(test_config_unquote, test_config_setup,
						test_config_teardown),
		cmocka_unit_test_setup_teardown(test_config_docs, test_config_setup,
						test_config_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
