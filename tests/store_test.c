/*  store_test.c — Check suite "store": the LMDB store on real directories. */
#include "am2z_envelope.h"
#include "am2z_error.h"
#include "am2z_store.h"
#include "am2z_testutil.h"

#include <lmdb.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <poll.h>
#include <sched.h>
#include <stdbool.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOW 1700000000000ull

static void
s_cfg(am2z_config_t *cfg, const char *dir)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->data_dir, sizeof cfg->data_dir, "%s", dir);
    cfg->map_size = 64u << 20;
    cfg->durability = AM2Z_DURABILITY_SYNC;
    cfg->flush_interval_ms = 100;
    cfg->max_state_size = 1u << 20;
    cfg->max_sessions = 100000;
    cfg->max_frame_size = 4u << 20;
}

/*  The suite runs twice (tests/CMakeLists.txt): as is, and with
    AM2Z_TEST_STORE_PIPELINE=1, where every sync-mode store gets the writer
    thread (am2z_store_pipeline), so every case checks that staged batches
    read, walk, refuse and persist exactly as direct ones. */
static bool
s_piped(void)
{
    const char *v = getenv("AM2Z_TEST_STORE_PIPELINE");
    return v && *v == '1';
}

static am2z_store_t *
s_open(const am2z_config_t *cfg)
{
    am2z_store_t *store = NULL;
    char err[512] = "";
    int rc = am2z_store_open(cfg, &store, err, sizeof err);
    ck_assert_msg(rc == AM2Z_OK, "open %s: %s (%s)", cfg->data_dir, am2z_strerror(rc), err);
    ck_assert_ptr_nonnull(store);
    if (s_piped() && cfg->durability == AM2Z_DURABILITY_SYNC)
        ck_assert_int_eq(am2z_store_pipeline(store), AM2Z_OK);
    return store;
}

/*  A test's directory, config and open store. */
typedef struct {
    char dir[512];
    am2z_config_t cfg;
    am2z_store_t *store;
} s_env_t;

static void
s_env_open(s_env_t *e, const char *tag)
{
    am2z_test_tmpdir(tag, e->dir, sizeof e->dir);
    s_cfg(&e->cfg, e->dir);
    e->store = s_open(&e->cfg);
}

static void
s_env_reopen(s_env_t *e)
{
    am2z_store_destroy(&e->store);
    e->store = s_open(&e->cfg);
}

static void
s_env_close(s_env_t *e)
{
    am2z_store_destroy(&e->store);
    am2z_store_destroy(&e->store);      /* idempotent */
    am2z_test_rmtree(e->dir);
}

static void
s_expect_state(am2z_store_t *store, const char *id, uint64_t version,
               const char *data)
{
    am2z_record_t rec;
    int rc = am2z_store_get_state(store, id, &rec);
    ck_assert_msg(rc == AM2Z_OK, "get %s: %s", id, am2z_strerror(rc));
    ck_assert_uint_eq(rec.version, version);
    ck_assert_uint_eq(rec.size, strlen(data));
    ck_assert_mem_eq(rec.data, data, rec.size);
    am2z_record_clear(&rec);
    ck_assert_ptr_null(rec.data);
}

#define PUT(store, id, exp, ver, str) \
    am2z_store_put_state((store), (id), (exp), (ver), (const uint8_t *)(str), strlen(str), NOW)

START_TEST(test_store_creates_state_with_expected_zero)
{
    s_env_t e;
    s_env_open(&e, "store-create");
    ck_assert_int_eq(PUT(e.store, "s1", 0, 1, "hello"), AM2Z_OK);
    am2z_record_t rec;
    ck_assert_int_eq(am2z_store_get_state(e.store, "s1", &rec), AM2Z_OK);
    ck_assert_uint_eq(rec.version, 1);
    ck_assert_uint_eq(rec.created_ms, NOW);
    ck_assert_uint_eq(rec.updated_ms, NOW);
    ck_assert_mem_eq(rec.data, "hello", 5);
    am2z_record_clear(&rec);
    ck_assert_int_eq(am2z_store_get_state(e.store, "missing", &rec), AM2Z_ENOTFOUND);
    ck_assert_ptr_null(rec.data);
    ck_assert_int_eq(am2z_store_get_state(e.store, "bad/id", &rec), AM2Z_EINVAL);
    s_env_close(&e);
}
END_TEST

START_TEST(test_store_update_keeps_created_time)
{
    s_env_t e;
    s_env_open(&e, "store-update");
    ck_assert_int_eq(PUT(e.store, "s1", 0, 1, "a"), AM2Z_OK);
    ck_assert_int_eq(am2z_store_put_state(e.store, "s1", 1, 2, (const uint8_t *)"bb", 2,
                                          NOW + 500), AM2Z_OK);
    am2z_record_t rec;
    ck_assert_int_eq(am2z_store_get_state(e.store, "s1", &rec), AM2Z_OK);
    ck_assert_uint_eq(rec.version, 2);
    ck_assert_uint_eq(rec.created_ms, NOW);
    ck_assert_uint_eq(rec.updated_ms, NOW + 500);
    am2z_record_clear(&rec);
    s_env_close(&e);
}
END_TEST

START_TEST(test_store_rejects_stale_version)
{
    s_env_t e;
    s_env_open(&e, "store-stale");
    ck_assert_int_eq(PUT(e.store, "s1", 0, 1, "v1"), AM2Z_OK);
    ck_assert_int_eq(PUT(e.store, "s1", 1, 2, "v2"), AM2Z_OK);
    ck_assert_int_eq(PUT(e.store, "s1", 1, 3, "stale"), AM2Z_ECONFLICT);
    ck_assert_int_eq(PUT(e.store, "s1", 3, 4, "future"), AM2Z_ECONFLICT);
    ck_assert_int_eq(PUT(e.store, "nobody", 4, 5, "x"), AM2Z_ECONFLICT);
    s_expect_state(e.store, "s1", 2, "v2");
    s_env_close(&e);
}
END_TEST

START_TEST(test_store_create_twice_conflicts)
{
    s_env_t e;
    s_env_open(&e, "store-twice");
    ck_assert_int_eq(PUT(e.store, "s1", 0, 1, "first"), AM2Z_OK);
    ck_assert_int_eq(PUT(e.store, "s1", 0, 1, "second"), AM2Z_ECONFLICT);
    ck_assert_int_eq(PUT(e.store, "s1", 0, 7, "second"), AM2Z_ECONFLICT);
    s_expect_state(e.store, "s1", 1, "first");
    s_env_close(&e);
}
END_TEST

START_TEST(test_store_rejects_non_increasing_version_and_bad_ids)
{
    s_env_t e;
    s_env_open(&e, "store-einval");
    ck_assert_int_eq(PUT(e.store, "s1", 0, 0, "x"), AM2Z_EINVAL);
    ck_assert_int_eq(PUT(e.store, "s1", 0, 1, "x"), AM2Z_OK);
    ck_assert_int_eq(PUT(e.store, "s1", 1, 1, "x"), AM2Z_EINVAL);
    ck_assert_int_eq(PUT(e.store, "s1", 2, 1, "x"), AM2Z_EINVAL);
    ck_assert_int_eq(PUT(e.store, "", 0, 1, "x"), AM2Z_EINVAL);
    ck_assert_int_eq(PUT(e.store, "a/b", 0, 1, "x"), AM2Z_EINVAL);
    ck_assert_int_eq(PUT(e.store, "a b", 0, 1, "x"), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_store_put_state(e.store, NULL, 0, 1, NULL, 0, NOW), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_store_put_state(e.store, "s2", 0, 1, NULL, 3, NOW), AM2Z_EINVAL);
    s_expect_state(e.store, "s1", 1, "x");
    s_env_close(&e);
}
END_TEST

START_TEST(test_store_deletes_state)
{
    s_env_t e;
    s_env_open(&e, "store-delete");
    ck_assert_int_eq(PUT(e.store, "s1", 0, 1, "x"), AM2Z_OK);
    ck_assert_int_eq(am2z_store_delete_state(e.store, "s1"), AM2Z_OK);
    am2z_record_t rec;
    ck_assert_int_eq(am2z_store_get_state(e.store, "s1", &rec), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_store_delete_state(e.store, "s1"), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_store_delete_state(e.store, "never"), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_store_delete_state(e.store, "bad id"), AM2Z_EINVAL);
    /*  A deleted session can be created afresh. */
    ck_assert_int_eq(PUT(e.store, "s1", 0, 1, "again"), AM2Z_OK);
    s_expect_state(e.store, "s1", 1, "again");
    s_env_close(&e);
}
END_TEST

/*  Collects session ids into a newline-joined string; stops at "stop". */
typedef struct {
    char buf[256];
    int calls;
} s_collect_t;

static int
s_collect_session(const char *id, void *arg)
{
    s_collect_t *c = arg;
    c->calls++;
    strncat(c->buf, id, sizeof c->buf - strlen(c->buf) - 2);
    strcat(c->buf, ",");
    return strcmp(id, "stop") == 0 ? 42 : 0;
}

START_TEST(test_store_lists_sessions_in_order)
{
    s_env_t e;
    s_env_open(&e, "store-list");
    const char *ids[] = { "c", "a", "b2", "b1", "zz", "A" };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        ck_assert_int_eq(PUT(e.store, ids[i], 0, 1, "x"), AM2Z_OK);
    s_collect_t c = { "", 0 };
    ck_assert_int_eq(am2z_store_list_sessions(e.store, s_collect_session, &c), AM2Z_OK);
    ck_assert_str_eq(c.buf, "A,a,b1,b2,c,zz,");
    ck_assert_int_eq(c.calls, 6);

    ck_assert_int_eq(PUT(e.store, "stop", 0, 1, "x"), AM2Z_OK);
    memset(&c, 0, sizeof c);
    ck_assert_int_eq(am2z_store_list_sessions(e.store, s_collect_session, &c), 42);
    ck_assert_str_eq(c.buf, "A,a,b1,b2,c,stop,");
    ck_assert_int_eq(am2z_store_list_sessions(e.store, NULL, NULL), AM2Z_EINVAL);
    s_env_close(&e);
}
END_TEST

