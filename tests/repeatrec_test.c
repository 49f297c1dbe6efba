/*  repeatrec_test.c — Check suite "repeatrec": the broker's records of
    repeatable jobs and idempotency keys and the progress peek
    (broker/am2z_repeatrec.h): round trips and garbage input. */
#include "am2z_jobrec.h"
#include "am2z_repeatrec.h"
#include "am2z_error.h"
#include "am2z_testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_repeatrec_round_trips)
{
    static const uint8_t state[] = { 0x81, 0xa1, 'a', 0x01 };
    am2z_repeatrec_t in = {
        .proc = "increment", .session = "s-1", .state = (uint8_t *)state,
        .state_size = sizeof state, .prio = -7, .timeout_ms = 5000, .every_ms = 60000,
        .limit = 12, .runs = 3, .next_ms = 1763802325000ull, .created_ms = 1763802000000ull,
    };
    snprintf(in.last, sizeof in.last, "0192f3a4b5c6d7e8f90a1b2c3d4e5f60");
    uint8_t *data = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_repeatrec_encode(&in, &data, &size), AM2Z_OK);
    am2z_repeatrec_t out;
    ck_assert_int_eq(am2z_repeatrec_decode(data, size, &out), AM2Z_OK);
    ck_assert_str_eq(out.proc, "increment");
    ck_assert_str_eq(out.session, "s-1");
    ck_assert_uint_eq(out.state_size, sizeof state);
    ck_assert_mem_eq(out.state, state, sizeof state);
    ck_assert_int_eq(out.prio, -7);
    ck_assert_uint_eq(out.timeout_ms, 5000);
    ck_assert_uint_eq(out.every_ms, 60000);
    ck_assert_uint_eq(out.limit, 12);
    ck_assert_uint_eq(out.runs, 3);
    ck_assert_uint_eq(out.next_ms, 1763802325000ull);
    ck_assert_uint_eq(out.created_ms, 1763802000000ull);
    ck_assert_str_eq(out.last, in.last);
    am2z_repeatrec_clear(&out);
    free(data);

    /* no state, no last job */
    in.state = NULL;
    in.state_size = 0;
    in.last[0] = '\0';
    ck_assert_int_eq(am2z_repeatrec_encode(&in, &data, &size), AM2Z_OK);
    ck_assert_int_eq(am2z_repeatrec_decode(data, size, &out), AM2Z_OK);
    ck_assert_ptr_null(out.state);
    ck_assert_str_eq(out.last, "");
    am2z_repeatrec_clear(&out);
    free(data);
}
END_TEST

START_TEST(test_idemrec_round_trips)
{
    am2z_idemrec_t in = { .at_ms = 42, .repeat = true };
    snprintf(in.id, sizeof in.id, "job-1");
    snprintf(in.proc, sizeof in.proc, "append");
    snprintf(in.session, sizeof in.session, "user@42");
    uint8_t *data = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_idemrec_encode(&in, &data, &size), AM2Z_OK);
    am2z_idemrec_t out;
    ck_assert_int_eq(am2z_idemrec_decode(data, size, &out), AM2Z_OK);
    ck_assert_str_eq(out.id, "job-1");
    ck_assert_str_eq(out.proc, "append");
    ck_assert_str_eq(out.session, "user@42");
    ck_assert_uint_eq(out.at_ms, 42);
    ck_assert(out.repeat);
    free(data);
}
END_TEST

/*  Writes one map {key: value} where value is given as raw msgpack. */
static void
s_one(const char *key, const uint8_t *raw, size_t raw_size, uint8_t **data, size_t *size)
{
    am2z_bw_t *w = am2z_bw_new();
    am2z_bw_map(w, 1);
    am2z_bw_str(w, key);
    am2z_bw_raw(w, raw, raw_size);
    ck_assert_int_eq(am2z_bw_take(w, data, size), AM2Z_OK);
    am2z_bw_destroy(&w);
}

START_TEST(test_records_refuse_garbage)
{
    am2z_repeatrec_t rec;
    am2z_idemrec_t idem;
    uint64_t n = 0;
    static const uint8_t not_map[] = { 0x93, 0x01, 0x02, 0x03 };
    static const uint8_t truncated[] = { 0x85, 0xa4, 'p', 'r' };
    ck_assert_int_eq(am2z_repeatrec_decode(NULL, 0, &rec), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_repeatrec_decode(not_map, sizeof not_map, &rec), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_repeatrec_decode(truncated, sizeof truncated, &rec), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_idemrec_decode(not_map, sizeof not_map, &idem), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_idemrec_decode(truncated, sizeof truncated, &idem), AM2Z_EPROTO);
    ck_assert(!am2z_progress_peek(not_map, sizeof not_map, &n));
    ck_assert(!am2z_progress_peek(truncated, sizeof truncated, &n));

    /* a schedule without every, or with a bad processor name */
    am2z_repeatrec_t in = { .proc = "increment", .session = "s", .every_ms = 0 };
    uint8_t *data = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_repeatrec_encode(&in, &data, &size), AM2Z_OK);
    ck_assert_int_eq(am2z_repeatrec_decode(data, size, &rec), AM2Z_EPROTO);
    free(data);
    in.every_ms = 10;
    in.proc = "bad name!";
    ck_assert_int_eq(am2z_repeatrec_encode(&in, &data, &size), AM2Z_OK);
    ck_assert_int_eq(am2z_repeatrec_decode(data, size, &rec), AM2Z_EPROTO);
    free(data);

    /* progress: only {progress: uint} */
    static const uint8_t seven[] = { 0x07 };
    static const uint8_t minus[] = { 0xff };
    static const uint8_t text[] = { 0xa1, 'x' };
    s_one("progress", seven, 1, &data, &size);
    ck_assert(am2z_progress_peek(data, size, &n));
    ck_assert_uint_eq(n, 7);
    free(data);
    s_one("progress", minus, 1, &data, &size);
    ck_assert(!am2z_progress_peek(data, size, &n));
    free(data);
    s_one("progress", text, sizeof text, &data, &size);
    ck_assert(!am2z_progress_peek(data, size, &n));
    free(data);
    s_one("other", seven, 1, &data, &size);
    ck_assert(!am2z_progress_peek(data, size, &n));
    free(data);

    /* random bytes never crash a decoder */
    uint64_t seed = 6;
    uint8_t buf[64];
    for (int i = 0; i < 2000; i++) {
        size_t len = (size_t)(i % 64) + 1;
        am2z_test_random_bytes(&seed, buf, len);
        buf[0] = (uint8_t)(0x80 | (buf[0] & 0x0f));      /* mostly maps */
        if (am2z_repeatrec_decode(buf, len, &rec) == AM2Z_OK)
            am2z_repeatrec_clear(&rec);
        am2z_idemrec_decode(buf, len, &idem);
        am2z_progress_peek(buf, len, &n);
    }
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("repeatrec");
    TCase *tc = tcase_create("records");
    tcase_add_test(tc, test_repeatrec_round_trips);
    tcase_add_test(tc, test_idemrec_round_trips);
    tcase_add_test(tc, test_records_refuse_garbage);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
