/*  am2z_cluster.c — see am2z_cluster.h. */
#include "am2z_cluster.h"
#include "am2z_json.h"
#include "am2z_testutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/*  Only test executables that have the daemons get the real code; the
    others still compile this file (it is in every test executable). */
#if defined(AM2Z_BROKER_BIN) && defined(AM2Z_EXAMPLE_WORKER_BIN)

#define S_ARGV_MAX 64

const char *const am2z_cluster_default_flags[] = {
    "--heartbeat", "200ms", "--log-level", "warn", NULL
};

/*  Appends a NULL-ended list to argv (bounded), keeping argv NULL-ended. */
static void
s_append(char **argv, int *n, const char *const *list)
{
    for (int i = 0; list && list[i]; i++) {
        ck_assert_msg(*n < S_ARGV_MAX - 1, "am2z_cluster: too many arguments");
        argv[(*n)++] = (char *)list[i];
    }
    argv[*n] = NULL;
}

static const char *const *
s_flags(const am2z_cluster_t *cl)
{
    return cl->flags ? cl->flags : am2z_cluster_default_flags;
}

int
am2z_cluster_try_broker(am2z_cluster_t *cl, const char *tag, const char *const *extra)
{
    if (!cl->dir[0])
        am2z_test_tmpdir(tag, cl->dir, sizeof cl->dir);
    const char *any = "tcp://127.0.0.1:*";
    const char *base[] = { AM2Z_BROKER_BIN, "--data-dir", cl->dir,
                           "--frontend", cl->fixed ? cl->frontend : any,
                           "--backend", cl->fixed ? cl->backend : any,
                           "--events", cl->fixed ? cl->events : any, NULL };
    char *argv[S_ARGV_MAX];
    int n = 0;
    s_append(argv, &n, cl->wrap);
    s_append(argv, &n, base);
    s_append(argv, &n, s_flags(cl));
    s_append(argv, &n, extra);
    ck_assert_int_eq(am2z_testproc_start(&cl->broker, argv), 0);
    if (am2z_testproc_wait_line(&cl->broker, "ready", 10000) != 0) {
        am2z_testproc_stop(&cl->broker, SIGKILL, 5000);
        return -1;
    }
    /*  the ready line names the endpoints it bound */
    ck_assert_int_eq(am2z_testproc_field(&cl->broker, "frontend", cl->frontend,
                                         sizeof cl->frontend), 0);
    ck_assert_int_eq(am2z_testproc_field(&cl->broker, "backend", cl->backend,
                                         sizeof cl->backend), 0);
    ck_assert_int_eq(am2z_testproc_field(&cl->broker, "events", cl->events,
                                         sizeof cl->events), 0);
    return 0;
}

void
am2z_cluster_start_broker(am2z_cluster_t *cl, const char *tag, const char *const *extra)
{
    ck_assert_msg(am2z_cluster_try_broker(cl, tag, extra) == 0,
                  "broker did not report ready%s%s", cl->fixed ? " on " : "",
                  cl->fixed ? cl->frontend : "");
}

void
am2z_cluster_pick_ports(am2z_cluster_t *cl)
{
    snprintf(cl->frontend, sizeof cl->frontend, "tcp://127.0.0.1:%d", am2z_testproc_free_port());
    snprintf(cl->backend, sizeof cl->backend, "tcp://127.0.0.1:%d", am2z_testproc_free_port());
    snprintf(cl->events, sizeof cl->events, "tcp://127.0.0.1:%d", am2z_testproc_free_port());
    cl->fixed = true;
}

void
am2z_cluster_kill_broker(am2z_cluster_t *cl)
{
    ck_assert_int_eq(kill(cl->broker.pid, SIGKILL), 0);
    am2z_testproc_stop(&cl->broker, 0, 10000);
}

