#include "gateway/gateway_nginx.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "common/log.h"
#include "common/util.h"

#define GW_COMP "gateway"
#define GW_MODULE_NAME "ngx_http_apim_module.so"
#define GW_MODULE_INSTALLED "/usr/lib/nginx/modules/" GW_MODULE_NAME
#define GW_START_MS 10000
#define GW_TEST_OUT_MAX 8192
#define GW_BACKEND_JWT_KEY "backend-jwt.pem"

/* The one nginx of this process. */
static struct {
	pid_t pid;
	char dir[PATH_MAX];    /* <server.home>/gateway, absolute */
	char conf[PATH_MAX + 16]; /* dir/nginx.conf */
	char module[PATH_MAX];
	char url[300];
	int all_in_one;
} gw = {.pid = -1};

static void gw_sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* The module file: gateway.module_path, else next to apimd, else installed. */
static apim_rc gw_find_module(const apim_config *cfg)
{
	if (*cfg->gateway_module_path) {
		if (access(cfg->gateway_module_path, R_OK) != 0) {
			log_error(GW_COMP, "gateway.module_path %s: %s", cfg->gateway_module_path,
				  strerror(errno));
			return APIM_ECONFIG;
		}
		if (realpath(cfg->gateway_module_path, gw.module) == NULL)
			snprintf(gw.module, sizeof(gw.module), "%s", cfg->gateway_module_path);
		return APIM_OK;
	}
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash != NULL) {
			*slash = '\0';
			if (snprintf(gw.module, sizeof(gw.module), "%s/%s", exe, GW_MODULE_NAME) <
				(int)sizeof(gw.module) &&
			    access(gw.module, R_OK) == 0)
				return APIM_OK;
		}
	}
	if (access(GW_MODULE_INSTALLED, R_OK) == 0) {
		snprintf(gw.module, sizeof(gw.module), "%s", GW_MODULE_INSTALLED);
		return APIM_OK;
	}
	log_error(GW_COMP, "cannot find %s next to apimd or in /usr/lib/nginx/modules; "
			   "build it (make build) or set gateway.module_path", GW_MODULE_NAME);
	return APIM_ECONFIG;
}

/* 1 when the module file contains name (a directive or variable it knows). */
static int gw_module_knows(const char *text, size_t len, const char *name)
{
	size_t n = strlen(name);
	const char *p = text, *end = text + len;
	while (p != NULL && (size_t)(end - p) >= n) {
		const char *hit = memmem(p, (size_t)(end - p), name, n);
		if (hit == NULL)
			return 0;
		/* a whole C string: not a prefix of a longer name */
		if (hit + n == end || hit[n] == '\0')
			return 1;
		p = hit + 1;
	}
	return 0;
}

/* Writes s as an nginx double-quoted string. */
static void gw_quoted(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

char *gateway_nginx_credential(const apim_config *cfg)
{
	if (*cfg->gateway_credential)
		return strdup(cfg->gateway_credential);
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/gateway-credential", cfg->server_home);
	char *text = NULL;
	if (apim_read_file(path, 4096, &text, NULL) != APIM_OK)
		return NULL;
	char *e = text + strlen(text);
	while (e > text && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' '))
		*--e = '\0';
	return text;
}

/* User and group for the `user` directive when running as root. */
static void gw_worker_user(const apim_config *cfg, char *user, size_t ulen, char *group,
			   size_t glen, uid_t *uid, gid_t *gid)
{
	struct passwd *pw = NULL;
	if (*cfg->gateway_user) {
		pw = getpwnam(cfg->gateway_user);
	} else {
		struct stat st;
		if (stat(cfg->server_home, &st) == 0)
			pw = getpwuid(st.st_uid);
	}
	if (pw == NULL) {
		if (*cfg->gateway_user)
			log_warn(GW_COMP, "gateway.user %s: no such user; workers run as root",
				 cfg->gateway_user);
		snprintf(user, ulen, "root");
		snprintf(group, glen, "root");
		*uid = 0;
		*gid = 0;
		return;
	}
	snprintf(user, ulen, "%s", pw->pw_name);
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	struct group *gr = getgrgid(pw->pw_gid);
	snprintf(group, glen, "%s", gr != NULL ? gr->gr_name : pw->pw_name);
}

