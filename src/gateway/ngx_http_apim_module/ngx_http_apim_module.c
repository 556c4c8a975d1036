/*
 * ngx_http_apim_module: the apim gateway inside nginx (first request path).
 *
 * Directives:
 *   apim_gateway on|off;              (location) check requests here
 * Feed mode, the data from the control plane (all http level):
 *   apim_control_plane_url <url>;     e.g. http://127.0.0.1:9443
 *   apim_gateway_credential <secret>; sent as X-APIM-Gateway-Credential
 *   apim_gateway_label <name>;        environment label, default Default
 *   apim_event_hub_url <nats url>;    optional: follow apim.> on NATS
 *   apim_cache_file <path>;           optional: last snapshot, local copy
 *   apim_control_plane_ca_file <pem>; optional: CAs for an https control
 *                                     plane (default: the system's)
 * File mode (tests; used when apim_control_plane_url is not set):
 *   apim_snapshot_file <path>;        the gateway data, JSON, re-read
 *                                     when it changes
 *
 * Variables: $apim_api_id, $apim_api_name, $apim_app_id, $apim_backend,
 * $apim_rest, $apim_key_type. The rendered configuration proxies with
 *   proxy_pass $apim_backend$apim_rest$is_args$args;
 * $apim_backend is the chosen endpoint URL without a trailing slash and
 * $apim_rest the (re-escaped) path after the API's context and version.
 *
 * Data and threads (file mode; feed mode: see "control plane feed"
 * below, same publication and reclamation). Each worker loads the
 * snapshot file in init_process (after fork) into an immutable
 * ngx_http_apim_snap_t and publishes it through an atomic pointer. A
 * per-worker background thread (started in init_process, stopped in
 * exit_process) stats the file every 200 ms and,
 * when its mtime, size or inode changed, builds a new snapshot and swaps
 * the pointer (release store; the request path does an acquire load).
 * The request path uses a snapshot only within one synchronous run of the
 * access handler and copies everything it keeps (variables) into r->pool,
 * so an old snapshot is unreachable a few microseconds after the swap; the
 * thread frees it after a grace period of APIM_GRACE_MS (5 s), which is
 * far longer than any access handler runs. Snapshots are built with
 * malloc (never with nginx pools, which are not thread-safe) and freed as
 * a whole: every allocation of a snapshot is on its own list.
 */

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
#define APIM_MAX_SEGMENTS   32


typedef struct {
    ngx_str_t                   snapshot_file;
    ngx_str_t                   control_plane_url;
    ngx_str_t                   credential;
    ngx_str_t                   label;
    ngx_str_t                   event_hub_url;
    ngx_str_t                   cache_file;
    ngx_str_t                   cp_ca_file;
} ngx_http_apim_main_conf_t;


typedef struct {
    ngx_flag_t                  enable;
} ngx_http_apim_loc_conf_t;


/* one string -> value map, open addressing, built once, read-only after */
typedef struct {
    const char                 *key;
    size_t                      len;
    void                       *value;
} ngx_http_apim_slot_t;

typedef struct {
    ngx_http_apim_slot_t       *slots;
    size_t                      cap;        /* power of two, or 0 */
} ngx_http_apim_map_t;


typedef struct {
    const char                 *target;
    const char                 *verb;
    ngx_uint_t                  auth_none;
    json_t                     *scopes;     /* array of strings or NULL */
    size_t                      literal;    /* literal characters: sort key */
    ngx_uint_t                  wildcard;
} ngx_http_apim_op_t;


typedef struct {
    const char                 *id;
    const char                 *name;
    const char                 *prod_url;
    const char                 *sand_url;
    ngx_uint_t                  blocked;
    ngx_http_apim_op_t         *ops;
    size_t                      nops;
} ngx_http_apim_api_t;


typedef struct {
    const char                 *app_id;
    ngx_uint_t                  sandbox;
} ngx_http_apim_keymap_t;


typedef struct {
    EVP_PKEY                   *pkey;
    const char                 *issuer;     /* NULL: any */
} ngx_http_apim_jwk_t;


typedef struct ngx_http_apim_mem_s  ngx_http_apim_mem_t;

struct ngx_http_apim_mem_s {
    ngx_http_apim_mem_t        *next;
};


typedef struct ngx_http_apim_snap_s  ngx_http_apim_snap_t;

struct ngx_http_apim_snap_s {
    json_t                     *root;
    int64_t                     seq;        /* control plane change seq */
    ngx_http_apim_mem_t        *mem;        /* every malloc of this snapshot */
    ngx_http_apim_map_t         apis;       /* "/ctx/ver" and "/ctx" (default) */
    ngx_http_apim_map_t         apps;       /* id -> json app */
    ngx_http_apim_map_t         keys;       /* consumerKey -> keymap */
    ngx_http_apim_map_t         subs;       /* "appId\napiId" -> status string */
    ngx_http_apim_map_t         revoked;    /* jti -> json */
    ngx_http_apim_map_t         jwks;       /* kid -> jwk */
    ngx_http_apim_jwk_t       **pkeys;      /* for EVP_PKEY_free */
    size_t                      npkeys;
    ngx_http_apim_snap_t       *retired_next;
    ngx_msec_t                  retired_at;
};


typedef struct {
    ngx_str_t                   api_id;
    ngx_str_t                   api_name;
    ngx_str_t                   app_id;
    ngx_str_t                   backend;
    ngx_str_t                   rest;
    ngx_str_t                   key_type;
} ngx_http_apim_ctx_t;


typedef struct {
    const char                 *code;
    ngx_uint_t                  status;
    const char                 *message;
    const char                 *description;
} ngx_http_apim_fault_t;


static ngx_int_t ngx_http_apim_preconf(ngx_conf_t *cf);
static ngx_int_t ngx_http_apim_postconf(ngx_conf_t *cf);
static void *ngx_http_apim_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_apim_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_apim_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_apim_init_process(ngx_cycle_t *cycle);
static void ngx_http_apim_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_apim_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static void ngx_http_apim_snap_free(ngx_http_apim_snap_t *s);