void
am2z_cluster_spawn_worker(const am2z_cluster_t *cl, am2z_testproc_t *w,
                          const char *const *extra)
{
    const char *base[] = { AM2Z_EXAMPLE_WORKER_BIN, "--broker", cl->backend, NULL };
    char *argv[S_ARGV_MAX];
    int n = 0;
    s_append(argv, &n, base);
    s_append(argv, &n, s_flags(cl));
    s_append(argv, &n, extra);
    ck_assert_int_eq(am2z_testproc_start(w, argv), 0);
    ck_assert_msg(am2z_testproc_wait_line(w, "ready", 10000) == 0,
                  "worker did not report ready");
}

am2z_testproc_t *
am2z_cluster_add_worker(am2z_cluster_t *cl, const char *const *extra)
{
    ck_assert_uint_lt(cl->nworkers, AM2Z_CLUSTER_WORKERS_MAX);
    am2z_testproc_t *w = &cl->worker[cl->nworkers];
    am2z_cluster_spawn_worker(cl, w, extra);
    cl->nworkers++;
    return w;
}

am2z_testproc_t *
am2z_cluster_start_worker(am2z_cluster_t *cl, const char *const *extra)
{
    am2z_testproc_t *w = am2z_cluster_add_worker(cl, extra);
    am2z_cluster_wait_workers(cl, cl->nworkers);
    return w;
}

void
am2z_cluster_wait_workers(const am2z_cluster_t *cl, uint64_t n)
{
    am2z_client_t *c = am2z_cluster_client(cl, 2000);
    am2z_stats_t st = { 0 };
    uint64_t deadline = am2z_test_deadline(10000);
    while (true) {
        if (am2z_client_get_stats(c, &st) == AM2Z_OK && st.workers >= n)
            break;
        if (am2z_clock_mono_us() >= deadline)
            break;
        usleep(10 * 1000);
    }
    ck_assert_msg(st.workers >= n, "broker counts %llu workers, expected %llu",
                  (unsigned long long)st.workers, (unsigned long long)n);
    am2z_client_destroy(&c);
}

void
am2z_cluster_wait_processor(const am2z_cluster_t *cl, const char *name)
{
    am2z_client_t *c = am2z_cluster_client(cl, 2000);
    bool yes = false;
    uint64_t deadline = am2z_test_deadline(5000);
    while (true) {
        if (am2z_client_is_processor_registered(c, name, &yes) != AM2Z_OK)
            yes = false;
        if (yes || am2z_clock_mono_us() >= deadline)
            break;
        usleep(10 * 1000);
    }
    ck_assert_msg(yes, "%s never registered", name);
    am2z_client_destroy(&c);
}

void
am2z_cluster_start(am2z_cluster_t *cl, const char *tag, const char *const *extra)
{
    am2z_cluster_start_broker(cl, tag, extra);
    am2z_cluster_start_worker(cl, NULL);
}

void
am2z_cluster_stop_workers(am2z_cluster_t *cl)
{
    for (size_t i = 0; i < cl->nworkers; i++)
        am2z_testproc_stop(&cl->worker[i], SIGTERM, 10000);
    cl->nworkers = 0;
}

void
am2z_cluster_halt(am2z_cluster_t *cl)
{
    am2z_cluster_stop_workers(cl);
    int status = am2z_testproc_stop(&cl->broker, SIGTERM, 15000);
    ck_assert_msg(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "broker did not exit 0 on SIGTERM");
}

void
am2z_cluster_stop(am2z_cluster_t *cl)
{
    am2z_cluster_halt(cl);
    am2z_test_rmtree(cl->dir);
}

am2z_client_t *
am2z_cluster_client(const am2z_cluster_t *cl, uint64_t timeout_ms)
{
    am2z_client_t *c = NULL;
    ck_assert_int_eq(am2z_client_connect(cl->frontend, &c), AM2Z_OK);
    am2z_client_set_timeout(c, timeout_ms);
    return c;
}

