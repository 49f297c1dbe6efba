/*  am2z_pool.c — the mailbox between the worker's main thread and its
    processor actors, and the actor threads (see am2z_worker_priv.h).

    One mutex guards the whole pool; it is held only to link or unlink a
    message or to look at a counter, never while a processor runs.

    Threads of a lane (one processor) start on demand. One that waited
    idle_ms on the idle stack without a JOB leaves (detached, it frees
    itself), unless it is the lane's last thread: after a burst of
    blocking jobs the lane shrinks back to what its traffic uses. The
    rule that keeps every queued JOB served: while a lane's queue is not
    empty, at least one thread is on its way to it (nwaking > 0: signalled
    from the idle stack, or just started). Whoever queues a JOB with no
    thread on its way wakes one (the idle stack is LIFO, so the most
    recently busy thread, with warm caches, goes first) or starts one; a
    thread that takes a JOB and leaves others behind does the same. A
    thread that finishes a job takes the next queued one without sleeping.
    So a burst of short jobs wakes a few threads rather than one per job,
    while jobs that block (sleep, I/O, a nested call) each end up with a
    thread of their own, up to the lane's limit. The main thread's credit
    bookkeeping (am2z_worker.c) never hands a lane more JOBs than it has
    slots, so the limit is never what holds a queued JOB back. A nested
    call's child (beyond credit; its caller holds a thread while it waits)
    goes first in line and always gets a thread woken or started for it,
    or is refused at once: it never waits for a busy thread.
*/
#include "am2z_worker_priv.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define S_NO_SLOT UINT32_MAX

struct am2zw_thread_t {
    am2zw_pool_t *pool;
    size_t lane;
    pthread_t tid;
    pthread_cond_t cv;            /* idle wait, and a nested call's wait */
    bool wake;                    /* taken off the idle stack (or started): counted in nwaking */
    am2zw_item_t *result;         /* the RESULT of the call it waits for */
    uint32_t slot;                /* slot of the running job, S_NO_SLOT = none */
    uint32_t call_seq;            /* number of its latest CALL */
};

typedef struct {
    am2zw_lane_def_t def;
    am2zw_item_t *head, *tail;    /* queued JOBs, oldest first */
    am2zw_thread_t **threads;     /* every thread started (for the join) */
    size_t nthreads;
    am2zw_thread_t **idle;        /* LIFO of threads waiting for a JOB */
    size_t nidle;
    size_t nwaking;               /* threads on their way to the queue */
} s_lane_t;

struct am2zw_pool_t {
    pthread_mutex_t mu;
    s_lane_t *lanes;
    size_t nlanes;
    am2zw_thread_t **runner;      /* per slot: the thread running its job */
    size_t nslots;
    am2zw_item_t *out_head, *out_tail; /* to the main thread, in order */
    bool main_asleep;             /* main polls efd: the next message wakes it */
    int efd;                      /* eventfd the main thread polls */
    bool term;
    uint64_t idle_ms;             /* an idle thread leaves after this; 0 = never */
    am2z_log_t *log;
    size_t max_state_size;
};

void
am2zw_item_free(am2zw_item_t *it)
{
    if (!it)
        return;
    if (it->job) {
        am2z_msg_clear(it->job);
        free(it->job);
    }
    free(it->body);
    free(it);
}

void
am2zw_items_free(am2zw_item_t *list)
{
    while (list) {
        am2zw_item_t *next = list->next;
        am2zw_item_free(list);
        list = next;
    }
}

static void s_append(am2zw_item_t **head, am2zw_item_t **tail, am2zw_item_t *it)
{
    it->next = NULL;
    if (*tail)
        (*tail)->next = it;
    else
        *head = it;
    *tail = it;
}

static void *s_thread(void *arg);

/*  Under the lock: sends one more thread on its way to lane's queue.
    Returns the thread to signal once the lock is released (NULL when one
    was started, or none could be). */
