/*  config_test.c — Check suite "config": value syntax, sources, precedence,
    error messages and help. */
#include "am2z_config.h"
#include "am2z_error.h"
#include "am2z_log.h"
#include "am2z_sys.h"
#include "am2z_testutil.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*  A small struct with one setting of every type and no bounds, so value
    syntax can be tested apart from the real table's limits. */
typedef struct {
    char name[8];
    uint64_t count;
    uint64_t size;
    uint64_t delay;
    uint64_t spin;
    bool flag;
    int color;
} s_cfg_t;

static const char *const s_colors[] = { "red", "green", NULL };

static const am2z_cfg_def_t s_table[] = {
    { "name", AM2Z_CFG_STRING, offsetof(s_cfg_t, name), 8, "abc", 0, 0, NULL, "short name" },
    { "count", AM2Z_CFG_UINT, offsetof(s_cfg_t, count), 0, "0", 0, 0, NULL, "a count" },
    { "size", AM2Z_CFG_SIZE, offsetof(s_cfg_t, size), 0, "0", 0, 0, NULL, "a size" },
    { "delay", AM2Z_CFG_MS, offsetof(s_cfg_t, delay), 0, "0", 0, 0, NULL, "a delay" },
    { "spin", AM2Z_CFG_US, offsetof(s_cfg_t, spin), 0, "300us", 0, 10000, NULL, "a spin" },
    { "flag", AM2Z_CFG_BOOL, offsetof(s_cfg_t, flag), 0, "false", 0, 0, NULL, "a flag" },
    { "color", AM2Z_CFG_ENUM, offsetof(s_cfg_t, color), 0, "red", 0, 0, s_colors, "a color" },
    { .name = NULL },
};

static s_cfg_t
s_fresh(void)
{
    s_cfg_t cfg;
    memset(&cfg, 0xa5, sizeof cfg);
    ck_assert_int_eq(am2z_cfg_defaults(s_table, &cfg, NULL, 0), AM2Z_OK);
    return cfg;
}

