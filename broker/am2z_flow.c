/*  am2z_flow.c — workflow runs: composites (worker/am2z_compose.h) run by
    the broker, durable in AM2Z_DB_RUNS. See BEHAVIOUR.md "Workflow runs".

    A composite job at the head of its session's lane becomes a run (a
    flow_t): it holds the session (session->active) for the whole run. Its
    units — chain steps, parallel branches, batch payloads, and the aux
    unit (route selector / target, merge processor) — are either leaf
    steps (internal jobs: in self->jobs, no lane, leased from the ready
    list below before any lane work, with their processor's lease, retries
    and timeout), nested runs (child flow_t, any depth), or, for batch
    payloads naming another session, normal jobs in that session's lane.

    Outcomes never act on a run directly: they become items in a queue and
    s_pump() applies them one by one, so a run that fails (and frees its
    children) is never under a caller's feet. Items and steps name runs by
    id, not pointer: an outcome for a run that has ended is dropped.

    Nested calls (CALL from a worker, am2zb_flow_call) reuse the ready list:
    the callee is a step-like job with job->call set, leased first and
    beyond credit; its outcome is answered to the calling worker as RESULT
    {req}. A called composite is a run without a root job or record whose
    outcome is answered the same way.

    Cycles: a composite whose units lead back to itself would nest runs
    without end (s_start_unit -> s_run -> s_start_unit ... on the stack).
    Registration refuses one (am2zb_flow_register); one stored before that
    check is marked at reload and its runs fail at once; and no run nests
    deeper than S_NEST_MAX whatever the definitions say.

    Durability: after each applied outcome the root run's record (the whole
    tree: cursor, states of finished units, nested progress) is rewritten
    in the turn's batch. A restart reloads the composite job into its lane
    and, when it reaches the head again, the run resumes from the record:
    finished units keep their results, unfinished ones run again.
*/
#include "am2z_broker_int.h"
#include "am2z_jobrec.h"
#include "am2z_merge.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_AUX (-1)
#define S_COMP_PREFIX "comp:"
/*  Nested runs below a root (or called) run: a unit that would go deeper
    fails instead of starting. Registration refuses cycles, so only a
    definition stored before that check, or a genuinely deep tree, gets
    here; the bound keeps the mutual recursion of s_start_unit / s_run on
    the stack finite. 16 = the nesting a run record keeps (am2z_jobrec.c). */
#define S_NEST_MAX 16
/*  A cycle as text: "a -> b -> a" (longer ones end with "..."). */
#define S_CYCLE_MAX 512

enum { U_PENDING = 0, U_RUNNING = 1, U_DONE = 2, U_FAILED = 3 };
enum { P_UNITS = 0, P_SELECT, P_TARGET, P_MERGE, P_OVER };
enum { K_CHAIN = 0, K_PARALLEL, K_ROUTE, K_BATCH };

typedef struct {
    int status;                   /* U_* */
    am2z_state_t *state;          /* U_DONE: its result (owned) */
    am2z_error_t *error;          /* U_FAILED: why (owned) */
    uint64_t child;               /* nested run in flight, 0 = none */
    job_t *job;                   /* leaf step in flight (borrowed: self->jobs) */
    char foreign[AM2Z_ID_LEN + 1];/* batch: job in another session, "" = none */
    char session[AM2Z_SESSION_ID_MAX + 1]; /* batch: that session, "" = own */
    am2z_runrec_t *resume;        /* nested progress to resume from (owned) */
} unit_t;

typedef struct {
    uint64_t id;
    uint64_t parent;              /* parent run, 0 = root */
    int parent_slot;
    uint64_t root_flow;           /* id of the root run (itself for a root) */
    job_t *root;                  /* the composite job (borrowed; outlives the tree) */
    const am2z_comp_desc_t *comp; /* borrowed from its proc (lives until destroy) */
    char *session;                /* owned */
    am2z_state_t *input;          /* owned */
    uint64_t expected_version;    /* root: stored version at start */
    uint64_t started_ms;
    uint64_t started_us;
    uint64_t deadline_us;         /* 0 = none */
    int phase;                    /* P_* */
    size_t cursor;                /* chain: the running step */
    am2z_state_t *cur;            /* chain: its input (owned) */
    char key[AM2Z_NAME_MAX + 1];  /* route: the key */
    char target[AM2Z_NAME_MAX + 1];
    unit_t *units;                /* owned, n of them */
    size_t n;
    unit_t aux;                   /* selector, route target, merge processor */
    uint8_t **payloads;           /* batch: payload maps (owned) */
    size_t *psizes;
    bool bad_payloads;            /* batch: payloads_path is not an array of maps */
    bool dirty;                   /* root: record to rewrite */
    bool resumed;                 /* restored after a restart: steps whose
                                     processor no worker announced yet wait */
    uint32_t depth;               /* call depth of its steps */
    uint32_t nest;                /* nesting level: 0 = root or called run */
    bool too_deep;                /* root: a unit passed S_NEST_MAX; no
                                     further unit of the tree starts */
    uint64_t call_req;            /* a composite called by am2z_ctx_call: the
                                     CALL's req (no root job, no record), else 0 */
    char call_worker[AM2Z_JOB_ID_MAX + 1]; /* the calling worker's id */
} flow_t;

/*  One outcome for a run's unit. */
typedef struct {
    uint64_t flow;
    int slot;
    bool ok;
    am2z_state_t *state;          /* owned */
    am2z_error_t *error;          /* owned */
    char select[AM2Z_NAME_MAX + 1];
} item_t;

typedef struct {
    uint64_t flow;
    int slot;
} ref_t;

struct am2zb_flows_s {
    zhashx_t *runs;               /* "id" -> flow_t* (owned, freed by s_flow_free) */
    uint64_t next_id;
    zlistx_t *ready;              /* job_t* steps waiting for a worker (borrowed) */
    zlistx_t *queue;              /* item_t* to apply (owned) */
    zhashx_t *foreign;            /* job id -> ref_t* (owned): batch jobs elsewhere */
    zhashx_t *cyclic;             /* composite name -> its cycle (owned text):
                                     reloaded definitions stored before cycles
                                     were refused; their runs fail at once */
    bool pumping;
};

static void s_run(am2z_broker_t *self, flow_t *f);
static void s_call_result(am2z_broker_t *self, const char *worker_id, uint64_t req,
                          const job_t *job, const char *proc, bool ok,
                          const am2z_state_t *state, am2z_error_t **error_p,
                          uint64_t exec_us, uint64_t started_ms);
static void s_restore(am2z_broker_t *self, flow_t *f, am2z_runrec_t *rec);
static void s_complete(am2z_broker_t *self, flow_t *f, bool ok, am2z_state_t **state_p,
                       am2z_error_t **error_p);

/* ---------------------------------------------------------------------------
   Small helpers
   ------------------------------------------------------------------------ */

static void
s_idkey(uint64_t id, char *buf, size_t size)
{
    snprintf(buf, size, "%" PRIu64, id);
}

static flow_t *
s_get(am2z_broker_t *self, uint64_t id)
{
    char key[32];
    s_idkey(id, key, sizeof key);
    return id ? zhashx_lookup(self->flows->runs, key) : NULL;
}

static unit_t *
s_unit(flow_t *f, int slot)
{
    return slot == S_AUX ? &f->aux : &f->units[slot];
}

static const char *
s_kind(const flow_t *f)
{
    const char *k = am2z_comp_kind_name(f->comp->kind);
    return k ? k : "composite";
}

static void
s_touch(am2z_broker_t *self, flow_t *f)
{
    flow_t *root = s_get(self, f->root_flow);
    if (root)
        root->dirty = true;
}

static void
s_push(am2z_broker_t *self, uint64_t flow, int slot, bool ok, am2z_state_t **state_p,
       am2z_error_t **error_p, const char *select)
{
    item_t *it = calloc(1, sizeof *it);
    if (!it) {
        if (state_p)
            am2z_state_destroy(state_p);
        if (error_p)
            am2z_error_destroy(error_p);
        return;
    }
    it->flow = flow;
    it->slot = slot;
    it->ok = ok;
    if (state_p) {
        it->state = *state_p;
        *state_p = NULL;
    }
    if (error_p) {
        it->error = *error_p;
        *error_p = NULL;
    }
    if (!it->ok && !it->error)
        it->error = am2z_error_new(AM2Z_CAT_EXECUTION, "INTERNAL", "step failed");
    if (select)
        snprintf(it->select, sizeof it->select, "%s", select);
    zlistx_add_end(self->flows->queue, it);
}

static void
s_item_free(void **p)
{
    item_t *it = *p;
    if (it) {
        am2z_state_destroy(&it->state);
        am2z_error_destroy(&it->error);
        free(it);
    }
    *p = NULL;
}

static void
s_free_item(void **p)
{
    free(*p);
    *p = NULL;
}

/*  An event of the run, sent as the root job's (to its client and PUB). */
static void
s_event_bw(am2z_broker_t *self, flow_t *f, const char *name, am2z_bw_t *w)
{
    uint8_t *data = NULL;
    size_t size = 0;
    if (w && am2z_bw_take(w, &data, &size) == AM2Z_OK && f->root)
        am2zb_job_event(self, f->root, name, data, size);
    free(data);
    am2z_bw_destroy(&w);
}

static void
s_step_event(am2z_broker_t *self, flow_t *f, const char *step, size_t position, size_t total)
{
    am2z_bw_t *w = am2z_bw_new();
    if (!w)
        return;
    am2z_bw_map(w, 5);
    am2z_bw_str(w, "composite");     am2z_bw_str(w, f->comp->name);
    am2z_bw_str(w, "step");          am2z_bw_str(w, step);
    am2z_bw_str(w, "position");      am2z_bw_uint(w, position);
    am2z_bw_str(w, "total");         am2z_bw_uint(w, total);
    am2z_bw_str(w, "stepCompleted"); am2z_bw_bool(w, true);
    s_event_bw(self, f, "processor:completed", w);
}

static am2z_error_t *
s_not_found(am2z_broker_t *self, const char *name)
{
    size_t n = zhashx_size(self->procs), k = 0;
    const char **names = calloc(n ? n : 1, sizeof *names);
    if (names)
        for (proc_t *p = zhashx_first(self->procs); p; p = zhashx_next(self->procs))
            if (p->registered)
                names[k++] = p->name;
    am2z_error_t *e = am2z_error_processor_not_found(name, names, k);
    free(names);
    return e;
}

