/*  wset_test.c — Check suite "wset": the store's in-memory write sets
    (common/am2z_wset.c), checked against a plain model: lookups (hits,
    deletes, misses that pass the Bloom filter), the recorded order the
    writer replays, and the sorted views walks merge, in LMDB's key order. */
#include "am2z_testutil.h"
#include "am2z_wset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_wset_get_sees_the_latest_operation_of_a_key)
{
    am2z_wset_t *ws = am2z_wset_new();
    ck_assert_ptr_nonnull(ws);
    const am2z_wop_t *op = NULL;
    ck_assert_int_eq(am2z_wset_get(ws, 1, "a", 1, &op), AM2Z_WSET_ABSENT);
    ck_assert_ptr_null(op);
    ck_assert_int_eq(am2z_wset_put(ws, 1, "a", 1, "one", 3), 0);
    ck_assert_int_eq(am2z_wset_put(ws, 2, "a", 1, "other db", 8), 0);
    ck_assert_int_eq(am2z_wset_put(ws, 1, "a", 1, "two", 3), 0);
    ck_assert_int_eq(am2z_wset_get(ws, 1, "a", 1, &op), AM2Z_WSET_PUT);
    ck_assert_uint_eq(op->val_size, 3);
    ck_assert(memcmp(op->val, "two", 3) == 0);
    ck_assert_int_eq(am2z_wset_get(ws, 2, "a", 1, &op), AM2Z_WSET_PUT);
    ck_assert_uint_eq(op->val_size, 8);
    ck_assert_int_eq(am2z_wset_del(ws, 1, "a", 1), 0);
    ck_assert_int_eq(am2z_wset_get(ws, 1, "a", 1, &op), AM2Z_WSET_DELETED);
    ck_assert(op->del);
    ck_assert_int_eq(am2z_wset_put(ws, 1, "", 0, "empty key", 9), 0);  /* the store refuses these; the set does not care */
    ck_assert_int_eq(am2z_wset_get(ws, 1, "", 0, NULL), AM2Z_WSET_PUT);
    /* every operation stays, in order, for the writer */
    ck_assert_uint_eq(am2z_wset_size(ws), 5);
    ck_assert(memcmp(am2z_wset_op(ws, 0)->val, "one", 3) == 0);
    ck_assert(am2z_wset_op(ws, 3)->del);
    ck_assert_ptr_null(am2z_wset_op(ws, 5));
    /* out of range */
    ck_assert_int_eq(am2z_wset_put(ws, AM2Z_WSET_DBS, "a", 1, "x", 1), -1);
    ck_assert_int_eq(am2z_wset_get(ws, AM2Z_WSET_DBS, "a", 1, NULL), AM2Z_WSET_ABSENT);
    ck_assert_int_eq(am2z_wset_get(NULL, 1, "a", 1, NULL), AM2Z_WSET_ABSENT);
    am2z_wset_destroy(&ws);
    ck_assert_ptr_null(ws);
    am2z_wset_destroy(&ws);                  /* idempotent */
}
END_TEST

START_TEST(test_wset_sorts_keys_as_lmdb_does)
{
    ck_assert_int_lt(am2z_wset_keycmp("ab", 2, "abc", 3), 0);     /* shorter first */
    ck_assert_int_gt(am2z_wset_keycmp("b", 1, "abc", 3), 0);      /* bytes first */
    ck_assert_int_eq(am2z_wset_keycmp("abc", 3, "abc", 3), 0);
    ck_assert_int_lt(am2z_wset_keycmp("", 0, "a", 1), 0);
    ck_assert_int_lt(am2z_wset_keycmp("\x01", 1, "\xff", 1), 0);  /* unsigned bytes */

    am2z_wset_t *ws = am2z_wset_new();
    const char *keys[] = { "m", "abc", "ab", "z", "a\xff", "b", "ab" };
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        ck_assert_int_eq(am2z_wset_put(ws, 3, keys[i], strlen(keys[i]), "v", 1), 0);
    ck_assert_int_eq(am2z_wset_del(ws, 3, "b", 1), 0);
    ck_assert_int_eq(am2z_wset_put(ws, 4, "zz", 2, "v", 1), 0);
    const am2z_wop_t *const *v;
    size_t n = am2z_wset_sorted(ws, 3, &v);
    const char *want[] = { "ab", "abc", "a\xff", "b", "m", "z" };
    ck_assert_uint_eq(n, 6);
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_eq(v[i]->key_size, strlen(want[i]));
        ck_assert(memcmp(v[i]->key, want[i], v[i]->key_size) == 0);
        ck_assert(v[i]->del == (strcmp(want[i], "b") == 0));
    }
    ck_assert_uint_eq(am2z_wset_sorted(ws, 4, &v), 1);
    ck_assert_uint_eq(am2z_wset_sorted(ws, 5, &v), 0);
    am2z_wset_destroy(&ws);
}
END_TEST

/*  20,000 random operations over 3,000 keys in 3 databases against a model:
    more keys than the Bloom filter holds without false hits, so misses
    that pass the filter are exercised; keys grow and shrink, appends
    (keys that sort last) and inserts mix. */
#define M_KEYS 3000
#define M_DBS 3

/*  Loop test: _i = 0 on a new set; _i = 1..3 also on the same set after
    _i clears (the store recycles settled sets that way), which must forget
    every key of the round before it: the model starts empty again. Each
    round fills about 20 arena blocks, so later rounds write into the
    blocks the clears kept. */
