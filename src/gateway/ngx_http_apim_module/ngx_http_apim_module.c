/*
 * ngx_http_apim_module: the apim gateway inside nginx (first request path).
 *
 * Directives:
 *   apim_gateway on|off;              (location) check requests here
 *   apim_backend_uri on|off;          (location) the request's URI becomes
 *                                     the backend's, for a proxy_pass
 *                                     without variables (see
 *                                     ngx_http_apim_upstream.c)
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
 * Backend JWT (ngx_http_apim_backend_jwt.c):
 *   apim_backend_jwt on|off;          (http) add X-JWT-Assertion
 *   apim_backend_jwt_key <pem>;       (http) its RSA signing key
 *   apim_jwks;                        (location) its public key, a JWKS
 * Burst control and maxTps (ngx_http_apim_burst.c, its own module):
 *   apim_shared_zone <size>;          (http) the counters all workers share
 *
 * Credentials, as the API's securityScheme allows: "Authorization: Bearer
 * <JWT>" (oauth2), else an API key (api_key) in the header named by the
 * API's apiKeyHeader (default apikey) or in the query argument of that
 * name. Both are JWTs verified locally (ngx_http_apim_jwt.c, with a
 * per-worker cache of verified tokens); an API key is bound to its
 * application, to the APIs it was issued for (subscribedAPIs) and to its
 * permittedIP. Then, for both: the live subscription, the resource's
 * scopes. The credential used is removed before proxying (the API key
 * from the headers or from $args), and so is any client X-JWT-Assertion.
 * CORS (ngx_http_apim_cors.c): preflights are answered before any
 * credential check.
 * Blocking conditions (ngx_http_apim_block.c): the client's address
 * before anything else, the API, application and user once the caller is
 * known. Then the subscription's burst limit and the backend's maxTps
 * (ngx_http_apim_burst.c).
 *
 * Variables: every ngx_str_t field of ngx_http_apim_ctx_t, as
 * $apim_<field> ($apim_api_id, $apim_app_id, $apim_user, $apim_fault_code,
 * $apim_backend, $apim_rest...). The rendered configuration proxies with
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


#include "ngx_http_apim_module.h"


static ngx_int_t ngx_http_apim_preconf(ngx_conf_t *cf);
static void ngx_http_apim_module_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_apim_postconf(ngx_conf_t *cf);
static void *ngx_http_apim_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_apim_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_apim_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_apim_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_apim_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_command_t  ngx_http_apim_commands[] = {

    { ngx_string("apim_gateway"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_apim_loc_conf_t, enable),
      NULL },

    { ngx_string("apim_backend_uri"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_apim_loc_conf_t, backend_uri),
      NULL },

    { ngx_string("apim_backend_jwt"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_apim_main_conf_t, backend_jwt),
      NULL },

    { ngx_string("apim_backend_jwt_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_apim_main_conf_t, backend_jwt_key),
      NULL },

    { ngx_string("apim_jwks"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_apim_jwks_conf,
      0,
      0,
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
    ngx_http_apim_init_main_conf,          /* init main configuration */

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
    ngx_http_apim_module_exit_process,     /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_apim_vars[] = {

    { ngx_string("apim_api_id"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, api_id), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_api_name"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, api_name), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_api_version"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, api_version), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_api_context"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, api_context), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_api_tier"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, api_tier), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_app_id"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, app_id), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_app_name"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, app_name), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_app_owner"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, app_owner), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_app_tier"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, app_tier), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_subscription_tier"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, subscription_tier), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_user"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, user), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_resource"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, resource), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_resource_tier"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, resource_tier), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_key_type"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, key_type), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_fault_code"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, fault_code), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_rest"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, rest), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_backend"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, backend), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("apim_throttled_out"), NULL, ngx_http_apim_variable,
      offsetof(ngx_http_apim_ctx_t, throttled_out), NGX_HTTP_VAR_NOCACHEABLE, 0 },

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

