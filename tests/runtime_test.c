/*  runtime_test.c — Check suite "runtime": the embedded runtime (broker and
    worker as threads over inproc://, LMDB in a temporary data dir). */
#include "am2z_examples.h"
#include "am2z_runtime.h"
#include "am2z_testutil.h"

#include <string.h>

static am2z_runtime_t *
s_runtime_durable(const char *dir, int durability)
{
    am2z_broker_config_t cfg;
    am2z_broker_config_defaults(&cfg);
    snprintf(cfg.common.data_dir, sizeof cfg.common.data_dir, "%s", dir);
    cfg.common.log_level = AM2Z_LOG_WARN;
    cfg.common.durability = durability;
    am2z_runtime_t *rt = am2z_runtime_new(&cfg);
    ck_assert_ptr_nonnull(rt);
    size_t n = 0;
    const am2z_processor_def_t *defs = am2z_example_processors(&n);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(am2z_runtime_register(rt, &defs[i]), AM2Z_OK);
    return rt;
}

static am2z_runtime_t *
s_runtime(const char *dir)
{
    return s_runtime_durable(dir, AM2Z_DURABILITY_SYNC);
}

/*  Runs increment once in `session` (continuing from its stored state) and
    returns the resulting version. */
static uint64_t
s_increment(am2z_runtime_t *rt, const char *session, int64_t *count)
{
    am2z_client_t *c = am2z_runtime_client(rt);
    ck_assert_ptr_nonnull(c);
    am2z_result_t *r = NULL;
    ck_assert_int_eq(am2z_client_execute(c, "increment", NULL, session, NULL, &r), AM2Z_OK);
    ck_assert_msg(r->success, "increment failed: %s", r->error ? r->error->message : "?");
    uint64_t v = am2z_state_version(r->state);
    ck_assert_int_eq(am2z_state_get_int(r->state, "count", count), AM2Z_OK);
    am2z_result_destroy(&r);
    return v;
}

START_TEST(test_runtime_executes_in_process)
{
    char dir[512];
    am2z_test_tmpdir("runtime", dir, sizeof dir);
    am2z_runtime_t *rt = s_runtime(dir);
    ck_assert_int_eq(am2z_runtime_start(rt), AM2Z_OK);
    int64_t count = 0;
    ck_assert_uint_eq(s_increment(rt, "rt-1", &count), 2);
    ck_assert_int_eq(count, 1);
    ck_assert_uint_eq(s_increment(rt, "rt-1", &count), 3);
    ck_assert_int_eq(count, 2);
    am2z_runtime_destroy(&rt);
    am2z_test_rmtree(dir);
}
END_TEST

/*  The embedded runtime shares its process with the application: even
    with periodic durability its LMDB map stays read-only (no MDB_WRITEMAP). */
START_TEST(test_runtime_keeps_its_lmdb_map_read_only)
{
    char dir[512];
    am2z_test_tmpdir("runtime-map", dir, sizeof dir);
    am2z_runtime_t *rt = s_runtime_durable(dir, AM2Z_DURABILITY_PERIODIC);
    ck_assert_int_eq(am2z_runtime_start(rt), AM2Z_OK);
    int64_t count = 0;
    ck_assert_uint_eq(s_increment(rt, "rt-map", &count), 2);
    char perms[5];
    am2z_test_lmdb_map_perms(0, dir, perms);
    ck_assert_str_eq(perms, "r--s");
    am2z_runtime_destroy(&rt);
    am2z_test_rmtree(dir);
}
END_TEST

START_TEST(test_runtime_start_twice_and_stop_when_stopped_are_harmless)
{
    char dir[512];
    am2z_test_tmpdir("runtime", dir, sizeof dir);
    am2z_runtime_t *rt = s_runtime(dir);
    am2z_runtime_stop(rt);                        /* not started: no-op */
    ck_assert_ptr_null(am2z_runtime_client(rt));
    ck_assert_int_eq(am2z_runtime_start(rt), AM2Z_OK);
    ck_assert_int_eq(am2z_runtime_start(rt), AM2Z_OK);
    int64_t count = 0;
    s_increment(rt, "rt-2", &count);
    ck_assert_int_eq(count, 1);
    am2z_runtime_stop(rt);
    am2z_runtime_stop(rt);
    am2z_runtime_destroy(&rt);
    am2z_runtime_destroy(&rt);                    /* NULL-safe */
    am2z_test_rmtree(dir);
}
END_TEST

