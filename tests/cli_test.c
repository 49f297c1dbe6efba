/*  cli_test.c — Check suite "cli": the `am2z` command against a real
    am2z-broker and am2z-example-worker on 127.0.0.1 ephemeral ports. */
#include "am2z_clock.h"
#include "am2z_cluster.h"
#include "am2z_testproc.h"
#include "am2z_testutil.h"

#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static am2z_cluster_t s_cl;
static char s_out[65536];

/*  Runs `am2z ARGS... --broker FRONTEND` (when with_broker) and returns its
    exit code, output in s_out. */
static int
s_am2z(bool with_broker, const char *a0, const char *a1, const char *a2,
       const char *a3, const char *a4, const char *a5)
{
    char *argv[16];
    int n = 0;
    argv[n++] = AM2Z_BIN;
    const char *args[] = { a0, a1, a2, a3, a4, a5 };
    for (size_t i = 0; i < 6 && args[i]; i++)
        argv[n++] = (char *)args[i];
    if (with_broker) {
        argv[n++] = "--broker";
        argv[n++] = s_cl.frontend;
    }
    argv[n] = NULL;
    return am2z_testproc_run(argv, s_out, sizeof s_out, 30000);
}

/*  Like s_am2z with any number of arguments (NULL-terminated), always with
    --broker. */
static int
s_am2z_argv(const char *const *args)
{
    return am2z_cluster_cli(&s_cl, args, s_out, sizeof s_out);
}

/*  Like s_am2z_argv, with am2z's stderr in s_out too (after its stdout):
    for the text of a usage error. */
static int
s_am2z_stderr(const char *const *args)
{
    char *argv[40];
    int n = 0;
    argv[n++] = "/bin/sh";
    argv[n++] = "-c";
    argv[n++] = "exec \"$0\" \"$@\" 2>&1";
    argv[n++] = AM2Z_BIN;
    for (size_t i = 0; args[i] && n < 36; i++)
        argv[n++] = (char *)args[i];
    argv[n++] = "--broker";
    argv[n++] = s_cl.frontend;
    argv[n] = NULL;
    return am2z_testproc_run(argv, s_out, sizeof s_out, 30000);
}

static json_t *
s_json(void)
{
    json_error_t jerr;
    json_t *j = json_loads(s_out, JSON_DISABLE_EOF_CHECK, &jerr);
    ck_assert_msg(j != NULL, "not JSON (%s): %s", jerr.text, s_out);
    return j;
}

/*  No heartbeat flag here: broker and worker run on their defaults. */
static const char *const s_flags[] = { "--log-level", "warn", NULL };

/*  An unchecked fixture (runs in Check's parent): no ZeroMQ here, so the
    worker's registration is awaited through `am2z stats`. */
static void
s_setup(void)
{
    s_cl.flags = s_flags;
    am2z_cluster_start_broker(&s_cl, "cli", NULL);
    am2z_cluster_add_worker(&s_cl, NULL);
    am2z_cluster_wait_workers_cli(&s_cl, 1);
}

/*  Stops worker and broker; does not check the broker's exit status. */
static void
s_teardown(void)
{
    am2z_cluster_stop_workers(&s_cl);
    am2z_testproc_stop(&s_cl.broker, SIGTERM, 10000);
    am2z_test_rmtree(s_cl.dir);
}

START_TEST(test_cli_execute_prints_result_json)
{
    ck_assert_int_eq(s_am2z(true, "execute", "increment", "--session", "cli-1",
                            "--state", "{\"count\": 41}"), 0);
    json_t *j = s_json();
    ck_assert(json_is_true(json_object_get(j, "success")));
    json_t *state = json_object_get(j, "state");
    ck_assert_int_eq(json_integer_value(json_object_get(state, "count")), 42);
    json_t *meta = json_object_get(state, "metadata");
    ck_assert_int_eq(json_integer_value(json_object_get(meta, "version")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(meta, "sessionId")), "cli-1");
    ck_assert_str_eq(json_string_value(json_object_get(j, "processor")), "increment");
    json_decref(j);

    /* continues from the stored state without --state */
    ck_assert_int_eq(s_am2z(true, "execute", "increment", "--session", "cli-1", NULL, NULL), 0);
    j = s_json();
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "state"), "count")), 43);
    json_decref(j);
}
END_TEST

