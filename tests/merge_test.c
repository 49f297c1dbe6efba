/*  merge_test.c — Check suite "merge": three-way merge of branch states. */
#include "am2z_error.h"
#include "am2z_json.h"
#include "am2z_merge.h"
#include "am2z_testutil.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/*  A state of session "m" at version 3 whose user keys are the JSON object. */
static am2z_state_t *
s_state(const char *json)
{
    uint8_t *map = NULL;
    size_t size = 0;
    char err[128];
    ck_assert_int_eq(am2z_json_parse_to_msgpack(json, &map, &size, err, sizeof err), AM2Z_OK);
    am2z_state_t *v1 = NULL, *st = NULL;
    ck_assert_int_eq(am2z_state_from_map("m", map, size, 1000, &v1), AM2Z_OK);
    ck_assert_int_eq(am2z_state_with_metadata(v1, "m", 3, 1000, 1000, &st), AM2Z_OK);
    am2z_state_destroy(&v1);
    free(map);
    return st;
}

/*  The user keys of st as compact JSON with sorted keys (caller frees). */
static char *
s_user_json(const am2z_state_t *st)
{
    json_t *j = NULL;
    ck_assert_int_eq(am2z_json_from_msgpack(am2z_state_data(st), am2z_state_size(st), &j),
                     AM2Z_OK);
    json_object_del(j, "metadata");
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return text;
}

/*  Merges `in` with up to three branches and checks the merged user keys. */
static void
s_check(const char *in, const char *b0, const char *b1, const char *b2, const char *want,
        size_t want_conflicts)
{
    am2z_state_t *input = s_state(in);
    am2z_state_t *br[3] = { s_state(b0), s_state(b1), b2 ? s_state(b2) : NULL };
    size_t n = b2 ? 3 : 2;
    am2z_state_t *out = NULL;
    am2z_merge_conflict_t *conflicts = NULL;
    size_t nconflicts = 0;
    ck_assert_int_eq(am2z_merge_states(input, (const am2z_state_t *const *)br, n, false, 2000, 0,
                                       &out, &conflicts, &nconflicts), AM2Z_OK);
    char *got = s_user_json(out);
    ck_assert_msg(strcmp(got, want) == 0, "merged %s, want %s", got, want);
    ck_assert_uint_eq(nconflicts, want_conflicts);
    ck_assert_uint_eq(am2z_state_version(out), 4);
    ck_assert_uint_eq(am2z_state_last_updated(out), 2000);
    ck_assert_uint_eq(am2z_state_created_at(out), 1000);
    ck_assert_str_eq(am2z_state_session_id(out), "m");
    free(got);
    free(conflicts);
    am2z_state_destroy(&out);
    for (size_t i = 0; i < 3; i++)
        am2z_state_destroy(&br[i]);
    am2z_state_destroy(&input);
}

START_TEST(test_merge_disjoint_keys_combine)
{
    s_check("{\"a\":1}", "{\"a\":1,\"b\":2}", "{\"a\":1,\"c\":3}", NULL,
            "{\"a\":1,\"b\":2,\"c\":3}", 0);
}
END_TEST

START_TEST(test_merge_appends_keep_every_element_in_branch_order)
{
    s_check("{\"items\":[\"x\"]}", "{\"items\":[\"x\",\"A\"]}", "{\"items\":[\"x\",\"B\"]}",
            "{\"items\":[\"x\",\"C\"]}", "{\"items\":[\"x\",\"A\",\"B\",\"C\"]}", 0);
    /* the array may not exist yet */
    s_check("{}", "{\"items\":[\"A\"]}", "{\"items\":[\"B\"]}", "{\"items\":[\"C\"]}",
            "{\"items\":[\"A\",\"B\",\"C\"]}", 0);
}
END_TEST

START_TEST(test_merge_nested_maps_merge_key_by_key)
{
    s_check("{\"o\":{\"id\":1}}", "{\"o\":{\"id\":1,\"ship\":\"T1\"}}",
            "{\"o\":{\"id\":1,\"mail\":true}}", NULL,
            "{\"o\":{\"id\":1,\"mail\":true,\"ship\":\"T1\"}}", 0);
}
END_TEST

