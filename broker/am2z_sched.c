/*  am2z_sched.c — the broker's in-memory scheduling state: session lanes,
    per-processor rings of ready sessions, workers and their credit.

    Fairness comes from the rings: a session enters its head job's
    processor ring at the back when it becomes ready, and leaves it when a
    job is leased; it can only come back after that job ends. So with k
    ready sessions, each gets one job out of every k, whatever its backlog.
    Workers are picked round-robin per processor among those with credit.

    Priority (issue 6): a lane is kept in (prio desc, seq asc) order, and a
    processor's ready sessions sit in one ring per priority of their head
    job (proc->buckets, highest first). Dispatch always serves the highest
    non-empty bucket, round-robin inside it, so fairness holds among equal
    priorities and a higher priority always goes first.

    Rate limit and cap: proc->rate_ring holds the wall-clock times of the
    last rate_max leases; one more lease is allowed when the oldest of them
    is at least rate_per_ms old, so no window of rate_per_ms ms ever holds
    more than rate_max leases. proc->leased counts the leases holding a
    cap slot; am2zb_lease_end gives the slot back.
*/
#include "am2z_broker_int.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------
   Jobs
   ------------------------------------------------------------------------ */

job_t *
am2zb_job_new(void)
{
    return calloc(1, sizeof(job_t));
}

void
am2zb_jpeer_clear(jpeer_t *p)
{
    free(p->ident_long);
    p->ident_long = NULL;
    p->ident_size = 0;
}

/*  Replaces dst's routing id with ident (size bytes). */
static bool
s_jpeer_ident(jpeer_t *dst, const uint8_t *ident, size_t size)
{
    am2zb_jpeer_clear(dst);
    if (size > S_IDENT_MAX)
        size = S_IDENT_MAX;
    if (size > AM2ZB_JPEER_INLINE) {
        dst->ident_long = malloc(size);
        if (!dst->ident_long)
            return false;
        memcpy(dst->ident_long, ident, size);
    } else if (size) {
        memcpy(dst->ident_inline, ident, size);
    }
    dst->ident_size = (uint16_t)size;
    return true;
}

bool
am2zb_jpeer_set(jpeer_t *dst, const peer_t *src)
{
    dst->req = src->req;
    dst->events = src->events;
    dst->batch = src->batch;
    dst->noack = src->noack;
    return s_jpeer_ident(dst, src->ident, src->ident_size);
}

bool
am2zb_jpeer_copy(jpeer_t *dst, const jpeer_t *src)
{
    if (dst == src)
        return true;
    dst->req = src->req;
    dst->events = src->events;
    dst->batch = src->batch;
    dst->noack = src->noack;
    return s_jpeer_ident(dst, am2zb_jpeer_ident(src), src->ident_size);
}

void
am2zb_jpeer_load(const jpeer_t *src, peer_t *dst)
{
    memset(dst, 0, sizeof *dst);
    dst->ident_size = src->ident_size;
    if (src->ident_size)
        memcpy(dst->ident, am2zb_jpeer_ident(src), src->ident_size);
    dst->req = src->req;
    dst->events = src->events;
    dst->batch = src->batch;
    dst->noack = src->noack;
}

void
am2zb_job_destroy(job_t **job_p)
{
    if (!job_p || !*job_p)
        return;
    job_t *job = *job_p;
    am2zb_lease_end(job);
    am2zb_jpeer_clear(&job->client);
    free(job->session_id);
    free(job->state);
    free(job->fetchers);
    free(job->call_worker);
    free(job);
    *job_p = NULL;
}

/*  A lease starts: attempt counted, ACTIVE on worker, rate/cap slot taken
    (am2zb_sched_take), and the lease deadline set when the job has a
    timeout. The broker's clock starts at dispatch: the worker's own
    deadline (from receipt) is never earlier, so the broker decides.
    Credit is the caller's business (a call's child runs beyond it). */
void
am2zb_lease_begin(am2z_broker_t *self, job_t *job, worker_t *worker, uint64_t now_ms)
{
    job->attempt++;
    job->status = JOB_ACTIVE;
    job->worker = worker;
    am2zb_sched_take(job, now_ms);
    if (job->timeout_ms) {
        job->deadline_us = am2z_clock_mono_us() + job->timeout_ms * 1000;
        job->lease_list = self->leases;
        job->lease_handle = zlistx_add_end(self->leases, job);
    }
}

