/*  am2z_cli.c — the `am2z` command: run processors and look inside a broker.

    Every command prints JSON on stdout (events: one compact object per
    line, flushed), messages on stderr. Exit status: 0 success, 1 the job
    failed or the thing asked for does not exist, 2 usage, input or
    connection error.

    Options go through one am2z_cfg table, so they are parsed, checked and
    reported like every other am2z setting. The environment is read for the
    two endpoints only (AM2Z_BROKER, AM2Z_EVENTS): a stray AM2Z_STATE in
    someone's shell must not change what a command does.
*/
#include "am2z_client.h"
#include "am2z_config.h"
#include "am2z_json.h"

#include <czmq.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_STATE_MAX   (256 * 1024)       /* --state text given inline */
#define S_FILE_MAX    (16 * 1024 * 1024) /* --state @file */

enum { S_EXIT_OK = 0, S_EXIT_FAILED = 1, S_EXIT_USAGE = 2 };

/*  Set by SIGINT / SIGTERM while `events` runs; the loop stops on it. */
static volatile sig_atomic_t s_stop;

typedef struct {
    char broker[512];             /* frontend endpoint */
    char events[512];             /* PUB endpoint */
    uint64_t timeout_ms;          /* client wait */
    char session[AM2Z_SESSION_ID_MAX + 1];   /* the table refuses longer, naming the limit */
    char state[S_STATE_MAX];      /* JSON object or @file */
    char filter[AM2Z_NAME_MAX + 1];
    uint64_t count;               /* events: stop after N (0 = never) */
    bool keep_state;              /* stop-session */
    uint64_t delay_ms;            /* execute: not before now + delay */
    uint64_t job_timeout_ms;      /* execute: the job's own timeout */
    char processor[AM2Z_NAME_MAX + 1];       /* dlq list: only this processor */
    /* queue controls (issue 6) */
    char priority[32];            /* execute: job priority ("" = the processor's) */
    char idem_key[AM2Z_NAME_MAX + 1];        /* execute: idempotency key */
    bool idem_given;              /* --idempotency-key was given (even empty) */
    uint64_t every_ms;            /* execute: repeat every N ms (a schedule) */
    bool every_given;             /* --every was given (even 0) */
    uint64_t limit;               /* execute --every: at most N runs */
    uint64_t start_ms;            /* execute --every: wall clock ms of the first run */
} s_opts_t;

#define O(f) offsetof(s_opts_t, f)
static const am2z_cfg_def_t s_table[] = {
    { "broker", AM2Z_CFG_STRING, O(broker), sizeof ((s_opts_t *)0)->broker,
      AM2Z_DEFAULT_FRONTEND, 0, 0, NULL, "broker frontend endpoint (env AM2Z_BROKER)" },
    { "events", AM2Z_CFG_STRING, O(events), sizeof ((s_opts_t *)0)->events,
      AM2Z_DEFAULT_EVENTS, 0, 0, NULL, "broker events (PUB) endpoint (env AM2Z_EVENTS)" },
    { "timeout", AM2Z_CFG_MS, O(timeout_ms), 0, "30000", 0, 0, NULL,
      "how long to wait for the broker (0 = forever)" },
    { "session", AM2Z_CFG_STRING, O(session), sizeof ((s_opts_t *)0)->session,
      "", 0, 0, NULL, "session id" },
    { "state", AM2Z_CFG_STRING, O(state), sizeof ((s_opts_t *)0)->state,
      "", 0, 0, NULL, "input state: a JSON object, or @FILE holding one" },
    { "filter", AM2Z_CFG_STRING, O(filter), sizeof ((s_opts_t *)0)->filter,
      "", 0, 0, NULL, "event name prefix" },
    { "count", AM2Z_CFG_UINT, O(count), 0, "0", 0, 0, NULL,
      "stop after N events (0 = until interrupted)" },
    { "keep-state", AM2Z_CFG_BOOL, O(keep_state), 0, "false", 0, 0, NULL,
      "stop-session: keep the stored state" },
    { "delay", AM2Z_CFG_MS, O(delay_ms), 0, "0", 0, 0, NULL,
      "execute: do not run before now + delay" },
    { "job-timeout", AM2Z_CFG_MS, O(job_timeout_ms), 0, "0", 0, 0, NULL,
      "execute: the job's timeout (0 = the processor's)" },
    { "processor", AM2Z_CFG_STRING, O(processor), sizeof ((s_opts_t *)0)->processor,
      "", 0, 0, NULL, "dlq list: only this processor's dead letters" },
    { "priority", AM2Z_CFG_STRING, O(priority), sizeof ((s_opts_t *)0)->priority,
      "", 0, 0, NULL, "execute: job priority, an integer (higher runs first)" },
    { "idempotency-key", AM2Z_CFG_STRING, O(idem_key), sizeof ((s_opts_t *)0)->idem_key,
      "", 0, 0, NULL, "execute: a key (1..128 bytes) that makes a resubmit return the first job" },
    { "every", AM2Z_CFG_MS, O(every_ms), 0, "0", 0, 0, NULL,
      "execute: a repeatable job, run every MS (>= 1; prints its repeat id)" },
    { "limit", AM2Z_CFG_UINT, O(limit), 0, "0", 0, 0, NULL,
      "execute --every: at most N runs (0 = until cancelled)" },
    { "start", AM2Z_CFG_UINT, O(start_ms), 0, "0", 0, 0, NULL,
      "execute --every: first run at this wall clock, ms since the epoch (0 = now)" },
    { NULL, 0, 0, 0, NULL, 0, 0, NULL, NULL },
};

