/*
 * ngx_http_apim_upstream.c: the API's endpoints and the choice of one per
 * request.
 *
 * First version: the first URL of the endpoint kind, proxied by the
 * rendered configuration with proxy_pass $apim_backend$apim_rest.
 */

#include "ngx_http_apim_module.h"


struct ngx_http_apim_upstream_s {
    const char                 *url;
};


ngx_http_apim_upstream_t *
ngx_http_apim_upstream_build(ngx_http_apim_snap_t *s, json_t *endpoint_config,
    const char *which, ngx_log_t *log)
{
    json_t                    *e;
    const char                *url;
    ngx_http_apim_upstream_t  *up;

    e = json_object_get(endpoint_config, which);

    if (json_is_array(e)) {
        e = json_array_get(e, 0);
    }

    url = ngx_http_apim_jstr(e, "url");
    if (url == NULL) {
        return NULL;
    }

    up = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_upstream_t));
    if (up == NULL) {
        return NULL;
    }

    up->url = ngx_http_apim_strdup(s, url);
    if (up->url == NULL) {
        return NULL;
    }

    return up;
}


ngx_int_t
ngx_http_apim_upstream_set(ngx_http_request_t *r, ngx_http_apim_ctx_t *ctx,
    const ngx_http_apim_upstream_t *up)
{
    u_char  *p;

    ctx->backend.len = ngx_strlen(up->url);
    ctx->backend.data = ngx_pnalloc(r->pool, ctx->backend.len + 1);
    if (ctx->backend.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ctx->backend.data, up->url, ctx->backend.len + 1);

    while (ctx->backend.len && ctx->backend.data[ctx->backend.len - 1] == '/') {
        ctx->backend.len--;
    }

    if (ctx->rest.len == 0) {
        /* the API's root: a backend URL without a path still needs "/",
         * or proxy_pass would send the client's URI */
        p = (u_char *) ngx_strstrn(ctx->backend.data, "://", 3 - 1);
        if (p == NULL
            || p + 3 > ctx->backend.data + ctx->backend.len
            || ngx_strlchr(p + 3, ctx->backend.data + ctx->backend.len, '/')
               == NULL)
        {
            ngx_str_set(&ctx->rest, "/");
        }
    }

    return NGX_OK;
}
