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
 * are not checked. An advanced policy's conditional groups (IP, IP range,
 * header, query parameter; invertCondition) are tried in order: the first
 * whose conditions all hold applies its limit on "<key>_condition_<i>",
 * else the default limit does (JWT claim conditions: the backend JWT's
 * claims). Custom policies (level "custom", their Siddhi query parsed by
 * apimd into "rule": trafficmanager/tm_custom.h) apply to every request
 * whose variables satisfy their eligibility, on the key
 * "custom:<policy>:<expanded key template>", refused with 900806.
 * Bandwidth limits (BANDWIDTHLIMIT) count bytes instead of requests: the
 * access check refuses once the window's bytes are spent, and the log
 * phase (ngx_http_apim_throttle_log(), called by the usage module) adds
 * the request's body (Content-Length) and the response body as sent; so
 * the request that crosses the limit passes.
 *
 * Each worker (a party "<gatewayId>/<pid>" for the Traffic Manager) keeps
 * a table (key -> window, count, allowance, throttled until): the request
 * is admitted when the count of every key in its epoch-aligned window is
 * below the key's cap, and then counted. The cap is the allowance the
 * Traffic Manager granted for the window, else the implicit allowance
 * floor(limit / (2 N)), N the parties of the last heartbeat; with no
 * heartbeat for APIM_THROTTLE_FALLBACK_MS the worker falls back to local
 * limits, limit / N. A key the Traffic Manager declared throttled is
 * refused until then. Refused: 429, the level's fault code, Retry-After;
 * refusals at the cap are reported too ("denied"), so that the Traffic
 * Manager sees the demand of a worker stuck at a small allowance.
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
#define APIM_LEVEL_CUSTOM         3
#define APIM_LEVEL_N              4

#define APIM_THROTTLE_CUSTOM_MAX  16        /* custom policies applied */
#define APIM_TENANT               "carbon.super"

/* the variables of custom policies, as trafficmanager/tm_custom.c names
 * them */
#define APIM_VAR_USER             0
#define APIM_VAR_API_CONTEXT      1
#define APIM_VAR_API_VERSION      2
#define APIM_VAR_RESOURCE_KEY     3
#define APIM_VAR_APP_ID           4
#define APIM_VAR_APP_TENANT       5
#define APIM_VAR_API_TENANT       6
#define APIM_VAR_CLIENT_IP        7
#define APIM_VAR_API_NAME         8
#define APIM_VAR_N                9


/* one condition of an advanced policy's conditional group */
#define APIM_COND_IP              0
#define APIM_COND_HEADER          1
#define APIM_COND_QUERY           2
#define APIM_COND_JWT             3         /* claims the backend JWT has */

typedef struct {
    ngx_uint_t                  type;
    ngx_uint_t                  invert;
    ngx_str_t                   name;       /* header, query parameter */
    ngx_str_t                   value;
    u_char                      start[16];  /* IP: v4 as ::ffff:a.b.c.d */
    u_char                      end[16];
} ngx_http_apim_cond_t;

typedef struct {
    ngx_http_apim_cond_t       *conds;      /* all must match */
    size_t                      nconds;
    int64_t                     amount;     /* 0: unlimited */
    int64_t                     window_ms;
    ngx_uint_t                  bandwidth;  /* amount is bytes */
} ngx_http_apim_group_t;


/* one limited policy of the snapshot */
typedef struct ngx_http_apim_limit_s  ngx_http_apim_limit_t;

struct ngx_http_apim_limit_s {
    ngx_http_apim_limit_t      *next;
    ngx_uint_t                  level;
    const char                 *name;
    int64_t                     amount;     /* requests or bytes; 0:
                                               unlimited (groups only) */
    int64_t                     window_ms;
    ngx_uint_t                  stop;       /* stopOnQuotaReach */
    ngx_http_apim_group_t      *groups;     /* advanced: conditional */
    size_t                      ngroups;
    ngx_uint_t                  bandwidth;  /* amount is bytes */
};


/* a custom policy: eligibility, key template, limit */
typedef struct {
    ngx_uint_t                  var;        /* APIM_VAR_* */
    ngx_str_t                   value;
} ngx_http_apim_ccond_t;

typedef struct {
    ngx_int_t                   var;        /* APIM_VAR_*, -1: text */
    ngx_str_t                   text;
} ngx_http_apim_seg_t;

typedef struct ngx_http_apim_custom_s  ngx_http_apim_custom_t;

struct ngx_http_apim_custom_s {
    ngx_http_apim_custom_t     *next;
    ngx_http_apim_limit_t       limit;      /* level custom */
    ngx_http_apim_ccond_t      *conds;      /* all must hold */
    size_t                      nconds;
    ngx_http_apim_seg_t        *segs;       /* the key template */
    size_t                      nsegs;
};


struct ngx_http_apim_limits_s {
    ngx_http_apim_limit_t      *buckets[APIM_THROTTLE_BUCKETS];
    ngx_http_apim_custom_t     *customs;
    ngx_uint_t                  ncustoms;
};


/* the bandwidth keys that admitted a request (ctx->throttle_bytes) */
typedef struct {
    ngx_uint_t                  n;
    struct {
        int64_t                 window_start;
        size_t                  len;
        u_char                  key[APIM_THROTTLE_KEY_MAX];
    }                           keys[3];
} ngx_http_apim_tbytes_t;