START_TEST(test_runtime_start_stop_start_executes_again_and_keeps_state)
{
    char dir[512];
    am2z_test_tmpdir("runtime", dir, sizeof dir);
    am2z_runtime_t *rt = s_runtime(dir);
    int64_t count = 0;
    for (int round = 0; round < 3; round++) {
        ck_assert_int_eq(am2z_runtime_start(rt), AM2Z_OK);
        uint64_t v = s_increment(rt, "rt-3", &count);
        /* state lives in LMDB, so it survives each restart */
        ck_assert_int_eq(count, round + 1);
        ck_assert_uint_eq(v, (uint64_t)round + 2);
        am2z_runtime_stop(rt);
    }
    am2z_runtime_destroy(&rt);
    am2z_test_rmtree(dir);
}
END_TEST

START_TEST(test_runtime_two_runtimes_do_not_meet)
{
    char d1[512], d2[512];
    am2z_test_tmpdir("runtime-a", d1, sizeof d1);
    am2z_test_tmpdir("runtime-b", d2, sizeof d2);
    am2z_runtime_t *a = s_runtime(d1);
    am2z_runtime_t *b = s_runtime(d2);
    ck_assert_int_eq(am2z_runtime_start(a), AM2Z_OK);
    ck_assert_int_eq(am2z_runtime_start(b), AM2Z_OK);
    int64_t count = 0;
    s_increment(a, "shared-id", &count);
    s_increment(a, "shared-id", &count);
    ck_assert_int_eq(count, 2);
    s_increment(b, "shared-id", &count);
    ck_assert_int_eq(count, 1);
    am2z_runtime_destroy(&a);
    am2z_runtime_destroy(&b);
    am2z_test_rmtree(d1);
    am2z_test_rmtree(d2);
}
END_TEST

/*  A data dir serves one broker at a time (am2z_store.c, am2z.lock): two
    brokers on one store would each lease the same jobs. A second runtime
    on a dir in use does not start, and says why; once the first stops,
    it starts and sees the first one's state. */
START_TEST(test_runtime_second_runtime_on_one_data_dir_is_refused)
{
    char dir[512];
    am2z_test_tmpdir("runtime-lock", dir, sizeof dir);
    am2z_runtime_t *a = s_runtime(dir);
    am2z_runtime_t *b = s_runtime(dir);
    ck_assert_int_eq(am2z_runtime_start(a), AM2Z_OK);
    int64_t count = 0;
    s_increment(a, "lock-1", &count);
    ck_assert_int_eq(count, 1);

    ck_assert_int_ne(am2z_runtime_start(b), AM2Z_OK);
    ck_assert_ptr_null(am2z_runtime_client(b));
    const char *why = am2z_runtime_last_error(b);
    ck_assert_msg(strstr(why, "in use by another broker") && strstr(why, dir),
                  "unexpected error: %s", why);
    /* the first one is untouched */
    s_increment(a, "lock-1", &count);
    ck_assert_int_eq(count, 2);

    am2z_runtime_stop(a);
    ck_assert_int_eq(am2z_runtime_start(b), AM2Z_OK);
    ck_assert_str_eq(am2z_runtime_last_error(b), "");
    s_increment(b, "lock-1", &count);
    ck_assert_int_eq(count, 3);
    /* and now b holds it */
    ck_assert_int_ne(am2z_runtime_start(a), AM2Z_OK);
    ck_assert_ptr_nonnull(strstr(am2z_runtime_last_error(a), "in use by another broker"));
    am2z_runtime_destroy(&b);
    am2z_runtime_destroy(&a);
    am2z_test_rmtree(dir);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("runtime");
    TCase *tc = tcase_create("embedded");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_runtime_executes_in_process);
    tcase_add_test(tc, test_runtime_start_twice_and_stop_when_stopped_are_harmless);
    tcase_add_test(tc, test_runtime_keeps_its_lmdb_map_read_only);
    tcase_add_test(tc, test_runtime_start_stop_start_executes_again_and_keeps_state);
    tcase_add_test(tc, test_runtime_two_runtimes_do_not_meet);
    tcase_add_test(tc, test_runtime_second_runtime_on_one_data_dir_is_refused);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
