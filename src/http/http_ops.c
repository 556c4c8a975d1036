#include "http/http_ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ctx.h"
#include "common/util.h"
#include "events/events.h"
#include "store/db.h"
#include "trafficmanager/trafficmanager.h"

static void health_live(http_req *r)
{
	http_reply_json(r, 200, json_pack("{s:s}", "status", "UP"));
}

/*
 * Ready when what this process serves can work now: a control plane when
 * both databases answer; a Traffic Manager without a control plane
 * (--profile traffic-manager) when it is connected to the event hub and
 * has read the rate-limit policies from the control plane once (it keeps
 * them when the control plane goes away later).
 */
static void health_ready(http_req *r)
{
	apim_ctx *ctx = r->ctx;
	json_t *checks = json_object();
	int up = 1;
	if (ctx->apimgt != NULL || ctx->shared != NULL) {
		int a = ctx->apimgt ? db_ping(ctx->apimgt) : 1;
		int s = ctx->shared ? db_ping(ctx->shared) : 1;
		json_object_set_new(checks, "apimgtdb", json_string(a ? "UP" : "DOWN"));
		json_object_set_new(checks, "shareddb", json_string(s ? "UP" : "DOWN"));
		up = a && s;
	} else {
		trafficmanager_stats st;
		trafficmanager_get_stats(&st);
		json_object_set_new(checks, "eventHub", json_string(st.connected ? "UP" : "DOWN"));
		json_object_set_new(checks, "policies",
				    json_string(st.policies_loaded ? "UP" : "DOWN"));
		up = st.running && st.connected && st.policies_loaded;
	}
	http_reply_json(r, up ? 200 : 503,
			json_pack("{s:s, s:o}", "status", up ? "UP" : "DOWN", "checks", checks));
}

/* The Traffic Manager's counters (trafficmanager.h), when it runs here. */
static void metrics_traffic_manager(char **buf, size_t *len, size_t *cap)
{
	trafficmanager_stats st;
	trafficmanager_get_stats(&st);
	if (!st.running)
		return;
	static const struct {
		const char *name, *type, *help;
	} m[] = {
		{"usage_messages_total", "counter", "Usage reports received (apim.throttle.usage)."},
		{"usage_entries_total", "counter", "Quota entries of the usage reports counted."},
		{"usage_rejected_total", "counter",
		 "Usage reports or entries ignored (malformed, unknown policy or window)."},
		{"usage_dropped_total", "counter",
		 "Usage reports dropped by the NATS client because this Traffic Manager was slow."},
		{"decisions_published_total", "counter",
		 "Decision messages published (apim.throttle.decisions; the leader only)."},
		{"grants_published_total", "counter", "Allowances granted to gateway workers."},
		{"throttled_published_total", "counter", "Throttled-until decisions published."},
		{"is_leader", "gauge", "1 when this Traffic Manager publishes the decisions."},
		{"event_hub_connected", "gauge", "1 while connected to the event hub."},
		{"peers", "gauge", "Other Traffic Managers heard within the last second."},
		{"policies", "gauge", "Rate limits read from the control plane."},
		{"keys", "gauge", "Throttle keys tracked in their current windows."},
		{"parties", "gauge", "Gateway workers reporting usage (at least 1)."},
	};
	unsigned long long v[] = {
		st.usage_messages,      st.usage_entries,      st.usage_rejected,
		(unsigned long long)st.usage_dropped, st.decisions_published, st.grants_published,
		st.throttled_published, (unsigned long long)st.leader,
		(unsigned long long)st.connected, st.peers, st.policies, st.keys, st.parties,
	};
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		http_buf_printf(buf, len, cap,
				"# HELP apim_tm_%s %s\n# TYPE apim_tm_%s %s\napim_tm_%s %llu\n",
				m[i].name, m[i].help, m[i].name, m[i].type, m[i].name, v[i]);
}

static long rss_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	if (f == NULL)
		return -1;
	char line[256];
	long kb = -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static void metrics(http_req *r)
{
	apim_ctx *ctx = r->ctx;
	char *buf = NULL;
	size_t len = 0, cap = 0;
	http_server_metrics(ctx->http, &buf, &len, &cap);

	http_buf_printf(&buf, &len, &cap,
			"# HELP apim_db_connections_open Open database connections (one per "
			"thread that used the database).\n# TYPE apim_db_connections_open gauge\n"
			"# HELP apim_db_connections_in_tx Connections inside a transaction.\n"
			"# TYPE apim_db_connections_in_tx gauge\n"
			"# HELP apim_db_reconnects_total Reconnects after a lost connection.\n"
			"# TYPE apim_db_reconnects_total counter\n");
	struct db *dbs[2] = {ctx->apimgt, ctx->shared};
	for (int i = 0; i < 2; i++) {
		if (dbs[i] == NULL)
			continue;
		int64_t open = 0, in_tx = 0, rec = 0;
		db_stats(dbs[i], &open, &in_tx, &rec);
		const char *name = db_name(dbs[i]);
		http_buf_printf(&buf, &len, &cap,
				"apim_db_connections_open{db=\"%s\"} %lld\n"
				"apim_db_connections_in_tx{db=\"%s\"} %lld\n"
				"apim_db_reconnects_total{db=\"%s\"} %lld\n",
				name, (long long)open, name, (long long)in_tx, name, (long long)rec);
	}
	if (ctx->apimgt != NULL) {
		int64_t rows, oldest, purged, runs;
		events_change_log_stats(&rows, &oldest, &purged, &runs);
		http_buf_printf(&buf, &len, &cap,
				"# HELP apim_change_log_rows Rows of the change log after the last "
				"purge round.\n# TYPE apim_change_log_rows gauge\n"
				"apim_change_log_rows %lld\n"
				"# HELP apim_change_log_oldest_seq Oldest change kept: gateways behind "
				"it take a full snapshot.\n# TYPE apim_change_log_oldest_seq gauge\n"
				"apim_change_log_oldest_seq %lld\n"
				"# HELP apim_change_log_purged_total Rows purged by this node.\n"
				"# TYPE apim_change_log_purged_total counter\n"
				"apim_change_log_purged_total %lld\n"
				"# HELP apim_change_log_purge_runs_total Purge rounds run by this node.\n"
				"# TYPE apim_change_log_purge_runs_total counter\n"
				"apim_change_log_purge_runs_total %lld\n",
				(long long)rows, (long long)oldest, (long long)purged, (long long)runs);
	}
	metrics_traffic_manager(&buf, &len, &cap);
	http_buf_printf(&buf, &len, &cap,
			"# HELP apim_process_resident_memory_bytes Resident memory.\n"
			"# TYPE apim_process_resident_memory_bytes gauge\n"
			"apim_process_resident_memory_bytes %ld\n"
			"# HELP apim_process_uptime_seconds Seconds since start.\n"
			"# TYPE apim_process_uptime_seconds gauge\n"
			"apim_process_uptime_seconds %lld\n",
			rss_kb() * 1024, (long long)((apim_now_ms() - ctx->started_ms) / 1000));
	http_reply_raw(r, 200, "text/plain; version=0.0.4", buf, len);
	free(buf);
}

static const http_route ops_routes[] = {
	{"GET", "/health/live", health_live, NULL, HTTP_PUBLIC},
	{"GET", "/health/ready", health_ready, NULL, HTTP_PUBLIC},
	{"GET", "/metrics", metrics, NULL, HTTP_PUBLIC},
};

void http_ops_routes(http_server *s)
{
	http_server_routes(s, ops_routes, sizeof(ops_routes) / sizeof(ops_routes[0]));
}
