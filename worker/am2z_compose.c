/*  am2z_compose.c — composite definitions: validation and owned copies.
    (Running composites is the runtime's job: the local runtime here, the
    broker's orchestrator for distributed runs.) */
#include "am2z_worker_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const s_kind_names[] = { "chain", "parallel", "route", "batch" };

const char *
am2z_composite_kind_name(am2z_composite_kind_t kind)
{
    return (unsigned)kind < 4 ? s_kind_names[kind] : "composite";
}

static bool
s_name_ok(const char *name)
{
    return name && am2z_name_valid(name, strlen(name));
}

/*  The i-th name def starts as a unit (i from 0), NULL past the last:
    chain steps; parallel branches and merge; route targets and fallback;
    batch processor and merge (the broker's s_comp_ref walks the same
    edges). A route's selector is none: it must be a processor. */
static const char *
s_unit_name(const am2z_composite_def_t *def, size_t i)
{
    const char *tail[2] = { NULL, NULL };
    switch (def->kind) {
    case AM2Z_COMPOSITE_CHAIN:
        return def->steps && i < def->nsteps ? def->steps[i] : NULL;
    case AM2Z_COMPOSITE_PARALLEL:
        if (def->steps && i < def->nsteps)
            return def->steps[i];
        i -= def->steps ? def->nsteps : 0;
        tail[0] = def->merge;
        break;
    case AM2Z_COMPOSITE_ROUTE:
        if (def->routes && i < def->nroutes)
            return def->routes[i].target;
        i -= def->routes ? def->nroutes : 0;
        tail[0] = def->fallback;
        break;
    case AM2Z_COMPOSITE_BATCH:
        tail[0] = def->processor;
        tail[1] = def->merge;
        break;
    default:
        return NULL;
    }
    for (size_t k = 0; k < 2; k++)
        if (tail[k] && i-- == 0)
            return tail[k];
    return NULL;
}

static bool
s_streq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

int
am2z_composite_validate(const am2z_composite_def_t *def, char *err, size_t err_size)
{
    if (!def) {
        am2z_errbuf(err, err_size, "no composite definition");
        return AM2Z_ECONFIG;
    }
    const char *kind = am2z_composite_kind_name(def->kind);
    const char *name = def->name ? def->name : "(null)";
    if (!s_name_ok(def->name)) {
        am2z_errbuf(err, err_size, "%s name '%s' is not valid", kind, name);
        return AM2Z_ECONFIG;
    }
    switch (def->kind) {
    case AM2Z_COMPOSITE_CHAIN:
    case AM2Z_COMPOSITE_PARALLEL:
        if (def->nsteps == 0 || !def->steps) {
            am2z_errbuf(err, err_size, "%s '%s' has no %s", kind, name,
                        def->kind == AM2Z_COMPOSITE_CHAIN ? "steps" : "branches");
            return AM2Z_ECONFIG;
        }
        for (size_t i = 0; i < def->nsteps; i++)
            if (!s_name_ok(def->steps[i])) {
                am2z_errbuf(err, err_size, "%s '%s': step %zu names no valid processor",
                            kind, name, i + 1);
                return AM2Z_ECONFIG;
            }
        break;
    case AM2Z_COMPOSITE_ROUTE:
        if (!def->selector_path == !def->selector) {
            am2z_errbuf(err, err_size, "route '%s' needs exactly one of selector_path and selector",
                        name);
            return AM2Z_ECONFIG;
        }
        if (def->selector && !s_name_ok(def->selector)) {
            am2z_errbuf(err, err_size, "route '%s': selector name is not valid", name);
            return AM2Z_ECONFIG;
        }
        if (def->nroutes == 0 && !def->fallback) {
            am2z_errbuf(err, err_size, "route '%s' has no routes and no fallback", name);
            return AM2Z_ECONFIG;
        }
        for (size_t i = 0; i < def->nroutes; i++)
            if (!def->routes || !def->routes[i].key || !s_name_ok(def->routes[i].target)) {
                am2z_errbuf(err, err_size, "route '%s': route %zu needs a key and a valid target",
                            name, i + 1);
                return AM2Z_ECONFIG;
            }
        if (def->fallback && !s_name_ok(def->fallback)) {
            am2z_errbuf(err, err_size, "route '%s': fallback name is not valid", name);
            return AM2Z_ECONFIG;
        }
        break;
    case AM2Z_COMPOSITE_BATCH:
        if (!s_name_ok(def->processor) || !def->payloads_path || !*def->payloads_path) {
            am2z_errbuf(err, err_size, "batch '%s' needs a processor and a payloads path", name);
            return AM2Z_ECONFIG;
        }
        break;
    default:
        am2z_errbuf(err, err_size, "composite '%s' has an unknown kind %d", name, (int)def->kind);
        return AM2Z_ECONFIG;
    }
    if (def->merge && !s_name_ok(def->merge)) {
        am2z_errbuf(err, err_size, "%s '%s': merge processor name is not valid", kind, name);
        return AM2Z_ECONFIG;
    }
    /* a unit naming the composite itself: each run would start another */
    for (size_t i = 0; s_unit_name(def, i); i++)
        if (s_streq(s_unit_name(def, i), def->name)) {
            am2z_errbuf(err, err_size, "%s '%s' refers back to itself: %s -> %s", kind, name,
                        name, name);
            return AM2Z_ECONFIG;
        }
    return AM2Z_OK;
}