START_TEST(test_store_reopen_finds_everything_committed)
{
    s_env_t e;
    s_env_open(&e, "store-reopen");
    ck_assert_int_eq(PUT(e.store, "s1", 0, 1, "one"), AM2Z_OK);
    ck_assert_int_eq(PUT(e.store, "s1", 1, 2, "two"), AM2Z_OK);
    ck_assert_int_eq(PUT(e.store, "s2", 0, 5, "five"), AM2Z_OK);
    am2z_store_batch_t *b;
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_record(b, AM2Z_DB_JOBS, "j1", 2, 3,
                                           (const uint8_t *)"job", 3, NOW), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_raw(b, AM2Z_DB_IDEM, "k", 1, "v", 1), AM2Z_OK);
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_OK);
    ck_assert_ptr_null(b);

    s_env_reopen(&e);
    s_expect_state(e.store, "s1", 2, "two");
    s_expect_state(e.store, "s2", 5, "five");
    am2z_record_t rec;
    ck_assert_int_eq(am2z_store_get_record(e.store, AM2Z_DB_JOBS, "j1", 2, &rec), AM2Z_OK);
    ck_assert_uint_eq(rec.version, 3);
    ck_assert_mem_eq(rec.data, "job", 3);
    am2z_record_clear(&rec);
    void *v;
    size_t vs;
    ck_assert_int_eq(am2z_store_get_raw(e.store, AM2Z_DB_IDEM, "k", 1, &v, &vs), AM2Z_OK);
    ck_assert_uint_eq(vs, 1);
    ck_assert_mem_eq(v, "v", 1);
    free(v);
    s_env_close(&e);
}
END_TEST

START_TEST(test_store_aborted_batch_writes_nothing)
{
    s_env_t e;
    s_env_open(&e, "store-abort");
    am2z_store_batch_t *b;
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_state(b, "s1", 0, 1, (const uint8_t *)"x", 1, NOW), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_raw(b, AM2Z_DB_META, "m", 1, "1", 1), AM2Z_OK);
    am2z_store_abort(&b);
    ck_assert_ptr_null(b);
    am2z_store_abort(&b);       /* NULL-safe, idempotent */

    /*  A batch left open at destroy is aborted too. */
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_state(b, "s2", 0, 1, (const uint8_t *)"y", 1, NOW), AM2Z_OK);
    s_env_reopen(&e);

    am2z_record_t rec;
    ck_assert_int_eq(am2z_store_get_state(e.store, "s1", &rec), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_store_get_state(e.store, "s2", &rec), AM2Z_ENOTFOUND);
    void *v;
    size_t vs;
    ck_assert_int_eq(am2z_store_get_raw(e.store, AM2Z_DB_META, "m", 1, &v, &vs), AM2Z_ENOTFOUND);
    am2z_store_stats_t st;
    ck_assert_int_eq(am2z_store_stats(e.store, &st), AM2Z_OK);
    ck_assert_uint_eq(st.sessions, 0);
    s_env_close(&e);
}
END_TEST

START_TEST(test_store_one_batch_at_a_time)
{
    s_env_t e;
    s_env_open(&e, "store-onebatch");
    am2z_store_batch_t *b, *b2 = NULL;
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    ck_assert_int_eq(am2z_store_begin(e.store, &b2), AM2Z_ESTATE);
    ck_assert_ptr_null(b2);
    /*  The one-shot helpers need a batch of their own. */
    ck_assert_int_eq(PUT(e.store, "s1", 0, 1, "x"), AM2Z_ESTATE);
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_OK);
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_store_commit(NULL), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    am2z_store_abort(&b);
    ck_assert_int_eq(PUT(e.store, "s1", 0, 1, "x"), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_raw(NULL, AM2Z_DB_META, "k", 1, "v", 1), AM2Z_ESTATE);
    s_env_close(&e);
}
END_TEST

START_TEST(test_store_batch_reads_see_own_writes)
{
    s_env_t e;
    s_env_open(&e, "store-ownwrites");
    am2z_store_batch_t *b;
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_state(b, "s1", 0, 1, (const uint8_t *)"one", 3, NOW), AM2Z_OK);
    /*  CAS against the batch's own uncommitted write. */
    ck_assert_int_eq(am2z_batch_put_state(b, "s1", 1, 2, (const uint8_t *)"two", 3, NOW + 1),
                     AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_state(b, "s1", 1, 3, (const uint8_t *)"old", 3, NOW),
                     AM2Z_ECONFLICT);
    am2z_record_t rec;
    ck_assert_int_eq(am2z_batch_get_state(b, "s1", &rec), AM2Z_OK);
    ck_assert_uint_eq(rec.version, 2);
    ck_assert_uint_eq(rec.created_ms, NOW);
    ck_assert_mem_eq(rec.data, "two", 3);
    am2z_record_clear(&rec);
    ck_assert_int_eq(am2z_batch_put_record(b, AM2Z_DB_RESULTS, "r", 1, 1,
                                           (const uint8_t *)"res", 3, NOW), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_get_record(b, AM2Z_DB_RESULTS, "r", 1, &rec), AM2Z_OK);
    ck_assert_mem_eq(rec.data, "res", 3);
    am2z_record_clear(&rec);
    ck_assert_int_eq(am2z_batch_get_record(b, AM2Z_DB_RESULTS, "q", 1, &rec), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_batch_get_record(b, AM2Z_DB_IDEM, "r", 1, &rec), AM2Z_EINVAL);

    /*  Outside the batch nothing is visible before the commit. */
    ck_assert_int_eq(am2z_store_get_state(e.store, "s1", &rec), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_OK);
    s_expect_state(e.store, "s1", 2, "two");
    s_env_close(&e);
}
END_TEST

START_TEST(test_store_group_commits_many_ops_in_one_batch)
{
    s_env_t e;
    s_env_open(&e, "store-group");
    ck_assert_int_eq(PUT(e.store, "taken", 0, 1, "x"), AM2Z_OK);
    am2z_store_batch_t *b;
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    char id[32], val[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(id, sizeof id, "s%05d", i);
        snprintf(val, sizeof val, "state-%d", i);
        ck_assert_int_eq(am2z_batch_put_state(b, id, 0, 1, (const uint8_t *)val,
                                              strlen(val), NOW), AM2Z_OK);
        ck_assert_int_eq(am2z_batch_put_record(b, AM2Z_DB_JOBS, id, strlen(id), 1,
                                               (const uint8_t *)val, strlen(val), NOW),
                         AM2Z_OK);
        ck_assert_int_eq(am2z_batch_put_raw(b, AM2Z_DB_IDEM, id, strlen(id), "", 0), AM2Z_OK);
        if (i == 1000) {
            /*  One failed op does not spoil the batch. */
            ck_assert_int_eq(am2z_batch_put_state(b, "taken", 0, 1, (const uint8_t *)"y", 1,
                                                  NOW), AM2Z_ECONFLICT);
            ck_assert_int_eq(am2z_batch_del(b, AM2Z_DB_META, "nope", 4), AM2Z_ENOTFOUND);
        }
    }
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_OK);

    s_env_reopen(&e);
    am2z_store_stats_t st;
    ck_assert_int_eq(am2z_store_stats(e.store, &st), AM2Z_OK);
    ck_assert_uint_eq(st.sessions, 2001);
    ck_assert_uint_eq(st.jobs, 2000);
    ck_assert_uint_eq(st.entries[AM2Z_DB_IDEM], 2000);
    s_expect_state(e.store, "s01234", 1, "state-1234");
    s_expect_state(e.store, "taken", 1, "x");
    s_env_close(&e);
}
END_TEST

START_TEST(test_store_sealed_record_put_get)
{
    s_env_t e;
    s_env_open(&e, "store-record");
    const uint8_t key[] = { 0x00, 0x01, 0xff };     /* binary keys are fine */
    am2z_store_batch_t *b;
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_record(b, AM2Z_DB_DLQ, key, sizeof key, 1,
                                           (const uint8_t *)"dead", 4, NOW), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_record(b, AM2Z_DB_RUNS, "empty", 5, 1, NULL, 0, NOW),
                     AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_record(b, AM2Z_DB_IDEM, "k", 1, 1,
                                           (const uint8_t *)"x", 1, NOW), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_batch_put_record(b, AM2Z_DB_JOBS, "", 0, 1,
                                           (const uint8_t *)"x", 1, NOW), AM2Z_EINVAL);
    char big[600];
    memset(big, 'k', sizeof big);
    ck_assert_int_eq(am2z_batch_put_record(b, AM2Z_DB_JOBS, big, sizeof big, 1,
                                           (const uint8_t *)"x", 1, NOW), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_batch_put_record(b, AM2Z_DB_COUNT_, "k", 1, 1,
                                           (const uint8_t *)"x", 1, NOW), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_OK);

    /*  Overwrite: new version and updated time, same created time. */
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_record(b, AM2Z_DB_DLQ, key, sizeof key, 2,
                                           (const uint8_t *)"deader", 6, NOW + 9), AM2Z_OK);
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_OK);

    am2z_record_t rec;
    ck_assert_int_eq(am2z_store_get_record(e.store, AM2Z_DB_DLQ, key, sizeof key, &rec), AM2Z_OK);
    ck_assert_uint_eq(rec.version, 2);
    ck_assert_uint_eq(rec.created_ms, NOW);
    ck_assert_uint_eq(rec.updated_ms, NOW + 9);
    ck_assert_uint_eq(rec.size, 6);
    ck_assert_mem_eq(rec.data, "deader", 6);
    am2z_record_clear(&rec);
    ck_assert_int_eq(am2z_store_get_record(e.store, AM2Z_DB_RUNS, "empty", 5, &rec), AM2Z_OK);
    ck_assert_uint_eq(rec.size, 0);
    ck_assert_ptr_nonnull(rec.data);
    am2z_record_clear(&rec);
    ck_assert_int_eq(am2z_store_get_record(e.store, AM2Z_DB_JOBS, "j", 1, &rec), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_store_get_record(e.store, AM2Z_DB_META, "j", 1, &rec), AM2Z_EINVAL);

    /*  Generic delete works on sealed databases too. */
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_del(b, AM2Z_DB_DLQ, key, sizeof key), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_del(b, AM2Z_DB_DLQ, key, sizeof key), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_OK);
    ck_assert_int_eq(am2z_store_get_record(e.store, AM2Z_DB_DLQ, key, sizeof key, &rec),
                     AM2Z_ENOTFOUND);
    s_env_close(&e);
}
END_TEST