/*  The environment may set only these. */
static const am2z_cfg_def_t s_env_table[] = {
    { "broker", AM2Z_CFG_STRING, O(broker), sizeof ((s_opts_t *)0)->broker,
      AM2Z_DEFAULT_FRONTEND, 0, 0, NULL, "" },
    { "events", AM2Z_CFG_STRING, O(events), sizeof ((s_opts_t *)0)->events,
      AM2Z_DEFAULT_EVENTS, 0, 0, NULL, "" },
    { NULL, 0, 0, 0, NULL, 0, 0, NULL, NULL },
};

typedef struct {
    const char *name;
    const char *args;             /* synopsis after the name */
    const char *help;             /* one line */
    int (*run)(const s_opts_t *opts, int argc, char **argv);
    int nargs;                    /* positional operands after the name */
} s_command_t;

static const s_command_t *s_find_command(const char *name);

/* ---------------------------------------------------------------------------
   Output helpers
   ------------------------------------------------------------------------ */

static void
s_print_json(json_t *json, size_t flags)
{
    char *text = json_dumps(json, flags | JSON_ENCODE_ANY);
    if (text) {
        fputs(text, stdout);
        fputc('\n', stdout);
        free(text);
    }
    fflush(stdout);
}

/*  msgpack bytes as a JSON value; JSON null when absent or unreadable. */
static json_t *
s_json_of(const uint8_t *data, size_t size)
{
    json_t *json = NULL;
    if (!data || !size || am2z_json_from_msgpack(data, size, &json) != AM2Z_OK)
        return json_null();
    return json;
}

static json_t *
s_error_json(const am2z_error_t *e)
{
    if (!e)
        return json_null();
    json_t *j = json_object();
    json_object_set_new(j, "kind", json_string(am2z_kind_name(e->kind)));
    json_object_set_new(j, "category", json_string(am2z_category_name(e->category)));
    json_object_set_new(j, "severity", json_string(am2z_severity_name(e->severity)));
    json_object_set_new(j, "retryable", json_boolean(e->retryable));
    json_object_set_new(j, "code", json_string(e->code ? e->code : ""));
    json_object_set_new(j, "message", json_string(e->message ? e->message : ""));
    json_object_set_new(j, "details", s_json_of(e->details, e->details_size));
    return j;
}

static json_t *
s_result_json(const am2z_result_t *r)
{
    json_t *j = json_object();
    json_object_set_new(j, "success", json_boolean(r->success));
    json_object_set_new(j, "jobId", json_string(r->job_id));
    json_object_set_new(j, "processor", json_string(r->processor));
    json_object_set_new(j, "sessionId", json_string(r->session_id));
    json_object_set_new(j, "attempt", json_integer(r->attempt));
    json_object_set_new(j, "executionTimeUs", json_integer((json_int_t)r->exec_us));
    json_object_set_new(j, "startedAt", json_integer((json_int_t)r->started_at_ms));
    json_object_set_new(j, "state", r->state ? s_json_of(am2z_state_data(r->state),
                                                         am2z_state_size(r->state))
                                             : json_null());
    json_object_set_new(j, "error", s_error_json(r->error));
    return j;
}

