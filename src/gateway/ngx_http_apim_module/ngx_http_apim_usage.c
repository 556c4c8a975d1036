/*
 * ngx_http_apim_usage.c: usage events for the Traffic Manager.
 *
 * A log-phase handler counts every request that matched an API (passed or
 * refused, with its fault code) into a per-worker aggregate: one entry per
 * distinct (API, version, application, user, resource, key type, fault
 * code, tiers) with the number of requests and the bytes received and
 * sent. Every 100 ms a timer of the worker's event loop hands the
 * aggregate to a background thread (started in init_process, stopped in
 * exit_process) and goes on with an empty one; the thread publishes the
 * entries as JSON to the NATS subject apim.throttle.usage over its own
 * connection to apim_event_hub_url, empties the aggregate and gives it
 * back. The hand-over is two atomic pointers (a full buffer to the thread,
 * an empty one back), so the request path never waits for the thread: when
 * the thread is still busy (NATS slow) the worker keeps counting into the
 * same aggregate and the window grows. A full aggregate counts what does
 * not fit as "dropped". The message format is in docs/ARCHITECTURE.md,
 * "Usage events".
 *
 * Nothing is counted (and no thread runs) without apim_event_hub_url.
 */

#include "ngx_http_apim_module.h"


#define APIM_USAGE_INTERVAL   100          /* ms */
#define APIM_USAGE_SLOTS      4096         /* power of two */
#define APIM_USAGE_KEYS       (512 * 1024) /* bytes of keys per window */
#define APIM_USAGE_KEY_MAX    4096
#define APIM_USAGE_FIELD_MAX  1024
#define APIM_USAGE_PER_MSG    200          /* entries per NATS message */
#define APIM_USAGE_SUBJECT    "apim.throttle.usage"
#define APIM_USAGE_NFIELDS    12


typedef struct {
    ngx_uint_t                  hash;
    uint32_t                    koff;       /* key: in keys, 0: free */
    uint32_t                    klen;
    uint64_t                    count;
    uint64_t                    throttled;  /* passed over a limit */
    uint64_t                    bytes_in;
    uint64_t                    bytes_out;
} ngx_http_apim_usage_entry_t;


typedef struct {
    ngx_http_apim_usage_entry_t *slots;
    ngx_uint_t                  used;
    u_char                     *keys;
    size_t                      keys_len;   /* starts at 1: 0 is "free" */
    uint64_t                    dropped;
    int64_t                     start;      /* ms since the epoch */
    int64_t                     end;
    json_t                     *quota;      /* ngx_http_apim_throttle.c */
    ngx_uint_t                  fallback;
} ngx_http_apim_usage_buf_t;


static ngx_int_t ngx_http_apim_usage_postconf(ngx_conf_t *cf);
static ngx_int_t ngx_http_apim_usage_init_process(ngx_cycle_t *cycle);
static void ngx_http_apim_usage_exit_process(ngx_cycle_t *cycle);


static ngx_http_module_t  ngx_http_apim_usage_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_apim_usage_postconf,          /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_apim_usage_module = {
    NGX_MODULE_V1,
    &ngx_http_apim_usage_module_ctx,       /* module context */
    NULL,                                  /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_apim_usage_init_process,      /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_apim_usage_exit_process,      /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* the worker's event loop only */
static ngx_http_apim_usage_buf_t  *ngx_http_apim_usage_cur;
static ngx_event_t                 ngx_http_apim_usage_timer;

/* hand-over between the event loop and the thread (atomic) */
static ngx_http_apim_usage_buf_t  *ngx_http_apim_usage_full;
static ngx_http_apim_usage_buf_t  *ngx_http_apim_usage_empty;

/* the thread */
static pthread_t                   ngx_http_apim_usage_thread;
static ngx_uint_t                  ngx_http_apim_usage_running;
static pthread_mutex_t             ngx_http_apim_usage_mutex =
                                       PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t              ngx_http_apim_usage_cond =
                                       PTHREAD_COND_INITIALIZER;
static ngx_uint_t                  ngx_http_apim_usage_stopping;
static char                       *ngx_http_apim_usage_url;
static char                       *ngx_http_apim_usage_gateway;
static char                       *ngx_http_apim_usage_label;
static ngx_pid_t                   ngx_http_apim_usage_pid;


static int64_t
ngx_http_apim_usage_wall_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);

    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


