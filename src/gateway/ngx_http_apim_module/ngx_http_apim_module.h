/*
 * ngx_http_apim_module.h: the types and functions the files of the apim
 * gateway module share. See ngx_http_apim_module.c for the design.
 */

#ifndef NGX_HTTP_APIM_MODULE_H
#define NGX_HTTP_APIM_MODULE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <pthread.h>
#include <sys/stat.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <nats/nats.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>


#define APIM_POLL_MS        200
#define APIM_GRACE_MS       5000
#define APIM_LEEWAY         30
/* the key manager name of our own Key Manager's key mappings */
#define APIM_RESIDENT_KM    "Resident Key Manager"
#define APIM_MAX_SEGMENTS   32


typedef struct {
    ngx_str_t                   snapshot_file;
    ngx_str_t                   control_plane_url;
    ngx_str_t                   credential;
    ngx_str_t                   label;
    ngx_str_t                   event_hub_url;
    ngx_str_t                   cache_file;
    ngx_str_t                   cp_ca_file;
    /* the backend JWT (ngx_http_apim_backend_jwt.c) */
    ngx_flag_t                  backend_jwt;
    ngx_str_t                   backend_jwt_key;    /* PEM path */
    EVP_PKEY                   *backend_pkey;
    ngx_str_t                   backend_kid;
    ngx_str_t                   backend_jwks;       /* the JWKS document */
} ngx_http_apim_main_conf_t;


typedef struct {
    ngx_flag_t                  enable;
    ngx_flag_t                  backend_uri;    /* apim_backend_uri */
} ngx_http_apim_loc_conf_t;


/*
 * One string -> value map, open addressing (linear probing). Its slots
 * are in pages of at most APIM_MAP_PAGE; a snapshot made by a delta shares
 * the old snapshot's pages and copies only those it writes (refs: maps
 * using the page; the feed thread alone changes it). Keys and values live
 * in the arenas. Read-only once published.
 */
#define APIM_MAP_PAGE       4096

typedef struct {
    const char                 *key;
    size_t                      len;
    void                       *value;
} ngx_http_apim_slot_t;

typedef struct {
    ngx_uint_t                  refs;
    ngx_http_apim_slot_t        slots[];
} ngx_http_apim_page_t;

typedef struct {
    ngx_http_apim_page_t      **pages;      /* malloc'd, this map's own */
    size_t                      cap;        /* power of two, or 0 */
    size_t                      n;          /* keys in use */
} ngx_http_apim_map_t;


typedef struct {
    const char                 *target;     /* "/menu/{id}", "/orders/..." */
    const char                 *verb;       /* GET, POST... */
    ngx_uint_t                  auth_none;
    const char                **scopes;     /* every one is required */
    size_t                      nscopes;
    const char                 *tier;       /* resource policy, or NULL */
    size_t                      literal;    /* literal characters: sort key */
    ngx_uint_t                  wildcard;
} ngx_http_apim_op_t;


/* opaque: ngx_http_apim_upstream.c and ngx_http_apim_cors.c */
typedef struct ngx_http_apim_upstream_s  ngx_http_apim_upstream_t;
typedef struct ngx_http_apim_cors_s  ngx_http_apim_cors_t;
/* opaque: ngx_http_apim_block.c and ngx_http_apim_burst.c */
typedef struct ngx_http_apim_blocks_s  ngx_http_apim_blocks_t;
typedef struct ngx_http_apim_bursts_s  ngx_http_apim_bursts_t;
typedef struct ngx_http_apim_max_tps_s  ngx_http_apim_max_tps_t;

typedef struct {
    const char                 *id;
    const char                 *name;
    const char                 *version;
    const char                 *context;    /* "/pizzashack" */
    const char                 *provider;
    const char                 *tier;       /* API-level policy, or NULL */
    ngx_uint_t                  blocked;    /* lifecycle state BLOCKED */
    ngx_http_apim_upstream_t   *prod;       /* NULL: no production endpoint */
    ngx_http_apim_upstream_t   *sand;       /* NULL: no sandbox endpoint */
    ngx_http_apim_cors_t       *cors;       /* NULL: CORS disabled */
    ngx_http_apim_op_t         *ops;        /* most specific first */
    size_t                      nops;
    ngx_uint_t                  security;   /* APIM_SEC_*, from securityScheme */
    const char                 *api_key_header;  /* apiKeyHeader, or NULL */
    ngx_http_apim_max_tps_t    *max_tps;    /* NULL: none (burst.c) */
} ngx_http_apim_api_t;

