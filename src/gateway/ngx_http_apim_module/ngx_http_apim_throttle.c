/*
 * ngx_http_apim_throttle.c: the gateway's side of rate limiting (see
 * docs/ARCHITECTURE.md, "Rate limiting (Traffic Manager)").
 *
 * The snapshot's "policies" become a small table of limits (the builder
 * hook ngx_http_apim_throttle_policy()). A request that passed the
 * credential, subscription and scope checks gets the reference's throttle
 * keys: API "/ctx:ver" with the API's policy (level advanced; else the
 * resource "/ctx/ver/template:VERB" with the operation's policy),
 * subscription "appId:/ctx:ver" with the subscription's tier, application
 * "appId:user" with the application's tier. Unknown and unlimited policies
 * are not checked.
 *
 * Each worker (a party "<gatewayId>/<pid>" for the Traffic Manager) keeps
 * a table (key -> window, count, allowance, throttled until): the request
 * is admitted when the count of every key in its epoch-aligned window is
 * below the key's cap, and then counted. The cap is the allowance the
 * Traffic Manager granted for the window, else the implicit allowance
 * floor(limit / (2 N)), N the parties of the last heartbeat; with no
 * heartbeat for APIM_THROTTLE_FALLBACK_MS the worker falls back to local
 * limits, limit / N. A key the Traffic Manager declared throttled is
 * refused until then. Refused: 429, the level's fault code, Retry-After.
 * A subscription policy with stopOnQuotaReach false lets the request pass
 * over its limit, marked ($apim_throttled_out).
 *
 * The table belongs to the worker's event loop: the request path takes no
 * lock and allocates nothing. Decisions (apim.throttle.decisions) and
 * heartbeats (apim.throttle.tm) arrive on a NATS subscription whose
 * callback (a thread of the NATS library) parses them and pushes the parts
 * for this worker onto a lock-free stack; the usage timer
 * (ngx_http_apim_usage.c, every 100 ms) applies them and takes the
 * entries that changed for the "quota" list of its next usage event.
 */

#include "ngx_http_apim_module.h"


#define APIM_THROTTLE_SLOTS       4096      /* power of two */
#define APIM_THROTTLE_KEY_MAX     384
#define APIM_THROTTLE_POLICY_MAX  128
#define APIM_THROTTLE_BUCKETS     64
#define APIM_THROTTLE_FALLBACK_MS 1000
#define APIM_THROTTLE_MSG_MAX     (4 * 1024 * 1024)
#define APIM_THROTTLE_PENDING_MAX 1024      /* queued decisions */

#define APIM_LEVEL_SUBSCRIPTION   0
#define APIM_LEVEL_APPLICATION    1
#define APIM_LEVEL_ADVANCED       2
#define APIM_LEVEL_N              3


/* one limited policy of the snapshot */
typedef struct ngx_http_apim_limit_s  ngx_http_apim_limit_t;

struct ngx_http_apim_limit_s {
    ngx_http_apim_limit_t      *next;
    ngx_uint_t                  level;
    const char                 *name;
    int64_t                     amount;     /* requests per window */
    int64_t                     window_ms;
    ngx_uint_t                  stop;       /* stopOnQuotaReach */
};


struct ngx_http_apim_limits_s {
    ngx_http_apim_limit_t      *buckets[APIM_THROTTLE_BUCKETS];
};


/* one key of the worker's table; free when klen == 0 */
typedef struct {
    ngx_uint_t                  hash;
    uint16_t                    klen;
    uint8_t                     level;
    uint8_t                     granted;    /* allowance came from a grant */
    uint8_t                     dirty;      /* changed since the last report */
    u_char                      key[APIM_THROTTLE_KEY_MAX];
    char                        policy[APIM_THROTTLE_POLICY_MAX];
    int64_t                     window_start;
    int64_t                     window_ms;
    int64_t                     limit;
    int64_t                     count;
    int64_t                     allowance;
    int64_t                     until;      /* throttled until (ms) */
} ngx_http_apim_tkey_t;


/* what the NATS thread hands to the event loop */
typedef struct ngx_http_apim_tmsg_s  ngx_http_apim_tmsg_t;

struct ngx_http_apim_tmsg_s {
    ngx_http_apim_tmsg_t       *next;
    ngx_uint_t                  beat;       /* a heartbeat */
    int64_t                     parties;    /* 0: not said */
    size_t                      n;
    struct {
        char                   *key;
        int64_t                 window_start;
        int64_t                 window_ms;
        int64_t                 allowance;  /* -1: a "throttled" entry */
        int64_t                 limit;
        int64_t                 until;
    }                           items[];
};


