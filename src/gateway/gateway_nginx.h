/*
 * gateway_nginx.h: the gateway profile's nginx, run by apimd as its child.
 *
 * gateway_nginx_start renders <server.home>/gateway/nginx.conf from
 * apim.conf (load_module of ngx_http_apim_module.so, `daemon off;
 * master_process on;`, pid, logs and temp folders under
 * <server.home>/gateway, a JSON access log, one server on
 * <server.host>:<gateway.http_port + server.port_offset> whose location /
 * is checked by the module and proxied to the API's endpoints), checks it
 * with `nginx -t` (its messages are logged on failure), then runs nginx in
 * the foreground as a child and waits until it listens.
 *
 * With a module that has the balancer (apim_balancer), API calls go to
 * `upstream apim_backend { apim_balancer; keepalive <gateway.backend_keepalive>; }`
 * through proxy_pass $apim_upstream_scheme://apim_backend$apim_upstream_uri,
 * with Host and SNI of the endpoint, proxy_next_upstream error timeout
 * (failover), HTTP/1.1 with an empty Connection header (reuse),
 * X-Forwarded-For/Proto, and proxy_ssl_verify against
 * gateway.backend_ca_file when set. An older module gets proxy_pass
 * $apim_backend$apim_rest. gateway.backend_jwt (with a module that knows
 * apim_backend_jwt) renders apim_backend_jwt, its key
 * <server.home>/gateway/backend-jwt.pem (RSA 2048, generated once, mode
 * 0600, owned by the workers' user) and `location = /jwks`.
 * With a module that knows apim_health, `location = /_apim/health/live`
 * and `/_apim/health/ready` (open to all: load balancers) answer the
 * checks (ngx_http_apim_health.c).
 *
 * The directives that make the module fetch its data from the control plane
 * and follow NATS (apim_control_plane_url, apim_gateway_credential,
 * apim_gateway_label, apim_event_hub_url, apim_cache_file) are rendered
 * only when the module file names them, so that an older module still
 * loads. Likewise for the $apim_* variables of the access log format.
 *
 * All calls come from main's thread (the child asks for SIGTERM when that
 * thread's process dies: PR_SET_PDEATHSIG).
 */
#ifndef APIM_GATEWAY_NGINX_H
#define APIM_GATEWAY_NGINX_H

#include "common/config.h"
#include "common/error.h"

/*
 * Renders, tests and starts nginx. all_in_one: the control plane runs in
 * this process (its local event hub, if any, is the gateway's too).
 * APIM_OK once nginx listens; otherwise the reason is logged.
 */
apim_rc gateway_nginx_start(const apim_config *cfg, int all_in_one);

/*
 * Re-renders nginx.conf from cfg, tests it and sends SIGHUP to the nginx
 * master (same pid; workers are replaced gracefully). On a bad
 * configuration the running nginx keeps its old one and the error is
 * returned.
 */
apim_rc gateway_nginx_reload(const apim_config *cfg);

/* 1 while the nginx child runs; reaps it (and returns 0) once it has exited. */
int gateway_nginx_alive(void);

/* Graceful stop: SIGQUIT, then SIGTERM after 10 s, SIGKILL after 15 s. */
void gateway_nginx_stop(void);

/* "http://host:port" of the running gateway (empty when not started). */
const char *gateway_nginx_url(void);

/* The gateway credential of the internal data API: gateway.credential, else
 * the control plane's <server.home>/gateway-credential (trailing
 * whitespace removed). Malloc'd (the caller wipes and frees it); NULL when
 * there is none. The Traffic Manager sends it too. */
char *gateway_nginx_credential(const apim_config *cfg);

#endif
