/*  am2z_wset.c — see am2z_wset.h.

    Each operation is one allocation (the op, then its key and value
    bytes), kept in recorded order for the writer. Readers use a sorted
    array per database of the latest operation of each key, kept sorted as
    writes arrive (binary search, then an insert or an in-place swap), so a
    lookup is a binary search and a walk reads the array as it is: a set
    holds a turn's writes (hundreds to a few thousand), and moving pointers
    on insert costs less than re-sorting for every walk of a set that
    changes between walks. Most lookups miss (a reader asks every set in
    flight before LMDB), so each set also keeps a small Bloom filter of its
    keys: a miss costs two bit tests instead of a binary search. Ops come
    from an arena of 64 KiB blocks, freed with the set; a clear keeps a
    few emptied blocks for the set's next use.
*/
#include "am2z_wset.h"

#include "am2z_hash.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define S_BLOOM_BITS (1u << 16)           /* 8 KiB: ≈ 2 % false hits at 5,000 keys */
#define S_BLOCK ((size_t)64 << 10)

typedef struct s_block {
    struct s_block *next;
    size_t used, size;
    max_align_t data[];                   /* size bytes */
} s_block_t;

struct am2z_wset_t {
    uint64_t bloom[S_BLOOM_BITS / 64];
    s_block_t *blocks;                    /* the arena, newest first */
    s_block_t *spare;                     /* emptied blocks a clear kept */
    am2z_wop_t **ops;                     /* in recorded order (in the arena) */
    size_t n, cap;
    am2z_wop_t **sorted[AM2Z_WSET_DBS];   /* latest op per key, key order (borrowed ops) */
    size_t sorted_n[AM2Z_WSET_DBS];
    size_t sorted_cap[AM2Z_WSET_DBS];
};

int
am2z_wset_keycmp(const void *a, size_t a_size, const void *b, size_t b_size)
{
    size_t n = a_size < b_size ? a_size : b_size;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return a_size < b_size ? -1 : a_size > b_size ? 1 : 0;
}

am2z_wset_t *
am2z_wset_new(void)
{
    return calloc(1, sizeof(am2z_wset_t));
}

uint64_t
am2z_wset_hash(unsigned db, const void *key, size_t key_size)
{
    return am2z_hash_bytes(key, key_size, 0x9e3779b97f4a7c15ull * (db + 1));
}

static bool
s_bloom_has(const am2z_wset_t *self, uint64_t h)
{
    uint32_t a = (uint32_t)h % S_BLOOM_BITS, b = (uint32_t)(h >> 32) % S_BLOOM_BITS;
    return (self->bloom[a / 64] >> (a % 64) & 1) && (self->bloom[b / 64] >> (b % 64) & 1);
}

static void
s_bloom_add(am2z_wset_t *self, uint64_t h)
{
    uint32_t a = (uint32_t)h % S_BLOOM_BITS, b = (uint32_t)(h >> 32) % S_BLOOM_BITS;
    self->bloom[a / 64] |= (uint64_t)1 << (a % 64);
    self->bloom[b / 64] |= (uint64_t)1 << (b % 64);
}

