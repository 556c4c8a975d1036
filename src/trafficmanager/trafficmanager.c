/*
 * trafficmanager.c: the Traffic Manager daemon (see trafficmanager.h).
 *
 * Threads: the NATS library's delivery threads run the message callbacks,
 * which update the quota state under tm.lock; the Traffic Manager's own
 * thread fetches policies and, every TM_TICK_MS, allocates, publishes the
 * decisions (when leader) and its heartbeat. Nothing here blocks a
 * callback for long: the allocation of one tick is a walk over the keys
 * of the current windows.
 */
#include "trafficmanager/trafficmanager.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <nats/nats.h>

#include "common/log.h"
#include "common/util.h"
#include "events/events.h"
#include "trafficmanager/tm_policy.h"
#include "trafficmanager/tm_quota.h"

#define TM_COMP "traffic-manager"
#define TM_TICK_MS 100
#define TM_BEAT_MS 200
#define TM_PEER_TTL_MS 1000
#define TM_POLICY_REFRESH_MS 60000
#define TM_MAX_PEERS 16
#define TM_MAX_BODY (8 * 1024 * 1024)
#define TM_MAX_USAGE (4 * 1024 * 1024)

typedef struct {
	char id[128];
	int64_t started;
	int64_t last_seen;
} tm_peer;

static struct {
	char *hub_url, *cp_url, *credential, *ca_file;
	char id[128];
	int64_t started;
	pthread_t thread;
	int running;
	atomic_int stop;
	atomic_int policies_stale; /* an apim.notify.policy event came */
	atomic_int connected;      /* to the event hub, for /health/ready */
	atomic_int leading;        /* at the last tick */
	atomic_uint_fast64_t decisions_sent, grants_sent, throttled_sent;

	pthread_mutex_t lock; /* everything below */
	tm_quota *quota;
	tm_policies *policies;
	tm_peer peers[TM_MAX_PEERS];
	json_t *grants;    /* this tick's allowances (array) */
	json_t *throttled; /* keys that ran out this tick (array) */
	uint64_t usage_msgs, usage_entries, usage_rejected;
	int64_t usage_dropped; /* by the NATS library: we were too slow */
} tm = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int tm_sleep(int64_t ms)
{
	while (ms > 0 && !atomic_load(&tm.stop)) {
		int64_t step = ms < 20 ? ms : 20;
		struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)step * 1000000L};
		nanosleep(&ts, NULL);
		ms -= step;
	}
	return atomic_load(&tm.stop);
}

/* -- policies ----------------------------------------------------------- */

typedef struct {
	char *data;
	size_t len;
} tm_buf;

static size_t tm_curl_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
	tm_buf *b = arg;
	size_t n = size * nmemb;
	if (b->len + n > TM_MAX_BODY)
		return 0; /* too large: the transfer fails */
	char *d = realloc(b->data, b->len + n + 1);
	if (d == NULL)
		return 0;
	memcpy(d + b->len, ptr, n);
	b->data = d;
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

