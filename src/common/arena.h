/*
 * arena.h: bump allocator, one per request (like nginx's r->pool).
 *
 * Everything allocated from an arena is freed at once by arena_destroy().
 * Allocation failure aborts the process: a request arena is bounded by the
 * request size limits, so running out means the machine is out of memory.
 */
#ifndef APIM_ARENA_H
#define APIM_ARENA_H

#include <stdarg.h>
#include <stddef.h>

typedef struct arena arena;

arena *arena_create(size_t block_size);
void arena_destroy(arena *a);

/* Zeroed, 16-byte aligned memory that lives until arena_destroy(). */
void *arena_alloc(arena *a, size_t n);
char *arena_strdup(arena *a, const char *s);
char *arena_strndup(arena *a, const char *s, size_t n);
char *arena_sprintf(arena *a, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
char *arena_vsprintf(arena *a, const char *fmt, va_list ap);

#endif