/*  Writes text to <tmpdir>/am2z.conf and returns the path in out. */
static void
s_write_file(const char *text, char *out, size_t out_size)
{
    char dir[512];
    am2z_test_tmpdir("config", dir, sizeof dir);
    snprintf(out, out_size, "%s/am2z.conf", dir);
    FILE *f = fopen(out, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static bool
s_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

START_TEST(test_config_defaults_table_valid)
{
    char err[AM2Z_CFG_ERR_MAX] = "";
    am2z_config_t cfg;
    memset(&cfg, 0, sizeof cfg);    /* so the struct compares bytewise below */
    ck_assert_int_eq(am2z_cfg_defaults(am2z_config_table, &cfg, err, sizeof err), AM2Z_OK);
    ck_assert_str_eq(cfg.data_dir, "./am2z-data");
    ck_assert_uint_eq(cfg.map_size, (uint64_t)1 << 30);
    ck_assert_int_eq(cfg.durability, AM2Z_DURABILITY_SYNC);
    ck_assert_uint_eq(cfg.flush_interval_ms, 100);
    ck_assert_uint_eq(cfg.max_state_size, (uint64_t)1 << 20);
    ck_assert_uint_eq(cfg.max_sessions, 1000000);
    ck_assert_uint_eq(cfg.max_frame_size, (uint64_t)4 << 20);
    ck_assert_int_eq(cfg.log_level, AM2Z_LOG_INFO);
    ck_assert_int_eq(cfg.log_format, AM2Z_LOG_TEXT);

    am2z_config_t again;
    am2z_config_defaults(&again);
    ck_assert_mem_eq(&again, &cfg, sizeof cfg);
}
END_TEST

START_TEST(test_config_bad_table_is_reported_by_name)
{
    const am2z_cfg_def_t out_of_bounds[] = {
        { "limit", AM2Z_CFG_UINT, offsetof(s_cfg_t, count), 0, "0", 1, 10, NULL, "x" },
        { .name = NULL },
    };
    const am2z_cfg_def_t twice[] = {
        { "count", AM2Z_CFG_UINT, offsetof(s_cfg_t, count), 0, "0", 0, 0, NULL, "x" },
        { "count", AM2Z_CFG_UINT, offsetof(s_cfg_t, count), 0, "0", 0, 0, NULL, "x" },
        { .name = NULL },
    };
    const am2z_cfg_def_t reserved[] = {
        { "config", AM2Z_CFG_STRING, offsetof(s_cfg_t, name), 8, "", 0, 0, NULL, "x" },
        { .name = NULL },
    };
    s_cfg_t cfg;
    char err[AM2Z_CFG_ERR_MAX];
    ck_assert_int_eq(am2z_cfg_defaults(out_of_bounds, &cfg, err, sizeof err), AM2Z_ECONFIG);
    ck_assert_str_eq(err, "limit (default): '0' is out of range (1..10)");
    ck_assert_int_eq(am2z_cfg_defaults(twice, &cfg, err, sizeof err), AM2Z_ECONFIG);
    ck_assert_str_eq(err, "count: defined twice");
    ck_assert_int_eq(am2z_cfg_defaults(reserved, &cfg, err, sizeof err), AM2Z_ECONFIG);
    ck_assert_str_eq(err, "config: name is reserved");
}
END_TEST

START_TEST(test_config_flag_beats_env_beats_file)
{
    char path[1024];
    s_write_file("# test config\n"
                 "map-size = 128MiB\n"
                 "max-sessions = 10\n"
                 "durability = periodic\n"
                 "log-format json\n", path, sizeof path);
    char config_flag[1100];
    snprintf(config_flag, sizeof config_flag, "--config=%s", path);
    char *argv[] = { "am2z", "run", config_flag, "--map-size", "512MiB", "job.bin", NULL };
    char *envp[] = { "PATH=/bin", "AM2Z_MAP_SIZE=256MiB", "AM2Z_MAX_SESSIONS=20",
                     "AM2Z_UNRELATED=1", NULL };
    char *positional[7];
    am2z_cfg_args_t args = { .positional = positional };
    char err[AM2Z_CFG_ERR_MAX] = "";
    am2z_config_t cfg;
    int rc = am2z_cfg_load(am2z_config_table, &cfg, 6, argv, envp, &args, err, sizeof err);
    ck_assert_msg(rc == AM2Z_OK, "rc %d: %s", rc, err);
    ck_assert_uint_eq(cfg.map_size, (uint64_t)512 << 20);        /* flag */
    ck_assert_uint_eq(cfg.max_sessions, 20);                     /* env over file */
    ck_assert_int_eq(cfg.durability, AM2Z_DURABILITY_PERIODIC);  /* file over default */
    ck_assert_int_eq(cfg.log_format, AM2Z_LOG_JSON);
    ck_assert_uint_eq(cfg.max_frame_size, (uint64_t)4 << 20);    /* default */
    ck_assert_str_eq(args.config, path);
    ck_assert(!args.help);
    ck_assert_int_eq(args.npositional, 2);
    ck_assert_str_eq(args.positional[0], "run");
    ck_assert_str_eq(args.positional[1], "job.bin");

    /* The same file named by AM2Z_CONFIG instead of --config. */
    char config_env[1100];
    snprintf(config_env, sizeof config_env, "AM2Z_CONFIG=%s", path);
    char *envp2[] = { config_env, NULL };
    char *argv2[] = { "am2z", NULL };
    rc = am2z_cfg_load(am2z_config_table, &cfg, 1, argv2, envp2, NULL, err, sizeof err);
    ck_assert_msg(rc == AM2Z_OK, "rc %d: %s", rc, err);
    ck_assert_uint_eq(cfg.map_size, (uint64_t)128 << 20);
    ck_assert_uint_eq(cfg.max_sessions, 10);
}
END_TEST

START_TEST(test_config_rejects_bad_size_by_name)
{
    am2z_config_t cfg;
    am2z_config_defaults(&cfg);
    char err[AM2Z_CFG_ERR_MAX];

    char *argv[] = { "am2z", "--map-size", "abc", NULL };
    ck_assert_int_eq(am2z_cfg_parse_args(am2z_config_table, &cfg, 3, argv, NULL,
                                         err, sizeof err), AM2Z_ECONFIG);
    ck_assert_str_eq(err, "--map-size: 'abc' is not a size (e.g. 64MiB)");
    ck_assert_uint_eq(cfg.map_size, (uint64_t)1 << 30);  /* untouched */

    char *envp[] = { "AM2Z_MAP_SIZE=12XB", NULL };
    ck_assert_int_eq(am2z_cfg_load_env(am2z_config_table, &cfg, envp, err, sizeof err),
                     AM2Z_ECONFIG);
    ck_assert_str_eq(err, "AM2Z_MAP_SIZE: '12XB' is not a size (e.g. 64MiB)");

    char path[1024], expect[1200];
    s_write_file("data-dir = /tmp/x\n\nmap_size = lots\n", path, sizeof path);
    ck_assert_int_eq(am2z_cfg_load_file(am2z_config_table, &cfg, path, err, sizeof err),
                     AM2Z_ECONFIG);
    snprintf(expect, sizeof expect, "%s:3: map-size: 'lots' is not a size (e.g. 64MiB)", path);
    ck_assert_str_eq(err, expect);

    ck_assert_int_eq(am2z_cfg_set(am2z_config_table, &cfg, "map-size", "1.5G", NULL,
                                  err, sizeof err), AM2Z_ECONFIG);
    ck_assert_str_eq(err, "map-size: '1.5G' is not a size (e.g. 64MiB)");
}
END_TEST

START_TEST(test_config_unknown_file_key_is_error)
{
    char path[1024];
    s_write_file("# comment\nmap-size = 1GiB\nfoo = 1\n", path, sizeof path);
    am2z_config_t cfg;
    am2z_config_defaults(&cfg);
    char err[AM2Z_CFG_ERR_MAX];
    ck_assert_int_eq(am2z_cfg_load_file(am2z_config_table, &cfg, path, err, sizeof err),
                     AM2Z_ENOTFOUND);
    ck_assert_msg(s_ends_with(err, "am2z.conf:3: unknown setting 'foo'"), "err: %s", err);
}
END_TEST

START_TEST(test_config_unknown_flag_is_error)
{
    am2z_config_t cfg;
    am2z_config_defaults(&cfg);
    char err[AM2Z_CFG_ERR_MAX];
    char *argv[] = { "am2z", "--map-sise=1GiB", NULL };
    ck_assert_int_eq(am2z_cfg_parse_args(am2z_config_table, &cfg, 2, argv, NULL,
                                         err, sizeof err), AM2Z_ENOTFOUND);
    ck_assert_str_eq(err, "--map-sise: unknown option (see --help)");
    char *argv2[] = { "am2z", "-x", NULL };
    ck_assert_int_eq(am2z_cfg_parse_args(am2z_config_table, &cfg, 2, argv2, NULL,
                                         err, sizeof err), AM2Z_ENOTFOUND);
    ck_assert_str_eq(err, "-x: unknown option (see --help)");
    ck_assert_int_eq(am2z_cfg_set(am2z_config_table, &cfg, "nope", "1", "X",
                                  err, sizeof err), AM2Z_ENOTFOUND);
    ck_assert_str_eq(err, "X: unknown setting 'nope'");
}
END_TEST

START_TEST(test_config_bounds_checked)
{
    am2z_config_t cfg;
    am2z_config_defaults(&cfg);
    char err[AM2Z_CFG_ERR_MAX];
    ck_assert_int_eq(am2z_cfg_set(am2z_config_table, &cfg, "map-size", "1KiB", "--map-size",
                                  err, sizeof err), AM2Z_ECONFIG);
    ck_assert_str_eq(err, "--map-size: '1KiB' is out of range (64KiB..1024GiB)");
    ck_assert_int_eq(am2z_cfg_set(am2z_config_table, &cfg, "map-size", "64KiB", NULL,
                                  err, sizeof err), AM2Z_OK);
    ck_assert_int_eq(am2z_cfg_set(am2z_config_table, &cfg, "map-size", "1024G", NULL,
                                  err, sizeof err), AM2Z_OK);
    ck_assert_int_eq(am2z_cfg_set(am2z_config_table, &cfg, "map-size", "1025G", NULL,
                                  err, sizeof err), AM2Z_ECONFIG);

    ck_assert_int_eq(am2z_cfg_set(am2z_config_table, &cfg, "flush-interval", "1m", NULL,
                                  err, sizeof err), AM2Z_OK);
    ck_assert_uint_eq(cfg.flush_interval_ms, 60000);
    ck_assert_int_eq(am2z_cfg_set(am2z_config_table, &cfg, "flush-interval", "60001", NULL,
                                  err, sizeof err), AM2Z_ECONFIG);
    ck_assert_str_eq(err, "flush-interval: '60001' is out of range (1ms..60000ms)");
    ck_assert_int_eq(am2z_cfg_set(am2z_config_table, &cfg, "flush-interval", "0ms", NULL,
                                  err, sizeof err), AM2Z_ECONFIG);
    ck_assert_uint_eq(cfg.flush_interval_ms, 60000);  /* a refused value changes nothing */

    ck_assert_int_eq(am2z_cfg_set(am2z_config_table, &cfg, "max-sessions", "0", NULL,
                                  err, sizeof err), AM2Z_ECONFIG);
    ck_assert_int_eq(am2z_cfg_set(am2z_config_table, &cfg, "max-sessions", "4294967297", NULL,
                                  err, sizeof err), AM2Z_ECONFIG);
    ck_assert_int_eq(am2z_cfg_set(am2z_config_table, &cfg, "max-sessions", "4294967296", NULL,
                                  err, sizeof err), AM2Z_OK);
}
END_TEST

START_TEST(test_config_size_suffixes)
{
    static const struct { const char *text; uint64_t bytes; } ok[] = {
        { "0", 0 }, { "4096", 4096 },
        { "64K", 64 << 10 }, { "64KiB", 64 << 10 }, { "64k", 64 << 10 },
        { "1M", 1 << 20 }, { "1MiB", 1 << 20 }, { "2 MiB", 2 << 20 }, { "3mib", 3 << 20 },
        { "1G", (uint64_t)1 << 30 }, { "1GiB", (uint64_t)1 << 30 },
        { "16777216G", (uint64_t)1 << 54 },
    };
    static const char *const bad[] = {
        "", "G", "1.5M", "-1", "+1", "1KB", "1T", "1 M B", "0x10", "1e6",
    };
    char err[AM2Z_CFG_ERR_MAX];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        s_cfg_t cfg = s_fresh();
        ck_assert_msg(am2z_cfg_set(s_table, &cfg, "size", ok[i].text, NULL, err, sizeof err)
                      == AM2Z_OK, "%s: %s", ok[i].text, err);
        ck_assert_uint_eq(cfg.size, ok[i].bytes);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s_cfg_t cfg = s_fresh();
        ck_assert_msg(am2z_cfg_set(s_table, &cfg, "size", bad[i], NULL, err, sizeof err)
                      == AM2Z_ECONFIG, "accepted '%s'", bad[i]);
        ck_assert_ptr_nonnull(strstr(err, "is not a size"));
    }
    s_cfg_t cfg = s_fresh();
    ck_assert_int_eq(am2z_cfg_set(s_table, &cfg, "size", "17179869184G", NULL, err, sizeof err),
                     AM2Z_ECONFIG);
    ck_assert_str_eq(err, "size: '17179869184G' is too large");
}
END_TEST

START_TEST(test_config_ms_suffixes)
{
    static const struct { const char *text; uint64_t ms; } ok[] = {
        { "250", 250 }, { "250ms", 250 }, { "5s", 5000 }, { "2m", 120000 },
        { "0", 0 }, { "10 s", 10000 }, { "2h", 7200000 }, { "7d", 604800000 },
    };
    static const char *const bad[] = { "1M", "1H", "1.5s", "s", "5 sec", "1MS", "1w" };
    char err[AM2Z_CFG_ERR_MAX];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        s_cfg_t cfg = s_fresh();
        ck_assert_msg(am2z_cfg_set(s_table, &cfg, "delay", ok[i].text, NULL, err, sizeof err)
                      == AM2Z_OK, "%s: %s", ok[i].text, err);
        ck_assert_uint_eq(cfg.delay, ok[i].ms);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s_cfg_t cfg = s_fresh();
        ck_assert_msg(am2z_cfg_set(s_table, &cfg, "delay", bad[i], NULL, err, sizeof err)
                      == AM2Z_ECONFIG, "accepted '%s'", bad[i]);
        ck_assert_ptr_nonnull(strstr(err, "is not a duration"));
    }
}
END_TEST

