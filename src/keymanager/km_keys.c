/*
 * km_keys.c: the Key Manager's signing keys and JWS (RFC 7515 compact
 * serialisation, RS256 and ES256 of RFC 7518), the JWKS, the discovery
 * metadata, and the Admin signing-key routes.
 *
 * Storage (shareddb km_signing_key): the public JWK in clear, the private
 * key as PKCS#8 DER encrypted with AES-256-GCM under the master key
 * (base64 of nonce || ciphertext || tag, the kid as associated data so a
 * ciphertext cannot be moved to another row). At most one row is active;
 * a unique partial index makes a second concurrent activation fail, so two
 * nodes starting or rotating at once end with one active key.
 *
 * Retirement: each key row carries signed_until_ms, a promise that no token
 * it signed expires later. A node raises it (an hour ahead at a time, so
 * rarely) before handing out a token whose exp passes it, so a rotated key
 * stays in the JWKS until the last token it signed has expired, whatever
 * the per-application validities are, and even for tokens a node signed
 * with a stale cache just after a rotation elsewhere.
 *
 * Cache: one key set per daemon (km_global, the Key Manager's only global:
 * the key material the server context's databases hold, decrypted).
 * The key objects are behind a rwlock; signers and verifiers copy what
 * they need (a signing/verification context copied from the key's
 * prepared one, the encoded header) under the read lock and do the
 * cryptography outside it. Reloads are serialised by reload_mu and swap
 * the array under the write lock; keys already known are kept (never
 * decrypted twice). A node reloads at most every KM_RELOAD_MS when it
 * signs, verifies or serves the JWKS, and at once (at most once a second)
 * when a token names a kid it does not know.
 */
#include "keymanager/km_keys.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "store/db.h"

#define KM_COMP "keymanager"
#define KM_MASTER_LEN 32
#define KM_GCM_NONCE 12
#define KM_GCM_TAG 16
#define KM_KID_BYTES 16          /* kid = base64url of the first 16 bytes of SHA-256(SPKI) */
#define KM_KID_MAX 32
#define KM_HEADER_MAX 128        /* base64url of the JOSE header */
#define KM_RELOAD_MS 5000        /* signers pick up another node's rotation within this */
#define KM_UNKNOWN_KID_MS 1000   /* at most one reload a second for unknown kids */
#define KM_JWT_MAX 16384         /* longest token km_jwt_verify looks at */
#define KM_MARK_AHEAD_MS 3600000 /* signed_until_ms is raised an hour ahead */
#define KM_SIG_MAX 512           /* RSA 2048: 256, ES256: 64 */
#define KM_ES256_LEN 64
#define KM_SCOPE_ADMIN "apim:admin"
#define KM_ADMIN_BASE "/api/am/admin/v4/signing-keys"

typedef struct km_key {
	char kid[KM_KID_MAX];
	char alg[8]; /* "RS256" or "ES256" */
	int ec;      /* ES256 */
	EVP_PKEY *pkey;
	/* Contexts initialised once with pkey and SHA-256, copied for each
	 * signature/verification (a fresh EVP_DigestSignInit costs about a
	 * quarter of an ES256 signature); copies are taken under copy_mu. */
	EVP_MD_CTX *sign_tmpl;
	EVP_MD_CTX *verify_tmpl;
	pthread_mutex_t copy_mu;
	json_t *jwk; /* public JWK, made from pkey */
	char header[KM_HEADER_MAX];
	size_t header_len;
	int active;
	int64_t created_ms;
	int64_t retire_after_ms; /* 0: not retiring (the active key) */
	int64_t signed_until_ms; /* 0: nothing signed yet */
} km_key;

typedef struct km_keyset {
	pthread_rwlock_t lock;     /* keys, nkeys and the fields of the keys */
	pthread_mutex_t reload_mu; /* one reload at a time */
	pthread_mutex_t mark_mu;   /* one signed_until_ms update at a time */
	km_key **keys;
	size_t nkeys;
	_Atomic int64_t loaded_ms;  /* apim_mono_ms() of the last successful load */
	_Atomic int64_t unknown_ms; /* last reload caused by an unknown kid */
	_Atomic uint64_t reloads;   /* successful loads so far */
	unsigned char master[KM_MASTER_LEN];
	int ready;
	char issuer[1024];
	char base_url[512]; /* where the endpoints are, for the metadata */
} km_keyset;

static km_keyset km_global;

/* ---------- base64url (RFC 4648 §5, no padding) ---------- */

