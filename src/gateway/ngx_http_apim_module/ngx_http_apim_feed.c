/*
 * ngx_http_apim_feed.c: the per-worker background thread that keeps the
 * gateway data current (snapshot file, or the control plane, its cache file
 * and NATS) and publishes it to the request path.
 */

#include "ngx_http_apim_module.h"

#include <malloc.h>


/* per worker state; the snapshot pointer is the only thing both threads use */
ngx_http_apim_snap_t          *ngx_http_apim_current;
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


/* CPU time of the calling thread */
static ngx_msec_t
ngx_http_apim_cpu_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);

    return (ngx_msec_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


ngx_msec_t
ngx_http_apim_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (ngx_msec_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


static void
ngx_http_apim_reap(ngx_uint_t all)
{
    ngx_uint_t             freed;
    ngx_msec_t             now;
    ngx_http_apim_snap_t  *s, **pp;

    now = ngx_http_apim_now_ms();
    pp = &ngx_http_apim_retired;
    freed = 0;

    while (*pp) {
        s = *pp;
        if (all || now - s->retired_at >= APIM_GRACE_MS) {
            *pp = s->retired_next;
            ngx_http_apim_snap_free(s);
            freed = 1;
            continue;
        }
        pp = &s->retired_next;
    }

    if (freed) {
        /* a full snapshot's worth may have gone: give it back */
        malloc_trim(0);
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
 * Feed mode (apim_control_plane_url set). The thread loads the cache file
 * (and the deltas journaled after it), then fetches
 * /internal/data/v1/snapshot?gatewayLabel= with libcurl and swaps it in,
 * writing the body to the cache file (temp + rename, so the workers sharing
 * the file never read half of one). It follows changes two ways: NATS
 * (subject apim.>; libnats calls back on its own thread, which only raises
 * ngx_http_apim_wanted to the highest seq seen and wakes us) and a poll of
 * /internal/data/v1/sequence every APIM_SEQ_POLL_MS, which works with NATS
 * down. Whenever wanted > the current snapshot's seq, the thread fetches
 * /internal/data/v1/changes?since=<current seq>: what changed since, applied
 * on top of the current snapshot (ngx_http_apim_snap_delta), and appended to
 * the cache's journal (<cache>.delta). A lost NATS message is a gap that the
 * next event or heartbeat reveals (its seq > ours), and the delta since our
 * seq covers it. Fetches run one at a time on this thread, so a burst of
 * events is coalesced into one or two fetches.
 *
 * A full snapshot instead: at start, when the control plane answers again
 * after an outage, when it has no delta for us ("full": log purged, gap too
 * large, a change a delta does not carry), every APIM_MAX_DELTAS deltas (to
 * drop what replaced entries leave in the arenas), and when the control
 * plane's sequence went backwards (its database was restored: seen by the
 * sequence poll, a delta, or an event with a lower seq, which asks for an
 * immediate poll).
 *
 * Logging: only this thread logs (never the NATS callback), with
 * ngx_log_error on the cycle log, which formats into a stack buffer and
 * writes with write(2) -- what nginx's own thread pools do.
 */

#define APIM_SEQ_POLL_MS    2000
/* apim_event_hub_url: at most this many servers, this long in all */
#define APIM_NATS_MAX_SERVERS  16
#define APIM_NATS_MAX_URLS_LEN 4096
#define APIM_RETRY_MS       1000
#define APIM_MAX_BODY       (512 * 1024 * 1024)
#define APIM_MAX_DELTAS     64
#define APIM_MAX_JOURNAL    (64 * 1024 * 1024)


/* a response body: in memory, or (to_file) written to fd as it comes */
typedef struct {
    char                       *data;
    size_t                      len;
    size_t                      cap;
    ngx_uint_t                  to_file;
    int                         fd;
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
static ngx_uint_t              ngx_http_apim_need_full;  /* feed thread */
static int64_t                 ngx_http_apim_have;       /* atomic: our seq */


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
    __atomic_store_n(&ngx_http_apim_have, fresh->seq, __ATOMIC_RELEASE);

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
    int64_t        seq;
    json_error_t   err;

    (void) nc;
    (void) sub;
    (void) closure;

    doc = json_loadb(natsMsg_GetData(msg), natsMsg_GetDataLength(msg), 0,
                     &err);
    if (doc != NULL) {
        seq = json_integer_value(json_object_get(doc, "seq"));

        if (json_is_integer(json_object_get(doc, "seq"))) {
            if (seq < __atomic_load_n(&ngx_http_apim_have, __ATOMIC_ACQUIRE)) {
                /* behind us: a lagging node, or a restored database */
                __atomic_store_n(&ngx_http_apim_poll_now, 1,
                                 __ATOMIC_RELEASE);
                ngx_http_apim_wakeup();

            } else {
                ngx_http_apim_want(seq);
            }
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
    ssize_t               w;
    ngx_http_apim_buf_t  *b;

    b = arg;
    n = size * nmemb;

    if (b->to_file) {
        if (b->len + n > APIM_MAX_BODY) {
            return 0;
        }

        for (cap = 0; cap < n; cap += w) {
            w = write(b->fd, ptr + cap, n - cap);
            if (w <= 0) {
                return 0;
            }
        }

        b->len += n;

        return n;
    }

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

    ngx_http_apim_metrics_gauge(APIM_GAUGE_SYNCED, (int64_t) time(NULL));

    if (ngx_http_apim_cp_down) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "apim: control plane \"%s\" answers again; full "
                      "resync", ngx_http_apim_cp_url);
        ngx_http_apim_cp_down = 0;
        /* what happened meanwhile may be more than a delta shows */
        ngx_http_apim_need_full = 1;
    }

    free(url);

    return NGX_OK;
}


/* a temporary file next to the cache for a snapshot to come, or -1 */
static int
ngx_http_apim_cache_open(char **tmp, ngx_log_t *log)
{
    int     fd;
    size_t  n;

    *tmp = NULL;

    if (ngx_http_apim_cache == NULL) {
        return -1;
    }

    n = strlen(ngx_http_apim_cache) + 32;
    *tmp = malloc(n);
    if (*tmp == NULL) {
        return -1;
    }

    snprintf(*tmp, n, "%s.%d.tmp", ngx_http_apim_cache, (int) getpid());

    fd = open(*tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "apim: cannot write cache \"%s\"", *tmp);
        free(*tmp);
        *tmp = NULL;
    }

    return fd;
}


/* the temporary file becomes the cache (ok), or goes; closes fd */
static void
ngx_http_apim_cache_close(int fd, char *tmp, ngx_uint_t ok, ngx_log_t *log)
{
    size_t  n;

    if (fd == -1) {
        return;
    }

    (void) fchmod(fd, 0644);

    if (close(fd) != 0 || !ok || rename(tmp, ngx_http_apim_cache) != 0) {
        if (ok) {
            ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                          "apim: cannot replace cache \"%s\"",
                          ngx_http_apim_cache);
        }
        unlink(tmp);

    } else {
        /* the deltas before this snapshot are in it */
        n = strlen(tmp) + 1;
        snprintf(tmp, n, "%s.delta", ngx_http_apim_cache);
        (void) unlink(tmp);
    }

    free(tmp);
}


/* appends one delta (a line of JSON) to the cache's journal */
static void
ngx_http_apim_journal(const char *data, size_t len, ngx_log_t *log)
{
    int      fd;
    char    *path, *line;
    size_t   n;
    off_t    size;

    if (ngx_http_apim_cache == NULL) {
        return;
    }

    n = strlen(ngx_http_apim_cache) + 8;
    path = malloc(n);
    line = malloc(len + 1);
    if (path == NULL || line == NULL) {
        free(path);
        free(line);
        return;
    }

    snprintf(path, n, "%s.delta", ngx_http_apim_cache);

    /* one write of the whole line: O_APPEND keeps workers' lines whole */
    ngx_memcpy(line, data, len);
    line[len] = '\n';

    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "apim: cannot write journal \"%s\"", path);
        goto done;
    }

    size = lseek(fd, 0, SEEK_END);

    if (size >= 0 && size + (off_t) len < APIM_MAX_JOURNAL
        && write(fd, line, len + 1) != (ssize_t) (len + 1))
    {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "apim: cannot write journal \"%s\"", path);
    }

    close(fd);