static ngx_command_t  ngx_http_apim_commands[] = {

    { ngx_string("apim_gateway"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_apim_loc_conf_t, enable),
      NULL },

    { ngx_string("apim_snapshot_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_apim_main_conf_t, snapshot_file),
      NULL },

    { ngx_string("apim_control_plane_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_apim_main_conf_t, control_plane_url),
      NULL },

    { ngx_string("apim_gateway_credential"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_apim_main_conf_t, credential),
      NULL },

    { ngx_string("apim_gateway_label"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_apim_main_conf_t, label),
      NULL },

    { ngx_string("apim_event_hub_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_apim_main_conf_t, event_hub_url),
      NULL },

    { ngx_string("apim_cache_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_apim_main_conf_t, cache_file),
      NULL },

    { ngx_string("apim_control_plane_ca_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_apim_main_conf_t, cp_ca_file),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_apim_module_ctx = {
    ngx_http_apim_preconf,                 /* preconfiguration */
    ngx_http_apim_postconf,                /* postconfiguration */

    ngx_http_apim_create_main_conf,        /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_apim_create_loc_conf,         /* create location configuration */
    ngx_http_apim_merge_loc_conf           /* merge location configuration */
};


ngx_module_t  ngx_http_apim_module = {
    NGX_MODULE_V1,
    &ngx_http_apim_module_ctx,             /* module context */
    ngx_http_apim_commands,                /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_apim_init_process,            /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_apim_exit_process,            /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_apim_vars[] = {

    { ngx_string("apim_api_id"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, api_id), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_api_name"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, api_name), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_app_id"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, app_id), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_backend"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, backend), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_rest"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, rest), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_key_type"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, key_type), NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static const ngx_http_apim_fault_t  ngx_http_apim_invalid = {
    "900901", NGX_HTTP_UNAUTHORIZED, "Invalid Credentials",
    "Invalid Credentials. Make sure you have provided the correct security "
    "credentials"
};

static const ngx_http_apim_fault_t  ngx_http_apim_missing = {
    "900902", NGX_HTTP_UNAUTHORIZED, "Missing Credentials",
    "Invalid Credentials. Make sure your API invocation call has a header: "
    "'Authorization : Bearer ACCESS_TOKEN'"
};

static const ngx_http_apim_fault_t  ngx_http_apim_no_resource = {
    "900906", NGX_HTTP_FORBIDDEN,
    "No matching resource found for given API Request",
    "No matching resource found in the API for the given request"
};

static const ngx_http_apim_fault_t  ngx_http_apim_sub_blocked = {
    "900907", NGX_HTTP_UNAUTHORIZED,
    "The requested API is temporarily blocked",
    "The subscription of the application to this API is blocked"
};

static const ngx_http_apim_fault_t  ngx_http_apim_forbidden = {
    "900908", NGX_HTTP_FORBIDDEN, "Resource forbidden",
    "User is NOT authorized to access the Resource. API Subscription "
    "validation failed."
};

static const ngx_http_apim_fault_t  ngx_http_apim_sub_inactive = {
    "900909", NGX_HTTP_UNAUTHORIZED,
    "The subscription to the API is inactive",
    "The subscription of the application to this API is not active"
};

static const ngx_http_apim_fault_t  ngx_http_apim_scope = {
    "900910", NGX_HTTP_FORBIDDEN,
    "The access token does not allow you to access the requested resource",
    "User is NOT authorized to access the Resource. Scope validation failed."
};

static const ngx_http_apim_fault_t  ngx_http_apim_api_blocked = {
    "700700", NGX_HTTP_SERVICE_UNAVAILABLE, "API blocked",
    "This API has been blocked temporarily. Please try again later or "
    "contact the system administrators."
};


/* per worker state; the snapshot pointer is the only thing both threads use */
static ngx_http_apim_snap_t   *ngx_http_apim_current;
static ngx_http_apim_snap_t   *ngx_http_apim_retired;   /* thread only */
static pthread_t               ngx_http_apim_thread;
static ngx_uint_t              ngx_http_apim_thread_running;
static pthread_mutex_t         ngx_http_apim_stop_lock =
                                   PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t          ngx_http_apim_stop_cond =
                                   PTHREAD_COND_INITIALIZER;
static ngx_uint_t              ngx_http_apim_stopping;
static char                   *ngx_http_apim_path;      /* malloc'd */
static struct stat             ngx_http_apim_seen;


/* -- memory and maps (background thread side) -------------------------- */

static void *
ngx_http_apim_alloc(ngx_http_apim_snap_t *s, size_t size)
{
    ngx_http_apim_mem_t  *m;

    /* 16 bytes of header keep the block aligned for any type */
    m = calloc(1, 16 + size);
    if (m == NULL) {
        return NULL;
    }

    m->next = s->mem;
    s->mem = m;

    return (u_char *) m + 16;
}


static char *
ngx_http_apim_strcat3(ngx_http_apim_snap_t *s, const char *a, const char *b,
    const char *c)
{
    size_t   la, lb, lc;
    char    *p;

    la = strlen(a);
    lb = strlen(b);
    lc = strlen(c);

    p = ngx_http_apim_alloc(s, la + lb + lc + 1);
    if (p == NULL) {
        return NULL;
    }

    memcpy(p, a, la);
    memcpy(p + la, b, lb);
    memcpy(p + la + lb, c, lc);
    p[la + lb + lc] = '\0';

    return p;
}


static uint64_t
ngx_http_apim_hash(const char *k, size_t len)
{
    uint64_t  h;
    size_t    i;

    h = 1469598103934665603ULL;

    for (i = 0; i < len; i++) {
        h ^= (u_char) k[i];
        h *= 1099511628211ULL;
    }

    return h;
}


static ngx_int_t
ngx_http_apim_map_init(ngx_http_apim_snap_t *s, ngx_http_apim_map_t *m,
    size_t n)
{
    size_t  cap;

    cap = 8;
    while (cap < n * 2 + 2) {
        cap <<= 1;
    }

    m->slots = ngx_http_apim_alloc(s, cap * sizeof(ngx_http_apim_slot_t));
    if (m->slots == NULL) {
        return NGX_ERROR;
    }

    m->cap = cap;

    return NGX_OK;
}


/* first insert of a key wins */
static void
ngx_http_apim_map_put(ngx_http_apim_map_t *m, const char *key, void *value)
{
    size_t   len, i;

    len = strlen(key);
    i = ngx_http_apim_hash(key, len) & (m->cap - 1);

    while (m->slots[i].key) {
        if (m->slots[i].len == len && memcmp(m->slots[i].key, key, len) == 0) {
            return;
        }
        i = (i + 1) & (m->cap - 1);
    }

    m->slots[i].key = key;
    m->slots[i].len = len;
    m->slots[i].value = value;
}


static void *
ngx_http_apim_map_get(const ngx_http_apim_map_t *m, const u_char *key,
    size_t len)
{
    size_t  i;

    if (m->cap == 0) {
        return NULL;
    }

    i = ngx_http_apim_hash((const char *) key, len) & (m->cap - 1);

    while (m->slots[i].key) {
        if (m->slots[i].len == len && memcmp(m->slots[i].key, key, len) == 0) {
            return m->slots[i].value;
        }
        i = (i + 1) & (m->cap - 1);
    }

    return NULL;
}


/* -- snapshot loading ---------------------------------------------------- */

static const char *
ngx_http_apim_jstr(json_t *o, const char *name)
{
    json_t  *v;

    v = json_object_get(o, name);

    return json_is_string(v) ? json_string_value(v) : NULL;
}


static size_t
ngx_http_apim_jlen(json_t *o, const char *name)
{
    json_t  *v;

    v = json_object_get(o, name);

    return json_is_array(v) ? json_array_size(v) : 0;
}


static int
ngx_http_apim_op_cmp(const void *a, const void *b)
{
    const ngx_http_apim_op_t  *x = a, *y = b;

    if (x->wildcard != y->wildcard) {
        return x->wildcard ? 1 : -1;
    }

    if (x->literal != y->literal) {
        return x->literal > y->literal ? -1 : 1;
    }

    return strcmp(x->target, y->target);
}


static const char *
ngx_http_apim_endpoint_url(json_t *ec, const char *which)
{
    json_t  *e;

    e = json_object_get(ec, which);

    if (json_is_array(e)) {
        e = json_array_get(e, 0);
    }

    return ngx_http_apim_jstr(e, "url");
}


static ngx_int_t
ngx_http_apim_load_api(ngx_http_apim_snap_t *s, json_t *ja)
{
    const char           *context, *version, *status, *p, *vctx;
    size_t                i, n;
    json_t               *jo, *ec;
    ngx_http_apim_op_t   *op;
    ngx_http_apim_api_t  *api;

    context = ngx_http_apim_jstr(ja, "context");
    version = ngx_http_apim_jstr(ja, "version");

    if (context == NULL || version == NULL || context[0] != '/') {
        return NGX_OK;
    }

    api = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_api_t));
    if (api == NULL) {
        return NGX_ERROR;
    }

    api->id = ngx_http_apim_jstr(ja, "id");
    api->name = ngx_http_apim_jstr(ja, "name");
    if (api->id == NULL) {
        api->id = "";
    }
    if (api->name == NULL) {
        api->name = "";
    }

    status = ngx_http_apim_jstr(ja, "lifeCycleStatus");
    api->blocked = status != NULL && strcasecmp(status, "BLOCKED") == 0;

    ec = json_object_get(ja, "endpointConfig");
    if (json_is_string(ec)) {
        /* the reference stores endpointConfig as a JSON string too */
        ec = json_loads(json_string_value(ec), 0, NULL);
        if (ec != NULL) {
            json_object_set_new(ja, "endpointConfig", ec);
        }
    }

    api->prod_url = ngx_http_apim_endpoint_url(ec, "production_endpoints");
    api->sand_url = ngx_http_apim_endpoint_url(ec, "sandbox_endpoints");

    n = ngx_http_apim_jlen(ja, "operations");
    api->ops = ngx_http_apim_alloc(s, (n + 1) * sizeof(ngx_http_apim_op_t));
    if (api->ops == NULL) {
        return NGX_ERROR;
    }

    json_array_foreach(json_object_get(ja, "operations"), i, jo) {
        op = &api->ops[api->nops];
        op->target = ngx_http_apim_jstr(jo, "target");
        op->verb = ngx_http_apim_jstr(jo, "verb");

        if (op->target == NULL || op->verb == NULL || op->target[0] != '/') {
            continue;
        }

        p = ngx_http_apim_jstr(jo, "authType");
        op->auth_none = p != NULL && (strcasecmp(p, "None") == 0
                                      || strcasecmp(p, "NONE") == 0);
        op->scopes = json_object_get(jo, "scopes");

        for (p = op->target; *p; p++) {
            if (*p == '{') {
                while (*p && *p != '}') {
                    p++;
                }
                if (*p == '\0') {
                    break;
                }
                continue;
            }
            if (*p == '*') {
                op->wildcard = 1;
                continue;
            }
            op->literal++;
        }

        api->nops++;
    }

    qsort(api->ops, api->nops, sizeof(ngx_http_apim_op_t),
          ngx_http_apim_op_cmp);

    /* "{version}" inside the context, else /context/version */
    vctx = strstr(context, "{version}");
    if (vctx != NULL) {
        char  *pre;

        pre = ngx_http_apim_alloc(s, vctx - context + 1);
        if (pre == NULL) {
            return NGX_ERROR;
        }
        memcpy(pre, context, vctx - context);
        p = ngx_http_apim_strcat3(s, pre, version, vctx + 9);

    } else {
        p = ngx_http_apim_strcat3(s, context, "/", version);
    }

    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_http_apim_map_put(&s->apis, p, api);

    if (json_is_true(json_object_get(ja, "isDefaultVersion"))) {
        if (vctx != NULL) {
            /* drop "/{version}" from the context */
            p = ngx_http_apim_strcat3(s, "", context, "");
            if (p == NULL) {
                return NGX_ERROR;
            }
            n = vctx - context;
            if (n > 0 && p[n - 1] == '/') {
                n--;
            }
            memmove((char *) p + n, vctx + 9, strlen(vctx + 9) + 1);
            ngx_http_apim_map_put(&s->apis, p, api);

        } else {
            ngx_http_apim_map_put(&s->apis, context, api);
        }
    }

    return NGX_OK;
}


static BIGNUM *
ngx_http_apim_b64_bn(const char *in)
{
    u_char     buf[1024];
    ngx_str_t  src, dst;

    if (in == NULL) {
        return NULL;
    }

    src.data = (u_char *) in;
    src.len = strlen(in);

    if (ngx_base64_decoded_length(src.len) > sizeof(buf)) {
        return NULL;
    }

    dst.data = buf;

    if (ngx_decode_base64url(&dst, &src) != NGX_OK) {
        return NULL;
    }

    return BN_bin2bn(dst.data, dst.len, NULL);
}


static size_t
ngx_http_apim_b64_raw(const char *in, u_char *out, size_t max)
{
    ngx_str_t  src, dst;

    if (in == NULL) {
        return 0;
    }

    src.data = (u_char *) in;
    src.len = strlen(in);

    if (ngx_base64_decoded_length(src.len) > max) {
        return 0;
    }

    dst.data = out;

    if (ngx_decode_base64url(&dst, &src) != NGX_OK) {
        return 0;
    }

    return dst.len;
}


static EVP_PKEY *
ngx_http_apim_jwk_pkey(json_t *jk)
{
    const char      *kty, *crv;
    u_char           pub[1 + 66 * 2];
    size_t           xl, yl;
    BIGNUM          *n, *e;
    EVP_PKEY        *pkey;
    OSSL_PARAM      *params;
    EVP_PKEY_CTX    *ctx;
    OSSL_PARAM_BLD  *bld;

    kty = ngx_http_apim_jstr(jk, "kty");
    if (kty == NULL) {
        return NULL;
    }

    pkey = NULL;
    params = NULL;
    ctx = NULL;
    n = NULL;
    e = NULL;

    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL) {
        return NULL;
    }

    if (strcmp(kty, "RSA") == 0) {
        n = ngx_http_apim_b64_bn(ngx_http_apim_jstr(jk, "n"));
        e = ngx_http_apim_b64_bn(ngx_http_apim_jstr(jk, "e"));
        if (n == NULL || e == NULL
            || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n)
            || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
        {
            goto out;
        }
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);

    } else if (strcmp(kty, "EC") == 0) {
        crv = ngx_http_apim_jstr(jk, "crv");
        if (crv == NULL || strcmp(crv, "P-256") != 0) {
            goto out;
        }
        pub[0] = 0x04;
        xl = ngx_http_apim_b64_raw(ngx_http_apim_jstr(jk, "x"), pub + 1, 66);
        if (xl != 32) {
            goto out;
        }
        yl = ngx_http_apim_b64_raw(ngx_http_apim_jstr(jk, "y"), pub + 33, 66);
        if (yl != 32) {
            goto out;
        }
        if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                             "prime256v1", 0)
            || !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY,
                                                 pub, 65))
        {
            goto out;
        }
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);

    } else {
        goto out;
    }

    params = OSSL_PARAM_BLD_to_param(bld);

    if (ctx == NULL || params == NULL
        || EVP_PKEY_fromdata_init(ctx) <= 0
        || EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
    {
        pkey = NULL;
    }

out:

    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    BN_free(n);
    BN_free(e);

    return pkey;
}