static am2zw_thread_t *
s_kick(am2zw_pool_t *p, s_lane_t *lane, bool *ok)
{
    *ok = true;
    if (lane->nidle) {
        am2zw_thread_t *t = lane->idle[--lane->nidle];
        t->wake = true;
        lane->nwaking++;
        return t;
    }
    if (lane->nthreads < lane->def.max_threads) {
        am2zw_thread_t *t = calloc(1, sizeof *t);
        pthread_condattr_t ca;
        bool cv = false;
        if (t && pthread_condattr_init(&ca) == 0) {
            pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
            cv = pthread_cond_init(&t->cv, &ca) == 0;
            pthread_condattr_destroy(&ca);
        }
        if (cv) {
            t->pool = p;
            t->lane = (size_t)(lane - p->lanes);
            t->slot = S_NO_SLOT;
            t->wake = true;
            int rc = pthread_create(&t->tid, NULL, s_thread, t);
            if (rc == 0) {
                lane->threads[lane->nthreads++] = t;
                lane->nwaking++;
                return NULL;
            }
            AM2Z_LOG(p->log, AM2Z_LOG_ERROR, "worker", "pthread_create failed",
                     AM2Z_KS("processor", lane->def.processor), AM2Z_KS("error", strerror(rc)));
            pthread_cond_destroy(&t->cv);
        }
        free(t);
    }
    *ok = false;
    return NULL;
}

/*  Under the lock: appends it to the main thread's queue. Returns true
    when the caller must wake the main thread (after unlocking). */
static bool
s_to_main(am2zw_pool_t *p, am2zw_item_t *it)
{
    s_append(&p->out_head, &p->out_tail, it);
    bool wake = p->main_asleep;
    p->main_asleep = false;
    return wake;
}

static void
s_wake_main(am2zw_pool_t *p)
{
    uint64_t one = 1;
    while (write(p->efd, &one, sizeof one) == -1 && errno == EINTR)
        ;
}

/*  Under the lock: takes t, idle, out of its lane for good (it is on the
    idle stack, runs nothing, and no one holds it). */
static void
s_retire(s_lane_t *lane, am2zw_thread_t *t)
{
    for (size_t i = 0; i < lane->nidle; i++)
        if (lane->idle[i] == t) {
            memmove(&lane->idle[i], &lane->idle[i + 1], (lane->nidle - i - 1) * sizeof t);
            lane->nidle--;
            break;
        }
    for (size_t i = 0; i < lane->nthreads; i++)
        if (lane->threads[i] == t) {
            lane->threads[i] = lane->threads[--lane->nthreads];
            break;
        }
    pthread_detach(t->tid);
}

/*  Under the lock, t on its lane's idle stack: waits until it is woken or
    the pool ends. Returns false when it waited idle_ms and left the pool
    instead (the lock released, t freed: the thread must return at once). */
static bool
s_park(am2zw_pool_t *p, s_lane_t *lane, am2zw_thread_t *t)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(p->idle_ms / 1000);
    until.tv_nsec += (long)(p->idle_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (!t->wake && !p->term) {
        if (!p->idle_ms || lane->nthreads <= 1) {
            pthread_cond_wait(&t->cv, &p->mu);
            continue;
        }
        if (pthread_cond_timedwait(&t->cv, &p->mu, &until) == ETIMEDOUT
            && !t->wake && !p->term && lane->nthreads > 1) {
            s_retire(lane, t);
            pthread_mutex_unlock(&p->mu);
            pthread_cond_destroy(&t->cv);
            free(t);
            return false;
        }
    }
    return true;
}

