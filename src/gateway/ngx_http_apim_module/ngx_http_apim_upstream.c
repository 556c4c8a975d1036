/*
 * ngx_http_apim_upstream.c: the API's endpoints and the choice of one per
 * request.
 *
 * Endpoints. ngx_http_apim_upstream_build() reads the API's endpointConfig
 * as the reference defines it: endpoint_type "http" (one endpoint),
 * "load_balance" (production_endpoints / sandbox_endpoints: a list, or one
 * object) or "failover" (the primary endpoint, then production_failovers /
 * sandbox_failovers, in order). Each endpoint is {"url": ..., "config":
 * {"actionDuration": ms}}: actionDuration (a number or a string of digits,
 * as the Publisher stores it) is the endpoint's connect, send and read
 * timeout; without it nginx's proxy_*_timeout apply. http and https URLs;
 * the host is resolved by getaddrinfo() when the snapshot is built (by the
 * background thread, never on the request path; kept 30 s per host and
 * port); every address is a peer.
 *
 * Balancer. ngx_http_apim_upstream_module adds the directive
 *
 *   upstream apim_backend {
 *       apim_balancer;
 *       keepalive 64;          (on 1.22: after apim_balancer)
 *   }
 *
 * (no "server" line is needed). The rendered configuration proxies with
 *
 *   apim_backend_uri on;
 *   proxy_pass https://apim_backend;
 *   proxy_redirect off;
 *
 * a proxy_pass without variables (nginx parses no URL and looks up no
 * upstream by name per request): ngx_http_apim_upstream_uri() makes the
 * request's URI the backend's (the endpoint's path and $apim_rest, already
 * escaped), which nginx sends with $args; "https" only makes nginx prepare
 * TLS for the location, and the balancer switches it per request to the
 * scheme of the chosen endpoint (u->ssl). The older form with the
 * variables
 *
 *   $apim_upstream_scheme   "http" or "https" of the chosen endpoint
 *   $apim_upstream_uri      the endpoint's path and $apim_rest
 *   $apim_upstream_host     host[:port] of the endpoint, for Host
 *   $apim_upstream_name     host of the endpoint being tried, for SNI
 *                           (an IPv6 address in brackets: no SNI)
 * works as well:
 *   proxy_pass $apim_upstream_scheme://apim_backend$apim_upstream_uri$is_args$args;
 * ngx_http_apim_upstream_set() (access phase) copies the endpoints of the
 * API into r->pool (the snapshot may be freed while the request waits for
 * its body or its backend) and picks the first endpoint: round-robin with
 * a per-worker counter for load_balance, the primary for failover. The
 * balancer then walks the peers from there: on an error or a timeout
 * (proxy_next_upstream error timeout) the next one, at most one try per
 * peer. An endpoint with its own timeout gets a private copy of u->conf.
 * The URI, the scheme and Host are those of the first endpoint of the
 * request (nginx builds the request once); failover endpoints of one API
 * are expected to serve the same paths.
 *
 * Without the upstream block, proxy_pass $apim_backend$apim_rest works as
 * before: $apim_backend is the chosen endpoint's URL.
 */

#include "ngx_http_apim_module.h"

#include <netdb.h>
#include <stdlib.h>
#include <sys/socket.h>


#define APIM_UPSTREAM_MAX_ENDPOINTS  64
#define APIM_UPSTREAM_MAX_ADDRS      8
#define APIM_UPSTREAM_MAX_URL        2048
#define APIM_UPSTREAM_MAX_TIMEOUT    3600000

#define APIM_UPSTREAM_SINGLE         0
#define APIM_UPSTREAM_BALANCE        1
#define APIM_UPSTREAM_FAILOVER       2


typedef struct {
    ngx_str_t                   url;        /* without trailing "/" */
    ngx_str_t                   host;       /* "example.com", "::1" */
    ngx_str_t                   authority;  /* host[:port] as in the URL */
    ngx_str_t                   path;       /* "/svc" or "", no trailing "/" */
    ngx_uint_t                  ssl;
    ngx_msec_t                  timeout;    /* 0: nginx's */
    ngx_uint_t                  first;      /* its peers */
    ngx_uint_t                  naddrs;
} ngx_http_apim_endpoint_t;


typedef struct {
    struct sockaddr            *sockaddr;
    socklen_t                   socklen;
    ngx_str_t                   name;       /* "127.0.0.1:8080" */
    ngx_uint_t                  endpoint;
} ngx_http_apim_peer_t;


