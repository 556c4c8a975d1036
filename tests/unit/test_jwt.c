/*
 * Unit tests of src/keymanager/km_keys.c: signing keys, JWS sign/verify
 * (RS256, ES256), the JWKS, rotation, a second node on the same shareddb,
 * and the master key. The .c is included to reach its statics (the key
 * set, base64url, jws_sign) so that a second "node" (its own key set and
 * database handle on the same files) can run in the same process.
 *
 * Every case gets a fresh server.home in /tmp with a SQLite shareddb.
 * The signing speed case prints tokens per second (whole km_jwt_sign:
 * claims to compact JWS) for RS256 and ES256.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "keymanager/km_keys.c"

#include <openssl/core_names.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <time.h>

#define OK(expr) assert_int_equal((expr), APIM_OK)

/* One Key Manager node: its configuration and its shareddb handle. */
typedef struct node {
	apim_config cfg;
	apim_ctx ctx;
} node;

typedef struct fixture {
	char home[64];
	node a;
	node b;
} fixture;

static void clear_env(void)
{
	static const char *const vars[] = {"APIM_KEYMANAGER_SIGNING_ALG", "APIM_KEYMANAGER_MASTER_KEY",
					   "APIM_KEYMANAGER_ISSUER", "APIM_KEYMANAGER_LEEWAY",
					   "APIM_SERVER_HOME", "APIM_DATABASE_SHAREDDB_URL", NULL};
	for (size_t i = 0; vars[i]; i++)
		unsetenv(vars[i]);
}

static void set_str(char **field, const char *v)
{
	free(*field);
	*field = strdup(v);
	assert_non_null(*field);
}

/* Opens a node on the fixture's home: alg, the master key (NULL: the key
 * file in the home), and shareddb at url (NULL: a SQLite file in the
 * home). */
static void node_open_url(fixture *fx, node *n, const char *alg, const char *master,
			  const char *url_in)
{
	char err[256];
	memset(n, 0, sizeof(*n));
	OK(config_load(&n->cfg, NULL, err, sizeof(err)));
	set_str(&n->cfg.server_home, fx->home);
	set_str(&n->cfg.keymanager_signing_alg, alg);
	set_str(&n->cfg.keymanager_master_key, master ? master : "");
	char url[1024];
	if (url_in != NULL)
		snprintf(url, sizeof(url), "%s", url_in);
	else
		snprintf(url, sizeof(url), "sqlite://%s/shared.db", fx->home);
	set_str(&n->cfg.database_shareddb_url, url);
	n->ctx.cfg = &n->cfg;
	n->ctx.port = APIM_CONTROL_PLANE_PORT;
	n->ctx.profile = "key-manager";
	OK(db_open(&n->ctx.shared, url, "shareddb", 10000));
}

static void node_open(fixture *fx, node *n, const char *alg, const char *master)
{
	node_open_url(fx, n, alg, master, NULL);
}

static void node_close(node *n)
{
	if (n->ctx.shared != NULL)
		db_close(n->ctx.shared);
	n->ctx.shared = NULL;
	config_free(&n->cfg);
}

static int setup(void **state)
{
	clear_env();
	fixture *fx = calloc(1, sizeof(*fx));
	assert_non_null(fx);
	strcpy(fx->home, "/tmp/apim_test_jwt_XXXXXX");
	assert_non_null(mkdtemp(fx->home));
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	fixture *fx = *state;
	km_keys_shutdown();
	node_close(&fx->a);
	node_close(&fx->b);
	static const char *const files[] = {"shared.db", "shared.db-wal", "shared.db-shm",
					    "master-key"};
	char p[128];
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", fx->home, files[i]);
		unlink(p);
	}
	rmdir(fx->home);
	free(fx);
	return 0;
}

static int64_t now_s(void)
{
	return apim_now_ms() / 1000;
}

static json_t *claims_for(const char *sub, int64_t exp)
{
	int64_t t = now_s();
	return json_pack("{s:s, s:s, s:I, s:I, s:I, s:s}", "sub", sub, "iss",
			 "https://localhost:9443/oauth2/token", "exp", (json_int_t)exp, "iat",
			 (json_int_t)t, "nbf", (json_int_t)t, "jti", "abc");
}

static char *sign_sub(apim_ctx *ctx, const char *sub, int64_t exp)
{
	json_t *c = claims_for(sub, exp);
	char *jwt = NULL;
	OK(km_jwt_sign(ctx, c, &jwt));
	json_decref(c);
	assert_non_null(jwt);
	return jwt;
}

/* 1 when jwt verifies on ctx (the global key set); the reason otherwise
 * goes to *why. */
static int verifies(apim_ctx *ctx, const char *jwt, int64_t leeway, const char **why)
{
	json_t *claims = NULL;
	const char *w = NULL;
	apim_rc rc = km_jwt_verify(ctx, jwt, leeway, &claims, &w);
	if (why)
		*why = w;
	if (rc == APIM_OK) {
		assert_non_null(claims);
		json_decref(claims);
		return 1;
	}
	assert_int_equal(rc, APIM_EUNAUTH);
	assert_null(claims);
	assert_non_null(w);
	return 0;
}

static void refused_because(apim_ctx *ctx, const char *jwt, const char *reason)
{
	const char *why = NULL;
	assert_false(verifies(ctx, jwt, 30, &why));
	assert_string_equal(why, reason);
}

/* The decoded JSON of part i (0 header, 1 payload) of a compact JWS. */
static json_t *part(const char *jwt, int i)
{
	const char *s = jwt;
	for (int k = 0; k < i; k++)
		s = strchr(s, '.') + 1;
	const char *e = strchr(s, '.');
	json_t *j = part_json(s, (size_t)(e - s));
	assert_non_null(j);
	return j;
}

static char *b64u(const void *data, size_t n)
{
	char *out = malloc(b64url_len(n) + 1);
	assert_non_null(out);
	b64url_encode(data, n, out);
	return out;
}