static am2z_error_t *
s_nomem(void)
{
    return am2z_error_resource("memory", 0, 0);
}

/* ---------------------------------------------------------------------------
   Runs: life cycle
   ------------------------------------------------------------------------ */

static int
s_collect(const uint8_t *elem, size_t size, size_t index, void *arg)
{
    (void)index;
    flow_t *f = arg;
    uint8_t **items = realloc(f->payloads, (f->n + 1) * sizeof *items);
    if (!items)
        return AM2Z_ENOMEM;
    f->payloads = items;
    size_t *sizes = realloc(f->psizes, (f->n + 1) * sizeof *sizes);
    if (!sizes)
        return AM2Z_ENOMEM;
    f->psizes = sizes;
    if (!(f->payloads[f->n] = malloc(size)))
        return AM2Z_ENOMEM;
    memcpy(f->payloads[f->n], elem, size);
    f->psizes[f->n++] = size;
    return 0;
}

/*  A new run of comp on input (taken). parent NULL = root of job root. */
static flow_t *
s_flow_new(am2z_broker_t *self, const am2z_comp_desc_t *comp, const char *session,
           am2z_state_t **input_p, flow_t *parent, int slot, job_t *root)
{
    flow_t *f = calloc(1, sizeof *f);
    if (!f) {
        am2z_state_destroy(input_p);
        return NULL;
    }
    f->id = ++self->flows->next_id;
    f->parent = parent ? parent->id : 0;
    f->parent_slot = slot;
    f->root_flow = parent ? parent->root_flow : f->id;
    f->root = parent ? parent->root : root;
    f->resumed = parent ? parent->resumed : false;
    f->depth = parent ? parent->depth : (root ? root->depth : 0);
    f->nest = parent ? parent->nest + 1 : 0;
    f->comp = comp;
    f->session = strdup(session);
    f->input = *input_p;
    *input_p = NULL;
    f->started_ms = am2z_clock_wall_ms();
    f->started_us = am2z_clock_mono_us();
    uint64_t timeout = !parent && root ? root->timeout_ms : comp->timeout_ms;
    if (timeout)
        f->deadline_us = f->started_us + timeout * 1000;
    if (comp->kind == K_CHAIN || comp->kind == K_PARALLEL) {
        f->n = comp->nsteps;
    } else if (comp->kind == K_BATCH) {
        uint8_t *raw = NULL;
        size_t raw_size = 0;
        am2z_vtype_t type;
        f->n = 0;
        if (am2z_state_type(f->input, comp->payloads_path, &type) != AM2Z_OK
            || type != AM2Z_VT_ARRAY
            || am2z_state_get_raw(f->input, comp->payloads_path, &raw, &raw_size) != AM2Z_OK
            || am2z_array_each(raw, raw_size, s_collect, f) != AM2Z_OK)
            f->bad_payloads = true;
        free(raw);
    }
    f->units = calloc(f->n ? f->n : 1, sizeof *f->units);
    char key[32];
    s_idkey(f->id, key, sizeof key);
    if (!f->session || !f->units || !f->input) {
        free(f->session);
        free(f->units);
        am2z_state_destroy(&f->input);
        for (size_t i = 0; i < f->n && f->payloads; i++)
            free(f->payloads[i]);
        free(f->payloads);
        free(f->psizes);
        free(f);
        return NULL;
    }
    zhashx_insert(self->flows->runs, key, f);
    return f;
}

static void s_flow_free(am2z_broker_t *self, flow_t *f);

/*  Stops whatever the unit has in flight; its outcome will be dropped. */
static void
s_unit_cancel(am2z_broker_t *self, unit_t *u)
{
    job_t *job = u->job;
    u->job = NULL;
    if (job) {
        if (job->status == JOB_WAITING) {
            if (job->ready_handle) {
                zlistx_delete(self->flows->ready, job->ready_handle);
                job->ready_handle = NULL;
            }
            am2zb_job_untrack(self, job);
            am2zb_job_destroy(&job);
        } else {
            /* leased: CANCEL; the late DONE (or expiry, or the worker's
               end) drops it, as for a stopped session's job */
            am2z_msg_t cancel;
            am2z_msg_init(&cancel, AM2Z_CMD_CANCEL);
            cancel.job = job->id;
            cancel.attempt = job->attempt;
            if (job->worker)
                am2zb_send_worker(self, job->worker, &cancel);
            cancel.job = NULL;
            am2z_msg_clear(&cancel);
            job->stopped = true;
            job->flow_id = 0;
        }
    }
    if (u->child) {
        flow_t *c = s_get(self, u->child);
        u->child = 0;
        if (c)
            s_flow_free(self, c);
    }
    if (u->foreign[0]) {
        /* the job goes on in its own session; its outcome is not ours */
        zhashx_delete(self->flows->foreign, u->foreign);
        u->foreign[0] = '\0';
    }
}

static void
s_unit_clear(am2z_broker_t *self, unit_t *u)
{
    s_unit_cancel(self, u);
    am2z_state_destroy(&u->state);
    am2z_error_destroy(&u->error);
    am2z_runrec_destroy(&u->resume);
}

/*  Cancels what the run has in flight and frees it (and nested runs). */
static void
s_flow_free(am2z_broker_t *self, flow_t *f)
{
    char key[32];
    s_idkey(f->id, key, sizeof key);
    zhashx_delete(self->flows->runs, key);
    for (size_t i = 0; i < f->n; i++)
        s_unit_clear(self, &f->units[i]);
    s_unit_clear(self, &f->aux);
    free(f->units);
    for (size_t i = 0; f->payloads && i < f->n; i++)
        free(f->payloads[i]);
    free(f->payloads);
    free(f->psizes);
    am2z_state_destroy(&f->input);
    am2z_state_destroy(&f->cur);
    free(f->session);
    free(f);
}

/* ---------------------------------------------------------------------------
   Starting units
   ------------------------------------------------------------------------ */

/*  A leaf step: an internal job on the ready list. */
static job_t *
s_step_job(am2z_broker_t *self, flow_t *f, int slot, proc_t *proc, const am2z_state_t *input)
{
    job_t *job = am2zb_job_new();
    if (!job)
        return NULL;
    if (am2z_id_new(job->id) != AM2Z_OK || !(job->session_id = strdup(f->session))
        || !(job->state = malloc(am2z_state_size(input)))) {
        am2zb_job_destroy(&job);
        return NULL;
    }
    memcpy(job->state, am2z_state_data(input), am2z_state_size(input));
    job->state_size = am2z_state_size(input);
    job->proc = proc;
    job->prio = proc->priority;
    job->timeout_ms = proc->timeout_ms;
    job->depth = f->depth;
    job->created_ms = am2z_clock_wall_ms();
    job->accepted = true;
    job->status = JOB_WAITING;
    job->input_version = am2z_state_version(input);
    job->flow_id = f->id;
    job->flow_slot = slot;
    if (f->root)
        am2zb_jpeer_copy(&job->client, &f->root->client);   /* its events reach the run's caller */
    am2zb_job_track(self, job);
    job->ready_handle = zlistx_add_end(self->flows->ready, job);
    return job;
}

/*  Runs `name` (processor or composite) as unit `slot` on input (borrowed). */
static void
s_start_unit(am2z_broker_t *self, flow_t *f, int slot, const char *name,
             const am2z_state_t *input)
{
    unit_t *u = s_unit(f, slot);
    u->status = U_RUNNING;
    proc_t *proc = am2zb_proc_get(self, name, false);
    flow_t *root = s_get(self, f->root_flow);
    if (root && root->too_deep) {
        /* the tree fails: start nothing more (a parallel of itself would
           otherwise fan out at every level) */
        am2z_error_t *e = am2z_error_configuration(name, "not started: the run is failing "
                                                         "(composites nested too deep)");
        s_push(self, f->id, slot, false, NULL, &e, NULL);
        return;
    }
    if (proc && proc->comp && f->nest + 1 > S_NEST_MAX) {
        if (root)
            root->too_deep = true;
        char reason[128];
        snprintf(reason, sizeof reason,
                 "composites nested more than %d deep (does one refer back to itself?)",
                 S_NEST_MAX);
        am2z_error_t *e = am2z_error_configuration(name, reason);
        AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT, "workflow run nested too deep",
                 AM2Z_KS("composite", name), AM2Z_KS("in", f->comp->name),
                 AM2Z_KU("limit", S_NEST_MAX));
        s_push(self, f->id, slot, false, NULL, &e, NULL);
        return;
    }
    if (proc && proc->comp) {
        am2z_state_t *in = am2z_state_dup(input);
        flow_t *c = in ? s_flow_new(self, proc->comp, f->session, &in, f, slot, NULL) : NULL;
        if (!c) {
            am2z_error_t *e = s_nomem();
            s_push(self, f->id, slot, false, NULL, &e, NULL);
            return;
        }
        u->child = c->id;
        if (u->resume) {
            s_restore(self, c, u->resume);        /* the nested run's progress */
            am2z_runrec_destroy(&u->resume);
        }
        s_run(self, c);
        return;
    }
    if ((!proc || !proc->registered) && f->resumed)
        proc = am2zb_proc_get(self, name, true);   /* its workers come back */
    if (!proc || (!proc->registered && !f->resumed)) {
        am2z_error_t *e = s_not_found(self, name);
        s_push(self, f->id, slot, false, NULL, &e, NULL);
        return;
    }
    u->job = s_step_job(self, f, slot, proc, input);
    if (!u->job) {
        am2z_error_t *e = s_nomem();
        s_push(self, f->id, slot, false, NULL, &e, NULL);
    }
}

/*  Batch payload i naming another session: a normal job in that session's
    lane (its lock respected, its state written there), awaited. */