START_TEST(test_config_uint_overflow_detected)
{
    char err[AM2Z_CFG_ERR_MAX];
    s_cfg_t cfg = s_fresh();
    ck_assert_int_eq(am2z_cfg_set(s_table, &cfg, "count", "18446744073709551615", NULL,
                                  err, sizeof err), AM2Z_OK);
    ck_assert_uint_eq(cfg.count, UINT64_MAX);
    ck_assert_int_eq(am2z_cfg_set(s_table, &cfg, "count", "18446744073709551616", NULL,
                                  err, sizeof err), AM2Z_ECONFIG);
    ck_assert_str_eq(err, "count: '18446744073709551616' is too large");
    ck_assert_uint_eq(cfg.count, UINT64_MAX);
    ck_assert_int_eq(am2z_cfg_set(s_table, &cfg, "count", "12k", NULL, err, sizeof err),
                     AM2Z_ECONFIG);
    ck_assert_str_eq(err, "count: '12k' is not a whole number (e.g. 1000)");
}
END_TEST

START_TEST(test_config_bool_words)
{
    static const char *const yes[] = { "true", "yes", "on", "1", "TRUE", "Yes" };
    static const char *const no[] = { "false", "no", "off", "0", "Off" };
    char err[AM2Z_CFG_ERR_MAX];
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        s_cfg_t cfg = s_fresh();
        ck_assert_int_eq(am2z_cfg_set(s_table, &cfg, "flag", yes[i], NULL, err, sizeof err),
                         AM2Z_OK);
        ck_assert(cfg.flag);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        s_cfg_t cfg = s_fresh();
        cfg.flag = true;
        ck_assert_int_eq(am2z_cfg_set(s_table, &cfg, "flag", no[i], NULL, err, sizeof err),
                         AM2Z_OK);
        ck_assert(!cfg.flag);
    }
    s_cfg_t cfg = s_fresh();
    ck_assert_int_eq(am2z_cfg_set(s_table, &cfg, "flag", "maybe", "--flag", err, sizeof err),
                     AM2Z_ECONFIG);
    ck_assert_str_eq(err, "--flag: 'maybe' is not a boolean (true/false, yes/no, on/off, 1/0)");

    /* Flags: bare means true, --no- means false, "=value" is parsed. */
    char *argv1[] = { "p", "--flag", "operand", NULL };
    ck_assert_int_eq(am2z_cfg_parse_args(s_table, &cfg, 3, argv1, NULL, err, sizeof err), AM2Z_OK);
    ck_assert(cfg.flag);
    char *argv2[] = { "p", "--no-flag", NULL };
    ck_assert_int_eq(am2z_cfg_parse_args(s_table, &cfg, 2, argv2, NULL, err, sizeof err), AM2Z_OK);
    ck_assert(!cfg.flag);
    char *argv3[] = { "p", "--flag=on", NULL };
    ck_assert_int_eq(am2z_cfg_parse_args(s_table, &cfg, 2, argv3, NULL, err, sizeof err), AM2Z_OK);
    ck_assert(cfg.flag);
    char *argv4[] = { "p", "--no-flag=yes", NULL };
    ck_assert_int_eq(am2z_cfg_parse_args(s_table, &cfg, 2, argv4, NULL, err, sizeof err),
                     AM2Z_ECONFIG);
    ck_assert_str_eq(err, "--no-flag: takes no value");
    char *argv5[] = { "p", "--no-count", NULL };
    ck_assert_int_eq(am2z_cfg_parse_args(s_table, &cfg, 2, argv5, NULL, err, sizeof err),
                     AM2Z_ENOTFOUND);
}
END_TEST