/*  Appends "key=value;" for each entry; stops after `limit` entries. */
typedef struct {
    char buf[256];
    int limit;
    int calls;
} s_each_t;

static int
s_each_entry(const void *key, size_t key_size, const void *value, size_t value_size,
             void *arg)
{
    s_each_t *c = arg;
    size_t len = strlen(c->buf);
    snprintf(c->buf + len, sizeof c->buf - len, "%.*s=%.*s;", (int)key_size,
             (const char *)key, (int)value_size, (const char *)value);
    return ++c->calls == c->limit ? 7 : 0;
}

START_TEST(test_store_raw_put_get_each)
{
    s_env_t e;
    s_env_open(&e, "store-raw");
    am2z_store_batch_t *b;
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    const char *keys[] = { "p1/0003", "p1/0001", "p2/0001", "p1/0002" };
    for (size_t i = 0; i < 4; i++)
        ck_assert_int_eq(am2z_batch_put_raw(b, AM2Z_DB_IDEM, keys[i], 7, keys[i] + 3, 4),
                         AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_raw(b, AM2Z_DB_SESSIONS, "k", 1, "v", 1), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_batch_put_raw(b, AM2Z_DB_META, NULL, 0, "v", 1), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_batch_put_raw(b, AM2Z_DB_META, "empty", 5, NULL, 0), AM2Z_OK);
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_OK);

    void *v;
    size_t vs;
    ck_assert_int_eq(am2z_store_get_raw(e.store, AM2Z_DB_IDEM, "p1/0002", 7, &v, &vs), AM2Z_OK);
    ck_assert_uint_eq(vs, 4);
    ck_assert_mem_eq(v, "0002", 4);
    free(v);
    ck_assert_int_eq(am2z_store_get_raw(e.store, AM2Z_DB_META, "empty", 5, &v, &vs), AM2Z_OK);
    ck_assert_uint_eq(vs, 0);
    free(v);
    ck_assert_int_eq(am2z_store_get_raw(e.store, AM2Z_DB_IDEM, "p9", 2, &v, &vs),
                     AM2Z_ENOTFOUND);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(am2z_store_get_raw(e.store, AM2Z_DB_JOBS, "p9", 2, &v, &vs), AM2Z_EINVAL);

    s_each_t c = { "", 0, 0 };
    ck_assert_int_eq(am2z_store_each(e.store, AM2Z_DB_IDEM, NULL, 0, s_each_entry, &c), AM2Z_OK);
    ck_assert_str_eq(c.buf, "p1/0001=0001;p1/0002=0002;p1/0003=0003;p2/0001=0001;");
    memset(&c, 0, sizeof c);
    ck_assert_int_eq(am2z_store_each(e.store, AM2Z_DB_IDEM, "p1/0002", 7, s_each_entry, &c),
                     AM2Z_OK);
    ck_assert_str_eq(c.buf, "p1/0002=0002;p1/0003=0003;p2/0001=0001;");
    memset(&c, 0, sizeof c);
    c.limit = 2;
    ck_assert_int_eq(am2z_store_each(e.store, AM2Z_DB_IDEM, "p1/", 3, s_each_entry, &c), 7);
    ck_assert_str_eq(c.buf, "p1/0001=0001;p1/0002=0002;");
    memset(&c, 0, sizeof c);
    ck_assert_int_eq(am2z_store_each(e.store, AM2Z_DB_IDEM, "p3", 2, s_each_entry, &c), AM2Z_OK);
    ck_assert_int_eq(c.calls, 0);
    ck_assert_int_eq(am2z_store_each(e.store, AM2Z_DB_DONE, NULL, 0, s_each_entry, &c),
                     AM2Z_OK);
    ck_assert_int_eq(c.calls, 0);

    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_del(b, AM2Z_DB_IDEM, "p1/0001", 7), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_del(b, AM2Z_DB_IDEM, "p1/0001", 7), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_OK);
    ck_assert_int_eq(am2z_store_get_raw(e.store, AM2Z_DB_IDEM, "p1/0001", 7, &v, &vs),
                     AM2Z_ENOTFOUND);
    s_env_close(&e);
}
END_TEST

/*  Reads every session from inside a walk over the sessions. */
static int
s_read_inside_each(const char *id, void *arg)
{
    am2z_store_t *store = arg;
    am2z_record_t rec;
    int rc = am2z_store_get_state(store, id, &rec);
    am2z_record_clear(&rec);
    return rc == AM2Z_OK ? 0 : 1;
}

START_TEST(test_store_each_callback_may_read_the_store)
{
    s_env_t e;
    s_env_open(&e, "store-nested");
    ck_assert_int_eq(PUT(e.store, "a", 0, 1, "x"), AM2Z_OK);
    ck_assert_int_eq(PUT(e.store, "b", 0, 1, "y"), AM2Z_OK);
    ck_assert_int_eq(am2z_store_list_sessions(e.store, s_read_inside_each, e.store), AM2Z_OK);
    /*  And the cached read txn still works afterwards. */
    s_expect_state(e.store, "b", 1, "y");
    s_env_close(&e);
}
END_TEST

/*  Flips one bit of every occurrence of marker in path; returns the count. */
static int
s_corrupt_file(const char *path, const char *marker)
{
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)size);
    ck_assert_uint_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
    int hits = 0;
    size_t mlen = strlen(marker);
    for (size_t i = 0; i + mlen <= (size_t)size; i++) {
        if (memcmp(buf + i, marker, mlen) == 0) {
            buf[i + mlen / 2] ^= 0x01;
            hits++;
        }
    }
    fseek(f, 0, SEEK_SET);
    ck_assert_uint_eq(fwrite(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    free(buf);
    return hits;
}

/*  am2z_batch_state_pending: whether the batch changed a session's state
    (the store getters, which see commits only, would read an old one). */
START_TEST(test_store_batch_state_pending)
{
    s_env_t e;
    s_env_open(&e, "store-pending");
    ck_assert_int_eq(PUT(e.store, "kept", 0, 1, "k"), AM2Z_OK);
    ck_assert_int_eq(PUT(e.store, "gone", 0, 1, "g"), AM2Z_OK);
    ck_assert(!am2z_batch_state_pending(NULL, "kept"));
    am2z_store_batch_t *b;
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    ck_assert(!am2z_batch_state_pending(b, "kept"));
    ck_assert(!am2z_batch_state_pending(b, "never"));          /* absent on both sides */
    ck_assert_int_eq(am2z_batch_put_state(b, "kept", 1, 2, (const uint8_t *)"k2", 2, NOW),
                     AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_state(b, "new", 0, 1, (const uint8_t *)"n", 1, NOW),
                     AM2Z_OK);
    ck_assert_int_eq(am2z_batch_delete_state(b, "gone"), AM2Z_OK);
    ck_assert(am2z_batch_state_pending(b, "kept"));             /* updated */
    ck_assert(am2z_batch_state_pending(b, "new"));              /* created */
    ck_assert(am2z_batch_state_pending(b, "gone"));             /* deleted */
    ck_assert(!am2z_batch_state_pending(b, "never"));
    ck_assert(am2z_batch_state_pending(b, "bad/id"));           /* cannot tell: wait */
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_OK);
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    ck_assert(!am2z_batch_state_pending(b, "kept"));            /* committed: settled */
    ck_assert(!am2z_batch_state_pending(b, "gone"));
    am2z_store_abort(&b);
    ck_assert(!am2z_batch_state_pending(b, "kept"));            /* no batch */
    s_env_close(&e);
}
END_TEST

START_TEST(test_store_detects_corrupt_envelope_on_disk)
{
    s_env_t e;
    s_env_open(&e, "store-corrupt");
    ck_assert_int_eq(PUT(e.store, "victim", 0, 1, "MARKER-state-bytes-MARKER"), AM2Z_OK);
    ck_assert_int_eq(PUT(e.store, "bystander", 0, 1, "fine"), AM2Z_OK);
    am2z_store_batch_t *b;
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_record(b, AM2Z_DB_RESULTS, "job1", 4, 1,
                                           (const uint8_t *)"RESULT-payload-RESULT", 21, NOW),
                     AM2Z_OK);
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_OK);
    am2z_store_destroy(&e.store);

    char path[600];
    snprintf(path, sizeof path, "%s/data.mdb", e.dir);
    ck_assert_int_ge(s_corrupt_file(path, "MARKER-state-bytes-MARKER"), 1);
    ck_assert_int_ge(s_corrupt_file(path, "RESULT-payload-RESULT"), 1);
    e.store = s_open(&e.cfg);

    am2z_record_t rec;
    ck_assert_int_eq(am2z_store_get_state(e.store, "victim", &rec), AM2Z_EINTEGRITY);
    ck_assert_ptr_null(rec.data);
    ck_assert_int_eq(am2z_store_get_record(e.store, AM2Z_DB_RESULTS, "job1", 4, &rec),
                     AM2Z_EINTEGRITY);
    s_expect_state(e.store, "bystander", 1, "fine");
    /*  A CAS write over a corrupt record refuses too, in and out of a batch. */
    ck_assert_int_eq(PUT(e.store, "victim", 1, 2, "new"), AM2Z_EINTEGRITY);
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_get_state(b, "victim", &rec), AM2Z_EINTEGRITY);
    ck_assert_int_eq(am2z_batch_put_state(b, "victim", 1, 2, (const uint8_t *)"n", 1, NOW),
                     AM2Z_EINTEGRITY);
    am2z_store_abort(&b);
    /*  The session is still listed, and deleting it is the way out. */
    s_collect_t c = { "", 0 };
    ck_assert_int_eq(am2z_store_list_sessions(e.store, s_collect_session, &c), AM2Z_OK);
    ck_assert_str_eq(c.buf, "bystander,victim,");
    ck_assert_int_eq(am2z_store_delete_state(e.store, "victim"), AM2Z_OK);
    ck_assert_int_eq(PUT(e.store, "victim", 0, 1, "reborn"), AM2Z_OK);
    s_expect_state(e.store, "victim", 1, "reborn");
    s_env_close(&e);
}
END_TEST

