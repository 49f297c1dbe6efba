/*  json_test.c — Check suite "json": msgpack <-> JSON conversion. */
#include "am2z_error.h"
#include "am2z_json.h"
#include "am2z_testutil.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/*  JSON text -> msgpack -> JSON text (compact, keys in input order). */
static char *
s_round_trip(const char *text)
{
    uint8_t *mp = NULL;
    size_t size = 0;
    char err[256];
    ck_assert_int_eq(am2z_json_parse_to_msgpack(text, &mp, &size, err, sizeof err), AM2Z_OK);
    char *out = NULL;
    ck_assert_int_eq(am2z_json_dumps_msgpack(mp, size, JSON_COMPACT, &out), AM2Z_OK);
    free(mp);
    return out;
}

START_TEST(test_json_scalars_round_trip)
{
    const char *cases[] = {
        "null", "true", "false", "0", "-1", "42", "9223372036854775807",
        "-9223372036854775808", "1.5", "-0.25", "\"\"", "\"h\xc3\xa9llo\"",
        "[]", "{}",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = s_round_trip(cases[i]);
        ck_assert_msg(strcmp(out, cases[i]) == 0, "%s became %s", cases[i], out);
        free(out);
    }
}
END_TEST

START_TEST(test_json_nested_round_trip)
{
    const char *text = "{\"a\":{\"b\":[1,2,{\"c\":null}],\"d\":\"x\"},\"e\":[[],[true,false]],"
                       "\"f\":3.25,\"g\":-7}";
    char *out = s_round_trip(text);
    ck_assert_str_eq(out, text);
    free(out);
}
END_TEST

