/*  example_worker.c — am2z-example-worker: serves every example processor
    (am2z_examples.h) to a broker and announces the example composites
    (run by the broker).

        am2z-example-worker [--broker tcp://127.0.0.1:7771] [--id ID]
                            [--heartbeat 1000ms] [--liveness 5]
                            [--grace 10s] [--concurrency N]
                            [--thread-idle 60s] [--cpus LIST]
                            [--malloc-arenas N]
                            [--log-level info] [--log-format text]

    Settings also come from AM2Z_* variables and --config FILE. Prints one
    line on stdout once registered:
        am2z-example-worker ready broker=ENDPOINT processors=N
    SIGTERM / SIGINT stop it gracefully: no new job is started, running
    jobs get up to --grace to finish (their results are delivered), then
    whatever still runs is handed back to the broker (which runs it again
    elsewhere as a new attempt) and cancelled; it exits 0.
*/
#include "am2z_config.h"
#include "am2z_sys.h"
#include "am2z_examples.h"
#include "am2z_worker.h"

#include <czmq.h>
#include <malloc.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

typedef struct {
    char broker[256];             /* backend endpoint */
    char id[65];                  /* worker id, "" = generated */
    uint64_t heartbeat_ms;        /* heartbeat interval */
    uint64_t liveness;            /* missed heartbeats before reconnecting */
    int log_level;                /* am2z_log_level_t */
    int log_format;               /* am2z_log_format_t */
    uint64_t concurrency;         /* 0 = each processor's own */
    uint64_t grace_ms;            /* stop: time running jobs get to finish */
    uint64_t thread_idle_ms;      /* an idle actor thread exits after this */
    char cpus[64];                /* CPUs to run on, "" = any */
    uint64_t malloc_arenas;       /* glibc malloc arenas, 0 = one per allowed CPU */
} s_opts_t;

static const am2z_cfg_def_t s_table[] = {
    { "broker", AM2Z_CFG_STRING, offsetof(s_opts_t, broker), 256,
      AM2Z_DEFAULT_BACKEND, 0, 0, NULL, "broker backend endpoint" },
    { "id", AM2Z_CFG_STRING, offsetof(s_opts_t, id), 65, "", 0, 0, NULL,
      "worker instance id (default: generated)" },
    { "heartbeat", AM2Z_CFG_MS, offsetof(s_opts_t, heartbeat_ms), 0, "1000ms",
      10, 600000, NULL, "heartbeat interval" },
    { "liveness", AM2Z_CFG_UINT, offsetof(s_opts_t, liveness), 0, "5", 1, 1000,
      NULL, "missed heartbeats before the broker counts as gone" },
    { "log-level", AM2Z_CFG_ENUM, offsetof(s_opts_t, log_level), 0, "info", 0, 0,
      am2z_log_level_names, "trace, debug, info, warn, error or off" },
    { "log-format", AM2Z_CFG_ENUM, offsetof(s_opts_t, log_format), 0, "text", 0, 0,
      am2z_log_format_names, "text or json (one object per line)" },
    { "concurrency", AM2Z_CFG_UINT, offsetof(s_opts_t, concurrency), 0, "0", 0, 4096,
      NULL, "slots (jobs run at once) per processor; 0 = each processor's default" },
    { "grace", AM2Z_CFG_MS, offsetof(s_opts_t, grace_ms), 0, "10s", 0, 3600000,
      NULL, "on SIGTERM, how long running jobs may finish before they are handed back" },
    { "thread-idle", AM2Z_CFG_MS, offsetof(s_opts_t, thread_idle_ms), 0, "60s", 0,
      (uint64_t)86400000, NULL,
      "an actor thread with no job for this long exits (each processor keeps one); "
      "0 = threads stay once started" },
    { "cpus", AM2Z_CFG_STRING, offsetof(s_opts_t, cpus), 64, "", 0, 0, NULL,
      "CPUs the worker's threads run on (main, ZeroMQ I/O, actors), e.g. 1 or 0-3; "
      "empty = any" },
    { "malloc-arenas", AM2Z_CFG_UINT, offsetof(s_opts_t, malloc_arenas), 0, "0", 0, 1024,
      NULL,
      "glibc malloc arenas the worker's threads share; 0 = one per CPU it may run on "
      "(glibc's own limit is 8 per core, about one per actor thread)" },
    { NULL, 0, 0, 0, NULL, 0, 0, NULL, NULL }
};

/*  The only mutable global: set by the signal handler, read by main. */
static volatile sig_atomic_t s_stop;

static void
s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

