/*  am2z_testutil.c — see am2z_testutil.h. */
#include "am2z_testutil.h"

#include "am2z_clock.h"

#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int
s_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

void
am2z_test_rmtree(const char *path)
{
    nftw(path, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void
am2z_test_tmpdir(const char *tag, char *out, size_t out_size)
{
    const char *base = getenv("AM2Z_TEST_TMP");
    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0755);
    int n = snprintf(out, out_size, "%s/%s-%d-XXXXXX", base, tag, (int)getpid());
    ck_assert_int_lt(n, (int)out_size);
    ck_assert_msg(mkdtemp(out) != NULL, "mkdtemp(%s): %s", out, strerror(errno));
}

const char *
am2z_test_openssl_base_only(const char *tag, char *out, size_t out_size)
{
    const char *base = getenv("AM2Z_TEST_TMP");
    int n = snprintf(out, out_size, "%s/%s-openssl-%d.cnf", base && *base ? base : "/tmp",
                     tag, (int)getpid());
    ck_assert_int_lt(n, (int)out_size);
    FILE *f = fopen(out, "w");
    ck_assert_msg(f != NULL, "fopen(%s): %s", out, strerror(errno));
    fputs("openssl_conf = openssl_init\n[openssl_init]\nproviders = provider_sect\n"
          "[provider_sect]\nbase = base_sect\n[base_sect]\nactivate = 1\n", f);
    ck_assert_int_eq(fclose(f), 0);
    return out;
}

int
am2z_test_run(Suite *suite)
{
    /*  Every scratch dir of this run (am2z_test_tmpdir, LMDB files of up
        to tens of MB each) goes under one of its own, removed when every
        check passed and kept, named on stderr, when one failed. The cases
        (forked, and the daemons they start) inherit it through the
        environment. */
    const char *base = getenv("AM2Z_TEST_TMP");
    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0755);
    char scratch[1024];
    int n = snprintf(scratch, sizeof scratch, "%s/run-%d-XXXXXX", base, (int)getpid());
    bool own = n > 0 && (size_t)n < sizeof scratch && mkdtemp(scratch) != NULL
               && setenv("AM2Z_TEST_TMP", scratch, 1) == 0;

    SRunner *runner = srunner_create(suite);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    int ran = srunner_ntests_run(runner);
    srunner_free(runner);
    if (own) {
        if (failed == 0 && ran > 0)
            am2z_test_rmtree(scratch);
        else
            fprintf(stderr, "scratch files of this run kept in %s\n", scratch);
    }
    if (ran == 0) {
        /* a selection that matches nothing (CK_RUN_SUITE, CK_RUN_CASE,
           CK_INCLUDE_TAGS / CK_EXCLUDE_TAGS) must not pass as a run */
        fprintf(stderr, "no checks ran: the CK_RUN_SUITE / CK_RUN_CASE / CK_*_TAGS "
                        "selection matches nothing in this suite\n");
        return EXIT_FAILURE;
    }
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

void
am2z_test_random_bytes(uint64_t *seed, uint8_t *out, size_t size)
{
    uint64_t x = *seed ? *seed : 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < size; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out[i] = (uint8_t)(x >> 24);
    }
    *seed = x;
}

void
am2z_test_lmdb_map_perms(int pid, const char *dir, char perms[5])
{
    char path[64], file[1100], line[1400];
    if (pid)
        snprintf(path, sizeof path, "/proc/%d/maps", pid);
    else
        snprintf(path, sizeof path, "/proc/self/maps");
    snprintf(file, sizeof file, "%s/data.mdb", dir);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    perms[0] = '\0';
    while (fgets(line, sizeof line, f)) {
        char *name = strchr(line, '/');
        if (!name)
            continue;
        name[strcspn(name, "\n")] = '\0';
        char *p = strchr(line, ' ');
        if (p && strcmp(name, file) == 0) {
            memcpy(perms, p + 1, 4);
            perms[4] = '\0';
            break;
        }
    }
    fclose(f);
    ck_assert_msg(perms[0], "no mapping of %s in %s", file, path);
}

/*  Whether the space-separated `list` holds `word`. */
static bool
s_has_word(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list; (p = strstr(p, word)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' '))
            return true;
    return false;
}

MDB_txn *
am2z_test_lmdb_begin(const char *dir, MDB_env **env)
{
    MDB_txn *txn = NULL;
    ck_assert_int_eq(mdb_env_create(env), 0);
    ck_assert_int_eq(mdb_env_set_maxdbs(*env, 32), 0);
    ck_assert_int_eq(mdb_env_set_mapsize(*env, (size_t)1 << 30), 0);
    ck_assert_int_eq(mdb_env_open(*env, dir, 0, 0644), 0);
    ck_assert_int_eq(mdb_txn_begin(*env, NULL, 0, &txn), 0);
    return txn;
}

bool
am2z_test_only_case(const char *tcase)
{
    const char *run = getenv("CK_RUN_CASE");
    return run && strcmp(run, tcase) == 0;
}

bool
am2z_test_case_selected(const char *tcase, const char *tag)
{
    const char *run = getenv("CK_RUN_CASE");
    const char *include = getenv("CK_INCLUDE_TAGS");
    const char *exclude = getenv("CK_EXCLUDE_TAGS");
    if (run && *run && strcmp(run, tcase) != 0)
        return false;
    if (include && *include && !s_has_word(include, tag))
        return false;
    return !(exclude && s_has_word(exclude, tag));
}

uint64_t
am2z_test_deadline(uint64_t timeout_ms)
{
    return am2z_clock_mono_us() + timeout_ms * 1000;
}

bool
am2z_test_before(uint64_t deadline)
{
    return am2z_clock_mono_us() < deadline;
}

size_t
am2z_test_nested_maps(uint8_t *out, size_t levels)
{
    for (size_t i = 0; i < levels; i++) {
        out[3 * i] = 0x81;                /* fixmap of 1 */
        out[3 * i + 1] = 0xa1;            /* fixstr "a" */
        out[3 * i + 2] = 'a';
    }
    out[3 * levels] = 0x01;
    return 3 * levels + 1;
}