/* one key of the worker's table; free when klen == 0 */
typedef struct {
    ngx_uint_t                  hash;
    uint16_t                    klen;
    uint8_t                     level;
    uint8_t                     granted;    /* allowance came from a grant */
    uint8_t                     dirty;      /* changed since the last report */
    int16_t                     group;      /* conditional group, or -1 */
    u_char                      key[APIM_THROTTLE_KEY_MAX];
    char                        policy[APIM_THROTTLE_POLICY_MAX];
    int64_t                     window_start;
    int64_t                     window_ms;
    int64_t                     first;      /* this window's first use (ms) */
    int64_t                     limit;
    int64_t                     count;
    int64_t                     allowance;
    int64_t                     until;      /* throttled until (ms) */
    int64_t                     denied;     /* refused at the cap: requests,
                                               or bytes (estimated) */
    int64_t                     last_bytes; /* bandwidth: the last request's */
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

static const ngx_http_apim_fault_t  ngx_http_apim_throttled_custom = {
    "900806", NGX_HTTP_TOO_MANY_REQUESTS, "Message throttled out",
    "You have exceeded your quota"
};

static const char  *ngx_http_apim_level_names[APIM_LEVEL_N] = {
    "subscription", "application", "advanced", "custom"
};

static const char  *ngx_http_apim_var_names[APIM_VAR_N] = {
    "userId", "apiContext", "apiVersion", "resourceKey", "appId",
    "appTenant", "apiTenant", "clientIp", "apiName"
};


/* the worker's event loop only */
static ngx_http_apim_tkey_t  *ngx_http_apim_tkeys;
static ngx_uint_t             ngx_http_apim_tkeys_used;
static ngx_uint_t             ngx_http_apim_tkeys_full;   /* for the log */
static int64_t                ngx_http_apim_parties = 1;
static int64_t                ngx_http_apim_last_beat;    /* ms */
static int64_t                ngx_http_apim_started;      /* ms */
static ngx_uint_t             ngx_http_apim_fallback;
static int64_t                ngx_http_apim_fallback_since; /* ms */
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


/* a request count or bandwidth limit: *amount (requests or bytes; 0:
 * unlimited or another kind), *window_ms, *bandwidth */
static void
ngx_http_apim_limit_parse(json_t *lim, int64_t *amount, int64_t *window_ms,
    ngx_uint_t *bandwidth)
{
    json_t      *rc;
    int64_t      n, unit_ms, unit_time, mult;
    const char  *type, *du;

    *amount = 0;
    *window_ms = 0;
    *bandwidth = 0;
    mult = 1;

    type = ngx_http_apim_jstr(lim, "type");
    if (type == NULL) {
        return;
    }

    if (ngx_strcmp(type, "REQUESTCOUNTLIMIT") == 0) {
        rc = json_object_get(lim, "requestCount");
        n = json_integer_value(json_object_get(rc, "requestCount"));

        /* "Unlimited" (the reference stores 2147483647) is no limit */
        if (n >= INT32_MAX) {
            return;
        }

    } else if (ngx_strcmp(type, "BANDWIDTHLIMIT") == 0) {
        rc = json_object_get(lim, "bandwidth");
        n = json_integer_value(json_object_get(rc, "dataAmount"));
        du = ngx_http_apim_jstr(rc, "dataUnit");

        if (du == NULL) {
            return;
        }

        if (ngx_strcmp(du, "KB") == 0) {
            mult = 1024;

        } else if (ngx_strcmp(du, "MB") == 0) {
            mult = 1024 * 1024;

        } else if (ngx_strcmp(du, "GB") == 0) {
            mult = 1024 * 1024 * 1024;

        } else {
            return;
        }

    } else {
        return;
    }

    unit_ms = ngx_http_apim_unit_ms(ngx_http_apim_jstr(rc, "timeUnit"));
    unit_time = json_integer_value(json_object_get(rc, "unitTime"));

    if (n <= 0 || n > INT64_MAX / mult || unit_ms == 0 || unit_time <= 0
        || unit_time > INT64_MAX / unit_ms)
    {
        return;
    }

    *amount = n * mult;
    *window_ms = unit_time * unit_ms;
    *bandwidth = (mult != 1);
}


/* an address as 16 bytes (IPv4 mapped); NGX_ERROR: not an address */
static ngx_int_t
ngx_http_apim_ip16(const char *text, u_char *out)
{
    size_t     len;
    in_addr_t  a;

    if (text == NULL) {
        return NGX_ERROR;
    }

    len = ngx_strlen(text);
    a = ngx_inet_addr((u_char *) text, len);

    if (a != INADDR_NONE) {
        ngx_memzero(out, 10);
        out[10] = 0xff;
        out[11] = 0xff;
        ngx_memcpy(out + 12, &a, 4);
        return NGX_OK;
    }

#if (NGX_HAVE_INET6)
    return ngx_inet6_addr((u_char *) text, len, out);
#else
    return NGX_ERROR;
#endif
}


static ngx_int_t
ngx_http_apim_cond_build(ngx_http_apim_snap_t *s, json_t *jc,
    ngx_http_apim_cond_t *c)
{
    json_t      *o;
    const char  *type, *name, *value;

    type = ngx_http_apim_jstr(jc, "type");
    c->invert = json_is_true(json_object_get(jc, "invertCondition"));
    name = NULL;
    value = NULL;

    if (type == NULL) {
        return NGX_DECLINED;
    }

    if (ngx_strcmp(type, "IPCONDITION") == 0) {
        o = json_object_get(jc, "ipCondition");
        c->type = APIM_COND_IP;
        if (ngx_strcmp(ngx_http_apim_jstr(o, "ipConditionType") ?
                       ngx_http_apim_jstr(o, "ipConditionType") : "",
                       "IPSPECIFIC") == 0)
        {
            if (ngx_http_apim_ip16(ngx_http_apim_jstr(o, "specificIP"),
                                   c->start) != NGX_OK)
            {
                return NGX_DECLINED;
            }
            ngx_memcpy(c->end, c->start, 16);
            return NGX_OK;
        }

        if (ngx_http_apim_ip16(ngx_http_apim_jstr(o, "startingIP"), c->start)
            != NGX_OK
            || ngx_http_apim_ip16(ngx_http_apim_jstr(o, "endingIP"), c->end)
               != NGX_OK)
        {
            return NGX_DECLINED;
        }
        return NGX_OK;
    }

    if (ngx_strcmp(type, "HEADERCONDITION") == 0) {
        o = json_object_get(jc, "headerCondition");
        c->type = APIM_COND_HEADER;
        name = ngx_http_apim_jstr(o, "headerName");
        value = ngx_http_apim_jstr(o, "headerValue");

    } else if (ngx_strcmp(type, "QUERYPARAMETERCONDITION") == 0) {
        o = json_object_get(jc, "queryParameterCondition");
        c->type = APIM_COND_QUERY;
        name = ngx_http_apim_jstr(o, "parameterName");
        value = ngx_http_apim_jstr(o, "parameterValue");

    } else if (ngx_strcmp(type, "JWTCLAIMSCONDITION") == 0) {
        o = json_object_get(jc, "jwtClaimsCondition");
        c->type = APIM_COND_JWT;
        name = ngx_http_apim_jstr(o, "claimUrl");
        value = ngx_http_apim_jstr(o, "attribute");

    } else {
        return NGX_DECLINED;
    }

    if (name == NULL || value == NULL) {
        return NGX_DECLINED;
    }

    c->name.data = ngx_http_apim_strdup(s, name);
    c->value.data = ngx_http_apim_strdup(s, value);
    if (c->name.data == NULL || c->value.data == NULL) {
        return NGX_ERROR;
    }
    c->name.len = ngx_strlen(name);
    c->value.len = ngx_strlen(value);

    return NGX_OK;
}


/* an advanced policy's conditional groups; NGX_ERROR: out of memory */
static ngx_int_t
ngx_http_apim_groups_build(ngx_http_apim_snap_t *s, ngx_http_apim_limit_t *l,
    json_t *groups, ngx_log_t *log)
{
    size_t                  i, j, n;
    json_t                 *jg, *conds, *jc;
    ngx_int_t               rc;
    ngx_http_apim_group_t  *g;

    n = json_array_size(groups);
    if (n == 0 || n > 64) {
        return NGX_OK;
    }

    l->groups = ngx_http_apim_alloc(s, n * sizeof(ngx_http_apim_group_t));
    if (l->groups == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(l->groups, n * sizeof(ngx_http_apim_group_t));
    l->ngroups = n;

    json_array_foreach(groups, i, jg) {
        g = &l->groups[i];
        conds = json_object_get(jg, "conditions");

        ngx_http_apim_limit_parse(json_object_get(jg, "limit"), &g->amount,
                                  &g->window_ms, &g->bandwidth);

        if (g->amount == 0 || json_array_size(conds) == 0
            || json_array_size(conds) > 64)
        {
            g->amount = 0;
            continue;
        }

        g->conds = ngx_http_apim_alloc(s, json_array_size(conds)
                                          * sizeof(ngx_http_apim_cond_t));
        if (g->conds == NULL) {
            return NGX_ERROR;
        }

        ngx_memzero(g->conds,
                    json_array_size(conds) * sizeof(ngx_http_apim_cond_t));

        json_array_foreach(conds, j, jc) {
            rc = ngx_http_apim_cond_build(s, jc, &g->conds[j]);
            if (rc == NGX_ERROR) {
                return NGX_ERROR;
            }
            if (rc == NGX_DECLINED) {
                ngx_log_error(NGX_LOG_WARN, log, 0,
                              "apim: policy \"%s\": unreadable condition "
                              "ignored (group %uz never applies)", l->name, i);
                g->amount = 0;
                break;
            }
        }

        g->nconds = json_array_size(conds);
    }

    return NGX_OK;
}


static ngx_http_apim_limits_t *
ngx_http_apim_limits_get(ngx_http_apim_snap_t *s)
{
    if (s->limits == NULL) {
        s->limits = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_limits_t));
        if (s->limits == NULL) {
            return NULL;
        }
        ngx_memzero(s->limits, sizeof(ngx_http_apim_limits_t));
    }

    return s->limits;
}