static ngx_http_apim_usage_buf_t *
ngx_http_apim_usage_buf_create(void)
{
    ngx_http_apim_usage_buf_t  *b;

    b = calloc(1, sizeof(ngx_http_apim_usage_buf_t));
    if (b == NULL) {
        return NULL;
    }

    b->slots = calloc(APIM_USAGE_SLOTS, sizeof(ngx_http_apim_usage_entry_t));
    b->keys = malloc(APIM_USAGE_KEYS);

    if (b->slots == NULL || b->keys == NULL) {
        free(b->slots);
        free(b->keys);
        free(b);
        return NULL;
    }

    b->keys_len = 1;

    return b;
}


static void
ngx_http_apim_usage_buf_free(ngx_http_apim_usage_buf_t *b)
{
    if (b != NULL) {
        json_decref(b->quota);
        free(b->slots);
        free(b->keys);
        free(b);
    }
}


static void
ngx_http_apim_usage_buf_clear(ngx_http_apim_usage_buf_t *b)
{
    if (b->used) {
        ngx_memzero(b->slots,
                    APIM_USAGE_SLOTS * sizeof(ngx_http_apim_usage_entry_t));
    }

    b->used = 0;
    b->keys_len = 1;
    b->dropped = 0;
    json_decref(b->quota);
    b->quota = NULL;
    b->fallback = 0;
}


/* -- request path (log phase) ---------------------------------------------- */

static u_char *
ngx_http_apim_usage_field(u_char *p, u_char *last, const ngx_str_t *s)
{
    size_t  len;

    len = ngx_min(s->len, APIM_USAGE_FIELD_MAX);

    if (p == NULL || (size_t) (last - p) < len + 2) {
        return NULL;
    }

    *p++ = (u_char) (len >> 8);
    *p++ = (u_char) (len & 0xff);

    return ngx_cpymem(p, s->data, len);
}


static ngx_int_t
ngx_http_apim_usage_handler(ngx_http_request_t *r)
{
    u_char                       key[APIM_USAGE_KEY_MAX], *p, *last;
    size_t                       len;
    ngx_uint_t                   hash, i;
    ngx_http_apim_ctx_t         *ctx;
    ngx_http_apim_usage_buf_t   *b;
    ngx_http_apim_usage_entry_t *e;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_apim_module);
    if (ctx == NULL || ctx->api_id.len == 0) {
        return NGX_OK;
    }

    if (ctx->throttle_bytes != NULL && r == r->main) {
        /* bandwidth limits (ngx_http_apim_throttle.c) */
        ngx_http_apim_throttle_log(r, ctx);
    }

    b = ngx_http_apim_usage_cur;
    if (b == NULL) {
        return NGX_OK;
    }

    p = key;
    last = key + sizeof(key);

    /* the order of ngx_http_apim_usage_names[] */
    p = ngx_http_apim_usage_field(p, last, &ctx->api_context);
    p = ngx_http_apim_usage_field(p, last, &ctx->api_version);
    p = ngx_http_apim_usage_field(p, last, &ctx->api_id);
    p = ngx_http_apim_usage_field(p, last, &ctx->app_id);
    p = ngx_http_apim_usage_field(p, last, &ctx->user);
    p = ngx_http_apim_usage_field(p, last, &ctx->resource);
    p = ngx_http_apim_usage_field(p, last, &ctx->key_type);
    p = ngx_http_apim_usage_field(p, last, &ctx->fault_code);
    p = ngx_http_apim_usage_field(p, last, &ctx->api_tier);
    p = ngx_http_apim_usage_field(p, last, &ctx->app_tier);
    p = ngx_http_apim_usage_field(p, last, &ctx->subscription_tier);
    p = ngx_http_apim_usage_field(p, last, &ctx->resource_tier);

    if (p == NULL) {
        b->dropped++;
        return NGX_OK;
    }

    len = p - key;
    hash = ngx_hash_key(key, len);

    for (i = hash & (APIM_USAGE_SLOTS - 1); /* void */ ;
         i = (i + 1) & (APIM_USAGE_SLOTS - 1))
    {
        e = &b->slots[i];

        if (e->koff == 0) {
            /* a new entry: keep the table at most 3/4 full */
            if (b->used >= APIM_USAGE_SLOTS / 4 * 3
                || b->keys_len + len > APIM_USAGE_KEYS)
            {
                b->dropped++;
                return NGX_OK;
            }

            e->hash = hash;
            e->koff = (uint32_t) b->keys_len;
            e->klen = (uint32_t) len;
            ngx_memcpy(b->keys + b->keys_len, key, len);
            b->keys_len += len;
            b->used++;
            break;
        }

        if (e->hash == hash && e->klen == len
            && ngx_memcmp(b->keys + e->koff, key, len) == 0)
        {
            break;
        }
    }

    e->count++;
    e->throttled += (ctx->throttled_out.len != 0);
    e->bytes_in += (uint64_t) r->request_length;
    e->bytes_out += (uint64_t) r->connection->sent;

    return NGX_OK;
}


