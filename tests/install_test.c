/*  install_test.c — Check suite "install": `cmake --install` into a
    temporary prefix gives headers, libam2z, a pkg-config file and a CMake
    package that a user program builds and runs against. The program uses
    every public header the README documents: the embedded runtime
    (am2z_runtime.h, with am2z_client.h, am2z_worker.h, am2z_broker.h) and
    the local runtime with a composite (am2z_local.h, am2z_compose.h). */
#include "am2z_testproc.h"
#include "am2z_testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char s_app[] =
    "#include \"am2z_runtime.h\"\n"
    "#include \"am2z_compose.h\"\n"
    "#include \"am2z_local.h\"\n"
    "#include <stdio.h>\n"
    "static int inc(am2z_ctx_t *ctx) {\n"
    "    int64_t n = 0;\n"
    "    am2z_state_get_int(am2z_ctx_state(ctx), \"count\", &n);\n"
    "    return am2z_changes_set_int(am2z_ctx_changes(ctx), \"count\", n + 1);\n"
    "}\n"
    /* the local runtime runs chain(inc, inc): count 2, version 3 */
    "static int local_chain(void) {\n"
    "    const char *steps[] = { \"inc\", \"inc\" };\n"
    "    am2z_composite_def_t def = { .name = \"twice\", .kind = AM2Z_COMPOSITE_CHAIN,\n"
    "                                 .steps = steps, .nsteps = 2 };\n"
    "    char err[128];\n"
    "    if (am2z_composite_validate(&def, err, sizeof err) != AM2Z_OK) return 1;\n"
    "    am2z_local_t *lr = am2z_local_new();\n"
    "    am2z_state_t *st = NULL;\n"
    "    am2z_result_t *r = NULL;\n"
    "    int64_t n = 0;\n"
    "    int bad = !lr\n"
    "        || am2z_local_register(lr, &(am2z_processor_def_t){ .name = \"inc\", .fn = inc })\n"
    "        || am2z_local_register_composite(lr, &def, err, sizeof err)\n"
    "        || am2z_state_new(\"l\", 1, &st)\n"
    "        || am2z_local_execute(lr, \"twice\", st, \"l\", &r) || !r->success\n"
    "        || am2z_state_get_int(r->state, \"count\", &n) || n != 2;\n"
    "    if (!bad) printf(\"local=%llu\\n\", (unsigned long long)am2z_state_version(r->state));\n"
    "    am2z_result_destroy(&r); am2z_state_destroy(&st); am2z_local_destroy(&lr);\n"
    "    return bad;\n"
    "}\n"
    "int main(int argc, char **argv) {\n"
    "    if (local_chain() != 0) return 1;\n"
    "    am2z_broker_config_t cfg; am2z_broker_config_defaults(&cfg);\n"
    "    snprintf(cfg.common.data_dir, sizeof cfg.common.data_dir, \"%s\", argv[argc - 1]);\n"
    "    cfg.common.log_level = AM2Z_LOG_WARN;\n"
    "    am2z_runtime_t *rt = am2z_runtime_new(&cfg);\n"
    "    am2z_runtime_register(rt, &(am2z_processor_def_t){ .name = \"inc\", .fn = inc });\n"
    "    if (am2z_runtime_start(rt) != AM2Z_OK) return 1;\n"
    "    am2z_result_t *r = NULL;\n"
    "    if (am2z_client_execute(am2z_runtime_client(rt), \"inc\", NULL, \"s\", NULL, &r) != AM2Z_OK\n"
    "        || !r->success) return 1;\n"
    "    printf(\"version=%llu\\n\", (unsigned long long)am2z_state_version(r->state));\n"
    "    am2z_result_destroy(&r); am2z_runtime_destroy(&rt); return 0;\n"
    "}\n";

/*  A sanitized libam2z needs the sanitizer runtime in the program too. */
#ifdef AM2Z_SANITIZED
#define S_CFLAGS "-fsanitize=address,undefined"
#else
#define S_CFLAGS ""
#endif

static void
s_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static int
s_sh(const char *script, char *out, size_t out_size)
{
    char *argv[] = { "/bin/sh", "-c", (char *)script, NULL };
    return am2z_testproc_run(argv, out, out_size, 170000);
}

START_TEST(test_install_gives_pkg_config_and_cmake_package)
{
    char dir[512], cmd[8192];
    static char out[65536];
    am2z_test_tmpdir("install", dir, sizeof dir);
    char path[700];
    snprintf(path, sizeof path, "%s/app.c", dir);
    s_write(path, s_app);
    snprintf(path, sizeof path, "%s/CMakeLists.txt", dir);
    s_write(path, "cmake_minimum_required(VERSION 3.25)\nproject(app C)\n"
                  "find_package(am2z REQUIRED)\nadd_executable(app2 app.c)\n"
                  "target_link_libraries(app2 PRIVATE am2z::am2z)\n");

    snprintf(cmd, sizeof cmd, "cmake --install '%s' --prefix '%s/prefix' >/dev/null 2>&1",
             AM2Z_BUILD_DIR, dir);
    ck_assert_int_eq(s_sh(cmd, out, sizeof out), 0);

    /* every public header the README documents is installed */
    const char *headers[] = { "am2z_client.h", "am2z_worker.h", "am2z_runtime.h",
                              "am2z_broker.h", "am2z_local.h", "am2z_compose.h" };
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        snprintf(path, sizeof path, "%s/prefix/include/am2z/%s", dir, headers[i]);
        ck_assert_msg(access(path, R_OK) == 0, "not installed: %s", path);
    }

    /* pkg-config, as the README shows */
    snprintf(cmd, sizeof cmd,
             "cd '%s' && export PKG_CONFIG_PATH='%s/prefix/lib/pkgconfig' && "
             "cc " S_CFLAGS " app.c $(pkg-config --cflags --libs am2z) -o app 2>&1 && "
             "LD_LIBRARY_PATH='%s/prefix/lib' ./app '%s/data1'",
             dir, dir, dir, dir);
    int rc = s_sh(cmd, out, sizeof out);
    ck_assert_msg(rc == 0, "pkg-config build/run failed (%d): %s", rc, out);
    ck_assert_msg(strstr(out, "local=3") && strstr(out, "version=2"), "output: %s", out);

    /* the CMake package */
    snprintf(cmd, sizeof cmd,
             "cd '%s' && cmake -S . -B b -DCMAKE_C_FLAGS='" S_CFLAGS "' -DCMAKE_PREFIX_PATH='%s/prefix' >/dev/null 2>&1 && "
             "cmake --build b >/dev/null 2>&1 && LD_LIBRARY_PATH='%s/prefix/lib' ./b/app2 '%s/data2'",
             dir, dir, dir, dir);
    rc = s_sh(cmd, out, sizeof out);
    ck_assert_msg(rc == 0, "CMake package build/run failed (%d): %s", rc, out);
    ck_assert_msg(strstr(out, "local=3") && strstr(out, "version=2"), "output: %s", out);
    am2z_test_rmtree(dir);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("install");
    TCase *tc = tcase_create("install");
    tcase_set_timeout(tc, 175);
    tcase_add_test(tc, test_install_gives_pkg_config_and_cmake_package);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
