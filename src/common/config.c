#include "common/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

typedef enum { CFG_STRING, CFG_INT, CFG_BOOL } cfg_type;

typedef struct config_key config_key;
/* Validators return NULL when the value is fine, else a message. */
typedef const char *(*cfg_validator)(const config_key *k, const char *s, int64_t i);

struct config_key {
	const char *section;
	const char *name;
	cfg_type type;
	size_t offset;
	const char *def;
	int64_t min, max; /* CFG_INT bounds */
	cfg_validator validate;
	const char *doc;
};

static const char *valid_db_url(const config_key *k, const char *s, int64_t i)
{
	(void)k;
	(void)i;
	if (*s == '\0' || strncmp(s, "sqlite://", 9) == 0 || strncmp(s, "postgresql://", 13) == 0 ||
	    strncmp(s, "postgres://", 11) == 0)
		return NULL;
	return "must be a sqlite:///path or postgresql://user:pass@host:port/db URL";
}

static const char *valid_log_level(const config_key *k, const char *s, int64_t i)
{
	(void)k;
	(void)i;
	log_level lv;
	return log_level_parse(s, &lv) == 0 ? NULL : "must be one of debug, info, warn, error";
}

static const char *valid_log_format(const config_key *k, const char *s, int64_t i)
{
	(void)k;
	(void)i;
	return strcmp(s, "json") == 0 || strcmp(s, "text") == 0 ? NULL : "must be json or text";
}

static const char *valid_signing_alg(const config_key *k, const char *s, int64_t i)
{
	(void)k;
	(void)i;
	return strcmp(s, "RS256") == 0 || strcmp(s, "ES256") == 0 ? NULL : "must be RS256 or ES256";
}

static const char *valid_master_key(const config_key *k, const char *s, int64_t i)
{
	(void)k;
	(void)i;
	if (*s == '\0')
		return NULL;
	size_t n = 0;
	unsigned char *b = apim_base64_decode(s, strlen(s), &n);
	free(b);
	return b != NULL && n == 32 ? NULL : "must be 32 bytes in base64 (openssl rand -base64 32)";
}

static const char *valid_nonempty(const config_key *k, const char *s, int64_t i)
{
	(void)k;
	(void)i;
	return *s ? NULL : "must not be empty";
}

static const char *valid_nats_url(const config_key *k, const char *s, int64_t i)
{
	(void)k;
	(void)i;
	if (*s == '\0' || strncmp(s, "nats://", 7) == 0 || strncmp(s, "tls://", 6) == 0)
		return NULL;
	return "must be empty or a nats://host:port URL";
}

/* Addresses or CIDR ranges (IPv4, IPv6), separated by commas or spaces. */
static const char *valid_cidr_list(const config_key *k, const char *s, int64_t i)
{
	(void)k;
	(void)i;
	while (*s) {
		size_t n = strcspn(s, ", ");
		if (n > 0) {
			char item[64], *slash;
			if (n >= sizeof(item))
				return "must be addresses or CIDR ranges (127.0.0.1, 10.0.0.0/8, ::1)";
			memcpy(item, s, n);
			item[n] = '\0';
			unsigned char addr[16];
			int v6 = strchr(item, ':') != NULL;
			long bits = -1;
			slash = strchr(item, '/');
			if (slash != NULL) {
				char *end;
				*slash = '\0';
				bits = strtol(slash + 1, &end, 10);
				if (slash[1] == '\0' || *end != '\0' || bits < 0 || bits > (v6 ? 128 : 32))
					return "must be addresses or CIDR ranges (127.0.0.1, 10.0.0.0/8, ::1)";
			}
			if (inet_pton(v6 ? AF_INET6 : AF_INET, item, addr) != 1)
				return "must be addresses or CIDR ranges (127.0.0.1, 10.0.0.0/8, ::1)";
		}
		s += n;
		s += strspn(s, ", ");
	}
	return NULL;
}