/*  Checks that session id holds size bytes of fill. */
static void
s_expect_filled(am2z_store_t *store, const char *id, size_t size, uint8_t fill)
{
    am2z_record_t rec;
    ck_assert_int_eq(am2z_store_get_state(store, id, &rec), AM2Z_OK);
    ck_assert_uint_eq(rec.size, size);
    for (size_t i = 0; i < size; i++)
        ck_assert_uint_eq(rec.data[i], fill);
    am2z_record_clear(&rec);
}

/*  Puts states PREFIX0000, PREFIX0001, ... (size bytes of 'a' + i % 26,
    built in buf) until one fails or max are stored: returns how many were
    stored, *rc the failing code (AM2Z_OK if none failed). No assertions:
    safe under a lowered file size limit. */
static int
s_fill(am2z_store_t *store, const char *prefix, uint8_t *buf, size_t size, int max, int *rc)
{
    char id[32];
    int stored = 0;
    *rc = AM2Z_OK;
    for (int i = 0; i < max; i++) {
        snprintf(id, sizeof id, "%s%04d", prefix, i);
        memset(buf, 'a' + i % 26, size);
        *rc = am2z_store_put_state(store, id, 0, 1, buf, size, NOW);
        if (*rc != AM2Z_OK)
            break;
        stored++;
    }
    return stored;
}

/*  The states s_fill stored as PREFIX<from> .. PREFIX<to - 1> read back
    unchanged (one assertion per state). */
static void
s_expect_fill(am2z_store_t *store, const char *prefix, int from, int to, uint8_t *buf,
              size_t size)
{
    char id[32];
    for (int i = from; i < to; i++) {
        snprintf(id, sizeof id, "%s%04d", prefix, i);
        am2z_record_t rec;
        ck_assert_int_eq(am2z_store_get_state(store, id, &rec), AM2Z_OK);
        memset(buf, 'a' + i % 26, size);
        ck_assert_msg(rec.size == size && memcmp(rec.data, buf, size) == 0, "%s changed", id);
        am2z_record_clear(&rec);
    }
}

/*  Where LMDB writes pages in place: periodic mode (MDB_WRITEMAP), unless
    the store shares its process with application code (embedded); sync
    mode never. */
START_TEST(test_store_map_is_writable_only_for_a_periodic_daemon_store)
{
    const struct { int durability; bool embedded; const char *perms; } cases[] = {
        { AM2Z_DURABILITY_SYNC, false, "r--s" },
        { AM2Z_DURABILITY_PERIODIC, false, "rw-s" },
        { AM2Z_DURABILITY_PERIODIC, true, "r--s" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        s_env_t e;
        am2z_test_tmpdir("store-writemap", e.dir, sizeof e.dir);
        s_cfg(&e.cfg, e.dir);
        e.cfg.durability = cases[i].durability;
        e.cfg.embedded = cases[i].embedded;
        e.store = s_open(&e.cfg);
        ck_assert_int_eq(PUT(e.store, "w1", 0, 1, "state"), AM2Z_OK);
        char perms[5];
        am2z_test_lmdb_map_perms(0, e.dir, perms);
        ck_assert_msg(strcmp(perms, cases[i].perms) == 0, "case %zu: map %s, want %s", i, perms,
                      cases[i].perms);
        s_expect_state(e.store, "w1", 1, "state");
        s_env_close(&e);
    }
}
END_TEST

/*  Loop index 0: sync (pwrite), 1: periodic (MDB_WRITEMAP). */
START_TEST(test_store_map_full_is_a_resource_error)
{
    s_env_t e;
    am2z_test_tmpdir("store-mapfull", e.dir, sizeof e.dir);
    s_cfg(&e.cfg, e.dir);
    e.cfg.map_size = 256u << 10;
    if (_i == 1)
        e.cfg.durability = AM2Z_DURABILITY_PERIODIC;
    e.store = s_open(&e.cfg);

    static uint8_t state[6000];
    char id[32];
    int rc;
    int stored = s_fill(e.store, "s", state, sizeof state, 1000, &rc);
    ck_assert_int_eq(rc, AM2Z_ERESOURCE);
    ck_assert_int_gt(stored, 5);

    /*  A batch hitting the wall is poisoned as a whole. */
    am2z_store_batch_t *b;
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    int first = am2z_batch_put_raw(b, AM2Z_DB_META, "tiny", 4, "1", 1);
    ck_assert(first == AM2Z_OK || first == AM2Z_ERESOURCE);
    rc = first;
    for (int i = 0; i < 100 && rc == AM2Z_OK; i++) {
        snprintf(id, sizeof id, "t%04d", i);
        rc = am2z_batch_put_state(b, id, 0, 1, state, sizeof state, NOW);
    }
    ck_assert_int_eq(rc, AM2Z_ERESOURCE);
    ck_assert_int_eq(am2z_batch_put_raw(b, AM2Z_DB_META, "after", 5, "1", 1), AM2Z_ERESOURCE);
    ck_assert_int_eq(am2z_batch_put_state(b, "u", 0, 1, state, 1, NOW), AM2Z_ERESOURCE);
    ck_assert_int_eq(am2z_batch_del(b, AM2Z_DB_SESSIONS, "s0000", 5), AM2Z_ERESOURCE);
    am2z_record_t rec;
    ck_assert_int_eq(am2z_batch_get_state(b, "s0000", &rec), AM2Z_ERESOURCE);
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_ERESOURCE);
    ck_assert_ptr_null(b);

    /*  Everything committed before survives, now and after a reopen; the
        poisoned batch left nothing behind. */
    s_expect_filled(e.store, "s0000", sizeof state, 'a');
    s_env_reopen(&e);
    for (int i = 0; i < stored; i++) {
        snprintf(id, sizeof id, "s%04d", i);
        s_expect_filled(e.store, id, sizeof state, (uint8_t)('a' + i % 26));
    }
    void *v;
    size_t vs;
    ck_assert_int_eq(am2z_store_get_raw(e.store, AM2Z_DB_META, "tiny", 4, &v, &vs),
                     AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_store_get_state(e.store, "t0000", &rec), AM2Z_ENOTFOUND);
    am2z_store_stats_t st;
    ck_assert_int_eq(am2z_store_stats(e.store, &st), AM2Z_OK);
    ck_assert_uint_eq(st.sessions, (uint64_t)stored);
    ck_assert_uint_le(st.used_bytes, st.map_size);
    ck_assert_int_eq(st.write_errno, 0);        /* the map, not the file system */
    ck_assert_uint_le(st.alloc_bytes, st.map_size);

    /*  Freeing space makes room again. */
    ck_assert_int_eq(am2z_store_delete_state(e.store, "s0000"), AM2Z_OK);
    ck_assert_int_eq(am2z_store_delete_state(e.store, "s0001"), AM2Z_OK);
    ck_assert_int_eq(am2z_store_put_state(e.store, "fresh", 0, 1, state, 100, NOW), AM2Z_OK);

    /*  Reopening with a map smaller than the data is refused by name. */
    am2z_store_destroy(&e.store);
    am2z_config_t small = e.cfg;
    small.map_size = 64u << 10;
    char err[512] = "";
    am2z_store_t *store = NULL;
    ck_assert_int_eq(am2z_store_open(&small, &store, err, sizeof err), AM2Z_ERESOURCE);
    ck_assert_ptr_null(store);
    ck_assert_ptr_nonnull(strstr(err, e.dir));
    ck_assert_ptr_nonnull(strstr(err, "map-size"));
    s_env_close(&e);
}
END_TEST

/*  The data file's blocks are allocated ahead of use (MDB_WRITEMAP would
    turn a full disk into SIGBUS; a short pwrite is EIO in LMDB), so a file
    system that refuses to grow the file fails the batch with a resource
    error before LMDB writes, names the cause (write_errno) and keeps what
    was committed. A file size limit (RLIMIT_FSIZE, in this forked case
    only) stands in for a full disk; the disk-full case itself runs in
    fault_test on a small tmpfs. Sync mode: there the file grows by
    allocation (periodic mode sizes it to the map at open). Under
    CK_FORK=no the limit is lowered and restored around the writes. */
START_TEST(test_store_file_size_limit_is_a_resource_error_before_any_write)
{
    signal(SIGXFSZ, SIG_IGN);     /* EFBIG comes back as an error instead */
    s_env_t e;
    s_env_open(&e, "store-fsize");
    am2z_store_stats_t st;
    ck_assert_int_eq(am2z_store_stats(e.store, &st), AM2Z_OK);
    ck_assert_uint_ge(st.alloc_bytes, st.used_bytes);    /* allocated ahead at open */
    struct stat sb;
    char path[600];
    snprintf(path, sizeof path, "%s/data.mdb", e.dir);
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_uint_ge((uint64_t)sb.st_size, st.alloc_bytes);

    /*  The soft limit holds for every file of this process, Check's own
        result file included: nothing is asserted while it is lowered. */
    struct rlimit old, rl;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    rl = old;
    rl.rlim_cur = (rlim_t)sb.st_size;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    static uint8_t state[60000];
    int rc;
    int stored = s_fill(e.store, "f", state, sizeof state, 2000, &rc);
    int stats_rc = am2z_store_stats(e.store, &st);
    int del_rc = am2z_store_delete_state(e.store, "f0000");
    int again_rc = am2z_store_put_state(e.store, "small", 0, 1, state, 100, NOW);
    /* a full store still opens (reads work, writes are refused by name) */
    int big_rc;
    s_fill(e.store, "g", state, sizeof state, 2000, &big_rc);
    am2z_store_destroy(&e.store);
    char err[512] = "";
    int reopen_rc = am2z_store_open(&e.cfg, &e.store, err, sizeof err);
    am2z_record_t rec;
    int read_rc = e.store ? am2z_store_get_state(e.store, "f0001", &rec) : AM2Z_ESTATE;
    if (read_rc == AM2Z_OK)
        am2z_record_clear(&rec);
    /* the first write that needs new blocks is refused */
    int full_rc = AM2Z_ESTATE;
    int after = e.store ? s_fill(e.store, "after", state, sizeof state, 2000, &full_rc) : 99;
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);

    ck_assert_int_eq(rc, AM2Z_ERESOURCE);
    ck_assert_int_gt(stored, 10);
    ck_assert_int_eq(stats_rc, AM2Z_OK);
    ck_assert_int_eq(st.write_errno, EFBIG);
    ck_assert_uint_le(st.alloc_bytes, (uint64_t)sb.st_size);
    ck_assert_int_eq(del_rc, AM2Z_OK);          /* freed pages are reused in place */
    ck_assert_int_eq(again_rc, AM2Z_OK);
    ck_assert_int_eq(big_rc, AM2Z_ERESOURCE);
    ck_assert_msg(reopen_rc == AM2Z_OK, "a full store did not open: %s", err);
    ck_assert_int_eq(read_rc, AM2Z_OK);
    ck_assert_int_eq(full_rc, AM2Z_ERESOURCE);
    if (!s_piped())
        ck_assert_int_eq(after, 0);
    /* else the writer applied the fill in fewer, larger txns (fewer page
       copies): the reopened file has room for some more before it is full */
    s_env_reopen(&e);
    s_expect_fill(e.store, "f", 1, stored, state, sizeof state);
    s_env_close(&e);
}
END_TEST

