/*
 * ngx_http_apim_burst.c: burst control (spike arrest) of subscription tiers
 * and the backend's maxTps, for every worker of one gateway.
 *
 * Directive (ngx_http_apim_burst_module):
 *   apim_shared_zone <size>;          (http) the counters, e.g. 1m; without
 *                                     it neither limit is enforced
 *
 * Limits:
 *   - a subscription policy's rateLimitCount per rateLimitTimeUnit (sec,
 *     min) per subscription (application and API): 429, 900807 and
 *     Retry-After;
 *   - an API's maxTps {production, sandbox} (per productionTimeUnit /
 *     sandboxTimeUnit, SECOND by default) per key type: 503, 900801 and
 *     Retry-After.
 * Both count requests in fixed windows aligned on the unit (a request
 * refused is not counted).
 *
 * The counters: an open-addressing table in the shared memory zone (slab
 * allocated once, when the zone is made), slots of two 64-bit words
 *   key    64-bit hash of the counted key, 0: free
 *   state  end of the window (seconds since the epoch) << 32 | count
 * claimed and updated with compare-and-swap only: no mutex, no wait. A key
 * probes APIM_PROBES slots; a slot whose window has ended may be taken by
 * another key. When none is free (a zone far too small) the request passes
 * and the worker logs it (once a minute). The zone survives a reload of
 * the configuration with the same size.
 */


#include "ngx_http_apim_module.h"


#define APIM_PROBES         16


typedef struct {
    uint64_t                    key;
    uint64_t                    state;
} ngx_http_apim_counter_t;

typedef struct {
    uint64_t                    mask;
    ngx_http_apim_counter_t     slots[1];
} ngx_http_apim_counters_t;


typedef struct {
    ngx_shm_zone_t             *zone;
} ngx_http_apim_burst_conf_t;


typedef struct ngx_http_apim_burst_s  ngx_http_apim_burst_t;

struct ngx_http_apim_burst_s {
    ngx_http_apim_burst_t      *next;
    const char                 *tier;
    uint32_t                    count;
    uint32_t                    period;     /* seconds */
};

struct ngx_http_apim_bursts_s {
    ngx_http_apim_burst_t      *first;
};

struct ngx_http_apim_max_tps_s {
    uint32_t                    count[2];   /* production, sandbox; 0: none */
    uint32_t                    period[2];
};


static char *ngx_http_apim_shared_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void *ngx_http_apim_burst_create_conf(ngx_conf_t *cf);


static const ngx_http_apim_fault_t  ngx_http_apim_burst_fault = {
    "900807", 429, "Message throttled out",
    "You have exceeded your quota: the subscription's burst limit (spike "
    "arrest)"
};

static const ngx_http_apim_fault_t  ngx_http_apim_max_tps_fault = {
    "900801", NGX_HTTP_SERVICE_UNAVAILABLE, "API Limit Reached",
    "API not accepting requests: the backend's maximum throughput was "
    "reached"
};


static ngx_command_t  ngx_http_apim_burst_commands[] = {

    { ngx_string("apim_shared_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_apim_shared_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_apim_burst_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_apim_burst_create_conf,       /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_apim_burst_module = {
    NGX_MODULE_V1,
    &ngx_http_apim_burst_module_ctx,       /* module context */
    ngx_http_apim_burst_commands,          /* module directives */
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


/* -- snapshot hooks ------------------------------------------------------ */

/* a time unit in seconds, 0 if unknown */
static uint32_t
ngx_http_apim_burst_unit(const char *unit)
{
    if (unit == NULL) {
        return 0;
    }

    if (strcasecmp(unit, "sec") == 0 || strcasecmp(unit, "second") == 0
        || strcasecmp(unit, "s") == 0)
    {
        return 1;
    }

    if (strcasecmp(unit, "min") == 0 || strcasecmp(unit, "minute") == 0
        || strcasecmp(unit, "m") == 0)
    {
        return 60;
    }

    if (strcasecmp(unit, "hour") == 0 || strcasecmp(unit, "h") == 0) {
        return 3600;
    }

    return 0;
}


ngx_int_t
ngx_http_apim_burst_add(ngx_http_apim_snap_t *s, json_t *jv, ngx_log_t *log)
{
    json_t                 *doc;
    json_int_t              count;
    uint32_t                period;
    const char             *level, *name;
    ngx_http_apim_burst_t  *b;

    level = ngx_http_apim_jstr(jv, "level");
    name = ngx_http_apim_jstr(jv, "name");
    doc = json_object_get(jv, "doc");

    if (level == NULL || name == NULL || strcasecmp(level, "subscription") != 0
        || !json_is_object(doc))
    {
        return NGX_OK;
    }

    count = json_integer_value(json_object_get(doc, "rateLimitCount"));
    if (count <= 0) {
        return NGX_OK;
    }

    period = ngx_http_apim_burst_unit(ngx_http_apim_jstr(doc,
                                                         "rateLimitTimeUnit"));
    if (period == 0 || count > 0xffffffff) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "apim: burst limit of policy \"%s\" ignored: bad "
                      "rateLimitCount or rateLimitTimeUnit", name);
        return NGX_OK;
    }

    if (s->bursts == NULL) {
        s->bursts = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_bursts_t));
        if (s->bursts == NULL) {
            return NGX_ERROR;
        }
        s->bursts->first = NULL;
    }

    b = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_burst_t));
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->tier = ngx_http_apim_strdup(s, name);
    if (b->tier == NULL) {
        return NGX_ERROR;
    }

    b->count = (uint32_t) count;
    b->period = period;
    b->next = s->bursts->first;
    s->bursts->first = b;

    return NGX_OK;
}


