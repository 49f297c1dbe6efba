/*  zmq_floor.c — the transport floor for am2z-bench: a bare ZeroMQ
    DEALER -> ROUTER | broker | ROUTER -> DEALER echo, no codec, no store.

    Three roles, three processes (bench/run.sh starts them on 127.0.0.1):

      zmq-floor broker [--frontend EP] [--backend EP]
          binds both ROUTERs (ephemeral ports by default) and prints
          "ready frontend=EP backend=EP"; forwards client messages to the
          one worker and replies back, as the am2z broker routes a job.
      zmq-floor worker --broker BACKEND
          announces itself (READY) and echoes every message.
      zmq-floor client --broker FRONTEND [--rounds N] [--messages N]
                       [--window N] [--bytes N] [--json]
          1. `rounds` sequential round trips: p50 / p99 / min / max in µs;
          2. `messages` pipelined with at most `window` unanswered: msgs/s.

    Each figure of am2z is shown in docs/benchmarks.md as a ratio to these.
    Not part of the test suite. Plain libzmq, one thread per process.
*/
#include <zmq.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *frontend;
    const char *backend;
    const char *broker;
    uint64_t rounds;
    uint64_t messages;
    uint64_t window;
    uint64_t bytes;
    bool json;
} s_opts_t;

static uint64_t
s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int
s_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/*  No high-water mark: the bench bounds what is in flight itself, and a
    ROUTER silently drops what a full pipe will not take. */
static void *
s_socket(void *ctx, int type)
{
    void *s = zmq_socket(ctx, type);
    if (!s) {
        fprintf(stderr, "zmq-floor: zmq_socket: %s\n", zmq_strerror(errno));
        exit(2);
    }
    int zero = 0;
    zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    return s;
}

static void
s_bind(void *s, const char *ep, char *bound, size_t size)
{
    if (zmq_bind(s, ep) != 0) {
        fprintf(stderr, "zmq-floor: zmq_bind %s: %s\n", ep, zmq_strerror(errno));
        exit(2);
    }
    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, bound, &size);
}

static void
s_connect(void *s, const char *ep)
{
    if (zmq_connect(s, ep) != 0) {
        fprintf(stderr, "zmq-floor: zmq_connect %s: %s\n", ep, zmq_strerror(errno));
        exit(2);
    }
}

/*  Moves the (remaining) frames of one message from `from` to `to`,
    zero-copy. Returns the frame count or -1. */
static int
s_forward(void *from, void *to)
{
    int frames = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, from, 0) < 0) {
            zmq_msg_close(&m);
            return -1;
        }
        more = zmq_msg_more(&m);
        frames++;
        if (zmq_msg_send(&m, to, more ? ZMQ_SNDMORE : 0) < 0) {
            zmq_msg_close(&m);
            return -1;
        }
    }
    return frames;
}

static int
s_broker(const s_opts_t *o)
{
    void *ctx = zmq_ctx_new();
    void *front = s_socket(ctx, ZMQ_ROUTER), *back = s_socket(ctx, ZMQ_ROUTER);
    char fep[256] = "", bep[256] = "";
    s_bind(front, o->frontend, fep, sizeof fep);
    s_bind(back, o->backend, bep, sizeof bep);
    printf("ready frontend=%s backend=%s\n", fep, bep);
    fflush(stdout);
    uint8_t worker[256];
    size_t worker_size = 0;
    zmq_pollitem_t items[] = { { back, 0, ZMQ_POLLIN, 0 }, { front, 0, ZMQ_POLLIN, 0 } };
    for (;;) {
        /* no worker yet: leave client messages queued */
        if (zmq_poll(items, worker_size ? 2 : 1, -1) < 0)
            break;
        if (items[0].revents & ZMQ_POLLIN) {
            /* [worker id][client id | "READY"][payload...] */
            zmq_msg_t id, second;
            zmq_msg_init(&id);
            zmq_msg_init(&second);
            zmq_msg_recv(&id, back, 0);
            zmq_msg_recv(&second, back, 0);
            if (!zmq_msg_more(&second)) {
                worker_size = zmq_msg_size(&id) < sizeof worker ? zmq_msg_size(&id) : 0;
                memcpy(worker, zmq_msg_data(&id), worker_size);
                zmq_msg_close(&second);
            } else {
                zmq_msg_send(&second, front, ZMQ_SNDMORE);
                s_forward(back, front);
            }
            zmq_msg_close(&id);
        }
        if (worker_size && (items[1].revents & ZMQ_POLLIN)) {
            /* [client id][payload...] -> [worker id][client id][payload...] */
            zmq_send(back, worker, worker_size, ZMQ_SNDMORE);
            s_forward(front, back);
        }
    }
    zmq_close(front);
    zmq_close(back);
    zmq_ctx_term(ctx);
    return 0;
}

