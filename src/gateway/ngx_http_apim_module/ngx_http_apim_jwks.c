/*
 * ngx_http_apim_jwks.c: the keys that sign the tokens the gateway accepts.
 *
 * Our Key Manager's keys come inside the snapshot (s->jwks). Other issuers
 * (the Admin API's key managers) come in the snapshot's keyManagers with
 * the URL of their JWKS, which every worker fetches itself:
 *
 *   - ngx_http_apim_issuers_build(), called by the snapshot builder, keeps
 *     the enabled issuers in the snapshot (s->issuers: what the request
 *     path trusts) and posts a copy of them (issuer, JWKS URL, claims) to
 *     this file's background thread through a mailbox under a mutex that
 *     only the two background threads take;
 *   - the thread (ngx_http_apim_jwks_module's init_process/exit_process)
 *     fetches each JWKS with libcurl (timeouts, a size bound, no
 *     redirects), again every APIM_JWKS_REFRESH_MS, sooner after a failure,
 *     and at most every APIM_JWKS_KICK_MS when a request met an unknown kid;
 *     it publishes an immutable "ring" of parsed keys through an atomic
 *     pointer and frees a replaced ring APIM_GRACE_MS later, as the
 *     snapshot feed does;
 *   - ngx_http_apim_jwk_find() (request path, no lock, no network) finds a
 *     token's key: by its issuer in the snapshot's enabled issuers and then
 *     by kid in the ring, else by kid among our own keys.
 */

#include "ngx_http_apim_module.h"


#define APIM_JWKS_REFRESH_MS   (5 * 60 * 1000)
#define APIM_JWKS_RETRY_MS     15000
#define APIM_JWKS_KICK_MS      5000
#define APIM_JWKS_MAX_BYTES    (256 * 1024)
#define APIM_JWKS_MAX_KEYS     64
#define APIM_JWKS_TIMEOUT_MS   5000
#define APIM_JWKS_CONNECT_MS   2000


/* an enabled issuer, in snapshot memory */
typedef struct {
    const char                 *name;
    const char                 *issuer;
    const char                 *url;
    const char                 *consumer_key_claim;
    const char                 *scopes_claim;
} ngx_http_apim_issuer_t;

struct ngx_http_apim_issuers_s {
    ngx_http_apim_issuer_t     *list;
    size_t                      n;
};


/* one issuer as the thread sees it: malloc'd copies, NULL when absent */
typedef struct {
    char                       *issuer;
    char                       *url;
    char                       *name;
    char                       *consumer_key_claim;
    char                       *scopes_claim;
} ngx_http_apim_want_t;


/* published keys: immutable once published, malloc'd as one tree */
typedef struct {
    char                       *kid;
    ngx_http_apim_jwk_t         jwk;
} ngx_http_apim_ring_key_t;

typedef struct {
    ngx_http_apim_want_t        w;
    ngx_http_apim_ring_key_t   *keys;
    size_t                      nkeys;
} ngx_http_apim_ring_issuer_t;

typedef struct ngx_http_apim_ring_s  ngx_http_apim_ring_t;

struct ngx_http_apim_ring_s {
    ngx_http_apim_ring_issuer_t  *list;
    size_t                        n;
    ngx_http_apim_ring_t         *retired_next;
    ngx_msec_t                    retired_at;
};


/* what the thread knows of one issuer (thread only) */
typedef struct {
    ngx_http_apim_want_t        w;
    json_t                     *keys;       /* last good "keys" array */
    ngx_msec_t                  next;       /* next scheduled fetch */
    ngx_msec_t                  last;       /* last attempt, 0: never */
} ngx_http_apim_source_t;


/* the mailbox: what the snapshot builder wants fetched */
static pthread_mutex_t          ngx_http_apim_jwks_lock =
                                    PTHREAD_MUTEX_INITIALIZER;
static ngx_http_apim_want_t    *ngx_http_apim_jwks_posted;   /* lock */
static size_t                   ngx_http_apim_jwks_nposted;  /* lock */
static ngx_uint_t               ngx_http_apim_jwks_gen;      /* lock */

/* request path <-> thread */
static ngx_http_apim_ring_t    *ngx_http_apim_ring;          /* atomic */
static ngx_uint_t               ngx_http_apim_jwks_kick;     /* atomic */
static ngx_uint_t               ngx_http_apim_jwks_stop;     /* atomic */

