/*
 * ngx_http_apim_backend_jwt.c: the backend JWT (X-JWT-Assertion) and the
 * JWKS that lets backends verify it.
 *
 *   apim_backend_jwt on|off;          (http) add X-JWT-Assertion
 *   apim_backend_jwt_key <pem>;       (http) RSA private key that signs it
 *   apim_jwks;                        (location) serve the key's public
 *                                     half: {"keys":[{kty,kid,n,e...}]}
 *
 * The JWT follows the reference gateway's: iss "wso2.org/products/am",
 * iat, exp (APIM_BJWT_TTL after iat, never after the caller's token's
 * exp), the claims under http://wso2.org/claims/ of
 * the API, application and subscription, and the caller's token's other
 * claims (not iss sub aud exp nbf iat jti application tierInfo
 * subscribedAPIs). RS256; the header's kid is the key's RFC 7638
 * thumbprint. The master reads the key (as root) before the workers start.
 *
 * Signing costs far more than the rest of the request, so each worker
 * keeps the signed JWTs in a direct-mapped table (APIM_BCACHE_SIZE), keyed
 * by the SHA-256 of the caller's token hash and of every claim but iat: a
 * change in the snapshot (an application renamed, a new tier) makes a new
 * JWT on the next call. An entry is used until APIM_BJWT_MARGIN seconds
 * before it expires.
 */

#include "ngx_http_apim_module.h"

#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>


#define APIM_BCACHE_SIZE   256               /* power of two */
#define APIM_BJWT_MAX      4096
#define APIM_BJWT_TTL      900               /* the reference's default */
#define APIM_BJWT_MARGIN   30
#define APIM_CLAIM_URI     "http://wso2.org/claims/"


#define APIM_BJWT_API_ID   64

/*
 * A backend JWT depends on the caller's verified token, the API and the
 * snapshot's data only (application, subscription, tiers): it is cached
 * under (the token cache's verification number, the snapshot's number,
 * the API id), compared in full. A request that uses an entry points its
 * header at it (no copy) and pins it until the request ends (a cleanup of
 * r->pool): a pinned entry is not replaced, so the header stays intact
 * until nginx has copied it into the request to the backend, however
 * long the request waits for its body.
 */
typedef struct {
    uint64_t                    gen;
    uint64_t                    snap_gen;
    size_t                      api_id_len;
    u_char                      api_id[APIM_BJWT_API_ID];
    time_t                      exp;
    ngx_uint_t                  used;
    ngx_uint_t                  pins;       /* requests using jwt */
    size_t                      len;
    u_char                      jwt[APIM_BJWT_MAX];
} ngx_http_apim_bcache_t;


static ngx_http_apim_bcache_t  ngx_http_apim_bcache[APIM_BCACHE_SIZE];


static void
ngx_http_apim_bcache_unpin(void *data)
{
    ngx_http_apim_bcache_t  *e = data;

    e->pins--;
}


static void
ngx_http_apim_backend_jwt_cleanup(void *data)
{
    EVP_PKEY_free(data);
}


static ngx_int_t
ngx_http_apim_b64url_bn(ngx_conf_t *cf, EVP_PKEY *pkey, const char *name,
    ngx_str_t *out)
{
    int         n;
    BIGNUM     *bn;
    ngx_str_t   raw;

    bn = NULL;

    if (EVP_PKEY_get_bn_param(pkey, name, &bn) != 1) {
        return NGX_ERROR;
    }

    n = BN_num_bytes(bn);
    raw.data = ngx_pnalloc(cf->pool, n);
    out->data = ngx_pnalloc(cf->pool, ngx_base64_encoded_length(n));

    if (raw.data == NULL || out->data == NULL) {
        BN_free(bn);
        return NGX_ERROR;
    }

    raw.len = BN_bn2bin(bn, raw.data);
    BN_free(bn);

    ngx_encode_base64url(out, &raw);

    return NGX_OK;
}


