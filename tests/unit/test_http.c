/* Unit tests of the HTTP layer's routing and ETag list matching. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "http/http.c"

static void h_a(http_req *r) { (void)r; }
static void h_b(http_req *r) { (void)r; }
static void h_c(http_req *r) { (void)r; }

static const http_route routes[] = {
	{"GET", "/api/am/publisher/v4/apis/{apiId}", h_a, NULL, 0},
	{"POST", "/api/am/publisher/v4/apis/copy-api", h_b, NULL, 0},
	{"GET", "/api/am/publisher/v4/apis/{apiId}/documents/{documentId}", h_c, NULL, 0},
	{"DELETE", "/api/am/publisher/v4/apis/{apiId}", h_b, NULL, 0},
};

static http_server *mk(void)
{
	http_server *s = calloc(1, sizeof(*s));
	pthread_mutex_init(&s->mu, NULL);
	http_server_routes(s, routes, sizeof(routes) / sizeof(routes[0]));
	return s;
}

static void test_match_params(void **state)
{
	(void)state;
	http_server *s = mk();
	arena *a = arena_create(1024);
	req_impl ri = {0};
	int pm = 0;
	compiled_route *c = find_route(s, &ri, a, "GET",
				       "/api/am/publisher/v4/apis/42/documents/7", &pm);
	assert_non_null(c);
	assert_ptr_equal(c->route->handler, h_c);
	http_req r = {.pool = a, .impl = &ri};
	ri.croute = c;
	assert_string_equal(http_param(&r, "apiId"), "42");
	assert_string_equal(http_param(&r, "documentId"), "7");
	assert_null(http_param(&r, "nope"));
	arena_destroy(a);
	http_server_destroy(s);
}

static void test_literal_beats_param_and_405(void **state)
{
	(void)state;
	http_server *s = mk();
	arena *a = arena_create(1024);
	req_impl ri = {0};
	int pm = 0;
	compiled_route *c = find_route(s, &ri, a, "POST", "/api/am/publisher/v4/apis/copy-api", &pm);
	assert_non_null(c);
	assert_ptr_equal(c->route->handler, h_b);
	/* Same path, method with no route: 405, not 404. */
	c = find_route(s, &ri, a, "PUT", "/api/am/publisher/v4/apis/9", &pm);
	assert_null(c);
	assert_int_equal(pm, 1);
	c = find_route(s, &ri, a, "GET", "/api/am/publisher/v4/nothing/9", &pm);
	assert_null(c);
	assert_int_equal(pm, 0);
	/* Trailing slash is the same resource; "//" is not. */
	assert_non_null(find_route(s, &ri, a, "GET", "/api/am/publisher/v4/apis/9/", &pm));
	assert_null(find_route(s, &ri, a, "GET", "/api/am/publisher/v4//apis/9", &pm));
	arena_destroy(a);
	http_server_destroy(s);
}

static void test_etag_list(void **state)
{
	(void)state;
	assert_true(etag_listed("\"abc\"", "\"abc\""));
	assert_true(etag_listed("\"x\", W/\"abc\"", "\"abc\""));
	assert_true(etag_listed("*", "\"abc\""));
	assert_false(etag_listed("\"abd\"", "\"abc\""));
	assert_false(etag_listed("\"ab\"", "\"abc\""));
}

static void test_form(void **state)
{
	(void)state;
	arena *a = arena_create(1024);
	const char *body = "grant_type=client_credentials&scope=apim%3Aapi_view+x&empty=&flag"
			   "&scope=again&bad=%zz%4";
	http_req r = {.pool = a, .body = body, .body_len = strlen(body)};
	int dup = 0;
	assert_string_equal(http_form(&r, "grant_type", &dup), "client_credentials");
	assert_int_equal(dup, 0);
	assert_string_equal(http_form(&r, "scope", &dup), "apim:api_view x");
	assert_int_equal(dup, 1);
	assert_string_equal(http_form(&r, "empty", NULL), "");
	assert_string_equal(http_form(&r, "flag", NULL), "");
	assert_string_equal(http_form(&r, "bad", NULL), "%zz%4");
	assert_null(http_form(&r, "missing", NULL));
	arena_destroy(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_match_params),
		cmocka_unit_test(test_literal_beats_param_and_405),
		cmocka_unit_test(test_etag_list),
		cmocka_unit_test(test_form),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