/* thread only */
static ngx_http_apim_source_t  *ngx_http_apim_sources;
static size_t                   ngx_http_apim_nsources;
static ngx_http_apim_ring_t    *ngx_http_apim_ring_retired;
static pthread_t                ngx_http_apim_jwks_thread;
static ngx_uint_t               ngx_http_apim_jwks_running;


static ngx_int_t ngx_http_apim_jwks_init_process(ngx_cycle_t *cycle);
static void ngx_http_apim_jwks_exit_process(ngx_cycle_t *cycle);


static ngx_http_module_t  ngx_http_apim_jwks_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_apim_jwks_module = {
    NGX_MODULE_V1,
    &ngx_http_apim_jwks_module_ctx,        /* module context */
    NULL,                                  /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_apim_jwks_init_process,       /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_apim_jwks_exit_process,       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* -- request path -------------------------------------------------------- */

const ngx_http_apim_jwk_t *
ngx_http_apim_jwk_find(const ngx_http_apim_snap_t *s, const char *kid,
    const char *iss)
{
    size_t                        i, j, k;
    ngx_http_apim_ring_t         *ring;
    ngx_http_apim_issuer_t       *is;
    ngx_http_apim_ring_issuer_t  *ri;

    if (iss != NULL && s->issuers != NULL) {

        for (i = 0; i < s->issuers->n; i++) {
            is = &s->issuers->list[i];

            if (ngx_strcmp(is->issuer, iss) != 0) {
                continue;
            }

            ring = __atomic_load_n(&ngx_http_apim_ring, __ATOMIC_ACQUIRE);

            for (j = 0; ring != NULL && j < ring->n; j++) {
                ri = &ring->list[j];

                if (ngx_strcmp(ri->w.issuer, iss) != 0
                    || ngx_strcmp(ri->w.url, is->url) != 0)
                {
                    continue;
                }

                for (k = 0; k < ri->nkeys; k++) {
                    if (ngx_strcmp(ri->keys[k].kid, kid) == 0) {
                        return &ri->keys[k].jwk;
                    }
                }

                break;
            }

            /* a key we do not have (yet): the issuer may have rotated */
            __atomic_store_n(&ngx_http_apim_jwks_kick, 1, __ATOMIC_RELAXED);

            return NULL;
        }
    }

    return ngx_http_apim_map_get(&s->jwks, (const u_char *) kid,
                                 ngx_strlen(kid));
}


/* -- snapshot side --------------------------------------------------------- */

static void
ngx_http_apim_want_clear(ngx_http_apim_want_t *w)
{
    free(w->issuer);
    free(w->url);
    free(w->name);
    free(w->consumer_key_claim);
    free(w->scopes_claim);
    ngx_memzero(w, sizeof(ngx_http_apim_want_t));
}


static char *
ngx_http_apim_want_dup(const char *str, ngx_uint_t *failed)
{
    char  *p;

    if (str == NULL) {
        return NULL;
    }

    p = strdup(str);
    if (p == NULL) {
        *failed = 1;
    }

    return p;
}


/* dst = copies of src's strings; NGX_ERROR (dst cleared) on out of memory */
static ngx_int_t
ngx_http_apim_want_copy(ngx_http_apim_want_t *dst,
    const ngx_http_apim_want_t *src)
{
    ngx_uint_t  failed;

    failed = 0;

    dst->issuer = ngx_http_apim_want_dup(src->issuer, &failed);
    dst->url = ngx_http_apim_want_dup(src->url, &failed);
    dst->name = ngx_http_apim_want_dup(src->name, &failed);
    dst->consumer_key_claim = ngx_http_apim_want_dup(src->consumer_key_claim,
                                                     &failed);
    dst->scopes_claim = ngx_http_apim_want_dup(src->scopes_claim, &failed);

    if (failed) {
        ngx_http_apim_want_clear(dst);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_http_apim_want_streq(const char *a, const char *b)
{
    return (a == NULL && b == NULL)
           || (a != NULL && b != NULL && strcmp(a, b) == 0);
}


static ngx_uint_t
ngx_http_apim_want_same(const ngx_http_apim_want_t *a,
    const ngx_http_apim_want_t *b)
{
    return ngx_http_apim_want_streq(a->issuer, b->issuer)
           && ngx_http_apim_want_streq(a->url, b->url)
           && ngx_http_apim_want_streq(a->name, b->name)
           && ngx_http_apim_want_streq(a->consumer_key_claim,
                                       b->consumer_key_claim)
           && ngx_http_apim_want_streq(a->scopes_claim, b->scopes_claim);
}


static void
ngx_http_apim_wants_free(ngx_http_apim_want_t *w, size_t n)
{
    size_t  i;

    for (i = 0; w != NULL && i < n; i++) {
        ngx_http_apim_want_clear(&w[i]);
    }

    free(w);
}


ngx_http_apim_issuers_t *
ngx_http_apim_issuers_build(ngx_http_apim_snap_t *s, json_t *key_managers,
    ngx_log_t *log)
{
    size_t                    i, n;
    json_t                   *km;
    const char               *issuer, *url;
    ngx_http_apim_want_t     *want, *old, w;
    ngx_http_apim_issuer_t   *is;
    ngx_http_apim_issuers_t  *out;

    out = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_issuers_t));
    if (out == NULL) {
        return NULL;
    }

    n = json_array_size(key_managers);

    out->list = ngx_http_apim_alloc(s, (n + 1) * sizeof(ngx_http_apim_issuer_t));
    want = calloc(n + 1, sizeof(ngx_http_apim_want_t));

    if (out->list == NULL || want == NULL) {
        free(want);
        return NULL;
    }

    json_array_foreach(key_managers, i, km) {
        issuer = ngx_http_apim_jstr(km, "issuer");
        url = ngx_http_apim_jstr(km, "jwksUrl");

        /* ours carries its keys ("jwks"), not a URL */
        if (issuer == NULL || url == NULL
            || !json_is_true(json_object_get(km, "enabled")))
        {
            continue;
        }

        if (ngx_strncasecmp((u_char *) url, (u_char *) "http://", 7) != 0
            && ngx_strncasecmp((u_char *) url, (u_char *) "https://", 8) != 0)
        {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "apim: key manager \"%s\": JWKS URL \"%s\" is not "
                          "http(s), its tokens are refused", issuer, url);
            continue;
        }

        /* copies: the JSON is gone once the snapshot is built */
        is = &out->list[out->n];
        is->name = ngx_http_apim_strdup(s, ngx_http_apim_jstr(km, "name"));
        is->issuer = ngx_http_apim_strdup(s, issuer);
        is->url = ngx_http_apim_strdup(s, url);
        is->consumer_key_claim = ngx_http_apim_strdup(s,
                                     ngx_http_apim_jstr(km, "consumerKeyClaim"));
        is->scopes_claim = ngx_http_apim_strdup(s,
                                     ngx_http_apim_jstr(km, "scopesClaim"));

        if (is->issuer == NULL || is->url == NULL) {
            ngx_http_apim_wants_free(want, out->n);
            return NULL;
        }

        w.issuer = (char *) issuer;
        w.url = (char *) url;
        w.name = (char *) is->name;
        w.consumer_key_claim = (char *) is->consumer_key_claim;
        w.scopes_claim = (char *) is->scopes_claim;

        if (ngx_http_apim_want_copy(&want[out->n], &w) != NGX_OK) {
            ngx_http_apim_wants_free(want, out->n);
            return NULL;
        }

        out->n++;
    }

    pthread_mutex_lock(&ngx_http_apim_jwks_lock);
    old = ngx_http_apim_jwks_posted;
    n = ngx_http_apim_jwks_nposted;
    ngx_http_apim_jwks_posted = want;
    ngx_http_apim_jwks_nposted = out->n;
    ngx_http_apim_jwks_gen++;
    pthread_mutex_unlock(&ngx_http_apim_jwks_lock);

    ngx_http_apim_wants_free(old, n);

    return out;
}