/* a refused check */
typedef struct {
    const ngx_http_apim_fault_t *fault;
    int64_t                     retry_ms;
} ngx_http_apim_refusal_t;


static const ngx_http_apim_fault_t  ngx_http_apim_throttled_api = {
    "900800", NGX_HTTP_TOO_MANY_REQUESTS, "Message throttled out",
    "You have exceeded your quota"
};

static const ngx_http_apim_fault_t  ngx_http_apim_throttled_resource = {
    "900802", NGX_HTTP_TOO_MANY_REQUESTS, "Message throttled out",
    "You have exceeded your quota"
};

static const ngx_http_apim_fault_t  ngx_http_apim_throttled_app = {
    "900803", NGX_HTTP_TOO_MANY_REQUESTS, "Message throttled out",
    "You have exceeded your quota"
};

static const ngx_http_apim_fault_t  ngx_http_apim_throttled_sub = {
    "900804", NGX_HTTP_TOO_MANY_REQUESTS, "Message throttled out",
    "You have exceeded your quota"
};

static const char  *ngx_http_apim_level_names[APIM_LEVEL_N] = {
    "subscription", "application", "advanced"
};


/* the worker's event loop only */
static ngx_http_apim_tkey_t  *ngx_http_apim_tkeys;
static ngx_uint_t             ngx_http_apim_tkeys_used;
static ngx_uint_t             ngx_http_apim_tkeys_full;   /* for the log */
static int64_t                ngx_http_apim_parties = 1;
static int64_t                ngx_http_apim_last_beat;    /* ms */
static int64_t                ngx_http_apim_started;      /* ms */
static ngx_uint_t             ngx_http_apim_fallback;
static int64_t                ngx_http_apim_last_sweep;   /* ms */

/* between the NATS thread and the event loop (atomic) */
static ngx_http_apim_tmsg_t  *ngx_http_apim_tmsgs;
static ngx_uint_t             ngx_http_apim_tmsgs_n;

/* the NATS side */
static natsConnection        *ngx_http_apim_tnc;
static natsSubscription      *ngx_http_apim_tsub_d;
static natsSubscription      *ngx_http_apim_tsub_tm;
static char                  *ngx_http_apim_party;


static int64_t
ngx_http_apim_throttle_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (int64_t) tp->sec * 1000 + tp->msec;
}


/* -- the snapshot's limits (builder hook) --------------------------------- */

static int64_t
ngx_http_apim_unit_ms(const char *unit)
{
    if (unit == NULL) {
        return 0;
    }

    if (ngx_strcmp(unit, "sec") == 0) {
        return 1000;
    }

    if (ngx_strcmp(unit, "min") == 0) {
        return 60000;
    }

    if (ngx_strcmp(unit, "hour") == 0) {
        return 3600000;
    }

    if (ngx_strcmp(unit, "day") == 0) {
        return 86400000;
    }

    if (ngx_strcmp(unit, "week") == 0) {
        return 604800000;
    }

    if (ngx_strcmp(unit, "month") == 0) {
        return 2592000000LL;
    }

    if (ngx_strcmp(unit, "year") == 0) {
        return 31536000000LL;
    }

    return 0;
}


