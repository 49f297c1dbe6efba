/*  mpcheck_test.c — Check suite "mpcheck": the structural guard that runs
    before msgpack-c sees untrusted bytes. */
#include "am2z_error.h"
#include "am2z_mpcheck.h"
#include "am2z_testutil.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(bytes, expect) \
    ck_assert_int_eq(am2z_msgpack_check((const uint8_t *)(bytes), sizeof(bytes) - 1, 64), (expect))

START_TEST(test_accepts_well_formed_objects)
{
    CHECK("\xc0", AM2Z_OK);                               /* nil */
    CHECK("\x81\xa1" "k\x92\x01\xa1" "x", AM2Z_OK);             /* {"k": [1, "x"]} */
    CHECK("\x90", AM2Z_OK);                               /* [] */
    CHECK("\xcb\x3f\xf0\0\0\0\0\0\0", AM2Z_OK);           /* 1.0 */
    CHECK("\xc4\x02\x00\x01", AM2Z_OK);                   /* bin 2 */
    CHECK("\xd4\x01\x02", AM2Z_OK);                       /* fixext1 */
    CHECK("\xdc\x00\x02\xc3\xc2", AM2Z_OK);               /* array16 [true,false] */
}
END_TEST

START_TEST(test_refuses_truncated_trailing_and_reserved)
{
    ck_assert_int_eq(am2z_msgpack_check(NULL, 0, 64), AM2Z_EPROTO);
    CHECK("\x82\xa1" "k\x01", AM2Z_EPROTO);                  /* map missing a pair */
    CHECK("\x01\x02", AM2Z_EPROTO);                       /* two objects */
    CHECK("\xc1", AM2Z_EPROTO);                           /* reserved byte */
    CHECK("\xa5" "ab", AM2Z_EPROTO);                         /* str shorter than declared */
    CHECK("\xcb\x00", AM2Z_EPROTO);                       /* float64 cut short */
    CHECK("\xdb\xff\xff\xff\xff", AM2Z_EPROTO);           /* str32 of 4 GiB */
}
END_TEST

START_TEST(test_refuses_huge_declared_counts_without_allocating)
{
    CHECK("\xdd\xff\xff\xff\xff\x01", AM2Z_EPROTO);       /* array32 of 4G */
    CHECK("\xdf\xff\xff\xff\xff\x01\x01", AM2Z_EPROTO);   /* map32 of 4G */
    CHECK("\x9f\x01", AM2Z_EPROTO);                       /* fixarray of 15, one byte */
}
END_TEST

START_TEST(test_depth_is_bounded)
{
    uint8_t deep[200];
    memset(deep, 0x91, sizeof deep);                      /* [[[[...]]]] */
    deep[sizeof deep - 1] = 0x01;
    ck_assert_int_eq(am2z_msgpack_check(deep, sizeof deep, 64), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_msgpack_check(deep + sizeof deep - 11, 11, 64), AM2Z_OK);
    ck_assert_int_eq(am2z_msgpack_check(deep + sizeof deep - 11, 11, 9), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_msgpack_check(deep + sizeof deep - 11, 11, 10), AM2Z_OK);
}
END_TEST

/*  Whatever the guard accepts, msgpack-c must decode completely, and random
    bytes must never crash it. */
START_TEST(test_random_bytes_agree_with_msgpack_c)
{
    uint64_t seed = 42;
    uint8_t buf[64];
    int accepted = 0;
    for (int i = 0; i < 200000; i++) {
        size_t n = 1 + (size_t)(i % (int)sizeof buf);
        am2z_test_random_bytes(&seed, buf, n);
        if (am2z_msgpack_check(buf, n, 64) != AM2Z_OK)
            continue;
        accepted++;
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t off = 0;
        msgpack_unpack_return rc = msgpack_unpack_next(&up, (const char *)buf, n, &off);
        ck_assert_int_eq(rc, MSGPACK_UNPACK_SUCCESS);
        ck_assert_uint_eq(off, n);
        msgpack_unpacked_destroy(&up);
    }
    ck_assert_int_gt(accepted, 0);
}
END_TEST

/*  Everything msgpack-c packs, the guard accepts. */
START_TEST(test_accepts_what_msgpack_c_packs)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "big", 3);
    msgpack_pack_array(&pk, 70000);
    for (int i = 0; i < 70000; i++)
        msgpack_pack_int64(&pk, (int64_t)i * -12345);
    msgpack_pack_str_with_body(&pk, "f", 1);
    msgpack_pack_float(&pk, 1.5f);
    msgpack_pack_str_with_body(&pk, "ext", 3);
    msgpack_pack_ext_with_body(&pk, "abcdefghijklmnopq", 17, 7);
    ck_assert_int_eq(am2z_msgpack_check((uint8_t *)sb.data, sb.size, 64), AM2Z_OK);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("mpcheck");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_accepts_well_formed_objects);
    tcase_add_test(tc, test_refuses_truncated_trailing_and_reserved);
    tcase_add_test(tc, test_refuses_huge_declared_counts_without_allocating);
    tcase_add_test(tc, test_depth_is_bounded);
    tcase_add_test(tc, test_random_bytes_agree_with_msgpack_c);
    tcase_add_test(tc, test_accepts_what_msgpack_c_packs);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
