/*  main.c — am2z-broker: the broker daemon.

    Configuration comes from am2z_broker_config_table: defaults < --config
    file < AM2Z_* environment < --flags. Exit status: 0 after an orderly stop
    (SIGTERM / SIGINT), 1 when the broker cannot start, 2 for a bad
    configuration or command line.
*/
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "am2z_broker.h"
#include "am2z_envelope.h"
#include "am2z_sys.h"
#include "am2z_error.h"

extern char **environ;

/*  The only mutable global: set by the signal handler, read by the loop
    (sig_atomic_t is int on the platforms we build for). */
static volatile sig_atomic_t s_stop;

static void
s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

static void
s_usage(FILE *out)
{
    fprintf(out,
            "Usage: am2z-broker [--config FILE] [--SETTING VALUE]...\n"
            "\n"
            "Routes am2z jobs from clients to workers, per session, and keeps every\n"
            "accepted job and session state in LMDB.\n"
            "\n"
            "Settings (flag, AM2Z_* environment variable or config file line):\n");
    am2z_cfg_print_help(am2z_broker_config_table, out);
}

int
main(int argc, char **argv)
{
    am2z_broker_config_t cfg;
    am2z_broker_config_defaults(&cfg);
    char **positional = calloc((size_t)argc + 1, sizeof *positional);
    if (!positional) {
        fprintf(stderr, "am2z-broker: out of memory\n");
        return 1;
    }
    am2z_cfg_args_t args;
    memset(&args, 0, sizeof args);
    args.positional = positional;
    char err[AM2Z_CFG_ERR_MAX];
    int rc = am2z_cfg_load(am2z_broker_config_table, &cfg, argc, argv, environ, &args,
                           err, sizeof err);
    if (args.help) {
        s_usage(stdout);
        free(positional);
        return 0;
    }
    if (rc != AM2Z_OK) {
        fprintf(stderr, "am2z-broker: %s\n(see am2z-broker --help)\n", err);
        free(positional);
        return 2;
    }
    if (args.npositional > 0) {
        fprintf(stderr, "am2z-broker: unexpected argument '%s'\n(see am2z-broker --help)\n",
                args.positional[0]);
        free(positional);
        return 2;
    }
    free(positional);

    /*  The broker owns its process: OpenSSL serves only SHA-256 here, and
        unless told to read the host's configuration (--openssl-config, for
        a FIPS provider, say) it skips it, which keeps ≈ 0.5 MB less of
        libcrypto resident. Before anything digests. */
    if (!cfg.openssl_config && am2z_crypto_init_without_config() != AM2Z_OK) {
        fprintf(stderr, "am2z-broker: cannot initialise OpenSSL\n");
        return 1;
    }
    uint8_t digest[AM2Z_SHA256_LEN];
    if (am2z_sha256(NULL, 0, digest) != AM2Z_OK) {
        fprintf(stderr, "am2z-broker: OpenSSL cannot compute SHA-256%s\n",
                cfg.openssl_config ? " (--openssl-config: check the OpenSSL configuration "
                                     "it reads, openssl.cnf or $OPENSSL_CONF)" : "");
        return 1;
    }

    /*  before any thread: ZeroMQ's I/O thread inherits the CPUs */
    if (am2z_sys_set_cpus(cfg.cpus, err, sizeof err) != AM2Z_OK) {
        fprintf(stderr, "am2z-broker: %s\n(see am2z-broker --help)\n", err);
        return 2;
    }
    zsys_handler_set(NULL);       /* our handlers, not CZMQ's */
    am2z_sys_raise_limits(NULL);  /* one fd per ZeroMQ socket */
    zsys_init();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* a file size limit (ulimit -f) is an EFBIG from the store's writes,
       answered as a resource error, not a process killed with a core */
    signal(SIGXFSZ, SIG_IGN);

    am2z_broker_t *broker = NULL;
    char why[512];
    rc = am2z_broker_new(&cfg, &broker, why, sizeof why);
    if (rc != AM2Z_OK) {
        fprintf(stderr, "am2z-broker: cannot start: %s (%s)\n", why, am2z_strerror(rc));
        return rc == AM2Z_ECONFIG ? 2 : 1;
    }
    printf("am2z-broker ready frontend=%s backend=%s events=%s data-dir=%s\n",
           am2z_broker_endpoint(broker, 0), am2z_broker_endpoint(broker, 1),
           am2z_broker_endpoint(broker, 2)[0] ? am2z_broker_endpoint(broker, 2) : "none",
           cfg.common.data_dir);
    fflush(stdout);
    rc = am2z_broker_run(broker, (volatile int *)&s_stop);
    am2z_broker_destroy(&broker);
    return rc == AM2Z_OK ? 0 : 1;
}
