/*  am2z_merge.c — see am2z_merge.h.

    States are validated before they get here (am2z_state_t guarantees one
    well-formed map of bounded depth), so unpacking them cannot blow up.
    The merge walks msgpack objects and packs the result map by map: a map's
    entry count must precede its entries, so each map is packed into its own
    buffer first and copied into its parent with the right header.
*/
#include "am2z_merge.h"

#include "am2z_error.h"
#include "am2z_mpcheck.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    bool strict;
    am2z_merge_conflict_t *conflicts;   /* owned until handed out */
    size_t nconflicts;
    size_t cap;
    int rc;                             /* first failure (ENOMEM) */
} s_ctx_t;

static bool
s_same(const msgpack_object *a, const msgpack_object *b)
{
    if (!a || !b)
        return a == b;
    return msgpack_object_equal(*a, *b);
}

/*  The value of key in map, or NULL. */
static const msgpack_object *
s_lookup(const msgpack_object *map, const msgpack_object *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (msgpack_object_equal(map->via.map.ptr[i].key, *key))
            return &map->via.map.ptr[i].val;
    return NULL;
}

static bool
s_is_metadata(const msgpack_object *key)
{
    return key->type == MSGPACK_OBJECT_STR && key->via.str.size == 8
           && memcmp(key->via.str.ptr, "metadata", 8) == 0;
}

static void
s_conflict(s_ctx_t *ctx, const char *path, size_t winner)
{
    if (ctx->nconflicts == ctx->cap) {
        size_t cap = ctx->cap ? ctx->cap * 2 : 4;
        am2z_merge_conflict_t *grown = realloc(ctx->conflicts, cap * sizeof *grown);
        if (!grown) {
            ctx->rc = AM2Z_ENOMEM;
            return;
        }
        ctx->conflicts = grown;
        ctx->cap = cap;
    }
    am2z_merge_conflict_t *c = &ctx->conflicts[ctx->nconflicts++];
    snprintf(c->path, sizeof c->path, "%s", path);
    c->winner = winner;
}

/*  True when arr starts with every element of prefix (NULL = empty). */
static bool
s_extends(const msgpack_object *prefix, const msgpack_object *arr)
{
    if (!arr || arr->type != MSGPACK_OBJECT_ARRAY)
        return false;
    if (!prefix)
        return true;
    if (prefix->type != MSGPACK_OBJECT_ARRAY || prefix->via.array.size > arr->via.array.size)
        return false;
    for (uint32_t i = 0; i < prefix->via.array.size; i++)
        if (!msgpack_object_equal(prefix->via.array.ptr[i], arr->via.array.ptr[i]))
            return false;
    return true;
}

/*  Appends key to a path buffer as a dotted segment. */
static void
s_path_join(char *out, size_t out_size, const char *path, const msgpack_object *key)
{
    const char *sep = path[0] ? "." : "";
    if (key->type == MSGPACK_OBJECT_STR)
        snprintf(out, out_size, "%s%s%.*s", path, sep, (int)key->via.str.size, key->via.str.ptr);
    else
        snprintf(out, out_size, "%s%s?", path, sep);
}

static void s_merge_map(s_ctx_t *ctx, msgpack_packer *pk, const msgpack_object *in,
                        const msgpack_object *const *br, size_t n, const char *path,
                        bool top);

/*  Decides one key's merged value and packs it after its key; returns false
    when the merged value is "absent" (nothing packed). */