/*  Takes the job out of the broker's deadline list. Idempotent. */
void
am2zb_lease_end(job_t *job)
{
    am2zb_sched_release(job);
    if (job->lease_handle) {
        zlistx_delete(job->lease_list, job->lease_handle);
        job->lease_handle = NULL;
    }
    job->lease_list = NULL;
    job->deadline_us = 0;
}

void
am2zb_job_track(am2z_broker_t *self, job_t *job)
{
    job->tracked = am2z_idmap_insert(self->jobs, job->id, job) == 0;
    job->proc->queued++;
}

/*  Only when the job is the one in the table (a shadow is not: it never
    was inserted, nor was a job whose id was already there). */
void
am2zb_job_untrack(am2z_broker_t *self, job_t *job)
{
    if (!job->tracked)
        return;
    job->tracked = false;
    am2z_idmap_delete(self->jobs, job->id);
    if (job->proc->queued)
        job->proc->queued--;
}

void
am2zb_job_add_fetcher(job_t *job, const peer_t *peer, bool once)
{
    /* once (FETCH): one RESULT per connection. The submitter gets its own,
       and a connection that asks again (a client re-fetching while it
       waits) is answered once, with its latest req. A duplicate SUBMIT
       (idempotency key) is a request of its own and gets its own RESULT. */
    if (!once)
        goto add;
    if (job->client.ident_size == peer->ident_size
        && memcmp(am2zb_jpeer_ident(&job->client), peer->ident, peer->ident_size) == 0)
        return;
    for (size_t i = 0; i < job->nfetchers; i++) {
        if (job->fetchers[i].ident_size == peer->ident_size
            && memcmp(job->fetchers[i].ident, peer->ident, peer->ident_size) == 0) {
            job->fetchers[i] = *peer;
            return;
        }
    }
add:;
    peer_t *grown = realloc(job->fetchers, (job->nfetchers + 1) * sizeof *grown);
    if (!grown)
        return;                   /* out of memory: the fetcher can FETCH again */
    job->fetchers = grown;
    job->fetchers[job->nfetchers++] = *peer;
}

/* ---------------------------------------------------------------------------
   Sessions
   ------------------------------------------------------------------------ */

static void
s_free_item(void **item)
{
    free(*item);
    *item = NULL;
}

/*  Lane order: a job put back at the front stays first; then higher
    priority first; then submission order. */
static int
s_lane_cmp(const void *a, const void *b)
{
    const job_t *x = a, *y = b;
    if (x->requeued != y->requeued)
        return x->requeued ? -1 : 1;
    if (x->prio != y->prio)
        return x->prio > y->prio ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq ? 1 : 0;
}

session_t *
am2zb_session_get(am2z_broker_t *self, const char *id, bool create)
{
    session_t *session = am2z_idmap_lookup(self->sessions, id);
    if (session || !create)
        return session;
    size_t id_size = strlen(id) + 1;
    session = calloc(1, sizeof *session + id_size);   /* the id right after: one block */
    if (!session)
        return NULL;
    session->id = memcpy((char *)(session + 1), id, id_size);
    session->lane = zlistx_new();
    session->stats = zhashx_new();
    if (!session->lane || !session->stats) {
        zlistx_destroy(&session->lane);
        zhashx_destroy(&session->stats);
        free(session);
        return NULL;
    }
    zhashx_set_destructor(session->stats, s_free_item);
    /* keyed by processor name, borrowed from the proc_t (procs outlive sessions) */
    zhashx_set_key_duplicator(session->stats, NULL);
    zhashx_set_key_destructor(session->stats, NULL);
    zlistx_set_comparator(session->lane, s_lane_cmp);
    am2z_idmap_insert(self->sessions, session->id, session);   /* key borrowed */
    return session;
}

/*  Destructor for self->sessions: the session must already be unready. */
void
am2zb_session_remove(am2z_broker_t *self, session_t *session)
{
    am2zb_session_unready(self, session);
    am2z_idmap_delete(self->sessions, session->id);   /* calls s_session_free */
}

counts_t *
am2zb_session_counts(session_t *session, const char *proc)
{
    counts_t *counts = zhashx_lookup(session->stats, proc);
    if (!counts) {
        counts = calloc(1, sizeof *counts);
        if (!counts)
            return NULL;
        zhashx_insert(session->stats, proc, counts);
    }
    return counts;
}

