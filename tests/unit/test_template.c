/*
 * test_template.c: validation of resource URL templates, API contexts and
 * endpoint URLs (publisher_dto.c), the context template / gateway path
 * derivation, and the API object normaliser's answers to bad input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "publisher/publisher_internal.h"

static char err[512];

static int tmpl(const char *t)
{
	err[0] = '\0';
	return publisher_dto_template(t, err, sizeof(err));
}

static void test_templates_ok(void **state)
{
	(void)state;
	const char *ok[] = {"/",
			    "/menu",
			    "/menu/",
			    "/order/{orderId}",
			    "/order/{orderId}/items/{item_id}",
			    "/items/{id}.json",
			    "/a-b_c.d~e",
			    "/*",
			    "/pets/*",
			    "/users/{user.id}/x",
			    "/search:run",
			    "/caf%C3%A9"};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		if (tmpl(ok[i]) != 0)
			fail_msg("%s refused: %s", ok[i], err);
	}
}

static void test_templates_bad(void **state)
{
	(void)state;
	struct {
		const char *t;
		const char *why;
	} bad[] = {
		{"", "must start with /"},
		{"menu", "must start with /"},
		{"/menu items", "spaces"},
		{"/menu?x=1", "query string"},
		{"/menu#top", "fragment"},
		{"//menu", "//"},
		{"/a//b", "//"},
		{"/*/x", "wildcard"},
		{"/a*", "wildcard"},
		{"/a/*b", "wildcard"},
		{"/{id", "unclosed"},
		{"/{}", "empty parameter"},
		{"/id}", "without a matching"},
		{"/{a{b}}", "unclosed"},
		{"/{a b}", "spaces"},
		{"/{a}/{a}", "twice"},
		{"/{a$}", "names use"},
		{"/a/../b", ". or .."},
		{"/a/./b", ". or .."},
		{"/a<b", "not allowed"},
		{"/a\"b", "not allowed"},
		{"/a%zz", "%XX"},
		{"/a\tb", "spaces"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (tmpl(bad[i].t) == 0)
			fail_msg("%s accepted", bad[i].t);
		if (strstr(err, bad[i].why) == NULL)
			fail_msg("%s: message '%s' does not say '%s'", bad[i].t, err, bad[i].why);
	}
}

static int ctx(const char *in, char *out)
{
	err[0] = '\0';
	return publisher_dto_context(in, out, 256, err, sizeof(err));
}