START_TEST(test_cli_execute_failure_exits_1_with_error_json)
{
    ck_assert_int_eq(s_am2z(true, "execute", "fail", "--session", "cli-2",
                            "--state", "{\"category\": \"business\"}"), 1);
    json_t *j = s_json();
    ck_assert(json_is_false(json_object_get(j, "success")));
    json_t *err = json_object_get(j, "error");
    ck_assert_str_eq(json_string_value(json_object_get(err, "category")), "business");
    json_decref(j);
    ck_assert_int_eq(s_am2z(true, "execute", "no-such", "--session", "cli-2", NULL, NULL), 1);
    j = s_json();
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "kind")),
                     "ProcessorNotFoundError");
    json_decref(j);
}
END_TEST

START_TEST(test_cli_usage_and_connection_errors_exit_2)
{
    ck_assert_int_eq(s_am2z(false, "execute", NULL, NULL, NULL, NULL, NULL), 2);
    ck_assert_int_eq(s_am2z(false, "frobnicate", NULL, NULL, NULL, NULL, NULL), 2);
    ck_assert_int_eq(s_am2z(true, "execute", "increment", "--session", "cli-3",
                            "--state", "{not json"), 2);
    ck_assert_int_eq(s_am2z(true, "execute", "increment", "--session", "bad id!", NULL, NULL), 2);
    /* nothing listens on this port: a clear error after the timeout */
    ck_assert_int_eq(s_am2z(false, "stats", "--broker", "tcp://127.0.0.1:1", "--timeout", "300",
                            NULL), 2);
}
END_TEST

START_TEST(test_cli_every_command_has_help)
{
    const char *cmds[] = { "execute", "stats", "queues", "sessions", "state",
                           "stop-session", "events", "repeat" };
    ck_assert_int_eq(s_am2z(false, "--help", NULL, NULL, NULL, NULL, NULL), 0);
    ck_assert_ptr_nonnull(strstr(s_out, "execute"));
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        ck_assert_int_eq(s_am2z(false, cmds[i], "--help", NULL, NULL, NULL, NULL), 0);
        ck_assert_msg(strstr(s_out, cmds[i]) != NULL, "help of %s: %s", cmds[i], s_out);
    }
}
END_TEST

