/*
 * ngx_http_apim_jwt.c: JWT access tokens and API keys, parsed and
 * verified, and a per-worker cache of verified tokens.
 *
 * A token is verified once (jansson, signature with the key
 * ngx_http_apim_jwk_find() names): the claims the request path needs are
 * then kept in a compact ngx_http_apim_claims_t (no JSON) in a
 * direct-mapped table of APIM_TCACHE_SIZE entries, indexed by a fast hash
 * of the token's length and last APIM_TCACHE_TAIL bytes (its signature:
 * random to anyone without the signing key) and compared with the whole
 * token in constant time, a machine word at a time.
 * Tokens longer than APIM_TCACHE_TOKEN are verified on every call. The table is a static array: each
 * worker has its own copy after fork, and the request path of a worker
 * is single-threaded, so there are no locks; the hit path allocates
 * nothing.
 *
 * What may change while a token is cached is checked on every call,
 * from the cached claims and the current snapshot: exp and nbf, the key
 * (its kid must still name the same public key, which the entry holds a
 * reference to), the issuer bound to that key, and the revoked jtis.
 * Subscriptions and scopes are checked by the caller on every call. The
 * key, issuer and revocation checks depend only on the snapshot when the
 * key is our Key Manager's (the snapshot's "jwks"): an entry remembers
 * the snapshot (gen) it last passed them against and skips them while
 * that snapshot is the current one. Another issuer's keys come from the
 * JWKS thread and are looked up on every call.
 */


#include "ngx_http_apim_module.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>


#define APIM_TCACHE_SIZE   1024              /* power of two */
#define APIM_CLAIMS_BUF    3072
#define APIM_TCACHE_TOKEN  2048
#define APIM_TCACHE_TAIL   32


typedef struct {
    ngx_http_apim_claims_t      claims;
    EVP_PKEY                   *pkey;        /* a reference, or NULL */
    ngx_uint_t                  used;
    uint64_t                    checked;     /* snapshot gen the key,
                                                issuer and jti passed; 0 */
    const ngx_http_apim_jwk_t  *jwk;         /* its key in that snapshot */
    uint64_t                    names;       /* claim names it was read with */
    size_t                      toklen;
    u_char                      tok[APIM_TCACHE_TOKEN];
    u_char                      buf[APIM_CLAIMS_BUF];
} ngx_http_apim_tcache_t;


typedef struct {
    u_char                     *pos;
    u_char                     *end;
} ngx_http_apim_cbuf_t;


static ngx_http_apim_tcache_t  ngx_http_apim_tcache[APIM_TCACHE_SIZE];

/* counters for the tests' and operators' curiosity (debug log) */
static ngx_uint_t  ngx_http_apim_tcache_hits;
static ngx_uint_t  ngx_http_apim_tcache_misses;
static uint64_t    ngx_http_apim_tcache_gen;      /* of the last fill */


static const char  *ngx_http_apim_not_copied[] = {
    "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "application",
    "tierInfo", "subscribedAPIs", NULL
};


uint64_t
ngx_http_apim_hash64(const u_char *p, size_t len)
{
    uint64_t  h, w;

    /* 8 bytes a step, multiply and fold (a MurmurHash-like mix) */
    h = 0x9e3779b97f4a7c15ULL ^ (len * 0xc2b2ae3d27d4eb4fULL);

    while (len >= 8) {
        ngx_memcpy(&w, p, 8);
        h ^= w * 0x87c37b91114253d5ULL;
        h = (h << 31 | h >> 33) * 0x4cf5ad432745937fULL;
        p += 8;
        len -= 8;
    }

    w = 0;
    ngx_memcpy(&w, p, len);
    h ^= w * 0x87c37b91114253d5ULL;

    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;

    return h;
}


