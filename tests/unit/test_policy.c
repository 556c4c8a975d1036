/*
 * test_policy.c: the Admin API's validators (admin_validate, admin_schema):
 * IP addresses and ranges, key templates, time units, names, and the
 * messages a user sees for bad bodies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "admin/admin_schema.h"
#include "admin/admin_validate.h"

static char err[512];

static void test_time_units(void **state)
{
	(void)state;
	const char *ok[] = {"sec", "min", "hour", "day", "week", "month", "year"};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		assert_string_equal(admin_validate_time_unit(ok[i]), ok[i]);
	assert_string_equal(admin_validate_time_unit("MIN"), "min");
	assert_null(admin_validate_time_unit("s"));
	assert_null(admin_validate_time_unit("minute"));
	assert_null(admin_validate_time_unit(""));
	assert_null(admin_validate_time_unit(NULL));
	assert_int_equal(admin_time_unit_seconds("min"), 60);
	assert_int_equal(admin_time_unit_seconds("day"), 86400);
	assert_int_equal(admin_time_unit_seconds("bogus"), 0);
}

static void test_ip(void **state)
{
	(void)state;
	int fam = 0;
	unsigned char a[16];
	assert_int_equal(admin_validate_ip("f", "192.168.1.10", &fam, a, err, sizeof(err)), APIM_OK);
	assert_int_equal(fam, 2 /* AF_INET */);
	assert_int_equal(admin_validate_ip("f", "2001:db8::1", &fam, a, err, sizeof(err)), APIM_OK);
	assert_int_equal(fam, 10 /* AF_INET6 */);
	assert_int_equal(admin_validate_ip("f", "::ffff:10.0.0.1", NULL, NULL, err, sizeof(err)),
			 APIM_OK);
	const char *bad[] = {"", "1.2.3", "256.1.1.1", "1.2.3.4.5", "01.2.3.4", "abc",
			     "1.2.3.4/24", "2001:db8:::1", " 1.2.3.4", "gggg::1"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(admin_validate_ip("ipCondition.specificIP", bad[i], NULL, NULL, err,
						   sizeof(err)),
				 APIM_EINVAL);
		assert_non_null(strstr(err, "ipCondition.specificIP"));
	}
	char c[64];
	assert_int_equal(admin_ip_canonical("2001:0db8:0000::0001", c, sizeof(c)), APIM_OK);
	assert_string_equal(c, "2001:db8::1");
}

static void test_ip_range(void **state)
{
	(void)state;
	assert_int_equal(admin_validate_ip_range("s", "10.0.0.1", "e", "10.0.0.255", err,
						 sizeof(err)),
			 APIM_OK);
	assert_int_equal(admin_validate_ip_range("s", "10.0.0.1", "e", "10.0.0.1", err, sizeof(err)),
			 APIM_OK);
	assert_int_equal(admin_validate_ip_range("s", "2001:db8::1", "e", "2001:db8::ffff", err,
						 sizeof(err)),
			 APIM_OK);
	/* reversed */
	assert_int_equal(admin_validate_ip_range("startingIp", "10.0.1.0", "endingIp", "10.0.0.255",
						 err, sizeof(err)),
			 APIM_EINVAL);
	assert_non_null(strstr(err, "must not be greater"));
	/* numeric, not textual, order: 9.x < 10.x */
	assert_int_equal(admin_validate_ip_range("s", "9.255.255.255", "e", "10.0.0.0", err,
						 sizeof(err)),
			 APIM_OK);
	assert_int_equal(admin_validate_ip_range("s", "2001:db8::ff", "e", "2001:db8::1", err,
						 sizeof(err)),
			 APIM_EINVAL);
	/* mixed families */
	assert_int_equal(admin_validate_ip_range("s", "10.0.0.1", "e", "2001:db8::1", err,
						 sizeof(err)),
			 APIM_EINVAL);
	assert_non_null(strstr(err, "both be IPv4 or both be IPv6"));
	/* invalid end names the end field */
	assert_int_equal(admin_validate_ip_range("startingIp", "10.0.0.1", "endingIp", "10.0.0",
						 err, sizeof(err)),
			 APIM_EINVAL);
	assert_non_null(strstr(err, "endingIp"));
}