#ifdef AM2Z_BIN
int
am2z_cluster_cli(const am2z_cluster_t *cl, const char *const *args, char *out,
                 size_t out_size)
{
    const char *const head[] = { AM2Z_BIN, NULL };
    const char *const tail[] = { "--broker", cl->frontend, NULL };
    char *argv[S_ARGV_MAX];
    int n = 0;
    s_append(argv, &n, head);
    for (int i = 0; args[i] && i < 28; i++)
        argv[n++] = (char *)args[i];
    s_append(argv, &n, tail);
    return am2z_testproc_run(argv, out, out_size, 30000);
}

void
am2z_cluster_wait_workers_cli(const am2z_cluster_t *cl, uint64_t n)
{
    const char *const stats[] = { "stats", "--timeout", "2000", NULL };
    char out[4096];
    unsigned long long workers = 0;
    uint64_t deadline = am2z_test_deadline(10000);
    while (true) {
        const char *at = NULL;
        if (am2z_cluster_cli(cl, stats, out, sizeof out) == 0
            && (at = strstr(out, "\"workers\"")) != NULL) {
            at = strchr(at, ':');
            workers = at ? strtoull(at + 1, NULL, 10) : 0;   /* strtoull skips spaces */
        }
        if (workers >= n || am2z_clock_mono_us() >= deadline)
            break;
        usleep(10 * 1000);
    }
    ck_assert_msg(workers >= n, "broker counts %llu workers, expected %llu", workers,
                  (unsigned long long)n);
}
#endif

long
am2z_cluster_broker_rss_kib(const am2z_cluster_t *cl)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)cl->broker.pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

am2z_state_t *
am2z_cluster_state(const char *session, const char *key, int64_t value, const char *text)
{
    am2z_state_t *st = NULL, *next = NULL, *v1 = NULL;
    ck_assert_int_eq(am2z_state_new(session, am2z_clock_wall_ms(), &st), AM2Z_OK);
    am2z_changes_t *ch = am2z_changes_new();
    if (text)
        ck_assert_int_eq(am2z_changes_set_str(ch, key, text), AM2Z_OK);
    else
        ck_assert_int_eq(am2z_changes_set_int(ch, key, value), AM2Z_OK);
    /* apply bumps the version; rebuild at version 1 so tests read clearly */
    ck_assert_int_eq(am2z_state_apply(st, ch, am2z_clock_wall_ms(), 0, &next), AM2Z_OK);
    ck_assert_int_eq(am2z_state_with_metadata(next, session, 1, am2z_state_created_at(next),
                                              am2z_state_last_updated(next), &v1), AM2Z_OK);
    am2z_changes_destroy(&ch);
    am2z_state_destroy(&st);
    am2z_state_destroy(&next);
    return v1;
}

#endif

json_t *
am2z_cluster_query(am2z_client_t *c, const char *what, const char *arg)
{
    uint8_t *data = NULL;
    size_t size = 0;
    int rc = am2z_client_query(c, what, arg, &data, &size);
    ck_assert_msg(rc == AM2Z_OK, "QUERY %s: %s", what, am2z_client_last_error(c));
    json_t *j = NULL;
    ck_assert_int_eq(am2z_json_from_msgpack(data, size, &j), AM2Z_OK);
    free(data);
    return j;
}

int64_t
am2z_cluster_check_retention(am2z_client_t *c)
{
    json_t *j = am2z_cluster_query(c, "stats", NULL);
    json_t *store = json_object_get(j, "store");
    json_t *kept = json_object_get(j, "resultsRetained");
    json_t *results = json_object_get(store, "results"), *done = json_object_get(store, "done");
    ck_assert_msg(json_is_integer(kept) && json_is_integer(results) && json_is_integer(done),
                  "stats lacks resultsRetained, store.results or store.done");
    int64_t n = (int64_t)json_integer_value(kept);
    ck_assert_msg(n == (int64_t)json_integer_value(results)
                  && n == (int64_t)json_integer_value(done),
                  "retention index %lld, stored results %lld, done entries %lld", (long long)n,
                  (long long)json_integer_value(results), (long long)json_integer_value(done));
    json_decref(j);
    return n;
}