START_TEST(test_merge_scalar_conflict_takes_later_branch)
{
    am2z_state_t *input = s_state("{\"s\":\"new\",\"k\":1}");
    am2z_state_t *br[3] = { s_state("{\"s\":\"a\",\"k\":1}"), s_state("{\"s\":\"new\",\"k\":1}"),
                            s_state("{\"s\":\"c\",\"k\":1}") };
    am2z_state_t *out = NULL;
    am2z_merge_conflict_t *conflicts = NULL;
    size_t nconflicts = 0;
    ck_assert_int_eq(am2z_merge_states(input, (const am2z_state_t *const *)br, 3, false, 5, 0,
                                       &out, &conflicts, &nconflicts), AM2Z_OK);
    char buf[16];
    ck_assert_int_eq(am2z_state_get_strcpy(out, "s", buf, sizeof buf), AM2Z_OK);
    ck_assert_str_eq(buf, "c");
    ck_assert_uint_eq(nconflicts, 1);
    ck_assert_str_eq(conflicts[0].path, "s");
    ck_assert_uint_eq(conflicts[0].winner, 2);
    free(conflicts);
    am2z_state_destroy(&out);

    /* strict: the same conflict fails the merge and is still reported */
    ck_assert_int_eq(am2z_merge_states(input, (const am2z_state_t *const *)br, 3, true, 5, 0,
                                       &out, &conflicts, &nconflicts), AM2Z_ECONFLICT);
    ck_assert_ptr_null(out);
    ck_assert_uint_eq(nconflicts, 1);
    free(conflicts);
    for (size_t i = 0; i < 3; i++)
        am2z_state_destroy(&br[i]);
    am2z_state_destroy(&input);
}
END_TEST

START_TEST(test_merge_agreeing_changes_and_deletes)
{
    /* both set the same value: no conflict */
    s_check("{\"a\":1,\"b\":1}", "{\"a\":2,\"b\":1}", "{\"a\":2,\"b\":1}", NULL,
            "{\"a\":2,\"b\":1}", 0);
    /* one branch deletes, the other leaves it: deleted */
    s_check("{\"a\":1,\"b\":1}", "{\"b\":1}", "{\"a\":1,\"b\":1}", NULL, "{\"b\":1}", 0);
    /* one deletes, one changes: conflict, later branch wins */
    s_check("{\"a\":1}", "{}", "{\"a\":5}", NULL, "{\"a\":5}", 1);
    /* nested conflict is reported with its dotted path */
    am2z_state_t *input = s_state("{\"o\":{\"st\":\"x\"}}");
    am2z_state_t *br[2] = { s_state("{\"o\":{\"st\":\"y\"}}"), s_state("{\"o\":{\"st\":\"z\"}}") };
    am2z_state_t *out = NULL;
    am2z_merge_conflict_t *c = NULL;
    size_t nc = 0;
    ck_assert_int_eq(am2z_merge_states(input, (const am2z_state_t *const *)br, 2, false, 5, 0,
                                       &out, &c, &nc), AM2Z_OK);
    ck_assert_uint_eq(nc, 1);
    ck_assert_str_eq(c[0].path, "o.st");
    free(c);
    am2z_state_destroy(&out);
    am2z_state_destroy(&br[0]);
    am2z_state_destroy(&br[1]);
    am2z_state_destroy(&input);
}
END_TEST

START_TEST(test_merge_rejects_bad_arguments_and_respects_max_size)
{
    am2z_state_t *input = s_state("{\"a\":1}");
    am2z_state_t *other = NULL;
    ck_assert_int_eq(am2z_state_new("other", 1, &other), AM2Z_OK);
    am2z_state_t *out = NULL;
    const am2z_state_t *one[1] = { other };
    ck_assert_int_eq(am2z_merge_states(input, one, 1, false, 1, 0, &out, NULL, NULL),
                     AM2Z_EINVAL);
    ck_assert_int_eq(am2z_merge_states(input, one, 0, false, 1, 0, &out, NULL, NULL),
                     AM2Z_EINVAL);
    am2z_state_t *big = s_state("{\"a\":1,\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}");
    const am2z_state_t *b[1] = { big };
    ck_assert_int_eq(am2z_merge_states(input, b, 1, false, 1, 40, &out, NULL, NULL),
                     AM2Z_ERESOURCE);
    ck_assert_ptr_null(out);
    am2z_state_destroy(&big);
    am2z_state_destroy(&other);
    am2z_state_destroy(&input);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("merge");
    TCase *tc = tcase_create("merge");
    tcase_add_test(tc, test_merge_disjoint_keys_combine);
    tcase_add_test(tc, test_merge_appends_keep_every_element_in_branch_order);
    tcase_add_test(tc, test_merge_nested_maps_merge_key_by_key);
    tcase_add_test(tc, test_merge_scalar_conflict_takes_later_branch);
    tcase_add_test(tc, test_merge_agreeing_changes_and_deletes);
    tcase_add_test(tc, test_merge_rejects_bad_arguments_and_respects_max_size);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
