/*
 * test_tm_custom.c: the Siddhi subset of custom policies (tm_custom.c) and
 * the Traffic Manager's limits of custom and bandwidth policies
 * (tm_policy.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "trafficmanager/tm_custom.h"
#include "trafficmanager/tm_policy.h"

/* the reference's documented example */
static const char canonical[] =
	"FROM RequestStream\n"
	"SELECT userId, ( userId == 'admin@carbon.super' ) AS isEligible , "
	"str:concat('admin@carbon.super','') as throttleKey\n"
	"INSERT INTO EligibilityStream;\n"
	"FROM EligibilityStream[isEligible==true]#throttler:timeBatch(1 min)\n"
	"SELECT throttleKey, (count(userId) >= 5) as isThrottled, expiryTimeStamp group by "
	"throttleKey\n"
	"INSERT ALL EVENTS into ResultStream;";

static void test_canonical(void **state)
{
	(void)state;
	tm_custom_rule r;
	char err[2048] = "";
	assert_int_equal(tm_custom_parse(canonical, &r, err, sizeof(err)), APIM_OK);
	assert_int_equal(r.nconds, 1);
	assert_string_equal(tm_custom_vars[r.conds[0].var], "userId");
	assert_string_equal(r.conds[0].value, "admin@carbon.super");
	assert_int_equal(r.limit, 5);
	assert_int_equal(r.window_ms, 60000);

	json_t *j = tm_custom_rule_json(&r, "$userId");
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	assert_string_equal(s, "{\"conditions\":[{\"field\":\"userId\",\"value\":"
			       "\"admin@carbon.super\"}],\"keyTemplate\":\"$userId\",\"limit\":5,"
			       "\"windowMs\":60000}");
	free(s);
	json_decref(j);
}

static void test_variants(void **state)
{
	(void)state;
	tm_custom_rule r;
	char err[2048] = "";
	/* always eligible, '>' admits one more, hours, keywords in any case */
	const char *q = "from RequestStream select apiContext, apiVersion, true as isEligible, "
			"str:concat(apiContext, ':', apiVersion) as throttleKey "
			"insert into S1; from S1[isEligible == true]#throttler:timeBatch(2 hours) "
			"select throttleKey, count(apiContext) > 9 as isThrottled, expiryTimeStamp "
			"group by throttleKey insert all events into ResultStream";
	assert_int_equal(tm_custom_parse(q, &r, err, sizeof(err)), APIM_OK);
	assert_int_equal(r.nconds, 0);
	assert_int_equal(r.limit, 10);
	assert_int_equal(r.window_ms, 2 * 3600000);

	/* a conjunction, nested parentheses, literal first */
	q = "FROM RequestStream SELECT ((apiContext == '/pizza') and ('1.0' == apiVersion) and "
	    "clientIp == '127.0.0.1') AS isEligible INSERT INTO E;"
	    "FROM E[isEligible==true]#throttler:timeBatch(1 day) SELECT throttleKey, "
	    "(count(clientIp) >= 100) AS isThrottled GROUP BY throttleKey "
	    "INSERT INTO ResultStream;";
	assert_int_equal(tm_custom_parse(q, &r, err, sizeof(err)), APIM_OK);
	assert_int_equal(r.nconds, 3);
	assert_string_equal(tm_custom_vars[r.conds[1].var], "apiVersion");
	assert_string_equal(r.conds[1].value, "1.0");
	assert_string_equal(r.conds[2].value, "127.0.0.1");
	assert_int_equal(r.limit, 100);
	assert_int_equal(r.window_ms, 86400000);

	/* every unit of the Admin API */
	static const struct {
		const char *unit;
		int64_t ms;
	} units[] = {{"sec", 1000},           {"min", 60000},          {"hour", 3600000},
		     {"day", 86400000},       {"week", 604800000},     {"month", 2592000000LL},
		     {"year", 31536000000LL}, {"seconds", 1000}};
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		char buf[512];
		snprintf(buf, sizeof(buf),
			 "FROM RequestStream SELECT true AS isEligible INSERT INTO E; "
			 "FROM E[isEligible==true]#throttler:timeBatch(3 %s) SELECT throttleKey, "
			 "(count(userId) >= 1) AS isThrottled GROUP BY throttleKey "
			 "INSERT INTO ResultStream",
			 units[i].unit);
		assert_int_equal(tm_custom_parse(buf, &r, err, sizeof(err)), APIM_OK);
		assert_int_equal(r.window_ms, 3 * units[i].ms);
	}
}

