/*
 * ngx_http_apim_cors.c: the API's CORS configuration (corsConfiguration),
 * preflight answers and response headers.
 *
 * A request with an Origin header to an API whose corsConfiguration is
 * enabled:
 *   - OPTIONS with Access-Control-Request-Method (a preflight) is answered
 *     by the gateway, before authentication: 200 with
 *     Access-Control-Allow-Origin/-Methods/-Headers(/-Credentials) when
 *     the origin is allowed, 403 without them when it is not;
 *   - any other request goes on; its response (the backend's or a fault)
 *     gets Access-Control-Allow-Origin (and -Credentials) when the origin
 *     is allowed, replacing the backend's own.
 * With "*" among the allowed origins and credentials off the answer is
 * "*", otherwise the request's origin (and Vary: Origin).
 */

#include "ngx_http_apim_module.h"


struct ngx_http_apim_cors_s {
    const char                **origins;
    size_t                      norigins;
    ngx_uint_t                  any;
    ngx_uint_t                  credentials;
    const char                 *headers;    /* "a, b, c" */
    const char                 *methods;
};


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


/* the strings of a JSON array joined with ", ", allocated on s */
static const char *
ngx_http_apim_cors_join(ngx_http_apim_snap_t *s, json_t *a)
{
    char    *p, *out;
    size_t   i, len;
    json_t  *v;

    len = 1;

    json_array_foreach(a, i, v) {
        if (json_is_string(v)) {
            len += json_string_length(v) + 2;
        }
    }

    out = ngx_http_apim_alloc(s, len);
    if (out == NULL) {
        return NULL;
    }

    p = out;

    json_array_foreach(a, i, v) {
        if (!json_is_string(v) || json_string_length(v) == 0) {
            continue;
        }
        if (p != out) {
            *p++ = ',';
            *p++ = ' ';
        }
        p = (char *) ngx_cpymem(p, json_string_value(v),
                                json_string_length(v));
    }

    *p = '\0';

    return out;
}


ngx_http_apim_cors_t *
ngx_http_apim_cors_build(ngx_http_apim_snap_t *s, json_t *cors_config,
    ngx_log_t *log)
{
    size_t                 i, n;
    json_t                *a, *v;
    ngx_http_apim_cors_t  *cors;

    if (!json_is_object(cors_config)
        || !json_is_true(json_object_get(cors_config,
                                         "corsConfigurationEnabled")))
    {
        return NULL;
    }

    cors = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_cors_t));
    if (cors == NULL) {
        return NULL;
    }

    cors->credentials = json_is_true(json_object_get(cors_config,
                                     "accessControlAllowCredentials"));

    a = json_object_get(cors_config, "accessControlAllowOrigins");
    n = json_array_size(a);

    cors->origins = ngx_http_apim_alloc(s, (n + 1) * sizeof(const char *));
    if (cors->origins == NULL) {
        return NULL;
    }

    json_array_foreach(a, i, v) {
        if (!json_is_string(v)) {
            continue;
        }

        if (ngx_strcmp(json_string_value(v), "*") == 0) {
            cors->any = 1;
            continue;
        }

        cors->origins[cors->norigins] = ngx_http_apim_strdup(s,
                                                        json_string_value(v));
        if (cors->origins[cors->norigins] == NULL) {
            return NULL;
        }
        cors->norigins++;
    }

    cors->headers = ngx_http_apim_cors_join(s,
                        json_object_get(cors_config,
                                        "accessControlAllowHeaders"));
    cors->methods = ngx_http_apim_cors_join(s,
                        json_object_get(cors_config,
                                        "accessControlAllowMethods"));

    if (cors->headers == NULL || cors->methods == NULL) {
        return NULL;
    }

    return cors;
}


static ngx_table_elt_t *
ngx_http_apim_cors_header_in(ngx_http_request_t *r, const char *name,
    size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }
            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


static ngx_int_t
ngx_http_apim_cors_add(ngx_http_request_t *r, const char *name,
    u_char *value, size_t len)
{
    u_char           *p;
    ngx_table_elt_t  *h;

    if (len == 0) {
        return NGX_OK;
    }

    /* a copy: value may point into a snapshot */
    p = ngx_pnalloc(r->pool, len);
    h = ngx_list_push(&r->headers_out.headers);
    if (p == NULL || h == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, value, len);

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value.data = p;
    h->value.len = len;

    return NGX_OK;
}