static const char *valid_password(const config_key *k, const char *s, int64_t i)
{
	(void)k;
	(void)i;
	if (*s == '\0')
		return NULL; /* generated at first start */
	return strlen(s) >= 8 && strlen(s) <= 256 ? NULL : "must be 8 to 256 characters";
}

#define OFF(f) offsetof(apim_config, f)
static const config_key config_keys[] = {
	{"server", "home", CFG_STRING, OFF(server_home), "./var", 0, 0, valid_nonempty,
	 "Folder for SQLite files, the generated admin password, keys and logs."},
	{"server", "port_offset", CFG_INT, OFF(server_port_offset), "0", 0, 50000, NULL,
	 "Added to every listening port (control plane 9443, gateway 8280/8243), like the "
	 "reference's `[server] offset`."},
	{"server", "host", CFG_STRING, OFF(server_host), "0.0.0.0", 0, 0, valid_nonempty,
	 "Address the control plane listens on."},
	{"server", "hostname", CFG_STRING, OFF(server_hostname), "localhost", 0, 0, valid_nonempty,
	 "Public host name used in URLs the server hands out."},
	{"server", "threads", CFG_INT, OFF(server_threads), "8", 1, 256, NULL,
	 "HTTP worker threads of the control plane; each holds its own database connections."},
	{"http", "max_body_kb", CFG_INT, OFF(http_max_body_kb), "1024", 1, 65536, NULL,
	 "Largest request body accepted, in KiB; larger bodies get 413."},
	{"http", "tls_cert", CFG_STRING, OFF(http_tls_cert), "", 0, 0, NULL,
	 "PEM certificate file; with `tls_key`, the control plane serves HTTPS."},
	{"http", "tls_key", CFG_STRING, OFF(http_tls_key), "", 0, 0, NULL, "PEM private key file."},
	{"http", "cors_origins", CFG_STRING, OFF(http_cors_origins), "*", 0, 0, NULL,
	 "Value of Access-Control-Allow-Origin on REST responses; empty disables CORS."},
	{"database", "apimgtdb_url", CFG_STRING, OFF(database_apimgtdb_url), "", 0, 0, valid_db_url,
	 "apimgtdb URL: `sqlite:///path/apimgt.db` or `postgresql://user:pass@host:port/db`. "
	 "Empty: `sqlite://<server.home>/apimgt.db`."},
	{"database", "shareddb_url", CFG_STRING, OFF(database_shareddb_url), "", 0, 0, valid_db_url,
	 "shareddb URL, same forms. Empty: `sqlite://<server.home>/shared.db`."},
	{"database", "busy_timeout_ms", CFG_INT, OFF(database_busy_timeout_ms), "5000", 0, 600000,
	 NULL, "How long a statement waits for a lock (SQLite) or a lost PostgreSQL connection "
	       "to come back before the request fails with 503."},
	{"admin", "username", CFG_STRING, OFF(admin_username), "admin", 0, 0, valid_nonempty,
	 "Name of the administrator account created at first start."},
	{"admin", "password", CFG_STRING, OFF(admin_password), "", 0, 0, valid_password,
	 "Initial administrator password. Empty: generated at first start, printed once and "
	 "stored in `<server.home>/admin-password` (mode 0600)."},
	{"security", "lockout_attempts", CFG_INT, OFF(security_lockout_attempts), "5", 1, 1000,
	 NULL, "Failed logins in a row that lock an account."},
	{"security", "lockout_seconds", CFG_INT, OFF(security_lockout_seconds), "300", 1, 86400,
	 NULL, "How long a locked account stays locked."},
	{"security", "argon2_opslimit", CFG_INT, OFF(security_argon2_opslimit), "2", 1, 10, NULL,
	 "argon2id passes for password hashes."},
	{"security", "argon2_memlimit_kb", CFG_INT, OFF(security_argon2_memlimit_kb), "65536", 8,
	 1048576, NULL, "argon2id memory per password hash, in KiB."},
	{"security", "auth_cache_seconds", CFG_INT, OFF(security_auth_cache_seconds), "60", 0,
	 3600, NULL,
	 "How long a verified Basic credential is remembered (keyed by a keyed hash, never the "
	 "password) so that argon2id runs once per client and not per request; 0 disables."},
	{"keymanager", "signing_alg", CFG_STRING, OFF(keymanager_signing_alg), "RS256", 0, 0,
	 valid_signing_alg, "Algorithm of the key that signs new access tokens: RS256 or ES256. "
			    "Changing it rotates to a new key of that kind at start."},
	{"keymanager", "master_key", CFG_STRING, OFF(keymanager_master_key), "", 0, 0,
	 valid_master_key,
	 "Key (32 bytes, base64) that encrypts the signing keys in shareddb; every Key Manager "
	 "node needs the same one. Empty: read from, or generated into, "
	 "`<server.home>/master-key` (mode 0600)."},
	{"keymanager", "issuer", CFG_STRING, OFF(keymanager_issuer), "", 0, 0, NULL,
	 "`iss` of issued tokens. Empty: `<scheme>://<server.hostname>:<port>/oauth2/token`, as "
	 "the reference."},
	{"keymanager", "access_token_validity", CFG_INT, OFF(keymanager_access_token_validity),
	 "3600", 60, 31536000, NULL,
	 "Default lifetime of access tokens, in seconds (an application's key may set its own)."},
	{"keymanager", "refresh_token_validity", CFG_INT, OFF(keymanager_refresh_token_validity),
	 "86400", 60, 31536000, NULL, "Lifetime of refresh tokens, in seconds."},
	{"keymanager", "code_validity", CFG_INT, OFF(keymanager_code_validity), "300", 10, 3600,
	 NULL, "Lifetime of authorization codes, in seconds."},
	{"keymanager", "auth_failures_per_minute", CFG_INT,
	 OFF(keymanager_auth_failures_per_minute), "10", 1, 100000, NULL,
	 "Failed client or user authentications allowed per client id or user name and minute "
	 "on the token endpoints; past it they get 429."},
	{"keymanager", "leeway", CFG_INT, OFF(keymanager_leeway), "30", 0, 600, NULL,
	 "Clock skew tolerated on `exp`/`nbf`, in seconds."},
	{"devportal", "self_signup", CFG_BOOL, OFF(devportal_self_signup), "true", 0, 1, NULL,
	 "Whether anyone may sign up at `/api/identity/user/v1.0/me` (new users get "
	 "`Internal/subscriber`)."},
	{"event_hub", "url", CFG_STRING, OFF(event_hub_url), "", 0, 0, valid_nats_url,
	 "NATS URL of the event hub the control plane publishes changes to "
	 "(`nats://host:4222`; several servers comma-separated). Empty: none configured "
	 "(see `start_local`)."},
	{"event_hub", "start_local", CFG_BOOL, OFF(event_hub_start_local), "true", 0, 1, NULL,
	 "With an empty `url`, the all-in-one profile starts a local `nats-server` child on "
	 "127.0.0.1:4222+`server.port_offset` and publishes to it."},
	{"event_hub", "change_log_keep_rows", CFG_INT, OFF(event_hub_change_log_keep_rows), "10000",
	 1, 100000000, NULL,
	 "The control plane keeps at least this many of the newest rows of the change log "
	 "(`am_change_log`, what gateways catch up from), whatever their age."},
	{"event_hub", "change_log_keep_days", CFG_INT, OFF(event_hub_change_log_keep_days), "7", 0,
	 3650, NULL,
	 "Rows younger than this many days are kept too; older rows beyond "
	 "`change_log_keep_rows` are purged. A gateway further behind than the oldest row kept "
	 "gets a full snapshot (`/internal/data/v1/changes` answers `\"full\": true`)."},
	{"event_hub", "change_log_purge_seconds", CFG_INT, OFF(event_hub_change_log_purge_seconds),
	 "300", 1, 86400, NULL,
	 "How often each control-plane node purges the change log (one bounded `DELETE`; several "
	 "nodes doing it at once is harmless)."},
	{"traffic_manager", "id", CFG_STRING, OFF(traffic_manager_id), "", 0, 0, NULL,
	 "Name of this Traffic Manager in its heartbeats and decisions (`apim.throttle.tm`). "
	 "Empty: `<hostname>/<pid>`. It reads its rate-limit policies from "
	 "`gateway.control_plane_url` with `gateway.credential`, as the gateways do."},
	{"traffic_manager", "port", CFG_INT, OFF(traffic_manager_port), "0", 0, 65535, NULL,
	 "Port of the health and metrics server of `--profile traffic-manager` (`/health/live`, "
	 "`/health/ready`, `/metrics`) on `server.host`. 0: 9443+`server.port_offset`, the port "
	 "a control plane would use (the profile runs none). In a process with a control plane "
	 "(all-in-one) the control plane's `/metrics` carries the Traffic Manager's counters."},
	{"gateway", "credential", CFG_STRING, OFF(gateway_credential), "", 0, 0, NULL,
	 "Secret the gateways (and Traffic Managers) send in `X-APIM-Gateway-Credential` to "
	 "read the internal data API (`/internal/data/v1`). Empty: read from, or generated "
	 "into, `<server.home>/gateway-credential` (mode 0600)."},
	{"gateway", "http_port", CFG_INT, OFF(gateway_http_port), "8280", 1, 65535, NULL,
	 "HTTP port of the gateway (nginx) before `server.port_offset` (reference: 8280)."},
	{"gateway", "https_port", CFG_INT, OFF(gateway_https_port), "8243", 1, 65535, NULL,
	 "HTTPS port of the gateway before `server.port_offset` (reference: 8243); served only "
	 "when `http.tls_cert` and `http.tls_key` are set."},
	{"gateway", "workers", CFG_INT, OFF(gateway_workers), "1", 0, 256, NULL,
	 "nginx worker processes of the gateway; 0: one per CPU (`worker_processes auto`)."},
	{"gateway", "label", CFG_STRING, OFF(gateway_label), "Default", 0, 0, valid_nonempty,
	 "Gateway environment this gateway serves (the API revisions deployed to it)."},
	{"gateway", "control_plane_url", CFG_STRING, OFF(gateway_control_plane_url), "", 0, 0,
	 NULL, "Base URL of the control plane whose internal data API the gateway (and the "
	       "Traffic Manager, for its rate-limit policies) reads. "
	       "Empty: this host's control plane, `http(s)://127.0.0.1:<9443+server.port_offset>`."},
	{"gateway", "nginx_binary", CFG_STRING, OFF(gateway_nginx_binary), "/usr/sbin/nginx", 0,
	 0, valid_nonempty, "nginx executable the gateway runs (Debian's nginx 1.22)."},
	{"gateway", "module_path", CFG_STRING, OFF(gateway_module_path), "", 0, 0, NULL,
	 "`ngx_http_apim_module.so` to load. Empty: the one next to the apimd executable (the "
	 "build tree), else `/usr/lib/nginx/modules/ngx_http_apim_module.so`."},
	{"gateway", "user", CFG_STRING, OFF(gateway_user), "", 0, 0, NULL,
	 "User the nginx workers run as when apimd runs as root (they read and write "
	 "`<server.home>/gateway/cache`). Empty: the owner of `server.home`."},
	{"gateway", "trusted_proxies", CFG_STRING, OFF(gateway_trusted_proxies), "", 0, 0,
	 valid_cidr_list,
	 "Addresses and CIDR ranges (comma-separated) of the load balancers or proxies in front "
	 "of the gateway. A request from one of them is attributed to the client address in its "
	 "`X-Forwarded-For` (the rightmost one that is not itself trusted; nginx's realip "
	 "module), for blocking conditions, IP conditions, custom policies' `$clientIp` and the "
	 "access log. Empty: trust nobody, the connection's address counts."},
	{"gateway", "backend_keepalive", CFG_INT, OFF(gateway_backend_keepalive), "64", 1, 10000,
	 NULL, "Idle connections to the backends (API endpoints) each nginx worker keeps open "
	       "for reuse (`keepalive` of the rendered `upstream apim_backend`)."},
	{"gateway", "backend_ca_file", CFG_STRING, OFF(gateway_backend_ca_file), "", 0, 0, NULL,
	 "PEM file of the CAs that https endpoints must be signed by; their certificate and "
	 "host name are then verified (`proxy_ssl_verify on`). Empty: not verified."},
	{"gateway", "backend_jwt", CFG_BOOL, OFF(gateway_backend_jwt), "false", 0, 1, NULL,
	 "Send a signed JWT describing the caller to the backend (`X-JWT-Assertion`) and serve "
	 "its public key at `/jwks` on the gateway. The RSA key is generated on first start "
	 "into `<server.home>/gateway/backend-jwt.pem` (mode 0600)."},
	{"gateway", "metrics_allow", CFG_STRING, OFF(gateway_metrics_allow), "127.0.0.1, ::1", 0, 0,
	 valid_cidr_list,
	 "Addresses and CIDR ranges (comma-separated) that may read the gateway's Prometheus "
	 "metrics at `/_apim/metrics` on its listeners; others get 403. Empty: the gateway "
	 "serves no metrics."},
	{"log", "level", CFG_STRING, OFF(log_level), "info", 0, 0, valid_log_level,
	 "Least severe level written: debug, info, warn, error."},
	{"log", "format", CFG_STRING, OFF(log_format), "json", 0, 0, valid_log_format,
	 "`json` (one object per line) or `text`."},
};
#undef OFF

