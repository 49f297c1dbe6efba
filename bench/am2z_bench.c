/*  am2z_bench.c — am2z-bench: measures a running am2z broker + workers.

    1. sequential round trip: `--rounds` executions of `increment`, one after
       the other, in one session; prints p50 / p99 / min / max in µs.
    2. pipelined throughput: `--jobs` submissions spread over `--sessions`
       sessions (jobs of one session run one at a time, so in-flight work is
       bounded by the session count), with at most `--window` unanswered
       jobs; prints jobs/s from the first submit to the last result.

    2b. distributed composites: `--rounds` sequential executions of the
       example worker's `chain3` (increment three times in a row) and
       `par3` (three parallel increments, three-way merged), run by the
       broker as workflow runs; p50 / p99 each (workloads chain3, par3).

    3. session cycle: `--cycles` times, a new session -> execute one
       `increment` -> stop_session (state deleted); p50 / p99 of the whole
       cycle, as AM2Z's createSession / executeInSession / stopSession.

    3b. broker-only requests (workload query): `--rounds` times, one
       `increment` into a fresh session (not timed), then get_state (a
       QUERY: client -> broker -> client, no worker, no commit) and
       stop_session (a commit, no worker), each timed alone; p50 / p99 as
       "get_state" and "stop".

    4. local runtime (no broker; am2z_local.h, in this process): `--rounds`
       executions of `increment`, of a chain of 3 increments and of a
       parallel of 3 increments (three-way merge); p50 / p99 each.

    5. embedded runtime (am2z_runtime.h: broker + worker threads over
       inproc://, LMDB in a temp dir, durability periodic): `--rounds`
       sequential executions of `increment`; p50 / p99 (as "embedded").

    `--workload rt,tp,chain3,par3,session,query,local,embedded` picks which run (in that order); `--json`
    prints one JSON object a line (bench/run.sh parses them).

    It is a client only: start am2z-broker and am2z-example-worker first
    (bench/run.sh or bench/run-core.sh does). Not part of the test suite.
*/
#include "am2z_client.h"
#include "am2z_config.h"
#include "am2z_envelope.h"
#include "am2z_examples.h"
#include "am2z_local.h"
#include "am2z_runtime.h"

#include <czmq.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char broker[256];
    uint64_t rounds;
    uint64_t jobs;
    uint64_t sessions;
    uint64_t window;
    uint64_t state_bytes;
    uint64_t cycles;
    char workload[64];
    bool json;
} s_opts_t;

static const am2z_cfg_def_t s_table[] = {
    { "broker", AM2Z_CFG_STRING, offsetof(s_opts_t, broker), 256, AM2Z_DEFAULT_FRONTEND,
      0, 0, NULL, "broker frontend" },
    { "rounds", AM2Z_CFG_UINT, offsetof(s_opts_t, rounds), 0, "2000", 0, 10000000, NULL,
      "sequential round trips (0 = skip)" },
    { "jobs", AM2Z_CFG_UINT, offsetof(s_opts_t, jobs), 0, "50000", 0, 100000000, NULL,
      "pipelined jobs (0 = skip)" },
    { "sessions", AM2Z_CFG_UINT, offsetof(s_opts_t, sessions), 0, "1000", 1, 10000000, NULL,
      "sessions the pipelined jobs are spread over" },
    { "window", AM2Z_CFG_UINT, offsetof(s_opts_t, window), 0, "2000", 1, 10000000, NULL,
      "most unanswered pipelined jobs" },
    { "state-bytes", AM2Z_CFG_SIZE, offsetof(s_opts_t, state_bytes), 0, "100", 0,
      64 << 20, NULL, "approximate encoded size of the job state" },
    { "cycles", AM2Z_CFG_UINT, offsetof(s_opts_t, cycles), 0, "1000", 1, 10000000, NULL,
      "session create -> execute -> stop cycles" },
    { "workload", AM2Z_CFG_STRING, offsetof(s_opts_t, workload), 64, "rt,tp", 0, 0, NULL,
      "rt (round trip), tp (throughput), chain3, par3 (composites), session (cycle), query "
      "(get_state and stop_session alone) — comma "
      "list; or local, or embedded" },
    { "json", AM2Z_CFG_BOOL, offsetof(s_opts_t, json), 0, "false", 0, 0, NULL,
      "one JSON object a line instead of text" },
    { NULL }
};

