/*
 * ngx_http_apim_cors.c: the API's CORS configuration, preflight answers
 * and response headers.
 *
 * First version: CORS is not applied yet (every API builds to NULL).
 */

#include "ngx_http_apim_module.h"


ngx_http_apim_cors_t *
ngx_http_apim_cors_build(ngx_http_apim_snap_t *s, json_t *cors_config,
    ngx_log_t *log)
{
    return NULL;
}
