/*
 * ngx_http_apim_snapshot.c: builds the immutable gateway data (APIs,
 * applications, key mappings, subscriptions, revoked tokens, keys) from
 * the snapshot JSON or from a delta on top of the previous snapshot, and
 * frees it.
 *
 * Memory. Nothing of the JSON is kept: the text is parsed one entry at a
 * time (json_loadb with JSON_DISABLE_EOF_CHECK on each element of each
 * section), what the request path needs is copied into large arena blocks
 * and the element is dropped, so the transient peak is the text plus one
 * entry. Maps keep pointers into the arenas; their slot arrays are the
 * only per-snapshot memory. After a build, malloc_trim() gives the freed
 * parser memory back to the system.
 *
 * Deltas. ngx_http_apim_snap_delta() copies the old snapshot's maps (slot
 * arrays only), takes a reference on each of its arenas and adds a small
 * arena for the changed entries: unchanged APIs (with what their hooks
 * allocated), applications, key mappings and subscriptions are shared. A
 * replaced entry stays in its old arena until no snapshot uses that arena;
 * the feed bounds this garbage by taking a full snapshot after
 * APIM_MAX_DELTAS deltas.
 */

#include "ngx_http_apim_module.h"


/* numbers the snapshots of this worker (caches key on it) */
static uint64_t  ngx_http_apim_snap_gen;

#include <malloc.h>


#define APIM_ARENA_FIRST    (64 * 1024)
#define APIM_ARENA_MAX      (1024 * 1024)
#define APIM_DELTA_FIRST    4096


/* -- arenas -------------------------------------------------------------- */

static ngx_http_apim_arena_t *
ngx_http_apim_arena_new(size_t first)
{
    ngx_http_apim_arena_t  *a;

    a = calloc(1, sizeof(ngx_http_apim_arena_t));
    if (a == NULL) {
        return NULL;
    }

    a->refs = 1;
    a->block = first;

    return a;
}


static void
ngx_http_apim_arena_unref(ngx_http_apim_arena_t *a)
{
    ngx_http_apim_mem_t  *m, *next;

    if (--a->refs > 0) {
        return;
    }

    for (m = a->blocks; m; m = next) {
        next = m->next;
        free(m);
    }

    free(a);
}


/* zeroed memory, aligned to align (a power of two) */
static void *
ngx_http_apim_arena_alloc(ngx_http_apim_arena_t *a, size_t size, size_t align)
{
    size_t                bs;
    u_char               *p;
    ngx_http_apim_mem_t  *m;

    p = ngx_align_ptr(a->pos, align);

    if (a->pos != NULL && size <= (size_t) (a->end - p)) {
        a->pos = p + size;
        return p;
    }

    /* a large request gets a block of its own, the current one goes on */
    if (size > a->block / 4) {
        m = calloc(1, 16 + size);
        if (m == NULL) {
            return NULL;
        }

        a->size += 16 + size;

        if (a->blocks != NULL) {
            m->next = a->blocks->next;
            a->blocks->next = m;

        } else {
            m->next = NULL;
            a->blocks = m;
            a->pos = (u_char *) m + 16 + size;
            a->end = a->pos;
        }

        return (u_char *) m + 16;
    }

    bs = a->block;
    if (a->block < APIM_ARENA_MAX) {
        a->block *= 2;
    }

    m = calloc(1, bs);
    if (m == NULL) {
        return NULL;
    }

    m->next = a->blocks;
    a->blocks = m;
    a->size += bs;

    p = (u_char *) m + 16;
    a->pos = p + size;
    a->end = (u_char *) m + bs;

    return p;
}


void *
ngx_http_apim_alloc(ngx_http_apim_snap_t *s, size_t size)
{
    return ngx_http_apim_arena_alloc(s->arena, size, 16);
}


static char *
ngx_http_apim_strndup(ngx_http_apim_snap_t *s, const char *str, size_t len)
{
    char  *p;

    p = ngx_http_apim_arena_alloc(s->arena, len + 1, 1);
    if (p != NULL) {
        memcpy(p, str, len);
    }

    return p;
}


void *
ngx_http_apim_strdup(ngx_http_apim_snap_t *s, const char *str)
{
    if (str == NULL) {
        return NULL;
    }

    return ngx_http_apim_strndup(s, str, strlen(str));
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

    p = ngx_http_apim_arena_alloc(s->arena, la + lb + lc + 1, 1);
    if (p == NULL) {
        return NULL;
    }

    memcpy(p, a, la);
    memcpy(p + la, b, lb);
    memcpy(p + la + lb, c, lc);

    return p;
}


size_t
ngx_http_apim_snap_bytes(const ngx_http_apim_snap_t *s)
{
    size_t  i, n;

    n = 0;

    for (i = 0; i < s->narenas; i++) {
        n += s->arenas[i]->size;
    }

    n += (s->apis.cap + s->apps.cap + s->keys.cap + s->subs.cap
          + s->revoked.cap + s->jwks.cap) * sizeof(ngx_http_apim_slot_t);

    return n;
}


/* -- maps ---------------------------------------------------------------- */

/*
 * 8 key bytes a step (ngx_http_apim_hash64); the builder, the deltas and
 * the lookups all hash through here, so the slots stay where they are found
 */
static ngx_inline uint64_t
ngx_http_apim_hash(const char *k, size_t len)
{
    return ngx_http_apim_hash64((const u_char *) k, len);
}


static ngx_inline size_t
ngx_http_apim_map_per(const ngx_http_apim_map_t *m)
{
    return m->cap < APIM_MAP_PAGE ? m->cap : APIM_MAP_PAGE;
}


static ngx_inline ngx_http_apim_slot_t *
ngx_http_apim_slot(const ngx_http_apim_map_t *m, size_t i)
{
    size_t  per;

    per = ngx_http_apim_map_per(m);

    return &m->pages[i / per]->slots[i & (per - 1)];
}


/* the slot to write: its page copied first when another map shares it */
static ngx_http_apim_slot_t *
ngx_http_apim_slot_w(ngx_http_apim_map_t *m, size_t i)
{
    size_t                 per, size;
    ngx_http_apim_page_t  *page, *copy;

    per = ngx_http_apim_map_per(m);
    page = m->pages[i / per];

    if (page->refs > 1) {
        size = sizeof(ngx_http_apim_page_t) + per * sizeof(ngx_http_apim_slot_t);
        copy = malloc(size);
        if (copy == NULL) {
            return NULL;
        }

        memcpy(copy, page, size);
        copy->refs = 1;
        page->refs--;
        m->pages[i / per] = copy;
        page = copy;
    }

    return &page->slots[i & (per - 1)];
}