static const ngx_http_apim_fault_t  ngx_http_apim_missing_key = {
    "900902", NGX_HTTP_UNAUTHORIZED, "Missing Credentials",
    "Invalid Credentials. Make sure your API invocation call has an API key "
    "in the header or query parameter 'apikey'"
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


/* -- request path -------------------------------------------------------- */

static ngx_int_t
ngx_http_apim_fault(ngx_http_request_t *r, const ngx_http_apim_fault_t *f)
{
    size_t        len;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    ngx_http_apim_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_apim_module);
    if (ctx != NULL) {
        ctx->fault_code.data = (u_char *) f->code;
        ctx->fault_code.len = ngx_strlen(f->code);
    }

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


/* $apim_resource: "VERB /template" */
static ngx_int_t
ngx_http_apim_set_resource(ngx_http_request_t *r, ngx_http_apim_ctx_t *ctx,
    const ngx_http_apim_op_t *op)
{
    size_t  vl, tl;

    vl = ngx_strlen(op->verb);
    tl = ngx_strlen(op->target);

    ctx->resource.data = ngx_pnalloc(r->pool, vl + 1 + tl);
    if (ctx->resource.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ctx->resource.data, op->verb, vl);
    ctx->resource.data[vl] = ' ';
    ngx_memcpy(ctx->resource.data + vl + 1, op->target, tl);
    ctx->resource.len = vl + 1 + tl;

    return NGX_OK;
}


/* an API key's permittedIP: comma-separated addresses and CIDR ranges */
static ngx_uint_t
ngx_http_apim_ip_permitted(ngx_http_request_t *r, ngx_str_t *list)
{
    u_char       *p, *q, *end;
    ngx_str_t     item;
    ngx_cidr_t   *cidr;
    ngx_array_t   cidrs;

    if (ngx_array_init(&cidrs, r->pool, 4, sizeof(ngx_cidr_t)) != NGX_OK) {
        return 0;
    }

    p = list->data;
    end = p + list->len;

    while (p < end) {
        q = ngx_strlchr(p, end, ',');
        if (q == NULL) {
            q = end;
        }

        item.data = p;
        item.len = q - p;

        while (item.len && item.data[0] == ' ') {
            item.data++;
            item.len--;
        }

        while (item.len && item.data[item.len - 1] == ' ') {
            item.len--;
        }

        p = q + 1;

        if (item.len == 0) {
            continue;
        }

        cidr = ngx_array_push(&cidrs);
        if (cidr == NULL) {
            return 0;
        }

        if (ngx_ptocidr(&item, cidr) == NGX_ERROR) {
            cidrs.nelts--;
        }
    }

    return cidrs.nelts
           && ngx_cidr_match(r->connection->sockaddr, &cidrs) == NGX_OK;
}


/* the request header named name (case-insensitive), or NULL */
static ngx_table_elt_t *
ngx_http_apim_header_in(ngx_http_request_t *r, u_char *name, size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }
            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, name, len) == 0)
        {
            return &h[i];
        }
    }
}


/*
 * Removes the credentials from what goes to the backend: the client's
 * X-JWT-Assertion always, Authorization when authz, the header named
 * apikey when given.
 */
static ngx_int_t
ngx_http_apim_strip_headers(ngx_http_request_t *r, ngx_uint_t authz,
    ngx_str_t *apikey)
{
    ngx_uint_t        i, n;
    ngx_list_t        old;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *nh;

    /* a new list in place (its "last" points into itself); the old parts
     * stay allocated in r->pool, and the typed pointers (host,
     * user_agent...) keep pointing into them. Sized for the headers kept
     * and X-JWT-Assertion: the request's pool stays small */
    old = r->headers_in.headers;

    n = 1;
    for (part = &old.part; part != NULL; part = part->next) {
        n += part->nelts;
    }

    if (ngx_list_init(&r->headers_in.headers, r->pool, n,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    part = &old.part;
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

        /* nginx refuses a request with two (a unique header), and points
         * headers_in.authorization to the one */
        if (authz
            && (&h[i] == r->headers_in.authorization
                || (h[i].key.len == sizeof("Authorization") - 1
                    && ngx_strncasecmp(h[i].key.data,
                                       (u_char *) "Authorization",
                                       h[i].key.len) == 0)))
        {
            continue;
        }

        if (h[i].key.len == sizeof("X-JWT-Assertion") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "X-JWT-Assertion",
                               h[i].key.len) == 0)
        {
            continue;
        }

        if (apikey != NULL
            && h[i].key.len == apikey->len
            && ngx_strncasecmp(h[i].key.data, apikey->data, apikey->len) == 0)
        {
            continue;
        }

        nh = ngx_list_push(&r->headers_in.headers);
        if (nh == NULL) {
            return NGX_ERROR;
        }

        *nh = h[i];
    }

    if (authz) {
        r->headers_in.authorization = NULL;
    }

    return NGX_OK;
}