static ngx_int_t
ngx_http_apim_var_index(const char *name, size_t len)
{
    ngx_int_t  i;

    for (i = 0; i < APIM_VAR_N; i++) {
        if (ngx_strlen(ngx_http_apim_var_names[i]) == len
            && ngx_strncmp(ngx_http_apim_var_names[i], name, len) == 0)
        {
            return i;
        }
    }

    return -1;
}


/*
 * A custom policy from the data API's parsed "rule" (apimd parses the
 * Siddhi query, trafficmanager/tm_custom.c): {"conditions": [{"field",
 * "value"}], "limit", "windowMs", "keyTemplate"}. A policy without one (not
 * deployed, or a query apim cannot read) does not reach the gateway.
 */
static ngx_int_t
ngx_http_apim_custom_build(ngx_http_apim_snap_t *s, json_t *rule,
    const char *name, ngx_log_t *log)
{
    size_t                   i, n, len;
    json_t                  *conds, *jc;
    int64_t                  limit, window_ms;
    ngx_int_t                var;
    const char              *tmpl, *p, *e, *field, *value;
    ngx_http_apim_custom_t  *c;

    limit = json_integer_value(json_object_get(rule, "limit"));
    window_ms = json_integer_value(json_object_get(rule, "windowMs"));
    tmpl = ngx_http_apim_jstr(rule, "keyTemplate");
    conds = json_object_get(rule, "conditions");

    if (limit <= 0 || window_ms <= 0 || tmpl == NULL || *tmpl == '\0'
        || ngx_strlen(tmpl) > 1024 || json_array_size(conds) > 64)
    {
        return NGX_OK;
    }

    if (ngx_http_apim_limits_get(s) == NULL) {
        return NGX_ERROR;
    }

    if (s->limits->ncustoms == APIM_THROTTLE_CUSTOM_MAX) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "apim: custom policy \"%s\" ignored: at most %d apply",
                      name, APIM_THROTTLE_CUSTOM_MAX);
        return NGX_OK;
    }

    c = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_custom_t));
    if (c == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(c, sizeof(ngx_http_apim_custom_t));

    c->limit.level = APIM_LEVEL_CUSTOM;
    c->limit.name = ngx_http_apim_strdup(s, name);
    c->limit.amount = limit;
    c->limit.window_ms = window_ms;
    c->limit.stop = 1;

    if (c->limit.name == NULL) {
        return NGX_ERROR;
    }

    /* eligibility: field == value, all of them */
    n = json_array_size(conds);
    if (n) {
        c->conds = ngx_http_apim_alloc(s, n * sizeof(ngx_http_apim_ccond_t));
        if (c->conds == NULL) {
            return NGX_ERROR;
        }
    }

    json_array_foreach(conds, i, jc) {
        field = ngx_http_apim_jstr(jc, "field");
        value = ngx_http_apim_jstr(jc, "value");
        var = field ? ngx_http_apim_var_index(field, ngx_strlen(field)) : -1;

        if (var < 0 || value == NULL) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "apim: custom policy \"%s\" ignored: unknown "
                          "condition", name);
            return NGX_OK;
        }

        c->conds[i].var = (ngx_uint_t) var;
        c->conds[i].value.len = ngx_strlen(value);
        c->conds[i].value.data = ngx_http_apim_strdup(s, value);
        if (c->conds[i].value.data == NULL) {
            return NGX_ERROR;
        }
    }

    c->nconds = n;

    /* the key template: segments between ':', "$var" or text */
    for (n = 1, p = tmpl; *p; p++) {
        n += (*p == ':');
    }

    c->segs = ngx_http_apim_alloc(s, n * sizeof(ngx_http_apim_seg_t));
    if (c->segs == NULL) {
        return NGX_ERROR;
    }

    for (p = tmpl, i = 0; i < n; i++) {
        e = ngx_strchr(p, ':');
        len = e ? (size_t) (e - p) : ngx_strlen(p);

        c->segs[i].var = -1;

        if (len > 1 && *p == '$') {
            c->segs[i].var = ngx_http_apim_var_index(p + 1, len - 1);
            if (c->segs[i].var < 0) {
                ngx_log_error(NGX_LOG_WARN, log, 0,
                              "apim: custom policy \"%s\" ignored: unknown "
                              "key template variable \"%*s\"", name, len, p);
                return NGX_OK;
            }

        } else {
            c->segs[i].text.data = ngx_http_apim_alloc(s, len + 1);
            if (c->segs[i].text.data == NULL) {
                return NGX_ERROR;
            }
            ngx_memcpy(c->segs[i].text.data, p, len);
            c->segs[i].text.len = len;
        }

        p = e ? e + 1 : p + len;
    }

    c->nsegs = n;

    c->next = s->limits->customs;
    s->limits->customs = c;
    s->limits->ncustoms++;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, log, 0,
                   "apim: custom policy \"%s\": %L per %L ms, key \"%s\"",
                   name, limit, window_ms, tmpl);

    return NGX_OK;
}