static bool
s_merge_value(s_ctx_t *ctx, msgpack_packer *pk, const msgpack_object *key,
              const msgpack_object *in, const msgpack_object *const *br, size_t n,
              const char *parent)
{
    /*  The key's dotted path is only needed to recurse or to report a
        conflict: built then, not for every key. */
    char path[AM2Z_PATH_LEN_MAX + 1];
    size_t nchanged = 0, last = 0;
    bool agree = true;
    const msgpack_object *first = NULL;
    bool all_maps = true, all_appends = true;
    for (size_t i = 0; i < n; i++) {
        if (s_same(in, br[i]))
            continue;
        if (nchanged == 0)
            first = br[i];
        else if (!s_same(first, br[i]))
            agree = false;
        nchanged++;
        last = i;
        all_maps &= br[i] && br[i]->type == MSGPACK_OBJECT_MAP;
        all_appends &= s_extends(in, br[i]);
    }
    const msgpack_object *take = in;
    if (nchanged > 0 && agree) {
        take = first;
    } else if (nchanged > 0 && all_maps && (!in || in->type == MSGPACK_OBJECT_MAP)) {
        msgpack_pack_object(pk, *key);
        const msgpack_object **sub = calloc(n, sizeof *sub);
        if (!sub) {
            ctx->rc = AM2Z_ENOMEM;
            msgpack_pack_nil(pk);
            return true;
        }
        for (size_t i = 0; i < n; i++)
            sub[i] = br[i] ? br[i] : in;
        s_path_join(path, sizeof path, parent, key);
        s_merge_map(ctx, pk, in, sub, n, path, false);
        free(sub);
        return true;
    } else if (nchanged > 0 && all_appends) {
        uint32_t base = in ? in->via.array.size : 0;
        size_t total = base;
        for (size_t i = 0; i < n; i++)
            if (!s_same(in, br[i]))
                total += br[i]->via.array.size - base;
        msgpack_pack_object(pk, *key);
        msgpack_pack_array(pk, total);
        for (uint32_t j = 0; j < base; j++)
            msgpack_pack_object(pk, in->via.array.ptr[j]);
        for (size_t i = 0; i < n; i++) {
            if (s_same(in, br[i]))
                continue;
            for (uint32_t j = base; j < br[i]->via.array.size; j++)
                msgpack_pack_object(pk, br[i]->via.array.ptr[j]);
        }
        return true;
    } else if (nchanged > 0) {
        s_path_join(path, sizeof path, parent, key);
        s_conflict(ctx, path, last);
        take = br[last];
    }
    if (!take)
        return false;
    msgpack_pack_object(pk, *key);
    msgpack_pack_object(pk, *take);
    return true;
}

/*  Packs the merge of maps in and br[0..n) (any may be NULL = empty). At the
    top level the reserved "metadata" key is left out. */
static void
s_merge_map(s_ctx_t *ctx, msgpack_packer *pk, const msgpack_object *in,
            const msgpack_object *const *br, size_t n, const char *path, bool top)
{
    msgpack_sbuffer body;
    msgpack_sbuffer_init(&body);
    msgpack_packer bpk;
    msgpack_packer_init(&bpk, &body, msgpack_sbuffer_write);
    uint32_t count = 0;

    /* keys in input order, then keys new in branch 0, 1, ... */
    for (size_t src = 0; src <= n; src++) {
        const msgpack_object *m = src == 0 ? in : br[src - 1];
        if (!m || m->type != MSGPACK_OBJECT_MAP)
            continue;
        for (uint32_t k = 0; k < m->via.map.size; k++) {
            const msgpack_object *key = &m->via.map.ptr[k].key;
            if (top && s_is_metadata(key))
                continue;
            bool seen = s_lookup(in, key) && src > 0;
            for (size_t e = 1; !seen && e < src; e++)
                seen = s_lookup(br[e - 1], key) != NULL;
            /* a key earlier in the same map (duplicate) was handled too */
            for (uint32_t d = 0; !seen && d < k; d++)
                seen = msgpack_object_equal(m->via.map.ptr[d].key, *key);
            if (seen)
                continue;
            const msgpack_object *few[8];
            const msgpack_object **vals = n <= 8 ? few : calloc(n, sizeof *vals);
            if (!vals) {
                ctx->rc = AM2Z_ENOMEM;
                continue;
            }
            for (size_t i = 0; i < n; i++)
                vals[i] = s_lookup(br[i], key);
            if (s_merge_value(ctx, &bpk, key, s_lookup(in, key), vals, n, path))
                count++;
            if (vals != few)
                free(vals);
        }
    }
    msgpack_pack_map(pk, count);
    if (body.size)
        pk->callback(pk->data, body.data, body.size);
    msgpack_sbuffer_destroy(&body);
}

