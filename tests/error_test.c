/*  error_test.c — Check suite "error": return codes and the AM2Z taxonomy. */
#include "am2z_error.h"
#include "am2z_testutil.h"

#include <msgpack.h>
#include <string.h>

/*  Looks a string value up in a msgpack details map; NULL if absent. */
static char *
s_detail_str(const am2z_error_t *e, const char *key, char *buf, size_t size)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    char *found = NULL;
    if (msgpack_unpack_next(&up, (const char *)e->details, e->details_size, NULL)
        == MSGPACK_UNPACK_SUCCESS && up.data.type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < up.data.via.map.size; i++) {
            msgpack_object_kv *kv = &up.data.via.map.ptr[i];
            if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(key)
                && memcmp(kv->key.via.str.ptr, key, strlen(key)) == 0) {
                if (kv->val.type == MSGPACK_OBJECT_STR && kv->val.via.str.size < size) {
                    memcpy(buf, kv->val.via.str.ptr, kv->val.via.str.size);
                    buf[kv->val.via.str.size] = '\0';
                    found = buf;
                } else if (kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                    snprintf(buf, size, "%llu", (unsigned long long)kv->val.via.u64);
                    found = buf;
                } else if (kv->val.type == MSGPACK_OBJECT_ARRAY) {
                    snprintf(buf, size, "array:%u", kv->val.via.array.size);
                    found = buf;
                }
            }
        }
    }
    msgpack_unpacked_destroy(&up);
    return found;
}

START_TEST(test_strerror_names_every_code)
{
    for (int code = 0; code >= -AM2Z_ERR_LAST; code--) {
        const char *s = am2z_strerror(code);
        ck_assert_ptr_nonnull(s);
        ck_assert_str_ne(s, "unknown am2z error");
    }
    ck_assert_str_eq(am2z_strerror(-AM2Z_ERR_LAST - 1), "unknown am2z error");
    ck_assert_str_eq(am2z_strerror(5), "unknown am2z error");
}
END_TEST

/*  A message longer than the wire carries is cut to AM2Z_ERROR_MESSAGE_MAX
    bytes, ending in "..." and never inside a UTF-8 sequence, so the error
    can always be sent (a RESULT that cannot be encoded is never sent). */
START_TEST(test_long_messages_are_cut_to_what_the_wire_carries)
{
    char *big = malloc(10000);
    ck_assert_ptr_nonnull(big);
    memset(big, 'x', 9999);
    big[9999] = '\0';
    am2z_error_t *e = am2z_error_new(AM2Z_CAT_EXECUTION, "BIG", "%s", big);
    ck_assert_ptr_nonnull(e);
    ck_assert_uint_eq(strlen(e->message), AM2Z_ERROR_MESSAGE_MAX);
    ck_assert_str_eq(e->message + AM2Z_ERROR_MESSAGE_MAX - 3, "...");
    am2z_error_destroy(&e);
    /* "é" (2 bytes) everywhere: the cut lands between two of them */
    for (size_t i = 0; i + 1 < 9999; i += 2) {
        big[i] = (char)0xc3;
        big[i + 1] = (char)0xa9;
    }
    big[9998] = '\0';
    e = am2z_error_new(AM2Z_CAT_EXECUTION, "BIG", "%s", big);
    size_t n = strlen(e->message);
    ck_assert_uint_le(n, AM2Z_ERROR_MESSAGE_MAX);
    ck_assert_str_eq(e->message + n - 3, "...");
    ck_assert_uint_eq((n - 3) % 2, 0);                    /* whole characters only */
    am2z_error_destroy(&e);
    /* a short one is kept as it is */
    e = am2z_error_new(AM2Z_CAT_EXECUTION, "SMALL", "fine");
    ck_assert_str_eq(e->message, "fine");
    am2z_error_destroy(&e);
    free(big);
}
END_TEST

