/* Unit tests of PKCE (RFC 7636), scope narrowing and the small parsers of
 * the token endpoint. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "keymanager/km_authorize.c"
#include "keymanager/km_token.c"

/* RFC 7636 appendix B (the challenge as printed in the RFC and as
 * `openssl dgst -sha256 -binary | base64url` gives it) */
#define B_VERIFIER "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
#define B_CHALLENGE "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

static void test_pkce_rfc7636_vector(void **state)
{
	(void)state;
	assert_int_equal(km_pkce_verify(B_VERIFIER, B_CHALLENGE), 1);
	assert_int_equal(km_pkce_challenge_valid(B_CHALLENGE), 1);
}

static void test_pkce_mismatch(void **state)
{
	(void)state;
	/* one character changed in the verifier, then in the challenge */
	assert_int_equal(km_pkce_verify("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK", B_CHALLENGE),
			 0);
	assert_int_equal(km_pkce_verify(B_VERIFIER, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cm"),
			 0);
	/* plain: the challenge equal to the verifier is refused */
	assert_int_equal(km_pkce_verify(B_VERIFIER, B_VERIFIER), 0);
	assert_int_equal(km_pkce_verify(NULL, B_CHALLENGE), 0);
	assert_int_equal(km_pkce_verify(B_VERIFIER, NULL), 0);
	assert_int_equal(km_pkce_verify(B_VERIFIER, ""), 0);
}

/* The challenge of a verifier, computed here independently of the code
 * under test through OpenSSL's one-shot SHA256 and EVP_EncodeBlock. */
static void challenge_of(const char *v, char out[64])
{
	unsigned char md[32];
	unsigned char b64[64];
	EVP_Digest(v, strlen(v), md, NULL, EVP_sha256(), NULL);
	int n = EVP_EncodeBlock(b64, md, 32);
	int j = 0;
	for (int i = 0; i < n && b64[i] != '='; i++)
		out[j++] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char)b64[i];
	out[j] = '\0';
}

static void test_pkce_lengths(void **state)
{
	(void)state;
	char v[200], ch[64];
	/* 42 characters: too short even with the right challenge */
	memset(v, 'a', 42);
	v[42] = '\0';
	challenge_of(v, ch);
	assert_int_equal(km_pkce_verify(v, ch), 0);
	/* 43 and 128: the bounds are allowed */
	memset(v, 'a', 43);
	v[43] = '\0';
	challenge_of(v, ch);
	assert_int_equal(km_pkce_verify(v, ch), 1);
	memset(v, 'Z', 128);
	v[128] = '\0';
	challenge_of(v, ch);
	assert_int_equal(km_pkce_verify(v, ch), 1);
	/* 129: too long */
	memset(v, 'Z', 129);
	v[129] = '\0';
	challenge_of(v, ch);
	assert_int_equal(km_pkce_verify(v, ch), 0);
}

static void test_pkce_characters(void **state)
{
	(void)state;
	char ch[64];
	const char *ok = "azAZ09-._~azAZ09-._~azAZ09-._~azAZ09-._~abc";
	challenge_of(ok, ch);
	assert_int_equal(km_pkce_verify(ok, ch), 1);
	static const char *const bad[] = {
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa+", /* + */
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/", /* / */
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=", /* = */
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa ", /* space */
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9", /* é */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		challenge_of(bad[i], ch);
		assert_int_equal(km_pkce_verify(bad[i], ch), 0);
	}
}

static void test_challenge_shape(void **state)
{
	(void)state;
	assert_int_equal(km_pkce_challenge_valid("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c"), 0);
	assert_int_equal(km_pkce_challenge_valid("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM="), 0);
	assert_int_equal(km_pkce_challenge_valid("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+c/"), 0);
	assert_int_equal(km_pkce_challenge_valid(NULL), 0);
}