int
am2z_merge_states(const am2z_state_t *input, const am2z_state_t *const *branches, size_t n,
                  bool strict, uint64_t now_ms, size_t max_size, am2z_state_t **out,
                  am2z_merge_conflict_t **conflicts, size_t *nconflicts)
{
    if (conflicts)
        *conflicts = NULL;
    if (nconflicts)
        *nconflicts = 0;
    if (!input || !branches || n == 0 || !out)
        return AM2Z_EINVAL;
    const char *session = am2z_state_session_id(input);
    for (size_t i = 0; i < n; i++)
        if (!branches[i] || strcmp(am2z_state_session_id(branches[i]), session) != 0)
            return AM2Z_EINVAL;

    int rc = AM2Z_ENOMEM;
    s_ctx_t ctx = { .strict = strict, .rc = AM2Z_OK };
    msgpack_zone zone;
    msgpack_zone_init(&zone, 4096);
    msgpack_object in;
    msgpack_object *br = calloc(n, sizeof *br);
    const msgpack_object **brp = calloc(n, sizeof *brp);
    msgpack_sbuffer merged;
    msgpack_sbuffer_init(&merged);
    if (!br || !brp)
        goto done;
    rc = AM2Z_EINVAL;
    if (msgpack_unpack((const char *)am2z_state_data(input), am2z_state_size(input), NULL,
                       &zone, &in) != MSGPACK_UNPACK_SUCCESS)
        goto done;
    for (size_t i = 0; i < n; i++) {
        if (msgpack_unpack((const char *)am2z_state_data(branches[i]),
                           am2z_state_size(branches[i]), NULL, &zone, &br[i])
            != MSGPACK_UNPACK_SUCCESS)
            goto done;
        brp[i] = &br[i];
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, &merged, msgpack_sbuffer_write);
    s_merge_map(&ctx, &pk, &in, brp, n, "", true);
    rc = ctx.rc;
    if (rc != AM2Z_OK)
        goto done;
    if (strict && ctx.nconflicts > 0) {
        rc = AM2Z_ECONFLICT;
        goto done;
    }
    rc = am2z_state_from_map_meta(session, (const uint8_t *)merged.data, merged.size,
                                  am2z_state_version(input) + 1,
                                  am2z_state_created_at(input), now_ms, out);
    if (rc == AM2Z_OK && max_size && am2z_state_size(*out) > max_size) {
        am2z_state_destroy(out);
        rc = AM2Z_ERESOURCE;
    }
done:
    if (conflicts && (rc == AM2Z_OK || rc == AM2Z_ECONFLICT)) {
        *conflicts = ctx.conflicts;
        ctx.conflicts = NULL;
        if (nconflicts)
            *nconflicts = ctx.nconflicts;
    }
    free(ctx.conflicts);
    msgpack_sbuffer_destroy(&merged);
    free(br);
    free(brp);
    msgpack_zone_destroy(&zone);
    return rc;
}

/* ---------------------------------------------------------------------------
   Batch helpers
   ------------------------------------------------------------------------ */

static bool
s_key_is(const msgpack_object *key, const char *name)
{
    size_t n = strlen(name);
    return key->type == MSGPACK_OBJECT_STR && key->via.str.size == n
           && memcmp(key->via.str.ptr, name, n) == 0;
}

/*  Unpacks untrusted map bytes after the structural check. */
static int
s_unpack_map(const uint8_t *map, size_t size, msgpack_zone *zone, msgpack_object *obj)
{
    if (!map || am2z_msgpack_check(map, size, 32) != AM2Z_OK)
        return AM2Z_EPROTO;
    if (msgpack_unpack((const char *)map, size, NULL, zone, obj) != MSGPACK_UNPACK_SUCCESS
        || obj->type != MSGPACK_OBJECT_MAP)
        return AM2Z_EPROTO;
    return AM2Z_OK;
}