/* builds a snapshot from a parsed document; takes the reference to root */
static ngx_http_apim_snap_t *
ngx_http_apim_snap_build(json_t *root, const char *path, ngx_log_t *log)
{
    size_t                   i, j, n;
    json_t                  *jv, *jk, *km;
    const char              *k, *a, *b, *kid;
    ngx_http_apim_jwk_t     *jwk;
    ngx_http_apim_snap_t    *s;
    ngx_http_apim_keymap_t  *map;

    s = calloc(1, sizeof(ngx_http_apim_snap_t));
    if (s == NULL) {
        json_decref(root);
        return NULL;
    }

    s->root = root;
    s->seq = json_integer_value(json_object_get(root, "seq"));

    /* APIs: two keys each at most */
    if (ngx_http_apim_map_init(s, &s->apis, 2 * ngx_http_apim_jlen(root, "apis"))
        != NGX_OK)
    {
        goto failed;
    }

    json_array_foreach(json_object_get(root, "apis"), i, jv) {
        if (ngx_http_apim_load_api(s, jv) != NGX_OK) {
            goto failed;
        }
    }

    if (ngx_http_apim_map_init(s, &s->apps,
                               ngx_http_apim_jlen(root, "applications"))
        != NGX_OK)
    {
        goto failed;
    }

    json_array_foreach(json_object_get(root, "applications"), i, jv) {
        k = ngx_http_apim_jstr(jv, "id");
        if (k != NULL) {
            ngx_http_apim_map_put(&s->apps, k, jv);
        }
    }

    if (ngx_http_apim_map_init(s, &s->keys,
                               ngx_http_apim_jlen(root, "keyMappings"))
        != NGX_OK)
    {
        goto failed;
    }

    json_array_foreach(json_object_get(root, "keyMappings"), i, jv) {
        k = ngx_http_apim_jstr(jv, "consumerKey");
        a = ngx_http_apim_jstr(jv, "applicationId");
        b = ngx_http_apim_jstr(jv, "keyType");
        if (k == NULL || a == NULL) {
            continue;
        }
        map = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_keymap_t));
        if (map == NULL) {
            goto failed;
        }
        map->app_id = a;
        map->sandbox = b != NULL && strcasecmp(b, "SANDBOX") == 0;
        ngx_http_apim_map_put(&s->keys, k, map);
    }

    if (ngx_http_apim_map_init(s, &s->subs,
                               ngx_http_apim_jlen(root, "subscriptions"))
        != NGX_OK)
    {
        goto failed;
    }

    json_array_foreach(json_object_get(root, "subscriptions"), i, jv) {
        a = ngx_http_apim_jstr(jv, "applicationId");
        b = ngx_http_apim_jstr(jv, "apiId");
        if (a == NULL || b == NULL) {
            continue;
        }
        k = ngx_http_apim_strcat3(s, a, "\n", b);
        if (k == NULL) {
            goto failed;
        }
        ngx_http_apim_map_put(&s->subs, k, jv);
    }

    if (ngx_http_apim_map_init(s, &s->revoked,
                               ngx_http_apim_jlen(root, "revokedJwts"))
        != NGX_OK)
    {
        goto failed;
    }

    json_array_foreach(json_object_get(root, "revokedJwts"), i, jv) {
        k = ngx_http_apim_jstr(jv, "jti");
        if (k != NULL) {
            ngx_http_apim_map_put(&s->revoked, k, jv);
        }
    }

    n = 0;
    json_array_foreach(json_object_get(root, "keyManagers"), i, km) {
        n += json_array_size(json_object_get(json_object_get(km, "jwks"),
                                             "keys"));
    }

    if (ngx_http_apim_map_init(s, &s->jwks, n) != NGX_OK) {
        goto failed;
    }

    s->pkeys = ngx_http_apim_alloc(s, (n + 1) * sizeof(ngx_http_apim_jwk_t *));
    if (s->pkeys == NULL) {
        goto failed;
    }

    json_array_foreach(json_object_get(root, "keyManagers"), i, km) {
        json_array_foreach(json_object_get(json_object_get(km, "jwks"),
                                           "keys"), j, jk)
        {
            kid = ngx_http_apim_jstr(jk, "kid");
            if (kid == NULL || s->npkeys >= n) {
                continue;
            }
            jwk = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_jwk_t));
            if (jwk == NULL) {
                goto failed;
            }
            jwk->pkey = ngx_http_apim_jwk_pkey(jk);
            if (jwk->pkey == NULL) {
                ngx_log_error(NGX_LOG_WARN, log, 0,
                              "apim: unusable JWK \"%s\" ignored", kid);
                continue;
            }
            jwk->issuer = ngx_http_apim_jstr(km, "issuer");
            s->pkeys[s->npkeys++] = jwk;
            ngx_http_apim_map_put(&s->jwks, kid, jwk);
        }
    }

    return s;