/*  The known composite called name, or -1 (a processor, or unknown). */
static long
s_known_index(const am2z_composite_def_t *const *known, size_t nknown, const char *name)
{
    for (size_t i = 0; i < nknown; i++)
        if (known[i] && s_streq(known[i]->name, name))
            return (long)i;
    return -1;
}

int
am2z_composite_check_cycles(const am2z_composite_def_t *def,
                            const am2z_composite_def_t *const *known, size_t nknown,
                            char *err, size_t err_size)
{
    if (!def || !def->name || (nknown && !known)) {
        am2z_errbuf(err, err_size, "no composite definition");
        return AM2Z_EINVAL;
    }
    /* depth first from def with an explicit stack (frames: a composite and
       its next unit), each known composite entered once; reaching def's
       name again closes a cycle, and the stack is its path */
    typedef struct {
        const am2z_composite_def_t *c;
        size_t next;
    } frame_t;
    frame_t *stack = malloc((nknown + 1) * sizeof *stack);
    bool *seen = calloc(nknown ? nknown : 1, sizeof *seen);
    if (!stack || !seen) {
        free(stack);
        free(seen);
        return AM2Z_ENOMEM;
    }
    size_t depth = 0;
    bool found = false;
    stack[depth++] = (frame_t){ def, 0 };
    while (depth) {
        frame_t *top = &stack[depth - 1];
        const char *unit = s_unit_name(top->c, top->next++);
        if (!unit) {
            depth--;
            continue;
        }
        if (s_streq(unit, def->name)) {
            found = true;
            break;
        }
        long k = s_known_index(known, nknown, unit);
        if (k < 0 || seen[k])
            continue;
        seen[k] = true;
        stack[depth++] = (frame_t){ known[k], 0 };     /* at most nknown + 1 frames */
    }
    if (found) {
        char path[512] = "";
        size_t len = 0;
        for (size_t i = 0; i <= depth && len < sizeof path; i++) {
            int w = snprintf(path + len, sizeof path - len, "%s%s", i ? " -> " : "",
                             i < depth ? stack[i].c->name : def->name);
            len += w > 0 ? (size_t)w : 0;
        }
        if (len >= sizeof path)
            snprintf(path + sizeof path - 4, 4, "...");
        am2z_errbuf(err, err_size, "%s '%s' refers back to itself: %s",
                    am2z_composite_kind_name(def->kind), def->name, path);
    }
    free(stack);
    free(seen);
    return found ? AM2Z_ECONFIG : AM2Z_OK;
}