done:

    free(path);
    free(line);
}


/* the cache's journal on top of s (just loaded from the cache) */
static ngx_http_apim_snap_t *
ngx_http_apim_replay(ngx_http_apim_snap_t *s, ngx_log_t *log)
{
    FILE                  *f;
    char                  *path, *line;
    size_t                 n, cap;
    json_t                *doc;
    ssize_t                len;
    ngx_uint_t             applied;
    json_error_t           err;
    ngx_http_apim_snap_t  *fresh;

    n = strlen(ngx_http_apim_cache) + 8;
    path = malloc(n);
    if (path == NULL) {
        return s;
    }

    snprintf(path, n, "%s.delta", ngx_http_apim_cache);

    f = fopen(path, "re");
    free(path);
    if (f == NULL) {
        return s;
    }

    line = NULL;
    cap = 0;
    applied = 0;

    while ((len = getline(&line, &cap, f)) > 0) {
        doc = json_loadb(line, len, 0, &err);

        /* any delta that starts at or before our seq and ends after it */
        if (doc != NULL
            && json_integer_value(json_object_get(doc, "since")) <= s->seq
            && json_integer_value(json_object_get(doc, "seq")) > s->seq)
        {
            fresh = ngx_http_apim_snap_delta(s, doc, log);
            if (fresh != NULL) {
                ngx_http_apim_snap_free(s);
                s = fresh;
                applied++;
            }
        }

        json_decref(doc);
    }

    free(line);
    fclose(f);

    if (applied) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "apim: %ui journaled deltas applied to the cache, "
                      "seq %L", applied, s->seq);
    }

    return s;
}


