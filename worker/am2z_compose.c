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
    return AM2Z_OK;
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