START_TEST(test_cli_queries_and_stop_session)
{
    ck_assert_int_eq(s_am2z(true, "execute", "increment", "--session", "cli-4",
                            "--state", "{\"count\": 1}"), 0);
    ck_assert_int_eq(s_am2z(true, "stats", NULL, NULL, NULL, NULL, NULL), 0);
    json_t *j = s_json();
    ck_assert_int_ge(json_integer_value(json_object_get(j, "completed")), 1);
    json_decref(j);
    ck_assert_int_eq(s_am2z(true, "queues", NULL, NULL, NULL, NULL, NULL), 0);
    j = s_json();
    ck_assert_ptr_nonnull(json_object_get(j, "increment"));
    json_decref(j);
    /* sessions: session-info maps (issue 6), scriptable JSON */
    ck_assert_int_eq(s_am2z(true, "sessions", NULL, NULL, NULL, NULL, NULL), 0);
    j = s_json();
    ck_assert(json_is_array(j));
    json_t *mine = NULL;
    for (size_t i = 0; i < json_array_size(j); i++) {
        const char *id = json_string_value(json_object_get(json_array_get(j, i), "id"));
        if (id && strcmp(id, "cli-4") == 0)
            mine = json_array_get(j, i);
    }
    ck_assert_msg(mine != NULL, "cli-4 not listed: %s", s_out);
    ck_assert_int_eq(json_integer_value(json_object_get(mine, "completed")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(mine, "failed")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(mine, "queued")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(mine, "running")), 0);
    ck_assert_int_gt(json_integer_value(json_object_get(mine, "created")), 0);
    ck_assert_int_ge(json_integer_value(json_object_get(mine, "lastActivity")),
                     json_integer_value(json_object_get(mine, "created")));
    json_decref(j);
    ck_assert_int_eq(s_am2z(true, "sessions", "--session", "cli-4", NULL, NULL, NULL), 0);
    j = s_json();
    ck_assert_str_eq(json_string_value(json_object_get(j, "id")), "cli-4");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "completed")), 1);
    json_decref(j);
    ck_assert_int_eq(s_am2z(true, "state", "cli-4", NULL, NULL, NULL, NULL), 0);
    j = s_json();
    ck_assert_int_eq(json_integer_value(json_object_get(j, "count")), 2);
    json_decref(j);
    ck_assert_int_eq(s_am2z(true, "stop-session", "cli-4", NULL, NULL, NULL, NULL), 0);
    ck_assert_int_ne(s_am2z(true, "state", "cli-4", NULL, NULL, NULL, NULL), 0);
    /* gone from session-info too: not_found exits 1 */
    ck_assert_int_eq(s_am2z(true, "sessions", "--session", "cli-4", NULL, NULL, NULL), 1);
    ck_assert_int_eq(s_am2z(true, "sessions", "--session", "bad id!", NULL, NULL, NULL), 2);
}
END_TEST

START_TEST(test_cli_events_prints_published_events)
{
    /* subscribe first, then run a job, then read what the subscriber printed */
    char *argv[] = { AM2Z_BIN, "events", "--filter", "processor:", "--count", "2",
                     "--events", s_cl.events, NULL };
    am2z_testproc_t sub;
    ck_assert_int_eq(am2z_testproc_start(&sub, argv), 0);
    /* PUB/SUB joins asynchronously: keep running jobs until lines arrive */
    int got = -1;
    for (int i = 0; i < 200 && got != 0; i++) {
        ck_assert_int_eq(s_am2z(true, "execute", "increment", "--session", "cli-5", NULL, NULL), 0);
        got = am2z_testproc_wait_line(&sub, "processor:", 50);
    }
    ck_assert_int_eq(got, 0);
    json_error_t jerr;
    json_t *j = json_loads(sub.line, 0, &jerr);
    ck_assert_msg(j != NULL, "event line is not JSON: %s", sub.line);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(j, "name")), "processor:"));
    json_decref(j);
    am2z_testproc_stop(&sub, SIGTERM, 5000);
}
END_TEST

/* queue controls (issue 6) --------------------------------------------- */