ngx_int_t
ngx_http_apim_sha256_digest(const u_char *data, size_t len, u_char *out)
{
    SHA256_CTX  sha;

    /*
     * The low-level interface (deprecated in OpenSSL 3, as nginx's own
     * ngx_sha1 uses it) because it works on the stack: EVP_DigestInit
     * allocates a provider context on every call.
     */
    if (SHA256_Init(&sha) != 1
        || SHA256_Update(&sha, data, len) != 1
        || SHA256_Final(out, &sha) != 1)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* 1 when a and b are equal; the time depends on len only */
static ngx_uint_t
ngx_http_apim_ct_equal(const u_char *a, const u_char *b, size_t len)
{
    uint64_t  x, y, a0, a1, b0, b1;

    x = 0;
    y = 0;

    while (len >= 16) {
        ngx_memcpy(&a0, a, 8);
        ngx_memcpy(&a1, a + 8, 8);
        ngx_memcpy(&b0, b, 8);
        ngx_memcpy(&b1, b + 8, 8);
        x |= a0 ^ b0;
        y |= a1 ^ b1;
        a += 16;
        b += 16;
        len -= 16;
    }

    while (len) {
        x |= (uint64_t) (*a++ ^ *b++);
        len--;
    }

    return (x | y) == 0;
}


/* the cache slot of a token: its length and its last bytes */
static ngx_http_apim_tcache_t *
ngx_http_apim_tcache_slot(ngx_str_t *tok)
{
    size_t     n;
    uint64_t   h;

    n = tok->len < APIM_TCACHE_TAIL ? tok->len : APIM_TCACHE_TAIL;

    h = ngx_http_apim_hash64(tok->data + tok->len - n, n)
        ^ (tok->len * 0x9e3779b97f4a7c15ULL);

    return &ngx_http_apim_tcache[(h ^ (h >> 29)) & (APIM_TCACHE_SIZE - 1)];
}


static json_t *
ngx_http_apim_jwt_b64_json(ngx_http_request_t *r, u_char *p, size_t len)
{
    ngx_str_t  src, dst;

    src.data = p;
    src.len = len;

    dst.data = ngx_pnalloc(r->pool, ngx_base64_decoded_length(len) + 1);
    if (dst.data == NULL) {
        return NULL;
    }

    if (ngx_decode_base64url(&dst, &src) != NGX_OK) {
        return NULL;
    }

    return json_loadb((char *) dst.data, dst.len, 0, NULL);
}


static ngx_int_t
ngx_http_apim_jwt_verify_sig(ngx_http_request_t *r,
    const ngx_http_apim_jwk_t *jwk, const char *alg, u_char *input,
    size_t input_len, u_char *sig64, size_t sig64_len)
{
    int             ok, type;
    size_t          der_len;
    u_char         *der;
    BIGNUM         *br, *bs;
    ECDSA_SIG      *es;
    ngx_str_t       src, sig;
    EVP_MD_CTX     *md;

    type = EVP_PKEY_get_base_id(jwk->pkey);

    if (!((ngx_strcmp(alg, "RS256") == 0 && type == EVP_PKEY_RSA)
          || (ngx_strcmp(alg, "ES256") == 0 && type == EVP_PKEY_EC)))
    {
        return NGX_DECLINED;
    }

    src.data = sig64;
    src.len = sig64_len;
    sig.data = ngx_pnalloc(r->pool, ngx_base64_decoded_length(sig64_len) + 1);
    if (sig.data == NULL || ngx_decode_base64url(&sig, &src) != NGX_OK) {
        return NGX_DECLINED;
    }

    der = NULL;

    if (type == EVP_PKEY_EC) {
        /* JOSE R || S -> DER ECDSA-Sig-Value */
        if (sig.len != 64) {
            return NGX_DECLINED;
        }

        es = ECDSA_SIG_new();
        br = BN_bin2bn(sig.data, 32, NULL);
        bs = BN_bin2bn(sig.data + 32, 32, NULL);

        if (es == NULL || br == NULL || bs == NULL
            || !ECDSA_SIG_set0(es, br, bs))
        {
            ECDSA_SIG_free(es);
            BN_free(br);
            BN_free(bs);
            return NGX_DECLINED;
        }

        ok = i2d_ECDSA_SIG(es, &der);
        ECDSA_SIG_free(es);

        if (ok <= 0) {
            return NGX_DECLINED;
        }

        der_len = ok;
        sig.data = der;
        sig.len = der_len;
    }

    md = EVP_MD_CTX_new();

    ok = md != NULL
         && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, jwk->pkey) == 1
         && EVP_DigestVerify(md, sig.data, sig.len, input, input_len) == 1;

    EVP_MD_CTX_free(md);
    OPENSSL_free(der);

    return ok ? NGX_OK : NGX_DECLINED;
}


