/*  idmap_test.c — Check suite "idmap": common/am2z_idmap.c, the id table of
    the broker's and the client's hottest lookups. A random mix of inserts,
    lookups and deletes must agree with a plain array at every step while
    the table grows, fills with deleted markers and shrinks; an iteration
    that deletes as it goes must visit every entry once; the destructor must
    run once per item, on delete, purge and destroy. */
#include "am2z_testutil.h"
#include "am2z_idmap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { S_KEYS = 3000 };

typedef struct {
    char id[40];
    int destroyed;                /* times the destructor ran on it */
    int seen;                     /* times an iteration returned it */
} s_item_t;

static void
s_item_destroy(void **item)
{
    s_item_t *it = *item;
    it->destroyed++;
    *item = NULL;
}

static s_item_t *
s_items(void)
{
    s_item_t *items = calloc(S_KEYS, sizeof *items);
    ck_assert_ptr_nonnull(items);
    for (int i = 0; i < S_KEYS; i++)
        snprintf(items[i].id, sizeof items[i].id, "01JD3S5Q7ZK2N8V6XW4R%06d", i);
    return items;
}

START_TEST(test_idmap_agrees_with_a_model)
{
    s_item_t *items = s_items();
    bool in[S_KEYS] = { false };
    size_t n = 0;
    am2z_idmap_t *map = am2z_idmap_new(s_item_destroy);
    ck_assert_ptr_nonnull(map);
    srand(7);
    /* three phases: mostly inserts (grow), a mix (deleted markers pile up
       and are swept), mostly deletes (shrink) */
    for (int phase = 0; phase < 3; phase++) {
        int insert_pct = phase == 0 ? 80 : phase == 1 ? 50 : 15;
        for (int step = 0; step < 40000; step++) {
            int k = rand() % S_KEYS;
            if (rand() % 100 < insert_pct) {
                int rc = am2z_idmap_insert(map, items[k].id, &items[k]);
                ck_assert_int_eq(rc, in[k] ? -1 : 0);
                if (!in[k]) {
                    in[k] = true;
                    n++;
                }
            } else {
                int before = items[k].destroyed;
                am2z_idmap_delete(map, items[k].id);
                ck_assert_int_eq(items[k].destroyed, before + (in[k] ? 1 : 0));
                if (in[k]) {
                    in[k] = false;
                    n--;
                }
            }
            ck_assert_uint_eq(am2z_idmap_size(map), n);
            int q = rand() % S_KEYS;
            /* a copy of the key: found by its bytes, not its address */
            char copy[40];
            memcpy(copy, items[q].id, sizeof copy);
            ck_assert_ptr_eq(am2z_idmap_lookup(map, copy), in[q] ? &items[q] : NULL);
        }
        for (int k = 0; k < S_KEYS; k++)
            ck_assert_ptr_eq(am2z_idmap_lookup(map, items[k].id), in[k] ? &items[k] : NULL);
    }
    ck_assert_ptr_null(am2z_idmap_lookup(map, "not-an-id"));
    ck_assert_ptr_null(am2z_idmap_lookup(map, ""));
    am2z_idmap_destroy(&map);
    ck_assert_ptr_null(map);
    /* every item destroyed exactly once per time it was removed: those
       still in were destroyed by destroy */
    for (int k = 0; k < S_KEYS; k++)
        ck_assert_int_ge(items[k].destroyed, in[k] ? 1 : 0);
    free(items);
}
END_TEST

