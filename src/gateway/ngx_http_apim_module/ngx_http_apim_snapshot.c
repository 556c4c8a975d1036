/*
 * ngx_http_apim_snapshot.c: builds the immutable gateway data (APIs,
 * applications, key mappings, subscriptions, revoked tokens, keys) from
 * the snapshot JSON, and frees it.
 */

#include "ngx_http_apim_module.h"


/* -- memory and maps (background thread side) -------------------------- */

void *
ngx_http_apim_alloc(ngx_http_apim_snap_t *s, size_t size)
{
    ngx_http_apim_mem_t  *m;

    /* 16 bytes of header keep the block aligned for any type */
    m = calloc(1, 16 + size);
    if (m == NULL) {
        return NULL;
    }

    m->next = s->mem;
    s->mem = m;

    return (u_char *) m + 16;
}


void *
ngx_http_apim_strdup(ngx_http_apim_snap_t *s, const char *str)
{
    size_t   len;
    char    *p;

    if (str == NULL) {
        return NULL;
    }

    len = strlen(str);

    p = ngx_http_apim_alloc(s, len + 1);
    if (p != NULL) {
        memcpy(p, str, len + 1);
    }

    return p;
}


static char *
ngx_http_apim_strcat3(ngx_http_apim_snap_t *s, const char *a, const char *b,
    const char *c)
{
    size_t   la, lb, lc;
    char    *p;

    la = strlen(a);
    lb = strlen(b);
    lc = strlen(c);

    p = ngx_http_apim_alloc(s, la + lb + lc + 1);
    if (p == NULL) {
        return NULL;
    }

    memcpy(p, a, la);
    memcpy(p + la, b, lb);
    memcpy(p + la + lb, c, lc);
    p[la + lb + lc] = '\0';

    return p;
}


static uint64_t
ngx_http_apim_hash(const char *k, size_t len)
{
    uint64_t  h;
    size_t    i;

    h = 1469598103934665603ULL;

    for (i = 0; i < len; i++) {
        h ^= (u_char) k[i];
        h *= 1099511628211ULL;
    }

    return h;
}


static ngx_int_t
ngx_http_apim_map_init(ngx_http_apim_snap_t *s, ngx_http_apim_map_t *m,
    size_t n)
{
    size_t  cap;

    cap = 8;
    while (cap < n * 2 + 2) {
        cap <<= 1;
    }

    m->slots = ngx_http_apim_alloc(s, cap * sizeof(ngx_http_apim_slot_t));
    if (m->slots == NULL) {
        return NGX_ERROR;
    }

    m->cap = cap;

    return NGX_OK;
}


/* first insert of a key wins */
static void
ngx_http_apim_map_put(ngx_http_apim_map_t *m, const char *key, void *value)
{
    size_t   len, i;

    len = strlen(key);
    i = ngx_http_apim_hash(key, len) & (m->cap - 1);

    while (m->slots[i].key) {
        if (m->slots[i].len == len && memcmp(m->slots[i].key, key, len) == 0) {
            return;
        }
        i = (i + 1) & (m->cap - 1);
    }

    m->slots[i].key = key;
    m->slots[i].len = len;
    m->slots[i].value = value;
}


void *
ngx_http_apim_map_get(const ngx_http_apim_map_t *m, const u_char *key,
    size_t len)
{
    size_t  i;

    if (m->cap == 0) {
        return NULL;
    }

    i = ngx_http_apim_hash((const char *) key, len) & (m->cap - 1);

    while (m->slots[i].key) {
        if (m->slots[i].len == len && memcmp(m->slots[i].key, key, len) == 0) {
            return m->slots[i].value;
        }
        i = (i + 1) & (m->cap - 1);
    }

    return NULL;
}


/* -- snapshot loading ---------------------------------------------------- */

const char *
ngx_http_apim_jstr(json_t *o, const char *name)
{
    json_t  *v;

    v = json_object_get(o, name);

    return json_is_string(v) ? json_string_value(v) : NULL;
}


static size_t
ngx_http_apim_jlen(json_t *o, const char *name)
{
    json_t  *v;

    v = json_object_get(o, name);

    return json_is_array(v) ? json_array_size(v) : 0;
}


static int
ngx_http_apim_op_cmp(const void *a, const void *b)
{
    const ngx_http_apim_op_t  *x = a, *y = b;

    if (x->wildcard != y->wildcard) {
        return x->wildcard ? 1 : -1;
    }

    if (x->literal != y->literal) {
        return x->literal > y->literal ? -1 : 1;
    }

    return strcmp(x->target, y->target);
}