failed:

    ngx_log_error(NGX_LOG_ERR, log, 0, "apim: out of memory loading \"%s\"",
                  path);
    ngx_http_apim_snap_free(s);

    return NULL;
}


static ngx_http_apim_snap_t *
ngx_http_apim_snap_load(const char *path, ngx_log_t *log)
{
    json_t        *root;
    json_error_t   err;

    root = json_load_file(path, 0, &err);
    if (root == NULL || !json_is_object(root)) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "apim: cannot load snapshot \"%s\": %s (line %d)",
                      path, root ? "not an object" : err.text, err.line);
        json_decref(root);
        return NULL;
    }

    return ngx_http_apim_snap_build(root, path, log);
}


static void
ngx_http_apim_snap_free(ngx_http_apim_snap_t *s)
{
    size_t                i;
    ngx_http_apim_mem_t  *m, *next;

    if (s == NULL) {
        return;
    }

    for (i = 0; i < s->npkeys; i++) {
        EVP_PKEY_free(s->pkeys[i]->pkey);
    }

    for (m = s->mem; m; m = next) {
        next = m->next;
        free(m);
    }

    json_decref(s->root);
    free(s);
}


/* -- background thread --------------------------------------------------- */

static ngx_int_t
ngx_http_apim_file_changed(struct stat *now)
{
    if (stat(ngx_http_apim_path, now) != 0) {
        return 0;
    }

    return now->st_mtim.tv_sec != ngx_http_apim_seen.st_mtim.tv_sec
           || now->st_mtim.tv_nsec != ngx_http_apim_seen.st_mtim.tv_nsec
           || now->st_size != ngx_http_apim_seen.st_size
           || now->st_ino != ngx_http_apim_seen.st_ino;
}


static ngx_msec_t
ngx_http_apim_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (ngx_msec_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


static void
ngx_http_apim_reap(ngx_uint_t all)
{
    ngx_msec_t             now;
    ngx_http_apim_snap_t  *s, **pp;

    now = ngx_http_apim_now_ms();
    pp = &ngx_http_apim_retired;

    while (*pp) {
        s = *pp;
        if (all || now - s->retired_at >= APIM_GRACE_MS) {
            *pp = s->retired_next;
            ngx_http_apim_snap_free(s);
            continue;
        }
        pp = &s->retired_next;
    }
}


static void *
ngx_http_apim_thread_main(void *arg)
{
    int                    stop;
    struct stat            now;
    struct timespec        deadline;
    ngx_log_t             *log;
    ngx_http_apim_snap_t  *fresh, *old;

    log = arg;

    for ( ;; ) {
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_nsec += APIM_POLL_MS * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }

        pthread_mutex_lock(&ngx_http_apim_stop_lock);
        if (!ngx_http_apim_stopping) {
            pthread_cond_timedwait(&ngx_http_apim_stop_cond,
                                   &ngx_http_apim_stop_lock, &deadline);
        }
        stop = ngx_http_apim_stopping;
        pthread_mutex_unlock(&ngx_http_apim_stop_lock);

        if (stop) {
            break;
        }

        ngx_http_apim_reap(0);

        if (!ngx_http_apim_file_changed(&now)) {
            continue;
        }

        fresh = ngx_http_apim_snap_load(ngx_http_apim_path, log);

        /* a half-written file: try again on the next change or poll */
        ngx_http_apim_seen = now;

        if (fresh == NULL) {
            continue;
        }

        old = __atomic_exchange_n(&ngx_http_apim_current, fresh,
                                  __ATOMIC_ACQ_REL);

        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "apim: snapshot \"%s\" reloaded", ngx_http_apim_path);

        if (old != NULL) {
            old->retired_at = ngx_http_apim_now_ms();
            old->retired_next = ngx_http_apim_retired;
            ngx_http_apim_retired = old;
        }
    }

    return NULL;
}


/* -- control plane feed (background thread, feed mode) ------------------- */

/*
 * Feed mode (apim_control_plane_url set). The thread loads the cache file,
 * then fetches /internal/data/v1/snapshot?gatewayLabel= with libcurl and
 * swaps it in, writing the body to the cache file (temp + rename, so the
 * workers sharing the file never read half of one). It follows changes two
 * ways: NATS (subject apim.>; libnats calls back on its own thread, which
 * only raises ngx_http_apim_wanted to the highest seq seen and wakes us)
 * and a poll of /internal/data/v1/sequence every APIM_SEQ_POLL_MS, which
 * works with NATS down. Whenever wanted > the current snapshot's seq, the
 * thread refetches the full snapshot; fetches run one at a time on this
 * thread, so a burst of events is coalesced into one or two fetches.
 *
 * Logging: only this thread logs (never the NATS callback), with
 * ngx_log_error on the cycle log, which formats into a stack buffer and
 * writes with write(2) -- what nginx's own thread pools do.
 */

#define APIM_SEQ_POLL_MS    2000
#define APIM_RETRY_MS       1000
#define APIM_MAX_BODY       (512 * 1024 * 1024)


typedef struct {
    char                       *data;
    size_t                      len;
    size_t                      cap;
} ngx_http_apim_buf_t;


static char                   *ngx_http_apim_cp_url;     /* malloc'd */
static char                   *ngx_http_apim_cred;
static char                   *ngx_http_apim_label;
static char                   *ngx_http_apim_hub_url;
static char                   *ngx_http_apim_cache;
static char                   *ngx_http_apim_ca_file;   /* NULL: system CAs */
static int64_t                 ngx_http_apim_wanted;     /* atomic */
static ngx_uint_t              ngx_http_apim_wake;       /* under stop_lock */
static int                     ngx_http_apim_poll_now;   /* atomic */
static ngx_uint_t              ngx_http_apim_cp_down;    /* feed thread */


static char *
ngx_http_apim_cstr(ngx_str_t *v)
{
    char  *p;

    p = malloc(v->len + 1);
    if (p != NULL) {
        ngx_memcpy(p, v->data, v->len);
        p[v->len] = '\0';
    }

    return p;
}


static void
ngx_http_apim_publish(ngx_http_apim_snap_t *fresh)
{
    ngx_http_apim_snap_t  *old;

    old = __atomic_exchange_n(&ngx_http_apim_current, fresh,
                              __ATOMIC_ACQ_REL);

    if (old != NULL) {
        old->retired_at = ngx_http_apim_now_ms();
        old->retired_next = ngx_http_apim_retired;
        ngx_http_apim_retired = old;
    }
}


static int64_t
ngx_http_apim_current_seq(void)
{
    ngx_http_apim_snap_t  *s;

    /* only this thread swaps the pointer: reading it here is safe */
    s = __atomic_load_n(&ngx_http_apim_current, __ATOMIC_ACQUIRE);

    return s != NULL ? s->seq : -1;
}


static void
ngx_http_apim_wakeup(void)
{
    pthread_mutex_lock(&ngx_http_apim_stop_lock);
    ngx_http_apim_wake = 1;
    pthread_cond_signal(&ngx_http_apim_stop_cond);
    pthread_mutex_unlock(&ngx_http_apim_stop_lock);
}


static void
ngx_http_apim_want(int64_t seq)
{
    int64_t  cur;

    cur = __atomic_load_n(&ngx_http_apim_wanted, __ATOMIC_ACQUIRE);

    while (seq > cur) {
        if (__atomic_compare_exchange_n(&ngx_http_apim_wanted, &cur, seq, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        {
            ngx_http_apim_wakeup();
            return;
        }
    }
}


/*
 * libnats thread, on connect and on every reconnect: events published
 * while disconnected are lost, so ask the feed thread to check the
 * sequence at once rather than at its next poll.
 */
static void
ngx_http_apim_on_connect(natsConnection *nc, void *closure)
{
    (void) nc;
    (void) closure;

    __atomic_store_n(&ngx_http_apim_poll_now, 1, __ATOMIC_RELEASE);
    ngx_http_apim_wakeup();
}


/* libnats thread: no nginx calls here */
static void
ngx_http_apim_on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
    void *closure)
{
    json_t        *doc;
    json_error_t   err;

    (void) nc;
    (void) sub;
    (void) closure;

    doc = json_loadb(natsMsg_GetData(msg), natsMsg_GetDataLength(msg), 0,
                     &err);
    if (doc != NULL) {
        if (json_is_integer(json_object_get(doc, "seq"))) {
            ngx_http_apim_want(json_integer_value(json_object_get(doc, "seq")));
        }
        json_decref(doc);
    }

    natsMsg_Destroy(msg);
}


static size_t
ngx_http_apim_curl_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
    size_t                n, cap;
    char                 *p;
    ngx_http_apim_buf_t  *b;

    b = arg;
    n = size * nmemb;

    if (b->len + n + 1 > b->cap) {
        cap = b->cap ? b->cap : 65536;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        if (cap > APIM_MAX_BODY) {
            return 0;
        }
        p = realloc(b->data, cap);
        if (p == NULL) {
            return 0;
        }
        b->data = p;
        b->cap = cap;
    }

    ngx_memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';

    return n;
}


