/*
 * ngx_http_apim_block.c: blocking conditions of the apim gateway (the
 * Admin API's deny policies, /throttling/deny-policies).
 *
 * The snapshot's "blockConditions" are {conditionId, conditionType,
 * conditionValue, conditionStatus}; only enabled ones (conditionStatus
 * true) are kept. Types and values, as src/admin/admin_deny.c writes them:
 *   IP           {"fixedIp": "10.1.2.3", "invert": false}
 *   IPRANGE      {"startingIp": "...", "endingIp": "...", "invert": false}
 *                (IPv4 or IPv6)
 *   API          the API's context with its version, "/pizza/1.0.0"
 *   APPLICATION  "owner:applicationName"
 *   USER         a user name
 * An inverted IP condition blocks every address but the one (or those of
 * the range). A user or an owner matches with or without the
 * "@carbon.super" tenant domain.
 *
 * Addresses are kept as 16 bytes, IPv4 as IPv4-mapped IPv6, so that one
 * comparison serves both. The conditions are lists allocated on the
 * snapshot (a change of blocking conditions makes a full snapshot); they
 * are few, and the request path reads them without a lock.
 */


#include "ngx_http_apim_module.h"

#include <arpa/inet.h>


#define APIM_BLOCK_IP       1
#define APIM_BLOCK_API      2
#define APIM_BLOCK_APP      3
#define APIM_BLOCK_USER     4

#define APIM_TENANT         "@carbon.super"


typedef struct ngx_http_apim_block_s  ngx_http_apim_block_t;

struct ngx_http_apim_block_s {
    ngx_http_apim_block_t      *next;
    ngx_uint_t                  type;
    ngx_uint_t                  invert;
    u_char                      start[16];  /* IP, IPRANGE */
    u_char                      end[16];
    const char                 *value;      /* API, APPLICATION, USER */
    size_t                      len;
};

struct ngx_http_apim_blocks_s {
    ngx_http_apim_block_t      *ips;
    ngx_http_apim_block_t      *names;
};


static const ngx_http_apim_fault_t  ngx_http_apim_blocked = {
    "900805", 429, "Message blocked",
    "You have been blocked from accessing the resource"
};


/* an IPv4 or IPv6 address as 16 bytes (IPv4: ::ffff:a.b.c.d) */
static ngx_int_t
ngx_http_apim_block_addr(const char *text, u_char *out)
{
    struct in_addr  a4;

    if (text == NULL) {
        return NGX_ERROR;
    }

    if (inet_pton(AF_INET, text, &a4) == 1) {
        ngx_memzero(out, 10);
        out[10] = 0xff;
        out[11] = 0xff;
        ngx_memcpy(out + 12, &a4, 4);
        return NGX_OK;
    }

    if (inet_pton(AF_INET6, text, out) == 1) {
        return NGX_OK;
    }

    return NGX_ERROR;
}


ngx_int_t
ngx_http_apim_block_add(ngx_http_apim_snap_t *s, json_t *jv, ngx_log_t *log)
{
    json_t                 *v;
    const char             *type, *id, *str;
    ngx_http_apim_block_t  *b;

    if (!json_is_true(json_object_get(jv, "conditionStatus"))) {
        return NGX_OK;
    }

    type = ngx_http_apim_jstr(jv, "conditionType");
    id = ngx_http_apim_jstr(jv, "conditionId");
    v = json_object_get(jv, "conditionValue");

    if (type == NULL) {
        return NGX_OK;
    }

    if (s->blocks == NULL) {
        s->blocks = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_blocks_t));
        if (s->blocks == NULL) {
            return NGX_ERROR;
        }
        ngx_memzero(s->blocks, sizeof(ngx_http_apim_blocks_t));
    }

    b = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_block_t));
    if (b == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(b, sizeof(ngx_http_apim_block_t));

    if (strcmp(type, "IP") == 0 || strcmp(type, "IPRANGE") == 0) {
        b->type = APIM_BLOCK_IP;
        b->invert = json_is_true(json_object_get(v, "invert"));

        if (type[2] == '\0') {
            if (ngx_http_apim_block_addr(ngx_http_apim_jstr(v, "fixedIp"),
                                         b->start)
                != NGX_OK)
            {
                goto invalid;
            }
            ngx_memcpy(b->end, b->start, 16);

        } else if (ngx_http_apim_block_addr(ngx_http_apim_jstr(v,
                                                               "startingIp"),
                                            b->start)
                   != NGX_OK
                   || ngx_http_apim_block_addr(ngx_http_apim_jstr(v,
                                                                  "endingIp"),
                                               b->end)
                      != NGX_OK
                   || ngx_memcmp(b->start, b->end, 16) > 0)
        {
            goto invalid;
        }

        b->next = s->blocks->ips;
        s->blocks->ips = b;

        return NGX_OK;
    }

    if (strcmp(type, "API") == 0) {
        b->type = APIM_BLOCK_API;

    } else if (strcmp(type, "APPLICATION") == 0) {
        b->type = APIM_BLOCK_APP;

    } else if (strcmp(type, "USER") == 0) {
        b->type = APIM_BLOCK_USER;

    } else {
        goto invalid;
    }

    str = json_is_string(v) ? json_string_value(v) : NULL;
    if (str == NULL || str[0] == '\0') {
        goto invalid;
    }

    b->value = ngx_http_apim_strdup(s, str);
    if (b->value == NULL) {
        return NGX_ERROR;
    }

    b->len = ngx_strlen(b->value);
    b->next = s->blocks->names;
    s->blocks->names = b;

    return NGX_OK;

invalid:

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "apim: blocking condition \"%s\" ignored: bad %s value",
                  id ? id : "", type);

    return NGX_OK;
}