static ngx_int_t
ngx_http_apim_load_api(ngx_http_apim_snap_t *s, json_t *ja, ngx_log_t *log)
{
    const char           *context, *version, *status, *p, *vctx;
    size_t                i, j, n;
    json_t               *jo, *ec, *js, *jsv;
    ngx_http_apim_op_t   *op;
    ngx_http_apim_api_t  *api;

    context = ngx_http_apim_jstr(ja, "context");
    version = ngx_http_apim_jstr(ja, "version");

    if (context == NULL || version == NULL || context[0] != '/') {
        return NGX_OK;
    }

    api = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_api_t));
    if (api == NULL) {
        return NGX_ERROR;
    }

    api->id = ngx_http_apim_jstr(ja, "id");
    api->name = ngx_http_apim_jstr(ja, "name");
    if (api->id == NULL) {
        api->id = "";
    }
    if (api->name == NULL) {
        api->name = "";
    }

    status = ngx_http_apim_jstr(ja, "lifeCycleStatus");
    api->blocked = status != NULL && strcasecmp(status, "BLOCKED") == 0;

    ec = json_object_get(ja, "endpointConfig");
    if (json_is_string(ec)) {
        /* the reference stores endpointConfig as a JSON string too */
        ec = json_loads(json_string_value(ec), 0, NULL);
        if (ec != NULL) {
            json_object_set_new(ja, "endpointConfig", ec);
        }
    }

    api->version = version;
    api->context = context;
    api->provider = ngx_http_apim_jstr(ja, "provider");
    api->tier = ngx_http_apim_jstr(ja, "apiThrottlingPolicy");

    api->prod = ngx_http_apim_upstream_build(s, ec, "production_endpoints",
                                             log);
    api->sand = ngx_http_apim_upstream_build(s, ec, "sandbox_endpoints", log);
    api->cors = ngx_http_apim_cors_build(s,
                                         json_object_get(ja, "corsConfiguration"),
                                         log);

    /* securityScheme and apiKeyHeader (auth helper; no scheme: oauth2) */
    js = json_object_get(ja, "securityScheme");
    api->security = json_array_size(js) ? 0 : APIM_SEC_OAUTH2;
    json_array_foreach(js, i, jsv) {
        p = json_string_value(jsv);
        api->security |= p == NULL ? 0
                         : strcmp(p, "oauth2") == 0 ? APIM_SEC_OAUTH2
                         : strcmp(p, "api_key") == 0 ? APIM_SEC_API_KEY
                         : strcmp(p, "basic_auth") == 0 ? APIM_SEC_BASIC : 0;
    }
    api->api_key_header = ngx_http_apim_strdup(s,
                              ngx_http_apim_jstr(ja, "apiKeyHeader"));

    n = ngx_http_apim_jlen(ja, "operations");
    api->ops = ngx_http_apim_alloc(s, (n + 1) * sizeof(ngx_http_apim_op_t));
    if (api->ops == NULL) {
        return NGX_ERROR;
    }

    json_array_foreach(json_object_get(ja, "operations"), i, jo) {
        op = &api->ops[api->nops];
        op->target = ngx_http_apim_jstr(jo, "target");
        op->verb = ngx_http_apim_jstr(jo, "verb");

        if (op->target == NULL || op->verb == NULL || op->target[0] != '/') {
            continue;
        }

        p = ngx_http_apim_jstr(jo, "authType");
        op->auth_none = p != NULL && (strcasecmp(p, "None") == 0
                                      || strcasecmp(p, "NONE") == 0);
        op->tier = ngx_http_apim_jstr(jo, "throttlingPolicy");

        js = json_object_get(jo, "scopes");
        op->scopes = ngx_http_apim_alloc(s, (json_array_size(js) + 1)
                                            * sizeof(const char *));
        if (op->scopes == NULL) {
            return NGX_ERROR;
        }
        json_array_foreach(js, j, jsv) {
            if (json_is_string(jsv)) {
                op->scopes[op->nscopes++] = json_string_value(jsv);
            }
        }

        for (p = op->target; *p; p++) {
            if (*p == '{') {
                while (*p && *p != '}') {
                    p++;
                }
                if (*p == '\0') {
                    break;
                }
                continue;
            }
            if (*p == '*') {
                op->wildcard = 1;
                continue;
            }
            op->literal++;
        }

        api->nops++;
    }

    qsort(api->ops, api->nops, sizeof(ngx_http_apim_op_t),
          ngx_http_apim_op_cmp);

    /* "{version}" inside the context, else /context/version */
    vctx = strstr(context, "{version}");
    if (vctx != NULL) {
        char  *pre;

        pre = ngx_http_apim_alloc(s, vctx - context + 1);
        if (pre == NULL) {
            return NGX_ERROR;
        }
        memcpy(pre, context, vctx - context);
        p = ngx_http_apim_strcat3(s, pre, version, vctx + 9);

    } else {
        p = ngx_http_apim_strcat3(s, context, "/", version);
    }

    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_http_apim_map_put(&s->apis, p, api);

    if (json_is_true(json_object_get(ja, "isDefaultVersion"))) {
        if (vctx != NULL) {
            /* drop "/{version}" from the context */
            p = ngx_http_apim_strcat3(s, "", context, "");
            if (p == NULL) {
                return NGX_ERROR;
            }
            n = vctx - context;
            if (n > 0 && p[n - 1] == '/') {
                n--;
            }
            memmove((char *) p + n, vctx + 9, strlen(vctx + 9) + 1);
            ngx_http_apim_map_put(&s->apis, p, api);

        } else {
            ngx_http_apim_map_put(&s->apis, context, api);
        }
    }

    return NGX_OK;
}