static void
s_start_foreign(am2z_broker_t *self, flow_t *f, size_t i, const char *sid)
{
    unit_t *u = &f->units[i];
    u->status = U_RUNNING;
    snprintf(u->session, sizeof u->session, "%s", sid);
    proc_t *proc = am2zb_proc_get(self, f->comp->processor, false);
    if (!proc || !proc->registered) {
        am2z_error_t *e = s_not_found(self, f->comp->processor);
        s_push(self, f->id, (int)i, false, NULL, &e, NULL);
        return;
    }
    job_t *job = am2zb_job_new();
    ref_t *ref = calloc(1, sizeof *ref);
    session_t *session = am2zb_session_get(self, sid, true);
    uint64_t now = am2z_clock_wall_ms();
    if (!job || !ref || !session || am2z_id_new(job->id) != AM2Z_OK
        || !(job->session_id = strdup(sid)) || !(job->state = malloc(f->psizes[i]))) {
        am2zb_job_destroy(&job);
        free(ref);
        am2z_error_t *e = s_nomem();
        s_push(self, f->id, (int)i, false, NULL, &e, NULL);
        return;
    }
    memcpy(job->state, f->payloads[i], f->psizes[i]);
    job->state_size = f->psizes[i];
    job->overlay = true;
    job->proc = proc;
    job->prio = proc->priority;
    job->timeout_ms = proc->timeout_ms;
    job->depth = f->depth;
    job->created_ms = now;
    job->not_before_ms = now;
    job->seq = ++self->seq;
    job->accepted = true;
    int rc = am2zb_put_job_record(self, job);
    if (rc != AM2Z_OK) {
        am2zb_job_destroy(&job);
        free(ref);
        am2z_error_t *e = am2zb_error_from_rc(rc, "batch payload");
        s_push(self, f->id, (int)i, false, NULL, &e, NULL);
        return;
    }
    am2zb_job_track(self, job);
    am2zb_lane_push(session, job, false);
    am2zb_session_kick(self, session, now);
    ref->flow = f->id;
    ref->slot = (int)i;
    zhashx_update(self->flows->foreign, job->id, ref);
    snprintf(u->foreign, sizeof u->foreign, "%s", job->id);
}

/*  A batch payload recorded as running in another session before a
    restart: await it, take its stored result, or enqueue it again. */
static void
s_resume_foreign(am2z_broker_t *self, flow_t *f, size_t i)
{
    unit_t *u = &f->units[i];
    char id[AM2Z_ID_LEN + 1];
    snprintf(id, sizeof id, "%s", u->foreign);
    u->foreign[0] = '\0';
    u->status = U_RUNNING;
    if (am2z_idmap_lookup(self->jobs, id)) {
        ref_t *ref = calloc(1, sizeof *ref);
        if (ref) {
            ref->flow = f->id;
            ref->slot = (int)i;
            zhashx_update(self->flows->foreign, id, ref);
            snprintf(u->foreign, sizeof u->foreign, "%s", id);
            return;
        }
    }
    am2z_record_t rec;
    memset(&rec, 0, sizeof rec);
    am2z_msg_t r;
    am2z_msg_init(&r, AM2Z_CMD_INVALID);
    int rc = am2z_store_get_record(self->store, AM2Z_DB_RESULTS, id, strlen(id), &rec);
    if (rc == AM2Z_OK)
        rc = am2z_msg_decode(AM2Z_CMD_RESULT, rec.data, rec.size, rec.size + 1, &r, NULL, 0);
    am2z_record_clear(&rec);
    if (rc == AM2Z_OK) {
        am2z_state_t *st = NULL;
        if (r.success && r.state)
            am2z_state_decode(r.state, r.state_size, &st);
        bool ok = r.success && st;
        am2z_error_t *e = r.error;
        r.error = NULL;
        s_push(self, f->id, (int)i, ok, &st, &e, NULL);
        am2z_msg_clear(&r);
        return;
    }
    s_start_foreign(self, f, i, u->session);
}

/* ---------------------------------------------------------------------------
   Finishing
   ------------------------------------------------------------------------ */

static void
s_fail(am2z_broker_t *self, flow_t *f, am2z_error_t **error_p)
{
    if (!*error_p)
        *error_p = s_nomem();
    s_complete(self, f, false, NULL, error_p);
}

/*  Fails the run with cause wrapped (am2z_error_in_composite). */
static void
s_fail_in(am2z_broker_t *self, flow_t *f, const am2z_error_t *cause, const char *what,
          const char *unit, const char *step, uint32_t position, uint32_t completed,
          const am2z_state_t *partial)
{
    am2z_error_t *e = am2z_error_in_composite(
        cause, what, f->comp->name, unit, step, position, completed,
        partial ? am2z_state_data(partial) : NULL, partial ? am2z_state_size(partial) : 0);
    s_fail(self, f, &e);
}

/*  The root run ended: state written once (CAS), record deleted, the job
    finished like any job. */
static void
s_finish_root(am2z_broker_t *self, flow_t *f, bool ok, am2z_state_t *state,
              am2z_error_t **error_p, uint64_t exec_us)
{
    job_t *job = f->root;
    am2z_store_batch_t *batch = am2zb_batch(self);
    am2z_error_t *error = *error_p;
    *error_p = NULL;
    if (ok) {
        int rc = batch ? am2z_batch_put_state(batch, f->session, f->expected_version,
                                              am2z_state_version(state), am2z_state_data(state),
                                              am2z_state_size(state), am2z_clock_wall_ms())
                       : AM2Z_EIO;
        if (rc != AM2Z_OK) {
            ok = false;
            error = am2zb_error_from_rc(rc, "saving state");
        }
    }
    if (batch)
        am2z_batch_del(batch, AM2Z_DB_RUNS, job->id, strlen(job->id));   /* ENOTFOUND ok */
    if (!ok)
        am2zb_dead_letter(self, job, error);   /* like any job failed for good */
    uint8_t *bytes = NULL;
    size_t size = 0;
    if (ok && (bytes = malloc(am2z_state_size(state)))) {
        memcpy(bytes, am2z_state_data(state), am2z_state_size(state));
        size = am2z_state_size(state);
    } else if (ok) {
        ok = false;
        error = s_nomem();
    }
    am2zb_finish(self, job, ok, &bytes, size, &error, exec_us, f->started_ms, NULL);
    free(bytes);
    am2z_error_destroy(&error);
}

/*  The run ends: events, then the parent gets the outcome, or the root
    job finishes. Frees f. Takes *state_p / *error_p. */
static void
s_complete(am2z_broker_t *self, flow_t *f, bool ok, am2z_state_t **state_p,
           am2z_error_t **error_p)
{
    f->phase = P_OVER;
    uint64_t us = am2z_clock_mono_us() - f->started_us;
    if (!us)
        us = 1;
    am2z_bw_t *w = am2z_bw_new();
    if (w) {
        am2z_bw_map(w, 2);
        am2z_bw_str(w, "composite");     am2z_bw_str(w, f->comp->name);
        am2z_bw_str(w, "executionTime"); am2z_bw_uint(w, us);
    }
    s_event_bw(self, f, ok ? "workflow:completed" : "workflow:failed", w);
    am2z_state_t *state = state_p ? *state_p : NULL;
    am2z_error_t *error = error_p ? *error_p : NULL;
    if (state_p)
        *state_p = NULL;
    if (error_p)
        *error_p = NULL;
    if (f->parent) {
        s_push(self, f->parent, f->parent_slot, ok, &state, &error, NULL);
        s_touch(self, f);
    } else if (f->call_req) {
        s_call_result(self, f->call_worker, f->call_req, NULL, f->comp->name, ok, state,
                      &error, us, f->started_ms);
    } else {
        s_finish_root(self, f, ok, state, &error, us);
    }
    am2z_state_destroy(&state);
    am2z_error_destroy(&error);
    s_flow_free(self, f);
}

static void
s_succeed(am2z_broker_t *self, flow_t *f, am2z_state_t **state_p)
{
    s_complete(self, f, true, state_p, NULL);
}

/* ---------------------------------------------------------------------------
   Kinds
   ------------------------------------------------------------------------ */

/*  batch: the per-payload summary as "$batch". */
static void
s_batch_summary(am2z_broker_t *self, flow_t *f, am2z_state_t **state_p)
{
    am2z_bw_t *w = am2z_bw_new();
    if (!w)
        return;
    am2z_bw_map(w, 1);
    am2z_bw_str(w, "$batch");
    am2z_bw_array(w, (uint32_t)f->n);
    for (size_t i = 0; i < f->n; i++) {
        unit_t *u = &f->units[i];
        am2z_bw_map(w, 4);
        am2z_bw_str(w, "index");     am2z_bw_uint(w, i);
        am2z_bw_str(w, "sessionId"); am2z_bw_str(w, u->session[0] ? u->session : f->session);
        am2z_bw_str(w, "success");   am2z_bw_bool(w, true);
        am2z_bw_str(w, "version");   am2z_bw_uint(w, u->state ? am2z_state_version(u->state) : 0);
    }
    uint8_t *map = NULL;
    size_t size = 0;
    am2z_state_t *with = NULL;
    if (am2z_bw_take(w, &map, &size) == AM2Z_OK
        && am2z_state_overlay(*state_p, map, size, false, self->cfg.common.max_state_size,
                              &with) == AM2Z_OK) {
        am2z_state_destroy(state_p);
        *state_p = with;
    }
    free(map);
    am2z_bw_destroy(&w);
}

static void
s_after_combine(am2z_broker_t *self, flow_t *f, am2z_state_t **state_p)
{
    if (f->comp->kind == K_BATCH)
        s_batch_summary(self, f, state_p);
    s_succeed(self, f, state_p);
}

/*  The states to merge: every branch (parallel) or the caller's-session
    payloads (batch), in order. Caller frees the array (not the states). */
static const am2z_state_t **
s_mine(flow_t *f, size_t *n)
{
    const am2z_state_t **states = calloc(f->n ? f->n : 1, sizeof *states);
    *n = 0;
    for (size_t i = 0; states && i < f->n; i++)
        if (!f->units[i].session[0])
            states[(*n)++] = f->units[i].state;
    return states;
}

