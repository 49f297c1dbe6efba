/*  am2z_merge.c — see am2z_merge.h.

    States are validated before they get here (am2z_state_t guarantees one
    well-formed map of bounded depth), so unpacking them cannot blow up.
    The merge walks msgpack objects and packs the result map by map: a map's
    entry count must precede its entries, so each map is packed into its own
    buffer first and copied into its parent with the right header.
*/
#include "am2z_merge.h"

#include "am2z_error.h"

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

static void s_merge_map(s_ctx_t *ctx, msgpack_packer *pk, const msgpack_object *in,
                        const msgpack_object *const *br, size_t n, const char *path,
                        bool top);

/*  Decides one key's merged value and packs it after its key; returns false
    when the merged value is "absent" (nothing packed). */
static bool
s_merge_value(s_ctx_t *ctx, msgpack_packer *pk, const msgpack_object *key,
              const msgpack_object *in, const msgpack_object *const *br, size_t n,
              const char *path)
{
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
        s_conflict(ctx, path, last);
        take = br[last];
    }
    if (!take)
        return false;
    msgpack_pack_object(pk, *key);
    msgpack_pack_object(pk, *take);
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
    char sub[AM2Z_PATH_LEN_MAX + 1];

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
            const msgpack_object **vals = calloc(n ? n : 1, sizeof *vals);
            if (!vals) {
                ctx->rc = AM2Z_ENOMEM;
                continue;
            }
            for (size_t i = 0; i < n; i++)
                vals[i] = s_lookup(br[i], key);
            s_path_join(sub, sizeof sub, path, key);
            if (s_merge_value(ctx, &bpk, key, s_lookup(in, key), vals, n, sub))
                count++;
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
    am2z_state_t *tmp = NULL;
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
    rc = am2z_state_from_map(session, (const uint8_t *)merged.data, merged.size, now_ms, &tmp);
    if (rc != AM2Z_OK)
        goto done;
    rc = am2z_state_with_metadata(tmp, session, am2z_state_version(input) + 1,
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
    am2z_state_destroy(&tmp);
    msgpack_sbuffer_destroy(&merged);
    free(br);
    free(brp);
    msgpack_zone_destroy(&zone);
    return rc;
}
