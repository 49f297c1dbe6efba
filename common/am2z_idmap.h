/*  am2z_idmap.h — a table from string ids to items whose ids live in the
    items themselves, for the broker's hottest lookups (jobs, sessions,
    session info, retained results) and the client's job table.

    Open addressing with linear probing over one array of slots; each slot
    keeps the key's 64-bit hash (am2z_hash_bytes) next to the borrowed key
    pointer and the item. A lookup reads one slot, compares the hashes and
    only then the key, which lives in the item the caller is about to use.
    czmq's zhashx walks a chain of separately allocated items, comparing
    each key through a pointer: two or three cache misses more per lookup,
    and a malloc and a free per entry.

    Keys are borrowed: the key string must stay valid and unchanged while
    its entry is in the table (the usual case: the key is the item's own id,
    and the entry leaves the table before the item is freed).

    Iteration (first / next) may delete the current entry or any other:
    a delete leaves a marker and never moves an entry. An insert during an
    iteration may grow the table and must not be done (as with zhashx). */
#ifndef AM2Z_IDMAP_H
#define AM2Z_IDMAP_H

#include <stddef.h>

typedef struct am2z_idmap_s am2z_idmap_t;

/*  Called on an item when its entry is deleted, purged or destroyed (the
    zhashx_destructor_fn shape: it may set *item to NULL). */
typedef void (am2z_idmap_destructor_fn)(void **item);

/*  An empty table; destructor may be NULL (items are the caller's). NULL
    when out of memory. */
am2z_idmap_t *am2z_idmap_new(am2z_idmap_destructor_fn *destructor);

/*  Destroys every item (destructor) and the table; sets *self_p to NULL. */
void am2z_idmap_destroy(am2z_idmap_t **self_p);

/*  Adds key -> item. 0 on success; -1 when the key is present (nothing
    changes); -2 when out of memory (nothing changes). key and item must
    not be NULL, and key must not be empty. */
int am2z_idmap_insert(am2z_idmap_t *self, const char *key, void *item);

/*  The item under key, or NULL. */
void *am2z_idmap_lookup(const am2z_idmap_t *self, const char *key);

/*  Removes key's entry and destroys its item (destructor). Nothing when the
    key is absent. */
void am2z_idmap_delete(am2z_idmap_t *self, const char *key);

/*  Removes every entry, destroying each item; keeps the slots. */
void am2z_idmap_purge(am2z_idmap_t *self);

/*  Entries held. */
size_t am2z_idmap_size(const am2z_idmap_t *self);

/*  Iteration in slot order: the first item (NULL when empty), then the next
    (NULL at the end). */
void *am2z_idmap_first(am2z_idmap_t *self);
void *am2z_idmap_next(am2z_idmap_t *self);

/*  The key of the entry first / next returned last (NULL before either, at
    the end, or once that entry was deleted). */
const char *am2z_idmap_cursor(const am2z_idmap_t *self);

#endif