ngx_int_t
ngx_http_apim_backend_jwt_init(ngx_conf_t *cf, ngx_http_apim_main_conf_t *amcf)
{
    u_char              *p, hash[32];
    BIO                 *bio;
    size_t               len;
    EVP_PKEY            *pkey;
    ngx_str_t            n, e, raw;
    ngx_pool_cleanup_t  *cln;

    if (amcf->backend_jwt_key.len == 0) {
        if (amcf->backend_jwt == 1) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"apim_backend_jwt on\" needs "
                               "\"apim_backend_jwt_key\"");
            return NGX_ERROR;
        }
        return NGX_OK;
    }

    if (ngx_conf_full_name(cf->cycle, &amcf->backend_jwt_key, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    bio = BIO_new_file((char *) amcf->backend_jwt_key.data, "r");
    if (bio == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "apim_backend_jwt_key: cannot open \"%V\"",
                           &amcf->backend_jwt_key);
        return NGX_ERROR;
    }

    pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);

    if (pkey == NULL || EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) {
        EVP_PKEY_free(pkey);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "apim_backend_jwt_key: \"%V\" is not a PEM RSA "
                           "private key", &amcf->backend_jwt_key);
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        EVP_PKEY_free(pkey);
        return NGX_ERROR;
    }

    cln->handler = ngx_http_apim_backend_jwt_cleanup;
    cln->data = pkey;
    amcf->backend_pkey = pkey;

    if (ngx_http_apim_b64url_bn(cf, pkey, OSSL_PKEY_PARAM_RSA_N, &n) != NGX_OK
        || ngx_http_apim_b64url_bn(cf, pkey, OSSL_PKEY_PARAM_RSA_E, &e)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* kid: the RFC 7638 thumbprint, SHA-256 of the required members */
    len = sizeof("{\"e\":\"\",\"kty\":\"RSA\",\"n\":\"\"}") - 1 + e.len + n.len;
    raw.data = ngx_pnalloc(cf->pool, len);
    if (raw.data == NULL) {
        return NGX_ERROR;
    }

    raw.len = ngx_sprintf(raw.data, "{\"e\":\"%V\",\"kty\":\"RSA\",\"n\":\"%V\"}",
                          &e, &n) - raw.data;

    if (ngx_http_apim_sha256_digest(raw.data, raw.len, hash) != NGX_OK) {
        return NGX_ERROR;
    }

    raw.data = hash;
    raw.len = 32;
    amcf->backend_kid.data = ngx_pnalloc(cf->pool,
                                         ngx_base64_encoded_length(32));
    if (amcf->backend_kid.data == NULL) {
        return NGX_ERROR;
    }

    ngx_encode_base64url(&amcf->backend_kid, &raw);

    len = sizeof("{\"keys\":[{\"kty\":\"RSA\",\"use\":\"sig\",\"alg\":\"RS256\","
                 "\"kid\":\"\",\"n\":\"\",\"e\":\"\"}]}") - 1
          + amcf->backend_kid.len + n.len + e.len;

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    amcf->backend_jwks.data = p;
    amcf->backend_jwks.len = ngx_sprintf(p,
                                 "{\"keys\":[{\"kty\":\"RSA\",\"use\":\"sig\","
                                 "\"alg\":\"RS256\",\"kid\":\"%V\","
                                 "\"n\":\"%V\",\"e\":\"%V\"}]}",
                                 &amcf->backend_kid, &n, &e) - p;

    if (amcf->backend_jwt == NGX_CONF_UNSET) {
        amcf->backend_jwt = 0;
    }

    return NGX_OK;
}


/* "name":"value" with value escaped, after a comma unless first */
static u_char *
ngx_http_apim_claim(u_char *p, const char *name, ngx_str_t *value)
{
    *p++ = ',';
    *p++ = '"';
    p = ngx_cpymem(p, APIM_CLAIM_URI, sizeof(APIM_CLAIM_URI) - 1);
    p = ngx_cpymem(p, name, ngx_strlen(name));
    *p++ = '"';
    *p++ = ':';
    *p++ = '"';
    p = (u_char *) ngx_escape_json(p, value->data, value->len);
    *p++ = '"';

    return p;
}


static ngx_int_t
ngx_http_apim_sign(ngx_http_request_t *r, ngx_http_apim_main_conf_t *amcf,
    ngx_str_t *payload, ngx_str_t *jwt)
{
    int          ok;
    u_char      *p, *sig;
    size_t       siglen;
    ngx_str_t    hdr, src, dst;
    EVP_MD_CTX  *md;

    hdr.len = sizeof("{\"typ\":\"JWT\",\"alg\":\"RS256\",\"kid\":\"\"}") - 1
              + amcf->backend_kid.len;
    hdr.data = ngx_pnalloc(r->pool, hdr.len);
    siglen = EVP_PKEY_get_size(amcf->backend_pkey);
    sig = ngx_pnalloc(r->pool, siglen);

    jwt->data = ngx_pnalloc(r->pool, ngx_base64_encoded_length(hdr.len)
                                     + ngx_base64_encoded_length(payload->len)
                                     + ngx_base64_encoded_length(siglen) + 2);

    if (hdr.data == NULL || sig == NULL || jwt->data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(hdr.data, "{\"typ\":\"JWT\",\"alg\":\"RS256\",\"kid\":\"%V\"}",
                &amcf->backend_kid);

    p = jwt->data;

    dst.data = p;
    ngx_encode_base64url(&dst, &hdr);
    p += dst.len;
    *p++ = '.';

    dst.data = p;
    ngx_encode_base64url(&dst, payload);
    p += dst.len;

    md = EVP_MD_CTX_new();

    ok = md != NULL
         && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL,
                               amcf->backend_pkey) == 1
         && EVP_DigestSign(md, sig, &siglen, jwt->data, p - jwt->data) == 1;

    EVP_MD_CTX_free(md);

    if (!ok) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "apim: signing the backend JWT failed");
        return NGX_ERROR;
    }

    *p++ = '.';

    src.data = sig;
    src.len = siglen;
    dst.data = p;
    ngx_encode_base64url(&dst, &src);
    p += dst.len;

    jwt->len = p - jwt->data;

    return NGX_OK;
}


