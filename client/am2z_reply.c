/*  am2z_reply.c — see am2z_reply.h.

    The broker is trusted more than an arbitrary peer, but its bytes still
    cross a socket: they are checked structurally before msgpack-c allocates
    anything, and every value is type-checked before it is read.
*/
#include "am2z_reply.h"

#include "am2z_codec.h"
#include "am2z_error.h"
#include "am2z_mpcheck.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*  Validates and unpacks one object. On AM2Z_OK the caller destroys *up. */
static int
s_unpack(const uint8_t *data, size_t size, msgpack_unpacked *up, char *err,
         size_t err_size)
{
    if (!data || am2z_msgpack_check(data, size, AM2Z_CODEC_MAX_DEPTH) != AM2Z_OK) {
        if (err && err_size)
            snprintf(err, err_size, "REPLY: data is not one well-formed msgpack object");
        return AM2Z_EPROTO;
    }
    msgpack_unpacked_init(up);
    size_t off = 0;
    if (msgpack_unpack_next(up, (const char *)data, size, &off) != MSGPACK_UNPACK_SUCCESS) {
        msgpack_unpacked_destroy(up);
        if (err && err_size)
            snprintf(err, err_size, "REPLY: data does not unpack");
        return AM2Z_EPROTO;
    }
    return AM2Z_OK;
}

static bool
s_key_is(const msgpack_object *key, const char *name)
{
    size_t len = strlen(name);
    return key->type == MSGPACK_OBJECT_STR && key->via.str.size == len
           && memcmp(key->via.str.ptr, name, len) == 0;
}

/*  A counter: non-negative integer (a float is truncated); anything else 0. */
static uint64_t
s_uint(const msgpack_object *o)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return o->via.u64;
    if ((o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32)
        && o->via.f64 > 0 && o->via.f64 < 1.8e19)
        return (uint64_t)o->via.f64;
    return 0;
}

static uint64_t
s_map_uint(const msgpack_object *map, const char *name)
{
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (s_key_is(&map->via.map.ptr[i].key, name))
            return s_uint(&map->via.map.ptr[i].val);
    return 0;
}

static char *
s_strdup_obj(const msgpack_object *o)
{
    char *s = malloc(o->via.str.size + 1);
    if (!s)
        return NULL;
    if (o->via.str.size)
        memcpy(s, o->via.str.ptr, o->via.str.size);
    s[o->via.str.size] = '\0';
    return s;
}

static void
s_copy_str(char *dst, size_t dst_size, const msgpack_object *o)
{
    size_t n = o->via.str.size < dst_size - 1 ? o->via.str.size : dst_size - 1;
    if (n)
        memcpy(dst, o->via.str.ptr, n);
    dst[n] = '\0';
}

/*  Fills *item (zeroed) from element i; what names the reply in errors. */
typedef int (s_elem_fn)(const msgpack_object *e, void *item, size_t i, const char *what,
                        char *err, size_t err_size);

/*  The frame every list reply shares: validates and unpacks data, which
    must be an array (or, when one_map, a single map: a list of one),
    allocates *items (n zeroed elements of elem_size) and fills each with
    fn. *count counts the elements handed to fn, the failing one included,
    so the caller's destroy frees whatever fn allocated. Returns AM2Z_OK,
    AM2Z_EPROTO (err explains) or AM2Z_ENOMEM. */
static int
s_decode_list(const uint8_t *data, size_t size, const char *what, bool one_map,
              size_t elem_size, void **items, size_t *count, s_elem_fn *fn,
              char *err, size_t err_size)
{
    msgpack_unpacked up;
    int rc = s_unpack(data, size, &up, err, err_size);
    if (rc != AM2Z_OK)
        return rc;
    const msgpack_object *a = &up.data;
    bool one = one_map && a->type == MSGPACK_OBJECT_MAP;
    size_t n = one ? 1 : a->type == MSGPACK_OBJECT_ARRAY ? a->via.array.size : 0;
    if (!one && a->type != MSGPACK_OBJECT_ARRAY) {
        rc = AM2Z_EPROTO;
        if (err && err_size)
            snprintf(err, err_size, "REPLY %s: data must be an array%s", what,
                     one_map ? " or a map" : "");
    } else if (n && !(*items = calloc(n, elem_size))) {
        rc = AM2Z_ENOMEM;
    }
    for (size_t i = 0; rc == AM2Z_OK && i < n; i++) {
        *count = i + 1;
        rc = fn(one ? a : &a->via.array.ptr[i], (char *)*items + i * elem_size, i, what,
                err, err_size);
    }
    msgpack_unpacked_destroy(&up);
    return rc;
}