int
am2z_state_overlay(const am2z_state_t *base, const uint8_t *map, size_t size,
                   bool skip_session, size_t max_size, am2z_state_t **out)
{
    if (!base || !out)
        return AM2Z_EINVAL;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 2048);
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    am2z_state_t *tmp = NULL;
    msgpack_object over, in;
    int rc = s_unpack_map(map, size, &zone, &over);
    if (rc != AM2Z_OK)
        goto done;
    rc = AM2Z_EINVAL;
    if (msgpack_unpack((const char *)am2z_state_data(base), am2z_state_size(base), NULL, &zone,
                       &in) != MSGPACK_UNPACK_SUCCESS)
        goto done;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    uint32_t count = 0;
    /* base keys not overridden, then the payload's keys */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1)
            msgpack_pack_map(&pk, count);
        for (uint32_t i = 0; i < in.via.map.size; i++) {
            const msgpack_object *key = &in.via.map.ptr[i].key;
            if (s_is_metadata(key) || s_lookup(&over, key))
                continue;
            if (pass == 0)
                count++;
            else {
                msgpack_pack_object(&pk, *key);
                msgpack_pack_object(&pk, in.via.map.ptr[i].val);
            }
        }
        for (uint32_t i = 0; i < over.via.map.size; i++) {
            const msgpack_object *key = &over.via.map.ptr[i].key;
            if (s_is_metadata(key) || (skip_session && s_key_is(key, "sessionId")))
                continue;
            if (pass == 0)
                count++;
            else {
                msgpack_pack_object(&pk, *key);
                msgpack_pack_object(&pk, over.via.map.ptr[i].val);
            }
        }
    }
    const char *session = am2z_state_session_id(base);
    rc = am2z_state_from_map(session, (const uint8_t *)buf.data, buf.size, 0, &tmp);
    if (rc == AM2Z_OK)
        rc = am2z_state_with_metadata(tmp, session, am2z_state_version(base),
                                      am2z_state_created_at(base),
                                      am2z_state_last_updated(base), out);
    if (rc == AM2Z_OK && max_size && am2z_state_size(*out) > max_size) {
        am2z_state_destroy(out);
        rc = AM2Z_ERESOURCE;
    }
done:
    am2z_state_destroy(&tmp);
    msgpack_sbuffer_destroy(&buf);
    msgpack_zone_destroy(&zone);
    return rc;
}

int
am2z_map_get_str(const uint8_t *map, size_t size, const char *key, char *buf,
                 size_t buf_size)
{
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object obj;
    int rc = s_unpack_map(map, size, &zone, &obj);
    if (rc == AM2Z_OK) {
        rc = AM2Z_ENOTFOUND;
        for (uint32_t i = 0; i < obj.via.map.size; i++) {
            const msgpack_object_kv *kv = &obj.via.map.ptr[i];
            if (!s_key_is(&kv->key, key) || kv->val.type != MSGPACK_OBJECT_STR)
                continue;
            if (kv->val.via.str.size + 1 > buf_size) {
                rc = AM2Z_ERESOURCE;
                break;
            }
            memcpy(buf, kv->val.via.str.ptr, kv->val.via.str.size);
            buf[kv->val.via.str.size] = '\0';
            rc = AM2Z_OK;
            break;
        }
    }
    msgpack_zone_destroy(&zone);
    return rc;
}

/*  Rebuilds state's user keys through `fill` (which packs the map) and keeps
    its metadata. */
typedef void (s_fill_fn)(msgpack_packer *pk, const msgpack_object *in, void *arg);