#define NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

static void env_name(const config_key *k, char *out, size_t len)
{
	snprintf(out, len, "APIM_%s_%s", k->section, k->name);
	for (char *p = out; *p; p++)
		*p = (char)toupper((unsigned char)*p);
}

/* Parses and stores one value; returns NULL or an error message (static). */
static const char *set_value(apim_config *cfg, const config_key *k, const char *v)
{
	char *slot = (char *)cfg + k->offset;
	int64_t i = 0;
	static _Thread_local char msg[256];
	switch (k->type) {
	case CFG_STRING:
		break;
	case CFG_INT:
		if (apim_parse_i64(v, &i) != 0)
			return "must be an integer";
		if (i < k->min || i > k->max) {
			snprintf(msg, sizeof(msg), "must be between %lld and %lld",
				 (long long)k->min, (long long)k->max);
			return msg;
		}
		break;
	case CFG_BOOL:
		if (strcmp(v, "true") == 0)
			i = 1;
		else if (strcmp(v, "false") == 0)
			i = 0;
		else
			return "must be true or false";
		break;
	}
	if (k->validate != NULL) {
		const char *e = k->validate(k, v, i);
		if (e != NULL)
			return e;
	}
	if (k->type == CFG_STRING) {
		char **sp = (char **)slot;
		char *dup = strdup(v);
		if (dup == NULL)
			return "out of memory";
		free(*sp);
		*sp = dup;
	} else {
		*(int64_t *)slot = i;
	}
	return NULL;
}

