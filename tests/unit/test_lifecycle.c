/*
 * test_lifecycle.c: the API lifecycle state machine (publisher_lifecycle.c):
 * every allowed transition of the reference's table, the refused ones, the
 * state names, and the order of the available actions a user sees.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "publisher/publisher_internal.h"

static publisher_lc_state next(publisher_lc_state from, const char *action)
{
	publisher_lc_state to = PUB_LC_NSTATES;
	assert_int_equal(publisher_lifecycle_next(from, action, &to), 0);
	return to;
}

static void refused(publisher_lc_state from, const char *action)
{
	publisher_lc_state to = PUB_LC_NSTATES;
	assert_int_equal(publisher_lifecycle_next(from, action, &to), -1);
	assert_int_equal(to, PUB_LC_NSTATES);
}

static void test_allowed(void **state)
{
	(void)state;
	assert_int_equal(next(PUB_LC_CREATED, "Publish"), PUB_LC_PUBLISHED);
	assert_int_equal(next(PUB_LC_CREATED, "Deploy as a Prototype"), PUB_LC_PROTOTYPED);
	assert_int_equal(next(PUB_LC_PROTOTYPED, "Publish"), PUB_LC_PUBLISHED);
	assert_int_equal(next(PUB_LC_PROTOTYPED, "Demote to Created"), PUB_LC_CREATED);
	assert_int_equal(next(PUB_LC_PROTOTYPED, "Deploy as a Prototype"), PUB_LC_PROTOTYPED);
	assert_int_equal(next(PUB_LC_PUBLISHED, "Block"), PUB_LC_BLOCKED);
	assert_int_equal(next(PUB_LC_PUBLISHED, "Deploy as a Prototype"), PUB_LC_PROTOTYPED);
	assert_int_equal(next(PUB_LC_PUBLISHED, "Demote to Created"), PUB_LC_CREATED);
	assert_int_equal(next(PUB_LC_PUBLISHED, "Deprecate"), PUB_LC_DEPRECATED);
	assert_int_equal(next(PUB_LC_PUBLISHED, "Publish"), PUB_LC_PUBLISHED);
	assert_int_equal(next(PUB_LC_BLOCKED, "Re-Publish"), PUB_LC_PUBLISHED);
	assert_int_equal(next(PUB_LC_BLOCKED, "Deprecate"), PUB_LC_DEPRECATED);
	assert_int_equal(next(PUB_LC_DEPRECATED, "Retire"), PUB_LC_RETIRED);
	/* actions compare without case, as query parameters come from scripts */
	assert_int_equal(next(PUB_LC_CREATED, "publish"), PUB_LC_PUBLISHED);
	assert_int_equal(next(PUB_LC_DEPRECATED, "RETIRE"), PUB_LC_RETIRED);
}

static void test_refused(void **state)
{
	(void)state;
	refused(PUB_LC_CREATED, "Block");
	refused(PUB_LC_CREATED, "Retire");
	refused(PUB_LC_CREATED, "Deprecate");
	refused(PUB_LC_CREATED, "Demote to Created");
	refused(PUB_LC_CREATED, "Re-Publish");
	refused(PUB_LC_PROTOTYPED, "Block");
	refused(PUB_LC_PUBLISHED, "Retire");
	refused(PUB_LC_PUBLISHED, "Re-Publish");
	refused(PUB_LC_BLOCKED, "Publish");
	refused(PUB_LC_BLOCKED, "Retire");
	refused(PUB_LC_DEPRECATED, "Publish");
	refused(PUB_LC_DEPRECATED, "Re-Publish");
	/* nothing leaves RETIRED */
	const char *all[] = {"Publish", "Deploy as a Prototype", "Demote to Created", "Block",
			     "Re-Publish", "Deprecate", "Retire"};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		refused(PUB_LC_RETIRED, all[i]);
	refused(PUB_LC_CREATED, "Launch");
	refused(PUB_LC_CREATED, "");
}

static void test_actions(void **state)
{
	(void)state;
	const char *acts[8];
	publisher_lc_state tos[8];
	size_t n = publisher_lifecycle_actions(PUB_LC_CREATED, acts, tos, 8);
	assert_int_equal(n, 2);
	assert_string_equal(acts[0], "Publish");
	assert_int_equal(tos[0], PUB_LC_PUBLISHED);
	assert_string_equal(acts[1], "Deploy as a Prototype");
	n = publisher_lifecycle_actions(PUB_LC_PUBLISHED, acts, tos, 8);
	assert_int_equal(n, 5);
	assert_string_equal(acts[0], "Block");
	assert_string_equal(acts[4], "Publish");
	assert_int_equal(publisher_lifecycle_actions(PUB_LC_BLOCKED, acts, NULL, 8), 2);
	assert_int_equal(publisher_lifecycle_actions(PUB_LC_DEPRECATED, acts, NULL, 8), 1);
	assert_string_equal(acts[0], "Retire");
	assert_int_equal(publisher_lifecycle_actions(PUB_LC_RETIRED, acts, NULL, 8), 0);
	/* a short buffer still reports how many there are */
	assert_int_equal(publisher_lifecycle_actions(PUB_LC_PUBLISHED, acts, NULL, 1), 5);
	assert_string_equal(acts[0], "Block");
}

static void test_names(void **state)
{
	(void)state;
	publisher_lc_state s;
	assert_int_equal(publisher_lifecycle_parse("PUBLISHED", &s), 0);
	assert_int_equal(s, PUB_LC_PUBLISHED);
	assert_int_equal(publisher_lifecycle_parse("Prototyped", &s), 0);
	assert_int_equal(s, PUB_LC_PROTOTYPED);
	assert_int_equal(publisher_lifecycle_parse("retired", &s), 0);
	assert_int_equal(s, PUB_LC_RETIRED);
	assert_int_equal(publisher_lifecycle_parse("LIVE", &s), -1);
	assert_string_equal(publisher_lifecycle_name(PUB_LC_BLOCKED), "BLOCKED");
	assert_string_equal(publisher_lifecycle_label(PUB_LC_BLOCKED), "Blocked");
	assert_string_equal(publisher_lifecycle_label(PUB_LC_CREATED), "Created");
	assert_true(publisher_lifecycle_known_action("Re-Publish"));
	assert_true(publisher_lifecycle_known_action("deploy as a prototype"));
	assert_false(publisher_lifecycle_known_action("Unpublish"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_allowed),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_actions),
		cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