ngx_http_apim_max_tps_t *
ngx_http_apim_max_tps_build(ngx_http_apim_snap_t *s, json_t *max_tps,
    ngx_log_t *log)
{
    json_t                   *v;
    ngx_uint_t                i;
    json_int_t                n;
    const char               *unit;
    ngx_http_apim_max_tps_t   m;
    ngx_http_apim_max_tps_t  *p;

    static const char  *names[] = { "production", "sandbox" };
    static const char  *units[] = { "productionTimeUnit", "sandboxTimeUnit" };

    if (!json_is_object(max_tps)) {
        return NULL;
    }

    ngx_memzero(&m, sizeof(ngx_http_apim_max_tps_t));

    for (i = 0; i < 2; i++) {
        v = json_object_get(max_tps, names[i]);
        n = json_is_integer(v) ? json_integer_value(v) : 0;

        if (n <= 0 || n > 0xffffffff) {
            continue;
        }

        unit = ngx_http_apim_jstr(max_tps, units[i]);
        m.period[i] = unit ? ngx_http_apim_burst_unit(unit) : 1;

        if (m.period[i] == 0) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "apim: maxTps.%s ignored: unknown time unit \"%s\"",
                          units[i], unit);
            continue;
        }

        m.count[i] = (uint32_t) n;
    }

    if (m.count[0] == 0 && m.count[1] == 0) {
        return NULL;
    }

    p = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_max_tps_t));
    if (p == NULL) {
        ngx_log_error(NGX_LOG_ERR, log, 0, "apim: out of memory (maxTps)");
        return NULL;
    }

    *p = m;

    return p;
}


/* -- the shared counters ------------------------------------------------- */

/* FNV-1a, 64 bits, over the kind then the key; never 0 */
static uint64_t
ngx_http_apim_burst_hash(u_char kind, const u_char *key, size_t len)
{
    size_t    i;
    uint64_t  h;

    h = 0xcbf29ce484222325ULL;
    h = (h ^ kind) * 0x100000001b3ULL;

    for (i = 0; i < len; i++) {
        h = (h ^ key[i]) * 0x100000001b3ULL;
    }

    return h ? h : 1;
}


/*
 * Counts one request of key h against limit per period. NGX_OK: under
 * the limit (counted); NGX_BUSY: over it, *retry the seconds until the
 * window ends; NGX_DECLINED: no slot (not counted).
 */