ngx_int_t
ngx_http_apim_backend_jwt_set(ngx_http_request_t *r, ngx_http_apim_ctx_t *ctx,
    const ngx_http_apim_claims_t *cl, uint64_t gen)
{
    u_char                     *p, *v;
    size_t                      len, vl;
    time_t                      now, exp;
    ngx_str_t                   body, payload, jwt, apictx, usertype, tenant;
    ngx_table_elt_t            *h;
    ngx_pool_cleanup_t         *cln;
    ngx_http_apim_bcache_t     *e;
    ngx_http_apim_main_conf_t  *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_apim_module);

    if (amcf->backend_jwt != 1 || amcf->backend_pkey == NULL) {
        return NGX_OK;
    }

    now = ngx_time();
    e = NULL;

    if (cl->gen != 0 && ctx->api_id.len <= APIM_BJWT_API_ID) {
        e = &ngx_http_apim_bcache[(cl->gen * 0x9e3779b97f4a7c15ULL
                                   ^ ngx_http_apim_hash64(ctx->api_id.data,
                                                          ctx->api_id.len))
                                  & (APIM_BCACHE_SIZE - 1)];

        if (e->used && e->gen == cl->gen && e->snap_gen == gen
            && e->api_id_len == ctx->api_id.len
            && ngx_memcmp(e->api_id, ctx->api_id.data, ctx->api_id.len) == 0
            && e->exp - APIM_BJWT_MARGIN > now)
        {
            jwt.data = e->jwt;
            jwt.len = e->len;
            goto header;
        }
    }

    /* apicontext: the context with the version, as the reference has it */
    v = ngx_strlcasestrn(ctx->api_context.data,
                         ctx->api_context.data + ctx->api_context.len,
                         (u_char *) "{version}", sizeof("{version}") - 2);
    vl = ctx->api_version.len;

    apictx.data = ngx_pnalloc(r->pool, ctx->api_context.len + 1 + vl);
    if (apictx.data == NULL) {
        return NGX_ERROR;
    }

    if (v != NULL) {
        p = ngx_cpymem(apictx.data, ctx->api_context.data,
                       v - ctx->api_context.data);
        p = ngx_cpymem(p, ctx->api_version.data, vl);
        p = ngx_cpymem(p, v + 9, ctx->api_context.data + ctx->api_context.len
                                 - v - 9);

    } else {
        p = ngx_cpymem(apictx.data, ctx->api_context.data,
                       ctx->api_context.len);
        *p++ = '/';
        p = ngx_cpymem(p, ctx->api_version.data, vl);
    }

    apictx.len = p - apictx.data;

    if (cl->aut.len) {
        usertype = cl->aut;

    } else {
        ngx_str_set(&usertype, "APPLICATION");
    }

    ngx_str_set(&tenant, "-1234");

    /* every claim but iat and exp */
    len = sizeof("\"iss\":\"wso2.org/products/am\"") - 1 + cl->extra.len + 1;

#define APIM_CLAIM_LEN(name, s)                                              \
    (sizeof(",\"" APIM_CLAIM_URI name "\":\"\"") - 1 + (s).len               \
     + ngx_escape_json(NULL, (s).data, (s).len))

    len += APIM_CLAIM_LEN("subscriber", ctx->app_owner)
           + APIM_CLAIM_LEN("applicationid", ctx->app_id)
           + APIM_CLAIM_LEN("applicationname", ctx->app_name)
           + APIM_CLAIM_LEN("applicationtier", ctx->app_tier)
           + APIM_CLAIM_LEN("apiname", ctx->api_name)
           + APIM_CLAIM_LEN("apicontext", apictx)
           + APIM_CLAIM_LEN("version", ctx->api_version)
           + APIM_CLAIM_LEN("tier", ctx->subscription_tier)
           + APIM_CLAIM_LEN("keytype", ctx->key_type)
           + APIM_CLAIM_LEN("usertype", usertype)
           + APIM_CLAIM_LEN("enduser", ctx->user)
           + APIM_CLAIM_LEN("enduserTenantId", tenant)
           + APIM_CLAIM_LEN("applicationUUId", ctx->app_id);

