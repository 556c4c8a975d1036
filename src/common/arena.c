#include "common/arena.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct block {
	struct block *next;
	size_t size, used;
	_Alignas(16) unsigned char data[];
};

struct arena {
	struct block *head;
	size_t block_size;
};

static struct block *block_new(size_t size)
{
	struct block *b = malloc(sizeof(*b) + size);
	if (b == NULL) {
		fputs("apim: out of memory\n", stderr);
		abort();
	}
	b->next = NULL;
	b->size = size;
	b->used = 0;
	return b;
}

arena *arena_create(size_t block_size)
{
	arena *a = calloc(1, sizeof(*a));
	if (a == NULL) {
		fputs("apim: out of memory\n", stderr);
		abort();
	}
	a->block_size = block_size ? block_size : 4096;
	a->head = block_new(a->block_size);
	return a;
}

void arena_destroy(arena *a)
{
	if (a == NULL)
		return;
	struct block *b = a->head;
	while (b != NULL) {
		struct block *n = b->next;
		free(b);
		b = n;
	}
	free(a);
}

void *arena_alloc(arena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (n == 0)
		n = 16;
	struct block *b = a->head;
	if (b->size - b->used < n) {
		/* Large requests get a block of their own behind the head so that
		 * the head's free space is not wasted. */
		if (n > a->block_size / 4) {
			struct block *big = block_new(n);
			big->used = n;
			big->next = b->next;
			b->next = big;
			memset(big->data, 0, n);
			return big->data;
		}
		b = block_new(a->block_size);
		b->next = a->head;
		a->head = b;
	}
	void *p = b->data + b->used;
	b->used += n;
	memset(p, 0, n);
	return p;
}

char *arena_strndup(arena *a, const char *s, size_t n)
{
	char *p = arena_alloc(a, n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *arena_strdup(arena *a, const char *s)
{
	return s ? arena_strndup(a, s, strlen(s)) : NULL;
}

char *arena_vsprintf(arena *a, const char *fmt, va_list ap)
{
	va_list cp;
	va_copy(cp, ap);
	int n = vsnprintf(NULL, 0, fmt, cp);
	va_end(cp);
	if (n < 0)
		n = 0;
	char *p = arena_alloc(a, (size_t)n + 1);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	return p;
}

char *arena_sprintf(arena *a, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *p = arena_vsprintf(a, fmt, ap);
	va_end(ap);
	return p;
}
