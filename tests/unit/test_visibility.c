/*
 * test_visibility.c: which APIs a Developer Portal caller sees
 * (devportal_api_visible): the lifecycle states that are listed, and
 * PUBLIC, PRIVATE and RESTRICTED visibility for anonymous callers,
 * subscribers, holders of the restricted roles and admins.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "devportal/devportal_internal.h"

static json_t *api(const char *status, const char *visibility, const char *roles_json)
{
	json_t *a = json_pack("{s:s, s:s}", "name", "Pizza", "lifeCycleStatus", status);
	if (visibility != NULL)
		json_object_set_new(a, "visibility", json_string(visibility));
	if (roles_json != NULL)
		json_object_set_new(a, "visibleRoles", json_loads(roles_json, 0, NULL));
	return a;
}

static int visible(const principal *who, const char *status, const char *visibility,
		   const char *roles_json)
{
	json_t *a = api(status, visibility, roles_json);
	int v = devportal_api_visible(who, a);
	json_decref(a);
	return v;
}

static const char *const sub_roles[] = {ROLE_SUBSCRIBER, ROLE_EVERYONE};
static const char *const sub_scopes[] = {"apim:subscribe", "apim:app_manage"};
static const principal subscriber = {.username = "kim", .roles = sub_roles, .nroles = 2,
				     .scopes = sub_scopes, .nscopes = 2, .method = AUTH_BASIC};

static const char *const creator_roles[] = {ROLE_CREATOR};
static const char *const creator_scopes[] = {"apim:api_create"};
static const principal creator = {.username = "carol", .roles = creator_roles, .nroles = 1,
				  .scopes = creator_scopes, .nscopes = 1, .method = AUTH_BASIC};

static const char *const admin_roles[] = {ROLE_ADMIN};
static const char *const admin_scopes[] = {"apim:admin", "apim:subscribe"};
static const principal admin = {.username = "admin", .roles = admin_roles, .nroles = 1,
				.scopes = admin_scopes, .nscopes = 2, .method = AUTH_BASIC};

/* an admin's bearer token that was granted only apim:subscribe */
static const char *const narrow_scopes[] = {"apim:subscribe"};
static const principal admin_token = {.username = "admin", .roles = admin_roles, .nroles = 1,
				      .scopes = narrow_scopes, .nscopes = 1,
				      .method = AUTH_BEARER};

static void test_states(void **state)
{
	(void)state;
	/* listed states, in any case */
	assert_true(visible(NULL, "PUBLISHED", "PUBLIC", NULL));
	assert_true(visible(NULL, "PROTOTYPED", "PUBLIC", NULL));
	assert_true(visible(NULL, "DEPRECATED", "PUBLIC", NULL));
	assert_true(visible(NULL, "Published", "PUBLIC", NULL));
	/* never listed, not even for admins */
	const char *hidden[] = {"CREATED", "BLOCKED", "RETIRED", "", "PUBLISHEDX"};
	for (size_t i = 0; i < sizeof(hidden) / sizeof(hidden[0]); i++) {
		assert_false(visible(NULL, hidden[i], "PUBLIC", NULL));
		assert_false(visible(&subscriber, hidden[i], "PUBLIC", NULL));
		assert_false(visible(&admin, hidden[i], "PUBLIC", NULL));
	}
	/* no lifecycle status at all */
	json_t *a = json_pack("{s:s}", "visibility", "PUBLIC");
	assert_false(devportal_api_visible(&admin, a));
	json_decref(a);
}

static void test_public(void **state)
{
	(void)state;
	assert_true(visible(NULL, "PUBLISHED", "PUBLIC", NULL));
	assert_true(visible(&subscriber, "PUBLISHED", "PUBLIC", NULL));
	assert_true(visible(&creator, "PUBLISHED", "public", NULL));
	/* a document without visibility is public (the Publisher's default) */
	assert_true(visible(NULL, "PUBLISHED", NULL, NULL));
}

static void test_private(void **state)
{
	(void)state;
	assert_false(visible(NULL, "PUBLISHED", "PRIVATE", NULL));
	assert_true(visible(&subscriber, "PUBLISHED", "PRIVATE", NULL));
	assert_true(visible(&creator, "PUBLISHED", "PRIVATE", NULL));
	assert_true(visible(&admin, "PUBLISHED", "PRIVATE", NULL));
}

static void test_restricted(void **state)
{
	(void)state;
	const char *to_creators = "[\"Internal/creator\"]";
	assert_false(visible(NULL, "PUBLISHED", "RESTRICTED", to_creators));
	assert_false(visible(&subscriber, "PUBLISHED", "RESTRICTED", to_creators));
	assert_true(visible(&creator, "PUBLISHED", "RESTRICTED", to_creators));
	assert_true(visible(&admin, "PUBLISHED", "RESTRICTED", to_creators));
	assert_true(visible(&admin_token, "PUBLISHED", "RESTRICTED", to_creators));
	/* roles compare without case, any listed role is enough */
	assert_true(visible(&creator, "PUBLISHED", "RESTRICTED", "[\"x\", \"internal/CREATOR\"]"));
	assert_true(visible(&subscriber, "PUBLISHED", "RESTRICTED",
			    "[\"Internal/creator\", \"Internal/subscriber\"]"));
	/* Internal/everyone: every authenticated caller, not anonymous ones */
	assert_true(visible(&creator, "PUBLISHED", "RESTRICTED", "[\"Internal/everyone\"]"));
	assert_false(visible(NULL, "PUBLISHED", "RESTRICTED", "[\"Internal/everyone\"]"));
	/* no roles, or junk in the list: nobody but admins */
	assert_false(visible(&creator, "PUBLISHED", "RESTRICTED", "[]"));
	assert_false(visible(&creator, "PUBLISHED", "RESTRICTED", NULL));
	assert_false(visible(&creator, "PUBLISHED", "RESTRICTED", "[5, null]"));
	assert_true(visible(&admin, "PUBLISHED", "RESTRICTED", "[]"));
	/* the state still applies */
	assert_false(visible(&creator, "CREATED", "RESTRICTED", to_creators));
}

static void test_unknown_visibility(void **state)
{
	(void)state;
	assert_false(visible(NULL, "PUBLISHED", "SECRET", NULL));
	assert_false(visible(&subscriber, "PUBLISHED", "SECRET", NULL));
	assert_true(visible(&admin, "PUBLISHED", "SECRET", NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_states),
		cmocka_unit_test(test_public),
		cmocka_unit_test(test_private),
		cmocka_unit_test(test_restricted),
		cmocka_unit_test(test_unknown_visibility),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