#undef APIM_CLAIM_LEN

    body.data = ngx_pnalloc(r->pool, len);
    if (body.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(body.data, "\"iss\":\"wso2.org/products/am\"",
                   sizeof("\"iss\":\"wso2.org/products/am\"") - 1);
    p = ngx_http_apim_claim(p, "subscriber", &ctx->app_owner);
    p = ngx_http_apim_claim(p, "applicationid", &ctx->app_id);
    p = ngx_http_apim_claim(p, "applicationname", &ctx->app_name);
    p = ngx_http_apim_claim(p, "applicationtier", &ctx->app_tier);
    p = ngx_http_apim_claim(p, "apiname", &ctx->api_name);
    p = ngx_http_apim_claim(p, "apicontext", &apictx);
    p = ngx_http_apim_claim(p, "version", &ctx->api_version);
    p = ngx_http_apim_claim(p, "tier", &ctx->subscription_tier);
    p = ngx_http_apim_claim(p, "keytype", &ctx->key_type);
    p = ngx_http_apim_claim(p, "usertype", &usertype);
    p = ngx_http_apim_claim(p, "enduser", &ctx->user);
    p = ngx_http_apim_claim(p, "enduserTenantId", &tenant);
    p = ngx_http_apim_claim(p, "applicationUUId", &ctx->app_id);

    if (cl->extra.len) {
        *p++ = ',';
        p = ngx_cpymem(p, cl->extra.data, cl->extra.len);
    }

    body.len = p - body.data;

    exp = ngx_min(now + APIM_BJWT_TTL, cl->exp);

    payload.len = sizeof("{\"iat\":,\"exp\":,}") - 1 + 2 * NGX_TIME_T_LEN
                  + body.len;
    payload.data = ngx_pnalloc(r->pool, payload.len);
    if (payload.data == NULL) {
        return NGX_ERROR;
    }

    payload.len = ngx_sprintf(payload.data, "{\"iat\":%T,\"exp\":%T,%V}",
                              now, exp, &body)
                  - payload.data;

    if (ngx_http_apim_sign(r, amcf, &payload, &jwt) != NGX_OK) {
        return NGX_ERROR;
    }

    if (e != NULL && e->pins == 0) {
        e->used = 0;

        if (jwt.len <= APIM_BJWT_MAX) {
            e->gen = cl->gen;
            e->snap_gen = gen;
            e->api_id_len = ctx->api_id.len;
            ngx_memcpy(e->api_id, ctx->api_id.data, ctx->api_id.len);
            ngx_memcpy(e->jwt, jwt.data, jwt.len);
            e->len = jwt.len;
            e->exp = exp;
            e->used = 1;
        }
    }

header:

    h = ngx_list_push(&r->headers_in.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    if (e != NULL && jwt.data == e->jwt) {
        /* the cached one (a signed one is in r->pool): pinned until the
         * request ends, so that no other request replaces it */
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_ERROR;
        }

        cln->handler = ngx_http_apim_bcache_unpin;
        cln->data = e;
        e->pins++;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "X-JWT-Assertion");
    h->lowcase_key = (u_char *) "x-jwt-assertion";
    h->value.data = jwt.data;
    h->value.len = jwt.len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_apim_jwks_handler(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_buf_t                  *b;
    ngx_chain_t                 out;
    ngx_http_apim_main_conf_t  *amcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    amcf = ngx_http_get_module_main_conf(r, ngx_http_apim_module);

    if (amcf->backend_jwks.len == 0) {
        return NGX_HTTP_NOT_FOUND;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = amcf->backend_jwks.len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    if (r->method == NGX_HTTP_HEAD) {
        return ngx_http_send_header(r);
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = amcf->backend_jwks.data;
    b->last = amcf->backend_jwks.data + amcf->backend_jwks.len;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, &out);
}


char *
ngx_http_apim_jwks_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_apim_loc_conf_t  *alcf;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_apim_jwks_handler;

    /* the JWKS is public: no API matching here, whatever the server says */
    alcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_apim_module);
    alcf->enable = 0;

    return NGX_CONF_OK;
}