ngx_int_t
ngx_http_apim_throttle_policy(ngx_http_apim_snap_t *s, json_t *pol,
    ngx_log_t *log)
{
    json_t                 *doc, *lim, *rc;
    int64_t                 amount, unit_ms, unit_time;
    ngx_uint_t              level, h;
    const char             *lv, *name, *type;
    ngx_http_apim_limit_t  *l;

    lv = ngx_http_apim_jstr(pol, "level");
    name = ngx_http_apim_jstr(pol, "name");
    doc = json_object_get(pol, "doc");

    if (lv == NULL || name == NULL || !json_is_object(doc)
        || ngx_strlen(name) >= APIM_THROTTLE_POLICY_MAX)
    {
        return NGX_OK;
    }

    for (level = 0; level < APIM_LEVEL_N; level++) {
        if (ngx_strcmp(lv, ngx_http_apim_level_names[level]) == 0) {
            break;
        }
    }

    if (level == APIM_LEVEL_N) {
        return NGX_OK;      /* custom policies: not yet */
    }

    /* request counts only; bandwidth limits are not counted yet */
    lim = json_object_get(doc, "defaultLimit");
    type = ngx_http_apim_jstr(lim, "type");

    if (type == NULL || ngx_strcmp(type, "REQUESTCOUNTLIMIT") != 0) {
        return NGX_OK;
    }

    rc = json_object_get(lim, "requestCount");
    amount = json_integer_value(json_object_get(rc, "requestCount"));
    unit_ms = ngx_http_apim_unit_ms(ngx_http_apim_jstr(rc, "timeUnit"));
    unit_time = json_integer_value(json_object_get(rc, "unitTime"));

    /* "Unlimited" (the reference stores 2147483647) is no limit */
    if (amount <= 0 || amount >= INT32_MAX || unit_ms == 0 || unit_time <= 0
        || unit_time > INT64_MAX / unit_ms)
    {
        return NGX_OK;
    }

    if (s->limits == NULL) {
        s->limits = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_limits_t));
        if (s->limits == NULL) {
            return NGX_ERROR;
        }
        ngx_memzero(s->limits, sizeof(ngx_http_apim_limits_t));
    }

    l = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_limit_t));
    if (l == NULL) {
        return NGX_ERROR;
    }

    l->name = ngx_http_apim_strdup(s, name);
    if (l->name == NULL) {
        return NGX_ERROR;
    }

    l->level = level;
    l->amount = amount;
    l->window_ms = unit_time * unit_ms;
    l->stop = !json_is_false(json_object_get(doc, "stopOnQuotaReach"));

    h = (ngx_hash_key((u_char *) name, ngx_strlen(name)) + level)
        % APIM_THROTTLE_BUCKETS;
    l->next = s->limits->buckets[h];
    s->limits->buckets[h] = l;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, log, 0,
                   "apim: limit %s \"%s\": %L per %L ms", lv, name, amount,
                   l->window_ms);

    return NGX_OK;
}


static const ngx_http_apim_limit_t *
ngx_http_apim_limit_find(const ngx_http_apim_snap_t *snap, ngx_uint_t level,
    const ngx_str_t *name)
{
    ngx_uint_t              h;
    ngx_http_apim_limit_t  *l;

    if (snap->limits == NULL || name->len == 0) {
        return NULL;
    }

    h = (ngx_hash_key(name->data, name->len) + level) % APIM_THROTTLE_BUCKETS;

    for (l = snap->limits->buckets[h]; l; l = l->next) {
        if (l->level == level && ngx_strlen(l->name) == name->len
            && ngx_strncmp(l->name, name->data, name->len) == 0)
        {
            return l;
        }
    }

    return NULL;
}


/* -- the worker's table ---------------------------------------------------- */

static ngx_http_apim_tkey_t *
ngx_http_apim_tkey_find(const u_char *key, size_t len, ngx_uint_t create)
{
    ngx_uint_t             hash, i, n;
    ngx_http_apim_tkey_t  *e;

    if (ngx_http_apim_tkeys == NULL || len == 0
        || len > APIM_THROTTLE_KEY_MAX)
    {
        return NULL;
    }

    hash = ngx_hash_key((u_char *) key, len);

    for (i = hash & (APIM_THROTTLE_SLOTS - 1), n = 0;
         n < APIM_THROTTLE_SLOTS;
         i = (i + 1) & (APIM_THROTTLE_SLOTS - 1), n++)
    {
        e = &ngx_http_apim_tkeys[i];

        if (e->klen == 0) {
            if (!create
                || ngx_http_apim_tkeys_used >= APIM_THROTTLE_SLOTS / 4 * 3)
            {
                if (create) {
                    ngx_http_apim_tkeys_full++;
                }
                return NULL;
            }

            ngx_memzero(e, sizeof(ngx_http_apim_tkey_t));
            e->hash = hash;
            e->klen = (uint16_t) len;
            ngx_memcpy(e->key, key, len);
            ngx_http_apim_tkeys_used++;
            return e;
        }

        if (e->hash == hash && e->klen == len
            && ngx_memcmp(e->key, key, len) == 0)
        {
            return e;
        }
    }

    return NULL;
}


/* the key's window that contains now; a new window starts from zero */
static void
ngx_http_apim_tkey_window(ngx_http_apim_tkey_t *e, int64_t window_ms,
    int64_t now)
{
    int64_t  ws;

    ws = now - now % window_ms;

    if (e->window_start != ws || e->window_ms != window_ms) {
        e->window_start = ws;
        e->window_ms = window_ms;
        e->count = 0;
        e->allowance = 0;
        e->granted = 0;
    }
}


/*
 * Keys whose window ended and that are not throttled any more go; the
 * others are inserted again (open addressing has no tombstones). The event
 * loop, when the table is over half full, at most once a second.
 */
