/*  am2z_wset.c — see am2z_wset.h.

    Each operation is one allocation (the op, then its key and value
    bytes). The index is a CZMQ zhashx whose keys are the operations
    themselves (hashed and compared by db and key bytes), so a lookup
    probes with a stack op and an overwrite swaps the item. The sorted view
    of a database is built on demand and cached until the next write.
*/
#include "am2z_wset.h"

#include <czmq.h>
#include <stdlib.h>
#include <string.h>

struct am2z_wset_t {
    am2z_wop_t **ops;                     /* in recorded order; owned */
    size_t n, cap;
    zhashx_t *index;                      /* op (as key) -> latest op of that key */
    am2z_wop_t **sorted[AM2Z_WSET_DBS];   /* cached sorted views, or NULL */
    size_t sorted_n[AM2Z_WSET_DBS];
    bool sorted_ok[AM2Z_WSET_DBS];
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

static size_t
s_hash(const void *key)
{
    const am2z_wop_t *op = key;
    uint64_t h = 1469598103934665603ull ^ op->db;   /* FNV-1a */
    for (size_t i = 0; i < op->key_size; i++) {
        h ^= op->key[i];
        h *= 1099511628211ull;
    }
    return (size_t)h;
}

static int
s_compare(const void *a, const void *b)
{
    const am2z_wop_t *x = a, *y = b;
    if (x->db != y->db)
        return x->db < y->db ? -1 : 1;
    return am2z_wset_keycmp(x->key, x->key_size, y->key, y->key_size);
}

am2z_wset_t *
am2z_wset_new(void)
{
    am2z_wset_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->index = zhashx_new();
    if (!self->index) {
        free(self);
        return NULL;
    }
    zhashx_set_key_hasher(self->index, s_hash);
    zhashx_set_key_comparator(self->index, s_compare);
    zhashx_set_key_duplicator(self->index, NULL);
    zhashx_set_key_destructor(self->index, NULL);
    return self;
}

void
am2z_wset_destroy(am2z_wset_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_wset_t *self = *self_p;
    zhashx_destroy(&self->index);
    for (size_t i = 0; i < self->n; i++)
        free(self->ops[i]);
    free(self->ops);
    for (int d = 0; d < AM2Z_WSET_DBS; d++)
        free(self->sorted[d]);
    free(self);
    *self_p = NULL;
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
    am2z_wop_t *op = malloc(sizeof *op + key_size + val_size);
    if (!op)
        return -1;
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
    am2z_wop_t *old = zhashx_lookup(self->index, op);
    if (old) {
        zhashx_update(self->index, old, op);   /* the key stays the old op: same bytes */
    } else if (zhashx_insert(self->index, op, op) != 0) {
        free(op);
        return -1;
    }
    self->ops[self->n++] = op;
    self->sorted_ok[db] = false;
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
    if (op)
        *op = NULL;
    if (!self || !self->n)
        return AM2Z_WSET_ABSENT;
    am2z_wop_t probe = { .db = db, .key = key, .key_size = key_size };
    const am2z_wop_t *hit = zhashx_lookup(self->index, &probe);
    if (!hit)
        return AM2Z_WSET_ABSENT;
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

static int
s_sort_cmp(const void *a, const void *b)
{
    const am2z_wop_t *x = *(const am2z_wop_t *const *)a;
    const am2z_wop_t *y = *(const am2z_wop_t *const *)b;
    return am2z_wset_keycmp(x->key, x->key_size, y->key, y->key_size);
}

size_t
am2z_wset_sorted(am2z_wset_t *self, unsigned db, const am2z_wop_t *const **ops)
{
    *ops = NULL;
    if (!self || db >= AM2Z_WSET_DBS)
        return 0;
    if (!self->sorted_ok[db]) {
        size_t n = 0;
        for (am2z_wop_t *op = zhashx_first(self->index); op; op = zhashx_next(self->index))
            n += op->db == db;
        am2z_wop_t **v = NULL;
        if (n) {
            v = malloc(n * sizeof *v);
            if (!v)
                return SIZE_MAX;
            size_t i = 0;
            for (am2z_wop_t *op = zhashx_first(self->index); op; op = zhashx_next(self->index))
                if (op->db == db)
                    v[i++] = op;
            qsort(v, n, sizeof *v, s_sort_cmp);
        }
        free(self->sorted[db]);
        self->sorted[db] = v;
        self->sorted_n[db] = n;
        self->sorted_ok[db] = true;
    }
    *ops = (const am2z_wop_t *const *)self->sorted[db];
    return self->sorted_n[db];
}