START_TEST(test_cli_repeat_create_list_cancel)
{
    char start[32];
    snprintf(start, sizeof start, "%llu",
             (unsigned long long)(am2z_clock_wall_ms() + 3600ull * 1000));
    const char *create[] = { "execute", "increment", "--session", "cli-r1", "--every", "1m",
                             "--limit", "4", "--start", start, NULL };
    ck_assert_int_eq(s_am2z_argv(create), 0);
    json_t *j = s_json();
    const char *id_text = json_string_value(json_object_get(j, "repeatId"));
    ck_assert_ptr_nonnull(id_text);
    char id[80];
    snprintf(id, sizeof id, "%s", id_text);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "every")), 60000);
    json_decref(j);

    const char *list[] = { "repeat", "list", "--session", "cli-r1", NULL };
    ck_assert_int_eq(s_am2z_argv(list), 0);
    j = s_json();
    ck_assert(json_is_array(j));
    ck_assert_uint_eq(json_array_size(j), 1);
    json_t *r = json_array_get(j, 0);
    ck_assert_str_eq(json_string_value(json_object_get(r, "repeatId")), id);
    ck_assert_str_eq(json_string_value(json_object_get(r, "processor")), "increment");
    ck_assert_int_eq(json_integer_value(json_object_get(r, "limit")), 4);
    ck_assert_int_eq(json_integer_value(json_object_get(r, "runs")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(r, "nextRunAt")),
                     (json_int_t)strtoull(start, NULL, 10));
    json_decref(j);

    const char *cancel[] = { "repeat", "cancel", id, NULL };
    ck_assert_int_eq(s_am2z_argv(cancel), 0);
    j = s_json();
    ck_assert(json_is_true(json_object_get(j, "cancelled")));
    json_decref(j);
    ck_assert_int_eq(s_am2z_argv(list), 0);
    j = s_json();
    ck_assert_uint_eq(json_array_size(j), 0);
    json_decref(j);
    ck_assert_int_eq(s_am2z_argv(cancel), 1);                 /* gone: not found */

    const char *bad_id[] = { "repeat", "cancel", "bad id!", NULL };
    const char *bad_op[] = { "repeat", "frobnicate", NULL };
    const char *extra[] = { "repeat", "list", "surplus", NULL };
    const char *no_every[] = { "execute", "increment", "--session", "cli-r1", "--limit", "3",
                               NULL };
    const char *bad_prio[] = { "execute", "increment", "--session", "cli-r1", "--priority",
                               "high", NULL };
    ck_assert_int_eq(s_am2z_argv(bad_id), 2);
    ck_assert_int_eq(s_am2z_argv(bad_op), 2);
    ck_assert_int_eq(s_am2z_argv(extra), 2);
    ck_assert_int_eq(s_am2z_argv(no_every), 2);
    ck_assert_int_eq(s_am2z_argv(bad_prio), 2);
    /* a schedule the broker refuses: exit 1 with the reason */
    const char *unknown[] = { "execute", "no-such", "--session", "cli-r1", "--every", "1s", NULL };
    ck_assert_int_eq(s_am2z_argv(unknown), 1);
}
END_TEST

START_TEST(test_cli_execute_idempotency_key_runs_once)
{
    const char *run[] = { "execute", "increment", "--session", "cli-i1", "--idempotency-key",
                          "cli-once", NULL };
    ck_assert_int_eq(s_am2z_argv(run), 0);
    json_t *j = s_json();
    char first[80];
    snprintf(first, sizeof first, "%s", json_string_value(json_object_get(j, "jobId")));
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "state"), "count")), 1);
    json_decref(j);
    /* again: the first job and its result; the processor did not run again */
    ck_assert_int_eq(s_am2z_argv(run), 0);
    j = s_json();
    ck_assert_str_eq(json_string_value(json_object_get(j, "jobId")), first);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "state"), "count")), 1);
    json_decref(j);
    ck_assert_int_eq(s_am2z(true, "state", "cli-i1", NULL, NULL, NULL, NULL), 0);
    j = s_json();
    ck_assert_int_eq(json_integer_value(json_object_get(j, "count")), 1);
    json_decref(j);
}
END_TEST

/*  Waits (bounded, 20 s) until `am2z sessions --session ID` shows
    `running` leased and `queued` waiting jobs in the session's lane. */
static void
s_wait_lane(const char *session, int64_t running, int64_t queued)
{
    uint64_t deadline = am2z_clock_mono_us() + 20 * 1000000ull;
    int64_t r = -1, q = -1;
    while (am2z_clock_mono_us() < deadline) {
        /* exit 1 while the broker does not know the session yet */
        if (s_am2z(true, "sessions", "--session", session, NULL, NULL, NULL) == 0) {
            json_t *j = s_json();
            r = json_integer_value(json_object_get(j, "running"));
            q = json_integer_value(json_object_get(j, "queued"));
            json_decref(j);
            if (r == running && q == queued)
                return;
        }
        usleep(20 * 1000);
    }
    ck_abort_msg("session %s: running %lld queued %lld, never %lld and %lld", session,
                 (long long)r, (long long)q, (long long)running, (long long)queued);
}