START_TEST(test_config_enum_names)
{
    char err[AM2Z_CFG_ERR_MAX];
    s_cfg_t cfg = s_fresh();
    ck_assert_int_eq(cfg.color, 0);
    ck_assert_int_eq(am2z_cfg_set(s_table, &cfg, "color", "green", NULL, err, sizeof err), AM2Z_OK);
    ck_assert_int_eq(cfg.color, 1);
    ck_assert_int_eq(am2z_cfg_set(s_table, &cfg, "color", "RED", NULL, err, sizeof err), AM2Z_OK);
    ck_assert_int_eq(cfg.color, 0);
    ck_assert_int_eq(am2z_cfg_set(s_table, &cfg, "color", "blue", "AM2Z_COLOR", err, sizeof err),
                     AM2Z_ECONFIG);
    ck_assert_str_eq(err, "AM2Z_COLOR: 'blue' is not one of: red, green");

    /* The config's name lists must index like the enums they stand for. */
    for (int i = 0; am2z_log_level_names[i]; i++) {
        am2z_log_level_t level;
        ck_assert_int_eq(am2z_log_level_parse(am2z_log_level_names[i], &level), AM2Z_OK);
        ck_assert_int_eq(level, i);
    }
    for (int i = 0; am2z_log_format_names[i]; i++) {
        am2z_log_format_t format;
        ck_assert_int_eq(am2z_log_format_parse(am2z_log_format_names[i], &format), AM2Z_OK);
        ck_assert_int_eq(format, i);
    }
    ck_assert_str_eq(am2z_durability_names[AM2Z_DURABILITY_SYNC], "sync");
    ck_assert_str_eq(am2z_durability_names[AM2Z_DURABILITY_PERIODIC], "periodic");

    am2z_config_t real;
    am2z_config_defaults(&real);
    ck_assert_int_eq(am2z_cfg_set(am2z_config_table, &real, "log-level", "debug", NULL,
                                  err, sizeof err), AM2Z_OK);
    ck_assert_int_eq(real.log_level, AM2Z_LOG_DEBUG);
}
END_TEST

