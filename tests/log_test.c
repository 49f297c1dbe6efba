/*  log_test.c — Check suite "log": levels, text and JSON line formats. */
#include "am2z_error.h"
#include "am2z_log.h"
#include "am2z_testutil.h"

#include <jansson.h>
#include <pthread.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

/*  A logger writing into memory; s_capture_text() returns what was written
    so far (owned by the capture). */
typedef struct {
    char *buf;
    size_t len;
    FILE *stream;
    am2z_log_t *log;
} s_capture_t;

static void
s_capture_open(s_capture_t *cap, am2z_log_level_t level, am2z_log_format_t format)
{
    memset(cap, 0, sizeof *cap);
    cap->stream = open_memstream(&cap->buf, &cap->len);
    ck_assert_ptr_nonnull(cap->stream);
    cap->log = am2z_log_new(level, format, cap->stream);
    ck_assert_ptr_nonnull(cap->log);
}

static const char *
s_capture_text(s_capture_t *cap)
{
    fflush(cap->stream);
    return cap->buf ? cap->buf : "";
}

static void
s_capture_close(s_capture_t *cap)
{
    am2z_log_destroy(&cap->log);
    fclose(cap->stream);
    free(cap->buf);
}

static size_t
s_count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/*  The line after the timestamp and a space (timestamps are not fixed). */
static const char *
s_after_ts(const char *line)
{
    const char *sp = strchr(line, ' ');
    ck_assert_ptr_nonnull(sp);
    return sp + 1;
}

START_TEST(test_log_skips_below_threshold)
{
    s_capture_t cap;
    s_capture_open(&cap, AM2Z_LOG_WARN, AM2Z_LOG_TEXT);
    AM2Z_LOG(cap.log, AM2Z_LOG_INFO, "store", "hidden");
    AM2Z_LOG(cap.log, AM2Z_LOG_DEBUG, "store", "hidden");
    ck_assert_str_eq(s_capture_text(&cap), "");
    AM2Z_LOG(cap.log, AM2Z_LOG_WARN, "store", "shown");
    AM2Z_LOG(cap.log, AM2Z_LOG_ERROR, "store", "shown");
    ck_assert_uint_eq(s_count_lines(s_capture_text(&cap)), 2);

    ck_assert(!am2z_log_enabled(cap.log, AM2Z_LOG_OFF));
    am2z_log_set_level(cap.log, AM2Z_LOG_TRACE);
    ck_assert_int_eq(am2z_log_level(cap.log), AM2Z_LOG_TRACE);
    AM2Z_LOG(cap.log, AM2Z_LOG_TRACE, "store", "now shown");
    ck_assert_uint_eq(s_count_lines(s_capture_text(&cap)), 3);

    am2z_log_set_level(cap.log, AM2Z_LOG_OFF);
    AM2Z_LOG(cap.log, AM2Z_LOG_ERROR, "store", "off means off");
    ck_assert_uint_eq(s_count_lines(s_capture_text(&cap)), 3);
    s_capture_close(&cap);
}
END_TEST

static int s_evaluations;

static const char *
s_expensive(void)
{
    s_evaluations++;
    return "value";
}

START_TEST(test_log_level_checked_before_formatting)
{
    s_capture_t cap;
    s_capture_open(&cap, AM2Z_LOG_INFO, AM2Z_LOG_TEXT);
    s_evaluations = 0;
    AM2Z_LOG(cap.log, AM2Z_LOG_DEBUG, "c", "m", AM2Z_KS("k", s_expensive()));
    ck_assert_int_eq(s_evaluations, 0);
    AM2Z_LOG(cap.log, AM2Z_LOG_INFO, "c", "m", AM2Z_KS("k", s_expensive()));
    ck_assert_int_eq(s_evaluations, 1);
    s_capture_close(&cap);
}
END_TEST