/*  Prints a latency summary of n sorted samples. */
static void
s_report_latency(const s_opts_t *o, const char *name, const uint64_t *lat, uint64_t n)
{
    if (o->json)
        printf("{\"workload\":\"%s\",\"n\":%llu,\"state_bytes\":%llu,\"p50_us\":%llu,"
               "\"p99_us\":%llu,\"min_us\":%llu,\"max_us\":%llu}\n",
               name, (unsigned long long)n, (unsigned long long)o->state_bytes,
               (unsigned long long)lat[n / 2], (unsigned long long)lat[n * 99 / 100],
               (unsigned long long)lat[0], (unsigned long long)lat[n - 1]);
    else
        printf("%s n=%llu p50_us=%llu p99_us=%llu min_us=%llu max_us=%llu\n",
               strcmp(name, "rt") == 0 ? "round_trip" : name,
               (unsigned long long)n, (unsigned long long)lat[n / 2],
               (unsigned long long)lat[n * 99 / 100],
               (unsigned long long)lat[0], (unsigned long long)lat[n - 1]);
    fflush(stdout);
}

/*  Whether the comma list `list` names `item`. */
static bool
s_wants(const char *list, const char *item)
{
    size_t n = strlen(item);
    for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (strncmp(p, item, n) == 0 && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

static int
s_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/*  A state of about `bytes` encoded bytes: count plus a filler string. */
static am2z_state_t *
s_state(const char *session, uint64_t bytes)
{
    am2z_state_t *st = NULL, *next = NULL;
    if (am2z_state_new(session, am2z_clock_wall_ms(), &st) != AM2Z_OK)
        return NULL;
    size_t base = am2z_state_size(st) + 16;
    size_t fill = bytes > base ? bytes - base : 0;
    char *pad = malloc(fill + 1);
    memset(pad, 'x', fill);
    pad[fill] = '\0';
    am2z_changes_t *ch = am2z_changes_new();
    am2z_changes_set_int(ch, "count", 0);
    if (fill)
        am2z_changes_set_str(ch, "pad", pad);
    am2z_state_apply(st, ch, am2z_clock_wall_ms(), 0, &next);
    am2z_changes_destroy(&ch);
    am2z_state_destroy(&st);
    free(pad);
    return next;
}

/*  `rounds` sequential executions of `proc` in one session (after 50
    warm-ups), reported as `label`. */
static int
s_round_trips(am2z_client_t *c, const s_opts_t *o, const char *proc, const char *label)
{
    uint64_t *lat = calloc(o->rounds, sizeof *lat);
    char session[64];
    snprintf(session, sizeof session, "bench-%s-%d", label, (int)getpid());
    am2z_state_t *st = s_state(session, o->state_bytes);
    /* warm up: connection, session creation, page cache */
    for (int i = 0; i < 50; i++) {
        am2z_result_t *r = NULL;
        if (am2z_client_execute(c, proc, st, session, NULL, &r) != AM2Z_OK || !r->success) {
            fprintf(stderr, "am2z-bench: %s warm-up failed: %s\n", proc,
                    r && r->error ? r->error->message : am2z_client_last_error(c));
            return -1;
        }
        am2z_result_destroy(&r);
    }
    for (uint64_t i = 0; i < o->rounds; i++) {
        am2z_result_t *r = NULL;
        uint64_t t0 = am2z_clock_mono_us();
        int rc = am2z_client_execute(c, proc, st, session, NULL, &r);
        lat[i] = am2z_clock_mono_us() - t0;
        if (rc != AM2Z_OK || !r->success) {
            fprintf(stderr, "am2z-bench: %s round trip %llu failed\n", proc,
                    (unsigned long long)i);
            return -1;
        }
        am2z_result_destroy(&r);
    }
    qsort(lat, o->rounds, sizeof *lat, s_cmp_u64);
    s_report_latency(o, label, lat, o->rounds);
    am2z_client_stop_session(c, session, false);
    am2z_state_destroy(&st);
    free(lat);
    return 0;
}

/*  CPU time (user + system) of this process so far, all threads, in µs. */
static uint64_t
s_cpu_us(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u
           + (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static int
s_throughput(am2z_client_t *c, const s_opts_t *o)
{
    am2z_state_t **states = calloc(o->sessions, sizeof *states);
    char (*ids)[AM2Z_JOB_ID_MAX + 1] = calloc(o->jobs, sizeof *ids);
    for (uint64_t s = 0; s < o->sessions; s++) {
        char session[64];
        snprintf(session, sizeof session, "bench-tp-%d-%llu", (int)getpid(), (unsigned long long)s);
        states[s] = s_state(session, o->state_bytes);
    }
    /* sliding window in chunks: submit chunk k (pipelined), then collect
       chunk k-1, so about `window` jobs stay in flight */
    uint64_t chunk = o->window / 2 ? o->window / 2 : 1;
    const am2z_state_t **batch = calloc(chunk, sizeof *batch);
    uint64_t cpu0 = s_cpu_us();
    uint64_t t0 = am2z_clock_mono_us();
    uint64_t submitted = 0, done = 0, failed = 0;
    while (done < o->jobs) {
        if (submitted < o->jobs) {
            uint64_t n = o->jobs - submitted < chunk ? o->jobs - submitted : chunk;
            for (uint64_t i = 0; i < n; i++)
                batch[i] = states[(submitted + i) % o->sessions];
            if (am2z_client_submit_many(c, "increment", batch, NULL, n, ids + submitted)
                != AM2Z_OK) {
                fprintf(stderr, "am2z-bench: submit failed: %s\n", am2z_client_last_error(c));
                return -1;
            }
            submitted += n;
        }
        uint64_t until = submitted == o->jobs ? o->jobs : submitted - chunk;
        for (; done < until; done++) {
            am2z_result_t *r = NULL;
            if (!ids[done][0] || am2z_client_wait(c, ids[done], 30000, &r) != AM2Z_OK) {
                fprintf(stderr, "am2z-bench: no result for job %llu\n", (unsigned long long)done);
                return -1;
            }
            if (!r->success && !failed++)
                fprintf(stderr, "am2z-bench: job %s failed: %s\n", ids[done],
                        r->error && r->error->message ? r->error->message : "(no error)");
            am2z_result_destroy(&r);
        }
    }
    if (failed)
        fprintf(stderr, "am2z-bench: %llu of %llu jobs failed\n", (unsigned long long)failed,
                (unsigned long long)o->jobs);
    free(batch);
    uint64_t us = am2z_clock_mono_us() - t0;
    double cpu_per_job = (double)(s_cpu_us() - cpu0) / (double)o->jobs;
    if (o->json)
        printf("{\"workload\":\"tp\",\"jobs\":%llu,\"state_bytes\":%llu,\"sessions\":%llu,"
               "\"window\":%llu,\"seconds\":%.3f,\"jobs_per_s\":%.0f,\"failed\":%llu,"
               "\"client_cpu_us_per_job\":%.1f}\n",
               (unsigned long long)o->jobs, (unsigned long long)o->state_bytes,
               (unsigned long long)o->sessions, (unsigned long long)o->window, us / 1e6,
               o->jobs / (us / 1e6), (unsigned long long)failed, cpu_per_job);
    else
        printf("throughput jobs=%llu sessions=%llu window=%llu seconds=%.3f jobs_per_s=%.0f "
               "failed=%llu client_cpu_us_per_job=%.1f\n",
               (unsigned long long)o->jobs, (unsigned long long)o->sessions,
               (unsigned long long)o->window, us / 1e6, o->jobs / (us / 1e6),
               (unsigned long long)failed, cpu_per_job);
    fflush(stdout);
    for (uint64_t s = 0; s < o->sessions; s++) {
        am2z_client_stop_session(c, am2z_state_session_id(states[s]), false);
        am2z_state_destroy(&states[s]);
    }
    free(states);
    free(ids);
    return failed ? -1 : 0;
}

/*  Runs `name` `rounds` times (after 50 warm-ups) in one local session. */
static int
s_local_one(am2z_local_t *rt, const char *name, const char *label, const s_opts_t *o)
{
    uint64_t *lat = calloc(o->rounds, sizeof *lat);
    char session[64];
    snprintf(session, sizeof session, "bench-local-%s", name);
    am2z_state_t *st = s_state(session, o->state_bytes);
    int rc = 0;
    for (uint64_t i = 0; i < o->rounds + 50 && rc == 0; i++) {
        am2z_result_t *r = NULL;
        uint64_t t0 = am2z_clock_mono_us();
        rc = am2z_local_execute(rt, name, st, session, &r);
        if (i >= 50)
            lat[i - 50] = am2z_clock_mono_us() - t0;
        if (rc == AM2Z_OK && !r->success) {
            fprintf(stderr, "am2z-bench: local %s failed: %s\n", name,
                    r->error ? r->error->message : "?");
            rc = -1;
        }
        am2z_result_destroy(&r);
    }
    if (rc == 0) {
        qsort(lat, o->rounds, sizeof *lat, s_cmp_u64);
        s_report_latency(o, label, lat, o->rounds);
    }
    am2z_local_stop_session(rt, session);
    am2z_state_destroy(&st);
    free(lat);
    return rc;
}

static int
s_local(const s_opts_t *o)
{
    am2z_local_t *rt = am2z_local_new();
    size_t n = 0;
    const am2z_processor_def_t *defs = am2z_example_processors(&n);
    for (size_t i = 0; i < n; i++)
        am2z_local_register(rt, &defs[i]);
    const char *steps[] = { "increment", "increment", "increment" };
    char err[256] = "";
    if (am2z_local_register_composite(rt, &(am2z_composite_def_t){
            .name = "bench-chain3", .kind = AM2Z_COMPOSITE_CHAIN, .steps = steps, .nsteps = 3 },
            err, sizeof err) != AM2Z_OK
        || am2z_local_register_composite(rt, &(am2z_composite_def_t){
            .name = "bench-par3", .kind = AM2Z_COMPOSITE_PARALLEL, .steps = steps, .nsteps = 3 },
            err, sizeof err) != AM2Z_OK) {
        fprintf(stderr, "am2z-bench: local composites: %s\n", err);
        am2z_local_destroy(&rt);
        return -1;
    }
    int rc = s_local_one(rt, "increment", "local", o);
    if (rc == 0)
        rc = s_local_one(rt, "bench-chain3", "local-chain3", o);
    if (rc == 0)
        rc = s_local_one(rt, "bench-par3", "local-par3", o);
    am2z_local_destroy(&rt);
    return rc;
}

static int
s_embedded(const s_opts_t *o)
{
    char dir[] = "/tmp/am2z-bench-embedded.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("am2z-bench: mkdtemp");
        return -1;
    }
    /* OpenSSL keeps per-thread state: initialise it on this thread first */
    uint8_t digest[AM2Z_SHA256_LEN];
    am2z_sha256((const uint8_t *)"", 0, digest);
    am2z_broker_config_t cfg;
    am2z_broker_config_defaults(&cfg);
    snprintf(cfg.common.data_dir, sizeof cfg.common.data_dir, "%s/data", dir);
    cfg.common.durability = AM2Z_DURABILITY_PERIODIC;
    cfg.common.log_level = AM2Z_LOG_WARN;
    cfg.events[0] = '\0';
    am2z_runtime_t *rt = am2z_runtime_new(&cfg);
    size_t n = 0;
    const am2z_processor_def_t *defs = am2z_example_processors(&n);
    for (size_t i = 0; i < n; i++)
        am2z_runtime_register(rt, &defs[i]);
    int rc = am2z_runtime_start(rt);
    if (rc != AM2Z_OK) {
        fprintf(stderr, "am2z-bench: embedded runtime: %s\n", am2z_runtime_last_error(rt));
        am2z_runtime_destroy(&rt);
        return -1;
    }
    am2z_client_t *c = am2z_runtime_client(rt);
    uint64_t *lat = calloc(o->rounds, sizeof *lat);
    am2z_state_t *st = s_state("bench-embedded", o->state_bytes);
    for (uint64_t i = 0; i < o->rounds + 50 && rc == 0; i++) {
        am2z_result_t *r = NULL;
        uint64_t t0 = am2z_clock_mono_us();
        rc = am2z_client_execute(c, "increment", st, "bench-embedded", NULL, &r);
        if (i >= 50)
            lat[i - 50] = am2z_clock_mono_us() - t0;
        if (rc == AM2Z_OK && !r->success)
            rc = -1;
        am2z_result_destroy(&r);
    }
    if (rc == 0) {
        qsort(lat, o->rounds, sizeof *lat, s_cmp_u64);
        s_report_latency(o, "embedded", lat, o->rounds);
    } else {
        fprintf(stderr, "am2z-bench: embedded execute failed\n");
    }
    am2z_state_destroy(&st);
    free(lat);
    am2z_runtime_destroy(&rt);
    char cmd[sizeof dir + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "am2z-bench: could not remove %s\n", dir);
    return rc;
}

static int
s_queries(am2z_client_t *c, const s_opts_t *o)
{
    uint64_t *get = calloc(o->rounds, sizeof *get);
    uint64_t *stop = calloc(o->rounds, sizeof *stop);
    if (!get || !stop) {
        free(get);
        free(stop);
        return -1;
    }
    char session[64];
    int rc = 0;
    for (uint64_t i = 0; i < o->rounds + 20 && rc == 0; i++) {   /* 20 warm-ups */
        snprintf(session, sizeof session, "bench-q-%d-%llu", (int)getpid(),
                 (unsigned long long)i);
        am2z_state_t *st = s_state(session, o->state_bytes);
        am2z_result_t *r = NULL;
        rc = am2z_client_execute(c, "increment", st, session, NULL, &r);
        if (rc == AM2Z_OK && !r->success)
            rc = -1;
        am2z_result_destroy(&r);
        am2z_state_destroy(&st);
        uint64_t t0 = am2z_clock_mono_us();
        if (rc == AM2Z_OK)
            rc = am2z_client_get_state(c, session, &st);
        uint64_t t1 = am2z_clock_mono_us();
        am2z_state_destroy(&st);
        if (rc == AM2Z_OK)
            rc = am2z_client_stop_session(c, session, false);
        uint64_t t2 = am2z_clock_mono_us();
        if (i >= 20) {
            get[i - 20] = t1 - t0;
            stop[i - 20] = t2 - t1;
        }
        if (rc != AM2Z_OK)
            fprintf(stderr, "am2z-bench: query round %llu failed: %s\n",
                    (unsigned long long)i, am2z_client_last_error(c));
    }
    if (rc == 0) {
        qsort(get, o->rounds, sizeof *get, s_cmp_u64);
        qsort(stop, o->rounds, sizeof *stop, s_cmp_u64);
        s_report_latency(o, "get_state", get, o->rounds);
        s_report_latency(o, "stop", stop, o->rounds);
    }
    free(get);
    free(stop);
    return rc;
}

static int
s_session_cycles(am2z_client_t *c, const s_opts_t *o)
{
    uint64_t *lat = calloc(o->cycles, sizeof *lat);
    char session[64];
    int rc = 0;
    for (uint64_t i = 0; i < o->cycles + 20 && rc == 0; i++) {   /* 20 warm-up cycles */
        snprintf(session, sizeof session, "bench-sc-%d-%llu", (int)getpid(),
                 (unsigned long long)i);
        uint64_t t0 = am2z_clock_mono_us();
        am2z_state_t *st = s_state(session, o->state_bytes);
        am2z_result_t *r = NULL;
        rc = am2z_client_execute(c, "increment", st, session, NULL, &r);
        if (rc == AM2Z_OK && !r->success)
            rc = -1;
        if (rc == AM2Z_OK)
            rc = am2z_client_stop_session(c, session, false);
        if (i >= 20)
            lat[i - 20] = am2z_clock_mono_us() - t0;
        if (rc != AM2Z_OK)
            fprintf(stderr, "am2z-bench: session cycle %llu failed: %s\n",
                    (unsigned long long)i, am2z_client_last_error(c));
        am2z_result_destroy(&r);
        am2z_state_destroy(&st);
    }
    if (rc == 0) {
        qsort(lat, o->cycles, sizeof *lat, s_cmp_u64);
        s_report_latency(o, "session", lat, o->cycles);
    }
    free(lat);
    return rc;
}

int
main(int argc, char **argv)
{
    s_opts_t o;
    char err[AM2Z_CFG_ERR_MAX];
    char *positional[argc > 0 ? argc : 1];
    am2z_cfg_args_t args = { .positional = positional };
    extern char **environ;
    if (am2z_cfg_load(s_table, &o, argc, argv, environ, &args, err, sizeof err) != AM2Z_OK) {
        fprintf(stderr, "am2z-bench: %s\n", err);
        return 2;
    }
    if (args.help) {
        printf("usage: am2z-bench [--broker EP] [--workload rt,tp,chain3,par3,session,query|local|embedded] "
               "[--json] "
               "[--rounds N] [--jobs N] [--cycles N] [--state-bytes N]\n\n");
        am2z_cfg_print_help(s_table, stdout);
        return 0;
    }
    zsys_handler_set(NULL);
    if (strcmp(o.workload, "local") == 0)           /* no broker needed */
        return s_local(&o) == 0 ? 0 : 1;
    if (strcmp(o.workload, "embedded") == 0)
        return s_embedded(&o) == 0 ? 0 : 1;
    am2z_client_t *c = NULL;
    if (am2z_client_connect(o.broker, &c) != AM2Z_OK) {
        fprintf(stderr, "am2z-bench: cannot connect to %s\n", o.broker);
        return 2;
    }
    am2z_client_set_timeout(c, 30000);
    int rc = 0;
    if (o.rounds && s_wants(o.workload, "rt") && s_round_trips(c, &o, "increment", "rt") != 0)
        rc = 1;
    if (rc == 0 && o.rounds && s_wants(o.workload, "chain3")
        && s_round_trips(c, &o, "chain3", "chain3") != 0)
        rc = 1;
    if (rc == 0 && o.rounds && s_wants(o.workload, "par3")
        && s_round_trips(c, &o, "par3", "par3") != 0)
        rc = 1;
    if (rc == 0 && o.jobs && s_wants(o.workload, "tp") && s_throughput(c, &o) != 0)
        rc = 1;
    if (rc == 0 && s_wants(o.workload, "session") && s_session_cycles(c, &o) != 0)
        rc = 1;
    if (rc == 0 && o.rounds && s_wants(o.workload, "query") && s_queries(c, &o) != 0)
        rc = 1;
    if (rc == 0 && s_wants(o.workload, "local") && s_local(&o) != 0)
        rc = 1;
    am2z_client_destroy(&c);
    return rc;
}
