/*
 * apimd: the one apim daemon. The profile chooses which components run in
 * this process; all-in-one (the default) runs every component that exists.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>
#include <time.h>

#include "admin/admin.h"
#include "auth/auth.h"
#include "auth/auth_users.h"
#include "common/config.h"
#include "common/ctx.h"
#include "common/log.h"
#include "common/util.h"
#include "dataapi/dataapi.h"
#include "events/events.h"
#include "gateway/gateway_nginx.h"
#include "http/http.h"
#include "devportal/devportal.h"
#include "http/http_ops.h"
#include "keymanager/keymanager.h"
#include "publisher/publisher.h"
#include "scim/scim.h"
#include "store/db.h"
#include "trafficmanager/trafficmanager.h"

#include <nats/nats.h>

/* Components a profile runs in this process. */
#define C_PUBLISHER 0x01 /* Publisher v4 */
#define C_ADMIN 0x02     /* Admin v4 and SCIM users/roles */
#define C_KEYMANAGER 0x04
#define C_DEVPORTAL 0x08
#define C_GATEWAY 0x10
#define C_TRAFFIC 0x20
#define C_BUILT (C_PUBLISHER | C_ADMIN | C_KEYMANAGER | C_DEVPORTAL | C_GATEWAY | C_TRAFFIC)
/* Components served by the control plane's HTTP server and databases. */
#define C_CONTROL_PLANE (C_PUBLISHER | C_ADMIN | C_KEYMANAGER | C_DEVPORTAL)

typedef struct profile {
	const char *name;
	unsigned components;
} profile;

static const profile profiles[] = {
	{"all-in-one", C_PUBLISHER | C_ADMIN | C_KEYMANAGER | C_DEVPORTAL | C_GATEWAY | C_TRAFFIC},
	{"control-plane", C_PUBLISHER | C_ADMIN | C_KEYMANAGER | C_DEVPORTAL},
	{"publisher", C_PUBLISHER | C_ADMIN},
	{"devportal", C_DEVPORTAL},
	{"key-manager", C_KEYMANAGER},
	{"gateway", C_GATEWAY},
	{"traffic-manager", C_TRAFFIC},
};

/* Names of the components in mask, comma-separated, into buf. */
static const char *component_names(unsigned mask, char *buf, size_t len)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {{C_PUBLISHER, "publisher"}, {C_ADMIN, "admin"},
		     {C_KEYMANAGER, "key manager"}, {C_DEVPORTAL, "developer portal"},
		     {C_GATEWAY, "gateway"}, {C_TRAFFIC, "traffic manager"}};
	size_t n = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (mask & names[i].bit)
			n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%s", n ? ", " : "",
					      names[i].name);
	return buf;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: apimd [--profile NAME] [--config FILE] [--help] [--version]\n"
		"\n"
		"  --profile NAME  all-in-one (default), control-plane, publisher, devportal,\n"
		"                  key-manager, gateway, traffic-manager\n"
		"  --config FILE   apim.conf to read (every key may also be set by an\n"
		"                  environment variable APIM_<SECTION>_<KEY>)\n"
		"  --config-docs   print the configuration reference (Markdown) and exit\n"
		"  --help          this text\n"
		"  --version       print the version and exit\n");
}

static char *default_sqlite_url(const char *home, const char *file)
{
	size_t n = strlen(home) + strlen(file) + 16;
	char *s = malloc(n);
	if (s != NULL)
		snprintf(s, n, "sqlite://%s/%s", home, file);
	return s;
}

/*
 * Starts the Traffic Manager: the event hub of event_hub.url (all-in-one:
 * the local nats-server), the control plane of gateway.control_plane_url
 * (all-in-one: this process) and the gateway credential of the data API.
 */
static apim_rc start_traffic_manager(const apim_config *cfg, int all_in_one)
{
	int off = (int)cfg->server_port_offset;
	char hub[1024] = "", cp[1024];
	if (*cfg->event_hub_url)
		snprintf(hub, sizeof(hub), "%s", cfg->event_hub_url);
	else if (all_in_one && cfg->event_hub_start_local)
		snprintf(hub, sizeof(hub), "nats://127.0.0.1:%d", APIM_EVENT_HUB_PORT + off);
	if (*cfg->gateway_control_plane_url)
		snprintf(cp, sizeof(cp), "%s", cfg->gateway_control_plane_url);
	else
		snprintf(cp, sizeof(cp), "%s://127.0.0.1:%d", *cfg->http_tls_cert ? "https" : "http",
			 APIM_CONTROL_PLANE_PORT + off);
	char *cred = gateway_nginx_credential(cfg);
	if (cred == NULL || *cred == '\0')
		log_warn("main", "no gateway credential (gateway.credential, or "
				 "<server.home>/gateway-credential): the Traffic Manager cannot "
				 "read the rate-limit policies");
	trafficmanager_opts o = {.hub_url = hub,
				 .control_plane_url = cp,
				 .credential = cred != NULL ? cred : "",
				 .ca_file = all_in_one ? cfg->http_tls_cert : NULL};
	apim_rc rc = trafficmanager_start(&o);
	if (cred != NULL) {
		sodium_memzero(cred, strlen(cred));
		free(cred);
	}
	return rc;
}