START_TEST(test_json_integers_stay_integers_reals_become_float64)
{
    uint8_t *mp = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_json_parse_to_msgpack("[5, 5.0, 300]", &mp, &size, NULL, 0), AM2Z_OK);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    ck_assert_int_eq(msgpack_unpack_next(&up, (const char *)mp, size, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    ck_assert_int_eq(up.data.type, MSGPACK_OBJECT_ARRAY);
    ck_assert_int_eq(up.data.via.array.ptr[0].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    ck_assert_int_eq(up.data.via.array.ptr[1].type, MSGPACK_OBJECT_FLOAT64);
    ck_assert_int_eq(up.data.via.array.ptr[2].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    ck_assert_uint_eq(up.data.via.array.ptr[2].via.u64, 300);
    msgpack_unpacked_destroy(&up);
    /* float64: 0xcb + 8 bytes for the 5.0 */
    ck_assert_ptr_nonnull(memchr(mp, 0xcb, size));
    free(mp);
}
END_TEST

START_TEST(test_json_bin_ext_and_odd_keys)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_str_with_body(&pk, "bin", 3);
    msgpack_pack_bin_with_body(&pk, "\x00\x01\xff", 3);
    msgpack_pack_str_with_body(&pk, "ext", 3);
    msgpack_pack_ext_with_body(&pk, "ab", 2, 5);
    msgpack_pack_int(&pk, 7);                  /* integer key */
    msgpack_pack_str_with_body(&pk, "seven", 5);
    msgpack_pack_str_with_body(&pk, "f32", 3);
    msgpack_pack_float(&pk, 0.5f);

    char *text = NULL;
    ck_assert_int_eq(am2z_json_dumps_msgpack((uint8_t *)sb.data, sb.size, JSON_COMPACT, &text),
                     AM2Z_OK);
    ck_assert_str_eq(text, "{\"bin\":{\"$bin\":\"AAH/\"},\"ext\":{\"$ext\":5,\"data\":\"YWI=\"},"
                           "\"7\":\"seven\",\"f32\":0.5}");

    /* bin and ext come back as the same bytes */
    uint8_t *mp = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_json_parse_to_msgpack(text, &mp, &size, NULL, 0), AM2Z_OK);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    ck_assert_int_eq(msgpack_unpack_next(&up, (const char *)mp, size, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    msgpack_object_kv *kv = up.data.via.map.ptr;
    ck_assert_int_eq(kv[0].val.type, MSGPACK_OBJECT_BIN);
    ck_assert_uint_eq(kv[0].val.via.bin.size, 3);
    ck_assert_int_eq(memcmp(kv[0].val.via.bin.ptr, "\x00\x01\xff", 3), 0);
    ck_assert_int_eq(kv[1].val.type, MSGPACK_OBJECT_EXT);
    ck_assert_int_eq(kv[1].val.via.ext.type, 5);
    ck_assert_uint_eq(kv[1].val.via.ext.size, 2);
    ck_assert_int_eq(kv[2].key.type, MSGPACK_OBJECT_STR);
    msgpack_unpacked_destroy(&up);
    free(mp);
    free(text);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(test_json_invalid_utf8_string_becomes_bin)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_str_with_body(&pk, "\xc3\x28", 2);
    char *text = NULL;
    ck_assert_int_eq(am2z_json_dumps_msgpack((uint8_t *)sb.data, sb.size, JSON_COMPACT, &text),
                     AM2Z_OK);
    ck_assert_str_eq(text, "{\"$bin\":\"wyg=\"}");
    free(text);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(test_json_garbage_msgpack_rejected)
{
    json_t *j = NULL;
    const uint8_t truncated[] = { 0x82, 0xa1, 'a' };
    ck_assert_int_eq(am2z_json_from_msgpack(truncated, sizeof truncated, &j), AM2Z_EPROTO);
    const uint8_t trailing[] = { 0x01, 0x02 };
    ck_assert_int_eq(am2z_json_from_msgpack(trailing, sizeof trailing, &j), AM2Z_EPROTO);
    const uint8_t reserved[] = { 0xc1 };
    ck_assert_int_eq(am2z_json_from_msgpack(reserved, sizeof reserved, &j), AM2Z_EPROTO);
    const uint8_t huge[] = { 0xdd, 0xff, 0xff, 0xff, 0xff };
    ck_assert_int_eq(am2z_json_from_msgpack(huge, sizeof huge, &j), AM2Z_EPROTO);
    ck_assert_int_eq(am2z_json_from_msgpack(trailing, 0, &j), AM2Z_EPROTO);
    ck_assert_ptr_null(j);

    /* random bytes: never a crash; whatever decodes must re-encode */
    uint64_t seed = 42;
    uint8_t buf[64];
    for (int i = 0; i < 2000; i++) {
        size_t n = 1 + (size_t)(i % 63);
        am2z_test_random_bytes(&seed, buf, n);
        json_t *out = NULL;
        int rc = am2z_json_from_msgpack(buf, n, &out);
        ck_assert(rc == AM2Z_OK || rc == AM2Z_EPROTO);
        if (rc == AM2Z_OK) {
            uint8_t *mp = NULL;
            size_t size = 0;
            ck_assert_int_eq(am2z_json_to_msgpack(out, &mp, &size), AM2Z_OK);
            free(mp);
            json_decref(out);
        }
    }
}
END_TEST

START_TEST(test_json_too_deep_rejected)
{
    /* msgpack: 100 nested arrays */
    uint8_t deep[101];
    memset(deep, 0x91, 100);
    deep[100] = 0xc0;
    json_t *j = NULL;
    ck_assert_int_eq(am2z_json_from_msgpack(deep, sizeof deep, &j), AM2Z_EPROTO);
    /* JSON: 100 nested arrays */
    char text[256];
    memset(text, '[', 100);
    memset(text + 100, ']', 100);
    text[200] = '\0';
    uint8_t *mp = NULL;
    size_t size = 0;
    char err[256] = "";
    ck_assert_int_eq(am2z_json_parse_to_msgpack(text, &mp, &size, err, sizeof err), AM2Z_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "deeper"));
}
END_TEST

START_TEST(test_json_invalid_json_error_names_line_and_column)
{
    uint8_t *mp = NULL;
    size_t size = 0;
    char err[256] = "";
    ck_assert_int_eq(am2z_json_parse_to_msgpack("{\n  \"a\": 1,\n  \"b\": }", &mp, &size,
                                                err, sizeof err), AM2Z_EINVAL);
    ck_assert_ptr_null(mp);
    ck_assert_msg(strstr(err, "line 3") != NULL, "err: %s", err);
    ck_assert_msg(strstr(err, "column") != NULL, "err: %s", err);
    ck_assert_int_eq(am2z_json_parse_to_msgpack("{\"a\":1} x", &mp, &size, err, sizeof err),
                     AM2Z_EINVAL);
    ck_assert_int_eq(am2z_json_parse_to_msgpack("", &mp, &size, err, sizeof err), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_json_parse_to_msgpack("{\"$bin\":\"%%%\"}", &mp, &size, err,
                                                sizeof err), AM2Z_EINVAL);
}
END_TEST

START_TEST(test_base64_round_trip_and_rejects_garbage)
{
    const char *plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
    const char *coded[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
    for (size_t i = 0; i < 7; i++) {
        char *text = NULL;
        ck_assert_int_eq(am2z_base64_encode((const uint8_t *)plain[i], strlen(plain[i]), &text),
                         AM2Z_OK);
        ck_assert_str_eq(text, coded[i]);
        uint8_t *bytes = NULL;
        size_t size = 0;
        ck_assert_int_eq(am2z_base64_decode(text, strlen(text), &bytes, &size), AM2Z_OK);
        ck_assert_uint_eq(size, strlen(plain[i]));
        ck_assert_int_eq(memcmp(bytes, plain[i], size), 0);
        free(bytes);
        free(text);
    }
    uint8_t *bytes = NULL;
    size_t size = 0;
    ck_assert_int_eq(am2z_base64_decode("Zg=", 3, &bytes, &size), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_base64_decode("Z===", 4, &bytes, &size), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_base64_decode("Zh==", 4, &bytes, &size), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_base64_decode("Zm=v", 4, &bytes, &size), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_base64_decode("Zm9*", 4, &bytes, &size), AM2Z_EINVAL);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_json_scalars_round_trip);
    tcase_add_test(tc, test_json_nested_round_trip);
    tcase_add_test(tc, test_json_integers_stay_integers_reals_become_float64);
    tcase_add_test(tc, test_json_bin_ext_and_odd_keys);
    tcase_add_test(tc, test_json_invalid_utf8_string_becomes_bin);
    tcase_add_test(tc, test_json_garbage_msgpack_rejected);
    tcase_add_test(tc, test_json_too_deep_rejected);
    tcase_add_test(tc, test_json_invalid_json_error_names_line_and_column);
    tcase_add_test(tc, test_base64_round_trip_and_rejects_garbage);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
