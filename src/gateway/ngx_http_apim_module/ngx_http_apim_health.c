/*
 * ngx_http_apim_health.c: the gateway's health checks, for load balancers.
 *
 * Directive (its own module, ngx_http_apim_health_module):
 *   apim_health live|ready;           (location) answer the check here:
 *     live   200 {"status":"UP"}: nginx and this worker answer;
 *     ready  200 {"status":"UP","seq":<change seq>} once this worker holds
 *            a snapshot (from its cache file or the control plane), 503
 *            {"status":"DOWN"} before: it would answer every API call 900906
 *            (no API) while it has no data.
 *
 * The request path only loads the worker's current snapshot pointer (the
 * feed thread swaps it; a replaced snapshot is freed only after a grace
 * period), so a check never waits on the feed or the network.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_apim_module.h"


#define NGX_HTTP_APIM_HEALTH_LIVE   1
#define NGX_HTTP_APIM_HEALTH_READY  2


typedef struct {
    ngx_uint_t                  check;
} ngx_http_apim_health_loc_conf_t;


static ngx_int_t ngx_http_apim_health_handler(ngx_http_request_t *r);
static void *ngx_http_apim_health_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_apim_health(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_command_t  ngx_http_apim_health_commands[] = {

    { ngx_string("apim_health"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_apim_health,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_apim_health_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_apim_health_create_loc_conf,  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_apim_health_module = {
    NGX_MODULE_V1,
    &ngx_http_apim_health_module_ctx,      /* module context */
    ngx_http_apim_health_commands,         /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_apim_health_handler(ngx_http_request_t *r)
{
    u_char                           *p;
    size_t                            len;
    ngx_int_t                         rc;
    ngx_buf_t                        *b;
    ngx_chain_t                       out;
    ngx_http_apim_snap_t             *snap;
    ngx_http_apim_health_loc_conf_t  *hlcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    hlcf = ngx_http_get_module_loc_conf(r, ngx_http_apim_health_module);

    len = sizeof("{\"status\":\"DOWN\",\"seq\":}") - 1 + NGX_INT64_LEN;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = p;

    if (hlcf->check == NGX_HTTP_APIM_HEALTH_LIVE) {
        r->headers_out.status = NGX_HTTP_OK;
        b->last = ngx_sprintf(p, "{\"status\":\"UP\"}");

    } else {
        snap = __atomic_load_n(&ngx_http_apim_current, __ATOMIC_ACQUIRE);

        if (snap != NULL) {
            r->headers_out.status = NGX_HTTP_OK;
            b->last = ngx_sprintf(p, "{\"status\":\"UP\",\"seq\":%L}",
                                  snap->seq);

        } else {
            r->headers_out.status = NGX_HTTP_SERVICE_UNAVAILABLE;
            b->last = ngx_sprintf(p, "{\"status\":\"DOWN\"}");
        }
    }

    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    /* a load balancer must see the state of now */
    r->headers_out.last_modified_time = -1;
    r->allow_ranges = 0;

    if (r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static void *
ngx_http_apim_health_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_apim_health_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_apim_health_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    return conf;
}


static char *
ngx_http_apim_health(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_apim_health_loc_conf_t *hlcf = conf;

    ngx_str_t                 *value;
    ngx_http_apim_loc_conf_t  *alcf;
    ngx_http_core_loc_conf_t  *clcf;

    if (hlcf->check) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "live") == 0) {
        hlcf->check = NGX_HTTP_APIM_HEALTH_LIVE;

    } else if (ngx_strcmp(value[1].data, "ready") == 0) {
        hlcf->check = NGX_HTTP_APIM_HEALTH_READY;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\" directive, "
                           "it must be \"live\" or \"ready\"",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_apim_health_handler;

    /* a check is no API call, whatever the server level says */
    alcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_apim_module);
    alcf->enable = 0;

    return NGX_CONF_OK;
}