static int
s_rebuild(const am2z_state_t *state, s_fill_fn *fill, void *arg, am2z_state_t **out)
{
    msgpack_zone zone;
    msgpack_zone_init(&zone, 2048);
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    am2z_state_t *tmp = NULL;
    msgpack_object in;
    int rc = AM2Z_EINVAL;
    if (msgpack_unpack((const char *)am2z_state_data(state), am2z_state_size(state), NULL,
                       &zone, &in) != MSGPACK_UNPACK_SUCCESS)
        goto done;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    fill(&pk, &in, arg);
    rc = buf.data ? AM2Z_OK : AM2Z_ENOMEM;
    if (rc != AM2Z_OK)
        goto done;
    const char *session = am2z_state_session_id(state);
    rc = am2z_state_from_map(session, (const uint8_t *)buf.data, buf.size, 0, &tmp);
    if (rc == AM2Z_OK)
        rc = am2z_state_with_metadata(tmp, session, am2z_state_version(state),
                                      am2z_state_created_at(state),
                                      am2z_state_last_updated(state), out);
done:
    am2z_state_destroy(&tmp);
    msgpack_sbuffer_destroy(&buf);
    msgpack_zone_destroy(&zone);
    return rc;
}

typedef struct {
    const char *skip;                     /* user key left out, or NULL */
    const am2z_state_t *const *branches;  /* "$branches" elements, or NULL */
    size_t n;
} s_fill_args_t;

static void
s_fill(msgpack_packer *pk, const msgpack_object *in, void *arg)
{
    const s_fill_args_t *a = arg;
    uint32_t count = 0;
    for (uint32_t i = 0; i < in->via.map.size; i++) {
        const msgpack_object *key = &in->via.map.ptr[i].key;
        count += !s_is_metadata(key) && !(a->skip && s_key_is(key, a->skip));
    }
    msgpack_pack_map(pk, count + (a->branches ? 1 : 0));
    for (uint32_t i = 0; i < in->via.map.size; i++) {
        const msgpack_object *key = &in->via.map.ptr[i].key;
        if (s_is_metadata(key) || (a->skip && s_key_is(key, a->skip)))
            continue;
        msgpack_pack_object(pk, *key);
        msgpack_pack_object(pk, in->via.map.ptr[i].val);
    }
    if (a->branches) {
        msgpack_pack_str(pk, 9);
        msgpack_pack_str_body(pk, "$branches", 9);
        msgpack_pack_array(pk, (uint32_t)a->n);
        for (size_t i = 0; i < a->n; i++)
            pk->callback(pk->data, (const char *)am2z_state_data(a->branches[i]),
                         am2z_state_size(a->branches[i]));
    }
}

int
am2z_state_with_branches(const am2z_state_t *input, const am2z_state_t *const *branches,
                         size_t n, am2z_state_t **out)
{
    if (!input || !branches || !out)
        return AM2Z_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!branches[i])
            return AM2Z_EINVAL;
    s_fill_args_t a = { .skip = "$branches", .branches = branches, .n = n };
    return s_rebuild(input, s_fill, &a, out);
}

int
am2z_state_without_key(const am2z_state_t *state, const char *key, am2z_state_t **out)
{
    if (!state || !key || !out)
        return AM2Z_EINVAL;
    s_fill_args_t a = { .skip = key };
    return s_rebuild(state, s_fill, &a, out);
}

int
am2z_array_each(const uint8_t *data, size_t size, am2z_array_each_fn *fn, void *arg)
{
    if (!data || !fn || am2z_msgpack_check(data, size, 64) != AM2Z_OK)
        return AM2Z_EPROTO;
    size_t off = 0;
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    int rc = AM2Z_EPROTO;
    if (msgpack_unpack_next(&up, (const char *)data, size, &off) == MSGPACK_UNPACK_SUCCESS
        && up.data.type == MSGPACK_OBJECT_ARRAY) {
        rc = AM2Z_OK;
        /*  Element bytes: re-pack each element (states are canonical
            msgpack, so this is their exact encoding). */
        for (uint32_t i = 0; rc == AM2Z_OK && i < up.data.via.array.size; i++) {
            msgpack_sbuffer buf;
            msgpack_sbuffer_init(&buf);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
            msgpack_pack_object(&pk, up.data.via.array.ptr[i]);
            rc = buf.data ? fn((const uint8_t *)buf.data, buf.size, i, arg) : AM2Z_ENOMEM;
            msgpack_sbuffer_destroy(&buf);
        }
    }
    msgpack_unpacked_destroy(&up);
    return rc;
}