static const char b64url_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Encodes n bytes into out (room for b64url_len(n) + 1); returns the length. */
static size_t b64url_encode(const unsigned char *in, size_t n, char *out)
{
	size_t j = 0, i = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[j++] = b64url_alphabet[v >> 18];
		out[j++] = b64url_alphabet[(v >> 12) & 63];
		out[j++] = b64url_alphabet[(v >> 6) & 63];
		out[j++] = b64url_alphabet[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[j++] = b64url_alphabet[v >> 18];
		out[j++] = b64url_alphabet[(v >> 12) & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[j++] = b64url_alphabet[v >> 18];
		out[j++] = b64url_alphabet[(v >> 12) & 63];
		out[j++] = b64url_alphabet[(v >> 6) & 63];
	}
	out[j] = '\0';
	return j;
}

static size_t b64url_len(size_t n)
{
	return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
}

static int b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/*
 * Strict decoder: the URL-safe alphabet only, no padding, no whitespace,
 * and the unused low bits of the last character zero, so that every byte
 * string has exactly one encoding (no malleable signatures). out holds at
 * least n * 3 / 4 + 1 bytes. Returns 0, or -1 on bad input.
 */
static int b64url_decode(const char *in, size_t n, unsigned char *out, size_t *outlen)
{
	if (n % 4 == 1)
		return -1;
	size_t j = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		int v = b64url_value((unsigned char)in[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[j++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	if (acc != 0) /* non-canonical trailing bits */
		return -1;
	*outlen = j;
	return 0;
}

/* ---------- small helpers ---------- */

static int alg_valid(const char *alg)
{
	return alg != NULL && (strcmp(alg, "RS256") == 0 || strcmp(alg, "ES256") == 0);
}

static void i64_text(int64_t v, char out[24])
{
	snprintf(out, 24, "%" PRId64, v);
}

static int64_t cell_i64(const db_res *res, size_t row, size_t col)
{
	return db_res_int(res, row, col);
}

static km_key *key_new(void)
{
	km_key *k = calloc(1, sizeof(*k));
	if (k != NULL)
		pthread_mutex_init(&k->copy_mu, NULL);
	return k;
}

static void key_free(km_key *k)
{
	if (k == NULL)
		return;
	EVP_MD_CTX_free(k->sign_tmpl);
	EVP_MD_CTX_free(k->verify_tmpl);
	EVP_PKEY_free(k->pkey);
	json_decref(k->jwk);
	pthread_mutex_destroy(&k->copy_mu);
	free(k);
}

/* A new context for one signature (verify = 0) or verification with k,
 * or NULL. Called under the key set's lock (k stays alive); the copy holds
 * its own references and outlives it. */
static EVP_MD_CTX *key_ctx(km_key *k, int verify)
{
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	if (m == NULL)
		return NULL;
	pthread_mutex_lock(&k->copy_mu);
	int ok = EVP_MD_CTX_copy_ex(m, verify ? k->verify_tmpl : k->sign_tmpl);
	pthread_mutex_unlock(&k->copy_mu);
	if (ok != 1) {
		EVP_MD_CTX_free(m);
		return NULL;
	}
	/* one final per context: spares OpenSSL a defensive copy */
	EVP_MD_CTX_set_flags(m, EVP_MD_CTX_FLAG_FINALISE);
	return m;
}

static void keyset_clear(km_keyset *ks)
{
	for (size_t i = 0; i < ks->nkeys; i++)
		key_free(ks->keys[i]);
	free(ks->keys);
	ks->keys = NULL;
	ks->nkeys = 0;
}

static void keyset_setup(km_keyset *ks)
{
	memset(ks, 0, sizeof(*ks));
	pthread_rwlock_init(&ks->lock, NULL);
	pthread_mutex_init(&ks->reload_mu, NULL);
	pthread_mutex_init(&ks->mark_mu, NULL);
}

static void keyset_teardown(km_keyset *ks)
{
	if (!ks->ready)
		return;
	keyset_clear(ks);
	OPENSSL_cleanse(ks->master, sizeof(ks->master));
	pthread_rwlock_destroy(&ks->lock);
	pthread_mutex_destroy(&ks->reload_mu);
	pthread_mutex_destroy(&ks->mark_mu);
	ks->ready = 0;
}

/* ---------- master key ---------- */

static apim_rc master_decode(const char *text, unsigned char out[KM_MASTER_LEN])
{
	size_t n = strlen(text);
	while (n > 0 && isspace((unsigned char)text[n - 1]))
		n--;
	while (n > 0 && isspace((unsigned char)*text)) {
		text++;
		n--;
	}
	size_t len = 0;
	unsigned char *b = apim_base64_decode(text, n, &len);
	apim_rc rc = (b != NULL && len == KM_MASTER_LEN) ? APIM_OK : APIM_ECONFIG;
	if (rc == APIM_OK)
		memcpy(out, b, KM_MASTER_LEN);
	if (b != NULL) {
		OPENSSL_cleanse(b, len);
		free(b);
	}
	return rc;
}

/*
 * The master key: keymanager.master_key, else <server.home>/master-key,
 * created (32 random bytes, base64, mode 0600) when absent. Creation goes
 * through a private file hard-linked into place, so two processes sharing
 * a home cannot end up with different keys: whoever links first wins and
 * everyone reads the file afterwards. *generated is set when this call
 * created the file.
 */
static apim_rc master_load(km_keyset *ks, const apim_config *cfg, int *generated)
{
	*generated = 0;
	if (cfg->keymanager_master_key != NULL && *cfg->keymanager_master_key != '\0') {
		if (master_decode(cfg->keymanager_master_key, ks->master) != APIM_OK) {
			log_error(KM_COMP, "keymanager.master_key must be 32 bytes in base64");
			return APIM_ECONFIG;
		}
		return APIM_OK;
	}
	char path[4096], tmp[4200];
	if (snprintf(path, sizeof(path), "%s/master-key", cfg->server_home) >= (int)sizeof(path))
		return APIM_ECONFIG;
	char *text = NULL;
	apim_rc rc = apim_read_file(path, 4096, &text, NULL);
	if (rc == APIM_ENOTFOUND) {
		unsigned char raw[KM_MASTER_LEN];
		apim_random(raw, sizeof(raw));
		char *b64 = apim_base64_encode(raw, sizeof(raw));
		OPENSSL_cleanse(raw, sizeof(raw));
		if (b64 == NULL)
			return APIM_ENOMEM;
		size_t blen = strlen(b64);
		b64[blen] = '\n'; /* the terminator's room, written without it */
		snprintf(tmp, sizeof(tmp), "%s.new.%ld", path, (long)getpid());
		rc = apim_write_file(tmp, b64, blen + 1, 0600);
		OPENSSL_cleanse(b64, blen + 1);
		free(b64);
		if (rc == APIM_OK) {
			if (link(tmp, path) == 0) {
				*generated = 1;
				log_info(KM_COMP, "generated the master key into %s (mode 0600); every "
						  "Key Manager node needs the same one",
					 path);
			} else if (errno != EEXIST) {
				rc = APIM_EIO;
			}
			unlink(tmp);
		}
		if (rc != APIM_OK) {
			log_error(KM_COMP, "cannot write the master key to %s", path);
			return rc;
		}
		rc = apim_read_file(path, 4096, &text, NULL);
	}
	if (rc != APIM_OK) {
		log_error(KM_COMP, "cannot read the master key from %s: %s", path, apim_strerror(rc));
		return rc;
	}
	rc = master_decode(text, ks->master);
	OPENSSL_cleanse(text, strlen(text));
	free(text);
	if (rc != APIM_OK) {
		log_error(KM_COMP, "%s must hold 32 bytes in base64 (openssl rand -base64 32)", path);
		return rc;
	}
	struct stat st;
	if (stat(path, &st) == 0 && (st.st_mode & 077) != 0)
		log_warn(KM_COMP, "%s is readable by others (mode %03o); it should be 0600", path,
			 (unsigned)(st.st_mode & 0777));
	return APIM_OK;
}

/* ---------- private key encryption (AES-256-GCM) ---------- */

/* base64(nonce || ciphertext || tag) of plain, AAD = kid; malloc'ed. */
static char *seal(const unsigned char master[KM_MASTER_LEN], const char *kid,
		  const unsigned char *plain, size_t n)
{
	size_t total = KM_GCM_NONCE + n + KM_GCM_TAG;
	unsigned char *buf = malloc(total);
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	char *out = NULL;
	int len = 0, fin = 0;
	if (buf == NULL || c == NULL)
		goto out;
	apim_random(buf, KM_GCM_NONCE);
	if (EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, master, buf) != 1 ||
	    EVP_EncryptUpdate(c, NULL, &len, (const unsigned char *)kid, (int)strlen(kid)) != 1 ||
	    EVP_EncryptUpdate(c, buf + KM_GCM_NONCE, &len, plain, (int)n) != 1 ||
	    EVP_EncryptFinal_ex(c, buf + KM_GCM_NONCE + len, &fin) != 1 ||
	    (size_t)(len + fin) != n ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, KM_GCM_TAG, buf + KM_GCM_NONCE + n) != 1)
		goto out;
	out = apim_base64_encode(buf, total);
out:
	if (buf != NULL) {
		OPENSSL_cleanse(buf, total);
		free(buf);
	}
	EVP_CIPHER_CTX_free(c);
	return out;
}

/* Inverse of seal. 0 and *plain (malloc'ed, caller cleanses) on success,
 * -1 when the text is malformed, -2 when authentication fails (another
 * master key, or a row tampered with). */
static int unseal(const unsigned char master[KM_MASTER_LEN], const char *kid, const char *text,
		  unsigned char **plain, size_t *plen)
{
	size_t n = 0;
	unsigned char *buf = text ? apim_base64_decode(text, strlen(text), &n) : NULL;
	if (buf == NULL || n <= KM_GCM_NONCE + KM_GCM_TAG) {
		free(buf);
		return -1;
	}
	size_t clen = n - KM_GCM_NONCE - KM_GCM_TAG;
	unsigned char *out = malloc(clen + 1);
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int len = 0, fin = 0, ret = -1;
	if (out == NULL || c == NULL)
		goto out;
	if (EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, master, buf) != 1 ||
	    EVP_DecryptUpdate(c, NULL, &len, (const unsigned char *)kid, (int)strlen(kid)) != 1 ||
	    EVP_DecryptUpdate(c, out, &len, buf + KM_GCM_NONCE, (int)clen) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, KM_GCM_TAG,
				buf + KM_GCM_NONCE + clen) != 1)
		goto out;
	if (EVP_DecryptFinal_ex(c, out + len, &fin) != 1) {
		ret = -2;
		goto out;
	}
	*plain = out;
	*plen = (size_t)(len + fin);
	out = NULL;
	ret = 0;
out:
	if (out != NULL) {
		OPENSSL_cleanse(out, clen);
		free(out);
	}
	OPENSSL_cleanse(buf, n);
	free(buf);
	EVP_CIPHER_CTX_free(c);
	return ret;
}

/* ---------- keys ---------- */

/* base64url of the big-endian bytes of bn, exactly width bytes when width
 * > 0 (EC coordinates), minimal otherwise (no leading zero byte). */