static char *
s_dup(const char *s, bool *ok)
{
    if (!s)
        return NULL;
    char *copy = strdup(s);
    if (!copy)
        *ok = false;
    return copy;
}

void
am2zw_composite_free(am2z_composite_def_t **def_p)
{
    if (!def_p || !*def_p)
        return;
    am2z_composite_def_t *d = *def_p;
    free((char *)d->name);
    free((char *)d->description);
    for (size_t i = 0; d->steps && i < d->nsteps; i++)
        free((char *)d->steps[i]);
    free((char **)d->steps);
    free((char *)d->merge);
    free((char *)d->selector_path);
    free((char *)d->selector);
    for (size_t i = 0; d->routes && i < d->nroutes; i++) {
        free((char *)d->routes[i].key);
        free((char *)d->routes[i].target);
    }
    free((am2z_route_t *)d->routes);
    free((char *)d->fallback);
    free((char *)d->processor);
    free((char *)d->payloads_path);
    free(d);
    *def_p = NULL;
}

am2z_composite_def_t *
am2zw_composite_dup(const am2z_composite_def_t *def)
{
    am2z_composite_def_t *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    bool ok = true;
    d->kind = def->kind;
    d->timeout_ms = def->timeout_ms;
    d->strict = def->strict;
    d->name = s_dup(def->name, &ok);
    d->description = s_dup(def->description, &ok);
    d->merge = s_dup(def->merge, &ok);
    d->selector_path = s_dup(def->selector_path, &ok);
    d->selector = s_dup(def->selector, &ok);
    d->fallback = s_dup(def->fallback, &ok);
    d->processor = s_dup(def->processor, &ok);
    d->payloads_path = s_dup(def->payloads_path, &ok);
    if (def->nsteps) {
        char **steps = calloc(def->nsteps, sizeof *steps);
        d->steps = (const char *const *)steps;
        if (steps) {
            d->nsteps = def->nsteps;
            for (size_t i = 0; i < def->nsteps; i++)
                steps[i] = s_dup(def->steps[i], &ok);
        } else {
            ok = false;
        }
    }
    if (def->nroutes) {
        am2z_route_t *routes = calloc(def->nroutes, sizeof *routes);
        d->routes = routes;
        if (routes) {
            d->nroutes = def->nroutes;
            for (size_t i = 0; i < def->nroutes; i++) {
                routes[i].key = s_dup(def->routes[i].key, &ok);
                routes[i].target = s_dup(def->routes[i].target, &ok);
            }
        } else {
            ok = false;
        }
    }
    if (!ok)
        am2zw_composite_free(&d);
    return d;
}

int
am2zw_composite_desc(const am2z_composite_def_t *def, am2z_comp_desc_t *out)
{
    if (!def || !out || (unsigned)def->kind > AM2Z_COMPOSITE_BATCH)
        return AM2Z_EINVAL;
    /* same fields, same meaning: borrow them into a view and deep-copy it */
    am2z_comp_desc_t view = {
        .name = (char *)def->name, .kind = (uint32_t)def->kind,
        .description = (char *)def->description, .timeout_ms = def->timeout_ms,
        .steps = (char **)def->steps, .nsteps = def->nsteps, .merge = (char *)def->merge,
        .strict = def->strict, .selector_path = (char *)def->selector_path,
        .selector = (char *)def->selector, .fallback = (char *)def->fallback,
        .processor = (char *)def->processor, .payloads_path = (char *)def->payloads_path,
    };
    am2z_route_desc_t *routes = NULL;
    if (def->nroutes) {
        routes = calloc(def->nroutes, sizeof *routes);
        if (!routes)
            return AM2Z_ENOMEM;
        for (size_t i = 0; i < def->nroutes; i++) {
            routes[i].key = (char *)def->routes[i].key;
            routes[i].target = (char *)def->routes[i].target;
        }
        view.routes = routes;
        view.nroutes = def->nroutes;
    }
    int rc = am2z_comp_desc_copy(&view, out);
    free(routes);
    return rc;
}