static void refused(const char *q, const char *words)
{
	tm_custom_rule r;
	char err[2048] = "";
	assert_int_equal(tm_custom_parse(q, &r, err, sizeof(err)), APIM_EINVAL);
	if (strstr(err, words) == NULL || strstr(err, "Supported:") == NULL)
		fail_msg("'%s': message '%s' lacks '%s'", q, err, words);
}

static void test_refused(void **state)
{
	(void)state;
	const char *tail = " INSERT INTO E; FROM E[isEligible==true]#throttler:timeBatch(1 min) "
			   "SELECT throttleKey, (count(userId) >= 5) AS isThrottled GROUP BY "
			   "throttleKey INSERT INTO ResultStream;";
	char q[1024];
	snprintf(q, sizeof(q), "FROM RequestStream SELECT (userId == 'a' or userId == 'b') AS "
			       "isEligible%s", tail);
	refused(q, "'or' is not supported");
	snprintf(q, sizeof(q), "FROM RequestStream SELECT (tenant == 'a') AS isEligible%s", tail);
	refused(q, "unknown field 'tenant'");
	snprintf(q, sizeof(q), "FROM RequestStream SELECT (userId != 'a') AS isEligible%s", tail);
	refused(q, "isEligible must be");
	snprintf(q, sizeof(q), "FROM RequestStream SELECT (userId == 'a')%s", tail);
	refused(q, "unsupported select item");
	snprintf(q, sizeof(q), "FROM RequestStream SELECT userId%s", tail);
	refused(q, "no select item AS isEligible");
	refused("FROM RequestStream SELECT true AS isEligible INSERT INTO E; FROM "
		"E[isEligible==true]#window.time(1 min) SELECT throttleKey, (count(userId) >= 5) "
		"AS isThrottled GROUP BY throttleKey INSERT INTO ResultStream;",
		"expected 'throttler'");
	refused("FROM RequestStream SELECT true AS isEligible INSERT INTO E; FROM "
		"E[isEligible==true]#throttler:timeBatch(1 fortnight) SELECT throttleKey, "
		"(count(userId) >= 5) AS isThrottled GROUP BY throttleKey INSERT INTO "
		"ResultStream;",
		"unit must be sec, min");
	refused("FROM RequestStream SELECT true AS isEligible INSERT INTO E; FROM "
		"E[isEligible==true]#throttler:timeBatch(1 min) SELECT throttleKey, "
		"(sum(messageSize) >= 5) AS isThrottled GROUP BY throttleKey INSERT INTO "
		"ResultStream;",
		"isThrottled must be");
	refused("FROM RequestStream SELECT true AS isEligible INSERT INTO E; FROM "
		"X[isEligible==true]#throttler:timeBatch(1 min) SELECT throttleKey, "
		"(count(userId) >= 5) AS isThrottled GROUP BY throttleKey INSERT INTO "
		"ResultStream;",
		"reads the stream the first inserts into ('E')");
	refused("define stream Foo (a string);", "expected 'from'");
	refused("FROM RequestStream SELECT true AS isEligible INSERT INTO E; FROM "
		"E[isEligible==true]#throttler:timeBatch(1 min) SELECT throttleKey, "
		"(count(userId) >= 5) AS isThrottled GROUP BY throttleKey INSERT INTO "
		"ResultStream; FROM ResultStream SELECT *",
		"unexpected text");
	refused("FROM RequestStream SELECT ('a", "not closed");
	refused("", "expected 'from' at the end");
}

/* every prefix of the example, and random damage to it: a rule or a
 * message, never a crash (the suite runs under ASan) */