/* copies len bytes and a NUL into b; NGX_ERROR when b is full */
static ngx_int_t
ngx_http_apim_cbuf_put(ngx_http_apim_cbuf_t *b, ngx_str_t *dst,
    const char *src, size_t len)
{
    if (src == NULL) {
        src = "";
        len = 0;
    }

    if ((size_t) (b->end - b->pos) < len + 1) {
        return NGX_ERROR;
    }

    dst->data = b->pos;
    dst->len = len;
    b->pos = ngx_cpymem(b->pos, src, len);
    *b->pos++ = '\0';

    return NGX_OK;
}


static ngx_int_t
ngx_http_apim_cbuf_str(ngx_http_apim_cbuf_t *b, ngx_str_t *dst, json_t *o,
    const char *name)
{
    json_t  *v;

    v = json_object_get(o, name);

    if (!json_is_string(v)) {
        return ngx_http_apim_cbuf_put(b, dst, NULL, 0);
    }

    return ngx_http_apim_cbuf_put(b, dst, json_string_value(v),
                                  json_string_length(v));
}


/* appends "sep item" to a string being built at the end of b */
static ngx_int_t
ngx_http_apim_cbuf_append(ngx_http_apim_cbuf_t *b, ngx_str_t *dst,
    const char *item, size_t len, u_char sep)
{
    /* dst is the last string of b: overwrite its NUL */
    if ((size_t) (b->end - b->pos) < len + 1) {
        return NGX_ERROR;
    }

    b->pos--;
    *b->pos++ = sep;
    b->pos = ngx_cpymem(b->pos, item, len);
    *b->pos++ = '\0';
    dst->len += 1 + len;

    return NGX_OK;
}


/*
 * The claims of a verified token into cl, the strings in [buf, buf+cap).
 * NGX_ERROR: they do not fit (nothing else can fail here).
 */