static int
s_worker(const s_opts_t *o)
{
    void *ctx = zmq_ctx_new();
    void *s = s_socket(ctx, ZMQ_DEALER);
    s_connect(s, o->broker);
    zmq_send(s, "READY", 5, 0);
    for (;;)
        if (s_forward(s, s) < 0)
            break;
    zmq_close(s);
    zmq_ctx_term(ctx);
    return 0;
}

static int
s_client(const s_opts_t *o)
{
    void *ctx = zmq_ctx_new();
    void *s = s_socket(ctx, ZMQ_DEALER);
    s_connect(s, o->broker);
    uint8_t *payload = calloc(1, o->bytes ? o->bytes : 1);
    uint8_t *reply = malloc(o->bytes + 64);
    memset(payload, 'x', o->bytes);
    for (int i = 0; i < 200; i++) {      /* warm up; waits for the worker */
        zmq_send(s, payload, o->bytes, 0);
        zmq_recv(s, reply, o->bytes + 64, 0);
    }
    if (o->rounds) {
        uint64_t *lat = calloc(o->rounds, sizeof *lat);
        for (uint64_t i = 0; i < o->rounds; i++) {
            uint64_t t0 = s_now_us();
            zmq_send(s, payload, o->bytes, 0);
            zmq_recv(s, reply, o->bytes + 64, 0);
            lat[i] = s_now_us() - t0;
        }
        qsort(lat, o->rounds, sizeof *lat, s_cmp_u64);
        uint64_t n = o->rounds;
        if (o->json)
            printf("{\"workload\":\"rt\",\"n\":%" PRIu64 ",\"p50_us\":%" PRIu64
                   ",\"p99_us\":%" PRIu64 ",\"min_us\":%" PRIu64 ",\"max_us\":%" PRIu64 "}\n",
                   n, lat[n / 2], lat[n * 99 / 100], lat[0], lat[n - 1]);
        else
            printf("round_trip n=%" PRIu64 " p50_us=%" PRIu64 " p99_us=%" PRIu64 "\n",
                   n, lat[n / 2], lat[n * 99 / 100]);
        free(lat);
    }
    if (o->messages) {
        uint64_t sent = 0, got = 0, t0 = s_now_us();
        while (got < o->messages) {
            while (sent < o->messages && sent - got < o->window) {
                zmq_send(s, payload, o->bytes, 0);
                sent++;
            }
            zmq_recv(s, reply, o->bytes + 64, 0);
            got++;
        }
        double secs = (s_now_us() - t0) / 1e6;
        if (o->json)
            printf("{\"workload\":\"tp\",\"jobs\":%" PRIu64 ",\"window\":%" PRIu64
                   ",\"seconds\":%.3f,\"jobs_per_s\":%.0f}\n",
                   o->messages, o->window, secs, o->messages / secs);
        else
            printf("throughput messages=%" PRIu64 " seconds=%.3f msgs_per_s=%.0f\n",
                   o->messages, secs, o->messages / secs);
    }
    free(payload);
    free(reply);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return 0;
}

int
main(int argc, char **argv)
{
    s_opts_t o = { .frontend = "tcp://127.0.0.1:*", .backend = "tcp://127.0.0.1:*",
                   .broker = NULL, .rounds = 2000, .messages = 50000, .window = 2000,
                   .bytes = 100 };
    if (argc < 2) {
        fprintf(stderr, "usage: zmq-floor broker|worker|client [options]\n");
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) {
            o.json = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "zmq-floor: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--frontend"))
            o.frontend = v;
        else if (!strcmp(a, "--backend"))
            o.backend = v;
        else if (!strcmp(a, "--broker"))
            o.broker = v;
        else if (!strcmp(a, "--rounds"))
            o.rounds = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--messages"))
            o.messages = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--window"))
            o.window = strtoull(v, NULL, 10) ? strtoull(v, NULL, 10) : 1;
        else if (!strcmp(a, "--bytes"))
            o.bytes = strtoull(v, NULL, 10);
        else {
            fprintf(stderr, "zmq-floor: unknown option %s\n", a);
            return 2;
        }
    }
    if (!strcmp(argv[1], "broker"))
        return s_broker(&o);
    if (!o.broker) {
        fprintf(stderr, "zmq-floor: --broker EP is required\n");
        return 2;
    }
    if (!strcmp(argv[1], "worker"))
        return s_worker(&o);
    if (!strcmp(argv[1], "client"))
        return s_client(&o);
    fprintf(stderr, "zmq-floor: unknown role %s\n", argv[1]);
    return 2;
}