/* drops every argument called name (case-insensitive) from r->args */
static ngx_int_t
ngx_http_apim_strip_arg(ngx_http_request_t *r, ngx_str_t *name)
{
    u_char  *p, *q, *end, *eq, *dst, *out;

    out = ngx_pnalloc(r->pool, r->args.len);
    if (out == NULL) {
        return NGX_ERROR;
    }

    dst = out;
    p = r->args.data;
    end = p + r->args.len;

    while (p < end) {
        q = ngx_strlchr(p, end, '&');
        if (q == NULL) {
            q = end;
        }

        eq = ngx_strlchr(p, q, '=');
        if (eq == NULL) {
            eq = q;
        }

        if (!((size_t) (eq - p) == name->len
              && ngx_strncasecmp(p, name->data, name->len) == 0))
        {
            if (dst != out) {
                *dst++ = '&';
            }
            dst = ngx_cpymem(dst, p, q - p);
        }

        p = q + 1;
    }

    r->args.data = out;
    r->args.len = dst - out;

    return NGX_OK;
}


/*
 * The application and subscription an OAuth token had on an API, per
 * worker: valid while the token's cache entry (cl->gen) and the snapshot
 * (gen) are the same, since they follow from those two alone; the
 * pointers are into that snapshot. Saves the key and subscription
 * lookups of every call after a token's first on an API.
 */
#define APIM_MEMO_SIZE  1024                /* 2^10: ngx_http_apim_memo_slot */

typedef struct {
    uint64_t                    token;      /* cl->gen, 0: unused */
    uint64_t                    snap;       /* snap->gen */
    const ngx_http_apim_api_t  *api;
    const ngx_http_apim_app_t  *app;
    ngx_http_apim_sub_t        *sub;
    ngx_uint_t                  sandbox;
} ngx_http_apim_memo_t;

static ngx_http_apim_memo_t  ngx_http_apim_memo[APIM_MEMO_SIZE];


/*
 * The API a request URI names, per worker and snapshot: the longest
 * prefix lookup below costs a map lookup per segment of the URI, most of
 * them misses; a URI seen before against the same snapshot takes one
 * hash and one comparison. URIs up to APIM_ROUTE_URI bytes.
 */
#define APIM_ROUTE_SIZE  1024               /* power of two */
#define APIM_ROUTE_URI   232

typedef struct {
    uint64_t                    snap;       /* snap->gen, 0: unused */
    ngx_http_apim_api_t        *api;
    size_t                      prefix;     /* the API's part of the URI */
    size_t                      len;
    u_char                      uri[APIM_ROUTE_URI];
} ngx_http_apim_route_t;

static ngx_http_apim_route_t  ngx_http_apim_route[APIM_ROUTE_SIZE];


static ngx_http_apim_memo_t *
ngx_http_apim_memo_slot(uint64_t token, const ngx_http_apim_api_t *api)
{
    uint64_t  h;

    h = (token ^ ((uintptr_t) api >> 4)) * 0x9e3779b97f4a7c15ULL;

    return &ngx_http_apim_memo[h >> 54];
}