/* aborts a transfer when the worker exits (exit_process joins us) */
static int
ngx_http_apim_curl_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
    curl_off_t ultotal, curl_off_t ulnow)
{
    (void) arg;
    (void) dltotal;
    (void) dlnow;
    (void) ultotal;
    (void) ulnow;

    return __atomic_load_n(&ngx_http_apim_stopping, __ATOMIC_ACQUIRE) != 0;
}


/* GET <control plane><path>; the body in b (caller frees b->data) */
static ngx_int_t
ngx_http_apim_get(CURL *curl, const char *path, ngx_http_apim_buf_t *b,
    ngx_log_t *log)
{
    long                code;
    char               *url, *hdr;
    size_t              n;
    CURLcode            rc;
    struct curl_slist  *hdrs;

    n = strlen(ngx_http_apim_cp_url) + strlen(path) + 1;
    url = malloc(n);
    hdr = malloc(strlen(ngx_http_apim_cred) + 64);
    if (url == NULL || hdr == NULL) {
        free(url);
        free(hdr);
        return NGX_ERROR;
    }

    snprintf(url, n, "%s%s", ngx_http_apim_cp_url, path);
    sprintf(hdr, "X-APIM-Gateway-Credential: %s", ngx_http_apim_cred);
    hdrs = curl_slist_append(NULL, hdr);

    b->len = 0;
    code = 0;

    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, ngx_http_apim_curl_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, b);
    if (ngx_http_apim_ca_file != NULL) {
        curl_easy_setopt(curl, CURLOPT_CAINFO, ngx_http_apim_ca_file);
    }
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION,
                     ngx_http_apim_curl_progress);

    rc = curl_easy_perform(curl);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    }

    curl_slist_free_all(hdrs);
    free(hdr);

    if (rc != CURLE_OK || code != 200) {
        /* once per outage, not once per retry */
        if (!ngx_http_apim_cp_down) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "apim: GET %s: %s (HTTP %l); serving the last "
                          "snapshot, retrying", url,
                          rc != CURLE_OK ? curl_easy_strerror(rc) : "refused",
                          code);
            ngx_http_apim_cp_down = 1;
        }
        free(url);
        return NGX_ERROR;
    }

    if (ngx_http_apim_cp_down) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "apim: control plane \"%s\" answers again",
                      ngx_http_apim_cp_url);
        ngx_http_apim_cp_down = 0;
    }

    free(url);

    return NGX_OK;
}


static void
ngx_http_apim_write_cache(ngx_http_apim_buf_t *b, ngx_log_t *log)
{
    int       fd;
    char     *tmp;
    size_t    n, off;
    ssize_t   w;

    if (ngx_http_apim_cache == NULL) {
        return;
    }

    n = strlen(ngx_http_apim_cache) + 32;
    tmp = malloc(n);
    if (tmp == NULL) {
        return;
    }

    snprintf(tmp, n, "%s.%d.tmp", ngx_http_apim_cache, (int) getpid());

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "apim: cannot write cache \"%s\"", tmp);
        free(tmp);
        return;
    }

    for (off = 0; off < b->len; off += w) {
        w = write(fd, b->data + off, b->len - off);
        if (w <= 0) {
            ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                          "apim: cannot write cache \"%s\"", tmp);
            close(fd);
            unlink(tmp);
            free(tmp);
            return;
        }
    }

    (void) fchmod(fd, 0644);

    if (close(fd) != 0 || rename(tmp, ngx_http_apim_cache) != 0) {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "apim: cannot replace cache \"%s\"",
                      ngx_http_apim_cache);
        unlink(tmp);
    }

    free(tmp);
}


static ngx_int_t
ngx_http_apim_fetch(CURL *curl, ngx_log_t *log)
{
    char                  *path, *esc;
    size_t                 n;
    json_t                *root;
    ngx_int_t              rc;
    json_error_t           err;
    ngx_msec_t             t0, t1, t2;
    ngx_http_apim_buf_t    b;
    ngx_http_apim_snap_t  *fresh;

    esc = curl_easy_escape(curl, ngx_http_apim_label, 0);
    if (esc == NULL) {
        return NGX_ERROR;
    }

    n = strlen(esc) + 64;
    path = malloc(n);
    if (path == NULL) {
        curl_free(esc);
        return NGX_ERROR;
    }

    snprintf(path, n, "/internal/data/v1/snapshot?gatewayLabel=%s", esc);
    curl_free(esc);

    t0 = ngx_http_apim_now_ms();
    ngx_memzero(&b, sizeof(b));
    rc = ngx_http_apim_get(curl, path, &b, log);
    free(path);
    t1 = ngx_http_apim_now_ms();

    if (rc != NGX_OK) {
        free(b.data);
        return NGX_ERROR;
    }

    root = json_loadb(b.data, b.len, 0, &err);
    if (root == NULL || !json_is_object(root)) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "apim: bad snapshot from the control plane: %s",
                      root ? "not an object" : err.text);
        json_decref(root);
        free(b.data);
        return NGX_ERROR;
    }

    fresh = ngx_http_apim_snap_build(root, ngx_http_apim_cp_url, log);
    if (fresh == NULL) {
        free(b.data);
        return NGX_ERROR;
    }

    ngx_http_apim_publish(fresh);
    t2 = ngx_http_apim_now_ms();
    ngx_http_apim_write_cache(&b, log);

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "apim: snapshot seq %L (%uz APIs, %uz bytes) from the "
                  "control plane: fetch %M ms, parse+swap %M ms, cache %M ms",
                  fresh->seq, json_array_size(json_object_get(fresh->root,
                                                              "apis")),
                  b.len, t1 - t0, t2 - t1, ngx_http_apim_now_ms() - t2);
    free(b.data);

    return NGX_OK;
}


static void
ngx_http_apim_poll_seq(CURL *curl, ngx_log_t *log)
{
    json_t               *doc;
    json_error_t          err;
    ngx_http_apim_buf_t   b;

    ngx_memzero(&b, sizeof(b));

    if (ngx_http_apim_get(curl, "/internal/data/v1/sequence", &b, log)
        == NGX_OK)
    {
        doc = json_loadb(b.data, b.len, 0, &err);
        if (doc != NULL && json_is_integer(json_object_get(doc, "seq"))) {
            ngx_http_apim_want(json_integer_value(json_object_get(doc, "seq")));
        }
        json_decref(doc);
    }

    free(b.data);
}


static natsConnection *
ngx_http_apim_nats_connect(natsSubscription **sub, ngx_log_t *log)
{
    natsStatus       st;
    natsOptions     *opts;
    natsConnection  *nc;

    nc = NULL;
    *sub = NULL;

    if (natsOptions_Create(&opts) != NATS_OK) {
        return NULL;
    }

    st = natsOptions_SetURL(opts, ngx_http_apim_hub_url);
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
        /* not there yet: libnats keeps trying in the background */
        st = natsOptions_SetRetryOnFailedConnect(opts, true,
                                                 ngx_http_apim_on_connect,
                                                 NULL);
    }
    if (st == NATS_OK) {
        st = natsOptions_SetReconnectedCB(opts, ngx_http_apim_on_connect,
                                          NULL);
    }
    if (st == NATS_OK) {
        st = natsConnection_Connect(&nc, opts);
        if (st == NATS_NOT_YET_CONNECTED) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "apim: event hub \"%s\" not reachable yet "
                          "(retrying; polling the sequence meanwhile)",
                          ngx_http_apim_hub_url);
            st = NATS_OK;
        }
    }
    if (st == NATS_OK) {
        st = natsConnection_Subscribe(sub, nc, "apim.>",
                                      ngx_http_apim_on_msg, NULL);
    }

    natsOptions_Destroy(opts);

    if (st != NATS_OK) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "apim: event hub \"%s\": %s (retrying; polling the "
                      "sequence meanwhile)", ngx_http_apim_hub_url,
                      natsStatus_GetText(st));
        natsSubscription_Destroy(*sub);
        *sub = NULL;
        natsConnection_Destroy(nc);
        return NULL;
    }

    ngx_log_error(NGX_LOG_NOTICE, log, 0, "apim: following event hub \"%s\"",
                  ngx_http_apim_hub_url);

    return nc;
}