/* ngx_http_apim_api_t.security: the credentials an API accepts */
#define APIM_SEC_OAUTH2     0x01
#define APIM_SEC_API_KEY    0x02
#define APIM_SEC_BASIC      0x04


typedef struct {
    const char                 *id;
    const char                 *name;
    const char                 *owner;
    const char                 *tier;       /* application policy */
} ngx_http_apim_app_t;


typedef struct {
    const ngx_http_apim_app_t  *app;
    ngx_uint_t                  sandbox;
    const char                 *key_manager;  /* NULL: our Key Manager */
} ngx_http_apim_keymap_t;


typedef struct {
    const char                 *status;     /* UNBLOCKED, BLOCKED... */
    const char                 *tier;       /* subscription policy */
} ngx_http_apim_sub_t;


typedef struct {
    EVP_PKEY                   *pkey;
    const char                 *issuer;     /* NULL: any */
    /* another issuer's key (ngx_http_apim_jwks.c); NULL for ours */
    const char                 *key_manager;        /* its name */
    const char                 *consumer_key_claim; /* NULL: azp, client_id */
    const char                 *scopes_claim;       /* NULL: scope */
} ngx_http_apim_jwk_t;


/* one large block of an arena */
typedef struct ngx_http_apim_mem_s  ngx_http_apim_mem_t;

struct ngx_http_apim_mem_s {
    ngx_http_apim_mem_t        *next;
};


/* opaque: ngx_http_apim_jwks.c, the snapshot's enabled other issuers */
typedef struct ngx_http_apim_issuers_s  ngx_http_apim_issuers_t;

/* opaque: ngx_http_apim_throttle.c, the snapshot's rate limits */
typedef struct ngx_http_apim_limits_s  ngx_http_apim_limits_t;


/*
 * Bump allocator in large blocks. A full build fills one arena; each delta
 * adds a small one. A snapshot references every arena its entries live in
 * (refs: snapshots using it; the feed thread alone changes it), so an
 * entry shared by consecutive snapshots lives as long as the last of them.
 */
typedef struct {
    ngx_uint_t                  refs;
    ngx_http_apim_mem_t        *blocks;
    u_char                     *pos;
    u_char                     *end;
    size_t                      block;      /* size of the next block */
    size_t                      size;       /* bytes in blocks */
} ngx_http_apim_arena_t;


typedef struct ngx_http_apim_snap_s  ngx_http_apim_snap_t;

struct ngx_http_apim_snap_s {
    json_t                     *root;       /* while building only: "seq",
                                               "keyManagers"; NULL after */
    int64_t                     seq;        /* control plane change seq */
    uint64_t                    gen;        /* unique per snapshot built */
    ngx_http_apim_arena_t      *arena;      /* where alloc() goes */
    ngx_http_apim_arena_t     **arenas;     /* every arena used (malloc'd) */
    size_t                      narenas;
    ngx_uint_t                  deltas;     /* applied since the last full */
    ngx_http_apim_map_t         apis;       /* "/ctx/ver" and "/ctx" (default) */
    ngx_http_apim_map_t         apps;       /* id -> app */
    ngx_http_apim_map_t         keys;       /* consumerKey -> keymap */
    ngx_http_apim_map_t         subs;       /* "appId\napiId" -> sub */
    ngx_http_apim_map_t         revoked;    /* jti -> non-NULL */
    ngx_http_apim_map_t         jwks;       /* kid -> jwk */
    ngx_http_apim_jwk_t       **pkeys;      /* for EVP_PKEY_free */
    size_t                      npkeys;
    ngx_http_apim_issuers_t    *issuers;    /* other issuers, or NULL */
    /* full builds only (a change of either makes a full snapshot);
     * deltas share them */
    ngx_http_apim_blocks_t     *blocks;     /* enabled blockConditions */
    ngx_http_apim_bursts_t     *bursts;     /* subscription burst limits */
    ngx_http_apim_limits_t     *limits;     /* rate limits, or NULL */
    ngx_http_apim_snap_t       *retired_next;
    ngx_msec_t                  retired_at;
};


