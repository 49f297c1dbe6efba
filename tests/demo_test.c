/*  demo_test.c — Check suite "demo": am2z-demo (README command 1's program)
    runs the order example to completion on the embedded runtime. */
#include "am2z_testproc.h"
#include "am2z_testutil.h"

#include <stdio.h>
#include <string.h>

START_TEST(test_demo_runs_order_example_to_completion)
{
    char dir[512], data[600];
    am2z_test_tmpdir("demo", dir, sizeof dir);
    snprintf(data, sizeof data, "%s/data", dir);
    static char out[65536];
    char *argv[] = { AM2Z_DEMO_BIN, "--data-dir", data, NULL };
    int rc = am2z_testproc_run(argv, out, sizeof out, 60000);
    ck_assert_msg(rc == 0, "am2z-demo exited %d; output:\n%s", rc, out);
    const char *steps[] = { "validate-order", "check-inventory", "process-payment",
                            "create-shipment", "send-confirmation", "update-inventory" };
    const char *at = out;
    for (size_t i = 0; i < 6; i++) {
        at = strstr(at, steps[i]);
        ck_assert_msg(at != NULL, "step %s missing or out of order in:\n%s", steps[i], out);
    }
    ck_assert_ptr_nonnull(strstr(out, "final state (version 7)"));
    ck_assert_ptr_nonnull(strstr(out, "\"trackingNumber\""));
    ck_assert_ptr_nonnull(strstr(out, "processor:job:completed"));
    /* a second run resets its session and prints the same versions */
    rc = am2z_testproc_run(argv, out, sizeof out, 60000);
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(strstr(out, "final state (version 7)"));
    am2z_test_rmtree(dir);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("demo");
    TCase *tc = tcase_create("demo");
    tcase_set_timeout(tc, 150);
    tcase_add_test(tc, test_demo_runs_order_example_to_completion);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