static const char *gw_listen_host(const apim_config *cfg)
{
	return cfg->server_host;
}

/*
 * The backend-JWT signing key, <gateway dir>/backend-jwt.pem: an RSA 2048
 * key generated on first start (mode 0600, owned by the workers' user when
 * nginx runs as root). Kept across restarts so that backends keep trusting it.
 */
static apim_rc gw_backend_jwt_key(const apim_config *cfg, char *path, size_t len)
{
	snprintf(path, len, "%s/%s", gw.dir, GW_BACKEND_JWT_KEY);
	if (access(path, R_OK) != 0) {
		char tmp[PATH_MAX + 48];
		snprintf(tmp, sizeof(tmp), "%s.tmp", path);
		EVP_PKEY *pkey = EVP_RSA_gen(2048);
		if (pkey == NULL) {
			log_error(GW_COMP, "cannot generate the backend JWT key");
			return APIM_EIO;
		}
		int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
		int ok = f != NULL && PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) == 1;
		if (f != NULL) {
			if (fclose(f) != 0)
				ok = 0;
		} else if (fd >= 0) {
			close(fd);
		}
		EVP_PKEY_free(pkey);
		if (!ok || rename(tmp, path) != 0) {
			log_error(GW_COMP, "cannot write %s: %s", path, strerror(errno));
			unlink(tmp);
			return APIM_EIO;
		}
		log_info(GW_COMP, "generated the backend JWT key %s", path);
	}
	if (geteuid() == 0) {
		char user[128], group[128];
		uid_t uid;
		gid_t gid;
		gw_worker_user(cfg, user, sizeof(user), group, sizeof(group), &uid, &gid);
		if (chown(path, uid, gid) != 0)
			log_warn(GW_COMP, "cannot give %s to %s: %s", path, user, strerror(errno));
	}
	chmod(path, 0600);
	return APIM_OK;
}

/*
 * Warns when the workers (uid, gid) cannot reach dir because a folder on
 * the way is not searchable for them (e.g. a server.home of mode 0700):
 * they could not write the snapshot cache. Changing the operator's folders
 * is left to the operator. Supplementary groups are not considered.
 */
static void gw_check_reachable(const char *dir, uid_t uid, gid_t gid, const char *user)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s", dir);
	for (;;) {
		struct stat st;
		if (stat(path, &st) == 0) {
			mode_t bit = st.st_uid == uid ? S_IXUSR : st.st_gid == gid ? S_IXGRP : S_IXOTH;
			if (!(st.st_mode & bit)) {
				log_warn(GW_COMP, "the nginx workers (user %s) cannot reach %s: %s is not "
						  "searchable for them (make it so, e.g. chmod o+x, or set "
						  "gateway.user)",
					 user, dir, path);
				return;
			}
		}
		char *slash = strrchr(path, '/');
		if (slash == NULL || slash == path)
			return;
		*slash = '\0';
	}
}

/* Renders the whole configuration into a malloc'ed string. */
/*
 * gateway.trusted_proxies as nginx's realip module takes it: a request from
 * one of them is the client's in X-Forwarded-For (the rightmost address not
 * trusted itself), for the module (blocking, IP conditions, $clientIp) and
 * the access log. The backend's X-Forwarded-For then is the one received
 * with the peer (the proxy) appended, not the client twice. Returns 1 when
 * something was trusted. The entries were checked by the config's validator.
 */
static int gw_trusted_proxies(FILE *f, const apim_config *cfg)
{
	const char *s = cfg->gateway_trusted_proxies;
	int n = 0;
	while (*s) {
		size_t len = strcspn(s, ", ");
		if (len > 0) {
			fprintf(f, "    set_real_ip_from %.*s;\n", (int)len, s);
			n++;
		}
		s += len;
		s += strspn(s, ", ");
	}
	if (n == 0)
		return 0;
	fprintf(f, "    real_ip_header X-Forwarded-For;\n"
		   "    real_ip_recursive on;\n"
		   "    map $http_x_forwarded_for $apim_forwarded_for {\n"
		   "        \"\" $realip_remote_addr;\n"
		   "        default \"$http_x_forwarded_for, $realip_remote_addr\";\n"
		   "    }\n");
	return 1;
}