/* Fetches the policies; swaps them in on success. */
static apim_rc tm_fetch_policies(void)
{
	char url[2048], hdr[1024];
	snprintf(url, sizeof(url), "%s/internal/data/v1/throttling-policies", tm.cp_url);
	snprintf(hdr, sizeof(hdr), "X-APIM-Gateway-Credential: %s", tm.credential);
	CURL *c = curl_easy_init();
	if (c == NULL)
		return APIM_ENOMEM;
	tm_buf b = {0};
	struct curl_slist *h = curl_slist_append(NULL, hdr);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tm_curl_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	if (tm.ca_file != NULL)
		curl_easy_setopt(c, CURLOPT_CAINFO, tm.ca_file);
	CURLcode cc = curl_easy_perform(c);
	long status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	apim_rc rc = APIM_EUNAVAIL;
	if (cc != CURLE_OK || status != 200) {
		log_warn(TM_COMP, "cannot fetch the rate-limit policies from %s: %s (HTTP %ld)",
			 url, cc != CURLE_OK ? curl_easy_strerror(cc) : "refused", status);
		goto out;
	}
	json_t *root = json_loadb(b.data, b.len, 0, NULL);
	json_t *list = json_object_get(root, "list");
	tm_policies *t = NULL;
	size_t skipped = 0;
	rc = tm_policies_build(json_is_array(list) ? list : root, &t, &skipped);
	json_decref(root);
	if (rc != APIM_OK) {
		log_warn(TM_COMP, "the rate-limit policies from %s are not a list", url);
		goto out;
	}
	pthread_mutex_lock(&tm.lock);
	tm_policies *old = tm.policies;
	tm.policies = t;
	pthread_mutex_unlock(&tm.lock);
	tm_policies_free(old);
	log_info(TM_COMP, "%zu rate-limit policies (%zu unlimited or unreadable)",
		 tm_policies_count(t), skipped);
out:
	free(b.data);
	return rc;
}

/* -- messages from the gateways and the other Traffic Managers ----------- */

/*
 * apim.throttle.usage: {"gatewayId", "pid", ..., "quota": [{"key", "level",
 * "policy", "group", "windowStart", "count", "allowance", "denied"}]} (the
 * "entries" of the same message are for analytics). The party is
 * "<gatewayId>/<pid>". Quota entries whose policy is unknown here, or whose
 * window does not match the policy's, are ignored.
 */
static void tm_on_usage(json_t *msg, int64_t now)
{
	const char *gw = json_string_value(json_object_get(msg, "gatewayId"));
	json_t *pid = json_object_get(msg, "pid");
	json_t *entries = json_object_get(msg, "quota");
	char party[300];
	if (gw == NULL || strlen(gw) > 255 || !json_is_integer(pid)) {
		tm.usage_rejected++;
		return;
	}
	snprintf(party, sizeof(party), "%s/%lld", gw, (long long)json_integer_value(pid));
	tm.usage_msgs++;
	if (tm_quota_party_seen(tm.quota, party, now) != APIM_OK) {
		tm.usage_rejected++;
		return;
	}
	size_t i;
	json_t *e;
	json_array_foreach(entries, i, e)
	{
		const char *key = json_string_value(json_object_get(e, "key"));
		const char *level = json_string_value(json_object_get(e, "level"));
		const char *policy = json_string_value(json_object_get(e, "policy"));
		json_t *jg = json_object_get(e, "group");
		int group = json_is_integer(jg) ? (int)json_integer_value(jg) : -1;
		tm_limit lim;
		if (key == NULL || !tm_policies_find(tm.policies, level, policy, group, &lim)) {
			tm.usage_rejected++;
			continue;
		}
		int64_t ws = json_integer_value(json_object_get(e, "windowStart"));
		int64_t count = json_integer_value(json_object_get(e, "count"));
		int64_t allowance = json_integer_value(json_object_get(e, "allowance"));
		int64_t denied = json_integer_value(json_object_get(e, "denied"));
		if (tm_quota_report_demand(tm.quota, party, key, lim.amount, lim.window_ms, ws,
					   count, denied, allowance, now) != APIM_OK) {
			tm.usage_rejected++;
			continue;
		}
		tm.usage_entries++;
	}
}

/* apim.throttle.tm: another Traffic Manager's heartbeat */
static void tm_on_peer(json_t *msg, int64_t now)
{
	const char *id = json_string_value(json_object_get(msg, "tm"));
	int64_t started = json_integer_value(json_object_get(msg, "started"));
	if (id == NULL || strcmp(id, tm.id) == 0)
		return;
	tm_peer *free_slot = NULL;
	for (size_t i = 0; i < TM_MAX_PEERS; i++) {
		tm_peer *p = &tm.peers[i];
		if (p->id[0] != '\0' && strcmp(p->id, id) == 0) {
			p->started = started;
			p->last_seen = now;
			return;
		}
		if (free_slot == NULL && (p->id[0] == '\0' || now - p->last_seen > TM_PEER_TTL_MS))
			free_slot = p;
	}
	if (free_slot != NULL) {
		snprintf(free_slot->id, sizeof(free_slot->id), "%s", id);
		free_slot->started = started;
		free_slot->last_seen = now;
	}
}