static int
s_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
s_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("am2z: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

/*  Exit status and message for a failed client call. */
static int
s_client_fail(const am2z_client_t *client, const char *what, int rc)
{
    const char *why = client ? am2z_client_last_error(client) : "";
    if (rc == AM2Z_ENOTFOUND)
        return s_fail(S_EXIT_FAILED, "%s: %s", what, *why ? why : "not found");
    return s_fail(S_EXIT_USAGE, "%s: %s%s%s", what, am2z_strerror(rc), *why ? ": " : "", why);
}

static int
s_connect(const s_opts_t *opts, am2z_client_t **client)
{
    int rc = am2z_client_connect(opts->broker, client);
    if (rc != AM2Z_OK)
        return s_fail(S_EXIT_USAGE, "cannot connect to broker '%s': %s", opts->broker,
                      am2z_strerror(rc));
    am2z_client_set_timeout(*client, opts->timeout_ms);
    return S_EXIT_OK;
}

static bool
s_session_ok(const char *session)
{
    return am2z_session_id_valid(session, strlen(session));
}

/* ---------------------------------------------------------------------------
   Commands
   ------------------------------------------------------------------------ */

/*  Reads --state (inline JSON or @file) into a state of `session`. */
static int
s_load_state(const s_opts_t *opts, am2z_state_t **out)
{
    const char *text = opts->state;
    char *file_text = NULL;
    if (text[0] == '@') {
        FILE *f = fopen(text + 1, "rb");
        if (!f)
            return s_fail(S_EXIT_USAGE, "--state: cannot open '%s': %s", text + 1,
                          strerror(errno));
        file_text = malloc(S_FILE_MAX + 1);
        size_t n = file_text ? fread(file_text, 1, S_FILE_MAX + 1, f) : 0;
        bool too_big = n > S_FILE_MAX;
        bool bad = file_text == NULL || ferror(f);
        fclose(f);
        if (bad || too_big) {
            free(file_text);
            return s_fail(S_EXIT_USAGE, "--state: cannot read '%s'%s", text + 1,
                          too_big ? ": larger than 16 MiB" : "");
        }
        file_text[n] = '\0';
        text = file_text;
    }
    uint8_t *map = NULL;
    size_t size = 0;
    char err[256];
    int rc = am2z_json_parse_to_msgpack(text, &map, &size, err, sizeof err);
    free(file_text);
    if (rc != AM2Z_OK)
        return s_fail(S_EXIT_USAGE, "--state: %s", err);
    bool is_map = size && ((map[0] & 0xf0) == 0x80 || map[0] == 0xde || map[0] == 0xdf);
    if (!is_map) {
        free(map);
        return s_fail(S_EXIT_USAGE, "--state: must be a JSON object");
    }
    rc = am2z_state_from_map(opts->session, map, size, am2z_clock_wall_ms(), out);
    free(map);
    if (rc != AM2Z_OK)
        return s_fail(S_EXIT_USAGE, "--state: not usable as a state: %s", am2z_strerror(rc));
    return S_EXIT_OK;
}

/*  --priority, --idempotency-key, --every, --limit, --start into *sub. */
static int
s_queue_controls(const s_opts_t *opts, am2z_submit_opts_t *sub)
{
    if (opts->priority[0]) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(opts->priority, &end, 10);
        if (errno || !end || *end || end == opts->priority)
            return s_fail(S_EXIT_USAGE, "--priority: '%s' is not an integer", opts->priority);
        sub->priority = v;
        sub->has_priority = true;
    }
    /* the table caps the key at AM2Z_NAME_MAX bytes */
    if (opts->idem_given && !opts->idem_key[0])
        return s_fail(S_EXIT_USAGE, "--idempotency-key: must not be empty (1..%d bytes)",
                      AM2Z_NAME_MAX);
    if (opts->idem_key[0])
        sub->idempotency_key = opts->idem_key;
    if (opts->every_given && !opts->every_ms)
        return s_fail(S_EXIT_USAGE, "--every: must be at least 1 ms (0 would run the job once, "
                      "not repeat it)");
    if (!opts->every_ms && (opts->limit || opts->start_ms))
        return s_fail(S_EXIT_USAGE, "--limit and --start need --every");
    sub->repeat_every_ms = opts->every_ms;
    sub->repeat_limit = opts->limit;
    sub->repeat_start_ms = opts->start_ms;
    return S_EXIT_OK;
}