/* Compact JWS from header and payload text with the given signature bytes. */
static char *compose(const char *header, const char *payload, const unsigned char *sig,
		     size_t siglen)
{
	char *h = b64u(header, strlen(header)), *p = b64u(payload, strlen(payload));
	char *s = b64u(sig, siglen);
	size_t n = strlen(h) + strlen(p) + strlen(s) + 3;
	char *out = malloc(n);
	snprintf(out, n, "%s.%s.%s", h, p, s);
	free(h);
	free(p);
	free(s);
	return out;
}

/* Signs header.payload with the active key of the global set, as our
 * signer would but with any header. */
static char *forge_with_active(const char *header, const char *payload)
{
	char *h = b64u(header, strlen(header)), *p = b64u(payload, strlen(payload));
	size_t n = strlen(h) + strlen(p) + 2;
	char *input = malloc(n);
	snprintf(input, n, "%s.%s", h, p);
	km_key *k = NULL;
	for (size_t i = 0; i < km_global.nkeys; i++)
		if (km_global.keys[i]->active)
			k = km_global.keys[i];
	assert_non_null(k);
	unsigned char sig[KM_SIG_MAX];
	size_t siglen = sizeof(sig);
	assert_int_equal(jws_sign(key_ctx(k, 0), k->ec, input, strlen(input), sig, &siglen), 0);
	char *s = b64u(sig, siglen);
	size_t tn = strlen(input) + strlen(s) + 2;
	char *out = malloc(tn);
	snprintf(out, tn, "%s.%s", input, s);
	free(h);
	free(p);
	free(s);
	free(input);
	return out;
}

static const char *active_kid(void)
{
	for (size_t i = 0; i < km_global.nkeys; i++)
		if (km_global.keys[i]->active)
			return km_global.keys[i]->kid;
	fail_msg("no active key");
	return NULL;
}

static int64_t q_int(db *d, const char *sql)
{
	db_res *r = NULL;
	OK(db_exec(d, &r, sql, DB_NOARGS));
	assert_int_equal(db_res_rows(r), 1);
	int64_t v = db_res_int(r, 0, 0);
	db_res_free(r);
	return v;
}

/* ---------- round trips ---------- */

static void roundtrip(void **state, const char *alg)
{
	fixture *fx = *state;
	node_open(fx, &fx->a, alg, NULL);
	OK(km_keys_init(&fx->a.ctx));
	char *jwt = sign_sub(&fx->a.ctx, "alice", now_s() + 600);

	json_t *h = part(jwt, 0);
	assert_string_equal(json_string_value(json_object_get(h, "alg")), alg);
	assert_string_equal(json_string_value(json_object_get(h, "typ")), "JWT");
	assert_string_equal(json_string_value(json_object_get(h, "kid")), active_kid());
	assert_int_equal(json_object_size(h), 3);
	json_decref(h);

	json_t *claims = NULL;
	const char *why = NULL;
	OK(km_jwt_verify(&fx->a.ctx, jwt, 30, &claims, &why));
	assert_string_equal(json_string_value(json_object_get(claims, "sub")), "alice");
	assert_string_equal(json_string_value(json_object_get(claims, "jti")), "abc");
	json_decref(claims);

	/* signature length on the wire: 256 bytes (RSA 2048) or R||S 64 bytes */
	const char *sig = strrchr(jwt, '.') + 1;
	assert_int_equal(strlen(sig), strcmp(alg, "RS256") == 0 ? 342 : 86);
	free(jwt);
}

static void test_roundtrip_rs256(void **state)
{
	roundtrip(state, "RS256");
}

static void test_roundtrip_es256(void **state)
{
	roundtrip(state, "ES256");
}

/* ---------- refusals ---------- */

static void test_tampered(void **state)
{
	fixture *fx = *state;
	node_open(fx, &fx->a, "ES256", NULL);
	OK(km_keys_init(&fx->a.ctx));
	apim_ctx *ctx = &fx->a.ctx;
	char *jwt = sign_sub(ctx, "alice", now_s() + 600);
	assert_true(verifies(ctx, jwt, 30, NULL));

	/* payload swapped for another user's, signature kept */
	char *other = sign_sub(ctx, "mallory", now_s() + 600);
	char *d1 = strchr(jwt, '.'), *d2 = strrchr(jwt, '.');
	char *o1 = strchr(other, '.'), *o2 = strrchr(other, '.');
	size_t n = strlen(jwt) + strlen(other);
	char *mixed = malloc(n);
	snprintf(mixed, n, "%.*s%.*s%s", (int)(d1 - jwt), jwt, (int)(o2 - o1), o1, d2);
	refused_because(ctx, mixed, "invalid signature");
	free(mixed);
	free(other);

	/* one signature bit flipped */
	char *flip = strdup(jwt);
	char *sig = strrchr(flip, '.') + 1;
	unsigned char raw[KM_SIG_MAX];
	size_t rl = 0;
	assert_int_equal(b64url_decode(sig, strlen(sig), raw, &rl), 0);
	raw[10] ^= 0x01;
	b64url_encode(raw, rl, sig);
	refused_because(ctx, flip, "invalid signature");
	free(flip);

	/* truncated signature, extra part, padding, whitespace, empty parts */
	char buf[4096];
	snprintf(buf, sizeof(buf), "%.*s", (int)strlen(jwt) - 4, jwt);
	assert_false(verifies(ctx, buf, 30, NULL));
	snprintf(buf, sizeof(buf), "%s.e30", jwt);
	refused_because(ctx, buf, "malformed token");
	snprintf(buf, sizeof(buf), "%s=", jwt);
	refused_because(ctx, buf, "malformed token");
	snprintf(buf, sizeof(buf), " %s", jwt);
	refused_because(ctx, buf, "malformed token");
	snprintf(buf, sizeof(buf), "%.*s.", (int)(d2 - jwt), jwt);
	refused_because(ctx, buf, "malformed token");
	refused_because(ctx, "", "malformed token");
	refused_because(ctx, "..", "malformed token");
	/* standard base64 alphabet instead of base64url */
	char *std = strdup(jwt);
	int changed = 0;
	for (char *p = std; *p; p++) {
		if (*p == '-' || *p == '_') {
			*p = *p == '-' ? '+' : '/';
			changed = 1;
		}
	}
	if (changed)
		refused_because(ctx, std, "malformed token");
	free(std);

	/* too long */
	size_t big = KM_JWT_MAX + 10;
	char *huge = malloc(big + 1);
	memset(huge, 'A', big);
	huge[100] = '.';
	huge[200] = '.';
	huge[big] = '\0';
	refused_because(ctx, huge, "token too long");
	free(huge);
	free(jwt);
}