START_TEST(test_config_string_too_long)
{
    char err[AM2Z_CFG_ERR_MAX];
    s_cfg_t cfg = s_fresh();
    ck_assert_int_eq(am2z_cfg_set(s_table, &cfg, "name", "1234567", NULL, err, sizeof err),
                     AM2Z_OK);
    ck_assert_str_eq(cfg.name, "1234567");
    ck_assert_int_eq(am2z_cfg_set(s_table, &cfg, "name", "12345678", "--name", err, sizeof err),
                     AM2Z_ECONFIG);
    ck_assert_str_eq(err, "--name: value is 8 bytes long; at most 7 allowed");
    ck_assert_str_eq(cfg.name, "1234567");

    am2z_config_t real;
    am2z_config_defaults(&real);
    char *path = malloc(AM2Z_PATH_MAX + 1);
    memset(path, 'p', AM2Z_PATH_MAX);
    path[AM2Z_PATH_MAX] = '\0';
    ck_assert_int_eq(am2z_cfg_set(am2z_config_table, &real, "data_dir", path, NULL,
                                  err, sizeof err), AM2Z_ECONFIG);
    path[AM2Z_PATH_MAX - 1] = '\0';
    ck_assert_int_eq(am2z_cfg_set(am2z_config_table, &real, "data_dir", path, NULL,
                                  err, sizeof err), AM2Z_OK);
    ck_assert_str_eq(real.data_dir, path);
    free(path);
}
END_TEST

START_TEST(test_config_kebab_or_snake_names)
{
    char err[AM2Z_CFG_ERR_MAX];
    am2z_config_t cfg;
    am2z_config_defaults(&cfg);
    ck_assert_int_eq(am2z_cfg_set(am2z_config_table, &cfg, "max_frame_size", "8MiB", NULL,
                                  err, sizeof err), AM2Z_OK);
    ck_assert_uint_eq(cfg.max_frame_size, (uint64_t)8 << 20);
    char *argv[] = { "p", "--max_frame_size=16MiB", "--log_format", "json", NULL };
    ck_assert_int_eq(am2z_cfg_parse_args(am2z_config_table, &cfg, 4, argv, NULL,
                                         err, sizeof err), AM2Z_OK);
    ck_assert_uint_eq(cfg.max_frame_size, (uint64_t)16 << 20);
    ck_assert_int_eq(cfg.log_format, AM2Z_LOG_JSON);
}
END_TEST