static const config_key *find_key(const char *section, const char *name)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(config_keys[i].section, section) == 0 &&
		    strcmp(config_keys[i].name, name) == 0)
			return &config_keys[i];
	return NULL;
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* Decodes a TOML basic string "..." in place (escapes \" \\ \n \t);
 * returns NULL on a bad string. rest receives what follows the string. */
static char *unquote(char *s, char **rest)
{
	char *out = s, *p = s + 1;
	for (;;) {
		if (*p == '\0')
			return NULL;
		if (*p == '"')
			break;
		if (*p == '\\') {
			p++;
			switch (*p) {
			case '"': *out++ = '"'; break;
			case '\\': *out++ = '\\'; break;
			case 'n': *out++ = '\n'; break;
			case 't': *out++ = '\t'; break;
			default: return NULL;
			}
			p++;
			continue;
		}
		*out++ = *p++;
	}
	*rest = p + 1;
	*out = '\0';
	return s;
}

static apim_rc parse_file(apim_config *cfg, const char *path, char *err, size_t errlen)
{
	char *text = NULL;
	apim_rc rc = apim_read_file(path, 1 << 20, &text, NULL);
	if (rc != APIM_OK) {
		snprintf(err, errlen, "%s: cannot read: %s", path, apim_strerror(rc));
		return APIM_ECONFIG;
	}
	char section[64] = "";
	int lineno = 0;
	char *save = NULL;
	rc = APIM_OK;
	/* strtok_r would skip empty lines and so miscount: split by hand. */
	for (char *line = text; line != NULL; line = save) {
		char *nl = strchr(line, '\n');
		save = nl ? nl + 1 : NULL;
		if (nl)
			*nl = '\0';
		lineno++;
		char *s = trim(line);
		if (*s == '\0' || *s == '#')
			continue;
		if (*s == '[') {
			char *e = strchr(s, ']');
			if (e == NULL || (*trim(e + 1) != '\0' && *trim(e + 1) != '#')) {
				snprintf(err, errlen, "%s:%d: malformed section header", path, lineno);
				rc = APIM_ECONFIG;
				break;
			}
			*e = '\0';
			char *name = trim(s + 1);
			int known = 0;
			for (size_t i = 0; i < NKEYS; i++)
				if (strcmp(config_keys[i].section, name) == 0)
					known = 1;
			if (!known || strlen(name) >= sizeof(section)) {
				snprintf(err, errlen, "%s:%d: unknown section [%s]", path, lineno, name);
				rc = APIM_ECONFIG;
				break;
			}
			snprintf(section, sizeof(section), "%s", name);
			continue;
		}
		char *eq = strchr(s, '=');
		if (eq == NULL) {
			snprintf(err, errlen, "%s:%d: expected key = value", path, lineno);
			rc = APIM_ECONFIG;
			break;
		}
		*eq = '\0';
		char *key = trim(s), *val = trim(eq + 1);
		const config_key *k = find_key(section, key);
		if (k == NULL) {
			if (*section)
				snprintf(err, errlen, "%s:%d: unknown key '%s' in [%s]", path, lineno,
					 key, section);
			else
				snprintf(err, errlen, "%s:%d: unknown key '%s' outside any section",
					 path, lineno, key);
			rc = APIM_ECONFIG;
			break;
		}
		char *rest = NULL;
		if (*val == '"') {
			if (k->type != CFG_STRING) {
				snprintf(err, errlen, "%s:%d: %s.%s: must be %s, not a string", path,
					 lineno, section, key, k->type == CFG_INT ? "an integer" : "true or false");
				rc = APIM_ECONFIG;
				break;
			}
			val = unquote(val, &rest);
			if (val == NULL) {
				snprintf(err, errlen, "%s:%d: unterminated or malformed string", path,
					 lineno);
				rc = APIM_ECONFIG;
				break;
			}
			rest = trim(rest);
			if (*rest && *rest != '#') {
				snprintf(err, errlen, "%s:%d: unexpected text after the value", path,
					 lineno);
				rc = APIM_ECONFIG;
				break;
			}
		} else {
			char *hash = strchr(val, '#');
			if (hash)
				*hash = '\0';
			val = trim(val);
			if (k->type == CFG_STRING) {
				snprintf(err, errlen, "%s:%d: %s.%s: strings must be quoted", path, lineno,
					 section, key);
				rc = APIM_ECONFIG;
				break;
			}
		}
		const char *e = set_value(cfg, k, val);
		if (e != NULL) {
			snprintf(err, errlen, "%s:%d: %s.%s %s", path, lineno, section, key, e);
			rc = APIM_ECONFIG;
			break;
		}
	}
	free(text);
	return rc;
}

void config_free(apim_config *cfg)
{
	for (size_t i = 0; i < NKEYS; i++) {
		if (config_keys[i].type == CFG_STRING) {
			char **sp = (char **)((char *)cfg + config_keys[i].offset);
			free(*sp);
			*sp = NULL;
		}
	}
}

apim_rc config_load(apim_config *cfg, const char *path, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < NKEYS; i++) {
		const char *e = set_value(cfg, &config_keys[i], config_keys[i].def);
		if (e != NULL) {
			snprintf(err, errlen, "default of %s.%s %s", config_keys[i].section,
				 config_keys[i].name, e);
			config_free(cfg);
			return APIM_ECONFIG;
		}
	}
	if (path != NULL && parse_file(cfg, path, err, errlen) != APIM_OK) {
		config_free(cfg);
		return APIM_ECONFIG;
	}
	for (size_t i = 0; i < NKEYS; i++) {
		char name[128];
		env_name(&config_keys[i], name, sizeof(name));
		const char *v = getenv(name);
		if (v == NULL)
			continue;
		const char *e = set_value(cfg, &config_keys[i], v);
		if (e != NULL) {
			snprintf(err, errlen, "%s: %s", name, e);
			config_free(cfg);
			return APIM_ECONFIG;
		}
	}
	if ((*cfg->http_tls_cert == '\0') != (*cfg->http_tls_key == '\0')) {
		snprintf(err, errlen, "http.tls_cert and http.tls_key must be set together");
		config_free(cfg);
		return APIM_ECONFIG;
	}
	return APIM_OK;
}