static json_t *bn_b64url(const BIGNUM *bn, int width)
{
	unsigned char buf[1024];
	char enc[1400];
	int n = width > 0 ? BN_bn2binpad(bn, buf, width) : BN_bn2bin(bn, buf);
	if (n <= 0 || BN_num_bytes(bn) > (int)sizeof(buf))
		return NULL;
	b64url_encode(buf, (size_t)n, enc);
	return json_string(enc);
}

/*
 * Fills k's kid, public JWK, encoded JOSE header and signing contexts from
 * k->pkey and k->ec. The kid is derived from the public key (base64url of the first
 * 16 bytes of SHA-256 over its SubjectPublicKeyInfo DER): stable, and
 * checkable against a stored row.
 */
static apim_rc key_prepare(km_key *k)
{
	unsigned char *der = NULL;
	int dlen = i2d_PUBKEY(k->pkey, &der);
	if (dlen <= 0)
		return APIM_EINTERNAL;
	unsigned char md[SHA256_DIGEST_LENGTH];
	SHA256(der, (size_t)dlen, md);
	OPENSSL_free(der);
	b64url_encode(md, KM_KID_BYTES, k->kid);
	snprintf(k->alg, sizeof(k->alg), "%s", k->ec ? "ES256" : "RS256");

	json_t *jwk = json_object();
	apim_rc rc = APIM_EINTERNAL;
	if (k->ec) {
		BIGNUM *x = NULL, *y = NULL;
		if (EVP_PKEY_get_bn_param(k->pkey, "qx", &x) == 1 &&
		    EVP_PKEY_get_bn_param(k->pkey, "qy", &y) == 1) {
			json_object_set_new(jwk, "kty", json_string("EC"));
			json_object_set_new(jwk, "crv", json_string("P-256"));
			json_object_set_new(jwk, "x", bn_b64url(x, 32));
			json_object_set_new(jwk, "y", bn_b64url(y, 32));
			rc = APIM_OK;
		}
		BN_free(x);
		BN_free(y);
	} else {
		BIGNUM *n = NULL, *e = NULL;
		if (EVP_PKEY_get_bn_param(k->pkey, "n", &n) == 1 &&
		    EVP_PKEY_get_bn_param(k->pkey, "e", &e) == 1) {
			json_object_set_new(jwk, "kty", json_string("RSA"));
			json_object_set_new(jwk, "n", bn_b64url(n, 0));
			json_object_set_new(jwk, "e", bn_b64url(e, 0));
			rc = APIM_OK;
		}
		BN_free(n);
		BN_free(e);
	}
	if (rc != APIM_OK) {
		json_decref(jwk);
		return rc;
	}
	json_object_set_new(jwk, "kid", json_string(k->kid));
	json_object_set_new(jwk, "alg", json_string(k->alg));
	json_object_set_new(jwk, "use", json_string("sig"));
	json_decref(k->jwk);
	k->jwk = jwk;

	char hdr[96];
	int hl = snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", k->alg,
			  k->kid);
	k->header_len = b64url_encode((const unsigned char *)hdr, (size_t)hl, k->header);

	k->sign_tmpl = EVP_MD_CTX_new();
	k->verify_tmpl = EVP_MD_CTX_new();
	if (k->sign_tmpl == NULL || k->verify_tmpl == NULL ||
	    EVP_DigestSignInit(k->sign_tmpl, NULL, EVP_sha256(), NULL, k->pkey) != 1 ||
	    EVP_DigestVerifyInit(k->verify_tmpl, NULL, EVP_sha256(), NULL, k->pkey) != 1)
		return APIM_EINTERNAL;
	return APIM_OK;
}

static km_key *key_generate(const char *alg)
{
	km_key *k = key_new();
	if (k == NULL)
		return NULL;
	k->ec = strcmp(alg, "ES256") == 0;
	k->pkey = k->ec ? EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")
			: EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	if (k->pkey == NULL || key_prepare(k) != APIM_OK) {
		key_free(k);
		return NULL;
	}
	k->created_ms = apim_now_ms();
	return k;
}

/* The private key as PKCS#8 DER, sealed under the master key. */
static char *key_seal(const km_keyset *ks, const km_key *k)
{
	PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(k->pkey);
	if (p8 == NULL)
		return NULL;
	unsigned char *der = NULL;
	int n = i2d_PKCS8_PRIV_KEY_INFO(p8, &der);
	PKCS8_PRIV_KEY_INFO_free(p8);
	if (n <= 0)
		return NULL;
	char *out = seal(ks->master, k->kid, der, (size_t)n);
	OPENSSL_clear_free(der, (size_t)n);
	return out;
}

/*
 * A key from its row: decrypts and parses the private key and checks that
 * it is what the row says (kid derived from it, algorithm). -2 means the
 * master key is not the one that encrypted it.
 */
static int key_unseal(const km_keyset *ks, const char *kid, const char *alg, const char *enc,
		      km_key **out)
{
	unsigned char *der = NULL;
	size_t n = 0;
	int u = unseal(ks->master, kid, enc, &der, &n);
	if (u != 0)
		return u;
	const unsigned char *p = der;
	EVP_PKEY *pk = d2i_AutoPrivateKey(NULL, &p, (long)n);
	OPENSSL_clear_free(der, n);
	km_key *k = key_new();
	if (pk == NULL || k == NULL) {
		EVP_PKEY_free(pk);
		key_free(k);
		return -1;
	}
	k->pkey = pk;
	k->ec = EVP_PKEY_is_a(pk, "EC");
	if ((!k->ec && !EVP_PKEY_is_a(pk, "RSA")) || key_prepare(k) != APIM_OK ||
	    strcmp(k->kid, kid) != 0 || strcmp(k->alg, alg) != 0) {
		key_free(k);
		return -1;
	}
	*out = k;
	return 0;
}

/* ---------- loading ---------- */

static km_key *find_locked(km_keyset *ks, const char *kid)
{
	for (size_t i = 0; i < ks->nkeys; i++)
		if (strcmp(ks->keys[i]->kid, kid) == 0)
			return ks->keys[i];
	return NULL;
}

#define KEY_COLS "kid, alg, private_enc, active, created_ms, retire_after_ms, signed_until_ms"

/*
 * Reads the key set from shareddb and installs it. Keys this node already
 * holds are reused. strict (start-up): a key that does not decrypt is an
 * error; otherwise it is logged and left out. Keys past their retirement
 * are deleted. The caller holds reload_mu.
 */