static void *
s_thread(void *arg)
{
    am2zw_thread_t *t = arg;
    am2zw_pool_t *p = t->pool;
    s_lane_t *lane = &p->lanes[t->lane];
    pthread_mutex_lock(&p->mu);
    while (true) {
        if (t->wake) {
            t->wake = false;
            lane->nwaking--;
        }
        if (p->term)
            break;
        am2zw_item_t *it = lane->head;
        if (!it) {
            lane->idle[lane->nidle++] = t;
            if (!s_park(p, lane, t))
                return NULL;
            continue;
        }
        lane->head = it->next;
        if (!lane->head)
            lane->tail = NULL;
        am2zw_thread_t *sig = NULL;
        bool ok = true;
        if (lane->head && lane->nwaking == 0)
            sig = s_kick(p, lane, &ok);
        t->slot = it->slot;
        p->runner[it->slot] = t;
        pthread_mutex_unlock(&p->mu);
        if (sig)
            pthread_cond_signal(&sig->cv);

        uint8_t *body = NULL;
        size_t size = 0;
        am2zw_run_job(t, lane->def.processor, lane->def.fn, lane->def.arg, p->log,
                      p->max_state_size, it->job, it->cancel, &body, &size);
        /*  The JOB's item carries the DONE back: no allocation that could
            fail and leave the slot busy for good. */
        am2z_msg_clear(it->job);
        free(it->job);
        it->job = NULL;
        it->cancel = NULL;
        it->kind = AM2ZW_DONE;
        it->body = body;
        it->size = body ? size : 0;

        pthread_mutex_lock(&p->mu);
        p->runner[t->slot] = NULL;
        am2zw_item_free(t->result);       /* a RESULT that came too late */
        t->result = NULL;
        bool wake = s_to_main(p, it);
        t->slot = S_NO_SLOT;
        if (wake) {
            /*  Idle before the main thread can see the DONE (it is in the
                same critical section), so that the next JOB for the slot
                finds this thread rather than starting another. */
            bool park = lane->head == NULL;
            if (park)
                lane->idle[lane->nidle++] = t;
            pthread_mutex_unlock(&p->mu);
            s_wake_main(p);
            pthread_mutex_lock(&p->mu);
            if (park && !s_park(p, lane, t))
                return NULL;
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

am2zw_pool_t *
am2zw_pool_new(const am2zw_lane_def_t *lanes, size_t nlanes, size_t nslots,
               am2z_log_t *log, size_t max_state_size, uint64_t idle_ms)
{
    am2zw_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->efd = -1;
    p->idle_ms = idle_ms;
    p->log = log;
    p->max_state_size = max_state_size;
    p->nlanes = nlanes;
    p->nslots = nslots;
    p->lanes = calloc(nlanes, sizeof *p->lanes);
    p->runner = calloc(nslots, sizeof *p->runner);
    bool ok = p->lanes && p->runner;
    for (size_t i = 0; ok && i < nlanes; i++) {
        s_lane_t *lane = &p->lanes[i];
        lane->def = lanes[i];
        lane->threads = calloc(lanes[i].max_threads, sizeof *lane->threads);
        lane->idle = calloc(lanes[i].max_threads, sizeof *lane->idle);
        ok = lane->threads && lane->idle;
    }
    if (ok && pthread_mutex_init(&p->mu, NULL) != 0)
        ok = false;
    else if (ok && (p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
        pthread_mutex_destroy(&p->mu);
        ok = false;
    }
    if (!ok) {
        for (size_t i = 0; p->lanes && i < nlanes; i++) {
            free(p->lanes[i].threads);
            free(p->lanes[i].idle);
        }
        free(p->lanes);
        free(p->runner);
        free(p);
        return NULL;
    }
    return p;
}

void
am2zw_pool_destroy(am2zw_pool_t **p_p)
{
    if (!p_p || !*p_p)
        return;
    am2zw_pool_t *p = *p_p;
    pthread_mutex_lock(&p->mu);
    p->term = true;
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < p->nlanes; i++) {
        s_lane_t *lane = &p->lanes[i];
        for (size_t k = 0; k < lane->nthreads; k++)
            pthread_cond_signal(&lane->threads[k]->cv);
        for (size_t k = 0; k < lane->nthreads; k++) {
            am2zw_thread_t *t = lane->threads[k];
            pthread_join(t->tid, NULL);
            am2zw_item_free(t->result);
            pthread_cond_destroy(&t->cv);
            free(t);
        }
        am2zw_items_free(lane->head);
        free(lane->threads);
        free(lane->idle);
    }
    am2zw_items_free(p->out_head);
    free(p->lanes);
    free(p->runner);
    close(p->efd);
    pthread_mutex_destroy(&p->mu);
    free(p);
    *p_p = NULL;
}

int
am2zw_pool_fd(const am2zw_pool_t *p)
{
    return p->efd;
}

int
am2zw_pool_job(am2zw_pool_t *p, size_t lane_i, uint32_t slot, atomic_bool *cancel,
               am2z_msg_t *job, bool own_thread)
{
    if (lane_i >= p->nlanes || slot >= p->nslots)
        return AM2Z_EINVAL;
    am2zw_item_t *it = calloc(1, sizeof *it);
    if (!it)
        return AM2Z_ENOMEM;
    it->kind = AM2ZW_JOB;
    it->slot = slot;
    it->cancel = cancel;
    it->job = job;
    s_lane_t *lane = &p->lanes[lane_i];
    pthread_mutex_lock(&p->mu);
    if (own_thread) {
        /* first in line, so that the thread kicked for it takes it */
        it->next = lane->head;
        lane->head = it;
        if (!lane->tail)
            lane->tail = it;
    } else {
        s_append(&lane->head, &lane->tail, it);
    }
    am2zw_thread_t *sig = NULL;
    bool ok = true;
    if (lane->nwaking == 0 || own_thread)
        sig = s_kick(p, lane, &ok);
    bool refused = !ok && (lane->nthreads == 0 || own_thread);
    if (refused) {
        /* nobody will take it: unlink it */
        am2zw_item_t **pp = &lane->head, *prev = NULL;
        while (*pp != it) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        *pp = it->next;
        if (lane->tail == it)
            lane->tail = prev;
    }
    pthread_mutex_unlock(&p->mu);
    if (sig)
        pthread_cond_signal(&sig->cv);
    if (refused) {
        it->job = NULL;                   /* the caller keeps it */
        free(it);
        return AM2Z_ENOMEM;
    }
    return AM2Z_OK;
}

int
am2zw_pool_result(am2zw_pool_t *p, uint32_t slot, uint32_t seq, const void *body,
                  size_t size)
{
    if (slot >= p->nslots)
        return AM2Z_EINVAL;
    am2zw_item_t *it = calloc(1, sizeof *it);
    if (!it || (size && !(it->body = malloc(size)))) {
        free(it);
        return AM2Z_ENOMEM;
    }
    it->kind = AM2ZW_RESULT;
    it->slot = slot;
    it->seq = seq;
    it->size = size;
    if (size)
        memcpy(it->body, body, size);
    pthread_mutex_lock(&p->mu);
    am2zw_thread_t *t = p->runner[slot];
    if (t && t->call_seq != seq)
        t = NULL;                         /* an abandoned call's answer */
    if (t) {
        am2zw_item_free(t->result);
        t->result = it;
        it = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    if (!t) {
        am2zw_item_free(it);
        return AM2Z_ESTATE;
    }
    pthread_cond_signal(&t->cv);
    return AM2Z_OK;
}

bool
am2zw_pool_sleep(am2zw_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    bool empty = p->out_head == NULL;
    p->main_asleep = empty;
    pthread_mutex_unlock(&p->mu);
    return empty;
}

am2zw_item_t *
am2zw_pool_take(am2zw_pool_t *p, bool signalled)
{
    uint64_t count;
    while (signalled && read(p->efd, &count, sizeof count) == -1 && errno == EINTR)
        ;
    pthread_mutex_lock(&p->mu);
    p->main_asleep = false;
    am2zw_item_t *list = p->out_head;
    p->out_head = p->out_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    return list;
}

int
am2zw_pool_send(am2zw_thread_t *t, am2zw_kind_t kind, uint8_t **body_p, size_t size)
{
    am2zw_pool_t *p = t->pool;
    uint8_t *body = *body_p;
    *body_p = NULL;
    am2zw_item_t *it = calloc(1, sizeof *it);
    if (!it) {
        free(body);
        return AM2Z_ENOMEM;
    }
    it->kind = kind;
    it->body = body;
    it->size = body ? size : 0;
    pthread_mutex_lock(&p->mu);
    it->slot = t->slot;
    if (kind == AM2ZW_CALL) {
        /* a new call: whatever answered an earlier one is stale */
        it->seq = ++t->call_seq;
        am2zw_item_free(t->result);
        t->result = NULL;
    }
    bool wake = s_to_main(p, it);
    pthread_mutex_unlock(&p->mu);
    if (wake)
        s_wake_main(p);
    return AM2Z_OK;
}

int
am2zw_pool_wait_result(am2zw_thread_t *t, atomic_bool *cancel, uint8_t **body_p,
                       size_t *size_p)
{
    am2zw_pool_t *p = t->pool;
    *body_p = NULL;
    *size_p = 0;
    pthread_mutex_lock(&p->mu);
    while (!t->result && !p->term && !(cancel && atomic_load(cancel))) {
        /*  the main thread sets cancel without signalling: look every 50 ms */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&t->cv, &p->mu, &ts);
    }
    am2zw_item_t *it = t->result;
    t->result = NULL;
    pthread_mutex_unlock(&p->mu);
    if (!it)
        return AM2Z_ESTATE;          /* cancelled, or the pool ends */
    *body_p = it->body;
    *size_p = it->size;
    it->body = NULL;
    am2zw_item_free(it);
    return AM2Z_OK;
}

size_t
am2zw_pool_threads(am2zw_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = 0;
    for (size_t i = 0; i < p->nlanes; i++)
        n += p->lanes[i].nthreads;
    pthread_mutex_unlock(&p->mu);
    return n;
}