static void test_key_template(void **state)
{
	(void)state;
	const char *ok[] = {"$userId",
			    "$userId:$apiContext:$apiVersion",
			    "$resourceKey:$appId:$appTenant:$apiTenant:$clientIp",
			    "$customProperty.region:$userId",
			    "global",
			    "tenant@carbon.super:$apiContext"};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		assert_int_equal(admin_validate_key_template("keyTemplate", ok[i], err, sizeof(err)),
				 APIM_OK);
	assert_int_equal(admin_validate_key_template("keyTemplate", "$user:$apiContext", err,
						     sizeof(err)),
			 APIM_EINVAL);
	assert_non_null(strstr(err, "unknown token '$user'"));
	assert_non_null(strstr(err, "$userId"));
	assert_non_null(strstr(err, "$clientIp"));
	assert_int_equal(admin_validate_key_template("keyTemplate", "$userId::$apiContext", err,
						     sizeof(err)),
			 APIM_EINVAL);
	assert_non_null(strstr(err, "empty segment"));
	assert_int_equal(admin_validate_key_template("keyTemplate", "$userId:", err, sizeof(err)),
			 APIM_EINVAL);
	assert_int_equal(admin_validate_key_template("keyTemplate", "", err, sizeof(err)),
			 APIM_EINVAL);
	assert_int_equal(admin_validate_key_template("keyTemplate", "$customProperty.", err,
						     sizeof(err)),
			 APIM_EINVAL);
	assert_int_equal(admin_validate_key_template("keyTemplate", "a b", err, sizeof(err)),
			 APIM_EINVAL);
	assert_int_equal(admin_validate_key_template("keyTemplate", "$userIdX", err, sizeof(err)),
			 APIM_EINVAL);
}

static void test_names(void **state)
{
	(void)state;
	assert_int_equal(admin_validate_name("policyName", "Gold_2-x", 60, err, sizeof(err)),
			 APIM_OK);
	assert_int_equal(admin_validate_name("policyName", "", 60, err, sizeof(err)), APIM_EINVAL);
	assert_int_equal(admin_validate_name("policyName", "has space", 60, err, sizeof(err)),
			 APIM_EINVAL);
	assert_non_null(strstr(err, "policyName"));
	char longname[62];
	memset(longname, 'a', 61);
	longname[61] = '\0';
	assert_int_equal(admin_validate_name("policyName", longname, 60, err, sizeof(err)),
			 APIM_EINVAL);
	longname[60] = '\0';
	assert_int_equal(admin_validate_name("policyName", longname, 60, err, sizeof(err)), APIM_OK);

	assert_int_equal(admin_validate_host("h", "gw.example.com", err, sizeof(err)), APIM_OK);
	assert_int_equal(admin_validate_host("h", "localhost", err, sizeof(err)), APIM_OK);
	assert_int_equal(admin_validate_host("h", "10.1.2.3", err, sizeof(err)), APIM_OK);
	assert_int_equal(admin_validate_host("h", "::1", err, sizeof(err)), APIM_OK);
	assert_int_equal(admin_validate_host("h", "-bad.example.com", err, sizeof(err)),
			 APIM_EINVAL);
	assert_int_equal(admin_validate_host("h", "a..b", err, sizeof(err)), APIM_EINVAL);
	assert_int_equal(admin_validate_host("h", "http://x", err, sizeof(err)), APIM_EINVAL);
	assert_int_equal(admin_validate_host("h", ".x", err, sizeof(err)), APIM_EINVAL);
}