START_TEST(test_idmap_iteration_survives_deletes)
{
    s_item_t *items = s_items();
    am2z_idmap_t *map = am2z_idmap_new(NULL);
    for (int k = 0; k < S_KEYS; k++)
        ck_assert_int_eq(am2z_idmap_insert(map, items[k].id, &items[k]), 0);
    /* delete the current entry and, every third step, a later one */
    int visited = 0;
    for (s_item_t *it = am2z_idmap_first(map); it; it = am2z_idmap_next(map)) {
        ck_assert_str_eq(am2z_idmap_cursor(map), it->id);
        it->seen++;
        visited++;
        am2z_idmap_delete(map, it->id);
        ck_assert_ptr_null(am2z_idmap_cursor(map));
        int other = (int)(it - items) + 1;
        if (visited % 3 == 0 && other < S_KEYS && !items[other].seen)
            am2z_idmap_delete(map, items[other].id);
    }
    ck_assert_uint_eq(am2z_idmap_size(map), 0);
    for (int k = 0; k < S_KEYS; k++)
        ck_assert_int_le(items[k].seen, 1);
    ck_assert_int_gt(visited, S_KEYS / 2);
    ck_assert_ptr_null(am2z_idmap_next(map));
    /* reusable after all that */
    ck_assert_int_eq(am2z_idmap_insert(map, items[5].id, &items[5]), 0);
    ck_assert_ptr_eq(am2z_idmap_first(map), &items[5]);
    ck_assert_ptr_null(am2z_idmap_next(map));
    am2z_idmap_destroy(&map);
    free(items);
}
END_TEST

/*  A queue's churn: ten entries at a time, 200,000 distinct keys through
    them. Every delete leaves a marker; unless inserts sweep them, the
    slots fill with markers and a probe for an absent key never ends (the
    case times out). */
START_TEST(test_idmap_churn_sweeps_deleted_markers)
{
    enum { LIVE = 10, TOTAL = 200000 };
    static char keys[LIVE][32];
    am2z_idmap_t *map = am2z_idmap_new(NULL);
    int dummy;
    for (int i = 0; i < TOTAL; i++) {
        char *k = keys[i % LIVE];
        if (i >= LIVE) {
            am2z_idmap_delete(map, k);
            ck_assert_ptr_null(am2z_idmap_lookup(map, k));
        }
        snprintf(k, sizeof keys[0], "job-%d", i);
        ck_assert_int_eq(am2z_idmap_insert(map, k, &dummy), 0);
        ck_assert_ptr_null(am2z_idmap_lookup(map, "absent"));
    }
    ck_assert_uint_eq(am2z_idmap_size(map), LIVE);
    am2z_idmap_destroy(&map);
}
END_TEST

START_TEST(test_idmap_purge_destroy_and_bad_arguments)
{
    s_item_t *items = s_items();
    am2z_idmap_t *map = am2z_idmap_new(s_item_destroy);
    for (int k = 0; k < 100; k++)
        am2z_idmap_insert(map, items[k].id, &items[k]);
    am2z_idmap_purge(map);
    ck_assert_uint_eq(am2z_idmap_size(map), 0);
    ck_assert_ptr_null(am2z_idmap_first(map));
    for (int k = 0; k < 100; k++) {
        ck_assert_int_eq(items[k].destroyed, 1);
        ck_assert_ptr_null(am2z_idmap_lookup(map, items[k].id));
    }
    for (int k = 0; k < 10; k++)
        ck_assert_int_eq(am2z_idmap_insert(map, items[k].id, &items[k]), 0);
    ck_assert_int_eq(am2z_idmap_insert(map, NULL, &items[0]), -2);
    ck_assert_int_eq(am2z_idmap_insert(map, "", &items[0]), -2);
    ck_assert_int_eq(am2z_idmap_insert(map, "x", NULL), -2);
    ck_assert_int_eq(am2z_idmap_insert(NULL, "x", &items[0]), -2);
    ck_assert_ptr_null(am2z_idmap_lookup(NULL, "x"));
    ck_assert_ptr_null(am2z_idmap_lookup(map, NULL));
    am2z_idmap_delete(map, "absent");
    am2z_idmap_delete(map, NULL);
    ck_assert_uint_eq(am2z_idmap_size(map), 10);
    am2z_idmap_destroy(&map);
    for (int k = 0; k < 10; k++)
        ck_assert_int_eq(items[k].destroyed, 2);
    ck_assert_int_eq(items[10].destroyed, 1);
    am2z_idmap_destroy(&map);      /* NULL: nothing */
    am2z_idmap_destroy(NULL);
    free(items);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("idmap");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_idmap_agrees_with_a_model);
    tcase_add_test(tc, test_idmap_iteration_survives_deletes);
    tcase_add_test(tc, test_idmap_churn_sweeps_deleted_markers);
    tcase_add_test(tc, test_idmap_purge_destroy_and_bad_arguments);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
