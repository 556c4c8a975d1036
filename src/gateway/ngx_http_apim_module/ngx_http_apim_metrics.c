/*
 * ngx_http_apim_metrics.c: the gateway's Prometheus metrics, summed over
 * every worker of one nginx.
 *
 * Directive (ngx_http_apim_metrics_module):
 *   apim_metrics;                     (location) answers GET and HEAD with
 *                                     the Prometheus text format (0.0.4);
 *                                     protect it with allow/deny
 *
 * The numbers live in a small shared memory zone ("apim_metrics", made
 * whenever the module is loaded; it survives a reload): counters that any
 * thread of any worker adds to with atomic instructions, and one slot per
 * live worker for its gauges (snapshot sequence, last answer of the
 * control plane, event hub connection, Traffic Manager fallback). Nothing
 * takes a lock; a worker that has not claimed a slot yet (or a zone that
 * does not exist) drops gauge updates, never blocks.
 *
 * A worker claims a free slot (or that of a dead process) on its first
 * gauge update, by compare-and-swap of the slot's pid, and frees it in
 * exit_process. A worker killed without exit_process leaves its slot
 * behind: the page skips slots whose process is gone (kill(pid, 0)) and
 * the next worker takes them over.
 *
 * Requests are counted by a log-phase handler from what the access
 * handler left in the request's context: the fault code, else whether a
 * backend answered ($upstream_status and the tries). Only requests of
 * locations with apim_gateway on have that context. The label values are
 * fixed (the known fault codes, "other"), so the page stays small.
 */

#include "ngx_http_apim_module.h"

#include <errno.h>
#include <signal.h>


/* gateway.workers allows 256; old and new workers overlap in a reload */
#define APIM_METRICS_WORKERS     512
#define APIM_METRICS_TEXT_MAX    (16 * 1024)
#define APIM_METRICS_TIMER_MS    250


/* the fault codes counted by name; anything else is "other" */
static const char  *ngx_http_apim_metrics_codes[] = {
    "700700", "900800", "900801", "900802", "900803", "900804", "900805",
    "900806", "900807", "900901", "900902", "900906", "900907", "900908",
    "900909", "900910", "900911", "900912"
};

#define APIM_METRICS_NCODES                                                   \
    (sizeof(ngx_http_apim_metrics_codes) / sizeof(char *))


/* one worker's gauges; a cache line of its own */
typedef struct {
    ngx_pid_t                   pid;        /* 0: free */
    int                         pad0;
    int64_t                     seq;        /* its snapshot's, -1: none */
    int64_t                     started;    /* seconds since the epoch */
    int64_t                     gauges[APIM_GAUGE_N];
    u_char                      pad[64 - (3 + APIM_GAUGE_N) * 8];
} ngx_http_apim_metrics_worker_t;

typedef struct {
    uint64_t                    counters[APIM_METRIC_N];
    uint64_t                    faults[APIM_METRICS_NCODES + 1];
    ngx_http_apim_metrics_worker_t  workers[APIM_METRICS_WORKERS];
} ngx_http_apim_metrics_shm_t;


static ngx_int_t ngx_http_apim_metrics_postconf(ngx_conf_t *cf);
static char *ngx_http_apim_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_apim_metrics_init_process(ngx_cycle_t *cycle);
static void ngx_http_apim_metrics_exit_process(ngx_cycle_t *cycle);


