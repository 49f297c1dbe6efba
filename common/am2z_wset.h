/*  am2z_wset.h — a write set: the puts and deletes of one store batch, held
    in memory (the store's writer thread applies them to LMDB later).

    Keys live in numbered databases (0..AM2Z_WSET_DBS-1) and sort as LMDB's
    default comparator sorts them (bytes, then the shorter first). The set
    keeps every operation in order (what the writer replays) and an index of
    the latest operation per key (what readers see). Not thread-safe: one
    thread writes a set; once it is handed over it is only read.
*/
#ifndef AM2Z_WSET_H
#define AM2Z_WSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AM2Z_WSET_DBS 16

typedef struct am2z_wset_t am2z_wset_t;

/*  One operation. For a delete, val is NULL and val_size 0. */
typedef struct {
    unsigned db;
    bool del;
    size_t key_size;
    size_t val_size;
    const uint8_t *key;
    const uint8_t *val;
} am2z_wop_t;

/*  What a lookup found in the set. */
typedef enum { AM2Z_WSET_ABSENT = 0, AM2Z_WSET_PUT = 1, AM2Z_WSET_DELETED = 2 } am2z_wset_hit_t;

/*  NULL when out of memory. */
am2z_wset_t *am2z_wset_new(void);

/*  NULL-safe, idempotent. */
void am2z_wset_destroy(am2z_wset_t **self_p);

/*  Empties the set for reuse, as a new one would be: keeps one block of its
    arena and its arrays (up to a bound), so a caller that recycles sets
    does not allocate and free them per turn. */
void am2z_wset_clear(am2z_wset_t *self);

/*  Records a put (val copied) or, with del, a delete of key in db. Returns
    0, or -1 when out of memory (the set is unchanged) or db is out of
    range. */
int am2z_wset_put(am2z_wset_t *self, unsigned db, const void *key, size_t key_size,
                  const void *val, size_t val_size);
int am2z_wset_del(am2z_wset_t *self, unsigned db, const void *key, size_t key_size);

/*  The latest operation on key in db: AM2Z_WSET_PUT (*op set),
    AM2Z_WSET_DELETED (*op set) or AM2Z_WSET_ABSENT. op may be NULL. The
    pointers stay valid until the set is destroyed. */
am2z_wset_hit_t am2z_wset_get(const am2z_wset_t *self, unsigned db, const void *key,
                              size_t key_size, const am2z_wop_t **op);

/*  The key's hash (am2z_hash_bytes seeded with db), and a lookup that takes it:
    a reader asking several sets hashes once. */
uint64_t am2z_wset_hash(unsigned db, const void *key, size_t key_size);
am2z_wset_hit_t am2z_wset_get_h(const am2z_wset_t *self, unsigned db, const void *key,
                                size_t key_size, uint64_t hash, const am2z_wop_t **op);

/*  Operations recorded, overwritten ones included. */
size_t am2z_wset_size(const am2z_wset_t *self);

/*  The i-th operation in the order they were recorded. */
const am2z_wop_t *am2z_wset_op(const am2z_wset_t *self, size_t i);

/*  The latest operation of every key of db in key order (deletes
    included), through *ops (borrowed: valid until the next put, del or
    destroy). Returns the count. */
size_t am2z_wset_sorted(am2z_wset_t *self, unsigned db, const am2z_wop_t *const **ops);

/*  LMDB's default key order: memcmp over the shorter length, then the
    shorter key first. */
int am2z_wset_keycmp(const void *a, size_t a_size, const void *b, size_t b_size);

#ifdef __cplusplus
}
#endif
#endif