static void tm_on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
	(void)nc;
	(void)sub;
	const char *what = closure;
	int len = natsMsg_GetDataLength(m);
	if (len > 0 && len <= TM_MAX_USAGE) {
		if (strcmp(what, "policy") == 0) {
			atomic_store(&tm.policies_stale, 1);
		} else {
			json_t *msg = json_loadb(natsMsg_GetData(m), (size_t)len, 0, NULL);
			if (json_is_object(msg)) {
				int64_t now = apim_now_ms();
				pthread_mutex_lock(&tm.lock);
				if (strcmp(what, "usage") == 0)
					tm_on_usage(msg, now);
				else
					tm_on_peer(msg, now);
				pthread_mutex_unlock(&tm.lock);
			}
			json_decref(msg);
		}
	}
	natsMsg_Destroy(m);
}

/* -- allocation, decisions and heartbeats -------------------------------- */

static void tm_collect(const tm_grant *g, void *arg)
{
	(void)arg;
	json_array_append_new(tm.grants,
			      json_pack("{ss ss sI sI sI sI}", "party", g->party, "key", g->key,
					"windowStart", (json_int_t)g->window_start, "windowMs",
					(json_int_t)g->window_ms, "allowance",
					(json_int_t)g->allowance, "limit", (json_int_t)g->limit));
}

static void tm_collect_exhausted(const char *key, int64_t until, void *arg)
{
	(void)arg;
	json_array_append_new(tm.throttled,
			      json_pack("{ss sI}", "key", key, "throttledUntil", (json_int_t)until));
}

/* Whether this Traffic Manager leads: no live peer started before it. */
static int tm_leader(int64_t now)
{
	for (size_t i = 0; i < TM_MAX_PEERS; i++) {
		const tm_peer *p = &tm.peers[i];
		if (p->id[0] == '\0' || now - p->last_seen > TM_PEER_TTL_MS)
			continue;
		if (p->started < tm.started ||
		    (p->started == tm.started && strcmp(p->id, tm.id) < 0))
			return 0;
	}
	return 1;
}

static void tm_publish(natsConnection *nc, const char *subject, json_t *body)
{
	char *text = json_dumps(body, JSON_COMPACT);
	if (text != NULL) {
		natsConnection_PublishString(nc, subject, text);
		free(text);
	}
}

static void tm_tick(natsConnection *nc, int64_t now, int beat)
{
	pthread_mutex_lock(&tm.lock);
	tm.grants = json_array();
	tm.throttled = json_array();
	int leader = tm_leader(now);
	atomic_store(&tm.leading, leader);
	/* Only the leader allocates: grants are recorded as given when they
	 * are computed, so a standby that allocated would count allowances
	 * nobody received and, on taking over, find the quota spent. A
	 * standby learns the allowances the parties hold from their reports. */
	if (leader) {
		tm_quota_allocate(tm.quota, now, tm_collect, NULL);
		tm_quota_exhausted(tm.quota, now, tm_collect_exhausted, NULL);
	}
	size_t parties = tm_quota_live_parties(tm.quota, now);
	json_t *counters = json_pack("{sI sI sI sI}", "messages", (json_int_t)tm.usage_msgs,
				     "entries", (json_int_t)tm.usage_entries, "rejected",
				     (json_int_t)tm.usage_rejected, "dropped",
				     (json_int_t)tm.usage_dropped);
	json_t *grants = tm.grants, *throttled = tm.throttled;
	tm.grants = tm.throttled = NULL;
	pthread_mutex_unlock(&tm.lock);

	if (leader && (json_array_size(grants) > 0 || json_array_size(throttled) > 0)) {
		json_t *d = json_pack("{ss sI sI so so}", "tm", tm.id, "ts", (json_int_t)now,
				      "parties", (json_int_t)parties, "grants", grants, "throttled",
				      throttled);
		atomic_fetch_add(&tm.decisions_sent, 1);
		atomic_fetch_add(&tm.grants_sent, json_array_size(grants));
		atomic_fetch_add(&tm.throttled_sent, json_array_size(throttled));
		tm_publish(nc, "apim.throttle.decisions", d);
		json_decref(d);
	} else {
		json_decref(grants);
		json_decref(throttled);
	}
	if (beat) {
		json_t *b = json_pack("{ss sI sI sb sI so}", "tm", tm.id, "started",
				      (json_int_t)tm.started, "ts", (json_int_t)now, "leader", leader,
				      "parties", (json_int_t)parties, "usage", counters);
		tm_publish(nc, "apim.throttle.tm", b);
		json_decref(b);
	} else {
		json_decref(counters);
	}
}