static void *
ngx_http_apim_feed_main(void *arg)
{
    int                    stop, initial;
    CURL                  *curl;
    int64_t                wanted, cur;
    ngx_log_t             *log;
    ngx_msec_t             now, next_poll, next_fetch, next_nats;
    struct timespec        deadline;
    natsConnection        *nc;
    natsSubscription      *sub;
    ngx_http_apim_snap_t  *fresh;

    log = arg;
    nc = NULL;
    sub = NULL;

    if (ngx_http_apim_cache != NULL
        && access(ngx_http_apim_cache, R_OK) == 0)
    {
        fresh = ngx_http_apim_snap_load(ngx_http_apim_cache, log);
        if (fresh != NULL) {
            ngx_http_apim_publish(fresh);
            ngx_log_error(NGX_LOG_NOTICE, log, 0,
                          "apim: serving cached snapshot seq %L from \"%s\"",
                          fresh->seq, ngx_http_apim_cache);
        }
    }

    curl = curl_easy_init();
    if (curl == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0, "apim: curl_easy_init() failed");
        return NULL;
    }

    now = ngx_http_apim_now_ms();
    next_fetch = now;
    initial = 1;                /* a full snapshot first, whatever the cache */
    next_poll = now + APIM_SEQ_POLL_MS;
    next_nats = now;

    for ( ;; ) {
        now = ngx_http_apim_now_ms();

        if (ngx_http_apim_hub_url != NULL && nc == NULL
            && (ngx_msec_int_t) (now - next_nats) >= 0)
        {
            nc = ngx_http_apim_nats_connect(&sub, log);
            next_nats = now + APIM_SEQ_POLL_MS;
        }

        if ((ngx_msec_int_t) (now - next_poll) >= 0
            || __atomic_exchange_n(&ngx_http_apim_poll_now, 0,
                                   __ATOMIC_ACQ_REL))
        {
            ngx_http_apim_poll_seq(curl, log);
            next_poll = ngx_http_apim_now_ms() + APIM_SEQ_POLL_MS;
        }

        wanted = __atomic_load_n(&ngx_http_apim_wanted, __ATOMIC_ACQUIRE);
        cur = ngx_http_apim_current_seq();

        if ((ngx_msec_int_t) (now - next_fetch) >= 0
            && (initial || wanted > cur))
        {
            if (ngx_http_apim_fetch(curl, log) == NGX_OK) {
                initial = 0;

                if (__atomic_load_n(&ngx_http_apim_wanted, __ATOMIC_ACQUIRE)
                    > ngx_http_apim_current_seq())
                {
                    if (ngx_http_apim_current_seq() > cur) {
                        /* more arrived meanwhile: fetch again at once */
                        next_fetch = now;
                        continue;
                    }
                    /* no progress: do not hammer the control plane */
                    next_fetch = now + APIM_POLL_MS;
                }

            } else {
                next_fetch = ngx_http_apim_now_ms() + APIM_RETRY_MS;
            }
        }

        ngx_http_apim_reap(0);

        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_nsec += APIM_POLL_MS * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }

        pthread_mutex_lock(&ngx_http_apim_stop_lock);
        if (!ngx_http_apim_stopping && !ngx_http_apim_wake) {
            pthread_cond_timedwait(&ngx_http_apim_stop_cond,
                                   &ngx_http_apim_stop_lock, &deadline);
        }
        ngx_http_apim_wake = 0;
        stop = ngx_http_apim_stopping;
        pthread_mutex_unlock(&ngx_http_apim_stop_lock);

        if (stop) {
            break;
        }
    }

    if (nc != NULL) {
        natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
        natsConnection_Destroy(nc);
    }

    curl_easy_cleanup(curl);

    return NULL;
}


static ngx_int_t
ngx_http_apim_init_feed(ngx_cycle_t *cycle, ngx_http_apim_main_conf_t *amcf)
{
    int         err;
    ngx_str_t   dflt = ngx_string("Default");

    /* curl_global_init is not thread-safe: here, before any thread */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "apim: curl_global_init() failed");
        return NGX_ERROR;
    }

    while (amcf->control_plane_url.len > 0
           && amcf->control_plane_url.data[amcf->control_plane_url.len - 1]
              == '/')
    {
        amcf->control_plane_url.len--;
    }

    ngx_http_apim_cp_url = ngx_http_apim_cstr(&amcf->control_plane_url);
    ngx_http_apim_cred = ngx_http_apim_cstr(&amcf->credential);
    ngx_http_apim_label = ngx_http_apim_cstr(amcf->label.len ? &amcf->label
                                                             : &dflt);
    if (amcf->event_hub_url.len) {
        ngx_http_apim_hub_url = ngx_http_apim_cstr(&amcf->event_hub_url);
    }
    if (amcf->cache_file.len) {
        ngx_http_apim_cache = ngx_http_apim_cstr(&amcf->cache_file);
    }
    if (amcf->cp_ca_file.len) {
        ngx_http_apim_ca_file = ngx_http_apim_cstr(&amcf->cp_ca_file);
    }

    if (ngx_http_apim_cp_url == NULL || ngx_http_apim_cred == NULL
        || ngx_http_apim_label == NULL
        || (amcf->event_hub_url.len && ngx_http_apim_hub_url == NULL)
        || (amcf->cache_file.len && ngx_http_apim_cache == NULL)
        || (amcf->cp_ca_file.len && ngx_http_apim_ca_file == NULL))
    {
        return NGX_ERROR;
    }

    ngx_http_apim_wanted = -1;
    ngx_http_apim_stopping = 0;

    err = pthread_create(&ngx_http_apim_thread, NULL,
                         ngx_http_apim_feed_main, cycle->log);
    if (err != 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, err,
                      "apim: pthread_create() failed");
        return NGX_ERROR;
    }

    ngx_http_apim_thread_running = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_apim_init_process(ngx_cycle_t *cycle)
{
    int                         err;
    ngx_http_apim_main_conf_t  *amcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    amcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_apim_module);
    if (amcf == NULL) {
        return NGX_OK;
    }

    if (amcf->control_plane_url.len != 0) {
        return ngx_http_apim_init_feed(cycle, amcf);
    }

    if (amcf->snapshot_file.len == 0) {
        return NGX_OK;
    }

    ngx_http_apim_path = malloc(amcf->snapshot_file.len + 1);
    if (ngx_http_apim_path == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ngx_http_apim_path, amcf->snapshot_file.data,
               amcf->snapshot_file.len);
    ngx_http_apim_path[amcf->snapshot_file.len] = '\0';

    if (stat(ngx_http_apim_path, &ngx_http_apim_seen) != 0) {
        ngx_memzero(&ngx_http_apim_seen, sizeof(struct stat));
    }

    __atomic_store_n(&ngx_http_apim_current,
                     ngx_http_apim_snap_load(ngx_http_apim_path, cycle->log),
                     __ATOMIC_RELEASE);

    ngx_http_apim_stopping = 0;

    err = pthread_create(&ngx_http_apim_thread, NULL,
                         ngx_http_apim_thread_main, cycle->log);
    if (err != 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, err,
                      "apim: pthread_create() failed");
        return NGX_ERROR;
    }

    ngx_http_apim_thread_running = 1;

    return NGX_OK;
}


static void
ngx_http_apim_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_http_apim_thread_running) {
        pthread_mutex_lock(&ngx_http_apim_stop_lock);
        __atomic_store_n(&ngx_http_apim_stopping, 1, __ATOMIC_RELEASE);
        pthread_cond_signal(&ngx_http_apim_stop_cond);
        pthread_mutex_unlock(&ngx_http_apim_stop_lock);

        pthread_join(ngx_http_apim_thread, NULL);
        ngx_http_apim_thread_running = 0;
    }

    /* no request runs any more: everything can go */
    ngx_http_apim_reap(1);
    ngx_http_apim_snap_free(ngx_http_apim_current);
    ngx_http_apim_current = NULL;

    free(ngx_http_apim_path);
    ngx_http_apim_path = NULL;

    if (ngx_http_apim_cp_url != NULL) {
        free(ngx_http_apim_cp_url);
        free(ngx_http_apim_cred);
        free(ngx_http_apim_label);
        free(ngx_http_apim_hub_url);
        free(ngx_http_apim_cache);
        free(ngx_http_apim_ca_file);
        ngx_http_apim_ca_file = NULL;
        ngx_http_apim_cp_url = NULL;
        ngx_http_apim_cred = NULL;
        ngx_http_apim_label = NULL;
        ngx_http_apim_hub_url = NULL;
        ngx_http_apim_cache = NULL;
        curl_global_cleanup();
    }
}


/* -- request path -------------------------------------------------------- */