static void
ngx_http_apim_map_free(ngx_http_apim_map_t *m)
{
    size_t                 i, per;
    ngx_http_apim_page_t  *page;

    if (m->pages != NULL) {
        per = ngx_http_apim_map_per(m);

        for (i = 0; i < m->cap / per; i++) {
            page = m->pages[i];
            if (page != NULL && --page->refs == 0) {
                free(page);
            }
        }
    }

    free(m->pages);
    m->pages = NULL;
    m->cap = 0;
    m->n = 0;
}


static ngx_int_t
ngx_http_apim_map_resize(ngx_http_apim_map_t *m, size_t cap)
{
    size_t                  i, j, per, np;
    ngx_http_apim_map_t     fresh;
    ngx_http_apim_slot_t   *from, *to;

    fresh.cap = cap;
    fresh.n = m->n;
    per = ngx_http_apim_map_per(&fresh);
    np = cap / per;

    fresh.pages = calloc(np, sizeof(ngx_http_apim_page_t *));
    if (fresh.pages == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < np; i++) {
        fresh.pages[i] = calloc(1, sizeof(ngx_http_apim_page_t)
                                   + per * sizeof(ngx_http_apim_slot_t));
        if (fresh.pages[i] == NULL) {
            ngx_http_apim_map_free(&fresh);
            return NGX_ERROR;
        }
        fresh.pages[i]->refs = 1;
    }

    for (i = 0; i < m->cap; i++) {
        from = ngx_http_apim_slot(m, i);
        if (from->key == NULL) {
            continue;
        }

        j = ngx_http_apim_hash(from->key, from->len) & (cap - 1);
        for ( ;; ) {
            to = ngx_http_apim_slot(&fresh, j);
            if (to->key == NULL) {
                break;
            }
            j = (j + 1) & (cap - 1);
        }

        *to = *from;
    }

    ngx_http_apim_map_free(m);
    *m = fresh;

    return NGX_OK;
}