static void
ngx_http_apim_tkeys_sweep(int64_t now)
{
    ngx_uint_t             i, j, moved;
    ngx_http_apim_tkey_t  *e, *t, tmp;

    if (ngx_http_apim_tkeys_used < APIM_THROTTLE_SLOTS / 2
        || now - ngx_http_apim_last_sweep < 1000)
    {
        return;
    }

    ngx_http_apim_last_sweep = now;

    for (i = 0; i < APIM_THROTTLE_SLOTS; i++) {
        e = &ngx_http_apim_tkeys[i];

        /* (an ended window's last count matters to no one) */
        if (e->klen && e->window_start + e->window_ms <= now
            && e->until <= now)
        {
            e->klen = 0;
            ngx_http_apim_tkeys_used--;
        }
    }

    /* re-place every entry that is not in its probe chain any more */
    do {
        moved = 0;

        for (i = 0; i < APIM_THROTTLE_SLOTS; i++) {
            e = &ngx_http_apim_tkeys[i];
            if (e->klen == 0) {
                continue;
            }

            for (j = e->hash & (APIM_THROTTLE_SLOTS - 1); j != i;
                 j = (j + 1) & (APIM_THROTTLE_SLOTS - 1))
            {
                t = &ngx_http_apim_tkeys[j];
                if (t->klen == 0) {
                    ngx_memcpy(&tmp, e, sizeof(ngx_http_apim_tkey_t));
                    ngx_memcpy(t, &tmp, sizeof(ngx_http_apim_tkey_t));
                    e->klen = 0;
                    moved = 1;
                    break;
                }
            }
        }

    } while (moved);
}


/* -- request path ------------------------------------------------------------ */

typedef struct {
    ngx_http_apim_tkey_t           *e;
    const ngx_http_apim_limit_t    *l;
    const ngx_http_apim_fault_t    *fault;
    ngx_uint_t                      over;
} ngx_http_apim_tcheck_t;


static int64_t
ngx_http_apim_cap(const ngx_http_apim_tkey_t *e, int64_t limit)
{
    int64_t  n, local;

    n = ngx_http_apim_parties > 0 ? ngx_http_apim_parties : 1;

    if (ngx_http_apim_fallback) {
        local = limit / n;
        return e->granted && e->allowance > local ? e->allowance : local;
    }

    if (e->granted) {
        return e->allowance;
    }

    return limit / (2 * n);
}


/* one key: *c set; 1: over its cap (or throttled), 0: within */
static ngx_uint_t
ngx_http_apim_tkey_check(ngx_http_apim_tcheck_t *c, const u_char *key,
    size_t len, const ngx_http_apim_limit_t *l,
    const ngx_http_apim_fault_t *fault, int64_t now,
    ngx_http_apim_refusal_t *ref)
{
    int64_t                retry;
    ngx_http_apim_tkey_t  *e;

    e = ngx_http_apim_tkey_find(key, len, 1);
    if (e == NULL) {
        return 0;       /* table full or key too long: counted as dropped */
    }

    ngx_http_apim_tkey_window(e, l->window_ms, now);

    c->e = e;
    c->l = l;
    c->fault = fault;
    c->over = 0;

    if (e->until > now) {
        retry = e->until - now;

    } else if (e->count >= ngx_http_apim_cap(e, l->amount)) {
        retry = e->window_start + e->window_ms - now;

    } else {
        return 0;
    }

    c->over = 1;

    if (ref->fault == NULL) {
        ref->fault = fault;
        ref->retry_ms = retry;
    }

    return 1;
}


