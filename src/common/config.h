/*
 * config.h: apim.conf, driven by one table of keys (config.c: config_keys).
 *
 * The file is a TOML subset: "[section]" headers, "key = value" lines with
 * quoted strings, integers and booleans, "#" comments. Every key can be
 * overridden by the environment variable APIM_<SECTION>_<KEY> (upper case),
 * which wins over the file. Unknown keys and bad values are rejected with
 * "file:line: message". `apimd --config-docs` prints the table as Markdown
 * (docs/CONFIG.md is generated from it).
 */
#ifndef APIM_CONFIG_H
#define APIM_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "common/error.h"

typedef struct apim_config {
	/* [server] */
	char *server_home;
	int64_t server_port_offset;
	char *server_host;
	char *server_hostname;
	int64_t server_threads;
	/* [http] */
	int64_t http_max_body_kb;
	char *http_tls_cert;
	char *http_tls_key;
	char *http_cors_origins;
	/* [database] */
	char *database_apimgtdb_url;
	char *database_shareddb_url;
	int64_t database_busy_timeout_ms;
	/* [admin] */
	char *admin_username;
	char *admin_password;
	/* [security] */
	int64_t security_lockout_attempts;
	int64_t security_lockout_seconds;
	int64_t security_argon2_opslimit;
	int64_t security_argon2_memlimit_kb;
	int64_t security_auth_cache_seconds;
	/* [keymanager] */
	char *keymanager_signing_alg;
	char *keymanager_master_key;
	char *keymanager_issuer;
	int64_t keymanager_access_token_validity;
	int64_t keymanager_refresh_token_validity;
	int64_t keymanager_code_validity;
	int64_t keymanager_auth_failures_per_minute;
	int64_t keymanager_leeway;
	/* [devportal] */
	int64_t devportal_self_signup;
	/* [event_hub] */
	char *event_hub_url;
	int64_t event_hub_start_local;
	int64_t event_hub_change_log_keep_rows;
	int64_t event_hub_change_log_keep_days;
	int64_t event_hub_change_log_purge_seconds;
	/* [traffic_manager] */
	char *traffic_manager_id;
	int64_t traffic_manager_port;
	/* [gateway] */
	char *gateway_credential;
	int64_t gateway_http_port;
	int64_t gateway_https_port;
	int64_t gateway_workers;
	char *gateway_label;
	char *gateway_control_plane_url;
	char *gateway_nginx_binary;
	char *gateway_module_path;
	char *gateway_user;
	char *gateway_trusted_proxies;
	int64_t gateway_backend_keepalive;
	char *gateway_backend_ca_file;
	int64_t gateway_backend_jwt;
	char *gateway_metrics_allow;
	/* [log] */
	char *log_level;
	char *log_format;
} apim_config;

/* Base port of the control plane before server.port_offset (reference: 9443). */
#define APIM_CONTROL_PLANE_PORT 9443
/* Port of the local nats-server the all-in-one profile starts, before the offset. */
#define APIM_EVENT_HUB_PORT 4222

/*
 * Fills cfg with defaults, then the file at path (NULL: no file), then the
 * environment. On failure err holds "file:line: message" (or
 * "APIM_X_Y: message") and cfg is freed. cfg must be freed with config_free().
 */
apim_rc config_load(apim_config *cfg, const char *path, char *err, size_t errlen);
void config_free(apim_config *cfg);

/* Markdown table of every key: name, env variable, type, default, doc. */
void config_print_docs(FILE *out);

/*
 * The one source of the addresses derived from several keys (the gateway's
 * nginx.conf and the Traffic Manager both call these):
 * config_control_plane_url: gateway.control_plane_url, else this host's
 * control plane, http(s)://127.0.0.1:<9443+server.port_offset> (https when
 * http.tls_cert is set). config_event_hub_url: event_hub.url, else (only
 * when all_in_one and event_hub.start_local) the local nats-server
 * nats://127.0.0.1:<4222+server.port_offset>, else "" (none).
 */
void config_control_plane_url(const apim_config *cfg, char *buf, size_t len);
void config_event_hub_url(const apim_config *cfg, int all_in_one, char *buf, size_t len);

#endif