/*
 * Per request, in r->pool. The access handler (ngx_http_apim_module.c)
 * fills it with copies, never pointers into a snapshot, because a
 * snapshot may be freed APIM_GRACE_MS after it was replaced while the
 * request still waits for its body or its upstream. Every ngx_str_t field
 * is also a variable $apim_<field>.
 */
typedef struct {
    ngx_str_t                   api_id;
    ngx_str_t                   api_name;
    ngx_str_t                   api_version;
    ngx_str_t                   api_context;
    ngx_str_t                   api_tier;
    ngx_str_t                   app_id;
    ngx_str_t                   app_name;
    ngx_str_t                   app_owner;
    ngx_str_t                   app_tier;
    ngx_str_t                   subscription_tier;
    ngx_str_t                   user;          /* the token's sub */
    ngx_str_t                   resource;      /* "GET /menu/{id}" */
    ngx_str_t                   resource_tier;
    ngx_str_t                   key_type;      /* PRODUCTION, SANDBOX, "" */
    ngx_str_t                   fault_code;    /* "900901"..., "" if none */
    ngx_str_t                   rest;          /* path below the API */
    /* set by ngx_http_apim_upstream_set() */
    ngx_str_t                   backend;       /* endpoint URL, no "/" */
    void                       *upstream;      /* balancer state, r->pool */
    /* set by the access handler for ngx_http_apim_cors.c's header filter */
    ngx_str_t                   cors_origin;   /* Access-Control-Allow-Origin */
    ngx_uint_t                  cors_credentials;
    /* ngx_http_apim_throttle.c: "true" when a subscription policy with
     * stopOnQuotaReach false let the request pass over its limit */
    ngx_str_t                   throttled_out;
    /* ngx_http_apim_throttle.c: the bandwidth limits that admitted the
     * request, counted in the log phase (r->pool), or NULL */
    void                       *throttle_bytes;
} ngx_http_apim_ctx_t;


typedef struct {
    const char                 *code;
    ngx_uint_t                  status;
    const char                 *message;
    const char                 *description;
} ngx_http_apim_fault_t;


/* ngx_http_apim_snapshot.c: immutable data, built by the background thread */
void *ngx_http_apim_alloc(ngx_http_apim_snap_t *s, size_t size);
void *ngx_http_apim_map_get(const ngx_http_apim_map_t *m, const u_char *key,
    size_t len);
const char *ngx_http_apim_jstr(json_t *o, const char *name);
ngx_http_apim_snap_t *ngx_http_apim_snap_build(json_t *root, const char *path,
    ngx_log_t *log);
ngx_http_apim_snap_t *ngx_http_apim_snap_load(const char *path, ngx_log_t *log);
/* a full snapshot from its JSON text, parsed one entry at a time: in
 * memory, or read from fd through a small window */
ngx_http_apim_snap_t *ngx_http_apim_snap_parse(const char *data, size_t len,
    const char *path, ngx_log_t *log);
ngx_http_apim_snap_t *ngx_http_apim_snap_load_fd(int fd, const char *path,
    ngx_log_t *log);
/* a new snapshot: old with a delta of /internal/data/v1/changes applied;
 * shares old's unchanged entries */
ngx_http_apim_snap_t *ngx_http_apim_snap_delta(ngx_http_apim_snap_t *old,
    json_t *delta, ngx_log_t *log);
void ngx_http_apim_snap_free(ngx_http_apim_snap_t *s);
/* bytes held by the arenas s uses (for logs) */
size_t ngx_http_apim_snap_bytes(const ngx_http_apim_snap_t *s);

void *ngx_http_apim_strdup(ngx_http_apim_snap_t *s, const char *str);

/*
 * Hooks the snapshot builder calls for each API. They allocate only with
 * ngx_http_apim_alloc()/ngx_http_apim_strdup() on s (the builder decides
 * the lifetime) and keep no pointer into the JSON.
 */

/* ngx_http_apim_upstream.c: the API's endpoints of one kind, from its
 * endpointConfig ("production_endpoints" or "sandbox_endpoints"); NULL
 * when there is none (or on error, logged). */