START_TEST(test_category_defaults_follow_am2z)
{
    ck_assert(!am2z_category_retryable(AM2Z_CAT_VALIDATION));
    ck_assert(!am2z_category_retryable(AM2Z_CAT_CONFIGURATION));
    ck_assert(!am2z_category_retryable(AM2Z_CAT_BUSINESS));
    ck_assert(!am2z_category_retryable(AM2Z_CAT_NOT_FOUND));
    ck_assert(!am2z_category_retryable(AM2Z_CAT_INTEGRITY));
    ck_assert(am2z_category_retryable(AM2Z_CAT_EXECUTION));
    ck_assert(am2z_category_retryable(AM2Z_CAT_TIMEOUT));
    ck_assert(am2z_category_retryable(AM2Z_CAT_NETWORK));
    ck_assert(am2z_category_retryable(AM2Z_CAT_RESOURCE));
    ck_assert_int_eq(am2z_category_severity(AM2Z_CAT_CONFIGURATION), AM2Z_SEV_CRITICAL);
}
END_TEST

START_TEST(test_names_round_trip)
{
    for (int c = 0; c < AM2Z_CAT_COUNT_; c++) {
        am2z_category_t back;
        ck_assert_int_eq(am2z_category_parse(am2z_category_name(c), &back), AM2Z_OK);
        ck_assert_int_eq(back, c);
    }
    for (int s = 0; s < AM2Z_SEV_COUNT_; s++) {
        am2z_severity_t back;
        ck_assert_int_eq(am2z_severity_parse(am2z_severity_name(s), &back), AM2Z_OK);
        ck_assert_int_eq(back, s);
    }
    for (int k = 0; k < AM2Z_KIND_COUNT_; k++) {
        am2z_kind_t back;
        ck_assert_int_eq(am2z_kind_parse(am2z_kind_name(k), &back), AM2Z_OK);
        ck_assert_int_eq(back, k);
    }
    am2z_category_t c;
    ck_assert_int_eq(am2z_category_parse("nonsense", &c), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_category_parse(NULL, &c), AM2Z_EINVAL);
    ck_assert_str_eq(am2z_category_name(99), "unknown");
}
END_TEST

START_TEST(test_validation_error_carries_field_value_reason)
{
    am2z_error_t *e = am2z_error_validation("email", "not-an-email", "missing @");
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->kind, AM2Z_KIND_VALIDATION);
    ck_assert_int_eq(e->category, AM2Z_CAT_VALIDATION);
    ck_assert(!e->retryable);
    ck_assert_str_eq(e->code, "VALIDATION_ERROR");
    ck_assert_ptr_nonnull(strstr(e->message, "email"));
    char buf[64];
    ck_assert_str_eq(s_detail_str(e, "field", buf, sizeof buf), "email");
    ck_assert_str_eq(s_detail_str(e, "value", buf, sizeof buf), "not-an-email");
    ck_assert_str_eq(s_detail_str(e, "reason", buf, sizeof buf), "missing @");
    ck_assert_uint_gt(e->timestamp_ms, 0);
    am2z_error_destroy(&e);
    ck_assert_ptr_null(e);
    am2z_error_destroy(&e);   /* idempotent */
}
END_TEST

START_TEST(test_processor_not_found_lists_available)
{
    const char *avail[] = { "increment", "append" };
    am2z_error_t *e = am2z_error_processor_not_found("nope", avail, 2);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->kind, AM2Z_KIND_PROCESSOR_NOT_FOUND);
    ck_assert_int_eq(e->category, AM2Z_CAT_NOT_FOUND);
    ck_assert(!e->retryable);
    ck_assert_ptr_nonnull(strstr(e->message, "increment, append"));
    char buf[64];
    ck_assert_str_eq(s_detail_str(e, "processorName", buf, sizeof buf), "nope");
    ck_assert_str_eq(s_detail_str(e, "availableProcessors", buf, sizeof buf), "array:2");
    am2z_error_destroy(&e);
    e = am2z_error_processor_not_found("nope", NULL, 0);
    ck_assert_ptr_nonnull(strstr(e->message, "(none)"));
    am2z_error_destroy(&e);
}
END_TEST