START_TEST(test_log_null_logger_logs_nothing)
{
    am2z_log_t *log = NULL;
    ck_assert(!am2z_log_enabled(log, AM2Z_LOG_ERROR));
    AM2Z_LOG(log, AM2Z_LOG_ERROR, "c", "m", AM2Z_KI("n", 1));
    am2z_log_emit(NULL, AM2Z_LOG_ERROR, "c", "m", NULL, 0);
    am2z_log_set_level(NULL, AM2Z_LOG_TRACE);
    ck_assert_int_eq(am2z_log_level(NULL), AM2Z_LOG_OFF);
    am2z_log_destroy(&log);
    am2z_log_destroy(NULL);

    log = am2z_log_new(AM2Z_LOG_INFO, AM2Z_LOG_TEXT, NULL);
    ck_assert_ptr_nonnull(log);
    am2z_log_destroy(&log);
    ck_assert_ptr_null(log);
    am2z_log_destroy(&log);
}
END_TEST

START_TEST(test_log_text_line_format)
{
    s_capture_t cap;
    s_capture_open(&cap, AM2Z_LOG_INFO, AM2Z_LOG_TEXT);
    AM2Z_LOG(cap.log, AM2Z_LOG_INFO, "store", "opened",
             AM2Z_KS("path", "./am2z-data"), AM2Z_KU("n", 3));
    const char *out = s_capture_text(&cap);
    regex_t re;
    ck_assert_int_eq(regcomp(&re,
        "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
        "INFO  store: opened path=\\./am2z-data n=3\n$", REG_EXTENDED), 0);
    ck_assert_msg(regexec(&re, out, 0, NULL, 0) == 0, "got: %s", out);
    regfree(&re);
    s_capture_close(&cap);

    s_capture_open(&cap, AM2Z_LOG_TRACE, AM2Z_LOG_TEXT);
    AM2Z_LOG(cap.log, AM2Z_LOG_ERROR, "broker", "typed",
             AM2Z_KI("i", -42), AM2Z_KB("ok", true), AM2Z_KD("d", 1.5),
             AM2Z_KS("none", NULL), AM2Z_KU("big", UINT64_MAX));
    ck_assert_str_eq(s_after_ts(s_capture_text(&cap)),
                     "ERROR broker: typed i=-42 ok=true d=1.5 none=null"
                     " big=18446744073709551615\n");
    s_capture_close(&cap);

    s_capture_open(&cap, AM2Z_LOG_TRACE, AM2Z_LOG_TEXT);
    AM2Z_LOG(cap.log, AM2Z_LOG_TRACE, "broker", "no key/values");
    ck_assert_str_eq(s_after_ts(s_capture_text(&cap)), "TRACE broker: no key/values\n");
    s_capture_close(&cap);
}
END_TEST

START_TEST(test_log_text_quotes_values_with_spaces)
{
    s_capture_t cap;
    s_capture_open(&cap, AM2Z_LOG_INFO, AM2Z_LOG_TEXT);
    AM2Z_LOG(cap.log, AM2Z_LOG_INFO, "c", "m",
             AM2Z_KS("path", "my dir"), AM2Z_KS("q", "say \"hi\""),
             AM2Z_KS("eq", "a=b"), AM2Z_KS("empty", ""),
             AM2Z_KS("nl", "two\nlines"), AM2Z_KS("word", "null"),
             AM2Z_KS("plain", "a/b:c"));
    const char *line = s_after_ts(s_capture_text(&cap));
    ck_assert_str_eq(line,
        "INFO  c: m path=\"my dir\" q=\"say \\\"hi\\\"\" eq=\"a=b\" empty=\"\""
        " nl=\"two\\nlines\" word=\"null\" plain=a/b:c\n");
    s_capture_close(&cap);
}
END_TEST

START_TEST(test_log_text_message_stays_on_one_line)
{
    s_capture_t cap;
    s_capture_open(&cap, AM2Z_LOG_INFO, AM2Z_LOG_TEXT);
    AM2Z_LOG(cap.log, AM2Z_LOG_INFO, "c\n", "forged\n2026-01-01T00:00:00.000Z ERROR x: y");
    ck_assert_uint_eq(s_count_lines(s_capture_text(&cap)), 1);
    ck_assert_ptr_nonnull(strstr(s_capture_text(&cap), "forged\\n2026"));
    s_capture_close(&cap);
}
END_TEST

