/*  am2z_testutil.h — helpers shared by the Check suites. */
#ifndef AM2Z_TESTUTIL_H_INCLUDED
#define AM2Z_TESTUTIL_H_INCLUDED

#include <check.h>
#include <stddef.h>
#include <stdint.h>

/*  Creates a fresh, empty directory under $AM2Z_TEST_TMP (or /tmp) named
    after `tag`, and writes its path into out. Fails the test on error. */
void am2z_test_tmpdir(const char *tag, char *out, size_t out_size);

/*  Removes a directory tree (rm -rf). Ignores errors. */
void am2z_test_rmtree(const char *path);

/*  Runs one suite with CK_ENV-controlled forking and returns the number of
    failed cases (use as main's exit status). */
int am2z_test_run(Suite *suite);

/*  Deterministic pseudo-random bytes for garbage-input tests (xorshift). */
void am2z_test_random_bytes(uint64_t *seed, uint8_t *out, size_t size);

#endif