ngx_http_apim_upstream_t *ngx_http_apim_upstream_build(ngx_http_apim_snap_t *s,
    json_t *endpoint_config, const char *which, ngx_log_t *log);

/* ngx_http_apim_upstream.c: prepares request r to go to up (access phase,
 * after every check passed): copies what the balancer needs into r->pool
 * and sets ctx->backend. NGX_OK or NGX_ERROR. */
ngx_int_t ngx_http_apim_upstream_set(ngx_http_request_t *r,
    ngx_http_apim_ctx_t *ctx, const ngx_http_apim_upstream_t *up);

/* ngx_http_apim_upstream.c: after ngx_http_apim_upstream_set(), makes the
 * request's URI the backend's (the endpoint's path and ctx->rest), which
 * a proxy_pass without variables sends (apim_backend_uri on). NGX_OK or
 * NGX_ERROR. */
ngx_int_t ngx_http_apim_upstream_uri(ngx_http_request_t *r,
    ngx_http_apim_ctx_t *ctx);

/* ngx_http_apim_cors.c: the API's corsConfiguration; NULL when disabled. */
ngx_http_apim_cors_t *ngx_http_apim_cors_build(ngx_http_apim_snap_t *s,
    json_t *cors_config, ngx_log_t *log);

/* ngx_http_apim_jwks.c: the key that signed a token, by its kid and its
 * `iss` claim (NULL when it has none): an enabled other issuer's key (from
 * its JWKS URL) when iss names one, else our Key Manager's (in the
 * snapshot). The caller still checks iss against jwk->issuer. NULL:
 * unknown (an unknown kid of another issuer makes its JWKS be fetched
 * again soon). Request path: no lock, no network. */
const ngx_http_apim_jwk_t *ngx_http_apim_jwk_find(
    const ngx_http_apim_snap_t *s, const char *kid, const char *iss);

/* ngx_http_apim_jwks.c: the public key of a JWK: RSA (n, e) or EC P-256
 * (x, y); NULL for any other or a malformed one. Free with EVP_PKEY_free(). */
EVP_PKEY *ngx_http_apim_jwk_pkey(json_t *jk);

/* ngx_http_apim_jwks.c: hook of the snapshot builder: the enabled other
 * issuers of the snapshot's keyManagers (allocated on s), which it also
 * hands to the JWKS thread of ngx_http_apim_jwks_module. NULL: none. */
ngx_http_apim_issuers_t *ngx_http_apim_issuers_build(ngx_http_apim_snap_t *s,
    json_t *key_managers, ngx_log_t *log);

/*
 * ngx_http_apim_jwt.c: the claims of a verified token (an OAuth JWT or an
 * API key) that the request path uses; the strings are NUL-terminated.
 * Borrowed from the per-worker token cache (or r->pool): valid until the
 * access handler returns, copy what you keep.
 */
#define APIM_TOKEN_MAX      8192

typedef struct {
    time_t                      exp;
    time_t                      nbf;        /* 0: none */
    ngx_uint_t                  api_key;    /* token_type "apiKey" */
    ngx_str_t                   kid;
    ngx_str_t                   iss;
    ngx_str_t                   sub;
    ngx_str_t                   jti;
    ngx_str_t                   aut;        /* APPLICATION, APPLICATION_USER */
    ngx_str_t                   client;     /* azp or client_id */
    ngx_str_t                   scope;      /* space separated */
    ngx_str_t                   key_type;   /* API key: PRODUCTION, SANDBOX */
    ngx_str_t                   app_id;     /* API key: application.uuid */
    ngx_str_t                   apis;       /* API key: subscribedAPIs */
    ngx_str_t                   permitted_ip;  /* API key: permittedIP */
    ngx_str_t                   extra;      /* other claims, JSON members */
    uint64_t                    gen;        /* this verification, unique in
                                               the worker; 0: not cached */
    const ngx_http_apim_jwk_t  *jwk;        /* the key that verified it, in
                                               the snapshot of this call */
} ngx_http_apim_claims_t;

/* NGX_OK and *cl: a valid token (signature, exp, nbf, key, issuer, not
 * revoked, against snap); NGX_DECLINED: invalid; NGX_ERROR */