/*  The bucket of priority prio in proc (created when create), or NULL. */
static bucket_t *
s_bucket(proc_t *proc, int64_t prio, bool create)
{
    size_t i = 0;
    while (i < proc->nbuckets && proc->buckets[i].prio > prio)
        i++;
    if (i < proc->nbuckets && proc->buckets[i].prio == prio)
        return &proc->buckets[i];
    if (!create)
        return NULL;
    if (proc->nbuckets == proc->buckets_cap) {
        size_t cap = proc->buckets_cap ? 2 * proc->buckets_cap : 4;
        bucket_t *grown = realloc(proc->buckets, cap * sizeof *grown);
        if (!grown)
            return NULL;
        proc->buckets = grown;
        proc->buckets_cap = cap;
    }
    zlistx_t *ring = zlistx_new();
    if (!ring)
        return NULL;
    memmove(&proc->buckets[i + 1], &proc->buckets[i],
            (proc->nbuckets - i) * sizeof *proc->buckets);
    proc->buckets[i].prio = prio;
    proc->buckets[i].ring = ring;
    proc->nbuckets++;
    return &proc->buckets[i];
}

/*  Empty buckets are kept while there are few (the usual one or two
    priorities cost no allocation per dispatch); past that they go, so
    arbitrary client priorities cannot grow the array for ever. */
#define S_BUCKETS_KEPT 8

static void
s_bucket_trim(proc_t *proc, int64_t prio)
{
    if (proc->nbuckets <= S_BUCKETS_KEPT)
        return;
    bucket_t *b = s_bucket(proc, prio, false);
    if (!b || zlistx_size(b->ring))
        return;
    size_t i = (size_t)(b - proc->buckets);
    zlistx_destroy(&b->ring);
    memmove(&proc->buckets[i], &proc->buckets[i + 1],
            (proc->nbuckets - i - 1) * sizeof *proc->buckets);
    proc->nbuckets--;
}

session_t *
am2zb_ring_first(const proc_t *proc)
{
    for (size_t i = 0; i < proc->nbuckets; i++)
        if (zlistx_size(proc->buckets[i].ring))
            return zlistx_first(proc->buckets[i].ring);
    return NULL;
}

void
am2zb_session_unready(am2z_broker_t *self, session_t *session)
{
    if (session->ring_handle) {
        zlistx_delete(session->ring_list, session->ring_handle);
        s_bucket_trim(session->ring_proc, session->ring_prio);
        session->ring_handle = NULL;
        session->ring_list = NULL;
        session->ring_proc = NULL;
    }
    if (session->delay_handle) {
        zlistx_delete(self->delayed, session->delay_handle);
        session->delay_handle = NULL;
    }
}

/*  Puts the session where its lane head says: a ring, the delayed list, or
    nowhere (running, or nothing queued). Idempotent. */
void
am2zb_session_kick(am2z_broker_t *self, session_t *session, uint64_t now_ms)
{
    am2zb_session_unready(self, session);
    if (session->active || zlistx_size(session->lane) == 0)
        return;
    job_t *head = zlistx_first(session->lane);
    bucket_t *b = head->not_before_ms > now_ms ? NULL : s_bucket(head->proc, head->prio, true);
    if (!b) {
        /* not due yet (or out of memory: the delayed list retries it) */
        session->delay_handle = zlistx_add_end(self->delayed, session);
    } else {
        session->ring_proc = head->proc;
        session->ring_list = b->ring;
        session->ring_prio = head->prio;
        session->ring_handle = zlistx_add_end(b->ring, session);
    }
}

/*  front: the job was running (lost worker, retry): it stays first.
    Otherwise it takes its place by (prio desc, seq asc), searched from the
    back (the usual case, equal priorities, appends). */
void
am2zb_lane_push(session_t *session, job_t *job, bool front)
{
    am2zb_lease_end(job);
    job->session = session;
    job->status = JOB_WAITING;
    job->requeued = front;
    job->lane_handle = front ? zlistx_add_start(session->lane, job)
                             : zlistx_insert(session->lane, job, false);
}

void
am2zb_lane_remove(session_t *session, job_t *job)
{
    job->requeued = false;
    if (job->lane_handle) {
        zlistx_detach(session->lane, job->lane_handle);
        job->lane_handle = NULL;
    }
}

void
am2zb_delayed_due(am2z_broker_t *self, uint64_t now_ms, uint64_t *next_ms)
{
    uint64_t next = UINT64_MAX;
    session_t *due[64];
    size_t ndue = 0;
    for (session_t *s = zlistx_first(self->delayed); s; s = zlistx_next(self->delayed)) {
        job_t *head = zlistx_first(s->lane);
        uint64_t at = head ? head->not_before_ms : 0;
        if (at <= now_ms) {
            if (ndue < sizeof due / sizeof due[0])
                due[ndue++] = s;
            else
                next = now_ms;    /* more next turn */
        } else if (at < next) {
            next = at;
        }
    }
    for (size_t i = 0; i < ndue; i++)
        am2zb_session_kick(self, due[i], now_ms);
    if (next_ms)
        *next_ms = next;
}