static const char *const units[] = {"KB", "MB", NULL};
static const schema_field inner[] = {
	{.name = "unit", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED, .enums = units},
	{.name = "n", .type = SCHEMA_INT, .flags = 0, .min = 1, .max = 10},
	{.name = NULL},
};
static const schema_field outer[] = {
	{.name = "name", .type = SCHEMA_STRING, .flags = SCHEMA_REQUIRED | SCHEMA_NONEMPTY,
	 .max = 5},
	{.name = "on", .type = SCHEMA_BOOL, .flags = 0},
	{.name = "limit", .type = SCHEMA_OBJECT, .flags = 0, .fields = inner},
	{.name = "items", .type = SCHEMA_ARRAY, .flags = 0, .fields = inner,
	 .item = SCHEMA_OBJECT},
	{.name = "tags", .type = SCHEMA_ARRAY, .flags = 0, .item = SCHEMA_STRING},
	{.name = NULL},
};

/* The message for body against outer, or NULL when it passes. */
static const char *check(arena *pool, const char *body)
{
	json_t *o = json_loads(body, 0, NULL);
	assert_non_null(o);
	char *msg = NULL;
	apim_rc rc = admin_schema_check(pool, o, outer, "", &msg);
	json_decref(o);
	if (rc == APIM_OK)
		return NULL;
	assert_int_equal(rc, APIM_EINVAL);
	assert_non_null(msg);
	return msg;
}

static void test_schema(void **state)
{
	(void)state;
	arena *pool = arena_create(4096);
	assert_null(check(pool, "{\"name\":\"a\",\"limit\":{\"unit\":\"KB\",\"n\":3}}"));
	assert_null(check(pool, "{\"name\":\"a\",\"on\":null,\"limit\":null}"));
	assert_null(check(pool, "{\"name\":\"a\",\"limit\":{\"unit\":\"mb\"}}"));
	assert_string_equal(check(pool, "{}"), "'name' is required");
	assert_string_equal(check(pool, "{\"name\":\"  \"}"), "'name' must not be empty");
	assert_non_null(strstr(check(pool, "{\"name\":\"abcdef\"}"), "too long"));
	assert_string_equal(check(pool, "{\"name\":\"a\",\"bogus\":1}"),
			    "Unknown field 'bogus'; allowed fields: name, on, limit, items, tags");
	assert_string_equal(check(pool, "{\"name\":\"a\",\"on\":\"yes\"}"),
			    "'on' must be a boolean (true or false)");
	assert_string_equal(check(pool, "{\"name\":\"a\",\"limit\":{\"unit\":\"TB\"}}"),
			    "'limit.unit' must be one of: KB, MB (got 'TB')");
	assert_string_equal(check(pool, "{\"name\":\"a\",\"limit\":{\"unit\":\"KB\",\"n\":0}}"),
			    "'limit.n' must be between 1 and 10 (got 0)");
	assert_string_equal(check(pool, "{\"name\":\"a\",\"limit\":{\"unit\":\"KB\",\"n\":\"3\"}}"),
			    "'limit.n' must be an integer");
	assert_string_equal(check(pool, "{\"name\":\"a\",\"items\":[{\"unit\":\"KB\"},{}]}"),
			    "'items[1].unit' is required");
	assert_string_equal(check(pool, "{\"name\":\"a\",\"limit\":{\"unit\":\"KB\",\"x\":1}}"),
			    "Unknown field 'limit.x'; 'limit' takes: unit, n");
	assert_string_equal(check(pool, "{\"name\":\"a\",\"tags\":[\"a\",2]}"),
			    "'tags[1]' must be a string");
	assert_string_equal(check(pool, "{\"name\":\"a\",\"limit\":[]}"), "'limit' must be an object");
	arena_destroy(pool);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_time_units), cmocka_unit_test(test_ip),
		cmocka_unit_test(test_ip_range),   cmocka_unit_test(test_key_template),
		cmocka_unit_test(test_names),      cmocka_unit_test(test_schema),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