static void
s_combine(am2z_broker_t *self, flow_t *f)
{
    size_t n = 0;
    const am2z_state_t **states = s_mine(f, &n);
    if (!states) {
        am2z_error_t *e = s_nomem();
        s_fail(self, f, &e);
        return;
    }
    if (n == 0) {
        /* batch without payloads of its own: one version past the input */
        am2z_state_t *next = NULL;
        free(states);
        if (am2z_state_with_metadata(f->input, f->session, am2z_state_version(f->input) + 1,
                                     am2z_state_created_at(f->input), am2z_clock_wall_ms(),
                                     &next) != AM2Z_OK) {
            am2z_error_t *e = s_nomem();
            s_fail(self, f, &e);
            return;
        }
        s_after_combine(self, f, &next);
        return;
    }
    if (f->comp->merge) {
        am2z_state_t *with = NULL;
        int rc = am2z_state_with_branches(f->input, states, n, &with);
        free(states);
        if (rc != AM2Z_OK) {
            am2z_error_t *e = s_nomem();
            s_fail(self, f, &e);
            return;
        }
        f->phase = P_MERGE;
        s_touch(self, f);
        s_start_unit(self, f, S_AUX, f->comp->merge, with);
        am2z_state_destroy(&with);
        return;
    }
    am2z_state_t *merged = NULL;
    am2z_merge_conflict_t *conflicts = NULL;
    size_t nconflicts = 0;
    int rc = am2z_merge_states(f->input, states, n, f->comp->strict, am2z_clock_wall_ms(),
                               self->cfg.common.max_state_size, &merged, &conflicts,
                               &nconflicts);
    free(states);
    for (size_t i = 0; i < nconflicts; i++) {
        am2z_bw_t *w = am2z_bw_new();
        if (w) {
            am2z_bw_map(w, 3);
            am2z_bw_str(w, "path");   am2z_bw_str(w, conflicts[i].path);
            am2z_bw_str(w, "winner"); am2z_bw_uint(w, conflicts[i].winner);
            am2z_bw_str(w, "strict"); am2z_bw_bool(w, f->comp->strict);
        }
        s_event_bw(self, f, "merge:conflict", w);
    }
    if (rc == AM2Z_OK) {
        free(conflicts);
        s_after_combine(self, f, &merged);
        return;
    }
    am2z_error_t *e = rc == AM2Z_ECONFLICT
        ? am2z_error_new(AM2Z_CAT_CONFLICT, "MERGE_CONFLICT",
                         "%s '%s': %zu conflicting change%s (first at '%s')", s_kind(f),
                         f->comp->name, nconflicts, nconflicts == 1 ? "" : "s",
                         nconflicts ? conflicts[0].path : "?")
        : am2z_error_new(AM2Z_CAT_RESOURCE, "MERGE_FAILED", "%s '%s': merge failed: %s",
                         s_kind(f), f->comp->name, am2z_strerror(rc));
    free(conflicts);
    s_fail(self, f, &e);
}

/*  parallel / batch: decides once the outcome is known in declaration
    order — the first failing unit fails the run (once every unit before it
    succeeded); units after a failure are cancelled at once. */
static void
s_check_units(am2z_broker_t *self, flow_t *f)
{
    size_t first_failed = f->n;
    for (size_t i = 0; i < f->n; i++)
        if (f->units[i].status == U_FAILED) {
            first_failed = i;
            break;
        }
    for (size_t i = 0; i < f->n; i++) {
        int st = f->units[i].status;
        if (st == U_DONE)
            continue;
        if (st == U_FAILED) {
            if (f->comp->kind == K_PARALLEL)
                s_fail_in(self, f, f->units[i].error, "parallel", "branch", f->comp->steps[i],
                          (uint32_t)i + 1, (uint32_t)i, f->input);
            else
                s_fail_in(self, f, f->units[i].error, "batch", "payload", f->comp->processor,
                          (uint32_t)i, (uint32_t)i, f->input);
            return;
        }
        /* still running: later units cannot come first any more */
        for (size_t k = first_failed + 1; k < f->n; k++)
            if (f->units[k].status == U_RUNNING) {
                s_unit_cancel(self, &f->units[k]);
                f->units[k].status = U_PENDING;
            }
        return;
    }
    s_combine(self, f);
}

static void
s_route_target(am2z_broker_t *self, flow_t *f)
{
    const char *target = NULL;
    for (size_t i = 0; f->key[0] && i < f->comp->nroutes; i++)
        if (strcmp(f->comp->routes[i].key, f->key) == 0)
            target = f->comp->routes[i].target;
    if (!target)
        target = f->comp->fallback;
    if (!target) {
        char reason[AM2Z_NAME_MAX + 32];
        snprintf(reason, sizeof reason, "no route for %s", f->key[0] ? f->key : "(no key)");
        am2z_error_t *e = am2z_error_validation(
            f->comp->selector_path ? f->comp->selector_path : f->comp->selector, f->key, reason);
        s_fail(self, f, &e);
        return;
    }
    f->phase = P_TARGET;
    snprintf(f->target, sizeof f->target, "%s", target);
    s_touch(self, f);
    s_start_unit(self, f, S_AUX, f->target, f->input);
}

static void
s_route_begin(am2z_broker_t *self, flow_t *f)
{
    if (f->comp->selector_path) {
        int64_t n = 0;
        f->key[0] = '\0';
        if (am2z_state_get_strcpy(f->input, f->comp->selector_path, f->key, sizeof f->key)
            != AM2Z_OK) {
            f->key[0] = '\0';
            if (am2z_state_get_int(f->input, f->comp->selector_path, &n) == AM2Z_OK)
                snprintf(f->key, sizeof f->key, "%lld", (long long)n);
        }
        s_route_target(self, f);
        return;
    }
    proc_t *sel = am2zb_proc_get(self, f->comp->selector, false);
    if (!sel || !sel->registered || sel->comp) {
        am2z_error_t *e = am2z_error_configuration(f->comp->selector,
                                                   "selector processor not found");
        s_fail(self, f, &e);
        return;
    }
    f->phase = P_SELECT;
    s_start_unit(self, f, S_AUX, f->comp->selector, f->input);
}

/*  Starts (or, after a restore, resumes) the run. */
static void
s_run(am2z_broker_t *self, flow_t *f)
{
    am2z_bw_t *w = am2z_bw_new();
    if (w) {
        am2z_bw_map(w, 2);
        am2z_bw_str(w, "composite"); am2z_bw_str(w, f->comp->name);
        am2z_bw_str(w, "kind");      am2z_bw_str(w, s_kind(f));
    }
    s_event_bw(self, f, "workflow:started", w);
    s_touch(self, f);
    const char *cycle = zhashx_lookup(self->flows->cyclic, f->comp->name);
    if (cycle) {
        char reason[S_CYCLE_MAX + 64];
        snprintf(reason, sizeof reason, "composite refers back to itself: %s", cycle);
        am2z_error_t *e = am2z_error_configuration(f->comp->name, reason);
        s_fail(self, f, &e);
        return;
    }
    switch (f->comp->kind) {
    case K_CHAIN:
        if (!f->cur && !(f->cur = am2z_state_dup(f->input))) {
            am2z_error_t *e = s_nomem();
            s_fail(self, f, &e);
            return;
        }
        s_start_unit(self, f, (int)f->cursor, f->comp->steps[f->cursor], f->cur);
        return;
    case K_PARALLEL:
    case K_BATCH: {
        if (f->comp->kind == K_BATCH && f->bad_payloads) {
            am2z_error_t *e = am2z_error_validation(f->comp->payloads_path, NULL,
                                                    "batch payloads must be an array of maps");
            s_fail(self, f, &e);
            return;
        }
        if (f->phase == P_MERGE) {
            s_combine(self, f);
            return;
        }
        uint64_t id = f->id;
        bool pending = false;
        for (size_t i = 0; i < f->n && s_get(self, id); i++) {
            unit_t *u = &f->units[i];
            if (u->status == U_DONE)
                continue;
            pending = true;
            if (f->comp->kind == K_PARALLEL) {
                s_start_unit(self, f, (int)i, f->comp->steps[i], f->input);
                continue;
            }
            if (u->foreign[0]) {
                s_resume_foreign(self, f, i);
                continue;
            }
            char sid[AM2Z_SESSION_ID_MAX + 1];
            int src = am2z_map_get_str(f->payloads[i], f->psizes[i], "sessionId", sid, sizeof sid);
            if (src == AM2Z_OK && !am2z_session_id_valid(sid, strlen(sid))) {
                am2z_error_t *e = am2z_error_validation("sessionId", sid, "invalid session id");
                s_fail(self, f, &e);
                return;
            }
            if (src == AM2Z_OK && strcmp(sid, f->session) != 0) {
                s_start_foreign(self, f, i, sid);
                continue;
            }
            am2z_state_t *in = NULL;
            if (am2z_state_overlay(f->input, f->payloads[i], f->psizes[i], true,
                                   self->cfg.common.max_state_size, &in) != AM2Z_OK) {
                am2z_error_t *e = am2z_error_validation(f->comp->payloads_path, NULL,
                                                        "a batch payload is not a map");
                s_fail(self, f, &e);
                return;
            }
            s_start_unit(self, f, (int)i, f->comp->processor, in);
            am2z_state_destroy(&in);
        }
        if (!pending && s_get(self, id))
            s_combine(self, f);          /* every unit was done before a restart */
        return;
    }
    case K_ROUTE:
        if (f->phase == P_TARGET && f->target[0]) {
            s_start_unit(self, f, S_AUX, f->target, f->input);
            return;
        }
        s_route_begin(self, f);
        return;
    default: {
        am2z_error_t *e = am2z_error_configuration(f->comp->name, "unknown composite kind");
        s_fail(self, f, &e);
        return;
    }
    }
}

/*  Applies one outcome to its run. */
static void
s_apply(am2z_broker_t *self, flow_t *f, item_t *it)
{
    unit_t *u = s_unit(f, it->slot);
    u->job = NULL;
    u->child = 0;
    if (u->foreign[0]) {
        zhashx_delete(self->flows->foreign, u->foreign);
        u->foreign[0] = '\0';
    }
    s_touch(self, f);
    const am2z_comp_desc_t *c = f->comp;
    if (it->slot == S_AUX && f->phase == P_MERGE) {
        if (!it->ok) {
            s_fail_in(self, f, it->error, s_kind(f), "merge", c->merge, (uint32_t)f->n + 1,
                      (uint32_t)f->n, f->input);
            return;
        }
        am2z_state_t *clean = NULL;
        if (am2z_state_without_key(it->state, "$branches", &clean) != AM2Z_OK) {
            am2z_error_t *e = s_nomem();
            s_fail(self, f, &e);
            return;
        }
        s_after_combine(self, f, &clean);
        return;
    }
    switch (c->kind) {
    case K_CHAIN: {
        size_t i = f->cursor;
        if (!it->ok) {
            s_fail_in(self, f, it->error, "chain", "step", c->steps[i], (uint32_t)i + 1,
                      (uint32_t)i, f->cur);
            return;
        }
        s_step_event(self, f, c->steps[i], i + 1, c->nsteps);
        am2z_state_destroy(&f->cur);
        f->cur = it->state;
        it->state = NULL;
        u->status = U_DONE;
        f->cursor++;
        if (f->cursor == c->nsteps) {
            am2z_state_t *out = f->cur;
            f->cur = NULL;
            s_succeed(self, f, &out);
            return;
        }
        s_start_unit(self, f, (int)f->cursor, c->steps[f->cursor], f->cur);
        return;
    }
    case K_PARALLEL:
    case K_BATCH:
        if (it->ok) {
            u->status = U_DONE;
            am2z_state_destroy(&u->state);
            u->state = it->state;
            it->state = NULL;
            if (c->kind == K_PARALLEL)
                s_step_event(self, f, c->steps[it->slot], (size_t)it->slot + 1, f->n);
            else
                s_step_event(self, f, c->processor, (size_t)it->slot + 1, f->n);
        } else {
            u->status = U_FAILED;
            am2z_error_destroy(&u->error);
            u->error = it->error;
            it->error = NULL;
        }
        s_check_units(self, f);
        return;
    case K_ROUTE:
        if (f->phase == P_SELECT) {
            if (!it->ok) {
                s_fail_in(self, f, it->error, "route", "selector", c->selector, 0, 0, f->input);
                return;
            }
            snprintf(f->key, sizeof f->key, "%s", it->select);
            s_route_target(self, f);
            return;
        }
        if (!it->ok) {
            s_fail_in(self, f, it->error, "route", "step", f->target, 1, 0, f->input);
            return;
        }
        s_step_event(self, f, f->target, 1, 1);
        {
            am2z_state_t *out = it->state;
            it->state = NULL;
            s_succeed(self, f, &out);
        }
        return;
    }
}