static ngx_int_t
ngx_http_apim_fault(ngx_http_request_t *r, const ngx_http_apim_fault_t *f)
{
    size_t        len;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    len = sizeof("{\"code\":\"\",\"message\":\"\",\"description\":\"\"}") - 1
          + ngx_strlen(f->code) + ngx_strlen(f->message)
          + ngx_strlen(f->description);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the texts are constants without characters that need escaping */
    b->last = ngx_sprintf(b->last,
                          "{\"code\":\"%s\",\"message\":\"%s\","
                          "\"description\":\"%s\"}",
                          f->code, f->message, f->description);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = f->status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (f->status == NGX_HTTP_UNAUTHORIZED) {
        ngx_table_elt_t  *h;

        h = ngx_list_push(&r->headers_out.headers);
        if (h != NULL) {
            h->hash = 1;
            ngx_str_set(&h->key, "WWW-Authenticate");
            ngx_str_set(&h->value, "Bearer realm=\"apim\"");
            r->headers_out.www_authenticate = h;
        }
    }

    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);

    if (rc != NGX_ERROR && rc <= NGX_OK && !r->header_only) {
        rc = ngx_http_output_filter(r, &out);
    }

    /* the response is complete: end the request and the phases */
    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


/* "{p}" matches one non-empty segment, a trailing "/ *" (no space) anything */
static ngx_uint_t
ngx_http_apim_template_match(const char *t, const u_char *p,
    const u_char *end)
{
    for ( ;; ) {
        if (t[0] == '/' && t[1] == '*' && t[2] == '\0') {
            return p == end || *p == '/';
        }

        if (*t == '\0') {
            return p == end || (p + 1 == end && *p == '/');
        }

        if (*t == '{') {
            while (*t && *t != '}') {
                t++;
            }
            if (*t == '\0') {
                return 0;
            }
            t++;

            if (p == end || *p == '/') {
                return 0;
            }
            while (p < end && *p != '/') {
                p++;
            }
            continue;
        }

        if (p == end || (u_char) *t != *p) {
            return 0;
        }

        t++;
        p++;
    }
}


static ngx_uint_t
ngx_http_apim_verb_match(ngx_http_request_t *r, const char *verb)
{
    size_t  len;

    len = ngx_strlen(verb);

    if (len == 3 && ngx_strncasecmp((u_char *) verb, (u_char *) "ANY", 3) == 0)
    {
        return 1;
    }

    return r->method_name.len == len
           && ngx_strncasecmp(r->method_name.data, (u_char *) verb, len) == 0;
}


static ngx_int_t
ngx_http_apim_set_str(ngx_http_request_t *r, ngx_str_t *dst, const char *src)
{
    dst->len = ngx_strlen(src);
    dst->data = ngx_pnalloc(r->pool, dst->len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, src, dst->len + 1);

    return NGX_OK;
}


static json_t *
ngx_http_apim_b64_json(ngx_http_request_t *r, u_char *p, size_t len)
{
    ngx_str_t  src, dst;

    src.data = p;
    src.len = len;

    dst.data = ngx_pnalloc(r->pool, ngx_base64_decoded_length(len) + 1);
    if (dst.data == NULL) {
        return NULL;
    }

    if (ngx_decode_base64url(&dst, &src) != NGX_OK) {
        return NULL;
    }

    return json_loadb((char *) dst.data, dst.len, 0, NULL);
}


static ngx_int_t
ngx_http_apim_verify_sig(ngx_http_request_t *r, const ngx_http_apim_jwk_t *jwk,
    const char *alg, u_char *input, size_t input_len, u_char *sig64,
    size_t sig64_len)
{
    int             ok, type;
    size_t          der_len;
    u_char         *der;
    BIGNUM         *br, *bs;
    ECDSA_SIG      *es;
    ngx_str_t       src, sig;
    EVP_MD_CTX     *md;

    type = EVP_PKEY_get_base_id(jwk->pkey);

    if (!((ngx_strcmp(alg, "RS256") == 0 && type == EVP_PKEY_RSA)
          || (ngx_strcmp(alg, "ES256") == 0 && type == EVP_PKEY_EC)))
    {
        return NGX_DECLINED;
    }

    src.data = sig64;
    src.len = sig64_len;
    sig.data = ngx_pnalloc(r->pool, ngx_base64_decoded_length(sig64_len) + 1);
    if (sig.data == NULL || ngx_decode_base64url(&sig, &src) != NGX_OK) {
        return NGX_DECLINED;
    }

    der = NULL;

    if (type == EVP_PKEY_EC) {
        /* JOSE R || S -> DER ECDSA-Sig-Value */
        if (sig.len != 64) {
            return NGX_DECLINED;
        }

        es = ECDSA_SIG_new();
        br = BN_bin2bn(sig.data, 32, NULL);
        bs = BN_bin2bn(sig.data + 32, 32, NULL);

        if (es == NULL || br == NULL || bs == NULL
            || !ECDSA_SIG_set0(es, br, bs))
        {
            ECDSA_SIG_free(es);
            BN_free(br);
            BN_free(bs);
            return NGX_DECLINED;
        }

        ok = i2d_ECDSA_SIG(es, &der);
        ECDSA_SIG_free(es);

        if (ok <= 0) {
            return NGX_DECLINED;
        }

        der_len = ok;
        sig.data = der;
        sig.len = der_len;
    }

    md = EVP_MD_CTX_new();

    ok = md != NULL
         && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, jwk->pkey) == 1
         && EVP_DigestVerify(md, sig.data, sig.len, input, input_len) == 1;

    EVP_MD_CTX_free(md);
    OPENSSL_free(der);

    return ok ? NGX_OK : NGX_DECLINED;
}


static ngx_uint_t
ngx_http_apim_has_scope(json_t *claims, const char *want)
{
    size_t       i, wl;
    json_t      *v, *e;
    const char  *p, *q;

    wl = ngx_strlen(want);

    v = json_object_get(claims, "scope");

    if (json_is_string(v)) {
        p = json_string_value(v);

        while (*p) {
            while (*p == ' ') {
                p++;
            }
            q = p;
            while (*q && *q != ' ') {
                q++;
            }
            if ((size_t) (q - p) == wl && ngx_strncmp(p, want, wl) == 0) {
                return 1;
            }
            p = q;
        }

        return 0;
    }

    v = json_object_get(claims, "scp");

    json_array_foreach(v, i, e) {
        if (json_is_string(e) && ngx_strcmp(json_string_value(e), want) == 0) {
            return 1;
        }
    }

    return 0;
}


static ngx_int_t
ngx_http_apim_strip_authorization(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_t        headers;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *nh;

    if (ngx_list_init(&headers, r->pool, 20, sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }
            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("Authorization") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Authorization",
                               h[i].key.len) == 0)
        {
            continue;
        }

        nh = ngx_list_push(&headers);
        if (nh == NULL) {
            return NGX_ERROR;
        }

        *nh = h[i];
    }

    /* the typed pointers (host, user_agent...) point into the old list,
     * which stays allocated in r->pool; only authorization goes */
    r->headers_in.headers = headers;
    r->headers_in.authorization = NULL;

    return NGX_OK;
}


