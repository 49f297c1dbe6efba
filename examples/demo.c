/*  demo.c — am2z-demo: the AM2Z README's order-processing example.

    Runs validate-order -> check-inventory -> process-payment ->
    create-shipment -> send-confirmation -> update-inventory in one session,
    printing each step and its events as they happen, then the final state
    with its version.

    By default everything runs in this process (the embedded runtime: broker
    and example worker as threads, LMDB under ./am2z-data). With --broker
    EP it is only a client of a running am2z-broker (see
    examples/demo-distributed.sh, which starts a broker and two workers).
*/
#include "am2z_client.h"
#include "am2z_config.h"
#include "am2z_envelope.h"
#include "am2z_examples.h"
#include "am2z_json.h"
#include "am2z_runtime.h"

#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char broker[256];             /* "" = embedded runtime */
    char data_dir[AM2Z_PATH_MAX];
    char session[AM2Z_SESSION_ID_MAX + 1];
} s_opts_t;

static const am2z_cfg_def_t s_table[] = {
    { "broker", AM2Z_CFG_STRING, offsetof(s_opts_t, broker), 256, "", 0, 0, NULL,
      "frontend of a running am2z-broker; empty = embedded runtime" },
    { "data-dir", AM2Z_CFG_STRING, offsetof(s_opts_t, data_dir), AM2Z_PATH_MAX,
      "./am2z-data", 0, 0, NULL, "embedded runtime: LMDB directory" },
    { "session", AM2Z_CFG_STRING, offsetof(s_opts_t, session), AM2Z_SESSION_ID_MAX + 1,
      "demo-order-1001", 0, 0, NULL, "session the order runs in" },
    { NULL }
};

static const char *const s_steps[] = {
    "validate-order", "check-inventory", "process-payment",
    "create-shipment", "send-confirmation", "update-inventory",
};
#define S_NSTEPS (sizeof s_steps / sizeof s_steps[0])

static const char s_order_json[] =
    "{\"order\": {\"id\": \"1001\","
    " \"customer\": {\"name\": \"Ada\", \"email\": \"ada@example.com\"},"
    " \"items\": [{\"sku\": \"BOOK-42\", \"qty\": 2, \"price\": 19.5},"
    "             {\"sku\": \"PEN-7\", \"qty\": 3, \"price\": 1.25}]}}";

static void
s_print_event(const am2z_event_t *ev, void *arg)
{
    (void)arg;
    char *data = NULL;
    if (ev->data && am2z_json_dumps_msgpack(ev->data, ev->data_size, JSON_COMPACT, &data) == AM2Z_OK)
        printf("    event %-24s %s\n", ev->name, data);
    else
        printf("    event %s\n", ev->name);
    free(data);
    fflush(stdout);
}

static void
s_print_state(const am2z_state_t *st)
{
    char *json = NULL;
    if (am2z_json_dumps_msgpack(am2z_state_data(st), am2z_state_size(st),
                                JSON_INDENT(2), &json) == AM2Z_OK)
        printf("%s\n", json);
    free(json);
}

/*  Waits (bounded) until a worker serving every step has registered: a
    demo started right after its workers must not race their READY. */
static int
s_wait_processors(am2z_client_t *client)
{
    for (size_t i = 0; i < S_NSTEPS; i++) {
        bool known = false;
        for (int tries = 0; !known && tries < 500; tries++) {
            if (am2z_client_is_processor_registered(client, s_steps[i], &known) != AM2Z_OK)
                return -1;
            if (!known)
                zclock_sleep(20);
        }
        if (!known) {
            fprintf(stderr, "am2z-demo: no worker serves '%s'\n", s_steps[i]);
            return -1;
        }
    }
    return 0;
}