ngx_int_t
ngx_http_apim_throttle_check(ngx_http_request_t *r, ngx_http_apim_ctx_t *ctx,
    const ngx_http_apim_snap_t *snap, const ngx_http_apim_fault_t **fault)
{
    u_char                       key[APIM_THROTTLE_KEY_MAX + 1], *p, *sp;
    size_t                       len;
    int64_t                      now, secs;
    ngx_uint_t                   i, n;
    ngx_table_elt_t             *h;
    const ngx_http_apim_limit_t *l;
    ngx_http_apim_tcheck_t       checks[3];
    ngx_http_apim_refusal_t      ref;

    if (snap->limits == NULL || ngx_http_apim_tkeys == NULL) {
        return NGX_OK;
    }

    now = ngx_http_apim_throttle_now();
    n = 0;
    ref.fault = NULL;

    /* without an event hub no timer sweeps the table: at most once a
     * second, here (no allocation, no lock) */
    ngx_http_apim_tkeys_sweep(now);
    ref.retry_ms = 0;

    /* the API's policy, else the resource's: "/ctx:ver",
     * "/ctx/ver/template:VERB" (resource is "VERB /template") */
    l = ngx_http_apim_limit_find(snap, APIM_LEVEL_ADVANCED, &ctx->api_tier);

    if (l != NULL) {
        len = ctx->api_context.len + 1 + ctx->api_version.len;
        if (len <= APIM_THROTTLE_KEY_MAX) {
            p = ngx_cpymem(key, ctx->api_context.data, ctx->api_context.len);
            *p++ = ':';
            ngx_memcpy(p, ctx->api_version.data, ctx->api_version.len);
            ngx_http_apim_tkey_check(&checks[n++], key, len, l,
                                     &ngx_http_apim_throttled_api, now, &ref);
        }

    } else if (ctx->api_tier.len == 0) {
        l = ngx_http_apim_limit_find(snap, APIM_LEVEL_ADVANCED,
                                     &ctx->resource_tier);
        sp = ngx_strlchr(ctx->resource.data,
                         ctx->resource.data + ctx->resource.len, ' ');

        if (l != NULL && sp != NULL) {
            len = ctx->api_context.len + 1 + ctx->api_version.len
                  + (ctx->resource.data + ctx->resource.len - sp - 1) + 1
                  + (sp - ctx->resource.data);
            if (len <= APIM_THROTTLE_KEY_MAX) {
                p = ngx_cpymem(key, ctx->api_context.data,
                               ctx->api_context.len);
                *p++ = '/';
                p = ngx_cpymem(p, ctx->api_version.data,
                               ctx->api_version.len);
                p = ngx_cpymem(p, sp + 1,
                               ctx->resource.data + ctx->resource.len - sp - 1);
                *p++ = ':';
                ngx_memcpy(p, ctx->resource.data, sp - ctx->resource.data);
                ngx_http_apim_tkey_check(&checks[n++], key, len, l,
                                         &ngx_http_apim_throttled_resource,
                                         now, &ref);
            }
        }
    }

    /* subscription "appId:/ctx:ver" */
    l = ngx_http_apim_limit_find(snap, APIM_LEVEL_SUBSCRIPTION,
                                 &ctx->subscription_tier);
    len = ctx->app_id.len + 1 + ctx->api_context.len + 1
          + ctx->api_version.len;

    if (l != NULL && ctx->app_id.len && len <= APIM_THROTTLE_KEY_MAX) {
        p = ngx_cpymem(key, ctx->app_id.data, ctx->app_id.len);
        *p++ = ':';
        p = ngx_cpymem(p, ctx->api_context.data, ctx->api_context.len);
        *p++ = ':';
        ngx_memcpy(p, ctx->api_version.data, ctx->api_version.len);

        if (!l->stop) {
            /* over the limit: passes, marked */
            ngx_http_apim_refusal_t  soft;

            soft.fault = NULL;
            if (ngx_http_apim_tkey_check(&checks[n], key, len, l,
                                         &ngx_http_apim_throttled_sub, now,
                                         &soft))
            {
                ngx_str_set(&ctx->throttled_out, "true");
            }

        } else {
            ngx_http_apim_tkey_check(&checks[n], key, len, l,
                                     &ngx_http_apim_throttled_sub, now, &ref);
        }

        n++;
    }

    /* application "appId:user" */
    l = ngx_http_apim_limit_find(snap, APIM_LEVEL_APPLICATION,
                                 &ctx->app_tier);
    len = ctx->app_id.len + 1 + ctx->user.len;

    if (l != NULL && ctx->app_id.len && len <= APIM_THROTTLE_KEY_MAX) {
        p = ngx_cpymem(key, ctx->app_id.data, ctx->app_id.len);
        *p++ = ':';
        ngx_memcpy(p, ctx->user.data, ctx->user.len);
        ngx_http_apim_tkey_check(&checks[n++], key, len, l,
                                 &ngx_http_apim_throttled_app, now, &ref);
    }

    if (ref.fault != NULL) {
        secs = (ref.retry_ms + 999) / 1000;
        if (secs < 1) {
            secs = 1;
        }

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");
        h->value.data = p;
        h->value.len = ngx_sprintf(p, "%L", secs) - p;

        *fault = ref.fault;

        return NGX_DECLINED;
    }

    /* admitted: every key within its cap counts the request */
    for (i = 0; i < n; i++) {
        if (checks[i].e == NULL || checks[i].over) {
            continue;
        }

        checks[i].e->count++;
        checks[i].e->dirty = 1;
        checks[i].e->level = (uint8_t) checks[i].l->level;
        checks[i].e->limit = checks[i].l->amount;

        if (ngx_strcmp(checks[i].e->policy, checks[i].l->name) != 0) {
            ngx_cpystrn((u_char *) checks[i].e->policy,
                        (u_char *) checks[i].l->name,
                        APIM_THROTTLE_POLICY_MAX);
        }
    }

    return NGX_OK;
}