static void test_contexts(void **state)
{
	(void)state;
	char out[256];
	assert_int_equal(ctx("/pizza", out), 0);
	assert_string_equal(out, "/pizza");
	assert_int_equal(ctx("pizza", out), 0); /* the reference adds the slash */
	assert_string_equal(out, "/pizza");
	assert_int_equal(ctx("/pizza/", out), 0);
	assert_string_equal(out, "/pizza");
	assert_int_equal(ctx("/shop/v1.2/pizza-shack_x", out), 0);
	assert_int_equal(ctx("/{version}/pizza", out), 0);
	assert_string_equal(out, "/{version}/pizza");

	const struct {
		const char *c;
		const char *why;
	} bad[] = {
		{"", "empty"},
		{"/", "below /"},
		{"///", "below /"},
		{"/piz za", "contains ' '"},
		{"/pizza?x", "contains '?'"},
		{"/a//b", "//"},
		{"/{id}/x", "{version}"},
		{"/{version}/{version}", "only once"},
		{"/a/../b", ". or .."},
		{"/é", "contains"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (ctx(bad[i].c, out) == 0)
			fail_msg("context %s accepted", bad[i].c);
		if (strstr(err, bad[i].why) == NULL)
			fail_msg("context %s: message '%s' does not say '%s'", bad[i].c, err,
				 bad[i].why);
	}
	char longctx[300];
	memset(longctx, 'a', sizeof(longctx) - 1);
	longctx[0] = '/';
	longctx[sizeof(longctx) - 1] = '\0';
	assert_int_equal(ctx(longctx, out), -1);
	assert_non_null(strstr(err, "200"));
}

static void test_context_template(void **state)
{
	(void)state;
	arena *pool = arena_create(1024);
	char *t = publisher_dto_context_template(pool, "/pizza");
	assert_string_equal(t, "/pizza/{version}");
	assert_string_equal(publisher_dto_full_context(pool, t, "1.0.0"), "/pizza/1.0.0");
	t = publisher_dto_context_template(pool, "/{version}/pizza");
	assert_string_equal(t, "/{version}/pizza");
	assert_string_equal(publisher_dto_full_context(pool, t, "v2"), "/v2/pizza");
	arena_destroy(pool);
}

static void test_urls(void **state)
{
	(void)state;
	const char *ok[] = {"http://backend", "https://backend.example.com:8443/api/v1",
			    "http://127.0.0.1:8080", "http://[::1]:9000/x?y=1",
			    "HTTPS://Example.COM/path", "http://backend/{uri.var.id}"};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (publisher_dto_url(ok[i], err, sizeof(err)) != 0)
			fail_msg("%s refused: %s", ok[i], err);
	const char *bad[] = {"ftp://backend",      "backend:8080",      "http://",
			     "http:///path",       "http://a b/",       "http://host:99999",
			     "http://host:x/",     "http://u:p@host/",  "http://ho$t/",
			     "http://[::1/",       "http://host:0/",    "javascript:alert(1)"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (publisher_dto_url(bad[i], err, sizeof(err)) == 0)
			fail_msg("%s accepted", bad[i]);
}

static void test_auth_types(void **state)
{
	(void)state;
	assert_string_equal(publisher_dto_auth_type("Any"), "Any");
	assert_string_equal(publisher_dto_auth_type("Application & Application User"), "Any");
	assert_string_equal(publisher_dto_auth_type("application"), "Application");
	assert_string_equal(publisher_dto_auth_type("Application_User"), "Application User");
	assert_string_equal(publisher_dto_auth_type("None"), "None");
	assert_null(publisher_dto_auth_type("Everyone"));
	assert_true(publisher_dto_verb("PATCH"));
	assert_false(publisher_dto_verb("TRACE"));
	assert_false(publisher_dto_verb("get"));
}

/* Runs the normaliser on JSON text; returns the error (or "" when valid). */
static const char *normalise(const char *text, json_t **out)
{
	json_error_t je;
	json_t *in = json_loads(text, 0, &je);
	if (in == NULL)
		fail_msg("bad test JSON %s: %s", text, je.text);
	err[0] = '\0';
	json_t *doc = NULL;
	apim_rc rc = publisher_dto_api(in, NULL, &doc, err, sizeof(err));
	json_decref(in);
	if (out != NULL)
		*out = doc;
	else
		json_decref(doc);
	return rc == APIM_OK ? "" : err;
}

static void test_api_object(void **state)
{
	(void)state;
	json_t *doc = NULL;
	assert_string_equal(normalise("{\"name\":\"Pizza\",\"context\":\"pizza\",\"version\":\"1\","
				      "\"operations\":[{\"target\":\"/m\",\"verb\":\"get\","
				      "\"authType\":\"Application & Application User\"}]}",
				      &doc),
			    "");
	assert_string_equal(json_string_value(json_object_get(doc, "context")), "/pizza");
	json_t *op = json_array_get(json_object_get(doc, "operations"), 0);
	assert_string_equal(json_string_value(json_object_get(op, "verb")), "GET");
	assert_string_equal(json_string_value(json_object_get(op, "authType")), "Any");
	assert_string_equal(json_string_value(json_object_get(op, "throttlingPolicy")), "Unlimited");
	assert_string_equal(json_string_value(json_object_get(doc, "type")), "HTTP");
	assert_int_equal(json_array_size(json_object_get(doc, "transport")), 2);
	json_decref(doc);

	/* no operations: the default wildcard resources of the reference */
	assert_string_equal(normalise("{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\"}", &doc),
			    "");
	assert_int_equal(json_array_size(json_object_get(doc, "operations")), 5);
	json_decref(doc);

	const struct {
		const char *json;
		const char *why;
	} bad[] = {
		{"{\"context\":\"/p\",\"version\":\"1\"}", "'name' is required"},
		{"{\"name\":\"P\",\"version\":\"1\"}", "'context' is required"},
		{"{\"name\":\"P\",\"context\":\"/p\"}", "'version' is required"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"colour\":1}",
		 "Unknown field 'colour'"},
		{"{\"name\":5,\"context\":\"/p\",\"version\":\"1\"}", "'name' must be a string"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"tags\":\"x\"}",
		 "'tags' must be an array"},
		{"{\"name\":\"P/Q\",\"context\":\"/p\",\"version\":\"1\"}", "'name'"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1 0\"}", "'version'"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"type\":\"WS\"}",
		 "not supported"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"type\":\"FTP\"}", "unknown"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"transport\":[\"ftp\"]}",
		 "transport"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"visibility\":\"RESTRICTED\"}",
		 "visibleRoles"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"visibility\":\"HIDDEN\"}",
		 "visibility"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"securityScheme\":[\"x\"]}",
		 "securityScheme"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"securityScheme\":"
		 "[\"oauth_basic_auth_api_key_mandatory\"]}",
		 "at least one"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"operations\":[{\"target\":"
		 "\"/a b\",\"verb\":\"GET\"}]}",
		 "operations[0].target"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"operations\":[{\"target\":"
		 "\"/a\",\"verb\":\"FETCH\"}]}",
		 "operations[0].verb"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"operations\":[{\"target\":"
		 "\"/a\",\"verb\":\"GET\",\"authType\":\"Anyone\"}]}",
		 "authType"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"operations\":[{\"target\":"
		 "\"/a\",\"verb\":\"GET\"},{\"target\":\"/a\",\"verb\":\"get\"}]}",
		 "twice"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"operations\":[{\"target\":"
		 "\"/a\",\"verb\":\"GET\",\"scopes\":[\"read\"]}]}",
		 "does not declare"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"operations\":[{\"target\":"
		 "\"/a\",\"verb\":\"GET\",\"colour\":1}]}",
		 "operations[0].colour"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"endpointConfig\":{"
		 "\"endpoint_type\":\"http\"}}",
		 "production_endpoints or sandbox_endpoints"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"endpointConfig\":{"
		 "\"endpoint_type\":\"http\",\"production_endpoints\":{\"url\":\"ftp://x\"}}}",
		 "production_endpoints.url"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"endpointConfig\":{"
		 "\"endpoint_type\":\"awslambda\"}}",
		 "not supported"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"endpointConfig\":{"
		 "\"endpoint_type\":\"load_balance\",\"production_endpoints\":[]}}",
		 "at least one endpoint"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"scopes\":[{\"scope\":{"
		 "\"name\":\"a b\"}}]}",
		 "scopes[0].scope.name"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"maxTps\":{\"production\":-1}}",
		 "maxTps.production"},
		{"{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\",\"corsConfiguration\":{"
		 "\"accessControlAllowMethods\":[\"FLY\"]}}",
		 "not an HTTP method"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *e = normalise(bad[i].json, NULL);
		if (*e == '\0')
			fail_msg("accepted: %s", bad[i].json);
		if (strstr(e, bad[i].why) == NULL)
			fail_msg("%s: message '%s' does not say '%s'", bad[i].json, e, bad[i].why);
	}
}

static void test_api_update_keeps_identity(void **state)
{
	(void)state;
	json_t *base = NULL, *doc = NULL;
	assert_string_equal(normalise("{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\","
				      "\"tags\":[\"a\"],\"description\":\"d\"}",
				      &base),
			    "");
	json_t *in = json_pack("{s:s, s:s, s:[s]}", "name", "Other", "context", "/other", "tags",
			       "b");
	assert_int_equal(publisher_dto_api(in, base, &doc, err, sizeof(err)), APIM_OK);
	assert_string_equal(json_string_value(json_object_get(doc, "name")), "P");
	assert_string_equal(json_string_value(json_object_get(doc, "context")), "/p");
	assert_string_equal(json_string_value(json_array_get(json_object_get(doc, "tags"), 0)), "b");
	assert_string_equal(json_string_value(json_object_get(doc, "description")), "d");
	json_decref(in);
	json_decref(doc);
	json_decref(base);
}

static void test_policy_refs(void **state)
{
	(void)state;
	json_t *doc = NULL;
	assert_string_equal(normalise("{\"name\":\"P\",\"context\":\"/p\",\"version\":\"1\","
				      "\"policies\":[\"Gold\",\"Silver\"],\"apiThrottlingPolicy\":"
				      "\"10KPerMin\",\"operations\":[{\"target\":\"/a\",\"verb\":"
				      "\"GET\"},{\"target\":\"/b\",\"verb\":\"GET\"}]}",
				      &doc),
			    "");
	arena *pool = arena_create(1024);
	store_policy_ref *refs;
	size_t n;
	publisher_dto_policy_refs(pool, doc, &refs, &n);
	assert_int_equal(n, 4);
	assert_string_equal(refs[0].level, "subscription");
	assert_string_equal(refs[0].name, "Gold");
	assert_string_equal(refs[2].level, "advanced");
	assert_string_equal(refs[2].name, "10KPerMin");
	assert_string_equal(refs[3].name, "Unlimited");
	assert_int_equal(refs[3].uses, 2);
	arena_destroy(pool);
	json_decref(doc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_templates_ok),
		cmocka_unit_test(test_templates_bad),
		cmocka_unit_test(test_contexts),
		cmocka_unit_test(test_context_template),
		cmocka_unit_test(test_urls),
		cmocka_unit_test(test_auth_types),
		cmocka_unit_test(test_api_object),
		cmocka_unit_test(test_api_update_keeps_identity),
		cmocka_unit_test(test_policy_refs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
