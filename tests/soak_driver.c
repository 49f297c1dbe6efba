/*  soak_driver.c — am2z-soak: the client side of tests/soak.sh.

        am2z-soak --frontend tcp://127.0.0.1:PORT [--seconds 60] [--batch 64]
                  [--sessions 32] [--log FILE]

    Submits `increment` jobs continuously for --seconds (pipelined batches
    over --sessions fresh sessions, one batch in flight while the previous
    one is collected), then collects every outstanding result. Every
    accepted job id is logged as "A <id>", every result as
    "R <id> <ok> <attempt> <version>" (to --log, default stderr-less
    /dev/null). At the end it checks:
      - results == accepted, and no job id got two results;
      - every result succeeded;
      - exactly-once state: each session's stored version is 1 + the number
        of its jobs, and its count equals that number.
    Prints one summary line on stdout and exits 0 when all hold, 1 if not,
    2 on bad usage.
*/
#include "am2z_client.h"

#include <czmq.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    char id[AM2Z_JOB_ID_MAX + 1];
    int session;                  /* index into the session table */
} s_job_t;

typedef struct {
    s_job_t *items;
    size_t count;
    size_t cap;
} s_jobs_t;

static int
s_push(s_jobs_t *v, const char *id, int session)
{
    if (v->count == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 1024;
        s_job_t *items = realloc(v->items, cap * sizeof *items);
        if (!items)
            return -1;
        v->items = items;
        v->cap = cap;
    }
    snprintf(v->items[v->count].id, sizeof v->items[v->count].id, "%s", id);
    v->items[v->count].session = session;
    v->count++;
    return 0;
}

static int
s_cmp_id(const void *a, const void *b)
{
    return strcmp(((const s_job_t *)a)->id, ((const s_job_t *)b)->id);
}

static uint64_t
s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

typedef struct {
    FILE *log;
    s_jobs_t results;             /* job ids that produced a result */
    size_t failed;
    size_t lost;                  /* waits that gave up */
    uint64_t max_attempt;
} s_tally_t;

static void
s_collect(am2z_client_t *c, const s_job_t *job, s_tally_t *t, uint64_t timeout_ms)
{
    am2z_result_t *r = NULL;
    int rc = am2z_client_wait(c, job->id, timeout_ms, &r);
    if (rc != AM2Z_OK) {
        fprintf(stderr, "am2z-soak: no result for %s: %s\n", job->id, am2z_strerror(rc));
        t->lost++;
        return;
    }
    uint64_t version = r->state ? am2z_state_version(r->state) : 0;
    if (t->log)
        fprintf(t->log, "R %s %d %" PRIu32 " %" PRIu64 "\n", r->job_id, r->success ? 1 : 0,
                r->attempt, version);
    if (!r->success) {
        t->failed++;
        fprintf(stderr, "am2z-soak: job %s failed: %s\n", r->job_id,
                r->error ? r->error->message : "?");
    }
    if (r->attempt > t->max_attempt)
        t->max_attempt = r->attempt;
    s_push(&t->results, r->job_id, job->session);
    am2z_result_destroy(&r);
}

