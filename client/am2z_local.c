/*  am2z_local.c — see am2z_local.h.

    Everything runs on the caller's thread: a processor is invoked through
    the worker's am2zw_invoke with a host whose events go to the callback
    and whose nested calls recurse into s_exec. Composites follow
    am2z_compose.h. States are immutable values, so passing them between
    steps is copying pointers to fresh results.

    Lifecycle events carry small msgpack maps; they are built as JSON and
    converted (am2z_json), so this file stays free of msgpack.
*/
#include "am2z_local.h"

#include "am2z_json.h"
#include "am2z_merge.h"
#include "am2z_retry.h"
#include "am2z_worker_priv.h"

#include <czmq.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    am2z_processor_def_t def;     /* name/description point at the copies */
    char *name;
    char *description;
} s_proc_t;

struct am2z_local_t {
    zhashx_t *procs;              /* name -> s_proc_t*, owned */
    zhashx_t *comps;              /* name -> am2z_composite_def_t*, owned */
    zhashx_t *sessions;           /* id -> am2z_state_t*, owned */
    am2z_event_fn *on_event;
    void *on_event_arg;
    uint32_t max_depth;
    uint64_t rng;                 /* xorshift state for backoff jitter */
    uint64_t id_next;             /* splitmix64 counter for job ids */
    uint8_t id_salt[2];           /* random; the last id bytes */
};

/*  One job being run: what its host callbacks need. */
typedef struct {
    am2z_local_t *rt;
    char job_id[AM2Z_ID_LEN + 1];
    const char *session;
    const char *processor;
    uint32_t depth;
    uint64_t seq;                 /* events sent for this job */
} s_job_t;

static int s_exec(am2z_local_t *rt, const char *name, const am2z_state_t *input,
                  const char *session, uint32_t depth, am2z_result_t **out);

/* ---------------------------------------------------------------------------
   Lifecycle
   ------------------------------------------------------------------------ */

static void
s_proc_free(void **item)
{
    s_proc_t *p = *item;
    if (p) {
        free(p->name);
        free(p->description);
        free(p);
    }
    *item = NULL;
}

static void
s_comp_free(void **item)
{
    am2zw_composite_free((am2z_composite_def_t **)item);
}

static void
s_state_free(void **item)
{
    am2z_state_destroy((am2z_state_t **)item);
}

am2z_local_t *
am2z_local_new(void)
{
    am2z_local_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->procs = zhashx_new();
    self->comps = zhashx_new();
    self->sessions = zhashx_new();
    if (!self->procs || !self->comps || !self->sessions) {
        am2z_local_destroy(&self);
        return NULL;
    }
    zhashx_set_destructor(self->procs, s_proc_free);
    zhashx_set_destructor(self->comps, s_comp_free);
    zhashx_set_destructor(self->sessions, s_state_free);
    self->max_depth = AM2Z_CALL_DEPTH_MAX_DEFAULT;
    self->rng = am2z_clock_mono_us() | 1;
    uint8_t seed[sizeof self->id_next + sizeof self->id_salt];
    if (am2z_random_bytes(seed, sizeof seed) != AM2Z_OK) {
        am2z_local_destroy(&self);
        return NULL;
    }
    memcpy(&self->id_next, seed, sizeof self->id_next);
    memcpy(self->id_salt, seed + sizeof self->id_next, sizeof self->id_salt);
    return self;
}

void
am2z_local_destroy(am2z_local_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_local_t *self = *self_p;
    zhashx_destroy(&self->procs);
    zhashx_destroy(&self->comps);
    zhashx_destroy(&self->sessions);
    free(self);
    *self_p = NULL;
}

static bool
s_taken(am2z_local_t *self, const char *name)
{
    return zhashx_lookup(self->procs, name) || zhashx_lookup(self->comps, name);
}

int
am2z_local_register(am2z_local_t *self, const am2z_processor_def_t *def)
{
    if (!self || !def || !def->fn || !def->name
        || !am2z_name_valid(def->name, strlen(def->name)) || s_taken(self, def->name))
        return AM2Z_EINVAL;
    s_proc_t *p = calloc(1, sizeof *p);
    if (!p)
        return AM2Z_ENOMEM;
    p->def = *def;
    p->name = strdup(def->name);
    p->description = def->description ? strdup(def->description) : NULL;
    if (!p->name || (def->description && !p->description)) {
        void *item = p;
        s_proc_free(&item);
        return AM2Z_ENOMEM;
    }
    p->def.name = p->name;
    p->def.description = p->description;
    zhashx_insert(self->procs, p->name, p);
    return AM2Z_OK;
}