/* ---------------------------------------------------------------------------
   Records: the whole tree of a root run, rewritten after each outcome
   ------------------------------------------------------------------------ */

static void s_write_run(am2z_broker_t *self, am2z_bw_t *w, const flow_t *f);

static void
s_write_state(am2z_bw_t *w, const am2z_state_t *st)
{
    if (st)
        am2z_bw_bin(w, am2z_state_data(st), am2z_state_size(st));
    else
        am2z_bw_nil(w);
}

static void
s_write_unit(am2z_broker_t *self, am2z_bw_t *w, const unit_t *u)
{
    am2z_bw_map(w, 5);
    am2z_bw_str(w, "st");      am2z_bw_uint(w, u->status == U_DONE ? 2 : 0);
    am2z_bw_str(w, "state");   s_write_state(w, u->status == U_DONE ? u->state : NULL);
    am2z_bw_str(w, "job");     am2z_bw_str(w, u->foreign[0] ? u->foreign : NULL);
    am2z_bw_str(w, "session"); am2z_bw_str(w, u->session[0] ? u->session : NULL);
    am2z_bw_str(w, "child");
    const flow_t *c = u->child ? s_get(self, u->child) : NULL;
    if (c)
        s_write_run(self, w, c);
    else
        am2z_bw_nil(w);
}

static void
s_write_run(am2z_broker_t *self, am2z_bw_t *w, const flow_t *f)
{
    am2z_bw_map(w, 13);
    am2z_bw_str(w, "job");     am2z_bw_str(w, f->parent ? NULL : f->root->id);
    am2z_bw_str(w, "comp");    am2z_bw_str(w, f->comp->name);
    am2z_bw_str(w, "session"); am2z_bw_str(w, f->session);
    am2z_bw_str(w, "started"); am2z_bw_uint(w, f->started_ms);
    am2z_bw_str(w, "expver");  am2z_bw_uint(w, f->expected_version);
    am2z_bw_str(w, "input");   s_write_state(w, f->input);
    am2z_bw_str(w, "phase");   am2z_bw_uint(w, f->phase == P_OVER ? P_UNITS : (uint64_t)f->phase);
    am2z_bw_str(w, "cursor");  am2z_bw_uint(w, f->cursor);
    am2z_bw_str(w, "cur");     s_write_state(w, f->cur);
    am2z_bw_str(w, "key");     am2z_bw_str(w, f->key[0] ? f->key : NULL);
    am2z_bw_str(w, "target");  am2z_bw_str(w, f->target[0] ? f->target : NULL);
    am2z_bw_str(w, "units");
    am2z_bw_array(w, (uint32_t)f->n);
    for (size_t i = 0; i < f->n; i++)
        s_write_unit(self, w, &f->units[i]);
    am2z_bw_str(w, "aux");
    s_write_unit(self, w, &f->aux);
}

/*  Writes every changed root record into the turn's batch. */
static void
s_flush_records(am2z_broker_t *self)
{
    am2zb_flows_t *fl = self->flows;
    if (!zhashx_size(fl->runs))
        return;                   /* (a zhashx walk scans every bucket) */
    for (flow_t *f = zhashx_first(fl->runs); f; f = zhashx_next(fl->runs)) {
        if (f->parent || !f->dirty || f->phase == P_OVER || f->call_req)
            continue;
        f->dirty = false;
        am2z_store_batch_t *batch = am2zb_batch(self);
        am2z_bw_t *w = am2z_bw_new();
        uint8_t *data = NULL;
        size_t size = 0;
        int rc = AM2Z_ENOMEM;
        if (w) {
            s_write_run(self, w, f);
            rc = am2z_bw_take(w, &data, &size);
        }
        if (rc == AM2Z_OK)
            rc = batch ? am2z_batch_put_record(batch, AM2Z_DB_RUNS, f->root->id,
                                               strlen(f->root->id), f->root->attempt, data, size,
                                               am2z_clock_wall_ms())
                       : AM2Z_EIO;
        if (rc != AM2Z_OK)
            AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT, "cannot store run record",
                     AM2Z_KS("job", f->root->id), AM2Z_KS("error", am2z_strerror(rc)));
        free(data);
        am2z_bw_destroy(&w);
    }
}

/*  Restores a run's progress from its record (before s_run). */
static void
s_restore(am2z_broker_t *self, flow_t *f, am2z_runrec_t *rec)
{
    (void)self;
    if (rec->nunits != f->n)
        return;                    /* definition changed: start over */
    f->phase = (int)rec->phase;
    f->cursor = rec->cursor < f->n ? rec->cursor : 0;
    if (f->comp->kind != K_CHAIN)
        f->cursor = 0;
    if (rec->cur)
        am2z_state_decode(rec->cur, rec->cur_size, &f->cur);
    if (f->comp->kind == K_CHAIN && !f->cur)
        f->cursor = 0;
    if (rec->key)
        snprintf(f->key, sizeof f->key, "%s", rec->key);
    if (rec->target)
        snprintf(f->target, sizeof f->target, "%s", rec->target);
    if (rec->started_ms)
        f->started_ms = rec->started_ms;
    for (size_t i = 0; i < f->n; i++) {
        am2z_rununit_t *ru = &rec->units[i];
        unit_t *u = &f->units[i];
        if (ru->status == 2 && ru->state
            && am2z_state_decode(ru->state, ru->state_size, &u->state) == AM2Z_OK)
            u->status = U_DONE;
        if (ru->session)
            snprintf(u->session, sizeof u->session, "%s", ru->session);
        if (ru->job && u->status != U_DONE && am2z_job_id_valid(ru->job, strlen(ru->job)))
            snprintf(u->foreign, sizeof u->foreign, "%s", ru->job);
        if (ru->child && u->status != U_DONE) {
            /* the nested progress, for when the unit starts again (moved) */
            u->resume = ru->child;
            ru->child = NULL;
        }
    }
    if (rec->aux.child) {
        f->aux.resume = rec->aux.child;
        rec->aux.child = NULL;
    }
    if ((f->phase == P_MERGE || f->phase == P_TARGET || f->phase == P_SELECT)
        && f->comp->kind == K_CHAIN)
        f->phase = P_UNITS;
}

/* ---------------------------------------------------------------------------
   The queue
   ------------------------------------------------------------------------ */

/*  Applies queued outcomes until none is left, then writes the records.
    Only in turn. Re-entrant calls (from am2zb_finish) just return. */
static void
s_pump(am2z_broker_t *self)
{
    am2zb_flows_t *fl = self->flows;
    if (fl->pumping)
        return;
    fl->pumping = true;
    item_t *it;
    while ((it = zlistx_first(fl->queue))) {
        zlistx_detach_cur(fl->queue);
        flow_t *f = s_get(self, it->flow);
        if (f && f->phase != P_OVER)
            s_apply(self, f, it);
        void *p = it;
        s_item_free(&p);
    }
    s_flush_records(self);
    fl->pumping = false;
}

/* ---------------------------------------------------------------------------
   Interface (am2z_broker_int.h)
   ------------------------------------------------------------------------ */

static bool
s_comp_ok(const am2z_comp_desc_t *c)
{
    switch (c->kind) {
    case K_CHAIN:
    case K_PARALLEL: return c->nsteps > 0;
    case K_ROUTE:    return (!c->selector_path != !c->selector) && (c->nroutes || c->fallback);
    case K_BATCH:    return c->processor && c->payloads_path;
    default:         return false;
    }
}

/*  Whether d may be registered: complete for its kind, and its name taken
    neither by a processor nor by an earlier composite (the first definition
    wins, silently). Logs what it refuses otherwise. */
static bool
s_acceptable(am2z_broker_t *self, const am2z_comp_desc_t *d)
{
    if (!d->name || !s_comp_ok(d)) {
        AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT, "incomplete composite ignored",
                 AM2Z_KS("composite", d->name));
        return false;
    }
    proc_t *proc = am2zb_proc_get(self, d->name, false);
    if (proc && proc->comp)
        return false;
    if (proc && proc->registered) {
        AM2Z_LOG(self->log, AM2Z_LOG_WARN, S_COMPONENT,
                 "composite ignored: a processor has that name", AM2Z_KS("composite", d->name));
        return false;
    }
    return true;
}

/*  Registers one composite in memory (s_acceptable first). Returns true
    when it is new. */
static bool
s_register(am2z_broker_t *self, const am2z_comp_desc_t *d)
{
    if (!s_acceptable(self, d))
        return false;
    proc_t *proc = am2zb_proc_get(self, d->name, true);
    if (!proc || proc->comp)
        return false;
    am2z_comp_desc_t *copy = calloc(1, sizeof *copy);
    if (!copy || am2z_comp_desc_copy(d, copy) != AM2Z_OK) {
        free(copy);
        return false;
    }
    proc->comp = copy;
    proc->registered = true;
    proc->timeout_ms = d->timeout_ms;
    free(proc->description);
    proc->description = d->description ? strdup(d->description) : NULL;
    return true;
}