/*  Waits for a background `am2z execute` and checks it exited 0. */
static void
s_wait_exit_0(am2z_testproc_t *p, const char *what)
{
    int status = am2z_testproc_stop(p, 0, 30000);      /* signal 0: only wait */
    ck_assert_msg(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "%s: status %d", what, status);
}

/*  --priority reaches the broker: jobs of one session run one at a time by
    priority, then in submission order. A gate job holds the session's lane
    until the test creates its file; append-a (priority 0) queues behind it
    first, then append-b with --priority 5. B must run before A: without
    the priority they would run in submission order, A first. */
START_TEST(test_cli_execute_priority_runs_first_in_session)
{
    char file[700], state[800];
    snprintf(file, sizeof file, "%s/cli-p1-release", s_cl.dir);
    snprintf(state, sizeof state, "{\"file\": \"%s\"}", file);
    char *hold_argv[] = { AM2Z_BIN, "execute", "gate", "--session", "cli-p1", "--state", state,
                          "--broker", s_cl.frontend, NULL };
    char *low_argv[] = { AM2Z_BIN, "execute", "append-a", "--session", "cli-p1",
                         "--broker", s_cl.frontend, NULL };
    char *high_argv[] = { AM2Z_BIN, "execute", "append-b", "--session", "cli-p1",
                          "--priority", "5", "--broker", s_cl.frontend, NULL };
    am2z_testproc_t hold, low, high;
    ck_assert_int_eq(am2z_testproc_start(&hold, hold_argv), 0);
    s_wait_lane("cli-p1", 1, 0);
    ck_assert_int_eq(am2z_testproc_start(&low, low_argv), 0);
    s_wait_lane("cli-p1", 1, 1);
    ck_assert_int_eq(am2z_testproc_start(&high, high_argv), 0);
    s_wait_lane("cli-p1", 1, 2);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    s_wait_exit_0(&hold, "gate");
    s_wait_exit_0(&low, "append-a");
    s_wait_exit_0(&high, "append-b --priority 5");

    ck_assert_int_eq(s_am2z(true, "state", "cli-p1", NULL, NULL, NULL, NULL), 0);
    json_t *j = s_json();
    json_t *items = json_object_get(j, "items");
    ck_assert_msg(json_array_size(items) == 2, "items: %s", s_out);
    ck_assert_str_eq(json_string_value(json_array_get(items, 0)), "B");
    ck_assert_str_eq(json_string_value(json_array_get(items, 1)), "A");
    json_decref(j);
}
END_TEST

/*  --every 0 would silently run a one-off job: a usage error, and nothing
    reaches the broker (the session stays unknown). */
START_TEST(test_cli_execute_refuses_every_0)
{
    const char *args[] = { "execute", "increment", "--session", "cli-e0", "--every", "0", NULL };
    ck_assert_int_eq(s_am2z_stderr(args), 2);
    ck_assert_msg(strstr(s_out, "--every: must be at least 1 ms") != NULL, "said: %s", s_out);
    const char *args_s[] = { "execute", "increment", "--session", "cli-e0", "--every=0s", NULL };
    ck_assert_int_eq(s_am2z_stderr(args_s), 2);
    ck_assert_msg(strstr(s_out, "--every: must be at least 1 ms") != NULL, "said: %s", s_out);
    ck_assert_int_eq(s_am2z(true, "sessions", "--session", "cli-e0", NULL, NULL, NULL), 1);
}
END_TEST

/*  An empty --idempotency-key would be dropped silently: a usage error,
    nothing submitted. */