void config_print_docs(FILE *out)
{
	const char *last = "";
	for (size_t i = 0; i < NKEYS; i++) {
		const config_key *k = &config_keys[i];
		if (strcmp(k->section, last) != 0) {
			fprintf(out, "\n## [%s]\n\n| key | environment | type | default | meaning |\n"
				     "|---|---|---|---|---|\n", k->section);
			last = k->section;
		}
		char env[128];
		env_name(k, env, sizeof(env));
		const char *type = k->type == CFG_INT ? "integer" : k->type == CFG_BOOL ? "boolean" : "string";
		char range[64] = "";
		if (k->type == CFG_INT)
			snprintf(range, sizeof(range), " (%lld–%lld)", (long long)k->min, (long long)k->max);
		fprintf(out, "| `%s` | `%s` | %s%s | `%s` | %s |\n", k->name, env, type, range,
			*k->def ? k->def : "\"\"", k->doc);
	}
}

void config_control_plane_url(const apim_config *cfg, char *buf, size_t len)
{
	if (*cfg->gateway_control_plane_url)
		snprintf(buf, len, "%s", cfg->gateway_control_plane_url);
	else
		snprintf(buf, len, "%s://127.0.0.1:%d", *cfg->http_tls_cert ? "https" : "http",
			 APIM_CONTROL_PLANE_PORT + (int)cfg->server_port_offset);
}

void config_event_hub_url(const apim_config *cfg, int all_in_one, char *buf, size_t len)
{
	if (*cfg->event_hub_url)
		snprintf(buf, len, "%s", cfg->event_hub_url);
	else if (all_in_one && cfg->event_hub_start_local)
		snprintf(buf, len, "nats://127.0.0.1:%d",
			 APIM_EVENT_HUB_PORT + (int)cfg->server_port_offset);
	else if (len > 0)
		buf[0] = '\0';
}