static void *tm_main(void *arg)
{
	(void)arg;
	natsConnection *nc = NULL;
	natsSubscription *subs[3] = {NULL, NULL, NULL};
	int warned = 0;

	while (nc == NULL) {
		nc = events_nats_connect(tm.hub_url, "apim-traffic-manager");
		if (nc != NULL)
			break;
		if (!warned++)
			log_warn(TM_COMP, "cannot reach the event hub at %s; retrying", tm.hub_url);
		if (tm_sleep(1000))
			return NULL;
	}
	if (natsConnection_Subscribe(&subs[0], nc, "apim.throttle.usage", tm_on_msg, "usage") !=
		    NATS_OK ||
	    natsConnection_Subscribe(&subs[1], nc, "apim.throttle.tm", tm_on_msg, "tm") != NATS_OK ||
	    natsConnection_Subscribe(&subs[2], nc, "apim.notify.policy", tm_on_msg, "policy") !=
		    NATS_OK) {
		log_error(TM_COMP, "cannot subscribe on the event hub");
		goto out;
	}
	for (size_t i = 0; i < 3; i++)
		natsSubscription_SetPendingLimits(subs[i], 65536, 32 * 1024 * 1024);
	log_info(TM_COMP, "Traffic Manager %s listening on %s", tm.id, tm.hub_url);

	int64_t next_policies = 0, next_beat = 0;
	while (!atomic_load(&tm.stop)) {
		int64_t now = apim_now_ms();
		if (atomic_exchange(&tm.policies_stale, 0) || now >= next_policies) {
			int ok = tm_fetch_policies() == APIM_OK;
			next_policies = now + (ok ? TM_POLICY_REFRESH_MS : 1000);
		}
		int beat = now >= next_beat;
		if (beat) {
			next_beat = now + TM_BEAT_MS;
			int64_t dropped = 0;
			if (natsSubscription_GetDropped(subs[0], &dropped) == NATS_OK) {
				pthread_mutex_lock(&tm.lock);
				if (dropped > tm.usage_dropped)
					log_warn(TM_COMP, "%lld usage reports dropped: this Traffic "
							  "Manager cannot keep up",
						 (long long)(dropped - tm.usage_dropped));
				tm.usage_dropped = dropped;
				pthread_mutex_unlock(&tm.lock);
			}
		}
		atomic_store(&tm.connected,
			     natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED);
		tm_tick(nc, now, beat);
		/* the next tick on a multiple of TM_TICK_MS */
		int64_t after = apim_now_ms();
		tm_sleep(TM_TICK_MS - after % TM_TICK_MS);
	}
out:
	atomic_store(&tm.connected, 0);
	for (size_t i = 0; i < 3; i++) {
		if (subs[i] != NULL) {
			natsSubscription_Unsubscribe(subs[i]);
			natsSubscription_Destroy(subs[i]);
		}
	}
	natsConnection_Close(nc);
	natsConnection_Destroy(nc);
	return NULL;
}

