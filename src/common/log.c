#include "common/log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static log_level log_min = LOG_INFO;
static int log_json = 1;

static const char *const log_names[] = {"debug", "info", "warn", "error"};

void log_setup(log_level min, int json)
{
	log_min = min;
	log_json = json;
}

int log_level_parse(const char *s, log_level *out)
{
	for (int i = 0; i < 4; i++) {
		const char *n = log_names[i];
		const char *p = s;
		while (*n && *p == *n) {
			n++;
			p++;
		}
		if (*n == '\0' && *p == '\0') {
			*out = (log_level)i;
			return 0;
		}
	}
	return -1;
}

void log_write(log_level lv, const char *component, const char *fmt, ...)
{
	if (lv < log_min)
		return;
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[40];
	int n = (int)strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + n, sizeof(when) - (size_t)n, ".%03ldZ", ts.tv_nsec / 1000000);

	if (!log_json) {
		fprintf(stderr, "%s %-5s [%s] %s\n", when, log_names[lv], component, msg);
		return;
	}
	json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "ts", when, "level", log_names[lv],
			      "component", component, "msg", msg);
	char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
	if (line != NULL) {
		fprintf(stderr, "%s\n", line);
		free(line);
	}
	json_decref(o);
}