static void test_truncated_and_damaged(void **state)
{
	(void)state;
	size_t n = strlen(canonical);
	char buf[sizeof(canonical)];
	tm_custom_rule r;
	char err[2048];
	uint32_t rng = 7;
	for (size_t len = 0; len < n; len++) {
		memcpy(buf, canonical, len);
		buf[len] = '\0';
		err[0] = '\0';
		apim_rc rc = tm_custom_parse(buf, &r, err, sizeof(err));
		/* the trailing ';' is optional: only the full query (and it
		 * without its ';') is a rule */
		if (len >= n - 1)
			assert_int_equal(rc, APIM_OK);
		else
			assert_true(rc == APIM_EINVAL && err[0] != '\0');
	}
	static const char junk[] = "()[]'\"=<>!#:;, \nabcAND0123456789";
	for (int i = 0; i < 5000; i++) {
		memcpy(buf, canonical, n + 1);
		for (int k = 0; k < 1 + i % 4; k++) {
			rng = rng * 1103515245u + 12345u;
			size_t at = (rng >> 8) % n;
			rng = rng * 1103515245u + 12345u;
			buf[at] = junk[(rng >> 8) % (sizeof(junk) - 1)];
		}
		err[0] = '\0';
		apim_rc rc = tm_custom_parse(buf, &r, err, sizeof(err));
		assert_true(rc == APIM_OK || (rc == APIM_EINVAL && err[0] != '\0'));
		if (rc == APIM_OK) {
			assert_true(r.limit >= 1 && r.window_ms >= 1000);
			assert_true(r.nconds <= TM_CUSTOM_MAX_CONDS);
		}
	}
}

static void test_template(void **state)
{
	(void)state;
	char err[512];
	assert_int_equal(tm_custom_template_check("$userId", err, sizeof(err)), APIM_OK);
	assert_int_equal(tm_custom_template_check("$userId:$apiContext:$apiVersion", err,
						  sizeof(err)),
			 APIM_OK);
	assert_int_equal(tm_custom_template_check("gold:$clientIp", err, sizeof(err)), APIM_OK);
	assert_int_equal(tm_custom_template_check("$customProperty.x", err, sizeof(err)),
			 APIM_EINVAL);
	assert_non_null(strstr(err, "'$customProperty.x' is not supported"));
}

/* the Traffic Manager's table: custom rules and bandwidth limits */
static void test_policies(void **state)
{
	(void)state;
	json_t *list = json_loads(
		"[{\"level\": \"custom\", \"name\": \"C1\", \"doc\": {\"keyTemplate\": \"$userId\"},"
		"  \"rule\": {\"conditions\": [], \"limit\": 5, \"windowMs\": 60000,"
		"             \"keyTemplate\": \"$userId\"}},"
		" {\"level\": \"custom\", \"name\": \"NoRule\", \"doc\": {}},"
		" {\"level\": \"subscription\", \"name\": \"Bw\", \"doc\": {\"defaultLimit\": {"
		"   \"type\": \"BANDWIDTHLIMIT\", \"bandwidth\": {\"dataAmount\": 10,"
		"   \"dataUnit\": \"GB\", \"timeUnit\": \"day\", \"unitTime\": 1}}}},"
		" {\"level\": \"application\", \"name\": \"BwKB\", \"doc\": {\"defaultLimit\": {"
		"   \"type\": \"BANDWIDTHLIMIT\", \"bandwidth\": {\"dataAmount\": 10,"
		"   \"dataUnit\": \"KB\", \"timeUnit\": \"min\", \"unitTime\": 1}}}}]",
		0, NULL);
	assert_non_null(list);
	tm_policies *t = NULL;
	size_t skipped = 0;
	assert_int_equal(tm_policies_build(list, &t, &skipped), APIM_OK);
	assert_int_equal(skipped, 1);
	tm_limit l;
	assert_true(tm_policies_find(t, "custom", "C1", -1, &l));
	assert_int_equal(l.amount, 5);
	assert_int_equal(l.window_ms, 60000);
	assert_false(l.bandwidth);
	assert_false(tm_policies_find(t, "custom", "NoRule", -1, &l));
	assert_true(tm_policies_find(t, "subscription", "Bw", -1, &l));
	assert_int_equal(l.amount, 10LL * 1024 * 1024 * 1024);
	assert_int_equal(l.window_ms, 86400000);
	assert_true(l.bandwidth);
	assert_true(tm_policies_find(t, "application", "BwKB", -1, &l));
	assert_int_equal(l.amount, 10240);
	tm_policies_free(t);
	json_decref(list);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_canonical), cmocka_unit_test(test_variants),
		cmocka_unit_test(test_refused),   cmocka_unit_test(test_truncated_and_damaged),
		cmocka_unit_test(test_template),
		cmocka_unit_test(test_policies),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