apim_rc trafficmanager_start(const trafficmanager_opts *o)
{
	if (o->hub_url == NULL || *o->hub_url == '\0') {
		log_error(TM_COMP, "the Traffic Manager needs the event hub (event_hub.url)");
		return APIM_ECONFIG;
	}
	tm.hub_url = strdup(o->hub_url);
	tm.cp_url = strdup(o->control_plane_url ? o->control_plane_url : "");
	tm.credential = strdup(o->credential ? o->credential : "");
	tm.ca_file = o->ca_file && *o->ca_file ? strdup(o->ca_file) : NULL;
	tm.quota = tm_quota_create();
	if (tm.hub_url == NULL || tm.cp_url == NULL || tm.credential == NULL || tm.quota == NULL) {
		trafficmanager_stop();
		return APIM_ENOMEM;
	}
	tm.started = apim_now_ms();
	if (o->id != NULL && *o->id) {
		snprintf(tm.id, sizeof(tm.id), "%s", o->id);
	} else {
		char host[64] = "node";
		gethostname(host, sizeof(host) - 1);
		snprintf(tm.id, sizeof(tm.id), "%s/%ld", host, (long)getpid());
	}
	atomic_store(&tm.stop, 0);
	atomic_store(&tm.connected, 0);
	atomic_store(&tm.leading, 0);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (pthread_create(&tm.thread, NULL, tm_main, NULL) != 0) {
		trafficmanager_stop();
		return APIM_EINTERNAL;
	}
	tm.running = 1;
	return APIM_OK;
}

void trafficmanager_stop(void)
{
	atomic_store(&tm.stop, 1);
	if (tm.running) {
		pthread_join(tm.thread, NULL);
		tm.running = 0;
		curl_global_cleanup();
	}
	/* under the lock: trafficmanager_get_stats may be reading */
	pthread_mutex_lock(&tm.lock);
	tm_quota_destroy(tm.quota);
	tm_policies_free(tm.policies);
	tm.quota = NULL;
	tm.policies = NULL;
	pthread_mutex_unlock(&tm.lock);
	free(tm.hub_url);
	free(tm.cp_url);
	free(tm.credential);
	free(tm.ca_file);
	tm.quota = NULL;
	tm.policies = NULL;
	tm.hub_url = tm.cp_url = tm.credential = tm.ca_file = NULL;
}

void trafficmanager_get_stats(trafficmanager_stats *out)
{
	memset(out, 0, sizeof(*out));
	int64_t now = apim_now_ms();
	pthread_mutex_lock(&tm.lock);
	if (tm.quota == NULL) { /* not started, or stopped */
		pthread_mutex_unlock(&tm.lock);
		return;
	}
	out->running = 1;
	out->connected = atomic_load(&tm.connected);
	out->leader = atomic_load(&tm.leading);
	out->decisions_published = atomic_load(&tm.decisions_sent);
	out->grants_published = atomic_load(&tm.grants_sent);
	out->throttled_published = atomic_load(&tm.throttled_sent);
	out->policies_loaded = tm.policies != NULL;
	out->policies = tm.policies != NULL ? tm_policies_count(tm.policies) : 0;
	out->usage_messages = tm.usage_msgs;
	out->usage_entries = tm.usage_entries;
	out->usage_rejected = tm.usage_rejected;
	out->usage_dropped = tm.usage_dropped;
	out->keys = tm_quota_keys(tm.quota);
	out->parties = tm_quota_live_parties(tm.quota, now);
	for (size_t i = 0; i < TM_MAX_PEERS; i++)
		if (tm.peers[i].id[0] != '\0' && now - tm.peers[i].last_seen <= TM_PEER_TTL_MS)
			out->peers++;
	pthread_mutex_unlock(&tm.lock);
}