START_TEST(test_log_json_line_parses)
{
    s_capture_t cap;
    s_capture_open(&cap, AM2Z_LOG_INFO, AM2Z_LOG_JSON);
    AM2Z_LOG(cap.log, AM2Z_LOG_WARN, "store", "opened",
             AM2Z_KS("path", "my \"dir\"\n"), AM2Z_KU("n", 3), AM2Z_KI("neg", -7),
             AM2Z_KB("ok", true), AM2Z_KD("ratio", 0.25), AM2Z_KS("none", NULL),
             AM2Z_KS("msg", "shadow"));
    const char *out = s_capture_text(&cap);
    ck_assert_uint_eq(s_count_lines(out), 1);

    json_error_t jerr;
    json_t *obj = json_loads(out, 0, &jerr);
    ck_assert_msg(obj != NULL, "not JSON (%s): %s", jerr.text, out);
    ck_assert(json_is_object(obj));
    const char *ts = json_string_value(json_object_get(obj, "ts"));
    ck_assert_ptr_nonnull(ts);
    ck_assert_uint_eq(strlen(ts), strlen("2026-11-22T09:00:00.123Z"));
    ck_assert_int_eq(ts[strlen(ts) - 1], 'Z');
    ck_assert_str_eq(json_string_value(json_object_get(obj, "level")), "warn");
    ck_assert_str_eq(json_string_value(json_object_get(obj, "component")), "store");
    ck_assert_str_eq(json_string_value(json_object_get(obj, "msg")), "opened");
    ck_assert_str_eq(json_string_value(json_object_get(obj, "path")), "my \"dir\"\n");
    ck_assert_int_eq(json_integer_value(json_object_get(obj, "n")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(obj, "neg")), -7);
    ck_assert(json_is_true(json_object_get(obj, "ok")));
    ck_assert(json_real_value(json_object_get(obj, "ratio")) == 0.25);
    ck_assert(json_is_null(json_object_get(obj, "none")));
    ck_assert_str_eq(json_string_value(json_object_get(obj, "_msg")), "shadow");

    /* fixed fields come first, in order */
    const char *order[] = { "ts", "level", "component", "msg" };
    const char *key;
    json_t *value;
    size_t i = 0;
    json_object_foreach(obj, key, value) {
        (void)value;
        if (i < 4)
            ck_assert_str_eq(key, order[i]);
        i++;
    }
    json_decref(obj);
    s_capture_close(&cap);
}
END_TEST

START_TEST(test_log_json_repairs_invalid_utf8)
{
    s_capture_t cap;
    s_capture_open(&cap, AM2Z_LOG_INFO, AM2Z_LOG_JSON);
    AM2Z_LOG(cap.log, AM2Z_LOG_INFO, "c", "bad \xff byte",
             AM2Z_KS("v", "caf\xc3\xa9 \xc3"), AM2Z_KD("nan", 0.0 / 0.0));
    json_t *obj = json_loads(s_capture_text(&cap), 0, NULL);
    ck_assert_ptr_nonnull(obj);
    ck_assert_str_eq(json_string_value(json_object_get(obj, "msg")),
                     "bad \xef\xbf\xbd byte");
    ck_assert_str_eq(json_string_value(json_object_get(obj, "v")),
                     "caf\xc3\xa9 \xef\xbf\xbd");
    ck_assert(json_is_null(json_object_get(obj, "nan")));
    json_decref(obj);
    s_capture_close(&cap);
}
END_TEST

START_TEST(test_log_long_line_written_whole)
{
    char *big = malloc(20000);
    ck_assert_ptr_nonnull(big);
    memset(big, 'x', 19999);
    big[19999] = '\0';
    for (int f = AM2Z_LOG_TEXT; f <= AM2Z_LOG_JSON; f++) {
        s_capture_t cap;
        s_capture_open(&cap, AM2Z_LOG_INFO, (am2z_log_format_t)f);
        AM2Z_LOG(cap.log, AM2Z_LOG_INFO, "c", "m", AM2Z_KS("big", big));
        const char *out = s_capture_text(&cap);
        ck_assert_uint_eq(s_count_lines(out), 1);
        ck_assert_ptr_nonnull(strstr(out, big));
        s_capture_close(&cap);
    }
    free(big);
}
END_TEST