static void test_alg_none_and_hs256(void **state)
{
	fixture *fx = *state;
	node_open(fx, &fx->a, "RS256", NULL);
	OK(km_keys_init(&fx->a.ctx));
	apim_ctx *ctx = &fx->a.ctx;
	char header[256], payload[256];
	snprintf(payload, sizeof(payload), "{\"sub\":\"admin\",\"exp\":%lld}",
		 (long long)now_s() + 600);

	/* alg none, with and without a signature part */
	snprintf(header, sizeof(header), "{\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"%s\"}",
		 active_kid());
	char *t = compose(header, payload, (const unsigned char *)"x", 1);
	refused_because(ctx, t, "unsupported algorithm");
	*(strrchr(t, '.') + 1) = '\0';
	refused_because(ctx, t, "malformed token");
	free(t);
	snprintf(header, sizeof(header), "{\"alg\":\"None\",\"kid\":\"%s\"}", active_kid());
	t = compose(header, payload, (const unsigned char *)"x", 1);
	refused_because(ctx, t, "unsupported algorithm");
	free(t);

	/* HS256 keyed with our public key (the classic key-confusion attack) */
	km_key *k = find_locked(&km_global, active_kid());
	BIO *bio = BIO_new(BIO_s_mem());
	assert_int_equal(PEM_write_bio_PUBKEY(bio, k->pkey), 1);
	char *pem = NULL;
	long pemlen = BIO_get_mem_data(bio, &pem);
	snprintf(header, sizeof(header), "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"%s\"}",
		 active_kid());
	char *h = b64u(header, strlen(header)), *p = b64u(payload, strlen(payload));
	char input[1024];
	snprintf(input, sizeof(input), "%s.%s", h, p);
	unsigned char mac[32];
	unsigned int maclen = 0;
	assert_non_null(HMAC(EVP_sha256(), pem, (int)pemlen, (const unsigned char *)input,
			     strlen(input), mac, &maclen));
	t = compose(header, payload, mac, maclen);
	refused_because(ctx, t, "unsupported algorithm");
	free(t);
	free(h);
	free(p);
	BIO_free(bio);

	/* a properly signed token whose header claims the other algorithm */
	snprintf(header, sizeof(header), "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"}",
		 active_kid());
	t = forge_with_active(header, payload);
	refused_because(ctx, t, "algorithm does not match the key");
	free(t);

	/* our own signature over a header without kid, with an unknown kid,
	 * with a crit extension, with a foreign typ: refused; with typ absent
	 * or at+jwt: accepted */
	t = forge_with_active("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", payload);
	refused_because(ctx, t, "unknown signing key");
	free(t);
	t = forge_with_active("{\"alg\":\"RS256\",\"kid\":\"bm90LWEta2V5\"}", payload);
	refused_because(ctx, t, "unknown signing key");
	free(t);
	snprintf(header, sizeof(header), "{\"alg\":\"RS256\",\"kid\":\"%s\",\"crit\":[\"exp\"]}",
		 active_kid());
	t = forge_with_active(header, payload);
	refused_because(ctx, t, "malformed token");
	free(t);
	snprintf(header, sizeof(header), "{\"alg\":\"RS256\",\"kid\":\"%s\",\"typ\":\"logout+jwt\"}",
		 active_kid());
	t = forge_with_active(header, payload);
	refused_because(ctx, t, "malformed token");
	free(t);
	snprintf(header, sizeof(header), "{\"alg\":\"RS256\",\"kid\":\"%s\"}", active_kid());
	t = forge_with_active(header, payload);
	assert_true(verifies(ctx, t, 30, NULL));
	free(t);
	snprintf(header, sizeof(header), "{\"alg\":\"RS256\",\"kid\":\"%s\",\"typ\":\"at+jwt\"}",
		 active_kid());
	t = forge_with_active(header, payload);
	assert_true(verifies(ctx, t, 30, NULL));
	free(t);
	/* duplicate header member */
	snprintf(header, sizeof(header), "{\"alg\":\"RS256\",\"alg\":\"none\",\"kid\":\"%s\"}",
		 active_kid());
	t = forge_with_active(header, payload);
	refused_because(ctx, t, "malformed token");
	free(t);
	/* payload not an object */
	snprintf(header, sizeof(header), "{\"alg\":\"RS256\",\"kid\":\"%s\"}", active_kid());
	t = forge_with_active(header, "[1,2]");
	refused_because(ctx, t, "malformed token");
	free(t);
}