static ngx_int_t
ngx_http_apim_fetch(CURL *curl, ngx_log_t *log)
{
    char                  *path, *esc, *tmp;
    size_t                 n;
    ngx_int_t              rc;
    ngx_msec_t             t0, t1, t2, cpu;
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

    /* with a cache file, the body goes there and is parsed from there: it
     * never is in memory whole */
    b.fd = ngx_http_apim_cache_open(&tmp, log);
    b.to_file = b.fd != -1;

    rc = ngx_http_apim_get(curl, path, &b, log);
    free(path);
    t1 = ngx_http_apim_now_ms();
    cpu = ngx_http_apim_cpu_ms();

    fresh = NULL;

    if (rc == NGX_OK) {
        if (b.to_file) {
            fresh = lseek(b.fd, 0, SEEK_SET) == 0
                    ? ngx_http_apim_snap_load_fd(b.fd, ngx_http_apim_cp_url,
                                                 log)
                    : NULL;

        } else {
            fresh = ngx_http_apim_snap_parse(b.data, b.len,
                                             ngx_http_apim_cp_url, log);
        }
    }

    free(b.data);

    if (fresh == NULL) {
        ngx_http_apim_cache_close(b.fd, tmp, 0, log);
        return NGX_ERROR;
    }

    if (fresh->seq < ngx_http_apim_current_seq()) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "apim: the control plane's sequence went back from "
                      "%L to %L (database restored?): serving its data",
                      ngx_http_apim_current_seq(), fresh->seq);
    }

    /* what we waited for may be from before a restore */
    __atomic_store_n(&ngx_http_apim_wanted, fresh->seq, __ATOMIC_RELEASE);
    ngx_http_apim_need_full = 0;

    ngx_http_apim_publish(fresh);
    ngx_http_apim_metrics_add(APIM_METRIC_FULL_SYNCS, 1);
    t2 = ngx_http_apim_now_ms();
    cpu = ngx_http_apim_cpu_ms() - cpu;
    ngx_http_apim_cache_close(b.fd, tmp, 1, log);
    malloc_trim(0);

    ngx_log_error(NGX_LOG_NOTICE, log, 0,
                  "apim: snapshot seq %L (%uz API routes, %uz subscriptions, %uz "
                  "bytes, %uz kB held) from the control plane: fetch %M ms, "
                  "parse+swap %M ms (%M ms of CPU), cache %M ms",
                  fresh->seq, fresh->apis.n, fresh->subs.n, b.len,
                  ngx_http_apim_snap_bytes(fresh) / 1024,
                  t1 - t0, t2 - t1, cpu, ngx_http_apim_now_ms() - t2);

    return NGX_OK;
}


/*
 * GET /changes?since=<our seq>: NGX_OK (applied, or nothing new),
 * NGX_DECLINED (a full snapshot is needed), NGX_ERROR (try again later).
 */
static ngx_int_t
ngx_http_apim_fetch_delta(CURL *curl, ngx_log_t *log)
{
    char                  *path, *esc;
    size_t                 n;
    json_t                *doc;
    int64_t                cur, seq;
    ngx_int_t              rc;
    json_error_t           err;
    ngx_msec_t             t0, t1, t2;
    ngx_http_apim_buf_t    b;
    ngx_http_apim_snap_t  *fresh, *now;

    now = __atomic_load_n(&ngx_http_apim_current, __ATOMIC_ACQUIRE);
    cur = now->seq;

    esc = curl_easy_escape(curl, ngx_http_apim_label, 0);
    if (esc == NULL) {
        return NGX_ERROR;
    }

    n = strlen(esc) + 96;
    path = malloc(n);
    if (path == NULL) {
        curl_free(esc);
        return NGX_ERROR;
    }

    snprintf(path, n, "/internal/data/v1/changes?since=%lld&gatewayLabel=%s",
             (long long) cur, esc);
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

    doc = json_loadb(b.data, b.len, 0, &err);
    if (!json_is_object(doc)
        || !json_is_integer(json_object_get(doc, "seq")))
    {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "apim: bad delta from the control plane: %s",
                      doc ? "not an object with a seq" : err.text);
        json_decref(doc);
        free(b.data);
        return NGX_ERROR;
    }

    seq = json_integer_value(json_object_get(doc, "seq"));
    rc = NGX_OK;

    if (seq < cur) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "apim: the control plane's sequence went back from "
                      "%L to %L (database restored?): full resync", cur, seq);
        rc = NGX_DECLINED;

    } else if (json_is_true(json_object_get(doc, "full"))) {
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "apim: no delta from seq %L to %L (%s): full resync",
                      cur, seq, ngx_http_apim_jstr(doc, "reason")
                                ? ngx_http_apim_jstr(doc, "reason") : "-");
        rc = NGX_DECLINED;

    } else if (seq > cur) {
        fresh = ngx_http_apim_snap_delta(now, doc, log);
        if (fresh == NULL) {
            rc = NGX_DECLINED;

        } else {
            ngx_http_apim_publish(fresh);
            ngx_http_apim_metrics_add(APIM_METRIC_DELTAS, 1);
            t2 = ngx_http_apim_now_ms();
            ngx_http_apim_journal(b.data, b.len, log);

            ngx_log_error(NGX_LOG_NOTICE, log, 0,
                          "apim: delta seq %L..%L applied (%uz bytes): fetch "
                          "%M ms, apply+swap %M ms",
                          cur, seq, b.len, t1 - t0, t2 - t1);
        }
    }

    json_decref(doc);
    free(b.data);

    return rc;
}


