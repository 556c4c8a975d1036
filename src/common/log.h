/*
 * log.h: structured logs, one JSON object per line on stderr
 * ({"ts":"...","level":"info","component":"http","msg":"..."}), or plain
 * text when log.format = text. Never log secrets, passwords or tokens.
 */
#ifndef APIM_LOG_H
#define APIM_LOG_H

typedef enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

/* Set once at start, before threads exist. */
void log_setup(log_level min, int json);
int log_level_parse(const char *s, log_level *out);

void log_write(log_level lv, const char *component, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_debug(comp, ...) log_write(LOG_DEBUG, comp, __VA_ARGS__)
#define log_info(comp, ...) log_write(LOG_INFO, comp, __VA_ARGS__)
#define log_warn(comp, ...) log_write(LOG_WARN, comp, __VA_ARGS__)
#define log_error(comp, ...) log_write(LOG_ERROR, comp, __VA_ARGS__)

#endif