static void test_narrow_user(void **state)
{
	(void)state;
	arena *a = arena_create(1024);
	const char *creator[] = {"apim:api_view", "apim:api_create"};
	/* apim: scopes only when the roles grant them; order kept */
	assert_string_equal(tok_narrow(a, "apim:api_create apim:api_publish apim:api_view", NULL,
				       creator, 2),
			    "apim:api_create apim:api_view");
	/* API scopes (not apim:) pass when the client allows any scope */
	assert_string_equal(tok_narrow(a, "read:pets apim:admin", "", creator, 2), "read:pets");
	/* nothing left: "default", as the reference */
	assert_string_equal(tok_narrow(a, "apim:admin", NULL, creator, 2), "default");
	assert_string_equal(tok_narrow(a, "", NULL, creator, 2), "default");
	assert_string_equal(tok_narrow(a, "default", NULL, creator, 2), "default");
	/* duplicates and extra spaces collapse */
	assert_string_equal(tok_narrow(a, "  apim:api_view  apim:api_view ", NULL, creator, 2),
			    "apim:api_view");
	arena_destroy(a);
}

static void test_narrow_client(void **state)
{
	(void)state;
	arena *a = arena_create(1024);
	const char *admin[] = {"apim:api_view", "apim:api_create", "apim:admin"};
	/* the client's list restricts both kinds of scope */
	assert_string_equal(tok_narrow(a, "apim:api_view apim:admin read:pets write:pets",
				       "apim:api_view write:pets", admin, 3),
			    "apim:api_view write:pets");
	/* a subscriber (no apim:api_create) never gets it, whatever the client allows */
	const char *subscriber[] = {"apim:subscribe", "apim:app_manage"};
	assert_string_equal(tok_narrow(a, "apim:api_create apim:subscribe", NULL, subscriber, 2),
			    "apim:subscribe");
	arena_destroy(a);
}

static void test_scope_syntax(void **state)
{
	(void)state;
	assert_int_equal(tok_scope_syntax_ok("apim:api_view read:pets openid"), 1);
	assert_int_equal(tok_scope_syntax_ok(""), 1);
	assert_int_equal(tok_scope_syntax_ok("a\"b"), 0);
	assert_int_equal(tok_scope_syntax_ok("a\\b"), 0);
	assert_int_equal(tok_scope_syntax_ok("a\tb"), 0);
	assert_int_equal(tok_scope_syntax_ok("caf\xc3\xa9"), 0);
}

static void test_basic_decoding(void **state)
{
	(void)state;
	arena *a = arena_create(1024);
	const char *id = NULL, *secret = NULL;
	/* RFC 6749 2.3.1: both parts are form-urlencoded before base64:
	 * "my%20id:s%3Ac+r" -> "my id", "s:c r" */
	char *b = apim_base64_encode("my%20id:s%3Ac+r", 15);
	char *h = arena_sprintf(a, "Basic %s", b);
	free(b);
	assert_int_equal(tok_basic(a, h, &id, &secret), 0);
	assert_string_equal(id, "my id");
	assert_string_equal(secret, "s:c r");
	/* no colon, empty id, bad base64, an encoded NUL */
	b = apim_base64_encode("nocolon", 7);
	assert_int_equal(tok_basic(a, arena_sprintf(a, "Basic %s", b), &id, &secret), -1);
	free(b);
	b = apim_base64_encode(":secret", 7);
	assert_int_equal(tok_basic(a, arena_sprintf(a, "Basic %s", b), &id, &secret), -1);
	free(b);
	assert_int_equal(tok_basic(a, "Basic !!!!", &id, &secret), -1);
	b = apim_base64_encode("id:a%00b", 8);
	assert_int_equal(tok_basic(a, arena_sprintf(a, "Basic %s", b), &id, &secret), -1);
	free(b);
	arena_destroy(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pkce_rfc7636_vector),
		cmocka_unit_test(test_pkce_mismatch),
		cmocka_unit_test(test_pkce_lengths),
		cmocka_unit_test(test_pkce_characters),
		cmocka_unit_test(test_challenge_shape),
		cmocka_unit_test(test_narrow_user),
		cmocka_unit_test(test_narrow_client),
		cmocka_unit_test(test_scope_syntax),
		cmocka_unit_test(test_basic_decoding),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