/*  The usual element check: a map. */
static int
s_need_map(const msgpack_object *e, size_t i, const char *what, char *err, size_t err_size)
{
    if (e->type == MSGPACK_OBJECT_MAP)
        return AM2Z_OK;
    if (err && err_size)
        snprintf(err, err_size, "REPLY %s: element %zu must be a map", what, i);
    return AM2Z_EPROTO;
}

static int
s_no_id(size_t i, const char *what, const char *id, char *err, size_t err_size)
{
    if (err && err_size)
        snprintf(err, err_size, "REPLY %s: element %zu has no %s", what, i, id);
    return AM2Z_EPROTO;
}

int
am2z_reply_decode_stats(const uint8_t *data, size_t size, am2z_stats_t *out,
                        char *err, size_t err_size)
{
    msgpack_unpacked up;
    int rc = s_unpack(data, size, &up, err, err_size);
    if (rc != AM2Z_OK)
        return rc;
    const msgpack_object *m = &up.data;
    if (m->type != MSGPACK_OBJECT_MAP) {
        if (err && err_size)
            snprintf(err, err_size, "REPLY stats: data must be a map");
        msgpack_unpacked_destroy(&up);
        return AM2Z_EPROTO;
    }
    memset(out, 0, sizeof *out);
    out->uptime_ms = s_map_uint(m, "uptimeMs");
    out->processors = s_map_uint(m, "processors");
    out->workers = s_map_uint(m, "workers");
    out->sessions = s_map_uint(m, "sessions");
    out->running = s_map_uint(m, "running");
    out->waiting = s_map_uint(m, "waiting");
    out->completed = s_map_uint(m, "completed");
    out->failed = s_map_uint(m, "failed");
    msgpack_unpacked_destroy(&up);
    return AM2Z_OK;
}

int
am2z_reply_decode_queues(const uint8_t *data, size_t size, am2z_queue_list_t **out,
                         char *err, size_t err_size)
{
    msgpack_unpacked up;
    int rc = s_unpack(data, size, &up, err, err_size);
    if (rc != AM2Z_OK)
        return rc;
    const msgpack_object *m = &up.data;
    am2z_queue_list_t *list = NULL;
    if (m->type != MSGPACK_OBJECT_MAP) {
        rc = AM2Z_EPROTO;
        if (err && err_size)
            snprintf(err, err_size, "REPLY queues: data must be a map of name to counters");
        goto done;
    }
    list = calloc(1, sizeof *list);
    size_t n = m->via.map.size;
    if (!list || (n && (!(list->names = calloc(n, sizeof *list->names))
                        || !(list->stats = calloc(n, sizeof *list->stats))))) {
        rc = AM2Z_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const msgpack_object_kv *kv = &m->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR || kv->val.type != MSGPACK_OBJECT_MAP) {
            rc = AM2Z_EPROTO;
            if (err && err_size)
                snprintf(err, err_size,
                         "REPLY queues: entry %zu must be a string key with a map value", i);
            goto done;
        }
        list->names[list->count] = s_strdup_obj(&kv->key);
        if (!list->names[list->count]) {
            rc = AM2Z_ENOMEM;
            goto done;
        }
        am2z_queue_stats_t *st = &list->stats[list->count];
        st->waiting = s_map_uint(&kv->val, "waiting");
        st->active = s_map_uint(&kv->val, "active");
        st->completed = s_map_uint(&kv->val, "completed");
        st->failed = s_map_uint(&kv->val, "failed");
        st->delayed = s_map_uint(&kv->val, "delayed");
        st->paused = s_map_uint(&kv->val, "paused");
        list->count++;
    }
done:
    msgpack_unpacked_destroy(&up);
    if (rc != AM2Z_OK) {
        am2z_queue_list_destroy(&list);
        return rc;
    }
    *out = list;
    return AM2Z_OK;
}

/*  A string, or a map with a string "name" (processors). */
static int
s_strlist_elem(const msgpack_object *e, void *item, size_t i, const char *what, char *err,
               size_t err_size)
{
    const msgpack_object *str = NULL;
    if (e->type == MSGPACK_OBJECT_STR) {
        str = e;
    } else if (e->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t k = 0; k < e->via.map.size; k++)
            if (s_key_is(&e->via.map.ptr[k].key, "name")
                && e->via.map.ptr[k].val.type == MSGPACK_OBJECT_STR)
                str = &e->via.map.ptr[k].val;
    }
    if (!str) {
        if (err && err_size)
            snprintf(err, err_size,
                     "REPLY %s: element %zu must be a string or a map with a string 'name'",
                     what, i);
        return AM2Z_EPROTO;
    }
    char **slot = item;
    *slot = s_strdup_obj(str);
    return *slot ? AM2Z_OK : AM2Z_ENOMEM;
}