/* every 100 ms: the aggregate goes to the thread when it is ready */
static void
ngx_http_apim_usage_tick(ngx_event_t *ev)
{
    int64_t                     now;
    ngx_http_apim_usage_buf_t  *b, *next;

    /* the Traffic Manager's decisions (ngx_http_apim_throttle.c) */
    ngx_http_apim_throttle_tick(ev->log);

    b = ngx_http_apim_usage_cur;
    now = ngx_http_apim_usage_wall_ms();

    if (b != NULL) {
        if (b->used == 0 && b->dropped == 0) {
            b->start = now;

        } else if (__atomic_load_n(&ngx_http_apim_usage_full, __ATOMIC_ACQUIRE)
                   == NULL)
        {
            next = __atomic_exchange_n(&ngx_http_apim_usage_empty, NULL,
                                       __ATOMIC_ACQ_REL);
            if (next != NULL) {
                b->end = now;
                b->quota = ngx_http_apim_throttle_report(&b->fallback);
                __atomic_store_n(&ngx_http_apim_usage_full, b,
                                 __ATOMIC_RELEASE);

                next->start = now;
                ngx_http_apim_usage_cur = next;

                pthread_cond_signal(&ngx_http_apim_usage_cond);
            }
        }
    }

    if (!ngx_exiting && !ngx_quit && !ngx_terminate) {
        ngx_add_timer(ev, APIM_USAGE_INTERVAL);
    }
}


/* -- the thread --------------------------------------------------------------- */

static const char  *ngx_http_apim_usage_names[APIM_USAGE_NFIELDS] = {
    "apiContext", "apiVersion", "apiId", "appId", "userId", "resource",
    "keyType", "faultCode", "apiTier", "appTier", "subscriptionTier",
    "resourceTier"
};


static json_t *
ngx_http_apim_usage_entry_json(ngx_http_apim_usage_buf_t *b,
    ngx_http_apim_usage_entry_t *e)
{
    char        *f[APIM_USAGE_NFIELDS], *p, *key, *sp;
    size_t       len, i, n;
    json_t      *o;
    const u_char *k, *end;

    /* every field as a C string, in one block */
    key = malloc(e->klen + APIM_USAGE_NFIELDS);
    if (key == NULL) {
        return NULL;
    }

    k = b->keys + e->koff;
    end = k + e->klen;
    p = key;

    for (i = 0; i < APIM_USAGE_NFIELDS; i++) {
        len = (k + 2 <= end) ? (size_t) ((k[0] << 8) | k[1]) : 0;
        k += 2;
        if (k + len > end) {
            len = 0;
        }

        f[i] = p;
        ngx_memcpy(p, k, len);
        p[len] = '\0';
        p += len + 1;
        k += len;
    }

    o = json_object();

    for (i = 0; i < APIM_USAGE_NFIELDS; i++) {
        json_object_set_new(o, ngx_http_apim_usage_names[i],
                            json_string(f[i]));
    }

    /* the reference's throttle keys: api "/ctx:ver", subscription
     * "appId:/ctx:ver", application "appId:user", resource
     * "/ctx/ver/template:VERB" (from "VERB /template") */
    json_object_set_new(o, "apiKey",
                        json_sprintf("%s:%s", f[0], f[1]));

    if (*f[3]) {
        json_object_set_new(o, "subscriptionKey",
                            json_sprintf("%s:%s:%s", f[3], f[0], f[1]));
        json_object_set_new(o, "appKey", json_sprintf("%s:%s", f[3], f[4]));

    } else {
        json_object_set_new(o, "subscriptionKey", json_string(""));
        json_object_set_new(o, "appKey", json_string(""));
    }

    sp = strchr(f[5], ' ');
    if (sp != NULL) {
        n = sp - f[5];
        json_object_set_new(o, "resourceKey",
                            json_sprintf("%s/%s%s:%.*s", f[0], f[1], sp + 1,
                                         (int) n, f[5]));
    } else {
        json_object_set_new(o, "resourceKey", json_string(""));
    }

    json_object_set_new(o, "count", json_integer((json_int_t) e->count));
    json_object_set_new(o, "throttledOut",
                        json_integer((json_int_t) e->throttled));
    json_object_set_new(o, "bytesIn",
                        json_integer((json_int_t) e->bytes_in));
    json_object_set_new(o, "bytesOut",
                        json_integer((json_int_t) e->bytes_out));

    free(key);

    return o;
}