static void test_times(void **state)
{
	fixture *fx = *state;
	node_open(fx, &fx->a, "ES256", NULL);
	OK(km_keys_init(&fx->a.ctx));
	apim_ctx *ctx = &fx->a.ctx;
	char header[256];
	snprintf(header, sizeof(header), "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"}",
		 active_kid());
	int64_t t = now_s();
	/* claim kinds: 0 absent, 1 integer, 2 real (+0.5), 3 string */
	struct {
		int exp_kind;
		int64_t exp;
		int nbf_kind;
		int64_t nbf;
		int iat_kind;
		int64_t iat;
		const char *why; /* NULL: accepted */
	} cases[] = {
		{1, t + 600, 0, 0, 0, 0, NULL},
		{1, t - 10, 0, 0, 0, 0, NULL}, /* expired, within the 30 s leeway */
		{1, t - 100, 0, 0, 0, 0, "token expired"},
		{2, t - 100, 0, 0, 0, 0, "token expired"},
		{2, t + 600, 2, t, 2, t, NULL},
		{0, 0, 1, t, 0, 0, "token has no expiry"},
		{3, t + 600, 0, 0, 0, 0, "malformed token"},
		{1, t + 600, 1, t + 10, 0, 0, NULL},
		{1, t + 600, 1, t + 100, 0, 0, "token not yet valid"},
		{1, t + 600, 0, 0, 1, t + 100, "token not yet valid"},
		{1, t + 600, 3, t, 0, 0, "malformed token"},
		{1, t + 600, 0, 0, 3, t, "malformed token"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *pl = json_pack("{s:s}", "sub", "x");
		const char *names[] = {"exp", "nbf", "iat"};
		int kinds[] = {cases[i].exp_kind, cases[i].nbf_kind, cases[i].iat_kind};
		int64_t vals[] = {cases[i].exp, cases[i].nbf, cases[i].iat};
		for (int c = 0; c < 3; c++) {
			char txt[24];
			snprintf(txt, sizeof(txt), "%lld", (long long)vals[c]);
			json_t *v = kinds[c] == 1   ? json_integer(vals[c])
				    : kinds[c] == 2 ? json_real((double)vals[c] + 0.5)
				    : kinds[c] == 3 ? json_string(txt)
						    : NULL;
			if (v != NULL)
				json_object_set_new(pl, names[c], v);
		}
		char *payload = json_dumps(pl, JSON_COMPACT);
		json_decref(pl);
		char *jwt = forge_with_active(header, payload);
		const char *why = NULL;
		int ok = verifies(ctx, jwt, 30, &why);
		if (cases[i].why == NULL) {
			if (!ok)
				fail_msg("case %zu (%s) refused: %s", i, payload, why);
		} else {
			if (ok)
				fail_msg("case %zu (%s) accepted", i, payload);
			assert_string_equal(why, cases[i].why);
		}
		free(payload);
		free(jwt);
	}
	/* leeway 0: a token expired a second ago is refused */
	char *jwt = sign_sub(ctx, "bob", t - 1);
	assert_false(verifies(ctx, jwt, 0, NULL));
	assert_true(verifies(ctx, jwt, 30, NULL));
	free(jwt);
}

/* ---------- JWK ---------- */

static unsigned char *jwk_bytes(json_t *jwk, const char *name, size_t *n)
{
	const char *s = json_string_value(json_object_get(jwk, name));
	assert_non_null(s);
	assert_null(strchr(s, '='));
	unsigned char *out = malloc(strlen(s) + 1);
	assert_int_equal(b64url_decode(s, strlen(s), out, n), 0);
	return out;
}

/* A public EVP_PKEY rebuilt from the JWK alone. */
static EVP_PKEY *pkey_from_jwk(json_t *jwk)
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	EVP_PKEY_CTX *pc = NULL;
	EVP_PKEY *pk = NULL;
	BIGNUM *n = NULL, *e = NULL;
	unsigned char *a = NULL, *b = NULL;
	unsigned char point[65];
	size_t al = 0, bl = 0;
	const char *kty = json_string_value(json_object_get(jwk, "kty"));
	if (strcmp(kty, "RSA") == 0) {
		a = jwk_bytes(jwk, "n", &al);
		b = jwk_bytes(jwk, "e", &bl);
		n = BN_bin2bn(a, (int)al, NULL);
		e = BN_bin2bn(b, (int)bl, NULL);
		OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n);
		OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e);
		pc = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	} else {
		a = jwk_bytes(jwk, "x", &al);
		b = jwk_bytes(jwk, "y", &bl);
		assert_int_equal(al, 32);
		assert_int_equal(bl, 32);
		point[0] = 0x04;
		memcpy(point + 1, a, 32);
		memcpy(point + 33, b, 32);
		OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "P-256", 0);
		OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point));
		pc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	}
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	assert_int_equal(EVP_PKEY_fromdata_init(pc), 1);
	assert_int_equal(EVP_PKEY_fromdata(pc, &pk, EVP_PKEY_PUBLIC_KEY, params), 1);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	EVP_PKEY_CTX_free(pc);
	BN_free(n);
	BN_free(e);
	free(a);
	free(b);
	return pk;
}

/* Verifies jwt with a key rebuilt from its JWK, with OpenSSL directly (not
 * through km_jwt_verify). */
static void check_with_jwk(const char *jwt, json_t *jwk)
{
	EVP_PKEY *pk = pkey_from_jwk(jwk);
	const char *d2 = strrchr(jwt, '.');
	unsigned char sig[KM_SIG_MAX];
	size_t sl = 0;
	assert_int_equal(b64url_decode(d2 + 1, strlen(d2 + 1), sig, &sl), 0);
	unsigned char der[128];
	const unsigned char *check = sig;
	size_t cl = sl;
	if (EVP_PKEY_is_a(pk, "EC")) {
		assert_int_equal(sl, 64);
		ECDSA_SIG *es = ECDSA_SIG_new();
		ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
		unsigned char *p = der;
		cl = (size_t)i2d_ECDSA_SIG(es, &p);
		ECDSA_SIG_free(es);
		check = der;
	}
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	assert_int_equal(EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, pk), 1);
	assert_int_equal(EVP_DigestVerify(m, check, cl, (const unsigned char *)jwt,
					  (size_t)(d2 - jwt)), 1);
	EVP_MD_CTX_free(m);

	/* the kid is the SPKI hash */
	unsigned char *spki = NULL;
	int dl = i2d_PUBKEY(pk, &spki);
	unsigned char md[32];
	SHA256(spki, (size_t)dl, md);
	OPENSSL_free(spki);
	char kid[64];
	b64url_encode(md, 16, kid);
	assert_string_equal(json_string_value(json_object_get(jwk, "kid")), kid);
	EVP_PKEY_free(pk);
}