static ngx_int_t
ngx_http_apim_handler(ngx_http_request_t *r)
{
    u_char                    *p, *end, *dot1, *dot2, *bounds[APIM_MAX_SEGMENTS];
    size_t                     nb, i, len;
    time_t                     now;
    json_t                    *hdr, *claims, *v, *sub;
    ngx_str_t                  tok;
    ngx_uint_t                 sandbox;
    const char                *alg, *kid, *client, *status, *url, *app_id;
    ngx_http_apim_op_t        *op;
    ngx_http_apim_api_t       *api;
    ngx_http_apim_ctx_t       *ctx;
    ngx_http_apim_jwk_t       *jwk;
    ngx_http_apim_snap_t      *snap;
    ngx_http_apim_keymap_t    *km;
    ngx_http_apim_loc_conf_t  *alcf;
    const ngx_http_apim_fault_t  *fault;
    u_char                     subkey[512];

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_apim_module);

    if (!alcf->enable || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_apim_module);
    if (ctx != NULL) {
        return NGX_DECLINED;    /* already checked (e.g. satisfy any) */
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_apim_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_apim_module);

    snap = __atomic_load_n(&ngx_http_apim_current, __ATOMIC_ACQUIRE);
    if (snap == NULL) {
        return ngx_http_apim_fault(r, &ngx_http_apim_no_resource);
    }

    hdr = NULL;
    claims = NULL;
    fault = NULL;

    /* the API: the longest "/seg/seg..." prefix that names one */
    p = r->uri.data;
    end = r->uri.data + r->uri.len;
    nb = 0;

    for ( ; p <= end && nb < APIM_MAX_SEGMENTS; p++) {
        if (p == end || (*p == '/' && p != r->uri.data)) {
            bounds[nb++] = p;
        }
    }

    api = NULL;
    end = NULL;

    while (nb > 0) {
        nb--;
        api = ngx_http_apim_map_get(&snap->apis, r->uri.data,
                                    bounds[nb] - r->uri.data);
        if (api != NULL) {
            end = bounds[nb];
            break;
        }
    }

    if (api == NULL) {
        return ngx_http_apim_fault(r, &ngx_http_apim_no_resource);
    }

    /* the resource: operations are sorted most specific first */
    p = end;
    end = r->uri.data + r->uri.len;
    op = NULL;

    for (i = 0; i < api->nops; i++) {
        if (ngx_http_apim_template_match(api->ops[i].target, p, end)
            && ngx_http_apim_verb_match(r, api->ops[i].verb))
        {
            op = &api->ops[i];
            break;
        }
    }

    if (op == NULL) {
        return ngx_http_apim_fault(r, &ngx_http_apim_no_resource);
    }

    /* $apim_rest: the path below the API, escaped again for the upstream */
    len = end - p;
    ctx->rest.len = len + 2 * ngx_escape_uri(NULL, p, len, NGX_ESCAPE_URI);
    ctx->rest.data = ngx_pnalloc(r->pool, ctx->rest.len + 1);
    if (ctx->rest.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    if (len == 0) {
        ctx->rest.len = 0;
    } else {
        ngx_escape_uri(ctx->rest.data, p, len, NGX_ESCAPE_URI);
    }

    if (ngx_http_apim_set_str(r, &ctx->api_id, api->id) != NGX_OK
        || ngx_http_apim_set_str(r, &ctx->api_name, api->name) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    sandbox = 0;
    app_id = NULL;

    if (op->auth_none) {
        if (api->blocked) {
            return ngx_http_apim_fault(r, &ngx_http_apim_api_blocked);
        }
        goto backend;
    }

    /* the token */
    if (r->headers_in.authorization == NULL) {
        return ngx_http_apim_fault(r, &ngx_http_apim_missing);
    }

    tok = r->headers_in.authorization->value;

    if (tok.len < 7
        || ngx_strncasecmp(tok.data, (u_char *) "Bearer ", 7) != 0)
    {
        return ngx_http_apim_fault(r, &ngx_http_apim_missing);
    }

    tok.data += 7;
    tok.len -= 7;

    while (tok.len && tok.data[0] == ' ') {
        tok.data++;
        tok.len--;
    }

    fault = &ngx_http_apim_invalid;

    end = tok.data + tok.len;
    dot1 = ngx_strlchr(tok.data, end, '.');
    dot2 = dot1 ? ngx_strlchr(dot1 + 1, end, '.') : NULL;

    if (dot2 == NULL) {
        goto failed;
    }

    hdr = ngx_http_apim_b64_json(r, tok.data, dot1 - tok.data);
    claims = ngx_http_apim_b64_json(r, dot1 + 1, dot2 - dot1 - 1);

    if (!json_is_object(hdr) || !json_is_object(claims)) {
        goto failed;
    }

    alg = ngx_http_apim_jstr(hdr, "alg");
    kid = ngx_http_apim_jstr(hdr, "kid");

    if (alg == NULL || kid == NULL) {
        goto failed;
    }

    jwk = ngx_http_apim_map_get(&snap->jwks, (u_char *) kid, ngx_strlen(kid));
    if (jwk == NULL) {
        goto failed;
    }

    if (ngx_http_apim_verify_sig(r, jwk, alg, tok.data, dot2 - tok.data,
                                 dot2 + 1, end - dot2 - 1)
        != NGX_OK)
    {
        goto failed;
    }

    if (jwk->issuer != NULL) {
        v = json_object_get(claims, "iss");
        if (!json_is_string(v)
            || ngx_strcmp(json_string_value(v), jwk->issuer) != 0)
        {
            goto failed;
        }
    }

    now = ngx_time();

    v = json_object_get(claims, "exp");
    if (!json_is_number(v) || json_number_value(v) + APIM_LEEWAY < now) {
        goto failed;
    }

    v = json_object_get(claims, "nbf");
    if (v != NULL
        && (!json_is_number(v) || json_number_value(v) - APIM_LEEWAY > now))
    {
        goto failed;
    }

    v = json_object_get(claims, "jti");
    if (json_is_string(v)
        && ngx_http_apim_map_get(&snap->revoked,
                                 (u_char *) json_string_value(v),
                                 json_string_length(v)))
    {
        goto failed;
    }

    if (api->blocked) {
        fault = &ngx_http_apim_api_blocked;
        goto failed;
    }

    /* the application and its subscription */
    client = ngx_http_apim_jstr(claims, "azp");
    if (client == NULL) {
        client = ngx_http_apim_jstr(claims, "client_id");
    }

    fault = &ngx_http_apim_forbidden;

    if (client == NULL) {
        goto failed;
    }

    km = ngx_http_apim_map_get(&snap->keys, (u_char *) client,
                               ngx_strlen(client));
    if (km == NULL) {
        goto failed;
    }

    app_id = km->app_id;
    sandbox = km->sandbox;

    len = ngx_strlen(app_id) + 1 + ngx_strlen(api->id);
    if (len > sizeof(subkey)) {
        goto failed;
    }

    p = ngx_cpymem(subkey, app_id, ngx_strlen(app_id));
    *p++ = '\n';
    ngx_memcpy(p, api->id, ngx_strlen(api->id));

    sub = ngx_http_apim_map_get(&snap->subs, subkey, len);
    if (sub == NULL) {
        goto failed;
    }

    status = ngx_http_apim_jstr(sub, "status");
    if (status == NULL) {
        status = "UNBLOCKED";
    }

    if (ngx_strcmp(status, "BLOCKED") == 0
        || (ngx_strcmp(status, "PROD_ONLY_BLOCKED") == 0 && !sandbox))
    {
        fault = &ngx_http_apim_sub_blocked;
        goto failed;
    }

    if (ngx_strcmp(status, "UNBLOCKED") != 0
        && ngx_strcmp(status, "PROD_ONLY_BLOCKED") != 0)
    {
        fault = &ngx_http_apim_sub_inactive;
        goto failed;
    }

    /* scopes of the resource must all be in the token */
    json_array_foreach(op->scopes, i, v) {
        if (json_is_string(v)
            && !ngx_http_apim_has_scope(claims, json_string_value(v)))
        {
            fault = &ngx_http_apim_scope;
            goto failed;
        }
    }

    json_decref(hdr);
    json_decref(claims);
    hdr = NULL;
    claims = NULL;

    if (ngx_http_apim_set_str(r, &ctx->app_id, app_id) != NGX_OK
        || ngx_http_apim_strip_authorization(r) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

backend:

    url = sandbox ? api->sand_url : api->prod_url;
    if (url == NULL) {
        /* a production key on a sandbox-only API, or the reverse */
        return ngx_http_apim_fault(r, &ngx_http_apim_invalid);
    }

    if (ngx_http_apim_set_str(r, &ctx->backend, url) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    while (ctx->backend.len && ctx->backend.data[ctx->backend.len - 1] == '/') {
        ctx->backend.len--;
    }

    if (ctx->rest.len == 0) {
        /* the API's root: a backend URL without a path still needs "/",
         * or proxy_pass would send the client's URI */
        p = (u_char *) ngx_strstrn(ctx->backend.data, "://", 3 - 1);
        if (p == NULL
            || p + 3 > ctx->backend.data + ctx->backend.len
            || ngx_strlchr(p + 3, ctx->backend.data + ctx->backend.len, '/')
               == NULL)
        {
            ngx_str_set(&ctx->rest, "/");
        }
    }

    if (op->auth_none) {
        ngx_str_set(&ctx->key_type, "");
    } else if (sandbox) {
        ngx_str_set(&ctx->key_type, "SANDBOX");
    } else {
        ngx_str_set(&ctx->key_type, "PRODUCTION");
    }

    return NGX_OK;

failed:

    json_decref(hdr);
    json_decref(claims);

    return ngx_http_apim_fault(r, fault);
}


static ngx_int_t
ngx_http_apim_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_str_t            *s;
    ngx_http_apim_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_apim_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = (ngx_str_t *) ((u_char *) ctx + data);

    v->len = s->len;
    v->data = s->data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* -- configuration ------------------------------------------------------- */

static ngx_int_t
ngx_http_apim_preconf(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_apim_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_apim_postconf(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_apim_handler;

    return NGX_OK;
}


static void *
ngx_http_apim_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_apim_main_conf_t  *amcf;

    amcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_apim_main_conf_t));
    if (amcf == NULL) {
        return NULL;
    }

    /* amcf->snapshot_file = { 0, NULL }; */

    return amcf;
}


static void *
ngx_http_apim_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_apim_loc_conf_t  *alcf;

    alcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_apim_loc_conf_t));
    if (alcf == NULL) {
        return NULL;
    }

    alcf->enable = NGX_CONF_UNSET;

    return alcf;
}


static char *
ngx_http_apim_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_apim_loc_conf_t  *prev = parent;
    ngx_http_apim_loc_conf_t  *conf = child;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);

    return NGX_CONF_OK;
}