static void
ngx_http_apim_usage_publish(natsConnection *nc, ngx_http_apim_usage_buf_t *b,
    ngx_log_t *log)
{
    char        *text;
    json_t      *msg, *entries, *o;
    ngx_uint_t   i, n, sent;
    natsStatus   st;

    sent = 0;
    i = 0;

    for ( ;; ) {
        msg = json_object();
        entries = json_array();

        if (msg == NULL || entries == NULL) {
            json_decref(msg);
            json_decref(entries);
            return;
        }

        for (n = 0; i < APIM_USAGE_SLOTS && n < APIM_USAGE_PER_MSG; i++) {
            if (b->slots[i].koff == 0) {
                continue;
            }

            o = ngx_http_apim_usage_entry_json(b, &b->slots[i]);
            if (o != NULL) {
                json_array_append_new(entries, o);
                n++;
            }
        }

        if (n == 0 && sent > 0) {
            json_decref(entries);
            json_decref(msg);
            return;
        }

        json_object_set_new(msg, "gatewayId",
                            json_string(ngx_http_apim_usage_gateway));
        json_object_set_new(msg, "label",
                            json_string(ngx_http_apim_usage_label));
        json_object_set_new(msg, "pid",
                            json_integer((json_int_t) ngx_http_apim_usage_pid));
        json_object_set_new(msg, "windowStart", json_integer(b->start));
        json_object_set_new(msg, "windowEnd", json_integer(b->end));
        /* the dropped count goes with the first message only */
        json_object_set_new(msg, "dropped",
                            json_integer(sent ? 0 : (json_int_t) b->dropped));
        json_object_set_new(msg, "entries", entries);

        /* the throttle keys' counts, with the first message */
        if (sent == 0) {
            if (b->quota != NULL) {
                json_object_set(msg, "quota", b->quota);
            }
            if (b->fallback) {
                json_object_set_new(msg, "fallback", json_true());
            }
        }

        text = json_dumps(msg, JSON_COMPACT);
        json_decref(msg);

        if (text != NULL) {
            st = natsConnection_PublishString(nc, APIM_USAGE_SUBJECT, text);
            if (st != NATS_OK) {
                ngx_log_error(NGX_LOG_WARN, log, 0,
                              "apim: usage not published: %s",
                              natsStatus_GetText(st));
            }
            free(text);
        }

        sent += n;

        if (n < APIM_USAGE_PER_MSG || i == APIM_USAGE_SLOTS) {
            return;
        }
    }
}


static natsConnection *
ngx_http_apim_usage_connect(ngx_log_t *log)
{
    natsStatus       st;
    natsOptions     *opts;
    natsConnection  *nc;

    nc = NULL;

    if (natsOptions_Create(&opts) != NATS_OK) {
        return NULL;
    }

    st = ngx_http_apim_nats_servers(opts, ngx_http_apim_usage_url);
    if (st == NATS_OK) {
        st = natsOptions_SetName(opts, "apim-gateway-usage");
    }
    if (st == NATS_OK) {
        st = natsOptions_SetMaxReconnect(opts, -1);
    }
    if (st == NATS_OK) {
        st = natsOptions_SetReconnectWait(opts, 500);
    }
    if (st == NATS_OK) {
        st = natsOptions_SetTimeout(opts, 2000);
    }
    if (st == NATS_OK) {
        st = natsConnection_Connect(&nc, opts);
    }

    natsOptions_Destroy(opts);

    if (st != NATS_OK) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "apim: usage: cannot connect to %s: %s",
                      ngx_http_apim_usage_url, natsStatus_GetText(st));
        return NULL;
    }

    return nc;
}