static void test_jwk_fields(void **state)
{
	fixture *fx = *state;
	node_open(fx, &fx->a, "RS256", NULL);
	OK(km_keys_init(&fx->a.ctx));
	apim_ctx *ctx = &fx->a.ctx;
	char *rs = sign_sub(ctx, "alice", now_s() + 600);
	char kid_es[64];
	OK(km_keys_rotate(ctx, "ES256", 3600, kid_es));
	char *es = sign_sub(ctx, "alice", now_s() + 600);

	json_t *jwks = km_keys_jwks(ctx);
	json_t *keys = json_object_get(jwks, "keys");
	assert_int_equal(json_array_size(keys), 2);
	size_t i;
	json_t *k;
	int seen_rsa = 0, seen_ec = 0;
	json_array_foreach(keys, i, k) {
		const char *kty = json_string_value(json_object_get(k, "kty"));
		assert_string_equal(json_string_value(json_object_get(k, "use")), "sig");
		assert_null(json_object_get(k, "d")); /* never a private part */
		assert_null(json_object_get(k, "p"));
		if (strcmp(kty, "RSA") == 0) {
			seen_rsa = 1;
			assert_int_equal(json_object_size(k), 6); /* kty n e kid alg use */
			assert_string_equal(json_string_value(json_object_get(k, "alg")), "RS256");
			assert_string_equal(json_string_value(json_object_get(k, "e")), "AQAB");
			size_t nl = 0;
			unsigned char *n = jwk_bytes(k, "n", &nl);
			assert_int_equal(nl, 256); /* 2048 bits, no leading zero byte */
			assert_true(n[0] & 0x80);
			free(n);
			check_with_jwk(rs, k);
		} else {
			seen_ec = 1;
			assert_string_equal(kty, "EC");
			assert_int_equal(json_object_size(k), 7); /* kty crv x y kid alg use */
			assert_string_equal(json_string_value(json_object_get(k, "crv")), "P-256");
			assert_string_equal(json_string_value(json_object_get(k, "alg")), "ES256");
			assert_string_equal(json_string_value(json_object_get(k, "kid")), kid_es);
			check_with_jwk(es, k);
		}
		assert_int_equal(strlen(json_string_value(json_object_get(k, "kid"))), 22);
	}
	assert_true(seen_rsa && seen_ec);
	/* the active key comes first */
	assert_string_equal(json_string_value(json_object_get(json_array_get(keys, 0), "kid")),
			    kid_es);
	json_decref(jwks);
	free(rs);
	free(es);
}

/* ---------- rotation ---------- */

static void test_rotation(void **state)
{
	fixture *fx = *state;
	node_open(fx, &fx->a, "RS256", NULL);
	OK(km_keys_init(&fx->a.ctx));
	apim_ctx *ctx = &fx->a.ctx;
	db *d = ctx->shared;
	char old_kid[64];
	snprintf(old_kid, sizeof(old_kid), "%s", active_kid());
	char *t1 = sign_sub(ctx, "alice", now_s() + 600);
	/* a token that lives longer than the validity the rotation is told */
	json_t *c = claims_for("long", now_s() + 7200);
	char *tlong = NULL;
	OK(km_jwt_sign(ctx, c, &tlong));
	json_decref(c);

	char kid[64];
	assert_int_equal(km_keys_rotate(ctx, "HS256", 3600, kid), APIM_EINVAL);
	int64_t before = apim_now_ms();
	OK(km_keys_rotate(ctx, "ES256", 3600, kid));
	assert_string_not_equal(kid, old_kid);
	assert_string_equal(active_kid(), kid);
	assert_int_equal(q_int(d, "SELECT COUNT(*) FROM km_signing_key WHERE active = 1"), 1);
	assert_int_equal(q_int(d, "SELECT COUNT(*) FROM km_signing_key"), 2);
	/* retires after the longest token it signed (7200 s), not 3600 s */
	int64_t retire = q_int(d, "SELECT retire_after_ms FROM km_signing_key WHERE active = 0");
	assert_true(retire >= before + 7200 * 1000);
	assert_true(retire <= apim_now_ms() + 7200 * 1000 + KM_MARK_AHEAD_MS + 60 * 1000);

	/* the old key still verifies and is still published */
	assert_true(verifies(ctx, t1, 30, NULL));
	assert_true(verifies(ctx, tlong, 30, NULL));
	json_t *jwks = km_keys_jwks(ctx);
	assert_int_equal(json_array_size(json_object_get(jwks, "keys")), 2);
	json_decref(jwks);
	char *t2 = sign_sub(ctx, "alice", now_s() + 600);
	json_t *h = part(t2, 0);
	assert_string_equal(json_string_value(json_object_get(h, "kid")), kid);
	assert_string_equal(json_string_value(json_object_get(h, "alg")), "ES256");
	json_decref(h);

	/* past its retirement the old key is gone: JWKS, verification, row */
	OK(db_exec(d, NULL, "UPDATE km_signing_key SET retire_after_ms = 1000 WHERE active = 0",
		   DB_NOARGS));
	OK(keyset_reload(&km_global, d, 0));
	jwks = km_keys_jwks(ctx);
	assert_int_equal(json_array_size(json_object_get(jwks, "keys")), 1);
	json_decref(jwks);
	refused_because(ctx, t1, "unknown signing key");
	assert_int_equal(q_int(d, "SELECT COUNT(*) FROM km_signing_key"), 1);
	assert_true(verifies(ctx, t2, 30, NULL));
	free(t1);
	free(t2);
	free(tlong);
}

/* A key made in the configured algorithm survives restarts; a changed
 * keymanager.signing_alg rotates at start; an algorithm chosen through a
 * rotation survives a restart with the same configuration. */