START_TEST(test_config_file_syntax)
{
    char path[1024];
    s_write_file("\n"
                 "   # indented comment\n"
                 "data-dir = \"/srv/my data # 1\"   # trailing comment\n"
                 "map-size 2GiB\n"
                 "durability=periodic# not a comment start\n", path, sizeof path);
    char err[AM2Z_CFG_ERR_MAX];
    am2z_config_t cfg;
    am2z_config_defaults(&cfg);
    ck_assert_int_eq(am2z_cfg_load_file(am2z_config_table, &cfg, path, err, sizeof err),
                     AM2Z_ECONFIG);
    ck_assert_msg(s_ends_with(err, ":5: durability: 'periodic# not a comment start' is not"
                              " one of: sync, periodic"), "err: %s", err);

    s_write_file("data-dir = \"/srv/my data # 1\"   # trailing comment\n"
                 "map-size 2GiB\r\n"
                 "durability=periodic # comment\n"
                 "log-level = warn\n", path, sizeof path);
    am2z_config_defaults(&cfg);
    ck_assert_int_eq(am2z_cfg_load_file(am2z_config_table, &cfg, path, err, sizeof err),
                     AM2Z_OK);
    ck_assert_str_eq(cfg.data_dir, "/srv/my data # 1");
    ck_assert_uint_eq(cfg.map_size, (uint64_t)2 << 30);
    ck_assert_int_eq(cfg.durability, AM2Z_DURABILITY_PERIODIC);
    ck_assert_int_eq(cfg.log_level, AM2Z_LOG_WARN);

    static const struct { const char *text; const char *msg; } broken[] = {
        { "map-size\n", ":1: map-size: missing value" },
        { "data-dir = \"/open\n", ":1: data-dir: unterminated quote" },
        { "data-dir = \"/a\" b\n", ":1: data-dir: unexpected text after the quoted value" },
        { "[section]\n", ":1: expected 'name = value'" },
        { "map.size = 1\n", ":1: expected 'name = value'" },
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        s_write_file(broken[i].text, path, sizeof path);
        ck_assert_int_eq(am2z_cfg_load_file(am2z_config_table, &cfg, path, err, sizeof err),
                         AM2Z_ECONFIG);
        ck_assert_msg(s_ends_with(err, broken[i].msg), "'%s' gave: %s", broken[i].text, err);
    }
}
END_TEST

START_TEST(test_config_missing_file_is_io_error)
{
    char err[AM2Z_CFG_ERR_MAX];
    am2z_config_t cfg;
    char *argv[] = { "p", "--config", "/nonexistent/am2z.conf", NULL };
    ck_assert_int_eq(am2z_cfg_load(am2z_config_table, &cfg, 3, argv, NULL, NULL,
                                   err, sizeof err), AM2Z_EIO);
    ck_assert_str_eq(err, "/nonexistent/am2z.conf: cannot open: No such file or directory");
}
END_TEST

START_TEST(test_config_help_flag_sets_help)
{
    char err[AM2Z_CFG_ERR_MAX];
    am2z_config_t cfg;
    am2z_cfg_args_t args = { 0 };
    char *argv[] = { "p", "-h", NULL };
    char *envp[] = { "AM2Z_CONFIG=/nonexistent/am2z.conf", NULL };
    ck_assert_int_eq(am2z_cfg_load(am2z_config_table, &cfg, 2, argv, envp, &args,
                                   err, sizeof err), AM2Z_OK);
    ck_assert(args.help);
    char *argv2[] = { "p", "--help", NULL };
    ck_assert_int_eq(am2z_cfg_parse_args(am2z_config_table, &cfg, 2, argv2, &args,
                                         err, sizeof err), AM2Z_OK);
    ck_assert(args.help);
    char *argv3[] = { "p", NULL };
    ck_assert_int_eq(am2z_cfg_parse_args(am2z_config_table, &cfg, 1, argv3, &args,
                                         err, sizeof err), AM2Z_OK);
    ck_assert(!args.help);
}
END_TEST

START_TEST(test_config_double_dash_ends_flags)
{
    char err[AM2Z_CFG_ERR_MAX];
    am2z_config_t cfg;
    am2z_config_defaults(&cfg);
    char *positional[6];
    am2z_cfg_args_t args = { .positional = positional };
    char *argv[] = { "p", "-", "--durability", "periodic", "--", "--map-size", NULL };
    ck_assert_int_eq(am2z_cfg_parse_args(am2z_config_table, &cfg, 6, argv, &args,
                                         err, sizeof err), AM2Z_OK);
    ck_assert_int_eq(cfg.durability, AM2Z_DURABILITY_PERIODIC);
    ck_assert_int_eq(args.npositional, 2);
    ck_assert_str_eq(positional[0], "-");
    ck_assert_str_eq(positional[1], "--map-size");

    char *argv2[] = { "p", "--map-size", NULL };
    ck_assert_int_eq(am2z_cfg_parse_args(am2z_config_table, &cfg, 2, argv2, &args,
                                         err, sizeof err), AM2Z_ECONFIG);
    ck_assert_str_eq(err, "--map-size: missing value");
}
END_TEST