/*  execute --every: stores the schedule and prints its repeat id. */
static int
s_submit_repeat(const s_opts_t *opts, am2z_client_t *client, const char *processor,
                const am2z_state_t *state, const am2z_submit_opts_t *sub)
{
    char id[AM2Z_JOB_ID_MAX + 1];
    int rc = am2z_client_submit(client, processor, state, opts->session, sub, id);
    if (rc == AM2Z_EFAILED)
        return s_fail(S_EXIT_FAILED, "execute: %s", am2z_client_last_error(client));
    if (rc != AM2Z_OK)
        return s_client_fail(client, "execute", rc);
    json_t *j = json_object();
    json_object_set_new(j, "repeatId", json_string(id));
    json_object_set_new(j, "processor", json_string(processor));
    json_object_set_new(j, "sessionId", json_string(opts->session));
    json_object_set_new(j, "every", json_integer((json_int_t)sub->repeat_every_ms));
    json_object_set_new(j, "limit", json_integer((json_int_t)sub->repeat_limit));
    s_print_json(j, JSON_INDENT(2));
    json_decref(j);
    return S_EXIT_OK;
}

static int
s_cmd_execute(const s_opts_t *opts, int argc, char **argv)
{
    (void)argc;
    const char *processor = argv[0];
    if (!am2z_name_valid(processor, strlen(processor)))
        return s_fail(S_EXIT_USAGE, "invalid processor name '%s'", processor);
    if (!opts->session[0])
        return s_fail(S_EXIT_USAGE, "execute needs --session ID (see am2z execute --help)");
    if (!s_session_ok(opts->session))
        return s_fail(S_EXIT_USAGE, "invalid session id '%s'", opts->session);
    am2z_state_t *state = NULL;
    if (opts->state[0]) {
        int code = s_load_state(opts, &state);
        if (code != S_EXIT_OK)
            return code;
    }
    am2z_submit_opts_t sub = { .delay_ms = opts->delay_ms, .timeout_ms = opts->job_timeout_ms };
    int code = s_queue_controls(opts, &sub);
    if (code != S_EXIT_OK) {
        am2z_state_destroy(&state);
        return code;
    }
    am2z_client_t *client = NULL;
    code = s_connect(opts, &client);
    if (code != S_EXIT_OK) {
        am2z_state_destroy(&state);
        return code;
    }
    if (sub.repeat_every_ms) {
        code = s_submit_repeat(opts, client, processor, state, &sub);
        am2z_state_destroy(&state);
        am2z_client_destroy(&client);
        return code;
    }
    am2z_result_t *result = NULL;
    int rc = am2z_client_execute(client, processor, state, opts->session, &sub, &result);
    if (rc != AM2Z_OK) {
        code = s_client_fail(client, "execute", rc);
    } else {
        json_t *j = s_result_json(result);
        s_print_json(j, JSON_INDENT(2));
        json_decref(j);
        code = result->success ? S_EXIT_OK : S_EXIT_FAILED;
    }
    am2z_result_destroy(&result);
    am2z_state_destroy(&state);
    am2z_client_destroy(&client);
    return code;
}

/*  A query whose REPLY data is printed as JSON. */
static int
s_query_print(const s_opts_t *opts, const char *what, const char *id)
{
    am2z_client_t *client = NULL;
    int code = s_connect(opts, &client);
    if (code != S_EXIT_OK)
        return code;
    uint8_t *data = NULL;
    size_t size = 0;
    int rc = am2z_client_query(client, what, id, &data, &size);
    if (rc != AM2Z_OK) {
        code = s_client_fail(client, what, rc);
    } else {
        json_t *j = NULL;
        rc = am2z_json_from_msgpack(data, size, &j);
        if (rc != AM2Z_OK) {
            code = s_fail(S_EXIT_USAGE, "%s: the broker's reply is not readable: %s", what,
                          am2z_strerror(rc));
        } else {
            s_print_json(j, JSON_INDENT(2));
            json_decref(j);
        }
        free(data);
    }
    am2z_client_destroy(&client);
    return code;
}

static int
s_cmd_stats(const s_opts_t *opts, int argc, char **argv)
{
    (void)argc, (void)argv;
    return s_query_print(opts, "stats", NULL);
}

static int
s_cmd_queues(const s_opts_t *opts, int argc, char **argv)
{
    (void)argc, (void)argv;
    if (opts->session[0] && !s_session_ok(opts->session))
        return s_fail(S_EXIT_USAGE, "invalid session id '%s'", opts->session);
    if (opts->session[0])
        return s_query_print(opts, "session-stats", opts->session);
    return s_query_print(opts, "queues", NULL);
}

/*  am2z sessions [--session ID]: session-info (issue 6) — an array of
    {id, created, lastActivity, queued, running, completed, failed}, or
    that one map with --session (exit 1, not_found, when it is unknown). */