/* ---------------------------------------------------------------------------
   Processors
   ------------------------------------------------------------------------ */

proc_t *
am2zb_proc_get(am2z_broker_t *self, const char *name, bool create)
{
    proc_t *proc = zhashx_lookup(self->procs, name);
    if (proc || !create)
        return proc;
    proc = calloc(1, sizeof *proc);
    if (!proc)
        return NULL;
    proc->name = strdup(name);
    if (self->proc_n == self->proc_cap) {
        size_t cap = self->proc_cap ? self->proc_cap * 2 : 16;
        proc_t **v = realloc(self->proc_v, cap * sizeof *v);
        if (v) {
            self->proc_v = v;
            self->proc_cap = cap;
        }
    }
    if (!proc->name || self->proc_n == self->proc_cap) {
        free(proc->name);
        free(proc);
        return NULL;
    }
    zhashx_insert(self->procs, proc->name, proc);   /* key borrowed: the proc's own */
    self->proc_v[self->proc_n++] = proc;
    return proc;
}

void
am2zb_proc_sched_free(proc_t *proc)
{
    for (size_t i = 0; i < proc->nbuckets; i++)
        zlistx_destroy(&proc->buckets[i].ring);
    free(proc->buckets);
    proc->buckets = NULL;
    proc->nbuckets = proc->buckets_cap = 0;
    free(proc->rate_ring);
    proc->rate_ring = NULL;
}

/*  A rate window of more leases than this is refused (its ring would be
    rate_max timestamps). */
#define S_RATE_MAX 1000000u

int
am2zb_proc_sched_set(proc_t *proc, const am2z_proc_desc_t *desc, const char **why)
{
    *why = NULL;
    if ((desc->rate_max == 0) != (desc->rate_per_ms == 0)) {
        /* one without the other is no limit at all: say so, rather than
           serve the processor unlimited */
        *why = desc->rate_max ? "rate without per (a rate limit needs both)"
                              : "per without rate (a rate limit needs both)";
        return AM2Z_EINVAL;
    }
    if (desc->rate_max && desc->rate_per_ms) {
        if (desc->rate_max > S_RATE_MAX) {
            *why = "rate above 1000000 jobs per interval";
            return AM2Z_EINVAL;
        }
        uint64_t *ring = calloc(desc->rate_max, sizeof *ring);
        if (!ring) {
            *why = "out of memory for the rate window";
            return AM2Z_ENOMEM;
        }
        free(proc->rate_ring);
        proc->rate_ring = ring;
        proc->rate_max = desc->rate_max;
        proc->rate_per_ms = desc->rate_per_ms;
        proc->rate_n = proc->rate_pos = 0;
    }
    proc->delay_ms = desc->delay_ms;
    proc->max_active = desc->max_active;
    return AM2Z_OK;
}

bool
am2zb_sched_admit(const proc_t *proc, uint64_t now_ms, bool call)
{
    if (!call && proc->max_active && proc->leased >= proc->max_active)
        return false;
    return am2zb_sched_rate_next(proc) <= now_ms;
}

void
am2zb_sched_take(job_t *job, uint64_t now_ms)
{
    proc_t *proc = job->proc;
    job->dispatched_ms = now_ms;
    if (proc->rate_ring) {
        proc->rate_ring[proc->rate_pos] = now_ms;
        proc->rate_pos = (proc->rate_pos + 1) % proc->rate_max;
        if (proc->rate_n < proc->rate_max)
            proc->rate_n++;
    }
    if (!job->call && !job->cap_held) {
        job->cap_held = true;
        proc->leased++;
    }
}

void
am2zb_sched_release(job_t *job)
{
    if (job->cap_held) {
        job->cap_held = false;
        if (job->proc && job->proc->leased)
            job->proc->leased--;
    }
}

uint64_t
am2zb_sched_rate_next(const proc_t *proc)
{
    if (!proc->rate_ring || proc->rate_n < proc->rate_max)
        return 0;
    return proc->rate_ring[proc->rate_pos] + proc->rate_per_ms;
}

/* ---------------------------------------------------------------------------
   Workers
   ------------------------------------------------------------------------ */