int
am2z_local_register_composite(am2z_local_t *self, const am2z_composite_def_t *def,
                              char *err, size_t err_size)
{
    if (!self || !def)
        return AM2Z_EINVAL;
    int rc = am2z_composite_validate(def, err, err_size);
    if (rc != AM2Z_OK)
        return rc;
    if (s_taken(self, def->name)) {
        am2z_errbuf(err, err_size, "'%s' is already registered", def->name);
        return AM2Z_EINVAL;
    }
    /* a cycle through composites would recurse in s_exec without end */
    size_t n = zhashx_size(self->comps), k = 0;
    const am2z_composite_def_t **known = calloc(n ? n : 1, sizeof *known);
    if (!known)
        return AM2Z_ENOMEM;
    for (am2z_composite_def_t *c = zhashx_first(self->comps); c; c = zhashx_next(self->comps))
        known[k++] = c;
    rc = am2z_composite_check_cycles(def, known, k, err, err_size);
    free(known);
    if (rc != AM2Z_OK)
        return rc;
    am2z_composite_def_t *copy = am2zw_composite_dup(def);
    if (!copy)
        return AM2Z_ENOMEM;
    zhashx_insert(self->comps, copy->name, copy);
    return AM2Z_OK;
}

void
am2z_local_on_event(am2z_local_t *self, am2z_event_fn *fn, void *arg)
{
    if (!self)
        return;
    self->on_event = fn;
    self->on_event_arg = arg;
}

void
am2z_local_set_max_depth(am2z_local_t *self, uint32_t depth)
{
    if (self)
        self->max_depth = depth;
}

/* ---------------------------------------------------------------------------
   Events
   ------------------------------------------------------------------------ */

static void
s_event_raw(am2z_local_t *rt, const char *name, const char *job, const char *session,
            const char *processor, uint32_t attempt, uint64_t seq,
            const uint8_t *data, size_t size)
{
    if (!rt->on_event)
        return;
    am2z_event_t ev = {
        .name = name, .job_id = job ? job : "", .session_id = session ? session : "",
        .processor = processor ? processor : "", .attempt = attempt,
        .ts_ms = am2z_clock_wall_ms(), .seq = seq, .data = data, .data_size = size,
    };
    rt->on_event(&ev, rt->on_event_arg);
}

/*  A lifecycle event of job j with a JSON object as data (taken). Call it
    through S_EVENT, which builds the JSON only when someone listens: with
    no on_event callback the event costs one increment. */
static void
s_event(s_job_t *j, const char *name, uint32_t attempt, json_t *data)
{
    uint8_t *bytes = NULL;
    size_t size = 0;
    if (j->rt->on_event && data)
        am2z_json_to_msgpack(data, &bytes, &size);
    json_decref(data);
    s_event_raw(j->rt, name, j->job_id, j->session, j->processor, attempt, ++j->seq,
                bytes, size);
    free(bytes);
}

#define S_EVENT(j, name, attempt, ...)                                  \
    do {                                                                \
        if ((j)->rt->on_event)                                          \
            s_event((j), (name), (attempt), json_pack(__VA_ARGS__));    \
        else                                                            \
            (j)->seq++;                                                 \
    } while (0)

/*  Host callback: a processor's custom event or progress. */
static int
s_host_emit(void *host, const am2z_ctx_t *ctx, const char *event, const uint8_t *data,
            size_t size, uint64_t seq)
{
    (void)seq;
    s_job_t *j = host;
    s_event_raw(j->rt, event, j->job_id, j->session, j->processor, ctx->attempt, ++j->seq,
                data, size);
    return AM2Z_OK;
}

/*  Host callback: am2z_ctx_call. */
static int
s_host_call(void *host, am2z_ctx_t *ctx, const char *name, const am2z_state_t *state,
            am2z_result_t **out)
{
    s_job_t *j = host;
    return s_exec(j->rt, name, state, ctx->session, ctx->depth + 1, out);
}