START_TEST(test_every_kind_is_constructible)
{
    am2z_error_t *e[] = {
        am2z_error_execution("p", "x1", "boom"),
        am2z_error_timeout("p", 250),
        am2z_error_resource("queue", 10, 11),
        am2z_error_network("tcp://127.0.0.1:1", "refused"),
        am2z_error_configuration("map-size", "too small"),
        am2z_error_business("OUT_OF_STOCK", "no stock", NULL, 0),
        am2z_error_call_depth(11, 10, "recurse"),
        am2z_error_new(AM2Z_CAT_INTEGRITY, "HASH", "sha mismatch in %s", "s1"),
    };
    am2z_kind_t kinds[] = { AM2Z_KIND_PROCESSOR_EXECUTION, AM2Z_KIND_TIMEOUT,
                            AM2Z_KIND_RESOURCE, AM2Z_KIND_NETWORK,
                            AM2Z_KIND_CONFIGURATION, AM2Z_KIND_BUSINESS,
                            AM2Z_KIND_CALL_DEPTH_EXCEEDED, AM2Z_KIND_GENERIC };
    for (size_t i = 0; i < sizeof e / sizeof e[0]; i++) {
        ck_assert_ptr_nonnull(e[i]);
        ck_assert_int_eq(e[i]->kind, kinds[i]);
        ck_assert_ptr_nonnull(e[i]->message);
    }
    ck_assert_str_eq(e[1]->message, "p timed out after 250 ms");
    ck_assert(e[1]->retryable);
    ck_assert(!e[5]->retryable);
    ck_assert_str_eq(e[5]->code, "OUT_OF_STOCK");
    ck_assert(!e[6]->retryable);
    ck_assert_str_eq(e[7]->message, "sha mismatch in s1");
    ck_assert_int_eq(e[7]->severity, AM2Z_SEV_CRITICAL);
    for (size_t i = 0; i < sizeof e / sizeof e[0]; i++)
        am2z_error_destroy(&e[i]);
}
END_TEST

START_TEST(test_business_details_must_be_a_map)
{
    const uint8_t map[] = { 0x81, 0xa1, 'k', 0x01 };       /* {"k": 1} */
    const uint8_t notmap[] = { 0x92, 0x01, 0x02 };          /* [1, 2] */
    const uint8_t truncated[] = { 0x82, 0xa1, 'k' };
    am2z_error_t *e = am2z_error_business("C", "m", map, sizeof map);
    ck_assert_ptr_nonnull(e);
    ck_assert_uint_eq(e->details_size, sizeof map);
    am2z_error_t *copy = am2z_error_dup(e);
    ck_assert_ptr_nonnull(copy);
    ck_assert_mem_eq(copy->details, map, sizeof map);
    ck_assert_str_eq(copy->code, "C");
    am2z_error_destroy(&copy);
    am2z_error_destroy(&e);
    ck_assert_ptr_null(am2z_error_business("C", "m", notmap, sizeof notmap));
    ck_assert_ptr_null(am2z_error_business("C", "m", truncated, sizeof truncated));
}
END_TEST

START_TEST(test_set_retryable_overrides_default)
{
    am2z_error_t *e = am2z_error_execution("p", NULL, NULL);
    ck_assert(e->retryable);
    am2z_error_set_retryable(e, false);
    ck_assert(!e->retryable);
    am2z_error_destroy(&e);
    ck_assert_ptr_null(am2z_error_dup(NULL));
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("error");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_strerror_names_every_code);
    tcase_add_test(tc, test_long_messages_are_cut_to_what_the_wire_carries);
    tcase_add_test(tc, test_category_defaults_follow_am2z);
    tcase_add_test(tc, test_names_round_trip);
    tcase_add_test(tc, test_validation_error_carries_field_value_reason);
    tcase_add_test(tc, test_processor_not_found_lists_available);
    tcase_add_test(tc, test_every_kind_is_constructible);
    tcase_add_test(tc, test_business_details_must_be_a_map);
    tcase_add_test(tc, test_set_retryable_overrides_default);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