void
am2zb_ident_hex(const uint8_t *ident, size_t size, char *out)
{
    static const char hex[] = "0123456789abcdef";
    if (size > S_IDENT_MAX)
        size = S_IDENT_MAX;
    for (size_t i = 0; i < size; i++) {
        out[2 * i] = hex[ident[i] >> 4];
        out[2 * i + 1] = hex[ident[i] & 15];
    }
    out[2 * size] = '\0';
}

worker_t *
am2zb_worker_by_ident(am2z_broker_t *self, const uint8_t *ident, size_t size)
{
    char key[2 * S_IDENT_MAX + 1];
    am2zb_ident_hex(ident, size, key);
    return zhashx_lookup(self->workers_by_key, key);
}

worker_t *
am2zb_worker_add(am2z_broker_t *self, const uint8_t *ident, size_t size, const char *id)
{
    if (size > S_IDENT_MAX)
        return NULL;
    if (self->nworkers == self->workers_cap) {
        size_t cap = self->workers_cap ? 2 * self->workers_cap : 8;
        worker_t **grown = realloc(self->workers, cap * sizeof *grown);
        if (!grown)
            return NULL;
        self->workers = grown;
        self->workers_cap = cap;
    }
    worker_t *worker = calloc(1, sizeof *worker);
    if (!worker || !(worker->id = strdup(id)) || !(worker->expired = zlistx_new())) {
        if (worker)
            free(worker->id);
        free(worker);
        return NULL;
    }
    zlistx_set_destructor(worker->expired, s_free_item);   /* plain free() */
    memcpy(worker->ident, ident, size);
    worker->ident_size = size;
    am2zb_ident_hex(ident, size, worker->key);
    worker->last_seen_us = am2z_clock_mono_us();
    self->workers[self->nworkers++] = worker;
    zhashx_insert(self->workers_by_key, worker->key, worker);
    return worker;
}

/*  Forgets a worker: its leases go back to the front of their lanes (the
    attempt stays counted), stopped jobs it held are dropped. */
void
am2zb_worker_forget(am2z_broker_t *self, worker_t *worker, const char *why)
{
    uint64_t now = am2z_clock_wall_ms();
    zlistx_t *drop = zlistx_new();
    size_t returned = 0;
    for (job_t *job = am2z_idmap_first(self->jobs); job; job = am2z_idmap_next(self->jobs)) {
        if (job->worker != worker || job->status != JOB_ACTIVE)
            continue;
        job->worker = NULL;
        if (job->stopped || (!job->session && !job->flow_id && !job->call)) {
            if (drop)
                zlistx_add_end(drop, job);
            continue;
        }
        if (job->flow_id || job->call) {
            /* a workflow step or call: back to the ready list, any worker */
            am2zb_flow_requeue(self, job, now);
            returned++;
            continue;
        }
        session_t *session = job->session;
        if (session->active == job)
            session->active = NULL;
        am2zb_lane_push(session, job, true);
        am2zb_session_kick(self, session, now);
        returned++;
    }
    if (drop) {
        for (job_t *job = zlistx_first(drop); job; job = zlistx_next(drop)) {
            am2zb_job_untrack(self, job);
            am2zb_job_destroy(&job);
        }
        zlistx_destroy(&drop);
    }
    AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT, "worker forgotten",
             AM2Z_KS("worker", worker->id), AM2Z_KS("reason", why),
             AM2Z_KU("leases_returned", returned));
    zhashx_delete(self->workers_by_key, worker->key);
    for (size_t i = 0; i < self->nworkers; i++) {
        if (self->workers[i] == worker) {
            memmove(&self->workers[i], &self->workers[i + 1],
                    (self->nworkers - i - 1) * sizeof *self->workers);
            self->nworkers--;
            break;
        }
    }
    zlistx_destroy(&worker->expired);
    free(worker->procs);
    free(worker->id);
    free(worker);
}

wproc_t *
am2zb_worker_proc(worker_t *worker, const proc_t *proc)
{
    for (size_t i = 0; i < worker->nprocs; i++)
        if (worker->procs[i].proc == proc)
            return &worker->procs[i];
    return NULL;
}

worker_t *
am2zb_pick_worker(am2z_broker_t *self, proc_t *proc)
{
    size_t n = self->nworkers;
    for (size_t k = 0; k < n; k++) {
        size_t idx = (proc->rr + k) % n;
        wproc_t *wp = am2zb_worker_proc(self->workers[idx], proc);
        if (wp && wp->credit > 0) {
            proc->rr = (idx + 1) % n;
            return self->workers[idx];
        }
    }
    return NULL;
}
