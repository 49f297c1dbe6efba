/*  clock_test.c — Check suite "clock": time sources, ids and name rules. */
#include "am2z_clock.h"
#include "am2z_error.h"
#include "am2z_testutil.h"

#include <string.h>

START_TEST(test_ids_are_unique_hex_and_time_ordered)
{
    char prev[AM2Z_ID_LEN + 1] = "";
    for (int i = 0; i < 1000; i++) {
        char id[AM2Z_ID_LEN + 1];
        ck_assert_int_eq(am2z_id_new(id), AM2Z_OK);
        ck_assert_uint_eq(strlen(id), AM2Z_ID_LEN);
        ck_assert(am2z_job_id_valid(id, strlen(id)));
        ck_assert_str_ne(id, prev);
        /* the time prefix never goes backwards */
        ck_assert_int_ge(strncmp(id, prev, 12), 0);
        memcpy(prev, id, sizeof id);
    }
}
END_TEST

START_TEST(test_clocks_advance)
{
    uint64_t w = am2z_clock_wall_ms();
    ck_assert_uint_gt(w, 1600000000000ull);   /* after 2020 */
    uint64_t a = am2z_clock_mono_us();
    uint64_t b = am2z_clock_mono_us();
    ck_assert_uint_ge(b, a);
}
END_TEST

START_TEST(test_name_and_id_rules)
{
    ck_assert(am2z_name_valid("increment", 9));
    ck_assert(am2z_name_valid("order:validate-v2.1_x", 21));
    ck_assert(!am2z_name_valid("", 0));
    ck_assert(!am2z_name_valid("has space", 9));
    ck_assert(!am2z_name_valid("a/b", 3));
    ck_assert(!am2z_name_valid("nul\0x", 5));
    ck_assert(!am2z_name_valid(NULL, 3));
    char longname[AM2Z_NAME_MAX + 2];
    memset(longname, 'a', sizeof longname);
    ck_assert(am2z_name_valid(longname, AM2Z_NAME_MAX));
    ck_assert(!am2z_name_valid(longname, AM2Z_NAME_MAX + 1));
    ck_assert(am2z_session_id_valid("user@example.com", 16));
    ck_assert(!am2z_session_id_valid("a\nb", 3));
    ck_assert(!am2z_job_id_valid("../etc", 6));
}
END_TEST

/*  Every byte value, against the rule as written: names and job ids are
    ASCII letters, digits and "_.:-"; session ids also "@". */
START_TEST(test_id_charsets_byte_by_byte)
{
    for (int c = 0; c < 256; c++) {
        char one[2] = { (char)c, 'x' };
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        bool name = alnum || (c != 0 && strchr("_.:-", c));
        bool session = name || c == '@';
        ck_assert_msg(am2z_name_valid(one, 2) == name, "name, byte %d", c);
        ck_assert_msg(am2z_job_id_valid(one, 2) == name, "job id, byte %d", c);
        ck_assert_msg(am2z_session_id_valid(one, 2) == session, "session id, byte %d", c);
    }
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("clock");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_ids_are_unique_hex_and_time_ordered);
    tcase_add_test(tc, test_clocks_advance);
    tcase_add_test(tc, test_name_and_id_rules);
    tcase_add_test(tc, test_id_charsets_byte_by_byte);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