static int
s_cmd_sessions(const s_opts_t *opts, int argc, char **argv)
{
    (void)argc, (void)argv;
    if (opts->session[0] && !s_session_ok(opts->session))
        return s_fail(S_EXIT_USAGE, "invalid session id '%s'", opts->session);
    return s_query_print(opts, "session-info", opts->session[0] ? opts->session : NULL);
}

static int
s_cmd_processors(const s_opts_t *opts, int argc, char **argv)
{
    (void)argc, (void)argv;
    return s_query_print(opts, "processors", NULL);
}

static int
s_cmd_state(const s_opts_t *opts, int argc, char **argv)
{
    (void)argc;
    if (!s_session_ok(argv[0]))
        return s_fail(S_EXIT_USAGE, "invalid session id '%s'", argv[0]);
    return s_query_print(opts, "state", argv[0]);
}

static int
s_cmd_job(const s_opts_t *opts, int argc, char **argv)
{
    (void)argc;
    if (!am2z_job_id_valid(argv[0], strlen(argv[0])))
        return s_fail(S_EXIT_USAGE, "invalid job id '%s'", argv[0]);
    return s_query_print(opts, "job", argv[0]);
}

static int
s_cmd_stop_session(const s_opts_t *opts, int argc, char **argv)
{
    (void)argc;
    const char *session = argv[0];
    if (!s_session_ok(session))
        return s_fail(S_EXIT_USAGE, "invalid session id '%s'", session);
    am2z_client_t *client = NULL;
    int code = s_connect(opts, &client);
    if (code != S_EXIT_OK)
        return code;
    am2z_stop_report_t report;
    int rc = am2z_client_stop_session_report(client, session, opts->keep_state, &report);
    if (rc != AM2Z_OK) {
        code = s_client_fail(client, "stop-session", rc);
    } else {
        json_t *j = json_object();
        json_object_set_new(j, "ok", json_true());
        json_object_set_new(j, "sessionId", json_string(session));
        json_object_set_new(j, "keepState", json_boolean(opts->keep_state));
        json_object_set_new(j, "cancelled", json_integer((json_int_t)report.cancelled));
        json_object_set_new(j, "abandoned", json_integer((json_int_t)report.abandoned));
        s_print_json(j, JSON_INDENT(2));
        json_decref(j);
    }
    am2z_client_destroy(&client);
    return code;
}

/*  am2z dlq list [--session ID] [--processor NAME] | retry JOB | discard JOB */
static int
s_cmd_dlq(const s_opts_t *opts, int argc, char **argv)
{
    const char *op = argc > 0 ? argv[0] : "";
    bool list = strcmp(op, "list") == 0;
    bool retry = strcmp(op, "retry") == 0;
    bool discard = strcmp(op, "discard") == 0;
    if (!list && !retry && !discard)
        return s_fail(S_EXIT_USAGE, "dlq: expected list, retry JOB or discard JOB (see am2z dlq --help)");
    if (list ? argc != 1 : argc != 2)
        return s_fail(S_EXIT_USAGE, "dlq %s: expected %s", op, list ? "no job id" : "one job id");
    if (!list && !am2z_job_id_valid(argv[1], strlen(argv[1])))
        return s_fail(S_EXIT_USAGE, "invalid job id '%s'", argv[1]);
    if (list && opts->session[0] && !s_session_ok(opts->session))
        return s_fail(S_EXIT_USAGE, "invalid session id '%s'", opts->session);
    if (list && opts->processor[0] && !am2z_name_valid(opts->processor, strlen(opts->processor)))
        return s_fail(S_EXIT_USAGE, "invalid processor name '%s'", opts->processor);
    am2z_client_t *client = NULL;
    int code = s_connect(opts, &client);
    if (code != S_EXIT_OK)
        return code;
    if (list) {
        am2z_dlq_list_t *dl = NULL;
        int rc = am2z_client_dlq_list(client, opts->processor[0] ? opts->processor : NULL,
                                      opts->session[0] ? opts->session : NULL, &dl);
        if (rc != AM2Z_OK) {
            code = s_client_fail(client, "dlq list", rc);
        } else {
            json_t *arr = json_array();
            for (size_t i = 0; i < dl->count; i++) {
                const am2z_dead_letter_t *d = &dl->items[i];
                json_t *o = json_object();
                json_object_set_new(o, "jobId", json_string(d->job_id));
                json_object_set_new(o, "processor", json_string(d->processor));
                json_object_set_new(o, "sessionId", json_string(d->session_id));
                json_object_set_new(o, "attempts", json_integer((json_int_t)d->attempt));
                json_object_set_new(o, "createdAt", json_integer((json_int_t)d->created_ms));
                json_object_set_new(o, "failedAt", json_integer((json_int_t)d->failed_at_ms));
                json_object_set_new(o, "error", s_error_json(d->error));
                json_array_append_new(arr, o);
            }
            s_print_json(arr, JSON_INDENT(2));
            json_decref(arr);
            am2z_dlq_list_destroy(&dl);
        }
    } else {
        int rc = retry ? am2z_client_dlq_retry(client, argv[1])
                       : am2z_client_dlq_discard(client, argv[1]);
        if (rc != AM2Z_OK) {
            code = s_client_fail(client, retry ? "dlq retry" : "dlq discard", rc);
        } else {
            json_t *j = json_object();
            json_object_set_new(j, "ok", json_true());
            json_object_set_new(j, "jobId", json_string(argv[1]));
            json_object_set_new(j, retry ? "requeued" : "discarded", json_true());
            s_print_json(j, JSON_INDENT(2));
            json_decref(j);
        }
    }
    am2z_client_destroy(&client);
    return code;
}