/* -- keys ---------------------------------------------------------------- */

static size_t
ngx_http_apim_jwks_b64(const char *in, u_char *out, size_t max)
{
    ngx_str_t  src, dst;

    if (in == NULL) {
        return 0;
    }

    src.data = (u_char *) in;
    src.len = strlen(in);

    if (ngx_base64_decoded_length(src.len) > max) {
        return 0;
    }

    dst.data = out;

    if (ngx_decode_base64url(&dst, &src) != NGX_OK) {
        return 0;
    }

    return dst.len;
}


/*
 * A public key of a JWK: RSA (n, e) or EC P-256 (x, y); NULL for any other
 * or a malformed one. The caller frees it with EVP_PKEY_free().
 */
EVP_PKEY *
ngx_http_apim_jwk_pkey(json_t *jk)
{
    u_char           buf[1024], pub[65];
    size_t           len;
    BIGNUM          *n, *e;
    EVP_PKEY        *pkey;
    const char      *kty, *crv;
    OSSL_PARAM      *params;
    EVP_PKEY_CTX    *ctx;
    OSSL_PARAM_BLD  *bld;

    kty = ngx_http_apim_jstr(jk, "kty");
    if (kty == NULL) {
        return NULL;
    }

    pkey = NULL;
    params = NULL;
    ctx = NULL;
    n = NULL;
    e = NULL;

    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL) {
        return NULL;
    }

    if (strcmp(kty, "RSA") == 0) {
        len = ngx_http_apim_jwks_b64(ngx_http_apim_jstr(jk, "n"), buf,
                                     sizeof(buf));
        n = len ? BN_bin2bn(buf, len, NULL) : NULL;
        len = ngx_http_apim_jwks_b64(ngx_http_apim_jstr(jk, "e"), buf,
                                     sizeof(buf));
        e = len ? BN_bin2bn(buf, len, NULL) : NULL;

        if (n == NULL || e == NULL || BN_num_bits(n) < 2048
            || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n)
            || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
        {
            goto out;
        }

        ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);

    } else if (strcmp(kty, "EC") == 0) {
        crv = ngx_http_apim_jstr(jk, "crv");
        if (crv == NULL || strcmp(crv, "P-256") != 0) {
            goto out;
        }

        pub[0] = 0x04;

        if (ngx_http_apim_jwks_b64(ngx_http_apim_jstr(jk, "x"), buf,
                                   sizeof(buf)) != 32)
        {
            goto out;
        }
        ngx_memcpy(pub + 1, buf, 32);

        if (ngx_http_apim_jwks_b64(ngx_http_apim_jstr(jk, "y"), buf,
                                   sizeof(buf)) != 32)
        {
            goto out;
        }
        ngx_memcpy(pub + 33, buf, 32);

        if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                             "prime256v1", 0)
            || !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY,
                                                 pub, sizeof(pub)))
        {
            goto out;
        }

        ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);

    } else {
        goto out;
    }

    params = OSSL_PARAM_BLD_to_param(bld);

    if (ctx == NULL || params == NULL
        || EVP_PKEY_fromdata_init(ctx) <= 0
        || EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
    {
        pkey = NULL;
    }

out:

    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    BN_free(n);
    BN_free(e);

    return pkey;
}