/*  size bytes from the arena (aligned), or NULL. */
static void *
s_alloc(am2z_wset_t *self, size_t size)
{
    size = (size + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    s_block_t *bl = self->blocks;
    if (!bl || bl->size - bl->used < size) {
        if (self->spare && size <= S_BLOCK) {
            bl = self->spare;
            self->spare = bl->next;
        } else {
            size_t bsize = size > S_BLOCK ? size : S_BLOCK;
            bl = malloc(sizeof *bl + bsize);
            if (!bl)
                return NULL;
            bl->size = bsize;
        }
        bl->used = 0;
        bl->next = self->blocks;
        self->blocks = bl;
    }
    void *p = (uint8_t *)bl->data + bl->used;
    bl->used += size;
    return p;
}

void
am2z_wset_destroy(am2z_wset_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_wset_t *self = *self_p;
    s_block_t *lists[] = { self->blocks, self->spare };
    for (size_t i = 0; i < 2; i++)
        while (lists[i]) {
            s_block_t *next = lists[i]->next;
            free(lists[i]);
            lists[i] = next;
        }
    free(self->ops);
    for (int d = 0; d < AM2Z_WSET_DBS; d++)
        free(self->sorted[d]);
    free(self);
    *self_p = NULL;
}

/*  Arrays above this many entries are freed rather than kept by a clear:
    one large turn should not pin its arrays for the sets after it. */
#define S_KEEP_CAP 2048
/*  Arena blocks a clear keeps (the rest are freed): a turn of the
    throughput workload fills two or three. */
#define S_KEEP_BLOCKS 4

void
am2z_wset_clear(am2z_wset_t *self)
{
    if (!self)
        return;
    unsigned kept = 0;
    for (s_block_t *bl = self->spare; bl; bl = bl->next)
        kept++;
    while (self->blocks) {
        s_block_t *next = self->blocks->next;
        if (kept < S_KEEP_BLOCKS && self->blocks->size == S_BLOCK) {
            self->blocks->next = self->spare;
            self->spare = self->blocks;
            kept++;
        } else {
            free(self->blocks);
        }
        self->blocks = next;
    }
    memset(self->bloom, 0, sizeof self->bloom);
    self->n = 0;
    if (self->cap > S_KEEP_CAP) {
        free(self->ops);
        self->ops = NULL;
        self->cap = 0;
    }
    for (int d = 0; d < AM2Z_WSET_DBS; d++) {
        self->sorted_n[d] = 0;
        if (self->sorted_cap[d] > S_KEEP_CAP) {
            free(self->sorted[d]);
            self->sorted[d] = NULL;
            self->sorted_cap[d] = 0;
        }
    }
}

/*  Index of the first entry of db's sorted array whose key is >= key;
    *found tells whether it is equal. */
static size_t
s_bsearch(const am2z_wset_t *self, unsigned db, const void *key, size_t key_size, bool *found)
{
    am2z_wop_t *const *v = self->sorted[db];
    size_t lo = 0, hi = self->sorted_n[db];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (am2z_wset_keycmp(v[mid]->key, v[mid]->key_size, key, key_size) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < self->sorted_n[db]
             && am2z_wset_keycmp(v[lo]->key, v[lo]->key_size, key, key_size) == 0;
    return lo;
}

/*  Where key goes in db's sorted array when it is known to be new: at the
    end when it sorts last (keys that grow with time), else by search. */
static size_t
s_bsearch_new(const am2z_wset_t *self, unsigned db, const void *key, size_t key_size)
{
    size_t n = self->sorted_n[db];
    if (n == 0)
        return 0;
    const am2z_wop_t *last = self->sorted[db][n - 1];
    if (am2z_wset_keycmp(last->key, last->key_size, key, key_size) < 0)
        return n;
    bool found;
    return s_bsearch(self, db, key, key_size, &found);
}

static int
s_record(am2z_wset_t *self, unsigned db, bool del, const void *key, size_t key_size,
         const void *val, size_t val_size)
{
    if (db >= AM2Z_WSET_DBS)
        return -1;
    if (self->n == self->cap) {
        size_t cap = self->cap ? self->cap * 2 : 64;
        am2z_wop_t **ops = realloc(self->ops, cap * sizeof *ops);
        if (!ops)
            return -1;
        self->ops = ops;
        self->cap = cap;
    }
    uint64_t h = am2z_wset_hash(db, key, key_size);
    bool found = false;
    size_t at = s_bloom_has(self, h) ? s_bsearch(self, db, key, key_size, &found)
                                     : s_bsearch_new(self, db, key, key_size);
    if (!found && self->sorted_n[db] == self->sorted_cap[db]) {
        size_t cap = self->sorted_cap[db] ? self->sorted_cap[db] * 2 : 32;
        am2z_wop_t **v = realloc(self->sorted[db], cap * sizeof *v);
        if (!v)
            return -1;
        self->sorted[db] = v;
        self->sorted_cap[db] = cap;
    }
    am2z_wop_t *op = s_alloc(self, sizeof *op + key_size + val_size);
    if (!op)
        return -1;
    s_bloom_add(self, h);
    uint8_t *p = (uint8_t *)(op + 1);
    op->db = db;
    op->del = del;
    op->key_size = key_size;
    op->val_size = del ? 0 : val_size;
    op->key = p;
    if (key_size)
        memcpy(p, key, key_size);
    op->val = del ? NULL : p + key_size;
    if (!del && val_size)
        memcpy(p + key_size, val, val_size);
    am2z_wop_t **v = self->sorted[db];
    if (!found) {
        memmove(v + at + 1, v + at, (self->sorted_n[db] - at) * sizeof *v);
        self->sorted_n[db]++;
    }
    v[at] = op;
    self->ops[self->n++] = op;
    return 0;
}

int
am2z_wset_put(am2z_wset_t *self, unsigned db, const void *key, size_t key_size,
              const void *val, size_t val_size)
{
    return self ? s_record(self, db, false, key, key_size, val, val_size) : -1;
}

int
am2z_wset_del(am2z_wset_t *self, unsigned db, const void *key, size_t key_size)
{
    return self ? s_record(self, db, true, key, key_size, NULL, 0) : -1;
}

am2z_wset_hit_t
am2z_wset_get(const am2z_wset_t *self, unsigned db, const void *key, size_t key_size,
              const am2z_wop_t **op)
{
    return am2z_wset_get_h(self, db, key, key_size, am2z_wset_hash(db, key, key_size), op);
}

am2z_wset_hit_t
am2z_wset_get_h(const am2z_wset_t *self, unsigned db, const void *key, size_t key_size,
                uint64_t hash, const am2z_wop_t **op)
{
    if (op)
        *op = NULL;
    if (!self || db >= AM2Z_WSET_DBS || !self->sorted_n[db] || !s_bloom_has(self, hash))
        return AM2Z_WSET_ABSENT;
    bool found;
    size_t at = s_bsearch(self, db, key, key_size, &found);
    if (!found)
        return AM2Z_WSET_ABSENT;
    const am2z_wop_t *hit = self->sorted[db][at];
    if (op)
        *op = hit;
    return hit->del ? AM2Z_WSET_DELETED : AM2Z_WSET_PUT;
}

size_t
am2z_wset_size(const am2z_wset_t *self)
{
    return self ? self->n : 0;
}

const am2z_wop_t *
am2z_wset_op(const am2z_wset_t *self, size_t i)
{
    return self && i < self->n ? self->ops[i] : NULL;
}

size_t
am2z_wset_sorted(am2z_wset_t *self, unsigned db, const am2z_wop_t *const **ops)
{
    *ops = NULL;
    if (!self || db >= AM2Z_WSET_DBS)
        return 0;
    *ops = (const am2z_wop_t *const *)self->sorted[db];
    return self->sorted_n[db];
}