static char *gw_render(const apim_config *cfg, const char *so, size_t solen)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (f == NULL)
		return NULL;
	int off = (int)cfg->server_port_offset;
	int http_port = (int)cfg->gateway_http_port + off;
	int https_port = (int)cfg->gateway_https_port + off;
	int tls = *cfg->http_tls_cert && *cfg->http_tls_key;

	fprintf(f, "# Generated by apimd (profile gateway) from apim.conf at every start and\n"
		   "# SIGHUP; edits here are lost. See docs/CONFIG.md, section [gateway].\n");
	fprintf(f, "load_module %s;\n", gw.module);
	if (geteuid() == 0) {
		char user[128], group[128];
		uid_t uid;
		gid_t gid;
		gw_worker_user(cfg, user, sizeof(user), group, sizeof(group), &uid, &gid);
		fprintf(f, "user %s %s;\n", user, group);
		char cache[PATH_MAX + 16];
		snprintf(cache, sizeof(cache), "%s/cache", gw.dir);
		if (chown(cache, uid, gid) != 0)
			log_warn(GW_COMP, "cannot give %s to %s: %s", cache, user, strerror(errno));
		if (uid != 0)
			gw_check_reachable(cache, uid, gid, user);
	}
	fprintf(f, "daemon off;\nmaster_process on;\n");
	if (cfg->gateway_workers > 0)
		fprintf(f, "worker_processes %lld;\n", (long long)cfg->gateway_workers);
	else
		fprintf(f, "worker_processes auto;\n");
	fprintf(f, "pid %s/nginx.pid;\nerror_log %s/error.log notice;\n", gw.dir, gw.dir);
	fprintf(f, "events {\n    worker_connections 4096;\n}\n");
	fprintf(f, "http {\n");
	fprintf(f, "    server_tokens off;\n");
	/* what a proxied API call allocates (the module's variables, the
	 * backend JWT, the request to the backend) fits in one block of
	 * the request's pool, not three of nginx's default 4k */
	fprintf(f, "    request_pool_size 16k;\n");
	const char *temps[] = {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"};
	for (size_t i = 0; i < sizeof(temps) / sizeof(temps[0]); i++)
		fprintf(f, "    %s_temp_path %s/tmp/%s;\n", temps[i], gw.dir, temps[i]);

	/* the JSON access log: the standard fields, then every $apim_* the
	 * module defines */
	fprintf(f, "    log_format apim_json escape=json '{\"time\":\"$time_iso8601\","
		   "\"remote_addr\":\"$remote_addr\",\"method\":\"$request_method\","
		   "\"uri\":\"$request_uri\",\"status\":$status,\"bytes_sent\":$bytes_sent,"
		   "\"request_time\":$request_time,"
		   "\"upstream_addr\":\"$upstream_addr\","
		   "\"upstream_response_time\":\"$upstream_response_time\"");
	static const char *vars[] = {"apim_api_id",   "apim_api_name",     "apim_api_version",
				     "apim_api_context", "apim_app_id",     "apim_app_name",
				     "apim_app_owner", "apim_key_type",     "apim_subscription_tier",
				     "apim_user",      "apim_resource",     "apim_fault_code"};
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		if (gw_module_knows(so, solen, vars[i]))
			fprintf(f, ",\"%s\":\"$%s\"", vars[i] + 5, vars[i]);
	fprintf(f, "}';\n");
	fprintf(f, "    access_log %s/access.log apim_json;\n", gw.dir);

	/* where the module gets its data (only what this module knows) */
	if (gw_module_knows(so, solen, "apim_control_plane_url")) {
		char url[1024];
		config_control_plane_url(cfg, url, sizeof(url));
		fprintf(f, "    apim_control_plane_url ");
		gw_quoted(f, url);
		fprintf(f, ";\n");
	}
	if (gw_module_knows(so, solen, "apim_gateway_credential")) {
		char *cred = gateway_nginx_credential(cfg);
		if (cred != NULL && *cred) {
			fprintf(f, "    apim_gateway_credential ");
			gw_quoted(f, cred);
			fprintf(f, ";\n");
		} else {
			log_warn(GW_COMP, "no gateway credential (gateway.credential, or "
					  "<server.home>/gateway-credential): the control plane will "
					  "refuse this gateway");
		}
		if (cred != NULL) {
			memset(cred, 0, strlen(cred));
			free(cred);
		}
	}
	if (gw_module_knows(so, solen, "apim_gateway_label")) {
		fprintf(f, "    apim_gateway_label ");
		gw_quoted(f, cfg->gateway_label);
		fprintf(f, ";\n");
	}
	if (gw_module_knows(so, solen, "apim_event_hub_url")) {
		char hub[1024];
		config_event_hub_url(cfg, gw.all_in_one, hub, sizeof(hub));
		if (*hub) {
			fprintf(f, "    apim_event_hub_url ");
			gw_quoted(f, hub);
			fprintf(f, ";\n");
		}
	}
	if (gw_module_knows(so, solen, "apim_cache_file"))
		fprintf(f, "    apim_cache_file %s/cache/snapshot.json;\n", gw.dir);

	/* the burst control and maxTps counters the workers share (131072) */
	if (gw_module_knows(so, solen, "apim_shared_zone"))
		fprintf(f, "    apim_shared_zone 4m;\n");

	/* the backend JWT (X-JWT-Assertion) and its public key at /jwks */
	int backend_jwt = cfg->gateway_backend_jwt && gw_module_knows(so, solen, "apim_backend_jwt") &&
			  gw_module_knows(so, solen, "apim_backend_jwt_key");
	if (cfg->gateway_backend_jwt && !backend_jwt)
		log_warn(GW_COMP, "gateway.backend_jwt is on but %s has no apim_backend_jwt: "
				  "no backend JWT is sent", gw.module);
	if (backend_jwt) {
		char key[PATH_MAX + 32];
		if (gw_backend_jwt_key(cfg, key, sizeof(key)) != APIM_OK) {
			fclose(f);
			free(buf);
			return NULL;
		}
		fprintf(f, "    apim_backend_jwt on;\n    apim_backend_jwt_key ");
		gw_quoted(f, key);
		fprintf(f, ";\n");
	}

	/* the endpoints: chosen per request by the module's balancer, with
	 * reused connections */
	int balancer = gw_module_knows(so, solen, "apim_balancer");
	if (balancer)
		fprintf(f, "    upstream apim_backend {\n"
			   "        apim_balancer;\n"
			   "        keepalive %lld;\n"
			   "    }\n",
			(long long)cfg->gateway_backend_keepalive);

	int trusted = gw_trusted_proxies(f, cfg);

	fprintf(f, "    server {\n");
	fprintf(f, "        listen %s:%d;\n", gw_listen_host(cfg), http_port);
	if (tls) {
		fprintf(f, "        listen %s:%d ssl;\n", gw_listen_host(cfg), https_port);
		fprintf(f, "        ssl_certificate ");
		gw_quoted(f, cfg->http_tls_cert);
		fprintf(f, ";\n        ssl_certificate_key ");
		gw_quoted(f, cfg->http_tls_key);
		fprintf(f, ";\n");
	}
	/* health checks for the load balancers, open to everyone: live while
	 * nginx answers, ready once the worker holds a snapshot */
	if (gw_module_knows(so, solen, "apim_health"))
		fprintf(f, "        location = /_apim/health/live {\n"
			   "            apim_health live;\n"
			   "            access_log off;\n"
			   "        }\n"
			   "        location = /_apim/health/ready {\n"
			   "            apim_health ready;\n"
			   "            access_log off;\n"
			   "        }\n");
	if (backend_jwt && gw_module_knows(so, solen, "apim_jwks"))
		fprintf(f, "        location = /jwks {\n"
			   "            apim_jwks;\n"
			   "        }\n");
	/* Prometheus metrics, from gateway.metrics_allow only (validated:
	 * addresses and CIDR ranges) */
	if (*cfg->gateway_metrics_allow && gw_module_knows(so, solen, "apim_metrics")) {
		fprintf(f, "        location = /_apim/metrics {\n"
			   "            apim_metrics;\n");
		for (const char *p = cfg->gateway_metrics_allow; *p;) {
			size_t n = strcspn(p, ", ");
			if (n > 0)
				fprintf(f, "            allow %.*s;\n", (int)n, p);
			p += n;
			p += strspn(p, ", ");
		}
		fprintf(f, "            deny all;\n"
			   "            access_log off;\n"
			   "        }\n");
	}
	fprintf(f, "        location / {\n"
		   "            apim_gateway on;\n");
	if (balancer && gw_module_knows(so, solen, "apim_backend_uri")) {
		/* no variables in proxy_pass: the module sets the request's URI
		 * to the backend's, and its balancer picks the endpoint and
		 * whether TLS is used (https here makes nginx prepare it) */
		fprintf(f, "            apim_backend_uri on;\n"
			   "            proxy_pass https://apim_backend;\n"
			   "            proxy_redirect off;\n");
	} else if (balancer) {
		fprintf(f, "            proxy_pass $apim_upstream_scheme://apim_backend"
			   "$apim_upstream_uri$is_args$args;\n");
	}
	if (balancer) {
		fprintf(f, "            proxy_set_header Host $apim_upstream_host;\n"
			   "            proxy_next_upstream error timeout;\n"
			   "            proxy_ssl_server_name on;\n"
			   "            proxy_ssl_name $apim_upstream_name;\n");
		if (*cfg->gateway_backend_ca_file) {
			fprintf(f, "            proxy_ssl_verify on;\n"
				   "            proxy_ssl_trusted_certificate ");
			gw_quoted(f, cfg->gateway_backend_ca_file);
			fprintf(f, ";\n");
		}
	} else {
		fprintf(f, "            proxy_pass $apim_backend$apim_rest$is_args$args;\n");
	}
	fprintf(f, "            proxy_http_version 1.1;\n"
		   "            proxy_set_header Connection \"\";\n"
		   "            proxy_set_header X-Forwarded-For %s;\n"
		   "            proxy_set_header X-Forwarded-Proto $scheme;\n"
		   "        }\n"
		   "    }\n"
		   "}\n",
		trusted ? "$apim_forwarded_for" : "$proxy_add_x_forwarded_for");
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* Folders, module lookup and the rendered file at path. */
static apim_rc gw_write_conf(const apim_config *cfg, const char *path)
{
	char sub[PATH_MAX + 32];
	const char *dirs[] = {"tmp", "cache"};
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(sub, sizeof(sub), "%s/%s", gw.dir, dirs[i]);
		if (apim_mkdirs(sub, 0755) != APIM_OK) {
			log_error(GW_COMP, "cannot create %s", sub);
			return APIM_EIO;
		}
	}
	if (gw_find_module(cfg) != APIM_OK)
		return APIM_ECONFIG;
	char *so = NULL;
	size_t solen = 0;
	if (apim_read_file(gw.module, 64u << 20, &so, &solen) != APIM_OK) {
		log_error(GW_COMP, "cannot read %s", gw.module);
		return APIM_ECONFIG;
	}
	char *text = gw_render(cfg, so, solen);
	free(so);
	if (text == NULL)
		return APIM_ENOMEM;
	apim_rc rc = apim_write_file(path, text, strlen(text), 0600);
	free(text);
	if (rc != APIM_OK)
		log_error(GW_COMP, "cannot write %s", path);
	return rc;
}

