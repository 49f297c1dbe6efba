/*  am2z_runtime.c — see am2z_runtime.h.

    The runtime is glue: it owns a broker actor, a worker running in its own
    background thread and a client, all in this process, connected over
    inproc:// endpoints unique to this runtime and this start (so two
    runtimes, or a restart, never meet each other's sockets).

    Start is complete only when the broker knows every registered processor:
    the worker's READY and the client's first SUBMIT travel on different
    sockets, so without that wait a quick first execute could be told
    "processor not found".
*/
#include "am2z_runtime.h"

#include "am2z_clock.h"

#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*  How long start waits for the broker to see the worker's processors. */
#define S_READY_WAIT_MS 10000

/*  A registered processor, strings owned. */
typedef struct {
    am2z_processor_def_t def;     /* name/description point at the copies below */
    char *name;
    char *description;
} s_def_t;

struct am2z_runtime_t {
    am2z_broker_config_t cfg;     /* copy; endpoints rewritten at each start */
    s_def_t *defs;                /* registered processors, owned */
    size_t ndefs;
    zactor_t *broker;             /* broker actor while running */
    am2z_worker_t *worker;        /* worker (own thread) while running */
    am2z_client_t *client;        /* client while running */
    unsigned starts;              /* distinguishes endpoints across restarts */
    char error[256];              /* why the last start failed */
    bool running;
};

am2z_runtime_t *
am2z_runtime_new(const am2z_broker_config_t *cfg)
{
    am2z_runtime_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    if (cfg)
        self->cfg = *cfg;
    else
        am2z_broker_config_defaults(&self->cfg);
    return self;
}

void
am2z_runtime_destroy(am2z_runtime_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_runtime_t *self = *self_p;
    am2z_runtime_stop(self);
    for (size_t i = 0; i < self->ndefs; i++) {
        free(self->defs[i].name);
        free(self->defs[i].description);
    }
    free(self->defs);
    free(self);
    *self_p = NULL;
}

int
am2z_runtime_register(am2z_runtime_t *self, const am2z_processor_def_t *def)
{
    if (!self || !def || !def->name || !def->fn
        || !am2z_name_valid(def->name, strlen(def->name)))
        return AM2Z_EINVAL;
    for (size_t i = 0; i < self->ndefs; i++)
        if (strcmp(self->defs[i].name, def->name) == 0)
            return AM2Z_EINVAL;

    s_def_t *grown = realloc(self->defs, (self->ndefs + 1) * sizeof *grown);
    if (!grown)
        return AM2Z_ENOMEM;
    self->defs = grown;
    s_def_t *d = &self->defs[self->ndefs];
    memset(d, 0, sizeof *d);
    d->name = strdup(def->name);
    d->description = def->description ? strdup(def->description) : NULL;
    if (!d->name || (def->description && !d->description)) {
        free(d->name);
        free(d->description);
        return AM2Z_ENOMEM;
    }
    d->def = *def;
    d->def.name = d->name;
    d->def.description = d->description;
    self->ndefs++;
    return AM2Z_OK;
}

/*  Asks the broker actor for its bound endpoints. Returns AM2Z_OK with the
    three endpoints copied out, or AM2Z_ENETWORK when the broker failed to
    start (it answers with fewer frames, or not at all). */
static int
s_broker_endpoints(zactor_t *broker, char ep[3][AM2Z_ENDPOINT_MAX],
                   char *error, size_t error_size)
{
    zsock_set_rcvtimeo(broker, 5000);
    if (zstr_send(broker, "ENDPOINTS") != 0)
        return AM2Z_ENETWORK;
    zmsg_t *reply = zmsg_recv(broker);
    if (!reply)
        return AM2Z_ENETWORK;
    if (zmsg_size(reply) == 2) {
        char *tag = zmsg_popstr(reply);
        char *why = zmsg_popstr(reply);
        snprintf(error, error_size, "broker: %s", why ? why : "failed to start");
        free(tag);
        free(why);
        zmsg_destroy(&reply);
        return AM2Z_EIO;
    }
    int rc = zmsg_size(reply) == 3 ? AM2Z_OK : AM2Z_ENETWORK;
    for (int i = 0; rc == AM2Z_OK && i < 3; i++) {
        char *s = zmsg_popstr(reply);
        if (!s || strlen(s) >= AM2Z_ENDPOINT_MAX)
            rc = AM2Z_ENETWORK;
        else
            snprintf(ep[i], AM2Z_ENDPOINT_MAX, "%s", s);
        free(s);
    }
    zmsg_destroy(&reply);
    return rc;
}