ngx_int_t ngx_http_apim_jwt_verify(ngx_http_request_t *r,
    const ngx_http_apim_snap_t *snap, ngx_str_t *tok,
    ngx_http_apim_claims_t **cl);
/* drops the worker's cached tokens (exit_process) */
void ngx_http_apim_jwt_cleanup(void);
ngx_uint_t ngx_http_apim_jwt_has_scope(const ngx_http_apim_claims_t *cl,
    const char *scope);
/* 1: api is among an API key's subscribedAPIs (uuid, or name and version) */
ngx_uint_t ngx_http_apim_jwt_subscribed(const ngx_http_apim_claims_t *cl,
    const ngx_http_apim_api_t *api);
ngx_int_t ngx_http_apim_sha256_digest(const u_char *data, size_t len,
    u_char *out);
/* a fast 64-bit hash for table indexes (not collision resistant: compare
 * the keys themselves) */
uint64_t ngx_http_apim_hash64(const u_char *p, size_t len);

/* ngx_http_apim_cors.c: NGX_DECLINED: go on (ctx->cors_* set for the
 * response); otherwise r was answered (a preflight) and the access
 * handler returns this value */
ngx_int_t ngx_http_apim_cors_request(ngx_http_request_t *r,
    ngx_http_apim_ctx_t *ctx, const ngx_http_apim_cors_t *cors);
ngx_int_t ngx_http_apim_cors_init(ngx_conf_t *cf);

/* ngx_http_apim_backend_jwt.c: apim_backend_jwt, apim_backend_jwt_key,
 * apim_jwks */
ngx_int_t ngx_http_apim_backend_jwt_init(ngx_conf_t *cf,
    ngx_http_apim_main_conf_t *amcf);
/* gen: of the snapshot the checks used (the header is cached per
 * verified token, API and snapshot) */
ngx_int_t ngx_http_apim_backend_jwt_set(ngx_http_request_t *r,
    ngx_http_apim_ctx_t *ctx, const ngx_http_apim_claims_t *cl, uint64_t gen);
char *ngx_http_apim_jwks_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

/*
 * ngx_http_apim_block.c: blocking conditions (the Admin API's deny
 * policies). The hook adds one element of "blockConditions" to s->blocks
 * (disabled ones are skipped). The checks return the fault (900805) or
 * NULL; request path, no lock.
 */
ngx_int_t ngx_http_apim_block_add(ngx_http_apim_snap_t *s, json_t *jv,
    ngx_log_t *log);
/* IP and IPRANGE conditions against the client address of the connection */
const ngx_http_apim_fault_t *ngx_http_apim_block_ip(ngx_http_request_t *r,
    const ngx_http_apim_snap_t *s);
/* API, APPLICATION (app may be NULL) and USER (user may be empty) */
const ngx_http_apim_fault_t *ngx_http_apim_block_caller(
    const ngx_http_apim_snap_t *s, const ngx_http_apim_api_t *api,
    const ngx_http_apim_app_t *app, ngx_str_t *user);

/*
 * ngx_http_apim_burst.c: burst control (spike arrest) of subscription
 * tiers and backend maxTps, counted in the shared memory zone of
 * apim_shared_zone (ngx_http_apim_burst_module) by every worker, lock-free.
 * Hooks: a policy of "policies" (subscription level: rateLimitCount per
 * rateLimitTimeUnit) into s->bursts; an API's maxTps. The checks return the
 * fault (900807 with Retry-After, 900801) or NULL.
 */
ngx_int_t ngx_http_apim_burst_add(ngx_http_apim_snap_t *s, json_t *jv,
    ngx_log_t *log);
ngx_http_apim_max_tps_t *ngx_http_apim_max_tps_build(ngx_http_apim_snap_t *s,
    json_t *max_tps, ngx_log_t *log);
const ngx_http_apim_fault_t *ngx_http_apim_burst_check(ngx_http_request_t *r,
    const ngx_http_apim_snap_t *s, const char *tier, const u_char *subkey,
    size_t len);
const ngx_http_apim_fault_t *ngx_http_apim_max_tps_check(
    ngx_http_request_t *r, const ngx_http_apim_api_t *api,
    ngx_uint_t sandbox);