static void *
ngx_http_apim_usage_main(void *arg)
{
    ngx_log_t                  *log = arg;

    int64_t                     retry;
    ngx_uint_t                  stop;
    natsConnection             *nc;
    struct timespec             ts;
    ngx_http_apim_usage_buf_t  *b;

    nc = NULL;
    retry = 0;

    for ( ;; ) {
        pthread_mutex_lock(&ngx_http_apim_usage_mutex);

        if (!ngx_http_apim_usage_stopping
            && __atomic_load_n(&ngx_http_apim_usage_full, __ATOMIC_ACQUIRE)
               == NULL)
        {
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += APIM_USAGE_INTERVAL * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }

            pthread_cond_timedwait(&ngx_http_apim_usage_cond,
                                   &ngx_http_apim_usage_mutex, &ts);
        }

        stop = ngx_http_apim_usage_stopping;
        pthread_mutex_unlock(&ngx_http_apim_usage_mutex);

        b = __atomic_exchange_n(&ngx_http_apim_usage_full, NULL,
                                __ATOMIC_ACQ_REL);

        if (b != NULL) {
            if (nc == NULL && ngx_http_apim_usage_wall_ms() >= retry) {
                nc = ngx_http_apim_usage_connect(log);
                if (nc == NULL) {
                    retry = ngx_http_apim_usage_wall_ms() + 1000;
                }
            }

            if (nc != NULL) {
                ngx_http_apim_usage_publish(nc, b, log);
            }

            ngx_http_apim_metrics_add(nc != NULL ? APIM_METRIC_USAGE_PUBLISHED
                                                 : APIM_METRIC_USAGE_LOST, 1);
            ngx_http_apim_metrics_add(APIM_METRIC_USAGE_DROPPED, b->dropped);

            ngx_http_apim_usage_buf_clear(b);
            __atomic_store_n(&ngx_http_apim_usage_empty, b, __ATOMIC_RELEASE);
        }

        if (stop) {
            break;
        }
    }

    if (nc != NULL) {
        natsConnection_FlushTimeout(nc, 500);
        natsConnection_Destroy(nc);
    }

    return NULL;
}


/* -- process ---------------------------------------------------------------- */

static char *
ngx_http_apim_usage_cstr(const u_char *data, size_t len)
{
    char  *s;

    s = malloc(len + 1);
    if (s != NULL) {
        ngx_memcpy(s, data, len);
        s[len] = '\0';
    }

    return s;
}