START_TEST(test_cli_execute_refuses_empty_idempotency_key)
{
    const char *args[] = { "execute", "increment", "--session", "cli-k0", "--idempotency-key", "",
                           NULL };
    ck_assert_int_eq(s_am2z_stderr(args), 2);
    ck_assert_msg(strstr(s_out, "--idempotency-key: must not be empty") != NULL, "said: %s", s_out);
    const char *args_eq[] = { "execute", "increment", "--session", "cli-k0", "--idempotency-key=",
                              NULL };
    ck_assert_int_eq(s_am2z_stderr(args_eq), 2);
    ck_assert_msg(strstr(s_out, "--idempotency-key: must not be empty") != NULL, "said: %s", s_out);
    ck_assert_int_eq(s_am2z(true, "sessions", "--session", "cli-k0", NULL, NULL, NULL), 1);
}
END_TEST

/*  A session id over 128 bytes is refused naming the real limit (128);
    one of exactly 128 bytes runs. */
START_TEST(test_cli_session_too_long_names_the_limit)
{
    char longest[129], over[130], far_over[201];
    memset(longest, 's', 128);
    longest[128] = '\0';
    memset(over, 's', 129);
    over[129] = '\0';
    memset(far_over, 's', 200);
    far_over[200] = '\0';
    const char *a200[] = { "execute", "increment", "--session", far_over, NULL };
    ck_assert_int_eq(s_am2z_stderr(a200), 2);
    ck_assert_msg(strstr(s_out, "--session: value is 200 bytes long; at most 128 allowed") != NULL,
                  "said: %s", s_out);
    const char *a129[] = { "execute", "increment", "--session", over, NULL };
    ck_assert_int_eq(s_am2z_stderr(a129), 2);
    ck_assert_msg(strstr(s_out, "--session: value is 129 bytes long; at most 128 allowed") != NULL,
                  "said: %s", s_out);
    const char *a128[] = { "execute", "increment", "--session", longest, NULL };
    ck_assert_int_eq(s_am2z_argv(a128), 0);
    json_t *j = s_json();
    ck_assert_str_eq(json_string_value(json_object_get(j, "sessionId")), longest);
    json_decref(j);
}
END_TEST

/*  `am2z events` reads only the events endpoint: its help offers
    --events, not --broker or --timeout; the others offer --broker. */
START_TEST(test_cli_events_help_offers_only_its_endpoint)
{
    ck_assert_int_eq(s_am2z(false, "events", "--help", NULL, NULL, NULL, NULL), 0);
    ck_assert_ptr_nonnull(strstr(s_out, "--events EP"));
    ck_assert_msg(strstr(s_out, "--broker") == NULL && strstr(s_out, "--timeout") == NULL,
                  "events help: %s", s_out);
    ck_assert_int_eq(s_am2z(false, "stats", "--help", NULL, NULL, NULL, NULL), 0);
    ck_assert_ptr_nonnull(strstr(s_out, "--broker EP"));
}
END_TEST

static Suite *
s_suite(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_add_unchecked_fixture(tc, s_setup, s_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_cli_execute_prints_result_json);
    tcase_add_test(tc, test_cli_execute_failure_exits_1_with_error_json);
    tcase_add_test(tc, test_cli_usage_and_connection_errors_exit_2);
    tcase_add_test(tc, test_cli_every_command_has_help);
    tcase_add_test(tc, test_cli_queries_and_stop_session);
    tcase_add_test(tc, test_cli_events_prints_published_events);
    tcase_add_test(tc, test_cli_repeat_create_list_cancel);
    tcase_add_test(tc, test_cli_execute_idempotency_key_runs_once);
    tcase_add_test(tc, test_cli_execute_priority_runs_first_in_session);
    tcase_add_test(tc, test_cli_execute_refuses_every_0);
    tcase_add_test(tc, test_cli_execute_refuses_empty_idempotency_key);
    tcase_add_test(tc, test_cli_session_too_long_names_the_limit);
    tcase_add_test(tc, test_cli_events_help_offers_only_its_endpoint);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return am2z_test_run(s_suite());
}