static int
s_run(am2z_client_t *client, const char *session)
{
    am2z_client_on_event(client, "", s_print_event, NULL);

    /* start from a clean session so every run shows the same versions */
    if (am2z_client_stop_session(client, session, false) != AM2Z_OK) {
        fprintf(stderr, "am2z-demo: stop-session: %s\n", am2z_client_last_error(client));
        return 2;
    }
    uint8_t *map = NULL;
    size_t map_size = 0;
    char err[256];
    am2z_state_t *order = NULL;
    if (am2z_json_parse_to_msgpack(s_order_json, &map, &map_size, err, sizeof err) != AM2Z_OK
        || am2z_state_from_map(session, map, map_size, am2z_clock_wall_ms(), &order) != AM2Z_OK) {
        fprintf(stderr, "am2z-demo: cannot build the order state: %s\n", err);
        free(map);
        return 2;
    }
    free(map);
    printf("session %s, input state (version %llu):\n", session,
           (unsigned long long)am2z_state_version(order));
    s_print_state(order);

    int rc = 0;
    am2z_result_t *last = NULL;
    for (size_t i = 0; i < S_NSTEPS; i++) {
        printf("step %zu/%zu %s\n", i + 1, S_NSTEPS, s_steps[i]);
        fflush(stdout);
        am2z_result_t *r = NULL;
        int call = am2z_client_execute(client, s_steps[i], i == 0 ? order : NULL, session,
                                       NULL, &r);
        if (call != AM2Z_OK) {
            fprintf(stderr, "am2z-demo: %s: %s (%s)\n", s_steps[i], am2z_strerror(call),
                    am2z_client_last_error(client));
            rc = 2;
            break;
        }
        if (!r->success) {
            printf("  failed: %s %s: %s\n", am2z_kind_name(r->error->kind), r->error->code,
                   r->error->message);
            am2z_result_destroy(&r);
            rc = 1;
            break;
        }
        printf("  ok: version %llu, %llu us, attempt %u, job %s\n",
               (unsigned long long)am2z_state_version(r->state),
               (unsigned long long)r->exec_us, r->attempt, r->job_id);
        fflush(stdout);
        am2z_result_destroy(&last);
        last = r;
    }
    if (rc == 0 && last) {
        printf("final state (version %llu):\n", (unsigned long long)am2z_state_version(last->state));
        s_print_state(last->state);
        am2z_state_t *stored = NULL;
        if (am2z_client_get_state(client, session, &stored) == AM2Z_OK) {
            printf("stored state: version %llu, read back from LMDB with its SHA-256 verified\n",
                   (unsigned long long)am2z_state_version(stored));
            am2z_state_destroy(&stored);
        }
    }
    am2z_result_destroy(&last);
    am2z_state_destroy(&order);
    return rc;
}

int
main(int argc, char **argv)
{
    s_opts_t opts;
    char err[AM2Z_CFG_ERR_MAX];
    char *positional[argc > 0 ? argc : 1];
    am2z_cfg_args_t args = { .positional = positional };
    extern char **environ;
    if (am2z_cfg_load(s_table, &opts, argc, argv, environ, &args, err, sizeof err) != AM2Z_OK) {
        fprintf(stderr, "am2z-demo: %s\n", err);
        return 2;
    }
    if (args.help || args.npositional > 0) {
        printf("usage: am2z-demo [--broker EP] [--data-dir DIR] [--session ID]\n\n"
               "Runs the AM2Z order-processing example and prints every step.\n\n");
        am2z_cfg_print_help(s_table, stdout);
        return args.help ? 0 : 2;
    }
    zsys_handler_set(NULL);

    if (opts.broker[0]) {
        printf("am2z demo: order processing through the broker at %s\n", opts.broker);
        am2z_client_t *client = NULL;
        if (am2z_client_connect(opts.broker, &client) != AM2Z_OK) {
            fprintf(stderr, "am2z-demo: cannot connect to %s\n", opts.broker);
            return 2;
        }
        am2z_client_set_timeout(client, 10000);
        if (s_wait_processors(client) != 0) {
            am2z_client_destroy(&client);
            return 2;
        }
        int rc = s_run(client, opts.session);
        am2z_client_destroy(&client);
        return rc;
    }

    /* OpenSSL initialised on the broker thread keeps per-thread state that
       a TLS destructor frees, racing the process exit (LeakSanitizer noise,
       as in broker_test): initialise it here, on the main thread, first. */
    uint8_t digest[AM2Z_SHA256_LEN];
    am2z_sha256((const uint8_t *)"", 0, digest);

    am2z_broker_config_t cfg;
    am2z_broker_config_defaults(&cfg);
    snprintf(cfg.common.data_dir, sizeof cfg.common.data_dir, "%s", opts.data_dir);
    cfg.common.log_level = AM2Z_LOG_WARN;
    am2z_runtime_t *rt = am2z_runtime_new(&cfg);
    size_t n = 0;
    const am2z_processor_def_t *defs = am2z_example_processors(&n);
    for (size_t i = 0; i < n; i++)
        am2z_runtime_register(rt, &defs[i]);
    printf("am2z demo: order processing on the embedded runtime (broker + worker threads, "
           "LMDB in %s)\n", opts.data_dir);
    int rc = am2z_runtime_start(rt);
    if (rc != AM2Z_OK) {
        fprintf(stderr, "am2z-demo: cannot start the runtime: %s\n",
                am2z_runtime_last_error(rt));
        am2z_runtime_destroy(&rt);
        return 2;
    }
    rc = s_run(am2z_runtime_client(rt), opts.session);
    am2z_runtime_stop(rt);
    am2z_runtime_destroy(&rt);
    return rc;
}