static void
ngx_http_apim_ring_free(ngx_http_apim_ring_t *ring)
{
    size_t  i, j;

    if (ring == NULL) {
        return;
    }

    for (i = 0; i < ring->n; i++) {
        for (j = 0; j < ring->list[i].nkeys; j++) {
            EVP_PKEY_free(ring->list[i].keys[j].jwk.pkey);
            free(ring->list[i].keys[j].kid);
        }
        free(ring->list[i].keys);
        ngx_http_apim_want_clear(&ring->list[i].w);
    }

    free(ring->list);
    free(ring);
}


/* a ring of every source's last good keys; NULL on out of memory */
static ngx_http_apim_ring_t *
ngx_http_apim_ring_build(ngx_log_t *log)
{
    size_t                        i, k;
    json_t                       *jk;
    const char                   *kid, *use;
    ngx_http_apim_ring_t         *ring;
    ngx_http_apim_source_t       *src;
    ngx_http_apim_ring_key_t     *rk;
    ngx_http_apim_ring_issuer_t  *ri;

    ring = calloc(1, sizeof(ngx_http_apim_ring_t));
    if (ring == NULL) {
        return NULL;
    }

    ring->list = calloc(ngx_http_apim_nsources + 1,
                        sizeof(ngx_http_apim_ring_issuer_t));
    if (ring->list == NULL) {
        free(ring);
        return NULL;
    }

    for (i = 0; i < ngx_http_apim_nsources; i++) {
        src = &ngx_http_apim_sources[i];
        ri = &ring->list[ring->n++];

        ri->keys = calloc(json_array_size(src->keys) + 1,
                          sizeof(ngx_http_apim_ring_key_t));

        if (ri->keys == NULL || ngx_http_apim_want_copy(&ri->w, &src->w)
                                != NGX_OK)
        {
            goto failed;
        }

        json_array_foreach(src->keys, k, jk) {
            kid = ngx_http_apim_jstr(jk, "kid");
            use = ngx_http_apim_jstr(jk, "use");

            if (kid == NULL || (use != NULL && strcmp(use, "sig") != 0)) {
                continue;
            }

            rk = &ri->keys[ri->nkeys];
            rk->jwk.pkey = ngx_http_apim_jwk_pkey(jk);

            if (rk->jwk.pkey == NULL) {
                ngx_log_error(NGX_LOG_WARN, log, 0,
                              "apim: unusable JWK \"%s\" of issuer \"%s\" "
                              "ignored", kid, src->w.issuer);
                continue;
            }

            rk->kid = strdup(kid);
            if (rk->kid == NULL) {
                EVP_PKEY_free(rk->jwk.pkey);
                goto failed;
            }

            rk->jwk.issuer = ri->w.issuer;
            rk->jwk.key_manager = ri->w.name;
            rk->jwk.consumer_key_claim = ri->w.consumer_key_claim;
            rk->jwk.scopes_claim = ri->w.scopes_claim;
            ri->nkeys++;
        }
    }

    return ring;

failed:

    ngx_http_apim_ring_free(ring);

    return NULL;
}