int
main(int argc, char **argv)
{
    /*  Our handler, not CZMQ's: it only sets a flag (before any CZMQ call). */
    zsys_handler_set(NULL);
    am2z_sys_raise_limits(NULL);  /* one fd per ZeroMQ socket */

    /*  Handler first, so a signal during start-up is not fatal; the stop
        signals are blocked before any thread exists, so every worker
        thread inherits the mask and they reach main in sigsuspend. */
    sigset_t stop_set, old_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0
        || sigprocmask(SIG_BLOCK, &stop_set, &old_set) != 0) {
        perror("am2z-example-worker: sigaction");
        return 1;
    }

    s_opts_t opts;
    char err[AM2Z_CFG_ERR_MAX] = "";
    char **positional = calloc((size_t)argc + 1, sizeof *positional);
    am2z_cfg_args_t args = { .positional = positional };
    if (!positional) {
        fprintf(stderr, "am2z-example-worker: out of memory\n");
        return 1;
    }
    int rc = am2z_cfg_load(s_table, &opts, argc, argv, environ, &args, err,
                           sizeof err);
    if (rc != AM2Z_OK || args.help || args.npositional > 0) {
        FILE *out = args.help && rc == AM2Z_OK ? stdout : stderr;
        if (rc != AM2Z_OK)
            fprintf(stderr, "am2z-example-worker: %s\n", err);
        else if (args.npositional > 0)
            fprintf(stderr, "am2z-example-worker: unexpected argument '%s'\n",
                    args.positional[0]);
        fprintf(out, "usage: am2z-example-worker [options]\n");
        am2z_cfg_print_help(s_table, out);
        free(positional);
        return args.help && rc == AM2Z_OK ? 0 : 2;
    }
    free(positional);
    /*  before the first thread: ZeroMQ's I/O thread and the actors inherit it */
    if (am2z_sys_set_cpus(opts.cpus, err, sizeof err) != AM2Z_OK) {
        fprintf(stderr, "am2z-example-worker: %s\n", err);
        return 2;
    }
    /*  Before the first thread as well: every thread after the main one
        would otherwise get an arena of its own, up to 8 per core, each
        with its own resident pages (100 slots: ≈ 0.3 MB more peak RSS). */
    unsigned arenas = opts.malloc_arenas ? (unsigned)opts.malloc_arenas
                                         : am2z_sys_cpus_allowed();
    if (arenas > 0 && mallopt(M_ARENA_MAX, (int)arenas) != 1)
        fprintf(stderr, "am2z-example-worker: mallopt(M_ARENA_MAX, %u) failed; "
                "glibc's default applies\n", arenas);

    am2z_worker_config_t cfg;
    am2z_worker_config_defaults(&cfg);
    snprintf(cfg.broker, sizeof cfg.broker, "%s", opts.broker);
    snprintf(cfg.id, sizeof cfg.id, "%s", opts.id);
    cfg.heartbeat_ms = opts.heartbeat_ms;
    cfg.liveness = (uint32_t)opts.liveness;
    cfg.log_level = opts.log_level;
    cfg.log_format = opts.log_format;
    cfg.grace_ms = opts.grace_ms;
    cfg.thread_idle_ms = opts.thread_idle_ms;

    am2z_worker_t *worker = am2z_worker_new(&cfg);
    if (!worker) {
        fprintf(stderr, "am2z-example-worker: out of memory\n");
        return 1;
    }
    size_t n = 0;
    const am2z_processor_def_t *defs = am2z_example_processors(&n);
    for (size_t i = 0; i < n; i++) {
        am2z_processor_def_t def = defs[i];
        if (opts.concurrency)
            def.concurrency = (uint32_t)opts.concurrency;
        rc = am2z_worker_register(worker, &def);
        if (rc != AM2Z_OK) {
            fprintf(stderr, "am2z-example-worker: register %s: %s\n",
                    defs[i].name, am2z_strerror(rc));
            am2z_worker_destroy(&worker);
            return 1;
        }
    }
    size_t ncomps = 0;
    const am2z_composite_def_t *comps = am2z_example_composites(&ncomps);
    for (size_t i = 0; i < ncomps; i++) {
        rc = am2z_worker_register_composite(worker, &comps[i]);
        if (rc != AM2Z_OK) {
            fprintf(stderr, "am2z-example-worker: register composite %s: %s\n",
                    comps[i].name, am2z_strerror(rc));
            am2z_worker_destroy(&worker);
            return 1;
        }
    }

    rc = am2z_worker_start(worker);
    if (rc != AM2Z_OK) {
        fprintf(stderr, "am2z-example-worker: cannot start on %s: %s\n",
                cfg.broker, am2z_strerror(rc));
        am2z_worker_destroy(&worker);
        return 1;
    }
    printf("am2z-example-worker ready broker=%s processors=%zu\n", cfg.broker, n);
    fflush(stdout);

    sigset_t wait_set = old_set;
    sigdelset(&wait_set, SIGTERM);
    sigdelset(&wait_set, SIGINT);
    while (!s_stop)
        sigsuspend(&wait_set);

    am2z_worker_stop(worker);
    am2z_worker_destroy(&worker);
    return 0;
}