ngx_int_t
ngx_http_apim_throttle_policy(ngx_http_apim_snap_t *s, json_t *pol,
    ngx_log_t *log)
{
    json_t                 *doc, *groups;
    int64_t                 amount, window_ms;
    ngx_uint_t              level, h, bandwidth;
    const char             *lv, *name;
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
        return NGX_OK;
    }

    if (level == APIM_LEVEL_CUSTOM) {
        return ngx_http_apim_custom_build(s, json_object_get(pol, "rule"),
                                          name, log);
    }

    ngx_http_apim_limit_parse(json_object_get(doc, "defaultLimit"), &amount,
                              &window_ms, &bandwidth);
    groups = (level == APIM_LEVEL_ADVANCED)
             ? json_object_get(doc, "conditionalGroups") : NULL;

    if (amount == 0 && json_array_size(groups) == 0) {
        return NGX_OK;
    }

    if (ngx_http_apim_limits_get(s) == NULL) {
        return NGX_ERROR;
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
    l->window_ms = window_ms;
    l->bandwidth = bandwidth;
    l->stop = !json_is_false(json_object_get(doc, "stopOnQuotaReach"));

    if (ngx_http_apim_groups_build(s, l, groups, log) != NGX_OK) {
        return NGX_ERROR;
    }

    h = (ngx_http_apim_hash64((u_char *) name, ngx_strlen(name)) + level)
        % APIM_THROTTLE_BUCKETS;
    l->next = s->limits->buckets[h];
    s->limits->buckets[h] = l;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, log, 0,
                   "apim: limit %s \"%s\": %L per %L ms", lv, name, amount,
                   l->window_ms);

    return NGX_OK;
}


/*
 * The limit a call site found last, while the snapshot is the same: the
 * tiers of consecutive calls mostly are (a name compare, no hash); also
 * when there is no limit (Unlimited), the usual case.
 */
typedef struct {
    uint64_t                        gen;        /* 0: empty */
    const ngx_http_apim_limit_t    *l;
    size_t                          len;
    u_char                          name[APIM_THROTTLE_POLICY_MAX];
} ngx_http_apim_lmemo_t;


#define APIM_LMEMO_API            0
#define APIM_LMEMO_RESOURCE       1
#define APIM_LMEMO_SUB            2
#define APIM_LMEMO_APP            3

static ngx_http_apim_lmemo_t  ngx_http_apim_lmemo[4];


/* the limit of level and name, remembered in m */
static const ngx_http_apim_limit_t *
ngx_http_apim_limit_lookup(const ngx_http_apim_snap_t *snap, ngx_uint_t level,
    const ngx_str_t *name, ngx_http_apim_lmemo_t *m)
{
    ngx_uint_t              h;
    ngx_http_apim_limit_t  *l;

    h = (ngx_http_apim_hash64(name->data, name->len) + level)
        % APIM_THROTTLE_BUCKETS;

    for (l = snap->limits->buckets[h]; l; l = l->next) {
        if (l->level == level && ngx_strlen(l->name) == name->len
            && ngx_strncmp(l->name, name->data, name->len) == 0)
        {
            break;
        }
    }

    m->gen = snap->gen;
    m->l = l;
    m->len = name->len;
    ngx_memcpy(m->name, name->data, name->len);

    return l;
}