struct ngx_http_apim_upstream_s {
    ngx_uint_t                  type;
    ngx_http_apim_endpoint_t   *endpoints;
    ngx_uint_t                  nendpoints;
    ngx_http_apim_peer_t       *peers;
    ngx_uint_t                  npeers;
    ngx_uint_t                 *rr;         /* written by the worker only */
};


/* per request, r->pool: ctx->upstream */
typedef struct {
    ngx_http_apim_endpoint_t   *endpoints;
    ngx_uint_t                  nendpoints;
    ngx_http_apim_peer_t       *peers;
    ngx_uint_t                  npeers;
    ngx_uint_t                  start;      /* endpoint of the first try */
    ngx_uint_t                  first_peer;
    ngx_uint_t                  tried;
    ngx_uint_t                  current;    /* endpoint being tried */
    ngx_http_upstream_conf_t   *conf;       /* our copy, or NULL */
    ngx_msec_t                  connect_timeout;
    ngx_msec_t                  send_timeout;
    ngx_msec_t                  read_timeout;
} ngx_http_apim_upstream_req_t;


static char *ngx_http_apim_balancer(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_apim_upstream_preconf(ngx_conf_t *cf);
static ngx_int_t ngx_http_apim_upstream_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_command_t  ngx_http_apim_upstream_commands[] = {

    { ngx_string("apim_balancer"),
      NGX_HTTP_UPS_CONF|NGX_CONF_NOARGS,
      ngx_http_apim_balancer,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_apim_upstream_module_ctx = {
    ngx_http_apim_upstream_preconf,        /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_apim_upstream_module = {
    NGX_MODULE_V1,
    &ngx_http_apim_upstream_module_ctx,    /* module context */
    ngx_http_apim_upstream_commands,       /* module directives */
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


#define APIM_UPSTREAM_VAR_SCHEME  0
#define APIM_UPSTREAM_VAR_URI     1
#define APIM_UPSTREAM_VAR_HOST    2
#define APIM_UPSTREAM_VAR_NAME    3

static ngx_http_variable_t  ngx_http_apim_upstream_vars[] = {

    { ngx_string("apim_upstream_scheme"), NULL,
      ngx_http_apim_upstream_variable, APIM_UPSTREAM_VAR_SCHEME,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_upstream_uri"), NULL,
      ngx_http_apim_upstream_variable, APIM_UPSTREAM_VAR_URI,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_upstream_host"), NULL,
      ngx_http_apim_upstream_variable, APIM_UPSTREAM_VAR_HOST,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_upstream_name"), NULL,
      ngx_http_apim_upstream_variable, APIM_UPSTREAM_VAR_NAME,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/* -- building (background thread) ----------------------------------------- */

static ngx_int_t
ngx_http_apim_upstream_str(ngx_http_apim_snap_t *s, ngx_str_t *dst,
    const u_char *src, size_t len)
{
    dst->data = ngx_http_apim_alloc(s, len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, src, len);
    dst->data[len] = '\0';
    dst->len = len;

    return NGX_OK;
}


/* actionDuration: a positive number of milliseconds, or a string of them */
static ngx_msec_t
ngx_http_apim_upstream_timeout(json_t *config)
{
    json_t      *v;
    json_int_t   ms;
    const char  *p;

    v = json_object_get(config, "actionDuration");

    if (json_is_integer(v)) {
        ms = json_integer_value(v);

    } else if (json_is_string(v)) {
        p = json_string_value(v);
        if (*p == '\0' || json_string_length(v) > 9) {
            return 0;
        }

        ms = 0;
        for ( /* void */ ; *p; p++) {
            if (*p < '0' || *p > '9') {
                return 0;
            }
            ms = ms * 10 + (*p - '0');
        }

    } else {
        return 0;
    }

    if (ms <= 0) {
        return 0;
    }

    if (ms > APIM_UPSTREAM_MAX_TIMEOUT) {
        ms = APIM_UPSTREAM_MAX_TIMEOUT;
    }

    return (ngx_msec_t) ms;
}


/*
 * Host names resolved by this thread, kept APIM_UPSTREAM_DNS_TTL seconds
 * (failures APIM_UPSTREAM_DNS_NEG_TTL): a snapshot of many APIs on the same
 * hosts resolves each once, and a rebuild after a change does not ask DNS
 * again. Thread-local: only the thread that builds snapshots uses it.
 */

#define APIM_UPSTREAM_DNS_BUCKETS    256
#define APIM_UPSTREAM_DNS_MAX        1024
#define APIM_UPSTREAM_DNS_TTL        30
#define APIM_UPSTREAM_DNS_NEG_TTL    5

typedef struct ngx_http_apim_resolved_s  ngx_http_apim_resolved_t;

struct ngx_http_apim_resolved_s {
    ngx_http_apim_resolved_t   *next;
    char                        host[256];
    in_port_t                   port;
    time_t                      expires;
    int                         err;        /* getaddrinfo()'s, 0: none */
    ngx_uint_t                  naddrs;
    struct sockaddr_storage     addrs[APIM_UPSTREAM_MAX_ADDRS];
    socklen_t                   socklen[APIM_UPSTREAM_MAX_ADDRS];
};

static __thread ngx_http_apim_resolved_t
                        *ngx_http_apim_dns[APIM_UPSTREAM_DNS_BUCKETS];
static __thread ngx_uint_t  ngx_http_apim_dns_count;


static void
ngx_http_apim_upstream_dns_flush(void)
{
    ngx_uint_t                 i;
    ngx_http_apim_resolved_t  *r, *next;

    for (i = 0; i < APIM_UPSTREAM_DNS_BUCKETS; i++) {
        for (r = ngx_http_apim_dns[i]; r != NULL; r = next) {
            next = r->next;
            free(r);
        }
        ngx_http_apim_dns[i] = NULL;
    }

    ngx_http_apim_dns_count = 0;
}


/* NULL: out of memory */
static ngx_http_apim_resolved_t *
ngx_http_apim_upstream_resolve(const char *host, in_port_t port,
    ngx_log_t *log)
{
    int                        rc;
    char                       serv[8];
    time_t                     now;
    size_t                     len;
    ngx_uint_t                 b;
    struct addrinfo            hints, *res, *ai;
    ngx_http_apim_resolved_t  *r, **pr;

    now = time(NULL);
    len = ngx_strlen(host);
    b = (ngx_hash_key((u_char *) host, len) + port)
        & (APIM_UPSTREAM_DNS_BUCKETS - 1);

    for (pr = &ngx_http_apim_dns[b]; *pr != NULL; pr = &(*pr)->next) {
        r = *pr;

        if (r->port == port && ngx_strcmp(r->host, host) == 0) {
            if (r->expires > now) {
                return r;
            }

            *pr = r->next;
            free(r);
            ngx_http_apim_dns_count--;
            break;
        }
    }

    if (ngx_http_apim_dns_count >= APIM_UPSTREAM_DNS_MAX) {
        ngx_http_apim_upstream_dns_flush();
    }

    r = calloc(1, sizeof(ngx_http_apim_resolved_t));
    if (r == NULL) {
        return NULL;
    }

    ngx_cpystrn((u_char *) r->host, (u_char *) host, sizeof(r->host));
    r->port = port;

    ngx_memzero(&hints, sizeof(struct addrinfo));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;

    ngx_sprintf((u_char *) serv, "%d%Z", (int) port);

    rc = getaddrinfo(host, serv, &hints, &res);
    if (rc != 0) {
        r->err = rc;
        r->expires = now + APIM_UPSTREAM_DNS_NEG_TTL;

    } else {
        for (ai = res; ai != NULL; ai = ai->ai_next) {
            if (r->naddrs == APIM_UPSTREAM_MAX_ADDRS) {
                break;
            }

            if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
                || ai->ai_addrlen > sizeof(struct sockaddr_storage))
            {
                continue;
            }

            ngx_memcpy(&r->addrs[r->naddrs], ai->ai_addr, ai->ai_addrlen);
            r->socklen[r->naddrs] = ai->ai_addrlen;
            r->naddrs++;
        }

        freeaddrinfo(res);
        r->expires = now + APIM_UPSTREAM_DNS_TTL;
    }

    r->next = ngx_http_apim_dns[b];
    ngx_http_apim_dns[b] = r;
    ngx_http_apim_dns_count++;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "apim: resolved %s:%d, %ui addresses", host, (int) port,
                   r->naddrs);

    return r;
}


/*
 * nginx's keepalive module reuses a cached connection for a peer whose
 * sockaddr (bytes and length) equals the cached one's. A TLS connection
 * belongs to the name it was set up for (SNI, and the name its certificate
 * was verified against), so the sockaddr of an https peer carries its
 * endpoint's host after the address: two endpoints with different names on
 * one address never share connections. connect() reads the address and
 * ignores the bytes after it (Linux checks only the minimum length).
 * Names that do not fit (in ngx_sockaddr_t, what the keepalive module
 * copies) are tagged with their 64-bit FNV-1a hash.
 */
static size_t
ngx_http_apim_upstream_tag_len(ngx_http_apim_endpoint_t *ep, socklen_t len)
{
    size_t  room;

    room = sizeof(ngx_sockaddr_t) - len;    /* the keepalive cache's copy */

    return ep->host.len + 1 <= room ? ep->host.len + 1 : sizeof(uint64_t);
}


static void
ngx_http_apim_upstream_tag(ngx_http_apim_endpoint_t *ep, u_char *p,
    size_t len)
{
    size_t    i;
    uint64_t  h;

    if (len == ep->host.len + 1) {
        ngx_memcpy(p, ep->host.data, ep->host.len);
        p[ep->host.len] = '\0';
        return;
    }

    h = 14695981039346656037ULL;
    for (i = 0; i < ep->host.len; i++) {
        h ^= ep->host.data[i];
        h *= 1099511628211ULL;
    }

    ngx_memcpy(p, &h, sizeof(uint64_t));
}


/* one {"url": ..., "config": {...}} into ep; its addresses appended to
 * peers (at most max); NGX_DECLINED: not usable (logged) */
static ngx_int_t
ngx_http_apim_upstream_endpoint(ngx_http_apim_snap_t *s, json_t *e,
    ngx_http_apim_endpoint_t *ep, ngx_http_apim_peer_t *peers,
    ngx_uint_t *npeers, ngx_uint_t max, ngx_log_t *log)
{
    u_char                     text[NGX_SOCKADDR_STRLEN];
    int               rc;
    char              host[256];
    size_t            len, hl;
    u_char           *p, *end, *h, *he, *auth_end, *q;
    in_port_t         pn;
    const char       *url;
    ngx_uint_t        n;
    size_t                     tag;
    ngx_http_apim_peer_t      *peer;
    ngx_http_apim_resolved_t  *ra;

    url = ngx_http_apim_jstr(e, "url");
    if (url == NULL) {
        return NGX_DECLINED;
    }

    len = ngx_strlen(url);
    if (len > APIM_UPSTREAM_MAX_URL) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "apim: endpoint URL longer than %d characters",
                      APIM_UPSTREAM_MAX_URL);
        return NGX_DECLINED;
    }

    p = (u_char *) url;
    end = p + len;

    if (len > 7 && ngx_strncasecmp(p, (u_char *) "http://", 7) == 0) {
        ep->ssl = 0;
        p += 7;
        pn = 80;

    } else if (len > 8 && ngx_strncasecmp(p, (u_char *) "https://", 8) == 0) {
        ep->ssl = 1;
        p += 8;
        pn = 443;

    } else {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "apim: endpoint \"%s\" is not an http or https URL", url);
        return NGX_DECLINED;
    }

    auth_end = p;
    while (auth_end < end && *auth_end != '/' && *auth_end != '?'
           && *auth_end != '#')
    {
        auth_end++;
    }

    if (*p == '[') {
        h = p + 1;
        he = ngx_strlchr(h, auth_end, ']');
        if (he == NULL) {
            goto invalid;
        }
        q = he + 1;

    } else {
        h = p;
        he = ngx_strlchr(h, auth_end, ':');
        if (he == NULL) {
            he = auth_end;
        }
        q = he;
    }

    hl = he - h;
    if (hl == 0 || hl >= sizeof(host)) {
        goto invalid;
    }

    if (q < auth_end) {
        if (*q != ':' || q + 1 == auth_end || auth_end - q - 1 > 5) {
            goto invalid;
        }

        rc = ngx_atoi(q + 1, auth_end - q - 1);
        if (rc <= 0 || rc > 65535) {
            goto invalid;
        }

        pn = (in_port_t) rc;
    }

    ngx_memcpy(host, h, hl);
    host[hl] = '\0';

    for (n = 0; n < hl; n++) {
        if (host[n] <= ' ' || host[n] == '@' || host[n] == '%') {
            goto invalid;
        }
    }

    /* the path up to the query, without trailing slashes */
    q = auth_end;
    while (q < end && *q != '?' && *q != '#') {
        q++;
    }

    while (q > auth_end && q[-1] == '/') {
        q--;
    }

    /* an IPv6 address keeps its brackets: nginx sends no SNI for it */
    if (ngx_http_apim_upstream_str(s, &ep->host, *p == '[' ? p : h,
                                   *p == '[' ? hl + 2 : hl)
           != NGX_OK
        || ngx_http_apim_upstream_str(s, &ep->authority, p, auth_end - p)
           != NGX_OK
        || ngx_http_apim_upstream_str(s, &ep->path, auth_end, q - auth_end)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* $apim_backend: the URL without trailing slashes */
    q = end;
    while (q > auth_end && q[-1] == '/') {
        q--;
    }

    if (ngx_http_apim_upstream_str(s, &ep->url, (u_char *) url, q - (u_char *) url)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ep->timeout = ngx_http_apim_upstream_timeout(json_object_get(e, "config"));

    /* the addresses (this is the background thread: blocking is fine) */
    ep->first = *npeers;
    ep->naddrs = 0;

    ra = ngx_http_apim_upstream_resolve(host, pn, log);
    if (ra == NULL) {
        return NGX_ERROR;
    }

    if (ra->err != 0) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "apim: endpoint %s: cannot resolve \"%s\": %s",
                      url, host, gai_strerror(ra->err));
        return NGX_OK;
    }

    for (n = 0; n < ra->naddrs; n++) {
        if (*npeers == max) {
            break;
        }

        peer = &peers[*npeers];

        tag = ep->ssl ? ngx_http_apim_upstream_tag_len(ep, ra->socklen[n])
                      : 0;

        /* exact sizes: 10,000 APIs hold as many of these */
        peer->name.len = ngx_sock_ntop((struct sockaddr *) &ra->addrs[n],
                                       ra->socklen[n], text,
                                       NGX_SOCKADDR_STRLEN, 1);
        peer->sockaddr = ngx_http_apim_alloc(s, ra->socklen[n] + tag);
        peer->name.data = ngx_http_apim_alloc(s, peer->name.len);
        if (peer->sockaddr == NULL || peer->name.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(peer->sockaddr, &ra->addrs[n], ra->socklen[n]);
        ngx_memcpy(peer->name.data, text, peer->name.len);
        peer->socklen = ra->socklen[n];

        if (tag) {
            ngx_http_apim_upstream_tag(ep, (u_char *) peer->sockaddr
                                           + peer->socklen, tag);
            peer->socklen += tag;
        }

        peer->endpoint = 0;     /* set by the caller */

        (*npeers)++;
        ep->naddrs++;
    }

    return NGX_OK;

invalid:

    ngx_log_error(NGX_LOG_ERR, log, 0, "apim: invalid endpoint URL \"%s\"",
                  url);

    return NGX_DECLINED;
}


static void
ngx_http_apim_upstream_collect(json_t *v, json_t **list, ngx_uint_t *n,
    ngx_uint_t all)
{
    size_t   i;
    json_t  *e;

    if (json_is_object(v)) {
        if (*n < APIM_UPSTREAM_MAX_ENDPOINTS) {
            list[(*n)++] = v;
        }
        return;
    }

    json_array_foreach(v, i, e) {
        if (*n == APIM_UPSTREAM_MAX_ENDPOINTS || (!all && i > 0)) {
            break;
        }

        if (json_is_object(e)) {
            list[(*n)++] = e;
        }
    }
}


ngx_http_apim_upstream_t *
ngx_http_apim_upstream_build(ngx_http_apim_snap_t *s, json_t *endpoint_config,
    const char *which, ngx_log_t *log)
{
    char                       failovers[64];
    size_t                     len;
    json_t                    *list[APIM_UPSTREAM_MAX_ENDPOINTS];
    ngx_int_t                  rc;
    ngx_uint_t                 i, n, max;
    const char                *type;
    ngx_http_apim_peer_t      *peers;
    ngx_http_apim_upstream_t  *up;

    if (!json_is_object(endpoint_config)) {
        return NULL;
    }

    type = ngx_http_apim_jstr(endpoint_config, "endpoint_type");

    up = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_upstream_t));
    if (up == NULL) {
        return NULL;
    }

    ngx_memzero(up, sizeof(ngx_http_apim_upstream_t));

    if (type != NULL && ngx_strcmp(type, "load_balance") == 0) {
        up->type = APIM_UPSTREAM_BALANCE;

    } else if (type != NULL && ngx_strcmp(type, "failover") == 0) {
        up->type = APIM_UPSTREAM_FAILOVER;

    } else {
        up->type = APIM_UPSTREAM_SINGLE;
    }

    n = 0;

    ngx_http_apim_upstream_collect(json_object_get(endpoint_config, which),
                                   list, &n,
                                   up->type == APIM_UPSTREAM_BALANCE);

    if (n == 0) {
        return NULL;
    }

    if (up->type == APIM_UPSTREAM_FAILOVER) {
        /* "production_endpoints" -> "production_failovers" */
        len = ngx_strlen(which);
        if (len > sizeof("_endpoints") - 1 && len < sizeof(failovers) - 1
            && ngx_strcmp(which + len - (sizeof("_endpoints") - 1),
                          "_endpoints") == 0)
        {
            ngx_memcpy(failovers, which, len - (sizeof("_endpoints") - 1));
            ngx_memcpy(failovers + len - (sizeof("_endpoints") - 1),
                       "_failovers", sizeof("_failovers"));

            n = 1;
            ngx_http_apim_upstream_collect(
                              json_object_get(endpoint_config, failovers),
                              list, &n, 1);
        }
    }

    max = n * APIM_UPSTREAM_MAX_ADDRS;

    up->endpoints = ngx_http_apim_alloc(s,
                                   n * sizeof(ngx_http_apim_endpoint_t));
    up->rr = ngx_http_apim_alloc(s, sizeof(ngx_uint_t));

    /* resolved into a scratch array, kept at its exact size below */
    peers = malloc(max * sizeof(ngx_http_apim_peer_t));

    if (up->endpoints == NULL || up->rr == NULL || peers == NULL) {
        free(peers);
        return NULL;
    }

    up->peers = peers;

    ngx_memzero(up->endpoints, n * sizeof(ngx_http_apim_endpoint_t));
    *up->rr = 0;

    for (i = 0; i < n; i++) {
        rc = ngx_http_apim_upstream_endpoint(s, list[i],
                                             &up->endpoints[up->nendpoints],
                                             peers, &up->npeers, max, log);
        if (rc == NGX_ERROR) {
            free(peers);
            return NULL;
        }

        if (rc == NGX_OK) {
            up->nendpoints++;
        }
    }

    up->peers = NULL;

    if (up->nendpoints == 0) {
        free(peers);
        return NULL;
    }

    /* none resolved: the balancer answers 502 */
    up->peers = ngx_http_apim_alloc(s, (up->npeers ? up->npeers : 1)
                                       * sizeof(ngx_http_apim_peer_t));
    if (up->peers == NULL) {
        free(peers);
        return NULL;
    }

    ngx_memcpy(up->peers, peers, up->npeers * sizeof(ngx_http_apim_peer_t));
    free(peers);

    /* the endpoint index of each peer (set relative above) */
    for (i = 0; i < up->nendpoints; i++) {
        for (n = 0; n < up->endpoints[i].naddrs; n++) {
            up->peers[up->endpoints[i].first + n].endpoint = i;
        }
    }

    return up;
}


/* -- request path ----------------------------------------------------------- */

static u_char *
ngx_http_apim_upstream_copy_str(u_char *p, ngx_str_t *dst,
    const ngx_str_t *src)
{
    dst->len = src->len;
    dst->data = p;

    return ngx_cpymem(p, src->data, src->len + 1);
}


ngx_int_t
ngx_http_apim_upstream_set(ngx_http_request_t *r, ngx_http_apim_ctx_t *ctx,
    const ngx_http_apim_upstream_t *up)
{
    u_char                        *p;
    size_t                         size, heads;
    ngx_uint_t                     i, start;
    ngx_http_apim_peer_t          *peer;
    ngx_http_apim_endpoint_t      *ep;
    const ngx_http_apim_endpoint_t  *src;
    ngx_http_apim_upstream_req_t  *rq;

    /* one allocation: the structures, the addresses, then the strings
     * (copies: the snapshot may be freed while the request waits) */
    heads = ngx_align(sizeof(ngx_http_apim_upstream_req_t), sizeof(void *))
            + up->nendpoints * sizeof(ngx_http_apim_endpoint_t)
            + (up->npeers + 1) * sizeof(ngx_http_apim_peer_t);
    size = heads;

    for (i = 0; i < up->npeers; i++) {
        size += ngx_align(up->peers[i].socklen, sizeof(void *));
    }

    for (i = 0; i < up->nendpoints; i++) {
        src = &up->endpoints[i];
        size += src->url.len + src->host.len + src->authority.len
                + src->path.len + 4;
    }

    for (i = 0; i < up->npeers; i++) {
        size += up->peers[i].name.len + 1;
    }

    p = ngx_palloc(r->pool, size);
    if (p == NULL) {
        return NGX_ERROR;
    }

    rq = (ngx_http_apim_upstream_req_t *) p;
    ngx_memzero(rq, sizeof(ngx_http_apim_upstream_req_t));
    p += ngx_align(sizeof(ngx_http_apim_upstream_req_t), sizeof(void *));

    rq->endpoints = (ngx_http_apim_endpoint_t *) p;
    p += up->nendpoints * sizeof(ngx_http_apim_endpoint_t);

    rq->peers = (ngx_http_apim_peer_t *) p;
    p += (up->npeers + 1) * sizeof(ngx_http_apim_peer_t);

    for (i = 0; i < up->npeers; i++) {
        peer = &rq->peers[i];
        *peer = up->peers[i];
        peer->sockaddr = (struct sockaddr *) p;
        ngx_memcpy(p, up->peers[i].sockaddr, peer->socklen);
        p += ngx_align(peer->socklen, sizeof(void *));
    }

    for (i = 0; i < up->nendpoints; i++) {
        rq->endpoints[i] = up->endpoints[i];
        ep = &rq->endpoints[i];
        src = &up->endpoints[i];

        p = ngx_http_apim_upstream_copy_str(p, &ep->url, &src->url);
        p = ngx_http_apim_upstream_copy_str(p, &ep->host, &src->host);
        p = ngx_http_apim_upstream_copy_str(p, &ep->authority,
                                            &src->authority);
        p = ngx_http_apim_upstream_copy_str(p, &ep->path, &src->path);
    }

    for (i = 0; i < up->npeers; i++) {
        p = ngx_http_apim_upstream_copy_str(p, &rq->peers[i].name,
                                            &up->peers[i].name);
    }

    rq->nendpoints = up->nendpoints;
    rq->npeers = up->npeers;

    start = 0;

    if (up->type == APIM_UPSTREAM_BALANCE) {
        /* per worker: only this process's event loop writes it */
        start = (*up->rr)++ % up->nendpoints;
    }

    rq->start = start;
    rq->current = start;
    rq->first_peer = rq->endpoints[start].first;

    ctx->upstream = rq;

    ep = &rq->endpoints[start];
    ctx->backend = ep->url;

    if (ctx->rest.len == 0 && ep->path.len == 0) {
        /* the API's root: a backend URL without a path still needs "/",
         * or proxy_pass would send the client's URI */
        ngx_str_set(&ctx->rest, "/");
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_apim_upstream_uri(ngx_http_request_t *r, ngx_http_apim_ctx_t *ctx)
{
    u_char                        *p, *dst, *src;
    size_t                         len;
    ngx_http_apim_endpoint_t      *ep;
    ngx_http_apim_upstream_req_t  *rq;

    rq = ctx->upstream;
    ep = &rq->endpoints[rq->start];

    /* upstream_set made ctx->rest "/" when both are empty */
    len = ep->path.len + ctx->rest.len;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ngx_cpymem(p, ep->path.data, ep->path.len), ctx->rest.data,
               ctx->rest.len);

    if (r->internal) {
        /* nginx escapes the URI of an internal request: unescaped then */
        dst = ngx_pnalloc(r->pool, len);
        if (dst == NULL) {
            return NGX_ERROR;
        }

        src = p;
        p = dst;
        ngx_unescape_uri(&dst, &src, len, NGX_UNESCAPE_URI);
        len = dst - p;

    } else {
        /* sent as it is (it is escaped), not the client's URI */
        r->quoted_uri = 0;
    }

    r->uri.data = p;
    r->uri.len = len;
    r->valid_unparsed_uri = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_apim_upstream_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                        *p;
    ngx_http_apim_ctx_t           *ctx;
    ngx_http_apim_endpoint_t      *ep;
    ngx_http_apim_upstream_req_t  *rq;

    ctx = ngx_http_get_module_ctx(r, ngx_http_apim_module);

    if (ctx == NULL || ctx->upstream == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    rq = ctx->upstream;
    ep = &rq->endpoints[rq->start];

    switch (data) {

    case APIM_UPSTREAM_VAR_SCHEME:
        if (ep->ssl) {
            v->data = (u_char *) "https";
            v->len = 5;
        } else {
            v->data = (u_char *) "http";
            v->len = 4;
        }
        break;

    case APIM_UPSTREAM_VAR_URI:
        v->len = ep->path.len + ctx->rest.len;
        if (v->len == 0) {
            v->data = (u_char *) "/";
            v->len = 1;
            break;
        }

        p = ngx_pnalloc(r->pool, v->len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;
        p = ngx_cpymem(p, ep->path.data, ep->path.len);
        ngx_memcpy(p, ctx->rest.data, ctx->rest.len);
        break;

    case APIM_UPSTREAM_VAR_HOST:
        v->data = ep->authority.data;
        v->len = ep->authority.len;
        break;

    default: /* APIM_UPSTREAM_VAR_NAME */
        ep = &rq->endpoints[rq->current];
        v->data = ep->host.data;
        v->len = ep->host.len;
        break;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* -- balancer ----------------------------------------------------------------- */

static ngx_int_t
ngx_http_apim_upstream_get_peer(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_apim_upstream_req_t  *rq = data;

    ngx_uint_t                 i;
    ngx_http_apim_peer_t      *peer;
    ngx_http_apim_endpoint_t  *ep;

    if (rq->tried >= rq->npeers) {
        return NGX_BUSY;
    }

    i = (rq->first_peer + rq->tried) % rq->npeers;
    rq->tried++;

    peer = &rq->peers[i];
    rq->current = peer->endpoint;
    ep = &rq->endpoints[peer->endpoint];

    pc->sockaddr = peer->sockaddr;
    pc->socklen = peer->socklen;
    pc->name = &peer->name;

    if (rq->conf != NULL) {
        if (ep->timeout) {
            rq->conf->connect_timeout = ep->timeout;
            rq->conf->send_timeout = ep->timeout;
            rq->conf->read_timeout = ep->timeout;

        } else {
            rq->conf->connect_timeout = rq->connect_timeout;
            rq->conf->send_timeout = rq->send_timeout;
            rq->conf->read_timeout = rq->read_timeout;
        }
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "apim balancer: peer %V of endpoint %V",
                   &peer->name, &ep->url);

    return NGX_OK;
}


static void
ngx_http_apim_upstream_free_peer(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state)
{
    if (pc->tries) {
        pc->tries--;
    }
}


#if (NGX_HTTP_SSL)

static ngx_int_t
ngx_http_apim_upstream_set_session(ngx_peer_connection_t *pc, void *data)
{
    return NGX_OK;
}


static void
ngx_http_apim_upstream_save_session(ngx_peer_connection_t *pc, void *data)
{
}

#endif


static ngx_int_t
ngx_http_apim_upstream_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_uint_t                     i, own;
    ngx_http_upstream_t           *u;
    ngx_http_apim_ctx_t           *ctx;
    ngx_http_upstream_conf_t      *ucf;
    ngx_http_apim_upstream_req_t  *rq;

    ctx = ngx_http_get_module_ctx(r, ngx_http_apim_module);

    if (ctx == NULL || ctx->upstream == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "apim_balancer: the request was not routed by "
                      "apim_gateway");
        return NGX_ERROR;
    }

    rq = ctx->upstream;
    u = r->upstream;

    u->peer.data = rq;
    u->peer.get = ngx_http_apim_upstream_get_peer;
    u->peer.free = ngx_http_apim_upstream_free_peer;
    u->peer.tries = rq->npeers ? rq->npeers : 1;
#if (NGX_HTTP_SSL)
    u->peer.set_session = ngx_http_apim_upstream_set_session;
    u->peer.save_session = ngx_http_apim_upstream_save_session;
#endif

    rq->tried = 0;

#if (NGX_HTTP_SSL)
    /* the scheme of the request's first endpoint, as its URI and Host */
    if (rq->endpoints[rq->start].ssl && u->conf->ssl == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "apim_balancer: endpoint \"%V\" is https, but "
                      "proxy_pass names neither https://apim_backend nor "
                      "variables",
                      &rq->endpoints[rq->start].url);
        return NGX_ERROR;
    }

    u->ssl = rq->endpoints[rq->start].ssl ? 1 : 0;
#endif

    own = 0;
    for (i = 0; i < rq->nendpoints; i++) {
        if (rq->endpoints[i].timeout) {
            own = 1;
            break;
        }
    }

    if (own && rq->conf == NULL) {
        /* the location's settings are shared: the request gets a copy */
        ucf = ngx_palloc(r->pool, sizeof(ngx_http_upstream_conf_t));
        if (ucf == NULL) {
            return NGX_ERROR;
        }

        *ucf = *u->conf;
        u->conf = ucf;

        rq->conf = ucf;
        rq->connect_timeout = ucf->connect_timeout;
        rq->send_timeout = ucf->send_timeout;
        rq->read_timeout = ucf->read_timeout;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_apim_upstream_init(ngx_conf_t *cf, ngx_http_upstream_srv_conf_t *us)
{
    us->peer.init = ngx_http_apim_upstream_init_peer;

    return NGX_OK;
}


/* -- configuration ------------------------------------------------------------ */

static char *
ngx_http_apim_balancer(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_upstream_server_t    *us;
    ngx_http_upstream_srv_conf_t  *uscf;

    uscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_upstream_module);

    if (uscf->peer.init_upstream) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "load balancing method redefined");
    }

    uscf->peer.init_upstream = ngx_http_apim_upstream_init;
    uscf->flags = NGX_HTTP_UPSTREAM_CREATE;

    /* the upstream block wants a server; ours come from the snapshot */
    if (uscf->servers != NULL && uscf->servers->nelts == 0) {
        us = ngx_array_push(uscf->servers);
        if (us == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(us, sizeof(ngx_http_upstream_server_t));
        ngx_str_set(&us->name, "apim_balancer");
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_apim_upstream_preconf(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_apim_upstream_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}