/*
 * Forks nginx with args (argv[0] is the binary). out_fd >= 0: its stdout
 * and stderr go there. The child dies with apimd (PR_SET_PDEATHSIG). A
 * CLOEXEC pipe reports an exec failure: returns -1 with errno set.
 */
static pid_t gw_spawn(char *const argv[], int out_fd)
{
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) != 0)
		return -1;
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(fds[0]);
		close(fds[1]);
		errno = e;
		return -1;
	}
	if (pid == 0) {
		close(fds[0]);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(127);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		int nul = open("/dev/null", O_RDWR);
		if (nul >= 0)
			dup2(nul, 0);
		if (out_fd >= 0) {
			dup2(out_fd, 1);
			dup2(out_fd, 2);
		}
		execv(argv[0], argv);
		int e = errno;
		ssize_t w = write(fds[1], &e, sizeof(e));
		(void)w;
		_exit(127);
	}
	close(fds[1]);
	int child_errno = 0;
	ssize_t got = read(fds[0], &child_errno, sizeof(child_errno));
	close(fds[0]);
	if (got == (ssize_t)sizeof(child_errno)) {
		waitpid(pid, NULL, 0);
		errno = child_errno;
		return -1;
	}
	return pid;
}

/* `nginx -t` on conf; on failure logs nginx's own words. */
static apim_rc gw_test(const apim_config *cfg, const char *conf)
{
	char prefix[PATH_MAX + 2], elog[PATH_MAX + 16];
	snprintf(prefix, sizeof(prefix), "%s/", gw.dir);
	snprintf(elog, sizeof(elog), "%s/error.log", gw.dir);
	char *const argv[] = {cfg->gateway_nginx_binary, "-t", "-q", "-p", prefix, "-e", elog,
			      "-c", (char *)conf, NULL};
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) != 0)
		return APIM_EIO;
	pid_t pid = gw_spawn(argv, fds[1]);
	close(fds[1]);
	if (pid < 0) {
		log_error(GW_COMP, "cannot run nginx %s: %s (set gateway.nginx_binary)",
			  cfg->gateway_nginx_binary, strerror(errno));
		close(fds[0]);
		return APIM_ECONFIG;
	}
	char out[GW_TEST_OUT_MAX];
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fds[0], out + n, sizeof(out) - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n == sizeof(out) - 1)
			break;
	}
	close(fds[0]);
	out[n] = '\0';
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return APIM_OK;
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
		out[--n] = '\0';
	log_error(GW_COMP, "nginx rejects the gateway configuration %s: %s", conf,
		  *out ? out : "(no message)");
	return APIM_ECONFIG;
}