int main(int argc, char **argv)
{
	const char *profile_name = "all-in-one", *config_path = NULL;
	static const struct option opts[] = {
		{"profile", required_argument, NULL, 'p'}, {"config", required_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},          {"version", no_argument, NULL, 'V'},
		{"config-docs", no_argument, NULL, 'D'},   {NULL, 0, NULL, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "p:c:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'p': profile_name = optarg; break;
		case 'c': config_path = optarg; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("apimd %s\n", APIM_VERSION); return 0;
		case 'D':
			printf("# apim.conf reference\n\nGenerated by `apimd --config-docs` from the "
			       "table in `src/common/config.c`.\n");
			config_print_docs(stdout);
			return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "apimd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	const profile *prof = NULL;
	for (size_t i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++)
		if (strcmp(profiles[i].name, profile_name) == 0)
			prof = &profiles[i];
	if (prof == NULL) {
		fprintf(stderr, "apimd: unknown profile '%s' (see --help)\n", profile_name);
		return 2;
	}
	char missing[128];
	component_names(prof->components & ~C_BUILT, missing, sizeof(missing));
	if ((prof->components & C_BUILT) == 0) {
		fprintf(stderr, "apimd: profile '%s' is not available yet: the %s component is not "
				"built in this version\n", prof->name, missing);
		return 2;
	}

	apim_config cfg;
	char err[1024];
	if (config_load(&cfg, config_path, err, sizeof(err)) != APIM_OK) {
		fprintf(stderr, "apimd: %s\n", err);
		return 2;
	}
	if ((prof->components & C_TRAFFIC) && strcmp(prof->name, "all-in-one") != 0 &&
	    *cfg.event_hub_url == '\0') {
		fprintf(stderr, "apimd: profile '%s' needs event_hub.url: the NATS server(s) the "
				"gateways report their usage to\n", prof->name);
		config_free(&cfg);
		return 2;
	}
	log_level lv = LOG_INFO;
	log_level_parse(cfg.log_level, &lv);
	log_setup(lv, strcmp(cfg.log_format, "json") == 0);
	if (sodium_init() < 0) {
		log_error("main", "libsodium failed to initialise");
		return 1;
	}
	if (*missing)
		log_warn("main", "profile %s: not built yet, not started: %s", prof->name, missing);

	signal(SIGPIPE, SIG_IGN);

	int rc = 1;
	/* the gateway and the Traffic Manager never touch the databases */
	int control_plane = (prof->components & C_BUILT & C_CONTROL_PLANE) != 0;
	int gateway_on = 0, traffic_on = 0;
	int all_in_one = strcmp(prof->name, "all-in-one") == 0;
	apim_ctx ctx = {.cfg = &cfg, .profile = prof->name, .started_ms = apim_now_ms()};
	ctx.port = APIM_CONTROL_PLANE_PORT + (int)cfg.server_port_offset;
	http_server *http = NULL;
	char *generated = NULL;

	http_server_opts ho = {
		.host = cfg.server_host,
		.port = ctx.port,
		.threads = (int)cfg.server_threads,
		.max_body = (size_t)cfg.http_max_body_kb * 1024,
		.tls_cert = cfg.http_tls_cert,
		.tls_key = cfg.http_tls_key,
		.cors_origins = cfg.http_cors_origins,
		.ctx = &ctx,
		.authenticate = auth_authenticate,
	};
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGCHLD);
	if (!control_plane) {
		if (*cfg.database_apimgtdb_url || *cfg.database_shareddb_url)
			log_warn("main", "profile %s uses no database: [database] settings are "
					 "ignored", prof->name);
		if (apim_mkdirs(cfg.server_home, 0750) != APIM_OK) {
			log_error("main", "cannot create server.home '%s'", cfg.server_home);
			goto out;
		}
		pthread_sigmask(SIG_BLOCK, &sigs, NULL);
		goto start_gateway;
	}
	/* Before any database work: a bad TLS file fails the start at once. */
	if (http_server_create(&http, &ho) != APIM_OK)
		goto out;
	if (apim_mkdirs(cfg.server_home, 0750) != APIM_OK) {
		log_error("main", "cannot create server.home '%s'", cfg.server_home);
		goto out;
	}
	if (*cfg.database_apimgtdb_url == '\0') {
		free(cfg.database_apimgtdb_url);
		cfg.database_apimgtdb_url = default_sqlite_url(cfg.server_home, "apimgt.db");
	}
	if (*cfg.database_shareddb_url == '\0') {
		free(cfg.database_shareddb_url);
		cfg.database_shareddb_url = default_sqlite_url(cfg.server_home, "shared.db");
	}
	if (db_open(&ctx.apimgt, cfg.database_apimgtdb_url, "apimgtdb",
		    cfg.database_busy_timeout_ms) != APIM_OK ||
	    db_open(&ctx.shared, cfg.database_shareddb_url, "shareddb",
		    cfg.database_busy_timeout_ms) != APIM_OK) {
		log_error("main", "cannot open the databases");
		goto out;
	}
	if (auth_users_bootstrap(&ctx, &generated) != APIM_OK || admin_migrate(&ctx) != APIM_OK ||
	    publisher_migrate(&ctx) != APIM_OK || devportal_migrate(&ctx) != APIM_OK) {
		log_error("main", "database set-up failed");
		goto out;
	}
	if (auth_init(&ctx) != APIM_OK)
		goto out;
	/* threads started in here (the token writer) must not take the
	 * signals that main waits for later: they would kill the process by
	 * the default action, e.g. while the gateway starts */
	sigset_t all, before;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &before);
	apim_rc km_rc = keymanager_init(&ctx);
	pthread_sigmask(SIG_SETMASK, &before, NULL);
	if (km_rc != APIM_OK) {
		log_error("main", "Key Manager set-up failed");
		goto out;
	}
	if (dataapi_init(&ctx) != APIM_OK) {
		log_error("main", "gateway credential set-up failed");
		goto out;
	}
	/* the control plane publishes its changes to the event hub; only the
	 * all-in-one profile starts a local nats-server when none is set */
	if (events_start(&ctx, strcmp(prof->name, "all-in-one") == 0) != APIM_OK)
		goto out;

	/* Requests run on pool threads, which inherit this mask: signals are
	 * taken by sigwait below. Blocked only now, so that a start-up stuck on
	 * a database still dies on SIGTERM or Ctrl-C. */
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	ctx.http = http;
	http_ops_routes(http);
	if (prof->components & C_PUBLISHER)
		publisher_routes(http);
	if (prof->components & C_ADMIN) {
		admin_routes(http);
		scim_routes(http);
	}
	if (prof->components & C_KEYMANAGER)
		keymanager_routes(http);
	if (prof->components & C_DEVPORTAL)
		devportal_routes(http);
	dataapi_routes(http);
	if (http_server_start(http) != APIM_OK)
		goto out;

start_gateway:
	if (prof->components & C_TRAFFIC) {
		/* signals stay with main: the thread (and the NATS library's) block them */
		sigset_t all_sigs, prev;
		sigfillset(&all_sigs);
		pthread_sigmask(SIG_BLOCK, &all_sigs, &prev);
		apim_rc trc = start_traffic_manager(&cfg, all_in_one);
		pthread_sigmask(SIG_SETMASK, &prev, NULL);
		if (trc == APIM_OK) {
			traffic_on = 1;
		} else if (!control_plane && !(prof->components & C_GATEWAY)) {
			log_error("main", "the Traffic Manager did not start");
			goto out;
		} else {
			log_warn("main", "the Traffic Manager did not start");
		}
	}
	/* the gateway (nginx child), once the control plane it reads listens */
	if (prof->components & C_GATEWAY) {
		if (gateway_nginx_start(&cfg, all_in_one) == APIM_OK) {
			gateway_on = 1;
		} else if (!control_plane) {
			log_error("main", "the gateway did not start");
			goto out;
		} else {
			log_warn("main", "the gateway did not start; the control plane runs without it");
		}
	}

	const char *scheme = *cfg.http_tls_cert ? "https" : "http";
	printf("apim %s (%s) ready in %lld ms\n", APIM_VERSION, prof->name,
	       (long long)(apim_now_ms() - ctx.started_ms));
	if (traffic_on)
		printf("  traffic mgr    listening on the event hub (apim.throttle.usage)\n");
	if (gateway_on)
		printf("  gateway        %s/{context}/{version}/{resource}   (environment %s)\n",
		       gateway_nginx_url(), cfg.gateway_label);
	else if (prof->components & C_GATEWAY)
		printf("  gateway        not started (see the log)\n");
	if (!control_plane)
		goto banner_done;
	char running[128];
	component_names(prof->components & C_BUILT & C_CONTROL_PLANE, running, sizeof(running));
	printf("  control plane  %s://%s:%d  (%s)\n", scheme, cfg.server_hostname, ctx.port,
	       running);
	if (prof->components & C_PUBLISHER)
		printf("  publisher      %s://%s:%d/api/am/publisher/v4\n", scheme,
		       cfg.server_hostname, ctx.port);
	if (prof->components & C_ADMIN)
		printf("  admin          %s://%s:%d/api/am/admin/v4   (users: /scim2)\n", scheme,
		       cfg.server_hostname, ctx.port);
	if (prof->components & C_DEVPORTAL)
		printf("  devportal      %s://%s:%d/api/am/devportal/v3   (sign-up: "
		       "/api/identity/user/v1.0/me)\n", scheme, cfg.server_hostname, ctx.port);
	if (prof->components & C_KEYMANAGER)
		printf("  key manager    %s://%s:%d/oauth2/token   (JWKS /oauth2/jwks)\n", scheme,
		       cfg.server_hostname, ctx.port);
	printf("  apimgtdb       %s\n", db_dialect_of(ctx.apimgt) == DB_SQLITE ?
	       cfg.database_apimgtdb_url : "postgresql (see database.apimgtdb_url)");
	printf("  shareddb       %s\n", db_dialect_of(ctx.shared) == DB_SQLITE ?
	       cfg.database_shareddb_url : "postgresql (see database.shareddb_url)");
	if (generated != NULL) {
		printf("  admin user     %s\n  admin password %s   (generated; shown once, stored in "
		       "%s/admin-password)\n", cfg.admin_username, generated, cfg.server_home);
		sodium_memzero(generated, strlen(generated));
	} else {
		char pwfile[4096];
		snprintf(pwfile, sizeof(pwfile), "%s/admin-password", cfg.server_home);
		if (*cfg.admin_password)
			printf("  admin user     %s (password: admin.password)\n", cfg.admin_username);
		else if (access(pwfile, F_OK) == 0)
			printf("  admin user     %s (password generated at first start: %s)\n",
			       cfg.admin_username, pwfile);
		else
			printf("  admin user     %s (password generated by the node that created "
			       "the account, in its server.home/admin-password)\n",
			       cfg.admin_username);
	}
	log_info("main", "listening on %s:%d (%s)", cfg.server_host, ctx.port, prof->name);
banner_done:
	fflush(stdout);

	for (;;) {
		/* a timeout too: SIGCHLD may go to another thread and be lost */
		struct timespec tick = {.tv_sec = 1, .tv_nsec = 0};
		int sig = sigtimedwait(&sigs, NULL, &tick);
		if (gateway_on && !gateway_nginx_alive()) {
			gateway_on = 0;
			if (!control_plane) {
				log_error("main", "the gateway's nginx died: stopping");
				goto out;
			}
			log_error("main", "the gateway's nginx died; the control plane goes on "
					  "without a gateway (restart apimd to get it back)");
		}
		if (sig < 0 || sig == SIGCHLD)
			continue;
		if (sig == SIGHUP) {
			if (!gateway_on) {
				log_info("main", "SIGHUP: nothing to reload in this profile");
				continue;
			}
			/* the gateway's settings are read again from apim.conf */
			apim_config fresh;
			if (config_load(&fresh, config_path, err, sizeof(err)) != APIM_OK) {
				log_error("main", "SIGHUP: %s; the gateway keeps its configuration",
					  err);
				continue;
			}
			gateway_nginx_reload(&fresh);
			config_free(&fresh);
			continue;
		}
		log_info("main", "signal %d: shutting down", sig);
		break;
	}
	rc = 0;
out:
	gateway_nginx_stop();
	trafficmanager_stop();
	if (http != NULL) {
		http_server_stop(http);
		http_server_destroy(http);
	}
	events_stop();
	if (control_plane) {
		keymanager_shutdown();
		auth_shutdown();
	}
	if (ctx.apimgt)
		db_close(ctx.apimgt);
	if (ctx.shared)
		db_close(ctx.shared);
	free(generated);
	nats_Close(); /* after every user of the NATS library stopped */
	config_free(&cfg);
	if (rc == 0)
		log_info("main", "stopped");
	return rc;
}