/*  am2z repeat list [--session ID] | cancel ID (issue 6) */
static int
s_cmd_repeat(const s_opts_t *opts, int argc, char **argv)
{
    const char *op = argc > 0 ? argv[0] : "";
    bool list = strcmp(op, "list") == 0;
    bool cancel = strcmp(op, "cancel") == 0;
    if (!list && !cancel)
        return s_fail(S_EXIT_USAGE, "repeat: expected list or cancel ID (see am2z repeat --help)");
    if (list ? argc != 1 : argc != 2)
        return s_fail(S_EXIT_USAGE, "repeat %s: expected %s", op, list ? "no id" : "one repeat id");
    if (cancel && !am2z_job_id_valid(argv[1], strlen(argv[1])))
        return s_fail(S_EXIT_USAGE, "invalid repeat id '%s'", argv[1]);
    if (list && opts->session[0] && !s_session_ok(opts->session))
        return s_fail(S_EXIT_USAGE, "invalid session id '%s'", opts->session);
    am2z_client_t *client = NULL;
    int code = s_connect(opts, &client);
    if (code != S_EXIT_OK)
        return code;
    if (list) {
        am2z_repeat_list_t *rl = NULL;
        int rc = am2z_client_repeat_list(client, opts->session[0] ? opts->session : NULL, &rl);
        if (rc != AM2Z_OK) {
            code = s_client_fail(client, "repeat list", rc);
        } else {
            json_t *arr = json_array();
            for (size_t i = 0; i < rl->count; i++) {
                const am2z_repeat_t *r = &rl->items[i];
                json_t *o = json_object();
                json_object_set_new(o, "repeatId", json_string(r->id));
                json_object_set_new(o, "processor", json_string(r->processor));
                json_object_set_new(o, "sessionId", json_string(r->session_id));
                json_object_set_new(o, "every", json_integer((json_int_t)r->every_ms));
                json_object_set_new(o, "limit", json_integer((json_int_t)r->limit));
                json_object_set_new(o, "runs", json_integer((json_int_t)r->runs));
                json_object_set_new(o, "nextRunAt", json_integer((json_int_t)r->next_ms));
                json_object_set_new(o, "createdAt", json_integer((json_int_t)r->created_ms));
                json_object_set_new(o, "lastJobId", r->last_job_id[0]
                                                        ? json_string(r->last_job_id)
                                                        : json_null());
                json_array_append_new(arr, o);
            }
            s_print_json(arr, JSON_INDENT(2));
            json_decref(arr);
            am2z_repeat_list_destroy(&rl);
        }
    } else {
        int rc = am2z_client_repeat_cancel(client, argv[1]);
        if (rc == AM2Z_EFAILED) {
            code = s_fail(S_EXIT_FAILED, "repeat cancel: %s", am2z_client_last_error(client));
        } else if (rc != AM2Z_OK) {
            code = s_client_fail(client, "repeat cancel", rc);
        } else {
            json_t *j = json_object();
            json_object_set_new(j, "ok", json_true());
            json_object_set_new(j, "repeatId", json_string(argv[1]));
            json_object_set_new(j, "cancelled", json_true());
            s_print_json(j, JSON_INDENT(2));
            json_decref(j);
        }
    }
    am2z_client_destroy(&client);
    return code;
}

static void
s_on_stop_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