/*  A private tmpfs of `size` on dir for this forked case only (a mount
    namespace of its own; root, or an unprivileged user namespace). False
    when this machine does not allow it (main() probes that in a child
    before it runs the case: see S_EXIT_SKIPPED). */
static bool
s_private_tmpfs(const char *dir, const char *size)
{
    if (unshare(CLONE_NEWNS) != 0) {
        uid_t uid = getuid();
        gid_t gid = getgid();
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
            return false;
        char map[64];
        FILE *f = fopen("/proc/self/setgroups", "w");
        if (f) {
            fputs("deny", f);
            fclose(f);
        }
        snprintf(map, sizeof map, "0 %u 1", (unsigned)uid);
        f = fopen("/proc/self/uid_map", "w");
        if (!f || fputs(map, f) < 0 || fclose(f) != 0)
            return false;
        snprintf(map, sizeof map, "0 %u 1", (unsigned)gid);
        f = fopen("/proc/self/gid_map", "w");
        if (!f || fputs(map, f) < 0 || fclose(f) != 0)
            return false;
    }
    char opts[64];
    snprintf(opts, sizeof opts, "size=%s", size);
    return mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0
           && mount("am2z-store-full", dir, "tmpfs", 0, opts) == 0;
}

/*  A full disk (a 2 MiB tmpfs under a 64 MiB map), both durability modes:
    writes fail with a resource error naming ENOSPC before LMDB touches a
    page (with MDB_WRITEMAP that would be SIGBUS), what was committed stays
    readable, and the full store opens again (reads work, writes refused).
    Check case "diskfull": main() runs it only in forked mode where the
    mount is allowed, and otherwise reports it skipped. */
START_TEST(test_store_full_disk_is_a_resource_error_and_the_store_still_opens)
{
    s_env_t e;
    am2z_test_tmpdir("store-disk", e.dir, sizeof e.dir);
    ck_assert_msg(s_private_tmpfs(e.dir, "2m"), "no private tmpfs on %s: %s", e.dir,
                  strerror(errno));
    s_cfg(&e.cfg, e.dir);
    if (_i == 1)
        e.cfg.durability = AM2Z_DURABILITY_PERIODIC;
    e.store = s_open(&e.cfg);
    static uint8_t state[20000];
    int rc;
    int stored = s_fill(e.store, "d", state, sizeof state, 1000, &rc);
    ck_assert_int_eq(rc, AM2Z_ERESOURCE);
    ck_assert_int_gt(stored, 5);
    am2z_store_stats_t st;
    ck_assert_int_eq(am2z_store_stats(e.store, &st), AM2Z_OK);
    ck_assert_int_eq(st.write_errno, ENOSPC);

    /* the full store opens again: it reads, and refuses writes by name.
       Made harder first: the blocks allocated ahead are given back (as in
       a file an older am2z wrote) and a filler takes the disk's last
       blocks, so the open cannot allocate its slack either. */
    uint64_t used = st.used_bytes;
    am2z_store_destroy(&e.store);
    char path[600];
    snprintf(path, sizeof path, "%s/data.mdb", e.dir);
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    struct stat sb;
    ck_assert_int_eq(fstat(fd, &sb), 0);
    ck_assert_int_eq(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)used,
                               sb.st_size - (off_t)used), 0);
    close(fd);
    snprintf(path, sizeof path, "%s/filler", e.dir);
    FILE *filler = fopen(path, "w");
    ck_assert_ptr_nonnull(filler);
    memset(state, 'z', sizeof state);
    while (fwrite(state, 1, sizeof state, filler) == sizeof state && fflush(filler) == 0)
        ;
    fclose(filler);
    char err[512] = "";
    rc = am2z_store_open(&e.cfg, &e.store, err, sizeof err);
    ck_assert_msg(rc == AM2Z_OK, "a full store did not open: %s (%s)", am2z_strerror(rc), err);
    s_expect_fill(e.store, "d", 0, stored, state, sizeof state);
    s_fill(e.store, "e", state, sizeof state, 200, &rc);
    ck_assert_int_eq(rc, AM2Z_ERESOURCE);
    ck_assert_int_eq(am2z_store_stats(e.store, &st), AM2Z_OK);
    ck_assert_int_eq(st.write_errno, ENOSPC);
    am2z_store_destroy(&e.store);
    umount2(e.dir, MNT_DETACH);
    am2z_test_rmtree(e.dir);
}
END_TEST

START_TEST(test_store_enforces_max_sessions)
{
    s_env_t e;
    am2z_test_tmpdir("store-maxsess", e.dir, sizeof e.dir);
    s_cfg(&e.cfg, e.dir);
    e.cfg.max_sessions = 3;
    e.store = s_open(&e.cfg);
    ck_assert_int_eq(PUT(e.store, "a", 0, 1, "x"), AM2Z_OK);
    ck_assert_int_eq(PUT(e.store, "b", 0, 1, "x"), AM2Z_OK);
    ck_assert_int_eq(PUT(e.store, "c", 0, 1, "x"), AM2Z_OK);
    ck_assert_int_eq(PUT(e.store, "d", 0, 1, "x"), AM2Z_ERESOURCE);
    /*  Updating an existing session is not a new one. */
    ck_assert_int_eq(PUT(e.store, "a", 1, 2, "y"), AM2Z_OK);
    ck_assert_int_eq(am2z_store_delete_state(e.store, "b"), AM2Z_OK);
    ck_assert_int_eq(PUT(e.store, "d", 0, 1, "x"), AM2Z_OK);

    /*  Uncommitted creations in the batch count too. */
    ck_assert_int_eq(am2z_store_delete_state(e.store, "d"), AM2Z_OK);
    am2z_store_batch_t *b;
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_state(b, "e", 0, 1, (const uint8_t *)"x", 1, NOW), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_state(b, "f", 0, 1, (const uint8_t *)"x", 1, NOW),
                     AM2Z_ERESOURCE);
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_OK);     /* not poisoned */
    am2z_store_stats_t st;
    ck_assert_int_eq(am2z_store_stats(e.store, &st), AM2Z_OK);
    ck_assert_uint_eq(st.sessions, 3);
    s_env_close(&e);
}
END_TEST

START_TEST(test_store_enforces_max_state_size)
{
    s_env_t e;
    am2z_test_tmpdir("store-maxsize", e.dir, sizeof e.dir);
    s_cfg(&e.cfg, e.dir);
    e.cfg.max_state_size = 1024;
    e.store = s_open(&e.cfg);
    static uint8_t state[1025];
    memset(state, 'z', sizeof state);
    ck_assert_int_eq(am2z_store_put_state(e.store, "s", 0, 1, state, 1024, NOW), AM2Z_OK);
    ck_assert_int_eq(am2z_store_put_state(e.store, "s", 1, 2, state, 1025, NOW), AM2Z_ERESOURCE);
    ck_assert_int_eq(am2z_store_put_state(e.store, "t", 0, 1, state, 1025, NOW), AM2Z_ERESOURCE);
    s_expect_filled(e.store, "s", 1024, 'z');
    am2z_record_t rec;
    ck_assert_int_eq(am2z_store_get_state(e.store, "t", &rec), AM2Z_ENOTFOUND);
    s_env_close(&e);
}
END_TEST

START_TEST(test_store_periodic_durability_flushes_when_due)
{
    s_env_t e;
    am2z_test_tmpdir("store-periodic", e.dir, sizeof e.dir);
    s_cfg(&e.cfg, e.dir);
    e.cfg.durability = AM2Z_DURABILITY_PERIODIC;
    e.cfg.flush_interval_ms = 50;
    e.store = s_open(&e.cfg);

    uint64_t next = 0;
    am2z_store_stats_t st;
    ck_assert_int_eq(am2z_store_flush_due(e.store, am2z_store_now_ms(), &next), AM2Z_OK);
    ck_assert_uint_eq(next, UINT64_MAX);

    uint64_t before = am2z_store_now_ms();
    ck_assert_int_eq(PUT(e.store, "s1", 0, 1, "x"), AM2Z_OK);
    ck_assert_int_eq(PUT(e.store, "s1", 1, 2, "y"), AM2Z_OK);
    uint64_t after = am2z_store_now_ms();
    ck_assert_int_eq(am2z_store_stats(e.store, &st), AM2Z_OK);
    ck_assert_uint_eq(st.unsynced_commits, 2);
    ck_assert_uint_eq(st.syncs, 0);

    /*  Not yet due: nothing synced, and told when to come back. */
    ck_assert_int_eq(am2z_store_flush_due(e.store, before, &next), AM2Z_OK);
    ck_assert_uint_gt(next, 0);
    ck_assert_uint_le(next, 50);
    ck_assert_int_eq(am2z_store_flush_due(e.store, after + 49 - (after - before), NULL), AM2Z_OK);
    ck_assert_int_eq(am2z_store_stats(e.store, &st), AM2Z_OK);
    ck_assert_uint_eq(st.unsynced_commits, 2);
    ck_assert_uint_eq(st.syncs, 0);

    /*  Due: one fsync covers both commits. */
    ck_assert_int_eq(am2z_store_flush_due(e.store, after + 50, &next), AM2Z_OK);
    ck_assert_uint_eq(next, UINT64_MAX);
    ck_assert_int_eq(am2z_store_stats(e.store, &st), AM2Z_OK);
    ck_assert_uint_eq(st.unsynced_commits, 0);
    ck_assert_uint_eq(st.syncs, 1);
    ck_assert_int_eq(am2z_store_flush_due(e.store, after + 500, &next), AM2Z_OK);
    ck_assert_uint_eq(next, UINT64_MAX);

    /*  flush() syncs now, and is a no-op with nothing pending. */
    ck_assert_int_eq(PUT(e.store, "s1", 2, 3, "z"), AM2Z_OK);
    ck_assert_int_eq(am2z_store_flush(e.store), AM2Z_OK);
    ck_assert_int_eq(am2z_store_flush(e.store), AM2Z_OK);
    ck_assert_int_eq(am2z_store_stats(e.store, &st), AM2Z_OK);
    ck_assert_uint_eq(st.syncs, 2);

    /*  An unsynced commit is synced by destroy and found on reopen. */
    ck_assert_int_eq(PUT(e.store, "s1", 3, 4, "w"), AM2Z_OK);
    s_env_reopen(&e);
    s_expect_state(e.store, "s1", 4, "w");
    s_env_close(&e);
}
END_TEST