START_TEST(test_wset_matches_a_model_under_many_operations)
{
    static int model[M_DBS][M_KEYS];       /* 0 absent, -1 deleted, else value */
    am2z_wset_t *ws = am2z_wset_new();
    char key[32];
    for (int round = 0; round <= _i; round++) {
    if (round > 0) {
        am2z_wset_clear(ws);
        ck_assert_uint_eq(am2z_wset_size(ws), 0);
        ck_assert_ptr_null(am2z_wset_op(ws, 0));
    }
    memset(model, 0, sizeof model);
    unsigned seed = 11 + (unsigned)round;
    for (int i = 1; i <= 20000; i++) {
        unsigned db = (unsigned)(rand_r(&seed) % M_DBS);
        int k = (int)(rand_r(&seed) % M_KEYS);
        int len = snprintf(key, sizeof key, "%s%d", k % 2 ? "job:" : "s", k);
        if (rand_r(&seed) % 4 == 0) {
            ck_assert_int_eq(am2z_wset_del(ws, db, key, (size_t)len), 0);
            model[db][k] = -1;
        } else {
            ck_assert_int_eq(am2z_wset_put(ws, db, key, (size_t)len, &i, sizeof i), 0);
            model[db][k] = i;
        }
    }
    ck_assert_uint_eq(am2z_wset_size(ws), 20000);
    for (unsigned db = 0; db < M_DBS + 1; db++) {
        size_t present = 0;
        for (int k = 0; k < M_KEYS; k++) {
            int len = snprintf(key, sizeof key, "%s%d", k % 2 ? "job:" : "s", k);
            const am2z_wop_t *op;
            am2z_wset_hit_t hit = am2z_wset_get(ws, db, key, (size_t)len, &op);
            int want = db < M_DBS ? model[db][k] : 0;
            if (want == 0) {
                ck_assert_int_eq(hit, AM2Z_WSET_ABSENT);
            } else if (want < 0) {
                ck_assert_int_eq(hit, AM2Z_WSET_DELETED);
            } else {
                ck_assert_int_eq(hit, AM2Z_WSET_PUT);
                int got;
                memcpy(&got, op->val, sizeof got);
                ck_assert_int_eq(got, want);
            }
            present += want != 0;
        }
        /* never-written keys miss, whatever the filter says */
        for (int k = M_KEYS; k < M_KEYS + 500; k++) {
            int len = snprintf(key, sizeof key, "%s%d", k % 2 ? "job:" : "s", k);
            ck_assert_int_eq(am2z_wset_get(ws, db, key, (size_t)len, NULL), AM2Z_WSET_ABSENT);
        }
        const am2z_wop_t *const *v;
        size_t n = am2z_wset_sorted(ws, db, &v);
        ck_assert_uint_eq(n, present);
        for (size_t i = 1; i < n; i++)
            ck_assert_int_lt(am2z_wset_keycmp(v[i - 1]->key, v[i - 1]->key_size, v[i]->key,
                                              v[i]->key_size), 0);
    }
    }
    am2z_wset_destroy(&ws);
}
END_TEST

/*  A value larger than an arena block gets a block of its own. */
START_TEST(test_wset_keeps_values_larger_than_a_block)
{
    am2z_wset_t *ws = am2z_wset_new();
    size_t big = 200u << 10;
    char *val = malloc(big);
    ck_assert_ptr_nonnull(val);
    memset(val, 'x', big);
    ck_assert_int_eq(am2z_wset_put(ws, 0, "small", 5, "s", 1), 0);
    ck_assert_int_eq(am2z_wset_put(ws, 0, "big", 3, val, big), 0);
    ck_assert_int_eq(am2z_wset_put(ws, 0, "after", 5, "a", 1), 0);
    const am2z_wop_t *op;
    ck_assert_int_eq(am2z_wset_get(ws, 0, "big", 3, &op), AM2Z_WSET_PUT);
    ck_assert_uint_eq(op->val_size, big);
    ck_assert(memcmp(op->val, val, big) == 0);
    ck_assert_int_eq(am2z_wset_get(ws, 0, "small", 5, &op), AM2Z_WSET_PUT);
    ck_assert(memcmp(op->val, "s", 1) == 0);
    /* cleared, the set drops the big block and serves new writes */
    am2z_wset_clear(ws);
    ck_assert_int_eq(am2z_wset_get(ws, 0, "big", 3, NULL), AM2Z_WSET_ABSENT);
    ck_assert_int_eq(am2z_wset_put(ws, 0, "again", 5, val, 1000), 0);
    ck_assert_int_eq(am2z_wset_get(ws, 0, "again", 5, &op), AM2Z_WSET_PUT);
    ck_assert_uint_eq(op->val_size, 1000);
    ck_assert_uint_eq(am2z_wset_size(ws), 1);
    am2z_wset_clear(NULL);                   /* NULL-safe */
    free(val);
    am2z_wset_destroy(&ws);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("wset");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_wset_get_sees_the_latest_operation_of_a_key);
    tcase_add_test(tc, test_wset_sorts_keys_as_lmdb_does);
    tcase_add_loop_test(tc, test_wset_matches_a_model_under_many_operations, 0, 4);
    tcase_add_test(tc, test_wset_keeps_values_larger_than_a_block);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