/* ---------------------------------------------------------------------------
   Cycles: a composite whose units lead back to itself would nest runs
   without end. The graph's nodes are composites: the broker's, plus those
   a READY announces (`fresh`); its edges are the names a composite starts
   as units. A name that is no composite is a leaf.
   ------------------------------------------------------------------------ */

/*  The i-th name c starts as a unit (i from 0), NULL past the last: chain
    steps, parallel branches and merge, route targets and fallback, batch
    processor and merge. A route's selector is no edge: a composite
    selector is refused when the route runs. */
static const char *
s_comp_ref(const am2z_comp_desc_t *c, size_t i)
{
    const char *tail[2] = { NULL, NULL };
    switch (c->kind) {
    case K_CHAIN:
        return i < c->nsteps ? c->steps[i] : NULL;
    case K_PARALLEL:
        if (i < c->nsteps)
            return c->steps[i];
        i -= c->nsteps;
        tail[0] = c->merge;
        break;
    case K_ROUTE:
        if (i < c->nroutes)
            return c->routes[i].target;
        i -= c->nroutes;
        tail[0] = c->fallback;
        break;
    case K_BATCH:
        tail[0] = c->processor;
        tail[1] = c->merge;
        break;
    default:
        return NULL;
    }
    for (size_t k = 0; k < 2; k++)
        if (tail[k] && i-- == 0)
            return tail[k];
    return NULL;
}

/*  The composite called name: the broker's, else a fresh one (fresh may be
    NULL). NULL = a leaf. */
static const am2z_comp_desc_t *
s_graph_comp(am2z_broker_t *self, zhashx_t *fresh, const char *name)
{
    proc_t *proc = am2zb_proc_get(self, name, false);
    if (proc && proc->comp)
        return proc->comp;
    if (proc && proc->registered)
        return NULL;
    return fresh ? zhashx_lookup(fresh, name) : NULL;
}

/*  Whether start's units lead back to start; the path ("a -> b -> a") goes
    to buf then. A depth-first walk with its own stack (the graph may be
    deep), each composite entered once. Returns AM2Z_OK (found or not in
    *found) or AM2Z_ENOMEM. */
static int
s_find_cycle(am2z_broker_t *self, zhashx_t *fresh, const am2z_comp_desc_t *start,
             bool *found, char *buf, size_t size)
{
    typedef struct {
        const am2z_comp_desc_t *c;
        size_t next;              /* its next edge to follow */
    } frame_t;
    *found = false;
    size_t cap = 16, depth = 0;
    frame_t *stack = malloc(cap * sizeof *stack);
    zhashx_t *seen = zhashx_new();         /* names entered (keys copied) */
    if (!stack || !seen) {
        free(stack);
        zhashx_destroy(&seen);
        return AM2Z_ENOMEM;
    }
    int rc = AM2Z_OK;
    stack[depth++] = (frame_t){ start, 0 };
    zhashx_insert(seen, start->name, (void *)1);
    while (depth && !*found) {
        frame_t *top = &stack[depth - 1];
        const char *name = s_comp_ref(top->c, top->next++);
        if (!name) {
            depth--;
            continue;
        }
        if (strcmp(name, start->name) == 0) {
            *found = true;
            break;
        }
        const am2z_comp_desc_t *c = s_graph_comp(self, fresh, name);
        if (!c || zhashx_lookup(seen, name))
            continue;
        if (zhashx_insert(seen, name, (void *)1) != 0) {
            rc = AM2Z_ENOMEM;
            break;
        }
        if (depth == cap) {
            frame_t *more = realloc(stack, 2 * cap * sizeof *stack);
            if (!more) {
                rc = AM2Z_ENOMEM;
                break;
            }
            stack = more;
            cap *= 2;
        }
        stack[depth++] = (frame_t){ c, 0 };
    }
    if (*found) {
        /* the stack is the path from start; the edge back closes it */
        size_t len = 0;
        buf[0] = '\0';
        for (size_t i = 0; i <= depth && len < size; i++) {
            const char *n = i < depth ? stack[i].c->name : start->name;
            int w = snprintf(buf + len, size - len, "%s%s", i ? " -> " : "", n);
            len += w > 0 ? (size_t)w : 0;
        }
        if (len >= size && size > 4)
            snprintf(buf + size - 4, 4, "...");
    }
    free(stack);
    zhashx_destroy(&seen);
    return rc;
}

static int
s_collect_comp(const void *key, size_t key_size, const void *value, size_t value_size,
               void *arg)
{
    (void)value;
    (void)value_size;
    size_t plen = strlen(S_COMP_PREFIX);
    if (key_size > plen && key_size < plen + AM2Z_NAME_MAX + 1
        && memcmp(key, S_COMP_PREFIX, plen) == 0) {
        char *k = strndup(key, key_size);
        if (k)
            zlistx_add_end(arg, k);
    }
    return 0;
}

int
am2zb_flow_new(am2z_broker_t *self)
{
    am2zb_flows_t *fl = calloc(1, sizeof *fl);
    if (!fl)
        return AM2Z_ENOMEM;
    self->flows = fl;
    fl->runs = zhashx_new();
    fl->ready = zlistx_new();
    fl->queue = zlistx_new();
    fl->foreign = zhashx_new();
    fl->cyclic = zhashx_new();
    if (!fl->runs || !fl->ready || !fl->queue || !fl->foreign || !fl->cyclic)
        return AM2Z_ENOMEM;
    zlistx_set_destructor(fl->queue, s_item_free);
    zhashx_set_destructor(fl->foreign, s_free_item);
    zhashx_set_destructor(fl->cyclic, s_free_item);
    /* composites stored by earlier runs: known before workers come back */
    zlistx_t *keys = zlistx_new();
    if (!keys)
        return AM2Z_ENOMEM;
    zlistx_set_destructor(keys, s_free_item);
    am2z_store_each(self->store, AM2Z_DB_RUNS, S_COMP_PREFIX, strlen(S_COMP_PREFIX),
                    s_collect_comp, keys);
    size_t n = 0;
    for (char *k = zlistx_first(keys); k; k = zlistx_next(keys)) {
        am2z_record_t rec;
        memset(&rec, 0, sizeof rec);
        am2z_comp_desc_t d;
        memset(&d, 0, sizeof d);
        int rc = am2z_store_get_record(self->store, AM2Z_DB_RUNS, k, strlen(k), &rec);
        if (rc == AM2Z_OK)
            rc = am2z_comp_desc_decode(rec.data, rec.size, &d, NULL, 0);
        am2z_record_clear(&rec);
        if (rc == AM2Z_OK && s_register(self, &d))
            n++;
        else if (rc != AM2Z_OK)
            AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT, "unreadable composite skipped",
                     AM2Z_KS("key", k), AM2Z_KS("error", am2z_strerror(rc)));
        am2z_comp_desc_clear(&d);
    }
    zlistx_destroy(&keys);
    if (n)
        AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT, "composites reloaded",
                 AM2Z_KU("composites", n));
    /* definitions stored before cycles were refused stay registered (their
       accepted jobs must end), marked: their runs fail at once */
    for (size_t i = 0; n && i < self->proc_n; i++) {
        const am2z_comp_desc_t *c = self->proc_v[i]->comp;
        char cycle[S_CYCLE_MAX];
        bool found = false;
        if (!c || s_find_cycle(self, NULL, c, &found, cycle, sizeof cycle) != AM2Z_OK || !found)
            continue;
        char *text = strdup(cycle);
        if (!text || zhashx_insert(fl->cyclic, c->name, text) != 0) {
            free(text);
            return AM2Z_ENOMEM;
        }
        AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT,
                 "stored composite refers back to itself: its runs will fail",
                 AM2Z_KS("composite", c->name), AM2Z_KS("cycle", cycle));
    }
    return AM2Z_OK;
}

void
am2zb_flow_destroy(am2z_broker_t *self)
{
    am2zb_flows_t *fl = self->flows;
    if (!fl)
        return;
    /* jobs belong to the broker: forget them, free the runs */
    for (job_t *job = zlistx_first(fl->ready); job; job = zlistx_next(fl->ready))
        job->ready_handle = NULL;
    zlistx_destroy(&fl->ready);
    if (fl->runs) {
        zlistx_t *all = zhashx_values(fl->runs);
        for (flow_t *f = all ? zlistx_first(all) : NULL; f; f = zlistx_next(all)) {
            for (size_t i = 0; i < f->n; i++) {
                f->units[i].job = NULL;
                f->units[i].child = 0;
                f->units[i].foreign[0] = '\0';
            }
            f->aux.job = NULL;
            f->aux.child = 0;
            f->aux.foreign[0] = '\0';
        }
        for (flow_t *f = all ? zlistx_first(all) : NULL; f; f = zlistx_next(all))
            s_flow_free(self, f);
        zlistx_destroy(&all);
    }
    zhashx_destroy(&fl->runs);
    zlistx_destroy(&fl->queue);
    zhashx_destroy(&fl->foreign);
    zhashx_destroy(&fl->cyclic);
    free(fl);
    self->flows = NULL;
}

/*  Stores a registered composite in the turn's batch (known after a
    restart before any READY). */
static void
s_store_comp(am2z_broker_t *self, const am2z_comp_desc_t *d)
{
    uint8_t *data = NULL;
    size_t size = 0;
    am2z_store_batch_t *batch = am2zb_batch(self);
    char key[sizeof S_COMP_PREFIX + AM2Z_NAME_MAX + 1];
    snprintf(key, sizeof key, S_COMP_PREFIX "%s", d->name);
    int rc = am2z_comp_desc_encode(d, &data, &size);
    if (rc == AM2Z_OK)
        rc = batch ? am2z_batch_put_record(batch, AM2Z_DB_RUNS, key, strlen(key), 1, data, size,
                                           am2z_clock_wall_ms())
                   : AM2Z_EIO;
    free(data);
    AM2Z_LOG(self->log, rc == AM2Z_OK ? AM2Z_LOG_DEBUG : AM2Z_LOG_ERROR, S_COMPONENT,
             rc == AM2Z_OK ? "composite registered" : "cannot store composite",
             AM2Z_KS("composite", d->name), AM2Z_KS("error", am2z_strerror(rc)));
}

/*  Registers what a READY announces. The announced composites are checked
    together with the broker's: every one that leads back to itself (alone,
    with others of the same READY, or through composites other workers
    announced earlier) is refused and logged with its cycle; the others are
    registered. Since the broker's composites have no cycle (bar those
    marked at reload, which never run), any new cycle runs through an
    announced one, and refusing all of those on a cycle leaves none.
    Returns how many it registered now (known ones are not counted). */