static ngx_command_t  ngx_http_apim_metrics_commands[] = {

    { ngx_string("apim_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_apim_metrics,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_apim_metrics_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_apim_metrics_postconf,        /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_apim_metrics_module = {
    NGX_MODULE_V1,
    &ngx_http_apim_metrics_module_ctx,     /* module context */
    ngx_http_apim_metrics_commands,        /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_apim_metrics_init_process,    /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_apim_metrics_exit_process,    /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* set by the zone's init in the master, inherited by the workers */
static ngx_http_apim_metrics_shm_t     *ngx_http_apim_metrics_shm;

/* this worker's slot (atomic: any thread may claim it first) */
static ngx_http_apim_metrics_worker_t  *ngx_http_apim_metrics_self;

/* the worker's event loop only */
static ngx_event_t                      ngx_http_apim_metrics_timer;


/* -- counters and gauges (any thread) ------------------------------------ */

static ngx_uint_t
ngx_http_apim_metrics_alive(ngx_pid_t pid)
{
    return kill(pid, 0) == 0 || errno != ESRCH;
}


static ngx_http_apim_metrics_worker_t *
ngx_http_apim_metrics_me(void)
{
    ngx_pid_t                        old;
    ngx_uint_t                       i, j;
    ngx_http_apim_metrics_shm_t     *shm;
    ngx_http_apim_metrics_worker_t  *w, *me;

    me = __atomic_load_n(&ngx_http_apim_metrics_self, __ATOMIC_ACQUIRE);
    shm = ngx_http_apim_metrics_shm;

    if (me != NULL || shm == NULL
        || (ngx_process != NGX_PROCESS_WORKER
            && ngx_process != NGX_PROCESS_SINGLE))
    {
        return me;
    }

    for (i = 0; i < APIM_METRICS_WORKERS; i++) {
        w = &shm->workers[i];
        old = __atomic_load_n(&w->pid, __ATOMIC_ACQUIRE);

        if (old != ngx_pid
            && (old == 0 || !ngx_http_apim_metrics_alive(old))
            && __atomic_compare_exchange_n(&w->pid, &old, ngx_pid, 0,
                                           __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        {
            __atomic_store_n(&w->seq, -1, __ATOMIC_RELEASE);
            __atomic_store_n(&w->started, (int64_t) time(NULL),
                             __ATOMIC_RELEASE);
            for (j = 0; j < APIM_GAUGE_N; j++) {
                __atomic_store_n(&w->gauges[j], j == APIM_GAUGE_EVENT_HUB
                                                ? -1 : 0, __ATOMIC_RELEASE);
            }
            break;
        }

        if (old == ngx_pid) {
            break;      /* another thread of this worker claimed it */
        }
    }

    if (i == APIM_METRICS_WORKERS) {
        return NULL;    /* more workers than slots: their gauges are lost */
    }

    me = NULL;

    if (!__atomic_compare_exchange_n(&ngx_http_apim_metrics_self, &me, w, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)
        && me != w)
    {
        /* another thread of this worker claimed another slot first */
        __atomic_store_n(&w->pid, 0, __ATOMIC_RELEASE);
        return me;
    }

    return w;
}


void
ngx_http_apim_metrics_add(ngx_uint_t counter, uint64_t n)
{
    if (ngx_http_apim_metrics_shm != NULL && counter < APIM_METRIC_N) {
        __atomic_add_fetch(&ngx_http_apim_metrics_shm->counters[counter], n,
                           __ATOMIC_RELAXED);
    }
}


void
ngx_http_apim_metrics_gauge(ngx_uint_t gauge, int64_t value)
{
    ngx_http_apim_metrics_worker_t  *me;

    me = ngx_http_apim_metrics_me();

    if (me != NULL && gauge < APIM_GAUGE_N) {
        __atomic_store_n(&me->gauges[gauge], value, __ATOMIC_RELEASE);
    }
}


/* -- requests (log phase) ------------------------------------------------ */

static ngx_int_t
ngx_http_apim_metrics_log(ngx_http_request_t *r)
{
    ngx_uint_t                  i, n;
    ngx_http_apim_ctx_t        *ctx;
    ngx_http_upstream_state_t  *state;

    if (ngx_http_apim_metrics_shm == NULL) {
        return NGX_OK;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_apim_module);
    if (ctx == NULL) {
        return NGX_OK;
    }

    if (ctx->fault_code.len) {
        for (i = 0; i < APIM_METRICS_NCODES; i++) {
            if (ctx->fault_code.len == 6
                && ngx_strncmp(ctx->fault_code.data,
                               ngx_http_apim_metrics_codes[i], 6) == 0)
            {
                break;
            }
        }

        __atomic_add_fetch(&ngx_http_apim_metrics_shm->faults[i], 1,
                           __ATOMIC_RELAXED);
        return NGX_OK;
    }

    if (r->upstream_states == NULL || r->upstream_states->nelts == 0) {
        ngx_http_apim_metrics_add(APIM_METRIC_OTHER, 1);
        return NGX_OK;
    }

    state = r->upstream_states->elts;
    n = r->upstream_states->nelts;

    /* each try after the first went on to another endpoint */
    if (n > 1) {
        ngx_http_apim_metrics_add(APIM_METRIC_FAILOVERS, n - 1);
    }

    if (state[n - 1].header_time != (ngx_msec_t) -1) {
        ngx_http_apim_metrics_add(APIM_METRIC_PROXIED, 1);

    } else if (r->headers_out.status == NGX_HTTP_BAD_GATEWAY
               || r->headers_out.status == NGX_HTTP_GATEWAY_TIME_OUT)
    {
        ngx_http_apim_metrics_add(APIM_METRIC_UPSTREAM_FAILED, 1);

    } else {
        /* e.g. the client went away before the backend answered */
        ngx_http_apim_metrics_add(APIM_METRIC_OTHER, 1);
    }

    return NGX_OK;
}


/* -- the page ------------------------------------------------------------ */

static u_char *
ngx_http_apim_metrics_head(u_char *p, u_char *last, const char *name,
    const char *type, const char *help)
{
    return ngx_slprintf(p, last, "# HELP %s %s\n# TYPE %s %s\n",
                        name, help, name, type);
}


static u_char *
ngx_http_apim_metrics_text(u_char *p, u_char *last)
{
    int64_t                          now, seq_min, seq_max, age, g;
    ngx_int_t                        hub, hubs;
    ngx_uint_t                       i, workers, fallback;
    ngx_pid_t                        pid;
    ngx_http_apim_metrics_shm_t     *shm;
    ngx_http_apim_metrics_worker_t  *w;

    shm = ngx_http_apim_metrics_shm;

#define APIM_COUNTER(c)  __atomic_load_n(&shm->counters[c], __ATOMIC_RELAXED)

    p = ngx_http_apim_metrics_head(p, last, "apim_gateway_requests_total",
            "counter",
            "Requests to APIs by outcome: proxied (a backend answered), "
            "upstream_failed (no endpoint answered: 502 or 504), fault "
            "(refused by the gateway, by fault code), other (CORS "
            "preflights, internal errors, clients gone).");

    p = ngx_slprintf(p, last,
                     "apim_gateway_requests_total{outcome=\"proxied\"} %uL\n"
                     "apim_gateway_requests_total{outcome=\"upstream_failed\"}"
                     " %uL\n"
                     "apim_gateway_requests_total{outcome=\"other\"} %uL\n",
                     APIM_COUNTER(APIM_METRIC_PROXIED),
                     APIM_COUNTER(APIM_METRIC_UPSTREAM_FAILED),
                     APIM_COUNTER(APIM_METRIC_OTHER));

    for (i = 0; i <= APIM_METRICS_NCODES; i++) {
        p = ngx_slprintf(p, last,
                         "apim_gateway_requests_total{outcome=\"fault\","
                         "code=\"%s\"} %uL\n",
                         i < APIM_METRICS_NCODES
                         ? ngx_http_apim_metrics_codes[i] : "other",
                         __atomic_load_n(&shm->faults[i], __ATOMIC_RELAXED));
    }

    p = ngx_http_apim_metrics_head(p, last,
            "apim_gateway_upstream_failovers_total", "counter",
            "Tries that went on to the next endpoint or address after an "
            "error or a timeout.");
    p = ngx_slprintf(p, last, "apim_gateway_upstream_failovers_total %uL\n",
                     APIM_COUNTER(APIM_METRIC_FAILOVERS));

    /* the workers' gauges */
    now = (int64_t) time(NULL);
    workers = 0;
    fallback = 0;
    hub = 1;
    hubs = 0;
    seq_min = -1;
    seq_max = -1;
    age = 0;

    for (i = 0; i < APIM_METRICS_WORKERS; i++) {
        w = &shm->workers[i];
        pid = __atomic_load_n(&w->pid, __ATOMIC_ACQUIRE);

        if (pid == 0 || !ngx_http_apim_metrics_alive(pid)) {
            continue;
        }

        g = __atomic_load_n(&w->seq, __ATOMIC_ACQUIRE);
        seq_min = (workers == 0 || g < seq_min) ? g : seq_min;
        seq_max = (workers == 0 || g > seq_max) ? g : seq_max;
        workers++;

        g = __atomic_load_n(&w->gauges[APIM_GAUGE_SYNCED], __ATOMIC_ACQUIRE);
        if (g == 0) {
            g = __atomic_load_n(&w->started, __ATOMIC_ACQUIRE);
        }
        age = ngx_max(age, now - g);

        g = __atomic_load_n(&w->gauges[APIM_GAUGE_EVENT_HUB],
                            __ATOMIC_ACQUIRE);
        if (g >= 0) {
            hubs++;
            hub = hub && g;
        }

        fallback += __atomic_load_n(&w->gauges[APIM_GAUGE_FALLBACK],
                                    __ATOMIC_ACQUIRE) != 0;
    }

    p = ngx_http_apim_metrics_head(p, last, "apim_gateway_workers", "gauge",
            "Worker processes reporting.");
    p = ngx_slprintf(p, last, "apim_gateway_workers %ui\n", workers);

    p = ngx_http_apim_metrics_head(p, last, "apim_gateway_snapshot_seq_min",
            "gauge",
            "Lowest change sequence of the data the workers serve (-1: "
            "none yet).");
    p = ngx_slprintf(p, last, "apim_gateway_snapshot_seq_min %L\n", seq_min);
    p = ngx_http_apim_metrics_head(p, last, "apim_gateway_snapshot_seq_max",
            "gauge", "Highest change sequence of the data the workers serve.");
    p = ngx_slprintf(p, last, "apim_gateway_snapshot_seq_max %L\n", seq_max);

    p = ngx_http_apim_metrics_head(p, last,
            "apim_gateway_control_plane_sync_age_seconds", "gauge",
            "Seconds since the control plane last answered a worker's data "
            "request (the worker that heard from it longest ago; since its "
            "start if never).");
    p = ngx_slprintf(p, last,
                     "apim_gateway_control_plane_sync_age_seconds %L\n", age);

    p = ngx_http_apim_metrics_head(p, last, "apim_gateway_full_syncs_total",
            "counter", "Full snapshots loaded from the control plane.");
    p = ngx_slprintf(p, last, "apim_gateway_full_syncs_total %uL\n",
                     APIM_COUNTER(APIM_METRIC_FULL_SYNCS));
    p = ngx_http_apim_metrics_head(p, last,
            "apim_gateway_deltas_applied_total", "counter",
            "Deltas of the control plane applied to a worker's data.");
    p = ngx_slprintf(p, last, "apim_gateway_deltas_applied_total %uL\n",
                     APIM_COUNTER(APIM_METRIC_DELTAS));

    if (hubs) {
        p = ngx_http_apim_metrics_head(p, last,
                "apim_gateway_event_hub_connected", "gauge",
                "1 when every worker follows the event hub (NATS).");
        p = ngx_slprintf(p, last, "apim_gateway_event_hub_connected %d\n",
                         hub ? 1 : 0);
    }

    p = ngx_http_apim_metrics_head(p, last,
            "apim_gateway_usage_windows_total", "counter",
            "Usage aggregates (about 100 ms of requests) handed to the "
            "event hub, or lost because it was unreachable.");
    p = ngx_slprintf(p, last,
                     "apim_gateway_usage_windows_total{result=\"published\"}"
                     " %uL\n"
                     "apim_gateway_usage_windows_total{result=\"lost\"} %uL\n",
                     APIM_COUNTER(APIM_METRIC_USAGE_PUBLISHED),
                     APIM_COUNTER(APIM_METRIC_USAGE_LOST));
    p = ngx_http_apim_metrics_head(p, last, "apim_gateway_usage_dropped_total",
            "counter",
            "Requests left out of usage events because a worker's "
            "aggregate was full.");
    p = ngx_slprintf(p, last, "apim_gateway_usage_dropped_total %uL\n",
                     APIM_COUNTER(APIM_METRIC_USAGE_DROPPED));

    p = ngx_http_apim_metrics_head(p, last, "apim_gateway_throttle_fallback",
            "gauge",
            "1 while a worker enforces local rate limits (limit / N) "
            "because no Traffic Manager is heard.");
    p = ngx_slprintf(p, last, "apim_gateway_throttle_fallback %d\n",
                     fallback ? 1 : 0);
    p = ngx_http_apim_metrics_head(p, last,
            "apim_gateway_throttle_fallback_workers", "gauge",
            "Workers enforcing local rate limits.");
    p = ngx_slprintf(p, last, "apim_gateway_throttle_fallback_workers %ui\n",
                     fallback);
    p = ngx_http_apim_metrics_head(p, last,
            "apim_gateway_throttle_fallbacks_total", "counter",
            "Times a worker lost the Traffic Manager and fell back to local "
            "rate limits.");
    p = ngx_slprintf(p, last, "apim_gateway_throttle_fallbacks_total %uL\n",
                     APIM_COUNTER(APIM_METRIC_FALLBACKS));

#undef APIM_COUNTER

    return p;
}


static ngx_int_t
ngx_http_apim_metrics_handler(ngx_http_request_t *r)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_apim_metrics_shm == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    b = ngx_create_temp_buf(r->pool, APIM_METRICS_TEXT_MAX);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_http_apim_metrics_text(b->pos, b->end);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/plain") - 1;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* -- process ------------------------------------------------------------- */

/* the worker's snapshot sequence into its slot, a few times a second */
static void
ngx_http_apim_metrics_tick(ngx_event_t *ev)
{
    ngx_http_apim_snap_t            *s;
    ngx_http_apim_metrics_worker_t  *me;

    me = ngx_http_apim_metrics_me();

    if (me != NULL) {
        s = __atomic_load_n(&ngx_http_apim_current, __ATOMIC_ACQUIRE);
        __atomic_store_n(&me->seq, s != NULL ? s->seq : -1, __ATOMIC_RELEASE);
    }

    if (!ngx_exiting && !ngx_quit && !ngx_terminate) {
        ngx_add_timer(ev, APIM_METRICS_TIMER_MS);
    }
}


static ngx_int_t
ngx_http_apim_metrics_init_process(ngx_cycle_t *cycle)
{
    if (ngx_http_apim_metrics_shm == NULL
        || (ngx_process != NGX_PROCESS_WORKER
            && ngx_process != NGX_PROCESS_SINGLE))
    {
        return NGX_OK;
    }

    ngx_http_apim_metrics_timer.handler = ngx_http_apim_metrics_tick;
    ngx_http_apim_metrics_timer.log = cycle->log;
    ngx_http_apim_metrics_timer.data = NULL;
    ngx_http_apim_metrics_timer.cancelable = 1;

    ngx_http_apim_metrics_tick(&ngx_http_apim_metrics_timer);

    return NGX_OK;
}


static void
ngx_http_apim_metrics_exit_process(ngx_cycle_t *cycle)
{
    ngx_pid_t                        pid;
    ngx_http_apim_metrics_worker_t  *me;

    me = __atomic_exchange_n(&ngx_http_apim_metrics_self, NULL,
                             __ATOMIC_ACQ_REL);

    if (me != NULL) {
        pid = ngx_pid;
        __atomic_compare_exchange_n(&me->pid, &pid, 0, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
    }
}


/* -- configuration ------------------------------------------------------- */

static ngx_int_t
ngx_http_apim_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t              *shpool;
    ngx_http_apim_metrics_shm_t  *shm;

    if (data) {
        /* a reload: the counters go on */
        shm_zone->data = data;
        ngx_http_apim_metrics_shm = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        ngx_http_apim_metrics_shm = shpool->data;
        return NGX_OK;
    }

    shm = ngx_slab_calloc(shpool, sizeof(ngx_http_apim_metrics_shm_t));
    if (shm == NULL) {
        return NGX_ERROR;
    }

    shpool->data = shm;
    shm_zone->data = shm;
    ngx_http_apim_metrics_shm = shm;

    return NGX_OK;
}


static ngx_int_t
ngx_http_apim_metrics_postconf(ngx_conf_t *cf)
{
    ngx_str_t                   name = ngx_string("apim_metrics");
    ngx_shm_zone_t             *zone;
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    zone = ngx_shared_memory_add(cf, &name, 32 * ngx_pagesize,
                                 &ngx_http_apim_metrics_module);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    zone->init = ngx_http_apim_metrics_init_zone;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_apim_metrics_log;

    return NGX_OK;
}


static char *
ngx_http_apim_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_apim_metrics_handler;

    return NGX_CONF_OK;
}
