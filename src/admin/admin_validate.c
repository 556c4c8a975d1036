#include "admin/admin_validate.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/*
 * The reference's units are sec, min, hour, day, month and year; its
 * Admin portal also offers week, so scripts written against it may send it.
 */
const char *const admin_time_units[] = {"sec", "min", "hour", "day", "week", "month", "year",
					NULL};
static const long long time_unit_secs[] = {1, 60, 3600, 86400, 604800, 2592000, 31536000};

const char *const admin_key_template_tokens[] = {
	"$userId",  "$apiContext", "$apiVersion", "$resourceKey", "$appId",
	"$appTenant", "$apiTenant", "$clientIp",  "$apiName", "$customProperty.<name>", NULL,
};

const char *admin_validate_time_unit(const char *s)
{
	if (s == NULL)
		return NULL;
	for (size_t i = 0; admin_time_units[i] != NULL; i++)
		if (strcasecmp(s, admin_time_units[i]) == 0)
			return admin_time_units[i];
	return NULL;
}

long long admin_time_unit_seconds(const char *unit)
{
	if (unit == NULL)
		return 0;
	for (size_t i = 0; admin_time_units[i] != NULL; i++)
		if (strcmp(unit, admin_time_units[i]) == 0)
			return time_unit_secs[i];
	return 0;
}

static int parse_ip(const char *s, int *family, unsigned char addr[16])
{
	if (s == NULL || *s == '\0' || strlen(s) > 45)
		return -1;
	if (inet_pton(AF_INET, s, addr) == 1) {
		*family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, addr) == 1) {
		*family = AF_INET6;
		return 0;
	}
	return -1;
}

apim_rc admin_validate_ip(const char *field, const char *s, int *family, unsigned char addr[16],
			  char *err, size_t errlen)
{
	int fam;
	unsigned char buf[16];
	if (parse_ip(s, &fam, buf) != 0) {
		snprintf(err, errlen,
			 "'%s' must be an IPv4 address (e.g. 192.168.1.10) or an IPv6 address "
			 "(e.g. 2001:db8::1) (got '%s')",
			 field, s ? s : "");
		return APIM_EINVAL;
	}
	if (family)
		*family = fam;
	if (addr)
		memcpy(addr, buf, 16);
	return APIM_OK;
}

apim_rc admin_validate_ip_range(const char *start_field, const char *start,
				const char *end_field, const char *end, char *err, size_t errlen)
{
	int f1, f2;
	unsigned char a[16], b[16];
	apim_rc rc = admin_validate_ip(start_field, start, &f1, a, err, errlen);
	if (rc != APIM_OK)
		return rc;
	rc = admin_validate_ip(end_field, end, &f2, b, err, errlen);
	if (rc != APIM_OK)
		return rc;
	if (f1 != f2) {
		snprintf(err, errlen,
			 "'%s' (%s) and '%s' (%s) must both be IPv4 or both be IPv6 addresses",
			 start_field, start, end_field, end);
		return APIM_EINVAL;
	}
	if (memcmp(a, b, f1 == AF_INET ? 4 : 16) > 0) {
		snprintf(err, errlen, "'%s' (%s) must not be greater than '%s' (%s)", start_field,
			 start, end_field, end);
		return APIM_EINVAL;
	}
	return APIM_OK;
}

apim_rc admin_ip_canonical(const char *s, char *out, size_t outlen)
{
	int fam;
	unsigned char a[16];
	if (parse_ip(s, &fam, a) != 0 || inet_ntop(fam, a, out, (socklen_t)outlen) == NULL)
		return APIM_EINVAL;
	return APIM_OK;
}

static int literal_char(int c)
{
	return isalnum(c) || c == '_' || c == '.' || c == '@' || c == '-';
}

apim_rc admin_validate_key_template(const char *field, const char *s, char *err, size_t errlen)
{
	if (s == NULL || *s == '\0') {
		snprintf(err, errlen, "'%s' must not be empty (e.g. $userId:$apiContext)", field);
		return APIM_EINVAL;
	}
	const char *p = s;
	for (;;) {
		const char *e = strchr(p, ':');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (len == 0) {
			snprintf(err, errlen,
				 "'%s' has an empty segment: separate tokens with a single ':' "
				 "(e.g. $userId:$apiContext)",
				 field);
			return APIM_EINVAL;
		}
		if (*p == '$') {
			int ok = 0;
			for (size_t i = 0; admin_key_template_tokens[i] != NULL && !ok; i++) {
				const char *t = admin_key_template_tokens[i];
				ok = strchr(t, '<') == NULL && strlen(t) == len &&
				     strncmp(t, p, len) == 0;
			}
			static const char cp[] = "$customProperty.";
			if (!ok && len > sizeof(cp) - 1 && strncmp(p, cp, sizeof(cp) - 1) == 0) {
				ok = 1;
				for (size_t i = sizeof(cp) - 1; i < len; i++)
					if (!literal_char((unsigned char)p[i]))
						ok = 0;
			}
			if (!ok) {
				char list[256] = "";
				for (size_t i = 0; admin_key_template_tokens[i] != NULL; i++) {
					if (i > 0)
						strncat(list, ", ", sizeof(list) - strlen(list) - 1);
					strncat(list, admin_key_template_tokens[i],
						sizeof(list) - strlen(list) - 1);
				}
				snprintf(err, errlen, "'%s': unknown token '%.*s'; known tokens: %s",
					 field, (int)len, p, list);
				return APIM_EINVAL;
			}
		} else {
			for (size_t i = 0; i < len; i++) {
				if (!literal_char((unsigned char)p[i])) {
					snprintf(err, errlen,
						 "'%s': segment '%.*s' is neither a $token nor a "
						 "literal of letters, digits, '_', '.', '@' and '-'",
						 field, (int)len, p);
					return APIM_EINVAL;
				}
			}
		}
		if (e == NULL)
			break;
		p = e + 1;
	}
	return APIM_OK;
}

apim_rc admin_validate_name(const char *field, const char *s, size_t max, char *err,
			    size_t errlen)
{
	size_t n = s ? strlen(s) : 0;
	int ok = n >= 1 && n <= max;
	for (size_t i = 0; ok && i < n; i++)
		ok = isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '-';
	if (!ok) {
		snprintf(err, errlen,
			 "'%s' must be 1 to %zu characters of letters, digits, '_' and '-' "
			 "(got '%s')",
			 field, max, s ? s : "");
		return APIM_EINVAL;
	}
	return APIM_OK;
}

apim_rc admin_validate_host(const char *field, const char *s, char *err, size_t errlen)
{
	size_t n = s ? strlen(s) : 0;
	int ok = n >= 1 && n <= 253;
	if (ok && parse_ip(s, &(int){0}, (unsigned char[16]){0}) == 0)
		return APIM_OK;
	/* letters, digits, '-' and '.', labels of 1..63 not starting or ending in '-' */
	size_t label = 0;
	for (size_t i = 0; ok && i <= n; i++) {
		char c = s[i];
		if (c == '.' || c == '\0') {
			ok = label >= 1 && label <= 63 && s[i - 1] != '-' &&
			     s[i - label] != '-';
			label = 0;
		} else if (isalnum((unsigned char)c) || c == '-') {
			label++;
		} else {
			ok = 0;
		}
	}
	if (!ok) {
		snprintf(err, errlen,
			 "'%s' must be a host name (e.g. gw.example.com) or an IP address (got '%s')",
			 field, s ? s : "");
		return APIM_EINVAL;
	}
	return APIM_OK;
}