int
am2z_reply_decode_strlist(const uint8_t *data, size_t size, am2z_strlist_t **out,
                          char *err, size_t err_size)
{
    am2z_strlist_t *list = calloc(1, sizeof *list);
    if (!list)
        return AM2Z_ENOMEM;
    int rc = s_decode_list(data, size, "list", false, sizeof *list->items,
                           (void **)&list->items, &list->count, s_strlist_elem, err, err_size);
    if (rc != AM2Z_OK) {
        am2z_strlist_destroy(&list);
        return rc;
    }
    *out = list;
    return AM2Z_OK;
}

void
am2z_queue_list_destroy(am2z_queue_list_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_queue_list_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++)
        free(self->names[i]);
    free(self->names);
    free(self->stats);
    free(self);
    *self_p = NULL;
}

void
am2z_strlist_destroy(am2z_strlist_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_strlist_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++)
        free(self->items[i]);
    free(self->items);
    free(self);
    *self_p = NULL;
}

/*  Re-encodes one unpacked object (a nested map) into owned bytes. */
static int
s_repack(const msgpack_object *o, uint8_t **out, size_t *size)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (msgpack_pack_object(&pk, *o) != 0 || !sb.size) {
        msgpack_sbuffer_destroy(&sb);
        return AM2Z_ENOMEM;
    }
    *out = (uint8_t *)sb.data;    /* sbuffer memory is malloc()ed */
    *size = sb.size;
    return AM2Z_OK;
}

static int
s_dlq_elem(const msgpack_object *e, void *item, size_t i, const char *what, char *err,
           size_t err_size)
{
    int rc = s_need_map(e, i, what, err, err_size);
    if (rc != AM2Z_OK)
        return rc;
    am2z_dead_letter_t *d = item;
    bool have_job = false;
    for (uint32_t k = 0; k < e->via.map.size; k++) {
        const msgpack_object *key = &e->via.map.ptr[k].key;
        const msgpack_object *val = &e->via.map.ptr[k].val;
        bool str = val->type == MSGPACK_OBJECT_STR;
        if (s_key_is(key, "job") && str) {
            s_copy_str(d->job_id, sizeof d->job_id, val);
            have_job = true;
        } else if (s_key_is(key, "proc") && str) {
            s_copy_str(d->processor, sizeof d->processor, val);
        } else if (s_key_is(key, "session") && str) {
            s_copy_str(d->session_id, sizeof d->session_id, val);
        } else if (s_key_is(key, "attempt")) {
            uint64_t v = s_uint(val);
            d->attempt = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
        } else if (s_key_is(key, "created")) {
            d->created_ms = s_uint(val);
        } else if (s_key_is(key, "failed")) {
            d->failed_at_ms = s_uint(val);
        } else if (s_key_is(key, "error") && val->type == MSGPACK_OBJECT_MAP && !d->error) {
            uint8_t *bytes = NULL;
            size_t nbytes = 0;
            if (s_repack(val, &bytes, &nbytes) == AM2Z_OK)
                am2z_error_decode(bytes, nbytes, &d->error, NULL, 0);   /* unreadable: NULL */
            free(bytes);
        } else if (s_key_is(key, "state") && val->type == MSGPACK_OBJECT_MAP && !d->state) {
            rc = s_repack(val, &d->state, &d->state_size);
            if (rc != AM2Z_OK)
                return rc;
        }
    }
    return have_job ? AM2Z_OK : s_no_id(i, what, "job id", err, err_size);
}

int
am2z_reply_decode_dlq(const uint8_t *data, size_t size, am2z_dlq_list_t **out,
                      char *err, size_t err_size)
{
    am2z_dlq_list_t *list = calloc(1, sizeof *list);
    if (!list)
        return AM2Z_ENOMEM;
    int rc = s_decode_list(data, size, "dlq", false, sizeof *list->items,
                           (void **)&list->items, &list->count, s_dlq_elem, err, err_size);
    if (rc != AM2Z_OK) {
        am2z_dlq_list_destroy(&list);
        return rc;
    }
    *out = list;
    return AM2Z_OK;
}

void
am2z_dlq_list_destroy(am2z_dlq_list_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    am2z_dlq_list_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++) {
        am2z_error_destroy(&self->items[i].error);
        free(self->items[i].state);
    }
    free(self->items);
    free(self);
    *self_p = NULL;
}

/* session lifecycle (issue 6) --------------------------------------------- */