/*
 * ngx_http_apim_throttle.c: rate limits (docs/ARCHITECTURE.md, "Rate
 * limiting"). The builder hook adds one element of the snapshot's
 * "policies" to s->limits. The check (access handler, after the
 * subscription and scope checks, with ctx filled): NGX_OK: admitted and
 * counted; NGX_DECLINED: refused, *fault set (429) and Retry-After added
 * to r's headers; NGX_ERROR. The rest runs on the worker's event loop
 * (the usage timer) and on the usage thread (ngx_http_apim_usage.c).
 */
ngx_int_t ngx_http_apim_throttle_policy(ngx_http_apim_snap_t *s, json_t *pol,
    ngx_log_t *log);
ngx_int_t ngx_http_apim_throttle_check(ngx_http_request_t *r,
    ngx_http_apim_ctx_t *ctx, const ngx_http_apim_snap_t *snap,
    const ngx_http_apim_fault_t **fault);
ngx_int_t ngx_http_apim_throttle_init_process(ngx_cycle_t *cycle,
    const char *url, const char *party);
void ngx_http_apim_throttle_exit_process(void);
/* every 100 ms: applies the decisions the NATS thread queued */
void ngx_http_apim_throttle_tick(ngx_log_t *log);
/* the quota entries changed since the last call, for a usage event: a
 * malloc'd JSON array (NULL: none); *fallback: local limits in force */
json_t *ngx_http_apim_throttle_report(ngx_uint_t *fallback);
/* the log phase: the request's bytes into its bandwidth limits' keys */
void ngx_http_apim_throttle_log(ngx_http_request_t *r,
    ngx_http_apim_ctx_t *ctx);

/*
 * ngx_http_apim_metrics.c: counters and per-worker gauges in a shared
 * memory zone, summed over the workers by apim_metrics (Prometheus). Any
 * thread of a worker may call these; atomic, no lock, no-ops without the
 * zone.
 */
#define APIM_METRIC_PROXIED         0   /* requests a backend answered */
#define APIM_METRIC_UPSTREAM_FAILED 1   /* no endpoint answered (502, 504) */
#define APIM_METRIC_OTHER           2   /* neither proxied nor a fault */
#define APIM_METRIC_FAILOVERS       3   /* tries after the first */
#define APIM_METRIC_FULL_SYNCS      4   /* full snapshots loaded */
#define APIM_METRIC_DELTAS          5   /* deltas applied */
#define APIM_METRIC_USAGE_PUBLISHED 6   /* usage windows published */
#define APIM_METRIC_USAGE_LOST      7   /* usage windows lost (no NATS) */
#define APIM_METRIC_USAGE_DROPPED   8   /* requests left out of an event */
#define APIM_METRIC_FALLBACKS       9   /* Traffic Manager lost */
#define APIM_METRIC_N               10

#define APIM_GAUGE_SYNCED           0   /* control plane last answered, s */
#define APIM_GAUGE_EVENT_HUB        1   /* NATS connected 0/1; -1: none */
#define APIM_GAUGE_FALLBACK         2   /* local rate limits 0/1 */
#define APIM_GAUGE_N                3

void ngx_http_apim_metrics_add(ngx_uint_t counter, uint64_t n);
void ngx_http_apim_metrics_gauge(ngx_uint_t gauge, int64_t value);

/* ngx_http_apim_feed.c: the per-worker background thread */
extern ngx_http_apim_snap_t  *ngx_http_apim_current;   /* atomic */
ngx_int_t ngx_http_apim_init_process(ngx_cycle_t *cycle);
void ngx_http_apim_exit_process(ngx_cycle_t *cycle);
ngx_msec_t ngx_http_apim_now_ms(void);
/* sets the servers of opts from urls, a comma-separated list (every
 * server of a NATS cluster): natsOptions_SetURL takes one URL only */
natsStatus ngx_http_apim_nats_servers(natsOptions *opts, const char *urls);

extern ngx_module_t  ngx_http_apim_module;
extern ngx_module_t  ngx_http_apim_jwks_module;
extern ngx_module_t  ngx_http_apim_burst_module;
extern ngx_module_t  ngx_http_apim_metrics_module;

#endif /* NGX_HTTP_APIM_MODULE_H */