/* -- decisions: the NATS thread ---------------------------------------------- */

static void
ngx_http_apim_tmsg_free(ngx_http_apim_tmsg_t *m)
{
    size_t  i;

    for (i = 0; i < m->n; i++) {
        free(m->items[i].key);
    }

    free(m);
}


static void
ngx_http_apim_tmsg_push(ngx_http_apim_tmsg_t *m)
{
    ngx_http_apim_tmsg_t  *head;

    if (__atomic_add_fetch(&ngx_http_apim_tmsgs_n, 1, __ATOMIC_ACQ_REL)
        > APIM_THROTTLE_PENDING_MAX)
    {
        /* the event loop is stuck: drop rather than grow */
        __atomic_sub_fetch(&ngx_http_apim_tmsgs_n, 1, __ATOMIC_ACQ_REL);
        ngx_http_apim_tmsg_free(m);
        return;
    }

    head = __atomic_load_n(&ngx_http_apim_tmsgs, __ATOMIC_ACQUIRE);

    do {
        m->next = head;
    } while (!__atomic_compare_exchange_n(&ngx_http_apim_tmsgs, &head, m, 1,
                                          __ATOMIC_ACQ_REL,
                                          __ATOMIC_ACQUIRE));
}


static void
ngx_http_apim_throttle_on_msg(natsConnection *nc, natsSubscription *sub,
    natsMsg *msg, void *closure)
{
    int                    len;
    size_t                 i, n, k;
    json_t                *o, *grants, *thr, *g;
    const char            *party, *key;
    ngx_uint_t             beat;
    ngx_http_apim_tmsg_t  *m;

    beat = (closure != NULL);
    len = natsMsg_GetDataLength(msg);
    o = NULL;

    if (len <= 0 || len > APIM_THROTTLE_MSG_MAX) {
        goto done;
    }

    o = json_loadb(natsMsg_GetData(msg), (size_t) len, 0, NULL);
    if (!json_is_object(o)) {
        goto done;
    }

    grants = json_object_get(o, "grants");
    thr = json_object_get(o, "throttled");
    n = beat ? 0 : json_array_size(grants) + json_array_size(thr);

    m = calloc(1, sizeof(ngx_http_apim_tmsg_t)
                  + n * sizeof(m->items[0]));
    if (m == NULL) {
        goto done;
    }

    m->beat = beat;
    m->parties = json_integer_value(json_object_get(o, "parties"));
    k = 0;

    if (!beat) {
        json_array_foreach(grants, i, g) {
            party = json_string_value(json_object_get(g, "party"));
            key = json_string_value(json_object_get(g, "key"));

            if (party == NULL || key == NULL
                || strcmp(party, ngx_http_apim_party) != 0
                || strlen(key) > APIM_THROTTLE_KEY_MAX)
            {
                continue;
            }

            m->items[k].key = strdup(key);
            if (m->items[k].key == NULL) {
                continue;
            }
            m->items[k].window_start =
                json_integer_value(json_object_get(g, "windowStart"));
            m->items[k].window_ms =
                json_integer_value(json_object_get(g, "windowMs"));
            m->items[k].allowance =
                json_integer_value(json_object_get(g, "allowance"));
            m->items[k].limit = json_integer_value(json_object_get(g, "limit"));
            k++;
        }

        json_array_foreach(thr, i, g) {
            key = json_string_value(json_object_get(g, "key"));
            if (key == NULL || strlen(key) > APIM_THROTTLE_KEY_MAX) {
                continue;
            }

            m->items[k].key = strdup(key);
            if (m->items[k].key == NULL) {
                continue;
            }
            m->items[k].allowance = -1;
            m->items[k].until =
                json_integer_value(json_object_get(g, "throttledUntil"));
            k++;
        }
    }

    m->n = k;
    ngx_http_apim_tmsg_push(m);

done:

    json_decref(o);
    natsMsg_Destroy(msg);
    (void) nc;
    (void) sub;
}