/* (inline: the memo's hit is the usual case) */
static ngx_inline const ngx_http_apim_limit_t *
ngx_http_apim_limit_find(const ngx_http_apim_snap_t *snap, ngx_uint_t level,
    const ngx_str_t *name, ngx_uint_t site)
{
    ngx_http_apim_lmemo_t  *m;

    /* (a policy's name is shorter than APIM_THROTTLE_POLICY_MAX) */
    if (snap->limits == NULL || name->len == 0
        || name->len >= APIM_THROTTLE_POLICY_MAX)
    {
        return NULL;
    }

    m = &ngx_http_apim_lmemo[site];

    if (m->gen == snap->gen && m->len == name->len
        && ngx_memcmp(m->name, name->data, name->len) == 0)
    {
        return m->l;
    }

    return ngx_http_apim_limit_lookup(snap, level, name, m);
}


/* -- the worker's table ---------------------------------------------------- */

/* the slots of the keys found last (the levels of one call: API or
 * resource, subscription, application, a custom policy) */
#define APIM_TKEY_MEMO            4

static ngx_uint_t  ngx_http_apim_tkey_memo[APIM_TKEY_MEMO];
static ngx_uint_t  ngx_http_apim_tkey_memo_next;


static ngx_inline void
ngx_http_apim_tkey_remember(ngx_uint_t i)
{
    ngx_http_apim_tkey_memo[ngx_http_apim_tkey_memo_next++
                            & (APIM_TKEY_MEMO - 1)] = i;
}


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

    /* a key of the last calls: its slot still holds it (compared, so
     * also after a sweep moved or freed entries) */
    for (i = 0; i < APIM_TKEY_MEMO; i++) {
        e = &ngx_http_apim_tkeys[ngx_http_apim_tkey_memo[i]];

        if (e->klen == len && ngx_memcmp(e->key, key, len) == 0) {
            return e;
        }
    }

    hash = (ngx_uint_t) ngx_http_apim_hash64(key, len);

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
            e->group = -1;
            ngx_memcpy(e->key, key, len);
            ngx_http_apim_tkeys_used++;
            ngx_http_apim_tkey_remember(i);
            return e;
        }

        if (e->hash == hash && e->klen == len
            && ngx_memcmp(e->key, key, len) == 0)
        {
            ngx_http_apim_tkey_remember(i);
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
        e->first = now;
        e->count = 0;
        e->denied = 0;
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
    int64_t                         amount;
    ngx_int_t                       group;
    ngx_uint_t                      over;
    ngx_uint_t                      bandwidth;  /* counted in the log phase */
} ngx_http_apim_tcheck_t;


/*
 * The value of a JWT claim condition's claim: the claims of the backend JWT
 * (http://wso2.org/claims/...) that the access handler has set by now, and
 * "sub". NULL: a claim the gateway does not know here.
 */
static const ngx_str_t *
ngx_http_apim_claim_value(ngx_http_request_t *r, const ngx_str_t *url)
{
    size_t                i, len;
    ngx_http_apim_ctx_t  *ctx;

    static const struct {
        const char  *name;
        size_t       offset;
    } claims[] = {
        { "http://wso2.org/claims/subscriber",
          offsetof(ngx_http_apim_ctx_t, app_owner) },
        { "http://wso2.org/claims/applicationname",
          offsetof(ngx_http_apim_ctx_t, app_name) },
        { "http://wso2.org/claims/applicationid",
          offsetof(ngx_http_apim_ctx_t, app_id) },
        { "http://wso2.org/claims/applicationUUId",
          offsetof(ngx_http_apim_ctx_t, app_id) },
        { "http://wso2.org/claims/applicationtier",
          offsetof(ngx_http_apim_ctx_t, app_tier) },
        { "http://wso2.org/claims/apiname",
          offsetof(ngx_http_apim_ctx_t, api_name) },
        { "http://wso2.org/claims/version",
          offsetof(ngx_http_apim_ctx_t, api_version) },
        { "http://wso2.org/claims/tier",
          offsetof(ngx_http_apim_ctx_t, subscription_tier) },
        { "http://wso2.org/claims/enduser",
          offsetof(ngx_http_apim_ctx_t, user) },
        { "sub", offsetof(ngx_http_apim_ctx_t, user) },
    };

    ctx = ngx_http_get_module_ctx(r, ngx_http_apim_module);
    if (ctx == NULL) {
        return NULL;
    }

    for (i = 0; i < sizeof(claims) / sizeof(claims[0]); i++) {
        len = ngx_strlen(claims[i].name);
        if (url->len == len
            && ngx_strncmp(url->data, claims[i].name, len) == 0)
        {
            return (const ngx_str_t *) ((u_char *) ctx + claims[i].offset);
        }
    }

    return NULL;
}


