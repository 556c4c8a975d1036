/*
 * ngx_http_apim_jwks.c: the keys that sign the tokens the gateway accepts.
 *
 * First version: only our Key Manager's keys, from the snapshot.
 */

#include "ngx_http_apim_module.h"


const ngx_http_apim_jwk_t *
ngx_http_apim_jwk_find(const ngx_http_apim_snap_t *s, const char *kid)
{
    return ngx_http_apim_map_get(&s->jwks, (const u_char *) kid,
                                 ngx_strlen(kid));
}