/*  Waits (bounded) until the broker lists every registered processor. */
static int
s_wait_registered(am2z_runtime_t *self)
{
    uint64_t deadline = am2z_clock_mono_us() + (uint64_t)S_READY_WAIT_MS * 1000;
    am2z_client_set_timeout(self->client, 1000);
    for (size_t i = 0; i < self->ndefs; i++) {
        bool known = false;
        while (!known) {
            int rc = am2z_client_is_processor_registered(self->client,
                                                         self->defs[i].name, &known);
            if (rc != AM2Z_OK && rc != AM2Z_ETIMEOUT)
                return rc;
            if (known)
                break;
            if (am2z_clock_mono_us() > deadline)
                return AM2Z_ETIMEOUT;
            zclock_sleep(2);       /* READY is in flight on another socket */
        }
    }
    am2z_client_set_timeout(self->client, 30000);
    return AM2Z_OK;
}

int
am2z_runtime_start(am2z_runtime_t *self)
{
    if (!self)
        return AM2Z_EINVAL;
    if (self->running)
        return AM2Z_OK;

    am2z_broker_config_t cfg = self->cfg;
    self->starts++;
    self->error[0] = '\0';
    snprintf(cfg.frontend, sizeof cfg.frontend, "inproc://am2z-rt-%p-%u-front",
             (void *)self, self->starts);
    snprintf(cfg.backend, sizeof cfg.backend, "inproc://am2z-rt-%p-%u-back",
             (void *)self, self->starts);
    if (self->cfg.events[0])
        snprintf(cfg.events, sizeof cfg.events, "inproc://am2z-rt-%p-%u-events",
                 (void *)self, self->starts);
    cfg.common.embedded = true;   /* the application shares this process: no writable map */

    int rc = AM2Z_ENETWORK;
    char ep[3][AM2Z_ENDPOINT_MAX];
    self->broker = zactor_new(am2z_broker_actor, &cfg);
    if (!self->broker)
        goto fail;
    rc = s_broker_endpoints(self->broker, ep, self->error, sizeof self->error);
    if (rc != AM2Z_OK)
        goto fail;

    am2z_worker_config_t wcfg;
    am2z_worker_config_defaults(&wcfg);
    snprintf(wcfg.broker, sizeof wcfg.broker, "%s", ep[1]);
    wcfg.log_level = self->cfg.common.log_level;
    wcfg.log_format = self->cfg.common.log_format;
    rc = AM2Z_ENOMEM;
    self->worker = am2z_worker_new(&wcfg);
    if (!self->worker)
        goto fail;
    for (size_t i = 0; i < self->ndefs; i++) {
        rc = am2z_worker_register(self->worker, &self->defs[i].def);
        if (rc != AM2Z_OK)
            goto fail;
    }
    if (self->ndefs > 0) {
        rc = am2z_worker_start(self->worker);
        if (rc != AM2Z_OK)
            goto fail;
    }
    rc = am2z_client_connect(ep[0], &self->client);
    if (rc != AM2Z_OK)
        goto fail;
    rc = s_wait_registered(self);
    if (rc != AM2Z_OK)
        goto fail;
    self->running = true;
    return AM2Z_OK;

fail:
    if (!self->error[0])
        snprintf(self->error, sizeof self->error, "%s", am2z_strerror(rc));
    self->running = true;          /* let stop tear down what exists */
    am2z_runtime_stop(self);
    return rc;
}

void
am2z_runtime_stop(am2z_runtime_t *self)
{
    if (!self || !self->running)
        return;
    am2z_client_destroy(&self->client);
    if (self->worker) {
        am2z_worker_stop(self->worker);
        am2z_worker_destroy(&self->worker);
    }
    zactor_destroy(&self->broker);
    self->running = false;
}

const char *
am2z_runtime_last_error(const am2z_runtime_t *self)
{
    return self ? self->error : "";
}

am2z_client_t *
am2z_runtime_client(am2z_runtime_t *self)
{
    return self && self->running ? self->client : NULL;
}