const ngx_http_apim_fault_t *
ngx_http_apim_block_ip(ngx_http_request_t *r, const ngx_http_apim_snap_t *s)
{
    u_char                  addr[16];
    ngx_uint_t              in;
    struct sockaddr        *sa;
    ngx_http_apim_block_t  *b;

    if (s->blocks == NULL || s->blocks->ips == NULL) {
        return NULL;
    }

    /*
     * the client's address: behind a trusted proxy (set_real_ip_from)
     * nginx's realip module put the X-Forwarded-For one here before the
     * access phase, for this request
     */
    sa = r->connection->sockaddr;

    if (sa->sa_family == AF_INET) {
        ngx_memzero(addr, 10);
        addr[10] = 0xff;
        addr[11] = 0xff;
        ngx_memcpy(addr + 12, &((struct sockaddr_in *) sa)->sin_addr, 4);

#if (NGX_HAVE_INET6)
    } else if (sa->sa_family == AF_INET6) {
        ngx_memcpy(addr, &((struct sockaddr_in6 *) sa)->sin6_addr, 16);
#endif

    } else {
        /* a unix socket: no address to block */
        return NULL;
    }

    for (b = s->blocks->ips; b; b = b->next) {
        in = ngx_memcmp(addr, b->start, 16) >= 0
             && ngx_memcmp(addr, b->end, 16) <= 0;

        if (in != b->invert) {
            return &ngx_http_apim_blocked;
        }
    }

    return NULL;
}


/* a == b, or one of them is the other with "@carbon.super" */
static ngx_uint_t
ngx_http_apim_block_name(const u_char *a, size_t al, const u_char *b,
    size_t bl)
{
    size_t  tl;

    tl = sizeof(APIM_TENANT) - 1;

    if (al == bl) {
        return ngx_memcmp(a, b, al) == 0;
    }

    if (al == bl + tl) {
        return ngx_memcmp(a, b, bl) == 0
               && ngx_memcmp(a + bl, APIM_TENANT, tl) == 0;
    }

    if (bl == al + tl) {
        return ngx_memcmp(a, b, al) == 0
               && ngx_memcmp(b + al, APIM_TENANT, tl) == 0;
    }

    return 0;
}


/* "/ctx/ver", or the bare context of a condition on every version */
static ngx_uint_t
ngx_http_apim_block_api(ngx_http_apim_block_t *b,
    const ngx_http_apim_api_t *api)
{
    size_t  cl, vl;

    cl = ngx_strlen(api->context);
    vl = ngx_strlen(api->version);

    if (b->len == cl) {
        return ngx_memcmp(b->value, api->context, cl) == 0;
    }

    /* a context that holds its version ("/pizza/1.0.0") is whole above */
    return b->len == cl + 1 + vl
           && ngx_memcmp(b->value, api->context, cl) == 0
           && b->value[cl] == '/'
           && ngx_memcmp(b->value + cl + 1, api->version, vl) == 0;
}


static ngx_uint_t
ngx_http_apim_block_app(ngx_http_apim_block_t *b,
    const ngx_http_apim_app_t *app)
{
    size_t       ol, nl;
    const char  *colon;

    if (app->owner == NULL || app->name == NULL) {
        return 0;
    }

    /* owner:name; the name may hold a colon, the owner not */
    colon = (const char *) ngx_strlchr((u_char *) b->value,
                                       (u_char *) b->value + b->len, ':');
    if (colon == NULL) {
        return 0;
    }

    ol = ngx_strlen(app->owner);
    nl = ngx_strlen(app->name);

    return (size_t) (b->value + b->len - colon - 1) == nl
           && ngx_memcmp(colon + 1, app->name, nl) == 0
           && ngx_http_apim_block_name((u_char *) b->value,
                                       colon - b->value,
                                       (u_char *) app->owner, ol);
}


const ngx_http_apim_fault_t *
ngx_http_apim_block_caller(const ngx_http_apim_snap_t *s,
    const ngx_http_apim_api_t *api, const ngx_http_apim_app_t *app,
    ngx_str_t *user)
{
    ngx_uint_t              hit;
    ngx_http_apim_block_t  *b;

    if (s->blocks == NULL) {
        return NULL;
    }

    for (b = s->blocks->names; b; b = b->next) {

        switch (b->type) {

        case APIM_BLOCK_API:
            hit = ngx_http_apim_block_api(b, api);
            break;

        case APIM_BLOCK_APP:
            hit = app != NULL && ngx_http_apim_block_app(b, app);
            break;

        default: /* APIM_BLOCK_USER */
            hit = user != NULL && user->len
                  && ngx_http_apim_block_name((u_char *) b->value, b->len,
                                              user->data, user->len);
            break;
        }

        if (hit) {
            return &ngx_http_apim_blocked;
        }
    }

    return NULL;
}