static void
s_print_event(const am2z_event_t *ev, void *arg)
{
    uint64_t *printed = arg;
    json_t *j = json_object();
    json_object_set_new(j, "name", json_string(ev->name));
    json_object_set_new(j, "jobId", json_string(ev->job_id));
    json_object_set_new(j, "sessionId", json_string(ev->session_id));
    json_object_set_new(j, "processor", json_string(ev->processor));
    json_object_set_new(j, "attempt", json_integer(ev->attempt));
    json_object_set_new(j, "ts", json_integer((json_int_t)ev->ts_ms));
    json_object_set_new(j, "seq", json_integer((json_int_t)ev->seq));
    json_object_set_new(j, "data", s_json_of(ev->data, ev->data_size));
    s_print_json(j, JSON_COMPACT);
    json_decref(j);
    (*printed)++;
}

static int
s_cmd_events(const s_opts_t *opts, int argc, char **argv)
{
    (void)argc, (void)argv;
    if (opts->session[0] && !s_session_ok(opts->session))
        return s_fail(S_EXIT_USAGE, "invalid session id '%s'", opts->session);
    am2z_events_t *events = NULL;
    int rc = am2z_events_subscribe(opts->events, opts->filter,
                                   opts->session[0] ? opts->session : NULL, &events);
    if (rc != AM2Z_OK)
        return s_fail(S_EXIT_USAGE, "cannot subscribe to '%s': %s", opts->events,
                      am2z_strerror(rc));
    /* no SA_RESTART: the signal interrupts the poll and the loop sees s_stop */
    struct sigaction sa = { .sa_handler = s_on_stop_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    uint64_t printed = 0;
    int code = S_EXIT_OK;
    while (!s_stop && (opts->count == 0 || printed < opts->count)) {
        rc = am2z_events_next(events, 250, s_print_event, &printed);
        if (rc != AM2Z_OK && rc != AM2Z_ETIMEOUT) {
            code = s_fail(S_EXIT_USAGE, "events: %s", am2z_strerror(rc));
            break;
        }
    }
    am2z_events_destroy(&events);
    return code;
}

static const s_command_t s_commands[] = {
    { "execute", "PROCESSOR --session ID [--state JSON|@FILE] [--delay MS] [--job-timeout MS]"
      " [--priority N] [--idempotency-key KEY] [--every MS [--limit N] [--start EPOCH_MS]]",
      "run a processor in a session and print its result (--every: store a repeatable "
      "job and print its id)", s_cmd_execute, 1 },
    { "stats", "", "broker-wide counters", s_cmd_stats, 0 },
    { "queues", "[--session ID]", "per-processor queue counters (of one session with --session)",
      s_cmd_queues, 0 },
    { "sessions", "[--session ID]",
      "known sessions: id, created, lastActivity, queued, running, completed, failed",
      s_cmd_sessions, 0 },
    { "processors", "", "registered processors", s_cmd_processors, 0 },
    { "state", "SESSION", "the stored state of a session", s_cmd_state, 1 },
    { "job", "JOB", "status of a job", s_cmd_job, 1 },
    { "stop-session", "SESSION [--keep-state]",
      "cancel a session's jobs and delete its state (unless --keep-state)",
      s_cmd_stop_session, 1 },
    { "events", "[--filter PREFIX] [--session ID] [--count N] [--events EP]",
      "print published events, one JSON object per line", s_cmd_events, 0 },
    { "dlq", "list [--session ID] [--processor NAME] | retry JOB | discard JOB",
      "dead letters: list them, re-enqueue one (same job id, fresh attempts), or delete one",
      s_cmd_dlq, -1 },
    { "repeat", "list [--session ID] | cancel ID",
      "repeatable jobs: list them (of one session with --session), or cancel one",
      s_cmd_repeat, -1 },
    { NULL, NULL, NULL, NULL, 0 },
};

static const s_command_t *
s_find_command(const char *name)
{
    for (const s_command_t *c = s_commands; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

/*  Sets opts->every_given and opts->idem_given, after argv was parsed into
    opts. The defaults (0, "") are also values a user may type, and must
    then be refused: so argv is parsed again into a scratch whose two fields
    start at other values (1, "-"). A field no flag sets keeps that start
    value, unlike opts; one a flag sets ends equal in both. */
static int
s_note_given(s_opts_t *opts, int argc, char **argv)
{
    s_opts_t *scratch = calloc(1, sizeof *scratch);
    char **positional = calloc((size_t)argc + 1, sizeof *positional);
    int rc = AM2Z_ENOMEM;
    if (scratch && positional) {
        scratch->every_ms = 1;
        snprintf(scratch->idem_key, sizeof scratch->idem_key, "-");
        char err[AM2Z_CFG_ERR_MAX];
        am2z_cfg_args_t args = { .positional = positional };
        rc = am2z_cfg_parse_args(s_table, scratch, argc, argv, &args, err, sizeof err);
    }
    if (rc == AM2Z_OK) {
        opts->every_given = scratch->every_ms == opts->every_ms;
        opts->idem_given = strcmp(scratch->idem_key, opts->idem_key) == 0;
    }
    free(positional);
    free(scratch);
    return rc;
}

static void
s_usage(FILE *out)
{
    fprintf(out, "usage: am2z COMMAND [ARGS] [OPTIONS]\n\ncommands:\n");
    for (const s_command_t *c = s_commands; c->name; c++)
        fprintf(out, "  %-13s %s\n", c->name, c->help);
    fprintf(out,
            "\ncommon options (every command but events, which reads the events\n"
            "endpoint only: --events EP, env AM2Z_EVENTS):\n"
            "  --broker EP    frontend endpoint (env AM2Z_BROKER; default %s)\n"
            "  --timeout MS   how long to wait for the broker (default 30000)\n"
            "  --help         this text; `am2z COMMAND --help` for one command\n"
            "\nexit status: 0 ok, 1 job failed or not found, 2 usage or connection error\n",
            AM2Z_DEFAULT_FRONTEND);
}

/*  events talks to the PUB endpoint only: --broker and --timeout do not
    apply to it, so its usage does not offer them. */
static void
s_command_usage(const s_command_t *c, FILE *out)
{
    bool events = strcmp(c->name, "events") == 0;
    fprintf(out, "usage: am2z %s%s%s%s\n  %s\n", c->name, *c->args ? " " : "", c->args,
            events ? "" : " [--broker EP] [--timeout MS]", c->help);
    if (events)
        fprintf(out, "  --events EP    PUB endpoint (env AM2Z_EVENTS; default %s)\n",
                AM2Z_DEFAULT_EVENTS);
    else
        fprintf(out, "  --broker EP    frontend endpoint (env AM2Z_BROKER; default %s)\n",
                AM2Z_DEFAULT_FRONTEND);
}

int
main(int argc, char **argv)
{
    extern char **environ;
    /* our own signal handling: CZMQ's would swallow SIGINT */
    zsys_handler_set(NULL);

    s_opts_t *opts = calloc(1, sizeof *opts);
    char **positional = calloc((size_t)argc + 1, sizeof *positional);
    if (!opts || !positional) {
        free(opts);
        free(positional);
        return s_fail(S_EXIT_USAGE, "out of memory");
    }
    char err[AM2Z_CFG_ERR_MAX];
    am2z_cfg_args_t args = { .positional = positional };
    int code = S_EXIT_OK;
    if (am2z_cfg_defaults(s_table, opts, err, sizeof err) != AM2Z_OK
        || am2z_cfg_load_env(s_env_table, opts, environ, err, sizeof err) != AM2Z_OK
        || am2z_cfg_parse_args(s_table, opts, argc, argv, &args, err, sizeof err) != AM2Z_OK) {
        code = s_fail(S_EXIT_USAGE, "%s", err);
        goto done;
    }
    if (args.config) {
        code = s_fail(S_EXIT_USAGE, "--config: not supported by am2z");
        goto done;
    }
    if (s_note_given(opts, argc, argv) != AM2Z_OK) {
        code = s_fail(S_EXIT_USAGE, "out of memory");
        goto done;
    }
    if (args.npositional == 0) {
        if (args.help) {
            s_usage(stdout);
        } else {
            s_usage(stderr);
            code = S_EXIT_USAGE;
        }
        goto done;
    }
    const s_command_t *cmd = s_find_command(positional[0]);
    if (!cmd) {
        code = s_fail(S_EXIT_USAGE, "unknown command '%s' (see am2z --help)", positional[0]);
        goto done;
    }
    if (args.help) {
        s_command_usage(cmd, stdout);
        goto done;
    }
    if (cmd->nargs >= 0 && args.npositional - 1 != cmd->nargs) {
        s_command_usage(cmd, stderr);
        code = s_fail(S_EXIT_USAGE, "%s: expected %d argument%s, got %d", cmd->name,
                      cmd->nargs, cmd->nargs == 1 ? "" : "s", args.npositional - 1);
        goto done;
    }
    code = cmd->run(opts, args.npositional - 1, positional + 1);
done:
    free(positional);
    free(opts);
    return code;
}