START_TEST(test_store_sync_durability_has_nothing_pending)
{
    s_env_t e;
    s_env_open(&e, "store-sync");
    ck_assert_int_eq(PUT(e.store, "s1", 0, 1, "x"), AM2Z_OK);
    uint64_t next = 0;
    ck_assert_int_eq(am2z_store_flush_due(e.store, am2z_store_now_ms() + 100000, &next), AM2Z_OK);
    ck_assert_uint_eq(next, UINT64_MAX);
    am2z_store_stats_t st;
    if (s_piped()) {
        /*  The writer thread flushes once when it runs dry; that flush is
            what makes the commit durable, and it is counted. Wait for it. */
        struct pollfd pfd = { am2z_store_event_fd(e.store), POLLIN, 0 };
        while (am2z_store_durable(e.store) < am2z_store_committed(e.store)) {
            ck_assert_int_ge(poll(&pfd, 1, 10000), 1);
            ck_assert_int_eq(am2z_store_poll(e.store), AM2Z_OK);
        }
    }
    ck_assert_int_eq(am2z_store_stats(e.store, &st), AM2Z_OK);
    ck_assert_uint_eq(st.unsynced_commits, 0);
    ck_assert_uint_eq(st.syncs, s_piped() ? 1 : 0);
    s_env_close(&e);
}
END_TEST

START_TEST(test_store_deferred_meta_is_durable_after_next_commit_or_sync)
{
    s_env_t e;
    if (s_piped())
        return;   /* the writer thread replaces deferred meta (test_store_writer_*) */
    s_env_open(&e, "store-defer");
    ck_assert_int_eq(am2z_store_defer_meta(e.store), AM2Z_OK);
    ck_assert_int_eq(am2z_store_defer_meta(e.store), AM2Z_OK);      /* idempotent */
    ck_assert_uint_eq(am2z_store_durable(e.store), am2z_store_committed(e.store));
    uint64_t c0 = am2z_store_committed(e.store);
    /* a commit that writes: committed moves, durable stays behind it */
    ck_assert_int_eq(PUT(e.store, "s1", 0, 1, "x"), AM2Z_OK);
    uint64_t c1 = am2z_store_committed(e.store);
    ck_assert_uint_gt(c1, c0);
    ck_assert_uint_eq(am2z_store_durable(e.store), c0);
    /* the next one's data flush covers the earlier meta page */
    ck_assert_int_eq(PUT(e.store, "s1", 1, 2, "y"), AM2Z_OK);
    uint64_t c2 = am2z_store_committed(e.store);
    ck_assert_uint_gt(c2, c1);
    ck_assert_uint_eq(am2z_store_durable(e.store), c1);
    /* an empty commit writes no meta: nothing moves */
    am2z_store_batch_t *b;
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_OK);
    ck_assert_uint_eq(am2z_store_committed(e.store), c2);
    ck_assert_uint_eq(am2z_store_durable(e.store), c1);
    /* sync makes the last one durable */
    ck_assert_int_eq(am2z_store_sync(e.store), AM2Z_OK);
    ck_assert_uint_eq(am2z_store_durable(e.store), c2);
    ck_assert_int_eq(am2z_store_sync(e.store), AM2Z_OK);          /* nothing to do */
    s_env_reopen(&e);
    s_expect_state(e.store, "s1", 2, "y");
    s_env_close(&e);

    /* periodic mode has no deferred meta (its commits flush later anyway) */
    s_env_open(&e, "store-defer-periodic");
    am2z_store_destroy(&e.store);
    e.cfg.durability = AM2Z_DURABILITY_PERIODIC;
    e.store = s_open(&e.cfg);
    ck_assert_int_eq(am2z_store_defer_meta(e.store), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_store_defer_meta(NULL), AM2Z_EINVAL);
    ck_assert_uint_eq(am2z_store_committed(NULL), 0);
    s_env_close(&e);
}
END_TEST

/*  The writer thread: a model of 64 keys checked after every batch, with
    walks merging the sets still in flight, deletes of keys only those sets
    hold, and overwrites within a batch; then durability and a reopen. */
#define W_KEYS 64

typedef struct {
    char val[W_KEYS][32];         /* "" = absent */
    int seen;                     /* entries the walk saw */
    bool bad;
} s_wmodel_t;

static int
s_wmodel_walk(const void *key, size_t key_size, const void *value, size_t value_size, void *arg)
{
    s_wmodel_t *m = arg;
    int k;
    if (key_size != 4 || sscanf((const char *)key, "k%03d", &k) != 1 || k >= W_KEYS
        || strlen(m->val[k]) != value_size || memcmp(m->val[k], value, value_size) != 0)
        m->bad = true;
    m->seen++;
    return 0;
}

static void
s_wmodel_check(am2z_store_t *store, am2z_store_batch_t *b, s_wmodel_t *m)
{
    int n = 0;
    for (int k = 0; k < W_KEYS; k++)
        n += m->val[k][0] != '\0';
    m->seen = 0;
    m->bad = false;
    int rc = b ? am2z_batch_each(b, AM2Z_DB_DONE, NULL, 0, s_wmodel_walk, m)
               : am2z_store_each(store, AM2Z_DB_DONE, NULL, 0, s_wmodel_walk, m);
    ck_assert_int_eq(rc, AM2Z_OK);
    ck_assert_msg(!m->bad, "a walk returned a value the model does not hold");
    ck_assert_int_eq(m->seen, n);
    for (int k = 0; k < W_KEYS; k += 7) {
        char key[8];
        snprintf(key, sizeof key, "k%03d", k);
        void *v = NULL;
        size_t vs = 0;
        rc = b ? am2z_batch_get_raw(b, AM2Z_DB_DONE, key, 4, &v, &vs)
               : am2z_store_get_raw(store, AM2Z_DB_DONE, key, 4, &v, &vs);
        if (m->val[k][0]) {
            ck_assert_int_eq(rc, AM2Z_OK);
            ck_assert_uint_eq(vs, strlen(m->val[k]));
            ck_assert(memcmp(v, m->val[k], vs) == 0);
        } else {
            ck_assert_int_eq(rc, AM2Z_ENOTFOUND);
        }
        free(v);
    }
}

START_TEST(test_store_writer_reads_through_sets_in_flight)
{
    s_env_t e;
    s_env_open(&e, "store-writer");
    ck_assert_int_eq(am2z_store_pipeline(e.store), AM2Z_OK);
    ck_assert_int_eq(am2z_store_pipeline(e.store), AM2Z_OK);        /* idempotent */
    ck_assert_int_eq(am2z_store_defer_meta(e.store), AM2Z_EINVAL);  /* one or the other */
    ck_assert_int_ge(am2z_store_event_fd(e.store), 0);
    static s_wmodel_t m;
    memset(&m, 0, sizeof m);
    unsigned seed = 7;
    for (int round = 0; round < 300; round++) {
        am2z_store_batch_t *b;
        ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
        for (int i = 0; i < 6; i++) {
            int k = (int)(rand_r(&seed) % W_KEYS);
            char key[8];
            snprintf(key, sizeof key, "k%03d", k);
            if (rand_r(&seed) % 3 == 0) {
                int rc = am2z_batch_del(b, AM2Z_DB_DONE, key, 4);
                ck_assert_int_eq(rc, m.val[k][0] ? AM2Z_OK : AM2Z_ENOTFOUND);
                m.val[k][0] = '\0';
            } else {
                snprintf(m.val[k], sizeof m.val[k], "v%d.%d", round, i);
                ck_assert_int_eq(am2z_batch_put_raw(b, AM2Z_DB_DONE, key, 4, m.val[k],
                                                    strlen(m.val[k])), AM2Z_OK);
            }
        }
        /* a sealed record keeps its first creation time across sets */
        ck_assert_int_eq(am2z_batch_put_record(b, AM2Z_DB_JOBS, "job", 3, (uint64_t)round + 1,
                                               (const uint8_t *)"r", 1, NOW + (uint64_t)round),
                         AM2Z_OK);
        if (round % 10 == 0)
            s_wmodel_check(e.store, b, &m);
        ck_assert_int_eq(am2z_store_commit(&b), AM2Z_OK);
        ck_assert_uint_eq(am2z_store_committed(e.store), (uint64_t)round + 1);
        ck_assert_uint_le(am2z_store_durable(e.store), am2z_store_committed(e.store));
        am2z_record_t rec;
        ck_assert_int_eq(am2z_store_get_record(e.store, AM2Z_DB_JOBS, "job", 3, &rec), AM2Z_OK);
        ck_assert_uint_eq(rec.version, (uint64_t)round + 1);
        ck_assert_uint_eq(rec.created_ms, NOW);
        am2z_record_clear(&rec);
        if (round % 5 == 0)
            s_wmodel_check(e.store, NULL, &m);
    }
    /* the writer reports through its fd until everything is durable */
    struct pollfd pfd = { am2z_store_event_fd(e.store), POLLIN, 0 };
    while (am2z_store_durable(e.store) < am2z_store_committed(e.store)) {
        ck_assert_int_ge(poll(&pfd, 1, 10000), 1);
        ck_assert_int_eq(am2z_store_poll(e.store), AM2Z_OK);
    }
    ck_assert_int_eq(am2z_store_sync(e.store), AM2Z_OK);
    ck_assert_uint_eq(am2z_store_durable(e.store), 300);
    am2z_store_stats_t st;
    ck_assert_int_eq(am2z_store_stats(e.store, &st), AM2Z_OK);
    ck_assert_uint_eq(st.entries[AM2Z_DB_JOBS], 1);
    s_env_reopen(&e);
    s_wmodel_check(e.store, NULL, &m);
    s_env_close(&e);
}
END_TEST