static apim_rc keyset_reload_locked(km_keyset *ks, db *d, int strict)
{
	db_res *res = NULL;
	apim_rc rc = db_exec(d, &res, "SELECT " KEY_COLS " FROM km_signing_key ORDER BY created_ms",
			     DB_NOARGS);
	if (rc != APIM_OK)
		return rc;
	int64_t now = apim_now_ms();
	size_t rows = db_res_rows(res), n = 0, expired = 0;
	km_key **next = calloc(rows + 1, sizeof(*next));
	km_key **fresh = calloc(rows + 1, sizeof(*fresh)); /* next[i] made here, else NULL */
	if (next == NULL || fresh == NULL) {
		rc = APIM_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < rows; i++) {
		const char *kid = db_res_get(res, i, 0), *alg = db_res_get(res, i, 1);
		int64_t retire = cell_i64(res, i, 5);
		if (kid == NULL || !alg_valid(alg))
			continue;
		if (retire > 0 && retire < now) {
			expired++;
			continue;
		}
		pthread_rwlock_rdlock(&ks->lock);
		km_key *k = find_locked(ks, kid);
		pthread_rwlock_unlock(&ks->lock);
		if (k == NULL) {
			int u = key_unseal(ks, kid, alg, db_res_get(res, i, 2), &k);
			if (u != 0) {
				if (u == -2)
					log_error(KM_COMP,
						  "cannot decrypt signing key %s: the master key differs "
						  "from the one that encrypted it (keymanager.master_key "
						  "or <server.home>/master-key must be the same on every "
						  "Key Manager node)",
						  kid);
				else
					log_error(KM_COMP, "signing key %s in shareddb is damaged", kid);
				if (strict) {
					rc = APIM_ECONFIG;
					goto out;
				}
				continue;
			}
			fresh[n] = k;
		}
		next[n++] = k;
	}
	/* install: row fields onto the keys, then swap */
	pthread_rwlock_wrlock(&ks->lock);
	size_t j = 0;
	for (size_t i = 0; i < rows && j < n; i++) {
		const char *kid = db_res_get(res, i, 0);
		if (kid == NULL || strcmp(kid, next[j]->kid) != 0)
			continue;
		next[j]->active = cell_i64(res, i, 3) == 1;
		next[j]->created_ms = cell_i64(res, i, 4);
		next[j]->retire_after_ms = cell_i64(res, i, 5);
		if (cell_i64(res, i, 6) > next[j]->signed_until_ms)
			next[j]->signed_until_ms = cell_i64(res, i, 6);
		j++;
	}
	for (size_t i = 0; i < ks->nkeys; i++) {
		int kept = 0;
		for (size_t m = 0; m < n && !kept; m++)
			kept = next[m] == ks->keys[i];
		if (!kept)
			key_free(ks->keys[i]);
	}
	free(ks->keys);
	ks->keys = next;
	ks->nkeys = n;
	next = NULL;
	pthread_rwlock_unlock(&ks->lock);
	atomic_store(&ks->loaded_ms, apim_mono_ms());
	atomic_fetch_add(&ks->reloads, 1);
	if (expired > 0) {
		char t[24];
		i64_text(now, t);
		/* best effort: the rows are ignored anyway */
		(void)db_exec(d, NULL,
			      "DELETE FROM km_signing_key WHERE active = 0 AND retire_after_ms IS NOT "
			      "NULL AND retire_after_ms < ?",
			      DB_ARGS(t));
	}
out:
	if (next != NULL) {
		for (size_t i = 0; i < n; i++)
			key_free(fresh[i]);
		free(next);
	}
	free(fresh);
	db_res_free(res);
	return rc;
}

static apim_rc keyset_reload(km_keyset *ks, db *d, int strict)
{
	pthread_mutex_lock(&ks->reload_mu);
	apim_rc rc = keyset_reload_locked(ks, d, strict);
	pthread_mutex_unlock(&ks->reload_mu);
	return rc;
}

/* ---------- activation and rotation ---------- */

/*
 * In one transaction: the active key (if any) stops signing and retires
 * once every token it may have signed has expired (max_validity_s from
 * now, or its signed_until_ms, plus the reload interval and the leeway);
 * k is stored as the new active key; retired keys past their time are
 * deleted. With check set, nothing changes and APIM_ECONFLICT is returned
 * when the active key is not expect_kid (NULL: none) any more, i.e.
 * another node got there first. A concurrent activation elsewhere also
 * ends in APIM_ECONFLICT (the unique index on active = 1).
 */
static apim_rc store_activate(km_keyset *ks, const apim_ctx *ctx, const km_key *k,
			      int64_t max_validity_s, int check, const char *expect_kid)
{
	db *d = ctx->shared;
	db_res *res = NULL;
	char *enc = key_seal(ks, k);
	char *jwk = json_dumps(k->jwk, JSON_COMPACT | JSON_SORT_KEYS);
	int64_t now = apim_now_ms();
	int64_t leeway_ms = ctx->cfg->keymanager_leeway * 1000;
	char tnow[24], tcreated[24], tretire[24], when[40];
	apim_rc rc = APIM_ENOMEM;
	if (enc == NULL || jwk == NULL)
		goto out;
	rc = db_begin(d);
	if (rc != APIM_OK)
		goto out;
	rc = db_exec(d, &res, "SELECT kid, signed_until_ms FROM km_signing_key WHERE active = 1",
		     DB_NOARGS);
	if (rc != APIM_OK)
		goto rollback;
	const char *cur = db_res_rows(res) > 0 ? db_res_get(res, 0, 0) : NULL;
	if (check && !((cur == NULL && expect_kid == NULL) ||
		       (cur != NULL && expect_kid != NULL && strcmp(cur, expect_kid) == 0))) {
		rc = APIM_ECONFLICT;
		goto rollback;
	}
	if (cur != NULL) {
		int64_t retire = now + max_validity_s * 1000 + KM_RELOAD_MS;
		int64_t until = db_res_int(res, 0, 1);
		if (until > retire)
			retire = until;
		i64_text(retire + leeway_ms, tretire);
		apim_iso8601(retire + leeway_ms, when, sizeof(when));
		rc = db_exec(d, NULL,
			     "UPDATE km_signing_key SET active = 0, retire_after_ms = ? WHERE kid = ?",
			     DB_ARGS(tretire, cur));
		if (rc != APIM_OK)
			goto rollback;
	}
	i64_text(k->created_ms, tcreated);
	rc = db_exec(d, NULL,
		     "INSERT INTO km_signing_key (kid, alg, public_jwk, private_enc, active, "
		     "config_alg, created_ms, retire_after_ms, signed_until_ms) "
		     "VALUES (?, ?, ?, ?, 1, ?, ?, NULL, NULL)",
		     DB_ARGS(k->kid, k->alg, jwk, enc, ctx->cfg->keymanager_signing_alg, tcreated));
	if (rc != APIM_OK)
		goto rollback;
	i64_text(now, tnow);
	rc = db_exec(d, NULL,
		     "DELETE FROM km_signing_key WHERE active = 0 AND retire_after_ms IS NOT NULL "
		     "AND retire_after_ms < ?",
		     DB_ARGS(tnow));
	if (rc != APIM_OK)
		goto rollback;
	rc = db_commit(d);
	if (rc == APIM_OK) {
		if (cur != NULL)
			log_info(KM_COMP, "signing key %s (%s) is now active; %s stays published "
					  "until %s",
				 k->kid, k->alg, cur, when);
		else
			log_info(KM_COMP, "signing key %s (%s) is now active", k->kid, k->alg);
		goto out;
	}
rollback:
	db_rollback(d);
out:
	db_res_free(res);
	if (enc != NULL) {
		OPENSSL_cleanse(enc, strlen(enc));
		free(enc);
	}
	free(jwk);
	return rc;
}

/*
 * Makes sure an active key of the configured algorithm exists. When the
 * active key has another algorithm, it is replaced only when the
 * configuration changed since it was made (its config_alg differs): a key
 * of another algorithm chosen through the Admin API survives restarts.
 * Two nodes at once: the loser of the race sees the winner's key and
 * keeps it.
 */
static apim_rc keyset_ensure_active(km_keyset *ks, const apim_ctx *ctx)
{
	const char *want = ctx->cfg->keymanager_signing_alg;
	apim_rc rc = APIM_ECONFLICT;
	for (int attempt = 0; attempt < 5 && rc == APIM_ECONFLICT; attempt++) {
		db_res *res = NULL;
		rc = db_exec(ctx->shared, &res,
			     "SELECT kid, alg, config_alg FROM km_signing_key WHERE active = 1",
			     DB_NOARGS);
		if (rc != APIM_OK)
			return rc;
		char cur[KM_KID_MAX] = "";
		int have = db_res_rows(res) > 0;
		if (have) {
			const char *alg = db_res_get(res, 0, 1), *calg = db_res_get(res, 0, 2);
			snprintf(cur, sizeof(cur), "%s", db_res_get(res, 0, 0));
			int keep = (alg && strcmp(alg, want) == 0) || (calg && strcmp(calg, want) == 0);
			if (keep && alg && strcmp(alg, want) != 0)
				log_info(KM_COMP, "signing with %s key %s, chosen through the Admin "
						  "API (keymanager.signing_alg is %s)",
					 alg, cur, want);
			if (keep) {
				db_res_free(res);
				return APIM_OK;
			}
			log_info(KM_COMP, "keymanager.signing_alg changed to %s: rotating from the %s "
					  "key %s",
				 want, alg ? alg : "?", cur);
		}
		db_res_free(res);
		km_key *k = key_generate(want);
		if (k == NULL)
			return APIM_EINTERNAL;
		rc = store_activate(ks, ctx, k, ctx->cfg->keymanager_access_token_validity, 1,
				    have ? cur : NULL);
		key_free(k);
	}
	return rc;
}