/* copies n NUL-terminated strings (NULL: "") into r->pool, in one block */
static ngx_int_t
ngx_http_apim_set_strs(ngx_http_request_t *r, ngx_str_t **dst,
    const char **src, ngx_uint_t n)
{
    u_char      *p;
    size_t       len[16], total;
    ngx_uint_t   i;

    total = 0;

    for (i = 0; i < n; i++) {
        len[i] = src[i] ? ngx_strlen(src[i]) : 0;
        total += len[i] + 1;
    }

    p = ngx_pnalloc(r->pool, total);
    if (p == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        dst[i]->data = p;
        dst[i]->len = len[i];
        p = ngx_cpymem(p, src[i] ? src[i] : "", len[i]);
        *p++ = '\0';
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_apim_handler(ngx_http_request_t *r)
{
    u_char                    *p, *end, *bounds[APIM_MAX_SEGMENTS];
    size_t                     nb, i, len;
    ngx_int_t                  rc;
    ngx_str_t                  tok, keyname;
    ngx_uint_t                 sandbox, by_key, key_in_query, known;
    ngx_table_elt_t           *kh;
    ngx_http_apim_op_t        *op;
    ngx_http_apim_api_t       *api;
    ngx_http_apim_ctx_t       *ctx;
    ngx_http_apim_snap_t      *snap;
    ngx_http_apim_keymap_t    *km;
    const ngx_http_apim_jwk_t *jwk;
    ngx_http_apim_sub_t       *sub;
    ngx_http_apim_claims_t    *cl;
    ngx_http_apim_upstream_t  *up;
    const ngx_http_apim_app_t *app;
    ngx_http_apim_loc_conf_t  *alcf;
    const ngx_http_apim_fault_t  *fault;
    u_char                     subkey[512];
    ngx_str_t                 *dst[8];
    const char                *src[8];
    ngx_http_apim_memo_t      *memo;
    ngx_http_apim_route_t     *route;

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

    /* blocking conditions on the client address, before anything else */
    fault = ngx_http_apim_block_ip(r, snap);
    if (fault != NULL) {
        return ngx_http_apim_fault(r, fault);
    }

    /* the API: the longest "/seg/seg..." prefix that names one */
    api = NULL;
    end = NULL;
    route = NULL;

    if (r->uri.len <= APIM_ROUTE_URI) {
        route = &ngx_http_apim_route[ngx_http_apim_hash64(r->uri.data,
                                                          r->uri.len)
                                     & (APIM_ROUTE_SIZE - 1)];

        if (route->snap == snap->gen && route->len == r->uri.len
            && ngx_memcmp(route->uri, r->uri.data, r->uri.len) == 0)
        {
            api = route->api;
            end = r->uri.data + route->prefix;
        }
    }

    if (api == NULL) {
        p = r->uri.data;
        end = r->uri.data + r->uri.len;
        nb = 0;

        for ( ; p <= end && nb < APIM_MAX_SEGMENTS; p++) {
            if (p == end || (*p == '/' && p != r->uri.data)) {
                bounds[nb++] = p;
            }
        }

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

        if (route != NULL) {
            route->snap = snap->gen;
            route->api = api;
            route->prefix = end - r->uri.data;
            route->len = r->uri.len;
            ngx_memcpy(route->uri, r->uri.data, r->uri.len);
        }
    }

    /* the resource: operations are sorted most specific first */
    p = end;
    end = r->uri.data + r->uri.len;
    op = NULL;
    known = 0;

    for (i = 0; i < api->nops; i++) {
        if (ngx_http_apim_template_match(api->ops[i].target, p, end)) {
            known = 1;

            if (ngx_http_apim_verb_match(r, api->ops[i].verb)) {
                op = &api->ops[i];
                break;
            }
        }
    }

    /* CORS: a preflight for a known path is answered here, before any
     * credential */
    if (api->cors != NULL && known) {
        rc = ngx_http_apim_cors_request(r, ctx, api->cors);
        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    if (op == NULL) {
        return ngx_http_apim_fault(r, &ngx_http_apim_no_resource);
    }

    /* $apim_rest: the path below the API, escaped again for the upstream */
    len = end - p;
    i = ngx_escape_uri(NULL, p, len, NGX_ESCAPE_URI);
    ctx->rest.len = len + 2 * i;
    ctx->rest.data = ngx_pnalloc(r->pool, ctx->rest.len + 1);
    if (ctx->rest.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    if (i == 0) {
        ngx_memcpy(ctx->rest.data, p, len);
    } else {
        ngx_escape_uri(ctx->rest.data, p, len, NGX_ESCAPE_URI);
    }

    dst[0] = &ctx->api_id;          src[0] = api->id;
    dst[1] = &ctx->api_name;        src[1] = api->name;
    dst[2] = &ctx->api_version;     src[2] = api->version;
    dst[3] = &ctx->api_context;     src[3] = api->context;
    dst[4] = &ctx->api_tier;        src[4] = api->tier;
    dst[5] = &ctx->resource_tier;   src[5] = op->tier;

    if (ngx_http_apim_set_strs(r, dst, src, 6) != NGX_OK
        || ngx_http_apim_set_resource(r, ctx, op) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    sandbox = 0;
    app = NULL;
    cl = NULL;
    sub = NULL;

    if (op->auth_none) {
        if (api->blocked) {
            return ngx_http_apim_fault(r, &ngx_http_apim_api_blocked);
        }

        fault = ngx_http_apim_block_caller(snap, api, NULL, NULL);
        if (fault != NULL) {
            return ngx_http_apim_fault(r, fault);
        }

        if (ngx_http_apim_strip_headers(r, 0, NULL) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        goto backend;
    }

    /*
     * The credential, as the API's securityScheme allows: a bearer token
     * (oauth2) first, else an API key (api_key) in the header named by
     * apiKeyHeader (default "apikey") or in the query argument of that name.
     */
    ngx_str_null(&tok);
    by_key = 0;
    key_in_query = 0;

    if (api->api_key_header != NULL && api->api_key_header[0] != '\0') {
        keyname.data = (u_char *) api->api_key_header;
        keyname.len = ngx_strlen(api->api_key_header);

    } else {
        ngx_str_set(&keyname, "apikey");
    }

    if ((api->security & APIM_SEC_OAUTH2)
        && r->headers_in.authorization != NULL)
    {
        tok = r->headers_in.authorization->value;

        if (tok.len > 7
            && ngx_strncasecmp(tok.data, (u_char *) "Bearer ", 7) == 0)
        {
            tok.data += 7;
            tok.len -= 7;

            while (tok.len && tok.data[0] == ' ') {
                tok.data++;
                tok.len--;
            }

        } else {
            ngx_str_null(&tok);
        }
    }

    if (tok.len == 0 && (api->security & APIM_SEC_API_KEY)) {
        kh = ngx_http_apim_header_in(r, keyname.data, keyname.len);

        if (kh != NULL) {
            tok = kh->value;

        } else if (ngx_http_arg(r, keyname.data, keyname.len, &tok) == NGX_OK)
        {
            key_in_query = 1;
        }

        by_key = tok.len > 0;
    }

    if (tok.len == 0) {
        return ngx_http_apim_fault(r, (api->security & APIM_SEC_OAUTH2)
                                      ? &ngx_http_apim_missing
                                      : &ngx_http_apim_missing_key);
    }

    fault = &ngx_http_apim_invalid;

    rc = ngx_http_apim_jwt_verify(r, snap, &tok, &cl);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* an API key is no access token, and the reverse */
    if (rc != NGX_OK || cl->api_key != by_key) {
        goto failed;
    }

    if (api->blocked) {
        fault = &ngx_http_apim_api_blocked;
        goto failed;
    }

    /* the application and its subscription */
    fault = &ngx_http_apim_forbidden;

    if (by_key) {
        /* bound to its application and to the APIs it was issued for */
        app = ngx_http_apim_map_get(&snap->apps, cl->app_id.data,
                                    cl->app_id.len);
        if (app == NULL || !ngx_http_apim_jwt_subscribed(cl, api)) {
            goto failed;
        }

        sandbox = cl->key_type.len == sizeof("SANDBOX") - 1
                  && ngx_strncmp(cl->key_type.data, "SANDBOX", 7) == 0;

        if (cl->permitted_ip.len
            && !ngx_http_apim_ip_permitted(r, &cl->permitted_ip))
        {
            goto failed;
        }

    } else if (cl->gen != 0
               && (memo = ngx_http_apim_memo_slot(cl->gen, api))->token
                  == cl->gen
               && memo->snap == snap->gen && memo->api == api)
    {
        /* this token's application and subscription on this API, as
         * found against this snapshot */
        app = memo->app;
        sandbox = memo->sandbox;
        sub = memo->sub;

    } else {
        km = ngx_http_apim_map_get(&snap->keys, cl->client.data,
                                   cl->client.len);
        if (km == NULL) {
            goto failed;
        }

        /* the client must be one of the token issuer's key manager: another
         * issuer may not name an application's client of ours, nor ours
         * one of theirs */
        jwk = cl->jwk;
        if (jwk == NULL
            || (jwk->key_manager == NULL) != (km->key_manager == NULL)
            || (jwk->key_manager != NULL
                && ngx_strcmp(jwk->key_manager, km->key_manager) != 0))
        {
            goto failed;
        }

        app = km->app;
        sandbox = km->sandbox;
    }

    len = ngx_strlen(app->id) + 1 + ngx_strlen(api->id);
    if (len > sizeof(subkey)) {
        goto failed;
    }

    p = ngx_cpymem(subkey, app->id, ngx_strlen(app->id));
    *p++ = '\n';
    ngx_memcpy(p, api->id, ngx_strlen(api->id));

    if (sub == NULL) {
        sub = ngx_http_apim_map_get(&snap->subs, subkey, len);
        if (sub == NULL) {
            goto failed;
        }

        if (!by_key && cl->gen != 0) {
            memo = ngx_http_apim_memo_slot(cl->gen, api);
            memo->token = cl->gen;
            memo->snap = snap->gen;
            memo->api = api;
            memo->app = app;
            memo->sub = sub;
            memo->sandbox = sandbox;
        }
    }

    if (ngx_strcmp(sub->status, "BLOCKED") == 0
        || (ngx_strcmp(sub->status, "PROD_ONLY_BLOCKED") == 0 && !sandbox))
    {
        fault = &ngx_http_apim_sub_blocked;
        goto failed;
    }

    if (ngx_strcmp(sub->status, "UNBLOCKED") != 0
        && ngx_strcmp(sub->status, "PROD_ONLY_BLOCKED") != 0
        && ngx_strcmp(sub->status, "TIER_UPDATE_PENDING") != 0)
    {
        fault = &ngx_http_apim_sub_inactive;
        goto failed;
    }

    /* scopes of the resource must all be in the token */
    for (i = 0; i < op->nscopes; i++) {
        if (!ngx_http_apim_jwt_has_scope(cl, op->scopes[i])) {
            fault = &ngx_http_apim_scope;
            goto failed;
        }
    }

    /* blocking conditions on the API, the application, the user */
    fault = ngx_http_apim_block_caller(snap, api, app, &cl->sub);
    if (fault != NULL) {
        goto failed;
    }

    ctx->user.len = cl->sub.len;
    ctx->user.data = ngx_pstrdup(r->pool, &cl->sub);

    dst[0] = &ctx->app_id;              src[0] = app->id;
    dst[1] = &ctx->app_name;            src[1] = app->name;
    dst[2] = &ctx->app_owner;           src[2] = app->owner;
    dst[3] = &ctx->app_tier;            src[3] = app->tier;
    dst[4] = &ctx->subscription_tier;   src[4] = sub->tier;

    if ((cl->sub.len && ctx->user.data == NULL)
        || ngx_http_apim_set_strs(r, dst, src, 5) != NGX_OK
        || ngx_http_apim_strip_headers(r, !by_key, by_key ? &keyname : NULL)
           != NGX_OK
        || (key_in_query && ngx_http_apim_strip_arg(r, &keyname) != NGX_OK))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* burst control (spike arrest) of the subscription's tier (after the
     * variables: the access log names who was refused) */
    fault = ngx_http_apim_burst_check(r, snap, sub->tier, subkey, len);
    if (fault != NULL) {
        goto failed;
    }

    /* rate limits (ngx_http_apim_throttle.c) */
    rc = ngx_http_apim_throttle_check(r, ctx, snap, &fault);
    if (rc == NGX_DECLINED) {
        goto failed;
    }
    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

backend:

    up = sandbox ? api->sand : api->prod;
    if (up == NULL) {
        /* a production key on a sandbox-only API, or the reverse */
        return ngx_http_apim_fault(r, &ngx_http_apim_invalid);
    }

    /* the backend's maxTps, per key type */
    fault = ngx_http_apim_max_tps_check(r, api, sandbox);
    if (fault != NULL) {
        return ngx_http_apim_fault(r, fault);
    }

    if (ngx_http_apim_upstream_set(r, ctx, up) != NGX_OK
        || (alcf->backend_uri && ngx_http_apim_upstream_uri(r, ctx) != NGX_OK))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (op->auth_none) {
        ngx_str_set(&ctx->key_type, "");
    } else if (sandbox) {
        ngx_str_set(&ctx->key_type, "SANDBOX");
    } else {
        ngx_str_set(&ctx->key_type, "PRODUCTION");
    }

    if (cl != NULL
        && ngx_http_apim_backend_jwt_set(r, ctx, cl, snap->gen) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_OK;

failed:

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

static void
ngx_http_apim_module_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_apim_exit_process(cycle);
    ngx_http_apim_jwt_cleanup();
}


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

    return ngx_http_apim_cors_init(cf);
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

    amcf->backend_jwt = NGX_CONF_UNSET;

    return amcf;
}


static char *
ngx_http_apim_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_apim_main_conf_t  *amcf = conf;

    if (ngx_http_apim_backend_jwt_init(cf, amcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_value(amcf->backend_jwt, 0);

    return NGX_CONF_OK;
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
    alcf->backend_uri = NGX_CONF_UNSET;

    return alcf;
}


static char *
ngx_http_apim_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_apim_loc_conf_t  *prev = parent;
    ngx_http_apim_loc_conf_t  *conf = child;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_value(conf->backend_uri, prev->backend_uri, 0);

    return NGX_CONF_OK;
}