static void test_restart_and_alg_change(void **state)
{
	fixture *fx = *state;
	node_open(fx, &fx->a, "RS256", NULL);
	OK(km_keys_init(&fx->a.ctx));
	char first[64];
	snprintf(first, sizeof(first), "%s", active_kid());
	char *t1 = sign_sub(&fx->a.ctx, "alice", now_s() + 600);
	km_keys_shutdown();
	OK(km_keys_init(&fx->a.ctx));
	assert_string_equal(active_kid(), first);
	assert_true(verifies(&fx->a.ctx, t1, 30, NULL));
	km_keys_shutdown();
	node_close(&fx->a);

	/* master key file: 0600, 32 bytes base64 */
	char p[128];
	snprintf(p, sizeof(p), "%s/master-key", fx->home);
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	char *text = NULL;
	OK(apim_read_file(p, 4096, &text, NULL));
	unsigned char m[KM_MASTER_LEN];
	OK(master_decode(text, m));
	free(text);

	node_open(fx, &fx->a, "ES256", NULL);
	OK(km_keys_init(&fx->a.ctx));
	char second[64];
	snprintf(second, sizeof(second), "%s", active_kid());
	assert_string_not_equal(second, first);
	assert_true(verifies(&fx->a.ctx, t1, 30, NULL)); /* old key kept until retired */
	assert_int_equal(km_global.nkeys, 2);
	char third[64];
	OK(km_keys_rotate(&fx->a.ctx, "RS256", 600, third));
	km_keys_shutdown();
	OK(km_keys_init(&fx->a.ctx)); /* still ES256 configured: the RS256 choice stays */
	assert_string_equal(active_kid(), third);
	assert_int_equal(km_global.nkeys, 3);
	free(t1);
}

static void test_wrong_master_key(void **state)
{
	fixture *fx = *state;
	const char *k1 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
	const char *k2 = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
	node_open(fx, &fx->a, "ES256", k1);
	OK(km_keys_init(&fx->a.ctx));
	km_keys_shutdown();
	node_close(&fx->a);
	/* no key file was written: the configured key is used */
	char p[128];
	snprintf(p, sizeof(p), "%s/master-key", fx->home);
	assert_int_not_equal(access(p, F_OK), 0);

	node_open(fx, &fx->a, "ES256", k2);
	assert_int_equal(km_keys_init(&fx->a.ctx), APIM_ECONFIG);
	/* nothing usable after a failed start */
	char *jwt = NULL;
	json_t *c = claims_for("x", now_s() + 60);
	assert_int_not_equal(km_jwt_sign(&fx->a.ctx, c, &jwt), APIM_OK);
	json_decref(c);
	assert_null(jwt);
	json_t *jwks = km_keys_jwks(&fx->a.ctx);
	assert_int_equal(json_array_size(json_object_get(jwks, "keys")), 0);
	json_decref(jwks);
	node_close(&fx->a);

	/* a new node with a home of its own generates a master key that does not
	 * fit: it refuses to start and removes the useless key file */
	char home2[64];
	strcpy(home2, "/tmp/apim_test_jwt2_XXXXXX");
	assert_non_null(mkdtemp(home2));
	node_open(fx, &fx->b, "ES256", NULL);
	set_str(&fx->b.cfg.server_home, home2);
	char p2[128];
	snprintf(p2, sizeof(p2), "%s/master-key", home2);
	assert_int_equal(km_keys_init(&fx->b.ctx), APIM_ECONFIG);
	assert_int_not_equal(access(p2, F_OK), 0);
	node_close(&fx->b);
	assert_int_equal(rmdir(home2), 0);

	/* the right key still works; rows were not touched */
	node_open(fx, &fx->a, "ES256", k1);
	OK(km_keys_init(&fx->a.ctx));
	assert_int_equal(q_int(fx->a.ctx.shared, "SELECT COUNT(*) FROM km_signing_key"), 1);

	/* a row moved to another kid does not decrypt (kid is the AAD) */
	unsigned char m[KM_MASTER_LEN];
	OK(master_decode(k1, m));
	const char *plain = "secret";
	char *sealed = seal(m, "kid-a", (const unsigned char *)plain, strlen(plain));
	unsigned char *out = NULL;
	size_t ol = 0;
	assert_int_equal(unseal(m, "kid-b", sealed, &out, &ol), -2);
	assert_int_equal(unseal(m, "kid-a", sealed, &out, &ol), 0);
	assert_memory_equal(out, plain, ol);
	free(out);
	free(sealed);
}

/* ---------- two nodes ---------- */

static void test_second_node(void **state)
{
	fixture *fx = *state;
	node_open(fx, &fx->a, "RS256", NULL);
	node_open(fx, &fx->b, "RS256", NULL);
	OK(km_keys_init(&fx->a.ctx));
	km_keyset nb;
	OK(keyset_init(&nb, &fx->b.ctx)); /* same master key file, same rows */
	assert_int_equal(nb.nkeys, 1);
	assert_string_equal(nb.keys[0]->kid, active_kid());

	/* node A rotates; B still signs with the old key for a few seconds */
	char kid[64];
	OK(km_keys_rotate(&fx->a.ctx, "ES256", 3600, kid));
	json_t *c = claims_for("bob", now_s() + 600);
	char *tb = NULL;
	OK(keyset_sign(&nb, &fx->b.ctx, c, &tb));
	json_t *h = part(tb, 0);
	assert_string_not_equal(json_string_value(json_object_get(h, "kid")), kid);
	json_decref(h);
	assert_true(verifies(&fx->a.ctx, tb, 30, NULL)); /* A knows the old key */
	free(tb);

	/* B meets A's new kid: reloads and accepts */
	char *ta = sign_sub(&fx->a.ctx, "alice", now_s() + 600);
	json_t *claims = NULL;
	const char *why = NULL;
	OK(keyset_verify(&nb, &fx->b.ctx, ta, 30, &claims, &why));
	json_decref(claims);
	free(ta);

	/* once the reload interval has passed, B signs with the new key */
	atomic_store(&nb.loaded_ms, apim_mono_ms() - KM_RELOAD_MS - 1);
	OK(keyset_sign(&nb, &fx->b.ctx, c, &tb));
	h = part(tb, 0);
	assert_string_equal(json_string_value(json_object_get(h, "kid")), kid);
	json_decref(h);
	assert_true(verifies(&fx->a.ctx, tb, 30, NULL));
	free(tb);

	/* an unknown kid makes a reload, but at most one a second */
	char *forged = forge_with_active("{\"alg\":\"ES256\",\"kid\":\"unknownkid\"}",
					 "{\"exp\":9999999999}");
	atomic_store(&nb.unknown_ms, 0);
	atomic_store(&nb.loaded_ms, apim_mono_ms()); /* no periodic reload due */
	uint64_t loads = atomic_load(&nb.reloads);
	assert_int_equal(keyset_verify(&nb, &fx->b.ctx, forged, 30, &claims, &why), APIM_EUNAUTH);
	assert_string_equal(why, "unknown signing key");
	assert_int_equal(atomic_load(&nb.reloads), loads + 1);
	assert_int_equal(keyset_verify(&nb, &fx->b.ctx, forged, 30, &claims, &why), APIM_EUNAUTH);
	assert_int_equal(atomic_load(&nb.reloads), loads + 1); /* not again within the second */

	/* a verifier that never signs still sees rotations (JWKS, retire times) */
	char kid2[64];
	OK(km_keys_rotate(&fx->a.ctx, "RS256", 3600, kid2));
	atomic_store(&nb.loaded_ms, apim_mono_ms() - KM_RELOAD_MS - 1);
	json_t *jwks = keyset_jwks(&nb, fx->b.ctx.shared);
	assert_string_equal(json_string_value(json_object_get(
				    json_array_get(json_object_get(jwks, "keys"), 0), "kid")),
			    kid2);
	assert_int_equal(json_array_size(json_object_get(jwks, "keys")), 3);
	json_decref(jwks);
	free(forged);
	json_decref(c);
	keyset_teardown(&nb);
}