/*  With the writer thread, a batch whose bound could reach past the map
    finishes as a direct txn: a full map is refused at the write that
    fills it, what was committed before stays, and the store goes on. */
START_TEST(test_store_writer_full_map_is_refused_at_the_write)
{
    s_env_t e;
    am2z_test_tmpdir("store-writer-map", e.dir, sizeof e.dir);
    s_cfg(&e.cfg, e.dir);
    e.cfg.map_size = 2u << 20;
    e.store = s_open(&e.cfg);
    ck_assert_int_eq(am2z_store_pipeline(e.store), AM2Z_OK);
    static uint8_t state[20000];
    int rc;
    int stored = s_fill(e.store, "m", state, sizeof state, 1000, &rc);
    ck_assert_int_eq(rc, AM2Z_ERESOURCE);
    ck_assert_int_gt(stored, 10);
    ck_assert_int_eq(am2z_store_poll(e.store), AM2Z_OK);   /* the writer never failed */
    ck_assert_int_eq(am2z_store_delete_state(e.store, "m0000"), AM2Z_OK);
    ck_assert_int_eq(am2z_store_put_state(e.store, "small", 0, 1, state, 100, NOW), AM2Z_OK);
    ck_assert_int_eq(am2z_store_sync(e.store), AM2Z_OK);
    ck_assert_uint_eq(am2z_store_durable(e.store), am2z_store_committed(e.store));
    s_env_reopen(&e);
    s_expect_fill(e.store, "m", 1, stored, state, sizeof state);
    s_env_close(&e);
}
END_TEST

START_TEST(test_store_stats_count_entries)
{
    s_env_t e;
    s_env_open(&e, "store-stats");
    am2z_store_stats_t st;
    ck_assert_int_eq(am2z_store_stats(e.store, &st), AM2Z_OK);
    for (int i = 0; i < AM2Z_DB_COUNT_; i++)
        ck_assert_uint_eq(st.entries[i], 0);
    ck_assert_uint_eq(st.map_size, 64u << 20);
    uint64_t used_empty = st.used_bytes;
    ck_assert_uint_gt(used_empty, 0);

    am2z_store_batch_t *b;
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    char key[16];
    static uint8_t blob[3000];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "k%02d", i);
        ck_assert_int_eq(am2z_batch_put_state(b, key, 0, 1, blob, sizeof blob, NOW), AM2Z_OK);
        if (i < 20)
            ck_assert_int_eq(am2z_batch_put_record(b, AM2Z_DB_JOBS, key, 3, 1, blob, 10, NOW),
                             AM2Z_OK);
        if (i < 5)
            ck_assert_int_eq(am2z_batch_put_raw(b, AM2Z_DB_DONE, key, 3, "", 0), AM2Z_OK);
    }
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_OK);
    ck_assert_int_eq(am2z_store_stats(e.store, &st), AM2Z_OK);
    ck_assert_uint_eq(st.sessions, 50);
    ck_assert_uint_eq(st.entries[AM2Z_DB_SESSIONS], 50);
    ck_assert_uint_eq(st.jobs, 20);
    ck_assert_uint_eq(st.entries[AM2Z_DB_DONE], 5);
    ck_assert_uint_eq(st.entries[AM2Z_DB_RESULTS], 0);
    ck_assert_uint_gt(st.used_bytes, used_empty + 50 * 3000);
    ck_assert_uint_le(st.used_bytes, st.map_size);
    ck_assert_int_eq(am2z_store_stats(e.store, NULL), AM2Z_EINVAL);
    s_env_close(&e);
}
END_TEST

/*  The write paths without a read first: put_record_at takes the
    envelope's created time from the caller (an overwrite does not keep
    the old one), del_any deletes what is there and is fine with what is
    not. Both in the batch's own view, after the commit, and refused for
    the sessions database, whose count needs the lookups. The suite runs
    with and without the writer thread (s_piped). */
START_TEST(test_store_put_at_and_del_any_skip_the_lookup)
{
    s_env_t e;
    s_env_open(&e, "store-blind");
    am2z_store_batch_t *b;
    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_record(b, AM2Z_DB_JOBS, "j1", 2, 1,
                                           (const uint8_t *)"one", 3, NOW), AM2Z_OK);
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_OK);

    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    /* an overwrite with a created time of the caller's */
    ck_assert_int_eq(am2z_batch_put_record_at(b, AM2Z_DB_JOBS, "j1", 2, 2,
                                              (const uint8_t *)"two", 3, NOW - 5, NOW + 10),
                     AM2Z_OK);
    ck_assert_int_eq(am2z_batch_put_record_at(b, AM2Z_DB_RESULTS, "r1", 2, 1,
                                              (const uint8_t *)"res", 3, NOW + 1, NOW + 1),
                     AM2Z_OK);
    am2z_record_t rec;
    ck_assert_int_eq(am2z_batch_get_record(b, AM2Z_DB_JOBS, "j1", 2, &rec), AM2Z_OK);
    ck_assert_uint_eq(rec.version, 2);
    ck_assert_uint_eq(rec.created_ms, NOW - 5);
    ck_assert_uint_eq(rec.updated_ms, NOW + 10);
    am2z_record_clear(&rec);
    ck_assert_int_eq(am2z_batch_put_record_at(b, AM2Z_DB_SESSIONS, "s1", 2, 1,
                                              (const uint8_t *)"x", 1, NOW, NOW), AM2Z_EINVAL);
    /* del_any: a key that is not there, one from the last commit, one
       from this batch */
    ck_assert_int_eq(am2z_batch_put_raw(b, AM2Z_DB_DONE, "d1", 2, "v", 1), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_del_any(b, AM2Z_DB_DONE, "nope", 4), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_del_any(b, AM2Z_DB_RESULTS, "nope", 4), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_del_any(b, AM2Z_DB_DONE, "d1", 2), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_del_any(b, AM2Z_DB_RESULTS, "r1", 2), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_del_any(b, AM2Z_DB_SESSIONS, "s1", 2), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_batch_del_any(b, AM2Z_DB_DONE, NULL, 0), AM2Z_EINVAL);
    void *v = NULL;
    size_t vs = 0;
    ck_assert_int_eq(am2z_batch_get_raw(b, AM2Z_DB_DONE, "d1", 2, &v, &vs), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_batch_get_record(b, AM2Z_DB_RESULTS, "r1", 2, &rec), AM2Z_ENOTFOUND);
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_OK);

    ck_assert_int_eq(am2z_store_begin(e.store, &b), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_del_any(b, AM2Z_DB_JOBS, "j1", 2), AM2Z_OK);
    ck_assert_int_eq(am2z_batch_del_any(b, AM2Z_DB_JOBS, "j1", 2), AM2Z_OK);   /* twice */
    ck_assert_int_eq(am2z_store_commit(&b), AM2Z_OK);
    s_env_reopen(&e);
    am2z_store_stats_t st;
    ck_assert_int_eq(am2z_store_stats(e.store, &st), AM2Z_OK);
    ck_assert_uint_eq(st.entries[AM2Z_DB_JOBS], 0);
    ck_assert_uint_eq(st.entries[AM2Z_DB_RESULTS], 0);
    ck_assert_uint_eq(st.entries[AM2Z_DB_DONE], 0);
    s_env_close(&e);
}
END_TEST

START_TEST(test_store_db_names_and_kinds)
{
    ck_assert_str_eq(am2z_db_name(AM2Z_DB_SESSIONS), "sessions");
    ck_assert_str_eq(am2z_db_name(AM2Z_DB_META), "meta");
    ck_assert_str_eq(am2z_db_name(AM2Z_DB_COUNT_), "unknown");
    ck_assert(am2z_db_sealed(AM2Z_DB_SESSIONS));
    ck_assert(am2z_db_sealed(AM2Z_DB_RUNS));
    ck_assert(!am2z_db_sealed(AM2Z_DB_IDEM));
    ck_assert(!am2z_db_sealed(AM2Z_DB_META));
    am2z_record_clear(NULL);
}
END_TEST

/*  A data dir of an older version has a `bysession` database (the
    broker's result index by session, now kept in memory): the store drops
    it, entries and pages, at the first open, and says how many entries it
    had; everything else in the file is untouched. */
START_TEST(test_store_drops_retired_databases)
{
    char dir[512];
    am2z_test_tmpdir("store-retired", dir, sizeof dir);
    /* the old layout, written with LMDB directly */
    MDB_env *env = NULL;
    MDB_txn *txn = am2z_test_lmdb_begin(dir, &env);
    MDB_dbi old, keep;
    ck_assert_int_eq(mdb_dbi_open(txn, "bysession", MDB_CREATE, &old), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, "done", MDB_CREATE, &keep), 0);
    for (int i = 0; i < 300; i++) {
        char k[32];
        snprintf(k, sizeof k, "s%d", i);
        MDB_val key = { strlen(k), k }, val = { 5, "value" };
        ck_assert_int_eq(mdb_put(txn, old, &key, &val, 0), 0);
        if (i < 7)
            ck_assert_int_eq(mdb_put(txn, keep, &key, &val, 0), 0);
    }
    ck_assert_int_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    am2z_config_t cfg;
    s_cfg(&cfg, dir);
    am2z_store_t *store = s_open(&cfg);
    am2z_store_stats_t st;
    ck_assert_int_eq(am2z_store_stats(store, &st), AM2Z_OK);
    ck_assert_uint_eq(st.retired_entries, 300);
    ck_assert_uint_eq(st.entries[AM2Z_DB_DONE], 7);
    am2z_store_destroy(&store);
    store = s_open(&cfg);                 /* gone: nothing to drop again */
    ck_assert_int_eq(am2z_store_stats(store, &st), AM2Z_OK);
    ck_assert_uint_eq(st.retired_entries, 0);
    ck_assert_uint_eq(st.entries[AM2Z_DB_DONE], 7);
    am2z_store_destroy(&store);
    /* and LMDB's catalogue no longer names it */
    ck_assert_int_eq(mdb_env_create(&env), 0);
    ck_assert_int_eq(mdb_env_set_maxdbs(env, 16), 0);
    ck_assert_int_eq(mdb_env_open(env, dir, MDB_RDONLY, 0644), 0);
    ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, "bysession", 0, &old), MDB_NOTFOUND);
    ck_assert_int_eq(mdb_dbi_open(txn, "sessinfo", 0, &keep), 0);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    am2z_test_rmtree(dir);
}
END_TEST