/* 1 once nginx (pid) wrote its pid file: it does so after binding its
 * listening sockets, so a port taken by someone else is never mistaken for
 * ours. */
static int gw_pidfile_is(pid_t pid)
{
	char path[PATH_MAX + 16], *text = NULL;
	snprintf(path, sizeof(path), "%s/nginx.pid", gw.dir);
	if (apim_read_file(path, 64, &text, NULL) != APIM_OK)
		return 0;
	int64_t v = 0;
	char *nl = strchr(text, '\n');
	if (nl != NULL)
		*nl = '\0';
	int ok = apim_parse_i64(text, &v) == 0 && v == (int64_t)pid;
	free(text);
	return ok;
}

/* 1 when something accepts TCP connections on 127.0.0.1 (or host):port. */
static int gw_listening(const char *host, int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (strcmp(host, "0.0.0.0") == 0 || inet_pton(AF_INET, host, &a.sin_addr) != 1)
		inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return 0;
	int ok = connect(s, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(s);
	return ok;
}

apim_rc gateway_nginx_start(const apim_config *cfg, int all_in_one)
{
	gw.all_in_one = all_in_one;
	gw.url[0] = '\0';
	char dir[PATH_MAX + 16];
	snprintf(dir, sizeof(dir), "%s/gateway", cfg->server_home);
	if (apim_mkdirs(dir, 0755) != APIM_OK || realpath(dir, gw.dir) == NULL) {
		log_error(GW_COMP, "cannot create %s", dir);
		return APIM_EIO;
	}
	snprintf(gw.conf, sizeof(gw.conf), "%s/nginx.conf", gw.dir);
	apim_rc rc = gw_write_conf(cfg, gw.conf);
	if (rc != APIM_OK)
		return rc;
	rc = gw_test(cfg, gw.conf);
	if (rc != APIM_OK)
		return rc;

	char prefix[PATH_MAX + 2], elog[PATH_MAX + 16];
	snprintf(prefix, sizeof(prefix), "%s/", gw.dir);
	snprintf(elog, sizeof(elog), "%s/error.log", gw.dir);
	char *const argv[] = {cfg->gateway_nginx_binary, "-p", prefix, "-e", elog, "-c", gw.conf,
			      NULL};
	/* nginx's own stderr (start-up messages before its error_log is open)
	 * goes to a file, so that apimd's log stays one format */
	char errpath[PATH_MAX + 32];
	snprintf(errpath, sizeof(errpath), "%s/nginx.pid", gw.dir);
	unlink(errpath); /* a stale one would look like our nginx's */
	snprintf(errpath, sizeof(errpath), "%s/nginx.stderr", gw.dir);
	int errfd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	pid_t pid = gw_spawn(argv, errfd);
	if (errfd >= 0)
		close(errfd);
	if (pid < 0) {
		log_error(GW_COMP, "cannot run nginx %s: %s", cfg->gateway_nginx_binary,
			  strerror(errno));
		return APIM_EUNAVAIL;
	}
	gw.pid = pid;
	int port = (int)(cfg->gateway_http_port + cfg->server_port_offset);
	int64_t deadline = apim_mono_ms() + GW_START_MS;
	while (!gw_pidfile_is(pid) || !gw_listening(gw_listen_host(cfg), port)) {
		int status = 0;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			gw.pid = -1;
			char *text = NULL;
			size_t tlen = 0;
			if (apim_read_file(errpath, 1 << 20, &text, &tlen) == APIM_OK)
				while (tlen > 0 && (text[tlen - 1] == '\n' || text[tlen - 1] == ' '))
					text[--tlen] = '\0';
			log_error(GW_COMP, "nginx exited at start (status %d): %s",
				  WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
				  text != NULL && *text ? text : "(see error.log)");
			free(text);
			return APIM_EUNAVAIL;
		}
		if (apim_mono_ms() > deadline) {
			log_error(GW_COMP, "nginx does not listen on port %d after %d s", port,
				  GW_START_MS / 1000);
			gateway_nginx_stop();
			return APIM_EUNAVAIL;
		}
		gw_sleep_ms(20);
	}
	const char *host = gw_listen_host(cfg);
	if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
		host = cfg->server_hostname;
	snprintf(gw.url, sizeof(gw.url), "http://%s:%d", host, port);
	log_info(GW_COMP, "nginx (pid %ld) serves the gateway on %s:%d; configuration %s",
		 (long)pid, gw_listen_host(cfg), port, gw.conf);
	return APIM_OK;
}