/* -- the event loop: decisions applied, reports ------------------------------ */

static void
ngx_http_apim_tmsg_apply(ngx_http_apim_tmsg_t *m, int64_t now)
{
    size_t                 i;
    ngx_http_apim_tkey_t  *e;

    if (m->parties > 0) {
        ngx_http_apim_parties = m->parties;
    }

    if (m->beat) {
        ngx_http_apim_last_beat = now;
        return;
    }

    for (i = 0; i < m->n; i++) {
        e = ngx_http_apim_tkey_find((u_char *) m->items[i].key,
                                    strlen(m->items[i].key), 1);
        if (e == NULL) {
            continue;
        }

        if (m->items[i].allowance < 0) {
            if (m->items[i].until > e->until) {
                e->until = m->items[i].until;
            }
            continue;
        }

        if (m->items[i].window_ms <= 0
            || m->items[i].window_start % m->items[i].window_ms != 0
            || m->items[i].window_start < e->window_start)
        {
            continue;   /* a grant for a window that is over */
        }

        if (m->items[i].window_start > e->window_start
            || m->items[i].window_ms != e->window_ms)
        {
            e->window_start = m->items[i].window_start;
            e->window_ms = m->items[i].window_ms;
            e->count = 0;
            e->allowance = 0;
            e->granted = 0;
            e->limit = m->items[i].limit;
        }

        /* a party keeps the largest grant it got */
        if (!e->granted || m->items[i].allowance > e->allowance) {
            e->allowance = m->items[i].allowance;
            e->granted = 1;
            e->dirty = 1;
        }
    }
}


void
ngx_http_apim_throttle_tick(ngx_log_t *log)
{
    int64_t                now;
    ngx_uint_t             fallback;
    ngx_http_apim_tmsg_t  *m, *rev, *next;

    if (ngx_http_apim_tkeys == NULL) {
        return;
    }

    now = ngx_http_apim_throttle_now();

    m = __atomic_exchange_n(&ngx_http_apim_tmsgs, NULL, __ATOMIC_ACQ_REL);

    /* oldest first */
    for (rev = NULL; m; m = next) {
        next = m->next;
        m->next = rev;
        rev = m;
    }

    for (m = rev; m; m = next) {
        next = m->next;
        ngx_http_apim_tmsg_apply(m, now);
        ngx_http_apim_tmsg_free(m);
        __atomic_sub_fetch(&ngx_http_apim_tmsgs_n, 1, __ATOMIC_ACQ_REL);
    }

    fallback = now - ngx_max(ngx_http_apim_last_beat,
                                       ngx_http_apim_started)
               > APIM_THROTTLE_FALLBACK_MS;

    if (fallback != ngx_http_apim_fallback) {
        ngx_http_apim_fallback = fallback;

        if (fallback) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "apim: no Traffic Manager heard for %d ms: "
                          "local rate limits (limit / %L)",
                          APIM_THROTTLE_FALLBACK_MS,
                          ngx_http_apim_parties);
        } else {
            ngx_log_error(NGX_LOG_NOTICE, log, 0,
                          "apim: Traffic Manager heard again: "
                          "allowances back in force");
        }
    }

    if (ngx_http_apim_tkeys_full) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "apim: throttle table full: %ui requests not counted",
                      ngx_http_apim_tkeys_full);
        ngx_http_apim_tkeys_full = 0;
    }

    ngx_http_apim_tkeys_sweep(now);
}


json_t *
ngx_http_apim_throttle_report(ngx_uint_t *fallback)
{
    ngx_uint_t             i;
    json_t                *a, *o;
    ngx_http_apim_tkey_t  *e;

    *fallback = ngx_http_apim_fallback;

    if (ngx_http_apim_tkeys == NULL) {
        return NULL;
    }

    a = NULL;

    for (i = 0; i < APIM_THROTTLE_SLOTS; i++) {
        e = &ngx_http_apim_tkeys[i];

        if (e->klen == 0 || !e->dirty) {
            continue;
        }

        if (e->policy[0] == '\0') {
            /* known from a decision only: nothing counted to report */
            e->dirty = 0;
            continue;
        }

        if (a == NULL) {
            a = json_array();
            if (a == NULL) {
                return NULL;
            }
        }

        o = json_pack("{s:s%, s:s, s:s, s:I, s:I, s:I}",
                      "key", (char *) e->key, (size_t) e->klen,
                      "level", ngx_http_apim_level_names[e->level],
                      "policy", e->policy,
                      "windowStart", (json_int_t) e->window_start,
                      "count", (json_int_t) e->count,
                      "allowance", (json_int_t) (e->granted ? e->allowance
                                                            : 0));
        if (o == NULL || json_array_append_new(a, o) != 0) {
            break;
        }

        e->dirty = 0;
    }

    return a;
}