/*  AM2Z_CFG_US: microseconds, a bare number is µs; bounds print in µs. */
START_TEST(test_config_us_suffixes)
{
    static const struct { const char *text; uint64_t us; } ok[] = {
        { "250", 250 }, { "250us", 250 }, { "2ms", 2000 }, { "0", 0 }, { "10 us", 10 },
        { "10000us", 10000 },
    };
    static const char *const bad[] = { "1US", "1.5ms", "us", "5 usec", "1m", "-1" };
    char err[AM2Z_CFG_ERR_MAX], text[32];
    s_cfg_t cfg = s_fresh();
    ck_assert_uint_eq(cfg.spin, 300);
    ck_assert_int_eq(am2z_cfg_get(s_table, &cfg, "spin", text, sizeof text), AM2Z_OK);
    ck_assert_str_eq(text, "300us");
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        cfg = s_fresh();
        ck_assert_msg(am2z_cfg_set(s_table, &cfg, "spin", ok[i].text, NULL, err, sizeof err)
                      == AM2Z_OK, "%s: %s", ok[i].text, err);
        ck_assert_uint_eq(cfg.spin, ok[i].us);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cfg = s_fresh();
        ck_assert_msg(am2z_cfg_set(s_table, &cfg, "spin", bad[i], NULL, err, sizeof err)
                      == AM2Z_ECONFIG, "accepted '%s'", bad[i]);
        ck_assert_ptr_nonnull(strstr(err, "is not a duration"));
    }
    cfg = s_fresh();
    ck_assert_int_eq(am2z_cfg_set(s_table, &cfg, "spin", "11ms", NULL, err, sizeof err),
                     AM2Z_ECONFIG);
    ck_assert_ptr_nonnull(strstr(err, "out of range (0us..10000us)"));
}
END_TEST

START_TEST(test_config_get_round_trips)
{
    char err[AM2Z_CFG_ERR_MAX], text[AM2Z_PATH_MAX];
    am2z_config_t cfg, copy;
    am2z_config_defaults(&cfg);
    cfg.map_size = 1000 * 1000;     /* not a multiple of a binary unit */
    cfg.durability = AM2Z_DURABILITY_PERIODIC;
    memset(&copy, 0, sizeof copy);
    for (const am2z_cfg_def_t *def = am2z_config_table; def->name; def++) {
        ck_assert_int_eq(am2z_cfg_get(am2z_config_table, &cfg, def->name, text, sizeof text),
                         AM2Z_OK);
        ck_assert_msg(am2z_cfg_set(am2z_config_table, &copy, def->name, text, NULL,
                                   err, sizeof err) == AM2Z_OK, "%s", err);
    }
    ck_assert_mem_eq(&copy, &cfg, sizeof cfg);

    ck_assert_int_eq(am2z_cfg_get(am2z_config_table, &cfg, "map-size", text, sizeof text), AM2Z_OK);
    ck_assert_str_eq(text, "1000000");
    ck_assert_int_eq(am2z_cfg_get(am2z_config_table, &cfg, "max-frame-size", text, sizeof text),
                     AM2Z_OK);
    ck_assert_str_eq(text, "4MiB");
    ck_assert_int_eq(am2z_cfg_get(am2z_config_table, &cfg, "flush-interval", text, sizeof text),
                     AM2Z_OK);
    ck_assert_str_eq(text, "100ms");
    ck_assert_int_eq(am2z_cfg_get(am2z_config_table, &cfg, "durability", text, sizeof text),
                     AM2Z_OK);
    ck_assert_str_eq(text, "periodic");
    ck_assert_int_eq(am2z_cfg_get(am2z_config_table, &cfg, "durability", text, 4),
                     AM2Z_ERESOURCE);
    ck_assert_int_eq(am2z_cfg_get(am2z_config_table, &cfg, "nope", text, sizeof text),
                     AM2Z_ENOTFOUND);
}
END_TEST