/* 1: the condition holds for r, 0: not, 2: cannot tell (an unknown claim) */
static ngx_uint_t
ngx_http_apim_cond_match(ngx_http_request_t *r, const ngx_http_apim_cond_t *c)
{
    const ngx_str_t     *cv;
    u_char               addr[16];
    ngx_str_t            v;
    ngx_uint_t           i, m;
    ngx_list_part_t     *part;
    ngx_table_elt_t     *h;
    struct sockaddr_in  *sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6 *sin6;
#endif

    m = 0;

    switch (c->type) {

    case APIM_COND_IP:
        switch (r->connection->sockaddr->sa_family) {

        case AF_INET:
            sin = (struct sockaddr_in *) r->connection->sockaddr;
            ngx_memzero(addr, 10);
            addr[10] = 0xff;
            addr[11] = 0xff;
            ngx_memcpy(addr + 12, &sin->sin_addr, 4);
            break;

#if (NGX_HAVE_INET6)
        case AF_INET6:
            sin6 = (struct sockaddr_in6 *) r->connection->sockaddr;
            ngx_memcpy(addr, &sin6->sin6_addr, 16);
            break;
#endif

        default:
            return c->invert;
        }

        m = ngx_memcmp(addr, c->start, 16) >= 0
            && ngx_memcmp(addr, c->end, 16) <= 0;
        break;

    case APIM_COND_HEADER:
        part = &r->headers_in.headers.part;
        h = part->elts;

        for (i = 0; /* void */ ; i++) {
            if (i >= part->nelts) {
                if (part->next == NULL) {
                    break;
                }
                part = part->next;
                h = part->elts;
                i = 0;
            }

            if (h[i].key.len == c->name.len
                && ngx_strncasecmp(h[i].key.data, c->name.data, c->name.len)
                   == 0
                && h[i].value.len == c->value.len
                && ngx_strncmp(h[i].value.data, c->value.data, c->value.len)
                   == 0)
            {
                m = 1;
                break;
            }
        }
        break;

    case APIM_COND_QUERY:
        m = ngx_http_arg(r, c->name.data, c->name.len, &v) == NGX_OK
            && v.len == c->value.len
            && ngx_strncmp(v.data, c->value.data, v.len) == 0;
        break;

    case APIM_COND_JWT:
        cv = ngx_http_apim_claim_value(r, &c->name);
        if (cv == NULL) {
            return 2;
        }
        m = cv->len == c->value.len
            && ngx_strncmp(cv->data, c->value.data, cv->len) == 0;
        break;

    default:
        return 2;
    }

    return m ^ c->invert;
}


/* the first conditional group of l whose conditions all hold, or -1 */
static ngx_int_t
ngx_http_apim_group_match(ngx_http_request_t *r,
    const ngx_http_apim_limit_t *l)
{
    size_t                        i, j;
    const ngx_http_apim_group_t  *g;

    for (i = 0; i < l->ngroups; i++) {
        g = &l->groups[i];

        if (g->amount == 0) {
            continue;
        }

        for (j = 0; j < g->nconds; j++) {
            if (ngx_http_apim_cond_match(r, &g->conds[j]) != 1) {
                break;
            }
        }

        if (j == g->nconds) {
            return (ngx_int_t) i;
        }
    }

    return -1;
}


static int64_t
ngx_http_apim_cap(const ngx_http_apim_tkey_t *e, int64_t limit)
{
    int64_t  n;

    n = ngx_http_apim_parties > 0 ? ngx_http_apim_parties : 1;

    /*
     * Local limits apply to the keys first used in their window without
     * a Traffic Manager. A key in use when the last one went away keeps
     * its cap for the rest of that window: the grants and implicit
     * allowances of all parties never add up to more than the limit,
     * whereas a grant above limit / N on one gateway plus limit / N on
     * another would.
     */
    if (ngx_http_apim_fallback && e->first >= ngx_http_apim_fallback_since) {
        return limit / n;
    }

    if (e->granted) {
        return e->allowance;
    }

    return limit / (2 * n);
}


/*
 * One key: *c set; 1: over its cap (or throttled), 0: within. An advanced
 * policy's conditional group that holds for r applies instead of the
 * default limit, on the key "<key>_condition_<index>" (len: room for it in
 * key).
 */