/* ---------- JWS ---------- */

/* Signs msg with m (from key_ctx, consumed): PKCS#1 v1.5 over SHA-256
 * (RS256) or ECDSA P-256 with the signature as R || S, 32 bytes each
 * (ES256). */
static int jws_sign(EVP_MD_CTX *m, int ec, const char *msg, size_t n, unsigned char *sig,
		    size_t *siglen)
{
	unsigned char der[160];
	size_t dlen = ec ? sizeof(der) : *siglen;
	int ok = m != NULL && EVP_DigestSignUpdate(m, msg, n) == 1 &&
		 EVP_DigestSignFinal(m, ec ? der : sig, &dlen) == 1;
	EVP_MD_CTX_free(m);
	if (!ok)
		return -1;
	if (!ec) {
		*siglen = dlen;
		return 0;
	}
	const unsigned char *p = der;
	ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)dlen);
	if (es == NULL)
		return -1;
	const BIGNUM *r = NULL, *s = NULL;
	ECDSA_SIG_get0(es, &r, &s);
	ok = BN_bn2binpad(r, sig, 32) == 32 && BN_bn2binpad(s, sig + 32, 32) == 32;
	ECDSA_SIG_free(es);
	*siglen = KM_ES256_LEN;
	return ok ? 0 : -1;
}

/* Checks sig over msg with m (from key_ctx, consumed); rsa_len is the
 * modulus size in bytes (RS256 signatures have exactly that length). */
static int jws_verify(EVP_MD_CTX *m, int ec, size_t rsa_len, const char *msg, size_t n,
		      const unsigned char *sig, size_t siglen)
{
	unsigned char der[160];
	const unsigned char *check = sig;
	size_t clen = siglen;
	int ok = 0;
	if (m == NULL)
		return -1;
	if (ec) {
		if (siglen != KM_ES256_LEN)
			goto out;
		ECDSA_SIG *es = ECDSA_SIG_new();
		BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
		if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
			BN_free(r);
			BN_free(s);
			ECDSA_SIG_free(es);
			goto out;
		}
		unsigned char *p = der;
		int dl = i2d_ECDSA_SIG(es, NULL);
		if (dl <= 0 || dl > (int)sizeof(der) || i2d_ECDSA_SIG(es, &p) != dl) {
			ECDSA_SIG_free(es);
			goto out;
		}
		ECDSA_SIG_free(es);
		check = der;
		clen = (size_t)dl;
	} else if (siglen != rsa_len) {
		goto out;
	}
	ok = EVP_DigestVerifyUpdate(m, msg, n) == 1 && EVP_DigestVerifyFinal(m, check, clen) == 1;
out:
	EVP_MD_CTX_free(m);
	return ok ? 0 : -1;
}

/*
 * Raises the key's signed_until_ms (in shareddb, then here) so that it
 * covers exp_ms; an hour ahead, so that this happens about once an hour.
 * A retired key's retire time follows (a node with a stale cache may sign
 * with it just after a rotation elsewhere).
 */
static apim_rc mark_signed(km_keyset *ks, const apim_ctx *ctx, const char *kid, int64_t exp_ms)
{
	apim_rc rc = APIM_OK;
	pthread_mutex_lock(&ks->mark_mu);
	pthread_rwlock_rdlock(&ks->lock);
	km_key *k = find_locked(ks, kid);
	int64_t known = k ? k->signed_until_ms : 0;
	pthread_rwlock_unlock(&ks->lock);
	if (exp_ms > known) {
		int64_t mark = exp_ms + KM_MARK_AHEAD_MS;
		char tmark[24], tretire[24];
		i64_text(mark, tmark);
		i64_text(mark + ctx->cfg->keymanager_leeway * 1000, tretire);
		rc = db_exec(ctx->shared, NULL,
			     "UPDATE km_signing_key SET signed_until_ms = ?, retire_after_ms = CASE "
			     "WHEN retire_after_ms IS NOT NULL AND retire_after_ms < ? THEN ? ELSE "
			     "retire_after_ms END WHERE kid = ? AND (signed_until_ms IS NULL OR "
			     "signed_until_ms < ?)",
			     DB_ARGS(tmark, tretire, tretire, kid, tmark));
		if (rc == APIM_OK) {
			pthread_rwlock_wrlock(&ks->lock);
			k = find_locked(ks, kid);
			if (k != NULL && k->signed_until_ms < mark)
				k->signed_until_ms = mark;
			pthread_rwlock_unlock(&ks->lock);
		}
	}
	pthread_mutex_unlock(&ks->mark_mu);
	return rc;
}

/*
 * Reloads the key set when the last load is older than KM_RELOAD_MS, so
 * that a rotation made on another node reaches this one within that time.
 * Never waits: when another thread is reloading, the caller goes on with
 * the keys at hand. A failed reload is retried a second later.
 */
static void keyset_refresh(km_keyset *ks, db *d)
{
	if (apim_mono_ms() - atomic_load(&ks->loaded_ms) <= KM_RELOAD_MS ||
	    pthread_mutex_trylock(&ks->reload_mu) != 0)
		return;
	if (apim_mono_ms() - atomic_load(&ks->loaded_ms) > KM_RELOAD_MS) {
		apim_rc rc = keyset_reload_locked(ks, d, 0);
		if (rc != APIM_OK) {
			atomic_store(&ks->loaded_ms, apim_mono_ms() - KM_RELOAD_MS + KM_UNKNOWN_KID_MS);
			log_warn(KM_COMP, "cannot reload the signing keys (going on with the cached "
					  "ones): %s",
				 apim_strerror(rc));
		}
	}
	pthread_mutex_unlock(&ks->reload_mu);
}

/* Latest expiry accepted in claims given to km_jwt_sign (year 2286). */
#define KM_EXP_MAX 9999999999.0

static apim_rc keyset_sign(km_keyset *ks, const apim_ctx *ctx, json_t *claims, char **out)
{
	if (!ks->ready || claims == NULL || !json_is_object(claims))
		return ks->ready ? APIM_EINVAL : APIM_EINTERNAL;
	json_t *exp = json_object_get(claims, "exp");
	if (exp != NULL && (!json_is_number(exp) || json_number_value(exp) < 0 ||
			    json_number_value(exp) > KM_EXP_MAX))
		return APIM_EINVAL;
	keyset_refresh(ks, ctx->shared);

	char kid[KM_KID_MAX], header[KM_HEADER_MAX];
	size_t hlen = 0;
	int ec = 0, found = 0;
	int64_t until = 0;
	EVP_MD_CTX *m = NULL;
	pthread_rwlock_rdlock(&ks->lock);
	for (size_t i = 0; i < ks->nkeys; i++) {
		km_key *k = ks->keys[i];
		if (!k->active)
			continue;
		found = 1;
		memcpy(kid, k->kid, sizeof(kid));
		memcpy(header, k->header, k->header_len);
		hlen = k->header_len;
		ec = k->ec;
		until = k->signed_until_ms;
		m = key_ctx(k, 0);
		break;
	}
	pthread_rwlock_unlock(&ks->lock);
	if (!found) {
		log_error(KM_COMP, "no active signing key");
		return APIM_EUNAVAIL;
	}
	if (m == NULL)
		return APIM_ENOMEM;

	apim_rc rc = APIM_OK;
	char *payload = NULL, *jwt = NULL;
	if (exp != NULL) {
		int64_t exp_ms = (int64_t)json_number_value(exp) * 1000;
		if (exp_ms > until) {
			rc = mark_signed(ks, ctx, kid, exp_ms);
			if (rc != APIM_OK)
				goto out;
		}
	}
	payload = json_dumps(claims, JSON_COMPACT);
	if (payload == NULL) {
		rc = APIM_ENOMEM;
		goto out;
	}
	size_t plen = strlen(payload);
	size_t cap = hlen + 1 + b64url_len(plen) + 1 + b64url_len(KM_SIG_MAX) + 1;
	jwt = malloc(cap);
	if (jwt == NULL) {
		rc = APIM_ENOMEM;
		goto out;
	}
	memcpy(jwt, header, hlen);
	size_t len = hlen;
	jwt[len++] = '.';
	len += b64url_encode((const unsigned char *)payload, plen, jwt + len);
	unsigned char sig[KM_SIG_MAX];
	size_t siglen = sizeof(sig);
	rc = jws_sign(m, ec, jwt, len, sig, &siglen) == 0 ? APIM_OK : APIM_EINTERNAL;
	m = NULL; /* consumed */
	if (rc != APIM_OK) {
		log_error(KM_COMP, "signing with key %s failed", kid);
		rc = APIM_EINTERNAL;
		goto out;
	}
	jwt[len++] = '.';
	b64url_encode(sig, siglen, jwt + len);
	*out = jwt;
	jwt = NULL;
out:
	free(jwt);
	free(payload);
	EVP_MD_CTX_free(m);
	return rc;
}