START_TEST(test_store_open_creates_dirs_and_reports_errors)
{
    char dir[512], path[700];
    am2z_test_tmpdir("store-open", dir, sizeof dir);
    am2z_config_t cfg;

    /*  mkdir -p of a nested, missing directory. */
    snprintf(path, sizeof path, "%s/a/b/c", dir);
    s_cfg(&cfg, path);
    am2z_store_t *store = s_open(&cfg);
    am2z_store_destroy(&store);
    struct stat sb;
    snprintf(path, sizeof path, "%s/a/b/c/data.mdb", dir);
    ck_assert_int_eq(stat(path, &sb), 0);

    /*  A data dir below a regular file cannot be created: EIO naming it. */
    snprintf(path, sizeof path, "%s/file", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    snprintf(path, sizeof path, "%s/file/sub", dir);
    s_cfg(&cfg, path);
    char err[1024] = "";
    store = (am2z_store_t *)&cfg;
    ck_assert_int_eq(am2z_store_open(&cfg, &store, err, sizeof err), AM2Z_EIO);
    ck_assert_ptr_null(store);
    ck_assert_ptr_nonnull(strstr(err, path));

    /*  The data dir itself a regular file. */
    snprintf(path, sizeof path, "%s/file", dir);
    s_cfg(&cfg, path);
    ck_assert_int_eq(am2z_store_open(&cfg, &store, err, sizeof err), AM2Z_EIO);
    ck_assert_ptr_nonnull(strstr(err, path));

    /*  Bad arguments; err may be NULL. */
    s_cfg(&cfg, "");
    ck_assert_int_eq(am2z_store_open(&cfg, &store, NULL, 0), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_store_open(NULL, &store, err, sizeof err), AM2Z_EINVAL);
    s_cfg(&cfg, dir);
    cfg.map_size = 0;
    ck_assert_int_eq(am2z_store_open(&cfg, &store, err, sizeof err), AM2Z_EINVAL);

    am2z_store_destroy(NULL);
    am2z_test_rmtree(dir);
}
END_TEST

/*  The suite; the "diskfull" case only when `diskfull`. */
/*  One broker per data dir: an exclusive store (the broker's) holds
    am2z.lock, a second exclusive open is refused naming the dir and the
    holder's pid, a plain open (a reader beside the broker) still works, and
    the lock goes with the process that held it, however it ended. */
START_TEST(test_store_exclusive_open_locks_the_data_dir)
{
    char dir[512];
    am2z_test_tmpdir("store-lock", dir, sizeof dir);
    am2z_config_t cfg;
    s_cfg(&cfg, dir);
    cfg.exclusive = true;

    /* a child process holds the lock until it is killed */
    int ready[2];
    ck_assert_int_eq(pipe(ready), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        am2z_store_t *held = NULL;
        char cerr[512];
        char ok = am2z_store_open(&cfg, &held, cerr, sizeof cerr) == AM2Z_OK ? 'y' : 'n';
        if (write(ready[1], &ok, 1) != 1)
            _exit(2);
        for (;;)
            pause();
    }
    close(ready[1]);
    char ok = 0;
    ck_assert_int_eq(read(ready[0], &ok, 1), 1);
    close(ready[0]);
    ck_assert_int_eq(ok, 'y');

    am2z_store_t *store = NULL;
    char err[512] = "";
    ck_assert_int_eq(am2z_store_open(&cfg, &store, err, sizeof err), AM2Z_EBUSY);
    ck_assert_ptr_null(store);
    char pid[32];
    snprintf(pid, sizeof pid, "(pid %ld)", (long)child);
    ck_assert_msg(strstr(err, "in use by another broker") && strstr(err, pid) && strstr(err, dir),
                  "unexpected error: %s", err);

    /* a reader beside it takes no lock */
    am2z_config_t plain = cfg;
    plain.exclusive = false;
    store = s_open(&plain);
    am2z_store_destroy(&store);

    /* SIGKILL: the kernel drops the lock with the process */
    ck_assert_int_eq(kill(child, SIGKILL), 0);
    int status = 0;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    store = s_open(&cfg);
    /* now this process holds it: a second exclusive open in the same
       process is refused too (the lock belongs to the open file) */
    am2z_store_t *again = NULL;
    ck_assert_int_eq(am2z_store_open(&cfg, &again, err, sizeof err), AM2Z_EBUSY);
    am2z_store_destroy(&store);
    again = s_open(&cfg);             /* released by destroy */
    am2z_store_destroy(&again);
    am2z_test_rmtree(dir);
}
END_TEST

static Suite *
s_suite(bool diskfull)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_store_creates_state_with_expected_zero);
    tcase_add_test(tc, test_store_exclusive_open_locks_the_data_dir);
    tcase_add_test(tc, test_store_update_keeps_created_time);
    tcase_add_test(tc, test_store_rejects_stale_version);
    tcase_add_test(tc, test_store_create_twice_conflicts);
    tcase_add_test(tc, test_store_rejects_non_increasing_version_and_bad_ids);
    tcase_add_test(tc, test_store_batch_state_pending);
    tcase_add_test(tc, test_store_deletes_state);
    tcase_add_test(tc, test_store_lists_sessions_in_order);
    tcase_add_test(tc, test_store_reopen_finds_everything_committed);
    tcase_add_test(tc, test_store_aborted_batch_writes_nothing);
    tcase_add_test(tc, test_store_one_batch_at_a_time);
    tcase_add_test(tc, test_store_batch_reads_see_own_writes);
    tcase_add_test(tc, test_store_group_commits_many_ops_in_one_batch);
    tcase_add_test(tc, test_store_sealed_record_put_get);
    tcase_add_test(tc, test_store_raw_put_get_each);
    tcase_add_test(tc, test_store_each_callback_may_read_the_store);
    tcase_add_test(tc, test_store_detects_corrupt_envelope_on_disk);
    tcase_add_test(tc, test_store_map_is_writable_only_for_a_periodic_daemon_store);
    tcase_add_loop_test(tc, test_store_map_full_is_a_resource_error, 0, 2);
    tcase_add_test(tc, test_store_file_size_limit_is_a_resource_error_before_any_write);
    tcase_add_test(tc, test_store_enforces_max_sessions);
    tcase_add_test(tc, test_store_enforces_max_state_size);
    tcase_add_test(tc, test_store_periodic_durability_flushes_when_due);
    tcase_add_test(tc, test_store_sync_durability_has_nothing_pending);
    tcase_add_test(tc, test_store_deferred_meta_is_durable_after_next_commit_or_sync);
    tcase_add_test(tc, test_store_writer_reads_through_sets_in_flight);
    tcase_add_test(tc, test_store_writer_full_map_is_refused_at_the_write);
    tcase_add_test(tc, test_store_stats_count_entries);
    tcase_add_test(tc, test_store_put_at_and_del_any_skip_the_lookup);
    tcase_add_test(tc, test_store_db_names_and_kinds);
    tcase_add_test(tc, test_store_open_creates_dirs_and_reports_errors);
    tcase_add_test(tc, test_store_drops_retired_databases);
    suite_add_tcase(s, tc);
    if (diskfull) {
        TCase *full = tcase_create("diskfull");
        tcase_set_tags(full, "diskfull");
        tcase_set_timeout(full, 60);
        tcase_add_loop_test(full,
                            test_store_full_disk_is_a_resource_error_and_the_store_still_opens,
                            0, 2);
        suite_add_tcase(s, full);
    }
    return s;
}

/*  The case "diskfull" (tag "diskfull") mounts a tmpfs in a mount
    namespace of its own process, so it needs forked cases and a machine
    that allows the mount. ctest runs it as an entry of its own
    (store_test_diskfull, CK_RUN_CASE=diskfull) while the main entry
    excludes the tag; where it cannot run, main() leaves it out and exits
    with S_EXIT_SKIPPED, which that entry reports as skipped
    (SKIP_RETURN_CODE). */
#define S_EXIT_SKIPPED 77

/*  NULL when the diskfull case can run here, else why not. Probes the
    mount in a child, so this process's namespaces stay as they are. */
static const char *
s_diskfull_unavailable(void)
{
    const char *fork_mode = getenv("CK_FORK");
    if (fork_mode && strcmp(fork_mode, "no") == 0)
        return "CK_FORK=no (the mount must stay in a forked case)";
    char dir[] = "/tmp/am2z-store-probe-XXXXXX";
    if (!mkdtemp(dir))
        return "mkdtemp failed";
    pid_t pid = fork();
    if (pid == 0)
        _exit(s_private_tmpfs(dir, "1m") ? 0 : 1);
    int status = 0;
    bool ok = pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status)
              && WEXITSTATUS(status) == 0;
    rmdir(dir);
    return ok ? NULL : "no private tmpfs here (needs root or unprivileged user namespaces)";
}

int
main(void)
{
    const char *why = am2z_test_case_selected("diskfull", "diskfull") ? s_diskfull_unavailable() : NULL;
    if (why)
        fprintf(stderr, "store: SKIPPED case diskfull: %s\n", why);
    if (why && am2z_test_only_case("diskfull"))
        return S_EXIT_SKIPPED;
    int rc = am2z_test_run(s_suite(why == NULL));
    return rc == EXIT_SUCCESS && why ? S_EXIT_SKIPPED : rc;
}
