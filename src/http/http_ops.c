#include "http/http_ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ctx.h"
#include "common/util.h"
#include "store/db.h"

static void health_live(http_req *r)
{
	http_reply_json(r, 200, json_pack("{s:s}", "status", "UP"));
}

/* Ready only when both databases answer now. */
static void health_ready(http_req *r)
{
	apim_ctx *ctx = r->ctx;
	int a = ctx->apimgt ? db_ping(ctx->apimgt) : 1;
	int s = ctx->shared ? db_ping(ctx->shared) : 1;
	json_t *o = json_pack("{s:s, s:{s:s, s:s}}", "status", a && s ? "UP" : "DOWN", "checks",
			      "apimgtdb", a ? "UP" : "DOWN", "shareddb", s ? "UP" : "DOWN");
	http_reply_json(r, a && s ? 200 : 503, o);
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