ngx_int_t
ngx_http_apim_cors_request(ngx_http_request_t *r, ngx_http_apim_ctx_t *ctx,
    const ngx_http_apim_cors_t *cors)
{
    size_t            i;
    ngx_int_t         rc;
    ngx_uint_t        allowed;
    ngx_table_elt_t  *origin, *method;

    origin = ngx_http_apim_cors_header_in(r, "Origin", sizeof("Origin") - 1);
    if (origin == NULL || origin->value.len == 0) {
        return NGX_DECLINED;
    }

    allowed = 0;

    for (i = 0; i < cors->norigins; i++) {
        if (ngx_strlen(cors->origins[i]) == origin->value.len
            && ngx_strncasecmp((u_char *) cors->origins[i], origin->value.data,
                               origin->value.len) == 0)
        {
            allowed = 1;
            break;
        }
    }

    if (allowed || cors->any) {
        if (!allowed && !cors->credentials) {
            ngx_str_set(&ctx->cors_origin, "*");

        } else {
            /* the header value lives as long as r */
            ctx->cors_origin = origin->value;
        }

        ctx->cors_credentials = cors->credentials;
    }

    method = NULL;

    if (r->method == NGX_HTTP_OPTIONS) {
        method = ngx_http_apim_cors_header_in(r,
                            "Access-Control-Request-Method",
                            sizeof("Access-Control-Request-Method") - 1);
    }

    if (method == NULL) {
        return NGX_DECLINED;
    }

    /* a preflight: answered here, without authentication */
    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    if (ctx->cors_origin.len == 0) {
        r->headers_out.status = NGX_HTTP_FORBIDDEN;

    } else {
        r->headers_out.status = NGX_HTTP_OK;

        if (ngx_http_apim_cors_add(r, "Access-Control-Allow-Origin",
                                   ctx->cors_origin.data, ctx->cors_origin.len)
               != NGX_OK
            || ngx_http_apim_cors_add(r, "Access-Control-Allow-Methods",
                                      (u_char *) cors->methods,
                                      ngx_strlen(cors->methods)) != NGX_OK
            || ngx_http_apim_cors_add(r, "Access-Control-Allow-Headers",
                                      (u_char *) cors->headers,
                                      ngx_strlen(cors->headers)) != NGX_OK
            || (ctx->cors_credentials
                && ngx_http_apim_cors_add(r,
                                          "Access-Control-Allow-Credentials",
                                          (u_char *) "true", 4) != NGX_OK)
            || (ctx->cors_origin.data[0] != '*'
                && ngx_http_apim_cors_add(r, "Vary", (u_char *) "Origin", 6)
                   != NGX_OK))
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* the header filter must not add them again */
        ctx->cors_origin.len = 0;
    }

    r->headers_out.content_length_n = 0;
    r->header_only = 1;

    rc = ngx_http_send_header(r);

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_apim_cors_header_filter(ngx_http_request_t *r)
{
    ngx_uint_t            i;
    ngx_list_part_t      *part;
    ngx_table_elt_t      *h;
    ngx_http_apim_ctx_t  *ctx;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_apim_module);

    if (ctx == NULL || ctx->cors_origin.len == 0) {
        return ngx_http_next_header_filter(r);
    }

    /* ours replace the backend's */
    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }
            part = part->next;
            h = part->elts;
            i = 0;
        }

        if ((h[i].key.len == sizeof("Access-Control-Allow-Origin") - 1
             && ngx_strncasecmp(h[i].key.data,
                                (u_char *) "Access-Control-Allow-Origin",
                                h[i].key.len) == 0)
            || (h[i].key.len == sizeof("Access-Control-Allow-Credentials") - 1
                && ngx_strncasecmp(h[i].key.data,
                                   (u_char *) "Access-Control-Allow-Credentials",
                                   h[i].key.len) == 0))
        {
            h[i].hash = 0;
        }
    }

    if (ngx_http_apim_cors_add(r, "Access-Control-Allow-Origin",
                               ctx->cors_origin.data, ctx->cors_origin.len)
           != NGX_OK
        || (ctx->cors_credentials
            && ngx_http_apim_cors_add(r, "Access-Control-Allow-Credentials",
                                      (u_char *) "true", 4) != NGX_OK)
        || (ctx->cors_origin.data[0] != '*'
            && ngx_http_apim_cors_add(r, "Vary", (u_char *) "Origin", 6)
               != NGX_OK))
    {
        return NGX_ERROR;
    }

    return ngx_http_next_header_filter(r);
}


ngx_int_t
ngx_http_apim_cors_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_apim_cors_header_filter;

    return NGX_OK;
}