size_t
am2zb_flow_register(am2z_broker_t *self, const am2z_comp_desc_t *comps, size_t n)
{
    zhashx_t *fresh = zhashx_new();        /* name -> candidate (borrowed) */
    zhashx_t *refused = zhashx_new();      /* names on a cycle */
    if (!fresh || !refused) {
        AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT,
                 "composites ignored: out of memory checking them", AM2Z_KU("composites", n));
        zhashx_destroy(&fresh);
        zhashx_destroy(&refused);
        return 0;
    }
    size_t added = 0;
    for (size_t i = 0; i < n; i++)
        if (s_acceptable(self, &comps[i]) && !zhashx_lookup(fresh, comps[i].name))
            zhashx_insert(fresh, comps[i].name, (void *)&comps[i]);
    for (size_t i = 0; i < n; i++) {
        const am2z_comp_desc_t *d = &comps[i];
        if (!d->name || zhashx_lookup(fresh, d->name) != d)
            continue;
        char cycle[S_CYCLE_MAX];
        bool found = false;
        int rc = s_find_cycle(self, fresh, d, &found, cycle, sizeof cycle);
        if (rc != AM2Z_OK || found) {
            AM2Z_LOG(self->log, AM2Z_LOG_ERROR, S_COMPONENT,
                     rc == AM2Z_OK ? "composite refused: it refers back to itself"
                                   : "composite refused: out of memory checking it",
                     AM2Z_KS("composite", d->name), AM2Z_KS("cycle", found ? cycle : NULL));
            zhashx_insert(refused, d->name, (void *)1);
        }
    }
    for (size_t i = 0; i < n; i++) {
        const am2z_comp_desc_t *d = &comps[i];
        if (!d->name || zhashx_lookup(fresh, d->name) != d || zhashx_lookup(refused, d->name))
            continue;
        if (s_register(self, d)) {
            s_store_comp(self, d);
            added++;
        }
    }
    zhashx_destroy(&fresh);
    zhashx_destroy(&refused);
    return added;
}

/*  A composite job at its lane's head becomes a run (or resumes one). */
static void
s_start_root(am2z_broker_t *self, session_t *session, job_t *job)
{
    am2zb_lane_remove(session, job);
    session->active = job;
    job->status = JOB_ACTIVE;
    job->worker = NULL;
    job->attempt++;
    am2zb_put_job_record(self, job);       /* the attempt counts */

    am2z_runrec_t *rec = NULL;
    am2z_record_t stored;
    memset(&stored, 0, sizeof stored);
    if (am2z_store_get_record(self->store, AM2Z_DB_RUNS, job->id, strlen(job->id), &stored)
        == AM2Z_OK) {
        if (am2z_runrec_decode(stored.data, stored.size, &rec) != AM2Z_OK
            || strcmp(rec->comp, job->proc->name) != 0)
            am2z_runrec_destroy(&rec);
    }
    am2z_record_clear(&stored);
    am2z_state_t *input = NULL;
    int rc;
    if (rec) {
        rc = am2z_state_decode(rec->input, rec->input_size, &input);
        job->expected_version = rec->expected_version;
    } else {
        rc = am2zb_resolve_input(self, job, &input);
    }
    flow_t *f = rc == AM2Z_OK
        ? s_flow_new(self, job->proc->comp, job->session_id, &input, NULL, 0, job) : NULL;
    if (!f) {
        am2z_runrec_destroy(&rec);
        am2z_error_t *e = rc == AM2Z_OK ? s_nomem() : am2zb_error_from_rc(rc, "reading session state");
        am2zb_finish(self, job, false, NULL, 0, &e, 0, 0, NULL);
        am2z_error_destroy(&e);
        return;
    }
    f->expected_version = job->expected_version;
    if (rec) {
        f->resumed = true;
        s_restore(self, f, rec);
        if (f->deadline_us && job->timeout_ms) {
            uint64_t now = am2z_clock_wall_ms();
            uint64_t end = f->started_ms + job->timeout_ms;
            f->deadline_us = am2z_clock_mono_us() + (end > now ? (end - now) * 1000 : 0);
        }
        AM2Z_LOG(self->log, AM2Z_LOG_INFO, S_COMPONENT, "workflow run resumed",
                 AM2Z_KS("job", job->id), AM2Z_KS("composite", f->comp->name),
                 AM2Z_KU("cursor", f->cursor));
    }
    am2z_runrec_destroy(&rec);
    s_run(self, f);
}

/*  Some processor is a composite (only then can a lane head start a run). */
static bool
s_any_composite(const am2z_broker_t *self)
{
    for (size_t i = 0; i < self->proc_n; i++)
        if (self->proc_v[i]->comp)
            return true;
    return false;
}

void
am2zb_flow_tick(am2z_broker_t *self)
{
    am2zb_flows_t *fl = self->flows;
    uint64_t now = am2z_clock_wall_ms();
    zlistx_t *starts = self->draining || !s_any_composite(self) ? NULL : zlistx_new();
    for (size_t i = 0; starts && i < self->proc_n; i++) {
        proc_t *proc = self->proc_v[i];
        if (!proc->comp)
            continue;
        session_t *session;
        while ((session = am2zb_ring_first(proc)) != NULL) {
            am2zb_session_unready(self, session);
            job_t *job = zlistx_first(session->lane);
            if (session->active || !job)
                continue;
            if (job->proc != proc || job->not_before_ms > now || !job->accepted) {
                am2zb_session_kick(self, session, now);
                if (session->ring_proc == proc)
                    break;
                continue;
            }
            zlistx_add_end(starts, session);
        }
    }
    /* started after the walk: a run may create procs and enqueue elsewhere */
    for (session_t *s = starts ? zlistx_first(starts) : NULL; s; s = zlistx_next(starts)) {
        job_t *job = zlistx_first(s->lane);
        if (!s->active && job && job->proc->comp)
            s_start_root(self, s, job);
    }
    zlistx_destroy(&starts);
    /* deadlines: a composite's timeout bounds its whole run */
    uint64_t mono = am2z_clock_mono_us();
    zlistx_t *late = zhashx_size(fl->runs) ? zlistx_new() : NULL;
    for (flow_t *f = late ? zhashx_first(fl->runs) : NULL; f; f = zhashx_next(fl->runs))
        if (f->deadline_us && mono >= f->deadline_us && f->phase != P_OVER)
            zlistx_add_end(late, (void *)(uintptr_t)f->id);
    for (void *p = late ? zlistx_first(late) : NULL; p; p = zlistx_next(late)) {
        flow_t *f = s_get(self, (uint64_t)(uintptr_t)p);
        if (!f || f->phase == P_OVER)
            continue;
        uint64_t timeout = !f->parent && f->root ? f->root->timeout_ms : f->comp->timeout_ms;
        am2z_error_t *e = am2z_error_timeout(f->comp->name, timeout);
        s_fail(self, f, &e);
    }
    zlistx_destroy(&late);
    s_pump(self);
}

uint64_t
am2zb_flow_next_ms(am2z_broker_t *self)
{
    am2zb_flows_t *fl = self->flows;
    if (!fl)
        return UINT64_MAX;
    if (zlistx_size(fl->queue))
        return 0;
    /* a composite job at its lane's head (accepted after the last commit)
       starts in the next tick: turn again at once, not after a poll */
    for (size_t i = 0; !self->draining && i < self->proc_n; i++)
        if (self->proc_v[i]->comp && am2zb_ring_first(self->proc_v[i]))
            return 0;              /* (a draining broker starts no run) */
    if (!zhashx_size(fl->runs))
        return UINT64_MAX;
    uint64_t next = UINT64_MAX, mono = am2z_clock_mono_us();
    for (flow_t *f = zhashx_first(fl->runs); f; f = zhashx_next(fl->runs)) {
        if (f->dirty)
            return 0;
        if (f->deadline_us && f->phase != P_OVER) {
            uint64_t left = f->deadline_us > mono ? (f->deadline_us - mono + 999) / 1000 : 0;
            if (left < next)
                next = left;
        }
    }
    return next;
}

/*  A call's child goes to any worker serving the processor, credit or
    not (round robin): the worker runs it on an extra actor. */
static worker_t *
s_pick_any(am2z_broker_t *self, proc_t *proc)
{
    size_t n = self->nworkers;
    for (size_t k = 0; k < n; k++) {
        size_t idx = (proc->rr + k) % n;
        if (am2zb_worker_proc(self->workers[idx], proc)) {
            proc->rr = (idx + 1) % n;
            return self->workers[idx];
        }
    }
    return NULL;
}

/*  RESULT {req} to the worker that made a CALL (dropped when it is gone).
    state borrowed, *error_p taken. */
static void
s_call_result(am2z_broker_t *self, const char *worker_id, uint64_t req, const job_t *job,
              const char *proc, bool ok, const am2z_state_t *state, am2z_error_t **error_p,
              uint64_t exec_us, uint64_t started_ms)
{
    worker_t *worker = NULL;
    for (size_t i = 0; i < self->nworkers; i++)
        if (strcmp(self->workers[i]->id, worker_id) == 0)
            worker = self->workers[i];
    am2z_msg_t r;
    am2z_msg_init(&r, AM2Z_CMD_RESULT);
    char id[AM2Z_ID_LEN + 1];
    if (job)
        snprintf(id, sizeof id, "%s", job->id);
    else if (am2z_id_new(id) != AM2Z_OK)
        snprintf(id, sizeof id, "call");
    r.req = req;
    r.job = id;
    r.processor = (char *)proc;
    r.session = job ? job->session_id : NULL;
    r.success = ok;
    r.attempt = job ? job->attempt : 0;
    r.exec_us = exec_us;
    r.started_at_ms = started_ms;
    r.state = ok && state ? (uint8_t *)am2z_state_data(state) : NULL;
    r.state_size = ok && state ? am2z_state_size(state) : 0;
    r.worker = (char *)worker_id;
    r.error = ok ? NULL : (*error_p ? *error_p : s_nomem());
    if (worker)
        am2zb_send_worker(self, worker, &r);
    if (!ok && !*error_p)
        am2z_error_destroy(&r.error);
    am2z_error_destroy(error_p);
    /* borrowed pointers: nothing else to clear */
}