apim_rc gateway_nginx_reload(const apim_config *cfg)
{
	if (gw.pid <= 0)
		return APIM_EUNAVAIL;
	char next[PATH_MAX + 32];
	snprintf(next, sizeof(next), "%s.next", gw.conf);
	apim_rc rc = gw_write_conf(cfg, next);
	if (rc == APIM_OK)
		rc = gw_test(cfg, next);
	if (rc != APIM_OK) {
		unlink(next);
		log_error(GW_COMP, "reload refused; nginx keeps its current configuration");
		return rc;
	}
	if (rename(next, gw.conf) != 0) {
		log_error(GW_COMP, "cannot replace %s: %s", gw.conf, strerror(errno));
		unlink(next);
		return APIM_EIO;
	}
	if (kill(gw.pid, SIGHUP) != 0) {
		log_error(GW_COMP, "cannot signal nginx (pid %ld): %s", (long)gw.pid,
			  strerror(errno));
		return APIM_EUNAVAIL;
	}
	log_info(GW_COMP, "nginx (pid %ld) reloads %s", (long)gw.pid, gw.conf);
	return APIM_OK;
}

int gateway_nginx_alive(void)
{
	if (gw.pid <= 0)
		return 0;
	int status = 0;
	if (waitpid(gw.pid, &status, WNOHANG) == gw.pid) {
		log_error(GW_COMP, "nginx (pid %ld) exited unexpectedly (%s %d); see %s/error.log",
			  (long)gw.pid, WIFEXITED(status) ? "status" : "signal",
			  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), gw.dir);
		gw.pid = -1;
		gw.url[0] = '\0';
		return 0;
	}
	return 1;
}

/* Waits up to ms for the child; 1 when reaped. */
static int gw_wait(int ms)
{
	for (int waited = 0; waited <= ms; waited += 20) {
		int status = 0;
		pid_t r = waitpid(gw.pid, &status, WNOHANG);
		if (r == gw.pid || (r < 0 && errno == ECHILD))
			return 1;
		gw_sleep_ms(20);
	}
	return 0;
}

void gateway_nginx_stop(void)
{
	if (gw.pid <= 0)
		return;
	kill(gw.pid, SIGQUIT); /* graceful: finish the requests in flight */
	if (!gw_wait(10000)) {
		log_warn(GW_COMP, "nginx did not stop within 10 s; terminating it");
		kill(gw.pid, SIGTERM);
		if (!gw_wait(5000)) {
			kill(gw.pid, SIGKILL);
			waitpid(gw.pid, NULL, 0);
		}
	}
	log_info(GW_COMP, "nginx (pid %ld) stopped", (long)gw.pid);
	gw.pid = -1;
	gw.url[0] = '\0';
}

const char *gateway_nginx_url(void)
{
	return gw.url;
}
