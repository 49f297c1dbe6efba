/*  am2z_testutil.h — helpers shared by the Check suites. */
#ifndef AM2Z_TESTUTIL_H_INCLUDED
#define AM2Z_TESTUTIL_H_INCLUDED

#include <check.h>
#include <lmdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*  Creates a fresh, empty directory under $AM2Z_TEST_TMP (or /tmp) named
    after `tag`, and writes its path into out. Fails the test on error. */
void am2z_test_tmpdir(const char *tag, char *out, size_t out_size);

/*  Writes an OpenSSL configuration that loads only OpenSSL's "base"
    provider (so SHA-256 cannot be fetched where it is read) to a file
    named after `tag` under $AM2Z_TEST_TMP (or /tmp), and returns its path
    in out. Fails the test on error. */
const char *am2z_test_openssl_base_only(const char *tag, char *out, size_t out_size);

/*  Removes a directory tree (rm -rf). Ignores errors. */
void am2z_test_rmtree(const char *path);

/*  Runs one suite with CK_ENV-controlled forking; returns EXIT_SUCCESS
    when every check passed, EXIT_FAILURE when one failed or when none ran
    (a CK_RUN_CASE / CK_*_TAGS selection that matches nothing is a mistake,
    not a pass). Use as main's exit status. Points AM2Z_TEST_TMP at a
    directory of the run's own (run-PID-XXXXXX under it) for the cases,
    and removes it afterwards when every check passed (kept and named on
    stderr otherwise). */
int am2z_test_run(Suite *suite);

/*  Opens the LMDB environment in dir (a data dir no broker holds) and
    begins a write txn on it, for tests that write or edit a store's files
    directly; fails the test when LMDB refuses. Commit the txn, then
    mdb_env_close(*env). */
MDB_txn *am2z_test_lmdb_begin(const char *dir, MDB_env **env);

/*  True when CK_RUN_CASE selects case `tcase` alone: a suite that has to
    skip that case returns SKIP_RETURN_CODE instead of running nothing. */
bool am2z_test_only_case(const char *tcase);

/*  Whether Check's selection from the environment (CK_RUN_CASE,
    CK_INCLUDE_TAGS, CK_EXCLUDE_TAGS) lets case `tcase`, tagged `tag`, run:
    a suite uses it to tell, before it runs, whether a case it may have to
    skip was asked for (tests/CMakeLists.txt, SKIP_RETURN_CODE). */
bool am2z_test_case_selected(const char *tcase, const char *tag);

/*  The deadline of a wait of timeout_ms from now on the monotonic clock
    (µs), and whether it is still ahead: a wait loop bounds its time by
    one, not by a count of passes (one pass can block for a whole client
    or CLI timeout). */
/*  Writes `levels` nested one-key maps {"a": {"a": ... 1}} (3 * levels + 1
    bytes) into out and returns the size: msgpack nested exactly that
    deep. */
size_t am2z_test_nested_maps(uint8_t *out, size_t levels);

uint64_t am2z_test_deadline(uint64_t timeout_ms);
bool am2z_test_before(uint64_t deadline);

/*  The permissions ("r--s", "rw-s", ...) of the mapping of dir/data.mdb in
    process pid (0 = this one): where LMDB keeps its map read-only and where
    it writes pages in place (MDB_WRITEMAP). Fails the test if there is no
    such mapping. */
void am2z_test_lmdb_map_perms(int pid, const char *dir, char perms[5]);

/*  Deterministic pseudo-random bytes for garbage-input tests (xorshift). */
void am2z_test_random_bytes(uint64_t *seed, uint8_t *out, size_t size);

#endif