/* ---------------------------------------------------------------------------
   Results
   ------------------------------------------------------------------------ */

/*  snprintf(dst, size, "%s", src) without the format machinery: this
    runs three times per execution. */
static void
s_copy(char *dst, size_t size, const char *src)
{
    size_t len = strlen(src);
    if (len >= size)
        len = size - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static am2z_result_t *
s_result(const s_job_t *j, uint64_t now_ms)
{
    am2z_result_t *r = am2z_result_new();
    if (!r)
        return NULL;
    s_copy(r->job_id, sizeof r->job_id, j->job_id);
    s_copy(r->processor, sizeof r->processor, j->processor);
    s_copy(r->session_id, sizeof r->session_id, j->session);
    r->started_at_ms = now_ms;
    r->attempt = 1;
    r->exec_us = 1;
    return r;
}

/*  Turns r into a failure with *error_p (taken; NULL means out of memory). */
static void
s_fail(am2z_result_t *r, am2z_error_t **error_p)
{
    am2z_state_destroy(&r->state);
    am2z_error_destroy(&r->error);
    r->success = false;
    r->error = *error_p ? *error_p : am2z_error_resource("memory", 0, 0);
    *error_p = NULL;
}

static void
s_succeed(am2z_result_t *r, am2z_state_t **state_p)
{
    am2z_error_destroy(&r->error);
    am2z_state_destroy(&r->state);
    r->success = true;
    r->state = *state_p;
    *state_p = NULL;
}

/* ---------------------------------------------------------------------------
   Processors
   ------------------------------------------------------------------------ */

static uint32_t
s_random(am2z_local_t *rt)
{
    rt->rng ^= rt->rng << 13;
    rt->rng ^= rt->rng >> 7;
    rt->rng ^= rt->rng << 17;
    return (uint32_t)(rt->rng >> 16);
}

static void
s_exec_proc(s_job_t *j, const s_proc_t *p, const am2z_state_t *input, am2z_result_t *r)
{
    const am2z_retry_policy_t *policy = &p->def.retry;
    am2zw_host_t host = { .emit = s_host_emit, .call = s_host_call, .host = j };
    for (uint32_t attempt = 1;; attempt++) {
        r->attempt = attempt;
        S_EVENT(j, "processor:active", attempt, "{s:s}", "worker", "local");
        am2zw_invoke_t inv = {
            .processor = p->name, .fn = p->def.fn, .arg = p->def.arg,
            .session = j->session, .job_id = j->job_id, .attempt = attempt,
            .depth = j->depth, .input = input, .host = &host,
        };
        am2zw_outcome_t oc;
        am2zw_invoke(&inv, &oc);
        r->exec_us = oc.exec_us;
        r->started_at_ms = oc.started_ms;
        if (oc.next && p->def.timeout_ms && oc.exec_us / 1000 > p->def.timeout_ms) {
            /* ran past its timeout: the late result is discarded */
            am2z_state_destroy(&oc.next);
            oc.error = am2z_error_timeout(p->name, p->def.timeout_ms);
        }
        if (oc.next) {
            S_EVENT(j, "processor:job:completed", attempt,
                    "{s:I,s:I}", "executionTime", (json_int_t)oc.exec_us, "version",
                    (json_int_t)am2z_state_version(oc.next));
            s_succeed(r, &oc.next);
            am2zw_outcome_clear(&oc);
            return;
        }
        const am2z_error_t *e = oc.error;
        S_EVENT(j, "processor:job:failed", attempt,
                "{s:I,s:{s:s,s:s,s:s,s:b}}", "attempt", (json_int_t)attempt, "error",
                "code", e ? e->code : "", "message", e ? e->message : "",
                "category", e ? am2z_category_name(e->category) : "",
                "retryable", e ? e->retryable : 0);
        if (!am2z_retry_allowed(policy, e, attempt)) {
            s_fail(r, &oc.error);
            am2zw_outcome_clear(&oc);
            return;
        }
        am2zw_outcome_clear(&oc);
        uint64_t wait = am2z_retry_backoff_ms(policy, attempt, s_random(j->rt));
        if (wait)
            zclock_sleep((int)(wait > INT32_MAX ? INT32_MAX : wait));
    }
}

/* ---------------------------------------------------------------------------
   Composites
   ------------------------------------------------------------------------ */

/*  Progress event of a composite after one of its steps. */
static void
s_step_event(s_job_t *j, const char *step, size_t position, size_t total)
{
    S_EVENT(j, "processor:completed", 1,
            "{s:s,s:s,s:I,s:I,s:b}", "composite", j->processor, "step", step,
            "position", (json_int_t)position, "total", (json_int_t)total,
            "stepCompleted", 1);
}

/*  r fails with the child's failure wrapped (what/unit as for
    am2z_error_in_composite). */
static void
s_fail_in(am2z_result_t *r, const am2z_result_t *child, const char *what, const char *comp,
          const char *unit, const char *step, uint32_t position, uint32_t completed,
          const am2z_state_t *partial)
{
    am2z_error_t *e = am2z_error_in_composite(
        child->error, what, comp, unit, step, position, completed,
        partial ? am2z_state_data(partial) : NULL, partial ? am2z_state_size(partial) : 0);
    s_fail(r, &e);
}

static void
s_exec_chain(s_job_t *j, const am2z_composite_def_t *c, const am2z_state_t *input,
             am2z_result_t *r)
{
    am2z_state_t *cur = am2z_state_dup(input);
    for (size_t i = 0; cur && i < c->nsteps; i++) {
        am2z_result_t *child = NULL;
        if (s_exec(j->rt, c->steps[i], cur, j->session, j->depth, &child) != AM2Z_OK) {
            am2z_error_t *e = NULL;
            s_fail(r, &e);
            break;
        }
        if (!child->success) {
            s_fail_in(r, child, "chain", c->name, "step", c->steps[i], (uint32_t)i + 1,
                      (uint32_t)i, cur);
            am2z_result_destroy(&child);
            break;
        }
        s_step_event(j, c->steps[i], i + 1, c->nsteps);
        am2z_state_destroy(&cur);
        cur = child->state;
        child->state = NULL;
        am2z_result_destroy(&child);
        if (i + 1 == c->nsteps)
            s_succeed(r, &cur);
    }
    am2z_state_destroy(&cur);
}

/*  Combines branch states (merge processor, or three-way with conflict
    events). On success *out is the combined state, one version past input. */
static void
s_combine(s_job_t *j, const am2z_composite_def_t *c, const am2z_state_t *input,
          const am2z_state_t *const *states, size_t n, am2z_result_t *r)
{
    if (c->merge) {
        am2z_state_t *with = NULL;
        if (am2z_state_with_branches(input, states, n, &with) != AM2Z_OK) {
            am2z_error_t *e = NULL;
            s_fail(r, &e);
            return;
        }
        am2z_result_t *m = NULL;
        int rc = s_exec(j->rt, c->merge, with, j->session, j->depth, &m);
        am2z_state_destroy(&with);
        if (rc != AM2Z_OK || !m->success) {
            if (m)
                s_fail_in(r, m, am2z_composite_kind_name(c->kind), c->name, "merge", c->merge,
                          (uint32_t)n + 1, (uint32_t)n, input);
            else {
                am2z_error_t *e = NULL;
                s_fail(r, &e);
            }
            am2z_result_destroy(&m);
            return;
        }
        am2z_state_t *clean = NULL;
        if (am2z_state_without_key(m->state, "$branches", &clean) == AM2Z_OK)
            s_succeed(r, &clean);
        else {
            am2z_error_t *e = NULL;
            s_fail(r, &e);
        }
        am2z_result_destroy(&m);
        return;
    }
    am2z_state_t *merged = NULL;
    am2z_merge_conflict_t *conflicts = NULL;
    size_t nconflicts = 0;
    int rc = am2z_merge_states(input, states, n, c->strict, am2z_clock_wall_ms(), 0, &merged,
                               &conflicts, &nconflicts);
    for (size_t i = 0; i < nconflicts; i++)
        S_EVENT(j, "merge:conflict", 1,
                "{s:s,s:I,s:b}", "path", conflicts[i].path, "winner",
                (json_int_t)conflicts[i].winner, "strict", c->strict);
    if (rc == AM2Z_OK) {
        s_succeed(r, &merged);
    } else {
        am2z_error_t *e = rc == AM2Z_ECONFLICT
            ? am2z_error_new(AM2Z_CAT_CONFLICT, "MERGE_CONFLICT",
                             "%s '%s': %zu conflicting change%s (first at '%s')",
                             am2z_composite_kind_name(c->kind), c->name, nconflicts,
                             nconflicts == 1 ? "" : "s", nconflicts ? conflicts[0].path : "?")
            : am2z_error_new(AM2Z_CAT_RESOURCE, "MERGE_FAILED", "%s '%s': merge failed: %s",
                             am2z_composite_kind_name(c->kind), c->name, am2z_strerror(rc));
        s_fail(r, &e);
    }
    free(conflicts);
}

static void
s_exec_parallel(s_job_t *j, const am2z_composite_def_t *c, const am2z_state_t *input,
                am2z_result_t *r)
{
    am2z_result_t **kids = calloc(c->nsteps, sizeof *kids);
    const am2z_state_t **states = calloc(c->nsteps, sizeof *states);
    bool ok = kids && states;
    for (size_t i = 0; ok && i < c->nsteps; i++) {
        if (s_exec(j->rt, c->steps[i], input, j->session, j->depth, &kids[i]) != AM2Z_OK) {
            ok = false;
            break;
        }
        if (!kids[i]->success) {
            /* the first failing branch in declaration order fails the run;
               the later branches do not start */
            s_fail_in(r, kids[i], "parallel", c->name, "branch", c->steps[i], (uint32_t)i + 1,
                      (uint32_t)i, input);
            goto done;
        }
        states[i] = kids[i]->state;
        s_step_event(j, c->steps[i], i + 1, c->nsteps);
    }
    if (!ok) {
        am2z_error_t *e = NULL;
        s_fail(r, &e);
        goto done;
    }
    s_combine(j, c, input, states, c->nsteps, r);
done:
    for (size_t i = 0; kids && i < c->nsteps; i++)
        am2z_result_destroy(&kids[i]);
    free(kids);
    free(states);
}

static void
s_exec_route(s_job_t *j, const am2z_composite_def_t *c, const am2z_state_t *input,
             am2z_result_t *r)
{
    char key[AM2Z_NAME_MAX + 1] = "";
    if (c->selector_path) {
        int64_t n = 0;
        if (am2z_state_get_strcpy(input, c->selector_path, key, sizeof key) != AM2Z_OK) {
            if (am2z_state_get_int(input, c->selector_path, &n) == AM2Z_OK)
                snprintf(key, sizeof key, "%lld", (long long)n);
        }
    } else {
        const s_proc_t *sel = zhashx_lookup(j->rt->procs, c->selector);
        if (!sel) {
            am2z_error_t *e = am2z_error_configuration(c->selector, "selector processor not found");
            s_fail(r, &e);
            return;
        }
        am2zw_host_t host = { .emit = s_host_emit, .call = s_host_call, .host = j };
        am2zw_invoke_t inv = {
            .processor = sel->name, .fn = sel->def.fn, .arg = sel->def.arg,
            .session = j->session, .job_id = j->job_id, .attempt = 1, .depth = j->depth,
            .input = input, .host = &host,
        };
        am2zw_outcome_t oc;
        am2zw_invoke(&inv, &oc);
        if (!oc.next) {
            am2z_result_t tmp = { .error = oc.error };
            s_fail_in(r, &tmp, "route", c->name, "selector", sel->name, 0, 0, input);
            am2zw_outcome_clear(&oc);
            return;
        }
        snprintf(key, sizeof key, "%s", oc.selected);
        am2zw_outcome_clear(&oc);
    }
    const char *target = NULL;
    for (size_t i = 0; key[0] && i < c->nroutes; i++)
        if (strcmp(c->routes[i].key, key) == 0)
            target = c->routes[i].target;
    if (!target)
        target = c->fallback;
    if (!target) {
        char reason[AM2Z_NAME_MAX + 32];
        snprintf(reason, sizeof reason, "no route for %s", key[0] ? key : "(no key)");
        am2z_error_t *e = am2z_error_validation(c->selector_path ? c->selector_path : c->selector,
                                                key, reason);
        s_fail(r, &e);
        return;
    }
    am2z_result_t *child = NULL;
    if (s_exec(j->rt, target, input, j->session, j->depth, &child) != AM2Z_OK) {
        am2z_error_t *e = NULL;
        s_fail(r, &e);
        return;
    }
    if (child->success) {
        s_step_event(j, target, 1, 1);
        s_succeed(r, &child->state);
    } else {
        s_fail_in(r, child, "route", c->name, "step", target, 1, 0, input);
    }
    am2z_result_destroy(&child);
}

/*  Collects batch payloads (the array elements' bytes). */
typedef struct {
    uint8_t **items;
    size_t *sizes;
    size_t n;
} s_payloads_t;

static int
s_collect(const uint8_t *elem, size_t size, size_t index, void *arg)
{
    (void)index;
    s_payloads_t *p = arg;
    uint8_t **items = realloc(p->items, (p->n + 1) * sizeof *items);
    size_t *sizes = items ? realloc(p->sizes, (p->n + 1) * sizeof *sizes) : NULL;
    if (items)
        p->items = items;
    if (!items || !sizes)
        return AM2Z_ENOMEM;
    p->sizes = sizes;
    p->items[p->n] = malloc(size);
    if (!p->items[p->n])
        return AM2Z_ENOMEM;
    memcpy(p->items[p->n], elem, size);
    p->sizes[p->n++] = size;
    return 0;
}

static void
s_exec_batch(s_job_t *j, const am2z_composite_def_t *c, const am2z_state_t *input,
             am2z_result_t *r)
{
    s_payloads_t pl = { 0 };
    uint8_t *raw = NULL;
    size_t raw_size = 0;
    am2z_vtype_t type;
    if (am2z_state_type(input, c->payloads_path, &type) != AM2Z_OK || type != AM2Z_VT_ARRAY
        || am2z_state_get_raw(input, c->payloads_path, &raw, &raw_size) != AM2Z_OK
        || am2z_array_each(raw, raw_size, s_collect, &pl) != AM2Z_OK) {
        am2z_error_t *e = am2z_error_validation(c->payloads_path, NULL,
                                                "batch payloads must be an array of maps");
        s_fail(r, &e);
        goto done;
    }
    const am2z_state_t **mine = calloc(pl.n ? pl.n : 1, sizeof *mine);
    am2z_result_t **kids = calloc(pl.n ? pl.n : 1, sizeof *kids);
    json_t *summary = json_array();
    bool failed = !mine || !kids || !summary;
    size_t nmine = 0;
    for (size_t i = 0; !failed && i < pl.n; i++) {
        char sid[AM2Z_SESSION_ID_MAX + 1];
        int src = am2z_map_get_str(pl.items[i], pl.sizes[i], "sessionId", sid, sizeof sid);
        bool own = src != AM2Z_OK || strcmp(sid, j->session) == 0;
        if (src == AM2Z_OK && !am2z_session_id_valid(sid, strlen(sid))) {
            am2z_error_t *e = am2z_error_validation("sessionId", sid, "invalid session id");
            s_fail(r, &e);
            failed = true;
            break;
        }
        if (own)
            snprintf(sid, sizeof sid, "%s", j->session);
        am2z_state_t *base = NULL, *in = NULL;
        if (own)
            base = am2z_state_dup(input);
        else {
            const am2z_state_t *stored = zhashx_lookup(j->rt->sessions, sid);
            if (stored)
                base = am2z_state_dup(stored);
            else
                am2z_state_new(sid, am2z_clock_wall_ms(), &base);
        }
        int orc = base ? am2z_state_overlay(base, pl.items[i], pl.sizes[i], true, 0, &in)
                       : AM2Z_ENOMEM;
        am2z_state_destroy(&base);
        if (orc != AM2Z_OK) {
            am2z_error_t *e = am2z_error_validation(c->payloads_path, NULL,
                                                    "a batch payload is not a map");
            s_fail(r, &e);
            failed = true;
            break;
        }
        int rc = s_exec(j->rt, c->processor, in, sid, j->depth, &kids[i]);
        am2z_state_destroy(&in);
        if (rc != AM2Z_OK) {
            am2z_error_t *e = NULL;
            s_fail(r, &e);
            failed = true;
            break;
        }
        if (!kids[i]->success) {
            s_fail_in(r, kids[i], "batch", c->name, "payload", c->processor, (uint32_t)i,
                      (uint32_t)i, input);
            failed = true;
            break;
        }
        json_array_append_new(summary, json_pack("{s:I,s:s,s:b,s:I}", "index", (json_int_t)i,
                                                 "sessionId", sid, "success", 1, "version",
                                                 (json_int_t)am2z_state_version(kids[i]->state)));
        if (own)
            mine[nmine++] = kids[i]->state;
        else
            zhashx_update(j->rt->sessions, sid, am2z_state_dup(kids[i]->state));
        s_step_event(j, c->processor, i + 1, pl.n);
    }
    if (!failed) {
        if (nmine > 0) {
            s_combine(j, c, input, mine, nmine, r);
        } else {
            am2z_state_t *next = NULL;
            if (am2z_state_with_metadata(input, j->session, am2z_state_version(input) + 1,
                                         am2z_state_created_at(input), am2z_clock_wall_ms(),
                                         &next) == AM2Z_OK)
                s_succeed(r, &next);
        }
        /* the per-payload summary rides along as "$batch" */
        json_t *wrap = json_pack("{s:o}", "$batch", summary);
        summary = NULL;
        uint8_t *map = NULL;
        size_t map_size = 0;
        am2z_state_t *with = NULL;
        if (r->success && wrap && am2z_json_to_msgpack(wrap, &map, &map_size) == AM2Z_OK
            && am2z_state_overlay(r->state, map, map_size, false, 0, &with) == AM2Z_OK)
            s_succeed(r, &with);
        json_decref(wrap);
        free(map);
    }
    json_decref(summary);
    for (size_t i = 0; kids && i < pl.n; i++)
        am2z_result_destroy(&kids[i]);
    free(kids);
    free(mine);
done:
    for (size_t i = 0; i < pl.n; i++)
        free(pl.items[i]);
    free(pl.items);
    free(pl.sizes);
    free(raw);
}

/* ---------------------------------------------------------------------------
   Dispatch by name
   ------------------------------------------------------------------------ */

static am2z_error_t *
s_not_found(am2z_local_t *rt, const char *name)
{
    size_t n = zhashx_size(rt->procs) + zhashx_size(rt->comps);
    const char **names = calloc(n ? n : 1, sizeof *names);
    size_t k = 0;
    if (names) {
        for (s_proc_t *p = zhashx_first(rt->procs); p; p = zhashx_next(rt->procs))
            names[k++] = p->name;
        for (am2z_composite_def_t *c = zhashx_first(rt->comps); c; c = zhashx_next(rt->comps))
            names[k++] = c->name;
    }
    am2z_error_t *e = am2z_error_processor_not_found(name, names, k);
    free(names);
    return e;
}

/*  A job id as am2z_id_new makes them, without a getrandom call per job:
    the random part is splitmix64 of a counter seeded from the kernel (a
    bijection, so ids of one runtime never repeat) and a random salt. */
static void
s_job_id(am2z_local_t *rt, uint64_t now_ms, char out[AM2Z_ID_LEN + 1])
{
    uint64_t z = (rt->id_next += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    uint8_t rnd[AM2Z_ID_RANDOM];
    for (size_t i = 0; i < 8; i++)
        rnd[i] = (uint8_t)(z >> (56 - 8 * i));
    rnd[8] = rt->id_salt[0];
    rnd[9] = rt->id_salt[1];
    am2z_id_format(out, now_ms, rnd);
}

static int
s_exec(am2z_local_t *rt, const char *name, const am2z_state_t *input, const char *session,
       uint32_t depth, am2z_result_t **out)
{
    *out = NULL;
    if (!name || !input || !session)
        return AM2Z_EINVAL;
    s_job_t j = { .rt = rt, .session = session, .processor = name, .depth = depth };
    uint64_t now = am2z_clock_wall_ms();
    s_job_id(rt, now, j.job_id);
    am2z_result_t *r = s_result(&j, now);
    if (!r)
        return AM2Z_ENOMEM;
    const s_proc_t *p = zhashx_lookup(rt->procs, name);
    const am2z_composite_def_t *c = p ? NULL : zhashx_lookup(rt->comps, name);
    if (depth > rt->max_depth) {
        am2z_error_t *e = am2z_error_call_depth(depth, rt->max_depth, name);
        s_fail(r, &e);
    } else if (p) {
        s_exec_proc(&j, p, input, r);
    } else if (c) {
        uint64_t t0 = am2z_clock_mono_us();
        S_EVENT(&j, "workflow:started", 1,
                "{s:s,s:s}", "composite", name, "kind", am2z_composite_kind_name(c->kind));
        switch (c->kind) {
        case AM2Z_COMPOSITE_CHAIN:    s_exec_chain(&j, c, input, r); break;
        case AM2Z_COMPOSITE_PARALLEL: s_exec_parallel(&j, c, input, r); break;
        case AM2Z_COMPOSITE_ROUTE:    s_exec_route(&j, c, input, r); break;
        case AM2Z_COMPOSITE_BATCH:    s_exec_batch(&j, c, input, r); break;
        }
        uint64_t us = am2z_clock_mono_us() - t0;
        r->exec_us = us ? us : 1;
        if (r->success && c->timeout_ms && us / 1000 > c->timeout_ms) {
            am2z_error_t *e = am2z_error_timeout(name, c->timeout_ms);
            s_fail(r, &e);
        }
        S_EVENT(&j, r->success ? "workflow:completed" : "workflow:failed", 1,
                "{s:s,s:I}", "composite", name, "executionTime", (json_int_t)r->exec_us);
    } else {
        am2z_error_t *e = s_not_found(rt, name);
        s_fail(r, &e);
    }
    *out = r;
    return AM2Z_OK;
}

int
am2z_local_execute(am2z_local_t *self, const char *name, const am2z_state_t *state,
                   const char *session_id, am2z_result_t **out)
{
    if (!self || !name || !out || (!state && !session_id))
        return AM2Z_EINVAL;
    *out = NULL;
    if (!session_id)
        session_id = am2z_state_session_id(state);
    if (!am2z_session_id_valid(session_id, strlen(session_id)))
        return AM2Z_EINVAL;
    const am2z_state_t *stored = zhashx_lookup(self->sessions, session_id);
    am2z_state_t *input = NULL;
    uint64_t now = am2z_clock_wall_ms();
    int rc;
    if (state)
        rc = am2z_state_with_metadata(state, session_id,
                                      stored ? am2z_state_version(stored) : am2z_state_version(state),
                                      stored ? am2z_state_created_at(stored)
                                             : am2z_state_created_at(state),
                                      now, &input);
    else if (stored)
        rc = (input = am2z_state_dup(stored)) ? AM2Z_OK : AM2Z_ENOMEM;
    else
        rc = am2z_state_new(session_id, now, &input);
    if (rc != AM2Z_OK)
        return rc;
    if (!stored)
        s_event_raw(self, "session:created", "", session_id, name, 0, 0, NULL, 0);
    rc = s_exec(self, name, input, session_id, 0, out);
    am2z_state_destroy(&input);
    if (rc == AM2Z_OK && (*out)->success) {
        am2z_state_t *keep = am2z_state_dup((*out)->state);
        if (!keep)
            return AM2Z_ENOMEM;
        zhashx_update(self->sessions, session_id, keep);
    }
    return rc;
}

int
am2z_local_get_state(am2z_local_t *self, const char *session_id, am2z_state_t **out)
{
    if (!self || !session_id || !out)
        return AM2Z_EINVAL;
    const am2z_state_t *st = zhashx_lookup(self->sessions, session_id);
    if (!st)
        return AM2Z_ENOTFOUND;
    *out = am2z_state_dup(st);
    return *out ? AM2Z_OK : AM2Z_ENOMEM;
}

int
am2z_local_stop_session(am2z_local_t *self, const char *session_id)
{
    if (!self || !session_id)
        return AM2Z_EINVAL;
    zhashx_delete(self->sessions, session_id);
    s_event_raw(self, "session:cleanup", "", session_id, "", 0, 0, NULL, 0);
    return AM2Z_OK;
}