int
main(int argc, char **argv)
{
    const char *frontend = NULL, *log_path = NULL;
    long seconds = 60, batch = 64, nsessions = 32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--frontend") == 0 && v)
            frontend = argv[++i];
        else if (strcmp(a, "--seconds") == 0 && v)
            seconds = atol(argv[++i]);
        else if (strcmp(a, "--batch") == 0 && v)
            batch = atol(argv[++i]);
        else if (strcmp(a, "--sessions") == 0 && v)
            nsessions = atol(argv[++i]);
        else if (strcmp(a, "--log") == 0 && v)
            log_path = argv[++i];
        else {
            fprintf(stderr, "usage: am2z-soak --frontend EP [--seconds N] [--batch N] "
                            "[--sessions N] [--log FILE]\n");
            return 2;
        }
    }
    if (!frontend || seconds < 1 || batch < 1 || batch > 4096 || nsessions < 1
        || nsessions > 100000) {
        fprintf(stderr, "am2z-soak: --frontend required; --seconds >= 1, --batch 1..4096, "
                        "--sessions 1..100000\n");
        return 2;
    }
    zsys_handler_set(NULL);

    s_tally_t t = { 0 };
    if (log_path) {
        t.log = fopen(log_path, "w");
        if (!t.log) {
            perror(log_path);
            return 1;
        }
    }
    am2z_client_t *c = NULL;
    if (am2z_client_connect(frontend, &c) != AM2Z_OK) {
        fprintf(stderr, "am2z-soak: cannot connect to %s\n", frontend);
        return 1;
    }
    am2z_client_set_timeout(c, 60000);
    /*  the workers' processors first (a SUBMIT before that is refused) */
    bool known = false;
    for (int i = 0; i < 1000 && !known; i++) {
        if (am2z_client_is_processor_registered(c, "increment", &known) != AM2Z_OK || !known)
            nanosleep(&(struct timespec){ .tv_nsec = 10000000L }, NULL);
    }
    if (!known) {
        fprintf(stderr, "am2z-soak: no worker serves increment after 10 s\n");
        return 1;
    }

    /*  fresh sessions for this run */
    char (*names)[64] = calloc((size_t)nsessions, sizeof *names);
    size_t *per_session = calloc((size_t)nsessions, sizeof *per_session);
    const char **sessions = calloc((size_t)batch, sizeof *sessions);
    const am2z_state_t **states = calloc((size_t)batch, sizeof *states);
    char (*ids)[AM2Z_JOB_ID_MAX + 1] = calloc((size_t)batch, sizeof *ids);
    int *batch_session = calloc((size_t)batch, sizeof *batch_session);
    if (!names || !per_session || !sessions || !states || !ids || !batch_session) {
        fprintf(stderr, "am2z-soak: out of memory\n");
        return 1;
    }
    char tag[AM2Z_ID_LEN + 1];
    if (am2z_id_new(tag) != AM2Z_OK)
        snprintf(tag, sizeof tag, "%ld", (long)getpid());
    for (long s = 0; s < nsessions; s++)
        snprintf(names[s], sizeof names[s], "soak-%.12s-%ld", tag, s);

    s_jobs_t accepted = { 0 };
    size_t collected_upto = 0;    /* accepted[0..collected_upto) are collected */
    size_t refused = 0, next_session = 0;
    uint64_t t0 = s_now_ms(), deadline = t0 + (uint64_t)seconds * 1000;
    while (s_now_ms() < deadline) {
        for (long i = 0; i < batch; i++) {
            batch_session[i] = (int)(next_session++ % (size_t)nsessions);
            sessions[i] = names[batch_session[i]];
            states[i] = NULL;
        }
        int rc = am2z_client_submit_many(c, "increment", states, sessions, (size_t)batch, ids);
        if (rc != AM2Z_OK)
            fprintf(stderr, "am2z-soak: submit_many: %s (%s)\n", am2z_strerror(rc),
                    am2z_client_last_error(c));
        size_t before = accepted.count;
        for (long i = 0; i < batch; i++) {
            if (ids[i][0] == '\0') {
                refused++;
                continue;
            }
            if (t.log)
                fprintf(t.log, "A %s\n", ids[i]);
            per_session[batch_session[i]]++;
            if (s_push(&accepted, ids[i], batch_session[i]) != 0) {
                fprintf(stderr, "am2z-soak: out of memory\n");
                return 1;
            }
        }
        /*  keep one batch in flight: collect everything before this one */
        for (; collected_upto < before; collected_upto++)
            s_collect(c, &accepted.items[collected_upto], &t, 60000);
    }
    for (; collected_upto < accepted.count; collected_upto++)
        s_collect(c, &accepted.items[collected_upto], &t, 60000);

    /*  no job id twice */
    size_t dup = 0;
    qsort(t.results.items, t.results.count, sizeof *t.results.items, s_cmp_id);
    for (size_t i = 1; i < t.results.count; i++)
        if (strcmp(t.results.items[i].id, t.results.items[i - 1].id) == 0) {
            fprintf(stderr, "am2z-soak: job %s has two results\n", t.results.items[i].id);
            dup++;
        }
    /*  exactly-once state per session */
    size_t bad_sessions = 0;
    for (long s = 0; s < nsessions; s++) {
        if (per_session[s] == 0)
            continue;
        am2z_state_t *st = NULL;
        int64_t count = -1;
        if (am2z_client_get_state(c, names[s], &st) != AM2Z_OK
            || am2z_state_version(st) != 1 + per_session[s]
            || am2z_state_get_int(st, "count", &count) != AM2Z_OK
            || count != (int64_t)per_session[s]) {
            fprintf(stderr, "am2z-soak: session %s: %zu jobs, stored version %" PRIu64
                            " count %lld\n", names[s], per_session[s],
                    st ? am2z_state_version(st) : 0, (long long)count);
            bad_sessions++;
        }
        am2z_state_destroy(&st);
    }
    bool ok = t.results.count == accepted.count && dup == 0 && t.failed == 0
              && t.lost == 0 && bad_sessions == 0;
    printf("am2z-soak %s: seconds=%.1f accepted=%zu results=%zu duplicates=%zu failed=%zu "
           "lost=%zu refused=%zu bad_sessions=%zu max_attempt=%" PRIu64 "\n",
           ok ? "PASS" : "FAIL", (double)(s_now_ms() - t0) / 1000.0, accepted.count,
           t.results.count, dup, t.failed, t.lost, refused, bad_sessions, t.max_attempt);
    fflush(stdout);
    if (t.log)
        fclose(t.log);
    am2z_client_destroy(&c);
    free(accepted.items);
    free(t.results.items);
    free(names);
    free(per_session);
    free(sessions);
    free(states);
    free(ids);
    free(batch_session);
    return ok ? 0 : 1;
}