#define S_THREADS 4
#define S_LINES_PER_THREAD 300

static void *
s_writer(void *arg)
{
    am2z_log_t *log = arg;
    for (int i = 0; i < S_LINES_PER_THREAD; i++)
        AM2Z_LOG(log, AM2Z_LOG_INFO, "thread", "tick", AM2Z_KI("i", i),
                 AM2Z_KS("pad", "abcdefghijklmnopqrstuvwxyz0123456789"));
    return NULL;
}

START_TEST(test_log_lines_do_not_interleave_across_threads)
{
    /* A real file rather than a memstream: glibc grows a memstream's buffer
       inside fwrite, which ThreadSanitizer reports as a race because it
       cannot see glibc's stream lock. */
    FILE *file = tmpfile();
    ck_assert_ptr_nonnull(file);
    am2z_log_t *log = am2z_log_new(AM2Z_LOG_INFO, AM2Z_LOG_JSON, file);
    pthread_t threads[S_THREADS];
    for (int t = 0; t < S_THREADS; t++)
        ck_assert_int_eq(pthread_create(&threads[t], NULL, s_writer, log), 0);
    for (int t = 0; t < S_THREADS; t++)
        pthread_join(threads[t], NULL);
    am2z_log_destroy(&log);

    long size = ftell(file);
    ck_assert_int_gt(size, 0);
    char *copy = calloc(1, (size_t)size + 1);
    rewind(file);
    ck_assert_uint_eq(fread(copy, 1, (size_t)size, file), (size_t)size);
    fclose(file);
    size_t lines = 0;
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_t *obj = json_loads(line, 0, NULL);
        ck_assert_msg(obj != NULL, "broken line: %s", line);
        json_decref(obj);
        lines++;
    }
    ck_assert_uint_eq(lines, S_THREADS * S_LINES_PER_THREAD);
    free(copy);
}
END_TEST

START_TEST(test_log_names_parse)
{
    for (int l = AM2Z_LOG_TRACE; l <= AM2Z_LOG_OFF; l++) {
        am2z_log_level_t back;
        ck_assert_int_eq(am2z_log_level_parse(am2z_log_level_name(l), &back), AM2Z_OK);
        ck_assert_int_eq(back, l);
    }
    am2z_log_level_t level;
    ck_assert_int_eq(am2z_log_level_parse("verbose", &level), AM2Z_EINVAL);
    ck_assert_int_eq(am2z_log_level_parse(NULL, &level), AM2Z_EINVAL);
    ck_assert_str_eq(am2z_log_level_name((am2z_log_level_t)99), "unknown");

    am2z_log_format_t format;
    ck_assert_int_eq(am2z_log_format_parse("json", &format), AM2Z_OK);
    ck_assert_int_eq(format, AM2Z_LOG_JSON);
    ck_assert_int_eq(am2z_log_format_parse("text", &format), AM2Z_OK);
    ck_assert_int_eq(format, AM2Z_LOG_TEXT);
    ck_assert_int_eq(am2z_log_format_parse("xml", &format), AM2Z_EINVAL);
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_log_skips_below_threshold);
    tcase_add_test(tc, test_log_level_checked_before_formatting);
    tcase_add_test(tc, test_log_null_logger_logs_nothing);
    tcase_add_test(tc, test_log_text_line_format);
    tcase_add_test(tc, test_log_text_quotes_values_with_spaces);
    tcase_add_test(tc, test_log_text_message_stays_on_one_line);
    tcase_add_test(tc, test_log_json_line_parses);
    tcase_add_test(tc, test_log_json_repairs_invalid_utf8);
    tcase_add_test(tc, test_log_long_line_written_whole);
    tcase_add_test(tc, test_log_lines_do_not_interleave_across_threads);
    tcase_add_test(tc, test_log_names_parse);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