static void
ngx_http_apim_ring_publish(ngx_log_t *log)
{
    ngx_http_apim_ring_t  *fresh, *old;

    fresh = ngx_http_apim_ring_build(log);
    if (fresh == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "apim: out of memory building the issuers' keys");
        return;
    }

    old = __atomic_exchange_n(&ngx_http_apim_ring, fresh, __ATOMIC_ACQ_REL);

    if (old != NULL) {
        old->retired_at = ngx_http_apim_now_ms();
        old->retired_next = ngx_http_apim_ring_retired;
        ngx_http_apim_ring_retired = old;
    }
}


/* frees the rings replaced APIM_GRACE_MS ago, or all of them */
static void
ngx_http_apim_ring_reap(ngx_uint_t all)
{
    ngx_msec_t             now;
    ngx_http_apim_ring_t  *r, **pp;

    now = ngx_http_apim_now_ms();
    pp = &ngx_http_apim_ring_retired;

    while (*pp) {
        r = *pp;

        if (all || now - r->retired_at >= APIM_GRACE_MS) {
            *pp = r->retired_next;
            ngx_http_apim_ring_free(r);
            continue;
        }

        pp = &r->retired_next;
    }
}


/* -- fetching -------------------------------------------------------------- */

typedef struct {
    u_char                     *data;
    size_t                      len;
    ngx_uint_t                  too_big;
} ngx_http_apim_jwks_buf_t;


static size_t
ngx_http_apim_jwks_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
    u_char                    *p;
    size_t                     n;
    ngx_http_apim_jwks_buf_t  *b = arg;

    n = size * nmemb;

    if (b->len + n > APIM_JWKS_MAX_BYTES) {
        b->too_big = 1;
        return 0;
    }

    p = realloc(b->data, b->len + n + 1);
    if (p == NULL) {
        return 0;
    }

    ngx_memcpy(p + b->len, ptr, n);
    b->data = p;
    b->len += n;
    b->data[b->len] = '\0';

    return n;
}


static int
ngx_http_apim_jwks_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
    curl_off_t ultotal, curl_off_t ulnow)
{
    /* a non-zero answer aborts the transfer: the worker is exiting */
    return (int) __atomic_load_n(&ngx_http_apim_jwks_stop, __ATOMIC_ACQUIRE);
}


/*
 * Fetches src's JWKS; on success replaces src->keys and returns NGX_OK.
 * Otherwise logs why and keeps the keys it had.
 */