static ngx_uint_t
ngx_http_apim_tkey_check(ngx_http_request_t *r, ngx_http_apim_tcheck_t *c,
    u_char *key, size_t len, const ngx_http_apim_limit_t *l,
    const ngx_http_apim_fault_t *fault, int64_t now,
    ngx_http_apim_refusal_t *ref)
{
    int64_t                retry, amount, window_ms;
    ngx_int_t              group;
    ngx_uint_t             bandwidth;
    ngx_http_apim_tkey_t  *e;

    c->e = NULL;
    c->over = 0;

    group = l->ngroups ? ngx_http_apim_group_match(r, l) : -1;

    if (group >= 0) {
        if (len + sizeof("_condition_") - 1 + NGX_INT_T_LEN
            > APIM_THROTTLE_KEY_MAX)
        {
            return 0;
        }
        len = ngx_sprintf(key + len, "_condition_%i", group) - key;
        amount = l->groups[group].amount;
        window_ms = l->groups[group].window_ms;
        bandwidth = l->groups[group].bandwidth;

    } else {
        amount = l->amount;
        window_ms = l->window_ms;
        bandwidth = l->bandwidth;
    }

    if (amount == 0) {
        return 0;       /* no group holds, and no default limit */
    }

    e = ngx_http_apim_tkey_find(key, len, 1);
    if (e == NULL) {
        return 0;       /* table full or key too long: counted as dropped */
    }

    ngx_http_apim_tkey_window(e, window_ms, now);

    c->e = e;
    c->l = l;
    c->amount = amount;
    c->group = group;
    c->bandwidth = bandwidth;

    if (e->until > now) {
        retry = e->until - now;

    } else if (e->count >= ngx_http_apim_cap(e, amount)) {
        retry = e->window_start + e->window_ms - now;

        /* the Traffic Manager learns the demand from the refusals too
         * (even of a key that admitted nothing yet) */
        e->denied += bandwidth ? ngx_max(e->last_bytes, 1) : 1;
        e->dirty = 1;

        if (e->policy[0] == '\0') {
            e->level = (uint8_t) l->level;
            e->limit = amount;
            e->group = (int16_t) group;
            ngx_cpystrn((u_char *) e->policy, (u_char *) l->name,
                        APIM_THROTTLE_POLICY_MAX);
        }

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


/*
 * The custom policies' variables for r: userId is the user with the
 * tenant domain (alice@carbon.super), as the reference's; apiContext the
 * API's context without the version; resourceKey the resource's throttle
 * key "/ctx/ver/template:VERB"; clientIp the client's address (the
 * connection's, or the X-Forwarded-For one behind a trusted proxy: the
 * realip module replaced it). buf holds what is built (user, resource key).
 */
static void
ngx_http_apim_custom_vars(ngx_http_request_t *r, ngx_http_apim_ctx_t *ctx,
    ngx_str_t *v, u_char *buf, size_t size)
{
    u_char  *p, *last, *sp;

    p = buf;
    last = buf + size;

    ngx_memzero(v, APIM_VAR_N * sizeof(ngx_str_t));

    v[APIM_VAR_USER] = ctx->user;
    if (ctx->user.len
        && ngx_strlchr(ctx->user.data, ctx->user.data + ctx->user.len, '@')
           == NULL
        && (size_t) (last - p) > ctx->user.len + sizeof(APIM_TENANT))
    {
        v[APIM_VAR_USER].data = p;
        p = ngx_cpymem(p, ctx->user.data, ctx->user.len);
        *p++ = '@';
        p = ngx_cpymem(p, APIM_TENANT, sizeof(APIM_TENANT) - 1);
        v[APIM_VAR_USER].len = p - v[APIM_VAR_USER].data;
    }

    v[APIM_VAR_API_CONTEXT] = ctx->api_context;
    v[APIM_VAR_API_VERSION] = ctx->api_version;
    v[APIM_VAR_APP_ID] = ctx->app_id;
    ngx_str_set(&v[APIM_VAR_APP_TENANT], APIM_TENANT);
    ngx_str_set(&v[APIM_VAR_API_TENANT], APIM_TENANT);
    v[APIM_VAR_CLIENT_IP] = r->connection->addr_text;
    v[APIM_VAR_API_NAME] = ctx->api_name;

    sp = ngx_strlchr(ctx->resource.data, ctx->resource.data + ctx->resource.len,
                     ' ');
    if (sp != NULL
        && (size_t) (last - p) > ctx->api_context.len + ctx->api_version.len
                                 + ctx->resource.len + 2)
    {
        v[APIM_VAR_RESOURCE_KEY].data = p;
        p = ngx_cpymem(p, ctx->api_context.data, ctx->api_context.len);
        *p++ = '/';
        p = ngx_cpymem(p, ctx->api_version.data, ctx->api_version.len);
        p = ngx_cpymem(p, sp + 1,
                       ctx->resource.data + ctx->resource.len - sp - 1);
        *p++ = ':';
        p = ngx_cpymem(p, ctx->resource.data, sp - ctx->resource.data);
        v[APIM_VAR_RESOURCE_KEY].len = p - v[APIM_VAR_RESOURCE_KEY].data;
    }
}


/* the throttle key of custom policy c for r: "custom:<policy>:<expanded
 * key template>" (the prefix keeps it apart from the other levels' keys
 * and other policies'); 0: c does not apply (not eligible, too long) */
static size_t
ngx_http_apim_custom_key(ngx_http_apim_ctx_t *ctx,
    const ngx_http_apim_custom_t *c, const ngx_str_t *v, u_char *key)
{
    size_t            i, len;
    u_char           *p;
    const ngx_str_t  *x, *w;

    for (i = 0; i < c->nconds; i++) {
        x = &c->conds[i].value;
        w = &v[c->conds[i].var];

        if (w->len == x->len && ngx_strncmp(w->data, x->data, x->len) == 0) {
            continue;
        }

        /* a user matches with or without the tenant domain */
        if (c->conds[i].var == APIM_VAR_USER && ctx->user.len == x->len
            && ngx_strncmp(ctx->user.data, x->data, x->len) == 0)
        {
            continue;
        }

        return 0;
    }

    len = sizeof("custom:") - 1 + ngx_strlen(c->limit.name) + 1;
    for (i = 0; i < c->nsegs; i++) {
        len += (c->segs[i].var >= 0 ? v[c->segs[i].var].len
                                    : c->segs[i].text.len) + 1;
    }

    if (len > APIM_THROTTLE_KEY_MAX) {
        return 0;
    }

    p = ngx_sprintf(key, "custom:%s:", c->limit.name);

    for (i = 0; i < c->nsegs; i++) {
        if (i > 0) {
            *p++ = ':';
        }

        w = c->segs[i].var >= 0 ? &v[c->segs[i].var] : &c->segs[i].text;
        p = ngx_cpymem(p, w->data, w->len);
    }

    return p - key;
}


/* an admitted request's bandwidth key, for the log phase */
static ngx_int_t
ngx_http_apim_bytes_note(ngx_http_request_t *r, ngx_http_apim_ctx_t *ctx,
    const ngx_http_apim_tkey_t *e)
{
    ngx_http_apim_tbytes_t  *b;

    b = ctx->throttle_bytes;

    if (b == NULL) {
        b = ngx_palloc(r->pool, sizeof(ngx_http_apim_tbytes_t));
        if (b == NULL) {
            return NGX_ERROR;
        }
        b->n = 0;
        ctx->throttle_bytes = b;
    }

    if (b->n == sizeof(b->keys) / sizeof(b->keys[0])) {
        return NGX_OK;
    }

    b->keys[b->n].window_start = e->window_start;
    b->keys[b->n].len = e->klen;
    ngx_memcpy(b->keys[b->n].key, e->key, e->klen);
    b->n++;

    return NGX_OK;
}


void
ngx_http_apim_throttle_log(ngx_http_request_t *r, ngx_http_apim_ctx_t *ctx)
{
    off_t                    in, out;
    ngx_uint_t               i;
    ngx_http_apim_tkey_t    *e;
    ngx_http_apim_tbytes_t  *b;

    b = ctx->throttle_bytes;
    ctx->throttle_bytes = NULL;

    /* the bodies: the request's by its Content-Length, the response's as
     * sent (as $body_bytes_sent) */
    in = r->headers_in.content_length_n > 0 ? r->headers_in.content_length_n
                                             : 0;
    out = r->connection->sent - (off_t) r->header_size;
    if (out < 0) {
        out = 0;
    }

    for (i = 0; i < b->n; i++) {
        e = ngx_http_apim_tkey_find(b->keys[i].key, b->keys[i].len, 0);

        /* (a key whose window ended meanwhile starts the next at zero) */
        if (e != NULL && e->window_start == b->keys[i].window_start) {
            e->count += in + out;
            e->last_bytes = in + out;
            e->dirty = 1;
        }
    }
}


ngx_int_t
ngx_http_apim_throttle_check(ngx_http_request_t *r, ngx_http_apim_ctx_t *ctx,
    const ngx_http_apim_snap_t *snap, const ngx_http_apim_fault_t **fault)
{
    u_char                       key[APIM_THROTTLE_KEY_MAX + 1], *p, *sp;
    u_char                       vbuf[APIM_THROTTLE_KEY_MAX * 2];
    size_t                       len;
    int64_t                      now, secs;
    ngx_str_t                    vars[APIM_VAR_N];
    ngx_uint_t                   i, n;
    ngx_table_elt_t             *h;
    const ngx_http_apim_limit_t *l;
    ngx_http_apim_custom_t      *c;
    ngx_http_apim_tcheck_t       checks[3 + APIM_THROTTLE_CUSTOM_MAX];
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
    l = ngx_http_apim_limit_find(snap, APIM_LEVEL_ADVANCED, &ctx->api_tier,
                                 APIM_LMEMO_API);

    if (l != NULL) {
        len = ctx->api_context.len + 1 + ctx->api_version.len;
        if (len <= APIM_THROTTLE_KEY_MAX) {
            p = ngx_cpymem(key, ctx->api_context.data, ctx->api_context.len);
            *p++ = ':';
            ngx_memcpy(p, ctx->api_version.data, ctx->api_version.len);
            ngx_http_apim_tkey_check(r, &checks[n++], key, len, l,
                                     &ngx_http_apim_throttled_api, now, &ref);
        }

    } else if (ctx->api_tier.len == 0) {
        l = ngx_http_apim_limit_find(snap, APIM_LEVEL_ADVANCED,
                                     &ctx->resource_tier, APIM_LMEMO_RESOURCE);
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
                ngx_http_apim_tkey_check(r, &checks[n++], key, len, l,
                                         &ngx_http_apim_throttled_resource,
                                         now, &ref);
            }
        }
    }

    /* subscription "appId:/ctx:ver" */
    l = ngx_http_apim_limit_find(snap, APIM_LEVEL_SUBSCRIPTION,
                                 &ctx->subscription_tier, APIM_LMEMO_SUB);
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
            if (ngx_http_apim_tkey_check(r, &checks[n], key, len, l,
                                         &ngx_http_apim_throttled_sub, now,
                                         &soft))
            {
                ngx_str_set(&ctx->throttled_out, "true");
            }

        } else {
            ngx_http_apim_tkey_check(r, &checks[n], key, len, l,
                                     &ngx_http_apim_throttled_sub, now, &ref);
        }

        n++;
    }

    /* application "appId:user" */
    l = ngx_http_apim_limit_find(snap, APIM_LEVEL_APPLICATION,
                                 &ctx->app_tier, APIM_LMEMO_APP);
    len = ctx->app_id.len + 1 + ctx->user.len;

    if (l != NULL && ctx->app_id.len && len <= APIM_THROTTLE_KEY_MAX) {
        p = ngx_cpymem(key, ctx->app_id.data, ctx->app_id.len);
        *p++ = ':';
        ngx_memcpy(p, ctx->user.data, ctx->user.len);
        ngx_http_apim_tkey_check(r, &checks[n++], key, len, l,
                                 &ngx_http_apim_throttled_app, now, &ref);
    }

    /* custom policies: every one applies to every request it finds
     * eligible, under its key template */
    if (snap->limits->customs != NULL) {
        ngx_http_apim_custom_vars(r, ctx, vars, vbuf, sizeof(vbuf));

        for (c = snap->limits->customs;
             c != NULL && n < sizeof(checks) / sizeof(checks[0]);
             c = c->next)
        {
            len = ngx_http_apim_custom_key(ctx, c, vars, key);
            if (len) {
                ngx_http_apim_tkey_check(r, &checks[n++], key, len, &c->limit,
                                         &ngx_http_apim_throttled_custom, now,
                                         &ref);
            }
        }
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

        if (checks[i].bandwidth) {
            /* bytes: counted when they are known, in the log phase */
            if (ngx_http_apim_bytes_note(r, ctx, checks[i].e) != NGX_OK) {
                return NGX_ERROR;
            }

        } else {
            checks[i].e->count++;
        }

        checks[i].e->dirty = 1;
        checks[i].e->level = (uint8_t) checks[i].l->level;
        checks[i].e->limit = checks[i].amount;
        checks[i].e->group = (int16_t) checks[i].group;

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
            e->first = now;
            e->count = 0;
            e->denied = 0;
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
        ngx_http_apim_metrics_gauge(APIM_GAUGE_FALLBACK, fallback);
        ngx_http_apim_metrics_add(APIM_METRIC_FALLBACKS, fallback);

        if (fallback) {
            ngx_http_apim_fallback_since = now;
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
        if (o == NULL) {
            break;
        }

        if (e->group >= 0) {
            json_object_set_new(o, "group", json_integer(e->group));
        }

        if (e->denied > 0) {
            json_object_set_new(o, "denied",
                                json_integer((json_int_t) e->denied));
        }

        if (json_array_append_new(a, o) != 0) {
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
    ngx_http_apim_fallback_since = 0;
    ngx_http_apim_metrics_gauge(APIM_GAUGE_FALLBACK, url == NULL);
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

    st = ngx_http_apim_nats_servers(opts, url);
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