static BIGNUM *
ngx_http_apim_b64_bn(const char *in)
{
    u_char     buf[1024];
    ngx_str_t  src, dst;

    if (in == NULL) {
        return NULL;
    }

    src.data = (u_char *) in;
    src.len = strlen(in);

    if (ngx_base64_decoded_length(src.len) > sizeof(buf)) {
        return NULL;
    }

    dst.data = buf;

    if (ngx_decode_base64url(&dst, &src) != NGX_OK) {
        return NULL;
    }

    return BN_bin2bn(dst.data, dst.len, NULL);
}


static size_t
ngx_http_apim_b64_raw(const char *in, u_char *out, size_t max)
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


static EVP_PKEY *
ngx_http_apim_jwk_pkey(json_t *jk)
{
    const char      *kty, *crv;
    u_char           pub[1 + 66 * 2];
    size_t           xl, yl;
    BIGNUM          *n, *e;
    EVP_PKEY        *pkey;
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
        n = ngx_http_apim_b64_bn(ngx_http_apim_jstr(jk, "n"));
        e = ngx_http_apim_b64_bn(ngx_http_apim_jstr(jk, "e"));
        if (n == NULL || e == NULL
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
        xl = ngx_http_apim_b64_raw(ngx_http_apim_jstr(jk, "x"), pub + 1, 66);
        if (xl != 32) {
            goto out;
        }
        yl = ngx_http_apim_b64_raw(ngx_http_apim_jstr(jk, "y"), pub + 33, 66);
        if (yl != 32) {
            goto out;
        }
        if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                             "prime256v1", 0)
            || !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY,
                                                 pub, 65))
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