static int
s_session_elem(const msgpack_object *e, void *item, size_t i, const char *what, char *err,
               size_t err_size)
{
    int rc = s_need_map(e, i, what, err, err_size);
    if (rc != AM2Z_OK)
        return rc;
    am2z_session_info_t *si = item;
    bool have_id = false;
    for (uint32_t k = 0; k < e->via.map.size; k++) {
        const msgpack_object *key = &e->via.map.ptr[k].key;
        const msgpack_object *val = &e->via.map.ptr[k].val;
        if (s_key_is(key, "id") && val->type == MSGPACK_OBJECT_STR) {
            s_copy_str(si->id, sizeof si->id, val);
            have_id = true;
        }
    }
    if (!have_id)
        return s_no_id(i, what, "id", err, err_size);
    si->created_ms = s_map_uint(e, "created");
    si->last_activity_ms = s_map_uint(e, "lastActivity");
    si->queued = s_map_uint(e, "queued");
    si->running = s_map_uint(e, "running");
    si->completed = s_map_uint(e, "completed");
    si->failed = s_map_uint(e, "failed");
    return AM2Z_OK;
}

int
am2z_reply_decode_sessions(const uint8_t *data, size_t size, am2z_session_list_t **out,
                           char *err, size_t err_size)
{
    am2z_session_list_t *list = calloc(1, sizeof *list);
    if (!list)
        return AM2Z_ENOMEM;
    int rc = s_decode_list(data, size, "session-info", true, sizeof *list->items,
                           (void **)&list->items, &list->count, s_session_elem, err,
                           err_size);
    if (rc != AM2Z_OK) {
        am2z_session_list_destroy(&list);
        return rc;
    }
    *out = list;
    return AM2Z_OK;
}

void
am2z_session_list_destroy(am2z_session_list_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->items);
    free(*self_p);
    *self_p = NULL;
}

int
am2z_reply_decode_stop(const uint8_t *data, size_t size, am2z_stop_report_t *out,
                       char *err, size_t err_size)
{
    memset(out, 0, sizeof *out);
    msgpack_unpacked up;
    int rc = s_unpack(data, size, &up, err, err_size);
    if (rc != AM2Z_OK)
        return rc;
    if (up.data.type == MSGPACK_OBJECT_MAP) {
        out->cancelled = s_map_uint(&up.data, "cancelled");
        out->abandoned = s_map_uint(&up.data, "abandoned");
    } else if (up.data.type != MSGPACK_OBJECT_NIL) {
        rc = AM2Z_EPROTO;
        if (err && err_size)
            snprintf(err, err_size, "REPLY stop-session: data must be a map");
    }
    msgpack_unpacked_destroy(&up);
    return rc;
}

/* repeatable jobs (issue 6) ----------------------------------------------- */

static int
s_repeat_elem(const msgpack_object *e, void *item, size_t i, const char *what, char *err,
              size_t err_size)
{
    int rc = s_need_map(e, i, what, err, err_size);
    if (rc != AM2Z_OK)
        return rc;
    am2z_repeat_t *r = item;
    for (uint32_t k = 0; k < e->via.map.size; k++) {
        const msgpack_object *key = &e->via.map.ptr[k].key;
        const msgpack_object *val = &e->via.map.ptr[k].val;
        bool str = val->type == MSGPACK_OBJECT_STR;
        if (s_key_is(key, "id") && str)
            s_copy_str(r->id, sizeof r->id, val);
        else if (s_key_is(key, "proc") && str)
            s_copy_str(r->processor, sizeof r->processor, val);
        else if (s_key_is(key, "session") && str)
            s_copy_str(r->session_id, sizeof r->session_id, val);
        else if (s_key_is(key, "last") && str)
            s_copy_str(r->last_job_id, sizeof r->last_job_id, val);
        else if (s_key_is(key, "every"))
            r->every_ms = s_uint(val);
        else if (s_key_is(key, "limit"))
            r->limit = s_uint(val);
        else if (s_key_is(key, "runs"))
            r->runs = s_uint(val);
        else if (s_key_is(key, "next"))
            r->next_ms = s_uint(val);
        else if (s_key_is(key, "created"))
            r->created_ms = s_uint(val);
    }
    return r->id[0] ? AM2Z_OK : s_no_id(i, what, "id", err, err_size);
}

int
am2z_reply_decode_repeats(const uint8_t *data, size_t size, am2z_repeat_list_t **out,
                          char *err, size_t err_size)
{
    am2z_repeat_list_t *list = calloc(1, sizeof *list);
    if (!list)
        return AM2Z_ENOMEM;
    int rc = s_decode_list(data, size, "repeats", false, sizeof *list->items,
                           (void **)&list->items, &list->count, s_repeat_elem, err, err_size);
    if (rc != AM2Z_OK) {
        am2z_repeat_list_destroy(&list);
        return rc;
    }
    *out = list;
    return AM2Z_OK;
}

void
am2z_repeat_list_destroy(am2z_repeat_list_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->items);
    free(*self_p);
    *self_p = NULL;
}