static ngx_int_t
ngx_http_apim_burst_take(ngx_http_apim_counters_t *t, uint64_t h,
    uint32_t limit, uint32_t period, time_t *retry)
{
    uint64_t                  k, st, nst, now, end;
    ngx_uint_t                i;
    ngx_http_apim_counter_t  *c, *victim;

    now = (uint64_t) ngx_time();
    end = (now / period + 1) * period;
    victim = NULL;
    c = NULL;

    for (i = 0; i < APIM_PROBES; i++) {
        c = &t->slots[(h + i) & t->mask];
        k = __atomic_load_n(&c->key, __ATOMIC_ACQUIRE);

        if (k == h) {
            goto found;
        }

        if (k == 0) {
            if (__atomic_compare_exchange_n(&c->key, &k, h, 0,
                                            __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE)
                || k == h)
            {
                goto found;
            }
            continue;
        }

        if (victim == NULL
            && (__atomic_load_n(&c->state, __ATOMIC_ACQUIRE) >> 32) <= now)
        {
            victim = c;
        }
    }

    if (victim == NULL) {
        return NGX_DECLINED;
    }

    /* a slot whose window has ended: its state resets below */
    c = victim;
    k = __atomic_load_n(&c->key, __ATOMIC_ACQUIRE);

    if (k != h
        && !__atomic_compare_exchange_n(&c->key, &k, h, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)
        && k != h)
    {
        return NGX_DECLINED;
    }

found:

    st = __atomic_load_n(&c->state, __ATOMIC_ACQUIRE);

    for ( ;; ) {
        if ((st >> 32) < end) {
            nst = (end << 32) | 1;

        } else if ((st & 0xffffffff) >= limit) {
            *retry = (time_t) ((st >> 32) - now);
            return NGX_BUSY;

        } else {
            nst = st + 1;
        }

        if (__atomic_compare_exchange_n(&c->state, &st, nst, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        {
            return NGX_OK;
        }
    }
}


static const ngx_http_apim_fault_t *
ngx_http_apim_burst_count(ngx_http_request_t *r, u_char kind,
    const u_char *key, size_t len, uint32_t limit, uint32_t period,
    const ngx_http_apim_fault_t *fault)
{
    time_t                       retry;
    ngx_int_t                    rc;
    ngx_table_elt_t             *h;
    ngx_http_apim_burst_conf_t  *bcf;

    static time_t                full_logged;

    bcf = ngx_http_get_module_main_conf(r, ngx_http_apim_burst_module);
    if (bcf->zone == NULL || bcf->zone->data == NULL) {
        return NULL;
    }

    retry = 0;
    rc = ngx_http_apim_burst_take(bcf->zone->data,
                                  ngx_http_apim_burst_hash(kind, key, len),
                                  limit, period, &retry);

    if (rc == NGX_OK) {
        return NULL;
    }

    if (rc == NGX_DECLINED) {
        if (ngx_time() - full_logged >= 60) {
            full_logged = ngx_time();
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "apim: apim_shared_zone \"%V\" is full: burst "
                          "and maxTps limits are not enforced for some "
                          "keys", &bcf->zone->shm.name);
        }
        return NULL;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h != NULL) {
        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");
        h->value.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
        if (h->value.data == NULL) {
            h->hash = 0;
        } else {
            h->value.len = ngx_sprintf(h->value.data, "%T",
                                       retry > 0 ? retry : 1)
                           - h->value.data;
        }
    }

    return fault;
}


const ngx_http_apim_fault_t *
ngx_http_apim_burst_check(ngx_http_request_t *r,
    const ngx_http_apim_snap_t *s, const char *tier, const u_char *subkey,
    size_t len)
{
    ngx_http_apim_burst_t  *b;

    if (s->bursts == NULL || tier == NULL) {
        return NULL;
    }

    for (b = s->bursts->first; b; b = b->next) {
        if (ngx_strcmp(b->tier, tier) == 0) {
            break;
        }
    }

    if (b == NULL) {
        return NULL;
    }

    return ngx_http_apim_burst_count(r, 'b', subkey, len, b->count, b->period,
                                     &ngx_http_apim_burst_fault);
}


const ngx_http_apim_fault_t *
ngx_http_apim_max_tps_check(ngx_http_request_t *r,
    const ngx_http_apim_api_t *api, ngx_uint_t sandbox)
{
    size_t                    len;
    u_char                    key[256];
    ngx_http_apim_max_tps_t  *m;

    m = api->max_tps;

    if (m == NULL || m->count[sandbox ? 1 : 0] == 0) {
        return NULL;
    }

    len = ngx_strlen(api->id);
    if (len + 2 > sizeof(key)) {
        return NULL;
    }

    ngx_memcpy(key, api->id, len);
    key[len++] = '\n';
    key[len++] = sandbox ? 'S' : 'P';

    return ngx_http_apim_burst_count(r, 't', key, len,
                                     m->count[sandbox ? 1 : 0],
                                     m->period[sandbox ? 1 : 0],
                                     &ngx_http_apim_max_tps_fault);
}


/* -- configuration ------------------------------------------------------- */

static ngx_int_t
ngx_http_apim_burst_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    size_t                     n, size;
    ngx_slab_pool_t           *shpool;
    ngx_http_apim_counters_t  *t;

    if (data) {
        /* a reload with the same zone: keep the counters */
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    /* the largest power of two of slots in three quarters of the zone */
    n = 1;
    while (n * 2 * sizeof(ngx_http_apim_counter_t)
           <= shm_zone->shm.size / 4 * 3)
    {
        n *= 2;
    }

    for ( ;; ) {
        size = sizeof(ngx_http_apim_counters_t)
               + (n - 1) * sizeof(ngx_http_apim_counter_t);

        t = ngx_slab_alloc(shpool, size);
        if (t != NULL) {
            break;
        }

        if (n <= 64) {
            return NGX_ERROR;
        }

        n /= 2;
    }

    ngx_memzero(t, size);
    t->mask = n - 1;

    shpool->data = t;
    shm_zone->data = t;

    ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                  "apim: apim_shared_zone \"%V\": %uz counters",
                  &shm_zone->shm.name, n);

    return NGX_OK;
}


static char *
ngx_http_apim_shared_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_apim_burst_conf_t  *bcf = conf;

    ssize_t     size;
    ngx_str_t  *value, name;

    if (bcf->zone != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[1]);

    if (size == NGX_ERROR || size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid apim_shared_zone size \"%V\" (at least "
                           "%uz bytes)", &value[1], 8 * ngx_pagesize);
        return NGX_CONF_ERROR;
    }

    ngx_str_set(&name, "apim_counters");

    bcf->zone = ngx_shared_memory_add(cf, &name, size,
                                      &ngx_http_apim_burst_module);
    if (bcf->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    bcf->zone->init = ngx_http_apim_burst_init_zone;

    return NGX_CONF_OK;
}


static void *
ngx_http_apim_burst_create_conf(ngx_conf_t *cf)
{
    ngx_http_apim_burst_conf_t  *bcf;

    bcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_apim_burst_conf_t));
    if (bcf == NULL) {
        return NULL;
    }

    /* bcf->zone = NULL; */

    return bcf;
}