/* -- process ------------------------------------------------------------------ */

static void
ngx_http_apim_throttle_connected(natsConnection *nc, void *closure)
{
    /* with a callback, a first connect that fails goes on in the
     * background instead of blocking the worker */
    (void) nc;
    (void) closure;
}


ngx_int_t
ngx_http_apim_throttle_init_process(ngx_cycle_t *cycle, const char *url,
    const char *party)
{
    natsStatus    st;
    natsOptions  *opts;

    ngx_http_apim_tkeys = calloc(APIM_THROTTLE_SLOTS,
                                 sizeof(ngx_http_apim_tkey_t));
    ngx_http_apim_party = strdup(party);

    if (ngx_http_apim_tkeys == NULL || ngx_http_apim_party == NULL) {
        return NGX_ERROR;
    }

    ngx_http_apim_tkeys_used = 0;
    ngx_http_apim_parties = 1;
    ngx_http_apim_last_beat = 0;
    ngx_http_apim_started = ngx_http_apim_throttle_now();
    ngx_http_apim_fallback = (url == NULL);
    ngx_http_apim_last_sweep = 0;

    if (url == NULL) {
        return NGX_OK;
    }

    /*
     * The subscription: the library connects in the background (and keeps
     * reconnecting) so that a missing NATS never holds up the worker.
     */
    if (natsOptions_Create(&opts) != NATS_OK) {
        return NGX_OK;
    }

    st = natsOptions_SetURL(opts, url);
    if (st == NATS_OK) {
        st = natsOptions_SetName(opts, "apim-gateway-throttle");
    }
    if (st == NATS_OK) {
        st = natsOptions_SetMaxReconnect(opts, -1);
    }
    if (st == NATS_OK) {
        st = natsOptions_SetReconnectWait(opts, 500);
    }
    if (st == NATS_OK) {
        st = natsOptions_SetRetryOnFailedConnect(opts, true,
                                    ngx_http_apim_throttle_connected, NULL);
    }
    if (st == NATS_OK) {
        st = natsConnection_Connect(&ngx_http_apim_tnc, opts);
        if (st == NATS_NOT_YET_CONNECTED) {
            st = NATS_OK;
        }
    }
    if (st == NATS_OK) {
        st = natsConnection_Subscribe(&ngx_http_apim_tsub_d,
                                      ngx_http_apim_tnc,
                                      "apim.throttle.decisions",
                                      ngx_http_apim_throttle_on_msg, NULL);
    }
    if (st == NATS_OK) {
        st = natsConnection_Subscribe(&ngx_http_apim_tsub_tm,
                                      ngx_http_apim_tnc, "apim.throttle.tm",
                                      ngx_http_apim_throttle_on_msg,
                                      (void *) "tm");
    }

    natsOptions_Destroy(opts);

    if (st != NATS_OK) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "apim: throttle: cannot subscribe at %s: %s "
                      "(local rate limits)", url, natsStatus_GetText(st));
    }

    return NGX_OK;
}


void
ngx_http_apim_throttle_exit_process(void)
{
    ngx_http_apim_tmsg_t  *m, *next;

    if (ngx_http_apim_tsub_d != NULL) {
        natsSubscription_Unsubscribe(ngx_http_apim_tsub_d);
        natsSubscription_Destroy(ngx_http_apim_tsub_d);
        ngx_http_apim_tsub_d = NULL;
    }

    if (ngx_http_apim_tsub_tm != NULL) {
        natsSubscription_Unsubscribe(ngx_http_apim_tsub_tm);
        natsSubscription_Destroy(ngx_http_apim_tsub_tm);
        ngx_http_apim_tsub_tm = NULL;
    }

    if (ngx_http_apim_tnc != NULL) {
        natsConnection_Destroy(ngx_http_apim_tnc);
        ngx_http_apim_tnc = NULL;
    }

    m = __atomic_exchange_n(&ngx_http_apim_tmsgs, NULL, __ATOMIC_ACQ_REL);
    for ( /* void */ ; m; m = next) {
        next = m->next;
        ngx_http_apim_tmsg_free(m);
    }

    free(ngx_http_apim_tkeys);
    free(ngx_http_apim_party);
    ngx_http_apim_tkeys = NULL;
    ngx_http_apim_party = NULL;
}