static ngx_int_t
ngx_http_apim_usage_init_process(ngx_cycle_t *cycle)
{
    int                         err;
    char                       *party;
    ngx_int_t                   rc;
    ngx_http_apim_main_conf_t  *amcf;
    ngx_http_apim_usage_buf_t  *spare;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    amcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_apim_module);
    if (amcf == NULL) {
        return NGX_OK;
    }

    if (amcf->event_hub_url.len == 0) {
        /* no Traffic Manager: local rate limits only */
        return ngx_http_apim_throttle_init_process(cycle, NULL, "");
    }

    ngx_http_apim_usage_url = ngx_http_apim_usage_cstr(amcf->event_hub_url.data,
                                                  amcf->event_hub_url.len);
    ngx_http_apim_usage_gateway = ngx_http_apim_usage_cstr(
                                                  cycle->hostname.data,
                                                  cycle->hostname.len);
    if (amcf->label.len) {
        ngx_http_apim_usage_label = ngx_http_apim_usage_cstr(amcf->label.data,
                                                          amcf->label.len);
    } else {
        ngx_http_apim_usage_label = ngx_http_apim_usage_cstr(
                                                  (u_char *) "Default", 7);
    }

    ngx_http_apim_usage_cur = ngx_http_apim_usage_buf_create();
    spare = ngx_http_apim_usage_buf_create();

    if (ngx_http_apim_usage_url == NULL || ngx_http_apim_usage_gateway == NULL
        || ngx_http_apim_usage_label == NULL
        || ngx_http_apim_usage_cur == NULL || spare == NULL)
    {
        ngx_http_apim_usage_buf_free(spare);
        ngx_http_apim_usage_buf_free(ngx_http_apim_usage_cur);
        ngx_http_apim_usage_cur = NULL;
        return NGX_ERROR;
    }

    ngx_http_apim_usage_pid = ngx_pid;

    /* the party of the rate limits: "<gatewayId>/<pid>" */
    party = malloc(cycle->hostname.len + NGX_INT64_LEN + 2);
    if (party == NULL) {
        return NGX_ERROR;
    }
    *ngx_sprintf((u_char *) party, "%V/%P", &cycle->hostname, ngx_pid) = '\0';
    rc = ngx_http_apim_throttle_init_process(cycle, ngx_http_apim_usage_url,
                                             party);
    free(party);
    if (rc != NGX_OK) {
        return NGX_ERROR;
    }
    ngx_http_apim_usage_cur->start = ngx_http_apim_usage_wall_ms();
    ngx_http_apim_usage_full = NULL;
    ngx_http_apim_usage_empty = spare;
    ngx_http_apim_usage_stopping = 0;

    err = pthread_create(&ngx_http_apim_usage_thread, NULL,
                         ngx_http_apim_usage_main, cycle->log);
    if (err != 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, err,
                      "apim: usage: pthread_create() failed");
        ngx_http_apim_usage_buf_free(ngx_http_apim_usage_cur);
        ngx_http_apim_usage_cur = NULL;
        return NGX_ERROR;
    }

    ngx_http_apim_usage_running = 1;

    ngx_http_apim_usage_timer.handler = ngx_http_apim_usage_tick;
    ngx_http_apim_usage_timer.log = cycle->log;
    ngx_http_apim_usage_timer.data = NULL;
    ngx_http_apim_usage_timer.cancelable = 1;

    ngx_add_timer(&ngx_http_apim_usage_timer, APIM_USAGE_INTERVAL);

    return NGX_OK;
}


static void
ngx_http_apim_usage_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_apim_usage_buf_t  *b;

    ngx_http_apim_throttle_exit_process();

    if (!ngx_http_apim_usage_running) {
        return;
    }

    /* the last window: to the thread if it can take it */
    b = ngx_http_apim_usage_cur;
    if (b != NULL && (b->used || b->dropped)
        && __atomic_load_n(&ngx_http_apim_usage_full, __ATOMIC_ACQUIRE)
           == NULL)
    {
        b->end = ngx_http_apim_usage_wall_ms();
        __atomic_store_n(&ngx_http_apim_usage_full, b, __ATOMIC_RELEASE);
        ngx_http_apim_usage_cur = NULL;
    }

    pthread_mutex_lock(&ngx_http_apim_usage_mutex);
    ngx_http_apim_usage_stopping = 1;
    pthread_cond_signal(&ngx_http_apim_usage_cond);
    pthread_mutex_unlock(&ngx_http_apim_usage_mutex);

    pthread_join(ngx_http_apim_usage_thread, NULL);
    ngx_http_apim_usage_running = 0;

    ngx_http_apim_usage_buf_free(ngx_http_apim_usage_cur);
    ngx_http_apim_usage_buf_free(ngx_http_apim_usage_full);
    ngx_http_apim_usage_buf_free(ngx_http_apim_usage_empty);
    ngx_http_apim_usage_cur = NULL;
    ngx_http_apim_usage_full = NULL;
    ngx_http_apim_usage_empty = NULL;

    free(ngx_http_apim_usage_url);
    free(ngx_http_apim_usage_gateway);
    free(ngx_http_apim_usage_label);
    ngx_http_apim_usage_url = NULL;
    ngx_http_apim_usage_gateway = NULL;
    ngx_http_apim_usage_label = NULL;
}


/* -- configuration ------------------------------------------------------------ */

static ngx_int_t
ngx_http_apim_usage_postconf(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_apim_usage_handler;

    return NGX_OK;
}