void
am2zb_flow_call(am2z_broker_t *self, worker_t *worker, am2z_msg_t *msg)
{
    job_t *parent = am2z_idmap_lookup(self->jobs, msg->job);
    am2z_error_t *e = NULL;
    am2z_state_t *input = NULL;
    proc_t *proc = am2zb_proc_get(self, msg->processor, false);
    if (!parent || parent->worker != worker || parent->status != JOB_ACTIVE || parent->stopped)
        e = am2z_error_new(AM2Z_CAT_NOT_FOUND, "NOT_FOUND",
                           "call from job %s: not a running job of this worker", msg->job);
    else if (msg->call_depth > self->cfg.max_call_depth)
        e = am2z_error_call_depth(msg->call_depth, (uint32_t)self->cfg.max_call_depth,
                                  msg->processor);
    else if (!proc || !proc->registered)
        e = s_not_found(self, msg->processor);
    else if (!msg->state || am2z_state_decode(msg->state, msg->state_size, &input) != AM2Z_OK
             || strcmp(am2z_state_session_id(input), parent->session_id) != 0)
        e = am2z_error_validation("state", NULL, "a call needs a state of the caller's session");
    if (e) {
        am2z_state_destroy(&input);
        s_call_result(self, worker->id, msg->req, NULL, msg->processor, false, NULL, &e, 0, 0);
        return;
    }
    if (proc->comp) {
        /* a composite: a run of its own, answered instead of written */
        flow_t *f = s_flow_new(self, proc->comp, parent->session_id, &input, NULL, 0, NULL);
        if (!f) {
            e = s_nomem();
            s_call_result(self, worker->id, msg->req, NULL, msg->processor, false, NULL, &e,
                          0, 0);
            return;
        }
        f->call_req = msg->req;
        f->depth = msg->call_depth;
        snprintf(f->call_worker, sizeof f->call_worker, "%s", worker->id);
        s_run(self, f);
        s_pump(self);
        return;
    }
    job_t *job = am2zb_job_new();
    if (!job || am2z_id_new(job->id) != AM2Z_OK || !(job->session_id = strdup(parent->session_id))
        || !(job->state = malloc(msg->state_size)) || !(job->call_worker = strdup(worker->id))) {
        am2zb_job_destroy(&job);
        am2z_state_destroy(&input);
        e = s_nomem();
        s_call_result(self, worker->id, msg->req, NULL, msg->processor, false, NULL, &e, 0, 0);
        return;
    }
    memcpy(job->state, msg->state, msg->state_size);
    job->state_size = msg->state_size;
    job->proc = proc;
    job->prio = proc->priority;
    job->timeout_ms = proc->timeout_ms;
    job->depth = msg->call_depth;
    job->created_ms = am2z_clock_wall_ms();
    job->accepted = true;
    job->status = JOB_WAITING;
    job->input_version = am2z_state_version(input);
    job->call = true;
    job->call_req = msg->req;
    am2zb_jpeer_copy(&job->client, &parent->client);   /* its events reach the caller's client */
    am2z_state_destroy(&input);
    am2zb_job_track(self, job);
    job->ready_handle = zlistx_add_start(self->flows->ready, job);   /* first */
}

void
am2zb_flow_dispatch(am2z_broker_t *self)
{
    am2zb_flows_t *fl = self->flows;
    if (!fl || !self->nworkers || !zlistx_size(fl->ready))
        return;
    uint64_t now = am2z_clock_wall_ms();
    zlistx_t *go = zlistx_new();
    if (!go)
        return;
    for (job_t *job = zlistx_first(fl->ready); job; job = zlistx_next(fl->ready))
        if (job->not_before_ms <= now)
            zlistx_add_end(go, job);
    for (job_t *job = zlistx_first(go); job; job = zlistx_next(go)) {
        /* the processor's rate limit holds steps and calls; its cap holds
           steps only (a waiting caller must never hold its child's slot) */
        if (!am2zb_sched_admit(job->proc, now, job->call))
            continue;
        worker_t *worker = job->call ? s_pick_any(self, job->proc)
                                     : am2zb_pick_worker(self, job->proc);
        if (!worker)
            continue;
        zlistx_delete(fl->ready, job->ready_handle);
        job->ready_handle = NULL;
        wproc_t *wp = am2zb_worker_proc(worker, job->proc);
        if (!job->call)
            wp->credit--;      /* a call's child runs beyond credit (extra actor) */
        am2zb_lease_begin(self, job, worker, now);
        am2z_msg_t msg;
        am2z_msg_init(&msg, AM2Z_CMD_JOB);
        msg.job = job->id;
        msg.attempt = job->attempt;
        msg.processor = job->proc->name;
        msg.session = job->session_id;
        msg.state = job->state;
        msg.state_size = job->state_size;
        msg.timeout_ms = job->timeout_ms;
        msg.call_depth = job->depth;
        msg.priority = job->prio;
        msg.call = job->call;
        am2zb_send_worker(self, worker, &msg);
        am2z_bw_t *w = am2z_bw_new();
        uint8_t *data = NULL;
        size_t size = 0;
        if (w) {
            am2z_bw_map(w, 2);
            am2z_bw_str(w, "worker");
            am2z_bw_str(w, worker->id);
            am2z_bw_str(w, "dispatched");           /* the lease's wall clock, ms */
            am2z_bw_uint(w, job->dispatched_ms);
            if (am2z_bw_take(w, &data, &size) == AM2Z_OK)
                am2zb_job_event(self, job, "processor:active", data, size);
        }
        free(data);
        am2z_bw_destroy(&w);
    }
    zlistx_destroy(&go);
}

/*  The step job is done with: out of the tables, freed. */
static void
s_step_drop(am2z_broker_t *self, job_t *job)
{
    if (job->ready_handle) {
        zlistx_delete(self->flows->ready, job->ready_handle);
        job->ready_handle = NULL;
    }
    am2zb_job_untrack(self, job);
    am2zb_job_destroy(&job);
}

void
am2zb_flow_done(am2z_broker_t *self, job_t *job, worker_t *worker, am2z_msg_t *msg)
{
    (void)worker;
    am2z_state_t *st = NULL;
    am2z_error_t *error = NULL;
    if (!msg->state || am2z_state_decode(msg->state, msg->state_size, &st) != AM2Z_OK)
        error = am2z_error_new(AM2Z_CAT_PROTOCOL, "INVALID_STATE",
                               "DONE.state is missing or not a valid state");
    else if (strcmp(am2z_state_session_id(st), job->session_id) != 0)
        error = am2z_error_new(AM2Z_CAT_PROTOCOL, "INVALID_STATE",
                               "DONE.state names session '%s', expected '%s'",
                               am2z_state_session_id(st), job->session_id);
    else if (am2z_state_version(st) != job->input_version + 1)
        error = am2z_error_new(AM2Z_CAT_PROTOCOL, "INVALID_STATE",
                               "DONE.state has version %" PRIu64 ", expected %" PRIu64,
                               am2z_state_version(st), job->input_version + 1);
    if (error) {
        am2z_state_destroy(&st);
        am2zb_flow_step_failed(self, job, &error);
        return;
    }
    am2z_bw_t *w = am2z_bw_new();
    uint8_t *data = NULL;
    size_t size = 0;
    if (w) {
        am2z_bw_map(w, 2);
        am2z_bw_str(w, "executionTime"); am2z_bw_uint(w, msg->exec_us);
        am2z_bw_str(w, "version");       am2z_bw_uint(w, am2z_state_version(st));
        if (am2z_bw_take(w, &data, &size) == AM2Z_OK)
            am2zb_job_event(self, job, "processor:job:completed", data, size);
    }
    free(data);
    am2z_bw_destroy(&w);
    if (job->call) {
        s_call_result(self, job->call_worker, job->call_req, job, job->proc->name, true, st,
                      &error, msg->exec_us, msg->started_at_ms);
        am2z_state_destroy(&st);
        s_step_drop(self, job);
        return;
    }
    s_push(self, job->flow_id, job->flow_slot, true, &st, NULL, msg->select);
    s_step_drop(self, job);
    s_pump(self);
}

void
am2zb_flow_step_failed(am2z_broker_t *self, job_t *job, am2z_error_t **error_p)
{
    if (job->call) {
        s_call_result(self, job->call_worker, job->call_req, job, job->proc->name, false, NULL,
                      error_p, 0, 0);
        s_step_drop(self, job);
        return;
    }
    s_push(self, job->flow_id, job->flow_slot, false, NULL, error_p, NULL);
    s_step_drop(self, job);
    s_pump(self);
}

void
am2zb_flow_requeue(am2z_broker_t *self, job_t *job, uint64_t not_before_ms)
{
    am2zb_lease_end(job);
    job->status = JOB_WAITING;
    job->worker = NULL;
    job->not_before_ms = not_before_ms;
    if (!job->ready_handle)
        job->ready_handle = zlistx_add_end(self->flows->ready, job);
}

void
am2zb_flow_job_finished(am2z_broker_t *self, const job_t *job, bool ok,
                        const uint8_t *state, size_t state_size, const am2z_error_t *error)
{
    am2zb_flows_t *fl = self->flows;
    /* (most jobs are not a flow's: no lookup while no flow waits on any) */
    ref_t *ref = fl && zhashx_size(fl->foreign) ? zhashx_lookup(fl->foreign, job->id) : NULL;
    if (!ref)
        return;
    uint64_t flow = ref->flow;
    int slot = ref->slot;
    zhashx_delete(fl->foreign, job->id);
    flow_t *f = s_get(self, flow);
    if (f && slot >= 0 && (size_t)slot < f->n)
        f->units[slot].foreign[0] = '\0';
    am2z_state_t *st = NULL;
    if (ok && (!state || am2z_state_decode(state, state_size, &st) != AM2Z_OK))
        ok = false;
    am2z_error_t *e = ok ? NULL : (error ? am2z_error_dup(error) : s_nomem());
    s_push(self, flow, slot, ok, &st, &e, NULL);
    s_pump(self);
}

void
am2zb_flow_stop(am2z_broker_t *self, job_t *root)
{
    am2zb_flows_t *fl = self->flows;
    flow_t *found = NULL;
    for (flow_t *f = zhashx_first(fl->runs); f; f = zhashx_next(fl->runs))
        if (!f->parent && f->root == root)
            found = f;
    if (found)
        s_flow_free(self, found);
    am2z_store_batch_t *batch = am2zb_batch(self);
    if (batch)
        am2z_batch_del(batch, AM2Z_DB_RUNS, root->id, strlen(root->id));
    am2zb_job_untrack(self, root);
    am2zb_job_destroy(&root);
}