/* Two nodes starting at once on an empty shareddb end with one active key
 * that both use. */
typedef struct start_arg {
	km_keyset ks;
	apim_ctx *ctx;
	apim_rc rc;
} start_arg;

static void *start_node(void *p)
{
	start_arg *a = p;
	a->rc = keyset_init(&a->ks, a->ctx);
	return NULL;
}

/* Both nodes start at once on the fixture's nodes (opened by the caller);
 * checks that they agree on one key. */
static void start_two(fixture *fx)
{
	start_arg *a = calloc(2, sizeof(*a));
	a[0].ctx = &fx->a.ctx;
	a[1].ctx = &fx->b.ctx;
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, start_node, &a[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	OK(a[0].rc);
	OK(a[1].rc);
	assert_int_equal(q_int(fx->a.ctx.shared, "SELECT COUNT(*) FROM km_signing_key"), 1);
	assert_int_equal(a[0].ks.nkeys, 1);
	assert_int_equal(a[1].ks.nkeys, 1);
	assert_string_equal(a[0].ks.keys[0]->kid, a[1].ks.keys[0]->kid);
	/* the index refuses a second active row */
	assert_int_equal(db_exec(fx->a.ctx.shared, NULL,
				 "INSERT INTO km_signing_key (kid, alg, public_jwk, private_enc, "
				 "active, config_alg, created_ms) VALUES ('x', 'ES256', '{}', '', 1, "
				 "'ES256', 0)",
				 DB_NOARGS),
			 APIM_ECONFLICT);
	keyset_teardown(&a[0].ks);
	keyset_teardown(&a[1].ks);
	free(a);
}

static void test_concurrent_start(void **state)
{
	fixture *fx = *state;
	node_open(fx, &fx->a, "ES256", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
	node_open(fx, &fx->b, "ES256", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
	start_two(fx);
}

/* The same on PostgreSQL, where nothing serialises the two transactions
 * (only the unique index decides), several rounds in a fresh schema.
 * Runs when APIM_TEST_PG_URL names a database the test may create schemas
 * in; skipped otherwise. */
static void test_concurrent_start_pg(void **state)
{
	fixture *fx = *state;
	const char *base = getenv("APIM_TEST_PG_URL");
	if (base == NULL || *base == '\0') {
		print_message("APIM_TEST_PG_URL not set: PostgreSQL case skipped\n");
		skip();
	}
	char schema[64], url[1024], sql[256];
	snprintf(schema, sizeof(schema), "apimtest_jwt_%d", (int)getpid());
	snprintf(url, sizeof(url), "%s%soptions=-csearch_path%%3D%s", base,
		 strchr(base, '?') ? "&" : "?", schema);
	db *admin = NULL;
	OK(db_open(&admin, base, "admin", 10000));
	snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s", schema,
		 schema);
	OK(db_exec(admin, NULL, sql, DB_NOARGS));
	for (int round = 0; round < 6; round++) {
		const char *alg = round % 2 ? "RS256" : "ES256";
		node_open_url(fx, &fx->a, alg, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", url);
		node_open_url(fx, &fx->b, alg, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", url);
		if (round > 0)
			OK(db_exec(fx->a.ctx.shared, NULL, "DELETE FROM km_signing_key", DB_NOARGS));
		start_two(fx);
		node_close(&fx->a);
		node_close(&fx->b);
	}
	snprintf(sql, sizeof(sql), "DROP SCHEMA %s CASCADE", schema);
	OK(db_exec(admin, NULL, sql, DB_NOARGS));
	db_close(admin);
}

/* Signers and verifiers on several threads while keys rotate and reload
 * underneath: every token verifies (under ASan this also checks the
 * locking of the key set). */
typedef struct worker_arg {
	apim_ctx *ctx;
	int n;
	int failures;
} worker_arg;

static void *worker(void *p)
{
	worker_arg *w = p;
	for (int i = 0; i < w->n; i++) {
		json_t *c = claims_for("worker", now_s() + 600);
		char *jwt = NULL;
		json_t *claims = NULL;
		if (km_jwt_sign(w->ctx, c, &jwt) != APIM_OK ||
		    km_jwt_verify(w->ctx, jwt, 30, &claims, NULL) != APIM_OK)
			w->failures++;
		json_decref(claims);
		json_decref(c);
		free(jwt);
		json_decref(km_keys_jwks(w->ctx));
	}
	return NULL;
}

static void test_threads(void **state)
{
	fixture *fx = *state;
	node_open(fx, &fx->a, "ES256", NULL);
	OK(km_keys_init(&fx->a.ctx));
	enum { NT = 4 };
	worker_arg args[NT];
	pthread_t t[NT];
	for (int i = 0; i < NT; i++) {
		args[i] = (worker_arg){.ctx = &fx->a.ctx, .n = 150};
		assert_int_equal(pthread_create(&t[i], NULL, worker, &args[i]), 0);
	}
	for (int r = 0; r < 4; r++) {
		OK(km_keys_rotate(&fx->a.ctx, r % 2 ? "ES256" : "RS256", 600, NULL));
		atomic_store(&km_global.loaded_ms, 0); /* everyone's next call reloads */
		usleep(20000);
	}
	for (int i = 0; i < NT; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(args[i].failures, 0);
	}
	json_t *jwks = km_keys_jwks(&fx->a.ctx);
	assert_int_equal(json_array_size(json_object_get(jwks, "keys")), 5);
	json_decref(jwks);
}

/* ---------- base64url and metadata ---------- */

static void test_b64url(void **state)
{
	(void)state;
	static const struct {
		const char *plain, *enc;
	} v[] = {{"", ""}, {"f", "Zg"}, {"fo", "Zm8"}, {"foo", "Zm9v"}, {"foob", "Zm9vYg"},
		 {"\xfb\xff", "-_8"}};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char out[32];
		unsigned char back[32];
		size_t bl = 0;
		assert_int_equal(b64url_encode((const unsigned char *)v[i].plain, strlen(v[i].plain), out),
				 strlen(v[i].enc));
		assert_string_equal(out, v[i].enc);
		assert_int_equal(b64url_len(strlen(v[i].plain)), strlen(v[i].enc));
		assert_int_equal(b64url_decode(v[i].enc, strlen(v[i].enc), back, &bl), 0);
		assert_int_equal(bl, strlen(v[i].plain));
		assert_memory_equal(back, v[i].plain, bl);
	}
	unsigned char b[16];
	size_t bl;
	assert_int_equal(b64url_decode("Zh", 2, b, &bl), -1);   /* non-zero trailing bits */
	assert_int_equal(b64url_decode("Zg==", 4, b, &bl), -1); /* padding */
	assert_int_equal(b64url_decode("Z", 1, b, &bl), -1);
	assert_int_equal(b64url_decode("+/8", 3, b, &bl), -1);
}

static void test_issuer(void **state)
{
	fixture *fx = *state;
	node_open(fx, &fx->a, "ES256", NULL);
	km_keyset ks;
	memset(&ks, 0, sizeof(ks));
	issuer_compute(&ks, &fx->a.cfg, 9443);
	char want[256];
	snprintf(want, sizeof(want), "http://%s:9443/oauth2/token", fx->a.cfg.server_hostname);
	assert_string_equal(ks.issuer, want);
	set_str(&fx->a.cfg.http_tls_cert, "/x/cert.pem");
	issuer_compute(&ks, &fx->a.cfg, 9444);
	snprintf(want, sizeof(want), "https://%s:9444/oauth2/token", fx->a.cfg.server_hostname);
	assert_string_equal(ks.issuer, want);
	set_str(&fx->a.cfg.keymanager_issuer, "https://km.example.com/oauth2/token");
	issuer_compute(&ks, &fx->a.cfg, 9444);
	assert_string_equal(ks.issuer, "https://km.example.com/oauth2/token");
	assert_string_equal(ks.base_url, "https://km.example.com");
}

/* ---------- speed ---------- */

static double sign_rate(apim_ctx *ctx, int n)
{
	json_t *c = claims_for("speed", now_s() + 3600);
	json_object_set_new(c, "scope", json_string("apim:api_view apim:api_create"));
	json_object_set_new(c, "client_id", json_string("Xb3kq9ZzL1f2VbN7u8aPqRsTuVwX"));
	json_object_set_new(c, "aut", json_string("APPLICATION"));
	struct timespec t0, t1;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
	for (int i = 0; i < n; i++) {
		char *jwt = NULL;
		OK(km_jwt_sign(ctx, c, &jwt));
		free(jwt);
	}
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
	json_decref(c);
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	return n / s;
}

static double verify_rate(apim_ctx *ctx, int n)
{
	char *jwt = sign_sub(ctx, "speed", now_s() + 3600);
	struct timespec t0, t1;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
	for (int i = 0; i < n; i++)
		assert_true(verifies(ctx, jwt, 30, NULL));
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
	free(jwt);
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	return n / s;
}

static void test_sign_speed(void **state)
{
	fixture *fx = *state;
	const char *env = getenv("APIM_SIGN_BENCH");
	int scale = env && *env ? atoi(env) : 1;
	if (scale < 1)
		scale = 1;
	node_open(fx, &fx->a, "RS256", NULL);
	OK(km_keys_init(&fx->a.ctx));
	double rs = sign_rate(&fx->a.ctx, 200 * scale);
	double rsv = verify_rate(&fx->a.ctx, 500 * scale);
	OK(km_keys_rotate(&fx->a.ctx, "ES256", 3600, NULL));
	double es = sign_rate(&fx->a.ctx, 1000 * scale);
	double esv = verify_rate(&fx->a.ctx, 500 * scale);
	print_message("km_jwt_sign per CPU-second of one thread: RS256 %.0f/s, ES256 %.0f/s; km_jwt_verify: "
		      "RS256 %.0f/s, ES256 %.0f/s\n",
		      rs, es, rsv, esv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_b64url),
		cmocka_unit_test_setup_teardown(test_roundtrip_rs256, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_es256, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tampered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alg_none_and_hs256, setup, teardown),
		cmocka_unit_test_setup_teardown(test_times, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jwk_fields, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_and_alg_change, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_master_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_second_node, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_start, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_start_pg, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_issuer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sign_speed, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
