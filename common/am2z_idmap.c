/*  am2z_idmap.c — see am2z_idmap.h.

    Slots: key NULL = empty (ends a probe), key s_tomb = deleted (a probe
    goes on past it), anything else = an entry. The table keeps at least a
    quarter of its slots empty, so every probe ends; inserts rebuild it
    (without the deleted markers) when entries and markers pass three
    quarters, and shrink it when entries fall under an eighth. Deletes
    never move anything, which is what makes deleting during an iteration
    safe. */
#include "am2z_idmap.h"
#include "am2z_hash.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define S_MIN_SLOTS 16

typedef struct {
    uint64_t hash;
    const char *key;
    void *item;
} s_slot_t;

struct am2z_idmap_s {
    s_slot_t *slots;
    size_t mask;                  /* slots - 1 (a power of two) */
    size_t size;                  /* entries */
    size_t tombs;                 /* deleted markers */
    size_t cursor;                /* iteration: index of the last item returned */
    am2z_idmap_destructor_fn *destructor;
};

static const char s_tomb[1] = "";

static inline bool
s_live(const s_slot_t *slot)
{
    return slot->key && slot->key != s_tomb;
}

static inline uint64_t
s_hash(const char *key)
{
    return am2z_hash_bytes(key, strlen(key), 0);
}

am2z_idmap_t *
am2z_idmap_new(am2z_idmap_destructor_fn *destructor)
{
    am2z_idmap_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->slots = calloc(S_MIN_SLOTS, sizeof *self->slots);
    if (!self->slots) {
        free(self);
        return NULL;
    }
    self->mask = S_MIN_SLOTS - 1;
    self->cursor = SIZE_MAX;
    self->destructor = destructor;
    return self;
}

void
am2z_idmap_destroy(am2z_idmap_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_idmap_t *self = *self_p;
    am2z_idmap_purge(self);
    free(self->slots);
    free(self);
    *self_p = NULL;
}

/*  Index of key's entry, or of the empty slot that ends its probe. */
static size_t
s_find(const am2z_idmap_t *self, const char *key, uint64_t hash)
{
    size_t i = (size_t)hash & self->mask;
    for (;;) {
        const s_slot_t *slot = &self->slots[i];
        if (!slot->key)
            return i;
        if (slot->hash == hash && slot->key != s_tomb && strcmp(slot->key, key) == 0)
            return i;
        i = (i + 1) & self->mask;
    }
}

/*  Moves every entry into a fresh array of n slots (a power of two). */
static int
s_rebuild(am2z_idmap_t *self, size_t n)
{
    s_slot_t *slots = calloc(n, sizeof *slots);
    if (!slots)
        return -2;
    for (size_t i = 0; i <= self->mask; i++) {
        const s_slot_t *old = &self->slots[i];
        if (!s_live(old))
            continue;
        size_t j = (size_t)old->hash & (n - 1);
        while (slots[j].key)
            j = (j + 1) & (n - 1);
        slots[j] = *old;
    }
    free(self->slots);
    self->slots = slots;
    self->mask = n - 1;
    self->tombs = 0;
    self->cursor = SIZE_MAX;
    return 0;
}

int
am2z_idmap_insert(am2z_idmap_t *self, const char *key, void *item)
{
    if (!self || !key || !*key || !item)
        return -2;
    size_t slots = self->mask + 1;
    bool full = (self->size + self->tombs + 1) * 4 > slots * 3;
    bool sparse = slots > S_MIN_SLOTS && (self->size + 1) * 8 < slots;
    if (full || sparse) {
        /* entries take a quarter to a half of the new array */
        size_t n = S_MIN_SLOTS;
        while (n < (self->size + 1) * 2)
            n *= 2;
        if (n < (self->size + 1) * 4 && n * 2 <= slots)
            n *= 2;
        if (s_rebuild(self, n) != 0)
            return -2;
    }
    uint64_t hash = s_hash(key);
    size_t i = s_find(self, key, hash);
    if (self->slots[i].key)
        return -1;
    /* reuse the first deleted marker on the probe, if any */
    size_t j = (size_t)hash & self->mask;
    while (j != i && self->slots[j].key != s_tomb)
        j = (j + 1) & self->mask;
    if (j != i)
        self->tombs--;
    self->slots[j] = (s_slot_t){ hash, key, item };
    self->size++;
    return 0;
}

void *
am2z_idmap_lookup(const am2z_idmap_t *self, const char *key)
{
    if (!self || !key)
        return NULL;
    const s_slot_t *slot = &self->slots[s_find(self, key, s_hash(key))];
    return slot->key ? slot->item : NULL;
}

/*  Marks slot (an entry) deleted, then destroys its item: a destructor
    that looks in the table no longer finds it. */
static void
s_remove(am2z_idmap_t *self, s_slot_t *slot)
{
    void *item = slot->item;
    *slot = (s_slot_t){ 0, s_tomb, NULL };
    self->size--;
    self->tombs++;
    if (self->destructor)
        self->destructor(&item);
}

void
am2z_idmap_delete(am2z_idmap_t *self, const char *key)
{
    if (!self || !key)
        return;
    s_slot_t *slot = &self->slots[s_find(self, key, s_hash(key))];
    if (slot->key)
        s_remove(self, slot);
}

void
am2z_idmap_purge(am2z_idmap_t *self)
{
    if (!self)
        return;
    for (size_t i = 0; i <= self->mask; i++) {
        if (s_live(&self->slots[i]))
            s_remove(self, &self->slots[i]);
    }
    memset(self->slots, 0, (self->mask + 1) * sizeof *self->slots);
    self->tombs = 0;
    self->cursor = SIZE_MAX;
}

size_t
am2z_idmap_size(const am2z_idmap_t *self)
{
    return self ? self->size : 0;
}

static void *
s_from(am2z_idmap_t *self, size_t i)
{
    for (; i <= self->mask; i++)
        if (s_live(&self->slots[i])) {
            self->cursor = i;
            return self->slots[i].item;
        }
    self->cursor = SIZE_MAX;
    return NULL;
}

void *
am2z_idmap_first(am2z_idmap_t *self)
{
    return self ? s_from(self, 0) : NULL;
}

void *
am2z_idmap_next(am2z_idmap_t *self)
{
    if (!self || self->cursor == SIZE_MAX)
        return NULL;
    return s_from(self, self->cursor + 1);
}

const char *
am2z_idmap_cursor(const am2z_idmap_t *self)
{
    if (!self || self->cursor > self->mask || !s_live(&self->slots[self->cursor]))
        return NULL;
    return self->slots[self->cursor].key;
}