static ngx_int_t
ngx_http_apim_jwks_fetch(CURL *curl, ngx_http_apim_source_t *src,
    ngx_log_t *log)
{
    long                       status;
    json_t                    *doc, *keys;
    CURLcode                   rc;
    json_error_t               err;
    ngx_http_apim_jwks_buf_t   b;

    ngx_memzero(&b, sizeof(b));

    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, src->w.url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long) APIM_JWKS_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                     (long) APIM_JWKS_CONNECT_MS);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS,
                     (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE,
                     (curl_off_t) APIM_JWKS_MAX_BYTES);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, ngx_http_apim_jwks_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION,
                     ngx_http_apim_jwks_progress);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "apim-gateway");

    rc = curl_easy_perform(curl);

    status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);

    if (rc != CURLE_OK) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "apim: JWKS of issuer \"%s\" from \"%s\": %s",
                      src->w.issuer, src->w.url,
                      (b.too_big || rc == CURLE_FILESIZE_EXCEEDED)
                          ? "larger than 256 KB" : curl_easy_strerror(rc));
        free(b.data);
        return NGX_ERROR;
    }

    if (status != 200) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "apim: JWKS of issuer \"%s\" from \"%s\": HTTP %l",
                      src->w.issuer, src->w.url, status);
        free(b.data);
        return NGX_ERROR;
    }

    doc = json_loadb((char *) b.data, b.len, 0, &err);
    free(b.data);

    keys = json_object_get(doc, "keys");

    if (!json_is_array(keys) || json_array_size(keys) > APIM_JWKS_MAX_KEYS) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "apim: JWKS of issuer \"%s\" from \"%s\" is not a JSON "
                      "key set of at most %d keys", src->w.issuer, src->w.url,
                      APIM_JWKS_MAX_KEYS);
        json_decref(doc);
        return NGX_ERROR;
    }

    json_decref(src->keys);
    src->keys = json_incref(keys);
    json_decref(doc);

    return NGX_OK;
}


/* -- the thread ------------------------------------------------------------ */

static void
ngx_http_apim_sources_free(ngx_http_apim_source_t *s, size_t n)
{
    size_t  i;

    for (i = 0; s != NULL && i < n; i++) {
        ngx_http_apim_want_clear(&s[i].w);
        json_decref(s[i].keys);
    }

    free(s);
}


/*
 * Takes the mailbox's list when it changed since gen: keeps what the
 * thread knew of an unchanged (issuer, URL) and schedules the new ones now.
 * 1 when the sources changed.
 */
static ngx_uint_t
ngx_http_apim_sources_take(ngx_uint_t *gen, ngx_log_t *log)
{
    size_t                   i, j, n;
    ngx_msec_t               now;
    ngx_uint_t               changed;
    ngx_http_apim_want_t    *want;
    ngx_http_apim_source_t  *fresh, *old;

    pthread_mutex_lock(&ngx_http_apim_jwks_lock);

    if (ngx_http_apim_jwks_gen == *gen) {
        pthread_mutex_unlock(&ngx_http_apim_jwks_lock);
        return 0;
    }

    n = ngx_http_apim_jwks_nposted;
    fresh = calloc(n + 1, sizeof(ngx_http_apim_source_t));
    want = ngx_http_apim_jwks_posted;

    for (i = 0; fresh != NULL && i < n; i++) {
        if (ngx_http_apim_want_copy(&fresh[i].w, &want[i]) != NGX_OK) {
            ngx_http_apim_sources_free(fresh, i);
            fresh = NULL;
        }
    }

    if (fresh != NULL) {
        *gen = ngx_http_apim_jwks_gen;
    }

    pthread_mutex_unlock(&ngx_http_apim_jwks_lock);

    if (fresh == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "apim: out of memory taking the issuers' list");
        return 0;
    }

    now = ngx_http_apim_now_ms();
    old = ngx_http_apim_sources;
    changed = n != ngx_http_apim_nsources;

    for (i = 0; i < n; i++) {
        fresh[i].next = now;

        /* an unchanged (issuer, URL) keeps its keys and its schedule */
        for (j = 0; j < ngx_http_apim_nsources; j++) {
            if (old[j].w.issuer != NULL
                && strcmp(old[j].w.issuer, fresh[i].w.issuer) == 0
                && strcmp(old[j].w.url, fresh[i].w.url) == 0)
            {
                fresh[i].keys = old[j].keys;
                fresh[i].next = old[j].next;
                fresh[i].last = old[j].last;
                old[j].keys = NULL;
                break;
            }
        }

        if (j == ngx_http_apim_nsources
            || !ngx_http_apim_want_same(&old[j].w, &fresh[i].w))
        {
            changed = 1;
        }
    }

    ngx_http_apim_sources_free(old, ngx_http_apim_nsources);
    ngx_http_apim_sources = fresh;
    ngx_http_apim_nsources = n;

    return changed;
}