/* Decodes one base64url part of a token into a malloc'ed, NUL-terminated
 * buffer. */
static unsigned char *part_decode(const char *s, size_t n, size_t *outlen)
{
	unsigned char *buf = malloc(n * 3 / 4 + 2);
	if (buf == NULL)
		return NULL;
	if (b64url_decode(s, n, buf, outlen) != 0) {
		free(buf);
		return NULL;
	}
	buf[*outlen] = '\0';
	return buf;
}

static json_t *part_json(const char *s, size_t n)
{
	size_t len = 0;
	unsigned char *buf = part_decode(s, n, &len);
	if (buf == NULL)
		return NULL;
	json_t *j = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);
	free(buf);
	if (j != NULL && !json_is_object(j)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

static int typ_acceptable(const json_t *typ)
{
	if (typ == NULL)
		return 1;
	const char *t = json_string_value(typ);
	return t != NULL && (strcasecmp(t, "JWT") == 0 || strcasecmp(t, "at+jwt") == 0 ||
			     strcasecmp(t, "application/at+jwt") == 0);
}

/* Finds kid (not retired) and, when its algorithm is alg, makes a
 * verification context (*m; NULL when it is not). 1 when found. */
static int key_take(km_keyset *ks, const char *kid, const char *alg, EVP_MD_CTX **m, int *ec,
		    size_t *rsa_len)
{
	int found = 0;
	int64_t now = apim_now_ms();
	pthread_rwlock_rdlock(&ks->lock);
	km_key *k = find_locked(ks, kid);
	if (k != NULL && (k->retire_after_ms == 0 || k->retire_after_ms >= now)) {
		found = 1;
		*ec = k->ec;
		*rsa_len = (size_t)EVP_PKEY_get_size(k->pkey);
		*m = strcmp(k->alg, alg) == 0 ? key_ctx(k, 1) : NULL;
	}
	pthread_rwlock_unlock(&ks->lock);
	return found;
}

static apim_rc keyset_verify(km_keyset *ks, const apim_ctx *ctx, const char *jwt, int64_t leeway,
			     json_t **claims, const char **why)
{
	const char *dummy;
	if (why == NULL)
		why = &dummy;
	*why = "malformed token";
	*claims = NULL;
	if (!ks->ready || jwt == NULL)
		return APIM_EUNAUTH;
	size_t total = strnlen(jwt, KM_JWT_MAX + 1);
	if (total > KM_JWT_MAX) {
		*why = "token too long";
		return APIM_EUNAUTH;
	}
	const char *d1 = memchr(jwt, '.', total);
	const char *d2 = d1 ? memchr(d1 + 1, '.', total - (size_t)(d1 + 1 - jwt)) : NULL;
	if (d1 == NULL || d2 == NULL || memchr(d2 + 1, '.', total - (size_t)(d2 + 1 - jwt)))
		return APIM_EUNAUTH;
	size_t hlen = (size_t)(d1 - jwt), plen = (size_t)(d2 - d1 - 1);
	size_t slen = total - (size_t)(d2 + 1 - jwt);
	if (hlen == 0 || plen == 0 || slen == 0)
		return APIM_EUNAUTH;

	apim_rc rc = APIM_EUNAUTH;
	EVP_MD_CTX *m = NULL;
	unsigned char *sig = NULL;
	json_t *payload = NULL;
	json_t *hdr = part_json(jwt, hlen);
	if (hdr == NULL)
		goto out;
	const char *alg = json_string_value(json_object_get(hdr, "alg"));
	const char *kid = json_string_value(json_object_get(hdr, "kid"));
	if (!alg_valid(alg)) {
		*why = "unsupported algorithm";
		goto out;
	}
	if (kid == NULL || *kid == '\0' || strlen(kid) >= KM_KID_MAX) {
		*why = "unknown signing key";
		goto out;
	}
	if (!typ_acceptable(json_object_get(hdr, "typ")) || json_object_get(hdr, "crit") != NULL)
		goto out;

	int ec = 0;
	size_t rsa_len = 0;
	keyset_refresh(ks, ctx->shared);
	if (!key_take(ks, kid, alg, &m, &ec, &rsa_len)) {
		/* maybe a key made on another node since our last load */
		int64_t now = apim_mono_ms();
		int64_t last = atomic_load(&ks->unknown_ms);
		if (now - last >= KM_UNKNOWN_KID_MS &&
		    atomic_compare_exchange_strong(&ks->unknown_ms, &last, now)) {
			apim_rc lrc = keyset_reload(ks, ctx->shared, 0);
			if (lrc != APIM_OK)
				log_warn(KM_COMP, "cannot reload the signing keys: %s",
					 apim_strerror(lrc));
		}
		if (!key_take(ks, kid, alg, &m, &ec, &rsa_len)) {
			*why = "unknown signing key";
			goto out;
		}
	}
	if (m == NULL) {
		*why = "algorithm does not match the key";
		goto out;
	}
	size_t siglen = 0;
	sig = part_decode(d2 + 1, slen, &siglen);
	if (sig == NULL)
		goto out;
	int bad = jws_verify(m, ec, rsa_len, jwt, (size_t)(d2 - jwt), sig, siglen);
	m = NULL; /* consumed */
	if (bad) {
		*why = "invalid signature";
		goto out;
	}
	payload = part_json(d1 + 1, plen);
	if (payload == NULL)
		goto out;
	double now_s = (double)apim_now_ms() / 1000.0;
	json_t *exp = json_object_get(payload, "exp");
	json_t *nbf = json_object_get(payload, "nbf");
	json_t *iat = json_object_get(payload, "iat");
	if (!json_is_number(exp) || (nbf && !json_is_number(nbf)) || (iat && !json_is_number(iat))) {
		*why = exp == NULL ? "token has no expiry" : "malformed token";
		goto out;
	}
	if (json_number_value(exp) + (double)leeway <= now_s) {
		*why = "token expired";
		goto out;
	}
	if ((nbf && json_number_value(nbf) > now_s + (double)leeway) ||
	    (iat && json_number_value(iat) > now_s + (double)leeway)) {
		*why = "token not yet valid";
		goto out;
	}
	*claims = payload;
	payload = NULL;
	*why = NULL;
	rc = APIM_OK;
out:
	json_decref(hdr);
	json_decref(payload);
	free(sig);
	EVP_MD_CTX_free(m);
	return rc;
}

static json_t *keyset_jwks(km_keyset *ks, db *d)
{
	json_t *keys = json_array();
	if (!ks->ready)
		return json_pack("{s:o}", "keys", keys);
	keyset_refresh(ks, d);
	int64_t now = apim_now_ms();
	pthread_rwlock_rdlock(&ks->lock);
	/* newest first: the active key leads */
	for (size_t i = ks->nkeys; i-- > 0;) {
		km_key *k = ks->keys[i];
		if (k->retire_after_ms == 0 || k->retire_after_ms >= now)
			json_array_append_new(keys, json_deep_copy(k->jwk));
	}
	pthread_rwlock_unlock(&ks->lock);
	return json_pack("{s:o}", "keys", keys);
}

static apim_rc keyset_rotate(km_keyset *ks, const apim_ctx *ctx, const char *alg,
			     int64_t max_validity_s, char kid_out[64])
{
	if (!ks->ready)
		return APIM_EINTERNAL;
	if (!alg_valid(alg))
		return APIM_EINVAL;
	km_key *k = key_generate(alg);
	if (k == NULL)
		return APIM_EINTERNAL;
	apim_rc rc = APIM_ECONFLICT;
	/* a concurrent rotation elsewhere (PostgreSQL): do ours after it */
	for (int attempt = 0; attempt < 3 && rc == APIM_ECONFLICT; attempt++)
		rc = store_activate(ks, ctx, k, max_validity_s, 0, NULL);
	if (rc == APIM_OK) {
		if (kid_out != NULL)
			snprintf(kid_out, 64, "%s", k->kid);
		apim_rc lrc = keyset_reload(ks, ctx->shared, 0);
		if (lrc != APIM_OK)
			log_warn(KM_COMP, "cannot reload the signing keys: %s", apim_strerror(lrc));
	}
	key_free(k);
	return rc;
}

/* ---------- start and stop ---------- */

static const char *const keys_steps[] = {
	"CREATE TABLE km_signing_key ("
	" kid TEXT PRIMARY KEY,"
	" alg TEXT NOT NULL,"
	" public_jwk TEXT NOT NULL,"
	" private_enc TEXT NOT NULL,"
	" active INTEGER NOT NULL,"
	" config_alg TEXT NOT NULL,"
	" created_ms BIGINT NOT NULL,"
	" retire_after_ms BIGINT,"
	" signed_until_ms BIGINT);"
	/* one active key, even with two nodes activating at once */
	"CREATE UNIQUE INDEX km_signing_key_one_active ON km_signing_key (active) WHERE active = 1",
};

static void issuer_compute(km_keyset *ks, const apim_config *cfg, int port)
{
	const char *scheme = (cfg->http_tls_cert && *cfg->http_tls_cert) ? "https" : "http";
	const char *suffix = "/oauth2/token";
	snprintf(ks->base_url, sizeof(ks->base_url), "%s://%s:%d", scheme,
		 cfg->server_hostname ? cfg->server_hostname : "localhost", port);
	if (cfg->keymanager_issuer && *cfg->keymanager_issuer) {
		snprintf(ks->issuer, sizeof(ks->issuer), "%s", cfg->keymanager_issuer);
		/* endpoints live where the configured issuer says (behind a proxy) */
		size_t n = strlen(ks->issuer), sl = strlen(suffix);
		if (n > sl && strcmp(ks->issuer + n - sl, suffix) == 0)
			snprintf(ks->base_url, sizeof(ks->base_url), "%.*s", (int)(n - sl),
				 ks->issuer);
	} else {
		snprintf(ks->issuer, sizeof(ks->issuer), "%s%s", ks->base_url, suffix);
	}
}

static apim_rc keyset_init(km_keyset *ks, const apim_ctx *ctx)
{
	keyset_setup(ks);
	issuer_compute(ks, ctx->cfg, ctx->port);
	if (ctx->shared == NULL) {
		log_error(KM_COMP, "the Key Manager needs shareddb");
		return APIM_ECONFIG;
	}
	int generated = 0;
	apim_rc rc = master_load(ks, ctx->cfg, &generated);
	if (rc == APIM_OK)
		rc = db_migrate(ctx->shared, "signing-keys", keys_steps,
				sizeof(keys_steps) / sizeof(keys_steps[0]));
	ks->ready = 1;
	if (rc == APIM_OK) {
		rc = keyset_reload(ks, ctx->shared, 1);
		if (rc == APIM_ECONFIG && generated) {
			/* a new node of an existing deployment: the key it just made
			 * is of no use, and would only be in the way of the right one */
			char path[4096];
			snprintf(path, sizeof(path), "%s/master-key", ctx->cfg->server_home);
			unlink(path);
			log_error(KM_COMP, "this node had no master key and generated one, but "
					   "shareddb holds signing keys made with another: give it the "
					   "master key of the other Key Manager nodes (copy their "
					   "<server.home>/master-key, or set keymanager.master_key or "
					   "APIM_KEYMANAGER_MASTER_KEY)");
		}
	}
	if (rc == APIM_OK)
		rc = keyset_ensure_active(ks, ctx);
	if (rc == APIM_OK)
		rc = keyset_reload(ks, ctx->shared, 1);
	if (rc != APIM_OK) {
		keyset_teardown(ks);
		return rc;
	}
	pthread_rwlock_rdlock(&ks->lock);
	for (size_t i = 0; i < ks->nkeys; i++)
		if (ks->keys[i]->active)
			log_info(KM_COMP, "signing key %s (%s); %zu key(s) published", ks->keys[i]->kid,
				 ks->keys[i]->alg, ks->nkeys);
	pthread_rwlock_unlock(&ks->lock);
	return APIM_OK;
}

apim_rc km_keys_init(apim_ctx *ctx)
{
	keyset_teardown(&km_global);
	return keyset_init(&km_global, ctx);
}

void km_keys_shutdown(void)
{
	keyset_teardown(&km_global);
}

const char *km_issuer(apim_ctx *ctx)
{
	if (km_global.issuer[0] == '\0')
		issuer_compute(&km_global, ctx->cfg, ctx->port);
	return km_global.issuer;
}

apim_rc km_jwt_sign(apim_ctx *ctx, json_t *claims, char **out)
{
	return keyset_sign(&km_global, ctx, claims, out);
}

apim_rc km_jwt_verify(apim_ctx *ctx, const char *jwt, int64_t leeway, json_t **claims,
		      const char **why)
{
	return keyset_verify(&km_global, ctx, jwt, leeway, claims, why);
}

json_t *km_keys_jwks(apim_ctx *ctx)
{
	return keyset_jwks(&km_global, ctx->shared);
}

apim_rc km_keys_rotate(apim_ctx *ctx, const char *alg, int64_t max_validity_s, char kid_out[64])
{
	return keyset_rotate(&km_global, ctx, alg, max_validity_s, kid_out);
}

/* ---------- routes ---------- */

static void jwks_get(http_req *r)
{
	json_t *j = km_keys_jwks(r->ctx);
	http_set_header(r, "Cache-Control", "public, max-age=60");
	http_reply_json(r, 200, j);
}

static json_t *str_array(const char *const *v)
{
	json_t *a = json_array();
	for (; *v; v++)
		json_array_append_new(a, json_string(*v));
	return a;
}

/* OpenID Connect discovery / RFC 8414 metadata. */
static void discovery_get(http_req *r)
{
	static const char *const grants[] = {"authorization_code", "client_credentials", "password",
					     "refresh_token", NULL};
	static const char *const responses[] = {"code", NULL};
	static const char *const pkce[] = {"S256", NULL};
	static const char *const auth_methods[] = {"client_secret_basic", "client_secret_post",
						   NULL};
	static const char *const algs[] = {"RS256", "ES256", NULL};
	static const char *const subjects[] = {"public", NULL};
	static const char *const claims[] = {"iss", "sub", "aud", "azp", "client_id", "scope",
					     "exp", "iat", "nbf", "jti", "aut", NULL};
	km_keyset *ks = &km_global;
	const char *base = ks->base_url;
	json_t *o = json_object();
	json_object_set_new(o, "issuer", json_string(km_issuer(r->ctx)));
	json_object_set_new(o, "authorization_endpoint",
			    json_string(arena_sprintf(r->pool, "%s/oauth2/authorize", base)));
	json_object_set_new(o, "token_endpoint",
			    json_string(arena_sprintf(r->pool, "%s/oauth2/token", base)));
	json_object_set_new(o, "jwks_uri", json_string(arena_sprintf(r->pool, "%s/oauth2/jwks", base)));
	json_object_set_new(o, "userinfo_endpoint",
			    json_string(arena_sprintf(r->pool, "%s/oauth2/userinfo", base)));
	json_object_set_new(o, "introspection_endpoint",
			    json_string(arena_sprintf(r->pool, "%s/oauth2/introspect", base)));
	json_object_set_new(o, "revocation_endpoint",
			    json_string(arena_sprintf(r->pool, "%s/oauth2/revoke", base)));
	json_object_set_new(o, "registration_endpoint",
			    json_string(arena_sprintf(r->pool, "%s/oauth2/register", base)));
	json_object_set_new(o, "grant_types_supported", str_array(grants));
	json_object_set_new(o, "response_types_supported", str_array(responses));
	json_object_set_new(o, "code_challenge_methods_supported", str_array(pkce));
	json_object_set_new(o, "token_endpoint_auth_methods_supported", str_array(auth_methods));
	json_object_set_new(o, "revocation_endpoint_auth_methods_supported",
			    str_array(auth_methods));
	json_object_set_new(o, "id_token_signing_alg_values_supported", str_array(algs));
	json_object_set_new(o, "subject_types_supported", str_array(subjects));
	json_object_set_new(o, "claims_supported", str_array(claims));

	/* every scope some role can have (the control plane's role-scope mapping) */
	json_t *scopes = json_array();
	db_res *res = NULL;
	if (db_exec(r->ctx->shared, &res, "SELECT DISTINCT scope FROM um_role_scope ORDER BY scope",
		    DB_NOARGS) == APIM_OK) {
		for (size_t i = 0; i < db_res_rows(res); i++)
			json_array_append_new(scopes, json_string(db_res_get(res, i, 0)));
	}
	db_res_free(res);
	json_object_set_new(o, "scopes_supported", scopes);
	http_set_header(r, "Cache-Control", "public, max-age=300");
	http_reply_json(r, 200, o);
}

#define INFO_COLS "kid, alg, active, created_ms, retire_after_ms, public_jwk"

/* The Admin view of a key row (INFO_COLS): public parts only. */
static json_t *key_info(const db_res *res, size_t i)
{
	char created[40], retire[40];
	json_t *o = json_object();
	json_object_set_new(o, "kid", json_string(db_res_get(res, i, 0)));
	json_object_set_new(o, "alg", json_string(db_res_get(res, i, 1)));
	json_object_set_new(o, "active", json_boolean(db_res_int(res, i, 2) == 1));
	apim_iso8601(db_res_int(res, i, 3), created, sizeof(created));
	json_object_set_new(o, "createdTime", json_string(created));
	if (db_res_get(res, i, 4) != NULL) {
		apim_iso8601(db_res_int(res, i, 4), retire, sizeof(retire));
		json_object_set_new(o, "retireAfter", json_string(retire));
	} else {
		json_object_set_new(o, "retireAfter", json_null());
	}
	const char *jwk = db_res_get(res, i, 5);
	json_t *pub = jwk ? json_loads(jwk, 0, NULL) : NULL;
	json_object_set_new(o, "publicKey", pub ? pub : json_null());
	return o;
}

static void signing_keys_list(http_req *r)
{
	int64_t limit = 0, offset = 0;
	if (http_paging(r, &limit, &offset) < 0)
		return;
	char tnow[24];
	i64_text(apim_now_ms(), tnow);
	db_res *res = NULL;
	apim_rc rc = db_exec(r->ctx->shared, &res,
			     "SELECT " INFO_COLS " FROM km_signing_key WHERE retire_after_ms IS NULL "
			     "OR retire_after_ms >= ? ORDER BY active DESC, created_ms DESC",
			     DB_ARGS(tnow));
	if (rc != APIM_OK) {
		http_reply_rc(r, rc, "The signing keys could not be read.");
		return;
	}
	size_t n = db_res_rows(res);
	json_t *list = json_array();
	for (size_t i = (size_t)offset; i < n && (int64_t)(i - (size_t)offset) < limit; i++)
		json_array_append_new(list, key_info(res, i));
	db_res_free(res);
	http_reply_list(r, list, (int64_t)n, limit, offset);
}

static void signing_keys_rotate(http_req *r)
{
	const char *alg = http_query(r, "alg");
	if (alg == NULL || *alg == '\0')
		alg = r->ctx->cfg->keymanager_signing_alg;
	if (!alg_valid(alg)) {
		http_reply_error(r, 400, "alg must be RS256 or ES256.");
		return;
	}
	char kid[64];
	apim_rc rc = km_keys_rotate(r->ctx, alg, r->ctx->cfg->keymanager_access_token_validity, kid);
	if (rc != APIM_OK) {
		http_reply_rc(r, rc, "The signing key could not be rotated.");
		return;
	}
	/* gateways verify tokens with the JWKS of their data: a change tells
	 * them to fetch it again (the keys live in shareddb, changes in
	 * apimgtdb) */
	if (r->ctx->apimgt != NULL) {
		char payload[128];
		snprintf(payload, sizeof(payload), "{\"kid\":\"%s\"}", kid);
		apim_rc crc = db_begin(r->ctx->apimgt);
		if (crc == APIM_OK)
			crc = db_change_record(r->ctx->apimgt, "key_manager", "resident", "rotate",
					       payload, NULL);
		if (crc == APIM_OK)
			crc = db_commit(r->ctx->apimgt);
		if (crc != APIM_OK) {
			db_rollback(r->ctx->apimgt);
			log_error(KM_COMP, "signing key %s is active, but gateways were not told "
					   "(%s): they learn it at their next full resync",
				  kid, apim_strerror(crc));
		}
	}
	db_res *res = NULL;
	rc = db_exec(r->ctx->shared, &res, "SELECT " INFO_COLS " FROM km_signing_key WHERE kid = ?",
		     DB_ARGS(kid));
	if (rc != APIM_OK || db_res_rows(res) != 1) {
		db_res_free(res);
		http_reply_rc(r, rc != APIM_OK ? rc : APIM_EINTERNAL,
			      "The new signing key could not be read back.");
		return;
	}
	json_t *o = key_info(res, 0);
	db_res_free(res);
	http_reply_json(r, 201, o);
}

static const http_route keys_routes[] = {
	{"GET", "/oauth2/jwks", jwks_get, NULL, HTTP_PUBLIC},
	{"GET", "/.well-known/openid-configuration", discovery_get, NULL, HTTP_PUBLIC},
	{"GET", "/oauth2/token/.well-known/openid-configuration", discovery_get, NULL, HTTP_PUBLIC},
	/* RFC 8414 §3.1: the issuer's path goes after the well-known name */
	{"GET", "/.well-known/oauth-authorization-server/oauth2/token", discovery_get, NULL,
	 HTTP_PUBLIC},
	{"GET", KM_ADMIN_BASE, signing_keys_list, KM_SCOPE_ADMIN, 0},
	{"POST", KM_ADMIN_BASE "/rotate", signing_keys_rotate, KM_SCOPE_ADMIN, 0},
};

void km_keys_routes(http_server *s)
{
	http_server_routes(s, keys_routes, sizeof(keys_routes) / sizeof(keys_routes[0]));
}