START_TEST(test_config_help_lists_every_setting)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    ck_assert_ptr_nonnull(out);
    am2z_cfg_print_help(am2z_config_table, out);
    fclose(out);

    ck_assert_ptr_nonnull(strstr(buf, "--config FILE"));
    ck_assert_ptr_nonnull(strstr(buf, "AM2Z_CONFIG"));
    ck_assert_ptr_nonnull(strstr(buf, "--help"));
    long help_column = -1;
    for (const am2z_cfg_def_t *def = am2z_config_table; def->name; def++) {
        char flag[96], env[96];
        snprintf(flag, sizeof flag, "  --%s ", def->name);
        snprintf(env, sizeof env, "[AM2Z_");
        for (const char *c = def->name; *c; c++) {
            char up[2] = { *c == '-' ? '_' : (char)(*c - 'a' + 'A'), '\0' };
            if (*c >= '0' && *c <= '9')
                up[0] = *c;
            strcat(env, up);
        }
        strcat(env, "]");
        const char *line = strstr(buf, flag);
        ck_assert_msg(line != NULL, "no %s in help:\n%s", flag, buf);
        const char *eol = strchr(line, '\n');
        ck_assert_ptr_nonnull(eol);
        const char *found_env = strstr(line, env);
        ck_assert_msg(found_env && found_env < eol, "no %s on the %s line", env, def->name);
        const char *found_default = strstr(line, def->default_value);
        ck_assert_msg(found_default && found_default < eol, "no default on the %s line",
                      def->name);
        const char *found_help = strstr(line, def->help);
        ck_assert_msg(found_help && found_help < eol, "no help on the %s line", def->name);
        /* descriptions start in one column */
        if (help_column < 0)
            help_column = found_help - line;
        ck_assert_int_eq(found_help - line, help_column);
    }
    free(buf);
}
END_TEST

/*  --cpus (am2z_sys_set_cpus): the daemons' CPU placement. Bad lists are
    refused by name and change nothing; a good one confines this thread
    (Check forks every case, so the affinity ends with it). */
START_TEST(test_config_cpus_list)
{
    cpu_set_t before, after;
    ck_assert_int_eq(sched_getaffinity(0, sizeof before, &before), 0);
    char err[256];
    const char *bad[] = { "x", "0,", "-1", "1-0", "0;1", "0-", "99999", "0 1", NULL };
    for (int i = 0; bad[i]; i++) {
        err[0] = '\0';
        ck_assert_int_eq(am2z_sys_set_cpus(bad[i], err, sizeof err), AM2Z_ECONFIG);
        ck_assert_msg(strstr(err, "cpus '") != NULL, "%s: %s", bad[i], err);
    }
    /* a CPU this process may not use (one past the highest allowed) */
    int top = -1;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &before))
            top = c;
    char beyond[16];
    snprintf(beyond, sizeof beyond, "%d", top + 1);
    ck_assert_int_eq(am2z_sys_set_cpus(beyond, err, sizeof err), AM2Z_ECONFIG);
    ck_assert_msg(strstr(err, "not available") != NULL, "%s", err);
    ck_assert_int_eq(sched_getaffinity(0, sizeof after, &after), 0);
    ck_assert(CPU_EQUAL(&before, &after));
    ck_assert_int_eq(am2z_sys_set_cpus("", err, sizeof err), AM2Z_OK);
    ck_assert_int_eq(am2z_sys_set_cpus(NULL, NULL, 0), AM2Z_OK);
    /* the highest allowed CPU alone, then as a range with itself */
    char one[32];
    snprintf(one, sizeof one, "%d", top);
    ck_assert_int_eq(am2z_sys_set_cpus(one, err, sizeof err), AM2Z_OK);
    ck_assert_int_eq(sched_getaffinity(0, sizeof after, &after), 0);
    ck_assert_int_eq(CPU_COUNT(&after), 1);
    ck_assert(CPU_ISSET(top, &after));
    snprintf(one, sizeof one, "%d-%d,%d", top, top, top);
    ck_assert_int_eq(am2z_sys_set_cpus(one, err, sizeof err), AM2Z_OK);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_config_defaults_table_valid);
    tcase_add_test(tc, test_config_bad_table_is_reported_by_name);
    tcase_add_test(tc, test_config_flag_beats_env_beats_file);
    tcase_add_test(tc, test_config_rejects_bad_size_by_name);
    tcase_add_test(tc, test_config_unknown_file_key_is_error);
    tcase_add_test(tc, test_config_unknown_flag_is_error);
    tcase_add_test(tc, test_config_bounds_checked);
    tcase_add_test(tc, test_config_size_suffixes);
    tcase_add_test(tc, test_config_ms_suffixes);
    tcase_add_test(tc, test_config_us_suffixes);
    tcase_add_test(tc, test_config_uint_overflow_detected);
    tcase_add_test(tc, test_config_bool_words);
    tcase_add_test(tc, test_config_enum_names);
    tcase_add_test(tc, test_config_string_too_long);
    tcase_add_test(tc, test_config_kebab_or_snake_names);
    tcase_add_test(tc, test_config_file_syntax);
    tcase_add_test(tc, test_config_missing_file_is_io_error);
    tcase_add_test(tc, test_config_help_flag_sets_help);
    tcase_add_test(tc, test_config_double_dash_ends_flags);
    tcase_add_test(tc, test_config_get_round_trips);
    tcase_add_test(tc, test_config_help_lists_every_setting);
    tcase_add_test(tc, test_config_cpus_list);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