static void
ngx_http_apim_poll_seq(CURL *curl, ngx_log_t *log)
{
    json_t               *doc;
    int64_t               seq, cur;
    json_error_t          err;
    ngx_http_apim_buf_t   b;

    ngx_memzero(&b, sizeof(b));

    if (ngx_http_apim_get(curl, "/internal/data/v1/sequence", &b, log)
        == NGX_OK)
    {
        doc = json_loadb(b.data, b.len, 0, &err);
        if (doc != NULL && json_is_integer(json_object_get(doc, "seq"))) {
            seq = json_integer_value(json_object_get(doc, "seq"));
            cur = ngx_http_apim_current_seq();

            if (seq < cur) {
                ngx_log_error(NGX_LOG_WARN, log, 0,
                              "apim: the control plane's sequence went back "
                              "from %L to %L (database restored?): full "
                              "resync", cur, seq);
                ngx_http_apim_need_full = 1;
                __atomic_store_n(&ngx_http_apim_wanted, seq,
                                 __ATOMIC_RELEASE);

            } else {
                ngx_http_apim_want(seq);
            }
        }
        json_decref(doc);
    }

    free(b.data);
}


/*
 * Splits urls at commas (blanks around them ignored) into at most
 * APIM_NATS_MAX_SERVERS servers for natsOptions_SetServers; libnats tries
 * them in random order and reconnects to the others when one goes away.
 */
natsStatus
ngx_http_apim_nats_servers(natsOptions *opts, const char *urls)
{
    int          n;
    char        *copy, *p, *q, *end;
    const char  *servers[APIM_NATS_MAX_SERVERS];
    natsStatus   st;

    if (urls == NULL || strlen(urls) > APIM_NATS_MAX_URLS_LEN) {
        return NATS_INVALID_ARG;
    }

    copy = strdup(urls);
    if (copy == NULL) {
        return NATS_NO_MEMORY;
    }

    n = 0;
    p = copy;

    while (p != NULL && n < APIM_NATS_MAX_SERVERS) {
        q = strchr(p, ',');
        if (q != NULL) {
            *q++ = '\0';
        }

        while (*p == ' ' || *p == '\t') {
            p++;
        }

        end = p + strlen(p);
        while (end > p && (end[-1] == ' ' || end[-1] == '\t')) {
            *--end = '\0';
        }

        if (*p != '\0') {
            servers[n++] = p;
        }

        p = q;
    }

    st = n > 0 ? natsOptions_SetServers(opts, servers, n) : NATS_INVALID_ARG;

    free(copy);

    return st;
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

    st = ngx_http_apim_nats_servers(opts, ngx_http_apim_hub_url);
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
    ngx_int_t              rc;
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
            fresh = ngx_http_apim_replay(fresh, log);
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
            && (initial || ngx_http_apim_need_full || wanted > cur))
        {
            if (initial || ngx_http_apim_need_full || cur < 0
                || ngx_http_apim_current->deltas >= APIM_MAX_DELTAS)
            {
                rc = ngx_http_apim_fetch(curl, log);

            } else {
                rc = ngx_http_apim_fetch_delta(curl, log);
                if (rc == NGX_DECLINED) {
                    ngx_http_apim_need_full = 1;
                    next_fetch = now;
                    continue;
                }
            }

            if (rc == NGX_OK) {
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

        if (ngx_http_apim_hub_url != NULL) {
            ngx_http_apim_metrics_gauge(APIM_GAUGE_EVENT_HUB, nc != NULL
                && natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED);
        }

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
    ngx_http_apim_have = -1;
    ngx_http_apim_need_full = 0;
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


ngx_int_t
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


void
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