/* builds a snapshot from a parsed document; takes the reference to root */
ngx_http_apim_snap_t *
ngx_http_apim_snap_build(json_t *root, const char *path, ngx_log_t *log)
{
    size_t                   i, j, n;
    json_t                  *jv, *jk, *km;
    const char              *k, *a, *b, *kid;
    ngx_http_apim_jwk_t     *jwk;
    ngx_http_apim_snap_t    *s;
    ngx_http_apim_keymap_t  *map;
    ngx_http_apim_app_t     *app;
    ngx_http_apim_sub_t     *sub;

    s = calloc(1, sizeof(ngx_http_apim_snap_t));
    if (s == NULL) {
        json_decref(root);
        return NULL;
    }

    s->root = root;
    s->seq = json_integer_value(json_object_get(root, "seq"));

    /* APIs: two keys each at most */
    if (ngx_http_apim_map_init(s, &s->apis, 2 * ngx_http_apim_jlen(root, "apis"))
        != NGX_OK)
    {
        goto failed;
    }

    json_array_foreach(json_object_get(root, "apis"), i, jv) {
        if (ngx_http_apim_load_api(s, jv, log) != NGX_OK) {
            goto failed;
        }
    }

    if (ngx_http_apim_map_init(s, &s->apps,
                               ngx_http_apim_jlen(root, "applications"))
        != NGX_OK)
    {
        goto failed;
    }

    json_array_foreach(json_object_get(root, "applications"), i, jv) {
        k = ngx_http_apim_jstr(jv, "id");
        if (k == NULL) {
            continue;
        }
        app = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_app_t));
        if (app == NULL) {
            goto failed;
        }
        app->id = k;
        app->name = ngx_http_apim_jstr(jv, "name");
        app->owner = ngx_http_apim_jstr(jv, "owner");
        app->tier = ngx_http_apim_jstr(jv, "tier");
        ngx_http_apim_map_put(&s->apps, k, app);
    }

    if (ngx_http_apim_map_init(s, &s->keys,
                               ngx_http_apim_jlen(root, "keyMappings"))
        != NGX_OK)
    {
        goto failed;
    }

    json_array_foreach(json_object_get(root, "keyMappings"), i, jv) {
        k = ngx_http_apim_jstr(jv, "consumerKey");
        a = ngx_http_apim_jstr(jv, "applicationId");
        b = ngx_http_apim_jstr(jv, "keyType");
        if (k == NULL || a == NULL) {
            continue;
        }
        map = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_keymap_t));
        if (map == NULL) {
            goto failed;
        }
        map->app = ngx_http_apim_map_get(&s->apps, (u_char *) a, strlen(a));
        if (map->app == NULL) {
            continue;       /* a key of an application we do not know */
        }
        map->sandbox = b != NULL && strcasecmp(b, "SANDBOX") == 0;
        ngx_http_apim_map_put(&s->keys, k, map);
    }

    if (ngx_http_apim_map_init(s, &s->subs,
                               ngx_http_apim_jlen(root, "subscriptions"))
        != NGX_OK)
    {
        goto failed;
    }

    json_array_foreach(json_object_get(root, "subscriptions"), i, jv) {
        a = ngx_http_apim_jstr(jv, "applicationId");
        b = ngx_http_apim_jstr(jv, "apiId");
        if (a == NULL || b == NULL) {
            continue;
        }
        k = ngx_http_apim_strcat3(s, a, "\n", b);
        sub = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_sub_t));
        if (k == NULL || sub == NULL) {
            goto failed;
        }
        sub->status = ngx_http_apim_jstr(jv, "status");
        if (sub->status == NULL) {
            sub->status = "UNBLOCKED";
        }
        sub->tier = ngx_http_apim_jstr(jv, "tier");
        ngx_http_apim_map_put(&s->subs, k, sub);
    }

    if (ngx_http_apim_map_init(s, &s->revoked,
                               ngx_http_apim_jlen(root, "revokedJwts"))
        != NGX_OK)
    {
        goto failed;
    }

    json_array_foreach(json_object_get(root, "revokedJwts"), i, jv) {
        k = ngx_http_apim_jstr(jv, "jti");
        if (k != NULL) {
            ngx_http_apim_map_put(&s->revoked, k, jv);
        }
    }

    n = 0;
    json_array_foreach(json_object_get(root, "keyManagers"), i, km) {
        n += json_array_size(json_object_get(json_object_get(km, "jwks"),
                                             "keys"));
    }

    if (ngx_http_apim_map_init(s, &s->jwks, n) != NGX_OK) {
        goto failed;
    }

    s->pkeys = ngx_http_apim_alloc(s, (n + 1) * sizeof(ngx_http_apim_jwk_t *));
    if (s->pkeys == NULL) {
        goto failed;
    }

    json_array_foreach(json_object_get(root, "keyManagers"), i, km) {
        json_array_foreach(json_object_get(json_object_get(km, "jwks"),
                                           "keys"), j, jk)
        {
            kid = ngx_http_apim_jstr(jk, "kid");
            if (kid == NULL || s->npkeys >= n) {
                continue;
            }
            jwk = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_jwk_t));
            if (jwk == NULL) {
                goto failed;
            }
            jwk->pkey = ngx_http_apim_jwk_pkey(jk);
            if (jwk->pkey == NULL) {
                ngx_log_error(NGX_LOG_WARN, log, 0,
                              "apim: unusable JWK \"%s\" ignored", kid);
                continue;
            }
            jwk->issuer = ngx_http_apim_jstr(km, "issuer");
            s->pkeys[s->npkeys++] = jwk;
            ngx_http_apim_map_put(&s->jwks, kid, jwk);
        }
    }

    return s;

failed:

    ngx_log_error(NGX_LOG_ERR, log, 0, "apim: out of memory loading \"%s\"",
                  path);
    ngx_http_apim_snap_free(s);

    return NULL;
}


ngx_http_apim_snap_t *
ngx_http_apim_snap_load(const char *path, ngx_log_t *log)
{
    json_t        *root;
    json_error_t   err;

    root = json_load_file(path, 0, &err);
    if (root == NULL || !json_is_object(root)) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "apim: cannot load snapshot \"%s\": %s (line %d)",
                      path, root ? "not an object" : err.text, err.line);
        json_decref(root);
        return NULL;
    }

    return ngx_http_apim_snap_build(root, path, log);
}


void
ngx_http_apim_snap_free(ngx_http_apim_snap_t *s)
{
    size_t                i;
    ngx_http_apim_mem_t  *m, *next;

    if (s == NULL) {
        return;
    }

    for (i = 0; i < s->npkeys; i++) {
        EVP_PKEY_free(s->pkeys[i]->pkey);
    }

    for (m = s->mem; m; m = next) {
        next = m->next;
        free(m);
    }

    json_decref(s->root);
    free(s);
}