/* a map sharing every page of from */
static ngx_int_t
ngx_http_apim_map_copy(ngx_http_apim_map_t *to, const ngx_http_apim_map_t *from)
{
    size_t  i, np;

    to->n = from->n;
    to->cap = from->cap;
    to->pages = NULL;

    if (from->cap == 0) {
        return NGX_OK;
    }

    np = from->cap / ngx_http_apim_map_per(from);

    to->pages = malloc(np * sizeof(ngx_http_apim_page_t *));
    if (to->pages == NULL) {
        to->cap = 0;
        to->n = 0;
        return NGX_ERROR;
    }

    for (i = 0; i < np; i++) {
        to->pages[i] = from->pages[i];
        to->pages[i]->refs++;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_apim_map_find(const ngx_http_apim_map_t *m, const char *key,
    size_t len, size_t *at)
{
    size_t                 i;
    ngx_http_apim_slot_t  *sl;

    if (m->cap == 0) {
        return NGX_DECLINED;
    }

    i = ngx_http_apim_hash(key, len) & (m->cap - 1);

    for ( ;; ) {
        sl = ngx_http_apim_slot(m, i);

        if (sl->key == NULL) {
            return NGX_DECLINED;
        }

        if (sl->len == len && memcmp(sl->key, key, len) == 0) {
            *at = i;
            return NGX_OK;
        }

        i = (i + 1) & (m->cap - 1);
    }
}


/* replace: a later put of a key wins, else the first one does */
static ngx_int_t
ngx_http_apim_map_put(ngx_http_apim_map_t *m, const char *key, size_t len,
    void *value, ngx_uint_t replace)
{
    size_t                 i, cap;
    ngx_http_apim_slot_t  *sl;

    if (ngx_http_apim_map_find(m, key, len, &i) == NGX_OK) {
        if (!replace) {
            return NGX_OK;
        }

        sl = ngx_http_apim_slot_w(m, i);
        if (sl == NULL) {
            return NGX_ERROR;
        }

        sl->key = key;
        sl->value = value;

        return NGX_OK;
    }

    /* load factor at most 3/4 */
    if ((m->n + 1) * 4 > m->cap * 3) {
        cap = m->cap ? m->cap * 2 : 16;
        if (ngx_http_apim_map_resize(m, cap) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    i = ngx_http_apim_hash(key, len) & (m->cap - 1);

    while (ngx_http_apim_slot(m, i)->key) {
        i = (i + 1) & (m->cap - 1);
    }

    sl = ngx_http_apim_slot_w(m, i);
    if (sl == NULL) {
        return NGX_ERROR;
    }

    sl->key = key;
    sl->len = len;
    sl->value = value;
    m->n++;

    return NGX_OK;
}


void *
ngx_http_apim_map_get(const ngx_http_apim_map_t *m, const u_char *key,
    size_t len)
{
    size_t  i;

    if (ngx_http_apim_map_find(m, (const char *) key, len, &i) != NGX_OK) {
        return NULL;
    }

    return ngx_http_apim_slot(m, i)->value;
}


/* removes a key: backward shift, so that no probe chain is broken */
static ngx_int_t
ngx_http_apim_map_del(ngx_http_apim_map_t *m, const char *key, size_t len)
{
    size_t                 i, j, k, mask;
    ngx_http_apim_slot_t  *sj, *si;

    if (ngx_http_apim_map_find(m, key, len, &i) != NGX_OK) {
        return NGX_OK;
    }

    mask = m->cap - 1;
    j = i;

    for ( ;; ) {
        j = (j + 1) & mask;
        sj = ngx_http_apim_slot(m, j);

        if (sj->key == NULL) {
            break;
        }

        k = ngx_http_apim_hash(sj->key, sj->len) & mask;

        /* the entry at j may move to i unless its home k is in (i, j] */
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) {
            continue;
        }

        si = ngx_http_apim_slot_w(m, i);
        if (si == NULL) {
            return NGX_ERROR;
        }

        *si = *ngx_http_apim_slot(m, j);
        i = j;
    }

    si = ngx_http_apim_slot_w(m, i);
    if (si == NULL) {
        return NGX_ERROR;
    }

    si->key = NULL;
    si->len = 0;
    si->value = NULL;
    m->n--;

    return NGX_OK;
}


/* -- entries ------------------------------------------------------------- */

const char *
ngx_http_apim_jstr(json_t *o, const char *name)
{
    json_t  *v;

    v = json_object_get(o, name);

    return json_is_string(v) ? json_string_value(v) : NULL;
}


typedef struct {
    ngx_http_apim_snap_t       *snap;
    ngx_log_t                  *log;
    ngx_uint_t                  replace;    /* deltas: later entries win */
    ngx_http_apim_map_t         intern;     /* small repeated strings */
    json_t                     *pending;    /* key mappings before apps */
    json_t                     *km;         /* keyManagers */
} ngx_http_apim_build_t;


/* a copy of a JSON string member, shared with equal ones when interned */
static const char *
ngx_http_apim_copy(ngx_http_apim_build_t *b, json_t *o, const char *name,
    ngx_uint_t intern)
{
    size_t       len, at;
    char        *p;
    json_t      *v;
    const char  *str;

    v = json_object_get(o, name);
    if (!json_is_string(v)) {
        return NULL;
    }

    str = json_string_value(v);
    len = json_string_length(v);

    if (intern && ngx_http_apim_map_find(&b->intern, str, len, &at) == NGX_OK)
    {
        return ngx_http_apim_slot(&b->intern, at)->key;
    }

    p = ngx_http_apim_strndup(b->snap, str, len);
    if (p == NULL) {
        return NULL;
    }

    if (intern && len < 64) {
        (void) ngx_http_apim_map_put(&b->intern, p, len, p, 0);
    }

    return p;
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


static ngx_int_t
ngx_http_apim_add_api(ngx_http_apim_build_t *b, json_t *ja)
{
    size_t                 i, j, n;
    json_t                *jo, *ec, *js, *jsv, *parsed;
    ngx_int_t              rc;
    const char            *context, *version, *status, *p, *vctx, *key;
    ngx_http_apim_op_t    *op;
    ngx_http_apim_api_t   *api;
    ngx_http_apim_snap_t  *s;

    s = b->snap;

    context = ngx_http_apim_jstr(ja, "context");
    version = ngx_http_apim_jstr(ja, "version");

    if (context == NULL || version == NULL || context[0] != '/') {
        return NGX_OK;
    }

    api = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_api_t));
    if (api == NULL) {
        return NGX_ERROR;
    }

    api->id = ngx_http_apim_copy(b, ja, "id", 0);
    api->name = ngx_http_apim_copy(b, ja, "name", 0);
    api->version = ngx_http_apim_copy(b, ja, "version", 1);
    api->context = ngx_http_apim_copy(b, ja, "context", 0);
    api->provider = ngx_http_apim_copy(b, ja, "provider", 1);
    api->tier = ngx_http_apim_copy(b, ja, "apiThrottlingPolicy", 1);

    if (api->version == NULL || api->context == NULL) {
        return NGX_ERROR;
    }

    if (api->id == NULL) {
        api->id = "";
    }
    if (api->name == NULL) {
        api->name = "";
    }

    status = ngx_http_apim_jstr(ja, "lifeCycleStatus");
    api->blocked = status != NULL && strcasecmp(status, "BLOCKED") == 0;

    parsed = NULL;
    ec = json_object_get(ja, "endpointConfig");
    if (json_is_string(ec)) {
        /* the reference stores endpointConfig as a JSON string too */
        parsed = json_loads(json_string_value(ec), 0, NULL);
        ec = parsed;
    }

    api->prod = ngx_http_apim_upstream_build(s, ec, "production_endpoints",
                                             b->log);
    api->sand = ngx_http_apim_upstream_build(s, ec, "sandbox_endpoints",
                                             b->log);
    api->max_tps = ngx_http_apim_max_tps_build(s, json_object_get(ja, "maxTps"),
                                               b->log);
    api->cors = ngx_http_apim_cors_build(s,
                                         json_object_get(ja, "corsConfiguration"),
                                         b->log);
    json_decref(parsed);

    /* securityScheme and apiKeyHeader (no scheme: oauth2) */
    js = json_object_get(ja, "securityScheme");
    api->security = json_array_size(js) ? 0 : APIM_SEC_OAUTH2;
    json_array_foreach(js, i, jsv) {
        p = json_string_value(jsv);
        api->security |= p == NULL ? 0
                         : strcmp(p, "oauth2") == 0 ? APIM_SEC_OAUTH2
                         : strcmp(p, "api_key") == 0 ? APIM_SEC_API_KEY
                         : strcmp(p, "basic_auth") == 0 ? APIM_SEC_BASIC : 0;
    }
    api->api_key_header = ngx_http_apim_copy(b, ja, "apiKeyHeader", 1);

    js = json_object_get(ja, "operations");
    n = json_is_array(js) ? json_array_size(js) : 0;

    api->ops = ngx_http_apim_alloc(s, (n + 1) * sizeof(ngx_http_apim_op_t));
    if (api->ops == NULL) {
        return NGX_ERROR;
    }

    json_array_foreach(json_object_get(ja, "operations"), i, jo) {
        op = &api->ops[api->nops];

        p = ngx_http_apim_jstr(jo, "target");
        if (p == NULL || p[0] != '/' || ngx_http_apim_jstr(jo, "verb") == NULL) {
            continue;
        }

        op->target = ngx_http_apim_copy(b, jo, "target", 1);
        op->verb = ngx_http_apim_copy(b, jo, "verb", 1);
        op->tier = ngx_http_apim_copy(b, jo, "throttlingPolicy", 1);
        if (op->target == NULL || op->verb == NULL) {
            return NGX_ERROR;
        }

        p = ngx_http_apim_jstr(jo, "authType");
        op->auth_none = p != NULL && strcasecmp(p, "None") == 0;

        js = json_object_get(jo, "scopes");
        if (json_is_array(js) && json_array_size(js) > 0) {
            op->scopes = ngx_http_apim_alloc(s, json_array_size(js)
                                                * sizeof(const char *));
            if (op->scopes == NULL) {
                return NGX_ERROR;
            }
        }
        json_array_foreach(js, j, jsv) {
            if (json_is_string(jsv)) {
                op->scopes[op->nscopes] = ngx_http_apim_strndup(s,
                                                  json_string_value(jsv),
                                                  json_string_length(jsv));
                if (op->scopes[op->nscopes] == NULL) {
                    return NGX_ERROR;
                }
                op->nscopes++;
            }
        }

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

    context = api->context;
    version = api->version;

    /* "{version}" inside the context, else /context/version */
    vctx = strstr(context, "{version}");
    if (vctx != NULL) {
        char  *pre;

        pre = ngx_http_apim_strndup(s, context, vctx - context);
        if (pre == NULL) {
            return NGX_ERROR;
        }
        key = ngx_http_apim_strcat3(s, pre, version, vctx + 9);

    } else {
        key = ngx_http_apim_strcat3(s, context, "/", version);
    }

    if (key == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_apim_map_put(&s->apis, key, strlen(key), api, b->replace);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!json_is_true(json_object_get(ja, "isDefaultVersion"))) {
        return NGX_OK;
    }

    if (vctx != NULL) {
        char  *d;

        /* drop "/{version}" from the context */
        d = ngx_http_apim_strcat3(s, "", context, "");
        if (d == NULL) {
            return NGX_ERROR;
        }
        n = vctx - context;
        if (n > 0 && d[n - 1] == '/') {
            n--;
        }
        memmove(d + n, vctx + 9, strlen(vctx + 9) + 1);
        key = d;

    } else {
        key = context;
    }

    return ngx_http_apim_map_put(&s->apis, key, strlen(key), api, b->replace);
}


static ngx_int_t
ngx_http_apim_add_app(ngx_http_apim_build_t *b, json_t *jv)
{
    ngx_http_apim_app_t  *app;

    if (ngx_http_apim_jstr(jv, "id") == NULL) {
        return NGX_OK;
    }

    app = ngx_http_apim_alloc(b->snap, sizeof(ngx_http_apim_app_t));
    if (app == NULL) {
        return NGX_ERROR;
    }

    app->id = ngx_http_apim_copy(b, jv, "id", 0);
    app->name = ngx_http_apim_copy(b, jv, "name", 0);
    app->owner = ngx_http_apim_copy(b, jv, "owner", 1);
    app->tier = ngx_http_apim_copy(b, jv, "tier", 1);

    if (app->id == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_apim_map_put(&b->snap->apps, app->id, strlen(app->id), app,
                                 b->replace);
}


/* NGX_DECLINED: the application is not known (yet) */
static ngx_int_t
ngx_http_apim_add_keymap(ngx_http_apim_build_t *b, json_t *jv)
{
    const char              *k, *a, *t;
    ngx_http_apim_app_t     *app;
    ngx_http_apim_keymap_t  *map;

    k = ngx_http_apim_jstr(jv, "consumerKey");
    a = ngx_http_apim_jstr(jv, "applicationId");
    t = ngx_http_apim_jstr(jv, "keyType");

    if (k == NULL || a == NULL) {
        return NGX_OK;
    }

    app = ngx_http_apim_map_get(&b->snap->apps, (u_char *) a, strlen(a));
    if (app == NULL) {
        return NGX_DECLINED;
    }

    map = ngx_http_apim_alloc(b->snap, sizeof(ngx_http_apim_keymap_t));
    k = ngx_http_apim_copy(b, jv, "consumerKey", 0);
    if (map == NULL || k == NULL) {
        return NGX_ERROR;
    }

    map->app = app;
    map->sandbox = t != NULL && strcasecmp(t, "SANDBOX") == 0;

    /* the client of another issuer is only that issuer's */
    t = ngx_http_apim_jstr(jv, "keyManager");
    if (t != NULL && *t != '\0' && strcmp(t, APIM_RESIDENT_KM) != 0) {
        map->key_manager = ngx_http_apim_copy(b, jv, "keyManager", 1);
        if (map->key_manager == NULL) {
            return NGX_ERROR;
        }
    }

    return ngx_http_apim_map_put(&b->snap->keys, k, strlen(k), map, b->replace);
}


static const char  *ngx_http_apim_sub_states[] = {
    "UNBLOCKED", "BLOCKED", "PROD_ONLY_BLOCKED", "ON_HOLD", "REJECTED",
    "TIER_UPDATE_PENDING", NULL
};


static const char *
ngx_http_apim_sub_key(ngx_http_apim_build_t *b, json_t *jv, size_t *len)
{
    const char  *a, *p, *k;

    a = ngx_http_apim_jstr(jv, "applicationId");
    p = ngx_http_apim_jstr(jv, "apiId");

    if (a == NULL || p == NULL) {
        return NULL;
    }

    k = ngx_http_apim_strcat3(b->snap, a, "\n", p);
    if (k != NULL) {
        *len = strlen(k);
    }

    return k;
}


static ngx_int_t
ngx_http_apim_add_sub(ngx_http_apim_build_t *b, json_t *jv)
{
    size_t                i, len;
    const char           *k, *st;
    ngx_http_apim_sub_t  *sub;

    if (ngx_http_apim_jstr(jv, "applicationId") == NULL
        || ngx_http_apim_jstr(jv, "apiId") == NULL)
    {
        return NGX_OK;
    }

    sub = ngx_http_apim_alloc(b->snap, sizeof(ngx_http_apim_sub_t));
    k = ngx_http_apim_sub_key(b, jv, &len);
    if (sub == NULL || k == NULL) {
        return NGX_ERROR;
    }

    st = ngx_http_apim_jstr(jv, "status");
    sub->status = "UNBLOCKED";

    if (st != NULL) {
        for (i = 0; ngx_http_apim_sub_states[i]; i++) {
            if (strcmp(st, ngx_http_apim_sub_states[i]) == 0) {
                break;
            }
        }
        sub->status = ngx_http_apim_sub_states[i]
                      ? ngx_http_apim_sub_states[i]
                      : ngx_http_apim_copy(b, jv, "status", 1);
    }

    sub->tier = ngx_http_apim_copy(b, jv, "tier", 1);

    return ngx_http_apim_map_put(&b->snap->subs, k, len, sub, b->replace);
}


static ngx_int_t
ngx_http_apim_add_revoked(ngx_http_apim_build_t *b, json_t *jv)
{
    const char  *k;

    if (ngx_http_apim_jstr(jv, "jti") == NULL) {
        return NGX_OK;
    }

    k = ngx_http_apim_copy(b, jv, "jti", 0);
    if (k == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_apim_map_put(&b->snap->revoked, k, strlen(k), (void *) k,
                                 0);
}


/* one element of a section of the snapshot (or of a delta) */
static ngx_int_t
ngx_http_apim_add(ngx_http_apim_build_t *b, const char *section, json_t *jv)
{
    ngx_int_t  rc;

    if (!json_is_object(jv)) {
        return NGX_OK;
    }

    if (strcmp(section, "apis") == 0) {
        return ngx_http_apim_add_api(b, jv);
    }

    if (strcmp(section, "applications") == 0) {
        return ngx_http_apim_add_app(b, jv);
    }

    if (strcmp(section, "keyMappings") == 0) {
        rc = ngx_http_apim_add_keymap(b, jv);
        if (rc == NGX_DECLINED) {
            /* its application may come later in the document */
            if (b->pending == NULL) {
                b->pending = json_array();
            }
            if (b->pending == NULL
                || json_array_append(b->pending, jv) != 0)
            {
                return NGX_ERROR;
            }
            rc = NGX_OK;
        }
        return rc;
    }

    if (strcmp(section, "subscriptions") == 0) {
        return ngx_http_apim_add_sub(b, jv);
    }

    if (strcmp(section, "revokedJwts") == 0) {
        return ngx_http_apim_add_revoked(b, jv);
    }

    if (strcmp(section, "blockConditions") == 0) {
        return ngx_http_apim_block_add(b->snap, jv, b->log);
    }

    if (strcmp(section, "policies") == 0) {
        if (ngx_http_apim_burst_add(b->snap, jv, b->log) != NGX_OK) {
            return NGX_ERROR;
        }
        return ngx_http_apim_throttle_policy(b->snap, jv, b->log);
    }

    return NGX_OK;
}


/* -- keys ---------------------------------------------------------------- */



/* the keys of the keyManagers section */
static ngx_int_t
ngx_http_apim_add_jwks(ngx_http_apim_build_t *b, json_t *kms)
{
    size_t                 i, j, n;
    json_t                *jk, *km;
    const char            *kid;
    ngx_http_apim_jwk_t   *jwk;
    ngx_http_apim_snap_t  *s;

    s = b->snap;

    n = 0;
    json_array_foreach(kms, i, km) {
        n += json_array_size(json_object_get(json_object_get(km, "jwks"),
                                             "keys"));
    }

    s->pkeys = ngx_http_apim_alloc(s, (n + 1) * sizeof(ngx_http_apim_jwk_t *));
    if (s->pkeys == NULL) {
        return NGX_ERROR;
    }

    json_array_foreach(kms, i, km) {
        json_array_foreach(json_object_get(json_object_get(km, "jwks"),
                                           "keys"), j, jk)
        {
            kid = ngx_http_apim_jstr(jk, "kid");
            if (kid == NULL || s->npkeys >= n) {
                continue;
            }
            jwk = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_jwk_t));
            if (jwk == NULL) {
                return NGX_ERROR;
            }
            jwk->pkey = ngx_http_apim_jwk_pkey(jk);
            if (jwk->pkey == NULL) {
                ngx_log_error(NGX_LOG_WARN, b->log, 0,
                              "apim: unusable JWK \"%s\" ignored", kid);
                continue;
            }
            jwk->issuer = ngx_http_apim_copy(b, km, "issuer", 1);
            s->pkeys[s->npkeys++] = jwk;
            kid = ngx_http_apim_copy(b, jk, "kid", 0);
            if (kid == NULL
                || ngx_http_apim_map_put(&s->jwks, kid, strlen(kid), jwk, 0)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


/* -- full snapshots ------------------------------------------------------ */

static ngx_http_apim_snap_t *
ngx_http_apim_snap_new(ngx_http_apim_build_t *b, ngx_log_t *log)
{
    ngx_http_apim_snap_t  *s;

    ngx_memzero(b, sizeof(ngx_http_apim_build_t));
    b->log = log;

    s = calloc(1, sizeof(ngx_http_apim_snap_t));
    if (s == NULL) {
        return NULL;
    }

    s->arenas = malloc(sizeof(ngx_http_apim_arena_t *));
    s->arena = ngx_http_apim_arena_new(APIM_ARENA_FIRST);

    if (s->arenas == NULL || s->arena == NULL) {
        free(s->arenas);
        free(s->arena);
        free(s);
        return NULL;
    }

    s->arenas[0] = s->arena;
    s->narenas = 1;
    s->gen = __atomic_add_fetch(&ngx_http_apim_snap_gen, 1, __ATOMIC_RELAXED);
    b->snap = s;

    return s;
}


static void
ngx_http_apim_build_done(ngx_http_apim_build_t *b)
{
    ngx_http_apim_map_free(&b->intern);
    json_decref(b->pending);
    json_decref(b->km);
    b->pending = NULL;
    b->km = NULL;
}


/* the common end of a full build: late key mappings, keys, hooks */
static ngx_http_apim_snap_t *
ngx_http_apim_snap_finish(ngx_http_apim_build_t *b, const char *path)
{
    size_t                 i;
    json_t                *jv, *root;
    ngx_http_apim_snap_t  *s;

    s = b->snap;

    json_array_foreach(b->pending, i, jv) {
        if (ngx_http_apim_add_keymap(b, jv) == NGX_ERROR) {
            goto failed;
        }
        /* NGX_DECLINED: a key of an application we do not know */
    }

    /*
     * What the hooks of the whole snapshot may read while it is built
     * (root: "seq", "keyManagers"): such hooks go after the keys below.
     * A delta does not call them: it shares what they made (fields of the
     * snapshot struct are copied as they are); a change of key managers
     * makes the control plane answer "full", hence a new full build.
     */
    root = json_pack("{sI so}", "seq", (json_int_t) s->seq, "keyManagers",
                     b->km ? json_incref(b->km) : json_array());
    if (root == NULL) {
        goto failed;
    }

    s->root = root;

    if (ngx_http_apim_add_jwks(b, json_object_get(root, "keyManagers"))
        != NGX_OK)
    {
        goto failed;
    }

    /* other issuers (ngx_http_apim_jwks.c) */
    s->issuers = ngx_http_apim_issuers_build(s, json_object_get(root,
                                                                "keyManagers"),
                                             b->log);

    s->root = NULL;
    json_decref(root);
    ngx_http_apim_build_done(b);

    /* the parser's memory goes back to the system */
    malloc_trim(0);

    return s;

failed:

    ngx_log_error(NGX_LOG_ERR, b->log, 0, "apim: out of memory loading \"%s\"",
                  path);
    json_decref(s->root);
    s->root = NULL;
    ngx_http_apim_build_done(b);
    ngx_http_apim_snap_free(s);

    return NULL;
}


/* builds a snapshot from a parsed document; takes the reference to root */
ngx_http_apim_snap_t *
ngx_http_apim_snap_build(json_t *root, const char *path, ngx_log_t *log)
{
    size_t                  i;
    json_t                 *jv, *v;
    const char             *section;
    ngx_http_apim_snap_t   *s;
    ngx_http_apim_build_t   b;

    s = ngx_http_apim_snap_new(&b, log);
    if (s == NULL) {
        json_decref(root);
        return NULL;
    }

    s->seq = json_integer_value(json_object_get(root, "seq"));

    json_object_foreach(root, section, v) {
        json_array_foreach(v, i, jv) {
            if (ngx_http_apim_add(&b, section, jv) != NGX_OK) {
                json_decref(root);
                ngx_log_error(NGX_LOG_ERR, log, 0,
                              "apim: out of memory loading \"%s\"", path);
                ngx_http_apim_build_done(&b);
                ngx_http_apim_snap_free(s);
                return NULL;
            }
        }
    }

    b.km = json_incref(json_object_get(root, "keyManagers"));
    json_decref(root);

    return ngx_http_apim_snap_finish(&b, path);
}


/*
 * The text to parse: all of it in memory, or a file read through a window
 * that slides (and grows for an entry larger than it), so that a snapshot
 * file never is in memory whole.
 */
#define APIM_WINDOW         (1024 * 1024)
#define APIM_MAX_ENTRY      (64 * 1024 * 1024)

typedef struct {
    int                         fd;         /* -1: the text is in memory */
    char                       *buf;        /* the window (fd != -1) */
    size_t                      cap;
    const char                 *p;
    const char                 *end;
    ngx_uint_t                  eof;
    off_t                       off;        /* of p in the text, for logs */
} ngx_http_apim_reader_t;


/* more text after what the window holds; NGX_DECLINED at the end */
static ngx_int_t
ngx_http_apim_refill(ngx_http_apim_reader_t *r)
{
    char     *nb;
    size_t    keep;
    ssize_t   n;

    if (r->eof) {
        return NGX_DECLINED;
    }

    keep = r->end - r->p;

    if (keep == r->cap) {
        /* one entry fills the window: a larger one */
        if (r->cap >= APIM_MAX_ENTRY) {
            return NGX_ERROR;
        }

        nb = malloc(r->cap * 2);
        if (nb == NULL) {
            return NGX_ERROR;
        }

        memcpy(nb, r->p, keep);
        free(r->buf);
        r->buf = nb;
        r->cap *= 2;

    } else if (keep > 0) {
        memmove(r->buf, r->p, keep);
    }

    r->p = r->buf;
    r->end = r->buf + keep;

    while (r->end < r->buf + r->cap) {
        n = read(r->fd, (char *) r->end, r->buf + r->cap - r->end);
        if (n < 0 && ngx_errno == NGX_EINTR) {
            continue;
        }
        if (n < 0) {
            return NGX_ERROR;
        }
        if (n == 0) {
            r->eof = 1;
            break;
        }
        r->end += n;
    }

    return NGX_OK;
}


/* the next character that is not white space (not consumed), or -1 */
static int
ngx_http_apim_peek(ngx_http_apim_reader_t *r)
{
    for ( ;; ) {
        while (r->p < r->end) {
            if (*r->p != ' ' && *r->p != '\t' && *r->p != '\n'
                && *r->p != '\r')
            {
                return (u_char) *r->p;
            }
            r->p++;
            r->off++;
        }

        if (r->fd == -1 || ngx_http_apim_refill(r) != NGX_OK) {
            return -1;
        }
    }
}


static void
ngx_http_apim_skip(ngx_http_apim_reader_t *r)
{
    r->p++;
    r->off++;
}


/* one JSON value; NULL on bad JSON or at the end */
static json_t *
ngx_http_apim_next(ngx_http_apim_reader_t *r, json_error_t *err)
{
    json_t  *v;

    for ( ;; ) {
        if (ngx_http_apim_peek(r) == -1) {
            return NULL;
        }

        v = json_loadb(r->p, r->end - r->p,
                       JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK, err);

        /* a value that ends with the window may go on after it ("12|3") */
        if (v != NULL && (r->fd == -1 || r->eof
                          || (size_t) err->position < (size_t) (r->end - r->p)))
        {
            r->p += err->position;
            r->off += err->position;
            return v;
        }

        json_decref(v);

        /* an error before the end of the window is not for want of text */
        if (r->fd == -1
            || (v == NULL
                && (size_t) err->position + 1 < (size_t) (r->end - r->p))
            || ngx_http_apim_refill(r) != NGX_OK)
        {
            return NULL;
        }
    }
}


static ngx_http_apim_snap_t *
ngx_http_apim_snap_read(ngx_http_apim_reader_t *r, const char *path,
    ngx_log_t *log)
{
    int                     c;
    json_t                 *key, *v;
    ngx_int_t               rc;
    const char             *what, *section;
    json_error_t            err;
    ngx_http_apim_snap_t   *s;
    ngx_http_apim_build_t   b;

    key = NULL;
    what = "not an object";
    err.text[0] = '\0';

    s = ngx_http_apim_snap_new(&b, log);
    if (s == NULL) {
        return NULL;
    }

    if (ngx_http_apim_peek(r) != '{') {
        goto bad;
    }

    ngx_http_apim_skip(r);

    for ( ;; ) {
        what = "bad JSON";

        if (ngx_http_apim_peek(r) == '}') {
            break;
        }

        key = ngx_http_apim_next(r, &err);
        if (!json_is_string(key)) {
            goto bad;
        }
        section = json_string_value(key);

        if (ngx_http_apim_peek(r) != ':') {
            goto bad;
        }
        ngx_http_apim_skip(r);

        if (ngx_http_apim_peek(r) == '['
            && strcmp(section, "keyManagers") != 0)
        {
            /* a section: one element at a time */
            ngx_http_apim_skip(r);

            if (ngx_http_apim_peek(r) == ']') {
                ngx_http_apim_skip(r);

            } else {
                for ( ;; ) {
                    v = ngx_http_apim_next(r, &err);
                    if (v == NULL) {
                        goto bad;
                    }

                    rc = ngx_http_apim_add(&b, section, v);
                    json_decref(v);

                    if (rc != NGX_OK) {
                        what = "out of memory";
                        goto bad;
                    }

                    c = ngx_http_apim_peek(r);
                    ngx_http_apim_skip(r);

                    if (c == ']') {
                        break;
                    }
                    if (c != ',') {
                        goto bad;
                    }
                }
            }

        } else {
            v = ngx_http_apim_next(r, &err);
            if (v == NULL) {
                goto bad;
            }

            if (strcmp(section, "seq") == 0) {
                s->seq = json_integer_value(v);
                json_decref(v);

            } else if (strcmp(section, "keyManagers") == 0) {
                json_decref(b.km);
                b.km = v;

            } else {
                json_decref(v);
            }
        }

        json_decref(key);
        key = NULL;

        c = ngx_http_apim_peek(r);
        if (c == '}') {
            break;
        }
        if (c != ',') {
            goto bad;
        }
        ngx_http_apim_skip(r);
    }

    return ngx_http_apim_snap_finish(&b, path);

bad:

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "apim: cannot load snapshot \"%s\": %s %s (offset %O)",
                  path, what, err.text, r->off);
    json_decref(key);
    ngx_http_apim_build_done(&b);
    ngx_http_apim_snap_free(s);
    malloc_trim(0);

    return NULL;
}


ngx_http_apim_snap_t *
ngx_http_apim_snap_parse(const char *data, size_t len, const char *path,
    ngx_log_t *log)
{
    ngx_http_apim_reader_t  r;

    ngx_memzero(&r, sizeof(ngx_http_apim_reader_t));
    r.fd = -1;
    r.p = data;
    r.end = data + len;
    r.eof = 1;

    return ngx_http_apim_snap_read(&r, path, log);
}


ngx_http_apim_snap_t *
ngx_http_apim_snap_load_fd(int fd, const char *path, ngx_log_t *log)
{
    ngx_http_apim_snap_t    *s;
    ngx_http_apim_reader_t   r;

    ngx_memzero(&r, sizeof(ngx_http_apim_reader_t));
    r.fd = fd;
    r.cap = APIM_WINDOW;
    r.buf = malloc(r.cap);
    if (r.buf == NULL) {
        return NULL;
    }

    r.p = r.buf;
    r.end = r.buf;

    s = ngx_http_apim_snap_read(&r, path, log);
    free(r.buf);

    malloc_trim(0);

    return s;
}


ngx_http_apim_snap_t *
ngx_http_apim_snap_load(const char *path, ngx_log_t *log)
{
    int                    fd;
    ngx_http_apim_snap_t  *s;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_ERR, log, ngx_errno,
                      "apim: cannot load snapshot \"%s\"", path);
        return NULL;
    }

    s = ngx_http_apim_snap_load_fd(fd, path, log);
    close(fd);

    return s;
}


/* -- deltas -------------------------------------------------------------- */

static ngx_http_apim_snap_t *
ngx_http_apim_snap_clone(ngx_http_apim_snap_t *old)
{
    size_t                 i;
    ngx_http_apim_snap_t  *s;

    s = calloc(1, sizeof(ngx_http_apim_snap_t));
    if (s == NULL) {
        return NULL;
    }

    /* whatever other fields the hooks put here are shared as they are */
    *s = *old;
    s->gen = __atomic_add_fetch(&ngx_http_apim_snap_gen, 1, __ATOMIC_RELAXED);
    s->root = NULL;
    s->retired_next = NULL;
    s->retired_at = 0;
    ngx_memzero(&s->apis, sizeof(ngx_http_apim_map_t));
    ngx_memzero(&s->apps, sizeof(ngx_http_apim_map_t));
    ngx_memzero(&s->keys, sizeof(ngx_http_apim_map_t));
    ngx_memzero(&s->subs, sizeof(ngx_http_apim_map_t));
    ngx_memzero(&s->revoked, sizeof(ngx_http_apim_map_t));
    ngx_memzero(&s->jwks, sizeof(ngx_http_apim_map_t));
    s->npkeys = 0;

    s->arenas = malloc((old->narenas + 1) * sizeof(ngx_http_apim_arena_t *));
    s->arena = ngx_http_apim_arena_new(APIM_DELTA_FIRST);
    if (s->arenas == NULL || s->arena == NULL) {
        free(s->arenas);
        free(s->arena);
        free(s);
        return NULL;
    }

    for (i = 0; i < old->narenas; i++) {
        s->arenas[i] = old->arenas[i];
        s->arenas[i]->refs++;
    }

    s->arenas[i] = s->arena;
    s->narenas = i + 1;

    for (i = 0; i < old->npkeys; i++) {
        EVP_PKEY_up_ref(old->pkeys[i]->pkey);
    }

    s->npkeys = old->npkeys;

    if (ngx_http_apim_map_copy(&s->apis, &old->apis) != NGX_OK
        || ngx_http_apim_map_copy(&s->apps, &old->apps) != NGX_OK
        || ngx_http_apim_map_copy(&s->keys, &old->keys) != NGX_OK
        || ngx_http_apim_map_copy(&s->subs, &old->subs) != NGX_OK
        || ngx_http_apim_map_copy(&s->revoked, &old->revoked) != NGX_OK
        || ngx_http_apim_map_copy(&s->jwks, &old->jwks) != NGX_OK)
    {
        ngx_http_apim_snap_free(s);
        return NULL;
    }

    return s;
}


/* a set of ids of the delta (strings of the JSON, valid while it is) */
static ngx_int_t
ngx_http_apim_id_set(ngx_http_apim_map_t *set, json_t *list, const char *name)
{
    size_t       i;
    json_t      *jv;
    const char  *id;

    json_array_foreach(list, i, jv) {
        id = name ? ngx_http_apim_jstr(jv, name)
                  : (json_is_string(jv) ? json_string_value(jv) : NULL);

        if (id != NULL
            && ngx_http_apim_map_put(set, id, strlen(id), (void *) id, 0)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* removes every key of map whose value's id (at offset 0) is in set */
static ngx_int_t
ngx_http_apim_del_by_id(ngx_http_apim_map_t *m, ngx_http_apim_map_t *set)
{
    size_t                 i, n, *lens;
    const char            *id, **keys;
    ngx_http_apim_slot_t  *sl;

    if (set->n == 0 || m->cap == 0) {
        return NGX_OK;
    }

    keys = malloc(m->n * sizeof(const char *) + 1);
    lens = malloc(m->n * sizeof(size_t) + 1);
    if (keys == NULL || lens == NULL) {
        free(keys);
        free(lens);
        return NGX_ERROR;
    }

    n = 0;

    for (i = 0; i < m->cap; i++) {
        sl = ngx_http_apim_slot(m, i);
        if (sl->key == NULL) {
            continue;
        }

        id = *(const char **) sl->value;

        if (ngx_http_apim_map_get(set, (u_char *) id, strlen(id)) != NULL) {
            keys[n] = sl->key;
            lens[n++] = sl->len;
        }
    }

    for (i = 0; i < n; i++) {
        if (ngx_http_apim_map_del(m, keys[i], lens[i]) != NGX_OK) {
            break;
        }
    }

    free(keys);
    free(lens);

    return i == n ? NGX_OK : NGX_ERROR;
}


/*
 * A delta of /internal/data/v1/changes: the current state of what changed
 * ("apis", "applications", "keyMappings", "subscriptions", "revokedJwts")
 * and what is gone ("deletedApis" and "deletedApplications": ids,
 * "deletedKeyMappings": consumer keys, "deletedSubscriptions":
 * {applicationId, apiId}).
 */
ngx_http_apim_snap_t *
ngx_http_apim_snap_delta(ngx_http_apim_snap_t *old, json_t *delta,
    ngx_log_t *log)
{
    size_t                   i, j, len;
    json_t                  *jv;
    const char              *k, *id;
    ngx_http_apim_map_t      ids;
    ngx_http_apim_app_t     *app;
    ngx_http_apim_snap_t    *s;
    ngx_http_apim_build_t    b;
    ngx_http_apim_slot_t    *sl;
    ngx_http_apim_keymap_t  *map, *fresh;

    static const char  *sections[] = {
        "apis", "applications", "keyMappings", "subscriptions", "revokedJwts",
        NULL
    };

    ngx_memzero(&b, sizeof(ngx_http_apim_build_t));
    ngx_memzero(&ids, sizeof(ngx_http_apim_map_t));

    s = ngx_http_apim_snap_clone(old);
    if (s == NULL) {
        goto nomem;
    }

    b.snap = s;
    b.log = log;
    b.replace = 1;

    s->seq = json_integer_value(json_object_get(delta, "seq"));
    s->deltas = old->deltas + 1;

    /* APIs: out go every key of a changed or deleted one, in the new ones */
    if (ngx_http_apim_id_set(&ids, json_object_get(delta, "deletedApis"), NULL)
        != NGX_OK
        || ngx_http_apim_id_set(&ids, json_object_get(delta, "apis"), "id")
           != NGX_OK
        || ngx_http_apim_del_by_id(&s->apis, &ids) != NGX_OK)
    {
        goto nomem;
    }

    ngx_http_apim_map_free(&ids);
    ngx_memzero(&ids, sizeof(ngx_http_apim_map_t));

    /* applications: deleted ones with their keys */
    json_array_foreach(json_object_get(delta, "deletedApplications"), i, jv) {
        if (json_is_string(jv)
            && ngx_http_apim_map_del(&s->apps, json_string_value(jv),
                                     json_string_length(jv)) != NGX_OK)
        {
            goto nomem;
        }
    }

    if (ngx_http_apim_id_set(&ids, json_object_get(delta,
                                                   "deletedApplications"),
                             NULL) != NGX_OK)
    {
        goto nomem;
    }

    /* key mappings point at app structs: first the deleted ones ... */
    if (ids.n > 0) {
        for (i = 0; i < s->keys.cap; i++) {
            sl = ngx_http_apim_slot(&s->keys, i);
            map = sl->value;
            if (sl->key == NULL
                || ngx_http_apim_map_get(&ids, (u_char *) map->app->id,
                                         strlen(map->app->id)) == NULL)
            {
                continue;
            }
            if (ngx_http_apim_map_del(&s->keys, sl->key, sl->len) != NGX_OK) {
                goto nomem;
            }
            i--;    /* another entry may have moved here */
        }
    }

    json_array_foreach(json_object_get(delta, "deletedKeyMappings"), i, jv) {
        if (json_is_string(jv)
            && ngx_http_apim_map_del(&s->keys, json_string_value(jv),
                                     json_string_length(jv)) != NGX_OK)
        {
            goto nomem;
        }
    }

    json_array_foreach(json_object_get(delta, "deletedSubscriptions"), i, jv) {
        k = ngx_http_apim_sub_key(&b, jv, &len);
        if (k != NULL && ngx_http_apim_map_del(&s->subs, k, len) != NGX_OK) {
            goto nomem;
        }
    }

    for (j = 0; sections[j]; j++) {
        json_array_foreach(json_object_get(delta, sections[j]), i, jv) {
            if (ngx_http_apim_add(&b, sections[j], jv) != NGX_OK) {
                goto nomem;
            }
        }
    }

    /* ... then those of changed applications point at the new structs */
    ngx_http_apim_map_free(&ids);
    ngx_memzero(&ids, sizeof(ngx_http_apim_map_t));

    if (ngx_http_apim_id_set(&ids, json_object_get(delta, "applications"),
                             "id") != NGX_OK)
    {
        goto nomem;
    }

    if (ids.n > 0) {
        for (i = 0; i < s->keys.cap; i++) {
            sl = ngx_http_apim_slot(&s->keys, i);
            map = sl->value;
            if (sl->key == NULL) {
                continue;
            }

            id = map->app->id;
            app = ngx_http_apim_map_get(&s->apps, (u_char *) id, strlen(id));

            if (app == NULL || app == map->app) {
                continue;
            }

            fresh = ngx_http_apim_alloc(s, sizeof(ngx_http_apim_keymap_t));
            if (fresh == NULL) {
                goto nomem;
            }

            fresh->app = app;
            fresh->sandbox = map->sandbox;

            sl = ngx_http_apim_slot_w(&s->keys, i);
            if (sl == NULL) {
                goto nomem;
            }
            sl->value = fresh;
        }
    }

    /* key mappings of applications this delta does not have: dropped */
    json_array_foreach(b.pending, i, jv) {
        k = ngx_http_apim_jstr(jv, "consumerKey");
        if (k != NULL
            && ngx_http_apim_map_del(&s->keys, k, strlen(k)) != NGX_OK)
        {
            goto nomem;
        }
    }

    ngx_http_apim_map_free(&ids);
    ngx_http_apim_build_done(&b);

    return s;

nomem:

    ngx_log_error(NGX_LOG_ERR, log, 0, "apim: out of memory applying a delta");
    ngx_http_apim_map_free(&ids);
    ngx_http_apim_build_done(&b);
    ngx_http_apim_snap_free(s);

    return NULL;
}


void
ngx_http_apim_snap_free(ngx_http_apim_snap_t *s)
{
    size_t  i;

    if (s == NULL) {
        return;
    }

    /* each snapshot holds a reference on each key (EVP_PKEY_up_ref) */
    for (i = 0; i < s->npkeys; i++) {
        EVP_PKEY_free(s->pkeys[i]->pkey);
    }

    ngx_http_apim_map_free(&s->apis);
    ngx_http_apim_map_free(&s->apps);
    ngx_http_apim_map_free(&s->keys);
    ngx_http_apim_map_free(&s->subs);
    ngx_http_apim_map_free(&s->revoked);
    ngx_http_apim_map_free(&s->jwks);

    for (i = 0; i < s->narenas; i++) {
        ngx_http_apim_arena_unref(s->arenas[i]);
    }

    free(s->arenas);
    json_decref(s->root);
    free(s);
}
