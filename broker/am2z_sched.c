/*  am2z_sched.c — the broker's in-memory scheduling state: session lanes,
    per-processor rings of ready sessions, workers and their credit.

    Fairness comes from the rings: a session enters its head job's
    processor ring at the back when it becomes ready, and leaves it when a
    job is leased; it can only come back after that job ends. So with k
    ready sessions, each gets one job out of every k, whatever its backlog.
    Workers are picked round-robin per processor among those with credit.
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
am2zb_job_destroy(job_t **job_p)
{
    if (!job_p || !*job_p)
        return;
    job_t *job = *job_p;
    am2zb_lease_end(job);
    free(job->session_id);
    free(job->state);
    free(job->fetchers);
    free(job);
    *job_p = NULL;
}

/*  Takes the job out of the broker's deadline list. Idempotent. */
void
am2zb_lease_end(job_t *job)
{
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
    zhashx_insert(self->jobs, job->id, job);
    job->proc->queued++;
}

/*  Only when the job is the one in the table (a shadow is not). */
void
am2zb_job_untrack(am2z_broker_t *self, job_t *job)
{
    if (zhashx_lookup(self->jobs, job->id) != job)
        return;
    zhashx_delete(self->jobs, job->id);
    if (job->proc->queued)
        job->proc->queued--;
}

void
am2zb_job_add_fetcher(job_t *job, const peer_t *peer)
{
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

session_t *
am2zb_session_get(am2z_broker_t *self, const char *id, bool create)
{
    session_t *session = zhashx_lookup(self->sessions, id);
    if (session || !create)
        return session;
    session = calloc(1, sizeof *session);
    if (!session)
        return NULL;
    session->id = strdup(id);
    session->lane = zlistx_new();
    session->stats = zhashx_new();
    if (!session->id || !session->lane || !session->stats) {
        free(session->id);
        zlistx_destroy(&session->lane);
        zhashx_destroy(&session->stats);
        free(session);
        return NULL;
    }
    zhashx_set_destructor(session->stats, s_free_item);
    zhashx_insert(self->sessions, id, session);
    return session;
}

/*  Destructor for self->sessions: the session must already be unready. */
void
am2zb_session_remove(am2z_broker_t *self, session_t *session)
{
    am2zb_session_unready(self, session);
    zhashx_delete(self->sessions, session->id);   /* calls s_session_free */
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

void
am2zb_session_unready(am2z_broker_t *self, session_t *session)
{
    if (session->ring_handle) {
        zlistx_delete(session->ring_proc->ring, session->ring_handle);
        session->ring_handle = NULL;
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
    if (head->not_before_ms > now_ms) {
        session->delay_handle = zlistx_add_end(self->delayed, session);
    } else {
        session->ring_proc = head->proc;
        session->ring_handle = zlistx_add_end(head->proc->ring, session);
    }
}

void
am2zb_lane_push(session_t *session, job_t *job, bool front)
{
    am2zb_lease_end(job);
    job->session = session;
    job->status = JOB_WAITING;
    job->lane_handle = front ? zlistx_add_start(session->lane, job)
                             : zlistx_add_end(session->lane, job);
}

void
am2zb_lane_remove(session_t *session, job_t *job)
{
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
    proc->ring = zlistx_new();
    if (!proc->name || !proc->ring) {
        free(proc->name);
        zlistx_destroy(&proc->ring);
        free(proc);
        return NULL;
    }
    zhashx_insert(self->procs, name, proc);
    return proc;
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
    for (job_t *job = zhashx_first(self->jobs); job; job = zhashx_next(self->jobs)) {
        if (job->worker != worker || job->status != JOB_ACTIVE)
            continue;
        job->worker = NULL;
        if (job->stopped || !job->session) {
            if (drop)
                zlistx_add_end(drop, job);
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