static void *
ngx_http_apim_jwks_main(void *data)
{
    size_t                   i;
    CURL                    *curl;
    ngx_log_t               *log = data;
    ngx_msec_t               now;
    ngx_uint_t               gen, changed, kick, held;
    struct timespec          ts;
    ngx_http_apim_source_t  *src;

    curl = curl_easy_init();
    if (curl == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "apim: curl_easy_init() failed: other issuers' tokens "
                      "are refused");
        return NULL;
    }

    gen = 0;
    kick = 0;

    while (!__atomic_load_n(&ngx_http_apim_jwks_stop, __ATOMIC_ACQUIRE)) {

        changed = ngx_http_apim_sources_take(&gen, log);

        /* a kick waits, if need be, until the sources may be asked again */
        kick |= __atomic_exchange_n(&ngx_http_apim_jwks_kick, 0,
                                    __ATOMIC_RELAXED);
        held = 0;
        now = ngx_http_apim_now_ms();

        for (i = 0; i < ngx_http_apim_nsources; i++) {
            src = &ngx_http_apim_sources[i];

            if ((ngx_msec_int_t) (now - src->next) < 0) {
                if (!kick) {
                    continue;
                }

                if (src->last != 0 && now - src->last < APIM_JWKS_KICK_MS) {
                    held = 1;
                    continue;
                }
            }

            src->last = now;

            if (ngx_http_apim_jwks_fetch(curl, src, log) == NGX_OK) {
                src->next = now + APIM_JWKS_REFRESH_MS;
                changed = 1;

            } else {
                src->next = now + APIM_JWKS_RETRY_MS;
            }

            if (__atomic_load_n(&ngx_http_apim_jwks_stop, __ATOMIC_ACQUIRE)) {
                break;
            }

            now = ngx_http_apim_now_ms();
        }

        if (!held) {
            kick = 0;
        }

        if (changed) {
            ngx_http_apim_ring_publish(log);
        }

        ngx_http_apim_ring_reap(0);

        ts.tv_sec = 0;
        ts.tv_nsec = APIM_POLL_MS * 1000000L;
        nanosleep(&ts, NULL);
    }

    curl_easy_cleanup(curl);

    return NULL;
}


static ngx_int_t
ngx_http_apim_jwks_init_process(ngx_cycle_t *cycle)
{
    int                         err;
    ngx_http_apim_main_conf_t  *amcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    amcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_apim_module);
    if (amcf == NULL
        || (amcf->control_plane_url.len == 0 && amcf->snapshot_file.len == 0))
    {
        return NGX_OK;
    }

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "apim: curl_global_init() failed");
        return NGX_ERROR;
    }

    __atomic_store_n(&ngx_http_apim_jwks_stop, 0, __ATOMIC_RELEASE);

    err = pthread_create(&ngx_http_apim_jwks_thread, NULL,
                         ngx_http_apim_jwks_main, cycle->log);
    if (err != 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, err,
                      "apim: pthread_create() failed");
        curl_global_cleanup();
        return NGX_ERROR;
    }

    ngx_http_apim_jwks_running = 1;

    return NGX_OK;
}


static void
ngx_http_apim_jwks_exit_process(ngx_cycle_t *cycle)
{
    if (!ngx_http_apim_jwks_running) {
        return;
    }

    __atomic_store_n(&ngx_http_apim_jwks_stop, 1, __ATOMIC_RELEASE);
    pthread_join(ngx_http_apim_jwks_thread, NULL);
    ngx_http_apim_jwks_running = 0;

    /* no request runs any more: everything can go */
    ngx_http_apim_ring_reap(1);
    ngx_http_apim_ring_free(ngx_http_apim_ring);
    ngx_http_apim_ring = NULL;

    ngx_http_apim_sources_free(ngx_http_apim_sources, ngx_http_apim_nsources);
    ngx_http_apim_sources = NULL;
    ngx_http_apim_nsources = 0;

    pthread_mutex_lock(&ngx_http_apim_jwks_lock);
    ngx_http_apim_wants_free(ngx_http_apim_jwks_posted,
                             ngx_http_apim_jwks_nposted);
    ngx_http_apim_jwks_posted = NULL;
    ngx_http_apim_jwks_nposted = 0;
    pthread_mutex_unlock(&ngx_http_apim_jwks_lock);

    curl_global_cleanup();
}