static ngx_int_t
ngx_http_apim_jwt_extract(json_t *claims, const char *kid,
    const ngx_http_apim_jwk_t *jwk, ngx_http_apim_claims_t *cl, u_char *buf,
    size_t cap)
{
    const char            *ck, *sc;
    char                  *extra;
    size_t                 i, n;
    json_t                *v, *e, *o, *copy;
    const char            *key, **skip;
    ngx_int_t              rc;
    ngx_http_apim_cbuf_t   b;

    b.pos = buf;
    b.end = buf + cap;

    v = json_object_get(claims, "exp");
    cl->exp = (time_t) json_number_value(v);

    v = json_object_get(claims, "nbf");
    cl->nbf = json_is_number(v) ? (time_t) json_number_value(v) : 0;

    v = json_object_get(claims, "token_type");
    cl->api_key = json_is_string(v)
                  && ngx_strcmp(json_string_value(v), "apiKey") == 0;

    if (ngx_http_apim_cbuf_put(&b, &cl->kid, kid, ngx_strlen(kid)) != NGX_OK
        || ngx_http_apim_cbuf_str(&b, &cl->iss, claims, "iss") != NGX_OK
        || ngx_http_apim_cbuf_str(&b, &cl->sub, claims, "sub") != NGX_OK
        || ngx_http_apim_cbuf_str(&b, &cl->jti, claims, "jti") != NGX_OK
        || ngx_http_apim_cbuf_str(&b, &cl->aut, claims, "aut") != NGX_OK
        || ngx_http_apim_cbuf_str(&b, &cl->key_type, claims, "keytype")
           != NGX_OK
        || ngx_http_apim_cbuf_str(&b, &cl->permitted_ip, claims,
                                  "permittedIP") != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the client: the key manager's consumer key claim (another issuer's
     * may name its own), else azp, else client_id */
    ck = jwk->consumer_key_claim;
    if (ck != NULL && *ck != '\0') {
        rc = ngx_http_apim_cbuf_str(&b, &cl->client, claims, ck);

    } else {
        rc = json_is_string(json_object_get(claims, "azp"))
             ? ngx_http_apim_cbuf_str(&b, &cl->client, claims, "azp")
             : ngx_http_apim_cbuf_str(&b, &cl->client, claims, "client_id");
    }
    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    /* scopes: the key manager's scopes claim, else "scope"; a string
     * (space separated) or an array ("scp" too when nothing else is) */
    sc = jwk->scopes_claim;
    if (sc == NULL || *sc == '\0') {
        sc = "scope";
    }

    v = json_object_get(claims, sc);
    if (json_is_string(v)) {
        rc = ngx_http_apim_cbuf_str(&b, &cl->scope, claims, sc);

    } else {
        if (!json_is_array(v)) {
            v = json_object_get(claims, "scp");
        }
        rc = ngx_http_apim_cbuf_put(&b, &cl->scope, NULL, 0);
        json_array_foreach(v, i, e) {
            if (rc == NGX_OK && json_is_string(e)) {
                rc = ngx_http_apim_cbuf_append(&b, &cl->scope,
                                               json_string_value(e),
                                               json_string_length(e), ' ');
            }
        }
    }
    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    /* API keys: the application and the APIs subscribed at issue time */
    o = json_object_get(claims, "application");
    v = json_object_get(o, "uuid");
    if (!json_is_string(v)) {
        v = json_object_get(o, "id");
    }

    if (ngx_http_apim_cbuf_put(&b, &cl->app_id,
                               json_is_string(v) ? json_string_value(v) : NULL,
                               json_is_string(v) ? json_string_length(v) : 0)
        != NGX_OK
        || ngx_http_apim_cbuf_put(&b, &cl->apis, "", 0) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* "\n<uuid>\n<name>:<version>\n..." */
    json_array_foreach(json_object_get(claims, "subscribedAPIs"), i, e) {
        const char  *s;

        s = ngx_http_apim_jstr(e, "uuid");
        if (s != NULL
            && ngx_http_apim_cbuf_append(&b, &cl->apis, s, ngx_strlen(s), '\n')
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        s = ngx_http_apim_jstr(e, "name");
        key = ngx_http_apim_jstr(e, "version");
        if (s != NULL && key != NULL) {
            if (ngx_http_apim_cbuf_append(&b, &cl->apis, s, ngx_strlen(s),
                                          '\n') != NGX_OK
                || ngx_http_apim_cbuf_append(&b, &cl->apis, key,
                                             ngx_strlen(key), ':') != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    if (cl->apis.len
        && ngx_http_apim_cbuf_append(&b, &cl->apis, "", 0, '\n') != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the other claims, for the backend JWT: JSON members, no braces */
    copy = json_object();
    if (copy == NULL) {
        return NGX_ERROR;
    }

    json_object_foreach(claims, key, v) {
        for (skip = ngx_http_apim_not_copied; *skip; skip++) {
            if (ngx_strcmp(key, *skip) == 0) {
                break;
            }
        }
        if (*skip == NULL) {
            json_object_set(copy, key, v);
        }
    }

    extra = json_dumps(copy, JSON_COMPACT);
    json_decref(copy);

    if (extra == NULL) {
        return NGX_ERROR;
    }

    n = ngx_strlen(extra);
    rc = n >= 2 ? ngx_http_apim_cbuf_put(&b, &cl->extra, extra + 1, n - 2)
                : NGX_ERROR;
    free(extra);

    return rc;
}


/* which claims name the client and the scopes, as one number */
static uint64_t
ngx_http_apim_claim_names(const ngx_http_apim_jwk_t *jwk)
{
    uint64_t     h;
    const char  *ck, *sc;

    ck = jwk->consumer_key_claim ? jwk->consumer_key_claim : "";
    sc = jwk->scopes_claim ? jwk->scopes_claim : "";

    h = ngx_http_apim_hash64((const u_char *) ck, ngx_strlen(ck));

    return h ^ (ngx_http_apim_hash64((const u_char *) sc, ngx_strlen(sc))
                * 0x9e3779b97f4a7c15ULL);
}


static void
ngx_http_apim_tcache_drop(ngx_http_apim_tcache_t *e)
{
    e->used = 0;
    e->checked = 0;

    if (e->pkey != NULL) {
        EVP_PKEY_free(e->pkey);
        e->pkey = NULL;
    }
}


ngx_int_t
ngx_http_apim_jwt_verify(ngx_http_request_t *r,
    const ngx_http_apim_snap_t *snap, ngx_str_t *tok,
    ngx_http_apim_claims_t **out)
{
    u_char                     *end, *dot1, *dot2, *buf;
    size_t                      cap;
    time_t                      now;
    json_t                     *hdr, *claims, *v;
    EVP_PKEY                   *pkey;
    ngx_int_t                   rc;
    const char                 *alg, *kid;
    ngx_http_apim_claims_t     *cl;
    ngx_http_apim_tcache_t     *e;
    const ngx_http_apim_jwk_t  *jwk;

    if (tok->len == 0 || tok->len > APIM_TOKEN_MAX) {
        return NGX_DECLINED;
    }

    e = ngx_http_apim_tcache_slot(tok);

    if (e->used && e->toklen == tok->len
        && ngx_http_apim_ct_equal(e->tok, tok->data, tok->len))
    {
        cl = &e->claims;
        pkey = e->pkey;

        if (e->checked == snap->gen) {
            /* our key, issuer and jti passed against this very snapshot */
            ngx_http_apim_tcache_hits++;
            jwk = e->jwk;
            goto times;
        }

        /* read again when its key manager now names other claims */
        jwk = ngx_http_apim_jwk_find(snap, (const char *) e->claims.kid.data,
                                     e->claims.iss.len
                                     ? (const char *) e->claims.iss.data : NULL);

        if (jwk == NULL || ngx_http_apim_claim_names(jwk) == e->names) {
            ngx_http_apim_tcache_hits++;
            goto check;
        }

        ngx_http_apim_tcache_drop(e);
    }

    ngx_http_apim_tcache_misses++;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "apim token cache miss (%ui hits, %ui misses)",
                   ngx_http_apim_tcache_hits, ngx_http_apim_tcache_misses);

    hdr = NULL;
    claims = NULL;
    rc = NGX_DECLINED;

    end = tok->data + tok->len;
    dot1 = ngx_strlchr(tok->data, end, '.');
    dot2 = dot1 ? ngx_strlchr(dot1 + 1, end, '.') : NULL;

    if (dot2 == NULL) {
        goto done;
    }

    hdr = ngx_http_apim_jwt_b64_json(r, tok->data, dot1 - tok->data);
    claims = ngx_http_apim_jwt_b64_json(r, dot1 + 1, dot2 - dot1 - 1);

    if (!json_is_object(hdr) || !json_is_object(claims)) {
        goto done;
    }

    alg = ngx_http_apim_jstr(hdr, "alg");
    kid = ngx_http_apim_jstr(hdr, "kid");

    if (alg == NULL || kid == NULL
        || !json_is_number(json_object_get(claims, "exp")))
    {
        goto done;
    }

    v = json_object_get(claims, "nbf");
    if (v != NULL && !json_is_number(v)) {
        goto done;
    }

    v = json_object_get(claims, "iss");
    jwk = ngx_http_apim_jwk_find(snap, kid,
                                 json_is_string(v) ? json_string_value(v)
                                                   : NULL);
    if (jwk == NULL) {
        goto done;
    }

    if (ngx_http_apim_jwt_verify_sig(r, jwk, alg, tok->data,
                                     dot2 - tok->data, dot2 + 1,
                                     end - dot2 - 1)
        != NGX_OK)
    {
        goto done;
    }

    /* the signature is good: keep the claims, in the cache if they fit */
    ngx_http_apim_tcache_drop(e);

    cl = &e->claims;
    pkey = jwk->pkey;

    if (tok->len <= APIM_TCACHE_TOKEN
        && ngx_http_apim_jwt_extract(claims, kid, jwk, cl, e->buf,
                                     APIM_CLAIMS_BUF)
           == NGX_OK)
    {
        cl->gen = 0;

        if (EVP_PKEY_up_ref(pkey) == 1) {
            ngx_memcpy(e->tok, tok->data, tok->len);
            e->toklen = tok->len;
            e->names = ngx_http_apim_claim_names(jwk);
            e->pkey = pkey;
            e->used = 1;
            cl->gen = ++ngx_http_apim_tcache_gen;
        }

    } else {
        cap = 2 * tok->len + 256;
        cl = ngx_palloc(r->pool, sizeof(ngx_http_apim_claims_t));
        buf = ngx_pnalloc(r->pool, cap);

        if (cl == NULL || buf == NULL) {
            rc = NGX_ERROR;
            goto done;
        }

        if (ngx_http_apim_jwt_extract(claims, kid, jwk, cl, buf, cap) != NGX_OK) {
            goto done;
        }

        cl->gen = 0;
    }

    /* found again below by the claims, as for a cached token */
    jwk = NULL;
    rc = NGX_OK;

done:

    json_decref(hdr);
    json_decref(claims);

    if (rc != NGX_OK) {
        return rc;
    }

check:

    /* every call, cached or not: what may have changed since */
    e->checked = 0;

    /* the kid must still name the key that verified the signature */
    if (jwk == NULL) {
        jwk = ngx_http_apim_jwk_find(snap, (const char *) cl->kid.data,
                                     cl->iss.len ? (const char *) cl->iss.data
                                                 : NULL);
        if (jwk == NULL) {
            return NGX_DECLINED;
        }
    }

    if (jwk->pkey != pkey) {
        /* a new snapshot: the same key, as a new object? */
        if (EVP_PKEY_eq(jwk->pkey, pkey) != 1) {
            return NGX_DECLINED;
        }

        /* hold the new one, so that the next calls compare pointers */
        if (cl == &e->claims && e->pkey == pkey
            && EVP_PKEY_up_ref(jwk->pkey) == 1)
        {
            EVP_PKEY_free(e->pkey);
            e->pkey = jwk->pkey;
        }
    }

    if (jwk->issuer != NULL
        && (cl->iss.len != ngx_strlen(jwk->issuer)
            || ngx_strcmp(cl->iss.data, jwk->issuer) != 0))
    {
        return NGX_DECLINED;
    }

    if (cl->jti.len
        && ngx_http_apim_map_get(&snap->revoked, cl->jti.data, cl->jti.len))
    {
        return NGX_DECLINED;
    }

    if (cl == &e->claims && e->used && jwk->key_manager == NULL
        && e->pkey == jwk->pkey)
    {
        /* our Key Manager's key: found in the snapshot alone */
        e->checked = snap->gen;
        e->jwk = jwk;
    }

times:

    now = ngx_time();

    if (cl->exp + APIM_LEEWAY < now) {
        if (cl == &e->claims) {
            ngx_http_apim_tcache_drop(e);
        }
        return NGX_DECLINED;
    }

    if (cl->nbf != 0 && cl->nbf - APIM_LEEWAY > now) {
        return NGX_DECLINED;
    }

    cl->jwk = jwk;
    *out = cl;

    return NGX_OK;
}


void
ngx_http_apim_jwt_cleanup(void)
{
    ngx_uint_t  i;

    for (i = 0; i < APIM_TCACHE_SIZE; i++) {
        ngx_http_apim_tcache_drop(&ngx_http_apim_tcache[i]);
    }
}


ngx_uint_t
ngx_http_apim_jwt_has_scope(const ngx_http_apim_claims_t *cl,
    const char *want)
{
    size_t   wl;
    u_char  *p, *q, *end;

    wl = ngx_strlen(want);
    p = cl->scope.data;
    end = p + cl->scope.len;

    while (p < end) {
        while (p < end && *p == ' ') {
            p++;
        }

        q = p;
        while (q < end && *q != ' ') {
            q++;
        }

        if ((size_t) (q - p) == wl && ngx_strncmp(p, want, wl) == 0) {
            return 1;
        }

        p = q;
    }

    return 0;
}


ngx_uint_t
ngx_http_apim_jwt_subscribed(const ngx_http_apim_claims_t *cl,
    const ngx_http_apim_api_t *api)
{
    size_t   il, nl, vl;
    u_char  *p, *q, *end;

    il = ngx_strlen(api->id);
    nl = ngx_strlen(api->name);
    vl = ngx_strlen(api->version);

    /* cl->apis: "\nitem\nitem\n" */
    p = cl->apis.data;
    end = p + cl->apis.len;

    while (p < end) {
        p++;
        q = ngx_strlchr(p, end, '\n');
        if (q == NULL) {
            break;
        }

        if (il && (size_t) (q - p) == il && ngx_strncmp(p, api->id, il) == 0)
        {
            return 1;
        }

        if ((size_t) (q - p) == nl + 1 + vl
            && ngx_strncmp(p, api->name, nl) == 0 && p[nl] == ':'
            && ngx_strncmp(p + nl + 1, api->version, vl) == 0)
        {
            return 1;
        }

        p = q;
    }

    return 0;
}
